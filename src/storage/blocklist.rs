//! Blocking command (XEP-0191) storage.

use jid::BareJid;
use sqlx::Row;

use super::{Db, Result, on_pool};

#[derive(Clone, Debug)]
pub struct BlocklistStore {
    pub(super) db: Db,
}

impl BlocklistStore {
    /// The blocked JIDs (bare, full or domain JIDs, as strings), sorted.
    pub async fn list(&self, owner: &BareJid) -> Result<Vec<String>> {
        let hint = &self.db.hints.blocklist;
        let Some(seen) = hint.may_have(&self.db, owner).await? else { return Ok(Vec::new()) };
        let list: Vec<String> = on_pool!(self.db, |pool| {
            let rows = sqlx::query("SELECT blocked FROM blocklist WHERE owner = $1 ORDER BY blocked")
                .bind(owner.as_str())
                .fetch_all(pool)
                .await?;
            rows.iter().map(|r| r.try_get("blocked")).collect::<std::result::Result<_, sqlx::Error>>()?
        });
        if list.is_empty() {
            hint.found_nothing(owner, seen);
        }
        Ok(list)
    }

    pub async fn add(&self, owner: &BareJid, jids: &[String]) -> Result<()> {
        let _writing = self.db.hints.blocklist.writing(owner);
        on_pool!(self.db, |pool| {
            let mut tx = pool.begin().await?;
            for jid in jids {
                sqlx::query("INSERT INTO blocklist (owner, blocked) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(owner.as_str())
                    .bind(jid.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Remove the given JIDs, or all of them when `jids` is empty (XEP-0191 §3.4).
    pub async fn remove(&self, owner: &BareJid, jids: &[String]) -> Result<()> {
        on_pool!(self.db, |pool| {
            let mut tx = pool.begin().await?;
            if jids.is_empty() {
                sqlx::query("DELETE FROM blocklist WHERE owner = $1").bind(owner.as_str()).execute(&mut *tx).await?;
            }
            for jid in jids {
                sqlx::query("DELETE FROM blocklist WHERE owner = $1 AND blocked = $2")
                    .bind(owner.as_str())
                    .bind(jid.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }
}
