//! SASL (RFC 6120 §6): SCRAM and PLAIN, failures, and what is stored.

use crate::common::client::{SASL, condition, show};
use crate::common::{Backend, Client, TestServer};
use crate::db_tests;

async fn scram_and_plain_logins(b: Backend) {
    let s = TestServer::start(b).await;
    s.add_user("alice", "wonder land ✓").await;
    let mut c = Client::secure(&s).await;
    c.auth_scram_sha256("alice", "wonder land ✓").await.unwrap();
    let mut c = Client::secure(&s).await;
    c.auth_plain("alice", "wonder land ✓").await.unwrap();
    // Usernames are case-insensitive (nodeprep).
    let mut c = Client::secure(&s).await;
    c.auth_plain("Alice", "wonder land ✓").await.unwrap();
    s.stop().await;
}

async fn wrong_password_and_unknown_user_look_the_same(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice"]).await;
    let mut c = Client::secure(&s).await;
    assert_eq!(c.auth_scram_sha256("alice", "nope").await, Err("not-authorized".into()));
    assert_eq!(c.auth_scram_sha256("nobody", "pw").await, Err("not-authorized".into()));
    // Third failure on one stream: the stream ends.
    c.send(&format!("<auth xmlns='{SASL}' mechanism='PLAIN'>AGFsaWNlAHg=</auth>")).await;
    let failure = c.next().await;
    assert_eq!(condition(&failure), "not-authorized", "{}", show(&failure));
    assert_eq!(c.expect_stream_error().await.as_deref(), Some("policy-violation"));
    let mut c = Client::secure(&s).await;
    assert_eq!(c.auth_plain("nobody", "pw").await, Err("not-authorized".into()));
    s.stop().await;
}

async fn bad_sasl_requests(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice"]).await;
    let mut c = Client::secure(&s).await;
    c.send(&format!("<auth xmlns='{SASL}' mechanism='DIGEST-MD5'/>")).await;
    assert_eq!(condition(&c.next().await), "invalid-mechanism");
    c.send(&format!("<auth xmlns='{SASL}' mechanism='PLAIN'>!!notbase64</auth>")).await;
    assert_eq!(condition(&c.next().await), "incorrect-encoding");
    c.send(&format!("<auth xmlns='{SASL}' mechanism='SCRAM-SHA-1'>{}</auth>", base64_of("x,,n=alice,r=abc"))).await;
    assert_eq!(condition(&c.next().await), "malformed-request");
    // Abort in the middle of SCRAM.
    c.send(&format!("<auth xmlns='{SASL}' mechanism='SCRAM-SHA-1'>{}</auth>", base64_of("n,,n=alice,r=abc"))).await;
    assert!(c.next().await.is("challenge", SASL));
    c.send(&format!("<abort xmlns='{SASL}'/>")).await;
    assert_eq!(condition(&c.next().await), "aborted");
    // An authzid for someone else.
    let mut c = Client::secure(&s).await;
    c.send(&format!("<auth xmlns='{SASL}' mechanism='PLAIN'>{}</auth>", base64_of("bob@localhost\0alice\0pw"))).await;
    assert_eq!(condition(&c.next().await), "invalid-authzid");
    s.stop().await;
}

/// No password is stored: only salted SCRAM keys (RFC 5802 §3).
async fn no_password_in_the_database(b: Backend) {
    let s = TestServer::start(b).await;
    s.add_user("alice", "hunter2-unique-password").await;
    let core = s.server().core();
    for hash in starling::auth::ScramHash::ALL {
        let jid = jid::BareJid::new("alice@localhost").unwrap();
        let cred = core.db.accounts().credential(&jid, hash).await.unwrap().expect("credential stored");
        assert!(cred.iterations >= 4096);
        assert!(cred.salt.len() >= 16);
        for field in [&cred.salt, &cred.stored_key, &cred.server_key] {
            assert!(!String::from_utf8_lossy(field).contains("hunter2"));
        }
    }
    s.stop().await;
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

db_tests!(scram_and_plain_logins, wrong_password_and_unknown_user_look_the_same, bad_sasl_requests, no_password_in_the_database);
