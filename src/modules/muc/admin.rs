//! Moderation and administration: roles (§8: kick, voice, moderator), affiliations (§9,
//! §10: member, admin, owner, outcast) with who may change whom, the room's configuration
//! (§10.1-10.2) and its destruction (§10.9).

use jid::{BareJid, Jid};

use super::form;
use super::occupant::{self, ItemExtras, Occupant, Role};
use super::room::{Affiliated, Live};
use super::{MUC_ADMIN, MUC_OWNER, MUC_USER};
use crate::stanza::{Condition, IqType, Stanza, StanzaError};
use crate::storage::{Affiliation, AffiliationChange};
use crate::xml::{self, Element, ns};

type IqResult = Result<Option<Element>, StanzaError>;

/// One `<item/>` of an admin set.
enum Change {
    Role { nick: String, role: Role, reason: Option<String> },
    /// `nick`: §9.3 (Example 120), a nick reserved with the affiliation (§7.10).
    Affiliation { jid: String, affiliation: Option<Affiliation>, nick: Option<String>, reason: Option<String> },
}

/// Affiliations in order of power; `None` (no affiliation) between outcast and member.
fn rank(a: Option<Affiliation>) -> i8 {
    match a {
        Some(Affiliation::Outcast) => -1,
        None => 0,
        Some(Affiliation::Member) => 1,
        Some(Affiliation::Admin) => 2,
        Some(Affiliation::Owner) => 3,
    }
}

fn parse_affiliation(s: &str) -> Result<Option<Affiliation>, StanzaError> {
    if s == "none" {
        return Ok(None);
    }
    Affiliation::parse(s).map(Some).ok_or_else(|| StanzaError::bad_request(format!("{s:?} is not an affiliation")))
}

impl Live {
    /// The actor of an admin or owner request: its affiliation, and its occupant if in.
    fn actor(&self, from: &Jid) -> (Option<Affiliation>, Option<Occupant>) {
        let affiliation = self.room.affiliation_of(&from.to_bare(), &self.service.config);
        let occupant = from.clone().try_into_full().ok().and_then(|f| self.room.occupant_of(&f).cloned());
        (affiliation, occupant)
    }

    /// `muc#admin` (§§8-10): list or change roles and affiliations.
    pub async fn admin(&mut self, stanza: &Stanza, kind: IqType, query: &Element) -> IqResult {
        let items: Vec<&Element> = query.children().filter(|c| c.is("item", MUC_ADMIN)).collect();
        if items.is_empty() {
            return Err(StanzaError::bad_request("an admin request has at least one <item/>"));
        }
        let (affiliation, occupant) = self.actor(&stanza.from);
        if kind == IqType::Get {
            return self.admin_list(items[0], affiliation, occupant.as_ref());
        }
        let mut changes = Vec::new();
        for item in items {
            let reason = item.get_child("reason", MUC_ADMIN).map(|r| r.text());
            match (item.attr("nick"), item.attr("role"), item.attr("jid"), item.attr("affiliation")) {
                (_, Some(_), _, Some(_)) => return Err(StanzaError::bad_request("an item changes a role or an affiliation, not both")),
                (_, _, Some(jid), Some(a)) => {
                    let jid = Jid::new(jid).map_err(|_| StanzaError::new(Condition::JidMalformed))?;
                    let nick = item.attr("nick").map(|n| occupant::enforce(self.jid(), n)).transpose()?;
                    changes.push(Change::Affiliation { jid: jid.to_bare().to_string(), affiliation: parse_affiliation(a)?, nick, reason });
                }
                (Some(nick), Some(role), _, None) => {
                    let role = Role::parse(role).ok_or_else(|| StanzaError::bad_request(format!("{role:?} is not a role")))?;
                    // The occupant's own nick, for any nick the same under the Nickname profile.
                    let nick = self.room.occupant_named(nick).map_or(nick, |o| o.nick.as_str()).to_string();
                    changes.push(Change::Role { nick, role, reason });
                }
                _ => return Err(StanzaError::bad_request("an item changes a role (nick, role) or an affiliation (jid, affiliation)")),
            }
        }
        // Every change is checked before any is made: a list set is all or nothing.
        for change in &changes {
            self.may_change(change, affiliation, occupant.as_ref())?;
        }
        let affiliation_changes: Vec<AffiliationChange> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Affiliation { jid, affiliation, nick, reason } => {
                    // §17.4 rule 6: outcasts have no reserved nick; otherwise the nick given,
                    // else the one reserved before.
                    let nick = match (affiliation, nick) {
                        (Some(Affiliation::Outcast), _) => String::new(),
                        (_, Some(nick)) => nick.clone(),
                        _ => self.room.affiliations.get(jid).map(|a| a.nick.clone()).unwrap_or_default(),
                    };
                    Some(AffiliationChange { jid: jid.clone(), affiliation: *affiliation, nick, reason: reason.clone().unwrap_or_default() })
                }
                Change::Role { .. } => None,
            })
            .collect();
        if !affiliation_changes.is_empty() {
            let owners_after = self.owners_after(&affiliation_changes);
            if owners_after == 0 {
                return Err(StanzaError::new(Condition::Conflict).with_text("a room keeps at least one owner"));
            }
            self.save_affiliations(&affiliation_changes).await?;
        }
        let actor_nick = occupant.map(|o| o.nick);
        for change in changes {
            match change {
                Change::Role { nick, role, reason } => {
                    let extras = ItemExtras { reason, actor: actor_nick.clone(), nick: None };
                    self.apply_role(&nick, role, &extras).await;
                }
                Change::Affiliation { jid, reason, .. } => {
                    let extras = ItemExtras { reason, actor: actor_nick.clone(), nick: None };
                    self.apply_affiliation(&jid, &extras).await;
                }
            }
        }
        Ok(None)
    }

    /// §8.5, §9.5, §10.5: a list by role (for moderators) or by affiliation (for admins
    /// and owners).
    fn admin_list(&self, item: &Element, affiliation: Option<Affiliation>, occupant: Option<&Occupant>) -> IqResult {
        let mut query = Element::bare("query", MUC_ADMIN);
        if let Some(role) = item.attr("role") {
            let role = Role::parse(role).ok_or_else(|| StanzaError::bad_request(format!("{role:?} is not a role")))?;
            let moderator = occupant.is_some_and(|o| o.role == Role::Moderator) || rank(affiliation) >= 2;
            if !moderator {
                return Err(StanzaError::forbidden().with_text("only moderators may list roles"));
            }
            let mut found: Vec<&Occupant> = self.room.occupants.values().filter(|o| o.role == role).collect();
            found.sort_by(|a, b| a.nick.cmp(&b.nick));
            for o in found {
                let mut el = xml::element("item", MUC_ADMIN, &[("nick", &o.nick), ("role", o.role.as_str()), ("affiliation", occupant::affiliation_str(o.affiliation))]);
                if self.room.config.whois == crate::storage::Whois::Anyone || occupant.is_some_and(|v| v.role == Role::Moderator) {
                    xml::set_attr(&mut el, "jid", o.shown_jid().as_str());
                }
                query.append_child(el);
            }
            return Ok(Some(query));
        }
        let Some(wanted) = item.attr("affiliation") else {
            return Err(StanzaError::bad_request("a list is asked for by role or by affiliation"));
        };
        let wanted = parse_affiliation(wanted)?.ok_or_else(|| StanzaError::bad_request("there is no list of 'none'"))?;
        if rank(affiliation) < 2 {
            return Err(StanzaError::forbidden().with_text("only admins and owners may list affiliations"));
        }
        for a in self.room.stored_affiliations().into_iter().filter(|a| a.affiliation == wanted) {
            let mut el = xml::element("item", MUC_ADMIN, &[("affiliation", a.affiliation.as_str()), ("jid", &a.jid)]);
            if !a.nick.is_empty() {
                xml::set_attr(&mut el, "nick", a.nick.as_str());
            }
            if !a.reason.is_empty() {
                el.append_child(xml::text_element("reason", MUC_ADMIN, &a.reason));
            }
            query.append_child(el);
        }
        Ok(Some(query))
    }

    /// Who may change whom (§8.2-8.6 for roles, §9 and §10 for affiliations).
    fn may_change(&self, change: &Change, actor: Option<Affiliation>, occupant: Option<&Occupant>) -> Result<(), StanzaError> {
        match change {
            Change::Role { nick, role, .. } => {
                let moderator = occupant.is_some_and(|o| o.role == Role::Moderator) || rank(actor) >= 2;
                if !moderator {
                    return Err(StanzaError::forbidden().with_text("only moderators may change roles"));
                }
                let Some(target) = self.room.occupants.get(nick) else {
                    return Err(StanzaError::item_not_found().with_text("no such occupant"));
                };
                // §8.2 (Example 93), §8.4 (Example 102): nobody lowers an admin's or
                // owner's role; §8.5, §8.6: moderator status is given and taken by admins
                // and owners.
                if rank(target.affiliation) >= 2 && *role != Role::Moderator {
                    return Err(StanzaError::not_allowed().with_text("the role of an admin or owner cannot be lowered"));
                }
                if (*role == Role::Moderator || target.role == Role::Moderator) && rank(actor) < 2 {
                    return Err(StanzaError::forbidden().with_text("only admins and owners may grant or revoke moderator status"));
                }
                Ok(())
            }
            Change::Affiliation { jid, affiliation, .. } => {
                if rank(actor) < 2 {
                    return Err(StanzaError::forbidden().with_text("only admins and owners may change affiliations"));
                }
                let current = self.room.affiliations.get(jid).map(|a| a.affiliation);
                if rank(actor) == 2 {
                    // §9: an admin manages members and outcasts below admin.
                    if rank(*affiliation) >= 2 {
                        return Err(StanzaError::forbidden().with_text("only owners may grant admin or owner status"));
                    }
                    if rank(current) >= 2 {
                        return Err(StanzaError::not_allowed().with_text("an admin cannot change an admin's or owner's affiliation"));
                    }
                }
                if *affiliation == Some(Affiliation::Outcast) && BareJid::new(jid).is_ok_and(|b| self.service.config.is_admin(&b)) {
                    return Err(StanzaError::not_allowed().with_text("a server admin cannot be banned"));
                }
                Ok(())
            }
        }
    }

    fn owners_after(&self, changes: &[AffiliationChange]) -> usize {
        let mut owners: std::collections::HashSet<&str> =
            self.room.affiliations.iter().filter(|(_, a)| a.affiliation == Affiliation::Owner).map(|(j, _)| j.as_str()).collect();
        for c in changes {
            if c.affiliation == Some(Affiliation::Owner) {
                owners.insert(c.jid.as_str());
            } else {
                owners.remove(c.jid.as_str());
            }
        }
        owners.len()
    }

    /// Store affiliation changes (for a persistent room) and then make them.
    pub async fn save_affiliations(&mut self, changes: &[AffiliationChange]) -> Result<(), StanzaError> {
        if self.room.persistent
            && let Err(e) = self.service.store.set_affiliations(self.jid(), changes).await
        {
            tracing::error!(error = %e, "cannot store a room's affiliations");
            return Err(StanzaError::internal());
        }
        for c in changes {
            match c.affiliation {
                Some(affiliation) => {
                    self.room.affiliations.insert(c.jid.clone(), Affiliated { affiliation, nick: c.nick.clone(), reason: c.reason.clone() });
                }
                None => {
                    self.room.affiliations.remove(&c.jid);
                }
            }
        }
        Ok(())
    }

    /// §8.2 (kick: role none, 307), §8.3-8.6 (voice, moderator): the occupant's new role,
    /// told to everyone.
    pub(super) async fn apply_role(&mut self, nick: &str, role: Role, extras: &ItemExtras) {
        if role == Role::None {
            return self.remove(nick, &[307], extras).await;
        }
        let Some(o) = self.room.occupants.get_mut(nick) else { return };
        let was = std::mem::replace(&mut o.role, role);
        let o = o.clone();
        self.tell_role_change(&o, was, extras).await;
    }

    /// An affiliation changed: the occupant that holds it (if in) is banned (301), removed
    /// from a members-only room (321), or gets its new affiliation and role.
    pub(super) async fn apply_affiliation(&mut self, jid: &str, extras: &ItemExtras) {
        let affected: Vec<String> = self
            .room
            .occupants
            .values()
            .filter(|o| o.bare.as_str() == jid || (!jid.contains('@') && o.bare.domain().as_str() == jid))
            .map(|o| o.nick.clone())
            .collect();
        for nick in affected {
            let bare = self.room.occupants[&nick].bare.clone();
            let affiliation = self.room.affiliation_of(&bare, &self.service.config);
            if affiliation == Some(Affiliation::Outcast) {
                if let Some(o) = self.room.occupants.get_mut(&nick) {
                    o.affiliation = affiliation;
                }
                self.remove(&nick, &[301], extras).await;
                continue;
            }
            if self.room.config.members_only && affiliation.is_none() {
                if let Some(o) = self.room.occupants.get_mut(&nick) {
                    o.affiliation = None;
                }
                self.remove(&nick, &[321], extras).await;
                continue;
            }
            let moderated = self.room.config.moderated;
            let Some(o) = self.room.occupants.get_mut(&nick) else { continue };
            o.affiliation = affiliation;
            let entry_role = Role::on_entry(affiliation, moderated);
            let was = o.role;
            // A promotion brings its role; a demotion takes away what came with the old
            // affiliation, not a voice given by a moderator.
            if entry_role > o.role || (o.role == Role::Moderator && entry_role < Role::Moderator) {
                o.role = entry_role;
            }
            let o = o.clone();
            self.tell_role_change(&o, was, extras).await;
        }
    }

    /// `muc#owner` (§10): the configuration form, its submission, destruction.
    pub async fn owner(&mut self, stanza: &Stanza, kind: IqType, query: &Element) -> IqResult {
        let (affiliation, _) = self.actor(&stanza.from);
        if affiliation != Some(Affiliation::Owner) {
            return Err(StanzaError::forbidden().with_text("only owners may configure or destroy the room"));
        }
        if kind == IqType::Get {
            let mut q = Element::bare("query", MUC_OWNER);
            q.append_child(form::config_form(&self.room, self.service.config.muc.max_occupants));
            return Ok(Some(q));
        }
        if let Some(destroy) = query.get_child("destroy", MUC_OWNER) {
            self.destroy(destroy).await?;
            return Ok(None);
        }
        let Some(x) = query.get_child("x", ns::DATA_FORMS) else {
            return Err(StanzaError::bad_request("expected a data form or <destroy/>"));
        };
        if x.attr("type") == Some("cancel") {
            if self.room.locked {
                // §10.1.3: cancelling the first configuration destroys the new room.
                self.destroy(&Element::bare("destroy", MUC_OWNER)).await?;
            }
            return Ok(None);
        }
        let (config, persistent) = form::parse_config(x, &self.room, self.service.config.muc.max_occupants)?;
        self.configure(config, persistent).await?;
        Ok(None)
    }

    /// Apply a configuration (§10.2): stored first, then told to the occupants (104 and
    /// the privacy codes, §10.2.1); non-members leave a room made members-only (322).
    pub(super) async fn configure(&mut self, config: crate::storage::RoomConfig, persistent: bool) -> Result<(), StanzaError> {
        if let Err(e) = self.service.store.save_config(self.jid(), &config, persistent).await {
            tracing::error!(error = %e, "cannot store a room's configuration");
            return Err(StanzaError::internal());
        }
        let old = std::mem::replace(&mut self.room.config, config);
        self.room.persistent = persistent;
        let was_locked = std::mem::replace(&mut self.room.locked, false);
        while self.history.len() > self.room.config.history_length as usize {
            self.history.pop_front();
        }
        let new = &self.room.config;
        let mut codes = Vec::new();
        if !was_locked {
            codes.push(104);
        }
        if new.archive != old.archive {
            codes.push(if new.archive { 170 } else { 171 });
        }
        if new.whois != old.whois {
            codes.push(if new.whois == crate::storage::Whois::Anyone { 172 } else { 173 });
        }
        if !codes.is_empty() {
            let mut x = Element::bare("x", MUC_USER);
            for code in codes {
                x.append_child(xml::element("status", MUC_USER, &[("code", &code.to_string())]));
            }
            let mut el = xml::element("message", ns::CLIENT, &[("type", "groupchat"), ("id", &crate::stanza::new_id())]);
            el.append_child(x);
            self.broadcast(Jid::from(self.jid().clone()), el).await;
        }
        if self.room.config.presence_broadcast != old.presence_broadcast {
            self.rebroadcast(old.presence_broadcast).await;
        }
        if self.room.config.members_only && !old.members_only {
            let outsiders: Vec<String> = self
                .room
                .occupants
                .values()
                .filter(|o| self.room.affiliation_of(&o.bare, &self.service.config).is_none())
                .map(|o| o.nick.clone())
                .collect();
            for nick in outsiders {
                self.remove(&nick, &[322], &ItemExtras::default()).await;
            }
        }
        Ok(())
    }

    /// §10.9: every occupant leaves with the `<destroy/>` (alternate venue, reason); the
    /// room is deleted with its affiliations and archive.
    pub async fn destroy(&mut self, destroy: &Element) -> Result<(), StanzaError> {
        if let Err(e) = self.service.store.delete(self.jid()).await {
            tracing::error!(error = %e, "cannot delete a room");
            return Err(StanzaError::internal());
        }
        let mut told = Element::bare("destroy", MUC_USER);
        if let Some(jid) = destroy.attr("jid") {
            xml::set_attr(&mut told, "jid", jid);
        }
        if let Some(reason) = destroy.get_child("reason", MUC_OWNER) {
            told.append_child(xml::text_element("reason", MUC_USER, &reason.text()));
        }
        let occupants: Vec<Occupant> = self.room.occupants.values().cloned().collect();
        for mut o in occupants {
            o.role = Role::None;
            o.affiliation = None;
            o.presence.clear();
            let mut x = occupant::user_x(&o, false, &[], &ItemExtras::default());
            x.append_child(told.clone());
            let el = occupant::presence(self.jid(), &o, false, x);
            let from = occupant::occupant_jid(self.jid(), &o.nick);
            for session in &o.sessions {
                self.send_to(from.clone(), session, el.clone()).await;
            }
            self.room.remove_occupant(&o.nick);
        }
        self.room.destroyed = true;
        Ok(())
    }
}
