//! Message Archive Management (XEP-0313) with Unique and Stable Stanza IDs (XEP-0359),
//! Result Set Management paging (XEP-0059) and archiving preferences (XEP-0441).
//!
//! **Archiving.** A message between two local accounts is archived when the recipient's
//! side accepts it: in the `StanzaIn` hook, after the block lists (priority 100) had their
//! say, one row goes to the sender's archive (outgoing) and one to the recipient's
//! (incoming); a message to oneself is one row. A message to another server is archived for
//! the sender in `StanzaOut`. Every message to an account first loses any `<stanza-id/>`
//! claiming to be by that account (XEP-0359 §4 rule 2); an archived one gets the server's,
//! whose id is its archive id, before delivery or offline storage.
//!
//! **The promise.** The archive id is made up front, so delivery never waits for the
//! database: the rows go to the store's group-commit writer, and the client's
//! acknowledgement (XEP-0198) waits for their commit through [`Ctx::durable`].
//!
//! **Queries** are ranges of an index, so a page costs the same in an archive of ten
//! messages or of millions (see `storage/archive.rs`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use jid::{BareJid, Jid};
use tracing::Instrument;

use super::{Ctx, Deps, Flow, Hook, IqRequest, Kinds, IqResult, Module, Registrar, Scope, SessionEvent, SessionHook};
use crate::core::Core;
use crate::archive_query;
use crate::router;
use crate::stanza::{Condition, bare_of, bare_str, IqType, Kind, MessageType, Stanza, StanzaError};
use crate::storage::{ArchiveDefault, ArchivePrefs, ArchiveStore, NewArchived, now_micros};
use crate::xml::{self, Element, ns};

pub const MAM: &str = "urn:xmpp:mam:2";
pub const MAM_EXTENDED: &str = "urn:xmpp:mam:2#extended";
pub const MAM_METADATA: &str = "urn:xmpp:mam:2#metadata";
pub const SID: &str = "urn:xmpp:sid:0";
const HINTS: &str = "urn:xmpp:hints";

/// JIDs in the always and never lists together.
const MAX_PREFS_JIDS: usize = 1000;
/// How often retention looks for old messages, and how many go per transaction.
const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);
const RETENTION_BATCH: usize = 1000;

pub struct Mam {
    store: ArchiveStore,
    default: ArchiveDefault,
    max_page: usize,
    retention_days: u32,
    /// Preferences of accounts with sessions that set some (the message path reads them
    /// for every message; for the accounts that never set any, most of them, the store
    /// answers from memory).
    prefs: DashMap<BareJid, Arc<Prefs>>,
}

/// Preferences as the message path checks them.
struct Prefs {
    default: ArchiveDefault,
    always: HashSet<String>,
    never: HashSet<String>,
}

impl Module for Mam {
    const NAME: &'static str = "mam";

    fn build(deps: &Deps) -> Self {
        let config = &deps.config.mam;
        Mam {
            store: deps.db.archive(),
            default: config.default,
            max_page: config.max_page,
            retention_days: config.retention_days,
            prefs: DashMap::new(),
        }
    }

    fn register(self: Arc<Self>, reg: &mut Registrar) {
        // Each registration advertises urn:xmpp:mam:2 on the account's bare JID.
        reg.iq(Scope::Account, IqType::Set, "query", MAM, &self, Self::query);
        reg.iq(Scope::Account, IqType::Get, "query", MAM, &self, Self::form);
        reg.iq(Scope::Account, IqType::Get, "metadata", MAM, &self, Self::metadata);
        reg.iq(Scope::Account, IqType::Get, "prefs", MAM, &self, Self::get_prefs);
        reg.iq(Scope::Account, IqType::Set, "prefs", MAM, &self, Self::set_prefs);
        reg.feature(Scope::Account, MAM_EXTENDED);
        reg.feature(Scope::Account, MAM_METADATA);
        reg.feature(Scope::Account, SID);
        // After the block lists (100): what they refuse is not archived (XEP-0313 §6.1).
        reg.hook(Hook::StanzaOut, Kinds::MESSAGE, 90, &self, Self::outgoing);
        reg.hook_when(Hook::StanzaIn, Kinds::MESSAGE, 90, &self, |_, stanza| incoming_wanted(stanza), Self::incoming);
        reg.session_hook(SessionHook::Closed, 0, &self, Self::closed);
        reg.background(&self, Self::retention);
    }
}

/// XEP-0313 §6.1.1 and XEP-0334: normal and chat messages with a body, or with a payload
/// a conversation needs later (OMEMO without a fallback body, reactions, retractions), or
/// with the `<store/>` hint; never with `<no-store/>` or `<no-permanent-store/>`, never
/// chat states, receipts or markers alone, errors, headlines or groupchat.
fn worth_archiving(stanza: &Stanza) -> bool {
    if !matches!(stanza.message_type(), MessageType::Normal | MessageType::Chat) {
        return false;
    }
    let el = &stanza.el;
    if el.has_child("no-store", HINTS) || el.has_child("no-permanent-store", HINTS) {
        return false;
    }
    el.has_child("store", HINTS)
        || el.has_child("body", ns::CLIENT)
        || el.get_child("encrypted", "urn:xmpp:omemo:2").is_some_and(|e| e.children().any(|c| c.name() == "payload"))
        || el.get_child("encrypted", "eu.siacs.conversations.axolotl").is_some_and(|e| e.children().any(|c| c.name() == "payload"))
        || el.has_child("reactions", "urn:xmpp:reactions:0")
        || el.has_child("retract", "urn:xmpp:message-retract:1")
}

/// XEP-0359 §4 rule 2: drop every `<stanza-id/>` whose `by` is `owner`, whoever put it there.
fn strip_stanza_ids(el: &mut Element, owner: &BareJid) {
    el.retain_children(|c| !(c.is("stanza-id", SID) && c.attr("by").is_some_and(|by| names(by, owner.as_str()))));
}

/// Whether `by` is `owner`'s JID, as the JID rules compare them. Most `by`s that reach this
/// are another entity's (a room's, on every copy of its broadcast): an ASCII domain that
/// differs from the owner's in more than case tells them apart without preparing the JID
/// (stringprep, per copy). The JID rules change such a domain only by lower-casing it and
/// dropping a final dot.
fn names(by: &str, owner: &str) -> bool {
    if by == owner {
        return true;
    }
    if !by.contains('/') {
        let domain = by.split_once('@').map_or(by, |(_, domain)| domain);
        let owner_domain = owner.split_once('@').map_or(owner, |(_, domain)| domain);
        if domain.is_ascii() && !domain.ends_with('.') && !domain.eq_ignore_ascii_case(owner_domain) {
            return false;
        }
    }
    BareJid::new(by).is_ok_and(|by| by.as_str() == owner)
}

/// Whether [`Mam::incoming`] has anything to do with a message: archive it, or drop a
/// `<stanza-id/>` that claims to be the recipient's. Neither, for every copy of a room's
/// broadcast.
fn incoming_wanted(stanza: &Stanza) -> bool {
    if worth_archiving(stanza) {
        return true;
    }
    let owner = bare_str(stanza.to.as_ref().unwrap_or(&stanza.from).as_str());
    stanza.el.children().any(|c| c.is("stanza-id", SID) && c.attr("by").is_some_and(|by| names(by, owner)))
}

impl Prefs {
    fn from_stored(p: &ArchivePrefs) -> Prefs {
        Prefs { default: p.default, always: p.always.iter().cloned().collect(), never: p.never.iter().cloned().collect() }
    }

    /// XEP-0441 §2.3: a listed full JID matches that JID, a listed bare JID any of its
    /// resources. `never` wins over `always`.
    fn listed(&self, other: &Jid) -> Option<bool> {
        let bare = other.to_bare();
        let hit = |set: &HashSet<String>| set.contains(other.as_str()) || set.contains(bare.as_str());
        if hit(&self.never) {
            Some(false)
        } else if hit(&self.always) {
            Some(true)
        } else {
            None
        }
    }
}

impl Mam {
    /// The account's preferences: from memory for an account with sessions, otherwise
    /// from the store (which answers from a hint for accounts that never set any).
    async fn prefs_of(&self, ctx: &Ctx, owner: &BareJid) -> Option<Arc<Prefs>> {
        if let Some(p) = self.prefs.get(owner) {
            return Some(p.clone());
        }
        let prefs = match self.store.prefs(owner).await {
            Ok(p) => Arc::new(Prefs::from_stored(&p?)),
            Err(e) => {
                tracing::error!(error = %e, "cannot read archiving preferences; the server default applies");
                return None;
            }
        };
        if ctx.core.sessions.has_sessions(owner) {
            self.prefs.insert(owner.clone(), prefs.clone());
        }
        Some(prefs)
    }

    /// Whether `owner` archives a message with `other` (XEP-0441 §2).
    async fn archives(&self, ctx: &Ctx, owner: &BareJid, other: &Jid) -> bool {
        let prefs = self.prefs_of(ctx, owner).await;
        let default = match prefs.as_deref() {
            Some(p) => match p.listed(other) {
                Some(decided) => return decided,
                None => p.default,
            },
            None => self.default,
        };
        match default {
            ArchiveDefault::Always => true,
            ArchiveDefault::Never => false,
            ArchiveDefault::Roster => match ctx.core.rosters.item(owner, &other.to_bare()).await {
                Ok(item) => item.is_some(),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the roster to decide on archiving");
                    false
                }
            },
        }
    }

    /// A message from a local account: archived here only when it leaves the server;
    /// for a local recipient both rows are written on the recipient's side (`incoming`).
    async fn outgoing(self: Arc<Self>, ctx: Ctx, mut stanza: Stanza) -> Flow {
        if stanza.kind != Kind::Message {
            return Flow::Continue(stanza);
        }
        let sender = stanza.from.to_bare();
        // A client does not speak for its archive either.
        strip_stanza_ids(&mut stanza.el, &sender);
        let Some(to) = stanza.to.clone() else { return Flow::Continue(stanza) };
        if ctx.core.is_local_domain(to.domain().as_str()) || !worth_archiving(&stanza) || !self.archives(&ctx, &sender, &to).await {
            return Flow::Continue(stanza);
        }
        let slot = match self.store.allocate().await {
            Ok(slot) => slot,
            Err(e) => return self.not_archived(&ctx, stanza, e).await,
        };
        let row = NewArchived { owner: sender, ts: slot.ts, with: to, stanza: xml::Serialised::of(&stanza.el) };
        self.commit(&ctx, &stanza, vec![row]).await;
        Flow::Continue(stanza)
    }

    /// A message for a local account that the block lists let through.
    async fn incoming(self: Arc<Self>, ctx: Ctx, mut stanza: Stanza) -> Flow {
        if stanza.kind != Kind::Message {
            return Flow::Continue(stanza);
        }
        let to = stanza.to_or_self();
        let owner = bare_of(&to);
        strip_stanza_ids(&mut stanza.el, &owner);
        if !worth_archiving(&stanza) {
            return Flow::Continue(stanza);
        }
        let from = stanza.from.clone();
        let sender = from.to_bare();
        let for_sender = sender != owner && ctx.core.is_local_account(&from) && self.archives(&ctx, &sender, &to).await;
        let for_owner = self.archives(&ctx, &owner, &from).await;
        if !for_sender && !for_owner {
            return Flow::Continue(stanza);
        }
        let serialised = xml::Serialised::of(&stanza.el);
        let mut rows = Vec::with_capacity(2);
        if for_sender {
            match self.store.allocate().await {
                Ok(slot) => rows.push(NewArchived { owner: sender, ts: slot.ts, with: to.clone(), stanza: serialised.clone() }),
                Err(e) => return self.not_archived(&ctx, stanza, e).await,
            }
        }
        if for_owner {
            match self.store.allocate().await {
                Ok(slot) => {
                    stanza.el.append_child(xml::element("stanza-id", SID, &[("by", owner.as_str()), ("id", &slot.id)]));
                    rows.push(NewArchived { owner, ts: slot.ts, with: from, stanza: serialised });
                }
                Err(e) => return self.not_archived(&ctx, stanza, e).await,
            }
        }
        self.commit(&ctx, &stanza, rows).await;
        Flow::Continue(stanza)
    }

    /// The archive cannot take the message (its key and clock could not be read): the
    /// message is refused rather than delivered unarchived behind an acknowledgement.
    async fn not_archived(&self, ctx: &Ctx, stanza: Stanza, e: crate::storage::StorageError) -> Flow {
        tracing::error!(error = %e, "cannot archive a message");
        router::bounce(ctx, &stanza, StanzaError::internal().with_text("the message archive is unavailable")).await;
        Flow::Handled
    }

    /// Queue the rows; the sender's acknowledgement waits for their commit, delivery does
    /// not. If the commit fails, the sender is told (its message was delivered, not kept).
    async fn commit(&self, ctx: &Ctx, stanza: &Stanza, rows: Vec<NewArchived>) {
        let pending = self.store.enqueue(rows).await;
        let durable = ctx.durable();
        // What an error answer needs of the message, not the message.
        let mut probe = Element::bare("message", ns::CLIENT);
        for attr in ["id", "type"] {
            if let Some(v) = stanza.el.attr(attr) {
                xml::set_attr(&mut probe, attr, v);
            }
        }
        let probe = Stanza { kind: Kind::Message, from: stanza.from.clone(), to: stanza.to.clone(), el: probe };
        let core = ctx.core.clone();
        ctx.core.spawn(
            async move {
                let outcome = pending.outcome().await;
                if outcome.is_err() {
                    // Logged by the writer. Routed: this session may have ended.
                    let error = StanzaError::internal().with_text("the message could not be stored in the archive");
                    router::bounce(&Ctx::new(core), &probe, error).await;
                }
                drop(durable);
            }
            .instrument(tracing::Span::current()),
        );
    }

    async fn closed(self: Arc<Self>, _ctx: Ctx, event: SessionEvent) {
        if event.last_session {
            self.prefs.remove(&event.jid.to_bare());
        }
    }

    /// Delete what is older than `retention_days`, at start and then hourly, oldest first,
    /// in bounded batches so that writers get in between. (First, get the store ready.)
    async fn retention(self: Arc<Self>, core: Core) {
        // Read the id key and the clock now, not with the first message.
        if let Err(e) = self.store.prepare().await {
            tracing::error!(error = %e, "cannot prepare the message archive");
        }
        if self.retention_days == 0 {
            return;
        }
        loop {
            let cutoff = now_micros().saturating_sub(i64::from(self.retention_days) * 86_400 * 1_000_000);
            let mut deleted = 0;
            while !core.shutdown.is_cancelled() {
                match self.store.delete_older_than(cutoff, RETENTION_BATCH).await {
                    Ok(n) => {
                        deleted += n;
                        if n < RETENTION_BATCH as u64 {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "archive retention failed");
                        break;
                    }
                }
            }
            if deleted > 0 {
                tracing::info!(deleted, days = self.retention_days, "archived messages past retention deleted");
            }
            tokio::select! {
                _ = core.shutdown.cancelled() => return,
                _ = tokio::time::sleep(RETENTION_INTERVAL) => {}
            }
        }
    }

    /// §4: run a query, write its results to the querying session, answer with `<fin/>`.
    async fn query(self: Arc<Self>, ctx: Ctx, req: IqRequest) -> IqResult {
        if !req.from_self() {
            return Err(StanzaError::forbidden());
        }
        archive_query::run(&ctx, &self.store, &req.to.to_bare(), req.payload(), self.max_page, &req.from).await
    }

    /// §4.1.5: the fields a query form may have.
    async fn form(self: Arc<Self>, _ctx: Ctx, req: IqRequest) -> IqResult {
        if !req.from_self() {
            return Err(StanzaError::forbidden());
        }
        Ok(Some(archive_query::form()))
    }

    /// §5: the first and last message of the archive, or nothing for an empty one.
    async fn metadata(self: Arc<Self>, _ctx: Ctx, req: IqRequest) -> IqResult {
        if !req.from_self() {
            return Err(StanzaError::forbidden());
        }
        let mut el = Element::bare("metadata", MAM);
        if let Some((first, last)) = self.store.bounds(&req.to.to_bare()).await? {
            el.append_child(xml::element("start", MAM, &[("id", &first.id), ("timestamp", &archive_query::stamp(first.ts))]));
            el.append_child(xml::element("end", MAM, &[("id", &last.id), ("timestamp", &archive_query::stamp(last.ts))]));
        }
        Ok(Some(el))
    }

    /// XEP-0441 §2.1: the preferences, or the server's default with empty lists.
    async fn get_prefs(self: Arc<Self>, _ctx: Ctx, req: IqRequest) -> IqResult {
        if !req.from_self() {
            return Err(StanzaError::forbidden());
        }
        let prefs = self.store.prefs(&req.to.to_bare()).await?;
        let prefs = prefs.unwrap_or(ArchivePrefs { default: self.default, always: Vec::new(), never: Vec::new() });
        Ok(Some(prefs_element(&prefs)))
    }

    /// XEP-0441 §2.1: replace the preferences; the answer shows them as applied.
    async fn set_prefs(self: Arc<Self>, ctx: Ctx, req: IqRequest) -> IqResult {
        if !req.from_self() {
            return Err(StanzaError::forbidden());
        }
        let owner = req.to.to_bare();
        let prefs = parse_prefs(req.payload())?;
        self.store.set_prefs(&owner, &prefs).await?;
        if ctx.core.sessions.has_sessions(&owner) {
            self.prefs.insert(owner, Arc::new(Prefs::from_stored(&prefs)));
        }
        Ok(Some(prefs_element(&prefs)))
    }
}

fn prefs_element(prefs: &ArchivePrefs) -> Element {
    let mut el = xml::element("prefs", MAM, &[("default", prefs.default.as_str())]);
    for (name, jids) in [("always", &prefs.always), ("never", &prefs.never)] {
        let mut list = Element::bare(name, MAM);
        for jid in jids {
            list.append_child(xml::text_element("jid", MAM, jid));
        }
        el.append_child(list);
    }
    el
}

fn parse_prefs(el: &Element) -> Result<ArchivePrefs, StanzaError> {
    let default = el.attr("default").ok_or_else(|| StanzaError::bad_request("'default' is required"))?;
    let default = ArchiveDefault::parse(default).ok_or_else(|| StanzaError::bad_request("'default' is one of always, roster, never"))?;
    let list = |name: &str| -> Result<Vec<String>, StanzaError> {
        let mut jids: Vec<String> = Vec::new();
        for list in el.children().filter(|c| c.is(name, MAM)) {
            for jid in list.children().filter(|c| c.is("jid", MAM)) {
                let jid = Jid::new(jid.text().trim()).map_err(|_| StanzaError::new(Condition::JidMalformed))?;
                jids.push(jid.to_string());
            }
        }
        jids.sort();
        jids.dedup();
        Ok(jids)
    };
    let prefs = ArchivePrefs { default, always: list("always")?, never: list("never")? };
    if prefs.always.len() + prefs.never.len() > MAX_PREFS_JIDS {
        return Err(StanzaError::new(Condition::NotAcceptable).with_text(format!("at most {MAX_PREFS_JIDS} JIDs in the always and never lists")));
    }
    Ok(prefs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jid::FullJid;

    fn stanza(x: &str) -> Stanza {
        let el = xml::parse_element(x).unwrap();
        Stanza::new(el, Jid::from(FullJid::new("a@b/c").unwrap()), Jid::new("d@b").unwrap())
    }

    #[test]
    fn stanza_id_by_compares_as_jids_do() {
        let owner = BareJid::new("alice@example.org").unwrap();
        // Every `by` the shortcut decides is decided as a full comparison would.
        for by in [
            "alice@example.org",
            "ALICE@Example.ORG",
            "alice@example.org.",
            "Alice@EXAMPLE.org.",
            "room@conference.example.org",
            "example.org",
            "alice@example.com",
            "alice@example.org/res",
            "alice@[::1]",
            "ALİCE@example.org",
            "alice@ÉXAMPLE.org",
            "alice@example..org",
            "",
            "@example.org",
        ] {
            let full = BareJid::new(by).is_ok_and(|by| by == owner);
            assert_eq!(names(by, owner.as_str()), full, "{by}");
        }
        assert!(names("Alice@Example.org.", owner.as_str()));
        assert!(!names("room@conference.example.org", owner.as_str()));
        let unicode = BareJid::new("älice@éxample.org").unwrap();
        assert!(names("ÄLICE@ÉXAMPLE.ORG", unicode.as_str()));
        assert!(!names("älice@example.org", unicode.as_str()));

        let mut el = xml::parse_element(
            "<message xmlns='jabber:client'><stanza-id xmlns='urn:xmpp:sid:0' by='room@conference.example.org' id='1'/><stanza-id xmlns='urn:xmpp:sid:0' by='ALICE@example.org' id='2'/><body>x</body></message>",
        )
        .unwrap();
        strip_stanza_ids(&mut el, &owner);
        let ids: Vec<_> = el.children().filter_map(|c| c.attr("id")).collect();
        assert_eq!(ids, ["1"], "the owner's forged id goes, the room's stays");
    }

    #[test]
    fn what_is_archived() {
        let yes = [
            "<message xmlns='jabber:client' type='chat'><body>x</body></message>",
            "<message xmlns='jabber:client'><body>x</body></message>",
            "<message xmlns='jabber:client' type='chat'><store xmlns='urn:xmpp:hints'/><x xmlns='urn:example'/></message>",
            "<message xmlns='jabber:client' type='chat'><encrypted xmlns='eu.siacs.conversations.axolotl'><header/><payload>p</payload></encrypted><body>fallback</body></message>",
            "<message xmlns='jabber:client' type='chat'><encrypted xmlns='urn:xmpp:omemo:2'><header/><payload>p</payload></encrypted></message>",
            "<message xmlns='jabber:client' type='chat'><reactions xmlns='urn:xmpp:reactions:0' id='1'><reaction>x</reaction></reactions></message>",
        ];
        for x in yes {
            assert!(worth_archiving(&stanza(x)), "{x}");
        }
        let no = [
            "<message xmlns='jabber:client' type='groupchat'><body>x</body></message>",
            "<message xmlns='jabber:client' type='headline'><body>x</body></message>",
            "<message xmlns='jabber:client' type='error'><body>x</body><store xmlns='urn:xmpp:hints'/></message>",
            "<message xmlns='jabber:client' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
            "<message xmlns='jabber:client' type='chat'><received xmlns='urn:xmpp:receipts' id='1'/></message>",
            "<message xmlns='jabber:client' type='chat'><body>x</body><no-store xmlns='urn:xmpp:hints'/></message>",
            "<message xmlns='jabber:client' type='chat'><body>x</body><no-permanent-store xmlns='urn:xmpp:hints'/></message>",
            "<message xmlns='jabber:client' type='chat'><encrypted xmlns='eu.siacs.conversations.axolotl'><header/></encrypted></message>",
        ];
        for x in no {
            assert!(!worth_archiving(&stanza(x)), "{x}");
        }
    }

    #[test]
    fn only_our_stanza_ids_are_stripped() {
        let mut el = xml::parse_element(
            "<message xmlns='jabber:client'><stanza-id xmlns='urn:xmpp:sid:0' by='Juliet@Capulet.lit' id='forged'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='room@muc.example' id='kept'/><stanza-id xmlns='urn:xmpp:sid:0' id='no-by'/>\
             <origin-id xmlns='urn:xmpp:sid:0' id='origin'/><body>b</body></message>",
        )
        .unwrap();
        strip_stanza_ids(&mut el, &BareJid::new("juliet@capulet.lit").unwrap());
        let ids: Vec<&str> = el.children().filter_map(|c| c.attr("id")).collect();
        assert_eq!(ids, ["kept", "no-by", "origin"]);
    }

    #[test]
    fn prefs_matching() {
        let prefs = Prefs {
            default: ArchiveDefault::Never,
            always: ["romeo@montague.lit", "nurse@capulet.lit/kitchen"].map(String::from).into(),
            never: ["montague@montague.lit", "romeo@montague.lit"].map(String::from).into(),
        };
        let j = |s: &str| Jid::new(s).unwrap();
        assert_eq!(prefs.listed(&j("romeo@montague.lit/garden")), Some(false), "never wins");
        assert_eq!(prefs.listed(&j("nurse@capulet.lit/kitchen")), Some(true));
        assert_eq!(prefs.listed(&j("nurse@capulet.lit/hall")), None, "a full JID matches only itself");
        assert_eq!(prefs.listed(&j("nurse@capulet.lit")), None);
        assert_eq!(prefs.listed(&j("montague@montague.lit/x")), Some(false));
    }

    #[test]
    fn prefs_parse() {
        let el = xml::parse_element(
            "<prefs xmlns='urn:xmpp:mam:2' default='roster'><always><jid>Romeo@Montague.lit</jid></always><never><jid>montague@montague.lit</jid></never></prefs>",
        )
        .unwrap();
        let p = parse_prefs(&el).unwrap();
        assert_eq!(p, ArchivePrefs { default: ArchiveDefault::Roster, always: vec!["romeo@montague.lit".into()], never: vec!["montague@montague.lit".into()] });
        for bad in ["<prefs xmlns='urn:xmpp:mam:2'/>", "<prefs xmlns='urn:xmpp:mam:2' default='sometimes'/>"] {
            assert_eq!(parse_prefs(&xml::parse_element(bad).unwrap()).unwrap_err().condition, Condition::BadRequest);
        }
        let malformed = xml::parse_element("<prefs xmlns='urn:xmpp:mam:2' default='always'><never><jid>a@b@c</jid></never></prefs>").unwrap();
        assert_eq!(parse_prefs(&malformed).unwrap_err().condition, Condition::JidMalformed);
    }
}
