//! chat: N online users send 1:1 messages to random others at an aggregate target rate.
//! Each body carries the sender, a sequence number per (sender, recipient) pair, a send
//! timestamp and the step number. Reports offered vs delivered rate, loss, duplicates and
//! reordering per pair, and latency percentiles. With --sweep, the rate is doubled until a
//! step is not sustained (a message missing at the end of the drain window, p99 over the
//! limit, or the senders could not offer the rate), then bisected; the last line gives the
//! highest sustained rate. An overloaded step's backlog is awaited before the next step:
//! only a message that never arrives is lost.
//!
//! With --sm every session enables XEP-0198 stream management (with resumption) after
//! bind, answers the server's `<r/>` at once, and asks for an ack itself after each burst
//! it sends (as Conversations does); the time until a burst is acknowledged is reported,
//! and at the end of each step every sender asks once more and waits until all it sent is
//! acknowledged. With --carbons every session enables XEP-0280 carbons.
//!
//! The s2s scenario (`s2s-chat`, src/s2s.rs) runs the same between two federated servers:
//! [`run_between`] with a second server logs the same accounts in on both, and each user
//! sends only to its partner, the account of the same number on the other server, so every
//! message crosses the server-to-server link.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::WriteHalf;
use tokio::sync::Semaphore;

use crate::client::{self, SendExt, Stream, Target};
use crate::sm::{self, Counters};
use crate::{Ctx, ProcStats, latency_ms, own_cpu_s, proc_stats, round};

#[derive(clap::Args, Clone)]
pub struct Args {
    #[arg(long, default_value_t = 100)]
    pub count: usize,
    /// Messages per second, all senders together (the first rate of a sweep).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds of sending per step.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Body padding in bytes.
    #[arg(long, default_value_t = 50)]
    pub body: usize,
    /// Step the rate up (doubling, then bisecting) to the highest sustained one.
    #[arg(long)]
    pub sweep: bool,
    /// A step is sustained if every message arrived within the drain window, p99 latency is
    /// under this, and the senders offered at least 95% of the target rate.
    #[arg(long, default_value_t = 50.0)]
    pub max_p99_ms: f64,
    /// Bisections after the first unsustained rate.
    #[arg(long, default_value_t = 3)]
    pub bisect: u32,
    /// Highest rate a sweep tries.
    #[arg(long, default_value_t = 1_000_000.0)]
    pub max_rate: f64,
    /// Lowest rate a sweep tries (halving from the first rate).
    #[arg(long, default_value_t = 50.0)]
    pub min_rate: f64,
    /// Seconds to wait for messages in flight after sending stops (the step's figures cover
    /// these; later ones are counted apart as arriving after the drain).
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// After the drain, seconds to wait at most for the rest of an overloaded step's
    /// messages (they count as late, and only those that never come as lost).
    #[arg(long, default_value_t = 180.0)]
    pub backlog_timeout: f64,
    /// Seconds of pause between steps.
    #[arg(long, default_value_t = 1.0)]
    pub pause: f64,
    /// Per-session read buffer (bytes).
    #[arg(long, default_value_t = 16384)]
    pub read_buffer: usize,
    /// XEP-0198 on every session: answer `<r/>`, request acks after each burst.
    #[arg(long)]
    pub sm: bool,
    /// XEP-0280: every session enables carbons.
    #[arg(long)]
    pub carbons: bool,
    /// Seconds to wait at the end of a step until everything sent is acknowledged.
    #[arg(long, default_value_t = 10.0)]
    pub ack_timeout: f64,
}

/// Per (sender → this receiver) pair: the highest sequence number seen and the gaps below it.
#[derive(Default)]
struct Pair {
    max: u64,
    missing: HashSet<u64>,
}

#[derive(Default)]
struct StepStats {
    count: u64,
    duplicates: u64,
    reordered: u64,
    /// Messages of an earlier step that arrived during this one.
    late: u64,
    latencies_us: Vec<u32>,
    pairs_reordered: HashSet<u32>,
}

#[derive(Default)]
struct RecvState {
    step: u64,
    stats: StepStats,
    pairs: HashMap<u32, Pair>,
}

type Writer = Arc<tokio::sync::Mutex<WriteHalf<Stream>>>;

/// The second server of the s2s scenario: the accounts PREFIX0..count-1 log in there too
/// (sessions count..2 × count), and session i's partner is session (i + count) mod
/// 2 × count, the same account number on the other server.
///
/// Its senders are also spread evenly in time: sender i sends its k-th message of a step
/// at (k − i/n) ÷ its rate, so that all together make an even stream at every rate. (In
/// `chat` every sender sends its k-th message at k ÷ its rate, within the same 10 ms tick:
/// below 100 msg/s per sender that is one burst of one message per user, and its p99 is how
/// long the server takes for the burst, whatever the rate. Two servers sharing one core
/// take about twice as long per message, so for the federated chat that burst alone would
/// decide the sweep.)
pub struct Federated {
    pub target: Target,
    /// Its process, for its CPU and memory (/proc/PID).
    pub pid: Option<u32>,
    /// Seconds to wait for the warm-up messages, the first over each link.
    pub link_timeout: f64,
}

/// The body of the warm-up messages (not counted in any step).
const WARMUP: &str = "warmup";

struct Sender {
    i: usize,
    writer: Writer,
    seq_to: HashMap<usize, u64>,
    rng: u64,
    /// The only recipient (the s2s scenario's partner); None: a random other user.
    partner: Option<usize>,
    /// XEP-0198 counters, with --sm.
    sm: Option<Arc<Counters>>,
}

pub async fn run(ctx: Arc<Ctx>, a: Args) -> bool {
    run_between(ctx, a, None).await
}

/// The chat on one server, or with `fed` between the users of two federated servers.
pub async fn run_between(ctx: Arc<Ctx>, a: Args, fed: Option<Federated>) -> bool {
    assert!(
        a.count >= 2 || (fed.is_some() && a.count >= 1),
        "chat needs at least two users"
    );
    client::set_read_capacity(a.read_buffer);
    let limit = Arc::new(Semaphore::new(64));
    let mut logins = Vec::new();
    let extras = client::Extras {
        sm: a.sm.then_some(true),
        carbons: a.carbons,
    };
    let per_side = a.count;
    let sessions_total = if fed.is_some() { 2 * per_side } else { per_side };
    let target_b = fed.as_ref().map(|f| Arc::new(f.target.clone()));
    for i in 0..sessions_total {
        let permit = limit.clone().acquire_owned().await.unwrap();
        let ctx = ctx.clone();
        let target_b = target_b.clone();
        logins.push(tokio::spawn(async move {
            let k = i % per_side;
            let s = match target_b.filter(|_| i >= per_side) {
                None => ctx.login_with(k, "chat", true, extras).await,
                Some(t) => {
                    let (user, password) = (ctx.user(k), &ctx.cli.password);
                    client::login_with(&t, ctx.source(i), &user, password, "chat", true, extras)
                        .await
                }
            };
            drop(permit);
            let server = if i >= per_side { "the second server" } else { "the server" };
            s.map_err(|e| format!("login {} on {server}: {e}", ctx.user(k)))
        }));
    }
    let mut sessions = Vec::new();
    for l in logins {
        match l.await.unwrap() {
            Ok(s) => sessions.push(s),
            Err(e) => {
                eprintln!("{e}");
                return false;
            }
        }
    }
    // Let the presence exchanges of the logins settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let jids: Arc<Vec<String>> = Arc::new(
        sessions
            .iter()
            .map(|s| s.jid.split('/').next().unwrap().to_string())
            .collect(),
    );
    let clock = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    // Message errors (bounces) and warm-up messages received, all sessions together.
    let errors = Arc::new(AtomicU64::new(0));
    let warmed = Arc::new(AtomicU64::new(0));
    let current_step = Arc::new(AtomicU64::new(0));
    let mut states = Vec::new();
    let mut senders = Vec::new();
    let carbons_enabled = sessions.iter().filter(|s| s.carbons).count();
    let sm_resumable = sessions
        .iter()
        .filter(|s| s.sm.as_ref().is_some_and(|e| e.id.is_some()))
        .count();
    for (i, session) in sessions.into_iter().enumerate() {
        let client::Session {
            mut reader,
            writer,
            sm: enabled,
            ..
        } = session;
        let writer: Writer = Arc::new(tokio::sync::Mutex::new(writer));
        let counters = enabled.map(|e| Arc::new(Counters::starting_at(e.received, e.sent, 0)));
        let state = Arc::new(Mutex::new(RecvState::default()));
        states.push(state.clone());
        let (delivered, errors, warmed) = (delivered.clone(), errors.clone(), warmed.clone());
        let (sm, answers) = (counters.clone(), writer.clone());
        tokio::spawn(async move {
            while let Ok(s) = reader.stanza().await {
                if let Some(sm) = &sm {
                    match s.name.as_str() {
                        "r" => {
                            sm.requests.fetch_add(1, Ordering::Relaxed);
                            let h = sm.received.load(Ordering::Relaxed);
                            let _ = answers.lock().await.send(sm::answer(h).as_bytes()).await;
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
                if s.name == "message" && s.kind.as_deref() == Some("error") {
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let Some(body) = s.body.filter(|_| s.name == "message") else {
                    continue;
                };
                if body == WARMUP {
                    warmed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let mut parts = body.split(' ');
                let (Some(from), Some(seq), Some(t), Some(step)) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                let (Ok(from), Ok(seq), Ok(t), Ok(step)) = (
                    from.parse::<u32>(),
                    seq.parse::<u64>(),
                    t.parse::<u64>(),
                    step.parse::<u64>(),
                ) else {
                    continue;
                };
                let now = clock.elapsed().as_micros() as u64;
                let mut st = state.lock().unwrap();
                let st = &mut *st;
                if step != st.step {
                    st.stats.late += 1;
                    continue;
                }
                let pair = st.pairs.entry(from).or_default();
                let stats = &mut st.stats;
                if seq > pair.max {
                    // Gaps (bounded: a huge jump is a bug, not something to track).
                    if seq - pair.max <= 100_000 {
                        pair.missing.extend(pair.max + 1..seq);
                    }
                    pair.max = seq;
                } else if pair.missing.remove(&seq) {
                    stats.reordered += 1;
                    stats.pairs_reordered.insert(from);
                } else {
                    stats.duplicates += 1;
                    continue;
                }
                stats.count += 1;
                delivered.fetch_add(1, Ordering::Relaxed);
                stats
                    .latencies_us
                    .push(now.saturating_sub(t).min(u32::MAX as u64) as u32);
            }
        });
        let rng = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        senders.push(Sender {
            i,
            writer,
            seq_to: HashMap::new(),
            rng,
            partner: fed.as_ref().map(|_| (i + per_side) % sessions_total),
            sm: counters,
        });
    }
    // s2s: one message from every user to its partner opens the links both ways (DNS,
    // TCP, TLS, dialback), which the steps must not measure; all must arrive.
    let mut link_setup_seconds = None;
    if let Some(f) = &fed {
        let t0 = Instant::now();
        for s in &senders {
            let to = &jids[s.partner.unwrap()];
            let xml = format!("<message to='{to}' type='chat'><body>{WARMUP}</body></message>");
            if let Some(sm) = &s.sm {
                sm.sent(1, false);
            }
            if let Err(e) = s.writer.lock().await.send(xml.as_bytes()).await {
                eprintln!("s2s warm-up: sending: {e}");
                return false;
            }
        }
        let deadline = t0 + Duration::from_secs_f64(f.link_timeout);
        while warmed.load(Ordering::Relaxed) < sessions_total as u64
            && errors.load(Ordering::Relaxed) == 0
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (got, bounced) = (warmed.load(Ordering::Relaxed), errors.load(Ordering::Relaxed));
        if got < sessions_total as u64 || bounced > 0 {
            eprintln!(
                "s2s warm-up: {got} of {sessions_total} messages arrived within {} s, {bounced} bounced: the servers did not federate",
                f.link_timeout
            );
            return false;
        }
        link_setup_seconds = Some(round(t0.elapsed().as_secs_f64(), 3));
        // Anything the warm-up left (acks, presence) settles before the first step.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let scenario = if fed.is_some() { "s2s-chat" } else { "chat" };
    let server_b = || fed.as_ref().and_then(|f| f.pid).and_then(proc_stats);
    let padding = Arc::new("x".repeat(a.body));
    let mut step_no = 0u64;
    let mut all_ok = true;
    let mut step = async |rate: f64, senders: Vec<Sender>| -> (Vec<Sender>, Value, bool) {
        step_no += 1;
        current_step.store(step_no, Ordering::Relaxed);
        for s in &states {
            let mut st = s.lock().unwrap();
            st.step = step_no;
            st.stats = StepStats::default();
        }
        delivered.store(0, Ordering::Relaxed);
        let errors0 = errors.load(Ordering::Relaxed);
        let requests0: u64 = senders
            .iter()
            .filter_map(|s| s.sm.as_ref())
            .map(|c| c.requests.load(Ordering::Relaxed) as u64)
            .sum();
        let before = ctx.server();
        let before_b = server_b();
        let cpu0 = own_cpu_s();
        let wall0 = Instant::now();
        let per_sender = rate / senders.len() as f64;
        let n = senders.len();
        let duration = a.duration;
        let spread = fed.is_some();
        let mut tasks = Vec::new();
        for mut s in senders {
            let (jids, padding) = (jids.clone(), padding.clone());
            let step = step_no;
            tasks.push(tokio::spawn(async move {
                // Batched: every tick, all the messages due are written in one go. Senders
                // tick at staggered offsets so the load is smooth.
                let tick = Duration::from_millis(10);
                let start = Instant::now();
                tokio::time::sleep(tick.mul_f64(s.i as f64 / n as f64)).await;
                // The federated chat's senders: each one's messages shifted by its share
                // of its own period (see Federated).
                let phase = if spread { s.i as f64 / n as f64 } else { 0.0 };
                let mut sent = 0u64;
                let mut buf = String::new();
                let mut interval = tokio::time::interval(tick);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    interval.tick().await;
                    let elapsed = start.elapsed().as_secs_f64();
                    let due = (elapsed.min(duration) * per_sender + phase) as u64;
                    buf.clear();
                    let burst_start = sent;
                    while sent < due {
                        let mut rng = s.rng;
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        s.rng = rng;
                        let mut to = (rng % jids.len() as u64) as usize;
                        if to == s.i {
                            to = (to + 1) % jids.len();
                        }
                        if let Some(partner) = s.partner {
                            to = partner;
                        }
                        let seq = s.seq_to.entry(to).or_insert(0);
                        *seq += 1;
                        let t = clock.elapsed().as_micros();
                        let _ = write!(
                            buf,
                            "<message to='{}' type='chat'><body>{} {seq} {t} {step} {padding}</body></message>",
                            jids[to], s.i
                        );
                        sent += 1;
                    }
                    if !buf.is_empty() {
                        let mut w = s.writer.lock().await;
                        if let Some(sm) = &s.sm {
                            // Counted before the write: the ack may come before we look.
                            sm.sent((sent - burst_start) as u32, true);
                            buf.push_str(sm::REQUEST);
                        }
                        if w.send(buf.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                    if elapsed >= duration {
                        break;
                    }
                }
                (s, sent)
            }));
        }
        let mut senders = Vec::new();
        let mut sent = 0;
        for t in tasks {
            let (s, n) = t.await.unwrap();
            senders.push(s);
            sent += n;
        }
        let sending_time = wall0.elapsed().as_secs_f64();
        // Let what is in flight arrive.
        let drain_deadline = Instant::now() + Duration::from_secs_f64(a.drain);
        while delivered.load(Ordering::Relaxed) < sent && Instant::now() < drain_deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let drained = wall0.elapsed().as_secs_f64();
        let in_time = delivered.load(Ordering::Relaxed);
        // An overloaded server may still hold messages: wait for them (they are late, not
        // lost) until all have come or none has come for a while, so that nothing of this
        // step is still in flight when the next starts or the sessions close.
        let backlog_deadline = Instant::now() + Duration::from_secs_f64(a.backlog_timeout);
        let (mut last_count, mut last_progress) = (in_time, Instant::now());
        while delivered.load(Ordering::Relaxed) < sent && Instant::now() < backlog_deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now_count = delivered.load(Ordering::Relaxed);
            if now_count > last_count {
                (last_count, last_progress) = (now_count, Instant::now());
            } else if last_progress.elapsed() > Duration::from_secs(10) {
                break;
            }
        }
        let after_drain = delivered.load(Ordering::Relaxed) - in_time;
        // The server's CPU covers the backlog too: an overloaded server's work on this
        // step's messages (its CPU per message) is not cut off at the drain window.
        let after = ctx.server();
        let after_b = server_b();
        let measured = wall0.elapsed().as_secs_f64();
        // XEP-0198: everyone asks once more; everything sent must be acknowledged.
        let mut ack_fields = None;
        if a.sm {
            for s in &senders {
                let _ = s.writer.lock().await.send(sm::REQUEST.as_bytes()).await;
            }
            let counters: Vec<&Arc<Counters>> =
                senders.iter().filter_map(|s| s.sm.as_ref()).collect();
            let deadline = Instant::now() + Duration::from_secs_f64(a.ack_timeout);
            let unacked = || counters.iter().map(|c| c.unacked() as u64).sum::<u64>();
            while unacked() > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let mut latencies: Vec<u32> =
                counters.iter().flat_map(|c| c.take_latencies()).collect();
            let requests: u64 = counters
                .iter()
                .map(|c| c.requests.load(Ordering::Relaxed) as u64)
                .sum();
            ack_fields = Some(json!({
                "ack_latency_ms": latency_ms(&mut latencies),
                "unacked_at_end": unacked(),
                "server_ack_requests": requests - requests0,
            }));
        }
        // A little longer, to catch duplicates.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut total = StepStats::default();
        let mut pairs_reordered = 0;
        for s in &states {
            let mut st = s.lock().unwrap();
            st.step = 0;
            let got = std::mem::take(&mut st.stats);
            total.count += got.count;
            total.duplicates += got.duplicates;
            total.reordered += got.reordered;
            total.late += got.late;
            pairs_reordered += got.pairs_reordered.len();
            total.latencies_us.extend(got.latencies_us);
        }
        let lat = latency_ms(&mut total.latencies_us);
        let lost = sent.saturating_sub(total.count);
        let offered = sent as f64 / sending_time;
        let sustained = lost == 0
            && after_drain == 0
            && lat["p99"].as_f64().unwrap_or(f64::MAX) < a.max_p99_ms
            && offered >= 0.95 * rate;
        let mut fields = json!({
            "step": step_no,
            "sweep": a.sweep,
            "users": n,
            "target_rate_per_s": round(rate, 1),
            "offered_rate_per_s": round(offered, 1),
            "delivered_rate_per_s": round(total.count as f64 / sending_time, 1),
            "sent": sent,
            "delivered": total.count,
            "lost": lost,
            "duplicates": total.duplicates,
            "reordered": total.reordered,
            "pairs_reordered": pairs_reordered,
            "late_from_earlier_steps": total.late,
            "arrived_after_drain": after_drain,
            "latency_ms": lat,
            "sustained": sustained,
            "seconds": round(sending_time, 3),
            "drain_seconds": round(drained - sending_time, 3),
            "body_bytes": a.body,
            "sm": a.sm,
            "carbons": a.carbons,
        });
        if let Some(Value::Object(extra)) = ack_fields {
            for (k, v) in extra {
                fields[k] = v;
            }
        }
        if a.sm {
            fields["sm_resumable"] = json!(sm_resumable);
        }
        if a.carbons {
            fields["carbons_enabled"] = json!(carbons_enabled);
        }
        if fed.is_none()
            && let (Some(b), Some(af)) = (before, after)
        {
            fields["server_cpu_s"] = json!(round(af.cpu_s - b.cpu_s, 3));
            fields["server_cpu_pct"] = json!(round(100.0 * (af.cpu_s - b.cpu_s) / measured, 1));
            fields["server_cpu_us_per_message"] = json!(round(
                (af.cpu_s - b.cpu_s) * 1e6 / total.count.max(1) as f64,
                2
            ));
            fields["server_rss_kib"] = json!(af.rss_kib);
        }
        if fed.is_some() {
            federated_fields(&mut fields, [(before, after), (before_b, after_b)], measured, total.count);
            fields["users_per_side"] = json!(per_side);
            fields["errors"] = json!(errors.load(Ordering::Relaxed) - errors0);
            fields["link_setup_seconds"] = json!(link_setup_seconds);
        }
        let loadgen_cpu = own_cpu_s() - cpu0;
        fields["loadgen_cpu_us_per_message"] =
            json!(round(loadgen_cpu * 1e6 / total.count.max(1) as f64, 2));
        ctx.emit(scenario, fields.clone(), cpu0, wall0);
        fields["loadgen_cpu_pct"] = json!(round(
            100.0 * loadgen_cpu / wall0.elapsed().as_secs_f64(),
            1
        ));
        tokio::time::sleep(Duration::from_secs_f64(a.pause)).await;
        (senders, fields, sustained)
    };
    let mut senders = senders;
    if !a.sweep {
        let (s, fields, _) = step(a.rate, senders).await;
        senders = s;
        all_ok = fields["lost"] == json!(0)
            && fields["duplicates"] == json!(0)
            && (!a.sm || fields["unacked_at_end"] == json!(0))
            && (fed.is_none() || fields["errors"] == json!(0));
    } else {
        let cpu0 = own_cpu_s();
        let wall0 = Instant::now();
        let (mut lo, mut hi): (Option<f64>, Option<f64>) = (None, None);
        let mut best: Option<Value> = None;
        let mut rate = a.rate;
        let mut bisections = 0;
        let mut steps = Vec::new();
        for _ in 0..30 {
            let (s, fields, sustained) = step(rate, senders).await;
            senders = s;
            steps.push(json!([
                round(rate, 0),
                sustained,
                fields["latency_ms"]["p99"],
                fields["loadgen_cpu_pct"]
            ]));
            if sustained {
                if lo.is_none_or(|l| rate > l) {
                    lo = Some(rate);
                    best = Some(fields);
                }
            } else if hi.is_none_or(|h| rate < h) {
                hi = Some(rate);
            }
            rate = match (lo, hi) {
                (Some(l), None) if l * 2.0 <= a.max_rate => l * 2.0,
                (Some(_), None) => break,
                (None, Some(h)) if h / 2.0 >= a.min_rate => h / 2.0,
                (None, Some(_)) => break,
                (Some(l), Some(h)) => {
                    if bisections >= a.bisect || h / l < 1.05 {
                        break;
                    }
                    bisections += 1;
                    (l + h) / 2.0
                }
                (None, None) => unreachable!(),
            };
        }
        let mut fields = json!({
            "users": jids.len(),
            "sm": a.sm,
            "carbons": a.carbons,
            "max_p99_ms": a.max_p99_ms,
            "max_sustained_rate_per_s": lo.map(|l| round(l, 0)),
            "first_unsustained_rate_per_s": hi.map(|h| round(h, 0)),
            "steps": steps,
        });
        let federated_keys: &[&str] = if fed.is_some() {
            &[
                "server_a_cpu_us_per_message",
                "server_b_cpu_us_per_message",
                "server_a_cpu_pct",
                "server_b_cpu_pct",
            ]
        } else {
            &[]
        };
        if let Some(b) = best {
            for k in [
                "latency_ms",
                "server_cpu_us_per_message",
                "server_cpu_pct",
                "loadgen_cpu_us_per_message",
                "loadgen_cpu_pct",
                "delivered_rate_per_s",
                "ack_latency_ms",
            ]
            .iter()
            .chain(federated_keys)
            {
                fields[format!("at_max_{k}")] = b[*k].clone();
            }
        }
        if fed.is_some() {
            fields["users_per_side"] = json!(per_side);
            fields["link_setup_seconds"] = json!(link_setup_seconds);
        }
        ctx.emit(&format!("{scenario}-max"), fields, cpu0, wall0);
    }
    for s in senders {
        let _ = s.writer.lock().await.send(b"</stream:stream>").await;
    }
    all_ok
}

/// The server figures of an s2s step: each server's CPU (`server_a_*`: the first server's,
/// `server_b_*`: the second's) and memory, and both together as `server_cpu_*` (the whole
/// cost of a federated message: every one is handled by both servers, once as its sender's
/// server and once as its recipient's). `spans`: (before, after) of each server.
fn federated_fields(
    fields: &mut Value,
    spans: [(Option<ProcStats>, Option<ProcStats>); 2],
    measured: f64,
    delivered: u64,
) {
    let mut both = Some(0.0);
    for ((before, after), side) in spans.into_iter().zip(["a", "b"]) {
        let Some((b, af)) = before.zip(after) else {
            both = None;
            continue;
        };
        let cpu = af.cpu_s - b.cpu_s;
        both = both.map(|x| x + cpu);
        fields[format!("server_{side}_cpu_s")] = json!(round(cpu, 3));
        fields[format!("server_{side}_cpu_pct")] = json!(round(100.0 * cpu / measured, 1));
        fields[format!("server_{side}_cpu_us_per_message")] =
            json!(round(cpu * 1e6 / delivered.max(1) as f64, 2));
        fields[format!("server_{side}_rss_kib")] = json!(af.rss_kib);
    }
    if let Some(cpu) = both {
        fields["server_cpu_s"] = json!(round(cpu, 3));
        fields["server_cpu_pct"] = json!(round(100.0 * cpu / measured, 1));
        fields["server_cpu_us_per_message"] = json!(round(cpu * 1e6 / delivered.max(1) as f64, 2));
    }
}
