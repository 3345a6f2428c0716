//! Message retraction (XEP-0424, version 0.4.2) and moderation (XEP-0425, version 0.3.0) in
//! rooms, with tombstones in the room's archive (XEP-0424 §5, XEP-0425 §4), written from the
//! specifications: each test names the sections and examples it follows. In 1:1 chats the
//! server passes retractions on untouched.
//!
//! The rooms are on conference.localhost; the spec's Romeo, Juliet and the Capulets speak.

use minidom::Element;

use crate::common::client::{CLIENT, Client, show};
use crate::common::{Backend, TestServer};
use crate::db_tests;
use crate::muc::{
    Archived, admin_set, assert_error, assert_features, body, configure, create, disco_info, error_for, join, leave, next_id,
    nothing_from_room, occupant, occupant_id, online, restart, room, room_archive, room_stanza_id, say,
};

pub(crate) const RETRACT: &str = "urn:xmpp:message-retract:1";
const MODERATE: &str = "urn:xmpp:message-moderate:1";
const TOMBSTONE: &str = "urn:xmpp:message-retract:1#tombstone";
const OCCUPANT_ID: &str = "urn:xmpp:occupant-id:0";
const SID: &str = "urn:xmpp:sid:0";
const DELAY: &str = "urn:xmpp:delay";
/// XEP-0424 §4 Example 4's fallback text.
const FALLBACK: &str = "/me retracted a previous message, but it's unsupported by your client.";

// ---------------------------------------------------------------------------------------
// Helpers

/// XEP-0424 §4 Example 4, in a room: a retraction of the message with the room's stanza-id
/// `target`, with the fallback body (or without); its id is returned.
async fn send_retraction(c: &mut Client, name: &str, target: &str, fallback: bool) -> String {
    let id = next_id("retract-message-");
    let extra = if fallback {
        format!("<fallback xmlns='urn:xmpp:fallback:0' for='{RETRACT}'/><body>{FALLBACK}</body><store xmlns='urn:xmpp:hints'/>")
    } else {
        String::new()
    };
    c.send(&format!("<message type='groupchat' to='{}' id='{id}'><retract id='{target}' xmlns='{RETRACT}'/>{extra}</message>", room(name)))
        .await;
    id
}

/// The groupchat message with this id from the room (or an occupant), not an error.
async fn room_message(c: &mut Client, id: &str) -> Element {
    let m = c.expect(&format!("message {id}"), |e| e.name() == "message" && e.attr("id") == Some(id) && e.attr("type") != Some("error")).await;
    assert_eq!(m.attr("type"), Some("groupchat"), "{}", show(&m));
    assert_eq!(m.attr("to"), Some(c.jid.as_str()), "{}", show(&m));
    m
}

/// The `<retract/>` of a retraction or moderation, naming `target`.
fn retract_of<'a>(m: &'a Element, target: &str) -> &'a Element {
    let r = m.get_child("retract", RETRACT).unwrap_or_else(|| panic!("no <retract/>: {}", show(m)));
    assert_eq!(r.attr("id"), Some(target), "the retraction names the room's stanza-id: {}", show(m));
    r
}

/// XEP-0425 §3 Example 4: a moderator's request; the answer.
async fn moderate(c: &mut Client, name: &str, target: &str, reason: Option<&str>) -> Element {
    let reason = reason.map(|r| format!("<reason>{r}</reason>")).unwrap_or_default();
    c.request(&format!(
        "<iq type='set' to='{}' id='{}'><moderate id='{target}' xmlns='{MODERATE}'><retract xmlns='{RETRACT}'/>{reason}</moderate></iq>",
        room(name),
        next_id("retract-request-")
    ))
    .await
}

/// The moderation message (XEP-0425 §3.1 Example 5) as one occupant receives it.
async fn moderation_notice(c: &mut Client, name: &str, target: &str) -> Element {
    let m = c
        .expect("a moderation", |e| e.name() == "message" && e.get_child("retract", RETRACT).is_some_and(|r| r.attr("id") == Some(target)))
        .await;
    assert_eq!(m.attr("from"), Some(room(name).as_str()), "XEP-0425 §5: moderations come from the room itself: {}", show(&m));
    assert_eq!(m.attr("type"), Some("groupchat"), "{}", show(&m));
    assert_eq!(m.attr("to"), Some(c.jid.as_str()), "{}", show(&m));
    assert!(m.attr("id").is_some_and(|i| !i.is_empty()), "{}", show(&m));
    m
}

/// The `<moderated/>` in `parent` (a `<retract/>` or a `<retracted/>`): by the moderator's
/// occupant JID, with the moderator's occupant id.
fn check_moderated(parent: &Element, by: &str, moderator_oid: &str, reason: Option<&str>) {
    let m = parent.get_child("moderated", MODERATE).unwrap_or_else(|| panic!("no <moderated/>: {}", show(parent)));
    assert_eq!(m.attr("by"), Some(by), "{}", show(parent));
    let oid = m.get_child("occupant-id", OCCUPANT_ID).and_then(|o| o.attr("id"));
    assert_eq!(oid, Some(moderator_oid), "XEP-0425 §4: the moderator's occupant id: {}", show(parent));
    let got = parent.get_child("reason", RETRACT).map(|r| r.text());
    assert_eq!(got.as_deref(), reason, "{}", show(parent));
}

/// The archived message with this id, from a query of the whole room archive.
async fn archived(c: &mut Client, name: &str, id: &str) -> Element {
    let (hits, iq) = room_archive(c, name, "").await;
    assert_eq!(iq.attr("type"), Some("result"), "{}", show(&iq));
    find(&hits, id)
}

fn find(hits: &[Archived], id: &str) -> Element {
    hits.iter().find(|h| h.id == id).map(|h| h.message.clone()).unwrap_or_else(|| panic!("{id} is not in the archive"))
}

/// XEP-0424 §5 Example 6: the message's metadata kept (type, author, id, occupant id), its
/// content gone, and `<retracted/>` with the retraction's id and a stamp; returned.
fn check_tombstone<'a>(t: &'a Element, original: &Element, retraction_id: Option<&str>) -> &'a Element {
    assert_eq!(t.attr("type"), Some("groupchat"), "{}", show(t));
    assert_eq!(t.attr("from"), original.attr("from"), "the author stays: {}", show(t));
    assert_eq!(t.attr("id"), original.attr("id"), "the message's id stays: {}", show(t));
    assert!(t.get_child("body", CLIENT).is_none(), "§5: the body is gone: {}", show(t));
    assert!(!show(t).contains("secret"), "nothing of the content stays: {}", show(t));
    assert_eq!(occupant_id(t), occupant_id(original), "XEP-0425 §4: the author's occupant id stays: {}", show(t));
    let r = t.get_child("retracted", RETRACT).unwrap_or_else(|| panic!("§5: no <retracted/>: {}", show(t)));
    if let Some(id) = retraction_id {
        assert_eq!(r.attr("id"), Some(id), "§5: MUST include the retraction's id: {}", show(t));
    }
    assert!(r.attr("stamp").is_some_and(|s| s.ends_with('Z') && s.contains('T')), "§5: SHOULD include a stamp: {}", show(t));
    r
}

/// A room with `owner` as owner (a moderator) and `nick` entered by each of `others`.
async fn room_with(owner: &mut Client, name: &str, others: &mut [(&mut Client, &str)], fields: &[(&str, &str)]) {
    create(owner, name, "owner", fields).await;
    for (c, nick) in others.iter_mut() {
        join(c, name, nick).await;
    }
    owner.drain().await;
    for (c, _) in others.iter_mut() {
        c.drain().await;
    }
}

// =======================================================================================
// Discovery

/// XEP-0424 §2 (the server that archives retractions MUST advertise retract:1) and §5
/// (a service with tombstones MUST advertise retract:1#tombstone); XEP-0425 §2 Example 2
/// (a room that supports moderation MUST advertise moderate:1). A room without an archive
/// keeps no retraction and has no message to moderate: none of them.
async fn features(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["juliet", "romeo"]).await;
    let mut juliet = online(&s, "juliet", "balcony").await;
    let mut romeo = online(&s, "romeo", "orchard").await;
    create(&mut juliet, "garden", "juliet", &[]).await;
    let info = disco_info(&mut romeo, &room("garden")).await;
    assert_features(&info, &[RETRACT, TOMBSTONE, MODERATE], &[]);

    let r = configure(&mut juliet, "garden", &[("muc#roomconfig_enablearchiving", "0")]).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let info = disco_info(&mut romeo, &room("garden")).await;
    assert_features(&info, &[], &[RETRACT, TOMBSTONE, MODERATE]);
    s.stop().await;
}

// =======================================================================================
// XEP-0424: retraction by the author

/// XEP-0424 §4 (Examples 3-4, with the room's stanza-id as §4 and §6.1 say for group chat):
/// the retraction goes to every occupant, stamped like any groupchat message (the author's
/// occupant id, a stanza-id of its own); the retracted message becomes a tombstone in the
/// archive (§5 Example 6) and the retraction is archived too (§6: MUST), with or without a
/// fallback body; a newcomer's history has the tombstones, not the text (§6: "not replaying
/// the message to new occupants").
async fn author_retracts(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["lord", "romeo", "tybalt"]).await;
    let mut lord = online(&s, "lord", "chamber").await;
    let mut romeo = online(&s, "romeo", "orchard").await;
    room_with(&mut lord, "capulet", &mut [(&mut romeo, "romeo")], &[]).await;

    let original = say(&mut romeo, "capulet", "secret: Have not saints lips, and holy palmers too?").await;
    let target = room_stanza_id(&original, "capulet");
    let seen = room_message(&mut lord, original.attr("id").unwrap()).await;
    let second = say(&mut romeo, "capulet", "secret number two").await;
    let target2 = room_stanza_id(&second, "capulet");
    lord.drain().await;

    let retraction_id = send_retraction(&mut romeo, "capulet", &target, true).await;
    for c in [&mut romeo, &mut lord] {
        let m = room_message(c, &retraction_id).await;
        assert_eq!(m.attr("from"), Some(occupant("capulet", "romeo").as_str()), "{}", show(&m));
        retract_of(&m, &target);
        assert!(m.get_child("moderated", MODERATE).is_none() && retract_of(&m, &target).get_child("moderated", MODERATE).is_none());
        assert_eq!(occupant_id(&m), occupant_id(&seen), "XEP-0424 §6: the author's occupant id, for clients to check");
        assert_ne!(room_stanza_id(&m, "capulet"), target, "the retraction has a stanza-id of its own");
        assert_eq!(body(&m).as_deref(), Some(FALLBACK), "the fallback body goes on: {}", show(&m));
    }
    // Without a fallback body: archived all the same.
    let retraction2_id = send_retraction(&mut romeo, "capulet", &target2, false).await;
    let m = room_message(&mut lord, &retraction2_id).await;
    retract_of(&m, &target2);
    let retraction2_sid = room_stanza_id(&m, "capulet");

    let (hits, iq) = room_archive(&mut lord, "capulet", "").await;
    assert_eq!(iq.attr("type"), Some("result"), "{}", show(&iq));
    check_tombstone(&find(&hits, &target), &seen, Some(&retraction_id));
    check_tombstone(&find(&hits, &target2), &second, Some(&retraction2_id));
    let kept: Vec<&Element> = hits.iter().map(|h| &h.message).filter(|m| m.get_child("retract", RETRACT).is_some()).collect();
    assert_eq!(kept.len(), 2, "§6: the archive MUST store the retractions: {}", kept.iter().map(|m| show(m)).collect::<Vec<_>>().join(" "));
    retract_of(&find(&hits, &retraction2_sid), &target2);
    assert!(hits.iter().all(|h| !show(&h.message).contains("secret")), "nothing of the retracted text in the archive");

    let mut tybalt = online(&s, "tybalt", "street").await;
    let e = join(&mut tybalt, "capulet", "tybalt").await;
    assert!(e.history.iter().all(|m| !show(m).contains("secret")), "§6: the history does not replay retracted messages");
    let tombstones: Vec<&Element> = e.history.iter().filter(|m| m.get_child("retracted", RETRACT).is_some()).collect();
    assert_eq!(tombstones.len(), 2, "the history has the tombstones in their place");
    check_tombstone(tombstones[0], &seen, Some(&retraction_id));
    assert_eq!(tombstones[0].get_child("delay", DELAY).and_then(|d| d.attr("from")), Some(room("capulet").as_str()));
    s.stop().await;
}

/// XEP-0424 §6 and §8: a retraction is processed only when it comes from the author of the
/// message, which in a room is the occupant id (XEP-0421), stable per real bare JID, not the
/// nick. The room refuses the others and passes nothing on: another occupant's message
/// (forbidden, auth), even under the author's former nick; an unknown id, or a message
/// already retracted (item-not-found, cancel); a retraction is not retracted (§6: the archive
/// MUST keep it; not-acceptable). The author is recognised under a new nick and from another
/// resource.
async fn only_the_author_retracts(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["lord", "romeo", "tybalt"]).await;
    let mut lord = online(&s, "lord", "chamber").await;
    let mut romeo = online(&s, "romeo", "orchard").await;
    let mut tybalt = online(&s, "tybalt", "street").await;
    room_with(&mut lord, "verona", &mut [(&mut romeo, "romeo"), (&mut tybalt, "tybalt")], &[]).await;

    let original = say(&mut romeo, "verona", "secret: a kiss").await;
    let target = room_stanza_id(&original, "verona");
    let theirs = say(&mut tybalt, "verona", "secret: a sword").await;
    let id = send_retraction(&mut romeo, "verona", &room_stanza_id(&theirs, "verona"), true).await;
    assert_error(&error_for(&mut romeo, "message", &id).await, "forbidden", Some("auth"));
    let id = send_retraction(&mut tybalt, "verona", &target, true).await;
    assert_error(&error_for(&mut tybalt, "message", &id).await, "forbidden", Some("auth"));
    let id = send_retraction(&mut romeo, "verona", "not-a-stanza-id", true).await;
    assert_error(&error_for(&mut romeo, "message", &id).await, "item-not-found", Some("cancel"));
    lord.drain().await;
    nothing_from_room(&mut lord, "verona").await;

    // Tybalt takes Romeo's nick after Romeo left: still not the author.
    leave(&mut romeo, "verona", "romeo").await;
    leave(&mut tybalt, "verona", "tybalt").await;
    tybalt.drain().await;
    join(&mut tybalt, "verona", "romeo").await;
    let id = send_retraction(&mut tybalt, "verona", &target, true).await;
    assert_error(&error_for(&mut tybalt, "message", &id).await, "forbidden", Some("auth"));
    leave(&mut tybalt, "verona", "romeo").await;

    // Romeo, under another nick and from another resource, is the author.
    let mut romeo2 = online(&s, "romeo", "balcony").await;
    join(&mut romeo2, "verona", "montague").await;
    lord.drain().await;
    let id = send_retraction(&mut romeo2, "verona", &target, true).await;
    let m = room_message(&mut lord, &id).await;
    retract_of(&m, &target);
    assert_eq!(occupant_id(&m), occupant_id(&original), "XEP-0421: the same occupant id under another nick");
    let tomb = archived(&mut lord, "verona", &target).await;
    check_tombstone(&tomb, &original, Some(&id));

    let again = send_retraction(&mut romeo2, "verona", &target, true).await;
    assert_error(&error_for(&mut romeo2, "message", &again).await, "item-not-found", Some("cancel"));
    // §6: the archive MUST keep the retraction: it is not retracted in its turn.
    let undo = send_retraction(&mut romeo2, "verona", &room_stanza_id(&m, "verona"), true).await;
    assert_error(&error_for(&mut romeo2, "message", &undo).await, "not-acceptable", Some("modify"));
    s.stop().await;
}

// =======================================================================================
// XEP-0425: moderation

/// XEP-0425 §3 and §3.1: a moderator's request (Example 4) retracts a message: the room
/// sends the moderation (Example 5: from the room, `<retract/>` naming the stanza-id, with
/// `<moderated/>` by the moderator and its occupant id, and the reason) to every occupant,
/// the moderator included, and answers with a result (Example 6) once the tombstone is
/// committed: the archive shows it at once (§4 Example 8: the author's occupant id kept,
/// `<retracted/>` with a stamp, `<moderated/>` and the reason), and the moderation itself.
async fn moderator_retracts(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["witch", "oldhag", "macbeth", "banquo"]).await;
    let mut witch = online(&s, "witch", "cauldron").await;
    let mut oldhag = online(&s, "oldhag", "heath").await;
    let mut macbeth = online(&s, "macbeth", "castle").await;
    room_with(&mut witch, "muc", &mut [(&mut oldhag, "oldhag"), (&mut macbeth, "macbeth")], &[]).await;

    // Example 3.
    let spam = say(&mut oldhag, "muc", "secret: DM me for free magic potions!").await;
    let target = room_stanza_id(&spam, "muc");
    let witch_oid = occupant_id(&say(&mut witch, "muc", "I see it").await);
    macbeth.drain().await;

    let reason = "This message contains inappropriate content for this forum";
    let result = moderate(&mut witch, "muc", &target, Some(reason)).await;
    assert_eq!(result.attr("type"), Some("result"), "Example 6: {}", show(&result));
    assert_eq!(result.attr("from"), Some(room("muc").as_str()), "{}", show(&result));
    let mut notice_id = None;
    for c in [&mut witch, &mut oldhag, &mut macbeth] {
        let m = moderation_notice(c, "muc", &target).await;
        check_moderated(retract_of(&m, &target), &occupant("muc", "owner"), &witch_oid, Some(reason));
        assert!(m.get_child("occupant-id", OCCUPANT_ID).is_none(), "the room's own message has no occupant id: {}", show(&m));
        let sid = room_stanza_id(&m, "muc");
        assert!(notice_id.as_ref().is_none_or(|n| *n == sid), "one moderation, one stanza-id");
        notice_id = Some(sid);
    }

    let (hits, iq) = room_archive(&mut macbeth, "muc", "").await;
    assert_eq!(iq.attr("type"), Some("result"), "{}", show(&iq));
    let tomb = find(&hits, &target);
    let retracted = check_tombstone(&tomb, &spam, None);
    check_moderated(retracted, &occupant("muc", "owner"), &witch_oid, Some(reason));
    let notice = find(&hits, notice_id.as_ref().unwrap());
    assert_eq!(notice.attr("from"), Some(room("muc").as_str()), "the moderation is archived: {}", show(&notice));
    check_moderated(retract_of(&notice, &target), &occupant("muc", "owner"), &witch_oid, Some(reason));
    assert_eq!(retracted.attr("id"), notice.attr("id"), "XEP-0424 §5: the tombstone names the retraction by its id");

    // Without a reason: none in the moderation or the tombstone.
    let other = say(&mut oldhag, "muc", "secret again").await;
    let target2 = room_stanza_id(&other, "muc");
    let result = moderate(&mut witch, "muc", &target2, None).await;
    assert_eq!(result.attr("type"), Some("result"), "{}", show(&result));
    let m = moderation_notice(&mut macbeth, "muc", &target2).await;
    check_moderated(retract_of(&m, &target2), &occupant("muc", "owner"), &witch_oid, None);
    let tomb = archived(&mut macbeth, "muc", &target2).await;
    check_moderated(check_tombstone(&tomb, &other, None), &occupant("muc", "owner"), &witch_oid, None);

    // A newcomer's history: the tombstones and the moderations, nothing of the text.
    let e = join(&mut online(&s, "banquo", "field").await, "muc", "banquo").await;
    assert!(e.history.iter().all(|m| !show(m).contains("secret")), "{}", e.history.iter().map(show).collect::<Vec<_>>().join(" "));
    assert_eq!(e.history.iter().filter(|m| m.get_child("retracted", RETRACT).is_some()).count(), 2);
    assert_eq!(e.history.iter().filter(|m| m.attr("from") == Some(room("muc").as_str())).count(), 2, "the moderations");
    s.stop().await;
}

/// XEP-0425 §3.2 (Example 7): only moderators moderate: a participant, a visitor and a
/// stranger get forbidden (type modify, as in the example) and nothing is retracted; an
/// unknown id, or a message already retracted, is item-not-found; a moderation is not
/// moderated (not-acceptable); a moderator's own message
/// and an admin's message may be moderated by a moderator; a moderator made by the owner
/// (role granted, §8.5) may moderate.
async fn moderation_refused(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["witch", "oldhag", "macbeth", "banquo"]).await;
    let mut witch = online(&s, "witch", "cauldron").await;
    let mut oldhag = online(&s, "oldhag", "heath").await;
    let mut macbeth = online(&s, "macbeth", "castle").await;
    let mut banquo = online(&s, "banquo", "field").await;
    room_with(&mut witch, "moor", &mut [(&mut oldhag, "oldhag"), (&mut macbeth, "macbeth")], &[]).await;

    let spam = say(&mut oldhag, "moor", "secret potions").await;
    let target = room_stanza_id(&spam, "moor");
    let own = room_stanza_id(&say(&mut macbeth, "moor", "my own words").await, "moor");
    for (c, who) in [(&mut macbeth, "a participant"), (&mut oldhag, "the author"), (&mut banquo, "a stranger")] {
        let r = moderate(c, "moor", &target, Some("no")).await;
        assert_error(&r, "forbidden", Some("modify"));
        assert!(show(&r).contains("Only moderators"), "{who}: {}", show(&r));
    }
    let r = moderate(&mut macbeth, "moor", &own, None).await;
    assert_error(&r, "forbidden", Some("modify"));
    // A visitor (§8.4: voice revoked).
    let r = admin_set(&mut witch, "moor", "<item nick='oldhag' role='visitor'/>").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    assert_error(&moderate(&mut oldhag, "moor", &target, None).await, "forbidden", Some("modify"));
    witch.drain().await;
    nothing_from_room(&mut witch, "moor").await;
    let tomb = archived(&mut witch, "moor", &target).await;
    assert_eq!(body(&tomb).as_deref(), Some("secret potions"), "nothing was retracted: {}", show(&tomb));

    let r = moderate(&mut witch, "moor", "not-a-stanza-id", None).await;
    assert_error(&r, "item-not-found", Some("cancel"));
    // Granted moderator (§8.5) moderates.
    let r = admin_set(&mut witch, "moor", "<item nick='macbeth' role='moderator'/>").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let r = moderate(&mut macbeth, "moor", &target, None).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let notice = moderation_notice(&mut witch, "moor", &target).await;
    assert_error(&moderate(&mut witch, "moor", &target, None).await, "item-not-found", Some("cancel"));
    // The moderation stays in the archive (XEP-0424 §6).
    let r = moderate(&mut witch, "moor", &room_stanza_id(&notice, "moor"), None).await;
    assert_error(&r, "not-acceptable", Some("modify"));
    let r = moderate(&mut macbeth, "moor", &own, None).await;
    assert_eq!(r.attr("type"), Some("result"), "a moderator's own message: {}", show(&r));
    // Only the retraction action exists (§1).
    let r = witch
        .request(&format!(
            "<iq type='set' to='{}' id='edit1'><moderate id='{own}' xmlns='{MODERATE}'><edit xmlns='urn:example'/></moderate></iq>",
            room("moor")
        ))
        .await;
    assert_error(&r, "feature-not-implemented", Some("cancel"));
    s.stop().await;
}

/// A persistent room's tombstones outlive a restart: in the archive and in the history the
/// room loads from it, for both kinds of retraction.
async fn tombstones_survive_restart(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["witch", "oldhag", "macbeth"]).await;
    let (spam, mine, retraction_id);
    {
        let mut witch = online(&s, "witch", "cauldron").await;
        let mut oldhag = online(&s, "oldhag", "heath").await;
        room_with(&mut witch, "cave", &mut [(&mut oldhag, "oldhag")], &[("muc#roomconfig_persistentroom", "1")]).await;
        spam = say(&mut oldhag, "cave", "secret potions").await;
        mine = say(&mut oldhag, "cave", "secret regrets").await;
        say(&mut oldhag, "cave", "kept words").await;
        retraction_id = send_retraction(&mut oldhag, "cave", &room_stanza_id(&mine, "cave"), true).await;
        room_message(&mut oldhag, &retraction_id).await;
        let r = moderate(&mut witch, "cave", &room_stanza_id(&spam, "cave"), Some("spam")).await;
        assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    }
    let s = restart(s).await;
    let mut macbeth = online(&s, "macbeth", "castle").await;
    let e = join(&mut macbeth, "cave", "macbeth").await;
    assert!(e.history.iter().all(|m| !show(m).contains("secret")), "{}", e.history.iter().map(show).collect::<Vec<_>>().join(" "));
    assert!(e.history.iter().any(|m| body(m).as_deref() == Some("kept words")));
    assert_eq!(e.history.iter().filter(|m| m.get_child("retracted", RETRACT).is_some()).count(), 2);
    let (hits, _) = room_archive(&mut macbeth, "cave", "").await;
    check_tombstone(&find(&hits, &room_stanza_id(&mine, "cave")), &mine, Some(&retraction_id));
    let tomb = find(&hits, &room_stanza_id(&spam, "cave"));
    let r = check_tombstone(&tomb, &spam, None);
    assert_eq!(r.get_child("reason", RETRACT).map(|r| r.text()).as_deref(), Some("spam"));
    s.stop().await;
}

/// In a 1:1 chat the server passes a retraction on untouched (XEP-0424 §4 Example 4).
async fn chat_retraction_passes(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["romeo", "lord"]).await;
    let mut romeo = online(&s, "romeo", "orchard").await;
    let mut lord = online(&s, "lord", "chamber").await;
    romeo
        .send(&format!(
            "<message type='chat' to='lord@localhost/chamber' id='retract-message-1'><retract id='wrong-recipient-1' xmlns='{RETRACT}'/>\
             <fallback xmlns='urn:xmpp:fallback:0' for='{RETRACT}'/><body>{FALLBACK}</body><store xmlns='urn:xmpp:hints'/></message>"
        ))
        .await;
    let m = lord.expect("the retraction", |e| e.name() == "message" && e.attr("id") == Some("retract-message-1")).await;
    assert_eq!(m.get_child("retract", RETRACT).and_then(|r| r.attr("id")), Some("wrong-recipient-1"), "{}", show(&m));
    assert!(m.get_child("fallback", "urn:xmpp:fallback:0").is_some() && body(&m).as_deref() == Some(FALLBACK), "{}", show(&m));
    assert!(m.children().all(|c| !c.is("stanza-id", SID) || c.attr("by") == Some("lord@localhost")), "{}", show(&m));
    s.stop().await;
}

db_tests!(
    features,
    author_retracts,
    only_the_author_retracts,
    moderator_retracts,
    moderation_refused,
    tombstones_survive_restart,
    chat_retraction_passes,
);
