//! Offline message storage (XEP-0160): chat and normal messages for an account with no
//! available resource are stored with a XEP-0203 delay, within a quota of messages and
//! bytes, and delivered, in order and in bounded batches, to the next resource that becomes
//! available with a non-negative priority (§3).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use jid::BareJid;
use crate::xml::Element;
use tracing::Instrument;

use super::{BoxFuture, Ctx, Deps, Flow, Hook, Kinds, Module, Registrar, Scope, SessionEvent, SessionHook};
use crate::router::{self, deliver_message_now};
use crate::stanza::{Condition, MessageType, Stanza, StanzaError};
use crate::storage::{BatchLimit, OfflineQuota, OfflineStore, Stored};
use crate::xml::{self, ns};

/// One batch of the flush at login: what is read, parsed and queued for the client at once.
/// Small enough that a login costs little memory whatever waits (a full store is 10 MiB by
/// default), large enough that a typical backlog takes a few round trips to the database.
pub const FLUSH_BATCH: BatchLimit = BatchLimit { messages: 100, bytes: 256 << 10 };

pub struct Offline {
    store: OfflineStore,
    quota: OfflineQuota,
    /// Accounts whose stored messages are being delivered to one of their resources.
    flushing: Arc<Mutex<HashSet<BareJid>>>,
}

impl Module for Offline {
    const NAME: &'static str = "offline";

    fn build(deps: &Deps) -> Self {
        let config = &deps.config.offline;
        Offline {
            store: deps.db.offline(),
            quota: OfflineQuota { messages: config.max_per_user, bytes: config.max_bytes_per_user },
            flushing: Arc::default(),
        }
    }

    fn register(self: Arc<Self>, reg: &mut Registrar) {
        reg.feature(Scope::Server, ns::MSGOFFLINE);
        reg.hook(Hook::MessageUndeliverable, Kinds::MESSAGE, 0, &self, Self::store);
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
        if self.quota.messages == 0 {
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
            self.store.enqueue(&owner, xml::to_string(&stanza.el), self.quota).await
        };
        // The session goes on with its next stanza while the message waits for its group
        // commit; the sender hears back only if it was refused, and its acknowledgement
        // (XEP-0198) waits for the commit.
        let core = ctx.core.clone();
        let quota = self.quota;
        let durable = ctx.durable();
        ctx.core.spawn(async move {
            let outcome = pending.outcome().await;
            drop(durable);
            let error = match outcome {
                Ok(Stored::Yes) => return,
                // XEP-0160 §2: a full offline queue is answered with <service-unavailable/>.
                Ok(Stored::Full) => StanzaError::new(Condition::ServiceUnavailable).with_text(format!(
                    "offline storage for this account is full (it keeps at most {} messages and {} bytes)",
                    quota.messages, quota.bytes
                )),
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

    /// Runs under the account's delivery lock (see the presence module). Delivers what is
    /// stored now, in batches: each batch is written to the client, then deleted, and only
    /// then is the next one read. Nothing is deleted before it was written, and a session
    /// that ends midway leaves the undelivered rest stored, in order, for the next login.
    async fn flush(self: Arc<Self>, ctx: Ctx, event: SessionEvent) {
        let owner = event.jid.to_bare();
        // One flush per account at a time: a second resource that comes online meanwhile
        // gets new messages, not copies of the stored ones (XEP-0160 §2 delivers them to
        // the resource whose presence triggered it).
        let Some(claim) = FlushClaim::take(&self.flushing, &owner) else { return };
        // Messages stored from now on arrived while no resource could take them (this one
        // went unavailable again): they wait for the next initial presence.
        let through = match self.store.newest(&owner).await {
            Ok(Some(id)) => id,
            Ok(None) => return,
            Err(e) => return tracing::error!(error = %e, "cannot load offline messages"),
        };
        let flush = Flush { ctx, store: self.store.clone(), owner, through, _claim: claim };
        flush.next_batch(0).await;
    }
}

/// A flush in progress: owns its account's claim until the last batch is delivered or the
/// session ends (the pending step is then dropped with the session's output).
struct Flush {
    ctx: Ctx,
    store: OfflineStore,
    owner: BareJid,
    /// The newest message to deliver.
    through: i64,
    /// Held, not read: dropping the flush releases the account.
    _claim: FlushClaim,
}

impl Flush {
    /// Read and queue the batch after `after`; once it is written, delete it and go on.
    fn next_batch(self, after: i64) -> BoxFuture<()> {
        Box::pin(async move {
            let batch = match self.store.batch(&self.owner, after, self.through, FLUSH_BATCH).await {
                Ok(b) => b,
                Err(e) => return tracing::error!(error = %e, "cannot load offline messages"),
            };
            let Some(last) = batch.last().map(|m| m.id) else { return };
            for message in batch {
                match xml::parse_element(&message.stanza) {
                    Ok(el) => self.ctx.write_direct(el),
                    Err(e) => tracing::error!(error = %e, id = message.id, "unreadable offline message skipped"),
                }
            }
            let ctx = self.ctx.clone();
            ctx.after_write(Box::pin(async move {
                // Deleted once written to the client, not before.
                if let Err(e) = self.store.delete_up_to(&self.owner, last).await {
                    tracing::error!(error = %e, "cannot delete delivered offline messages");
                }
                if last < self.through {
                    self.next_batch(last).await;
                }
            }));
        })
    }
}

/// An account's flush in progress; released when dropped.
struct FlushClaim {
    flushing: Arc<Mutex<HashSet<BareJid>>>,
    owner: BareJid,
}

impl FlushClaim {
    fn take(flushing: &Arc<Mutex<HashSet<BareJid>>>, owner: &BareJid) -> Option<FlushClaim> {
        flushing
            .lock()
            .unwrap()
            .insert(owner.clone())
            .then(|| FlushClaim { flushing: flushing.clone(), owner: owner.clone() })
    }
}

impl Drop for FlushClaim {
    fn drop(&mut self) {
        self.flushing.lock().unwrap().remove(&self.owner);
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
