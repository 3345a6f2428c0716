//! SQLite reads on the login path, run on the calling thread.
//!
//! sqlx runs each SQLite connection on a thread of its own: a statement is a hand-off to that
//! thread and back, and returning the connection to the pool is another (sqlx pings it on
//! release). On one core a hand-off is two context switches, dearer than the lookup itself;
//! a login does two such lookups (the SCRAM credential, the roster). These read-only
//! connections, opened beside the pool on the same file, run the lookup where the task is:
//! WAL lets them read while the pool writes, and a lookup by primary key takes microseconds
//! on a warm cache, as long as Prosody's synchronous storage calls take.
//!
//! A reader never waits for a lock: when SQLite reports the database busy (WAL recovery, or a
//! writer holding it in exclusive locking mode) the caller gets `None` and takes the pool's
//! path, which waits on its own thread.
//!
//! Nor need a read run long: a caller may give it a budget of steps of SQLite's virtual
//! machine ([`SqliteReaders::read_within`]). A read that goes past it is interrupted, and the
//! caller again gets `None` and takes the pool. This is for reads that are short by their
//! usual shape (an index range with a small LIMIT: a page of the message archive) but can be
//! made long by a client (a filter the index does not cover that skips many rows, a large
//! OFFSET): such a read stops after a bounded amount of work instead of holding the runtime's
//! thread for its whole length. Steps count rows visited, not the time to fetch their pages,
//! so the budget is kept at a few times what the usual shape takes.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::Result;

/// Steps of SQLite's virtual machine between two calls of a connection's progress handler:
/// the granularity of a budget.
const STEPS_PER_CALL: u32 = 100;

/// Statements each connection keeps prepared: the login lookups and the shapes of archive
/// queries (direction, filters, OFFSET), with room to spare.
const STATEMENT_CACHE: usize = 64;

#[derive(Debug)]
pub(super) struct SqliteReaders {
    connections: Box<[Mutex<Reader>]>,
}

#[derive(Debug)]
struct Reader {
    connection: Connection,
    /// Calls of the progress handler left to the read in progress (see `read_within`).
    calls_left: Arc<AtomicU32>,
}

impl SqliteReaders {
    /// One connection per thread that may read at once (the runtime's worker threads).
    pub(super) fn open(path: &Path, count: usize) -> Result<SqliteReaders> {
        let connections = (0..count.max(1))
            .map(|_| {
                let connection = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                // The same small page cache as the pool's connections (see `Db::open`). This
                // reads the schema, so it may wait for a lock like the pool does at start.
                connection.busy_timeout(Duration::from_secs(10))?;
                connection.pragma_update(None, "cache_size", -512)?;
                connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
                // From here on a reader must not block the runtime's thread: it gives up at
                // once (see the module comment).
                connection.busy_timeout(Duration::ZERO)?;
                // SQLite calls this every STEPS_PER_CALL steps of a statement (the count
                // starts again at each run of the statement); `true` interrupts it.
                let calls_left = Arc::new(AtomicU32::new(u32::MAX));
                let left = calls_left.clone();
                connection.progress_handler(STEPS_PER_CALL as i32, Some(move || {
                    left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_err()
                }))?;
                Ok(Mutex::new(Reader { connection, calls_left }))
            })
            .collect::<Result<_>>()?;
        Ok(SqliteReaders { connections })
    }

    /// Run `read` on a free connection. `None` when the database is busy: the caller reads
    /// through the pool instead.
    pub(super) fn read<T>(&self, read: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Option<Result<T>> {
        self.read_within(u32::MAX, read)
    }

    /// [`SqliteReaders::read`] within about `steps` steps of SQLite's virtual machine, summed
    /// over the statements of `read` (counted per hundred: a statement of fewer than a hundred
    /// steps counts nothing). `None` also when `read` went past them.
    pub(super) fn read_within<T>(&self, steps: u32, read: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Option<Result<T>> {
        // A connection is held only for the length of one synchronous read, so a busy one is
        // free again within microseconds; with one per worker thread there is normally one free.
        let guard = self
            .connections
            .iter()
            .find_map(|c| c.try_lock().ok())
            .unwrap_or_else(|| self.connections[0].lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        guard.calls_left.store(steps / STEPS_PER_CALL, Ordering::Relaxed);
        match read(&guard.connection) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::OperationInterrupted) =>
            {
                None
            }
            result => Some(result.map_err(Into::into)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn database(dir: &Path, journal_mode: &str) -> std::path::PathBuf {
        let path = dir.join("r.db");
        let c = Connection::open(&path).unwrap();
        c.pragma_update(None, "journal_mode", journal_mode).unwrap();
        c.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'one');").unwrap();
        path
    }

    fn value(c: &Connection) -> rusqlite::Result<String> {
        c.prepare_cached("SELECT v FROM t WHERE k = 1")?.query_row([], |r| r.get(0))
    }

    #[test]
    fn reads_what_others_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = database(dir.path(), "wal");
        let readers = SqliteReaders::open(&path, 2).unwrap();
        assert_eq!(readers.read(value).unwrap().unwrap(), "one");
        Connection::open(&path).unwrap().execute("UPDATE t SET v = 'two' WHERE k = 1", []).unwrap();
        assert_eq!(readers.read(value).unwrap().unwrap(), "two");
        // Read-only: a write through a reader fails, and is an error, not "busy".
        let write = readers.read(|c| c.execute("DELETE FROM t", []));
        assert!(matches!(write, Some(Err(_))), "{write:?}");
    }

    #[test]
    fn busy_database_is_none_at_once() {
        // Once a reader has a WAL database open nothing can lock it out short of WAL recovery,
        // which a test cannot stage; a rollback-journal database in an exclusive transaction
        // gives the same SQLITE_BUSY.
        let dir = tempfile::tempdir().unwrap();
        let path = database(dir.path(), "delete");
        let readers = SqliteReaders::open(&path, 1).unwrap();
        let mut writer = Connection::open(&path).unwrap();
        let held = writer.transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive).unwrap();
        held.execute("UPDATE t SET v = 'held' WHERE k = 1", []).unwrap();
        let started = Instant::now();
        assert!(readers.read(value).is_none());
        // Without the zero busy timeout the reader would wait rusqlite's default 5 s here.
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        held.commit().unwrap();
        assert_eq!(readers.read(value).unwrap().unwrap(), "held");
    }

    /// A read past its budget is interrupted and is `None`, at once; the next read on the
    /// same connection has its own budget, and reads without one are not bounded.
    #[test]
    fn long_reads_give_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = database(dir.path(), "wal");
        let readers = SqliteReaders::open(&path, 1).unwrap();
        let count = |n: i64| {
            move |c: &Connection| {
                c.prepare_cached("WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1) SELECT COUNT(*) FROM n")?
                    .query_row([n], |r| r.get::<_, i64>(0))
            }
        };
        let started = Instant::now();
        assert!(readers.read_within(10_000, count(10_000_000)).is_none());
        assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());
        assert_eq!(readers.read_within(10_000, count(100)).unwrap().unwrap(), 100);
        assert_eq!(readers.read(count(100_000)).unwrap().unwrap(), 100_000);
        assert_eq!(readers.read_within(10_000, value).unwrap().unwrap(), "one");
    }
}
