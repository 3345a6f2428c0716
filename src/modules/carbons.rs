//! Message Carbons (XEP-0280 v1.0.1): a resource that enables carbons gets a copy of every
//! instant message its account sends from another resource (`<sent/>`) or receives on
//! another resource (`<received/>`), each wrapped in a XEP-0297 `<forwarded/>`.
//!
//! Which resources enabled carbons is kept here, in memory, per account: a copy costs a map
//! lookup and a queue send per enabled resource, never a database round trip. Copies are
//! handed straight to the resources' queues, not routed: they are the server speaking for
//! the account, and no hook must see them a second time (a copy that fails is dropped, so
//! that no error about it can reach the original sender, §9.3).

use std::sync::Arc;

use dashmap::DashMap;
use jid::{BareJid, FullJid};

use super::{Ctx, Delivered, Deps, Flow, Hook, IqRequest, Kinds, IqResult, Module, Registrar, Scope, SessionEvent, SessionHook};
use crate::stanza::{IqType, Kind, MessageType, Stanza, StanzaError};
use crate::xml::{self, Element, ns};

/// XEP-0184 delivery receipts, XEP-0333 chat markers: IM payloads of §6.1.
const RECEIPTS: &str = "urn:xmpp:receipts";
const CHAT_MARKERS: &str = "urn:xmpp:chat-markers:0";
/// XEP-0249 direct MUC invitations.
const CONFERENCE: &str = "jabber:x:conference";
/// XEP-0045 `<x/>` of MUC traffic: private messages, mediated invitations.
const MUC_USER: &str = "http://jabber.org/protocol/muc#user";

pub struct Carbons {
    /// The resources of each account that enabled carbons (§4), default none. An entry
    /// lives while one of its resources has carbons on: the map holds online accounts only.
    /// (By the bare JID's text, so that routing asks without making a `BareJid`.)
    enabled: DashMap<Box<str>, Vec<FullJid>>,
}

impl Module for Carbons {
    const NAME: &'static str = "carbons";

    fn build(_: &Deps) -> Self {
        Carbons { enabled: DashMap::new() }
    }

    fn register(self: Arc<Self>, reg: &mut Registrar) {
        // §3: the server's disco#info shows it (Account-scope IQs are advertised there too).
        reg.iq(Scope::Account, IqType::Set, "enable", ns::CARBONS, &self, Self::enable);
        reg.iq(Scope::Account, IqType::Set, "disable", ns::CARBONS, &self, Self::disable);
        // Forged wrappers go before anything else (an archive, say) sees the message; only
        // the block list, which may drop it altogether, comes first.
        reg.hook(Hook::StanzaOut, Kinds::MESSAGE, 90, &self, Self::guard);
        reg.hook_when(Hook::StanzaIn, Kinds::MESSAGE, 90, &self, |_, stanza| is_carbon(&stanza.el), Self::guard);
        // Copies of what a client sends, once every other hook let it through (a blocked
        // message is not copied) and stamped what it stamps.
        reg.hook(Hook::StanzaOut, Kinds::MESSAGE, -100, &self, Self::sent);
        reg.delivered(0, &self, |carbons, account| carbons.enabled.contains_key(account), Self::received);
        reg.session_hook(SessionHook::Bound, 0, &self, Self::forget);
        reg.session_hook(SessionHook::Closed, 0, &self, Self::forget);
    }
}

/// Which way a copied message went, seen from the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Sent by another resource of the account (§8).
    Sent,
    /// Received by the account (§7).
    Received,
}

impl Direction {
    fn element_name(self) -> &'static str {
        match self {
            Direction::Sent => "sent",
            Direction::Received => "received",
        }
    }
}

/// RFC 6121 §5.2.2, as `Stanza::message_type` reads it.
fn message_type(message: &Element) -> MessageType {
    match message.attr("type") {
        Some("chat") => MessageType::Chat,
        Some("groupchat") => MessageType::Groupchat,
        Some("headline") => MessageType::Headline,
        Some("error") => MessageType::Error,
        _ => MessageType::Normal,
    }
}

/// A `<sent/>` or `<received/>` wrapper among the message's children.
fn is_carbon_wrapper(el: &Element) -> bool {
    el.has_ns(ns::CARBONS) && matches!(el.name(), "sent" | "received")
}

/// Whether a message carries a carbon copy (genuine or not).
pub fn is_carbon(message: &Element) -> bool {
    message.children().any(is_carbon_wrapper)
}

/// §6.1, the recommended rules: is this message copied? `direction` matters for the MUC
/// rules only: a private message from a MUC occupant is not copied (the room already sends it
/// to every joined client), one to an occupant is.
fn eligible(message: &Element, direction: Direction) -> bool {
    let kind = message_type(message);
    // Never a copy of a copy; §8: never a message marked private.
    if is_carbon(message) || message.has_child("private", ns::CARBONS) {
        return false;
    }
    // XEP-0334 §4.3 `<no-copy/>` asks for the same; hints in errors are ignored (§5 there:
    // an error often carries the payload of the stanza it answers).
    if kind != MessageType::Error && message.has_child("no-copy", ns::HINTS) {
        return false;
    }
    if kind == MessageType::Groupchat {
        return false;
    }
    let muc_x = message.get_child("x", MUC_USER);
    let mediated_invitation = muc_x.is_some_and(|x| x.has_child("invite", MUC_USER));
    if direction == Direction::Received && muc_x.is_some() && !mediated_invitation {
        return false;
    }
    let im_payload = message.children().any(|c| c.has_ns(RECEIPTS) || c.has_ns(ns::CHATSTATES) || c.has_ns(CHAT_MARKERS));
    let direct_invitation = message.has_child("x", CONFERENCE);
    match kind {
        MessageType::Chat => true,
        MessageType::Normal if message.has_child("body", ns::CLIENT) => true,
        // Errors are copied when they answer an eligible message; which message an error
        // answers is not tracked, and errors a client gets are almost all answers to its
        // chats (a groupchat error comes from a room and carries its `<x/>`, excluded above
        // for received ones).
        MessageType::Error => true,
        _ => im_payload || direct_invitation || mediated_invitation,
    }
}

/// The copy for `to`: §7/§8, a message from the account's bare JID to the resource, of the
/// original's type, carrying the original in `<forwarded/>` inside `<sent/>`/`<received/>`.
fn wrap(direction: Direction, account: &BareJid, to: &FullJid, original: Element) -> Element {
    let mut copy = xml::element("message", ns::CLIENT, &[("from", account.as_str()), ("to", to.as_str())]);
    if let Some(kind) = original.attr("type") {
        xml::set_attr(&mut copy, "type", kind);
    }
    let mut forwarded = Element::bare("forwarded", ns::FORWARD);
    forwarded.append_child(original);
    let mut wrapper = Element::bare(direction.element_name(), ns::CARBONS);
    wrapper.append_child(forwarded);
    copy.append_child(wrapper);
    copy
}

/// §11: a client believes a carbon that comes from its own bare JID, and only the server
/// writes those. A wrapper in a message from anyone else (another account, or one of the
/// account's own clients, whose `from` is always its full JID) is a forgery: it is removed,
/// and a message left with nothing in it is dropped. Returns whether it should be delivered.
fn strip_forged(stanza: &mut Stanza) -> bool {
    let account = stanza.to_or_self_bare();
    let from_account = stanza.from.resource().is_none() && stanza.from.to_bare() == account;
    if from_account || !is_carbon(&stanza.el) {
        return true;
    }
    tracing::debug!(from = %stanza.from, "removing a forged carbon wrapper");
    stanza.el.retain_children(|c| !is_carbon_wrapper(c));
    stanza.el.children().next().is_some()
}

impl Carbons {
    /// §4/§5: only a resource of the account may turn its own carbons on or off; anyone else
    /// (another account, another server) gets `<not-allowed/>` as §4.1 and §5.1 recommend.
    fn requester(req: &IqRequest) -> Result<FullJid, StanzaError> {
        if !req.from_self() {
            return Err(StanzaError::not_allowed().with_text("carbons are enabled by the account's own resources"));
        }
        req.from.clone().try_into_full().map_err(|_| StanzaError::not_allowed())
    }

    /// §4; enabling twice is not an error (§10.1).
    async fn enable(self: Arc<Self>, _ctx: Ctx, req: IqRequest) -> IqResult {
        let resource = Self::requester(&req)?;
        let mut entry = self.enabled.entry(resource.to_bare().as_str().into()).or_insert_with(|| Vec::with_capacity(1));
        if !entry.contains(&resource) {
            entry.push(resource);
        }
        Ok(None)
    }

    /// §5; disabling twice is not an error (§10.1).
    async fn disable(self: Arc<Self>, _ctx: Ctx, req: IqRequest) -> IqResult {
        let resource = Self::requester(&req)?;
        self.remove(&resource);
        Ok(None)
    }

    fn remove(&self, resource: &FullJid) {
        let account = resource.to_bare();
        if let Some(mut entry) = self.enabled.get_mut(account.as_str()) {
            entry.retain(|r| r != resource);
        }
        self.enabled.remove_if(account.as_str(), |_, v| v.is_empty());
    }

    /// A new session starts with carbons off, whatever a session of the same full JID
    /// before it had; a session that ends takes its state with it.
    async fn forget(self: Arc<Self>, _ctx: Ctx, event: SessionEvent) {
        self.remove(&event.jid);
    }

    /// StanzaOut and StanzaIn: see [`strip_forged`]. (A genuine copy left in the queue of a
    /// session that ended is not passed on to another resource or to offline storage: the
    /// router keeps what the server wrote for one resource to that resource.)
    async fn guard(self: Arc<Self>, _ctx: Ctx, mut stanza: Stanza) -> Flow {
        if stanza.kind != Kind::Message {
            return Flow::Continue(stanza);
        }
        match strip_forged(&mut stanza) {
            true => Flow::Continue(stanza),
            false => Flow::Handled,
        }
    }

    /// §8: a message a client sends goes, as `<sent/>`, to the account's other resources
    /// with carbons on. Not for messages to the account itself: those are copied as received
    /// ones, once.
    async fn sent(self: Arc<Self>, ctx: Ctx, stanza: Stanza) -> Flow {
        if stanza.kind != Kind::Message {
            return Flow::Continue(stanza);
        }
        // Sent by this session's client (not by the server on the account's behalf, such
        // as a bounce from the account's bare JID).
        let Some(sender) = ctx.session_jid().filter(|s| s.as_str() == stanza.from.as_str()) else {
            return Flow::Continue(stanza);
        };
        let account = sender.to_bare();
        if stanza.to_or_self().to_bare() == account || !self.enabled.contains_key(account.as_str()) {
            return Flow::Continue(stanza);
        }
        if eligible(&stanza.el, Direction::Sent) {
            let sender = sender.clone();
            self.copy(&ctx, Direction::Sent, &account, &stanza.el, |r| *r == sender).await;
        }
        Flow::Continue(stanza)
    }

    /// §7: a message delivered to the account goes, as `<received/>`, to every resource with
    /// carbons on that did not get it (whether or not any resource got it: one with a
    /// negative priority takes no message for the bare JID, but sees it this way), except
    /// the sender when the account writes to itself.
    async fn received(self: Arc<Self>, ctx: Ctx, delivered: Arc<Delivered>) {
        // Rerouted messages were copied when first routed.
        if ctx.is_rerouting() {
            return;
        }
        let stanza = &delivered.stanza;
        let account = stanza.to_or_self().to_bare();
        if !self.enabled.contains_key(account.as_str()) || !eligible(&stanza.el, Direction::Received) {
            return;
        }
        let skip = |r: &FullJid| delivered.to.contains(r) || r.as_str() == stanza.from.as_str();
        self.copy(&ctx, Direction::Received, &account, &stanza.el, skip).await;
    }

    /// Hand a copy to each available resource of `account` with carbons on, but those `skip`
    /// names. A copy that cannot be handed over is dropped (§9.3: no error goes anywhere).
    async fn copy(&self, ctx: &Ctx, direction: Direction, account: &BareJid, original: &Element, skip: impl Fn(&FullJid) -> bool) {
        // Copied out: no map reference is held across an await.
        let Some(enabled) = self.enabled.get(account.as_str()).map(|e| e.clone()) else { return };
        let resources = ctx.core.sessions.resources(account);
        for target in enabled {
            let available = resources.iter().any(|r| r.jid == target && r.available);
            if !available || skip(&target) {
                continue;
            }
            let copy = wrap(direction, account, &target, original.clone());
            let _ = ctx.deliver(&target, copy).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jid::Jid;

    fn parse(x: &str) -> Element {
        xml::parse_element(x).unwrap()
    }

    fn copied(x: &str, direction: Direction) -> bool {
        eligible(&parse(x), direction)
    }

    /// §6.1, each rule in turn.
    #[test]
    fn eligibility() {
        use Direction::{Received, Sent};
        let both = |x: &str| copied(x, Sent) && copied(x, Received);
        let neither = |x: &str| !copied(x, Sent) && !copied(x, Received);
        // Type chat, with or without a body.
        assert!(both("<message xmlns='jabber:client' type='chat'><body>hi</body></message>"));
        assert!(both("<message xmlns='jabber:client' type='chat'/>"));
        // Normal (absent or unknown type) with a body; not without.
        assert!(both("<message xmlns='jabber:client'><body>hi</body></message>"));
        assert!(both("<message xmlns='jabber:client' type='normal'><body>hi</body></message>"));
        assert!(both("<message xmlns='jabber:client' type='bogus'><body>hi</body></message>"));
        assert!(neither("<message xmlns='jabber:client' type='normal'><subject>s</subject></message>"));
        // IM payloads without a body, whatever the type.
        assert!(both("<message xmlns='jabber:client'><received xmlns='urn:xmpp:receipts' id='x'/></message>"));
        assert!(both("<message xmlns='jabber:client'><active xmlns='http://jabber.org/protocol/chatstates'/></message>"));
        assert!(both("<message xmlns='jabber:client'><displayed xmlns='urn:xmpp:chat-markers:0' id='x'/></message>"));
        assert!(both("<message xmlns='jabber:client' type='headline'><request xmlns='urn:xmpp:receipts'/></message>"));
        // Headlines are not IM.
        assert!(neither("<message xmlns='jabber:client' type='headline'><body>news</body></message>"));
        // Errors.
        assert!(both("<message xmlns='jabber:client' type='error'><error type='cancel'/></message>"));
        // Private, and the no-copy hint (ignored in errors).
        assert!(neither("<message xmlns='jabber:client' type='chat'><body>x</body><private xmlns='urn:xmpp:carbons:2'/><no-copy xmlns='urn:xmpp:hints'/></message>"));
        assert!(neither("<message xmlns='jabber:client' type='chat'><body>x</body><private xmlns='urn:xmpp:carbons:2'/></message>"));
        assert!(neither("<message xmlns='jabber:client' type='chat'><body>x</body><no-copy xmlns='urn:xmpp:hints'/></message>"));
        assert!(both("<message xmlns='jabber:client' type='error'><no-copy xmlns='urn:xmpp:hints'/></message>"));
        // A carbon is never copied again.
        assert!(neither("<message xmlns='jabber:client' type='chat'><sent xmlns='urn:xmpp:carbons:2'/></message>"));
        assert!(neither("<message xmlns='jabber:client' type='chat'><received xmlns='urn:xmpp:carbons:2'/></message>"));
        // MUC: groupchat never; invitations always; private messages only when sent.
        assert!(neither("<message xmlns='jabber:client' type='groupchat'><body>x</body></message>"));
        assert!(neither("<message xmlns='jabber:client' type='groupchat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>"));
        assert!(both("<message xmlns='jabber:client'><x xmlns='jabber:x:conference' jid='room@muc.example'/></message>"));
        assert!(both("<message xmlns='jabber:client'><x xmlns='http://jabber.org/protocol/muc#user'><invite from='a@b'/></x></message>"));
        let pm = "<message xmlns='jabber:client' type='chat'><body>psst</body><x xmlns='http://jabber.org/protocol/muc#user'/></message>";
        assert!(copied(pm, Sent));
        assert!(!copied(pm, Received));
    }

    #[test]
    fn copy_wraps_the_original() {
        let original = parse("<message xmlns='jabber:client' from='juliet@capulet.example/balcony' to='romeo@montague.example/garden' type='chat'><body>b</body></message>");
        let account = BareJid::new("romeo@montague.example").unwrap();
        let home = FullJid::new("romeo@montague.example/home").unwrap();
        let copy = wrap(Direction::Received, &account, &home, original.clone());
        assert_eq!(copy.attr("from"), Some("romeo@montague.example"));
        assert_eq!(copy.attr("to"), Some("romeo@montague.example/home"));
        assert_eq!(copy.attr("type"), Some("chat"));
        let inner = copy.get_child("received", ns::CARBONS).unwrap().get_child("forwarded", ns::FORWARD).unwrap().get_child("message", ns::CLIENT).unwrap();
        assert_eq!(inner, &original);
        // The forwarded message keeps its namespace when written (XEP-0297 §3.2).
        let text = xml::to_string(&copy);
        let reread = parse(&text);
        let inner = reread.get_child("received", ns::CARBONS).unwrap().get_child("forwarded", ns::FORWARD).unwrap();
        assert!(inner.has_child("message", ns::CLIENT), "{text}");
        // No type on the original, none on the copy.
        let copy = wrap(Direction::Sent, &account, &home, parse("<message xmlns='jabber:client'><body>b</body></message>"));
        assert_eq!(copy.attr("type"), None);
        assert!(copy.has_child("sent", ns::CARBONS));
    }

    fn stanza(from: &str, to: Option<&str>, x: &str) -> Stanza {
        let el = parse(x);
        Stanza { kind: Kind::Message, from: Jid::new(from).unwrap(), to: to.map(|t| Jid::new(t).unwrap()), el }
    }

    #[test]
    fn forged_wrappers_are_removed() {
        let forged = "<message xmlns='jabber:client' type='chat'><received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' from='juliet@capulet.example/balcony' type='chat'><body>meet me</body></message></forwarded></received></message>";
        // Another account: removed, and nothing is left.
        let mut s = stanza("tybalt@capulet.example/home", Some("romeo@montague.example"), forged);
        assert!(!strip_forged(&mut s));
        // One of the account's own clients: still a forgery.
        let mut s = stanza("romeo@montague.example/home", Some("romeo@montague.example/garden"), forged);
        assert!(!strip_forged(&mut s));
        let mut s = stanza("romeo@montague.example/home", None, forged);
        assert!(!strip_forged(&mut s));
        // With a body besides: the body goes on without the wrapper.
        let with_body = forged.replace("<received ", "<body>hello</body><sent ").replace("</received>", "</sent>");
        let mut s = stanza("tybalt@capulet.example/home", Some("romeo@montague.example"), &with_body);
        assert!(strip_forged(&mut s));
        assert!(!is_carbon(&s.el));
        assert_eq!(s.el.get_child("body", ns::CLIENT).unwrap().text(), "hello");
        // From the account's bare JID: the server's own copy, kept.
        let mut s = stanza("romeo@montague.example", Some("romeo@montague.example/garden"), forged);
        assert!(strip_forged(&mut s));
        assert!(is_carbon(&s.el));
        // Other namespaces and names are left alone.
        let other = "<message xmlns='jabber:client'><received xmlns='urn:xmpp:receipts' id='1'/></message>";
        let mut s = stanza("tybalt@capulet.example/home", Some("romeo@montague.example"), other);
        assert!(strip_forged(&mut s));
        assert!(s.el.has_child("received", "urn:xmpp:receipts"));
    }
}
