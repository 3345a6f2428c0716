//! Private XML storage (XEP-0049): one element per (account, namespace).

use jid::BareJid;

use super::{Db, Result, on_pool};

#[derive(Clone, Debug)]
pub struct PrivateStore {
    pub(super) db: Db,
}

impl PrivateStore {
    pub async fn get(&self, owner: &BareJid, namespace: &str) -> Result<Option<String>> {
        let sql = "SELECT element FROM private_xml WHERE owner = $1 AND namespace = $2";
        self.db.text_by_key(sql, &[owner.as_str(), namespace]).await
    }

    /// Store several elements at once (a XEP-0049 set may carry more than one).
    pub async fn set(&self, owner: &BareJid, elements: &[(String, String)]) -> Result<()> {
        on_pool!(self.db, |pool| {
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
            tx.commit().await?;
            Ok(())
        })
    }
}
