//! Routing: RFC 6120 §10 (server rules) and RFC 6121 §8 (delivery to local accounts).
//! `xeps/routing.md` has the table of kind × destination this file implements.
//!
//! Routing runs in the task of whoever sends (a session, a handler), never in a central
//! task: delivery to an online resource is a map lookup and a channel send.

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use jid::{BareJid, FullJid, Jid};

use crate::modules::{Ctx, Delivered, Flow, Hook, IqRequest, Scope};
use crate::session::SendError;
use crate::stanza::{Condition, bare_of, bare_str, IqType, Kind, MessageType, PresenceType, Stanza, StanzaError};

/// A stanza a local client sent: its own presence first goes to the presence hook
/// (broadcast, directed presence, subscriptions), then everything is routed.
pub async fn from_client(ctx: &Ctx, stanza: Stanza) {
    let stanza = if stanza.kind == Kind::Presence {
        match ctx.core.modules.run_hook(Hook::PresenceOut, ctx, stanza).await {
            Flow::Handled => return,
            Flow::Continue(s) => s,
        }
    } else {
        stanza
    };
    route(ctx, stanza).await
}

/// Route any stanza to where its `to` says.
pub async fn route(ctx: &Ctx, stanza: Stanza) {
    // Boxed: routing recurses (bounces, hooks that send).
    Box::pin(route_inner(ctx, stanza)).await
}

/// [`route`] for a caller that hands over its context ([`Ctx::send`]): one allocation for
/// both futures, where `route` in a boxed future would make two (per copy of a room's
/// broadcast).
pub(crate) fn route_owned(ctx: Ctx, stanza: Stanza) -> crate::modules::BoxFuture<()> {
    match deliver_at_once(&ctx, stanza) {
        Some(stanza) => Box::pin(async move { route_inner(&ctx, stanza).await }),
        // Zero-sized: no allocation.
        None => Box::pin(Done),
    }
}

/// A future already done.
struct Done;

impl std::future::Future for Done {
    type Output = ();
    fn poll(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        std::task::Poll::Ready(())
    }
}

/// The busiest case, every copy of a room's broadcast, without building the routing future
/// (kilobytes, as it holds every hook's): a message from someone who is not an account here
/// to a connected resource of one, that no `StanzaIn` hook wants to look at
/// (`Registrar::hook_when`) and whose deliveries nobody watches, goes into the resource's
/// queue at once. Anything else, or a delivery that fails, comes back for [`route_inner`],
/// which then finds the same answers on the way.
fn deliver_at_once(ctx: &Ctx, stanza: Stanza) -> Option<Stanza> {
    let core = &ctx.core;
    let at_once = stanza.kind == Kind::Message
        && !ctx.is_rerouting()
        && !core.is_local_account(&stanza.from)
        && stanza.to.as_ref().is_some_and(|to| {
            let domain = to.domain().as_str();
            to.resource().is_some()
                && core.is_local_domain(domain)
                && core.modules.service(domain).is_none()
                && !core.modules.watches_deliveries(bare_str(to.as_str()))
        })
        && !core.modules.hooks_want(Hook::StanzaIn, &stanza);
    if !at_once {
        return Some(stanza);
    }
    let Stanza { kind, from, to, el } = stanza;
    let result = match to.as_ref().map(Jid::try_as_full) {
        Some(Ok(full)) => core.sessions.deliver(full, el),
        _ => Err(SendError::Offline(el)),
    };
    result.err().map(|(SendError::Offline(el) | SendError::Full(el))| Stanza { kind, from, to, el })
}

async fn route_inner(ctx: &Ctx, mut stanza: Stanza) {
    let core = &ctx.core;
    if core.is_local_account(&stanza.from) {
        stanza = match core.modules.run_hook(Hook::StanzaOut, ctx, stanza).await {
            Flow::Handled => return,
            Flow::Continue(s) => s,
        };
    }
    let to = match &stanza.to {
        Some(to) => to.clone(),
        // A presence without `to` is a broadcast; the presence module handles it, and
        // without that module there is nobody to broadcast to.
        None if stanza.kind == Kind::Presence => return,
        // RFC 6120 §10.3: no `to` means the sender's own account.
        None => Jid::from(stanza.from.to_bare()),
    };
    // The four kinds of destination (xeps/routing.md): a service on a domain of its own
    // (an external component, XEP-0114, or a module's), a remote domain, a served domain,
    // an account of one.
    if core.components.serves(to.domain().as_str()) {
        return core.components.send(ctx, stanza).await;
    }
    if let Some(service) = core.modules.service(to.domain().as_str()) {
        return (service.handler)(ctx.clone(), stanza).await;
    }
    if !core.is_local_domain(to.domain().as_str()) {
        return match &core.s2s {
            Some(s2s) => s2s.send(ctx, stanza).await,
            // RFC 6120 §10.4.3.
            None => {
                let e = StanzaError::new(Condition::RemoteServerNotFound).with_text("this server does not federate ([s2s] listen = [])");
                bounce(ctx, &stanza, e).await
            }
        };
    }
    if to.node().is_none() {
        return to_server(ctx, stanza, to).await;
    }
    to_account(ctx, stanza, to).await
}

/// Answer a stanza with an error (never an error to an error).
pub async fn bounce(ctx: &Ctx, stanza: &Stanza, error: StanzaError) {
    if let Some(reply) = stanza.error_reply(&error) {
        ctx.reply(reply).await;
    }
}

/// Stanzas for the server itself (RFC 6120 §10.3.3).
async fn to_server(ctx: &Ctx, stanza: Stanza, to: Jid) {
    match stanza.kind {
        Kind::Iq if stanza.iq_type().is_some_and(IqType::is_request) => {
            if to.resource().is_some() {
                return bounce(ctx, &stanza, StanzaError::service_unavailable()).await;
            }
            dispatch_iq(ctx, stanza, Scope::Server, to).await
        }
        // Results and errors for the server: answers to requests it sent (`requests.rs`;
        // the session consumes the answers to its pings before routing), others dropped.
        Kind::Iq => {
            let _ = ctx.core.requests.complete(stanza);
        }
        Kind::Message => {
            if matches!(stanza.message_type(), MessageType::Normal | MessageType::Chat) {
                bounce(ctx, &stanza, StanzaError::service_unavailable()).await
            }
        }
        Kind::Presence => {}
    }
}

/// Stanzas for a local account (RFC 6121 §8.5).
async fn to_account(ctx: &Ctx, stanza: Stanza, to: Jid) {
    let core = &ctx.core;
    if !core.sessions.is_online(bare_str(to.as_str())) {
        match core.db.accounts().exists(&bare_of(&to)).await {
            Ok(true) => {}
            Ok(false) => return no_such_account(ctx, stanza).await,
            Err(e) => {
                tracing::error!(error = %e, "storage error while routing");
                return bounce(ctx, &stanza, StanzaError::internal()).await;
            }
        }
    }
    let stanza = match core.modules.run_hook(Hook::StanzaIn, ctx, stanza).await {
        Flow::Handled => return,
        Flow::Continue(s) => s,
    };
    match stanza.kind {
        Kind::Message => match to.try_into_full() {
            Ok(full) => message_to_full(ctx, stanza, full).await,
            Err(bare) => message_to_bare(ctx, stanza, bare).await,
        },
        Kind::Presence => {
            let stanza = match core.modules.run_hook(Hook::PresenceIn, ctx, stanza).await {
                Flow::Handled => return,
                Flow::Continue(s) => s,
            };
            presence_to_account(ctx, stanza, to).await
        }
        Kind::Iq => iq_to_account(ctx, stanza, to).await,
    }
}

/// RFC 6121 §8.5.1: the account does not exist.
async fn no_such_account(ctx: &Ctx, stanza: Stanza) {
    match stanza.kind {
        // A subscription request is rejected on the account's behalf (option (a) of
        // §8.5.1), so that the requester does not wait forever; other presence is ignored.
        Kind::Presence if stanza.presence_type() == Some(PresenceType::Subscribe) => {
            let Some(to) = stanza.to.clone() else { return };
            let mut el = crate::xml::Element::bare("presence", crate::xml::ns::CLIENT);
            crate::xml::set_attr(&mut el, "type", "unsubscribed");
            ctx.send(Stanza::new(el, Jid::from(to.to_bare()), Jid::from(stanza.from.to_bare()))).await;
        }
        Kind::Presence => {}
        Kind::Message | Kind::Iq => bounce(ctx, &stanza, StanzaError::service_unavailable()).await,
    }
}

/// RFC 6121 §8.5.3: a message for a full JID.
async fn message_to_full(ctx: &Ctx, stanza: Stanza, full: FullJid) {
    // Kept for the modules that watch deliveries (the session's queue takes the element).
    let watched = ctx.core.modules.watches_deliveries(bare_str(full.as_str())).then(|| stanza.clone());
    let Stanza { kind, from, to, el } = stanza;
    match ctx.deliver(&full, el).await {
        Ok(()) => {
            if let Some(stanza) = watched {
                ctx.core.modules.run_delivered(ctx, Delivered { stanza, to: vec![full] }).await;
            }
        }
        Err(SendError::Offline(el) | SendError::Full(el)) => {
            let stanza = Stanza { kind, from, to, el };
            match stanza.message_type() {
                // §8.5.3.2.1: normal and chat are treated as if addressed to the bare JID.
                MessageType::Normal | MessageType::Chat => message_to_bare(ctx, stanza, full.to_bare()).await,
                MessageType::Groupchat => bounce(ctx, &stanza, StanzaError::service_unavailable()).await,
                MessageType::Headline | MessageType::Error => {}
            }
        }
    }
}

/// RFC 6121 §8.5.2: a message for a bare JID.
async fn message_to_bare(ctx: &Ctx, stanza: Stanza, bare: BareJid) {
    // A message the server wrote on the account's behalf for one of its resources (from the
    // account's bare JID to a full JID: a XEP-0280 copy) is for that resource alone: when
    // it is gone, the message goes neither to the others nor to offline storage.
    if stanza.to.as_ref().is_some_and(|to| to.resource().is_some()) && stanza.from.resource().is_none() && stanza.from.to_bare() == bare {
        return;
    }
    let kind = stanza.message_type();
    match kind {
        MessageType::Error => return,
        MessageType::Groupchat => return bounce(ctx, &stanza, StanzaError::service_unavailable()).await,
        _ => {}
    }
    let mut targets: Vec<_> = ctx
        .core
        .sessions
        .resources(&bare)
        .into_iter()
        .filter(|r| r.available && r.priority >= 0)
        .collect();
    if kind != MessageType::Headline {
        // Normal and chat go to the most available resources: the highest priority, all of
        // them on a tie (§8.5.2.1.1 leaves the choice to the server).
        if let Some(top) = targets.iter().map(|r| r.priority).max() {
            targets.retain(|r| r.priority == top);
        }
    }
    let mut delivered = Vec::with_capacity(targets.len());
    for target in targets {
        if ctx.deliver(&target.jid, stanza.el.clone()).await.is_ok() {
            delivered.push(target.jid);
        }
    }
    let modules = &ctx.core.modules;
    let watched = modules.watches_deliveries(bare.as_str());
    if !delivered.is_empty() {
        if watched {
            modules.run_delivered(ctx, Delivered { stanza, to: delivered }).await;
        }
        return;
    }
    if watched {
        modules.run_delivered(ctx, Delivered { stanza: stanza.clone(), to: Vec::new() }).await;
    }
    match modules.run_hook(Hook::MessageUndeliverable, ctx, stanza).await {
        Flow::Handled => {}
        Flow::Continue(stanza) => {
            if stanza.message_type() != MessageType::Headline {
                bounce(ctx, &stanza, StanzaError::service_unavailable()).await
            }
        }
    }
}

/// A message that a session which ended did not get to its client: routed as if it were
/// addressed to the account's bare JID (RFC 6121 §8.5.3.2.1), to its other resources or to
/// offline storage. The stanza hooks do not run again: they ran when it was first routed
/// (it is archived, copied and checked against the block lists already).
pub async fn redeliver(ctx: &Ctx, stanza: Stanza) {
    if stanza.kind != Kind::Message || !matches!(stanza.message_type(), MessageType::Normal | MessageType::Chat) {
        return;
    }
    let Some(to) = stanza.to.as_ref().filter(|to| ctx.core.is_local_account(to)) else { return };
    let bare = to.to_bare();
    message_to_bare(ctx, stanza, bare).await
}

/// Deliver a message to the available resources of an account right now, without hooks;
/// `false` if none took it. For the offline module, which re-checks under its lock.
pub async fn deliver_message_now(ctx: &Ctx, stanza: &Stanza, bare: &BareJid) -> bool {
    let mut delivered = false;
    for r in ctx.core.sessions.resources(bare) {
        if r.available && r.priority >= 0 {
            delivered |= ctx.deliver(&r.jid, stanza.el.clone()).await.is_ok();
        }
    }
    delivered
}

/// Presence the presence module let through: available, unavailable and errors
/// (RFC 6121 §8.5.2.1.2, §8.5.3.1): to a full JID if connected, to all available resources
/// for a bare JID, otherwise dropped.
async fn presence_to_account(ctx: &Ctx, stanza: Stanza, to: Jid) {
    let sessions = &ctx.core.sessions;
    match to.try_into_full() {
        Ok(full) => {
            let _ = sessions.deliver(&full, stanza.el);
        }
        Err(bare) => {
            for r in sessions.resources(&bare) {
                if r.available {
                    let _ = sessions.deliver(&r.jid, stanza.el.clone());
                }
            }
        }
    }
}

/// RFC 6121 §8.5.2.1.3 and §8.5.3: IQs for an account.
async fn iq_to_account(ctx: &Ctx, stanza: Stanza, to: Jid) {
    let request = stanza.iq_type().is_some_and(IqType::is_request);
    match to.try_into_full() {
        Ok(full) => {
            let Stanza { kind, from, to, el } = stanza;
            if let Err(SendError::Offline(el) | SendError::Full(el)) = ctx.core.sessions.deliver(&full, el)
                && request
            {
                bounce(ctx, &Stanza { kind, from, to, el }, StanzaError::service_unavailable()).await
            }
        }
        // A request to a bare JID is handled by the server on behalf of the account.
        Err(bare) if request => dispatch_iq(ctx, stanza, Scope::Account, Jid::from(bare)).await,
        // An answer to a bare JID: to a request the server sent on the account's behalf, or
        // dropped.
        Err(_) => {
            let _ = ctx.core.requests.complete(stanza);
        }
    }
}

/// Find the handler for an IQ request and send exactly one reply: its result, its error,
/// `service-unavailable` when nobody handles it, `internal-server-error` if it panics.
async fn dispatch_iq(ctx: &Ctx, stanza: Stanza, scope: Scope, to: Jid) {
    let Some(kind) = stanza.iq_type() else { return };
    let Some(payload) = stanza.payload() else { return };
    let handler = ctx.core.modules.iq_handler(scope, kind, payload.name(), payload.ns());
    let Some(handler) = handler else {
        return bounce(ctx, &stanza, StanzaError::service_unavailable()).await;
    };
    let request = IqRequest { stanza: stanza.clone(), from: stanza.from.clone(), to, kind };
    let result = AssertUnwindSafe(handler(ctx.clone(), request)).catch_unwind().await;
    let reply = match result {
        Ok(Ok(payload)) => Some(stanza.iq_result(payload)),
        Ok(Err(error)) => stanza.error_reply(&error),
        Err(_) => {
            tracing::error!(ns = %stanza.payload().map(|p| p.ns()).unwrap_or_default(), "IQ handler panicked");
            stanza.error_reply(&StanzaError::internal())
        }
    };
    if let Some(reply) = reply {
        ctx.reply(reply).await;
    }
}

