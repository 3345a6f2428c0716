//! XEP-0352 Client State Indication on the wire: an inactive client gets what it must see
//! now, the rest is held (presence merged per contact) and written, in order, when it
//! becomes active or something urgent comes.

use std::time::Duration;

use minidom::Element;

use crate::common::client::{CLIENT, show};
use crate::common::{Backend, TestServer, befriend};
use crate::db_tests;

const CSI: &str = "urn:xmpp:csi:0";

fn body(m: &Element) -> String {
    m.get_child("body", CLIENT).map(|b| b.text()).unwrap_or_default()
}

fn status(p: &Element) -> String {
    p.get_child("status", CLIENT).map(|b| b.text()).unwrap_or_default()
}

/// §4: the feature is offered after authentication; the nonzas are never answered.
/// While inactive, presence updates and chat states wait (only each contact's newest
/// presence); a message with a body comes at once, after what was held (in order); on
/// `<active/>` the rest comes before the answer to the next stanza (§5.1).
async fn holds_what_can_wait(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["romeo", "juliet", "nurse"]).await;
    let mut romeo = s.login("romeo", "phone").await;
    assert!(romeo.features.as_ref().unwrap().get_child("csi", CSI).is_some(), "{}", show(romeo.features.as_ref().unwrap()));
    let mut juliet = s.login("juliet", "balcony").await;
    let mut nurse = s.login("nurse", "garden").await;
    for c in [&mut romeo, &mut juliet, &mut nurse] {
        c.available().await;
    }
    befriend(&mut romeo, &mut juliet).await;
    befriend(&mut romeo, &mut nurse).await;

    // A round trip makes sure the server has read the nonza before the others send.
    romeo.send(&format!("<inactive xmlns='{CSI}'/>")).await;
    romeo.request("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>").await;
    for i in 1..=3 {
        juliet.send(&format!("<presence><status>juliet {i}</status></presence>")).await;
    }
    nurse.send("<presence><status>nurse 1</status></presence>").await;
    juliet.send("<message to='romeo@localhost' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>").await;
    romeo.expect_silence(Duration::from_millis(400)).await;

    // Something the user must see: written at once, after what was held.
    juliet.send("<message to='romeo@localhost' type='chat'><body>wherefore art thou</body></message>").await;
    // Each contact's newest presence and the chat state, then the message: the senders are
    // two clients, so only each one's own order is certain.
    let released: Vec<Element> = [romeo.next().await, romeo.next().await, romeo.next().await].into();
    let message = romeo.next().await;
    assert_eq!(body(&message), "wherefore art thou", "{}", show(&message));
    let mut presences: Vec<String> = released.iter().filter(|e| e.name() == "presence").map(status).collect();
    presences.sort();
    assert_eq!(presences, ["juliet 3", "nurse 1"], "{:?}", released.iter().map(show).collect::<Vec<_>>());
    let juliet_presence = released.iter().position(|e| status(e) == "juliet 3").unwrap();
    let composing = released
        .iter()
        .position(|e| e.get_child("composing", "http://jabber.org/protocol/chatstates").is_some())
        .expect("the chat state");
    assert!(juliet_presence < composing, "juliet's own order was kept");

    // Subscription requests are never held.
    s.add_user("tybalt", "pw").await;
    let mut tybalt = s.login("tybalt", "street").await;
    tybalt.send("<presence to='romeo@localhost' type='subscribe'/>").await;
    let request = romeo.expect_kind("presence").await;
    assert_eq!(request.attr("type"), Some("subscribe"));

    // Held again, then released by <active/> before the answer to a ping.
    nurse.send("<presence><show>away</show><status>nurse 2</status></presence>").await;
    romeo.expect_silence(Duration::from_millis(300)).await;
    romeo.send(&format!("<active xmlns='{CSI}'/><iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")).await;
    let held = romeo.next().await;
    assert_eq!(status(&held), "nurse 2", "{}", show(&held));
    let pong = romeo.next().await;
    assert_eq!((pong.name(), pong.attr("id")), ("iq", Some("p1")), "{}", show(&pong));
    // Active again: presence comes at once.
    juliet.send("<presence><status>juliet 4</status></presence>").await;
    let p = romeo.expect_kind("presence").await;
    assert_eq!(status(&p), "juliet 4");
}

/// With stream management, what is held is not counted as sent until it is written.
async fn held_stanzas_are_not_counted(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["romeo", "juliet"]).await;
    let mut romeo = s.login("romeo", "phone").await;
    let mut juliet = s.login("juliet", "balcony").await;
    romeo.available().await;
    juliet.available().await;
    befriend(&mut romeo, &mut juliet).await;
    romeo.send("<enable xmlns='urn:xmpp:sm:3'/>").await;
    romeo.expect("enabled", |e| e.is("enabled", "urn:xmpp:sm:3")).await;
    romeo.send(&format!("<inactive xmlns='{CSI}'/>")).await;
    romeo.request("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>").await;
    romeo.expect("a request for an ack", |e| e.is("r", "urn:xmpp:sm:3")).await;
    romeo.send("<a xmlns='urn:xmpp:sm:3' h='1'/>").await;
    juliet.send("<presence><status>away a while</status></presence>").await;
    romeo.expect_silence(Duration::from_millis(300)).await;
    // Only the pong was sent: acknowledging two stanzas is acknowledging too many.
    romeo.send("<a xmlns='urn:xmpp:sm:3' h='2'/>").await;
    assert_eq!(romeo.expect_stream_error().await.as_deref(), Some("undefined-condition"));
}

db_tests!(holds_what_can_wait, held_stanzas_are_not_counted);
