//! XEP-0357 Push Notifications on the wire. The app server's push service is played by a
//! second logged-in client, `app@localhost/server`: an IQ to a full JID is delivered to
//! that client, which reads the notification and answers it with a result or an error.

use std::collections::BTreeMap;
use std::time::Duration;

use jid::{BareJid, FullJid};
use minidom::Element;

use crate::common::client::{CLIENT, STANZAS, show};
use crate::common::{Backend, Client, TestServer, befriend};
use crate::db_tests;

const PUSH: &str = "urn:xmpp:push:0";
const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const DATA: &str = "jabber:x:data";
const SM: &str = "urn:xmpp:sm:3";
const CSI: &str = "urn:xmpp:csi:0";
const SERVICE: &str = "app@localhost/server";
const PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";

/// A server with no coalescing (every message notified at once) unless `f` says otherwise.
async fn start(b: Backend, f: impl FnOnce(&mut starling::Config)) -> TestServer {
    let s = TestServer::start_with(b, |c| {
        c.push.min_interval = 0;
        f(c)
    })
    .await;
    s.users(&["romeo", "juliet", "app"]).await;
    s
}

/// The enable request Conversations sends: the app server's secret in the publish options
/// (and a field Siskin-like apps add, to be passed through).
fn enable_xml(id: &str, node: &str) -> String {
    format!(
        "<iq type='set' id='{id}'><enable xmlns='{PUSH}' jid='{SERVICE}' node='{node}'><x xmlns='{DATA}' type='submit'>\
         <field var='FORM_TYPE'><value>{PUBLISH_OPTIONS}</value></field>\
         <field var='secret'><value>eruio234vzxc2kla-91</value></field>\
         <field var='endpoint'><value>https://push.example/v1/abc</value></field></x></enable></iq>"
    )
}

async fn enable(c: &mut Client, node: &str) {
    let r = c.request(&enable_xml("en1", node)).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
}

/// The next notification the app server gets.
async fn notification(app: &mut Client) -> Element {
    app.expect("a push notification", |e| e.name() == "iq" && e.attr("type") == Some("set") && e.has_child("pubsub", PUBSUB)).await
}

async fn answer(app: &mut Client, iq: &Element) {
    app.send(&format!("<iq type='result' id='{}' to='{}'/>", iq.attr("id").unwrap(), iq.attr("from").unwrap())).await;
}

async fn answer_error(app: &mut Client, iq: &Element, kind: &str, condition: &str) {
    app.send(&format!(
        "<iq type='error' id='{}' to='{}'><error type='{kind}'><{condition} xmlns='{STANZAS}'/></error></iq>",
        iq.attr("id").unwrap(),
        iq.attr("from").unwrap()
    ))
    .await;
}

/// The fields of a form, by var.
fn fields(form: &Element) -> BTreeMap<String, String> {
    form.children()
        .filter(|f| f.is("field", DATA))
        .map(|f| (f.attr("var").unwrap().to_string(), f.get_child("value", DATA).map(|v| v.text()).unwrap_or_default()))
        .collect()
}

/// The node published to, and the summary form's fields.
fn summary(iq: &Element) -> (String, BTreeMap<String, String>) {
    let publish = iq.get_child("pubsub", PUBSUB).unwrap().get_child("publish", PUBSUB).expect("publish");
    let form = publish
        .get_child("item", PUBSUB)
        .and_then(|i| i.get_child("notification", PUSH))
        .and_then(|n| n.get_child("x", DATA))
        .unwrap_or_else(|| panic!("no summary form in {}", show(iq)));
    (publish.attr("node").unwrap().to_string(), fields(form))
}

fn body(m: &Element) -> String {
    m.get_child("body", CLIENT).map(|b| b.text()).unwrap_or_default()
}

fn romeo() -> BareJid {
    BareJid::new("romeo@localhost").unwrap()
}

async fn registrations(s: &TestServer) -> Vec<starling::storage::PushRegistration> {
    s.server().core().db.push().list(&romeo()).await.unwrap()
}

/// Wait until romeo has `n` registrations stored.
async fn wait_for_registrations(s: &TestServer, n: usize) {
    for _ in 0..200 {
        if registrations(s).await.len() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("romeo has {} registrations, not {n}", registrations(s).await.len());
}

/// §5-§6: the feature on the account; enable and disable answer with empty results, and
/// bad requests with the right errors; only the account's own clients may; limits.
async fn enable_and_disable(b: Backend) {
    let s = start(b, |c| c.push.max_per_user = 2).await;
    let mut romeo = s.login("romeo", "phone").await;
    let mut juliet = s.login("juliet", "balcony").await;

    // §4.1: disco#info to the user's bare JID.
    let info = romeo.request("<iq type='get' id='d1' to='romeo@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    let query = info.get_child("query", "http://jabber.org/protocol/disco#info").unwrap();
    assert!(query.children().any(|f| f.attr("var") == Some(PUSH)), "{}", show(&info));

    // The example of §5, without publish options.
    let r = romeo.request(&format!("<iq type='set' id='x42'><enable xmlns='{PUSH}' jid='push-5.client.example' node='yxs32uqsflafdk3iuqo'/></iq>")).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    assert_eq!(r.children().count(), 0, "{}", show(&r));
    // With publish options (and to the bare JID explicitly).
    let r = romeo.request(&enable_xml("x43", "n1").replace("<iq ", "<iq to='romeo@localhost' ")).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let stored = registrations(&s).await;
    assert_eq!(stored.len(), 2);
    let n1 = stored.iter().find(|r| r.node == "n1").expect("n1 stored");
    assert_eq!((n1.service.as_str(), n1.resource.as_str()), (SERVICE, "phone"));
    assert!(n1.options.as_deref().unwrap().contains("eruio234vzxc2kla-91"));

    let error = |r: &Element| crate::common::client::condition(r);
    for bad in [
        format!("<iq type='set' id='b1'><enable xmlns='{PUSH}' node='n'/></iq>"),
        format!("<iq type='set' id='b2'><enable xmlns='{PUSH}' jid='push.example'/></iq>"),
        format!("<iq type='set' id='b3'><enable xmlns='{PUSH}' jid='not@a@jid' node='n'/></iq>"),
        format!(
            "<iq type='set' id='b4'><enable xmlns='{PUSH}' jid='push.example' node='n'><x xmlns='{DATA}' type='submit'>\
             <field var='FORM_TYPE'><value>urn:example:other</value></field></x></enable></iq>"
        ),
        format!("<iq type='set' id='b5'><disable xmlns='{PUSH}' node='n'/></iq>"),
    ] {
        let r = romeo.request(&bad).await;
        assert_eq!(r.attr("type"), Some("error"), "{bad}: {}", show(&r));
        assert_eq!(error(&r), "bad-request", "{bad}: {}", show(&r));
    }
    // Another account may not enable or disable romeo's.
    let r = juliet.request(&format!("<iq type='set' id='j1' to='romeo@localhost'><enable xmlns='{PUSH}' jid='p.example' node='n'/></iq>")).await;
    assert_eq!(error(&r), "forbidden", "{}", show(&r));
    let r = juliet.request(&format!("<iq type='set' id='j2' to='romeo@localhost'><disable xmlns='{PUSH}' jid='{SERVICE}'/></iq>")).await;
    assert_eq!(error(&r), "forbidden", "{}", show(&r));
    // A get is nothing we answer.
    let r = romeo.request(&format!("<iq type='get' id='g1'><enable xmlns='{PUSH}' jid='p.example' node='n'/></iq>")).await;
    assert_eq!(error(&r), "service-unavailable", "{}", show(&r));

    // At the limit: a new pair is refused, enabling an enabled one again is not (§5: the
    // last request's options win).
    let r = romeo.request(&format!("<iq type='set' id='l1'><enable xmlns='{PUSH}' jid='push.example' node='third'/></iq>")).await;
    assert_eq!(error(&r), "resource-constraint", "{}", show(&r));
    let r = romeo.request(&format!("<iq type='set' id='l2'><enable xmlns='{PUSH}' jid='{SERVICE}' node='n1'/></iq>")).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let stored = registrations(&s).await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored.iter().find(|r| r.node == "n1").unwrap().options, None, "replaced by the last request");

    // §6: disabling with a node removes that node only; without, every node of the service.
    let r = romeo.request(&format!("<iq type='set' id='x97'><disable xmlns='{PUSH}' jid='push-5.client.example' node='other'/></iq>")).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    assert_eq!(registrations(&s).await.len(), 2);
    let r = romeo.request(&format!("<iq type='set' id='x98'><disable xmlns='{PUSH}' jid='push-5.client.example'/></iq>")).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let stored = registrations(&s).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].service, SERVICE);
    // Disabling what is not enabled is no error.
    let r = romeo.request(&format!("<iq type='set' id='x99'><disable xmlns='{PUSH}' jid='nothing.example'/></iq>")).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
}

/// §7: a message for an account with no session is notified to each enabled service, with
/// the summary form (no body by default) and the publish options as the client gave them;
/// a chat state alone is not.
async fn offline_message(b: Backend) {
    let s = start(b, |_| {}).await;
    let mut app = s.login("app", "server").await;
    let mut romeo = s.login("romeo", "phone").await;
    enable(&mut romeo, "yxs32uqsflafdk3iuqo").await;
    romeo.close().await;
    let mut juliet = s.login("juliet", "balcony").await;
    juliet.send("<message to='romeo@localhost' type='chat' id='m1'><body>Wherefore art thou, Romeo?</body></message>").await;

    let iq = notification(&mut app).await;
    assert_eq!(iq.attr("from"), Some("romeo@localhost"), "{}", show(&iq));
    assert_eq!(iq.attr("to"), Some(SERVICE));
    let (node, form) = summary(&iq);
    assert_eq!(node, "yxs32uqsflafdk3iuqo");
    assert_eq!(form.get("FORM_TYPE").map(String::as_str), Some("urn:xmpp:push:summary"));
    assert_eq!(form.get("message-count").map(String::as_str), Some("1"));
    assert_eq!(form.get("last-message-sender").map(String::as_str), Some("juliet@localhost/balcony"));
    assert!(!form.contains_key("last-message-body"), "no body unless [push] include_body: {}", show(&iq));
    let options = iq.get_child("pubsub", PUBSUB).unwrap().get_child("publish-options", PUBSUB).expect("publish options").get_child("x", DATA).unwrap();
    let options = fields(options);
    assert_eq!(options.get("FORM_TYPE").map(String::as_str), Some(PUBLISH_OPTIONS));
    assert_eq!(options.get("secret").map(String::as_str), Some("eruio234vzxc2kla-91"));
    assert_eq!(options.get("endpoint").map(String::as_str), Some("https://push.example/v1/abc"), "unknown fields pass through");
    answer(&mut app, &iq).await;

    // Nothing worth waking a phone for: no notification.
    juliet.send("<message to='romeo@localhost' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>").await;
    juliet.send("<message to='romeo@localhost' type='headline'><body>news</body></message>").await;
    app.expect_silence(Duration::from_millis(500)).await;
    // An OMEMO message without a body is.
    juliet
        .send("<message to='romeo@localhost' type='chat'><encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'/><payload>AAAA</payload></encrypted></message>")
        .await;
    let iq = notification(&mut app).await;
    let (_, form) = summary(&iq);
    assert_eq!(form.get("message-count").map(String::as_str), Some("2"), "counted since the device was last awake");
    answer(&mut app, &iq).await;

    // The message itself was stored offline as usual.
    let mut romeo = s.login("romeo", "phone").await;
    romeo.send("<presence/>").await;
    let m = romeo.expect("the stored message", |e| e.name() == "message" && body(e) == "Wherefore art thou, Romeo?").await;
    assert_eq!(m.attr("id"), Some("m1"));
}

/// `[push] include_body = true`: the summary carries the body.
async fn body_when_configured(b: Backend) {
    let s = start(b, |c| c.push.include_body = true).await;
    let mut app = s.login("app", "server").await;
    let mut romeo = s.login("romeo", "phone").await;
    enable(&mut romeo, "n").await;
    romeo.close().await;
    let mut juliet = s.login("juliet", "balcony").await;
    juliet.send("<message to='romeo@localhost' type='chat'><body>Wherefore art thou, Romeo?</body></message>").await;
    let iq = notification(&mut app).await;
    let (_, form) = summary(&iq);
    assert_eq!(form.get("last-message-body").map(String::as_str), Some("Wherefore art thou, Romeo?"), "{}", show(&iq));
    assert_eq!(form.get("last-message-sender").map(String::as_str), Some("juliet@localhost/balcony"));
}

/// A burst while the phone is offline: one notification at once, then one more when
/// `[push] min_interval` is up, counting them all and naming the newest; no more.
async fn bursts_are_coalesced(b: Backend) {
    let s = start(b, |c| {
        c.push.min_interval = 1;
        c.push.include_body = true;
    })
    .await;
    let mut app = s.login("app", "server").await;
    let mut romeo = s.login("romeo", "phone").await;
    enable(&mut romeo, "n").await;
    romeo.close().await;
    let mut juliet = s.login("juliet", "balcony").await;
    for i in 1..=5 {
        juliet.send(&format!("<message to='romeo@localhost' type='chat'><body>{i}</body></message>")).await;
    }
    let first = notification(&mut app).await;
    let started = std::time::Instant::now();
    let (_, form) = summary(&first);
    assert_eq!(form.get("message-count").map(String::as_str), Some("1"));
    answer(&mut app, &first).await;
    let second = notification(&mut app).await;
    assert!(started.elapsed() >= Duration::from_millis(700), "the second came after {:?}", started.elapsed());
    let (_, form) = summary(&second);
    assert_eq!(form.get("message-count").map(String::as_str), Some("5"), "{}", show(&second));
    assert_eq!(form.get("last-message-body").map(String::as_str), Some("5"));
    answer(&mut app, &second).await;
    app.expect_silence(Duration::from_millis(1500)).await;
}

/// XEP-0198 `<enable resume='true'/>` and its id.
async fn enable_sm(c: &mut Client) -> String {
    c.send(&format!("<enable xmlns='{SM}' resume='true'/>")).await;
    let enabled = c.expect("enabled", |e| e.is("enabled", SM) || e.is("failed", SM)).await;
    assert!(enabled.is("enabled", SM), "{}", show(&enabled));
    enabled.attr("id").unwrap().to_string()
}

/// Authenticate on a new connection and resume `previd`.
async fn resume(s: &TestServer, previd: &str) -> (Client, Element) {
    let mut c = Client::secure(s).await;
    c.auth_scram_sha256("romeo", "pw").await.unwrap();
    c.send(&format!("<resume xmlns='{SM}' previd='{previd}' h='0'/>")).await;
    let answer = c.expect("resumed or failed", |e| e.is("resumed", SM) || e.is("failed", SM)).await;
    (c, answer)
}

fn phone() -> FullJid {
    FullJid::new("romeo@localhost/phone").unwrap()
}

/// A session waiting for resumption: a message queued for it is notified; while push is
/// enabled the session outlives `c2s.resume_timeout` (keep-alive), and is resumed with
/// the message.
async fn detached_session(b: Backend) {
    let s = start(b, |c| c.c2s.resume_timeout = 1).await;
    let mut app = s.login("app", "server").await;
    let mut romeo = s.login("romeo", "phone").await;
    romeo.available().await;
    let previd = enable_sm(&mut romeo).await;
    enable(&mut romeo, "n").await;
    drop(romeo);
    // Past the usual resumption timeout, the session is still there.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(s.server().core().sessions.is_connected(&phone()), "the session was not kept");
    app.expect_silence(Duration::from_millis(100)).await;

    let mut juliet = s.login("juliet", "balcony").await;
    juliet.send("<message to='romeo@localhost' type='chat'><body>are you there?</body></message>").await;
    let iq = notification(&mut app).await;
    let (_, form) = summary(&iq);
    assert_eq!(form.get("message-count").map(String::as_str), Some("1"));
    assert_eq!(form.get("last-message-sender").map(String::as_str), Some("juliet@localhost/balcony"));
    answer(&mut app, &iq).await;

    // The woken phone comes back in time.
    let (mut romeo, resumed) = resume(&s, &previd).await;
    assert!(resumed.is("resumed", SM), "{}", show(&resumed));
    romeo.expect("the message", |e| e.name() == "message" && body(e) == "are you there?").await;
    // Awake again: its counts start over.
    romeo.send("</stream:stream>").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    juliet.send("<message to='romeo@localhost' type='chat'><body>again</body></message>").await;
    let iq = notification(&mut app).await;
    assert_eq!(summary(&iq).1.get("message-count").map(String::as_str), Some("1"), "{}", show(&iq));
}

/// A message the phone got but had not acknowledged when its connection died is notified
/// at once; once notified, the session waits only the usual `c2s.resume_timeout`, and
/// what it had goes to offline storage without a second notification.
async fn unacknowledged_at_the_drop(b: Backend) {
    let s = start(b, |c| c.c2s.resume_timeout = 1).await;
    let mut app = s.login("app", "server").await;
    let mut romeo = s.login("romeo", "phone").await;
    let mut juliet = s.login("juliet", "balcony").await;
    romeo.available().await;
    let previd = enable_sm(&mut romeo).await;
    enable(&mut romeo, "n").await;
    juliet.send("<message to='romeo@localhost' type='chat'><body>unread</body></message>").await;
    romeo.expect("the message", |e| e.name() == "message" && body(e) == "unread").await;
    drop(romeo);
    let iq = notification(&mut app).await;
    assert_eq!(summary(&iq).1.get("message-count").map(String::as_str), Some("1"), "{}", show(&iq));
    answer(&mut app, &iq).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, failed) = resume(&s, &previd).await;
    assert!(failed.is("failed", SM), "the session outlived the usual timeout after a notification: {}", show(&failed));
    assert!(!s.server().core().sessions.is_connected(&phone()));
    app.expect_silence(Duration::from_millis(500)).await;
}

/// XEP-0352: a message for a session whose client is inactive is written to it and
/// notified (an iPhone's app is suspended); once active, no more.
async fn csi_inactive(b: Backend) {
    let s = start(b, |_| {}).await;
    let mut app = s.login("app", "server").await;
    let mut romeo = s.login("romeo", "phone").await;
    let mut juliet = s.login("juliet", "balcony").await;
    romeo.available().await;
    juliet.available().await;
    befriend(&mut romeo, &mut juliet).await;
    enable(&mut romeo, "n").await;
    romeo.send(&format!("<inactive xmlns='{CSI}'/>")).await;
    romeo.request("<iq type='get' id='sync1'><ping xmlns='urn:xmpp:ping'/></iq>").await;
    // A presence change is held, not notified.
    juliet.send("<presence><show>away</show></presence>").await;
    app.expect_silence(Duration::from_millis(400)).await;
    juliet.send("<message to='romeo@localhost' type='chat'><body>wake up</body></message>").await;
    romeo.expect("the message", |e| e.name() == "message" && body(e) == "wake up").await;
    let iq = notification(&mut app).await;
    assert_eq!(summary(&iq).1.get("last-message-sender").map(String::as_str), Some("juliet@localhost/balcony"));
    answer(&mut app, &iq).await;

    romeo.send(&format!("<active xmlns='{CSI}'/>")).await;
    romeo.request("<iq type='get' id='sync2'><ping xmlns='urn:xmpp:ping'/></iq>").await;
    juliet.send("<message to='romeo@localhost' type='chat'><body>awake now</body></message>").await;
    romeo.expect("the message", |e| e.name() == "message" && body(e) == "awake now").await;
    app.expect_silence(Duration::from_millis(500)).await;
}

/// The registration of a device without a session is notified even when the account's
/// other resources take the message (a phone learns of what the desktop got); a device
/// online and awake is not.
async fn other_devices_online(b: Backend) {
    let s = start(b, |_| {}).await;
    let mut app = s.login("app", "server").await;
    let mut phone = s.login("romeo", "phone").await;
    let mut desktop = s.login("romeo", "desktop").await;
    phone.available().await;
    desktop.available().await;
    enable(&mut phone, "n").await;
    let mut juliet = s.login("juliet", "balcony").await;
    juliet.send("<message to='romeo@localhost' type='chat'><body>both awake</body></message>").await;
    phone.expect("the message", |e| e.name() == "message" && body(e) == "both awake").await;
    app.expect_silence(Duration::from_millis(500)).await;

    phone.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    juliet.send("<message to='romeo@localhost' type='chat'><body>phone away</body></message>").await;
    desktop.expect("the message", |e| e.name() == "message" && body(e) == "phone away").await;
    let iq = notification(&mut app).await;
    assert_eq!(summary(&iq).1.get("message-count").map(String::as_str), Some("1"));
    answer(&mut app, &iq).await;
    app.expect_silence(Duration::from_millis(300)).await;
}

/// §7.1: an error from the app server disables the registration: the next message is not
/// notified. A temporary error (type wait) does not.
async fn error_disables(b: Backend) {
    let s = start(b, |_| {}).await;
    let mut app = s.login("app", "server").await;
    let mut romeo = s.login("romeo", "phone").await;
    enable(&mut romeo, "n").await;
    romeo.close().await;
    let mut juliet = s.login("juliet", "balcony").await;
    juliet.send("<message to='romeo@localhost' type='chat'><body>one</body></message>").await;
    let iq = notification(&mut app).await;
    answer_error(&mut app, &iq, "wait", "resource-constraint").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(registrations(&s).await.len(), 1, "a temporary error disabled it");
    juliet.send("<message to='romeo@localhost' type='chat'><body>two</body></message>").await;
    let iq = notification(&mut app).await;
    answer_error(&mut app, &iq, "cancel", "item-not-found").await;
    wait_for_registrations(&s, 0).await;
    juliet.send("<message to='romeo@localhost' type='chat'><body>three</body></message>").await;
    app.expect_silence(Duration::from_millis(600)).await;
}

/// §8: the push service takes the account's affiliation away and says so: the
/// registration goes.
async fn remote_disabling(b: Backend) {
    let s = start(b, |_| {}).await;
    let mut app = s.login("app", "server").await;
    let mut romeo = s.login("romeo", "phone").await;
    romeo.available().await;
    enable(&mut romeo, "yxs32uqsflafdk3iuqo").await;
    // From someone else than the service: ignored.
    let mut juliet = s.login("juliet", "balcony").await;
    let notice = format!(
        "<message to='romeo@localhost'><pubsub xmlns='{PUBSUB}' node='yxs32uqsflafdk3iuqo'><affiliation jid='romeo@localhost' affiliation='none'/></pubsub></message>"
    );
    juliet.send(&notice).await;
    romeo.expect("the message juliet sent", |e| e.name() == "message").await;
    assert_eq!(registrations(&s).await.len(), 1);
    app.send(&notice).await;
    wait_for_registrations(&s, 0).await;
    romeo.expect_silence(Duration::from_millis(200)).await;
}

/// §6: after `<disable/>`, nothing is published to the service (§6: MUST NOT).
async fn disable_stops_notifications(b: Backend) {
    let s = start(b, |_| {}).await;
    let mut app = s.login("app", "server").await;
    let mut romeo = s.login("romeo", "phone").await;
    enable(&mut romeo, "n1").await;
    enable(&mut romeo, "n2").await;
    let r = romeo.request(&format!("<iq type='set' id='d1'><disable xmlns='{PUSH}' jid='{SERVICE}' node='n1'/></iq>")).await;
    assert_eq!(r.attr("type"), Some("result"));
    romeo.close().await;
    let mut juliet = s.login("juliet", "balcony").await;
    juliet.send("<message to='romeo@localhost' type='chat'><body>one</body></message>").await;
    let iq = notification(&mut app).await;
    assert_eq!(summary(&iq).0, "n2", "only the node still enabled");
    answer(&mut app, &iq).await;
    app.expect_silence(Duration::from_millis(300)).await;

    let mut romeo = s.login("romeo", "phone").await;
    let r = romeo.request(&format!("<iq type='set' id='d2'><disable xmlns='{PUSH}' jid='{SERVICE}'/></iq>")).await;
    assert_eq!(r.attr("type"), Some("result"));
    romeo.close().await;
    juliet.send("<message to='romeo@localhost' type='chat'><body>two</body></message>").await;
    app.expect_silence(Duration::from_millis(600)).await;
}

/// Registrations are stored: after a restart, an offline message is still notified.
async fn survives_a_restart(b: Backend) {
    let mut s = start(b, |_| {}).await;
    let mut romeo = s.login("romeo", "phone").await;
    enable(&mut romeo, "n").await;
    romeo.close().await;
    s.server.take().unwrap().shutdown().await;
    s.server = Some(starling::Server::start(s.config.clone()).await.expect("the server starts again"));

    let mut app = s.login("app", "server").await;
    let mut juliet = s.login("juliet", "balcony").await;
    juliet.send("<message to='romeo@localhost' type='chat'><body>after the restart</body></message>").await;
    let iq = notification(&mut app).await;
    let (node, form) = summary(&iq);
    assert_eq!(node, "n");
    assert_eq!(form.get("message-count").map(String::as_str), Some("1"));
    let options = fields(iq.get_child("pubsub", PUBSUB).unwrap().get_child("publish-options", PUBSUB).unwrap().get_child("x", DATA).unwrap());
    assert_eq!(options.get("secret").map(String::as_str), Some("eruio234vzxc2kla-91"));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The app server on another domain, reached by federation (as Conversations' is): the
/// notification goes over the server-to-server link and its answer comes back the same
/// way; an error from there disables the registration. A push service whose server cannot
/// be reached fails transiently: after five failures in a row the registration goes.
async fn through_federation(b: Backend) {
    const B: &str = "b.example";
    let at = |port: u16| -> std::net::SocketAddr { format!("127.0.0.1:{port}").parse().unwrap() };
    let mut started = None;
    for _ in 0..5 {
        let (a_port, b_port, closed_port) = (free_port(), free_port(), free_port());
        let Ok(a) = TestServer::try_start_with(b, |c| {
            c.push.min_interval = 0;
            c.s2s.listen = vec![at(a_port)];
            c.s2s.targets.insert(B.into(), vec![format!("127.0.0.1:{b_port}")]);
            c.s2s.targets.insert("down.example".into(), vec![format!("127.0.0.1:{closed_port}")]);
            c.s2s.connect_timeout = 10;
        })
        .await
        else {
            continue;
        };
        let Ok(remote) = TestServer::try_start_with(b, |c| {
            c.domains = vec![B.into()];
            c.s2s.listen = vec![at(b_port)];
            c.s2s.targets.insert("localhost".into(), vec![format!("127.0.0.1:{a_port}")]);
            c.s2s.connect_timeout = 10;
        })
        .await
        else {
            a.stop().await;
            continue;
        };
        started = Some((a, remote));
        break;
    }
    let (s, remote) = started.expect("two free ports for the servers in five tries");
    s.users(&["romeo", "juliet"]).await;
    remote.add_user_at(B, "app", "pw").await;
    let mut app = Client::login_at(&remote, B, "app", "pw", "server").await;
    let mut romeo = s.login("romeo", "phone").await;
    let r = romeo.request(&enable_xml("e1", "n").replace(SERVICE, "app@b.example/server")).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    let r = romeo.request(&format!("<iq type='set' id='e2'><enable xmlns='{PUSH}' jid='push.down.example' node='n'/></iq>")).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    romeo.close().await;
    let mut juliet = s.login("juliet", "balcony").await;
    juliet.send("<message to='romeo@localhost' type='chat'><body>across</body></message>").await;
    let iq = notification(&mut app).await;
    assert_eq!(iq.attr("from"), Some("romeo@localhost"), "{}", show(&iq));
    assert_eq!(summary(&iq).1.get("last-message-sender").map(String::as_str), Some("juliet@localhost/balcony"));
    answer(&mut app, &iq).await;
    for i in 2..=5 {
        juliet.send(&format!("<message to='romeo@localhost' type='chat'><body>{i}</body></message>")).await;
        let iq = notification(&mut app).await;
        assert_eq!(summary(&iq).1.get("message-count").map(String::as_str), Some(i.to_string().as_str()));
        if i < 5 {
            answer(&mut app, &iq).await;
        } else {
            answer_error(&mut app, &iq, "cancel", "item-not-found").await;
        }
    }
    // Both gone: the remote one refused, the unreachable one failed five times.
    wait_for_registrations(&s, 0).await;
    juliet.send("<message to='romeo@localhost' type='chat'><body>six</body></message>").await;
    app.expect_silence(Duration::from_millis(600)).await;
    s.stop().await;
    remote.stop().await;
}

db_tests!(
    through_federation,
    enable_and_disable,
    offline_message,
    body_when_configured,
    bursts_are_coalesced,
    detached_session,
    unacknowledged_at_the_drop,
    csi_inactive,
    other_devices_online,
    error_disables,
    remote_disabling,
    disable_stops_notifications,
    survives_a_restart,
);
