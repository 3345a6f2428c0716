//! Avatars: XEP-0084 through PEP, kept together with the vCard photo and the XEP-0153 hash
//! in presence (XEP-0398).

use std::time::Duration;

use base64::Engine;
use minidom::Element;
use sha1::Digest;

use crate::common::client::show;
use crate::common::{Backend, Client, TestServer, befriend};
use crate::db_tests;
use crate::pep::{Caps, DISCO_INFO, EVENT, PUBSUB, expect_event, show_caps};

const DATA: &str = "urn:xmpp:avatar:data";
const METADATA: &str = "urn:xmpp:avatar:metadata";
const UPDATE: &str = "vcard-temp:x:update";
const VCARD: &str = "vcard-temp";

/// A small "image" and its XEP-0084 id.
fn image(seed: &str) -> (Vec<u8>, String, String) {
    let bytes = format!("\u{89}PNG fake image {seed}").into_bytes();
    let id: String = sha1::Sha1::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
    (bytes, id, b64)
}

fn open_options() -> String {
    format!(
        "<publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{PUBSUB}#publish-options</value></field>\
         <field var='pubsub#access_model'><value>open</value></field></x></publish-options>"
    )
}

/// XEP-0084 §4.1: the data, published first (here with open access, as OMEMO clients
/// publish avatars).
fn publish_data(id: &str, b64: &str, options: &str) -> String {
    format!("<iq type='set' id='publish1'><pubsub xmlns='{PUBSUB}'><publish node='{DATA}'><item id='{id}'><data xmlns='{DATA}'>{b64}</data></item></publish>{options}</pubsub></iq>")
}

/// XEP-0084 §4.2: the metadata.
fn publish_metadata(id: &str, bytes: usize, options: &str) -> String {
    format!(
        "<iq type='set' id='publish2'><pubsub xmlns='{PUBSUB}'><publish node='{METADATA}'><item id='{id}'><metadata xmlns='{METADATA}'>\
         <info bytes='{bytes}' id='{id}' height='64' type='image/png' width='64'/></metadata></item></publish>{options}</pubsub></iq>"
    )
}

async fn vcard_photo(c: &mut Client, of: &str) -> Option<(String, String)> {
    let r = c.request(&format!("<iq type='get' id='vc2' to='{of}'><vCard xmlns='{VCARD}'/></iq>")).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let photo = r.get_child("vCard", VCARD).unwrap().get_child("PHOTO", VCARD)?;
    Some((photo.get_child("TYPE", VCARD).unwrap().text(), photo.get_child("BINVAL", VCARD).unwrap().text()))
}

/// The XEP-0153 photo element of a presence: `None` without one, `Some("")` empty.
fn photo_hash(p: &Element) -> Option<String> {
    p.get_child("x", UPDATE)?.get_child("photo", UPDATE).map(|p| p.text())
}

async fn presence_from(c: &mut Client, from: &str) -> Element {
    let from = from.to_string();
    c.expect("presence", |e| e.name() == "presence" && e.attr("from") == Some(from.as_str()) && e.attr("type").is_none()).await
}

/// XEP-0084 §4 flow (data, then metadata; the contact is notified and fetches the data by
/// id) and XEP-0398: the avatar becomes the vCard photo (anyone can read it) and its hash
/// is put in presence (§5) unless the client put a photo element itself; directed presence
/// too. Disabling the avatar removes the photo.
async fn pep_avatar_in_vcard_and_presence(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["juliet", "romeo", "stranger"]).await;
    let mut juliet = s.login("juliet", "chamber").await;
    let mut romeo = s.login("romeo", "home").await;
    let mut stranger = s.login("stranger", "x").await;
    juliet.available().await;
    romeo.available().await;
    befriend(&mut juliet, &mut romeo).await;
    let info = juliet.request(&format!("<iq type='get' id='01' to='juliet@localhost'><query xmlns='{DISCO_INFO}'/></iq>")).await;
    assert!(info.get_child("query", DISCO_INFO).unwrap().children().any(|f| f.attr("var") == Some("urn:xmpp:pep-vcard-conversion:0")));
    show_caps(&mut romeo, &Caps::new("https://example.org/r", &[&format!("{METADATA}+notify")]), true).await;
    romeo.drain().await;

    let (bytes, id, b64) = image("one");
    let r = juliet.request(&publish_data(&id, &b64, &open_options())).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let r = juliet.request(&publish_metadata(&id, bytes.len(), &open_options())).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let m = expect_event(&mut romeo, "juliet@localhost", METADATA).await;
    let info = m.get_child("event", EVENT).unwrap().get_child("items", EVENT).unwrap().get_child("item", EVENT).unwrap();
    assert_eq!(info.attr("id"), Some(id.as_str()));
    let r = romeo
        .request(&format!("<iq type='get' id='retrieve1' to='juliet@localhost'><pubsub xmlns='{PUBSUB}'><items node='{DATA}'><item id='{id}'/></items></pubsub></iq>"))
        .await;
    let data = r.get_child("pubsub", PUBSUB).unwrap().get_child("items", PUBSUB).unwrap().get_child("item", PUBSUB).unwrap().get_child("data", DATA).unwrap().text();
    assert_eq!(data, b64);

    // The vCard, as anyone reads it (XEP-0153 §3.2).
    let (kind, binval) = vcard_photo(&mut stranger, "juliet@localhost").await.expect("a photo in the vCard");
    assert_eq!(kind, "image/png");
    assert_eq!(base64::engine::general_purpose::STANDARD.decode(binval.trim()).unwrap(), bytes);

    // Presence: the hash is added (§5 example 1).
    romeo.drain().await;
    juliet.send("<presence/>").await;
    let p = presence_from(&mut romeo, "juliet@localhost/chamber").await;
    assert_eq!(photo_hash(&p).as_deref(), Some(id.as_str()), "{}", show(&p));
    // An empty photo element is the client's word (no avatar to show): left alone.
    juliet.send(&format!("<presence><x xmlns='{UPDATE}'><photo/></x></presence>")).await;
    let p = presence_from(&mut romeo, "juliet@localhost/chamber").await;
    assert_eq!(photo_hash(&p).as_deref(), Some(""));
    // An update element without a photo is completed.
    juliet.send(&format!("<presence><x xmlns='{UPDATE}'/></presence>")).await;
    let p = presence_from(&mut romeo, "juliet@localhost/chamber").await;
    assert_eq!(photo_hash(&p).as_deref(), Some(id.as_str()));
    // Directed presence too (e.g. a MUC join).
    stranger.available().await;
    stranger.drain().await;
    juliet.send("<presence to='stranger@localhost'/>").await;
    let p = presence_from(&mut stranger, "juliet@localhost/chamber").await;
    assert_eq!(photo_hash(&p).as_deref(), Some(id.as_str()));

    // Avatar disabled (XEP-0084 §4.5): no photo in the vCard, and presence says so.
    let r = juliet.request(&format!("<iq type='set' id='publish3'><pubsub xmlns='{PUBSUB}'><publish node='{METADATA}'><item><metadata xmlns='{METADATA}'/></item></publish></pubsub></iq>")).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    assert!(vcard_photo(&mut stranger, "juliet@localhost").await.is_none());
    romeo.drain().await;
    juliet.send("<presence/>").await;
    let p = presence_from(&mut romeo, "juliet@localhost/chamber").await;
    assert_eq!(photo_hash(&p).as_deref(), Some(""));
    s.stop().await;
}

/// XEP-0398 §4.2: a client that knows only vCard avatars (XEP-0153 §3.1) sets a photo: it
/// becomes the PEP avatar (data and metadata items whose id is its SHA-1), those who asked
/// for metadata notifications are told, and presence carries the hash. The same photo
/// again changes nothing; a vCard without a photo disables the avatar.
async fn vcard_photo_becomes_pep_avatar(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["juliet", "romeo"]).await;
    let mut juliet = s.login("juliet", "balcony").await;
    let mut romeo = s.login("romeo", "home").await;
    juliet.available().await;
    romeo.available().await;
    befriend(&mut juliet, &mut romeo).await;
    show_caps(&mut romeo, &Caps::new("https://example.org/r", &[&format!("{METADATA}+notify")]), true).await;
    romeo.drain().await;
    let (bytes, id, b64) = image("vcard");
    let vcard = format!(
        "<iq type='set' id='vc1'><vCard xmlns='{VCARD}'><BDAY>1476-06-09</BDAY><N><GIVEN>Juliet</GIVEN><FAMILY>Capulet</FAMILY></N>\
         <PHOTO><TYPE>image/jpeg</TYPE><BINVAL>\n{}\n{}\n</BINVAL></PHOTO></vCard></iq>",
        &b64[..8],
        &b64[8..]
    );
    let r = juliet.request(&vcard).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let m = expect_event(&mut romeo, "juliet@localhost", METADATA).await;
    let item = m.get_child("event", EVENT).unwrap().get_child("items", EVENT).unwrap().get_child("item", EVENT).unwrap();
    assert_eq!(item.attr("id"), Some(id.as_str()));
    let info = item.get_child("metadata", METADATA).unwrap().get_child("info", METADATA).unwrap();
    assert_eq!(info.attr("id"), Some(id.as_str()));
    assert_eq!(info.attr("type"), Some("image/jpeg"));
    assert_eq!(info.attr("bytes"), Some(bytes.len().to_string().as_str()));
    let r = romeo
        .request(&format!("<iq type='get' id='d' to='juliet@localhost'><pubsub xmlns='{PUBSUB}'><items node='{DATA}'><item id='{id}'/></items></pubsub></iq>"))
        .await;
    let data = r.get_child("pubsub", PUBSUB).unwrap().get_child("items", PUBSUB).unwrap().get_child("item", PUBSUB).expect("the data item").get_child("data", DATA).unwrap().text();
    assert_eq!(base64::engine::general_purpose::STANDARD.decode(data).unwrap(), bytes);
    // The rest of the vCard is as the client set it.
    let r = romeo.request("<iq type='get' id='vc2' to='juliet@localhost'><vCard xmlns='vcard-temp'/></iq>").await;
    assert_eq!(r.get_child("vCard", VCARD).unwrap().get_child("BDAY", VCARD).unwrap().text(), "1476-06-09");
    romeo.drain().await;
    juliet.send("<presence/>").await;
    let p = presence_from(&mut romeo, "juliet@localhost/balcony").await;
    assert_eq!(photo_hash(&p).as_deref(), Some(id.as_str()));
    // The same photo again: no new avatar.
    juliet.request(&vcard.replace("vc1", "vc3")).await;
    romeo.expect_silence(Duration::from_millis(300)).await;
    // No photo: the avatar is disabled (an empty metadata item).
    juliet.request(&format!("<iq type='set' id='vc4'><vCard xmlns='{VCARD}'><FN>Juliet</FN></vCard></iq>")).await;
    let m = expect_event(&mut romeo, "juliet@localhost", METADATA).await;
    let metadata = m.get_child("event", EVENT).unwrap().get_child("items", EVENT).unwrap().get_child("item", EVENT).unwrap().get_child("metadata", METADATA).unwrap();
    assert_eq!(metadata.children().count(), 0);
    s.stop().await;
}

/// XEP-0398 §6 and §4.1: an avatar only contacts may read is not copied into the vCard
/// (which anyone may read); nor is one whose data does not hash to its id.
async fn avatar_not_copied_when_private_or_wrong(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["juliet", "nurse"]).await;
    let mut juliet = s.login("juliet", "j").await;
    let mut nurse = s.login("nurse", "n").await;
    let (bytes, id, b64) = image("private");
    juliet.request(&publish_data(&id, &b64, "")).await;
    let r = juliet.request(&publish_metadata(&id, bytes.len(), "")).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    assert!(vcard_photo(&mut juliet, "juliet@localhost").await.is_none(), "a presence-only avatar stays out of the vCard");
    let (_, other_id, _) = image("other");
    let (bytes2, _, b64_2) = image("mismatch");
    nurse.request(&publish_data(&other_id, &b64_2, &open_options())).await;
    nurse.request(&publish_metadata(&other_id, bytes2.len(), &open_options())).await;
    assert!(vcard_photo(&mut nurse, "nurse@localhost").await.is_none(), "data that does not hash to its id is not copied");
    s.stop().await;
}

db_tests!(pep_avatar_in_vcard_and_presence, vcard_photo_becomes_pep_avatar, avatar_not_copied_when_private_or_wrong);
