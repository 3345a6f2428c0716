//! Bookmarks (XEP-0402, XEP-0048 in PEP and in private XML storage) kept as one
//! (XEP-0402 §5.3, XEP-0411): what a client writes in any of the three stores, the others
//! see, and the clients that asked for notifications of a node are told.

use std::time::Duration;

use minidom::Element;

use crate::common::client::{condition, show};
use crate::common::{Backend, Client, TestServer, befriend};
use crate::db_tests;
use crate::pep::{Caps, DISCO_INFO, EVENT, PUBSUB, expect_event, pubsub_error, show_caps};

const BOOKMARKS: &str = "urn:xmpp:bookmarks:1";
const LEGACY: &str = "storage:bookmarks";
const PRIVATE: &str = "jabber:iq:private";

fn bookmarks_options() -> String {
    format!(
        "<publish-options><x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>{PUBSUB}#publish-options</value></field>\
         <field var='pubsub#persist_items'><value>true</value></field>\
         <field var='pubsub#max_items'><value>max</value></field>\
         <field var='pubsub#send_last_published_item'><value>never</value></field>\
         <field var='pubsub#access_model'><value>whitelist</value></field></x></publish-options>"
    )
}

/// XEP-0402 §3.3: add (or edit) a bookmark.
fn add(id: &str, room: &str, conference: &str) -> String {
    format!(
        "<iq type='set' id='{id}'><pubsub xmlns='{PUBSUB}'><publish node='{BOOKMARKS}'><item id='{room}'>{conference}</item></publish>{}</pubsub></iq>",
        bookmarks_options()
    )
}

fn retract(id: &str, room: &str) -> String {
    format!("<iq type='set' id='{id}'><pubsub xmlns='{PUBSUB}'><retract node='{BOOKMARKS}' notify='true'><item id='{room}'/></retract></pubsub></iq>")
}

fn set_private(id: &str, storage_children: &str) -> String {
    format!("<iq type='set' id='{id}'><query xmlns='{PRIVATE}'><storage xmlns='{LEGACY}'>{storage_children}</storage></query></iq>")
}

/// Rooms of the XEP-0402 node: (item id, name, autojoin).
async fn native_rooms(c: &mut Client) -> Vec<(String, Option<String>, Option<String>)> {
    let r = c.request(&format!("<iq type='get' id='retrieve1'><pubsub xmlns='{PUBSUB}'><items node='{BOOKMARKS}'/></pubsub></iq>")).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let items = r.get_child("pubsub", PUBSUB).unwrap().get_child("items", PUBSUB).unwrap();
    let mut rooms: Vec<_> = items
        .children()
        .map(|i| {
            let c = i.get_child("conference", BOOKMARKS).unwrap();
            (i.attr("id").unwrap().to_string(), c.attr("name").map(str::to_string), c.attr("autojoin").map(str::to_string))
        })
        .collect();
    rooms.sort();
    rooms
}

fn storage_rooms(storage: &Element) -> Vec<(String, Option<String>)> {
    let mut rooms: Vec<_> = storage
        .children()
        .filter(|c| c.name() == "conference")
        .map(|c| (c.attr("jid").unwrap().to_string(), c.attr("name").map(str::to_string)))
        .collect();
    rooms.sort();
    rooms
}

async fn private_storage(c: &mut Client) -> Element {
    let r = c.request(&format!("<iq type='get' id='pg'><query xmlns='{PRIVATE}'><storage xmlns='{LEGACY}'/></query></iq>")).await;
    r.get_child("query", PRIVATE).unwrap().get_child("storage", LEGACY).unwrap().clone()
}

async fn pep_storage(c: &mut Client) -> Element {
    let r = c.request(&format!("<iq type='get' id='lg'><pubsub xmlns='{PUBSUB}'><items node='{LEGACY}'/></pubsub></iq>")).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let items = r.get_child("pubsub", PUBSUB).unwrap().get_child("items", PUBSUB).unwrap();
    let item = items.children().next().expect("one item");
    assert_eq!(item.attr("id"), Some("current"));
    item.get_child("storage", LEGACY).unwrap().clone()
}

/// A modern client (XEP-0402 notifications), a legacy PEP client (XEP-0048 notifications)
/// and a legacy private-XML client (no notifications), all of Juliet.
async fn three_clients(s: &TestServer) -> (Client, Client, Client) {
    s.users(&["juliet"]).await;
    let mut modern = s.login("juliet", "modern").await;
    let mut pep = s.login("juliet", "pep").await;
    let mut private = s.login("juliet", "private").await;
    show_caps(&mut modern, &Caps::new("https://example.org/modern", &[&format!("{BOOKMARKS}+notify")]), true).await;
    show_caps(&mut pep, &Caps::new("https://example.org/pep", &[&format!("{LEGACY}+notify")]), true).await;
    show_caps(&mut private, &Caps::new("https://example.org/private", &[]), true).await;
    for c in [&mut modern, &mut pep, &mut private] {
        c.drain().await;
    }
    (modern, pep, private)
}

/// XEP-0402 §3 examples: add, retrieve, edit (extensions kept), remove with notify, the
/// notifications of §4; and the compatibility features on the account (§5.3, §6;
/// XEP-0411 §2).
async fn bookmarks2_examples(b: Backend) {
    let s = TestServer::start(b).await;
    let (mut modern, mut pep, mut private) = three_clients(&s).await;
    let info = modern.request(&format!("<iq type='get' id='d' to='juliet@localhost'><query xmlns='{DISCO_INFO}'/></iq>")).await;
    let features: Vec<&str> = info.get_child("query", DISCO_INFO).unwrap().children().filter_map(|f| f.attr("var")).collect();
    for f in ["urn:xmpp:bookmarks:1#compat", "urn:xmpp:bookmarks:1#compat-pep", "urn:xmpp:bookmarks-conversion:0"] {
        assert!(features.contains(&f), "{f}");
    }
    let r = modern
        .request(&add("pip1", "theplay@conference.shakespeare.lit", &format!("<conference xmlns='{BOOKMARKS}' name='The Play&apos;s the Thing' autojoin='true'><nick>JC</nick></conference>")))
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let m = expect_event(&mut modern, "juliet@localhost", BOOKMARKS).await;
    let item = m.get_child("event", EVENT).unwrap().get_child("items", EVENT).unwrap().get_child("item", EVENT).unwrap();
    assert_eq!(item.attr("id"), Some("theplay@conference.shakespeare.lit"));
    assert_eq!(item.get_child("conference", BOOKMARKS).unwrap().attr("autojoin"), Some("true"));
    let r = modern
        .request(&add("pip2", "orchard@conference.shakespeare.lit", &format!("<conference xmlns='{BOOKMARKS}' name='The Orcard' autojoin='1'><nick>JC</nick><extensions><state xmlns='http://myclient.example/bookmark/state' minimized='true'/></extensions></conference>")))
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    expect_event(&mut modern, "juliet@localhost", BOOKMARKS).await;
    assert_eq!(
        native_rooms(&mut modern).await,
        [
            ("orchard@conference.shakespeare.lit".to_string(), Some("The Orcard".to_string()), Some("1".to_string())),
            ("theplay@conference.shakespeare.lit".to_string(), Some("The Play's the Thing".to_string()), Some("true".to_string())),
        ]
    );
    // The legacy PEP client was told of the XEP-0048 copy, twice (one per change).
    for _ in 0..2 {
        let m = expect_event(&mut pep, "juliet@localhost", LEGACY).await;
        let storage = m.get_child("event", EVENT).unwrap().get_child("items", EVENT).unwrap().get_child("item", EVENT).unwrap().get_child("storage", LEGACY).unwrap().clone();
        assert!(!storage_rooms(&storage).is_empty());
    }
    // Edit: the typo fixed, the extensions kept by the client.
    modern
        .request(&add("pip3", "orchard@conference.shakespeare.lit", &format!("<conference xmlns='{BOOKMARKS}' name='The Orchard' autojoin='true'><nick>JC</nick><extensions><state xmlns='http://myclient.example/bookmark/state' minimized='true'/></extensions></conference>")))
        .await;
    expect_event(&mut modern, "juliet@localhost", BOOKMARKS).await;
    // Remove with notify: a retract notification.
    let r = modern.request(&retract("rb1", "theplay@conference.shakespeare.lit")).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let m = expect_event(&mut modern, "juliet@localhost", BOOKMARKS).await;
    let retracted = m.get_child("event", EVENT).unwrap().get_child("items", EVENT).unwrap().get_child("retract", EVENT).unwrap();
    assert_eq!(retracted.attr("id"), Some("theplay@conference.shakespeare.lit"));
    // Every store agrees.
    assert_eq!(storage_rooms(&private_storage(&mut private).await), [("orchard@conference.shakespeare.lit".to_string(), Some("The Orchard".to_string()))]);
    pep.drain().await;
    let storage = pep_storage(&mut pep).await;
    assert_eq!(storage_rooms(&storage), [("orchard@conference.shakespeare.lit".to_string(), Some("The Orchard".to_string()))]);
    let conference = storage.children().next().unwrap();
    assert_eq!(conference.get_child("nick", LEGACY).unwrap().text(), "JC");
    private.expect_silence(Duration::from_millis(200)).await;
    s.stop().await;
}

/// XEP-0411 §4: a legacy client writing private XML makes the PEP stores follow, with
/// notifications of the XEP-0048 node (MUST) and of the XEP-0402 rooms that changed
/// (only those, XEP-0402 §5.3.2); a room's XEP-0402 extensions survive the edit.
async fn private_xml_seen_in_pep(b: Backend) {
    let s = TestServer::start(b).await;
    let (mut modern, mut pep, mut private) = three_clients(&s).await;
    modern
        .request(&add("a1", "orchard@muc.example", &format!("<conference xmlns='{BOOKMARKS}' name='Orchard'><extensions><x xmlns='urn:client'/></extensions></conference>")))
        .await;
    modern.drain().await;
    pep.drain().await;
    let r = private
        .request(&set_private("p1", "<conference jid='orchard@muc.example' name='Orchard'/><conference jid='council@muc.example' name='Council' autojoin='true'><nick>Puck</nick></conference><url name='Works' url='http://example.org/'/>"))
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    // One new room: one XEP-0402 notification; the orchard is unchanged.
    let m = expect_event(&mut modern, "juliet@localhost", BOOKMARKS).await;
    let item = m.get_child("event", EVENT).unwrap().get_child("items", EVENT).unwrap().get_child("item", EVENT).unwrap();
    assert_eq!(item.attr("id"), Some("council@muc.example"));
    let conference = item.get_child("conference", BOOKMARKS).unwrap();
    assert_eq!(conference.attr("jid"), None);
    assert_eq!(conference.get_child("nick", BOOKMARKS).unwrap().text(), "Puck");
    modern.expect_silence(Duration::from_millis(300)).await;
    let m = expect_event(&mut pep, "juliet@localhost", LEGACY).await;
    let storage = m.get_child("event", EVENT).unwrap().get_child("items", EVENT).unwrap().get_child("item", EVENT).unwrap().get_child("storage", LEGACY).unwrap();
    assert_eq!(storage_rooms(storage).len(), 2);
    // The orchard renamed, the council removed.
    private.request(&set_private("p2", "<conference jid='orchard@muc.example' name='The Orchard'/><url name='Works' url='http://example.org/'/>")).await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let m = expect_event(&mut modern, "juliet@localhost", BOOKMARKS).await;
        let items = m.get_child("event", EVENT).unwrap().get_child("items", EVENT).unwrap().clone();
        seen.push(items.children().map(|c| (c.name().to_string(), c.attr("id").unwrap().to_string())).next().unwrap());
    }
    seen.sort();
    assert_eq!(seen, [("item".to_string(), "orchard@muc.example".to_string()), ("retract".to_string(), "council@muc.example".to_string())]);
    // The orchard kept its XEP-0402 extensions.
    let r = modern.request(&format!("<iq type='get' id='g'><pubsub xmlns='{PUBSUB}'><items node='{BOOKMARKS}'/></pubsub></iq>")).await;
    let items = r.get_child("pubsub", PUBSUB).unwrap().get_child("items", PUBSUB).unwrap();
    let orchard = items.children().next().unwrap().get_child("conference", BOOKMARKS).unwrap();
    assert_eq!(orchard.attr("name"), Some("The Orchard"));
    assert!(orchard.get_child("extensions", BOOKMARKS).unwrap().has_child("x", "urn:client"));
    // A modern client's change keeps the url bookmark of the legacy format.
    modern.request(&add("a2", "new@muc.example", &format!("<conference xmlns='{BOOKMARKS}'/>"))).await;
    let storage = private_storage(&mut private).await;
    assert_eq!(storage_rooms(&storage).len(), 2);
    assert!(storage.children().any(|c| c.name() == "url" && c.attr("url") == Some("http://example.org/")));
    s.stop().await;
}

/// XEP-0048 §3 in PEP (the `storage:bookmarks` node, one `current` item): the private
/// XML copy and the XEP-0402 rooms follow.
async fn legacy_pep_seen_elsewhere(b: Backend) {
    let s = TestServer::start(b).await;
    let (mut modern, mut pep, mut private) = three_clients(&s).await;
    let r = pep
        .request(&format!(
            "<iq type='set' id='pip1'><pubsub xmlns='{PUBSUB}'><publish node='{LEGACY}'><item id='current'><storage xmlns='{LEGACY}'>\
             <conference name='The Play&apos;s the Thing' autojoin='true' jid='theplay@conference.shakespeare.lit'><nick>JC</nick></conference>\
             </storage></item></publish><publish-options><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>{PUBSUB}#publish-options</value></field>\
             <field var='pubsub#persist_items'><value>true</value></field><field var='pubsub#access_model'><value>whitelist</value></field>\
             </x></publish-options></pubsub></iq>"
        ))
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    expect_event(&mut pep, "juliet@localhost", LEGACY).await;
    let m = expect_event(&mut modern, "juliet@localhost", BOOKMARKS).await;
    let item = m.get_child("event", EVENT).unwrap().get_child("items", EVENT).unwrap().get_child("item", EVENT).unwrap();
    assert_eq!(item.attr("id"), Some("theplay@conference.shakespeare.lit"));
    assert_eq!(
        native_rooms(&mut modern).await,
        [("theplay@conference.shakespeare.lit".to_string(), Some("The Play's the Thing".to_string()), Some("true".to_string()))]
    );
    assert_eq!(
        storage_rooms(&private_storage(&mut private).await),
        [("theplay@conference.shakespeare.lit".to_string(), Some("The Play's the Thing".to_string()))]
    );
    s.stop().await;
}

/// XEP-0411 §6: bookmarks that were in private XML before (written to the store directly,
/// as a server that did not convert would have left them) are in PEP at first use.
async fn old_private_bookmarks_copied(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["juliet"]).await;
    let owner = jid::BareJid::new("juliet@localhost").unwrap();
    let storage = "<storage xmlns='storage:bookmarks'><conference jid='old@muc.example' name='Old' autojoin='true'/></storage>";
    s.server().core().db.private().set(&owner, &[(LEGACY.to_string(), storage.to_string())]).await.unwrap();
    let mut modern = s.login("juliet", "modern").await;
    assert_eq!(native_rooms(&mut modern).await, [("old@muc.example".to_string(), Some("Old".to_string()), Some("true".to_string()))]);
    assert_eq!(storage_rooms(&pep_storage(&mut modern).await), [("old@muc.example".to_string(), Some("Old".to_string()))]);
    // A second account whose first bookmark use is a publish: the old ones are kept.
    s.users(&["romeo"]).await;
    let romeo_jid = jid::BareJid::new("romeo@localhost").unwrap();
    s.server().core().db.private().set(&romeo_jid, &[(LEGACY.to_string(), storage.to_string())]).await.unwrap();
    let mut romeo = s.login("romeo", "r").await;
    romeo.request(&add("a", "new@muc.example", &format!("<conference xmlns='{BOOKMARKS}' name='New'/>"))).await;
    let rooms: Vec<String> = native_rooms(&mut romeo).await.into_iter().map(|r| r.0).collect();
    assert_eq!(rooms, ["new@muc.example", "old@muc.example"]);
    assert_eq!(storage_rooms(&private_storage(&mut romeo).await).len(), 2);
    s.stop().await;
}

/// Bookmarks stay private: a contact can read none of the three stores, gets no
/// notifications, and a XEP-0402 node another client made readable by others gets no
/// copies (XEP-0411 §5).
async fn bookmarks_stay_private(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["juliet", "romeo"]).await;
    let mut juliet = s.login("juliet", "j").await;
    let mut romeo = s.login("romeo", "r").await;
    juliet.available().await;
    romeo.available().await;
    befriend(&mut juliet, &mut romeo).await;
    show_caps(&mut romeo, &Caps::new("https://example.org/all", &[&format!("{BOOKMARKS}+notify"), &format!("{LEGACY}+notify")]), true).await;
    romeo.drain().await;
    juliet.request(&set_private("p1", "<conference jid='secret@muc.example' name='Secret'><password>pw</password></conference>")).await;
    romeo.expect_silence(Duration::from_millis(300)).await;
    for node in [BOOKMARKS, LEGACY] {
        let r = romeo.request(&format!("<iq type='get' id='x' to='juliet@localhost'><pubsub xmlns='{PUBSUB}'><items node='{node}'/></pubsub></iq>")).await;
        assert_eq!((condition(&r), pubsub_error(&r).as_deref()), ("not-allowed".into(), Some("closed-node")), "{node}");
    }
    let r = romeo.request(&format!("<iq type='get' id='y' to='juliet@localhost'><query xmlns='{PRIVATE}'><storage xmlns='{LEGACY}'/></query></iq>")).await;
    assert_eq!(condition(&r), "forbidden");

    // Another account whose XEP-0402 node was made open by a client: no copies into it.
    s.users(&["nurse"]).await;
    let mut nurse = s.login("nurse", "n").await;
    let r = nurse
        .request(&format!("<iq type='set' id='c'><pubsub xmlns='{PUBSUB}'><create node='{BOOKMARKS}'/><configure><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{PUBSUB}#node_config</value></field><field var='pubsub#access_model'><value>open</value></field></x></configure></pubsub></iq>"))
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    nurse.request(&set_private("p2", "<conference jid='secret@muc.example'/>")).await;
    let r = romeo.request(&format!("<iq type='get' id='z' to='nurse@localhost'><pubsub xmlns='{PUBSUB}'><items node='{BOOKMARKS}'/></pubsub></iq>")).await;
    assert_eq!(r.attr("type"), Some("result"));
    let items = r.get_child("pubsub", PUBSUB).unwrap().get_child("items", PUBSUB).unwrap();
    assert_eq!(items.children().count(), 0, "nothing copied into a node others read: {}", show(&r));
    s.stop().await;
}

db_tests!(bookmarks2_examples, private_xml_seen_in_pep, legacy_pep_seen_elsewhere, old_private_bookmarks_copied, bookmarks_stay_private);
