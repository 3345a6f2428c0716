//! Roster management (RFC 6121 §2) and versioning (XEP-0237).

use crate::common::client::{CLIENT, condition, show};
use crate::common::{Backend, TestServer};
use crate::db_tests;

const ROSTER: &str = "jabber:iq:roster";

fn items(reply: &minidom::Element) -> Vec<(String, String, Option<String>, Vec<String>)> {
    reply
        .get_child("query", ROSTER)
        .map(|q| {
            q.children()
                .map(|i| {
                    (
                        i.attr("jid").unwrap().to_string(),
                        i.attr("subscription").unwrap_or("none").to_string(),
                        i.attr("name").map(str::to_string),
                        i.children().map(|g| g.text()).collect(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn get_set_remove_with_pushes(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice"]).await;
    let mut a1 = s.login("alice", "one").await;
    let mut a2 = s.login("alice", "two").await;
    // Both resources ask for the roster, so both get pushes.
    let empty = a1.request("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>").await;
    assert_eq!(empty.attr("type"), Some("result"));
    assert!(items(&empty).is_empty());
    a2.request("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>").await;

    let set = a1
        .request("<iq type='set' id='s1'><query xmlns='jabber:iq:roster'><item jid='Bob@Localhost' name='Bobby'><group>Friends</group><group>Work</group></item></query></iq>")
        .await;
    assert_eq!(set.attr("type"), Some("result"), "{}", show(&set));
    for c in [&mut a1, &mut a2] {
        let push = c.expect("roster push", |e| e.name() == "iq" && e.attr("type") == Some("set")).await;
        // RFC 6121 §2.1.6: pushes come from the bare JID of the account (or no from).
        assert_eq!(push.attr("from"), Some("alice@localhost"));
        let query = push.get_child("query", ROSTER).unwrap();
        assert!(query.attr("ver").is_some());
        let item = query.get_child("item", ROSTER).unwrap();
        assert_eq!(item.attr("jid"), Some("bob@localhost"), "JIDs are normalised");
        assert_eq!(item.attr("name"), Some("Bobby"));
        assert_eq!(item.attr("subscription"), Some("none"));
        let groups: Vec<String> = item.children().map(|g| g.text()).collect();
        assert_eq!(groups, ["Friends", "Work"]);
        // The client acknowledges the push.
        c.send(&format!("<iq type='result' id='{}'/>", push.attr("id").unwrap())).await;
    }
    let roster = a2.request("<iq type='get' id='r2'><query xmlns='jabber:iq:roster'/></iq>").await;
    assert_eq!(
        items(&roster),
        [("bob@localhost".to_string(), "none".to_string(), Some("Bobby".to_string()), vec!["Friends".to_string(), "Work".to_string()])]
    );

    // Update: a new name, one group.
    a1.request("<iq type='set' id='s2'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' name='B'><group>Work</group></item></query></iq>").await;
    let push = a2.expect("push", |e| e.name() == "iq" && e.attr("type") == Some("set")).await;
    let item = push.get_child("query", ROSTER).unwrap().get_child("item", ROSTER).unwrap();
    assert_eq!(item.attr("name"), Some("B"));

    // Remove.
    let removed = a1.request("<iq type='set' id='s3'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' subscription='remove'/></query></iq>").await;
    assert_eq!(removed.attr("type"), Some("result"));
    let push = a2.expect("removal push", |e| e.name() == "iq" && e.attr("type") == Some("set") && String::from(e).contains("remove")).await;
    assert_eq!(push.get_child("query", ROSTER).unwrap().get_child("item", ROSTER).unwrap().attr("subscription"), Some("remove"));
    let roster = a1.request("<iq type='get' id='r3'><query xmlns='jabber:iq:roster'/></iq>").await;
    assert!(items(&roster).is_empty());
    // Removing what is not there.
    let again = a1.request("<iq type='set' id='s4'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' subscription='remove'/></query></iq>").await;
    assert_eq!(condition(&again), "item-not-found");
    s.stop().await;
}

async fn roster_set_errors(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut a = s.login("alice", "r").await;
    let cases = [
        ("<query xmlns='jabber:iq:roster'/>", "bad-request"),
        ("<query xmlns='jabber:iq:roster'><item jid='a@b'/><item jid='c@d'/></query>", "bad-request"),
        ("<query xmlns='jabber:iq:roster'><item jid='a@b/res'/></query>", "bad-request"),
        ("<query xmlns='jabber:iq:roster'><item jid='a@b'><group/></item></query>", "not-acceptable"),
        ("<query xmlns='jabber:iq:roster'><item jid='a@b'><group>G</group><group>G</group></item></query>", "bad-request"),
        ("<query xmlns='jabber:iq:roster'><item jid='@'/></query>", "jid-malformed"),
    ];
    for (i, (query, expected)) in cases.iter().enumerate() {
        let reply = a.request(&format!("<iq type='set' id='e{i}'>{query}</iq>")).await;
        assert_eq!(reply.attr("type"), Some("error"));
        assert_eq!(condition(&reply), *expected, "{query}");
    }
    // Someone else's roster is not ours to read or write.
    let reply = a.request("<iq type='get' id='x' to='bob@localhost'><query xmlns='jabber:iq:roster'/></iq>").await;
    assert_eq!(condition(&reply), "forbidden");
    s.stop().await;
}

/// XEP-0237: an unchanged roster is not sent again; a changed one comes with a new version.
async fn versioning(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice"]).await;
    let mut a = s.login("alice", "r").await;
    let first = a.request("<iq type='get' id='v1'><query xmlns='jabber:iq:roster' ver=''/></iq>").await;
    let v1 = first.get_child("query", ROSTER).unwrap().attr("ver").unwrap().to_string();
    a.request("<iq type='set' id='s'><query xmlns='jabber:iq:roster'><item jid='c@localhost'/></query></iq>").await;
    let push = a.expect("push", |e| e.attr("type") == Some("set")).await;
    let v2 = push.get_child("query", ROSTER).unwrap().attr("ver").unwrap().to_string();
    assert_ne!(v1, v2);
    // Current version: an empty result, no query element.
    let same = a.request(&format!("<iq type='get' id='v2'><query xmlns='jabber:iq:roster' ver='{v2}'/></iq>")).await;
    assert_eq!(same.attr("type"), Some("result"));
    assert!(same.children().next().is_none(), "{}", show(&same));
    // Old version: the whole roster again.
    let old = a.request(&format!("<iq type='get' id='v3'><query xmlns='jabber:iq:roster' ver='{v1}'/></iq>")).await;
    assert_eq!(items(&old).len(), 1);
    assert_eq!(old.get_child("query", ROSTER).unwrap().attr("ver"), Some(v2.as_str()));
    let _ = CLIENT;
    s.stop().await;
}

/// The roster survives a restart of the server (it is stored, not only cached).
async fn roster_is_persistent(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice"]).await;
    let mut a = s.login("alice", "r").await;
    a.request("<iq type='set' id='s'><query xmlns='jabber:iq:roster'><item jid='z@localhost' name='Zed'><group>G</group></item></query></iq>").await;
    drop(a);
    let config = s.config.clone();
    let dir = s.dir;
    let server = s.server.unwrap();
    server.shutdown().await;
    let s = crate::common::TestServer { server: Some(starling::Server::start(config.clone()).await.unwrap()), config, dir };
    let mut a = s.login("alice", "r").await;
    let roster = a.request("<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>").await;
    assert_eq!(items(&roster), [("z@localhost".to_string(), "none".to_string(), Some("Zed".to_string()), vec!["G".to_string()])]);
    s.stop().await;
}

/// SECURITY.md T24: a roster push from another user to one of an account's resources is not
/// delivered (RFC 6121 §2.1.6: only the account's own server pushes); the sender gets
/// `service-unavailable`, as for any IQ nobody takes.
async fn forged_roster_push_is_not_delivered(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "mallory"]).await;
    let mut alice = s.login("alice", "a").await;
    alice.request("<iq type='get' id='r0'><query xmlns='jabber:iq:roster'/></iq>").await;
    let mut mallory = s.login("mallory", "m").await;
    let reply = mallory
        .request("<iq type='set' id='forged' to='alice@localhost/a'><query xmlns='jabber:iq:roster'><item jid='evil@localhost' name='Your bank'/></query></iq>")
        .await;
    assert_eq!(reply.attr("type"), Some("error"), "{}", show(&reply));
    assert_eq!(condition(&reply), "service-unavailable");
    alice.expect_silence(std::time::Duration::from_millis(300)).await;
    // Other IQs between users still go through.
    mallory.send("<iq type='get' id='v1' to='alice@localhost/a'><query xmlns='jabber:iq:version'/></iq>").await;
    let iq = alice.expect_kind("iq").await;
    assert_eq!(iq.attr("id"), Some("v1"));
    s.stop().await;
}

db_tests!(get_set_remove_with_pushes, roster_set_errors, versioning, roster_is_persistent, forged_roster_push_is_not_delivered);
