//! Bookmarks in three stores kept as one (XEP-0402 §5.3 compatibility, XEP-0411): the
//! XEP-0402 node `urn:xmpp:bookmarks:1` (one item per room, its JID as item id), the
//! XEP-0048 node `storage:bookmarks` (one item, `current`, holding a `<storage/>`), and
//! XEP-0048 in private XML storage (XEP-0049, `storage:bookmarks`, kept by the private
//! module and written here through its store).
//!
//! Whichever one a client writes, the other two are rewritten from it, under the account's
//! PEP lock, and the clients that asked for notifications of the nodes are told of what
//! changed (only what changed: an unchanged room sends nothing, XEP-0402 §5.3.2). XEP-0402
//! `<extensions/>` of a room survive an edit through the older formats, which cannot carry
//! them; `<url/>` bookmarks of the older format survive edits through XEP-0402, which has
//! none. An account whose bookmarks predate this (in private XML only) has them copied to
//! PEP before the first use of either node. Copies go only into nodes that only the owner
//! can read (XEP-0411 §5): a node of another access model is left alone.

use std::collections::HashMap;

use jid::BareJid;

use super::{PUBSUB_EVENT, Pep, notify};
use crate::modules::{ChangedData, Ctx, DataChange};
use crate::stanza::StanzaError;
use crate::storage::{AccessModel, NodeConfig, PepItem, PepNode, SendLast, now_unix};
use crate::xml::{self, Element};

/// XEP-0402.
pub const BOOKMARKS: &str = "urn:xmpp:bookmarks:1";
/// XEP-0048 (in PEP and in private XML).
pub const LEGACY: &str = "storage:bookmarks";
/// The account's disco#info features for the unification.
pub const FEATURES: &[&str] = &["urn:xmpp:bookmarks:1#compat", "urn:xmpp:bookmarks:1#compat-pep", "urn:xmpp:bookmarks-conversion:0"];
/// The item id of the XEP-0048 node's one item.
const CURRENT: &str = "current";

/// One bookmarked room, whatever the format.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Room {
    jid: String,
    name: Option<String>,
    autojoin: bool,
    nick: Option<String>,
    password: Option<String>,
    /// XEP-0402 `<extensions/>`, kept as they are.
    extensions: Option<Element>,
}

impl Room {
    /// A `<conference/>` of either namespace (the jid given apart for XEP-0402).
    fn read(jid: String, conference: &Element, ns: &str) -> Room {
        let text = |name: &str| conference.get_child(name, ns).map(|e| e.text());
        Room {
            jid,
            name: conference.attr("name").map(str::to_string),
            autojoin: matches!(conference.attr("autojoin"), Some("true" | "1")),
            nick: text("nick"),
            password: text("password"),
            extensions: conference.get_child("extensions", ns).cloned(),
        }
    }

    /// Same room, same settings: the extensions (which only XEP-0402 carries) aside.
    fn same_as(&self, other: &Room) -> bool {
        (&self.jid, &self.name, self.autojoin, &self.nick, &self.password)
            == (&other.jid, &other.name, other.autojoin, &other.nick, &other.password)
    }

    fn conference(&self, ns: &'static str, with_jid: bool) -> Element {
        let mut c = Element::bare("conference", ns);
        if with_jid {
            xml::set_attr(&mut c, "jid", self.jid.as_str());
        }
        if let Some(name) = &self.name {
            xml::set_attr(&mut c, "name", name.as_str());
        }
        if self.autojoin {
            xml::set_attr(&mut c, "autojoin", "true");
        }
        if let Some(nick) = &self.nick {
            c.append_child(xml::text_element("nick", ns, nick));
        }
        if let Some(password) = &self.password {
            c.append_child(xml::text_element("password", ns, password));
        }
        if ns == BOOKMARKS
            && let Some(extensions) = &self.extensions
        {
            c.append_child(extensions.clone());
        }
        c
    }
}

/// The rooms of a XEP-0048 `<storage/>`, and its other children (`<url/>` bookmarks).
fn read_storage(storage: &Element) -> (Vec<Room>, Vec<Element>) {
    let mut rooms = Vec::new();
    let mut others = Vec::new();
    for child in storage.children() {
        match child.attr("jid") {
            Some(jid) if child.is("conference", LEGACY) => {
                // One bookmark per room: the last one given wins, as an item id would.
                rooms.retain(|r: &Room| r.jid != jid);
                rooms.push(Room::read(jid.to_string(), child, LEGACY));
            }
            _ => others.push(child.clone()),
        }
    }
    (rooms, others)
}

fn storage(rooms: &[Room], others: &[Element]) -> Element {
    let mut s = Element::bare("storage", LEGACY);
    for r in rooms {
        s.append_child(r.conference(LEGACY, true));
    }
    for o in others {
        s.append_child(o.clone());
    }
    s
}

/// XEP-0402 §3 and XEP-0223: private, every room kept, fetched rather than pushed.
fn bookmarks_config() -> NodeConfig {
    NodeConfig {
        access_model: AccessModel::Whitelist,
        max_items: None,
        persist_items: true,
        send_last: SendLast::Never,
        ..NodeConfig::default()
    }
}

/// XEP-0048 §3: private, one item.
fn legacy_config() -> NodeConfig {
    NodeConfig { access_model: AccessModel::Whitelist, persist_items: true, ..NodeConfig::default() }
}

/// Which store a change came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Legacy {
    Pep,
    Private,
}

/// Events to send once the account's lock is released.
type Events = Vec<(PepNode, Element)>;

impl Pep {
    /// After a publish or retract on one of the bookmark nodes, or a purge or delete of the
    /// XEP-0402 one: bring the other stores in line.
    pub(super) async fn bookmarks_changed(&self, ctx: &Ctx, owner: &BareJid, node: &str, legacy_item: Option<&Element>) {
        let result = match node {
            BOOKMARKS => self.copy_from_bookmarks(ctx, owner).await,
            LEGACY => match legacy_item.filter(|s| s.is("storage", LEGACY)) {
                Some(storage) => self.copy_from_legacy(ctx, owner, storage, Legacy::Pep).await,
                None => Ok(()),
            },
            _ => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "bookmarks not copied to the other stores");
        }
    }

    /// A private XML `storage:bookmarks` was stored (XEP-0411 §4).
    pub(super) async fn private_changed(self: std::sync::Arc<Self>, ctx: Ctx, change: DataChange) {
        if let ChangedData::PrivateXml(storage) = &change.data
            && storage.is("storage", LEGACY)
            && let Err(e) = self.copy_from_legacy(&ctx, &change.owner, storage, Legacy::Private).await
        {
            tracing::warn!(error = %e, "bookmarks not copied to PEP");
        }
    }

    /// Before the bookmark nodes are first used: bookmarks kept only in private XML (from
    /// before this server kept them together) are copied to PEP.
    pub(super) async fn bookmarks_first_use(&self, ctx: &Ctx, owner: &BareJid, node: &str) -> Result<(), StanzaError> {
        if node != BOOKMARKS && node != LEGACY {
            return Ok(());
        }
        if self.store.node(owner, BOOKMARKS).await?.is_some() || self.store.node(owner, LEGACY).await?.is_some() {
            return Ok(());
        }
        let Some(text) = self.private.get(owner, LEGACY).await? else { return Ok(()) };
        match xml::parse_element(&text) {
            Ok(storage) if storage.children().next().is_some() => self.copy_from_legacy(ctx, owner, &storage, Legacy::Private).await,
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::error!(error = %e, "unreadable stored private bookmarks");
                Ok(())
            }
        }
    }

    /// The XEP-0402 node changed: rewrite the XEP-0048 stores from its items.
    async fn copy_from_bookmarks(&self, ctx: &Ctx, owner: &BareJid) -> Result<(), StanzaError> {
        let mut events = Events::new();
        {
            let _guard = self.lock(owner).await;
            let rooms = match self.store.node(owner, BOOKMARKS).await? {
                Some(node) => self.rooms(&node).await?,
                None => Vec::new(),
            };
            let others = match self.private.get(owner, LEGACY).await? {
                Some(text) => xml::parse_element(&text).map(|s| read_storage(&s).1).unwrap_or_default(),
                None => Vec::new(),
            };
            let storage = storage(&rooms, &others);
            self.write_private(ctx, owner, &storage).await?;
            self.put_legacy(owner, &storage, &mut events).await?;
        }
        self.send_events(ctx, owner, events).await;
        Ok(())
    }

    /// A XEP-0048 `<storage/>` was written (to PEP or private XML): update the XEP-0402
    /// items room by room, and the other XEP-0048 store.
    async fn copy_from_legacy(&self, ctx: &Ctx, owner: &BareJid, storage: &Element, from: Legacy) -> Result<(), StanzaError> {
        let (rooms, _) = read_storage(storage);
        let mut events = Events::new();
        {
            let _guard = self.lock(owner).await;
            let node = match self.store.node(owner, BOOKMARKS).await? {
                Some(node) => Some(node),
                None if rooms.is_empty() => None,
                None => self.create_private(owner, BOOKMARKS, bookmarks_config()).await?,
            };
            if let Some(node) = node.filter(|n| n.config.access_model == AccessModel::Whitelist) {
                let existing: HashMap<String, Room> = self.rooms(&node).await?.into_iter().map(|r| (r.jid.clone(), r)).collect();
                for room in &rooms {
                    let old = existing.get(&room.jid);
                    if old.is_some_and(|o| o.same_as(room)) {
                        continue;
                    }
                    // Extensions only XEP-0402 carries stay with the room.
                    let room = Room { extensions: old.and_then(|o| o.extensions.clone()), ..room.clone() };
                    let payload = room.conference(BOOKMARKS, false);
                    self.put_item(owner, &node, &room.jid, &payload).await?;
                    let payload = node.config.deliver_payloads.then_some(payload);
                    events.push((node.clone(), notify::items_event(BOOKMARKS, &room.jid, payload)));
                }
                for gone in existing.keys().filter(|jid| !rooms.iter().any(|r| &&r.jid == jid)) {
                    if self.store.retract(owner, &node, gone).await? {
                        let mut items = xml::element("items", PUBSUB_EVENT, &[("node", BOOKMARKS)]);
                        items.append_child(xml::element("retract", PUBSUB_EVENT, &[("id", gone)]));
                        events.push((node.clone(), notify::event(items)));
                    }
                }
            }
            match from {
                Legacy::Private => self.put_legacy(owner, storage, &mut events).await?,
                Legacy::Pep => self.write_private(ctx, owner, storage).await?,
            }
        }
        self.send_events(ctx, owner, events).await;
        Ok(())
    }

    /// The rooms of the XEP-0402 node.
    async fn rooms(&self, node: &PepNode) -> Result<Vec<Room>, StanzaError> {
        let mut rooms = Vec::new();
        for item in self.store.items(node, None, &[]).await? {
            match xml::parse_element(&item.payload) {
                Ok(c) if c.is("conference", BOOKMARKS) => rooms.push(Room::read(item.id, &c, BOOKMARKS)),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "unreadable stored bookmark"),
            }
        }
        Ok(rooms)
    }

    /// A node for a copy of private data: created private if missing; `None` if it exists
    /// with an access model that lets others read it.
    async fn create_private(&self, owner: &BareJid, name: &str, config: NodeConfig) -> Result<Option<PepNode>, StanzaError> {
        let node = match self.store.node(owner, name).await? {
            Some(node) => node,
            None => match self.store.create(owner, name, &config).await? {
                crate::storage::Created::Yes(node) => node,
                crate::storage::Created::Exists => return Ok(None),
            },
        };
        if node.config.access_model != AccessModel::Whitelist {
            tracing::info!(node = name, "not copying bookmarks into a node others can read");
            return Ok(None);
        }
        Ok(Some(node))
    }

    /// Store an item the server writes on the owner's behalf.
    async fn put_item(&self, owner: &BareJid, node: &PepNode, id: &str, payload: &Element) -> Result<(), StanzaError> {
        let item = PepItem { id: id.to_string(), publisher: owner.to_string(), published_at: now_unix(), payload: xml::to_string(payload) };
        self.store.publish(owner, node, &item).await?;
        Ok(())
    }

    /// The XEP-0048 node's item, unless it already holds this.
    async fn put_legacy(&self, owner: &BareJid, storage: &Element, events: &mut Events) -> Result<(), StanzaError> {
        let Some(node) = self.create_private(owner, LEGACY, legacy_config()).await? else { return Ok(()) };
        let current = self.store.items(&node, Some(1), &[]).await?.pop();
        let text = xml::to_string(storage);
        if current.is_some_and(|c| c.id == CURRENT && c.payload == text) {
            return Ok(());
        }
        self.put_item(owner, &node, CURRENT, storage).await?;
        let payload = node.config.deliver_payloads.then(|| storage.clone());
        events.push((node.clone(), notify::items_event(LEGACY, CURRENT, payload)));
        Ok(())
    }

    /// Private XML `storage:bookmarks`, through the private module's store (under the
    /// account's delivery lock, which that module's writes take too).
    async fn write_private(&self, ctx: &Ctx, owner: &BareJid, storage: &Element) -> Result<(), StanzaError> {
        let text = xml::to_string(storage);
        if self.private.get(owner, LEGACY).await?.as_deref() == Some(text.as_str()) {
            return Ok(());
        }
        let _guard = ctx.core.delivery_lock(owner).await;
        self.private.set(owner, &[(LEGACY.to_string(), text)]).await?;
        Ok(())
    }

    async fn send_events(&self, ctx: &Ctx, owner: &BareJid, events: Events) {
        for (node, event) in events {
            self.broadcast(ctx, owner, &node, event).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_between_formats() {
        let legacy = xml::parse_element(
            "<storage xmlns='storage:bookmarks'>\
             <conference jid='council@conference.underhill.org' name='Council of Oberon' autojoin='1'><nick>Puck</nick></conference>\
             <url name='Complete Works of Shakespeare' url='http://the-tech.mit.edu/Shakespeare/'/>\
             <conference jid='empty@muc.example'/></storage>",
        )
        .unwrap();
        let (rooms, others) = read_storage(&legacy);
        assert_eq!(rooms.len(), 2);
        assert_eq!(others.len(), 1, "the url bookmark is kept apart");
        let council = &rooms[0];
        assert!(council.autojoin);
        assert_eq!(council.nick.as_deref(), Some("Puck"));
        let native = council.conference(BOOKMARKS, false);
        assert_eq!(native.attr("jid"), None, "XEP-0402 puts the JID in the item id");
        assert_eq!(native.attr("autojoin"), Some("true"));
        let back = Room::read(council.jid.clone(), &native, BOOKMARKS);
        assert_eq!(&back, council);
        let again = storage(&rooms, &others);
        assert_eq!(read_storage(&again), (rooms, others));
    }

    #[test]
    fn extensions_do_not_make_a_room_differ() {
        let with = xml::parse_element(
            "<conference xmlns='urn:xmpp:bookmarks:1' name='The Orchard' autojoin='true'><nick>JC</nick>\
             <extensions><state xmlns='http://myclient.example/bookmark/state' minimized='true'/></extensions></conference>",
        )
        .unwrap();
        let room = Room::read("orchard@conference.shakespeare.lit".into(), &with, BOOKMARKS);
        assert!(room.extensions.is_some());
        let legacy = room.conference(LEGACY, true);
        assert!(!legacy.children().any(|c| c.name() == "extensions"), "XEP-0048 has no extensions");
        let plain = Room::read(room.jid.clone(), &legacy, LEGACY);
        assert!(plain.same_as(&room));
        assert_ne!(plain, room);
    }
}
