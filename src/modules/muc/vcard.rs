//! A room's vCard (vcard-temp, XEP-0054, on the room's bare JID) and its avatar: anyone may
//! read it (an empty vCard when there is none), its owners may set it. The photo's SHA-1 is
//! the room's avatar hash: in the `muc#roominfo` form (`muc#roominfo_avatarhash`), and told
//! to the occupants when it changes and to each resource that enters, in presence from the
//! room's JID with XEP-0153's `<x xmlns='vcard-temp:x:update'><photo/></x>`.

use jid::{FullJid, Jid};
use tracing::Instrument;

use super::room::Live;
use crate::stanza::{Condition, Stanza, StanzaError};
use crate::xml::{self, Element, ns};

pub const VCARD_UPDATE: &str = "vcard-temp:x:update";

type IqResult = Result<Option<Element>, StanzaError>;

impl Live {
    /// vcard-temp read on the room's JID (for anyone who may see the room), from the
    /// database in a task of its own: the room goes on meanwhile.
    pub(super) fn get_room_vcard(&self, stanza: Stanza) {
        let hidden = self.room.locked && !self.is_owner(&stanza.from);
        let (ctx, store, room) = (self.ctx.clone(), self.service.store.clone(), self.jid().clone());
        self.ctx.core.spawn(
            async move {
                let result = match store.vcard(&room).await {
                    _ if hidden => Err(StanzaError::item_not_found()),
                    Ok(Some(text)) => xml::parse_element(&text).map(Some).map_err(|e| {
                        tracing::error!(error = %e, "unreadable stored room vCard");
                        StanzaError::internal()
                    }),
                    Ok(None) => Ok(Some(Element::bare("vCard", ns::VCARD))),
                    Err(e) => Err(e.into()),
                };
                let reply = match result {
                    Ok(payload) => Some(stanza.iq_result(payload)),
                    Err(e) => stanza.error_reply(&e),
                };
                if let Some(reply) = reply {
                    ctx.send(reply).await;
                }
            }
            .in_current_span(),
        );
    }

    /// An owner's new vCard (an empty one removes it), stored before the answer; a changed
    /// photo is told to the occupants.
    pub(super) async fn set_room_vcard(&mut self, stanza: &Stanza, vcard: &Element) -> IqResult {
        if self.room.locked && !self.is_owner(&stanza.from) {
            return Err(StanzaError::item_not_found());
        }
        if !self.is_owner(&stanza.from) {
            return Err(StanzaError::forbidden().with_text("only owners may set the room's vCard"));
        }
        let text = xml::to_string(vcard);
        let max = self.service.config.vcard.max_bytes;
        if text.len() > max {
            return Err(StanzaError::new(Condition::NotAcceptable).with_text(format!("a vCard is at most {max} bytes (this one is {})", text.len())));
        }
        let hash = crate::modules::pep::vcard_photo_hash(vcard);
        let kept = (vcard.children().next().is_some()).then_some(text.as_str());
        if let Err(e) = self.service.store.set_vcard(self.jid(), kept, hash.as_deref().unwrap_or_default()).await {
            tracing::error!(error = %e, "cannot store a room's vCard");
            return Err(StanzaError::internal());
        }
        if hash != self.room.avatar_hash {
            self.room.avatar_hash = hash;
            self.announce_avatar().await;
        }
        Ok(None)
    }

    /// Presence from the room's JID to every occupant's resources with the avatar's hash
    /// (an empty `<photo/>`: no avatar).
    async fn announce_avatar(&self) {
        self.broadcast(Jid::from(self.jid().clone()), self.avatar_presence()).await;
    }

    /// The room's avatar presence, after the subject, to a resource that has just entered
    /// (as when it changes): clients show a room's avatar from it. Nothing when the room has
    /// none.
    pub(super) async fn send_avatar(&self, to: &FullJid) {
        if self.room.avatar_hash.is_some() {
            self.send_to(Jid::from(self.jid().clone()), to, self.avatar_presence()).await;
        }
    }

    /// Presence from the room with XEP-0153's `<x><photo>hash</photo></x>`.
    fn avatar_presence(&self) -> Element {
        let mut x = Element::bare("x", VCARD_UPDATE);
        x.append_child(xml::text_element("photo", VCARD_UPDATE, self.room.avatar_hash.as_deref().unwrap_or_default()));
        let mut el = Element::bare("presence", ns::CLIENT);
        el.append_child(x);
        el
    }
}
