//! Retracting messages of a room: by their author (XEP-0424 0.4.2, a groupchat message
//! carrying `<retract/>`) and by a moderator (XEP-0425 0.3.0, an IQ to the room). Either way
//! the retracted message is replaced in the room's archive and history by a tombstone
//! (XEP-0424 §5, XEP-0425 §4): its metadata kept, its content replaced by `<retracted/>`.
//! A message is named by the stanza-id the room stamped on it (XEP-0424 §3, XEP-0359).

use jid::Jid;

use super::occupant::{self, Occupant, Role};
use super::room::{HistoryItem, Live};
use super::{OCCUPANT_ID, SID};
use crate::stanza::{Condition, ErrorType, Stanza, StanzaError};
use crate::storage::NewArchived;
use crate::xml::{self, Element, Serialised, ns};

pub const RETRACT: &str = "urn:xmpp:message-retract:1";
pub const MODERATE: &str = "urn:xmpp:message-moderate:1";
/// XEP-0424 §5: the archive keeps tombstones of retracted messages.
pub const TOMBSTONE: &str = "urn:xmpp:message-retract:1#tombstone";

/// What a tombstone keeps of the message it replaces (besides the message's attributes):
/// the ids that name it and its author, nothing of its content.
fn is_metadata(child: &Element) -> bool {
    child.is("occupant-id", OCCUPANT_ID) || child.is("stanza-id", SID) || child.is("origin-id", SID)
}

/// The archived message `original` with its content replaced by `retracted`.
fn tombstone(original: &Element, retracted: Element) -> Element {
    let mut el = original.clone();
    el.retain_children(is_metadata);
    el.append_child(retracted);
    el
}

/// XEP-0424 §5: `<retracted/>` with the time of the retraction, and the id of the message
/// that retracted (so that clients match the two), holding `inner`.
fn retracted(retraction_id: &str, inner: Vec<Element>) -> Element {
    let stamp = crate::archive_query::stamp(crate::storage::now_micros());
    let mut el = xml::element("retracted", RETRACT, &[("id", retraction_id), ("stamp", &stamp)]);
    for child in inner {
        el.append_child(child);
    }
    el
}

/// Whether an archived message is a tombstone already.
fn is_tombstone(el: &Element) -> bool {
    el.get_child("retracted", RETRACT).is_some()
}

impl Live {
    /// XEP-0424: if this groupchat message retracts one, check that its sender wrote the
    /// one it names (the same occupant id, XEP-0421: the same real bare JID) and put the
    /// tombstone in its place. `Ok(true)`: a retraction, to be archived (§6: the archive
    /// MUST keep it) and broadcast. A room without an archive passes retractions on as they
    /// are: it has nothing to check them against and nothing to replace.
    pub(super) async fn retraction(&mut self, stanza: &Stanza, sender: &Occupant) -> Result<bool, StanzaError> {
        let Some(retract) = stanza.el.get_child("retract", RETRACT) else { return Ok(false) };
        if !self.room.config.archive {
            return Ok(false);
        }
        if retract.get_child("moderated", MODERATE).is_some() {
            return Err(StanzaError::bad_request("only the room moderates"));
        }
        let Some(target) = retract.attr("id") else { return Err(StanzaError::bad_request("a retraction needs the 'id' of the message")) };
        // §5: the tombstone names the retraction by its id.
        let Some(retraction_id) = stanza.id() else { return Err(StanzaError::bad_request("a retraction needs an 'id' (XEP-0424 §6)")) };
        let original = self.archived(target).await?;
        let author = original.get_child("occupant-id", OCCUPANT_ID).and_then(|o| o.attr("id"));
        if author != Some(sender.occupant_id.as_str()) {
            return Err(StanzaError::forbidden().with_text("you may retract only your own messages"));
        }
        self.bury(target, tombstone(&original, retracted(retraction_id, Vec::new()))).await?;
        Ok(true)
    }

    /// XEP-0425 §3: a moderator's request to retract a message. The tombstone and the
    /// moderation message are committed, and the moderation broadcast, before the result.
    pub(super) async fn moderate(&mut self, stanza: &Stanza, payload: &Element) -> Result<Option<Element>, StanzaError> {
        let moderator = stanza.from.clone().try_into_full().ok().and_then(|f| self.room.occupant_of(&f).cloned());
        let Some(moderator) = moderator.filter(|o| o.role == Role::Moderator) else {
            // §3.2, Example 6: forbidden, of type modify.
            return Err(StanzaError::forbidden()
                .with_type(ErrorType::Modify)
                .with_text("Only moderators are allowed to moderate other participants' messages"));
        };
        if payload.get_child("retract", RETRACT).is_none() {
            return Err(StanzaError::new(Condition::FeatureNotImplemented).with_text("retraction is the only moderation action"));
        }
        let Some(target) = payload.attr("id") else { return Err(StanzaError::bad_request("<moderate/> needs the 'id' of the message")) };
        if !self.room.config.archive {
            return Err(StanzaError::item_not_found().with_text("this room keeps no messages"));
        }
        let original = self.archived(target).await?;
        let slot = self.service.archive.allocate().await.map_err(|e| {
            tracing::error!(error = %e, "cannot archive a moderation");
            StanzaError::internal()
        })?;
        let id = crate::stanza::new_id();
        let details = moderation_details(&occupant::occupant_jid(self.jid(), &moderator.nick), &moderator, payload);
        self.bury(target, tombstone(&original, retracted(&id, details.clone()))).await?;
        let mut notice = xml::element("message", ns::CLIENT, &[("type", "groupchat"), ("id", &id), ("from", self.jid().as_str())]);
        let mut retract = xml::element("retract", RETRACT, &[("id", target)]);
        for child in details {
            retract.append_child(child);
        }
        notice.append_child(retract);
        notice.append_child(xml::element("stanza-id", SID, &[("by", self.jid().as_str()), ("id", &slot.id)]));
        let row = NewArchived { owner: self.jid().clone(), ts: slot.ts, with: Jid::from(self.jid().clone()), stanza: Serialised::of(&notice) };
        if let Err(e) = self.service.archive.store(vec![row]).await {
            tracing::error!(error = %e, "cannot archive a moderation");
            return Err(StanzaError::internal().with_text("the message is retracted, but the notice of it could not be archived"));
        }
        self.remember(HistoryItem { ts: slot.ts, el: notice.clone() });
        self.broadcast(Jid::from(self.jid().clone()), notice).await;
        Ok(None)
    }

    /// A message of the room's history, the oldest going beyond the room's length.
    pub(super) fn remember(&mut self, item: HistoryItem) {
        self.history.push_back(item);
        while self.history.len() > self.room.config.history_length as usize {
            self.history.pop_front();
        }
    }

    /// The archived message with this stanza-id, unless it is retracted already. A
    /// retraction or moderation is not itself retracted: the archive MUST keep it (XEP-0424
    /// §6), and it is no message (§6: no retraction of non-messaging payloads).
    async fn archived(&self, id: &str) -> Result<Element, StanzaError> {
        let found = self.service.archive.message(self.jid(), id).await.map_err(|e| {
            tracing::error!(error = %e, "cannot read a room's archive");
            StanzaError::internal()
        })?;
        let el = found.and_then(|m| xml::parse_element(&m.stanza).ok());
        let el = el.filter(|el| !is_tombstone(el)).ok_or_else(|| StanzaError::item_not_found().with_text("no such message in this room"))?;
        if el.get_child("retract", RETRACT).is_some() {
            return Err(StanzaError::new(Condition::NotAcceptable).with_text("a retraction cannot be retracted"));
        }
        Ok(el)
    }

    /// Replace the archived message with this stanza-id by its tombstone, committed, then
    /// in the history.
    async fn bury(&mut self, id: &str, tombstone: Element) -> Result<(), StanzaError> {
        match self.service.archive.replace(self.jid(), id, &Serialised::of(&tombstone)).await {
            Ok(true) => {}
            Ok(false) => return Err(StanzaError::item_not_found().with_text("no such message in this room")),
            Err(e) => {
                tracing::error!(error = %e, "cannot replace a message of a room's archive");
                return Err(StanzaError::internal());
            }
        }
        let room = self.jid().to_string();
        let names = |el: &Element| el.children().any(|c| c.is("stanza-id", SID) && c.attr("by") == Some(room.as_str()) && c.attr("id") == Some(id));
        if let Some(item) = self.history.iter_mut().find(|item| names(&item.el)) {
            item.el = tombstone;
        }
        Ok(())
    }
}

/// XEP-0425 §3.1 Example 5 and §4: who moderated (`<moderated/>`, by the moderator's
/// occupant JID, with its occupant id: the real JID is not shown to those who may not see
/// it) and the moderator's reason, if given.
fn moderation_details(by: &Jid, moderator: &Occupant, request: &Element) -> Vec<Element> {
    let mut moderated = xml::element("moderated", MODERATE, &[("by", by.as_str())]);
    moderated.append_child(xml::element("occupant-id", OCCUPANT_ID, &[("id", &moderator.occupant_id)]));
    let mut details = vec![moderated];
    if let Some(reason) = request.get_child("reason", MODERATE) {
        details.push(xml::text_element("reason", RETRACT, &reason.text()));
    }
    details
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tombstones_keep_ids_only() {
        let original = xml::parse_element(
            "<message xmlns='jabber:client' type='groupchat' id='m1' from='r@c.x/n'><body>secret</body>\
             <occupant-id xmlns='urn:xmpp:occupant-id:0' id='o1'/><stanza-id xmlns='urn:xmpp:sid:0' by='r@c.x' id='s1'/>\
             <origin-id xmlns='urn:xmpp:sid:0' id='m1'/><reply xmlns='urn:xmpp:reply:0' to='r@c.x/o' id='s0'/></message>",
        )
        .unwrap();
        let out = xml::to_string(&tombstone(&original, retracted("r1", Vec::new())));
        for kept in ["o1", "s1", "origin-id", "r@c.x/n", "retracted", "r1"] {
            assert!(out.contains(kept), "{kept}: {out}");
        }
        for gone in ["secret", "reply", "body"] {
            assert!(!out.contains(gone), "{gone}: {out}");
        }
    }
}
