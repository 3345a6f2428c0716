//! Rosters (RFC 6121 §2), their versions (XEP-0237) and pending inbound subscription
//! requests (RFC 6121 §3.1.3).

use jid::BareJid;
use sqlx::Row;

use super::{Db, LimitReached, Result, StorageError, on_pool};

/// RFC 6121 §2.1.2.5 subscription states (pending-in is kept apart, pending-out is `ask`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscription {
    None,
    To,
    From,
    Both,
}

impl Subscription {
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }

    pub fn parse(s: &str) -> Option<Subscription> {
        Some(match s {
            "none" => Subscription::None,
            "to" => Subscription::To,
            "from" => Subscription::From,
            "both" => Subscription::Both,
            _ => return None,
        })
    }

    /// The user receives the contact's presence.
    pub fn has_to(self) -> bool {
        matches!(self, Subscription::To | Subscription::Both)
    }

    /// The contact receives the user's presence.
    pub fn has_from(self) -> bool {
        matches!(self, Subscription::From | Subscription::Both)
    }

    pub fn with_to(self, on: bool) -> Subscription {
        Self::from_flags(on, self.has_from())
    }

    pub fn with_from(self, on: bool) -> Subscription {
        Self::from_flags(self.has_to(), on)
    }

    fn from_flags(to: bool, from: bool) -> Subscription {
        match (to, from) {
            (false, false) => Subscription::None,
            (true, false) => Subscription::To,
            (false, true) => Subscription::From,
            (true, true) => Subscription::Both,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterItem {
    pub jid: BareJid,
    pub name: Option<String>,
    pub subscription: Subscription,
    /// Pending-out: the user asked for the contact's presence and has no answer yet.
    pub ask: bool,
    pub groups: Vec<String>,
}

impl RosterItem {
    pub fn new(jid: BareJid) -> Self {
        RosterItem { jid, name: None, subscription: Subscription::None, ask: false, groups: Vec::new() }
    }
}

/// Increment the owner's roster version inside a transaction and return it.
macro_rules! bump_version {
    ($tx:expr, $owner:expr) => {
        sqlx::query(
            "INSERT INTO roster_versions (owner, version) VALUES ($1, 1) \
             ON CONFLICT (owner) DO UPDATE SET version = roster_versions.version + 1 RETURNING version",
        )
        .bind($owner.as_str())
        .fetch_one(&mut *$tx)
        .await?
        .try_get::<i64, _>("version")?
    };
}

/// Inside a transaction: remove every row of other accounts that refers to `$contact`
/// (roster items with their groups, stored subscription requests from it), bumping the
/// roster version of each owner whose roster changed. Evaluates to the owners concerned.
macro_rules! forget_contact {
    ($tx:expr, $contact:expr) => {{
        let contact: &str = $contact;
        let owners: Vec<String> = sqlx::query_scalar(
            "SELECT owner FROM roster_items WHERE contact = $1 AND owner <> $1 \
             UNION SELECT owner FROM roster_pending_in WHERE contact = $1 AND owner <> $1",
        )
        .bind(contact)
        .fetch_all(&mut *$tx)
        .await?;
        sqlx::query(
            "INSERT INTO roster_versions (owner, version) \
             SELECT owner, 1 FROM roster_items WHERE contact = $1 AND owner <> $1 \
             ON CONFLICT (owner) DO UPDATE SET version = roster_versions.version + 1",
        )
        .bind(contact)
        .execute(&mut *$tx)
        .await?;
        // Groups go with their items (ON DELETE CASCADE).
        sqlx::query("DELETE FROM roster_items WHERE contact = $1").bind(contact).execute(&mut *$tx).await?;
        sqlx::query("DELETE FROM roster_pending_in WHERE contact = $1").bind(contact).execute(&mut *$tx).await?;
        owners
    }};
}
pub(super) use forget_contact;

#[derive(Clone, Debug)]
pub struct RosterStore {
    pub(super) db: Db,
    pub(super) limits: RosterLimits,
}

/// How much one account may keep. Checked by the statement that adds the row; rows that are
/// already there may always change. Roster items stay within the limit whoever writes;
/// pending requests, on PostgreSQL, only if writers for one account take turns (the
/// delivery lock), as the presence module's do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RosterLimits {
    pub max_items: usize,
    pub max_pending_in: usize,
}

impl RosterLimits {
    pub const NONE: RosterLimits = RosterLimits { max_items: usize::MAX, max_pending_in: usize::MAX };
}

/// The whole roster in one statement (one round trip, one snapshot): one row per item and
/// group, and one row with NULL item columns when the roster is empty, so that the version
/// always comes back.
const LOAD_SQL: &str = "SELECT v.version, i.contact, i.name, i.subscription, i.ask_out, g.name AS grp \
     FROM (SELECT CAST($1 AS TEXT) AS owner) o \
     LEFT JOIN roster_versions v ON v.owner = o.owner \
     LEFT JOIN roster_items i ON i.owner = o.owner \
     LEFT JOIN roster_groups g ON g.owner = i.owner AND g.contact = i.contact \
     ORDER BY i.contact, g.name";

/// A row of `LOAD_SQL`: version, contact, name, subscription, ask_out, group.
type LoadRow = (Option<i64>, Option<String>, Option<String>, Option<String>, Option<bool>, Option<String>);

/// Insert or update an item; a new one only while the roster has fewer than $6 items.
const PUT_ITEM: &str = "INSERT INTO roster_items (owner, contact, name, subscription, ask_out) \
     SELECT $1, $2, $3, $4, $5 \
     WHERE EXISTS (SELECT 1 FROM roster_items WHERE owner = $1 AND contact = $2) \
        OR (SELECT COUNT(*) FROM roster_items WHERE owner = $1) < $6 \
     ON CONFLICT (owner, contact) DO UPDATE SET name = excluded.name, \
     subscription = excluded.subscription, ask_out = excluded.ask_out";

/// Insert or replace a pending request; a new one only while fewer than $4 wait.
const PUT_PENDING_IN: &str = "INSERT INTO roster_pending_in (owner, contact, stanza) \
     SELECT $1, $2, $3 \
     WHERE EXISTS (SELECT 1 FROM roster_pending_in WHERE owner = $1 AND contact = $2) \
        OR (SELECT COUNT(*) FROM roster_pending_in WHERE owner = $1) < $4 \
     ON CONFLICT (owner, contact) DO UPDATE SET stanza = excluded.stanza";

fn as_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl RosterStore {
    /// The same store, keeping each account within `limits`.
    pub fn with_limits(mut self, limits: RosterLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn limits(&self) -> RosterLimits {
        self.limits
    }

    /// The whole roster and its version (0 for a roster never written).
    pub async fn load(&self, owner: &BareJid) -> Result<(i64, Vec<RosterItem>)> {
        let read = self.db.read_here(|c| {
            let mut statement = c.prepare_cached(LOAD_SQL)?;
            let rows = statement.query_map([owner.as_str()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
            })?;
            rows.collect::<rusqlite::Result<Vec<LoadRow>>>()
        });
        let rows = match read {
            Some(rows) => rows?,
            None => on_pool!(self.db, |pool| sqlx::query_as(LOAD_SQL).bind(owner.as_str()).fetch_all(pool).await?),
        };
        let mut version = 0;
        let mut items: Vec<RosterItem> = Vec::new();
        let mut previous: Option<String> = None;
        for (row_version, contact, name, subscription, ask, group) in rows {
            version = row_version.unwrap_or(0);
            let Some(contact) = contact else { continue };
            if previous.as_deref() != Some(contact.as_str()) {
                let subscription = subscription.unwrap_or_default();
                items.push(item_from(contact.clone(), name, &subscription, ask.unwrap_or(false))?);
                previous = Some(contact);
            }
            if let Some(group) = group {
                items.last_mut().expect("pushed above").groups.push(group);
            }
        }
        Ok((version, items))
    }

    pub async fn get(&self, owner: &BareJid, contact: &BareJid) -> Result<Option<RosterItem>> {
        let sql = "SELECT contact, name, subscription, ask_out FROM roster_items WHERE owner = $1 AND contact = $2";
        on_pool!(self.db, |pool| {
            let Some(row) = sqlx::query(sql).bind(owner.as_str()).bind(contact.as_str()).fetch_optional(pool).await? else {
                return Ok(None);
            };
            let mut item = item_from_row(&row)?;
            let groups = sqlx::query("SELECT name FROM roster_groups WHERE owner = $1 AND contact = $2 ORDER BY name")
                .bind(owner.as_str())
                .bind(contact.as_str())
                .fetch_all(pool)
                .await?;
            item.groups = groups.iter().map(|r| r.try_get("name")).collect::<std::result::Result<_, _>>()?;
            Ok(Some(item))
        })
    }

    /// Insert or replace an item (groups included); returns the new roster version. A new
    /// item in a roster that already has `max_items` is refused with
    /// [`LimitReached::RosterItems`].
    pub async fn put(&self, owner: &BareJid, item: &RosterItem) -> Result<i64> {
        on_pool!(self.db, |pool| {
            let mut tx = pool.begin().await?;
            // The version first: its row lock makes concurrent writes to one roster take
            // turns on PostgreSQL, so the count below sees every item committed before,
            // and the limit holds whoever writes (SQLite writers take turns anyway).
            let version = bump_version!(tx, owner);
            let written = sqlx::query(PUT_ITEM)
                .bind(owner.as_str())
                .bind(item.jid.as_str())
                .bind(item.name.as_deref())
                .bind(item.subscription.as_str())
                .bind(item.ask)
                .bind(as_i64(self.limits.max_items))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if written == 0 {
                return Err(LimitReached::RosterItems(self.limits.max_items).into());
            }
            sqlx::query("DELETE FROM roster_groups WHERE owner = $1 AND contact = $2")
                .bind(owner.as_str())
                .bind(item.jid.as_str())
                .execute(&mut *tx)
                .await?;
            for group in &item.groups {
                sqlx::query("INSERT INTO roster_groups (owner, contact, name) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                    .bind(owner.as_str())
                    .bind(item.jid.as_str())
                    .bind(group.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(version)
        })
    }

    /// Remove an item; returns the new version, or `None` if there was no such item.
    pub async fn remove(&self, owner: &BareJid, contact: &BareJid) -> Result<Option<i64>> {
        on_pool!(self.db, |pool| {
            let mut tx = pool.begin().await?;
            let n = sqlx::query("DELETE FROM roster_items WHERE owner = $1 AND contact = $2")
                .bind(owner.as_str())
                .bind(contact.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 0 {
                return Ok(None);
            }
            let version = bump_version!(tx, owner);
            tx.commit().await?;
            Ok(Some(version))
        })
    }

    /// Stored inbound subscription requests: (contact, the subscribe presence as XML).
    pub async fn pending_in(&self, owner: &BareJid) -> Result<Vec<(String, String)>> {
        let hint = &self.db.hints.pending_in;
        let Some(seen) = hint.may_have(&self.db, owner).await? else { return Ok(Vec::new()) };
        let pending: Vec<(String, String)> = on_pool!(self.db, |pool| {
            let rows = sqlx::query("SELECT contact, stanza FROM roster_pending_in WHERE owner = $1 ORDER BY contact")
                .bind(owner.as_str())
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| Ok((r.try_get("contact")?, r.try_get("stanza")?)))
                .collect::<std::result::Result<_, sqlx::Error>>()?
        });
        if pending.is_empty() {
            hint.found_nothing(owner, seen);
        }
        Ok(pending)
    }

    pub async fn has_pending_in(&self, owner: &BareJid, contact: &BareJid) -> Result<bool> {
        if self.db.hints.pending_in.may_have(&self.db, owner).await?.is_none() {
            return Ok(false);
        }
        on_pool!(self.db, |pool| {
            Ok(sqlx::query("SELECT 1 FROM roster_pending_in WHERE owner = $1 AND contact = $2")
                .bind(owner.as_str())
                .bind(contact.as_str())
                .fetch_optional(pool)
                .await?
                .is_some())
        })
    }

    /// Keep a subscription request until it is answered. A request from a new contact when
    /// `max_pending_in` already wait is refused with [`LimitReached::PendingIn`]; one from a
    /// contact already waiting replaces the stored one.
    pub async fn set_pending_in(&self, owner: &BareJid, contact: &BareJid, stanza: &str) -> Result<()> {
        let _writing = self.db.hints.pending_in.writing(owner);
        let written = on_pool!(self.db, |pool| {
            sqlx::query(PUT_PENDING_IN)
                .bind(owner.as_str())
                .bind(contact.as_str())
                .bind(stanza)
                .bind(as_i64(self.limits.max_pending_in))
                .execute(pool)
                .await?
                .rows_affected()
        });
        if written == 0 {
            return Err(LimitReached::PendingIn(self.limits.max_pending_in).into());
        }
        Ok(())
    }

    /// Local accounts whose roster or stored subscription requests mention `contact`.
    pub async fn owners_referring_to(&self, contact: &BareJid) -> Result<Vec<BareJid>> {
        let owners: Vec<String> = on_pool!(self.db, |pool| {
            sqlx::query_scalar(
                "SELECT owner FROM roster_items WHERE contact = $1 AND owner <> $1 \
                 UNION SELECT owner FROM roster_pending_in WHERE contact = $1 AND owner <> $1 ORDER BY 1",
            )
            .bind(contact.as_str())
            .fetch_all(pool)
            .await?
        });
        owners.iter().map(|o| BareJid::new(o).map_err(|_| StorageError::Corrupt(format!("roster owner {o:?}")))).collect()
    }

    /// Remove, in one transaction, every row of other accounts that refers to `contact`
    /// (roster items and groups, stored subscription requests), bumping the roster version
    /// of each owner whose roster changed. Returns the owners concerned.
    pub async fn forget_contact(&self, contact: &BareJid) -> Result<Vec<BareJid>> {
        let owners: Vec<String> = on_pool!(self.db, |pool| {
            let mut tx = pool.begin().await?;
            let owners = forget_contact!(tx, contact.as_str());
            tx.commit().await?;
            owners
        });
        owners.iter().map(|o| BareJid::new(o).map_err(|_| StorageError::Corrupt(format!("roster owner {o:?}")))).collect()
    }

    /// Forget a pending request; `true` if there was one.
    pub async fn clear_pending_in(&self, owner: &BareJid, contact: &BareJid) -> Result<bool> {
        if self.db.hints.pending_in.may_have(&self.db, owner).await?.is_none() {
            return Ok(false);
        }
        on_pool!(self.db, |pool| {
            let n = sqlx::query("DELETE FROM roster_pending_in WHERE owner = $1 AND contact = $2")
                .bind(owner.as_str())
                .bind(contact.as_str())
                .execute(pool)
                .await?
                .rows_affected();
            Ok(n > 0)
        })
    }
}


fn item_from_row<R: Row>(row: &R) -> Result<RosterItem>
where
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
{
    let subscription: String = row.try_get("subscription")?;
    item_from(row.try_get("contact")?, row.try_get("name")?, &subscription, row.try_get("ask_out")?)
}

fn item_from(contact: String, name: Option<String>, subscription: &str, ask: bool) -> Result<RosterItem> {
    Ok(RosterItem {
        jid: BareJid::new(&contact).map_err(|_| StorageError::Corrupt(format!("roster contact {contact:?}")))?,
        name,
        subscription: Subscription::parse(subscription)
            .ok_or_else(|| StorageError::Corrupt(format!("roster subscription {subscription:?}")))?,
        ask,
        groups: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::Subscription::*;

    #[test]
    fn subscription_flags() {
        assert_eq!(None.with_to(true), To);
        assert_eq!(From.with_to(true), Both);
        assert_eq!(Both.with_from(false), To);
        assert_eq!(To.with_to(false), None);
        assert!(Both.has_to() && Both.has_from() && !None.has_to());
    }
}
