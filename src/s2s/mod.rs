//! Federation: server-to-server streams (RFC 6120 §§3-6, §13), authenticated by Server
//! Dialback (XEP-0220). `xeps/rfc6120-s2s.md` says what is done and what is not.
//!
//! Outgoing: one link per domain pair (a local domain or service, a remote domain), one task
//! each, with a bounded queue: stanzas wait there while the link is set up and go out in
//! order once it is; when it cannot be set up they are bounced with an error that says why.
//! Incoming: a listener task per address; each stream checks that every stanza comes from a
//! domain authenticated on it and goes to one of ours, then routes it like a local one.

pub mod certs;
pub mod check;
pub mod dialback;
mod incoming;
mod outgoing;
pub mod resolve;
mod stream;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::config::S2sConfig;
use crate::core::Core;
use crate::modules::Ctx;
use crate::stanza::{Condition, Stanza, StanzaError};
use crate::tls::Certificates;

pub use incoming::accept_loop;

/// XEP-0288 §2.1: the stream feature a receiving server offers bidirectionality with.
pub(crate) const BIDI_FEATURE_NS: &str = "urn:xmpp:features:bidi";
/// XEP-0288 §2.2: the element the initiating server asks for it with.
pub(crate) const BIDI_NS: &str = "urn:xmpp:bidi";

/// Failures are remembered this long: stanzas for a domain that could not be reached a
/// moment ago are bounced at once instead of each starting a connection attempt.
const FAILURE_MEMORY: Duration = Duration::from_secs(10);

/// The federation side of the server.
pub struct S2s {
    config: S2sConfig,
    secret: dialback::Secret,
    /// Our certificates, presented to other servers.
    certs: Arc<Certificates>,
    /// The client side of TLS, per local domain (each presents its own certificate).
    client_tls: Mutex<HashMap<String, Arc<rustls::ClientConfig>>>,
    /// The server side of TLS: asks the peer for its certificate.
    server_tls: Arc<rustls::ServerConfig>,
    /// What other servers' certificates are checked against.
    trust: certs::Trust,
    resolver: resolve::Resolver,
    /// Outgoing links by (local domain, remote domain).
    links: Mutex<HashMap<(String, String), mpsc::Sender<Stanza>>>,
    /// Remote domains whose link failed recently: until when, and why.
    failed: Mutex<HashMap<String, (Instant, StanzaError)>>,
    /// Incoming streams open per remote address (`[s2s] max_connections_per_ip`).
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// An incoming stream's place in the count of its address, given back when dropped.
pub(crate) struct IpSlot {
    s2s: Arc<S2s>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut per_ip = self.s2s.per_ip.lock().unwrap();
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

impl S2s {
    pub fn new(config: &S2sConfig, certs: Arc<Certificates>) -> S2s {
        let trust = certs::Trust::load(config.ca_file.as_deref()).unwrap_or_else(|e| {
            // The file was checked with the configuration; it changed since.
            tracing::error!("[s2s] ca_file: {e}; only the system's roots are trusted");
            certs::Trust::load(None).expect("the system's roots need no file")
        });
        tracing::debug!(trust = %trust.description, "trust anchors for other servers' certificates");
        S2s {
            config: config.clone(),
            secret: dialback::Secret::random(),
            server_tls: certs.s2s_server_config(stream::any_client_certificate()),
            client_tls: Mutex::new(HashMap::new()),
            certs,
            trust,
            resolver: resolve::Resolver::from_system(),
            links: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
            per_ip: Mutex::new(HashMap::new()),
        }
    }

    /// A place for one more incoming stream from `ip`, if it has fewer than `[s2s]
    /// max_connections_per_ip` open.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let mut per_ip = self.per_ip.lock().unwrap();
        let open = per_ip.entry(ip).or_insert(0);
        if *open >= self.config.max_connections_per_ip {
            return None;
        }
        *open += 1;
        Some(IpSlot { s2s: self.clone(), ip })
    }

    /// Incoming streams open now (a bidirectional one carries both directions: tests count
    /// connections with this).
    pub fn incoming_streams(&self) -> usize {
        self.per_ip.lock().unwrap().values().sum()
    }

    /// Whether a remote domain is one this server refuses to talk to (it or a parent is in
    /// `[s2s] blocked_domains`).
    pub fn is_blocked(&self, domain: &str) -> bool {
        self.config.blocked_domains.iter().any(|b| domain == b || domain.strip_suffix(b.as_str()).is_some_and(|p| p.ends_with('.')))
    }

    /// Send a stanza to a remote domain: on the pair's link, which is made if there is none.
    /// What cannot be sent is bounced to its sender.
    /// Boxed, with `Send` spelt out: a link that ends routes what is left through here, and
    /// the compiler cannot see through that cycle by itself.
    pub fn send<'a>(self: &'a Arc<Self>, ctx: &'a Ctx, stanza: Stanza) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(self.send_inner(ctx, stanza))
    }

    async fn send_inner(self: &Arc<Self>, ctx: &Ctx, stanza: Stanza) {
        let Some(to) = stanza.to.as_ref() else { return };
        let remote = to.domain().as_str().to_string();
        let local = stanza.from.domain().as_str().to_string();
        if !Self::is_hosted(&ctx.core, &local) {
            // Only what this server speaks for leaves it (a remote stanza is never relayed).
            tracing::warn!(%local, %remote, "not sending a stanza whose sender is not served here");
            return;
        }
        if self.is_blocked(&remote) {
            let e = StanzaError::new(Condition::RemoteServerNotFound).with_text(format!("this server does not federate with {remote}"));
            return crate::router::bounce(ctx, &stanza, e).await;
        }
        if let Some(e) = self.recent_failure(&remote) {
            return crate::router::bounce(ctx, &stanza, e).await;
        }
        let key = (local, remote);
        let result = {
            let mut links = self.links.lock().unwrap();
            let tx = links.entry(key.clone()).or_insert_with(|| self.start_link(&ctx.core, &key));
            tx.try_send(stanza)
        };
        match result {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(stanza)) => {
                let e = StanzaError::new(Condition::ResourceConstraint).with_text(format!("too many stanzas wait for the link to {}", key.1));
                crate::router::bounce(ctx, &stanza, e).await
            }
            // The link ended between the lookup and the send: routed again, a new one is made.
            Err(mpsc::error::TrySendError::Closed(stanza)) => {
                self.forget_link(&key);
                self.send(ctx, stanza).await
            }
        }
    }

    /// The client side of TLS for links from `local`.
    fn client_tls(&self, local: &str) -> Arc<rustls::ClientConfig> {
        let mut configs = self.client_tls.lock().unwrap();
        configs.entry(local.to_string()).or_insert_with(|| stream::client_config(self.certs.for_server(local))).clone()
    }

    fn recent_failure(&self, remote: &str) -> Option<StanzaError> {
        let mut failed = self.failed.lock().unwrap();
        match failed.get(remote) {
            Some((until, e)) if *until > Instant::now() => Some(e.clone()),
            Some(_) => {
                failed.remove(remote);
                None
            }
            None => None,
        }
    }

    fn remember_failure(&self, remote: &str, error: &StanzaError) {
        self.failed.lock().unwrap().insert(remote.to_string(), (Instant::now() + FAILURE_MEMORY, error.clone()));
    }

    /// XEP-0288: a bidirectional incoming stream becomes the link for `key` (local, remote)
    /// when there is none yet (a link of our own already carries the pair otherwise).
    fn adopt(&self, key: &(String, String), outbox: &mpsc::Sender<Stanza>) -> bool {
        let mut links = self.links.lock().unwrap();
        if links.get(key).is_some_and(|tx| !tx.is_closed()) {
            return false;
        }
        links.insert(key.clone(), outbox.clone());
        true
    }

    /// A new outgoing link for `key` (local, remote), its task started (`links` is locked).
    fn start_link(self: &Arc<Self>, core: &Core, key: &(String, String)) -> mpsc::Sender<Stanza> {
        let (tx, rx) = mpsc::channel(self.config.max_queue);
        let link = outgoing::Link { s2s: self.clone(), core: core.clone(), local: key.0.clone(), remote: key.1.clone() };
        core.spawn(link.run(rx));
        tx
    }

    /// A bidirectional stream that carried the links of `keys` ended (`own`: their sender).
    /// Its pairs get links of their own, and what was still queued on the stream goes to
    /// them first, in order, ahead of whatever is sent from now on: all of it under the lock
    /// that sending takes. What does not fit there is given back, to be sent (or bounced).
    fn hand_over(self: &Arc<Self>, core: &Core, keys: &[(String, String)], own: &mpsc::Sender<Stanza>, outbox: &mut mpsc::Receiver<Stanza>) -> Vec<Stanza> {
        let mut links = self.links.lock().unwrap();
        outbox.close();
        for key in keys {
            if links.get(key).is_some_and(|tx| tx.same_channel(own)) {
                links.remove(key);
            }
        }
        let mut left = Vec::new();
        while let Ok(stanza) = outbox.try_recv() {
            let Some(to) = stanza.to.as_ref() else { continue };
            let key = (stanza.from.domain().as_str().to_string(), to.domain().as_str().to_string());
            let tx = links.entry(key.clone()).or_insert_with(|| self.start_link(core, &key));
            if let Err(e) = tx.try_send(stanza) {
                left.push(e.into_inner());
            }
        }
        left
    }

    fn forget_link(&self, key: &(String, String)) {
        let mut links = self.links.lock().unwrap();
        if links.get(key).is_some_and(|tx| tx.is_closed()) {
            links.remove(key);
        }
    }

    /// The domains this server speaks for on server-to-server streams: the served domains,
    /// the services on their subdomains and the external components (XEP-0114), connected
    /// or not (a stanza for one that is not is answered by the router).
    pub fn is_hosted(core: &Core, domain: &str) -> bool {
        core.is_local_domain(domain) || core.modules.service(domain).is_some() || core.components.serves(domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_domains_cover_subdomains() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::config::Config::defaults_here();
        config.data_dir = dir.path().to_path_buf();
        config.s2s.blocked_domains = vec!["spam.example".into()];
        let certs = Arc::new(Certificates::load(&config).unwrap());
        let s2s = S2s::new(&config.s2s, certs);
        assert!(s2s.is_blocked("spam.example"));
        assert!(s2s.is_blocked("conference.spam.example"));
        assert!(!s2s.is_blocked("nospam.example"));
        assert!(!s2s.is_blocked("example"));
    }
}
