//! connect: open N sessions at a ramp, hold them idle, optionally ping every one of them;
//! report logins, failures, server memory per session and server CPU per login. With
//! --checkpoints, the ramp pauses at those session counts to record the server's RSS (the
//! memory slope of the scale run). With --sm each session enables XEP-0198 stream
//! management with resumption after bind (as Conversations does) and answers the server's
//! ack requests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::WriteHalf;
use tokio::sync::Semaphore;

use crate::client::{self, SendExt, Stream};
use crate::sm::{self, Counters};
use crate::{Ctx, own_cpu_s, round};

#[derive(clap::Args, Clone)]
pub struct Args {
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// Logins started per second.
    #[arg(long, default_value_t = 500.0)]
    pub ramp: f64,
    /// Logins in progress at once.
    #[arg(long, default_value_t = 64)]
    pub parallel: usize,
    /// Seconds to hold the sessions idle before reading the server's memory.
    #[arg(long, default_value_t = 5.0)]
    pub hold: f64,
    /// Session counts at which to pause the ramp and record the server's RSS.
    #[arg(long, value_delimiter = ',')]
    pub checkpoints: Vec<usize>,
    /// Seconds of pause at each checkpoint before reading the RSS.
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,
    /// Once all are connected and held, send an XEP-0199 ping to the server on every
    /// session and count the answers.
    #[arg(long)]
    pub ping: bool,
    #[arg(long, default_value_t = 60.0)]
    pub ping_timeout: f64,
    /// Do not send initial presence.
    #[arg(long)]
    pub no_presence: bool,
    /// First account number.
    #[arg(long, default_value_t = 0)]
    pub first: usize,
    /// Per-session read buffer (bytes).
    #[arg(long, default_value_t = 4096)]
    pub read_buffer: usize,
    /// XEP-0198: `<enable resume='true'/>` after bind; the server's `<r/>` are answered.
    #[arg(long)]
    pub sm: bool,
    /// XEP-0280: enable carbons after bind.
    #[arg(long)]
    pub carbons: bool,
}

type Writer = Arc<tokio::sync::Mutex<WriteHalf<Stream>>>;

#[derive(Default)]
struct Shared {
    answered: AtomicU64,
    ping_errors: AtomicU64,
    closed: AtomicU64,
    /// Microseconds after the ping phase started when the last answer came.
    last_answer_us: AtomicU64,
    ping_start: Mutex<Option<Instant>>,
    /// XEP-0198 ack requests of the server, answered.
    sm_requests: AtomicU64,
}

/// Reads everything the server sends for the life of the session: answers the server's
/// pings, counts answers to ours.
fn spawn_reader(
    mut reader: client::Reader<tokio::io::ReadHalf<Stream>>,
    writer: Writer,
    shared: Arc<Shared>,
    sm: Option<Arc<Counters>>,
) {
    tokio::spawn(async move {
        loop {
            let s = match reader.stanza().await {
                Ok(s) => s,
                Err(_) => break,
            };
            if let Some(sm) = &sm {
                match s.name.as_str() {
                    "r" => {
                        let h = sm.received.load(Ordering::Relaxed);
                        shared.sm_requests.fetch_add(1, Ordering::Relaxed);
                        let _ = writer.lock().await.send(sm::answer(h).as_bytes()).await;
                        continue;
                    }
                    "a" => {
                        if let Some(h) = s.h {
                            sm.acknowledged(h);
                        }
                        continue;
                    }
                    name if sm::counted(name) => {
                        sm.received_one();
                    }
                    _ => {}
                }
            }
            if s.name != "iq" {
                continue;
            }
            match (s.kind.as_deref(), s.id.as_deref()) {
                (Some("get"), Some(id)) if s.children.iter().any(|c| c == "ping") => {
                    let to = s
                        .from
                        .as_deref()
                        .map(|f| format!(" to='{f}'"))
                        .unwrap_or_default();
                    let reply = format!("<iq type='result' id='{id}'{to}/>");
                    let _ = writer.lock().await.send(reply.as_bytes()).await;
                    if let Some(sm) = &sm {
                        sm.sent(1, false);
                    }
                }
                (Some(kind), Some("bp")) => {
                    if kind == "result" {
                        shared.answered.fetch_add(1, Ordering::Relaxed);
                    } else {
                        shared.ping_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(start) = *shared.ping_start.lock().unwrap() {
                        shared
                            .last_answer_us
                            .fetch_max(start.elapsed().as_micros() as u64, Ordering::Relaxed);
                    }
                }
                _ => {}
            }
        }
        shared.closed.fetch_add(1, Ordering::Relaxed);
    });
}

pub async fn run(ctx: Arc<Ctx>, a: Args) -> bool {
    client::set_read_capacity(a.read_buffer);
    let before = ctx.server();
    let cpu0 = own_cpu_s();
    let wall0 = Instant::now();
    let limit = Arc::new(Semaphore::new(a.parallel.max(1)));
    let failures = Arc::new(AtomicU64::new(0));
    let errors: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let shared = Arc::new(Shared::default());
    let mut writers: Vec<Writer> = Vec::with_capacity(a.count);
    let mut counters: Vec<Option<Arc<Counters>>> = Vec::with_capacity(a.count);
    let sm_enabled = Arc::new(AtomicU64::new(0));
    let sm_resumable = Arc::new(AtomicU64::new(0));
    let carbons_enabled = Arc::new(AtomicU64::new(0));
    let extras = client::Extras {
        sm: a.sm.then_some(true),
        carbons: a.carbons,
    };
    let mut bounds: Vec<usize> = a
        .checkpoints
        .iter()
        .copied()
        .filter(|&c| c > 0 && c < a.count)
        .collect();
    bounds.sort_unstable();
    bounds.dedup();
    bounds.push(a.count);
    let mut login_time = 0.0;
    let mut login_cpu = 0.0;
    let mut loadgen_login_cpu = 0.0;
    let mut last_stats = before;
    let mut started_at = 0;
    for &bound in &bounds {
        let phase_start = Instant::now();
        let phase_cpu = own_cpu_s();
        let phase_server = ctx.server();
        let mut tasks = Vec::with_capacity(bound - started_at);
        for i in started_at..bound {
            // Ramp: start login i no earlier than its slot.
            let due = phase_start + Duration::from_secs_f64((i - started_at) as f64 / a.ramp);
            tokio::time::sleep_until(due.into()).await;
            let permit = limit.clone().acquire_owned().await.unwrap();
            let (ctx, failures, errors, shared) = (
                ctx.clone(),
                failures.clone(),
                errors.clone(),
                shared.clone(),
            );
            let (sm_enabled, sm_resumable, carbons_enabled) = (
                sm_enabled.clone(),
                sm_resumable.clone(),
                carbons_enabled.clone(),
            );
            let n = a.first + i;
            let presence = !a.no_presence;
            tasks.push(tokio::spawn(async move {
                let result = ctx.login_with(n, "bench", presence, extras).await;
                drop(permit);
                match result {
                    Ok(s) => {
                        let writer = Arc::new(tokio::sync::Mutex::new(s.writer));
                        let counters = s.sm.as_ref().map(|e| {
                            sm_enabled.fetch_add(1, Ordering::Relaxed);
                            if e.id.is_some() {
                                sm_resumable.fetch_add(1, Ordering::Relaxed);
                            }
                            Arc::new(Counters::starting_at(e.received, e.sent, 0))
                        });
                        if s.carbons {
                            carbons_enabled.fetch_add(1, Ordering::Relaxed);
                        }
                        spawn_reader(s.reader, writer.clone(), shared, counters.clone());
                        Some((writer, counters))
                    }
                    Err(e) => {
                        if failures.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("login {}: {e}", ctx.user(n));
                        }
                        let mut kind = e.to_string();
                        kind.truncate(80);
                        *errors.lock().unwrap().entry(kind).or_default() += 1;
                        None
                    }
                }
            }));
        }
        for t in tasks {
            if let Some((w, c)) = t.await.unwrap() {
                writers.push(w);
                counters.push(c);
            }
        }
        started_at = bound;
        login_time += phase_start.elapsed().as_secs_f64();
        loadgen_login_cpu += own_cpu_s() - phase_cpu;
        if let (Some(b), Some(a)) = (phase_server, ctx.server()) {
            login_cpu += a.cpu_s - b.cpu_s;
        }
        if bound < a.count {
            tokio::time::sleep(Duration::from_secs_f64(a.settle)).await;
            let now = ctx.server();
            ctx.emit(
                "connect-checkpoint",
                json!({
                    "sessions": writers.len(),
                    "server_rss_kib": now.map(|s| s.rss_kib),
                    "server_rss_before_kib": before.map(|s| s.rss_kib),
                }),
                cpu0,
                wall0,
            );
            last_stats = now;
        }
    }
    let _ = last_stats;
    let ok = writers.len();
    tokio::time::sleep(Duration::from_secs_f64(a.hold)).await;
    let after = ctx.server();
    let mut fields = json!({
        "sessions": a.count,
        "ok": ok,
        "failed": failures.load(Ordering::Relaxed),
        "errors": *errors.lock().unwrap(),
        "closed_by_server": shared.closed.load(Ordering::Relaxed),
        "login_seconds": round(login_time, 3),
        "login_rate_per_s": round(ok as f64 / login_time.max(1e-9), 1),
        "loadgen_cpu_ms_per_login": round(loadgen_login_cpu * 1000.0 / ok.max(1) as f64, 3),
        "loadgen_login_cpu_pct": round(100.0 * loadgen_login_cpu / login_time.max(1e-9), 1),
        "ramp_per_s": a.ramp,
        "parallel": a.parallel,
        "sm": a.sm,
        "carbons": a.carbons,
    });
    if a.sm {
        fields["sm_enabled"] = json!(sm_enabled.load(Ordering::Relaxed));
        fields["sm_resumable"] = json!(sm_resumable.load(Ordering::Relaxed));
    }
    if a.carbons {
        fields["carbons_enabled"] = json!(carbons_enabled.load(Ordering::Relaxed));
    }
    if let (Some(b), Some(af)) = (before, after) {
        fields["server_rss_before_kib"] = json!(b.rss_kib);
        fields["server_rss_after_kib"] = json!(af.rss_kib);
        fields["server_kib_per_session"] = json!(round(
            (af.rss_kib as f64 - b.rss_kib as f64) / ok.max(1) as f64,
            2
        ));
        fields["server_cpu_ms_per_login"] = json!(round(login_cpu * 1000.0 / ok.max(1) as f64, 4));
        fields["server_login_cpu_pct"] = json!(round(100.0 * login_cpu / login_time.max(1e-9), 1));
    }
    if a.ping {
        let ping_cpu = ctx.server();
        let start = Instant::now();
        *shared.ping_start.lock().unwrap() = Some(start);
        let ping = format!(
            "<iq type='get' id='bp' to='{}'><ping xmlns='urn:xmpp:ping'/></iq>",
            ctx.cli.domain
        );
        let mut sent = 0u64;
        for (w, c) in writers.iter().zip(&counters) {
            if w.lock().await.send(ping.as_bytes()).await.is_ok() {
                sent += 1;
                if let Some(c) = c {
                    c.sent(1, false);
                }
            }
        }
        let deadline = start + Duration::from_secs_f64(a.ping_timeout);
        while shared.answered.load(Ordering::Relaxed) + shared.ping_errors.load(Ordering::Relaxed)
            < sent
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let answered = shared.answered.load(Ordering::Relaxed);
        fields["pings_sent"] = json!(sent);
        fields["pings_answered"] = json!(answered);
        fields["ping_errors"] = json!(shared.ping_errors.load(Ordering::Relaxed));
        fields["ping_all_answered_seconds"] = json!(round(
            shared.last_answer_us.load(Ordering::Relaxed) as f64 / 1e6,
            3
        ));
        if let (Some(b), Some(af)) = (ping_cpu, ctx.server()) {
            fields["server_cpu_us_per_ping"] = json!(round(
                (af.cpu_s - b.cpu_s) * 1e6 / answered.max(1) as f64,
                2
            ));
            fields["server_rss_after_ping_kib"] = json!(af.rss_kib);
        }
    }
    if a.sm {
        fields["sm_requests_answered"] = json!(shared.sm_requests.load(Ordering::Relaxed));
    }
    let all_ok = ok == a.count
        && (!a.ping || fields["pings_answered"] == json!(ok as u64))
        && (!a.sm || fields["sm_resumable"] == json!(ok as u64));
    ctx.emit("connect", fields, cpu0, wall0);
    // Leave politely, and give the server a moment to answer.
    for w in &writers {
        let _ = w.lock().await.send(b"</stream:stream>").await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while (shared.closed.load(Ordering::Relaxed) as usize) < ok && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    all_ok
}
