//! Presence and subscriptions (RFC 6121 §3-§4).

use std::time::Duration;

use crate::common::client::{CLIENT, show};
use crate::common::{Backend, TestServer, befriend};
use crate::db_tests;

const ROSTER: &str = "jabber:iq:roster";

fn roster_item(push: &minidom::Element) -> (String, Option<String>) {
    let item = push.get_child("query", ROSTER).unwrap().get_child("item", ROSTER).unwrap();
    (item.attr("subscription").unwrap().to_string(), item.attr("ask").map(str::to_string))
}

fn is_push(e: &minidom::Element) -> bool {
    e.name() == "iq" && e.attr("type") == Some("set") && e.has_child("query", ROSTER)
}

/// The whole state machine, step by step, with the roster pushes of each step.
async fn subscription_handshake(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut bob = s.login("bob", "b").await;
    for c in [&mut alice, &mut bob] {
        c.request("<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>").await;
        c.available().await;
    }
    // alice → subscribe: her item is none + pending-out (ask).
    alice.send("<presence type='subscribe' to='bob@localhost'><status>hi!</status></presence>").await;
    let push = alice.expect("push", is_push).await;
    assert_eq!(roster_item(&push), ("none".into(), Some("subscribe".into())));
    let req = bob.expect("request", |e| e.attr("type") == Some("subscribe")).await;
    assert_eq!(req.attr("from"), Some("alice@localhost"));
    assert_eq!(req.get_child("status", CLIENT).unwrap().text(), "hi!");
    // bob approves: his item becomes from; hers to.
    bob.send("<presence type='subscribed' to='alice@localhost'/>").await;
    let push = bob.expect("push", is_push).await;
    assert_eq!(roster_item(&push), ("from".into(), None));
    let push = alice.expect("push", is_push).await;
    assert_eq!(roster_item(&push), ("to".into(), None));
    let subscribed = alice.expect("subscribed", |e| e.attr("type") == Some("subscribed")).await;
    assert_eq!(subscribed.attr("from"), Some("bob@localhost"));
    alice.expect("bob's presence", |e| e.name() == "presence" && e.attr("from") == Some("bob@localhost/b") && e.attr("type").is_none()).await;

    // bob asks back; alice has only `to`, so the request reaches her.
    bob.send("<presence type='subscribe' to='alice@localhost'/>").await;
    let push = bob.expect("push", is_push).await;
    assert_eq!(roster_item(&push), ("from".into(), Some("subscribe".into())));
    alice.expect("request", |e| e.attr("type") == Some("subscribe")).await;
    alice.send("<presence type='subscribed' to='bob@localhost'/>").await;
    assert_eq!(roster_item(&alice.expect("push", is_push).await), ("both".into(), None));
    assert_eq!(roster_item(&bob.expect("push", is_push).await), ("both".into(), None));
    bob.expect("alice's presence", |e| e.name() == "presence" && e.attr("from") == Some("alice@localhost/a") && e.attr("type").is_none()).await;

    // A repeated request for an existing subscription is answered by bob's server (§3.1.3)
    // and that answer is ignored by alice's (§3.1.6: no pending-out): nobody sees anything.
    alice.drain().await;
    bob.drain().await;
    alice.send("<presence type='subscribe' to='bob@localhost'/>").await;
    bob.expect_silence(Duration::from_millis(300)).await;
    alice.expect_silence(Duration::from_millis(100)).await;

    // Presence updates reach the contact.
    alice.send("<presence><show>away</show><status>lunch</status></presence>").await;
    let p = bob.expect("update", |e| e.name() == "presence" && e.has_child("show", CLIENT)).await;
    assert_eq!(p.attr("from"), Some("alice@localhost/a"));
    assert_eq!(p.get_child("status", CLIENT).unwrap().text(), "lunch");

    // alice unsubscribes from bob: she no longer sees him, he still sees her.
    alice.drain().await;
    bob.drain().await;
    alice.send("<presence type='unsubscribe' to='bob@localhost'/>").await;
    assert_eq!(roster_item(&alice.expect("push", is_push).await), ("from".into(), None));
    assert_eq!(roster_item(&bob.expect("push", is_push).await), ("to".into(), None));
    bob.expect("unsubscribe", |e| e.attr("type") == Some("unsubscribe") && e.attr("from") == Some("alice@localhost")).await;
    // §3.3.3: bob's server sends his unavailable presence to alice.
    alice.expect("unavailable", |e| e.attr("type") == Some("unavailable") && e.attr("from") == Some("bob@localhost/b")).await;

    // Now alice's item is `from` (bob sees her) and bob's is `to`. bob revoking a
    // subscription that does not exist changes nothing: no push, nothing routed.
    bob.drain().await;
    alice.drain().await;
    bob.send("<presence type='unsubscribed' to='alice@localhost'/>").await;
    bob.expect_silence(Duration::from_millis(300)).await;
    alice.expect_silence(Duration::from_millis(100)).await;
    // alice revokes bob's subscription to her presence: both items become `none`.
    alice.send("<presence type='unsubscribed' to='bob@localhost'/>").await;
    assert_eq!(roster_item(&alice.expect("push", is_push).await), ("none".into(), None));
    assert_eq!(roster_item(&bob.expect("push", is_push).await), ("none".into(), None));
    bob.expect("unsubscribed", |e| e.attr("type") == Some("unsubscribed") && e.attr("from") == Some("alice@localhost")).await;
    // §3.2.2: alice's server sends bob her unavailable presence.
    bob.expect("unavailable", |e| e.attr("type") == Some("unavailable") && e.attr("from") == Some("alice@localhost/a")).await;
    s.stop().await;
}

/// A request for an offline contact is stored and delivered at the next login.
async fn request_to_offline_contact(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    alice.available().await;
    alice.send("<presence type='subscribe' to='bob@localhost'><nick xmlns='http://jabber.org/protocol/nick'>Alice</nick></presence>").await;
    let mut bob = s.login("bob", "b").await;
    bob.send("<presence/>").await;
    let req = bob.expect("stored request", |e| e.attr("type") == Some("subscribe")).await;
    assert_eq!(req.attr("from"), Some("alice@localhost"));
    assert!(req.has_child("nick", "http://jabber.org/protocol/nick"), "{}", show(&req));
    // Still pending until answered: redelivered at the next login.
    drop(bob);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut bob = s.login("bob", "b2").await;
    bob.send("<presence/>").await;
    bob.expect("request again", |e| e.attr("type") == Some("subscribe")).await;
    // Denied: alice's pending-out is cleared and she is told.
    bob.send("<presence type='unsubscribed' to='alice@localhost'/>").await;
    alice.expect("denial", |e| e.attr("type") == Some("unsubscribed") && e.attr("from") == Some("bob@localhost")).await;
    let roster = alice.request("<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>").await;
    let item = roster.get_child("query", ROSTER).unwrap().children().next().unwrap().clone();
    assert_eq!((item.attr("subscription"), item.attr("ask")), (Some("none"), None));
    drop(bob);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut bob = s.login("bob", "b3").await;
    bob.send("<presence/>").await;
    bob.expect("own presence", |e| e.name() == "presence" && e.attr("from") == Some("bob@localhost/b3")).await;
    bob.expect_silence(Duration::from_millis(500)).await;
    s.stop().await;
}

/// At login a client gets its contacts' presence; at logout (clean or not) they get
/// unavailable.
async fn login_and_logout_presence(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut bob = s.login("bob", "b").await;
    alice.available().await;
    bob.available().await;
    befriend(&mut alice, &mut bob).await;
    alice.send("<presence><status>here</status><priority>5</priority></presence>").await;
    bob.expect("alice here", |e| e.name() == "presence" && e.has_child("status", CLIENT)).await;

    // bob logs in again with a second resource: it gets alice's presence (probe answered
    // from memory) and the presence of bob's own first resource.
    let mut bob2 = s.login("bob", "b2").await;
    bob2.send("<presence/>").await;
    let p = bob2.expect("alice's presence", |e| e.name() == "presence" && e.attr("from") == Some("alice@localhost/a")).await;
    assert_eq!(p.get_child("status", CLIENT).unwrap().text(), "here");
    bob2.expect("bob's other resource", |e| e.name() == "presence" && e.attr("from") == Some("bob@localhost/b")).await;
    // bob's first resource and alice learn about bob2.
    bob.expect("own new resource", |e| e.name() == "presence" && e.attr("from") == Some("bob@localhost/b2")).await;
    alice.expect("bob2", |e| e.name() == "presence" && e.attr("from") == Some("bob@localhost/b2")).await;

    // Clean logout of bob2.
    bob2.close().await;
    alice.expect("bob2 gone", |e| e.attr("type") == Some("unavailable") && e.attr("from") == Some("bob@localhost/b2")).await;
    bob.expect("own resource gone", |e| e.attr("type") == Some("unavailable") && e.attr("from") == Some("bob@localhost/b2")).await;
    // Abrupt end: the connection just drops.
    drop(bob);
    let u = alice.expect("bob gone", |e| e.attr("type") == Some("unavailable") && e.attr("from") == Some("bob@localhost/b")).await;
    assert_eq!(u.attr("to"), Some("alice@localhost"));
    s.stop().await;
}

/// Directed presence to a non-contact is followed by unavailable when the sender goes.
async fn directed_presence(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "carol"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut carol = s.login("carol", "c").await;
    alice.available().await;
    carol.available().await;
    alice.send("<presence to='carol@localhost'><status>just for you</status></presence>").await;
    let p = carol.expect("directed", |e| e.name() == "presence" && e.attr("from") == Some("alice@localhost/a")).await;
    assert_eq!(p.get_child("status", CLIENT).unwrap().text(), "just for you");
    // A broadcast does not go to carol (no subscription).
    alice.send("<presence><status>everyone</status></presence>").await;
    alice.expect("echo", |e| e.name() == "presence" && String::from(e).contains("everyone")).await;
    carol.expect_silence(Duration::from_millis(300)).await;
    // But the end of alice's session does.
    alice.close().await;
    carol.expect("unavailable", |e| e.attr("type") == Some("unavailable") && e.attr("from") == Some("alice@localhost/a")).await;
    s.stop().await;
}

/// A request to an account that does not exist is rejected on its behalf (RFC 6121
/// §8.5.1), and the requester's pending-out is cleared.
async fn request_to_nonexistent_account(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice"]).await;
    let mut alice = s.login("alice", "a").await;
    alice.request("<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>").await;
    alice.available().await;
    alice.send("<presence type='subscribe' to='ghost@localhost'/>").await;
    let r = alice.expect("rejection", |e| e.attr("type") == Some("unsubscribed")).await;
    assert_eq!(r.attr("from"), Some("ghost@localhost"));
    let roster = alice.request("<iq type='get' id='r2'><query xmlns='jabber:iq:roster'/></iq>").await;
    let item = roster.get_child("query", ROSTER).unwrap().children().next().expect("the item stays").clone();
    assert_eq!((item.attr("subscription"), item.attr("ask")), (Some("none"), None), "{}", show(&roster));
    s.stop().await;
}

/// Presence without subscription is not revealed: probes from strangers get nothing.
async fn no_presence_leak(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "mallory"]).await;
    let mut alice = s.login("alice", "a").await;
    alice.available().await;
    let mut mallory = s.login("mallory", "m").await;
    mallory.available().await;
    mallory.send("<presence type='probe' to='alice@localhost'/>").await;
    mallory.expect_silence(Duration::from_millis(500)).await;
    alice.expect_silence(Duration::from_millis(100)).await;
    s.stop().await;
}

/// A client's own probe (RFC 6121 §4.3) is answered as the server's are: with the
/// contact's presence if the contact's roster lets the prober see it, with `unavailable`
/// when the contact is offline, with nothing otherwise.
async fn client_probes(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob", "carol"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut bob = s.login("bob", "b").await;
    alice.available().await;
    bob.available().await;
    befriend(&mut alice, &mut bob).await;
    bob.send("<presence><status>here</status></presence>").await;
    bob.expect("echo", |e| e.attr("from") == Some("bob@localhost/b") && e.has_child("status", CLIENT)).await;
    alice.expect("bob's status", |e| e.attr("from") == Some("bob@localhost/b") && e.has_child("status", CLIENT)).await;
    alice.send("<presence type='probe' to='bob@localhost'/>").await;
    let p = alice.expect("probe answer", |e| e.name() == "presence" && e.attr("from") == Some("bob@localhost/b")).await;
    assert_eq!(p.get_child("status", CLIENT).unwrap().text(), "here");
    assert_eq!(p.attr("to"), Some("alice@localhost/a"));
    alice.expect_silence(Duration::from_millis(300)).await;
    bob.expect_silence(Duration::from_millis(100)).await;
    // bob goes: the probe is answered with unavailable from his bare JID.
    bob.close().await;
    alice.expect("bob gone", |e| e.attr("type") == Some("unavailable")).await;
    alice.send("<presence type='probe' to='bob@localhost'/>").await;
    let p = alice.expect("probe answer", |e| e.name() == "presence").await;
    assert_eq!((p.attr("type"), p.attr("from")), (Some("unavailable"), Some("bob@localhost")), "{}", show(&p));
    // A stranger (no subscription in carol's roster), an unknown account: nothing.
    let mut carol = s.login("carol", "c").await;
    carol.available().await;
    alice.send("<presence type='probe' to='carol@localhost'/>").await;
    alice.send("<presence type='probe' to='ghost@localhost'/>").await;
    alice.expect_silence(Duration::from_millis(400)).await;
    carol.expect_silence(Duration::from_millis(100)).await;
    s.stop().await;
}

/// What decides is the contact's roster, not the prober's: an entity whose own roster says
/// `to` while the contact's says `none` gets nothing (RFC 6121 §4.3.2).
async fn probe_checks_the_contacts_roster(b: Backend) {
    use starling::storage::{RosterItem, Subscription};
    let s = TestServer::start(b).await;
    s.users(&["alice", "mallory"]).await;
    // mallory's roster claims a subscription that alice never granted.
    let store = s.server().core().db.roster();
    let mut item = RosterItem::new(jid::BareJid::new("alice@localhost").unwrap());
    item.subscription = Subscription::To;
    store.put(&jid::BareJid::new("mallory@localhost").unwrap(), &item).await.unwrap();
    let mut alice = s.login("alice", "a").await;
    alice.available().await;
    let mut mallory = s.login("mallory", "m").await;
    mallory.send("<presence/>").await;
    mallory.expect("own presence", |e| e.name() == "presence" && e.attr("from") == Some("mallory@localhost/m")).await;
    mallory.send("<presence type='probe' to='alice@localhost'/>").await;
    mallory.expect_silence(Duration::from_millis(500)).await;
    alice.expect_silence(Duration::from_millis(100)).await;
    s.stop().await;
}

/// A user with many online contacts gets all their presence at login, even with a send
/// queue far smaller than that: the answers to the login probes are written to the new
/// session directly rather than queued to it by its own task.
async fn login_with_many_contacts(b: Backend) {
    use starling::storage::{RosterItem, Subscription};
    const CONTACTS: usize = 12;
    let s = TestServer::start_with(b, |c| c.c2s.max_queue = 4).await;
    let names: Vec<String> = (0..CONTACTS).map(|i| format!("friend{i}")).collect();
    let mut all: Vec<&str> = names.iter().map(String::as_str).collect();
    all.push("me");
    s.users(&all).await;
    let store = s.server().core().db.roster();
    let me = jid::BareJid::new("me@localhost").unwrap();
    for name in &names {
        let friend = jid::BareJid::new(&format!("{name}@localhost")).unwrap();
        let mut item = RosterItem::new(friend.clone());
        item.subscription = Subscription::Both;
        store.put(&me, &item).await.unwrap();
        let mut item = RosterItem::new(me.clone());
        item.subscription = Subscription::Both;
        store.put(&friend, &item).await.unwrap();
    }
    let mut friends = Vec::new();
    for name in &names {
        let mut c = s.login(name, "r").await;
        c.available().await;
        friends.push(c);
    }
    let mut client = s.login("me", "m").await;
    client.send("<presence/>").await;
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < CONTACTS {
        let p = client.expect("a friend's presence", |e| e.name() == "presence" && e.attr("from").is_some_and(|f| f.starts_with("friend"))).await;
        assert_eq!(p.attr("type"), None, "{}", show(&p));
        seen.insert(p.attr("from").unwrap().to_string());
    }
    client.expect("own presence", |e| e.name() == "presence" && e.attr("from") == Some("me@localhost/m")).await;
    // Still connected, and everybody heard of the new resource.
    client.request("<iq type='get' id='alive' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>").await;
    for f in &mut friends {
        f.expect("me", |e| e.name() == "presence" && e.attr("from") == Some("me@localhost/m")).await;
    }
    s.stop().await;
}

db_tests!(
    subscription_handshake,
    request_to_offline_contact,
    request_to_nonexistent_account,
    login_and_logout_presence,
    directed_presence,
    no_presence_leak,
    client_probes,
    probe_checks_the_contacts_roster,
    login_with_many_contacts,
);
