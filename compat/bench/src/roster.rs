//! Rosters of PREFIX0..N-1: user i's contacts are its `contacts` nearest neighbours on a
//! ring (i±1 .. i±contacts/2, modulo N), all with subscription 'both'. So with the even
//! users online, every odd user has exactly half its contacts online.
//!
//! roster-setup builds them over XMPP (subscribe / subscribed in both directions, as a
//! client would), identically on any server. roster-login measures, with the even half
//! online: the odd users' time to roster and to initial presence (all online contacts'
//! presence received), first one at a time, then all the rest at once (the storm).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::Semaphore;

use crate::client::{Reader, SendExt, Stream};
use crate::{Ctx, latency_ms, own_cpu_s, round};

#[derive(clap::Args, Clone)]
pub struct SetupArgs {
    #[arg(long, default_value_t = 200)]
    pub count: usize,
    #[arg(long, default_value_t = 100)]
    pub contacts: usize,
    /// Seconds to wait for all subscriptions to be mutual.
    #[arg(long, default_value_t = 180.0)]
    pub timeout: f64,
}

#[derive(clap::Args, Clone)]
pub struct LoginArgs {
    #[arg(long, default_value_t = 200)]
    pub count: usize,
    #[arg(long, default_value_t = 100)]
    pub contacts: usize,
    /// Odd users logged in one at a time (undisturbed time to initial presence); the
    /// others then log in all at once.
    #[arg(long, default_value_t = 10)]
    pub sequential: usize,
    /// Seconds to wait for each phase's presences.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
}

fn neighbours(i: usize, n: usize, contacts: usize) -> Vec<usize> {
    let mut v = Vec::with_capacity(contacts);
    for d in 1..=contacts / 2 {
        v.push((i + d) % n);
        v.push((i + n - d) % n);
    }
    v
}

/// The account number of a JID PREFIXn@domain/resource.
fn index_of(prefix: &str, jid: &str) -> Option<usize> {
    jid.strip_prefix(prefix)?.split('@').next()?.parse().ok()
}

type Writer = Arc<tokio::sync::Mutex<WriteHalf<Stream>>>;

async fn roster_get(
    reader: &mut Reader<ReadHalf<Stream>>,
    w: &mut WriteHalf<Stream>,
) -> std::io::Result<(u32, u32)> {
    let s = roster_items(reader, w).await?;
    Ok((s.items, s.items_both))
}

async fn roster_items(
    reader: &mut Reader<ReadHalf<Stream>>,
    w: &mut WriteHalf<Stream>,
) -> std::io::Result<crate::client::Summary> {
    w.send(b"<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>")
        .await?;
    loop {
        let s = reader.stanza().await?;
        if s.name == "iq" && s.id.as_deref() == Some("roster") {
            return Ok(s);
        }
    }
}

/// Each user's count of 'both' roster items, on separate sessions without presence. With
/// `contacts`, a user whose subscription to a neighbour is missing (none or 'from' only)
/// asks for it again: the neighbour's online setup session approves it.
async fn verify(ctx: &Arc<Ctx>, n: usize, contacts: Option<usize>) -> Vec<u32> {
    let limit = Arc::new(Semaphore::new(32));
    let mut tasks = Vec::new();
    for i in 0..n {
        let permit = limit.clone().acquire_owned().await.unwrap();
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            let r = async {
                let mut s = ctx.login(i, "verify", false).await?;
                let got = roster_items(&mut s.reader, &mut s.writer).await?;
                if let Some(contacts) = contacts {
                    let mut out = String::new();
                    for j in neighbours(i, n, contacts) {
                        let jid = ctx.jid(j);
                        let sub = got
                            .roster
                            .iter()
                            .find(|(k, _)| *k == jid)
                            .map(|(_, s)| s.as_str())
                            .unwrap_or("none");
                        if sub == "none" || sub == "from" {
                            out.push_str(&format!("<presence to='{jid}' type='subscribe'/>"));
                        }
                    }
                    s.writer.send(out.as_bytes()).await?;
                }
                let _ = s.writer.send(b"</stream:stream>").await;
                std::io::Result::Ok(got.items_both)
            }
            .await;
            drop(permit);
            r.unwrap_or_else(|e| {
                eprintln!("verify {}: {e}", ctx.user(i));
                0
            })
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

pub async fn setup(ctx: Arc<Ctx>, a: SetupArgs) -> bool {
    assert!(
        a.count > a.contacts && a.contacts.is_multiple_of(2),
        "need count > contacts, contacts even"
    );
    let cpu0 = own_cpu_s();
    let wall0 = Instant::now();
    let counts = verify(&ctx, a.count, None).await;
    if counts.iter().all(|&c| c as usize == a.contacts) {
        ctx.emit(
            "roster-setup",
            json!({"users": a.count, "contacts": a.contacts, "already": true}),
            cpu0,
            wall0,
        );
        return true;
    }
    // Everyone online; each answers subscription requests with 'subscribed' and asks back.
    let mut writers: Vec<Writer> = Vec::new();
    let mut asked: Vec<Arc<Mutex<HashSet<String>>>> = Vec::new();
    for i in 0..a.count {
        let s = match ctx.login(i, "setup", true).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("login {}: {e}", ctx.user(i));
                return false;
            }
        };
        let writer: Writer = Arc::new(tokio::sync::Mutex::new(s.writer));
        let mine: Arc<Mutex<HashSet<String>>> = Arc::default();
        writers.push(writer.clone());
        asked.push(mine.clone());
        let mut reader = s.reader;
        tokio::spawn(async move {
            while let Ok(s) = reader.stanza().await {
                if s.name != "presence" || s.kind.as_deref() != Some("subscribe") {
                    continue;
                }
                let Some(from) = s.from else { continue };
                let bare = from.split('/').next().unwrap().to_string();
                let ask_back = mine.lock().unwrap().insert(bare.clone());
                let mut out = format!("<presence to='{bare}' type='subscribed'/>");
                if ask_back {
                    out.push_str(&format!("<presence to='{bare}' type='subscribe'/>"));
                }
                if writer.lock().await.send(out.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
    }
    for i in 0..a.count {
        let mut out = String::new();
        for j in neighbours(i, a.count, a.contacts) {
            // One side asks; the other asks back when it gets the request.
            if j < i {
                continue;
            }
            let jid = ctx.jid(j);
            if asked[i].lock().unwrap().insert(jid.clone()) {
                out.push_str(&format!("<presence to='{jid}' type='subscribe'/>"));
            }
        }
        let _ = writers[i].lock().await.send(out.as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + Duration::from_secs_f64(a.timeout);
    let mut counts;
    let mut rounds = 0;
    let mut first_round_min = None;
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        rounds += 1;
        counts = verify(&ctx, a.count, Some(a.contacts)).await;
        first_round_min.get_or_insert(counts.iter().copied().min().unwrap_or(0));
        if counts.iter().all(|&c| c as usize == a.contacts) || Instant::now() > deadline {
            break;
        }
    }
    for w in &writers {
        let _ = w.lock().await.send(b"</stream:stream>").await;
    }
    let ok = counts.iter().all(|&c| c as usize == a.contacts);
    ctx.emit(
        "roster-setup",
        json!({
            "users": a.count,
            "contacts": a.contacts,
            "already": false,
            "complete": ok,
            "min_both": counts.iter().min(),
            "verify_rounds": rounds,
            "first_round_min_both": first_round_min,
            "max_both": counts.iter().max(),
            "seconds": round(wall0.elapsed().as_secs_f64(), 2),
        }),
        cpu0,
        wall0,
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    ok
}

/// What one online session has seen of its contacts' presence.
struct Seen {
    contacts: HashSet<usize>,
    available: Mutex<HashSet<usize>>,
    /// Contacts whose presence completes the initial picture, and who to tell.
    waiting_for: Mutex<(
        HashSet<usize>,
        Option<tokio::sync::oneshot::Sender<Instant>>,
    )>,
    complete: AtomicU64,
}

impl Seen {
    /// A session of user `i` that waits for the presence of its even (online) contacts.
    fn of(i: usize, n: usize, contacts: usize) -> (Arc<Seen>, tokio::sync::oneshot::Receiver<Instant>) {
        let all: HashSet<usize> = neighbours(i, n, contacts).into_iter().collect();
        let even: HashSet<usize> = all.iter().copied().filter(|j| j % 2 == 0).collect();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let seen = Seen {
            contacts: all,
            available: Mutex::default(),
            waiting_for: Mutex::new((even, Some(tx))),
            complete: AtomicU64::new(0),
        };
        (Arc::new(seen), rx)
    }
}

struct Counters {
    presences: AtomicU64,
    complete_sessions: AtomicU64,
}

fn spawn_tracker(
    ctx: &Arc<Ctx>,
    mut reader: Reader<ReadHalf<Stream>>,
    seen: Arc<Seen>,
    counters: Arc<Counters>,
) {
    let prefix = ctx.cli.prefix.clone();
    tokio::spawn(async move {
        while let Ok(s) = reader.stanza().await {
            if s.name != "presence" {
                continue;
            }
            counters.presences.fetch_add(1, Ordering::Relaxed);
            if s.kind.is_some() {
                continue;
            }
            let Some(from) = s.from.as_deref().and_then(|f| index_of(&prefix, f)) else {
                continue;
            };
            if !seen.contacts.contains(&from) {
                continue;
            }
            let mut available = seen.available.lock().unwrap();
            if available.insert(from)
                && available.len() == seen.contacts.len()
                && seen.complete.swap(1, Ordering::Relaxed) == 0
            {
                counters.complete_sessions.fetch_add(1, Ordering::Relaxed);
            }
            let mut w = seen.waiting_for.lock().unwrap();
            if w.0.remove(&from) && w.0.is_empty() && let Some(tx) = w.1.take() {
                let _ = tx.send(Instant::now());
            }
        }
    });
}

/// Timings of one odd user's login, in microseconds.
struct Timing {
    login_us: u32,
    roster_us: u32,
    presence_us: u32,
    total_us: u32,
    items: u32,
}

async fn odd_login(
    ctx: Arc<Ctx>,
    i: usize,
    contacts: usize,
    counters: Arc<Counters>,
    timeout: f64,
) -> Result<(Timing, Writer), String> {
    let n = ctx.cli_count_hint();
    let start = Instant::now();
    let mut s = ctx
        .login(i, "storm", false)
        .await
        .map_err(|e| format!("login {}: {e}", ctx.user(i)))?;
    let logged = start.elapsed();
    let (items, _) = roster_get(&mut s.reader, &mut s.writer)
        .await
        .map_err(|e| format!("roster {}: {e}", ctx.user(i)))?;
    let rostered = start.elapsed();
    let (seen, rx) = Seen::of(i, n, contacts);
    spawn_tracker(&ctx, s.reader, seen, counters);
    let presence_sent = Instant::now();
    s.writer
        .send(b"<presence/>")
        .await
        .map_err(|e| e.to_string())?;
    let done = tokio::time::timeout(Duration::from_secs_f64(timeout), rx)
        .await
        .map_err(|_| {
            format!(
                "{}: not all online contacts' presence within {timeout} s",
                ctx.user(i)
            )
        })?
        .map_err(|_| format!("{}: stream closed", ctx.user(i)))?;
    let us = |d: Duration| d.as_micros().min(u32::MAX as u128) as u32;
    Ok((
        Timing {
            login_us: us(logged),
            roster_us: us(rostered - logged),
            presence_us: us(done - presence_sent),
            total_us: us(done - start),
            items,
        },
        Arc::new(tokio::sync::Mutex::new(s.writer)),
    ))
}

impl Ctx {
    /// The ring size of the roster scenarios (set by roster-login's --count).
    fn cli_count_hint(&self) -> usize {
        match &self.cli.scenario {
            crate::Scenario::RosterLogin(a) => a.count,
            crate::Scenario::RosterSetup(a) => a.count,
            _ => 0,
        }
    }
}

fn summarize(t: &[Timing]) -> serde_json::Value {
    let mut login: Vec<u32> = t.iter().map(|t| t.login_us).collect();
    let mut roster: Vec<u32> = t.iter().map(|t| t.roster_us).collect();
    let mut presence: Vec<u32> = t.iter().map(|t| t.presence_us).collect();
    let mut total: Vec<u32> = t.iter().map(|t| t.total_us).collect();
    json!({
        "logins": t.len(),
        "login_ms": latency_ms(&mut login),
        "roster_ms": latency_ms(&mut roster),
        "initial_presence_ms": latency_ms(&mut presence),
        "total_ms": latency_ms(&mut total),
        "roster_items_min": t.iter().map(|t| t.items).min(),
    })
}

pub async fn login(ctx: Arc<Ctx>, a: LoginArgs) -> bool {
    assert!(
        a.count > a.contacts && a.contacts.is_multiple_of(2) && a.count.is_multiple_of(2),
        "need even count > contacts, contacts even"
    );
    let counters = Arc::new(Counters {
        presences: AtomicU64::new(0),
        complete_sessions: AtomicU64::new(0),
    });
    let mut writers: Vec<Writer> = Vec::new();
    let mut errors = Vec::new();
    // The even half comes online (not measured).
    let limit = Arc::new(Semaphore::new(32));
    let mut tasks = Vec::new();
    let mut evens_ready = Vec::new();
    for i in (0..a.count).step_by(2) {
        let permit = limit.clone().acquire_owned().await.unwrap();
        let (ctx, counters) = (ctx.clone(), counters.clone());
        let (seen, rx) = Seen::of(i, a.count, a.contacts);
        evens_ready.push(rx);
        tasks.push(tokio::spawn(async move {
            let s = ctx.login(i, "online", true).await;
            drop(permit);
            let s = s.map_err(|e| format!("login {}: {e}", ctx.user(i)))?;
            spawn_tracker(&ctx, s.reader, seen, counters);
            Ok::<Writer, String>(Arc::new(tokio::sync::Mutex::new(s.writer)))
        }));
    }
    for t in tasks {
        match t.await.unwrap() {
            Ok(w) => writers.push(w),
            Err(e) => {
                eprintln!("{e}");
                return false;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs_f64(a.timeout);
    for rx in evens_ready {
        if tokio::time::timeout_at(deadline.into(), rx).await.is_err() {
            errors.push("even users did not all see their online contacts".to_string());
            break;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // One at a time.
    let odds: Vec<usize> = (1..a.count).step_by(2).collect();
    let k = a.sequential.min(odds.len());
    let before = ctx.server();
    let cpu0 = own_cpu_s();
    let wall0 = Instant::now();
    counters.presences.store(0, Ordering::Relaxed);
    let mut sequential = Vec::new();
    for &i in &odds[..k] {
        match odd_login(
            ctx.clone(),
            i,
            a.contacts,
            counters.clone(),
            a.timeout.min(15.0),
        )
        .await
        {
            Ok((t, w)) => {
                sequential.push(t);
                writers.push(w);
            }
            Err(e) => errors.push(e),
        }
        // Let this login's presence exchange finish before the next.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after_seq = ctx.server();
    let seq_presences = counters.presences.swap(0, Ordering::Relaxed);
    let seq_seconds = wall0.elapsed().as_secs_f64();

    // All the others at once.
    let storm_start = Instant::now();
    let mut tasks = Vec::new();
    for &i in &odds[k..] {
        let (ctx, counters) = (ctx.clone(), counters.clone());
        tasks.push(tokio::spawn(odd_login(
            ctx, i, a.contacts, counters, a.timeout,
        )));
    }
    let mut storm = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok((t, w)) => {
                storm.push(t);
                writers.push(w);
            }
            Err(e) => errors.push(e),
        }
    }
    // The storm is over when every session has every contact's presence.
    let deadline = Instant::now() + Duration::from_secs_f64(a.timeout);
    while (counters.complete_sessions.load(Ordering::Relaxed) as usize) < a.count
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let storm_seconds = storm_start.elapsed().as_secs_f64();
    let complete = counters.complete_sessions.load(Ordering::Relaxed);
    let after_storm = ctx.server();
    let storm_presences = counters.presences.load(Ordering::Relaxed);
    if (complete as usize) < a.count {
        errors.push(format!(
            "only {complete} of {} sessions saw all their contacts online",
            a.count
        ));
    }
    let mut fields = json!({
        "users": a.count,
        "contacts": a.contacts,
        "online_before": a.count / 2,
        "sequential": summarize(&sequential),
        "sequential_presences_received": seq_presences,
        "sequential_seconds": round(seq_seconds, 3),
        "storm": summarize(&storm),
        "storm_seconds": round(storm_seconds, 3),
        "storm_presences_received": storm_presences,
        "sessions_complete": complete,
        "errors": errors.iter().take(5).collect::<Vec<_>>(),
    });
    if let (Some(b), Some(s), Some(af)) = (before, after_seq, after_storm) {
        fields["sequential_server_cpu_ms_per_login"] =
            json!(round((s.cpu_s - b.cpu_s) * 1000.0 / k.max(1) as f64, 3));
        fields["storm_server_cpu_s"] = json!(round(af.cpu_s - s.cpu_s, 3));
        fields["storm_server_cpu_ms_per_login"] = json!(round(
            (af.cpu_s - s.cpu_s) * 1000.0 / storm.len().max(1) as f64,
            3
        ));
        fields["server_rss_kib"] = json!(af.rss_kib);
    }
    ctx.emit("roster-login", fields, cpu0, wall0);
    for w in &writers {
        let _ = w.lock().await.send(b"</stream:stream>").await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    errors.is_empty()
}
