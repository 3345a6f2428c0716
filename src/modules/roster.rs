//! Roster management (RFC 6121 §2) with versioning (XEP-0237).

use std::sync::Arc;

use jid::{BareJid, Jid};
use crate::xml::Element;

use super::{Ctx, Deps, IqRequest, IqResult, Module, Registrar, Scope, Stage};
use crate::rosters::item_element;
use crate::stanza::{Condition, IqType, PresenceType, Stanza, StanzaError};
use crate::storage::RosterItem;
use crate::xml::{self, ns};

/// Longest name or group we accept, in bytes (RFC 6121 §2.3.3 lets servers set one).
const MAX_TEXT: usize = 1023;

pub struct Roster;

impl Module for Roster {
    const NAME: &'static str = "roster";

    fn build(_: &Deps) -> Self {
        Roster
    }

    fn register(self: Arc<Self>, reg: &mut Registrar) {
        reg.iq(Scope::Account, IqType::Get, "query", ns::ROSTER, &self, Self::get);
        reg.iq(Scope::Account, IqType::Set, "query", ns::ROSTER, &self, Self::set);
        // XEP-0237 §2: versioning is announced as a stream feature.
        reg.stream_feature(Stage::PostAuth, Element::bare("ver", ns::ROSTER_VER_FEATURE));
    }
}

/// A validated roster set.
enum Change {
    Update { jid: BareJid, name: Option<String>, groups: Vec<String> },
    Remove(BareJid),
}

fn parse_set(query: &Element) -> Result<Change, StanzaError> {
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
        if text.len() > MAX_TEXT {
            return Err(StanzaError::new(Condition::NotAcceptable).with_text("group name too long"));
        }
        // RFC 6121 §2.3.3: duplicate groups are a bad request, not something to tidy up.
        if groups.contains(&text) {
            return Err(StanzaError::bad_request("duplicate group"));
        }
        groups.push(text);
    }
    if name.as_ref().is_some_and(|n| n.len() > MAX_TEXT) {
        return Err(StanzaError::new(Condition::NotAcceptable).with_text("name too long"));
    }
    Ok(Change::Update { jid, name, groups })
}

impl Roster {
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
        match parse_set(req.payload())? {
            Change::Update { jid, name, groups } => {
                let _guard = core.delivery_lock(&owner).await;
                let mut item = core.rosters.item(&owner, &jid).await?.unwrap_or_else(|| RosterItem::new(jid));
                // Subscription state and `ask` change only through presence (§2.1.2.5).
                item.name = name;
                item.groups = groups;
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

    fn parse(x: &str) -> Result<Change, StanzaError> {
        parse_set(&xml::parse_element(&format!("<query xmlns='jabber:iq:roster'>{x}</query>")).unwrap())
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
}
