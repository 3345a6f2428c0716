//! SCRAM (RFC 5802, RFC 7677) on the server side, sans-IO, and the stored credentials.
//!
//! We store StoredKey and ServerKey per hash (never the password, never SaltedPassword),
//! which is enough to verify a SCRAM exchange and, by recomputing, a PLAIN password.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::SaslFailure;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramHash {
    Sha1,
    Sha256,
}

impl ScramHash {
    pub const ALL: [ScramHash; 2] = [ScramHash::Sha256, ScramHash::Sha1];

    /// The SASL mechanism name, also the key under which credentials are stored.
    pub fn mechanism(self) -> &'static str {
        match self {
            ScramHash::Sha1 => "SCRAM-SHA-1",
            ScramHash::Sha256 => "SCRAM-SHA-256",
        }
    }

    pub fn from_mechanism(name: &str) -> Option<ScramHash> {
        match name {
            "SCRAM-SHA-1" => Some(ScramHash::Sha1),
            "SCRAM-SHA-256" => Some(ScramHash::Sha256),
            _ => None,
        }
    }

    fn hmac(self, key: &[u8], data: &[&[u8]]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => {
                let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
                data.iter().for_each(|d| mac.update(d));
                mac.finalize().into_bytes().to_vec()
            }
            ScramHash::Sha256 => {
                let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
                data.iter().for_each(|d| mac.update(d));
                mac.finalize().into_bytes().to_vec()
            }
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => {
                let mut out = [0u8; 20];
                pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out);
                out.to_vec()
            }
            ScramHash::Sha256 => {
                let mut out = [0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out.to_vec()
            }
        }
    }
}

/// What is stored per account and hash (RFC 5802 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramCredential {
    pub hash: ScramHash,
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
#[error("the password contains characters SASLprep does not allow")]
pub struct BadPassword;

impl ScramCredential {
    /// Derive a credential from a password with a fresh random salt.
    pub fn derive(hash: ScramHash, password: &str, iterations: u32) -> Result<Self, BadPassword> {
        let mut salt = vec![0u8; 16];
        getrandom::fill(&mut salt).expect("the OS random source works");
        Self::derive_with_salt(hash, password, salt, iterations)
    }

    pub fn derive_with_salt(hash: ScramHash, password: &str, salt: Vec<u8>, iterations: u32) -> Result<Self, BadPassword> {
        let prepared = stringprep::saslprep(password).map_err(|_| BadPassword)?;
        let salted = hash.salted_password(prepared.as_bytes(), &salt, iterations);
        let client_key = hash.hmac(&salted, &[b"Client Key"]);
        let stored_key = hash.hash(&client_key);
        let server_key = hash.hmac(&salted, &[b"Server Key"]);
        Ok(ScramCredential { hash, salt, iterations, stored_key, server_key })
    }

    /// Check a plaintext password (SASL PLAIN) by recomputing StoredKey, in constant time.
    pub fn verify_password(&self, password: &str) -> bool {
        let Ok(prepared) = stringprep::saslprep(password) else { return false };
        let salted = self.hash.salted_password(prepared.as_bytes(), &self.salt, self.iterations);
        let client_key = self.hash.hmac(&salted, &[b"Client Key"]);
        let stored_key = self.hash.hash(&client_key);
        stored_key.ct_eq(&self.stored_key).into()
    }

    /// A credential that matches no password, used for unknown users so that the exchange
    /// looks the same whether or not the account exists (RFC 5802 §9).
    pub fn decoy(hash: ScramHash, username: &str, secret: &[u8], iterations: u32) -> Self {
        let salt = hash.hmac(secret, &[b"decoy salt", username.as_bytes()])[..16].to_vec();
        let mut stored_key = vec![0u8; hash.hash(b"").len()];
        getrandom::fill(&mut stored_key).expect("the OS random source works");
        ScramCredential { hash, salt, iterations, server_key: stored_key.clone(), stored_key }
    }
}

/// Credentials for every supported hash from one password.
pub fn derive_all(password: &str, iterations: u32) -> Result<Vec<ScramCredential>, BadPassword> {
    ScramHash::ALL.iter().map(|&h| ScramCredential::derive(h, password, iterations)).collect()
}

/// The channel binding the server would compute for this connection.
#[derive(Debug, Clone, Default)]
pub struct ChannelBindings {
    /// RFC 9266 `tls-exporter` (only offered on TLS 1.3).
    pub tls_exporter: Option<Vec<u8>>,
    /// RFC 5929 `tls-server-end-point`: the hash of our certificate.
    pub tls_server_end_point: Option<Vec<u8>>,
}

impl ChannelBindings {
    pub fn types(&self) -> Vec<&'static str> {
        let mut t = Vec::new();
        if self.tls_exporter.is_some() {
            t.push("tls-exporter");
        }
        if self.tls_server_end_point.is_some() {
            t.push("tls-server-end-point");
        }
        t
    }

    fn get(&self, name: &str) -> Option<&[u8]> {
        match name {
            "tls-exporter" => self.tls_exporter.as_deref(),
            "tls-server-end-point" => self.tls_server_end_point.as_deref(),
            _ => None,
        }
    }

    pub fn any(&self) -> bool {
        self.tls_exporter.is_some() || self.tls_server_end_point.is_some()
    }
}

/// The parsed client-first-message.
#[derive(Debug)]
pub struct ClientFirst {
    /// The username as sent, with `=2C`/`=3D` decoded (not yet normalised).
    pub username: String,
    pub authzid: Option<String>,
    gs2_header: String,
    client_first_bare: String,
    client_nonce: String,
    /// The channel binding type the client asked for (`p=`).
    cb_type: Option<String>,
    /// The GS2 flag was `p=` or `y`: the client supports channel binding.
    client_can_bind: bool,
}

/// The server side of one SCRAM exchange after the client-first-message.
pub struct ScramServer {
    hash: ScramHash,
    credential: ScramCredential,
    first: ClientFirst,
    nonce: String,
    server_first: String,
}

/// Parse the client-first-message (RFC 5802 §7). `plus`: the mechanism is a -PLUS one, which
/// needs `p=`; the others take `n` or `y`. Whether the binding fits this connection is
/// `ClientFirst::binding_refusal`.
pub fn parse_client_first(message: &[u8], plus: bool) -> Result<ClientFirst, SaslFailure> {
    let text = std::str::from_utf8(message).map_err(|_| SaslFailure::MalformedRequest)?;
    let mut parts = text.splitn(3, ',');
    let flag = parts.next().ok_or(SaslFailure::MalformedRequest)?;
    let authzid = parts.next().ok_or(SaslFailure::MalformedRequest)?;
    let bare = parts.next().ok_or(SaslFailure::MalformedRequest)?;
    let (cb_type, client_can_bind) = match flag {
        "n" if !plus => (None, false),
        "y" if !plus => (None, true),
        f if f.starts_with("p=") && plus => (Some(f[2..].to_string()), true),
        _ => return Err(SaslFailure::MalformedRequest),
    };
    let authzid = match authzid {
        "" => None,
        a => Some(decode_saslname(a.strip_prefix("a=").ok_or(SaslFailure::MalformedRequest)?)?),
    };
    let gs2_header = format!("{flag},{},", text.split(',').nth(1).unwrap_or(""));
    let mut username = None;
    let mut nonce = None;
    for (i, attr) in bare.split(',').enumerate() {
        match (i, attr.split_once('=')) {
            // "m=" (mandatory extension) is not supported: RFC 5802 says fail.
            (0, Some(("m", _))) => return Err(SaslFailure::MalformedRequest),
            (0, Some(("n", v))) => username = Some(decode_saslname(v)?),
            (1, Some(("r", v))) if !v.is_empty() && v.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',') => {
                nonce = Some(v.to_string())
            }
            (0 | 1, _) => return Err(SaslFailure::MalformedRequest),
            _ => {} // optional extensions are ignored
        }
    }
    Ok(ClientFirst {
        username: username.ok_or(SaslFailure::MalformedRequest)?,
        authzid,
        gs2_header,
        client_first_bare: bare.to_string(),
        client_nonce: nonce.ok_or(SaslFailure::MalformedRequest)?,
        cb_type,
        client_can_bind,
    })
}

impl ClientFirst {
    /// Why the channel-binding part of this message cannot lead to a login on this
    /// connection, if it cannot. Both cases are protocol failures (`malformed-request`,
    /// answered at once, not a failed password), so that a client walks down its list of
    /// mechanisms quickly to one that works.
    ///
    /// * `p=<type>` for a type we do not offer here: no exchange could succeed. (Debian 12's
    ///   slixmpp 1.8.3 asks for `tls-unique`, which TLS 1.3 does not have.)
    /// * `y` (the client can bind but believes the server cannot) while we offered -PLUS:
    ///   RFC 5802 §6 requires failing, since we cannot tell a client that truly shares no
    ///   binding type with us from a man in the middle who removed -PLUS from the list. This
    ///   holds even after a refused `p=` on the same stream: a man in the middle could forge
    ///   that attempt too.
    ///
    /// `y` when we offered no -PLUS (no binding on this connection) is fine.
    pub fn binding_refusal(&self, bindings: &ChannelBindings, plus_offered: bool) -> Option<&'static str> {
        match &self.cb_type {
            Some(t) if bindings.get(t).is_none() => {
                Some("unsupported channel binding type; see the server's <sasl-channel-binding/> (XEP-0440)")
            }
            Some(_) => None,
            None if self.client_can_bind && plus_offered => {
                Some("channel binding downgrade: the client supports it (gs2 flag 'y') and the server offers -PLUS mechanisms")
            }
            None => None,
        }
    }
}

/// RFC 5802 §5.1: `=2C` is ',' and `=3D` is '='; any other '=' is an error.
fn decode_saslname(s: &str) -> Result<String, SaslFailure> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(SaslFailure::MalformedRequest),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

impl ScramServer {
    /// Continue with the account's credential (or a decoy); returns the server-first-message.
    pub fn new(first: ClientFirst, credential: ScramCredential) -> (ScramServer, Vec<u8>) {
        let mut random = [0u8; 18];
        getrandom::fill(&mut random).expect("the OS random source works");
        let nonce = format!("{}{}", first.client_nonce, B64.encode(random));
        let server_first = format!("r={nonce},s={},i={}", B64.encode(&credential.salt), credential.iterations);
        let out = server_first.clone().into_bytes();
        (ScramServer { hash: credential.hash, credential, first, nonce, server_first }, out)
    }

    /// Verify the client-final-message; on success returns the server-final-message.
    pub fn finish(self, message: &[u8], bindings: &ChannelBindings) -> Result<Vec<u8>, SaslFailure> {
        let text = std::str::from_utf8(message).map_err(|_| SaslFailure::MalformedRequest)?;
        let (without_proof, proof) = text.rsplit_once(",p=").ok_or(SaslFailure::MalformedRequest)?;
        let mut attrs = without_proof.split(',');
        let c = attrs.next().and_then(|a| a.strip_prefix("c=")).ok_or(SaslFailure::MalformedRequest)?;
        let r = attrs.next().and_then(|a| a.strip_prefix("r=")).ok_or(SaslFailure::MalformedRequest)?;
        let c = B64.decode(c).map_err(|_| SaslFailure::IncorrectEncoding)?;
        let proof = B64.decode(proof).map_err(|_| SaslFailure::IncorrectEncoding)?;

        // The channel binding: the GS2 header again, plus our own binding data if the client
        // asked for one. A mismatch means a different TLS channel (a man in the middle).
        let mut expected_c = self.first.gs2_header.as_bytes().to_vec();
        if let Some(cb_type) = &self.first.cb_type {
            let data = bindings.get(cb_type).ok_or(SaslFailure::NotAuthorized)?;
            expected_c.extend_from_slice(data);
        }
        let nonce_ok: bool = r.as_bytes().ct_eq(self.nonce.as_bytes()).into();
        let cb_ok: bool = c.ct_eq(&expected_c).into();

        let auth_message = format!("{},{},{}", self.first.client_first_bare, self.server_first, without_proof);
        let client_signature = self.hash.hmac(&self.credential.stored_key, &[auth_message.as_bytes()]);
        if proof.len() != client_signature.len() {
            return Err(SaslFailure::NotAuthorized);
        }
        let client_key: Vec<u8> = proof.iter().zip(&client_signature).map(|(a, b)| a ^ b).collect();
        let key_ok: bool = self.hash.hash(&client_key).ct_eq(&self.credential.stored_key).into();
        if !(nonce_ok && cb_ok && key_ok) {
            return Err(SaslFailure::NotAuthorized);
        }
        let server_signature = self.hash.hmac(&self.credential.server_key, &[auth_message.as_bytes()]);
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

/// RFC 5929 §4.1: hash the certificate with the hash of its signature algorithm, SHA-256
/// when that is MD5 or SHA-1. `None` when the algorithm has no defined hash (Ed25519).
pub fn tls_server_end_point(cert_der: &[u8]) -> Option<Vec<u8>> {
    use sha2::{Sha384, Sha512};
    let oid = signature_algorithm_oid(cert_der)?;
    // OID bodies (DER content octets) of the common certificate signature algorithms.
    const SHA256: &[&[u8]] = &[
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b], // sha256WithRSAEncryption
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02],       // ecdsa-with-SHA256
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05], // sha1WithRSAEncryption
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01],             // ecdsa-with-SHA1
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a], // RSASSA-PSS (SHA-256 in practice)
    ];
    const SHA384: &[&[u8]] = &[
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c],
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],
    ];
    const SHA512: &[&[u8]] = &[
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d],
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04],
    ];
    if SHA256.contains(&oid) {
        Some(Sha256::digest(cert_der).to_vec())
    } else if SHA384.contains(&oid) {
        Some(Sha384::digest(cert_der).to_vec())
    } else if SHA512.contains(&oid) {
        Some(Sha512::digest(cert_der).to_vec())
    } else {
        None
    }
}

/// `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm AlgorithmIdentifier, ... }`:
/// the content octets of the algorithm OID.
fn signature_algorithm_oid(der: &[u8]) -> Option<&[u8]> {
    fn header(d: &[u8]) -> Option<(u8, usize, usize)> {
        let tag = *d.first()?;
        let first = *d.get(1)? as usize;
        if first < 0x80 {
            return Some((tag, 2, first));
        }
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *d.get(2 + i)? as usize;
        }
        Some((tag, 2 + n, len))
    }
    let (tag, hl, _) = header(der)?;
    if tag != 0x30 {
        return None;
    }
    let inner = &der[hl..];
    let (tag, tbs_hl, tbs_len) = header(inner)?;
    if tag != 0x30 {
        return None;
    }
    let after_tbs = inner.get(tbs_hl + tbs_len..)?;
    let (tag, alg_hl, _) = header(after_tbs)?;
    if tag != 0x30 {
        return None;
    }
    let alg = &after_tbs[alg_hl..];
    let (tag, oid_hl, oid_len) = header(alg)?;
    if tag != 0x06 {
        return None;
    }
    alg.get(oid_hl..oid_hl + oid_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client-side SCRAM computation, for tests only.
    pub(crate) fn client_final(
        hash: ScramHash,
        password: &str,
        client_first_bare: &str,
        gs2_and_cb: &[u8],
        server_first: &str,
    ) -> String {
        let mut fields = server_first.split(',');
        let r = fields.next().unwrap().strip_prefix("r=").unwrap();
        let s = B64.decode(fields.next().unwrap().strip_prefix("s=").unwrap()).unwrap();
        let i: u32 = fields.next().unwrap().strip_prefix("i=").unwrap().parse().unwrap();
        let salted = hash.salted_password(password.as_bytes(), &s, i);
        let client_key = hash.hmac(&salted, &[b"Client Key"]);
        let stored_key = hash.hash(&client_key);
        let without_proof = format!("c={},r={r}", B64.encode(gs2_and_cb));
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let sig = hash.hmac(&stored_key, &[auth.as_bytes()]);
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }

    /// RFC 7677 §3 test vector (SCRAM-SHA-256), with the server nonce fixed.
    #[test]
    fn rfc7677_vector() {
        let cred = ScramCredential::derive_with_salt(
            ScramHash::Sha256,
            "pencil",
            B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap(),
            4096,
        )
        .unwrap();
        let first = parse_client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", false).unwrap();
        let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".to_string();
        let server_first = format!("r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
        let server = ScramServer { hash: ScramHash::Sha256, credential: cred, first, nonce, server_first };
        let final_msg = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let out = server.finish(final_msg, &ChannelBindings::default()).unwrap();
        assert_eq!(out, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    /// RFC 5802 §5 test vector (SCRAM-SHA-1).
    #[test]
    fn rfc5802_vector() {
        let cred = ScramCredential::derive_with_salt(ScramHash::Sha1, "pencil", B64.decode("QSXCR+Q6sek8bf92").unwrap(), 4096).unwrap();
        let first = parse_client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL", false).unwrap();
        let nonce = "fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j".to_string();
        let server_first = format!("r={nonce},s=QSXCR+Q6sek8bf92,i=4096");
        let server = ScramServer { hash: ScramHash::Sha1, credential: cred, first, nonce, server_first };
        let out = server
            .finish(b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=", &ChannelBindings::default())
            .unwrap();
        assert_eq!(out, b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
    }

    #[test]
    fn plain_password_checks_against_stored_keys() {
        let cred = ScramCredential::derive(ScramHash::Sha256, "correct horse", 4096).unwrap();
        assert!(cred.verify_password("correct horse"));
        assert!(!cred.verify_password("correct horsf"));
        // SASLprep maps U+00A0 (no-break space) to a space.
        assert!(cred.verify_password("correct\u{a0}horse"));
    }

    #[test]
    fn channel_binding_must_match() {
        let cred = ScramCredential::derive(ScramHash::Sha256, "pw", 4096).unwrap();
        let bindings = ChannelBindings { tls_exporter: Some(vec![7; 32]), tls_server_end_point: None };
        for (data, ok) in [(vec![7u8; 32], true), (vec![8u8; 32], false)] {
            let first = parse_client_first(b"p=tls-exporter,,n=u,r=abc", true).unwrap();
            let bare = first.client_first_bare.clone();
            let (server, server_first) = ScramServer::new(first, cred.clone());
            let mut cb = b"p=tls-exporter,,".to_vec();
            cb.extend_from_slice(&data);
            let fin = client_final(ScramHash::Sha256, "pw", &bare, &cb, std::str::from_utf8(&server_first).unwrap());
            assert_eq!(server.finish(fin.as_bytes(), &bindings).is_ok(), ok);
        }
    }

    #[test]
    fn gs2_flags() {
        // -PLUS mechanism without binding, and binding on a non-PLUS mechanism.
        assert!(parse_client_first(b"n,,n=u,r=a", true).is_err());
        assert!(parse_client_first(b"y,,n=u,r=a", true).is_err());
        assert!(parse_client_first(b"p=tls-exporter,,n=u,r=a", false).is_err());
        let f = parse_client_first(b"n,a=juliet@example.com,n=ju=2Cli=3Det,r=a", false).unwrap();
        assert_eq!(f.username, "ju,li=et");
        assert_eq!(f.authzid.as_deref(), Some("juliet@example.com"));
        assert!(parse_client_first(b"n,,n=bad=name,r=a", false).is_err());
        assert!(parse_client_first(b"n,,m=ext,n=u,r=a", false).is_err());
    }

    /// The lead's rule for channel binding that cannot work (compat/slixmpp.md): refused at
    /// once as a protocol failure, `y` refused whenever -PLUS was offered.
    #[test]
    fn binding_refusals() {
        let both = ChannelBindings { tls_exporter: Some(vec![1; 32]), tls_server_end_point: Some(vec![2; 32]) };
        let end_point_only = ChannelBindings { tls_exporter: None, tls_server_end_point: Some(vec![2; 32]) };
        let none = ChannelBindings::default();
        let refusal = |msg: &[u8], plus: bool, b: &ChannelBindings| parse_client_first(msg, plus).unwrap().binding_refusal(b, b.any());
        // (a) a binding type this connection does not have.
        let text = refusal(b"p=tls-unique,,n=u,r=a", true, &both).expect("tls-unique is refused");
        assert!(text.starts_with("unsupported channel binding type"), "{text}");
        assert!(refusal(b"p=tls-exporter,,n=u,r=a", true, &end_point_only).is_some(), "no exporter on TLS 1.2");
        assert!(refusal(b"p=tls-exporter,,n=u,r=a", true, &both).is_none());
        assert!(refusal(b"p=tls-server-end-point,,n=u,r=a", true, &end_point_only).is_none());
        // (b) "y" while -PLUS was offered is a possible downgrade; without -PLUS it is fine.
        let text = refusal(b"y,,n=u,r=a", false, &both).expect("y with -PLUS offered is refused");
        assert!(text.starts_with("channel binding downgrade"), "{text}");
        assert!(refusal(b"y,,n=u,r=a", false, &none).is_none());
        assert!(refusal(b"n,,n=u,r=a", false, &both).is_none());
    }

    #[test]
    fn wrong_password_fails() {
        let cred = ScramCredential::derive(ScramHash::Sha1, "right", 4096).unwrap();
        let first = parse_client_first(b"n,,n=u,r=abc", false).unwrap();
        let bare = first.client_first_bare.clone();
        let (server, server_first) = ScramServer::new(first, cred);
        let fin = client_final(ScramHash::Sha1, "wrong", &bare, b"n,,", std::str::from_utf8(&server_first).unwrap());
        assert!(matches!(server.finish(fin.as_bytes(), &ChannelBindings::default()), Err(SaslFailure::NotAuthorized)));
    }

    #[test]
    fn end_point_hash_of_a_generated_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap().self_signed(&key).unwrap();
        let hash = tls_server_end_point(cert.der()).unwrap();
        assert_eq!(hash, Sha256::digest(cert.der()).to_vec());
    }
}
