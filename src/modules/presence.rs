//! Presence and subscriptions (RFC 6121 §3, §4, Appendix A).
//!
//! Outbound (what a client sends): broadcasts to contacts, directed presence, and
//! subscription requests and answers, each updating the user's roster. Inbound (addressed
//! to a local account): the contact's side of the same state machine, probes, and stored
//! subscription requests for accounts that are offline. At session end, unavailable
//! presence goes to contacts and to everyone who got directed presence.

use std::sync::Arc;

use jid::{BareJid, FullJid, Jid};
use crate::xml::Element;

use super::{Ctx, Deps, Flow, Hook, Module, Registrar, SessionEvent, SessionHook};
use crate::stanza::{PresenceType, Stanza};
use crate::storage::RosterItem;
use crate::xml::{self, ns};

pub struct Presence;

impl Module for Presence {
    const NAME: &'static str = "presence";

    fn build(_: &Deps) -> Self {
        Presence
    }

    fn register(self: Arc<Self>, reg: &mut Registrar) {
        reg.hook(Hook::PresenceOut, 0, &self, Self::outbound);
        reg.hook(Hook::PresenceIn, 0, &self, Self::inbound);
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
            (PresenceType::Probe, Some(to)) => {
                // Clients should not probe (RFC 6121 §4.3); answer like the server would.
                self.answer_probe_for_client(&ctx, &full, to.to_bare()).await;
                Flow::Handled
            }
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
        let initial = !core.sessions.with_state(full, |s| s.available).unwrap_or(false);
        if initial {
            {
                // Under the delivery lock, the initial-presence hooks (offline flush) run
                // before the resource becomes available, so that a message arriving meanwhile
                // either is among the flushed ones or is delivered after them.
                let _guard = core.delivery_lock(&bare).await;
                core.modules.run_session_hook(SessionHook::InitialPresence, ctx, full, None, false).await;
                let stored = stored_presence(&el);
                core.sessions.with_state(full, |s| {
                    s.available = true;
                    s.priority = priority;
                    s.last = Some(stored);
                });
            }
            self.on_login(ctx, full, &bare).await;
        } else {
            let stored = stored_presence(&el);
            core.sessions.with_state(full, |s| {
                s.priority = priority;
                s.last = Some(stored);
            });
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
                let _ = core.sessions.deliver(&r.jid, readdress(&el, &from, Jid::from(r.jid.clone())).el).await;
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
            if core.is_local_account(&contact) {
                for (res, el) in core.sessions.available_presences(&item.jid) {
                    ctx.write_direct(readdress(&el, &Jid::from(res), me.clone()).el);
                }
            }
            // Remote contacts would be probed over s2s, which is not implemented.
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
                        Ok(mut el) => {
                            xml::set_attr(&mut el, "to", full.as_str());
                            ctx.write_direct(el);
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
                let _ = core.sessions.deliver(&r.jid, readdress(&el, &from, Jid::from(r.jid.clone())).el).await;
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

    /// Presence addressed to a local account: the contact's side of subscriptions, probes.
    async fn inbound(self: Arc<Self>, ctx: Ctx, stanza: Stanza) -> Flow {
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
            _ => {
                self.inbound_subscription(&ctx, kind, user, contact, stanza).await;
                Flow::Handled
            }
        }
    }

    /// RFC 6121 §3.1.3-§3.1.6, §3.2.3, §3.3.3 on the receiving account's side.
    async fn inbound_subscription(&self, ctx: &Ctx, kind: PresenceType, user: BareJid, contact: BareJid, stanza: Stanza) {
        let core = &ctx.core;
        let rosters = &core.rosters;
        let mut deliver = false;
        let mut auto_reply = false;
        let mut send_unavailable = false;
        {
            let _guard = core.delivery_lock(&user).await;
            let existing = match rosters.item(&user, &contact).await {
                Ok(i) => i,
                Err(e) => return tracing::error!(error = %e, "roster read failed"),
            };
            let mut updated = existing.clone();
            match kind {
                PresenceType::Subscribe => {
                    if existing.as_ref().is_some_and(|i| i.subscription.has_from()) {
                        // Already approved: answer for the user (§3.1.3).
                        auto_reply = true;
                    } else {
                        let mut el = stanza.el.clone();
                        xml::set_attr(&mut el, "to", user.as_str());
                        if let Err(e) = rosters.store().set_pending_in(&user, &contact, &xml::to_string(&el)).await {
                            return tracing::error!(error = %e, "cannot store subscription request");
                        }
                        deliver = true;
                    }
                }
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
                _ => return,
            }
            if let Some(item) = updated.filter(|u| Some(u) != existing.as_ref()) {
                match rosters.put(&user, item.clone()).await {
                    Ok(version) => rosters.push(&core.sessions, &user, &item, false, version),
                    Err(e) => return tracing::error!(error = %e, "roster write failed"),
                }
            }
        }
        if auto_reply {
            ctx.send(presence(PresenceType::Subscribed, Jid::from(user.clone()), Jid::from(contact.clone()))).await;
        }
        if deliver {
            for r in core.sessions.resources(&user).into_iter().filter(|r| r.available) {
                let _ = core.sessions.deliver(&r.jid, stanza.el.clone()).await;
            }
        }
        if send_unavailable {
            for r in core.sessions.resources(&user).into_iter().filter(|r| r.available) {
                ctx.send(presence(PresenceType::Unavailable, Jid::from(r.jid), Jid::from(contact.clone()))).await;
            }
        }
    }

    /// A probe for `user`'s presence from `prober` (RFC 6121 §4.3.2): answered only if the
    /// prober is subscribed.
    async fn answer_probe(&self, ctx: &Ctx, user: &BareJid, prober: Jid) {
        let core = &ctx.core;
        let subscribed = match core.rosters.item(user, &prober.to_bare()).await {
            Ok(item) => item.is_some_and(|i| i.subscription.has_from()),
            Err(_) => false,
        };
        if !subscribed {
            return;
        }
        let presences = core.sessions.available_presences(user);
        if presences.is_empty() {
            ctx.send(presence(PresenceType::Unavailable, Jid::from(user.clone()), prober)).await;
            return;
        }
        for (res, el) in presences {
            ctx.send(readdress(&el, &Jid::from(res), prober.clone())).await;
        }
    }

    async fn answer_probe_for_client(&self, ctx: &Ctx, full: &FullJid, contact: BareJid) {
        let core = &ctx.core;
        let subscribed = match core.rosters.item(&full.to_bare(), &contact).await {
            Ok(item) => item.is_some_and(|i| i.subscription.has_to()),
            Err(_) => false,
        };
        if subscribed && core.is_local_account(&Jid::from(contact.clone())) {
            for (res, el) in core.sessions.available_presences(&contact) {
                ctx.reply(readdress(&el, &Jid::from(res), Jid::from(full.clone()))).await;
            }
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
