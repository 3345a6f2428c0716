//! Storage over SQLite and PostgreSQL: one store per concern, each a small type whose
//! methods hold both dialects side by side. SQL lives only under this directory.
//!
//! Queries use `$1, $2, ...` placeholders in order of first use, which both SQLite and
//! PostgreSQL accept, so most statements are written once and run on either pool.

mod accounts;
mod archive;
mod blocklist;
mod hint;
mod last_activity;
mod muc;
mod muc_vcard;
mod offline;
mod pep;
mod private;
mod push;
mod readers;
mod roster;
mod vcard;

pub use accounts::{AccountStore, NewAccount};
pub use archive::{ArchiveDefault, ArchivePrefs, ArchiveRange, ArchiveStore, ArchivedMessage, BulkMessage, NewArchived, PendingArchive, Slot, now_micros};
pub use blocklist::BlocklistStore;
pub use last_activity::{LastActivity, LastActivityStore};
pub use muc::{Affiliation, AffiliationChange, AllowPm, MucStore, PresenceBroadcast, RoomConfig, RoomSummary, StoredAffiliation, StoredRoom, Whois};
pub use offline::{BatchLimit, OfflineMessage, OfflineQuota, OfflineStore, PendingStore, Stored};
pub use pep::{AccessModel, Created, LastItem, NodeConfig, NotificationType, PepItem, PepLimits, PepNode, PepStore, SendLast};
pub use private::PrivateStore;
pub use push::{PushRegistration, PushStore};
pub use roster::{RosterItem, RosterLimits, RosterStore, Subscription};
pub use vcard::VcardStore;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

/// Storage errors. Each message includes its cause and no variant has a `source()`: they are
/// logged with `%e` everywhere, and an error chain (anyhow's `{:#}`) would print the cause
/// twice otherwise.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database: {0}")]
    Database(sqlx::Error),
    #[error("database: {0}")]
    Read(rusqlite::Error),
    #[error("migration: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Config(String),
    /// A grouped write failed; every write in the group gets this.
    #[error("database (grouped write): {0}")]
    Batch(String),
    /// Not a failure: the write was refused because it would take the account past a
    /// configured limit, and nothing was written.
    #[error("{0}")]
    Limit(LimitReached),
    /// The database does not exist yet and this command does not create it.
    #[error("{0}")]
    Missing(String),
}

/// A per-account limit that a write would have exceeded; the text names it for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitReached {
    #[error("a roster holds at most {0} items")]
    RosterItems(usize),
    #[error("at most {0} subscription requests are kept waiting for an account")]
    PendingIn(usize),
    #[error("private XML storage holds at most {0} bytes per account")]
    PrivateBytes(u64),
    #[error("an account has at most {0} PEP nodes")]
    PepNodes(usize),
    #[error("the items of an account's PEP nodes take at most {0} bytes")]
    PepBytes(u64),
    #[error("a PEP node has at most {0} subscriptions")]
    PepSubscribers(usize),
    #[error("an account has at most {0} push notification registrations")]
    PushRegistrations(usize),
}

impl From<LimitReached> for StorageError {
    fn from(e: LimitReached) -> Self {
        StorageError::Limit(e)
    }
}

impl From<sqlx::Error> for StorageError {
    fn from(e: sqlx::Error) -> Self {
        StorageError::Database(e)
    }
}

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        StorageError::Read(e)
    }
}

impl From<sqlx::migrate::MigrateError> for StorageError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StorageError::Migrate(e)
    }
}

/// What `starling check` found, without creating or changing anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inspection {
    /// The SQLite file does not exist: the server creates it at start.
    WillBeCreated(std::path::PathBuf),
    /// The database exists. `accounts` is `None` when it has no schema yet; `pending` is the
    /// number of migrations the server applies at start.
    Exists { accounts: Option<i64>, pending: usize },
}

pub type Result<T> = std::result::Result<T, StorageError>;

#[derive(Clone, Debug)]
pub enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The database: cheap to clone, shared by every store.
#[derive(Clone, Debug)]
pub struct Db {
    pool: Pool,
    /// Lookups on the login path for a SQLite file (see `readers.rs`); `None` otherwise.
    readers: Option<Arc<readers::SqliteReaders>>,
    /// Longer reads of a SQLite file, on tokio's blocking threads (see `readers.rs`).
    blocking_readers: Option<Arc<readers::BlockingReaders>>,
    hints: Arc<Hints>,
    offline_queue: Arc<offline::Queue>,
    archive: Arc<archive::Shared>,
}

/// The accounts that may have rows in the tables that every login reads and that are empty
/// for almost everyone (see `hint.rs`).
#[derive(Debug)]
struct Hints {
    offline: hint::OwnerHint,
    pending_in: hint::OwnerHint,
    blocklist: hint::OwnerHint,
    push: hint::OwnerHint,
}

impl Hints {
    fn new() -> Self {
        Hints {
            offline: hint::OwnerHint::new("SELECT DISTINCT owner FROM offline_messages"),
            pending_in: hint::OwnerHint::new("SELECT DISTINCT owner FROM roster_pending_in"),
            blocklist: hint::OwnerHint::new("SELECT DISTINCT owner FROM blocklist"),
            push: hint::OwnerHint::new("SELECT DISTINCT owner FROM push_registrations"),
        }
    }
}

/// Run the same statement text on whichever pool is open: the body is compiled once per
/// backend with `$pool` bound to that backend's pool.
macro_rules! on_pool {
    ($db:expr, |$pool:ident| $body:expr) => {
        match &$db.pool {
            $crate::storage::Pool::Sqlite($pool) => $body,
            $crate::storage::Pool::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

impl Db {
    /// Open (creating a SQLite file and its directory if needed) and apply migrations.
    /// A directory created here is 0700 and the SQLite file 0600, whatever the umask:
    /// the database holds every account's SCRAM keys.
    pub async fn open(url: &str, max_connections: u32) -> Result<Db> {
        Self::open_with(url, max_connections, true).await
    }

    /// Open a database that already exists and apply pending migrations; a missing SQLite
    /// file, or a PostgreSQL database without our schema, is `StorageError::Missing`.
    /// For the CLI, which must not create a database where the server would not look.
    pub async fn open_existing(url: &str, max_connections: u32) -> Result<Db> {
        Self::open_with(url, max_connections, false).await
    }

    async fn open_with(url: &str, max_connections: u32, create: bool) -> Result<Db> {
        let (mut readers, mut blocking_readers) = (None, None);
        let pool = if url.starts_with("sqlite:") {
            let mut options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .foreign_keys(true)
                // WAL lets readers work during writes; FULL makes a commit survive power
                // loss, because an accepted offline message must never be lost.
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                // 512 KiB of page cache per connection instead of SQLite's 2 MiB: the OS
                // file cache holds the database anyway, and server memory should track
                // sessions, not how many accounts have logged in so far.
                .pragma("cache_size", "-512")
                .busy_timeout(Duration::from_secs(10));
            let memory = url.contains(":memory:") || url.contains("mode=memory");
            let path = options.get_filename().to_path_buf();
            if !memory {
                if !create && !path.exists() {
                    return Err(StorageError::Missing(format!("the database {} does not exist", path.display())));
                }
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    crate::files::private_dir(dir)
                        .map_err(|e| StorageError::Config(format!("cannot create {}: {e}", dir.display())))?;
                }
                // Created here, not by SQLite, so that it is 0600: SQLite gives the -wal and
                // -shm files the mode of the main file.
                crate::files::private_file(&path)
                    .map_err(|e| StorageError::Config(format!("cannot create {}: {e}", path.display())))?;
            } else {
                options = options.journal_mode(SqliteJournalMode::Memory);
            }
            // An in-memory database exists per connection: one connection only.
            let max = if memory { 1 } else { max_connections };
            // No liveness ping before each use: a SQLite connection is a file handle that cannot
            // drop like a socket, and the ping is a round trip to the connection's worker
            // thread, as costly as the query itself.
            let pool = SqlitePoolOptions::new()
                .max_connections(max)
                .test_before_acquire(false)
                .connect_with(options)
                .await?;
            sqlx::migrate!("migrations/sqlite").run(&pool).await?;
            if !memory {
                // One reader per runtime worker thread (tokio's default count), and as many
                // (two at least) for reads on the blocking threads.
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                readers = Some(Arc::new(readers::SqliteReaders::open(&path, threads, Duration::ZERO)?));
                blocking_readers = Some(Arc::new(readers::BlockingReaders::open(&path, threads.max(2))?));
            }
            Pool::Sqlite(pool)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await?;
            if !create && !pg_has_schema(&pool).await? {
                pool.close().await;
                return Err(StorageError::Missing(format!(
                    "the PostgreSQL database {} has no Starling schema yet",
                    crate::server::redact(url)
                )));
            }
            sqlx::migrate!("migrations/postgres").run(&pool).await?;
            Pool::Postgres(pool)
        } else {
            return Err(StorageError::Config(format!("unsupported database URL {url:?}")));
        };
        Ok(Db { pool, readers, blocking_readers, hints: Arc::new(Hints::new()), offline_queue: Arc::default(), archive: Arc::default() })
    }

    /// Look at a database without creating or changing anything (`starling check`): a SQLite
    /// file is opened read-only, or reported as to be created; PostgreSQL is connected to.
    pub async fn inspect(url: &str) -> Result<Inspection> {
        if url.starts_with("sqlite:") {
            let Some(path) = crate::config::sqlite_file(url) else {
                return Ok(Inspection::Exists { accounts: Some(0), pending: sqlx::migrate!("migrations/sqlite").iter().count() });
            };
            if !path.exists() {
                return Ok(Inspection::WillBeCreated(path));
            }
            let options = SqliteConnectOptions::from_str(url)?.create_if_missing(false).read_only(true);
            let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await?;
            let known = sqlx::migrate!("migrations/sqlite").iter().count();
            let found = inspect_schema(&Pool::Sqlite(pool.clone()), "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1", known).await;
            pool.close().await;
            found
        } else {
            let pool = PgPoolOptions::new().max_connections(1).acquire_timeout(Duration::from_secs(10)).connect(url).await?;
            let known = sqlx::migrate!("migrations/postgres").iter().count();
            let found = inspect_schema(
                &Pool::Postgres(pool.clone()),
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1",
                known,
            )
            .await;
            pool.close().await;
            found
        }
    }

    /// Run a lookup on a SQLite reader, on this thread. `None` when there is no reader (not a
    /// SQLite file) or the database is busy: the caller then reads through the pool.
    fn read_here<T>(&self, read: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>) -> Option<Result<T>> {
        self.readers.as_ref()?.read(read)
    }

    /// Run a read that takes longer than a lookup (it reads many rows) on a SQLite reader, on
    /// a blocking thread (see `readers.rs`). `None` when there is no reader (not a SQLite
    /// file) or the database stayed busy: the caller then reads through the pool.
    async fn read_blocking<T: Send + 'static>(
        &self,
        read: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Option<Result<T>> {
        self.blocking_readers.as_ref()?.read(read).await
    }

    /// One optional TEXT column looked up by `keys` (bound in order): on a reader when there
    /// is one, else through the pool. For the small per-account documents clients fetch at
    /// login (vCard, private XML).
    async fn text_by_key(&self, sql: &'static str, keys: &[&str]) -> Result<Option<String>> {
        let read = self.read_here(|c| {
            use rusqlite::OptionalExtension;
            c.prepare_cached(sql)?.query_row(rusqlite::params_from_iter(keys), |r| r.get(0)).optional()
        });
        match read {
            Some(read) => read,
            None => on_pool!(self, |pool| {
                let mut query = sqlx::query_scalar(sql);
                for key in keys {
                    query = query.bind(*key);
                }
                Ok(query.fetch_optional(pool).await?)
            }),
        }
    }

    pub fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    pub async fn close(&self) {
        // Offline messages still queued were accepted: commit them before the pool goes.
        self.offline().committed().await;
        self.archive().committed().await;
        on_pool!(self, |pool| pool.close().await)
    }

    pub fn accounts(&self) -> AccountStore {
        AccountStore { db: self.clone() }
    }
    pub fn roster(&self) -> RosterStore {
        RosterStore { db: self.clone(), limits: RosterLimits::NONE }
    }
    pub fn offline(&self) -> OfflineStore {
        OfflineStore { db: self.clone() }
    }
    pub fn archive(&self) -> ArchiveStore {
        ArchiveStore { db: self.clone() }
    }
    pub fn vcard(&self) -> VcardStore {
        VcardStore { db: self.clone() }
    }
    pub fn muc(&self) -> MucStore {
        MucStore { db: self.clone() }
    }
    pub fn pep(&self) -> PepStore {
        PepStore { db: self.clone(), limits: PepLimits { max_nodes: usize::MAX, max_items: usize::MAX, max_bytes: u64::MAX } }
    }
    pub fn private(&self) -> PrivateStore {
        PrivateStore { db: self.clone(), max_bytes: u64::MAX }
    }
    pub fn blocklist(&self) -> BlocklistStore {
        BlocklistStore { db: self.clone() }
    }
    pub fn last_activity(&self) -> LastActivityStore {
        LastActivityStore { db: self.clone() }
    }
    pub fn push(&self) -> PushStore {
        PushStore { db: self.clone() }
    }
}

/// Whether a PostgreSQL database has had our migrations applied.
async fn pg_has_schema(pool: &PgPool) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'",
    )
    .fetch_one(pool)
    .await?;
    Ok(n > 0)
}

/// Accounts and pending migrations, reading only. `table_exists` counts tables named `$1`.
async fn inspect_schema(pool: &Pool, table_exists: &'static str, known: usize) -> Result<Inspection> {
    let db = Db { pool: pool.clone(), readers: None, blocking_readers: None, hints: Arc::new(Hints::new()), offline_queue: Arc::default(), archive: Arc::default() };
    let has = |table: &'static str| {
        let db = db.clone();
        async move {
            on_pool!(db, |pool| {
                let n: i64 = sqlx::query_scalar(table_exists).bind(table).fetch_one(pool).await?;
                Ok::<bool, StorageError>(n > 0)
            })
        }
    };
    if !has("_sqlx_migrations").await? {
        return Ok(Inspection::Exists { accounts: None, pending: known });
    }
    let applied: i64 = on_pool!(db, |pool| sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success").fetch_one(pool).await?);
    let accounts = if has("accounts").await? {
        Some(on_pool!(db, |pool| sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM accounts").fetch_one(pool).await?))
    } else {
        None
    };
    Ok(Inspection::Exists { accounts, pending: known.saturating_sub(applied as usize) })
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::Db;

    /// A SQLite file gets readers, and they see at once what the pool commits; an in-memory
    /// database (one per connection) must not get any.
    #[tokio::test]
    async fn sqlite_file_reads_on_the_calling_thread() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&format!("sqlite://{}/r.db", dir.path().display()), 2).await.unwrap();
        let owner = jid::BareJid::new("a@localhost").unwrap();
        let account = super::NewAccount { jid: owner.clone(), credentials: Vec::new() };
        assert!(db.accounts().create(&account).await.unwrap());
        db.vcard().set(&owner, "<vCard xmlns='vcard-temp'/>").await.unwrap();
        let sql = "SELECT vcard FROM vcards WHERE owner = $1";
        let read = db.read_here(|c| c.query_row(sql, [owner.as_str()], |r| r.get::<_, String>(0)));
        assert_eq!(read.unwrap().unwrap(), "<vCard xmlns='vcard-temp'/>");

        let memory = Db::open("sqlite::memory:", 1).await.unwrap();
        assert!(memory.read_here(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))).is_none());
        assert_eq!(memory.vcard().get(&owner).await.unwrap(), None);
    }

    /// Under umask 022 the database directory, the file and its WAL companions are private.
    #[tokio::test]
    async fn sqlite_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        // SAFETY: umask only changes this process's file creation mask.
        let old = unsafe { libc::umask(0o022) };
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let db = Db::open(&format!("sqlite://{}/s.db", data.display()), 2).await.unwrap();
        let owner = jid::BareJid::new("a@localhost").unwrap();
        db.accounts().create(&super::NewAccount { jid: owner, credentials: Vec::new() }).await.unwrap();
        assert_eq!(mode(&data), 0o700);
        for name in ["s.db", "s.db-wal", "s.db-shm"] {
            assert_eq!(mode(&data.join(name)), 0o600, "{name}");
        }
        db.close().await;
        unsafe { libc::umask(old) };
    }

    /// The CLI refuses to create a database; `inspect` creates nothing.
    #[tokio::test]
    async fn missing_database_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/sub/s.db", dir.path().display());
        assert!(matches!(Db::open_existing(&url, 1).await, Err(super::StorageError::Missing(_))));
        let found = Db::inspect(&url).await.unwrap();
        assert_eq!(found, super::Inspection::WillBeCreated(dir.path().join("sub/s.db")));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing was created");
        let db = Db::open(&url, 1).await.unwrap();
        db.close().await;
        let before: Vec<_> = std::fs::read_dir(dir.path().join("sub")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(Db::inspect(&url).await.unwrap(), super::Inspection::Exists { accounts: Some(0), pending: 0 });
        let after: Vec<_> = std::fs::read_dir(dir.path().join("sub")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(before, after, "inspecting leaves no file behind");
        Db::open_existing(&url, 1).await.unwrap().close().await;
    }

    /// Both migration folders must hold the same file names (one migration per store).
    #[test]
    fn migration_folders_match() {
        let names = |dir: &str| {
            let mut v: Vec<String> = std::fs::read_dir(format!("{}/migrations/{dir}", env!("CARGO_MANIFEST_DIR")))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names("sqlite"), names("postgres"));
        assert!(!names("sqlite").is_empty());
    }
}
