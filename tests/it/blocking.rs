//! Blocking command (XEP-0191).

use std::time::Duration;

use crate::common::client::{CLIENT, condition, show};
use crate::common::{Backend, TestServer, befriend};
use crate::db_tests;

const BLOCKING: &str = "urn:xmpp:blocking";

async fn block_and_unblock(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob", "carol"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut alice2 = s.login("alice", "a2").await;
    let mut bob = s.login("bob", "b").await;
    alice.available().await;
    bob.available().await;
    befriend(&mut alice, &mut bob).await;
    // Both of alice's resources retrieve the list, so both get pushes.
    for c in [&mut alice, &mut alice2] {
        let list = c.request("<iq type='get' id='bl'><blocklist xmlns='urn:xmpp:blocking'/></iq>").await;
        assert!(list.get_child("blocklist", BLOCKING).unwrap().children().next().is_none());
    }
    let r = alice.request("<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></block></iq>").await;
    assert_eq!(r.attr("type"), Some("result"));
    for c in [&mut alice, &mut alice2] {
        let push = c.expect("block push", |e| e.name() == "iq" && e.has_child("block", BLOCKING)).await;
        assert_eq!(push.get_child("block", BLOCKING).unwrap().get_child("item", BLOCKING).unwrap().attr("jid"), Some("bob@localhost"));
    }
    // bob sees alice go offline (§3.3).
    bob.expect("alice unavailable", |e| e.attr("type") == Some("unavailable") && e.attr("from") == Some("alice@localhost/a")).await;

    // Inbound from bob: messages and IQs bounced as if alice were not there; presence dropped.
    bob.send("<message to='alice@localhost' type='chat' id='m1'><body>hey</body></message>").await;
    let e = bob.expect("error", |e| e.attr("id") == Some("m1")).await;
    assert_eq!(condition(&e), "service-unavailable");
    let r = bob.request("<iq type='get' id='i1' to='alice@localhost/a'><query xmlns='jabber:iq:version'/></iq>").await;
    assert_eq!(condition(&r), "service-unavailable");
    bob.send("<presence><status>notice me</status></presence>").await;
    alice.expect_silence(Duration::from_millis(300)).await;
    // Outbound to bob: not-acceptable with <blocked/>.
    alice.send("<message to='bob@localhost' type='chat' id='m2'><body>hi</body></message>").await;
    let e = alice.expect("error", |e| e.attr("id") == Some("m2")).await;
    assert_eq!(condition(&e), "not-acceptable");
    assert!(e.get_child("error", CLIENT).unwrap().has_child("blocked", "urn:xmpp:blocking:errors"), "{}", show(&e));
    bob.drain().await;
    bob.expect_silence(Duration::from_millis(100)).await;

    let list = alice.request("<iq type='get' id='bl2'><blocklist xmlns='urn:xmpp:blocking'/></iq>").await;
    let jids: Vec<&str> = list.get_child("blocklist", BLOCKING).unwrap().children().filter_map(|i| i.attr("jid")).collect();
    assert_eq!(jids, ["bob@localhost"]);

    // Unblock: pushes, presence again, messages flow.
    alice.request("<iq type='set' id='u1'><unblock xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></unblock></iq>").await;
    alice2.expect("unblock push", |e| e.has_child("unblock", BLOCKING)).await;
    bob.expect("alice back", |e| e.name() == "presence" && e.attr("type").is_none() && e.attr("from") == Some("alice@localhost/a")).await;
    bob.send("<message to='alice@localhost' type='chat'><body>again</body></message>").await;
    alice.expect("message", |e| e.name() == "message" && e.get_child("body", CLIENT).is_some_and(|b| b.text() == "again")).await;
    s.stop().await;
}

/// Domain blocks, unblock-all, bad requests; and the block list persists.
async fn domains_and_unblock_all(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut bob = s.login("bob", "b").await;
    alice.available().await;
    let r = alice.request("<iq type='set' id='b0'><block xmlns='urn:xmpp:blocking'/></iq>").await;
    assert_eq!(condition(&r), "bad-request");
    let r = alice.request("<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='@@'/></block></iq>").await;
    assert_eq!(condition(&r), "jid-malformed");
    alice.request("<iq type='set' id='b2'><block xmlns='urn:xmpp:blocking'><item jid='localhost'/><item jid='spam.example'/></block></iq>").await;
    // The whole domain is blocked, so bob is too.
    bob.send("<message to='alice@localhost' type='chat' id='m'><body>x</body></message>").await;
    assert_eq!(condition(&bob.expect("error", |e| e.attr("id") == Some("m")).await), "service-unavailable");
    // One's own resources are never blocked.
    let mut alice2 = s.login("alice", "a2").await;
    alice2.send("<message to='alice@localhost/a' type='chat'><body>self</body></message>").await;
    alice.expect("own message", |e| e.name() == "message").await;
    // The block list is stored: a new session sees it.
    drop(alice2);
    let mut alice3 = s.login("alice", "a3").await;
    let list = alice3.request("<iq type='get' id='l'><blocklist xmlns='urn:xmpp:blocking'/></iq>").await;
    let mut jids: Vec<&str> = list.get_child("blocklist", BLOCKING).unwrap().children().filter_map(|i| i.attr("jid")).collect();
    jids.sort();
    assert_eq!(jids, ["localhost", "spam.example"]);
    // Unblock everything.
    alice3.request("<iq type='set' id='u'><unblock xmlns='urn:xmpp:blocking'/></iq>").await;
    let list = alice3.request("<iq type='get' id='l2'><blocklist xmlns='urn:xmpp:blocking'/></iq>").await;
    assert!(list.get_child("blocklist", BLOCKING).unwrap().children().next().is_none());
    bob.send("<message to='alice@localhost' type='chat'><body>through</body></message>").await;
    alice.expect("message", |e| e.name() == "message").await;
    s.stop().await;
}

/// Messages from a blocked JID to an offline user are not stored.
async fn blocked_while_offline(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    alice.request("<iq type='set' id='b'><block xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></block></iq>").await;
    alice.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut bob = s.login("bob", "b").await;
    bob.send("<message to='alice@localhost' type='chat' id='m'><body>let me in</body></message>").await;
    assert_eq!(condition(&bob.expect("error", |e| e.attr("id") == Some("m")).await), "service-unavailable");
    let mut alice = s.login("alice", "a").await;
    alice.send("<presence/>").await;
    alice.expect("own presence", |e| e.name() == "presence").await;
    alice.expect_silence(Duration::from_millis(400)).await;
    s.stop().await;
}

db_tests!(block_and_unblock, domains_and_unblock_all, blocked_while_offline);
