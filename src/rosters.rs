//! Rosters as the server uses them (Prosody's rostermanager): cached in memory while an
//! account has sessions, written through to storage, and pushed to interested resources.
//!
//! Used by the roster module (RFC 6121 §2) and the presence module (subscriptions, §3).
//! Callers that read, decide and write take the account's delivery lock around it.

use std::sync::Arc;

use dashmap::DashMap;
use jid::{BareJid, Jid};
use crate::xml::Element;

use crate::config::RosterConfig;
use crate::session::Sessions;
use crate::stanza::Stanza;
use crate::storage::{Result, RosterItem, RosterLimits, RosterStore};
use crate::xml::{self, ns};

/// One account's roster at one version.
#[derive(Debug, Clone, Default)]
pub struct RosterSnapshot {
    pub version: i64,
    pub items: Vec<RosterItem>,
}

impl RosterSnapshot {
    pub fn get(&self, contact: &BareJid) -> Option<&RosterItem> {
        self.items.iter().find(|i| &i.jid == contact)
    }
}

pub struct Rosters {
    store: RosterStore,
    cache: DashMap<BareJid, Arc<RosterSnapshot>>,
}

impl Rosters {
    pub fn new(store: RosterStore) -> Self {
        Rosters { store, cache: DashMap::new() }
    }

    /// Rosters kept within the configured limits: [`Rosters::put`] refuses a new item past
    /// `max_items`, and the store's `set_pending_in` a request from a new contact past
    /// `max_pending_in`, both with [`crate::storage::LimitReached`] (which answers a
    /// client's IQ with `<resource-constraint/>` and the limit). A subscription request
    /// that would add an item, or be stored, past a limit fails the same way.
    pub fn with_config(store: RosterStore, config: &RosterConfig) -> Self {
        let limits = RosterLimits { max_items: config.max_items, max_pending_in: config.max_pending_in };
        Self::new(store.with_limits(limits))
    }

    pub fn store(&self) -> &RosterStore {
        &self.store
    }

    /// The roster, from memory when cached; `cache` keeps it there (for online accounts).
    pub async fn get(&self, owner: &BareJid, cache: bool) -> Result<Arc<RosterSnapshot>> {
        if let Some(r) = self.cache.get(owner) {
            return Ok(r.clone());
        }
        let (version, items) = self.store.load(owner).await?;
        let snapshot = Arc::new(RosterSnapshot { version, items });
        if cache {
            self.cache.insert(owner.clone(), snapshot.clone());
        }
        Ok(snapshot)
    }

    pub async fn item(&self, owner: &BareJid, contact: &BareJid) -> Result<Option<RosterItem>> {
        if let Some(r) = self.cache.get(owner) {
            return Ok(r.get(contact).cloned());
        }
        self.store.get(owner, contact).await
    }

    /// Store an item; returns the new version. A new item in a full roster is refused with
    /// [`crate::storage::LimitReached::RosterItems`] (an error that says which limit).
    pub async fn put(&self, owner: &BareJid, item: RosterItem) -> Result<i64> {
        let version = self.store.put(owner, &item).await?;
        if let Some(mut entry) = self.cache.get_mut(owner) {
            let snapshot = Arc::make_mut(&mut entry);
            snapshot.version = version;
            match snapshot.items.iter_mut().find(|i| i.jid == item.jid) {
                Some(existing) => *existing = item,
                None => snapshot.items.push(item),
            }
        }
        Ok(version)
    }

    /// Remove an item; returns the new version, `None` if it was not there.
    pub async fn remove(&self, owner: &BareJid, contact: &BareJid) -> Result<Option<i64>> {
        let version = self.store.remove(owner, contact).await?;
        if let (Some(version), Some(mut entry)) = (version, self.cache.get_mut(owner)) {
            let snapshot = Arc::make_mut(&mut entry);
            snapshot.version = version;
            snapshot.items.retain(|i| &i.jid != contact);
        }
        Ok(version)
    }

    /// Forget the cached roster (the account's last session ended).
    pub fn evict(&self, owner: &BareJid) {
        self.cache.remove(owner);
    }

    /// Send a roster push (RFC 6121 §2.1.6) of one item to every interested resource.
    /// `removed` pushes `subscription='remove'`.
    pub fn push(&self, sessions: &Sessions, owner: &BareJid, item: &RosterItem, removed: bool, version: i64) {
        for resource in sessions.interested(owner) {
            let mut query = xml::element("query", ns::ROSTER, &[("ver", &version.to_string())]);
            query.append_child(item_element(item, removed));
            let mut iq = xml::element("iq", ns::CLIENT, &[("type", "set")]);
            xml::set_attr(&mut iq, "id", format!("push{}", crate::stanza::new_id()));
            iq.append_child(query);
            let push = Stanza::new(iq, Jid::from(owner.clone()), Jid::from(resource.clone()));
            // A push lost to a full queue is recovered by the client's next roster get.
            let _ = sessions.deliver(&resource, push.el);
        }
    }
}

/// `<item/>` for a roster result or push (RFC 6121 §2.1.2).
pub fn item_element(item: &RosterItem, removed: bool) -> Element {
    let mut el = xml::element("item", ns::ROSTER, &[("jid", item.jid.as_str())]);
    if removed {
        xml::set_attr(&mut el, "subscription", "remove");
        return el;
    }
    xml::set_attr(&mut el, "subscription", item.subscription.as_str());
    if let Some(name) = &item.name {
        xml::set_attr(&mut el, "name", name.as_str());
    }
    if item.ask {
        xml::set_attr(&mut el, "ask", "subscribe");
    }
    for group in &item.groups {
        el.append_child(xml::text_element("group", ns::ROSTER, group));
    }
    el
}
