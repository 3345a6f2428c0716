//! External components (XEP-0114, `jabber:component:accept`): gateways, bridges and bots
//! that connect over TCP, prove a shared secret, and get a domain of their own.
//! `xeps/xep-0114.md` says what is done and what is not.
//!
//! A connected component is a local service on a domain of its own, reached over a socket
//! instead of through a module (`xeps/routing.md`): everything addressed to its domain or
//! to a JID at it goes into the component's bounded queue, which its connection's task
//! writes out. What the component sends is routed like any other stanza, once its `from`
//! is checked to be at the component's domain.

mod connection;
mod handshake;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::{ComponentsConfig, Secret};
use crate::core::Core;
use crate::modules::Ctx;
use crate::stanza::{Condition, Kind, Stanza, StanzaError};

pub use handshake::handshake_digest;

/// Stanzas that may wait for one component. A component that does not take them (it does
/// not read, or reads slower than it is sent) makes the next ones bounce with
/// `resource-constraint`; its connection is closed if its writes make no progress at all.
const QUEUE: usize = 10_000;
/// Connections at once on the component listeners, with and without a handshake done: each
/// domain has at most one authenticated connection, so these are mostly attempts, each
/// ended after the handshake timeout. More wait to be accepted.
const MAX_CONNECTIONS: usize = 256;

/// The components this server knows (configured) and the ones connected now.
pub struct Components {
    secrets: HashMap<String, Secret>,
    connected: Mutex<HashMap<String, Attached>>,
    /// Connection slots on the listeners (see [`MAX_CONNECTIONS`]).
    slots: Arc<Semaphore>,
    /// Tells one connection of a domain from the next.
    next_id: AtomicU64,
}

/// A component's connection, as the router sees it.
struct Attached {
    id: u64,
    queue: mpsc::Sender<Stanza>,
}

/// The domain already has a connected component.
#[derive(Debug)]
pub(crate) struct AlreadyConnected;

impl Components {
    pub fn new(config: &ComponentsConfig) -> Components {
        Components {
            secrets: config.domains.iter().map(|(domain, c)| (domain.clone(), c.secret.clone())).collect(),
            connected: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            next_id: AtomicU64::new(1),
        }
    }

    /// Whether `domain` is a component's, connected or not: its stanzas are the component's
    /// to answer, and it is one of the domains this server speaks for on federation.
    pub fn serves(&self, domain: &str) -> bool {
        self.secrets.contains_key(domain)
    }

    /// Whether the component of `domain` is connected now.
    pub fn is_connected(&self, domain: &str) -> bool {
        self.connected.lock().unwrap().contains_key(domain)
    }

    /// The connected components on subdomains of a served domain, sorted: for its
    /// disco#items (XEP-0030), next to the module services.
    pub fn connected_under(&self, domain: &str) -> Vec<String> {
        let mut found: Vec<String> = self
            .connected
            .lock()
            .unwrap()
            .keys()
            .filter(|d| d.strip_suffix(domain).is_some_and(|head| head.ends_with('.')))
            .cloned()
            .collect();
        found.sort_unstable();
        found
    }

    fn secret(&self, domain: &str) -> Option<&Secret> {
        self.secrets.get(domain)
    }

    /// Hand a stanza to the component of its `to`'s domain. Never waits: a full queue
    /// bounces the stanza with `resource-constraint`; a component that is not connected
    /// answers IQ requests and messages with `service-unavailable` and drops the rest.
    pub async fn send(&self, ctx: &Ctx, stanza: Stanza) {
        let Some(domain) = stanza.to.as_ref().map(|to| to.domain().as_str().to_string()) else { return };
        let queue = self.connected.lock().unwrap().get(&domain).map(|a| a.queue.clone());
        let result = match queue {
            Some(queue) => queue.try_send(stanza),
            None => Err(mpsc::error::TrySendError::Closed(stanza)),
        };
        match result {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(stanza)) => {
                tracing::warn!(%domain, "a component's queue is full: bouncing what it is sent");
                let e = StanzaError::new(Condition::ResourceConstraint).with_text(format!("the component {domain} is not keeping up: too many stanzas wait for it"));
                crate::router::bounce(ctx, &stanza, e).await
            }
            Err(mpsc::error::TrySendError::Closed(stanza)) => unavailable(ctx, stanza, &domain).await,
        }
    }

    /// Register the connection of an authenticated component; the receiver is its queue.
    /// A domain has one connection at a time (see `xeps/xep-0114.md`).
    fn attach(&self, domain: &str) -> Result<(u64, mpsc::Receiver<Stanza>), AlreadyConnected> {
        let mut connected = self.connected.lock().unwrap();
        if connected.contains_key(domain) {
            return Err(AlreadyConnected);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (queue, rx) = mpsc::channel(QUEUE);
        connected.insert(domain.to_string(), Attached { id, queue });
        Ok((id, rx))
    }

    /// The connection `id` of `domain` ended: stanzas for the domain no longer go to it.
    fn detach(&self, domain: &str, id: u64) {
        let mut connected = self.connected.lock().unwrap();
        if connected.get(domain).is_some_and(|a| a.id == id) {
            connected.remove(domain);
        }
    }
}

/// A stanza for a component that is not connected (or went away with it still queued):
/// IQ requests and messages are answered with `service-unavailable` and a text (never an
/// error or an IQ answer, see [`crate::router::bounce`]); presence is dropped.
async fn unavailable(ctx: &Ctx, stanza: Stanza, domain: &str) {
    if stanza.kind == Kind::Presence {
        return;
    }
    let e = StanzaError::service_unavailable().with_text(format!("the component {domain} is not connected"));
    crate::router::bounce(ctx, &stanza, e).await
}

/// Accept component connections until shutdown.
pub async fn accept_loop(core: Core, listener: TcpListener, connections: TaskTracker) {
    loop {
        let slots = core.components.slots.clone();
        let permit = tokio::select! {
            _ = core.shutdown.cancelled() => return,
            permit = slots.acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let accepted = tokio::select! {
            _ = core.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                let span = tracing::info_span!("component", %peer, domain = tracing::field::Empty);
                let core = core.clone();
                connections.spawn(
                    async move {
                        connection::serve(core, tcp).await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a component connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::ComponentConfig;

    fn components(domains: &[&str]) -> Components {
        let domains: BTreeMap<String, ComponentConfig> =
            domains.iter().map(|d| (d.to_string(), ComponentConfig { secret: Secret("s".into()) })).collect();
        Components::new(&ComponentsConfig { listen: Vec::new(), domains })
    }

    #[test]
    fn one_connection_per_domain() {
        let c = components(&["gw.example.org"]);
        assert!(c.serves("gw.example.org") && !c.serves("example.org") && !c.serves("x.gw.example.org"));
        let (first, _rx) = c.attach("gw.example.org").unwrap();
        assert!(c.attach("gw.example.org").is_err());
        assert!(c.is_connected("gw.example.org"));
        // A stale connection's end does not detach the current one.
        c.detach("gw.example.org", first + 1);
        assert!(c.is_connected("gw.example.org"));
        c.detach("gw.example.org", first);
        assert!(!c.is_connected("gw.example.org"));
        assert!(c.attach("gw.example.org").is_ok());
    }

    #[test]
    fn connected_under_lists_subdomains_only() {
        let c = components(&["b.example.org", "a.example.org", "example.org.evil", "other.test", "xexample.org"]);
        let _held: Vec<_> = ["b.example.org", "a.example.org", "example.org.evil", "xexample.org"].iter().map(|d| c.attach(d).unwrap()).collect();
        assert_eq!(c.connected_under("example.org"), ["a.example.org", "b.example.org"]);
        assert!(c.connected_under("test").is_empty(), "other.test is configured but not connected");
    }
}
