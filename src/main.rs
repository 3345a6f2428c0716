//! The `starling` command: run the server, check a configuration, manage accounts.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use jid::BareJid;

use starling::Config;
use starling::admin;
use starling::auth;
use starling::storage::{Db, Inspection, NewAccount, StorageError};

/// See `src/lib.rs` on the allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "starling", version, about = "An XMPP server")]
struct Cli {
    /// Configuration file (TOML). Without it, the built-in defaults are used, with paths
    /// relative to the current directory.
    #[arg(long, short, global = true, env = "STARLING_CONFIG")]
    config: Option<PathBuf>,
    /// Let `user` commands create the database if it does not exist yet (`serve` always
    /// does). Without it they refuse, so that a wrong or missing --config is noticed.
    #[arg(long, global = true)]
    create_db: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve,
    /// Validate the configuration, certificates, database and listeners; creates nothing.
    /// `check s2s DOMAIN`: try a link to another server, step by step.
    Check {
        #[command(subcommand)]
        what: Option<CheckCommand>,
    },
    /// Manage accounts (works while the server runs).
    #[command(subcommand)]
    User(UserCommand),
    /// See and end client sessions of the running server.
    #[command(subcommand)]
    Session(SessionCommand),
    /// The message archive (XEP-0313).
    #[command(subcommand)]
    Archive(ArchiveCommand),
    /// Group chat rooms (XEP-0045).
    #[command(subcommand)]
    Room(RoomCommand),
}

#[derive(Subcommand)]
enum CheckCommand {
    /// Set up a link to another server as the server would, step by step: DNS (SRV
    /// `_xmpps-server`/`_xmpp-server`, A/AAAA), TCP to each target, TLS, the certificate and
    /// the names it covers, the stream features, SASL EXTERNAL or dialback; the failing step
    /// and what to do about it.
    S2s {
        /// The remote domain, e.g. jabber.org.
        domain: String,
        /// The local domain to speak for (default: the first of `domains`).
        #[arg(long)]
        from: Option<String>,
    },
}

#[derive(Subcommand)]
enum RoomCommand {
    /// List the persistent rooms, of one service (e.g. conference.localhost) or of all.
    /// Temporary rooms live only in the running server and its disco#items.
    List { service: Option<String> },
    /// Destroy a room: its occupants are told (with the reason), it is deleted with its
    /// affiliations and archive. Through the running server if there is one.
    Destroy {
        room: String,
        /// The reason the occupants are shown.
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
enum ArchiveCommand {
    /// Add messages to an account's archive from JSON lines, oldest first, one object a
    /// line: {"ts_us":…,"direction":"in"|"out","with":"JID","id":"…","stanza":"<message…/>"}.
    /// `ts_us` (microseconds since the epoch) is each message's place in the archive: it
    /// must differ from every other and should be in the past. For provisioning and moving
    /// archives in; see src/archive_import.rs.
    Import {
        /// The account whose archive it is.
        #[arg(long)]
        account: String,
        /// The JSON lines; `-` reads standard input.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum SessionCommand {
    /// List the connected sessions, of all accounts or of one JID.
    List { jid: Option<String> },
    /// Disconnect a session (full JID) or all sessions of an account (bare JID), with
    /// a <policy-violation/> stream error.
    Kick {
        jid: String,
        /// The text the client is shown (default: "kicked by the administrator").
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account, or many with --batch.
    Add {
        /// The account, e.g. alice@localhost.
        #[arg(required_unless_present = "batch")]
        jid: Option<String>,
        /// Read the password from standard input (first line) instead of prompting.
        #[arg(long, conflicts_with = "batch")]
        password_stdin: bool,
        /// Read `JID PASSWORD` lines from standard input and create them all in one
        /// transaction (existing accounts are left alone and counted).
        #[arg(long, conflicts_with = "jid")]
        batch: bool,
    },
    /// Change an account's password.
    Passwd {
        jid: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete an account, everything stored for it, and its place in other rosters. With
    /// the server running, its sessions end and its contacts are told.
    Del { jid: String },
    /// List accounts, of one domain or of all.
    List { domain: Option<String> },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match &cli.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        },
        None => Config::defaults_here(),
    };
    init_logging(&config, matches!(cli.command, Command::Serve));
    starling::init_crypto();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve => serve(config).await,
            Command::Check { what: None } => check(config).await,
            Command::Check { what: Some(CheckCommand::S2s { domain, from }) } => check_s2s(config, &domain, from).await,
            Command::User(cmd) => user(config, cmd, cli.create_db).await,
            Command::Session(cmd) => session(config, cmd).await,
            Command::Archive(cmd) => archive(config, cmd, cli.create_db).await,
            Command::Room(cmd) => room(config, cmd, cli.create_db).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config, serving: bool) {
    use tracing_subscriber::EnvFilter;
    // The CLI's own commands stay quiet unless asked; the server logs at the configured level.
    let default = if serving { config.log.level.as_str() } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

async fn serve(config: Config) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Installed before the server starts: a SIGTERM that comes while it starts (a service
    // manager stopping it at once) still gets a clean shutdown, not the default death.
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let server = starling::Server::start(config).await?;
    tokio::select! {
        _ = term.recv() => {}
        _ = interrupt.recv() => {}
    }
    server.shutdown().await;
    Ok(())
}

async fn check(config: Config) -> anyhow::Result<()> {
    let source = config.source.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "built-in defaults".into());
    println!("config: {source}");
    println!("domains: {}", config.domains.join(", "));
    // Every problem is collected and reported together, like the config's.
    let mut problems: Vec<String> = Vec::new();
    match starling::tls::Certificates::check(&config) {
        Ok(lines) => lines.iter().for_each(|l| println!("certificate {l}")),
        Err(errors) => problems.extend(errors.iter().map(|e| format!("certificates: {e}"))),
    }
    let url = config.storage_url();
    let shown = starling::server::redact(&url);
    match Db::inspect(&url).await {
        Ok(Inspection::WillBeCreated(path)) => println!("storage: {} (sqlite), will be created at start", path.display()),
        Ok(Inspection::Exists { accounts, pending }) => {
            let accounts = accounts.map_or("no schema yet, created at start".to_string(), |n| format!("{n} accounts"));
            let pending = if pending > 0 { format!(", {pending} migrations to apply at start") } else { String::new() };
            println!("storage: {shown} ({}), {accounts}{pending}", if url.starts_with("sqlite:") { "sqlite" } else { "postgres" });
        }
        Err(e) => problems.push(format!("storage {shown}: {e}")),
    }
    let socket = config.admin_socket();
    let running = matches!(admin::request(&socket, "version").await, Ok(reply) if reply.ok);
    for addr in &config.c2s.listen {
        println!("c2s STARTTLS: {addr}");
    }
    for addr in &config.c2s.listen_tls {
        println!("c2s direct TLS: {addr}");
    }
    for addr in &config.components.listen {
        println!("components (XEP-0114): {addr}");
    }
    if !config.components.domains.is_empty() {
        let names: Vec<&str> = config.components.domains.keys().map(String::as_str).collect();
        println!("component domains: {}", names.join(", "));
        if config.components.listen.is_empty() {
            println!("warning: components are configured but [components] listen = []: none can connect");
        }
    }
    let taken = starling::server::check_listeners(&config);
    if running {
        println!("admin socket: {} (a server is running)", socket.display());
        // Its own listeners are taken, by itself.
        taken.iter().for_each(|t| println!("note: {t} (the running server holds it?)"));
    } else {
        println!("admin socket: {}", socket.display());
        problems.extend(taken);
    }
    let modules: Vec<&str> = starling::modules::NAMES.iter().copied().filter(|m| !config.modules.disabled.iter().any(|d| d == m)).collect();
    println!("modules: {}", modules.join(", "));
    for warning in starling::files::loose_permissions(&config) {
        println!("warning: {warning}");
    }
    if !problems.is_empty() {
        bail!("{} problem{}:\n  {}", problems.len(), if problems.len() == 1 { "" } else { "s" }, problems.join("\n  "));
    }
    println!("ok");
    Ok(())
}

/// `starling check s2s DOMAIN`: each step on its own line, then the outcome.
async fn check_s2s(config: Config, domain: &str, from: Option<String>) -> anyhow::Result<()> {
    let local = from.unwrap_or_else(|| config.domains[0].clone()).to_ascii_lowercase();
    if !config.serves(&local) {
        bail!("{local} is not a domain of this server (domains = {:?})", config.domains);
    }
    if config.s2s.listen.is_empty() && config.s2s.listen_tls.is_empty() {
        println!("note: federation is off in this configuration ([s2s] listen = []); checking the link anyway");
    }
    let certs = starling::tls::Certificates::load_without_writing(&config)
        .map_err(|errors| anyhow::anyhow!("certificates: {}", errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")))?;
    let mut step = 0;
    let mut print = |line: String| {
        step += 1;
        println!("{step:>2}. {line}");
    };
    match starling::s2s::check::check(&config, std::sync::Arc::new(certs), &local, domain, &mut print).await {
        Ok(outcome) => {
            println!("ok: {outcome}");
            Ok(())
        }
        Err(failure) => bail!("{failure}"),
    }
}

/// Parse an account JID and make sure this server serves its domain.
fn account(config: &Config, jid: &str) -> anyhow::Result<BareJid> {
    let parsed = BareJid::new(jid).with_context(|| format!("{jid:?} is not a valid JID"))?;
    if parsed.node().is_none() {
        bail!("{jid:?} has no user part (expected user@domain)");
    }
    if !config.serves(parsed.domain().as_str()) {
        bail!("{} is not a domain of this server (domains = {:?})", parsed.domain(), config.domains);
    }
    Ok(parsed)
}

fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    let password = if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("reading the password from standard input")?;
        line.trim_end_matches(['\n', '\r']).to_string()
    } else {
        let first = rpassword::prompt_password("Password: ")?;
        let second = rpassword::prompt_password("Again: ")?;
        if first != second {
            bail!("the passwords differ");
        }
        first
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    Ok(password)
}

/// `user add --batch`: every line is checked before anything is written; credentials are
/// derived on all cores (PBKDF2 dominates), then one transaction creates the accounts.
async fn add_batch(config: &Config, accounts: &starling::storage::AccountStore) -> anyhow::Result<()> {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.context("reading standard input")?;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        match line.split_once(char::is_whitespace) {
            Some((jid, password)) if !password.trim().is_empty() => match account(config, jid) {
                Ok(jid) => entries.push((jid, password.trim().to_string())),
                Err(e) => problems.push(format!("line {}: {e:#}", n + 1)),
            },
            _ => problems.push(format!("line {}: expected `JID PASSWORD`", n + 1)),
        }
    }
    if !problems.is_empty() {
        bail!("nothing was created:\n  {}", problems.join("\n  "));
    }
    let iterations = config.auth.scram_iterations;
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let chunk = entries.len().div_ceil(threads).max(1);
    let derived = tokio::task::spawn_blocking(move || {
        std::thread::scope(|scope| {
            let workers: Vec<_> = entries
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|(jid, password)| {
                                auth::scram::derive_all(password, iterations)
                                    .map(|credentials| NewAccount { jid: jid.clone(), credentials })
                                    .map_err(|e| anyhow::anyhow!("{jid}: {e}"))
                            })
                            .collect::<anyhow::Result<Vec<_>>>()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().expect("derivation does not panic")).collect::<anyhow::Result<Vec<_>>>()
        })
    })
    .await??;
    let new: Vec<NewAccount> = derived.into_iter().flatten().collect();
    let created = accounts.create_many(&new).await?;
    println!("created {created} accounts ({} already existed)", new.len() - created);
    Ok(())
}

/// Open the database for a `user` command: say which one on stderr, and refuse to create
/// one unless asked (a missing --config would otherwise give a new, empty database).
async fn open_for_cli(config: &Config, create: bool) -> anyhow::Result<Db> {
    let url = config.storage_url();
    let shown = starling::server::redact(&url);
    eprintln!("database: {shown}");
    let opened = if create { Db::open(&url, 2).await } else { Db::open_existing(&url, 2).await };
    match opened {
        Ok(db) => Ok(db),
        Err(StorageError::Missing(what)) => {
            let how = match &config.source {
                None => "No --config was given, so the built-in defaults were used, with data in ./data/ under the current \
                         directory. Give the server's configuration with --config FILE (or STARLING_CONFIG), or pass \
                         --create-db to create a new database there."
                    .to_string(),
                Some(file) => format!(
                    "It is the one {} names. Start the server once (it creates it), or pass --create-db to create it now.",
                    file.display()
                ),
            };
            bail!("{what}. {how}")
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("storage {shown}"))),
    }
}

async fn archive(config: Config, cmd: ArchiveCommand, create_db: bool) -> anyhow::Result<()> {
    let ArchiveCommand::Import { account: jid, file } = cmd;
    let jid = account(&config, &jid)?;
    let db = open_for_cli(&config, create_db).await?;
    let result = async {
        if !db.accounts().exists(&jid).await? {
            bail!("{jid} does not exist");
        }
        let imported = if file.as_os_str() == "-" {
            starling::archive_import::import(&db.archive(), &jid, std::io::stdin().lock()).await?
        } else {
            let input = std::fs::File::open(&file).with_context(|| format!("cannot open {}", file.display()))?;
            starling::archive_import::import(&db.archive(), &jid, std::io::BufReader::new(input)).await?
        };
        println!("imported {imported} messages into the archive of {jid}");
        Ok(())
    }
    .await;
    db.close().await;
    result
}

async fn room(config: Config, cmd: RoomCommand, create_db: bool) -> anyhow::Result<()> {
    let services = config.muc_domains();
    if services.is_empty() {
        bail!("the group chat service is disabled ([muc] subdomain = \"\")");
    }
    match cmd {
        RoomCommand::List { service } => {
            let chosen: Vec<String> = match service {
                Some(s) if services.contains(&s) => vec![s],
                Some(s) => bail!("{s} is not a group chat service of this server (services: {})", services.join(", ")),
                None => services,
            };
            let db = open_for_cli(&config, create_db).await?;
            let result = async {
                let mut n = 0;
                for service in &chosen {
                    for room in db.muc().list(service, false, None, usize::MAX).await? {
                        println!("{}\t{}\t{}", room.jid, if room.public { "public" } else { "hidden" }, room.name);
                        n += 1;
                    }
                }
                println!("{n} room{}", if n == 1 { "" } else { "s" });
                Ok(())
            }
            .await;
            db.close().await;
            result
        }
        RoomCommand::Destroy { room, reason } => {
            let jid = jid::BareJid::new(&room).with_context(|| format!("{room:?} is not a valid room JID"))?;
            if jid.node().is_none() || !services.iter().any(|s| s == jid.domain().as_str()) {
                bail!("{jid} is not a room of this server (services: {})", services.join(", "));
            }
            let reason = reason.unwrap_or_default().replace(['\n', '\r'], " ");
            let socket = config.admin_socket();
            match admin::request(&socket, format!("room-destroy {jid} {reason}").trim_end()).await {
                Ok(reply) if reply.ok => {
                    println!("destroyed {jid}");
                    return Ok(());
                }
                Ok(reply) => bail!("{}", reply.text),
                Err(admin::ClientError::NotRunning(_)) => {
                    eprintln!("no server is running (admin socket {}): deleting in the database", socket.display());
                }
                Err(e) => return Err(e.into()),
            }
            let db = open_for_cli(&config, create_db).await?;
            let deleted = db.muc().delete(&jid).await;
            db.close().await;
            if !deleted? {
                bail!("{jid} does not exist");
            }
            println!("destroyed {jid}");
            Ok(())
        }
    }
}

async fn user(config: Config, cmd: UserCommand, create_db: bool) -> anyhow::Result<()> {
    // With a server running, deletion goes through it: it ends the sessions and tells the
    // contacts. Without one, the database is changed directly.
    if let UserCommand::Del { jid } = &cmd {
        let jid = account(&config, jid)?;
        let socket = config.admin_socket();
        match admin::request(&socket, &format!("user-delete {jid}")).await {
            Ok(reply) if reply.ok => {
                eprintln!("server: admin socket {}", socket.display());
                println!("deleted {jid}");
                return Ok(());
            }
            Ok(reply) => bail!("{}", reply.text),
            Err(admin::ClientError::NotRunning(_)) => {
                eprintln!("no server is running (admin socket {}): deleting in the database", socket.display());
            }
            Err(e) => return Err(e.into()),
        }
        let db = open_for_cli(&config, create_db).await?;
        let deleted = db.accounts().delete_everywhere(&jid).await;
        db.close().await;
        if !deleted? {
            bail!("{jid} does not exist");
        }
        println!("deleted {jid}");
        return Ok(());
    }
    if let UserCommand::List { domain: Some(domain) } = &cmd
        && !config.serves(domain)
    {
        bail!("{domain} is not a domain of this server (domains = {:?})", config.domains);
    }
    let db = open_for_cli(&config, create_db).await?;
    let accounts = db.accounts();
    let iterations = config.auth.scram_iterations;
    let result = async {
        match cmd {
            UserCommand::Add { batch: true, .. } => add_batch(&config, &accounts).await?,
            UserCommand::Add { jid, password_stdin, .. } => {
                let jid = account(&config, &jid.expect("clap requires it without --batch"))?;
                if accounts.exists(&jid).await? {
                    bail!("{jid} already exists");
                }
                let credentials = auth::derive_credentials(read_password(password_stdin)?, iterations).await?;
                if !accounts.create(&NewAccount { jid: jid.clone(), credentials }).await? {
                    bail!("{jid} already exists");
                }
                println!("created {jid}");
            }
            UserCommand::Passwd { jid, password_stdin } => {
                let jid = account(&config, &jid)?;
                let credentials = auth::derive_credentials(read_password(password_stdin)?, iterations).await?;
                if !accounts.set_credentials(&jid, &credentials).await? {
                    bail!("{jid} does not exist");
                }
                println!("password changed for {jid}");
            }
            UserCommand::Del { .. } => unreachable!("handled above"),
            UserCommand::List { domain } => {
                for jid in accounts.list(domain.as_deref()).await? {
                    println!("{jid}");
                }
            }
        }
        Ok(())
    }
    .await;
    db.close().await;
    result
}

async fn session(config: Config, cmd: SessionCommand) -> anyhow::Result<()> {
    let socket = config.admin_socket();
    let request = match &cmd {
        SessionCommand::List { jid: None } => "session-list".to_string(),
        SessionCommand::List { jid: Some(jid) } => format!("session-list {}", parse_jid(jid)?),
        SessionCommand::Kick { jid, reason } => {
            let reason = reason.as_deref().unwrap_or("").replace(['\n', '\r'], " ");
            format!("session-kick {} {reason}", parse_jid(jid)?).trim_end().to_string()
        }
    };
    let reply = admin::request(&socket, &request).await?;
    if !reply.ok {
        bail!("{}", reply.text);
    }
    if let SessionCommand::List { .. } = cmd {
        let header = ["JID", "ADDRESS", "SINCE", "PRIORITY", "PRESENCE"];
        let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
        for row in &reply.data {
            for (w, field) in widths.iter_mut().zip(row) {
                *w = (*w).max(field.chars().count());
            }
        }
        let line = |fields: Vec<&str>| {
            let cells: Vec<String> = fields.iter().zip(&widths).map(|(f, w)| format!("{f:<w$}")).collect();
            println!("{}", cells.join("  ").trim_end());
        };
        line(header.to_vec());
        for row in &reply.data {
            line(row.iter().map(String::as_str).collect());
        }
    }
    println!("{}", reply.text);
    Ok(())
}

fn parse_jid(text: &str) -> anyhow::Result<jid::Jid> {
    jid::Jid::new(text).with_context(|| format!("{text:?} is not a valid JID"))
}
