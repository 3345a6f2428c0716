//! XML namespaces used across the server, in one place so that a typo is a compile error.

pub const CLIENT: &str = "jabber:client";
pub const SERVER: &str = "jabber:server";
/// XEP-0114: the content namespace of a stream from an external component.
pub const COMPONENT_ACCEPT: &str = "jabber:component:accept";
pub const STREAMS: &str = "http://etherx.jabber.org/streams";
pub const XMPP_STREAMS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
pub const XMPP_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
pub const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
pub const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
pub const XML: &str = "http://www.w3.org/XML/1998/namespace";
/// XEP-0440: SASL channel-binding type capability.
pub const SASL_CB: &str = "urn:xmpp:sasl-cb:0";
/// Application-specific error conditions (XEP-0205, `<stanza-too-big/>`).
pub const XMPP_ERRORS: &str = "urn:xmpp:errors";

pub const ROSTER: &str = "jabber:iq:roster";
pub const ROSTER_VER_FEATURE: &str = "urn:xmpp:features:rosterver";
pub const PRE_APPROVAL_FEATURE: &str = "urn:xmpp:features:pre-approval";
pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
pub const CAPS: &str = "http://jabber.org/protocol/caps";
pub const PING: &str = "urn:xmpp:ping";
pub const VERSION: &str = "jabber:iq:version";
pub const TIME: &str = "urn:xmpp:time";
pub const LAST: &str = "jabber:iq:last";
pub const VCARD: &str = "vcard-temp";
pub const PRIVATE: &str = "jabber:iq:private";
pub const BLOCKING: &str = "urn:xmpp:blocking";
pub const BLOCKING_ERRORS: &str = "urn:xmpp:blocking:errors";
pub const REGISTER: &str = "jabber:iq:register";
pub const REGISTER_FEATURE: &str = "http://jabber.org/features/iq-register";
pub const DATA_FORMS: &str = "jabber:x:data";
pub const DELAY: &str = "urn:xmpp:delay";
/// XEP-0160 advertises offline storage with this bare feature string.
pub const MSGOFFLINE: &str = "msgoffline";
pub const CHATSTATES: &str = "http://jabber.org/protocol/chatstates";
/// XEP-0280 Message Carbons, XEP-0297 forwarding, XEP-0334 hints.
pub const CARBONS: &str = "urn:xmpp:carbons:2";
pub const FORWARD: &str = "urn:xmpp:forward:0";
pub const HINTS: &str = "urn:xmpp:hints";
/// XEP-0198 Stream Management.
pub const SM: &str = "urn:xmpp:sm:3";
/// XEP-0352 Client State Indication.
pub const CSI: &str = "urn:xmpp:csi:0";

/// Namespaces common in client traffic beyond those the server itself handles: a parsed
/// element in one of these shares a static string instead of allocating (see
/// `element::Namespace::new`).
const COMMON: &[&str] = &[
    "urn:xmpp:receipts",
    "urn:xmpp:chat-markers:0",
    "urn:xmpp:carbons:2",
    "urn:xmpp:forward:0",
    "urn:xmpp:mam:2",
    "urn:xmpp:sid:0",
    "urn:xmpp:hints",
    "urn:xmpp:message-correct:0",
    "urn:xmpp:reactions:0",
    "urn:xmpp:reply:0",
    "urn:xmpp:sm:3",
    "urn:xmpp:csi:0",
    "urn:xmpp:idle:1",
    "urn:xmpp:avatar:metadata",
    "urn:xmpp:avatar:data",
    "urn:xmpp:omemo:2",
    "eu.siacs.conversations.axolotl",
    "jabber:x:oob",
    "jabber:x:conference",
    "vcard-temp:x:update",
    "http://jabber.org/protocol/muc",
    "http://jabber.org/protocol/muc#user",
    "http://jabber.org/protocol/pubsub",
    "http://jabber.org/protocol/pubsub#event",
    "http://jabber.org/protocol/nick",
    "http://jabber.org/protocol/rsm",
];

/// The static copy of a well-known namespace name.
pub fn well_known(name: &str) -> Option<&'static str> {
    const SERVED: &[&str] = &[
        CLIENT, SERVER, STREAMS, XMPP_STREAMS, XMPP_STANZAS, TLS, SASL, BIND, SESSION, XML, SASL_CB, XMPP_ERRORS,
        ROSTER, DISCO_INFO, DISCO_ITEMS, CAPS, PING, VERSION, TIME, LAST, VCARD, PRIVATE, BLOCKING,
        BLOCKING_ERRORS, REGISTER, DATA_FORMS, DELAY, CHATSTATES,
    ];
    SERVED.iter().chain(COMMON).copied().find(|&s| s == name)
}
