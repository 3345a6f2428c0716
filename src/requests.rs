//! IQ requests the server itself sends (e.g. a XEP-0115 disco#info query to a client) and
//! the answers it waits for.
//!
//! A request is remembered by its id and the exact address it was sent to; the router hands
//! every IQ result or error addressed to a local account's bare JID or to a served domain
//! here first ([`PendingRequests::complete`]). Only an answer from that exact address, to
//! the address the request came from, is taken: ids are random, and the `from` of a local
//! client's stanza is stamped by the server, so nobody else can answer in its place.

use std::time::Duration;

use dashmap::DashMap;
use jid::Jid;
use tokio::sync::oneshot;

use crate::stanza::{IqType, Kind, Stanza};
use crate::xml::Element;

/// Requests waiting for an answer, server-wide.
pub struct PendingRequests {
    waiting: DashMap<(Box<str>, Jid), Waiting>,
    /// Requests that may wait at once; past it a new one fails at once (each holds memory
    /// until its answer or its timeout).
    max: usize,
}

struct Waiting {
    /// The request's `from`, which the answer must be addressed to.
    from: Jid,
    reply: oneshot::Sender<Element>,
}

/// Why a request got no result.
#[derive(Debug)]
pub enum RequestError {
    /// The answer was an error stanza (given whole), or the request bounced.
    Error(Element),
    /// No answer in time.
    Timeout,
    /// Too many requests wait already.
    TooMany,
}

/// A registered request; dropping it forgets the request (e.g. after its timeout).
pub struct Expected<'a> {
    requests: &'a PendingRequests,
    key: (Box<str>, Jid),
    answer: oneshot::Receiver<Element>,
}

impl PendingRequests {
    pub fn new(max: usize) -> Self {
        PendingRequests { waiting: DashMap::new(), max }
    }

    /// Remember a request with `id`, sent from `from` to `to`, before it is sent.
    pub fn expect(&self, id: &str, from: Jid, to: Jid) -> Result<Expected<'_>, RequestError> {
        if self.waiting.len() >= self.max {
            return Err(RequestError::TooMany);
        }
        let (reply, answer) = oneshot::channel();
        let key: (Box<str>, Jid) = (id.into(), to);
        self.waiting.insert(key.clone(), Waiting { from, reply });
        Ok(Expected { requests: self, key, answer })
    }

    /// Take an IQ result or error if it answers a request of ours; otherwise give it back.
    pub fn complete(&self, stanza: Stanza) -> Option<Stanza> {
        if stanza.kind != Kind::Iq || !matches!(stanza.iq_type(), Some(IqType::Result | IqType::Error)) {
            return Some(stanza);
        }
        let Some(id) = stanza.id() else { return Some(stanza) };
        let key: (Box<str>, Jid) = (id.into(), stanza.from.clone());
        let addressed_to_us = |w: &Waiting| stanza.to.as_ref() == Some(&w.from);
        match self.waiting.remove_if(&key, |_, w| addressed_to_us(w)) {
            Some((_, waiting)) => {
                let _ = waiting.reply.send(stanza.el);
                None
            }
            None => Some(stanza),
        }
    }

    /// Requests waiting now (for tests and metrics).
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

impl Expected<'_> {
    /// Wait for the answer: the result element, or why there is none.
    pub async fn wait(mut self, timeout: Duration) -> Result<Element, RequestError> {
        match tokio::time::timeout(timeout, &mut self.answer).await {
            Ok(Ok(el)) if el.attr("type") == Some("error") => Err(RequestError::Error(el)),
            Ok(Ok(el)) => Ok(el),
            Ok(Err(_)) | Err(_) => Err(RequestError::Timeout),
        }
    }
}

impl Drop for Expected<'_> {
    fn drop(&mut self) {
        self.requests.waiting.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::parse_element;

    fn answer(xml: &str) -> Stanza {
        Stanza::from_stored(parse_element(xml).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn only_the_exact_sender_answers() {
        let requests = PendingRequests::new(10);
        let me = Jid::new("a@h").unwrap();
        let client = Jid::new("a@h/phone").unwrap();
        let expected = requests.expect("q1", me.clone(), client).unwrap();
        // Same id, another sender: not ours.
        let spoof = answer("<iq xmlns='jabber:client' type='result' id='q1' from='a@h/other' to='a@h'/>");
        assert!(requests.complete(spoof).is_some());
        // Right sender, addressed elsewhere: not ours either.
        let elsewhere = answer("<iq xmlns='jabber:client' type='result' id='q1' from='a@h/phone' to='b@h'/>");
        assert!(requests.complete(elsewhere).is_some());
        // A request, not an answer.
        let get = answer("<iq xmlns='jabber:client' type='get' id='q1' from='a@h/phone' to='a@h'><x xmlns='y'/></iq>");
        assert!(requests.complete(get).is_some());
        let real = answer("<iq xmlns='jabber:client' type='result' id='q1' from='a@h/phone' to='a@h'><query xmlns='q'/></iq>");
        assert!(requests.complete(real).is_none());
        let el = expected.wait(Duration::from_secs(1)).await.unwrap();
        assert!(el.has_child("query", "q"));
        assert!(requests.is_empty());
    }

    #[tokio::test]
    async fn errors_timeouts_and_the_limit() {
        let requests = PendingRequests::new(1);
        let me = Jid::new("a@h").unwrap();
        let expected = requests.expect("q2", me.clone(), Jid::new("a@h/r").unwrap()).unwrap();
        assert!(matches!(requests.expect("q3", me.clone(), Jid::new("a@h/s").unwrap()), Err(RequestError::TooMany)));
        let error = answer("<iq xmlns='jabber:client' type='error' id='q2' from='a@h/r' to='a@h'/>");
        assert!(requests.complete(error).is_none());
        assert!(matches!(expected.wait(Duration::from_secs(1)).await, Err(RequestError::Error(_))));
        let expected = requests.expect("q4", me, Jid::new("a@h/r").unwrap()).unwrap();
        assert!(matches!(expected.wait(Duration::from_millis(10)).await, Err(RequestError::Timeout)));
        assert!(requests.is_empty(), "a request that timed out is forgotten");
    }
}
