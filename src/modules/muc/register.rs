//! Registration with a room (XEP-0045 §7.10, with XEP-0077) and reserved nick discovery
//! (§7.11): a user registers a nick and becomes a member with that nick reserved (the
//! affiliation's nick, stored with it). Registration is granted at once, without an admin's
//! approval (§9.9, "Approving Registration Requests", is not done), so it is refused where
//! it would open the room: to non-members of a members-only room, and to outcasts. With
//! `[muc] lock_registered_nicks` the registered nick is the only one its user may use in the
//! room (`Room::locked_nick`, applied in `presence.rs`).

use jid::BareJid;

use super::form::{self, field};
use super::occupant::{self, ItemExtras};
use super::room::Live;
use crate::stanza::{Condition, IqType, Stanza, StanzaError};
use crate::storage::{Affiliation, AffiliationChange};
use crate::xml::{self, Element, ns};

pub const MUC_REGISTER: &str = "http://jabber.org/protocol/muc#register";
/// §7.11: the disco#info node that tells a user its reserved nick.
pub const RESERVED_NICK_NODE: &str = "x-roomuser-item";

type IqResult = Result<Option<Element>, StanzaError>;

/// §7.10 Example 70: the form, with the one field this room keeps (the nick).
fn registration_form(room: &BareJid) -> Element {
    let mut x = xml::element("x", ns::DATA_FORMS, &[("type", "form")]);
    x.append_child(xml::text_element("title", ns::DATA_FORMS, &format!("Registration with {room}")));
    x.append_child(xml::text_element("instructions", ns::DATA_FORMS, "Choose the nickname reserved for you in this room."));
    x.append_child(field("FORM_TYPE", "hidden", "", &[MUC_REGISTER]));
    let mut nick = field("muc#register_roomnick", "text-single", "Desired Nickname", &[]);
    nick.append_child(Element::bare("required", ns::DATA_FORMS));
    x.append_child(nick);
    x
}

impl Live {
    /// `jabber:iq:register` on the room's JID.
    pub(super) async fn register(&mut self, stanza: &Stanza, kind: IqType, query: &Element) -> IqResult {
        let bare = stanza.from.to_bare();
        self.may_register(&bare)?;
        let own = self.room.affiliations.get(bare.as_str()).cloned();
        if kind == IqType::Get {
            let mut q = Element::bare("query", ns::REGISTER);
            match own.filter(|a| !a.nick.is_empty()) {
                // Example 69: already registered.
                Some(a) => {
                    q.append_child(Element::bare("registered", ns::REGISTER));
                    q.append_child(xml::text_element("username", ns::REGISTER, &a.nick));
                }
                None => {
                    q.append_child(registration_form(self.jid()));
                }
            }
            return Ok(Some(q));
        }
        if query.get_child("remove", ns::REGISTER).is_some() {
            return self.unregister(&bare, query).await;
        }
        let Some(x) = query.get_child("x", ns::DATA_FORMS) else {
            return Err(StanzaError::bad_request("a registration is a submitted muc#register form"));
        };
        if x.attr("type") == Some("cancel") {
            return Ok(None);
        }
        if x.attr("type") != Some("submit") || form::form_type(x).as_deref() != Some(MUC_REGISTER) {
            return Err(StanzaError::bad_request("a registration is a submitted muc#register form"));
        }
        let nick = form::submitted(x, "muc#register_roomnick").map(|n| n.trim().to_string()).unwrap_or_default();
        if nick.is_empty() {
            return Err(StanzaError::bad_request("muc#register_roomnick is required"));
        }
        // Reserved as the Nickname profile enforces it (RFC 8266), as nicks are on entry.
        let nick = occupant::enforce(self.jid(), &nick)?;
        if self.nick_held_by_other(&bare, &nick) {
            return Err(StanzaError::new(Condition::Conflict).with_text("this nick is reserved or in use in this room"));
        }
        let old = own.as_ref().map(|a| a.affiliation);
        // Registering makes a member; an admin or owner keeps its affiliation.
        let affiliation = old.map_or(Affiliation::Member, |a| a.max(Affiliation::Member));
        let reason = own.map(|a| a.reason).unwrap_or_default();
        let change = AffiliationChange { jid: bare.to_string(), affiliation: Some(affiliation), nick, reason };
        self.save_affiliations(&[change]).await?;
        if old != Some(affiliation) {
            // Example 76: the new membership is told if the user is in the room.
            self.apply_affiliation(bare.as_str(), &ItemExtras::default()).await;
        }
        Ok(None)
    }

    /// Who may register: not while the room is being set up (it does not exist yet for
    /// others, §10.1.1), not outcasts, and in a members-only room only those already
    /// affiliated ("User Is Not Allowed to Register", Example 68).
    fn may_register(&self, bare: &BareJid) -> Result<(), StanzaError> {
        let affiliation = self.room.affiliation_of(bare, &self.service.config);
        if self.room.locked && affiliation != Some(Affiliation::Owner) {
            return Err(StanzaError::item_not_found());
        }
        if affiliation == Some(Affiliation::Outcast) {
            return Err(StanzaError::not_allowed().with_text("you are banned from this room"));
        }
        if self.room.config.members_only && affiliation.is_none() {
            return Err(StanzaError::not_allowed().with_text("members of this room are added by its admins"));
        }
        Ok(())
    }

    /// Whether `nick` is reserved by another JID (§7.11: "the service MUST deny entry to
    /// the second user"), or used in the room by another person.
    fn nick_held_by_other(&self, bare: &BareJid, nick: &str) -> bool {
        let in_use = self.room.occupant_named(nick).is_some_and(|o| &o.bare != bare);
        self.room.reserved_by_other(nick, bare) || in_use
    }

    /// XEP-0077 §3.2: cancelling the registration. A member stops being one (and leaves a
    /// members-only room, 321); an admin or owner only gives up the reserved nick.
    async fn unregister(&mut self, bare: &BareJid, query: &Element) -> IqResult {
        if query.children().count() != 1 {
            return Err(StanzaError::bad_request("<remove/> is the only child of a cancellation"));
        }
        let Some(own) = self.room.affiliations.get(bare.as_str()).cloned().filter(|a| a.affiliation != Affiliation::Outcast) else {
            return Err(StanzaError::new(Condition::RegistrationRequired).with_text("you are not registered with this room"));
        };
        let affiliation = (own.affiliation != Affiliation::Member).then_some(own.affiliation);
        let change = AffiliationChange { jid: bare.to_string(), affiliation, nick: String::new(), reason: own.reason };
        self.save_affiliations(&[change]).await?;
        if affiliation.is_none() {
            self.apply_affiliation(bare.as_str(), &ItemExtras::default()).await;
        }
        Ok(None)
    }

    /// §7.11: the user's reserved nick as the identity of the `x-roomuser-item` node, or an
    /// empty answer when it has none.
    pub(super) fn reserved_nick_info(&self, who: &BareJid) -> Element {
        let mut q = xml::element("query", ns::DISCO_INFO, &[("node", RESERVED_NICK_NODE)]);
        let nick = self.room.affiliations.get(who.as_str()).filter(|a| a.affiliation != Affiliation::Outcast && !a.nick.is_empty());
        if let Some(a) = nick {
            q.append_child(xml::element("identity", ns::DISCO_INFO, &[("category", "conference"), ("type", "text"), ("name", &a.nick)]));
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_asks_for_a_nick() {
        let x = registration_form(&BareJid::new("coven@chat.shakespeare.lit").unwrap());
        assert_eq!(x.attr("type"), Some("form"));
        assert_eq!(form::form_type(&x).as_deref(), Some(MUC_REGISTER));
        let nick = x.children().find(|f| f.attr("var") == Some("muc#register_roomnick")).expect("the nick field");
        assert!(nick.get_child("required", ns::DATA_FORMS).is_some());
    }
}
