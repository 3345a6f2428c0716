//! Small services: disco and caps (XEP-0030/0115), ping (XEP-0199), version (XEP-0092),
//! time (XEP-0202), last activity (XEP-0012), vcard-temp (XEP-0054), private XML (XEP-0049).

use std::time::Duration;

use crate::common::client::{condition, show};
use crate::common::{Backend, TestServer, befriend};
use crate::db_tests;

const INFO: &str = "http://jabber.org/protocol/disco#info";

fn features(reply: &minidom::Element) -> Vec<String> {
    reply
        .get_child("query", INFO)
        .map(|q| q.children().filter(|c| c.name() == "feature").filter_map(|f| f.attr("var")).map(str::to_string).collect())
        .unwrap_or_default()
}

async fn disco_and_caps(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob", "carol"]).await;
    let mut alice = s.login("alice", "a").await;
    let info = alice.request("<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    let f = features(&info);
    for want in [INFO, "http://jabber.org/protocol/disco#items", "urn:xmpp:ping", "jabber:iq:version", "urn:xmpp:time", "jabber:iq:last", "vcard-temp", "jabber:iq:private", "urn:xmpp:blocking", "msgoffline", "jabber:iq:roster", "jabber:iq:register"] {
        assert!(f.iter().any(|x| x == want), "missing {want} in {f:?}");
    }
    let identity = info.get_child("query", INFO).unwrap().get_child("identity", INFO).unwrap();
    assert_eq!((identity.attr("category"), identity.attr("type")), (Some("server"), Some("im")));
    // The caps node from the stream features answers with the same info.
    let caps = alice.features.as_ref().unwrap().get_child("c", "http://jabber.org/protocol/caps").unwrap().clone();
    let node = format!("{}#{}", caps.attr("node").unwrap(), caps.attr("ver").unwrap());
    let by_node = alice.request(&format!("<iq type='get' id='d2' to='localhost'><query xmlns='{INFO}' node='{node}'/></iq>")).await;
    assert_eq!(features(&by_node), f);
    assert_eq!(by_node.get_child("query", INFO).unwrap().attr("node"), Some(node.as_str()));
    let unknown = alice.request(&format!("<iq type='get' id='d3' to='localhost'><query xmlns='{INFO}' node='nope'/></iq>")).await;
    assert_eq!(condition(&unknown), "item-not-found");
    let items = alice.request("<iq type='get' id='d4' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>").await;
    assert_eq!(items.attr("type"), Some("result"));

    // An account: visible to itself and to subscribed contacts, not to strangers.
    let own = alice.request(&format!("<iq type='get' id='d5' to='alice@localhost'><query xmlns='{INFO}'/></iq>")).await;
    let identity = own.get_child("query", INFO).unwrap().get_child("identity", INFO).unwrap();
    assert_eq!((identity.attr("category"), identity.attr("type")), (Some("account"), Some("registered")));
    let mut carol = s.login("carol", "c").await;
    let stranger = carol.request(&format!("<iq type='get' id='d6' to='alice@localhost'><query xmlns='{INFO}'/></iq>")).await;
    assert_eq!(condition(&stranger), "service-unavailable");
    let mut bob = s.login("bob", "b").await;
    alice.available().await;
    bob.available().await;
    befriend(&mut alice, &mut bob).await;
    let friend = bob.request(&format!("<iq type='get' id='d7' to='alice@localhost'><query xmlns='{INFO}'/></iq>")).await;
    assert_eq!(friend.attr("type"), Some("result"), "{}", show(&friend));
    s.stop().await;
}

async fn ping_version_time(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice"]).await;
    let mut alice = s.login("alice", "a").await;
    let pong = alice.request("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>").await;
    assert_eq!((pong.attr("type"), pong.attr("from")), (Some("result"), Some("localhost")));
    assert!(pong.children().next().is_none());
    let v = alice.request("<iq type='get' id='v1' to='localhost'><query xmlns='jabber:iq:version'/></iq>").await;
    let q = v.get_child("query", "jabber:iq:version").unwrap();
    assert_eq!(q.get_child("name", "jabber:iq:version").unwrap().text(), "Starling");
    assert_eq!(q.get_child("version", "jabber:iq:version").unwrap().text(), env!("CARGO_PKG_VERSION"));
    let t = alice.request("<iq type='get' id='t1' to='localhost'><time xmlns='urn:xmpp:time'/></iq>").await;
    let time_el = t.get_child("time", "urn:xmpp:time").unwrap();
    assert_eq!(time_el.get_child("tzo", "urn:xmpp:time").unwrap().text(), "+00:00");
    let utc = time_el.get_child("utc", "urn:xmpp:time").unwrap().text();
    let parsed = time::OffsetDateTime::parse(&utc, &time::format_description::well_known::Rfc3339).unwrap();
    assert!((parsed - time::OffsetDateTime::now_utc()).abs() < time::Duration::seconds(5), "{utc}");
    // Setting the server's version or time is not a thing.
    let r = alice.request("<iq type='set' id='t2' to='localhost'><time xmlns='urn:xmpp:time'/></iq>").await;
    assert_eq!(condition(&r), "service-unavailable");
    s.stop().await;
}

/// XEP-0199 §4.2: the server pings a silent client, and drops it if it does not answer.
async fn server_pings_silent_clients(b: Backend) {
    let s = TestServer::start_with(b, |c| {
        c.c2s.ping_interval = 1;
        c.c2s.ping_timeout = 1;
    })
    .await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    let ping = alice.expect("a ping", |e| e.name() == "iq" && e.has_child("ping", "urn:xmpp:ping")).await;
    assert_eq!((ping.attr("type"), ping.attr("from"), ping.attr("to")), (Some("get"), Some("localhost"), Some("alice@localhost/a")));
    alice.send(&format!("<iq type='result' id='{}' to='localhost'/>", ping.attr("id").unwrap())).await;
    // Answered: still connected, and pinged again later.
    alice.expect("second ping", |e| e.name() == "iq" && e.has_child("ping", "urn:xmpp:ping")).await;
    // bob never answers: dropped with connection-timeout.
    let mut bob = s.login("bob", "b").await;
    bob.expect("ping", |e| e.has_child("ping", "urn:xmpp:ping")).await;
    assert_eq!(bob.expect_stream_error().await.as_deref(), Some("connection-timeout"));
    s.stop().await;
}

async fn last_activity(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob", "carol"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut bob = s.login("bob", "b").await;
    alice.available().await;
    bob.available().await;
    befriend(&mut alice, &mut bob).await;
    // Online: 0 seconds.
    let r = alice.request("<iq type='get' id='l1' to='bob@localhost'><query xmlns='jabber:iq:last'/></iq>").await;
    assert_eq!(r.get_child("query", "jabber:iq:last").unwrap().attr("seconds"), Some("0"));
    bob.send("<presence><status>gone fishing</status></presence>").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    bob.close().await;
    alice.expect("bob leaves", |e| e.attr("type") == Some("unavailable")).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = alice.request("<iq type='get' id='l2' to='bob@localhost'><query xmlns='jabber:iq:last'/></iq>").await;
    let q = r.get_child("query", "jabber:iq:last").unwrap();
    let seconds: i64 = q.attr("seconds").unwrap().parse().unwrap();
    assert!((1..10).contains(&seconds), "{}", show(&r));
    assert_eq!(q.text(), "gone fishing");
    // Strangers are refused.
    let mut carol = s.login("carol", "c").await;
    let r = carol.request("<iq type='get' id='l3' to='bob@localhost'><query xmlns='jabber:iq:last'/></iq>").await;
    assert_eq!(condition(&r), "forbidden");
    // The server's uptime.
    let r = carol.request("<iq type='get' id='l4' to='localhost'><query xmlns='jabber:iq:last'/></iq>").await;
    assert!(r.get_child("query", "jabber:iq:last").unwrap().attr("seconds").is_some());
    s.stop().await;
}

async fn vcard_temp(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    let empty = alice.request("<iq type='get' id='v0'><vCard xmlns='vcard-temp'/></iq>").await;
    let card = empty.get_child("vCard", "vcard-temp").expect("an empty vCard");
    assert!(card.children().next().is_none());
    let set = alice.request("<iq type='set' id='v1'><vCard xmlns='vcard-temp'><FN>Alice Liddell</FN><NICKNAME>alice</NICKNAME><PHOTO><TYPE>image/png</TYPE><BINVAL>iVBORw0KGgo=</BINVAL></PHOTO></vCard></iq>").await;
    assert_eq!(set.attr("type"), Some("result"));
    let mut bob = s.login("bob", "b").await;
    let got = bob.request("<iq type='get' id='v2' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>").await;
    let card = got.get_child("vCard", "vcard-temp").unwrap();
    assert_eq!(card.get_child("FN", "vcard-temp").unwrap().text(), "Alice Liddell");
    assert_eq!(card.get_child("PHOTO", "vcard-temp").unwrap().get_child("BINVAL", "vcard-temp").unwrap().text(), "iVBORw0KGgo=");
    let forbidden = bob.request("<iq type='set' id='v3' to='alice@localhost'><vCard xmlns='vcard-temp'><FN>Mallory</FN></vCard></iq>").await;
    assert_eq!(condition(&forbidden), "forbidden");
    s.stop().await;
}

async fn private_storage(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    let empty = alice.request("<iq type='get' id='p0'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>").await;
    let storage = empty.get_child("query", "jabber:iq:private").unwrap().get_child("storage", "storage:bookmarks").unwrap();
    assert!(storage.children().next().is_none());
    alice.request("<iq type='set' id='p1'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'><conference jid='room@muc.example' autojoin='true' name='Room'/></storage></query></iq>").await;
    let got = alice.request("<iq type='get' id='p2'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>").await;
    let conf = got.get_child("query", "jabber:iq:private").unwrap().get_child("storage", "storage:bookmarks").unwrap().get_child("conference", "storage:bookmarks").unwrap();
    assert_eq!((conf.attr("jid"), conf.attr("autojoin")), (Some("room@muc.example"), Some("true")));
    let bad = alice.request("<iq type='set' id='p3'><query xmlns='jabber:iq:private'><x xmlns='jabber:iq:private'/></query></iq>").await;
    assert_eq!(condition(&bad), "not-acceptable");
    let mut bob = s.login("bob", "b").await;
    let other = bob.request("<iq type='get' id='p4' to='alice@localhost'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>").await;
    assert_eq!(condition(&other), "forbidden");
    s.stop().await;
}

db_tests!(disco_and_caps, ping_version_time, server_pings_silent_clients, last_activity, vcard_temp, private_storage);

/// Every disco feature the server advertises is listed in xeps/doap.xml.
#[tokio::test]
async fn doap_lists_every_feature() {
    let s = TestServer::start(Backend::Sqlite).await;
    let doap = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/xeps/doap.xml")).unwrap();
    let modules = &s.server().core().modules;
    for scope in [starling::modules::Scope::Server, starling::modules::Scope::Account] {
        for feature in modules.features(scope) {
            assert!(doap.contains(&format!(" {feature}")), "xeps/doap.xml does not list the feature {feature}");
        }
    }
    s.stop().await;
}
