//! The storage contract, the same tests on SQLite and PostgreSQL.

use jid::{BareJid, Jid};
use starling::auth::{ScramCredential, ScramHash};
use starling::xml::Serialised;
use starling::storage::{
    Affiliation, AffiliationChange, AllowPm, ArchiveRange, BatchLimit, BulkMessage, Db, LastActivity, LimitReached, NewAccount,
    NewArchived, OfflineQuota, PresenceBroadcast, PushRegistration, RoomConfig, RoomSummary, RosterItem, RosterLimits, StorageError, Stored, StoredAffiliation,
    StoredRoom, Subscription, Whois,
};

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

/// A message to archive, serialised.
fn serialised_message() -> Serialised {
    Serialised::of(&starling::xml::parse_element("<message xmlns='jabber:client'/>").unwrap())
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

/// A database URL for a fresh database, for tests that open it more than once.
async fn fresh_url(b: Backend) -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = match b {
        Backend::Sqlite => format!("sqlite://{}/s.db?mode=rwc", dir.path().display()),
        Backend::Postgres => pg::new_database().await,
    };
    (url, dir)
}

/// An offline message of exactly `size` bytes, numbered.
fn sized(i: usize, size: usize) -> String {
    let m = format!("<m n='{i:06}'>{}</m>", "x".repeat(size - 18));
    assert_eq!(m.len(), size);
    m
}

/// The byte quota: a message that would take the total past it is refused, one that
/// reaches it exactly is stored, delivered (deleted) messages free their bytes, and the
/// count limit still holds on its own.
async fn offline_byte_quota(b: Backend) {
    let (db, _dir) = open(b).await;
    account(&db, "a@x").await;
    let (a, store) = (j("a@x"), db.offline());
    let quota = OfflineQuota { messages: 4, bytes: 300 };
    assert_eq!(store.store(&a, &sized(0, 100), quota).await.unwrap(), Stored::Yes);
    assert_eq!(store.store(&a, &sized(1, 150), quota).await.unwrap(), Stored::Yes);
    assert_eq!(store.store(&a, &sized(2, 51), quota).await.unwrap(), Stored::Full, "251 + 51 > 300");
    assert_eq!(store.store(&a, &sized(3, 50), quota).await.unwrap(), Stored::Yes, "exactly 300");
    assert_eq!(store.usage(&a).await.unwrap(), (3, 300));
    assert_eq!(store.store(&a, &sized(4, 18), quota).await.unwrap(), Stored::Full);
    // Larger than the whole quota: never stored.
    assert_eq!(store.store(&j("a@x"), &sized(5, 301), OfflineQuota { messages: 4, bytes: 300 }).await.unwrap(), Stored::Full);
    let waiting = store.load(&a).await.unwrap();
    assert_eq!(waiting.iter().map(|m| m.stanza.len()).collect::<Vec<_>>(), [100, 150, 50]);
    // Delivered: the bytes are free again.
    assert_eq!(store.delete_up_to(&a, waiting[1].id).await.unwrap(), 2);
    assert_eq!(store.usage(&a).await.unwrap(), (1, 50));
    assert_eq!(store.store(&a, &sized(6, 250), quota).await.unwrap(), Stored::Yes);
    // The count limit alone: four small messages, the fifth refused.
    assert_eq!(store.store(&a, &sized(7, 18), quota).await.unwrap(), Stored::Full, "300 bytes again");
    let small = OfflineQuota { messages: 4, bytes: 10_000 };
    assert_eq!(store.store(&a, &sized(8, 18), small).await.unwrap(), Stored::Yes);
    assert_eq!(store.store(&a, &sized(9, 18), small).await.unwrap(), Stored::Yes);
    assert_eq!(store.store(&a, &sized(10, 18), small).await.unwrap(), Stored::Full, "four messages");
    assert_eq!(store.usage(&a).await.unwrap(), (4, 336));
    assert_eq!(store.store(&j("nobody@x"), "<m/>", quota).await.unwrap(), Stored::NoSuchAccount);
    // The account's totals go with it.
    db.accounts().delete(&a).await.unwrap();
    assert_eq!(store.usage(&a).await.unwrap(), (0, 0));
}

/// Concurrent senders through two database handles (two writers, as two server processes
/// would have) cannot take an account past its quota: the check and the increment are one
/// statement. Deliveries running meanwhile keep the running total equal to what is stored.
async fn offline_byte_quota_concurrent(b: Backend) {
    let (url, _dir) = fresh_url(b).await;
    let first = Db::open(&url, 4).await.unwrap();
    let second = Db::open(&url, 4).await.unwrap();
    account(&first, "a@x").await;
    let a = j("a@x");
    // 50 messages of 100 bytes fit; 8 senders try 25 each.
    let quota = OfflineQuota { messages: 10_000, bytes: 5_000 };
    let mut senders = Vec::new();
    for sender in 0..8 {
        let store = if sender % 2 == 0 { first.offline() } else { second.offline() };
        let a = a.clone();
        senders.push(tokio::spawn(async move {
            let mut outcomes = (0, 0);
            for i in 0..25 {
                match store.store(&a, &sized(sender * 100 + i, 100), quota).await.unwrap() {
                    Stored::Yes => outcomes.0 += 1,
                    Stored::Full => outcomes.1 += 1,
                    Stored::NoSuchAccount => panic!("the account exists"),
                }
            }
            outcomes
        }));
    }
    let mut outcomes = (0, 0);
    for s in senders {
        let (yes, full) = s.await.unwrap();
        outcomes = (outcomes.0 + yes, outcomes.1 + full);
    }
    assert_eq!(outcomes, (50, 150));
    assert_eq!(first.offline().usage(&a).await.unwrap(), (50, 5_000));

    // Deliver in batches while new messages come from both handles: the totals always
    // match the rows, and the quota still holds at the end.
    let deliverer = {
        let store = first.offline();
        let a = a.clone();
        tokio::spawn(async move {
            let through = store.newest(&a).await.unwrap().unwrap();
            let mut after = 0;
            loop {
                let batch = store.batch(&a, after, through, BatchLimit { messages: 7, bytes: u64::MAX }).await.unwrap();
                let Some(last) = batch.last().map(|m| m.id) else { break };
                store.delete_up_to(&a, last).await.unwrap();
                after = last;
            }
        })
    };
    let mut senders = Vec::new();
    for sender in 0..4 {
        let store = if sender % 2 == 0 { first.offline() } else { second.offline() };
        let a = a.clone();
        senders.push(tokio::spawn(async move {
            for i in 0..25 {
                store.store(&a, &sized(1000 + sender * 100 + i, 100), quota).await.unwrap();
            }
        }));
    }
    deliverer.await.unwrap();
    for s in senders {
        s.await.unwrap();
    }
    let rows = first.offline().load(&a).await.unwrap();
    let bytes: usize = rows.iter().map(|m| m.stanza.len()).sum();
    assert!(bytes <= 5_000, "{bytes} bytes stored");
    assert_eq!(first.offline().usage(&a).await.unwrap(), (rows.len() as i64, bytes as i64));
    assert_eq!(second.offline().usage(&a).await.unwrap(), (rows.len() as i64, bytes as i64));
}

/// The flush's batches: at most so many messages, at most so many bytes (but always at
/// least one message), oldest first, within the ids asked for.
async fn offline_batches(b: Backend) {
    let (db, _dir) = open(b).await;
    account(&db, "a@x").await;
    account(&db, "e@x").await;
    let (a, store) = (j("a@x"), db.offline());
    assert_eq!(store.newest(&a).await.unwrap(), None);
    let sizes = [100, 100, 300, 50, 50, 50, 1000, 20];
    for (i, size) in sizes.iter().enumerate() {
        assert_eq!(store.store(&a, &sized(i, *size), 100).await.unwrap(), Stored::Yes);
    }
    let all = store.load(&a).await.unwrap();
    let ids: Vec<i64> = all.iter().map(|m| m.id).collect();
    let newest = store.newest(&a).await.unwrap().unwrap();
    assert_eq!(newest, ids[7]);
    let got = |batch: Vec<starling::storage::OfflineMessage>| batch.iter().map(|m| m.id).collect::<Vec<_>>();
    let unlimited = u64::MAX;
    assert_eq!(got(store.batch(&a, 0, newest, BatchLimit { messages: 3, bytes: unlimited }).await.unwrap()), ids[..3]);
    assert_eq!(got(store.batch(&a, 0, newest, BatchLimit { messages: 100, bytes: 250 }).await.unwrap()), ids[..2]);
    assert_eq!(got(store.batch(&a, ids[1], newest, BatchLimit { messages: 100, bytes: 250 }).await.unwrap()), ids[2..3], "one message larger than the limit still goes");
    assert_eq!(got(store.batch(&a, ids[2], newest, BatchLimit { messages: 100, bytes: 150 }).await.unwrap()), ids[3..6]);
    assert_eq!(got(store.batch(&a, ids[5], newest, BatchLimit { messages: 100, bytes: 1019 }).await.unwrap()), ids[6..7]);
    assert_eq!(got(store.batch(&a, ids[5], newest, BatchLimit { messages: 100, bytes: 1020 }).await.unwrap()), ids[6..8]);
    assert_eq!(got(store.batch(&a, 0, ids[1], BatchLimit { messages: 100, bytes: unlimited }).await.unwrap()), ids[..2], "not past `through`");
    assert!(store.batch(&a, newest, newest, BatchLimit { messages: 100, bytes: unlimited }).await.unwrap().is_empty());
    let first = store.batch(&a, 0, newest, BatchLimit { messages: 1, bytes: unlimited }).await.unwrap();
    assert_eq!(first[0].stanza, sized(0, 100));
    assert_eq!(store.newest(&j("e@x")).await.unwrap(), None);
}

/// The migration that adds the byte quota computes sizes and totals for messages stored
/// before it, so the quota holds for them at once.
async fn offline_quota_migration(b: Backend) {
    let (url, dir) = fresh_url(b).await;
    // The schema as it was before: every migration up to 0007.
    let migrator = older_schema(b, &dir, "0008").await;
    let stanzas = ["<m>é</m>".to_string(), sized(1, 100), sized(2, 200)];
    let insert = "INSERT INTO offline_messages (owner, stanza, stored_at) VALUES ($1, $2, 0)";
    match b {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            migrator.run(&pool).await.unwrap();
            sqlx::query("INSERT INTO accounts (jid, domain, created_at) VALUES ('a@x', 'x', 0)").execute(&pool).await.unwrap();
            for s in &stanzas {
                sqlx::query(insert).bind("a@x").bind(s).execute(&pool).await.unwrap();
            }
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            migrator.run(&pool).await.unwrap();
            sqlx::query("INSERT INTO accounts (jid, domain, created_at) VALUES ('a@x', 'x', 0)").execute(&pool).await.unwrap();
            for s in &stanzas {
                sqlx::query(insert).bind("a@x").bind(s).execute(&pool).await.unwrap();
            }
            pool.close().await;
        }
    }
    let db = Db::open(&url, 2).await.unwrap();
    let (a, store) = (j("a@x"), db.offline());
    // "é" is two bytes: sizes are bytes, as for new messages.
    assert_eq!(store.usage(&a).await.unwrap(), (3, 9 + 100 + 200));
    let ids: Vec<i64> = store.load(&a).await.unwrap().iter().map(|m| m.id).collect();
    let batch = store.batch(&a, 0, ids[2], BatchLimit { messages: 10, bytes: 109 }).await.unwrap();
    assert_eq!(batch.len(), 2, "sizes were computed for the old rows");
    let quota = OfflineQuota { messages: 10, bytes: 400 };
    assert_eq!(store.store(&a, &sized(3, 92), quota).await.unwrap(), Stored::Full);
    assert_eq!(store.store(&a, &sized(4, 91), quota).await.unwrap(), Stored::Yes);
    store.delete_up_to(&a, ids[2]).await.unwrap();
    assert_eq!(store.usage(&a).await.unwrap(), (1, 91));
}

/// A migrator for the schema as it was before migration `before`: every migration whose
/// name sorts before it, copied into a folder under `dir`.
async fn older_schema(b: Backend, dir: &tempfile::TempDir, before: &str) -> sqlx::migrate::Migrator {
    let older = dir.path().join(format!("before-{before}"));
    std::fs::create_dir(&older).unwrap();
    let folder = match b {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    for entry in std::fs::read_dir(format!("{}/migrations/{folder}", env!("CARGO_MANIFEST_DIR"))).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.as_str() < before {
            std::fs::copy(entry.path(), older.join(&name)).unwrap();
        }
    }
    sqlx::migrate::Migrator::new(older.as_path()).await.unwrap()
}

/// Roster limits: a new item past `max_items`, or a new pending request past
/// `max_pending_in`, is refused with the limit; existing ones still change.
async fn roster_limits(b: Backend) {
    let (db, _dir) = open(b).await;
    account(&db, "a@x").await;
    let a = j("a@x");
    let store = db.roster().with_limits(RosterLimits { max_items: 2, max_pending_in: 1 });
    store.put(&a, &RosterItem::new(j("b@x"))).await.unwrap();
    let v = store.put(&a, &RosterItem::new(j("c@x"))).await.unwrap();
    match store.put(&a, &RosterItem::new(j("d@x"))).await {
        Err(StorageError::Limit(LimitReached::RosterItems(2))) => {}
        other => panic!("expected the item limit, got {other:?}"),
    }
    assert_eq!(store.load(&a).await.unwrap().0, v, "a refused write does not bump the version");
    let mut renamed = RosterItem::new(j("c@x"));
    renamed.name = Some("C".into());
    renamed.groups = vec!["G".into()];
    assert!(store.put(&a, &renamed).await.unwrap() > v, "existing items still change");
    store.remove(&a, &j("b@x")).await.unwrap();
    store.put(&a, &RosterItem::new(j("d@x"))).await.unwrap();
    let contacts: Vec<String> = store.load(&a).await.unwrap().1.iter().map(|i| i.jid.to_string()).collect();
    assert_eq!(contacts, ["c@x", "d@x"]);

    store.set_pending_in(&a, &j("p@x"), "<presence type='subscribe'/>").await.unwrap();
    store.set_pending_in(&a, &j("p@x"), "<presence type='subscribe' id='again'/>").await.unwrap();
    match store.set_pending_in(&a, &j("q@x"), "<presence type='subscribe'/>").await {
        Err(StorageError::Limit(LimitReached::PendingIn(1))) => {}
        other => panic!("expected the pending limit, got {other:?}"),
    }
    assert_eq!(store.pending_in(&a).await.unwrap(), [("p@x".to_string(), "<presence type='subscribe' id='again'/>".to_string())]);
    store.clear_pending_in(&a, &j("p@x")).await.unwrap();
    store.set_pending_in(&a, &j("q@x"), "<presence type='subscribe'/>").await.unwrap();
    // Unlimited by default (tools, tests).
    for i in 0..5 {
        db.roster().put(&a, &RosterItem::new(j(&format!("u{i}@x")))).await.unwrap();
    }
}

/// Concurrent writers of one roster, each adding new items, stop exactly at the limit.
async fn roster_limit_concurrent(b: Backend) {
    let (db, _dir) = open(b).await;
    account(&db, "a@x").await;
    let store = db.roster().with_limits(RosterLimits { max_items: 20, max_pending_in: 1 });
    let mut writers = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let mut added = 0;
            for i in 0..10 {
                match store.put(&j("a@x"), &RosterItem::new(j(&format!("c{w}-{i}@x")))).await {
                    Ok(_) => added += 1,
                    Err(StorageError::Limit(LimitReached::RosterItems(20))) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            added
        }));
    }
    let mut added = 0;
    for w in writers {
        added += w.await.unwrap();
    }
    assert_eq!(added, 20);
    assert_eq!(store.load(&j("a@x")).await.unwrap().1.len(), 20);
}

/// Private XML within a byte quota for all namespaces together: a set that would pass it
/// is refused as a whole and changes nothing; replacing an element by a smaller one frees
/// room.
async fn private_quota(b: Backend) {
    let (db, _dir) = open(b).await;
    account(&db, "a@x").await;
    let a = j("a@x");
    let store = db.private().with_max_bytes(1000);
    let element = |ns: &str, size: usize| {
        let head = format!("<x xmlns='{ns}'>");
        format!("{head}{}</x>", "é".repeat((size - head.len() - 4) / 2))
    };
    store.set(&a, &[("n1".into(), element("n1", 600))]).await.unwrap();
    let refused = store.set(&a, &[("n2".into(), element("n2", 300)), ("n3".into(), element("n3", 200))]).await;
    assert!(matches!(refused, Err(StorageError::Limit(LimitReached::PrivateBytes(1000)))), "{refused:?}");
    assert_eq!(store.get(&a, "n2").await.unwrap(), None, "all or nothing");
    assert_eq!(store.get(&a, "n1").await.unwrap(), Some(element("n1", 600)));
    store.set(&a, &[("n2".into(), element("n2", 400))]).await.unwrap();
    assert!(store.set(&a, &[("n3".into(), element("n3", 100))]).await.is_err());
    // n1 shrinks: room for n3.
    store.set(&a, &[("n1".into(), element("n1", 100)), ("n3".into(), element("n3", 500))]).await.unwrap();
    assert_eq!(store.get(&a, "n3").await.unwrap(), Some(element("n3", 500)));
}

/// XEP-0357 registrations: enable replaces the same pair's options and device, counts
/// against the limit all or nothing; disable by service or by node; an error's removal only
/// if nothing changed meanwhile; gone with the account.
async fn push_registrations(b: Backend) {
    let (db, _dir) = open(b).await;
    account(&db, "a@x").await;
    account(&db, "b@x").await;
    let (a, other) = (j("a@x"), j("b@x"));
    let store = db.push();
    assert!(store.list(&a).await.unwrap().is_empty());
    let reg = |service: &str, node: &str, resource: &str, options: Option<&str>| PushRegistration {
        service: service.into(),
        node: node.into(),
        resource: resource.into(),
        options: options.map(str::to_string),
    };
    store.enable(&a, &reg("p.example", "n1", "phone", Some("<x xmlns='jabber:x:data'/>")), 2).await.unwrap();
    store.enable(&a, &reg("p.example", "n2", "phone", None), 2).await.unwrap();
    store.enable(&other, &reg("p.example", "n1", "pad", None), 2).await.unwrap();
    let refused = store.enable(&a, &reg("q.example", "n", "phone", None), 2).await;
    assert!(matches!(refused, Err(StorageError::Limit(LimitReached::PushRegistrations(2)))), "{refused:?}");
    // The same pair again: replaced, not counted twice.
    store.enable(&a, &reg("p.example", "n1", "tablet", None), 2).await.unwrap();
    let list = store.list(&a).await.unwrap();
    assert_eq!(list, [reg("p.example", "n1", "tablet", None), reg("p.example", "n2", "phone", None)]);
    // Removal after an error: only what was sent to.
    assert!(!store.disable_if_unchanged(&a, &reg("p.example", "n1", "phone", None)).await.unwrap());
    assert!(!store.disable_if_unchanged(&a, &reg("p.example", "n1", "tablet", Some("<x/>"))).await.unwrap());
    assert!(store.disable_if_unchanged(&a, &reg("p.example", "n1", "tablet", None)).await.unwrap());
    store.enable(&a, &reg("p.example", "n1", "phone", Some("<x/>")), 2).await.unwrap();
    assert!(store.disable_if_unchanged(&a, &reg("p.example", "n1", "phone", Some("<x/>"))).await.unwrap());
    store.enable(&a, &reg("p.example", "n1", "phone", None), 2).await.unwrap();
    assert_eq!(store.disable(&a, "p.example", Some("n9")).await.unwrap(), 0);
    assert_eq!(store.disable(&a, "p.example", Some("n1")).await.unwrap(), 1);
    store.enable(&a, &reg("p.example", "n3", "phone", None), 2).await.unwrap();
    assert_eq!(store.disable(&a, "p.example", None).await.unwrap(), 2);
    assert!(store.list(&a).await.unwrap().is_empty());
    assert_eq!(store.list(&other).await.unwrap().len(), 1, "another account's stay");
    assert!(db.accounts().delete(&other).await.unwrap());
    assert!(store.list(&other).await.unwrap().is_empty(), "gone with the account");
}

/// A room with every field set to something other than a default.
fn room(jid: &str) -> StoredRoom {
    StoredRoom {
        jid: j(jid),
        config: RoomConfig {
            name: "Salle à manger ✓".into(),
            description: "Where the 'quotes' and \"doubles\" go".into(),
            language: "fr".into(),
            public: true,
            members_only: true,
            moderated: true,
            password: "s3cret".into(),
            max_users: u32::MAX,
            whois: Whois::Anyone,
            allow_invites: true,
            change_subject: true,
            allow_pm: AllowPm::Moderators,
            archive: true,
            history_length: 0,
            presence_broadcast: PresenceBroadcast { moderator: true, participant: false, visitor: true },
        },
        subject: "Today: soup".into(),
        subject_from: "chef".into(),
        subject_occupant_id: "c4ef".into(),
        occupant_salt: (0u8..16).map(|i| i * 17).collect(),
        created: 1_700_000_123,
        persistent: true,
        affiliations: vec![
            StoredAffiliation { jid: "owner@x".into(), affiliation: Affiliation::Owner, nick: "boss".into(), reason: "".into() },
            StoredAffiliation { jid: "evil.example".into(), affiliation: Affiliation::Outcast, nick: "".into(), reason: "spam".into() },
            StoredAffiliation { jid: "m@y".into(), affiliation: Affiliation::Member, nick: "em".into(), reason: "invited".into() },
        ],
    }
}

/// The same room as `load` gives it: affiliations sorted by JID.
fn loaded(mut room: StoredRoom) -> StoredRoom {
    room.affiliations.sort_by(|a, b| a.jid.cmp(&b.jid));
    room
}

fn change(jid: &str, affiliation: Option<Affiliation>, nick: &str, reason: &str) -> AffiliationChange {
    AffiliationChange { jid: jid.into(), affiliation, nick: nick.into(), reason: reason.into() }
}

/// Rooms: every field round-trips, a room is created once, the configuration and subject
/// are replaced.
async fn muc_rooms(b: Backend) {
    let (db, _dir) = open(b).await;
    let store = db.muc();
    let r = room("kitchen@conference.x");
    assert_eq!(store.load(&r.jid).await.unwrap(), None);
    assert!(store.create(&r).await.unwrap());
    assert_eq!(store.load(&r.jid).await.unwrap(), Some(loaded(r.clone())));

    // A second create changes nothing, even with other values.
    let mut other = room("kitchen@conference.x");
    other.config.name = "Other".into();
    other.affiliations = vec![StoredAffiliation { jid: "z@x".into(), affiliation: Affiliation::Admin, nick: "".into(), reason: "".into() }];
    assert!(!store.create(&other).await.unwrap());
    assert_eq!(store.load(&r.jid).await.unwrap(), Some(loaded(r.clone())));

    // The other value of every field, and the smallest values.
    let config = RoomConfig {
        name: "".into(),
        description: "".into(),
        language: "".into(),
        public: false,
        members_only: false,
        moderated: false,
        password: "".into(),
        max_users: 0,
        whois: Whois::Moderators,
        allow_invites: false,
        change_subject: false,
        allow_pm: AllowPm::NoOne,
        archive: false,
        history_length: u32::MAX,
        presence_broadcast: PresenceBroadcast { moderator: false, participant: false, visitor: false },
    };
    store.save_config(&r.jid, &config, true).await.unwrap();
    store.save_subject(&r.jid, "Tomorrow: bread", "baker", "b4k3r").await.unwrap();
    let after = store.load(&r.jid).await.unwrap().unwrap();
    let mut expected = loaded(r.clone());
    expected.config = config.clone();
    expected.subject = "Tomorrow: bread".into();
    expected.subject_from = "baker".into();
    expected.subject_occupant_id = "b4k3r".into();
    assert_eq!(after, expected);
    store.save_subject(&r.jid, "", "", "").await.unwrap();
    assert_eq!(store.load(&r.jid).await.unwrap().unwrap().subject, "");
    for allow_pm in [AllowPm::Anyone, AllowPm::Participants] {
        let config = RoomConfig { allow_pm, ..config.clone() };
        store.save_config(&r.jid, &config, true).await.unwrap();
        assert_eq!(store.load(&r.jid).await.unwrap().unwrap().config.allow_pm, allow_pm);
    }

    // A room without affiliations; writes to a room that does not exist change nothing.
    let mut bare = room("empty@conference.x");
    bare.affiliations.clear();
    assert!(store.create(&bare).await.unwrap());
    assert_eq!(store.load(&bare.jid).await.unwrap(), Some(bare));
    let missing = j("missing@conference.x");
    store.save_config(&missing, &config, true).await.unwrap();
    store.save_subject(&missing, "s", "n", "i").await.unwrap();
    assert_eq!(store.load(&missing).await.unwrap(), None);
}

/// Affiliation lists: rows are added, changed and removed, changes apply in order, and a
/// set is seen whole or not at all.
async fn muc_affiliations(b: Backend) {
    let (db, _dir) = open(b).await;
    let store = db.muc();
    let mut r = room("hall@conference.x");
    r.affiliations.clear();
    assert!(store.create(&r).await.unwrap());
    let list = |room: Option<StoredRoom>| -> Vec<(String, Affiliation, String, String)> {
        room.unwrap().affiliations.into_iter().map(|a| (a.jid, a.affiliation, a.nick, a.reason)).collect()
    };
    let row = |jid: &str, a: Affiliation, nick: &str, reason: &str| (jid.to_string(), a, nick.to_string(), reason.to_string());

    store
        .set_affiliations(
            &r.jid,
            &[change("b@x", Some(Affiliation::Member), "bee", ""), change("a@x", Some(Affiliation::Owner), "", "founder")],
        )
        .await
        .unwrap();
    assert_eq!(
        list(store.load(&r.jid).await.unwrap()),
        [row("a@x", Affiliation::Owner, "", "founder"), row("b@x", Affiliation::Member, "bee", "")]
    );
    // Change (nick and reason too), remove, add; removing a JID without a row is fine.
    store
        .set_affiliations(
            &r.jid,
            &[
                change("b@x", Some(Affiliation::Admin), "B", "promoted"),
                change("a@x", None, "", ""),
                change("nobody@x", None, "", ""),
                change("spam.example", Some(Affiliation::Outcast), "", "spam"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        list(store.load(&r.jid).await.unwrap()),
        [row("b@x", Affiliation::Admin, "B", "promoted"), row("spam.example", Affiliation::Outcast, "", "spam")]
    );
    // In order: the later change of a JID wins.
    store
        .set_affiliations(
            &r.jid,
            &[
                change("c@x", Some(Affiliation::Member), "", ""),
                change("c@x", None, "", ""),
                change("b@x", None, "", ""),
                change("b@x", Some(Affiliation::Member), "", ""),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        list(store.load(&r.jid).await.unwrap()),
        [row("b@x", Affiliation::Member, "", ""), row("spam.example", Affiliation::Outcast, "", "spam")]
    );
    store.set_affiliations(&r.jid, &[]).await.unwrap();

    // A room that does not exist gets no rows.
    let missing = j("missing@conference.x");
    assert!(store.set_affiliations(&missing, &[change("a@x", Some(Affiliation::Member), "", "")]).await.is_err());
    assert_eq!(store.load(&missing).await.unwrap(), None);

    // Atomic: a reader sees a set whole or not at all, while it is set and unset.
    let jids: Vec<String> = (0..8).map(|i| format!("m{i}@x")).collect();
    let writer = {
        let (store, room, jids) = (store.clone(), r.jid.clone(), jids.clone());
        tokio::spawn(async move {
            for _ in 0..30 {
                let add: Vec<AffiliationChange> = jids.iter().map(|jid| change(jid, Some(Affiliation::Member), "", "")).collect();
                store.set_affiliations(&room, &add).await.unwrap();
                let remove: Vec<AffiliationChange> = jids.iter().map(|jid| change(jid, None, "", "")).collect();
                store.set_affiliations(&room, &remove).await.unwrap();
            }
        })
    };
    let mut seen = [false, false];
    while !writer.is_finished() {
        let room = store.load(&r.jid).await.unwrap().unwrap();
        let members = room.affiliations.iter().filter(|a| a.jid.starts_with('m')).count();
        assert!(members == 0 || members == jids.len(), "a partial set: {members} of {}", jids.len());
        seen[usize::from(members > 0)] = true;
        // Room for the writer's transactions on a loaded machine (the pool is shared).
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    writer.await.unwrap();
    assert_eq!(list(store.load(&r.jid).await.unwrap()).len(), 2, "{seen:?}");
}

/// A service's rooms: in byte order of their JIDs, public ones only if asked, paged after
/// a JID; counts agree; other services' rooms are not listed.
async fn muc_listing(b: Backend) {
    let (db, _dir) = open(b).await;
    let store = db.muc();
    // '-' sorts before letters byte by byte, whatever a locale would say.
    let names = ["ab", "a-c", "zed", "b", "c1", "c2", "0day"];
    for (i, name) in names.iter().enumerate() {
        let mut r = room(&format!("{name}@conference.x"));
        r.config.public = i % 2 == 0;
        r.config.name = format!("Room {name}");
        assert!(store.create(&r).await.unwrap());
    }
    let mut elsewhere = room("ab@chat.y");
    elsewhere.config.public = true;
    assert!(store.create(&elsewhere).await.unwrap());

    let jids = |rooms: Vec<RoomSummary>| rooms.into_iter().map(|r| r.jid).collect::<Vec<_>>();
    let all = store.list("conference.x", false, None, 100).await.unwrap();
    let expected = ["0day", "a-c", "ab", "b", "c1", "c2", "zed"].map(|n| format!("{n}@conference.x"));
    assert_eq!(jids(all.clone()), expected);
    assert_eq!(all[2], RoomSummary { jid: "ab@conference.x".into(), name: "Room ab".into(), public: true });
    assert!(!all[1].public);
    let public = store.list("conference.x", true, None, 100).await.unwrap();
    assert_eq!(jids(public.clone()), ["0day@conference.x", "ab@conference.x", "c1@conference.x", "zed@conference.x"]);
    assert!(public.iter().all(|r| r.public));
    assert_eq!(store.count("conference.x", false).await.unwrap(), 7);
    assert_eq!(store.count("conference.x", true).await.unwrap(), 4);
    assert_eq!(store.count("chat.y", false).await.unwrap(), 1);
    assert_eq!(store.count("nothing.z", false).await.unwrap(), 0);
    assert!(store.list("nothing.z", false, None, 10).await.unwrap().is_empty());

    // Pages of three, each after the last JID of the one before.
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = jids(store.list("conference.x", false, after.as_deref(), 3).await.unwrap());
        if page.is_empty() {
            break;
        }
        after = page.last().cloned();
        pages.push(page);
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
    assert_eq!(pages.concat(), jids(all));
    assert_eq!(jids(store.list("conference.x", true, Some("ab@conference.x"), 2).await.unwrap()), ["c1@conference.x", "zed@conference.x"]);
    // `after` need not be a room's JID.
    assert_eq!(jids(store.list("conference.x", false, Some("c"), 10).await.unwrap()), expected[4..]);
    assert!(store.list("conference.x", false, None, 0).await.unwrap().is_empty());
}

/// Deleting a room deletes its affiliations and its archive, and nothing of anyone else's;
/// the archive writer archives for a room that exists and skips one that is gone.
async fn muc_delete(b: Backend) {
    let (db, _dir) = open(b).await;
    account(&db, "a@x").await;
    let (store, archive) = (db.muc(), db.archive());
    let r = room("gone@conference.x");
    let kept = room("kept@conference.x");
    assert!(store.create(&r).await.unwrap());
    assert!(store.create(&kept).await.unwrap());
    let message = |owner: &str, with: &str, i: i64| BulkMessage {
        owner: j(owner),
        with: Jid::new(with).unwrap(),
        stanza: format!("<message xmlns='jabber:client' type='groupchat'><body>m{i}</body></message>"),
        at_micros: None,
    };
    let bulk: Vec<BulkMessage> = (0..5)
        .map(|i| message("gone@conference.x", "gone@conference.x/nick", i))
        .chain((0..3).map(|i| message("kept@conference.x", "kept@conference.x/nick", i)))
        .chain((0..4).map(|i| message("a@x", "b@y/r", i)))
        .collect();
    archive.insert_bulk(&bulk).await.unwrap();
    // Through the writer too: a room is an owner it archives for.
    let slot = archive.allocate().await.unwrap();
    let with = Jid::new("gone@conference.x/chef").unwrap();
    let live = |ts| NewArchived { owner: j("gone@conference.x"), ts, with: with.clone(), stanza: serialised_message() };
    archive.store(vec![live(slot.ts)]).await.unwrap();
    assert_eq!(archive.count(&r.jid).await.unwrap(), 6);
    assert_eq!(archive.position(&r.jid, &slot.id).await.unwrap(), Some(slot.ts));

    assert!(store.delete(&r.jid).await.unwrap());
    assert!(!store.delete(&r.jid).await.unwrap(), "deleted once");
    assert_eq!(store.load(&r.jid).await.unwrap(), None);
    assert_eq!(archive.count(&r.jid).await.unwrap(), 0);
    assert_eq!(archive.bounds(&r.jid).await.unwrap(), None);
    assert!(archive.page(&r.jid, &ArchiveRange::all(), false, 100, 0).await.unwrap().is_empty());
    assert_eq!(archive.count(&j("a@x")).await.unwrap(), 4, "an account's archive stays");
    assert_eq!(archive.page(&j("a@x"), &ArchiveRange::all(), false, 100, 0).await.unwrap().len(), 4);
    assert_eq!(archive.count(&kept.jid).await.unwrap(), 3, "another room's archive stays");
    assert_eq!(store.load(&kept.jid).await.unwrap(), Some(loaded(kept.clone())));

    // The writer skips rows for a room deleted while they were queued.
    let slot = archive.allocate().await.unwrap();
    archive.store(vec![live(slot.ts)]).await.unwrap();
    assert_eq!(archive.count(&r.jid).await.unwrap(), 0);

    // Its affiliations went with it: the room made again starts without them.
    let mut again = room("gone@conference.x");
    again.affiliations.clear();
    assert!(store.create(&again).await.unwrap());
    assert_eq!(store.load(&again.jid).await.unwrap().unwrap().affiliations, []);
    assert_eq!(archive.count(&again.jid).await.unwrap(), 0);
}

/// Replacing an archived message (a tombstone, XEP-0424 §5): the row keeps its id, position
/// and other party, takes the new stanza and is marked serialised (a row stored as given,
/// unparsed, too); a row still queued is replaced once committed; an id of another owner's
/// archive, or no id at all, replaces nothing.
async fn archive_replace(b: Backend) {
    let (db, _dir) = open(b).await;
    account(&db, "a@x").await;
    let (store, archive) = (db.muc(), db.archive());
    let r = room("hall@conference.x");
    assert!(store.create(&r).await.unwrap());
    let message = |owner: &str, stanza: &str| BulkMessage {
        owner: j(owner),
        with: Jid::new("hall@conference.x/nick").unwrap(),
        stanza: stanza.to_string(),
        at_micros: None,
    };
    let ids = archive
        .insert_bulk(&[
            message("hall@conference.x", "<message xmlns='jabber:client'><body>first</body></message>"),
            message("hall@conference.x", "<message xmlns='jabber:client'><body>unparsed"),
            message("hall@conference.x", "<message xmlns='jabber:client'><body>third</body></message>"),
            message("a@x", "<message xmlns='jabber:client'><body>theirs</body></message>"),
        ])
        .await
        .unwrap();
    let before = archive.page(&r.jid, &ArchiveRange::all(), false, 10, 0).await.unwrap();
    assert!(!before[1].is_serialised(), "stored as given");
    let tombstone = |text: &str| {
        let xml = format!("<message xmlns='jabber:client'><retracted xmlns='urn:xmpp:message-retract:1' id='{text}'/></message>");
        Serialised::of(&starling::xml::parse_element(&xml).unwrap())
    };
    assert!(archive.replace(&r.jid, &ids[1], &tombstone("t1")).await.unwrap());
    let after = archive.page(&r.jid, &ArchiveRange::all(), false, 10, 0).await.unwrap();
    assert_eq!(after.len(), 3);
    assert_eq!((after[1].ts, after[1].id.as_str()), (before[1].ts, ids[1].as_str()), "the same position and id");
    assert_eq!(after[1].stanza, tombstone("t1").as_str());
    assert!(after[1].is_serialised(), "the replacement is the server's serialisation");
    assert_eq!((&after[0], &after[2]), (&before[0], &before[2]), "the others unchanged");
    assert_eq!(archive.count(&r.jid).await.unwrap(), 3);
    let with = ArchiveRange { with: Some(Jid::new("hall@conference.x/nick").unwrap()), ..ArchiveRange::all() };
    assert_eq!(archive.page(&r.jid, &with, false, 10, 0).await.unwrap().len(), 3, "the other party stays");
    assert_eq!(archive.message(&r.jid, &ids[1]).await.unwrap().map(|m| m.stanza), Some(tombstone("t1").as_str().to_string()));

    // Another owner's message, an id that is no archive id: nothing replaced.
    assert!(!archive.replace(&r.jid, &ids[3], &tombstone("t2")).await.unwrap());
    assert!(!archive.replace(&r.jid, "not-an-id", &tombstone("t2")).await.unwrap());
    assert_eq!(archive.message(&r.jid, &ids[3]).await.unwrap(), None);
    assert_eq!(archive.message(&r.jid, "not-an-id").await.unwrap(), None);
    let theirs = archive.message(&j("a@x"), &ids[3]).await.unwrap().unwrap();
    assert!(theirs.stanza.contains("theirs"));

    // Queued, not yet committed: replaced after its commit, not lost to it.
    let slot = archive.allocate().await.unwrap();
    let row = NewArchived { owner: r.jid.clone(), ts: slot.ts, with: Jid::new("hall@conference.x/nick").unwrap(), stanza: serialised_message() };
    let pending = archive.enqueue(vec![row]).await;
    assert!(archive.replace(&r.jid, &slot.id, &tombstone("t3")).await.unwrap());
    pending.outcome().await.unwrap();
    let last = archive.message(&r.jid, &slot.id).await.unwrap().unwrap();
    assert_eq!((last.ts, last.stanza.as_str()), (slot.ts, tombstone("t3").as_str()));
}

/// A deleted account loses its archive and its affiliations in every room, by either
/// deletion path; other accounts and rooms keep theirs.
async fn muc_account_deletion(b: Backend) {
    let (db, _dir) = open(b).await;
    for a in ["a@x", "b@x", "c@x"] {
        account(&db, a).await;
    }
    let (store, archive) = (db.muc(), db.archive());
    let mut bulk = Vec::new();
    for owner in ["a@x", "b@x", "c@x", "room1@conference.x"] {
        for i in 0..3 {
            let stanza = format!("<message><body>{i}</body></message>");
            bulk.push(BulkMessage { owner: j(owner), with: Jid::new("d@y").unwrap(), stanza, at_micros: None });
        }
    }
    for name in ["room1", "room2"] {
        let mut r = room(&format!("{name}@conference.x"));
        r.affiliations = ["a@x", "b@x", "c@x"]
            .iter()
            .map(|jid| StoredAffiliation { jid: jid.to_string(), affiliation: Affiliation::Member, nick: "".into(), reason: "".into() })
            .collect();
        assert!(store.create(&r).await.unwrap());
    }
    archive.insert_bulk(&bulk).await.unwrap();
    let members = |room: Option<StoredRoom>| room.unwrap().affiliations.into_iter().map(|a| a.jid).collect::<Vec<_>>();
    let room1 = j("room1@conference.x");
    let room2 = j("room2@conference.x");

    assert!(db.accounts().delete(&j("a@x")).await.unwrap());
    assert_eq!(archive.count(&j("a@x")).await.unwrap(), 0);
    assert!(archive.page(&j("a@x"), &ArchiveRange::all(), false, 10, 0).await.unwrap().is_empty());
    assert_eq!(members(store.load(&room1).await.unwrap()), ["b@x", "c@x"]);
    assert_eq!(members(store.load(&room2).await.unwrap()), ["b@x", "c@x"]);

    assert!(db.accounts().delete_everywhere(&j("b@x")).await.unwrap());
    assert!(!db.accounts().delete_everywhere(&j("b@x")).await.unwrap());
    assert_eq!(archive.count(&j("b@x")).await.unwrap(), 0);
    assert_eq!(members(store.load(&room1).await.unwrap()), ["c@x"]);
    assert_eq!(members(store.load(&room2).await.unwrap()), ["c@x"]);

    assert_eq!(archive.count(&j("c@x")).await.unwrap(), 3);
    assert_eq!(archive.count(&room1).await.unwrap(), 3, "the room's archive stays");

    // forget_jid on its own: every room, and a count.
    assert_eq!(store.forget_jid("c@x").await.unwrap(), 2);
    assert_eq!(store.forget_jid("c@x").await.unwrap(), 0);
    assert!(members(store.load(&room1).await.unwrap()).is_empty());
}

/// Archives made before the owner became "an account or a room" survive the migration
/// that rebuilds (SQLite) or alters (PostgreSQL) their tables, with their counts, order and
/// ids; afterwards a room can own an archive, and an account's deletion still empties its
/// own.
async fn archive_owners_migration(b: Backend) {
    let (url, dir) = fresh_url(b).await;
    let migrator = older_schema(b, &dir, "0011").await;
    let setup = [
        "INSERT INTO accounts (jid, domain, created_at) VALUES ('a@x', 'x', 0), ('b@x', 'x', 0)",
        "INSERT INTO archive_messages (ts, owner, with_bare, with_resource, stanza) VALUES \
         (1000, 'a@x', 'c@y', 'r', '<message><body>one</body></message>'), \
         (2000, 'b@x', 'c@y', '', '<message><body>other</body></message>'), \
         (3000, 'a@x', 'd@y', '', '<message><body>two</body></message>'), \
         (4000, 'a@x', 'c@y', '', '<message><body>three</body></message>')",
        "INSERT INTO archive_usage (owner, messages) VALUES ('a@x', 3), ('b@x', 1)",
        "INSERT INTO archive_prefs (owner, default_mode) VALUES ('a@x', 'roster')",
    ];
    match b {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            migrator.run(&pool).await.unwrap();
            for sql in setup {
                sqlx::query(sql).execute(&pool).await.unwrap();
            }
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            migrator.run(&pool).await.unwrap();
            for sql in setup {
                sqlx::query(sql).execute(&pool).await.unwrap();
            }
            pool.close().await;
        }
    }
    let db = Db::open(&url, 2).await.unwrap();
    let (a, archive) = (j("a@x"), db.archive());
    assert_eq!(archive.count(&a).await.unwrap(), 3);
    assert_eq!(archive.count(&j("b@x")).await.unwrap(), 1);
    let page = archive.page(&a, &ArchiveRange::all(), false, 10, 0).await.unwrap();
    assert_eq!(page.iter().map(|m| m.ts).collect::<Vec<_>>(), [1000, 3000, 4000]);
    // Not known to be the server's own serialisation (0013): queries parse them.
    assert!(page.iter().all(|m| !m.is_serialised()));
    assert_eq!(archive.position(&a, &page[1].id).await.unwrap(), Some(3000));
    // The indexes are there again: a query by `with` names its index on SQLite.
    let mut range = ArchiveRange::all();
    range.with = Some(Jid::new("c@y").unwrap());
    let with_c = archive.page(&a, &range, true, 10, 0).await.unwrap();
    assert_eq!(with_c.iter().map(|m| m.ts).collect::<Vec<_>>(), [4000, 1000]);
    assert!(archive.prefs(&a).await.unwrap().is_some());
    // New rows follow the old ones.
    let slot = archive.allocate().await.unwrap();
    assert!(slot.ts > 4000);

    // A room's archive, which the foreign key refused before.
    let r = room("r@conference.x");
    assert!(db.muc().create(&r).await.unwrap());
    let row = NewArchived { owner: r.jid.clone(), ts: slot.ts, with: Jid::new("r@conference.x/n").unwrap(), stanza: serialised_message() };
    archive.store(vec![row]).await.unwrap();
    assert_eq!(archive.count(&r.jid).await.unwrap(), 1);
    assert!(archive.page(&r.jid, &ArchiveRange::all(), false, 10, 0).await.unwrap()[0].is_serialised());

    // The account's deletion takes its archive and its preferences, not others'.
    assert!(db.accounts().delete(&a).await.unwrap());
    assert_eq!(archive.count(&a).await.unwrap(), 0);
    assert!(archive.page(&a, &ArchiveRange::all(), false, 10, 0).await.unwrap().is_empty());
    assert_eq!(archive.prefs(&a).await.unwrap(), None);
    assert_eq!(archive.count(&j("b@x")).await.unwrap(), 1);
    assert_eq!(archive.count(&r.jid).await.unwrap(), 1);
    db.close().await;
}

db_tests!(
    accounts,
    rosters,
    offline,
    offline_grouped,
    small_stores,
    reopen,
    offline_byte_quota,
    offline_byte_quota_concurrent,
    offline_batches,
    offline_quota_migration,
    roster_limits,
    roster_limit_concurrent,
    private_quota,
    push_registrations,
    muc_rooms,
    muc_affiliations,
    muc_listing,
    muc_delete,
    muc_account_deletion,
    archive_owners_migration,
    archive_replace,
);
