//! Modules: one per XEP or RFC area, all listed in [`load`]. A module declares what it
//! handles through the [`Registrar`]; it never touches a socket and never imports another
//! module. IQ handlers return replies; hooks let modules cooperate through events.

pub mod blocking;
pub mod carbons;
pub mod disco;
pub mod last;
pub mod mam;
pub mod muc;
pub mod offline;
pub mod pep;
pub mod ping;
pub mod presence;
pub mod private;
pub mod push;
pub mod register;
pub mod roster;
pub mod time;
pub mod vcard;
pub mod version;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use jid::{FullJid, Jid};
use crate::xml::Element;

use crate::config::Config;
use crate::core::Core;
use crate::session::PresenceState;
use crate::stanza::{IqType, Kind, Stanza, StanzaError};
use crate::storage::Db;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A module: built once at start, then registered.
pub trait Module: Send + Sync + Sized + 'static {
    /// The name used in logs and in `[modules] disabled`.
    const NAME: &'static str;
    fn build(deps: &Deps) -> Self;
    fn register(self: Arc<Self>, reg: &mut Registrar);
}

/// What a module may use when it is built.
pub struct Deps {
    pub config: Arc<Config>,
    pub db: Db,
}

/// THE list of modules, in load order.
pub fn load(deps: &Deps) -> ModuleTable {
    let mut reg = Registrar::new(&deps.config.modules.disabled);
    reg.load::<disco::Disco>(deps);
    reg.load::<roster::Roster>(deps);
    reg.load::<presence::Presence>(deps);
    reg.load::<offline::Offline>(deps);
    reg.load::<mam::Mam>(deps);
    reg.load::<blocking::Blocking>(deps);
    reg.load::<carbons::Carbons>(deps);
    reg.load::<ping::Ping>(deps);
    reg.load::<version::Version>(deps);
    reg.load::<time::EntityTime>(deps);
    reg.load::<last::LastActivity>(deps);
    reg.load::<vcard::VcardTemp>(deps);
    reg.load::<private::PrivateXml>(deps);
    reg.load::<register::Register>(deps);
    reg.load::<pep::Pep>(deps);
    reg.load::<muc::Muc>(deps);
    reg.load::<push::Push>(deps);
    let mut table = reg.finish();
    // XEP-0115 §6.3: the server's own capabilities, hashed over everything registered.
    if table.loaded.contains(&disco::Disco::NAME) {
        let caps = disco::caps_element(&table);
        table.stream_features.push((Stage::PostAuth, caps));
    }
    table
}

/// Names of all modules, for `starling check` and config validation.
pub const NAMES: &[&str] = &[
    disco::Disco::NAME,
    roster::Roster::NAME,
    presence::Presence::NAME,
    offline::Offline::NAME,
    mam::Mam::NAME,
    blocking::Blocking::NAME,
    carbons::Carbons::NAME,
    ping::Ping::NAME,
    version::Version::NAME,
    time::EntityTime::NAME,
    last::LastActivity::NAME,
    vcard::VcardTemp::NAME,
    private::PrivateXml::NAME,
    register::Register::NAME,
    pep::Pep::NAME,
    muc::Muc::NAME,
    push::Push::NAME,
];

/// Who an IQ is addressed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// A served domain.
    Server,
    /// The bare JID of a local account (the sender's own, or another's).
    Account,
}

/// Points where modules can intercept stanzas, in a fixed order of routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// Any stanza sent by a local account (by its client or on its behalf), before routing.
    StanzaOut,
    /// Presence sent by a local client itself: broadcasts, directed presence, subscriptions.
    PresenceOut,
    /// Any stanza addressed to a local account, before delivery.
    StanzaIn,
    /// Presence addressed to a local account.
    PresenceIn,
    /// A message for an account that has no available resource to take it.
    MessageUndeliverable,
}

/// The kinds of stanza a hook looks at ([`Registrar::hook`]). The others pass it by without
/// a call: a call boxes the hook's future, and routing runs the hooks for every copy of a
/// room's broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kinds(u8);

impl Kinds {
    pub const MESSAGE: Kinds = Kinds(1);
    pub const PRESENCE: Kinds = Kinds(2);
    pub const IQ: Kinds = Kinds(4);
    pub const ALL: Kinds = Kinds(7);

    fn has(self, kind: Kind) -> bool {
        let bit = match kind {
            Kind::Message => Kinds::MESSAGE,
            Kind::Presence => Kinds::PRESENCE,
            Kind::Iq => Kinds::IQ,
        };
        self.0 & bit.0 != 0
    }
}

/// Session lifecycle events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionHook {
    /// A resource was bound.
    Bound,
    /// The resource became available with a non-negative priority, so that messages for
    /// the bare JID may go to it (XEP-0160 §3, RFC 6121 §8.5.2.1.1): its initial presence,
    /// or a later one raising a negative priority. Runs under the account's delivery lock;
    /// stanzas given to `Ctx::reply` are written before anything routed afterwards.
    InitialPresence,
    /// The session ended, cleanly or not.
    Closed,
}

/// A message routed to a local account, as it was handed to the account's resources (after
/// the `StanzaIn` hooks, so with whatever they stamped on it). `to` lists the full JIDs that
/// took it; it is empty when none did, and the message then goes on to
/// `Hook::MessageUndeliverable`. For modules that act on what was delivered and to whom
/// (XEP-0280 copies a message to the resources that did not get it). Not run for what the
/// offline flush delivers at login, nor for messages written straight to a session.
pub struct Delivered {
    pub stanza: Stanza,
    pub to: Vec<FullJid>,
}

/// What a stanza hook decided.
pub enum Flow {
    /// Carry on routing (possibly with a changed stanza).
    Continue(Stanza),
    /// The hook took care of it; routing stops.
    Handled,
}

pub struct SessionEvent {
    pub jid: FullJid,
    /// For `Closed`: the final presence state.
    pub state: Option<PresenceState>,
    /// For `Closed`: no other resource of the account is connected.
    pub last_session: bool,
}

/// Why a session's client does not read what it is sent right now (a phone with its app
/// asleep), for the modules that can wake it (XEP-0357 push).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asleep {
    /// Its connection was lost and the session waits to be resumed (XEP-0198).
    Hibernating,
    /// Its client said it is inactive (XEP-0352).
    Inactive,
}

/// A change in whether a session's client reads what it is sent (see
/// [`Registrar::sleep_hook`]).
#[derive(Debug)]
pub enum Sleep {
    /// The client fell asleep. `pending`: the messages written to it that it had not
    /// acknowledged (XEP-0198; it may never have got them) and that were not reported as
    /// [`Sleep::Message`] already, oldest first.
    FellAsleep { why: Asleep, pending: Vec<Element> },
    /// A message was handed to the sleeping client's session: queued while it hibernates,
    /// or written while it is inactive.
    Message { why: Asleep, message: Element },
    /// The client is back: it resumed its session, or became active.
    Woke,
}

#[derive(Debug)]
pub struct SleepEvent {
    pub jid: FullJid,
    pub sleep: Sleep,
}

/// What the modules made of a [`SleepEvent`], for the session.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SleepOutcome {
    /// The client's device can be woken from afar: a session waiting for resumption waits
    /// this long (from when it fell asleep) instead of `c2s.resume_timeout`, until
    /// `notified`.
    pub keep_for: Option<std::time::Duration>,
    /// The device was (or is about to be) notified: from now on the session waits no more
    /// than `c2s.resume_timeout`, as it would without the keep-alive (the device was asked
    /// to come back; if it does not, it is gone).
    pub notified: bool,
}

impl SleepOutcome {
    fn merge(self, other: SleepOutcome) -> SleepOutcome {
        SleepOutcome { keep_for: self.keep_for.max(other.keep_for), notified: self.notified || other.notified }
    }
}

/// An IQ get or set, addressed to the server or to an account.
pub struct IqRequest {
    pub stanza: Stanza,
    pub from: Jid,
    /// The domain (Server scope) or the account's bare JID (Account scope).
    pub to: Jid,
    pub kind: IqType,
}

impl IqRequest {
    pub fn payload(&self) -> &Element {
        self.stanza.payload().expect("validated: a get or set has one child")
    }

    /// Whether the sender is the account the IQ is addressed to.
    pub fn from_self(&self) -> bool {
        self.from.to_bare() == self.to.to_bare()
    }
}

pub type IqResult = Result<Option<Element>, StanzaError>;

/// An IQ received before authentication (XEP-0077 registration).
pub struct PreAuthIq {
    pub domain: String,
    /// The client's address, for throttling.
    pub ip: Option<std::net::IpAddr>,
    pub kind: IqType,
    pub payload: Element,
}

type IqHandler = Arc<dyn Fn(Ctx, IqRequest) -> BoxFuture<IqResult> + Send + Sync>;
type PreAuthHandler = Arc<dyn Fn(Ctx, PreAuthIq) -> BoxFuture<IqResult> + Send + Sync>;
type StanzaHookFn = Arc<dyn Fn(Ctx, Stanza) -> BoxFuture<Flow> + Send + Sync>;
type WantsFn = Arc<dyn Fn(&Stanza) -> bool + Send + Sync>;

/// One module's stanza hook: the stanza kinds it sees, and, if it says, a quick test of
/// whether it would act on a stanza at all (see [`Registrar::hook_when`]).
struct StanzaHook {
    kinds: Kinds,
    wants: Option<WantsFn>,
    run: StanzaHookFn,
}
type SessionHookFn = Arc<dyn Fn(Ctx, SessionEvent) -> BoxFuture<()> + Send + Sync>;
type SleepHookFn = Arc<dyn Fn(Ctx, Arc<SleepEvent>) -> BoxFuture<SleepOutcome> + Send + Sync>;
type SleepInterestFn = Arc<dyn Fn(&FullJid) -> bool + Send + Sync>;
/// A module's background task: runs from start until `core.shutdown` is cancelled.
pub type BackgroundTask = Arc<dyn Fn(Core) -> BoxFuture<()> + Send + Sync>;
type DeliveredHookFn = Arc<dyn Fn(Ctx, Arc<Delivered>) -> BoxFuture<()> + Send + Sync>;
/// Given an account's bare JID as text.
type DeliveryInterestFn = Arc<dyn Fn(&str) -> bool + Send + Sync>;
/// Takes every stanza addressed to a service's domain or to a JID under it.
pub type ServiceFn = Arc<dyn Fn(Ctx, Stanza) -> BoxFuture<()> + Send + Sync>;
type DataHookFn = Arc<dyn Fn(Ctx, DataChange) -> BoxFuture<()> + Send + Sync>;
type AccountDiscoFn = Arc<dyn Fn(Ctx, DiscoRequest) -> BoxFuture<Result<Option<Vec<Element>>, StanzaError>> + Send + Sync>;

/// Stored account data changed through the module that owns it, for modules that keep
/// copies of it in another form (XEP-0411 bookmarks in PEP from private XML, XEP-0398
/// avatars from the vCard). Announced after the change is committed; whoever keeps a
/// copy writes it through its own store, which announces nothing (no loops).
#[derive(Debug, Clone)]
pub struct DataChange {
    pub owner: jid::BareJid,
    pub data: ChangedData,
}

#[derive(Debug, Clone)]
pub enum ChangedData {
    /// XEP-0049: this element was stored in private XML storage.
    PrivateXml(Element),
    /// XEP-0054: this vCard was stored.
    Vcard(Element),
    /// The account was deleted, with everything stored for it (modules drop what they keep
    /// of it in memory: a room's affiliations).
    AccountDeleted,
}

/// A disco#info or disco#items query (XEP-0030) to an account's bare JID that the disco
/// module passes on to the modules that add to it (see [`Registrar::account_disco`]).
pub struct DiscoRequest {
    pub from: Jid,
    pub account: jid::BareJid,
    /// The `node` queried, if any.
    pub node: Option<String>,
    /// disco#items (else disco#info).
    pub items: bool,
}

/// When a stream feature is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Before authentication, after TLS (or without TLS if encryption is not required).
    PreAuth,
    /// After authentication, next to resource binding.
    PostAuth,
}

/// A disco#info identity (XEP-0030 §3.1).
#[derive(Debug, Clone)]
pub struct Identity {
    pub category: &'static str,
    pub kind: &'static str,
    pub name: &'static str,
}

struct IqEntry {
    scope: Scope,
    kind: IqType,
    name: &'static str,
    handler: IqHandler,
}

/// Everything the modules registered.
pub struct ModuleTable {
    iq: HashMap<&'static str, Vec<IqEntry>>,
    features: HashMap<Scope, Vec<&'static str>>,
    identities: HashMap<Scope, Vec<Identity>>,
    hooks: HashMap<Hook, Vec<StanzaHook>>,
    session_hooks: HashMap<SessionHook, Vec<SessionHookFn>>,
    /// Each with the test of whether it cares about a session at all, asked without
    /// waiting before an event is built (a copy of every message to an inactive client
    /// would otherwise be made for nothing).
    sleep_hooks: Vec<(SleepInterestFn, SleepHookFn)>,
    delivered: Vec<DeliveredHookFn>,
    delivery_interest: Vec<DeliveryInterestFn>,
    stream_features: Vec<(Stage, Element)>,
    account_disco: Vec<AccountDiscoFn>,
    data_hooks: Vec<DataHookFn>,
    preauth: HashMap<&'static str, PreAuthHandler>,
    background: Vec<BackgroundTask>,
    /// Services on their own domains (the XEP-0045 service on conference.<domain>), by domain.
    services: HashMap<String, Service>,
    loaded: Vec<&'static str>,
}

/// A service registered on a domain of its own (see [`Registrar::service`]).
#[derive(Clone)]
pub struct Service {
    /// The disco#items name of the service.
    pub name: &'static str,
    pub handler: ServiceFn,
}

impl ModuleTable {
    /// The service on `domain`, if one is registered there.
    pub fn service(&self, domain: &str) -> Option<&Service> {
        self.services.get(domain)
    }

    /// The services hosted under a served domain (its subdomains), for its disco#items:
    /// (domain, name), sorted.
    pub fn services_under(&self, domain: &str) -> Vec<(&str, &'static str)> {
        let mut found: Vec<(&str, &'static str)> = self
            .services
            .iter()
            .filter(|(d, _)| d.strip_suffix(domain).is_some_and(|head| head.ends_with('.')))
            .map(|(d, s)| (d.as_str(), s.name))
            .collect();
        found.sort_unstable();
        found
    }

    pub fn iq_handler(&self, scope: Scope, kind: IqType, name: &str, ns: &str) -> Option<IqHandler> {
        self.iq
            .get(ns)?
            .iter()
            .find(|e| e.scope == scope && e.kind == kind && e.name == name)
            .map(|e| e.handler.clone())
    }

    pub fn preauth_handler(&self, ns: &str) -> Option<PreAuthHandler> {
        self.preauth.get(ns).cloned()
    }

    /// The disco#info features of a scope, sorted and without duplicates.
    pub fn features(&self, scope: Scope) -> Vec<&'static str> {
        let mut f = self.features.get(&scope).cloned().unwrap_or_default();
        f.sort_unstable();
        f.dedup();
        f
    }

    pub fn identities(&self, scope: Scope) -> &[Identity] {
        self.identities.get(&scope).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn stream_features(&self, stage: Stage) -> impl Iterator<Item = &Element> {
        self.stream_features.iter().filter(move |(s, _)| *s == stage).map(|(_, e)| e)
    }

    pub fn loaded(&self) -> &[&'static str] {
        &self.loaded
    }

    /// The background tasks the modules registered; the server starts each once.
    pub fn background_tasks(&self) -> &[BackgroundTask] {
        &self.background
    }

    pub async fn run_hook(&self, hook: Hook, ctx: &Ctx, mut stanza: Stanza) -> Flow {
        if let Some(handlers) = self.hooks.get(&hook) {
            for h in handlers {
                if !h.kinds.has(stanza.kind) || h.wants.as_ref().is_some_and(|wants| !wants(&stanza)) {
                    continue;
                }
                match (h.run)(ctx.clone(), stanza).await {
                    Flow::Continue(s) => stanza = s,
                    Flow::Handled => return Flow::Handled,
                }
            }
        }
        Flow::Continue(stanza)
    }

    /// Whether a hook at `hook` would look at `stanza` (one without a `wants` test always
    /// would: see [`Registrar::hook_when`]).
    pub fn hooks_want(&self, hook: Hook, stanza: &Stanza) -> bool {
        self.hooks.get(&hook).is_some_and(|handlers| {
            handlers.iter().any(|h| h.kinds.has(stanza.kind) && h.wants.as_ref().is_none_or(|wants| wants(stanza)))
        })
    }

    /// Whether any module watches deliveries to `account` (so that routing keeps a copy of
    /// the stanza for them: a tree clone per message otherwise spent for nothing).
    pub fn watches_deliveries(&self, account: &str) -> bool {
        self.delivery_interest.iter().any(|interested| interested(account))
    }

    /// Tell the modules that watch deliveries what was delivered to whom (see [`Delivered`]).
    pub async fn run_delivered(&self, ctx: &Ctx, delivered: Delivered) {
        if self.delivered.is_empty() {
            return;
        }
        let delivered = Arc::new(delivered);
        for h in &self.delivered {
            h(ctx.clone(), delivered.clone()).await;
        }
    }

    /// What the modules add to a disco query to an account: for disco#items without a node,
    /// the items of all of them together; with a node, or for disco#info with a node, the
    /// answer of the first module that knows the node (`None`: none does).
    pub async fn account_disco(&self, ctx: &Ctx, req: DiscoRequest) -> Result<Option<Vec<Element>>, StanzaError> {
        let gather = req.items && req.node.is_none();
        let mut all: Option<Vec<Element>> = None;
        for provider in &self.account_disco {
            let part = DiscoRequest { from: req.from.clone(), account: req.account.clone(), node: req.node.clone(), items: req.items };
            match provider(ctx.clone(), part).await? {
                Some(found) if gather => all.get_or_insert_with(Vec::new).extend(found),
                Some(found) => return Ok(Some(found)),
                None => {}
            }
        }
        Ok(all)
    }

    /// Tell the modules that keep copies of account data that it changed.
    pub async fn data_changed(&self, ctx: &Ctx, change: DataChange) {
        for hook in &self.data_hooks {
            hook(ctx.clone(), change.clone()).await;
        }
    }

    /// Whether any module watches sessions fall asleep (so that a session copies the
    /// messages it is sent while asleep for them: a tree clone each otherwise spent for
    /// nothing).
    /// Whether a module wants to hear when the client of session `jid` sleeps.
    pub fn watches_sleep(&self, jid: &FullJid) -> bool {
        self.sleep_hooks.iter().any(|(wants, _)| wants(jid))
    }

    /// Tell the modules that a session's client fell asleep, was sent a message while
    /// asleep, or woke (see [`Sleep`]); their outcomes together.
    pub async fn run_sleep_hook(&self, ctx: &Ctx, jid: &FullJid, sleep: Sleep) -> SleepOutcome {
        let mut outcome = SleepOutcome::default();
        if !self.watches_sleep(jid) {
            return outcome;
        }
        let event = Arc::new(SleepEvent { jid: jid.clone(), sleep });
        for (wants, h) in &self.sleep_hooks {
            if wants(jid) {
                outcome = outcome.merge(h(ctx.clone(), event.clone()).await);
            }
        }
        outcome
    }

    pub async fn run_session_hook(&self, hook: SessionHook, ctx: &Ctx, jid: &FullJid, state: Option<PresenceState>, last_session: bool) {
        if let Some(handlers) = self.session_hooks.get(&hook) {
            for h in handlers {
                h(ctx.clone(), SessionEvent { jid: jid.clone(), state: state.clone(), last_session }).await;
            }
        }
    }
}

/// Collects registrations while modules load.
pub struct Registrar {
    table: ModuleTable,
    disabled: Vec<String>,
    hook_order: HashMap<Hook, Vec<(i32, StanzaHook)>>,
    session_order: HashMap<SessionHook, Vec<(i32, SessionHookFn)>>,
    delivered_order: Vec<(i32, DeliveredHookFn)>,
}

impl Registrar {
    fn new(disabled: &[String]) -> Self {
        Registrar {
            table: ModuleTable {
                iq: HashMap::new(),
                features: HashMap::new(),
                identities: HashMap::new(),
                hooks: HashMap::new(),
                session_hooks: HashMap::new(),
                sleep_hooks: Vec::new(),
                delivered: Vec::new(),
                delivery_interest: Vec::new(),
                stream_features: Vec::new(),
                account_disco: Vec::new(),
                data_hooks: Vec::new(),
                preauth: HashMap::new(),
                background: Vec::new(),
                services: HashMap::new(),
                loaded: Vec::new(),
            },
            disabled: disabled.to_vec(),
            hook_order: HashMap::new(),
            session_order: HashMap::new(),
            delivered_order: Vec::new(),
        }
    }

    fn load<M: Module>(&mut self, deps: &Deps) {
        if self.disabled.iter().any(|d| d == M::NAME) {
            return;
        }
        Arc::new(M::build(deps)).register(self);
        self.table.loaded.push(M::NAME);
    }

    fn finish(mut self) -> ModuleTable {
        for (hook, mut list) in self.hook_order {
            list.sort_by_key(|(p, _)| -p);
            self.table.hooks.insert(hook, list.into_iter().map(|(_, h)| h).collect());
        }
        for (hook, mut list) in self.session_order {
            list.sort_by_key(|(p, _)| -p);
            self.table.session_hooks.insert(hook, list.into_iter().map(|(_, h)| h).collect());
        }
        self.delivered_order.sort_by_key(|(p, _)| -p);
        self.table.delivered = self.delivered_order.into_iter().map(|(_, h)| h).collect();
        self.table
    }

    /// Handle IQs of `kind` whose payload is `<name xmlns=ns/>`; `ns` is advertised in the
    /// scope's disco#info features (as ejabberd's gen_iq_handler does).
    pub fn iq<M, F, Fut>(&mut self, scope: Scope, kind: IqType, name: &'static str, ns: &'static str, module: &Arc<M>, f: F)
    where
        M: Send + Sync + 'static,
        F: Fn(Arc<M>, Ctx, IqRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = IqResult> + Send + 'static,
    {
        let module = module.clone();
        let handler: IqHandler = Arc::new(move |ctx, req| Box::pin(f(module.clone(), ctx, req)));
        self.table.iq.entry(ns).or_default().push(IqEntry { scope, kind, name, handler });
        self.feature(scope, ns);
    }

    /// Advertise a feature that has no IQ handler of its own.
    pub fn feature(&mut self, scope: Scope, var: &'static str) {
        self.table.features.entry(scope).or_default().push(var);
    }

    pub fn identity(&mut self, scope: Scope, category: &'static str, kind: &'static str, name: &'static str) {
        self.table.identities.entry(scope).or_default().push(Identity { category, kind, name });
    }

    /// `f` sees the stanzas of `kinds` at `hook`; higher priority runs first.
    pub fn hook<M, F, Fut>(&mut self, hook: Hook, kinds: Kinds, priority: i32, module: &Arc<M>, f: F)
    where
        M: Send + Sync + 'static,
        F: Fn(Arc<M>, Ctx, Stanza) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Flow> + Send + 'static,
    {
        let module = module.clone();
        let run: StanzaHookFn = Arc::new(move |ctx, stanza| Box::pin(f(module.clone(), ctx, stanza)));
        self.hook_order.entry(hook).or_default().push((priority, StanzaHook { kinds, wants: None, run }));
    }

    /// [`Registrar::hook`] with a test, `wants`, that says without waiting whether `f` would
    /// do anything with a stanza; `f` runs only for those it wants. For hooks on the path of
    /// every copy of a room's broadcast, where building and running a future per copy and
    /// hook costs more than the test.
    pub fn hook_when<M, W, F, Fut>(&mut self, hook: Hook, kinds: Kinds, priority: i32, module: &Arc<M>, wants: W, f: F)
    where
        M: Send + Sync + 'static,
        W: Fn(&M, &Stanza) -> bool + Send + Sync + 'static,
        F: Fn(Arc<M>, Ctx, Stanza) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Flow> + Send + 'static,
    {
        self.hook(hook, kinds, priority, module, f);
        let tester = module.clone();
        let wants: WantsFn = Arc::new(move |stanza| wants(&tester, stanza));
        if let Some((_, last)) = self.hook_order.get_mut(&hook).and_then(|list| list.last_mut()) {
            last.wants = Some(wants);
        }
    }

    pub fn session_hook<M, F, Fut>(&mut self, hook: SessionHook, priority: i32, module: &Arc<M>, f: F)
    where
        M: Send + Sync + 'static,
        F: Fn(Arc<M>, Ctx, SessionEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let module = module.clone();
        let handler: SessionHookFn = Arc::new(move |ctx, ev| Box::pin(f(module.clone(), ctx, ev)));
        self.session_order.entry(hook).or_default().push((priority, handler));
    }

    /// Watch sessions whose clients fall asleep and wake (see [`Sleep`]): for a module that
    /// can wake a device, and may ask its session to wait longer for it
    /// ([`SleepOutcome`]).
    /// `wants` says, without waiting, whether the module cares about a session at all.
    pub fn sleep_hook<M, W, F, Fut>(&mut self, module: &Arc<M>, wants: W, f: F)
    where
        M: Send + Sync + 'static,
        W: Fn(&M, &FullJid) -> bool + Send + Sync + 'static,
        F: Fn(Arc<M>, Ctx, Arc<SleepEvent>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = SleepOutcome> + Send + 'static,
    {
        let m = module.clone();
        let interest: SleepInterestFn = Arc::new(move |jid| wants(&m, jid));
        let module = module.clone();
        let handler: SleepHookFn = Arc::new(move |ctx, event| Box::pin(f(module.clone(), ctx, event)));
        self.table.sleep_hooks.push((interest, handler));
    }

    /// A task the server runs from start to shutdown (it must end once
    /// `core.shutdown` is cancelled): periodic clean-ups and the like.
    pub fn background<M, F, Fut>(&mut self, module: &Arc<M>, f: F)
    where
        M: Send + Sync + 'static,
        F: Fn(Arc<M>, Core) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let module = module.clone();
        self.table.background.push(Arc::new(move |core| Box::pin(f(module.clone(), core))));
    }

    /// Watch messages delivered to local accounts (see [`Delivered`]), for the accounts
    /// `interested` says (asked per message: it must be cheap). Higher priority runs first.
    pub fn delivered<M, F, Fut, I>(&mut self, priority: i32, module: &Arc<M>, interested: I, f: F)
    where
        M: Send + Sync + 'static,
        F: Fn(Arc<M>, Ctx, Arc<Delivered>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
        I: Fn(&M, &str) -> bool + Send + Sync + 'static,
    {
        let watcher = module.clone();
        self.table.delivery_interest.push(Arc::new(move |account| interested(&watcher, account)));
        let module = module.clone();
        let handler: DeliveredHookFn = Arc::new(move |ctx, d| Box::pin(f(module.clone(), ctx, d)));
        self.delivered_order.push((priority, handler));
    }

    /// Add to the disco#info and disco#items of accounts (see [`ModuleTable::account_disco`]):
    /// `f` answers with the elements to put in the query (`None`: nothing of this module's).
    pub fn account_disco<M, F, Fut>(&mut self, module: &Arc<M>, f: F)
    where
        M: Send + Sync + 'static,
        F: Fn(Arc<M>, Ctx, DiscoRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<Vec<Element>>, StanzaError>> + Send + 'static,
    {
        let module = module.clone();
        let handler: AccountDiscoFn = Arc::new(move |ctx, req| Box::pin(f(module.clone(), ctx, req)));
        self.table.account_disco.push(handler);
    }

    /// Be told of changes of account data ([`ModuleTable::data_changed`]).
    pub fn data_hook<M, F, Fut>(&mut self, module: &Arc<M>, f: F)
    where
        M: Send + Sync + 'static,
        F: Fn(Arc<M>, Ctx, DataChange) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let module = module.clone();
        let handler: DataHookFn = Arc::new(move |ctx, change| Box::pin(f(module.clone(), ctx, change)));
        self.table.data_hooks.push(handler);
    }

    /// Route everything addressed to `domain` (the domain itself and every JID under it) to
    /// `f`: a service on a subdomain, such as the XEP-0045 service (ejabberd's
    /// `register_route`, Prosody's `Component`). `name` is shown in the served domain's
    /// disco#items.
    pub fn service<M, F, Fut>(&mut self, domain: String, name: &'static str, module: &Arc<M>, f: F)
    where
        M: Send + Sync + 'static,
        F: Fn(Arc<M>, Ctx, Stanza) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let module = module.clone();
        let handler: ServiceFn = Arc::new(move |ctx, stanza| Box::pin(f(module.clone(), ctx, stanza)));
        self.table.services.insert(domain, Service { name, handler });
    }

    pub fn stream_feature(&mut self, stage: Stage, feature: Element) {
        self.table.stream_features.push((stage, feature));
    }

    /// Handle IQs sent before authentication whose payload is in `ns`.
    pub fn preauth_iq<M, F, Fut>(&mut self, ns: &'static str, module: &Arc<M>, f: F)
    where
        M: Send + Sync + 'static,
        F: Fn(Arc<M>, Ctx, PreAuthIq) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = IqResult> + Send + 'static,
    {
        let module = module.clone();
        let handler: PreAuthHandler = Arc::new(move |ctx, iq| Box::pin(f(module.clone(), ctx, iq)));
        self.table.preauth.insert(ns, handler);
    }
}

/// Output for the session a handler runs in, written before anything queued later.
#[derive(Default)]
pub struct SessionOutput {
    direct: Mutex<Vec<Element>>,
    after_write: Mutex<Vec<BoxFuture<()>>>,
    /// Writes the stanza being handled must wait for before it is acknowledged.
    durable: Mutex<Vec<tokio::sync::oneshot::Receiver<()>>>,
}

impl SessionOutput {
    pub fn take(&self) -> (Vec<Element>, Vec<BoxFuture<()>>) {
        (
            std::mem::take(&mut *self.direct.lock().unwrap()),
            std::mem::take(&mut *self.after_write.lock().unwrap()),
        )
    }

    /// The promises taken while handling the last stanza (see [`Ctx::durable`]).
    pub fn take_durable(&self) -> Vec<tokio::sync::oneshot::Receiver<()>> {
        std::mem::take(&mut *self.durable.lock().unwrap())
    }
}

/// A write the client's acknowledgement must wait for (XEP-0198: an `<a h/>` covers a
/// stanza only once what the server did with it is safe). Whoever queues a durable write
/// for the stanza being handled (archive, offline store) takes one with [`Ctx::durable`]
/// and drops it once the write is committed, or has failed and the sender was told so.
/// Delivery itself never waits for it: only the acknowledgement does.
#[derive(Debug)]
pub struct Durable(#[allow(dead_code)] tokio::sync::oneshot::Sender<()>);

/// What a handler can do: reach the server's shared state and send stanzas.
#[derive(Clone)]
pub struct Ctx {
    pub core: Core,
    /// The session this runs on behalf of, if any.
    session: Option<(FullJid, Arc<SessionOutput>)>,
    /// Routes what a session that ended did not write (see [`Ctx::deliver`]).
    rerouting: bool,
}

impl Ctx {
    pub fn new(core: Core) -> Ctx {
        Ctx { core, session: None, rerouting: false }
    }

    pub fn for_session(core: Core, jid: FullJid, output: Arc<SessionOutput>) -> Ctx {
        Ctx { core, session: Some((jid, output)), rerouting: false }
    }

    /// For the task of a session that ended, routing the stanzas it did not write.
    pub fn rerouting(core: Core) -> Ctx {
        Ctx { core, session: None, rerouting: true }
    }

    /// Hand a stanza to a connected resource. Never waits ([`Sessions::deliver`]), except
    /// when rerouting the backlog of a session that ended: that task is nobody's sender, and
    /// a backlog of a full queue handed to another resource at once would overflow that
    /// one's queue too although it reads (it waits up to `c2s.write_timeout` for room).
    ///
    /// [`Sessions::deliver`]: crate::session::Sessions::deliver
    pub async fn deliver(&self, jid: &FullJid, el: Element) -> Result<(), crate::session::SendError> {
        if self.rerouting {
            let wait = std::time::Duration::from_secs(self.core.config.c2s.write_timeout);
            self.core.sessions.deliver_patiently(jid, el, wait).await
        } else {
            self.core.sessions.deliver(jid, el)
        }
    }

    /// Route a stanza as the server does for any other.
    pub fn send(&self, stanza: Stanza) -> BoxFuture<()> {
        crate::router::route_owned(self.clone(), stanza)
    }

    /// Whether this routes what a session that ended did not write: those stanzas went
    /// through every hook when first routed, and a second pass must not repeat side effects
    /// (copies, notifications).
    pub fn is_rerouting(&self) -> bool {
        self.rerouting
    }

    /// The full JID of the session this runs for.
    pub fn session_jid(&self) -> Option<&FullJid> {
        self.session.as_ref().map(|(j, _)| j)
    }

    /// Send a stanza; if it is for this handler's own session, it is written there ahead of
    /// anything routed to the session later (replies keep their order).
    pub async fn reply(&self, stanza: Stanza) {
        match &self.session {
            Some((jid, _)) if stanza.to.as_ref().is_some_and(|t| t == &Jid::from(jid.clone())) => {
                self.write_direct(stanza.el);
            }
            _ => self.send(stanza).await,
        }
    }

    /// Write an element to this handler's own session ahead of anything routed to it later
    /// (e.g. stored messages at login); dropped when there is no session.
    pub fn write_direct(&self, el: Element) {
        if let Some((_, output)) = &self.session {
            output.direct.lock().unwrap().push(el);
        }
    }

    /// A promise the acknowledgement of the stanza being handled waits for (see
    /// [`Durable`]); `None` when this does not run for a client's stanza.
    pub fn durable(&self) -> Option<Durable> {
        let (_, output) = self.session.as_ref()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        output.durable.lock().unwrap().push(rx);
        Some(Durable(tx))
    }

    /// Send an IQ get or set of the server's own (with `from` and `to`) and wait up to
    /// `timeout` for its answer: the result element, or why there is none. The id is made
    /// here; only an answer from exactly `to` is taken (see `crate::requests`). Never call
    /// this from a handler of the client being asked: its session reads nothing while it
    /// waits for the handler.
    pub async fn request(&self, mut iq: Stanza, timeout: std::time::Duration) -> Result<Element, crate::requests::RequestError> {
        let id = crate::stanza::new_id();
        crate::xml::set_attr(&mut iq.el, "id", id.as_str());
        let expected = self.core.requests.expect(&id, iq.from.clone(), iq.to_or_self())?;
        self.send(iq).await;
        expected.wait(timeout).await
    }

    /// Run `f` once what was given to `reply` has been written to the client.
    pub fn after_write(&self, f: BoxFuture<()>) -> bool {
        match &self.session {
            Some((_, output)) => {
                output.after_write.lock().unwrap().push(f);
                true
            }
            None => false,
        }
    }
}
