//! Roster management (RFC 6121 §2) with versioning (XEP-0237).

use std::sync::Arc;

use jid::{BareJid, Jid};
use crate::xml::Element;

use super::{Ctx, Deps, Flow, Hook, IqRequest, Kinds, IqResult, Module, Registrar, Scope, Stage};
use crate::rosters::item_element;
use crate::stanza::{Condition, IqType, PresenceType, Stanza, StanzaError};
use crate::storage::RosterItem;
use crate::xml::{self, ns};

/// What one roster item may hold (RFC 6121 §2.3.3 lets the server set these limits):
/// with the item count, they bound the size of a roster.
#[derive(Debug, Clone, Copy)]
struct ItemLimits {
    /// Bytes of the name, and of each group name.
    max_text: usize,
    max_groups: usize,
}

pub struct Roster {
    limits: ItemLimits,
}

impl Module for Roster {
    const NAME: &'static str = "roster";

    fn build(deps: &Deps) -> Self {
        let config = &deps.config.roster;
        Roster { limits: ItemLimits { max_text: config.max_text_bytes, max_groups: config.max_groups_per_item } }
    }

    fn register(self: Arc<Self>, reg: &mut Registrar) {
        reg.iq(Scope::Account, IqType::Get, "query", ns::ROSTER, &self, Self::get);
        reg.iq(Scope::Account, IqType::Set, "query", ns::ROSTER, &self, Self::set);
        reg.hook(Hook::StanzaIn, Kinds::IQ, 150, &self, Self::forged_push);
        // XEP-0237 §2: versioning is announced as a stream feature.
        reg.stream_feature(Stage::PostAuth, Element::bare("ver", ns::ROSTER_VER_FEATURE));
    }
}

/// Whether `stanza` looks like a roster push (an IQ set of `jabber:iq:roster` for one of an
/// account's resources) sent by anyone but that account (RFC 6121 §2.1.6: only the user's own
/// server pushes, from the bare JID or without a `from`). A set for the bare JID is a request
/// to the server, which the set handler refuses to strangers.
fn forged_push(stanza: &Stanza) -> bool {
    stanza.iq_type() == Some(IqType::Set)
        && stanza.payload().is_some_and(|p| p.is("query", ns::ROSTER))
        && stanza.to.as_ref().is_some_and(|to| to.resource().is_some() && to.to_bare() != stanza.from.to_bare())
}

/// A validated roster set.
enum Change {
    Update { jid: BareJid, name: Option<String>, groups: Vec<String> },
    Remove(BareJid),
}

fn parse_set(query: &Element, limits: ItemLimits) -> Result<Change, StanzaError> {
    let mut items = query.children().filter(|c| c.is("item", ns::ROSTER));
    let (Some(item), None) = (items.next(), items.next()) else {
        return Err(StanzaError::bad_request("a roster set has exactly one item"));
    };
    let jid = item.attr("jid").ok_or_else(|| StanzaError::bad_request("item without jid"))?;
    let jid = Jid::new(jid).map_err(|_| StanzaError::new(Condition::JidMalformed))?;
    let jid = match jid.try_into_full() {
        Err(bare) => bare,
        Ok(_) => return Err(StanzaError::bad_request("roster items are bare JIDs")),
    };
    if item.attr("subscription") == Some("remove") {
        return Ok(Change::Remove(jid));
    }
    let name = item.attr("name").filter(|n| !n.is_empty()).map(str::to_string);
    let mut groups: Vec<String> = Vec::new();
    for g in item.children().filter(|c| c.is("group", ns::ROSTER)) {
        let text = g.text();
        if text.is_empty() {
            return Err(StanzaError::new(Condition::NotAcceptable).with_text("empty group name"));
        }
        if text.len() > limits.max_text {
            return Err(StanzaError::new(Condition::NotAcceptable)
                .with_text(format!("a group name is at most {} bytes long", limits.max_text)));
        }
        // RFC 6121 §2.3.3: duplicate groups are a bad request, not something to tidy up.
        if groups.contains(&text) {
            return Err(StanzaError::bad_request("duplicate group"));
        }
        groups.push(text);
    }
    // §2.3.3 makes a name or group past the server's limit not-acceptable; too many groups
    // is the same excess (the item is larger than we keep), so it gets the same condition.
    if groups.len() > limits.max_groups {
        return Err(StanzaError::new(Condition::NotAcceptable)
            .with_text(format!("a roster item is in at most {} groups", limits.max_groups)));
    }
    if name.as_ref().is_some_and(|n| n.len() > limits.max_text) {
        return Err(StanzaError::new(Condition::NotAcceptable)
            .with_text(format!("a roster item's name is at most {} bytes long", limits.max_text)));
    }
    Ok(Change::Update { jid, name, groups })
}

impl Roster {
    /// A roster push from someone else is never delivered (SECURITY.md T24): RFC 6121 §2.1.6
    /// tells clients to ignore it, but not every client checks, and a forged push could add or
    /// rename contacts in a careless one. Answered like an IQ nobody handles.
    async fn forged_push(self: Arc<Self>, ctx: Ctx, stanza: Stanza) -> Flow {
        if !forged_push(&stanza) {
            return Flow::Continue(stanza);
        }
        crate::router::bounce(&ctx, &stanza, StanzaError::service_unavailable()).await;
        Flow::Handled
    }

    async fn get(self: Arc<Self>, ctx: Ctx, req: IqRequest) -> IqResult {
        // RFC 6121 §2.1.3: only the account itself reads its roster.
        if !req.from_self() {
            return Err(StanzaError::forbidden());
        }
        let owner = req.to.to_bare();
        if let Ok(full) = req.from.clone().try_into_full() {
            ctx.core.sessions.with_state(&full, |s| s.interested = true);
        }
        let roster = ctx.core.rosters.get(&owner, ctx.core.sessions.has_sessions(&owner)).await?;
        let version = roster.version.to_string();
        // XEP-0237 §3: the client's version is current, so nothing changed: empty result.
        if req.payload().attr("ver") == Some(version.as_str()) {
            return Ok(None);
        }
        let mut query = xml::element("query", ns::ROSTER, &[("ver", &version)]);
        for item in &roster.items {
            query.append_child(item_element(item, false));
        }
        Ok(Some(query))
    }

    async fn set(self: Arc<Self>, ctx: Ctx, req: IqRequest) -> IqResult {
        if !req.from_self() {
            return Err(StanzaError::forbidden());
        }
        let owner = req.to.to_bare();
        let core = &ctx.core;
        match parse_set(req.payload(), self.limits)? {
            Change::Update { jid, name, groups } => {
                let _guard = core.delivery_lock(&owner).await;
                let mut item = core.rosters.item(&owner, &jid).await?.unwrap_or_else(|| RosterItem::new(jid));
                // Subscription state and `ask` change only through presence (§2.1.2.5).
                item.name = name;
                item.groups = groups;
                // A new item in a full roster: <resource-constraint/> naming the limit.
                let version = core.rosters.put(&owner, item.clone()).await?;
                core.rosters.push(&core.sessions, &owner, &item, false, version);
                Ok(None)
            }
            Change::Remove(jid) => {
                let (item, version, had_pending) = {
                    let _guard = core.delivery_lock(&owner).await;
                    let Some(item) = core.rosters.item(&owner, &jid).await? else {
                        return Err(StanzaError::item_not_found());
                    };
                    let had_pending = core.rosters.store().clear_pending_in(&owner, &jid).await?;
                    let version = core.rosters.remove(&owner, &jid).await?.unwrap_or_default();
                    (item, version, had_pending)
                };
                core.rosters.push(&core.sessions, &owner, &item, true, version);
                // §2.5.2: removing a contact cancels the subscriptions in both directions.
                let me = Jid::from(owner.clone());
                let contact = Jid::from(jid.clone());
                if item.subscription.has_to() || item.ask {
                    ctx.send(subscription(PresenceType::Unsubscribe, &me, &contact)).await;
                }
                if item.subscription.has_from() || had_pending {
                    ctx.send(subscription(PresenceType::Unsubscribed, &me, &contact)).await;
                }
                if item.subscription.has_from() {
                    for r in core.sessions.resources(&owner).into_iter().filter(|r| r.available) {
                        let mut el = Element::bare("presence", ns::CLIENT);
                        xml::set_attr(&mut el, "type", "unavailable");
                        ctx.send(Stanza::new(el, Jid::from(r.jid), contact.clone())).await;
                    }
                }
                Ok(None)
            }
        }
    }
}

fn subscription(kind: PresenceType, from: &Jid, to: &Jid) -> Stanza {
    let mut el = Element::bare("presence", ns::CLIENT);
    xml::set_attr(&mut el, "type", kind.as_str().unwrap_or_default());
    Stanza::new(el, from.clone(), to.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ItemLimits = ItemLimits { max_text: 8, max_groups: 2 };

    fn parse(x: &str) -> Result<Change, StanzaError> {
        parse_set(&xml::parse_element(&format!("<query xmlns='jabber:iq:roster'>{x}</query>")).unwrap(), LIMITS)
    }

    #[test]
    fn roster_set_validation() {
        assert!(matches!(parse("<item jid='a@b' name='A'><group>G</group><group>H</group></item>"),
            Ok(Change::Update { ref groups, ref name, .. }) if groups == &["G", "H"] && name.as_deref() == Some("A")));
        assert!(matches!(parse("<item jid='a@b' subscription='remove'/>"), Ok(Change::Remove(_))));
        let condition = |x: &str| parse(x).err().map(|e| e.condition);
        assert_eq!(condition(""), Some(Condition::BadRequest));
        assert_eq!(condition("<item jid='a@b'/><item jid='c@d'/>"), Some(Condition::BadRequest));
        assert_eq!(condition("<item jid='a@b/r'/>"), Some(Condition::BadRequest));
        assert_eq!(condition("<item jid='@@'/>"), Some(Condition::JidMalformed));
        assert_eq!(condition("<item jid='a@b'><group></group></item>"), Some(Condition::NotAcceptable));
        assert_eq!(condition("<item jid='a@b'><group>G</group><group>G</group></item>"), Some(Condition::BadRequest));
    }

    /// Each limit on an item is refused with not-acceptable, and its text names the limit;
    /// exactly at the limit is fine. Sizes are bytes, not characters.
    #[test]
    fn item_limits() {
        let error = |x: &str| parse(x).err().map(|e| (e.condition, e.text.unwrap_or_default()));
        assert!(parse("<item jid='a@b' name='12345678'><group>12345678</group><group>x</group></item>").is_ok());
        assert_eq!(error("<item jid='a@b' name='123456789'/>"), Some((Condition::NotAcceptable, "a roster item's name is at most 8 bytes long".into())));
        assert_eq!(error("<item jid='a@b' name='ééééé'/>").map(|e| e.0), Some(Condition::NotAcceptable));
        assert_eq!(error("<item jid='a@b'><group>123456789</group></item>"), Some((Condition::NotAcceptable, "a group name is at most 8 bytes long".into())));
        assert_eq!(error("<item jid='a@b'><group>a</group><group>b</group><group>c</group></item>"), Some((Condition::NotAcceptable, "a roster item is in at most 2 groups".into())));
    }
}
