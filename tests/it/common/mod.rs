//! Test harness: a real server on ephemeral loopback ports, on SQLite or PostgreSQL, and a
//! client that speaks XMPP to it over TLS (see `client.rs`).

pub mod client;
pub mod pg;

use std::net::SocketAddr;
use std::path::PathBuf;

use starling::Config;
use starling::Server;
use starling::storage::NewAccount;

pub use client::Client;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generate, for each `async fn name(backend: Backend)`, a test per backend:
/// `name::sqlite` and `name::postgres`. Both always run.
#[macro_export]
macro_rules! db_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            }
        )*
    };
}

pub const DOMAIN: &str = "localhost";

pub struct TestServer {
    pub server: Option<Server>,
    pub config: Config,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start(backend: Backend) -> TestServer {
        Self::start_with(backend, |_| {}).await
    }

    /// Start with a config adjusted by `f` (after the test defaults).
    pub async fn start_with(backend: Backend, f: impl FnOnce(&mut Config)) -> TestServer {
        Self::try_start_with(backend, f).await.expect("server starts")
    }

    /// [`TestServer::start_with`] that hands back a failure to start (a port picked in
    /// advance that something else took meanwhile).
    pub async fn try_start_with(backend: Backend, f: impl FnOnce(&mut Config)) -> Result<TestServer, starling::server::StartError> {
        starling::init_crypto();
        // STARLING_TEST_LOG=debug (a tracing filter) shows the server's logs in test output.
        if let Ok(filter) = std::env::var("STARLING_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let dir = tempfile::Builder::new().prefix("starling-test-").tempdir().unwrap();
        let mut config = Config::defaults_here();
        config.domains = vec![DOMAIN.into(), "example.test".into()];
        config.data_dir = dir.path().to_path_buf();
        config.c2s.listen = vec!["127.0.0.1:0".parse().unwrap()];
        config.c2s.listen_tls = vec!["127.0.0.1:0".parse().unwrap()];
        // No federation unless a test asks for it (tests/it/s2s.rs).
        config.s2s.listen = Vec::new();
        config.s2s.listen_tls = Vec::new();
        // Nor components (the default port 5347 would clash between tests; tests/it/components.rs).
        config.components.listen = Vec::new();
        // Failed logins are delayed by design; tests need not wait a whole second.
        config.auth.failure_delay_ms = 20;
        config.storage.url = match backend {
            Backend::Sqlite => "sqlite://starling.db".into(),
            Backend::Postgres => pg::new_database().await,
        };
        f(&mut config);
        let server = Server::start(config.clone()).await?;
        Ok(TestServer { server: Some(server), config, dir })
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("running")
    }

    pub fn addr(&self) -> SocketAddr {
        self.server().c2s_addrs()[0]
    }

    pub fn tls_addr(&self) -> SocketAddr {
        self.server().c2s_tls_addrs()[0]
    }

    /// The certificate file the client is to trust: the chain configured for the domain
    /// (which then ends with its CA), or the self-signed certificate the server generated.
    pub fn cert_path(&self, domain: &str) -> PathBuf {
        match self.config.tls.domains.get(domain) {
            Some(paths) => paths.cert.clone(),
            None => self.dir.path().join("certs").join(format!("{domain}.crt")),
        }
    }

    pub async fn add_user(&self, user: &str, password: &str) {
        self.add_user_at(DOMAIN, user, password).await
    }

    pub async fn add_user_at(&self, domain: &str, user: &str, password: &str) {
        let jid = jid::BareJid::new(&format!("{user}@{domain}")).unwrap();
        let credentials = starling::auth::derive_credentials(password.to_string(), 4096).await.unwrap();
        let created = self.server().core().db.accounts().create(&NewAccount { jid, credentials }).await.unwrap();
        assert!(created, "{user} already exists");
    }

    /// A logged-in client for `user` (created with password "pw" if needed by the caller).
    pub async fn login(&self, user: &str, resource: &str) -> Client {
        Client::login(self, user, "pw", resource).await
    }

    /// Create users with password "pw".
    pub async fn users(&self, names: &[&str]) {
        for n in names {
            self.add_user(n, "pw").await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}


/// Make two online, available clients subscribe to each other (RFC 6121 §3), checking each
/// step; afterwards both rosters say `both`. Presence traffic is consumed.
pub async fn befriend(a: &mut Client, b: &mut Client) {
    let a_bare = a.jid.split('/').next().unwrap().to_string();
    let b_bare = b.jid.split('/').next().unwrap().to_string();
    subscribe_one_way(a, b, &a_bare, &b_bare).await;
    subscribe_one_way(b, a, &b_bare, &a_bare).await;
    for c in [&mut *a, &mut *b] {
        let roster = c.request("<iq type='get' id='befriend'><query xmlns='jabber:iq:roster'/></iq>").await;
        let item = roster.get_child("query", "jabber:iq:roster").unwrap().children().next().expect("one item").clone();
        assert_eq!(item.attr("subscription"), Some("both"), "{}", client::show(&roster));
        assert_eq!(item.attr("ask"), None);
    }
    a.drain().await;
    b.drain().await;
}

/// `x` subscribes to `y`'s presence and `y` approves.
async fn subscribe_one_way(x: &mut Client, y: &mut Client, x_bare: &str, y_bare: &str) {
    x.send(&format!("<presence type='subscribe' to='{y_bare}'/>")).await;
    let req = y.expect("subscription request", |e| e.name() == "presence" && e.attr("type") == Some("subscribe")).await;
    assert_eq!(req.attr("from"), Some(x_bare), "requests come from the bare JID");
    y.send(&format!("<presence type='subscribed' to='{x_bare}'/>")).await;
    x.expect("subscribed", |e| e.name() == "presence" && e.attr("type") == Some("subscribed")).await;
    // The contact's current presence follows the approval.
    let y_full = y.jid.clone();
    x.expect("contact presence", |e| e.name() == "presence" && e.attr("type").is_none() && e.attr("from") == Some(y_full.as_str())).await;
}
