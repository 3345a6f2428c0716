//! External components (XEP-0114): a raw TCP client speaking `jabber:component:accept` to the
//! server's component listener, as a gateway or bot would, with local users on the other side.
//! The live test with a real component library (slixmpp's ComponentXMPP) is in
//! `compat/slixmpp/test_component.py`.

use std::net::SocketAddr;
use std::time::Duration;

use minidom::Element;
use sha1::Digest;
use tokio::net::TcpStream;

use crate::common::client::{CLIENT, Client, Got, STANZAS, STREAMS, condition, show};
use crate::common::{Backend, DOMAIN, TestServer};
use crate::db_tests;

/// The component's content namespace: what it reads and writes.
const ACCEPT: &str = "jabber:component:accept";
const XMPP_STREAMS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
const GW: &str = "gateway.localhost";
const SECRET: &str = "s3cret-for-the-gateway";

fn with_component(c: &mut starling::Config) {
    c.components.listen = vec!["127.0.0.1:0".parse().unwrap()];
    let secret = starling::config::ComponentConfig { secret: starling::config::Secret(SECRET.into()) };
    c.components.domains.insert(GW.into(), secret);
}

async fn start(backend: Backend) -> TestServer {
    TestServer::start_with(backend, with_component).await
}

fn component_addr(server: &TestServer) -> SocketAddr {
    server.server().component_addrs()[0]
}

/// XEP-0114 §3 steps 1-4, written here from the text (not the server's code).
fn digest(stream_id: &str, secret: &str) -> String {
    sha1::Sha1::digest(format!("{stream_id}{secret}").as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A connection to the component port that sent a `jabber:component:accept` header for
/// `to` (XEP-0114 Example 1), and the server's answering header.
async fn open(server: &TestServer, to: &str) -> (Client, Element) {
    open_with(server, &format!("<stream:stream xmlns='{ACCEPT}' xmlns:stream='{STREAMS}' to='{to}'>")).await
}

async fn open_with(server: &TestServer, header: &str) -> (Client, Element) {
    let tcp = TcpStream::connect(component_addr(server)).await.unwrap();
    let mut c = Client::from_tcp(tcp, server.cert_path(DOMAIN));
    c.jid = "component".into();
    c.send(header).await;
    match c.read().await {
        Got::Header(h) => (c, h),
        other => panic!("expected the server's stream header, got {other:?}"),
    }
}

/// A component connected and authenticated for `GW`.
async fn connect(server: &TestServer) -> Client {
    let (mut c, header) = open(server, GW).await;
    let id = header.attr("id").expect("the header has a stream id").to_string();
    c.send(&format!("<handshake>{}</handshake>", digest(&id, SECRET))).await;
    let ack = c.next().await;
    assert!(ack.is("handshake", ACCEPT), "an empty handshake acknowledges success: {}", show(&ack));
    assert_eq!((ack.text(), ack.children().count()), (String::new(), 0), "{}", show(&ack));
    c.jid = GW.into();
    c
}

/// The stream error the server ends the stream with: (condition, text). The stream must
/// then be closed.
async fn stream_error(c: &mut Client) -> (String, String) {
    let mut found = None;
    loop {
        match c.read().await {
            Got::Element(el) if el.is("error", STREAMS) => {
                let condition = el.children().find(|e| e.ns() == XMPP_STREAMS && e.name() != "text").map(|e| e.name().to_string());
                let text = el.get_child("text", XMPP_STREAMS).map(|t| t.text()).unwrap_or_default();
                found = Some((condition.unwrap_or_default(), text));
            }
            Got::Element(el) => panic!("expected a stream error, got {}", show(&el)),
            Got::Header(h) => panic!("expected a stream error, got a header {}", show(&h)),
            Got::Closed | Got::Eof => break,
        }
    }
    let (condition, text) = found.expect("a stream error before the stream closed");
    assert!(!text.is_empty(), "every stream error says what was wrong ({condition})");
    (condition, text)
}

/// The defined condition of a stanza error the component received (its elements are in
/// its own namespace).
fn component_condition(el: &Element) -> String {
    el.get_child("error", ACCEPT)
        .and_then(|e| e.children().find(|c| c.ns() == STANZAS && c.name() != "text"))
        .map(|c| c.name().to_string())
        .unwrap_or_else(|| format!("no condition in {}", show(el)))
}

fn error_text(el: &Element) -> String {
    el.get_child("error", CLIENT).and_then(|e| e.get_child("text", STANZAS)).map(|t| t.text()).unwrap_or_default()
}

fn body(el: &Element, ns: &str) -> Option<String> {
    el.get_child("body", ns).map(|b| b.text())
}

/// XEP-0114 §3 Examples 1-4, then messages both ways between a local user and JIDs at the
/// component's domain: what the component writes arrives with its addresses untouched,
/// whitespace keep-alives are fine, and shutdown says so.
async fn handshake_and_messages(backend: Backend) {
    let server = start(backend).await;
    server.users(&["alice"]).await;
    let (mut gw, header) = open(&server, GW).await;
    // Example 2: the server's header is from the component's domain, with an id, and
    // without the version of XMPP 1.0 streams (no stream features follow).
    assert!(header.is("stream", STREAMS), "{}", show(&header));
    assert_eq!(header.attr("from"), Some(GW), "{}", show(&header));
    assert_eq!(header.attr("version"), None, "{}", show(&header));
    let id = header.attr("id").unwrap().to_string();
    assert!(!id.is_empty());
    gw.send(&format!("<handshake>{}</handshake>", digest(&id, SECRET))).await;
    let ack = gw.next().await;
    assert!(ack.is("handshake", ACCEPT) && ack.text().is_empty(), "{}", show(&ack));
    gw.jid = GW.into();

    let mut alice = server.login("alice", "a").await;
    alice.available().await;
    alice.send("<message to='echo@gateway.localhost/bot' type='chat' id='m1'><body>hello component</body></message>").await;
    let m = gw.expect("alice's message", |e| e.name() == "message").await;
    assert!(m.is("message", ACCEPT), "written in the component's namespace: {}", show(&m));
    assert_eq!((m.attr("from"), m.attr("to")), (Some("alice@localhost/a"), Some("echo@gateway.localhost/bot")), "{}", show(&m));
    assert_eq!((m.attr("type"), m.attr("id")), (Some("chat"), Some("m1")));
    assert_eq!(body(&m, ACCEPT).as_deref(), Some("hello component"));

    // Keep-alive whitespace between stanzas is nothing.
    gw.send(" \n\t ").await;
    gw.send("<message from='echo@gateway.localhost/bot' to='alice@localhost/a' type='chat' id='r1'><body>hello alice</body><x xmlns='urn:example:gateway'/></message>").await;
    let m = alice.expect("the component's answer", |e| e.name() == "message").await;
    assert!(m.is("message", CLIENT), "{}", show(&m));
    assert_eq!((m.attr("from"), m.attr("to"), m.attr("id")), (Some("echo@gateway.localhost/bot"), Some("alice@localhost/a"), Some("r1")), "{}", show(&m));
    assert_eq!(body(&m, CLIENT).as_deref(), Some("hello alice"));
    assert!(m.get_child("x", "urn:example:gateway").is_some(), "payloads pass untouched: {}", show(&m));

    // From the component's domain itself, to the bare JID (delivered to the resource).
    gw.send("<message from='gateway.localhost' to='alice@localhost' type='chat' id='r2'><body>from the domain</body></message>").await;
    let m = alice.expect("a message from the domain", |e| e.attr("id") == Some("r2")).await;
    assert_eq!(m.attr("from"), Some(GW), "{}", show(&m));

    // Shutdown ends the component's stream with system-shutdown.
    let stop = tokio::spawn(server.stop());
    let (condition, _) = stream_error(&mut gw).await;
    assert_eq!(condition, "system-shutdown");
    stop.await.unwrap();
}

/// IQs both ways: a user's request to the component's domain and its result; the
/// component's request to a user's full JID and its result; the component's request to the
/// server itself (disco#info of the served domain).
async fn iq_both_ways(backend: Backend) {
    let server = start(backend).await;
    server.users(&["alice"]).await;
    let mut gw = connect(&server).await;
    let mut alice = server.login("alice", "a").await;
    alice.available().await;

    alice.send("<iq to='gateway.localhost' type='get' id='q1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    let q = gw.expect("alice's query", |e| e.name() == "iq").await;
    assert_eq!((q.attr("from"), q.attr("to"), q.attr("type"), q.attr("id")), (Some("alice@localhost/a"), Some(GW), Some("get"), Some("q1")), "{}", show(&q));
    assert!(q.get_child("query", "http://jabber.org/protocol/disco#info").is_some(), "{}", show(&q));
    gw.send(
        "<iq from='gateway.localhost' to='alice@localhost/a' type='result' id='q1'><query xmlns='http://jabber.org/protocol/disco#info'>\
         <identity category='gateway' type='irc' name='IRC'/><feature var='jabber:iq:register'/></query></iq>",
    )
    .await;
    let r = alice.expect("the component's result", |e| e.name() == "iq" && e.attr("id") == Some("q1")).await;
    assert_eq!((r.attr("type"), r.attr("from")), (Some("result"), Some(GW)), "{}", show(&r));
    let identity = r.get_child("query", "http://jabber.org/protocol/disco#info").and_then(|q| q.get_child("identity", "http://jabber.org/protocol/disco#info"));
    assert_eq!(identity.and_then(|i| i.attr("category")), Some("gateway"), "{}", show(&r));

    gw.send("<iq from='bot@gateway.localhost/x' to='alice@localhost/a' type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>").await;
    let p = alice.expect("the component's ping", |e| e.name() == "iq" && e.attr("id") == Some("p1")).await;
    assert_eq!(p.attr("from"), Some("bot@gateway.localhost/x"), "{}", show(&p));
    alice.send("<iq to='bot@gateway.localhost/x' type='result' id='p1'/>").await;
    let r = gw.expect("alice's answer", |e| e.name() == "iq" && e.attr("id") == Some("p1")).await;
    assert_eq!((r.attr("type"), r.attr("from"), r.attr("to")), (Some("result"), Some("alice@localhost/a"), Some("bot@gateway.localhost/x")), "{}", show(&r));

    gw.send("<iq from='gateway.localhost' to='localhost' type='get' id='s1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    let r = gw.expect("the server's disco#info", |e| e.name() == "iq" && e.attr("id") == Some("s1")).await;
    assert_eq!((r.attr("type"), r.attr("from"), r.attr("to")), (Some("result"), Some(DOMAIN), Some(GW)), "{}", show(&r));
    let query = r.get_child("query", "http://jabber.org/protocol/disco#info").expect("a query");
    assert!(query.children().any(|c| c.name() == "identity" && c.attr("category") == Some("server")), "{}", show(&r));
    // An IQ to an account that does not exist: the router's error comes back.
    gw.send("<iq from='gateway.localhost' to='nobody@localhost' type='get' id='s2'><query xmlns='jabber:iq:version'/></iq>").await;
    let r = gw.expect("an error", |e| e.name() == "iq" && e.attr("id") == Some("s2")).await;
    assert_eq!((r.attr("type"), component_condition(&r).as_str()), (Some("error"), "service-unavailable"), "{}", show(&r));
    server.stop().await;
}

/// XEP-0114 §3: a handshake that does not prove the secret: <not-authorized/>, the stream
/// and connection closed; the domain stays free for the right one.
async fn wrong_secret(backend: Backend) {
    let server = start(backend).await;
    let (mut c, header) = open(&server, GW).await;
    let id = header.attr("id").unwrap().to_string();
    c.send(&format!("<handshake>{}</handshake>", digest(&id, "not the secret"))).await;
    let (condition, text) = stream_error(&mut c).await;
    assert_eq!(condition, "not-authorized", "{text}");
    // A digest for another stream id (a replayed handshake) is just as wrong.
    let (mut c, _) = open(&server, GW).await;
    c.send(&format!("<handshake>{}</handshake>", digest(&id, SECRET))).await;
    assert_eq!(stream_error(&mut c).await.0, "not-authorized");
    // Anything before the handshake too.
    let (mut c, _) = open(&server, GW).await;
    c.send("<message from='gateway.localhost' to='alice@localhost'><body>early</body></message>").await;
    assert_eq!(stream_error(&mut c).await.0, "not-authorized");
    let mut gw = connect(&server).await;
    gw.send("</stream:stream>").await;
    assert!(matches!(gw.read().await, Got::Closed | Got::Eof));
    server.stop().await;
}

/// XEP-0114 §3: a name the server does not serve as a component: <host-unknown/>, after
/// the server's own stream header (RFC 6120 §4.9.1.2); a header without `to`, or naming a
/// served domain, likewise. A stream in another namespace: <invalid-namespace/>.
async fn unknown_domain_and_namespace(backend: Backend) {
    let server = start(backend).await;
    for to in ["nothere.localhost", DOMAIN, "conference.localhost"] {
        let (mut c, header) = open(&server, to).await;
        assert!(header.is("stream", STREAMS), "{}", show(&header));
        let (condition, text) = stream_error(&mut c).await;
        assert_eq!(condition, "host-unknown", "{to}: {text}");
        assert!(text.contains(to), "the text names what was asked: {text}");
    }
    let (mut c, _) = open_with(&server, &format!("<stream:stream xmlns='{ACCEPT}' xmlns:stream='{STREAMS}'>")).await;
    assert_eq!(stream_error(&mut c).await.0, "host-unknown");
    for ns in ["jabber:client", "jabber:component:connect"] {
        let (mut c, _) = open_with(&server, &format!("<stream:stream xmlns='{ns}' xmlns:stream='{STREAMS}' to='{GW}'>")).await;
        let (condition, text) = stream_error(&mut c).await;
        assert_eq!(condition, "invalid-namespace", "{ns}: {text}");
    }
    server.stop().await;
}

/// XEP-0114 §3: the domain of `from` must be the component's: anything else ends the
/// stream with <invalid-from/>, without the stanza going anywhere; a stanza without `from`
/// or `to` with <improper-addressing/>. The domain is free again afterwards.
async fn forged_and_missing_addresses(backend: Backend) {
    let server = start(backend).await;
    server.users(&["alice", "bob"]).await;
    let mut bob = server.login("bob", "b").await;
    bob.available().await;
    let cases = [
        ("<message from='alice@localhost/a' to='bob@localhost' type='chat'><body>forged</body></message>", "invalid-from"),
        ("<message from='localhost' to='bob@localhost' type='chat'><body>forged</body></message>", "invalid-from"),
        ("<message from='x@sub.gateway.localhost' to='bob@localhost' type='chat'><body>forged</body></message>", "invalid-from"),
        ("<presence from='x@gateway.localhost.evil' to='bob@localhost'/>", "invalid-from"),
        ("<message from='x@gateway.localhost@@' to='bob@localhost' type='chat'><body>malformed</body></message>", "invalid-from"),
        ("<message to='bob@localhost' type='chat'><body>no from</body></message>", "improper-addressing"),
        ("<iq from='gateway.localhost' type='get' id='n1'><ping xmlns='urn:xmpp:ping'/></iq>", "improper-addressing"),
        ("<message from='gateway.localhost' to='' type='chat'><body>empty to</body></message>", "improper-addressing"),
    ];
    for (stanza, want) in cases {
        let mut gw = connect(&server).await;
        gw.send(stanza).await;
        let (condition, text) = stream_error(&mut gw).await;
        assert_eq!(condition, want, "{stanza}: {text}");
    }
    bob.expect_silence(Duration::from_millis(300)).await;
    // A malformed `to` is the component's own mistake: a stanza error back to it.
    let mut gw = connect(&server).await;
    gw.send("<message from='gateway.localhost' to='a@b@c' type='chat' id='bad'><body>x</body></message>").await;
    let e = gw.expect("jid-malformed", |e| e.attr("id") == Some("bad")).await;
    assert_eq!(component_condition(&e), "jid-malformed", "{}", show(&e));
    server.stop().await;
}

/// A component that is not connected (never, or no more): IQ requests and messages to its
/// domain or JIDs at it get <service-unavailable/> with a text; presence is dropped.
async fn not_connected(backend: Backend) {
    let server = start(backend).await;
    server.users(&["alice"]).await;
    let mut alice = server.login("alice", "a").await;
    alice.available().await;
    for round in ["never connected", "gone"] {
        alice.send("<message to='echo@gateway.localhost' type='chat' id='m1'><body>anyone?</body></message>").await;
        let e = alice.expect("an error", |e| e.attr("id") == Some("m1")).await;
        assert_eq!((e.attr("type"), e.attr("from")), (Some("error"), Some("echo@gateway.localhost")), "{round}: {}", show(&e));
        assert_eq!(condition(&e), "service-unavailable", "{round}: {}", show(&e));
        assert!(error_text(&e).contains("not connected"), "{round}: {}", show(&e));
        alice.send("<iq to='gateway.localhost' type='get' id='q1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
        let e = alice.expect("an error", |e| e.attr("id") == Some("q1")).await;
        assert_eq!((e.attr("type"), condition(&e).as_str()), (Some("error"), "service-unavailable"), "{round}: {}", show(&e));
        alice.send("<presence to='echo@gateway.localhost'/>").await;
        alice.send("<message to='echo@gateway.localhost' type='error' id='e1'/>").await;
        alice.expect_silence(Duration::from_millis(300)).await;
        // Connected, it takes them; then it closes its stream.
        let mut gw = connect(&server).await;
        alice.send("<message to='echo@gateway.localhost' type='chat' id='m0'><body>there?</body></message>").await;
        gw.expect("the message", |e| e.attr("id") == Some("m0")).await;
        gw.send("</stream:stream>").await;
        // The server leaves the registry before it closes its side.
        assert!(matches!(gw.read().await, Got::Closed | Got::Eof));
        assert!(!server.server().core().components.is_connected(GW));
    }
    server.stop().await;
}

/// A second connection for a domain already connected is refused with <conflict/> after its
/// handshake (Prosody's rule: the working component keeps its domain), and the first one
/// carries on.
async fn second_connection_conflict(backend: Backend) {
    let server = start(backend).await;
    server.users(&["alice"]).await;
    let mut first = connect(&server).await;
    let (mut second, header) = open(&server, GW).await;
    let id = header.attr("id").unwrap().to_string();
    second.send(&format!("<handshake>{}</handshake>", digest(&id, SECRET))).await;
    let (condition, text) = stream_error(&mut second).await;
    assert_eq!(condition, "conflict", "{text}");
    assert!(text.contains(GW), "{text}");
    let mut alice = server.login("alice", "a").await;
    alice.available().await;
    alice.send("<message to='echo@gateway.localhost' type='chat' id='m1'><body>still there?</body></message>").await;
    let m = first.expect("the message", |e| e.attr("id") == Some("m1")).await;
    assert_eq!(body(&m, ACCEPT).as_deref(), Some("still there?"));
    server.stop().await;
}

/// The served domain's disco#items lists a connected component, and not one that is not.
async fn listed_in_disco_items(backend: Backend) {
    let server = start(backend).await;
    server.users(&["alice"]).await;
    let mut alice = server.login("alice", "a").await;
    let items = |r: &Element| -> Vec<String> {
        r.get_child("query", "http://jabber.org/protocol/disco#items").unwrap().children().filter_map(|i| i.attr("jid").map(str::to_string)).collect()
    };
    let r = alice.request("<iq to='localhost' type='get' id='i1'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>").await;
    assert!(!items(&r).contains(&GW.to_string()), "{}", show(&r));
    let _gw = connect(&server).await;
    let r = alice.request("<iq to='localhost' type='get' id='i2'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>").await;
    assert!(items(&r).contains(&GW.to_string()), "{}", show(&r));
    assert!(items(&r).contains(&"conference.localhost".to_string()), "{}", show(&r));
    // Another served domain does not list it.
    let r = alice.request("<iq to='example.test' type='get' id='i3'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>").await;
    assert!(!items(&r).contains(&GW.to_string()), "{}", show(&r));
    server.stop().await;
}

/// A stanza over the size limit (`s2s.max_stanza_size`) ends the stream with
/// <policy-violation/>.
async fn stanza_size_limit(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        with_component(c);
        c.s2s.max_stanza_size = 20_000;
    })
    .await;
    let mut gw = connect(&server).await;
    let big = "x".repeat(30_000);
    gw.send(&format!("<message from='gateway.localhost' to='alice@localhost' type='chat'><body>{big}</body></message>")).await;
    let (condition, text) = stream_error(&mut gw).await;
    assert_eq!(condition, "policy-violation", "{text}");
    server.stop().await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A component's domain is federated like the served ones: the component writes to a user
/// of another server and gets the answer back, over server-to-server links authenticated
/// by dialback for the component's domain.
async fn federated(backend: Backend) {
    for _ in 0..5 {
        let (a_port, b_port) = (free_port(), free_port());
        let Ok(a) = TestServer::try_start_with(backend, |c| {
            with_component(c);
            c.s2s.listen = vec![format!("127.0.0.1:{a_port}").parse().unwrap()];
            c.s2s.targets.insert("b.example".into(), vec![format!("127.0.0.1:{b_port}")]);
            c.s2s.connect_timeout = 10;
        })
        .await
        else {
            continue;
        };
        let Ok(b) = TestServer::try_start_with(backend, |c| {
            c.domains = vec!["b.example".into()];
            c.s2s.listen = vec![format!("127.0.0.1:{b_port}").parse().unwrap()];
            for domain in [DOMAIN, GW] {
                c.s2s.targets.insert(domain.into(), vec![format!("127.0.0.1:{a_port}")]);
            }
            c.s2s.connect_timeout = 10;
        })
        .await
        else {
            a.stop().await;
            continue;
        };
        b.add_user_at("b.example", "bob", "pw").await;
        let mut bob = Client::login_at(&b, "b.example", "bob", "pw", "b").await;
        bob.available().await;
        let mut gw = connect(&a).await;
        gw.send("<message from='echo@gateway.localhost/bot' to='bob@b.example/b' type='chat' id='f1'><body>over federation</body></message>").await;
        let m = bob.expect("the component's message", |e| e.attr("id") == Some("f1")).await;
        assert_eq!(m.attr("from"), Some("echo@gateway.localhost/bot"), "{}", show(&m));
        assert_eq!(body(&m, CLIENT).as_deref(), Some("over federation"));
        bob.send("<message to='echo@gateway.localhost/bot' type='chat' id='f2'><body>and back</body></message>").await;
        let m = gw.expect("bob's answer", |e| e.attr("id") == Some("f2")).await;
        assert_eq!((m.attr("from"), m.attr("to")), (Some("bob@b.example/b"), Some("echo@gateway.localhost/bot")), "{}", show(&m));
        a.stop().await;
        b.stop().await;
        return;
    }
    panic!("no two free ports for the servers in five tries");
}

db_tests!(
    handshake_and_messages,
    iq_both_ways,
    wrong_secret,
    unknown_domain_and_namespace,
    forged_and_missing_addresses,
    not_connected,
    second_connection_conflict,
    listed_in_disco_items,
    stanza_size_limit,
    federated,
);
