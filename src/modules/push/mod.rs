//! XEP-0357 Push Notifications, the XMPP server's side: an account's clients enable the push
//! service of their app's server (Conversations, Monal, Siskin), and when a message arrives
//! that the device's app does not take now, the server publishes a notification to that
//! service, which wakes the app through Google's or Apple's push.
//!
//! A registration is (account, service JID, node), with the publish options the client gave
//! (the app server's secret, and whatever else it wants: fields are passed through as they
//! came) and the resource of the client that enabled it: its device's session. Stored
//! (`storage::push`), and kept in memory for the accounts that are online.
//!
//! When a device is notified, per registration:
//! - its session waits for resumption (XEP-0198) or its client said it is inactive
//!   (XEP-0352): for each message worth it that the session is handed, told by the session
//!   itself ([`Sleep`]), and at the moment it starts to wait, for the messages it had not
//!   acknowledged;
//! - it has no session: for each message worth it routed to the account, whether other
//!   resources took it or none did (stored offline); as ejabberd and Prosody do, so that a
//!   phone learns of what a desktop got.
//!
//! Each message is looked at once per registration: a device with a session is told only
//! through that session, one without only through routing, and what a session that ended
//! hands back to routing (`Ctx::is_rerouting`) was looked at already.
//!
//! Worth a notification ([`summary`], in `notification.rs`): a chat or normal message from someone else with a
//! body, an encrypted payload (OMEMO, OpenPGP), a call proposal (XEP-0353) or a room
//! invitation; a carbon copy of a received one is judged by the message it carries. Not:
//! chat states, receipts and markers alone, groupchat messages (a room's traffic: one per
//! message to every occupant), headlines, errors, and what the account sent itself (sent
//! carbons, archive results).
//!
//! Bursts are coalesced: a registration gets at most one notification per
//! `[push] min_interval`; what arrives meanwhile goes out as one more when the time is up,
//! with `message-count` saying how many messages the device was told of since it was last
//! seen awake. An error from the app server disables the registration (§7.1), at once for a
//! definite refusal, after [`MAX_FAILURES`] in a row for a timeout or a temporary error.
//!
//! While a device can be woken, its session waiting for resumption is kept for
//! `[push] resume_timeout` instead of `c2s.resume_timeout` (ejabberd's mod_push_keepalive),
//! until a notification is sent for it: then the usual timeout runs from then.

mod notification;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use jid::{BareJid, FullJid, Jid};
use tokio::time::Instant;
use tracing::Instrument;

use super::{
    Asleep, ChangedData, Ctx, DataChange, Delivered, Deps, Flow, Hook, IqRequest, IqResult, Kinds, Module, Registrar, Scope, SessionEvent,
    SessionHook, Sleep, SleepEvent, SleepOutcome,
};
use crate::config::PushConfig;
use crate::core::Core;
use crate::stanza::{IqType, Stanza, StanzaError};
use crate::storage::{PushRegistration, PushStore};
use crate::xml::{self, Element, ns};
use notification::{Offer, PUBSUB, Summary, Throttle, Verdict, notification, verdict};
pub use notification::{MAX_BODY_BYTES, summary};

pub const PUSH: &str = "urn:xmpp:push:0";
const PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";

/// How long the app server has to answer a notification. Its domain is usually reached by
/// federation, and a link may first have to be set up (`s2s.connect_timeout`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeouts and temporary errors in a row after which a registration is disabled.
pub const MAX_FAILURES: u32 = 5;
/// The largest publish-options form kept, serialised: an app server's secret and a few
/// fields take a few hundred bytes.
pub const MAX_OPTIONS_BYTES: usize = 4096;
/// The longest node name taken.
pub const MAX_NODE_BYTES: usize = 1024;
/// Registrations whose notification state is kept; past this, states that have nothing
/// waiting and sent nothing for [`THROTTLE_IDLE`] are forgotten.
const MAX_THROTTLES: usize = 100_000;
const THROTTLE_IDLE: Duration = Duration::from_secs(3600);

pub struct Push {
    store: PushStore,
    config: PushConfig,
    /// The registrations of accounts with a connected session, by bare JID, only for those
    /// that have some: what routing asks for each message without the database. Loaded
    /// when a session binds, dropped when the account's last session ends; changed only
    /// under the account's delivery lock.
    online: DashMap<Box<str>, Arc<[PushRegistration]>>,
    throttles: Mutex<HashMap<Key, Throttle>>,
    /// Numbers the throttle states, so that a timer knows its state was reset meanwhile.
    generations: AtomicU64,
}

/// A registration: account, service, node.
type Key = (BareJid, String, String);

fn key_of(account: &BareJid, registration: &PushRegistration) -> Key {
    (account.clone(), registration.service.clone(), registration.node.clone())
}

impl Module for Push {
    const NAME: &'static str = "push";

    fn build(deps: &Deps) -> Self {
        Push {
            store: deps.db.push(),
            config: deps.config.push.clone(),
            online: DashMap::new(),
            throttles: Mutex::default(),
            generations: AtomicU64::new(1),
        }
    }

    fn register(self: Arc<Self>, reg: &mut Registrar) {
        // §5, §6: to the account's bare JID; §4.1: the feature shows in its disco#info.
        reg.iq(Scope::Account, IqType::Set, "enable", PUSH, &self, Self::enable);
        reg.iq(Scope::Account, IqType::Set, "disable", PUSH, &self, Self::disable);
        // Before offline storage (priority 0), which takes the message.
        reg.hook(Hook::MessageUndeliverable, Kinds::MESSAGE, 10, &self, Self::undeliverable);
        reg.delivered(-10, &self, |push, account| push.online.contains_key(account), Self::delivered);
        reg.hook_when(Hook::StanzaIn, Kinds::MESSAGE, 0, &self, |_, stanza| stanza.el.has_child("pubsub", PUBSUB), Self::remote_disable);
        reg.sleep_hook(&self, Self::has_device, Self::sleep);
        reg.session_hook(SessionHook::Bound, 0, &self, Self::bound);
        reg.session_hook(SessionHook::Closed, 0, &self, Self::closed);
        reg.data_hook(&self, Self::data_changed);
    }
}

/// §5 `<enable/>`: the push service, the node, and the publish options (a XEP-0004 form of
/// FORM_TYPE `…pubsub#publish-options`, kept whole, as `type='submit'`).
fn parse_enable(payload: &Element) -> Result<(Jid, String, Option<Element>), StanzaError> {
    let service = parse_service(payload)?;
    let node = match payload.attr("node") {
        Some(node) if !node.is_empty() => node.to_string(),
        _ => return Err(StanzaError::bad_request("'node' is required: the node the app server provisioned")),
    };
    if node.len() > MAX_NODE_BYTES {
        return Err(StanzaError::bad_request(format!("'node' takes at most {MAX_NODE_BYTES} bytes")));
    }
    let mut forms = payload.children().filter(|c| c.is("x", ns::DATA_FORMS));
    let options = forms.next().cloned();
    if forms.next().is_some() {
        return Err(StanzaError::bad_request("one publish-options form at most"));
    }
    let options = match options {
        None => None,
        Some(mut form) => {
            let form_type = form
                .children()
                .find(|f| f.is("field", ns::DATA_FORMS) && f.attr("var") == Some("FORM_TYPE"))
                .and_then(|f| f.get_child("value", ns::DATA_FORMS))
                .map(|v| v.text());
            if form_type.as_deref().map(str::trim) != Some(PUBLISH_OPTIONS) {
                return Err(StanzaError::bad_request(format!("the form's FORM_TYPE must be {PUBLISH_OPTIONS}")));
            }
            if !matches!(form.attr("type"), None | Some("submit")) {
                return Err(StanzaError::bad_request("the publish options are a submitted form (type='submit')"));
            }
            xml::set_attr(&mut form, "type", "submit");
            if xml::to_string(&form).len() > MAX_OPTIONS_BYTES {
                return Err(StanzaError::bad_request(format!("publish options take at most {MAX_OPTIONS_BYTES} bytes")));
            }
            Some(form)
        }
    };
    Ok((service, node, options))
}

fn parse_service(payload: &Element) -> Result<Jid, StanzaError> {
    match payload.attr("jid") {
        None | Some("") => Err(StanzaError::bad_request("'jid' is required: the push service's JID")),
        Some(jid) => Jid::new(jid).map_err(|_| StanzaError::bad_request(format!("'jid' is not a valid JID: {jid:?}"))),
    }
}

impl Push {
    /// The account's own client, from a full JID: anyone else is refused.
    fn requester(req: &IqRequest) -> Result<FullJid, StanzaError> {
        if !req.from_self() {
            return Err(StanzaError::forbidden().with_text("push notifications are enabled by the account's own clients"));
        }
        req.from.clone().try_into_full().map_err(|_| StanzaError::forbidden())
    }

    /// §5: enable (service, node) for the requesting client's device; enabling it again
    /// replaces the options (and the device).
    async fn enable(self: Arc<Self>, ctx: Ctx, req: IqRequest) -> IqResult {
        let device = Self::requester(&req)?;
        let (service, node, options) = parse_enable(req.payload())?;
        let account = device.to_bare();
        let registration = PushRegistration {
            service: service.to_string(),
            node,
            resource: device.resource().as_str().to_string(),
            options: options.as_ref().map(xml::to_string),
        };
        {
            let _lock = ctx.core.delivery_lock(&account).await;
            self.store.enable(&account, &registration, self.config.max_per_user).await?;
            self.refresh(&ctx.core, &account).await;
        }
        // A new start: nothing was told, nothing waits.
        self.throttles.lock().unwrap().remove(&key_of(&account, &registration));
        tracing::debug!(service = %registration.service, "push notifications enabled");
        Ok(None)
    }

    /// §6: disable every node of the service, or the one named. Disabling what is not
    /// enabled is no error.
    async fn disable(self: Arc<Self>, ctx: Ctx, req: IqRequest) -> IqResult {
        let device = Self::requester(&req)?;
        let service = parse_service(req.payload())?.to_string();
        let node = req.payload().attr("node").filter(|n| !n.is_empty());
        let account = device.to_bare();
        self.remove(&ctx.core, &account, &service, node).await?;
        tracing::debug!(%service, "push notifications disabled");
        Ok(None)
    }

    /// Remove registrations, from storage, memory and what waits to be sent (§6: no
    /// notification goes to a service that is not enabled).
    async fn remove(&self, core: &Core, account: &BareJid, service: &str, node: Option<&str>) -> crate::storage::Result<u64> {
        let removed = {
            let _lock = core.delivery_lock(account).await;
            let removed = self.store.disable(account, service, node).await?;
            self.refresh(core, account).await;
            removed
        };
        self.throttles
            .lock()
            .unwrap()
            .retain(|(a, s, n), _| !(a == account && s == service && node.is_none_or(|node| node == n)));
        Ok(removed)
    }

    /// Read the account's registrations again into memory if it is online (else drop
    /// them). Under the account's delivery lock.
    async fn refresh(&self, core: &Core, account: &BareJid) {
        if !core.sessions.has_sessions(account) {
            self.online.remove(account.as_str());
            return;
        }
        match self.store.list(account).await {
            Ok(list) if list.is_empty() => {
                self.online.remove(account.as_str());
            }
            Ok(list) => {
                self.online.insert(account.as_str().into(), list.into());
            }
            Err(e) => tracing::error!(error = %e, "cannot load push registrations"),
        }
    }

    /// A session bound: the account's registrations in memory, and the device is awake.
    async fn bound(self: Arc<Self>, ctx: Ctx, event: SessionEvent) {
        let account = event.jid.to_bare();
        {
            let _lock = ctx.core.delivery_lock(&account).await;
            self.refresh(&ctx.core, &account).await;
        }
        self.awake(&event.jid);
    }

    /// The account's last session ended: its registrations leave memory.
    async fn closed(self: Arc<Self>, ctx: Ctx, event: SessionEvent) {
        if !event.last_session {
            return;
        }
        let account = event.jid.to_bare();
        let _lock = ctx.core.delivery_lock(&account).await;
        if !ctx.core.sessions.has_sessions(&account) {
            self.online.remove(account.as_str());
        }
    }

    async fn data_changed(self: Arc<Self>, _ctx: Ctx, change: DataChange) {
        if matches!(change.data, ChangedData::AccountDeleted) {
            self.online.remove(change.owner.as_str());
            self.throttles.lock().unwrap().retain(|(a, _, _), _| *a != change.owner);
        }
    }

    /// The registrations of the device whose session is `jid` (only for an online account).
    /// Whether the device of session `jid` has a registration (no allocation: asked for
    /// every message written to an inactive client).
    fn has_device(&self, jid: &FullJid) -> bool {
        let resource = jid.resource().as_str();
        self.online.get(crate::stanza::bare_str(jid.as_str())).is_some_and(|list| list.iter().any(|r| r.resource == resource))
    }

    fn of_device(&self, jid: &FullJid) -> Vec<PushRegistration> {
        let account = jid.to_bare();
        let resource = jid.resource().as_str();
        match self.online.get(account.as_str()) {
            Some(list) => list.iter().filter(|r| r.resource == resource).cloned().collect(),
            None => Vec::new(),
        }
    }

    /// The device of session `jid` is awake: its counts start again, and what waits to be
    /// sent to it is not needed any more.
    fn awake(&self, jid: &FullJid) {
        let registrations = self.of_device(jid);
        if registrations.is_empty() {
            return;
        }
        let account = jid.to_bare();
        let mut throttles = self.throttles.lock().unwrap();
        for registration in &registrations {
            if let Some(t) = throttles.get_mut(&key_of(&account, registration)) {
                t.count = 0;
                t.waiting = None;
                t.generation = self.generations.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn summary_of(&self, message: &Element, account: &BareJid) -> Option<Summary> {
        summary(message, account, self.config.include_sender, self.config.include_body)
    }

    /// XEP-0198 / XEP-0352: a session's client fell asleep, was handed a message while
    /// asleep, or woke. Only the registrations of that session's device are concerned.
    async fn sleep(self: Arc<Self>, ctx: Ctx, event: Arc<SleepEvent>) -> SleepOutcome {
        if let Sleep::Woke = event.sleep {
            self.awake(&event.jid);
            return SleepOutcome::default();
        }
        let registrations = self.of_device(&event.jid);
        if registrations.is_empty() {
            return SleepOutcome::default();
        }
        let account = event.jid.to_bare();
        let (why, worth): (Asleep, Vec<Summary>) = match &event.sleep {
            Sleep::FellAsleep { why, pending } => (*why, pending.iter().filter_map(|m| self.summary_of(m, &account)).collect()),
            Sleep::Message { why, message } => (*why, self.summary_of(message, &account).into_iter().collect()),
            Sleep::Woke => unreachable!("handled above"),
        };
        let keep_for = match (&event.sleep, why) {
            (Sleep::FellAsleep { .. }, Asleep::Hibernating) if self.config.resume_timeout > 0 => {
                Some(Duration::from_secs(self.config.resume_timeout))
            }
            _ => None,
        };
        let Some(newest) = worth.last() else { return SleepOutcome { keep_for, notified: false } };
        for registration in &registrations {
            self.notify(&ctx.core, &account, registration, worth.len() as u32, newest.clone());
        }
        SleepOutcome { keep_for, notified: true }
    }

    /// A message some of the account's resources took: the devices without a session are
    /// told (those with one are told through it, or are awake). None took it: see
    /// [`Push::undeliverable`].
    async fn delivered(self: Arc<Self>, ctx: Ctx, delivered: Arc<Delivered>) {
        if ctx.is_rerouting() || delivered.to.is_empty() {
            return;
        }
        let account = delivered.stanza.to_or_self_bare();
        let Some(registrations) = self.online.get(account.as_str()).map(|r| r.clone()) else { return };
        let Some(summary) = self.summary_of(&delivered.stanza.el, &account) else { return };
        for registration in registrations.iter() {
            let connected = account.with_resource_str(&registration.resource).is_ok_and(|device| ctx.core.sessions.is_connected(&device));
            if !connected {
                self.notify(&ctx.core, &account, registration, 1, summary.clone());
            }
        }
    }

    /// A message no resource took (it goes to offline storage next): every device is told.
    /// Looked up here rather than apart, so that a sender's messages are notified in their
    /// order (the last one named is the last one sent); the storage hint answers without
    /// the database for the accounts that have no registration.
    async fn undeliverable(self: Arc<Self>, ctx: Ctx, stanza: Stanza) -> Flow {
        if ctx.is_rerouting() {
            return Flow::Continue(stanza);
        }
        let account = stanza.to_or_self_bare();
        let Some(summary) = self.summary_of(&stanza.el, &account) else { return Flow::Continue(stanza) };
        let registrations = match self.online.get(account.as_str()).map(|r| r.clone()) {
            Some(list) => list,
            None => match self.store.list(&account).await {
                Ok(list) => list.into(),
                Err(e) => {
                    tracing::error!(error = %e, "cannot load push registrations");
                    return Flow::Continue(stanza);
                }
            },
        };
        for registration in registrations.iter() {
            self.notify(&ctx.core, &account, registration, 1, summary.clone());
        }
        Flow::Continue(stanza)
    }

    /// §8 Remote Disabling: the push service took the account's affiliation away from a
    /// node (`none` or `outcast`) and says so: that registration goes.
    async fn remote_disable(self: Arc<Self>, ctx: Ctx, stanza: Stanza) -> Flow {
        let account = stanza.to_or_self_bare();
        let Some(pubsub) = stanza.el.get_child("pubsub", PUBSUB) else { return Flow::Continue(stanza) };
        let Some(node) = pubsub.attr("node") else { return Flow::Continue(stanza) };
        let revoked = pubsub.children().any(|a| {
            a.is("affiliation", PUBSUB)
                && a.attr("jid").and_then(|j| BareJid::new(j).ok()).as_ref() == Some(&account)
                && matches!(a.attr("affiliation"), Some("none" | "outcast"))
        });
        if !revoked {
            return Flow::Continue(stanza);
        }
        let service = stanza.from.to_string();
        let registered = match self.store.list(&account).await {
            Ok(list) => list.iter().any(|r| r.service == service && r.node == node),
            Err(e) => {
                tracing::error!(error = %e, "cannot load push registrations");
                false
            }
        };
        if !registered {
            return Flow::Continue(stanza);
        }
        match self.remove(&ctx.core, &account, &service, Some(node)).await {
            Ok(_) => tracing::info!(%service, "push service disabled notifications for an account"),
            Err(e) => tracing::error!(error = %e, "cannot remove a push registration"),
        }
        Flow::Handled
    }

    /// `messages` more for a registration, the newest summed up in `summary`: notify now,
    /// or once `min_interval` has passed since the last notification.
    fn notify(self: &Arc<Self>, core: &Core, account: &BareJid, registration: &PushRegistration, messages: u32, summary: Summary) {
        let key = key_of(account, registration);
        let now = Instant::now();
        let interval = Duration::from_secs(self.config.min_interval);
        let (offer, generation) = {
            let mut throttles = self.throttles.lock().unwrap();
            if throttles.len() >= MAX_THROTTLES && !throttles.contains_key(&key) {
                throttles.retain(|_, t| t.waiting.is_some() || t.last_sent.is_some_and(|at| now.duration_since(at) < THROTTLE_IDLE));
            }
            let generations = &self.generations;
            let throttle = throttles.entry(key.clone()).or_insert_with(|| Throttle::new(generations.fetch_add(1, Ordering::Relaxed)));
            (throttle.offer(now, interval, messages, registration, summary.clone()), throttle.generation)
        };
        match offer {
            Offer::SendNow(count) => {
                let push = self.clone();
                let (core2, account, registration) = (core.clone(), account.clone(), registration.clone());
                core.spawn(async move { push.send(core2, account, registration, count, summary).await }.instrument(tracing::Span::current()));
            }
            Offer::Coalesced => {}
            Offer::Schedule(due) => {
                let push = self.clone();
                let core2 = core.clone();
                core.spawn(
                    async move {
                        tokio::select! {
                            _ = tokio::time::sleep_until(due) => {}
                            _ = core2.shutdown.cancelled() => return,
                        }
                        let due = {
                            let mut throttles = push.throttles.lock().unwrap();
                            match throttles.get_mut(&key) {
                                Some(t) if t.generation == generation => t.take_due(Instant::now()),
                                _ => None,
                            }
                        };
                        if let Some((registration, summary, count)) = due {
                            push.send(core2, key.0, registration, count, summary).await;
                        }
                    }
                    .instrument(tracing::Span::current()),
                );
            }
        }
    }

    /// Publish one notification and act on the answer (§7.1).
    async fn send(self: Arc<Self>, core: Core, account: BareJid, registration: PushRegistration, count: u32, summary: Summary) {
        let Ok(service) = Jid::new(&registration.service) else { return };
        let request = notification(&account, &registration, service, count, &summary);
        let ctx = Ctx::new(core.clone());
        let result = tokio::select! {
            r = ctx.request(request, REQUEST_TIMEOUT) => r,
            _ = core.shutdown.cancelled() => return,
        };
        let key = key_of(&account, &registration);
        let disable = match verdict(&result) {
            Verdict::Accepted | Verdict::NotAsked => {
                if let Some(t) = self.throttles.lock().unwrap().get_mut(&key) {
                    t.failures = 0;
                }
                tracing::debug!(service = %registration.service, count, "push notification sent");
                None
            }
            Verdict::Transient(why) => {
                let failures = self.throttles.lock().unwrap().get_mut(&key).map_or(1, |t| {
                    t.failures += 1;
                    t.failures
                });
                tracing::info!(service = %registration.service, %why, failures, "push notification not delivered");
                (failures >= MAX_FAILURES).then(|| format!("{failures} failures in a row, the last: {why}"))
            }
            Verdict::Refused(why) => Some(why),
        };
        if let Some(why) = disable {
            tracing::info!(service = %registration.service, %why, "push registration disabled after an error from the app server");
            let removed = async {
                let _lock = core.delivery_lock(&account).await;
                // Only if it is still what was sent to: a client may have enabled it again
                // meanwhile, with new options.
                let removed = self.store.disable_if_unchanged(&account, &registration).await?;
                self.refresh(&core, &account).await;
                crate::storage::Result::Ok(removed)
            };
            match removed.await {
                Ok(true) => {
                    self.throttles.lock().unwrap().remove(&key);
                }
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "cannot remove a push registration"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stanza::Condition;

    fn parse(x: &str) -> Element {
        xml::parse_element(x).unwrap()
    }

    /// §5: jid and node are required; one form of the publish-options FORM_TYPE, kept with
    /// every field as it came.
    #[test]
    fn enable_requests() {
        let enable = |x: &str| parse_enable(&parse(x));
        let (service, node, options) =
            enable("<enable xmlns='urn:xmpp:push:0' jid='push-5.client.example' node='yxs32uqsflafdk3iuqo'/>").unwrap();
        assert_eq!((service.as_str(), node.as_str(), options), ("push-5.client.example", "yxs32uqsflafdk3iuqo", None));
        let (_, _, options) = enable(
            "<enable xmlns='urn:xmpp:push:0' jid='push-5.client.example' node='n'><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
             <field var='secret'><value>eruio234vzxc2kla-91</value></field><field var='endpoint'><value>https://e.example/x</value></field></x></enable>",
        )
        .unwrap();
        let options = options.unwrap();
        let vars: Vec<&str> = options.children().filter_map(|f| f.attr("var")).collect();
        assert_eq!(vars, ["FORM_TYPE", "secret", "endpoint"]);
        // Without a type, taken as submitted.
        let (_, _, options) = enable(
            "<enable xmlns='urn:xmpp:push:0' jid='p.example' node='n'><x xmlns='jabber:x:data'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field></x></enable>",
        )
        .unwrap();
        assert_eq!(options.unwrap().attr("type"), Some("submit"));
        let bad = |x: &str| enable(x).unwrap_err().condition;
        assert_eq!(bad("<enable xmlns='urn:xmpp:push:0' node='n'/>"), Condition::BadRequest);
        assert_eq!(bad("<enable xmlns='urn:xmpp:push:0' jid='' node='n'/>"), Condition::BadRequest);
        assert_eq!(bad("<enable xmlns='urn:xmpp:push:0' jid='a@b@c' node='n'/>"), Condition::BadRequest);
        assert_eq!(bad("<enable xmlns='urn:xmpp:push:0' jid='p.example'/>"), Condition::BadRequest);
        assert_eq!(bad(&format!("<enable xmlns='urn:xmpp:push:0' jid='p.example' node='{}'/>", "n".repeat(MAX_NODE_BYTES + 1))), Condition::BadRequest);
        assert_eq!(
            bad("<enable xmlns='urn:xmpp:push:0' jid='p.example' node='n'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:other</value></field></x></enable>"),
            Condition::BadRequest
        );
        assert_eq!(
            bad("<enable xmlns='urn:xmpp:push:0' jid='p.example' node='n'><x xmlns='jabber:x:data' type='submit'/></enable>"),
            Condition::BadRequest
        );
        let form = "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field></x>";
        assert_eq!(bad(&format!("<enable xmlns='urn:xmpp:push:0' jid='p.example' node='n'>{form}{form}</enable>")), Condition::BadRequest);
        let big = format!(
            "<enable xmlns='urn:xmpp:push:0' jid='p.example' node='n'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='secret'><value>{}</value></field></x></enable>",
            "s".repeat(MAX_OPTIONS_BYTES)
        );
        assert_eq!(bad(&big), Condition::BadRequest);
    }
}
