//! The message archive (XEP-0313) and its preferences (XEP-0441).
//!
//! Each archived message has a position `ts`: microseconds since the epoch, given by the
//! writer as max(now, previous + 1), so it is unique, increasing, and the message's
//! timestamp at once. Every query is a range of (owner, ts) or (owner, with_bare, ts) read
//! from an index in either direction: a page at the newest end of a huge archive reads the
//! page, not the archive. The archive id (the XEP-0359 stanza-id) is 128 random bits,
//! unrelated to the position, so it reveals nothing (XEP-0359 §6); a unique index on
//! (owner, id) turns an id into its position.
//!
//! Writes go through one writer per database that commits whatever is queued in one
//! transaction (group commit, as for offline messages): delivery never waits for it, and
//! the caller learns when its rows are durable.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use jid::{BareJid, Jid};
use sqlx::{AssertSqlSafe, Row};
use tokio::sync::{OnceCell, mpsc, oneshot};

use super::hint::OwnerHint;
use super::{Db, Result, StorageError, on_pool};

/// A new archive id: 128 random bits, URL-safe base64 without padding (22 characters).
pub fn new_archive_id() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What is archived for JIDs in neither list of the preferences (XEP-0441 §2.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveDefault {
    Always,
    /// Only when the other party's bare JID is in the account's roster.
    Roster,
    Never,
}

impl ArchiveDefault {
    pub fn as_str(self) -> &'static str {
        match self {
            ArchiveDefault::Always => "always",
            ArchiveDefault::Roster => "roster",
            ArchiveDefault::Never => "never",
        }
    }

    pub fn parse(s: &str) -> Option<ArchiveDefault> {
        match s {
            "always" => Some(ArchiveDefault::Always),
            "roster" => Some(ArchiveDefault::Roster),
            "never" => Some(ArchiveDefault::Never),
            _ => None,
        }
    }
}

/// An account's archiving preferences: normalised JIDs (bare or full), each list sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivePrefs {
    pub default: ArchiveDefault,
    pub always: Vec<String>,
    pub never: Vec<String>,
}

/// A message to archive for `owner`, the other party being `with`.
#[derive(Debug, Clone)]
pub struct NewArchived {
    pub owner: BareJid,
    /// From [`new_archive_id`]; for a received message, the stanza-id it was delivered with.
    pub id: String,
    pub with: Jid,
    /// The message, serialised.
    pub stanza: String,
}

/// A message for [`ArchiveStore::insert_bulk`].
#[derive(Debug, Clone)]
pub struct BulkMessage {
    pub owner: BareJid,
    pub with: Jid,
    pub stanza: String,
    /// When it was archived, in microseconds since the epoch; `None`: now. Given positions
    /// must be distinct across the whole archive (they are its order), such as a base plus
    /// a counter.
    pub at_micros: Option<i64>,
}

/// An archived message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedMessage {
    /// Its position and timestamp: microseconds since the epoch.
    pub ts: i64,
    pub id: String,
    pub stanza: String,
}

/// Which messages of an archive a query covers.
#[derive(Debug, Clone)]
pub struct ArchiveRange {
    /// The other party: a bare JID matches it with any resource, a full JID only itself.
    pub with: Option<Jid>,
    /// Positions from and to, both included.
    pub from_ts: i64,
    pub to_ts: i64,
    /// Only these ids (none: any).
    pub ids: Vec<String>,
}

impl ArchiveRange {
    /// Everything.
    pub fn all() -> ArchiveRange {
        ArchiveRange { with: None, from_ts: i64::MIN, to_ts: i64::MAX, ids: Vec::new() }
    }
}

#[derive(Clone, Debug)]
pub struct ArchiveStore {
    pub(super) db: Db,
}

/// State shared by every handle of one database: the writer's queue, the position clock,
/// and which accounts have preferences.
#[derive(Debug)]
pub(super) struct Shared {
    sender: OnceLock<mpsc::Sender<Request>>,
    /// Queued and not yet answered: lets `committed` skip the writer when nothing waits.
    in_flight: AtomicUsize,
    /// The last position given.
    last_ts: AtomicI64,
    clock_loaded: OnceCell<()>,
    prefs: OwnerHint,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            sender: OnceLock::new(),
            in_flight: AtomicUsize::new(0),
            last_ts: AtomicI64::new(i64::MIN),
            clock_loaded: OnceCell::new(),
            prefs: OwnerHint::new("SELECT owner FROM archive_prefs"),
        }
    }
}

/// Requests waiting at most for the writer; more, and callers wait (backpressure).
const QUEUE_CAPACITY: usize = 1024;
/// Requests per transaction at most.
const MAX_BATCH: usize = 256;
/// Rows per statement and per transaction of a bulk insert.
const BULK_ROWS_PER_STATEMENT: usize = 500;
const BULK_ROWS_PER_TRANSACTION: usize = 10_000;

struct Request {
    /// Empty: a barrier, answered once everything queued before it is committed.
    rows: Vec<NewArchived>,
    reply: oneshot::Sender<Result<()>>,
}

/// Rows given to the writer; [`PendingArchive::outcome`] waits for their commit.
pub struct PendingArchive(oneshot::Receiver<Result<()>>);

impl PendingArchive {
    pub async fn outcome(self) -> Result<()> {
        self.0.await.unwrap_or_else(|_| Err(StorageError::Batch("the archive writer stopped".into())))
    }
}

/// Only for an account that exists: a row for an account deleted while its message was
/// queued would fail the foreign key, and with it the whole group's transaction.
const INSERT: &str = "INSERT INTO archive_messages (ts, owner, id, with_bare, with_resource, stanza) \
                      SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM accounts WHERE jid = $2)";
const ADD_USAGE: &str = "INSERT INTO archive_usage (owner, messages) VALUES ($1, $2) \
                         ON CONFLICT (owner) DO UPDATE SET messages = archive_usage.messages + excluded.messages";

/// The bare and resource parts of the other party, as stored.
fn with_parts(with: &Jid) -> (String, String) {
    (with.to_bare().to_string(), with.resource().map(|r| r.as_str().to_string()).unwrap_or_default())
}

fn is_unique_violation(e: &StorageError) -> bool {
    matches!(e, StorageError::Database(sqlx::Error::Database(d)) if d.is_unique_violation())
}

impl ArchiveStore {
    fn shared(&self) -> &Shared {
        &self.db.archive
    }

    fn is_sqlite(&self) -> bool {
        matches!(self.db.pool, super::Pool::Sqlite(_))
    }

    /// Queue rows (committed together, in order, after everything queued before them)
    /// without waiting for the commit.
    pub async fn enqueue(&self, rows: Vec<NewArchived>) -> PendingArchive {
        self.send(rows).await
    }

    /// Archive rows and wait until they are committed.
    pub async fn store(&self, rows: Vec<NewArchived>) -> Result<()> {
        self.enqueue(rows).await.outcome().await
    }

    /// Wait until everything queued so far is committed (or has failed).
    pub async fn committed(&self) {
        if self.shared().in_flight.load(Ordering::Acquire) > 0 {
            let _ = self.send(Vec::new()).await.outcome().await;
        }
    }

    async fn send(&self, rows: Vec<NewArchived>) -> PendingArchive {
        let shared = self.shared();
        let sender = shared.sender.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
            tokio::spawn(write_batches(self.db.clone(), rx));
            tx
        });
        let (reply, outcome) = oneshot::channel();
        shared.in_flight.fetch_add(1, Ordering::AcqRel);
        if let Err(mpsc::error::SendError(request)) = sender.send(Request { rows, reply }).await {
            finish(shared, request, Err(StorageError::Batch("the archive writer stopped".into())));
        }
        PendingArchive(outcome)
    }

    /// Read the newest position once, so that positions keep increasing across restarts
    /// even if the clock went back.
    async fn load_clock(&self) -> Result<()> {
        self.shared().clock_loaded.get_or_try_init(|| self.refresh_clock()).await.map(|_| ())
    }

    async fn refresh_clock(&self) -> Result<()> {
        let newest: Option<i64> =
            on_pool!(self.db, |pool| sqlx::query_scalar("SELECT MAX(ts) FROM archive_messages").fetch_one(pool).await?);
        if let Some(ts) = newest {
            self.shared().last_ts.fetch_max(ts, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Reserve `n` consecutive positions; returns the first.
    async fn reserve(&self, n: usize) -> Result<i64> {
        self.load_clock().await?;
        let n = i64::try_from(n.max(1)).unwrap_or(i64::MAX);
        let last = &self.shared().last_ts;
        let now = now_micros();
        let mut seen = last.load(Ordering::Acquire);
        loop {
            let first = now.max(seen.saturating_add(1));
            match last.compare_exchange(seen, first + (n - 1), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(first),
                Err(current) => seen = current,
            }
        }
    }

    /// One transaction for the batch. Positions are given here, in queue order. Another
    /// server process writing to the same database could take the same positions: then the
    /// clock is read again and the batch tried once more.
    async fn insert_batch(&self, batch: &[Request]) -> Result<()> {
        let rows: Vec<&NewArchived> = batch.iter().flat_map(|r| r.rows.iter()).collect();
        if rows.is_empty() {
            return Ok(());
        }
        let first = self.reserve(rows.len()).await?;
        match self.insert_rows(&rows, first).await {
            Err(e) if is_unique_violation(&e) => {
                self.refresh_clock().await?;
                let first = self.reserve(rows.len()).await?;
                self.insert_rows(&rows, first).await
            }
            other => other,
        }
    }

    async fn insert_rows(&self, rows: &[&NewArchived], first_ts: i64) -> Result<()> {
        on_pool!(self.db, |pool| {
            let mut tx = pool.begin().await?;
            let mut added: HashMap<&str, i64> = HashMap::new();
            for (ts, row) in (first_ts..).zip(rows) {
                let (with_bare, with_resource) = with_parts(&row.with);
                let inserted = sqlx::query(INSERT)
                    .bind(ts)
                    .bind(row.owner.as_str())
                    .bind(row.id.as_str())
                    .bind(with_bare)
                    .bind(with_resource)
                    .bind(row.stanza.as_str())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if inserted == 1 {
                    *added.entry(row.owner.as_str()).or_default() += 1;
                }
            }
            for (owner, n) in added {
                sqlx::query(ADD_USAGE).bind(owner).bind(n).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Archive many messages at once, for provisioning (benchmarks, imports): multi-row
    /// statements, a transaction per 10,000 rows, the running counts kept. Returns the new
    /// archive ids in order. The owners must exist.
    pub async fn insert_bulk(&self, messages: &[BulkMessage]) -> Result<Vec<String>> {
        let mut ids = Vec::with_capacity(messages.len());
        for chunk in messages.chunks(BULK_ROWS_PER_TRANSACTION) {
            let unstamped = chunk.iter().filter(|m| m.at_micros.is_none()).count();
            let mut next = if unstamped > 0 { self.reserve(unstamped).await? } else { 0 };
            let rows: Vec<(i64, String, &BulkMessage)> = chunk
                .iter()
                .map(|m| {
                    let ts = m.at_micros.unwrap_or_else(|| {
                        next += 1;
                        next - 1
                    });
                    (ts, new_archive_id(), m)
                })
                .collect();
            if let Some(max) = rows.iter().map(|r| r.0).max() {
                self.shared().last_ts.fetch_max(max, Ordering::AcqRel);
            }
            let mut added: HashMap<&str, i64> = HashMap::new();
            for (_, _, m) in &rows {
                *added.entry(m.owner.as_str()).or_default() += 1;
            }
            on_pool!(self.db, |pool| {
                let mut tx = pool.begin().await?;
                for part in rows.chunks(BULK_ROWS_PER_STATEMENT) {
                    let mut sql = String::from("INSERT INTO archive_messages (ts, owner, id, with_bare, with_resource, stanza) VALUES ");
                    for i in 0..part.len() {
                        let b = i * 6;
                        if i > 0 {
                            sql.push(',');
                        }
                        sql.push_str(&format!("(${}, ${}, ${}, ${}, ${}, ${})", b + 1, b + 2, b + 3, b + 4, b + 5, b + 6));
                    }
                    let mut query = sqlx::query(AssertSqlSafe(sql));
                    for (ts, id, m) in part {
                        let (with_bare, with_resource) = with_parts(&m.with);
                        query = query.bind(*ts).bind(m.owner.as_str()).bind(id.as_str()).bind(with_bare).bind(with_resource).bind(m.stanza.as_str());
                    }
                    query.execute(&mut *tx).await?;
                }
                for (owner, n) in &added {
                    sqlx::query(ADD_USAGE).bind(*owner).bind(*n).execute(&mut *tx).await?;
                }
                tx.commit().await?;
            });
            ids.extend(rows.into_iter().map(|(_, id, _)| id));
        }
        Ok(ids)
    }

    /// The position of an archived message, if the archive has it.
    pub async fn position(&self, owner: &BareJid, id: &str) -> Result<Option<i64>> {
        on_pool!(self.db, |pool| {
            Ok(sqlx::query_scalar("SELECT ts FROM archive_messages WHERE owner = $1 AND id = $2")
                .bind(owner.as_str())
                .bind(id)
                .fetch_optional(pool)
                .await?)
        })
    }

    /// How many of `ids` (distinct) the archive has.
    pub async fn count_present(&self, owner: &BareJid, ids: &[String]) -> Result<usize> {
        let mut unique: Vec<&str> = ids.iter().map(String::as_str).collect();
        unique.sort_unstable();
        unique.dedup();
        if unique.is_empty() {
            return Ok(0);
        }
        let mut sql = String::from("SELECT COUNT(*) FROM archive_messages WHERE owner = $1 AND id IN (");
        push_placeholders(&mut sql, 2, unique.len());
        sql.push(')');
        let n: i64 = on_pool!(self.db, |pool| {
            let mut query = sqlx::query_scalar(AssertSqlSafe(sql)).bind(owner.as_str());
            for id in &unique {
                query = query.bind(*id);
            }
            query.fetch_one(pool).await?
        });
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// The statement of a page. On SQLite it names its index: without statistics, SQLite
    /// 3.51 reads (owner, ts) for a query by `with`, filtering an account's whole archive
    /// for one contact's messages, when (owner, with_bare, ts) reads just them.
    fn page_sql(range: &ArchiveRange, newest_first: bool, offset: bool, sqlite: bool) -> String {
        let index = match (sqlite, range.ids.is_empty(), range.with.is_some()) {
            (true, true, true) => " INDEXED BY archive_messages_with",
            (true, true, false) => " INDEXED BY archive_messages_owner",
            _ => "",
        };
        let mut sql = format!("SELECT ts, id, stanza FROM archive_messages{index} WHERE owner = $1 AND ts >= $2 AND ts <= $3");
        let mut next = 4;
        if let Some(with) = &range.with {
            sql.push_str(&format!(" AND with_bare = ${next}"));
            next += 1;
            if with.resource().is_some() {
                sql.push_str(&format!(" AND with_resource = ${next}"));
                next += 1;
            }
        }
        if !range.ids.is_empty() {
            sql.push_str(" AND id IN (");
            push_placeholders(&mut sql, next, range.ids.len());
            sql.push(')');
            next += range.ids.len();
        }
        sql.push_str(if newest_first { " ORDER BY ts DESC" } else { " ORDER BY ts ASC" });
        sql.push_str(&format!(" LIMIT ${next}"));
        if offset {
            sql.push_str(&format!(" OFFSET ${}", next + 1));
        }
        sql
    }

    /// Up to `limit` messages of `range`, oldest first or newest first, skipping `offset`.
    pub async fn page(&self, owner: &BareJid, range: &ArchiveRange, newest_first: bool, limit: usize, offset: usize) -> Result<Vec<ArchivedMessage>> {
        if range.from_ts > range.to_ts || limit == 0 {
            return Ok(Vec::new());
        }
        let sql = Self::page_sql(range, newest_first, offset > 0, self.is_sqlite());
        let with = range.with.as_ref().map(with_parts);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        on_pool!(self.db, |pool| {
            let mut query = sqlx::query(AssertSqlSafe(sql)).bind(owner.as_str()).bind(range.from_ts).bind(range.to_ts);
            if let Some((bare, resource)) = &with {
                query = query.bind(bare.as_str());
                if !resource.is_empty() {
                    query = query.bind(resource.as_str());
                }
            }
            for id in &range.ids {
                query = query.bind(id.as_str());
            }
            query = query.bind(limit);
            if offset > 0 {
                query = query.bind(offset);
            }
            let rows = query.fetch_all(pool).await?;
            rows.iter()
                .map(|r| Ok(ArchivedMessage { ts: r.try_get("ts")?, id: r.try_get("id")?, stanza: r.try_get("stanza")? }))
                .collect::<Result<_>>()
        })
    }

    /// The query plan of [`ArchiveStore::page`] as the database reports it (SQLite's
    /// `EXPLAIN QUERY PLAN`, PostgreSQL's `EXPLAIN`), one step per line: for the tests that
    /// check that pages are index range reads.
    #[doc(hidden)]
    pub async fn page_plan(&self, owner: &BareJid, range: &ArchiveRange, newest_first: bool, limit: usize) -> Result<String> {
        let sql = Self::page_sql(range, newest_first, false, self.is_sqlite());
        let with = range.with.as_ref().map(with_parts);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        macro_rules! bind_all {
            ($query:expr) => {{
                let mut query = $query.bind(owner.as_str()).bind(range.from_ts).bind(range.to_ts);
                if let Some((bare, resource)) = &with {
                    query = query.bind(bare.as_str());
                    if !resource.is_empty() {
                        query = query.bind(resource.as_str());
                    }
                }
                for id in &range.ids {
                    query = query.bind(id.as_str());
                }
                query.bind(limit)
            }};
        }
        match &self.db.pool {
            super::Pool::Sqlite(pool) => {
                let rows = bind_all!(sqlx::query(AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))).fetch_all(pool).await?;
                rows.iter().map(|r| r.try_get::<String, _>("detail").map_err(Into::into)).collect::<Result<Vec<_>>>().map(|v| v.join("\n"))
            }
            super::Pool::Postgres(pool) => {
                let rows = bind_all!(sqlx::query(AssertSqlSafe(format!("EXPLAIN {sql}")))).fetch_all(pool).await?;
                rows.iter().map(|r| r.try_get::<String, _>(0).map_err(Into::into)).collect::<Result<Vec<_>>>().map(|v| v.join("\n"))
            }
        }
    }

    /// Messages in the owner's archive (queued ones included: they are committed first):
    /// a running count, not a COUNT(*).
    pub async fn count(&self, owner: &BareJid) -> Result<i64> {
        self.committed().await;
        on_pool!(self.db, |pool| {
            let n: Option<i64> = sqlx::query_scalar("SELECT messages FROM archive_usage WHERE owner = $1")
                .bind(owner.as_str())
                .fetch_optional(pool)
                .await?;
            Ok(n.unwrap_or(0))
        })
    }

    /// The oldest and the newest message (position and id), `None` for an empty archive;
    /// queued messages count (they are committed first).
    pub async fn bounds(&self, owner: &BareJid) -> Result<Option<((i64, String), (i64, String))>> {
        self.committed().await;
        on_pool!(self.db, |pool| {
            let oldest: Option<(i64, String)> = sqlx::query_as("SELECT ts, id FROM archive_messages WHERE owner = $1 ORDER BY ts ASC LIMIT 1")
                .bind(owner.as_str())
                .fetch_optional(pool)
                .await?;
            let newest: Option<(i64, String)> = sqlx::query_as("SELECT ts, id FROM archive_messages WHERE owner = $1 ORDER BY ts DESC LIMIT 1")
                .bind(owner.as_str())
                .fetch_optional(pool)
                .await?;
            Ok(oldest.zip(newest))
        })
    }

    /// Delete at most `batch` of the oldest messages archived before `before_ts`, in one
    /// transaction (the running counts follow); returns how many went. The oldest go first,
    /// so the archive never has holes (XEP-0313 §3.2).
    pub async fn delete_older_than(&self, before_ts: i64, batch: usize) -> Result<u64> {
        let batch = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
        on_pool!(self.db, |pool| {
            // The DELETE comes first: on SQLite the transaction takes the write lock at once.
            let mut tx = pool.begin().await?;
            let owners: Vec<String> = sqlx::query_scalar(
                "DELETE FROM archive_messages WHERE ts IN (SELECT ts FROM archive_messages WHERE ts < $1 ORDER BY ts LIMIT $2) RETURNING owner",
            )
            .bind(before_ts)
            .bind(batch)
            .fetch_all(&mut *tx)
            .await?;
            let mut removed: HashMap<&str, i64> = HashMap::new();
            for owner in &owners {
                *removed.entry(owner.as_str()).or_default() += 1;
            }
            for (owner, n) in removed {
                sqlx::query("UPDATE archive_usage SET messages = messages - $2 WHERE owner = $1").bind(owner).bind(n).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(owners.len() as u64)
        })
    }

    /// The account's preferences, `None` when it never set any (most never do: a hint
    /// answers for them without the database).
    pub async fn prefs(&self, owner: &BareJid) -> Result<Option<ArchivePrefs>> {
        let hint = &self.shared().prefs;
        let Some(seen) = hint.may_have(&self.db, owner).await? else { return Ok(None) };
        let found = on_pool!(self.db, |pool| {
            let mode: Option<String> = sqlx::query_scalar("SELECT default_mode FROM archive_prefs WHERE owner = $1")
                .bind(owner.as_str())
                .fetch_optional(pool)
                .await?;
            match mode {
                None => None,
                Some(mode) => {
                    let default = ArchiveDefault::parse(&mode).ok_or_else(|| StorageError::Corrupt(format!("archive default {mode:?}")))?;
                    let rows: Vec<(String, String)> = sqlx::query_as("SELECT rule, jid FROM archive_prefs_jids WHERE owner = $1 ORDER BY rule, jid")
                        .bind(owner.as_str())
                        .fetch_all(pool)
                        .await?;
                    let mut prefs = ArchivePrefs { default, always: Vec::new(), never: Vec::new() };
                    for (rule, jid) in rows {
                        match rule.as_str() {
                            "always" => prefs.always.push(jid),
                            "never" => prefs.never.push(jid),
                            other => return Err(StorageError::Corrupt(format!("archive rule {other:?}"))),
                        }
                    }
                    Some(prefs)
                }
            }
        });
        if found.is_none() {
            hint.found_nothing(owner, seen);
        }
        Ok(found)
    }

    /// Replace the account's preferences.
    pub async fn set_prefs(&self, owner: &BareJid, prefs: &ArchivePrefs) -> Result<()> {
        let _writing = self.shared().prefs.writing(owner);
        on_pool!(self.db, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO archive_prefs (owner, default_mode) VALUES ($1, $2) \
                 ON CONFLICT (owner) DO UPDATE SET default_mode = excluded.default_mode",
            )
            .bind(owner.as_str())
            .bind(prefs.default.as_str())
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM archive_prefs_jids WHERE owner = $1").bind(owner.as_str()).execute(&mut *tx).await?;
            for (rule, jids) in [("always", &prefs.always), ("never", &prefs.never)] {
                for jid in jids {
                    sqlx::query("INSERT INTO archive_prefs_jids (owner, rule, jid) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                        .bind(owner.as_str())
                        .bind(rule)
                        .bind(jid.as_str())
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
            Ok(())
        })
    }
}

/// `$first, $first+1, ...` (`n` of them), comma-separated.
fn push_placeholders(sql: &mut String, first: usize, n: usize) {
    for i in 0..n {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("${}", first + i));
    }
}

/// The writer: takes what is queued, commits it in one transaction, answers each caller.
async fn write_batches(db: Db, mut rx: mpsc::Receiver<Request>) {
    let store = db.archive();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let result = store.insert_batch(&batch).await;
        if let Err(e) = &result {
            tracing::error!(error = %e, rows = batch.iter().map(|r| r.rows.len()).sum::<usize>(), "archive write failed");
        }
        for request in batch.drain(..) {
            let outcome = match &result {
                Ok(()) => Ok(()),
                Err(_) if request.rows.is_empty() => Ok(()),
                Err(e) => Err(StorageError::Batch(e.to_string())),
            };
            finish(&db.archive, request, outcome);
        }
    }
}

fn finish(shared: &Shared, request: Request, outcome: Result<()>) {
    shared.in_flight.fetch_sub(1, Ordering::AcqRel);
    let _ = request.reply.send(outcome);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_128_bits_and_distinct() {
        let a = new_archive_id();
        assert_eq!(a.len(), 22);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'), "{a}");
        assert_ne!(a, new_archive_id());
    }

    #[test]
    fn page_statements() {
        let mut range = ArchiveRange::all();
        assert_eq!(
            ArchiveStore::page_sql(&range, false, false, false),
            "SELECT ts, id, stanza FROM archive_messages WHERE owner = $1 AND ts >= $2 AND ts <= $3 ORDER BY ts ASC LIMIT $4"
        );
        range.with = Some(Jid::new("a@b/c").unwrap());
        range.ids = vec!["x".into(), "y".into()];
        assert_eq!(
            ArchiveStore::page_sql(&range, true, true, false),
            "SELECT ts, id, stanza FROM archive_messages WHERE owner = $1 AND ts >= $2 AND ts <= $3 AND with_bare = $4 \
             AND with_resource = $5 AND id IN ($6, $7) ORDER BY ts DESC LIMIT $8 OFFSET $9"
        );
    }

    async fn db_with(owner: &str) -> Db {
        let db = Db::open("sqlite::memory:", 1).await.unwrap();
        let account = super::super::NewAccount { jid: BareJid::new(owner).unwrap(), credentials: Vec::new() };
        assert!(db.accounts().create(&account).await.unwrap());
        db
    }

    /// Positions increase by at least one per message even when the clock stands still or
    /// goes back, and a new process continues after the newest stored position.
    #[tokio::test]
    async fn positions_increase() {
        let db = db_with("a@x").await;
        let store = db.archive();
        let first = store.reserve(3).await.unwrap();
        let next = store.reserve(1).await.unwrap();
        assert!(next >= first + 3);
        let future = now_micros() + 3_600_000_000;
        let bulk = BulkMessage { owner: BareJid::new("a@x").unwrap(), with: Jid::new("b@x").unwrap(), stanza: "<m/>".into(), at_micros: Some(future) };
        store.insert_bulk(&[bulk]).await.unwrap();
        assert_eq!(store.reserve(1).await.unwrap(), future + 1, "after a position from the future");
        // As after a restart: the clock is read from the table.
        db.archive.last_ts.store(i64::MIN, Ordering::Release);
        store.refresh_clock().await.unwrap();
        assert_eq!(store.reserve(1).await.unwrap(), future + 1, "after the newest stored position");
    }

    /// The statements of a page are index range reads: no table scan, no sort.
    #[tokio::test]
    async fn pages_read_index_ranges() {
        let db = db_with("a@x").await;
        let store = db.archive();
        let owner = BareJid::new("a@x").unwrap();
        let mut range = ArchiveRange::all();
        for newest_first in [false, true] {
            let plan = store.page_plan(&owner, &range, newest_first, 10).await.unwrap();
            assert!(plan.contains("USING INDEX archive_messages_owner") || plan.contains("USING COVERING INDEX archive_messages_owner"), "{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        }
        for with in ["b@x", "b@x/r"] {
            range.with = Some(Jid::new(with).unwrap());
            for newest_first in [false, true] {
                let plan = store.page_plan(&owner, &range, newest_first, 10).await.unwrap();
                assert!(plan.contains("USING INDEX archive_messages_with (owner=? AND with_bare=? AND ts>? AND ts<?)"), "{plan}");
                assert!(!plan.contains("TEMP B-TREE"), "{plan}");
            }
        }
    }
}
