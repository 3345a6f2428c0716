//! Certificates between servers (XEP-0178, RFC 6120 §13.7.2, RFC 6125): SASL EXTERNAL both
//! ways when each side's certificate is signed by a CA the other trusts (`[s2s] ca_file`) and
//! names its domain; what happens when a certificate cannot be trusted, with and without
//! dialback; and the receiving side's rules, spoken raw: EXTERNAL offered only for the
//! domain the certificate names, the authorization identity checked.
//!
//! Storage plays no part here: SQLite only.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::Backend;
use crate::common::client::{condition, show};
use crate::s2s::{Pair, addr, pair_with, read_until};
use starling::config::{CertPaths, Config};

const B: &str = "b.example";

/// A test CA and certificates it signs, written to a directory.
pub(crate) struct Pki {
    dir: tempfile::TempDir,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "Starling test CA");
        let ca_pem = params.self_signed(&key).unwrap().pem();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).unwrap();
        Pki { dir, issuer: rcgen::Issuer::new(params, key) }
    }

    pub(crate) fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate for `names` (DNS-IDs), its chain file and key file.
    pub(crate) fn issue(&self, file: &str, names: &[&str]) -> CertPaths {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let paths = CertPaths { cert: self.dir.path().join(format!("{file}.crt")), key: self.dir.path().join(format!("{file}.key")) };
        // The whole chain: the test clients trust what the file holds (TestServer::cert_path).
        std::fs::write(&paths.cert, cert.pem() + &std::fs::read_to_string(self.ca_file()).unwrap()).unwrap();
        std::fs::write(&paths.key, key.serialize_pem()).unwrap();
        paths
    }
}

/// Serve `domain` with `cert`, and trust `ca_file`.
fn use_cert(c: &mut Config, domain: &str, cert: &CertPaths, ca_file: Option<&Path>) {
    c.tls.domains.insert(domain.to_string(), cert.clone());
    c.s2s.ca_file = ca_file.map(Path::to_path_buf);
}

fn error_text(e: &minidom::Element) -> String {
    e.children()
        .find(|c| c.name() == "error")
        .and_then(|er| er.get_child("text", "urn:ietf:params:xml:ns:xmpp-stanzas"))
        .map(|t| t.text())
        .unwrap_or_default()
}

/// A message each way between alice@localhost and bob@b.example, with the `from` each sees.
pub(crate) async fn chat_both_ways(p: &Pair) {
    let (mut alice, mut bob) = p.clients().await;
    alice.send("<message to='bob@b.example' type='chat' id='x1'><body>across</body></message>").await;
    let m = bob.expect("alice's message", |e| e.name() == "message").await;
    assert_eq!(m.attr("from"), Some("alice@localhost/a"), "{}", show(&m));
    bob.send("<message to='alice@localhost/a' type='chat' id='x2'><body>and back</body></message>").await;
    let m = alice.expect("bob's message", |e| e.name() == "message").await;
    assert_eq!(m.attr("from"), Some("bob@b.example/b"), "{}", show(&m));
}

/// Both servers have certificates from a CA the other trusts, and dialback is off on both:
/// only SASL EXTERNAL can authenticate the links, both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_external_both_ways() {
    let pki = Pki::new();
    let (a_cert, b_cert) = (pki.issue("a", &["localhost"]), pki.issue("b", &[B, "conference.b.example"]));
    let p = pair_with(
        Backend::Sqlite,
        |c| {
            use_cert(c, "localhost", &a_cert, Some(&pki.ca_file()));
            c.s2s.dialback = false;
        },
        |c| {
            use_cert(c, B, &b_cert, Some(&pki.ca_file()));
            c.s2s.dialback = false;
        },
    )
    .await;
    chat_both_ways(&p).await;
    p.stop().await;
}

/// A trusted certificate on one side only, dialback on: the side that can verify the other
/// may use either; both directions still work (dialback where EXTERNAL cannot be offered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_side_verified_dialback_fills_in() {
    let pki = Pki::new();
    let b_cert = pki.issue("b", &[B]);
    // a trusts b's CA; b has a's self-signed certificate and no CA file.
    let p = pair_with(Backend::Sqlite, |c| c.s2s.ca_file = Some(pki.ca_file()), |c| use_cert(c, B, &b_cert, None)).await;
    chat_both_ways(&p).await;
    p.stop().await;
}

/// `[s2s] dialback = false` and a peer whose certificate cannot be verified: no link, and
/// the stanzas come back with remote-server-not-found and a text that names the reason,
/// both ways (the refusing side's incoming stream ends with policy-violation, which the
/// other side reports).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_peer_without_dialback() {
    let p = pair_with(Backend::Sqlite, |c| c.s2s.dialback = false, |_| {}).await;
    let (mut alice, mut bob) = p.clients().await;
    alice.send("<message to='bob@b.example' type='chat' id='n1'><body>hi</body></message>").await;
    let e = alice.expect("a bounce", |e| e.attr("id") == Some("n1")).await;
    assert_eq!(condition(&e), "remote-server-not-found", "{}", show(&e));
    let text = error_text(&e);
    assert!(text.contains("not signed by a trusted authority") && text.contains("dialback = false"), "{text}");

    bob.send("<message to='alice@localhost' type='chat' id='n2'><body>hi</body></message>").await;
    let e = bob.expect("a bounce", |e| e.attr("id") == Some("n2")).await;
    assert_eq!(condition(&e), "remote-server-not-found", "{}", show(&e));
    let text = error_text(&e);
    assert!(text.contains("policy-violation") && text.contains("certificate"), "{text}");
    alice.expect_silence(std::time::Duration::from_millis(300)).await;
    p.stop().await;
}

/// A certificate from a trusted CA that names another domain is no better than an untrusted
/// one: with dialback off, the link fails and says which names the certificate has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_for_another_name() {
    let pki = Pki::new();
    let wrong = pki.issue("b", &["elsewhere.example"]);
    let p = pair_with(
        Backend::Sqlite,
        |c| {
            c.s2s.ca_file = Some(pki.ca_file());
            c.s2s.dialback = false;
        },
        |c| use_cert(c, B, &wrong, None),
    )
    .await;
    let mut alice = p.a.login("alice", "a").await;
    alice.send("<message to='bob@b.example' type='chat' id='w1'><body>hi</body></message>").await;
    let e = alice.expect("a bounce", |e| e.attr("id") == Some("w1")).await;
    assert_eq!(condition(&e), "remote-server-not-found", "{}", show(&e));
    assert!(error_text(&e).contains("elsewhere.example (DNS), not b.example"), "{}", show(&e));
    p.stop().await;
}

/// The client side of TLS for the raw tests: presents `cert`, trusts anything.
fn raw_tls(cert: &CertPaths) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert.cert).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(&cert.key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(TrustAnything(provider)))
        .with_client_auth_cert(chain, key)
        .unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[derive(Debug)]
struct TrustAnything(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for TrustAnything {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(&self, m: &[u8], c: &rustls_pki_types::CertificateDer<'_>, d: &rustls::DigitallySignedStruct) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(&self, m: &[u8], c: &rustls_pki_types::CertificateDer<'_>, d: &rustls::DigitallySignedStruct) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

pub(crate) fn header(from: &str) -> String {
    format!("<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' from='{from}' to='localhost' version='1.0'>")
}

/// Connect to `localhost`'s s2s port as `from`, STARTTLS with `cert`, and return the TLS
/// stream with the features of the stream after TLS.
pub(crate) async fn raw_stream(port: u16, from: &str, cert: &CertPaths) -> (tokio_rustls::client::TlsStream<TcpStream>, String) {
    let mut tcp = TcpStream::connect(addr(port)).await.unwrap();
    tcp.write_all(header(from).as_bytes()).await.unwrap();
    let mut seen = String::new();
    assert!(read_until(&mut tcp, &mut seen, "</stream:features>").await, "{seen}");
    assert!(!seen.contains("EXTERNAL"), "RFC 6120 §5.3.1: nothing but TLS before TLS: {seen}");
    tcp.write_all(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>").await.unwrap();
    assert!(read_until(&mut tcp, &mut seen, "<proceed").await, "{seen}");
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = raw_tls(cert).connect(name, tcp).await.unwrap();
    tls.write_all(header(from).as_bytes()).await.unwrap();
    let mut seen = String::new();
    assert!(read_until(&mut tls, &mut seen, "</stream:features>").await, "{seen}");
    (tls, seen)
}

/// XEP-0178 as the receiving server, with the peer's side spoken raw: EXTERNAL is offered
/// when the certificate is valid for the stream's `from` and not otherwise (step 9); an
/// authorization identity other than that domain is `invalid-authzid`, "=" takes the
/// stream's `from` (step 11); after `<success/>` the stream restarts without mechanisms, and
/// stanzas from the domain are routed, while another domain's are `invalid-from`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_offered_for_the_named_domain() {
    let pki = Pki::new();
    let c_cert = pki.issue("c", &["c.example"]);
    let p = pair_with(Backend::Sqlite, |c| c.s2s.ca_file = Some(pki.ca_file()), |_| {}).await;
    let mut alice = p.a.login("alice", "a").await;
    alice.available().await;

    // The certificate names c.example, the stream claims d.example: no EXTERNAL, dialback.
    let (_tls, features) = raw_stream(p.a_port, "d.example", &c_cert).await;
    assert!(!features.contains("EXTERNAL"), "{features}");
    assert!(features.contains("urn:xmpp:features:dialback"), "{features}");

    let (mut tls, features) = raw_stream(p.a_port, "c.example", &c_cert).await;
    assert!(features.contains("<mechanism>EXTERNAL</mechanism>"), "{features}");
    let mut seen = String::new();
    // base64("d.example")
    tls.write_all(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>ZC5leGFtcGxl</auth>").await.unwrap();
    assert!(read_until(&mut tls, &mut seen, "</failure>").await, "{seen}");
    assert!(seen.contains("<invalid-authzid"), "{seen}");
    tls.write_all(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>=</auth>").await.unwrap();
    assert!(read_until(&mut tls, &mut seen, "<invalid-mechanism").await, "{seen}");
    tls.write_all(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>").await.unwrap();
    assert!(read_until(&mut tls, &mut seen, "<success").await, "{seen}");
    tls.write_all(header("c.example").as_bytes()).await.unwrap();
    let mut seen = String::new();
    assert!(read_until(&mut tls, &mut seen, "</stream:features>").await, "{seen}");
    assert!(!seen.contains("mechanism"), "no second authentication: {seen}");
    tls.write_all(b"<message from='carol@c.example/x' to='alice@localhost' type='chat' id='c1'><body>via EXTERNAL</body></message>").await.unwrap();
    let m = alice.expect("carol's message", |e| e.name() == "message").await;
    assert_eq!(m.attr("from"), Some("carol@c.example/x"), "{}", show(&m));
    tls.write_all(b"<message from='eve@d.example' to='alice@localhost' type='chat'><body>not authenticated</body></message>").await.unwrap();
    assert!(read_until(&mut tls, &mut seen, "invalid-from").await, "{seen}");
    alice.expect_silence(std::time::Duration::from_millis(300)).await;
    p.stop().await;
}

/// `starling check s2s b.example` run as an admin would, with a configuration of its own
/// that speaks for `localhost` and finds b.example through `[s2s.targets]`.
async fn check_s2s(pki: &Pki, b_port: u16, dialback: bool, trust_ca: bool) -> (bool, String) {
    let a_cert = pki.issue("check-a", &["localhost"]);
    let ca = if trust_ca { format!("ca_file = {:?}\n", pki.ca_file().display().to_string()) } else { String::new() };
    let config = format!(
        "domains = [\"localhost\"]\ndata_dir = {:?}\n[tls.domains.\"localhost\"]\ncert = {:?}\nkey = {:?}\n[s2s]\ndialback = {dialback}\n{ca}[s2s.targets]\n\"b.example\" = \"127.0.0.1:{b_port}\"\n",
        pki.dir.path().join("check-data").display().to_string(),
        a_cert.cert.display().to_string(),
        a_cert.key.display().to_string(),
    );
    let path = pki.dir.path().join("check.toml");
    std::fs::write(&path, config).unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_starling"))
        .args(["--config", path.to_str().unwrap(), "check", "s2s", "b.example"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    assert!(!pki.dir.path().join("check-data").exists(), "check s2s wrote nothing: {text}");
    (output.status.success(), text)
}

/// `starling check s2s`: every step reported (DNS or the configured target, TCP, TLS, the
/// certificate's names and issuer, the features), and the outcome: SASL EXTERNAL when both
/// certificates are trusted; dialback when b.example does not trust ours; a failure that
/// says why and what to do when dialback is off and b.example's certificate is not trusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_s2s_reports_each_step() {
    let pki = Pki::new();
    let b_cert = pki.issue("b", &[B]);
    let b_port = crate::s2s::free_port();
    let b = crate::common::TestServer::start_with(Backend::Sqlite, |c| {
        c.domains = vec![B.into()];
        c.s2s.listen = vec![addr(b_port)];
        use_cert(c, B, &b_cert, Some(&pki.ca_file()));
    })
    .await;

    let (ok, text) = check_s2s(&pki, b_port, false, true).await;
    assert!(ok, "{text}");
    for want in [
        "[s2s.targets] names b.example",
        "TCP: connected",
        "TLS: TLSv1_3",
        "certificate: b.example (DNS); issued by CN=Starling test CA",
        "certificate: valid for b.example",
        "stream features: SASL EXTERNAL, dialback",
        "SASL EXTERNAL: accepted",
        "ok: links from localhost to b.example are authenticated by SASL EXTERNAL",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }

    // b.example trusts the CA, we do not: b's certificate is not valid for us, but ours is
    // for b; with dialback on, EXTERNAL still works one way.
    let (ok, text) = check_s2s(&pki, b_port, true, false).await;
    assert!(ok && text.contains("not signed by a trusted authority") && text.contains("SASL EXTERNAL: accepted"), "{text}");

    let (ok, text) = check_s2s(&pki, b_port, false, false).await;
    assert!(!ok, "{text}");
    assert!(text.contains("not valid") && text.contains("[s2s] dialback = false") && text.contains("what to do"), "{text}");
    b.stop().await;
}

/// With a certificate b.example does not trust and dialback on, the outcome is dialback,
/// with what it needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_s2s_dialback_outcome() {
    let pki = Pki::new();
    let b_port = crate::s2s::free_port();
    // b.example with its self-signed certificate and no CA file: it trusts nobody.
    let b = crate::common::TestServer::start_with(Backend::Sqlite, |c| {
        c.domains = vec![B.into()];
        c.s2s.listen = vec![addr(b_port)];
    })
    .await;
    let (ok, text) = check_s2s(&pki, b_port, true, true).await;
    assert!(ok, "{text}");
    assert!(text.contains("SASL EXTERNAL: not offered") && text.contains("would be authenticated by dialback"), "{text}");
    b.stop().await;
}
