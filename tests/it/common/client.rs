//! A minimal XMPP client for the tests. It parses with rxml (minidom's parser), not with
//! the server's quick-xml reader, so every test also checks that what the server writes is
//! well-formed for an independent parser. Its SCRAM is written here, from RFC 5802.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use minidom::Element;
use minidom::rxml::RawEvent;
use minidom::tree_builder::TreeBuilder;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use super::{DOMAIN, TestServer};

pub const CLIENT: &str = "jabber:client";
pub const STREAMS: &str = "http://etherx.jabber.org/streams";
pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// How long to wait for an expected stanza before failing the test.
pub const WAIT: Duration = Duration::from_secs(10);

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Stream = Box<dyn Io>;

/// Counts the bytes read through it.
struct Counted {
    inner: Stream,
    received: Arc<std::sync::atomic::AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.received.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        poll
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What the client read.
#[derive(Debug)]
pub enum Got {
    Header(Element),
    Element(Element),
    /// `</stream:stream>`
    Closed,
    /// The connection ended (EOF or error).
    Eof,
}

pub struct Client {
    /// Bytes received on this connection (after TLS: what the server wrote).
    pub received: Arc<std::sync::atomic::AtomicU64>,
    reader: minidom::rxml::AsyncRawReader<BufReader<ReadHalf<Stream>>>,
    tree: TreeBuilder,
    writer: WriteHalf<Stream>,
    pub pending: VecDeque<Element>,
    /// The features of the current stream.
    pub features: Option<Element>,
    pub header: Option<Element>,
    pub jid: String,
    /// The domain the client connects to (its stream's `to`, TLS's name).
    pub domain: String,
    cert: std::path::PathBuf,
    /// Channel-binding data of the TLS connection, computed on the client's side:
    /// `tls-exporter` (RFC 9266) and `tls-server-end-point` (RFC 5929).
    pub cb_exporter: Option<Vec<u8>>,
    pub cb_end_point: Option<Vec<u8>>,
    /// The server may cut this connection off mid-stanza (a client that reads nothing is
    /// disconnected where its writes stopped): a stream that ends inside an element then
    /// reads as the end, not as bad XML.
    pub cut_off_expected: bool,
}

impl Client {
    fn over(stream: Stream, cert: std::path::PathBuf) -> Client {
        let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stream: Stream = Box::new(Counted { inner: stream, received: received.clone() });
        let (read, writer) = tokio::io::split(stream);
        Client {
            received,
            reader: minidom::rxml::AsyncRawReader::new(BufReader::new(read)),
            tree: TreeBuilder::new(),
            writer,
            pending: VecDeque::new(),
            features: None,
            header: None,
            jid: String::new(),
            domain: DOMAIN.to_string(),
            cert,
            cb_exporter: None,
            cb_end_point: None,
            cut_off_expected: false,
        }
    }

    fn over_tls(tls: tokio_rustls::client::TlsStream<Stream>, cert: std::path::PathBuf) -> Client {
        let conn = tls.get_ref().1;
        let exporter = conn.export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None).ok();
        // Our generated certificate is signed with ECDSA-SHA256, so the hash is SHA-256.
        let end_point = conn.peer_certificates().map(|c| {
            use sha2::Digest;
            sha2::Sha256::digest(c[0].as_ref()).to_vec()
        });
        let mut client = Client::over(Box::new(tls), cert);
        client.cb_exporter = exporter;
        client.cb_end_point = end_point;
        client
    }

    /// TCP to the STARTTLS port; nothing sent yet.
    pub async fn tcp(server: &TestServer) -> Client {
        let tcp = TcpStream::connect(server.addr()).await.unwrap();
        Client::over(Box::new(tcp), server.cert_path(DOMAIN))
    }

    /// Over an existing TCP connection to a STARTTLS port, trusting `cert`.
    pub fn from_tcp(tcp: TcpStream, cert: std::path::PathBuf) -> Client {
        Client::over(Box::new(tcp), cert)
    }

    /// A direct TLS connection (XEP-0368); nothing sent yet.
    pub async fn direct_tls(server: &TestServer) -> Client {
        let tcp = TcpStream::connect(server.tls_addr()).await.unwrap();
        let cert = server.cert_path(DOMAIN);
        let tls = tls_connector(&cert).connect(DOMAIN.try_into().unwrap(), Box::new(tcp) as Stream).await.unwrap();
        Client::over_tls(tls, cert)
    }

    /// Logged in like [`Client::login`], over a TCP connection with a tiny receive buffer:
    /// a client that then stops reading makes the server's writes stall quickly.
    pub async fn login_small_buffer(server: &TestServer, user: &str, password: &str, resource: &str) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(2048).unwrap();
        let tcp = socket.connect(server.addr()).await.unwrap();
        let mut c = Client::over(Box::new(tcp), server.cert_path(DOMAIN));
        c.open(DOMAIN).await;
        c.starttls().await;
        c.auth_scram_sha256(user, password).await.expect("authentication succeeds");
        c.bind(resource).await;
        c
    }

    /// Connected and past STARTTLS, with the post-TLS features read.
    pub async fn secure(server: &TestServer) -> Client {
        let mut c = Client::tcp(server).await;
        c.open(DOMAIN).await;
        c.starttls().await;
        c
    }

    /// [`Client::login`] to another of the server's domains than the default one.
    pub async fn login_at(server: &TestServer, domain: &str, user: &str, password: &str, resource: &str) -> Client {
        let tcp = TcpStream::connect(server.addr()).await.unwrap();
        let mut c = Client::over(Box::new(tcp), server.cert_path(domain));
        c.domain = domain.to_string();
        c.open(domain).await;
        c.starttls().await;
        c.auth_scram_sha256(user, password).await.expect("authentication succeeds");
        c.bind(resource).await;
        c
    }

    /// Logged in with SCRAM-SHA-256 and bound to `resource`; no presence sent.
    pub async fn login(server: &TestServer, user: &str, password: &str, resource: &str) -> Client {
        let mut c = Client::secure(server).await;
        c.auth_scram_sha256(user, password).await.expect("authentication succeeds");
        c.bind(resource).await;
        c
    }

    pub async fn send(&mut self, xml: &str) {
        self.writer.write_all(xml.as_bytes()).await.unwrap();
        self.writer.flush().await.unwrap();
    }

    /// Send raw bytes; false if the connection is gone.
    pub async fn send_bytes(&mut self, bytes: &[u8]) -> bool {
        self.writer.write_all(bytes).await.is_ok() && self.writer.flush().await.is_ok()
    }

    /// Send a stream header and read the server's header and features.
    pub async fn open(&mut self, to: &str) -> Element {
        self.send(&format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='{STREAMS}' to='{to}' version='1.0' xml:lang='en'>"
        ))
        .await;
        match self.read().await {
            Got::Header(h) => self.header = Some(h),
            other => panic!("expected a stream header, got {other:?}"),
        }
        let features = self.next().await;
        assert!(features.is("features", STREAMS), "expected features, got {}", show(&features));
        self.features = Some(features.clone());
        features
    }

    pub async fn starttls(&mut self) {
        self.starttls_without_restart().await;
        let domain = self.domain.clone();
        self.open(&domain).await;
    }

    /// STARTTLS up to the TLS handshake, without opening the new stream.
    pub async fn starttls_without_restart(&mut self) {
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>").await;
        let proceed = self.next().await;
        assert!(proceed.is("proceed", "urn:ietf:params:xml:ns:xmpp-tls"), "{}", show(&proceed));
        // Take the real halves out (leaving placeholders), join them, and wrap in TLS.
        let (r, w) = tokio::io::split(Box::new(empty::EmptyDuplex) as Stream);
        let reader = std::mem::replace(&mut self.reader, minidom::rxml::AsyncRawReader::new(BufReader::new(r)));
        let writer = std::mem::replace(&mut self.writer, w);
        let (buffered, _) = reader.into_inner();
        assert!(buffered.buffer().is_empty(), "the server sent something after <proceed/>");
        let stream = buffered.into_inner().unsplit(writer);
        let domain = self.domain.clone();
        let tls = tls_connector(&self.cert).connect(domain.clone().try_into().unwrap(), stream).await.expect("TLS handshake");
        *self = Client::over_tls(tls, self.cert.clone());
        self.domain = domain;
    }

    /// SCRAM-SHA-256 (RFC 7677); Err(condition) on failure.
    pub async fn auth_scram_sha256(&mut self, user: &str, password: &str) -> Result<(), String> {
        self.auth_scram("SCRAM-SHA-256", user, password, None).await
    }

    /// Any SCRAM mechanism; `binding` = (type, data) for the -PLUS variants.
    pub async fn auth_scram(&mut self, mechanism: &str, user: &str, password: &str, binding: Option<(&str, Vec<u8>)>) -> Result<(), String> {
        let nonce = B64.encode(rand_bytes());
        let first_bare = format!("n={user},r={nonce}");
        let gs2 = match &binding {
            Some((kind, _)) => format!("p={kind},,"),
            None => "n,,".to_string(),
        };
        let mut cbind = gs2.clone().into_bytes();
        if let Some((_, data)) = &binding {
            cbind.extend_from_slice(data);
        }
        self.send(&format!("<auth xmlns='{SASL}' mechanism='{mechanism}'>{}</auth>", B64.encode(format!("{gs2}{first_bare}")))).await;
        let challenge = self.next().await;
        if challenge.is("failure", SASL) {
            return Err(condition(&challenge));
        }
        assert!(challenge.is("challenge", SASL), "{}", show(&challenge));
        let server_first = String::from_utf8(B64.decode(challenge.text()).unwrap()).unwrap();
        let sha1 = mechanism.starts_with("SCRAM-SHA-1");
        let (final_msg, server_signature) = scram_final(sha1, password, &first_bare, &server_first, &cbind);
        self.send(&format!("<response xmlns='{SASL}'>{}</response>", B64.encode(final_msg))).await;
        let outcome = self.next().await;
        if outcome.is("failure", SASL) {
            return Err(condition(&outcome));
        }
        assert!(outcome.is("success", SASL), "{}", show(&outcome));
        let server_final = String::from_utf8(B64.decode(outcome.text()).unwrap()).unwrap();
        assert_eq!(server_final, format!("v={}", B64.encode(server_signature)), "the server proved it knows the key");
        self.restart().await;
        Ok(())
    }

    /// SASL PLAIN; Err(condition) on failure.
    pub async fn auth_plain(&mut self, user: &str, password: &str) -> Result<(), String> {
        let payload = B64.encode(format!("\0{user}\0{password}"));
        self.send(&format!("<auth xmlns='{SASL}' mechanism='PLAIN'>{payload}</auth>")).await;
        let outcome = self.next().await;
        if outcome.is("failure", SASL) {
            return Err(condition(&outcome));
        }
        assert!(outcome.is("success", SASL), "{}", show(&outcome));
        self.restart().await;
        Ok(())
    }

    /// Open a new stream on the same connection (after SASL), with a fresh parser.
    pub async fn restart(&mut self) {
        let (r, _) = tokio::io::split(Box::new(empty::EmptyDuplex) as Stream);
        let old = std::mem::replace(&mut self.reader, minidom::rxml::AsyncRawReader::new(BufReader::new(r)));
        let (buffered, _) = old.into_inner();
        self.reader = minidom::rxml::AsyncRawReader::new(buffered);
        self.tree = TreeBuilder::new();
        self.header = None;
        let domain = self.domain.clone();
        self.open(&domain).await;
    }

    pub async fn bind(&mut self, resource: &str) -> String {
        let body = if resource.is_empty() { String::new() } else { format!("<resource>{resource}</resource>") };
        let reply = self
            .request(&format!("<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>{body}</bind></iq>"))
            .await;
        assert_eq!(reply.attr("type"), Some("result"), "{}", show(&reply));
        let jid = reply.get_child("bind", "urn:ietf:params:xml:ns:xmpp-bind").unwrap().get_child("jid", "urn:ietf:params:xml:ns:xmpp-bind").unwrap().text();
        self.jid = jid.clone();
        jid
    }

    /// Read one thing from the stream, with a timeout.
    pub async fn read(&mut self) -> Got {
        match tokio::time::timeout(WAIT, self.read_inner()).await {
            Ok(got) => got,
            Err(_) => panic!("{}: nothing received within {WAIT:?}", self.jid),
        }
    }

    async fn read_inner(&mut self) -> Got {
        loop {
            let event = match self.reader.read().await {
                Ok(Some(e)) => e,
                Ok(None) => return Got::Eof,
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData && !self.cut_off_expected => panic!("the server sent bad XML: {e}"),
                Err(_) => return Got::Eof,
            };
            let head_close = matches!(event, RawEvent::ElementHeadClose(_));
            let foot = matches!(event, RawEvent::ElementFoot(_));
            self.tree.process_event(event).expect("the server's XML builds a tree");
            if head_close && self.tree.depth() == 1 && self.header.is_none() {
                let top = self.tree.top().unwrap().clone();
                self.header = Some(top.clone());
                return Got::Header(top);
            }
            if head_close && self.tree.depth() == 1 {
                // A restarted stream: a new header.
                let top = self.tree.top().unwrap().clone();
                return Got::Header(top);
            }
            if foot {
                match self.tree.depth() {
                    0 => return Got::Closed,
                    1 => {
                        if let Some(el) = self.tree.unshift_child() {
                            return Got::Element(el);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// The next element (stanza or nonza), panicking on close.
    pub async fn next(&mut self) -> Element {
        if let Some(el) = self.pending.pop_front() {
            return el;
        }
        loop {
            match self.read().await {
                Got::Element(el) => return el,
                Got::Header(_) => continue,
                other => panic!("{}: expected an element, got {other:?}", self.jid),
            }
        }
    }

    /// Wait for an element matching `pred`; others are kept for later.
    pub async fn expect(&mut self, what: &str, pred: impl Fn(&Element) -> bool) -> Element {
        if let Some(pos) = self.pending.iter().position(&pred) {
            return self.pending.remove(pos).unwrap();
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got = tokio::time::timeout_at(deadline, self.read_inner()).await;
            match got {
                Ok(Got::Element(el)) if pred(&el) => return el,
                Ok(Got::Element(el)) => self.pending.push_back(el),
                Ok(Got::Header(_)) => {}
                Ok(other) => panic!("{}: waiting for {what}, got {other:?}; pending: {}", self.jid, self.show_pending()),
                Err(_) => panic!("{}: {what} did not arrive; got instead: {}", self.jid, self.show_pending()),
            }
        }
    }

    fn show_pending(&self) -> String {
        self.pending.iter().map(show).collect::<Vec<_>>().join("\n  ")
    }

    /// Send an IQ (whose id is in the XML) and wait for the answer with that id.
    pub async fn request(&mut self, xml: &str) -> Element {
        let el: Element = xml.replace("<iq ", "<iq xmlns='jabber:client' ").parse().expect("test XML parses");
        let id = el.attr("id").expect("requests have ids").to_string();
        self.send(xml).await;
        self.expect(&format!("the answer to iq {id}"), |e| {
            e.name() == "iq" && e.attr("id") == Some(id.as_str()) && matches!(e.attr("type"), Some("result" | "error"))
        })
        .await
    }

    /// Assert that nothing arrives for a while (and nothing is pending).
    pub async fn expect_silence(&mut self, wait: Duration) {
        assert!(self.pending.is_empty(), "{}: unexpected: {}", self.jid, self.show_pending());
        match tokio::time::timeout(wait, self.read_inner()).await {
            Err(_) => {}
            Ok(Got::Element(el)) => panic!("{}: expected nothing, got {}", self.jid, show(&el)),
            Ok(other) => panic!("{}: expected nothing, got {other:?}", self.jid),
        }
    }

    /// Discard everything received so far (pushes, presence) and what arrives in 200 ms.
    pub async fn drain(&mut self) {
        self.pending.clear();
        while let Ok(got) = tokio::time::timeout(Duration::from_millis(200), self.read_inner()).await {
            if !matches!(got, Got::Element(_) | Got::Header(_)) {
                break;
            }
        }
    }

    /// The next message, presence or iq of `kind` (other kinds are kept pending).
    pub async fn expect_kind(&mut self, kind: &str) -> Element {
        self.expect(kind, |e| e.name() == kind).await
    }

    /// Read until the server closes, returning the stream error condition if one was sent.
    pub async fn expect_stream_error(&mut self) -> Option<String> {
        let mut condition_seen = None;
        loop {
            let got = match tokio::time::timeout(WAIT, self.read_inner()).await {
                Ok(g) => g,
                Err(_) => panic!("{}: the stream was not closed", self.jid),
            };
            match got {
                Got::Element(el) if el.is("error", STREAMS) => {
                    condition_seen = el
                        .children()
                        .find(|c| c.ns() == "urn:ietf:params:xml:ns:xmpp-streams" && c.name() != "text")
                        .map(|c| c.name().to_string());
                }
                Got::Element(_) | Got::Header(_) => {}
                Got::Closed | Got::Eof => return condition_seen,
            }
        }
    }

    /// Send presence and consume our own presence echoed back by the server.
    pub async fn available(&mut self) {
        self.send("<presence/>").await;
        let me = self.jid.clone();
        self.expect("own presence", |e| e.name() == "presence" && e.attr("from") == Some(me.as_str()) && e.attr("type").is_none()).await;
    }

    pub async fn close(mut self) {
        self.send("</stream:stream>").await;
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match self.read_inner().await {
                    Got::Closed | Got::Eof => break,
                    _ => {}
                }
            }
        })
        .await;
    }
}

/// The defined condition of a SASL failure or stanza error.
pub fn condition(el: &Element) -> String {
    let error = el.get_child("error", CLIENT).unwrap_or(el);
    error
        .children()
        .find(|c| c.name() != "text" && (c.ns() == SASL || c.ns() == STANZAS))
        .map(|c| c.name().to_string())
        .unwrap_or_else(|| format!("no condition in {}", show(el)))
}

pub fn show(el: &Element) -> String {
    String::from(el)
}

fn rand_bytes() -> [u8; 18] {
    let mut b = [0u8; 18];
    getrandom::fill(&mut b).unwrap();
    b
}

/// The client-final-message and the expected server signature (RFC 5802 §3).
fn scram_final(sha1: bool, password: &str, first_bare: &str, server_first: &str, cbind: &[u8]) -> (String, Vec<u8>) {
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::Digest;
    let mut nonce = "";
    let mut salt = Vec::new();
    let mut iterations = 0;
    for part in server_first.split(',') {
        match part.split_at(2) {
            ("r=", v) => nonce = v,
            ("s=", v) => salt = B64.decode(v).unwrap(),
            ("i=", v) => iterations = v.parse().unwrap(),
            _ => {}
        }
    }
    assert!(iterations >= 4096, "iteration count {iterations}");
    let hmac = |key: &[u8], data: &[u8]| -> Vec<u8> {
        if sha1 {
            let mut m = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(key).unwrap();
            m.update(data);
            m.finalize().into_bytes().to_vec()
        } else {
            let mut m = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).unwrap();
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
    };
    let salted = if sha1 {
        let mut out = [0u8; 20];
        pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password.as_bytes(), &salt, iterations, &mut out);
        out.to_vec()
    } else {
        let mut out = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password.as_bytes(), &salt, iterations, &mut out);
        out.to_vec()
    };
    let client_key = hmac(&salted, b"Client Key");
    let stored_key = if sha1 { sha1::Sha1::digest(&client_key).to_vec() } else { sha2::Sha256::digest(&client_key).to_vec() };
    let without_proof = format!("c={},r={nonce}", B64.encode(cbind));
    let auth_message = format!("{first_bare},{server_first},{without_proof}");
    let signature = hmac(&stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
    let server_key = hmac(&salted, b"Server Key");
    (format!("{without_proof},p={}", B64.encode(proof)), hmac(&server_key, auth_message.as_bytes()))
}

/// A TLS client that trusts exactly the server's generated certificate.
pub fn tls_connector(cert: &std::path::Path) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).expect("the server's certificate exists") {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

mod empty {
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    /// A do-nothing stream used as a placeholder while swapping transports.
    pub struct EmptyDuplex;
    impl AsyncRead for EmptyDuplex {
        fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, _: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }
    impl AsyncWrite for EmptyDuplex {
        fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<std::io::Result<usize>> {
            Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }
}
