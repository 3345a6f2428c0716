//! starling-bench: load scenarios against any XMPP server over standard c2s (RFC 6120:
//! plain or STARTTLS or direct TLS, SASL SCRAM-SHA-1/-256, bind, presence).
//! Every measurement is one JSON line on stdout, with the load generator's own CPU time.
//!
//!   starling-bench --server 127.0.0.1:5222 --server-pid PID connect --count 1000
//!   starling-bench --server 127.0.0.1:5222 chat --count 100 --rate 5000 --duration 20
//!   starling-bench --server 127.0.0.1:5222 chat --sweep --max-p99-ms 50
//!   starling-bench --server 127.0.0.1:5222 --prefix r roster-setup --count 200
//!   starling-bench --server 127.0.0.1:5222 --prefix r roster-login --count 200
//!   starling-bench --server 127.0.0.1:5222 --prefix o offline --messages 1000
//!   starling-bench --server 127.0.0.1:5222 register --count 20000
//!   starling-bench --server 127.0.0.1:5222 chat --sm --carbons --rate 500
//!   starling-bench --server 127.0.0.1:5222 connect --count 1000 --sm
//!   starling-bench --server 127.0.0.1:5222 resume --count 1000 --messages 10
//!   starling-bench --prefix a archive-gen --format prosody-sql --manifest m.json | sqlite3 db
//!   starling-bench --server 127.0.0.1:5222 --prefix a archive-query --manifest m.json
//!   starling-bench --server 127.0.0.1:5222 muc-fanout --rooms 10 --room-size 100 --big-room 1000
//!   starling-bench --server 127.0.0.1:5222 muc-fanout --sweep --max-p99-ms 100
//!   starling-bench --server 127.0.0.1:5222 muc-join --count 1000 --history-joins 100
//!   starling-bench --server 127.0.0.1:5222 muc-memory --count 1000
//!   starling-bench --server 127.0.0.2:5222 --domain a.example s2s-chat --server-b 127.0.0.3:5222 --domain-b b.example
//!   starling-bench --server 127.0.0.2:5222 --domain a.example s2s-links --server-b 127.0.0.3:5222 --links 100
//!   starling-bench report results.jsonl > RESULTS.md

mod archive;
mod chat;
mod client;
mod connect;
mod muc;
mod muc_fanout;
mod muc_join;
mod muc_memory;
mod offline;
mod register;
mod report;
mod resume;
mod roster;
mod s2s;
mod sm;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, Subcommand};
use client::{Mechanism, Security, Target};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(about = "Load generator for XMPP servers (standard c2s only)")]
pub struct Cli {
    /// Server c2s address.
    #[arg(long, default_value = "127.0.0.1:5222", global = true)]
    server: SocketAddr,
    #[arg(long, default_value = "localhost", global = true)]
    domain: String,
    #[arg(long, value_enum, default_value = "starttls", global = true)]
    security: Security,
    #[arg(long, value_enum, default_value = "SCRAM-SHA-1", global = true)]
    mechanism: Mechanism,
    /// Accounts are PREFIX0, PREFIX1, ... with one password.
    #[arg(long, default_value = "user", global = true)]
    prefix: String,
    #[arg(long, default_value = "password", global = true)]
    password: String,
    /// Server process to read memory and CPU from (/proc/PID).
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Label for the JSON lines (e.g. starling, prosody, ejabberd).
    #[arg(long, default_value = "server", global = true)]
    label: String,
    /// Source addresses to spread connections over (each gives ~28k ports per
    /// destination). Default for a loopback server: 127.0.0.2 to 127.0.0.9.
    #[arg(long, value_delimiter = ',', global = true)]
    source: Vec<IpAddr>,
    /// Extra KEY=VALUE fields for every JSON line (e.g. rep=2).
    #[arg(long, global = true)]
    tag: Vec<String>,
    /// File keeping the client's SCRAM salted passwords between runs (PBKDF2 once per
    /// account, not per measured login).
    #[arg(long, global = true)]
    scram_cache: Option<PathBuf>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Open N sessions at a ramp, hold them idle, ping them all, report logins, server
    /// memory and CPU.
    Connect(connect::Args),
    /// N online users send 1:1 messages to random others at an aggregate rate (or a sweep
    /// of rates to find the highest sustained one).
    Chat(chat::Args),
    /// Make PREFIX0..N-1 mutual contacts (each with --contacts neighbours) over XMPP.
    RosterSetup(roster::SetupArgs),
    /// Half the users online, the other half log in: time to roster, to initial presence,
    /// and the presence storm.
    RosterLogin(roster::LoginArgs),
    /// Store messages for an offline account, then log it in: time until all arrive.
    Offline(offline::Args),
    /// Create accounts by in-band registration (XEP-0077), in parallel.
    Register(register::Args),
    /// Sessions with XEP-0198 resumption dropped at once, sent messages meanwhile, then
    /// all resumed: time until resumed, and nothing lost or duplicated.
    Resume(resume::Args),
    /// Write the message archive of PREFIX0 for a server's bulk import (stdout).
    ArchiveGen(archive::GenArgs),
    /// Page through PREFIX0's archive (XEP-0313): newest page, before/after an id, with a
    /// peer; latency and server CPU per query.
    ArchiveQuery(archive::QueryArgs),
    /// Multi-user chat rooms (XEP-0045) under a fixed rate of groupchat messages (or a sweep
    /// of rates): server CPU per delivered copy, latency, loss per (room, sender).
    MucFanout(muc_fanout::Args),
    /// Occupants entering one room: time until all joined, CPU per join; then joins of a
    /// room with history, timed to the subject.
    MucJoin(muc_join::Args),
    /// Server memory per occupant of a room.
    MucMemory(muc_memory::Args),
    /// 1:1 chat between the users of two federated servers, each user with a partner on
    /// the other: both servers' CPU per message, latency, loss (or a sweep of rates).
    S2sChat(s2s::ChatArgs),
    /// Memory per idle s2s link: links to --links more domains of the second server, RSS
    /// of both servers before and after.
    S2sLinks(s2s::LinksArgs),
    /// Turn a JSON-lines results file into the Markdown report.
    Report(report::Args),
}

/// Server figures from /proc.
#[derive(Clone, Copy, Debug)]
pub struct ProcStats {
    pub rss_kib: u64,
    pub cpu_s: f64,
}

pub fn proc_stats(pid: u32) -> Option<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces): utime is 14th, stime 15th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu_s =
        (fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?) / ticks;
    Some(ProcStats { rss_kib, cpu_s })
}

/// This process's CPU time (user + system), to show the load generator is not the limit.
pub fn own_cpu_s() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn own_rss_kib() -> u64 {
    proc_stats(std::process::id())
        .map(|s| s.rss_kib)
        .unwrap_or(0)
}

pub fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// p50/p90/p99/max in milliseconds of microsecond samples (sorted here).
pub fn latency_ms(samples: &mut [u32]) -> Value {
    samples.sort_unstable();
    json!({
        "p50": percentile(samples, 0.50) as f64 / 1000.0,
        "p90": percentile(samples, 0.90) as f64 / 1000.0,
        "p99": percentile(samples, 0.99) as f64 / 1000.0,
        "max": samples.last().copied().unwrap_or(0) as f64 / 1000.0,
        "n": samples.len(),
    })
}

/// What every scenario shares: the options, the target, and the line writer.
pub struct Ctx {
    pub cli: Cli,
    pub target: Target,
    pub sources: Vec<IpAddr>,
}

impl Ctx {
    pub fn source(&self, i: usize) -> Option<IpAddr> {
        (!self.sources.is_empty()).then(|| self.sources[i % self.sources.len()])
    }

    pub fn user(&self, i: usize) -> String {
        format!("{}{i}", self.cli.prefix)
    }

    pub fn jid(&self, i: usize) -> String {
        format!("{}{i}@{}", self.cli.prefix, self.cli.domain)
    }

    pub fn server(&self) -> Option<ProcStats> {
        self.cli.server_pid.and_then(proc_stats)
    }

    pub async fn login(
        &self,
        i: usize,
        resource: &str,
        presence: bool,
    ) -> std::io::Result<client::Session> {
        client::login(
            &self.target,
            self.source(i),
            &self.user(i),
            &self.cli.password,
            resource,
            presence,
        )
        .await
    }

    /// [`Ctx::login`] with stream management and carbons as `extras` asks.
    pub async fn login_with(
        &self,
        i: usize,
        resource: &str,
        presence: bool,
        extras: client::Extras,
    ) -> std::io::Result<client::Session> {
        client::login_with(
            &self.target,
            self.source(i),
            &self.user(i),
            &self.cli.password,
            resource,
            presence,
            extras,
        )
        .await
    }

    /// Print one measurement: the scenario's fields, plus server, security, tags and the
    /// load generator's CPU over the measured span (`cpu0`, `wall0`).
    pub fn emit(&self, scenario: &str, mut fields: Value, cpu0: f64, wall0: Instant) {
        let cpu = own_cpu_s() - cpu0;
        let wall = wall0.elapsed().as_secs_f64();
        let mut line = json!({
            "scenario": scenario,
            "server": self.cli.label,
            "security": format!("{:?}", self.cli.security).to_lowercase(),
            "mechanism": self.cli.mechanism.name(),
        });
        for tag in &self.cli.tag {
            if let Some((k, v)) = tag.split_once('=') {
                line[k] = v
                    .parse::<f64>()
                    .map(|n| json!(n))
                    .unwrap_or_else(|_| json!(v));
            }
        }
        if let Value::Object(map) = fields.take() {
            for (k, v) in map {
                line[k] = v;
            }
        }
        line["loadgen_cpu_s"] = json!(round(cpu, 3));
        line["loadgen_cpu_pct"] = json!(round(100.0 * cpu / wall.max(1e-9), 1));
        line["loadgen_rss_kib"] = json!(own_rss_kib());
        line["unix_time"] = json!(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        );
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

pub fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}

/// Raise the soft open-file limit to the hard one: the scale run holds ~19k sockets.
fn raise_nofile() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &raised);
        }
    }
}

fn main() {
    let cli = Cli::parse();
    if let Scenario::Report(args) = &cli.scenario {
        std::process::exit(report::run(args));
    }
    if let Scenario::ArchiveGen(args) = &cli.scenario {
        std::process::exit(archive::generate(&cli, args));
    }
    raise_nofile();
    let _ = rustls::crypto::ring::default_provider().install_default();
    // One worker per CPU we may run on: pinned to one core (taskset), a single thread,
    // which costs least per message.
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let runtime = if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cpus)
            .enable_all()
            .build()
    }
    .expect("tokio runtime");
    runtime.block_on(run(cli));
}

async fn run(cli: Cli) {
    let target = Target {
        addr: cli.server,
        domain: cli.domain.clone(),
        security: cli.security,
        mechanism: cli.mechanism,
    };
    let sources = if !cli.source.is_empty() {
        cli.source.clone()
    } else if cli.server.ip().is_loopback() && cli.server.is_ipv4() {
        (2..=9)
            .map(|n| IpAddr::V4(Ipv4Addr::new(127, 0, 0, n)))
            .collect()
    } else {
        Vec::new()
    };
    if let Some(path) = &cli.scram_cache {
        client::load_scram_cache(path);
    }
    let cache = cli.scram_cache.clone();
    let ctx = Arc::new(Ctx {
        cli,
        target,
        sources,
    });
    let ok = match &ctx.cli.scenario {
        Scenario::Connect(a) => connect::run(ctx.clone(), a.clone()).await,
        Scenario::Chat(a) => chat::run(ctx.clone(), a.clone()).await,
        Scenario::RosterSetup(a) => roster::setup(ctx.clone(), a.clone()).await,
        Scenario::RosterLogin(a) => roster::login(ctx.clone(), a.clone()).await,
        Scenario::Offline(a) => offline::run(ctx.clone(), a.clone()).await,
        Scenario::Register(a) => register::run(ctx.clone(), a.clone()).await,
        Scenario::Resume(a) => resume::run(ctx.clone(), a.clone()).await,
        Scenario::ArchiveQuery(a) => archive::run(ctx.clone(), a.clone()).await,
        Scenario::MucFanout(a) => muc_fanout::run(ctx.clone(), a.clone()).await,
        Scenario::MucJoin(a) => muc_join::run(ctx.clone(), a.clone()).await,
        Scenario::MucMemory(a) => muc_memory::run(ctx.clone(), a.clone()).await,
        Scenario::S2sChat(a) => s2s::chat(ctx.clone(), a.clone()).await,
        Scenario::S2sLinks(a) => s2s::links(ctx.clone(), a.clone()).await,
        Scenario::Report(_) | Scenario::ArchiveGen(_) => unreachable!(),
    };
    if let Some(path) = cache && let Err(e) = client::save_scram_cache(&path) {
        eprintln!("saving {}: {e}", path.display());
    }
    // Sessions still open are dropped with the runtime; exit without waiting for them.
    std::process::exit(if ok { 0 } else { 1 });
}
