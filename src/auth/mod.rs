//! Authentication: SCRAM credentials and the SASL mechanisms' server side (sans-IO).
//! The c2s session drives the exchange; storage keeps only what `scram` derives.

pub mod scram;
pub mod throttle;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

pub use scram::{ChannelBindings, ScramCredential, ScramHash};
pub use throttle::Throttle;

/// Authentication state shared by every connection (held in `Core`).
pub struct Guard {
    /// Failed-authentication limits per address and per account (XEP-0205).
    pub throttle: Throttle,
    /// PLAIN password checks run, each one PBKDF2 derivation: unknown accounts must cost the
    /// same as known ones, and this counter is how a test sees that without timing anything.
    password_checks: AtomicU64,
}

impl Guard {
    pub fn new(config: &crate::config::AuthConfig) -> Guard {
        Guard { throttle: Throttle::new(config), password_checks: AtomicU64::new(0) }
    }

    /// Check a PLAIN password against a stored (or decoy) credential on the blocking pool.
    pub async fn verify_password(&self, credential: ScramCredential, password: String) -> bool {
        self.password_checks.fetch_add(1, Ordering::Relaxed);
        verify_password(credential, password).await
    }

    pub fn password_checks(&self) -> u64 {
        self.password_checks.load(Ordering::Relaxed)
    }
}

/// Derive credentials for every hash on the blocking pool: PBKDF2 takes milliseconds, which
/// must not stall the tasks sharing an async worker thread.
pub async fn derive_credentials(password: String, iterations: u32) -> Result<Vec<ScramCredential>, scram::BadPassword> {
    tokio::task::spawn_blocking(move || scram::derive_all(&password, iterations))
        .await
        .expect("PBKDF2 does not panic")
}

/// Check a PLAIN password against a stored credential on the blocking pool.
pub async fn verify_password(credential: ScramCredential, password: String) -> bool {
    tokio::task::spawn_blocking(move || credential.verify_password(&password)).await.unwrap_or(false)
}

/// The one log line per failed authentication, at info, for fail2ban and the like (the
/// README shows a filter). The address comes first and right after a fixed prefix, so that
/// nothing the client chose can move it; the username is Debug-quoted, so it cannot end the
/// line or fake a field.
pub fn failure_line(ip: IpAddr, account: &str, mechanism: &str, failure: SaslFailure) -> String {
    // Usernames are bounded by the pre-authentication stanza size; a shorter cut keeps the log
    // readable.
    let account: String = account.chars().take(256).collect();
    format!("authentication failed: ip={ip} account={account:?} mechanism={mechanism} reason={}", failure.condition())
}

/// RFC 6120 §6.5 SASL failure conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SaslFailure {
    #[error("aborted")]
    Aborted,
    #[error("encryption-required")]
    EncryptionRequired,
    #[error("incorrect-encoding")]
    IncorrectEncoding,
    #[error("invalid-authzid")]
    InvalidAuthzid,
    #[error("invalid-mechanism")]
    InvalidMechanism,
    #[error("malformed-request")]
    MalformedRequest,
    #[error("not-authorized")]
    NotAuthorized,
    #[error("temporary-auth-failure")]
    TemporaryAuthFailure,
}

impl SaslFailure {
    pub fn condition(self) -> &'static str {
        match self {
            SaslFailure::Aborted => "aborted",
            SaslFailure::EncryptionRequired => "encryption-required",
            SaslFailure::IncorrectEncoding => "incorrect-encoding",
            SaslFailure::InvalidAuthzid => "invalid-authzid",
            SaslFailure::InvalidMechanism => "invalid-mechanism",
            SaslFailure::MalformedRequest => "malformed-request",
            SaslFailure::NotAuthorized => "not-authorized",
            SaslFailure::TemporaryAuthFailure => "temporary-auth-failure",
        }
    }
}

/// SASL PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd`.
pub struct PlainMessage {
    pub authzid: Option<String>,
    pub authcid: String,
    pub password: String,
}

pub fn parse_plain(message: &[u8]) -> Result<PlainMessage, SaslFailure> {
    let mut parts = message.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslFailure::MalformedRequest);
    };
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| SaslFailure::MalformedRequest);
    let authcid = text(authcid)?;
    let password = text(password)?;
    if authcid.is_empty() || password.is_empty() {
        return Err(SaslFailure::MalformedRequest);
    }
    let authzid = if authzid.is_empty() { None } else { Some(text(authzid)?) };
    Ok(PlainMessage { authzid, authcid, password })
}

/// The account a SASL username names on `domain`: a localpart (normalised with nodeprep, as
/// JIDs are), or, leniently, `localpart@domain` for the same domain.
pub fn account_for(username: &str, domain: &str) -> Option<jid::BareJid> {
    // COMPAT(various): some clients send the bare JID as the SCRAM/PLAIN username.
    let local = match username.rsplit_once('@') {
        Some((local, d)) if d.eq_ignore_ascii_case(domain) => local,
        Some(_) => return None,
        None => username,
    };
    let jid = jid::BareJid::new(&format!("{local}@{domain}")).ok()?;
    jid.node().is_some().then_some(jid)
}

/// An authzid is only acceptable if it names the authenticated account itself (we do not
/// support acting on behalf of another account).
pub fn authzid_ok(authzid: Option<&str>, account: &jid::BareJid) -> bool {
    match authzid {
        None => true,
        Some(a) => jid::BareJid::new(a).is_ok_and(|j| &j == account),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_parsing() {
        let m = parse_plain(b"\0juliet\0r0m30").unwrap();
        assert_eq!((m.authzid, m.authcid.as_str(), m.password.as_str()), (None, "juliet", "r0m30"));
        assert!(parse_plain(b"juliet\0r0m30").is_err());
        assert!(parse_plain(b"\0\0pw").is_err());
        assert!(parse_plain(b"\0a\0b\0c").is_err());
    }

    #[test]
    fn failure_line_is_stable_and_quotes_the_username() {
        let ip: IpAddr = "203.0.113.5".parse().unwrap();
        assert_eq!(
            failure_line(ip, "alice@localhost", "SCRAM-SHA-256", SaslFailure::NotAuthorized),
            r#"authentication failed: ip=203.0.113.5 account="alice@localhost" mechanism=SCRAM-SHA-256 reason=not-authorized"#
        );
        // A username trying to forge a second line or another address stays inside its quotes.
        let evil = "x\" ip=192.0.2.1\nauthentication failed: ip=192.0.2.2 account=\"y";
        let line = failure_line("2001:db8::1".parse().unwrap(), evil, "PLAIN", SaslFailure::InvalidAuthzid);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.starts_with("authentication failed: ip=2001:db8::1 account=\"x\\\" ip=192.0.2.1\\nauthentication"), "{line}");
        assert!(line.ends_with(" mechanism=PLAIN reason=invalid-authzid"), "{line}");
        let long = failure_line(ip, &"a".repeat(1000), "PLAIN", SaslFailure::NotAuthorized);
        assert!(long.contains(&format!("account=\"{}\" mechanism=", "a".repeat(256))), "{long}");
    }

    #[test]
    fn usernames_map_to_accounts() {
        assert_eq!(account_for("Juliet", "example.com").unwrap().as_str(), "juliet@example.com");
        assert_eq!(account_for("juliet@example.com", "example.com").unwrap().as_str(), "juliet@example.com");
        assert!(account_for("juliet@other.org", "example.com").is_none());
        assert!(account_for("a b\u{7}", "example.com").is_none());
        assert!(account_for("", "example.com").is_none());
    }
}
