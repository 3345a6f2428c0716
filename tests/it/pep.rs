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

db_tests!(disco_shows_pep, tune_example);
