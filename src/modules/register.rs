//! In-band registration (XEP-0077): creating accounts before login when enabled (off by
//! default), and for logged-in users, changing the password (§3.3) or removing the account
//! (§3.2), addressed to the domain as the XEP's examples are, or with no `to` (the account
//! itself).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jid::BareJid;

use crate::xml::Element;

use super::{Ctx, Deps, IqRequest, IqResult, Module, PreAuthIq, Registrar, Scope, Stage};
use crate::auth;
use crate::stanza::{Condition, ErrorType, IqType, StanzaError};
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
        // The host is the domain (the XEP's examples address it); no `to` means the
        // account itself, which is the same registration.
        for scope in [Scope::Server, Scope::Account] {
            reg.iq(scope, IqType::Get, "query", ns::REGISTER, &self, Self::get);
            reg.iq(scope, IqType::Set, "query", ns::REGISTER, &self, Self::set);
        }
    }
}

fn field(query: &Element, name: &str) -> Option<String> {
    query.get_child(name, ns::REGISTER).map(|e| e.text())
}

/// §3.2 "Failed Cancellation (Forbidden)": the sender may not act on this registration
/// (the XEP's example gives the type `cancel`).
fn forbidden(text: &str) -> StanzaError {
    StanzaError::forbidden().with_type(ErrorType::Cancel).with_text(text)
}

/// §3.2 registration-required: the sender has no registration with this host.
fn not_registered() -> StanzaError {
    StanzaError::new(Condition::RegistrationRequired).with_text("you have no account on this domain")
}

/// The registration an IQ is about. The host identifies the entity by its `from` (§3.2):
/// the sender's own account, whether the IQ is addressed to that account or to its domain.
/// Another account: forbidden. `None`: another domain served here, where the sender has no
/// account.
fn own_account(req: &IqRequest) -> Result<Option<BareJid>, StanzaError> {
    let sender = req.from.to_bare();
    if req.to.node().is_some() {
        return match req.from_self() {
            true => Ok(Some(sender)),
            false => Err(forbidden("not your account")),
        };
    }
    Ok((req.to.domain() == sender.domain()).then_some(sender))
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
            // §3.2 error cases: no `from`, because the entity is not registered here.
            return Err(StanzaError::new(Condition::UnexpectedRequest).with_text("not logged in: there is no registration to cancel"));
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

    /// §3.1 for an entity that is registered: `<registered/>` and what is on file (the
    /// password element empty: it is never stored in clear).
    async fn get(self: Arc<Self>, _: Ctx, req: IqRequest) -> IqResult {
        // Another domain: no account there, and none can be created in-band after login.
        let Some(owner) = own_account(&req)? else { return Err(StanzaError::service_unavailable()) };
        let mut query = Element::bare("query", ns::REGISTER);
        query.append_child(xml::text_element(
            "instructions",
            ns::REGISTER,
            "You are registered. To change your password, send your username and a new password; to cancel the registration, send <remove/>.",
        ));
        query.append_child(Element::bare("registered", ns::REGISTER));
        let username = owner.node().map(|n| n.as_str()).unwrap_or_default();
        query.append_child(xml::text_element("username", ns::REGISTER, username));
        query.append_child(Element::bare("password", ns::REGISTER));
        Ok(Some(query))
    }

    /// §3.3 password change and §3.2 cancellation, for the sender's own account only.
    async fn set(self: Arc<Self>, ctx: Ctx, req: IqRequest) -> IqResult {
        let Some(owner) = own_account(&req)? else { return Err(not_registered()) };
        let query = req.payload();
        if query.has_child("remove", ns::REGISTER) {
            // §3.2: "<remove/> was not the only child element" is a bad request.
            if query.children().count() != 1 {
                return Err(StanzaError::bad_request("<remove/> must be the only child"));
            }
            // The same deletion as `starling user del`: the account's data, its contacts'
            // rosters (they are told), its sessions (a not-authorized stream error, §3.2,
            // after this result: the close request reaches this session once the handler
            // has returned, and the result is written ahead of the stream error).
            if !crate::accounts::delete_account(&ctx.core, &owner).await? {
                // Removed meanwhile (another session, the CLI).
                return Err(not_registered());
            }
            tracing::info!(jid = %owner, "account removed in-band");
            return Ok(None);
        }
        // §3.3 error cases: incomplete information is a bad request (as is a data form: we
        // never offer one, see the module's page in xeps/). The original XML, which holds
        // the password, is not echoed in errors (the router never copies IQ payloads).
        let (Some(username), Some(password)) = (field(query, "username"), field(query, "password")) else {
            return Err(StanzaError::bad_request("username and password are required"));
        };
        if auth::account_for(&username, owner.domain().as_str()).as_ref() != Some(&owner) {
            return Err(forbidden("that is not your username"));
        }
        // §3.3: an empty password MUST NOT replace the existing one.
        if password.is_empty() {
            return Err(StanzaError::bad_request("the password is empty"));
        }
        let credentials = auth::derive_credentials(password, self.iterations)
            .await
            .map_err(|e| StanzaError::new(Condition::NotAcceptable).with_text(e.to_string()))?;
        if !self.accounts.set_credentials(&owner, &credentials).await? {
            return Err(not_registered());
        }
        tracing::info!(jid = %owner, "password changed in-band");
        Ok(None)
    }
}
