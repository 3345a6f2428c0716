//! Who gets notifications (XEP-0163 §4), and when the last published items are sent: to a
//! resource that becomes available showing interest in nodes (§4.3.2), to a contact whose
//! subscription was just approved (a new subscriber, §4.3.3), and to explicit subscribers.
//!
//! Notifications are routed like any message from the owner's bare JID, so that both block
//! lists apply (§4.3.2 item 3: nothing goes to a subscriber the owner blocked). They go to
//! the full JIDs of available resources that asked for them through their capabilities
//! (XEP-0060 §9.2), as headlines, which are never stored offline.
//!
//! Contacts on other servers are served the same way, through the federation link: their
//! resources are known from the presence their servers send to local accounts (kept in
//! `caps.rs`, only for accounts whose rosters name them), their capabilities are asked
//! about across the link, and the same access rules apply (the owner's roster decides,
//! never where the contact is). A resource is forgotten on its unavailable presence, and
//! when a notification to it comes back as an error saying it cannot be reached.

use std::collections::HashSet;
use std::sync::Arc;

use jid::{BareJid, FullJid, Jid};

use super::{PUBSUB_EVENT, Pep, caps};
use crate::core::Core;
use crate::modules::{Ctx, Flow, SessionEvent};
use crate::stanza::{Kind, MessageType, PresenceType, Stanza, new_id};
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

/// Whether a JID is on another server (neither a served domain nor one of its services).
fn is_remote(core: &Core, jid: &Jid) -> bool {
    let domain = jid.domain().as_str();
    !core.is_local_domain(domain) && core.modules.service(domain).is_none()
}

/// Errors that say a notification's recipient cannot be reached (RFC 6120 §8.3.3): its
/// server, or the resource itself, is gone.
const UNREACHABLE: &[&str] =
    &["remote-server-not-found", "remote-server-timeout", "recipient-unavailable", "service-unavailable", "item-not-found", "gone"];

/// The defined condition of an error stanza.
fn error_condition(el: &Element) -> Option<&str> {
    let error = el.children().find(|c| c.name() == "error")?;
    error.children().find(|c| c.ns() == ns::XMPP_STANZAS && c.name() != "text").map(|c| c.name())
}

/// Whether an incoming presence may concern the table of remote resources or a new
/// subscriber (a cheap test: the hook runs only for these; the rest is checked there).
pub(super) fn presence_in_wanted(stanza: &Stanza) -> bool {
    match stanza.presence_type() {
        Some(PresenceType::Subscribed) => true,
        Some(PresenceType::Available | PresenceType::Unavailable) => {
            stanza.from.resource().is_some() && stanza.to.as_ref().is_some_and(|to| to.domain() != stanza.from.domain())
        }
        _ => false,
    }
}

/// Whether an outgoing stanza is an approval, which may make a remote contact a new
/// subscriber (whether the contact is remote is checked in the hook).
pub(super) fn approval_out_wanted(stanza: &Stanza) -> bool {
    stanza.presence_type() == Some(PresenceType::Subscribed)
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
    /// contacts (subscription `from` or `both` in the owner's roster), here or on other
    /// servers, that want the node (filtered notifications), as the access model allows;
    /// and explicit subscribers still allowed to read the node, unless one of their
    /// resources is among the others. The work is the owner's roster and one lookup per
    /// contact.
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
                        } else {
                            // Its resources that are available to the owner (their
                            // presence came here), from the table of remote resources.
                            targets.extend(self.caps.remote_wanting(&item.jid, owner, &node.name));
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
                        ctx.core.spawn(self.clone().became_interested(ctx.core.clone(), full, update, None));
                    }
                }
                Some(PresenceType::Unavailable) => self.caps.forget(&full),
                _ => {}
            }
        }
        Flow::Continue(stanza)
    }

    /// A resource's capabilities are new or changed: find out what they mean, and send it
    /// the last items of the nodes it wants now and did not before. A local resource (no
    /// `asker`) is asked as its own account and gets its own and its contacts' items; a
    /// remote one is asked as `asker`, one of the local accounts it is available to, and
    /// gets the items of each of those accounts.
    async fn became_interested(self: Arc<Self>, core: Core, jid: FullJid, update: caps::Update, asker: Option<BareJid>) {
        let ctx = Ctx::new(core);
        let remote = asker.is_some();
        let asker = asker.unwrap_or_else(|| jid.to_bare());
        let interest = self.caps.resolve(&ctx, &jid, &asker, update.advert.as_ref()).await;
        let Some(contacts) = self.caps.settle(&jid, update.generation, interest.clone()) else { return };
        let wanted: HashSet<&str> = interest.added_since(update.before.as_deref()).collect();
        if wanted.is_empty() {
            return;
        }
        if !remote {
            return self.send_last_items(&ctx, &jid, &wanted).await;
        }
        for owner in &contacts {
            self.send_owner_last_items(&ctx, owner, &jid, &wanted).await;
        }
    }

    /// The last item of each node of `owner` (a local account) that `to`, a contact's
    /// resource on another server, wants, for nodes that send it on presence and that the
    /// access model lets the contact read.
    async fn send_owner_last_items(&self, ctx: &Ctx, owner: &BareJid, to: &FullJid, wanted: &HashSet<&str>) {
        let contact = to.to_bare();
        let items = match self.store.contacts_last_items(std::slice::from_ref(owner), &contact).await {
            Ok(items) => items,
            Err(e) => return tracing::error!(error = %e, "cannot load the last PEP items"),
        };
        for last in items.iter().filter(|l| wanted.contains(l.node.name.as_str()) && l.node.config.send_last == SendLast::OnSubAndPresence) {
            if self.contact_allowed(ctx, last, &contact).await {
                self.send_last(ctx, last, Jid::from(to.clone())).await;
            }
        }
    }

    /// Presence a contact's resource on another server sent to a local account (a
    /// `StanzaIn` hook): its available presence makes it known, with the account among those
    /// it is available to, and its capabilities (the notifications it wants) asked about if
    /// new; its unavailable presence takes it back. Only resources of the account's roster
    /// contacts are kept (anyone can send presence); one without capabilities wants nothing
    /// and is not kept either.
    async fn remote_presence(self: &Arc<Self>, ctx: &Ctx, stanza: &Stanza) {
        let Ok(full) = stanza.from.clone().try_into_full() else { return };
        let Some(account) = stanza.to.as_ref().map(Jid::to_bare) else { return };
        if stanza.presence_type() == Some(PresenceType::Unavailable) {
            return self.caps.remote_unavailable(&full, &account);
        }
        let advert = caps::advert(&stanza.el);
        if !self.caps.sees(&full, &account) {
            if advert.is_none() {
                return;
            }
            // A subscription either way: `from` makes it a subscriber now, `to` (its
            // presence comes here) one once the account approves it (§4.3.3).
            match ctx.core.rosters.item(&account, &full.to_bare()).await {
                Ok(Some(item)) if item.subscription.has_from() || item.subscription.has_to() => {}
                Ok(_) => return,
                Err(e) => return tracing::error!(error = %e, "cannot read the roster for a remote contact's presence"),
            }
        }
        let seen = self.caps.remote_presence(&full, &account, advert);
        if let Some(interest) = seen.known {
            let (this, core, jid, owner) = (self.clone(), ctx.core.clone(), full.clone(), account.clone());
            ctx.core.spawn(async move {
                let wanted: HashSet<&str> = interest.added_since(None).collect();
                this.send_owner_last_items(&Ctx::new(core), &owner, &jid, &wanted).await;
            });
        }
        if let Some(update) = seen.update {
            // Apart from the stream's task: the answer comes in on a stream from that server,
            // maybe this one.
            ctx.core.spawn(self.clone().became_interested(ctx.core.clone(), full, update, Some(account)));
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

    /// Presence for a local account (a `StanzaIn` hook, for what [`presence_in_wanted`]
    /// lets through): an approval from a local owner to a local contact, or presence from
    /// a contact's resource on another server (see `remote_presence`).
    pub(super) async fn presence_in(self: Arc<Self>, ctx: Ctx, stanza: Stanza) -> Flow {
        match stanza.presence_type() {
            Some(PresenceType::Subscribed) => self.subscription_approved(&ctx, &stanza),
            Some(PresenceType::Available | PresenceType::Unavailable) if is_remote(&ctx.core, &stanza.from) => {
                self.remote_presence(&ctx, &stanza).await
            }
            _ => {}
        }
        Flow::Continue(stanza)
    }

    /// A subscription approved: `stanza` (`subscribed` from the owner to a local contact)
    /// made the contact a new subscriber of the owner's nodes (XEP-0163 §4.3.3): its
    /// available resources get the last items they want. Runs after the presence module
    /// recorded the change (which lets the stanza through only then).
    fn subscription_approved(self: &Arc<Self>, ctx: &Ctx, stanza: &Stanza) {
        if let Some(to) = &stanza.to
            && ctx.core.is_local_account(&stanza.from)
        {
            let contact = to.to_bare();
            let owner = stanza.from.to_bare();
            if contact != owner {
                let (this, core) = (self.clone(), ctx.core.clone());
                ctx.core.spawn(async move { this.new_subscriber(Ctx::new(core), owner, contact).await });
            }
        }
    }

    /// The same for a contact on another server (a `StanzaOut` hook: the approval leaves
    /// once the presence module recorded it): its resources available to the owner get
    /// the last items they want.
    pub(super) async fn approval_out(self: Arc<Self>, ctx: Ctx, stanza: Stanza) -> Flow {
        if let Some(to) = &stanza.to
            && is_remote(&ctx.core, to)
            && ctx.core.is_local_account(&stanza.from)
        {
            let (contact, owner) = (to.to_bare(), stanza.from.to_bare());
            let (this, core) = (self.clone(), ctx.core.clone());
            ctx.core.spawn(async move { this.new_subscriber(Ctx::new(core), owner, contact).await });
        }
        Flow::Continue(stanza)
    }

    /// An error message for a local account (a `StanzaIn` hook, for errors from a remote
    /// resource kept here): XEP-0163 §4.3.1 sends a notification's errors to the owner's
    /// bare JID, so that the service can act on them. One that says the resource cannot be
    /// reached (its server is down, or it is gone without an unavailable presence reaching
    /// us) makes it forgotten: nothing more is sent to it until its next presence.
    pub(super) async fn error_in(self: Arc<Self>, _: Ctx, stanza: Stanza) -> Flow {
        if let Ok(full) = stanza.from.clone().try_into_full()
            && error_condition(&stanza.el).is_some_and(|c| UNREACHABLE.contains(&c))
        {
            tracing::debug!(jid = %full, "a remote resource cannot be reached; no more PEP notifications to it");
            self.caps.forget_remote(&full);
        }
        Flow::Continue(stanza)
    }

    /// Whether an incoming message is an error from a remote resource kept here.
    pub(super) fn error_in_wanted(&self, stanza: &Stanza) -> bool {
        stanza.kind == Kind::Message
            && stanza.message_type() == MessageType::Error
            && stanza.from.resource().is_some()
            && stanza.from.clone().try_into_full().is_ok_and(|full| self.caps.is_remote(&full))
    }

    async fn new_subscriber(&self, ctx: Ctx, owner: BareJid, contact: BareJid) {
        let resources: Vec<(FullJid, Arc<caps::Interest>)> = if ctx.core.is_local_account(&Jid::from(contact.clone())) {
            ctx.core
                .sessions
                .resources(&contact)
                .into_iter()
                .filter(|r| r.available)
                .filter_map(|r| self.caps.interest(&r.jid).map(|i| (r.jid, i)))
                .collect()
        } else {
            self.caps.remote_interests(&contact, &owner)
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stanza(xml: &str) -> Stanza {
        Stanza::from_stored(xml::parse_element(xml).unwrap()).unwrap()
    }

    #[test]
    fn which_presence_the_hook_looks_at() {
        let wanted = |xml: &str| presence_in_wanted(&stanza(xml));
        // From a resource of another domain: available and unavailable.
        assert!(wanted("<presence xmlns='jabber:client' from='bob@b.example/r' to='alice@a.example'/>"));
        assert!(wanted("<presence xmlns='jabber:client' from='bob@b.example/r' to='alice@a.example/x' type='unavailable'/>"));
        // Same domain (a local contact: the session's own hooks handle it), bare JIDs,
        // and other types are not.
        assert!(!wanted("<presence xmlns='jabber:client' from='bob@a.example/r' to='alice@a.example'/>"));
        assert!(!wanted("<presence xmlns='jabber:client' from='b.example' to='alice@a.example'/>"));
        assert!(!wanted("<presence xmlns='jabber:client' from='bob@b.example/r' to='alice@a.example' type='probe'/>"));
        assert!(!wanted("<presence xmlns='jabber:client' from='bob@b.example/r' to='alice@a.example' type='error'/>"));
        // Approvals always (a local owner to a local contact).
        assert!(wanted("<presence xmlns='jabber:client' from='bob@a.example' to='alice@a.example' type='subscribed'/>"));
        assert!(approval_out_wanted(&stanza("<presence xmlns='jabber:client' from='a@a.example' to='b@b.example' type='subscribed'/>")));
        assert!(!approval_out_wanted(&stanza("<presence xmlns='jabber:client' from='a@a.example' to='b@b.example' type='subscribe'/>")));
    }

    #[test]
    fn error_conditions() {
        let el = |inner: &str| xml::parse_element(&format!("<message xmlns='jabber:client' type='error'>{inner}</message>")).unwrap();
        let unreachable = el("<error type='cancel'><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>down</text><remote-server-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>");
        assert_eq!(error_condition(&unreachable), Some("remote-server-not-found"));
        assert!(UNREACHABLE.contains(&"remote-server-not-found"));
        let other = el("<error type='modify'><not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>");
        assert_eq!(error_condition(&other), Some("not-acceptable"));
        assert!(!UNREACHABLE.contains(&"not-acceptable"));
        assert_eq!(error_condition(&el("<error type='cancel'/>")), None);
        assert_eq!(error_condition(&el("")), None);
    }
}
