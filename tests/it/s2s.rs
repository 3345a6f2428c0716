//! Federation between two Starling servers on loopback (RFC 6120 server-to-server streams,
//! STARTTLS, Server Dialback per XEP-0220): `localhost` on one, `b.example` on the other,
//! each told where the other listens by `[s2s.targets]` (no DNS here). The live tests against
//! Prosody and ejabberd are in `compat/federation/`.

use std::net::SocketAddr;
use std::time::Duration;

use minidom::Element;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::client::{CLIENT, Client, condition, show};
use crate::common::{Backend, TestServer};
use crate::db_tests;

pub(crate) const B: &str = "b.example";

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub(crate) fn addr(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

/// `localhost` (a) and `b.example` (b), federated.
pub(crate) struct Pair {
    pub a: TestServer,
    pub b: TestServer,
    pub a_port: u16,
}

/// The two servers, each told where the other listens: the ports are picked before either
/// starts, so one may be taken meanwhile by another test; then it is tried again.
pub(crate) async fn pair(backend: Backend, adjust_a: impl Fn(&mut starling::config::Config)) -> Pair {
    pair_with(backend, adjust_a, |_| {}).await
}

/// [`pair`], with settings for each server.
pub(crate) async fn pair_with(backend: Backend, adjust_a: impl Fn(&mut starling::config::Config), adjust_b: impl Fn(&mut starling::config::Config)) -> Pair {
    for _ in 0..5 {
        let (a_port, b_port, closed_port) = (free_port(), free_port(), free_port());
        let a = TestServer::try_start_with(backend, |c| {
            c.s2s.listen = vec![addr(a_port)];
            for domain in [B, "conference.b.example"] {
                c.s2s.targets.insert(domain.into(), vec![format!("127.0.0.1:{b_port}")]);
            }
            // Nothing listens there.
            c.s2s.targets.insert("down.example".into(), vec![format!("127.0.0.1:{closed_port}")]);
            c.s2s.connect_timeout = 10;
            adjust_a(c);
        })
        .await;
        let Ok(a) = a else { continue };
        let b = TestServer::try_start_with(backend, |c| {
            c.domains = vec![B.into()];
            c.s2s.listen = vec![addr(b_port)];
            for domain in ["localhost", "conference.localhost"] {
                c.s2s.targets.insert(domain.into(), vec![format!("127.0.0.1:{a_port}")]);
            }
            c.s2s.connect_timeout = 10;
            adjust_b(c);
        })
        .await;
        let Ok(b) = b else {
            a.stop().await;
            continue;
        };
        a.users(&["alice"]).await;
        b.add_user_at(B, "bob", "pw").await;
        return Pair { a, b, a_port };
    }
    panic!("no two free ports for the servers in five tries");
}

impl Pair {
    /// alice@localhost/a and bob@b.example/b, both available.
    pub async fn clients(&self) -> (Client, Client) {
        let mut alice = self.a.login("alice", "a").await;
        let mut bob = Client::login_at(&self.b, B, "bob", "pw", "b").await;
        alice.available().await;
        bob.available().await;
        (alice, bob)
    }

    pub async fn stop(self) {
        self.a.stop().await;
        self.b.stop().await;
    }
}

fn body(e: &Element) -> Option<String> {
    e.get_child("body", CLIENT).map(|b| b.text())
}

/// Messages both ways, to the bare and the full JID, with the sender's full JID as `from`
/// on the other side (RFC 6120 §8.1.2.1: stamped by the sender's server, kept across), and
/// a burst that arrives complete and in order.
async fn messages_both_ways(backend: Backend) {
    let p = pair(backend, |_| {}).await;
    let (mut alice, mut bob) = p.clients().await;
    alice.send("<message to='bob@b.example' type='chat' id='m1'><body>hello from a</body></message>").await;
    let m = bob.expect("alice's message", |e| e.name() == "message").await;
    assert_eq!(m.attr("from"), Some("alice@localhost/a"), "{}", show(&m));
    assert_eq!(m.attr("to"), Some("bob@b.example"), "{}", show(&m));
    assert_eq!((m.attr("type"), m.attr("id"), body(&m).as_deref()), (Some("chat"), Some("m1"), Some("hello from a")));

    bob.send("<message to='alice@localhost/a' type='chat' id='m2'><body>hello from b</body></message>").await;
    let m = alice.expect("bob's answer", |e| e.name() == "message").await;
    assert_eq!(m.attr("from"), Some("bob@b.example/b"), "{}", show(&m));
    assert_eq!(body(&m).as_deref(), Some("hello from b"));

    for i in 0..20 {
        alice.send(&format!("<message to='bob@b.example/b' type='chat' id='burst{i}'><body>{i}</body></message>")).await;
    }
    for i in 0..20 {
        let m = bob.expect("the burst", |e| e.name() == "message").await;
        assert_eq!(body(&m), Some(i.to_string()), "out of order: {}", show(&m));
    }
    p.stop().await;
}

/// RFC 6121 §8.5.1 across servers: a message to an account that does not exist on the other
/// server comes back as an error from that address.
async fn unknown_remote_user(backend: Backend) {
    let p = pair(backend, |_| {}).await;
    let (mut alice, _bob) = p.clients().await;
    alice.send("<message to='nobody@b.example' type='chat' id='u1'><body>anyone?</body></message>").await;
    let e = alice.expect("an error", |e| e.attr("id") == Some("u1")).await;
    assert_eq!(e.attr("type"), Some("error"), "{}", show(&e));
    assert_eq!(e.attr("from"), Some("nobody@b.example"), "{}", show(&e));
    assert_eq!(condition(&e), "service-unavailable", "{}", show(&e));
    p.stop().await;
}

/// RFC 6120 §10.4.3: a domain whose server cannot be reached: the stanza comes back with
/// remote-server-not-found and a text that says what failed; an IQ too.
async fn unreachable_server(backend: Backend) {
    let p = pair(backend, |_| {}).await;
    let (mut alice, _bob) = p.clients().await;
    alice.send("<message to='x@down.example' type='chat' id='d1'><body>hello?</body></message>").await;
    let e = alice.expect("an error", |e| e.attr("id") == Some("d1")).await;
    assert_eq!((e.attr("type"), e.attr("from")), (Some("error"), Some("x@down.example")), "{}", show(&e));
    assert_eq!(condition(&e), "remote-server-not-found", "{}", show(&e));
    let text = e.get_child("error", CLIENT).and_then(|er| er.get_child("text", "urn:ietf:params:xml:ns:xmpp-stanzas")).map(|t| t.text()).unwrap_or_default();
    assert!(text.contains("down.example"), "the error says what failed: {}", show(&e));
    let r = alice.request("<iq type='get' id='d2' to='down.example'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    assert_eq!(condition(&r), "remote-server-not-found", "{}", show(&r));
    p.stop().await;
}

/// Read until `want` appears in what the peer sent (bounded).
pub(crate) async fn read_until<S: tokio::io::AsyncRead + Unpin>(tcp: &mut S, seen: &mut String, want: &str) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    while !seen.contains(want) {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            _ => return false,
        }
    }
    true
}

/// XEP-0220 §2.2.1 and RFC 6120 §13: a peer that claims to be b.example with a key b.example
/// did not make is refused (the real b.example, asked, says invalid), and nothing it sends is
/// routed; a stanza before any dialback is not-authorized. (TLS is off on this server's side
/// so that the test can speak the raw protocol.)
async fn forged_dialback_refused(backend: Backend) {
    let p = pair(backend, |c| c.s2s.require_encryption = false).await;
    let mut alice = p.a.login("alice", "a").await;
    alice.available().await;
    let header = "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='b.example' to='localhost' version='1.0'>";

    // A stanza before dialback: not-authorized.
    let mut tcp = TcpStream::connect(addr(p.a_port)).await.unwrap();
    tcp.write_all(header.as_bytes()).await.unwrap();
    let mut seen = String::new();
    assert!(read_until(&mut tcp, &mut seen, "</stream:features>").await, "{seen}");
    tcp.write_all(b"<message from='mallory@b.example' to='alice@localhost' type='chat'><body>early</body></message>").await.unwrap();
    assert!(read_until(&mut tcp, &mut seen, "not-authorized").await, "{seen}");

    // A forged key: the authoritative server (the real b.example) says invalid.
    let mut tcp = TcpStream::connect(addr(p.a_port)).await.unwrap();
    tcp.write_all(header.as_bytes()).await.unwrap();
    let mut seen = String::new();
    assert!(read_until(&mut tcp, &mut seen, "</stream:features>").await, "{seen}");
    assert!(seen.contains("urn:xmpp:features:dialback"), "XEP-0220 §2.4.1: the feature is offered: {seen}");
    tcp.write_all(b"<db:result from='b.example' to='localhost'>0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef</db:result>").await.unwrap();
    assert!(read_until(&mut tcp, &mut seen, "type='invalid'").await, "{seen}");
    tcp.write_all(b"<message from='mallory@b.example' to='alice@localhost' type='chat'><body>forged</body></message>").await.unwrap();
    let leaked = tokio::time::timeout(Duration::from_millis(500), alice.expect("a message", |e| e.name() == "message")).await;
    assert!(leaked.is_err(), "a forged peer's message was delivered: {}", leaked.map(|e| show(&e)).unwrap_or_default());
    p.stop().await;
}

/// RFC 6121 §4.2.2 / §4.3.1 across servers: a user who logs in after a remote contact came
/// online learns that contact's presence from the probe sent to the contact's server; and
/// the remote server's probes of a local user are answered (the other direction).
async fn presence_probes_across(backend: Backend) {
    let p = pair(backend, |_| {}).await;
    let (mut alice, mut bob) = p.clients().await;
    // Mutual subscription.
    for a_asks in [true, false] {
        let (x, y, y_bare, x_bare) = if a_asks { (&mut alice, &mut bob, "bob@b.example", "alice@localhost") } else { (&mut bob, &mut alice, "alice@localhost", "bob@b.example") };
        x.send(&format!("<presence type='subscribe' to='{y_bare}'/>")).await;
        y.expect("the request", |e| e.name() == "presence" && e.attr("type") == Some("subscribe")).await;
        y.send(&format!("<presence type='subscribed' to='{x_bare}'/>")).await;
        x.expect("the approval", |e| e.name() == "presence" && e.attr("type") == Some("subscribed")).await;
    }
    drop(alice);
    tokio::time::sleep(Duration::from_millis(300)).await;
    bob.send("<presence><show>dnd</show><status>busy</status></presence>").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // alice comes back: her server probes bob's; bob's answers with his presence.
    let mut alice = p.a.login("alice", "a2").await;
    alice.available().await;
    let pres = alice.expect("bob's presence", |e| e.name() == "presence" && e.attr("from") == Some("bob@b.example/b")).await;
    assert_eq!(pres.attr("type"), None, "{}", show(&pres));
    assert_eq!(pres.get_child("show", CLIENT).map(|s| s.text()).as_deref(), Some("dnd"), "{}", show(&pres));
    // And bob, logging in again, learns of alice the same way.
    drop(bob);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut bob = Client::login_at(&p.b, B, "bob", "pw", "b2").await;
    bob.available().await;
    let pres = bob.expect("alice's presence", |e| e.name() == "presence" && e.attr("from") == Some("alice@localhost/a2")).await;
    assert_eq!(pres.attr("type"), None, "{}", show(&pres));
    p.stop().await;
}

/// `[s2s] max_connections_per_ip`: the streams beyond it from one address are refused with
/// policy-violation and a text; when one closes, a new one is taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_ip_limited() {
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.s2s.listen = vec![addr(0)];
        c.s2s.max_connections_per_ip = 2;
    })
    .await;
    let port = server.server().s2s_addrs()[0].port();
    let header = "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' from='b.example' to='localhost' version='1.0'>";
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut tcp = TcpStream::connect(addr(port)).await.unwrap();
        tcp.write_all(header.as_bytes()).await.unwrap();
        let mut seen = String::new();
        assert!(read_until(&mut tcp, &mut seen, "</stream:features>").await, "{seen}");
        open.push(tcp);
    }
    let mut third = TcpStream::connect(addr(port)).await.unwrap();
    let mut seen = String::new();
    assert!(read_until(&mut third, &mut seen, "</stream:stream>").await, "{seen}");
    assert!(seen.contains("policy-violation") && seen.contains("more than 2 server streams"), "{seen}");
    drop(open.pop());
    // The slot comes back once the server sees the close (bounded wait).
    let mut admitted = false;
    for _ in 0..50 {
        let mut tcp = TcpStream::connect(addr(port)).await.unwrap();
        tcp.write_all(header.as_bytes()).await.unwrap();
        let mut seen = String::new();
        if read_until(&mut tcp, &mut seen, "</stream:features>").await {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(admitted, "a closed stream's place is given back");
    server.stop().await;
}

db_tests!(presence_probes_across, messages_both_ways, unknown_remote_user, unreachable_server, forged_dialback_refused);
