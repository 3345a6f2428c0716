//! Channel bindings for a connection driven by rustls' unbuffered API, which (rustls 0.23)
//! offers neither the SNI nor `export_keying_material`. Both are learnt while the handshake
//! runs: rustls calls our certificate resolver and our key log synchronously inside
//! `process_tls_records`, on the thread that drives the connection, so a thread-local slot set
//! around that call ties what they see to the connection being driven.

use std::cell::RefCell;

use rustls::KeyLog;
use rustls::crypto::tls13::{HkdfExpander, OkmBlock};
use rustls::{ProtocolVersion, SupportedCipherSuite};

use crate::auth::ChannelBindings;

/// What the handshake of one connection revealed.
#[derive(Default)]
pub struct HandshakeFacts {
    /// The `tls-server-end-point` hash of the certificate the resolver chose.
    end_point_hash: Option<Vec<u8>>,
    /// TLS 1.3 exporter master secret, kept only until the handshake ends.
    exporter_secret: Option<Vec<u8>>,
}

thread_local! {
    static CURRENT: RefCell<Option<HandshakeFacts>> = const { RefCell::new(None) };
}

impl HandshakeFacts {
    /// Run `f` (a synchronous step of this connection's handshake) with `self` as the slot
    /// that the resolver and key log fill.
    pub fn collect<R>(&mut self, f: impl FnOnce() -> R) -> R {
        CURRENT.with(|c| *c.borrow_mut() = Some(std::mem::take(self)));
        let result = f();
        *self = CURRENT.with(|c| c.borrow_mut().take()).unwrap_or_default();
        result
    }

    /// The bindings once the handshake is complete. `tls-exporter` only on TLS 1.3: without
    /// the extended master secret it is unsafe on TLS 1.2 (RFC 9266 §3).
    pub fn into_bindings(mut self, version: Option<ProtocolVersion>, suite: Option<SupportedCipherSuite>) -> ChannelBindings {
        let tls_exporter = match (version, suite, &self.exporter_secret) {
            (Some(ProtocolVersion::TLSv1_3), Some(SupportedCipherSuite::Tls13(suite)), Some(secret)) => {
                channel_binding_exporter(suite, secret)
            }
            _ => None,
        };
        if let Some(secret) = self.exporter_secret.as_mut() {
            secret.fill(0);
        }
        ChannelBindings { tls_exporter, tls_server_end_point: self.end_point_hash.take() }
    }
}

/// Called by the certificate resolver with the certificate it serves.
pub fn record_certificate(end_point_hash: &Option<Vec<u8>>) {
    CURRENT.with(|c| {
        if let Some(facts) = c.borrow_mut().as_mut() {
            facts.end_point_hash = end_point_hash.clone();
        }
    });
}

/// A key log that only hands the exporter secret to the connection being driven; it never
/// writes anything anywhere.
#[derive(Debug)]
pub struct ExporterSecretLog;

const EXPORTER_SECRET: &str = "EXPORTER_SECRET";

impl KeyLog for ExporterSecretLog {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        if label != EXPORTER_SECRET {
            return;
        }
        CURRENT.with(|c| {
            if let Some(facts) = c.borrow_mut().as_mut() {
                facts.exporter_secret = Some(secret.to_vec());
            }
        });
    }

    fn will_log(&self, label: &str) -> bool {
        label == EXPORTER_SECRET
    }
}

/// RFC 8446 §7.5 TLS-Exporter("EXPORTER-Channel-Binding", no context, 32), as RFC 9266 asks:
/// HKDF-Expand-Label(Derive-Secret(secret, label, ""), "exporter", Hash(""), 32).
fn channel_binding_exporter(suite: &rustls::Tls13CipherSuite, exporter_secret: &[u8]) -> Option<Vec<u8>> {
    let hash = suite.common.hash_provider;
    let empty_hash = hash.hash(&[]);
    let master = suite.hkdf_provider.expander_for_okm(&OkmBlock::new(exporter_secret));
    let mut derived = vec![0u8; hash.output_len()];
    expand_label(master.as_ref(), b"EXPORTER-Channel-Binding", empty_hash.as_ref(), &mut derived)?;
    let expander = suite.hkdf_provider.expander_for_okm(&OkmBlock::new(&derived));
    derived.fill(0);
    let mut out = vec![0u8; 32];
    expand_label(expander.as_ref(), b"exporter", empty_hash.as_ref(), &mut out)?;
    Some(out)
}

/// RFC 8446 §7.1 HKDF-Expand-Label.
fn expand_label(expander: &dyn HkdfExpander, label: &[u8], context: &[u8], out: &mut [u8]) -> Option<()> {
    let length = u16::try_from(out.len()).ok()?.to_be_bytes();
    let label_len = [u8::try_from(b"tls13 ".len() + label.len()).ok()?];
    let context_len = [u8::try_from(context.len()).ok()?];
    expander.expand_slice(&[&length, &label_len, b"tls13 ", label, &context_len, context], out).ok()
}
