//! The session registry: which resources of which accounts are connected, how to reach
//! them, and their presence state. In memory only; an online-to-online message is routed
//! from here without touching the database.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use jid::{BareJid, FullJid, Jid};
use crate::xml::Element;
use futures_util::task::AtomicWaker;
use tokio::sync::mpsc;

use crate::stanza::StreamError;

fn bare_str(jid: &FullJid) -> &str {
    crate::stanza::bare_str(jid.as_str())
}

/// Identifies one connection, so that a replaced session cannot remove its replacement.
pub type ConnId = u64;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

pub fn next_conn_id() -> ConnId {
    NEXT_CONN.fetch_add(1, Ordering::Relaxed)
}

/// Asks a session to end, and counts what waits in its queue. Separate from the stanza
/// queue, so that it works when the queue is full.
#[derive(Debug, Default)]
pub struct Control {
    close: Mutex<Option<StreamError>>,
    /// Set once a close was asked for: the session looks at it each time it wakes, without
    /// the lock.
    closing: AtomicBool,
    /// The session's task, woken by a close request. One waker, not a list of waiters
    /// (`Notify`): only the session's own task waits here, and it polls this on every wake
    /// (for every stanza it is sent), where registering and removing a waiter each time cost
    /// two locks.
    waker: AtomicWaker,
    /// Stanzas in the queue.
    queued: AtomicUsize,
    /// Since when (`now_ms`) the queue has held more than the soft limit; 0 when it does not.
    over_since: AtomicU64,
}

/// Milliseconds on a clock that starts with the process (never 0 once read: see
/// `Control::over_since`).
pub fn now_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64 + 1
}

impl Control {
    /// Ask the session to end with `error` (the first request wins). `true` if this was the
    /// first request.
    pub fn close(&self, error: StreamError) -> bool {
        let first = {
            let mut slot = self.close.lock().unwrap();
            let first = slot.is_none();
            slot.get_or_insert(error);
            first
        };
        self.closing.store(true, Ordering::Release);
        self.waker.wake();
        first
    }

    /// A close request, if one came.
    pub fn pending(&self) -> Option<StreamError> {
        if !self.closing.load(Ordering::Acquire) {
            return None;
        }
        self.close.lock().unwrap().take()
    }

    /// The session took one stanza from its queue; `soft` is the queue's soft limit.
    pub fn dequeued(&self, soft: usize) {
        let left = self.queued.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
        if left <= soft {
            self.over_since.store(0, Ordering::Relaxed);
        }
    }

    /// Stanzas waiting in the queue.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Wait for a close request. Cancel-safe: the request stays until taken. For the
    /// session's own task only (see `waker`).
    pub async fn closed(&self) -> StreamError {
        std::future::poll_fn(|cx| {
            self.waker.register(cx.waker());
            match self.pending() {
                Some(e) => std::task::Poll::Ready(e),
                None => std::task::Poll::Pending,
            }
        })
        .await
    }
}

/// What the registry holds to reach one session.
#[derive(Debug, Clone)]
pub struct Link {
    /// Boxed, so that the queue's blocks of slots cost 8 bytes a slot rather than the size
    /// of an `Element`. Unbounded: its limits are [`QueueLimits`], checked by `deliver`.
    pub tx: mpsc::UnboundedSender<Box<Element>>,
    pub control: Arc<Control>,
    /// The client's address and when it bound, for `starling session list`.
    pub peer: std::net::SocketAddr,
    pub since: std::time::SystemTime,
}

/// Presence state of one resource (RFC 6121 §4).
#[derive(Debug, Clone, Default)]
pub struct PresenceState {
    /// Has sent initial presence and not yet unavailable.
    pub available: bool,
    pub priority: i8,
    /// The last broadcast presence, serialised without its addresses: a parsed element
    /// costs several times more (a tree of allocations), and it is only read
    /// when a contact logs in or probes.
    pub last: Option<Box<str>>,
    /// Requested the roster, so receives roster pushes (RFC 6121 §2.1.6).
    pub interested: bool,
    /// Entities that got directed presence and must get unavailable at the end (§4.6).
    pub directed: HashSet<Jid>,
}

struct Resource {
    jid: FullJid,
    conn: ConnId,
    link: Link,
    state: PresenceState,
}

/// One bound session as `starling session list` shows it.
#[derive(Debug, Clone)]
pub struct SessionSummary {
    pub jid: FullJid,
    pub peer: std::net::SocketAddr,
    pub since: std::time::SystemTime,
    pub available: bool,
    pub priority: i8,
    /// The last broadcast presence, serialised.
    pub last: Option<Box<str>>,
}

/// Why a bind was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum BindError {
    TooManyResources,
}

/// How much may wait for one session (see [`Sessions::deliver`]).
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Stanzas a session may hold for a while (`c2s.max_queue`).
    pub soft: usize,
    /// Stanzas it may never hold: past this it is closed at once.
    pub hard: usize,
    /// How long it may stay above `soft` (`c2s.write_timeout`).
    pub over_ms: u64,
}

impl QueueLimits {
    pub fn new(max_queue: usize, write_timeout: std::time::Duration) -> QueueLimits {
        QueueLimits { soft: max_queue, hard: max_queue.saturating_mul(10), over_ms: write_timeout.as_millis() as u64 }
    }
}

/// Why a stanza could not be handed to a session. Either way the stanza comes back, to be
/// routed as if the resource were not there.
#[derive(Debug)]
pub enum SendError {
    /// No such resource is connected.
    Offline(Element),
    /// Its queue has been over its limit for too long, or far over it: it does not read what
    /// it is sent. It has been told to close.
    Full(Element),
}

/// A connected resource as seen by routing.
#[derive(Debug, Clone)]
pub struct ResourceInfo {
    pub jid: FullJid,
    pub available: bool,
    pub priority: i8,
}

pub struct Sessions {
    /// By bare JID, as text: routing finds a full JID's account by a slice of it, without
    /// making its bare JID (an allocation per stanza routed).
    users: DashMap<Box<str>, Vec<Resource>>,
    max_resources: usize,
    queue: QueueLimits,
}

impl Sessions {
    pub fn new(max_resources: usize, queue: QueueLimits) -> Self {
        Sessions { users: DashMap::new(), max_resources, queue }
    }

    pub fn queue_limits(&self) -> QueueLimits {
        self.queue
    }

    /// Register a bound resource. If the same full JID is already bound, the old session is
    /// replaced and told to close with `<conflict/>` (RFC 6120 §7.7.2.2, our policy).
    /// Returns the presence state of a session that was replaced, so that it can end like
    /// any other (its contacts see it go unavailable).
    pub fn bind(&self, jid: FullJid, conn: ConnId, link: Link) -> Result<Option<PresenceState>, BindError> {
        // Room for one resource: most accounts have one, and a `Vec` would otherwise start
        // with room for four (this is per online account).
        let mut entry = self.users.entry(bare_str(&jid).into()).or_insert_with(|| Vec::with_capacity(1));
        if let Some(old) = entry.iter_mut().find(|r| r.jid == jid) {
            let replaced = std::mem::replace(old, Resource { jid, conn, link, state: PresenceState::default() });
            replaced.link.control.close(
                StreamError::new(crate::stanza::StreamCondition::Conflict).with_text("replaced by a new session"),
            );
            return Ok(Some(replaced.state));
        }
        if entry.len() >= self.max_resources {
            return Err(BindError::TooManyResources);
        }
        entry.push(Resource { jid, conn, link, state: PresenceState::default() });
        Ok(None)
    }

    /// Remove a resource if it still belongs to `conn`. Returns its final presence state and
    /// whether it was the account's last connected resource.
    pub fn unbind(&self, jid: &FullJid, conn: ConnId) -> Option<(PresenceState, bool)> {
        let bare = bare_str(jid);
        let mut entry = self.users.get_mut(bare)?;
        let pos = entry.iter().position(|r| &r.jid == jid && r.conn == conn)?;
        let removed = entry.swap_remove(pos);
        let last = entry.is_empty();
        drop(entry);
        if last {
            self.users.remove_if(bare, |_, v| v.is_empty());
        }
        Some((removed.state, last))
    }

    /// The client of a resumed session (XEP-0198) is now at another address.
    pub fn set_peer(&self, jid: &FullJid, conn: ConnId, peer: std::net::SocketAddr) {
        if let Some(mut entry) = self.users.get_mut(bare_str(jid))
            && let Some(r) = entry.iter_mut().find(|r| &r.jid == jid && r.conn == conn)
        {
            r.link.peer = peer;
        }
    }

    fn link(&self, jid: &FullJid) -> Option<Link> {
        let entry = self.users.get(bare_str(jid))?;
        entry.iter().find(|r| &r.jid == jid).map(|r| r.link.clone())
    }

    /// Hand a stanza to one connected resource. Never waits: a sender must not go at the
    /// pace of its slowest recipient (a contact with stuck resources would freeze every
    /// session that sends it presence). A burst may take a queue over its soft limit
    /// (`c2s.max_queue`) for a while; a resource whose queue stays over it for
    /// `c2s.write_timeout`, or goes ten times over it, is not reading what it is sent: it is
    /// told to close (as ejabberd does past its max_fsm_queue), and the stanza comes back to
    /// be routed as if it were not there (messages to other resources or offline storage);
    /// once it has reconnected, the client gets a fresh view of everything it missed.
    pub fn deliver(&self, jid: &FullJid, stanza: Element) -> Result<(), SendError> {
        // Under the account's entry (a read lock on its shard), rather than with a copy of
        // the link: this runs for every copy of a room's broadcast.
        let Some(entry) = self.users.get(bare_str(jid)) else { return Err(SendError::Offline(stanza)) };
        let Some(link) = entry.iter().find(|r| &r.jid == jid).map(|r| &r.link) else {
            return Err(SendError::Offline(stanza));
        };
        let control = &link.control;
        let len = control.queued.fetch_add(1, Ordering::AcqRel) + 1;
        if len > self.queue.soft && self.over_too_long(control, len) {
            control.queued.fetch_sub(1, Ordering::AcqRel);
            Self::overloaded(jid, link);
            return Err(SendError::Full(stanza));
        }
        match link.tx.send(Box::new(stanza)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendError(s)) => {
                control.queued.fetch_sub(1, Ordering::AcqRel);
                Err(SendError::Offline(*s))
            }
        }
    }

    /// Whether an account (its bare JID's text) has a bound resource.
    pub fn is_online(&self, account: &str) -> bool {
        self.users.contains_key(account)
    }

    /// A queue holding `len` (over the soft limit): has it been over for too long, or is it
    /// past the hard limit?
    fn over_too_long(&self, control: &Control, len: usize) -> bool {
        if len > self.queue.hard {
            return true;
        }
        let now = now_ms();
        match control.over_since.compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => false,
            Err(since) => now.saturating_sub(since) > self.queue.over_ms,
        }
    }

    /// Like [`Sessions::deliver`], but waits up to `wait` for room. Only for a task that is
    /// nobody's sender: a session that ends hands what it did not write to the account's
    /// other resources, and that backlog must not push a resource that reads perfectly well
    /// over its limit. It takes room only while the queue is at most half full, so that the
    /// live traffic arriving meanwhile from other senders still fits. A resource that makes
    /// no such room in `wait` does not read, and is closed.
    pub async fn deliver_patiently(&self, jid: &FullJid, stanza: Element, wait: Duration) -> Result<(), SendError> {
        let Some(link) = self.link(jid) else { return Err(SendError::Offline(stanza)) };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if link.tx.is_closed() {
                return Err(SendError::Offline(stanza));
            }
            if link.control.queued() < self.queue.soft / 2 {
                return self.deliver(jid, stanza);
            }
            if tokio::time::Instant::now() >= deadline {
                Self::overloaded(jid, &link);
                return Err(SendError::Full(stanza));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn overloaded(jid: &FullJid, link: &Link) {
        let error = StreamError::new(crate::stanza::StreamCondition::PolicyViolation).with_text("too many unread stanzas");
        if link.control.close(error) {
            tracing::warn!(%jid, "disconnecting a client that does not read its stanzas");
        }
    }

    /// The connected resources of an account.
    pub fn resources(&self, bare: &BareJid) -> Vec<ResourceInfo> {
        match self.users.get(bare.as_str()) {
            Some(entry) => entry
                .iter()
                .map(|r| ResourceInfo { jid: r.jid.clone(), available: r.state.available, priority: r.state.priority })
                .collect(),
            None => Vec::new(),
        }
    }

    pub fn is_connected(&self, jid: &FullJid) -> bool {
        self.users.get(bare_str(jid)).is_some_and(|e| e.iter().any(|r| &r.jid == jid))
    }

    pub fn has_sessions(&self, bare: &BareJid) -> bool {
        self.is_online(bare.as_str())
    }

    pub fn has_available(&self, bare: &BareJid) -> bool {
        self.users.get(bare.as_str()).is_some_and(|e| e.iter().any(|r| r.state.available))
    }

    /// Read or change one resource's presence state.
    pub fn with_state<R>(&self, jid: &FullJid, f: impl FnOnce(&mut PresenceState) -> R) -> Option<R> {
        let mut entry = self.users.get_mut(bare_str(jid))?;
        let r = entry.iter_mut().find(|r| &r.jid == jid)?;
        Some(f(&mut r.state))
    }

    /// The last presence of each available resource of an account.
    pub fn available_presences(&self, bare: &BareJid) -> Vec<(FullJid, Element)> {
        let stored: Vec<(FullJid, Box<str>)> = match self.users.get(bare.as_str()) {
            Some(entry) => entry
                .iter()
                .filter(|r| r.state.available)
                .filter_map(|r| r.state.last.clone().map(|p| (r.jid.clone(), p)))
                .collect(),
            None => return Vec::new(),
        };
        stored
            .into_iter()
            .filter_map(|(jid, text)| crate::xml::parse_element(&text).ok().map(|el| (jid, el)))
            .collect()
    }

    /// Resources that asked for the roster (targets of roster pushes).
    pub fn interested(&self, bare: &BareJid) -> Vec<FullJid> {
        match self.users.get(bare.as_str()) {
            Some(entry) => entry.iter().filter(|r| r.state.interested).map(|r| r.jid.clone()).collect(),
            None => Vec::new(),
        }
    }

    /// Ask every session of an account to close (e.g. the account was deleted).
    pub fn close_all(&self, bare: &BareJid, error: StreamError) {
        if let Some(entry) = self.users.get(bare.as_str()) {
            for r in entry.iter() {
                r.link.control.close(error.clone());
            }
        }
    }

    /// Ask every session to close (shutdown).
    pub fn close_everyone(&self, error: StreamError) {
        for entry in self.users.iter() {
            for r in entry.iter() {
                r.link.control.close(error.clone());
            }
        }
    }

    /// Ask one session to close; `false` if it is not connected.
    pub fn close(&self, jid: &FullJid, error: StreamError) -> bool {
        match self.link(jid) {
            Some(link) => {
                link.control.close(error);
                true
            }
            None => false,
        }
    }

    /// Every bound session, or those of one account, sorted by JID (`starling session list`).
    pub fn list(&self, account: Option<&BareJid>) -> Vec<SessionSummary> {
        let summary = |r: &Resource| SessionSummary {
            jid: r.jid.clone(),
            peer: r.link.peer,
            since: r.link.since,
            available: r.state.available,
            priority: r.state.priority,
            last: r.state.last.clone(),
        };
        let mut list: Vec<SessionSummary> = match account {
            Some(bare) => self.users.get(bare.as_str()).map(|e| e.iter().map(summary).collect()).unwrap_or_default(),
            None => self.users.iter().flat_map(|e| e.iter().map(summary).collect::<Vec<_>>()).collect(),
        };
        list.sort_by(|a, b| a.jid.as_str().cmp(b.jid.as_str()));
        list
    }

    /// Number of bound resources (for logs and metrics).
    pub fn count(&self) -> usize {
        self.users.iter().map(|e| e.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link() -> (Link, mpsc::UnboundedReceiver<Box<Element>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let peer = "127.0.0.1:1".parse().unwrap();
        (Link { tx, control: Arc::new(Control::default()), peer, since: std::time::SystemTime::now() }, rx)
    }

    fn limits(soft: usize, over_ms: u64) -> QueueLimits {
        QueueLimits { soft, hard: soft * 10, over_ms }
    }

    fn message() -> Element {
        Element::bare("message", "jabber:client")
    }

    /// What a session does when it takes a stanza from its queue.
    fn take(rx: &mut mpsc::UnboundedReceiver<Box<Element>>, control: &Control, soft: usize) {
        rx.try_recv().expect("a stanza waits");
        control.dequeued(soft);
    }

    #[test]
    fn bind_replace_and_limit() {
        let sessions = Sessions::new(2, limits(4, 10_000));
        let a = FullJid::new("u@h/a").unwrap();
        let (l1, _rx1) = link();
        let control1 = l1.control.clone();
        let (l2, _rx2) = link();
        sessions.bind(a.clone(), 1, l1).unwrap();
        assert!(sessions.bind(a.clone(), 2, l2).unwrap().is_some());
        assert_eq!(control1.pending().map(|e| e.condition), Some(crate::stanza::StreamCondition::Conflict));
        // The replaced connection cannot remove its replacement.
        assert!(sessions.unbind(&a, 1).is_none());
        assert!(sessions.is_connected(&a));
        sessions.bind(FullJid::new("u@h/b").unwrap(), 3, link().0).unwrap();
        assert_eq!(sessions.bind(FullJid::new("u@h/c").unwrap(), 4, link().0).err(), Some(BindError::TooManyResources));
        assert_eq!(sessions.unbind(&a, 2).map(|(_, last)| last), Some(false));
        assert_eq!(sessions.unbind(&FullJid::new("u@h/b").unwrap(), 3).map(|(_, last)| last), Some(true));
        assert!(!sessions.has_sessions(&BareJid::new("u@h").unwrap()));
    }

    /// A burst may take a queue over its soft limit; a recipient that brings it back under
    /// the limit in time is left alone. The sender never waits.
    #[test]
    fn a_burst_over_the_soft_limit_is_kept() {
        let sessions = Sessions::new(2, limits(4, 10_000));
        let a = FullJid::new("u@h/a").unwrap();
        let (l, mut rx) = link();
        let control = l.control.clone();
        sessions.bind(a.clone(), 1, l).unwrap();
        for _ in 0..30 {
            sessions.deliver(&a, message()).unwrap();
        }
        assert_eq!(control.queued(), 30);
        assert!(control.pending().is_none());
        for _ in 0..27 {
            take(&mut rx, &control, 4);
        }
        assert_eq!(control.over_since.load(Ordering::Relaxed), 0, "back under the soft limit");
    }

    /// A queue that stays over its soft limit for longer than the allowance, or goes over the
    /// hard limit, closes its recipient at once: the stanza comes back to the sender's routing.
    #[test]
    fn a_queue_that_stays_over_closes_the_recipient() {
        let sessions = Sessions::new(2, limits(4, 50));
        let a = FullJid::new("u@h/a").unwrap();
        let (l, mut rx) = link();
        let control = l.control.clone();
        sessions.bind(a.clone(), 1, l).unwrap();
        for _ in 0..5 {
            sessions.deliver(&a, message()).unwrap();
        }
        std::thread::sleep(Duration::from_millis(80));
        let started = std::time::Instant::now();
        assert!(matches!(sessions.deliver(&a, message()), Err(SendError::Full(_))));
        assert!(started.elapsed() < Duration::from_millis(20), "the sender waited");
        assert_eq!(control.pending().map(|e| e.condition), Some(crate::stanza::StreamCondition::PolicyViolation));
        // What was queued before stays for the session to write (or reroute).
        take(&mut rx, &control, 4);
        // The hard limit closes at once, whatever the time.
        let b = FullJid::new("u@h/b").unwrap();
        let (l, _rx) = link();
        let control = l.control.clone();
        sessions.bind(b.clone(), 2, l).unwrap();
        for _ in 0..40 {
            sessions.deliver(&b, message()).unwrap();
        }
        assert!(matches!(sessions.deliver(&b, message()), Err(SendError::Full(_))));
        assert!(control.pending().is_some());
    }

    /// The patient hand-over (rerouting a backlog) waits while the queue is half full or
    /// more, so that live traffic still fits; a recipient that makes no room is closed.
    #[tokio::test(start_paused = true)]
    async fn patient_delivery_leaves_room_for_live_traffic() {
        let sessions = Sessions::new(2, limits(4, 10_000));
        let a = FullJid::new("u@h/a").unwrap();
        let (l, mut rx) = link();
        let control = l.control.clone();
        sessions.bind(a.clone(), 1, l).unwrap();
        let wait = Duration::from_secs(10);
        for _ in 0..2 {
            sessions.deliver_patiently(&a, message(), wait).await.unwrap();
        }
        // Half full: the next one waits for the reader, while a live stanza still fits.
        let patient = sessions.deliver_patiently(&a, message(), Duration::from_secs(1));
        tokio::pin!(patient);
        assert!(tokio::time::timeout(Duration::from_millis(100), &mut patient).await.is_err(), "it did not wait");
        sessions.deliver(&a, message()).unwrap();
        take(&mut rx, &control, 4);
        take(&mut rx, &control, 4);
        patient.await.unwrap();
        assert!(control.pending().is_none(), "a reading recipient was closed");
        // Nobody reads: after the wait, closed.
        let r = sessions.deliver_patiently(&a, message(), Duration::from_secs(1)).await;
        assert!(matches!(r, Err(SendError::Full(_))));
        assert!(control.pending().is_some());
    }
}
