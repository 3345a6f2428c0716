//! Message Carbons (XEP-0280), with XEP-0297 forwarding and the XEP-0334 `<no-copy/>` hint.
//! The accounts stand for the spec's romeo@montague.example and juliet@capulet.example.

use std::time::Duration;

use minidom::Element;

use crate::common::client::{CLIENT, Client, Got, condition, show};
use crate::common::{Backend, TestServer};
use crate::db_tests;

const CARBONS: &str = "urn:xmpp:carbons:2";
const FORWARD: &str = "urn:xmpp:forward:0";
const QUIET: Duration = Duration::from_millis(300);

fn body(m: &Element) -> String {
    m.get_child("body", CLIENT).map(|b| b.text()).unwrap_or_default()
}

fn bare(c: &Client) -> String {
    c.jid.split('/').next().unwrap().to_string()
}

/// §4, Examples 3 and 4: no `to`, so the sender's own account; the result comes from the
/// bare JID to the full JID.
async fn enable(c: &mut Client) {
    let r = c.request("<iq type='set' id='enable1'><enable xmlns='urn:xmpp:carbons:2'/></iq>").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    assert_eq!(r.attr("from"), Some(bare(c).as_str()));
    assert_eq!(r.attr("to"), Some(c.jid.as_str()));
    assert!(r.children().next().is_none());
}

/// §5, Examples 6 and 7.
async fn disable(c: &mut Client) {
    let r = c.request("<iq type='set' id='disable1'><disable xmlns='urn:xmpp:carbons:2'/></iq>").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    assert_eq!(r.attr("from"), Some(bare(c).as_str()));
    assert_eq!(r.attr("to"), Some(c.jid.as_str()));
}

/// Logged in, carbons on if asked (before initial presence, as clients do), available with
/// `priority`.
async fn online(s: &TestServer, user: &str, resource: &str, carbons: bool, priority: i8) -> Client {
    let mut c = s.login(user, resource).await;
    if carbons {
        enable(&mut c).await;
    }
    c.send(&format!("<presence><priority>{priority}</priority></presence>")).await;
    let me = c.jid.clone();
    c.expect("own presence", |e| e.name() == "presence" && e.attr("from") == Some(me.as_str())).await;
    c
}

/// Forget the presence the resources of one account sent each other.
async fn settle(clients: &mut [&mut Client]) {
    for c in clients.iter_mut() {
        c.drain().await;
    }
}

/// A carbon copy of the given direction (`sent` or `received`); checks the wrapper of §7/§8
/// and returns the forwarded original.
async fn carbon(c: &mut Client, direction: &str) -> (Element, Element) {
    let outer = c.expect(&format!("a <{direction}/> carbon"), |e| e.name() == "message" && e.has_child(direction, CARBONS)).await;
    assert_eq!(outer.attr("from"), Some(bare(c).as_str()), "copies come from the bare JID: {}", show(&outer));
    assert_eq!(outer.attr("to"), Some(c.jid.as_str()), "copies go to the full JID: {}", show(&outer));
    assert_eq!(outer.children().count(), 1, "{}", show(&outer));
    let wrapper = outer.get_child(direction, CARBONS).unwrap();
    let forwarded = wrapper.get_child("forwarded", FORWARD).expect("XEP-0297 forwarded");
    let inner = forwarded.get_child("message", CLIENT).expect("the original keeps jabber:client").clone();
    (outer, inner)
}

fn is_message(e: &Element) -> bool {
    e.name() == "message"
}

/// No message arrives for a while (presence may).
async fn no_messages(c: &mut Client, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(el) = tokio::time::timeout_at(deadline, c.next()).await {
        assert!(!is_message(&el), "{}: unexpected message {}", c.jid, show(&el));
    }
}

/// §3 disco; §4/§5 enable and disable with each addressing; §10.1 repeated requests.
async fn discovery_and_enabling(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["romeo", "juliet"]).await;
    let mut romeo = s.login("romeo", "garden").await;
    // Example 1/2: the server's disco#info.
    let info = romeo.request("<iq type='get' id='info1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    let features: Vec<&str> = info.get_child("query", "http://jabber.org/protocol/disco#info").unwrap().children().filter_map(|f| f.attr("var")).collect();
    assert!(features.contains(&CARBONS), "{features:?}");
    // Not every rule of §6.1 is followed to the letter (errors are copied without knowing
    // what they answer): the mandatory-rules feature is not claimed.
    assert!(!features.contains(&"urn:xmpp:carbons:rules:0"), "{features:?}");

    enable(&mut romeo).await;
    // §10.1: again is fine, and so is `to` the own bare JID.
    enable(&mut romeo).await;
    let r = romeo.request("<iq type='set' id='enable2' to='romeo@localhost'><enable xmlns='urn:xmpp:carbons:2'/></iq>").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    disable(&mut romeo).await;
    disable(&mut romeo).await;
    let r = romeo.request("<iq type='set' id='disable2' to='romeo@localhost'><disable xmlns='urn:xmpp:carbons:2'/></iq>").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));

    // Example 8: another account's carbons are not ours to change: not-allowed (cancel).
    for payload in ["enable", "disable"] {
        let r = romeo.request(&format!("<iq type='set' id='x-{payload}' to='juliet@localhost'><{payload} xmlns='urn:xmpp:carbons:2'/></iq>")).await;
        assert_eq!(r.attr("type"), Some("error"), "{}", show(&r));
        assert_eq!(condition(&r), "not-allowed");
        assert_eq!(r.get_child("error", CLIENT).unwrap().attr("type"), Some("cancel"));
        assert_eq!(r.attr("from"), Some("juliet@localhost"));
    }
    // The protocol lives on the account, not the domain; and a get means nothing.
    let r = romeo.request("<iq type='set' id='d1' to='localhost'><enable xmlns='urn:xmpp:carbons:2'/></iq>").await;
    assert_eq!(condition(&r), "service-unavailable");
    let r = romeo.request("<iq type='get' id='g1'><enable xmlns='urn:xmpp:carbons:2'/></iq>").await;
    assert_eq!(condition(&r), "service-unavailable");
    s.stop().await;
}

/// §7, Examples 9 and 10: a message to a full JID is copied to the other resources with
/// carbons on, not to the addressed one, not to those without carbons.
async fn received_directed_message(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["romeo", "juliet"]).await;
    let mut juliet = online(&s, "juliet", "balcony", false, 0).await;
    let mut garden = online(&s, "romeo", "garden", true, 0).await;
    let mut home = online(&s, "romeo", "home", true, 0).await;
    let mut plain = online(&s, "romeo", "plain", false, 0).await;
    settle(&mut [&mut garden, &mut home, &mut plain, &mut juliet]).await;

    juliet
        .send("<message to='romeo@localhost/garden' type='chat' id='j1'><body>What man art thou?</body><thread>0e3141cd</thread></message>")
        .await;
    let original = garden.expect("the original", is_message).await;
    assert_eq!(original.attr("from"), Some("juliet@localhost/balcony"));
    assert!(!original.has_child("received", CARBONS), "{}", show(&original));
    let (outer, inner) = carbon(&mut home, "received").await;
    assert_eq!(outer.attr("type"), Some("chat"), "the copy keeps the type");
    assert_eq!(inner.attr("from"), Some("juliet@localhost/balcony"));
    assert_eq!(inner.attr("to"), Some("romeo@localhost/garden"));
    assert_eq!(inner.attr("id"), Some("j1"));
    assert_eq!(inner.attr("type"), Some("chat"));
    assert_eq!(body(&inner), "What man art thou?");
    assert_eq!(inner.get_child("thread", CLIENT).unwrap().text(), "0e3141cd");
    garden.expect_silence(QUIET).await;
    plain.expect_silence(QUIET).await;
    home.expect_silence(Duration::from_millis(50)).await;
    juliet.expect_silence(Duration::from_millis(50)).await;
    s.stop().await;
}

/// §8, Examples 12 and 13: what a resource sends is copied to the other resources with
/// carbons on (whether or not the sender has them on), never back to the sender. Between
/// two local accounts, both sides are copied.
async fn sent_and_received_between_local_accounts(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["romeo", "juliet"]).await;
    let mut balcony = online(&s, "juliet", "balcony", true, 0).await;
    let mut chamber = online(&s, "juliet", "chamber", true, 0).await;
    let mut home = online(&s, "romeo", "home", false, 0).await;
    let mut garden = online(&s, "romeo", "garden", true, 0).await;
    settle(&mut [&mut balcony, &mut chamber, &mut home, &mut garden]).await;

    home.send("<message to='juliet@localhost/balcony' type='chat' id='r1'><body>Neither, fair saint</body><thread>0e3141cd</thread></message>").await;
    // The recipient gets the original.
    let m = balcony.expect("the original", is_message).await;
    assert_eq!((m.attr("from"), body(&m).as_str()), (Some("romeo@localhost/home"), "Neither, fair saint"));
    // The sender's other resource: <sent/>.
    let (outer, inner) = carbon(&mut garden, "sent").await;
    assert_eq!(outer.attr("type"), Some("chat"));
    assert_eq!(inner.attr("from"), Some("romeo@localhost/home"));
    assert_eq!(inner.attr("to"), Some("juliet@localhost/balcony"));
    assert_eq!(inner.attr("id"), Some("r1"));
    assert_eq!(body(&inner), "Neither, fair saint");
    // The recipient's other resource: <received/>.
    let (_, inner) = carbon(&mut chamber, "received").await;
    assert_eq!(inner.attr("from"), Some("romeo@localhost/home"));
    assert_eq!(body(&inner), "Neither, fair saint");
    home.expect_silence(QUIET).await;
    balcony.expect_silence(Duration::from_millis(50)).await;

    // The sender with carbons on does not get its own copy either (§8 SHOULD NOT).
    garden.send("<message to='juliet@localhost/balcony' type='chat' id='r2'><body>again</body></message>").await;
    balcony.expect("the original", is_message).await;
    carbon(&mut chamber, "received").await;
    home.expect_silence(QUIET).await;
    garden.expect_silence(Duration::from_millis(50)).await;

    // An answer to the bare JID, with both of romeo's resources at the same priority: both
    // get the original, so neither gets a copy; juliet's other resource gets <sent/>.
    balcony.send("<message to='romeo@localhost' type='chat' id='j1'><body>to all of you</body></message>").await;
    assert_eq!(body(&home.expect("original", is_message).await), "to all of you");
    let m = garden.expect("original", is_message).await;
    assert!(!m.has_child("received", CARBONS), "{}", show(&m));
    let (_, inner) = carbon(&mut chamber, "sent").await;
    assert_eq!(inner.attr("to"), Some("romeo@localhost"));
    garden.expect_silence(QUIET).await;
    home.expect_silence(Duration::from_millis(50)).await;
    balcony.expect_silence(Duration::from_millis(50)).await;

    // What is sent is copied whatever becomes of it: to an account with nobody online (it
    // waits in offline storage), to another server (it bounces: no federation).
    balcony.close().await;
    chamber.close().await;
    settle(&mut [&mut home, &mut garden]).await;
    home.send("<message to='juliet@localhost' type='chat' id='r3'><body>are you there?</body></message>").await;
    assert_eq!(carbon(&mut garden, "sent").await.1.attr("id"), Some("r3"));
    home.send("<message to='mercutio@verona.example' type='chat' id='r4'><body>far away</body></message>").await;
    assert_eq!(carbon(&mut garden, "sent").await.1.attr("id"), Some("r4"));
    assert_eq!(condition(&home.expect("error", |e| e.attr("id") == Some("r4")).await), "remote-server-not-found");
    // The error goes to the sender only: written to its session, not routed, so not copied.
    garden.expect_silence(QUIET).await;
    s.stop().await;
}

/// RFC 6121 delivery decides who gets the original; the copies go to every other resource
/// with carbons on: a lower priority, a negative one (which takes nothing for the bare JID),
/// even when nobody took the message and it waits in offline storage. A resource that sent
/// no presence gets no copies.
async fn priorities_and_bare_jid(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["romeo", "juliet"]).await;
    let mut juliet = online(&s, "juliet", "balcony", false, 0).await;
    let mut high = online(&s, "romeo", "high", true, 5).await;
    let mut low = online(&s, "romeo", "low", true, 1).await;
    let mut bot = online(&s, "romeo", "bot", true, -1).await;
    let mut quiet = s.login("romeo", "quiet").await;
    enable(&mut quiet).await;
    settle(&mut [&mut high, &mut low, &mut bot, &mut quiet]).await;

    juliet.send("<message to='romeo@localhost' type='chat' id='p1'><body>top</body></message>").await;
    let m = high.expect("original", is_message).await;
    assert!(!m.has_child("received", CARBONS));
    assert_eq!(body(&carbon(&mut low, "received").await.1), "top");
    assert_eq!(body(&carbon(&mut bot, "received").await.1), "top");
    high.expect_silence(QUIET).await;
    quiet.expect_silence(Duration::from_millis(50)).await;

    // Nobody with a non-negative priority: stored offline, and the bot still sees a copy.
    high.send("<presence type='unavailable'/>").await;
    low.send("<presence type='unavailable'/>").await;
    settle(&mut [&mut high, &mut low, &mut bot]).await;
    juliet.send("<message to='romeo@localhost' type='chat' id='p2'><body>stored</body></message>").await;
    assert_eq!(body(&carbon(&mut bot, "received").await.1), "stored");
    juliet.expect_silence(QUIET).await;
    high.expect_silence(Duration::from_millis(50)).await;
    low.expect_silence(Duration::from_millis(50)).await;
    // The stored message is delivered at the next initial presence, as an original.
    high.send("<presence><priority>5</priority></presence>").await;
    let m = high.expect("stored message", is_message).await;
    assert_eq!(body(&m), "stored");
    assert!(!m.has_child("received", CARBONS) && m.has_child("delay", "urn:xmpp:delay"), "{}", show(&m));
    no_messages(&mut bot, QUIET).await;
    s.stop().await;
}

/// §8, Examples 14 and 15, and XEP-0334 `<no-copy/>`: no copies on either side, and the
/// original is delivered as it was sent (the `<private/>` element is not removed).
async fn private_messages(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["romeo", "juliet"]).await;
    let mut juliet = online(&s, "juliet", "home", true, 0).await;
    let mut juliet2 = online(&s, "juliet", "phone", true, 0).await;
    let mut romeo = online(&s, "romeo", "home", true, 0).await;
    let mut romeo2 = online(&s, "romeo", "phone", true, 0).await;
    settle(&mut [&mut juliet, &mut juliet2, &mut romeo, &mut romeo2]).await;
    let cases = [
        "<private xmlns='urn:xmpp:carbons:2'/><no-copy xmlns='urn:xmpp:hints'/>",
        "<private xmlns='urn:xmpp:carbons:2'/>",
        "<no-copy xmlns='urn:xmpp:hints'/>",
    ];
    for (i, marks) in cases.iter().enumerate() {
        romeo.send(&format!("<message to='juliet@localhost/home' type='chat' id='x{i}'><body>secret {i}</body><thread>0e31</thread>{marks}</message>")).await;
        let m = juliet.expect("original", is_message).await;
        assert_eq!(body(&m), format!("secret {i}"));
        if marks.contains("private") {
            assert!(m.has_child("private", CARBONS), "the element stays: {}", show(&m));
        }
        if marks.contains("no-copy") {
            assert!(m.has_child("no-copy", "urn:xmpp:hints"), "{}", show(&m));
        }
    }
    romeo2.expect_silence(QUIET).await;
    juliet2.expect_silence(Duration::from_millis(50)).await;
    romeo.expect_silence(Duration::from_millis(50)).await;
    s.stop().await;
}

/// §6.1 over the wire, each rule: what is copied and what is not.
async fn eligible_messages(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["romeo", "juliet"]).await;
    let mut juliet = online(&s, "juliet", "balcony", false, 0).await;
    let mut garden = online(&s, "romeo", "garden", false, 0).await;
    let mut home = online(&s, "romeo", "home", true, 0).await;
    settle(&mut [&mut garden, &mut home]).await;
    let copied = [
        ("chat with a body", "<message to='romeo@localhost/garden' type='chat' id='e1'><body>b</body></message>"),
        ("chat state only", "<message to='romeo@localhost/garden' type='chat' id='e2'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"),
        ("normal with a body", "<message to='romeo@localhost/garden' id='e3'><body>b</body></message>"),
        ("receipt", "<message to='romeo@localhost/garden' id='e4'><received xmlns='urn:xmpp:receipts' id='e1'/></message>"),
        ("chat marker", "<message to='romeo@localhost/garden' id='e5'><displayed xmlns='urn:xmpp:chat-markers:0' id='e1'/></message>"),
        ("direct invitation", "<message to='romeo@localhost/garden' id='e6'><x xmlns='jabber:x:conference' jid='room@conference.localhost'/></message>"),
        ("mediated invitation", "<message to='romeo@localhost/garden' id='e7'><x xmlns='http://jabber.org/protocol/muc#user'><invite from='juliet@localhost'/></x></message>"),
        ("error", "<message to='romeo@localhost/garden' type='error' id='e8'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"),
    ];
    for (what, xml) in copied {
        juliet.send(xml).await;
        let id = xml.split("id='").nth(1).unwrap().split('\'').next().unwrap();
        garden.expect(what, |e| e.attr("id") == Some(id)).await;
        let (outer, inner) = carbon(&mut home, "received").await;
        assert_eq!(inner.attr("id"), Some(id), "{what}");
        let kind = xml.split("type='").nth(1).map(|t| t.split('\'').next().unwrap());
        assert_eq!(outer.attr("type"), kind, "{what}: the copy keeps the type");
    }
    let not_copied = [
        ("normal without a body", "<message to='romeo@localhost/garden' id='n1'><subject>s</subject></message>"),
        ("headline", "<message to='romeo@localhost/garden' type='headline' id='n2'><body>news</body></message>"),
        ("groupchat", "<message to='romeo@localhost/garden' type='groupchat' id='n3'><body>all</body></message>"),
        ("private message from a room occupant", "<message to='romeo@localhost/garden' type='chat' id='n4'><body>pm</body><x xmlns='http://jabber.org/protocol/muc#user'/></message>"),
    ];
    for (what, xml) in not_copied {
        juliet.send(xml).await;
        let id = xml.split("id='").nth(1).unwrap().split('\'').next().unwrap();
        garden.expect(what, |e| e.attr("id") == Some(id)).await;
        home.expect_silence(QUIET).await;
    }
    // A private message to a room occupant is copied on the sender's side.
    garden.send("<message to='juliet@localhost/balcony' type='chat' id='s1'><body>pm</body><x xmlns='http://jabber.org/protocol/muc#user'/></message>").await;
    assert_eq!(carbon(&mut home, "sent").await.1.attr("id"), Some("s1"));
    juliet.expect("pm", |e| e.attr("id") == Some("s1")).await;
    s.stop().await;
}

/// Carbons are off until enabled, off again after disable, and a new session starts with
/// them off even when it reuses the resource of one that had them on.
async fn disabled_resources_get_nothing(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["romeo", "juliet"]).await;
    let mut juliet = online(&s, "juliet", "balcony", false, 0).await;
    let mut garden = online(&s, "romeo", "garden", false, 0).await;
    let mut home = online(&s, "romeo", "home", false, 0).await;
    settle(&mut [&mut garden, &mut home]).await;
    juliet.send("<message to='romeo@localhost/garden' type='chat'><body>1</body></message>").await;
    garden.send("<message to='juliet@localhost/balcony' type='chat'><body>2</body></message>").await;
    garden.expect("1", is_message).await;
    home.expect_silence(QUIET).await;

    enable(&mut home).await;
    juliet.send("<message to='romeo@localhost/garden' type='chat'><body>3</body></message>").await;
    assert_eq!(body(&carbon(&mut home, "received").await.1), "3");
    disable(&mut home).await;
    juliet.send("<message to='romeo@localhost/garden' type='chat'><body>4</body></message>").await;
    garden.send("<message to='juliet@localhost/balcony' type='chat'><body>5</body></message>").await;
    garden.drain().await;
    home.expect_silence(QUIET).await;

    // home enables, leaves, comes back: off.
    enable(&mut home).await;
    home.close().await;
    let mut home = online(&s, "romeo", "home", false, 0).await;
    settle(&mut [&mut garden, &mut home]).await;
    juliet.send("<message to='romeo@localhost/garden' type='chat'><body>6</body></message>").await;
    garden.expect("6", is_message).await;
    home.expect_silence(QUIET).await;
    // Same after a replaced session (a new bind of the same full JID).
    enable(&mut home).await;
    let mut home2 = online(&s, "romeo", "home", false, 0).await;
    assert_eq!(home.expect_stream_error().await.as_deref(), Some("conflict"));
    settle(&mut [&mut garden, &mut home2]).await;
    juliet.send("<message to='romeo@localhost/garden' type='chat'><body>7</body></message>").await;
    garden.expect("7", is_message).await;
    home2.expect_silence(QUIET).await;
    s.stop().await;
}

/// §11, Example 11 (the impersonation attack): a carbon wrapper that does not come from the
/// account itself never reaches a client as one. From another account, or from one of the
/// account's own clients, it is removed (and a message left empty is dropped).
async fn forged_carbons_are_removed(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["romeo", "juliet", "tybalt"]).await;
    let mut romeo = online(&s, "romeo", "garden", true, 0).await;
    let mut romeo2 = online(&s, "romeo", "home", true, 0).await;
    let mut tybalt = online(&s, "tybalt", "home", false, 0).await;
    settle(&mut [&mut romeo, &mut romeo2]).await;
    let forged = |wrapper: &str, extra: &str| {
        format!(
            "<message to='romeo@localhost' type='chat' id='f-{wrapper}'>{extra}<{wrapper} xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>\
             <message xmlns='jabber:client' from='juliet@localhost/balcony' to='romeo@localhost/garden' type='chat'>\
             <body>Thou shall meet me tonite</body></message></forwarded></{wrapper}></message>"
        )
    };
    // Only the wrapper: nothing is left to deliver, to any resource.
    tybalt.send(&forged("received", "")).await;
    tybalt.send(&forged("sent", "")).await;
    romeo.expect_silence(QUIET).await;
    romeo2.expect_silence(Duration::from_millis(50)).await;
    // With a body besides: delivered without the wrapper, from tybalt, to both resources
    // (same priority); no copies either.
    tybalt.send(&forged("received", "<body>hi</body>")).await;
    for c in [&mut romeo, &mut romeo2] {
        let m = c.expect("tybalt's message", is_message).await;
        assert_eq!(m.attr("from"), Some("tybalt@localhost/home"));
        assert_eq!(body(&m), "hi");
        assert!(!m.has_child("received", CARBONS) && !m.has_child("sent", CARBONS), "{}", show(&m));
        c.expect_silence(QUIET).await;
    }
    // From one of romeo's own clients, even claiming the bare JID as `from`: its `from` is
    // its full JID, so the wrapper is a forgery too.
    let own = forged("sent", "").replace("<message to='romeo@localhost' ", "<message from='romeo@localhost' to='romeo@localhost/home' ");
    romeo.send(&own).await;
    romeo2.expect_silence(QUIET).await;
    // And towards another account.
    let mut juliet = online(&s, "juliet", "balcony", false, 0).await;
    let to_juliet = forged("received", "<body>look</body>").replace("to='romeo@localhost'", "to='juliet@localhost/balcony'");
    romeo.send(&to_juliet).await;
    let m = juliet.expect("message", is_message).await;
    assert!(!m.has_child("received", CARBONS), "{}", show(&m));
    // The sent copy carries what the recipient got, without the forged wrapper.
    let (_, inner) = carbon(&mut romeo2, "sent").await;
    assert!(!inner.has_child("received", CARBONS), "{}", show(&inner));
    assert_eq!(body(&inner), "look");
    s.stop().await;
}

/// XEP-0191: a blocked message is not delivered, so nobody gets a copy of it; the blocking
/// side's own resources see nothing of it either way.
async fn blocked_messages_are_not_copied(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["romeo", "tybalt"]).await;
    let mut romeo = online(&s, "romeo", "garden", true, 0).await;
    let mut romeo2 = online(&s, "romeo", "home", true, 0).await;
    let mut tybalt = online(&s, "tybalt", "home", false, 0).await;
    settle(&mut [&mut romeo, &mut romeo2]).await;
    let r = romeo.request("<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='tybalt@localhost'/></block></iq>").await;
    assert_eq!(r.attr("type"), Some("result"));
    settle(&mut [&mut romeo, &mut romeo2]).await;
    // Inbound.
    tybalt.send("<message to='romeo@localhost/garden' type='chat' id='t1'><body>draw</body></message>").await;
    assert_eq!(condition(&tybalt.expect("error", |e| e.attr("id") == Some("t1")).await), "service-unavailable");
    // Outbound.
    romeo.send("<message to='tybalt@localhost' type='chat' id='r1'><body>no</body></message>").await;
    assert_eq!(condition(&romeo.expect("error", |e| e.attr("id") == Some("r1")).await), "not-acceptable");
    romeo.expect_silence(QUIET).await;
    romeo2.expect_silence(Duration::from_millis(50)).await;
    tybalt.expect_silence(Duration::from_millis(50)).await;
    s.stop().await;
}

/// §9.3: an error a client returns for a copy goes to the account's bare JID, and from
/// there nowhere: not to the original sender, not to the account's resources.
async fn errors_about_copies_go_nowhere(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["romeo", "juliet"]).await;
    let mut juliet = online(&s, "juliet", "balcony", false, 0).await;
    let mut garden = online(&s, "romeo", "garden", true, 0).await;
    let mut home = online(&s, "romeo", "home", true, 0).await;
    settle(&mut [&mut garden, &mut home]).await;
    juliet.send("<message to='romeo@localhost/garden' type='chat' id='j1'><body>hi</body></message>").await;
    garden.expect("original", is_message).await;
    let (outer, _) = carbon(&mut home, "received").await;
    // The client bounces the copy (to where it came from: the bare JID).
    home.send(&format!(
        "<message to='{}' type='error'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>",
        outer.attr("from").unwrap()
    ))
    .await;
    juliet.expect_silence(QUIET).await;
    garden.expect_silence(Duration::from_millis(50)).await;
    home.expect_silence(Duration::from_millis(50)).await;
    s.stop().await;
}

/// A resource with carbons on that stops reading is cut off; the copies still queued for it
/// are not rerouted (to the account's resource that reads, or to offline storage): that one
/// got the originals, and gets each exactly once.
async fn copies_of_a_stuck_resource_are_not_rerouted(b: Backend) {
    let s = TestServer::start_with(b, |c| {
        c.c2s.max_queue = 16;
        c.c2s.write_timeout = 2;
        c.c2s.max_bytes_per_second = 0;
    })
    .await;
    s.users(&["romeo", "juliet"]).await;
    let mut juliet = s.login("juliet", "balcony").await;
    let mut good = online(&s, "romeo", "good", false, 0).await;
    let mut stuck = Client::login_small_buffer(&s, "romeo", "pw", "stuck").await;
    enable(&mut stuck).await;
    stuck.available().await;
    good.drain().await;
    let collector = tokio::spawn(async move {
        let mut got = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(3), good.read()).await {
                Ok(Got::Element(el)) if is_message(&el) => got.push(el),
                Ok(Got::Element(_) | Got::Header(_)) => {}
                Ok(Got::Closed | Got::Eof) | Err(_) => return got,
            }
        }
    });
    // Enough for the stuck resource's socket and queue to fill with copies.
    let text = "m".repeat(12_000);
    let stuck_jid = jid::FullJid::new("romeo@localhost/stuck").unwrap();
    let mut n = 0;
    while s.server().core().sessions.is_connected(&stuck_jid) {
        assert!(n < 2_000, "the stuck resource was never cut off");
        for _ in 0..16 {
            juliet.send(&format!("<message to='romeo@localhost/good' type='chat' id='m{n}'><body>{n} {text}</body></message>")).await;
            n += 1;
        }
        juliet.request(&format!("<iq type='get' id='sync{n}'><ping xmlns='urn:xmpp:ping'/></iq>")).await;
    }
    drop(stuck);
    let got = collector.await.unwrap();
    let copies = got.iter().filter(|m| m.has_child("received", CARBONS)).count();
    assert_eq!(copies, 0, "copies meant for the stuck resource were rerouted");
    let ids: Vec<String> = got.iter().map(|m| m.attr("id").unwrap_or_default().to_string()).collect();
    assert_eq!(ids, (0..n).map(|i| format!("m{i}")).collect::<Vec<_>>(), "each original once, in order");
    // Nor were they stored for later.
    let mut later = online(&s, "romeo", "later", false, 0).await;
    no_messages(&mut later, QUIET).await;
    s.stop().await;
}

db_tests!(
    copies_of_a_stuck_resource_are_not_rerouted,
    discovery_and_enabling,
    received_directed_message,
    sent_and_received_between_local_accounts,
    priorities_and_bare_jid,
    private_messages,
    eligible_messages,
    disabled_resources_get_nothing,
    forged_carbons_are_removed,
    blocked_messages_are_not_copied,
    errors_about_copies_go_nowhere,
);
