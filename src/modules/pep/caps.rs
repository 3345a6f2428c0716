//! Entity capabilities (XEP-0115) of the local clients and of contacts' clients on other
//! servers, for filtered notifications (XEP-0060 §9.2, XEP-0163 §4.2): which nodes each
//! available resource wants notifications of (its `NODE+notify` features).
//!
//! Each resource's broadcast presence carries `<c hash node ver/>`. A `ver` not seen before
//! is asked about once: a disco#info query to the client (to `node#ver`), whose answer is
//! hashed again (§5.1) and trusted only if it gives the same `ver` (§5.4). A verified
//! answer is remembered server-wide, in a bounded cache, for every client that shows the
//! same hash; one that does not verify is trusted for nobody (a client that lies about its
//! hash gets no notifications from it). A hash the server does not implement is asked
//! about for that resource alone and never cached (§5.4 step 2); a `<c/>` without a hash
//! (the legacy format, §8) is ignored.
//!
//! A resource on another server is known from the presence it sends to local accounts (its
//! server broadcasts it to each contact): it is kept, with the local accounts it showed
//! itself to (its *contacts* here), while it is available to at least one of them. Its
//! capabilities are asked about across the link, as one of those accounts, and share the
//! cache with the local clients'. The remote ones are also indexed by bare JID, so that a
//! publish finds the resources of one roster item at once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use dashmap::DashMap;
use jid::{BareJid, FullJid, Jid};
use sha1::Digest;
use tokio::sync::OnceCell;

use crate::modules::Ctx;
use crate::stanza::Stanza;
use crate::xml::{self, Element, ns};

/// What a presence says about the client's capabilities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    /// `None`: the legacy format (XEP-0115 §8), which cannot be verified.
    pub hash: Option<String>,
    pub node: String,
    pub ver: String,
}

/// The `<c/>` of a presence, if it has one.
pub fn advert(presence: &Element) -> Option<Advert> {
    let c = presence.get_child("c", ns::CAPS)?;
    Some(Advert {
        hash: c.attr("hash").map(str::to_string),
        node: c.attr("node")?.to_string(),
        ver: c.attr("ver")?.to_string(),
    })
}

/// The nodes a client wants notifications of.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Interest {
    nodes: HashSet<String>,
}

impl Interest {
    /// The `+notify` features of a disco#info answer (XEP-0060 §9.2).
    pub fn from_query(query: &Element) -> Interest {
        let nodes = query
            .children()
            .filter(|c| c.is("feature", ns::DISCO_INFO))
            .filter_map(|f| f.attr("var")?.strip_suffix("+notify"))
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect();
        Interest { nodes }
    }

    pub fn wants(&self, node: &str) -> bool {
        self.nodes.contains(node)
    }

    /// Nodes wanted here and not in `before`.
    pub fn added_since<'a>(&'a self, before: Option<&'a Interest>) -> impl Iterator<Item = &'a str> + 'a {
        self.nodes.iter().filter(move |n| before.is_none_or(|b| !b.wants(n))).map(String::as_str)
    }

    #[cfg(test)]
    pub fn of(nodes: &[&str]) -> Interest {
        Interest { nodes: nodes.iter().map(|n| n.to_string()).collect() }
    }
}

/// A form field: its `var` and values.
type Field = (String, Vec<String>);

/// The verification string of a disco#info answer (§5.1), or `None` if the answer is
/// ill-formed (§5.4 steps 3.3 to 3.5: repeated identities, features or form types).
pub fn verification_string(query: &Element) -> Option<String> {
    let mut identities: Vec<(String, String, String, String)> = query
        .children()
        .filter(|c| c.is("identity", ns::DISCO_INFO))
        .map(|i| {
            let attr = |name| i.attr(name).unwrap_or_default().to_string();
            (attr("category"), attr("type"), xml::xml_lang(i).unwrap_or_default().to_string(), attr("name"))
        })
        .collect();
    identities.sort();
    if identities.windows(2).any(|w| w[0] == w[1]) {
        return None;
    }
    let mut features: Vec<&str> =
        query.children().filter(|c| c.is("feature", ns::DISCO_INFO)).filter_map(|f| f.attr("var")).collect();
    features.sort_unstable();
    if features.windows(2).any(|w| w[0] == w[1]) {
        return None;
    }
    // Extended information (XEP-0128): forms with a hidden FORM_TYPE; others are ignored.
    let mut forms: Vec<(String, Vec<Field>)> = Vec::new();
    for x in query.children().filter(|c| c.is("x", ns::DATA_FORMS)) {
        let fields: Vec<&Element> = x.children().filter(|c| c.is("field", ns::DATA_FORMS)).collect();
        let values = |f: &Element| -> Vec<String> { f.children().filter(|v| v.is("value", ns::DATA_FORMS)).map(|v| v.text()).collect() };
        let Some(form_type) = fields.iter().find(|f| f.attr("var") == Some("FORM_TYPE")) else { continue };
        if form_type.attr("type") != Some("hidden") {
            continue;
        }
        let mut type_values = values(form_type);
        type_values.dedup();
        let form_type = match type_values.as_slice() {
            [one] => one.clone(),
            [] => continue,
            _ => return None,
        };
        let mut rest: Vec<Field> = fields
            .iter()
            .filter(|f| f.attr("var") != Some("FORM_TYPE"))
            .map(|f| {
                let mut v = values(f);
                v.sort();
                (f.attr("var").unwrap_or_default().to_string(), v)
            })
            .collect();
        rest.sort();
        forms.push((form_type, rest));
    }
    forms.sort();
    if forms.windows(2).any(|w| w[0].0 == w[1].0) {
        return None;
    }
    let mut s = String::new();
    for (category, kind, lang, name) in &identities {
        s.push_str(&format!("{category}/{kind}/{lang}/{name}<"));
    }
    for f in features {
        s.push_str(f);
        s.push('<');
    }
    for (form_type, fields) in forms {
        s.push_str(&form_type);
        s.push('<');
        for (var, values) in fields {
            s.push_str(&var);
            s.push('<');
            for v in values {
                s.push_str(&v);
                s.push('<');
            }
        }
    }
    Some(s)
}

/// The `ver` of a verification string with a hash function of the IANA registry that the
/// server implements; `None` for others.
pub fn hash_ver(hash: &str, s: &str) -> Option<String> {
    let digest: Vec<u8> = match hash {
        "sha-1" => sha1::Sha1::digest(s.as_bytes()).to_vec(),
        "sha-224" => sha2::Sha224::digest(s.as_bytes()).to_vec(),
        "sha-256" => sha2::Sha256::digest(s.as_bytes()).to_vec(),
        "sha-384" => sha2::Sha384::digest(s.as_bytes()).to_vec(),
        "sha-512" => sha2::Sha512::digest(s.as_bytes()).to_vec(),
        _ => return None,
    };
    Some(base64::engine::general_purpose::STANDARD.encode(digest))
}

fn supported(hash: &str) -> bool {
    hash_ver(hash, "").is_some()
}

/// What one available resource has shown.
struct Resource {
    advert: Option<Advert>,
    /// `None` until its capabilities are known.
    interest: Option<Arc<Interest>>,
    /// Changes with each new advert, so that a late answer about an old one is dropped.
    generation: u64,
    /// For a resource on another server: the local accounts it is available to (whose
    /// rosters name it); it is forgotten when none is left. Empty for a local resource.
    contacts: Vec<BareJid>,
}

/// A resource whose capabilities changed: what to find out.
#[derive(Debug)]
pub struct Update {
    pub generation: u64,
    pub advert: Option<Advert>,
    /// What it wanted before (`None` for a resource that just became available).
    pub before: Option<Arc<Interest>>,
}

/// What an available presence of a remote resource to a local account changed.
#[derive(Debug, Default)]
pub struct RemoteSeen {
    /// Its capabilities are new or other than before: what to find out.
    pub update: Option<Update>,
    /// The account is new among its contacts and what it wants is known already: the
    /// account's last items of those nodes are owed to it (XEP-0163 §4.3.2).
    pub known: Option<Arc<Interest>>,
}

type Key = (String, String);
/// The answer to one query, shared by all who wait for it.
type Answer = Arc<OnceCell<Option<Arc<Interest>>>>;

/// Verified capabilities, server-wide, the oldest forgotten first.
struct Cache {
    map: HashMap<Key, Arc<Interest>>,
    order: VecDeque<Key>,
    max: usize,
}

impl Cache {
    fn insert(&mut self, key: Key, interest: Arc<Interest>) {
        if self.map.insert(key.clone(), interest).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > self.max {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }
}

/// Queries in flight at once (one per `ver`); more wait for none and count as unknown.
const MAX_QUERIES: usize = 1000;
/// Resources of one remote contact kept at once (anyone's server can make up resources).
pub const MAX_REMOTE_RESOURCES_PER_CONTACT: usize = 16;
/// Remote resources kept at once, server-wide. Past it, new ones get no notifications
/// until others go away.
const MAX_REMOTE_RESOURCES: usize = 100_000;

pub struct Caps {
    resources: DashMap<FullJid, Resource>,
    /// The remote resources in `resources`, by bare JID. Taken before `resources` by those
    /// that change both (so that the two agree, and no two locks are taken in two orders).
    remote: DashMap<BareJid, Vec<FullJid>>,
    remote_count: AtomicUsize,
    cache: Mutex<Cache>,
    /// One query per `ver` at a time: resources showing the same one wait for its answer.
    pending: Mutex<HashMap<Key, Answer>>,
    timeout: Duration,
}

impl Caps {
    pub fn new(cache_size: usize, timeout: Duration) -> Caps {
        Caps {
            resources: DashMap::new(),
            remote: DashMap::new(),
            remote_count: AtomicUsize::new(0),
            cache: Mutex::new(Cache { map: HashMap::new(), order: VecDeque::new(), max: cache_size.max(1) }),
            pending: Mutex::new(HashMap::new()),
            timeout,
        }
    }

    /// A resource's available presence: what to find out if it just became available or
    /// shows other capabilities than before.
    pub fn presence(&self, jid: &FullJid, advert: Option<Advert>) -> Option<Update> {
        match self.resources.entry(jid.clone()) {
            dashmap::Entry::Vacant(v) => {
                v.insert(Resource { advert: advert.clone(), interest: None, generation: 1, contacts: Vec::new() });
                Some(Update { generation: 1, advert, before: None })
            }
            dashmap::Entry::Occupied(mut o) => {
                let r = o.get_mut();
                if r.advert == advert {
                    return None;
                }
                r.advert = advert.clone();
                r.generation += 1;
                Some(Update { generation: r.generation, advert, before: r.interest.clone() })
            }
        }
    }

    /// The resource became unavailable or ended.
    pub fn forget(&self, jid: &FullJid) {
        self.resources.remove(jid);
    }

    /// Record what a resource wants, unless its capabilities changed meanwhile (`None`);
    /// gives the local accounts a remote resource is available to (none for a local one).
    pub fn settle(&self, jid: &FullJid, generation: u64, interest: Arc<Interest>) -> Option<Vec<BareJid>> {
        match self.resources.get_mut(jid) {
            Some(mut r) if r.generation == generation => {
                r.interest = Some(interest);
                Some(r.contacts.clone())
            }
            _ => None,
        }
    }

    /// Whether a remote resource counts `contact` among the accounts it is available to.
    pub fn sees(&self, jid: &FullJid, contact: &BareJid) -> bool {
        self.resources.get(jid).is_some_and(|r| r.contacts.contains(contact))
    }

    /// Whether a remote resource is kept.
    pub fn is_remote(&self, jid: &FullJid) -> bool {
        self.resources.get(jid).is_some_and(|r| !r.contacts.is_empty())
    }

    /// A remote resource's available presence to the local account `contact` (whose roster
    /// was checked to name it): it is kept, with that account among its contacts, unless
    /// the limits say no (then nothing changes).
    pub fn remote_presence(&self, jid: &FullJid, contact: &BareJid, advert: Option<Advert>) -> RemoteSeen {
        let bare = jid.to_bare();
        let mut index = self.remote.entry(bare.clone()).or_default();
        if !index.contains(jid) {
            if index.len() >= MAX_REMOTE_RESOURCES_PER_CONTACT || self.remote_count.load(Ordering::Relaxed) >= MAX_REMOTE_RESOURCES {
                let empty = index.is_empty();
                drop(index);
                if empty {
                    self.remote.remove_if(&bare, |_, i| i.is_empty());
                }
                tracing::debug!(%jid, "too many remote resources kept; this one gets no PEP notifications");
                return RemoteSeen::default();
            }
            index.push(jid.clone());
            self.remote_count.fetch_add(1, Ordering::Relaxed);
        }
        match self.resources.entry(jid.clone()) {
            dashmap::Entry::Vacant(v) => {
                v.insert(Resource { advert: advert.clone(), interest: None, generation: 1, contacts: vec![contact.clone()] });
                RemoteSeen { update: Some(Update { generation: 1, advert, before: None }), known: None }
            }
            dashmap::Entry::Occupied(mut o) => {
                let r = o.get_mut();
                let mut seen = RemoteSeen::default();
                if !r.contacts.contains(contact) {
                    r.contacts.push(contact.clone());
                    seen.known = r.interest.clone();
                }
                if r.advert != advert {
                    r.advert = advert.clone();
                    r.generation += 1;
                    seen.update = Some(Update { generation: r.generation, advert, before: r.interest.clone() });
                }
                seen
            }
        }
    }

    /// A remote resource's unavailable presence to `contact`: it is no longer available to
    /// that account, and forgotten when it is to none.
    pub fn remote_unavailable(&self, jid: &FullJid, contact: &BareJid) {
        self.drop_remote(jid, Some(contact));
    }

    /// Forget a remote resource for all accounts (it cannot be reached).
    pub fn forget_remote(&self, jid: &FullJid) {
        self.drop_remote(jid, None);
    }

    fn drop_remote(&self, jid: &FullJid, contact: Option<&BareJid>) {
        self.remote.remove_if_mut(&jid.to_bare(), |_, index| {
            let Some(at) = index.iter().position(|j| j == jid) else { return index.is_empty() };
            let gone = match contact {
                None => true,
                Some(contact) => self.resources.get_mut(jid).is_none_or(|mut r| {
                    r.contacts.retain(|c| c != contact);
                    r.contacts.is_empty()
                }),
            };
            if gone {
                self.resources.remove(jid);
                index.swap_remove(at);
                self.remote_count.fetch_sub(1, Ordering::Relaxed);
            }
            index.is_empty()
        });
    }

    /// The resources of the remote contact `bare` that are available to the local account
    /// `owner` and whose capabilities are known, with what they want.
    pub fn remote_interests(&self, bare: &BareJid, owner: &BareJid) -> Vec<(FullJid, Arc<Interest>)> {
        let Some(index) = self.remote.get(bare) else { return Vec::new() };
        index
            .iter()
            .filter_map(|jid| {
                let r = self.resources.get(jid)?;
                let interest = r.interest.clone().filter(|_| r.contacts.contains(owner))?;
                Some((jid.clone(), interest))
            })
            .collect()
    }

    /// The resources of the remote contact `bare`, available to `owner`, that want
    /// notifications of `node`.
    pub fn remote_wanting(&self, bare: &BareJid, owner: &BareJid, node: &str) -> Vec<FullJid> {
        self.remote_interests(bare, owner).into_iter().filter(|(_, i)| i.wants(node)).map(|(jid, _)| jid).collect()
    }

    /// Whether an available resource wants notifications of `node`.
    pub fn wants(&self, jid: &FullJid, node: &str) -> bool {
        self.resources.get(jid).is_some_and(|r| r.interest.as_ref().is_some_and(|i| i.wants(node)))
    }

    pub fn interest(&self, jid: &FullJid) -> Option<Arc<Interest>> {
        self.resources.get(jid).and_then(|r| r.interest.clone())
    }

    /// What an advert means: from the cache, or by asking the client as `asker` (never from
    /// a session's own task, nor from an s2s stream's: it waits for the client's answer).
    pub async fn resolve(&self, ctx: &Ctx, jid: &FullJid, asker: &BareJid, advert: Option<&Advert>) -> Arc<Interest> {
        let Some(advert) = advert else { return Arc::default() };
        let Some(hash) = advert.hash.as_deref() else { return Arc::default() };
        if !supported(hash) {
            return self.query(ctx, jid, asker, advert, None).await.unwrap_or_default();
        }
        let key: Key = (hash.to_string(), advert.ver.clone());
        if let Some(known) = self.cache.lock().unwrap().map.get(&key) {
            return known.clone();
        }
        let cell = {
            let mut pending = self.pending.lock().unwrap();
            if !pending.contains_key(&key) && pending.len() >= MAX_QUERIES {
                return Arc::default();
            }
            pending.entry(key.clone()).or_default().clone()
        };
        let asked = AtomicBool::new(false);
        let answer = cell
            .get_or_init(|| async {
                asked.store(true, Ordering::Relaxed);
                let answer = self.query(ctx, jid, asker, advert, Some(hash)).await;
                self.pending.lock().unwrap().remove(&key);
                if let Some(interest) = &answer {
                    self.cache.lock().unwrap().insert(key.clone(), interest.clone());
                }
                answer
            })
            .await
            .clone();
        match answer {
            Some(interest) => interest,
            // The client asked gave no answer that verifies: this one may (§5.4 step
            // 3.9, "check another generating entity").
            None if !asked.load(Ordering::Relaxed) => {
                let answer = self.query(ctx, jid, asker, advert, Some(hash)).await;
                if let Some(interest) = &answer {
                    self.cache.lock().unwrap().insert(key, interest.clone());
                }
                answer.unwrap_or_default()
            }
            None => Arc::default(),
        }
    }

    /// Ask a client what its advert stands for; with `verify`, only an answer that hashes
    /// to the advertised `ver` counts.
    async fn query(&self, ctx: &Ctx, jid: &FullJid, asker: &BareJid, advert: &Advert, verify: Option<&str>) -> Option<Arc<Interest>> {
        let mut iq = xml::element("iq", ns::CLIENT, &[("type", "get")]);
        iq.append_child(xml::element("query", ns::DISCO_INFO, &[("node", &format!("{}#{}", advert.node, advert.ver))]));
        // From a local account: a local client's own (which its client answers whatever its
        // privacy settings), or for a remote client one of its contacts here (its server
        // lets a contact's query through); routed like any stanza, across the link for a
        // remote one.
        let request = Stanza::new(iq, Jid::from(asker.clone()), Jid::from(jid.clone()));
        let answer = match ctx.request(request, self.timeout).await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::debug!(%jid, error = ?e, "no capabilities from the client");
                return None;
            }
        };
        let query = answer.get_child("query", ns::DISCO_INFO)?;
        if let Some(hash) = verify {
            let computed = verification_string(query).and_then(|s| hash_ver(hash, &s));
            if computed.as_deref() != Some(advert.ver.as_str()) {
                tracing::info!(%jid, ver = %advert.ver, "capabilities do not match their hash; ignored");
                return None;
            }
        }
        Some(Arc::new(Interest::from_query(query)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::parse_element;

    /// XEP-0115 §5.2, the simple example.
    #[test]
    fn simple_example() {
        let q = parse_element(
            "<query xmlns='http://jabber.org/protocol/disco#info' node='http://code.google.com/p/exodus#QgayPKawpkPSDYmwT/WM94uAlu0='>\
             <identity category='client' name='Exodus 0.9.1' type='pc'/>\
             <feature var='http://jabber.org/protocol/caps'/>\
             <feature var='http://jabber.org/protocol/disco#info'/>\
             <feature var='http://jabber.org/protocol/disco#items'/>\
             <feature var='http://jabber.org/protocol/muc'/></query>",
        )
        .unwrap();
        let s = verification_string(&q).unwrap();
        assert_eq!(
            s,
            "client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<http://jabber.org/protocol/disco#info<\
             http://jabber.org/protocol/disco#items<http://jabber.org/protocol/muc<"
        );
        assert_eq!(hash_ver("sha-1", &s).unwrap(), "QgayPKawpkPSDYmwT/WM94uAlu0=");
    }

    /// XEP-0115 §5.3, the complex example: languages, extended information forms.
    #[test]
    fn complex_example() {
        let q = parse_element(
            "<query xmlns='http://jabber.org/protocol/disco#info' node='http://psi-im.org#q07IKJEyjvHSyhy//CH0CxmKi8w='>\
             <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>\
             <identity xml:lang='el' category='client' name='\u{3a8} 0.11' type='pc'/>\
             <feature var='http://jabber.org/protocol/caps'/>\
             <feature var='http://jabber.org/protocol/disco#info'/>\
             <feature var='http://jabber.org/protocol/disco#items'/>\
             <feature var='http://jabber.org/protocol/muc'/>\
             <x xmlns='jabber:x:data' type='result'>\
             <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>\
             <field var='ip_version' type='text-multi'><value>ipv4</value><value>ipv6</value></field>\
             <field var='os'><value>Mac</value></field>\
             <field var='os_version'><value>10.5.1</value></field>\
             <field var='software'><value>Psi</value></field>\
             <field var='software_version'><value>0.11</value></field>\
             </x></query>",
        )
        .unwrap();
        let s = verification_string(&q).unwrap();
        assert_eq!(hash_ver("sha-1", &s).unwrap(), "q07IKJEyjvHSyhy//CH0CxmKi8w=");
        assert!(hash_ver("md5", &s).is_none());
        assert_eq!(hash_ver("sha-256", &s).unwrap().len(), 44);
    }

    #[test]
    fn ill_formed_answers() {
        let twice = |inner: &str| parse_element(&format!("<query xmlns='http://jabber.org/protocol/disco#info'>{inner}</query>")).unwrap();
        assert!(verification_string(&twice("<feature var='a'/><feature var='a'/>")).is_none());
        assert!(verification_string(&twice("<identity category='client' type='pc'/><identity category='client' type='pc'/>")).is_none());
        let form = "<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'><value>urn:x</value></field></x>";
        assert!(verification_string(&twice(&format!("{form}{form}"))).is_none());
        // A form whose FORM_TYPE is not hidden is left out, not an error.
        let open = "<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE'><value>urn:x</value></field></x>";
        assert_eq!(verification_string(&twice(open)).unwrap(), "");
    }

    #[test]
    fn interest_is_the_notify_features() {
        let q = parse_element(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
             <feature var='http://jabber.org/protocol/tune'/><feature var='http://jabber.org/protocol/tune+notify'/>\
             <feature var='eu.siacs.conversations.axolotl.devicelist+notify'/><feature var='+notify'/></query>",
        )
        .unwrap();
        let i = Interest::from_query(&q);
        assert!(i.wants("http://jabber.org/protocol/tune"));
        assert!(i.wants("eu.siacs.conversations.axolotl.devicelist"));
        assert!(!i.wants("http://jabber.org/protocol/geoloc"));
        let before = Interest::of(&["http://jabber.org/protocol/tune"]);
        let added: Vec<&str> = i.added_since(Some(&before)).collect();
        assert_eq!(added, ["eu.siacs.conversations.axolotl.devicelist"]);
    }

    #[test]
    fn presence_changes_and_the_cache_bound() {
        let caps = Caps::new(2, Duration::from_secs(1));
        let jid = FullJid::new("a@h/r").unwrap();
        let advert = Some(Advert { hash: Some("sha-1".into()), node: "n".into(), ver: "v1".into() });
        let first = caps.presence(&jid, advert.clone()).unwrap();
        assert!(first.before.is_none());
        assert!(caps.presence(&jid, advert.clone()).is_none(), "the same caps again change nothing");
        assert!(caps.settle(&jid, first.generation, Arc::new(Interest::of(&["x"]))).is_some());
        assert!(caps.wants(&jid, "x"));
        let other = Some(Advert { ver: "v2".into(), ..advert.clone().unwrap() });
        let second = caps.presence(&jid, other).unwrap();
        assert_eq!(second.before.as_deref(), Some(&Interest::of(&["x"])));
        assert!(caps.settle(&jid, first.generation, Arc::default()).is_none(), "a late answer about old caps is dropped");
        caps.forget(&jid);
        assert!(!caps.wants(&jid, "x"));
        let mut cache = caps.cache.lock().unwrap();
        for i in 0..5 {
            cache.insert(("sha-1".into(), format!("v{i}")), Arc::default());
        }
        assert_eq!(cache.map.len(), 2);
        assert!(cache.map.contains_key(&("sha-1".to_string(), "v4".to_string())));
    }

    /// Remote resources: kept per local account they are available to, indexed by bare
    /// JID, forgotten when available to none or unreachable, bounded per contact.
    #[test]
    fn remote_resources() {
        let caps = Caps::new(10, Duration::from_secs(1));
        let phone = FullJid::new("bob@b.example/phone").unwrap();
        let bob = phone.to_bare();
        let (alice, carol) = (BareJid::new("alice@a.example").unwrap(), BareJid::new("carol@a.example").unwrap());
        let advert = Some(Advert { hash: Some("sha-1".into()), node: "n".into(), ver: "v1".into() });

        let seen = caps.remote_presence(&phone, &alice, advert.clone());
        let update = seen.update.expect("new: its caps are to be found out");
        assert!(update.before.is_none() && seen.known.is_none());
        assert!(caps.sees(&phone, &alice) && !caps.sees(&phone, &carol) && caps.is_remote(&phone));
        // Not known yet: nobody gets it.
        assert!(caps.remote_wanting(&bob, &alice, "x").is_empty());
        // Another account before the answer: it will be served when the answer comes.
        let seen = caps.remote_presence(&phone, &carol, advert.clone());
        assert!(seen.update.is_none() && seen.known.is_none());
        let contacts = caps.settle(&phone, update.generation, Arc::new(Interest::of(&["x"]))).unwrap();
        assert_eq!(contacts, [alice.clone(), carol.clone()]);
        assert_eq!(caps.remote_wanting(&bob, &alice, "x"), std::slice::from_ref(&phone));
        assert!(caps.remote_wanting(&bob, &alice, "y").is_empty());
        assert!(caps.remote_wanting(&bob, &BareJid::new("dave@a.example").unwrap(), "x").is_empty(), "only for the accounts it is available to");
        // The same presence again: nothing to do.
        let seen = caps.remote_presence(&phone, &alice, advert.clone());
        assert!(seen.update.is_none() && seen.known.is_none());

        // Unavailable to alice only: still there for carol.
        caps.remote_unavailable(&phone, &alice);
        assert!(caps.remote_wanting(&bob, &alice, "x").is_empty());
        assert_eq!(caps.remote_wanting(&bob, &carol, "x"), std::slice::from_ref(&phone));
        // Back to alice: what it wants is known, so alice's last items are owed at once.
        let seen = caps.remote_presence(&phone, &alice, advert.clone());
        assert!(seen.update.is_none());
        assert_eq!(seen.known.as_deref(), Some(&Interest::of(&["x"])));
        // Other caps: found out again, with what it wanted before.
        let other = Some(Advert { ver: "v2".into(), ..advert.clone().unwrap() });
        let update = caps.remote_presence(&phone, &carol, other).update.unwrap();
        assert_eq!(update.before.as_deref(), Some(&Interest::of(&["x"])));

        caps.remote_unavailable(&phone, &alice);
        caps.remote_unavailable(&phone, &carol);
        assert!(!caps.is_remote(&phone) && caps.remote.is_empty() && caps.resources.is_empty(), "available to nobody: forgotten");
        assert_eq!(caps.remote_count.load(Ordering::Relaxed), 0);

        // Unreachable: forgotten for everyone at once.
        caps.remote_presence(&phone, &alice, advert.clone());
        caps.remote_presence(&phone, &carol, advert.clone());
        caps.forget_remote(&phone);
        assert!(!caps.sees(&phone, &carol) && caps.remote.is_empty());
        // A local resource is never taken for a remote one.
        let local = FullJid::new("alice@a.example/desk").unwrap();
        caps.presence(&local, advert.clone());
        assert!(!caps.is_remote(&local));
        caps.forget_remote(&local);
        assert!(caps.resources.contains_key(&local), "forget_remote leaves local resources alone");

        // At most so many resources per contact.
        for i in 0..MAX_REMOTE_RESOURCES_PER_CONTACT + 3 {
            let jid = FullJid::new(&format!("bob@b.example/r{i}")).unwrap();
            let seen = caps.remote_presence(&jid, &alice, advert.clone());
            assert_eq!(seen.update.is_some(), i < MAX_REMOTE_RESOURCES_PER_CONTACT, "resource {i}");
        }
        assert_eq!(caps.remote.get(&bob).unwrap().len(), MAX_REMOTE_RESOURCES_PER_CONTACT);
        assert_eq!(caps.remote_count.load(Ordering::Relaxed), MAX_REMOTE_RESOURCES_PER_CONTACT);
    }
}
