//! RFC 6120 streams: headers, features, STARTTLS, direct TLS, binding, closing.

use std::time::Duration;

use crate::common::client::{CLIENT, STREAMS, show};
use crate::common::{Backend, Client, DOMAIN, TestServer};
use crate::db_tests;

async fn starttls_is_required_before_auth(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = Client::tcp(&s).await;
    let features = c.open(DOMAIN).await;
    let starttls = features.get_child("starttls", "urn:ietf:params:xml:ns:xmpp-tls").expect("STARTTLS offered");
    assert!(starttls.has_child("required", "urn:ietf:params:xml:ns:xmpp-tls"));
    assert!(!features.has_child("mechanisms", crate::common::client::SASL), "no SASL before TLS: {}", show(&features));
    // Trying anyway gets <encryption-required/>.
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>").await;
    let failure = c.next().await;
    assert!(failure.is("failure", crate::common::client::SASL));
    assert!(failure.has_child("encryption-required", crate::common::client::SASL), "{}", show(&failure));
    s.stop().await;
}

async fn features_after_tls_and_after_auth(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice"]).await;
    let mut c = Client::secure(&s).await;
    let features = c.features.clone().unwrap();
    let mechanisms: Vec<String> = features
        .get_child("mechanisms", crate::common::client::SASL)
        .unwrap()
        .children()
        .map(|m| m.text())
        .collect();
    assert_eq!(mechanisms, ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]);
    // XEP-0440 channel-binding types.
    let cb = features.get_child("sasl-channel-binding", "urn:xmpp:sasl-cb:0").expect("XEP-0440");
    let types: Vec<&str> = cb.children().filter_map(|c| c.attr("type")).collect();
    assert_eq!(types, ["tls-exporter", "tls-server-end-point"]);
    assert!(!features.has_child("starttls", "urn:ietf:params:xml:ns:xmpp-tls"));
    c.auth_scram_sha256("alice", "pw").await.unwrap();
    let features = c.features.clone().unwrap();
    assert!(features.has_child("bind", "urn:ietf:params:xml:ns:xmpp-bind"));
    assert!(features.has_child("ver", "urn:xmpp:features:rosterver"));
    let session = features.get_child("session", "urn:ietf:params:xml:ns:xmpp-session").unwrap();
    assert!(session.has_child("optional", "urn:ietf:params:xml:ns:xmpp-session"));
    let caps = features.get_child("c", "http://jabber.org/protocol/caps").expect("XEP-0115 caps");
    assert_eq!(caps.attr("hash"), Some("sha-1"));
    assert!(caps.attr("ver").is_some_and(|v| v.len() == 28), "{}", show(caps));
    s.stop().await;
}

async fn direct_tls_login(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice"]).await;
    let mut c = Client::direct_tls(&s).await;
    let features = c.open(DOMAIN).await;
    assert!(features.has_child("mechanisms", crate::common::client::SASL));
    c.auth_scram_sha256("alice", "pw").await.unwrap();
    assert_eq!(c.bind("phone").await, "alice@localhost/phone");
    s.stop().await;
}

async fn binding_resources(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice"]).await;
    let mut c = Client::secure(&s).await;
    c.auth_scram_sha256("alice", "pw").await.unwrap();
    // Stanzas before binding are refused with a stream error.
    c.send("<message to='alice@localhost'><body>x</body></message>").await;
    assert_eq!(c.expect_stream_error().await.as_deref(), Some("not-authorized"));

    // A server-generated resource.
    let mut c = Client::secure(&s).await;
    c.auth_scram_sha256("alice", "pw").await.unwrap();
    let jid = c.bind("").await;
    assert!(jid.starts_with("alice@localhost/") && jid.len() > "alice@localhost/".len(), "{jid}");

    // A resource that resourceprep refuses.
    let mut c = Client::secure(&s).await;
    c.auth_scram_sha256("alice", "pw").await.unwrap();
    let reply = c.request("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>a\u{E000}b</resource></bind></iq>").await;
    assert_eq!(reply.attr("type"), Some("error"));
    assert_eq!(crate::common::client::condition(&reply), "bad-request");
    s.stop().await;
}

/// A second session with the same full JID replaces the first, which gets <conflict/>.
async fn same_resource_replaces_old_session(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut bob = s.login("bob", "x").await;
    bob.available().await;
    let mut first = s.login("alice", "desk").await;
    first.available().await;
    first.send("<presence to='bob@localhost'/>").await;
    bob.expect("directed presence", |e| e.name() == "presence" && e.attr("from") == Some("alice@localhost/desk")).await;
    let mut second = s.login("alice", "desk").await;
    assert_eq!(first.expect_stream_error().await.as_deref(), Some("conflict"));
    // The replaced session ended like any other: bob saw it go.
    bob.expect("unavailable", |e| e.attr("type") == Some("unavailable") && e.attr("from") == Some("alice@localhost/desk")).await;
    // The new session works.
    second.available().await;
    bob.send("<message to='alice@localhost/desk' type='chat' id='m1'><body>still there?</body></message>").await;
    let m = second.expect_kind("message").await;
    assert_eq!(m.get_child("body", CLIENT).unwrap().text(), "still there?");
    s.stop().await;
}

async fn resource_limit(b: Backend) {
    let s = TestServer::start_with(b, |c| c.c2s.max_resources = 2).await;
    s.users(&["alice"]).await;
    let _a = s.login("alice", "1").await;
    let _b = s.login("alice", "2").await;
    let mut c = Client::secure(&s).await;
    c.auth_scram_sha256("alice", "pw").await.unwrap();
    let reply = c.request("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>3</resource></bind></iq>").await;
    assert_eq!(crate::common::client::condition(&reply), "resource-constraint");
    assert!(reply.get_child("error", CLIENT).unwrap().has_child("resource-limit-exceeded", "urn:xmpp:errors"));
    s.stop().await;
}

async fn header_errors(b: Backend) {
    let s = TestServer::start(b).await;
    let cases = [
        // Unknown domain.
        ("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='nowhere.example' version='1.0'>", "host-unknown"),
        // Wrong content namespace.
        ("<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>", "invalid-namespace"),
        // Wrong stream namespace.
        ("<stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong' to='localhost' version='1.0'>", "invalid-namespace"),
        // Old or missing version.
        ("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost'>", "unsupported-version"),
        ("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='2.0'>", "unsupported-version"),
        // Not XML at all. (A lone `<'` would wait for its closing quote: a streaming parser
        // cannot know yet, so the tests use markup that is complete.)
        ("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'><'a'/>", "not-well-formed"),
        // A DTD.
        ("<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]><stream:stream>", "restricted-xml"),
    ];
    for (header, expected) in cases {
        let mut c = Client::tcp(&s).await;
        c.send(header).await;
        let got = tokio::time::timeout(Duration::from_secs(5), c.expect_stream_error()).await.unwrap_or_else(|_| panic!("no stream error for {header}"));
        assert_eq!(got.as_deref(), Some(expected), "for {header}");
    }
    s.stop().await;
}

async fn orderly_close(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice"]).await;
    let mut c = s.login("alice", "r").await;
    c.send("</stream:stream>").await;
    // The server answers with its own closing tag, then closes.
    match tokio::time::timeout(Duration::from_secs(5), c.read()).await.unwrap() {
        crate::common::client::Got::Closed => {}
        other => panic!("expected the closing tag, got {other:?}"),
    }
    let _ = STREAMS;
    s.stop().await;
}

/// RFC 3921 session establishment still answers, for old clients.
async fn legacy_session(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice"]).await;
    let mut c = s.login("alice", "old").await;
    let r = c.request("<iq type='set' id='sess'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    s.stop().await;
}

/// Whitespace between stanzas is a keep-alive (RFC 6120 §4.6.1): it counts as activity, so
/// the server does not ping a client that sends it.
async fn whitespace_keepalives(b: Backend) {
    let s = TestServer::start_with(b, |c| c.c2s.ping_interval = 1).await;
    s.users(&["alice"]).await;
    let mut c = s.login("alice", "ka").await;
    for _ in 0..10 {
        c.send(" ").await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    c.expect_silence(Duration::from_millis(10)).await;
    c.send("\n\t ").await;
    let r = c.request("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>").await;
    assert_eq!(r.attr("type"), Some("result"));
    s.stop().await;
}

db_tests!(
    legacy_session,
    whitespace_keepalives,
    starttls_is_required_before_auth,
    features_after_tls_and_after_auth,
    direct_tls_login,
    binding_resources,
    same_resource_replaces_old_session,
    resource_limit,
    header_errors,
    orderly_close,
);

/// Issue 10 defect 11: a self-closed stream header is a whole (empty) stream; the server
/// answers it with its own stream and the closing of it at once, instead of waiting for the
/// authentication timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_closed_stream_header_is_closed_at_once() {
    let s = TestServer::start(Backend::Sqlite).await;
    let mut c = Client::tcp(&s).await;
    let started = std::time::Instant::now();
    c.send(&format!("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='{STREAMS}' to='localhost' version='1.0'/>")).await;
    let mut seen = Vec::new();
    loop {
        match c.read().await {
            crate::common::client::Got::Closed | crate::common::client::Got::Eof => break,
            other => seen.push(format!("{other:?}")),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(2), "closed after {:?}", started.elapsed());
    assert!(seen.first().is_some_and(|h| h.starts_with("Header")), "{seen:?}");
    s.stop().await;
}

/// RFC 6120 §4.9.1.2: a stream error on a stream we have not answered yet comes after our
/// header. A client that never opens the stream restarted after STARTTLS gets, at the
/// authentication timeout, a header and then `<connection-timeout/>`: without the header,
/// the `stream:` prefix of the error would not even be bound on the new stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_on_a_restarted_stream_comes_after_a_header() {
    let s = TestServer::start_with(Backend::Sqlite, |c| c.c2s.auth_timeout = 2).await;
    let mut c = Client::tcp(&s).await;
    c.open(DOMAIN).await;
    c.starttls_without_restart().await;
    let mut seen = Vec::new();
    loop {
        match c.read().await {
            crate::common::client::Got::Closed | crate::common::client::Got::Eof => break,
            crate::common::client::Got::Header(_) => seen.push("header".to_string()),
            crate::common::client::Got::Element(el) => seen.push(show(&el).to_string()),
        }
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0], "header");
    assert!(seen[1].contains("connection-timeout"), "{seen:?}");
    s.stop().await;
}
