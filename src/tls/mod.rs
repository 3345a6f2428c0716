//! TLS for client streams: certificates per domain (configured, or self-signed and kept in
//! `data_dir/certs/`), chosen by SNI, TLS 1.2 and 1.3 only; the stream that runs them.

mod binding;
mod stream;

pub use stream::TlsStream;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("certificate for {domain}: {message}")]
    Cert { domain: String, message: String },
}

/// One domain's certificate, with the hash used for `tls-server-end-point` binding.
#[derive(Debug)]
struct DomainCert {
    key: Arc<CertifiedKey>,
    end_point_hash: Option<Vec<u8>>,
    source: String,
}

/// Certificates for every served domain.
#[derive(Debug)]
pub struct Certificates {
    by_domain: HashMap<String, DomainCert>,
    default_domain: String,
}

impl Certificates {
    /// Load configured certificates, generating self-signed ones where none is configured.
    pub fn load(config: &Config) -> Result<Certificates, Vec<TlsError>> {
        Self::load_inner(config, true).map(|c| c.expect("generation is allowed"))
    }

    /// Validate the certificates without writing anything: one line per domain saying what
    /// would be served (`starling check`).
    pub fn check(config: &Config) -> Result<Vec<String>, Vec<TlsError>> {
        match Self::load_inner(config, false)? {
            Some(certs) => Ok(certs.describe()),
            None => Ok(config
                .domains
                .iter()
                .map(|d| {
                    let path = config.data_dir.join("certs").join(format!("{d}.crt"));
                    if config.tls.domains.contains_key(d) || config.tls.cert.is_some() || path.exists() {
                        format!("{d}: ok")
                    } else {
                        format!("{d}: a self-signed certificate will be generated at {}", path.display())
                    }
                })
                .collect()),
        }
    }

    /// The certificates as they are, writing nothing (`starling check s2s`): where a
    /// self-signed one would be generated at the first start, one is made for this run only.
    pub fn load_without_writing(config: &Config) -> Result<Certificates, Vec<TlsError>> {
        if let Some(certs) = Self::load_inner(config, false)? {
            return Ok(certs);
        }
        let scratch = std::env::temp_dir().join(format!("starling-check-{}", std::process::id()));
        let mut temporary = config.clone();
        temporary.data_dir = scratch.clone();
        let certs = Self::load_inner(&temporary, true).map(|c| c.expect("generation is allowed"));
        let _ = std::fs::remove_dir_all(&scratch);
        certs
    }

    /// `None` when a self-signed certificate would have to be generated and `generate` is off
    /// (everything else was still validated).
    fn load_inner(config: &Config, generate: bool) -> Result<Option<Certificates>, Vec<TlsError>> {
        let mut missing = false;
        let mut by_domain = HashMap::new();
        let mut errors = Vec::new();
        for domain in &config.domains {
            let result = if let Some(paths) = config.tls.domains.get(domain) {
                load_pair(domain, &paths.cert, &paths.key)
            } else if let (Some(cert), Some(key)) = (&config.tls.cert, &config.tls.key) {
                load_pair(domain, cert, key)
            } else {
                let dir = config.data_dir.join("certs");
                if !generate && !dir.join(format!("{domain}.crt")).exists() {
                    missing = true;
                    continue;
                }
                self_signed(domain, &dir)
            };
            match result {
                Ok(cert) => {
                    by_domain.insert(domain.clone(), cert);
                }
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        if missing {
            return Ok(None);
        }
        Ok(Some(Certificates { by_domain, default_domain: config.domains[0].clone() }))
    }

    /// The rustls configuration: TLS 1.3 and 1.2 only (RFC 7590), certificates by SNI.
    pub fn server_config(self: &Arc<Self>) -> Arc<ServerConfig> {
        self.server_config_with(WebPkiClientVerifier::no_client_auth())
    }

    /// [`Self::server_config`] for server-to-server streams: the peer is asked for its
    /// certificate, which `client_certificates` judges (XEP-0178: it is checked against the
    /// stream's `from` once that is known).
    pub fn s2s_server_config(self: &Arc<Self>, client_certificates: Arc<dyn ClientCertVerifier>) -> Arc<ServerConfig> {
        self.server_config_with(client_certificates)
    }

    fn server_config_with(self: &Arc<Self>, client_certificates: Arc<dyn ClientCertVerifier>) -> Arc<ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("ring supports TLS 1.2 and 1.3")
            .with_client_cert_verifier(client_certificates)
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        // No ALPN list: XEP-0368 clients may offer "xmpp-client", and rustls would refuse a
        // client whose offer does not overlap a configured list.
        config.ignore_client_order = true;
        // Hands the TLS 1.3 exporter secret to the connection being driven, for RFC 9266
        // `tls-exporter`; it writes nothing anywhere.
        config.key_log = Arc::new(binding::ExporterSecretLog);
        Arc::new(config)
    }

    fn for_name(&self, name: Option<&str>) -> &DomainCert {
        name.and_then(|n| self.by_domain.get(&n.to_ascii_lowercase()))
            .unwrap_or_else(|| &self.by_domain[&self.default_domain])
    }

    /// The certificate to present as `domain` to other servers: its own, or that of the
    /// served domain it is under (a service's subdomain), or the first domain's.
    pub fn for_server(&self, domain: &str) -> Arc<CertifiedKey> {
        let domain = domain.to_ascii_lowercase();
        let mut name = domain.as_str();
        loop {
            if let Some(cert) = self.by_domain.get(name) {
                return cert.key.clone();
            }
            match name.split_once('.') {
                Some((_, parent)) if parent.contains('.') || self.by_domain.contains_key(parent) => name = parent,
                _ => return self.by_domain[&self.default_domain].key.clone(),
            }
        }
    }

    /// The `tls-server-end-point` channel binding for the certificate served under `sni`.
    pub fn end_point_hash(&self, sni: Option<&str>) -> Option<Vec<u8>> {
        self.for_name(sni).end_point_hash.clone()
    }

    /// Human-readable lines for `starling check`.
    pub fn describe(&self) -> Vec<String> {
        let mut lines: Vec<String> =
            self.by_domain.iter().map(|(d, c)| format!("{d}: {}", c.source)).collect();
        lines.sort();
        lines
    }
}

#[derive(Debug)]
struct Resolver(Arc<Certificates>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let cert = self.0.for_name(hello.server_name());
        binding::record_certificate(&cert.end_point_hash);
        Some(cert.key.clone())
    }
}

fn file_error(path: &Path, message: impl ToString) -> TlsError {
    TlsError::File { path: path.to_path_buf(), message: message.to_string() }
}

fn load_pair(domain: &str, cert_path: &Path, key_path: &Path) -> Result<DomainCert, TlsError> {
    let cert_pem = std::fs::read(cert_path).map_err(|e| file_error(cert_path, e))?;
    let key_pem = std::fs::read(key_path).map_err(|e| file_error(key_path, e))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(cert_path, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(file_error(cert_path, "no certificate found"));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| file_error(key_path, format!("not a PEM private key: {e}")))?;
    build(domain, chain, key, format!("{} (configured)", cert_path.display()))
}

fn build(domain: &str, chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>, source: String) -> Result<DomainCert, TlsError> {
    let provider = rustls::crypto::ring::default_provider();
    let end_point_hash = crate::auth::scram::tls_server_end_point(&chain[0]);
    let certified = CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| TlsError::Cert { domain: domain.to_string(), message: e.to_string() })?;
    Ok(DomainCert { key: Arc::new(certified), end_point_hash, source })
}

/// A self-signed certificate for `domain`, generated once and kept in `dir`.
fn self_signed(domain: &str, dir: &Path) -> Result<DomainCert, TlsError> {
    let cert_path = dir.join(format!("{domain}.crt"));
    let key_path = dir.join(format!("{domain}.key"));
    if cert_path.exists() && key_path.exists() {
        let mut cert = load_pair(domain, &cert_path, &key_path)?;
        cert.source = format!("{} (self-signed)", cert_path.display());
        return Ok(cert);
    }
    // 0700 whatever the umask: it holds private keys.
    crate::files::private_dir(dir).map_err(|e| file_error(dir, e))?;
    let key = rcgen::KeyPair::generate().map_err(|e| TlsError::Cert { domain: domain.into(), message: e.to_string() })?;
    let mut params = rcgen::CertificateParams::new(vec![domain.to_string()])
        .map_err(|e| TlsError::Cert { domain: domain.into(), message: e.to_string() })?;
    params.distinguished_name.push(rcgen::DnType::CommonName, domain);
    let cert = params.self_signed(&key).map_err(|e| TlsError::Cert { domain: domain.into(), message: e.to_string() })?;
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    std::fs::write(&cert_path, cert.pem()).map_err(|e| file_error(&cert_path, e))?;
    tracing::info!(domain, path = %cert_path.display(), "generated a self-signed certificate");
    let key_der = PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| TlsError::Cert { domain: domain.into(), message: e.to_string() })?;
    build(domain, vec![cert.der().clone()], key_der, format!("{} (self-signed, generated now)", cert_path.display()))
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| file_error(path, e))?;
    f.write_all(data).map_err(|e| file_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_and_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::defaults_here();
        config.data_dir = dir.path().to_path_buf();
        config.domains = vec!["localhost".into(), "example.org".into()];
        let first = Arc::new(Certificates::load(&config).unwrap());
        let hash = first.end_point_hash(Some("example.org")).unwrap();
        let second = Certificates::load(&config).unwrap();
        assert_eq!(second.end_point_hash(Some("EXAMPLE.org")).unwrap(), hash);
        assert_ne!(second.end_point_hash(Some("localhost")).unwrap(), hash);
        // Unknown SNI falls back to the first domain.
        assert_eq!(second.end_point_hash(Some("other")), second.end_point_hash(Some("localhost")));
        let _ = first.server_config();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("certs/localhost.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mode = std::fs::metadata(dir.path().join("certs")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn bad_files_are_reported_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.pem"), "nonsense").unwrap();
        let mut config = Config::defaults_here();
        config.tls.cert = Some(dir.path().join("c.pem"));
        config.tls.key = Some(dir.path().join("missing.key"));
        let errors = Certificates::load(&config).unwrap_err();
        let text = errors[0].to_string();
        assert!(text.contains("missing.key") || text.contains("c.pem"), "{text}");
    }
}
