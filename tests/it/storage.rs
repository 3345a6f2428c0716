//! The storage contract, the same tests on SQLite and PostgreSQL.

use jid::BareJid;
use starling::auth::{ScramCredential, ScramHash};
use starling::storage::{Db, LastActivity, NewAccount, RosterItem, Stored, Subscription};

use crate::common::{Backend, pg};
use crate::db_tests;

async fn open(b: Backend) -> (Db, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = match b {
        Backend::Sqlite => format!("sqlite://{}/s.db", dir.path().display()),
        Backend::Postgres => pg::new_database().await,
    };
    (Db::open(&url, 4).await.unwrap(), dir)
}

fn j(s: &str) -> BareJid {
    BareJid::new(s).unwrap()
}

async fn account(db: &Db, jid: &str) {
    let credentials = vec![ScramCredential::derive(ScramHash::Sha256, "pw", 4096).unwrap()];
    assert!(db.accounts().create(&NewAccount { jid: j(jid), credentials }).await.unwrap());
}

async fn accounts(b: Backend) {
    let (db, _dir) = open(b).await;
    let store = db.accounts();
    let cred = ScramCredential::derive(ScramHash::Sha1, "pw", 4096).unwrap();
    assert!(store.create(&NewAccount { jid: j("a@x"), credentials: vec![cred.clone()] }).await.unwrap());
    assert!(!store.create(&NewAccount { jid: j("a@x"), credentials: vec![] }).await.unwrap(), "no duplicates");
    assert_eq!(store.credential(&j("a@x"), ScramHash::Sha1).await.unwrap(), Some(cred));
    assert_eq!(store.credential(&j("a@x"), ScramHash::Sha256).await.unwrap(), None);
    assert_eq!(store.credential(&j("nobody@x"), ScramHash::Sha1).await.unwrap(), None);
    let batch: Vec<NewAccount> = (0..50).map(|i| NewAccount { jid: j(&format!("u{i:02}@y")), credentials: vec![] }).collect();
    assert_eq!(store.create_many(&batch).await.unwrap(), 50);
    assert_eq!(store.create_many(&batch[..10]).await.unwrap(), 0);
    assert_eq!(store.list(Some("x")).await.unwrap(), ["a@x"]);
    assert_eq!(store.list(None).await.unwrap().len(), 51);
    let new = vec![ScramCredential::derive(ScramHash::Sha256, "new", 4096).unwrap()];
    assert!(store.set_credentials(&j("a@x"), &new).await.unwrap());
    assert!(!store.set_credentials(&j("nobody@x"), &new).await.unwrap());
    assert_eq!(store.credential(&j("a@x"), ScramHash::Sha1).await.unwrap(), None, "old credentials replaced");
    assert!(store.delete(&j("a@x")).await.unwrap());
    assert!(!store.delete(&j("a@x")).await.unwrap());
    assert!(!store.exists(&j("a@x")).await.unwrap());
}

async fn rosters(b: Backend) {
    let (db, _dir) = open(b).await;
    account(&db, "a@x").await;
    let store = db.roster();
    assert_eq!(store.load(&j("a@x")).await.unwrap(), (0, vec![]));
    let mut item = RosterItem::new(j("b@x"));
    item.name = Some("Bee ✓".into());
    item.groups = vec!["G1".into(), "G2".into()];
    item.ask = true;
    let v1 = store.put(&j("a@x"), &item).await.unwrap();
    item.subscription = Subscription::Both;
    item.ask = false;
    item.groups = vec!["G2".into()];
    let v2 = store.put(&j("a@x"), &item).await.unwrap();
    assert!(v2 > v1);
    assert_eq!(store.get(&j("a@x"), &j("b@x")).await.unwrap(), Some(item.clone()));
    let (version, items) = store.load(&j("a@x")).await.unwrap();
    assert_eq!((version, items), (v2, vec![item.clone()]));
    // Several items, with and without groups (groups in name order).
    let mut other = RosterItem::new(j("c@x"));
    other.groups = vec!["Z".into(), "A".into(), "M".into()];
    let v3 = store.put(&j("a@x"), &other).await.unwrap();
    let plain = RosterItem::new(j("e@x"));
    let v4 = store.put(&j("a@x"), &plain).await.unwrap();
    other.groups.sort();
    assert_eq!(store.load(&j("a@x")).await.unwrap(), (v4, vec![item, other, plain]));
    assert!(v4 > v3);
    store.remove(&j("a@x"), &j("c@x")).await.unwrap();
    let v = store.remove(&j("a@x"), &j("e@x")).await.unwrap().unwrap();
    assert_eq!(store.remove(&j("a@x"), &j("b@x")).await.unwrap(), Some(v + 1));
    assert_eq!(store.remove(&j("a@x"), &j("b@x")).await.unwrap(), None);
    assert_eq!(store.load(&j("a@x")).await.unwrap(), (v + 1, vec![]), "the version of an emptied roster");
    store.set_pending_in(&j("a@x"), &j("c@x"), "<presence/>").await.unwrap();
    store.set_pending_in(&j("a@x"), &j("c@x"), "<presence type='subscribe'/>").await.unwrap();
    assert!(store.has_pending_in(&j("a@x"), &j("c@x")).await.unwrap());
    assert_eq!(store.pending_in(&j("a@x")).await.unwrap(), [("c@x".to_string(), "<presence type='subscribe'/>".to_string())]);
    assert!(store.clear_pending_in(&j("a@x"), &j("c@x")).await.unwrap());
    assert!(!store.clear_pending_in(&j("a@x"), &j("c@x")).await.unwrap());
    // Everything goes with the account.
    store.put(&j("a@x"), &RosterItem::new(j("d@x"))).await.unwrap();
    db.accounts().delete(&j("a@x")).await.unwrap();
    assert_eq!(store.load(&j("a@x")).await.unwrap(), (0, vec![]));
}

async fn offline(b: Backend) {
    let (db, _dir) = open(b).await;
    account(&db, "a@x").await;
    let store = db.offline();
    for i in 0..3 {
        assert_eq!(store.store(&j("a@x"), &format!("<m{i}/>"), 3).await.unwrap(), Stored::Yes);
    }
    assert_eq!(store.store(&j("a@x"), "<m3/>", 3).await.unwrap(), Stored::Full);
    assert_eq!(store.store(&j("nobody@x"), "<m/>", 3).await.unwrap(), Stored::NoSuchAccount);
    let msgs = store.load(&j("a@x")).await.unwrap();
    assert_eq!(msgs.iter().map(|m| m.stanza.as_str()).collect::<Vec<_>>(), ["<m0/>", "<m1/>", "<m2/>"]);
    // Only what was delivered is deleted.
    store.delete_up_to(&j("a@x"), msgs[1].id).await.unwrap();
    assert_eq!(store.count(&j("a@x")).await.unwrap(), 1);
    assert_eq!(store.store(&j("a@x"), "<m4/>", 3).await.unwrap(), Stored::Yes);
    let msgs = store.load(&j("a@x")).await.unwrap();
    assert_eq!(msgs.iter().map(|m| m.stanza.as_str()).collect::<Vec<_>>(), ["<m2/>", "<m4/>"]);
}

/// Queued stores are committed in groups: order, the per-account limit and unknown accounts
/// hold across and within groups, and a load sees every message queued before it.
async fn offline_grouped(b: Backend) {
    let (db, _dir) = open(b).await;
    account(&db, "a@x").await;
    account(&db, "b@x").await;
    let store = db.offline();
    let mut pending = Vec::new();
    for i in 0..600 {
        let (owner, limit) = match i % 3 {
            0 => ("a@x", 150),
            1 => ("b@x", 1000),
            _ => ("nobody@x", 1000),
        };
        pending.push(store.enqueue(&j(owner), format!("<m{i}/>"), limit).await);
    }
    // Nothing awaited yet: the load must wait for the queue.
    let a = store.load(&j("a@x")).await.unwrap();
    let expected: Vec<String> = (0..600).filter(|i| i % 3 == 0).take(150).map(|i| format!("<m{i}/>")).collect();
    assert_eq!(a.iter().map(|m| m.stanza.clone()).collect::<Vec<_>>(), expected);
    let b_msgs = store.load(&j("b@x")).await.unwrap();
    assert_eq!(b_msgs.len(), 200);
    assert!(b_msgs.windows(2).all(|w| w[0].id < w[1].id));
    let mut outcomes = (0, 0, 0);
    for p in pending {
        match p.outcome().await.unwrap() {
            Stored::Yes => outcomes.0 += 1,
            Stored::Full => outcomes.1 += 1,
            Stored::NoSuchAccount => outcomes.2 += 1,
        }
    }
    assert_eq!(outcomes, (350, 50, 200));
}

async fn small_stores(b: Backend) {
    let (db, _dir) = open(b).await;
    account(&db, "a@x").await;
    let a = j("a@x");
    assert_eq!(db.vcard().get(&a).await.unwrap(), None);
    db.vcard().set(&a, "<vCard xmlns='vcard-temp'/>").await.unwrap();
    db.vcard().set(&a, "<vCard xmlns='vcard-temp'><FN>A</FN></vCard>").await.unwrap();
    assert_eq!(db.vcard().get(&a).await.unwrap().as_deref(), Some("<vCard xmlns='vcard-temp'><FN>A</FN></vCard>"));
    db.private().set(&a, &[("ns1".into(), "<x xmlns='ns1'/>".into()), ("ns2".into(), "<y xmlns='ns2'/>".into())]).await.unwrap();
    assert_eq!(db.private().get(&a, "ns2").await.unwrap().as_deref(), Some("<y xmlns='ns2'/>"));
    assert_eq!(db.private().get(&a, "ns3").await.unwrap(), None);
    db.blocklist().add(&a, &["b@x".into(), "evil.example".into(), "b@x".into()]).await.unwrap();
    assert_eq!(db.blocklist().list(&a).await.unwrap(), ["b@x", "evil.example"]);
    db.blocklist().remove(&a, &["b@x".into()]).await.unwrap();
    assert_eq!(db.blocklist().list(&a).await.unwrap(), ["evil.example"]);
    db.blocklist().remove(&a, &[]).await.unwrap();
    assert!(db.blocklist().list(&a).await.unwrap().is_empty());
    let last = LastActivity { at: 1_700_000_000, status: "bye".into() };
    db.last_activity().set(&a, &last).await.unwrap();
    assert_eq!(db.last_activity().get(&a).await.unwrap(), Some(last));
    db.accounts().delete(&a).await.unwrap();
    assert_eq!(db.vcard().get(&a).await.unwrap(), None);
    assert_eq!(db.last_activity().get(&a).await.unwrap(), None);
}

/// Migrations run once: opening an existing database again is fine, and what a login reads
/// through the storage's hints (offline messages, pending requests, block lists) is found.
async fn reopen(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = match b {
        Backend::Sqlite => format!("sqlite://{}/deep/dir/s.db", dir.path().display()),
        Backend::Postgres => pg::new_database().await,
    };
    let db = Db::open(&url, 2).await.unwrap();
    account(&db, "a@x").await;
    account(&db, "b@x").await;
    let (a, b) = (j("a@x"), j("b@x"));
    // Read once before writing, as a login would: an empty answer must not stick.
    assert!(db.offline().load(&a).await.unwrap().is_empty());
    assert_eq!(db.offline().store(&a, "<m/>", 10).await.unwrap(), Stored::Yes);
    assert!(db.roster().pending_in(&a).await.unwrap().is_empty());
    db.roster().set_pending_in(&a, &b, "<presence type='subscribe'/>").await.unwrap();
    assert!(db.blocklist().list(&a).await.unwrap().is_empty());
    db.blocklist().add(&a, &["c@x".into()]).await.unwrap();
    // Accepted but not yet committed: closing must still write them.
    for i in 0..200 {
        drop(db.offline().enqueue(&b, format!("<q{i}/>"), 1000).await);
    }
    db.close().await;
    let db = Db::open(&url, 2).await.unwrap();
    assert!(db.accounts().exists(&a).await.unwrap());
    assert_eq!(db.offline().load(&a).await.unwrap().len(), 1);
    assert!(db.roster().has_pending_in(&a, &b).await.unwrap());
    assert_eq!(db.roster().pending_in(&a).await.unwrap().len(), 1);
    assert_eq!(db.blocklist().list(&a).await.unwrap(), ["c@x"]);
    let queued: Vec<String> = db.offline().load(&b).await.unwrap().into_iter().map(|m| m.stanza).collect();
    assert_eq!(queued, (0..200).map(|i| format!("<q{i}/>")).collect::<Vec<_>>());
    assert!(db.blocklist().list(&b).await.unwrap().is_empty());
}

db_tests!(accounts, rosters, offline, offline_grouped, small_stores, reopen);
