//! XEP-0352 Client State Indication: what a session holds back while its client says it is
//! inactive (a phone with the screen off), so that the radio wakes for what the user must
//! see, not for every status change of every contact.
//!
//! [`Holdback`] is pure logic owned by one session task: each element routed to the session
//! is [`offer`](Holdback::offer)ed to it before being written, and it says what to write now.
//! While the client is inactive (a stream starts active: §4.2, §5):
//! - presence updates (available, unavailable) are held, only the newest per sender full JID
//!   kept, in the order of their last change: on `<active/>` the client gets each contact's
//!   current presence (§3.2: "push the latest presence from each contact");
//! - messages with nothing but XEP-0085 chat states are held, only the newest per
//!   conversation kept (the current state is all a client shows);
//! - PEP notifications (`<event xmlns='…pubsub#event'/>` without a body), and messages with
//!   nothing but XEP-0184 receipts or XEP-0333 chat markers, are held as they are;
//! - a carbon copy (XEP-0280) is judged by the message it carries;
//! - anything else is urgent: a message with a body (or with anything not listed above:
//!   call invitations, archive results), errors, IQs, subscription requests and their
//!   answers (never merged away), nonzas. An urgent element is written after everything held
//!   before it, in order, so that no conversation is reordered (RFC 6120 §10.1).
//!
//! What is held is bounded ([`MAX_HELD`] elements, [`MAX_HELD_BYTES`] bytes): past either,
//! everything is written. Nothing is ever dropped: at the end of the session
//! [`Holdback::finish`] gives back what is still held (messages among it are to be rerouted
//! like the rest of the session's queue).

use std::collections::VecDeque;

use crate::xml::{Element, ns};

/// Elements held at most; one more writes them all.
pub const MAX_HELD: usize = 256;
/// Bytes held at most (as [`Element::heap_bytes`] counts them); more writes everything.
pub const MAX_HELD_BYTES: usize = 512 * 1024;

const PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
const RECEIPTS: &str = "urn:xmpp:receipts";
const CHAT_MARKERS: &str = "urn:xmpp:chat-markers:0";
const CARBONS: &str = "urn:xmpp:carbons:2";
const FORWARD: &str = "urn:xmpp:forward:0";
/// Children that say nothing by themselves: XEP-0334 hints, XEP-0359 ids, XEP-0203 delays.
const DECORATIONS: &[&str] = &["urn:xmpp:hints", "urn:xmpp:sid:0", ns::DELAY];

/// What to write after an [`offer`](Holdback::offer).
#[derive(Debug)]
pub enum Release {
    /// The element is held: nothing to write now.
    Held,
    /// Write this element now; nothing was held before it.
    One(Box<Element>),
    /// Write these now, in this order: everything that was held, then the element offered.
    All(Vec<Box<Element>>),
}

impl IntoIterator for Release {
    type Item = Box<Element>;
    type IntoIter = ReleaseIter;

    fn into_iter(self) -> ReleaseIter {
        match self {
            Release::Held => ReleaseIter::One(None),
            Release::One(el) => ReleaseIter::One(Some(el)),
            Release::All(list) => ReleaseIter::All(list.into_iter()),
        }
    }
}

/// The elements of a [`Release`], in the order they are to be written.
pub enum ReleaseIter {
    One(Option<Box<Element>>),
    All(std::vec::IntoIter<Box<Element>>),
}

impl Iterator for ReleaseIter {
    type Item = Box<Element>;

    fn next(&mut self) -> Option<Box<Element>> {
        match self {
            ReleaseIter::One(el) => el.take(),
            ReleaseIter::All(list) => list.next(),
        }
    }
}

/// How an element is treated while the client is inactive.
#[derive(Debug, PartialEq, Eq)]
enum Class {
    /// Written now, after everything held.
    Urgent,
    /// Held.
    Hold,
    /// Held, replacing a held element with the same key.
    Replace(Box<str>),
}

struct Held {
    el: Box<Element>,
    key: Option<Box<str>>,
    bytes: usize,
}

/// The client state of one session and what it holds back (see the module's notes).
#[derive(Default)]
pub struct Holdback {
    inactive: bool,
    held: VecDeque<Held>,
    bytes: usize,
}

impl Holdback {
    #[cfg(test)]
    pub fn new() -> Holdback {
        Holdback::default()
    }

    /// Whether the client said `<inactive/>` last.
    pub fn is_inactive(&self) -> bool {
        self.inactive
    }

    /// `<inactive/>` (true) or `<active/>` (false). Becoming active holds nothing more, but
    /// keeps what is held until [`drain`](Holdback::drain) (to be written before the next
    /// stanza from the client is handled: XEP-0352 §5.1) or the next offer.
    pub fn set_inactive(&mut self, inactive: bool) {
        self.inactive = inactive;
    }

    #[cfg(test)]
    /// Elements held now.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    #[cfg(test)]
    /// Bytes held now.
    pub fn held_bytes(&self) -> usize {
        self.bytes
    }

    /// An element for the client: hold it, or say what to write now.
    pub fn offer(&mut self, el: Box<Element>) -> Release {
        let class = if self.inactive { classify(&el) } else { Class::Urgent };
        match class {
            Class::Urgent if self.held.is_empty() => Release::One(el),
            Class::Urgent => {
                let mut all = self.drain();
                all.push(el);
                Release::All(all)
            }
            Class::Hold => self.hold(el, None),
            Class::Replace(key) => self.hold(el, Some(key)),
        }
    }

    fn hold(&mut self, el: Box<Element>, key: Option<Box<str>>) -> Release {
        // At most MAX_HELD entries to look through: bounded work per element.
        if let Some(key) = &key
            && let Some(pos) = self.held.iter().position(|h| h.key.as_ref() == Some(key))
            && let Some(old) = self.held.remove(pos)
        {
            self.bytes -= old.bytes;
        }
        let bytes = el.heap_bytes();
        self.bytes += bytes;
        self.held.push_back(Held { el, key, bytes });
        if self.held.len() > MAX_HELD || self.bytes > MAX_HELD_BYTES {
            return Release::All(self.drain());
        }
        Release::Held
    }

    /// Everything held, in order, leaving nothing held: on `<active/>`.
    pub fn drain(&mut self) -> Vec<Box<Element>> {
        self.bytes = 0;
        self.held.drain(..).map(|h| h.el).collect()
    }

    /// Everything still held when the session ends, in order.
    pub fn finish(mut self) -> Vec<Box<Element>> {
        self.drain()
    }
}

fn classify(el: &Element) -> Class {
    if !el.has_ns(ns::CLIENT) {
        // Nonzas: stream errors, stream management.
        return Class::Urgent;
    }
    match el.name() {
        "presence" => classify_presence(el),
        "message" => classify_message(el),
        _ => Class::Urgent,
    }
}

/// Available and unavailable presence are status updates, only the newest of each sender
/// worth anything; subscription requests and answers, errors and probes are not.
fn classify_presence(el: &Element) -> Class {
    match el.attr("type") {
        None | Some("unavailable") => Class::Replace(format!("p {}", el.attr("from").unwrap_or_default()).into()),
        Some(_) => Class::Urgent,
    }
}

/// The message a XEP-0280 copy carries, and whether it was sent by the account.
fn carbon_inner(el: &Element) -> Option<(&Element, bool)> {
    el.children().find_map(|c| {
        let sent = match (c.name(), c.has_ns(CARBONS)) {
            ("sent", true) => true,
            ("received", true) => false,
            _ => return None,
        };
        let inner = c.get_child("forwarded", FORWARD)?.get_child("message", ns::CLIENT)?;
        Some((inner, sent))
    })
}

fn classify_message(el: &Element) -> Class {
    if el.attr("type") == Some("error") {
        return Class::Urgent;
    }
    let (message, sent) = carbon_inner(el).unwrap_or((el, false));
    if message.has_child("body", ns::CLIENT) {
        return Class::Urgent;
    }
    if message.has_child("event", PUBSUB_EVENT) {
        return Class::Hold;
    }
    let mut chat_state = false;
    let mut receipt_or_marker = false;
    for child in message.children() {
        if child.has_ns(ns::CHATSTATES) {
            chat_state = true;
        } else if child.has_ns(RECEIPTS) || child.has_ns(CHAT_MARKERS) {
            receipt_or_marker = true;
        } else if !(child.is("thread", ns::CLIENT) || DECORATIONS.iter().any(|d| child.has_ns(d))) {
            return Class::Urgent;
        }
    }
    match (chat_state, receipt_or_marker) {
        // One conversation: the peer's state (received directly or as a copy), or the
        // account's own towards the peer (a sent copy).
        (true, false) => {
            let key = match sent {
                true => format!("s {}", message.attr("to").unwrap_or_default()),
                false => format!("c {}", message.attr("from").unwrap_or_default()),
            };
            Class::Replace(key.into())
        }
        (true, true) | (false, true) => Class::Hold,
        // Nothing at all in it: whatever it is, not ours to delay.
        (false, false) => Class::Urgent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(x: &str) -> Box<Element> {
        let x = x.replacen(' ', " xmlns='jabber:client' ", 1);
        Box::new(crate::xml::parse_element(&x).unwrap())
    }

    fn presence(from: &str, show: &str) -> Box<Element> {
        el(&format!("<presence from='{from}' to='me@h/r'><show>{show}</show></presence>"))
    }

    fn inactive() -> Holdback {
        let mut h = Holdback::new();
        h.set_inactive(true);
        h
    }

    /// The elements of a release, as text (ids of what the tests offer).
    fn written(r: Release) -> Vec<String> {
        r.into_iter().map(|e| crate::xml::to_string(&e)).collect()
    }

    fn held(h: &mut Holdback, e: Box<Element>) {
        let r = h.offer(e);
        assert!(matches!(r, Release::Held), "not held: {:?}", written(r));
    }

    fn urgent_alone(h: &mut Holdback, e: Box<Element>) {
        assert!(h.is_empty());
        assert!(matches!(h.offer(e), Release::One(_)));
    }

    #[test]
    fn active_writes_everything_at_once() {
        let mut h = Holdback::new();
        assert!(!h.is_inactive());
        for e in [presence("a@h/x", "away"), el("<message type='chat' from='a@h/x'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>")] {
            assert!(matches!(h.offer(e), Release::One(_)));
        }
        assert!(h.is_empty());
    }

    /// Presence: the newest per sender, in the order of the last change; an urgent element
    /// comes after everything held.
    #[test]
    fn presence_keeps_the_newest_per_sender() {
        let mut h = inactive();
        held(&mut h, presence("a@h/x", "away"));
        held(&mut h, presence("b@h/y", "dnd"));
        held(&mut h, presence("a@h/x", "xa"));
        held(&mut h, presence("a@h/z", "chat"));
        assert_eq!(h.len(), 3);
        let out = written(h.offer(el("<iq type='get' id='q1' from='h'><ping xmlns='urn:xmpp:ping'/></iq>")));
        assert_eq!(out.len(), 4, "{out:?}");
        assert!(out[0].contains("b@h/y") && out[0].contains("dnd"), "{out:?}");
        assert!(out[1].contains("a@h/x") && out[1].contains("xa"), "the newest, moved to its last change: {out:?}");
        assert!(out[2].contains("a@h/z"), "{out:?}");
        assert!(out[3].contains("q1"), "{out:?}");
        assert!(h.is_empty() && h.held_bytes() == 0);
        // Unavailable replaces available (and the other way round).
        held(&mut h, presence("a@h/x", "away"));
        held(&mut h, el("<presence from='a@h/x' type='unavailable'/>"));
        let out = h.drain();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].attr("type"), Some("unavailable"));
    }

    /// Subscription requests and answers, errors and probes are never held nor merged: each
    /// is written, after what was held.
    #[test]
    fn subscriptions_are_never_merged() {
        let mut h = inactive();
        held(&mut h, presence("a@h/x", "away"));
        let out = written(h.offer(el("<presence from='a@h' type='subscribe' id='s1'/>")));
        assert_eq!(out.len(), 2);
        assert!(out[0].contains("away") && out[1].contains("s1"), "{out:?}");
        for (i, kind) in ["subscribe", "subscribe", "subscribed", "unsubscribe", "unsubscribed", "error", "probe"].iter().enumerate() {
            urgent_alone(&mut h, el(&format!("<presence from='a@h' type='{kind}' id='k{i}'/>")));
        }
    }

    /// Chat states alone are held, the newest per conversation; a message with a body comes
    /// after them, so a conversation keeps its order.
    #[test]
    fn chat_states_are_held_and_merged_per_conversation() {
        let mut h = inactive();
        let state = |from: &str, state: &str| {
            el(&format!("<message type='chat' from='{from}'><thread>t</thread><{state} xmlns='http://jabber.org/protocol/chatstates'/><no-store xmlns='urn:xmpp:hints'/></message>"))
        };
        held(&mut h, state("a@h/x", "composing"));
        held(&mut h, state("b@h/y", "composing"));
        held(&mut h, state("a@h/x", "paused"));
        assert_eq!(h.len(), 2);
        let out = written(h.offer(el("<message type='chat' from='a@h/x' id='m1'><body>hi</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>")));
        assert_eq!(out.len(), 3, "{out:?}");
        assert!(out[0].contains("b@h/y") && out[1].contains("paused") && out[2].contains("m1"), "{out:?}");
    }

    #[test]
    fn pep_receipts_and_markers_are_held_unmerged() {
        let mut h = inactive();
        let pep = "<message from='a@h' to='me@h/r' type='headline'><event xmlns='http://jabber.org/protocol/pubsub#event'><items node='urn:xmpp:avatar:metadata'><item id='1'/></items></event><delay xmlns='urn:xmpp:delay' stamp='2020-01-01T00:00:00Z'/></message>";
        held(&mut h, el(pep));
        held(&mut h, el(pep));
        held(&mut h, el("<message from='a@h/x'><received xmlns='urn:xmpp:receipts' id='1'/></message>"));
        held(&mut h, el("<message from='a@h/x'><displayed xmlns='urn:xmpp:chat-markers:0' id='1'/><stanza-id xmlns='urn:xmpp:sid:0' id='x' by='me@h'/></message>"));
        held(&mut h, el("<message from='a@h/x' type='chat'><gone xmlns='http://jabber.org/protocol/chatstates'/><received xmlns='urn:xmpp:receipts' id='2'/></message>"));
        assert_eq!(h.len(), 5);
        // A PEP notification with a body is for the user to read.
        assert_eq!(written(h.offer(el("<message from='a@h'><body>b</body><event xmlns='http://jabber.org/protocol/pubsub#event'/></message>"))).len(), 6);
    }

    #[test]
    fn what_is_urgent() {
        let mut h = inactive();
        for x in [
            "<message from='a@h/x' type='chat'><body>hello</body></message>",
            "<message from='a@h/x' type='headline'><body>news</body></message>",
            "<message from='a@h/x' type='error'><composing xmlns='http://jabber.org/protocol/chatstates'/><error type='cancel'/></message>",
            "<message from='a@h/x'/>",
            "<message from='a@h/x'><propose xmlns='urn:xmpp:jingle-message:0' id='c'/></message>",
            "<message from='me@h'><result xmlns='urn:xmpp:mam:2' id='1'><forwarded xmlns='urn:xmpp:forward:0'/></result></message>",
            "<iq type='result' id='r' from='h'/>",
        ] {
            urgent_alone(&mut h, el(x));
        }
        // Nonzas (not in jabber:client) too.
        urgent_alone(&mut h, Box::new(crate::xml::parse_element("<r xmlns='urn:xmpp:sm:3'/>").unwrap()));
    }

    /// A carbon copy counts as the message it carries.
    #[test]
    fn carbons_are_judged_by_their_content() {
        let mut h = inactive();
        let copy = |dir: &str, peer: &str, payload: &str| {
            let (from, to) = if dir == "sent" { ("me@h/other", peer) } else { (peer, "me@h/other") };
            el(&format!(
                "<message from='me@h' to='me@h/r' type='chat'><{dir} xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' from='{from}' to='{to}' type='chat'>{payload}</message></forwarded></{dir}></message>"
            ))
        };
        let composing = "<composing xmlns='http://jabber.org/protocol/chatstates'/>";
        let paused = "<paused xmlns='http://jabber.org/protocol/chatstates'/>";
        // The peer's state, directly or as a copy: one conversation. The account's own
        // state towards the peer (a sent copy) is another.
        held(&mut h, el(&format!("<message type='chat' from='a@h/x'>{composing}</message>")));
        held(&mut h, copy("received", "a@h/x", paused));
        held(&mut h, copy("sent", "a@h/x", composing));
        held(&mut h, copy("sent", "a@h/x", paused));
        assert_eq!(h.len(), 2);
        let out = written(h.offer(copy("sent", "a@h/x", "<body>typed</body>")));
        assert_eq!(out.len(), 3);
        assert!(out[0].contains("received") && out[0].contains("paused"), "{out:?}");
        assert!(out[1].contains("sent") && out[1].contains("paused"), "{out:?}");
        assert!(out[2].contains("typed"), "{out:?}");
        urgent_alone(&mut h, copy("received", "a@h/x", "<body>hi</body>"));
    }

    /// Bounded: one element past MAX_HELD writes everything, in order; merging does not count
    /// an element twice.
    #[test]
    fn bounded_by_count_and_bytes() {
        let mut h = inactive();
        for _ in 0..MAX_HELD * 2 {
            held(&mut h, presence("a@h/x", "away"));
        }
        assert_eq!(h.len(), 1);
        for i in 1..MAX_HELD {
            held(&mut h, presence(&format!("u{i}@h/x"), "away"));
        }
        assert_eq!(h.len(), MAX_HELD);
        let out = written(h.offer(presence("last@h/x", "away")));
        assert_eq!(out.len(), MAX_HELD + 1);
        assert!(out[0].contains("a@h/x") && out[1].contains("u1@h") && out[MAX_HELD].contains("last@h"), "in order");
        assert!(h.is_empty() && h.held_bytes() == 0);
        // Bytes: large PEP items.
        let big = "x".repeat(100 * 1024);
        let pep = format!("<message from='a@h'><event xmlns='http://jabber.org/protocol/pubsub#event'><items node='n'><item id='1'>{big}</item></items></event></message>");
        let mut n = 0;
        loop {
            n += 1;
            match h.offer(el(&pep)) {
                Release::Held => assert!(h.held_bytes() <= MAX_HELD_BYTES),
                Release::All(all) => {
                    assert_eq!(all.len(), n);
                    break;
                }
                Release::One(_) => panic!("a single item is under the budget"),
            }
        }
        assert!(n > 1 && n <= MAX_HELD_BYTES / (100 * 1024) + 1, "{n}");
    }

    /// `<active/>`: everything held, in order; nothing held afterwards. What was not drained
    /// goes out before the next element.
    #[test]
    fn becoming_active_and_ending() {
        let mut h = inactive();
        held(&mut h, presence("a@h/x", "away"));
        held(&mut h, presence("b@h/x", "away"));
        h.set_inactive(false);
        assert!(!h.is_inactive());
        let out = h.drain();
        assert_eq!(out.iter().map(|e| e.attr("from").unwrap()).collect::<Vec<_>>(), ["a@h/x", "b@h/x"]);
        urgent_alone(&mut h, presence("a@h/x", "chat"));
        h.set_inactive(true);
        held(&mut h, presence("c@h/x", "away"));
        h.set_inactive(false);
        assert_eq!(written(h.offer(presence("d@h/x", "away"))).len(), 2);
        // The end of the session gives back what is held.
        h.set_inactive(true);
        held(&mut h, el("<message from='a@h/x'><received xmlns='urn:xmpp:receipts' id='1'/></message>"));
        held(&mut h, presence("c@h/x", "away"));
        let left = h.finish();
        assert_eq!(left.len(), 2);
        assert_eq!(left[0].name(), "message");
    }
}
