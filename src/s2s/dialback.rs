//! Server Dialback (XEP-0220): the keys (XEP-0185) and the `<db:result/>` and `<db:verify/>`
//! elements.
//!
//! Dialback proves that a server speaks for a domain by a round trip through that domain's
//! DNS: the receiving server takes the key the initiating server sent and asks the
//! authoritative server of the claimed domain (found by DNS) whether it made that key. Only
//! the server that holds the secret can say yes. Keys follow XEP-0185, so that the
//! authoritative server needs no state to answer: the key is a keyed hash of the two domains
//! and the stream id.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::stanza::StanzaError;
use crate::xml::{self, Element};

/// The namespace of `<db:result/>` and `<db:verify/>` (XEP-0220 §9).
pub const NS: &str = "jabber:server:dialback";
/// The stream feature that says a server supports dialback with errors (XEP-0220 §2.4.1).
pub const FEATURE_NS: &str = "urn:xmpp:features:dialback";

/// The secret this server's dialback keys are made with.
#[derive(Clone)]
pub struct Secret {
    /// XEP-0185 §3: the HMAC key is the hex SHA-256 of the secret.
    hmac_key: String,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    /// A new random secret. Kept for the life of the process: a key made before a restart
    /// then fails verification, and the peer, told `invalid`, simply dials again.
    pub fn random() -> Secret {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS random source works");
        Secret::new(&hex(&bytes))
    }

    pub fn new(secret: &str) -> Secret {
        Secret { hmac_key: hex(&Sha256::digest(secret.as_bytes())) }
    }

    /// XEP-0185 §3: `HMAC-SHA256(SHA256(secret), receiving ' ' originating ' ' stream-id)`,
    /// hex-encoded. `receiving`: the domain the key is sent to; `originating`: the domain it
    /// speaks for; `stream_id`: the id the receiving server gave its response stream.
    pub fn key(&self, receiving: &str, originating: &str, stream_id: &str) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.hmac_key.as_bytes()).expect("HMAC takes any key length");
        for part in [receiving, " ", originating, " ", stream_id] {
            mac.update(part.as_bytes());
        }
        hex(&mac.finalize().into_bytes())
    }

    /// Whether `key` is the one this server made for these three values (in constant time:
    /// the answer must not tell an attacker how much of a guess was right).
    pub fn verifies(&self, key: &str, receiving: &str, originating: &str, stream_id: &str) -> bool {
        let expected = self.key(receiving, originating, stream_id);
        let given = key.trim().to_ascii_lowercase();
        given.len() == expected.len() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Which of the two dialback elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `<db:result/>`: between the initiating and the receiving server.
    Result,
    /// `<db:verify/>`: between the receiving and the authoritative server.
    Verify,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Result => "result",
            Kind::Verify => "verify",
        }
    }
}

/// The outcome carried by a `type` attribute.
#[derive(Debug, Clone)]
pub enum Outcome {
    Valid,
    Invalid,
    /// §2.4: a problem other than the key's validity (an unknown target domain, the
    /// authoritative server unreachable); not fatal for the stream.
    Error(StanzaError),
}

/// Errors are equal when their conditions are (the text is for people).
impl PartialEq for Outcome {
    fn eq(&self, other: &Outcome) -> bool {
        match (self, other) {
            (Outcome::Valid, Outcome::Valid) | (Outcome::Invalid, Outcome::Invalid) => true,
            (Outcome::Error(a), Outcome::Error(b)) => a.condition == b.condition,
            _ => false,
        }
    }
}

/// A dialback element as received.
#[derive(Debug, Clone, PartialEq)]
pub struct Dialback {
    pub kind: Kind,
    pub from: String,
    pub to: String,
    /// The stream id (`<db:verify/>` only).
    pub id: Option<String>,
    /// A request carries a key; an answer carries an outcome.
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Key(String),
    Answer(Outcome),
}

/// Why an element is not a usable dialback element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl Dialback {
    /// Read a `<db:result/>` or `<db:verify/>`; `None` if `el` is neither.
    pub fn parse(el: &Element) -> Option<Result<Dialback, Malformed>> {
        let kind = match el.name() {
            "result" if el.ns() == NS => Kind::Result,
            "verify" if el.ns() == NS => Kind::Verify,
            _ => return None,
        };
        Some(Self::parse_kind(el, kind))
    }

    fn parse_kind(el: &Element, kind: Kind) -> Result<Dialback, Malformed> {
        let from = el.attr("from").filter(|f| !f.is_empty()).ok_or(Malformed("no 'from'"))?.to_string();
        let to = el.attr("to").filter(|t| !t.is_empty()).ok_or(Malformed("no 'to'"))?.to_string();
        let id = el.attr("id").map(str::to_string);
        if kind == Kind::Verify && id.is_none() {
            return Err(Malformed("a <db:verify/> without 'id'"));
        }
        let body = match el.attr("type") {
            None => {
                let key = el.text().trim().to_string();
                if key.is_empty() {
                    return Err(Malformed("no key"));
                }
                Body::Key(key)
            }
            Some("valid") => Body::Answer(Outcome::Valid),
            Some("invalid") => Body::Answer(Outcome::Invalid),
            Some("error") => {
                // The `<error/>` is in the stream's namespace (jabber:server), or in
                // dialback's own when the peer wrote it prefixed.
                let error = el
                    .children()
                    .find(|c| c.name() == "error")
                    .and_then(StanzaError::from_element)
                    .unwrap_or_else(StanzaError::remote_server_timeout);
                Body::Answer(Outcome::Error(error))
            }
            Some(_) => return Err(Malformed("an unknown 'type'")),
        };
        Ok(Dialback { kind, from, to, id, body })
    }

    /// The element, to send.
    pub fn to_element(&self) -> Element {
        let mut el = xml::element(self.kind.name(), NS, &[("from", &self.from), ("to", &self.to)]);
        if let Some(id) = &self.id {
            el.set_attr("id", id.as_str());
        }
        match &self.body {
            Body::Key(key) => el.append_text(key),
            Body::Answer(Outcome::Valid) => el.set_attr("type", "valid"),
            Body::Answer(Outcome::Invalid) => el.set_attr("type", "invalid"),
            Body::Answer(Outcome::Error(error)) => {
                el.set_attr("type", "error");
                el.append_child(error.to_element(None));
            }
        }
        el
    }

    /// The answer to this request, from its `to` back to its `from` (and the same `id`).
    pub fn answer(&self, outcome: Outcome) -> Dialback {
        Dialback { kind: self.kind, from: self.to.clone(), to: self.from.clone(), id: self.id.clone(), body: Body::Answer(outcome) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// XEP-0220 §2.1.1, Example 1 and the key computed under it.
    #[test]
    fn key_of_the_specification() {
        let secret = Secret::new("s3cr3tf0rd14lb4ck");
        let key = secret.key("montague.example", "capulet.example", "D60000229F");
        assert_eq!(key, "b4835385f37fe2895af6c196b59097b16862406db80559900d96bf6fa7d23df3");
        assert!(secret.verifies(&key, "montague.example", "capulet.example", "D60000229F"));
        // The character data of Example 1 has whitespace and may come in capitals.
        assert!(secret.verifies(&format!("\n  {}\n", key.to_uppercase()), "montague.example", "capulet.example", "D60000229F"));
        for (r, o, id) in [("capulet.example", "montague.example", "D60000229F"), ("montague.example", "capulet.example", "D60000229G")] {
            assert!(!secret.verifies(&key, r, o, id), "{r} {o} {id}");
        }
        assert!(!Secret::new("another").verifies(&key, "montague.example", "capulet.example", "D60000229F"));
        assert!(!secret.verifies(&key[..10], "montague.example", "capulet.example", "D60000229F"));
    }

    #[test]
    fn random_secrets_differ() {
        let (a, b) = (Secret::random(), Secret::random());
        assert_ne!(a.key("a.example", "b.example", "x"), b.key("a.example", "b.example", "x"));
        assert!(a.verifies(&a.key("a.example", "b.example", "x"), "a.example", "b.example", "x"));
    }

    fn parse(text: &str) -> Option<Result<Dialback, Malformed>> {
        let el = crate::xml::parse_element(text).unwrap();
        Dialback::parse(&el)
    }

    /// Examples 1, 2, 3, 4 (db:result) and 5, 6, 8 (db:verify) read back as what they say.
    #[test]
    fn elements_of_the_specification() {
        let db = format!("xmlns:db='{NS}'");
        let r = parse(&format!("<db:result {db} from='capulet.example' to='montague.example'>\n  b4835385f37fe2895af6c196b59097b16862406db80559900d96bf6fa7d23df3\n</db:result>")).unwrap().unwrap();
        assert_eq!((r.kind, r.from.as_str(), r.to.as_str()), (Kind::Result, "capulet.example", "montague.example"));
        assert_eq!(r.body, Body::Key("b4835385f37fe2895af6c196b59097b16862406db80559900d96bf6fa7d23df3".into()));
        let valid = parse(&format!("<db:result {db} from='montague.example' to='capulet.example' type='valid'/>")).unwrap().unwrap();
        assert_eq!(valid.body, Body::Answer(Outcome::Valid));
        assert_eq!(r.answer(Outcome::Valid), valid);
        let invalid = parse(&format!("<db:result {db} from='montague.example' to='capulet.example' type='invalid'/>")).unwrap().unwrap();
        assert_eq!(invalid.body, Body::Answer(Outcome::Invalid));
        let error = parse(&format!(
            "<db:result {db} xmlns='jabber:server' from='montague.example' to='capulet.example' type='error'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></db:result>"
        ))
        .unwrap()
        .unwrap();
        match error.body {
            Body::Answer(Outcome::Error(e)) => assert_eq!(e.condition, crate::stanza::Condition::ItemNotFound),
            other => panic!("{other:?}"),
        }
        let verify = parse(&format!("<db:verify {db} from='capulet.example' id='417GAF25' to='montague.example'>225cc5aa6a071133249d25fef42ae516fc7a86c523aa1c6980a7f73e784c972d</db:verify>")).unwrap().unwrap();
        assert_eq!((verify.kind, verify.id.as_deref()), (Kind::Verify, Some("417GAF25")));
        let answer = verify.answer(Outcome::Valid);
        assert_eq!((answer.from.as_str(), answer.to.as_str(), answer.id.as_deref()), ("montague.example", "capulet.example", Some("417GAF25")));
        // Written and read again, the same.
        for d in [r, valid, invalid, verify, answer] {
            assert_eq!(Dialback::parse(&d.to_element()).unwrap().unwrap(), d);
        }
    }

    #[test]
    fn malformed_elements() {
        let db = format!("xmlns:db='{NS}'");
        assert_eq!(parse(&format!("<db:result {db} to='a.example'>k</db:result>")), Some(Err(Malformed("no 'from'"))));
        assert_eq!(parse(&format!("<db:result {db} from='b.example' to='a.example'/>")), Some(Err(Malformed("no key"))));
        assert_eq!(parse(&format!("<db:verify {db} from='b.example' to='a.example'>k</db:verify>")), Some(Err(Malformed("a <db:verify/> without 'id'"))));
        assert_eq!(parse(&format!("<db:result {db} from='b.example' to='a.example' type='maybe'/>")), Some(Err(Malformed("an unknown 'type'"))));
        assert_eq!(parse("<result xmlns='jabber:server' from='b.example' to='a.example'/>"), None);
    }
}
