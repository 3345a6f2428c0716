//! Room vCards (vcard-temp on a room's JID): one serialised vCard per room, with the hash of
//! its photo kept beside it so that loading a room reads the hash, not the image.

use jid::BareJid;

use super::{MucStore, Result, on_pool};

impl MucStore {
    /// The room's vCard, serialised; `None` if it has none.
    pub async fn vcard(&self, room: &BareJid) -> Result<Option<String>> {
        self.db.text_by_key("SELECT vcard FROM muc_vcards WHERE room = $1", &[room.as_str()]).await
    }

    /// The SHA-1 (hex) of the room's vCard photo; `None` if it has no photo.
    pub async fn photo_hash(&self, room: &BareJid) -> Result<Option<String>> {
        let hash = self.db.text_by_key("SELECT photo_hash FROM muc_vcards WHERE room = $1", &[room.as_str()]).await?;
        Ok(hash.filter(|h| !h.is_empty()))
    }

    /// Replace the room's vCard (`None` removes it), with its photo's hash (`""`: none). The
    /// room must exist (its foreign key).
    pub async fn set_vcard(&self, room: &BareJid, vcard: Option<&str>, photo_hash: &str) -> Result<()> {
        on_pool!(self.db, |pool| {
            match vcard {
                Some(vcard) => {
                    sqlx::query(
                        "INSERT INTO muc_vcards (room, vcard, photo_hash) VALUES ($1, $2, $3) \
                         ON CONFLICT (room) DO UPDATE SET vcard = excluded.vcard, photo_hash = excluded.photo_hash",
                    )
                    .bind(room.as_str())
                    .bind(vcard)
                    .bind(photo_hash)
                    .execute(pool)
                    .await?;
                }
                None => {
                    sqlx::query("DELETE FROM muc_vcards WHERE room = $1").bind(room.as_str()).execute(pool).await?;
                }
            }
            Ok(())
        })
    }
}
