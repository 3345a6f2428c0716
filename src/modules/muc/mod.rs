//! XEP-0045 Multi-User Chat: the service on `<[muc] subdomain>.<domain>` for each served
//! domain. Each active room is one task that owns the room's state and takes the room's
//! stanzas from a queue in order (`room.rs`), so the order of a room's events is the order
//! every occupant sees. Routing hands this module every stanza for the service's domain
//! ([`Registrar::service`]); the module finds (or loads, or creates) the room and queues the
//! stanza there. Persistent rooms, their affiliations and subject are in the database
//! (`storage/muc.rs`); their messages are in the message archive, with the room as owner.
//!
//! The parts: `room.rs` (a room's state, its task, IQs to it), `presence.rs` (entering,
//! leaving, nick changes), `message.rs` (messages, subject, invitations), `admin.rs` (roles
//! and affiliations, §§8-10, configuration, destruction), `form.rs` (the configuration and
//! room info forms), `occupant.rs` (what a room sends about an occupant), `moderation.rs`
//! (retraction and moderation of messages, XEP-0424 and XEP-0425), `voice.rs` (voice
//! requests, §7.13, §8.6), `register.rs` (registration with a room and reserved nicks, §7.10,
//! §7.11), `vcard.rs` (the room's vCard and avatar).

mod admin;
mod form;
mod message;
mod moderation;
mod occupant;
mod presence;
mod register;
mod room;
mod vcard;
mod voice;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;
use jid::{BareJid, Jid};
use tokio::sync::mpsc;

use super::{ChangedData, Ctx, DataChange, Deps, Durable, Module, Registrar, SessionEvent, SessionHook};
use crate::config::{Config, RoomCreation};
use crate::router;
use crate::stanza::{Condition, IqType, Kind, MessageType, PresenceType, Stanza, StanzaError};
use crate::storage::{ArchiveStore, MucStore};
use crate::xml::{self, Element, ns};

pub const MUC: &str = "http://jabber.org/protocol/muc";
pub const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
pub const MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
pub const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
pub const MUC_UNIQUE: &str = "http://jabber.org/protocol/muc#unique";
pub const STABLE_ID: &str = "http://jabber.org/protocol/muc#stable_id";
pub const SID: &str = "urn:xmpp:sid:0";
pub const OCCUPANT_ID: &str = "urn:xmpp:occupant-id:0";
/// XEP-0410 §3.3: a room that answers its occupants' self-pings itself.
pub const SELF_PING_OPTIMIZATION: &str = "http://jabber.org/protocol/muc#self-ping-optimization";
pub const MAM: &str = "urn:xmpp:mam:2";

/// Events a room's queue holds beyond this are refused (`resource-constraint`, type wait):
/// a room that cannot keep up slows its senders instead of growing without bound.
const ROOM_QUEUE: usize = 10_000;

/// What a room's task takes from its queue.
pub(super) enum Event {
    /// A stanza for the room or one of its occupants, with the promise the sender's
    /// acknowledgement waits for (a groupchat message is safe once archived).
    Stanza(Stanza, Option<Durable>),
    /// The room's disco#items entry, if it is public (for the service's disco#items).
    Summary(tokio::sync::oneshot::Sender<Option<crate::storage::RoomSummary>>),
    /// This account was deleted: it loses its affiliation (the database's rows are gone).
    AccountDeleted(BareJid),
}

/// How to reach a room's task.
#[derive(Clone)]
pub(super) struct RoomHandle {
    tx: mpsc::UnboundedSender<Event>,
    queued: Arc<AtomicUsize>,
}

impl RoomHandle {
    /// Queue an event; `Err` gives it back (boxed: it is large and rare) when the room's
    /// task has ended (it was unloaded or vanished meanwhile), or refuses it (`true`) when
    /// the queue is full.
    fn send(&self, event: Event) -> Result<(), Box<(Event, bool)>> {
        if self.queued.load(Ordering::Relaxed) >= ROOM_QUEUE {
            return Err(Box::new((event, true)));
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.tx.send(event).map_err(|e| {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            Box::new((e.0, false))
        })
    }

    fn same(&self, other: &RoomHandle) -> bool {
        Arc::ptr_eq(&self.queued, &other.queued)
    }
}

pub struct Muc {
    config: Arc<Config>,
    store: MucStore,
    archive: ArchiveStore,
    /// The rooms in memory, each with its task.
    rooms: DashMap<BareJid, RoomHandle>,
    /// Loading a room from the database or creating one happens under this lock, so that
    /// one room never gets two tasks.
    loading: tokio::sync::Mutex<()>,
    joined: room::Joined,
}

impl Module for Muc {
    const NAME: &'static str = "muc";

    fn build(deps: &Deps) -> Self {
        Muc {
            config: deps.config.clone(),
            store: deps.db.muc(),
            archive: deps.db.archive(),
            rooms: DashMap::new(),
            loading: tokio::sync::Mutex::new(()),
            joined: Arc::new(DashMap::new()),
        }
    }

    fn register(self: Arc<Self>, reg: &mut Registrar) {
        for domain in self.config.muc_domains() {
            reg.service(domain, "Chatrooms", &self, Self::route);
        }
        reg.session_hook(SessionHook::Closed, 0, &self, Self::session_closed);
        reg.background(&self, Self::forget_temporary_rooms);
        reg.data_hook(&self, Self::account_deleted);
    }
}

impl Muc {
    /// Everything for the service's domain or a room under it.
    async fn route(self: Arc<Self>, ctx: Ctx, stanza: Stanza) {
        let Some(to) = stanza.to.clone() else { return };
        if to.node().is_none() {
            return self.to_service(&ctx, stanza, &to).await;
        }
        if stanza.kind == Kind::Iq && stanza.iq_type().is_some_and(|t| !t.is_request()) {
            // Answers to requests a room passed on to an occupant (see `room.rs`).
            let _ = ctx.core.requests.complete(stanza);
            return;
        }
        // A groupchat message is acknowledged to its sender once it is archived.
        let durable = (stanza.kind == Kind::Message && stanza.message_type() == MessageType::Groupchat).then(|| ctx.durable()).flatten();
        self.dispatch(&ctx, Event::Stanza(stanza, durable), to.to_bare()).await
    }

    /// Queue an event to its room, loading or creating the room first if needed.
    async fn dispatch(self: &Arc<Self>, ctx: &Ctx, mut event: Event, room: BareJid) {
        // Twice at most: a room's task may end between the lookup and the send.
        for _ in 0..2 {
            let handle = match (self.rooms.get(&room).map(|h| h.clone()), &event) {
                (Some(handle), _) => handle,
                // No room is loaded while the server shuts down (see `RoomTask::run`).
                (None, _) if ctx.core.shutdown.is_cancelled() => return,
                (None, Event::Stanza(stanza, _)) => match self.open(ctx, stanza, &room).await {
                    Some(handle) => handle,
                    None => return,
                },
                // The rest concerns loaded rooms only.
                (None, _) => return,
            };
            match handle.send(event).map_err(|e| *e) {
                Ok(()) => return,
                Err((back, true)) => {
                    if let Event::Stanza(stanza, _) = &back {
                        let error = StanzaError::new(Condition::ResourceConstraint)
                            .with_type(crate::stanza::ErrorType::Wait)
                            .with_text("the room is busy; try again");
                        router::bounce(ctx, stanza, error).await;
                    }
                    return;
                }
                Err((back, false)) => {
                    self.rooms.remove_if(&room, |_, h| h.same(&handle));
                    event = back;
                }
            }
        }
    }

    /// The room's task: from the database, or a new room for a first entry; `None` (the
    /// sender answered) when neither.
    async fn open(self: &Arc<Self>, ctx: &Ctx, stanza: &Stanza, jid: &BareJid) -> Option<RoomHandle> {
        let _guard = self.loading.lock().await;
        if let Some(handle) = self.rooms.get(jid) {
            return Some(handle.clone());
        }
        let stored = match self.store.load(jid).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::error!(error = %e, room = %jid, "cannot load a room");
                router::bounce(ctx, stanza, StanzaError::internal()).await;
                return None;
            }
        };
        let room = match stored {
            Some(stored) => {
                let mut room = room::Room::from_stored(stored, &self.config, self.joined.clone());
                room.avatar_hash = self.photo_hash(jid).await;
                room
            }
            None => {
                // §10.1.1: entering a room that does not exist creates it.
                let entering = stanza.kind == Kind::Presence
                    && stanza.presence_type() == Some(PresenceType::Available)
                    && stanza.to.as_ref().is_some_and(|t| t.resource().is_some())
                    && stanza.el.get_child("x", MUC).is_some();
                if !entering {
                    let to_occupant = stanza.to.as_ref().is_some_and(|t| t.resource().is_some());
                    let error = match stanza.payload() {
                        // Nobody is in a room that does not exist (XEP-0410 §3.2).
                        Some(payload) if stanza.kind == Kind::Iq && to_occupant => room::not_in_room(payload),
                        _ => StanzaError::item_not_found().with_text("no such room"),
                    };
                    if stanza.kind != Kind::Presence {
                        router::bounce(ctx, stanza, error).await;
                    }
                    return None;
                }
                if !self.may_create(ctx, &stanza.from) {
                    let error = StanzaError::new(Condition::NotAllowed).with_text("you may not create rooms on this service");
                    router::bounce(ctx, stanza, error).await;
                    return None;
                }
                let room = room::Room::new(jid.clone(), stanza.from.to_bare(), &self.config, self.joined.clone());
                // A row while it exists, temporary or not: the archive's rows need an owner.
                if let Err(e) = self.store.create(&room.to_stored()).await {
                    tracing::error!(error = %e, room = %jid, "cannot create a room");
                    router::bounce(ctx, stanza, StanzaError::internal()).await;
                    return None;
                }
                room
            }
        };
        let history = if room.config.archive { self.recent(jid, room.config.history_length).await } else { Vec::new() };
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = RoomHandle { tx, queued: Arc::new(AtomicUsize::new(0)) };
        self.rooms.insert(jid.clone(), handle.clone());
        let task = room::RoomTask { room, history, service: self.clone(), handle: handle.clone() };
        let span = tracing::info_span!("room", room = %jid);
        ctx.core.spawn(tracing::Instrument::instrument(task.run(ctx.core.clone(), rx), span));
        Some(handle)
    }

    /// The room's avatar hash (none when it cannot be read: the room works without it).
    async fn photo_hash(&self, jid: &BareJid) -> Option<String> {
        self.store.photo_hash(jid).await.unwrap_or_else(|e| {
            tracing::error!(error = %e, room = %jid, "cannot read a room's avatar hash");
            None
        })
    }

    /// The newest `n` messages of a room's archive, oldest first: its history for entering
    /// occupants.
    async fn recent(&self, jid: &BareJid, n: u32) -> Vec<room::HistoryItem> {
        if n == 0 {
            return Vec::new();
        }
        match self.archive.page(jid, &crate::storage::ArchiveRange::all(), true, n as usize, 0).await {
            Ok(mut rows) => {
                rows.reverse();
                rows.into_iter().filter_map(|row| room::HistoryItem::from_archive(row.ts, &row.stanza)).collect()
            }
            Err(e) => {
                tracing::error!(error = %e, room = %jid, "cannot read a room's history");
                Vec::new()
            }
        }
    }

    /// A session ended: it leaves the rooms it was in (an unavailable presence from it to
    /// each; a room it already left ignores it).
    async fn session_closed(self: Arc<Self>, ctx: Ctx, event: SessionEvent) {
        let Some((_, rooms)) = self.joined.remove(&event.jid) else { return };
        for room in rooms {
            let mut el = xml::element("presence", ns::CLIENT, &[("type", "unavailable")]);
            xml::set_attr(&mut el, "from", event.jid.as_str());
            let stanza = Stanza { kind: Kind::Presence, from: Jid::from(event.jid.clone()), to: Some(Jid::from(room.clone())), el };
            self.dispatch(&ctx, Event::Stanza(stanza, None), room).await;
        }
    }

    /// At start: temporary rooms a crash left in the database go, with their archives.
    async fn forget_temporary_rooms(self: Arc<Self>, _core: crate::core::Core) {
        match self.store.delete_temporary().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rooms = n, "temporary rooms left by the last run deleted"),
            Err(e) => tracing::error!(error = %e, "cannot delete the temporary rooms left by the last run"),
        }
    }

    /// A deleted account loses its affiliations in the rooms in memory too (the stored ones
    /// went with the account); its sessions' end takes it out of the rooms.
    async fn account_deleted(self: Arc<Self>, ctx: Ctx, change: DataChange) {
        if !matches!(change.data, ChangedData::AccountDeleted) {
            return;
        }
        let loaded: Vec<BareJid> = self.rooms.iter().map(|r| r.key().clone()).collect();
        for room in loaded {
            self.dispatch(&ctx, Event::AccountDeleted(change.owner.clone()), room).await;
        }
    }

    /// `[muc] create`.
    fn may_create(&self, ctx: &Ctx, who: &Jid) -> bool {
        match self.config.muc.create {
            RoomCreation::Anyone => true,
            RoomCreation::Local => ctx.core.is_local_account(who),
            RoomCreation::Admins => self.config.is_admin(&who.to_bare()),
        }
    }

    /// The room's task ended: forget it, unless another took its place.
    fn forget(&self, jid: &BareJid, handle: &RoomHandle) {
        self.rooms.remove_if(jid, |_, h| h.same(handle));
    }

    /// Rooms in memory beyond `[muc] max_rooms_in_memory`: idle ones unload at once.
    fn crowded(&self) -> bool {
        self.rooms.len() > self.config.muc.max_rooms_in_memory
    }

    /// Stanzas for the service itself (§6).
    async fn to_service(&self, ctx: &Ctx, stanza: Stanza, to: &Jid) {
        let request = stanza.kind == Kind::Iq && stanza.iq_type().is_some_and(IqType::is_request);
        if !request {
            if stanza.kind == Kind::Message && matches!(stanza.message_type(), MessageType::Normal | MessageType::Chat) {
                router::bounce(ctx, &stanza, StanzaError::service_unavailable()).await;
            }
            return;
        }
        let reply = match (stanza.iq_type(), stanza.payload()) {
            _ if to.resource().is_some() => Err(StanzaError::service_unavailable()),
            (Some(IqType::Get), Some(q)) if q.is("query", ns::DISCO_INFO) => Ok(Some(self.service_info(q))),
            (Some(IqType::Get), Some(q)) if q.is("query", ns::DISCO_ITEMS) => self.service_items(to, q).await,
            (Some(IqType::Get), Some(q)) if q.is("unique", MUC_UNIQUE) => {
                // §10.1.4: a name no room has, made at random.
                Ok(Some(xml::text_element("unique", MUC_UNIQUE, &crate::stanza::new_id().to_lowercase())))
            }
            (Some(IqType::Get), Some(q)) if q.is("ping", ns::PING) => Ok(None),
            _ => Err(StanzaError::service_unavailable()),
        };
        let reply = match reply {
            Ok(payload) => Some(stanza.iq_result(payload)),
            Err(e) => stanza.error_reply(&e),
        };
        if let Some(reply) = reply {
            ctx.reply(reply).await;
        }
    }

    /// §6.2: the service's identity and features.
    fn service_info(&self, q: &Element) -> Element {
        let mut query = Element::bare("query", ns::DISCO_INFO);
        if q.attr("node").is_some() {
            return query;
        }
        query.append_child(xml::element("identity", ns::DISCO_INFO, &[("category", "conference"), ("type", "text"), ("name", "Chatrooms")]));
        for var in [ns::DISCO_INFO, ns::DISCO_ITEMS, MUC, MUC_UNIQUE, SID, STABLE_ID, OCCUPANT_ID, ns::PING, form::RSM] {
            query.append_child(xml::element("feature", ns::DISCO_INFO, &[("var", var)]));
        }
        query
    }

    /// §6.3: the public rooms, by XEP-0059 pages (all of them up to [`form::MAX_ITEMS`]
    /// when no page is asked for). Temporary rooms live in memory only; persistent ones are
    /// listed from the database, loaded or not.
    async fn service_items(&self, service: &Jid, q: &Element) -> Result<Option<Element>, StanzaError> {
        if q.attr("node").is_some() {
            return Ok(Some(Element::bare("query", ns::DISCO_ITEMS)));
        }
        let rsm = form::PageRequest::parse(q.get_child("set", form::RSM))?;
        let domain = service.domain().as_str();
        let mut rooms = self.store.list(domain, true, None, form::MAX_ITEMS).await?;
        let stored: std::collections::HashSet<String> = rooms.iter().map(|r| r.jid.clone()).collect();
        // Collected first: no map lock may be held while a room answers.
        let loaded: Vec<(BareJid, RoomHandle)> = self.rooms.iter().map(|r| (r.key().clone(), r.value().clone())).collect();
        for (jid, handle) in loaded {
            if jid.domain().as_str() != domain || stored.contains(jid.as_str()) {
                continue;
            }
            // A temporary room: ask its task (it answers from its state).
            if let Some(summary) = room::summary(&handle).await {
                rooms.push(summary);
            }
        }
        rooms.sort_by(|a, b| a.jid.cmp(&b.jid));
        Ok(Some(form::items_page(rooms, &rsm)))
    }
}
