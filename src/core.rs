//! The server's shared state, handed to every session and handler.

use std::sync::Arc;
use std::time::Instant;

use jid::{BareJid, Jid};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::modules::{self, Deps, ModuleTable};
use crate::rosters::Rosters;
use crate::session::Sessions;
use crate::storage::Db;
use crate::tls::Certificates;

pub type Core = Arc<CoreState>;

pub struct CoreState {
    pub config: Arc<Config>,
    pub db: Db,
    pub sessions: Sessions,
    pub rosters: Rosters,
    pub modules: ModuleTable,
    pub certs: Arc<Certificates>,
    pub tls: Arc<rustls::ServerConfig>,
    /// Per-account delivery locks, striped so that memory stays bounded. Taken by whatever
    /// must not interleave with delivery to one account: offline storage versus the flush
    /// at initial presence, and read-modify-write of a roster.
    locks: Vec<tokio::sync::Mutex<()>>,
    /// Per-process secret for values that must be unpredictable but stable within a run
    /// (SCRAM decoy salts for unknown users).
    pub secret: [u8; 32],
    /// Failed-authentication throttle and counters, shared by every connection.
    pub auth: crate::auth::Guard,
    pub started: Instant,
    pub shutdown: CancellationToken,
    /// Work started by a stanza that outlives its handling (room tasks, archive and offline
    /// commits waited on, notifications): shutdown waits for it before storage closes.
    pub tasks: TaskTracker,
    /// IQ requests the server sent and the answers they wait for (see `requests.rs`).
    pub requests: crate::requests::PendingRequests,
    /// Federation; `None` when `[s2s]` has no listener (remote domains are then unreachable).
    pub s2s: Option<Arc<crate::s2s::S2s>>,
    /// External components (XEP-0114): the configured ones and those connected now.
    pub components: crate::components::Components,
}

const LOCK_STRIPES: usize = 256;
/// IQ requests of the server's own that may wait for an answer at once.
const MAX_PENDING_REQUESTS: usize = 10_000;

impl CoreState {
    pub fn new(config: Config, db: Db, certs: Certificates) -> Core {
        let config = Arc::new(config);
        let modules = modules::load(&Deps { config: config.clone(), db: db.clone() });
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("the OS random source works");
        let certs = Arc::new(certs);
        let tls = certs.server_config();
        let federates = !config.s2s.listen.is_empty() || !config.s2s.listen_tls.is_empty();
        let s2s = federates.then(|| Arc::new(crate::s2s::S2s::new(&config.s2s, certs.clone())));
        Arc::new(CoreState {
            certs,
            tls,
            sessions: Sessions::new(
                config.c2s.max_resources,
                crate::session::QueueLimits::new(config.c2s.max_queue, std::time::Duration::from_secs(config.c2s.write_timeout)),
            ),
            rosters: Rosters::with_config(db.roster(), &config.roster),
            modules,
            locks: (0..LOCK_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            secret,
            auth: crate::auth::Guard::new(&config.auth),
            started: Instant::now(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            requests: crate::requests::PendingRequests::new(MAX_PENDING_REQUESTS),
            components: crate::components::Components::new(&config.components),
            s2s,
            config,
            db,
        })
    }

    /// Run `task` apart, as part of the server's work (see `tasks`).
    pub fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task);
    }

    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.config.serves(domain)
    }

    /// A JID with a localpart on one of our domains.
    pub fn is_local_account(&self, jid: &Jid) -> bool {
        jid.node().is_some() && self.is_local_domain(jid.domain().as_str())
    }

    pub async fn delivery_lock(&self, account: &BareJid) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        // DefaultHasher::new() has fixed keys: one account always maps to the same stripe.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        account.as_str().hash(&mut h);
        self.locks[(h.finish() as usize) % LOCK_STRIPES].lock().await
    }
}
