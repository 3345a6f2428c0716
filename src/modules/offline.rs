//! Offline message storage (XEP-0160): chat and normal messages for an account with no
//! available resource are stored with a XEP-0203 delay and delivered, in order, to the next
//! resource that becomes available with a non-negative priority (§3).

use std::sync::Arc;

use jid::BareJid;
use crate::xml::Element;
use tracing::Instrument;

use super::{Ctx, Deps, Flow, Hook, Module, Registrar, Scope, SessionEvent, SessionHook};
use crate::router::{self, deliver_message_now};
use crate::stanza::{Condition, MessageType, Stanza, StanzaError};
use crate::storage::{OfflineStore, Stored};
use crate::xml::{self, ns};

pub struct Offline {
    store: OfflineStore,
    max_per_user: usize,
}

impl Module for Offline {
    const NAME: &'static str = "offline";

    fn build(deps: &Deps) -> Self {
        Offline { store: deps.db.offline(), max_per_user: deps.config.offline.max_per_user }
    }

    fn register(self: Arc<Self>, reg: &mut Registrar) {
        reg.feature(Scope::Server, ns::MSGOFFLINE);
        reg.hook(Hook::MessageUndeliverable, 0, &self, Self::store);
        reg.session_hook(SessionHook::InitialPresence, 0, &self, Self::flush);
    }
}

/// Worth keeping: XEP-0160 §3 stores normal and chat messages; a message that carries only
/// a chat state notification is not (XEP-0085 §5.5), nor one with XEP-0334 `<no-store/>`.
fn worth_storing(stanza: &Stanza) -> bool {
    if !matches!(stanza.message_type(), MessageType::Normal | MessageType::Chat) {
        return false;
    }
    let mut children = stanza.el.children().peekable();
    if children.peek().is_none() {
        return false;
    }
    let only_chat_state = stanza.el.children().all(|c| c.has_ns(ns::CHATSTATES));
    let no_store = stanza.el.children().any(|c| c.is("no-store", "urn:xmpp:hints") || c.is("no-permanent-store", "urn:xmpp:hints"));
    !only_chat_state && !no_store
}

/// XEP-0203 `<delay/>` stamped now, from our domain.
fn delay(domain: &str) -> Element {
    let stamp = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default();
    xml::element("delay", ns::DELAY, &[("from", domain), ("stamp", &stamp)])
}

impl Offline {
    async fn store(self: Arc<Self>, ctx: Ctx, mut stanza: Stanza) -> Flow {
        if self.max_per_user == 0 {
            return Flow::Continue(stanza);
        }
        let Some(to) = &stanza.to else { return Flow::Continue(stanza) };
        let owner: BareJid = to.to_bare();
        if !worth_storing(&stanza) {
            // Not stored, and not an error either: the sender did nothing wrong.
            return Flow::Handled;
        }
        let pending = {
            // The flush at initial presence takes this lock too: either the message is
            // queued before that flush reads (which waits for the queue), or the resource is
            // available by now.
            let _guard = ctx.core.delivery_lock(&owner).await;
            if deliver_message_now(&ctx, &stanza, &owner).await {
                return Flow::Handled;
            }
            stanza.el.append_child(delay(owner.domain().as_str()));
            self.store.enqueue(&owner, xml::to_string(&stanza.el), self.max_per_user).await
        };
        // The session goes on with its next stanza while the message waits for its group
        // commit; the sender hears back only if it was refused.
        let core = ctx.core.clone();
        tokio::spawn(async move {
            let error = match pending.outcome().await {
                Ok(Stored::Yes) => return,
                Ok(Stored::Full) => StanzaError::new(Condition::ServiceUnavailable).with_text("offline storage is full"),
                // Deleted while the message was on its way: as for any unknown account.
                Ok(Stored::NoSuchAccount) => StanzaError::service_unavailable(),
                Err(e) => {
                    tracing::error!(error = %e, "cannot store an offline message");
                    StanzaError::internal()
                }
            };
            // Routed, not written directly: this session may have moved on or ended.
            router::bounce(&Ctx::new(core), &stanza, error).await;
        }.instrument(tracing::Span::current()));
        Flow::Handled
    }

    /// Runs under the account's delivery lock (see the presence module).
    async fn flush(self: Arc<Self>, ctx: Ctx, event: SessionEvent) {
        let owner = event.jid.to_bare();
        let messages = match self.store.load(&owner).await {
            Ok(m) => m,
            Err(e) => return tracing::error!(error = %e, "cannot load offline messages"),
        };
        let Some(last_id) = messages.last().map(|m| m.id) else { return };
        for message in &messages {
            match xml::parse_element(&message.stanza) {
                Ok(el) => ctx.write_direct(el),
                Err(e) => tracing::error!(error = %e, id = message.id, "unreadable offline message skipped"),
            }
        }
        // Deleted once written to the client, not before.
        let store = self.store.clone();
        ctx.after_write(Box::pin(async move {
            if let Err(e) = store.delete_up_to(&owner, last_id).await {
                tracing::error!(error = %e, "cannot delete delivered offline messages");
            }
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jid::{FullJid, Jid};

    fn stanza(x: &str) -> Stanza {
        let el = xml::parse_element(x).unwrap();
        Stanza::new(el, Jid::from(FullJid::new("a@b/c").unwrap()), Jid::new("d@b").unwrap())
    }

    #[test]
    fn what_is_stored() {
        assert!(worth_storing(&stanza("<message xmlns='jabber:client' type='chat'><body>x</body></message>")));
        assert!(worth_storing(&stanza("<message xmlns='jabber:client'><body>x</body></message>")));
        assert!(!worth_storing(&stanza("<message xmlns='jabber:client' type='groupchat'><body>x</body></message>")));
        assert!(!worth_storing(&stanza("<message xmlns='jabber:client' type='headline'><body>x</body></message>")));
        assert!(!worth_storing(&stanza("<message xmlns='jabber:client' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>")));
        assert!(!worth_storing(&stanza("<message xmlns='jabber:client' type='chat'><body>x</body><no-store xmlns='urn:xmpp:hints'/></message>")));
    }

    #[test]
    fn delay_stamp_is_xep_0082() {
        let d = delay("example.org");
        let stamp = d.attr("stamp").unwrap();
        assert!(stamp.ends_with('Z') && stamp.len() == 20, "{stamp}");
    }
}
