//! What both directions of a server-to-server stream share: reading and writing elements
//! with deadlines, the stream header, dialback elements as every server writes them, and
//! the client side of TLS.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::io::ReadHalf;
use tokio::time::Instant;

use super::dialback::{Body, Dialback, Outcome};
use crate::c2s::transport::{Transport, Writer};
use crate::stanza::{Condition, StanzaError, StreamError};
use crate::xml::{self, Element, Limits, ReadStats, StreamEvent, StreamReader, XmlError};

pub(super) type Reader = StreamReader<ReadHalf<Transport>>;

/// Why a stream could not be used, in words for the sender of a bounced stanza and for the
/// log.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    pub condition: Condition,
    pub text: String,
}

impl Failure {
    pub fn not_found(text: impl Into<String>) -> Failure {
        Failure { condition: Condition::RemoteServerNotFound, text: text.into() }
    }

    pub fn timeout(text: impl Into<String>) -> Failure {
        Failure { condition: Condition::RemoteServerTimeout, text: text.into() }
    }

    pub fn to_error(&self) -> StanzaError {
        StanzaError::new(self.condition).with_text(self.text.clone())
    }
}

/// One server-to-server stream, either direction.
pub(super) struct Stream {
    pub reader: Reader,
    pub writer: Writer,
}

impl Stream {
    pub fn new(transport: Transport, max_stanza: usize) -> Stream {
        let (read, write) = tokio::io::split(transport);
        let limits = Limits { max_stanza_bytes: max_stanza, content_as_client: Some(xml::ns::SERVER), ..Limits::default() };
        let reader = StreamReader::new(xml::Input::new(read, ReadStats::new()), limits);
        Stream { reader, writer: Writer::new(write, Duration::from_secs(30)) }
    }

    /// The next event, by `deadline`.
    pub async fn read(&mut self, deadline: Instant, peer: &str) -> Result<StreamEvent, Failure> {
        match tokio::time::timeout_at(deadline, self.reader.next()).await {
            Err(_) => Err(Failure::timeout(format!("{peer} did not answer in time"))),
            Ok(read) => read_result(read, peer),
        }
    }

    /// The next element (not a stream header), by `deadline`; a stream error or the end of
    /// the stream is a failure that says what the peer said.
    pub async fn element(&mut self, deadline: Instant, peer: &str) -> Result<Element, Failure> {
        match self.read(deadline, peer).await? {
            StreamEvent::Element(el) if el.is("error", xml::ns::STREAMS) => Err(Failure::not_found(format!("{peer} ended the stream: {}", describe_stream_error(&el)))),
            StreamEvent::Element(el) => Ok(el),
            StreamEvent::Close => Err(Failure::not_found(format!("{peer} closed the stream"))),
            StreamEvent::Open(_) => Err(Failure::not_found(format!("{peer} opened a second stream header"))),
        }
    }

    pub fn send(&mut self, el: &Element) {
        self.writer.queue(el);
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.queue_raw(bytes);
    }

    pub async fn flush(&mut self, peer: &str) -> Result<(), Failure> {
        self.writer.flush().await.map_err(|e| Failure::not_found(format!("writing to {peer} failed: {e}")))
    }

    /// Send a stream error and close (RFC 6120 §4.9.1.1).
    pub async fn fail(&mut self, error: StreamError) {
        self.writer.queue(&error.to_element());
        let mut footer = Vec::new();
        xml::stream_footer(&mut footer);
        self.writer.queue_raw(&footer);
        let _ = self.writer.flush().await;
        self.writer.shutdown().await;
    }

    /// Close the stream (RFC 6120 §4.4).
    pub async fn close(&mut self) {
        let mut footer = Vec::new();
        xml::stream_footer(&mut footer);
        self.writer.queue_raw(&footer);
        let _ = self.writer.flush().await;
        self.writer.shutdown().await;
    }

    pub fn into_transport(self) -> Transport {
        self.reader.into_input().into_inner().unsplit(self.writer.into_inner())
    }
}

/// What a read gave, with the reason in words when it gave no event.
pub(super) fn read_result(read: Result<StreamEvent, XmlError>, peer: &str) -> Result<StreamEvent, Failure> {
    match read {
        Ok(event) => Ok(event),
        Err(XmlError::Eof | XmlError::Io(_)) => Err(Failure::not_found(format!("{peer} closed the connection"))),
        Err(e) => Err(Failure::not_found(format!("{peer} sent what is not XMPP: {e}"))),
    }
}

/// `<stream:error/>`'s condition and text, for a log line or a bounce.
pub(super) fn describe_stream_error(el: &Element) -> String {
    let condition = el.children().find(|c| c.ns() == xml::ns::XMPP_STREAMS && c.name() != "text").map(|c| c.name().to_string());
    let text = el.get_child("text", xml::ns::XMPP_STREAMS).map(|t| t.text());
    match (condition, text) {
        (Some(c), Some(t)) => format!("{c} ({t})"),
        (Some(c), None) => c,
        (None, Some(t)) => t,
        (None, None) => "no reason given".into(),
    }
}

/// Our stream header: `jabber:server`, dialback's prefix declared.
pub(super) fn header(from: &str, to: Option<&str>, id: &str) -> Vec<u8> {
    let mut out = Vec::new();
    xml::stream_header(&mut out, &xml::StreamHeader { default_ns: xml::ns::SERVER, from, to, id, lang: "en" });
    out
}

/// A dialback element with the `db:` prefix, as XEP-0220's examples write it (declared on
/// the stream header): some servers match it by its prefixed name.
pub(super) fn dialback_bytes(db: &Dialback) -> Vec<u8> {
    let el = db.to_element();
    let mut out = Vec::new();
    out.extend_from_slice(b"<db:");
    let name = el.name().to_string();
    out.extend_from_slice(name.as_bytes());
    for attr in ["from", "to", "id", "type"] {
        if let Some(v) = el.attr(attr) {
            out.extend_from_slice(format!(" {attr}='").as_bytes());
            xml::escape_attr(&mut out, v);
            out.push(b'\'');
        }
    }
    match &db.body {
        Body::Key(key) => {
            out.push(b'>');
            xml::escape_attr(&mut out, key);
            out.extend_from_slice(format!("</db:{name}>").as_bytes());
        }
        Body::Answer(Outcome::Error(_)) => {
            out.push(b'>');
            for child in el.children() {
                xml::write_element(&mut out, child, xml::ns::CLIENT);
            }
            out.extend_from_slice(format!("</db:{name}>").as_bytes());
        }
        Body::Answer(_) => out.extend_from_slice(b"/>"),
    }
    out
}

/// The client side of TLS to other servers, presenting `our_certificate` when the peer asks
/// for one (XEP-0178: it is what SASL EXTERNAL authenticates us with). Any certificate of
/// the peer's is taken at the handshake and judged after it (`S2s::trust`): with dialback, a
/// server proves its domain through DNS and a connection back to it, not through its
/// certificate (XEP-0220 §1, XEP-0344 §2.3). The handshake's signatures are checked.
pub(super) fn client_config(our_certificate: Arc<CertifiedKey>) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyCertificate(provider.clone()));
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(Present(our_certificate)));
    Arc::new(config)
}

/// The verifier of the server side of TLS for other servers: asks for their certificate,
/// does not require one, and takes any at the handshake (it is judged against the stream's
/// `from`, which only comes after).
pub(super) fn any_client_certificate() -> Arc<dyn ClientCertVerifier> {
    Arc::new(AnyCertificate(Arc::new(rustls::crypto::ring::default_provider())))
}

#[derive(Debug)]
struct Present(Arc<CertifiedKey>);

impl ResolvesClientCert for Present {
    fn resolve(&self, _root_hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for AnyCertificate {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn verify_client_cert(&self, _end_entity: &CertificateDer<'_>, _intermediates: &[CertificateDer<'_>], _now: UnixTime) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Start TLS as the client on a plain TCP stream, with SNI for `domain`.
pub(super) async fn connect_tls(transport: Transport, config: Arc<ClientConfig>, domain: &str, deadline: Instant) -> Result<Transport, Failure> {
    let Transport::Plain(tcp) = transport else { return Err(Failure::not_found("TLS was started twice")) };
    let name = ServerName::try_from(domain.to_string()).map_err(|_| Failure::not_found(format!("{domain} is not a name TLS can check")))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    match tokio::time::timeout_at(deadline, connector.connect(name, tcp)).await {
        Err(_) => Err(Failure::timeout(format!("the TLS handshake with {domain} did not finish in time"))),
        Ok(Err(e)) => Err(Failure::not_found(format!("the TLS handshake with {domain} failed: {e}"))),
        Ok(Ok(tls)) => Ok(Transport::TlsClient(Box::new(tls))),
    }
}
