//! Last activity (XEP-0012): the server's uptime, and when an account was last online.

use std::sync::Arc;

use crate::xml::Element;

use super::{Ctx, Deps, IqRequest, IqResult, Module, Registrar, Scope, SessionEvent, SessionHook};
use crate::stanza::{IqType, StanzaError};
use crate::storage::{LastActivity as Record, LastActivityStore, now_unix};
use crate::xml::{self, ns};

pub struct LastActivity {
    store: LastActivityStore,
}

impl Module for LastActivity {
    const NAME: &'static str = "last";

    fn build(deps: &Deps) -> Self {
        LastActivity { store: deps.db.last_activity() }
    }

    fn register(self: Arc<Self>, reg: &mut Registrar) {
        reg.iq(Scope::Server, IqType::Get, "query", ns::LAST, &self, Self::uptime);
        reg.iq(Scope::Account, IqType::Get, "query", ns::LAST, &self, Self::account);
        reg.session_hook(SessionHook::Closed, 0, &self, Self::record);
    }
}

fn query(seconds: i64, status: &str) -> Element {
    let mut el = xml::element("query", ns::LAST, &[("seconds", &seconds.max(0).to_string())]);
    if !status.is_empty() {
        el.append_text(status);
    }
    el
}

impl LastActivity {
    /// §4: to a server, the time since it started.
    async fn uptime(self: Arc<Self>, ctx: Ctx, _: IqRequest) -> IqResult {
        Ok(Some(query(ctx.core.started.elapsed().as_secs() as i64, "")))
    }

    /// §3: to an account, how long since it was last online; only for the account itself
    /// and contacts subscribed to its presence.
    async fn account(self: Arc<Self>, ctx: Ctx, req: IqRequest) -> IqResult {
        let owner = req.to.to_bare();
        if !req.from_self() {
            let item = ctx.core.rosters.item(&owner, &req.from.to_bare()).await?;
            if !item.is_some_and(|i| i.subscription.has_from()) {
                return Err(StanzaError::forbidden());
            }
        }
        if ctx.core.sessions.has_available(&owner) {
            return Ok(Some(query(0, "")));
        }
        match self.store.get(&owner).await? {
            Some(r) => Ok(Some(query(now_unix() - r.at, &r.status))),
            None => Err(StanzaError::item_not_found()),
        }
    }

    async fn record(self: Arc<Self>, _: Ctx, event: SessionEvent) {
        if !event.last_session {
            return;
        }
        let status = event
            .state
            .and_then(|s| s.last)
            .and_then(|text| crate::xml::parse_element(&text).ok())
            .and_then(|p| p.get_child("status", ns::CLIENT).map(|s| s.text()))
            .unwrap_or_default();
        let record = Record { at: now_unix(), status };
        if let Err(e) = self.store.set(&event.jid.to_bare(), &record).await {
            tracing::error!(error = %e, "cannot record last activity");
        }
    }
}
