//! Private XML storage (XEP-0049): an account stores elements for itself, by namespace,
//! within a byte quota for all of them together (`[private] max_bytes_per_user`).

use std::sync::Arc;

use crate::xml::Element;

use super::{ChangedData, Ctx, DataChange, Deps, IqRequest, IqResult, Module, Registrar, Scope};
use crate::stanza::{Condition, IqType, StanzaError};
use crate::storage::PrivateStore;
use crate::xml::{self, ns};

pub struct PrivateXml {
    store: PrivateStore,
}

impl Module for PrivateXml {
    const NAME: &'static str = "private";

    fn build(deps: &Deps) -> Self {
        PrivateXml { store: deps.db.private().with_max_bytes(deps.config.private.max_bytes_per_user) }
    }

    fn register(self: Arc<Self>, reg: &mut Registrar) {
        reg.iq(Scope::Account, IqType::Get, "query", ns::PRIVATE, &self, Self::get);
        reg.iq(Scope::Account, IqType::Set, "query", ns::PRIVATE, &self, Self::set);
    }
}

/// §3: the children of the query; each must be in a namespace of its own, and not in
/// `jabber:iq:private` (nor any other `jabber:` namespace).
fn children(query: &Element) -> Result<Vec<(&Element, &str)>, StanzaError> {
    let mut out = Vec::new();
    for child in query.children() {
        let ns = child.ns();
        if ns.is_empty() || ns.starts_with("jabber:") {
            return Err(StanzaError::new(Condition::NotAcceptable).with_text("that namespace cannot be stored"));
        }
        out.push((child, ns));
    }
    if out.is_empty() {
        return Err(StanzaError::new(Condition::NotAcceptable).with_text("nothing to store or retrieve"));
    }
    Ok(out)
}

impl PrivateXml {
    async fn get(self: Arc<Self>, _: Ctx, req: IqRequest) -> IqResult {
        // §3: only the account itself; anyone else is refused.
        if !req.from_self() {
            return Err(StanzaError::forbidden());
        }
        let owner = req.to.to_bare();
        let wanted = children(req.payload())?;
        if wanted.len() != 1 {
            return Err(StanzaError::new(Condition::NotAcceptable).with_text("retrieve one namespace at a time"));
        }
        let (child, ns) = &wanted[0];
        let stored = match self.store.get(&owner, ns).await? {
            Some(text) => xml::parse_element(&text).map_err(|_| StanzaError::internal())?,
            // Nothing stored: the empty element that was asked for.
            None => Element::bare(child.name(), child.namespace()),
        };
        let mut query = Element::bare("query", ns::PRIVATE);
        query.append_child(stored);
        Ok(Some(query))
    }

    async fn set(self: Arc<Self>, ctx: Ctx, req: IqRequest) -> IqResult {
        if !req.from_self() {
            return Err(StanzaError::forbidden());
        }
        let owner = req.to.to_bare();
        let stored = children(req.payload())?;
        let elements: Vec<(String, String)> = stored.iter().map(|(child, ns)| (ns.to_string(), xml::to_string(child))).collect();
        {
            // One set at a time per account, so that the quota is checked against a total
            // that no concurrent set changes. Past the quota: <resource-constraint/> with its
            // size (XEP-0049 names no condition for it).
            let _guard = ctx.core.delivery_lock(&owner).await;
            self.store.set(&owner, &elements).await?;
        }
        // Modules that keep copies (XEP-0411: legacy bookmarks in PEP) follow.
        for (child, _) in stored {
            let change = DataChange { owner: owner.clone(), data: ChangedData::PrivateXml(child.clone()) };
            ctx.core.modules.data_changed(&ctx, change).await;
        }
        Ok(None)
    }
}
