//! Stanzas as the router sees them: the element plus its parsed kind and addresses.
//!
//! Addresses are parsed once, at the edge; payloads are parsed by the module that owns them.

mod error;

pub use error::{Condition, ErrorType, StanzaError, StreamCondition, StreamError};

use jid::{BareJid, FullJid, Jid};
use crate::xml::Element;

use crate::xml::{self, ns};

/// The bare JID of `jid`. jid's own `to_bare` builds it with `format!`; this copies the text
/// and cuts the resource off, several times cheaper: routing takes a few per stanza, and a
/// room's broadcast is routed once per occupant.
pub fn bare_of(jid: &Jid) -> BareJid {
    jid.clone().into_bare()
}

/// The bare part of a JID's text, without making a `BareJid`: neither a node nor a domain
/// may hold a `/` (RFC 7622 §3.2, §3.3), so the first one starts the resource.
pub fn bare_str(jid: &str) -> &str {
    jid.split_once('/').map_or(jid, |(bare, _)| bare)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Message,
    Presence,
    Iq,
}

impl Kind {
    /// The kind a stanza element of this name is.
    pub fn named(name: &str) -> Option<Kind> {
        match name {
            "message" => Some(Kind::Message),
            "presence" => Some(Kind::Presence),
            "iq" => Some(Kind::Iq),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Message => "message",
            Kind::Presence => "presence",
            Kind::Iq => "iq",
        }
    }
}

/// RFC 6121 §5.2.2. An unknown or absent type is `normal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Normal,
    Chat,
    Groupchat,
    Headline,
    Error,
}

/// RFC 6121 §4.7.1, with `None` for the absent type (available).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceType {
    Available,
    Unavailable,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    Probe,
    Error,
}

impl PresenceType {
    pub fn is_subscription(self) -> bool {
        matches!(self, PresenceType::Subscribe | PresenceType::Subscribed | PresenceType::Unsubscribe | PresenceType::Unsubscribed)
    }

    pub fn as_str(self) -> Option<&'static str> {
        Some(match self {
            PresenceType::Available => return None,
            PresenceType::Unavailable => "unavailable",
            PresenceType::Subscribe => "subscribe",
            PresenceType::Subscribed => "subscribed",
            PresenceType::Unsubscribe => "unsubscribe",
            PresenceType::Unsubscribed => "unsubscribed",
            PresenceType::Probe => "probe",
            PresenceType::Error => "error",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IqType {
    Get,
    Set,
    Result,
    Error,
}

impl IqType {
    pub fn is_request(self) -> bool {
        matches!(self, IqType::Get | IqType::Set)
    }
}

/// A stanza whose addresses have been validated. `from` is always set: by the server for
/// anything a client sends, by the sender's server otherwise.
#[derive(Debug, Clone)]
pub struct Stanza {
    pub kind: Kind,
    pub from: Jid,
    /// Absent means "the sender's own account" (RFC 6120 §10.3), or a presence broadcast.
    pub to: Option<Jid>,
    pub el: Element,
}

/// What is wrong with a stanza a client sent.
#[derive(Debug)]
pub enum Rejected {
    /// Answer with this error stanza and carry on.
    Stanza(Element),
    /// End the stream.
    Stream(StreamError),
    /// Drop it silently: it is invalid but is itself an error, which is never answered.
    Ignore,
}

impl Stanza {
    /// The kind of a first-level element of a stream; anything but a stanza is an
    /// `<unsupported-stanza-type/>` stream error.
    fn first_level_kind(el: &Element) -> Result<Kind, Rejected> {
        match (el.name(), el.has_ns(ns::CLIENT)) {
            ("message", true) => Ok(Kind::Message),
            ("presence", true) => Ok(Kind::Presence),
            ("iq", true) => Ok(Kind::Iq),
            _ => Err(Rejected::Stream(
                StreamError::new(StreamCondition::UnsupportedStanzaType).with_text(format!("unexpected element <{}/>", el.name())),
            )),
        }
    }

    /// Validate a first-level element from an authenticated client and stamp its `from`
    /// (RFC 6120 §8.1.2.1): absent or matching is replaced by the full JID; anything else is
    /// an `<invalid-from/>` stream error.
    pub fn from_client(mut el: Element, session: &FullJid) -> Result<Stanza, Rejected> {
        let kind = Self::first_level_kind(&el)?;
        if let Some(from) = el.attr("from") {
            let ok = match Jid::new(from) {
                Ok(j) => match j.try_as_full() {
                    Ok(full) => full == session,
                    Err(bare) => *bare == session.to_bare(),
                },
                Err(_) => false,
            };
            if !ok {
                return Err(Rejected::Stream(StreamError::new(StreamCondition::InvalidFrom)));
            }
        }
        xml::set_attr(&mut el, "from", session.as_str());
        let from = Jid::from(session.clone());
        let to = match el.attr("to") {
            None | Some("") => None,
            Some(to) => match Jid::new(to) {
                Ok(j) => Some(j),
                Err(_) => {
                    let stanza = Stanza { kind, from, to: None, el };
                    return Err(stanza.reject(StanzaError::new(Condition::JidMalformed)));
                }
            },
        };
        let stanza = Stanza { kind, from, to, el };
        stanza.validate()?;
        Ok(stanza)
    }

    /// Validate a first-level element from another server's stream (RFC 6120 §8.1.1.1,
    /// §8.1.2.2): both addresses are required. A missing `to` is `<improper-addressing/>`,
    /// a missing or malformed `from` `<invalid-from/>` (stream errors); a malformed `to` is
    /// answered with `jid-malformed`. Whether the domains may be used on the stream is the
    /// stream's to check.
    pub fn from_server(el: Element) -> Result<Stanza, Rejected> {
        let kind = Self::first_level_kind(&el)?;
        let Some(from) = el.attr("from").and_then(|f| Jid::new(f).ok()) else {
            return Err(Rejected::Stream(StreamError::new(StreamCondition::InvalidFrom).with_text("a stanza without a valid 'from'")));
        };
        let to = match el.attr("to") {
            None | Some("") => {
                return Err(Rejected::Stream(StreamError::new(StreamCondition::ImproperAddressing).with_text("a stanza without 'to'")));
            }
            Some(to) => match Jid::new(to) {
                Ok(j) => j,
                Err(_) => return Err(Stanza { kind, from, to: None, el }.reject(StanzaError::new(Condition::JidMalformed))),
            },
        };
        let stanza = Stanza { kind, from, to: Some(to), el };
        stanza.validate()?;
        Ok(stanza)
    }

    /// Checks of RFC 6120 §8.2.3 and RFC 6121 §4.7.1 that do not depend on the recipient.
    fn validate(&self) -> Result<(), Rejected> {
        let reject = |e: StanzaError| Err(self.reject(e));
        match self.kind {
            Kind::Iq => {
                let Some(t) = self.iq_type() else {
                    return reject(StanzaError::bad_request("missing or unknown iq type"));
                };
                if self.id().is_none() {
                    return reject(StanzaError::bad_request("an iq needs an id"));
                }
                let children = self.el.children().count();
                if t.is_request() && children != 1 {
                    return reject(StanzaError::bad_request("an iq get or set has exactly one child"));
                }
                if t == IqType::Result && children > 1 {
                    return reject(StanzaError::bad_request("an iq result has at most one child"));
                }
            }
            Kind::Presence => {
                if self.presence_type().is_none() {
                    return reject(StanzaError::bad_request("unknown presence type"));
                }
            }
            Kind::Message => {}
        }
        Ok(())
    }

    fn reject(&self, e: StanzaError) -> Rejected {
        match self.error_reply(&e) {
            Some(reply) => Rejected::Stanza(reply.el),
            None => Rejected::Ignore,
        }
    }

    /// A stanza read back from storage; its addresses were validated when it was stored.
    pub fn from_stored(el: Element) -> Option<Stanza> {
        let kind = Kind::named(el.name())?;
        let from = Jid::new(el.attr("from")?).ok()?;
        let to = el.attr("to").and_then(|t| Jid::new(t).ok());
        Some(Stanza { kind, from, to, el })
    }

    /// A new stanza with `from` and `to` set on the element too.
    pub fn new(mut el: Element, from: Jid, to: Jid) -> Stanza {
        let kind = Kind::named(el.name()).unwrap_or(Kind::Iq);
        xml::set_attr(&mut el, "from", from.as_str());
        xml::set_attr(&mut el, "to", to.as_str());
        Stanza { kind, from, to: Some(to), el }
    }

    pub fn id(&self) -> Option<&str> {
        self.el.attr("id")
    }

    pub fn type_attr(&self) -> Option<&str> {
        self.el.attr("type")
    }

    pub fn is_error(&self) -> bool {
        self.type_attr() == Some("error")
    }

    pub fn message_type(&self) -> MessageType {
        match self.type_attr() {
            Some("chat") => MessageType::Chat,
            Some("groupchat") => MessageType::Groupchat,
            Some("headline") => MessageType::Headline,
            Some("error") => MessageType::Error,
            _ => MessageType::Normal,
        }
    }

    /// `None` for an unknown type.
    pub fn presence_type(&self) -> Option<PresenceType> {
        Some(match self.type_attr() {
            None => PresenceType::Available,
            Some("unavailable") => PresenceType::Unavailable,
            Some("subscribe") => PresenceType::Subscribe,
            Some("subscribed") => PresenceType::Subscribed,
            Some("unsubscribe") => PresenceType::Unsubscribe,
            Some("unsubscribed") => PresenceType::Unsubscribed,
            Some("probe") => PresenceType::Probe,
            Some("error") => PresenceType::Error,
            Some(_) => return None,
        })
    }

    pub fn iq_type(&self) -> Option<IqType> {
        Some(match self.type_attr()? {
            "get" => IqType::Get,
            "set" => IqType::Set,
            "result" => IqType::Result,
            "error" => IqType::Error,
            _ => return None,
        })
    }

    /// The single payload of an IQ request.
    pub fn payload(&self) -> Option<&Element> {
        self.el.children().next()
    }

    /// The address this stanza is effectively for: its `to`, or the sender's bare JID.
    pub fn to_or_self(&self) -> Jid {
        self.to.clone().unwrap_or_else(|| Jid::from(bare_of(&self.from)))
    }

    /// The bare JID of [`Stanza::to_or_self`].
    pub fn to_or_self_bare(&self) -> BareJid {
        bare_of(self.to.as_ref().unwrap_or(&self.from))
    }

    pub fn set_to(&mut self, to: Jid) {
        xml::set_attr(&mut self.el, "to", to.as_str());
        self.to = Some(to);
    }

    pub fn set_from(&mut self, from: Jid) {
        xml::set_attr(&mut self.el, "from", from.as_str());
        self.from = from;
    }

    /// The error answer to this stanza (RFC 6120 §8.3.1): same kind and id, addresses
    /// swapped. Never for a stanza that is itself an error (no error loops) or an IQ result.
    pub fn error_reply(&self, err: &StanzaError) -> Option<Stanza> {
        if self.is_error() || (self.kind == Kind::Iq && self.iq_type() == Some(IqType::Result)) {
            return None;
        }
        let mut el = Element::bare(self.kind.name(), ns::CLIENT);
        if let Some(id) = self.id() {
            xml::set_attr(&mut el, "id", id);
        }
        xml::set_attr(&mut el, "type", "error");
        // RFC 6120 §8.3.1: MAY include the original payload; for messages we keep the body
        // so that a client can show which message failed.
        if self.kind == Kind::Message {
            for child in self.el.children().filter(|c| c.is("body", ns::CLIENT)) {
                el.append_child(child.clone());
            }
        }
        el.append_child(err.to_element(None));
        Some(Stanza::new(el, self.to_or_self(), self.from.clone()))
    }

    /// An IQ result to this request, from whom it was addressed to.
    pub fn iq_result(&self, payload: Option<Element>) -> Stanza {
        let mut el = xml::element("iq", ns::CLIENT, &[("type", "result")]);
        if let Some(id) = self.id() {
            xml::set_attr(&mut el, "id", id);
        }
        if let Some(p) = payload {
            el.append_child(p);
        }
        Stanza::new(el, self.to_or_self(), self.from.clone())
    }
}

/// A short random identifier for server-made stanzas, stream ids and generated resources.
pub fn new_id() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 9];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The bare JID of a full or bare JID, as a `Jid`.
pub fn bare(j: &Jid) -> Jid {
    Jid::from(j.to_bare())
}

/// Parse a JID attribute value, mapping failures to `jid-malformed`.
pub fn parse_jid(s: &str) -> Result<Jid, StanzaError> {
    Jid::new(s).map_err(|_| StanzaError::new(Condition::JidMalformed))
}

pub fn parse_bare_jid(s: &str) -> Result<BareJid, StanzaError> {
    BareJid::new(s).map_err(|_| StanzaError::new(Condition::JidMalformed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::parse_element;

    fn session() -> FullJid {
        FullJid::new("juliet@example.com/balcony").unwrap()
    }

    #[test]
    fn stamps_from_and_parses_to() {
        let el = parse_element("<message xmlns='jabber:client' to='Romeo@Example.com/orchard'><body>hi</body></message>").unwrap();
        let s = Stanza::from_client(el, &session()).unwrap();
        assert_eq!(s.el.attr("from"), Some("juliet@example.com/balcony"));
        assert_eq!(s.to.unwrap().as_str(), "romeo@example.com/orchard");
        let el = parse_element("<presence xmlns='jabber:client' from='juliet@example.com'/>").unwrap();
        assert_eq!(Stanza::from_client(el, &session()).unwrap().from.as_str(), "juliet@example.com/balcony");
    }

    #[test]
    fn rejects_spoofed_from_with_invalid_from() {
        let el = parse_element("<message xmlns='jabber:client' from='romeo@example.com/x'/>").unwrap();
        match Stanza::from_client(el, &session()) {
            Err(Rejected::Stream(e)) => assert_eq!(e.condition, StreamCondition::InvalidFrom),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_iq_and_to_get_stanza_errors() {
        let cases = [
            ("<iq xmlns='jabber:client' type='get' id='1'/>", "bad-request"),
            ("<iq xmlns='jabber:client' type='get'><ping xmlns='urn:xmpp:ping'/></iq>", "bad-request"),
            ("<iq xmlns='jabber:client' type='bogus' id='1'><a xmlns='x'/></iq>", "bad-request"),
            ("<message xmlns='jabber:client' to='a@b@c' id='m1'/>", "jid-malformed"),
            ("<presence xmlns='jabber:client' type='foo'/>", "bad-request"),
        ];
        for (xml, condition) in cases {
            let el = parse_element(xml).unwrap();
            match Stanza::from_client(el, &session()) {
                Err(Rejected::Stanza(reply)) => {
                    assert_eq!(reply.attr("type"), Some("error"), "{xml}");
                    assert_eq!(reply.attr("to"), Some("juliet@example.com/balcony"));
                    let error = reply.get_child("error", ns::CLIENT).unwrap();
                    assert!(error.has_child(condition, ns::XMPP_STANZAS), "{xml}: {}", xml::to_string(&reply));
                }
                other => panic!("{xml}: {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_top_level_element_is_a_stream_error() {
        let el = parse_element("<foo xmlns='jabber:client'/>").unwrap();
        assert!(matches!(Stanza::from_client(el, &session()), Err(Rejected::Stream(e)) if e.condition == StreamCondition::UnsupportedStanzaType));
    }

    #[test]
    fn no_error_reply_to_an_error() {
        let el = parse_element("<message xmlns='jabber:client' type='error' to='a@b'/>").unwrap();
        let s = Stanza::from_client(el, &session()).unwrap();
        assert!(s.error_reply(&StanzaError::service_unavailable()).is_none());
    }
}
