//! Avatars (XEP-0084 in PEP) kept together with the vCard photo (XEP-0153) as XEP-0398 asks:
//!
//! - a PEP avatar (metadata published, pointing at data in the data node) becomes the
//!   vCard's PHOTO, if the data node is open (§6, as the vCard is readable by anyone) and
//!   the data hashes to its id; an empty metadata (avatar disabled) removes the photo;
//! - a vCard stored with a PHOTO (by a client that knows only XEP-0153) becomes the PEP
//!   avatar: data and metadata items whose id is the image's SHA-1 (§4.2), notified to
//!   those who asked for metadata notifications; a vCard without one disables it;
//! - every available presence of the account, broadcast or directed, carries the photo's
//!   hash (`<x xmlns='vcard-temp:x:update'><photo>…</photo></x>`, §5) unless the client put
//!   a photo element there itself; the hash is kept in memory while the account is online.
//!
//! The vCard is written through the vcard module's store, which announces nothing, and the
//! PEP copies of a vCard are written without going through the publish handler: neither
//! direction comes back.

use std::sync::Arc;

use base64::Engine;
use jid::BareJid;
use sha1::Digest;

use super::{Pep, notify};
use crate::modules::{ChangedData, Ctx, DataChange};
use crate::stanza::{StanzaError, new_id};
use crate::storage::{AccessModel, Created, NodeConfig, PepItem, PepNode, now_unix};
use crate::xml::{self, Element, ns};

pub const DATA: &str = "urn:xmpp:avatar:data";
pub const METADATA: &str = "urn:xmpp:avatar:metadata";
/// XEP-0398 §2, on the account.
pub const CONVERSION: &str = "urn:xmpp:pep-vcard-conversion:0";
const UPDATE: &str = "vcard-temp:x:update";

/// Base64 image data as XEP-0084 and vCards carry it (line breaks allowed).
fn decode(text: &str) -> Option<Vec<u8>> {
    let clean: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(clean).ok().filter(|b| !b.is_empty())
}

fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// SHA-1 in lower-case hex (XEP-0084 item ids, XEP-0153 hashes).
fn sha1_hex(bytes: &[u8]) -> String {
    sha1::Sha1::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The image of a vCard's PHOTO: its type and bytes.
fn photo(vcard: &Element) -> Option<(Option<String>, Vec<u8>)> {
    let photo = vcard.get_child("PHOTO", ns::VCARD)?;
    let bytes = decode(&photo.get_child("BINVAL", ns::VCARD)?.text())?;
    let kind = photo.get_child("TYPE", ns::VCARD).map(|t| t.text().trim().to_string()).filter(|t| !t.is_empty());
    Some((kind, bytes))
}

/// A vCard with its PHOTO replaced (or removed, for `None`), the rest kept.
fn with_photo(vcard: Option<Element>, image: Option<(&str, &[u8])>) -> Element {
    let mut vcard = vcard.unwrap_or_else(|| Element::bare("vCard", ns::VCARD));
    vcard.retain_children(|c| !c.is("PHOTO", ns::VCARD));
    if let Some((kind, bytes)) = image {
        let mut photo = Element::bare("PHOTO", ns::VCARD);
        photo.append_child(xml::text_element("TYPE", ns::VCARD, kind));
        photo.append_child(xml::text_element("BINVAL", ns::VCARD, &encode(bytes)));
        vcard.append_child(photo);
    }
    vcard
}

/// XEP-0153 §4.4: the SHA-1 (hex) of a vCard's photo, `None` when it has none.
pub(crate) fn vcard_photo_hash(vcard: &Element) -> Option<String> {
    photo(vcard).map(|(_, bytes)| sha1_hex(&bytes))
}

/// The avatar nodes made for a vCard's photo: as readable as the vCard itself.
fn avatar_config() -> NodeConfig {
    NodeConfig { access_model: AccessModel::Open, ..NodeConfig::default() }
}

impl Pep {
    /// After the owner published to the metadata node (XEP-0398 §4.1).
    pub(super) async fn avatar_published(&self, ctx: &Ctx, owner: &BareJid, metadata: &Element) {
        if let Err(e) = self.copy_avatar_to_vcard(ctx, owner, metadata).await {
            tracing::warn!(error = %e, "PEP avatar not copied to the vCard");
        }
    }

    async fn copy_avatar_to_vcard(&self, _ctx: &Ctx, owner: &BareJid, metadata: &Element) -> Result<(), StanzaError> {
        if !metadata.is("metadata", METADATA) {
            return Ok(());
        }
        let infos: Vec<&Element> = metadata.children().filter(|c| c.is("info", METADATA)).collect();
        if infos.is_empty() {
            // Avatar disabled (XEP-0084 §4.5): no photo in the vCard either.
            return self.store_photo(owner, None).await;
        }
        // §4.1: the one stored here, not at a URL.
        let Some(info) = infos.iter().find(|i| i.attr("url").is_none()) else { return Ok(()) };
        let Some(id) = info.attr("id") else { return Ok(()) };
        let Some(data_node) = self.store.node(owner, DATA).await? else { return Ok(()) };
        // §6: only an avatar anyone may read goes into the vCard, which anyone may read.
        if data_node.config.access_model != AccessModel::Open {
            tracing::debug!("PEP avatar not open: not copied to the vCard");
            return Ok(());
        }
        let Some(item) = self.store.items(&data_node, None, &[id.to_string()]).await?.pop() else { return Ok(()) };
        let Ok(data) = xml::parse_element(&item.payload) else { return Ok(()) };
        let Some(bytes) = decode(&data.text()) else { return Ok(()) };
        if !sha1_hex(&bytes).eq_ignore_ascii_case(id) {
            tracing::info!("PEP avatar data does not match its id: not copied to the vCard");
            return Ok(());
        }
        let kind = info.attr("type").unwrap_or("image/png");
        self.store_photo(owner, Some((kind, &bytes))).await
    }

    /// Write the vCard's photo (the vcard module's store announces nothing) and remember
    /// its hash for presence.
    async fn store_photo(&self, owner: &BareJid, image: Option<(&str, &[u8])>) -> Result<(), StanzaError> {
        let current = match self.vcards.get(owner).await? {
            Some(text) => Some(xml::parse_element(&text).map_err(|_| StanzaError::internal())?),
            None => None,
        };
        let hash = image.map(|(_, bytes)| sha1_hex(bytes));
        let current_hash = current.as_ref().and_then(photo).map(|(_, bytes)| sha1_hex(&bytes));
        if current_hash == hash {
            return Ok(());
        }
        if current.is_none() && image.is_none() {
            return Ok(());
        }
        let vcard = xml::to_string(&with_photo(current, image));
        if vcard.len() > self.max_vcard_bytes {
            tracing::info!(bytes = vcard.len(), "a vCard with the PEP avatar would be too large: not copied");
            return Ok(());
        }
        self.vcards.set(owner, &vcard).await?;
        self.avatar_hashes.insert(owner.clone(), hash.map(String::into_boxed_str));
        Ok(())
    }

    /// The vCard was stored through the vcard module (XEP-0398 §4.2).
    pub(super) async fn vcard_changed(self: Arc<Self>, ctx: Ctx, change: DataChange) {
        let ChangedData::Vcard(vcard) = &change.data else { return };
        let image = photo(vcard);
        self.avatar_hashes.insert(change.owner.clone(), image.as_ref().map(|(_, bytes)| sha1_hex(bytes).into_boxed_str()));
        if let Err(e) = self.copy_vcard_to_avatar(&ctx, &change.owner, image).await {
            tracing::warn!(error = %e, "vCard photo not copied to the PEP avatar");
        }
    }

    async fn copy_vcard_to_avatar(&self, ctx: &Ctx, owner: &BareJid, image: Option<(Option<String>, Vec<u8>)>) -> Result<(), StanzaError> {
        let mut events: Vec<(PepNode, Element)> = Vec::new();
        {
            let _guard = self.lock(owner).await;
            let current = match self.store.node(owner, METADATA).await? {
                Some(node) => self.store.items(&node, Some(1), &[]).await?.pop().map(|i| (node, i)),
                None => None,
            };
            match image {
                Some((kind, bytes)) => {
                    let id = sha1_hex(&bytes);
                    if current.as_ref().is_some_and(|(_, item)| item.id == id) {
                        return Ok(());
                    }
                    let data = xml::text_element("data", DATA, &encode(&bytes));
                    let data_node = self.avatar_node(owner, DATA).await?;
                    self.put_avatar_item(owner, &data_node, &id, &data).await?;
                    let mut metadata = Element::bare("metadata", METADATA);
                    let size = bytes.len().to_string();
                    let kind = kind.unwrap_or_else(|| "image/png".to_string());
                    metadata.append_child(xml::element("info", METADATA, &[("bytes", &size), ("id", &id), ("type", &kind)]));
                    let meta_node = self.avatar_node(owner, METADATA).await?;
                    self.put_avatar_item(owner, &meta_node, &id, &metadata).await?;
                    events.push((data_node.clone(), notify::items_event(DATA, &id, data_node.config.deliver_payloads.then_some(data))));
                    events.push((meta_node.clone(), notify::items_event(METADATA, &id, meta_node.config.deliver_payloads.then_some(metadata))));
                }
                None => {
                    // No photo any more: disable the avatar, if there is one.
                    let Some((node, item)) = current else { return Ok(()) };
                    let shown = xml::parse_element(&item.payload).is_ok_and(|m| m.children().next().is_some());
                    if !shown {
                        return Ok(());
                    }
                    let id = new_id();
                    let empty = Element::bare("metadata", METADATA);
                    self.put_avatar_item(owner, &node, &id, &empty).await?;
                    events.push((node.clone(), notify::items_event(METADATA, &id, node.config.deliver_payloads.then_some(empty))));
                }
            }
        }
        for (node, event) in events {
            self.broadcast(ctx, owner, &node, event).await;
        }
        Ok(())
    }

    async fn avatar_node(&self, owner: &BareJid, name: &str) -> Result<PepNode, StanzaError> {
        if let Some(node) = self.store.node(owner, name).await? {
            return Ok(node);
        }
        match self.store.create(owner, name, &avatar_config()).await? {
            Created::Yes(node) => Ok(node),
            Created::Exists => self.store.node(owner, name).await?.ok_or_else(StanzaError::internal),
        }
    }

    async fn put_avatar_item(&self, owner: &BareJid, node: &PepNode, id: &str, payload: &Element) -> Result<(), StanzaError> {
        let item = PepItem { id: id.to_string(), publisher: owner.to_string(), published_at: now_unix(), payload: xml::to_string(payload) };
        self.store.publish(owner, node, &item).await?;
        Ok(())
    }

    /// The account's avatar hash for presence: from memory, else from the stored vCard
    /// (once per online account; forgotten when its last session ends).
    async fn avatar_hash(&self, owner: &BareJid) -> Option<Box<str>> {
        if let Some(known) = self.avatar_hashes.get(owner) {
            return known.clone();
        }
        let hash = match self.vcards.get(owner).await {
            Ok(Some(text)) => xml::parse_element(&text).ok().as_ref().and_then(photo).map(|(_, bytes)| sha1_hex(&bytes).into_boxed_str()),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the vCard for the avatar hash");
                return None;
            }
        };
        self.avatar_hashes.insert(owner.clone(), hash.clone());
        hash
    }

    /// XEP-0398 §5: put the account's avatar hash in an available presence of its client,
    /// unless the client gave a photo element itself (empty: no avatar; or a hash of its
    /// own). An update element without a photo is completed.
    pub(super) async fn stamp_avatar(&self, presence: &mut Element, owner: &BareJid) {
        let has_photo = presence.get_child("x", UPDATE).is_some_and(|x| x.has_child("photo", UPDATE));
        if has_photo {
            return;
        }
        let hash = self.avatar_hash(owner).await;
        presence.remove_child("x", UPDATE);
        let mut x = Element::bare("x", UPDATE);
        let mut photo = Element::bare("photo", UPDATE);
        if let Some(hash) = hash {
            photo.append_text(&*hash);
        }
        x.append_child(photo);
        presence.append_child(x);
    }

    pub(super) fn forget_avatar(&self, owner: &BareJid) {
        self.avatar_hashes.remove(owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn photos_and_hashes() {
        let png = b"\x89PNG\r\n\x1a\nnot really";
        let vcard = with_photo(
            Some(xml::parse_element("<vCard xmlns='vcard-temp'><FN>Juliet</FN><PHOTO><TYPE>image/gif</TYPE><BINVAL>R0lG</BINVAL></PHOTO></vCard>").unwrap()),
            Some(("image/png", png)),
        );
        assert!(vcard.has_child("FN", ns::VCARD), "the rest of the vCard stays");
        assert_eq!(vcard.children().filter(|c| c.name() == "PHOTO").count(), 1);
        let (kind, bytes) = photo(&vcard).unwrap();
        assert_eq!((kind.as_deref(), bytes.as_slice()), (Some("image/png"), &png[..]));
        assert_eq!(sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
        // Line breaks in the base64 text are fine (XEP-0084 §5.1, vCards).
        assert_eq!(decode("YW\nJj\r\n").unwrap(), b"abc");
        assert!(decode("not base64!").is_none());
        assert!(decode("").is_none());
        assert!(photo(&with_photo(Some(vcard), None)).is_none());
    }
}
