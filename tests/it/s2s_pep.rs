//! Personal eventing (XEP-0163) across federation: two Starling servers on loopback
//! (`localhost` and `b.example`, set up as in `s2s.rs`). The PEP service of one account
//! notifies its contacts on the other server: it learns their resources from the presence
//! their server sends, their interest (XEP-0115 caps, `NODE+notify`) by a disco#info query
//! across the link, and applies the same access rules as for its local contacts.

use std::time::Duration;

use minidom::Element;

use crate::common::client::{condition, show};
use crate::common::{Backend, Client, TestServer, befriend};
use crate::db_tests;
use crate::pep::{Caps, DISCO_INFO, EVENT, PUBSUB, expect_event, pubsub_error, settle};
use crate::s2s::{B, pair};

const TUNE: &str = "http://jabber.org/protocol/tune";
const A: &str = "localhost";

fn bare(c: &Client) -> String {
    c.jid.split('/').next().unwrap().to_string()
}

fn is_caps_query(e: &Element) -> bool {
    e.name() == "iq" && e.attr("type") == Some("get") && e.get_child("query", DISCO_INFO).is_some()
}

/// Send presence with `caps` and answer the servers' disco#info queries about them: one
/// from each JID of `askers`, in any order (the client's own server asks as the account
/// itself, a contact's server across the link as that contact; a server that knows the
/// `ver` already does not ask). Own presence is consumed.
async fn announce(c: &mut Client, caps: &Caps, askers: &[String]) {
    c.send(&caps.presence()).await;
    let me = c.jid.clone();
    c.expect("own presence", |e| e.name() == "presence" && e.attr("from") == Some(me.as_str()) && e.attr("type").is_none()).await;
    let mut left: Vec<String> = askers.to_vec();
    while !left.is_empty() {
        let q = c.expect(&format!("disco#info queries from {left:?}"), is_caps_query).await;
        let from = q.attr("from").unwrap_or_default().to_string();
        assert!(left.contains(&from), "a query from {from}, not one of {left:?}: {}", show(&q));
        left.retain(|l| l != &from);
        assert_eq!(q.attr("to"), Some(me.as_str()), "asked at the full JID: {}", show(&q));
        let node = q.get_child("query", DISCO_INFO).unwrap().attr("node").unwrap_or_default().to_string();
        assert_eq!(node, format!("{}#{}", caps.node, caps.ver), "XEP-0115 §6.2: node#ver");
        c.send(&Caps::answer_with(&q, &node, &caps.features)).await;
    }
    settle().await;
}

/// The id of the one item of a notification, and its payload.
fn event_item(m: &Element) -> (String, Element) {
    let items = m.get_child("event", EVENT).unwrap().get_child("items", EVENT).unwrap();
    let item = items.get_child("item", EVENT).unwrap_or_else(|| panic!("an item: {}", show(m)));
    (item.attr("id").unwrap_or_default().to_string(), item.children().next().expect("with its payload").clone())
}

/// No PEP notification arrives within `wait` (other stanzas are let pass).
async fn no_event(c: &mut Client, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(el) = tokio::time::timeout_at(deadline, c.next()).await {
        assert!(!(el.name() == "message" && el.get_child("event", EVENT).is_some()), "{}: unexpected notification {}", c.jid, show(&el));
    }
}

fn tune_publish(id: &str, title: &str) -> String {
    format!(
        "<iq type='set' id='pub-{id}'><pubsub xmlns='{PUBSUB}'><publish node='{TUNE}'><item id='{id}'>\
         <tune xmlns='{TUNE}'><title>{title}</title></tune></item></publish></pubsub></iq>"
    )
}

fn publish(id: &str, node: &str, item: &str, text: &str, options: &[(&str, &str)]) -> String {
    let mut x = String::new();
    if !options.is_empty() {
        x = format!(
            "<publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{PUBSUB}#publish-options</value></field>"
        );
        for (var, value) in options {
            x.push_str(&format!("<field var='{var}'><value>{value}</value></field>"));
        }
        x.push_str("</x></publish-options>");
    }
    format!(
        "<iq type='set' id='{id}'><pubsub xmlns='{PUBSUB}'><publish node='{node}'><item id='{item}'><entry xmlns='urn:test'>{text}</entry></item></publish>{x}</pubsub></iq>"
    )
}

async fn ok(c: &mut Client, xml: &str) -> Element {
    let r = c.request(xml).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    r
}

fn title(payload: &Element) -> String {
    payload.get_child("title", TUNE).map(|t| t.text()).unwrap_or_default()
}

/// `x` subscribes to `y`'s presence and `y` approves (one way only).
async fn subscribe_to(x: &mut Client, y: &mut Client) {
    let (x_bare, y_bare) = (bare(x), bare(y));
    x.send(&format!("<presence type='subscribe' to='{y_bare}'/>")).await;
    y.expect("the subscription request", |e| e.name() == "presence" && e.attr("type") == Some("subscribe")).await;
    y.send(&format!("<presence type='subscribed' to='{x_bare}'/>")).await;
    x.expect("the approval", |e| e.name() == "presence" && e.attr("type") == Some("subscribed")).await;
}

/// One account's PEP service (`owner`, on one server) and its contact on the other, both
/// directions: XEP-0163 §4.2-§4.3 with the contact elsewhere.
///
/// - the contact's resource whose caps say `tune+notify` gets the publish, from the owner's
///   bare JID, with the item; its resource without it, and a user of the contact's server
///   whose presence the owner gets but who is not subscribed to the owner's, get nothing;
/// - that user, approved as a subscriber later, gets the last item (§4.3.3);
/// - a resource of the contact that comes online later gets the last item, stamped with the
///   time it was published (§4.3.2);
/// - one whose notification bounced as unreachable is not sent more until its next
///   presence, which brings it the last item again.
async fn notifications_across(backend: Backend, owner_on_a: bool) {
    let p = pair(backend, |_| {}).await;
    p.a.add_user("eve", "pw").await;
    p.b.add_user_at(B, "eve", "pw").await;
    let (a, b) = ((&p.a, A, "alice"), (&p.b, B, "bob"));
    let ((o_server, o_domain, o_user), (c_server, c_domain, c_user)): ((&TestServer, &str, &str), (&TestServer, &str, &str)) =
        if owner_on_a { (a, b) } else { (b, a) };
    let mut owner = Client::login_at(o_server, o_domain, o_user, "pw", "o").await;
    let mut contact = Client::login_at(c_server, c_domain, c_user, "pw", "c").await;
    let mut eve = Client::login_at(c_server, c_domain, "eve", "pw", "e").await;
    owner.available().await;
    contact.available().await;
    eve.available().await;
    befriend(&mut owner, &mut contact).await;
    // The owner sees eve's presence; eve is not subscribed to the owner's.
    subscribe_to(&mut owner, &mut eve).await;
    let (o_bare, c_bare, e_bare) = (bare(&owner), bare(&contact), bare(&eve));

    let notify = Caps::new("https://example.org/notify", &[TUNE, &format!("{TUNE}+notify")]);
    let quiet = Caps::new("https://example.org/quiet", &[TUNE]);
    // Both servers ask the contact: its own, and the owner's across the link.
    announce(&mut contact, &notify, &[c_bare.clone(), o_bare.clone()]).await;
    // The same `ver`: known to both servers now, nobody asks.
    announce(&mut eve, &notify, &[]).await;
    let mut contact2 = Client::login_at(c_server, c_domain, c_user, "pw", "c2").await;
    announce(&mut contact2, &quiet, &[c_bare.clone(), o_bare.clone()]).await;
    owner.drain().await;

    let before = time::OffsetDateTime::now_utc().unix_timestamp();
    ok(&mut owner, &tune_publish("t1", "first")).await;
    let m = expect_event(&mut contact, &o_bare, TUNE).await;
    let (id, payload) = event_item(&m);
    assert_eq!((id.as_str(), title(&payload).as_str()), ("t1", "first"), "{}", show(&m));
    assert!(m.get_child("delay", "urn:xmpp:delay").is_none(), "a live notification has no delay: {}", show(&m));
    no_event(&mut contact2, Duration::from_millis(500)).await;
    no_event(&mut eve, Duration::from_millis(100)).await;

    // §4.3.3: eve becomes a subscriber, while online with +notify: the last item.
    eve.send(&format!("<presence type='subscribe' to='{o_bare}'/>")).await;
    owner.expect("eve's request", |e| e.name() == "presence" && e.attr("type") == Some("subscribe")).await;
    owner.send(&format!("<presence type='subscribed' to='{e_bare}'/>")).await;
    let m = expect_event(&mut eve, &o_bare, TUNE).await;
    assert_eq!(event_item(&m).0, "t1", "{}", show(&m));
    assert!(m.get_child("delay", "urn:xmpp:delay").is_some(), "a last item says when it was published: {}", show(&m));

    // §4.3.2: the contact's resource goes away and comes back after a publish.
    contact.close().await;
    settle().await;
    ok(&mut owner, &tune_publish("t2", "second")).await;
    expect_event(&mut eve, &o_bare, TUNE).await;
    no_event(&mut contact2, Duration::from_millis(300)).await;
    let mut contact = Client::login_at(c_server, c_domain, c_user, "pw", "c").await;
    announce(&mut contact, &notify, &[]).await;
    let m = expect_event(&mut contact, &o_bare, TUNE).await;
    let (id, payload) = event_item(&m);
    assert_eq!((id.as_str(), title(&payload).as_str()), ("t2", "second"), "{}", show(&m));
    let delay = m.get_child("delay", "urn:xmpp:delay").unwrap_or_else(|| panic!("the time it was published: {}", show(&m)));
    let stamp = time::OffsetDateTime::parse(delay.attr("stamp").unwrap(), &time::format_description::well_known::Rfc3339).unwrap();
    assert!(stamp.unix_timestamp() >= before - 1, "{}", show(&m));
    // The same presence again sends nothing again (§4.3.2, "initial presence" only).
    contact.send(&notify.presence()).await;
    no_event(&mut contact, Duration::from_millis(500)).await;

    // A notification that bounces as unreachable (here, as the contact's client might
    // answer it): no more notifications to that resource until it shows itself again.
    contact
        .send(&format!(
            "<message type='error' to='{o_bare}'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
        ))
        .await;
    settle().await;
    ok(&mut owner, &tune_publish("t3", "third")).await;
    expect_event(&mut eve, &o_bare, TUNE).await;
    no_event(&mut contact, Duration::from_millis(500)).await;
    contact.send("<presence><show>away</show></presence>").await;
    contact.send(&notify.presence()).await;
    let m = expect_event(&mut contact, &o_bare, TUNE).await;
    assert_eq!(event_item(&m).0, "t3", "{}", show(&m));
    p.stop().await;
}

async fn notifications_a_to_b(backend: Backend) {
    notifications_across(backend, true).await
}

async fn notifications_b_to_a(backend: Backend) {
    notifications_across(backend, false).await
}

/// The access models (XEP-0060 §4.5, XEP-0163 §4.1) and explicit subscriptions (§6.1) for
/// entities on the other server, exactly as for local ones: a contact with +notify gets
/// nothing of a `whitelist` node, nor of a `roster` node until it is in an allowed group;
/// a stranger there may subscribe to an `open` node (and gets its last item, then its
/// notifications, until it unsubscribes), not to a `presence` one, nor read its items.
async fn access_and_subscriptions_across(backend: Backend) {
    let p = pair(backend, |_| {}).await;
    p.b.add_user_at(B, "eve", "pw").await;
    let mut alice = p.a.login("alice", "a").await;
    let mut bob = Client::login_at(&p.b, B, "bob", "pw", "b").await;
    let mut eve = Client::login_at(&p.b, B, "eve", "pw", "e").await;
    alice.available().await;
    bob.available().await;
    eve.available().await;
    befriend(&mut alice, &mut bob).await;
    let nodes = ["urn:test:white", "urn:test:group", "urn:test:open", TUNE];
    let notify: Vec<String> = nodes.iter().map(|n| format!("{n}+notify")).collect();
    let caps = Caps::new("https://example.org/all", &notify.iter().map(String::as_str).collect::<Vec<_>>());
    announce(&mut bob, &caps, &["bob@b.example".into(), "alice@localhost".into()]).await;
    alice.drain().await;

    ok(&mut alice, &publish("w1", "urn:test:white", "1", "mine", &[("pubsub#access_model", "whitelist")])).await;
    ok(&mut alice, &publish("g1", "urn:test:group", "1", "friends only", &[("pubsub#access_model", "roster"), ("pubsub#roster_groups_allowed", "Friends")]))
        .await;
    no_event(&mut bob, Duration::from_millis(500)).await;
    // Bob in the group: the roster model lets him have it.
    ok(&mut alice, "<iq type='set' id='r1'><query xmlns='jabber:iq:roster'><item jid='bob@b.example'><group>Friends</group></item></query></iq>").await;
    ok(&mut alice, &publish("g2", "urn:test:group", "2", "now you", &[])).await;
    let m = expect_event(&mut bob, "alice@localhost", "urn:test:group").await;
    assert_eq!(event_item(&m).1.text(), "now you");

    // Eve, a stranger on b.example: an explicit subscription to the open node.
    ok(&mut alice, &publish("o1", "urn:test:open", "1", "for all", &[("pubsub#access_model", "open")])).await;
    expect_event(&mut bob, "alice@localhost", "urn:test:open").await;
    let sub = |id: &str, node: &str| {
        format!("<iq type='set' id='{id}' to='alice@localhost'><pubsub xmlns='{PUBSUB}'><subscribe node='{node}' jid='eve@b.example/e'/></pubsub></iq>")
    };
    let r = eve.request(&sub("s1", "urn:test:open")).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let s = r.get_child("pubsub", PUBSUB).and_then(|p| p.get_child("subscription", PUBSUB)).unwrap_or_else(|| panic!("{}", show(&r)));
    assert_eq!((s.attr("jid"), s.attr("subscription")), (Some("eve@b.example/e"), Some("subscribed")));
    let m = eve.expect("the last item", |e| e.name() == "message").await;
    assert_eq!((m.attr("from"), m.attr("to")), (Some("alice@localhost"), Some("eve@b.example/e")), "{}", show(&m));
    assert_eq!(event_item(&m).1.text(), "for all");
    ok(&mut alice, &publish("o2", "urn:test:open", "2", "again", &[])).await;
    let m = eve.expect("a notification", |e| e.name() == "message").await;
    assert_eq!(event_item(&m).1.text(), "again", "{}", show(&m));
    expect_event(&mut bob, "alice@localhost", "urn:test:open").await;

    // Not the presence node, and not its items.
    ok(&mut alice, &tune_publish("t1", "private")).await;
    expect_event(&mut bob, "alice@localhost", TUNE).await;
    let r = eve.request(&sub("s2", TUNE)).await;
    assert_eq!((condition(&r), pubsub_error(&r).as_deref()), ("not-authorized".into(), Some("presence-subscription-required")), "{}", show(&r));
    let r = eve.request(&format!("<iq type='get' id='i1' to='alice@localhost'><pubsub xmlns='{PUBSUB}'><items node='{TUNE}'/></pubsub></iq>")).await;
    assert_eq!(condition(&r), "not-authorized", "{}", show(&r));
    no_event(&mut eve, Duration::from_millis(300)).await;

    let r = eve
        .request(&format!(
            "<iq type='set' id='u1' to='alice@localhost'><pubsub xmlns='{PUBSUB}'><unsubscribe node='urn:test:open' jid='eve@b.example/e'/></pubsub></iq>"
        ))
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    ok(&mut alice, &publish("o3", "urn:test:open", "3", "gone", &[])).await;
    expect_event(&mut bob, "alice@localhost", "urn:test:open").await;
    no_event(&mut eve, Duration::from_millis(500)).await;
    p.stop().await;
}

db_tests!(notifications_a_to_b, notifications_b_to_a, access_and_subscriptions_across);
