//! Room nicknames by the PRECIS Nickname profile (RFC 8266) in XEP-0045 rooms: a nick is
//! enforced on entry and on a nick change (RFC 8266 §2.3: spaces trimmed and collapsed,
//! NFKC; the case kept), and nicks are compared by the profile's comparison (§2.4: also case
//! mapped), so that two nicks the same under it are one occupant: for conflicts (§7.2.8,
//! §7.6), reserved nicks (§7.10, reserved with an affiliation as in §9.3 Example 120),
//! private messages (§7.5) and IQs (§17.3) to an occupant, and kicks by nick (§8.2). The
//! occupant JID shows the enforced nick; when it is not the nick asked for, the occupant's
//! own presence has status 210 (§7.2.11, §7.6). A nick the profile rejects is a malformed
//! occupant JID (RFC 7622 §3.4, XEP-0045 §7.2.1): jid-malformed (modify).

use crate::common::client::{Client, show};
use crate::common::{Backend, TestServer};
use crate::db_tests;
use crate::muc::{
    MUC_USER, admin_set, affiliation_role, ar, assert_error, body, create, error_for, has_code, item, join, join_presence, nothing_from_room, occupant, online, presence_from, read_entry, refused, say,
};

/// A Hangul choseong (conjoining jamo): allowed in a resourcepart by resourceprep (RFC 6122),
/// disallowed by the PRECIS FreeformClass (RFC 8264 §9.9, OldHangulJamo) and so by the
/// Nickname profile.
const JAMO: &str = "\u{1100}";

/// crone1 has created the room "coven" as `owner_nick`; hag66 and wiccarocks are online.
pub(crate) async fn coven(b: Backend, owner_nick: &str) -> (TestServer, Client, Client, Client) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "hag66", "wiccarocks"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let hag = online(&s, "hag66", "pda").await;
    let wicca = online(&s, "wiccarocks", "laptop").await;
    create(&mut crone, "coven", owner_nick, &[]).await;
    (s, crone, hag, wicca)
}

/// [`coven`], with hag66 in the room as `nick`.
async fn owner_and_occupant(b: Backend, owner_nick: &str, nick: &str) -> (TestServer, Client, Client) {
    let (s, mut crone, mut hag, _) = coven(b, owner_nick).await;
    join(&mut hag, "coven", nick).await;
    crone.drain().await;
    (s, crone, hag)
}

/// §7.2.11: the nick asked for is enforced; the occupant JID shows the enforced nick, and the
/// self-presence has 210 (besides 110) when it differs from the one asked for. Widths are
/// mapped (NFKC), spaces trimmed and collapsed, the case and diacritics kept. Others see the
/// enforced nick without 210.
async fn nick_enforced_on_entry(b: Backend) {
    let (s, mut crone, mut hag, mut wicca) = coven(b, "Ĥécate").await;

    hag.send(&join_presence("coven", "  Ｔhird   Wïtch ", "")).await;
    let e = read_entry(&mut hag, "coven", "Third Wïtch").await;
    assert!(has_code(&e.me, "110") && has_code(&e.me, "210"), "§7.2.11: {}", show(&e.me));
    let p = presence_from(&mut crone, &occupant("coven", "Third Wïtch"), false).await;
    assert!(!has_code(&p, "210") && !has_code(&p, "110"), "210 is for the occupant only: {}", show(&p));
    let m = say(&mut hag, "coven", "renamed by the room").await;
    assert_eq!(m.attr("from"), Some(occupant("coven", "Third Wïtch").as_str()), "{}", show(&m));

    // A nick already in its enforced form: no 210.
    let e = join(&mut wicca, "coven", "Ŵïccà").await;
    assert!(!has_code(&e.me, "210"), "{}", show(&e.me));
    assert_eq!(e.other_nicks(), ["Third Wïtch", "Ĥécate"]);
    s.stop().await;
}

/// RFC 8266 §2.3 and RFC 7622 §3.4: a nick the profile rejects (a disallowed code point, or
/// nothing but spaces: XEP-0045 §17.1) is refused on entry with jid-malformed (modify) from
/// the occupant JID asked for, and on a nick change too; nobody sees anything, and the
/// occupant keeps its nick.
async fn invalid_nicks_refused(b: Backend) {
    let (s, mut crone, mut hag, _) = coven(b, "firstwitch").await;

    for bad in [format!("witch{JAMO}"), "   ".to_string()] {
        let err = refused(&mut hag, "coven", &bad, "").await;
        assert_error(&err, "jid-malformed", Some("modify"));
    }
    nothing_from_room(&mut crone, "coven").await;

    join(&mut hag, "coven", "thirdwitch").await;
    crone.drain().await;
    hag.drain().await;
    hag.send(&format!("<presence to='{}' id='badnick'/>", occupant("coven", &format!("witch{JAMO}")))).await;
    let err = error_for(&mut hag, "presence", "badnick").await;
    assert_error(&err, "jid-malformed", Some("modify"));
    nothing_from_room(&mut crone, "coven").await;
    let m = say(&mut hag, "coven", "still thirdwitch").await;
    assert_eq!(m.attr("from"), Some(occupant("coven", "thirdwitch").as_str()));
    s.stop().await;
}

/// §7.2.8 (Example 24) and §7.6 (Example 52): a nick the same as an occupant's under the
/// profile's comparison (case, width, spaces) is in use: conflict (cancel) on entry and on a
/// nick change. The same user's other resource with such a nick joins the same occupant
/// (the occupant JID shows its nick, with 210), and the occupant may change the case of its
/// own nick.
async fn equivalent_nicks_conflict(b: Backend) {
    let (s, mut crone, mut hag, mut wicca) = coven(b, "Ĥécate").await;
    join(&mut hag, "coven", "ThirdWitch").await;
    crone.drain().await;

    for taken in ["thirdwitch", "  thirdWITCH ", "ĥÉCATE"] {
        let err = refused(&mut wicca, "coven", taken, "").await;
        assert_error(&err, "conflict", Some("cancel"));
    }
    // Full width: the error comes from the address as the server parsed it (resourceprep
    // maps widths already).
    wicca.send(&join_presence("coven", "ＴＨＩＲＤＷＩＴＣＨ", "").replace("<presence ", "<presence id='wide' ")).await;
    let err = error_for(&mut wicca, "presence", "wide").await;
    assert_error(&err, "conflict", Some("cancel"));
    nothing_from_room(&mut crone, "coven").await;
    nothing_from_room(&mut hag, "coven").await;

    join(&mut wicca, "coven", "secondwitch").await;
    crone.drain().await;
    hag.drain().await;
    for (i, taken) in ["Ｔhirdwitch", "ĤÉCATE"].into_iter().enumerate() {
        let id = format!("nick{i}");
        wicca.send(&format!("<presence to='{}' id='{id}'/>", occupant("coven", taken))).await;
        let err = error_for(&mut wicca, "presence", &id).await;
        assert_error(&err, "conflict", Some("cancel"));
    }
    nothing_from_room(&mut crone, "coven").await;
    let m = say(&mut wicca, "coven", "still second").await;
    assert_eq!(m.attr("from"), Some(occupant("coven", "secondwitch").as_str()));
    hag.drain().await;
    crone.drain().await;

    // §7.2 (multi-session): hag's second resource, with her nick in other letters.
    let mut hag2 = online(&s, "hag66", "broom").await;
    hag2.send(&join_presence("coven", "THIRDWITCH", "")).await;
    let e = read_entry(&mut hag2, "coven", "ThirdWitch").await;
    assert!(has_code(&e.me, "210"), "the occupant JID is not the one asked for: {}", show(&e.me));
    let p = presence_from(&mut crone, &occupant("coven", "ThirdWitch"), false).await;
    assert!(!has_code(&p, "210"), "{}", show(&p));

    // §7.6: her own nick in another case is hers to take.
    hag.send(&format!("<presence to='{}'/>", occupant("coven", "thirdwitch"))).await;
    let gone = presence_from(&mut crone, &occupant("coven", "ThirdWitch"), true).await;
    assert!(has_code(&gone, "303"), "{}", show(&gone));
    assert_eq!(item(&gone).attr("nick"), Some("thirdwitch"), "{}", show(&gone));
    presence_from(&mut crone, &occupant("coven", "thirdwitch"), false).await;
    let back = presence_from(&mut hag, &occupant("coven", "thirdwitch"), false).await;
    assert!(has_code(&back, "110") && !has_code(&back, "210"), "{}", show(&back));
    s.stop().await;
}

/// §7.6 (Example 52 with the spec's "or that is reserved by another user affiliated with the
/// room") and §7.2.8: a nick reserved with an affiliation (§9.3 Example 120) is refused to
/// others in any equivalent form, with conflict (cancel), on entry and on a nick change; its
/// holder enters with it in any case, and the occupant JID shows the nick she asked for.
async fn reserved_nicks_compared_by_profile(b: Backend) {
    let (s, mut crone, mut hag, mut wicca) = coven(b, "firstwitch").await;
    let r = admin_set(&mut crone, "coven", "<item affiliation='member' jid='hag66@localhost' nick='Ĥag  Sixty'/>").await;
    assert_eq!(r.attr("type"), Some("result"), "Example 121: {}", show(&r));

    for reserved in ["ĥag sixty", " ĤAG   SIXTY"] {
        let err = refused(&mut wicca, "coven", reserved, "").await;
        assert_error(&err, "conflict", Some("cancel"));
    }
    join(&mut wicca, "coven", "secondwitch").await;
    crone.drain().await;
    wicca.send(&format!("<presence to='{}' id='takeit'/>", occupant("coven", "ĤAG SIXTY"))).await;
    let err = error_for(&mut wicca, "presence", "takeit").await;
    assert_error(&err, "conflict", Some("cancel"));
    nothing_from_room(&mut crone, "coven").await;

    let e = join(&mut hag, "coven", "ĥag sixty").await;
    assert_eq!(affiliation_role(&e.me), ar("member", "participant"));
    assert!(!has_code(&e.me, "210"), "{}", show(&e.me));
    s.stop().await;
}

/// §7.5 (Examples 46-47) and §17.3 rule 5: a private message or an IQ to an occupant JID
/// whose nick is the same as the occupant's under the profile's comparison reaches that
/// occupant; what comes back is from the occupant JID with the occupant's own nick.
async fn addressing_by_equivalent_nick(b: Backend) {
    let (s, mut crone, mut hag) = owner_and_occupant(b, "Ĥécate", "thirdwitch").await;

    hag.send(&format!("<message to='{}' type='chat' id='pm1'><body>Hail!</body></message>", occupant("coven", "ĥÉCATE"))).await;
    let m = crone.expect("the private message", |e| e.name() == "message" && e.attr("id") == Some("pm1")).await;
    assert_eq!(m.attr("from"), Some(occupant("coven", "thirdwitch").as_str()), "Example 47: {}", show(&m));
    assert_eq!(body(&m).as_deref(), Some("Hail!"));

    hag.send(&format!("<iq type='get' id='ver1' to='{}'><query xmlns='jabber:iq:version'/></iq>", occupant("coven", "  ĤÉCATE"))).await;
    let asked = crone.expect("the forwarded IQ", |e| e.name() == "iq" && e.attr("type") == Some("get")).await;
    assert_eq!(asked.attr("from"), Some(occupant("coven", "thirdwitch").as_str()), "{}", show(&asked));
    let id = asked.attr("id").unwrap_or_default().to_string();
    crone
        .send(&format!(
            "<iq type='result' id='{id}' to='{}'><query xmlns='jabber:iq:version'><name>broom</name></query></iq>",
            occupant("coven", "thirdwitch")
        ))
        .await;
    let answer = hag.expect("the answer", |e| e.name() == "iq" && e.attr("id") == Some("ver1")).await;
    assert_eq!(answer.attr("type"), Some("result"), "{}", show(&answer));
    assert_eq!(answer.attr("from"), Some(occupant("coven", "Ĥécate").as_str()), "{}", show(&answer));
    assert!(answer.get_child("query", "jabber:iq:version").is_some(), "{}", show(&answer));
    s.stop().await;
}

/// §8.2 (Examples 89-92): a moderator kicks by a nick equivalent to the occupant's; the
/// occupant is removed under its own nick, with 307.
async fn kick_by_equivalent_nick(b: Backend) {
    let (s, mut crone, mut hag) = owner_and_occupant(b, "firstwitch", "Ĥag").await;

    let r = admin_set(&mut crone, "coven", "<item nick='ĥAG' role='none'><reason>Begone</reason></item>").await;
    assert_eq!(r.attr("type"), Some("result"), "Example 91: {}", show(&r));
    let p = presence_from(&mut hag, &occupant("coven", "Ĥag"), true).await;
    assert!(has_code(&p, "307") && has_code(&p, "110"), "Example 90: {}", show(&p));
    let p = presence_from(&mut crone, &occupant("coven", "Ĥag"), true).await;
    assert!(has_code(&p, "307"), "Example 92: {}", show(&p));
    assert!(p.get_child("x", MUC_USER).is_some());

    // Voice by nick the same way (§8.3): an unknown nick is item-not-found.
    let r = admin_set(&mut crone, "coven", "<item nick='ĥAG' role='visitor'/>").await;
    assert_error(&r, "item-not-found", None);
    s.stop().await;
}

db_tests!(
    nick_enforced_on_entry,
    invalid_nicks_refused,
    equivalent_nicks_conflict,
    reserved_nicks_compared_by_profile,
    addressing_by_equivalent_nick,
    kick_by_equivalent_nick,
);
