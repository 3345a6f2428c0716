//! Offline messages (XEP-0160), kept in arrival order.

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
    /// The account has as many waiting messages as allowed.
    Full,
    NoSuchAccount,
}

#[derive(Debug, Clone)]
pub struct OfflineMessage {
    pub id: i64,
    /// The message, serialised, with its XEP-0203 delay.
    pub stanza: String,
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
    limit: i64,
    stored_at: i64,
}

/// A message given to the writer; [`PendingStore::outcome`] waits for its commit.
pub struct PendingStore(oneshot::Receiver<Result<Stored>>);

impl PendingStore {
    pub async fn outcome(self) -> Result<Stored> {
        self.0.await.unwrap_or_else(|_| Err(StorageError::Batch("the offline writer stopped".into())))
    }
}

const INSERT: &str = "INSERT INTO offline_messages (owner, stanza, stored_at) \
                      SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM accounts WHERE jid = $1) \
                      AND (SELECT COUNT(*) FROM offline_messages WHERE owner = $1) < $4";

impl OfflineStore {
    /// Store a message unless the owner already has `limit` messages waiting, and wait until
    /// it is committed.
    pub async fn store(&self, owner: &BareJid, stanza: &str, limit: usize) -> Result<Stored> {
        self.enqueue(owner, stanza.to_string(), limit).await.outcome().await
    }

    /// Queue a message behind those queued before it (so an account's messages keep their
    /// order) without waiting for the commit.
    pub async fn enqueue(&self, owner: &BareJid, stanza: String, limit: usize) -> PendingStore {
        // Marked now, not when the writer gets to it: a read that finds nothing meanwhile
        // must not clear the owner (see hint.rs).
        self.db.hints.offline.begin_write(owner);
        let message = NewMessage {
            owner: owner.clone(),
            stanza,
            limit: i64::try_from(limit).unwrap_or(i64::MAX),
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

    /// One transaction for the batch; the count and the insert of each message see those
    /// before it, so the limit holds within a batch too.
    async fn insert_batch(&self, batch: &[Request]) -> Result<Vec<Stored>> {
        on_pool!(self.db, |pool| {
            let mut tx = pool.begin().await?;
            let mut outcomes = Vec::with_capacity(batch.len());
            for message in batch.iter().filter_map(|r| r.message.as_ref()) {
                let owner = message.owner.as_str();
                let inserted = sqlx::query(INSERT)
                    .bind(owner)
                    .bind(&message.stanza)
                    .bind(message.stored_at)
                    .bind(message.limit)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                outcomes.push(if inserted == 1 {
                    Stored::Yes
                } else if sqlx::query("SELECT 1 FROM accounts WHERE jid = $1").bind(owner).fetch_optional(&mut *tx).await?.is_some() {
                    Stored::Full
                } else {
                    Stored::NoSuchAccount
                });
            }
            tx.commit().await?;
            Ok(outcomes)
        })
    }

    /// All waiting messages, oldest first.
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
    /// that arrived since stay.
    pub async fn delete_up_to(&self, owner: &BareJid, last_id: i64) -> Result<u64> {
        on_pool!(self.db, |pool| {
            Ok(sqlx::query("DELETE FROM offline_messages WHERE owner = $1 AND id <= $2")
                .bind(owner.as_str())
                .bind(last_id)
                .execute(pool)
                .await?
                .rows_affected())
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
