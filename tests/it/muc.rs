//! Multi-User Chat (XEP-0045, version 1.35.5), with occupant ids (XEP-0421), self-ping
//! (XEP-0410), stanza ids in rooms (XEP-0359) and room archives (XEP-0313), written from the
//! specifications: each test names the sections and examples it follows. Section numbers are
//! those of XEP-0045 1.35.5 (§7.2.8 Nickname Conflict, §7.2.13 Discussion History, §7.2.15
//! Room Subject, §17 Business Rules), with the anchor names where it helps.
//!
//! The service is conference.localhost. The accounts and nicks are the spec's witches where a
//! test follows an example closely.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use minidom::Element;

use crate::common::client::{CLIENT, Client, condition, show};
use crate::common::{Backend, TestServer};
use crate::db_tests;

pub(crate) const SERVICE: &str = "conference.localhost";
pub(crate) const MUC: &str = "http://jabber.org/protocol/muc";
pub(crate) const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
pub(crate) const MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
pub(crate) const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
pub(crate) const ROOMCONFIG: &str = "http://jabber.org/protocol/muc#roomconfig";
const ROOMINFO: &str = "http://jabber.org/protocol/muc#roominfo";
const STABLE_ID: &str = "http://jabber.org/protocol/muc#stable_id";
pub(crate) const DATA: &str = "jabber:x:data";
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
const DELAY: &str = "urn:xmpp:delay";
const SID: &str = "urn:xmpp:sid:0";
const OCCUPANT_ID: &str = "urn:xmpp:occupant-id:0";
const MAM: &str = "urn:xmpp:mam:2";
const FORWARD: &str = "urn:xmpp:forward:0";
const RSM: &str = "http://jabber.org/protocol/rsm";
const PING: &str = "urn:xmpp:ping";
const SELF_PING_OPTIMIZATION: &str = "http://jabber.org/protocol/muc#self-ping-optimization";

/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_millis(300);

/// §5.2: the affiliations; §5.1: the roles.
const AFFILIATIONS: [&str; 5] = ["owner", "admin", "member", "none", "outcast"];
const ROLES: [&str; 4] = ["moderator", "participant", "visitor", "none"];

// ---------------------------------------------------------------------------------------
// Addresses and small accessors

pub(crate) fn room(name: &str) -> String {
    format!("{name}@{SERVICE}")
}

pub(crate) fn occupant(name: &str, nick: &str) -> String {
    format!("{name}@{SERVICE}/{nick}")
}

pub(crate) fn next_id(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Whether `e` comes from the room `name` or one of its occupant JIDs.
fn from_room(e: &Element, name: &str) -> bool {
    let r = room(name);
    e.attr("from").is_some_and(|f| f == r || f.strip_prefix(r.as_str()).is_some_and(|rest| rest.starts_with('/')))
}

/// The nick of an occupant JID (`from`).
pub(crate) fn nick_of(e: &Element) -> String {
    e.attr("from").and_then(|f| f.split_once('/')).map(|(_, n)| n.to_string()).unwrap_or_default()
}

/// The one `<x xmlns='…muc#user'/>` of a stanza, if any (§7.2.2: never more than one).
fn user_x(el: &Element) -> Option<&Element> {
    let mut xs = el.children().filter(|c| c.is("x", MUC_USER));
    let x = xs.next();
    assert!(xs.next().is_none(), "§7.2.2: more than one muc#user <x/>: {}", show(el));
    x
}

/// The status codes of the muc#user extension, in order.
pub(crate) fn codes(el: &Element) -> Vec<String> {
    user_x(el)
        .map(|x| x.children().filter(|c| c.is("status", MUC_USER)).filter_map(|s| s.attr("code")).map(str::to_string).collect())
        .unwrap_or_default()
}

pub(crate) fn has_code(el: &Element, code: &str) -> bool {
    codes(el).iter().any(|c| c == code)
}

/// The muc#user `<item/>`.
pub(crate) fn item(el: &Element) -> &Element {
    user_x(el).and_then(|x| x.get_child("item", MUC_USER)).unwrap_or_else(|| panic!("no muc#user <item/> in {}", show(el)))
}

pub(crate) fn affiliation_role(el: &Element) -> (String, String) {
    let i = item(el);
    (i.attr("affiliation").unwrap_or_default().to_string(), i.attr("role").unwrap_or_default().to_string())
}

pub(crate) fn ar(affiliation: &str, role: &str) -> (String, String) {
    (affiliation.to_string(), role.to_string())
}

/// The real JID in the muc#user item, if shown.
fn real_jid(el: &Element) -> Option<String> {
    item(el).attr("jid").map(str::to_string)
}

/// The one occupant id (XEP-0421 §4: at most one, on every presence and message of the room).
pub(crate) fn occupant_id(el: &Element) -> String {
    let ids: Vec<&str> = el.children().filter(|c| c.is("occupant-id", OCCUPANT_ID)).map(|c| c.attr("id").unwrap_or_default()).collect();
    assert_eq!(ids.len(), 1, "XEP-0421 §4: exactly one occupant-id: {}", show(el));
    assert!(!ids[0].is_empty(), "an empty occupant id: {}", show(el));
    ids[0].to_string()
}

pub(crate) fn body(m: &Element) -> Option<String> {
    m.get_child("body", CLIENT).map(|b| b.text())
}

/// §7.2.15: a message with a <subject/> and no <body/> is a subject (change).
fn is_subject(m: &Element) -> bool {
    m.name() == "message" && m.get_child("subject", CLIENT).is_some() && m.get_child("body", CLIENT).is_none()
}

fn subject_text(m: &Element) -> String {
    m.get_child("subject", CLIENT).unwrap_or_else(|| panic!("no subject in {}", show(m))).text()
}

/// The ids of the stanza-id elements (XEP-0359) with `by` = `by`.
fn stanza_ids_by(m: &Element, by: &str) -> Vec<String> {
    m.children().filter(|c| c.is("stanza-id", SID) && c.attr("by") == Some(by)).map(|c| c.attr("id").unwrap_or_default().to_string()).collect()
}

/// The one stanza-id of the room (XEP-0359 §3 rules 4 and 5; XEP-0313 §3.5).
pub(crate) fn room_stanza_id(m: &Element, name: &str) -> String {
    let ids = stanza_ids_by(m, &room(name));
    assert_eq!(ids.len(), 1, "one stanza-id by {}: {}", room(name), show(m));
    assert!(!ids[0].is_empty(), "{}", show(m));
    ids[0].clone()
}

fn error_type(el: &Element) -> Option<String> {
    el.get_child("error", CLIENT).and_then(|e| e.attr("type")).map(str::to_string)
}

/// An error stanza with this condition (and error type, when the spec's example gives one).
pub(crate) fn assert_error(el: &Element, cond: &str, typ: Option<&str>) {
    assert_eq!(el.attr("type"), Some("error"), "expected an error: {}", show(el));
    assert_eq!(condition(el), cond, "{}", show(el));
    if let Some(t) = typ {
        assert_eq!(error_type(el).as_deref(), Some(t), "error type: {}", show(el));
    }
}

/// An error with one of these conditions (where the spec leaves the choice open).
fn assert_error_among(el: &Element, conds: &[&str]) {
    assert_eq!(el.attr("type"), Some("error"), "expected an error: {}", show(el));
    let got = condition(el);
    assert!(conds.contains(&got.as_str()), "condition {got}, expected one of {conds:?}: {}", show(el));
}

/// The stanza does not reveal any of these bare JIDs (§7.2.4: semi-anonymous rooms).
fn assert_hides(el: &Element, jids: &[&str]) {
    let text = show(el);
    for j in jids {
        assert!(!text.contains(j), "{j} is revealed to a non-moderator: {text}");
    }
}

/// What every presence from an occupant JID carries: role and affiliation (§5.1, §5.2, §17.3
/// rule 8) with defined values, role none when unavailable (§7.14, except for the unavailable
/// half of a nick change, Example 50), a full JID when a JID is shown (§17.3 rule 10), and
/// one occupant id (XEP-0421 §4).
pub(crate) fn check_presence(el: &Element) {
    let (aff, role) = affiliation_role(el);
    assert!(AFFILIATIONS.contains(&aff.as_str()), "affiliation {aff:?}: {}", show(el));
    assert!(ROLES.contains(&role.as_str()), "role {role:?}: {}", show(el));
    if el.attr("type") == Some("unavailable") {
        if !has_code(el, "303") {
            assert_eq!(role, "none", "§7.14: unavailable presence has role none: {}", show(el));
        }
    } else {
        assert_ne!(role, "none", "an occupant's available presence has a role: {}", show(el));
    }
    if let Some(jid) = real_jid(el) {
        assert!(jid.contains('/'), "§17.3 rule 10: the 'jid' of presence is a full JID: {}", show(el));
    }
    occupant_id(el);
}

/// A history message (§7.2.13): a groupchat message from an occupant JID with a body and a
/// <delay/> whose 'from' is the room JID; with the sender's occupant id (XEP-0421 §4).
fn check_history(m: &Element, room_jid: &str) {
    let delay = m.get_child("delay", DELAY).unwrap_or_else(|| panic!("§7.2.13: history has a <delay/>: {}", show(m)));
    assert_eq!(delay.attr("from"), Some(room_jid), "§7.2.13: delay 'from' is the room JID: {}", show(m));
    if m.attr("from") == Some(room_jid) && m.has_child("retract", crate::muc_moderation::RETRACT) {
        return; // XEP-0425 §3.1: a moderation, from the room itself.
    }
    assert!(m.attr("from").is_some_and(|f| f.starts_with(&format!("{room_jid}/"))), "history comes from occupant JIDs: {}", show(m));
    // XEP-0424: a retraction needs no body, and a retracted message is a tombstone (§5).
    let retraction = ["retract", "retracted"].iter().any(|name| m.has_child(name, crate::muc_moderation::RETRACT));
    assert!(body(m).is_some() || retraction, "{}", show(m));
    assert!(delay.attr("stamp").is_some_and(|s| !s.is_empty()), "{}", show(m));
    occupant_id(m);
}

// ---------------------------------------------------------------------------------------
// Clients and expectations

/// Logged in and available (RFC 6121), own presence consumed.
pub(crate) async fn online(s: &TestServer, user: &str, resource: &str) -> Client {
    let mut c = s.login(user, resource).await;
    c.available().await;
    c
}

/// Wait for presence from `from` (available, or unavailable), addressed to this client; its
/// MUC extension is checked with [`check_presence`].
pub(crate) async fn presence_from(c: &mut Client, from: &str, unavailable: bool) -> Element {
    let want = if unavailable { Some("unavailable") } else { None };
    let what = format!("{} presence from {from}", if unavailable { "unavailable" } else { "available" });
    let el = c.expect(&what, |e| e.name() == "presence" && e.attr("from") == Some(from) && e.attr("type") == want).await;
    assert_eq!(el.attr("to"), Some(c.jid.as_str()), "{}", show(&el));
    check_presence(&el);
    el
}

/// Wait for a groupchat message with a body from the occupant JID `from` (§7.4).
async fn groupchat_from(c: &mut Client, from: &str) -> Element {
    let el = c
        .expect(&format!("a groupchat message from {from}"), |e| {
            e.name() == "message" && e.attr("from") == Some(from) && e.attr("type") != Some("error") && e.get_child("body", CLIENT).is_some()
        })
        .await;
    assert_eq!(el.attr("type"), Some("groupchat"), "{}", show(&el));
    assert_eq!(el.attr("to"), Some(c.jid.as_str()), "{}", show(&el));
    occupant_id(&el);
    el
}

/// Wait for a subject message of the room (§7.2.15, §8.1): from the room JID or an occupant JID.
async fn subject_from_room(c: &mut Client, name: &str) -> Element {
    let el = c.expect(&format!("a subject from {}", room(name)), |e| is_subject(e) && from_room(e, name) && e.attr("type") != Some("error")).await;
    assert_eq!(el.attr("type"), Some("groupchat"), "{}", show(&el));
    el
}

/// The next stanza from the room (order kept; other traffic stays pending).
pub(crate) async fn next_from_room(c: &mut Client, name: &str) -> Element {
    c.expect(&format!("a stanza from {}", room(name)), |e| from_room(e, name)).await
}

/// Wait for the error answering the stanza of kind `kind` with `id`.
pub(crate) async fn error_for(c: &mut Client, kind: &str, id: &str) -> Element {
    c.expect(&format!("an error for {kind} {id}"), |e| e.name() == kind && e.attr("id") == Some(id) && e.attr("type") == Some("error")).await
}

/// Nothing from the room `name` arrives for a while (other traffic is dropped).
pub(crate) async fn nothing_from_room(c: &mut Client, name: &str) {
    if let Some(e) = c.pending.iter().find(|e| from_room(e, name)) {
        panic!("{}: unexpected from {}: {}", c.jid, room(name), show(e));
    }
    c.pending.clear();
    let deadline = tokio::time::Instant::now() + QUIET;
    while let Ok(el) = tokio::time::timeout_at(deadline, c.next()).await {
        assert!(!from_room(&el, name), "{}: unexpected from {}: {}", c.jid, room(name), show(&el));
    }
}

// ---------------------------------------------------------------------------------------
// Entering and leaving

/// What a client received on entering a room, in the order of §7.1.
pub(crate) struct Entered {
    /// In-room presence of the occupants already there (§7.2.2, Example 20).
    pub(crate) others: Vec<Element>,
    /// The self-presence, with 110, after all the others (Example 21).
    pub(crate) me: Element,
    /// Discussion history, oldest first (§7.2.13).
    pub(crate) history: Vec<Element>,
    /// The subject (§7.2.15), last, also in a room just created (201).
    subject: Option<Element>,
}

impl Entered {
    pub(crate) fn other_nicks(&self) -> Vec<String> {
        let mut n: Vec<String> = self.others.iter().map(nick_of).collect();
        n.sort();
        n
    }

    fn other(&self, nick: &str) -> &Element {
        self.others.iter().find(|p| nick_of(p) == nick).unwrap_or_else(|| panic!("no presence of {nick} on entering"))
    }

    fn history_bodies(&self) -> Vec<String> {
        self.history.iter().map(|m| body(m).unwrap()).collect()
    }
}

pub(crate) fn join_presence(name: &str, nick: &str, x_inner: &str) -> String {
    format!("<presence to='{}'><x xmlns='{MUC}'>{x_inner}</x></presence>", occupant(name, nick))
}

/// Send the MUC join presence (§7.2.1, Example 18) with `x_inner` inside <x/> (password,
/// history) and read the entry.
pub(crate) async fn enter(c: &mut Client, name: &str, nick: &str, x_inner: &str) -> Entered {
    c.send(&join_presence(name, nick, x_inner)).await;
    read_entry(c, name, nick).await
}

/// Read an entry in the order §7.1 fixes: presence of the others, the self-presence (110),
/// history, the subject. Stanzas not from the room are kept for later.
pub(crate) async fn read_entry(c: &mut Client, name: &str, nick: &str) -> Entered {
    let room_jid = room(name);
    let me_jid = occupant(name, nick);
    let mut unrelated: Vec<Element> = c.pending.drain(..).collect();
    let (mut others, mut me, mut history) = (Vec::new(), None::<Element>, Vec::new());
    let subject = loop {
        let el = c.next().await;
        // Private messages and invitations (§9.5 Example 134) are no part of the entry.
        let aside = el.name() == "message" && !matches!(el.attr("type"), Some("groupchat" | "error"));
        if !from_room(&el, name) || aside {
            unrelated.push(el);
            continue;
        }
        assert_ne!(el.attr("type"), Some("error"), "{} could not enter {name} as {nick}: {}", c.jid, show(&el));
        assert_eq!(el.attr("to"), Some(c.jid.as_str()), "{}", show(&el));
        let kind = el.name().to_string();
        match (kind.as_str(), me.is_some()) {
            ("presence", false) => {
                assert_eq!(el.attr("type"), None, "only available presence on entering: {}", show(&el));
                check_presence(&el);
                if has_code(&el, "110") {
                    assert_eq!(el.attr("from"), Some(me_jid.as_str()), "the self-presence comes from the own occupant JID: {}", show(&el));
                    // A new room too ends the entry with its (empty) subject: §7.2.15 has no
                    // exception, and clients (slixmpp's join_muc_wait) wait for it.
                    me = Some(el);
                } else {
                    assert_ne!(el.attr("from"), Some(me_jid.as_str()), "§7.2.2: the self-presence has status 110: {}", show(&el));
                    others.push(el);
                }
            }
            ("presence", true) => panic!("§7.1: presence after the self-presence while entering (history and subject come next): {}", show(&el)),
            ("message", false) => panic!("§7.1, §7.2.13: a message before the self-presence: {}", show(&el)),
            ("message", true) => {
                assert_eq!(el.attr("type"), Some("groupchat"), "{}", show(&el));
                if is_subject(&el) {
                    break Some(el);
                }
                check_history(&el, &room_jid);
                history.push(el);
            }
            _ => panic!("unexpected while entering {name}: {}", show(&el)),
        }
    };
    for el in unrelated.into_iter().rev() {
        c.pending.push_front(el);
    }
    Entered { others, me: me.unwrap(), history, subject }
}

/// Enter an existing, unlocked room.
pub(crate) async fn join(c: &mut Client, name: &str, nick: &str) -> Entered {
    let e = enter(c, name, nick, "").await;
    assert!(!has_code(&e.me, "201"), "{name} did not exist yet: {}", show(&e.me));
    e
}

/// A join that must be refused: the presence error, from the occupant JID (Examples 25-31).
pub(crate) async fn refused(c: &mut Client, name: &str, nick: &str, x_inner: &str) -> Element {
    let to = occupant(name, nick);
    c.send(&join_presence(name, nick, x_inner)).await;
    let el = c.expect(&format!("a presence error for entering {to}"), |e| e.name() == "presence" && e.attr("type") == Some("error")).await;
    assert_eq!(el.attr("from"), Some(to.as_str()), "{}", show(&el));
    assert_eq!(el.attr("to"), Some(c.jid.as_str()), "{}", show(&el));
    el
}

/// §10.1.2, Example 155: accept the default configuration (an empty submitted form).
async fn instant(c: &mut Client, name: &str) -> Element {
    c.request(&format!(
        "<iq type='set' id='{}' to='{}'><query xmlns='{MUC_OWNER}'><x xmlns='{DATA}' type='submit'/></query></iq>",
        next_id("create"),
        room(name)
    ))
    .await
}

/// Submit a muc#roomconfig form with these fields (§10.1.3 Example 159, §10.2).
pub(crate) async fn configure(c: &mut Client, name: &str, fields: &[(&str, &str)]) -> Element {
    let mut form = format!("<field var='FORM_TYPE'><value>{ROOMCONFIG}</value></field>");
    for (var, value) in fields {
        form.push_str(&format!("<field var='{var}'><value>{value}</value></field>"));
    }
    c.request(&format!(
        "<iq type='set' id='{}' to='{}'><query xmlns='{MUC_OWNER}'><x xmlns='{DATA}' type='submit'>{form}</x></query></iq>",
        next_id("config"),
        room(name)
    ))
    .await
}

/// Create a room (§10.1.1) and unlock it: instant (§10.1.2) when `fields` is empty, else
/// configured with them (§10.1.3). Whatever else arrived meanwhile is dropped.
pub(crate) async fn create(c: &mut Client, name: &str, nick: &str, fields: &[(&str, &str)]) -> Entered {
    let e = enter(c, name, nick, "").await;
    assert!(has_code(&e.me, "201") && has_code(&e.me, "110"), "§10.1.1 Example 154: {}", show(&e.me));
    assert_eq!(affiliation_role(&e.me), ar("owner", "moderator"), "{}", show(&e.me));
    let r = if fields.is_empty() { instant(c, name).await } else { configure(c, name, fields).await };
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    c.drain().await;
    e
}

/// §7.14, Examples 80-81: leave; the self-presence of the departure is returned.
pub(crate) async fn leave(c: &mut Client, name: &str, nick: &str) -> Element {
    let me = occupant(name, nick);
    c.send(&format!("<presence to='{me}' type='unavailable'/>")).await;
    let p = presence_from(c, &me, true).await;
    assert!(has_code(&p, "110"), "§7.14 Example 81: {}", show(&p));
    p
}

/// Enter `name`, which is to be a new room (201, owner, nobody else) within a few seconds:
/// while an old locked one is still there (item-not-found, Example 31), try again.
async fn enter_new_room(c: &mut Client, name: &str, nick: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        c.send(&join_presence(name, nick, "")).await;
        let el = c.expect(&format!("an answer from {}", room(name)), |e| e.name() == "presence" && from_room(e, name)).await;
        if el.attr("type") == Some("error") {
            assert_error(&el, "item-not-found", Some("cancel"));
            assert!(tokio::time::Instant::now() < deadline, "{} was not destroyed", room(name));
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        // In a new room the first presence is the creator's own.
        check_presence(&el);
        assert_eq!(el.attr("from"), Some(occupant(name, nick).as_str()), "a new room has no one else: {}", show(&el));
        assert!(has_code(&el, "110") && has_code(&el, "201"), "a new room: {}", show(&el));
        assert_eq!(affiliation_role(&el), ar("owner", "moderator"));
        subject_from_room(c, name).await;
        return;
    }
}

/// Wait (a few seconds at most) until the room no longer exists: its disco#info answers
/// item-not-found (XEP-0030 §3.1).
async fn room_gone(c: &mut Client, name: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let info = disco_info(c, &room(name)).await;
        if info.attr("type") == Some("error") {
            assert_error(&info, "item-not-found", None);
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{} still exists: {}", room(name), show(&info));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Send a groupchat message (§7.4, Example 44) and wait for its reflection to the sender.
pub(crate) async fn say(c: &mut Client, name: &str, text: &str) -> Element {
    let id = next_id("gc");
    c.send(&format!("<message to='{}' type='groupchat' id='{id}'><body>{text}</body></message>", room(name))).await;
    let m = c.expect(&format!("the reflection of {id}"), |e| e.name() == "message" && e.attr("id") == Some(id.as_str()) && from_room(e, name)).await;
    assert_eq!(m.attr("type"), Some("groupchat"), "{}", show(&m));
    m
}

/// Send a groupchat message without waiting; its id is returned.
async fn send_groupchat(c: &mut Client, name: &str, text: &str) -> String {
    let id = next_id("gc");
    c.send(&format!("<message to='{}' type='groupchat' id='{id}'><body>{text}</body></message>", room(name))).await;
    id
}

/// §8.1, Example 84: change the subject (not waiting for anything).
async fn set_subject(c: &mut Client, name: &str, text: &str) -> String {
    let id = next_id("subject");
    c.send(&format!("<message to='{}' type='groupchat' id='{id}'><subject>{text}</subject></message>", room(name))).await;
    id
}

// ---------------------------------------------------------------------------------------
// Configuration forms, disco, admin lists, archives

/// The owner form of a room (§10.1.3 Example 156, §10.2 Example 163): the IQ answer.
pub(crate) async fn get_config(c: &mut Client, name: &str) -> Element {
    c.request(&format!("<iq type='get' id='{}' to='{}'><query xmlns='{MUC_OWNER}'/></iq>", next_id("form"), room(name))).await
}

/// The data form in an owner IQ result.
pub(crate) fn config_form(iq: &Element) -> Element {
    assert_eq!(iq.attr("type"), Some("result"), "{}", show(iq));
    iq.get_child("query", MUC_OWNER).and_then(|q| q.get_child("x", DATA)).unwrap_or_else(|| panic!("no form in {}", show(iq))).clone()
}

pub(crate) fn field<'a>(form: &'a Element, var: &str) -> Option<&'a Element> {
    form.children().find(|f| f.is("field", DATA) && f.attr("var") == Some(var))
}

pub(crate) fn values(form: &Element, var: &str) -> Vec<String> {
    field(form, var).map(|f| f.children().filter(|v| v.is("value", DATA)).map(|v| v.text()).collect()).unwrap_or_default()
}

fn value(form: &Element, var: &str) -> Option<String> {
    values(form, var).into_iter().next()
}

/// A XEP-0004 boolean field's value.
fn boolean(form: &Element, var: &str) -> bool {
    match value(form, var).as_deref() {
        Some("1" | "true") => true,
        Some("0" | "false") => false,
        other => panic!("{var}: not a boolean value: {other:?} in {}", show(form)),
    }
}

pub(crate) async fn disco_info(c: &mut Client, to: &str) -> Element {
    c.request(&format!("<iq type='get' id='{}' to='{to}'><query xmlns='{DISCO_INFO}'/></iq>", next_id("info"))).await
}

async fn disco_items(c: &mut Client, to: &str) -> Element {
    c.request(&format!("<iq type='get' id='{}' to='{to}'><query xmlns='{DISCO_ITEMS}'/></iq>", next_id("items"))).await
}

fn features(iq: &Element) -> Vec<String> {
    assert_eq!(iq.attr("type"), Some("result"), "{}", show(iq));
    iq.get_child("query", DISCO_INFO).unwrap().children().filter(|c| c.is("feature", DISCO_INFO)).filter_map(|f| f.attr("var")).map(str::to_string).collect()
}

/// (category, type, name) of each identity.
fn identities(iq: &Element) -> Vec<(String, String, Option<String>)> {
    iq.get_child("query", DISCO_INFO)
        .unwrap()
        .children()
        .filter(|c| c.is("identity", DISCO_INFO))
        .map(|i| (i.attr("category").unwrap_or_default().to_string(), i.attr("type").unwrap_or_default().to_string(), i.attr("name").map(str::to_string)))
        .collect()
}

/// (jid, name) of each disco item.
fn items(iq: &Element) -> Vec<(String, Option<String>)> {
    assert_eq!(iq.attr("type"), Some("result"), "{}", show(iq));
    iq.get_child("query", DISCO_ITEMS)
        .unwrap()
        .children()
        .filter(|c| c.is("item", DISCO_ITEMS))
        .map(|i| (i.attr("jid").unwrap_or_default().to_string(), i.attr("name").map(str::to_string)))
        .collect()
}

/// The extended info form of a room (§6.4 Example 10), if any.
fn roominfo(iq: &Element) -> Option<Element> {
    iq.get_child("query", DISCO_INFO)
        .unwrap()
        .children()
        .find(|x| x.is("x", DATA) && value(x, "FORM_TYPE").as_deref() == Some(ROOMINFO))
        .cloned()
}

/// Features a room must and must not have.
pub(crate) fn assert_features(iq: &Element, with: &[&str], without: &[&str]) {
    let f = features(iq);
    for w in with {
        assert!(f.iter().any(|x| x == w), "missing feature {w} in {f:?}");
    }
    for w in without {
        assert!(!f.iter().any(|x| x == w), "unexpected feature {w} in {f:?}");
    }
}

/// An IQ set in the muc#admin namespace with these items.
pub(crate) async fn admin_set(c: &mut Client, name: &str, items: &str) -> Element {
    c.request(&format!("<iq type='set' id='{}' to='{}'><query xmlns='{MUC_ADMIN}'>{items}</query></iq>", next_id("admin"), room(name))).await
}

/// A muc#admin list request for the items matching `filter` (e.g. "affiliation='member'").
async fn admin_list(c: &mut Client, name: &str, filter: &str) -> Element {
    c.request(&format!("<iq type='get' id='{}' to='{}'><query xmlns='{MUC_ADMIN}'><item {filter}/></query></iq>", next_id("list"), room(name))).await
}

fn list_items(iq: &Element) -> Vec<Element> {
    assert_eq!(iq.attr("type"), Some("result"), "{}", show(iq));
    iq.get_child("query", MUC_ADMIN).unwrap().children().filter(|c| c.is("item", MUC_ADMIN)).cloned().collect()
}

/// The sorted JIDs of an affiliation list, each checked as §17.4 rule 6 says: the
/// affiliation asked for, a bare JID, no role.
fn affiliation_list(iq: &Element, affiliation: &str) -> Vec<String> {
    let mut jids = Vec::new();
    for i in list_items(iq) {
        assert_eq!(i.attr("affiliation"), Some(affiliation), "{}", show(iq));
        let jid = i.attr("jid").unwrap_or_else(|| panic!("§17.4 rule 6: a 'jid' on each item: {}", show(iq)));
        assert!(!jid.contains('/'), "§17.4 rule 6: bare JIDs in affiliation lists: {}", show(iq));
        jids.push(jid.to_string());
    }
    jids.sort();
    jids
}

/// One result of a room archive query.
pub(crate) struct Archived {
    pub(crate) id: String,
    pub(crate) message: Element,
}

/// Query the archive of a room (XEP-0313 §4, on the room's bare JID per §3.3.2) with an
/// optional RSM `set` (inner XML); the results and the final IQ. Each result must carry the
/// queryid, come from the room's bare JID to this client, and forward a message with a
/// delay stamp.
pub(crate) async fn room_archive(c: &mut Client, name: &str, set: &str) -> (Vec<Archived>, Element) {
    let id = next_id("mam");
    let queryid = format!("q-{id}");
    let set = if set.is_empty() { String::new() } else { format!("<set xmlns='{RSM}'>{set}</set>") };
    c.send(&format!("<iq type='set' id='{id}' to='{}'><query xmlns='{MAM}' queryid='{queryid}'>{set}</query></iq>", room(name))).await;
    let mut hits = Vec::new();
    let mut unrelated = Vec::new();
    loop {
        let el = c.next().await;
        if el.name() == "iq" && el.attr("id") == Some(id.as_str()) {
            for e in unrelated.into_iter().rev() {
                c.pending.push_front(e);
            }
            return (hits, el);
        }
        let Some(result) = el.get_child("result", MAM) else {
            unrelated.push(el);
            continue;
        };
        assert_eq!(result.attr("queryid"), Some(queryid.as_str()), "{}", show(&el));
        assert_eq!(el.attr("from"), Some(room(name).as_str()), "XEP-0313 Example: results come from the room: {}", show(&el));
        assert_eq!(el.attr("to"), Some(c.jid.as_str()), "{}", show(&el));
        let forwarded = result.get_child("forwarded", FORWARD).unwrap_or_else(|| panic!("no <forwarded/>: {}", show(&el)));
        assert!(forwarded.get_child("delay", DELAY).and_then(|d| d.attr("stamp")).is_some(), "{}", show(&el));
        let message = forwarded.get_child("message", CLIENT).unwrap_or_else(|| panic!("no message: {}", show(&el))).clone();
        hits.push(Archived { id: result.attr("id").unwrap_or_default().to_string(), message });
    }
}

fn fin(iq: &Element) -> &Element {
    assert_eq!(iq.attr("type"), Some("result"), "{}", show(iq));
    iq.get_child("fin", MAM).unwrap_or_else(|| panic!("no <fin/>: {}", show(iq)))
}

fn complete(iq: &Element) -> bool {
    fin(iq).attr("complete") == Some("true")
}

/// Stop a server and start it again on the same data (the pattern of mam::survives_restart).
pub(crate) async fn restart(s: TestServer) -> TestServer {
    let (config, dir) = (s.config.clone(), s.dir);
    s.server.unwrap().shutdown().await;
    TestServer { server: Some(starling::Server::start(config.clone()).await.unwrap()), config, dir }
}

// =======================================================================================
// 1. Service discovery

/// §6.1 (Examples 1-2): the server lists the MUC service among its items. §6.2 (Examples
/// 3-4): the service is a conference/text entity with the MUC feature; and per §7.4 it
/// SHOULD advertise muc#stable_id "on both the service domain and on individual MUCs".
/// §6.3 (Examples 5-6): its items are the public rooms, each with its name: not a hidden
/// room (muc#roomconfig_publicroom = 0), and not a room still locked, which "does not
/// (yet) exist" (§7.2.10).
async fn service_discovery(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "hag66", "wiccarocks"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    let mut wicca = online(&s, "wiccarocks", "laptop").await;

    let r = disco_items(&mut hag, "localhost").await;
    assert!(items(&r).iter().any(|(jid, _)| jid == SERVICE), "{}", show(&r));

    let r = disco_info(&mut hag, SERVICE).await;
    assert_eq!(r.attr("from"), Some(SERVICE));
    assert!(identities(&r).iter().any(|(cat, typ, _)| cat == "conference" && typ == "text"), "{}", show(&r));
    // XEP-0421 §4: occupant ids are on in every room, so the service says so too.
    assert_features(&r, &[MUC, STABLE_ID, OCCUPANT_ID], &[]);

    create(&mut crone, "heath", "firstwitch", &[("muc#roomconfig_roomname", "A Lonely Heath")]).await;
    create(&mut crone, "coven", "firstwitch", &[("muc#roomconfig_roomname", "A Dark Cave"), ("muc#roomconfig_publicroom", "0")]).await;
    create(&mut crone, "forres", "firstwitch", &[]).await;
    let locked = enter(&mut wicca, "inverness", "secondwitch", "").await;
    assert!(has_code(&locked.me, "201"), "{}", show(&locked.me));

    let r = disco_items(&mut hag, SERVICE).await;
    assert_eq!(r.attr("from"), Some(SERVICE));
    let got = items(&r);
    let mut jids: Vec<&str> = got.iter().map(|(j, _)| j.as_str()).collect();
    jids.sort();
    assert_eq!(jids, [room("forres"), room("heath")], "public rooms only: {}", show(&r));
    let heath = got.iter().find(|(j, _)| *j == room("heath")).unwrap();
    assert_eq!(heath.1.as_deref(), Some("A Lonely Heath"), "Example 6: the room's name: {}", show(&r));
    s.stop().await;
}

/// `[muc] subdomain = ""` disables the service: the server lists no conference service
/// (§6.1) and its address answers nothing but an error.
async fn service_can_be_disabled(b: Backend) {
    let s = TestServer::start_with(b, |c| c.muc.subdomain = String::new()).await;
    s.users(&["hag66"]).await;
    let mut hag = online(&s, "hag66", "pda").await;
    let r = disco_items(&mut hag, "localhost").await;
    assert!(!items(&r).iter().any(|(jid, _)| jid == SERVICE), "{}", show(&r));
    let r = disco_info(&mut hag, SERVICE).await;
    assert_eq!(r.attr("type"), Some("error"), "{}", show(&r));
    s.stop().await;
}

// =======================================================================================
// 2. Creating rooms

/// §10.1.1 (Examples 153-154): entering a room that does not exist creates it: the
/// self-presence says owner/moderator with 110 and 201, and nobody else is there. §7.2.10
/// (Example 31): until it is configured, others get item-not-found (cancel). §10.1.2
/// (Example 155): an empty submitted form unlocks it. Then others enter (no 201) and, no
/// subject having been set, get an empty <subject/> (§7.2.15, Example 41). The room's
/// disco#info (§6.4, Example 9) shows what a new room is by default: public, temporary,
/// open, unmoderated, unsecured, semi-anonymous; with the MUC, MAM (XEP-0313 §7), stanza-id
/// (XEP-0359 §5), stable-id (§7.4), occupant-id (XEP-0421 §2) and self-ping optimization
/// (XEP-0410 §3.3, Example 4: the room answers self-pings itself) features.
async fn instant_room(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "hag66"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut hag = online(&s, "hag66", "pda").await;

    crone.send(&join_presence("coven", "firstwitch", "")).await;
    let e = read_entry(&mut crone, "coven", "firstwitch").await;
    assert!(e.others.is_empty(), "a new room is empty");
    assert_eq!(e.me.attr("from"), Some(occupant("coven", "firstwitch").as_str()));
    assert!(has_code(&e.me, "110") && has_code(&e.me, "201"), "Example 154: {}", show(&e.me));
    assert_eq!(affiliation_role(&e.me), ar("owner", "moderator"));

    let err = refused(&mut hag, "coven", "thirdwitch", "").await;
    assert_error(&err, "item-not-found", Some("cancel"));
    nothing_from_room(&mut crone, "coven").await;

    let r = instant(&mut crone, "coven").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    assert_eq!(r.attr("from"), Some(room("coven").as_str()));
    crone.drain().await;

    let e = join(&mut hag, "coven", "thirdwitch").await;
    assert_eq!(e.other_nicks(), ["firstwitch"]);
    assert_eq!(affiliation_role(e.other("firstwitch")), ar("owner", "moderator"));
    assert!(has_code(&e.me, "110"));
    assert_eq!(affiliation_role(&e.me), ar("none", "participant"), "§5.1.2: an unaffiliated user enters an open room as participant");
    assert!(e.history.is_empty());
    assert_eq!(subject_text(e.subject.as_ref().unwrap()), "", "§7.2.15: no subject set: an empty <subject/>");
    let p = presence_from(&mut crone, &occupant("coven", "thirdwitch"), false).await;
    assert_eq!(affiliation_role(&p), ar("none", "participant"));
    assert!(!has_code(&p, "110"), "110 only in the self-presence: {}", show(&p));

    let info = disco_info(&mut hag, &room("coven")).await;
    assert_eq!(info.attr("from"), Some(room("coven").as_str()));
    assert!(identities(&info).iter().any(|(cat, typ, _)| cat == "conference" && typ == "text"), "{}", show(&info));
    assert_features(
        &info,
        &[MUC, MAM, SID, STABLE_ID, OCCUPANT_ID, SELF_PING_OPTIMIZATION, "muc_public", "muc_temporary", "muc_open", "muc_unmoderated", "muc_unsecured", "muc_semianonymous"],
        &["muc_hidden", "muc_persistent", "muc_membersonly", "muc_moderated", "muc_passwordprotected", "muc_nonanonymous"],
    );
    s.stop().await;
}

/// §10.1.3 (Examples 156-160): the owner of a new room asks for the configuration form
/// (the room stays locked meanwhile: §7.2.10) and submits it. The form is a
/// muc#roomconfig form (§16.5.3) with the fields of a new room's default configuration.
/// Afterwards the room's disco#info shows the configuration (§6.4 Examples 9-10: Example 9's
/// features are exactly those of Example 159's configuration), the form shows the current
/// values (§10.2 Example 165), and a non-owner asking for it gets forbidden (Example 164).
async fn reserved_room(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "hag66"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    let e = enter(&mut crone, "coven", "firstwitch", "").await;
    assert!(has_code(&e.me, "201"));

    let iq = get_config(&mut crone, "coven").await;
    assert_eq!(iq.attr("from"), Some(room("coven").as_str()));
    let form = config_form(&iq);
    assert_eq!(form.attr("type"), Some("form"), "{}", show(&form));
    let form_type = field(&form, "FORM_TYPE").expect("FORM_TYPE");
    assert_eq!(form_type.attr("type"), Some("hidden"));
    assert_eq!(value(&form, "FORM_TYPE").as_deref(), Some(ROOMCONFIG));
    for var in [
        "muc#roomconfig_roomname",
        "muc#roomconfig_roomdesc",
        "muc#roomconfig_lang",
        "muc#roomconfig_persistentroom",
        "muc#roomconfig_publicroom",
        "muc#roomconfig_membersonly",
        "muc#roomconfig_moderatedroom",
        "muc#roomconfig_passwordprotectedroom",
        "muc#roomconfig_roomsecret",
        "muc#roomconfig_maxusers",
        "muc#roomconfig_whois",
        "muc#roomconfig_allowinvites",
        "muc#roomconfig_changesubject",
        "muc#roomconfig_allowpm",
    ] {
        assert!(field(&form, var).is_some(), "no field {var} in {}", show(&form));
    }
    let archiving = ["muc#roomconfig_enablearchiving", "mam"].into_iter().find(|v| field(&form, v).is_some()).expect("an archiving field");
    let history = ["muc#roomconfig_historylength", "muc#maxhistoryfetch"].into_iter().find(|v| field(&form, v).is_some()).expect("a history field");
    // The default configuration of a new room.
    assert!(!boolean(&form, "muc#roomconfig_persistentroom"));
    assert!(boolean(&form, "muc#roomconfig_publicroom"));
    assert!(!boolean(&form, "muc#roomconfig_membersonly"));
    assert!(!boolean(&form, "muc#roomconfig_moderatedroom"));
    assert!(!boolean(&form, "muc#roomconfig_passwordprotectedroom"));
    assert!(!boolean(&form, "muc#roomconfig_changesubject"));
    assert!(boolean(&form, "muc#roomconfig_allowinvites"));
    assert!(boolean(&form, archiving));
    assert_eq!(value(&form, "muc#roomconfig_whois").as_deref(), Some("moderators"));
    assert_eq!(value(&form, "muc#roomconfig_allowpm").as_deref(), Some("anyone"));
    assert_eq!(value(&form, history).as_deref(), Some("20"), "[muc] history");

    // Still locked while the owner fills the form in.
    let err = refused(&mut hag, "coven", "thirdwitch", "").await;
    assert_error(&err, "item-not-found", Some("cancel"));

    let r = configure(
        &mut crone,
        "coven",
        &[
            ("muc#roomconfig_roomname", "A Dark Cave"),
            ("muc#roomconfig_roomdesc", "The place for all good witches!"),
            ("muc#roomconfig_changesubject", "1"),
            ("muc#roomconfig_allowpm", "anyone"),
            ("muc#roomconfig_publicroom", "0"),
            ("muc#roomconfig_persistentroom", "0"),
            ("muc#roomconfig_moderatedroom", "0"),
            ("muc#roomconfig_membersonly", "0"),
            ("muc#roomconfig_passwordprotectedroom", "1"),
            ("muc#roomconfig_roomsecret", "cauldronburn"),
            ("muc#roomconfig_whois", "anyone"),
        ],
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "Example 160: {}", show(&r));
    assert_eq!(r.attr("from"), Some(room("coven").as_str()));
    crone.drain().await;

    let info = disco_info(&mut hag, &room("coven")).await;
    let ids = identities(&info);
    assert!(ids.iter().any(|(c, t, n)| c == "conference" && t == "text" && n.as_deref() == Some("A Dark Cave")), "Example 9: {}", show(&info));
    assert_features(
        &info,
        &[MUC, "muc_passwordprotected", "muc_hidden", "muc_temporary", "muc_open", "muc_unmoderated", "muc_nonanonymous"],
        &["muc_unsecured", "muc_public", "muc_persistent", "muc_membersonly", "muc_moderated", "muc_semianonymous"],
    );
    let extended = roominfo(&info).unwrap_or_else(|| panic!("Example 10: a muc#roominfo form: {}", show(&info)));
    assert_eq!(value(&extended, "muc#roominfo_description").as_deref(), Some("The place for all good witches!"), "{}", show(&extended));

    // §10.2, Example 165: the form now holds the current values.
    let form = config_form(&get_config(&mut crone, "coven").await);
    assert_eq!(value(&form, "muc#roomconfig_roomname").as_deref(), Some("A Dark Cave"));
    assert_eq!(value(&form, "muc#roomconfig_roomdesc").as_deref(), Some("The place for all good witches!"));
    assert!(!boolean(&form, "muc#roomconfig_publicroom"));
    assert!(boolean(&form, "muc#roomconfig_passwordprotectedroom"));
    assert!(boolean(&form, "muc#roomconfig_changesubject"));
    assert_eq!(value(&form, "muc#roomconfig_whois").as_deref(), Some("anyone"));

    // Example 164.
    let r = get_config(&mut hag, "coven").await;
    assert_error(&r, "forbidden", Some("auth"));
    s.stop().await;
}

/// §10.1.3 (Example 162 and the paragraphs after it): an owner who cancels the initial
/// configuration gets unavailable presence and the room is destroyed; so is a room whose
/// owner goes away before configuring it. Either way the next user to enter creates a new
/// room (201, owner).
async fn cancel_or_leave_before_configuring(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "hag66", "wiccarocks"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut hag = online(&s, "hag66", "pda").await;

    let e = enter(&mut crone, "coven", "firstwitch", "").await;
    assert!(has_code(&e.me, "201"));
    let r = crone
        .request(&format!(
            "<iq type='set' id='cancel1' to='{}'><query xmlns='{MUC_OWNER}'><x xmlns='{DATA}' type='cancel'/></query></iq>",
            room("coven")
        ))
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    presence_from(&mut crone, &occupant("coven", "firstwitch"), true).await;
    enter_new_room(&mut hag, "coven", "thirdwitch").await;

    let mut wicca = online(&s, "wiccarocks", "laptop").await;
    let e = enter(&mut wicca, "heath", "secondwitch", "").await;
    assert!(has_code(&e.me, "201"));
    drop(wicca);
    // The creator's session ended: the unconfigured room is destroyed.
    enter_new_room(&mut crone, "heath", "firstwitch").await;
    s.stop().await;
}

/// §10.1.1 (Example 152): with room creation restricted (`[muc] create = "admins"`), a
/// user who may not create gets not-allowed (cancel) and no room comes to exist; a server
/// admin (`admins`) creates it, and then others enter (§7.2.11: only creating is
/// restricted).
async fn creation_restricted(b: Backend) {
    let s = TestServer::start_with(b, |c| {
        c.muc.create = starling::config::RoomCreation::Admins;
        c.admins = vec![jid::BareJid::new("root@localhost").unwrap()];
    })
    .await;
    s.users(&["root", "hag66"]).await;
    let mut hag = online(&s, "hag66", "pda").await;
    let mut root = online(&s, "root", "console").await;
    let err = refused(&mut hag, "coven", "thirdwitch", "").await;
    assert_error(&err, "not-allowed", Some("cancel"));
    nothing_from_room(&mut hag, "coven").await;
    create(&mut root, "coven", "firstwitch", &[]).await;
    let e = join(&mut hag, "coven", "thirdwitch").await;
    assert_eq!(affiliation_role(&e.me), ar("none", "participant"));
    s.stop().await;
}

// =======================================================================================
// 3. Entering

/// §7.1 and §7.2.2 (Examples 20-21): the new occupant gets the presence of each occupant
/// already there (role and affiliation, no 110), then its own presence with 110; then the
/// discussion history (§7.2.13, Example 33: oldest first, each with a <delay/> from the room
/// JID), then the subject (§7.2.15, Example 40: a message with <subject/> and no <body/>, from
/// the room or the occupant who set it), and nothing more. The others get the newcomer's
/// presence. The subject is not part of the history.
async fn entering_order(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "wiccarocks", "hag66"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut wicca = online(&s, "wiccarocks", "laptop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    create(&mut crone, "coven", "firstwitch", &[]).await;
    join(&mut wicca, "coven", "secondwitch").await;
    set_subject(&mut crone, "coven", "Fire Burn and Cauldron Bubble!").await;
    subject_from_room(&mut wicca, "coven").await;
    say(&mut crone, "coven", "Thrice the brinded cat hath mew'd.").await;
    say(&mut wicca, "coven", "Thrice and once the hedge-pig whined.").await;
    say(&mut crone, "coven", "Harpier cries 'Tis time, 'tis time.").await;
    crone.drain().await;
    wicca.drain().await;

    let e = join(&mut hag, "coven", "thirdwitch").await;
    assert_eq!(e.other_nicks(), ["firstwitch", "secondwitch"]);
    assert_eq!(affiliation_role(e.other("firstwitch")), ar("owner", "moderator"));
    assert_eq!(affiliation_role(e.other("secondwitch")), ar("none", "participant"));
    for p in &e.others {
        assert!(!has_code(p, "110"), "{}", show(p));
    }
    assert_eq!(e.me.attr("from"), Some(occupant("coven", "thirdwitch").as_str()));
    assert!(has_code(&e.me, "110"));
    assert!(!has_code(&e.me, "201"));
    assert!(!has_code(&e.me, "100"), "a semi-anonymous room: {}", show(&e.me));
    assert_eq!(
        e.history_bodies(),
        ["Thrice the brinded cat hath mew'd.", "Thrice and once the hedge-pig whined.", "Harpier cries 'Tis time, 'tis time."]
    );
    let senders: Vec<String> = e.history.iter().map(nick_of).collect();
    assert_eq!(senders, ["firstwitch", "secondwitch", "firstwitch"]);
    let subject = e.subject.as_ref().unwrap();
    assert_eq!(subject_text(subject), "Fire Burn and Cauldron Bubble!");
    let from = subject.attr("from").unwrap();
    assert!(from == room("coven") || from == occupant("coven", "firstwitch"), "Example 40: {}", show(subject));
    if let Some(delay) = subject.get_child("delay", DELAY) {
        assert_eq!(delay.attr("from"), Some(room("coven").as_str()), "§7.2.15: the delay is from the room: {}", show(subject));
    }
    nothing_from_room(&mut hag, "coven").await;

    let p = presence_from(&mut crone, &occupant("coven", "thirdwitch"), false).await;
    assert_eq!(affiliation_role(&p), ar("none", "participant"));
    assert!(!has_code(&p, "110"));
    let p = presence_from(&mut wicca, &occupant("coven", "thirdwitch"), false).await;
    assert!(!has_code(&p, "110"));
    s.stop().await;
}

/// §7.2.13 and §7.2.14 (Examples 36, 39): the room sends at most its history length
/// (`[muc] history`, here 3) and, within it, "the smallest amount of traffic that meets any
/// combination of the above criteria": maxstanzas='2' gives the last two, maxstanzas='10'
/// still three, maxstanzas='0' and maxchars='0' none, 'since' a future date none. Private
/// messages (§7.5) are no part of the history.
async fn history_limits(b: Backend) {
    let s = TestServer::start_with(b, |c| c.muc.history = 3).await;
    let hags = ["hag1", "hag2", "hag3", "hag4", "hag5", "hag6"];
    s.users(&["crone1", "hecate"]).await;
    s.users(&hags).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut hecate = online(&s, "hecate", "broom").await;
    create(&mut crone, "coven", "firstwitch", &[]).await;
    join(&mut hecate, "coven", "hecate").await;
    for i in 1..=5 {
        say(&mut crone, "coven", &format!("m{i}")).await;
    }
    hecate.send(&format!("<message to='{}' type='chat' id='pm1'><body>a private word</body></message>", occupant("coven", "firstwitch"))).await;
    crone.expect("the private message", |e| e.name() == "message" && e.attr("id") == Some("pm1")).await;

    let cases: [(&str, &[&str]); 6] = [
        ("", &["m3", "m4", "m5"]),
        ("<history maxstanzas='2'/>", &["m4", "m5"]),
        ("<history maxstanzas='10'/>", &["m3", "m4", "m5"]),
        ("<history maxstanzas='0'/>", &[]),
        ("<history maxchars='0'/>", &[]),
        ("<history since='2999-01-01T00:00:00Z'/>", &[]),
    ];
    for (user, (history, want)) in hags.iter().zip(cases) {
        let mut c = online(&s, user, "r").await;
        let e = enter(&mut c, "coven", user, history).await;
        assert!(!has_code(&e.me, "201"));
        assert_eq!(e.history_bodies(), want, "history with {history:?}");
        assert!(e.subject.is_some(), "§7.2.15: the subject follows the history");
    }
    s.stop().await;
}

/// §7.2.8 (Example 29): a nick in use by another user is refused with conflict (cancel),
/// from the occupant JID; the occupant keeps it, the others see nothing, and the refused
/// user can then enter under another nick.
async fn nick_conflict(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "hag66", "wiccarocks"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    let mut wicca = online(&s, "wiccarocks", "laptop").await;
    create(&mut crone, "coven", "firstwitch", &[]).await;
    join(&mut hag, "coven", "thirdwitch").await;
    crone.drain().await;

    let err = refused(&mut wicca, "coven", "thirdwitch", "").await;
    assert_error(&err, "conflict", Some("cancel"));
    nothing_from_room(&mut crone, "coven").await;
    nothing_from_room(&mut hag, "coven").await;
    let m = say(&mut hag, "coven", "still me").await;
    assert_eq!(m.attr("from"), Some(occupant("coven", "thirdwitch").as_str()));
    let e = join(&mut wicca, "coven", "secondwitch").await;
    assert_eq!(e.other_nicks(), ["firstwitch", "thirdwitch"]);
    s.stop().await;
}

/// §7.2.5 (Examples 25-26): a password-protected room refuses entry without the password
/// or with a wrong one (not-authorized, auth) and admits with the right one, given in
/// <x xmlns='…muc'><password/></x>.
async fn password_protected(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "hag66"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    create(&mut crone, "coven", "firstwitch", &[("muc#roomconfig_passwordprotectedroom", "1"), ("muc#roomconfig_roomsecret", "cauldronburn")]).await;
    let info = disco_info(&mut hag, &room("coven")).await;
    assert_features(&info, &["muc_passwordprotected"], &["muc_unsecured"]);

    let err = refused(&mut hag, "coven", "thirdwitch", "").await;
    assert_error(&err, "not-authorized", Some("auth"));
    let err = refused(&mut hag, "coven", "thirdwitch", "<password>toil and trouble</password>").await;
    assert_error(&err, "not-authorized", Some("auth"));
    nothing_from_room(&mut crone, "coven").await;

    let e = enter(&mut hag, "coven", "thirdwitch", "<password>cauldronburn</password>").await;
    assert!(!has_code(&e.me, "201"));
    assert_eq!(affiliation_role(&e.me), ar("none", "participant"));
    presence_from(&mut crone, &occupant("coven", "thirdwitch"), false).await;
    s.stop().await;
}

/// §7.2.6 (Example 27): a members-only room refuses a user not on the member list with
/// registration-required (auth). §9.3 (Examples 120-122): an admin grants membership (with
/// a reserved nick); the member enters as participant (§5.1.2). §9.5 (Examples 129-132): the
/// member list holds bare JIDs and is changed by deltas. §9.4 (Example 128): a member who
/// loses membership while in a members-only room is removed with status 321 (and 110 for
/// them), and is refused afterwards. XEP-0313 §6.1.2: in a members-only room only owners,
/// admins and members may query the archive.
async fn members_only(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "hag66", "hecate"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    let mut hecate = online(&s, "hecate", "broom").await;
    create(&mut crone, "coven", "firstwitch", &[("muc#roomconfig_membersonly", "1")]).await;
    let info = disco_info(&mut hag, &room("coven")).await;
    assert_features(&info, &["muc_membersonly"], &["muc_open"]);

    let err = refused(&mut hag, "coven", "thirdwitch", "").await;
    assert_error(&err, "registration-required", Some("auth"));

    let r = admin_set(&mut crone, "coven", "<item affiliation='member' jid='hag66@localhost' nick='thirdwitch'><reason>A worthy witch indeed!</reason></item>").await;
    assert_eq!(r.attr("type"), Some("result"), "Example 122: {}", show(&r));
    let e = join(&mut hag, "coven", "thirdwitch").await;
    assert_eq!(affiliation_role(&e.me), ar("member", "participant"));
    let p = presence_from(&mut crone, &occupant("coven", "thirdwitch"), false).await;
    assert_eq!(affiliation_role(&p), ar("member", "participant"));
    say(&mut crone, "coven", "for members").await;
    crone.drain().await;
    hag.drain().await;

    let list = admin_list(&mut crone, "coven", "affiliation='member'").await;
    assert_eq!(affiliation_list(&list, "member"), ["hag66@localhost"]);

    // The archive: a member may query it, a non-member may not.
    let (hits, iq) = room_archive(&mut hag, "coven", "").await;
    assert_eq!(iq.attr("type"), Some("result"), "{}", show(&iq));
    assert_eq!(hits.iter().map(|h| body(&h.message).unwrap_or_default()).collect::<Vec<_>>(), ["for members"]);
    let (hits, iq) = room_archive(&mut hecate, "coven", "").await;
    assert_eq!(iq.attr("type"), Some("error"), "XEP-0313 §6.1.2: {}", show(&iq));
    assert!(hits.is_empty());

    // Example 131: a delta.
    let r = admin_set(&mut crone, "coven", "<item affiliation='none' jid='hag66@localhost'/><item affiliation='member' jid='hecate@localhost'/>").await;
    assert_eq!(r.attr("type"), Some("result"), "Example 132: {}", show(&r));
    let p = presence_from(&mut hag, &occupant("coven", "thirdwitch"), true).await;
    assert!(has_code(&p, "321") && has_code(&p, "110"), "Example 128: {}", show(&p));
    assert_eq!(affiliation_role(&p), ar("none", "none"));
    let p = presence_from(&mut crone, &occupant("coven", "thirdwitch"), true).await;
    assert!(has_code(&p, "321") && !has_code(&p, "110"), "{}", show(&p));
    let list = admin_list(&mut crone, "coven", "affiliation='member'").await;
    assert_eq!(affiliation_list(&list, "member"), ["hecate@localhost"]);
    let err = refused(&mut hag, "coven", "thirdwitch", "").await;
    assert_error(&err, "registration-required", Some("auth"));
    let e = join(&mut hecate, "coven", "hecate").await;
    assert_eq!(affiliation_role(&e.me), ar("member", "participant"));
    s.stop().await;
}

/// §7.2.9 (Example 30): a full room refuses with service-unavailable (wait); `[muc]
/// max_occupants` is 2 here. "If the room has reached its maximum number of occupants and a
/// room admin or owner attempts to join, the room MUST allow the admin or owner to join."
async fn max_users(b: Backend) {
    let s = TestServer::start_with(b, |c| c.muc.max_occupants = 2).await;
    s.users(&["crone1", "hag66", "wiccarocks"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    let mut wicca = online(&s, "wiccarocks", "laptop").await;
    create(&mut crone, "coven", "firstwitch", &[]).await;
    join(&mut hag, "coven", "thirdwitch").await;
    let err = refused(&mut wicca, "coven", "secondwitch", "").await;
    assert_error(&err, "service-unavailable", Some("wait"));
    nothing_from_room(&mut hag, "coven").await;

    leave(&mut crone, "coven", "firstwitch").await;
    join(&mut wicca, "coven", "secondwitch").await;
    // Full again; the owner still gets in.
    let e = join(&mut crone, "coven", "firstwitch").await;
    assert_eq!(e.other_nicks(), ["secondwitch", "thirdwitch"]);
    assert_eq!(affiliation_role(&e.me), ar("owner", "moderator"));
    s.stop().await;
}

/// §7.2.4: in a semi-anonymous room (the default, whois = moderators) presence carries the
/// occupant's full JID only to moderators: every presence a participant gets (on entering,
/// on others entering, on status changes, and messages) hides the real JIDs of the others,
/// while the moderator gets them. Someone who becomes a moderator (by role, §9.6) gets them
/// from then on. The self-presence has no status 100 (§7.2.3 is for non-anonymous rooms);
/// a JID in one's own self-presence is one's own.
async fn semi_anonymous_jids(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "wiccarocks", "hag66"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut wicca = online(&s, "wiccarocks", "laptop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    create(&mut crone, "coven", "firstwitch", &[]).await;

    let e = join(&mut wicca, "coven", "secondwitch").await;
    assert_eq!(real_jid(e.other("firstwitch")), None, "a participant does not see the owner's JID: {}", show(e.other("firstwitch")));
    assert_hides(e.other("firstwitch"), &["crone1@localhost"]);
    assert!(!has_code(&e.me, "100"));
    if let Some(own) = real_jid(&e.me) {
        assert_eq!(own, wicca.jid, "{}", show(&e.me));
    }
    let p = presence_from(&mut crone, &occupant("coven", "secondwitch"), false).await;
    assert_eq!(real_jid(&p).as_deref(), Some(wicca.jid.as_str()), "the moderator sees the full JID: {}", show(&p));

    let e = join(&mut hag, "coven", "thirdwitch").await;
    for other in &e.others {
        assert_eq!(real_jid(other), None, "{}", show(other));
        assert_hides(other, &["crone1@localhost", "wiccarocks@localhost"]);
    }
    let p = presence_from(&mut crone, &occupant("coven", "thirdwitch"), false).await;
    assert_eq!(real_jid(&p).as_deref(), Some(hag.jid.as_str()), "{}", show(&p));
    let p = presence_from(&mut wicca, &occupant("coven", "thirdwitch"), false).await;
    assert_eq!(real_jid(&p), None, "{}", show(&p));
    assert_hides(&p, &["hag66@localhost"]);

    say(&mut wicca, "coven", "Who is there?").await;
    let m = groupchat_from(&mut hag, &occupant("coven", "secondwitch")).await;
    assert_hides(&m, &["wiccarocks@localhost", "crone1@localhost"]);

    // A moderator by role (§9.6, Example 137) gets the JIDs of later presence.
    let r = admin_set(&mut crone, "coven", "<item nick='secondwitch' role='moderator'/>").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let p = presence_from(&mut wicca, &occupant("coven", "secondwitch"), false).await;
    assert_eq!(affiliation_role(&p), ar("none", "moderator"));
    let p = presence_from(&mut hag, &occupant("coven", "secondwitch"), false).await;
    assert_eq!(affiliation_role(&p), ar("none", "moderator"));
    assert_hides(&p, &["wiccarocks@localhost"]);
    hag.send(&format!("<presence to='{}'><show>away</show></presence>", occupant("coven", "thirdwitch"))).await;
    let p = presence_from(&mut wicca, &occupant("coven", "thirdwitch"), false).await;
    assert_eq!(real_jid(&p).as_deref(), Some(hag.jid.as_str()), "now a moderator: {}", show(&p));
    s.stop().await;
}

/// §7.2.3 (Examples 23-24): in a non-anonymous room (whois = anyone) everyone gets every
/// occupant's full JID and the self-presence carries 100 with 110. §10.2.1 (Example 171):
/// changing whois notifies the occupants with a message from the room: 173 when the room
/// becomes semi-anonymous, 172 when it becomes non-anonymous.
async fn non_anonymous_room(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "wiccarocks", "hag66"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut wicca = online(&s, "wiccarocks", "laptop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    create(&mut crone, "coven", "firstwitch", &[("muc#roomconfig_whois", "anyone")]).await;
    let info = disco_info(&mut hag, &room("coven")).await;
    assert_features(&info, &["muc_nonanonymous"], &["muc_semianonymous"]);

    let e = join(&mut wicca, "coven", "secondwitch").await;
    assert!(has_code(&e.me, "100") && has_code(&e.me, "110"), "Example 24: {}", show(&e.me));
    assert_eq!(real_jid(e.other("firstwitch")).as_deref(), Some(crone.jid.as_str()));
    let p = presence_from(&mut crone, &occupant("coven", "secondwitch"), false).await;
    assert_eq!(real_jid(&p).as_deref(), Some(wicca.jid.as_str()));

    let e = join(&mut hag, "coven", "thirdwitch").await;
    assert!(has_code(&e.me, "100"));
    assert_eq!(real_jid(e.other("firstwitch")).as_deref(), Some(crone.jid.as_str()));
    assert_eq!(real_jid(e.other("secondwitch")).as_deref(), Some(wicca.jid.as_str()));
    let p = presence_from(&mut wicca, &occupant("coven", "thirdwitch"), false).await;
    assert_eq!(real_jid(&p).as_deref(), Some(hag.jid.as_str()), "Example 23: {}", show(&p));
    crone.drain().await;

    for (whois, code) in [("moderators", "173"), ("anyone", "172")] {
        let r = configure(&mut crone, "coven", &[("muc#roomconfig_whois", whois)]).await;
        assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
        for c in [&mut wicca, &mut hag] {
            let r = room("coven");
            let m = c.expect(&format!("status {code}"), |e| e.name() == "message" && e.attr("from") == Some(r.as_str()) && has_code(e, code)).await;
            assert_eq!(m.attr("type"), Some("groupchat"), "Example 171: {}", show(&m));
        }
        crone.drain().await;
    }
    s.stop().await;
}

/// §7.2.1 and §17.3 rule 3: a join presence from a full JID already in the room is a
/// resynchronization: the client gets everything of an entry again (the others, the
/// self-presence with 110, the history, the subject).
async fn rejoin_resynchronizes(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "hag66"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    create(&mut crone, "coven", "firstwitch", &[]).await;
    set_subject(&mut crone, "coven", "Spells").await;
    say(&mut crone, "coven", "one").await;
    let first = join(&mut hag, "coven", "thirdwitch").await;
    hag.drain().await;

    let again = join(&mut hag, "coven", "thirdwitch").await;
    assert_eq!(again.other_nicks(), first.other_nicks());
    assert_eq!(again.other_nicks(), ["firstwitch"]);
    assert!(has_code(&again.me, "110"));
    assert_eq!(affiliation_role(&again.me), ar("none", "participant"));
    assert_eq!(again.history_bodies(), ["one"]);
    assert_eq!(subject_text(again.subject.as_ref().unwrap()), "Spells");
    // Still one occupant: a message is received once.
    crone.drain().await;
    say(&mut crone, "coven", "two").await;
    groupchat_from(&mut hag, &occupant("coven", "firstwitch")).await;
    nothing_from_room(&mut hag, "coven").await;
    s.stop().await;
}

// =======================================================================================
// 4. Occupant changes

/// §7.6 (Examples 49-50): a nick change is presence to the new occupant JID. Every occupant,
/// the changer included, gets unavailable from the old occupant JID with status 303 and the
/// new nick in the item, then available from the new occupant JID; the changer's two carry
/// 110. The moderator sees the real JID in both, a participant in neither (§7.2.4).
/// Example 52: a nick in use by someone else is refused with conflict and nothing changes.
async fn nick_change(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "wiccarocks", "hag66"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut wicca = online(&s, "wiccarocks", "laptop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    create(&mut crone, "coven", "firstwitch", &[]).await;
    join(&mut wicca, "coven", "secondwitch").await;
    join(&mut hag, "coven", "thirdwitch").await;
    for c in [&mut crone, &mut wicca, &mut hag] {
        c.drain().await;
    }
    let hag_jid = hag.jid.clone();

    hag.send(&format!("<presence to='{}'/>", occupant("coven", "oldhag"))).await;
    for (c, is_self, moderator) in [(&mut hag, true, false), (&mut crone, false, true), (&mut wicca, false, false)] {
        let gone = next_from_room(c, "coven").await;
        assert_eq!(gone.name(), "presence", "{}", show(&gone));
        assert_eq!(gone.attr("type"), Some("unavailable"), "the unavailable comes first: {}", show(&gone));
        assert_eq!(gone.attr("from"), Some(occupant("coven", "thirdwitch").as_str()));
        check_presence(&gone);
        assert!(has_code(&gone, "303"), "{}", show(&gone));
        assert_eq!(has_code(&gone, "110"), is_self, "{}", show(&gone));
        assert_eq!(item(&gone).attr("nick"), Some("oldhag"), "{}", show(&gone));
        let back = next_from_room(c, "coven").await;
        assert_eq!(back.name(), "presence", "{}", show(&back));
        assert_eq!(back.attr("type"), None, "{}", show(&back));
        assert_eq!(back.attr("from"), Some(occupant("coven", "oldhag").as_str()));
        check_presence(&back);
        assert_eq!(has_code(&back, "110"), is_self, "{}", show(&back));
        assert_eq!(affiliation_role(&back), ar("none", "participant"));
        if moderator {
            assert_eq!(real_jid(&gone).as_deref(), Some(hag_jid.as_str()));
            assert_eq!(real_jid(&back).as_deref(), Some(hag_jid.as_str()));
        } else if !is_self {
            assert_hides(&gone, &["hag66@localhost"]);
            assert_hides(&back, &["hag66@localhost"]);
        }
        assert_eq!(occupant_id(&gone), occupant_id(&back), "one occupant");
    }
    let m = say(&mut hag, "coven", "renamed").await;
    assert_eq!(m.attr("from"), Some(occupant("coven", "oldhag").as_str()));
    crone.drain().await;
    wicca.drain().await;

    // Example 52.
    hag.send(&format!("<presence to='{}' id='nick2'/>", occupant("coven", "firstwitch"))).await;
    let err = error_for(&mut hag, "presence", "nick2").await;
    assert_error(&err, "conflict", Some("cancel"));
    nothing_from_room(&mut crone, "coven").await;
    nothing_from_room(&mut wicca, "coven").await;
    let m = say(&mut hag, "coven", "same name").await;
    assert_eq!(m.attr("from"), Some(occupant("coven", "oldhag").as_str()));
    s.stop().await;
}

/// §7.7 (Examples 54-55): presence sent to one's occupant JID is passed to every occupant
/// with its <show/> and <status/> and the muc#user item (the real JID for the moderator
/// only, §7.2.4); the occupant's own copy has 110 (status 110, §16.6.2: "any room presence"
/// about oneself).
async fn availability_change(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "wiccarocks", "hag66"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut wicca = online(&s, "wiccarocks", "laptop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    create(&mut crone, "coven", "firstwitch", &[]).await;
    join(&mut wicca, "coven", "secondwitch").await;
    join(&mut hag, "coven", "thirdwitch").await;
    for c in [&mut crone, &mut wicca, &mut hag] {
        c.drain().await;
    }
    wicca.send(&format!("<presence to='{}'><show>xa</show><status>gone where the goblins go</status></presence>", occupant("coven", "secondwitch"))).await;
    let wicca_jid = wicca.jid.clone();
    for (c, is_self, moderator) in [(&mut wicca, true, false), (&mut crone, false, true), (&mut hag, false, false)] {
        let p = presence_from(c, &occupant("coven", "secondwitch"), false).await;
        assert_eq!(p.get_child("show", CLIENT).map(|e| e.text()).as_deref(), Some("xa"), "{}", show(&p));
        assert_eq!(p.get_child("status", CLIENT).map(|e| e.text()).as_deref(), Some("gone where the goblins go"));
        assert_eq!(affiliation_role(&p), ar("none", "participant"));
        assert_eq!(has_code(&p, "110"), is_self, "{}", show(&p));
        if moderator {
            assert_eq!(real_jid(&p).as_deref(), Some(wicca_jid.as_str()), "Example 55: {}", show(&p));
        } else if !is_self {
            assert_hides(&p, &["wiccarocks@localhost"]);
        }
    }
    s.stop().await;
}

/// §7.14 (Examples 80-83): an occupant leaves with unavailable presence (with a custom
/// status); it gets unavailable with 110, the others unavailable without, with role none and
/// the status text. It then gets nothing from the room, and its messages are refused as a
/// non-occupant's (§7.4). §17.3 rule 5: unavailable presence from someone with role none is
/// ignored silently.
async fn exit(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "wiccarocks"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut wicca = online(&s, "wiccarocks", "laptop").await;
    create(&mut crone, "coven", "firstwitch", &[]).await;
    join(&mut wicca, "coven", "oldhag").await;
    crone.drain().await;

    wicca.send(&format!("<presence to='{}' type='unavailable'><status>gone where the goblins go</status></presence>", occupant("coven", "oldhag"))).await;
    let p = presence_from(&mut wicca, &occupant("coven", "oldhag"), true).await;
    assert!(has_code(&p, "110"), "Example 81: {}", show(&p));
    assert_eq!(affiliation_role(&p), ar("none", "none"));
    let p = presence_from(&mut crone, &occupant("coven", "oldhag"), true).await;
    assert!(!has_code(&p, "110"), "Example 82: {}", show(&p));
    assert_eq!(affiliation_role(&p), ar("none", "none"));
    assert_eq!(p.get_child("status", CLIENT).map(|e| e.text()).as_deref(), Some("gone where the goblins go"), "Example 83: {}", show(&p));

    say(&mut crone, "coven", "is she gone?").await;
    nothing_from_room(&mut wicca, "coven").await;
    let id = send_groupchat(&mut wicca, "coven", "not quite").await;
    let err = error_for(&mut wicca, "message", &id).await;
    assert_error(&err, "not-acceptable", None);
    wicca.send(&format!("<presence to='{}' type='unavailable'/>", occupant("coven", "oldhag"))).await;
    nothing_from_room(&mut wicca, "coven").await;
    nothing_from_room(&mut crone, "coven").await;
    s.stop().await;
}

/// §7.14: "If the user goes offline without sending unavailable presence, the user's
/// server is responsible for sending unavailable presence on behalf of the user" (RFC 6121
/// §4.5, §4.6): an occupant whose stream is closed, or whose connection just drops, leaves the
/// room: the others get unavailable with role none.
async fn disconnect_leaves(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "wiccarocks", "hag66"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut wicca = online(&s, "wiccarocks", "laptop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    create(&mut crone, "coven", "firstwitch", &[]).await;
    join(&mut wicca, "coven", "secondwitch").await;
    join(&mut hag, "coven", "thirdwitch").await;
    crone.drain().await;

    wicca.close().await;
    let p = presence_from(&mut crone, &occupant("coven", "secondwitch"), true).await;
    assert_eq!(affiliation_role(&p), ar("none", "none"));
    drop(hag);
    let p = presence_from(&mut crone, &occupant("coven", "thirdwitch"), true).await;
    assert_eq!(affiliation_role(&p), ar("none", "none"));
    // They are gone: a new entrant sees only the owner.
    s.users(&["hecate"]).await;
    let mut hecate = online(&s, "hecate", "broom").await;
    let e = join(&mut hecate, "coven", "hecate").await;
    assert_eq!(e.other_nicks(), ["firstwitch"]);
    s.stop().await;
}

// =======================================================================================
// 5. Messages

/// §7.4 (Examples 44-45): a groupchat message is reflected to every occupant, the sender
/// included, from the sender's occupant JID to each full JID, with the sender's 'id' (what
/// muc#stable_id promises). XEP-0359 §2.1 and XEP-0313 §3.5: each copy has one stanza-id by
/// the room's bare JID, the same in every copy. XEP-0421 §3.2: each has the sender's
/// occupant-id, the one of its presence.
async fn groupchat_message(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "wiccarocks", "hag66"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut wicca = online(&s, "wiccarocks", "laptop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    create(&mut crone, "coven", "firstwitch", &[]).await;
    join(&mut wicca, "coven", "secondwitch").await;
    join(&mut hag, "coven", "thirdwitch").await;
    let hag_presence = presence_from(&mut crone, &occupant("coven", "thirdwitch"), false).await;
    for c in [&mut crone, &mut wicca, &mut hag] {
        c.drain().await;
    }

    hag.send(&format!("<message to='{}' type='groupchat' id='hysf1v37'><body>Harpier cries: 'tis time, 'tis time.</body></message>", room("coven"))).await;
    let mut sids = Vec::new();
    for c in [&mut crone, &mut wicca, &mut hag] {
        let m = groupchat_from(c, &occupant("coven", "thirdwitch")).await;
        assert_eq!(m.attr("id"), Some("hysf1v37"), "§7.4: the client's id is kept: {}", show(&m));
        assert_eq!(body(&m).as_deref(), Some("Harpier cries: 'tis time, 'tis time."));
        sids.push(room_stanza_id(&m, "coven"));
        assert_eq!(occupant_id(&m), occupant_id(&hag_presence), "XEP-0421: the sender's occupant id");
    }
    assert!(sids.iter().all(|id| *id == sids[0]), "one message, one stanza id: {sids:?}");
    for c in [&mut crone, &mut wicca, &mut hag] {
        nothing_from_room(c, "coven").await;
    }
    s.stop().await;
}

/// XEP-0359 §3 rule 2: the room removes a stanza-id claiming to be by the room that a
/// client put in its message (and adds its own); §2.2: an origin-id is kept. XEP-0421 §4: an
/// occupant-id sent by the client is replaced with the real one.
async fn forged_ids_are_replaced(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "hag66"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    create(&mut crone, "coven", "firstwitch", &[]).await;
    join(&mut hag, "coven", "thirdwitch").await;
    let real = occupant_id(&presence_from(&mut crone, &occupant("coven", "thirdwitch"), false).await);
    crone.drain().await;

    hag.send(&format!(
        "<message to='{}' type='groupchat' id='forge1'><body>believe me</body>\
         <stanza-id xmlns='{SID}' by='{}' id='forged-stanza-id'/>\
         <origin-id xmlns='{SID}' id='de305d54-75b4-431b-adb2-eb6b9e546013'/>\
         <occupant-id xmlns='{OCCUPANT_ID}' id='forged-occupant-id'/></message>",
        room("coven"),
        room("coven")
    ))
    .await;
    for c in [&mut crone, &mut hag] {
        let m = groupchat_from(c, &occupant("coven", "thirdwitch")).await;
        let sid = room_stanza_id(&m, "coven");
        assert_ne!(sid, "forged-stanza-id", "{}", show(&m));
        let origin: Vec<&str> = m.children().filter(|e| e.is("origin-id", SID)).filter_map(|e| e.attr("id")).collect();
        assert_eq!(origin, ["de305d54-75b4-431b-adb2-eb6b9e546013"], "XEP-0359 §2.2: {}", show(&m));
        assert_eq!(occupant_id(&m), real, "{}", show(&m));
    }
    s.stop().await;
}

/// §7.4: a groupchat message from someone not in the room gets not-acceptable and is not
/// reflected; §7.5: so does a private message from a non-occupant (MUST). §17.2 rule 3: a
/// message to a room that does not exist gets item-not-found.
async fn non_occupant_messages(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "hag66", "hecate"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    let mut hecate = online(&s, "hecate", "broom").await;
    create(&mut crone, "coven", "firstwitch", &[]).await;
    join(&mut hag, "coven", "thirdwitch").await;
    crone.drain().await;

    let id = send_groupchat(&mut hecate, "coven", "let me in").await;
    let err = error_for(&mut hecate, "message", &id).await;
    assert_error(&err, "not-acceptable", None);
    assert_eq!(err.attr("from"), Some(room("coven").as_str()), "{}", show(&err));
    hecate.send(&format!("<message to='{}' type='chat' id='pm-out'><body>psst</body></message>", occupant("coven", "thirdwitch"))).await;
    let err = error_for(&mut hecate, "message", "pm-out").await;
    assert_error(&err, "not-acceptable", None);
    nothing_from_room(&mut crone, "coven").await;
    nothing_from_room(&mut hag, "coven").await;

    let id = send_groupchat(&mut hecate, "nowhere", "anyone?").await;
    let err = error_for(&mut hecate, "message", &id).await;
    assert_error(&err, "item-not-found", None);
    s.stop().await;
}

/// §7.5 (Examples 46-48): a private message to an occupant JID is delivered to that
/// occupant's full JID from the sender's occupant JID, with the client's id and an
/// <x xmlns='…muc#user'/> (added by the room when missing); it does not reveal the sender's
/// real JID to a non-moderator (§7.2.4). To a nick not in the room: item-not-found (MUST);
/// of type groupchat: bad-request (modify), not delivered.
async fn private_messages(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "wiccarocks", "hag66"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut wicca = online(&s, "wiccarocks", "laptop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    create(&mut crone, "coven", "firstwitch", &[]).await;
    join(&mut wicca, "coven", "secondwitch").await;
    join(&mut hag, "coven", "thirdwitch").await;
    for c in [&mut crone, &mut wicca, &mut hag] {
        c.drain().await;
    }

    // Example 46.
    wicca
        .send(&format!(
            "<message to='{}' type='chat' id='hgn27af1'><body>I'll give thee a wind.</body><x xmlns='{MUC_USER}'/></message>",
            occupant("coven", "firstwitch")
        ))
        .await;
    let m = crone.expect("the private message", |e| e.name() == "message" && e.attr("id") == Some("hgn27af1")).await;
    assert_eq!(m.attr("from"), Some(occupant("coven", "secondwitch").as_str()), "Example 47: {}", show(&m));
    assert_eq!(m.attr("to"), Some(crone.jid.as_str()));
    assert_eq!(m.attr("type"), Some("chat"));
    assert_eq!(body(&m).as_deref(), Some("I'll give thee a wind."));
    assert!(user_x(&m).is_some(), "{}", show(&m));
    nothing_from_room(&mut hag, "coven").await;

    // Without the <x/>, from the owner to a participant: the room adds it; no real JID.
    crone.send(&format!("<message to='{}' type='chat' id='pm2'><body>Thou art kind.</body></message>", occupant("coven", "secondwitch"))).await;
    let m = wicca.expect("the private message", |e| e.name() == "message" && e.attr("id") == Some("pm2")).await;
    assert_eq!(m.attr("from"), Some(occupant("coven", "firstwitch").as_str()), "{}", show(&m));
    assert!(user_x(&m).is_some(), "the room SHOULD add the <x/>: {}", show(&m));
    assert_hides(&m, &["crone1@localhost"]);

    wicca.send(&format!("<message to='{}' type='chat' id='pm3'><body>hello?</body></message>", occupant("coven", "nobody"))).await;
    let err = error_for(&mut wicca, "message", "pm3").await;
    assert_error(&err, "item-not-found", None);

    // Example 48.
    wicca
        .send(&format!("<message to='{}' type='groupchat' id='bx71f29k'><body>I'll give thee a wind.</body></message>", occupant("coven", "firstwitch")))
        .await;
    let err = error_for(&mut wicca, "message", "bx71f29k").await;
    assert_error(&err, "bad-request", Some("modify"));
    nothing_from_room(&mut crone, "coven").await;
    s.stop().await;
}

/// §7.8.2 (Examples 56-57, 60-61): a mediated invitation, sent to the room, reaches the
/// invitee from the room with the inviter's bare JID, the reason, the room's password, and
/// (§7.9, Example 58) a `<continue/>` with its thread; beside it XEP-0249's
/// `jabber:x:conference` element says the same (jid, password, reason, continue, thread). The
/// invitee's decline goes back to the inviter from the room, with the decline's id; an
/// invitation to an account that does not exist is answered item-not-found. A direct
/// invitation (XEP-0249 Example 2, to the bare JID) is passed on untouched, and kept for an
/// invitee who is offline (a normal message: XEP-0160).
async fn invitations(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "hecate"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut hecate = online(&s, "hecate", "broom").await;
    create(&mut crone, "coven", "firstwitch", &[("muc#roomconfig_passwordprotectedroom", "1"), ("muc#roomconfig_roomsecret", "cauldronburn")]).await;
    crone.drain().await;

    crone
        .send(&format!(
            "<message to='{}' id='nzd143v8'><x xmlns='{MUC_USER}'><invite to='hecate@localhost'>\
             <reason>Hey Hecate, this is the place for all good witches!</reason>\
             <continue thread='e0ffe42b28561960c6b12b944a092794b9683a38'/></invite></x></message>",
            room("coven")
        ))
        .await;
    let m = hecate.expect("the invitation", |e| e.name() == "message" && e.attr("id") == Some("nzd143v8")).await;
    assert_eq!(m.attr("from"), Some(room("coven").as_str()), "{}", show(&m));
    let x = user_x(&m).expect("the muc#user <x/>");
    let invite = x.get_child("invite", MUC_USER).expect("<invite/>");
    assert_eq!(invite.attr("from"), Some("crone1@localhost"), "{}", show(&m));
    assert_eq!(invite.get_child("reason", MUC_USER).map(|r| r.text()).as_deref(), Some("Hey Hecate, this is the place for all good witches!"));
    assert_eq!(invite.get_child("continue", MUC_USER).and_then(|c| c.attr("thread")), Some("e0ffe42b28561960c6b12b944a092794b9683a38"), "{}", show(&m));
    assert_eq!(x.get_child("password", MUC_USER).map(|p| p.text()).as_deref(), Some("cauldronburn"), "{}", show(&m));
    let conference = m.get_child("x", "jabber:x:conference").expect("XEP-0249's element");
    for (attr, want) in [
        ("jid", room("coven").as_str()),
        ("password", "cauldronburn"),
        ("reason", "Hey Hecate, this is the place for all good witches!"),
        ("continue", "true"),
        ("thread", "e0ffe42b28561960c6b12b944a092794b9683a38"),
    ] {
        assert_eq!(conference.attr(attr), Some(want), "{attr}: {}", show(&m));
    }

    hecate
        .send(&format!(
            "<message to='{}' id='jk2vs61v'><x xmlns='{MUC_USER}'><decline to='crone1@localhost'><reason>Sorry, I'm too busy right now.</reason></decline></x></message>",
            room("coven")
        ))
        .await;
    let m = crone.expect("the decline", |e| e.name() == "message" && user_x(e).is_some_and(|x| x.get_child("decline", MUC_USER).is_some())).await;
    assert_eq!(m.attr("from"), Some(room("coven").as_str()), "Example 61: {}", show(&m));
    assert_eq!(m.attr("id"), Some("jk2vs61v"), "Example 61: {}", show(&m));
    let decline = user_x(&m).unwrap().get_child("decline", MUC_USER).unwrap();
    assert_eq!(decline.attr("from"), Some("hecate@localhost"), "{}", show(&m));
    assert_eq!(decline.get_child("reason", MUC_USER).map(|r| r.text()).as_deref(), Some("Sorry, I'm too busy right now."));

    // §7.8.2: an invitee that does not exist: item-not-found, nothing sent.
    crone
        .send(&format!("<message to='{}' id='inv404'><x xmlns='{MUC_USER}'><invite to='nobody@localhost'/></x></message>", room("coven")))
        .await;
    let err = error_for(&mut crone, "message", "inv404").await;
    assert_error(&err, "item-not-found", None);
    assert_eq!(err.attr("from"), Some(room("coven").as_str()), "{}", show(&err));

    // XEP-0249 Example 2, to the bare JID; then to an invitee who is offline.
    let direct = format!(
        "<x xmlns='jabber:x:conference' continue='true' jid='{}' password='cauldronburn' reason='Hey Hecate, this is the place for all good witches!' thread='e0ffe42b28561960c6b12b944a092794b9683a38'/>",
        room("coven")
    );
    crone.send(&format!("<message to='hecate@localhost' id='di1'>{direct}</message>")).await;
    let inviter = crone.jid.clone();
    let check = |m: &Element| {
        let x = m.get_child("x", "jabber:x:conference").expect("the invitation");
        assert_eq!(m.attr("from"), Some(inviter.as_str()), "{}", show(m));
        for (attr, want) in [("jid", room("coven").as_str()), ("password", "cauldronburn"), ("continue", "true"), ("thread", "e0ffe42b28561960c6b12b944a092794b9683a38")] {
            assert_eq!(x.attr(attr), Some(want), "{attr}: {}", show(m));
        }
    };
    check(&hecate.expect("the direct invitation", |e| e.name() == "message" && e.attr("id") == Some("di1")).await);
    drop(hecate);
    // The server notices the session's end before the next message.
    tokio::time::sleep(Duration::from_millis(300)).await;
    crone.send(&format!("<message to='hecate@localhost' id='di2'>{direct}</message>")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut hecate = online(&s, "hecate", "broom").await;
    check(&hecate.expect("the stored invitation", |e| e.name() == "message" && e.attr("id") == Some("di2")).await);
    s.stop().await;
}

/// §8.1 (Examples 84-88) and §7.3: a moderator changes the subject with a message holding
/// <subject/> and no <body/>; the occupants get it from the room or the moderator's occupant
/// JID. A participant may not by default (muc#roomconfig_changesubject off): forbidden
/// (auth), nothing reflected; a message with both <subject/> and <body/> is an ordinary
/// message, not a subject change. With changesubject on, a participant may. New occupants get
/// the current subject (§7.2.15); an empty <subject/> clears it (Example 88).
async fn subject_changes(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "wiccarocks", "hag66", "hecate"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut wicca = online(&s, "wiccarocks", "laptop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    create(&mut crone, "coven", "firstwitch", &[]).await;
    join(&mut wicca, "coven", "secondwitch").await;
    join(&mut hag, "coven", "thirdwitch").await;
    for c in [&mut crone, &mut wicca, &mut hag] {
        c.drain().await;
    }

    set_subject(&mut crone, "coven", "Fire Burn and Cauldron Bubble!").await;
    for c in [&mut wicca, &mut hag] {
        let m = subject_from_room(c, "coven").await;
        assert_eq!(subject_text(&m), "Fire Burn and Cauldron Bubble!");
        let from = m.attr("from").unwrap();
        assert!(from == room("coven") || from == occupant("coven", "firstwitch"), "Example 85: {}", show(&m));
        assert_eq!(m.attr("to"), Some(c.jid.as_str()));
    }
    crone.drain().await;

    // Example 87.
    let id = set_subject(&mut hag, "coven", "Eye of newt").await;
    let err = error_for(&mut hag, "message", &id).await;
    assert_error(&err, "forbidden", Some("auth"));
    nothing_from_room(&mut crone, "coven").await;
    nothing_from_room(&mut wicca, "coven").await;

    // A subject with a body is a message.
    hag.send(&format!("<message to='{}' type='groupchat' id='sb1'><subject>Toe of frog</subject><body>just saying</body></message>", room("coven"))).await;
    let m = groupchat_from(&mut wicca, &occupant("coven", "thirdwitch")).await;
    assert_eq!(body(&m).as_deref(), Some("just saying"));
    let mut hecate = online(&s, "hecate", "broom").await;
    let e = join(&mut hecate, "coven", "hecate").await;
    assert_eq!(subject_text(e.subject.as_ref().unwrap()), "Fire Burn and Cauldron Bubble!", "unchanged");
    for c in [&mut crone, &mut wicca, &mut hag] {
        c.drain().await;
    }

    let r = configure(&mut crone, "coven", &[("muc#roomconfig_changesubject", "1")]).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    for c in [&mut crone, &mut wicca, &mut hag, &mut hecate] {
        c.drain().await;
    }
    set_subject(&mut hag, "coven", "Spells").await;
    for c in [&mut crone, &mut wicca, &mut hecate] {
        let m = subject_from_room(c, "coven").await;
        assert_eq!(subject_text(&m), "Spells");
    }
    hag.drain().await;

    // Example 88.
    set_subject(&mut crone, "coven", "").await;
    for c in [&mut wicca, &mut hag, &mut hecate] {
        let m = subject_from_room(c, "coven").await;
        assert_eq!(subject_text(&m), "");
    }
    s.users(&["hag2"]).await;
    let mut hag2 = online(&s, "hag2", "r").await;
    let e = join(&mut hag2, "coven", "fourthwitch").await;
    assert_eq!(subject_text(e.subject.as_ref().unwrap()), "");
    s.stop().await;
}

// =======================================================================================
// 6. Moderation

/// §8.2 (Examples 89-92): a moderator kicks an occupant by nick (role none): the kicked one
/// gets unavailable with 307 and 110, role none; the moderator gets the IQ result; the others
/// get unavailable with 307. The kicked one then gets nothing from the room. §8 (intro): a
/// participant asking for a kick gets forbidden. Example 93: a moderator with a lower
/// affiliation cannot kick the owner: not-allowed (cancel).
async fn kick(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["fluellen", "pistol", "gower"]).await;
    let mut fluellen = online(&s, "fluellen", "pda").await;
    let mut pistol = online(&s, "pistol", "harfleur").await;
    let mut gower = online(&s, "gower", "cell").await;
    create(&mut fluellen, "harfleur", "Fluellen", &[]).await;
    join(&mut pistol, "harfleur", "pistol").await;
    join(&mut gower, "harfleur", "gower").await;
    for c in [&mut fluellen, &mut pistol, &mut gower] {
        c.drain().await;
    }

    // §8 intro: only moderators.
    let r = admin_set(&mut gower, "harfleur", "<item nick='pistol' role='none'/>").await;
    assert_error(&r, "forbidden", None);
    nothing_from_room(&mut pistol, "harfleur").await;

    let r = admin_set(&mut fluellen, "harfleur", "<item nick='pistol' role='none'><reason>Avaunt, you cullion!</reason></item>").await;
    assert_eq!(r.attr("type"), Some("result"), "Example 91: {}", show(&r));
    assert_eq!(r.attr("from"), Some(room("harfleur").as_str()));
    let p = presence_from(&mut pistol, &occupant("harfleur", "pistol"), true).await;
    assert!(has_code(&p, "307") && has_code(&p, "110"), "Example 90: {}", show(&p));
    assert_eq!(affiliation_role(&p), ar("none", "none"));
    for c in [&mut fluellen, &mut gower] {
        let p = presence_from(c, &occupant("harfleur", "pistol"), true).await;
        assert!(has_code(&p, "307") && !has_code(&p, "110"), "Example 92: {}", show(&p));
        assert_eq!(affiliation_role(&p), ar("none", "none"));
    }
    say(&mut fluellen, "harfleur", "good riddance").await;
    nothing_from_room(&mut pistol, "harfleur").await;
    gower.drain().await;

    // Example 93: gower, made a moderator by role (§9.6), may not kick the owner.
    let r = admin_set(&mut fluellen, "harfleur", "<item nick='gower' role='moderator'/>").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let p = presence_from(&mut gower, &occupant("harfleur", "gower"), false).await;
    assert_eq!(affiliation_role(&p), ar("none", "moderator"), "Example 140");
    let p = presence_from(&mut fluellen, &occupant("harfleur", "gower"), false).await;
    assert_eq!(affiliation_role(&p), ar("none", "moderator"));
    fluellen.drain().await;
    let r = admin_set(&mut gower, "harfleur", "<item nick='Fluellen' role='none'/>").await;
    assert_error(&r, "not-allowed", Some("cancel"));
    nothing_from_room(&mut fluellen, "harfleur").await;
    s.stop().await;
}

/// §8.3 and §8.4 (Examples 94-102) in a moderated room (muc_moderated): an unaffiliated
/// user enters as visitor (§5.1.2); a visitor's groupchat message is refused with
/// forbidden and not reflected (§7.4, MUST). A moderator grants voice (role participant):
/// result, and presence with the new role to everyone (the occupant's own with 110); the
/// message then goes through. Revoking voice (role visitor) makes the messages refused again.
/// §8.5 (Examples 103-104): the voice list gives nick and role. Example 102: "a service MUST
/// NOT allow the voice privileges of an admin or owner to be removed by anyone":
/// not-allowed (cancel).
async fn voice_in_moderated_room(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "hag66", "wiccarocks"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    let mut wicca = online(&s, "wiccarocks", "laptop").await;
    create(&mut crone, "coven", "firstwitch", &[("muc#roomconfig_moderatedroom", "1")]).await;
    let info = disco_info(&mut hag, &room("coven")).await;
    assert_features(&info, &["muc_moderated"], &["muc_unmoderated"]);
    let e = join(&mut hag, "coven", "thirdwitch").await;
    assert_eq!(affiliation_role(&e.me), ar("none", "visitor"));
    crone.drain().await;

    let id = send_groupchat(&mut hag, "coven", "may I speak?").await;
    let err = error_for(&mut hag, "message", &id).await;
    assert_error(&err, "forbidden", None);
    nothing_from_room(&mut crone, "coven").await;

    // Example 95.
    let r = admin_set(&mut crone, "coven", "<item nick='thirdwitch' role='participant'><reason>A worthy witch indeed!</reason></item>").await;
    assert_eq!(r.attr("type"), Some("result"), "Example 96: {}", show(&r));
    let p = presence_from(&mut crone, &occupant("coven", "thirdwitch"), false).await;
    assert_eq!(affiliation_role(&p), ar("none", "participant"), "Example 97: {}", show(&p));
    let p = presence_from(&mut hag, &occupant("coven", "thirdwitch"), false).await;
    assert_eq!(affiliation_role(&p), ar("none", "participant"));
    assert!(has_code(&p, "110"), "{}", show(&p));
    say(&mut hag, "coven", "Thank you").await;
    groupchat_from(&mut crone, &occupant("coven", "thirdwitch")).await;

    // Examples 103-104.
    let list = admin_list(&mut crone, "coven", "role='participant'").await;
    let voiced: Vec<(String, String)> =
        list_items(&list).iter().map(|i| (i.attr("nick").unwrap_or_default().to_string(), i.attr("role").unwrap_or_default().to_string())).collect();
    assert_eq!(voiced, [ar("thirdwitch", "participant")], "Example 104: nick and role: {}", show(&list));

    // Example 99.
    let r = admin_set(&mut crone, "coven", "<item nick='thirdwitch' role='visitor'><reason>Not so worthy after all!</reason></item>").await;
    assert_eq!(r.attr("type"), Some("result"), "Example 100: {}", show(&r));
    let p = presence_from(&mut crone, &occupant("coven", "thirdwitch"), false).await;
    assert_eq!(affiliation_role(&p), ar("none", "visitor"), "Example 101: {}", show(&p));
    let p = presence_from(&mut hag, &occupant("coven", "thirdwitch"), false).await;
    assert_eq!(affiliation_role(&p), ar("none", "visitor"));
    crone.drain().await;
    let id = send_groupchat(&mut hag, "coven", "once more?").await;
    let err = error_for(&mut hag, "message", &id).await;
    assert_error(&err, "forbidden", None);
    nothing_from_room(&mut crone, "coven").await;

    // Example 102: an admin keeps voice.
    let r = admin_set(&mut crone, "coven", "<item affiliation='admin' jid='wiccarocks@localhost'/>").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let e = join(&mut wicca, "coven", "secondwitch").await;
    assert_eq!(affiliation_role(&e.me), ar("admin", "moderator"), "§5.1.2: an admin enters as moderator");
    crone.drain().await;
    let r = admin_set(&mut crone, "coven", "<item nick='secondwitch' role='visitor'/>").await;
    assert_error(&r, "not-allowed", Some("cancel"));
    say(&mut wicca, "coven", "I still speak").await;
    s.stop().await;
}

/// §9.1 (Examples 110-114): an owner bans a user by bare JID (affiliation outcast): result;
/// the banned occupant gets unavailable with 301 (affiliation outcast, role none), so do the
/// others. §7.2.7 (Example 28): the banned user cannot enter again, under another nick or
/// from another resource: forbidden (auth). §9.2 (Examples 116-119): the ban list holds bare
/// JIDs, no role (§17.4 rule 6), and takes deltas; lifting a ban lets the user in again.
/// §9.1: "If an admin or owner attempts to ban himself, the service MUST deny the request
/// and return a conflict error."
async fn ban(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["kinghenryv", "earlofcambridge", "exeter"]).await;
    let mut king = online(&s, "kinghenryv", "throne").await;
    let mut cambridge = online(&s, "earlofcambridge", "stabber").await;
    let mut exeter = online(&s, "exeter", "pda").await;
    create(&mut king, "southampton", "king", &[]).await;
    join(&mut cambridge, "southampton", "cambridge").await;
    join(&mut exeter, "southampton", "exeter").await;
    for c in [&mut king, &mut cambridge, &mut exeter] {
        c.drain().await;
    }

    // Example 111.
    let r = admin_set(&mut king, "southampton", "<item affiliation='outcast' jid='earlofcambridge@localhost'><reason>Treason</reason></item>").await;
    assert_eq!(r.attr("type"), Some("result"), "Example 112: {}", show(&r));
    let p = presence_from(&mut cambridge, &occupant("southampton", "cambridge"), true).await;
    assert!(has_code(&p, "301"), "Example 113: {}", show(&p));
    assert_eq!(affiliation_role(&p), ar("outcast", "none"));
    for c in [&mut king, &mut exeter] {
        let p = presence_from(c, &occupant("southampton", "cambridge"), true).await;
        assert!(has_code(&p, "301"), "Example 114: {}", show(&p));
        assert_eq!(affiliation_role(&p), ar("outcast", "none"));
    }
    say(&mut king, "southampton", "Treason is punished").await;
    nothing_from_room(&mut cambridge, "southampton").await;

    // Example 28, whatever the nick or the resource.
    let err = refused(&mut cambridge, "southampton", "innocent", "").await;
    assert_error(&err, "forbidden", Some("auth"));
    let mut other = online(&s, "earlofcambridge", "elsewhere").await;
    let err = refused(&mut other, "southampton", "cambridge", "").await;
    assert_error(&err, "forbidden", Some("auth"));

    // Examples 116-117.
    let list = admin_list(&mut king, "southampton", "affiliation='outcast'").await;
    assert_eq!(affiliation_list(&list, "outcast"), ["earlofcambridge@localhost"]);
    for i in list_items(&list) {
        assert_eq!(i.attr("role"), None, "§17.4 rule 6: {}", show(&list));
    }
    // Examples 118-119: a delta adding two.
    let r = admin_set(
        &mut king,
        "southampton",
        "<item affiliation='outcast' jid='lordscroop@localhost'><reason>Treason</reason></item>\
         <item affiliation='outcast' jid='sirthomasgrey@localhost'><reason>Treason</reason></item>",
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let list = admin_list(&mut king, "southampton", "affiliation='outcast'").await;
    assert_eq!(affiliation_list(&list, "outcast"), ["earlofcambridge@localhost", "lordscroop@localhost", "sirthomasgrey@localhost"]);

    // Banning oneself.
    let r = admin_set(&mut king, "southampton", "<item affiliation='outcast' jid='kinghenryv@localhost'/>").await;
    assert_error(&r, "conflict", None);

    // Lifting the ban.
    let r = admin_set(&mut king, "southampton", "<item affiliation='none' jid='earlofcambridge@localhost'/>").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let e = join(&mut other, "southampton", "cambridge").await;
    assert_eq!(affiliation_role(&e.me), ar("none", "participant"));
    s.stop().await;
}

/// §9.3 (Examples 120-123) in an open room: granting membership to an occupant sends
/// everyone its presence with affiliation member. §9.5 (Examples 129-133): the member list
/// (bare JIDs, §17.4 rule 6) and a delta that removes one member (presence with
/// affiliation none; in an open room the member stays) and adds another who is not in the
/// room. §5.2.1: an unaffiliated user may not retrieve the member list (§9: forbidden).
async fn membership_in_open_room(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "hag66"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    create(&mut crone, "coven", "firstwitch", &[]).await;
    join(&mut hag, "coven", "thirdwitch").await;
    crone.drain().await;

    let r = admin_set(&mut crone, "coven", "<item affiliation='member' jid='hag66@localhost' nick='thirdwitch'/>").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    for c in [&mut crone, &mut hag] {
        let p = presence_from(c, &occupant("coven", "thirdwitch"), false).await;
        assert_eq!(affiliation_role(&p), ar("member", "participant"), "Example 123: {}", show(&p));
    }
    let list = admin_list(&mut crone, "coven", "affiliation='member'").await;
    assert_eq!(affiliation_list(&list, "member"), ["hag66@localhost"]);

    let r = admin_set(&mut crone, "coven", "<item affiliation='none' jid='hag66@localhost'/><item affiliation='member' jid='hecate@localhost'/>").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    for c in [&mut crone, &mut hag] {
        let p = presence_from(c, &occupant("coven", "thirdwitch"), false).await;
        assert_eq!(affiliation_role(&p), ar("none", "participant"), "Example 133: {}", show(&p));
    }
    let list = admin_list(&mut crone, "coven", "affiliation='member'").await;
    assert_eq!(affiliation_list(&list, "member"), ["hecate@localhost"]);

    let r = admin_list(&mut hag, "coven", "affiliation='member'").await;
    assert_error(&r, "forbidden", None);
    s.stop().await;
}

/// What an admin may not do. §9.1 (Example 115): an admin cannot ban an owner (not-allowed,
/// cancel), nor (affiliation state chart, §5.2.2: only an owner bans an admin) another
/// admin. §9.7 (Example 145): an admin cannot revoke an owner's moderator role
/// (not-allowed). §10.5 (Example 184) and §10.8 (Example 199): only owners change the owner
/// and admin lists (forbidden, auth). §10.2 (Example 164) and §10.9 (Example 204): only owners
/// configure or destroy (forbidden, auth). An admin may ban a participant (§9.1).
async fn admin_limits(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "wiccarocks", "hag66", "hecate"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut wicca = online(&s, "wiccarocks", "laptop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    create(&mut crone, "coven", "firstwitch", &[]).await;
    for jid in ["wiccarocks@localhost", "hecate@localhost"] {
        let r = admin_set(&mut crone, "coven", &format!("<item affiliation='admin' jid='{jid}'/>")).await;
        assert_eq!(r.attr("type"), Some("result"), "Example 188: {}", show(&r));
    }
    let e = join(&mut wicca, "coven", "secondwitch").await;
    assert_eq!(affiliation_role(&e.me), ar("admin", "moderator"));
    join(&mut hag, "coven", "thirdwitch").await;
    for c in [&mut crone, &mut wicca, &mut hag] {
        c.drain().await;
    }

    let r = admin_set(&mut wicca, "coven", "<item affiliation='outcast' jid='crone1@localhost'/>").await;
    assert_error(&r, "not-allowed", Some("cancel"));
    let r = admin_set(&mut wicca, "coven", "<item affiliation='outcast' jid='hecate@localhost'/>").await;
    assert_error(&r, "not-allowed", None);
    let r = admin_set(&mut wicca, "coven", "<item nick='firstwitch' role='participant'/>").await;
    assert_error(&r, "not-allowed", Some("cancel"));
    let r = admin_set(&mut wicca, "coven", "<item affiliation='owner' jid='hag66@localhost'/>").await;
    assert_error(&r, "forbidden", Some("auth"));
    let r = admin_set(&mut wicca, "coven", "<item affiliation='admin' jid='hag66@localhost'/>").await;
    assert_error(&r, "forbidden", Some("auth"));
    let r = get_config(&mut wicca, "coven").await;
    assert_error(&r, "forbidden", Some("auth"));
    let r = wicca
        .request(&format!("<iq type='set' id='destroytest' to='{}'><query xmlns='{MUC_OWNER}'><destroy/></query></iq>", room("coven")))
        .await;
    assert_error(&r, "forbidden", Some("auth"));
    // Nothing of that happened.
    nothing_from_room(&mut crone, "coven").await;
    let owners = admin_list(&mut crone, "coven", "affiliation='owner'").await;
    assert_eq!(affiliation_list(&owners, "owner"), ["crone1@localhost"]);
    let admins = admin_list(&mut crone, "coven", "affiliation='admin'").await;
    assert_eq!(affiliation_list(&admins, "admin"), ["hecate@localhost", "wiccarocks@localhost"]);

    let r = admin_set(&mut wicca, "coven", "<item affiliation='outcast' jid='hag66@localhost'/>").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let p = presence_from(&mut hag, &occupant("coven", "thirdwitch"), true).await;
    assert!(has_code(&p, "301"), "{}", show(&p));
    s.stop().await;
}

/// §10.3 (Examples 172-175): an owner makes an occupant an owner: presence with affiliation
/// owner (and role moderator, §5.1.3). §10.5 (Examples 181-182): the owner list, bare JIDs.
/// §10.4 (Examples 177-180): revoking ownership (to admin) sends presence with affiliation
/// admin. §10.8 (Examples 196-197): the admin list. §10.6 (Examples 186-188): a user granted
/// admin while away enters as admin and moderator (§5.1.2). §10.7 (Examples 191-194):
/// revoking admin sends presence with affiliation none. §10.4: an owner may not give up
/// ownership when no other owner is left: conflict.
async fn owners_and_admins(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "hecate", "wiccarocks"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut hecate = online(&s, "hecate", "broom").await;
    let mut wicca = online(&s, "wiccarocks", "laptop").await;
    create(&mut crone, "coven", "firstwitch", &[]).await;
    join(&mut hecate, "coven", "hecate").await;
    crone.drain().await;

    // Example 173.
    let r = admin_set(&mut crone, "coven", "<item affiliation='owner' jid='hecate@localhost'><reason>A worthy witch indeed!</reason></item>").await;
    assert_eq!(r.attr("type"), Some("result"), "Example 174: {}", show(&r));
    for (c, is_self) in [(&mut crone, false), (&mut hecate, true)] {
        let p = presence_from(c, &occupant("coven", "hecate"), false).await;
        assert_eq!(affiliation_role(&p), ar("owner", "moderator"), "Example 175: {}", show(&p));
        assert_eq!(has_code(&p, "110"), is_self, "{}", show(&p));
    }
    let owners = admin_list(&mut crone, "coven", "affiliation='owner'").await;
    assert_eq!(affiliation_list(&owners, "owner"), ["crone1@localhost", "hecate@localhost"]);

    // Example 178.
    let r = admin_set(&mut crone, "coven", "<item affiliation='admin' jid='hecate@localhost'><reason>Not so worthy after all!</reason></item>").await;
    assert_eq!(r.attr("type"), Some("result"), "Example 179: {}", show(&r));
    for c in [&mut crone, &mut hecate] {
        let p = presence_from(c, &occupant("coven", "hecate"), false).await;
        assert_eq!(affiliation_role(&p).0, "admin", "Example 180: {}", show(&p));
    }
    let owners = admin_list(&mut crone, "coven", "affiliation='owner'").await;
    assert_eq!(affiliation_list(&owners, "owner"), ["crone1@localhost"]);
    let admins = admin_list(&mut crone, "coven", "affiliation='admin'").await;
    assert_eq!(affiliation_list(&admins, "admin"), ["hecate@localhost"]);

    // Example 186, for someone not in the room.
    let r = admin_set(&mut crone, "coven", "<item affiliation='admin' jid='wiccarocks@localhost'/>").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let e = join(&mut wicca, "coven", "secondwitch").await;
    assert_eq!(affiliation_role(&e.me), ar("admin", "moderator"));
    crone.drain().await;
    hecate.drain().await;

    // Example 191.
    let r = admin_set(&mut crone, "coven", "<item affiliation='none' jid='hecate@localhost'/>").await;
    assert_eq!(r.attr("type"), Some("result"), "Example 193: {}", show(&r));
    for c in [&mut crone, &mut hecate, &mut wicca] {
        let p = presence_from(c, &occupant("coven", "hecate"), false).await;
        assert_eq!(affiliation_role(&p).0, "none", "Example 194: {}", show(&p));
    }
    let admins = admin_list(&mut crone, "coven", "affiliation='admin'").await;
    assert_eq!(affiliation_list(&admins, "admin"), ["wiccarocks@localhost"]);

    // The last owner stays one.
    let r = admin_set(&mut crone, "coven", "<item affiliation='admin' jid='crone1@localhost'/>").await;
    assert_error(&r, "conflict", None);
    let owners = admin_list(&mut crone, "coven", "affiliation='owner'").await;
    assert_eq!(affiliation_list(&owners, "owner"), ["crone1@localhost"]);
    s.stop().await;
}

/// §10.9 (Examples 201-204): a non-owner may not destroy the room (forbidden, auth). The
/// owner destroys it with an alternate venue and a reason: each occupant gets one
/// unavailable presence from its own occupant JID with affiliation none, role none and a
/// <destroy/> holding the venue and the reason (Example 202), and no unavailable of the
/// others ("SHOULD NOT broadcast"); the owner gets the result. Afterwards the room does not
/// exist: disco#info item-not-found (XEP-0030 §3.1), messages item-not-found (§17.2 rule 3),
/// and entering creates a new room (201).
async fn destroy(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "wiccarocks", "hag66"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut wicca = online(&s, "wiccarocks", "laptop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    create(&mut crone, "heath", "firstwitch", &[("muc#roomconfig_roomname", "A Lonely Heath")]).await;
    join(&mut wicca, "heath", "secondwitch").await;
    join(&mut hag, "heath", "thirdwitch").await;
    for c in [&mut crone, &mut wicca, &mut hag] {
        c.drain().await;
    }

    let destroy = format!("<destroy jid='{}'><reason>Macbeth doth come.</reason></destroy>", room("coven"));
    let r = hag.request(&format!("<iq type='set' id='destroytest' to='{}'><query xmlns='{MUC_OWNER}'>{destroy}</query></iq>", room("heath"))).await;
    assert_error(&r, "forbidden", Some("auth"));

    let r = crone.request(&format!("<iq type='set' id='begone' to='{}'><query xmlns='{MUC_OWNER}'>{destroy}</query></iq>", room("heath"))).await;
    assert_eq!(r.attr("type"), Some("result"), "Example 203: {}", show(&r));
    assert_eq!(r.attr("from"), Some(room("heath").as_str()));
    for (c, nick) in [(&mut crone, "firstwitch"), (&mut wicca, "secondwitch"), (&mut hag, "thirdwitch")] {
        let p = presence_from(c, &occupant("heath", nick), true).await;
        assert_eq!(affiliation_role(&p), ar("none", "none"), "Example 202: {}", show(&p));
        let d = user_x(&p).unwrap().get_child("destroy", MUC_USER).unwrap_or_else(|| panic!("no <destroy/>: {}", show(&p)));
        assert_eq!(d.attr("jid"), Some(room("coven").as_str()), "{}", show(&p));
        assert_eq!(d.get_child("reason", MUC_USER).map(|r| r.text()).as_deref(), Some("Macbeth doth come."), "{}", show(&p));
        nothing_from_room(c, "heath").await;
    }

    room_gone(&mut wicca, "heath").await;
    let id = send_groupchat(&mut wicca, "heath", "hello?").await;
    let err = error_for(&mut wicca, "message", &id).await;
    assert_error(&err, "item-not-found", None);
    enter_new_room(&mut hag, "heath", "thirdwitch").await;
    s.stop().await;
}

// =======================================================================================
// 7. Persistence

/// A shutdown while a room is busy: the rooms stop, and what a room broadcast is archived,
/// before storage closes (room tasks and their commits are the server's work: nothing of
/// theirs runs once storage is closed, and nothing they had is lost to the close).
async fn shutdown_ends_rooms_before_storage(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["duncan", "banquo"]).await;
    let core = s.server.as_ref().unwrap().core().clone();
    let mut duncan = online(&s, "duncan", "throne").await;
    let mut banquo = online(&s, "banquo", "castle").await;
    create(&mut duncan, "forres", "king", &[("muc#roomconfig_persistentroom", "1")]).await;
    join(&mut banquo, "forres", "banquo").await;
    let ids: Vec<String> = (0..20).map(|_| next_id("gc")).collect();
    for (i, id) in ids.iter().enumerate() {
        duncan.send(&format!("<message to='{}' type='groupchat' id='{id}'><body>at the end {i}</body></message>", room("forres"))).await;
    }
    // Every message reached the other occupant: the room broadcast them all.
    for id in &ids {
        banquo.expect(&format!("the copy of {id}"), |e| e.name() == "message" && e.attr("id") == Some(id.as_str())).await;
    }
    let s = restart(s).await;
    assert!(core.tasks.is_closed() && core.tasks.is_empty(), "a room task or a commit outlived storage");

    let mut duncan = online(&s, "duncan", "throne").await;
    join(&mut duncan, "forres", "king").await;
    let (hits, _) = room_archive(&mut duncan, "forres", "").await;
    let archived: Vec<String> = hits.iter().filter_map(|h| h.message.get_child("body", CLIENT).map(|b| b.text())).collect();
    for i in 0..20 {
        let want = format!("at the end {i}");
        assert!(archived.contains(&want), "{want} is not in the room's archive after the shutdown: {archived:?}");
    }
    s.stop().await;
}

/// §10.1.3 (muc#roomconfig_persistentroom) and §10 intro ("the owner does not lose ownership
/// on exiting a persistent room"): a persistent room outlives its last occupant and a server
/// restart with its configuration (disco#info §6.4, the owner form §10.2), its affiliations
/// (the lists of §9.2, §9.5, §10.5, §10.8; a member enters the members-only room, a stranger
/// does not) and its subject (§7.2.15); its archive too (XEP-0313).
async fn persistent_room_survives_restart(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["duncan", "banquo", "macduff", "fleance", "lennox"]).await;
    let (banquos, duncans);
    {
        let mut duncan = online(&s, "duncan", "throne").await;
        create(
            &mut duncan,
            "forres",
            "king",
            &[
                ("muc#roomconfig_roomname", "The Palace"),
                ("muc#roomconfig_roomdesc", "Where the king holds court"),
                ("muc#roomconfig_persistentroom", "1"),
                ("muc#roomconfig_membersonly", "1"),
            ],
        )
        .await;
        for (aff, jid) in [("member", "banquo@localhost"), ("admin", "macduff@localhost"), ("outcast", "fleance@localhost")] {
            let r = admin_set(&mut duncan, "forres", &format!("<item affiliation='{aff}' jid='{jid}'/>")).await;
            assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
        }
        set_subject(&mut duncan, "forres", "A banquet tonight").await;
        say(&mut duncan, "forres", "before the restart").await;
        let mut banquo = online(&s, "banquo", "castle").await;
        let e = join(&mut banquo, "forres", "banquo").await;
        banquos = occupant_id(&e.me);
        duncans = occupant_id(e.other("king"));
        leave(&mut banquo, "forres", "banquo").await;
        leave(&mut duncan, "forres", "king").await;
        let info = disco_info(&mut duncan, &room("forres")).await;
        assert_features(&info, &["muc_persistent"], &["muc_temporary"]);
    }
    let s = restart(s).await;

    let mut banquo = online(&s, "banquo", "castle").await;
    let info = disco_info(&mut banquo, &room("forres")).await;
    assert!(identities(&info).iter().any(|(c, t, n)| c == "conference" && t == "text" && n.as_deref() == Some("The Palace")), "{}", show(&info));
    assert_features(&info, &["muc_persistent", "muc_membersonly"], &["muc_temporary", "muc_open"]);
    let e = join(&mut banquo, "forres", "banquo").await;
    assert_eq!(affiliation_role(&e.me), ar("member", "participant"));
    assert_eq!(subject_text(e.subject.as_ref().unwrap()), "A banquet tonight");
    // XEP-0421 §4.1: ids are stable across restarts, the subject's setter's included.
    assert_eq!(occupant_id(&e.me), banquos, "banquo's id after the restart");
    assert_eq!(occupant_id(e.subject.as_ref().unwrap()), duncans, "{}", show(e.subject.as_ref().unwrap()));

    let mut lennox = online(&s, "lennox", "r").await;
    let err = refused(&mut lennox, "forres", "lennox", "").await;
    assert_error(&err, "registration-required", Some("auth"));

    let mut duncan = online(&s, "duncan", "throne").await;
    let e = join(&mut duncan, "forres", "king").await;
    assert_eq!(affiliation_role(&e.me), ar("owner", "moderator"));
    for (aff, want) in [("owner", "duncan@localhost"), ("admin", "macduff@localhost"), ("member", "banquo@localhost"), ("outcast", "fleance@localhost")] {
        let list = admin_list(&mut duncan, "forres", &format!("affiliation='{aff}'")).await;
        assert_eq!(affiliation_list(&list, aff), [want]);
    }
    let form = config_form(&get_config(&mut duncan, "forres").await);
    assert_eq!(value(&form, "muc#roomconfig_roomname").as_deref(), Some("The Palace"));
    assert_eq!(value(&form, "muc#roomconfig_roomdesc").as_deref(), Some("Where the king holds court"));
    assert!(boolean(&form, "muc#roomconfig_persistentroom"));
    assert!(boolean(&form, "muc#roomconfig_membersonly"));

    let (hits, iq) = room_archive(&mut banquo, "forres", "").await;
    assert_eq!(iq.attr("type"), Some("result"), "{}", show(&iq));
    assert!(hits.iter().any(|h| body(&h.message).as_deref() == Some("before the restart")), "the archive outlives the restart");
    s.stop().await;
}

/// `[muc] max_rooms_in_memory`: persistent rooms beyond the limit are not lost: each is
/// still listed (§6.3), entered without being created anew, with its subject (§7.2.15).
async fn persistent_rooms_beyond_memory_limit(b: Backend) {
    let s = TestServer::start_with(b, |c| c.muc.max_rooms_in_memory = 1).await;
    s.users(&["duncan", "banquo"]).await;
    let mut duncan = online(&s, "duncan", "throne").await;
    for i in 1..=3 {
        let name = format!("hall{i}");
        create(&mut duncan, &name, "king", &[("muc#roomconfig_persistentroom", "1"), ("muc#roomconfig_roomname", &format!("Hall {i}"))]).await;
        set_subject(&mut duncan, &name, &format!("topic {i}")).await;
        say(&mut duncan, &name, "sync").await;
        leave(&mut duncan, &name, "king").await;
    }
    let mut banquo = online(&s, "banquo", "castle").await;
    let r = disco_items(&mut banquo, SERVICE).await;
    let mut jids: Vec<String> = items(&r).into_iter().map(|(j, _)| j).collect();
    jids.sort();
    assert_eq!(jids, [room("hall1"), room("hall2"), room("hall3")]);
    for i in 1..=3 {
        let e = join(&mut banquo, &format!("hall{i}"), "banquo").await;
        assert_eq!(subject_text(e.subject.as_ref().unwrap()), format!("topic {i}"));
        let info = disco_info(&mut banquo, &room(&format!("hall{i}"))).await;
        assert!(identities(&info).iter().any(|(_, _, n)| n.as_deref() == Some(format!("Hall {i}").as_str())), "{}", show(&info));
    }
    s.stop().await;
}

/// §7.14: "If the room is not persistent and this occupant is the last to exit, the service
/// is responsible for destroying the room": a temporary room stays while anyone is in it
/// (its owner may leave first), and is gone when the last one leaves: disco#info
/// item-not-found (XEP-0030 §3.1), not listed (§6.3), and entering creates it anew (201).
async fn temporary_room_vanishes(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "hag66"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    create(&mut crone, "coven", "firstwitch", &[]).await;
    join(&mut hag, "coven", "thirdwitch").await;
    leave(&mut crone, "coven", "firstwitch").await;
    let info = disco_info(&mut crone, &room("coven")).await;
    assert_eq!(info.attr("type"), Some("result"), "someone is still in it: {}", show(&info));
    // What hag saw of firstwitch leaving is of the old room.
    hag.drain().await;
    leave(&mut hag, "coven", "thirdwitch").await;

    room_gone(&mut crone, "coven").await;
    let r = disco_items(&mut crone, SERVICE).await;
    assert!(!items(&r).iter().any(|(j, _)| *j == room("coven")), "{}", show(&r));
    enter_new_room(&mut hag, "coven", "thirdwitch").await;
    s.stop().await;
}

// =======================================================================================
// 8. Occupant ids

/// XEP-0421 §3.1/§3.2 and §4: the room puts one occupant-id in every presence and message
/// of an occupant; §4.1: it is stable (the same user, by real bare JID, gets the same one
/// after leaving and entering again, under another nick, and from another resource) and
/// unique (another user has another); and SHOULD differ between rooms for the same user.
async fn occupant_ids(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "hag66"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    create(&mut crone, "coven", "firstwitch", &[]).await;
    let e = join(&mut hag, "coven", "thirdwitch").await;
    let hags = occupant_id(&e.me);
    let crones = occupant_id(e.other("firstwitch"));
    assert_ne!(hags, crones, "different users, different ids");
    let p = presence_from(&mut crone, &occupant("coven", "thirdwitch"), false).await;
    assert_eq!(occupant_id(&p), hags);
    let m = say(&mut hag, "coven", "it is I").await;
    assert_eq!(occupant_id(&m), hags);
    assert_eq!(occupant_id(&groupchat_from(&mut crone, &occupant("coven", "thirdwitch")).await), hags);

    let p = leave(&mut hag, "coven", "thirdwitch").await;
    assert_eq!(occupant_id(&p), hags);
    let e = join(&mut hag, "coven", "oldhag").await;
    assert_eq!(occupant_id(&e.me), hags, "stable across visits and nicks");
    let mut laptop = online(&s, "hag66", "laptop").await;
    let e = join(&mut laptop, "coven", "youngwitch").await;
    assert_eq!(occupant_id(&e.me), hags, "the user is the bare JID");
    assert_eq!(occupant_id(e.other("oldhag")), hags);
    assert_eq!(occupant_id(e.other("firstwitch")), crones);

    create(&mut crone, "heath", "firstwitch", &[]).await;
    let e = join(&mut hag, "heath", "thirdwitch").await;
    assert_ne!(occupant_id(&e.me), hags, "XEP-0421 §4.1: SHOULD differ between rooms");
    s.stop().await;
}

/// XEP-0421 §4: "MUST be attached to every message and every presence sent by a MUC", and
/// one the sender put in is replaced: a private message (§7.5) and a presence carry the
/// sender's id, not the forged one; the subject sent on entry carries the id of whoever set
/// it; the unavailable presence a resource not in the room gets for presence without the
/// MUC <x/> (§7.2) carries the id that user has.
async fn occupant_ids_everywhere(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "hag66"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    create(&mut crone, "coven", "firstwitch", &[]).await;
    hag.send(&format!(
        "<presence to='{}'><x xmlns='{MUC}'/><occupant-id xmlns='{OCCUPANT_ID}' id='forged'/></presence>",
        occupant("coven", "thirdwitch")
    ))
    .await;
    let e = read_entry(&mut hag, "coven", "thirdwitch").await;
    let hags = occupant_id(&e.me);
    let crones = occupant_id(e.other("firstwitch"));
    assert_ne!(hags, "forged");
    let p = presence_from(&mut crone, &occupant("coven", "thirdwitch"), false).await;
    assert_eq!(occupant_id(&p), hags, "the forged id replaced: {}", show(&p));

    hag.send(&format!(
        "<message to='{}' type='chat' id='pm1'><body>psst</body><occupant-id xmlns='{OCCUPANT_ID}' id='forged'/></message>",
        occupant("coven", "firstwitch")
    ))
    .await;
    let m = crone.expect("the private message", |e| e.name() == "message" && e.attr("id") == Some("pm1")).await;
    assert_eq!(occupant_id(&m), hags, "a private message: {}", show(&m));
    crone.send(&format!("<message to='{}' type='chat' id='pm2'><body>yes?</body></message>", occupant("coven", "thirdwitch"))).await;
    let m = hag.expect("the private answer", |e| e.name() == "message" && e.attr("id") == Some("pm2")).await;
    assert_eq!(occupant_id(&m), crones, "{}", show(&m));

    set_subject(&mut crone, "coven", "Cauldron").await;
    let m = subject_from_room(&mut hag, "coven").await;
    assert_eq!(occupant_id(&m), crones, "the subject as set: {}", show(&m));
    leave(&mut hag, "coven", "thirdwitch").await;
    let e = join(&mut hag, "coven", "thirdwitch").await;
    let subject = e.subject.as_ref().unwrap();
    assert_eq!(subject.attr("from"), Some(occupant("coven", "firstwitch").as_str()), "{}", show(subject));
    assert_eq!(occupant_id(subject), crones, "the subject on entry: {}", show(subject));

    // Presence without <x/> from a resource that is not in the room: told it is not (110,
    // 307, 333), with its user's id.
    let mut laptop = online(&s, "hag66", "laptop").await;
    laptop.send(&format!("<presence to='{}'/>", occupant("coven", "thirdwitch"))).await;
    let p = presence_from(&mut laptop, &occupant("coven", "thirdwitch"), true).await;
    assert_eq!(p.attr("type"), Some("unavailable"), "{}", show(&p));
    for code in ["110", "307", "333"] {
        assert!(has_code(&p, code), "{code}: {}", show(&p));
    }
    assert_eq!(occupant_id(&p), hags, "{}", show(&p));
    s.stop().await;
}

// =======================================================================================
// 9. Self-ping

/// XEP-0410 §3.2: an occupant pings its own occupant JID and gets a result from it (directly,
/// with the §3.3 optimization, or by answering the ping the room passes on to it); a
/// non-occupant pinging an occupant JID gets not-acceptable (cancel) from it, by the room
/// (Example 2), and nothing is passed on to the occupant; a ping to a nick the occupant left
/// gets item-not-found; a ping into a room that does not exist, not-acceptable.
async fn self_ping(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["juliet", "romeo"]).await;
    let mut juliet = online(&s, "juliet", "client").await;
    let mut romeo = online(&s, "romeo", "orchard").await;
    create(&mut juliet, "characters", "JuliC", &[]).await;

    let me = occupant("characters", "JuliC");
    juliet.send(&format!("<iq type='get' id='s2c1' to='{me}'><ping xmlns='{PING}'/></iq>")).await;
    loop {
        let el = juliet.expect("the self-ping or its answer", |e| e.name() == "iq").await;
        if el.attr("id") == Some("s2c1") && el.attr("from") == Some(me.as_str()) {
            assert_eq!(el.attr("type"), Some("result"), "XEP-0410: joined: {}", show(&el));
            break;
        }
        // The ping passed on to a client of the occupant (XEP-0410 Example 3).
        assert_eq!(el.attr("type"), Some("get"), "{}", show(&el));
        assert!(el.get_child("ping", PING).is_some(), "{}", show(&el));
        assert_eq!(el.attr("from"), Some(me.as_str()), "{}", show(&el));
        juliet.send(&format!("<iq type='result' id='{}' to='{me}'/>", el.attr("id").unwrap())).await;
    }

    for (id, to) in [("s2c2", me.clone()), ("s2c3", occupant("characters", "Romeo"))] {
        let r = romeo.request(&format!("<iq type='get' id='{id}' to='{to}'><ping xmlns='{PING}'/></iq>")).await;
        assert_error(&r, "not-acceptable", Some("cancel"));
        assert_eq!(r.attr("from"), Some(to.as_str()), "{}", show(&r));
        // Example 2: the error is the room's.
        let by = r.get_child("error", CLIENT).and_then(|e| e.attr("by"));
        assert_eq!(by, Some(room("characters").as_str()), "{}", show(&r));
    }
    nothing_from_room(&mut juliet, "characters").await;

    // §3.2: item-not-found says "joined, but the nick changed": pinging the old nick.
    juliet.send(&format!("<presence to='{}'/>", occupant("characters", "Juliet"))).await;
    juliet.expect("the new nick's presence", |e| e.name() == "presence" && e.attr("from") == Some(occupant("characters", "Juliet").as_str())).await;
    let r = juliet.request(&format!("<iq type='get' id='s2c4' to='{me}'><ping xmlns='{PING}'/></iq>")).await;
    assert_error(&r, "item-not-found", None);

    // A room that does not exist (a temporary room gone with a restart): nobody is joined,
    // so not-acceptable, on which a client enters again (item-not-found would tell it that
    // it still is).
    let gone = occupant("vanished", "JuliC");
    let r = juliet.request(&format!("<iq type='get' id='s2c5' to='{gone}'><ping xmlns='{PING}'/></iq>")).await;
    assert_error(&r, "not-acceptable", Some("cancel"));
    assert_eq!(r.attr("from"), Some(gone.as_str()), "{}", show(&r));
    let r = disco_info(&mut juliet, &room("vanished")).await;
    assert_error(&r, "item-not-found", Some("cancel"));
    s.stop().await;
}

// =======================================================================================
// 10. Room archives

/// XEP-0313 on a room: §3.3.2 the archive is on the room's bare JID; §3.5 the stanza-id of
/// each live message (by the room) is its archive id; §4/§4.2 an occupant's query returns the
/// room's messages in order, each result from the room with the queryid, the forwarded
/// message from the sender's occupant JID, without 'to' (§6.1.2), with the occupant-id
/// (XEP-0421 §4); §6.1.2 stored once, no private messages, any muc#user <x/> the sender put
/// in stripped, and no real JIDs for an occupant who may not see them (semi-anonymous room).
/// §4.3 (RSM): pages of two, complete='true' on the last only.
async fn room_archive_query(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "wiccarocks", "hag66"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut wicca = online(&s, "wiccarocks", "laptop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    create(&mut crone, "coven", "firstwitch", &[]).await;
    join(&mut wicca, "coven", "secondwitch").await;
    join(&mut hag, "coven", "thirdwitch").await;
    for c in [&mut crone, &mut wicca, &mut hag] {
        c.drain().await;
    }

    let mut live = Vec::new();
    for (who, text) in [("crone", "one"), ("wicca", "two"), ("crone", "three")] {
        let c = if who == "crone" { &mut crone } else { &mut wicca };
        let mine = say(c, "coven", text).await;
        let theirs = groupchat_from(&mut hag, mine.attr("from").unwrap()).await;
        assert_eq!(room_stanza_id(&mine, "coven"), room_stanza_id(&theirs, "coven"));
        live.push((room_stanza_id(&theirs, "coven"), occupant_id(&theirs), nick_of(&theirs)));
    }
    wicca.send(&format!("<message to='{}' type='chat' id='pm1'><body>secret</body></message>", occupant("coven", "firstwitch"))).await;
    crone.expect("the private message", |e| e.name() == "message" && e.attr("id") == Some("pm1")).await;
    wicca
        .send(&format!(
            "<message to='{}' type='groupchat' id='spoof'><body>four</body><x xmlns='{MUC_USER}'><item jid='eve@evil.example/x' affiliation='owner' role='moderator'/></x></message>",
            room("coven")
        ))
        .await;
    let m = groupchat_from(&mut hag, &occupant("coven", "secondwitch")).await;
    live.push((room_stanza_id(&m, "coven"), occupant_id(&m), "secondwitch".to_string()));

    let (hits, iq) = room_archive(&mut hag, "coven", "").await;
    assert!(complete(&iq), "{}", show(&iq));
    assert_eq!(hits.iter().map(|h| body(&h.message).unwrap_or_default()).collect::<Vec<_>>(), ["one", "two", "three", "four"]);
    for (hit, (sid, oid, nick)) in hits.iter().zip(&live) {
        assert_eq!(&hit.id, sid, "the archive id is the live stanza-id");
        let m = &hit.message;
        assert_eq!(m.attr("from"), Some(occupant("coven", nick).as_str()), "{}", show(m));
        assert_eq!(m.attr("to"), None, "XEP-0313 §6.1.2: no 'to': {}", show(m));
        assert_eq!(m.attr("type"), Some("groupchat"), "{}", show(m));
        assert_eq!(&occupant_id(m), oid);
        assert_hides(m, &["crone1@localhost", "wiccarocks@localhost", "eve@evil.example"]);
    }
    // The moderator may see real JIDs, never the forged one.
    let (hits, _) = room_archive(&mut crone, "coven", "").await;
    assert_eq!(hits.len(), 4);
    for h in &hits {
        assert_hides(&h.message, &["eve@evil.example"]);
    }

    let (page1, iq) = room_archive(&mut hag, "coven", "<max>2</max>").await;
    assert_eq!(page1.iter().map(|h| h.id.clone()).collect::<Vec<_>>(), [live[0].0.clone(), live[1].0.clone()]);
    assert!(!complete(&iq), "not the last page: {}", show(&iq));
    let last = fin(&iq).get_child("set", RSM).and_then(|s| s.get_child("last", RSM)).map(|l| l.text()).expect("<last/>");
    assert_eq!(last, live[1].0);
    let (page2, iq) = room_archive(&mut hag, "coven", &format!("<max>2</max><after>{last}</after>")).await;
    assert_eq!(page2.iter().map(|h| h.id.clone()).collect::<Vec<_>>(), [live[2].0.clone(), live[3].0.clone()]);
    assert!(complete(&iq), "{}", show(&iq));
    s.stop().await;
}

/// XEP-0313 §6.1.2: "A MUC archive MUST check that the user requesting the archive has the
/// right to enter it at the time of the query": an outcast of an open room gets an error
/// and no results.
async fn archive_refused_to_outcasts(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "hag66"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    create(&mut crone, "coven", "firstwitch", &[]).await;
    say(&mut crone, "coven", "not for outcasts").await;
    let r = admin_set(&mut crone, "coven", "<item affiliation='outcast' jid='hag66@localhost'/>").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let (hits, iq) = room_archive(&mut hag, "coven", "").await;
    assert_eq!(iq.attr("type"), Some("error"), "{}", show(&iq));
    assert!(hits.is_empty());
    s.stop().await;
}

// =======================================================================================
// 11. Bad input

/// §7.2.1 (Example 19): a join without a nick (to the room's bare JID) gets jid-malformed
/// (modify) from the room. An occupant JID with an empty resource, or a resource longer than
/// a JID allows (RFC 7622 §3.4: 1023 bytes), is not a JID: jid-malformed. §17.1: "a MUC
/// service MUST NOT allow empty or invisible Room Nicknames (i.e., Room Nicknames that
/// consist only of one or more space characters)" (refused; the spec names no condition, so
/// jid-malformed or not-acceptable). None of them enters: the occupants see nothing, and the
/// user is still not an occupant (§7.4: not-acceptable).
async fn bad_nicks(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "hag66"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    create(&mut crone, "coven", "firstwitch", &[]).await;

    hag.send(&format!("<presence to='{}' id='nonick'><x xmlns='{MUC}'/></presence>", room("coven"))).await;
    let err = error_for(&mut hag, "presence", "nonick").await;
    assert_error(&err, "jid-malformed", Some("modify"));
    assert_eq!(err.attr("from"), Some(room("coven").as_str()), "Example 19: {}", show(&err));

    hag.send(&format!("<presence to='{}/' id='empty'><x xmlns='{MUC}'/></presence>", room("coven"))).await;
    let err = error_for(&mut hag, "presence", "empty").await;
    assert_error(&err, "jid-malformed", None);

    let long = "a".repeat(1100);
    hag.send(&format!("<presence to='{}/{long}' id='long'><x xmlns='{MUC}'/></presence>", room("coven"))).await;
    let err = error_for(&mut hag, "presence", "long").await;
    assert_error(&err, "jid-malformed", None);

    hag.send(&format!("<presence to='{}/   ' id='spaces'><x xmlns='{MUC}'/></presence>", room("coven"))).await;
    let err = error_for(&mut hag, "presence", "spaces").await;
    assert_error_among(&err, &["jid-malformed", "not-acceptable"]);

    nothing_from_room(&mut crone, "coven").await;
    let id = send_groupchat(&mut hag, "coven", "am I in?").await;
    let err = error_for(&mut hag, "message", &id).await;
    assert_error(&err, "not-acceptable", None);
    s.stop().await;
}

/// §10.1.3 (Example 161): a configuration that violates the service's policies, "e.g.,
/// because the password for a password-protected room is blank", gets not-acceptable
/// (modify). Values a field cannot take (a boolean that is neither 0/1 nor true/false, a
/// whois or maxusers outside the field's options) are refused too (XEP-0004 gives no
/// condition: bad-request or not-acceptable). A refused form changes nothing, not even
/// its valid fields.
async fn bad_config_forms(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "hag66"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    create(&mut crone, "coven", "firstwitch", &[("muc#roomconfig_roomname", "A Dark Cave")]).await;

    let r = configure(&mut crone, "coven", &[("muc#roomconfig_passwordprotectedroom", "1"), ("muc#roomconfig_roomsecret", "")]).await;
    assert_error(&r, "not-acceptable", Some("modify"));
    for bad in [
        [("muc#roomconfig_roomname", "Changed"), ("muc#roomconfig_persistentroom", "maybe")],
        [("muc#roomconfig_roomname", "Changed"), ("muc#roomconfig_whois", "everyone")],
        [("muc#roomconfig_roomname", "Changed"), ("muc#roomconfig_maxusers", "many")],
    ] {
        let r = configure(&mut crone, "coven", &bad).await;
        assert_error_among(&r, &["bad-request", "not-acceptable"]);
    }
    let form = config_form(&get_config(&mut crone, "coven").await);
    assert_eq!(value(&form, "muc#roomconfig_roomname").as_deref(), Some("A Dark Cave"));
    assert!(!boolean(&form, "muc#roomconfig_persistentroom"));
    assert!(!boolean(&form, "muc#roomconfig_passwordprotectedroom"));
    assert_eq!(value(&form, "muc#roomconfig_whois").as_deref(), Some("moderators"));
    let info = disco_info(&mut hag, &room("coven")).await;
    assert_features(&info, &["muc_unsecured", "muc_temporary", "muc_semianonymous"], &["muc_passwordprotected"]);
    join(&mut hag, "coven", "thirdwitch").await;
    s.stop().await;
}

/// Requests someone may not make. §8 (intro): a participant's kick or voice change, and §9
/// (intro): a participant's ban or member-list request, are forbidden. §10.2 (Example 164):
/// configuration by a non-owner is forbidden, get or set. §17.4 rule 4: an item changing
/// both role and affiliation is a bad-request. §6.6: a disco request to an occupant JID from
/// a non-occupant is a bad-request.
async fn unauthorized_requests(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "hag66", "hecate"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    let mut hecate = online(&s, "hecate", "broom").await;
    create(&mut crone, "coven", "firstwitch", &[]).await;
    join(&mut hag, "coven", "thirdwitch").await;
    crone.drain().await;

    for items in [
        "<item nick='firstwitch' role='none'/>",
        "<item nick='firstwitch' role='visitor'/>",
        "<item affiliation='outcast' jid='crone1@localhost'/>",
        "<item affiliation='member' jid='hecate@localhost'/>",
    ] {
        let r = admin_set(&mut hag, "coven", items).await;
        assert_error(&r, "forbidden", None);
    }
    let r = admin_list(&mut hag, "coven", "affiliation='outcast'").await;
    assert_error(&r, "forbidden", None);
    let r = get_config(&mut hag, "coven").await;
    assert_error(&r, "forbidden", Some("auth"));
    let r = configure(&mut hag, "coven", &[("muc#roomconfig_roomname", "Mine now")]).await;
    assert_error(&r, "forbidden", Some("auth"));
    nothing_from_room(&mut crone, "coven").await;

    let r = admin_set(&mut crone, "coven", "<item nick='thirdwitch' role='visitor' affiliation='member' jid='hag66@localhost'/>").await;
    assert_error(&r, "bad-request", None);

    let r = disco_info(&mut hecate, &occupant("coven", "thirdwitch")).await;
    assert_error(&r, "bad-request", None);
    s.stop().await;
}

/// `admins` (server administrators) "may do anything in any room": one who is no
/// affiliate of a room gets its owner form and destroys it (§10.2, §10.9).
async fn server_admin_powers(b: Backend) {
    let s = TestServer::start_with(b, |c| c.admins = vec![jid::BareJid::new("root@localhost").unwrap()]).await;
    s.users(&["crone1", "hag66", "root"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    let mut root = online(&s, "root", "console").await;
    create(&mut crone, "coven", "firstwitch", &[("muc#roomconfig_roomname", "A Dark Cave")]).await;
    join(&mut hag, "coven", "thirdwitch").await;
    crone.drain().await;

    let form = config_form(&get_config(&mut root, "coven").await);
    assert_eq!(value(&form, "muc#roomconfig_roomname").as_deref(), Some("A Dark Cave"));
    let r = root.request(&format!("<iq type='set' id='rootdestroy' to='{}'><query xmlns='{MUC_OWNER}'><destroy/></query></iq>", room("coven"))).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    for (c, nick) in [(&mut crone, "firstwitch"), (&mut hag, "thirdwitch")] {
        let p = presence_from(c, &occupant("coven", nick), true).await;
        assert!(user_x(&p).unwrap().get_child("destroy", MUC_USER).is_some(), "§10.9: {}", show(&p));
    }
    s.stop().await;
}

/// A deleted account leaves the rooms it was in (its sessions end) and loses its
/// affiliations, in the database and in the rooms in memory: whoever registers the name next
/// is a stranger to a members-only room (issue: "a user who is deleted leaves every room and
/// loses their affiliations").
async fn deleted_account_loses_affiliations(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "hag66"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    create(&mut crone, "coven", "firstwitch", &[("muc#roomconfig_membersonly", "1"), ("muc#roomconfig_persistentroom", "1")]).await;
    let r = admin_set(&mut crone, "coven", "<item affiliation='member' jid='hag66@localhost'/>").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    join(&mut hag, "coven", "thirdwitch").await;
    crone.drain().await;

    let jid = jid::BareJid::new("hag66@localhost").unwrap();
    assert!(starling::accounts::delete_account(s.server().core(), &jid).await.unwrap());
    let p = presence_from(&mut crone, &occupant("coven", "thirdwitch"), true).await;
    assert_eq!(affiliation_role(&p).1, "none", "{}", show(&p));
    let list = admin_list(&mut crone, "coven", "affiliation='member'").await;
    assert!(affiliation_list(&list, "member").is_empty(), "{}", show(&list));

    s.add_user("hag66", "pw").await;
    let mut newcomer = online(&s, "hag66", "pda").await;
    let err = refused(&mut newcomer, "coven", "thirdwitch", "").await;
    assert_error(&err, "registration-required", Some("auth"));
    s.stop().await;
}

db_tests!(
    service_discovery,
    shutdown_ends_rooms_before_storage,
    service_can_be_disabled,
    instant_room,
    reserved_room,
    cancel_or_leave_before_configuring,
    creation_restricted,
    entering_order,
    history_limits,
    nick_conflict,
    password_protected,
    members_only,
    max_users,
    semi_anonymous_jids,
    non_anonymous_room,
    rejoin_resynchronizes,
    nick_change,
    availability_change,
    exit,
    disconnect_leaves,
    groupchat_message,
    forged_ids_are_replaced,
    non_occupant_messages,
    private_messages,
    subject_changes,
    kick,
    voice_in_moderated_room,
    ban,
    membership_in_open_room,
    admin_limits,
    owners_and_admins,
    destroy,
    persistent_room_survives_restart,
    persistent_rooms_beyond_memory_limit,
    temporary_room_vanishes,
    occupant_ids,
    occupant_ids_everywhere,
    invitations,
    self_ping,
    room_archive_query,
    archive_refused_to_outcasts,
    bad_nicks,
    bad_config_forms,
    unauthorized_requests,
    server_admin_powers,
    deleted_account_loses_affiliations,
);
