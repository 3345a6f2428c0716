//! Which accounts may have rows in a table that is empty for almost everyone: offline
//! messages, pending subscription requests, block lists, push registrations. Every login
//! reads these (and every message stored offline, the push registrations); without the hint
//! each read is a database round trip that finds nothing.
//!
//! The hint is a superset of the owners with rows. Only the server process adds such rows
//! (the CLI only deletes accounts, which leaves the hint a superset), so it is enough that a
//! write marks its owner before it starts, and that an owner is cleared only when a read found
//! no rows and no write started or ran since the read was decided on. The owners with rows
//! are read once, at the first use.

use dashmap::DashMap;
use jid::BareJid;

use super::{Db, Result, on_pool};

#[derive(Debug, Default, Clone, Copy)]
struct Mark {
    /// Writes that have marked the owner and not finished.
    writing: u32,
    /// Bumped by every finished write.
    generation: u64,
}

#[derive(Debug)]
pub(super) struct OwnerHint {
    /// The owners that may have rows.
    owners: DashMap<Box<str>, Mark>,
    loaded: tokio::sync::OnceCell<()>,
    /// `SELECT DISTINCT owner FROM ...`
    load_sql: &'static str,
}

/// What a read needs to clear the owner afterwards if it found nothing.
#[must_use]
pub(super) struct Seen(u64);

/// Held across a write: the owner stays marked, and a read that began before the write
/// cannot clear it.
pub(super) struct Writing<'a> {
    hint: &'a OwnerHint,
    owner: Box<str>,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.hint.end_write(&self.owner);
    }
}

impl OwnerHint {
    pub(super) fn new(load_sql: &'static str) -> Self {
        OwnerHint { owners: DashMap::new(), loaded: tokio::sync::OnceCell::new(), load_sql }
    }

    async fn load(&self, db: &Db) -> Result<()> {
        self.loaded
            .get_or_try_init(|| async {
                let owners: Vec<String> = on_pool!(db, |pool| sqlx::query_scalar(self.load_sql).fetch_all(pool).await?);
                for owner in owners {
                    self.owners.entry(owner.into_boxed_str()).or_default();
                }
                Result::Ok(())
            })
            .await
            .map(|_| ())
    }

    /// `None` if the owner certainly has no rows; otherwise read them, and pass what this
    /// returns to [`OwnerHint::found_nothing`] if there were none.
    pub(super) async fn may_have(&self, db: &Db, owner: &BareJid) -> Result<Option<Seen>> {
        self.load(db).await?;
        Ok(self.owners.get(owner.as_str()).map(|m| Seen(m.generation)))
    }

    /// A read found no rows: forget the owner unless a write started or ran since.
    pub(super) fn found_nothing(&self, owner: &BareJid, seen: Seen) {
        self.owners.remove_if(owner.as_str(), |_, m| m.writing == 0 && m.generation == seen.0);
    }

    /// Mark the owner for the duration of a write that may add rows.
    pub(super) fn writing(&self, owner: &BareJid) -> Writing<'_> {
        self.begin_write(owner);
        Writing { hint: self, owner: owner.as_str().into() }
    }

    /// [`OwnerHint::writing`] for a write that outlives the caller's borrow (queued): each
    /// `begin_write` must be followed by one `end_write`.
    pub(super) fn begin_write(&self, owner: &BareJid) {
        self.owners.entry(owner.as_str().into()).or_default().writing += 1;
    }

    pub(super) fn end_write(&self, owner: &str) {
        if let Some(mut m) = self.owners.get_mut(owner) {
            m.writing -= 1;
            m.generation += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn db() -> Db {
        Db::open("sqlite::memory:", 1).await.unwrap()
    }

    fn jid(s: &str) -> BareJid {
        BareJid::new(s).unwrap()
    }

    #[tokio::test]
    async fn a_read_that_raced_a_write_does_not_clear() {
        let db = db().await;
        let hint = OwnerHint::new("SELECT DISTINCT owner FROM blocklist");
        let a = jid("a@example.org");
        assert!(hint.may_have(&db, &a).await.unwrap().is_none());

        // Write in progress when the read is decided on and when it finds nothing.
        let w = hint.writing(&a);
        let seen = hint.may_have(&db, &a).await.unwrap().expect("marked");
        hint.found_nothing(&a, seen);
        drop(w);
        assert!(hint.may_have(&db, &a).await.unwrap().is_some(), "cleared during a write");

        // A write that started and finished after the read was decided on.
        let seen = hint.may_have(&db, &a).await.unwrap().unwrap();
        drop(hint.writing(&a));
        hint.found_nothing(&a, seen);
        assert!(hint.may_have(&db, &a).await.unwrap().is_some(), "cleared after a later write");

        // Nothing in between: cleared.
        let seen = hint.may_have(&db, &a).await.unwrap().unwrap();
        hint.found_nothing(&a, seen);
        assert!(hint.may_have(&db, &a).await.unwrap().is_none());
    }
}
