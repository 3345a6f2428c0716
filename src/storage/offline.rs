//! Offline messages (XEP-0160), kept in arrival order.

use jid::BareJid;
use sqlx::Row;

use super::{Db, Result, now_unix, on_pool};

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

impl OfflineStore {
    /// Store a message unless the owner already has `limit` messages waiting. One
    /// statement, so that the count and the insert cannot interleave with another writer on
    /// SQLite; the account must still exist (it may have been deleted meanwhile).
    pub async fn store(&self, owner: &BareJid, stanza: &str, limit: usize) -> Result<Stored> {
        let sql = "INSERT INTO offline_messages (owner, stanza, stored_at) \
                   SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM accounts WHERE jid = $1) \
                   AND (SELECT COUNT(*) FROM offline_messages WHERE owner = $1) < $4";
        let _writing = self.db.hints.offline.writing(owner);
        let inserted = on_pool!(self.db, |pool| {
            sqlx::query(sql)
                .bind(owner.as_str())
                .bind(stanza)
                .bind(now_unix())
                .bind(limit as i64)
                .execute(pool)
                .await?
                .rows_affected()
        });
        if inserted == 1 {
            return Ok(Stored::Yes);
        }
        let exists = on_pool!(self.db, |pool| {
            sqlx::query("SELECT 1 FROM accounts WHERE jid = $1").bind(owner.as_str()).fetch_optional(pool).await?.is_some()
        });
        Ok(if exists { Stored::Full } else { Stored::NoSuchAccount })
    }

    /// All waiting messages, oldest first.
    pub async fn load(&self, owner: &BareJid) -> Result<Vec<OfflineMessage>> {
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
        on_pool!(self.db, |pool| {
            Ok(sqlx::query("SELECT COUNT(*) AS n FROM offline_messages WHERE owner = $1")
                .bind(owner.as_str())
                .fetch_one(pool)
                .await?
                .try_get::<i64, _>("n")?)
        })
    }
}
