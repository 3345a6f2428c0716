//! Per-account quotas (issue 10 defect 9): offline messages (count and bytes, flushed at
//! login in bounded batches), private XML (bytes), vCard (bytes), roster items and pending
//! subscription requests (count), roster item names and groups (size). Each refusal carries
//! the right condition and a text naming the limit.

use std::time::Duration;

use jid::{BareJid, FullJid};
use minidom::Element;
use starling::modules::offline::FLUSH_BATCH;
use starling::storage::{OfflineQuota, Stored};

use crate::common::client::{CLIENT, STANZAS, condition, show};
use crate::common::{Backend, TestServer};
use crate::db_tests;

const ROSTER: &str = "jabber:iq:roster";

/// The error of an error stanza: (type, condition, text).
fn error(el: &Element) -> (String, String, String) {
    let e = el.get_child("error", CLIENT).unwrap_or_else(|| panic!("not an error: {}", show(el)));
    let text = e.get_child("text", STANZAS).map(|t| t.text()).unwrap_or_default();
    (e.attr("type").unwrap_or_default().to_string(), condition(el), text)
}

fn bare(s: &str) -> BareJid {
    BareJid::new(s).unwrap()
}

/// A stored offline message for bob of exactly `size` bytes, with id `m{i}`.
fn stored_message(i: usize, size: usize) -> String {
    let head = format!("<message xmlns='jabber:client' from='alice@localhost/a' to='bob@localhost' type='chat' id='m{i}'><body>");
    let tail = "</body></message>";
    let m = format!("{head}{}{tail}", "x".repeat(size - head.len() - tail.len()));
    assert_eq!(m.len(), size);
    m
}

/// Store `count` messages of `size` bytes for bob, as the offline module would have.
async fn fill_offline(s: &TestServer, count: usize, size: usize) {
    let store = s.server().core().db.offline();
    let quota = OfflineQuota { messages: count, bytes: u64::MAX };
    let mut pending = Vec::new();
    for i in 0..count {
        pending.push(store.enqueue(&bare("bob@localhost"), stored_message(i, size), quota).await);
    }
    for p in pending {
        assert_eq!(p.outcome().await.unwrap(), Stored::Yes);
    }
}

/// Wait until the store holds `expected` (messages, bytes) for `owner`: deletions run
/// after the writes they follow, a moment after the client read the messages.
async fn wait_for_usage(s: &TestServer, owner: &str, expected: (i64, i64)) {
    let store = s.server().core().db.offline();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let usage = store.usage(&bare(owner)).await.unwrap();
        if usage == expected {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "offline usage of {owner} is {usage:?}, expected {expected:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The message id `m{i}` as a number.
fn number(m: &Element) -> usize {
    m.attr("id").and_then(|id| id.strip_prefix('m')).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{}", show(m)))
}

/// Messages that would take an account's stored bytes past its quota are refused with
/// <service-unavailable/> (XEP-0160 §2: the offline queue is full), naming the limit,
/// although the message count is far from its limit.
async fn offline_byte_quota(b: Backend) {
    let s = TestServer::start_with(b, |c| c.offline.max_bytes_per_user = 4096).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    let body = "x".repeat(1200);
    for i in 0..5 {
        alice.send(&format!("<message to='bob@localhost' type='chat' id='q{i}'><body>{body}</body></message>")).await;
    }
    alice.request("<iq type='get' id='sync' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>").await;
    let (stored, bytes) = s.server().core().db.offline().usage(&bare("bob@localhost")).await.unwrap();
    assert!((1..5).contains(&stored), "{stored} stored");
    assert!(bytes <= 4096 && bytes + bytes / stored > 4096, "{stored} messages of {bytes} bytes: the next one would still have fitted");
    for i in stored..5 {
        let e = alice.expect("refusal", |e| e.attr("id") == Some(format!("q{i}").as_str())).await;
        assert_eq!(e.attr("type"), Some("error"));
        let (kind, condition, text) = error(&e);
        assert_eq!((kind.as_str(), condition.as_str()), ("cancel", "service-unavailable"), "{}", show(&e));
        assert!(text.contains("4096 bytes"), "{text}");
    }
    alice.expect_silence(Duration::from_millis(200)).await;
    // The stored ones are delivered, in order.
    let mut bob = s.login("bob", "b").await;
    bob.send("<presence/>").await;
    for i in 0..stored {
        assert_eq!(bob.expect_kind("message").await.attr("id"), Some(format!("q{i}").as_str()));
    }
    s.stop().await;
}

/// A full store (1000 messages of 2 KB) is delivered at login in order and completely,
/// batch after batch, and is empty afterwards; messages sent meanwhile come after it.
async fn offline_flush_in_batches(b: Backend) {
    // Room for one more than the backlog: the message sent at login may come before the
    // initial presence and be stored too (then it is the last one flushed).
    let s = TestServer::start_with(b, |c| c.offline.max_per_user = 1001).await;
    s.users(&["alice", "bob"]).await;
    fill_offline(&s, 1000, 2000).await;
    let mut alice = s.login("alice", "a").await;
    let mut bob = s.login("bob", "b").await;
    bob.send("<presence/>").await;
    alice.send("<message to='bob@localhost' type='chat' id='live'><body>after</body></message>").await;
    for i in 0..1000 {
        let m = bob.expect_kind("message").await;
        assert_eq!(number(&m), i, "out of order");
        let body = m.get_child("body", CLIENT).unwrap().text();
        assert!(!body.is_empty() && body.bytes().all(|c| c == b'x'), "{}", show(&m));
    }
    assert_eq!(bob.expect_kind("message").await.attr("id"), Some("live"));
    wait_for_usage(&s, "bob@localhost", (0, 0)).await;
    assert!(s.server().core().db.offline().load(&bare("bob@localhost")).await.unwrap().is_empty());
    s.stop().await;
}

/// A session that ends in the middle of the flush leaves what it did not deliver: the
/// batches written before were deleted (only after being written), the rest stays stored
/// in order and comes at the next login.
async fn offline_flush_interrupted(b: Backend) {
    // 16 MB waiting: far more than the kernel buffers of a connection whose client stopped
    // reading, so the flush is certainly still going when the client goes.
    const COUNT: usize = 1000;
    const SIZE: usize = 16_000;
    let s = TestServer::start_with(b, |c| c.offline.max_bytes_per_user = 64 << 20).await;
    s.users(&["alice", "bob"]).await;
    fill_offline(&s, COUNT, SIZE).await;
    let per_batch = FLUSH_BATCH.messages.min(usize::try_from(FLUSH_BATCH.bytes).unwrap() / SIZE);
    assert!(per_batch >= 2);

    let mut bob = s.login("bob", "b").await;
    bob.send("<presence/>").await;
    // A message of the third batch: the first two were written, then deleted, before the
    // third was read from the database.
    for i in 0..=2 * per_batch {
        assert_eq!(number(&bob.expect_kind("message").await), i);
    }
    drop(bob);
    let full = FullJid::new("bob@localhost/b").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while s.server().core().sessions.is_connected(&full) {
        assert!(tokio::time::Instant::now() < deadline, "the session did not end");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let rest: Vec<usize> = s
        .server()
        .core()
        .db
        .offline()
        .load(&bare("bob@localhost"))
        .await
        .unwrap()
        .iter()
        .map(|m| number(&m.stanza.parse::<Element>().unwrap()))
        .collect();
    let first = *rest.first().expect("the undelivered rest is kept");
    assert!(first >= 2 * per_batch, "delivered batches were not deleted: the rest starts at {first}");
    assert_eq!(rest, (first..COUNT).collect::<Vec<_>>(), "the rest is kept whole and in order");

    let mut bob = s.login("bob", "b").await;
    bob.send("<presence/>").await;
    for i in first..COUNT {
        assert_eq!(number(&bob.expect_kind("message").await), i);
    }
    wait_for_usage(&s, "bob@localhost", (0, 0)).await;
    s.stop().await;
}

fn roster_set(id: &str, item: &str) -> String {
    format!("<iq type='set' id='{id}'><query xmlns='{ROSTER}'>{item}</query></iq>")
}

fn roster_jids(reply: &Element) -> Vec<String> {
    reply.get_child("query", ROSTER).unwrap().children().filter_map(|i| i.attr("jid")).map(str::to_string).collect()
}

/// A roster holds at most `max_items`: one more is refused with <resource-constraint/>
/// naming the limit, whether by a roster set or by a subscription request; existing items
/// still change, and removing one makes room.
async fn roster_max_items(b: Backend) {
    let s = TestServer::start_with(b, |c| c.roster.max_items = 3).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    for i in 1..=3 {
        let r = alice.request(&roster_set(&format!("s{i}"), &format!("<item jid='c{i}@localhost'/>"))).await;
        assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    }
    let r = alice.request(&roster_set("s4", "<item jid='c4@localhost'/>")).await;
    assert_eq!(error(&r), ("cancel".into(), "resource-constraint".into(), "a roster holds at most 3 items".into()));
    let r = alice.request(&roster_set("rename", "<item jid='c1@localhost' name='One'><group>G</group></item>")).await;
    assert_eq!(r.attr("type"), Some("result"), "an existing item still changes: {}", show(&r));
    // A subscription request would add bob: not past the limit either.
    alice.send("<presence type='subscribe' to='bob@localhost'/>").await;
    let roster = alice.request(&format!("<iq type='get' id='g1'><query xmlns='{ROSTER}'/></iq>")).await;
    assert_eq!(roster_jids(&roster), ["c1@localhost", "c2@localhost", "c3@localhost"]);
    alice.drain().await;
    let r = alice.request(&roster_set("rm", "<item jid='c2@localhost' subscription='remove'/>")).await;
    assert_eq!(r.attr("type"), Some("result"));
    alice.drain().await;
    let r = alice.request(&roster_set("s5", "<item jid='c4@localhost'/>")).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let roster = alice.request(&format!("<iq type='get' id='g2'><query xmlns='{ROSTER}'/></iq>")).await;
    assert_eq!(roster_jids(&roster), ["c1@localhost", "c3@localhost", "c4@localhost"]);
    s.stop().await;
}

/// Subscription requests kept for an account are bounded: past `max_pending_in`, requests
/// from new contacts are not stored (nor do they grow the roster); the stored ones come at
/// login.
async fn pending_requests_bounded(b: Backend) {
    let s = TestServer::start_with(b, |c| c.roster.max_pending_in = 2).await;
    s.users(&["carol", "alice", "bob", "dave"]).await;
    for user in ["alice", "bob", "dave"] {
        let mut c = s.login(user, "r").await;
        c.send("<presence type='subscribe' to='carol@localhost'/>").await;
        c.request("<iq type='get' id='sync' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>").await;
        // Asking again replaces a stored request instead of taking another place.
        c.send("<presence type='subscribe' to='carol@localhost'/>").await;
        c.request("<iq type='get' id='sync2' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>").await;
    }
    let pending = s.server().core().db.roster().pending_in(&bare("carol@localhost")).await.unwrap();
    let from: Vec<&str> = pending.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(from, ["alice@localhost", "bob@localhost"]);

    let mut carol = s.login("carol", "c").await;
    carol.send("<presence/>").await;
    let mut requests = Vec::new();
    for _ in 0..2 {
        let p = carol.expect("request", |e| e.name() == "presence" && e.attr("type") == Some("subscribe")).await;
        requests.push(p.attr("from").unwrap().to_string());
    }
    requests.sort();
    assert_eq!(requests, ["alice@localhost", "bob@localhost"]);
    carol.drain().await;
    let roster = carol.request(&format!("<iq type='get' id='g'><query xmlns='{ROSTER}'/></iq>")).await;
    assert!(roster_jids(&roster).is_empty(), "requests do not grow the roster");
    s.stop().await;
}

/// One roster item cannot be huge (RFC 6121 §2.3.3): a name or group longer than
/// `max_text_bytes`, or more groups than `max_groups_per_item`, get <not-acceptable/>
/// naming the limit. The defaults are 256 bytes and 16 groups.
async fn roster_item_limits(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice"]).await;
    let mut alice = s.login("alice", "a").await;
    let at_limit = format!(
        "<item jid='c@localhost' name='{}'>{}</item>",
        "n".repeat(256),
        (0..16).map(|i| format!("<group>{i:0>256}</group>")).collect::<String>()
    );
    let r = alice.request(&roster_set("ok", &at_limit)).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let cases = [
        (format!("<item jid='c@localhost' name='{}'/>", "n".repeat(257)), "a roster item's name is at most 256 bytes long"),
        (format!("<item jid='c@localhost' name='{}'/>", "é".repeat(129)), "a roster item's name is at most 256 bytes long"),
        (format!("<item jid='c@localhost'><group>{}</group></item>", "g".repeat(257)), "a group name is at most 256 bytes long"),
        (
            format!("<item jid='c@localhost'>{}</item>", (0..17).map(|i| format!("<group>{i}</group>")).collect::<String>()),
            "a roster item is in at most 16 groups",
        ),
    ];
    for (i, (item, text)) in cases.iter().enumerate() {
        let r = alice.request(&roster_set(&format!("e{i}"), item)).await;
        assert_eq!(error(&r), ("modify".into(), "not-acceptable".into(), text.to_string()));
    }
    s.stop().await;
}

/// Private XML (XEP-0049) within a byte quota for all namespaces together: a set past it is
/// refused with <resource-constraint/> naming the quota, and changes nothing.
async fn private_quota(b: Backend) {
    let s = TestServer::start_with(b, |c| c.private.max_bytes_per_user = 2048).await;
    s.users(&["alice"]).await;
    let mut alice = s.login("alice", "a").await;
    let set = |id: &str, ns: &str, size: usize| {
        format!("<iq type='set' id='{id}'><query xmlns='jabber:iq:private'><x xmlns='{ns}'>{}</x></query></iq>", "p".repeat(size))
    };
    let r = alice.request(&set("a1", "urn:q:a", 1500)).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let r = alice.request(&set("b1", "urn:q:b", 600)).await;
    assert_eq!(
        error(&r),
        ("cancel".into(), "resource-constraint".into(), "private XML storage holds at most 2048 bytes per account".into())
    );
    let get = alice.request("<iq type='get' id='g'><query xmlns='jabber:iq:private'><x xmlns='urn:q:b'/></query></iq>").await;
    let x = get.get_child("query", "jabber:iq:private").unwrap().get_child("x", "urn:q:b").unwrap();
    assert!(x.text().is_empty(), "the refused set stored nothing");
    // Smaller: room again.
    assert_eq!(alice.request(&set("a2", "urn:q:a", 500)).await.attr("type"), Some("result"));
    assert_eq!(alice.request(&set("b2", "urn:q:b", 600)).await.attr("type"), Some("result"));
    s.stop().await;
}

/// A vCard (XEP-0054) larger than `max_bytes`, as stored, is refused with
/// <not-acceptable/> naming the limit; the previous one stays.
async fn vcard_limit(b: Backend) {
    let s = TestServer::start_with(b, |c| c.vcard.max_bytes = 2048).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    let set = |id: &str, size: usize| format!("<iq type='set' id='{id}'><vCard xmlns='vcard-temp'><DESC>{}</DESC></vCard></iq>", "v".repeat(size));
    assert_eq!(alice.request(&set("v1", 1000)).await.attr("type"), Some("result"));
    let r = alice.request(&set("v2", 3000)).await;
    let (kind, condition, text) = error(&r);
    assert_eq!((kind.as_str(), condition.as_str()), ("modify", "not-acceptable"), "{}", show(&r));
    assert!(text.starts_with("a vCard is at most 2048 bytes"), "{text}");
    let mut bob = s.login("bob", "b").await;
    let card = bob.request("<iq type='get' id='g' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>").await;
    let desc = card.get_child("vCard", "vcard-temp").unwrap().get_child("DESC", "vcard-temp").unwrap().text();
    assert_eq!(desc.len(), 1000, "the previous vCard stays");
    s.stop().await;
}

db_tests!(
    offline_byte_quota,
    offline_flush_in_batches,
    offline_flush_interrupted,
    roster_max_items,
    pending_requests_bounded,
    roster_item_limits,
    private_quota,
    vcard_limit,
);
