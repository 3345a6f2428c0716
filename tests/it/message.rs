//! Routing of messages and IQs (RFC 6120 §10, RFC 6121 §8).

use std::time::Duration;

use crate::common::client::{CLIENT, condition, show};
use crate::common::{Backend, TestServer};
use crate::db_tests;

fn body(m: &minidom::Element) -> String {
    m.get_child("body", CLIENT).map(|b| b.text()).unwrap_or_default()
}

async fn chat_both_ways(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut bob = s.login("bob", "b").await;
    alice.available().await;
    bob.available().await;
    alice.send("<message to='bob@localhost' type='chat' id='m1' xml:lang='en'><body>Hi Bob &amp; co &lt;3</body><thread>t1</thread></message>").await;
    let m = bob.expect_kind("message").await;
    assert_eq!(m.attr("from"), Some("alice@localhost/a"), "the server stamps the full JID");
    assert_eq!(m.attr("to"), Some("bob@localhost"));
    assert_eq!(m.attr("id"), Some("m1"));
    assert_eq!(m.attr("type"), Some("chat"));
    assert_eq!(body(&m), "Hi Bob & co <3");
    assert_eq!(m.get_child("thread", CLIENT).unwrap().text(), "t1");
    bob.send("<message to='alice@localhost/a' type='chat' id='m2'><body>Hi Alice</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>").await;
    let m = alice.expect_kind("message").await;
    assert_eq!((m.attr("from"), body(&m).as_str()), (Some("bob@localhost/b"), "Hi Alice"));
    assert!(m.has_child("active", "http://jabber.org/protocol/chatstates"), "extensions are forwarded");
    // A `from` of the sender's own bare JID is accepted and stamped.
    alice.send("<message from='alice@localhost' to='bob@localhost' type='chat'><body>x</body></message>").await;
    assert_eq!(bob.expect_kind("message").await.attr("from"), Some("alice@localhost/a"));
    s.stop().await;
}

/// RFC 6121 §8.5.2.1.1: to a bare JID, the highest non-negative priority wins (all on a tie);
/// a full JID reaches exactly that resource, available or not.
async fn priorities_and_resources(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut low = s.login("bob", "low").await;
    let mut high = s.login("bob", "high").await;
    let mut quiet = s.login("bob", "quiet").await; // connected, never available
    low.send("<presence><priority>1</priority></presence>").await;
    high.send("<presence><priority>5</priority></presence>").await;
    for c in [&mut low, &mut high] {
        c.drain().await;
    }
    alice.send("<message to='bob@localhost' type='chat'><body>top</body></message>").await;
    assert_eq!(body(&high.expect_kind("message").await), "top");
    low.expect_silence(Duration::from_millis(300)).await;
    quiet.expect_silence(Duration::from_millis(10)).await;
    // Tie: both.
    low.send("<presence><priority>5</priority></presence>").await;
    high.drain().await;
    low.drain().await;
    alice.send("<message to='bob@localhost' type='chat'><body>tie</body></message>").await;
    assert_eq!(body(&high.expect_kind("message").await), "tie");
    assert_eq!(body(&low.expect_kind("message").await), "tie");
    // Headlines go to all non-negative available resources.
    high.send("<presence><priority>0</priority></presence>").await;
    high.drain().await;
    low.drain().await;
    alice.send("<message to='bob@localhost' type='headline'><body>news</body></message>").await;
    assert_eq!(body(&high.expect_kind("message").await), "news");
    assert_eq!(body(&low.expect_kind("message").await), "news");
    // A full JID: exactly that resource, even one that sent no presence.
    alice.send("<message to='bob@localhost/quiet' type='chat'><body>direct</body></message>").await;
    assert_eq!(body(&quiet.expect_kind("message").await), "direct");
    // A full JID that is not connected: chat falls back to the bare JID.
    alice.send("<message to='bob@localhost/gone' type='chat'><body>fallback</body></message>").await;
    assert_eq!(body(&low.expect_kind("message").await), "fallback");
    s.stop().await;
}

async fn errors_for_undeliverable(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    alice.available().await;
    // No such account (§8.5.1): service-unavailable, from the address it was sent to.
    alice.send("<message to='nobody@localhost' type='chat' id='x1'><body>hello?</body></message>").await;
    let e = alice.expect("error", |e| e.attr("id") == Some("x1")).await;
    assert_eq!(e.attr("type"), Some("error"));
    assert_eq!(e.attr("from"), Some("nobody@localhost"));
    assert_eq!(e.attr("to"), Some("alice@localhost/a"));
    assert_eq!(condition(&e), "service-unavailable");
    // A groupchat message to a user: service-unavailable (§8.5.2.1.1).
    alice.send("<message to='bob@localhost' type='groupchat' id='x2'><body>hi</body></message>").await;
    assert_eq!(condition(&alice.expect("error", |e| e.attr("id") == Some("x2")).await), "service-unavailable");
    // A headline to an offline user is dropped without an error.
    alice.send("<message to='bob@localhost' type='headline' id='x3'><body>hi</body></message>").await;
    // Federation is not there: a remote domain is not found (RFC 6120 §10.4.3).
    alice.send("<message to='someone@remote.example' id='x4'><body>hi</body></message>").await;
    let e = alice.expect("error", |e| e.attr("id") == Some("x4")).await;
    assert_eq!(condition(&e), "remote-server-not-found");
    alice.expect_silence(Duration::from_millis(300)).await;
    // Errors are never answered with errors.
    alice.send("<message to='nobody@localhost' type='error' id='x5'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>").await;
    alice.expect_silence(Duration::from_millis(300)).await;
    s.stop().await;
}

/// Every IQ get/set gets exactly one answer (RFC 6120 §8.2.3).
async fn iq_routing(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut bob = s.login("bob", "b").await;
    // To a connected full JID: delivered; the answer comes back.
    alice.send("<iq type='get' id='q1' to='bob@localhost/b'><query xmlns='jabber:iq:version'/></iq>").await;
    let q = bob.expect_kind("iq").await;
    assert_eq!((q.attr("from"), q.attr("id")), (Some("alice@localhost/a"), Some("q1")));
    bob.send("<iq type='result' id='q1' to='alice@localhost/a'><query xmlns='jabber:iq:version'><name>B</name></query></iq>").await;
    let r = alice.expect("result", |e| e.attr("id") == Some("q1")).await;
    assert_eq!(r.attr("from"), Some("bob@localhost/b"));
    // To a full JID that is not connected.
    let r = alice.request("<iq type='get' id='q2' to='bob@localhost/nope'><query xmlns='jabber:iq:version'/></iq>").await;
    assert_eq!(condition(&r), "service-unavailable");
    // Unknown namespace, to the server and to an account.
    let r = alice.request("<iq type='get' id='q3' to='localhost'><query xmlns='urn:example:unknown'/></iq>").await;
    assert_eq!((condition(&r).as_str(), r.attr("from")), ("service-unavailable", Some("localhost")));
    let r = alice.request("<iq type='get' id='q4' to='bob@localhost'><query xmlns='urn:example:unknown'/></iq>").await;
    assert_eq!(condition(&r), "service-unavailable");
    let r = alice.request("<iq type='set' id='q5'><query xmlns='urn:example:unknown'/></iq>").await;
    assert_eq!(condition(&r), "service-unavailable");
    // Results to a bare JID are not answered.
    alice.send("<iq type='result' id='q6' to='bob@localhost'/>").await;
    alice.expect_silence(Duration::from_millis(300)).await;
    bob.expect_silence(Duration::from_millis(10)).await;
    s.stop().await;
}

/// A `from` that is not the sender's own ends the stream (RFC 6120 §4.9.3.9).
async fn spoofed_from_is_refused(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut bob = s.login("bob", "b").await;
    bob.available().await;
    let mut alice = s.login("alice", "a").await;
    alice.send("<message from='bob@localhost/b' to='bob@localhost'><body>it's me, bob</body></message>").await;
    assert_eq!(alice.expect_stream_error().await.as_deref(), Some("invalid-from"));
    bob.expect_silence(Duration::from_millis(300)).await;
    s.stop().await;
}

/// A message between two online users needs no database: with storage gone, it still
/// gets through.
async fn online_messages_do_not_touch_storage(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut bob = s.login("bob", "b").await;
    alice.available().await;
    bob.available().await;
    s.server().core().db.close().await;
    for i in 0..20 {
        alice.send(&format!("<message to='bob@localhost' type='chat' id='n{i}'><body>{i}</body></message>")).await;
    }
    for i in 0..20 {
        let m = bob.expect_kind("message").await;
        assert_eq!(body(&m), i.to_string(), "in order: {}", show(&m));
    }
    s.stop().await;
}

/// Messages to one's own bare JID reach one's own resources.
async fn message_to_self(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice"]).await;
    let mut a1 = s.login("alice", "1").await;
    let mut a2 = s.login("alice", "2").await;
    a1.available().await;
    a2.available().await;
    a1.drain().await;
    a1.send("<message to='alice@localhost/2' type='chat'><body>note to self</body></message>").await;
    assert_eq!(body(&a2.expect_kind("message").await), "note to self");
    s.stop().await;
}

db_tests!(
    chat_both_ways,
    priorities_and_resources,
    errors_for_undeliverable,
    iq_routing,
    spoofed_from_is_refused,
    online_messages_do_not_touch_storage,
    message_to_self,
);
