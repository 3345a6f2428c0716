//! muc-join: entering multi-user chat rooms (XEP-0045 §7.2). First --count occupants
//! (already logged in, not measured) enter one new room, --parallel at a time, each join
//! done at the room's subject: the time until all have joined, each join's time, and the
//! server's CPU per join (each join sends the newcomer everyone's presence and everyone the
//! newcomer's, so the work grows with the room). Then one client enters a room holding
//! --history messages --history-joins times, leaving in between: the time from the join
//! presence to the subject, which comes after the history (§7.2.15-16), and the history
//! messages received each time.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::muc::{self, Counts};
use crate::{Ctx, latency_ms, own_cpu_s, round};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Occupants entering the big room.
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// Occupants entering at once.
    #[arg(long, default_value_t = 64)]
    pub parallel: usize,
    /// Messages in the history room before its joins.
    #[arg(long, default_value_t = 20)]
    pub history: usize,
    /// Joins of the history room (each followed by a leave).
    #[arg(long, default_value_t = 100)]
    pub history_joins: usize,
    /// The MUC service (default: conference.DOMAIN).
    #[arg(long)]
    pub service: Option<String>,
    /// Seconds one join may take.
    #[arg(long, default_value_t = 120.0)]
    pub join_timeout: f64,
}

pub async fn run(ctx: Arc<Ctx>, a: Args) -> bool {
    let service = a.service.clone().unwrap_or_else(|| format!("conference.{}", ctx.cli.domain));
    let id = muc::run_id();
    let (big, hist) = (muc::room_jid(&format!("join-{id}"), &service), muc::room_jid(&format!("hist-{id}"), &service));
    let timeout = Duration::from_secs_f64(a.join_timeout);
    let setup_counts = Arc::new(Counts::default());
    let mut setup = match muc::create_rooms(&ctx, 0, &[big.clone(), hist.clone()], setup_counts.clone(), timeout).await {
        Ok(o) => o,
        Err(e) => {
            eprintln!("muc-join: creating the rooms: {e}");
            return false;
        }
    };
    // The history room's messages, sent by the setup session (and echoed back to it).
    let posted = async {
        setup.join(&hist, "poster", "<history maxstanzas='0'/>", timeout).await?;
        let bodies: Vec<String> = (0..a.history).map(|k| format!("history message {k}")).collect();
        setup.groupchat(&hist, &bodies).await?;
        let deadline = Instant::now() + timeout;
        while setup_counts.messages.load(Ordering::Relaxed) < a.history as u64 {
            if Instant::now() > deadline {
                return Err(format!("{} of {} messages echoed by {hist}", setup_counts.messages.load(Ordering::Relaxed), a.history));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        setup.leave(&hist, "poster", timeout).await
    };
    if let Err(e) = posted.await {
        eprintln!("muc-join: filling the history room: {e}");
        return false;
    }

    let counts = Arc::new(Counts::default());
    let occupants = match muc::login_all(&ctx, 0, a.count, 64, |_| None, &counts, Instant::now()).await {
        Ok(o) => o,
        Err(e) => {
            eprintln!("muc-join: {e}");
            return false;
        }
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let plan = (0..a.count).map(|i| vec![(big.clone(), format!("u{i}"))]).collect();
    let presences0 = counts.presences.load(Ordering::Relaxed);
    let before = ctx.server();
    let cpu0 = own_cpu_s();
    let wall0 = Instant::now();
    let (occupants, joined) = muc::join_all(occupants, plan, a.parallel, timeout).await;
    let after = ctx.server();
    let (mut times, seconds) = match joined {
        Ok(j) => j,
        Err(e) => {
            eprintln!("muc-join: {e}");
            muc::close_all(&occupants).await;
            return false;
        }
    };
    // Presences still on their way when the last join ended are counted after a pause.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut fields = json!({
        "occupants": a.count,
        "parallel": a.parallel,
        "all_joined_seconds": round(seconds, 3),
        "joins_per_s": round(a.count as f64 / seconds, 1),
        "join_ms": latency_ms(&mut times),
        "presences_received": counts.presences.load(Ordering::Relaxed) - presences0,
        "errors": counts.errors.load(Ordering::Relaxed),
    });
    if let (Some(b), Some(af)) = (before, after) {
        fields["server_cpu_s"] = json!(round(af.cpu_s - b.cpu_s, 3));
        fields["server_cpu_ms_per_join"] = json!(round((af.cpu_s - b.cpu_s) * 1e3 / a.count as f64, 3));
        fields["server_rss_before_kib"] = json!(b.rss_kib);
        fields["server_rss_after_kib"] = json!(af.rss_kib);
    }
    fields["loadgen_cpu_ms_per_join"] = json!(round((own_cpu_s() - cpu0) * 1e3 / a.count as f64, 3));

    // The history room: join, history, subject; leave; again.
    let before = ctx.server();
    let mut subject_us = Vec::new();
    let mut history_counts = Vec::new();
    let mut failure = None;
    for _ in 0..a.history_joins {
        let h0 = setup_counts.history.load(Ordering::Relaxed);
        match setup.join(&hist, "reader", "", timeout).await {
            Ok(j) => subject_us.push(j.subject_us.min(u32::MAX as u64) as u32),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
        history_counts.push(setup_counts.history.load(Ordering::Relaxed) - h0);
        if let Err(e) = setup.leave(&hist, "reader", timeout).await {
            failure = Some(e);
            break;
        }
    }
    let after = ctx.server();
    fields["history_joins"] = json!(subject_us.len());
    fields["history_messages"] = json!(a.history);
    fields["history_received_min"] = json!(history_counts.iter().min());
    fields["history_received_max"] = json!(history_counts.iter().max());
    fields["history_join_ms"] = latency_ms(&mut subject_us);
    if let (Some(b), Some(af)) = (before, after) {
        fields["history_server_cpu_ms_per_join"] = json!(round((af.cpu_s - b.cpu_s) * 1e3 / a.history_joins.max(1) as f64, 3));
    }
    if let Some(e) = &failure {
        eprintln!("muc-join: the history room: {e}");
        fields["history_error"] = json!(e);
    }
    ctx.emit("muc-join", fields, cpu0, wall0);
    let _ = setup.send("</stream:stream>").await;
    muc::close_all(&occupants).await;
    failure.is_none()
}
