//! In-band registration (XEP-0077): creating accounts before login when enabled (off by
//! default), and for logged-in users, changing the password or removing the account.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::xml::Element;

use super::{Ctx, Deps, IqRequest, IqResult, Module, PreAuthIq, Registrar, Scope, Stage};
use crate::auth;
use crate::stanza::{Condition, IqType, StanzaError, StreamCondition, StreamError};
use crate::storage::{AccountStore, NewAccount};
use crate::xml::{self, ns};

/// One registration per address per this interval (XEP-0077 §9 asks for throttling);
/// loopback is exempt, as in Prosody.
const MIN_INTERVAL: Duration = Duration::from_secs(300);

pub struct Register {
    accounts: AccountStore,
    enabled: bool,
    iterations: u32,
    recent: Mutex<HashMap<IpAddr, Instant>>,
}

impl Module for Register {
    const NAME: &'static str = "register";

    fn build(deps: &Deps) -> Self {
        Register {
            accounts: deps.db.accounts(),
            enabled: deps.config.registration.enabled,
            iterations: deps.config.auth.scram_iterations,
            recent: Mutex::new(HashMap::new()),
        }
    }

    fn register(self: Arc<Self>, reg: &mut Registrar) {
        if self.enabled {
            reg.stream_feature(Stage::PreAuth, Element::bare("register", ns::REGISTER_FEATURE));
            reg.preauth_iq(ns::REGISTER, &self, Self::preauth);
        }
        reg.iq(Scope::Account, IqType::Get, "query", ns::REGISTER, &self, Self::get);
        reg.iq(Scope::Account, IqType::Set, "query", ns::REGISTER, &self, Self::set);
    }
}

fn field(query: &Element, name: &str) -> Option<String> {
    query.get_child(name, ns::REGISTER).map(|e| e.text())
}

impl Register {
    /// Before authentication: the form, and account creation.
    async fn preauth(self: Arc<Self>, _: Ctx, iq: PreAuthIq) -> IqResult {
        let query = &iq.payload;
        if !query.is("query", ns::REGISTER) {
            return Err(StanzaError::service_unavailable());
        }
        if iq.kind == IqType::Get {
            let mut form = Element::bare("query", ns::REGISTER);
            form.append_child(xml::text_element(
                "instructions",
                ns::REGISTER,
                "Choose a username and password to create an account on this server.",
            ));
            form.append_child(Element::bare("username", ns::REGISTER));
            form.append_child(Element::bare("password", ns::REGISTER));
            return Ok(Some(form));
        }
        if query.has_child("remove", ns::REGISTER) {
            return Err(StanzaError::not_allowed());
        }
        let (Some(username), Some(password)) = (field(query, "username"), field(query, "password")) else {
            return Err(StanzaError::new(Condition::NotAcceptable).with_text("username and password are required"));
        };
        let Some(jid) = auth::account_for(&username, &iq.domain).filter(|_| !username.contains('@')) else {
            return Err(StanzaError::new(Condition::NotAcceptable).with_text("that username is not allowed"));
        };
        if password.is_empty() {
            return Err(StanzaError::new(Condition::NotAcceptable).with_text("the password is empty"));
        }
        if let Some(ip) = iq.ip.filter(|ip| !ip.is_loopback()) {
            let mut recent = self.recent.lock().unwrap();
            recent.retain(|_, t| t.elapsed() < MIN_INTERVAL);
            if recent.contains_key(&ip) {
                return Err(StanzaError::new(Condition::ResourceConstraint).with_text("too many registrations, try later"));
            }
            recent.insert(ip, Instant::now());
        }
        let credentials = auth::derive_credentials(password, self.iterations)
            .await
            .map_err(|e| StanzaError::new(Condition::NotAcceptable).with_text(e.to_string()))?;
        if !self.accounts.create(&NewAccount { jid: jid.clone(), credentials }).await? {
            return Err(StanzaError::new(Condition::Conflict).with_text("that username is taken"));
        }
        tracing::info!(%jid, "account registered in-band");
        Ok(None)
    }

    /// §3.2.1-like: a logged-in user sees that it is registered.
    async fn get(self: Arc<Self>, _: Ctx, req: IqRequest) -> IqResult {
        if !req.from_self() {
            return Err(StanzaError::forbidden());
        }
        let mut query = Element::bare("query", ns::REGISTER);
        query.append_child(Element::bare("registered", ns::REGISTER));
        let username = req.to.node().map(|n| n.as_str()).unwrap_or_default();
        query.append_child(xml::text_element("username", ns::REGISTER, username));
        query.append_child(Element::bare("password", ns::REGISTER));
        Ok(Some(query))
    }

    /// §3.3 password change and §3.2 account removal.
    async fn set(self: Arc<Self>, ctx: Ctx, req: IqRequest) -> IqResult {
        if !req.from_self() {
            return Err(StanzaError::forbidden());
        }
        let owner = req.to.to_bare();
        let query = req.payload();
        if query.has_child("remove", ns::REGISTER) {
            if !self.accounts.delete(&owner).await? {
                return Err(StanzaError::item_not_found());
            }
            tracing::info!(jid = %owner, "account removed in-band");
            // The result is sent, then every session of the account ends.
            let core = ctx.core.clone();
            ctx.after_write(Box::pin(async move {
                core.sessions.close_all(&owner, StreamError::new(StreamCondition::NotAuthorized).with_text("account removed"));
            }));
            return Ok(None);
        }
        let (Some(username), Some(password)) = (field(query, "username"), field(query, "password")) else {
            return Err(StanzaError::bad_request("username and password are required"));
        };
        if auth::account_for(&username, owner.domain().as_str()).as_ref() != Some(&owner) {
            return Err(StanzaError::not_allowed().with_text("that is not your username"));
        }
        if password.is_empty() {
            return Err(StanzaError::new(Condition::NotAcceptable).with_text("the password is empty"));
        }
        let credentials = auth::derive_credentials(password, self.iterations)
            .await
            .map_err(|e| StanzaError::new(Condition::NotAcceptable).with_text(e.to_string()))?;
        if !self.accounts.set_credentials(&owner, &credentials).await? {
            return Err(StanzaError::item_not_found());
        }
        tracing::info!(jid = %owner, "password changed in-band");
        Ok(None)
    }
}
