//! Occupants (XEP-0045 §5): their roles, and the presence a room sends about them.

use jid::{BareJid, FullJid, Jid};

use super::{MUC, MUC_USER, OCCUPANT_ID};
use crate::stanza::{Condition, StanzaError};
use crate::storage::Affiliation;
use crate::xml::{self, Element, ns};

/// §5.1: a role lasts as long as the occupant is in the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    None,
    Visitor,
    Participant,
    Moderator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::Visitor => "visitor",
            Role::Participant => "participant",
            Role::Moderator => "moderator",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "none" => Role::None,
            "visitor" => Role::Visitor,
            "participant" => Role::Participant,
            "moderator" => Role::Moderator,
            _ => return None,
        })
    }

    /// §5.1.2: the role an occupant gets on entering, by affiliation.
    pub fn on_entry(affiliation: Option<Affiliation>, moderated: bool) -> Role {
        match affiliation {
            Some(Affiliation::Owner | Affiliation::Admin) => Role::Moderator,
            Some(Affiliation::Member) => Role::Participant,
            Some(Affiliation::Outcast) => Role::None,
            None if moderated => Role::Visitor,
            None => Role::Participant,
        }
    }
}

pub fn affiliation_str(a: Option<Affiliation>) -> &'static str {
    a.map_or("none", Affiliation::as_str)
}

/// One nick in the room: one real bare JID, one or more of its resources (§7.2: a
/// multi-session nick).
#[derive(Debug, Clone)]
pub struct Occupant {
    pub nick: String,
    pub bare: BareJid,
    /// The resources in the room under this nick, in order of entry.
    pub sessions: Vec<FullJid>,
    pub role: Role,
    pub affiliation: Option<Affiliation>,
    /// The occupant's last presence, without addresses and without what the room adds
    /// (`<x/>` of MUC, occupant-id): show, status, priority, caps.
    pub presence: Vec<Element>,
    /// XEP-0421: stable for the real bare JID in this room, not reversible.
    pub occupant_id: String,
}

impl Occupant {
    /// The resource whose JID the room shows where the real JID is shown.
    pub fn shown_jid(&self) -> &FullJid {
        self.sessions.last().expect("an occupant has a session")
    }
}

/// What `<item/>` says about an occupant (§§7.2-10): besides affiliation and role, the real
/// JID for those who may see it, a new nick (303), a reason and actor for kicks and bans.
#[derive(Debug, Clone, Default)]
pub struct ItemExtras {
    pub nick: Option<String>,
    pub reason: Option<String>,
    pub actor: Option<String>,
}

/// The `<x xmlns=muc#user>` of a presence about `o`.
pub fn user_x(o: &Occupant, show_jid: bool, codes: &[u16], extras: &ItemExtras) -> Element {
    let mut item = xml::element("item", MUC_USER, &[("affiliation", affiliation_str(o.affiliation)), ("role", o.role.as_str())]);
    if show_jid {
        xml::set_attr(&mut item, "jid", o.shown_jid().as_str());
    }
    if let Some(nick) = &extras.nick {
        xml::set_attr(&mut item, "nick", nick.as_str());
    }
    if let Some(actor) = &extras.actor {
        item.append_child(xml::element("actor", MUC_USER, &[("nick", actor)]));
    }
    if let Some(reason) = &extras.reason {
        item.append_child(xml::text_element("reason", MUC_USER, reason));
    }
    let mut x = Element::bare("x", MUC_USER);
    x.append_child(item);
    for code in codes {
        x.append_child(xml::element("status", MUC_USER, &[("code", &code.to_string())]));
    }
    x
}

/// A presence from the occupant's room JID, without `to`, with the occupant's last
/// presence (for an unavailable one: what the occupant's own unavailable presence said, a
/// status text, when it left by itself).
pub fn presence(room: &BareJid, o: &Occupant, available: bool, x: Element) -> Element {
    let from = occupant_jid(room, &o.nick);
    let mut el = xml::element("presence", ns::CLIENT, &[("from", from.as_str())]);
    if !available {
        xml::set_attr(&mut el, "type", "unavailable");
    }
    for child in &o.presence {
        el.append_child(child.clone());
    }
    el.append_child(x);
    el.append_child(xml::element("occupant-id", OCCUPANT_ID, &[("id", &o.occupant_id)]));
    el
}

/// room@service/nick.
pub fn occupant_jid(room: &BareJid, nick: &str) -> Jid {
    Jid::from(room.with_resource_str(nick).expect("nicks are checked as resourceparts on entry"))
}

/// The part of an entering or updating presence the room keeps: everything but the MUC
/// elements and what the room itself adds.
pub fn kept_presence(el: &Element) -> Vec<Element> {
    el.children()
        .filter(|c| !c.has_ns(MUC) && !c.has_ns(MUC_USER) && !c.has_ns(OCCUPANT_ID) && !c.is("error", ns::CLIENT))
        .cloned()
        .collect()
}

/// XEP-0421 §4: an id for a real bare JID in one room, from the room's secret salt; the
/// same JID always gets the same id there, and the id says nothing about the JID.
pub fn occupant_id(salt: &[u8], bare: &BareJid) -> String {
    use base64::Engine;
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(salt).expect("HMAC takes any key length");
    mac.update(bare.as_str().as_bytes());
    let digest = mac.finalize().into_bytes();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..18])
}

/// RFC 8266 §2.3 (the PRECIS Nickname profile's enforcement): the nick an occupant is known
/// by, which its occupant JID shows: spaces trimmed and runs of them made one, NFKC, the case
/// as given. A nick the profile rejects (or that is not a resourcepart once enforced) makes a
/// malformed occupant JID: XEP-0045 §7.2.1 answers a missing nick with jid-malformed, and
/// RFC 7622 §3.4 makes nicks resourceparts.
pub fn enforce(room: &BareJid, nick: &str) -> Result<String, StanzaError> {
    use precis_core::profile::PrecisFastInvocation;
    let malformed = || StanzaError::new(Condition::JidMalformed).with_text("this nick is not allowed by the PRECIS Nickname profile (RFC 8266)");
    let enforced = precis_profiles::Nickname::enforce(nick).map_err(|_| malformed())?.into_owned();
    room.with_resource_str(&enforced).map_err(|_| malformed())?;
    fold(&enforced).ok_or_else(malformed)?;
    Ok(enforced)
}

/// RFC 8266 §2.4 (the profile's comparison: enforcement with the case mapped to lower case):
/// two nicks with the same form are the same nick, for conflicts, reserved nicks and
/// addressing ("Thirdwitch", "thirdwitch" and "ＴＨＩＲＤＷＩＴＣＨ" are one). None for a
/// string the profile rejects, which no occupant can have.
pub fn fold(nick: &str) -> Option<String> {
    precis_core::profile::stabilize(nick, comparison_rules).ok().map(|s| s.into_owned())
}

/// RFC 8266 §2.4's rules, in its order, applied once.
fn comparison_rules(s: &str) -> Result<std::borrow::Cow<'_, str>, precis_core::Error> {
    use precis_core::profile::{Profile, Rules};
    let profile = precis_profiles::Nickname::new();
    let s = profile.prepare(s)?;
    let s = profile.additional_mapping_rule(s)?;
    let s = profile.case_mapping_rule(s)?;
    profile.normalization_rule(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn occupant_ids_are_stable_and_distinct() {
        let a = BareJid::new("romeo@montague.example").unwrap();
        let b = BareJid::new("juliet@capulet.example").unwrap();
        assert_eq!(occupant_id(b"salt", &a), occupant_id(b"salt", &a));
        assert_ne!(occupant_id(b"salt", &a), occupant_id(b"salt", &b));
        assert_ne!(occupant_id(b"salt", &a), occupant_id(b"other", &a));
        assert_eq!(occupant_id(b"salt", &a).len(), 24);
    }

    #[test]
    fn roles_on_entry() {
        assert_eq!(Role::on_entry(Some(Affiliation::Owner), false), Role::Moderator);
        assert_eq!(Role::on_entry(Some(Affiliation::Admin), true), Role::Moderator);
        assert_eq!(Role::on_entry(Some(Affiliation::Member), true), Role::Participant);
        assert_eq!(Role::on_entry(None, false), Role::Participant);
        assert_eq!(Role::on_entry(None, true), Role::Visitor);
    }

    #[test]
    fn nicks_are_enforced_and_compared_by_the_nickname_profile() {
        let room = BareJid::new("coven@chat.shakespeare.lit").unwrap();
        assert_eq!(enforce(&room, "  Third   Witch ").unwrap(), "Third Witch");
        assert_eq!(enforce(&room, "Ｔhirdwitch").unwrap(), "Thirdwitch");
        assert_eq!(enforce(&room, "Ĥéćâtë").unwrap(), "Ĥéćâtë");
        assert_eq!(enforce(&room, "   ").unwrap_err().condition, Condition::JidMalformed);
        assert_eq!(enforce(&room, "witch\u{1100}").unwrap_err().condition, Condition::JidMalformed);
        assert_eq!(enforce(&room, "witch\u{7}").unwrap_err().condition, Condition::JidMalformed);
        assert_eq!(fold("Ｔhirdwitch"), fold("thirdwitch"));
        assert_eq!(fold(" THIRD  witch"), fold("third witch"));
        assert_eq!(fold("ĤÉĆÂTË"), fold("ĥéćâtë"));
        assert_ne!(fold("thirdwitch"), fold("secondwitch"));
        assert_eq!(fold("witch\u{1100}"), None);
    }
}
