//! Presence and subscriptions (RFC 6121 §3, §4, Appendix A).
//!
//! Outbound (what a client sends): broadcasts to contacts, directed presence, and
//! subscription requests and answers, each updating the user's roster. Inbound (addressed
//! to a local account): the contact's side of the same state machine, probes, and stored
//! subscription requests for accounts that are offline. At session end, unavailable
//! presence goes to contacts and to everyone who got directed presence.
//!
//! Presence reaches another account only by routing, so that both block lists (XEP-0191,
//! the `StanzaOut`/`StanzaIn` hooks) apply, and only where the *owner's* roster allows it
//! (RFC 6121 §4.3.2, §4.4.2): probes, the client's own ones and those sent at login, are
//! routed and answered by the contact's side from the contact's roster. Subscription state
//! changes are applied to the addressed account's roster before its block list is
//! consulted: blocking stops delivery of stanzas, not the bookkeeping of subscriptions.

use std::sync::Arc;

use jid::{BareJid, FullJid, Jid};
use crate::xml::Element;

use super::{Ctx, Deps, Flow, Hook, Kinds, Module, Registrar, SessionEvent, SessionHook};
use crate::stanza::{Kind, PresenceType, Stanza, StanzaError};
use crate::storage::{RosterItem, StorageError};
use crate::xml::{self, ns};

pub struct Presence;

impl Module for Presence {
    const NAME: &'static str = "presence";

    fn build(_: &Deps) -> Self {
        Presence
    }

    fn register(self: Arc<Self>, reg: &mut Registrar) {
        reg.hook(Hook::PresenceOut, Kinds::PRESENCE, 0, &self, Self::outbound);
        // Above the block list (priority 100): the roster follows a subscription change
        // whatever the block list says; the block list then only decides delivery.
        reg.hook(Hook::StanzaIn, Kinds::PRESENCE, 200, &self, Self::subscription_state);
        reg.hook(Hook::PresenceIn, Kinds::PRESENCE, 0, &self, Self::inbound);
        reg.session_hook(SessionHook::Closed, 0, &self, Self::session_closed);
        // RFC 6121 §3.4 pre-approval is not supported, so its stream feature is not offered.
    }
}

/// `<presence/>` of a type, from and to.
fn presence(kind: PresenceType, from: Jid, to: Jid) -> Stanza {
    let mut el = Element::bare("presence", ns::CLIENT);
    if let Some(t) = kind.as_str() {
        xml::set_attr(&mut el, "type", t);
    }
    Stanza::new(el, from, to)
}

/// A copy of `el` re-addressed.
fn readdress(el: &Element, from: &Jid, to: Jid) -> Stanza {
    Stanza::new(el.clone(), from.clone(), to)
}

/// A presence as kept in the session registry: serialised, without addresses (every copy
/// sent is re-addressed).
fn stored_presence(el: &Element) -> Box<str> {
    let mut el = el.clone();
    xml::remove_attr(&mut el, "from");
    xml::remove_attr(&mut el, "to");
    xml::to_string(&el).into_boxed_str()
}

/// Subscription state changes that the contact's server records before anything else
/// (RFC 6121 §3.1.5, §3.2.3, §3.3.3). A request (`subscribe`) is not among them: from a
/// blocked JID it is dropped, not stored.
fn changes_state(stanza: &Stanza) -> Option<PresenceType> {
    match stanza.presence_type() {
        Some(k @ (PresenceType::Subscribed | PresenceType::Unsubscribe | PresenceType::Unsubscribed)) if stanza.kind == Kind::Presence => Some(k),
        _ => None,
    }
}

/// Send presence produced on the contact's side (a probe answer, a stored request) to
/// `stanza.to`. When that is the session this runs in (its login, or a probe of its own),
/// it is written there directly, ahead of anything queued: answers for a user with many
/// contacts would otherwise fill the session's queue from its own task, which is the one
/// that empties it. A direct write skips routing, so it runs the hooks routing would: the
/// probe passed both block lists on its way, but it was addressed to the contact's bare
/// JID, and the prober's list may name one of the contact's full JIDs (XEP-0191 §3.3:
/// nothing from a blocked JID reaches the user). `PresenceIn` is not run: it is this
/// module's own processing of inbound presence, already done.
async fn to_session_or_route(ctx: &Ctx, stanza: Stanza) {
    let for_this_session = ctx.session_jid().is_some_and(|j| stanza.to.as_ref().is_some_and(|t| t == &Jid::from(j.clone())));
    if !for_this_session {
        return ctx.send(stanza).await;
    }
    let modules = &ctx.core.modules;
    let stanza = if ctx.core.is_local_account(&stanza.from) {
        match modules.run_hook(Hook::StanzaOut, ctx, stanza).await {
            Flow::Continue(s) => s,
            Flow::Handled => return,
        }
    } else {
        stanza
    };
    if let Flow::Continue(stanza) = modules.run_hook(Hook::StanzaIn, ctx, stanza).await {
        ctx.reply(stanza).await;
    }
}

/// RFC 6121 §4.7.2.3: the priority, -128..=127, 0 when absent or invalid.
fn priority_of(el: &Element) -> i8 {
    el.get_child("priority", ns::CLIENT)
        .and_then(|p| p.text().trim().parse::<i16>().ok())
        .map(|p| p.clamp(-128, 127) as i8)
        .unwrap_or(0)
}

impl Presence {
    /// Presence a local client sent.
    async fn outbound(self: Arc<Self>, ctx: Ctx, stanza: Stanza) -> Flow {
        let Some(kind) = stanza.presence_type() else { return Flow::Continue(stanza) };
        let Ok(full) = stanza.from.clone().try_into_full() else { return Flow::Continue(stanza) };
        match (kind, &stanza.to) {
            (PresenceType::Available, None) => {
                self.broadcast_available(&ctx, &full, stanza.el).await;
                Flow::Handled
            }
            (PresenceType::Unavailable, None) => {
                let directed = ctx.core.sessions.with_state(&full, |s| {
                    let was = s.available;
                    s.available = false;
                    s.last = None;
                    was.then(|| std::mem::take(&mut s.directed))
                });
                if let Some(Some(directed)) = directed {
                    self.broadcast_unavailable(&ctx, &full, Some(stanza.el), directed).await;
                }
                Flow::Handled
            }
            (PresenceType::Available | PresenceType::Unavailable, Some(to)) => {
                self.track_directed(&ctx, &full, to, kind).await;
                Flow::Continue(stanza)
            }
            (k, Some(to)) if k.is_subscription() => {
                self.outbound_subscription(&ctx, &full, k, to.to_bare(), stanza.el).await;
                Flow::Handled
            }
            // Clients should not probe (RFC 6121 §4.3), but some do: the probe is routed as
            // the server's own are, through both block lists to the contact's side, which
            // answers from the contact's roster (`answer_probe`).
            (PresenceType::Probe, Some(_)) => Flow::Continue(stanza),
            // Subscription or probe without a `to`, or errors: nothing to do here.
            (PresenceType::Error, _) => Flow::Continue(stanza),
            _ => Flow::Handled,
        }
    }

    /// Initial or updated available presence (RFC 6121 §4.2, §4.4).
    async fn broadcast_available(&self, ctx: &Ctx, full: &FullJid, mut el: Element) {
        let core = &ctx.core;
        let bare = full.to_bare();
        let from = Jid::from(full.clone());
        xml::remove_attr(&mut el, "to");
        let priority = priority_of(&el);
        // One session's presence is handled by that session's task, in order: nothing
        // changes this resource's state between this read and the update below.
        let (was_available, old_priority) = core.sessions.with_state(full, |s| (s.available, s.priority)).unwrap_or((false, 0));
        let stored = stored_presence(&el);
        let update = |s: &mut crate::session::PresenceState| {
            s.available = true;
            s.priority = priority;
            s.last = Some(stored);
        };
        // XEP-0160 §3, RFC 6121 §8.5.2.1.1: messages for the bare JID, and so the stored
        // ones, go to available resources with a non-negative priority. The hook (offline
        // flush) runs when this resource becomes one: initial presence with priority >= 0,
        // or a change from a negative priority to a non-negative one.
        if priority >= 0 && !(was_available && old_priority >= 0) {
            // Under the delivery lock, the hook runs before the resource can take messages,
            // so that a message arriving meanwhile either is among the flushed ones or is
            // delivered after them.
            let _guard = core.delivery_lock(&bare).await;
            core.modules.run_session_hook(SessionHook::InitialPresence, ctx, full, None, false).await;
            core.sessions.with_state(full, update);
        } else {
            core.sessions.with_state(full, update);
        }
        if !was_available {
            self.on_login(ctx, full, &bare).await;
        }
        // To contacts with a subscription from us (from/both), and to all of our own
        // available resources, this one included.
        let roster = match core.rosters.get(&bare, true).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot load roster for presence broadcast");
                return;
            }
        };
        for item in roster.items.iter().filter(|i| i.subscription.has_from()) {
            ctx.send(readdress(&el, &from, Jid::from(item.jid.clone()))).await;
        }
        for r in core.sessions.resources(&bare) {
            if r.available {
                let _ = core.sessions.deliver(&r.jid, readdress(&el, &from, Jid::from(r.jid.clone())).el);
            }
        }
    }

    /// What a new available resource is owed (RFC 6121 §4.4.2, §3.1.3): the presence of
    /// contacts it is subscribed to, of its other resources, and stored subscription requests.
    async fn on_login(&self, ctx: &Ctx, full: &FullJid, bare: &BareJid) {
        let core = &ctx.core;
        let me = Jid::from(full.clone());
        let roster = match core.rosters.get(bare, true).await {
            Ok(r) => r,
            Err(e) => return tracing::error!(error = %e, "cannot load roster at login"),
        };
        for item in roster.items.iter().filter(|i| i.subscription.has_to()) {
            let contact = Jid::from(item.jid.clone());
            // §4.3.1: a probe from the new resource, routed like any stanza, so that both
            // block lists apply and the contact's roster decides (`answer_probe`, whose
            // answers are written to this session directly). Contacts without an available
            // resource are not probed: their answer would be the `unavailable` that a client
            // assumes for every contact at login.
            let domain = item.jid.domain().as_str();
            if core.is_local_domain(domain) {
                if core.is_local_account(&contact) && core.sessions.has_available(&item.jid) {
                    ctx.send(presence(PresenceType::Probe, me.clone(), contact)).await;
                }
            } else if core.modules.service(domain).is_none() {
                // A contact on another server (or of a component): whether it is online
                // only its server knows, so it is always asked; the answers (its resources'
                // presence, or `unavailable`) come back to this resource.
                ctx.send(presence(PresenceType::Probe, me.clone(), contact)).await;
            }
        }
        for (res, el) in core.sessions.available_presences(bare) {
            if &res != full {
                ctx.write_direct(readdress(&el, &Jid::from(res), me.clone()).el);
            }
        }
        match core.rosters.store().pending_in(bare).await {
            Ok(pending) => {
                for (_, xml_text) in pending {
                    match xml::parse_element(&xml_text) {
                        Ok(el) => {
                            // Through the hooks: a request stored before the user blocked
                            // its sender is withheld while the block lasts.
                            let from = el.attr("from").and_then(|f| Jid::new(f).ok());
                            match from {
                                Some(from) => to_session_or_route(ctx, Stanza::new(el, from, me.clone())).await,
                                None => tracing::error!("stored subscription request without a sender"),
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "unreadable stored subscription request"),
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot load pending subscription requests"),
        }
    }

    /// Unavailable to contacts, own resources and directed-presence recipients (§4.5, §4.6.3).
    async fn broadcast_unavailable(&self, ctx: &Ctx, full: &FullJid, el: Option<Element>, directed: impl IntoIterator<Item = Jid>) {
        let core = &ctx.core;
        let bare = full.to_bare();
        let from = Jid::from(full.clone());
        let mut el = el.unwrap_or_else(|| presence(PresenceType::Unavailable, from.clone(), from.clone()).el);
        xml::remove_attr(&mut el, "to");
        let mut sent_to: Vec<BareJid> = Vec::new();
        if let Ok(roster) = core.rosters.get(&bare, false).await {
            for item in roster.items.iter().filter(|i| i.subscription.has_from()) {
                sent_to.push(item.jid.clone());
                ctx.send(readdress(&el, &from, Jid::from(item.jid.clone()))).await;
            }
        }
        for target in directed {
            if !sent_to.contains(&target.to_bare()) {
                ctx.send(readdress(&el, &from, target)).await;
            }
        }
        for r in core.sessions.resources(&bare) {
            if r.available {
                let _ = core.sessions.deliver(&r.jid, readdress(&el, &from, Jid::from(r.jid.clone())).el);
            }
        }
    }

    /// RFC 6121 §4.6: remember who got directed presence from us outside the subscription,
    /// so that they get unavailable presence when we go.
    async fn track_directed(&self, ctx: &Ctx, full: &FullJid, to: &Jid, kind: PresenceType) {
        let subscribed = match ctx.core.rosters.item(&full.to_bare(), &to.to_bare()).await {
            Ok(item) => item.is_some_and(|i| i.subscription.has_from()),
            Err(_) => false,
        };
        ctx.core.sessions.with_state(full, |s| {
            if kind == PresenceType::Unavailable {
                s.directed.remove(to);
            } else if !subscribed && s.available {
                s.directed.insert(to.clone());
            }
        });
    }

    /// The user's side of a subscription change (RFC 6121 §3.1.2, §3.2.2, §3.3.2, §3.4).
    async fn outbound_subscription(&self, ctx: &Ctx, full: &FullJid, kind: PresenceType, contact: BareJid, mut el: Element) {
        let core = &ctx.core;
        let user = full.to_bare();
        if contact == user {
            return;
        }
        let rosters = &core.rosters;
        // What to do once the stamped stanza is routed.
        let mut send_presence_after = None;
        let route;
        {
            let _guard = core.delivery_lock(&user).await;
            let existing = match rosters.item(&user, &contact).await {
                Ok(i) => i,
                Err(e) => return tracing::error!(error = %e, "roster read failed"),
            };
            let mut item = existing.clone().unwrap_or_else(|| RosterItem::new(contact.clone()));
            match kind {
                PresenceType::Subscribe => {
                    route = true;
                    if !item.subscription.has_to() {
                        item.ask = true;
                    }
                }
                PresenceType::Subscribed => {
                    let pending = rosters.store().clear_pending_in(&user, &contact).await.unwrap_or(false);
                    // Without a pending request this would be a pre-approval, which we do not
                    // support; an already approved contact needs nothing.
                    route = pending;
                    if pending {
                        item.subscription = item.subscription.with_from(true);
                        send_presence_after = Some(PresenceType::Available);
                    }
                }
                PresenceType::Unsubscribe => {
                    route = true;
                    item.subscription = item.subscription.with_to(false);
                    item.ask = false;
                }
                PresenceType::Unsubscribed => {
                    let pending = rosters.store().clear_pending_in(&user, &contact).await.unwrap_or(false);
                    route = pending || item.subscription.has_from();
                    if item.subscription.has_from() {
                        item.subscription = item.subscription.with_from(false);
                        send_presence_after = Some(PresenceType::Unavailable);
                    }
                }
                _ => return,
            }
            // Only items that exist, or that a request or an approval creates (§3.1.2,
            // §3.1.5), go into the roster; "unsubscribed" to a stranger must not add them.
            let changed = existing.as_ref() != Some(&item);
            let creates = existing.is_none() && (kind == PresenceType::Subscribe || send_presence_after.is_some());
            if changed && (existing.is_some() || creates) {
                match rosters.put(&user, item.clone()).await {
                    Ok(version) => rosters.push(&core.sessions, &user, &item, false, version),
                    // A full roster: the user is told, and the request does not go out
                    // (it would create state on the contact's side that ours cannot hold).
                    Err(e @ StorageError::Limit(_)) => {
                        let attempt = Stanza { kind: Kind::Presence, from: Jid::from(full.clone()), to: Some(Jid::from(contact)), el };
                        if let Some(error) = attempt.error_reply(&StanzaError::from(e)) {
                            ctx.reply(error).await;
                        }
                        return;
                    }
                    Err(e) => return tracing::error!(error = %e, "roster write failed"),
                }
            }
        }
        if route {
            // §3.1.2: the request is stamped with the user's bare JID.
            xml::remove_attr(&mut el, "from");
            ctx.send(Stanza::new(el, Jid::from(user.clone()), Jid::from(contact.clone()))).await;
        }
        match send_presence_after {
            Some(PresenceType::Available) => {
                for (res, el) in core.sessions.available_presences(&user) {
                    ctx.send(readdress(&el, &Jid::from(res), Jid::from(contact.clone()))).await;
                }
            }
            Some(_) => {
                for r in core.sessions.resources(&user).into_iter().filter(|r| r.available) {
                    ctx.send(presence(PresenceType::Unavailable, Jid::from(r.jid), Jid::from(contact.clone()))).await;
                }
            }
            None => {}
        }
    }

    /// Subscription state changes addressed to a local account (a `StanzaIn` hook, ahead of
    /// the block list): the account's side of the state machine (RFC 6121 §3.1.5, §3.2.3,
    /// §3.3.3, Appendix A) is applied first, so that the two rosters never disagree because
    /// one side blocks the other (XEP-0191 stops communication, not subscription state; the
    /// roster push shows the change anyway). The stanza then goes on, to be delivered to the
    /// account's clients, only if the state machine says so; the block list may still drop it.
    async fn subscription_state(self: Arc<Self>, ctx: Ctx, stanza: Stanza) -> Flow {
        let Some(kind) = changes_state(&stanza) else { return Flow::Continue(stanza) };
        // Boxed apart: the state machine's future is large, and every presence routed to an
        // account (each copy of a room's presence broadcast among them) would otherwise have
        // it allocated and moved for nothing.
        Box::pin(self.apply_subscription_state(ctx, stanza, kind)).await
    }

    async fn apply_subscription_state(&self, ctx: Ctx, stanza: Stanza, kind: PresenceType) -> Flow {
        let Some(to) = &stanza.to else { return Flow::Continue(stanza) };
        let user = to.to_bare();
        let contact = stanza.from.to_bare();
        if contact == user {
            return Flow::Handled;
        }
        let core = &ctx.core;
        let rosters = &core.rosters;
        let mut deliver = false;
        let mut send_unavailable = false;
        {
            let _guard = core.delivery_lock(&user).await;
            let existing = match rosters.item(&user, &contact).await {
                Ok(i) => i,
                Err(e) => {
                    tracing::error!(error = %e, "roster read failed");
                    return Flow::Handled;
                }
            };
            let mut updated = existing.clone();
            match kind {
                PresenceType::Subscribed => {
                    if let Some(item) = updated.as_mut().filter(|i| i.ask) {
                        item.ask = false;
                        item.subscription = item.subscription.with_to(true);
                        deliver = true;
                    }
                }
                PresenceType::Unsubscribe => {
                    let had_pending = rosters.store().clear_pending_in(&user, &contact).await.unwrap_or(false);
                    if let Some(item) = updated.as_mut().filter(|i| i.subscription.has_from()) {
                        item.subscription = item.subscription.with_from(false);
                        send_unavailable = true;
                        deliver = true;
                    }
                    deliver |= had_pending;
                }
                PresenceType::Unsubscribed => {
                    if let Some(item) = updated.as_mut().filter(|i| i.subscription.has_to() || i.ask) {
                        item.subscription = item.subscription.with_to(false);
                        item.ask = false;
                        deliver = true;
                    }
                }
                _ => return Flow::Continue(stanza),
            }
            if let Some(item) = updated.filter(|u| Some(u) != existing.as_ref()) {
                match rosters.put(&user, item.clone()).await {
                    Ok(version) => rosters.push(&core.sessions, &user, &item, false, version),
                    Err(e) => {
                        tracing::error!(error = %e, "roster write failed");
                        return Flow::Handled;
                    }
                }
            }
        }
        if send_unavailable {
            // §3.3.3: the contact no longer sees the user. Routed, so that block lists apply.
            for r in core.sessions.resources(&user).into_iter().filter(|r| r.available) {
                ctx.send(presence(PresenceType::Unavailable, Jid::from(r.jid), Jid::from(contact.clone()))).await;
            }
        }
        if deliver { Flow::Continue(stanza) } else { Flow::Handled }
    }

    /// Presence addressed to a local account, past its block list: subscription requests,
    /// the state changes `subscription_state` let through, probes.
    async fn inbound(self: Arc<Self>, ctx: Ctx, stanza: Stanza) -> Flow {
        match stanza.presence_type() {
            None => return Flow::Handled,
            Some(PresenceType::Available | PresenceType::Unavailable | PresenceType::Error) => return Flow::Continue(stanza),
            Some(_) => {}
        }
        // As above: only the rare subscription and probe traffic pays for the large future.
        Box::pin(self.inbound_control(ctx, stanza)).await
    }

    /// [`Presence::inbound`] for subscription requests and answers, and probes.
    async fn inbound_control(&self, ctx: Ctx, stanza: Stanza) -> Flow {
        let Some(kind) = stanza.presence_type() else { return Flow::Handled };
        let Some(to) = stanza.to.clone() else { return Flow::Handled };
        let user = to.to_bare();
        let contact = stanza.from.to_bare();
        match kind {
            PresenceType::Available | PresenceType::Unavailable | PresenceType::Error => Flow::Continue(stanza),
            PresenceType::Probe => {
                self.answer_probe(&ctx, &user, stanza.from.clone()).await;
                Flow::Handled
            }
            _ if contact == user => Flow::Handled,
            PresenceType::Subscribe => {
                self.inbound_request(&ctx, user, contact, stanza).await;
                Flow::Handled
            }
            // Recorded by `subscription_state`, which let it through for the user's clients
            // (§3.1.5, §3.2.3, §3.3.3: to every available resource, whatever the `to`).
            PresenceType::Subscribed | PresenceType::Unsubscribe | PresenceType::Unsubscribed => {
                for r in ctx.core.sessions.resources(&user).into_iter().filter(|r| r.available) {
                    let _ = ctx.core.sessions.deliver(&r.jid, stanza.el.clone());
                }
                Flow::Handled
            }
        }
    }

    /// A subscription request for the user (RFC 6121 §3.1.3): answered for the user when
    /// already approved, otherwise stored until answered and delivered to available resources.
    async fn inbound_request(&self, ctx: &Ctx, user: BareJid, contact: BareJid, stanza: Stanza) {
        let core = &ctx.core;
        let rosters = &core.rosters;
        let auto_reply = {
            let _guard = core.delivery_lock(&user).await;
            let existing = match rosters.item(&user, &contact).await {
                Ok(i) => i,
                Err(e) => return tracing::error!(error = %e, "roster read failed"),
            };
            if existing.as_ref().is_some_and(|i| i.subscription.has_from()) {
                true
            } else {
                let mut el = stanza.el.clone();
                xml::set_attr(&mut el, "to", user.as_str());
                match rosters.store().set_pending_in(&user, &contact, &xml::to_string(&el)).await {
                    Ok(_) => {}
                    // Too many requests waiting for this account (anyone can send them): the
                    // requester is told, and it is neither stored nor delivered.
                    Err(e @ StorageError::Limit(_)) => {
                        drop(_guard);
                        if let Some(error) = stanza.error_reply(&StanzaError::from(e)) {
                            ctx.send(error).await;
                        }
                        return;
                    }
                    Err(e) => return tracing::error!(error = %e, "cannot store subscription request"),
                }
                false
            }
        };
        if auto_reply {
            ctx.send(presence(PresenceType::Subscribed, Jid::from(user.clone()), Jid::from(contact.clone()))).await;
            return;
        }
        for r in core.sessions.resources(&user).into_iter().filter(|r| r.available) {
            let _ = core.sessions.deliver(&r.jid, stanza.el.clone());
        }
    }

    /// A probe for `user`'s presence from `prober` (RFC 6121 §4.3.2), which reached here
    /// through both block lists: answered only if the user's roster (the owner's, never the
    /// prober's) says the prober may see it (`from` or `both`).
    async fn answer_probe(&self, ctx: &Ctx, user: &BareJid, prober: Jid) {
        let core = &ctx.core;
        let subscribed = match core.rosters.item(user, &prober.to_bare()).await {
            Ok(item) => item.is_some_and(|i| i.subscription.has_from()),
            Err(e) => {
                tracing::error!(error = %e, "roster read failed");
                false
            }
        };
        if !subscribed {
            return;
        }
        let presences = core.sessions.available_presences(user);
        if presences.is_empty() {
            to_session_or_route(ctx, presence(PresenceType::Unavailable, Jid::from(user.clone()), prober)).await;
            return;
        }
        for (res, el) in presences {
            to_session_or_route(ctx, readdress(&el, &Jid::from(res), prober.clone())).await;
        }
    }

    async fn session_closed(self: Arc<Self>, ctx: Ctx, event: SessionEvent) {
        let Some(state) = event.state else { return };
        if state.available {
            self.broadcast_unavailable(&ctx, &event.jid, None, state.directed).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities() {
        let p = |x: &str| priority_of(&xml::parse_element(&format!("<presence xmlns='jabber:client'>{x}</presence>")).unwrap());
        assert_eq!(p("<priority>5</priority>"), 5);
        assert_eq!(p("<priority>-1</priority>"), -1);
        assert_eq!(p("<priority>500</priority>"), 127);
        assert_eq!(p("<priority>x</priority>"), 0);
        assert_eq!(p(""), 0);
    }
}
