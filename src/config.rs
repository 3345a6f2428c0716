//! The TOML configuration: typed, with documented defaults, and every problem reported at
//! once with the file and the key (`config/starling.example.toml` documents each key).
//!
//! Relative paths are resolved against the directory of the config file, or against the
//! working directory when no file is given, so `starling --config /etc/starling.toml serve`
//! behaves the same from any directory.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this came from, if any.
    pub source: Option<PathBuf>,
    /// default: ["localhost"]. The served domains (virtual hosts).
    pub domains: Vec<String>,
    /// default: "data". SQLite database, generated certificates.
    pub data_dir: PathBuf,
    /// default: []. Server administrators (bare JIDs): owners of every room, may do anything
    /// in any room.
    pub admins: Vec<jid::BareJid>,
    pub log: LogConfig,
    pub storage: StorageConfig,
    pub c2s: C2sConfig,
    pub s2s: S2sConfig,
    pub components: ComponentsConfig,
    pub tls: TlsConfig,
    pub auth: AuthConfig,
    pub registration: RegistrationConfig,
    pub offline: OfflineConfig,
    pub private: PrivateConfig,
    pub vcard: VcardConfig,
    pub roster: RosterConfig,
    pub pep: PepConfig,
    pub mam: MamConfig,
    pub muc: MucConfig,
    pub push: PushConfig,
    pub modules: ModulesConfig,
    pub admin: AdminConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// default: "info". Comma-separated directives, each a level or `target=level`
    /// (`RUST_LOG` overrides it).
    pub level: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StorageConfig {
    /// default: "sqlite://starling.db" (relative to data_dir), or "postgres://...".
    pub url: String,
    /// default: 8. Connections in the pool.
    pub max_connections: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct C2sConfig {
    /// default: ["0.0.0.0:5222", "[::]:5222"]. STARTTLS listeners.
    pub listen: Vec<SocketAddr>,
    /// default: ["0.0.0.0:5223", "[::]:5223"]. Direct TLS listeners (XEP-0368).
    pub listen_tls: Vec<SocketAddr>,
    /// default: true. Refuse authentication and stanzas before TLS.
    pub require_encryption: bool,
    /// default: 262144. Largest stanza in bytes; larger gets a policy-violation stream error.
    pub max_stanza_size: usize,
    /// default: 60. Seconds a client has to authenticate and bind.
    pub auth_timeout: u64,
    /// default: 300. Seconds of silence after which the server pings the client.
    pub ping_interval: u64,
    /// default: 60. Seconds the client has to answer that ping.
    pub ping_timeout: u64,
    /// default: 10. Resources one account may bind at once.
    pub max_resources: usize,
    /// default: 102400. Sustained bytes per second read from one client; 0 disables.
    pub max_bytes_per_second: u64,
    /// default: 1000. Stanzas queued for a client; a client whose queue stays over this for
    /// `write_timeout` (or goes over ten times it) is disconnected and what it is sent goes
    /// elsewhere (senders never wait).
    pub max_queue: usize,
    /// default: 10. Seconds a write to a client may make no progress before the client is
    /// taken as not reading and disconnected (what was not written is rerouted).
    pub write_timeout: u64,
    /// default: 100000. Client connections at once; each holds an open file.
    pub max_clients: usize,
    /// default: 300. XEP-0198: seconds a dropped session stays resumable (it still counts
    /// as available meanwhile); 0 disables resumption.
    pub resume_timeout: u64,
    /// default: 1000. XEP-0198: stanzas kept for a client until it acknowledges them; a
    /// client that falls this far behind gets nothing more until it acknowledges.
    pub max_unacked: usize,
}

/// Federation (RFC 6120 server-to-server streams).
#[derive(Debug, Clone, PartialEq)]
pub struct S2sConfig {
    /// default: ["0.0.0.0:5269", "[::]:5269"]. Listeners for other servers, with STARTTLS;
    /// [] turns federation off (incoming and outgoing: remote domains are then unreachable).
    pub listen: Vec<SocketAddr>,
    /// default: []. Direct TLS listeners (XEP-0368), e.g. ["0.0.0.0:5270"].
    pub listen_tls: Vec<SocketAddr>,
    /// default: true. TLS on every server-to-server stream, both ways.
    pub require_encryption: bool,
    /// default: true. Allow Server Dialback (XEP-0220) with a peer whose certificate cannot
    /// be verified; false: only peers with a valid certificate (SASL EXTERNAL, XEP-0178).
    pub dialback: bool,
    /// default: true. Bidirectional streams (XEP-0288): offered on incoming streams and asked
    /// for on outgoing ones, so that one connection carries a domain pair's stanzas both
    /// ways; false: neither offered nor asked for (one stream per direction).
    pub bidi: bool,
    /// default: none (`ca_file = ""`). Extra trust anchors (PEM) for other servers'
    /// certificates, beside the system's roots.
    pub ca_file: Option<PathBuf>,
    /// default: 600. Seconds an unused link stays open.
    pub idle_timeout: u64,
    /// default: []. Remote domains (and their subdomains) this server neither talks to nor
    /// accepts streams from.
    pub blocked_domains: Vec<String>,
    /// default: 524288. Largest stanza a remote server or a component (XEP-0114) may send,
    /// in bytes.
    pub max_stanza_size: usize,
    /// default: 30. Seconds to set up an outgoing link (resolve, connect, TLS,
    /// authentication) before what waits for it is bounced with remote-server-timeout.
    pub connect_timeout: u64,
    /// default: 10000. Stanzas waiting for one remote domain's link; more are bounced.
    pub max_queue: usize,
    /// default: 1048576. Bytes per second read from one incoming server stream (a burst of
    /// four seconds' worth is allowed); a faster peer is read more slowly, not cut off.
    /// 0: no limit.
    pub max_bytes_per_second: u64,
    /// default: 1000. Incoming server streams from one IP address at once; more are refused
    /// with policy-violation. A server opens a stream per domain pair, and one hosting
    /// hundreds of domains on one address opens hundreds (100 was too few for a benchmark of
    /// 101 domains); 1000 streams still bound what one address can hold here.
    pub max_connections_per_ip: usize,
    /// default: {}. `[s2s.targets] "b.example" = ["host:port", …]`: where to connect for a
    /// remote domain instead of asking DNS (private federations, tests), in order; a
    /// `tls:` prefix ("tls:host:port") means TLS from the first byte (XEP-0368) instead of
    /// STARTTLS.
    pub targets: BTreeMap<String, Vec<String>>,
}

/// External components (XEP-0114): gateways, bots and bridges that attach over a socket and
/// get a domain of their own.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentsConfig {
    /// default: ["127.0.0.1:5347"]. Listeners for components; [] disables them.
    pub listen: Vec<SocketAddr>,
    /// default: {}. `[components.domains."gateway.example.org"] secret = "..."`: the
    /// components that may attach, by domain, each with its shared secret.
    pub domains: BTreeMap<String, ComponentConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ComponentConfig {
    /// Required, not empty. The secret the component's handshake proves it knows.
    pub secret: Secret,
}

/// A shared secret: never printed, not even in a debug dump of the config.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct TlsConfig {
    /// default: none. Certificate chain (PEM) for all domains; self-signed if absent.
    pub cert: Option<PathBuf>,
    /// default: none. Private key (PEM) matching `cert`.
    pub key: Option<PathBuf>,
    /// default: {}. Per-domain certificates: `[tls.domains."example.org"] cert/key`.
    pub domains: BTreeMap<String, CertPaths>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CertPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuthConfig {
    /// default: 4096. PBKDF2 iterations for new SCRAM credentials (RFC 7677 minimum 4096).
    pub scram_iterations: u32,
    /// default: 1000. Milliseconds after the client's last message before a failed
    /// authentication is answered, whatever the check took.
    pub failure_delay_ms: u64,
    /// default: 3. Failed attempts on one stream before it is closed.
    pub max_failures: u32,
    /// default: 10. Failed authentications from one IP address (IPv6: one /64) per
    /// `ip_window`, refilled evenly; past it attempts are refused unchecked. 0 disables.
    pub failures_per_ip: u32,
    /// default: 60. Seconds over which `failures_per_ip` is counted.
    pub ip_window: u64,
    /// default: 20. Failed authentications for one account (from anywhere) per
    /// `account_window`, refilled evenly. 0 disables.
    pub failures_per_account: u32,
    /// default: 600. Seconds over which `failures_per_account` is counted.
    pub account_window: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RegistrationConfig {
    /// default: false. XEP-0077 in-band registration of new accounts.
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OfflineConfig {
    /// default: 1000. Messages stored per account; beyond it the sender gets an error.
    pub max_per_user: usize,
    /// default: 10485760 (10 MiB). Bytes of stored messages per account, counted as stored
    /// (serialised); beyond it the sender gets an error.
    pub max_bytes_per_user: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PrivateConfig {
    /// default: 1048576 (1 MiB). Bytes of private XML (XEP-0049) per account, all
    /// namespaces together, counted as stored (serialised).
    pub max_bytes_per_user: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VcardConfig {
    /// default: 262144 (256 KiB). Largest vCard (XEP-0054) an account may store, serialised.
    pub max_bytes: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RosterConfig {
    /// default: 1000. Items in one roster (RFC 6121 §2).
    pub max_items: usize,
    /// default: 100. Subscription requests kept waiting for one account (RFC 6121 §3.1.3).
    pub max_pending_in: usize,
    /// default: 16. Groups of one roster item.
    pub max_groups_per_item: usize,
    /// default: 256. Bytes of a roster item's name, and of each of its group names.
    pub max_text_bytes: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PepConfig {
    /// default: 128. Nodes one account may have (XEP-0163; OMEMO takes one per device).
    pub max_nodes_per_user: usize,
    /// default: 256. Items one node keeps; also what `pubsub#max_items` = `max` means.
    pub max_items_per_node: usize,
    /// default: 262144 (256 KiB). Largest item payload, serialised.
    pub max_item_bytes: usize,
    /// default: 10485760 (10 MiB). Bytes of items one account keeps, all nodes together.
    pub max_bytes_per_user: u64,
    /// default: 1000. Explicit subscriptions (XEP-0060 §6.1) to one node.
    pub max_subscribers_per_node: usize,
    /// default: 1000. XEP-0115 capabilities remembered server-wide (verified hashes).
    pub caps_cache_size: usize,
    /// default: 30. Seconds a client has to answer the server's disco#info query.
    pub caps_timeout: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MamConfig {
    /// default: "always". XEP-0313 archiving for accounts that set no preference (XEP-0441):
    /// "always", "roster" (only with contacts in the roster) or "never".
    pub default: crate::storage::ArchiveDefault,
    /// default: 0. Archived messages older than this many days are deleted; 0 keeps them.
    pub retention_days: u32,
    /// default: 250. The most messages one query returns; a client asking for more gets
    /// this many and pages on (XEP-0313 §4.3.1).
    pub max_page: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MucConfig {
    /// default: "conference". The XEP-0045 service is `<subdomain>.<domain>` for each served
    /// domain; "" disables it.
    pub subdomain: String,
    /// default: "local". Who may create rooms.
    pub create: RoomCreation,
    /// default: 20. Messages sent on entry to a new room (a room setting, at most 1000).
    pub history: u32,
    /// default: 1000. Occupants a new room takes; no room takes more.
    pub max_occupants: u32,
    /// default: 10000. Rooms kept in memory; idle ones beyond this are unloaded (persistent
    /// rooms are loaded again from the database on their next stanza).
    pub max_rooms_in_memory: usize,
    /// default: false. XEP-0045 §7.10 "lock down": a user who registered a nick in a room
    /// enters it under that nick whatever nick it asks for (210), and may not change it.
    pub lock_registered_nicks: bool,
}

/// `[muc] create`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomCreation {
    /// Accounts of the served domains.
    Local,
    /// Only the server's `admins`.
    Admins,
    /// Anyone who can reach the service.
    Anyone,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PushConfig {
    /// default: false. XEP-0357 summaries carry the last message's body
    /// (`last-message-body`) only if true: it goes to the app's push server, a third party.
    pub include_body: bool,
    /// default: true. Summaries carry the last message's sender (`last-message-sender`).
    pub include_sender: bool,
    /// default: 10. Push registrations (service and node) one account may have.
    pub max_per_user: usize,
    /// default: 10. Seconds between two notifications to one registration: messages
    /// meanwhile are counted into one notification sent when the time is up.
    pub min_interval: u64,
    /// default: 259200 (72 hours, as ejabberd's mod_push_keepalive). Seconds a session
    /// waiting for resumption (XEP-0198) is kept when its client enabled push, instead of
    /// `c2s.resume_timeout`, until a notification is sent for it; 0 keeps none longer.
    pub resume_timeout: u64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModulesConfig {
    /// default: []. Names of modules not to load (see `starling check`).
    pub disabled: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// default: "starling.sock" (relative to data_dir). The control socket the CLI talks to
    /// while the server runs (see `src/admin.rs`); use [`Config::admin_socket`].
    pub socket: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            source: None,
            domains: vec!["localhost".into()],
            data_dir: PathBuf::from("data"),
            admins: Vec::new(),
            log: LogConfig { level: "info".into() },
            storage: StorageConfig { url: "sqlite://starling.db".into(), max_connections: 8 },
            c2s: C2sConfig {
                listen: vec!["0.0.0.0:5222".parse().unwrap(), "[::]:5222".parse().unwrap()],
                listen_tls: vec!["0.0.0.0:5223".parse().unwrap(), "[::]:5223".parse().unwrap()],
                require_encryption: true,
                max_stanza_size: 262_144,
                auth_timeout: 60,
                ping_interval: 300,
                ping_timeout: 60,
                max_resources: 10,
                max_bytes_per_second: 102_400,
                max_queue: 1000,
                write_timeout: 10,
                max_clients: 100_000,
                resume_timeout: 300,
                max_unacked: 1000,
            },
            s2s: S2sConfig {
                listen: vec!["0.0.0.0:5269".parse().unwrap(), "[::]:5269".parse().unwrap()],
                listen_tls: Vec::new(),
                require_encryption: true,
                dialback: true,
                bidi: true,
                ca_file: None,
                idle_timeout: 600,
                blocked_domains: Vec::new(),
                max_stanza_size: 512 << 10,
                connect_timeout: 30,
                max_queue: 10_000,
                max_bytes_per_second: 1 << 20,
                max_connections_per_ip: 1000,
                targets: BTreeMap::new(),
            },
            components: ComponentsConfig { listen: vec!["127.0.0.1:5347".parse().unwrap()], domains: BTreeMap::new() },
            tls: TlsConfig::default(),
            auth: AuthConfig {
                scram_iterations: 4096,
                failure_delay_ms: 1000,
                max_failures: 3,
                failures_per_ip: 10,
                ip_window: 60,
                failures_per_account: 20,
                account_window: 600,
            },
            registration: RegistrationConfig { enabled: false },
            offline: OfflineConfig { max_per_user: 1000, max_bytes_per_user: 10 << 20 },
            private: PrivateConfig { max_bytes_per_user: 1 << 20 },
            vcard: VcardConfig { max_bytes: 256 << 10 },
            roster: RosterConfig { max_items: 1000, max_pending_in: 100, max_groups_per_item: 16, max_text_bytes: 256 },
            pep: PepConfig {
                max_nodes_per_user: 128,
                max_items_per_node: 256,
                max_item_bytes: 256 << 10,
                max_bytes_per_user: 10 << 20,
                max_subscribers_per_node: 1000,
                caps_cache_size: 1000,
                caps_timeout: 30,
            },
            mam: MamConfig { default: crate::storage::ArchiveDefault::Always, retention_days: 0, max_page: 250 },
            muc: MucConfig { subdomain: "conference".into(), create: RoomCreation::Local, history: 20, max_occupants: 1000, max_rooms_in_memory: 10_000, lock_registered_nicks: false },
            push: PushConfig { include_body: false, include_sender: true, max_per_user: 10, min_interval: 10, resume_timeout: 259_200 },
            modules: ModulesConfig::default(),
            admin: AdminConfig { socket: PathBuf::from("starling.sock") },
        }
    }
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigIssue {
    pub key: String,
    pub message: String,
}

/// All problems found in one file.
#[derive(Debug)]
pub struct ConfigError {
    pub file: String,
    pub issues: Vec<ConfigIssue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.issues.len();
        write!(f, "{}: {} problem{}", self.file, n, if n == 1 { "" } else { "s" })?;
        for issue in &self.issues {
            if issue.key.is_empty() {
                write!(f, "\n  {}", issue.message)?;
            } else {
                write!(f, "\n  {}: `{}`: {}", self.file, issue.key, issue.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Load from a file; relative paths resolve against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            issues: vec![ConfigIssue { key: String::new(), message: format!("cannot read: {e}") }],
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut config = Config::parse(&text, &file, &base)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// The configuration used when no file is given: the defaults, paths relative to the
    /// working directory.
    pub fn defaults_here() -> Config {
        Config::parse("", "<defaults>", Path::new("")).expect("defaults are valid")
    }

    pub fn parse(text: &str, file: &str, base: &Path) -> Result<Config, ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError {
            file: file.to_string(),
            issues: vec![ConfigIssue { key: String::new(), message: format!("invalid TOML: {}", e.to_string().trim_end()) }],
        })?;
        let mut errors = Vec::new();
        let config = read_config(table, &mut errors, &mut BTreeSet::new(), base);
        if errors.is_empty() { Ok(config) } else { Err(ConfigError { file: file.to_string(), issues: errors }) }
    }

    /// Every key the reader understands, as dotted paths; the example config test checks
    /// that each one is documented.
    pub fn known_keys() -> BTreeSet<String> {
        let mut keys = BTreeSet::new();
        read_config(toml::Table::new(), &mut Vec::new(), &mut keys, Path::new(""));
        keys
    }

    /// Where the SQLite database lives, or the PostgreSQL URL, with relative SQLite paths
    /// resolved against `data_dir`.
    pub fn storage_url(&self) -> String {
        resolve_sqlite_url(&self.storage.url, &self.data_dir)
    }

    pub fn serves(&self, domain: &str) -> bool {
        self.domains.iter().any(|d| d == domain)
    }

    /// The domains of the XEP-0045 service, one per served domain (none when disabled).
    pub fn muc_domains(&self) -> Vec<String> {
        if self.muc.subdomain.is_empty() {
            return Vec::new();
        }
        self.domains.iter().map(|d| format!("{}.{d}", self.muc.subdomain)).collect()
    }

    /// Whether `jid` is one of the server's `admins`.
    pub fn is_admin(&self, jid: &jid::BareJid) -> bool {
        self.admins.contains(jid)
    }

    /// The admin control socket, relative paths resolved against `data_dir`.
    pub fn admin_socket(&self) -> PathBuf {
        self.data_dir.join(&self.admin.socket)
    }

    /// The SQLite database file, if storage is a SQLite file (not PostgreSQL, not memory).
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        sqlite_file(&self.storage_url())
    }
}

/// The file of a `sqlite:` URL, or `None` for other URLs and in-memory databases.
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split_once('?').map_or(rest, |(p, _)| p);
    if path.is_empty() || path.starts_with(":memory:") || path.starts_with("file:") || url.contains("mode=memory") {
        return None;
    }
    Some(PathBuf::from(path))
}

fn resolve_sqlite_url(url: &str, data_dir: &Path) -> String {
    let Some(rest) = url.strip_prefix("sqlite:") else { return url.to_string() };
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    if rest.starts_with(":memory:") || rest.starts_with("file:") {
        return url.to_string();
    }
    let (path, query) = rest.split_once('?').map(|(p, q)| (p, Some(q))).unwrap_or((rest, None));
    let path = Path::new(path);
    let full = if path.is_absolute() { path.to_path_buf() } else { data_dir.join(path) };
    match query {
        Some(q) => format!("sqlite://{}?{q}", full.display()),
        None => format!("sqlite://{}", full.display()),
    }
}

fn read_config(
    table: toml::Table,
    errors: &mut Vec<ConfigIssue>,
    known: &mut BTreeSet<String>,
    base: &Path,
) -> Config {
    let d = Config::default();
    let mut root = Section::new("", table, errors, known);
    let domains = root.take("domains", d.domains.clone(), |v| {
        let list = string_list(v)?;
        if list.is_empty() {
            return Err("at least one domain is required".into());
        }
        list.iter().map(|s| normalize_domain(s)).collect()
    });
    let data_dir = root.take("data_dir", d.data_dir.clone(), |v| string(v).map(PathBuf::from));
    let data_dir = if data_dir.is_absolute() { data_dir } else { base.join(data_dir) };
    let admins = root.take("admins", d.admins.clone(), |v| {
        string_list(v)?
            .iter()
            .map(|s| match jid::BareJid::new(s) {
                Ok(j) if j.node().is_some() => Ok(j),
                _ => Err(format!("{s:?} is not a bare JID (user@domain)")),
            })
            .collect()
    });

    let mut s = root.section("log");
    let log = LogConfig { level: s.take("level", d.log.level.clone(), |v| string(v).and_then(log_filter)) };
    s.finish();

    let mut s = root.section("storage");
    let storage = StorageConfig {
        url: s.take("url", d.storage.url.clone(), |v| {
            let url = string(v)?;
            if url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://") {
                Ok(url)
            } else {
                Err(format!("expected a sqlite:// or postgres:// URL, got {url:?}"))
            }
        }),
        max_connections: s.take("max_connections", d.storage.max_connections, |v| int_in(v, 1, 1000).map(|n| n as u32)),
    };
    s.finish();

    let mut s = root.section("c2s");
    let c2s = C2sConfig {
        listen: s.take("listen", d.c2s.listen.clone(), socket_addrs),
        listen_tls: s.take("listen_tls", d.c2s.listen_tls.clone(), socket_addrs),
        require_encryption: s.take("require_encryption", d.c2s.require_encryption, boolean),
        // Prosody's floor: below 10000 bytes ordinary stanzas (vCards, disco) stop fitting.
        max_stanza_size: s.take("max_stanza_size", d.c2s.max_stanza_size, |v| int_in(v, 10_000, 64 << 20).map(|n| n as usize)),
        auth_timeout: s.take("auth_timeout", d.c2s.auth_timeout, |v| int_in(v, 1, 86_400).map(|n| n as u64)),
        ping_interval: s.take("ping_interval", d.c2s.ping_interval, |v| int_in(v, 1, 86_400).map(|n| n as u64)),
        ping_timeout: s.take("ping_timeout", d.c2s.ping_timeout, |v| int_in(v, 1, 86_400).map(|n| n as u64)),
        max_resources: s.take("max_resources", d.c2s.max_resources, |v| int_in(v, 1, 1000).map(|n| n as usize)),
        max_bytes_per_second: s.take("max_bytes_per_second", d.c2s.max_bytes_per_second, |v| int_in(v, 0, i64::MAX).map(|n| n as u64)),
        max_queue: s.take("max_queue", d.c2s.max_queue, |v| int_in(v, 16, 1_000_000).map(|n| n as usize)),
        write_timeout: s.take("write_timeout", d.c2s.write_timeout, |v| int_in(v, 1, 3_600).map(|n| n as u64)),
        max_clients: s.take("max_clients", d.c2s.max_clients, |v| int_in(v, 1, 100_000_000).map(|n| n as usize)),
        resume_timeout: s.take("resume_timeout", d.c2s.resume_timeout, |v| int_in(v, 0, 86_400).map(|n| n as u64)),
        max_unacked: s.take("max_unacked", d.c2s.max_unacked, |v| int_in(v, 16, 1_000_000).map(|n| n as usize)),
    };
    s.finish();

    let mut s = root.section("s2s");
    let mut s2s = S2sConfig {
        listen: s.take("listen", d.s2s.listen.clone(), socket_addrs),
        listen_tls: s.take("listen_tls", d.s2s.listen_tls.clone(), socket_addrs),
        require_encryption: s.take("require_encryption", d.s2s.require_encryption, boolean),
        dialback: s.take("dialback", d.s2s.dialback, boolean),
        bidi: s.take("bidi", d.s2s.bidi, boolean),
        ca_file: s.take("ca_file", None, |v| {
            let path = string(v)?;
            if path.is_empty() {
                return Ok(None);
            }
            let path = base.join(path);
            crate::s2s::certs::check_ca_file(&path).map(|_| Some(path))
        }),
        idle_timeout: s.take("idle_timeout", d.s2s.idle_timeout, |v| int_in(v, 1, 86_400).map(|n| n as u64)),
        blocked_domains: s.take("blocked_domains", Vec::new(), |v| string_list(v)?.iter().map(|d| normalize_domain(d)).collect()),
        max_stanza_size: s.take("max_stanza_size", d.s2s.max_stanza_size, |v| int_in(v, 10_000, 64 << 20).map(|n| n as usize)),
        connect_timeout: s.take("connect_timeout", d.s2s.connect_timeout, |v| int_in(v, 1, 3_600).map(|n| n as u64)),
        max_queue: s.take("max_queue", d.s2s.max_queue, |v| int_in(v, 16, 10_000_000).map(|n| n as usize)),
        max_bytes_per_second: s.take("max_bytes_per_second", d.s2s.max_bytes_per_second, |v| int_in(v, 0, i64::MAX).map(|n| n as u64)),
        max_connections_per_ip: s.take("max_connections_per_ip", d.s2s.max_connections_per_ip, |v| int_in(v, 1, 1_000_000).map(|n| n as usize)),
        targets: BTreeMap::new(),
    };
    let mut targets = s.section("targets");
    for name in targets.remaining_keys() {
        let list = targets.take(&name, Vec::new(), |v| {
            let list = if let Some(one) = v.as_str() { vec![one.to_string()] } else { string_list(v)? };
            for target in &list {
                if parse_s2s_target(target).is_none() {
                    return Err(format!("{target:?} is not host:port or tls:host:port (e.g. \"xmpp.b.example:5269\", \"[2001:db8::1]:5269\", or \"tls:xmpp.b.example:5270\" for direct TLS)"));
                }
            }
            Ok(list)
        });
        match normalize_domain(&name) {
            Ok(domain) => {
                s2s.targets.insert(domain, list);
            }
            Err(e) => targets.error(&name, e),
        }
    }
    targets.note_dynamic("<domain>");
    targets.finish();
    s.finish();

    let mut s = root.section("tls");
    let cert = s.take("cert", None, |v| string(v).map(|p| Some(base.join(p))));
    let key = s.take("key", None, |v| string(v).map(|p| Some(base.join(p))));
    if cert.is_some() != key.is_some() {
        s.error("cert", "`cert` and `key` must be set together".into());
    }
    let mut domains_section = s.section("domains");
    let mut per_domain = BTreeMap::new();
    for name in domains_section.remaining_keys() {
        let mut ds = domains_section.section(&name);
        let cert = ds.take("cert", None, |v| string(v).map(|p| Some(base.join(p))));
        let key = ds.take("key", None, |v| string(v).map(|p| Some(base.join(p))));
        match (cert, key) {
            (Some(cert), Some(key)) => {
                per_domain.insert(name.to_lowercase(), CertPaths { cert, key });
            }
            _ => ds.error("cert", "both `cert` and `key` are required".into()),
        }
        ds.finish();
    }
    domains_section.note_dynamic("<domain>.cert");
    domains_section.note_dynamic("<domain>.key");
    domains_section.finish();
    s.finish();
    let tls = TlsConfig { cert, key, domains: per_domain };

    let mut s = root.section("auth");
    let auth = AuthConfig {
        scram_iterations: s.take("scram_iterations", d.auth.scram_iterations, |v| int_in(v, 4096, 10_000_000).map(|n| n as u32)),
        failure_delay_ms: s.take("failure_delay_ms", d.auth.failure_delay_ms, |v| int_in(v, 0, 60_000).map(|n| n as u64)),
        max_failures: s.take("max_failures", d.auth.max_failures, |v| int_in(v, 1, 100).map(|n| n as u32)),
        failures_per_ip: s.take("failures_per_ip", d.auth.failures_per_ip, |v| int_in(v, 0, 1_000_000).map(|n| n as u32)),
        ip_window: s.take("ip_window", d.auth.ip_window, |v| int_in(v, 1, 86_400).map(|n| n as u64)),
        failures_per_account: s.take("failures_per_account", d.auth.failures_per_account, |v| {
            int_in(v, 0, 1_000_000).map(|n| n as u32)
        }),
        account_window: s.take("account_window", d.auth.account_window, |v| int_in(v, 1, 86_400).map(|n| n as u64)),
    };
    s.finish();

    let mut s = root.section("registration");
    let registration = RegistrationConfig { enabled: s.take("enabled", d.registration.enabled, boolean) };
    s.finish();

    let mut s = root.section("offline");
    let offline = OfflineConfig {
        max_per_user: s.take("max_per_user", d.offline.max_per_user, |v| int_in(v, 0, 1_000_000).map(|n| n as usize)),
        max_bytes_per_user: s.take("max_bytes_per_user", d.offline.max_bytes_per_user, |v| int_in(v, 1024, 1 << 40).map(|n| n as u64)),
    };
    s.finish();

    let mut s = root.section("private");
    let private = PrivateConfig {
        max_bytes_per_user: s.take("max_bytes_per_user", d.private.max_bytes_per_user, |v| int_in(v, 1024, 1 << 40).map(|n| n as u64)),
    };
    s.finish();

    let mut s = root.section("vcard");
    let vcard = VcardConfig { max_bytes: s.take("max_bytes", d.vcard.max_bytes, |v| int_in(v, 1024, 64 << 20).map(|n| n as usize)) };
    s.finish();

    let mut s = root.section("roster");
    let roster = RosterConfig {
        max_items: s.take("max_items", d.roster.max_items, |v| int_in(v, 1, 1_000_000).map(|n| n as usize)),
        max_pending_in: s.take("max_pending_in", d.roster.max_pending_in, |v| int_in(v, 1, 1_000_000).map(|n| n as usize)),
        max_groups_per_item: s.take("max_groups_per_item", d.roster.max_groups_per_item, |v| int_in(v, 0, 1000).map(|n| n as usize)),
        max_text_bytes: s.take("max_text_bytes", d.roster.max_text_bytes, |v| int_in(v, 1, 65_536).map(|n| n as usize)),
    };
    s.finish();

    let mut s = root.section("pep");
    let pep = PepConfig {
        max_nodes_per_user: s.take("max_nodes_per_user", d.pep.max_nodes_per_user, |v| int_in(v, 1, 1_000_000).map(|n| n as usize)),
        max_items_per_node: s.take("max_items_per_node", d.pep.max_items_per_node, |v| int_in(v, 1, 1_000_000).map(|n| n as usize)),
        max_item_bytes: s.take("max_item_bytes", d.pep.max_item_bytes, |v| int_in(v, 1024, 64 << 20).map(|n| n as usize)),
        max_bytes_per_user: s.take("max_bytes_per_user", d.pep.max_bytes_per_user, |v| int_in(v, 1024, 1 << 40).map(|n| n as u64)),
        max_subscribers_per_node: s.take("max_subscribers_per_node", d.pep.max_subscribers_per_node, |v| {
            int_in(v, 0, 1_000_000).map(|n| n as usize)
        }),
        caps_cache_size: s.take("caps_cache_size", d.pep.caps_cache_size, |v| int_in(v, 1, 10_000_000).map(|n| n as usize)),
        caps_timeout: s.take("caps_timeout", d.pep.caps_timeout, |v| int_in(v, 1, 3_600).map(|n| n as u64)),
    };
    s.finish();

    let mut s = root.section("mam");
    let mam = MamConfig {
        default: s.take("default", d.mam.default, |v| {
            let text = string(v)?;
            crate::storage::ArchiveDefault::parse(&text).ok_or_else(|| format!("{text:?} is not one of \"always\", \"roster\", \"never\""))
        }),
        retention_days: s.take("retention_days", d.mam.retention_days, |v| int_in(v, 0, 36_500).map(|n| n as u32)),
        max_page: s.take("max_page", d.mam.max_page, |v| int_in(v, 1, 10_000).map(|n| n as usize)),
    };
    s.finish();

    let mut s = root.section("muc");
    let muc = MucConfig {
        subdomain: s.take("subdomain", d.muc.subdomain.clone(), |v| {
            let label = string(v)?;
            let valid = label.is_empty() || normalize_domain(&format!("{label}.example")).is_ok_and(|d| d == format!("{label}.example") && !label.contains('.'));
            if valid { Ok(label) } else { Err(format!("{label:?} is not one DNS label (e.g. \"conference\"; \"\" disables the service)")) }
        }),
        create: s.take("create", d.muc.create, |v| match string(v)?.as_str() {
            "local" => Ok(RoomCreation::Local),
            "admins" => Ok(RoomCreation::Admins),
            "anyone" => Ok(RoomCreation::Anyone),
            other => Err(format!("{other:?} is not one of \"local\", \"admins\", \"anyone\"")),
        }),
        history: s.take("history", d.muc.history, |v| int_in(v, 0, 1000).map(|n| n as u32)),
        max_occupants: s.take("max_occupants", d.muc.max_occupants, |v| int_in(v, 1, 1_000_000).map(|n| n as u32)),
        max_rooms_in_memory: s.take("max_rooms_in_memory", d.muc.max_rooms_in_memory, |v| int_in(v, 1, 10_000_000).map(|n| n as usize)),
        lock_registered_nicks: s.take("lock_registered_nicks", d.muc.lock_registered_nicks, boolean),
    };
    s.finish();

    let mut s = root.section("components");
    let mut components = ComponentsConfig { listen: s.take("listen", d.components.listen.clone(), socket_addrs), domains: BTreeMap::new() };
    let mut component_domains = s.section("domains");
    let muc_domains = if muc.subdomain.is_empty() { Vec::new() } else { domains.iter().map(|d| format!("{}.{d}", muc.subdomain)).collect() };
    for name in component_domains.remaining_keys() {
        let mut cs = component_domains.section(&name);
        let secret = cs.take("secret", String::new(), string);
        if secret.is_empty() {
            cs.error("secret", "a component needs a secret (a long random string, the same in the component's configuration)".into());
        }
        cs.finish();
        match normalize_domain(&name) {
            Ok(domain) if domains.contains(&domain) => {
                component_domains.error(&name, format!("{domain} is a served domain (in `domains`); a component needs a domain of its own, e.g. \"gateway.{domain}\""));
            }
            Ok(domain) if muc_domains.contains(&domain) => {
                component_domains.error(&name, format!("{domain} is the group chat service's domain (`muc.subdomain`); a component needs a domain of its own"));
            }
            Ok(domain) if components.domains.contains_key(&domain) => {
                component_domains.error(&name, format!("{domain} is configured twice (domains are compared after normalisation)"));
            }
            Ok(domain) => {
                if !secret.is_empty() {
                    components.domains.insert(domain, ComponentConfig { secret: Secret(secret) });
                }
            }
            Err(e) => component_domains.error(&name, e),
        }
    }
    component_domains.note_dynamic("<domain>.secret");
    component_domains.finish();
    s.finish();

    let mut s = root.section("push");
    let push = PushConfig {
        include_body: s.take("include_body", d.push.include_body, boolean),
        include_sender: s.take("include_sender", d.push.include_sender, boolean),
        max_per_user: s.take("max_per_user", d.push.max_per_user, |v| int_in(v, 1, 1000).map(|n| n as usize)),
        min_interval: s.take("min_interval", d.push.min_interval, |v| int_in(v, 0, 86_400).map(|n| n as u64)),
        resume_timeout: s.take("resume_timeout", d.push.resume_timeout, |v| int_in(v, 0, 30 * 86_400).map(|n| n as u64)),
    };
    s.finish();

    let mut s = root.section("modules");
    let modules = ModulesConfig { disabled: s.take("disabled", Vec::new(), |v| string_list(v).and_then(module_names)) };
    s.finish();

    let mut s = root.section("admin");
    let admin = AdminConfig {
        socket: s.take("socket", d.admin.socket.clone(), |v| {
            let path = PathBuf::from(string(v)?);
            if path.as_os_str().is_empty() {
                return Err("the admin socket path is empty".into());
            }
            Ok(path)
        }),
    };
    // A Unix socket path must fit in sockaddr_un (108 bytes with the final NUL on Linux).
    let socket_path = data_dir.join(&admin.socket);
    if socket_path.as_os_str().len() > MAX_SOCKET_PATH {
        s.error(
            "socket",
            format!(
                "{} is {} bytes long, more than the {MAX_SOCKET_PATH} a Unix socket path may have: choose a shorter path",
                socket_path.display(),
                socket_path.as_os_str().len()
            ),
        );
    }
    s.finish();

    // Checks across keys.
    let mut seen: BTreeMap<SocketAddr, String> = BTreeMap::new();
    let listeners = [
        ("c2s.listen", &c2s.listen),
        ("c2s.listen_tls", &c2s.listen_tls),
        ("s2s.listen", &s2s.listen),
        ("s2s.listen_tls", &s2s.listen_tls),
        ("components.listen", &components.listen),
    ];
    for (key, addrs) in listeners {
        for (i, addr) in addrs.iter().enumerate() {
            let here = format!("{key}[{i}]");
            match seen.get(addr) {
                Some(first) if addr.port() != 0 => {
                    root.errors.push(ConfigIssue { key: here, message: format!("{addr} is already used by {first}") })
                }
                _ => {
                    seen.insert(*addr, here);
                }
            }
        }
    }

    root.finish();
    Config { source: None, domains, data_dir, admins, log, storage, c2s, s2s, components, tls, auth, registration, offline, private, vcard, roster, pep, mam, muc, push, modules, admin }
}

/// The longest path a Unix domain socket can be bound to on Linux.
pub const MAX_SOCKET_PATH: usize = 107;

/// Validate a `[log] level` filter strictly: every comma-separated directive is a level name
/// or `target=level`, so that a typo is refused rather than silencing the log.
fn log_filter(text: String) -> Result<String, String> {
    const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];
    let is_level = |s: &str| LEVELS.iter().any(|l| l.eq_ignore_ascii_case(s));
    let mut problems = Vec::new();
    for directive in text.split(',') {
        let directive = directive.trim();
        let ok = match directive.split_once('=') {
            None => is_level(directive),
            Some((target, level)) => {
                let target_ok = !target.is_empty()
                    && target.split("::").all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
                target_ok && is_level(level)
            }
        };
        if !ok {
            problems.push(format!("{directive:?}"));
        }
    }
    if problems.is_empty() {
        Ok(text)
    } else {
        Err(format!(
            "{} is not a level or `target=level` (levels: {}; e.g. \"info,starling::c2s=debug\")",
            problems.join(", "),
            LEVELS.join(", ")
        ))
    }
}

/// `[modules] disabled`: only names of modules that exist.
fn module_names(names: Vec<String>) -> Result<Vec<String>, String> {
    let unknown: Vec<&String> = names.iter().filter(|n| !crate::modules::NAMES.contains(&n.as_str())).collect();
    if unknown.is_empty() {
        Ok(names)
    } else {
        let list: Vec<String> = unknown.iter().map(|n| format!("{n:?}")).collect();
        Err(format!("unknown module {} (known: {})", list.join(", "), crate::modules::NAMES.join(", ")))
    }
}

/// An `[s2s.targets]` entry: host (an IPv6 address without its brackets), port, and whether
/// it is direct TLS (`tls:` before it) rather than STARTTLS.
pub fn parse_s2s_target(target: &str) -> Option<(&str, u16, bool)> {
    let (direct_tls, rest) = match target.strip_prefix("tls:") {
        Some(rest) => (true, rest),
        None => (false, target),
    };
    let (host, port) = rest.rsplit_once(':')?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let port = port.parse::<u16>().ok().filter(|p| *p > 0)?;
    (!host.is_empty()).then_some((host, port, direct_tls))
}

/// A domain as a JID domainpart: nameprep'd and lowercased, no node or resource.
fn normalize_domain(s: &str) -> Result<String, String> {
    match jid::BareJid::new(s) {
        Ok(j) if j.node().is_none() => Ok(j.domain().as_str().to_string()),
        _ => Err(format!("{s:?} is not a valid domain")),
    }
}

/// A table being read: takes known keys, reports the rest as unknown.
struct Section<'e> {
    path: String,
    table: toml::Table,
    errors: &'e mut Vec<ConfigIssue>,
    known: &'e mut BTreeSet<String>,
}

impl<'e> Section<'e> {
    fn new(path: &str, table: toml::Table, errors: &'e mut Vec<ConfigIssue>, known: &'e mut BTreeSet<String>) -> Self {
        Section { path: path.to_string(), table, errors, known }
    }

    fn full(&self, key: &str) -> String {
        if self.path.is_empty() { key.to_string() } else { format!("{}.{key}", self.path) }
    }

    fn error(&mut self, key: &str, message: String) {
        let key = self.full(key);
        self.errors.push(ConfigIssue { key, message });
    }

    fn take<T>(&mut self, key: &str, default: T, parse: impl FnOnce(&toml::Value) -> Result<T, String>) -> T {
        let full = self.full(key);
        self.known.insert(full.clone());
        match self.table.remove(key) {
            None => default,
            Some(value) => match parse(&value) {
                Ok(v) => v,
                Err(message) => {
                    self.errors.push(ConfigIssue { key: full, message });
                    default
                }
            },
        }
    }

    fn section(&mut self, key: &str) -> Section<'_> {
        let full = self.full(key);
        let table = match self.table.remove(key) {
            None => toml::Table::new(),
            Some(toml::Value::Table(t)) => t,
            Some(other) => {
                self.errors.push(ConfigIssue { key: full.clone(), message: format!("expected a table, got {}", other.type_str()) });
                toml::Table::new()
            }
        };
        Section { path: full, table, errors: self.errors, known: self.known }
    }

    fn remaining_keys(&self) -> Vec<String> {
        self.table.keys().cloned().collect()
    }

    /// Record a key pattern that has no fixed name (for the documentation check).
    fn note_dynamic(&mut self, pattern: &str) {
        let full = self.full(pattern);
        self.known.insert(full);
    }

    fn finish(self) {
        for key in self.table.keys() {
            let full = if self.path.is_empty() { key.clone() } else { format!("{}.{key}", self.path) };
            self.errors.push(ConfigIssue { key: full, message: "unknown key".into() });
        }
    }
}

fn string(v: &toml::Value) -> Result<String, String> {
    v.as_str().map(str::to_string).ok_or_else(|| format!("expected a string, got {}", v.type_str()))
}

fn boolean(v: &toml::Value) -> Result<bool, String> {
    v.as_bool().ok_or_else(|| format!("expected true or false, got {}", v.type_str()))
}

fn int_in(v: &toml::Value, min: i64, max: i64) -> Result<i64, String> {
    let n = v.as_integer().ok_or_else(|| format!("expected an integer, got {}", v.type_str()))?;
    if n < min || n > max {
        return Err(format!("{n} is out of range ({min}..={max})"));
    }
    Ok(n)
}

fn string_list(v: &toml::Value) -> Result<Vec<String>, String> {
    let arr = v.as_array().ok_or_else(|| format!("expected an array of strings, got {}", v.type_str()))?;
    arr.iter().map(string).collect()
}

fn socket_addrs(v: &toml::Value) -> Result<Vec<SocketAddr>, String> {
    string_list(v)?
        .iter()
        .map(|s| s.parse::<SocketAddr>().map_err(|_| format!("{s:?} is not an address:port (e.g. \"0.0.0.0:5222\" or \"[::]:5222\")")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_sqlite_path() {
        let c = Config::parse("", "x.toml", Path::new("/etc/starling")).unwrap();
        assert_eq!(c.domains, ["localhost"]);
        assert_eq!(c.data_dir, Path::new("/etc/starling/data"));
        assert_eq!(c.storage_url(), "sqlite:///etc/starling/data/starling.db");
        let c = Config::parse("[storage]\nurl = \"sqlite:///var/lib/s.db?mode=rwc\"", "x.toml", Path::new("")).unwrap();
        assert_eq!(c.storage_url(), "sqlite:///var/lib/s.db?mode=rwc");
    }

    #[test]
    fn s2s_section() {
        let c = Config::parse(
            "[s2s]\nblocked_domains = [\"Spam.Example\"]\ndialback = false\n[s2s.targets]\n\"B.example\" = \"127.0.0.1:5269\"\n\"c.example\" = [\"c1.example:5269\", \"[::1]:5270\"]\n",
            "x.toml",
            Path::new(""),
        )
        .unwrap();
        assert_eq!(c.s2s.blocked_domains, ["spam.example"]);
        assert!(!c.s2s.dialback && c.s2s.require_encryption && c.s2s.bidi);
        let off = Config::parse("[s2s]\nbidi = false\n", "x.toml", Path::new("")).unwrap();
        assert!(!off.s2s.bidi);
        let err = Config::parse("[s2s]\nbidi = \"yes\"\n", "x.toml", Path::new("")).unwrap_err();
        assert!(err.issues.iter().any(|i| i.key == "s2s.bidi"), "the bad value names its key: {err}");
        assert_eq!(c.s2s.targets["b.example"], ["127.0.0.1:5269"]);
        assert_eq!(c.s2s.targets["c.example"], ["c1.example:5269", "[::1]:5270"]);
        assert_eq!(parse_s2s_target("[::1]:5270"), Some(("::1", 5270, false)));
        assert_eq!(parse_s2s_target("tls:xmpp.c.example:5270"), Some(("xmpp.c.example", 5270, true)));
        assert_eq!(parse_s2s_target("tls:[::1]:5270"), Some(("::1", 5270, true)));
        for bad in ["tls:", "tls:host", ":5269", "host:0", "host:99999", "[]:5269"] {
            assert_eq!(parse_s2s_target(bad), None, "{bad}");
        }
        let err = Config::parse(
            "[c2s]\nlisten = [\"127.0.0.1:5222\"]\n[s2s]\nlisten = [\"127.0.0.1:5222\"]\n[s2s.targets]\n\"b.example\" = \"no-port\"\n\"not a domain@\" = \"x:1\"\n",
            "x.toml",
            Path::new(""),
        )
        .unwrap_err();
        let keys: Vec<&str> = err.issues.iter().map(|i| i.key.as_str()).collect();
        for want in ["s2s.listen[0]", "s2s.targets.b.example", "s2s.targets.not a domain@"] {
            assert!(keys.contains(&want), "{want} in {err}");
        }
    }

    #[test]
    fn components_section() {
        let c = Config::defaults_here();
        assert_eq!(c.components.listen, ["127.0.0.1:5347".parse::<SocketAddr>().unwrap()]);
        assert!(c.components.domains.is_empty());
        let c = Config::parse(
            "domains = [\"example.org\"]\n[components]\nlisten = []\n[components.domains.\"Gateway.Example.ORG\"]\nsecret = \"s3cret\"\n",
            "x.toml",
            Path::new(""),
        )
        .unwrap();
        assert!(c.components.listen.is_empty());
        assert_eq!(c.components.domains["gateway.example.org"].secret, Secret("s3cret".into()));
        assert!(!format!("{c:?}").contains("s3cret"), "the secret never shows in a debug dump");
        let err = Config::parse(
            "domains = [\"example.org\"]\n[c2s]\nlisten = [\"127.0.0.1:5222\"]\n[components]\nlisten = [\"127.0.0.1:5222\"]\n\
             [components.domains.\"example.org\"]\nsecret = \"x\"\n\
             [components.domains.\"conference.example.org\"]\nsecret = \"x\"\n\
             [components.domains.\"nosecret.example.org\"]\n\
             [components.domains.\"empty.example.org\"]\nsecret = \"\"\n\
             [components.domains.\"bad@name\"]\nsecret = \"x\"\n\
             [components.domains.\"typo.example.org\"]\nsecret = \"x\"\nsecert = \"y\"\n",
            "x.toml",
            Path::new(""),
        )
        .unwrap_err();
        let keys: Vec<&str> = err.issues.iter().map(|i| i.key.as_str()).collect();
        for want in [
            "components.listen[0]",
            "components.domains.example.org",
            "components.domains.conference.example.org",
            "components.domains.nosecret.example.org.secret",
            "components.domains.empty.example.org.secret",
            "components.domains.bad@name",
            "components.domains.typo.example.org.secert",
        ] {
            assert!(keys.contains(&want), "{want} in {err}");
        }
        assert_eq!(keys.len(), 7, "{err}");
        let shown = err.to_string();
        assert!(shown.contains("example.org is a served domain"), "{shown}");
        assert!(shown.contains("127.0.0.1:5222 is already used by c2s.listen[0]"), "{shown}");
    }

    #[test]
    fn reports_all_errors_with_keys() {
        let text = r#"
            domains = ["Example.ORG", "not a domain@"]
            bogus = 1
            [c2s]
            max_stanza_size = "big"
            listen = ["nope"]
            [storage]
            url = "mysql://x"
            [tls]
            cert = "a.pem"
            [registration]
            enabled = "yes"
            extra = true
        "#;
        let err = Config::parse(text, "s.toml", Path::new("")).unwrap_err();
        let keys: Vec<&str> = err.issues.iter().map(|i| i.key.as_str()).collect();
        for want in ["domains", "bogus", "c2s.max_stanza_size", "c2s.listen", "storage.url", "tls.cert", "registration.enabled", "registration.extra"] {
            assert!(keys.contains(&want), "missing {want} in {err}");
        }
        let text = err.to_string();
        assert!(text.starts_with("s.toml: 8 problems"), "{text}");
        assert!(text.contains("s.toml: `registration.extra`: unknown key"), "{text}");
    }

    #[test]
    fn normalizes_domains_and_reads_per_domain_certs() {
        let c = Config::parse(
            "domains = [\"Example.ORG\"]\n[tls.domains.\"example.org\"]\ncert = \"e.pem\"\nkey = \"e.key\"",
            "x",
            Path::new("/c"),
        )
        .unwrap();
        assert_eq!(c.domains, ["example.org"]);
        assert_eq!(c.tls.domains["example.org"].cert, Path::new("/c/e.pem"));
    }

    /// A log level that would silence the server, or an unknown module, is refused with the
    /// key, together with every other problem of the file.
    #[test]
    fn log_levels_and_module_names_are_validated() {
        for good in ["info", "WARN", "off", "info,starling::c2s=debug", "starling=trace, sqlx=warn"] {
            let c = Config::parse(&format!("[log]\nlevel = {good:?}"), "x.toml", Path::new("")).unwrap();
            assert_eq!(c.log.level, good);
        }
        for bad in ["verbose", "", "info,", "starling::=debug", "=debug", "starling=loud", "info starling=debug"] {
            let err = Config::parse(&format!("[log]\nlevel = {bad:?}"), "x.toml", Path::new("")).unwrap_err();
            assert_eq!(err.issues.len(), 1, "{bad:?}: {err}");
            assert_eq!(err.issues[0].key, "log.level", "{err}");
        }
        let text = "[log]\nlevel = \"verbose\"\n[modules]\ndisabled = [\"ping\", \"pong\"]\n";
        let err = Config::parse(text, "s.toml", Path::new("")).unwrap_err();
        let shown = err.to_string();
        assert!(shown.starts_with("s.toml: 2 problems"), "{shown}");
        assert!(shown.contains("s.toml: `log.level`: \"verbose\" is not a level"), "{shown}");
        assert!(shown.contains("s.toml: `modules.disabled`: unknown module \"pong\""), "{shown}");
        let c = Config::parse("[modules]\ndisabled = [\"ping\", \"vcard\"]", "x", Path::new("")).unwrap();
        assert_eq!(c.modules.disabled, ["ping", "vcard"]);
    }

    #[test]
    fn listeners_default_to_both_stacks_and_must_not_repeat() {
        let c = Config::defaults_here();
        let v6 = |addrs: &[SocketAddr]| addrs.iter().filter(|a| a.is_ipv6()).count();
        assert_eq!((c.c2s.listen.len(), v6(&c.c2s.listen)), (2, 1));
        assert_eq!((c.c2s.listen_tls.len(), v6(&c.c2s.listen_tls)), (2, 1));
        let err = Config::parse("[c2s]\nlisten = [\"127.0.0.1:5222\"]\nlisten_tls = [\"[::1]:5223\", \"127.0.0.1:5222\"]", "x", Path::new(""))
            .unwrap_err();
        assert_eq!(err.issues[0].key, "c2s.listen_tls[1]", "{err}");
        assert!(err.issues[0].message.contains("c2s.listen[0]"), "{err}");
        // Port 0 (any free port) may repeat.
        Config::parse("[c2s]\nlisten = [\"127.0.0.1:0\"]\nlisten_tls = [\"127.0.0.1:0\"]", "x", Path::new("")).unwrap();
    }

    #[test]
    fn admin_socket_resolves_against_data_dir_and_fits() {
        let c = Config::parse("data_dir = \"/var/lib/starling\"", "x", Path::new("/etc")).unwrap();
        assert_eq!(c.admin_socket(), Path::new("/var/lib/starling/starling.sock"));
        let c = Config::parse("[admin]\nsocket = \"/run/starling/admin.sock\"", "x", Path::new("/etc")).unwrap();
        assert_eq!(c.admin_socket(), Path::new("/run/starling/admin.sock"));
        let long = format!("/{}", "d".repeat(120));
        let err = Config::parse(&format!("data_dir = {long:?}"), "x", Path::new("")).unwrap_err();
        assert_eq!(err.issues[0].key, "admin.socket", "{err}");
    }

    #[test]
    fn sqlite_files() {
        assert_eq!(sqlite_file("sqlite:///a/b.db?mode=rwc"), Some(PathBuf::from("/a/b.db")));
        assert_eq!(sqlite_file("sqlite://rel.db"), Some(PathBuf::from("rel.db")));
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("sqlite://x.db?mode=memory"), None);
        assert_eq!(sqlite_file("postgres://h/db"), None);
    }

    #[test]
    fn quota_keys() {
        let c = Config::parse(
            "[offline]\nmax_bytes_per_user = 2048\n[private]\nmax_bytes_per_user = 4096\n[vcard]\nmax_bytes = 8192\n\
             [roster]\nmax_items = 5\nmax_pending_in = 6\nmax_groups_per_item = 0\nmax_text_bytes = 7",
            "q.toml",
            Path::new(""),
        )
        .unwrap();
        assert_eq!((c.offline.max_bytes_per_user, c.private.max_bytes_per_user, c.vcard.max_bytes), (2048, 4096, 8192));
        assert_eq!(c.roster, RosterConfig { max_items: 5, max_pending_in: 6, max_groups_per_item: 0, max_text_bytes: 7 });
        let err = Config::parse(
            "[offline]\nmax_bytes_per_user = 10\n[private]\nmax_bytes_per_user = -1\n[vcard]\nmax_bytes = \"big\"\n[roster]\nmax_items = 0",
            "q.toml",
            Path::new(""),
        )
        .unwrap_err();
        let keys: Vec<&str> = err.issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["offline.max_bytes_per_user", "private.max_bytes_per_user", "vcard.max_bytes", "roster.max_items"]);
    }

    #[test]
    fn mam_keys() {
        let c = Config::parse("[mam]\ndefault = \"roster\"\nretention_days = 30\nmax_page = 50", "m.toml", Path::new("")).unwrap();
        assert_eq!(c.mam, MamConfig { default: crate::storage::ArchiveDefault::Roster, retention_days: 30, max_page: 50 });
        let err = Config::parse("[mam]\ndefault = \"sometimes\"\nretention_days = -1\nmax_page = 0", "m.toml", Path::new("")).unwrap_err();
        let keys: Vec<&str> = err.issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["mam.default", "mam.retention_days", "mam.max_page"], "{err}");
        assert!(err.to_string().contains("\"sometimes\" is not one of"), "{err}");
    }

    #[test]
    fn push_keys() {
        let c = Config::parse("[push]\ninclude_body = true\ninclude_sender = false\nmax_per_user = 3\nmin_interval = 0\nresume_timeout = 0", "p.toml", Path::new("")).unwrap();
        assert_eq!(c.push, PushConfig { include_body: true, include_sender: false, max_per_user: 3, min_interval: 0, resume_timeout: 0 });
        let err = Config::parse("[push]\ninclude_body = \"yes\"\nmax_per_user = 0\nresume_timeout = -1\nbody = true", "p.toml", Path::new("")).unwrap_err();
        let keys: Vec<&str> = err.issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["push.include_body", "push.max_per_user", "push.resume_timeout", "push.body"], "{err}");
    }

    #[test]
    fn syntax_errors_are_reported() {
        let err = Config::parse("domains = [", "bad.toml", Path::new("")).unwrap_err();
        assert!(err.to_string().contains("invalid TOML"), "{err}");
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../config/starling.example.toml");

    /// The example config shows the defaults: loading it changes nothing.
    #[test]
    fn example_config_is_the_defaults() {
        let example = Config::parse(EXAMPLE, "starling.example.toml", Path::new("")).unwrap();
        assert_eq!(example, Config::defaults_here());
    }

    /// A quoted name in a header or key ("example.org", "gateway.example.org") stands for
    /// any domain: `<domain>`, as the reader records such keys.
    fn quoted_as_domain(text: &str) -> String {
        match (text.find('"'), text.rfind('"')) {
            (Some(a), Some(b)) if a < b => format!("{}<domain>{}", &text[..a], &text[b + 1..]),
            _ => text.to_string(),
        }
    }

    /// Every key the reader understands is documented in the example, set or commented.
    #[test]
    fn example_config_documents_every_key() {
        let mut section = String::new();
        let mut documented = BTreeSet::new();
        for line in EXAMPLE.lines() {
            let line = line.trim().trim_start_matches('#').trim();
            if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = quoted_as_domain(header);
            } else if let Some((key, _)) = line.split_once(" = ") {
                let key = quoted_as_domain(key.trim());
                if !key.contains(' ') {
                    documented.insert(if section.is_empty() { key.to_string() } else { format!("{section}.{key}") });
                }
            }
        }
        for key in Config::known_keys() {
            assert!(documented.contains(&key), "config key `{key}` is not documented in config/starling.example.toml");
        }
    }
}
