//! starling-bench: load scenarios against an XMPP server over standard c2s.
//! Every measurement is one JSON line on stdout, with the load generator's own CPU time.
//!
//!   starling-bench connect --server 127.0.0.1:5222 --count 1000 --server-pid PID
//!   starling-bench chat --server 127.0.0.1:5222 --count 100 --rate 5000 --duration 20

mod client;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use client::{Mechanism, Security, Target};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

#[derive(Parser)]
#[command(about = "Load generator for XMPP servers")]
struct Cli {
    /// Server c2s address.
    #[arg(long, default_value = "127.0.0.1:5222")]
    server: SocketAddr,
    #[arg(long, default_value = "localhost")]
    domain: String,
    #[arg(long, value_enum, default_value = "starttls")]
    security: Security,
    #[arg(long, value_enum, default_value = "SCRAM-SHA-1")]
    mechanism: Mechanism,
    /// Accounts are PREFIX0, PREFIX1, ... with one password.
    #[arg(long, default_value = "user")]
    prefix: String,
    #[arg(long, default_value = "password")]
    password: String,
    /// Server process to read memory and CPU from (/proc/PID).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Label for the JSON lines (e.g. starling, prosody, ejabberd).
    #[arg(long, default_value = "server")]
    label: String,
    /// Source addresses to spread connections over, e.g. 127.0.0.1,127.0.0.2 (each gives
    /// about 28k ephemeral ports per destination).
    #[arg(long, value_delimiter = ',')]
    source: Vec<IpAddr>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Open N sessions at a ramp, hold them idle, report logins and server memory.
    Connect {
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Logins started per second.
        #[arg(long, default_value_t = 500.0)]
        ramp: f64,
        /// Logins in progress at once.
        #[arg(long, default_value_t = 64)]
        parallel: usize,
        /// Seconds to hold the sessions before measuring and leaving.
        #[arg(long, default_value_t = 5.0)]
        hold: f64,
    },
    /// N online users send 1:1 messages to random others at an aggregate rate.
    Chat {
        #[arg(long, default_value_t = 100)]
        count: usize,
        /// Messages per second, all senders together.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Seconds of sending.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Body padding in bytes.
        #[arg(long, default_value_t = 50)]
        body: usize,
    },
}

/// Server figures from /proc.
struct ProcStats {
    rss_kib: u64,
    cpu_s: f64,
}

fn proc_stats(pid: u32) -> Option<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces): utime is 14th, stime 15th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu_s = (fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?) / ticks;
    Some(ProcStats { rss_kib, cpu_s })
}

/// This process's CPU time (user + system), to show the load generator is not the limit.
fn own_cpu_s() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let target = Target { addr: cli.server, domain: cli.domain.clone(), security: cli.security, mechanism: cli.mechanism };
    let cli = Arc::new(cli);
    match cli.scenario {
        Scenario::Connect { count, ramp, parallel, hold } => connect(cli.clone(), target, count, ramp, parallel, hold).await,
        Scenario::Chat { count, rate, duration, body } => chat(cli.clone(), target, count, rate, duration, body).await,
    }
}

fn source_for(cli: &Cli, i: usize) -> Option<IpAddr> {
    (!cli.source.is_empty()).then(|| cli.source[i % cli.source.len()])
}

async fn connect(cli: Arc<Cli>, target: Target, count: usize, ramp: f64, parallel: usize, hold: f64) {
    let before = cli.server_pid.and_then(proc_stats);
    let cpu0 = own_cpu_s();
    let started = Instant::now();
    let limit = Arc::new(Semaphore::new(parallel));
    let failures = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        // Ramp: start login i no earlier than i / ramp seconds.
        let due = started + Duration::from_secs_f64(i as f64 / ramp);
        tokio::time::sleep_until(due.into()).await;
        let permit = limit.clone().acquire_owned().await.unwrap();
        let (cli, target, failures) = (cli.clone(), target.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let user = format!("{}{i}", cli.prefix);
            let result = client::login(&target, source_for(&cli, i), &user, &cli.password, "bench", true).await;
            drop(permit);
            match result {
                Ok(session) => Some(session),
                Err(e) => {
                    if failures.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("login {user}: {e}");
                    }
                    None
                }
            }
        }));
    }
    let mut sessions = Vec::new();
    for t in tasks {
        if let Some(s) = t.await.unwrap() {
            sessions.push(s);
        }
    }
    let login_time = started.elapsed().as_secs_f64();
    let logins_cpu = cli.server_pid.and_then(proc_stats);
    tokio::time::sleep(Duration::from_secs_f64(hold)).await;
    let after = cli.server_pid.and_then(proc_stats);
    let ok = sessions.len();
    let mut line = json!({
        "scenario": "connect",
        "server": cli.label,
        "security": format!("{:?}", cli.security).to_lowercase(),
        "mechanism": format!("{:?}", cli.mechanism),
        "sessions": count,
        "ok": ok,
        "failed": failures.load(Ordering::Relaxed),
        "login_rate_per_s": ok as f64 / login_time,
        "loadgen_cpu_s": own_cpu_s() - cpu0,
    });
    if let (Some(b), Some(l), Some(a)) = (before, logins_cpu, after) {
        line["server_rss_before_kib"] = json!(b.rss_kib);
        line["server_rss_after_kib"] = json!(a.rss_kib);
        line["server_kib_per_session"] = json!((a.rss_kib as f64 - b.rss_kib as f64) / ok.max(1) as f64);
        line["server_cpu_ms_per_login"] = json!((l.cpu_s - b.cpu_s) * 1000.0 / ok.max(1) as f64);
    }
    println!("{line}");
    // Leave politely, all at once.
    for mut s in sessions {
        let _ = s.writer.write_all(b"</stream:stream>").await;
    }
}

/// What a receiver learned.
#[derive(Default)]
struct Received {
    count: u64,
    duplicates_or_reordered: u64,
    latencies_us: Vec<u32>,
}

async fn chat(cli: Arc<Cli>, target: Target, count: usize, rate: f64, duration: f64, pad: usize) {
    assert!(count >= 2, "chat needs at least two users");
    let limit = Arc::new(Semaphore::new(64));
    let mut logins = Vec::new();
    for i in 0..count {
        let permit = limit.clone().acquire_owned().await.unwrap();
        let (cli, target) = (cli.clone(), target.clone());
        logins.push(tokio::spawn(async move {
            let s = client::login(&target, source_for(&cli, i), &format!("{}{i}", cli.prefix), &cli.password, "chat", true).await;
            drop(permit);
            s.unwrap_or_else(|e| panic!("login {i}: {e}"))
        }));
    }
    let mut sessions = Vec::new();
    for l in logins {
        sessions.push(l.await.unwrap());
    }
    let jids: Arc<Vec<String>> = Arc::new(sessions.iter().map(|s| s.jid.split('/').next().unwrap().to_string()).collect());
    let clock = Instant::now();
    let stop_receiving = Arc::new(tokio::sync::Notify::new());
    let before = cli.server_pid.and_then(proc_stats);
    let cpu0 = own_cpu_s();
    let sent_total = Arc::new(AtomicU64::new(0));
    let delivered = Arc::new(AtomicU64::new(0));
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    let per_sender = rate / count as f64;
    let padding = "x".repeat(pad);
    for (i, session) in sessions.into_iter().enumerate() {
        let client::Session { mut reader, mut writer, .. } = session;
        let stop = stop_receiving.clone();
        let delivered = delivered.clone();
        receivers.push(tokio::spawn(async move {
            let mut got = Received::default();
            let mut last: HashMap<u32, u64> = HashMap::new();
            loop {
                let s = tokio::select! {
                    s = reader.stanza() => match s { Ok(s) => s, Err(_) => break },
                    _ = stop.notified() => break,
                };
                let Some(body) = s.body.filter(|_| s.name == "message") else { continue };
                let mut parts = body.split(' ');
                let (Some(from), Some(seq), Some(t)) = (parts.next(), parts.next(), parts.next()) else { continue };
                let (Ok(from), Ok(seq), Ok(t)) = (from.parse::<u32>(), seq.parse::<u64>(), t.parse::<u64>()) else { continue };
                let now = clock.elapsed().as_micros() as u64;
                got.count += 1;
                delivered.fetch_add(1, Ordering::Relaxed);
                got.latencies_us.push(now.saturating_sub(t).min(u32::MAX as u64) as u32);
                let prev = last.entry(from).or_insert(0);
                if seq <= *prev {
                    got.duplicates_or_reordered += 1;
                } else {
                    *prev = seq;
                }
            }
            got
        }));
        let (jids, sent_total, padding) = (jids.clone(), sent_total.clone(), padding.clone());
        senders.push(tokio::spawn(async move {
            // Batched: every tick, write all the messages that are due in one go.
            let tick = Duration::from_millis(10);
            let start = Instant::now();
            let mut sent = 0u64;
            let mut seq_to: HashMap<usize, u64> = HashMap::new();
            let mut rng = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut buf = String::new();
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let elapsed = start.elapsed().as_secs_f64();
                if elapsed >= duration {
                    break;
                }
                let due = (elapsed * per_sender) as u64;
                buf.clear();
                while sent < due {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let mut to = (rng % jids.len() as u64) as usize;
                    if to == i {
                        to = (to + 1) % jids.len();
                    }
                    let seq = seq_to.entry(to).or_insert(0);
                    *seq += 1;
                    let t = clock.elapsed().as_micros();
                    buf.push_str(&format!("<message to='{}' type='chat'><body>{i} {seq} {t} {padding}</body></message>", jids[to]));
                    sent += 1;
                }
                if !buf.is_empty() && writer.write_all(buf.as_bytes()).await.is_err() {
                    break;
                }
            }
            sent_total.fetch_add(sent, Ordering::Relaxed);
            writer
        }));
    }
    let mut writers = Vec::new();
    for s in senders {
        writers.push(s.await.unwrap());
    }
    let sending_time = clock.elapsed().as_secs_f64();
    let after_send = cli.server_pid.and_then(proc_stats);
    // Let what is in flight arrive.
    let sent = sent_total.load(Ordering::Relaxed);
    let drain_deadline = Instant::now() + Duration::from_secs(10);
    while delivered.load(Ordering::Relaxed) < sent && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A little longer, to catch duplicates.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop_receiving.notify_waiters();
    let mut total = Received::default();
    for r in receivers {
        let got = r.await.unwrap();
        total.count += got.count;
        total.duplicates_or_reordered += got.duplicates_or_reordered;
        total.latencies_us.extend(got.latencies_us);
    }
    total.latencies_us.sort_unstable();
    let l = &total.latencies_us;
    let mut line = json!({
        "scenario": "chat",
        "server": cli.label,
        "security": format!("{:?}", cli.security).to_lowercase(),
        "users": count,
        "offered_rate_per_s": sent as f64 / sending_time,
        "delivered_rate_per_s": total.count as f64 / sending_time,
        "sent": sent,
        "delivered": total.count,
        "lost": sent.saturating_sub(total.count),
        "duplicates_or_reordered": total.duplicates_or_reordered,
        "latency_ms": {
            "p50": percentile(l, 0.50) as f64 / 1000.0,
            "p90": percentile(l, 0.90) as f64 / 1000.0,
            "p99": percentile(l, 0.99) as f64 / 1000.0,
            "max": l.last().copied().unwrap_or(0) as f64 / 1000.0,
        },
        "loadgen_cpu_s": own_cpu_s() - cpu0,
        "seconds": sending_time,
    });
    if let (Some(b), Some(a)) = (before, after_send) {
        line["server_cpu_s"] = json!(a.cpu_s - b.cpu_s);
        line["server_cpu_us_per_message"] = json!((a.cpu_s - b.cpu_s) * 1e6 / total.count.max(1) as f64);
        line["server_rss_kib"] = json!(a.rss_kib);
    }
    println!("{line}");
    for mut w in writers {
        let _ = w.write_all(b"</stream:stream>").await;
    }
}
