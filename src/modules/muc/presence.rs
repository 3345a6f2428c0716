//! Occupants coming and going (XEP-0045 §7.2 entering with its errors, history and subject;
//! §7.6 nick changes; §7.7 presence updates; §7.14 exit), and removals by the room.

use jid::{BareJid, FullJid, Jid};

use super::{MUC, MUC_USER, OCCUPANT_ID};
use super::occupant::{self, ItemExtras, Occupant, Role};
use super::room::Live;
use crate::stanza::{Condition, ErrorType, PresenceType, Stanza, StanzaError};
use crate::storage::Affiliation;
use crate::xml::{self, Element, ns};

impl Live {

    pub(super) async fn on_presence(&mut self, stanza: Stanza) {
        let Ok(from) = stanza.from.clone().try_into_full() else { return };
        let nick = stanza.to.as_ref().and_then(|t| t.resource()).map(|r| r.as_str().to_string());
        match stanza.presence_type() {
            Some(PresenceType::Available) => {
                let Some(nick) = nick else {
                    // §7.2.1: entering needs a nick.
                    return self.refuse(&stanza, StanzaError::new(Condition::JidMalformed).with_text("a room is entered as room@service/nick")).await;
                };
                let joining = stanza.el.get_child("x", MUC).is_some();
                let current = self.room.by_session.get(&from).cloned();
                if current.is_none() && !joining {
                    // §7.2 (1.32): presence without <x/> from a non-occupant is a client
                    // that lost its place in the room: told so explicitly.
                    return self.kick_desynced(&from, &nick).await;
                }
                let mut nick = match occupant::enforce(self.jid(), &nick) {
                    Ok(nick) => nick,
                    Err(e) => return self.refuse(&stanza, e).await,
                };
                if let Some(locked) = self.room.locked_nick(crate::stanza::bare_str(from.as_str()), &self.service.config) {
                    let same = occupant::fold(locked).is_some_and(|l| occupant::fold(&nick) == Some(l));
                    match &current {
                        // §7.10: entering under another nick: under the registered one (210).
                        None if !same => nick = locked.to_string(),
                        // §7.6 Example 50: no other nick while nicks are locked down.
                        Some(current) if !same && occupant::fold(current) != occupant::fold(&nick) => {
                            let error = StanzaError::new(Condition::NotAcceptable).with_type(ErrorType::Cancel).with_text(format!("your nick in this room is {locked}"));
                            return self.refuse(&stanza, error).await;
                        }
                        _ => {}
                    }
                }
                match current {
                    Some(current) if current == nick && joining => self.enter(stanza, from, nick).await,
                    Some(current) if current == nick => self.update_presence(&stanza, &from).await,
                    Some(current) => self.change_nick(&stanza, &from, &current, &nick).await,
                    None => self.enter(stanza, from, nick).await,
                }
            }
            Some(PresenceType::Unavailable) if self.room.by_session.contains_key(&from) => {
                self.leave(&from, occupant::kept_presence(&stanza.el)).await;
            }
            // An occupant's client answered with an error: it is gone (§9.? 333).
            Some(PresenceType::Error) => self.remove_for_error(&from).await,
            _ => {}
        }
    }

    /// §7.2: entering (or a repeated join from a resource already in, answered in full).
    pub(super) async fn enter(&mut self, stanza: Stanza, from: FullJid, nick: String) {
        let config = self.service.config.clone();
        let bare = from.to_bare();
        let affiliation = self.room.affiliation_of(&bare, &config);
        let x = stanza.el.get_child("x", MUC).cloned().unwrap_or_else(|| Element::bare("x", MUC));
        let again = self.room.by_session.contains_key(&from);
        if !again
            && let Err(e) = self.may_enter(&bare, affiliation, &nick, &x)
        {
            return self.refuse(&stanza, e).await;
        }
        let created = self.room.locked && self.room.occupants.is_empty() && !self.room.persistent;
        let existing = self.room.occupant_named(&nick).map(|o| o.nick.clone());
        let nick = match existing {
            // Another resource of the same person: the same nick (§7.2 multi-session).
            Some(existing) => {
                let o = self.room.occupants.get_mut(&existing).expect("folded nicks are occupants");
                if !o.sessions.contains(&from) {
                    o.sessions.push(from.clone());
                }
                o.presence = occupant::kept_presence(&stanza.el);
                self.room.bind(from.clone(), &existing);
                existing
            }
            None => {
                let o = Occupant {
                    nick: nick.clone(),
                    bare: bare.clone(),
                    sessions: vec![from.clone()],
                    role: Role::on_entry(affiliation, self.room.config.moderated),
                    affiliation,
                    presence: occupant::kept_presence(&stanza.el),
                    occupant_id: occupant::occupant_id(&self.room.salt, &bare),
                };
                self.room.add_occupant(o);
                nick
            }
        };
        // 1. Everyone else's presence to the new resource.
        let me = self.room.occupants[&nick].clone();
        let sees = self.room.sees_jids(&me);
        for o in self.room.occupants.values().filter(|o| o.nick != nick && self.room.announced(o, true)) {
            let el = occupant::presence(self.jid(), o, true, occupant::user_x(o, sees, &[], &ItemExtras::default()));
            self.send_to(occupant::occupant_jid(self.jid(), &o.nick), &from, el).await;
        }
        // 2. The new presence to everyone else, and to the occupant's other resources.
        if !again {
            self.broadcast_presence(&me, true, &[], &ItemExtras::default(), Some(&from)).await;
        }
        // 3. Self-presence, last of the presences (§7.2.3), reflecting the join's id.
        let mut codes = vec![110];
        if self.room.config.whois == crate::storage::Whois::Anyone {
            codes.push(100);
        }
        if self.room.config.archive {
            codes.push(170);
        }
        if created {
            codes.push(201);
        }
        if requested_nick(&stanza) != Some(nick.as_str()) {
            // §7.2.11: the nick in the occupant JID is not the one asked for (enforced by
            // the Nickname profile, or another resource's under the same nick).
            codes.push(210);
        }
        let mut el = occupant::presence(self.jid(), &me, true, occupant::user_x(&me, true, &codes, &ItemExtras::default()));
        if let Some(id) = stanza.id() {
            xml::set_attr(&mut el, "id", id);
        }
        self.send_to(occupant::occupant_jid(self.jid(), &nick), &from, el).await;
        // A new, locked room sends its (empty) subject too: §7.2.15 knows no exception, and
        // clients (slixmpp's join_muc_wait) wait for the subject to finish a join.
        // 4. History (§7.2.15), then 5. the subject (§7.2.16), even when empty.
        for el in self.history_for(x.get_child("history", MUC)) {
            let sender = el.attr("from").and_then(|f| Jid::new(f).ok()).unwrap_or_else(|| Jid::from(self.jid().clone()));
            self.send_to(sender, &from, el).await;
        }
        let subject = self.subject_message();
        self.send_to(subject.0, &from, subject.1).await;
        self.send_avatar(&from).await;
    }

    /// The checks of §7.2 on a new occupant, in the order the spec lists its errors.
    pub(super) fn may_enter(&self, bare: &BareJid, affiliation: Option<Affiliation>, nick: &str, x: &Element) -> Result<(), StanzaError> {
        let room = &self.room;
        if room.locked && affiliation != Some(Affiliation::Owner) {
            // §10.1.1: nobody but the owner until the room is configured.
            return Err(StanzaError::item_not_found().with_text("this room is being set up by its owner"));
        }
        if affiliation == Some(Affiliation::Outcast) {
            return Err(StanzaError::forbidden().with_text("you are banned from this room"));
        }
        if room.config.members_only && affiliation.is_none() {
            return Err(StanzaError::new(Condition::RegistrationRequired).with_text("this room is for members only"));
        }
        if let Some(existing) = room.occupant_named(nick) {
            if &existing.bare != bare {
                return Err(StanzaError::new(Condition::Conflict).with_text("this nick is taken in this room"));
            }
        } else {
            if room.reserved_by_other(nick, bare) {
                return Err(StanzaError::new(Condition::Conflict).with_text("this nick is reserved in this room"));
            }
            let privileged = matches!(affiliation, Some(Affiliation::Owner | Affiliation::Admin));
            if room.occupants.len() >= room.config.max_users as usize && !privileged {
                return Err(StanzaError::service_unavailable().with_type(ErrorType::Wait).with_text("this room is full"));
            }
        }
        if !room.config.password.is_empty() {
            use subtle::ConstantTimeEq;
            let given = x.get_child("password", MUC).map(|p| p.text()).unwrap_or_default();
            let ok: bool = given.as_bytes().ct_eq(room.config.password.as_bytes()).into();
            if !ok {
                return Err(StanzaError::new(Condition::NotAuthorized).with_text("a password is needed to enter this room"));
            }
        }
        Ok(())
    }

    /// §7.2.15: the messages of the history that the request asks for, oldest first, each
    /// with a delay from the room.
    pub(super) fn history_for(&self, request: Option<&Element>) -> Vec<Element> {
        let limit = |name: &str| request.and_then(|h| h.attr(name)).and_then(|v| v.parse::<u64>().ok());
        let mut max_stanzas = self.room.config.history_length as u64;
        if let Some(n) = limit("maxstanzas") {
            max_stanzas = max_stanzas.min(n);
        }
        let mut since = i64::MIN;
        if let Some(seconds) = limit("seconds") {
            since = crate::storage::now_micros().saturating_sub(seconds.saturating_mul(1_000_000) as i64);
        }
        if let Some(stamp) = request.and_then(|h| h.attr("since"))
            && let Ok(t) = time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)
        {
            since = since.max((t.unix_timestamp_nanos() / 1000) as i64);
        }
        let max_chars = limit("maxchars");
        let mut picked = Vec::new();
        let mut chars = 0u64;
        for item in self.history.iter().rev() {
            if picked.len() as u64 >= max_stanzas || item.ts < since {
                break;
            }
            let mut el = item.el.clone();
            el.append_child(xml::element("delay", ns::DELAY, &[("from", self.room.jid.as_str()), ("stamp", &crate::archive_query::stamp(item.ts))]));
            if let Some(max) = max_chars {
                chars += xml::to_string(&el).chars().count() as u64;
                if chars > max {
                    break;
                }
            }
            picked.push(el);
        }
        picked.reverse();
        picked
    }

    /// The subject as sent on entry: from the nick that set it (or the room), `<subject/>`
    /// when there is none.
    pub(super) fn subject_message(&self) -> (Jid, Element) {
        let from = if self.room.subject_from.is_empty() {
            Jid::from(self.jid().clone())
        } else {
            occupant::occupant_jid(self.jid(), &self.room.subject_from)
        };
        let mut el = xml::element("message", ns::CLIENT, &[("type", "groupchat"), ("from", from.as_str()), ("id", &crate::stanza::new_id())]);
        el.append_child(xml::text_element("subject", ns::CLIENT, &self.room.subject));
        // XEP-0421 §4: as when it was set (unknown for subjects stored before ids were).
        if !self.room.subject_from.is_empty() && !self.room.subject_occupant_id.is_empty() {
            el.append_child(xml::element("occupant-id", OCCUPANT_ID, &[("id", &self.room.subject_occupant_id)]));
        }
        (from, el)
    }

    /// A presence about `o` to every resource of every occupant (but `skip`), each with the
    /// real JID if it may see it, and 110 for the occupant's own resources; to its own
    /// resources only when its role's presence is not broadcast (§10.2).
    pub async fn broadcast_presence(&self, o: &Occupant, available: bool, codes: &[u16], extras: &ItemExtras, skip: Option<&FullJid>) {
        self.broadcast_presence_with_own(o, available, codes, &[], extras, skip).await;
    }

    /// [`Self::broadcast_presence`], with `own` codes for the occupant's own resources only.
    pub async fn broadcast_presence_with_own(&self, o: &Occupant, available: bool, codes: &[u16], own: &[u16], extras: &ItemExtras, skip: Option<&FullJid>) {
        let mut own_codes = vec![110];
        own_codes.extend_from_slice(codes);
        own_codes.extend_from_slice(own);
        let el = occupant::presence(self.jid(), o, available, occupant::user_x(o, true, &own_codes, extras));
        let from = occupant::occupant_jid(self.jid(), &o.nick);
        let sessions = self.room.occupants.get(&o.nick).map(|me| me.sessions.as_slice()).unwrap_or_default();
        for session in sessions.iter().filter(|s| Some(*s) != skip) {
            self.send_to(from.clone(), session, el.clone()).await;
        }
        if self.room.announced(o, available) {
            self.tell_others(o, available, codes, extras, skip).await;
        }
    }

    /// A presence about `o` to every resource of the other occupants (but `skip`), each with
    /// the real JID if it may see it.
    pub(super) async fn tell_others(&self, o: &Occupant, available: bool, codes: &[u16], extras: &ItemExtras, skip: Option<&FullJid>) {
        let from = occupant::occupant_jid(self.jid(), &o.nick);
        let mut variants: [Option<Element>; 2] = [None, None];
        for viewer in self.room.occupants.values().filter(|v| v.nick != o.nick) {
            let sees = self.room.sees_jids(viewer);
            // Serialised once per variant: every copy differs only in its `to`.
            let shared = || {
                let mut el = occupant::presence(self.jid(), o, available, occupant::user_x(o, sees, codes, extras));
                el.share_content();
                el
            };
            let el = variants[sees as usize].get_or_insert_with(shared).clone();
            for session in viewer.sessions.iter().filter(|s| Some(*s) != skip) {
                self.send_to(from.clone(), session, el.clone()).await;
            }
        }
    }

    /// An occupant's role changed from `was` (§§8-9): told with the new role; when `was` was
    /// broadcast and the new role is not (§10.2), the others, who knew of the occupant, see it
    /// leave (role none), so that the occupants they know of are those whose role is
    /// broadcast.
    pub(super) async fn tell_role_change(&self, o: &Occupant, was: Role, extras: &ItemExtras) {
        self.broadcast_presence(o, true, &[], extras, None).await;
        if self.room.config.presence_broadcast.includes(was.as_str()) && !self.room.announced(o, true) {
            let mut gone = o.clone();
            gone.role = Role::None;
            self.tell_others(&gone, false, &[], extras, None).await;
        }
    }

    /// `presencebroadcast` changed from `old` (§10.2): the others get the presence of the
    /// occupants whose role is now broadcast and was not, and an unavailable one (role none)
    /// for those whose role was and is no longer.
    pub(super) async fn rebroadcast(&self, old: crate::storage::PresenceBroadcast) {
        let new = self.room.config.presence_broadcast;
        for o in self.room.occupants.values() {
            let (before, now) = (old.includes(o.role.as_str()), new.includes(o.role.as_str()));
            if now && !before {
                self.tell_others(o, true, &[], &ItemExtras::default(), None).await;
            } else if before && !now {
                let mut gone = o.clone();
                gone.role = Role::None;
                self.tell_others(&gone, false, &[], &ItemExtras::default(), None).await;
            }
        }
    }

    /// §7.7: an occupant's presence changed.
    pub(super) async fn update_presence(&mut self, stanza: &Stanza, from: &FullJid) {
        let Some(nick) = self.room.by_session.get(from).cloned() else { return };
        let o = self.room.occupants.get_mut(&nick).expect("sessions are occupants");
        o.presence = occupant::kept_presence(&stanza.el);
        let o = o.clone();
        self.broadcast_presence(&o, true, &[], &ItemExtras::default(), None).await;
    }

    /// §7.6: a new nick for every resource of the occupant.
    pub(super) async fn change_nick(&mut self, stanza: &Stanza, from: &FullJid, old: &str, new: &str) {
        let bare = from.to_bare();
        if self.room.occupant_named(new).is_some_and(|taken| taken.nick != old) || self.room.reserved_by_other(new, &bare) {
            // §7.6: taken by another occupant or reserved by another affiliated user.
            return self.refuse(stanza, StanzaError::new(Condition::Conflict).with_text("this nick is taken in this room")).await;
        }
        // Unavailable from the old nick, naming the new one (303), then available under it.
        let o = self.room.occupants[old].clone();
        let extras = ItemExtras { nick: Some(new.to_string()), ..Default::default() };
        self.broadcast_presence(&o, false, &[303], &extras, None).await;
        let mut o = self.room.remove_occupant(old).expect("sessions are occupants");
        o.nick = new.to_string();
        o.presence = occupant::kept_presence(&stanza.el);
        self.room.add_occupant(o.clone());
        // §7.6: 210 to the occupant when the nick is not the one asked for.
        let own_codes: &[u16] = if requested_nick(stanza) == Some(new) { &[] } else { &[210] };
        self.broadcast_presence_with_own(&o, true, &[], own_codes, &ItemExtras::default(), None).await;
    }

    /// §7.14: one resource leaves; the occupant leaves with its last resource.
    pub(super) async fn leave(&mut self, from: &FullJid, presence: Vec<Element>) {
        let Some(nick) = self.room.by_session.get(from).cloned() else { return };
        let o = self.room.occupants.get_mut(&nick).expect("sessions are occupants");
        o.presence = presence;
        if o.sessions.len() > 1 {
            o.sessions.retain(|s| s != from);
            let mut gone = o.clone();
            gone.role = Role::None;
            self.room.unbind(from);
            let el = occupant::presence(self.jid(), &gone, false, occupant::user_x(&gone, true, &[110], &ItemExtras::default()));
            return self.send_to(occupant::occupant_jid(self.jid(), &nick), from, el).await;
        }
        // §7.14: gone, with role none.
        let mut gone = o.clone();
        gone.role = Role::None;
        self.broadcast_presence(&gone, false, &[], &ItemExtras::default(), None).await;
        self.room.remove_occupant(&nick);
    }

    /// Remove an occupant with unavailable presence to everyone (kicks, bans, errors), with
    /// `codes`.
    pub async fn remove(&mut self, nick: &str, codes: &[u16], extras: &ItemExtras) {
        let Some(mut o) = self.room.occupants.get(nick).cloned() else { return };
        o.role = Role::None;
        o.presence.clear();
        self.broadcast_presence(&o, false, codes, extras, None).await;
        self.room.remove_occupant(nick);
    }

    /// An occupant's client answered a stanza of the room's with an error: it is no longer
    /// there (kicked with 307 and 333, "because of a technical problem").
    pub(super) async fn remove_for_error(&mut self, from: &FullJid) {
        let Some(nick) = self.room.by_session.get(from).cloned() else { return };
        let o = self.room.occupants.get_mut(&nick).expect("sessions are occupants");
        if o.sessions.len() > 1 {
            o.sessions.retain(|s| s != from);
            self.room.unbind(from);
            return;
        }
        self.remove(&nick, &[307, 333], &ItemExtras::default()).await;
    }

    /// §7.2 (1.32): presence without `<x/>` from a resource not in the room.
    pub(super) async fn kick_desynced(&self, from: &FullJid, nick: &str) {
        let mut x = Element::bare("x", MUC_USER);
        x.append_child(xml::element("item", MUC_USER, &[("affiliation", "none"), ("role", "none")]));
        for code in ["110", "307", "333"] {
            x.append_child(xml::element("status", MUC_USER, &[("code", code)]));
        }
        let mut el = xml::element("presence", ns::CLIENT, &[("type", "unavailable")]);
        el.append_child(x);
        // XEP-0421 §4: every presence from the room; the id is the one this user would have.
        let id = occupant::occupant_id(&self.room.salt, &from.to_bare());
        el.append_child(xml::element("occupant-id", OCCUPANT_ID, &[("id", &id)]));
        let Ok(from_jid) = self.room.jid.with_resource_str(nick) else { return };
        self.send_to(Jid::from(from_jid), from, el).await;
    }
}

/// The nick a presence asked for, as the client wrote it: the resourcepart of its `to`
/// attribute before any normalisation (the parsed address has been through resourceprep,
/// which already maps widths).
fn requested_nick(stanza: &Stanza) -> Option<&str> {
    stanza.el.attr("to").and_then(|to| to.split_once('/')).map(|(_, nick)| nick)
}
