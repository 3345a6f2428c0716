//! Messages in a room: to every occupant (§7.4, archived first), private ones (§7.5), the
//! subject (§8.1), invitations and declines (§7.8.2).

use jid::{BareJid, FullJid, Jid};
use tracing::Instrument;

use super::occupant::{self, Role};
use super::room::{HistoryItem, Live};
use super::{MUC_USER, OCCUPANT_ID, SID};
use crate::modules::Durable;
use crate::router;
use crate::stanza::{Condition, Kind, MessageType, Stanza, StanzaError};
use crate::storage::{Affiliation, NewArchived};
use crate::xml::{self, Element, ns};

impl Live {

    pub(super) async fn on_message(&mut self, stanza: Stanza, durable: Option<Durable>) {
        let Ok(from) = stanza.from.clone().try_into_full() else { return };
        let to_nick = stanza.to.as_ref().and_then(|t| t.resource()).map(|r| r.as_str().to_string());
        match stanza.message_type() {
            MessageType::Error => self.remove_for_error(&from).await,
            MessageType::Headline => {}
            MessageType::Groupchat if to_nick.is_some() => {
                self.refuse(&stanza, StanzaError::bad_request("a private message is of type chat, not groupchat")).await
            }
            MessageType::Groupchat => self.groupchat(stanza, &from, durable).await,
            MessageType::Chat | MessageType::Normal => match to_nick {
                Some(nick) => self.private_message(stanza, &from, &nick).await,
                None => self.addressed_to_room(stanza, &from).await,
            },
        }
    }

    /// §7.4: a message to every occupant, archived first.
    pub(super) async fn groupchat(&mut self, stanza: Stanza, from: &FullJid, durable: Option<Durable>) {
        let Some(sender) = self.room.occupant_of(from).cloned() else {
            return self.refuse(&stanza, StanzaError::new(Condition::NotAcceptable).with_text("only occupants may send messages to the room")).await;
        };
        if sender.role == Role::Visitor {
            return self.refuse(&stanza, StanzaError::forbidden().with_text("you have no voice in this room")).await;
        }
        let retracting = match self.retraction(&stanza, &sender).await {
            Ok(retracting) => retracting,
            Err(e) => return self.refuse(&stanza, e).await,
        };
        let has_body = stanza.el.get_child("body", ns::CLIENT).is_some();
        if let Some(subject) = stanza.el.get_child("subject", ns::CLIENT).filter(|_| !has_body) {
            // §8.1: a subject change.
            let allowed = sender.role == Role::Moderator || (self.room.config.change_subject && sender.role == Role::Participant);
            if !allowed {
                return self.refuse(&stanza, StanzaError::forbidden().with_text("only moderators may change the subject")).await;
            }
            self.room.subject = subject.text();
            self.room.subject_from = sender.nick.clone();
            self.room.subject_occupant_id = sender.occupant_id.clone();
            if self.room.persistent
                && let Err(e) = self.service.store.save_subject(self.jid(), &self.room.subject, &sender.nick, &sender.occupant_id).await
            {
                tracing::error!(error = %e, "cannot store a room's subject");
                return self.refuse(&stanza, StanzaError::internal()).await;
            }
        }
        let mut el = reflected(stanza.el, self.jid());
        let from_jid = occupant::occupant_jid(self.jid(), &sender.nick);
        xml::set_attr(&mut el, "from", from_jid.as_str());
        el.append_child(xml::element("occupant-id", OCCUPANT_ID, &[("id", &sender.occupant_id)]));
        if (has_body || retracting) && self.room.config.archive {
            let slot = match self.service.archive.allocate().await {
                Ok(slot) => slot,
                Err(e) => {
                    tracing::error!(error = %e, "cannot archive a room message");
                    let probe = Stanza { kind: Kind::Message, from: Jid::from(from.clone()), to: Some(Jid::from(self.jid().clone())), el: el.clone() };
                    return self.refuse(&probe, StanzaError::internal().with_text("the room's archive is unavailable")).await;
                }
            };
            el.append_child(xml::element("stanza-id", SID, &[("by", self.jid().as_str()), ("id", &slot.id)]));
            el.share_content();
            let row = NewArchived { owner: self.jid().clone(), ts: slot.ts, with: from_jid.clone(), stanza: xml::Serialised::of(&el) };
            self.commit(row, durable, from, el.attr("id").map(str::to_string));
            self.remember(HistoryItem { ts: slot.ts, el: el.clone() });
        }
        self.broadcast(from_jid, el).await;
    }

    /// Queue an archive row; the sender's acknowledgement waits for its commit, the
    /// broadcast does not. If it fails, the sender is told (its message went out, unkept).
    pub(super) fn commit(&self, row: NewArchived, durable: Option<Durable>, sender: &FullJid, id: Option<String>) {
        let archive = self.service.archive.clone();
        let (ctx, room, sender) = (self.ctx.clone(), self.jid().clone(), sender.clone());
        self.ctx.core.spawn(
            async move {
                let outcome = archive.enqueue(vec![row]).await.outcome().await;
                if outcome.is_err() {
                    let mut probe = xml::element("message", ns::CLIENT, &[("type", "groupchat")]);
                    if let Some(id) = id {
                        xml::set_attr(&mut probe, "id", id);
                    }
                    let probe = Stanza { kind: Kind::Message, from: Jid::from(sender), to: Some(Jid::from(room)), el: probe };
                    router::bounce(&ctx, &probe, StanzaError::internal().with_text("the message could not be stored in the room's archive")).await;
                }
                drop(durable);
            }
            .in_current_span(),
        );
    }

    /// §7.5: a private message to one occupant.
    pub(super) async fn private_message(&mut self, stanza: Stanza, from: &FullJid, nick: &str) {
        let Some(sender) = self.room.occupant_of(from).cloned() else {
            return self.refuse(&stanza, StanzaError::new(Condition::NotAcceptable).with_text("only occupants may send private messages")).await;
        };
        use crate::storage::AllowPm;
        let allowed = match self.room.config.allow_pm {
            AllowPm::Anyone => true,
            AllowPm::Participants => sender.role >= Role::Participant,
            AllowPm::Moderators => sender.role == Role::Moderator,
            AllowPm::NoOne => false,
        };
        if !allowed {
            return self.refuse(&stanza, StanzaError::new(Condition::NotAllowed).with_text("private messages are not allowed in this room")).await;
        }
        let Some(target) = self.room.occupant_named(nick).cloned() else {
            return self.refuse(&stanza, StanzaError::item_not_found().with_text("no such occupant")).await;
        };
        let mut el = stanza.el;
        xml::remove_attr(&mut el, "to");
        if el.get_child("x", MUC_USER).is_none() {
            el.append_child(Element::bare("x", MUC_USER));
        }
        // XEP-0421 §4: every message from the room has the sender's occupant id, and only
        // the room's.
        el.retain_children(|c| !c.is("occupant-id", OCCUPANT_ID));
        el.append_child(xml::element("occupant-id", OCCUPANT_ID, &[("id", &sender.occupant_id)]));
        let from_jid = occupant::occupant_jid(self.jid(), &sender.nick);
        xml::set_attr(&mut el, "from", from_jid.as_str());
        for session in &target.sessions {
            self.send_to(from_jid.clone(), session, el.clone()).await;
        }
    }

    /// A message to the room's bare JID that is not groupchat: voice requests and their
    /// approvals (§7.13, §8.6, in `voice.rs`), invitations (§7.8.2) and their declines.
    pub(super) async fn addressed_to_room(&mut self, stanza: Stanza, from: &FullJid) {
        if let Some(form) = super::voice::request_form(&stanza.el).cloned() {
            return self.voice_form(&stanza, from, &form).await;
        }
        let x = stanza.el.get_child("x", MUC_USER);
        if let Some(decline) = x.and_then(|x| x.get_child("decline", MUC_USER)) {
            return self.decline(&stanza, from, decline.clone()).await;
        }
        let invites: Vec<Element> = x.map(|x| x.children().filter(|c| c.is("invite", MUC_USER)).cloned().collect()).unwrap_or_default();
        if invites.is_empty() {
            return self.refuse(&stanza, StanzaError::bad_request("messages to a room are of type groupchat")).await;
        }
        let Some(sender) = self.room.occupant_of(from).cloned() else {
            return self.refuse(&stanza, StanzaError::new(Condition::NotAcceptable).with_text("only occupants may invite")).await;
        };
        let affiliation = sender.affiliation;
        let may_add = matches!(affiliation, Some(Affiliation::Owner | Affiliation::Admin));
        if !self.room.config.allow_invites && sender.role != Role::Moderator && !may_add {
            return self.refuse(&stanza, StanzaError::forbidden().with_text("only moderators may invite to this room")).await;
        }
        for invite in invites {
            let Some(Ok(invitee)) = invite.attr("to").map(Jid::new) else {
                return self.refuse(&stanza, StanzaError::new(Condition::JidMalformed).with_text("an invitation needs a valid 'to'")).await;
            };
            // §7.8.2: an invitee that does not exist SHOULD be an error (known for accounts
            // of this server only).
            if self.ctx.core.is_local_account(&invitee) {
                match self.ctx.core.db.accounts().exists(&invitee.to_bare()).await {
                    Ok(true) => {}
                    Ok(false) => return self.refuse(&stanza, StanzaError::item_not_found().with_text("no such user")).await,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot look up an invitee");
                        return self.refuse(&stanza, StanzaError::internal()).await;
                    }
                }
            }
            if self.room.config.members_only && may_add && self.room.affiliation_of(&invitee.to_bare(), &self.service.config).is_none() {
                // §7.8.2: invited by an admin to a members-only room: a member now.
                let change = crate::storage::AffiliationChange { jid: invitee.to_bare().to_string(), affiliation: Some(Affiliation::Member), nick: String::new(), reason: String::new() };
                if self.save_affiliations(&[change]).await.is_err() {
                    return self.refuse(&stanza, StanzaError::internal()).await;
                }
            }
            let mut out_invite = xml::element("invite", MUC_USER, &[("from", sender.bare.as_str())]);
            let reason = invite.get_child("reason", MUC_USER);
            // §7.8.2 (Example 58): an invitation to continue a one-to-one chat in the room.
            let continued = invite.get_child("continue", MUC_USER);
            for child in reason.into_iter().chain(continued) {
                out_invite.append_child(child.clone());
            }
            let mut out_x = Element::bare("x", MUC_USER);
            out_x.append_child(out_invite);
            if !self.room.config.password.is_empty() {
                out_x.append_child(xml::text_element("password", MUC_USER, &self.room.config.password));
            }
            let mut el = xml::element("message", ns::CLIENT, &[("id", stanza.id().unwrap_or(&crate::stanza::new_id()))]);
            el.append_child(out_x);
            // XEP-0249's element says the same for clients that know only that one.
            let mut conference = xml::element("x", "jabber:x:conference", &[("jid", self.jid().as_str())]);
            if !self.room.config.password.is_empty() {
                xml::set_attr(&mut conference, "password", self.room.config.password.as_str());
            }
            if let Some(reason) = reason {
                xml::set_attr(&mut conference, "reason", reason.text());
            }
            if let Some(continued) = continued {
                xml::set_attr(&mut conference, "continue", "true");
                if let Some(thread) = continued.attr("thread") {
                    xml::set_attr(&mut conference, "thread", thread);
                }
            }
            el.append_child(conference);
            self.ctx.send(Stanza::new(el, Jid::from(self.jid().clone()), invitee)).await;
        }
    }

    /// §7.8.2: a declined invitation goes back to the inviter.
    pub(super) async fn decline(&self, stanza: &Stanza, from: &FullJid, decline: Element) {
        let Some(Ok(inviter)) = decline.attr("to").map(Jid::new) else {
            return self.refuse(stanza, StanzaError::new(Condition::JidMalformed).with_text("a decline needs a valid 'to'")).await;
        };
        let mut out = xml::element("decline", MUC_USER, &[("from", from.to_bare().as_str())]);
        if let Some(reason) = decline.get_child("reason", MUC_USER) {
            out.append_child(reason.clone());
        }
        let mut x = Element::bare("x", MUC_USER);
        x.append_child(out);
        // The decline's id, as in §7.8.2's example.
        let mut el = xml::element("message", ns::CLIENT, &[("id", stanza.id().unwrap_or(&crate::stanza::new_id()))]);
        el.append_child(x);
        self.ctx.send(Stanza::new(el, Jid::from(self.jid().clone()), inviter)).await;
    }
}

/// A groupchat message as the room reflects it: the client's own `to`, any stanza-id
/// claiming to be the room's, any occupant-id (XEP-0359 §3, XEP-0421 §4) and any muc#user
/// `<x/>` (which only the room writes: it could claim a real JID or a role) removed.
fn reflected(mut el: Element, room: &BareJid) -> Element {
    xml::remove_attr(&mut el, "to");
    el.retain_children(|c| {
        let forged_id = c.is("stanza-id", SID) && c.attr("by") == Some(room.as_str());
        !(forged_id || c.is("occupant-id", OCCUPANT_ID) || c.is("x", MUC_USER))
    });
    el
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn reflection_strips_forged_ids() {
        let room = BareJid::new("coven@chat.shakespeare.lit").unwrap();
        let el = xml::parse_element(
            "<message xmlns='jabber:client' to='coven@chat.shakespeare.lit' type='groupchat' id='m1'><body>hi</body>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='coven@chat.shakespeare.lit' id='forged'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='other@example' id='kept'/>\
             <occupant-id xmlns='urn:xmpp:occupant-id:0' id='forged'/></message>",
        )
        .unwrap();
        let out = xml::to_string(&reflected(el, &room));
        assert!(!out.contains("forged"), "{out}");
        assert!(out.contains("kept") && out.contains("id=\"m1\"") || out.contains("id='m1'"), "{out}");
        assert!(!out.contains("to="), "{out}");
    }
}
