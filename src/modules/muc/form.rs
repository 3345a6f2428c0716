//! The forms of a room: its configuration (`muc#roomconfig`, §10.2, §15.5.3), its
//! disco#info with the `muc#roominfo` form (§6.4, §15.5.4), and the service's pages of
//! public rooms (§6.3 with XEP-0059).

use super::moderation::{MODERATE, RETRACT, TOMBSTONE};
use super::room::Room;
use super::{MAM, MUC, OCCUPANT_ID, SELF_PING_OPTIMIZATION, SID, STABLE_ID};
use crate::stanza::{Condition, StanzaError};
use crate::storage::{AllowPm, PresenceBroadcast, RoomConfig, RoomSummary, Whois};
use crate::xml::{self, Element, ns};

pub const RSM: &str = "http://jabber.org/protocol/rsm";
const ROOMCONFIG: &str = "http://jabber.org/protocol/muc#roomconfig";
const ROOMINFO: &str = "http://jabber.org/protocol/muc#roominfo";

/// The most rooms one disco#items answer lists.
pub const MAX_ITEMS: usize = 10_000;

/// The longest room name, description and password taken (bytes).
const MAX_TEXT: usize = 1024;

pub(super) fn field(var: &str, kind: &str, label: &str, values: &[&str]) -> Element {
    let mut f = xml::element("field", ns::DATA_FORMS, &[("var", var), ("type", kind)]);
    if !label.is_empty() {
        xml::set_attr(&mut f, "label", label);
    }
    for v in values {
        f.append_child(xml::text_element("value", ns::DATA_FORMS, v));
    }
    f
}

fn with_options(mut f: Element, options: &[(&str, &str)]) -> Element {
    for (value, label) in options {
        let mut o = xml::element("option", ns::DATA_FORMS, &[("label", label)]);
        o.append_child(xml::text_element("value", ns::DATA_FORMS, value));
        f.append_child(o);
    }
    f
}

fn flag(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

fn whois_str(w: Whois) -> &'static str {
    w.as_str()
}

/// §10.2: the configuration form with the room's current values.
pub fn config_form(room: &Room, max_users: u32) -> Element {
    let c = &room.config;
    let mut x = xml::element("x", ns::DATA_FORMS, &[("type", "form")]);
    x.append_child(xml::text_element("title", ns::DATA_FORMS, &format!("Configuration of {}", room.jid)));
    x.append_child(field("FORM_TYPE", "hidden", "", &[ROOMCONFIG]));
    x.append_child(field("muc#roomconfig_roomname", "text-single", "Name", &[&c.name]));
    x.append_child(field("muc#roomconfig_roomdesc", "text-single", "Description", &[&c.description]));
    x.append_child(field("muc#roomconfig_lang", "text-single", "Language of the discussion", &[&c.language]));
    x.append_child(field("muc#roomconfig_persistentroom", "boolean", "Persistent (kept when empty)", &[flag(room.persistent)]));
    x.append_child(field("muc#roomconfig_publicroom", "boolean", "Public (listed)", &[flag(c.public)]));
    x.append_child(field("muc#roomconfig_membersonly", "boolean", "Members only", &[flag(c.members_only)]));
    x.append_child(field("muc#roomconfig_moderatedroom", "boolean", "Moderated (only participants with voice may speak)", &[flag(c.moderated)]));
    x.append_child(field("muc#roomconfig_passwordprotectedroom", "boolean", "Password protected", &[flag(!c.password.is_empty())]));
    x.append_child(field("muc#roomconfig_roomsecret", "text-private", "Password", &[&c.password]));
    let max = c.max_users.to_string();
    let cap = max_users.to_string();
    let mut options: Vec<(&str, &str)> = [("10", "10"), ("20", "20"), ("50", "50"), ("100", "100"), ("200", "200"), ("500", "500"), ("1000", "1000")]
        .into_iter()
        .filter(|(v, _)| v.parse::<u32>().is_ok_and(|n| n < max_users))
        .collect();
    options.push((&cap, &cap));
    x.append_child(with_options(field("muc#roomconfig_maxusers", "list-single", "Maximum number of occupants", &[&max]), &options));
    x.append_child(with_options(
        field("muc#roomconfig_whois", "list-single", "Who may see occupants' real addresses", &[whois_str(c.whois)]),
        &[("moderators", "Moderators only"), ("anyone", "Anyone")],
    ));
    x.append_child(field("muc#roomconfig_allowinvites", "boolean", "Occupants may invite others", &[flag(c.allow_invites)]));
    x.append_child(field("muc#roomconfig_changesubject", "boolean", "Occupants may change the subject", &[flag(c.change_subject)]));
    x.append_child(with_options(
        field("muc#roomconfig_allowpm", "list-single", "Who may send private messages", &[c.allow_pm.as_str()]),
        &[("anyone", "Anyone"), ("participants", "Participants"), ("moderators", "Moderators"), ("none", "Nobody")],
    ));
    x.append_child(with_options(
        field("muc#roomconfig_presencebroadcast", "list-multi", "Roles whose presence is broadcast", &c.presence_broadcast.roles()),
        &[("moderator", "Moderator"), ("participant", "Participant"), ("visitor", "Visitor")],
    ));
    x.append_child(field("muc#roomconfig_enablearchiving", "boolean", "Archive messages (message archive, history)", &[flag(c.archive)]));
    x.append_child(field("muc#roomconfig_historylength", "text-single", "Messages sent on entry", &[&c.history_length.to_string()]));
    x
}

pub(super) fn parse_bool(var: &str, value: &str) -> Result<bool, StanzaError> {
    match value {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(not_acceptable(format!("{var}: {value:?} is not a boolean"))),
    }
}

fn not_acceptable(text: String) -> StanzaError {
    StanzaError::new(Condition::NotAcceptable).with_text(text)
}

fn bounded(var: &str, value: &str) -> Result<String, StanzaError> {
    if value.len() > MAX_TEXT {
        return Err(not_acceptable(format!("{var} is longer than {MAX_TEXT} bytes")));
    }
    Ok(value.to_string())
}

/// §10.2: a submitted configuration over the room's current one (fields not sent keep
/// their values; an empty form accepts them all, §10.1.2). Values the room cannot take are
/// `not-acceptable`, a form that is not one `bad-request`.
pub fn parse_config(x: &Element, room: &Room, max_users: u32) -> Result<(RoomConfig, bool), StanzaError> {
    if x.attr("type") != Some("submit") {
        return Err(StanzaError::bad_request("a configuration is submitted with a form of type 'submit'"));
    }
    let mut config = room.config.clone();
    let mut persistent = room.persistent;
    let mut protected = None;
    for f in x.children().filter(|c| c.is("field", ns::DATA_FORMS)) {
        let Some(var) = f.attr("var") else {
            return Err(StanzaError::bad_request("a submitted field needs a 'var'"));
        };
        let values: Vec<String> = f.children().filter(|c| c.is("value", ns::DATA_FORMS)).map(|v| v.text()).collect();
        let value = values.first().map(String::as_str).unwrap_or("");
        match var {
            "FORM_TYPE" if value != ROOMCONFIG => return Err(StanzaError::bad_request(format!("the FORM_TYPE must be {ROOMCONFIG}"))),
            "FORM_TYPE" => {}
            "muc#roomconfig_roomname" => config.name = bounded(var, value)?,
            "muc#roomconfig_roomdesc" => config.description = bounded(var, value)?,
            "muc#roomconfig_lang" => config.language = bounded(var, value)?,
            "muc#roomconfig_persistentroom" => persistent = parse_bool(var, value)?,
            "muc#roomconfig_publicroom" => config.public = parse_bool(var, value)?,
            "muc#roomconfig_membersonly" => config.members_only = parse_bool(var, value)?,
            "muc#roomconfig_moderatedroom" => config.moderated = parse_bool(var, value)?,
            "muc#roomconfig_passwordprotectedroom" => protected = Some(parse_bool(var, value)?),
            "muc#roomconfig_roomsecret" => config.password = bounded(var, value)?,
            "muc#roomconfig_maxusers" => {
                let n = if value == "none" || value.is_empty() { max_users } else { value.parse::<u32>().map_err(|_| not_acceptable(format!("{var}: {value:?} is not a number")))? };
                if n == 0 || n > max_users {
                    return Err(not_acceptable(format!("{var}: a room takes 1 to {max_users} occupants")));
                }
                config.max_users = n;
            }
            "muc#roomconfig_whois" => {
                config.whois = Whois::parse(value).ok_or_else(|| not_acceptable(format!("{var}: {value:?} is not 'moderators' or 'anyone'")))?
            }
            "muc#roomconfig_allowinvites" => config.allow_invites = parse_bool(var, value)?,
            "muc#roomconfig_changesubject" => config.change_subject = parse_bool(var, value)?,
            "muc#roomconfig_allowpm" => {
                config.allow_pm = AllowPm::parse(value).ok_or_else(|| not_acceptable(format!("{var}: {value:?} is not anyone, participants, moderators or none")))?
            }
            "muc#roomconfig_presencebroadcast" => {
                config.presence_broadcast = PresenceBroadcast::from_roles(values.iter().map(String::as_str))
                    .ok_or_else(|| not_acceptable(format!("{var}: the values are roles: moderator, participant, visitor")))?
            }
            "muc#roomconfig_enablearchiving" | "muc#roomconfig_enablelogging" | "mam" => config.archive = parse_bool(var, value)?,
            "muc#roomconfig_historylength" | "muc#maxhistoryfetch" => {
                let n = value.parse::<u32>().map_err(|_| not_acceptable(format!("{var}: {value:?} is not a number")))?;
                config.history_length = n.min(1000);
            }
            // Fields of other servers' forms that this room does not have are ignored, as
            // XEP-0004 lets a form processor do with fields it did not ask for.
            _ => {}
        }
    }
    match protected {
        Some(false) => config.password.clear(),
        Some(true) if config.password.is_empty() => {
            return Err(not_acceptable("a password-protected room needs muc#roomconfig_roomsecret".into()));
        }
        _ => {}
    }
    Ok((config, persistent))
}

/// §6.4: the room's identity, features (each room type), and the `muc#roominfo` form.
pub fn room_info(room: &Room) -> Element {
    let c = &room.config;
    let mut query = Element::bare("query", ns::DISCO_INFO);
    let name = if c.name.is_empty() { room.jid.node().map(|n| n.as_str()).unwrap_or_default().to_string() } else { c.name.clone() };
    query.append_child(xml::element("identity", ns::DISCO_INFO, &[("category", "conference"), ("type", "text"), ("name", &name)]));
    // XEP-0410 §3.3: the room answers self-pings itself.
    let mut features = vec![ns::DISCO_INFO, MUC, STABLE_ID, SID, OCCUPANT_ID, ns::PING, SELF_PING_OPTIMIZATION, "muc#register"];
    features.push(if c.public { "muc_public" } else { "muc_hidden" });
    features.push(if room.persistent { "muc_persistent" } else { "muc_temporary" });
    features.push(if c.members_only { "muc_membersonly" } else { "muc_open" });
    features.push(if c.moderated { "muc_moderated" } else { "muc_unmoderated" });
    features.push(if c.password.is_empty() { "muc_unsecured" } else { "muc_passwordprotected" });
    features.push(if c.whois == Whois::Anyone { "muc_nonanonymous" } else { "muc_semianonymous" });
    if c.archive {
        // XEP-0424 §2, XEP-0425 §2: retractions are checked against the archive and kept
        // in it, the retracted messages replaced by tombstones (XEP-0424 §5).
        features.extend([MAM, RETRACT, TOMBSTONE, MODERATE]);
    }
    features.push(ns::VCARD);
    for var in features {
        query.append_child(xml::element("feature", ns::DISCO_INFO, &[("var", var)]));
    }
    let mut x = xml::element("x", ns::DATA_FORMS, &[("type", "result")]);
    x.append_child(field("FORM_TYPE", "hidden", "", &[ROOMINFO]));
    x.append_child(field("muc#roominfo_description", "text-single", "Description", &[&c.description]));
    x.append_child(field("muc#roominfo_subject", "text-single", "Subject", &[&room.subject]));
    x.append_child(field("muc#roominfo_occupants", "text-single", "Number of occupants", &[&room.occupants.len().to_string()]));
    x.append_child(field("muc#roominfo_lang", "text-single", "Language", &[&c.language]));
    x.append_child(field("muc#roominfo_changesubject", "boolean", "Occupants may change the subject", &[flag(c.change_subject)]));
    x.append_child(field("muc#roomconfig_roomname", "text-single", "Name", &[&name]));
    x.append_child(field("muc#maxhistoryfetch", "text-single", "Messages sent on entry", &[&c.history_length.to_string()]));
    x.append_child(field("muc#roomconfig_allowinvites", "boolean", "Occupants may invite others", &[flag(c.allow_invites)]));
    x.append_child(field("muc#roomconfig_allowpm", "list-single", "Who may send private messages", &[c.allow_pm.as_str()]));
    if let Some(hash) = &room.avatar_hash {
        // The SHA-1 of the room's vCard photo, where clients look for a room's avatar.
        x.append_child(field("muc#roominfo_avatarhash", "text-multi", "Avatar hash", &[hash]));
    }
    query.append_child(x);
    query
}

/// The first value of a submitted form's field, `None` when the field is not there.
pub(super) fn submitted(x: &Element, var: &str) -> Option<String> {
    let f = x.children().find(|c| c.is("field", ns::DATA_FORMS) && c.attr("var") == Some(var))?;
    Some(f.get_child("value", ns::DATA_FORMS).map(|v| v.text()).unwrap_or_default())
}

/// A form's FORM_TYPE, `None` when it has none.
pub(super) fn form_type(x: &Element) -> Option<String> {
    submitted(x, "FORM_TYPE").map(|t| t.trim().to_string())
}

/// A XEP-0059 page asked for on a disco#items query.
#[derive(Debug, Default)]
pub struct PageRequest {
    pub max: Option<usize>,
    pub after: Option<String>,
    pub before: Option<String>,
    pub index: Option<usize>,
    pub asked: bool,
}

impl PageRequest {
    pub fn parse(set: Option<&Element>) -> Result<PageRequest, StanzaError> {
        let Some(set) = set else { return Ok(PageRequest::default()) };
        let text = |name: &str| set.get_child(name, RSM).map(|e| e.text());
        let number = |name: &str| -> Result<Option<usize>, StanzaError> {
            text(name).map(|t| t.trim().parse::<usize>().map_err(|_| StanzaError::bad_request(format!("RSM <{name}/> is not a number")))).transpose()
        };
        Ok(PageRequest { max: number("max")?, after: text("after"), before: text("before"), index: number("index")?, asked: true })
    }
}

/// The page of `rooms` (sorted by JID) that `rsm` asks for, as a disco#items answer.
pub fn items_page(rooms: Vec<RoomSummary>, rsm: &PageRequest) -> Element {
    let total = rooms.len();
    let start = if let Some(after) = &rsm.after {
        rooms.iter().position(|r| r.jid.as_str() > after.as_str()).unwrap_or(total)
    } else {
        rsm.index.unwrap_or(0).min(total)
    };
    let mut end = total;
    if let Some(before) = rsm.before.as_deref() {
        end = if before.is_empty() { total } else { rooms.iter().position(|r| r.jid.as_str() >= before).unwrap_or(total) };
    }
    let max = rsm.max.unwrap_or(MAX_ITEMS).min(MAX_ITEMS);
    let (from, to) = if rsm.before.is_some() { (end.saturating_sub(max).max(start.min(end)), end) } else { (start, (start + max).min(end)) };
    let mut query = Element::bare("query", ns::DISCO_ITEMS);
    let page = &rooms[from.min(to)..to];
    for r in page {
        let mut item = xml::element("item", ns::DISCO_ITEMS, &[("jid", &r.jid)]);
        if !r.name.is_empty() {
            xml::set_attr(&mut item, "name", r.name.as_str());
        }
        query.append_child(item);
    }
    if rsm.asked {
        let mut set = Element::bare("set", RSM);
        if let (Some(first), Some(last)) = (page.first(), page.last()) {
            let mut f = xml::text_element("first", RSM, &first.jid);
            xml::set_attr(&mut f, "index", from.to_string());
            set.append_child(f);
            set.append_child(xml::text_element("last", RSM, &last.jid));
        }
        set.append_child(xml::text_element("count", RSM, &total.to_string()));
        query.append_child(set);
    }
    query
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rooms(n: usize) -> Vec<RoomSummary> {
        (0..n).map(|i| RoomSummary { jid: format!("r{i:02}@conference.localhost"), name: String::new(), public: true }).collect()
    }

    fn jids(q: &Element) -> Vec<String> {
        q.children().filter(|c| c.name() == "item").map(|c| c.attr("jid").unwrap().to_string()).collect()
    }

    #[test]
    fn pages_forward_and_backward() {
        let all = rooms(5);
        let first = items_page(all.clone(), &PageRequest { max: Some(2), asked: true, ..Default::default() });
        assert_eq!(jids(&first), ["r00@conference.localhost", "r01@conference.localhost"]);
        let next = items_page(all.clone(), &PageRequest { max: Some(2), after: Some("r01@conference.localhost".into()), asked: true, ..Default::default() });
        assert_eq!(jids(&next), ["r02@conference.localhost", "r03@conference.localhost"]);
        let last = items_page(all.clone(), &PageRequest { max: Some(2), before: Some(String::new()), asked: true, ..Default::default() });
        assert_eq!(jids(&last), ["r03@conference.localhost", "r04@conference.localhost"]);
        let none = items_page(all, &PageRequest::default());
        assert_eq!(jids(&none).len(), 5);
        assert!(none.get_child("set", RSM).is_none());
    }
}
