//! XEP-0198 Stream Management: the counters and the queue of unacknowledged stanzas of one
//! session, without I/O. The session task owns one [`StreamManagement`] and asks it what to
//! write; resumption itself (handing a new connection to the session) is in `resume.rs`.
//!
//! Our promise is stronger than the XEP's "handled": the `h` we send covers a stanza only
//! once whatever the server did with it is safe (committed to the archive or the offline
//! store, or in a recipient's queue). The session feeds in, per stanza, the promises it
//! must wait for ([`crate::modules::Durable`]); `durable_h` is how far they are kept.

use std::collections::VecDeque;
use std::time::SystemTime;

use crate::stanza::{Condition, StreamCondition, StreamError};
use crate::xml::{self, Element, ns};

/// What the client asked for in `<enable/>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnableRequest {
    pub resume: bool,
    /// The client's preferred resumption time, in seconds.
    pub max: Option<u64>,
}

/// A `<resume/>` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeRequest {
    pub previd: String,
    pub h: u32,
}

/// A Stream Management nonza from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nonza {
    Enable(EnableRequest),
    Resume(ResumeRequest),
    /// `<r/>`: the client asks how many of its stanzas we handled.
    Request,
    /// `<a h/>`: how many of ours the client handled.
    Ack(u32),
}

/// An element in our namespace that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// XML Schema boolean.
fn boolean(v: Option<&str>) -> bool {
    matches!(v, Some("true" | "1"))
}

fn counter(v: Option<&str>) -> Result<u32, Malformed> {
    v.ok_or(Malformed("missing 'h'"))?.trim().parse::<u32>().map_err(|_| Malformed("'h' is not an unsignedInt"))
}

impl Nonza {
    /// `None` if `el` is not in the Stream Management namespace.
    pub fn parse(el: &Element) -> Option<Result<Nonza, Malformed>> {
        if !el.has_ns(ns::SM) {
            return None;
        }
        Some(match el.name() {
            "enable" => Ok(Nonza::Enable(EnableRequest {
                resume: boolean(el.attr("resume")),
                max: el.attr("max").and_then(|m| m.trim().parse().ok()),
            })),
            "resume" => match el.attr("previd") {
                Some(previd) if !previd.is_empty() => counter(el.attr("h")).map(|h| Nonza::Resume(ResumeRequest { previd: previd.to_string(), h })),
                _ => Err(Malformed("missing 'previd'")),
            },
            "r" => Ok(Nonza::Request),
            "a" => counter(el.attr("h")).map(Nonza::Ack),
            _ => Err(Malformed("unknown element")),
        })
    }
}

pub fn enabled(id: Option<&str>, max: Option<u64>) -> Element {
    let mut el = Element::bare("enabled", ns::SM);
    if let Some(id) = id {
        xml::set_attr(&mut el, "id", id);
        xml::set_attr(&mut el, "resume", "true");
        if let Some(max) = max {
            xml::set_attr(&mut el, "max", max.to_string());
        }
    }
    el
}

/// `<failed/>` with a stanza error condition, and the `h` we saw if we know it.
pub fn failed(condition: Condition, h: Option<u32>, text: Option<&str>) -> Element {
    let mut el = Element::bare("failed", ns::SM);
    if let Some(h) = h {
        xml::set_attr(&mut el, "h", h.to_string());
    }
    el.append_child(Element::bare(condition.name(), ns::XMPP_STANZAS));
    if let Some(text) = text {
        el.append_child(xml::text_element("text", ns::XMPP_STANZAS, text));
    }
    el
}

pub fn ack(h: u32) -> Element {
    xml::element("a", ns::SM, &[("h", &h.to_string())])
}

pub fn request() -> Element {
    Element::bare("r", ns::SM)
}

pub fn resumed(previd: &str, h: u32) -> Element {
    xml::element("resumed", ns::SM, &[("previd", previd), ("h", &h.to_string())])
}

/// A stanza written to the client and not yet acknowledged.
#[derive(Debug)]
pub struct Unacked {
    pub el: Box<Element>,
    /// When it was first written (or queued, while the client was away): the XEP-0203
    /// stamp it gets if it has to be sent again or rerouted.
    pub since: SystemTime,
}

/// The state of Stream Management on one session.
#[derive(Debug)]
pub struct StreamManagement {
    /// The SM-ID, if the session may be resumed.
    pub id: Option<String>,
    /// Stanzas from the client that we handled (wrapping at 2^32).
    handled: u32,
    /// Of those, how many are safe; `handled` when nothing is pending.
    durable: u32,
    /// Stanzas we sent (wrapping), counting those queued while the client was away.
    sent: u32,
    /// What the client has not acknowledged yet, oldest first; the newest has number `sent`.
    unacked: VecDeque<Unacked>,
    /// We asked for an ack and have not had one since.
    pub requested: bool,
}

impl StreamManagement {
    pub fn new(id: Option<String>) -> Self {
        StreamManagement { id, handled: 0, durable: 0, sent: 0, unacked: VecDeque::new(), requested: false }
    }

    /// One more stanza from the client handled.
    pub fn handled(&mut self) -> u32 {
        self.handled = self.handled.wrapping_add(1);
        self.handled
    }

    /// Everything up to stanza `h` from the client is safe.
    pub fn durable_up_to(&mut self, h: u32) {
        self.durable = h;
    }

    /// The `h` we may tell the client now.
    pub fn durable_h(&self) -> u32 {
        self.durable
    }

    /// The ack to send now.
    pub fn ack(&self) -> Element {
        ack(self.durable)
    }

    /// A stanza goes to the client (or would, while it is away).
    pub fn sent(&mut self, el: Box<Element>) {
        self.sent = self.sent.wrapping_add(1);
        self.unacked.push_back(Unacked { el, since: SystemTime::now() });
    }

    pub fn unacked_len(&self) -> usize {
        self.unacked.len()
    }

    /// How many stanzas we sent (wrapping): the number of the newest.
    pub fn sent_count(&self) -> u32 {
        self.sent
    }

    /// The unacknowledged stanzas numbered after `n` (a [`sent_count`] taken earlier),
    /// oldest first.
    ///
    /// [`sent_count`]: StreamManagement::sent_count
    pub fn unacked_after(&self, n: u32) -> impl Iterator<Item = &Unacked> {
        let newer = self.sent.wrapping_sub(n) as usize;
        self.unacked.iter().skip(self.unacked.len().saturating_sub(newer))
    }

    /// The client acknowledged up to our stanza `h`. An `h` beyond what we sent is a stream
    /// error (XEP-0198 §5).
    pub fn acknowledged(&mut self, h: u32) -> Result<(), StreamError> {
        // Numbers wrap: the client acknowledges `sent - h` fewer than we sent.
        let outstanding = self.sent.wrapping_sub(h) as usize;
        if outstanding > self.unacked.len() {
            // Either more than we sent, or an `h` going backwards: both are impossible.
            return Err(StreamError::new(StreamCondition::UndefinedCondition)
                .with_text(format!("You acknowledged {h} stanzas, but I only sent you {} so far.", self.sent))
                .with_app(xml::element("handled-count-too-high", ns::SM, &[("h", &h.to_string()), ("send-count", &self.sent.to_string())])));
        }
        let done = self.unacked.len() - outstanding;
        self.unacked.drain(..done);
        self.requested = false;
        Ok(())
    }

    /// Take what was not acknowledged, oldest first (to be sent again, or rerouted).
    pub fn take_unacked(&mut self) -> VecDeque<Unacked> {
        std::mem::take(&mut self.unacked)
    }

    /// Count `n` stanzas as sent again after a resumption (they are already in the queue).
    pub fn restore_unacked(&mut self, unacked: VecDeque<Unacked>) {
        self.unacked = unacked;
    }
}

/// A stanza sent again (on resumption) or rerouted (when the session is not resumed) gets
/// the time it was first sent (XEP-0198 §4, XEP-0203), unless it already has one.
pub fn with_delay(mut el: Element, since: SystemTime, from: &str) -> Element {
    if el.name() == "message" && el.get_child("delay", ns::DELAY).is_none() {
        let stamp = time::OffsetDateTime::from(since)
            .replace_nanosecond(0)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default();
        el.append_child(xml::element("delay", ns::DELAY, &[("from", from), ("stamp", &stamp)]));
    }
    el
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(i: u32) -> Box<Element> {
        Box::new(xml::element("message", ns::CLIENT, &[("id", &i.to_string())]))
    }

    #[test]
    fn parses_the_nonzas_of_the_examples() {
        let p = |s: &str| Nonza::parse(&xml::parse_element(s).unwrap());
        assert_eq!(p("<enable xmlns='urn:xmpp:sm:3'/>"), Some(Ok(Nonza::Enable(EnableRequest { resume: false, max: None }))));
        assert_eq!(p("<enable xmlns='urn:xmpp:sm:3' resume='1' max='60'/>"), Some(Ok(Nonza::Enable(EnableRequest { resume: true, max: Some(60) }))));
        assert_eq!(p("<r xmlns='urn:xmpp:sm:3'/>"), Some(Ok(Nonza::Request)));
        assert_eq!(p("<a xmlns='urn:xmpp:sm:3' h='4294967295'/>"), Some(Ok(Nonza::Ack(u32::MAX))));
        assert!(matches!(p("<a xmlns='urn:xmpp:sm:3' h='4294967296'/>"), Some(Err(_))));
        assert!(matches!(p("<a xmlns='urn:xmpp:sm:3' h='-1'/>"), Some(Err(_))));
        assert!(matches!(p("<a xmlns='urn:xmpp:sm:3'/>"), Some(Err(_))));
        assert!(matches!(p("<resume xmlns='urn:xmpp:sm:3' h='1'/>"), Some(Err(_))));
        assert_eq!(
            p("<resume xmlns='urn:xmpp:sm:3' h='7' previd='abc'/>"),
            Some(Ok(Nonza::Resume(ResumeRequest { previd: "abc".into(), h: 7 })))
        );
        assert_eq!(p("<r xmlns='urn:xmpp:sm:2'/>"), None);
    }

    #[test]
    fn acks_drop_what_they_cover_and_refuse_too_high() {
        let mut sm = StreamManagement::new(None);
        for i in 0..5 {
            sm.sent(msg(i));
        }
        sm.acknowledged(2).unwrap();
        assert_eq!(sm.unacked_len(), 3);
        sm.acknowledged(2).unwrap();
        assert_eq!(sm.unacked_len(), 3);
        let e = sm.acknowledged(6).unwrap_err();
        assert_eq!(e.condition, StreamCondition::UndefinedCondition);
        let app = e.app.unwrap();
        assert_eq!((app.attr("h"), app.attr("send-count")), (Some("6"), Some("5")));
        // Going backwards is as impossible as going past what was sent.
        assert!(sm.acknowledged(1).is_err());
        sm.acknowledged(5).unwrap();
        assert_eq!(sm.unacked_len(), 0);
    }

    #[test]
    fn unacked_after_a_count() {
        let mut sm = StreamManagement::new(None);
        sm.sent = u32::MAX - 2;
        for i in 0..3 {
            sm.sent(msg(i));
        }
        let mark = sm.sent_count();
        for i in 3..6 {
            sm.sent(msg(i));
        }
        let ids = |sm: &StreamManagement, n| sm.unacked_after(n).map(|u| u.el.attr("id").unwrap().to_string()).collect::<Vec<_>>();
        assert_eq!(ids(&sm, mark), ["3", "4", "5"]);
        assert_eq!(ids(&sm, u32::MAX - 2).len(), 6, "a mark from before everything still unacknowledged");
        sm.acknowledged(mark.wrapping_add(1)).unwrap();
        assert_eq!(ids(&sm, mark), ["4", "5"]);
        assert!(ids(&sm, sm.sent_count()).is_empty());
    }

    /// The counters wrap from 2^32-1 to 0 (§4).
    #[test]
    fn counters_wrap() {
        let mut sm = StreamManagement::new(None);
        sm.sent = u32::MAX - 1;
        sm.handled = u32::MAX;
        assert_eq!(sm.handled(), 0);
        sm.sent(msg(1));
        sm.sent(msg(2));
        sm.sent(msg(3));
        assert_eq!(sm.sent, 1);
        sm.acknowledged(u32::MAX).unwrap();
        assert_eq!(sm.unacked_len(), 2);
        sm.acknowledged(1).unwrap();
        assert_eq!(sm.unacked_len(), 0);
    }
}
