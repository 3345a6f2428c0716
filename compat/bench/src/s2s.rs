//! s2s: two servers federating (RFC 6120 server-to-server), measured from their clients.
//!
//! `s2s-chat`: the `chat` scenario between the users of two servers: PREFIX0..count-1 log in
//! on the first (--server, --domain) and on the second (--server-b, --domain-b), and each
//! sends only to its partner, the account of the same number on the other server, so every
//! message crosses the link between them (one link each way, all users sharing it). One
//! message from every user to its partner first opens the links (DNS, TCP, TLS, dialback)
//! and must arrive before anything is measured. Each line has both servers' CPU per message
//! (`server_a_*`, `server_b_*`) and both together (`server_cpu_*`); --sweep finds the
//! highest rate sustained at p99 < --max-p99-ms with nothing lost, as `chat --sweep` does.
//!
//! `s2s-links`: memory per idle link. The second server serves --links more domains
//! besides --domain-b (b1.example, b2.example, ... for b.example: see [`link_domain`]). One
//! account of the first server pings the second's domain (a link both ways, so that what
//! the first link allocates once is not counted), then, after a settling pause, both
//! servers' RSS is read; then it pings each of the other domains (--parallel at a time),
//! which opens a link to each and, for the answer, one from each; after the same pause the
//! RSS again. (after − before) ÷ links is what one more remote domain costs with its links
//! both ways idle: on the first server a remote domain, on the second a local one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::chat::{self, Federated};
use crate::client::Target;
use crate::muc::{self, Counts, Signal};
use crate::{Ctx, own_cpu_s, proc_stats, round};

/// The second server.
#[derive(clap::Args, Clone)]
pub struct Peer {
    /// The second server's c2s address (the first is --server).
    #[arg(long)]
    pub server_b: SocketAddr,
    /// The second server's domain (the first is --domain).
    #[arg(long, default_value = "b.example")]
    pub domain_b: String,
    /// The second server's process, for its CPU and memory (/proc/PID).
    #[arg(long)]
    pub server_b_pid: Option<u32>,
}

impl Peer {
    fn target(&self, ctx: &Ctx) -> Target {
        Target {
            addr: self.server_b,
            domain: self.domain_b.clone(),
            ..ctx.target.clone()
        }
    }
}

#[derive(clap::Args, Clone)]
pub struct ChatArgs {
    #[command(flatten)]
    pub peer: Peer,
    /// Seconds to wait for the first message over each link (links set up, dialback).
    #[arg(long, default_value_t = 60.0)]
    pub link_timeout: f64,
    /// --count is the number of users on each server.
    #[command(flatten)]
    pub chat: chat::Args,
}

#[derive(clap::Args, Clone)]
pub struct LinksArgs {
    #[command(flatten)]
    pub peer: Peer,
    /// Remote domains to link to besides --domain-b (the second server serves them all).
    #[arg(long, default_value_t = 100)]
    pub links: usize,
    /// Pings in flight at once (links being set up at once).
    #[arg(long, default_value_t = 8)]
    pub parallel: usize,
    /// Seconds of pause before each RSS reading.
    #[arg(long, default_value_t = 3.0)]
    pub settle: f64,
    /// Seconds one ping (with its links' set-up) may take.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
}

/// The k-th extra domain of the second server: its first label with k appended
/// (b.example → b1.example). run.sh names the same in its hosts file and configs.
pub fn link_domain(domain_b: &str, k: usize) -> String {
    match domain_b.split_once('.') {
        Some((first, rest)) => format!("{first}{k}.{rest}"),
        None => format!("{domain_b}{k}"),
    }
}

pub async fn chat(ctx: Arc<Ctx>, a: ChatArgs) -> bool {
    let fed = Federated {
        target: a.peer.target(&ctx),
        pid: a.peer.server_b_pid,
        link_timeout: a.link_timeout,
    };
    chat::run_between(ctx, a.chat, Some(fed)).await
}

/// XEP-0199 pings from `o` to `domains`, `parallel` at a time: how many were answered with
/// a result, and the first failures (an error or no answer).
async fn ping_all(o: &mut muc::Occupant, domains: &[String], parallel: usize, timeout: Duration) -> (usize, Vec<String>) {
    let mut answered = 0;
    let mut failures = Vec::new();
    for (c, chunk) in domains.chunks(parallel.max(1)).enumerate() {
        let mut pending: HashMap<String, &str> = HashMap::new();
        let mut xml = String::new();
        for (k, d) in chunk.iter().enumerate() {
            let id = format!("link{c}-{k}");
            xml.push_str(&format!("<iq type='get' id='{id}' to='{d}'><ping xmlns='urn:xmpp:ping'/></iq>"));
            pending.insert(id, d);
        }
        if let Err(e) = o.send(&xml).await {
            failures.push(e);
            return (answered, failures);
        }
        let deadline = Instant::now() + timeout;
        while !pending.is_empty() {
            match tokio::time::timeout_at(deadline.into(), o.signals.recv()).await {
                Ok(Some(Signal::Iq { id, ok, condition })) => {
                    if let Some(d) = pending.remove(&id) {
                        if ok {
                            answered += 1;
                        } else {
                            failures.push(format!("{d}: error {condition}"));
                        }
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    failures.push("the session closed".into());
                    return (answered, failures);
                }
                Err(_) => {
                    let mut late: Vec<&str> = pending.values().copied().collect();
                    late.sort_unstable();
                    failures.extend(late.into_iter().map(|d| format!("{d}: no answer within {} s", timeout.as_secs_f64())));
                    break;
                }
            }
        }
    }
    (answered, failures)
}

pub async fn links(ctx: Arc<Ctx>, a: LinksArgs) -> bool {
    let timeout = Duration::from_secs_f64(a.timeout);
    let session = match tokio::time::timeout(timeout, ctx.login(0, "links", true)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            eprintln!("s2s-links: login {}: {e}", ctx.user(0));
            return false;
        }
        Err(_) => {
            eprintln!("s2s-links: login {}: timed out", ctx.user(0));
            return false;
        }
    };
    let mut o = muc::start(session, None, Arc::new(Counts::default()), Instant::now());
    // The first link both ways: what federation allocates once (resolver, TLS contexts,
    // dialback secrets, the peer's first stream) is then in the RSS before.
    let t0 = Instant::now();
    let (_, failures) = ping_all(&mut o, std::slice::from_ref(&a.peer.domain_b), 1, timeout).await;
    if let Some(f) = failures.first() {
        eprintln!("s2s-links: the first link: {f}");
        return false;
    }
    let first_link_seconds = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(a.settle)).await;
    let server_b = || a.peer.server_b_pid.and_then(proc_stats);
    let (before, before_b) = (ctx.server(), server_b());
    let cpu0 = own_cpu_s();
    let wall0 = Instant::now();
    let domains: Vec<String> = (1..=a.links).map(|k| link_domain(&a.peer.domain_b, k)).collect();
    let (answered, failures) = ping_all(&mut o, &domains, a.parallel, timeout).await;
    let setup_seconds = wall0.elapsed().as_secs_f64();
    let (linked, linked_b) = (ctx.server(), server_b());
    tokio::time::sleep(Duration::from_secs_f64(a.settle)).await;
    let (after, after_b) = (ctx.server(), server_b());
    let mut fields = json!({
        "links": a.links,
        "answered": answered,
        "failed": failures.len(),
        "first_link_seconds": round(first_link_seconds, 3),
        "links_setup_seconds": round(setup_seconds, 3),
        "parallel": a.parallel,
        "settle_seconds": a.settle,
    });
    if let Some(f) = failures.first() {
        fields["first_failure"] = json!(f);
    }
    let n = a.links.max(1) as f64;
    for (side, (b, l, af)) in [("a", (before, linked, after)), ("b", (before_b, linked_b, after_b))] {
        let (Some(b), Some(l), Some(af)) = (b, l, af) else {
            continue;
        };
        fields[format!("server_{side}_rss_before_kib")] = json!(b.rss_kib);
        fields[format!("server_{side}_rss_after_kib")] = json!(af.rss_kib);
        fields[format!("server_{side}_cpu_ms_per_link")] = json!(round((l.cpu_s - b.cpu_s) * 1e3 / n, 3));
        // Only a figure when every link was made: otherwise it is not per link.
        if failures.is_empty() {
            fields[format!("server_{side}_kib_per_link")] = json!(round((af.rss_kib as f64 - b.rss_kib as f64) / n, 2));
        }
    }
    ctx.emit("s2s-links", fields, cpu0, wall0);
    let _ = o.send("</stream:stream>").await;
    if !failures.is_empty() {
        eprintln!("s2s-links: {} of {} links failed; first: {}", failures.len(), a.links, failures[0]);
    }
    failures.is_empty()
}
