//! Authentication: SCRAM credentials and the SASL mechanisms' server side (sans-IO).
//! The c2s session drives the exchange; storage keeps only what `scram` derives.

pub mod scram;

pub use scram::{ChannelBindings, ScramCredential, ScramHash};

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
    fn usernames_map_to_accounts() {
        assert_eq!(account_for("Juliet", "example.com").unwrap().as_str(), "juliet@example.com");
        assert_eq!(account_for("juliet@example.com", "example.com").unwrap().as_str(), "juliet@example.com");
        assert!(account_for("juliet@other.org", "example.com").is_none());
        assert!(account_for("a b\u{7}", "example.com").is_none());
        assert!(account_for("", "example.com").is_none());
    }
}
