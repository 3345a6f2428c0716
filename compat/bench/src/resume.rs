//! resume: N sessions with XEP-0198 resumption enabled (PREFIX0..N-1) lose their
//! connections at once (TCP closed without `</stream:stream>`); senders (the next S
//! accounts, online throughout) send each of them messages meanwhile; then all resume at
//! once (`<resume previd h/>` after SASL, on new connections). Reports the time until all
//! are resumed and until every message has arrived, the server's CPU per resumption, and
//! that nothing was lost or came twice: each session must get every message sent to it
//! exactly once, before the drop or after the resumption (a few are sent just before the
//! drop, so some are in flight when the connection goes).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::client::{self, Reader, Resumed, SendExt, Stream};
use crate::sm::{self, Counters};
use crate::{Ctx, latency_ms, own_cpu_s, round};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Sessions dropped and resumed (accounts PREFIX0..N-1).
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// Sender sessions (the accounts after them), online throughout.
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    /// Messages sent to each session while it is away.
    #[arg(long, default_value_t = 10)]
    pub messages: usize,
    /// Messages sent to each session just before the drop (in flight when it happens).
    #[arg(long, default_value_t = 1)]
    pub in_flight: usize,
    /// Seconds between the drop and the first message sent meanwhile (the server notices
    /// the closed connections).
    #[arg(long, default_value_t = 2.0)]
    pub down: f64,
    /// Logins and resumptions in progress at once.
    #[arg(long, default_value_t = 64)]
    pub parallel: usize,
    /// Seconds to wait for all resumptions, and then for all messages.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
    /// Per-session read buffer (bytes).
    #[arg(long, default_value_t = 4096)]
    pub read_buffer: usize,
    /// Let the messages be archived: without it they carry a XEP-0334 `<no-store/>` hint,
    /// so that with a message archive on, the figures are those of the resumption and
    /// not of the archive's writes (the chat scenario measures those).
    #[arg(long)]
    pub archived: bool,
}

type Writer = Arc<tokio::sync::Mutex<WriteHalf<Stream>>>;
/// A sender's stream, and when its ping was answered.
type SenderConn = (WriteHalf<Stream>, Arc<Mutex<Option<Instant>>>);

/// One session that is dropped and resumed.
struct Away {
    index: usize,
    sm_id: String,
    counters: Arc<Counters>,
    /// Times each of its messages (by number) arrived.
    got: Mutex<Vec<u8>>,
}

#[derive(Default)]
struct Totals {
    /// Messages that arrived at least once.
    unique: AtomicU64,
    duplicates: AtomicU64,
    requests: AtomicU64,
    /// Messages bounced back to a sender (type='error').
    errors_to_senders: AtomicU64,
}

fn spawn_reader(
    mut reader: Reader<ReadHalf<Stream>>,
    writer: Writer,
    away: Arc<Away>,
    totals: Arc<Totals>,
    run_id: Arc<str>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok(s) = reader.stanza().await {
            // Nothing below awaits until the stanza is counted: a drop (abort) between
            // reading a stanza and counting it would make the client's h wrong.
            match s.name.as_str() {
                "r" => {
                    totals.requests.fetch_add(1, Ordering::Relaxed);
                    let h = away.counters.received.load(Ordering::Relaxed);
                    let _ = writer.lock().await.send(sm::answer(h).as_bytes()).await;
                    continue;
                }
                "a" => {
                    if let Some(h) = s.h {
                        away.counters.acknowledged(h);
                    }
                    continue;
                }
                name if sm::counted(name) => {
                    away.counters.received_one();
                }
                _ => continue,
            }
            let Some(body) = s.body.filter(|_| s.name == "message") else {
                continue;
            };
            let mut parts = body.split(' ');
            if parts.next() != Some("rs") || parts.next() != Some(&*run_id) {
                continue;
            }
            let Some(n) = parts.next().and_then(|n| n.parse::<usize>().ok()) else {
                continue;
            };
            let mut got = away.got.lock().unwrap();
            if let Some(times) = got.get_mut(n) {
                *times = times.saturating_add(1);
                if *times == 1 {
                    totals.unique.fetch_add(1, Ordering::Relaxed);
                } else {
                    totals.duplicates.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    })
}

/// A sender's reader: drains what it is sent, counting bounces.
fn spawn_sender_reader(
    mut reader: Reader<ReadHalf<Stream>>,
    totals: Arc<Totals>,
) -> Arc<Mutex<Option<Instant>>> {
    let pong: Arc<Mutex<Option<Instant>>> = Arc::default();
    let seen = pong.clone();
    tokio::spawn(async move {
        while let Ok(s) = reader.stanza().await {
            if s.name == "message" && s.kind.as_deref() == Some("error") {
                totals.errors_to_senders.fetch_add(1, Ordering::Relaxed);
            } else if s.name == "iq" && s.id.as_deref() == Some("sync") {
                *seen.lock().unwrap() = Some(Instant::now());
            }
        }
    });
    pong
}

pub async fn run(ctx: Arc<Ctx>, a: Args) -> bool {
    assert!(
        a.count > 0 && a.senders > 0,
        "resume needs sessions and senders"
    );
    client::set_read_capacity(a.read_buffer);
    let run_id: Arc<str> = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros()
    )
    .into();
    let per_session = a.in_flight + a.messages;
    let totals = Arc::new(Totals::default());
    let cpu0 = own_cpu_s();
    let wall0 = Instant::now();

    // Senders, online throughout.
    let mut senders = Vec::new();
    for k in 0..a.senders {
        match ctx.login(a.count + k, "sender", true).await {
            Ok(s) => {
                let pong = spawn_sender_reader(s.reader, totals.clone());
                senders.push((s.writer, pong));
            }
            Err(e) => {
                eprintln!("login {}: {e}", ctx.user(a.count + k));
                return false;
            }
        }
    }

    // The sessions that will be dropped: stream management with resumption.
    let limit = Arc::new(Semaphore::new(a.parallel.max(1)));
    let extras = client::Extras {
        sm: Some(true),
        carbons: false,
    };
    let mut logins = Vec::new();
    for i in 0..a.count {
        let permit = limit.clone().acquire_owned().await.unwrap();
        let ctx = ctx.clone();
        logins.push(tokio::spawn(async move {
            let s = ctx.login_with(i, "resume", true, extras).await;
            drop(permit);
            s.map_err(|e| format!("login {}: {e}", ctx.user(i)))
        }));
    }
    let mut away = Vec::new();
    let mut live: Vec<(Writer, JoinHandle<()>)> = Vec::new();
    for (i, l) in logins.into_iter().enumerate() {
        let s = match l.await.unwrap() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                return false;
            }
        };
        let Some(enabled) = s.sm.clone() else {
            eprintln!("{}: stream management not enabled", ctx.user(i));
            return false;
        };
        let Some(sm_id) = enabled.id.clone() else {
            eprintln!("{}: the server does not offer resumption", ctx.user(i));
            return false;
        };
        let session = Arc::new(Away {
            index: i,
            sm_id,
            counters: Arc::new(Counters::starting_at(enabled.received, enabled.sent, 0)),
            got: Mutex::new(vec![0; per_session]),
        });
        let writer: Writer = Arc::new(tokio::sync::Mutex::new(s.writer));
        let task = spawn_reader(
            s.reader,
            writer.clone(),
            session.clone(),
            totals.clone(),
            run_id.clone(),
        );
        away.push(session);
        live.push((writer, task));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let jids: Vec<String> = (0..a.count).map(|i| ctx.jid(i)).collect();
    let hint = if a.archived {
        ""
    } else {
        "<no-store xmlns='urn:xmpp:hints'/>"
    };
    let send_all = async |senders: &mut Vec<SenderConn>, numbers: std::ops::Range<usize>| {
        for (k, (w, _)) in senders.iter_mut().enumerate() {
            let mut buf = String::new();
            for i in (k..jids.len()).step_by(a.senders) {
                for n in numbers.clone() {
                    buf.push_str(&format!(
                        "<message to='{}' type='chat'><body>rs {run_id} {n}</body>{hint}</message>",
                        jids[i]
                    ));
                }
                if buf.len() > 32 * 1024 {
                    let _ = w.send(buf.as_bytes()).await;
                    buf.clear();
                }
            }
            if !buf.is_empty() {
                let _ = w.send(buf.as_bytes()).await;
            }
        }
    };

    // In flight, then the drop: readers stopped where they are (their h is what they
    // counted), connections closed without a stream end.
    send_all(&mut senders, 0..a.in_flight).await;
    let mut h_at_drop = Vec::with_capacity(live.len());
    for (writer, task) in live {
        task.abort();
        let _ = task.await;
        drop(writer);
    }
    for s in &away {
        h_at_drop.push(s.counters.received.load(Ordering::Relaxed));
    }
    let got_before = totals.unique.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(a.down)).await;

    // Meanwhile: every session is sent its messages; a ping round trip per sender shows
    // the server has routed them all.
    let meanwhile_start = Instant::now();
    send_all(&mut senders, a.in_flight..per_session).await;
    let ping = format!(
        "<iq type='get' id='sync' to='{}'><ping xmlns='urn:xmpp:ping'/></iq>",
        ctx.cli.domain
    );
    for (w, _) in senders.iter_mut() {
        let _ = w.send(ping.as_bytes()).await;
    }
    let deadline = Instant::now() + Duration::from_secs_f64(a.timeout);
    while senders.iter().any(|(_, p)| p.lock().unwrap().is_none()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let meanwhile_seconds = meanwhile_start.elapsed().as_secs_f64();

    // All resume at once.
    let before = ctx.server();
    let start = Instant::now();
    let resumed = Arc::new(AtomicU64::new(0));
    let failures: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let mut tasks = Vec::new();
    for (session, h) in away.iter().zip(h_at_drop) {
        let permit = limit.clone().acquire_owned().await.unwrap();
        let (ctx, session, totals, run_id) =
            (ctx.clone(), session.clone(), totals.clone(), run_id.clone());
        let (resumed, failures) = (resumed.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let i = session.index;
            let result = client::resume(
                &ctx.target,
                ctx.source(i),
                &ctx.user(i),
                &ctx.cli.password,
                &session.sm_id,
                h,
            )
            .await;
            drop(permit);
            let failed = |why: String| {
                let mut why = why;
                why.truncate(80);
                *failures.lock().unwrap().entry(why).or_default() += 1;
                None
            };
            match result {
                Ok((reader, writer, Resumed::Yes { h: theirs })) => {
                    session.counters.acknowledged(theirs);
                    resumed.fetch_add(1, Ordering::Relaxed);
                    let took = t.elapsed();
                    let writer: Writer = Arc::new(tokio::sync::Mutex::new(writer));
                    spawn_reader(reader, writer.clone(), session, totals, run_id);
                    Some((
                        writer,
                        took.as_micros().min(u32::MAX as u128) as u32,
                        start.elapsed(),
                    ))
                }
                Ok((_, _, Resumed::No(why))) => failed(format!("failed: {why}")),
                Err(e) => failed(e.to_string()),
            }
        }));
    }
    let mut writers = Vec::new();
    let mut resume_us = Vec::new();
    let mut all_resumed_at = Duration::ZERO;
    for t in tasks {
        if let Ok(Some((w, us, at))) = t.await {
            writers.push(w);
            resume_us.push(us);
            all_resumed_at = all_resumed_at.max(at);
        }
    }
    let expected = (a.count * per_session) as u64;
    let deadline = Instant::now() + Duration::from_secs_f64(a.timeout);
    while totals.unique.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all_delivered = start.elapsed();
    let after = ctx.server();
    // A little longer, to catch duplicates.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let unique = totals.unique.load(Ordering::Relaxed);
    let resumed_n = resumed.load(Ordering::Relaxed);
    let mut fields = json!({
        "sessions": a.count,
        "senders": a.senders,
        "messages_per_session": per_session,
        "in_flight_per_session": a.in_flight,
        "messages": expected,
        "received_before_drop": got_before,
        "received": unique,
        "lost": expected - unique.min(expected),
        "duplicates": totals.duplicates.load(Ordering::Relaxed),
        "errors_to_senders": totals.errors_to_senders.load(Ordering::Relaxed),
        "resumed": resumed_n,
        "failed": *failures.lock().unwrap(),
        "meanwhile_seconds": round(meanwhile_seconds, 3),
        "all_resumed_seconds": round(all_resumed_at.as_secs_f64(), 3),
        "all_delivered_seconds": round(all_delivered.as_secs_f64(), 3),
        "resume_ms": latency_ms(&mut resume_us),
        "parallel": a.parallel,
        "down_seconds": a.down,
        "archived": a.archived,
    });
    if let (Some(b), Some(af)) = (before, after) {
        fields["server_cpu_ms_per_resume"] = json!(round(
            (af.cpu_s - b.cpu_s) * 1000.0 / resumed_n.max(1) as f64,
            3
        ));
        fields["server_rss_kib"] = json!(af.rss_kib);
    }
    let ok = unique == expected && fields["duplicates"] == json!(0) && resumed_n == a.count as u64;
    ctx.emit("resume", fields, cpu0, wall0);
    for w in writers {
        let _ = w.lock().await.send(b"</stream:stream>").await;
    }
    for (mut w, _) in senders {
        let _ = w.send(b"</stream:stream>").await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    ok
}
