//! SQLite reads beside the pool: lookups on the login path run on the calling thread, and
//! longer reads (pages of the message archive) on a thread of tokio's blocking pool.
//!
//! sqlx runs each SQLite connection on a thread of its own: a statement is a hand-off to that
//! thread and back, and returning the connection to the pool is another (sqlx pings it on
//! release). On one core a hand-off is two context switches, dearer than the lookup itself;
//! a login does two such lookups (the SCRAM credential, the roster). These read-only
//! connections, opened beside the pool on the same file, run the lookup where the task is:
//! WAL lets them read while the pool writes, and a lookup by primary key takes microseconds
//! on a warm cache, as long as Prosody's synchronous storage calls take.
//!
//! A reader on the calling thread never waits for a lock: when SQLite reports the database
//! busy (WAL recovery, or a writer holding it in exclusive locking mode) the caller gets
//! `None` and takes the pool's path, which waits on its own thread.
//!
//! A read that takes longer than a lookup ([`BlockingReaders`]): a page of 50 archived
//! messages reads about 50 rows, and the file pages they are on (from the OS's cache, or
//! from the disk). On the runtime's thread that would hold up every other session it serves
//! for as long, and it makes the thread's bursts of CPU long: measured with a CPU-bound
//! process on the same core, one wake-up of the runtime's thread in eight then waited 1 to 5
//! ms for the core (the scheduler lets the other process finish its slice, up to its next
//! tick), and the archive queries' p99 went from under 1 ms to 4.5 ms. On a blocking thread,
//! with one hand-off there and one back, instead of one per row and statement through sqlx,
//! neither happens. Such reads wait for locks as the pool does.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};
use tokio::sync::Semaphore;

use super::Result;

/// Statements each connection keeps prepared: the login lookups and the shapes of archive
/// pages (direction, filters, LIMIT, OFFSET), with room to spare.
const STATEMENT_CACHE: usize = 64;

/// How long a read off the runtime's threads may wait for a lock: as the pool's connections.
const BLOCKING_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub(super) struct SqliteReaders {
    connections: Box<[Mutex<Connection>]>,
}

impl SqliteReaders {
    /// `count` connections; a read gives up on a lock after `busy` (zero: at once).
    pub(super) fn open(path: &Path, count: usize, busy: Duration) -> Result<SqliteReaders> {
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
                // From here on, as long as the caller may wait (see the module comment).
                connection.busy_timeout(busy)?;
                Ok(Mutex::new(connection))
            })
            .collect::<Result<_>>()?;
        Ok(SqliteReaders { connections })
    }

    /// Run `read` on a free connection. `None` when the database is busy: the caller reads
    /// through the pool instead.
    pub(super) fn read<T>(&self, read: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Option<Result<T>> {
        // A connection is held only for the length of one synchronous read, so a busy one is
        // free again within microseconds; with one per worker thread there is normally one free.
        let guard = self
            .connections
            .iter()
            .find_map(|c| c.try_lock().ok())
            .unwrap_or_else(|| self.connections[0].lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        match read(&guard) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) =>
            {
                None
            }
            result => Some(result.map_err(Into::into)),
        }
    }
}

/// Reader connections of their own for reads on tokio's blocking pool (see the module
/// comment), as many at once as there are connections: the others wait for one as tasks,
/// not as blocked threads.
#[derive(Debug)]
pub(super) struct BlockingReaders {
    readers: Arc<SqliteReaders>,
    permits: Arc<Semaphore>,
}

impl BlockingReaders {
    pub(super) fn open(path: &Path, count: usize) -> Result<BlockingReaders> {
        let count = count.max(1);
        Ok(BlockingReaders {
            readers: Arc::new(SqliteReaders::open(path, count, BLOCKING_BUSY_TIMEOUT)?),
            permits: Arc::new(Semaphore::new(count)),
        })
    }

    /// Run `read` on a blocking thread, on a connection of its own. `None` when the database
    /// stayed busy past the pool's timeout.
    pub(super) async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Option<Result<T>> {
        let permit = self.permits.clone().acquire_owned().await.expect("the semaphore is never closed");
        let readers = self.readers.clone();
        let run = tokio::task::spawn_blocking(move || {
            // With a permit, one of the connections is free: `read` finds it without waiting.
            let _permit = permit;
            readers.read(read)
        });
        match run.await {
            Ok(result) => result,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
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
        let readers = SqliteReaders::open(&path, 2, Duration::ZERO).unwrap();
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
        let readers = SqliteReaders::open(&path, 1, Duration::ZERO).unwrap();
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

    /// Reads off the runtime run on other threads than the caller's, as many at once as
    /// there are connections, and wait for a lock instead of giving up.
    #[tokio::test(flavor = "current_thread")]
    async fn blocking_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = database(dir.path(), "delete");
        let readers = Arc::new(BlockingReaders::open(&path, 2).unwrap());
        let caller = std::thread::current().id();
        let elsewhere = readers.read(move |c| Ok((std::thread::current().id() != caller, value(c)?))).await.unwrap().unwrap();
        assert_eq!(elsewhere, (true, "one".to_string()));
        // Ten reads at once, two at a time: never more in flight than connections.
        let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let reads = (0..10).map(|_| {
            let (readers, in_flight, most) = (readers.clone(), in_flight.clone(), most.clone());
            tokio::spawn(async move {
                readers
                    .read(move |c| {
                        use std::sync::atomic::Ordering::SeqCst;
                        most.fetch_max(in_flight.fetch_add(1, SeqCst) + 1, SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        in_flight.fetch_sub(1, SeqCst);
                        value(c)
                    })
                    .await
            })
        });
        for read in reads.collect::<Vec<_>>() {
            assert_eq!(read.await.unwrap().unwrap().unwrap(), "one");
        }
        assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 2);
        // A lock held for a moment is waited for.
        let mut writer = Connection::open(&path).unwrap();
        let held = writer.transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive).unwrap();
        held.execute("UPDATE t SET v = 'later' WHERE k = 1", []).unwrap();
        let read = tokio::spawn({
            let readers = readers.clone();
            async move { readers.read(value).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        held.commit().unwrap();
        assert_eq!(read.await.unwrap().unwrap().unwrap(), "later");
    }
}
