//! The message archive (XEP-0313) and its preferences (XEP-0441).
//!
//! Each archived message has a position `ts`: microseconds since the epoch, given when the
//! message is accepted as max(now, previous + 1), so it is unique, increasing, and the
//! message's timestamp at once. Every query is a range of (owner, ts) or
//! (owner, with_bare, ts) read from an index in either direction: a page at the newest end
//! of a huge archive reads the page, not the archive.
//!
//! The archive id (the XEP-0359 stanza-id) is the position under a keyed permutation of
//! 128-bit blocks ([`IdCipher`]): unique and stable like the position, and, without the key,
//! as unpredictable as random bits and telling nothing (XEP-0359 §6: not the archive's size,
//! not the time). Nothing of it is stored: an id is turned back into its position, and
//! finding the message is a primary-key lookup. (An index of random ids cost half of
//! SQLite's insert rate.)
//!
//! Writes go through one writer per database that commits whatever is queued in one
//! transaction (group commit, as for offline messages): delivery never waits for it, and
//! the caller learns when its rows are durable. Positions and ids are given before, so
//! that a message is delivered with its stanza-id while its row waits for the writer.
//! One server process per database: two would give the same positions.
//!
//! Reads of a SQLite file go around the pool (see `readers.rs`): a lookup of one row (a
//! position, the count, the bounds) on the calling thread, a page or a list of ids on a
//! blocking thread. Writes, and PostgreSQL, go through the pool.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use jid::{BareJid, Jid};
use rusqlite::OptionalExtension;
use sha2::Sha256;
use sqlx::{AssertSqlSafe, Row};
use tokio::sync::{OnceCell, mpsc, oneshot};

use super::hint::OwnerHint;
use super::{Db, Result, StorageError, on_pool};
use crate::xml::{self, Serialised};

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

/// A position in the archive and the id clients know it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub ts: i64,
    pub id: String,
}

/// A message to archive for `owner`, the other party being `with`.
#[derive(Debug, Clone)]
pub struct NewArchived {
    pub owner: BareJid,
    /// From [`ArchiveStore::allocate`].
    pub ts: i64,
    pub with: Jid,
    /// The message, serialised: stored as it is, and written into a query's results so.
    pub stanza: Serialised,
}

/// A message for [`ArchiveStore::insert_bulk`].
#[derive(Debug, Clone)]
pub struct BulkMessage {
    pub owner: BareJid,
    pub with: Jid,
    /// The message: stored as the server serialises it after parsing it (as it is if it does
    /// not parse, and then parsed by each query that reads it).
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
    /// Whether `stanza` is known to be what [`Serialised::of`] made: set only here, from the
    /// row's flag (rows archived before the flag are not known to be).
    serialised: bool,
}

impl ArchivedMessage {
    /// Whether the stanza is known to be the server's own serialisation of the message.
    pub fn is_serialised(&self) -> bool {
        self.serialised
    }

    /// The stanza: as the server serialised it, to be written out as it is, when it is known
    /// to be that; else the stored text, to be parsed.
    pub fn into_stanza(self) -> std::result::Result<Serialised, String> {
        if self.serialised { Ok(Serialised::known(self.stanza)) } else { Err(self.stanza) }
    }
}

/// Which messages of an archive a query covers.
#[derive(Debug, Clone)]
pub struct ArchiveRange {
    /// The other party: a bare JID matches it with any resource, a full JID only itself.
    pub with: Option<Jid>,
    /// Positions from and to, both included.
    pub from_ts: i64,
    pub to_ts: i64,
    /// Only these positions (none: any); see [`ArchiveStore::positions`].
    pub only: Vec<i64>,
}

impl ArchiveRange {
    /// Everything.
    pub fn all() -> ArchiveRange {
        ArchiveRange { with: None, from_ts: i64::MIN, to_ts: i64::MAX, only: Vec::new() }
    }
}

/// The keyed permutation between positions and ids: a four-round Feistel network over the
/// two 64-bit halves of a block, HMAC-SHA-256 as the round function (Luby-Rackoff: a
/// pseudorandom permutation when the round function is a pseudorandom function). The block
/// is a fixed tag and the position, so an id that was not made here is recognised as such
/// without a lookup (but for a chance of 2^-64).
///
/// HMAC is computed on SHA-256's compression function directly (RFC 2104): the key's inner
/// and outer states are computed once, and a round is then exactly two compressions, one
/// block each, without the buffering and copying of a general HMAC. A page of results
/// needs an id for each message, four rounds each.
#[derive(Clone)]
pub(super) struct IdCipher {
    /// SHA-256's state after the block of the key XOR ipad, and after the key XOR opad.
    inner: [u32; 8],
    outer: [u32; 8],
}

/// SHA-256's initial state (FIPS 180-4 §5.3.3).
const SHA256_IV: [u32; 8] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

/// "STARLING": the upper half of every block.
const ID_TAG: u64 = 0x5354_4152_4c49_4e47;
const ROUNDS: u8 = 4;

impl std::fmt::Debug for IdCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdCipher")
    }
}

impl IdCipher {
    fn new(key: &[u8]) -> IdCipher {
        use sha2::Digest;
        // A key longer than a block is replaced by its hash; a shorter one padded with zeros.
        let mut block = [0u8; 64];
        if key.len() > 64 {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let keyed = |pad: u8| {
            let mut state = SHA256_IV;
            sha2::block_api::compress256(&mut state, &[block.map(|b| b ^ pad)]);
            state
        };
        IdCipher { inner: keyed(0x36), outer: keyed(0x5c) }
    }

    /// HMAC-SHA-256(key, [i] ‖ half), its first 64 bits.
    fn round(&self, i: u8, half: u64) -> u64 {
        // The message (9 bytes) after the key's block, padded: 0x80, zeros, and the length
        // in bits of all that was hashed (64 + 9 bytes).
        let mut block = [0u8; 64];
        block[0] = i;
        block[1..9].copy_from_slice(&half.to_be_bytes());
        block[9] = 0x80;
        block[56..].copy_from_slice(&((64u64 + 9) * 8).to_be_bytes());
        let mut inner = self.inner;
        sha2::block_api::compress256(&mut inner, &[block]);
        // The inner hash (32 bytes) after the key's other block, padded alike.
        let mut block = [0u8; 64];
        for (chunk, word) in block[..32].chunks_exact_mut(4).zip(inner) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        block[32] = 0x80;
        block[56..].copy_from_slice(&((64u64 + 32) * 8).to_be_bytes());
        let mut outer = self.outer;
        sha2::block_api::compress256(&mut outer, &[block]);
        (u64::from(outer[0]) << 32) | u64::from(outer[1])
    }

    fn id(&self, ts: i64) -> String {
        use base64::Engine;
        let (mut l, mut r) = (ID_TAG, ts as u64);
        for i in 0..ROUNDS {
            (l, r) = (r, l ^ self.round(i, r));
        }
        let mut block = [0u8; 16];
        block[..8].copy_from_slice(&l.to_be_bytes());
        block[8..].copy_from_slice(&r.to_be_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(block)
    }

    /// The position an id stands for; `None` for anything this key did not make.
    fn position(&self, id: &str) -> Option<i64> {
        use base64::Engine;
        if id.len() != 22 {
            return None;
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(id).ok()?;
        let block: [u8; 16] = bytes.try_into().ok()?;
        let mut l = u64::from_be_bytes(block[..8].try_into().ok()?);
        let mut r = u64::from_be_bytes(block[8..].try_into().ok()?);
        for i in (0..ROUNDS).rev() {
            (l, r) = (r ^ self.round(i, l), l);
        }
        (l == ID_TAG).then_some(r as i64)
    }
}

#[derive(Clone, Debug)]
pub struct ArchiveStore {
    pub(super) db: Db,
}

/// State shared by every handle of one database: the writer's queue, the position clock,
/// the id key, and which accounts have preferences.
#[derive(Debug)]
pub(super) struct Shared {
    sender: OnceLock<mpsc::Sender<Request>>,
    /// Queued and not yet answered: lets `committed` skip the writer when nothing waits.
    in_flight: AtomicUsize,
    /// The last position given.
    last_ts: AtomicI64,
    /// Read once: the id key, made if there is none, and the newest stored position.
    ready: OnceCell<IdCipher>,
    prefs: OwnerHint,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            sender: OnceLock::new(),
            in_flight: AtomicUsize::new(0),
            last_ts: AtomicI64::new(i64::MIN),
            ready: OnceCell::new(),
            prefs: OwnerHint::new("SELECT owner FROM archive_prefs"),
        }
    }
}

/// Requests waiting at most for the writer; more, and callers wait (backpressure). Large,
/// because every chat message between two accounts is a request: bursts must not make
/// senders wait on the disk.
const QUEUE_CAPACITY: usize = 8192;
/// How long the writer gathers rows before it commits them (see `write_batches`).
const COMMIT_WINDOW: std::time::Duration = std::time::Duration::from_millis(10);
/// Requests per transaction at most.
const MAX_BATCH: usize = 2048;
/// A row of a page as read: position, stanza, whether the stanza is serialised.
type PageRow = (i64, String, bool);
/// Rows per transaction of a bulk insert.
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

/// Statement sizes, in rows: a group of any size is written with statements of these sizes
/// only (greedily, largest first), so that every statement text is one the connection has
/// already prepared. Preparing a statement of hundreds of rows costs more than running it.
const STATEMENT_ROWS: [usize; 5] = [256, 64, 16, 4, 1];

/// Split `n` into [`STATEMENT_ROWS`] sizes, largest first.
fn statement_sizes(mut n: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        let size = *STATEMENT_ROWS.iter().find(|&&s| s <= n)?;
        n -= size;
        Some(size)
    })
}

/// `items` in consecutive parts of [`STATEMENT_ROWS`] sizes, one statement each.
fn statement_parts<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    statement_sizes(items.len()).map(move |size| {
        let (part, tail) = rest.split_at(size);
        rest = tail;
        part
    })
}

/// `n` groups of `width` placeholders: `(?, ?), (?, ?)` on SQLite, `($1, $2), ($3, $4)` on
/// PostgreSQL. Plain `?` because SQLite finds a numbered parameter's index by a linear
/// search of the statement's names, for every parameter bound.
fn value_groups(n: usize, width: usize, sqlite: bool) -> String {
    let mut sql = String::new();
    for i in 0..n {
        sql.push_str(if i == 0 { "(" } else { ", (" });
        for j in 0..width {
            if j > 0 {
                sql.push_str(", ");
            }
            if sqlite {
                sql.push('?');
            } else {
                sql.push_str(&format!("${}", i * width + j + 1));
            }
        }
        sql.push(')');
    }
    sql
}

/// Insert `n` rows given as 5 parameters each (their stanzas serialised), only for owners that exist, accounts or
/// rooms (a row for an owner deleted while its message was queued would outlive the
/// deletion, which removes the archive with the owner); returns the owner of each row
/// inserted.
///
/// On PostgreSQL the owner's row is locked as a foreign key check would lock it (`FOR KEY
/// SHARE`), until the commit: a deletion running at the same time either waits for this
/// write and then removes its rows, or has removed the owner and this write skips them.
/// SQLite runs one writing transaction at a time, so there is no such interleaving.
fn insert_sql(n: usize, sqlite: bool) -> &'static str {
    static TEXTS: OnceLock<[[String; STATEMENT_ROWS.len()]; 2]> = OnceLock::new();
    sized_statement(&TEXTS, n, sqlite, |n, sqlite| {
        let lock = if sqlite { "" } else { " FOR KEY SHARE" };
        format!(
            "WITH v (ts, owner, with_bare, with_resource, stanza) AS (VALUES {}) \
             INSERT INTO archive_messages (ts, owner, with_bare, with_resource, stanza, serialised) \
             SELECT ts, owner, with_bare, with_resource, stanza, TRUE FROM v \
             WHERE EXISTS (SELECT 1 FROM accounts WHERE accounts.jid = v.owner{lock}) \
             OR EXISTS (SELECT 1 FROM muc_rooms WHERE muc_rooms.jid = v.owner{lock}) \
             RETURNING owner",
            value_groups(n, 5, sqlite)
        )
    })
}

/// Insert `n` rows (6 parameters each) whose owners exist: the bulk path.
fn bulk_insert_sql(n: usize, sqlite: bool) -> &'static str {
    static TEXTS: OnceLock<[[String; STATEMENT_ROWS.len()]; 2]> = OnceLock::new();
    sized_statement(&TEXTS, n, sqlite, |n, sqlite| {
        format!(
            "INSERT INTO archive_messages (ts, owner, with_bare, with_resource, stanza, serialised) VALUES {}",
            value_groups(n, 6, sqlite)
        )
    })
}

/// Add to the running counts of `n` owners (2 parameters each: owner, added).
fn usage_sql(n: usize, sqlite: bool) -> &'static str {
    static TEXTS: OnceLock<[[String; STATEMENT_ROWS.len()]; 2]> = OnceLock::new();
    sized_statement(&TEXTS, n, sqlite, |n, sqlite| {
        format!(
            "INSERT INTO archive_usage (owner, messages) VALUES {} \
             ON CONFLICT (owner) DO UPDATE SET messages = archive_usage.messages + excluded.messages",
            value_groups(n, 2, sqlite)
        )
    })
}

/// The text of a statement for `n` rows (one of [`STATEMENT_ROWS`]), made once per size and
/// backend: the writer runs them for every group.
fn sized_statement(
    texts: &'static OnceLock<[[String; STATEMENT_ROWS.len()]; 2]>,
    n: usize,
    sqlite: bool,
    make: fn(usize, bool) -> String,
) -> &'static str {
    let texts = texts.get_or_init(|| [false, true].map(|sqlite| STATEMENT_ROWS.map(|n| make(n, sqlite))));
    let i = STATEMENT_ROWS.iter().position(|&s| s == n).expect("a statement size");
    &texts[usize::from(sqlite)][i]
}

/// Add to the running counts: statements of [`STATEMENT_ROWS`] sizes for the owners of a
/// transaction.
macro_rules! add_usage {
    ($conn:expr, $added:expr, $sqlite:expr) => {{
        let added: Vec<(&str, i64)> = $added;
        for part in statement_parts(&added) {
            let mut query = sqlx::query(AssertSqlSafe(usage_sql(part.len(), $sqlite)));
            for (owner, n) in part {
                query = query.bind(*owner).bind(*n);
            }
            query.execute(&mut *$conn).await?;
        }
    }};
}

/// Inside a transaction: delete an owner's whole archive, its messages and its running
/// count. The owner's deletion runs it in the same transaction, after deleting the owner's
/// own row (see `insert_sql`: on PostgreSQL that waits for an archive write in progress).
/// Preferences go with an account by their foreign key.
macro_rules! delete_archive {
    ($tx:expr, $owner:expr) => {{
        let owner: &str = $owner;
        sqlx::query("DELETE FROM archive_messages WHERE owner = $1").bind(owner).execute(&mut *$tx).await?;
        sqlx::query("DELETE FROM archive_usage WHERE owner = $1").bind(owner).execute(&mut *$tx).await?;
    }};
}
pub(super) use delete_archive;

/// The bare and resource parts of the other party, as stored.
fn with_parts(with: &Jid) -> (String, String) {
    (with.to_bare().to_string(), with.resource().map(|r| r.as_str().to_string()).unwrap_or_default())
}

impl ArchiveStore {
    fn shared(&self) -> &Shared {
        &self.db.archive
    }

    fn is_sqlite(&self) -> bool {
        matches!(self.db.pool, super::Pool::Sqlite(_))
    }

    /// Read the id key (made at first use) and the newest position, once: positions keep
    /// increasing across restarts even if the clock went back. The server calls this at
    /// start, so that the first message does not wait for it.
    pub async fn prepare(&self) -> Result<()> {
        self.cipher().await.map(|_| ())
    }

    async fn cipher(&self) -> Result<&IdCipher> {
        self.shared()
            .ready
            .get_or_try_init(|| async {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).expect("the OS random source works");
                let (key, newest): (Vec<u8>, Option<i64>) = on_pool!(self.db, |pool| {
                    sqlx::query("INSERT INTO archive_secret (singleton, secret) VALUES (1, $1) ON CONFLICT (singleton) DO NOTHING")
                        .bind(&key[..])
                        .execute(pool)
                        .await?;
                    let key: Vec<u8> = sqlx::query_scalar("SELECT secret FROM archive_secret WHERE singleton = 1").fetch_one(pool).await?;
                    let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(ts) FROM archive_messages").fetch_one(pool).await?;
                    (key, newest)
                });
                if let Some(ts) = newest {
                    self.shared().last_ts.fetch_max(ts, Ordering::AcqRel);
                }
                Ok(IdCipher::new(&key))
            })
            .await
    }

    /// Reserve `n` consecutive positions; returns the first.
    async fn reserve(&self, n: usize) -> Result<i64> {
        self.cipher().await?;
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

    /// A new position, and its id, for a message being accepted now.
    pub async fn allocate(&self) -> Result<Slot> {
        let ts = self.reserve(1).await?;
        Ok(Slot { ts, id: self.cipher().await?.id(ts) })
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

    /// Archive many messages at once, for provisioning (benchmarks, imports): multi-row
    /// statements, a transaction per 10,000 rows, the running counts kept. Returns the new
    /// archive ids in order. The owners must exist (accounts or rooms): nothing checks it
    /// here, and rows of an owner that does not exist would stay until retention.
    pub async fn insert_bulk(&self, messages: &[BulkMessage]) -> Result<Vec<String>> {
        let cipher = self.cipher().await?.clone();
        let sqlite = self.is_sqlite();
        let mut ids = Vec::with_capacity(messages.len());
        for chunk in messages.chunks(BULK_ROWS_PER_TRANSACTION) {
            let unstamped = chunk.iter().filter(|m| m.at_micros.is_none()).count();
            let mut next = if unstamped > 0 { self.reserve(unstamped).await? } else { 0 };
            let rows: Vec<(i64, &BulkMessage, Option<Serialised>)> = chunk
                .iter()
                .map(|m| {
                    let ts = m.at_micros.unwrap_or_else(|| {
                        next += 1;
                        next - 1
                    });
                    (ts, m, xml::parse_element(&m.stanza).ok().map(|el| Serialised::of(&el)))
                })
                .collect();
            if let Some(max) = rows.iter().map(|r| r.0).max() {
                self.shared().last_ts.fetch_max(max, Ordering::AcqRel);
            }
            let mut added: HashMap<&str, i64> = HashMap::new();
            for (_, m, _) in &rows {
                *added.entry(m.owner.as_str()).or_default() += 1;
            }
            on_pool!(self.db, |pool| {
                let mut tx = pool.begin().await?;
                for part in statement_parts(&rows) {
                    let mut query = sqlx::query(AssertSqlSafe(bulk_insert_sql(part.len(), sqlite)));
                    for (ts, m, stanza) in part {
                        let (with_bare, with_resource) = with_parts(&m.with);
                        let (text, serialised) = match stanza {
                            Some(s) => (s.as_str(), true),
                            None => (m.stanza.as_str(), false),
                        };
                        query = query.bind(*ts).bind(m.owner.as_str()).bind(with_bare).bind(with_resource).bind(text).bind(serialised);
                    }
                    query.execute(&mut *tx).await?;
                }
                add_usage!(tx, added.iter().map(|(o, n)| (*o, *n)).collect(), sqlite);
                tx.commit().await?;
            });
            ids.extend(rows.iter().map(|(ts, _, _)| cipher.id(*ts)));
        }
        Ok(ids)
    }

    /// The position of an archived message, if the owner's archive has it.
    pub async fn position(&self, owner: &BareJid, id: &str) -> Result<Option<i64>> {
        let Some(ts) = self.cipher().await?.position(id) else { return Ok(None) };
        let sql = "SELECT ts FROM archive_messages WHERE ts = $1 AND owner = $2";
        if let Some(read) = self.db.read_here(|c| c.prepare_cached(sql)?.query_row((ts, owner.as_str()), |r| r.get(0)).optional()) {
            return read;
        }
        on_pool!(self.db, |pool| Ok(sqlx::query_scalar(sql).bind(ts).bind(owner.as_str()).fetch_optional(pool).await?))
    }

    /// The positions of `ids` (duplicates once), or `None` if the archive lacks any of them.
    pub async fn positions(&self, owner: &BareJid, ids: &[String]) -> Result<Option<Vec<i64>>> {
        let cipher = self.cipher().await?;
        let mut wanted = Vec::with_capacity(ids.len());
        for id in ids {
            match cipher.position(id) {
                Some(ts) => wanted.push(ts),
                None => return Ok(None),
            }
        }
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.is_empty() {
            return Ok(Some(wanted));
        }
        let mut sql = String::from("SELECT COUNT(*) FROM archive_messages WHERE owner = $1 AND ts IN (");
        push_placeholders(&mut sql, 2, wanted.len());
        sql.push(')');
        // A row per id, up to a page of them: off the runtime's thread.
        let read = {
            let (sql, owner, wanted) = (sql.clone(), owner.to_string(), wanted.clone());
            move |c: &rusqlite::Connection| {
                let mut params: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(1 + wanted.len());
                params.push(&owner);
                params.extend(wanted.iter().map(|ts| ts as &dyn rusqlite::ToSql));
                c.prepare_cached(&sql)?.query_row(params.as_slice(), |r| r.get(0))
            }
        };
        let found: i64 = match self.db.read_blocking(read).await {
            Some(read) => read?,
            None => on_pool!(self.db, |pool| {
                let mut query = sqlx::query_scalar(AssertSqlSafe(sql)).bind(owner.as_str());
                for ts in &wanted {
                    query = query.bind(*ts);
                }
                query.fetch_one(pool).await?
            }),
        };
        Ok((usize::try_from(found).ok() == Some(wanted.len())).then_some(wanted))
    }

    /// One archived message of the owner's, by id (queued messages included: they are
    /// committed first), `None` if the owner's archive has no such message.
    pub async fn message(&self, owner: &BareJid, id: &str) -> Result<Option<ArchivedMessage>> {
        let Some(ts) = self.cipher().await?.position(id) else { return Ok(None) };
        self.committed().await;
        let range = ArchiveRange { with: None, from_ts: ts, to_ts: ts, only: Vec::new() };
        Ok(self.page(owner, &range, false, 1, 0).await?.pop())
    }

    /// Replace one archived message of the owner's with `stanza` (a tombstone, XEP-0424
    /// §5), in place: the same id, position and other party. Messages queued before it are
    /// committed first (the one replaced may be among them). Whether there was one to
    /// replace; when this returns, the replacement is committed.
    pub async fn replace(&self, owner: &BareJid, id: &str, stanza: &Serialised) -> Result<bool> {
        let Some(ts) = self.cipher().await?.position(id) else { return Ok(false) };
        self.committed().await;
        // The replacement is the server's own serialisation: queries write it out as it is.
        let sql = "UPDATE archive_messages SET stanza = $1, serialised = $2 WHERE ts = $3 AND owner = $4";
        let changed = on_pool!(self.db, |pool| {
            sqlx::query(sql).bind(stanza.as_str()).bind(true).bind(ts).bind(owner.as_str()).execute(pool).await?.rows_affected()
        });
        Ok(changed > 0)
    }

    /// The statement of a page. On SQLite it names its index: without statistics, SQLite
    /// 3.51 reads (owner, ts) for a query by `with`, filtering an account's whole archive
    /// for one contact's messages, when (owner, with_bare, ts) reads just them. And on SQLite
    /// LIMIT and OFFSET are in the text, not parameters: the planner reads a bound LIMIT's
    /// value, so that binding it again (each run of a prepared statement) expires the
    /// statement and the next step prepares it again, as costly as the whole page read.
    /// Pages have a few sizes (chunks of 50, and smaller), so a few texts cover them.
    fn page_sql(range: &ArchiveRange, newest_first: bool, limit: i64, offset: i64, sqlite: bool) -> String {
        let index = match (sqlite, range.only.is_empty(), range.with.is_some()) {
            (true, true, true) => " INDEXED BY archive_messages_with",
            (true, true, false) => " INDEXED BY archive_messages_owner",
            _ => "",
        };
        let mut sql = format!("SELECT ts, stanza, serialised FROM archive_messages{index} WHERE owner = $1 AND ts >= $2 AND ts <= $3");
        let mut next = 4;
        if let Some(with) = &range.with {
            sql.push_str(&format!(" AND with_bare = ${next}"));
            next += 1;
            if with.resource().is_some() {
                sql.push_str(&format!(" AND with_resource = ${next}"));
                next += 1;
            }
        }
        if !range.only.is_empty() {
            sql.push_str(" AND ts IN (");
            push_placeholders(&mut sql, next, range.only.len());
            sql.push(')');
            next += range.only.len();
        }
        sql.push_str(if newest_first { " ORDER BY ts DESC" } else { " ORDER BY ts ASC" });
        if sqlite {
            sql.push_str(&format!(" LIMIT {limit}"));
            if offset > 0 {
                sql.push_str(&format!(" OFFSET {offset}"));
            }
        } else {
            sql.push_str(&format!(" LIMIT ${next}"));
            if offset > 0 {
                sql.push_str(&format!(" OFFSET ${}", next + 1));
            }
        }
        sql
    }

    /// Up to `limit` messages of `range`, oldest first or newest first, skipping `offset`.
    pub async fn page(&self, owner: &BareJid, range: &ArchiveRange, newest_first: bool, limit: usize, offset: usize) -> Result<Vec<ArchivedMessage>> {
        if range.from_ts > range.to_ts || limit == 0 {
            return Ok(Vec::new());
        }
        let cipher = self.cipher().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let sql = Self::page_sql(range, newest_first, limit, offset, self.is_sqlite());
        let with = range.with.as_ref().map(with_parts);
        // Fifty rows and the file pages they are on, and their ids: off the runtime's thread.
        let read = {
            let (owner, range, with, cipher) = (owner.to_string(), range.clone(), with.clone(), cipher.clone());
            move |c: &rusqlite::Connection| {
                let mut params: Vec<&dyn rusqlite::ToSql> = vec![&owner, &range.from_ts, &range.to_ts];
                if let Some((bare, resource)) = &with {
                    params.push(bare);
                    if !resource.is_empty() {
                        params.push(resource);
                    }
                }
                params.extend(range.only.iter().map(|ts| ts as &dyn rusqlite::ToSql));
                let mut statement = c.prepare_cached(&sql)?;
                let rows = statement.query_map(params.as_slice(), |r| {
                    let ts = r.get(0)?;
                    Ok(ArchivedMessage { ts, id: cipher.id(ts), stanza: r.get(1)?, serialised: r.get(2)? })
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            }
        };
        if let Some(page) = self.db.read_blocking(read).await {
            return page;
        }
        let sql = Self::page_sql(range, newest_first, limit, offset, self.is_sqlite());
        let rows = self.page_on_pool(owner, range, &sql, with.as_ref(), limit, offset).await?;
        Ok(rows.into_iter().map(|(ts, stanza, serialised)| ArchivedMessage { ts, id: cipher.id(ts), stanza, serialised }).collect())
    }

    /// [`ArchiveStore::page`] through the pool.
    async fn page_on_pool(
        &self,
        owner: &BareJid,
        range: &ArchiveRange,
        sql: &str,
        with: Option<&(String, String)>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<PageRow>> {
        let sql = sql.to_owned();
        Ok(on_pool!(self.db, |pool| {
            let mut query = sqlx::query_as(AssertSqlSafe(sql)).bind(owner.as_str()).bind(range.from_ts).bind(range.to_ts);
            if let Some((bare, resource)) = with {
                query = query.bind(bare.as_str());
                if !resource.is_empty() {
                    query = query.bind(resource.as_str());
                }
            }
            for ts in &range.only {
                query = query.bind(*ts);
            }
            if !self.is_sqlite() {
                query = query.bind(limit);
                if offset > 0 {
                    query = query.bind(offset);
                }
            }
            query.fetch_all(pool).await?
        }))
    }

    /// The query plan of [`ArchiveStore::page`] as the database reports it (SQLite's
    /// `EXPLAIN QUERY PLAN`, PostgreSQL's `EXPLAIN`), one step per line: for the tests that
    /// check that pages are index range reads.
    #[doc(hidden)]
    pub async fn page_plan(&self, owner: &BareJid, range: &ArchiveRange, newest_first: bool, limit: usize) -> Result<String> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = Self::page_sql(range, newest_first, limit, 0, self.is_sqlite());
        let with = range.with.as_ref().map(with_parts);
        macro_rules! bind_all {
            ($query:expr) => {{
                let mut query = $query.bind(owner.as_str()).bind(range.from_ts).bind(range.to_ts);
                if let Some((bare, resource)) = &with {
                    query = query.bind(bare.as_str());
                    if !resource.is_empty() {
                        query = query.bind(resource.as_str());
                    }
                }
                for ts in &range.only {
                    query = query.bind(*ts);
                }
                query
            }};
        }
        let lines: Vec<String> = match &self.db.pool {
            super::Pool::Sqlite(pool) => {
                let rows = bind_all!(sqlx::query(AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))).fetch_all(pool).await?;
                rows.iter().map(|r| r.try_get::<String, _>("detail")).collect::<std::result::Result<_, _>>()?
            }
            super::Pool::Postgres(pool) => {
                let rows = bind_all!(sqlx::query(AssertSqlSafe(format!("EXPLAIN {sql}")))).bind(limit).fetch_all(pool).await?;
                rows.iter().map(|r| r.try_get::<String, _>(0)).collect::<std::result::Result<_, _>>()?
            }
        };
        Ok(lines.join("\n"))
    }

    /// Messages in the owner's archive (queued ones included: they are committed first):
    /// a running count, not a COUNT(*).
    pub async fn count(&self, owner: &BareJid) -> Result<i64> {
        self.committed().await;
        let sql = "SELECT messages FROM archive_usage WHERE owner = $1";
        let n: Option<i64> = match self.db.read_here(|c| c.prepare_cached(sql)?.query_row([owner.as_str()], |r| r.get(0)).optional()) {
            Some(read) => read?,
            None => on_pool!(self.db, |pool| sqlx::query_scalar(sql).bind(owner.as_str()).fetch_optional(pool).await?),
        };
        Ok(n.unwrap_or(0))
    }

    /// The oldest and the newest message (position and id), `None` for an empty archive;
    /// queued messages count (they are committed first).
    pub async fn bounds(&self, owner: &BareJid) -> Result<Option<(Slot, Slot)>> {
        self.committed().await;
        let cipher = self.cipher().await?;
        let oldest_sql = "SELECT ts FROM archive_messages WHERE owner = $1 ORDER BY ts ASC LIMIT 1";
        let newest_sql = "SELECT ts FROM archive_messages WHERE owner = $1 ORDER BY ts DESC LIMIT 1";
        let here = self.db.read_here(|c| {
            let one = |sql| c.prepare_cached(sql)?.query_row([owner.as_str()], |r| r.get(0)).optional();
            Ok((one(oldest_sql)?, one(newest_sql)?))
        });
        let (oldest, newest): (Option<i64>, Option<i64>) = match here {
            Some(read) => read?,
            None => on_pool!(self.db, |pool| {
                let oldest = sqlx::query_scalar(oldest_sql).bind(owner.as_str()).fetch_optional(pool).await?;
                let newest = sqlx::query_scalar(newest_sql).bind(owner.as_str()).fetch_optional(pool).await?;
                (oldest, newest)
            }),
        };
        let slot = |ts: i64| Slot { ts, id: cipher.id(ts) };
        Ok(oldest.zip(newest).map(|(o, n)| (slot(o), slot(n))))
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
///
/// It keeps a connection of its own rather than taking one from the pool for each group: a
/// SQLite connection drops its whole page cache when another connection has written since
/// its last transaction, and the archive's writes touch a leaf of each index per owner, so a
/// writer moving between connections read back most of those leaves for every group. Its
/// cache is larger than the other connections' for the same reason.
async fn write_batches(db: Db, mut rx: mpsc::Receiver<Request>) {
    let sqlite = matches!(db.pool, super::Pool::Sqlite(_));
    let mut batch = Vec::with_capacity(MAX_BATCH);
    on_pool!(db, |pool| {
        // Not with a pool of one or two (an in-memory database has one): the others need them.
        let keep = pool.options().get_max_connections() > 2;
        let mut conn = None;
        loop {
            let received = tokio::select! {
                n = rx.recv_many(&mut batch, MAX_BATCH) => n,
                // Closing the pool waits for every connection to come back, this one too.
                _ = pool.close_event() => 0,
            };
            if received == 0 {
                break;
            }
            // Group commit: what arrives within the window joins the group. Each group
            // rewrites a leaf of both indexes for every account it touches, whole pages into
            // the WAL on SQLite, so rows that share a group share those writes. Only
            // acknowledgements wait for it; delivery does not.
            if batch.iter().any(|r| !r.rows.is_empty()) {
                let deadline = tokio::time::Instant::now() + COMMIT_WINDOW;
                while batch.len() < MAX_BATCH {
                    let room = MAX_BATCH - batch.len();
                    match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room)).await {
                        Ok(n) if n > 0 => {}
                        _ => break,
                    }
                }
            }
            let rows: Vec<&NewArchived> = batch.iter().flat_map(|r| r.rows.iter()).collect();
            let result: Result<()> = async {
                if rows.is_empty() {
                    return Ok(());
                }
                let conn = match &mut conn {
                    Some(conn) => conn,
                    None => {
                        let mut fresh = pool.acquire().await?;
                        if sqlite && keep {
                            sqlx::query(WRITER_CACHE_PRAGMA).execute(&mut *fresh).await?;
                        }
                        conn.insert(fresh)
                    }
                };
                let mut tx = sqlx::Connection::begin(&mut **conn).await?;
                let mut added: HashMap<String, i64> = HashMap::new();
                for part in statement_parts(&rows) {
                    let mut query = sqlx::query_scalar::<_, String>(AssertSqlSafe(insert_sql(part.len(), sqlite)));
                    for row in part {
                        let (with_bare, with_resource) = with_parts(&row.with);
                        query = query.bind(row.ts).bind(row.owner.as_str()).bind(with_bare).bind(with_resource).bind(row.stanza.as_str());
                    }
                    for owner in query.fetch_all(&mut *tx).await? {
                        *added.entry(owner).or_default() += 1;
                    }
                }
                add_usage!(tx, added.iter().map(|(o, n)| (o.as_str(), *n)).collect(), sqlite);
                tx.commit().await?;
                Ok(())
            }
            .await;
            if let Err(e) = &result {
                tracing::error!(error = %e, rows = rows.len(), "archive write failed");
            }
            if result.is_err() || !keep {
                // The connection may be what failed: the next group takes a new one.
                conn = None;
            }
            drop(rows);
            for request in batch.drain(..) {
                let outcome = match &result {
                    Ok(()) => Ok(()),
                    Err(_) if request.rows.is_empty() => Ok(()),
                    Err(e) => Err(StorageError::Batch(e.to_string())),
                };
                finish(&db.archive, request, outcome);
            }
        }
    })
}

/// The writer's page cache: 8 MiB, for the index leaves of the accounts being written to.
const WRITER_CACHE_PRAGMA: &str = "PRAGMA cache_size = -8192";

fn finish(shared: &Shared, request: Request, outcome: Result<()>) {
    shared.in_flight.fetch_sub(1, Ordering::AcqRel);
    let _ = request.reply.send(outcome);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The round function is HMAC-SHA-256 (as the `hmac` crate computes it), for keys of
    /// any length: ids stay what they were.
    #[test]
    fn rounds_are_hmac_sha256() {
        use hmac::{Hmac, KeyInit, Mac};
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for len in [0, 1, 31, 32, 33, 63, 64, 65, 100, 200] {
            let key: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let cipher = IdCipher::new(&key);
            for i in 0..ROUNDS {
                let half = next();
                let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
                mac.update(&[i]);
                mac.update(&half.to_be_bytes());
                let want = u64::from_be_bytes(mac.finalize().into_bytes()[..8].try_into().unwrap());
                assert_eq!(cipher.round(i, half), want, "key of {len} bytes");
            }
        }
        // An id as it was before, from a fixed key.
        assert_eq!(IdCipher::new(b"0123456789abcdef0123456789abcdef").id(1_700_000_000_000_000), "Z1irnqNONGPcY2Yc5LxqPQ");
    }

    /// Ids round-trip to their positions, look random, and nothing else decodes.
    #[test]
    fn ids_are_a_keyed_permutation() {
        let cipher = IdCipher::new(b"0123456789abcdef0123456789abcdef");
        let ts = 1_700_000_000_000_000;
        let (a, b) = (cipher.id(ts), cipher.id(ts + 1));
        assert_eq!(a.len(), 22);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'), "{a}");
        assert_eq!((cipher.position(&a), cipher.position(&b)), (Some(ts), Some(ts + 1)));
        // Neighbouring positions share nothing visible: about half the bits differ.
        use base64::Engine;
        let bits = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).unwrap();
        let differ: u32 = bits(&a).iter().zip(bits(&b)).map(|(x, y)| (x ^ y).count_ones()).sum();
        assert!((32..=96).contains(&differ), "{differ} of 128 bits differ");
        // Another key, a changed id, garbage: not ours.
        assert_eq!(IdCipher::new(b"another key").position(&a), None);
        let mut changed = a.clone().into_bytes();
        changed[3] = if changed[3] == b'A' { b'B' } else { b'A' };
        assert_eq!(cipher.position(std::str::from_utf8(&changed).unwrap()), None);
        for bad in ["", "nope", "28482-98726-73623", "!!!!!!!!!!!!!!!!!!!!!!", &"A".repeat(23)] {
            assert_eq!(cipher.position(bad), None, "{bad}");
        }
        assert_eq!(cipher.position(&cipher.id(i64::MIN)), Some(i64::MIN));
    }

    /// A group of any size is written with statements of the fixed sizes only, every row
    /// once; SQLite gets plain `?` placeholders, PostgreSQL numbered ones.
    #[test]
    fn write_statements() {
        for n in [0, 1, 3, 4, 17, 255, 256, 257, 1000, 2048] {
            let sizes: Vec<usize> = statement_sizes(n).collect();
            assert_eq!(sizes.iter().sum::<usize>(), n);
            assert!(sizes.iter().all(|s| STATEMENT_ROWS.contains(s)), "{sizes:?}");
            assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
        }
        assert_eq!(statement_sizes(37).collect::<Vec<_>>(), vec![16, 16, 4, 1]);
        let items: Vec<usize> = (0..37).collect();
        let parts: Vec<&[usize]> = statement_parts(&items).collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), vec![16, 16, 4, 1]);
        assert_eq!(parts.concat(), items);
        assert_eq!(value_groups(2, 2, true), "(?, ?), (?, ?)");
        assert_eq!(value_groups(2, 2, false), "($1, $2), ($3, $4)");
        assert_eq!(usage_sql(1, false), "INSERT INTO archive_usage (owner, messages) VALUES ($1, $2) \
             ON CONFLICT (owner) DO UPDATE SET messages = archive_usage.messages + excluded.messages");
        assert_eq!(insert_sql(4, true).matches('?').count(), 20);
        assert_eq!(bulk_insert_sql(256, false).matches('$').count(), 1536);
    }

    #[test]
    fn page_statements() {
        let mut range = ArchiveRange::all();
        assert_eq!(
            ArchiveStore::page_sql(&range, false, 10, 0, false),
            "SELECT ts, stanza, serialised FROM archive_messages WHERE owner = $1 AND ts >= $2 AND ts <= $3 ORDER BY ts ASC LIMIT $4"
        );
        assert_eq!(
            ArchiveStore::page_sql(&range, true, 51, 0, true),
            "SELECT ts, stanza, serialised FROM archive_messages INDEXED BY archive_messages_owner \
             WHERE owner = $1 AND ts >= $2 AND ts <= $3 ORDER BY ts DESC LIMIT 51"
        );
        range.with = Some(Jid::new("a@b/c").unwrap());
        range.only = vec![7, 9];
        assert_eq!(
            ArchiveStore::page_sql(&range, true, 10, 20, false),
            "SELECT ts, stanza, serialised FROM archive_messages WHERE owner = $1 AND ts >= $2 AND ts <= $3 AND with_bare = $4 \
             AND with_resource = $5 AND ts IN ($6, $7) ORDER BY ts DESC LIMIT $8 OFFSET $9"
        );
    }

    /// Pages read on a blocking reader are the pool's pages, whatever their shape (filters,
    /// either direction, OFFSET, ids, large messages); and a page's statement is prepared once.
    #[tokio::test]
    async fn pages_on_the_readers_and_on_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&format!("sqlite://{}/a.db", dir.path().display()), 2).await.unwrap();
        let owner = BareJid::new("a@x").unwrap();
        assert!(db.accounts().create(&super::super::NewAccount { jid: owner.clone(), credentials: Vec::new() }).await.unwrap());
        let store = db.archive();
        let base = now_micros() - 1_000_000_000;
        let bulk: Vec<BulkMessage> = (0..3_000)
            .map(|i| BulkMessage {
                owner: owner.clone(),
                with: Jid::new(if i == 0 { "c@y/other" } else if i % 2 == 0 { "c@y/r" } else { "d@y/r" }).unwrap(),
                // The newest hundred are large: 10 KB each.
                stanza: format!("<message xmlns='jabber:client'><body>{i}{}</body></message>", if i >= 2_900 { "x".repeat(10_000) } else { String::new() }),
                at_micros: Some(base + i),
            })
            .collect();
        store.insert_bulk(&bulk).await.unwrap();
        let ts = |page: &[ArchivedMessage]| page.iter().map(|m| m.ts - base).collect::<Vec<_>>();
        let mut ranges = Vec::new();
        for with in [None, Some("c@y"), Some("c@y/other"), Some("d@y/r")] {
            for to_ts in [base + 2_000, i64::MAX] {
                ranges.push(ArchiveRange { with: with.map(|w| Jid::new(w).unwrap()), to_ts, ..ArchiveRange::all() });
            }
        }
        ranges.push(ArchiveRange { only: vec![base + 3, base + 5, base + 2_999], ..ArchiveRange::all() });
        for range in &ranges {
            for newest_first in [true, false] {
                for (limit, offset) in [(51, 0), (2, 1_500)] {
                    let page = store.page(&owner, range, newest_first, limit, offset).await.unwrap();
                    let sql = ArchiveStore::page_sql(range, newest_first, limit as i64, offset as i64, true);
                    let with = range.with.as_ref().map(with_parts);
                    let pooled = store.page_on_pool(&owner, range, &sql, with.as_ref(), limit as i64, offset as i64).await.unwrap();
                    assert_eq!(ts(&page), pooled.iter().map(|(t, _, _)| t - base).collect::<Vec<_>>(), "{range:?}");
                    assert_eq!(page.iter().map(|m| &m.stanza).collect::<Vec<_>>(), pooled.iter().map(|(_, s, _)| s).collect::<Vec<_>>());
                    assert!(page.iter().all(|m| m.serialised) && pooled.iter().all(|(_, _, s)| *s));
                }
            }
        }
        let newest = store.page(&owner, &ArchiveRange::all(), true, 51, 0).await.unwrap();
        assert_eq!(ts(&newest), (2_949..3_000).rev().collect::<Vec<_>>());
        assert!(newest.iter().all(|m| m.stanza.len() > 10_000));
        let other = ArchiveRange { with: Some(Jid::new("c@y/other").unwrap()), ..ArchiveRange::all() };
        assert_eq!(ts(&store.page(&owner, &other, true, 50, 0).await.unwrap()), [0]);

        // Nothing that is bound makes SQLite prepare a page's statement again (see
        // `page_sql`). Reads one after the other take the same connection.
        let range = ArchiveRange::all();
        for to_ts in [base + 1_000, base + 1_500, base + 2_000] {
            store.page(&owner, &ArchiveRange { to_ts, ..range.clone() }, true, 40, 0).await.unwrap();
        }
        let sql = ArchiveStore::page_sql(&range, true, 40, 0, true);
        let status = db.read_blocking(move |c| {
            let statement = c.prepare_cached(&sql)?;
            Ok((statement.get_status(rusqlite::StatementStatus::Run), statement.get_status(rusqlite::StatementStatus::RePrepare)))
        });
        assert_eq!(status.await.unwrap().unwrap(), (3, 0), "(runs, prepared again)");
    }

    async fn db_with(owner: &str) -> Db {
        let db = Db::open("sqlite::memory:", 1).await.unwrap();
        let account = super::super::NewAccount { jid: BareJid::new(owner).unwrap(), credentials: Vec::new() };
        assert!(db.accounts().create(&account).await.unwrap());
        db
    }

    /// Positions increase by at least one per message even when the clock stands still or
    /// goes back, and a new process continues after the newest stored position, with the
    /// same key.
    #[tokio::test]
    async fn positions_increase_and_the_key_stays() {
        let db = db_with("a@x").await;
        let store = db.archive();
        let first = store.reserve(3).await.unwrap();
        let next = store.allocate().await.unwrap();
        assert!(next.ts >= first + 3);
        let future = now_micros() + 3_600_000_000;
        let bulk = BulkMessage { owner: BareJid::new("a@x").unwrap(), with: Jid::new("b@x").unwrap(), stanza: "<m/>".into(), at_micros: Some(future) };
        let ids = store.insert_bulk(&[bulk]).await.unwrap();
        assert_eq!(store.reserve(1).await.unwrap(), future + 1, "after a position from the future");
        // As after a restart: the clock and the key are read from the database again.
        let fresh = Db { archive: std::sync::Arc::default(), ..db.clone() };
        assert_eq!(fresh.archive().reserve(1).await.unwrap(), future + 1, "after the newest stored position");
        assert_eq!(fresh.archive().position(&BareJid::new("a@x").unwrap(), &ids[0]).await.unwrap(), Some(future));
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
            assert!(plan.contains("USING INDEX archive_messages_owner (owner=? AND ts>? AND ts<?)"), "{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        }
        range.from_ts = 5;
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


