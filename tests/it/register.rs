//! In-band registration (XEP-0077): off by default; password change and removal for
//! logged-in users.

use crate::common::client::{condition, show};
use crate::common::{Backend, Client, TestServer, befriend};
use crate::db_tests;

const REGISTER: &str = "jabber:iq:register";

async fn disabled_by_default(b: Backend) {
    let s = TestServer::start(b).await;
    let mut c = Client::secure(&s).await;
    assert!(!c.features.as_ref().unwrap().has_child("register", "http://jabber.org/features/iq-register"));
    let r = c.request("<iq type='set' id='r1'><query xmlns='jabber:iq:register'><username>eve</username><password>pw</password></query></iq>").await;
    assert_eq!(condition(&r), "service-unavailable");
    assert!(!s.server().core().db.accounts().exists(&jid::BareJid::new("eve@localhost").unwrap()).await.unwrap());
    s.stop().await;
}

async fn register_then_login(b: Backend) {
    let s = TestServer::start_with(b, |c| c.registration.enabled = true).await;
    s.users(&["taken"]).await;
    // Before TLS: not offered, and refused.
    let mut plain = Client::tcp(&s).await;
    let features = plain.open("localhost").await;
    assert!(!features.has_child("register", "http://jabber.org/features/iq-register"));
    let r = plain.request("<iq type='get' id='f0'><query xmlns='jabber:iq:register'/></iq>").await;
    assert_eq!(condition(&r), "not-allowed");

    let mut c = Client::secure(&s).await;
    assert!(c.features.as_ref().unwrap().has_child("register", "http://jabber.org/features/iq-register"));
    let form = c.request("<iq type='get' id='f1'><query xmlns='jabber:iq:register'/></iq>").await;
    let q = form.get_child("query", REGISTER).unwrap();
    assert!(q.has_child("username", REGISTER) && q.has_child("password", REGISTER), "{}", show(&form));
    let r = c.request("<iq type='set' id='f2'><query xmlns='jabber:iq:register'><username>taken</username><password>x</password></query></iq>").await;
    assert_eq!(condition(&r), "conflict");
    let r = c.request("<iq type='set' id='f3'><query xmlns='jabber:iq:register'><username>bad user@x</username><password>x</password></query></iq>").await;
    assert_eq!(condition(&r), "not-acceptable");
    let r = c.request("<iq type='set' id='f4'><query xmlns='jabber:iq:register'><username>newbie</username></query></iq>").await;
    assert_eq!(condition(&r), "not-acceptable");
    let r = c.request("<iq type='set' id='f5'><query xmlns='jabber:iq:register'><username>Newbie</username><password>s3cret</password></query></iq>").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    c.auth_scram_sha256("newbie", "s3cret").await.expect("the new account logs in");
    assert_eq!(c.bind("r").await, "newbie@localhost/r");
    s.stop().await;
}

async fn change_password_and_remove(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    let info = alice.request("<iq type='get' id='g'><query xmlns='jabber:iq:register'/></iq>").await;
    let q = info.get_child("query", REGISTER).unwrap();
    assert!(q.has_child("registered", REGISTER));
    assert_eq!(q.get_child("username", REGISTER).unwrap().text(), "alice");
    // Someone else's username: refused.
    let r = alice.request("<iq type='set' id='p0'><query xmlns='jabber:iq:register'><username>bob</username><password>x</password></query></iq>").await;
    assert_eq!(condition(&r), "forbidden");
    let r = alice.request("<iq type='set' id='p1'><query xmlns='jabber:iq:register'><username>alice</username><password>new-pw</password></query></iq>").await;
    assert_eq!(r.attr("type"), Some("result"));
    let mut c = Client::secure(&s).await;
    assert_eq!(c.auth_scram_sha256("alice", "pw").await, Err("not-authorized".into()));
    c.auth_scram_sha256("alice", "new-pw").await.expect("the new password works");
    c.bind("other").await;
    // Removal: the result, then every session of the account is closed.
    let r = alice.request("<iq type='set' id='rm'><query xmlns='jabber:iq:register'><remove/></query></iq>").await;
    assert_eq!(r.attr("type"), Some("result"));
    assert_eq!(alice.expect_stream_error().await.as_deref(), Some("not-authorized"));
    assert_eq!(c.expect_stream_error().await.as_deref(), Some("not-authorized"));
    let mut c = Client::secure(&s).await;
    assert_eq!(c.auth_scram_sha256("alice", "new-pw").await, Err("not-authorized".into()));
    // Stored data went with the account: a message to it bounces.
    let mut bob = s.login("bob", "b").await;
    bob.send("<message to='alice@localhost' id='gone'><body>hello?</body></message>").await;
    assert_eq!(condition(&bob.expect("error", |e| e.attr("id") == Some("gone")).await), "service-unavailable");
    s.stop().await;
}

fn error_type(el: &minidom::Element) -> Option<String> {
    el.get_child("error", crate::common::client::CLIENT).and_then(|e| e.attr("type")).map(str::to_string)
}

/// Whether `password` logs `user` in.
async fn password_works(s: &TestServer, user: &str, password: &str) -> bool {
    Client::secure(s).await.auth_scram_sha256(user, password).await.is_ok()
}

/// XEP-0077 §3.3, each example as a test vector, addressed to the domain as the XEP's
/// examples are (and to no `to`, which means the account itself).
async fn password_change_examples(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["bill", "bob"]).await;
    let mut bill = s.login("bill", "globe").await;
    // Example "Password Change", then "Host Informs Client of Successful Password Change".
    let r = bill.request("<iq type='set' to='localhost' id='change1'><query xmlns='jabber:iq:register'><username>bill</username><password>newpass</password></query></iq>").await;
    assert_eq!((r.attr("type"), r.attr("id")), (Some("result"), Some("change1")), "{}", show(&r));
    assert!(r.children().next().is_none(), "an empty result: {}", show(&r));
    assert!(password_works(&s, "bill", "newpass").await);
    assert!(!password_works(&s, "bill", "pw").await);
    // The same without `to`, and with the username as a bare JID.
    let r = bill.request("<iq type='set' id='change1b'><query xmlns='jabber:iq:register'><username>bill@localhost</username><password>other</password></query></iq>").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
    assert!(password_works(&s, "bill", "other").await);

    // "Failed Password Change (Bad Request)": incomplete information; the original XML
    // (with the password) is not sent back.
    for (id, query) in [
        ("change2", "<password>x1</password>"),
        ("change3", "<username>bill</username>"),
        ("change4", ""),
    ] {
        let r = bill.request(&format!("<iq type='set' to='localhost' id='{id}'><query xmlns='jabber:iq:register'>{query}</query></iq>")).await;
        assert_eq!(condition(&r), "bad-request", "{}", show(&r));
        assert_eq!(error_type(&r).as_deref(), Some("modify"));
        assert!(!r.has_child("query", REGISTER), "{}", show(&r));
    }
    // An empty password never replaces the existing one (§3.3 MUST).
    for (id, password) in [("change5", "<password/>"), ("change6", "<password></password>")] {
        let r = bill.request(&format!("<iq type='set' to='localhost' id='{id}'><query xmlns='jabber:iq:register'><username>bill</username>{password}</query></iq>")).await;
        assert_eq!(condition(&r), "bad-request", "{}", show(&r));
    }
    assert!(password_works(&s, "bill", "other").await, "the password is kept");
    // Someone else's account: forbidden (the sender lacks the permission; §3.2's condition
    // for the same case), and bob's password is untouched.
    for (id, to, username) in [("change7", "localhost", "bob"), ("change8", "localhost", "bob@localhost"), ("change9", "localhost", "bill@example.test")] {
        let r = bill.request(&format!("<iq type='set' to='{to}' id='{id}'><query xmlns='jabber:iq:register'><username>{username}</username><password>stolen</password></query></iq>")).await;
        assert_eq!(condition(&r), "forbidden", "{}", show(&r));
        assert_eq!(error_type(&r).as_deref(), Some("cancel"));
    }
    assert!(password_works(&s, "bob", "pw").await);
    // To bob's account rather than the domain: forbidden too.
    let r = bill.request("<iq type='set' to='bob@localhost' id='change10'><query xmlns='jabber:iq:register'><username>bob</username><password>stolen</password></query></iq>").await;
    assert_eq!(condition(&r), "forbidden", "{}", show(&r));
    // Another domain served here is another host, where bill has no account.
    let r = bill.request("<iq type='set' to='example.test' id='change11'><query xmlns='jabber:iq:register'><username>bill</username><password>x</password></query></iq>").await;
    assert_eq!(condition(&r), "registration-required", "{}", show(&r));
    // "User Returns Password Change Form": we never send the form (no data forms), so a
    // submitted one lacks the fields we need.
    let r = bill.request("<iq type='set' to='localhost' id='change12'><query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'><field type='hidden' var='FORM_TYPE'><value>jabber:iq:register:changepassword</value></field><field type='text-single' var='username'><value>bill@localhost</value></field><field type='text-private' var='old_password'><value>other</value></field><field type='text-private' var='password'><value>groundlings</value></field></x></query></iq>").await;
    assert_eq!(condition(&r), "bad-request", "{}", show(&r));
    assert!(password_works(&s, "bill", "other").await);
    s.stop().await;
}

/// XEP-0077 §3.1 for a logged-in user, asked of the domain: the registration on file.
async fn registered_form_at_domain(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["bill"]).await;
    let mut bill = s.login("bill", "globe").await;
    for (id, to) in [("reg1", " to='localhost'"), ("reg2", "")] {
        let r = bill.request(&format!("<iq type='get'{to} id='{id}'><query xmlns='jabber:iq:register'/></iq>")).await;
        assert_eq!(r.attr("type"), Some("result"), "{}", show(&r));
        let q = r.get_child("query", REGISTER).unwrap();
        assert!(q.has_child("registered", REGISTER), "{}", show(&r));
        assert!(q.has_child("instructions", REGISTER), "{}", show(&r));
        assert_eq!(q.get_child("username", REGISTER).unwrap().text(), "bill");
        assert_eq!(q.get_child("password", REGISTER).unwrap().text(), "", "the password is never sent back");
    }
    // Not registered at the other domain served here.
    let r = bill.request("<iq type='get' to='example.test' id='reg3'><query xmlns='jabber:iq:register'/></iq>").await;
    assert_eq!(condition(&r), "service-unavailable", "{}", show(&r));
    // The domain advertises the namespace (§8), so a connected client can tell.
    let info = bill.request("<iq type='get' to='localhost' id='d'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    assert!(String::from(&info).contains("jabber:iq:register"), "{}", show(&info));
    s.stop().await;
}

/// XEP-0077 §3.2, each example as a test vector, addressed to the domain.
async fn cancellation_examples(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["bill", "bob"]).await;
    let mut bill = s.login("bill", "globe").await;
    let mut other_session = s.login("bill", "theatre").await;
    // "Failed Cancellation (Bad Request)": <remove/> not the only child.
    let r = bill.request("<iq type='set' to='localhost' id='unreg0'><query xmlns='jabber:iq:register'><remove/><username>bill</username></query></iq>").await;
    assert_eq!(condition(&r), "bad-request", "{}", show(&r));
    assert_eq!(error_type(&r).as_deref(), Some("modify"));
    // "Failed Cancellation (Forbidden)": someone else's registration.
    let r = bill.request("<iq type='set' to='bob@localhost' id='unreg1f'><query xmlns='jabber:iq:register'><remove/></query></iq>").await;
    assert_eq!(condition(&r), "forbidden", "{}", show(&r));
    assert_eq!(error_type(&r).as_deref(), Some("cancel"));
    // Another served domain, where bill is not registered (the error table's
    // registration-required).
    let r = bill.request("<iq type='set' to='example.test' id='unreg1r'><query xmlns='jabber:iq:register'><remove/></query></iq>").await;
    assert_eq!(condition(&r), "registration-required", "{}", show(&r));
    // "User Returns Cancellation Form": not offered, so not accepted as a cancellation.
    let r = bill.request("<iq type='set' to='localhost' id='unreg2'><query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'><field type='hidden' var='FORM_TYPE'><value>jabber:iq:register:cancel</value></field><field type='text-single' var='username'><value>bill@localhost</value></field><field type='text-private' var='password'><value>pw</value></field></x></query></iq>").await;
    assert_eq!(condition(&r), "bad-request", "{}", show(&r));
    assert!(password_works(&s, "bill", "pw").await, "still registered");
    assert!(password_works(&s, "bob", "pw").await);
    // "Entity Requests Cancellation", to the domain: the result, then not-authorized
    // stream errors on every session of the account.
    let r = bill.request("<iq type='set' to='localhost' id='unreg1'><query xmlns='jabber:iq:register'><remove/></query></iq>").await;
    assert_eq!((r.attr("type"), r.attr("id")), (Some("result"), Some("unreg1")), "{}", show(&r));
    assert_eq!(bill.expect_stream_error().await.as_deref(), Some("not-authorized"));
    assert_eq!(other_session.expect_stream_error().await.as_deref(), Some("not-authorized"));
    assert!(!password_works(&s, "bill", "pw").await);
    assert!(!s.server().core().db.accounts().exists(&jid::BareJid::new("bill@localhost").unwrap()).await.unwrap());
    s.stop().await;
}

/// Before authentication a `<remove/>` has no account to remove (§3.2 unexpected-request).
async fn preauth_remove_is_unexpected(b: Backend) {
    let s = TestServer::start_with(b, |c| c.registration.enabled = true).await;
    let mut c = Client::secure(&s).await;
    let r = c.request("<iq type='set' id='unreg1'><query xmlns='jabber:iq:register'><remove/></query></iq>").await;
    assert_eq!(condition(&r), "unexpected-request", "{}", show(&r));
    s.stop().await;
}

/// §3.2 and issue 10 defect 16: an in-band cancellation cleans up like `starling user del`:
/// the contact is told and loses the item, and an account created again under the same name
/// inherits nothing.
async fn cancellation_cleans_contacts(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    alice.send("<iq type='get' id='r0'><query xmlns='jabber:iq:roster'/></iq>").await;
    alice.available().await;
    let mut bob = s.login("bob", "b").await;
    bob.available().await;
    befriend(&mut alice, &mut bob).await;
    let reply = bob.request("<iq type='set' id='unreg1' to='localhost'><query xmlns='jabber:iq:register'><remove/></query></iq>").await;
    assert_eq!(reply.attr("type"), Some("result"), "{}", show(&reply));
    for kind in ["unsubscribe", "unsubscribed"] {
        let p = alice.expect(kind, |e| e.name() == "presence" && e.attr("type") == Some(kind)).await;
        assert_eq!(p.attr("from"), Some("bob@localhost"));
    }
    let push = alice
        .expect("roster push removing bob", |e| {
            e.name() == "iq"
                && e.get_child("query", "jabber:iq:roster").and_then(|q| q.children().next()).is_some_and(|i| {
                    i.attr("jid") == Some("bob@localhost") && i.attr("subscription") == Some("remove")
                })
        })
        .await;
    assert_eq!(push.attr("type"), Some("set"));
    s.add_user("bob", "new").await;
    let mut new_bob = Client::login(&s, "bob", "new", "n").await;
    let roster = new_bob.request("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>").await;
    assert_eq!(roster.get_child("query", "jabber:iq:roster").unwrap().children().count(), 0, "{}", show(&roster));
    new_bob.available().await;
    new_bob.expect_silence(std::time::Duration::from_millis(500)).await;
    s.stop().await;
}

db_tests!(
    disabled_by_default,
    register_then_login,
    change_password_and_remove,
    password_change_examples,
    registered_form_at_domain,
    cancellation_examples,
    preauth_remove_is_unexpected,
    cancellation_cleans_contacts,
);
