//! Last activity (XEP-0012): when an account's last session ended, and its status text.

use jid::BareJid;
use sqlx::Row;

use super::{Db, Result, on_pool};

#[derive(Clone, Debug)]
pub struct LastActivityStore {
    pub(super) db: Db,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastActivity {
    /// Unix seconds.
    pub at: i64,
    pub status: String,
}

impl LastActivityStore {
    pub async fn get(&self, owner: &BareJid) -> Result<Option<LastActivity>> {
        on_pool!(self.db, |pool| {
            let row = sqlx::query("SELECT at, status FROM last_activity WHERE owner = $1")
                .bind(owner.as_str())
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| Ok::<_, sqlx::Error>(LastActivity { at: r.try_get("at")?, status: r.try_get("status")? })).transpose()?)
        })
    }

    /// Record the end of the account's last session. Nothing is written for an account that
    /// no longer exists: its sessions end after it was deleted.
    pub async fn set(&self, owner: &BareJid, activity: &LastActivity) -> Result<()> {
        on_pool!(self.db, |pool| {
            sqlx::query(
                "INSERT INTO last_activity (owner, at, status) \
                 SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM accounts WHERE jid = $1) \
                 ON CONFLICT (owner) DO UPDATE SET at = excluded.at, status = excluded.status",
            )
            .bind(owner.as_str())
            .bind(activity.at)
            .bind(activity.status.as_str())
            .execute(pool)
            .await?;
            Ok(())
        })
    }
}
