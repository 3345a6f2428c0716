//! vcard-temp (XEP-0054) storage: one serialised vCard per account.

use jid::BareJid;
use super::{Db, Result, on_pool};

#[derive(Clone, Debug)]
pub struct VcardStore {
    pub(super) db: Db,
}

impl VcardStore {
    pub async fn get(&self, owner: &BareJid) -> Result<Option<String>> {
        self.db.text_by_key("SELECT vcard FROM vcards WHERE owner = $1", &[owner.as_str()]).await
    }

    pub async fn set(&self, owner: &BareJid, vcard: &str) -> Result<()> {
        on_pool!(self.db, |pool| {
            sqlx::query("INSERT INTO vcards (owner, vcard) VALUES ($1, $2) ON CONFLICT (owner) DO UPDATE SET vcard = excluded.vcard")
                .bind(owner.as_str())
                .bind(vcard)
                .execute(pool)
                .await?;
            Ok(())
        })
    }
}
