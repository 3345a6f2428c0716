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

const ROSTER: &str = "jabber:iq:roster";

fn is_presence_from(e: &minidom::Element, bare: &str) -> bool {
    e.name() == "presence" && e.attr("from").is_some_and(|f| f == bare || f.starts_with(&format!("{bare}/")))
}

/// The subscription of `contact` in the client's roster.
async fn subscription_of(c: &mut crate::common::Client, contact: &str) -> String {
    let roster = c.request("<iq type='get' id='sub-of'><query xmlns='jabber:iq:roster'/></iq>").await;
    let item = roster.get_child("query", ROSTER).unwrap().children().find(|i| i.attr("jid") == Some(contact)).cloned();
    item.and_then(|i| i.attr("subscription").map(str::to_string)).unwrap_or_else(|| "no item".into())
}

/// XEP-0191 §3.3: a blocked contact gets none of the user's presence, whichever way it asks
/// (a probe, a new login) and whatever its own roster says; and the blocking user gets none
/// of the blocked contact's at login either.
async fn blocked_contact_gets_no_presence(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "mallory"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut mallory = s.login("mallory", "m").await;
    alice.available().await;
    mallory.available().await;
    befriend(&mut alice, &mut mallory).await;
    alice.send("<presence><status>at home</status></presence>").await;
    mallory.expect("alice's status", |e| is_presence_from(e, "alice@localhost") && e.has_child("status", CLIENT)).await;
    alice.request("<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='mallory@localhost'/></block></iq>").await;
    mallory.expect("alice unavailable", |e| e.attr("type") == Some("unavailable") && e.attr("from") == Some("alice@localhost/a")).await;
    alice.drain().await;
    mallory.drain().await;

    // Probes, to the bare and to the full JID: no presence, and no error either (§3.3:
    // presence from a blocked JID is neither answered nor bounced).
    mallory.send("<presence type='probe' to='alice@localhost'/>").await;
    mallory.send("<presence type='probe' to='alice@localhost/a'/>").await;
    mallory.expect_silence(Duration::from_millis(500)).await;
    alice.expect_silence(Duration::from_millis(100)).await;

    // A new login of mallory: her own other resource, nothing of alice.
    let mut mallory2 = s.login("mallory", "m2").await;
    mallory2.send("<presence/>").await;
    mallory2.expect("own presence", |e| e.name() == "presence" && e.attr("from") == Some("mallory@localhost/m2")).await;
    mallory2.expect("own other resource", |e| e.name() == "presence" && e.attr("from") == Some("mallory@localhost/m")).await;
    mallory2.expect_silence(Duration::from_millis(500)).await;
    mallory.expect("own new resource", |e| e.name() == "presence" && e.attr("from") == Some("mallory@localhost/m2")).await;
    // Nor does alice hear of mallory's new resource.
    alice.expect_silence(Duration::from_millis(100)).await;

    // alice's status changes: nothing reaches mallory.
    alice.send("<presence><status>busy</status></presence>").await;
    alice.expect("echo", |e| is_presence_from(e, "alice@localhost") && e.has_child("status", CLIENT)).await;
    mallory.expect_silence(Duration::from_millis(300)).await;
    mallory2.expect_silence(Duration::from_millis(100)).await;

    // The other way round: a new login of alice does not get mallory's presence, nor does a
    // probe of hers (her own block list applies to what she sends).
    let mut alice2 = s.login("alice", "a2").await;
    alice2.send("<presence/>").await;
    alice2.expect("own presence", |e| e.name() == "presence" && e.attr("from") == Some("alice@localhost/a2")).await;
    alice2.expect("own other resource", |e| e.name() == "presence" && e.attr("from") == Some("alice@localhost/a")).await;
    alice2.send("<presence type='probe' to='mallory@localhost'/>").await;
    alice2.expect_silence(Duration::from_millis(500)).await;
    mallory.expect_silence(Duration::from_millis(100)).await;
    s.stop().await;
}

/// A subscription revoked while the contact blocks the user is revoked all the same: the
/// roster bookkeeping happens before the block list (which only stops delivery), so that
/// after unblocking, the contact neither probes nor logs in to the user's presence.
async fn revoked_subscription_stays_revoked(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "mallory"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut mallory = s.login("mallory", "m").await;
    alice.available().await;
    mallory.available().await;
    befriend(&mut alice, &mut mallory).await;
    // mallory blocks alice, then alice revokes mallory's subscription to her presence.
    mallory.request("<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='alice@localhost'/></block></iq>").await;
    alice.expect("mallory unavailable", |e| e.attr("type") == Some("unavailable") && e.attr("from") == Some("mallory@localhost/m")).await;
    mallory.drain().await;
    alice.send("<presence type='unsubscribed' to='mallory@localhost'/>").await;
    let push = alice.expect("push", |e| e.name() == "iq" && e.has_child("query", ROSTER)).await;
    assert_eq!(push.get_child("query", ROSTER).unwrap().get_child("item", ROSTER).unwrap().attr("subscription"), Some("to"));
    // mallory's roster follows (RFC 6121 §3.2.3: both → from), and the push says so; the
    // `unsubscribed` itself is not delivered (blocked), nor is alice's unavailable.
    let push = mallory.expect("push", |e| e.name() == "iq" && e.has_child("query", ROSTER)).await;
    assert_eq!(push.get_child("query", ROSTER).unwrap().get_child("item", ROSTER).unwrap().attr("subscription"), Some("from"), "{}", show(&push));
    mallory.expect_silence(Duration::from_millis(300)).await;

    // mallory unblocks alice: alice gets mallory's presence again (alice still has `to`).
    mallory.request("<iq type='set' id='u1'><unblock xmlns='urn:xmpp:blocking'><item jid='alice@localhost'/></unblock></iq>").await;
    alice.expect("mallory back", |e| e.name() == "presence" && e.attr("type").is_none() && e.attr("from") == Some("mallory@localhost/m")).await;
    assert_eq!(subscription_of(&mut mallory, "alice@localhost").await, "from");
    assert_eq!(subscription_of(&mut alice, "mallory@localhost").await, "to");
    mallory.drain().await;

    // A probe gets nothing of alice: her roster no longer lets mallory see her.
    mallory.send("<presence type='probe' to='alice@localhost'/>").await;
    mallory.expect_silence(Duration::from_millis(500)).await;
    // Nor does a new login, now or later.
    for resource in ["m2", "m3"] {
        let mut again = s.login("mallory", resource).await;
        again.send("<presence/>").await;
        let me = format!("mallory@localhost/{resource}");
        again.expect("own presence", |e| e.name() == "presence" && e.attr("from") == Some(me.as_str())).await;
        again.expect("own other resource", |e| e.name() == "presence" && e.attr("from") == Some("mallory@localhost/m")).await;
        again.expect_silence(Duration::from_millis(400)).await;
        again.close().await;
    }
    // Nor alice's status changes.
    mallory.drain().await;
    alice.send("<presence><status>still here</status></presence>").await;
    alice.expect("echo", |e| is_presence_from(e, "alice@localhost") && e.has_child("status", CLIENT)).await;
    mallory.expect_silence(Duration::from_millis(300)).await;
    s.stop().await;
}

/// The user revokes a blocked contact's subscription: the contact's roster is updated
/// (XEP-0191 stops communication, not RFC 6121 state), so that it does not believe itself
/// subscribed after the unblock.
async fn revocation_reaches_a_blocked_contact(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "mallory"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut mallory = s.login("mallory", "m").await;
    alice.available().await;
    mallory.available().await;
    befriend(&mut alice, &mut mallory).await;
    alice.request("<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='mallory@localhost'/></block></iq>").await;
    mallory.expect("alice unavailable", |e| e.attr("type") == Some("unavailable")).await;
    alice.send("<presence type='unsubscribed' to='mallory@localhost'/>").await;
    let push = mallory.expect("push", |e| e.name() == "iq" && e.has_child("query", ROSTER)).await;
    assert_eq!(push.get_child("query", ROSTER).unwrap().get_child("item", ROSTER).unwrap().attr("subscription"), Some("from"), "{}", show(&push));
    // And she unsubscribes from mallory: mallory's roster loses `from` too.
    alice.send("<presence type='unsubscribe' to='mallory@localhost'/>").await;
    let push = mallory.expect("push", |e| e.name() == "iq" && e.has_child("query", ROSTER) && String::from(e).contains("none")).await;
    assert_eq!(push.get_child("query", ROSTER).unwrap().get_child("item", ROSTER).unwrap().attr("subscription"), Some("none"));
    alice.request("<iq type='set' id='u1'><unblock xmlns='urn:xmpp:blocking'/></iq>").await;
    assert_eq!(subscription_of(&mut alice, "mallory@localhost").await, "none");
    assert_eq!(subscription_of(&mut mallory, "alice@localhost").await, "none");
    // Nothing flows either way now.
    mallory.drain().await;
    mallory.send("<presence type='probe' to='alice@localhost'/>").await;
    mallory.expect_silence(Duration::from_millis(400)).await;
    s.stop().await;
}

/// A subscription request from a blocked JID is dropped, not stored: the user does not see
/// it when it logs in, even after unblocking.
async fn request_from_blocked_is_not_stored(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "mallory"]).await;
    let mut alice = s.login("alice", "a").await;
    alice.request("<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='mallory@localhost'/></block></iq>").await;
    alice.close().await;
    let mut mallory = s.login("mallory", "m").await;
    mallory.available().await;
    mallory.send("<presence type='subscribe' to='alice@localhost'/>").await;
    mallory.expect_silence(Duration::from_millis(300)).await;
    let mut alice = s.login("alice", "a").await;
    alice.request("<iq type='set' id='u1'><unblock xmlns='urn:xmpp:blocking'/></iq>").await;
    alice.send("<presence/>").await;
    alice.expect("own presence", |e| e.name() == "presence" && e.attr("from") == Some("alice@localhost/a")).await;
    alice.expect_silence(Duration::from_millis(400)).await;
    s.stop().await;
}

/// A request stored before the block is not shown at login while the block lasts.
async fn stored_request_from_blocked_is_withheld(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "mallory"]).await;
    let mut mallory = s.login("mallory", "m").await;
    mallory.available().await;
    mallory.send("<presence type='subscribe' to='alice@localhost'/>").await;
    mallory.drain().await;
    let mut alice = s.login("alice", "a").await;
    alice.request("<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='mallory@localhost'/></block></iq>").await;
    alice.send("<presence/>").await;
    alice.expect("own presence", |e| e.name() == "presence" && e.attr("from") == Some("alice@localhost/a")).await;
    alice.expect_silence(Duration::from_millis(400)).await;
    // Unblocked: the request, still pending, comes at the next login.
    alice.request("<iq type='set' id='u1'><unblock xmlns='urn:xmpp:blocking'/></iq>").await;
    let mut alice2 = s.login("alice", "a2").await;
    alice2.send("<presence/>").await;
    let req = alice2.expect("request", |e| e.attr("type") == Some("subscribe")).await;
    assert_eq!(req.attr("from"), Some("mallory@localhost"));
    s.stop().await;
}

/// After an unblock the user also learns the contact's current presence (it was dropped
/// while blocked), and the contact gets the user's.
async fn unblock_restores_presence_both_ways(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut bob = s.login("bob", "b").await;
    alice.available().await;
    bob.available().await;
    befriend(&mut alice, &mut bob).await;
    alice.request("<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></block></iq>").await;
    bob.send("<presence><status>new status</status></presence>").await;
    alice.drain().await;
    alice.request("<iq type='set' id='u1'><unblock xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></unblock></iq>").await;
    let p = alice.expect("bob's presence", |e| is_presence_from(e, "bob@localhost") && e.attr("type").is_none()).await;
    assert_eq!(p.get_child("status", CLIENT).map(|s| s.text()).as_deref(), Some("new status"), "{}", show(&p));
    bob.expect("alice back", |e| is_presence_from(e, "alice@localhost") && e.attr("type").is_none()).await;
    s.stop().await;
}

/// Blocking a whole domain sends unavailable to the contacts there, and unblocking it sends
/// presence again.
async fn domain_block_presence(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut bob = s.login("bob", "b").await;
    alice.available().await;
    bob.available().await;
    befriend(&mut alice, &mut bob).await;
    alice.request("<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='localhost'/></block></iq>").await;
    bob.expect("alice unavailable", |e| e.attr("type") == Some("unavailable") && e.attr("from") == Some("alice@localhost/a")).await;
    alice.request("<iq type='set' id='u1'><unblock xmlns='urn:xmpp:blocking'><item jid='localhost'/></unblock></iq>").await;
    bob.expect("alice back", |e| e.name() == "presence" && e.attr("type").is_none() && e.attr("from") == Some("alice@localhost/a")).await;
    s.stop().await;
}

/// A block of one of a contact's full JIDs holds for the answers to the login probe too:
/// the probe went to the contact's bare JID, which the entry does not cover, but the answer
/// from that resource is from a blocked JID (§3.3, §6 matching).
async fn full_jid_block_holds_at_login(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "work").await;
    let mut bob = s.login("bob", "b").await;
    alice.available().await;
    bob.available().await;
    befriend(&mut alice, &mut bob).await;
    let mut alice_home = s.login("alice", "home").await;
    alice_home.available().await;
    bob.request("<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='alice@localhost/work'/></block></iq>").await;
    let mut bob2 = s.login("bob", "b2").await;
    bob2.send("<presence/>").await;
    bob2.expect("own presence", |e| e.name() == "presence" && e.attr("from") == Some("bob@localhost/b2")).await;
    bob2.expect("own other resource", |e| e.name() == "presence" && e.attr("from") == Some("bob@localhost/b")).await;
    bob2.expect("alice at home", |e| e.name() == "presence" && e.attr("from") == Some("alice@localhost/home")).await;
    bob2.expect_silence(Duration::from_millis(400)).await;
    // A probe of bob's own, likewise.
    bob2.send("<presence type='probe' to='alice@localhost'/>").await;
    bob2.expect("alice at home", |e| e.name() == "presence" && e.attr("from") == Some("alice@localhost/home")).await;
    bob2.expect_silence(Duration::from_millis(400)).await;
    s.stop().await;
}

/// §3.3 for a room's messages: a user who blocks an occupant's JID gets nothing that occupant
/// says in the room, and one who blocks the room gets nothing from it, while the others get
/// every message; unblocking lets them through again (the user stayed in the room). Every
/// copy of a room's broadcast is delivered without the routing hooks' futures unless a hook
/// asks to see it (`Registrar::hook_when`): this shows the block lists still ask.
async fn blocked_room_messages(b: Backend) {
    use crate::muc::{create, enter, occupant, room, say};
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob", "carol"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut bob = s.login("bob", "b").await;
    let mut carol = s.login("carol", "c").await;
    create(&mut alice, "coven", "alice", &[]).await;
    enter(&mut bob, "coven", "bob", "").await;
    enter(&mut carol, "coven", "carol", "").await;
    for c in [&mut alice, &mut bob, &mut carol] {
        c.drain().await;
    }
    let (alice_jid, bob_jid, carol_jid) = (alice.jid.clone(), bob.jid.clone(), carol.jid.clone());
    let said = |to: &str, e: &minidom::Element, text: &str| {
        e.name() == "message"
            && e.attr("type") == Some("groupchat")
            && e.attr("to") == Some(to)
            && e.get_child("body", CLIENT).is_some_and(|b| b.text() == text)
    };
    let block = |what: &str, jid: &str| format!("<iq type='set' id='{what}'><{what} xmlns='{BLOCKING}'><item jid='{jid}'/></{what}></iq>");

    // bob blocks carol's occupant JID.
    let r = bob.request(&block("block", &occupant("coven", "carol"))).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    say(&mut carol, "coven", "from carol").await;
    alice.expect("carol's message", |e| said(&alice_jid, e, "from carol")).await;
    say(&mut alice, "coven", "from alice").await;
    // The first message bob gets is alice's: carol's, sent before it, was withheld.
    let first = bob.expect("a groupchat message", |e| e.name() == "message" && e.get_child("body", CLIENT).is_some()).await;
    assert!(said(&bob_jid, &first, "from alice"), "carol's message reached bob: {}", show(&first));

    // bob blocks the room itself.
    bob.request(&block("block", &room("coven"))).await;
    say(&mut alice, "coven", "to everyone").await;
    carol.expect("alice's message", |e| said(&carol_jid, e, "to everyone")).await;
    let leaked = tokio::time::timeout(Duration::from_millis(500), bob.expect("a message", |e| e.name() == "message")).await;
    assert!(leaked.is_err(), "a blocked room's message reached bob: {}", leaked.map(|e| show(&e)).unwrap_or_default());

    // Unblocked, bob is still an occupant and gets the room's messages again.
    bob.request(&block("unblock", &room("coven"))).await;
    bob.request(&block("unblock", &occupant("coven", "carol"))).await;
    say(&mut carol, "coven", "welcome back").await;
    bob.expect("carol's message", |e| said(&bob_jid, e, "welcome back")).await;
    s.stop().await;
}

db_tests!(
    block_and_unblock,
    domains_and_unblock_all,
    blocked_while_offline,
    blocked_contact_gets_no_presence,
    revoked_subscription_stays_revoked,
    revocation_reaches_a_blocked_contact,
    request_from_blocked_is_not_stored,
    stored_request_from_blocked_is_withheld,
    unblock_restores_presence_both_ways,
    domain_block_presence,
    full_jid_block_holds_at_login,
    blocked_room_messages,
);
