//! Voice requests (XEP-0045 §7.13) and their approval by moderators (§8.6): a visitor of a
//! moderated room submits the `muc#request` form to the room; each moderator gets the
//! approval form; a moderator's submission with `muc#request_allow` true gives the visitor
//! the participant role, as a voice grant (§8.3) by that moderator.

use std::time::{Duration, Instant};

use jid::{FullJid, Jid};

use super::form::{self, field};
use super::occupant::{ItemExtras, Occupant, Role};
use super::room::Live;
use crate::stanza::{Condition, ErrorType, Stanza, StanzaError};
use crate::xml::{self, Element, ns};

pub const MUC_REQUEST: &str = "http://jabber.org/protocol/muc#request";

/// One voice request per occupant (real bare JID) in this time: moderators are not flooded
/// with approval forms.
pub const REQUEST_INTERVAL: Duration = Duration::from_secs(60);

/// The `muc#request` form of a message, if it carries one.
pub fn request_form(message: &Element) -> Option<&Element> {
    message
        .children()
        .find(|c| c.is("x", ns::DATA_FORMS) && form::form_type(c).as_deref() == Some(MUC_REQUEST))
}

/// The role a voice request asks for: only `participant` can be requested (§7.13: "a
/// muc#role field with a value of participant").
fn requested_role(x: &Element) -> Result<(), StanzaError> {
    match form::submitted(x, "muc#role").as_deref().map(str::trim) {
        Some("participant") => Ok(()),
        Some(other) => Err(StanzaError::bad_request(format!("voice is a request for the participant role, not {other:?}"))),
        None => Err(StanzaError::bad_request("a voice request has a muc#role field")),
    }
}

/// §8.6, Example 108: the approval form a moderator gets for `requester`.
fn approval_form(requester: &Occupant, session: &FullJid) -> Element {
    let mut x = xml::element("x", ns::DATA_FORMS, &[("type", "form")]);
    x.append_child(xml::text_element("title", ns::DATA_FORMS, "Voice request"));
    x.append_child(xml::text_element(
        "instructions",
        ns::DATA_FORMS,
        "To approve this request for voice, select the \"Grant voice to this person?\" checkbox and click OK. \
         To skip this request, click the cancel button.",
    ));
    x.append_child(field("FORM_TYPE", "hidden", "", &[MUC_REQUEST]));
    x.append_child(field("muc#role", "list-single", "Requested role", &["participant"]));
    x.append_child(field("muc#jid", "jid-single", "User ID", &[session.as_str()]));
    x.append_child(field("muc#roomnick", "text-single", "Room Nickname", &[&requester.nick]));
    x.append_child(field("muc#request_allow", "boolean", "Grant voice to this person?", &["false"]));
    x
}

impl Live {
    /// A `muc#request` form sent to the room: a visitor's request, or a moderator's answer
    /// (the approval form carries `muc#request_allow`). Errors go back to the sender.
    pub(super) async fn voice_form(&mut self, stanza: &Stanza, from: &FullJid, x: &Element) {
        let result = match x.attr("type") {
            Some("submit") if form::submitted(x, "muc#request_allow").is_some() => self.approve_voice(from, x).await,
            Some("submit") => self.request_voice(from, x).await,
            // A moderator skipping a request (XEP-0004 §3.1: a cancelled form).
            Some("cancel") => Ok(()),
            _ => Err(StanzaError::bad_request("a voice request is a data form of type 'submit'")),
        };
        if let Err(e) = result {
            self.refuse(stanza, e).await;
        }
    }

    /// §7.13: a visitor asks; every moderator's resources get the approval form.
    async fn request_voice(&mut self, from: &FullJid, x: &Element) -> Result<(), StanzaError> {
        let Some(requester) = self.room.occupant_of(from).cloned() else {
            return Err(StanzaError::new(Condition::NotAcceptable).with_text("only occupants may request voice"));
        };
        requested_role(x)?;
        if !self.room.config.moderated {
            return Err(StanzaError::not_allowed().with_text("voice is requested in moderated rooms only"));
        }
        if requester.role != Role::Visitor {
            return Err(StanzaError::new(Condition::NotAcceptable).with_text("you already have voice in this room"));
        }
        let now = Instant::now();
        self.room.voice_requests.retain(|_, at| now.duration_since(*at) < REQUEST_INTERVAL);
        if self.room.voice_requests.contains_key(&requester.bare) {
            return Err(StanzaError::new(Condition::PolicyViolation)
                .with_type(ErrorType::Wait)
                .with_text(format!("one voice request per {} seconds", REQUEST_INTERVAL.as_secs())));
        }
        self.room.voice_requests.insert(requester.bare.clone(), now);
        let form = approval_form(&requester, from);
        let room = Jid::from(self.jid().clone());
        let moderators: Vec<FullJid> =
            self.room.occupants.values().filter(|o| o.role == Role::Moderator).flat_map(|o| o.sessions.iter().cloned()).collect();
        for session in moderators {
            let mut el = xml::element("message", ns::CLIENT, &[("id", &crate::stanza::new_id())]);
            el.append_child(form.clone());
            self.send_to(room.clone(), &session, el).await;
        }
        Ok(())
    }

    /// §8.6: a moderator's answer; approved, the visitor becomes a participant (§8.3's
    /// presence, with the moderator as actor). A request already granted is no error.
    async fn approve_voice(&mut self, from: &FullJid, x: &Element) -> Result<(), StanzaError> {
        let moderator = self.room.occupant_of(from).filter(|o| o.role == Role::Moderator).map(|o| o.nick.clone());
        let Some(moderator) = moderator else {
            return Err(StanzaError::forbidden().with_text("only moderators approve voice requests"));
        };
        let allow = form::parse_bool("muc#request_allow", form::submitted(x, "muc#request_allow").unwrap_or_default().trim())
            .map_err(|_| StanzaError::bad_request("muc#request_allow is a boolean"))?;
        if form::submitted(x, "muc#role").is_some() {
            requested_role(x)?;
        }
        if !allow {
            return Ok(());
        }
        let nick = self.requester_nick(x).ok_or_else(|| StanzaError::item_not_found().with_text("the requester is not in the room"))?;
        if self.room.occupants[&nick].role != Role::Visitor {
            return Ok(());
        }
        let extras = ItemExtras { actor: Some(moderator), ..Default::default() };
        self.apply_role(&nick, Role::Participant, &extras).await;
        Ok(())
    }

    /// The occupant an approval form names: by its resource (`muc#jid`), which follows nick
    /// changes, else by `muc#roomnick`.
    fn requester_nick(&self, x: &Element) -> Option<String> {
        let by_jid = form::submitted(x, "muc#jid")
            .and_then(|j| FullJid::new(j.trim()).ok())
            .and_then(|j| self.room.occupant_of(&j))
            .map(|o| o.nick.clone());
        by_jid.or_else(|| form::submitted(x, "muc#roomnick").and_then(|n| self.room.occupant_named(&n)).map(|o| o.nick.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(form: &str) -> Element {
        xml::parse_element(&format!("<message xmlns='jabber:client'>{form}</message>")).unwrap()
    }

    #[test]
    fn only_muc_request_forms_are_voice_requests() {
        let request = message(&format!(
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>{MUC_REQUEST}</value></field>\
             <field var='muc#role'><value>participant</value></field></x>"
        ));
        let form = request_form(&request).expect("a voice request");
        assert!(requested_role(form).is_ok());
        let other = message("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:other</value></field></x>");
        assert!(request_form(&other).is_none());
        assert!(request_form(&message("<body>hi</body>")).is_none());
    }

    #[test]
    fn only_the_participant_role_is_requested() {
        for (fields, ok) in [("<field var='muc#role'><value>moderator</value></field>", false), ("", false), ("<field var='muc#role'><value> participant </value></field>", true)] {
            let x = xml::parse_element(&format!("<x xmlns='jabber:x:data' type='submit'>{fields}</x>")).unwrap();
            assert_eq!(requested_role(&x).is_ok(), ok, "{fields}");
        }
    }
}
