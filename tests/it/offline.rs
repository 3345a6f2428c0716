//! Offline messages (XEP-0160) with XEP-0203 delays.

use std::time::Duration;

use crate::common::client::{CLIENT, condition, show};
use crate::common::{Backend, TestServer};
use crate::db_tests;

fn body(m: &minidom::Element) -> String {
    m.get_child("body", CLIENT).map(|b| b.text()).unwrap_or_default()
}

/// Stored while offline, delivered in order at the next initial presence (not before),
/// each with a delay; then gone.
async fn stored_and_delivered_in_order(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    alice.available().await;
    let before = time::OffsetDateTime::now_utc().unix_timestamp();
    for i in 0..5 {
        let kind = if i % 2 == 0 { "chat" } else { "normal" };
        alice.send(&format!("<message to='bob@localhost' type='{kind}' id='o{i}'><body>message {i}</body></message>")).await;
    }
    // Not stored: chat states alone, headlines; groupchat gets an error.
    alice.send("<message to='bob@localhost' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>").await;
    alice.send("<message to='bob@localhost' type='headline'><body>news</body></message>").await;
    alice.expect_silence(Duration::from_millis(300)).await;

    let mut bob = s.login("bob", "b").await;
    // Nothing before initial presence.
    bob.expect_silence(Duration::from_millis(300)).await;
    bob.send("<presence/>").await;
    for i in 0..5 {
        let m = bob.expect_kind("message").await;
        assert_eq!(body(&m), format!("message {i}"), "{}", show(&m));
        assert_eq!(m.attr("id"), Some(format!("o{i}").as_str()));
        assert_eq!(m.attr("from"), Some("alice@localhost/a"));
        let delay = m.get_child("delay", "urn:xmpp:delay").expect("XEP-0203 delay");
        assert_eq!(delay.attr("from"), Some("localhost"));
        let stamp = time::OffsetDateTime::parse(delay.attr("stamp").unwrap(), &time::format_description::well_known::Rfc3339).unwrap();
        assert!(stamp.unix_timestamp() >= before - 1, "{stamp}");
    }
    bob.expect("own presence", |e| e.name() == "presence").await;
    bob.expect_silence(Duration::from_millis(300)).await;
    drop(bob);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut bob = s.login("bob", "b").await;
    bob.send("<presence/>").await;
    bob.expect("own presence", |e| e.name() == "presence").await;
    bob.expect_silence(Duration::from_millis(500)).await;
    s.stop().await;
}

async fn per_account_limit(b: Backend) {
    let s = TestServer::start_with(b, |c| c.offline.max_per_user = 3).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    for i in 0..3 {
        alice.send(&format!("<message to='bob@localhost' id='k{i}'><body>{i}</body></message>")).await;
    }
    alice.send("<message to='bob@localhost' id='k3'><body>one too many</body></message>").await;
    let e = alice.expect("error", |e| e.attr("id") == Some("k3")).await;
    assert_eq!(condition(&e), "service-unavailable");
    assert_eq!(body(&e), "one too many", "the error carries the body back");
    alice.expect_silence(Duration::from_millis(200)).await;
    s.stop().await;
}

/// Offline messages survive a server restart: a shutdown right after they were accepted
/// still commits every queued one, in order.
async fn survive_restart(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    let burst: String = (0..300).map(|i| format!("<message to='bob@localhost' type='chat'><body>kept {i}</body></message>")).collect();
    alice.send(&burst).await;
    // A round trip makes sure the messages were handled before the shutdown.
    alice.request("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>").await;
    drop(alice);
    let (config, dir) = (s.config.clone(), s.dir);
    s.server.unwrap().shutdown().await;
    let s = TestServer { server: Some(starling::Server::start(config.clone()).await.unwrap()), config, dir };
    let mut bob = s.login("bob", "b").await;
    bob.send("<presence/>").await;
    for i in 0..300 {
        assert_eq!(body(&bob.expect_kind("message").await), format!("kept {i}"));
    }
    s.stop().await;
}

/// A resource with negative priority does not take messages to the bare JID: they are
/// stored (RFC 6121 §8.5.2.1.1), while messages to its full JID reach it.
async fn negative_priority(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut bot = s.login("bob", "bot").await;
    bot.send("<presence><priority>-1</priority></presence>").await;
    bot.drain().await;
    alice.send("<message to='bob@localhost' type='chat'><body>for a human</body></message>").await;
    alice.send("<message to='bob@localhost/bot' type='chat'><body>for the bot</body></message>").await;
    assert_eq!(body(&bot.expect_kind("message").await), "for the bot");
    bot.expect_silence(Duration::from_millis(300)).await;
    let mut human = s.login("bob", "desk").await;
    human.send("<presence/>").await;
    assert_eq!(body(&human.expect_kind("message").await), "for a human");
    s.stop().await;
}

/// Messages arriving while the flush runs are neither lost nor reordered.
async fn concurrent_arrival_during_login(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    for i in 0..50 {
        alice.send(&format!("<message to='bob@localhost' type='chat'><body>{i}</body></message>")).await;
    }
    alice.request("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>").await;
    let mut bob = s.login("bob", "b").await;
    bob.send("<presence/>").await;
    for i in 50..100 {
        alice.send(&format!("<message to='bob@localhost' type='chat'><body>{i}</body></message>")).await;
    }
    for i in 0..100 {
        let m = bob.expect_kind("message").await;
        assert_eq!(body(&m), i.to_string());
    }
    s.stop().await;
}

async fn stored_count(s: &TestServer, user: &str) -> i64 {
    let jid = jid::BareJid::new(&format!("{user}@localhost")).unwrap();
    s.server().core().db.offline().count(&jid).await.unwrap()
}

/// XEP-0160 §3 / RFC 6121 §8.5.2.1.1: stored messages wait for available presence with a
/// non-negative priority. A resource at -1 gets none of them; when it raises its priority
/// it gets them all, in order. Going below zero and back again delivers what was stored
/// meanwhile.
async fn flush_waits_for_non_negative_priority(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    for i in 0..3 {
        alice.send(&format!("<message to='bob@localhost' type='chat'><body>stored {i}</body></message>")).await;
    }
    alice.request("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>").await;
    let mut bob = s.login("bob", "b").await;
    bob.send("<presence><priority>-1</priority></presence>").await;
    bob.expect("own presence", |e| e.name() == "presence").await;
    bob.expect_silence(Duration::from_millis(400)).await;
    assert_eq!(stored_count(&s, "bob").await, 3, "the messages stay stored");
    // Still -1 after an update that keeps it negative.
    bob.send("<presence><priority>-5</priority><status>still a bot</status></presence>").await;
    bob.expect("own presence", |e| e.name() == "presence").await;
    bob.expect_silence(Duration::from_millis(300)).await;
    // Priority 1: now they come, in order, before the echo of that presence.
    bob.send("<presence><priority>1</priority></presence>").await;
    for i in 0..3 {
        let m = bob.next().await;
        assert_eq!((m.name(), body(&m)), ("message", format!("stored {i}")), "{}", show(&m));
    }
    bob.expect("own presence", |e| e.name() == "presence").await;
    bob.expect_silence(Duration::from_millis(300)).await;
    // Down to -1 with no other resource: new messages are stored again, and delivered when
    // the priority comes back up.
    bob.send("<presence><priority>-1</priority></presence>").await;
    bob.expect("own presence", |e| e.name() == "presence").await;
    alice.send("<message to='bob@localhost' type='chat'><body>while away</body></message>").await;
    bob.expect_silence(Duration::from_millis(400)).await;
    assert_eq!(stored_count(&s, "bob").await, 1);
    bob.send("<presence><priority>0</priority></presence>").await;
    let m = bob.expect_kind("message").await;
    assert_eq!(body(&m), "while away");
    bob.expect("own presence", |e| e.name() == "presence").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(stored_count(&s, "bob").await, 0);
    s.stop().await;
}

/// Two resources: the one at -1 gets no stored messages, the one that comes with priority 0
/// gets them all; and new messages to the bare JID go to the non-negative one only.
async fn flush_goes_to_the_non_negative_resource(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    for i in 0..3 {
        alice.send(&format!("<message to='bob@localhost' type='chat'><body>stored {i}</body></message>")).await;
    }
    alice.request("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>").await;
    let mut bot = s.login("bob", "bot").await;
    bot.send("<presence><priority>-1</priority></presence>").await;
    bot.expect("own presence", |e| e.name() == "presence").await;
    bot.expect_silence(Duration::from_millis(300)).await;
    let mut desk = s.login("bob", "desk").await;
    desk.send("<presence><priority>0</priority></presence>").await;
    for i in 0..3 {
        assert_eq!(body(&desk.expect_kind("message").await), format!("stored {i}"));
    }
    desk.expect("own presence", |e| e.name() == "presence" && e.attr("from") == Some("bob@localhost/desk")).await;
    desk.expect("bot's presence", |e| e.name() == "presence" && e.attr("from") == Some("bob@localhost/bot")).await;
    bot.expect("desk's presence", |e| e.name() == "presence" && e.attr("from") == Some("bob@localhost/desk")).await;
    bot.expect_silence(Duration::from_millis(300)).await;
    // Routing to the bare JID never picks the negative resource, for chat, normal or
    // headline (§8.5.2.1.1).
    for kind in ["chat", "normal", "headline"] {
        alice.send(&format!("<message to='bob@localhost' type='{kind}'><body>live {kind}</body></message>")).await;
        assert_eq!(body(&desk.expect_kind("message").await), format!("live {kind}"));
    }
    bot.expect_silence(Duration::from_millis(400)).await;
    // A message to the full JID of the negative resource does reach it.
    alice.send("<message to='bob@localhost/bot' type='chat'><body>direct</body></message>").await;
    assert_eq!(body(&bot.expect_kind("message").await), "direct");
    desk.expect_silence(Duration::from_millis(200)).await;
    s.stop().await;
}

db_tests!(
    stored_and_delivered_in_order,
    per_account_limit,
    survive_restart,
    negative_priority,
    concurrent_arrival_during_login,
    flush_waits_for_non_negative_priority,
    flush_goes_to_the_non_negative_resource,
);
