//! Personal eventing (XEP-0163): every account is a publish-subscribe service at its bare
//! JID, on the subset of XEP-0060 that PEP needs. This is what OMEMO (device lists and key
//! bundles), avatars (XEP-0084), bookmarks (XEP-0402) and user nicknames live on.
//!
//! - The owner publishes, retracts, creates, configures, purges and deletes its nodes
//!   (auto-created on publish, with publish options as preconditions, §7.1.5).
//! - Others retrieve items, and may subscribe explicitly, as the node's access model allows:
//!   `open` (anyone), `presence` (contacts the owner's roster gives a subscription, `from`
//!   or `both`; the default), `roster` (those of them in given roster groups), `whitelist`
//!   (the owner alone: private storage, XEP-0223).
//! - Notifications: see `notify.rs` (to local resources and, through the federation link,
//!   to contacts' resources on other servers); clients' capabilities: see `caps.rs`;
//!   forms: `form.rs`.
//!
//! Writes of one account take turns (a per-account lock), so that a publish's precondition
//! check, node creation and node limit see no concurrent change.

mod avatars;
pub(crate) use avatars::vcard_photo_hash;
mod bookmarks;
mod caps;
mod form;
mod notify;

use std::sync::Arc;
use std::time::Duration;

use jid::{BareJid, Jid};

use super::{Ctx, Deps, DiscoRequest, Hook, IqRequest, Kinds, IqResult, Module, Registrar, Scope, SessionHook};
use crate::stanza::{Condition, IqType, StanzaError, new_id};
use crate::storage::{AccessModel, Created, NodeConfig, PepItem, PepLimits, PepNode, PepStore, PrivateStore, VcardStore, now_unix};
use crate::xml::{self, Element, ns};
use form::{FieldError, Setting};

pub const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
pub const PUBSUB_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
pub const PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
pub const PUBSUB_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";

/// What the service supports, advertised on the account's disco#info (XEP-0163 §8.1;
/// names from XEP-0060 §16.2).
const FEATURES: &[&str] = &[
    "http://jabber.org/protocol/pubsub#access-open",
    "http://jabber.org/protocol/pubsub#access-presence",
    "http://jabber.org/protocol/pubsub#access-roster",
    "http://jabber.org/protocol/pubsub#access-whitelist",
    "http://jabber.org/protocol/pubsub#auto-create",
    "http://jabber.org/protocol/pubsub#auto-subscribe",
    "http://jabber.org/protocol/pubsub#config-node",
    "http://jabber.org/protocol/pubsub#config-node-max",
    "http://jabber.org/protocol/pubsub#create-and-configure",
    "http://jabber.org/protocol/pubsub#create-nodes",
    "http://jabber.org/protocol/pubsub#delete-items",
    "http://jabber.org/protocol/pubsub#delete-nodes",
    "http://jabber.org/protocol/pubsub#filtered-notifications",
    "http://jabber.org/protocol/pubsub#item-ids",
    "http://jabber.org/protocol/pubsub#last-published",
    "http://jabber.org/protocol/pubsub#meta-data",
    "http://jabber.org/protocol/pubsub#multi-items",
    "http://jabber.org/protocol/pubsub#persistent-items",
    "http://jabber.org/protocol/pubsub#presence-notifications",
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#purge-nodes",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#retrieve-default",
    "http://jabber.org/protocol/pubsub#retrieve-items",
    "http://jabber.org/protocol/pubsub#subscribe",
];

/// The longest node name and item id accepted, in bytes.
const MAX_NAME: usize = 1024;
/// The most payload bytes an items result carries (it is one stanza, written at once).
const MAX_RESULT_BYTES: usize = 1 << 20;
const RSM: &str = "http://jabber.org/protocol/rsm";
/// Stripes of the per-account write lock.
const LOCK_STRIPES: usize = 64;

pub struct Pep {
    store: PepStore,
    /// Private XML storage, for XEP-0048 bookmarks kept there too (`bookmarks.rs`).
    private: PrivateStore,
    /// vCards, for avatars kept there too (`avatars.rs`), at most this large.
    vcards: VcardStore,
    max_vcard_bytes: usize,
    /// The avatar hash (XEP-0153) of online accounts, `None` for no avatar.
    avatar_hashes: dashmap::DashMap<BareJid, Option<Box<str>>>,
    caps: caps::Caps,
    locks: Vec<tokio::sync::Mutex<()>>,
    max_item_bytes: usize,
    max_subscribers: usize,
}

impl Module for Pep {
    const NAME: &'static str = "pep";

    fn build(deps: &Deps) -> Self {
        let config = &deps.config.pep;
        let limits = PepLimits {
            max_nodes: config.max_nodes_per_user,
            max_items: config.max_items_per_node,
            max_bytes: config.max_bytes_per_user,
        };
        Pep {
            store: deps.db.pep().with_limits(limits),
            private: deps.db.private().with_max_bytes(deps.config.private.max_bytes_per_user),
            vcards: deps.db.vcard(),
            max_vcard_bytes: deps.config.vcard.max_bytes,
            avatar_hashes: dashmap::DashMap::new(),
            caps: caps::Caps::new(config.caps_cache_size, Duration::from_secs(config.caps_timeout)),
            locks: (0..LOCK_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            max_item_bytes: config.max_item_bytes,
            max_subscribers: config.max_subscribers_per_node,
        }
    }

    fn register(self: Arc<Self>, reg: &mut Registrar) {
        reg.identity(Scope::Account, "pubsub", "pep", "");
        for feature in FEATURES.iter().chain(bookmarks::FEATURES).chain(&[avatars::CONVERSION]) {
            reg.feature(Scope::Account, feature);
        }
        reg.iq(Scope::Account, IqType::Get, "pubsub", PUBSUB, &self, Self::pubsub_get);
        reg.iq(Scope::Account, IqType::Set, "pubsub", PUBSUB, &self, Self::pubsub_set);
        reg.iq(Scope::Account, IqType::Get, "pubsub", PUBSUB_OWNER, &self, Self::owner_get);
        reg.iq(Scope::Account, IqType::Set, "pubsub", PUBSUB_OWNER, &self, Self::owner_set);
        // Before the presence module (0), which handles the broadcast.
        reg.hook(Hook::PresenceOut, Kinds::PRESENCE, 10, &self, Self::presence_out);
        // After the presence module recorded a subscription change (200), before the block
        // list (100): approvals, and presence of contacts on other servers (whose
        // unavailable presence must be seen even from a contact the account blocks).
        reg.hook_when(Hook::StanzaIn, Kinds::PRESENCE, 150, &self, |_, s| notify::presence_in_wanted(s), Self::presence_in);
        // Errors that say a remote resource cannot be reached, before the block list drops any.
        reg.hook_when(Hook::StanzaIn, Kinds::MESSAGE, 150, &self, Self::error_in_wanted, Self::error_in);
        // Approvals to contacts on other servers, after every other hook (that the approval
        // really leaves).
        reg.hook_when(Hook::StanzaOut, Kinds::PRESENCE, -100, &self, |_, s| notify::approval_out_wanted(s), Self::approval_out);
        reg.session_hook(SessionHook::Closed, 0, &self, Self::session_closed);
        reg.account_disco(&self, Self::disco);
        reg.data_hook(&self, Self::private_changed);
        reg.data_hook(&self, Self::vcard_changed);
    }
}

/// An error with a pubsub-specific condition (XEP-0060 §12).
fn pubsub_error(condition: Condition, app: &str) -> StanzaError {
    StanzaError::new(condition).with_app(Element::bare(app, PUBSUB_ERRORS))
}

/// `feature-not-implemented` with `<unsupported feature/>`.
fn unsupported(feature: &str) -> StanzaError {
    StanzaError::new(Condition::FeatureNotImplemented).with_app(xml::element("unsupported", PUBSUB_ERRORS, &[("feature", feature)]))
}

fn precondition_not_met(text: impl Into<String>) -> StanzaError {
    pubsub_error(Condition::Conflict, "precondition-not-met").with_text(text)
}

/// The node a request is about (`nodeid-required` when it names none).
fn node_name(el: &Element) -> Result<&str, StanzaError> {
    match el.attr("node") {
        None | Some("") => Err(pubsub_error(Condition::BadRequest, "nodeid-required")),
        Some(n) if n.len() > MAX_NAME => Err(StanzaError::new(Condition::NotAcceptable).with_text(format!("a node name has at most {MAX_NAME} bytes"))),
        Some(n) => Ok(n),
    }
}

fn only_owner(req: &IqRequest) -> Result<(), StanzaError> {
    if req.from_self() { Ok(()) } else { Err(StanzaError::forbidden()) }
}

fn truthy(v: Option<&str>) -> bool {
    matches!(v, Some("1" | "true"))
}

fn pubsub(ns: &'static str, child: Element) -> Element {
    let mut p = Element::bare("pubsub", ns);
    p.append_child(child);
    p
}

impl Pep {
    async fn lock(&self, owner: &BareJid) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        owner.as_str().hash(&mut h);
        self.locks[(h.finish() as usize) % LOCK_STRIPES].lock().await
    }

    /// Whether `who` may see a node's items (XEP-0060 §6.5.2; XEP-0163 §4.1): the owner
    /// always; others as the access model says, from the owner's roster.
    async fn may_read(&self, ctx: &Ctx, owner: &BareJid, who: &Jid, config: &NodeConfig) -> Result<(), StanzaError> {
        if who.to_bare() == *owner {
            return Ok(());
        }
        match config.access_model {
            AccessModel::Open => Ok(()),
            AccessModel::Whitelist => Err(pubsub_error(Condition::NotAllowed, "closed-node")),
            AccessModel::Presence | AccessModel::Roster => {
                let item = ctx.core.rosters.item(owner, &who.to_bare()).await?;
                let subscribed = item.as_ref().is_some_and(|i| i.subscription.has_from());
                if config.access_model == AccessModel::Presence {
                    return if subscribed { Ok(()) } else { Err(pubsub_error(Condition::NotAuthorized, "presence-subscription-required")) };
                }
                let in_group = item.is_some_and(|i| i.groups.iter().any(|g| config.roster_groups.contains(g)));
                if subscribed && in_group { Ok(()) } else { Err(pubsub_error(Condition::NotAuthorized, "not-in-roster-group")) }
            }
        }
    }

    async fn pubsub_get(self: Arc<Self>, ctx: Ctx, req: IqRequest) -> IqResult {
        let Some(child) = req.payload().children().next() else { return Err(StanzaError::bad_request("an empty pubsub request")) };
        match child.name() {
            "items" => self.items(&ctx, &req, child).await,
            "subscriptions" => Err(unsupported("retrieve-subscriptions")),
            "affiliations" => Err(unsupported("retrieve-affiliations")),
            "options" => Err(unsupported("subscription-options")),
            "default" => Err(unsupported("retrieve-default-sub")),
            _ => Err(StanzaError::bad_request("unknown pubsub request")),
        }
    }

    async fn pubsub_set(self: Arc<Self>, ctx: Ctx, req: IqRequest) -> IqResult {
        let payload = req.payload();
        let Some(child) = payload.children().next() else { return Err(StanzaError::bad_request("an empty pubsub request")) };
        match child.name() {
            "publish" => self.publish(&ctx, &req, child, payload.get_child("publish-options", PUBSUB)).await,
            "retract" => self.retract(&ctx, &req, child).await,
            "create" => self.create(&req, child, payload.get_child("configure", PUBSUB)).await,
            "subscribe" => self.subscribe(&ctx, &req, child).await,
            "unsubscribe" => self.unsubscribe(&req, child).await,
            "options" => Err(unsupported("subscription-options")),
            _ => Err(StanzaError::bad_request("unknown pubsub request")),
        }
    }

    async fn owner_get(self: Arc<Self>, _: Ctx, req: IqRequest) -> IqResult {
        only_owner(&req)?;
        let Some(child) = req.payload().children().next() else { return Err(StanzaError::bad_request("an empty pubsub request")) };
        match child.name() {
            "configure" => self.configure_get(&req, child).await,
            // §8.3: the configuration a new node gets.
            "default" => {
                let mut default = Element::bare("default", PUBSUB_OWNER);
                default.append_child(form::config_form(&NodeConfig::default(), form::NODE_CONFIG, "form"));
                Ok(Some(pubsub(PUBSUB_OWNER, default)))
            }
            "subscriptions" => Err(unsupported("manage-subscriptions")),
            "affiliations" => Err(unsupported("modify-affiliations")),
            _ => Err(StanzaError::bad_request("unknown pubsub request")),
        }
    }

    async fn owner_set(self: Arc<Self>, ctx: Ctx, req: IqRequest) -> IqResult {
        only_owner(&req)?;
        let Some(child) = req.payload().children().next() else { return Err(StanzaError::bad_request("an empty pubsub request")) };
        match child.name() {
            "configure" => self.configure_set(&ctx, &req, child).await,
            "delete" => self.delete(&ctx, &req, child).await,
            "purge" => self.purge(&ctx, &req, child).await,
            "subscriptions" => Err(unsupported("manage-subscriptions")),
            "affiliations" => Err(unsupported("modify-affiliations")),
            _ => Err(StanzaError::bad_request("unknown pubsub request")),
        }
    }

    async fn existing(&self, owner: &BareJid, name: &str) -> Result<PepNode, StanzaError> {
        self.store.node(owner, name).await?.ok_or_else(StanzaError::item_not_found)
    }

    /// XEP-0060 §6.5: the items of a node, all, the newest `max_items`, or by id.
    async fn items(&self, ctx: &Ctx, req: &IqRequest, el: &Element) -> IqResult {
        let owner = req.to.to_bare();
        let name = node_name(el)?;
        let max = match el.attr("max_items") {
            None => None,
            Some(n) => Some(n.parse::<usize>().map_err(|_| StanzaError::bad_request("max_items is a number"))?),
        };
        let mut ids = Vec::new();
        for item in el.children().filter(|c| c.is("item", PUBSUB)) {
            match item.attr("id") {
                Some(id) if !id.is_empty() => ids.push(id.to_string()),
                _ => return Err(StanzaError::bad_request("an item asked for needs an id")),
            }
        }
        ids.sort_unstable();
        ids.dedup();
        // Each id is a lookup: no more than a node can hold.
        if ids.len() > self.store.limits().max_items {
            return Err(StanzaError::new(Condition::NotAcceptable).with_text("more item ids than a node holds"));
        }
        if req.from_self() {
            self.bookmarks_first_use(ctx, &owner, name).await?;
        }
        let node = self.existing(&owner, name).await?;
        self.may_read(ctx, &owner, &req.from, &node.config).await?;
        let mut found = self.store.items(&node, max, &ids).await?;
        // §6.5.4: a result too large for one stanza is truncated to the newest items that
        // fit (at least one), with a XEP-0059 note of how many there are.
        let total = found.len();
        let mut bytes = 0;
        let keep = found.iter().rev().take_while(|i| {
            bytes += i.payload.len();
            bytes <= MAX_RESULT_BYTES
        });
        let keep = keep.count().max(1).min(total);
        let found = found.split_off(total - keep);
        let mut items = xml::element("items", PUBSUB, &[("node", name)]);
        for item in &found {
            let mut el = xml::element("item", PUBSUB, &[("id", &item.id)]);
            match xml::parse_element(&item.payload) {
                Ok(payload) => {
                    el.append_child(payload);
                }
                Err(e) => {
                    tracing::error!(error = %e, "unreadable stored PEP item skipped");
                    continue;
                }
            }
            items.append_child(el);
        }
        let mut result = pubsub(PUBSUB, items);
        if keep < total
            && let (Some(first), Some(last)) = (found.first(), found.last())
        {
            let mut set = Element::bare("set", RSM);
            set.append_child(xml::text_element("first", RSM, &first.id));
            set.append_child(xml::text_element("last", RSM, &last.id));
            set.append_child(xml::text_element("count", RSM, &total.to_string()));
            result.append_child(set);
        }
        Ok(Some(result))
    }

    /// XEP-0060 §7.1: publish one item (auto-creating the node, §7.1.4, with publish
    /// options as preconditions, §7.1.5), then notify.
    async fn publish(&self, ctx: &Ctx, req: &IqRequest, el: &Element, options: Option<&Element>) -> IqResult {
        only_owner(req)?;
        let owner = req.to.to_bare();
        let name = node_name(el)?;
        let items: Vec<&Element> = el.children().filter(|c| c.is("item", PUBSUB)).collect();
        let item = match items.as_slice() {
            [item] => *item,
            [] => return Err(pubsub_error(Condition::BadRequest, "item-required")),
            _ => return Err(pubsub_error(Condition::BadRequest, "invalid-payload").with_text("one item per publish")),
        };
        let id = match item.attr("id") {
            Some(id) if id.len() > MAX_NAME => {
                return Err(StanzaError::new(Condition::NotAcceptable).with_text(format!("an item id has at most {MAX_NAME} bytes")));
            }
            Some(id) if !id.is_empty() => id.to_string(),
            _ => new_id(),
        };
        let payloads: Vec<&Element> = item.children().collect();
        let payload = match payloads.as_slice() {
            [payload] => *payload,
            [] => return Err(pubsub_error(Condition::BadRequest, "payload-required")),
            _ => return Err(pubsub_error(Condition::BadRequest, "invalid-payload").with_text("an item holds one payload")),
        };
        let serialised = xml::to_string(payload);
        if serialised.len() > self.max_item_bytes {
            return Err(pubsub_error(Condition::NotAcceptable, "payload-too-big")
                .with_text(format!("an item is at most {} bytes (this one is {})", self.max_item_bytes, serialised.len())));
        }
        let preconditions = match options {
            None => Vec::new(),
            Some(options) => self.preconditions(options)?,
        };
        let item = PepItem { id: id.clone(), publisher: req.from.to_string(), published_at: now_unix(), payload: serialised };
        self.bookmarks_first_use(ctx, &owner, name).await?;
        let node = {
            let _guard = self.lock(&owner).await;
            let node = self.node_for_publish(&owner, name, &preconditions).await?;
            self.store.publish(&owner, &node, &item).await?;
            node
        };
        let delivered = node.config.deliver_payloads.then(|| payload.clone());
        self.broadcast(ctx, &owner, &node, notify::items_event(name, &id, delivered)).await;
        self.bookmarks_changed(ctx, &owner, name, Some(payload)).await;
        if name == avatars::METADATA {
            self.avatar_published(ctx, &owner, payload).await;
        }
        let mut published = xml::element("publish", PUBSUB, &[("node", name)]);
        published.append_child(xml::element("item", PUBSUB, &[("id", &id)]));
        Ok(Some(pubsub(PUBSUB, published)))
    }

    /// The settings publish options ask for (§7.1.5): a field the service does not know
    /// cannot be met, so it fails the publish as an unmet precondition.
    fn preconditions(&self, options: &Element) -> Result<Vec<Setting>, StanzaError> {
        let Some(x) = options.get_child("x", ns::DATA_FORMS) else { return Ok(Vec::new()) };
        let Some(submitted) = form::parse_submitted(x, form::PUBLISH_OPTIONS)? else { return Ok(Vec::new()) };
        form::settings(&submitted).map_err(|e| match e {
            FieldError::Invalid(_) => e.to_stanza_error(),
            FieldError::Unsupported(var) => precondition_not_met(format!("the field {var} is not supported")),
            FieldError::UnsupportedAccessModel(m) => precondition_not_met(format!("the access model {m:?} is not supported")),
        })
    }

    /// The node to publish to: an existing one whose configuration meets the
    /// preconditions, or a new one configured by them. Under the account's lock.
    async fn node_for_publish(&self, owner: &BareJid, name: &str, preconditions: &[Setting]) -> Result<PepNode, StanzaError> {
        let server_max = u64::try_from(self.store.limits().max_items).unwrap_or(u64::MAX);
        if let Some(node) = self.store.node(owner, name).await? {
            if let Some(unmet) = preconditions.iter().find(|s| !form::satisfied(&node.config, s, server_max)) {
                return Err(precondition_not_met(format!("the node's {} is not what the publish options ask for", unmet.var())));
            }
            return Ok(node);
        }
        let mut config = NodeConfig::default();
        form::apply(&mut config, preconditions);
        match self.store.create(owner, name, &config).await? {
            Created::Yes(node) => Ok(node),
            // Not while the lock is held; another server process on the same database.
            Created::Exists => Err(StanzaError::new(Condition::Conflict).with_type(crate::stanza::ErrorType::Wait)),
        }
    }

    /// XEP-0060 §7.2: retract an item, notifying if asked to or configured so.
    async fn retract(&self, ctx: &Ctx, req: &IqRequest, el: &Element) -> IqResult {
        only_owner(req)?;
        let owner = req.to.to_bare();
        let name = node_name(el)?;
        let ids: Vec<&str> = el.children().filter(|c| c.is("item", PUBSUB)).filter_map(|i| i.attr("id")).filter(|id| !id.is_empty()).collect();
        let [id] = ids.as_slice() else { return Err(pubsub_error(Condition::BadRequest, "item-required")) };
        self.bookmarks_first_use(ctx, &owner, name).await?;
        let node = {
            let _guard = self.lock(&owner).await;
            let node = self.existing(&owner, name).await?;
            if !self.store.retract(&owner, &node, id).await? {
                return Err(StanzaError::item_not_found());
            }
            node
        };
        if truthy(el.attr("notify")) || node.config.notify_retract {
            let mut items = xml::element("items", PUBSUB_EVENT, &[("node", name)]);
            items.append_child(xml::element("retract", PUBSUB_EVENT, &[("id", id)]));
            self.broadcast(ctx, &owner, &node, notify::event(items)).await;
        }
        if name == bookmarks::BOOKMARKS {
            self.bookmarks_changed(ctx, &owner, name, None).await;
        }
        Ok(None)
    }

    /// XEP-0060 §8.1: create a node, with the default configuration or a submitted one.
    async fn create(&self, req: &IqRequest, el: &Element, configure: Option<&Element>) -> IqResult {
        only_owner(req)?;
        let owner = req.to.to_bare();
        let name = match el.attr("node") {
            // §8.1.1: instant nodes are not supported.
            None | Some("") => return Err(pubsub_error(Condition::NotAcceptable, "nodeid-required")),
            Some(_) => node_name(el)?,
        };
        let mut config = NodeConfig::default();
        if let Some(configure) = configure {
            if configure.attr("node").is_some() {
                return Err(StanzaError::bad_request("the configure of a create names no node"));
            }
            if let Some(x) = configure.get_child("x", ns::DATA_FORMS)
                && let Some(submitted) = form::parse_submitted(x, form::NODE_CONFIG)?
            {
                form::apply(&mut config, &form::settings(&submitted).map_err(|e| e.to_stanza_error())?);
            }
        }
        let _guard = self.lock(&owner).await;
        match self.store.create(&owner, name, &config).await? {
            Created::Yes(_) => Ok(None),
            Created::Exists => Err(StanzaError::new(Condition::Conflict).with_text("the node exists")),
        }
    }

    /// XEP-0060 §8.2.1: the node's configuration form.
    async fn configure_get(&self, req: &IqRequest, el: &Element) -> IqResult {
        let name = node_name(el)?;
        let node = self.existing(&req.to.to_bare(), name).await?;
        let mut configure = xml::element("configure", PUBSUB_OWNER, &[("node", name)]);
        configure.append_child(form::config_form(&node.config, form::NODE_CONFIG, "form"));
        Ok(Some(pubsub(PUBSUB_OWNER, configure)))
    }

    /// XEP-0060 §8.2.3: apply a submitted configuration (the fields given; others stay).
    async fn configure_set(&self, ctx: &Ctx, req: &IqRequest, el: &Element) -> IqResult {
        let owner = req.to.to_bare();
        let name = node_name(el)?;
        let Some(x) = el.get_child("x", ns::DATA_FORMS) else { return Err(StanzaError::bad_request("a configuration form is needed")) };
        let Some(submitted) = form::parse_submitted(x, form::NODE_CONFIG)? else {
            // Cancelled: the configuration stays as it is.
            self.existing(&owner, name).await?;
            return Ok(None);
        };
        let settings = form::settings(&submitted).map_err(|e| e.to_stanza_error())?;
        let node = {
            let _guard = self.lock(&owner).await;
            let node = self.existing(&owner, name).await?;
            let mut config = node.config.clone();
            form::apply(&mut config, &settings);
            if config == node.config {
                return Ok(None);
            }
            self.store.configure(&owner, &node, &config).await?;
            PepNode { config, ..node }
        };
        if node.config.notify_config {
            let mut configuration = xml::element("configuration", PUBSUB_EVENT, &[("node", name)]);
            if node.config.deliver_payloads {
                configuration.append_child(form::config_form(&node.config, form::NODE_CONFIG, "result"));
            }
            self.broadcast(ctx, &owner, &node, notify::event(configuration)).await;
        }
        Ok(None)
    }

    /// XEP-0060 §8.4: delete a node and its items; those who got its notifications are told.
    async fn delete(&self, ctx: &Ctx, req: &IqRequest, el: &Element) -> IqResult {
        let owner = req.to.to_bare();
        let name = node_name(el)?;
        let (node, targets) = {
            let _guard = self.lock(&owner).await;
            let node = self.existing(&owner, name).await?;
            // Found before the node goes: its explicit subscriptions go with it.
            let targets = self.recipients(ctx, &owner, &node).await;
            self.store.delete(&owner, name).await?;
            (node, targets)
        };
        if node.config.notify_delete && node.config.deliver_notifications {
            let delete = xml::element("delete", PUBSUB_EVENT, &[("node", name)]);
            self.send_to(ctx, &owner, &node.config, &targets, notify::event(delete)).await;
        }
        if name == bookmarks::BOOKMARKS {
            self.bookmarks_changed(ctx, &owner, name, None).await;
        }
        Ok(None)
    }

    /// XEP-0060 §8.5: remove all items, with one `<purge/>` notification.
    async fn purge(&self, ctx: &Ctx, req: &IqRequest, el: &Element) -> IqResult {
        let owner = req.to.to_bare();
        let name = node_name(el)?;
        let node = {
            let _guard = self.lock(&owner).await;
            let node = self.existing(&owner, name).await?;
            self.store.purge(&owner, &node).await?;
            node
        };
        if node.config.notify_retract {
            self.broadcast(ctx, &owner, &node, notify::event(xml::element("purge", PUBSUB_EVENT, &[("node", name)]))).await;
        }
        if name == bookmarks::BOOKMARKS {
            self.bookmarks_changed(ctx, &owner, name, None).await;
        }
        Ok(None)
    }

    /// The `jid` of a subscribe or unsubscribe: the requester's own, bare or full
    /// (§6.1.3.1).
    fn subscriber(req: &IqRequest, el: &Element) -> Result<Jid, StanzaError> {
        let jid = el.attr("jid").and_then(|j| Jid::new(j).ok());
        match jid {
            Some(jid) if jid == req.from || (jid.resource().is_none() && jid.to_bare() == req.from.to_bare()) => Ok(jid),
            _ => Err(pubsub_error(Condition::BadRequest, "invalid-jid")),
        }
    }

    /// XEP-0060 §6.1: an explicit subscription, for whoever may read the node (e.g. a
    /// stranger to an open node); the last item follows (§6.1.7).
    async fn subscribe(&self, ctx: &Ctx, req: &IqRequest, el: &Element) -> IqResult {
        let owner = req.to.to_bare();
        let name = node_name(el)?;
        let jid = Self::subscriber(req, el)?;
        let node = self.existing(&owner, name).await?;
        self.may_read(ctx, &owner, &jid, &node.config).await?;
        self.store.subscribe(&node, jid.as_str(), self.max_subscribers).await?;
        if node.config.send_last != crate::storage::SendLast::Never
            && let Some(item) = self.store.items(&node, Some(1), &[]).await?.pop()
        {
            let last = crate::storage::LastItem { owner: owner.clone(), node: node.clone(), item };
            self.send_last(ctx, &last, jid.clone()).await;
        }
        let subscription =
            xml::element("subscription", PUBSUB, &[("node", name), ("jid", jid.as_str()), ("subscription", "subscribed")]);
        Ok(Some(pubsub(PUBSUB, subscription)))
    }

    /// XEP-0060 §6.2.
    async fn unsubscribe(&self, req: &IqRequest, el: &Element) -> IqResult {
        let owner = req.to.to_bare();
        let name = node_name(el)?;
        let jid = Self::subscriber(req, el)?;
        let node = self.existing(&owner, name).await?;
        if !self.store.unsubscribe(&node, jid.as_str()).await? {
            return Err(pubsub_error(Condition::UnexpectedRequest, "not-subscribed").with_type(crate::stanza::ErrorType::Cancel));
        }
        Ok(None)
    }

    /// The account's nodes in its disco#items, and the info and items of one node (XEP-0060
    /// §5.2 to §5.5), as far as the requester may read them (XEP-0163 §8.2).
    async fn disco(self: Arc<Self>, ctx: Ctx, req: DiscoRequest) -> Result<Option<Vec<Element>>, StanzaError> {
        let owner = &req.account;
        let Some(name) = req.node.as_deref() else {
            if !req.items {
                return Ok(None);
            }
            let mut found = Vec::new();
            for node in self.store.nodes(owner).await? {
                if self.may_read(&ctx, owner, &req.from, &node.config).await.is_ok() {
                    let mut item = xml::element("item", ns::DISCO_ITEMS, &[("jid", owner.as_str()), ("node", &node.name)]);
                    if !node.config.title.is_empty() {
                        xml::set_attr(&mut item, "name", node.config.title.as_str());
                    }
                    found.push(item);
                }
            }
            return Ok(Some(found));
        };
        let Some(node) = self.store.node(owner, name).await? else { return Ok(None) };
        // A node the requester may not read is, to it, a node that does not exist.
        if self.may_read(&ctx, owner, &req.from, &node.config).await.is_err() {
            return Ok(None);
        }
        if req.items {
            let items = self.store.items(&node, None, &[]).await?;
            return Ok(Some(
                items.iter().map(|i| xml::element("item", ns::DISCO_ITEMS, &[("jid", owner.as_str()), ("name", &i.id)])).collect(),
            ));
        }
        let mut meta = form::config_form(&node.config, form::META_DATA, "result");
        meta.append_child(xml::element("field", ns::DATA_FORMS, &[("var", "pubsub#owner"), ("type", "jid-multi")]));
        if let Some(owner_field) = meta.children_mut().last() {
            owner_field.append_child(xml::text_element("value", ns::DATA_FORMS, owner.as_str()));
        }
        Ok(Some(vec![
            xml::element("identity", ns::DISCO_INFO, &[("category", "pubsub"), ("type", "leaf")]),
            xml::element("feature", ns::DISCO_INFO, &[("var", PUBSUB)]),
            meta,
        ]))
    }
}
