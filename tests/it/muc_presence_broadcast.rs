//! `muc#roomconfig_presencebroadcast` (XEP-0045 §10.2, §7.2.3: "unless the room is configured
//! to not broadcast presence from new occupants below a certain affiliation level"): the
//! roles whose presence the other occupants get. An occupant whose role is not listed is not
//! announced to the others, on entry, on a presence change or on leaving; its own
//! self-presence (110) still comes back; it gets the others' presence as usual. The setting is
//! in the configuration form (list-multi, every role by default) and stored with the room.

use minidom::Element;

use crate::common::client::{Client, show};
use crate::common::{Backend, TestServer};
use crate::db_tests;
use crate::muc_nicks::coven;
use crate::muc::{
    DATA, MUC_OWNER, ROOMCONFIG, admin_set, affiliation_role, ar, assert_error, config_form, create, field, get_config, has_code, join, leave,
    next_id, nothing_from_room, occupant, online, presence_from, room, values,
};

const FIELD: &str = "muc#roomconfig_presencebroadcast";

/// Submit a configuration with `roles` as the presencebroadcast values (and `extra` fields).
async fn set_broadcast(c: &mut Client, name: &str, roles: &[&str], extra: &str) -> Element {
    let values: String = roles.iter().map(|r| format!("<value>{r}</value>")).collect();
    c.request(&format!(
        "<iq type='set' id='{}' to='{}'><query xmlns='{MUC_OWNER}'><x xmlns='{DATA}' type='submit'>\
         <field var='FORM_TYPE'><value>{ROOMCONFIG}</value></field><field var='{FIELD}'>{values}</field>{extra}</x></query></iq>",
        next_id("pb"),
        room(name)
    ))
    .await
}

/// §10.2 (Example 163): the field is a list-multi of the three roles, all of them by default;
/// a submitted list is what the form shows next; a value that is not a role is
/// not-acceptable and changes nothing.
async fn presence_broadcast_in_form(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    create(&mut crone, "coven", "firstwitch", &[("muc#roomconfig_persistentroom", "1")]).await;
    let form = config_form(&get_config(&mut crone, "coven").await);
    let f = field(&form, FIELD).unwrap_or_else(|| panic!("no {FIELD}: {}", show(&form)));
    assert_eq!(f.attr("type"), Some("list-multi"), "{}", show(f));
    assert_eq!(values(&form, FIELD), ["moderator", "participant", "visitor"]);
    let options: Vec<String> = f.children().filter(|o| o.is("option", DATA)).filter_map(|o| o.get_child("value", DATA)).map(|v| v.text()).collect();
    assert_eq!(options, ["moderator", "participant", "visitor"]);

    let r = set_broadcast(&mut crone, "coven", &["visitor", "moderator"], "").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    crone.drain().await;
    let form = config_form(&get_config(&mut crone, "coven").await);
    assert_eq!(values(&form, FIELD), ["moderator", "visitor"]);

    let r = set_broadcast(&mut crone, "coven", &["moderator", "witch"], "").await;
    assert_error(&r, "not-acceptable", None);
    let r = set_broadcast(&mut crone, "coven", &[], "").await;
    assert_eq!(r.attr("type"), Some("result"), "an empty list: nobody's presence: {}", show(&r));
    crone.drain().await;
    let form = config_form(&get_config(&mut crone, "coven").await);
    assert!(values(&form, FIELD).is_empty(), "{}", show(&form));
    s.stop().await;
}

/// A moderated room broadcasting moderators' and participants' presence only: a visitor's
/// entry, presence change and exit reach nobody else, while the visitor gets the others'
/// presence and its own (110) each time; given voice, the occupant is announced with its
/// new role, and its exit is then told too. Out of the broadcast roles again (voice revoked,
/// or visitors taken out of `presencebroadcast`), the others get an unavailable presence
/// (role none) for it; visitors put in `presencebroadcast` are announced to the others.
async fn visitors_not_announced(b: Backend) {
    let (s, mut crone, mut hag, mut wicca) = coven(b, "firstwitch").await;
    let r = set_broadcast(&mut crone, "coven", &["moderator", "participant"], "<field var='muc#roomconfig_moderatedroom'><value>1</value></field>").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    crone.drain().await;

    let e = join(&mut hag, "coven", "thirdwitch").await;
    assert_eq!(affiliation_role(&e.me), ar("none", "visitor"));
    assert!(has_code(&e.me, "110"), "{}", show(&e.me));
    assert_eq!(e.other_nicks(), ["firstwitch"], "a visitor gets the others' presence");
    nothing_from_room(&mut crone, "coven").await;

    hag.send(&format!("<presence to='{}'><show>away</show></presence>", occupant("coven", "thirdwitch"))).await;
    let p = presence_from(&mut hag, &occupant("coven", "thirdwitch"), false).await;
    assert!(has_code(&p, "110"), "the own presence comes back: {}", show(&p));
    nothing_from_room(&mut crone, "coven").await;

    // A participant (a member) is announced to everyone, the visitor included.
    let r = admin_set(&mut crone, "coven", "<item affiliation='member' jid='wiccarocks@localhost'/>").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let e = join(&mut wicca, "coven", "secondwitch").await;
    assert_eq!(e.other_nicks(), ["firstwitch"], "the visitor is not announced to a newcomer either");
    presence_from(&mut crone, &occupant("coven", "secondwitch"), false).await;
    presence_from(&mut hag, &occupant("coven", "secondwitch"), false).await;

    // Voice (§8.3): now a participant, announced.
    let r = admin_set(&mut crone, "coven", "<item nick='thirdwitch' role='participant'/>").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    for c in [&mut crone, &mut wicca, &mut hag] {
        let p = presence_from(c, &occupant("coven", "thirdwitch"), false).await;
        assert_eq!(affiliation_role(&p), ar("none", "participant"), "{}", show(&p));
    }
    // Voice revoked: a visitor again; the others, who knew of her, see her leave.
    let r = admin_set(&mut crone, "coven", "<item nick='thirdwitch' role='visitor'/>").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let p = presence_from(&mut hag, &occupant("coven", "thirdwitch"), false).await;
    assert_eq!(affiliation_role(&p), ar("none", "visitor"), "{}", show(&p));
    assert!(has_code(&p, "110"), "{}", show(&p));
    for c in [&mut crone, &mut wicca] {
        presence_from(c, &occupant("coven", "thirdwitch"), true).await;
        nothing_from_room(c, "coven").await;
    }

    // Visitors broadcast from now on: the others get her presence; and then no longer.
    let all = set_broadcast(&mut crone, "coven", &["moderator", "participant", "visitor"], "").await;
    assert_eq!(all.attr("type"), Some("result"), "{}", show(&all));
    for c in [&mut crone, &mut wicca] {
        let p = presence_from(c, &occupant("coven", "thirdwitch"), false).await;
        assert_eq!(affiliation_role(&p), ar("none", "visitor"), "{}", show(&p));
    }
    let r = set_broadcast(&mut crone, "coven", &["moderator", "participant"], "").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    for c in [&mut crone, &mut wicca] {
        presence_from(c, &occupant("coven", "thirdwitch"), true).await;
    }
    let r = admin_set(&mut crone, "coven", "<item nick='thirdwitch' role='participant'/>").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    for c in [&mut crone, &mut wicca] {
        presence_from(c, &occupant("coven", "thirdwitch"), false).await;
    }
    hag.drain().await;

    leave(&mut hag, "coven", "thirdwitch").await;
    presence_from(&mut crone, &occupant("coven", "thirdwitch"), true).await;
    presence_from(&mut wicca, &occupant("coven", "thirdwitch"), true).await;

    // A visitor leaving is not told either.
    crone.drain().await;
    wicca.drain().await;
    let mut hag2 = online(&s, "hag66", "broom").await;
    join(&mut hag2, "coven", "fourthwitch").await;
    leave(&mut hag2, "coven", "fourthwitch").await;
    nothing_from_room(&mut crone, "coven").await;
    nothing_from_room(&mut wicca, "coven").await;
    s.stop().await;
}

db_tests!(presence_broadcast_in_form, visitors_not_announced);
