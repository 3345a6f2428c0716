//! Blocking command (XEP-0191 v1.3). The block list of an online account is kept in memory,
//! so that filtering a message between two online users costs no database round trip.

use std::collections::HashSet;
use std::sync::Arc;

use dashmap::DashMap;
use jid::{BareJid, FullJid, Jid};
use crate::xml::Element;

use super::{Ctx, Deps, Flow, Hook, IqRequest, Kinds, IqResult, Module, Registrar, Scope, SessionEvent, SessionHook};
use crate::router;
use crate::rosters::RosterSnapshot;
use crate::stanza::{Condition, bare_of, bare_str, IqType, Kind, PresenceType, Stanza, StanzaError};
use crate::storage::BlocklistStore;
use crate::xml::{self, ns};

pub struct Blocking {
    store: BlocklistStore,
    /// Block lists of accounts with sessions.
    /// By the owner's bare JID as text, so that a stanza's `to` finds it as it is.
    cache: DashMap<Box<str>, Arc<HashSet<String>>>,
    /// Resources that retrieved the block list, and so get pushes (§3.3).
    interested: DashMap<BareJid, HashSet<FullJid>>,
}

impl Module for Blocking {
    const NAME: &'static str = "blocking";

    fn build(deps: &Deps) -> Self {
        Blocking { store: deps.db.blocklist(), cache: DashMap::new(), interested: DashMap::new() }
    }

    fn register(self: Arc<Self>, reg: &mut Registrar) {
        reg.iq(Scope::Account, IqType::Get, "blocklist", ns::BLOCKING, &self, Self::get);
        reg.iq(Scope::Account, IqType::Set, "block", ns::BLOCKING, &self, Self::block);
        reg.iq(Scope::Account, IqType::Set, "unblock", ns::BLOCKING, &self, Self::unblock);
        // Before everything else touches the stanza.
        reg.hook(Hook::StanzaOut, Kinds::ALL, 100, &self, Self::outbound);
        reg.hook_when(Hook::StanzaIn, Kinds::ALL, 100, &self, Self::may_block_inbound, Self::inbound);
        reg.session_hook(SessionHook::Bound, 0, &self, Self::bound);
        reg.session_hook(SessionHook::Closed, -100, &self, Self::closed);
    }
}

/// §6 JID matching: does a list entry cover `jid`? Checks, in order, the full JID, the bare
/// JID, domain/resource and the domain.
fn is_blocked(list: &HashSet<String>, jid: &Jid) -> bool {
    if list.is_empty() {
        return false;
    }
    if list.contains(jid.as_str()) {
        return true;
    }
    let domain = jid.domain().as_str();
    if jid.node().is_some() && list.contains(jid.to_bare().as_str()) {
        return true;
    }
    if let Some(resource) = jid.resource() && list.contains(&format!("{domain}/{}", resource.as_str())) {
        return true;
    }
    list.contains(domain)
}

/// §3.3: messages and IQ requests get an error back; presence and IQ answers are dropped.
fn deserves_answer(stanza: &Stanza) -> bool {
    match stanza.kind {
        Kind::Message => true,
        Kind::Iq => stanza.iq_type().is_some_and(IqType::is_request),
        Kind::Presence => false,
    }
}

/// Subscription state changes (RFC 6121 §3): `subscribed`, `unsubscribe`, `unsubscribed`.
/// They pass the user's own block list outbound: XEP-0191 stops communication, not the
/// bookkeeping of subscriptions, and a blocked contact that never learnt of a revocation
/// would keep believing itself subscribed. (Inbound, the contact's server has applied them
/// to its roster before its block list is consulted; see the presence module.) They reveal
/// nothing the contact's roster push would not show anyway.
fn changes_subscription_state(stanza: &Stanza) -> bool {
    stanza.kind == Kind::Presence
        && matches!(stanza.presence_type(), Some(PresenceType::Subscribed | PresenceType::Unsubscribe | PresenceType::Unsubscribed))
}

/// The roster contacts a block-list entry covers (§6 matching, applied to contacts), each
/// with the address that presence for it goes to: an entry with a localpart covers that
/// contact (a full JID entry: that resource only); a domain covers every contact there; a
/// domain/resource entry covers none (contacts have localparts).
fn covered<'a>(roster: &'a RosterSnapshot, entry: &'a Jid) -> Box<dyn Iterator<Item = (&'a crate::storage::RosterItem, Jid)> + 'a> {
    if entry.node().is_some() {
        let bare = entry.to_bare();
        Box::new(roster.items.iter().filter(move |i| i.jid == bare).map(move |i| (i, entry.clone())))
    } else if entry.resource().is_none() {
        Box::new(roster.items.iter().filter(move |i| i.jid.domain() == entry.domain()).map(|i| (i, Jid::from(i.jid.clone()))))
    } else {
        Box::new(std::iter::empty())
    }
}

fn items(el: &Element) -> Result<Vec<Jid>, StanzaError> {
    el.children()
        .filter(|c| c.is("item", ns::BLOCKING))
        .map(|c| {
            let jid = c.attr("jid").ok_or_else(|| StanzaError::bad_request("item without jid"))?;
            Jid::new(jid).map_err(|_| StanzaError::new(Condition::JidMalformed))
        })
        .collect()
}

impl Blocking {
    /// The block list, cached while the account has sessions.
    async fn list(&self, ctx: &Ctx, owner: &BareJid) -> Result<Arc<HashSet<String>>, StanzaError> {
        if let Some(l) = self.cache.get(owner.as_str()) {
            return Ok(l.clone());
        }
        let list = Arc::new(self.store.list(owner).await?.into_iter().collect::<HashSet<_>>());
        if ctx.core.sessions.has_sessions(owner) {
            self.cache.insert(owner.as_str().into(), list.clone());
        }
        Ok(list)
    }

    async fn get(self: Arc<Self>, ctx: Ctx, req: IqRequest) -> IqResult {
        if !req.from_self() {
            return Err(StanzaError::forbidden());
        }
        let owner = req.to.to_bare();
        if let Ok(full) = req.from.clone().try_into_full() {
            self.interested.entry(owner.clone()).or_default().insert(full);
        }
        let mut list: Vec<String> = self.list(&ctx, &owner).await?.iter().cloned().collect();
        list.sort();
        let mut el = Element::bare("blocklist", ns::BLOCKING);
        for jid in list {
            el.append_child(xml::element("item", ns::BLOCKING, &[("jid", &jid)]));
        }
        Ok(Some(el))
    }

    async fn block(self: Arc<Self>, ctx: Ctx, req: IqRequest) -> IqResult {
        if !req.from_self() {
            return Err(StanzaError::forbidden());
        }
        let owner = req.to.to_bare();
        let jids = items(req.payload())?;
        if jids.is_empty() {
            return Err(StanzaError::bad_request("block needs at least one item"));
        }
        // §3.3: contacts that may see our presence get unavailable before the block, so
        // they see us go offline (afterwards nothing reaches them). Routed, so that lists
        // already in force still apply.
        let roster = ctx.core.rosters.get(&owner, false).await?;
        let mut targets: HashSet<Jid> = HashSet::new();
        for jid in &jids {
            targets.extend(covered(&roster, jid).filter(|(i, _)| i.subscription.has_from()).map(|(_, t)| t));
        }
        let available: Vec<FullJid> = ctx.core.sessions.resources(&owner).into_iter().filter(|r| r.available).map(|r| r.jid).collect();
        for target in &targets {
            for resource in &available {
                let mut el = Element::bare("presence", ns::CLIENT);
                xml::set_attr(&mut el, "type", PresenceType::Unavailable.as_str().unwrap_or_default());
                ctx.send(Stanza::new(el, Jid::from(resource.clone()), target.clone())).await;
            }
        }
        let strings: Vec<String> = jids.iter().map(|j| j.as_str().to_string()).collect();
        self.store.add(&owner, &strings).await?;
        self.update_cache(&owner, |set| set.extend(strings.iter().cloned()));
        self.push(&ctx, &owner, req.payload());
        Ok(None)
    }

    async fn unblock(self: Arc<Self>, ctx: Ctx, req: IqRequest) -> IqResult {
        if !req.from_self() {
            return Err(StanzaError::forbidden());
        }
        let owner = req.to.to_bare();
        let jids = items(req.payload())?;
        let unblocked: Vec<Jid> = if jids.is_empty() {
            self.list(&ctx, &owner).await?.iter().filter_map(|s| Jid::new(s).ok()).collect()
        } else {
            jids.clone()
        };
        let strings: Vec<String> = jids.iter().map(|j| j.as_str().to_string()).collect();
        self.store.remove(&owner, &strings).await?;
        if strings.is_empty() {
            self.update_cache(&owner, |set| set.clear());
        } else {
            self.update_cache(&owner, |set| strings.iter().for_each(|s| { set.remove(s); }));
        }
        self.push(&ctx, &owner, req.payload());
        // §3.4: contacts allowed to see our presence (our roster says from/both) get it
        // again. Routed: a contact still covered by another entry gets nothing.
        let roster = ctx.core.rosters.get(&owner, false).await?;
        let mut presence_to: HashSet<Jid> = HashSet::new();
        let mut probe: HashSet<BareJid> = HashSet::new();
        for jid in &unblocked {
            for (item, target) in covered(&roster, jid) {
                if item.subscription.has_from() {
                    presence_to.insert(target);
                }
                if item.subscription.has_to() && ctx.core.is_local_account(&Jid::from(item.jid.clone())) {
                    probe.insert(item.jid.clone());
                }
            }
        }
        let ours = ctx.core.sessions.available_presences(&owner);
        for target in &presence_to {
            for (res, el) in &ours {
                ctx.send(Stanza::new(el.clone(), Jid::from(res.clone()), target.clone())).await;
            }
        }
        // And our available resources learn the current presence of the contacts we are
        // subscribed to, dropped while they were blocked: a probe from each, as at login
        // (answered by the contact's side from its roster; the answers for this session
        // are written to it directly, not queued by its own task). Local contacts only:
        // remote ones would be probed over s2s, which is not implemented.
        for (resource, _) in &ours {
            for contact in &probe {
                let mut el = Element::bare("presence", ns::CLIENT);
                xml::set_attr(&mut el, "type", PresenceType::Probe.as_str().unwrap_or_default());
                ctx.send(Stanza::new(el, Jid::from(resource.clone()), Jid::from(contact.clone()))).await;
            }
        }
        Ok(None)
    }

    fn update_cache(&self, owner: &BareJid, f: impl FnOnce(&mut HashSet<String>)) {
        if let Some(mut entry) = self.cache.get_mut(owner.as_str()) {
            f(Arc::make_mut(&mut entry));
        }
    }

    /// The block or unblock, as sent, to every resource that asked for the list.
    fn push(&self, ctx: &Ctx, owner: &BareJid, payload: &Element) {
        let targets: Vec<FullJid> = self.interested.get(owner).map(|s| s.iter().cloned().collect()).unwrap_or_default();
        for target in targets {
            let mut iq = xml::element("iq", ns::CLIENT, &[("type", "set"), ("id", &crate::stanza::new_id())]);
            iq.append_child(payload.clone());
            let push = Stanza::new(iq, Jid::from(owner.clone()), Jid::from(target.clone()));
            let _ = ctx.core.sessions.deliver(&target, push.el);
        }
    }

    /// §3.3: the user's stanzas to a blocked JID get `<not-acceptable/>` with `<blocked/>`.
    async fn outbound(self: Arc<Self>, ctx: Ctx, stanza: Stanza) -> Flow {
        let Some(to) = &stanza.to else { return Flow::Continue(stanza) };
        let owner = stanza.from.to_bare();
        // Never between one's own resources (§4).
        if to.to_bare() == owner || changes_subscription_state(&stanza) {
            return Flow::Continue(stanza);
        }
        let list = match self.list(&ctx, &owner).await {
            Ok(l) => l,
            Err(_) => return Flow::Continue(stanza),
        };
        if !is_blocked(&list, to) {
            return Flow::Continue(stanza);
        }
        if deserves_answer(&stanza) {
            let error = StanzaError::new(Condition::NotAcceptable).with_app(Element::bare("blocked", ns::BLOCKING_ERRORS));
            router::bounce(&ctx, &stanza, error).await;
        }
        Flow::Handled
    }

    /// §3.3: stanzas from a blocked JID: presence dropped silently, messages and IQ
    /// requests answered with `<service-unavailable/>`, as if the user were offline.
    /// A recipient whose list is known to be empty blocks nothing (most accounts, and so
    /// most copies of a room's broadcast).
    fn may_block_inbound(&self, stanza: &Stanza) -> bool {
        let Some(to) = &stanza.to else { return false };
        !self.cache.get(bare_str(to.as_str())).is_some_and(|list| list.is_empty())
    }

    async fn inbound(self: Arc<Self>, ctx: Ctx, stanza: Stanza) -> Flow {
        let Some(to) = &stanza.to else { return Flow::Continue(stanza) };
        let owner = bare_of(to);
        // The sender's bare JID compared by parts, without making it.
        if stanza.from.node() == owner.node() && stanza.from.domain() == owner.domain() {
            return Flow::Continue(stanza);
        }
        let list = match self.list(&ctx, &owner).await {
            Ok(l) => l,
            Err(_) => return Flow::Continue(stanza),
        };
        if !is_blocked(&list, &stanza.from) {
            return Flow::Continue(stanza);
        }
        if deserves_answer(&stanza) {
            router::bounce(&ctx, &stanza, StanzaError::service_unavailable()).await;
        }
        Flow::Handled
    }

    async fn bound(self: Arc<Self>, ctx: Ctx, event: SessionEvent) {
        let _ = self.list(&ctx, &event.jid.to_bare()).await;
    }

    async fn closed(self: Arc<Self>, _ctx: Ctx, event: SessionEvent) {
        let owner = event.jid.to_bare();
        if let Some(mut set) = self.interested.get_mut(&owner) {
            set.remove(&event.jid);
        }
        self.interested.remove_if(&owner, |_, s| s.is_empty());
        if event.last_session {
            self.cache.remove(owner.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_order() {
        let list: HashSet<String> = ["romeo@montague.net/orchard", "tybalt@capulet.com", "evil.example/bot", "spam.example"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let blocked = |j: &str| is_blocked(&list, &Jid::new(j).unwrap());
        assert!(blocked("romeo@montague.net/orchard"));
        assert!(!blocked("romeo@montague.net/balcony"));
        assert!(!blocked("romeo@montague.net"));
        assert!(blocked("tybalt@capulet.com"));
        assert!(blocked("tybalt@capulet.com/any"));
        assert!(blocked("evil.example/bot"));
        assert!(!blocked("evil.example"));
        assert!(blocked("spam.example"));
        assert!(blocked("anyone@spam.example/x"));
        assert!(!blocked("juliet@capulet.com"));
    }
}
