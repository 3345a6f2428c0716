//! What a push notification says and when it goes (XEP-0357 §7): which messages are worth
//! one and what the summary form says of them, the publish stanza, the coalescing of bursts
//! per registration, and how the app server's answer is taken (§7.1).

use std::time::Duration;

use jid::{BareJid, Jid};
use tokio::time::Instant;

use super::PUSH;
use crate::requests::RequestError;
use crate::stanza::Stanza;
use crate::storage::PushRegistration;
use crate::xml::{self, Element, ns};

const SUMMARY: &str = "urn:xmpp:push:summary";
pub(super) const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const OMEMO_LEGACY: &str = "eu.siacs.conversations.axolotl";
const OMEMO: &str = "urn:xmpp:omemo:2";
const PGP_LEGACY: &str = "jabber:x:encrypted";
const OPENPGP: &str = "urn:xmpp:openpgp:0";
const JINGLE_MESSAGE: &str = "urn:xmpp:jingle-message:0";
const CONFERENCE: &str = "jabber:x:conference";
const MUC_USER: &str = "http://jabber.org/protocol/muc#user";

/// The longest body put in a summary (when bodies are sent at all): push payloads are
/// small (Apple's take 4 KiB), and the app fetches the message itself.
pub const MAX_BODY_BYTES: usize = 512;

/// What a notification says about the newest message it is for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub sender: Option<String>,
    pub body: Option<String>,
}

/// The notification state of one registration.
#[derive(Debug)]
pub(super) struct Throttle {
    /// Messages the device was told of since it was last seen awake (`message-count`).
    pub(super) count: u32,
    /// When the last notification went out.
    pub(super) last_sent: Option<Instant>,
    /// A notification waiting for `min_interval` to pass: to this registration, about this
    /// message. A timer sends it.
    pub(super) waiting: Option<(PushRegistration, Summary)>,
    /// Timeouts and temporary errors in a row.
    pub(super) failures: u32,
    pub(super) generation: u64,
}

/// What to do with a new message for a registration.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Offer {
    /// Notify now, with this count.
    SendNow(u32),
    /// A notification waits already and will carry this message too.
    Coalesced,
    /// Start a timer for this moment: the notification waits until then.
    Schedule(Instant),
}

impl Throttle {
    pub(super) fn new(generation: u64) -> Throttle {
        Throttle { count: 0, last_sent: None, waiting: None, failures: 0, generation }
    }

    /// `messages` more for the device, the newest summed up in `summary`.
    pub(super) fn offer(&mut self, now: Instant, interval: Duration, messages: u32, registration: &PushRegistration, summary: Summary) -> Offer {
        self.count = self.count.saturating_add(messages);
        match self.last_sent.map(|at| at + interval) {
            Some(due) if due > now => {
                let scheduled = self.waiting.is_some();
                self.waiting = Some((registration.clone(), summary));
                if scheduled { Offer::Coalesced } else { Offer::Schedule(due) }
            }
            _ => {
                self.last_sent = Some(now);
                self.waiting = None;
                Offer::SendNow(self.count)
            }
        }
    }

    /// The timer is up: what waits goes now, with the count so far.
    pub(super) fn take_due(&mut self, now: Instant) -> Option<(PushRegistration, Summary, u32)> {
        let (registration, summary) = self.waiting.take()?;
        self.last_sent = Some(now);
        Some((registration, summary, self.count))
    }
}

/// How the app server took a notification.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Accepted,
    /// A timeout, or an error that may pass (type `wait`, or our link to its server failed).
    Transient(String),
    /// The registration is no good (§7.1: the combination is to be considered disabled).
    Refused(String),
    /// We did not ask (too many requests of ours waiting): nobody's fault.
    NotAsked,
}

pub(super) fn verdict(result: &Result<Element, RequestError>) -> Verdict {
    let error = match result {
        Ok(_) => return Verdict::Accepted,
        Err(RequestError::Timeout) => return Verdict::Transient("no answer".into()),
        Err(RequestError::TooMany) => return Verdict::NotAsked,
        Err(RequestError::Error(el)) => el,
    };
    let Some(error) = error.get_child("error", ns::CLIENT) else { return Verdict::Refused("an error without <error/>".into()) };
    let condition = error
        .children()
        .find(|c| c.has_ns(ns::XMPP_STANZAS) && c.name() != "text")
        .map_or("undefined-condition", |c| c.name())
        .to_string();
    // Our own link to the app server's domain failing says nothing about the registration.
    let link = matches!(condition.as_str(), "remote-server-not-found" | "remote-server-timeout");
    if error.attr("type") == Some("wait") || link { Verdict::Transient(condition) } else { Verdict::Refused(condition) }
}

/// The message a notification is about, and what it says of it, if the message is worth
/// waking a device for (see the module's notes). `account` is the recipient's.
pub fn summary(message: &Element, account: &BareJid, include_sender: bool, include_body: bool) -> Option<Summary> {
    if message.name() != "message" {
        return None;
    }
    if message.has_child("sent", ns::CARBONS) {
        return None;
    }
    // A carbon copy: only the server's own reach a session (forged ones are removed).
    let message = match message.get_child("received", ns::CARBONS) {
        Some(received) => received.get_child("forwarded", ns::FORWARD)?.get_child("message", ns::CLIENT)?,
        None => message,
    };
    if !matches!(message.attr("type"), None | Some("chat" | "normal")) {
        // groupchat, headline, error (an unknown type is normal: RFC 6121 §5.2.2, but a
        // client that writes one gets no push for it).
        return None;
    }
    let sender = message.attr("from").and_then(|f| Jid::new(f).ok());
    if sender.as_ref().is_none_or(|s| s.to_bare() == *account) {
        return None;
    }
    let body = message.get_child("body", ns::CLIENT).map(|b| b.text()).filter(|b| !b.trim().is_empty());
    let encrypted = message.get_child("encrypted", OMEMO_LEGACY).is_some_and(|e| e.has_child("payload", OMEMO_LEGACY))
        || message.get_child("encrypted", OMEMO).is_some_and(|e| e.has_child("payload", OMEMO))
        || message.has_child("x", PGP_LEGACY)
        || message.has_child("openpgp", OPENPGP);
    let call = message.has_child("propose", JINGLE_MESSAGE);
    let invitation = message.has_child("x", CONFERENCE) || message.get_child("x", MUC_USER).is_some_and(|x| x.has_child("invite", MUC_USER));
    if body.is_none() && !encrypted && !call && !invitation {
        return None;
    }
    Some(Summary {
        sender: sender.filter(|_| include_sender).map(|s| s.to_string()),
        body: body.filter(|_| include_body).map(|b| truncate(b, MAX_BODY_BYTES)),
    })
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// §7: the publish to the push service, with the summary form and the stored publish
/// options. From the account's bare JID, which the app server allows to publish.
pub(super) fn notification(account: &BareJid, registration: &PushRegistration, service: Jid, count: u32, summary: &Summary) -> Stanza {
    let mut form = xml::element("x", ns::DATA_FORMS, &[("type", "submit")]);
    let mut field = |var: &str, value: &str| {
        let mut f = xml::element("field", ns::DATA_FORMS, &[("var", var)]);
        f.append_child(xml::text_element("value", ns::DATA_FORMS, value));
        form.append_child(f);
    };
    field("FORM_TYPE", SUMMARY);
    field("message-count", &count.to_string());
    if let Some(sender) = &summary.sender {
        field("last-message-sender", sender);
    }
    if let Some(body) = &summary.body {
        field("last-message-body", body);
    }
    let mut notification = Element::bare("notification", PUSH);
    notification.append_child(form);
    let mut item = Element::bare("item", PUBSUB);
    item.append_child(notification);
    let mut publish = xml::element("publish", PUBSUB, &[("node", &registration.node)]);
    publish.append_child(item);
    let mut pubsub = Element::bare("pubsub", PUBSUB);
    pubsub.append_child(publish);
    if let Some(options) = registration.options.as_deref().and_then(|o| xml::parse_element(o).ok()) {
        let mut publish_options = Element::bare("publish-options", PUBSUB);
        publish_options.append_child(options);
        pubsub.append_child(publish_options);
    }
    let mut iq = xml::element("iq", ns::CLIENT, &[("type", "set")]);
    iq.append_child(pubsub);
    Stanza::new(iq, Jid::from(account.clone()), service)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stanza::{Condition, StanzaError};
    use crate::xml::{self, ns};

    /// The condition of an error reply.
    fn condition(el: &Element) -> Option<Condition> {
        StanzaError::from_element(el.get_child("error", ns::CLIENT)?).map(|e| e.condition)
    }

    fn parse(x: &str) -> Element {
        xml::parse_element(x).unwrap()
    }

    fn account() -> BareJid {
        BareJid::new("romeo@example.org").unwrap()
    }

    fn worth(x: &str) -> bool {
        summary(&parse(x), &account(), true, true).is_some()
    }

    /// Which messages wake a device.
    #[test]
    fn what_is_worth_a_notification() {
        let from = "from='juliet@capulet.example/balcony'";
        assert!(worth(&format!("<message xmlns='jabber:client' {from} type='chat'><body>hi</body></message>")));
        assert!(worth(&format!("<message xmlns='jabber:client' {from}><body>hi</body></message>")));
        assert!(!worth(&format!("<message xmlns='jabber:client' {from} type='chat'><body> </body></message>")));
        assert!(!worth(&format!("<message xmlns='jabber:client' {from} type='groupchat'><body>hi</body></message>")));
        assert!(!worth(&format!("<message xmlns='jabber:client' {from} type='headline'><body>hi</body></message>")));
        assert!(!worth(&format!("<message xmlns='jabber:client' {from} type='error'><body>hi</body></message>")));
        // Chat states, receipts, markers alone: no.
        assert!(!worth(&format!("<message xmlns='jabber:client' {from} type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>")));
        assert!(!worth(&format!("<message xmlns='jabber:client' {from}><received xmlns='urn:xmpp:receipts' id='1'/></message>")));
        // OMEMO with a payload (not a key transport), OpenPGP, a call, an invitation: yes.
        assert!(worth(&format!(
            "<message xmlns='jabber:client' {from} type='chat'><encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'/><payload>x</payload></encrypted></message>"
        )));
        assert!(!worth(&format!(
            "<message xmlns='jabber:client' {from} type='chat'><encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'/></encrypted></message>"
        )));
        assert!(worth(&format!("<message xmlns='jabber:client' {from}><encrypted xmlns='urn:xmpp:omemo:2'><header sid='1'/><payload>x</payload></encrypted></message>")));
        assert!(worth(&format!("<message xmlns='jabber:client' {from}><x xmlns='jabber:x:encrypted'>x</x></message>")));
        assert!(worth(&format!("<message xmlns='jabber:client' {from}><propose xmlns='urn:xmpp:jingle-message:0' id='c'/></message>")));
        assert!(worth(&format!("<message xmlns='jabber:client' {from}><x xmlns='jabber:x:conference' jid='r@muc.example'/></message>")));
        // The account's own messages (a note to self, archive results): no.
        assert!(!worth("<message xmlns='jabber:client' from='romeo@example.org/phone' type='chat'><body>mine</body></message>"));
        assert!(!worth("<message xmlns='jabber:client' from='romeo@example.org'><result xmlns='urn:xmpp:mam:2'/></message>"));
        // Carbons: a received one by what it carries; a sent one never.
        let carbon = |dir: &str, inner: &str| {
            format!("<message xmlns='jabber:client' from='romeo@example.org' type='chat'><{dir} xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>{inner}</forwarded></{dir}></message>")
        };
        let inner = format!("<message xmlns='jabber:client' {from} type='chat'><body>via the desktop</body></message>");
        let copy = summary(&parse(&carbon("received", &inner)), &account(), true, true).expect("worth");
        assert_eq!(copy.sender.as_deref(), Some("juliet@capulet.example/balcony"));
        assert_eq!(copy.body.as_deref(), Some("via the desktop"));
        assert!(!worth(&carbon("sent", &inner)));
        assert!(!worth(&carbon("received", "<message xmlns='jabber:client' from='juliet@capulet.example/balcony' type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>")));
        // Not a message at all.
        assert!(!worth(&format!("<presence xmlns='jabber:client' {from}/>")));
    }

    /// The body only if configured, cut at a character boundary; the sender only if
    /// configured.
    #[test]
    fn summary_fields_follow_the_config() {
        let m = parse("<message xmlns='jabber:client' from='juliet@capulet.example/balcony' type='chat'><body>Wherefore art thou, Romeo?</body></message>");
        assert_eq!(summary(&m, &account(), true, false), Some(Summary { sender: Some("juliet@capulet.example/balcony".into()), body: None }));
        assert_eq!(summary(&m, &account(), false, false), Some(Summary { sender: None, body: None }));
        assert_eq!(summary(&m, &account(), false, true).unwrap().body.as_deref(), Some("Wherefore art thou, Romeo?"));
        let long = format!("<message xmlns='jabber:client' from='j@c.example/b'><body>{}</body></message>", "é".repeat(600));
        let body = summary(&parse(&long), &account(), true, true).unwrap().body.unwrap();
        assert_eq!(body.len(), MAX_BODY_BYTES);
        assert_eq!(truncate("abcé".into(), 4), "abc");
    }

    /// §7, the example with publish options: what goes to the push service.
    #[test]
    fn the_notification() {
        let options = "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='secret'><value>eruio234vzxc2kla-91</value></field></x>";
        let registration = PushRegistration {
            service: "push-5.client.example".into(),
            node: "yxs32uqsflafdk3iuqo".into(),
            resource: "phone".into(),
            options: Some(options.into()),
        };
        let summary = Summary { sender: Some("juliet@capulet.example/balcony".into()), body: Some("Wherefore art thou, Romeo?".into()) };
        let stanza = notification(&account(), &registration, Jid::new("push-5.client.example").unwrap(), 1, &summary);
        let iq = &stanza.el;
        assert_eq!((iq.attr("type"), iq.attr("from"), iq.attr("to")), (Some("set"), Some("romeo@example.org"), Some("push-5.client.example")));
        let pubsub = iq.get_child("pubsub", PUBSUB).unwrap();
        let publish = pubsub.get_child("publish", PUBSUB).unwrap();
        assert_eq!(publish.attr("node"), Some("yxs32uqsflafdk3iuqo"));
        let form = publish.get_child("item", PUBSUB).unwrap().get_child("notification", PUSH).unwrap().get_child("x", ns::DATA_FORMS).unwrap();
        let fields: Vec<(String, String)> = form
            .children()
            .map(|f| (f.attr("var").unwrap().to_string(), f.get_child("value", ns::DATA_FORMS).unwrap().text()))
            .collect();
        let expected = [
            ("FORM_TYPE", SUMMARY),
            ("message-count", "1"),
            ("last-message-sender", "juliet@capulet.example/balcony"),
            ("last-message-body", "Wherefore art thou, Romeo?"),
        ];
        assert_eq!(fields, expected.map(|(a, b)| (a.to_string(), b.to_string())));
        let passed = pubsub.get_child("publish-options", PUBSUB).unwrap().get_child("x", ns::DATA_FORMS).unwrap();
        assert_eq!(xml::to_string(passed), xml::to_string(&parse(options)));
        // Without options, no publish-options; without body and sender, only the count.
        let bare = PushRegistration { options: None, ..registration };
        let stanza = notification(&account(), &bare, Jid::new("p.example").unwrap(), 3, &Summary::default());
        let pubsub = stanza.el.get_child("pubsub", PUBSUB).unwrap();
        assert!(pubsub.get_child("publish-options", PUBSUB).is_none());
        let form = pubsub.get_child("publish", PUBSUB).unwrap().get_child("item", PUBSUB).unwrap().get_child("notification", PUSH).unwrap().get_child("x", ns::DATA_FORMS).unwrap();
        assert_eq!(form.children().count(), 2);
    }

    /// A burst: the first message at once, the rest in one more notification when the
    /// interval is up, counted.
    #[tokio::test(start_paused = true)]
    async fn bursts_are_coalesced() {
        let registration = PushRegistration { service: "p.example".into(), node: "n".into(), resource: "r".into(), options: None };
        let interval = Duration::from_secs(10);
        let mut t = Throttle::new(1);
        let start = Instant::now();
        let s = |b: &str| Summary { sender: None, body: Some(b.into()) };
        assert_eq!(t.offer(start, interval, 1, &registration, s("1")), Offer::SendNow(1));
        assert_eq!(t.offer(start, interval, 1, &registration, s("2")), Offer::Schedule(start + interval));
        assert_eq!(t.offer(start + Duration::from_secs(1), interval, 2, &registration, s("4")), Offer::Coalesced);
        let (_, summary, count) = t.take_due(start + interval).unwrap();
        assert_eq!((summary, count), (s("4"), 4));
        assert!(t.take_due(start + interval).is_none());
        // Long after: at once again, the count going on until the device wakes.
        assert_eq!(t.offer(start + interval * 3, interval, 1, &registration, s("5")), Offer::SendNow(5));
        // No interval: every message at once.
        assert_eq!(t.offer(start + interval * 3, Duration::ZERO, 1, &registration, s("6")), Offer::SendNow(6));
    }

    /// §7.1: errors disable, at once or (for what may pass) after several in a row.
    #[test]
    fn verdicts() {
        let error = |t: &str, c: &str| {
            let el = parse(&format!(
                "<iq xmlns='jabber:client' type='error' id='1'><error type='{t}'><{c} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
            ));
            assert!(condition(&el).is_some());
            verdict(&Err(RequestError::Error(el)))
        };
        assert_eq!(verdict(&Ok(parse("<iq xmlns='jabber:client' type='result' id='1'/>"))), Verdict::Accepted);
        assert_eq!(error("cancel", "item-not-found"), Verdict::Refused("item-not-found".into()));
        assert_eq!(error("auth", "forbidden"), Verdict::Refused("forbidden".into()));
        assert_eq!(error("wait", "resource-constraint"), Verdict::Transient("resource-constraint".into()));
        assert_eq!(error("cancel", "remote-server-not-found"), Verdict::Transient("remote-server-not-found".into()));
        assert_eq!(verdict(&Err(RequestError::Timeout)), Verdict::Transient("no answer".into()));
        assert_eq!(verdict(&Err(RequestError::TooMany)), Verdict::NotAsked);
    }
}
