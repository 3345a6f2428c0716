//! Service discovery (XEP-0030) for the server and for accounts, and the server's entity
//! capabilities (XEP-0115). Features come from what the modules registered.

use std::sync::Arc;

use base64::Engine;
use crate::xml::Element;
use sha1::{Digest, Sha1};

use super::{Ctx, Deps, DiscoRequest, IqRequest, IqResult, Module, ModuleTable, Registrar, Scope};
use crate::stanza::{IqType, StanzaError};
use crate::xml::{self, ns};

/// The XEP-0115 node naming this software.
pub const CAPS_NODE: &str = "https://github.com/starling-xmpp/starling";

pub struct Disco;

impl Module for Disco {
    const NAME: &'static str = "disco";

    fn build(_: &Deps) -> Self {
        Disco
    }

    fn register(self: Arc<Self>, reg: &mut Registrar) {
        for scope in [Scope::Server, Scope::Account] {
            reg.iq(scope, IqType::Get, "query", ns::DISCO_INFO, &self, Self::info);
            reg.iq(scope, IqType::Get, "query", ns::DISCO_ITEMS, &self, Self::items);
        }
        reg.identity(Scope::Server, "server", "im", "Starling");
        reg.identity(Scope::Account, "account", "registered", "");
    }
}

/// The features shown for a scope: the server offers everything accounts get too.
fn features(table: &ModuleTable, scope: Scope) -> Vec<&'static str> {
    let mut f = table.features(scope);
    if scope == Scope::Server {
        f.extend(table.features(Scope::Account));
        f.sort_unstable();
        f.dedup();
    }
    f
}

fn info_element(table: &ModuleTable, scope: Scope, node: Option<&str>) -> Element {
    let mut query = Element::bare("query", ns::DISCO_INFO);
    if let Some(node) = node {
        xml::set_attr(&mut query, "node", node);
    }
    for id in table.identities(scope) {
        let mut el = xml::element("identity", ns::DISCO_INFO, &[("category", id.category), ("type", id.kind)]);
        if !id.name.is_empty() {
            xml::set_attr(&mut el, "name", id.name);
        }
        query.append_child(el);
    }
    for var in features(table, scope) {
        query.append_child(xml::element("feature", ns::DISCO_INFO, &[("var", var)]));
    }
    query
}

/// XEP-0115 §5.1 verification string of the server's disco#info, SHA-1, base64.
pub fn caps_ver(table: &ModuleTable) -> String {
    let mut ids: Vec<String> = table
        .identities(Scope::Server)
        .iter()
        .map(|i| format!("{}/{}//{}", i.category, i.kind, i.name))
        .collect();
    ids.sort();
    let mut s = String::new();
    for id in ids {
        s.push_str(&id);
        s.push('<');
    }
    for var in features(table, Scope::Server) {
        s.push_str(var);
        s.push('<');
    }
    base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes()))
}

/// The `<c/>` stream feature (XEP-0115 §6.3).
pub fn caps_element(table: &ModuleTable) -> Element {
    xml::element("c", ns::CAPS, &[("hash", "sha-1"), ("node", CAPS_NODE), ("ver", &caps_ver(table))])
}

impl Disco {
    async fn info(self: Arc<Self>, ctx: Ctx, req: IqRequest) -> IqResult {
        let table = &ctx.core.modules;
        let node = req.payload().attr("node");
        if req.to.node().is_none() {
            return match node {
                None => Ok(Some(info_element(table, Scope::Server, None))),
                Some(n) if n == format!("{CAPS_NODE}#{}", caps_ver(table)) => Ok(Some(info_element(table, Scope::Server, Some(n)))),
                Some(_) => Err(StanzaError::item_not_found()),
            };
        }
        check_account_access(&ctx, &req).await?;
        let Some(node) = node else { return Ok(Some(info_element(table, Scope::Account, None))) };
        // A node of the account (a PEP node): the module that has it answers.
        let found = table.account_disco(&ctx, account_request(&req, Some(node), false)).await?;
        let Some(children) = found else { return Err(StanzaError::item_not_found()) };
        let mut query = xml::element("query", ns::DISCO_INFO, &[("node", node)]);
        for child in children {
            query.append_child(child);
        }
        Ok(Some(query))
    }

    async fn items(self: Arc<Self>, ctx: Ctx, req: IqRequest) -> IqResult {
        let node = req.payload().attr("node");
        if req.to.node().is_none() {
            if node.is_some() {
                return Err(StanzaError::item_not_found());
            }
            // The services on subdomains of this domain (the group chat service).
            let mut query = Element::bare("query", ns::DISCO_ITEMS);
            for (jid, name) in ctx.core.modules.services_under(req.to.domain().as_str()) {
                query.append_child(xml::element("item", ns::DISCO_ITEMS, &[("jid", jid), ("name", name)]));
            }
            // The external components (XEP-0114) on its subdomains that are connected now.
            for jid in ctx.core.components.connected_under(req.to.domain().as_str()) {
                query.append_child(xml::element("item", ns::DISCO_ITEMS, &[("jid", &jid)]));
            }
            return Ok(Some(query));
        }
        check_account_access(&ctx, &req).await?;
        // The account's items (its PEP nodes), or the items of one of its nodes.
        let found = ctx.core.modules.account_disco(&ctx, account_request(&req, node, true)).await?;
        if node.is_some() && found.is_none() {
            return Err(StanzaError::item_not_found());
        }
        let mut query = Element::bare("query", ns::DISCO_ITEMS);
        if let Some(node) = node {
            xml::set_attr(&mut query, "node", node);
        }
        for child in found.unwrap_or_default() {
            query.append_child(child);
        }
        Ok(Some(query))
    }
}

fn account_request(req: &IqRequest, node: Option<&str>, items: bool) -> DiscoRequest {
    DiscoRequest { from: req.from.clone(), account: req.to.to_bare(), node: node.map(str::to_string), items }
}

/// An account's disco is visible to itself and to contacts subscribed to its presence, as
/// in Prosody; others get the same answer as for an account that does not exist.
async fn check_account_access(ctx: &Ctx, req: &IqRequest) -> Result<(), StanzaError> {
    if req.from_self() {
        return Ok(());
    }
    let item = ctx.core.rosters.item(&req.to.to_bare(), &req.from.to_bare()).await?;
    if item.is_some_and(|i| i.subscription.has_from()) {
        Ok(())
    } else {
        Err(StanzaError::service_unavailable())
    }
}
