//! Start and stop the server: storage, certificates, listeners, and the graceful shutdown
//! that gives every client `<system-shutdown/>` (mini-redis's listener/shutdown shape).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::core::{Core, CoreState};
use crate::storage::{Db, StorageError};
use crate::tls::{Certificates, TlsError};

/// Why the server did not start. Each message says what failed; the cause is the
/// `source()`, printed once by an error chain (`anyhow`'s `{:#}`), never in the message too.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("certificates: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Tls(Vec<TlsError>),
    #[error("storage {url}")]
    Storage {
        url: String,
        #[source]
        source: StorageError,
    },
    #[error("cannot listen on {addr} ({key})")]
    Listen {
        addr: SocketAddr,
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create {}", path.display())]
    DataDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
}

/// A running server.
pub struct Server {
    core: Core,
    c2s: Vec<SocketAddr>,
    c2s_tls: Vec<SocketAddr>,
    components: Vec<SocketAddr>,
    s2s: Vec<SocketAddr>,
    connections: TaskTracker,
    acceptors: TaskTracker,
    /// Removed at shutdown.
    _admin_socket: crate::admin::SocketFile,
}

/// Bind a TCP listener. An IPv6 socket is IPv6-only (IPV6_V6ONLY), so that "[::]:5222"
/// and "0.0.0.0:5222" can both be bound; Linux would otherwise give the IPv6 socket the
/// IPv4 addresses too (net.ipv6.bindv6only = 0) and the second bind fails.
pub fn bind_tcp(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // As tokio's TcpListener::bind does: a restart can rebind while old connections linger
    // in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// An IPv6 address on a machine without IPv6: skipped with a warning rather than a failure,
/// so that the default (both stacks) works everywhere.
fn no_ipv6(addr: &SocketAddr, e: &std::io::Error) -> bool {
    addr.is_ipv6() && matches!(e.raw_os_error(), Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL))
}

/// Bind every configured listener: (config key, address, listener). The listeners of an
/// address family the machine lacks are left out with a warning.
/// Every listener by its config key.
fn listeners(config: &Config) -> [(&'static str, &Vec<SocketAddr>); 5] {
    [
        ("c2s.listen", &config.c2s.listen),
        ("c2s.listen_tls", &config.c2s.listen_tls),
        ("s2s.listen", &config.s2s.listen),
        ("s2s.listen_tls", &config.s2s.listen_tls),
        ("components.listen", &config.components.listen),
    ]
}

fn bind_all(config: &Config) -> Result<Vec<(String, SocketAddr, std::net::TcpListener)>, StartError> {
    let mut bound = Vec::new();
    for (key, addrs) in listeners(config) {
        for (i, addr) in addrs.iter().enumerate() {
            let key = format!("{key}[{i}]");
            match bind_tcp(*addr) {
                Ok(l) => bound.push((key, *addr, l)),
                Err(e) if no_ipv6(addr, &e) => {
                    tracing::warn!(%addr, key, error = %e, "no IPv6 on this machine: not listening on this address");
                }
                Err(source) => return Err(StartError::Listen { addr: *addr, key, source }),
            }
        }
    }
    Ok(bound)
}

/// For `starling check`: bind each listener and let it go at once, so that a port another
/// program holds is reported with its config key. Nothing stays bound.
pub fn check_listeners(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, addrs) in listeners(config) {
        for (i, addr) in addrs.iter().enumerate() {
            match bind_tcp(*addr) {
                Ok(listener) => drop(listener),
                Err(e) if no_ipv6(addr, &e) => {}
                Err(e) => problems.push(format!("{key}[{i}] = \"{addr}\": cannot listen: {e}")),
            }
        }
    }
    problems
}

/// File descriptors kept for the database, logs and listeners, not for clients.
const RESERVED_FDS: u64 = 64;

impl Server {
    /// Bind every listener, load certificates, open storage, and start accepting. What
    /// creates nothing comes first: a taken port leaves no database or certificate behind.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        let mut plain = Vec::new();
        let mut tls = Vec::new();
        let mut s2s_listeners = Vec::new();
        let mut component_listeners = Vec::new();
        for (key, addr, listener) in bind_all(&config)? {
            let listener = TcpListener::from_std(listener).map_err(|source| StartError::Listen { addr, key: key.clone(), source })?;
            if key.starts_with("components.") {
                component_listeners.push(listener);
            } else if key.starts_with("s2s.") {
                s2s_listeners.push((listener, key.starts_with("s2s.listen_tls")));
            } else if key.starts_with("c2s.listen_tls") {
                tls.push(listener)
            } else {
                plain.push(listener)
            }
        }
        for warning in crate::files::loose_permissions(&config) {
            tracing::warn!("{warning}");
        }
        crate::files::private_dir(&config.data_dir)
            .map_err(|source| StartError::DataDir { path: config.data_dir.clone(), source })?;
        let (admin_socket, admin) = crate::admin::bind(&config.admin_socket())?;
        let certs = Certificates::load(&config).map_err(StartError::Tls)?;
        let url = config.storage_url();
        let db = Db::open(&url, config.storage.max_connections)
            .await
            .map_err(|source| StartError::Storage { url: redact(&url), source })?;
        let max_connections = connection_limit(config.c2s.max_clients);
        let core = CoreState::new(config, db, certs);
        let limit = Arc::new(Semaphore::new(max_connections));
        let resumptions = Arc::new(crate::c2s::resume::Resumptions::default());
        let server = Server {
            c2s: plain.iter().filter_map(|l| l.local_addr().ok()).collect(),
            c2s_tls: tls.iter().filter_map(|l| l.local_addr().ok()).collect(),
            components: component_listeners.iter().filter_map(|l| l.local_addr().ok()).collect(),
            s2s: s2s_listeners.iter().filter_map(|(l, _)| l.local_addr().ok()).collect(),
            connections: TaskTracker::new(),
            acceptors: TaskTracker::new(),
            core,
            _admin_socket: admin_socket,
        };
        server.acceptors.spawn(crate::admin::serve(server.core.clone(), admin, server.connections.clone()));
        server.acceptors.spawn(crate::heap::release_after_bursts(server.core.shutdown.clone()));
        // Modules' background tasks end when shutdown is cancelled; shutdown waits for them.
        for task in server.core.modules.background_tasks() {
            server.acceptors.spawn(task(server.core.clone()));
        }
        for (listener, direct_tls) in plain.into_iter().map(|l| (l, false)).chain(tls.into_iter().map(|l| (l, true))) {
            let core = server.core.clone();
            let connections = server.connections.clone();
            let limit = limit.clone();
            server.acceptors.spawn(accept_loop(core, resumptions.clone(), listener, direct_tls, connections, limit));
        }
        if let Some(s2s) = &server.core.s2s {
            for (listener, direct_tls) in s2s_listeners {
                let task = crate::s2s::accept_loop(server.core.clone(), s2s.clone(), listener, direct_tls, server.connections.clone());
                server.acceptors.spawn(task);
            }
        }
        for listener in component_listeners {
            let task = crate::components::accept_loop(server.core.clone(), listener, server.connections.clone());
            server.acceptors.spawn(task);
        }
        if server.components.is_empty() && !server.core.config.components.domains.is_empty() {
            tracing::warn!("components are configured but [components] listen = []: none can connect");
        }
        tracing::info!(
            domains = ?server.core.config.domains,
            s2s = ?server.s2s,
            components = ?server.components,
            storage = server.core.db.backend(),
            starttls = ?server.c2s,
            direct_tls = ?server.c2s_tls,
            admin_socket = %server.core.config.admin_socket().display(),
            max_connections,
            "Starling {} started",
            env!("CARGO_PKG_VERSION")
        );
        Ok(server)
    }

    pub fn core(&self) -> &Core {
        &self.core
    }

    /// Bound addresses of the STARTTLS listeners (useful with port 0).
    pub fn c2s_addrs(&self) -> &[SocketAddr] {
        &self.c2s
    }

    pub fn c2s_tls_addrs(&self) -> &[SocketAddr] {
        &self.c2s_tls
    }

    /// Bound addresses of the server-to-server listeners (STARTTLS and direct TLS).
    pub fn s2s_addrs(&self) -> &[SocketAddr] {
        &self.s2s
    }

    /// Incoming server-to-server streams open now.
    pub fn s2s_incoming_streams(&self) -> usize {
        self.core.s2s.as_ref().map_or(0, |s2s| s2s.incoming_streams())
    }

    /// Bound addresses of the component listeners (XEP-0114).
    pub fn component_addrs(&self) -> &[SocketAddr] {
        &self.components
    }

    /// Stop accepting, end every session with `<system-shutdown/>` (each goes unavailable
    /// and records its last activity), wait for them, and close storage.
    pub async fn shutdown(self) {
        tracing::info!(sessions = self.core.sessions.count(), "shutting down");
        self.core.shutdown.cancel();
        // Bound sessions learn it from their close request (they look at the token only
        // when they wake: see `c2s::Session::run`); after the cancel, so that one binding
        // now either is in the registry here or sees the token cancelled.
        self.core.sessions.close_everyone(crate::stanza::StreamError::new(crate::stanza::StreamCondition::SystemShutdown));
        self.acceptors.close();
        self.acceptors.wait().await;
        self.connections.close();
        if tokio::time::timeout(Duration::from_secs(15), self.connections.wait()).await.is_err() {
            tracing::warn!("some connections did not finish within 15 s");
        }
        // Rooms see their occupants go, commits finish: all before storage closes.
        self.core.tasks.close();
        if tokio::time::timeout(Duration::from_secs(15), self.core.tasks.wait()).await.is_err() {
            tracing::warn!("some rooms or commits did not finish within 15 s");
        }
        self.core.db.close().await;
        tracing::info!("stopped");
    }
}

async fn accept_loop(
    core: Core,
    resumptions: Arc<crate::c2s::resume::Resumptions>,
    listener: TcpListener,
    direct_tls: bool,
    connections: TaskTracker,
    limit: Arc<Semaphore>,
) {
    loop {
        let permit = tokio::select! {
            _ = core.shutdown.cancelled() => return,
            permit = limit.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let accepted = tokio::select! {
            _ = core.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let (core, resumptions) = (core.clone(), resumptions.clone());
                connections.spawn(async move {
                    crate::c2s::serve(core, resumptions, tcp, peer, direct_tls).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Raise the open-file limit to its hard maximum and derive how many clients fit in it;
/// warn when that is fewer than `c2s.max_clients`, since every client holds one descriptor.
fn connection_limit(max_clients: usize) -> usize {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    let (clients, warning) = clients_allowed(limit.rlim_cur, max_clients);
    if let Some(warning) = warning {
        tracing::warn!(open_files = limit.rlim_cur, max_clients, "{warning}");
    }
    clients
}

/// How many clients an open-file limit allows, and the warning when that is fewer than
/// the configured `c2s.max_clients`.
fn clients_allowed(open_files: u64, max_clients: usize) -> (usize, Option<String>) {
    let available = usize::try_from(open_files.saturating_sub(RESERVED_FDS).max(16)).unwrap_or(usize::MAX);
    if available >= max_clients {
        return (max_clients, None);
    }
    let warning = format!(
        "the open-file limit ({open_files}) allows only {available} clients, fewer than \
         c2s.max_clients = {max_clients}: raise the limit (ulimit -n, systemd LimitNOFILE) \
         or lower c2s.max_clients"
    );
    (available, Some(warning))
}

/// A storage URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error chain (`error: {e:#}` in main) prints each cause once: no message repeats
    /// the message of its `source()` (it printed "Address already in use (os error 98):
    /// Address already in use (os error 98)").
    #[test]
    fn start_errors_name_each_cause_once() {
        let io = || std::io::Error::from_raw_os_error(libc::EADDRINUSE);
        let errors = vec![
            StartError::Listen { addr: "127.0.0.1:1".parse().unwrap(), key: "c2s.listen[0]".into(), source: io() },
            StartError::DataDir { path: "/x".into(), source: io() },
            StartError::Storage { url: "sqlite://x".into(), source: StorageError::Database(sqlx::Error::PoolTimedOut) },
            StartError::Storage { url: "sqlite://x".into(), source: StorageError::Config("cannot create x".into()) },
            StartError::Admin(crate::admin::AdminError::Io { path: "/s".into(), source: io() }),
            StartError::Admin(crate::admin::AdminError::Running("/s".into())),
            StartError::Tls(vec![TlsError::File { path: "/k".into(), message: "missing".into() }]),
        ];
        for error in errors {
            let mut level: &dyn std::error::Error = &error;
            while let Some(source) = level.source() {
                assert!(!level.to_string().contains(&source.to_string()), "{level} repeats {source}");
                level = source;
            }
            let chain = format!("{:#}", anyhow::Error::new(error));
            assert!(chain.matches("Address already in use").count() <= 1, "{chain}");
        }
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("sqlite://data/s.db"), "sqlite://data/s.db");
    }

    #[test]
    fn file_limit_below_max_clients_warns() {
        assert_eq!(clients_allowed(1_048_576, 100_000), (100_000, None));
        let (n, warning) = clients_allowed(20_000, 100_000);
        assert_eq!(n, 20_000 - RESERVED_FDS as usize);
        let warning = warning.expect("a warning");
        assert!(warning.contains("c2s.max_clients = 100000") && warning.contains("(20000)"), "{warning}");
        assert_eq!(clients_allowed(20_000, 19_000), (19_000, None));
    }
}
