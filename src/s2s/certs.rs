//! Certificates of other servers (RFC 6120 §13.7.2, RFC 6125, XEP-0178): whether a chain
//! leads to a trusted root (the system's, plus `[s2s] ca_file`) and whether it names the
//! domain it is presented for, as a DNS-ID (with the one-label wildcard), an SRV-ID
//! (`_xmpp-server.` or `_xmpps-server.` and the domain) or an XmppAddr.
//!
//! A CN-ID (the subject's common name) is not taken: RFC 6125 §6.4.4 allows it only when the
//! certificate has no subjectAltName of the supported kinds, and no publicly trusted
//! certificate has been issued without one since 2012 (CA/Browser Forum).

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, RootCertStore};
use rustls_pki_types::pem::PemObject;
use x509_parser::asn1_rs::{Any, FromDer};
use x509_parser::prelude::{GeneralName, X509Certificate};

/// id-on-xmppAddr (RFC 6120 §13.7.1.4).
const XMPP_ADDR: &str = "1.3.6.1.5.5.7.8.5";
/// id-on-dnsSRV (RFC 4985).
const SRV_NAME: &str = "1.3.6.1.5.5.7.8.7";

/// The trust anchors for other servers' certificates.
pub struct Trust {
    verifier: Arc<WebPkiServerVerifier>,
    /// How many anchors, and from where: for the log and `starling check`.
    pub description: String,
}

impl Trust {
    /// The system's roots and those of `ca_file` (when given). An unreadable CA file is an
    /// error; a system without roots is not (the CA file may be all there is).
    pub fn load(ca_file: Option<&Path>) -> Result<Trust, String> {
        let mut roots = RootCertStore::empty();
        let system = rustls_native_certs::load_native_certs();
        let (system_added, _) = roots.add_parsable_certificates(system.certs);
        let mut description = format!("{system_added} system roots");
        if let Some(path) = ca_file {
            let certs = read_pem_certificates(path)?;
            let (added, ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("{}: no usable certificate ({ignored} could not be parsed)", path.display()));
            }
            description.push_str(&format!(" and {added} from {}", path.display()));
        }
        Self::with_roots(roots, description)
    }

    fn with_roots(roots: RootCertStore, description: String) -> Result<Trust, String> {
        if roots.is_empty() {
            // A verifier with no roots cannot be built; one that knows nothing trusts nothing.
            return Ok(Trust { verifier: untrusting_verifier()?, description: "no trusted roots".into() });
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build().map_err(|e| e.to_string())?;
        Ok(Trust { verifier, description })
    }

    /// Whether `chain` (end entity first) is a valid certificate for `domain` now: `Err`
    /// says why not, in words for an admin. The certificate's key usage must allow a TLS
    /// server, whichever side of the connection it is presented on: servers present their one
    /// certificate both ways, and public CAs no longer issue it for TLS clients.
    pub fn check(&self, chain: &[CertificateDer<'_>], domain: &str) -> Result<(), String> {
        let Some((end_entity, intermediates)) = chain.split_first() else {
            return Err("no certificate was presented".into());
        };
        let name = ServerName::try_from(domain.to_string()).map_err(|_| format!("{domain} is not a domain name a certificate can name"))?;
        match self.verifier.verify_server_cert(end_entity, intermediates, &name, &[], UnixTime::now()) {
            Ok(_) => Ok(()),
            // The chain is good and only the DNS-ID check failed: look for the other kinds.
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. })) => {
                let ids = Identities::of(end_entity);
                if ids.names(domain) {
                    Ok(())
                } else {
                    Err(format!("the certificate is for {}, not {domain}", ids.describe()))
                }
            }
            Err(rustls::Error::InvalidCertificate(e)) => Err(describe_certificate_error(&e)),
            Err(e) => Err(format!("the certificate could not be checked: {e}")),
        }
    }
}

fn read_pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&pem).collect::<Result<_, _>>().map_err(|e| format!("{}: not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate found", path.display()));
    }
    Ok(certs)
}

/// Check `[s2s] ca_file` when the configuration is read: the error names the file.
pub fn check_ca_file(path: &Path) -> Result<usize, String> {
    let certs = read_pem_certificates(path)?;
    let mut roots = RootCertStore::empty();
    match roots.add_parsable_certificates(certs) {
        (0, _) => Err(format!("{}: no certificate in it can be a trust anchor", path.display())),
        (added, _) => Ok(added),
    }
}

/// A verifier that trusts no chain: built around a throwaway self-signed root nobody has
/// the key of, as rustls wants at least one.
fn untrusting_verifier() -> Result<Arc<WebPkiServerVerifier>, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let mut roots = RootCertStore::empty();
    roots.add(cert.der().clone()).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build().map_err(|e| e.to_string())
}

fn describe_certificate_error(e: &CertificateError) -> String {
    match e {
        CertificateError::UnknownIssuer => "the certificate is not signed by a trusted authority (self-signed, or its CA is not in the system's roots nor in [s2s] ca_file)".into(),
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "the certificate has expired".into(),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => "the certificate is not valid yet (check the clocks)".into(),
        CertificateError::Revoked => "the certificate was revoked".into(),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => "the certificate is not for TLS servers (extended key usage)".into(),
        CertificateError::BadSignature => "the certificate's signature does not verify (is its issuer a different CA with the same name as a trusted one?)".into(),
        CertificateError::BadEncoding => "the certificate cannot be parsed".into(),
        other => format!("the certificate is not valid: {other:?}"),
    }
}

/// The identities a certificate presents (RFC 6125 §1.8), lowercased.
#[derive(Debug, Default, PartialEq)]
pub struct Identities {
    /// dNSName entries, wildcards included.
    pub dns: Vec<String>,
    /// SRVName entries (`_xmpp-server.example.org`).
    pub srv: Vec<String>,
    /// id-on-xmppAddr entries.
    pub xmpp: Vec<String>,
    /// The subject's common name, shown to admins but never matched (see the module's
    /// comment).
    pub common_name: Option<String>,
    /// Not after, as a unix time.
    pub not_after: Option<i64>,
    /// The issuer's distinguished name.
    pub issuer: Option<String>,
}

impl Identities {
    pub fn of(cert: &CertificateDer<'_>) -> Identities {
        let Ok((_, cert)) = X509Certificate::from_der(cert.as_ref()) else { return Identities::default() };
        let mut ids = Identities {
            common_name: cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_ascii_lowercase),
            not_after: Some(cert.validity().not_after.timestamp()),
            issuer: Some(cert.issuer().to_string()),
            ..Identities::default()
        };
        let Ok(Some(san)) = cert.subject_alternative_name() else { return ids };
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => ids.dns.push(dns.to_ascii_lowercase()),
                GeneralName::OtherName(oid, value) => {
                    let oid = oid.to_id_string();
                    // otherName's value is `[0] EXPLICIT`: a UTF8String for XmppAddr, an
                    // IA5String for SRVName.
                    let Some(text) = explicit_string(value) else { continue };
                    if oid == XMPP_ADDR {
                        ids.xmpp.push(text.to_lowercase());
                    } else if oid == SRV_NAME {
                        ids.srv.push(text.to_ascii_lowercase());
                    }
                }
                _ => {}
            }
        }
        ids
    }

    /// RFC 6125 §6: whether one of the identities is `domain`'s (an XMPP server's: DNS-ID,
    /// SRV-ID for either XMPP server service, XmppAddr of the bare domain).
    pub fn names(&self, domain: &str) -> bool {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        self.dns.iter().any(|d| dns_id_matches(d, &domain))
            || self.srv.iter().any(|s| {
                s.strip_prefix("_xmpp-server.").or_else(|| s.strip_prefix("_xmpps-server.")).is_some_and(|d| d.trim_end_matches('.') == domain)
            })
            || self.xmpp.iter().any(|x| x == &domain)
    }

    /// The names, for a message: "a.example, *.a.example (DNS), a.example (XmppAddr)".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.dns.is_empty() {
            parts.push(format!("{} (DNS)", self.dns.join(", ")));
        }
        if !self.srv.is_empty() {
            parts.push(format!("{} (SRV)", self.srv.join(", ")));
        }
        if !self.xmpp.is_empty() {
            parts.push(format!("{} (XmppAddr)", self.xmpp.join(", ")));
        }
        if parts.is_empty() {
            return match &self.common_name {
                Some(cn) => format!("no subjectAltName, only the common name {cn} (not accepted)"),
                None => "no name at all".into(),
            };
        }
        parts.join("; ")
    }
}

/// A presented chain in words, for `starling check s2s`: the names of its first certificate,
/// who issued it, until when.
pub fn describe_chain(chain: &[CertificateDer<'_>]) -> String {
    let Some(first) = chain.first() else { return "certificate: none presented".into() };
    let ids = Identities::of(first);
    let until = ids
        .not_after
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .map(|t| format!("{}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()))
        .unwrap_or_else(|| "?".into());
    format!(
        "certificate: {}; issued by {}; valid until {until}; {} certificate{} in the chain",
        ids.describe(),
        ids.issuer.as_deref().unwrap_or("?"),
        chain.len(),
        if chain.len() == 1 { "" } else { "s" }
    )
}

/// RFC 6125 §6.4: the same name, or `*.` in place of exactly the left-most label.
fn dns_id_matches(presented: &str, domain: &str) -> bool {
    let presented = presented.trim_end_matches('.');
    if let Some(parent) = presented.strip_prefix("*.") {
        return domain.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest == parent && parent.contains('.'));
    }
    presented == domain
}

/// The string inside `[0] EXPLICIT <string>`.
fn explicit_string(der: &[u8]) -> Option<String> {
    let (_, tagged) = Any::from_der(der).ok()?;
    let (_, inner) = Any::from_der(tagged.data).ok()?;
    std::str::from_utf8(inner.data).ok().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(dns: &[&str], srv: &[&str], xmpp: &[&str]) -> Identities {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Identities { dns: owned(dns), srv: owned(srv), xmpp: owned(xmpp), ..Identities::default() }
    }

    #[test]
    fn dns_ids_and_wildcards() {
        let c = ids(&["a.example", "*.b.example"], &[], &[]);
        assert!(c.names("a.example"));
        assert!(c.names("A.Example."));
        assert!(c.names("chat.b.example"));
        // The wildcard is one label, and never the whole registered domain.
        assert!(!c.names("b.example"));
        assert!(!c.names("x.chat.b.example"));
        assert!(!c.names("sub.a.example"));
        assert!(!ids(&["*.example"], &[], &[]).names("b.example"));
    }

    #[test]
    fn srv_and_xmpp_ids() {
        let c = ids(&[], &["_xmpp-server.a.example", "_xmpps-server.b.example", "_xmpp-client.c.example"], &["d.example"]);
        assert!(c.names("a.example") && c.names("b.example") && c.names("d.example"));
        // A client SRV-ID is not a server's.
        assert!(!c.names("c.example"));
        assert!(!ids(&[], &[], &["user@e.example"]).names("e.example"));
    }

    fn signed_by(ca: &(rcgen::Certificate, rcgen::Issuer<'static, rcgen::KeyPair>), sans: Vec<rcgen::SanType>) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = sans;
        params.signed_by(&key, &ca.1).unwrap().der().clone()
    }

    fn new_ca(name: &str) -> (rcgen::Certificate, rcgen::Issuer<'static, rcgen::KeyPair>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        (cert, rcgen::Issuer::new(params, key))
    }

    fn trust(ca: &rcgen::Certificate) -> Trust {
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        Trust::with_roots(roots, "test".into()).unwrap()
    }

    #[test]
    fn chains_and_names() {
        let ca = new_ca("Test CA");
        let trust = trust(&ca.0);
        let dns = signed_by(&ca, vec![rcgen::SanType::DnsName("a.example".try_into().unwrap())]);
        assert_eq!(trust.check(std::slice::from_ref(&dns), "a.example"), Ok(()));
        let wrong = trust.check(std::slice::from_ref(&dns), "b.example").unwrap_err();
        assert!(wrong.contains("a.example (DNS)") && wrong.contains("not b.example"), "{wrong}");

        let xmpp_addr = rcgen::SanType::OtherName((vec![1, 3, 6, 1, 5, 5, 7, 8, 5], rcgen::OtherNameValue::Utf8String("c.example".into())));
        let xmpp = signed_by(&ca, vec![xmpp_addr]);
        assert_eq!(Identities::of(&xmpp).xmpp, ["c.example"]);
        assert_eq!(trust.check(std::slice::from_ref(&xmpp), "c.example"), Ok(()));

        let stranger = new_ca("Another CA");
        let untrusted = signed_by(&stranger, vec![rcgen::SanType::DnsName("a.example".try_into().unwrap())]);
        let e = trust.check(&[untrusted], "a.example").unwrap_err();
        assert!(e.contains("not signed by a trusted authority"), "{e}");
        assert!(trust.check(&[], "a.example").is_err());
    }

    #[test]
    fn no_roots_trusts_nothing() {
        let ca = new_ca("Test CA");
        let cert = signed_by(&ca, vec![rcgen::SanType::DnsName("a.example".try_into().unwrap())]);
        let trust = Trust::with_roots(RootCertStore::empty(), String::new()).unwrap();
        assert!(trust.check(&[cert], "a.example").is_err());
    }

    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not pem").unwrap();
        assert!(check_ca_file(&path).unwrap_err().contains("ca.pem"));
        assert!(check_ca_file(&dir.path().join("missing.pem")).unwrap_err().contains("missing.pem"));
        std::fs::write(&path, new_ca("Test CA").0.pem()).unwrap();
        assert_eq!(check_ca_file(&path), Ok(1));
    }
}
