//! Push notification registrations (XEP-0357): per account, the push services of app
//! servers to publish to, by (service JID, node), with the publish options to send along and
//! the resource of the client that enabled each.

use jid::BareJid;
use sqlx::Row;

use super::{Db, LimitReached, Result, now_unix, on_pool};

/// One enabled (service, node) of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRegistration {
    /// The push service's JID, as the client gave it (normalised).
    pub service: String,
    pub node: String,
    /// The resource of the session that enabled it: its device's client.
    pub resource: String,
    /// The `publish-options` data form, serialised; `None` when the client gave none.
    pub options: Option<String>,
}

#[derive(Clone, Debug)]
pub struct PushStore {
    pub(super) db: Db,
}

impl PushStore {
    /// The account's registrations, oldest first.
    pub async fn list(&self, owner: &BareJid) -> Result<Vec<PushRegistration>> {
        let hint = &self.db.hints.push;
        let Some(seen) = hint.may_have(&self.db, owner).await? else { return Ok(Vec::new()) };
        let list: Vec<PushRegistration> = on_pool!(self.db, |pool| {
            let rows = sqlx::query(
                "SELECT service, node, resource, options FROM push_registrations WHERE owner = $1 ORDER BY created, service, node",
            )
            .bind(owner.as_str())
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(PushRegistration {
                        service: r.try_get("service")?,
                        node: r.try_get("node")?,
                        resource: r.try_get("resource")?,
                        options: r.try_get("options")?,
                    })
                })
                .collect::<std::result::Result<_, sqlx::Error>>()?
        });
        if list.is_empty() {
            hint.found_nothing(owner, seen);
        }
        Ok(list)
    }

    /// Enable (service, node) for the account, or replace what an earlier enable of the same
    /// pair stored (XEP-0357 §5: the last request's publish options win). Refused with
    /// [`LimitReached::PushRegistrations`], and nothing written, if the account would then
    /// have more than `max`. Callers serialise enables per account (on PostgreSQL two
    /// concurrent transactions would each count only their own row).
    pub async fn enable(&self, owner: &BareJid, registration: &PushRegistration, max: usize) -> Result<()> {
        let _writing = self.db.hints.push.writing(owner);
        on_pool!(self.db, |pool| {
            // Written first, counted after (see `PrivateStore::set`: a SQLite transaction
            // that starts by writing holds the write lock at once).
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO push_registrations (owner, service, node, resource, options, created) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (owner, service, node) DO UPDATE SET resource = excluded.resource, options = excluded.options",
            )
            .bind(owner.as_str())
            .bind(registration.service.as_str())
            .bind(registration.node.as_str())
            .bind(registration.resource.as_str())
            .bind(registration.options.as_deref())
            .bind(now_unix())
            .execute(&mut *tx)
            .await?;
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM push_registrations WHERE owner = $1")
                .bind(owner.as_str())
                .fetch_one(&mut *tx)
                .await?;
            if usize::try_from(count).unwrap_or(usize::MAX) > max {
                // Dropping the transaction rolls it back.
                return Err(LimitReached::PushRegistrations(max).into());
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Disable every node of `service` for the account, or only `node` (XEP-0357 §6).
    /// Returns how many registrations went.
    pub async fn disable(&self, owner: &BareJid, service: &str, node: Option<&str>) -> Result<u64> {
        let removed = on_pool!(self.db, |pool| {
            let result = match node {
                Some(node) => {
                    sqlx::query("DELETE FROM push_registrations WHERE owner = $1 AND service = $2 AND node = $3")
                        .bind(owner.as_str())
                        .bind(service)
                        .bind(node)
                        .execute(pool)
                        .await?
                }
                None => {
                    sqlx::query("DELETE FROM push_registrations WHERE owner = $1 AND service = $2")
                        .bind(owner.as_str())
                        .bind(service)
                        .execute(pool)
                        .await?
                }
            };
            result.rows_affected()
        });
        Ok(removed)
    }

    /// Disable one registration if it is still as given (the same device and options): an
    /// error answering a notification must not remove what a client enabled again meanwhile.
    /// Returns whether it went.
    pub async fn disable_if_unchanged(&self, owner: &BareJid, registration: &PushRegistration) -> Result<bool> {
        let removed = on_pool!(self.db, |pool| {
            sqlx::query(
                "DELETE FROM push_registrations WHERE owner = $1 AND service = $2 AND node = $3 AND resource = $4 \
                 AND COALESCE(options, '') = $5",
            )
            .bind(owner.as_str())
            .bind(registration.service.as_str())
            .bind(registration.node.as_str())
            .bind(registration.resource.as_str())
            .bind(registration.options.as_deref().unwrap_or(""))
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(removed > 0)
    }
}
