//! muc-fanout: multi-user chat rooms (XEP-0045) under a fixed rate of groupchat messages.
//! --rooms rooms of --room-size occupants and one room of --big-room occupants (account i
//! is in the big room if i < big-room, and in small room i / room-size if i < rooms ×
//! room-size: so an account is an occupant of one or two rooms). All enter (each join
//! waits for its self-presence and the subject), then the occupants of each room take turns
//! to send, so that the big room gets --big-rate messages per second and the small rooms
//! --small-rate per second together, each occupant at a low rate. Every body carries the
//! room, the sender, a sequence number per (room, sender), the send time and the step.
//! Every occupant gets a copy of every message of its rooms (its own included): figures are
//! per delivered copy (server CPU, latency), with loss, duplicates and reordering per
//! (room, sender) as each receiver sees them. With --sweep the rate (big and small together,
//! in the same proportion) is doubled until a step is not sustained (p99 of the copies over
//! --max-p99-ms, a copy missing at the end of the drain window, or the senders could not
//! offer the rate), then bisected; the last line gives the highest sustained rate and its
//! delivered copies per second.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::muc::{self, Counts, OnMessage, Writer};
use crate::{Ctx, latency_ms, own_cpu_s, round};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Small rooms.
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    /// Occupants of each small room.
    #[arg(long, default_value_t = 100)]
    pub room_size: usize,
    /// Occupants of the big room (0: none).
    #[arg(long, default_value_t = 1000)]
    pub big_room: usize,
    /// Messages per second in the big room (the first rate of a sweep).
    #[arg(long, default_value_t = 20.0)]
    pub big_rate: f64,
    /// Messages per second over all the small rooms together.
    #[arg(long, default_value_t = 20.0)]
    pub small_rate: f64,
    /// Seconds of sending per step.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Body padding in bytes.
    #[arg(long, default_value_t = 50)]
    pub body: usize,
    /// Step the rates up (doubling, then bisecting) to the highest sustained one.
    #[arg(long)]
    pub sweep: bool,
    /// A step is sustained if every copy arrived within the drain window, p99 latency of
    /// the copies is under this, and the senders offered at least 95% of the rate.
    #[arg(long, default_value_t = 100.0)]
    pub max_p99_ms: f64,
    /// Bisections after the first unsustained rate.
    #[arg(long, default_value_t = 3)]
    pub bisect: u32,
    /// Most steps a sweep makes (doublings and bisections).
    #[arg(long, default_value_t = 16)]
    pub max_steps: u32,
    /// Seconds to wait for copies in flight after sending stops.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// After the drain, seconds to wait at most for the rest of an overloaded step's copies
    /// (they count as late, and only those that never come as lost).
    #[arg(long, default_value_t = 120.0)]
    pub backlog_timeout: f64,
    /// Seconds of pause between steps.
    #[arg(long, default_value_t = 1.0)]
    pub pause: f64,
    /// The MUC service (default: conference.DOMAIN).
    #[arg(long)]
    pub service: Option<String>,
    /// Occupants entering at once.
    #[arg(long, default_value_t = 64)]
    pub parallel: usize,
    /// Seconds one join may take.
    #[arg(long, default_value_t = 120.0)]
    pub join_timeout: f64,
    /// Per-session read buffer (bytes).
    #[arg(long, default_value_t = 16384)]
    pub read_buffer: usize,
}

/// Per (room, sender) as one receiver sees it: the highest sequence number and the gaps.
#[derive(Default)]
struct Pair {
    max: u64,
    missing: Vec<u64>,
}

#[derive(Default)]
struct StepStats {
    count: u64,
    duplicates: u64,
    reordered: u64,
    late: u64,
    latencies_us: Vec<u32>,
    pairs_reordered: u64,
}

#[derive(Default)]
struct RecvState {
    step: u64,
    stats: StepStats,
    pairs: HashMap<(u32, u32), Pair>,
    reordered_pairs: HashSet<(u32, u32)>,
}

/// One room: its JID, its occupants (account indices), and the per-sender sequence numbers
/// (kept across steps).
struct Room {
    index: u32,
    jid: String,
    members: Vec<usize>,
    seq: Vec<u64>,
    /// Messages sent in this room so far (whose turn it is next).
    turn: u64,
}

fn on_message(state: Arc<Mutex<RecvState>>, delivered: Arc<AtomicU64>) -> OnMessage {
    Arc::new(move |_room: &str, body: &str, now: u64| {
        let mut parts = body.split(' ');
        let mut num = || parts.next().and_then(|p| p.parse::<u64>().ok());
        let (Some(room), Some(from), Some(seq), Some(t), Some(step)) = (num(), num(), num(), num(), num()) else {
            return;
        };
        let key = (room as u32, from as u32);
        let mut st = state.lock().unwrap();
        let st = &mut *st;
        if step != st.step {
            st.stats.late += 1;
            return;
        }
        let pair = st.pairs.entry(key).or_default();
        let stats = &mut st.stats;
        if seq > pair.max {
            if seq - pair.max <= 100_000 {
                pair.missing.extend(pair.max + 1..seq);
            }
            pair.max = seq;
        } else if let Some(k) = pair.missing.iter().position(|&m| m == seq) {
            pair.missing.swap_remove(k);
            stats.reordered += 1;
            if st.reordered_pairs.insert(key) {
                stats.pairs_reordered += 1;
            }
        } else {
            stats.duplicates += 1;
            return;
        }
        stats.count += 1;
        delivered.fetch_add(1, Ordering::Relaxed);
        stats.latencies_us.push(now.saturating_sub(t).min(u32::MAX as u64) as u32);
    })
}

pub async fn run(ctx: Arc<Ctx>, a: Args) -> bool {
    crate::client::set_read_capacity(a.read_buffer);
    let service = a.service.clone().unwrap_or_else(|| format!("conference.{}", ctx.cli.domain));
    let small_total = a.rooms * a.room_size;
    let sessions = a.big_room.max(small_total);
    assert!(sessions >= 2, "muc-fanout needs occupants");
    let id = muc::run_id();
    let mut rooms: Vec<Room> = Vec::new();
    if a.big_room > 0 {
        rooms.push(Room { index: 0, jid: muc::room_jid(&format!("fanout-{id}-big"), &service), members: (0..a.big_room).collect(), seq: vec![0; sessions], turn: 0 });
    }
    for k in 0..a.rooms {
        let index = rooms.len() as u32;
        let members = (k * a.room_size..(k + 1) * a.room_size).collect();
        rooms.push(Room { index, jid: muc::room_jid(&format!("fanout-{id}-s{k}"), &service), members, seq: vec![0; sessions], turn: 0 });
    }
    let timeout = Duration::from_secs_f64(a.join_timeout);
    let setup = match muc::create_rooms(&ctx, 0, &rooms.iter().map(|r| r.jid.clone()).collect::<Vec<_>>(), Arc::new(Counts::default()), timeout).await {
        Ok(o) => o,
        Err(e) => {
            eprintln!("muc-fanout: creating the rooms: {e}");
            return false;
        }
    };
    let _ = setup.send("</stream:stream>").await;

    let clock = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let counts = Arc::new(Counts::default());
    let states: Vec<Arc<Mutex<RecvState>>> = (0..sessions).map(|_| Arc::new(Mutex::new(RecvState::default()))).collect();
    let occupants = match muc::login_all(&ctx, 0, sessions, 64, |i| Some(on_message(states[i].clone(), delivered.clone())), &counts, clock).await {
        Ok(o) => o,
        Err(e) => {
            eprintln!("muc-fanout: {e}");
            return false;
        }
    };
    let plan: Vec<Vec<(String, String)>> = (0..sessions)
        .map(|i| rooms.iter().filter(|r| r.members.contains(&i)).map(|r| (r.jid.clone(), format!("u{i}"))).collect())
        .collect();
    let occupancies: usize = plan.iter().map(|p| p.len()).sum();
    let before_join = ctx.server();
    let (occupants, joined) = muc::join_all(occupants, plan, a.parallel, timeout).await;
    let (mut join_times, join_seconds) = match joined {
        Ok(j) => j,
        Err(e) => {
            eprintln!("muc-fanout: {e}");
            muc::close_all(&occupants).await;
            return false;
        }
    };
    let after_join = ctx.server();
    let join_latency = latency_ms(&mut join_times);
    // Let the joins' presence broadcasts settle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let writers: Arc<Vec<Writer>> = Arc::new(occupants.iter().map(|o| o.writer.clone()).collect());
    let join_fields = json!({
        "occupancies": occupancies,
        "join_seconds": round(join_seconds, 3),
        "join_latency_ms": join_latency,
        "join_server_cpu_s": before_join.zip(after_join).map(|(b, af)| round(af.cpu_s - b.cpu_s, 3)),
        "join_presences_received": counts.presences.load(Ordering::Relaxed),
    });

    let padding = Arc::new("x".repeat(a.body));
    let mut step_no = 0u64;
    let mut first_line = true;
    let mut step = async |big_rate: f64, small_rate: f64, rooms: Vec<Room>| -> (Vec<Room>, Value, bool) {
        step_no += 1;
        for s in &states {
            let mut st = s.lock().unwrap();
            st.step = step_no;
            st.stats = StepStats::default();
        }
        delivered.store(0, Ordering::Relaxed);
        let errors0 = counts.errors.load(Ordering::Relaxed);
        let before = ctx.server();
        let cpu0 = own_cpu_s();
        let wall0 = Instant::now();
        let duration = a.duration;
        // Two streams of messages: the big room's at big_rate, and the small rooms' at
        // small_rate, each message of it to the next small room in turn (so that the
        // aggregate is exact however low the rate per room).
        let (big, small): (Vec<Room>, Vec<Room>) = rooms.into_iter().partition(|r| a.big_room > 0 && r.index == 0);
        let mut tasks = Vec::new();
        for (k, (rate, mut stream)) in [(big_rate, big), (small_rate, small)].into_iter().enumerate() {
            if stream.is_empty() {
                continue;
            }
            let (writers, padding) = (writers.clone(), padding.clone());
            let step = step_no;
            tasks.push(tokio::spawn(async move {
                // Every 10 ms tick, the messages due are sent, each by the occupant whose
                // turn it is in its room (round robin: each occupant sends at the room's
                // rate ÷ its occupants).
                let tick = Duration::from_millis(10);
                let start = Instant::now();
                tokio::time::sleep(tick.mul_f64(k as f64 / 2.0)).await;
                let (mut sent, mut copies) = (0u64, 0u64);
                let mut bursts: HashMap<(usize, usize), Vec<String>> = HashMap::new();
                let mut interval = tokio::time::interval(tick);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut failed = false;
                let n = stream.len() as u64;
                loop {
                    interval.tick().await;
                    let elapsed = start.elapsed().as_secs_f64();
                    let due = (elapsed.min(duration) * rate) as u64;
                    while sent < due {
                        let pos = (sent % n) as usize;
                        let room = &mut stream[pos];
                        let sender = room.members[(room.turn % room.members.len() as u64) as usize];
                        room.turn += 1;
                        room.seq[sender] += 1;
                        let t = clock.elapsed().as_micros();
                        let mut body = String::new();
                        let _ = write!(body, "{} {sender} {} {t} {step} {padding}", room.index, room.seq[sender]);
                        bursts.entry((pos, sender)).or_default().push(body);
                        copies += room.members.len() as u64;
                        sent += 1;
                    }
                    for ((pos, sender), bodies) in bursts.drain() {
                        let mut buf = String::new();
                        for b in &bodies {
                            let _ = write!(buf, "<message to='{}' type='groupchat'><body>{b}</body></message>", stream[pos].jid);
                        }
                        use crate::client::SendExt;
                        if writers[sender].lock().await.send(buf.as_bytes()).await.is_err() {
                            failed = true;
                        }
                    }
                    if elapsed >= duration || failed {
                        break;
                    }
                }
                (stream, sent, copies)
            }));
        }
        let mut rooms = Vec::new();
        let (mut sent, mut expected) = (0u64, 0u64);
        for t in tasks {
            let (stream, s, c) = t.await.unwrap();
            rooms.extend(stream);
            sent += s;
            expected += c;
        }
        rooms.sort_by_key(|r| r.index);
        let sending_time = wall0.elapsed().as_secs_f64();
        let drain_deadline = Instant::now() + Duration::from_secs_f64(a.drain);
        while delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let drained = wall0.elapsed().as_secs_f64();
        let in_time = delivered.load(Ordering::Relaxed);
        let backlog_deadline = Instant::now() + Duration::from_secs_f64(a.backlog_timeout);
        let (mut last_count, mut last_progress) = (in_time, Instant::now());
        while delivered.load(Ordering::Relaxed) < expected && Instant::now() < backlog_deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now_count = delivered.load(Ordering::Relaxed);
            if now_count > last_count {
                (last_count, last_progress) = (now_count, Instant::now());
            } else if last_progress.elapsed() > Duration::from_secs(10) {
                break;
            }
        }
        let after_drain = delivered.load(Ordering::Relaxed) - in_time;
        let after = ctx.server();
        let measured = wall0.elapsed().as_secs_f64();
        // A little longer, to catch duplicates.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut total = StepStats::default();
        for s in &states {
            let mut st = s.lock().unwrap();
            st.step = 0;
            let got = std::mem::take(&mut st.stats);
            total.count += got.count;
            total.duplicates += got.duplicates;
            total.reordered += got.reordered;
            total.late += got.late;
            total.pairs_reordered += got.pairs_reordered;
            total.latencies_us.extend(got.latencies_us);
        }
        let lat = latency_ms(&mut total.latencies_us);
        let lost = expected.saturating_sub(total.count);
        let rate = big_rate + small_rate;
        let offered = sent as f64 / sending_time;
        let errors = counts.errors.load(Ordering::Relaxed) - errors0;
        let sustained = lost == 0
            && after_drain == 0
            && errors == 0
            && lat["p99"].as_f64().unwrap_or(f64::MAX) < a.max_p99_ms
            && offered >= 0.95 * rate;
        let mut fields = json!({
            "step": step_no,
            "sweep": a.sweep,
            "rooms": a.rooms,
            "room_size": a.room_size,
            "big_room": a.big_room,
            "sessions": writers.len(),
            "target_rate_per_s": round(rate, 1),
            "big_rate_per_s": round(big_rate, 1),
            "small_rate_per_s": round(small_rate, 1),
            "offered_rate_per_s": round(offered, 1),
            "sent": sent,
            "expected_copies": expected,
            "delivered": total.count,
            "delivered_copies_per_s": round(total.count as f64 / sending_time, 1),
            "lost": lost,
            "duplicates": total.duplicates,
            "reordered": total.reordered,
            "pairs_reordered": total.pairs_reordered,
            "late_from_earlier_steps": total.late,
            "arrived_after_drain": after_drain,
            "errors": errors,
            "latency_ms": lat,
            "sustained": sustained,
            "seconds": round(sending_time, 3),
            "drain_seconds": round(drained - sending_time, 3),
            "body_bytes": a.body,
        });
        if first_line {
            first_line = false;
            for (k, v) in join_fields.as_object().unwrap() {
                fields[k] = v.clone();
            }
        }
        if let (Some(b), Some(af)) = (before, after) {
            fields["server_cpu_s"] = json!(round(af.cpu_s - b.cpu_s, 3));
            fields["server_cpu_pct"] = json!(round(100.0 * (af.cpu_s - b.cpu_s) / measured, 1));
            fields["server_cpu_us_per_copy"] = json!(round((af.cpu_s - b.cpu_s) * 1e6 / total.count.max(1) as f64, 3));
            fields["server_cpu_us_per_message"] = json!(round((af.cpu_s - b.cpu_s) * 1e6 / sent.max(1) as f64, 1));
            fields["server_rss_kib"] = json!(af.rss_kib);
        }
        let loadgen_cpu = own_cpu_s() - cpu0;
        fields["loadgen_cpu_us_per_copy"] = json!(round(loadgen_cpu * 1e6 / total.count.max(1) as f64, 3));
        ctx.emit("muc-fanout", fields.clone(), cpu0, wall0);
        fields["loadgen_cpu_pct"] = json!(round(100.0 * loadgen_cpu / wall0.elapsed().as_secs_f64(), 1));
        tokio::time::sleep(Duration::from_secs_f64(a.pause)).await;
        (rooms, fields, sustained)
    };
    let all_ok;
    if !a.sweep {
        let (_, fields, _) = step(a.big_rate, a.small_rate, rooms).await;
        all_ok = fields["lost"] == json!(0) && fields["duplicates"] == json!(0) && fields["errors"] == json!(0);
    } else {
        let cpu0 = own_cpu_s();
        let wall0 = Instant::now();
        // The factor on the first rates: doubled, then bisected.
        let (mut lo, mut hi): (Option<f64>, Option<f64>) = (None, None);
        let mut best: Option<Value> = None;
        let mut factor = 1.0;
        let mut bisections = 0;
        let mut steps = Vec::new();
        let mut rooms = rooms;
        for _ in 0..a.max_steps {
            let (r, fields, sustained) = step(a.big_rate * factor, a.small_rate * factor, rooms).await;
            rooms = r;
            steps.push(json!([
                fields["target_rate_per_s"],
                sustained,
                fields["latency_ms"]["p99"],
                fields["delivered_copies_per_s"],
                fields["lost"],
                fields["loadgen_cpu_pct"]
            ]));
            if sustained {
                if lo.is_none_or(|l| factor > l) {
                    lo = Some(factor);
                    best = Some(fields);
                }
            } else if hi.is_none_or(|h| factor < h) {
                hi = Some(factor);
            }
            factor = match (lo, hi) {
                (Some(l), None) => l * 2.0,
                // Halving down while a step still has a few messages to measure.
                (None, Some(h)) if (a.big_rate.max(a.small_rate) * h / 2.0 * a.duration) >= 4.0 => h / 2.0,
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
        let rate = |f: Option<f64>| f.map(|f| round((a.big_rate + a.small_rate) * f, 0));
        let mut fields = json!({
            "rooms": a.rooms,
            "room_size": a.room_size,
            "big_room": a.big_room,
            "max_p99_ms": a.max_p99_ms,
            "max_sustained_rate_per_s": rate(lo),
            "first_unsustained_rate_per_s": rate(hi),
            "steps": steps,
        });
        if let Some(b) = best {
            for k in [
                "delivered_copies_per_s",
                "latency_ms",
                "server_cpu_us_per_copy",
                "server_cpu_pct",
                "loadgen_cpu_us_per_copy",
                "loadgen_cpu_pct",
            ] {
                fields[format!("at_max_{k}")] = b[k].clone();
            }
        }
        ctx.emit("muc-fanout-max", fields, cpu0, wall0);
        all_ok = true;
    }
    muc::close_all(&occupants).await;
    all_ok
}
