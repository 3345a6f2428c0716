//! Personal eventing (XEP-0163) on XEP-0060, filtered by XEP-0115 capabilities: the
//! examples of the specifications with the addressing they show, the OMEMO flow, access
//! models, limits and bad input.

use std::time::Duration;

use base64::Engine;
use minidom::Element;
use sha1::Digest;

use crate::common::client::{CLIENT, condition, show};
use crate::common::{Backend, Client, TestServer, befriend};
use crate::db_tests;

pub const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
pub const OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
pub const EVENT: &str = "http://jabber.org/protocol/pubsub#event";
pub const ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
pub const CAPS_NS: &str = "http://jabber.org/protocol/caps";
const TUNE: &str = "http://jabber.org/protocol/tune";
const DEVICELIST: &str = "eu.siacs.conversations.axolotl.devicelist";
const AXOLOTL: &str = "eu.siacs.conversations.axolotl";

/// A client's capabilities (XEP-0115): its features and the verification string.
pub struct Caps {
    pub node: String,
    pub features: Vec<String>,
    pub ver: String,
}

impl Caps {
    /// A `client/pc` with these features (and disco#info), hashed with SHA-1 (§5.1).
    pub fn new(node: &str, features: &[&str]) -> Caps {
        let mut all: Vec<String> = features.iter().map(|f| f.to_string()).collect();
        all.push(DISCO_INFO.to_string());
        all.sort();
        all.dedup();
        let mut s = String::from("client/pc//Test<");
        for f in &all {
            s.push_str(f);
            s.push('<');
        }
        let ver = base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(s.as_bytes()));
        Caps { node: node.to_string(), features: all, ver }
    }

    pub fn presence(&self) -> String {
        format!("<presence><c xmlns='{CAPS_NS}' hash='sha-1' node='{}' ver='{}'/></presence>", self.node, self.ver)
    }

    /// The disco#info result for `query` (an IQ get from the server), listing `features`.
    pub fn answer_with(query: &Element, node: &str, features: &[String]) -> String {
        let mut answer = format!(
            "<iq type='result' id='{}' to='{}'><query xmlns='{DISCO_INFO}' node='{node}'><identity category='client' type='pc' name='Test'/>",
            query.attr("id").unwrap(),
            query.attr("from").unwrap()
        );
        for f in features {
            answer.push_str(&format!("<feature var='{f}'/>"));
        }
        answer.push_str("</query></iq>");
        answer
    }
}

fn bare(c: &Client) -> String {
    c.jid.split('/').next().unwrap().to_string()
}

fn is_caps_query(e: &Element) -> bool {
    e.name() == "iq" && e.attr("type") == Some("get") && e.get_child("query", DISCO_INFO).is_some()
}

/// Wait for the server's disco#info query about `caps` and check how it is addressed:
/// from the account's own bare JID, to the client's full JID, on `node#ver`.
pub async fn expect_caps_query(c: &mut Client, caps: &Caps) -> Element {
    let q = c.expect("the server's disco#info query", is_caps_query).await;
    assert_eq!(q.attr("from"), Some(bare(c).as_str()), "{}", show(&q));
    assert_eq!(q.attr("to"), Some(c.jid.as_str()));
    let node = q.get_child("query", DISCO_INFO).unwrap().attr("node").unwrap().to_string();
    assert_eq!(node, format!("{}#{}", caps.node, caps.ver));
    q
}

/// Let the server take in what a client's capabilities mean (it does so apart from the
/// client's session, once the answer arrived).
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// Send presence with caps; if the server asks (`asked`), answer truthfully. Own presence
/// is consumed.
pub async fn show_caps(c: &mut Client, caps: &Caps, asked: bool) {
    c.send(&caps.presence()).await;
    let me = c.jid.clone();
    c.expect("own presence", |e| e.name() == "presence" && e.attr("from") == Some(me.as_str()) && e.attr("type").is_none()).await;
    if asked {
        let q = expect_caps_query(c, caps).await;
        let node = format!("{}#{}", caps.node, caps.ver);
        c.send(&Caps::answer_with(&q, &node, &caps.features)).await;
    }
    settle().await;
}

/// A headline notification from `from` about `node`.
pub async fn expect_event(c: &mut Client, from: &str, node: &str) -> Element {
    let (from, node) = (from.to_string(), node.to_string());
    let m = c
        .expect(&format!("a notification of {node}"), |e| {
            e.name() == "message"
                && e.attr("from") == Some(from.as_str())
                && e.get_child("event", EVENT).is_some_and(|ev| ev.children().any(|c| c.attr("node") == Some(node.as_str())))
        })
        .await;
    assert_eq!(m.attr("type"), Some("headline"), "{}", show(&m));
    let me = c.jid.clone();
    assert_eq!(m.attr("to"), Some(me.as_str()), "notifications go to full JIDs");
    m
}

fn event_items(m: &Element) -> &Element {
    m.get_child("event", EVENT).unwrap().get_child("items", EVENT).unwrap()
}

pub fn pubsub_error(e: &Element) -> Option<String> {
    let error = e.get_child("error", CLIENT)?;
    error.children().find(|c| c.ns() == ERRORS).map(|c| c.name().to_string())
}

fn items_of(result: &Element) -> Vec<Element> {
    let items = result.get_child("pubsub", PUBSUB).unwrap().get_child("items", PUBSUB).unwrap();
    items.children().cloned().collect()
}

fn publish_options(fields: &[(&str, &str)]) -> String {
    let mut x = format!(
        "<publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{PUBSUB}#publish-options</value></field>"
    );
    for (var, value) in fields {
        x.push_str(&format!("<field var='{var}'><value>{value}</value></field>"));
    }
    x.push_str("</x></publish-options>");
    x
}

const TUNE_ITEM: &str = "<tune xmlns='http://jabber.org/protocol/tune'><artist>Gerald Finzi</artist><length>255</length>\
    <source>Music for \"Love's Labors Lost\" (Suite for small orchestra)</source><title>Introduction (Allegro vigoroso)</title><track>1</track></tune>";

/// XEP-0163 §3 example 1: publish with no `to`, no item id.
fn tune_publish(id: &str) -> String {
    format!("<iq type='set' id='{id}'><pubsub xmlns='{PUBSUB}'><publish node='{TUNE}'><item>{TUNE_ITEM}</item></publish></pubsub></iq>")
}

/// XEP-0163 §8.1: the account's disco#info, asked at its own bare JID with and without
/// `to`: identity pubsub/pep next to account/registered, and the pubsub features.
async fn disco_shows_pep(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["juliet"]).await;
    let mut juliet = s.login("juliet", "balcony").await;
    for to in ["", " to='juliet@localhost'"] {
        let info = juliet.request(&format!("<iq type='get' id='disco1'{to}><query xmlns='{DISCO_INFO}'/></iq>")).await;
        assert_eq!(info.attr("type"), Some("result"), "{}", show(&info));
        assert_eq!(info.attr("from"), Some("juliet@localhost"));
        let q = info.get_child("query", DISCO_INFO).unwrap();
        let identities: Vec<(String, String)> = q
            .children()
            .filter(|c| c.name() == "identity")
            .map(|i| (i.attr("category").unwrap().to_string(), i.attr("type").unwrap().to_string()))
            .collect();
        assert!(identities.contains(&("pubsub".into(), "pep".into())), "{identities:?}");
        assert!(identities.contains(&("account".into(), "registered".into())));
        let features: Vec<&str> = q.children().filter(|c| c.name() == "feature").filter_map(|f| f.attr("var")).collect();
        for f in [
            "publish",
            "publish-options",
            "auto-create",
            "auto-subscribe",
            "create-nodes",
            "config-node",
            "config-node-max",
            "filtered-notifications",
            "persistent-items",
            "retrieve-items",
            "retract-items",
            "delete-items",
            "delete-nodes",
            "purge-nodes",
            "access-presence",
            "access-open",
            "access-whitelist",
            "access-roster",
            "item-ids",
            "multi-items",
            "last-published",
            "subscribe",
        ] {
            let full = format!("{PUBSUB}#{f}");
            assert!(features.contains(&full.as_str()), "missing {full}");
        }
        assert!(features.contains(&PUBSUB));
    }
    s.stop().await;
}

/// XEP-0163 §2 and §3 (and XEP-0060 §7.1, §6.5): the tune example. Juliet publishes with
/// no `to` and no item id; the result names the id the server made; romeo and the nurse
/// (both subscriptions, tune+notify in their caps) and each of Juliet's own resources
/// get the notification from her bare JID; benvolio (no subscription) and a contact whose
/// client did not ask for tunes do not.
async fn tune_example(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["juliet", "romeo", "nurse", "benvolio", "tybalt"]).await;
    let mut juliet = s.login("juliet", "balcony").await;
    let mut chamber = s.login("juliet", "chamber").await;
    let mut romeo = s.login("romeo", "orchard").await;
    let mut nurse = s.login("nurse", "chamber").await;
    let mut benvolio = s.login("benvolio", "field").await;
    let mut tybalt = s.login("tybalt", "street").await;
    for c in [&mut juliet, &mut chamber, &mut romeo, &mut nurse, &mut benvolio, &mut tybalt] {
        c.available().await;
    }
    befriend(&mut juliet, &mut romeo).await;
    befriend(&mut juliet, &mut nurse).await;
    befriend(&mut juliet, &mut tybalt).await;
    chamber.drain().await;
    let tune_caps = Caps::new("https://example.org/client", &[TUNE, &format!("{TUNE}+notify")]);
    let no_tune = Caps::new("https://example.org/other", &[TUNE]);
    show_caps(&mut juliet, &tune_caps, true).await;
    // One query per verification string, server-wide: the others use the cache.
    show_caps(&mut chamber, &tune_caps, false).await;
    show_caps(&mut romeo, &tune_caps, false).await;
    show_caps(&mut nurse, &tune_caps, false).await;
    show_caps(&mut benvolio, &tune_caps, false).await;
    show_caps(&mut tybalt, &no_tune, true).await;
    for c in [&mut juliet, &mut chamber, &mut romeo, &mut nurse, &mut benvolio, &mut tybalt] {
        c.drain().await;
    }

    let result = juliet.request(&tune_publish("pub1")).await;
    assert_eq!(result.attr("type"), Some("result"), "{}", show(&result));
    let publish = result.get_child("pubsub", PUBSUB).unwrap().get_child("publish", PUBSUB).unwrap();
    assert_eq!(publish.attr("node"), Some(TUNE));
    let id = publish.get_child("item", PUBSUB).unwrap().attr("id").expect("the id the server made").to_string();
    assert!(!id.is_empty());

    for c in [&mut romeo, &mut nurse, &mut juliet, &mut chamber] {
        let m = expect_event(c, "juliet@localhost", TUNE).await;
        let item = event_items(&m).get_child("item", EVENT).unwrap();
        assert_eq!(item.attr("id"), Some(id.as_str()));
        let tune = item.get_child("tune", TUNE).unwrap();
        assert_eq!(tune.get_child("artist", TUNE).unwrap().text(), "Gerald Finzi");
    }
    benvolio.expect_silence(Duration::from_millis(300)).await;
    tybalt.expect_silence(Duration::from_millis(300)).await;

    // XEP-0060 §6.5.2: the items, retrieved by a contact at Juliet's bare JID.
    let items = romeo
        .request(&format!("<iq type='get' id='items1' to='juliet@localhost'><pubsub xmlns='{PUBSUB}'><items node='{TUNE}'/></pubsub></iq>"))
        .await;
    assert_eq!(items.attr("from"), Some("juliet@localhost"));
    let got = items_of(&items);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].attr("id"), Some(id.as_str()));
    // Benvolio, without a subscription, may not (presence access, the default).
    let denied = benvolio
        .request(&format!("<iq type='get' id='items2' to='juliet@localhost'><pubsub xmlns='{PUBSUB}'><items node='{TUNE}'/></pubsub></iq>"))
        .await;
    assert_eq!(condition(&denied), "not-authorized", "{}", show(&denied));
    assert_eq!(pubsub_error(&denied).as_deref(), Some("presence-subscription-required"));
    s.stop().await;
}


fn devicelist_publish(id: &str, devices: &[u32], options: &[(&str, &str)]) -> String {
    let list: String = devices.iter().map(|d| format!("<device id='{d}'/>")).collect();
    format!(
        "<iq type='set' id='{id}'><pubsub xmlns='{PUBSUB}'><publish node='{DEVICELIST}'><item id='current'><list xmlns='{AXOLOTL}'>{list}</list></item></publish>{}</pubsub></iq>",
        if options.is_empty() { String::new() } else { publish_options(options) }
    )
}

fn bundle_publish(id: &str, device: u32) -> String {
    format!(
        "<iq type='set' id='{id}'><pubsub xmlns='{PUBSUB}'><publish node='{AXOLOTL}.bundles:{device}'><item id='current'>\
         <bundle xmlns='{AXOLOTL}'><signedPreKeyPublic signedPreKeyId='1'>BQ==</signedPreKeyPublic><signedPreKeySignature>c2ln</signedPreKeySignature>\
         <identityKey>aWs=</identityKey><prekeys><preKeyPublic preKeyId='1'>cGsx</preKeyPublic><preKeyPublic preKeyId='2'>cGsy</preKeyPublic></prekeys></bundle>\
         </item></publish>{}</pubsub></iq>",
        publish_options(&[("pubsub#access_model", "open")])
    )
}

fn items_request(id: &str, to: &str, node: &str, extra: &str) -> String {
    format!("<iq type='get' id='{id}' to='{to}'><pubsub xmlns='{PUBSUB}'><items node='{node}'{extra}/></pubsub></iq>")
}

fn devices(items: &[Element]) -> Vec<String> {
    let list = items[0].get_child("list", AXOLOTL).unwrap();
    list.children().map(|d| d.attr("id").unwrap().to_string()).collect()
}

/// The OMEMO flow as Conversations, Dino and Gajim run it: the device list and a bundle
/// published with publish-options access_model=open; a contact and a stranger fetch both;
/// the contact, whose caps ask for device-list notifications, gets the next list; a
/// publish whose options no longer match the node gets precondition-not-met (XEP-0060
/// §7.1.5), and succeeds once the node is reconfigured.
async fn omemo_flow(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob", "carol"]).await;
    let mut alice = s.login("alice", "phone").await;
    let mut bob = s.login("bob", "laptop").await;
    let mut carol = s.login("carol", "desk").await;
    for c in [&mut alice, &mut bob, &mut carol] {
        c.available().await;
    }
    befriend(&mut alice, &mut bob).await;
    let omemo = Caps::new("https://conversations.im", &[AXOLOTL, &format!("{DEVICELIST}+notify")]);
    show_caps(&mut alice, &omemo, true).await;
    show_caps(&mut bob, &omemo, false).await;
    show_caps(&mut carol, &omemo, false).await;
    for c in [&mut alice, &mut bob, &mut carol] {
        c.drain().await;
    }

    let r = alice.request(&devicelist_publish("d1", &[1111], &[("pubsub#access_model", "open")])).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let r = alice.request(&bundle_publish("b1", 1111)).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    // Bob is notified of the new list (and Alice's own device of its own).
    let m = expect_event(&mut bob, "alice@localhost", DEVICELIST).await;
    assert_eq!(event_items(&m).get_child("item", EVENT).unwrap().attr("id"), Some("current"));
    expect_event(&mut alice, "alice@localhost", DEVICELIST).await;
    // Bundles are not asked for in the caps: nobody is notified of them.
    bob.expect_silence(Duration::from_millis(300)).await;

    for (c, who) in [(&mut bob, "contact"), (&mut carol, "stranger")] {
        let list = c.request(&items_request("f1", "alice@localhost", DEVICELIST, "")).await;
        assert_eq!(list.attr("type"), Some("result"), "{who}: {}", show(&list));
        assert_eq!(devices(&items_of(&list)), ["1111"]);
        let bundle = c.request(&items_request("f2", "alice@localhost", &format!("{AXOLOTL}.bundles:1111"), " max_items='1'")).await;
        let got = items_of(&bundle);
        assert_eq!(got.len(), 1, "{who}");
        let b = got[0].get_child("bundle", AXOLOTL).unwrap();
        assert_eq!(b.get_child("identityKey", AXOLOTL).unwrap().text(), "aWs=");
        assert_eq!(b.get_child("prekeys", AXOLOTL).unwrap().children().count(), 2);
    }
    // The stranger is not subscribed to Alice's presence: no notifications.
    carol.expect_silence(Duration::from_millis(200)).await;

    let r = alice.request(&devicelist_publish("d2", &[1111, 2222], &[("pubsub#access_model", "open")])).await;
    assert_eq!(r.attr("type"), Some("result"));
    let m = expect_event(&mut bob, "alice@localhost", DEVICELIST).await;
    let list = event_items(&m).get_child("item", EVENT).unwrap().get_child("list", AXOLOTL).unwrap();
    assert_eq!(list.children().count(), 2);
    carol.expect_silence(Duration::from_millis(300)).await;
    alice.drain().await;

    // Options that do not match the existing node.
    let r = alice.request(&devicelist_publish("d3", &[3333], &[("pubsub#access_model", "presence")])).await;
    assert_eq!(condition(&r), "conflict", "{}", show(&r));
    assert_eq!(pubsub_error(&r).as_deref(), Some("precondition-not-met"));
    let unchanged = alice.request(&items_request("f3", "alice@localhost", DEVICELIST, "")).await;
    assert_eq!(devices(&items_of(&unchanged)), ["1111", "2222"]);
    // What clients do next: reconfigure the node (XEP-0060 §8.2), then publish again.
    let r = alice
        .request(&format!(
            "<iq type='set' id='c1'><pubsub xmlns='{OWNER}'><configure node='{DEVICELIST}'><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>{PUBSUB}#node_config</value></field>\
             <field var='pubsub#access_model'><value>presence</value></field></x></configure></pubsub></iq>"
        ))
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let r = alice.request(&devicelist_publish("d4", &[3333], &[("pubsub#access_model", "presence")])).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let denied = carol.request(&items_request("f4", "alice@localhost", DEVICELIST, "")).await;
    assert_eq!(condition(&denied), "not-authorized");
    let list = bob.request(&items_request("f5", "alice@localhost", DEVICELIST, "")).await;
    assert_eq!(devices(&items_of(&list)), ["3333"]);
    s.stop().await;
}

/// XEP-0115 §5.4 and XEP-0060 §9.2: the server asks the client (from the account's bare
/// JID, on node#ver), verifies the hash and caches the answer; a client whose answer does
/// not hash to its ver gets no notifications for what it claimed; a second client with
/// the same ver is not asked; a `<c/>` without a hash (legacy) is not asked about.
async fn caps_verified_and_cached(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob", "mallory", "dave", "erin"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut bob = s.login("bob", "b").await;
    let mut mallory = s.login("mallory", "m").await;
    let mut dave = s.login("dave", "d").await;
    let mut erin = s.login("erin", "e").await;
    for c in [&mut alice, &mut bob, &mut mallory, &mut dave, &mut erin] {
        c.available().await;
    }
    for c in [&mut bob, &mut mallory, &mut dave, &mut erin] {
        befriend(&mut alice, c).await;
    }
    let honest = Caps::new("https://example.org/honest", &[TUNE, &format!("{TUNE}+notify")]);
    // Mallory shows the ver of a client without tune+notify, and claims it when asked.
    let plain = Caps::new("https://example.org/liar", &[TUNE]);
    mallory.send(&plain.presence()).await;
    let q = expect_caps_query(&mut mallory, &plain).await;
    let mut lie = plain.features.clone();
    lie.push(format!("{TUNE}+notify"));
    mallory.send(&Caps::answer_with(&q, &format!("{}#{}", plain.node, plain.ver), &lie)).await;
    // Bob is honest and asked first about his ver.
    show_caps(&mut bob, &honest, true).await;
    // Dave shows the same ver: the cached answer serves, no query.
    dave.send(&honest.presence()).await;
    dave.expect("own presence", |e| e.name() == "presence" && e.attr("from") == Some("dave@localhost/d")).await;
    settle().await;
    // Erin's client uses the legacy format (no hash): never asked, never notified.
    erin.send(&format!("<presence><c xmlns='{CAPS_NS}' node='https://example.org/old' ver='1.0' ext='tune'/></presence>")).await;
    settle().await;
    for c in [&mut alice, &mut bob, &mut mallory, &mut dave, &mut erin] {
        c.drain().await;
    }
    assert!(s.server().core().requests.is_empty(), "no query waits any more");

    let r = alice.request(&tune_publish("p1")).await;
    assert_eq!(r.attr("type"), Some("result"));
    expect_event(&mut bob, "alice@localhost", TUNE).await;
    expect_event(&mut dave, "alice@localhost", TUNE).await;
    for c in [&mut mallory, &mut erin] {
        c.expect_silence(Duration::from_millis(300)).await;
    }
    // Mallory's lie was not cached: another client showing that ver is asked again, and
    // its honest answer (without tune+notify) is what counts.
    s.users(&["frank"]).await;
    let mut frank = s.login("frank", "f").await;
    frank.available().await;
    befriend(&mut alice, &mut frank).await;
    show_caps(&mut frank, &plain, true).await;
    frank.drain().await;
    alice.drain().await;
    alice.request(&tune_publish("p2")).await;
    expect_event(&mut bob, "alice@localhost", TUNE).await;
    frank.expect_silence(Duration::from_millis(300)).await;
    mallory.expect_silence(Duration::from_millis(100)).await;
    s.stop().await;
}

/// A hash the server does not implement (§5.4 step 2): the client is asked, its answer is
/// used for it alone (never cached), and only its own answer counts: an answer with the
/// same id from anyone else is not taken (the tracker accepts the exact JID asked).
async fn caps_unknown_hash_and_spoofed_answers(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob", "eve"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut bob = s.login("bob", "b").await;
    let mut bob2 = s.login("bob", "b2").await;
    let mut eve = s.login("eve", "e").await;
    for c in [&mut alice, &mut bob, &mut bob2, &mut eve] {
        c.available().await;
    }
    befriend(&mut alice, &mut bob).await;
    bob2.drain().await;
    let advert = format!("<presence><c xmlns='{CAPS_NS}' hash='x-unknown' node='https://example.org/n' ver='opaque'/></presence>");
    bob.send(&advert).await;
    let q = bob.expect("the query", is_caps_query).await;
    assert_eq!(q.get_child("query", DISCO_INFO).unwrap().attr("node"), Some("https://example.org/n#opaque"));
    // Answers with the right id, not from bob's client: from Eve (another account), and from
    // Bob's other resource.
    let spoof = Caps::answer_with(&q, "https://example.org/n#opaque", &[format!("{TUNE}+notify")]);
    eve.send(&spoof.replace(&format!("to='{}'", q.attr("from").unwrap()), "to='bob@localhost'")).await;
    bob2.send(&spoof).await;
    settle().await;
    // The real answer asks for nothing.
    bob.send(&Caps::answer_with(&q, "https://example.org/n#opaque", &[TUNE.to_string()])).await;
    settle().await;
    alice.drain().await;
    bob.drain().await;
    alice.request(&tune_publish("p1")).await;
    bob.expect_silence(Duration::from_millis(300)).await;
    // Same advert from Bob's other resource: asked again (not cached), and this answer
    // asks for tunes.
    bob2.send(&advert).await;
    let q = bob2.expect("the query", is_caps_query).await;
    bob2.send(&Caps::answer_with(&q, "https://example.org/n#opaque", &[format!("{TUNE}+notify")])).await;
    settle().await;
    for c in [&mut alice, &mut bob, &mut bob2] {
        c.drain().await;
    }
    alice.request(&tune_publish("p2")).await;
    expect_event(&mut bob2, "alice@localhost", TUNE).await;
    bob.expect_silence(Duration::from_millis(300)).await;
    s.stop().await;
}

fn configure_form(node: &str, fields: &[(&str, &str)]) -> String {
    let mut x = format!(
        "<iq type='set' id='cfg'><pubsub xmlns='{OWNER}'><configure node='{node}'><x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>{PUBSUB}#node_config</value></field>"
    );
    for (var, value) in fields {
        x.push_str(&format!("<field var='{var}'><value>{value}</value></field>"));
    }
    x.push_str("</x></configure></pubsub></iq>");
    x
}

fn simple_publish(id: &str, node: &str, item: &str, text: &str, options: &[(&str, &str)]) -> String {
    let options = if options.is_empty() { String::new() } else { publish_options(options) };
    format!(
        "<iq type='set' id='{id}'><pubsub xmlns='{PUBSUB}'><publish node='{node}'><item id='{item}'><entry xmlns='urn:test'>{text}</entry></item></publish>{options}</pubsub></iq>"
    )
}

fn entries(result: &Element) -> Vec<(String, String)> {
    items_of(result).iter().map(|i| (i.attr("id").unwrap().to_string(), i.get_child("entry", "urn:test").unwrap().text())).collect()
}

/// XEP-0060 §4.5 and §6.5.2 as XEP-0163 §7 asks: `open` for anyone, `presence` for
/// contacts with a subscription (from/both in the owner's roster), `roster` for those in
/// the allowed groups, `whitelist` for the owner alone, each refused with its condition.
async fn access_models(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "friend", "fan", "stranger"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut friend = s.login("friend", "f").await;
    let mut fan = s.login("fan", "f").await;
    let mut stranger = s.login("stranger", "s").await;
    for c in [&mut alice, &mut friend, &mut fan, &mut stranger] {
        c.available().await;
    }
    befriend(&mut alice, &mut friend).await;
    // The fan is subscribed to Alice's presence (Alice's roster: from), not the reverse.
    fan.send("<presence type='subscribe' to='alice@localhost'/>").await;
    alice.expect("request", |e| e.attr("type") == Some("subscribe")).await;
    alice.send("<presence type='subscribed' to='fan@localhost'/>").await;
    fan.expect("approved", |e| e.attr("type") == Some("subscribed")).await;
    // Alice puts her friend in the group "Friends".
    let r = alice
        .request("<iq type='set' id='r1'><query xmlns='jabber:iq:roster'><item jid='friend@localhost'><group>Friends</group></item></query></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    for (node, model) in [("n-open", "open"), ("n-presence", "presence"), ("n-roster", "roster"), ("n-white", "whitelist")] {
        let r = alice.request(&simple_publish("p", node, "1", model, &[("pubsub#access_model", model)])).await;
        assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    }
    let r = alice.request(&configure_form("n-roster", &[("pubsub#roster_groups_allowed", "Friends")])).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    type Refusal = Option<(&'static str, &'static str)>;
    let cases: [(&str, [Refusal; 3]); 4] = [
        // node: (friend, fan, stranger); None = allowed, else (condition, pubsub condition).
        ("n-open", [None, None, None]),
        ("n-presence", [None, None, Some(("not-authorized", "presence-subscription-required"))]),
        ("n-roster", [None, Some(("not-authorized", "not-in-roster-group")), Some(("not-authorized", "not-in-roster-group"))]),
        ("n-white", [Some(("not-allowed", "closed-node")), Some(("not-allowed", "closed-node")), Some(("not-allowed", "closed-node"))]),
    ];
    for (node, expected) in cases {
        for (c, want) in [&mut friend, &mut fan, &mut stranger].into_iter().zip(expected) {
            let r = c.request(&items_request("g", "alice@localhost", node, "")).await;
            match want {
                None => assert_eq!(r.attr("type"), Some("result"), "{} on {node}: {}", c.jid, show(&r)),
                Some((cond, app)) => {
                    assert_eq!(condition(&r), cond, "{} on {node}: {}", c.jid, show(&r));
                    assert_eq!(pubsub_error(&r).as_deref(), Some(app), "{} on {node}", c.jid);
                }
            }
        }
        // The owner always may.
        let r = alice.request(&items_request("o", "alice@localhost", node, "")).await;
        assert_eq!(entries(&r).len(), 1, "{node}");
    }
    s.stop().await;
}

/// XEP-0223 (private storage over PEP): published with persist_items and access model
/// whitelist; the owner's resources get it, a contact asking for it gets neither the
/// notification nor the items.
async fn private_storage_whitelist(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["juliet", "romeo"]).await;
    let mut balcony = s.login("juliet", "balcony").await;
    let mut chamber = s.login("juliet", "chamber").await;
    let mut romeo = s.login("romeo", "orchard").await;
    for c in [&mut balcony, &mut chamber, &mut romeo] {
        c.available().await;
    }
    befriend(&mut balcony, &mut romeo).await;
    let caps = Caps::new("https://example.org/c", &["storage:bookmarks+notify"]);
    show_caps(&mut balcony, &caps, true).await;
    show_caps(&mut chamber, &caps, false).await;
    show_caps(&mut romeo, &caps, false).await;
    for c in [&mut balcony, &mut chamber, &mut romeo] {
        c.drain().await;
    }
    let r = balcony
        .request(&format!(
            "<iq type='set' id='pdp1'><pubsub xmlns='{PUBSUB}'><publish node='storage:bookmarks'><item>\
             <conference xmlns='storage:bookmarks' autojoin='true' jid='theplay@conference.shakespeare.lit' name='The Play&apos;s the Thing'>\
             <nick>JC</nick><password>Gl0b3</password></conference></item></publish>{}</pubsub></iq>",
            publish_options(&[("pubsub#persist_items", "true"), ("pubsub#access_model", "whitelist")])
        ))
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    for c in [&mut balcony, &mut chamber] {
        let m = expect_event(c, "juliet@localhost", "storage:bookmarks").await;
        let conf = event_items(&m).get_child("item", EVENT).unwrap().get_child("conference", "storage:bookmarks").unwrap();
        assert_eq!(conf.get_child("password", "storage:bookmarks").unwrap().text(), "Gl0b3");
    }
    romeo.expect_silence(Duration::from_millis(300)).await;
    let r = romeo.request(&items_request("x", "juliet@localhost", "storage:bookmarks", "")).await;
    assert_eq!(condition(&r), "not-allowed");
    assert_eq!(pubsub_error(&r).as_deref(), Some("closed-node"));
    s.stop().await;
}

/// Alice and Bob as contacts, both online with caps that ask for notifications of `nodes`.
async fn two_contacts(s: &TestServer, nodes: &[&str]) -> (Client, Client) {
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut bob = s.login("bob", "b").await;
    alice.available().await;
    bob.available().await;
    befriend(&mut alice, &mut bob).await;
    let notify: Vec<String> = nodes.iter().map(|n| format!("{n}+notify")).collect();
    let notify: Vec<&str> = notify.iter().map(String::as_str).collect();
    let caps = Caps::new("https://example.org/t", &notify);
    show_caps(&mut alice, &caps, true).await;
    show_caps(&mut bob, &caps, false).await;
    alice.drain().await;
    bob.drain().await;
    (alice, bob)
}

/// XEP-0060 §7.2 (retract, with notify), §8.4 (delete) and §8.5 (purge): the owner and
/// subscribed contacts are told; unknown nodes and items are item-not-found.
async fn retract_delete_purge(b: Backend) {
    let s = TestServer::start(b).await;
    let (mut alice, mut bob) = two_contacts(&s, &["urn:test:n"]).await;
    for i in ["1", "2", "3"] {
        alice.request(&simple_publish("p", "urn:test:n", i, i, &[("pubsub#max_items", "10"), ("pubsub#notify_retract", "false")])).await;
        expect_event(&mut bob, "alice@localhost", "urn:test:n").await;
    }
    alice.drain().await;
    // notify_retract is off: a retract without notify='true' is silent.
    let r = alice.request(&format!("<iq type='set' id='r1'><pubsub xmlns='{PUBSUB}'><retract node='urn:test:n'><item id='1'/></retract></pubsub></iq>")).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    bob.expect_silence(Duration::from_millis(300)).await;
    let r = alice
        .request(&format!("<iq type='set' id='r2'><pubsub xmlns='{PUBSUB}'><retract node='urn:test:n' notify='true'><item id='2'/></retract></pubsub></iq>"))
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    for c in [&mut bob, &mut alice] {
        let m = expect_event(c, "alice@localhost", "urn:test:n").await;
        assert_eq!(event_items(&m).get_child("retract", EVENT).unwrap().attr("id"), Some("2"));
    }
    let left = alice.request(&items_request("g", "alice@localhost", "urn:test:n", "")).await;
    assert_eq!(entries(&left), [("3".to_string(), "3".to_string())]);
    let r = alice.request(&format!("<iq type='set' id='r3'><pubsub xmlns='{PUBSUB}'><retract node='urn:test:n'><item id='2'/></retract></pubsub></iq>")).await;
    assert_eq!(condition(&r), "item-not-found");
    let r = alice.request(&format!("<iq type='set' id='r4'><pubsub xmlns='{PUBSUB}'><retract node='urn:test:n'/></pubsub></iq>")).await;
    assert_eq!((condition(&r), pubsub_error(&r).as_deref()), ("bad-request".into(), Some("item-required")));
    // Bob may not retract, purge or delete Alice's items.
    let r = bob
        .request(&format!("<iq type='set' id='r5' to='alice@localhost'><pubsub xmlns='{PUBSUB}'><retract node='urn:test:n'><item id='3'/></retract></pubsub></iq>"))
        .await;
    assert_eq!(condition(&r), "forbidden");
    for op in ["purge", "delete"] {
        let r = bob.request(&format!("<iq type='set' id='o' to='alice@localhost'><pubsub xmlns='{OWNER}'><{op} node='urn:test:n'/></pubsub></iq>")).await;
        assert_eq!(condition(&r), "forbidden", "{op}");
    }
    // Purge: one notification, only when the node notifies of retractions.
    alice.request(&configure_form("urn:test:n", &[("pubsub#notify_retract", "1")])).await;
    let r = alice.request(&format!("<iq type='set' id='pu'><pubsub xmlns='{OWNER}'><purge node='urn:test:n'/></pubsub></iq>")).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let m = bob.expect("purge", |e| e.get_child("event", EVENT).is_some_and(|ev| ev.has_child("purge", EVENT))).await;
    assert_eq!(m.get_child("event", EVENT).unwrap().get_child("purge", EVENT).unwrap().attr("node"), Some("urn:test:n"));
    let empty = alice.request(&items_request("g2", "alice@localhost", "urn:test:n", "")).await;
    assert!(items_of(&empty).is_empty());
    // Delete: the node and its items go; subscribers are told.
    alice.drain().await;
    let r = alice.request(&format!("<iq type='set' id='del'><pubsub xmlns='{OWNER}'><delete node='urn:test:n'/></pubsub></iq>")).await;
    assert_eq!(r.attr("type"), Some("result"));
    for c in [&mut bob, &mut alice] {
        let m = c.expect("delete", |e| e.get_child("event", EVENT).is_some_and(|ev| ev.has_child("delete", EVENT))).await;
        assert_eq!(m.attr("from"), Some("alice@localhost"));
        assert_eq!(m.get_child("event", EVENT).unwrap().get_child("delete", EVENT).unwrap().attr("node"), Some("urn:test:n"));
    }
    for (id, req) in [
        ("x1", items_request("x1", "alice@localhost", "urn:test:n", "")),
        ("x2", format!("<iq type='set' id='x2'><pubsub xmlns='{OWNER}'><delete node='urn:test:n'/></pubsub></iq>")),
        ("x3", format!("<iq type='set' id='x3'><pubsub xmlns='{OWNER}'><purge node='urn:test:n'/></pubsub></iq>")),
        ("x4", format!("<iq type='get' id='x4'><pubsub xmlns='{OWNER}'><configure node='urn:test:n'/></pubsub></iq>")),
        ("x5", format!("<iq type='set' id='x5'><pubsub xmlns='{PUBSUB}'><retract node='urn:test:n'><item id='3'/></retract></pubsub></iq>")),
    ] {
        let r = alice.request(&req).await;
        assert_eq!(condition(&r), "item-not-found", "{id}: {}", show(&r));
    }
    s.stop().await;
}

/// XEP-0163 §4.3.2 and §4.3.4: a contact's resource that becomes available with caps asking
/// for a node gets its last item (with the time it was published); so does a new resource
/// of the owner, for the owner's nodes; `send_last_published_item` = never sends nothing.
async fn last_items_on_presence(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["juliet", "romeo"]).await;
    let mut juliet = s.login("juliet", "balcony").await;
    let mut romeo = s.login("romeo", "orchard").await;
    juliet.available().await;
    romeo.available().await;
    befriend(&mut juliet, &mut romeo).await;
    let before = time::OffsetDateTime::now_utc().unix_timestamp();
    juliet.request(&tune_publish("t1")).await;
    juliet.request(&simple_publish("q", "urn:test:quiet", "only", "hush", &[("pubsub#send_last_published_item", "never")])).await;
    juliet.request(&simple_publish("w", "urn:test:private", "mine", "secret", &[("pubsub#access_model", "whitelist")])).await;
    drop(romeo);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let caps = Caps::new("https://example.org/r", &[&format!("{TUNE}+notify"), "urn:test:quiet+notify", "urn:test:private+notify"]);
    let mut romeo = s.login("romeo", "orchard").await;
    show_caps(&mut romeo, &caps, true).await;
    let m = expect_event(&mut romeo, "juliet@localhost", TUNE).await;
    assert!(event_items(&m).get_child("item", EVENT).unwrap().has_child("tune", TUNE));
    let delay = m.get_child("delay", "urn:xmpp:delay").expect("the time it was published");
    let stamp = time::OffsetDateTime::parse(delay.attr("stamp").unwrap(), &time::format_description::well_known::Rfc3339).unwrap();
    assert!(stamp.unix_timestamp() >= before - 1);
    romeo.drain().await;
    // A later presence (same caps) sends nothing again (§4.3.2 note).
    romeo.send(&caps.presence()).await;
    settle().await;
    let got_event = async {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(400);
        while tokio::time::Instant::now() < deadline {
            if let Ok(el) = tokio::time::timeout(Duration::from_millis(100), romeo.next()).await
                && el.name() == "message"
            {
                return true;
            }
        }
        false
    };
    assert!(!got_event.await, "no second notification for the same presence session");

    // Juliet's new resource gets her own last items, whitelisted ones included, not the
    // one configured never to be sent.
    let mut chamber = s.login("juliet", "chamber").await;
    show_caps(&mut chamber, &caps, false).await;
    expect_event(&mut chamber, "juliet@localhost", TUNE).await;
    let m = expect_event(&mut chamber, "juliet@localhost", "urn:test:private").await;
    assert_eq!(event_items(&m).get_child("item", EVENT).unwrap().attr("id"), Some("mine"));
    chamber.drain().await;
    let quiet = chamber.request(&items_request("q2", "juliet@localhost", "urn:test:quiet", "")).await;
    assert_eq!(entries(&quiet), [("only".to_string(), "hush".to_string())], "stored, just not sent");
    s.stop().await;
}

/// XEP-0163 §4.3.3: a contact whose subscription is approved while online becomes a
/// subscriber and gets the last items its caps ask for.
async fn new_subscriber_gets_last_items(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["juliet", "romeo"]).await;
    let mut juliet = s.login("juliet", "balcony").await;
    let mut romeo = s.login("romeo", "orchard").await;
    juliet.available().await;
    juliet.request(&tune_publish("t1")).await;
    let caps = Caps::new("https://example.org/r", &[&format!("{TUNE}+notify")]);
    show_caps(&mut romeo, &caps, true).await;
    romeo.drain().await;
    romeo.send("<presence type='subscribe' to='juliet@localhost'/>").await;
    juliet.expect("request", |e| e.attr("type") == Some("subscribe")).await;
    romeo.expect_silence(Duration::from_millis(200)).await;
    juliet.send("<presence type='subscribed' to='romeo@localhost'/>").await;
    let m = expect_event(&mut romeo, "juliet@localhost", TUNE).await;
    assert!(event_items(&m).get_child("item", EVENT).unwrap().has_child("tune", TUNE));
    s.stop().await;
}

/// Explicit subscriptions (XEP-0060 §6.1, §6.2): a stranger subscribes to an open node with
/// its own JID, gets the last item and then notifications, and unsubscribes; one who may
/// not read the node, or names another JID, is refused.
async fn explicit_subscriptions(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "carol"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut carol = s.login("carol", "c").await;
    alice.request(&simple_publish("p1", "urn:test:open", "1", "first", &[("pubsub#access_model", "open")])).await;
    alice.request(&simple_publish("p2", "urn:test:closed", "1", "x", &[])).await;
    let sub = |id: &str, node: &str, jid: &str| {
        format!("<iq type='set' id='{id}' to='alice@localhost'><pubsub xmlns='{PUBSUB}'><subscribe node='{node}' jid='{jid}'/></pubsub></iq>")
    };
    let r = carol.request(&sub("s1", "urn:test:open", "carol@localhost/c")).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let subscription = r.get_child("pubsub", PUBSUB).unwrap().get_child("subscription", PUBSUB).unwrap();
    assert_eq!(subscription.attr("subscription"), Some("subscribed"));
    assert_eq!(subscription.attr("jid"), Some("carol@localhost/c"));
    let m = carol.expect("the last item", |e| e.name() == "message").await;
    assert_eq!(event_items(&m).get_child("item", EVENT).unwrap().get_child("entry", "urn:test").unwrap().text(), "first");
    alice.request(&simple_publish("p3", "urn:test:open", "2", "second", &[])).await;
    let m = carol.expect("a notification", |e| e.name() == "message").await;
    assert_eq!(m.attr("from"), Some("alice@localhost"));
    assert_eq!(event_items(&m).get_child("item", EVENT).unwrap().get_child("entry", "urn:test").unwrap().text(), "second");
    let r = carol.request(&sub("s2", "urn:test:closed", "carol@localhost")).await;
    assert_eq!((condition(&r), pubsub_error(&r).as_deref()), ("not-authorized".into(), Some("presence-subscription-required")));
    let r = carol.request(&sub("s3", "urn:test:open", "alice@localhost")).await;
    assert_eq!((condition(&r), pubsub_error(&r).as_deref()), ("bad-request".into(), Some("invalid-jid")));
    let r = carol.request(&sub("s4", "urn:test:none", "carol@localhost")).await;
    assert_eq!(condition(&r), "item-not-found");
    let unsub = format!("<iq type='set' id='u1' to='alice@localhost'><pubsub xmlns='{PUBSUB}'><unsubscribe node='urn:test:open' jid='carol@localhost/c'/></pubsub></iq>");
    let r = carol.request(&unsub).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let r = carol.request(&unsub.replace("u1", "u2")).await;
    assert_eq!((condition(&r), pubsub_error(&r).as_deref()), ("unexpected-request".into(), Some("not-subscribed")));
    alice.request(&simple_publish("p4", "urn:test:open", "3", "third", &[])).await;
    carol.expect_silence(Duration::from_millis(300)).await;
    s.stop().await;
}

/// XEP-0060 §8.1 (create, with and without a configuration), §8.2 (configure get and set,
/// cancel), §8.3 (default configuration); trimming to a lowered max_items.
async fn create_and_configure(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["hamlet"]).await;
    let mut hamlet = s.login("hamlet", "elsinore").await;
    let r = hamlet.request(&format!("<iq type='set' id='create1'><pubsub xmlns='{PUBSUB}'><create node='princely_musings'/></pubsub></iq>")).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let r = hamlet.request(&format!("<iq type='set' id='create2'><pubsub xmlns='{PUBSUB}'><create node='princely_musings'/></pubsub></iq>")).await;
    assert_eq!(condition(&r), "conflict");
    let r = hamlet.request(&format!("<iq type='set' id='create3'><pubsub xmlns='{PUBSUB}'><create/></pubsub></iq>")).await;
    assert_eq!((condition(&r), pubsub_error(&r).as_deref()), ("not-acceptable".into(), Some("nodeid-required")));
    let r = hamlet
        .request(&format!(
            "<iq type='set' id='create4'><pubsub xmlns='{PUBSUB}'><create node='whitelisted'/><configure><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>{PUBSUB}#node_config</value></field>\
             <field var='pubsub#access_model'><value>whitelist</value></field><field var='pubsub#max_items'><value>10</value></field>\
             <field var='pubsub#title'><value>Princely Musings (Atom)</value></field></x></configure></pubsub></iq>"
        ))
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let r = hamlet
        .request(&format!(
            "<iq type='set' id='create5'><pubsub xmlns='{PUBSUB}'><create node='authorized'/><configure><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>{PUBSUB}#node_config</value></field>\
             <field var='pubsub#access_model'><value>authorize</value></field></x></configure></pubsub></iq>"
        ))
        .await;
    assert_eq!((condition(&r), pubsub_error(&r).as_deref()), ("not-acceptable".into(), Some("unsupported-access-model")));

    let field = |form: &Element, var: &str| -> Vec<String> {
        let f = form.children().find(|f| f.attr("var") == Some(var)).unwrap_or_else(|| panic!("no field {var}"));
        f.children().filter(|v| v.name() == "value").map(|v| v.text()).collect()
    };
    let r = hamlet.request(&format!("<iq type='get' id='config1'><pubsub xmlns='{OWNER}'><configure node='whitelisted'/></pubsub></iq>")).await;
    let configure = r.get_child("pubsub", OWNER).unwrap().get_child("configure", OWNER).unwrap();
    assert_eq!(configure.attr("node"), Some("whitelisted"));
    let form = configure.get_child("x", "jabber:x:data").unwrap();
    assert_eq!(form.attr("type"), Some("form"));
    assert_eq!(field(form, "FORM_TYPE"), [format!("{PUBSUB}#node_config")]);
    assert_eq!(field(form, "pubsub#access_model"), ["whitelist"]);
    assert_eq!(field(form, "pubsub#max_items"), ["10"]);
    assert_eq!(field(form, "pubsub#title"), ["Princely Musings (Atom)"]);
    assert_eq!(field(form, "pubsub#send_last_published_item"), ["on_sub_and_presence"]);

    let r = hamlet.request(&format!("<iq type='get' id='def1'><pubsub xmlns='{OWNER}'><default/></pubsub></iq>")).await;
    let form = r.get_child("pubsub", OWNER).unwrap().get_child("default", OWNER).unwrap().get_child("x", "jabber:x:data").unwrap();
    assert_eq!(field(form, "pubsub#access_model"), ["presence"]);
    assert_eq!(field(form, "pubsub#max_items"), ["1"]);

    for i in 1..=5 {
        hamlet.request(&simple_publish("p", "whitelisted", &i.to_string(), &i.to_string(), &[])).await;
    }
    let r = hamlet.request(&configure_form("whitelisted", &[("pubsub#max_items", "2")])).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let left = hamlet.request(&items_request("g", "hamlet@localhost", "whitelisted", "")).await;
    assert_eq!(entries(&left).iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), ["4", "5"], "the newest two stay");
    // Cancel leaves the configuration as it is.
    let r = hamlet
        .request(&format!("<iq type='set' id='c2'><pubsub xmlns='{OWNER}'><configure node='whitelisted'><x xmlns='jabber:x:data' type='cancel'/></configure></pubsub></iq>"))
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    let r = hamlet.request(&configure_form("whitelisted", &[("pubsub#frobnicate", "1")])).await;
    assert_eq!(condition(&r), "not-acceptable", "{}", show(&r));
    let r = hamlet.request(&format!("<iq type='get' id='config2'><pubsub xmlns='{OWNER}'><configure/></pubsub></iq>")).await;
    assert_eq!((condition(&r), pubsub_error(&r).as_deref()), ("bad-request".into(), Some("nodeid-required")));
    s.stop().await;
}

/// XEP-0060 §6.5.2-§6.5.9: all items (oldest first), the N most recent (§6.5.7), several by
/// id (§6.5.6), an id that does not exist (an empty result, §6.5.9.11), and a node that
/// does not persist items keeps the last one only (§6.5.4).
async fn retrieve_items(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["francisco"]).await;
    let mut f = s.login("francisco", "barracks").await;
    for i in 1..=5 {
        let r = f.request(&simple_publish("p", "princely_musings", &format!("i{i}"), &format!("entry {i}"), &[("pubsub#max_items", "10")])).await;
        assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    }
    let ids = |r: &Element| entries(r).into_iter().map(|(id, _)| id).collect::<Vec<_>>();
    let all = f.request(&items_request("items1", "francisco@localhost", "princely_musings", "")).await;
    assert_eq!(ids(&all), ["i1", "i2", "i3", "i4", "i5"]);
    let recent = f.request(&items_request("items2", "francisco@localhost", "princely_musings", " max_items='2'")).await;
    assert_eq!(ids(&recent), ["i4", "i5"]);
    let some = f
        .request(&format!("<iq type='get' id='items3'><pubsub xmlns='{PUBSUB}'><items node='princely_musings'><item id='i3'/><item id='i1'/></items></pubsub></iq>"))
        .await;
    assert_eq!(ids(&some), ["i1", "i3"]);
    let none = f
        .request(&format!("<iq type='get' id='items4'><pubsub xmlns='{PUBSUB}'><items node='princely_musings'><item id='nope'/></items></pubsub></iq>"))
        .await;
    assert_eq!(none.attr("type"), Some("result"));
    let items = none.get_child("pubsub", PUBSUB).unwrap().get_child("items", PUBSUB).unwrap();
    assert_eq!((items.attr("node"), items.children().count()), (Some("princely_musings"), 0));
    // Re-publishing an id replaces the item, which becomes the newest.
    f.request(&simple_publish("p", "princely_musings", "i2", "entry 2 again", &[])).await;
    let all = f.request(&items_request("items5", "francisco@localhost", "princely_musings", "")).await;
    assert_eq!(entries(&all).last().unwrap(), &("i2".to_string(), "entry 2 again".to_string()));
    assert_eq!(entries(&all).len(), 5);
    for i in 1..=3 {
        f.request(&simple_publish("t", "transient", &format!("t{i}"), "x", &[("pubsub#persist_items", "false"), ("pubsub#max_items", "10")])).await;
    }
    let last = f.request(&items_request("items6", "francisco@localhost", "transient", "")).await;
    assert_eq!(ids(&last), ["t3"]);
    s.stop().await;
}

/// XEP-0060 §6.5.4: a result that would pass 1 MiB of items holds the newest that fit,
/// with a XEP-0059 count of all of them.
async fn large_results_truncated(b: Backend) {
    let s = TestServer::start_with(b, |c| c.pep.max_bytes_per_user = 4 << 20).await;
    s.users(&["alice"]).await;
    let mut alice = s.login("alice", "a").await;
    let big = "x".repeat(200_000);
    for i in 0..6 {
        let r = alice.request(&simple_publish("p", "urn:test:big", &format!("b{i}"), &big, &[("pubsub#max_items", "10")])).await;
        assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    }
    let r = alice.request(&items_request("g", "alice@localhost", "urn:test:big", "")).await;
    let ids: Vec<String> = entries(&r).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["b1", "b2", "b3", "b4", "b5"]);
    let set = r.get_child("pubsub", PUBSUB).unwrap().get_child("set", "http://jabber.org/protocol/rsm").expect("a result set note");
    assert_eq!(set.get_child("count", "http://jabber.org/protocol/rsm").unwrap().text(), "6");
    assert_eq!(set.get_child("first", "http://jabber.org/protocol/rsm").unwrap().text(), "b1");
    let r = alice.request(&items_request("g2", "alice@localhost", "urn:test:big", " max_items='2'")).await;
    assert_eq!(entries(&r).len(), 2);
    assert!(r.get_child("pubsub", PUBSUB).unwrap().get_child("set", "http://jabber.org/protocol/rsm").is_none());
    s.stop().await;
}

/// Requests that are wrong in themselves get the error XEP-0060 gives them.
async fn bad_requests(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut bob = s.login("bob", "b").await;
    let cases: Vec<(String, &str, Option<&str>)> = vec![
        // No node.
        (format!("<iq type='set' id='b1'><pubsub xmlns='{PUBSUB}'><publish><item><x xmlns='urn:x'/></item></publish></pubsub></iq>"), "bad-request", Some("nodeid-required")),
        // No item, two items, no payload, two payloads.
        (format!("<iq type='set' id='b2'><pubsub xmlns='{PUBSUB}'><publish node='n'/></pubsub></iq>"), "bad-request", Some("item-required")),
        (format!("<iq type='set' id='b3'><pubsub xmlns='{PUBSUB}'><publish node='n'><item><x xmlns='urn:x'/></item><item><x xmlns='urn:x'/></item></publish></pubsub></iq>"), "bad-request", Some("invalid-payload")),
        (format!("<iq type='set' id='b4'><pubsub xmlns='{PUBSUB}'><publish node='n'><item id='i'/></publish></pubsub></iq>"), "bad-request", Some("payload-required")),
        (format!("<iq type='set' id='b5'><pubsub xmlns='{PUBSUB}'><publish node='n'><item><x xmlns='urn:x'/><y xmlns='urn:x'/></item></publish></pubsub></iq>"), "bad-request", Some("invalid-payload")),
        // Publish options that do not parse: no FORM_TYPE, another FORM_TYPE, not a submission, a bad value.
        (format!("<iq type='set' id='b6'><pubsub xmlns='{PUBSUB}'><publish node='n'><item><x xmlns='urn:x'/></item></publish><publish-options><x xmlns='jabber:x:data' type='submit'><field var='pubsub#access_model'><value>open</value></field></x></publish-options></pubsub></iq>"), "bad-request", None),
        (format!("<iq type='set' id='b7'><pubsub xmlns='{PUBSUB}'><publish node='n'><item><x xmlns='urn:x'/></item></publish><publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:other</value></field></x></publish-options></pubsub></iq>"), "bad-request", None),
        (format!("<iq type='set' id='b8'><pubsub xmlns='{PUBSUB}'><publish node='n'><item><x xmlns='urn:x'/></item></publish><publish-options><x xmlns='jabber:x:data' type='form'/></publish-options></pubsub></iq>"), "bad-request", None),
        (format!("<iq type='set' id='b9'><pubsub xmlns='{PUBSUB}'><publish node='n'><item><x xmlns='urn:x'/></item></publish>{}</pubsub></iq>", publish_options(&[("pubsub#max_items", "many")])), "bad-request", None),
        // An option the service does not know cannot be met (§7.1.5: rejected).
        (format!("<iq type='set' id='b10'><pubsub xmlns='{PUBSUB}'><publish node='n'><item><x xmlns='urn:x'/></item></publish>{}</pubsub></iq>", publish_options(&[("pubsub#frobnicate", "1")])), "conflict", Some("precondition-not-met")),
        (format!("<iq type='set' id='b11'><pubsub xmlns='{PUBSUB}'><publish node='n'><item><x xmlns='urn:x'/></item></publish>{}</pubsub></iq>", publish_options(&[("pubsub#access_model", "authorize")])), "conflict", Some("precondition-not-met")),
        // Unknown requests, unsupported ones, items of a node that does not exist, a bad max_items.
        (format!("<iq type='set' id='b12'><pubsub xmlns='{PUBSUB}'><frobnicate node='n'/></pubsub></iq>"), "bad-request", None),
        (format!("<iq type='get' id='b13'><pubsub xmlns='{PUBSUB}'><subscriptions/></pubsub></iq>"), "feature-not-implemented", Some("unsupported")),
        (format!("<iq type='get' id='b14'><pubsub xmlns='{PUBSUB}'><items node='nothing-here'/></pubsub></iq>"), "item-not-found", None),
        (format!("<iq type='get' id='b15'><pubsub xmlns='{PUBSUB}'><items/></pubsub></iq>"), "bad-request", Some("nodeid-required")),
        (format!("<iq type='get' id='b16'><pubsub xmlns='{PUBSUB}'><items node='n' max_items='lots'/></pubsub></iq>"), "bad-request", None),
    ];
    for (xml, cond, app) in &cases {
        let r = alice.request(xml).await;
        assert_eq!(condition(&r), *cond, "{xml}: {}", show(&r));
        if app.is_some() {
            assert_eq!(pubsub_error(&r).as_deref(), *app, "{xml}");
        }
    }
    // Nothing was created by the failed publishes.
    let r = alice.request(&items_request("g", "alice@localhost", "n", "")).await;
    assert_eq!(condition(&r), "item-not-found");
    // Someone else may not publish, create or configure at Alice's.
    for xml in [
        format!("<iq type='set' id='f1' to='alice@localhost'><pubsub xmlns='{PUBSUB}'><publish node='n'><item><x xmlns='urn:x'/></item></publish></pubsub></iq>"),
        format!("<iq type='set' id='f2' to='alice@localhost'><pubsub xmlns='{PUBSUB}'><create node='n'/></pubsub></iq>"),
        format!("<iq type='get' id='f3' to='alice@localhost'><pubsub xmlns='{OWNER}'><configure node='n'/></pubsub></iq>"),
    ] {
        let r = bob.request(&xml).await;
        assert_eq!(condition(&r), "forbidden", "{xml}");
    }
    // An account that does not exist.
    let r = bob.request(&items_request("f4", "nobody@localhost", "n", "")).await;
    assert_eq!(condition(&r), "service-unavailable");
    s.stop().await;
}

/// The limits: nodes per account, items per node (the oldest go), the size of an item
/// (XEP-0060 §7.1.3.4 payload-too-big), the bytes of all of an account's items, and the
/// stanza size around them all.
async fn limits(b: Backend) {
    let s = TestServer::start_with(b, |c| {
        c.pep.max_nodes_per_user = 2;
        c.pep.max_items_per_node = 3;
        c.pep.max_item_bytes = 2048;
        c.pep.max_bytes_per_user = 5000;
        c.c2s.max_stanza_size = 10_000;
    })
    .await;
    s.users(&["alice"]).await;
    let mut alice = s.login("alice", "a").await;
    let big = |n: usize| "x".repeat(n);
    assert_eq!(alice.request(&simple_publish("1", "n1", "a", "a", &[])).await.attr("type"), Some("result"));
    assert_eq!(alice.request(&simple_publish("2", "n2", "a", "a", &[])).await.attr("type"), Some("result"));
    let r = alice.request(&simple_publish("3", "n3", "a", "a", &[])).await;
    assert_eq!(condition(&r), "resource-constraint", "{}", show(&r));
    let r = alice.request(&format!("<iq type='set' id='c'><pubsub xmlns='{PUBSUB}'><create node='n3'/></pubsub></iq>")).await;
    assert_eq!(condition(&r), "resource-constraint");
    // max_items = max keeps the server's limit of 3.
    for i in 0..5 {
        let r = alice.request(&simple_publish("m", "n1", &i.to_string(), "v", &[("pubsub#max_items", "max")])).await;
        if i == 0 {
            // n1 exists with max_items 1: the option is not met.
            assert_eq!(pubsub_error(&r).as_deref(), Some("precondition-not-met"));
            alice.request(&configure_form("n1", &[("pubsub#max_items", "max")])).await;
            alice.request(&simple_publish("m", "n1", "0", "v", &[("pubsub#max_items", "max")])).await;
        }
    }
    let r = alice.request(&items_request("g", "alice@localhost", "n1", "")).await;
    assert_eq!(entries(&r).iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), ["2", "3", "4"]);
    let r = alice.request(&simple_publish("big", "n2", "b", &big(3000), &[])).await;
    assert_eq!((condition(&r), pubsub_error(&r).as_deref()), ("not-acceptable".into(), Some("payload-too-big")), "{}", show(&r));
    // n1 holds three small items; a third item of 1900 bytes passes the account's 5000.
    let r = alice.request(&simple_publish("q1", "n2", "b", &big(1900), &[("pubsub#max_items", "3")])).await;
    assert_eq!(pubsub_error(&r).as_deref(), Some("precondition-not-met"));
    alice.request(&configure_form("n2", &[("pubsub#max_items", "3")])).await;
    assert_eq!(alice.request(&simple_publish("q2", "n2", "b", &big(1900), &[])).await.attr("type"), Some("result"));
    assert_eq!(alice.request(&simple_publish("q3", "n2", "c", &big(1900), &[])).await.attr("type"), Some("result"));
    let r = alice.request(&simple_publish("q3", "n2", "d", &big(1900), &[])).await;
    assert_eq!(condition(&r), "resource-constraint", "{}", show(&r));
    assert!(r.get_child("error", CLIENT).unwrap().get_child("text", "urn:ietf:params:xml:ns:xmpp-stanzas").unwrap().text().contains("5000"));
    // Replacing an item of the same size is fine.
    assert_eq!(alice.request(&simple_publish("q4", "n2", "b", &big(1900), &[])).await.attr("type"), Some("result"));
    let usage = s.server().core().db.pep().usage(&jid::BareJid::new("alice@localhost").unwrap()).await.unwrap();
    assert!(usage > 1900 && usage <= 5000, "{usage}");
    // Deleting the node gives its bytes back.
    alice.request(&format!("<iq type='set' id='d'><pubsub xmlns='{OWNER}'><delete node='n2'/></pubsub></iq>")).await;
    assert_eq!(alice.request(&simple_publish("q5", "n2", "c", &big(1900), &[])).await.attr("type"), Some("result"));
    // An item in a stanza over the stanza limit ends the stream.
    alice.send(&simple_publish("huge", "n2", "h", &big(20_000), &[])).await;
    assert_eq!(alice.expect_stream_error().await.as_deref(), Some("policy-violation"));
    s.stop().await;
}

/// XEP-0060 §5.2 to §5.5 at an account (XEP-0163 §8.2): disco#items lists the nodes the
/// requester may read; disco#info on a node gives pubsub/leaf and its meta-data; disco#items
/// on a node lists its item ids.
async fn disco_nodes(b: Backend) {
    let s = TestServer::start(b).await;
    let (mut alice, mut bob) = two_contacts(&s, &[]).await;
    alice.request(&simple_publish("1", "n-presence", "i1", "x", &[])).await;
    alice.request(&simple_publish("2", "n-white", "i1", "x", &[("pubsub#access_model", "whitelist")])).await;
    alice.request(&simple_publish("3", "n-open", "i1", "x", &[("pubsub#access_model", "open"), ("pubsub#max_items", "5")])).await;
    alice.request(&simple_publish("4", "n-open", "i2", "x", &[])).await;
    let nodes = |r: &Element| -> Vec<String> {
        let mut v: Vec<String> = r.get_child("query", DISCO_ITEMS).unwrap().children().map(|i| i.attr("node").unwrap().to_string()).collect();
        v.sort();
        v
    };
    let own = alice.request(&format!("<iq type='get' id='i1'><query xmlns='{DISCO_ITEMS}'/></iq>")).await;
    assert_eq!(nodes(&own), ["n-open", "n-presence", "n-white"]);
    let item = own.get_child("query", DISCO_ITEMS).unwrap().children().next().unwrap().clone();
    assert_eq!(item.attr("jid"), Some("alice@localhost"));
    let seen = bob.request(&format!("<iq type='get' id='i2' to='alice@localhost'><query xmlns='{DISCO_ITEMS}'/></iq>")).await;
    assert_eq!(nodes(&seen), ["n-open", "n-presence"]);
    let info = bob.request(&format!("<iq type='get' id='i3' to='alice@localhost'><query xmlns='{DISCO_INFO}' node='n-open'/></iq>")).await;
    let q = info.get_child("query", DISCO_INFO).unwrap();
    assert_eq!(q.attr("node"), Some("n-open"));
    let identity = q.get_child("identity", DISCO_INFO).unwrap();
    assert_eq!((identity.attr("category"), identity.attr("type")), (Some("pubsub"), Some("leaf")));
    let meta = q.get_child("x", "jabber:x:data").unwrap();
    assert_eq!(meta.attr("type"), Some("result"));
    let value = |var: &str| meta.children().find(|f| f.attr("var") == Some(var)).unwrap().children().next().unwrap().text();
    assert_eq!(value("FORM_TYPE"), format!("{PUBSUB}#meta-data"));
    assert_eq!(value("pubsub#access_model"), "open");
    assert_eq!(value("pubsub#owner"), "alice@localhost");
    let items = bob.request(&format!("<iq type='get' id='i4' to='alice@localhost'><query xmlns='{DISCO_ITEMS}' node='n-open'/></iq>")).await;
    let names: Vec<&str> = items.get_child("query", DISCO_ITEMS).unwrap().children().map(|i| i.attr("name").unwrap()).collect();
    assert_eq!(names, ["i1", "i2"]);
    for (id, ns, node) in [("i5", DISCO_INFO, "n-white"), ("i6", DISCO_ITEMS, "n-white"), ("i7", DISCO_INFO, "nothing")] {
        let r = bob.request(&format!("<iq type='get' id='{id}' to='alice@localhost'><query xmlns='{ns}' node='{node}'/></iq>")).await;
        assert_eq!(condition(&r), "item-not-found", "{id}");
    }
    s.stop().await;
}

/// XEP-0163 §4.3.2 item 3: a contact the owner has blocked (XEP-0191) gets no
/// notifications.
async fn blocked_contact_not_notified(b: Backend) {
    let s = TestServer::start(b).await;
    let (mut alice, mut bob) = two_contacts(&s, &["urn:test:n"]).await;
    let r = alice.request("<iq type='set' id='blk'><block xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></block></iq>").await;
    assert_eq!(r.attr("type"), Some("result"));
    bob.drain().await;
    alice.drain().await;
    alice.request(&simple_publish("p", "urn:test:n", "1", "x", &[])).await;
    expect_event(&mut alice, "alice@localhost", "urn:test:n").await;
    bob.expect_silence(Duration::from_millis(300)).await;
    s.stop().await;
}

/// Deleting an account deletes its nodes and items (they cascade with the account), and its
/// explicit subscriptions to others' nodes: an account created again under the name
/// inherits none.
async fn account_deletion_deletes_nodes(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "carol"]).await;
    let mut alice = s.login("alice", "a").await;
    alice.request(&simple_publish("p", "urn:test:n", "1", "x", &[])).await;
    let mut carol = s.login("carol", "c").await;
    carol.request(&simple_publish("p", "urn:test:open", "1", "x", &[("pubsub#access_model", "open")])).await;
    let r = alice
        .request(&format!("<iq type='set' id='s' to='carol@localhost'><pubsub xmlns='{PUBSUB}'><subscribe node='urn:test:open' jid='alice@localhost'/></pubsub></iq>"))
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    drop(alice);
    let core = s.server().core().clone();
    let jid = jid::BareJid::new("alice@localhost").unwrap();
    assert!(starling::accounts::delete_account(&core, &jid).await.unwrap());
    starling::accounts::wait_sessions_ended(&core, &jid, Duration::from_secs(5)).await;
    assert!(core.db.pep().nodes(&jid).await.unwrap().is_empty());
    let carol_jid = jid::BareJid::new("carol@localhost").unwrap();
    let open = core.db.pep().node(&carol_jid, "urn:test:open").await.unwrap().unwrap();
    assert!(core.db.pep().subscribers(&open).await.unwrap().is_empty(), "its subscriptions went too");
    s.add_user("alice", "pw").await;
    let mut alice = s.login("alice", "a").await;
    let r = alice.request(&items_request("g", "alice@localhost", "urn:test:n", "")).await;
    assert_eq!(condition(&r), "item-not-found");
    assert_eq!(core.db.pep().usage(&jid).await.unwrap(), 0);
    alice.available().await;
    alice.drain().await;
    carol.request(&simple_publish("p2", "urn:test:open", "2", "y", &[])).await;
    alice.expect_silence(Duration::from_millis(300)).await;
    s.stop().await;
}

db_tests!(
    disco_shows_pep,
    tune_example,
    omemo_flow,
    caps_verified_and_cached,
    caps_unknown_hash_and_spoofed_answers,
    access_models,
    private_storage_whitelist,
    retract_delete_purge,
    last_items_on_presence,
    new_subscriber_gets_last_items,
    explicit_subscriptions,
    create_and_configure,
    retrieve_items,
    large_results_truncated,
    bad_requests,
    limits,
    disco_nodes,
    blocked_contact_not_notified,
    account_deletion_deletes_nodes
);
