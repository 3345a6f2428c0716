//! XEP-0198 resumption: the sessions that may be resumed, by SM-ID, and how a new
//! connection hands itself to one. The session's state never moves: the new connection's
//! reader and writer go to the session's task, which carries on with them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use jid::BareJid;
use tokio::sync::{mpsc, oneshot};

use super::negotiate::Reader;
use super::transport::Writer;
use crate::xml::ReadStats;

/// A new connection, authenticated as the session's account, asking to take the session
/// over.
pub struct Handover {
    pub reader: Box<Reader>,
    pub writer: Writer,
    pub stats: Arc<ReadStats>,
    pub peer: std::net::SocketAddr,
    /// The `h` of the client's `<resume/>`.
    pub h: u32,
    /// `Ok` once the session has taken the connection (it answers `<resumed/>` itself);
    /// otherwise the connection comes back with the reason.
    pub reply: oneshot::Sender<Result<(), Refused>>,
}

/// A resumption the session did not take, with the connection, so that the client can bind
/// a new resource instead (XEP-0198 §5).
pub struct Refused {
    pub reader: Box<Reader>,
    pub writer: Writer,
    pub why: Refusal,
}

pub enum Refusal {
    /// The session ended meanwhile: `<failed h/>` with item-not-found.
    Gone(Option<u32>),
    /// The client's `h` is more than we sent: a stream error.
    Error(crate::stanza::StreamError),
}

struct Live {
    account: BareJid,
    tx: mpsc::Sender<Box<Handover>>,
}

/// A session that was not resumed in time, remembered for a while so that a late
/// `<resume/>` learns how many of its stanzas we handled (XEP-0198 §5, `<failed h/>`).
struct Expired {
    account: BareJid,
    h: u32,
    at: Instant,
}

/// How long an expired SM-ID is remembered, and how many at most.
const EXPIRED_KEEP: Duration = Duration::from_secs(3600);
const EXPIRED_MAX: usize = 100_000;

#[derive(Default)]
pub struct Resumptions {
    live: DashMap<String, Live>,
    expired: Mutex<ExpiredIds>,
}

#[derive(Default)]
struct ExpiredIds {
    by_id: HashMap<String, Expired>,
    order: VecDeque<String>,
}

/// What a `<resume/>` found.
pub enum Lookup {
    Live(mpsc::Sender<Box<Handover>>),
    /// Unknown, expired (with the `h` we saw, if we remember it), or another account's.
    Gone(Option<u32>),
}

impl Resumptions {
    /// A new resumable session: its SM-ID and the receiver its task listens on.
    /// (Handovers are boxed: a channel allocates its first block of slots up front, and a
    /// resumable session should cost little while idle.)
    pub fn register(&self, account: &BareJid) -> (String, mpsc::Receiver<Box<Handover>>) {
        let (tx, rx) = mpsc::channel(1);
        loop {
            // 128 random bits: an SM-ID must not be guessable (it is not a credential, the
            // account must match, but it must not leak which sessions exist either).
            let id = crate::stanza::new_id() + &crate::stanza::new_id();
            if let dashmap::Entry::Vacant(slot) = self.live.entry(id.clone()) {
                slot.insert(Live { account: account.clone(), tx });
                return (id, rx);
            }
        }
    }

    /// The session `id` of `account`, if it can still be resumed.
    pub fn find(&self, id: &str, account: &BareJid) -> Lookup {
        if let Some(live) = self.live.get(id) {
            return if &live.account == account { Lookup::Live(live.tx.clone()) } else { Lookup::Gone(None) };
        }
        let expired = self.expired.lock().unwrap();
        match expired.by_id.get(id) {
            Some(e) if &e.account == account => Lookup::Gone(Some(e.h)),
            _ => Lookup::Gone(None),
        }
    }

    /// The session ended for good; `h` is how many of the client's stanzas it handled.
    pub fn expire(&self, id: &str, account: &BareJid, h: u32) {
        self.live.remove(id);
        let mut expired = self.expired.lock().unwrap();
        let now = Instant::now();
        while let Some(oldest) = expired.order.front() {
            let old = expired.by_id.get(oldest).is_none_or(|e| now.duration_since(e.at) > EXPIRED_KEEP);
            if !old && expired.order.len() < EXPIRED_MAX {
                break;
            }
            let oldest = expired.order.pop_front().expect("not empty");
            expired.by_id.remove(&oldest);
        }
        expired.by_id.insert(id.to_string(), Expired { account: account.clone(), h, at: now });
        expired.order.push_back(id.to_string());
    }

    /// Resumable sessions right now.
    pub fn live(&self) -> usize {
        self.live.len()
    }
}
