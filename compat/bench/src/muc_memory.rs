//! muc-memory: the server's memory per occupant of a multi-user chat room (XEP-0045).
//! --count sessions log in (with initial presence) and stay idle; after a settling pause
//! the server's RSS is read; then all enter one new room (--parallel at a time, each join
//! done at the subject) and, after the same pause, the RSS is read again: (after − before)
//! ÷ occupants is what an occupant costs beyond its session.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::muc::{self, Counts};
use crate::{Ctx, own_cpu_s, round};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Occupants.
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// Occupants entering at once.
    #[arg(long, default_value_t = 64)]
    pub parallel: usize,
    /// Seconds of pause before each RSS reading.
    #[arg(long, default_value_t = 3.0)]
    pub settle: f64,
    /// The MUC service (default: conference.DOMAIN).
    #[arg(long)]
    pub service: Option<String>,
    /// Seconds one join may take.
    #[arg(long, default_value_t = 120.0)]
    pub join_timeout: f64,
    /// Per-session read buffer (bytes).
    #[arg(long, default_value_t = 4096)]
    pub read_buffer: usize,
}

pub async fn run(ctx: Arc<Ctx>, a: Args) -> bool {
    crate::client::set_read_capacity(a.read_buffer);
    let service = a.service.clone().unwrap_or_else(|| format!("conference.{}", ctx.cli.domain));
    let room = muc::room_jid(&format!("memory-{}", muc::run_id()), &service);
    let timeout = Duration::from_secs_f64(a.join_timeout);
    match muc::create_rooms(&ctx, 0, std::slice::from_ref(&room), Arc::new(Counts::default()), timeout).await {
        Ok(setup) => {
            let _ = setup.send("</stream:stream>").await;
        }
        Err(e) => {
            eprintln!("muc-memory: creating the room: {e}");
            return false;
        }
    }
    let counts = Arc::new(Counts::default());
    let occupants = match muc::login_all(&ctx, 0, a.count, 64, |_| None, &counts, Instant::now()).await {
        Ok(o) => o,
        Err(e) => {
            eprintln!("muc-memory: {e}");
            return false;
        }
    };
    tokio::time::sleep(Duration::from_secs_f64(a.settle)).await;
    let before = ctx.server();
    let cpu0 = own_cpu_s();
    let wall0 = Instant::now();
    let plan = (0..a.count).map(|i| vec![(room.clone(), format!("u{i}"))]).collect();
    let (occupants, joined) = muc::join_all(occupants, plan, a.parallel, timeout).await;
    let seconds = match joined {
        Ok((_, s)) => s,
        Err(e) => {
            eprintln!("muc-memory: {e}");
            muc::close_all(&occupants).await;
            return false;
        }
    };
    let joined_cpu = ctx.server();
    tokio::time::sleep(Duration::from_secs_f64(a.settle)).await;
    let after = ctx.server();
    let mut fields = json!({
        "occupants": a.count,
        "all_joined_seconds": round(seconds, 3),
        "settle_seconds": a.settle,
    });
    if let (Some(b), Some(af), Some(j)) = (before, after, joined_cpu) {
        fields["server_rss_before_kib"] = json!(b.rss_kib);
        fields["server_rss_after_kib"] = json!(af.rss_kib);
        fields["server_kib_per_occupant"] = json!(round((af.rss_kib as f64 - b.rss_kib as f64) / a.count as f64, 2));
        fields["server_cpu_ms_per_join"] = json!(round((j.cpu_s - b.cpu_s) * 1e3 / a.count as f64, 3));
    }
    ctx.emit("muc-memory", fields, cpu0, wall0);
    muc::close_all(&occupants).await;
    true
}
