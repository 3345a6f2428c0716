//! A lean XMPP c2s client for load generation: standard RFC 6120 only (plain, STARTTLS or
//! direct TLS; SCRAM-SHA-1 or SCRAM-SHA-256; bind; presence), so it works against any
//! server. It parses with quick-xml but builds no trees: a stanza is summarised as its
//! name, a few attributes and its body text.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use quick_xml::events::Event;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::net::{TcpSocket, TcpStream};

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub type Stream = Box<dyn Io>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Security {
    /// No TLS (the server must allow authentication without it).
    Plain,
    /// STARTTLS on the c2s port.
    Starttls,
    /// TLS from the first byte (XEP-0368).
    Direct,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mechanism {
    #[value(name = "SCRAM-SHA-1")]
    ScramSha1,
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub domain: String,
    pub security: Security,
    pub mechanism: Mechanism,
}

/// The parts of a stanza the scenarios look at.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub name: String,
    pub from: Option<String>,
    pub kind: Option<String>,
    pub id: Option<String>,
    pub body: Option<String>,
    /// Names of the direct children.
    pub children: Vec<String>,
    /// Text of the direct children (SASL payloads, bound JID).
    pub text: String,
    /// Names of the deeper descendants, space-separated (error conditions, roster items).
    pub inner: String,
    /// Roster items among the descendants, and those with subscription='both'.
    pub items: u32,
    pub items_both: u32,
    /// Roster items: (jid, subscription).
    pub roster: Vec<(String, String)>,
    /// XEP-0198 `h` of an `<a/>`, `<resumed/>` or `<failed/>`.
    pub h: Option<u32>,
    /// XEP-0313: the archive id of a `<result/>` (the body is then the archived message's).
    pub result_id: Option<String>,
    /// XEP-0045: the codes of the `<status/>` elements among the descendants.
    pub codes: Vec<u16>,
}

// A stanza's summary is moved out at once; boxing it would cost an allocation per stanza.
#[allow(clippy::large_enum_variant)]
pub enum Read {
    Header,
    Stanza(Summary),
    Closed,
}

/// Read buffer per session: small for many idle sessions, larger for chat throughput.
static READ_CAPACITY: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(16 * 1024);

pub fn set_read_capacity(bytes: usize) {
    READ_CAPACITY.store(bytes, std::sync::atomic::Ordering::Relaxed);
}

fn read_capacity() -> usize {
    READ_CAPACITY.load(std::sync::atomic::Ordering::Relaxed)
}

/// Reads first-level elements from the stream.
pub struct Reader<R> {
    xml: quick_xml::Reader<BufReader<R>>,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(r: R) -> Self {
        Self::with_capacity(r, read_capacity())
    }

    pub fn with_capacity(r: R, capacity: usize) -> Self {
        let mut xml = quick_xml::Reader::from_reader(BufReader::with_capacity(capacity, r));
        xml.config_mut().trim_text(false);
        Reader {
            xml,
            buf: Vec::new(),
        }
    }

    pub fn into_inner(self) -> R {
        self.xml.into_inner().into_inner()
    }

    pub async fn next(&mut self) -> io::Result<Read> {
        let mut depth = 0usize;
        let mut current = Summary::default();
        let mut in_body = false;
        let mut in_child_text = false;
        // The depth of a deeper <body> being read (a forwarded message's, XEP-0297): only
        // the first such body is kept, and only when the stanza has no body of its own.
        let mut nested_body: Option<usize> = None;
        loop {
            self.buf.clear();
            let event = self
                .xml
                .read_event_into_async(&mut self.buf)
                .await
                .map_err(io::Error::other)?;
            match event {
                Event::Start(e) | Event::Empty(e)
                    if depth == 0 && e.local_name().as_ref() == "stream" =>
                {
                    return Ok(Read::Header);
                }
                Event::Start(e) => {
                    let name = e.local_name().as_ref().to_string();
                    if depth == 0 {
                        current = summary(&e);
                    } else if depth == 1 {
                        in_body = name == "body";
                        in_child_text = true;
                        if name == "result" {
                            result_id(&mut current, &e);
                        }
                        current.children.push(name);
                    } else {
                        if name == "body" && current.body.is_none() && nested_body.is_none() {
                            nested_body = Some(depth);
                            in_body = true;
                        }
                        descendant(&mut current, &e);
                    }
                    depth += 1;
                }
                Event::Empty(e) => {
                    if depth == 0 {
                        return Ok(Read::Stanza(summary(&e)));
                    }
                    if depth == 1 {
                        current.children.push(e.local_name().as_ref().to_string());
                    } else {
                        descendant(&mut current, &e);
                    }
                }
                Event::End(_) => {
                    if depth == 0 {
                        return Ok(Read::Closed);
                    }
                    depth -= 1;
                    if nested_body == Some(depth) {
                        in_body = false;
                    }
                    if depth == 1 {
                        in_body = false;
                        in_child_text = false;
                    }
                    if depth == 0 {
                        return Ok(Read::Stanza(current));
                    }
                }
                Event::Text(t) if depth >= 1 => {
                    let text = t.xml_content(quick_xml::XmlVersion::Implicit1_0);
                    if in_body {
                        current.body.get_or_insert_with(String::new).push_str(&text);
                    } else if in_child_text || depth == 1 {
                        current.text.push_str(&text);
                    }
                }
                Event::GeneralRef(r) if in_body => {
                    let s = match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        _ => quick_xml::escape::resolve_predefined_entity(&r)
                            .unwrap_or("")
                            .to_string(),
                    };
                    current.body.get_or_insert_with(String::new).push_str(&s);
                }
                Event::Eof => return Ok(Read::Closed),
                _ => {}
            }
        }
    }

    /// The next first-level element, skipping stream headers.
    pub async fn stanza(&mut self) -> io::Result<Summary> {
        loop {
            match self.next().await? {
                Read::Header => continue,
                Read::Stanza(s) => return Ok(s),
                Read::Closed => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "stream closed",
                    ));
                }
            }
        }
    }
}

/// XEP-0313: the archive id of a `<result/>`.
fn result_id(s: &mut Summary, e: &quick_xml::events::BytesStart<'_>) {
    for a in e.attributes().flatten() {
        if a.key.as_ref() == "id" {
            s.result_id = Some(a.value.to_string());
        }
    }
}

fn descendant(s: &mut Summary, e: &quick_xml::events::BytesStart<'_>) {
    let name = e.local_name();
    if !s.inner.is_empty() {
        s.inner.push(' ');
    }
    s.inner.push_str(name.as_ref());
    if name.as_ref() == "status" {
        for a in e.attributes().flatten() {
            if a.key.as_ref() == "code"
                && let Ok(code) = a.value.parse()
            {
                s.codes.push(code);
            }
        }
    }
    if name.as_ref() == "item" {
        s.items += 1;
        let (mut jid, mut sub) = (String::new(), String::from("none"));
        for a in e.attributes().flatten() {
            match a.key.as_ref() {
                "jid" => jid = a.value.to_string(),
                "subscription" => sub = a.value.to_string(),
                _ => {}
            }
        }
        if sub == "both" {
            s.items_both += 1;
        }
        s.roster.push((jid, sub));
    }
}

fn summary(e: &quick_xml::events::BytesStart<'_>) -> Summary {
    let mut s = Summary {
        name: e.local_name().as_ref().to_string(),
        ..Summary::default()
    };
    for attr in e.attributes().flatten() {
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map(|v| v.into_owned())
            .ok();
        match attr.key.as_ref() {
            "from" => s.from = value,
            "type" => s.kind = value,
            "id" => s.id = value,
            "h" => s.h = value.and_then(|v| v.parse().ok()),
            _ => {}
        }
    }
    s
}

/// A logged-in session, split for concurrent reading and writing.
pub struct Session {
    pub reader: Reader<ReadHalf<Stream>>,
    pub writer: WriteHalf<Stream>,
    pub jid: String,
    /// XEP-0198, when enabled.
    pub sm: Option<SmEnabled>,
    /// XEP-0280 carbons enabled.
    pub carbons: bool,
}

/// Accept any certificate: the load generator measures servers, it does not protect data.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn connector() -> tokio_rustls::TlsConnector {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth();
        Arc::new(config)
    });
    tokio_rustls::TlsConnector::from(config.clone())
}

async fn tcp(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        // Let connect() pick the port, so the 4-tuple (not the source address alone) must
        // be unique: each source address then gives ~28k ports per destination.
        let one: libc::c_int = 1;
        // SAFETY: a valid socket and a pointer to an int of the size passed.
        unsafe {
            use std::os::fd::AsRawFd;
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn tls(stream: Stream, domain: &str) -> io::Result<Stream> {
    let name =
        rustls::pki_types::ServerName::try_from(domain.to_string()).map_err(io::Error::other)?;
    Ok(Box::new(connector().connect(name, stream).await?))
}

fn header(domain: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>"
    )
}

fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// Connect and secure (per `target.security`); the stream features have been read.
async fn open(
    target: &Target,
    source: Option<IpAddr>,
) -> io::Result<(Reader<ReadHalf<Stream>>, WriteHalf<Stream>)> {
    let mut stream: Stream = Box::new(tcp(target.addr, source).await?);
    if target.security == Security::Direct {
        stream = tls(stream, &target.domain).await?;
    }
    let (r, mut w) = tokio::io::split(stream);
    let mut reader = Reader::new(r);
    w.send(header(&target.domain).as_bytes()).await?;
    expect_features(&mut reader).await?;
    if target.security == Security::Starttls {
        w.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await?;
        let proceed = reader.stanza().await?;
        if proceed.name != "proceed" {
            return Err(err(format!("STARTTLS refused: <{}/>", proceed.name)));
        }
        let stream = reader.into_inner().unsplit(w);
        let (r, w2) = tokio::io::split(tls(stream, &target.domain).await?);
        reader = Reader::new(r);
        w = w2;
        w.send(header(&target.domain).as_bytes()).await?;
        expect_features(&mut reader).await?;
    }
    Ok((reader, w))
}

/// XEP-0077 in-band registration of `user` on a fresh connection. Ok(true) if created,
/// Ok(false) if it already existed.
pub async fn register(
    target: &Target,
    source: Option<IpAddr>,
    user: &str,
    password: &str,
) -> io::Result<bool> {
    let (mut reader, mut w) = open(target, source).await?;
    w.write_all(
        format!(
            "<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>{user}</username><password>{password}</password></query></iq>"
        )
        .as_bytes(),
    )
    .await?;
    let result = loop {
        let s = reader.stanza().await?;
        if s.name == "iq" && s.id.as_deref() == Some("reg") {
            break s;
        }
    };
    let _ = w.send(b"</stream:stream>").await;
    match result.kind.as_deref() {
        Some("result") => Ok(true),
        _ if result.inner.split(' ').any(|n| n == "conflict") => Ok(false),
        _ => Err(err(format!(
            "registration of {user} refused: {}",
            result.inner
        ))),
    }
}

/// What a session turns on after binding, as a modern client (Conversations) does.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extras {
    /// XEP-0198: `<enable/>` after bind, with `resume='true'` if `Some(true)`.
    pub sm: Option<bool>,
    /// XEP-0280: enable carbons (a refusal is noted, not an error).
    pub carbons: bool,
}

/// Stream management as the server enabled it.
#[derive(Debug, Clone)]
pub struct SmEnabled {
    /// The SM-ID to resume with (None: not resumable).
    pub id: Option<String>,
    /// Stanzas this client sent after `<enable/>` during the login (carbons, presence):
    /// where its count of sent stanzas starts.
    pub sent: u32,
    /// Stanzas received after `<enabled/>` during the login (the carbons answer): where
    /// its `h` starts.
    pub received: u32,
}

/// Connect, secure, authenticate, bind `resource` and (optionally) send initial presence.
pub async fn login(
    target: &Target,
    source: Option<IpAddr>,
    user: &str,
    password: &str,
    resource: &str,
    presence: bool,
) -> io::Result<Session> {
    login_with(
        target,
        source,
        user,
        password,
        resource,
        presence,
        Extras::default(),
    )
    .await
}

/// Connect, secure, authenticate; the restarted stream's features have been read.
async fn authenticate(
    target: &Target,
    source: Option<IpAddr>,
    user: &str,
    password: &str,
) -> io::Result<(Reader<ReadHalf<Stream>>, WriteHalf<Stream>)> {
    let (mut reader, mut w) = open(target, source).await?;
    scram(&mut reader, &mut w, target.mechanism, user, password).await?;
    // Restart on the same connection with a fresh parser.
    let (r, w2) = tokio::io::split(reader.into_inner().unsplit(w));
    reader = Reader::new(r);
    w = w2;
    w.send(header(&target.domain).as_bytes()).await?;
    expect_features(&mut reader).await?;
    Ok((reader, w))
}

/// [`login`], then what `extras` asks, in Conversations' order: bind, stream management,
/// carbons, initial presence.
pub async fn login_with(
    target: &Target,
    source: Option<IpAddr>,
    user: &str,
    password: &str,
    resource: &str,
    presence: bool,
    extras: Extras,
) -> io::Result<Session> {
    let (mut reader, mut w) = authenticate(target, source, user, password).await?;
    w.write_all(
        format!("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>").as_bytes(),
    )
    .await?;
    let bound = loop {
        let s = reader.stanza().await?;
        if s.name == "iq" && s.id.as_deref() == Some("bind") {
            break s;
        }
    };
    if bound.kind.as_deref() != Some("result") {
        return Err(err("bind failed"));
    }
    let jid = bound.text.trim().to_string();
    // Some servers still want the RFC 3921 session; it is harmless elsewhere.
    w.send(b"<iq type='set' id='sess'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
        .await?;
    loop {
        let s = reader.stanza().await?;
        if s.name == "iq" && s.id.as_deref() == Some("sess") {
            break;
        }
    }
    let mut sm = None;
    if let Some(resume) = extras.sm {
        let enable = if resume {
            "<enable xmlns='urn:xmpp:sm:3' resume='true'/>"
        } else {
            "<enable xmlns='urn:xmpp:sm:3'/>"
        };
        w.send(enable.as_bytes()).await?;
        let s = reader.stanza().await?;
        if s.name != "enabled" {
            return Err(err(format!(
                "stream management refused: <{}/> {}",
                s.name, s.inner
            )));
        }
        sm = Some(SmEnabled {
            id: s.id,
            sent: 0,
            received: 0,
        });
    }
    let mut carbons = false;
    if extras.carbons {
        w.send(b"<iq type='set' id='carbons'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
            .await?;
        if let Some(sm) = &mut sm {
            sm.sent += 1;
        }
        loop {
            let s = reader.stanza().await?;
            if let Some(sm) = &mut sm
                && crate::sm::counted(&s.name)
            {
                sm.received += 1;
            }
            if s.name == "iq" && s.id.as_deref() == Some("carbons") {
                carbons = s.kind.as_deref() == Some("result");
                break;
            }
        }
    }
    if presence {
        w.send(b"<presence/>").await?;
        if let Some(sm) = &mut sm {
            sm.sent += 1;
        }
    }
    w.flush().await?;
    Ok(Session {
        reader,
        writer: w,
        jid,
        sm,
        carbons,
    })
}

/// The server's answer to `<resume/>`.
pub enum Resumed {
    /// `<resumed h/>`: how many of our stanzas it had handled.
    Yes { h: u32 },
    /// `<failed/>`, with the condition.
    No(String),
}

/// XEP-0198 resumption on a new connection: authenticate, then `<resume previd h/>`
/// instead of binding. The stanzas the server sends again follow on the reader.
pub async fn resume(
    target: &Target,
    source: Option<IpAddr>,
    user: &str,
    password: &str,
    previd: &str,
    h: u32,
) -> io::Result<(Reader<ReadHalf<Stream>>, WriteHalf<Stream>, Resumed)> {
    let (mut reader, mut w) = authenticate(target, source, user, password).await?;
    w.send(format!("<resume xmlns='urn:xmpp:sm:3' previd='{previd}' h='{h}'/>").as_bytes())
        .await?;
    let s = reader.stanza().await?;
    let outcome = match s.name.as_str() {
        "resumed" => Resumed::Yes {
            h: s.h.unwrap_or(0),
        },
        "failed" => Resumed::No(if s.inner.is_empty() {
            "failed".into()
        } else {
            s.inner
        }),
        other => Resumed::No(format!("<{other}/>")),
    };
    Ok((reader, w, outcome))
}

async fn expect_features(reader: &mut Reader<ReadHalf<Stream>>) -> io::Result<()> {
    let s = reader.stanza().await?;
    if s.name != "features" {
        return Err(err(format!("expected stream features, got <{}/>", s.name)));
    }
    Ok(())
}

async fn scram(
    reader: &mut Reader<ReadHalf<Stream>>,
    w: &mut WriteHalf<Stream>,
    mechanism: Mechanism,
    user: &str,
    password: &str,
) -> io::Result<()> {
    let (name, sha1) = match mechanism {
        Mechanism::ScramSha1 => ("SCRAM-SHA-1", true),
        Mechanism::ScramSha256 => ("SCRAM-SHA-256", false),
    };
    let mut nonce_bytes = [0u8; 18];
    getrandom::fill(&mut nonce_bytes).map_err(|e| err(e.to_string()))?;
    let first_bare = format!("n={user},r={}", B64.encode(nonce_bytes));
    w.send(
        format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{name}'>{}</auth>",
            B64.encode(format!("n,,{first_bare}"))
        )
        .as_bytes(),
    )
    .await?;
    let challenge = reader.stanza().await?;
    if challenge.name != "challenge" {
        return Err(err(format!("SASL: <{}/>", challenge.name)));
    }
    let server_first = String::from_utf8(
        B64.decode(challenge.text.trim())
            .map_err(io::Error::other)?,
    )
    .map_err(io::Error::other)?;
    let client_final = client_final(sha1, password, &first_bare, &server_first)?;
    w.send(
        format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
            B64.encode(client_final)
        )
        .as_bytes(),
    )
    .await?;
    let outcome = reader.stanza().await?;
    if outcome.name != "success" {
        return Err(err(format!(
            "SASL failed: <{}/> {:?}",
            outcome.name, outcome.children
        )));
    }
    Ok(())
}

fn client_final(
    sha1: bool,
    password: &str,
    first_bare: &str,
    server_first: &str,
) -> io::Result<String> {
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::Digest;
    let mut nonce = "";
    let mut salt = Vec::new();
    let mut iterations = 0u32;
    for part in server_first.split(',') {
        match part.split_at_checked(2) {
            Some(("r=", v)) => nonce = v,
            Some(("s=", v)) => salt = B64.decode(v).map_err(io::Error::other)?,
            Some(("i=", v)) => iterations = v.parse().map_err(io::Error::other)?,
            _ => {}
        }
    }
    let salted = salted_password(sha1, password, &salt, iterations);
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
    let client_key = hmac(&salted, b"Client Key");
    let stored_key = if sha1 {
        sha1::Sha1::digest(&client_key).to_vec()
    } else {
        sha2::Sha256::digest(&client_key).to_vec()
    };
    let without_proof = format!("c=biws,r={nonce}");
    let auth_message = format!("{first_bare},{server_first},{without_proof}");
    let signature = hmac(&stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(&signature)
        .map(|(a, b)| a ^ b)
        .collect();
    Ok(format!("{without_proof},p={}", B64.encode(proof)))
}

/// PBKDF2 is the client's cost of a login: cached per (salt, iterations), since a load run
/// logs the same accounts in again and again.
fn salted_password(sha1: bool, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
    let key = (sha1, password.to_string(), salt.to_vec(), iterations);
    let cache = scram_cache();
    if let Some(v) = cache.lock().unwrap().get(&key) {
        return v.clone();
    }
    let out = if sha1 {
        let mut out = [0u8; 20];
        pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password.as_bytes(), salt, iterations, &mut out);
        out.to_vec()
    } else {
        let mut out = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password.as_bytes(), salt, iterations, &mut out);
        out.to_vec()
    };
    cache.lock().unwrap().insert(key, out.clone());
    out
}

/// Persist the salted-password cache, so that the load generator's PBKDF2 (the client's
/// share of a SCRAM login) is paid once per account and not in every measured run.
/// Lines: `sha1(0|1) iterations salt_b64 salted_b64 password_b64`.
pub fn load_scram_cache(path: &std::path::Path) -> usize {
    let Ok(text) = std::fs::read_to_string(path) else {
        return 0;
    };
    let cache = scram_cache();
    let mut cache = cache.lock().unwrap();
    let mut n = 0;
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() != 5 {
            continue;
        }
        let (Ok(salt), Ok(salted), Ok(password)) =
            (B64.decode(f[2]), B64.decode(f[3]), B64.decode(f[4]))
        else {
            continue;
        };
        let (Ok(iterations), Ok(password)) = (f[1].parse(), String::from_utf8(password)) else {
            continue;
        };
        cache.insert((f[0] == "1", password, salt, iterations), salted);
        n += 1;
    }
    n
}

pub fn save_scram_cache(path: &std::path::Path) -> io::Result<()> {
    let cache = scram_cache();
    let cache = cache.lock().unwrap();
    let mut out = String::new();
    for ((sha1, password, salt, iterations), salted) in cache.iter() {
        out.push_str(&format!(
            "{} {iterations} {} {} {}\n",
            u8::from(*sha1),
            B64.encode(salt),
            B64.encode(salted),
            B64.encode(password)
        ));
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, out)?;
    std::fs::rename(tmp, path)
}

type ScramCache =
    std::sync::Mutex<std::collections::HashMap<(bool, String, Vec<u8>, u32), Vec<u8>>>;

fn scram_cache() -> &'static ScramCache {
    static CACHE: std::sync::OnceLock<ScramCache> = std::sync::OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// write_all and flush: a TLS stream may keep written bytes in its buffer until flushed.
pub trait SendExt: AsyncWrite + Unpin + Send {
    fn send<'a>(
        &'a mut self,
        bytes: &'a [u8],
    ) -> impl std::future::Future<Output = io::Result<()>> + Send + 'a {
        async move {
            self.write_all(bytes).await?;
            self.flush().await
        }
    }
}
impl<T: AsyncWrite + Unpin + Send + ?Sized> SendExt for T {}
