//! Storage over SQLite and PostgreSQL: one store per concern, each a small type whose
//! methods hold both dialects side by side. SQL lives only under this directory.
//!
//! Queries use `$1, $2, ...` placeholders in order of first use, which both SQLite and
//! PostgreSQL accept, so most statements are written once and run on either pool.

mod accounts;
mod blocklist;
mod hint;
mod last_activity;
mod offline;
mod private;
mod readers;
mod roster;
mod vcard;

pub use accounts::{AccountStore, NewAccount};
pub use blocklist::BlocklistStore;
pub use last_activity::{LastActivity, LastActivityStore};
pub use offline::{BatchLimit, OfflineMessage, OfflineQuota, OfflineStore, PendingStore, Stored};
pub use private::PrivateStore;
pub use roster::{RosterItem, RosterLimits, RosterStore, Subscription};
pub use vcard::VcardStore;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database: {0}")]
    Read(#[from] rusqlite::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
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
    Limit(#[from] LimitReached),
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
    hints: Arc<Hints>,
    offline_queue: Arc<offline::Queue>,
}

/// The accounts that may have rows in the tables that every login reads and that are empty
/// for almost everyone (see `hint.rs`).
#[derive(Debug)]
struct Hints {
    offline: hint::OwnerHint,
    pending_in: hint::OwnerHint,
    blocklist: hint::OwnerHint,
}

impl Hints {
    fn new() -> Self {
        Hints {
            offline: hint::OwnerHint::new("SELECT DISTINCT owner FROM offline_messages"),
            pending_in: hint::OwnerHint::new("SELECT DISTINCT owner FROM roster_pending_in"),
            blocklist: hint::OwnerHint::new("SELECT DISTINCT owner FROM blocklist"),
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
    pub async fn open(url: &str, max_connections: u32) -> Result<Db> {
        let mut readers = None;
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
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| StorageError::Config(format!("cannot create {}: {e}", dir.display())))?;
                }
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
                // One reader per runtime worker thread (tokio's default count).
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                readers = Some(Arc::new(readers::SqliteReaders::open(&path, threads)?));
            }
            Pool::Sqlite(pool)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await?;
            sqlx::migrate!("migrations/postgres").run(&pool).await?;
            Pool::Postgres(pool)
        } else {
            return Err(StorageError::Config(format!("unsupported database URL {url:?}")));
        };
        Ok(Db { pool, readers, hints: Arc::new(Hints::new()), offline_queue: Arc::default() })
    }

    /// Run a lookup on a SQLite reader, on this thread. `None` when there is no reader (not a
    /// SQLite file) or the database is busy: the caller then reads through the pool.
    fn read_here<T>(&self, read: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>) -> Option<Result<T>> {
        self.readers.as_ref()?.read(read)
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
    pub fn vcard(&self) -> VcardStore {
        VcardStore { db: self.clone() }
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
