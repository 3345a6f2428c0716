//! The session registry: which resources of which accounts are connected, how to reach
//! them, and their presence state. In memory only; an online-to-online message is routed
//! from here without touching the database.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use tokio::sync::mpsc;

use crate::stanza::StreamError;

/// Identifies one connection, so that a replaced session cannot remove its replacement.
pub type ConnId = u64;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

pub fn next_conn_id() -> ConnId {
    NEXT_CONN.fetch_add(1, Ordering::Relaxed)
}

/// What other tasks can ask of a session.
#[derive(Debug)]
pub enum Outbound {
    /// Write this stanza to the client.
    Stanza(Element),
    /// End the stream with this error (e.g. `<conflict/>` when replaced).
    Close(StreamError),
}

/// Presence state of one resource (RFC 6121 §4).
#[derive(Debug, Clone, Default)]
pub struct PresenceState {
    /// Has sent initial presence and not yet unavailable.
    pub available: bool,
    pub priority: i8,
    /// The last broadcast presence, for probes and new contacts.
    pub last: Option<Element>,
    /// Requested the roster, so receives roster pushes (RFC 6121 §2.1.6).
    pub interested: bool,
    /// Entities that got directed presence and must get unavailable at the end (§4.6).
    pub directed: HashSet<Jid>,
}

struct Resource {
    jid: FullJid,
    conn: ConnId,
    tx: mpsc::Sender<Outbound>,
    state: PresenceState,
}

/// Why a bind was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum BindError {
    TooManyResources,
}

/// Why a stanza could not be handed to a session.
#[derive(Debug)]
pub enum SendError {
    /// No such resource is connected.
    Offline(Element),
    /// The session does not read fast enough; it has been told to close.
    Overloaded(Element),
}

/// A connected resource as seen by routing.
#[derive(Debug, Clone)]
pub struct ResourceInfo {
    pub jid: FullJid,
    pub available: bool,
    pub priority: i8,
}

pub struct Sessions {
    users: DashMap<BareJid, Vec<Resource>>,
    max_resources: usize,
}

impl Sessions {
    pub fn new(max_resources: usize) -> Self {
        Sessions { users: DashMap::new(), max_resources }
    }

    /// Register a bound resource. If the same full JID is already bound, the old session is
    /// replaced and told to close with `<conflict/>` (RFC 6120 §7.7.2.2, our policy).
    /// Returns the presence state of a session that was replaced, so that it can end like
    /// any other (its contacts see it go unavailable).
    pub fn bind(&self, jid: FullJid, conn: ConnId, tx: mpsc::Sender<Outbound>) -> Result<Option<PresenceState>, BindError> {
        let bare = jid.to_bare();
        let mut entry = self.users.entry(bare).or_default();
        if let Some(old) = entry.iter_mut().find(|r| r.jid == jid) {
            let replaced = std::mem::replace(old, Resource { jid, conn, tx, state: PresenceState::default() });
            let _ = replaced.tx.try_send(Outbound::Close(
                StreamError::new(crate::stanza::StreamCondition::Conflict).with_text("replaced by a new session"),
            ));
            return Ok(Some(replaced.state));
        }
        if entry.len() >= self.max_resources {
            return Err(BindError::TooManyResources);
        }
        entry.push(Resource { jid, conn, tx, state: PresenceState::default() });
        Ok(None)
    }

    /// Remove a resource if it still belongs to `conn`. Returns its final presence state and
    /// whether it was the account's last connected resource.
    pub fn unbind(&self, jid: &FullJid, conn: ConnId) -> Option<(PresenceState, bool)> {
        let bare = jid.to_bare();
        let mut entry = self.users.get_mut(&bare)?;
        let pos = entry.iter().position(|r| &r.jid == jid && r.conn == conn)?;
        let removed = entry.swap_remove(pos);
        let last = entry.is_empty();
        drop(entry);
        if last {
            self.users.remove_if(&bare, |_, v| v.is_empty());
        }
        Some((removed.state, last))
    }

    /// Hand a stanza to one connected resource without waiting.
    pub fn send(&self, jid: &FullJid, stanza: Element) -> Result<(), SendError> {
        let tx = {
            let Some(entry) = self.users.get(&jid.to_bare()) else { return Err(SendError::Offline(stanza)) };
            match entry.iter().find(|r| &r.jid == jid) {
                Some(r) => r.tx.clone(),
                None => return Err(SendError::Offline(stanza)),
            }
        };
        // The last slot of the queue is kept for the close request, so that a full queue
        // can still tell its session to go.
        if tx.capacity() <= 1 {
            // A client that does not read must not make the server buffer without bound
            // (ejabberd's max_fsm_queue): it is disconnected; the caller reroutes.
            let _ = tx.try_send(Outbound::Close(
                StreamError::new(crate::stanza::StreamCondition::PolicyViolation).with_text("too many unread stanzas"),
            ));
            tracing::warn!(%jid, "disconnecting a client that does not read its stanzas");
            return Err(SendError::Overloaded(stanza));
        }
        match tx.try_send(Outbound::Stanza(stanza)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(Outbound::Stanza(s)) | mpsc::error::TrySendError::Full(Outbound::Stanza(s))) => {
                Err(SendError::Offline(s))
            }
            Err(_) => unreachable!("only stanzas are sent here"),
        }
    }

    /// The connected resources of an account.
    pub fn resources(&self, bare: &BareJid) -> Vec<ResourceInfo> {
        match self.users.get(bare) {
            Some(entry) => entry
                .iter()
                .map(|r| ResourceInfo { jid: r.jid.clone(), available: r.state.available, priority: r.state.priority })
                .collect(),
            None => Vec::new(),
        }
    }

    pub fn is_connected(&self, jid: &FullJid) -> bool {
        self.users.get(&jid.to_bare()).is_some_and(|e| e.iter().any(|r| &r.jid == jid))
    }

    pub fn has_sessions(&self, bare: &BareJid) -> bool {
        self.users.contains_key(bare)
    }

    pub fn has_available(&self, bare: &BareJid) -> bool {
        self.users.get(bare).is_some_and(|e| e.iter().any(|r| r.state.available))
    }

    /// Read or change one resource's presence state.
    pub fn with_state<R>(&self, jid: &FullJid, f: impl FnOnce(&mut PresenceState) -> R) -> Option<R> {
        let mut entry = self.users.get_mut(&jid.to_bare())?;
        let r = entry.iter_mut().find(|r| &r.jid == jid)?;
        Some(f(&mut r.state))
    }

    /// The last presence of each available resource of an account.
    pub fn available_presences(&self, bare: &BareJid) -> Vec<(FullJid, Element)> {
        match self.users.get(bare) {
            Some(entry) => entry
                .iter()
                .filter(|r| r.state.available)
                .filter_map(|r| r.state.last.clone().map(|p| (r.jid.clone(), p)))
                .collect(),
            None => Vec::new(),
        }
    }

    /// Resources that asked for the roster (targets of roster pushes).
    pub fn interested(&self, bare: &BareJid) -> Vec<FullJid> {
        match self.users.get(bare) {
            Some(entry) => entry.iter().filter(|r| r.state.interested).map(|r| r.jid.clone()).collect(),
            None => Vec::new(),
        }
    }

    /// Ask every session of an account to close (e.g. the account was deleted).
    pub fn close_all(&self, bare: &BareJid, error: StreamError) {
        if let Some(entry) = self.users.get(bare) {
            for r in entry.iter() {
                let _ = r.tx.try_send(Outbound::Close(error.clone()));
            }
        }
    }

    /// Number of bound resources (for logs and metrics).
    pub fn count(&self) -> usize {
        self.users.iter().map(|e| e.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_replace_and_limit() {
        let sessions = Sessions::new(2);
        let a = FullJid::new("u@h/a").unwrap();
        let (tx1, mut rx1) = mpsc::channel(4);
        let (tx2, _rx2) = mpsc::channel(4);
        sessions.bind(a.clone(), 1, tx1).unwrap();
        sessions.bind(a.clone(), 2, tx2).unwrap();
        assert!(matches!(rx1.try_recv(), Ok(Outbound::Close(e)) if e.condition == crate::stanza::StreamCondition::Conflict));
        // The replaced connection cannot remove its replacement.
        assert!(sessions.unbind(&a, 1).is_none());
        assert!(sessions.is_connected(&a));
        let (tx3, _rx3) = mpsc::channel(4);
        sessions.bind(FullJid::new("u@h/b").unwrap(), 3, tx3).unwrap();
        let (tx4, _rx4) = mpsc::channel(4);
        assert_eq!(sessions.bind(FullJid::new("u@h/c").unwrap(), 4, tx4).err(), Some(BindError::TooManyResources));
        assert_eq!(sessions.unbind(&a, 2).map(|(_, last)| last), Some(false));
        assert_eq!(sessions.unbind(&FullJid::new("u@h/b").unwrap(), 3).map(|(_, last)| last), Some(true));
        assert!(!sessions.has_sessions(&BareJid::new("u@h").unwrap()));
    }

    #[test]
    fn overloaded_session_is_closed() {
        let sessions = Sessions::new(2);
        let a = FullJid::new("u@h/a").unwrap();
        let (tx, mut rx) = mpsc::channel(3);
        sessions.bind(a.clone(), 1, tx).unwrap();
        sessions.send(&a, Element::bare("message", "jabber:client")).unwrap();
        sessions.send(&a, Element::bare("message", "jabber:client")).unwrap();
        assert!(matches!(sessions.send(&a, Element::bare("message", "jabber:client")), Err(SendError::Overloaded(_))));
        assert!(matches!(rx.try_recv(), Ok(Outbound::Stanza(_))));
        assert!(matches!(rx.try_recv(), Ok(Outbound::Stanza(_))));
        assert!(matches!(rx.try_recv(), Ok(Outbound::Close(_))));
    }
}
