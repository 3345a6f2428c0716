//! In-band registration (XEP-0077): off by default; password change and removal for
//! logged-in users.

use crate::common::client::{condition, show};
use crate::common::{Backend, Client, TestServer};
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
    assert_eq!(condition(&r), "not-allowed");
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

db_tests!(disabled_by_default, register_then_login, change_password_and_remove);
