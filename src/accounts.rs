//! Deleting an account on a running server: the one path used by the admin socket
//! (`starling user del`) and by in-band removal (XEP-0077 §3.2).
//!
//! XEP-0077 §3.2 asks that nothing of the account survive, and RFC 6121 §2.5.3 says what a
//! contact sees when an item leaves a roster: `unsubscribe` and `unsubscribed` from the
//! user's bare JID. Without that, contacts keep the deleted JID in their rosters with a
//! subscription, and a new account created under the same name inherits their presence.

use jid::{BareJid, Jid};

use crate::core::Core;
use crate::modules::Ctx;
use crate::stanza::{Stanza, StreamCondition, StreamError};
use crate::storage::{RosterItem, StorageError};
use crate::xml::{self, Element, ns};

/// Delete `jid` and everything that refers to it; `false` if there is no such account.
///
/// In order:
/// 1. the account's rows go, in one transaction: stored data cascades with it, and its
///    message archive and its affiliations in rooms are deleted with it;
/// 2. its sessions are told to end with `<not-authorized/>` (as a removal in-band does).
///    They end in their own tasks, after this returns: a session that runs this for its
///    own account (in-band removal) writes its IQ result first. Their end still uses the
///    roster cached for them, so contacts see them go unavailable;
/// 3. every local account that has it in its roster or has a subscription request from
///    it gets `unsubscribe` and `unsubscribed` from its bare JID, routed like any presence
///    (so the presence module updates the contact's roster and its clients see them), then
///    loses the roster item (a push with `subscription='remove'`) and the request;
/// 4. whatever still refers to it (rows written meanwhile) is removed in one transaction.
///
/// Remote contacts are not told: federation is not implemented.
pub async fn delete_account(core: &Core, jid: &BareJid) -> Result<bool, StorageError> {
    let store = core.rosters.store();
    let contacts = store.owners_referring_to(jid).await?;
    if !core.db.accounts().delete(jid).await? {
        return Ok(false);
    }
    tracing::info!(%jid, contacts = contacts.len(), "account deleted");
    core.sessions.close_all(jid, StreamError::new(StreamCondition::NotAuthorized).with_text("account deleted"));

    let ctx = Ctx::new(core.clone());
    let change = crate::modules::DataChange { owner: jid.clone(), data: crate::modules::ChangedData::AccountDeleted };
    core.modules.data_changed(&ctx, change).await;
    let from = Jid::from(jid.clone());
    // Owners are local accounts (rows of ours); remote contacts have no rows to visit.
    for owner in &contacts {
        for kind in ["unsubscribe", "unsubscribed"] {
            let mut el = Element::bare("presence", ns::CLIENT);
            xml::set_attr(&mut el, "type", kind);
            ctx.send(Stanza::new(el, from.clone(), Jid::from(owner.clone()))).await;
        }
        let removed = {
            // Read-modify-write of the owner's roster, like the presence module does.
            let _guard = core.delivery_lock(owner).await;
            let _ = store.clear_pending_in(owner, jid).await?;
            core.rosters.remove(owner, jid).await?
        };
        if let Some(version) = removed {
            core.rosters.push(&core.sessions, owner, &RosterItem::new(jid.clone()), true, version);
        }
    }
    // Anything written between the first query and now (a subscription request that was
    // being stored, say). Cached rosters of those owners are dropped so that they reload.
    for owner in store.forget_contact(jid).await? {
        core.rosters.evict(&owner);
    }
    // Its explicit subscriptions to others' PEP nodes (its own nodes went with it).
    core.db.pep().forget_subscriber(jid).await?;
    // A session of the deleted account may be gone already, and with it the reason to keep
    // its roster cached; one still closing reloads an empty roster, which is what it now is.
    if !core.sessions.has_sessions(jid) {
        core.rosters.evict(jid);
    }
    Ok(true)
}

/// Wait until every session of `jid` has ended (they were asked to by `delete_account`),
/// at most `limit`; then drop its cached roster, so that an account created again under the
/// same name starts empty. Returns whether they all ended in time.
pub async fn wait_sessions_ended(core: &Core, jid: &BareJid, limit: std::time::Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while core.sessions.has_sessions(jid) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    core.rosters.evict(jid);
    true
}
