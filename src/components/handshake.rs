//! XEP-0114 §3: the handshake, `<handshake>` = lowercase hex SHA-1(stream id ‖ secret).

use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// The handshake a component that knows `secret` sends on the stream `stream_id`: the
/// SHA-1 of the two concatenated, in lowercase hexadecimal (§3 steps 1-4).
pub fn handshake_digest(stream_id: &str, secret: &str) -> String {
    let mut hash = Sha1::new();
    hash.update(stream_id.as_bytes());
    hash.update(secret.as_bytes());
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `offered` (the handshake's character data) proves `secret` on `stream_id`.
/// Compared in constant time, so that the time taken says nothing about how much of it
/// was right. Surrounding whitespace and uppercase hex are forgiven: neither makes a
/// wrong digest right.
pub(super) fn verifies(offered: &str, stream_id: &str, secret: &str) -> bool {
    let offered = offered.trim().to_ascii_lowercase();
    let expected = handshake_digest(stream_id, secret);
    offered.len() == expected.len() && bool::from(offered.as_bytes().ct_eq(expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// XEP-0114 Examples 2 and 3: stream id 3BF96D32 and the handshake
    /// aaee83c26aeeafcbabeabfcbcd50df997e0a2a1e, which is the digest with the secret "test".
    #[test]
    fn the_xeps_example() {
        assert_eq!(handshake_digest("3BF96D32", "test"), "aaee83c26aeeafcbabeabfcbcd50df997e0a2a1e");
        assert!(verifies("aaee83c26aeeafcbabeabfcbcd50df997e0a2a1e", "3BF96D32", "test"));
        assert!(verifies(" AAEE83C26AEEAFCBABEABFCBCD50DF997E0A2A1E\n", "3BF96D32", "test"));
    }

    #[test]
    fn wrong_handshakes_are_refused() {
        let right = handshake_digest("3BF96D32", "test");
        assert!(!verifies(&right, "3BF96D33", "test"), "another stream");
        assert!(!verifies(&right, "3BF96D32", "tesT"), "another secret");
        assert!(!verifies(&right[..39], "3BF96D32", "test"), "one digit short");
        assert!(!verifies("", "3BF96D32", "test"));
        assert!(!verifies("test", "3BF96D32", "test"), "the secret itself");
    }
}
