//! The client's side of XEP-0198 stream management, as the scenarios share it: which
//! stanzas count, the `<a h/>` answer, and the sent-stanza counter whose acknowledgements
//! are timed (how long a server takes to acknowledge what a client sent).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

pub const REQUEST: &str = "<r xmlns='urn:xmpp:sm:3'/>";

/// Stanzas count for `h` (XEP-0198 §4): messages, presences and IQs, not nonzas.
pub fn counted(name: &str) -> bool {
    matches!(name, "message" | "presence" | "iq")
}

pub fn answer(h: u32) -> String {
    format!("<a xmlns='urn:xmpp:sm:3' h='{h}'/>")
}

/// One session's counters. `received` is the `h` this client reports; `out` what it sent
/// and which of it the server acknowledged.
#[derive(Default)]
pub struct Counters {
    pub received: AtomicU32,
    /// The server's `<r/>` requests.
    pub requests: AtomicU32,
    out: Mutex<Out>,
}

#[derive(Default)]
struct Out {
    sent: u32,
    acked: u32,
    /// (count of sent stanzas after a burst, when it was sent), oldest first.
    waiting: VecDeque<(u32, Instant)>,
    /// Microseconds from a burst's send to the first `<a/>` covering it.
    latencies_us: Vec<u32>,
}

/// `a` is at or after `b` on the 2^32 ring of counters.
fn covers(a: u32, b: u32) -> bool {
    a.wrapping_sub(b) < 1 << 31
}

impl Counters {
    /// Counters of a session that has received `received` and sent `sent` stanzas since
    /// `<enable/>`, `acked` of them acknowledged.
    pub fn starting_at(received: u32, sent: u32, acked: u32) -> Self {
        let c = Counters::default();
        c.received.store(received, Ordering::Relaxed);
        {
            let mut out = c.out.lock().unwrap();
            out.sent = sent;
            out.acked = acked;
        }
        c
    }

    /// A stanza arrived; returns the new `h`.
    pub fn received_one(&self) -> u32 {
        self.received
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1)
    }

    /// `n` stanzas were written; with `timed`, the burst's acknowledgement is timed.
    pub fn sent(&self, n: u32, timed: bool) {
        let mut out = self.out.lock().unwrap();
        out.sent = out.sent.wrapping_add(n);
        if timed && n > 0 {
            let at = out.sent;
            out.waiting.push_back((at, Instant::now()));
        }
    }

    /// The server's `<a h/>`.
    pub fn acknowledged(&self, h: u32) {
        let now = Instant::now();
        let mut out = self.out.lock().unwrap();
        if covers(h, out.acked) {
            out.acked = h;
        }
        while let Some(&(at, when)) = out.waiting.front() {
            if !covers(h, at) {
                break;
            }
            out.waiting.pop_front();
            let us = now.duration_since(when).as_micros().min(u32::MAX as u128) as u32;
            out.latencies_us.push(us);
        }
    }

    /// Stanzas sent and not (yet) acknowledged.
    pub fn unacked(&self) -> u32 {
        let out = self.out.lock().unwrap();
        out.sent.wrapping_sub(out.acked)
    }

    /// The acknowledgement times gathered so far (emptied).
    pub fn take_latencies(&self) -> Vec<u32> {
        std::mem::take(&mut self.out.lock().unwrap().latencies_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_covers_every_burst_up_to_h() {
        let c = Counters::starting_at(0, 2, 0);
        c.sent(3, true);
        c.sent(2, true);
        assert_eq!(c.unacked(), 7);
        c.acknowledged(5);
        assert_eq!(c.take_latencies().len(), 1);
        assert_eq!(c.unacked(), 2);
        c.acknowledged(7);
        assert_eq!(c.take_latencies().len(), 1);
        assert_eq!(c.unacked(), 0);
        // An older ack does not move the count back.
        c.acknowledged(3);
        assert_eq!(c.unacked(), 0);
    }

    #[test]
    fn counters_wrap() {
        let c = Counters::starting_at(u32::MAX, u32::MAX - 1, u32::MAX - 1);
        assert_eq!(c.received_one(), 0);
        c.sent(3, true);
        c.acknowledged(1);
        assert_eq!(c.unacked(), 0);
        assert_eq!(c.take_latencies().len(), 1);
    }
}
