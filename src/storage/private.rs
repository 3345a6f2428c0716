//! Private XML storage (XEP-0049): one element per (account, namespace), all of an
//! account's elements together within a byte quota.

use jid::BareJid;

use super::{Db, LimitReached, Result, on_pool};

#[derive(Clone, Debug)]
pub struct PrivateStore {
    pub(super) db: Db,
    /// Bytes of stored elements per account, all namespaces together.
    pub(super) max_bytes: u64,
}

impl PrivateStore {
    pub async fn get(&self, owner: &BareJid, namespace: &str) -> Result<Option<String>> {
        let sql = "SELECT element FROM private_xml WHERE owner = $1 AND namespace = $2";
        self.db.text_by_key(sql, &[owner.as_str(), namespace]).await
    }

    /// The same store, keeping each account within `max_bytes`.
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Store several elements at once (a XEP-0049 set may carry more than one), all or
    /// none: refused with [`LimitReached::PrivateBytes`] if the account's elements would
    /// then take more than the quota. Callers serialise sets per account (on PostgreSQL two
    /// concurrent transactions would each check only their own writes).
    pub async fn set(&self, owner: &BareJid, elements: &[(String, String)]) -> Result<()> {
        on_pool!(self.db, |pool| {
            // Written first, measured after: the new total is what the replaced elements
            // leave plus the new ones, and a SQLite transaction that starts by writing holds
            // the write lock at once (a read first could not be upgraded after a concurrent
            // commit).
            let mut tx = pool.begin().await?;
            for (namespace, element) in elements {
                sqlx::query(
                    "INSERT INTO private_xml (owner, namespace, element) VALUES ($1, $2, $3) \
                     ON CONFLICT (owner, namespace) DO UPDATE SET element = excluded.element",
                )
                .bind(owner.as_str())
                .bind(namespace.as_str())
                .bind(element.as_str())
                .execute(&mut *tx)
                .await?;
            }
            let total: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(OCTET_LENGTH(element)), 0) FROM private_xml WHERE owner = $1")
                .bind(owner.as_str())
                .fetch_one(&mut *tx)
                .await?;
            if u64::try_from(total).unwrap_or(0) > self.max_bytes {
                // Dropping the transaction rolls it back.
                return Err(LimitReached::PrivateBytes(self.max_bytes).into());
            }
            tx.commit().await?;
            Ok(())
        })
    }
}
