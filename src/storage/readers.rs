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

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::Result;

#[derive(Debug)]
pub(super) struct SqliteReaders {
    connections: Box<[Mutex<Connection>]>,
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
                // From here on a reader must not block the runtime's thread: it gives up at
                // once (see the module comment).
                connection.busy_timeout(Duration::ZERO)?;
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
}
