//! The receiving server's rules for what comes in on a server-to-server stream (RFC 6120
//! §4.7-§4.9, §5.3.1, §8.1.1.2, §13.1-§13.3), spoken raw by a peer that authenticates with
//! SASL EXTERNAL (a certificate from a CA the server trusts): a stream for a domain the
//! server does not serve, stanzas before authentication, a stanza whose `from` is not the
//! authenticated domain or is missing, one without `to` or to a domain not served here, and
//! one to a malformed address, which gets a stanza error while the stream goes on. Every
//! stream error carries a text that says what was wrong.
//!
//! Storage plays no part here: SQLite only.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::client::show;
use crate::common::{Backend, TestServer};
use crate::s2s::{addr, read_until};
use crate::s2s_certs::{Pki, header, raw_stream};
use starling::config::CertPaths;

/// A server for `localhost` whose s2s port trusts `pki`'s CA, with alice online.
async fn server(pki: &Pki) -> (TestServer, u16, crate::common::client::Client) {
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.s2s.listen = vec![addr(0)];
        c.s2s.ca_file = Some(pki.ca_file());
    })
    .await;
    server.users(&["alice"]).await;
    let mut alice = server.login("alice", "a").await;
    alice.available().await;
    let port = server.server().s2s_addrs()[0].port();
    (server, port, alice)
}

/// A stream from c.example after TLS and SASL EXTERNAL, restarted: stanzas may flow.
async fn authenticated(port: u16, cert: &CertPaths) -> tokio_rustls::client::TlsStream<TcpStream> {
    let (mut tls, features) = raw_stream(port, "c.example", cert).await;
    assert!(features.contains("<mechanism>EXTERNAL</mechanism>"), "{features}");
    let mut seen = String::new();
    tls.write_all(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>").await.unwrap();
    assert!(read_until(&mut tls, &mut seen, "<success").await, "{seen}");
    tls.write_all(header("c.example").as_bytes()).await.unwrap();
    let mut seen = String::new();
    assert!(read_until(&mut tls, &mut seen, "</stream:features>").await, "{seen}");
    tls
}

/// Send `bytes` and read until the stream ends: what the server sent last.
async fn ends_with<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(tls: &mut S, bytes: &str) -> String {
    tls.write_all(bytes.as_bytes()).await.unwrap();
    let mut seen = String::new();
    assert!(read_until(tls, &mut seen, "</stream:stream>").await, "the stream should end: {seen}");
    seen
}

/// The condition and the text of the stream error in `seen`.
fn stream_error(seen: &str) -> (String, String) {
    let start = seen.find("<stream:error").unwrap_or_else(|| panic!("no stream error in {seen}"));
    let end = seen[start..].find("</stream:error>").map(|e| start + e + "</stream:error>".len()).unwrap_or_else(|| panic!("{seen}"));
    let xml = seen[start..end].replacen("<stream:error>", "<stream:error xmlns:stream='http://etherx.jabber.org/streams'>", 1);
    let el: minidom::Element = xml.parse().unwrap_or_else(|e| panic!("{e}: {xml}"));
    let condition = el.children().find(|c| c.ns() == "urn:ietf:params:xml:ns:xmpp-streams" && c.name() != "text").map(|c| c.name().to_string()).unwrap_or_default();
    let text = el.get_child("text", "urn:ietf:params:xml:ns:xmpp-streams").map(|t| t.text()).unwrap_or_default();
    (condition, text)
}

/// RFC 6120 §4.9.3.6: a stream to a domain this server does not serve is `host-unknown`,
/// after a response header (§4.9.1.2); the stream in the client namespace is
/// `invalid-namespace` (§4.9.3.10); with TLS required, dialback before TLS is a
/// `policy-violation` (§5.3.1), and the features before TLS offer only STARTTLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_refused_before_authentication() {
    let pki = Pki::new();
    let (server, port, _alice) = server(&pki).await;
    let open = |from: &str, to: &str, ns: &str| {
        format!("<?xml version='1.0'?><stream:stream xmlns='{ns}' xmlns:stream='http://etherx.jabber.org/streams' from='{from}' to='{to}' version='1.0'>")
    };

    let mut tcp = TcpStream::connect(addr(port)).await.unwrap();
    let seen = ends_with(&mut tcp, &open("c.example", "nowhere.example", "jabber:server")).await;
    assert!(seen.contains("<stream:stream"), "a response header first: {seen}");
    let (condition, text) = stream_error(&seen);
    assert_eq!(condition, "host-unknown", "{seen}");
    assert!(text.contains("nowhere.example"), "{text}");

    let mut tcp = TcpStream::connect(addr(port)).await.unwrap();
    let seen = ends_with(&mut tcp, &open("c.example", "localhost", "jabber:client")).await;
    let (condition, text) = stream_error(&seen);
    assert_eq!(condition, "invalid-namespace", "{seen}");
    assert!(text.contains("jabber:server"), "{text}");

    let mut tcp = TcpStream::connect(addr(port)).await.unwrap();
    tcp.write_all(open("c.example", "localhost", "jabber:server").as_bytes()).await.unwrap();
    let mut seen = String::new();
    assert!(read_until(&mut tcp, &mut seen, "</stream:features>").await, "{seen}");
    assert!(seen.contains("<required"), "STARTTLS is required: {seen}");
    assert!(!seen.contains("urn:xmpp:features:dialback") && !seen.contains("mechanism"), "nothing but TLS before TLS: {seen}");
    let seen = ends_with(&mut tcp, "<db:result xmlns:db='jabber:server:dialback' from='c.example' to='localhost'>abcdef</db:result>").await;
    let (condition, text) = stream_error(&seen);
    assert_eq!(condition, "policy-violation", "{seen}");
    assert!(text.contains("TLS"), "{text}");
    server.stop().await;
}

/// RFC 6120 §13 and §4.9.3.12: stanzas before any domain is authenticated on the stream
/// end it with `not-authorized`, and go nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stanzas_before_authentication_are_not_authorized() {
    let pki = Pki::new();
    let c_cert = pki.issue("c", &["c.example"]);
    let (server, port, mut alice) = server(&pki).await;
    let (mut tls, _) = raw_stream(port, "c.example", &c_cert).await;
    let seen = ends_with(&mut tls, "<message from='carol@c.example' to='alice@localhost' type='chat'><body>too early</body></message>").await;
    let (condition, text) = stream_error(&seen);
    assert_eq!(condition, "not-authorized", "{seen}");
    assert!(!text.is_empty(), "{seen}");
    alice.expect_silence(Duration::from_millis(300)).await;
    server.stop().await;
}

/// RFC 6120 §8.1.1.2, §8.1.2.1 and §13.1-§13.3 on an authenticated stream: each bad stanza
/// ends its stream with the condition for what is wrong, with a text, and goes nowhere;
/// a malformed `to` is only that stanza's error (`jid-malformed`, §8.3.3.8), and the stream
/// goes on to carry the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addressing_on_an_authenticated_stream() {
    let pki = Pki::new();
    let c_cert = pki.issue("c", &["c.example"]);
    let (server, port, mut alice) = server(&pki).await;
    let cases = [
        // Another domain than the one authenticated.
        ("<message from='eve@d.example' to='alice@localhost' type='chat'><body>x</body></message>", "invalid-from", "d.example"),
        // A subdomain is another domain.
        ("<message from='eve@sub.c.example' to='alice@localhost' type='chat'><body>x</body></message>", "invalid-from", "sub.c.example"),
        // No from: a server must stamp it (§8.1.2.1).
        ("<message to='alice@localhost' type='chat'><body>x</body></message>", "invalid-from", "from"),
        // No to: a server-to-server stanza must name its recipient (§8.1.1.2).
        ("<message from='carol@c.example' type='chat'><body>x</body></message>", "improper-addressing", "to"),
        // To a domain this server does not serve.
        ("<message from='carol@c.example' to='bob@elsewhere.example' type='chat'><body>x</body></message>", "host-unknown", "elsewhere.example"),
    ];
    for (stanza, want, in_text) in cases {
        let mut tls = authenticated(port, &c_cert).await;
        let seen = ends_with(&mut tls, stanza).await;
        let (condition, text) = stream_error(&seen);
        assert_eq!(condition, want, "{stanza}: {seen}");
        assert!(text.contains(in_text), "{stanza}: the text says what was wrong: {text}");
    }
    alice.expect_silence(Duration::from_millis(300)).await;

    let mut tls = authenticated(port, &c_cert).await;
    // The error goes back to c.example, which has no server here to take it: not seen; the
    // stream must stay open and take the next stanza.
    tls.write_all(b"<message from='carol@c.example/x' to='alice@@localhost' type='chat' id='m1'><body>malformed</body></message>").await.unwrap();
    tls.write_all(b"<message from='carol@c.example/x' to='alice@localhost' type='chat' id='m2'><body>fine</body></message>").await.unwrap();
    let m = alice.expect("the well-addressed message", |e| e.name() == "message").await;
    assert_eq!(m.attr("id"), Some("m2"), "{}", show(&m));
    assert_eq!(m.attr("from"), Some("carol@c.example/x"), "{}", show(&m));
    server.stop().await;
}

/// XEP-0368 between two Starling servers: b.example listens with TLS from the first byte
/// (`[s2s] listen_tls`) and only there; a.example reaches it through a `tls:` target. Chat
/// goes both ways (b.example's link back uses STARTTLS on a.example's ordinary listener).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_between_servers() {
    let b_tls_port = crate::s2s::free_port();
    let p = crate::s2s::pair_with(
        Backend::Sqlite,
        |c| {
            c.s2s.targets.insert(crate::s2s::B.into(), vec![format!("tls:127.0.0.1:{b_tls_port}")]);
        },
        |c| {
            c.s2s.listen = vec![];
            c.s2s.listen_tls = vec![addr(b_tls_port)];
        },
    )
    .await;
    crate::s2s_certs::chat_both_ways(&p).await;
    p.stop().await;
}

/// XEP-0220 §2.2.1 on a stream that already carries stanzas (one pair authenticated by
/// SASL EXTERNAL, a second one asked for by dialback): the authoritative server's verdict
/// arrives while a stanza is half read, and neither is lost: the stanza is delivered whole,
/// the verdict is answered, and the new pair's stanzas are taken. The authoritative server
/// of d.example is played here, on plain TCP (`require_encryption = false` on this server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdict_while_a_stanza_is_half_read() {
    let pki = Pki::new();
    let c_cert = pki.issue("c", &["c.example"]);
    let authoritative = tokio::net::TcpListener::bind(addr(0)).await.unwrap();
    let authoritative_port = authoritative.local_addr().unwrap().port();
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.s2s.listen = vec![addr(0)];
        c.s2s.ca_file = Some(pki.ca_file());
        c.s2s.require_encryption = false;
        c.s2s.targets.insert("d.example".into(), vec![format!("127.0.0.1:{authoritative_port}")]);
    })
    .await;
    server.users(&["alice"]).await;
    let mut alice = server.login("alice", "a").await;
    alice.available().await;
    let port = server.server().s2s_addrs()[0].port();

    let mut tls = authenticated(port, &c_cert).await;
    tls.write_all(b"<db:result xmlns:db='jabber:server:dialback' from='d.example' to='localhost'>0123456789abcdef</db:result>").await.unwrap();
    // The server asks d.example's authoritative server about the key.
    let (mut verify, _) = tokio::time::timeout(Duration::from_secs(10), authoritative.accept()).await.expect("the server asks the authoritative server").unwrap();
    let mut seen = String::new();
    assert!(read_until(&mut verify, &mut seen, "<stream:stream").await, "{seen}");
    verify
        .write_all(b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='d.example' to='localhost' id='auth1' version='1.0'><stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>")
        .await
        .unwrap();
    assert!(read_until(&mut verify, &mut seen, "</db:verify>").await, "{seen}");
    let id = seen.split("id='").nth(1).and_then(|r| r.split('\'').next()).unwrap_or_else(|| panic!("{seen}")).to_string();

    // Half a stanza on the main stream, read by the server (it waits for the rest)...
    tls.write_all(b"<message from='carol@c.example/x' to='alice@localhost' type='chat' id='half'><body>first ha").await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...then the verdict, then the rest of the stanza.
    verify.write_all(format!("<db:verify from='d.example' to='localhost' id='{id}' type='valid'/>").as_bytes()).await.unwrap();
    let mut seen = String::new();
    assert!(read_until(&mut tls, &mut seen, "type='valid'").await, "the verdict is answered: {seen}");
    assert!(seen.contains("from='localhost'") && seen.contains("to='d.example'"), "{seen}");
    tls.write_all(b"lf</body></message>").await.unwrap();
    let m = alice.expect("the message read in two halves", |e| e.name() == "message").await;
    assert_eq!(m.attr("id"), Some("half"), "{}", show(&m));
    assert_eq!(m.get_child("body", crate::common::client::CLIENT).map(|b| b.text()).as_deref(), Some("first half"), "{}", show(&m));
    // The new pair is authenticated on the stream.
    tls.write_all(b"<message from='dave@d.example/y' to='alice@localhost' type='chat' id='d1'><body>via dialback</body></message>").await.unwrap();
    let m = alice.expect("d.example's message", |e| e.name() == "message").await;
    assert_eq!(m.attr("from"), Some("dave@d.example/y"), "{}", show(&m));
    server.stop().await;
}
