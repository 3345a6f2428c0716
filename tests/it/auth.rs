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

/// SCRAM-SHA-1 and the -PLUS variants with both channel-binding types (RFC 5802, RFC 9266,
/// RFC 5929); a binding from another channel fails.
async fn scram_variants_and_channel_binding(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice"]).await;
    let mut c = Client::secure(&s).await;
    c.auth_scram("SCRAM-SHA-1", "alice", "pw", None).await.unwrap();
    for mechanism in ["SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS"] {
        let mut c = Client::secure(&s).await;
        let exporter = c.cb_exporter.clone().expect("TLS 1.3 exporter");
        c.auth_scram(mechanism, "alice", "pw", Some(("tls-exporter", exporter))).await.unwrap();
        let mut c = Client::direct_tls(&s).await;
        c.open(crate::common::DOMAIN).await;
        let end_point = c.cb_end_point.clone().unwrap();
        c.auth_scram(mechanism, "alice", "pw", Some(("tls-server-end-point", end_point))).await.unwrap();
    }
    // Right password, wrong channel: a man in the middle would look like this.
    let mut c = Client::secure(&s).await;
    let mut forged = c.cb_exporter.clone().unwrap();
    forged[0] ^= 1;
    assert_eq!(c.auth_scram("SCRAM-SHA-256-PLUS", "alice", "pw", Some(("tls-exporter", forged))).await, Err("not-authorized".into()));
    // A -PLUS mechanism with a binding type we do not offer.
    let mut c = Client::secure(&s).await;
    assert_eq!(c.auth_scram("SCRAM-SHA-256-PLUS", "alice", "pw", Some(("tls-unique", vec![1, 2, 3]))).await, Err("not-authorized".into()));
    // A client that could bind but says the server cannot ("y"), while we offered -PLUS:
    // a downgrade (RFC 5802 §6).
    let mut c = Client::secure(&s).await;
    c.send(&format!("<auth xmlns='{SASL}' mechanism='SCRAM-SHA-256'>{}</auth>", base64_of("y,,n=alice,r=abcdef"))).await;
    assert_eq!(condition(&c.next().await), "not-authorized");
    s.stop().await;
}

/// With `require_encryption = false`, SCRAM is offered without TLS, PLAIN never is.
async fn optional_encryption(b: Backend) {
    let s = TestServer::start_with(b, |c| c.c2s.require_encryption = false).await;
    s.users(&["alice"]).await;
    let mut c = Client::tcp(&s).await;
    let features = c.open(crate::common::DOMAIN).await;
    let mechanisms: Vec<String> = features.get_child("mechanisms", SASL).unwrap().children().map(|m| m.text()).collect();
    assert_eq!(mechanisms, ["SCRAM-SHA-256", "SCRAM-SHA-1"]);
    let starttls = features.get_child("starttls", "urn:ietf:params:xml:ns:xmpp-tls").unwrap();
    assert!(!starttls.has_child("required", "urn:ietf:params:xml:ns:xmpp-tls"));
    assert_eq!(c.auth_plain("alice", "pw").await, Err("invalid-mechanism".into()));
    c.auth_scram_sha256("alice", "pw").await.unwrap();
    assert_eq!(c.bind("plain").await, "alice@localhost/plain");
    s.stop().await;
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

db_tests!(
    scram_and_plain_logins,
    wrong_password_and_unknown_user_look_the_same,
    bad_sasl_requests,
    no_password_in_the_database,
    scram_variants_and_channel_binding,
    optional_encryption,
);
