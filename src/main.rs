//! The `starling` command: run the server, check a configuration, manage accounts.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use jid::BareJid;

use starling::Config;
use starling::auth;
use starling::storage::{Db, NewAccount};

#[derive(Parser)]
#[command(name = "starling", version, about = "An XMPP server")]
struct Cli {
    /// Configuration file (TOML). Without it, the built-in defaults are used.
    #[arg(long, short, global = true, env = "STARLING_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve,
    /// Validate the configuration and certificates, open the database, show the listeners.
    Check,
    /// Manage accounts (works while the server runs).
    #[command(subcommand)]
    User(UserCommand),
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
    /// Delete an account and everything stored for it.
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
            Command::Check => check(config).await,
            Command::User(cmd) => user(config, cmd).await,
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
    let server = starling::Server::start(config).await?;
    wait_for_signal().await;
    server.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn check(config: Config) -> anyhow::Result<()> {
    let source = config.source.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "built-in defaults".into());
    println!("config: {source}");
    println!("domains: {}", config.domains.join(", "));
    match starling::tls::Certificates::check(&config) {
        Ok(lines) => lines.iter().for_each(|l| println!("certificate {l}")),
        Err(errors) => bail!("certificates:\n  {}", errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n  ")),
    }
    let url = config.storage_url();
    let db = Db::open(&url, 1).await.with_context(|| format!("storage {}", starling::server::redact(&url)))?;
    println!("storage: {} ({}), {} accounts", starling::server::redact(&url), db.backend(), db.accounts().list(None).await?.len());
    db.close().await;
    for addr in &config.c2s.listen {
        println!("c2s STARTTLS: {addr}");
    }
    for addr in &config.c2s.listen_tls {
        println!("c2s direct TLS: {addr}");
    }
    let modules: Vec<&str> = starling::modules::NAMES.iter().copied().filter(|m| !config.modules.disabled.iter().any(|d| d == m)).collect();
    println!("modules: {}", modules.join(", "));
    for disabled in &config.modules.disabled {
        if !starling::modules::NAMES.contains(&disabled.as_str()) {
            bail!("modules.disabled: unknown module {disabled:?} (known: {})", starling::modules::NAMES.join(", "));
        }
    }
    println!("ok");
    Ok(())
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

async fn user(config: Config, cmd: UserCommand) -> anyhow::Result<()> {
    let url = config.storage_url();
    let db = Db::open(&url, 2).await.with_context(|| format!("storage {}", starling::server::redact(&url)))?;
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
            UserCommand::Del { jid } => {
                let jid = account(&config, &jid)?;
                if !accounts.delete(&jid).await? {
                    bail!("{jid} does not exist");
                }
                println!("deleted {jid}");
            }
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
