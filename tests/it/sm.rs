//! XEP-0198 Stream Management: acks both ways, resumption on a new connection, what
//! happens to unacknowledged stanzas when a session is not resumed, and the promise that an
//! ack covers only what is safe.

use std::time::Duration;

use minidom::Element;

use crate::common::client::{CLIENT, STANZAS, show};
use crate::common::{Backend, Client, TestServer, befriend};
use crate::db_tests;

const SM: &str = "urn:xmpp:sm:3";

fn body(m: &Element) -> String {
    m.get_child("body", CLIENT).map(|b| b.text()).unwrap_or_default()
}

fn is_sm(el: &Element, name: &str) -> bool {
    el.is(name, SM)
}

/// `<enable/>` and the `<enabled/>` it gets.
async fn enable(c: &mut Client, resume: bool) -> Element {
    c.send(&format!("<enable xmlns='{SM}'{}/>", if resume { " resume='true'" } else { "" })).await;
    let enabled = c.expect("enabled", |e| is_sm(e, "enabled") || is_sm(e, "failed")).await;
    assert!(is_sm(&enabled, "enabled"), "{}", show(&enabled));
    enabled
}

/// Ask for an ack and return its `h`.
async fn ack_of(c: &mut Client) -> u32 {
    c.send(&format!("<r xmlns='{SM}'/>")).await;
    let a = c.expect("an ack", |e| is_sm(e, "a")).await;
    a.attr("h").unwrap().parse().unwrap()
}

/// Authenticated on a new connection, not bound: ready to resume.
async fn reconnect(s: &TestServer, user: &str) -> Client {
    let mut c = Client::secure(s).await;
    c.auth_scram_sha256(user, "pw").await.expect("authentication succeeds");
    c
}

async fn resume(c: &mut Client, previd: &str, h: u32) -> Element {
    c.send(&format!("<resume xmlns='{SM}' previd='{previd}' h='{h}'/>")).await;
    c.expect("resumed or failed", |e| is_sm(e, "resumed") || is_sm(e, "failed")).await
}

/// §2-§3: the feature is offered after authentication; enable is refused before binding
/// and a second time; without resumption the answer has no id.
async fn enable_rules(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice"]).await;
    let mut c = Client::secure(&s).await;
    assert!(c.features.as_ref().unwrap().get_child("sm", SM).is_none(), "offered before authentication");
    c.send(&format!("<enable xmlns='{SM}'/>")).await;
    let failed = c.expect("failed", |e| is_sm(e, "failed")).await;
    assert!(failed.get_child("unexpected-request", STANZAS).is_some(), "{}", show(&failed));
    c.auth_scram_sha256("alice", "pw").await.unwrap();
    assert!(c.features.as_ref().unwrap().get_child("sm", SM).is_some(), "{}", show(c.features.as_ref().unwrap()));
    // Authenticated but not bound.
    c.send(&format!("<enable xmlns='{SM}'/>")).await;
    let failed = c.expect("failed", |e| is_sm(e, "failed")).await;
    assert!(failed.get_child("unexpected-request", STANZAS).is_some(), "{}", show(&failed));
    c.bind("r").await;
    let enabled = enable(&mut c, false).await;
    assert_eq!(enabled.attr("id"), None);
    assert_eq!(enabled.attr("resume"), None);
    c.send(&format!("<enable xmlns='{SM}'/>")).await;
    let failed = c.expect("failed", |e| is_sm(e, "failed")).await;
    assert!(failed.get_child("unexpected-request", STANZAS).is_some(), "{}", show(&failed));
    // Still usable.
    let pong = c.request("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>").await;
    assert_eq!(pong.attr("type"), Some("result"));
}

/// §4, the example: a message, `<r/>`, `<a h='1'/>`. Every stanza counts (an IQ, a
/// presence, a rejected one), no nonza does; the server asks for acks of what it sends
/// and takes `<a/>` from the client.
async fn acks_both_ways(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["laurence", "juliet"]).await;
    let mut laurence = s.login("laurence", "churchyard").await;
    let mut juliet = s.login("juliet", "balcony").await;
    juliet.available().await;
    enable(&mut laurence, false).await;
    assert_eq!(ack_of(&mut laurence).await, 0);
    laurence
        .send("<message to='juliet@localhost' xml:lang='en'><body>I'll send a friar with speed, to Mantua</body></message>")
        .await;
    assert_eq!(ack_of(&mut laurence).await, 1);
    let m = juliet.expect_kind("message").await;
    assert_eq!(body(&m), "I'll send a friar with speed, to Mantua");
    laurence.request("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>").await;
    laurence.send("<presence/>").await;
    // A stanza answered with an error is handled too.
    laurence.send("<message to='nobody@localhost' type='chat'><body>x</body></message>").await;
    laurence.expect("error", |e| e.attr("type") == Some("error")).await;
    assert_eq!(ack_of(&mut laurence).await, 4);

    // Server to client: what we get is counted, and the server asks for an ack.
    juliet.send("<message to='laurence@localhost/churchyard' type='chat'><body>one</body></message>").await;
    let m = laurence.expect("the message", |e| e.name() == "message" && body(e) == "one").await;
    assert_eq!(m.attr("from"), Some("juliet@localhost/balcony"));
    laurence.expect("a request for an ack", |e| is_sm(e, "r")).await;
    laurence.send(&format!("<a xmlns='{SM}' h='3'/>")).await;
    // IQ result, own presence, error, message: four sent; acking three is fine, and then four.
    laurence.send(&format!("<a xmlns='{SM}' h='4'/>")).await;
    let pong = laurence.request("<iq type='get' id='p2'><ping xmlns='urn:xmpp:ping'/></iq>").await;
    assert_eq!(pong.attr("type"), Some("result"));
}

/// §5 Error Handling: acknowledging more than was sent is a stream error with
/// `<handled-count-too-high/>`, as in the example.
async fn handled_count_too_high(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice"]).await;
    let mut c = s.login("alice", "r").await;
    enable(&mut c, false).await;
    c.request("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>").await;
    c.send(&format!("<a xmlns='{SM}' h='10'/>")).await;
    let error = c.expect("the stream error", |e| e.name() == "error").await;
    assert!(error.get_child("undefined-condition", "urn:ietf:params:xml:ns:xmpp-streams").is_some(), "{}", show(&error));
    let too_high = error.get_child("handled-count-too-high", SM).expect("handled-count-too-high");
    assert_eq!(too_high.attr("h"), Some("10"));
    assert_eq!(too_high.attr("send-count"), Some("1"));
    assert_eq!(c.expect_stream_error().await, None);
}

/// §5: a lost connection is resumed on a new one, in one round trip after
/// authentication; what the client had not acknowledged comes again with its original
/// time, what arrived meanwhile follows, and the counts carry over. The session stayed
/// available to contacts the whole time.
async fn resumption(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["romeo", "juliet"]).await;
    let mut romeo = s.login("romeo", "orchard").await;
    let mut juliet = s.login("juliet", "balcony").await;
    romeo.available().await;
    juliet.available().await;
    befriend(&mut romeo, &mut juliet).await;
    let enabled = enable(&mut romeo, true).await;
    let previd = enabled.attr("id").expect("an SM-ID").to_string();
    assert_eq!(enabled.attr("resume"), Some("true"));
    assert_eq!(enabled.attr("max"), Some("300"));

    juliet.send("<message to='romeo@localhost' type='chat' id='m1'><body>first</body></message>").await;
    romeo.expect("first", |e| body(e) == "first").await;
    romeo.send(&format!("<a xmlns='{SM}' h='1'/>")).await;
    juliet.send("<message to='romeo@localhost' type='chat' id='m2'><body>second</body></message>").await;
    romeo.expect("second", |e| body(e) == "second").await;
    romeo.send("<message to='juliet@localhost' type='chat' id='r1'><body>mine</body></message>").await;
    juliet.expect("mine", |e| body(e) == "mine").await;
    // The connection dies without a word; romeo got "second" but did not acknowledge it.
    drop(romeo);
    tokio::time::sleep(Duration::from_millis(200)).await;
    juliet.send("<message to='romeo@localhost' type='chat' id='m3'><body>third</body></message>").await;
    // Contacts do not see romeo go.
    juliet.expect_silence(Duration::from_millis(300)).await;

    let mut romeo = reconnect(&s, "romeo").await;
    let resumed = resume(&mut romeo, &previd, 1).await;
    assert!(is_sm(&resumed, "resumed"), "{}", show(&resumed));
    assert_eq!(resumed.attr("previd"), Some(previd.as_str()));
    assert_eq!(resumed.attr("h"), Some("1"), "romeo sent one stanza");
    let second = romeo.expect_kind("message").await;
    assert_eq!(body(&second), "second");
    let delay = second.get_child("delay", "urn:xmpp:delay").expect("sent again with its original time");
    assert_eq!(delay.attr("from"), Some("localhost"));
    let third = romeo.expect_kind("message").await;
    assert_eq!(body(&third), "third");
    // Both carried over: the server counts on from 1, and so do we.
    romeo.send("<message to='juliet@localhost' type='chat' id='r2'><body>back</body></message>").await;
    juliet.expect("back", |e| body(e) == "back").await;
    assert_eq!(ack_of(&mut romeo).await, 2);
    romeo.send(&format!("<a xmlns='{SM}' h='3'/>")).await;
    let pong = romeo.request("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>").await;
    assert_eq!(pong.attr("type"), Some("result"));
    // Presence was kept: juliet probing gets romeo's.
    assert!(s.server().core().sessions.has_available(&jid::BareJid::new("romeo@localhost").unwrap()));
    juliet.expect_silence(Duration::from_millis(200)).await;
}

/// §5: resuming while the old connection is still open closes that one with `<conflict/>`.
async fn resumption_replaces_an_open_connection(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["romeo", "juliet"]).await;
    let mut old = s.login("romeo", "orchard").await;
    let mut juliet = s.login("juliet", "balcony").await;
    let previd = enable(&mut old, true).await.attr("id").unwrap().to_string();
    juliet.send("<message to='romeo@localhost/orchard' type='chat'><body>hello</body></message>").await;
    old.expect("hello", |e| body(e) == "hello").await;

    let mut new = reconnect(&s, "romeo").await;
    let resumed = resume(&mut new, &previd, 0).await;
    assert!(is_sm(&resumed, "resumed"), "{}", show(&resumed));
    assert_eq!(old.expect_stream_error().await.as_deref(), Some("conflict"));
    let again = new.expect_kind("message").await;
    assert_eq!(body(&again), "hello");
    juliet.send("<message to='romeo@localhost/orchard' type='chat'><body>after</body></message>").await;
    new.expect("after", |e| body(e) == "after").await;
}

/// §5: an unknown SM-ID, another account's, or an `h` beyond what was sent: `<failed/>`
/// with item-not-found, after which the client can still bind on the same stream.
async fn failed_resumption(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["romeo", "mallory"]).await;
    let mut romeo = s.login("romeo", "orchard").await;
    let previd = enable(&mut romeo, true).await.attr("id").unwrap().to_string();

    let mut c = reconnect(&s, "romeo").await;
    let failed = resume(&mut c, "no-such-session", 0).await;
    assert!(is_sm(&failed, "failed"), "{}", show(&failed));
    assert!(failed.get_child("item-not-found", STANZAS).is_some(), "{}", show(&failed));
    let jid = c.bind("other").await;
    assert_eq!(jid, "romeo@localhost/other");

    // Mallory knows romeo's SM-ID: no use to her.
    let mut mallory = reconnect(&s, "mallory").await;
    let failed = resume(&mut mallory, &previd, 0).await;
    assert!(failed.get_child("item-not-found", STANZAS).is_some(), "{}", show(&failed));
    // Romeo's session was not touched.
    let pong = romeo.request("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>").await;
    assert_eq!(pong.attr("type"), Some("result"));
    // A resumption that acknowledges more than was sent is a stream error for the new
    // connection; the session carries on.
    let mut c = reconnect(&s, "romeo").await;
    c.send(&format!("<resume xmlns='{SM}' previd='{previd}' h='5'/>")).await;
    let error = c.expect("the stream error", |e| e.name() == "error").await;
    let too_high = error.get_child("handled-count-too-high", SM).expect("handled-count-too-high");
    assert_eq!(too_high.attr("send-count"), Some("1"));
    // Resumption of a bound stream is refused.
    romeo.send(&format!("<resume xmlns='{SM}' previd='{previd}' h='0'/>")).await;
    let failed = romeo.expect("failed", |e| is_sm(e, "failed")).await;
    assert!(failed.get_child("unexpected-request", STANZAS).is_some(), "{}", show(&failed));
}

/// §4 and the issue: a session not resumed in time ends; what the client had not
/// acknowledged goes where it would have gone had it never been delivered (here: offline
/// storage, with the original time), contacts see it go only then, and a late `<resume/>`
/// learns how many stanzas the server handled.
async fn not_resumed_in_time(b: Backend) {
    let s = TestServer::start_with(b, |c| c.c2s.resume_timeout = 1).await;
    s.users(&["romeo", "juliet"]).await;
    let mut romeo = s.login("romeo", "orchard").await;
    let mut juliet = s.login("juliet", "balcony").await;
    romeo.available().await;
    juliet.available().await;
    befriend(&mut romeo, &mut juliet).await;
    let enabled = enable(&mut romeo, true).await;
    assert_eq!(enabled.attr("max"), Some("1"));
    let previd = enabled.attr("id").unwrap().to_string();
    romeo.send("<message to='juliet@localhost' type='chat'><body>r1</body></message>").await;
    juliet.expect("r1", |e| body(e) == "r1").await;
    juliet.send("<message to='romeo@localhost' type='chat' id='lost'><body>unacked</body></message>").await;
    romeo.expect("unacked", |e| body(e) == "unacked").await;
    drop(romeo);
    // Unavailable only once the timeout has passed.
    let started = std::time::Instant::now();
    let gone = juliet.expect("romeo unavailable", |e| e.name() == "presence" && e.attr("type") == Some("unavailable")).await;
    assert_eq!(gone.attr("from"), Some("romeo@localhost/orchard"));
    assert!(started.elapsed() >= Duration::from_millis(700), "went unavailable after {:?}", started.elapsed());

    let mut late = reconnect(&s, "romeo").await;
    let failed = resume(&mut late, &previd, 0).await;
    assert!(failed.get_child("item-not-found", STANZAS).is_some(), "{}", show(&failed));
    assert_eq!(failed.attr("h"), Some("1"), "the server handled one stanza of romeo's");
    late.bind("orchard").await;
    late.send("<presence/>").await;
    let m = late.expect("the unacknowledged message", |e| e.name() == "message" && body(e) == "unacked").await;
    assert_eq!(m.attr("id"), Some("lost"));
    assert!(m.get_child("delay", "urn:xmpp:delay").is_some(), "{}", show(&m));
}

/// Not resumed, with another resource online: the unacknowledged message goes there.
async fn unacked_go_to_other_resources(b: Backend) {
    let s = TestServer::start_with(b, |c| c.c2s.resume_timeout = 1).await;
    s.users(&["romeo", "juliet"]).await;
    let mut phone = s.login("romeo", "phone").await;
    let mut desktop = s.login("romeo", "desktop").await;
    let mut juliet = s.login("juliet", "balcony").await;
    phone.available().await;
    enable(&mut phone, true).await;
    juliet.send("<message to='romeo@localhost/phone' type='chat'><body>for the phone</body></message>").await;
    phone.expect("it", |e| body(e) == "for the phone").await;
    drop(phone);
    desktop.send("<presence/>").await;
    let m = desktop.expect("the phone's message", |e| e.name() == "message" && body(e) == "for the phone").await;
    assert!(m.get_child("delay", "urn:xmpp:delay").is_some(), "{}", show(&m));
}

/// An acknowledgement is a promise: once the client has `<a h/>` for a message that went
/// to offline storage, the message is in the database.
async fn ack_waits_for_the_offline_store(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "r").await;
    enable(&mut alice, false).await;
    let bob = jid::BareJid::new("bob@localhost").unwrap();
    for round in 1..=20u32 {
        alice.send(&format!("<message to='bob@localhost' type='chat'><body>m{round}</body></message>")).await;
        // The answer to `<r/>` waits for the commit of what came before it, and covers it:
        // one `<a/>`, not one that leaves the message out and another.
        alice.send(&format!("<r xmlns='{SM}'/>")).await;
        let a = alice.expect("an ack", |e| is_sm(e, "a")).await;
        assert_eq!(a.attr("h"), Some(round.to_string().as_str()), "{}", show(&a));
        let stored = s.server().core().db.offline().count(&bob).await.unwrap();
        assert_eq!(stored, i64::from(round), "acked before it was stored");
    }
}

/// XEP-0198 `max_unacked`: a client that does not acknowledge gets no more than that
/// until it does; nothing is lost.
async fn unacked_limit(b: Backend) {
    let s = TestServer::start_with(b, |c| c.c2s.max_unacked = 16).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "r").await;
    let mut bob = s.login("bob", "r").await;
    alice.available().await;
    enable(&mut alice, false).await;
    for i in 0..40 {
        bob.send(&format!("<message to='alice@localhost/r' type='chat'><body>{i}</body></message>")).await;
    }
    let mut got = Vec::new();
    for _ in 0..16 {
        got.push(body(&alice.expect_kind("message").await));
    }
    // Only the server's request for an ack may come meanwhile.
    alice.pending.retain(|e| !is_sm(e, "r"));
    while let Ok(got) = tokio::time::timeout(Duration::from_millis(600), alice.read()).await {
        match got {
            crate::common::client::Got::Element(el) => assert!(is_sm(&el, "r"), "more than max_unacked: {}", show(&el)),
            other => panic!("{other:?}"),
        }
    }
    alice.send(&format!("<a xmlns='{SM}' h='16'/>")).await;
    for _ in 16..32 {
        got.push(body(&alice.expect_kind("message").await));
    }
    alice.send(&format!("<a xmlns='{SM}' h='32'/>")).await;
    for _ in 32..40 {
        got.push(body(&alice.expect_kind("message").await));
    }
    let want: Vec<String> = (0..40).map(|i| i.to_string()).collect();
    assert_eq!(got, want);
}

/// Bad input: `<a/>` without a number, and unknown elements in the namespace.
async fn malformed_elements(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice"]).await;
    let mut c = s.login("alice", "r").await;
    enable(&mut c, false).await;
    c.send(&format!("<a xmlns='{SM}' h='many'/>")).await;
    assert_eq!(c.expect_stream_error().await.as_deref(), Some("bad-format"));
    let mut c = reconnect(&s, "alice").await;
    c.send(&format!("<resume xmlns='{SM}' h='x' previd='y'/>")).await;
    let failed = c.expect("failed", |e| is_sm(e, "failed")).await;
    assert!(failed.get_child("bad-request", STANZAS).is_some(), "{}", show(&failed));
    c.bind("r").await;
}

db_tests!(
    enable_rules,
    acks_both_ways,
    handled_count_too_high,
    resumption,
    resumption_replaces_an_open_connection,
    failed_resumption,
    not_resumed_in_time,
    unacked_go_to_other_resources,
    ack_waits_for_the_offline_store,
    unacked_limit,
    malformed_elements,
);
