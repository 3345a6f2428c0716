//! offline: PREFIX1 sends --messages chat messages to PREFIX0 while it is offline; then
//! PREFIX0 logs in. Reports the time from its initial presence (and from its connect)
//! until all have arrived, and loss, duplicates and order.

use std::time::{Duration, Instant};
use std::{collections::HashSet, sync::Arc};

use crate::client::SendExt;
use serde_json::json;

use crate::{Ctx, own_cpu_s, round};

#[derive(clap::Args, Clone)]
pub struct Args {
    #[arg(long, default_value_t = 1000)]
    pub messages: usize,
    /// Body padding in bytes.
    #[arg(long, default_value_t = 50)]
    pub body: usize,
    /// Seconds to wait for all messages after login.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
}

pub async fn run(ctx: Arc<Ctx>, a: Args) -> bool {
    let recipient = ctx.jid(0);
    let run_id = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros()
    );
    // Empty what an earlier run may have left stored, and leave cleanly.
    match ctx.login(0, "flush", true).await {
        Ok(mut s) => {
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                loop {
                    if s.reader.stanza().await.is_err() {
                        break;
                    }
                }
            })
            .await;
            let _ = s
                .writer
                .send(b"<presence type='unavailable'/></stream:stream>")
                .await;
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while s.reader.stanza().await.is_ok() {}
            })
            .await;
        }
        Err(e) => {
            eprintln!("login {}: {e}", ctx.user(0));
            return false;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let cpu0 = own_cpu_s();
    let wall0 = Instant::now();
    let mut sender = match ctx.login(1, "sender", true).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("login {}: {e}", ctx.user(1));
            return false;
        }
    };
    let before_store = ctx.server();
    let store_start = Instant::now();
    let padding = "x".repeat(a.body);
    for chunk in (1..=a.messages).collect::<Vec<_>>().chunks(100) {
        let mut buf = String::new();
        for seq in chunk {
            buf.push_str(&format!("<message to='{recipient}' type='chat'><body>off {run_id} {seq} {padding}</body></message>"));
        }
        if sender.writer.send(buf.as_bytes()).await.is_err() {
            eprintln!("sender's stream closed");
            return false;
        }
    }
    // A round trip after the messages: the server has taken them all.
    let _ = sender
        .writer
        .send(
            format!(
                "<iq type='get' id='sync' to='{}'><ping xmlns='urn:xmpp:ping'/></iq>",
                ctx.cli.domain
            )
            .as_bytes(),
        )
        .await;
    let mut errors_to_sender = 0u64;
    let synced = tokio::time::timeout(Duration::from_secs_f64(a.timeout), async {
        loop {
            match sender.reader.stanza().await {
                Ok(s) if s.name == "iq" && s.id.as_deref() == Some("sync") => return true,
                Ok(s) if s.name == "message" && s.kind.as_deref() == Some("error") => {
                    errors_to_sender += 1
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await
    .unwrap_or(false);
    let store_seconds = store_start.elapsed().as_secs_f64();
    // Storage may be written behind the round trip.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_store = ctx.server();

    let start = Instant::now();
    let mut r = match ctx.login(0, "reader", false).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("login {}: {e}", ctx.user(0));
            return false;
        }
    };
    let logged = start.elapsed();
    let presence_at = Instant::now();
    let _ = r.writer.send(b"<presence/>").await;
    let mut seen = HashSet::new();
    let (mut duplicates, mut out_of_order, mut last) = (0u64, 0u64, 0usize);
    let mut other_messages = 0u64;
    let result = tokio::time::timeout(Duration::from_secs_f64(a.timeout), async {
        while seen.len() < a.messages {
            let s = r.reader.stanza().await?;
            if s.name != "message" {
                continue;
            }
            let Some(body) = s.body else { continue };
            let mut parts = body.split(' ');
            if parts.next() != Some("off") {
                continue;
            }
            if parts.next() != Some(run_id.as_str()) {
                other_messages += 1;
                continue;
            }
            let Some(seq) = parts.next().and_then(|s| s.parse::<usize>().ok()) else {
                continue;
            };
            if !seen.insert(seq) {
                duplicates += 1;
            } else if seq < last {
                out_of_order += 1;
            }
            last = last.max(seq);
        }
        std::io::Result::Ok(())
    })
    .await;
    let all_at = presence_at.elapsed();
    let after_delivery = ctx.server();
    let received = seen.len();
    let mut fields = json!({
        "messages": a.messages,
        "received": received,
        "lost": a.messages - received,
        "duplicates": duplicates,
        "out_of_order": out_of_order,
        "from_earlier_runs": other_messages,
        "errors_to_sender": errors_to_sender,
        "store_synced": synced,
        "store_seconds": round(store_seconds, 3),
        "login_ms": round(logged.as_secs_f64() * 1000.0, 2),
        "all_after_presence_ms": round(all_at.as_secs_f64() * 1000.0, 2),
        "all_after_connect_ms": round((logged + all_at).as_secs_f64() * 1000.0, 2),
        "timed_out": result.is_err(),
    });
    if let (Some(b), Some(s), Some(d)) = (before_store, after_store, after_delivery) {
        fields["server_cpu_us_per_stored_message"] =
            json!(round((s.cpu_s - b.cpu_s) * 1e6 / a.messages as f64, 2));
        fields["server_cpu_ms_delivery"] = json!(round((d.cpu_s - s.cpu_s) * 1000.0, 2));
        fields["server_rss_kib"] = json!(d.rss_kib);
    }
    ctx.emit("offline", fields, cpu0, wall0);
    let _ = r.writer.send(b"</stream:stream>").await;
    let _ = sender.writer.send(b"</stream:stream>").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    received == a.messages && duplicates == 0
}
