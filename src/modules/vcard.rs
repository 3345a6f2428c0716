//! vcard-temp (XEP-0054): each account stores one vCard, of at most `[vcard] max_bytes`;
//! anyone may read it.

use std::sync::Arc;

use crate::xml::Element;

use super::{ChangedData, Ctx, DataChange, Deps, IqRequest, IqResult, Module, Registrar, Scope};
use crate::stanza::{Condition, IqType, StanzaError};
use crate::storage::VcardStore;
use crate::xml::{self, ns};

pub struct VcardTemp {
    store: VcardStore,
    /// Largest vCard stored, serialised.
    max_bytes: usize,
}

impl Module for VcardTemp {
    const NAME: &'static str = "vcard";

    fn build(deps: &Deps) -> Self {
        VcardTemp { store: deps.db.vcard(), max_bytes: deps.config.vcard.max_bytes }
    }

    fn register(self: Arc<Self>, reg: &mut Registrar) {
        reg.iq(Scope::Account, IqType::Get, "vCard", ns::VCARD, &self, Self::get);
        reg.iq(Scope::Account, IqType::Set, "vCard", ns::VCARD, &self, Self::set);
    }
}

impl VcardTemp {
    /// §3.1 / §3.3: the stored vCard, or an empty one (so clients need not special-case).
    async fn get(self: Arc<Self>, _: Ctx, req: IqRequest) -> IqResult {
        match self.store.get(&req.to.to_bare()).await? {
            Some(text) => match xml::parse_element(&text) {
                Ok(el) => Ok(Some(el)),
                Err(e) => {
                    tracing::error!(error = %e, "unreadable stored vCard");
                    Err(StanzaError::internal())
                }
            },
            None => Ok(Some(Element::bare("vCard", ns::VCARD))),
        }
    }

    /// §3.2: only the account itself may publish its vCard.
    async fn set(self: Arc<Self>, ctx: Ctx, req: IqRequest) -> IqResult {
        if !req.from_self() {
            return Err(StanzaError::forbidden());
        }
        let vcard = xml::to_string(req.payload());
        // The vCard itself is too large, as a publish whose payload exceeds a limit
        // (XEP-0060 §7.1.3.4): <not-acceptable/>, with the limit. What counts is what would
        // be stored and served to every reader, not the stanza as it came in.
        if vcard.len() > self.max_bytes {
            return Err(StanzaError::new(Condition::NotAcceptable)
                .with_text(format!("a vCard is at most {} bytes (this one is {})", self.max_bytes, vcard.len())));
        }
        let owner = req.to.to_bare();
        self.store.set(&owner, &vcard).await?;
        // Modules that keep copies (XEP-0398: the photo as a PEP avatar) follow.
        let change = DataChange { owner, data: ChangedData::Vcard(req.payload().clone()) };
        ctx.core.modules.data_changed(&ctx, change).await;
        Ok(None)
    }
}
