//! Offline messages (XEP-0160), kept in arrival order, within a per-account quota of
//! messages and bytes. A running total per account (`offline_usage`) lets the writer check
//! both limits with one conditional UPDATE, and the flush at login reads the messages in
//! bounded batches.

use std::sync::atomic::{AtomicUsize, Ordering};

use jid::BareJid;
use sqlx::Row;
use tokio::sync::{mpsc, oneshot};

use super::{Db, Result, StorageError, now_unix, on_pool};

#[derive(Clone, Debug)]
pub struct OfflineStore {
    pub(super) db: Db,
}

/// What became of a message given to offline storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Yes,
    /// The account has as many waiting messages, or as many bytes of them, as allowed.
    Full,
    NoSuchAccount,
}

/// How much may wait for one account: both limits hold at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfflineQuota {
    pub messages: usize,
    /// The sum of the stored (serialised) sizes of the waiting messages.
    pub bytes: u64,
}

/// A message count alone, bytes unlimited.
impl From<usize> for OfflineQuota {
    fn from(messages: usize) -> Self {
        OfflineQuota { messages, bytes: u64::MAX }
    }
}

#[derive(Debug, Clone)]
pub struct OfflineMessage {
    pub id: i64,
    /// The message, serialised, with its XEP-0203 delay.
    pub stanza: String,
}

/// How much one batch of the flush at login may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimit {
    pub messages: usize,
    /// Stored bytes; a batch always holds at least one message, however large.
    pub bytes: u64,
}

/// Stores go through one writer per database, which commits whatever is waiting in one
/// transaction: one disk sync for many messages instead of one each (group commit). A
/// caller queues its message in order and learns the outcome once it is durable.
#[derive(Debug, Default)]
pub(super) struct Queue {
    sender: std::sync::OnceLock<mpsc::Sender<Request>>,
    /// Queued and not yet answered: lets `committed` skip the writer when nothing waits.
    in_flight: AtomicUsize,
}

/// Messages waiting at most for the writer; more, and callers wait (backpressure).
const QUEUE_CAPACITY: usize = 1024;
/// Messages per transaction at most.
const MAX_BATCH: usize = 256;

struct Request {
    /// `None`: a barrier, answered once everything queued before it is committed.
    message: Option<NewMessage>,
    reply: oneshot::Sender<Result<Stored>>,
}

struct NewMessage {
    owner: BareJid,
    stanza: String,
    max_messages: i64,
    max_bytes: i64,
    stored_at: i64,
}

/// A message given to the writer; [`PendingStore::outcome`] waits for its commit.
pub struct PendingStore(oneshot::Receiver<Result<Stored>>);

impl PendingStore {
    pub async fn outcome(self) -> Result<Stored> {
        self.0.await.unwrap_or_else(|_| Err(StorageError::Batch("the offline writer stopped".into())))
    }
}

/// Take room for one message in the owner's running total, if both limits allow it. The
/// check and the increment are one statement: nothing can slip in between (on PostgreSQL the
/// row lock makes a concurrent writer re-check against the new total).
const RESERVE: &str = "UPDATE offline_usage SET messages = messages + 1, bytes = bytes + $2 \
                       WHERE owner = $1 AND messages < $3 AND bytes + $2 <= $4";
/// The first message for an account starts its running total (only for an existing account:
/// an error would abort the whole group's transaction).
const START_USAGE: &str = "INSERT INTO offline_usage (owner, messages, bytes) \
                           SELECT $1, 0, 0 WHERE EXISTS (SELECT 1 FROM accounts WHERE jid = $1) \
                           ON CONFLICT (owner) DO NOTHING";
const INSERT: &str = "INSERT INTO offline_messages (owner, stanza, stored_at, bytes) VALUES ($1, $2, $3, $4)";

impl OfflineStore {
    /// Store a message within the owner's quota, and wait until it is committed.
    pub async fn store(&self, owner: &BareJid, stanza: &str, quota: impl Into<OfflineQuota>) -> Result<Stored> {
        self.enqueue(owner, stanza.to_string(), quota).await.outcome().await
    }

    /// Queue a message behind those queued before it (so an account's messages keep their
    /// order) without waiting for the commit.
    pub async fn enqueue(&self, owner: &BareJid, stanza: String, quota: impl Into<OfflineQuota>) -> PendingStore {
        let quota = quota.into();
        // Marked now, not when the writer gets to it: a read that finds nothing meanwhile
        // must not clear the owner (see hint.rs).
        self.db.hints.offline.begin_write(owner);
        let message = NewMessage {
            owner: owner.clone(),
            stanza,
            max_messages: i64::try_from(quota.messages).unwrap_or(i64::MAX),
            max_bytes: i64::try_from(quota.bytes).unwrap_or(i64::MAX),
            stored_at: now_unix(),
        };
        self.send(Some(message)).await
    }

    /// Wait until every message queued so far is committed (or refused).
    pub async fn committed(&self) {
        if self.db.offline_queue.in_flight.load(Ordering::Acquire) > 0 {
            let _ = self.send(None).await.outcome().await;
        }
    }

    async fn send(&self, message: Option<NewMessage>) -> PendingStore {
        let queue = &self.db.offline_queue;
        let sender = queue.sender.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
            tokio::spawn(write_batches(self.db.clone(), rx));
            tx
        });
        let (reply, outcome) = oneshot::channel();
        queue.in_flight.fetch_add(1, Ordering::AcqRel);
        if let Err(mpsc::error::SendError(request)) = sender.send(Request { message, reply }).await {
            finish(&self.db, request, Err(StorageError::Batch("the offline writer stopped".into())));
        }
        PendingStore(outcome)
    }

    /// One transaction for the batch; each message is checked against the running total
    /// that those before it updated, so the quota holds within a batch too, and the check
    /// is the increment (`RESERVE`), so no other writer (another server process on the same
    /// database) can take the account past it either.
    async fn insert_batch(&self, batch: &[Request]) -> Result<Vec<Stored>> {
        on_pool!(self.db, |pool| {
            let mut tx = pool.begin().await?;
            let mut outcomes = Vec::with_capacity(batch.len());
            for message in batch.iter().filter_map(|r| r.message.as_ref()) {
                let owner = message.owner.as_str();
                let bytes = i64::try_from(message.stanza.len()).unwrap_or(i64::MAX);
                let reserve = || {
                    sqlx::query(RESERVE).bind(owner).bind(bytes).bind(message.max_messages).bind(message.max_bytes)
                };
                let has_total = || sqlx::query("SELECT 1 FROM offline_usage WHERE owner = $1").bind(owner);
                let mut reserved = reserve().execute(&mut *tx).await?.rows_affected() == 1;
                if !reserved && has_total().fetch_optional(&mut *tx).await?.is_none() {
                    // No total yet: the account's first message (another writer may be
                    // starting it too), or no such account.
                    sqlx::query(START_USAGE).bind(owner).execute(&mut *tx).await?;
                    reserved = reserve().execute(&mut *tx).await?.rows_affected() == 1;
                }
                outcomes.push(if reserved {
                    sqlx::query(INSERT)
                        .bind(owner)
                        .bind(&message.stanza)
                        .bind(message.stored_at)
                        .bind(bytes)
                        .execute(&mut *tx)
                        .await?;
                    Stored::Yes
                } else if has_total().fetch_optional(&mut *tx).await?.is_some() {
                    Stored::Full
                } else {
                    Stored::NoSuchAccount
                });
            }
            tx.commit().await?;
            Ok(outcomes)
        })
    }

    /// The id of the newest waiting message (queued ones included: they are committed
    /// first), or `None` when nothing waits. The flush at login delivers up to it.
    pub async fn newest(&self, owner: &BareJid) -> Result<Option<i64>> {
        self.committed().await;
        let hint = &self.db.hints.offline;
        let Some(seen) = hint.may_have(&self.db, owner).await? else { return Ok(None) };
        let newest: Option<i64> = on_pool!(self.db, |pool| {
            sqlx::query_scalar("SELECT MAX(id) FROM offline_messages WHERE owner = $1")
                .bind(owner.as_str())
                .fetch_one(pool)
                .await?
        });
        if newest.is_none() {
            hint.found_nothing(owner, seen);
        }
        Ok(newest)
    }

    /// The oldest waiting messages after `after` and up to `through` (ids), as many as fit
    /// in `limit`, oldest first. The batch is sized from the index (ids and sizes) before
    /// any stanza is read, so a batch never loads more than it holds.
    pub async fn batch(&self, owner: &BareJid, after: i64, through: i64, limit: BatchLimit) -> Result<Vec<OfflineMessage>> {
        let max = i64::try_from(limit.messages.max(1)).unwrap_or(i64::MAX);
        on_pool!(self.db, |pool| {
            let sizes: Vec<(i64, i64)> = sqlx::query_as(
                "SELECT id, bytes FROM offline_messages WHERE owner = $1 AND id > $2 AND id <= $3 ORDER BY id LIMIT $4",
            )
            .bind(owner.as_str())
            .bind(after)
            .bind(through)
            .bind(max)
            .fetch_all(pool)
            .await?;
            let mut last = None;
            let mut total: u64 = 0;
            for (id, bytes) in sizes {
                total = total.saturating_add(u64::try_from(bytes).unwrap_or(0));
                if last.is_some() && total > limit.bytes {
                    break;
                }
                last = Some(id);
            }
            let Some(last) = last else { return Ok(Vec::new()) };
            let rows = sqlx::query("SELECT id, stanza FROM offline_messages WHERE owner = $1 AND id > $2 AND id <= $3 ORDER BY id")
                .bind(owner.as_str())
                .bind(after)
                .bind(last)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| Ok(OfflineMessage { id: r.try_get("id")?, stanza: r.try_get("stanza")? }))
                .collect::<Result<_>>()
        })
    }

    /// All waiting messages, oldest first, in one read: for tests and tools. Logins read in
    /// batches ([`OfflineStore::batch`]), so that a full store is never in memory at once.
    pub async fn load(&self, owner: &BareJid) -> Result<Vec<OfflineMessage>> {
        // Queued messages are waiting messages too.
        self.committed().await;
        let hint = &self.db.hints.offline;
        let Some(seen) = hint.may_have(&self.db, owner).await? else { return Ok(Vec::new()) };
        let messages: Vec<OfflineMessage> = on_pool!(self.db, |pool| {
            let rows = sqlx::query("SELECT id, stanza FROM offline_messages WHERE owner = $1 ORDER BY id")
                .bind(owner.as_str())
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| Ok(OfflineMessage { id: r.try_get("id")?, stanza: r.try_get("stanza")? }))
                .collect::<Result<_>>()?
        });
        if messages.is_empty() {
            hint.found_nothing(owner, seen);
        }
        Ok(messages)
    }

    /// Delete the messages up to and including `last_id` (those that were delivered); any
    /// that arrived since stay. The running total shrinks in the same transaction.
    pub async fn delete_up_to(&self, owner: &BareJid, last_id: i64) -> Result<u64> {
        on_pool!(self.db, |pool| {
            // The DELETE comes first: a SQLite transaction that starts by writing takes the
            // write lock at once, instead of failing to upgrade a read that a concurrent
            // commit made stale.
            let mut tx = pool.begin().await?;
            let sizes: Vec<i64> = sqlx::query_scalar("DELETE FROM offline_messages WHERE owner = $1 AND id <= $2 RETURNING bytes")
                .bind(owner.as_str())
                .bind(last_id)
                .fetch_all(&mut *tx)
                .await?;
            if sizes.is_empty() {
                return Ok(0);
            }
            let count = i64::try_from(sizes.len()).unwrap_or(i64::MAX);
            let bytes: i64 = sizes.iter().sum();
            sqlx::query("UPDATE offline_usage SET messages = messages - $2, bytes = bytes - $3 WHERE owner = $1")
                .bind(owner.as_str())
                .bind(count)
                .bind(bytes)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(sizes.len() as u64)
        })
    }

    /// The owner's running totals: waiting messages and their stored bytes.
    pub async fn usage(&self, owner: &BareJid) -> Result<(i64, i64)> {
        self.committed().await;
        on_pool!(self.db, |pool| {
            let row: Option<(i64, i64)> = sqlx::query_as("SELECT messages, bytes FROM offline_usage WHERE owner = $1")
                .bind(owner.as_str())
                .fetch_optional(pool)
                .await?;
            Ok(row.unwrap_or((0, 0)))
        })
    }

    pub async fn count(&self, owner: &BareJid) -> Result<i64> {
        self.committed().await;
        on_pool!(self.db, |pool| {
            Ok(sqlx::query("SELECT COUNT(*) AS n FROM offline_messages WHERE owner = $1")
                .bind(owner.as_str())
                .fetch_one(pool)
                .await?
                .try_get::<i64, _>("n")?)
        })
    }
}

/// The writer: takes what is queued, commits it in one transaction, answers each caller.
async fn write_batches(db: Db, mut rx: mpsc::Receiver<Request>) {
    let store = db.offline();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let result = store.insert_batch(&batch).await;
        // One outcome per message, in order; a failed transaction fails every message in it.
        let mut stored = result.as_deref().unwrap_or_default().iter().copied();
        for request in batch.drain(..) {
            let outcome = match (&request.message, &result) {
                (None, _) => Ok(Stored::Yes),
                (Some(_), Ok(_)) => stored.next().ok_or_else(|| StorageError::Batch("no outcome".into())),
                (Some(_), Err(e)) => Err(StorageError::Batch(e.to_string())),
            };
            finish(&db, request, outcome);
        }
    }
}

fn finish(db: &Db, request: Request, outcome: Result<Stored>) {
    if let Some(message) = &request.message {
        db.hints.offline.end_write(message.owner.as_str());
    }
    db.offline_queue.in_flight.fetch_sub(1, Ordering::AcqRel);
    let _ = request.reply.send(outcome);
}
