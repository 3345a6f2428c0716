//! Bidirectional server-to-server streams (XEP-0288): Starling with Starling over one
//! connection, two when either side has `[s2s] bidi = false`; the receiving side's part
//! spoken raw by a peer that follows the specification's examples; the initiating side's
//! part against a raw receiving server; and what happens to queued stanzas when a
//! bidirectional stream ends.
//!
//! The raw peers speak without TLS (`require_encryption = false` on Starling's side) so that
//! the test can read the protocol; storage plays no part: SQLite only.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::common::client::{CLIENT, Client, show};
use crate::common::{Backend, TestServer};
use crate::s2s::{Pair, addr, pair_with, read_until};

const PEER: &str = "peer.example";

fn body(e: &minidom::Element) -> Option<String> {
    e.get_child("body", CLIENT).map(|b| b.text())
}

/// Open incoming streams on both servers, once the count has been the same for a moment
/// (a dialback verification's connection is closed after its answer).
async fn settled_connections(p: &Pair) -> (usize, usize) {
    let mut last = (usize::MAX, usize::MAX);
    for _ in 0..50 {
        let now = (p.a.server().s2s_incoming_streams(), p.b.server().s2s_incoming_streams());
        if now == last {
            return now;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    last
}

async fn chat_both_ways(p: &Pair) -> (Client, Client) {
    let (mut alice, mut bob) = p.clients().await;
    alice.send("<message to='bob@b.example' type='chat' id='b1'><body>one link</body></message>").await;
    let m = bob.expect("alice's message", |e| e.name() == "message").await;
    assert_eq!(m.attr("from"), Some("alice@localhost/a"), "{}", show(&m));
    for i in 0..10 {
        bob.send(&format!("<message to='alice@localhost/a' type='chat' id='r{i}'><body>{i}</body></message>")).await;
    }
    for i in 0..10 {
        let m = alice.expect("bob's answers", |e| e.name() == "message").await;
        assert_eq!(m.attr("from"), Some("bob@b.example/b"), "{}", show(&m));
        assert_eq!(body(&m), Some(i.to_string()), "in order: {}", show(&m));
    }
    (alice, bob)
}

/// XEP-0288 §2: with bidi on both sides (the default), the stream localhost opened to
/// b.example carries b.example's answers too: one connection in all, the one b.example
/// accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_both_ways() {
    let p = pair_with(Backend::Sqlite, |_| {}, |_| {}).await;
    let (_alice, _bob) = chat_both_ways(&p).await;
    assert_eq!(settled_connections(&p).await, (0, 1), "(incoming on localhost, incoming on b.example)");
    p.stop().await;
}

/// `[s2s] bidi = false` on either side: neither offered nor asked for, so each direction has
/// its stream (RFC 6120 §2.4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidi_off_two_connections() {
    for a_off in [true, false] {
        let p = pair_with(Backend::Sqlite, |c| c.s2s.bidi = !a_off, |c| c.s2s.bidi = a_off).await;
        let (_alice, _bob) = chat_both_ways(&p).await;
        assert_eq!(settled_connections(&p).await, (1, 1), "bidi off on {}", if a_off { "localhost" } else { "b.example" });
        p.stop().await;
    }
}

/// A raw server for peer.example: answers dialback (as authoritative server, `<db:verify/>`
/// is valid; as receiving server, `<db:result/>` is valid: it trusts whoever comes), offers
/// bidi or not, and records what each connection received. Lines for the connection that
/// was authenticated by `<db:result/>` go out through `inject`.
struct FakePeer {
    port: u16,
    /// What each connection received, in order of connection.
    transcripts: Arc<Mutex<Vec<Arc<Mutex<String>>>>>,
    inject: Arc<Mutex<Option<mpsc::UnboundedSender<String>>>>,
}

fn attr<'a>(tag: &'a str, name: &str) -> &'a str {
    let Some(start) = tag.find(&format!(" {name}='")) else { return "" };
    let rest = &tag[start + name.len() + 3..];
    &rest[..rest.find('\'').unwrap_or(0)]
}

impl FakePeer {
    async fn start(offer_bidi: bool) -> FakePeer {
        let listener = TcpListener::bind(addr(0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let transcripts: Arc<Mutex<Vec<Arc<Mutex<String>>>>> = Arc::default();
        let inject: Arc<Mutex<Option<mpsc::UnboundedSender<String>>>> = Arc::default();
        let (t, i) = (transcripts.clone(), inject.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let seen = Arc::new(Mutex::new(String::new()));
                t.lock().unwrap().push(seen.clone());
                tokio::spawn(Self::serve(tcp, offer_bidi, seen, i.clone()));
            }
        });
        FakePeer { port, transcripts, inject }
    }

    async fn serve(tcp: TcpStream, offer_bidi: bool, seen: Arc<Mutex<String>>, inject: Arc<Mutex<Option<mpsc::UnboundedSender<String>>>>) {
        let (mut read, mut write) = tcp.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(out) = rx.recv().await {
                if write.write_all(out.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
        let mut buf = [0u8; 4096];
        let mut unparsed = String::new();
        let mut opened = false;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, read.read(&mut buf)).await {
            if n == 0 {
                return;
            }
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            seen.lock().unwrap().push_str(&text);
            unparsed.push_str(&text);
            if !opened && unparsed.contains("<stream:stream") && unparsed[unparsed.find("<stream:stream").unwrap()..].contains('>') {
                opened = true;
                let bidi = if offer_bidi { "<bidi xmlns='urn:xmpp:features:bidi'/>" } else { "" };
                let _ = tx.send(format!(
                    "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='{PEER}' to='localhost' id='fake-stream-1' version='1.0'><stream:features><dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback>{bidi}</stream:features>"
                ));
            }
            // Answer each complete dialback element.
            for kind in ["verify", "result"] {
                while let Some(start) = unparsed.find(&format!("<db:{kind} ")) {
                    let Some(end) = unparsed[start..].find(&format!("</db:{kind}>")) else { break };
                    let tag = unparsed[start..start + end].to_string();
                    unparsed.replace_range(start..start + end, "");
                    let (from, to) = (attr(&tag, "from"), attr(&tag, "to"));
                    let id = attr(&tag, "id");
                    let id = if id.is_empty() { String::new() } else { format!(" id='{id}'") };
                    let _ = tx.send(format!("<db:{kind} from='{to}' to='{from}'{id} type='valid'/>"));
                    if kind == "result" {
                        *inject.lock().unwrap() = Some(tx.clone());
                    }
                }
            }
        }
    }

    fn transcript(&self, n: usize) -> String {
        self.transcripts.lock().unwrap().get(n).map(|t| t.lock().unwrap().clone()).unwrap_or_default()
    }

    fn connections(&self) -> usize {
        self.transcripts.lock().unwrap().len()
    }

    /// Wait (bounded) for a connection authenticated by `<db:result/>` and write `xml` on it.
    async fn send_on_link(&self, xml: &str) {
        for _ in 0..100 {
            if let Some(tx) = self.inject.lock().unwrap().as_ref() {
                tx.send(xml.to_string()).unwrap();
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no link was authenticated");
    }

    /// Wait (bounded) until connection `n` received `want`.
    async fn wait_for(&self, n: usize, want: &str) -> String {
        for _ in 0..100 {
            let t = self.transcript(n);
            if t.contains(want) {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("connection {n} did not receive {want}: {}", self.transcript(n));
    }
}

/// localhost, plain text allowed, peer.example served by `fake`.
async fn server_for(fake: &FakePeer) -> TestServer {
    let port = fake.port;
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.s2s.listen = vec![addr(0)];
        c.s2s.require_encryption = false;
        c.s2s.targets.insert(PEER.into(), vec![format!("127.0.0.1:{port}")]);
        c.s2s.connect_timeout = 10;
    })
    .await;
    server.users(&["alice"]).await;
    server
}

/// The bodies of the messages in `text`, in order.
fn bodies(text: &str) -> Vec<String> {
    text.split("<body>").skip(1).filter_map(|b| b.split_once("</body>").map(|(b, _)| b.to_string())).collect()
}

/// XEP-0288 §2.1-§2.2 and the second example of §3, as the receiving server: the features
/// offer bidi; the peer sends `<bidi/>`, then dialback; once the key is verified (on a
/// connection of its own: never on the stream the request came on), our stanzas for the
/// peer's domain come on the peer's stream, not on a new connection; and the peer's come in
/// on it as before. Then the stream ends with stanzas still coming: none is lost, they go by
/// a new link, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_peer_receives_on_its_own_stream() {
    let fake = FakePeer::start(false).await;
    let server = server_for(&fake).await;
    let mut alice = server.login("alice", "a").await;
    alice.available().await;
    let port = server.server().s2s_addrs()[0].port();

    let mut tcp = TcpStream::connect(addr(port)).await.unwrap();
    tcp.write_all(format!("<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:server' xmlns:db='jabber:server:dialback' to='localhost' from='{PEER}' xml:lang='en' version='1.0'>").as_bytes()).await.unwrap();
    let mut seen = String::new();
    assert!(read_until(&mut tcp, &mut seen, "</stream:features>").await, "{seen}");
    let features = &seen[seen.find("<stream:features").expect("features")..];
    assert!(features.contains("<bidi") && features.contains("urn:xmpp:features:bidi"), "§2.1: bidi among the features: {seen}");

    tcp.write_all(b"<bidi xmlns='urn:xmpp:bidi'/><db:result from='peer.example' to='localhost'>e3f5cf21f12749ef2cf59269bc0118f35bc46b26</db:result>").await.unwrap();
    assert!(read_until(&mut tcp, &mut seen, "type='valid'").await, "{seen}");
    assert_eq!(fake.connections(), 1, "the key was verified on a connection of its own");
    assert!(fake.transcript(0).contains("<db:verify") && fake.transcript(0).contains("e3f5cf21f12749ef2cf59269bc0118f35bc46b26"), "{}", fake.transcript(0));

    alice.send("<message to='romeo@peer.example' type='chat' id='s1'><body>on your stream</body></message>").await;
    assert!(read_until(&mut tcp, &mut seen, "on your stream</body>").await, "alice's message came on the peer's own stream: {seen}");
    assert!(seen.contains("from=\"alice@localhost/a\"") || seen.contains("from='alice@localhost/a'"), "{seen}");
    assert_eq!(fake.connections(), 1, "and no link of our own was made");

    // The peer's stanzas still come in on it.
    tcp.write_all(b"<message from='romeo@peer.example/r' to='alice@localhost/a' type='chat' id='p1'><body>and back</body></message>").await.unwrap();
    let m = alice.expect("romeo's message", |e| e.name() == "message").await;
    assert_eq!((m.attr("from"), body(&m).as_deref()), (Some("romeo@peer.example/r"), Some("and back")), "{}", show(&m));

    // A burst, and the peer ends its stream meanwhile: what went out before the end came
    // on this stream, the rest by a new link; all of it, in order.
    for i in 0..40 {
        alice.send(&format!("<message to='romeo@peer.example' type='chat' id='q{i}'><body>q{i}</body></message>")).await;
    }
    tcp.write_all(b"</stream:stream>").await.unwrap();
    assert!(read_until(&mut tcp, &mut seen, "</stream:stream>").await, "the stream is closed: {seen}");
    let on_stream: Vec<String> = bodies(&seen).into_iter().filter(|b| b.starts_with('q')).collect();
    let mut all = on_stream.clone();
    if on_stream.len() < 40 {
        let link = fake.wait_for(1, "<body>q39</body>").await;
        all.extend(bodies(&link));
    }
    let want: Vec<String> = (0..40).map(|i| format!("q{i}")).collect();
    assert_eq!(all, want, "none lost, none twice, in order ({} on the bidi stream)", on_stream.len());
    alice.expect_silence(Duration::from_millis(200)).await;
    server.stop().await;
}

/// XEP-0288 §2.2 as the initiating server: the peer offers bidi, so `<bidi/>` goes out after
/// the features and before dialback; once authenticated, stanzas from the peer's domain to
/// ours on our own stream are routed; one from a domain not authenticated on the stream
/// ends it with invalid-from (RFC 6120 §4.9.3.9), and nothing of it is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_stream_carries_the_peers_stanzas() {
    let fake = FakePeer::start(true).await;
    let server = server_for(&fake).await;
    let mut alice = server.login("alice", "a").await;
    alice.available().await;
    alice.send("<message to='romeo@peer.example' type='chat' id='o1'><body>hello</body></message>").await;
    let t = fake.wait_for(0, "<body>hello</body>").await;
    let (bidi, result) = (t.find("urn:xmpp:bidi"), t.find("<db:result"));
    assert!(bidi.is_some() && bidi < result, "<bidi/> before dialback: {t}");

    fake.send_on_link("<message from='romeo@peer.example/r' to='alice@localhost/a' type='chat' id='o2'><body>on your stream</body></message>").await;
    let m = alice.expect("romeo's answer", |e| e.name() == "message").await;
    assert_eq!((m.attr("from"), body(&m).as_deref()), (Some("romeo@peer.example/r"), Some("on your stream")), "{}", show(&m));
    assert_eq!(server.server().s2s_incoming_streams(), 0, "it came on our stream");

    fake.send_on_link("<message from='mallory@evil.example' to='alice@localhost/a' type='chat' id='o3'><body>forged</body></message>").await;
    let t = fake.wait_for(0, "</stream:stream>").await;
    assert!(t.contains("invalid-from"), "{t}");
    assert!(t.contains("evil.example is not authenticated on this stream"), "the error says why: {t}");
    alice.expect_silence(Duration::from_millis(300)).await;
    server.stop().await;
}

/// `[s2s] bidi = false`: the feature is not offered, and a `<bidi/>` nonetheless is refused
/// with unsupported-feature and a text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidi_off_not_offered() {
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.s2s.listen = vec![addr(0)];
        c.s2s.require_encryption = false;
        c.s2s.bidi = false;
    })
    .await;
    let port = server.server().s2s_addrs()[0].port();
    let mut tcp = TcpStream::connect(addr(port)).await.unwrap();
    tcp.write_all(format!("<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:server' xmlns:db='jabber:server:dialback' to='localhost' from='{PEER}' version='1.0'>").as_bytes()).await.unwrap();
    let mut seen = String::new();
    assert!(read_until(&mut tcp, &mut seen, "</stream:features>").await, "{seen}");
    assert!(!seen.contains("urn:xmpp:features:bidi"), "{seen}");
    tcp.write_all(b"<bidi xmlns='urn:xmpp:bidi'/>").await.unwrap();
    assert!(read_until(&mut tcp, &mut seen, "</stream:stream>").await, "{seen}");
    assert!(seen.contains("unsupported-feature") && seen.contains("bidi = false"), "{seen}");
    server.stop().await;
}
