//! One room: its state, and the task that owns it and takes its stanzas in order. Entering
//! and leaving (§7.2, §7.14), nick changes and presence updates (§7.6, §7.7), messages to
//! all occupants (§7.4) and private ones (§7.5), invitations (§7.8.2), the subject (§8.1),
//! history on entry from the room's archive (§7.2.15).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use jid::{BareJid, FullJid, Jid};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::occupant::{self, Occupant, Role};
use super::{Event, MAM, MUC, MUC_ADMIN, MUC_OWNER, Muc, RoomHandle};
use crate::config::Config;
use crate::core::Core;
use crate::modules::{Ctx, Durable};
use crate::requests::RequestError;

use crate::stanza::{Condition, IqType, Kind, Stanza, StanzaError};
use crate::storage::{Affiliation, RoomConfig, RoomSummary, StoredAffiliation, StoredRoom};
use crate::xml::{self, Element, ns};

/// An empty persistent room stays in memory this long after its last occupant left (a
/// room people come back to is not loaded again each time), unless rooms in memory are
/// over `[muc] max_rooms_in_memory`.
const IDLE_UNLOAD: Duration = Duration::from_secs(300);

/// How long a request passed on to an occupant (§7.? IQ to an occupant JID) waits.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// An affiliation held in a room, with the nick reserved with it (§7.10) and why.
#[derive(Debug, Clone)]
pub struct Affiliated {
    pub affiliation: Affiliation,
    pub nick: String,
    pub reason: String,
}

/// A message of the room's history: as broadcast, without `to`, with its archive position.
#[derive(Debug, Clone)]
pub struct HistoryItem {
    pub ts: i64,
    pub el: Element,
}

impl HistoryItem {
    pub fn from_archive(ts: i64, stanza: &str) -> Option<HistoryItem> {
        xml::parse_element(stanza).ok().map(|el| HistoryItem { ts, el })
    }
}

/// Which rooms each resource is in, service-wide: when a session ends, its rooms are told
/// even if it never sent the presence whose end would tell them (RFC 6121 §4.6 tracks
/// directed presence only from available resources).
pub type Joined = Arc<dashmap::DashMap<FullJid, Vec<BareJid>>>;

pub struct Room {
    pub jid: BareJid,
    pub config: RoomConfig,
    /// In the database (§10.1.3 `muc#roomconfig_persistentroom`); a temporary room vanishes
    /// when its last occupant leaves.
    pub persistent: bool,
    /// §10.1.1: new, and not yet configured by its owner: only owners may enter.
    pub locked: bool,
    pub subject: String,
    pub subject_from: String,
    /// The occupant id (XEP-0421) of who set the subject ('' when unknown).
    pub subject_occupant_id: String,
    /// By bare JID (or domain), as given in the admin lists.
    pub affiliations: HashMap<String, Affiliated>,
    /// By nick, as enforced by the PRECIS Nickname profile ([`occupant::enforce`]).
    pub occupants: HashMap<String, Occupant>,
    /// Nick in the profile's comparison form ([`occupant::fold`]) → nick: nicks given by
    /// clients (entering, changing nick, addressing an occupant) are looked up here.
    pub(super) folded: HashMap<String, String>,
    /// Each resource in the room → its nick.
    pub(super) by_session: HashMap<FullJid, String>,
    /// The service's index of which rooms each resource is in (see [`Joined`]).
    pub(super) joined: Joined,
    pub(super) salt: Vec<u8>,
    pub(super) created: i64,
    /// Destroyed by its owner: the task ends.
    pub destroyed: bool,
    /// When each real bare JID last requested voice (§7.13), for the rate limit.
    pub(super) voice_requests: HashMap<BareJid, std::time::Instant>,
    /// The SHA-1 of the room's vCard photo, if it has one (its avatar, `vcard.rs`).
    pub avatar_hash: Option<String>,
}

impl Room {
    /// A room being created by its first occupant (§10.1.1): locked, with `creator` as owner.
    pub fn new(jid: BareJid, creator: BareJid, config: &Config, joined: Joined) -> Room {
        let mut salt = vec![0u8; 16];
        getrandom::fill(&mut salt).expect("the OS random source works");
        let mut affiliations = HashMap::new();
        affiliations.insert(creator.to_string(), Affiliated { affiliation: Affiliation::Owner, nick: String::new(), reason: String::new() });
        Room {
            config: default_config(&jid, config),
            jid,
            persistent: false,
            locked: true,
            subject: String::new(),
            subject_from: String::new(),
            subject_occupant_id: String::new(),
            affiliations,
            occupants: HashMap::new(),
            folded: HashMap::new(),
            by_session: HashMap::new(),
            joined: joined.clone(),
            salt,
            created: crate::storage::now_micros() / 1_000_000,
            destroyed: false,
            voice_requests: HashMap::new(),
            avatar_hash: None,
        }
    }

    pub fn from_stored(stored: StoredRoom, config: &Config, joined: Joined) -> Room {
        let mut room_config = stored.config;
        room_config.max_users = room_config.max_users.min(config.muc.max_occupants);
        Room {
            jid: stored.jid,
            config: room_config,
            persistent: stored.persistent,
            locked: false,
            subject: stored.subject,
            subject_from: stored.subject_from,
            subject_occupant_id: stored.subject_occupant_id,
            affiliations: stored
                .affiliations
                .into_iter()
                .map(|a| (a.jid, Affiliated { affiliation: a.affiliation, nick: a.nick, reason: a.reason }))
                .collect(),
            occupants: HashMap::new(),
            folded: HashMap::new(),
            by_session: HashMap::new(),
            joined: joined.clone(),
            salt: stored.occupant_salt,
            created: stored.created,
            destroyed: false,
            voice_requests: HashMap::new(),
            avatar_hash: None,
        }
    }

    pub fn to_stored(&self) -> StoredRoom {
        StoredRoom {
            jid: self.jid.clone(),
            config: self.config.clone(),
            subject: self.subject.clone(),
            subject_from: self.subject_from.clone(),
            subject_occupant_id: self.subject_occupant_id.clone(),
            occupant_salt: self.salt.clone(),
            created: self.created,
            persistent: self.persistent,
            affiliations: self.stored_affiliations(),
        }
    }

    pub fn stored_affiliations(&self) -> Vec<StoredAffiliation> {
        let mut list: Vec<StoredAffiliation> = self
            .affiliations
            .iter()
            .map(|(jid, a)| StoredAffiliation { jid: jid.clone(), affiliation: a.affiliation, nick: a.nick.clone(), reason: a.reason.clone() })
            .collect();
        list.sort_by(|a, b| a.jid.cmp(&b.jid));
        list
    }

    /// §5.2: the affiliation of a real bare JID (its own entry, else its domain's); the
    /// server's admins own every room.
    pub fn affiliation_of(&self, bare: &BareJid, config: &Config) -> Option<Affiliation> {
        // The server's admins, and the server itself (its admin CLI sends from the served
        // domain; nobody else can send from it: clients' `from` is stamped).
        if config.is_admin(bare) || (bare.node().is_none() && config.serves(bare.domain().as_str())) {
            return Some(Affiliation::Owner);
        }
        self.affiliations
            .get(bare.as_str())
            .or_else(|| self.affiliations.get(bare.domain().as_str()))
            .map(|a| a.affiliation)
    }

    pub fn occupant_of(&self, session: &FullJid) -> Option<&Occupant> {
        self.by_session.get(session).and_then(|nick| self.occupants.get(nick))
    }

    /// §10.2 `muc#roomconfig_presencebroadcast`: whether presence about `o` goes to the other
    /// occupants, by its role; for an unavailable presence (role none), by the role it had,
    /// since others were told of it only if that role was broadcast.
    pub(super) fn announced(&self, o: &Occupant, available: bool) -> bool {
        let role = if available { o.role } else { self.occupants.get(&o.nick).map_or(o.role, |had| had.role) };
        self.config.presence_broadcast.includes(role.as_str())
    }

    /// Whether `viewer` may see occupants' real JIDs (§7.2.3, §7.2.4).
    pub(super) fn sees_jids(&self, viewer: &Occupant) -> bool {
        self.config.whois == crate::storage::Whois::Anyone || viewer.role == Role::Moderator
    }

    /// The room's entry in the service's disco#items, if public and open.
    pub fn summary(&self) -> Option<RoomSummary> {
        (self.config.public && !self.locked).then(|| RoomSummary { jid: self.jid.to_string(), name: self.config.name.clone(), public: true })
    }

    /// The occupant known by `nick` or by a nick the same under the Nickname profile's
    /// comparison.
    pub fn occupant_named(&self, nick: &str) -> Option<&Occupant> {
        occupant::fold(nick).and_then(|folded| self.folded.get(&folded)).and_then(|nick| self.occupants.get(nick))
    }

    /// The nick `bare` (a bare JID's text) registered in this room (§7.10), when nicks are
    /// locked down to it (`[muc] lock_registered_nicks`).
    pub(super) fn locked_nick(&self, bare: &str, config: &Config) -> Option<&str> {
        if !config.muc.lock_registered_nicks {
            return None;
        }
        let a = self.affiliations.get(bare)?;
        (!a.nick.is_empty() && a.affiliation != Affiliation::Outcast).then_some(a.nick.as_str())
    }

    /// Whether `nick` is reserved (§7.10) by an affiliated JID other than `bare`.
    pub(super) fn reserved_by_other(&self, nick: &str, bare: &BareJid) -> bool {
        let Some(folded) = occupant::fold(nick) else { return false };
        self.affiliations.iter().any(|(jid, a)| !a.nick.is_empty() && jid != bare.as_str() && occupant::fold(&a.nick).as_ref() == Some(&folded))
    }

    pub(super) fn add_occupant(&mut self, o: Occupant) {
        for s in &o.sessions {
            self.bind(s.clone(), &o.nick);
        }
        // Enforced nicks always fold (`occupant::enforce` checks).
        self.folded.insert(occupant::fold(&o.nick).unwrap_or_else(|| o.nick.clone()), o.nick.clone());
        self.occupants.insert(o.nick.clone(), o);
    }

    pub fn remove_occupant(&mut self, nick: &str) -> Option<Occupant> {
        let o = self.occupants.remove(nick)?;
        for s in &o.sessions {
            self.unbind(s);
        }
        self.folded.remove(&occupant::fold(nick).unwrap_or_else(|| nick.to_string()));
        Some(o)
    }

    /// A resource is in the room under `nick`.
    pub(super) fn bind(&mut self, session: FullJid, nick: &str) {
        let mut rooms = self.joined.entry(session.clone()).or_default();
        if !rooms.contains(&self.jid) {
            rooms.push(self.jid.clone());
        }
        drop(rooms);
        self.by_session.insert(session, nick.to_string());
    }

    /// A resource is no longer in the room.
    pub(super) fn unbind(&mut self, session: &FullJid) {
        self.by_session.remove(session);
        self.joined.remove_if_mut(session, |_, rooms| {
            rooms.retain(|r| r != &self.jid);
            rooms.is_empty()
        });
    }

    /// Every resource leaves the room's index (the room's task ends).
    pub fn unbind_all(&mut self) {
        let sessions: Vec<FullJid> = self.by_session.keys().cloned().collect();
        for s in &sessions {
            self.unbind(s);
        }
    }
}

/// A new room's configuration: the service's defaults (see the example config).
fn default_config(jid: &BareJid, config: &Config) -> RoomConfig {
    RoomConfig {
        name: jid.node().map(|n| n.as_str().to_string()).unwrap_or_default(),
        description: String::new(),
        language: String::new(),
        public: true,
        members_only: false,
        moderated: false,
        password: String::new(),
        max_users: config.muc.max_occupants,
        whois: crate::storage::Whois::Moderators,
        allow_invites: true,
        change_subject: false,
        allow_pm: crate::storage::AllowPm::Anyone,
        archive: true,
        history_length: config.muc.history,
        presence_broadcast: crate::storage::PresenceBroadcast::ALL,
    }
}

/// Ask a room's task for its disco#items entry.
pub async fn summary(handle: &RoomHandle) -> Option<RoomSummary> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    handle.send(Event::Summary(tx)).ok()?;
    rx.await.ok().flatten()
}

/// The room and everything its task needs.
pub struct RoomTask {
    pub room: Room,
    pub history: Vec<HistoryItem>,
    pub service: Arc<Muc>,
    pub handle: RoomHandle,
}

/// The state a task works on, with the history as a queue.
pub struct Live {
    pub room: Room,
    pub history: VecDeque<HistoryItem>,
    pub service: Arc<Muc>,
    pub ctx: Ctx,
}

impl RoomTask {
    pub async fn run(self, core: Core, mut rx: mpsc::UnboundedReceiver<Event>) {
        let RoomTask { room, history, service, handle } = self;
        let mut live = Live { room, history: history.into(), service, ctx: Ctx::new(core.clone()) };
        loop {
            let idle = live.room.occupants.is_empty();
            let event = tokio::select! {
                event = rx.recv() => event,
                _ = core.shutdown.cancelled() => None,
                _ = tokio::time::sleep(IDLE_UNLOAD), if idle => None,
            };
            let Some(event) = event else { break };
            handle.queued.fetch_sub(1, Ordering::Relaxed);
            match event {
                Event::Stanza(stanza, durable) => live.on_stanza(stanza, durable).await,
                Event::Summary(reply) => {
                    let _ = reply.send(live.room.summary());
                }
                Event::AccountDeleted(account) => {
                    live.room.affiliations.remove(account.as_str());
                }
            }
            let empty = live.room.occupants.is_empty();
            if live.room.destroyed || (empty && (!live.room.persistent || live.service.crowded())) {
                break;
            }
        }
        let jid = live.room.jid.clone();
        if !live.room.persistent && !live.room.destroyed && !core.shutdown.is_cancelled() {
            // A temporary room vanishes with its archive, before anyone can load it again
            // (stanzas meanwhile wait in the queue, then go to a new room).
            live.service.archive.committed().await;
            if let Err(e) = live.service.store.delete(&jid).await {
                tracing::error!(error = %e, room = %jid, "cannot delete a vanished room");
            }
        }
        // Stop taking events; what came in meanwhile goes to whichever task is next.
        live.room.unbind_all();
        live.service.forget(&jid, &handle);
        rx.close();
        let mut rest = Vec::new();
        while let Ok(event) = rx.try_recv() {
            rest.push(event);
        }
        if core.shutdown.is_cancelled() {
            // Every session is ending: no room is loaded again for what they sent last (a
            // message among it was not acknowledged, and its sender sends it again).
            if !rest.is_empty() {
                tracing::debug!(dropped = rest.len(), "room stopped for shutdown");
            }
            return;
        }
        for event in rest {
            core.spawn(redispatch(live.service.clone(), live.ctx.clone(), event, jid.clone()));
        }
    }
}

/// Queue an event again, to the room's next task. Boxed with its `Send` stated: a room's
/// task spawns this, and this may spawn a room's task.
fn redispatch(service: Arc<Muc>, ctx: Ctx, event: Event, jid: BareJid) -> crate::modules::BoxFuture<()> {
    Box::pin(async move { service.dispatch(&ctx, event, jid).await }.in_current_span())
}

impl Live {
    pub fn jid(&self) -> &BareJid {
        &self.room.jid
    }

    pub(super) async fn on_stanza(&mut self, stanza: Stanza, durable: Option<Durable>) {
        match stanza.kind {
            Kind::Presence => self.on_presence(stanza).await,
            Kind::Message => self.on_message(stanza, durable).await,
            Kind::Iq => self.on_iq(stanza).await,
        }
    }

    /// Send an element to one resource, from `from`.
    pub async fn send_to(&self, from: Jid, to: &FullJid, el: Element) {
        self.ctx.send(Stanza::new(el, from, Jid::from(to.clone()))).await;
    }

    /// The same stanza to every resource of every occupant, from `from`: serialised once,
    /// every copy differing only in its `to`.
    pub async fn broadcast(&self, from: Jid, mut el: Element) {
        el.share_content();
        xml::set_attr(&mut el, "from", from.as_str());
        let kind = Kind::named(el.name()).unwrap_or(Kind::Message);
        for o in self.room.occupants.values() {
            for session in &o.sessions {
                let copy = el.copy_to(session.as_str());
                self.ctx.send(Stanza { kind, from: from.clone(), to: Some(Jid::from(session.clone())), el: copy }).await;
            }
        }
    }

    /// An error answer to a stanza sent to the room, from where it was sent to; a presence
    /// error carries the `<x/>` of MUC, as in §7.2's examples.
    pub async fn refuse(&self, stanza: &Stanza, error: StanzaError) {
        let Some(mut reply) = stanza.error_reply(&error) else { return };
        // The room generated the error (RFC 6120 §8.3.2: `by`).
        reply.el.retain_children(|c| !c.is("error", ns::CLIENT));
        reply.el.append_child(error.to_element(Some(self.room.jid.as_str())));
        if stanza.kind == Kind::Presence {
            let mut el = xml::element("presence", ns::CLIENT, &[("type", "error")]);
            for attr in ["id", "from", "to"] {
                if let Some(v) = reply.el.attr(attr) {
                    xml::set_attr(&mut el, attr, v);
                }
            }
            el.append_child(Element::bare("x", MUC));
            el.append_child(error.to_element(Some(self.room.jid.as_str())));
            reply.el = el;
        }
        self.ctx.send(reply).await;
    }


    pub(super) async fn on_iq(&mut self, stanza: Stanza) {
        let Some(kind) = stanza.iq_type() else { return };
        if !kind.is_request() {
            return;
        }
        let Some(payload) = stanza.payload().cloned() else { return };
        if let Some(nick) = stanza.to.as_ref().and_then(|t| t.resource()).map(|r| r.as_str().to_string()) {
            return self.iq_to_occupant(stanza, &nick, &payload).await;
        }
        let result = match (kind, payload.name(), payload.ns()) {
            (IqType::Get, "query", ns::DISCO_INFO) => self.disco_info(&stanza, &payload),
            (IqType::Get, "query", ns::DISCO_ITEMS) => self.disco_items(&stanza, &payload),
            (_, "query", MUC_ADMIN) => self.admin(&stanza, kind, &payload).await,
            (_, "query", MUC_OWNER) => self.owner(&stanza, kind, &payload).await,
            (IqType::Set, "moderate", super::moderation::MODERATE) => self.moderate(&stanza, &payload).await,
            (_, "query", ns::REGISTER) => self.register(&stanza, kind, &payload).await,
            (IqType::Get, "vCard", ns::VCARD) => return self.get_room_vcard(stanza),
            (IqType::Set, "vCard", ns::VCARD) => self.set_room_vcard(&stanza, &payload).await,
            (IqType::Get, "ping", ns::PING) => Ok(None),
            (IqType::Set, "query", MAM) => return self.archive_query(stanza, payload),
            (IqType::Get, "query", MAM) if self.room.config.archive => Ok(Some(crate::archive_query::form())),
            _ => Err(StanzaError::service_unavailable()),
        };
        let reply = match result {
            Ok(payload) => Some(stanza.iq_result(payload)),
            Err(e) => stanza.error_reply(&e),
        };
        if let Some(reply) = reply {
            self.ctx.send(reply).await;
        }
    }

    /// An IQ to an occupant JID: XEP-0410 self-ping answered by the room; other requests
    /// from occupants passed on to the occupant (vCards to its bare JID), the answer
    /// coming back from the target's occupant JID (§6.7, §18.1).
    pub(super) async fn iq_to_occupant(&mut self, stanza: Stanza, nick: &str, payload: &Element) {
        let from = stanza.from.clone();
        let sender = from.clone().try_into_full().ok().and_then(|f| self.room.occupant_of(&f).cloned());
        let Some(sender) = sender else {
            return self.refuse(&stanza, not_in_room(payload)).await;
        };
        let Some(target) = self.room.occupant_named(nick).cloned() else {
            return self.refuse(&stanza, StanzaError::item_not_found().with_text("no such occupant")).await;
        };
        if payload.is("ping", ns::PING) && target.nick == sender.nick {
            return self.ctx.send(stanza.iq_result(None)).await;
        }
        let to = if payload.is("vCard", ns::VCARD) { Jid::from(target.bare.clone()) } else { Jid::from(target.shown_jid().clone()) };
        let mut iq = Element::bare("iq", ns::CLIENT);
        xml::set_attr(&mut iq, "type", stanza.type_attr().unwrap_or("get"));
        iq.append_child(payload.clone());
        let request = Stanza::new(iq, occupant::occupant_jid(self.jid(), &sender.nick), to);
        let (ctx, target_jid) = (self.ctx.clone(), occupant::occupant_jid(self.jid(), &target.nick));
        self.ctx.core.spawn(
            async move {
                let reply = match ctx.request(request, FORWARD_TIMEOUT).await {
                    Ok(answer) => {
                        let mut reply = stanza.iq_result(answer.children().next().cloned());
                        reply.set_from(target_jid);
                        Some(reply)
                    }
                    Err(RequestError::Error(mut el)) => {
                        xml::set_attr(&mut el, "id", stanza.id().unwrap_or_default());
                        Some(Stanza::new(el, target_jid, from))
                    }
                    Err(_) => stanza.error_reply(&StanzaError::new(Condition::RecipientUnavailable)),
                };
                if let Some(reply) = reply {
                    ctx.send(reply).await;
                }
            }
            .in_current_span(),
        );
    }

    /// §6.4: the room's identity, features and the muc#roominfo form; §7.11: the reserved
    /// nick.
    pub(super) fn disco_info(&self, stanza: &Stanza, payload: &Element) -> Result<Option<Element>, StanzaError> {
        if self.room.locked && !self.is_owner(&stanza.from) {
            return Err(StanzaError::item_not_found());
        }
        match payload.attr("node") {
            None => Ok(Some(super::form::room_info(&self.room))),
            Some(super::register::RESERVED_NICK_NODE) => Ok(Some(self.reserved_nick_info(&stanza.from.to_bare()))),
            Some(_) => Err(StanzaError::item_not_found()),
        }
    }

    /// §6.5: occupants are not listed (their nicks are in their presence, for occupants).
    pub(super) fn disco_items(&self, stanza: &Stanza, _payload: &Element) -> Result<Option<Element>, StanzaError> {
        if self.room.locked && !self.is_owner(&stanza.from) {
            return Err(StanzaError::item_not_found());
        }
        Ok(Some(Element::bare("query", ns::DISCO_ITEMS)))
    }

    /// XEP-0313 on the room's JID: for whoever could enter (members of a members-only
    /// room, occupants of a password-protected one), never outcasts. The query runs in a
    /// task of its own: the room goes on meanwhile.
    pub(super) fn archive_query(&self, stanza: Stanza, payload: Element) {
        let bare = stanza.from.to_bare();
        let affiliation = self.room.affiliation_of(&bare, &self.service.config);
        let in_room = stanza.from.clone().try_into_full().ok().is_some_and(|f| self.room.by_session.contains_key(&f));
        let allowed = self.room.config.archive
            && affiliation != Some(Affiliation::Outcast)
            && (!self.room.config.members_only || affiliation.is_some())
            && (self.room.config.password.is_empty() || in_room || affiliation.is_some())
            && !self.room.locked;
        let (ctx, archive, room, max_page) = (self.ctx.clone(), self.service.archive.clone(), self.jid().clone(), self.service.config.mam.max_page);
        self.ctx.core.spawn(
            async move {
                let result = if allowed {
                    crate::archive_query::run(&ctx, &archive, &room, &payload, max_page, &stanza.from).await
                } else {
                    Err(StanzaError::forbidden().with_text("you may not read this room's archive"))
                };
                let reply = match result {
                    Ok(payload) => Some(stanza.iq_result(payload)),
                    Err(e) => stanza.error_reply(&e),
                };
                if let Some(reply) = reply {
                    ctx.send(reply).await;
                }
            }
            .in_current_span(),
        );
    }

    pub fn is_owner(&self, who: &Jid) -> bool {
        self.room.affiliation_of(&who.to_bare(), &self.service.config) == Some(Affiliation::Owner)
    }
}

/// The error for an IQ to an occupant from someone not in the room (or to a room that does
/// not exist): disco is a bad request (§6.7); anything else, XEP-0410's self-ping first,
/// says that the sender is not in the room, so that its client enters again (§3.2: to
/// `item-not-found` a client would think it still is).
pub fn not_in_room(payload: &Element) -> StanzaError {
    if payload.has_ns(ns::DISCO_INFO) || payload.has_ns(ns::DISCO_ITEMS) {
        StanzaError::bad_request("you are not in this room")
    } else {
        StanzaError::new(Condition::NotAcceptable).with_type(crate::stanza::ErrorType::Cancel).with_text("you are not in this room")
    }
}
