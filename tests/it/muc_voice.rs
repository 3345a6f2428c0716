//! XEP-0045 (1.35.5) voice requests (§7.13, §8.6), registration with a room (§7.10) and
//! reserved nick discovery (§7.11), and room vCards (vcard-temp on the room's JID, the
//! avatar hash in muc#roominfo), written from the specifications: each test names the
//! sections and examples it follows. The service is conference.localhost; the accounts and
//! nicks are the spec's witches.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use minidom::Element;

use crate::common::client::{CLIENT, Client, condition, show};
use crate::common::{Backend, TestServer};
use crate::db_tests;

const SERVICE: &str = "conference.localhost";
const MUC: &str = "http://jabber.org/protocol/muc";
const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
const MUC_REQUEST: &str = "http://jabber.org/protocol/muc#request";
const MUC_REGISTER: &str = "http://jabber.org/protocol/muc#register";
const ROOMCONFIG: &str = "http://jabber.org/protocol/muc#roomconfig";
const ROOMINFO: &str = "http://jabber.org/protocol/muc#roominfo";
const REGISTER: &str = "jabber:iq:register";
const DATA: &str = "jabber:x:data";
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const VCARD: &str = "vcard-temp";
const VCARD_UPDATE: &str = "vcard-temp:x:update";

/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_millis(300);

fn room(name: &str) -> String {
    format!("{name}@{SERVICE}")
}

fn occupant(name: &str, nick: &str) -> String {
    format!("{name}@{SERVICE}/{nick}")
}

fn next_id(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}{}", N.fetch_add(1, Ordering::Relaxed))
}

fn codes(el: &Element) -> Vec<String> {
    el.get_child("x", MUC_USER)
        .map(|x| x.children().filter(|c| c.is("status", MUC_USER)).filter_map(|s| s.attr("code")).map(str::to_string).collect())
        .unwrap_or_default()
}

fn item(el: &Element) -> &Element {
    el.get_child("x", MUC_USER).and_then(|x| x.get_child("item", MUC_USER)).unwrap_or_else(|| panic!("no muc#user <item/> in {}", show(el)))
}

fn affiliation_role(el: &Element) -> (String, String) {
    let i = item(el);
    (i.attr("affiliation").unwrap_or_default().to_string(), i.attr("role").unwrap_or_default().to_string())
}

fn ar(affiliation: &str, role: &str) -> (String, String) {
    (affiliation.to_string(), role.to_string())
}

/// An error stanza with this condition and error type.
fn assert_error(el: &Element, cond: &str, typ: &str) {
    assert_eq!(el.attr("type"), Some("error"), "expected an error: {}", show(el));
    assert_eq!(condition(el), cond, "{}", show(el));
    let got = el.get_child("error", CLIENT).and_then(|e| e.attr("type"));
    assert_eq!(got, Some(typ), "error type: {}", show(el));
}

fn assert_result(el: &Element) {
    assert_eq!(el.attr("type"), Some("result"), "{}", show(el));
}

/// The values of a form's field.
fn values(x: &Element, var: &str) -> Vec<String> {
    x.children()
        .find(|f| f.is("field", DATA) && f.attr("var") == Some(var))
        .unwrap_or_else(|| panic!("no field {var} in {}", show(x)))
        .children()
        .filter(|v| v.is("value", DATA))
        .map(|v| v.text())
        .collect()
}

fn field<'a>(x: &'a Element, var: &str) -> Option<&'a Element> {
    x.children().find(|f| f.is("field", DATA) && f.attr("var") == Some(var))
}

fn form(fields: &[(&str, &str)]) -> String {
    fields.iter().map(|(var, value)| format!("<field var='{var}'><value>{value}</value></field>")).collect()
}

async fn online(s: &TestServer, user: &str, resource: &str) -> Client {
    let mut c = s.login(user, resource).await;
    c.available().await;
    c
}

/// §7.2: enter and read up to the subject; the self-presence (110) is returned.
async fn join(c: &mut Client, name: &str, nick: &str) -> Element {
    let me = occupant(name, nick);
    c.send(&format!("<presence to='{me}'><x xmlns='{MUC}'/></presence>")).await;
    let p = c
        .expect(&format!("self-presence from {me}"), |e| e.name() == "presence" && e.attr("from") == Some(me.as_str()) && codes(e).contains(&"110".to_string()))
        .await;
    let r = room(name);
    c.expect("the subject", |e| {
        e.name() == "message" && e.get_child("subject", CLIENT).is_some() && e.attr("from").is_some_and(|f| f.starts_with(r.as_str()))
    })
    .await;
    p
}

/// A join that must be refused: the presence error.
async fn refused(c: &mut Client, name: &str, nick: &str) -> Element {
    c.send(&format!("<presence to='{}'><x xmlns='{MUC}'/></presence>", occupant(name, nick))).await;
    c.expect("a presence error", |e| e.name() == "presence" && e.attr("type") == Some("error")).await
}

/// Create a room configured with `fields` (§10.1.3), everything received meanwhile dropped.
async fn create(c: &mut Client, name: &str, nick: &str, fields: &[(&str, &str)]) {
    let p = join(c, name, nick).await;
    assert!(codes(&p).contains(&"201".to_string()), "§10.1.1: a new room: {}", show(&p));
    let mut all = vec![("FORM_TYPE", ROOMCONFIG)];
    all.extend_from_slice(fields);
    let r = c
        .request(&format!(
            "<iq type='set' id='{}' to='{}'><query xmlns='{MUC_OWNER}'><x xmlns='{DATA}' type='submit'>{}</x></query></iq>",
            next_id("config"),
            room(name),
            form(&all)
        ))
        .await;
    assert_result(&r);
    c.drain().await;
}

async fn set_affiliation(c: &mut Client, name: &str, jid: &str, affiliation: &str) {
    let r = c
        .request(&format!(
            "<iq type='set' id='{}' to='{}'><query xmlns='{MUC_ADMIN}'><item jid='{jid}' affiliation='{affiliation}'/></query></iq>",
            next_id("aff"),
            room(name)
        ))
        .await;
    assert_result(&r);
}

async fn set_role(c: &mut Client, name: &str, nick: &str, role: &str) {
    let r = c
        .request(&format!(
            "<iq type='set' id='{}' to='{}'><query xmlns='{MUC_ADMIN}'><item nick='{nick}' role='{role}'/></query></iq>",
            next_id("role"),
            room(name)
        ))
        .await;
    assert_result(&r);
}

/// Nothing from the room `name` arrives for a while.
async fn nothing_from_room(c: &mut Client, name: &str) {
    let r = room(name);
    let from_room = |e: &Element| e.attr("from").is_some_and(|f| f == r || f.starts_with(&format!("{r}/")));
    if let Some(e) = c.pending.iter().find(|e| from_room(e)) {
        panic!("{}: unexpected: {}", c.jid, show(e));
    }
    c.pending.clear();
    let deadline = tokio::time::Instant::now() + QUIET;
    while let Ok(el) = tokio::time::timeout_at(deadline, c.next()).await {
        assert!(!from_room(&el), "{}: unexpected: {}", c.jid, show(&el));
    }
}

/// Stop a server and start it again on the same data.
async fn restart(s: TestServer) -> TestServer {
    let (config, dir) = (s.config.clone(), s.dir);
    s.server.unwrap().shutdown().await;
    TestServer { server: Some(starling::Server::start(config.clone()).await.unwrap()), config, dir }
}

// =======================================================================================
// Voice requests (§7.13, §8.6)

/// §7.13 Example 79: the visitor's request, with `fields` after the FORM_TYPE.
fn voice_request(name: &str, id: &str, kind: &str, fields: &[(&str, &str)]) -> String {
    format!(
        "<message id='{id}' to='{}'><x xmlns='{DATA}' type='{kind}'><field var='FORM_TYPE'><value>{MUC_REQUEST}</value></field>{}</x></message>",
        room(name),
        form(fields)
    )
}

/// §8.6 Example 109: a moderator's answer to the approval form.
fn approval(name: &str, id: &str, jid: &str, nick: &str, allow: &str) -> String {
    format!(
        "<message id='{id}' to='{}'><x xmlns='{DATA}' type='submit'><field var='FORM_TYPE' type='hidden'><value>{MUC_REQUEST}</value></field>{}</x></message>",
        room(name),
        form(&[("muc#role", "participant"), ("muc#jid", jid), ("muc#roomnick", nick), ("muc#request_allow", allow)])
    )
}

/// The approval form a moderator receives (§8.6 Example 108): from the room's bare JID.
async fn approval_form(c: &mut Client, name: &str) -> Element {
    let r = room(name);
    let m = c
        .expect("a voice approval form", |e| {
            e.name() == "message" && e.attr("from") == Some(r.as_str()) && e.get_child("x", DATA).is_some_and(|x| x.attr("type") == Some("form"))
        })
        .await;
    assert_ne!(m.attr("type"), Some("groupchat"), "{}", show(&m));
    m.get_child("x", DATA).unwrap().clone()
}

/// A moderated coven: crone1 (owner, firstwitch), wiccarocks (admin, secondwitch), hag66 a
/// visitor (thirdwitch).
async fn moderated_coven(s: &TestServer) -> (Client, Client, Client) {
    s.users(&["crone1", "wiccarocks", "hag66"]).await;
    let mut crone = online(s, "crone1", "desktop").await;
    let mut wicca = online(s, "wiccarocks", "laptop").await;
    let mut hag = online(s, "hag66", "pda").await;
    create(&mut crone, "coven", "firstwitch", &[("muc#roomconfig_moderatedroom", "1")]).await;
    set_affiliation(&mut crone, "coven", "wiccarocks@localhost", "admin").await;
    join(&mut wicca, "coven", "secondwitch").await;
    let me = join(&mut hag, "coven", "thirdwitch").await;
    assert_eq!(affiliation_role(&me), ar("none", "visitor"), "§5.1.2: a visitor in a moderated room: {}", show(&me));
    for c in [&mut crone, &mut wicca, &mut hag] {
        c.drain().await;
    }
    (crone, wicca, hag)
}

/// §7.13 Example 79 and §8.6 Examples 108-109: a visitor requests voice; every moderator
/// gets the approval form with the request's role, the requester's JID and nick, and
/// muc#request_allow false; a moderator approves, and the visitor becomes a participant
/// with the presence of §8.3 (Example 97: role participant, the moderator as actor), after
/// which it may speak.
async fn voice_request_approved(b: Backend) {
    let s = TestServer::start(b).await;
    let (mut crone, mut wicca, mut hag) = moderated_coven(&s).await;

    let request = voice_request("coven", "yd53c486", "submit", &[("muc#role", "participant")]);
    hag.send(&request).await;
    for moderator in [&mut crone, &mut wicca] {
        let x = approval_form(moderator, "coven").await;
        assert_eq!(values(&x, "FORM_TYPE"), [MUC_REQUEST], "{}", show(&x));
        assert_eq!(values(&x, "muc#role"), ["participant"], "{}", show(&x));
        assert_eq!(values(&x, "muc#jid"), ["hag66@localhost/pda"], "{}", show(&x));
        assert_eq!(values(&x, "muc#roomnick"), ["thirdwitch"], "{}", show(&x));
        assert_eq!(values(&x, "muc#request_allow"), ["false"], "{}", show(&x));
        assert_eq!(field(&x, "muc#request_allow").unwrap().attr("type"), Some("boolean"), "{}", show(&x));
        assert_eq!(field(&x, "muc#jid").unwrap().attr("type"), Some("jid-single"), "{}", show(&x));
        assert_eq!(x.get_child("title", DATA).map(|t| t.text()).as_deref(), Some("Voice request"), "{}", show(&x));
    }
    // Only moderators are asked.
    nothing_from_room(&mut hag, "coven").await;

    crone.send(&approval("coven", "approve", "hag66@localhost/pda", "thirdwitch", "true")).await;
    let third = occupant("coven", "thirdwitch");
    for c in [&mut crone, &mut wicca, &mut hag] {
        let p = c.expect("thirdwitch's new role", |e| e.name() == "presence" && e.attr("from") == Some(third.as_str())).await;
        assert_eq!(p.attr("type"), None, "{}", show(&p));
        assert_eq!(affiliation_role(&p), ar("none", "participant"), "§8.3 Example 97: {}", show(&p));
        let actor = item(&p).get_child("actor", MUC_USER).and_then(|a| a.attr("nick"));
        assert_eq!(actor, Some("firstwitch"), "the approving moderator is the actor: {}", show(&p));
    }
    hag.send(&format!("<message id='speak' to='{}' type='groupchat'><body>Thrice the brinded cat hath mew'd.</body></message>", room("coven"))).await;
    let m = crone.expect("thirdwitch speaks", |e| e.name() == "message" && e.attr("from") == Some(third.as_str())).await;
    assert_eq!(m.attr("type"), Some("groupchat"), "{}", show(&m));
    // A second approval of the same request (another moderator's) changes nothing.
    wicca.drain().await;
    wicca.send(&approval("coven", "approve2", "hag66@localhost/pda", "thirdwitch", "true")).await;
    nothing_from_room(&mut wicca, "coven").await;
    s.stop().await;
}

/// §8.6: a moderator who does not grant (muc#request_allow false, or a cancelled form)
/// changes nothing; an approval naming nobody in the room is item-not-found; only
/// moderators approve (a visitor's own "approval" is forbidden).
async fn voice_request_denied(b: Backend) {
    let s = TestServer::start(b).await;
    let (mut crone, _wicca, mut hag) = moderated_coven(&s).await;
    hag.send(&voice_request("coven", "v1", "submit", &[("muc#role", "participant")])).await;
    approval_form(&mut crone, "coven").await;

    crone.send(&approval("coven", "no", "hag66@localhost/pda", "thirdwitch", "false")).await;
    crone.send(&voice_request("coven", "skip", "cancel", &[])).await;
    nothing_from_room(&mut hag, "coven").await;
    nothing_from_room(&mut crone, "coven").await;

    hag.send(&approval("coven", "self", "hag66@localhost/pda", "thirdwitch", "true")).await;
    let e = hag.expect("an error", |e| e.attr("id") == Some("self")).await;
    assert_error(&e, "forbidden", "auth");
    assert_eq!(e.attr("from"), Some(room("coven").as_str()), "{}", show(&e));

    crone.send(&approval("coven", "ghost", "nobody@localhost/x", "fourthwitch", "true")).await;
    let e = crone.expect("an error", |e| e.attr("id") == Some("ghost")).await;
    assert_error(&e, "item-not-found", "cancel");

    crone.send(&approval("coven", "notbool", "hag66@localhost/pda", "thirdwitch", "maybe")).await;
    let e = crone.expect("an error", |e| e.attr("id") == Some("notbool")).await;
    assert_error(&e, "bad-request", "modify");
    nothing_from_room(&mut hag, "coven").await;
    s.stop().await;
}

/// §7.13: voice is requested by a visitor of a moderated room, with a form whose muc#role
/// is participant. A participant (who has voice) gets not-acceptable, a visitor of an
/// unmoderated room not-allowed, a non-occupant not-acceptable; a form not submitted, with
/// no muc#role or another role is bad-request. One request a minute per occupant: the
/// second is policy-violation (wait), and moderators get one form.
async fn voice_request_errors(b: Backend) {
    let s = TestServer::start(b).await;
    let (mut crone, _wicca, mut hag) = moderated_coven(&s).await;
    s.users(&["outsider"]).await;
    let mut outsider = online(&s, "outsider", "web").await;
    let participant = [("muc#role", "participant")];

    let cases = [
        ("crone", voice_request("coven", "hasvoice", "submit", &participant), "not-acceptable", "modify"),
        ("outsider", voice_request("coven", "outside", "submit", &participant), "not-acceptable", "modify"),
        ("hag", voice_request("coven", "asform", "form", &participant), "bad-request", "modify"),
        ("hag", voice_request("coven", "norole", "submit", &[]), "bad-request", "modify"),
        ("hag", voice_request("coven", "tomod", "submit", &[("muc#role", "moderator")]), "bad-request", "modify"),
    ];
    for (who, stanza, cond, typ) in cases {
        let c = match who {
            "crone" => &mut crone,
            "outsider" => &mut outsider,
            _ => &mut hag,
        };
        let id = stanza.split('\'').nth(1).unwrap().to_string();
        c.send(&stanza).await;
        let e = c.expect(&format!("the error for {id}"), |e| e.attr("id") == Some(id.as_str()) && e.attr("type") == Some("error")).await;
        assert_eq!(e.name(), "message", "{}", show(&e));
        assert_error(&e, cond, typ);
    }
    nothing_from_room(&mut crone, "coven").await;

    hag.send(&voice_request("coven", "first", "submit", &participant)).await;
    approval_form(&mut crone, "coven").await;
    hag.send(&voice_request("coven", "again", "submit", &participant)).await;
    let e = hag.expect("the error for again", |e| e.attr("id") == Some("again")).await;
    assert_error(&e, "policy-violation", "wait");
    nothing_from_room(&mut crone, "coven").await;

    // An unmoderated room where a moderator took a participant's voice (§8.4).
    create(&mut crone, "heath", "firstwitch", &[]).await;
    join(&mut hag, "heath", "thirdwitch").await;
    set_role(&mut crone, "heath", "thirdwitch", "visitor").await;
    hag.send(&voice_request("heath", "unmoderated", "submit", &participant)).await;
    let e = hag.expect("the error for unmoderated", |e| e.attr("id") == Some("unmoderated") && e.attr("type") == Some("error")).await;
    assert_error(&e, "not-allowed", "cancel");
    s.stop().await;
}

db_tests!(voice_request_approved, voice_request_denied, voice_request_errors);

// =======================================================================================
// Registration (§7.10) and the reserved nick (§7.11)

async fn register_get(c: &mut Client, name: &str) -> Element {
    c.request(&format!("<iq type='get' id='{}' to='{}'><query xmlns='{REGISTER}'/></iq>", next_id("regget"), room(name))).await
}

/// §7.10 Example 71, with `fields` after the FORM_TYPE.
async fn register_set(c: &mut Client, name: &str, kind: &str, fields: &[(&str, &str)]) -> Element {
    c.request(&format!(
        "<iq type='set' id='{}' to='{}'><query xmlns='{REGISTER}'><x xmlns='{DATA}' type='{kind}'>\
         <field var='FORM_TYPE'><value>{MUC_REGISTER}</value></field>{}</x></query></iq>",
        next_id("regset"),
        room(name),
        form(fields)
    ))
    .await
}

/// The fields of Example 71 with this nick.
fn example_71(nick: &str) -> Vec<(&str, &str)> {
    vec![
        ("muc#register_first", "Brunhilde"),
        ("muc#register_last", "Entwhistle-Throckmorton"),
        ("muc#register_roomnick", nick),
        ("muc#register_url", "http://witchesonline/~hag66/"),
        ("muc#register_email", "hag66@witchesonline"),
        ("muc#register_faqentry", "Just another witch."),
    ]
}

/// §7.11 Example 77.
async fn reserved_nick(c: &mut Client, name: &str) -> Element {
    let r = c
        .request(&format!(
            "<iq type='get' id='{}' to='{}'><query xmlns='{DISCO_INFO}' node='x-roomuser-item'/></iq>",
            next_id("getnick"),
            room(name)
        ))
        .await;
    assert_result(&r);
    let q = r.get_child("query", DISCO_INFO).unwrap_or_else(|| panic!("{}", show(&r)));
    assert_eq!(q.attr("node"), Some("x-roomuser-item"), "{}", show(&r));
    q.clone()
}

/// Example 78: the nick as the name of a conference/text identity; none when there is no
/// reserved nick ("a service discovery <query/> element that is empty").
fn reserved_name(q: &Element) -> Option<String> {
    let ids: Vec<&Element> = q.children().filter(|c| c.is("identity", DISCO_INFO)).collect();
    assert!(ids.len() <= 1, "{}", show(q));
    let id = ids.first()?;
    assert_eq!((id.attr("category"), id.attr("type")), (Some("conference"), Some("text")), "{}", show(q));
    id.attr("name").map(str::to_string)
}

/// The registered nick of Example 69, `None` when the answer is the form (Example 70).
fn registered_as(r: &Element) -> Option<String> {
    assert_result(r);
    let q = r.get_child("query", REGISTER).unwrap_or_else(|| panic!("{}", show(r)));
    if q.get_child("registered", REGISTER).is_some() {
        return Some(q.get_child("username", REGISTER).unwrap_or_else(|| panic!("Example 69: a <username/>: {}", show(r))).text());
    }
    let x = q.get_child("x", DATA).unwrap_or_else(|| panic!("Example 70: a form: {}", show(r)));
    assert_eq!(x.attr("type"), Some("form"), "{}", show(r));
    assert_eq!(values(x, "FORM_TYPE"), [MUC_REGISTER], "{}", show(r));
    let nick = field(x, "muc#register_roomnick").unwrap_or_else(|| panic!("Example 70: the nick field: {}", show(r)));
    assert!(nick.get_child("required", DATA).is_some(), "{}", show(r));
    None
}

async fn member_nick(c: &mut Client, name: &str, jid: &str) -> Option<String> {
    let r = c
        .request(&format!("<iq type='get' id='{}' to='{}'><query xmlns='{MUC_ADMIN}'><item affiliation='member'/></query></iq>", next_id("members"), room(name)))
        .await;
    assert_result(&r);
    let q = r.get_child("query", MUC_ADMIN).unwrap();
    let i = q.children().find(|i| i.attr("jid") == Some(jid))?;
    Some(i.attr("nick").unwrap_or_default().to_string())
}

/// §7.10 Examples 66, 70, 71, 75 and 69; §7.11 Examples 77-78: hag66 asks for the form,
/// registers as thirdwitch, and is a member with that nick reserved: asked again, the room
/// says it is registered; x-roomuser-item names the nick (empty for someone without one);
/// another user gets conflict for the nick, registering it (Example 72) or entering with it
/// in any case (§7.11); hag66 enters with it as a member. All of it survives a restart.
async fn register_with_room(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "hag66", "wiccarocks"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    let mut wicca = online(&s, "wiccarocks", "laptop").await;
    create(&mut crone, "coven", "firstwitch", &[("muc#roomconfig_persistentroom", "1")]).await;

    assert_eq!(registered_as(&register_get(&mut hag, "coven").await), None);
    assert_eq!(reserved_name(&reserved_nick(&mut hag, "coven").await), None, "§7.11: nothing reserved yet");
    let r = register_set(&mut hag, "coven", "submit", &example_71("thirdwitch")).await;
    assert_result(&r);
    assert_eq!(r.attr("from"), Some(room("coven").as_str()), "Example 75: {}", show(&r));
    assert_eq!(registered_as(&register_get(&mut hag, "coven").await).as_deref(), Some("thirdwitch"));
    assert_eq!(reserved_name(&reserved_nick(&mut hag, "coven").await).as_deref(), Some("thirdwitch"));
    assert_eq!(reserved_name(&reserved_nick(&mut wicca, "coven").await), None);
    assert_eq!(member_nick(&mut crone, "coven", "hag66@localhost").await.as_deref(), Some("thirdwitch"), "a member with the nick");

    let r = register_set(&mut wicca, "coven", "submit", &example_71("ThirdWitch")).await;
    assert_error(&r, "conflict", "cancel");
    let e = refused(&mut wicca, "coven", "thirdwitch").await;
    assert_error(&e, "conflict", "cancel");

    let me = join(&mut hag, "coven", "thirdwitch").await;
    assert_eq!(affiliation_role(&me), ar("member", "participant"), "{}", show(&me));
    // §7.11: asked from inside the room, the same answer.
    assert_eq!(reserved_name(&reserved_nick(&mut hag, "coven").await).as_deref(), Some("thirdwitch"));
    // Someone else may not register a nick in use in the room either.
    let r = register_set(&mut wicca, "coven", "submit", &[("muc#register_roomnick", "firstwitch")]).await;
    assert_error(&r, "conflict", "cancel");
    drop((crone, hag, wicca));

    let s = restart(s).await;
    let mut hag = online(&s, "hag66", "pda").await;
    let mut wicca = online(&s, "wiccarocks", "laptop").await;
    assert_eq!(registered_as(&register_get(&mut hag, "coven").await).as_deref(), Some("thirdwitch"), "stored");
    assert_eq!(reserved_name(&reserved_nick(&mut hag, "coven").await).as_deref(), Some("thirdwitch"));
    let e = refused(&mut wicca, "coven", "thirdwitch").await;
    assert_error(&e, "conflict", "cancel");
    let me = join(&mut hag, "coven", "thirdwitch").await;
    assert_eq!(affiliation_role(&me), ar("member", "participant"), "{}", show(&me));
    s.stop().await;
}

/// §7.10 Example 76: registering while in the room, the user's new affiliation is told to
/// every occupant; cancelling it (XEP-0077 §3.2 <remove/>) takes membership and nick away,
/// told the same way; a second cancellation is registration-required. An owner who
/// registers keeps its affiliation, with the nick reserved.
async fn register_in_room(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "hag66"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    create(&mut crone, "coven", "firstwitch", &[]).await;
    join(&mut hag, "coven", "hag").await;
    crone.drain().await;
    hag.drain().await;

    assert_result(&register_set(&mut hag, "coven", "submit", &example_71("thirdwitch")).await);
    let from = occupant("coven", "hag");
    for c in [&mut crone, &mut hag] {
        let p = c.expect("the membership notice", |e| e.name() == "presence" && e.attr("from") == Some(from.as_str())).await;
        assert_eq!(p.attr("type"), None, "{}", show(&p));
        assert_eq!(affiliation_role(&p), ar("member", "participant"), "Example 76: {}", show(&p));
    }

    let remove = |id: &str| format!("<iq type='set' id='{id}' to='{}'><query xmlns='{REGISTER}'><remove/></query></iq>", room("coven"));
    assert_result(&hag.request(&remove("unreg1")).await);
    for c in [&mut crone, &mut hag] {
        let p = c.expect("the end of membership", |e| e.name() == "presence" && e.attr("from") == Some(from.as_str())).await;
        assert_eq!(affiliation_role(&p), ar("none", "participant"), "{}", show(&p));
    }
    assert_eq!(registered_as(&register_get(&mut hag, "coven").await), None);
    assert_eq!(reserved_name(&reserved_nick(&mut hag, "coven").await), None);
    let r = hag.request(&remove("unreg2")).await;
    assert_error(&r, "registration-required", "auth");

    assert_result(&register_set(&mut crone, "coven", "submit", &[("muc#register_roomnick", "firstwitch")]).await);
    assert_eq!(registered_as(&register_get(&mut crone, "coven").await).as_deref(), Some("firstwitch"));
    let r = crone
        .request(&format!("<iq type='get' id='owners' to='{}'><query xmlns='{MUC_ADMIN}'><item affiliation='owner'/></query></iq>", room("coven")))
        .await;
    let owner = r.get_child("query", MUC_ADMIN).and_then(|q| q.children().find(|i| i.attr("jid") == Some("crone1@localhost")));
    assert_eq!(owner.and_then(|i| i.attr("nick")), Some("firstwitch"), "still an owner: {}", show(&r));
    nothing_from_room(&mut hag, "coven").await;
    s.stop().await;
}

/// §7.10's errors: a room that does not exist (Example 67, item-not-found); a user not
/// allowed to register (Example 68, not-allowed: a non-member of a members-only room, an
/// outcast); no valid form (Example 74, bad-request: none, a form of another FORM_TYPE, no
/// nick); a nick that cannot be a room nick (jid-malformed). A cancelled form changes
/// nothing. A ban takes the reserved nick away (§9.1).
async fn register_errors(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "hag66", "wiccarocks"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    let mut wicca = online(&s, "wiccarocks", "laptop").await;

    assert_error(&register_get(&mut hag, "nosuchroom").await, "item-not-found", "cancel");
    create(&mut crone, "chamber", "firstwitch", &[("muc#roomconfig_membersonly", "1")]).await;
    assert_error(&register_get(&mut hag, "chamber").await, "not-allowed", "cancel");
    assert_error(&register_set(&mut hag, "chamber", "submit", &example_71("thirdwitch")).await, "not-allowed", "cancel");
    // A member of a members-only room may reserve a nick.
    set_affiliation(&mut crone, "chamber", "hag66@localhost", "member").await;
    assert_result(&register_set(&mut hag, "chamber", "submit", &example_71("thirdwitch")).await);

    create(&mut crone, "coven", "firstwitch", &[]).await;
    let bare = hag.request(&format!("<iq type='set' id='noform' to='{}'><query xmlns='{REGISTER}'/></iq>", room("coven"))).await;
    assert_error(&bare, "bad-request", "modify");
    let other = hag
        .request(&format!(
            "<iq type='set' id='other' to='{}'><query xmlns='{REGISTER}'><x xmlns='{DATA}' type='submit'>{}</x></query></iq>",
            room("coven"),
            form(&[("FORM_TYPE", ROOMCONFIG), ("muc#register_roomnick", "thirdwitch")])
        ))
        .await;
    assert_error(&other, "bad-request", "modify");
    assert_error(&register_set(&mut hag, "coven", "submit", &[("muc#register_first", "Brunhilde")]).await, "bad-request", "modify");
    assert_error(&register_set(&mut hag, "coven", "submit", &[("muc#register_roomnick", "  ")]).await, "bad-request", "modify");
    assert_result(&register_set(&mut hag, "coven", "cancel", &[]).await);
    assert_eq!(registered_as(&register_get(&mut hag, "coven").await), None, "a cancelled form registers nothing");

    assert_result(&register_set(&mut hag, "coven", "submit", &example_71("thirdwitch")).await);
    set_affiliation(&mut crone, "coven", "hag66@localhost", "outcast").await;
    assert_error(&register_get(&mut hag, "coven").await, "not-allowed", "cancel");
    let r = crone
        .request(&format!("<iq type='get' id='bans' to='{}'><query xmlns='{MUC_ADMIN}'><item affiliation='outcast'/></query></iq>", room("coven")))
        .await;
    let banned = r.get_child("query", MUC_ADMIN).and_then(|q| q.children().find(|i| i.attr("jid") == Some("hag66@localhost")));
    assert_eq!(banned.map(|i| i.attr("nick")), Some(None), "§9.1: the outcast's nick is no longer registered: {}", show(&r));
    let me = join(&mut wicca, "coven", "thirdwitch").await;
    assert_eq!(affiliation_role(&me), ar("none", "participant"), "the nick is free again: {}", show(&me));

    // A room still being set up does not exist for others (§10.1.1).
    join(&mut crone, "inverness", "firstwitch").await;
    assert_error(&register_get(&mut hag, "inverness").await, "item-not-found", "cancel");
    s.stop().await;
}

/// §7.10 last paragraph, with `[muc] lock_registered_nicks`: a user who registered a nick
/// enters under it whatever nick it asks for, told with 210 (§7.2.11); §7.6 Example 50: a
/// nick change is then not-acceptable (cancel), from the occupant JID asked for. Others,
/// with no registered nick, choose freely. Off (the default), the registered user may use
/// another nick (register_with_room shows the reservation itself).
async fn registered_nicks_locked_down(b: Backend) {
    let s = TestServer::start_with(b, |c| c.muc.lock_registered_nicks = true).await;
    s.users(&["crone1", "hag66", "wiccarocks"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    let mut wicca = online(&s, "wiccarocks", "laptop").await;
    create(&mut crone, "coven", "firstwitch", &[]).await;
    assert_result(&register_set(&mut hag, "coven", "submit", &example_71("thirdwitch")).await);

    hag.send(&format!("<presence to='{}'><x xmlns='{MUC}'/></presence>", occupant("coven", "oldhag"))).await;
    let me = occupant("coven", "thirdwitch");
    let p = hag.expect("the self-presence", |e| e.name() == "presence" && codes(e).contains(&"110".to_string())).await;
    assert_eq!(p.attr("from"), Some(me.as_str()), "entered under the registered nick: {}", show(&p));
    assert!(codes(&p).contains(&"210".to_string()), "§7.2.11: 210: {}", show(&p));
    hag.drain().await;

    hag.send(&format!("<presence to='{}' id='ifd1c35'/>", occupant("coven", "oldhag"))).await;
    let e = hag.expect("the refusal", |e| e.name() == "presence" && e.attr("type") == Some("error")).await;
    assert_error(&e, "not-acceptable", "cancel");
    assert_eq!(e.attr("id"), Some("ifd1c35"), "{}", show(&e));
    assert_eq!(e.attr("from"), Some(occupant("coven", "oldhag").as_str()), "Example 50: {}", show(&e));
    // A presence update under the registered nick is not a nick change.
    hag.send(&format!("<presence to='{me}'><show>away</show></presence>")).await;
    hag.expect("the update", |e| e.name() == "presence" && e.attr("from") == Some(me.as_str()) && e.attr("type").is_none()).await;

    let p = join(&mut wicca, "coven", "secondwitch").await;
    assert!(!codes(&p).contains(&"210".to_string()), "nothing registered, nothing changed: {}", show(&p));
    wicca.send(&format!("<presence to='{}'/>", occupant("coven", "wicca"))).await;
    wicca.expect("the new nick", |e| e.name() == "presence" && e.attr("from") == Some(occupant("coven", "wicca").as_str()) && e.attr("type").is_none()).await;
    s.stop().await;
}

db_tests!(register_with_room, register_in_room, register_errors, registered_nicks_locked_down);

// =======================================================================================
// Room vCards and avatars

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n not really an image, but bytes with a hash";

fn sha1_hex(bytes: &[u8]) -> String {
    use sha1::Digest;
    sha1::Sha1::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn get_vcard(c: &mut Client, to: &str) -> Element {
    c.request(&format!("<iq type='get' id='{}' to='{to}'><vCard xmlns='{VCARD}'/></iq>", next_id("vc"))).await
}

async fn set_vcard(c: &mut Client, to: &str, inner: &str) -> Element {
    c.request(&format!("<iq type='set' id='{}' to='{to}'><vCard xmlns='{VCARD}'>{inner}</vCard></iq>", next_id("vcset"))).await
}

fn vcard_of(r: &Element) -> &Element {
    assert_result(r);
    r.get_child("vCard", VCARD).unwrap_or_else(|| panic!("a vCard: {}", show(r)))
}

/// The room's avatar hash in its muc#roominfo form, and whether it has the vcard-temp
/// feature.
async fn roominfo_avatar(c: &mut Client, name: &str) -> (Option<String>, bool) {
    let r = c.request(&format!("<iq type='get' id='{}' to='{}'><query xmlns='{DISCO_INFO}'/></iq>", next_id("info"), room(name))).await;
    assert_result(&r);
    let q = r.get_child("query", DISCO_INFO).unwrap();
    let feature = q.children().any(|f| f.is("feature", DISCO_INFO) && f.attr("var") == Some(VCARD));
    let x = q.children().find(|x| x.is("x", DATA)).unwrap_or_else(|| panic!("§6.4: a muc#roominfo form: {}", show(&r)));
    assert_eq!(values(x, "FORM_TYPE"), [ROOMINFO], "{}", show(&r));
    let hash = field(x, "muc#roominfo_avatarhash").map(|_| values(x, "muc#roominfo_avatarhash").join(","));
    (hash, feature)
}

/// The avatar presence from the room's bare JID (XEP-0153's update element).
async fn avatar_presence(c: &mut Client, name: &str) -> String {
    let r = room(name);
    let p = c.expect("the room's avatar presence", |e| e.name() == "presence" && e.attr("from") == Some(r.as_str())).await;
    assert_eq!(p.attr("type"), None, "{}", show(&p));
    let x = p.get_child("x", VCARD_UPDATE).unwrap_or_else(|| panic!("vcard-temp:x:update: {}", show(&p)));
    x.get_child("photo", VCARD_UPDATE).unwrap_or_else(|| panic!("a <photo/>: {}", show(&p))).text()
}

/// vcard-temp on a room's JID: an empty vCard before any is set; only owners set it
/// (forbidden for others); anyone reads what the owner set. The photo's SHA-1 is the
/// room's avatar hash: in muc#roominfo_avatarhash (with the vcard-temp feature), and in
/// presence from the room to its occupants when it changes (an empty <photo/> when the
/// avatar goes) and to each resource that enters, after the subject. A vCard over [vcard] max_bytes is not-acceptable. Stored: the same after
/// a restart.
async fn room_vcard(b: Backend) {
    let s = TestServer::start_with(b, |c| c.vcard.max_bytes = 4096).await;
    s.users(&["crone1", "hag66"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    let coven = room("coven");
    assert_error(&get_vcard(&mut hag, &coven).await, "item-not-found", "cancel");
    create(&mut crone, "coven", "firstwitch", &[("muc#roomconfig_persistentroom", "1")]).await;

    assert_eq!(vcard_of(&get_vcard(&mut hag, &coven).await).children().count(), 0, "an empty vCard");
    assert_eq!(roominfo_avatar(&mut hag, "coven").await, (None, true));
    assert_error(&set_vcard(&mut hag, &coven, "<FN>Hag's cave</FN>").await, "forbidden", "auth");
    join(&mut hag, "coven", "thirdwitch").await;
    crone.drain().await;
    hag.drain().await;

    let photo = format!("<PHOTO><TYPE>image/png</TYPE><BINVAL>{}</BINVAL></PHOTO>", base64(PNG));
    let r = set_vcard(&mut crone, &coven, &format!("<FN>A Dark Cave</FN>{photo}")).await;
    assert_result(&r);
    let hash = sha1_hex(PNG);
    assert_eq!(avatar_presence(&mut hag, "coven").await, hash);
    assert_eq!(avatar_presence(&mut crone, "coven").await, hash);
    let r = get_vcard(&mut hag, &coven).await;
    let v = vcard_of(&r);
    assert_eq!(v.get_child("FN", VCARD).map(|f| f.text()).as_deref(), Some("A Dark Cave"), "{}", show(&r));
    assert_eq!(v.get_child("PHOTO", VCARD).and_then(|p| p.get_child("BINVAL", VCARD)).map(|b| b.text()), Some(base64(PNG)), "{}", show(&r));
    assert_eq!(roominfo_avatar(&mut hag, "coven").await, (Some(hash.clone()), true));

    // The same photo with another name: no new avatar.
    assert_result(&set_vcard(&mut crone, &coven, &format!("<FN>The Dark Cave</FN>{photo}")).await);
    nothing_from_room(&mut hag, "coven").await;
    let big = "x".repeat(5000);
    assert_error(&set_vcard(&mut crone, &coven, &format!("<DESC>{big}</DESC>")).await, "not-acceptable", "modify");
    drop((crone, hag));

    let s = restart(s).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    let r = get_vcard(&mut hag, &coven).await;
    assert_eq!(vcard_of(&r).get_child("FN", VCARD).map(|f| f.text()).as_deref(), Some("The Dark Cave"), "stored: {}", show(&r));
    assert_eq!(roominfo_avatar(&mut hag, "coven").await, (Some(hash.clone()), true), "the hash is loaded with the room");

    join(&mut crone, "coven", "firstwitch").await;
    assert_eq!(avatar_presence(&mut crone, "coven").await, hash, "the avatar presence after the subject on entry");
    assert_result(&set_vcard(&mut crone, &coven, "").await);
    assert_eq!(avatar_presence(&mut crone, "coven").await, "", "no avatar any more");
    assert_eq!(vcard_of(&get_vcard(&mut hag, &coven).await).children().count(), 0);
    assert_eq!(roominfo_avatar(&mut hag, "coven").await, (None, true));
    s.stop().await;
}

/// A room being set up (§10.1.1) has no vCard for others: item-not-found, as for its
/// disco#info.
async fn room_vcard_locked(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["crone1", "hag66"]).await;
    let mut crone = online(&s, "crone1", "desktop").await;
    let mut hag = online(&s, "hag66", "pda").await;
    join(&mut crone, "inverness", "firstwitch").await;
    assert_error(&get_vcard(&mut hag, &room("inverness")).await, "item-not-found", "cancel");
    assert_error(&set_vcard(&mut hag, &room("inverness"), "<FN>x</FN>").await, "item-not-found", "cancel");
    assert_eq!(vcard_of(&get_vcard(&mut crone, &room("inverness")).await).children().count(), 0);
    s.stop().await;
}

db_tests!(room_vcard, room_vcard_locked);
