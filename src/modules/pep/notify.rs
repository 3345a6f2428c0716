//! Who gets notifications (XEP-0163 §4), and when the last published items are sent: to a
//! resource that becomes available showing interest in nodes (§4.3.2), to a contact whose
//! subscription was just approved (a new subscriber, §4.3.3), and to explicit subscribers.
//!
//! Notifications are routed like any message from the owner's bare JID, so that both block
//! lists apply (§4.3.2 item 3: nothing goes to a subscriber the owner blocked). They go to
//! the full JIDs of available resources that asked for them through their capabilities
//! (XEP-0060 §9.2), as headlines, which are never stored offline.

use std::collections::HashSet;
use std::sync::Arc;

use jid::{BareJid, FullJid, Jid};

use super::{PUBSUB_EVENT, Pep, caps};
use crate::core::Core;
use crate::modules::{Ctx, Flow, SessionEvent};
use crate::stanza::{PresenceType, Stanza, new_id};
use crate::storage::{AccessModel, LastItem, NodeConfig, NotificationType, PepNode, SendLast};
use crate::xml::{self, Element, ns};

/// An `<event/>` with one `<items/>` holding one item (with or without its payload).
pub fn items_event(node: &str, item_id: &str, payload: Option<Element>) -> Element {
    let mut item = xml::element("item", PUBSUB_EVENT, &[("id", item_id)]);
    if let Some(p) = payload {
        item.append_child(p);
    }
    let mut items = xml::element("items", PUBSUB_EVENT, &[("node", node)]);
    items.append_child(item);
    event(items)
}

/// An `<event/>` around one child (`items`, `delete`, `purge`, `configuration`).
pub fn event(child: Element) -> Element {
    let mut event = Element::bare("event", PUBSUB_EVENT);
    event.append_child(child);
    event
}

/// XEP-0203 stamp of a unix time.
fn stamp(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// The notification message from the owner's bare JID (XEP-0163 §4.3.1).
fn message(owner: &BareJid, to: Jid, kind: NotificationType, event: Element, published_at: Option<i64>) -> Stanza {
    let mut m = xml::element("message", ns::CLIENT, &[("type", kind.as_str()), ("id", &new_id())]);
    m.append_child(event);
    if let Some(at) = published_at {
        m.append_child(xml::element("delay", ns::DELAY, &[("stamp", &stamp(at))]));
    }
    if kind == NotificationType::Normal {
        // XEP-0060 §12.4: events are not for offline storage.
        m.append_child(Element::bare("no-store", "urn:xmpp:hints"));
    }
    Stanza::new(m, Jid::from(owner.clone()), to)
}

/// Whether a roster item's groups meet a `roster` access model.
fn in_groups(config: &NodeConfig, groups: &[String]) -> bool {
    groups.iter().any(|g| config.roster_groups.contains(g))
}

impl Pep {
    /// Send an event about `node` to everyone who should get it.
    pub(super) async fn broadcast(&self, ctx: &Ctx, owner: &BareJid, node: &PepNode, event: Element) {
        if !node.config.deliver_notifications {
            return;
        }
        let targets = self.recipients(ctx, owner, node).await;
        self.send_to(ctx, owner, &node.config, &targets, event).await;
    }

    pub(super) async fn send_to(&self, ctx: &Ctx, owner: &BareJid, config: &NodeConfig, targets: &[Jid], event: Element) {
        for target in targets {
            ctx.send(message(owner, target.clone(), config.notification_type, event.clone(), None)).await;
        }
    }

    /// Who gets notifications of a node: the owner's available resources and those of its
    /// contacts (subscription `from` or `both` in the owner's roster) that want the node
    /// (filtered notifications), as the access model allows; and explicit subscribers
    /// still allowed to read the node, unless one of their resources is among the others.
    pub(super) async fn recipients(&self, ctx: &Ctx, owner: &BareJid, node: &PepNode) -> Vec<Jid> {
        let core = &ctx.core;
        let config = &node.config;
        let mut targets: Vec<FullJid> = Vec::new();
        let wanting = |bare: &BareJid, targets: &mut Vec<FullJid>| {
            for r in core.sessions.resources(bare) {
                if r.available && self.caps.wants(&r.jid, &node.name) {
                    targets.push(r.jid);
                }
            }
        };
        wanting(owner, &mut targets);
        if config.access_model != AccessModel::Whitelist {
            match core.rosters.get(owner, false).await {
                Ok(roster) => {
                    for item in roster.items.iter().filter(|i| i.subscription.has_from() && &i.jid != owner) {
                        if config.access_model == AccessModel::Roster && !in_groups(config, &item.groups) {
                            continue;
                        }
                        if core.is_local_account(&Jid::from(item.jid.clone())) {
                            wanting(&item.jid, &mut targets);
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot load the roster for PEP notifications"),
            }
        }
        let mut all: Vec<Jid> = targets.iter().cloned().map(Jid::from).collect();
        match self.store.subscribers(node).await {
            Ok(subscribers) => {
                for s in subscribers {
                    let Ok(jid) = Jid::new(&s) else { continue };
                    let covered = match jid.clone().try_into_full() {
                        Ok(full) => targets.contains(&full),
                        Err(bare) => targets.iter().any(|t| t.to_bare() == bare),
                    };
                    if !covered && !all.contains(&jid) && self.may_read(ctx, owner, &jid, config).await.is_ok() {
                        all.push(jid);
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot load PEP subscriptions"),
        }
        all
    }

    /// Presence a local client sent: its broadcast presence tells what it wants
    /// notifications of; a resource that becomes available (or wants more than before) gets
    /// the last items of those nodes once its capabilities are known.
    pub(super) async fn presence_out(self: Arc<Self>, ctx: Ctx, mut stanza: Stanza) -> Flow {
        if stanza.presence_type() == Some(PresenceType::Available) {
            // XEP-0398 §5: broadcast and directed alike.
            let owner = stanza.from.to_bare();
            self.stamp_avatar(&mut stanza.el, &owner).await;
        }
        if stanza.to.is_none()
            && let Ok(full) = stanza.from.clone().try_into_full()
        {
            match stanza.presence_type() {
                Some(PresenceType::Available) => {
                    if let Some(update) = self.caps.presence(&full, caps::advert(&stanza.el)) {
                        // Apart from the session's task: the client may have to answer a
                        // query first, which its session reads only once this returns.
                        ctx.core.spawn(self.clone().became_interested(ctx.core.clone(), full, update));
                    }
                }
                Some(PresenceType::Unavailable) => self.caps.forget(&full),
                _ => {}
            }
        }
        Flow::Continue(stanza)
    }

    async fn became_interested(self: Arc<Self>, core: Core, jid: FullJid, update: caps::Update) {
        let ctx = Ctx::new(core);
        let interest = self.caps.resolve(&ctx, &jid, update.advert.as_ref()).await;
        if !self.caps.settle(&jid, update.generation, interest.clone()) {
            return;
        }
        let wanted: HashSet<&str> = interest.added_since(update.before.as_deref()).collect();
        if !wanted.is_empty() {
            self.send_last_items(&ctx, &jid, &wanted).await;
        }
    }

    /// The last item of each node the resource wants, of its own account and of the
    /// accounts it is subscribed to, for nodes that send it on presence.
    async fn send_last_items(&self, ctx: &Ctx, jid: &FullJid, wanted: &HashSet<&str>) {
        let me = jid.to_bare();
        let to = Jid::from(jid.clone());
        let on_presence = |l: &LastItem| wanted.contains(l.node.name.as_str()) && l.node.config.send_last == SendLast::OnSubAndPresence;
        match self.store.own_last_items(&me).await {
            Ok(items) => {
                for last in items.iter().filter(|l| on_presence(l)) {
                    self.send_last(ctx, last, to.clone()).await;
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot load the last PEP items"),
        }
        // Not cached anew: the session may have ended meanwhile (the cache is for online
        // accounts, and is dropped when their last session ends).
        let roster = match ctx.core.rosters.get(&me, false).await {
            Ok(r) => r,
            Err(e) => return tracing::error!(error = %e, "cannot load the roster for PEP"),
        };
        let owners: Vec<BareJid> = roster
            .items
            .iter()
            .filter(|i| i.subscription.has_to() && i.jid != me && ctx.core.is_local_account(&Jid::from(i.jid.clone())))
            .map(|i| i.jid.clone())
            .collect();
        if owners.is_empty() {
            return;
        }
        match self.store.contacts_last_items(&owners, &me).await {
            Ok(items) => {
                for last in items.iter().filter(|l| on_presence(l)) {
                    if self.contact_allowed(ctx, last, &me).await {
                        self.send_last(ctx, last, to.clone()).await;
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot load the last PEP items of contacts"),
        }
    }

    /// For a last item of a contact's node (already checked to give `me` a presence
    /// subscription, and not whitelisted): the `roster` access model's groups.
    async fn contact_allowed(&self, ctx: &Ctx, last: &LastItem, me: &BareJid) -> bool {
        if last.node.config.access_model != AccessModel::Roster {
            return true;
        }
        match ctx.core.rosters.item(&last.owner, me).await {
            Ok(Some(item)) => in_groups(&last.node.config, &item.groups),
            _ => false,
        }
    }

    /// Send one stored item as a notification, with the time it was published.
    pub(super) async fn send_last(&self, ctx: &Ctx, last: &LastItem, to: Jid) {
        let config = &last.node.config;
        if !config.deliver_notifications {
            return;
        }
        let payload = if config.deliver_payloads {
            match xml::parse_element(&last.item.payload) {
                Ok(p) => Some(p),
                Err(e) => return tracing::error!(error = %e, "unreadable stored PEP item"),
            }
        } else {
            None
        };
        let event = items_event(&last.node.name, &last.item.id, payload);
        ctx.send(message(&last.owner, to, config.notification_type, event, Some(last.item.published_at))).await;
    }

    /// A subscription approved: `stanza` (`subscribed` from the owner to a local contact)
    /// made the contact a new subscriber of the owner's nodes (XEP-0163 §4.3.3): its
    /// available resources get the last items they want. Runs after the presence module
    /// recorded the change (which lets the stanza through only then).
    pub(super) async fn subscription_approved(self: Arc<Self>, ctx: Ctx, stanza: Stanza) -> Flow {
        if stanza.presence_type() == Some(PresenceType::Subscribed)
            && let Some(to) = &stanza.to
            && ctx.core.is_local_account(&stanza.from)
        {
            let contact = to.to_bare();
            let owner = stanza.from.to_bare();
            if contact != owner {
                let core = ctx.core.clone();
                ctx.core.spawn(async move { self.new_subscriber(Ctx::new(core), owner, contact).await });
            }
        }
        Flow::Continue(stanza)
    }

    async fn new_subscriber(&self, ctx: Ctx, owner: BareJid, contact: BareJid) {
        let resources: Vec<(FullJid, Arc<caps::Interest>)> = ctx
            .core
            .sessions
            .resources(&contact)
            .into_iter()
            .filter(|r| r.available)
            .filter_map(|r| self.caps.interest(&r.jid).map(|i| (r.jid, i)))
            .collect();
        if resources.is_empty() {
            return;
        }
        let items = match self.store.contacts_last_items(std::slice::from_ref(&owner), &contact).await {
            Ok(items) => items,
            Err(e) => return tracing::error!(error = %e, "cannot load the last PEP items"),
        };
        for last in items.iter().filter(|l| l.node.config.send_last != SendLast::Never) {
            if !self.contact_allowed(&ctx, last, &contact).await {
                continue;
            }
            for (jid, interest) in &resources {
                if interest.wants(&last.node.name) {
                    self.send_last(&ctx, last, Jid::from(jid.clone())).await;
                }
            }
        }
    }

    pub(super) async fn session_closed(self: Arc<Self>, _: Ctx, event: SessionEvent) {
        self.caps.forget(&event.jid);
        if event.last_session {
            self.forget_avatar(&event.jid.to_bare());
        }
    }
}
