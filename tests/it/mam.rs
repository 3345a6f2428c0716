//! Message Archive Management (XEP-0313), stanza ids (XEP-0359), RSM paging (XEP-0059) and
//! archiving preferences (XEP-0441), over the wire; and the archive store on both databases.

use std::time::Duration;

use jid::{BareJid, Jid};
use minidom::Element;
use starling::storage::{ArchiveDefault, ArchivePrefs, ArchiveRange, ArchiveStore, BulkMessage, Db, NewAccount, NewArchived, now_micros};

use crate::common::client::{CLIENT, Client, condition, show};
use crate::common::{Backend, TestServer, befriend, pg};
use crate::db_tests;

const MAM: &str = "urn:xmpp:mam:2";
const SID: &str = "urn:xmpp:sid:0";
const RSM: &str = "http://jabber.org/protocol/rsm";
const FORWARD: &str = "urn:xmpp:forward:0";
const DELAY: &str = "urn:xmpp:delay";

fn body(m: &Element) -> String {
    m.get_child("body", CLIENT).map(|b| b.text()).unwrap_or_default()
}

/// The `<stanza-id/>` elements of a message: (by, id).
fn stanza_ids(m: &Element) -> Vec<(String, String)> {
    m.children()
        .filter(|c| c.is("stanza-id", SID))
        .map(|c| (c.attr("by").unwrap_or_default().to_string(), c.attr("id").unwrap_or_default().to_string()))
        .collect()
}

/// One result of a query: archive id, delay stamp, the forwarded message.
struct Hit {
    id: String,
    stamp: String,
    message: Element,
}

/// What a query returned: the results in the order they came, and the IQ answer.
struct Page {
    hits: Vec<Hit>,
    iq: Element,
}

impl Page {
    fn fin(&self) -> &Element {
        self.iq.get_child("fin", MAM).unwrap_or_else(|| panic!("no <fin/> in {}", show(&self.iq)))
    }
    fn set(&self) -> &Element {
        self.fin().get_child("set", RSM).expect("<fin/> has an RSM <set/>")
    }
    fn complete(&self) -> bool {
        match self.fin().attr("complete") {
            Some("true") => true,
            None | Some("false") => false,
            Some(other) => panic!("complete='{other}'"),
        }
    }
    fn first(&self) -> Option<String> {
        self.set().get_child("first", RSM).map(|f| f.text())
    }
    fn first_index(&self) -> Option<String> {
        self.set().get_child("first", RSM).and_then(|f| f.attr("index").map(str::to_string))
    }
    fn last(&self) -> Option<String> {
        self.set().get_child("last", RSM).map(|f| f.text())
    }
    fn count(&self) -> Option<i64> {
        self.set().get_child("count", RSM).map(|c| c.text().parse().unwrap())
    }
    fn ids(&self) -> Vec<String> {
        self.hits.iter().map(|h| h.id.clone()).collect()
    }
    fn bodies(&self) -> Vec<String> {
        self.hits.iter().map(|h| body(&h.message)).collect()
    }
}

/// Send a query IQ (the whole stanza, with `id`) and collect its results until the answer.
/// Every result must carry `queryid` when given, come from the account's bare JID and be
/// addressed to this client.
async fn query(c: &mut Client, iq: &str) -> Page {
    let parsed: Element = iq.replace("<iq ", "<iq xmlns='jabber:client' ").parse().expect("test XML parses");
    let id = parsed.attr("id").unwrap().to_string();
    let queryid = parsed.get_child("query", MAM).and_then(|q| q.attr("queryid")).map(str::to_string);
    let owner = parsed.attr("to").map(str::to_string).unwrap_or_else(|| c.jid.split('/').next().unwrap().to_string());
    c.send(iq).await;
    let mut hits = Vec::new();
    loop {
        let el = c.next().await;
        if el.name() == "iq" && el.attr("id") == Some(id.as_str()) {
            return Page { hits, iq: el };
        }
        let Some(result) = el.get_child("result", MAM) else { continue };
        assert_eq!(result.attr("queryid"), queryid.as_deref(), "{}", show(&el));
        assert_eq!(el.attr("from"), Some(owner.as_str()), "results come from the archive: {}", show(&el));
        assert_eq!(el.attr("to"), Some(c.jid.as_str()), "{}", show(&el));
        let forwarded = result.get_child("forwarded", FORWARD).expect("forwarded");
        let stamp = forwarded.get_child("delay", DELAY).expect("delay").attr("stamp").unwrap().to_string();
        let message = forwarded.get_child("message", CLIENT).expect("the original message").clone();
        hits.push(Hit { id: result.attr("id").unwrap().to_string(), stamp, message });
    }
}

/// A query with a form of `fields` and an RSM `set` (both XML, may be empty).
fn mam_iq(id: &str, fields: &str, set: &str) -> String {
    let form = if fields.is_empty() {
        String::new()
    } else {
        format!("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{MAM}</value></field>{fields}</x>")
    };
    let set = if set.is_empty() { String::new() } else { format!("<set xmlns='{RSM}'>{set}</set>") };
    format!("<iq type='set' id='{id}'><query xmlns='{MAM}' queryid='q-{id}'>{form}{set}</query></iq>")
}

fn field(var: &str, value: &str) -> String {
    format!("<field var='{var}'><value>{value}</value></field>")
}

async fn chat(c: &mut Client, to: &str, text: &str) {
    c.send(&format!("<message to='{to}' type='chat' id='{}'><body>{text}</body></message>", text.replace(' ', "-"))).await;
}

/// A round trip: what the client sent before has been routed.
async fn sync(c: &mut Client) {
    c.request("<iq type='get' id='sync' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>").await;
}

/// §3.5, §4 examples: a message between two local accounts is archived on both sides; the
/// recipient gets it with a stanza-id by its bare JID whose id is the archive id; queries
/// without `to` and with `to` = own bare JID read the account's own archive.
async fn archives_both_sides(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut bob = s.login("bob", "b").await;
    alice.available().await;
    bob.available().await;
    alice.send("<message to='bob@localhost' type='chat' id='m1'><body>Hail to thee</body></message>").await;
    let got = bob.expect_kind("message").await;
    assert_eq!(body(&got), "Hail to thee");
    let sids = stanza_ids(&got);
    assert_eq!(sids.len(), 1, "{}", show(&got));
    assert_eq!(sids[0].0, "bob@localhost");
    let archive_id = sids[0].1.clone();
    assert!(archive_id.len() >= 22, "128 bits at least: {archive_id}");

    let page = query(&mut bob, "<iq type='set' id='juliet1'><query xmlns='urn:xmpp:mam:2' queryid='f27'/></iq>").await;
    assert_eq!(page.iq.attr("type"), Some("result"), "{}", show(&page.iq));
    assert_eq!(page.ids(), std::slice::from_ref(&archive_id));
    let hit = &page.hits[0];
    assert_eq!(hit.message.attr("from"), Some("alice@localhost/a"));
    assert_eq!(hit.message.attr("to"), Some("bob@localhost"));
    assert_eq!(hit.message.attr("id"), Some("m1"));
    assert_eq!(hit.message.attr("type"), Some("chat"));
    assert_eq!(body(&hit.message), "Hail to thee");
    let stamp = time::OffsetDateTime::parse(&hit.stamp, &time::format_description::well_known::Rfc3339).unwrap();
    assert!((time::OffsetDateTime::now_utc() - stamp).whole_seconds().abs() < 60, "{}", hit.stamp);
    assert!(page.complete());
    assert_eq!((page.first(), page.last()), (Some(archive_id.clone()), Some(archive_id.clone())));
    assert_eq!(page.first_index().as_deref(), Some("0"));
    assert_eq!(page.count(), Some(1));

    // The sender's archive has it as outgoing, under its own id; the same with to=own JID.
    let page = query(&mut alice, "<iq type='set' id='a1' to='alice@localhost'><query xmlns='urn:xmpp:mam:2' queryid='x'/></iq>").await;
    assert_eq!(page.hits.len(), 1);
    assert_ne!(page.hits[0].id, archive_id, "ids are per archive");
    assert_eq!(page.hits[0].message.attr("from"), Some("alice@localhost/a"));
    assert_eq!(page.hits[0].message.attr("to"), Some("bob@localhost"));
    assert!(stanza_ids(&page.hits[0].message).is_empty(), "the sender never sees the recipient's stanza-id");
    // §3.5: the sender's message to its contact carried no stanza-id of the sender's archive.
    alice.expect_silence(Duration::from_millis(200)).await;
    // Without queryid, results have none.
    let page = query(&mut bob, "<iq type='set' id='b2'><query xmlns='urn:xmpp:mam:2'/></iq>").await;
    assert_eq!(page.hits.len(), 1);
    s.stop().await;
}

/// StanzaIn runs before offline storage: a message stored offline carries its stanza-id.
async fn stanza_id_on_offline_messages(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    chat(&mut alice, "bob@localhost", "while you were out").await;
    sync(&mut alice).await;
    let mut bob = s.login("bob", "b").await;
    bob.send("<presence/>").await;
    let got = bob.expect_kind("message").await;
    assert_eq!(body(&got), "while you were out");
    assert!(got.get_child("delay", DELAY).is_some(), "offline delay");
    let sids = stanza_ids(&got);
    assert_eq!(sids.len(), 1, "{}", show(&got));
    assert_eq!(sids[0].0, "bob@localhost");
    let page = query(&mut bob, &mam_iq("o1", "", "")).await;
    assert_eq!(page.ids(), [sids[0].1.clone()]);
    s.stop().await;
}

/// XEP-0359 §4: a stanza-id by the recipient that arrives from anyone is removed (even
/// when the message is not archived); others stay; the server adds exactly one.
async fn forged_stanza_ids_are_stripped(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut bob = s.login("bob", "b").await;
    bob.available().await;
    alice
        .send(
            "<message to='bob@localhost/b' type='chat'><body>trust me</body>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='Bob@LOCALHOST' id='forged'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='room@muc.example' id='theirs'/>\
             <origin-id xmlns='urn:xmpp:sid:0' id='origin'/></message>",
        )
        .await;
    let got = bob.expect_kind("message").await;
    let sids = stanza_ids(&got);
    assert_eq!(sids.len(), 2, "{}", show(&got));
    assert!(sids.contains(&("room@muc.example".into(), "theirs".into())), "{}", show(&got));
    let ours: Vec<_> = sids.iter().filter(|(by, _)| by == "bob@localhost").collect();
    assert_eq!(ours.len(), 1);
    assert_ne!(ours[0].1, "forged");
    assert!(got.get_child("origin-id", SID).is_some(), "origin-id is kept");
    // Not archived, still stripped.
    alice
        .send(
            "<message to='bob@localhost/b' type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='bob@localhost' id='forged2'/></message>",
        )
        .await;
    let got = bob.expect_kind("message").await;
    assert!(stanza_ids(&got).is_empty(), "{}", show(&got));
    // The archive holds the message without the forged id.
    let page = query(&mut bob, &mam_iq("f1", "", "")).await;
    assert_eq!(page.hits.len(), 1);
    assert!(!stanza_ids(&page.hits[0].message).iter().any(|(_, id)| id == "forged"));
    s.stop().await;
}

/// Seven messages alice → bob; returns bob's archive ids in order.
async fn seven_messages(alice: &mut Client, bob: &mut Client) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..7 {
        chat(alice, "bob@localhost", &format!("m{i}")).await;
        let got = bob.expect_kind("message").await;
        assert_eq!(body(&got), format!("m{i}"));
        ids.push(stanza_ids(&got)[0].1.clone());
    }
    ids
}

/// §4.3 and XEP-0059: pages forwards with <after/>, backwards from the end with <before/>,
/// by <index/>, flipped, and the count alone with <max>0</max>; first, last, count, index
/// and complete exactly right on each page.
async fn paging(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut bob = s.login("bob", "b").await;
    bob.available().await;
    let ids = seven_messages(&mut alice, &mut bob).await;

    // Forwards, three at a time.
    let p1 = query(&mut bob, &mam_iq("p1", "", "<max>3</max>")).await;
    assert_eq!(p1.ids(), ids[0..3]);
    assert_eq!(p1.bodies(), ["m0", "m1", "m2"]);
    assert!(!p1.complete());
    assert_eq!((p1.first(), p1.last(), p1.count()), (Some(ids[0].clone()), Some(ids[2].clone()), Some(7)));
    assert_eq!(p1.first_index().as_deref(), Some("0"));
    let p2 = query(&mut bob, &mam_iq("p2", "", &format!("<max>3</max><after>{}</after>", ids[2]))).await;
    assert_eq!(p2.ids(), ids[3..6]);
    assert!(!p2.complete());
    assert_eq!((p2.first(), p2.last()), (Some(ids[3].clone()), Some(ids[5].clone())));
    let p3 = query(&mut bob, &mam_iq("p3", "", &format!("<max>3</max><after>{}</after>", ids[5]))).await;
    assert_eq!(p3.ids(), ids[6..7]);
    assert!(p3.complete());
    assert_eq!((p3.first(), p3.last()), (Some(ids[6].clone()), Some(ids[6].clone())));
    // COMPAT(profanity 0.13): the RSM <after/> straight in the query, without <set/>.
    let bare_after = query(
        &mut bob,
        &format!("<iq type='set' id='pa'><query xmlns='{MAM}' queryid='pa'><after xmlns='http://jabber.org/protocol/rsm'>{}</after></query></iq>", ids[4]),
    )
    .await;
    assert_eq!(bare_after.ids(), ids[5..7]);
    // After the last: an empty, complete page without first/last.
    let p4 = query(&mut bob, &mam_iq("p4", "", &format!("<max>3</max><after>{}</after>", ids[6]))).await;
    assert!(p4.hits.is_empty() && p4.complete());
    assert_eq!((p4.first(), p4.last(), p4.count()), (None, None, Some(7)));
    // Exactly a page's worth left: complete on that page.
    let exact = query(&mut bob, &mam_iq("p5", "", &format!("<max>4</max><after>{}</after>", ids[2]))).await;
    assert_eq!(exact.ids(), ids[3..7]);
    assert!(exact.complete());

    // Backwards from the end (§4.3.3): each page in chronological order.
    let b1 = query(&mut bob, &mam_iq("b1", "", "<max>3</max><before/>")).await;
    assert_eq!(b1.ids(), ids[4..7]);
    assert!(!b1.complete());
    assert_eq!((b1.first(), b1.last()), (Some(ids[4].clone()), Some(ids[6].clone())));
    assert_eq!(b1.first_index().as_deref(), Some("4"));
    let b2 = query(&mut bob, &mam_iq("b2", "", &format!("<max>3</max><before>{}</before>", ids[4]))).await;
    assert_eq!(b2.ids(), ids[1..4]);
    assert!(!b2.complete());
    let b3 = query(&mut bob, &mam_iq("b3", "", &format!("<max>3</max><before>{}</before>", ids[1]))).await;
    assert_eq!(b3.ids(), ids[0..1]);
    assert!(b3.complete());
    assert_eq!((b3.first(), b3.last()), (Some(ids[0].clone()), Some(ids[0].clone())));

    // Flipped (§4.3.4): the same page, newest first.
    let f = query(&mut bob, &format!("<iq type='set' id='f'><query xmlns='{MAM}'><set xmlns='{RSM}'><max>3</max><before/></set><flip-page/></query></iq>")).await;
    assert_eq!(f.ids(), [ids[6].clone(), ids[5].clone(), ids[4].clone()]);
    assert_eq!((f.first(), f.last()), (Some(ids[4].clone()), Some(ids[6].clone())));

    // By index (XEP-0059 §2.6).
    let i = query(&mut bob, &mam_iq("i", "", "<max>2</max><index>3</index>")).await;
    assert_eq!(i.ids(), ids[3..5]);
    assert_eq!(i.first_index().as_deref(), Some("3"));
    assert!(!i.complete());
    let past = query(&mut bob, &mam_iq("i2", "", "<max>2</max><index>9</index>")).await;
    assert!(past.hits.is_empty() && past.complete());

    // The count alone (XEP-0059 §2.7).
    let c = query(&mut bob, &mam_iq("c", "", "<max>0</max>")).await;
    assert!(c.hits.is_empty());
    assert_eq!((c.count(), c.first()), (Some(7), None));
    assert!(!c.complete());
    s.stop().await;
}

/// A page larger than [mam] max_page is cut to it (§4.3.1: the server may limit results);
/// no <max/> gives max_page too.
async fn max_page_clamps(b: Backend) {
    let s = TestServer::start_with(b, |c| c.mam.max_page = 4).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut bob = s.login("bob", "b").await;
    bob.available().await;
    let ids = seven_messages(&mut alice, &mut bob).await;
    for set in ["<max>100</max>", "<max>18446744073709551616000</max>", ""] {
        let page = query(&mut bob, &mam_iq("m", "", set)).await;
        assert_eq!(page.ids(), ids[0..4], "{set}");
        assert!(!page.complete());
    }
    s.stop().await;
}

/// §4.1: with (bare matches every resource, full only itself, own JID only self-messages),
/// start/end, after-id/before-id, ids; item-not-found for an id the archive lacks.
async fn filters(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob", "carol"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut alice2 = s.login("alice", "a2").await;
    let mut carol = s.login("carol", "c").await;
    let mut bob = s.login("bob", "b").await;
    bob.available().await;
    chat(&mut alice, "bob@localhost", "from a").await;
    bob.expect_kind("message").await;
    chat(&mut carol, "bob@localhost", "from carol").await;
    bob.expect_kind("message").await;
    chat(&mut alice2, "bob@localhost", "from a2").await;
    bob.expect_kind("message").await;
    chat(&mut bob, "alice@localhost/a", "to a").await;
    alice.expect_kind("message").await;
    chat(&mut bob, "bob@localhost/b", "note to self").await;
    bob.expect_kind("message").await;
    let all = query(&mut bob, &mam_iq("all", "", "")).await;
    // A message to oneself is archived once.
    assert_eq!(all.bodies(), ["from a", "from carol", "from a2", "to a", "note to self"]);
    let ids = all.ids();
    let stamps: Vec<String> = all.hits.iter().map(|h| h.stamp.clone()).collect();
    let cases: Vec<(String, Vec<&str>)> = vec![
        (field("with", "alice@localhost"), vec!["from a", "from a2", "to a"]),
        (field("with", "alice@localhost/a"), vec!["from a", "to a"]),
        (field("with", "alice@localhost/a2"), vec!["from a2"]),
        (field("with", "carol@localhost"), vec!["from carol"]),
        (field("with", "bob@localhost"), vec!["note to self"]),
        (field("with", "nobody@localhost"), vec![]),
        (field("start", &stamps[1]), vec!["from carol", "from a2", "to a", "note to self"]),
        (field("end", &stamps[3]), vec!["from a", "from carol", "from a2", "to a"]),
        (field("start", &stamps[1]) + &field("end", &stamps[3]), vec!["from carol", "from a2", "to a"]),
        (field("start", "2100-01-01T00:00:00Z"), vec![]),
        (field("start", &stamps[3]) + &field("end", &stamps[1]), vec![]),
        (field("after-id", &ids[1]), vec!["from a2", "to a", "note to self"]),
        (field("before-id", &ids[3]), vec!["from a", "from carol", "from a2"]),
        (field("after-id", &ids[1]) + &field("before-id", &ids[3]), vec!["from a2"]),
        (format!("<field var='ids'><value>{}</value><value>{}</value></field>", ids[3], ids[0]), vec!["from a", "to a"]),
        (field("with", "alice@localhost") + &field("after-id", &ids[0]), vec!["from a2", "to a"]),
        (field("with", "alice@localhost") + &format!("<field var='ids'><value>{}</value><value>{}</value></field>", ids[1], ids[2]), vec!["from a2"]),
    ];
    for (fields, want) in cases {
        let page = query(&mut bob, &mam_iq("w", &fields, "")).await;
        assert_eq!(page.iq.attr("type"), Some("result"), "{fields}: {}", show(&page.iq));
        assert_eq!(page.bodies(), want, "{fields}");
        assert!(page.complete(), "{fields}");
        assert_eq!(page.count(), None, "no count for a filtered query: {fields}");
    }
    // Filtered paging.
    let page = query(&mut bob, &mam_iq("wp", &field("with", "alice@localhost"), "<max>2</max>")).await;
    assert_eq!(page.bodies(), ["from a", "from a2"]);
    assert!(!page.complete());
    let next = query(&mut bob, &mam_iq("wp2", &field("with", "alice@localhost"), &format!("<max>2</max><after>{}</after>", page.last().unwrap()))).await;
    assert_eq!(next.bodies(), ["to a"]);
    assert!(next.complete());

    // §4.1.3, §4.3.2: any id the archive does not have is item-not-found (alice's own ids
    // are not in bob's archive).
    let theirs = query(&mut alice, &mam_iq("t", "", "")).await.ids()[0].clone();
    for (fields, set) in [
        (field("after-id", "nope"), String::new()),
        (field("before-id", &theirs), String::new()),
        (format!("<field var='ids'><value>{}</value><value>nope</value></field>", ids[0]), String::new()),
        (String::new(), "<after>nope</after>".to_string()),
        (String::new(), format!("<before>{theirs}</before>")),
    ] {
        let page = query(&mut bob, &mam_iq("e", &fields, &set)).await;
        assert_eq!(condition(&page.iq), "item-not-found", "{fields} {set}");
        assert!(page.hits.is_empty());
    }
    s.stop().await;
}

/// Errors the spec names: another account's archive is forbidden (§8.1); unknown fields
/// feature-not-implemented (§4.1.5); malformed dates, numbers and JIDs bad-request or
/// jid-malformed; the server's own address does not host an archive.
async fn errors(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    let forbidden = [
        format!("<iq type='set' id='x1' to='bob@localhost'><query xmlns='{MAM}'/></iq>"),
        format!("<iq type='get' id='x2' to='bob@localhost'><query xmlns='{MAM}'/></iq>"),
        format!("<iq type='get' id='x3' to='bob@localhost'><metadata xmlns='{MAM}'/></iq>"),
        format!("<iq type='get' id='x4' to='bob@localhost'><prefs xmlns='{MAM}'/></iq>"),
        format!("<iq type='set' id='x5' to='bob@localhost'><prefs xmlns='{MAM}' default='never'/></iq>"),
    ];
    for iq in forbidden {
        assert_eq!(condition(&alice.request(&iq).await), "forbidden", "{iq}");
    }
    let r = alice.request(&format!("<iq type='set' id='x6' to='localhost'><query xmlns='{MAM}'/></iq>")).await;
    assert_eq!(condition(&r), "service-unavailable");
    let cases = [
        (field("{http://example.com/}free-text-search", "Where art thou"), "", "feature-not-implemented"),
        (field("include-groupchat", "true"), "", "feature-not-implemented"),
        (field("start", "last tuesday"), "", "bad-request"),
        (field("end", "2010-07-07 13:23:54"), "", "bad-request"),
        (field("with", "@localhost"), "", "jid-malformed"),
        (String::new(), "<max>-1</max>", "bad-request"),
        (String::new(), "<max>many</max>", "bad-request"),
        (String::new(), "<index>-3</index>", "bad-request"),
        (String::new(), "<index>20000</index>", "feature-not-implemented"),
        (String::new(), "<after>a</after><before>b</before>", "bad-request"),
    ];
    for (fields, set, want) in cases {
        let page = query(&mut alice, &mam_iq("e", &fields, set)).await;
        assert_eq!(page.iq.attr("type"), Some("error"));
        assert_eq!(condition(&page.iq), want, "{fields} {set}");
    }
    let wrong_form = format!("<iq type='set' id='x7'><query xmlns='{MAM}'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:1</value></field></x></query></iq>");
    assert_eq!(condition(&alice.request(&wrong_form).await), "bad-request");
    // Still connected and answering.
    sync(&mut alice).await;
    s.stop().await;
}

/// §4.1.5: the form lists every supported field, none required, ids with an open list;
/// §7: the account's disco#info advertises mam:2, #extended, the metadata and stanza ids.
async fn form_and_disco(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice"]).await;
    let mut alice = s.login("alice", "a").await;
    let r = alice.request(&format!("<iq type='get' id='form1'><query xmlns='{MAM}'/></iq>")).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let x = r.get_child("query", MAM).unwrap().get_child("x", "jabber:x:data").expect("a form");
    assert_eq!(x.attr("type"), Some("form"));
    let fields: Vec<(String, String)> =
        x.children().filter(|c| c.name() == "field").map(|f| (f.attr("var").unwrap().to_string(), f.attr("type").unwrap().to_string())).collect();
    let want = [("FORM_TYPE", "hidden"), ("with", "jid-single"), ("start", "text-single"), ("end", "text-single"), ("before-id", "text-single"), ("after-id", "text-single"), ("ids", "list-multi")];
    assert_eq!(fields, want.map(|(a, b)| (a.to_string(), b.to_string())));
    assert!(!x.children().any(|f| f.children().any(|c| c.name() == "required")), "no field is required");
    let ids = x.children().find(|f| f.attr("var") == Some("ids")).unwrap();
    let validate = ids.get_child("validate", "http://jabber.org/protocol/xdata-validate").expect("validate");
    assert!(validate.get_child("open", "http://jabber.org/protocol/xdata-validate").is_some());
    let form_type = x.children().find(|f| f.attr("var") == Some("FORM_TYPE")).unwrap();
    assert_eq!(form_type.children().next().unwrap().text(), MAM);

    let info = alice.request("<iq type='get' id='disco1' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    let features: Vec<&str> = info.get_child("query", "http://jabber.org/protocol/disco#info").unwrap().children().filter_map(|f| f.attr("var")).collect();
    for f in [MAM, "urn:xmpp:mam:2#extended", "urn:xmpp:mam:2#metadata", SID] {
        assert!(features.contains(&f), "{f} missing from {features:?}");
    }
    s.stop().await;
}

/// §5: empty metadata for an empty archive; else the first and last message's id and time.
async fn metadata(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut bob = s.login("bob", "b").await;
    bob.available().await;
    let r = bob.request(&format!("<iq type='get' id='jui8921rr9'><metadata xmlns='{MAM}'/></iq>")).await;
    let m = r.get_child("metadata", MAM).expect("metadata");
    assert!(m.children().next().is_none(), "{}", show(&r));
    let ids = seven_messages(&mut alice, &mut bob).await;
    let all = query(&mut bob, &mam_iq("all", "", "")).await;
    let r = bob.request(&format!("<iq type='get' id='md2'><metadata xmlns='{MAM}'/></iq>")).await;
    let m = r.get_child("metadata", MAM).unwrap();
    let start = m.get_child("start", MAM).unwrap();
    let end = m.get_child("end", MAM).unwrap();
    assert_eq!(start.attr("id"), Some(ids[0].as_str()));
    assert_eq!(end.attr("id"), Some(ids[6].as_str()));
    assert_eq!(start.attr("timestamp"), Some(all.hits[0].stamp.as_str()));
    assert_eq!(end.attr("timestamp"), Some(all.hits[6].stamp.as_str()));
    s.stop().await;
}

/// Received stanza-id of the next message from alice, or None.
async fn received_id(alice: &mut Client, bob: &mut Client, text: &str) -> Option<String> {
    chat(alice, "bob@localhost", text).await;
    let got = bob.expect_kind("message").await;
    assert_eq!(body(&got), text);
    stanza_ids(&got).first().map(|(_, id)| id.clone())
}

/// XEP-0441: get answers the server default with empty lists; set answers what was applied;
/// never/always lists and the default (always, never, roster) decide what is archived, on
/// each side separately.
async fn preferences(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob", "carol"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut bob = s.login("bob", "b").await;
    let mut carol = s.login("carol", "c").await;
    alice.available().await;
    bob.available().await;
    carol.available().await;
    let r = bob.request(&format!("<iq type='get' id='juliet2'><prefs xmlns='{MAM}'/></iq>")).await;
    let p = r.get_child("prefs", MAM).expect("prefs");
    assert_eq!(p.attr("default"), Some("always"));
    assert!(p.get_child("always", MAM).unwrap().children().next().is_none());
    assert!(p.get_child("never", MAM).unwrap().children().next().is_none());

    // never by default, but always alice.
    let r = bob
        .request(&format!(
            "<iq type='set' id='juliet3'><prefs xmlns='{MAM}' default='never'><always><jid>Alice@localhost</jid></always><never><jid>montague@montague.lit</jid></never></prefs></iq>"
        ))
        .await;
    let p = r.get_child("prefs", MAM).expect("applied prefs");
    assert_eq!(p.attr("default"), Some("never"));
    assert_eq!(p.get_child("always", MAM).unwrap().children().map(|j| j.text()).collect::<Vec<_>>(), ["alice@localhost"]);
    assert_eq!(p.get_child("never", MAM).unwrap().children().map(|j| j.text()).collect::<Vec<_>>(), ["montague@montague.lit"]);
    let again = bob.request(&format!("<iq type='get' id='g2'><prefs xmlns='{MAM}'/></iq>")).await;
    assert_eq!(show(again.get_child("prefs", MAM).unwrap()), show(p));

    assert!(received_id(&mut alice, &mut bob, "kept").await.is_some());
    chat(&mut carol, "bob@localhost", "not kept").await;
    let got = bob.expect_kind("message").await;
    assert!(stanza_ids(&got).is_empty(), "not archived, no stanza-id: {}", show(&got));
    assert_eq!(query(&mut bob, &mam_iq("q1", "", "")).await.bodies(), ["kept"]);
    // carol's own archive still has what she sent (her preferences, not bob's).
    assert_eq!(query(&mut carol, &mam_iq("q2", "", "")).await.bodies(), ["not kept"]);

    // never alice/a (a full JID) while always alice: never wins for that resource only.
    let mut alice2 = s.login("alice", "a2").await;
    bob.request(&format!(
        "<iq type='set' id='p3'><prefs xmlns='{MAM}' default='always'><always><jid>alice@localhost</jid></always><never><jid>alice@localhost/a</jid></never></prefs></iq>"
    ))
    .await;
    assert!(received_id(&mut alice, &mut bob, "from a").await.is_none());
    assert!(received_id(&mut alice2, &mut bob, "from a2").await.is_some());

    // roster: only contacts in the roster (alice after befriending), not carol.
    bob.request(&format!("<iq type='set' id='p4'><prefs xmlns='{MAM}' default='roster'/></iq>")).await;
    assert!(received_id(&mut carol, &mut bob, "stranger").await.is_none());
    befriend(&mut alice, &mut bob).await;
    assert!(received_id(&mut alice, &mut bob, "friend").await.is_some());
    assert_eq!(query(&mut bob, &mam_iq("q3", "", "")).await.bodies(), ["kept", "from a2", "friend"]);

    // The preferences survive the sessions: bob logs out and in again.
    bob.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut bob = s.login("bob", "b2").await;
    bob.available().await;
    alice.drain().await;
    assert!(received_id(&mut carol, &mut bob, "still a stranger").await.is_none());
    s.stop().await;
}

/// [mam] default applies to accounts without preferences.
async fn configured_default(b: Backend) {
    let s = TestServer::start_with(b, |c| c.mam.default = ArchiveDefault::Never).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut bob = s.login("bob", "b").await;
    bob.available().await;
    assert!(received_id(&mut alice, &mut bob, "ephemeral").await.is_none());
    assert!(query(&mut alice, &mam_iq("q", "", "")).await.hits.is_empty());
    let r = bob.request(&format!("<iq type='get' id='p'><prefs xmlns='{MAM}'/></iq>")).await;
    assert_eq!(r.get_child("prefs", MAM).unwrap().attr("default"), Some("never"));
    bob.request(&format!("<iq type='set' id='p2'><prefs xmlns='{MAM}' default='always'/></iq>")).await;
    assert!(received_id(&mut alice, &mut bob, "kept").await.is_some());
    s.stop().await;
}

/// XEP-0313 §6.1: what a block list refuses is in neither archive (XEP-0191, both ways).
async fn blocked_messages_are_not_archived(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut bob = s.login("bob", "b").await;
    bob.available().await;
    bob.request("<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='alice@localhost'/></block></iq>").await;
    alice.send("<message to='bob@localhost' type='chat' id='m1'><body>let me in</body></message>").await;
    assert_eq!(condition(&alice.expect("error", |e| e.attr("id") == Some("m1")).await), "service-unavailable");
    alice.send("<message to='carol@example.test' type='chat' id='m0'><body>nobody there</body></message>").await;
    alice.expect("error", |e| e.attr("id") == Some("m0")).await;
    // bob's own attempt to write to alice is refused by his list too.
    bob.send("<message to='alice@localhost' type='chat' id='m2'><body>go away</body></message>").await;
    assert_eq!(condition(&bob.expect("error", |e| e.attr("id") == Some("m2")).await), "not-acceptable");
    assert!(query(&mut bob, &mam_iq("q1", "", "")).await.hits.is_empty());
    assert!(query(&mut alice, &mam_iq("q2", "", "")).await.hits.is_empty());
    s.stop().await;
}

/// Chat states, receipts, headlines and no-store hints are not archived; <store/> is.
async fn what_is_archived(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut bob = s.login("bob", "b").await;
    bob.available().await;
    for m in [
        "<message to='bob@localhost' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
        "<message to='bob@localhost' type='chat'><received xmlns='urn:xmpp:receipts' id='x'/></message>",
        "<message to='bob@localhost' type='headline'><body>news</body></message>",
        "<message to='bob@localhost' type='chat'><body>secret</body><no-permanent-store xmlns='urn:xmpp:hints'/></message>",
        "<message to='bob@localhost' type='chat'><body>secret</body><no-store xmlns='urn:xmpp:hints'/></message>",
        "<message to='bob@localhost' type='chat'><store xmlns='urn:xmpp:hints'/><x xmlns='urn:example:payload'/></message>",
        "<message to='bob@localhost' type='normal'><body>plain</body></message>",
    ] {
        alice.send(m).await;
        bob.expect_kind("message").await;
    }
    let page = query(&mut bob, &mam_iq("q", "", "")).await;
    assert_eq!(page.hits.len(), 2, "{:?}", page.hits.iter().map(|h| show(&h.message)).collect::<Vec<_>>());
    assert!(page.hits[0].message.get_child("x", "urn:example:payload").is_some());
    assert_eq!(body(&page.hits[1].message), "plain");
    assert_eq!(query(&mut alice, &mam_iq("q", "", "")).await.hits.len(), 2);
    s.stop().await;
}

/// Deleting an account deletes its archive and preferences; a new account of the same name
/// starts empty. The other side's archive keeps its copy.
async fn account_deletion_empties_archive(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut bob = s.login("bob", "b").await;
    bob.available().await;
    let ids = seven_messages(&mut alice, &mut bob).await;
    bob.request(&format!("<iq type='set' id='p'><prefs xmlns='{MAM}' default='roster'/></iq>")).await;
    let core = s.server().core();
    let store = core.db.archive();
    let bob_jid = BareJid::new("bob@localhost").unwrap();
    assert_eq!(store.count(&bob_jid).await.unwrap(), 7);
    assert!(starling::accounts::delete_account(core, &bob_jid).await.unwrap());
    assert_eq!(store.count(&bob_jid).await.unwrap(), 0);
    assert_eq!(store.position(&bob_jid, &ids[0]).await.unwrap(), None);
    assert_eq!(store.prefs(&bob_jid).await.unwrap(), None);
    assert!(starling::accounts::wait_sessions_ended(core, &bob_jid, Duration::from_secs(5)).await);
    s.add_user("bob", "pw").await;
    let mut bob = s.login("bob", "b").await;
    assert!(query(&mut bob, &mam_iq("q", "", "")).await.hits.is_empty());
    let r = bob.request(&format!("<iq type='get' id='p2'><prefs xmlns='{MAM}'/></iq>")).await;
    assert_eq!(r.get_child("prefs", MAM).unwrap().attr("default"), Some("always"));
    assert_eq!(query(&mut alice, &mam_iq("qa", "", "")).await.hits.len(), 7);
    s.stop().await;
}

/// Accepted messages are in the archive after a restart, even when the server stops right
/// after accepting them (the writer's queue is committed before the database closes).
async fn survives_restart(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    let burst: String = (0..200).map(|i| format!("<message to='bob@localhost' type='chat'><body>kept {i}</body></message>")).collect();
    alice.send(&burst).await;
    sync(&mut alice).await;
    drop(alice);
    let (config, dir) = (s.config.clone(), s.dir);
    s.server.unwrap().shutdown().await;
    let s = TestServer { server: Some(starling::Server::start(config.clone()).await.unwrap()), config, dir };
    let mut bob = s.login("bob", "b").await;
    let page = query(&mut bob, &mam_iq("q", "", "<max>250</max>")).await;
    assert_eq!(page.bodies(), (0..200).map(|i| format!("kept {i}")).collect::<Vec<_>>());
    let mut alice = s.login("alice", "a").await;
    assert_eq!(query(&mut alice, &mam_iq("q", "", "<max>0</max>")).await.count(), Some(200));
    s.stop().await;
}

/// [mam] retention_days: at start (and hourly) messages older than that are deleted, oldest
/// first, and the count follows.
async fn retention_at_start(b: Backend) {
    let s = TestServer::start_with(b, |c| c.mam.retention_days = 2).await;
    s.users(&["alice", "bob"]).await;
    let store = s.server().core().db.archive();
    let day = 86_400_000_000i64;
    let old = now_micros() - 3 * day;
    let bulk: Vec<BulkMessage> = (0..2500)
        .map(|i| BulkMessage {
            owner: BareJid::new("bob@localhost").unwrap(),
            with: Jid::new("alice@localhost/a").unwrap(),
            stanza: format!("<message xmlns='jabber:client' from='alice@localhost/a' to='bob@localhost' type='chat'><body>old {i}</body></message>"),
            at_micros: Some(old + i),
        })
        .collect();
    store.insert_bulk(&bulk).await.unwrap();
    let recent = BulkMessage { at_micros: Some(now_micros() - day), ..bulk[0].clone() };
    store.insert_bulk(&[recent]).await.unwrap();
    let (config, dir) = (s.config.clone(), s.dir);
    s.server.unwrap().shutdown().await;
    let s = TestServer { server: Some(starling::Server::start(config.clone()).await.unwrap()), config, dir };
    let store = s.server().core().db.archive();
    let bob = BareJid::new("bob@localhost").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.count(&bob).await.unwrap() > 1 {
        assert!(tokio::time::Instant::now() < deadline, "retention did not run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut client = s.login("bob", "b").await;
    let page = query(&mut client, &mam_iq("q", "", "")).await;
    assert_eq!(page.bodies(), ["old 0"], "only the recent copy is left");
    assert_eq!(page.count(), Some(1));
    s.stop().await;
}

/// A message comes back as it was archived whichever way its row keeps it: as the server
/// serialised it (written into the result as it is: the messages it archives, imports) or as
/// it came (rows from before the store recorded which, parsed and written again); both in
/// one page. The odd forms are a foreign namespace with a prefix, double quotes, references.
async fn stored_forms(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let store = s.server().core().db.archive();
    let alice_jid = j("alice@localhost");
    let odd = r#"<message xmlns="jabber:client" from="bob@localhost/b" to="alice@localhost" type="chat" id="o&amp;1"><body>x &amp; y &lt; z&#x9;</body><e:x xmlns:e="urn:example" e:a="1">it&apos;s</e:x></message>"#;
    let first = now_micros() - 1_000_000;
    // A row as the server kept it before it recorded whether a stanza is its own.
    let insert = format!(
        "INSERT INTO archive_messages (ts, owner, with_bare, with_resource, stanza) VALUES ({first}, 'alice@localhost', 'bob@localhost', 'b', '{}')",
        odd.replace('\'', "''")
    );
    let url = s.config.storage_url();
    match b {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(insert)).execute(&pool).await.unwrap();
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(insert)).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
    // The same message imported now, and one through the server.
    let bulk = BulkMessage { owner: alice_jid.clone(), with: Jid::new("bob@localhost/b").unwrap(), stanza: odd.into(), at_micros: Some(first + 1) };
    store.insert_bulk(&[bulk]).await.unwrap();
    let mut alice = s.login("alice", "a").await;
    let mut bob = s.login("bob", "b").await;
    chat(&mut bob, "alice@localhost", "x &amp; y").await;
    sync(&mut bob).await;
    store.committed().await;
    let rows = store.page(&alice_jid, &ArchiveRange::all(), false, 10, 0).await.unwrap();
    assert_eq!(rows.iter().map(|m| m.is_serialised()).collect::<Vec<_>>(), [false, true, true]);

    let page = query(&mut alice, &mam_iq("q", "", "")).await;
    assert_eq!(page.hits.len(), 3);
    for hit in &page.hits[..2] {
        let m = &hit.message;
        assert_eq!((m.attr("from"), m.attr("to"), m.attr("id")), (Some("bob@localhost/b"), Some("alice@localhost"), Some("o&1")), "{}", show(m));
        assert_eq!(body(m), "x & y < z\t");
        let x = m.get_child("x", "urn:example").unwrap_or_else(|| panic!("{}", show(m)));
        assert_eq!((x.text(), x.attr_ns("urn:example", "a")), ("it's".to_string(), Some("1")), "{}", show(m));
    }
    assert_eq!(body(&page.hits[2].message), "x & y");
    assert_eq!(page.ids(), rows.iter().map(|m| m.id.clone()).collect::<Vec<_>>());
    s.stop().await;
}

/// An acknowledgement is a promise (XEP-0198): once alice has `<a h/>` for a message, its
/// rows are committed in both archives (read here without waiting for the writer).
async fn ack_waits_for_the_archive(b: Backend) {
    const SM: &str = "urn:xmpp:sm:3";
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut bob = s.login("bob", "b").await;
    bob.available().await;
    alice.send(&format!("<enable xmlns='{SM}'/>")).await;
    alice.expect("enabled", |e| e.is("enabled", SM)).await;
    let store = s.server().core().db.archive();
    for round in 1..=20u32 {
        alice.send(&format!("<message to='bob@localhost' type='chat'><body>m{round}</body></message>")).await;
        alice.send(&format!("<r xmlns='{SM}'/>")).await;
        loop {
            let a = alice.expect("an ack", |e| e.is("a", SM)).await;
            if a.attr("h") == Some(round.to_string().as_str()) {
                break;
            }
        }
        for owner in ["alice@localhost", "bob@localhost"] {
            let newest = store.page(&j(owner), &ArchiveRange::all(), true, 1, 0).await.unwrap();
            assert_eq!(texts(&newest), [format!("m{round}")], "{owner}: acknowledged before it was archived");
        }
    }
    bob.drain().await;
    s.stop().await;
}

/// Run the `starling` binary with a config pointing at the test server's database.
async fn starling_cli(s: &TestServer, args: &[&str]) -> (bool, String, String) {
    let config = s.dir.path().join("cli.toml");
    std::fs::write(
        &config,
        format!(
            "domains = [\"localhost\", \"example.test\"]\ndata_dir = \".\"\n[storage]\nurl = \"{}\"\n[admin]\nsocket = \"cli.sock\"\n",
            s.config.storage.url
        ),
    )
    .unwrap();
    let mut all = vec!["--config".to_string(), config.display().to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    let dir = s.dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_starling"))
            .current_dir(dir)
            .env_remove("STARLING_CONFIG")
            .env_remove("RUST_LOG")
            .args(&all)
            .output()
            .expect("run the starling binary");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    })
    .await
    .unwrap()
}

/// `starling archive import` (the benchmark's provisioning path) reads JSON lines into an
/// account's archive, while the server runs; the messages are then queried like any other,
/// at their given times. A bad line fails the import and names the line.
async fn archive_import_cli(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["bob"]).await;
    let base = now_micros() - 86_400_000_000;
    let line = |i: i64, direction: &str, with: &str, text: &str| {
        let (from, to) = if direction == "in" { (with.to_string(), "bob@localhost".to_string()) } else { ("bob@localhost/b".to_string(), with.to_string()) };
        format!(
            "{{\"ts_us\":{},\"direction\":\"{direction}\",\"with\":\"{with}\",\"id\":\"m{i}\",\"stanza\":\"<message xmlns='jabber:client' from='{from}' to='{to}' type='chat' id='m{i}'><body>{text}</body></message>\"}}\n",
            base + i
        )
    };
    let good = [line(0, "in", "peer1@localhost/phone", "caf\\u00e9"), line(1, "out", "peer1@localhost", "reply \\\"q\\\""), line(2, "in", "peer2@localhost/x", "other")].concat();
    let file = s.dir.path().join("archive.jsonl");
    std::fs::write(&file, &good).unwrap();
    let (ok, out, err) = starling_cli(&s, &["archive", "import", "--account", "bob@localhost", file.to_str().unwrap()]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("imported 3 messages"), "{out}");
    let mut bob = s.login("bob", "b").await;
    let page = query(&mut bob, &mam_iq("q", "", "")).await;
    assert_eq!(page.bodies(), ["café", "reply \"q\"", "other"]);
    assert_eq!(page.count(), Some(3));
    let with = query(&mut bob, &mam_iq("w", &field("with", "peer1@localhost"), "")).await;
    assert_eq!(with.bodies(), ["café", "reply \"q\""]);
    let first = time::OffsetDateTime::parse(&page.hits[0].stamp, &time::format_description::well_known::Rfc3339).unwrap();
    assert_eq!(first.unix_timestamp_nanos() / 1000, i128::from(base));

    let bad = [line(10, "in", "peer1@localhost", "fine"), "{\"ts_us\":11,\"direction\":\"in\"}\n".to_string()].concat();
    std::fs::write(&file, bad).unwrap();
    let (ok, _, err) = starling_cli(&s, &["archive", "import", "--account", "bob@localhost", file.to_str().unwrap()]).await;
    assert!(!ok);
    assert!(err.contains("line 2"), "{err}");
    let (ok, _, err) = starling_cli(&s, &["archive", "import", "--account", "nobody@localhost", file.to_str().unwrap()]).await;
    assert!(!ok && err.contains("does not exist"), "{err}");
    assert_eq!(query(&mut bob, &mam_iq("q2", "", "<max>0</max>")).await.count(), Some(3), "nothing of the failed imports");
    s.stop().await;
}

// ---- The store, on both databases ----

async fn open(b: Backend) -> (Db, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = match b {
        Backend::Sqlite => format!("sqlite://{}/s.db", dir.path().display()),
        Backend::Postgres => pg::new_database().await,
    };
    (Db::open(&url, 4).await.unwrap(), dir)
}

fn j(s: &str) -> BareJid {
    BareJid::new(s).unwrap()
}

async fn account(db: &Db, jid: &str) {
    assert!(db.accounts().create(&NewAccount { jid: j(jid), credentials: Vec::new() }).await.unwrap());
}

/// A row at a new position, and its archive id.
async fn row(store: &ArchiveStore, owner: &str, with: &str, text: &str) -> (NewArchived, String) {
    let slot = store.allocate().await.unwrap();
    let row = NewArchived {
        owner: j(owner),
        ts: slot.ts,
        with: Jid::new(with).unwrap(),
        stanza: starling::xml::Serialised::of(
            &starling::xml::parse_element(&format!("<message xmlns='jabber:client' type='chat'><body>{text}</body></message>")).unwrap(),
        ),
    };
    (row, slot.id)
}

fn texts(rows: &[starling::storage::ArchivedMessage]) -> Vec<String> {
    rows.iter().map(|r| r.stanza.split("<body>").nth(1).unwrap().split('<').next().unwrap().to_string()).collect()
}

/// The store's contract: grouped writes in order, positions increasing, pages both ways,
/// filters, ids, counts, bounds, preferences, and rows for a deleted account skipped
/// without failing the rest of their group.
async fn archive_store(b: Backend) {
    let (db, _dir) = open(b).await;
    account(&db, "a@x").await;
    account(&db, "b@x").await;
    let store = db.archive();
    let a = j("a@x");
    assert_eq!(store.bounds(&a).await.unwrap(), None);
    assert_eq!(store.count(&a).await.unwrap(), 0);
    let mut rows = Vec::new();
    let mut ids = Vec::new();
    for i in 0..10 {
        let with = if i % 2 == 0 { "b@x/phone" } else { "c@y" };
        let (r, id) = row(&store, "a@x", with, &format!("t{i}")).await;
        rows.push(r);
        ids.push(id);
    }
    // Queued in three groups without waiting, then committed.
    let p1 = store.enqueue(rows[0..3].to_vec()).await;
    let p2 = store.enqueue(rows[3..4].to_vec()).await;
    let p3 = store.enqueue(rows[4..].to_vec()).await;
    p1.outcome().await.unwrap();
    p2.outcome().await.unwrap();
    p3.outcome().await.unwrap();
    assert_eq!(store.count(&a).await.unwrap(), 10);
    let all = store.page(&a, &ArchiveRange::all(), false, 100, 0).await.unwrap();
    assert_eq!(all.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), ids);
    assert!(all.windows(2).all(|w| w[0].ts < w[1].ts), "positions increase");
    let newest = store.page(&a, &ArchiveRange::all(), true, 3, 0).await.unwrap();
    assert_eq!(texts(&newest), ["t9", "t8", "t7"]);
    assert_eq!(texts(&store.page(&a, &ArchiveRange::all(), false, 2, 4).await.unwrap()), ["t4", "t5"]);
    let (oldest, newest) = store.bounds(&a).await.unwrap().unwrap();
    assert_eq!((oldest.id.as_str(), newest.id.as_str()), (ids[0].as_str(), ids[9].as_str()));
    assert_eq!((oldest.ts, newest.ts), (all[0].ts, all[9].ts));
    assert_eq!(store.position(&a, &ids[3]).await.unwrap(), Some(all[3].ts));
    assert_eq!(store.position(&j("b@x"), &ids[3]).await.unwrap(), None, "ids are per archive");

    let mut range = ArchiveRange::all();
    range.with = Some(Jid::new("b@x").unwrap());
    assert_eq!(texts(&store.page(&a, &range, false, 100, 0).await.unwrap()), ["t0", "t2", "t4", "t6", "t8"]);
    range.with = Some(Jid::new("b@x/phone").unwrap());
    assert_eq!(store.page(&a, &range, false, 100, 0).await.unwrap().len(), 5);
    range.with = Some(Jid::new("b@x/laptop").unwrap());
    assert!(store.page(&a, &range, false, 100, 0).await.unwrap().is_empty());
    range.with = Some(Jid::new("c@y").unwrap());
    range.from_ts = all[3].ts;
    range.to_ts = all[7].ts;
    assert_eq!(texts(&store.page(&a, &range, true, 100, 0).await.unwrap()), ["t7", "t5", "t3"]);
    let mut by_id = ArchiveRange::all();
    by_id.only = store.positions(&a, &[ids[5].clone(), ids[1].clone(), ids[5].clone()]).await.unwrap().expect("all there");
    assert_eq!(by_id.only, [all[1].ts, all[5].ts]);
    assert_eq!(texts(&store.page(&a, &by_id, false, 100, 0).await.unwrap()), ["t1", "t5"]);
    assert_eq!(store.positions(&a, &[ids[1].clone(), "nope".into()]).await.unwrap(), None);
    assert_eq!(store.positions(&j("b@x"), &[ids[1].clone()]).await.unwrap(), None, "another archive's id");

    // A row for an account deleted while queued is skipped; the rest of its group is kept.
    account(&db, "gone@x").await;
    assert!(db.accounts().delete(&j("gone@x")).await.unwrap());
    let (lost, _) = row(&store, "gone@x", "a@x", "lost").await;
    let (kept, _) = row(&store, "b@x", "a@x/r", "kept").await;
    store.store(vec![lost, kept]).await.unwrap();
    assert_eq!(store.count(&j("gone@x")).await.unwrap(), 0);
    assert_eq!(texts(&store.page(&j("b@x"), &ArchiveRange::all(), false, 10, 0).await.unwrap()), ["kept"]);

    // Preferences.
    assert_eq!(store.prefs(&a).await.unwrap(), None);
    let prefs = ArchivePrefs { default: ArchiveDefault::Roster, always: vec!["b@x".into()], never: vec!["c@y".into(), "d@y/r".into()] };
    store.set_prefs(&a, &prefs).await.unwrap();
    assert_eq!(store.prefs(&a).await.unwrap(), Some(prefs));
    let prefs = ArchivePrefs { default: ArchiveDefault::Never, always: vec![], never: vec![] };
    store.set_prefs(&a, &prefs).await.unwrap();
    assert_eq!(store.prefs(&a).await.unwrap(), Some(prefs));

    // Deleting the account deletes everything of it.
    assert!(db.accounts().delete(&a).await.unwrap());
    assert_eq!(store.count(&a).await.unwrap(), 0);
    assert_eq!(store.bounds(&a).await.unwrap(), None);
    assert_eq!(store.prefs(&a).await.unwrap(), None);
    db.close().await;
}

/// Retention deletes the oldest rows first, in batches, and the counts follow.
async fn archive_retention(b: Backend) {
    let (db, _dir) = open(b).await;
    account(&db, "a@x").await;
    account(&db, "b@x").await;
    let store = db.archive();
    let day = 86_400_000_000i64;
    let old = now_micros() - 10 * day;
    let mut bulk = Vec::new();
    for i in 0..30 {
        let owner = if i % 3 == 0 { "b@x" } else { "a@x" };
        bulk.push(BulkMessage {
            owner: j(owner),
            with: Jid::new("c@y").unwrap(),
            stanza: format!("<message xmlns='jabber:client'><body>old{i}</body></message>"),
            at_micros: Some(old + i * 1000),
        });
    }
    let old_ids = store.insert_bulk(&bulk).await.unwrap();
    assert_eq!(old_ids.len(), 30);
    store.store(vec![row(&store, "a@x", "c@y", "new").await.0]).await.unwrap();
    assert_eq!((store.count(&j("a@x")).await.unwrap(), store.count(&j("b@x")).await.unwrap()), (21, 10));
    let cutoff = now_micros() - day;
    assert_eq!(store.delete_older_than(cutoff, 12).await.unwrap(), 12);
    // The twelve oldest went: old0..old11 (a has 8 of them, b 4).
    assert_eq!((store.count(&j("a@x")).await.unwrap(), store.count(&j("b@x")).await.unwrap()), (13, 6));
    let left = store.page(&j("a@x"), &ArchiveRange::all(), false, 100, 0).await.unwrap();
    assert_eq!(texts(&left)[0], "old13");
    assert_eq!(store.delete_older_than(cutoff, 100).await.unwrap(), 18);
    assert_eq!(store.delete_older_than(cutoff, 100).await.unwrap(), 0);
    assert_eq!(texts(&store.page(&j("a@x"), &ArchiveRange::all(), false, 100, 0).await.unwrap()), ["new"]);
    assert_eq!((store.count(&j("a@x")).await.unwrap(), store.count(&j("b@x")).await.unwrap()), (1, 0));
}

/// A page at either end of a large archive, with or without `with`, is an index range read
/// (no scan of the archive, no sort): checked on the database's own query plan, with more
/// than one contact and one account in the table.
async fn archive_pages_use_indexes(b: Backend) {
    let (db, _dir) = open(b).await;
    account(&db, "a@x").await;
    account(&db, "b@x").await;
    let store = db.archive();
    let base = now_micros() - 1_000_000_000;
    let bulk: Vec<BulkMessage> = (0..20_000i64)
        .map(|i| BulkMessage {
            owner: j(if i % 4 == 0 { "b@x" } else { "a@x" }),
            with: Jid::new(&format!("c{}@y/r", i % 50)).unwrap(),
            stanza: "<message xmlns='jabber:client'><body>x</body></message>".into(),
            at_micros: Some(base + i),
        })
        .collect();
    store.insert_bulk(&bulk).await.unwrap();
    assert_eq!(store.count(&j("a@x")).await.unwrap(), 15_000);
    let a = j("a@x");
    let mut range = ArchiveRange::all();
    for with in [None, Some("c7@y"), Some("c7@y/r")] {
        range.with = with.map(|w| Jid::new(w).unwrap());
        for newest_first in [true, false] {
            let plan = store.page_plan(&a, &range, newest_first, 51).await.unwrap();
            let index = if with.is_some() { "archive_messages_with" } else { "archive_messages_owner" };
            assert!(plan.contains(index), "{with:?} {newest_first}: {plan}");
            for bad in ["SCAN archive_messages", "TEMP B-TREE", "Seq Scan", "Sort"] {
                assert!(!plan.contains(bad), "{with:?} {newest_first}: {plan}");
            }
            let page = store.page(&a, &range, newest_first, 51, 0).await.unwrap();
            assert_eq!(page.len(), 51);
        }
    }
}

db_tests!(
    archives_both_sides,
    stanza_id_on_offline_messages,
    forged_stanza_ids_are_stripped,
    paging,
    max_page_clamps,
    filters,
    errors,
    form_and_disco,
    metadata,
    preferences,
    configured_default,
    blocked_messages_are_not_archived,
    what_is_archived,
    account_deletion_empties_archive,
    survives_restart,
    retention_at_start,
    ack_waits_for_the_archive,
    archive_import_cli,
    stored_forms,
    archive_store,
    archive_retention,
    archive_pages_use_indexes,
);
