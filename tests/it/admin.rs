//! Administration as a new admin meets it: deleting accounts (online through the admin
//! socket, offline in the database), sessions listed and kicked, file modes, listeners on
//! both IP stacks, `check` that creates nothing and reports taken ports, and the CLI that
//! does not create a database by accident.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::client::{STREAMS, show};
use crate::common::{Backend, Client, TestServer, befriend};
use crate::db_tests;

const ROSTER: &str = "jabber:iq:roster";

/// Run the `starling` binary in `cwd`: (success, stdout, stderr).
fn starling_in(cwd: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_starling"))
        .current_dir(cwd)
        .env_remove("STARLING_CONFIG")
        .env_remove("RUST_LOG")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the starling binary");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The binary with a config file, off the async runtime.
async fn cli(config: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut all = vec!["--config".to_string(), config.display().to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    let dir = config.parent().unwrap().to_path_buf();
    let stdin = stdin.map(str::to_string);
    tokio::task::spawn_blocking(move || starling_in(&dir, &all.iter().map(String::as_str).collect::<Vec<_>>(), stdin.as_deref()))
        .await
        .unwrap()
}

/// A config file for the CLI that points at the test server's data and database.
fn config_for(s: &TestServer) -> PathBuf {
    let path = s.dir.path().join("starling.toml");
    std::fs::write(
        &path,
        format!(
            "domains = [\"localhost\", \"example.test\"]\ndata_dir = \".\"\n[storage]\nurl = \"{}\"\n[c2s]\nlisten = [\"127.0.0.1:0\"]\nlisten_tls = []\n[s2s]\nlisten = []\n[components]\nlisten = []\n",
            s.config.storage.url
        ),
    )
    .unwrap();
    path
}

fn roster_items(result: &minidom::Element) -> Vec<String> {
    result.get_child("query", ROSTER).map(|q| q.children().map(|i| i.attr("jid").unwrap_or("").to_string()).collect()).unwrap_or_default()
}

/// Issue 10 defects 15 and 16: `starling user del` of an online account ends its session,
/// its contact is told and loses the roster item, and an account created again under the
/// same name inherits nothing.
async fn delete_online_account(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut bob = s.login("bob", "b").await;
    alice.available().await;
    bob.available().await;
    befriend(&mut alice, &mut bob).await;
    alice.request("<iq type='get' id='r0'><query xmlns='jabber:iq:roster'/></iq>").await;
    let config = config_for(&s);

    let (ok, out, err) = cli(&config, &["user", "del", "bob@localhost"], None).await;
    assert!(ok, "{out}{err}");
    assert_eq!(out.trim(), "deleted bob@localhost");
    assert!(!err.contains("no server is running"), "went through the admin socket: {err}");

    let error = bob.expect("stream error", |e| e.is("error", STREAMS)).await;
    assert!(error.has_child("not-authorized", "urn:ietf:params:xml:ns:xmpp-streams"), "{}", show(&error));
    let text = error.get_child("text", "urn:ietf:params:xml:ns:xmpp-streams").map(|t| t.text());
    assert_eq!(text.as_deref(), Some("account deleted"));

    for kind in ["unsubscribe", "unsubscribed"] {
        let p = alice.expect(kind, |e| e.name() == "presence" && e.attr("type") == Some(kind)).await;
        assert_eq!(p.attr("from"), Some("bob@localhost"), "{}", show(&p));
    }
    let push = alice
        .expect("roster push removing bob", |e| {
            e.name() == "iq"
                && e.get_child("query", ROSTER)
                    .and_then(|q| q.children().next())
                    .is_some_and(|i| i.attr("jid") == Some("bob@localhost") && i.attr("subscription") == Some("remove"))
        })
        .await;
    assert_eq!(push.attr("type"), Some("set"));
    let roster = alice.request("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>").await;
    assert!(roster_items(&roster).is_empty(), "{}", show(&roster));
    alice.drain().await;

    // The same name again: a new account, with nothing of the old one.
    s.add_user("bob", "pw2").await;
    let mut bob = Client::login(&s, "bob", "pw2", "new").await;
    let roster = bob.request("<iq type='get' id='r2'><query xmlns='jabber:iq:roster'/></iq>").await;
    assert!(roster_items(&roster).is_empty(), "{}", show(&roster));
    bob.available().await;
    bob.expect_silence(Duration::from_millis(500)).await;
    // Alice's presence changes do not reach the new bob either.
    alice.send("<presence><show>away</show></presence>").await;
    bob.expect_silence(Duration::from_millis(500)).await;
    s.stop().await;
}

/// A session that ends after its account was deleted records its last activity without
/// an error (it was `FOREIGN KEY constraint failed`), and writes nothing.
async fn last_activity_of_a_deleted_account(b: Backend) {
    let s = TestServer::start(b).await;
    let db = &s.server().core().db;
    let gone = jid::BareJid::new("gone@localhost").unwrap();
    let record = starling::storage::LastActivity { at: 1, status: "bye".into() };
    db.last_activity().set(&gone, &record).await.expect("no error for a deleted account");
    assert_eq!(db.last_activity().get(&gone).await.unwrap(), None);
    s.users(&["here"]).await;
    let here = jid::BareJid::new("here@localhost").unwrap();
    db.last_activity().set(&here, &record).await.unwrap();
    assert_eq!(db.last_activity().get(&here).await.unwrap(), Some(record));
    s.stop().await;
}

/// Without a running server, `user del` deletes in the database, and the rows of other
/// accounts that refer to the deleted one go too, in one transaction.
async fn delete_without_server(b: Backend) {
    let mut s = TestServer::start(b).await;
    s.users(&["alice", "bob", "carol"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut bob = s.login("bob", "b").await;
    let carol = s.login("carol", "c").await;
    alice.available().await;
    bob.available().await;
    befriend(&mut alice, &mut bob).await;
    // Bob asks carol, who does not answer: a stored request from bob in carol's account.
    bob.send("<presence type='subscribe' to='carol@localhost'/>").await;
    bob.expect("roster push for carol", |e| e.name() == "iq" && e.attr("type") == Some("set")).await;
    let core = s.server().core().clone();
    let (alice_jid, bob_jid, carol_jid) =
        (jid::BareJid::new("alice@localhost").unwrap(), jid::BareJid::new("bob@localhost").unwrap(), jid::BareJid::new("carol@localhost").unwrap());
    for _ in 0..100 {
        if core.db.roster().has_pending_in(&carol_jid, &bob_jid).await.unwrap() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(core.db.roster().has_pending_in(&carol_jid, &bob_jid).await.unwrap());
    let (alice_version, _) = core.db.roster().load(&alice_jid).await.unwrap();
    drop((alice, bob, carol, core));
    let config = config_for(&s);
    s.server.take().unwrap().shutdown().await;
    assert!(!s.dir.path().join("starling.sock").exists(), "the admin socket goes at shutdown");

    let (ok, out, err) = cli(&config, &["user", "del", "bob@localhost"], None).await;
    assert!(ok, "{out}{err}");
    assert!(err.contains("no server is running"), "{err}");
    let db = starling::storage::Db::open_existing(&s.config.storage_url(), 1).await.unwrap();
    assert!(!db.accounts().exists(&bob_jid).await.unwrap());
    let (version, items) = db.roster().load(&alice_jid).await.unwrap();
    assert!(items.is_empty(), "{items:?}");
    assert!(version > alice_version, "alice's roster version is bumped: {version} > {alice_version}");
    assert!(!db.roster().has_pending_in(&carol_jid, &bob_jid).await.unwrap());
    assert!(db.roster().pending_in(&carol_jid).await.unwrap().is_empty());
    db.close().await;
    let (ok, _, err) = cli(&config, &["user", "del", "bob@localhost"], None).await;
    assert!(!ok && err.contains("bob@localhost does not exist"), "{err}");
}

/// `starling session list` and `kick`: a full JID closes one session, a bare JID all of
/// them, with <policy-violation/> and the admin's text.
async fn sessions_listed_and_kicked(b: Backend) {
    let mut s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut a1 = s.login("alice", "one").await;
    let mut a2 = s.login("alice", "two").await;
    let mut bob = s.login("bob", "b").await;
    a1.send("<presence><show>away</show><priority>5</priority></presence>").await;
    a1.expect("own presence", |e| e.name() == "presence").await;
    let config = config_for(&s);

    let (ok, out, err) = cli(&config, &["session", "list"], None).await;
    assert!(ok, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("JID") && lines[0].contains("PRESENCE"), "{out}");
    assert!(lines[1].starts_with("alice@localhost/one") && lines[1].contains("127.0.0.1:"), "{out}");
    let fields: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&fields[3..], ["5", "away"], "{out}");
    assert!(fields[2].ends_with('Z') && fields[2].contains('T'), "RFC 3339 time: {out}");
    assert!(lines[2].starts_with("alice@localhost/two") && lines[2].ends_with("unavailable"), "{out}");
    assert!(lines[3].starts_with("bob@localhost/b"), "{out}");
    assert_eq!(lines[4], "3 sessions");
    let (_, out, _) = cli(&config, &["session", "list", "alice@localhost/two"], None).await;
    assert_eq!(out.lines().count(), 3, "{out}");

    let (ok, out, err) = cli(&config, &["session", "kick", "alice@localhost/one", "--reason", "maintenance tonight"], None).await;
    assert!(ok && out.trim() == "1 session closed", "{out}{err}");
    let error = a1.expect("stream error", |e| e.is("error", STREAMS)).await;
    assert!(error.has_child("policy-violation", "urn:ietf:params:xml:ns:xmpp-streams"), "{}", show(&error));
    assert_eq!(error.get_child("text", "urn:ietf:params:xml:ns:xmpp-streams").map(|t| t.text()).as_deref(), Some("maintenance tonight"));
    let (ok, out, _) = cli(&config, &["session", "kick", "alice@localhost"], None).await;
    assert!(ok && out.trim() == "1 session closed", "{out}");
    let error = a2.expect("stream error", |e| e.is("error", STREAMS)).await;
    assert_eq!(
        error.get_child("text", "urn:ietf:params:xml:ns:xmpp-streams").map(|t| t.text()).as_deref(),
        Some("kicked by the administrator")
    );
    let (ok, _, err) = cli(&config, &["session", "kick", "nobody@localhost"], None).await;
    assert!(!ok && err.contains("no session of nobody@localhost"), "{err}");
    // Bob was left alone.
    let r = bob.request("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>").await;
    assert_eq!(r.attr("type"), Some("result"));
    drop(bob);
    s.server.take().unwrap().shutdown().await;
    let (ok, _, err) = cli(&config, &["session", "list"], None).await;
    assert!(!ok && err.contains("no server is running"), "{err}");
}

db_tests!(delete_online_account, last_activity_of_a_deleted_account, delete_without_server, sessions_listed_and_kicked);

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

/// Issue 10 defect 10: under umask 022, what the server creates is private.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_files_are_private() {
    // SAFETY: umask changes only this process's file creation mask.
    unsafe { libc::umask(0o022) };
    let s = TestServer::start_with(Backend::Sqlite, |c| c.data_dir = c.data_dir.join("data")).await;
    let data = s.dir.path().join("data");
    assert_eq!(mode(&data), 0o700, "data_dir");
    for file in ["starling.db", "starling.db-wal", "starling.db-shm", "certs/localhost.key", "starling.sock"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    assert_eq!(mode(&data.join("certs")), 0o700, "certs");
    s.stop().await;
}

/// Issue 10 defect 17: an IPv6 listener is IPv6-only, so both stacks bind the same port
/// (the README's example failed with "Address already in use").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_stacks_on_one_port() {
    let v4 = starling::server::bind_tcp("0.0.0.0:0".parse().unwrap()).unwrap();
    let port = v4.local_addr().unwrap().port();
    let v6 = starling::server::bind_tcp(format!("[::]:{port}").parse().unwrap()).expect("[::] binds next to 0.0.0.0");
    assert!(socket2::SockRef::from(&v6).only_v6().unwrap());
    drop((v4, v6));

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.c2s.listen = vec![format!("127.0.0.1:{port}").parse().unwrap(), format!("[::1]:{port}").parse().unwrap()];
    })
    .await;
    assert_eq!(s.server().c2s_addrs().len(), 2);
    s.users(&["alice"]).await;
    for addr in s.server().c2s_addrs().to_vec() {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut c = Client::from_tcp(tcp, s.cert_path("localhost"));
        c.open("localhost").await;
        c.starttls().await;
        c.auth_scram_sha256("alice", "pw").await.unwrap_or_else(|e| panic!("login over {addr}: {e}"));
    }
    s.stop().await;
}

/// Issue 10 defects 17-19: `check` binds each listener and names the key of a taken port;
/// `serve` says the same, each cause once.
#[tokio::test]
async fn taken_port_is_reported_once_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let config = dir.path().join("s.toml");
    std::fs::write(&config, format!("[c2s]\nlisten = [\"127.0.0.1:0\"]\nlisten_tls = [\"127.0.0.1:{port}\"]\n[s2s]\nlisten = []\n[components]\nlisten = []\n")).unwrap();
    let (ok, out, err) = cli(&config, &["check"], None).await;
    assert!(!ok, "{out}");
    assert!(err.contains(&format!("c2s.listen_tls[0] = \"127.0.0.1:{port}\": cannot listen: Address already in use")), "{err}");
    let (ok, _, err) = cli(&config, &["serve"], None).await;
    assert!(!ok);
    assert!(err.contains(&format!("cannot listen on 127.0.0.1:{port} (c2s.listen_tls[0])")), "{err}");
    assert_eq!(err.matches("Address already in use").count(), 1, "each cause once: {err}");
    // Nothing was created: the listeners are bound before anything touches the disk.
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, [std::ffi::OsString::from("s.toml")]);
    drop(holder);
}

/// Issue 10 defect 18: `check` on a fresh directory creates nothing (no data dir, database
/// or certificate), and a bad log level or module name is refused with the file and key.
#[tokio::test]
async fn check_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("s.toml");
    std::fs::write(&config, "[c2s]\nlisten = [\"127.0.0.1:0\"]\nlisten_tls = []\n[s2s]\nlisten = []\n[components]\nlisten = []\n").unwrap();
    let (ok, out, err) = cli(&config, &["check"], None).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("will be created at start"), "{out}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, [std::ffi::OsString::from("s.toml")], "check created files");

    std::fs::write(&config, "[log]\nlevel = \"verbose\"\n[modules]\ndisabled = [\"pong\"]\n").unwrap();
    let (ok, _, err) = cli(&config, &["check"], None).await;
    assert!(!ok);
    assert!(err.contains("s.toml: 2 problems") && err.contains("`log.level`") && err.contains("`modules.disabled`: unknown module \"pong\""), "{err}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1);
}

/// Issue 10 defect 19: without --config, `user` commands say which database they use and
/// do not create one unless asked; a domain we do not serve is an error.
#[tokio::test]
async fn user_commands_do_not_create_a_database_by_accident() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &'static [&'static str], stdin: Option<&'static str>| {
        let cwd = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || starling_in(&cwd, args, stdin))
    };
    let (ok, _, err) = run(&["user", "list"], None).await.unwrap();
    assert!(!ok);
    assert!(err.contains("database: sqlite://data/starling.db"), "{err}");
    assert!(err.contains("does not exist") && err.contains("--config") && err.contains("--create-db"), "{err}");
    let (ok, _, err) = run(&["user", "add", "alice@localhost", "--password-stdin"], Some("pw\n")).await.unwrap();
    assert!(!ok && err.contains("--create-db"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing was created");

    let (ok, out, err) = run(&["user", "add", "--create-db", "alice@localhost", "--password-stdin"], Some("pw\n")).await.unwrap();
    assert!(ok, "{out}{err}");
    assert_eq!(mode(&dir.path().join("data")), 0o700);
    assert_eq!(mode(&dir.path().join("data/starling.db")), 0o600);
    let (ok, out, _) = run(&["user", "list"], None).await.unwrap();
    assert!(ok && out.trim() == "alice@localhost", "{out}");
    let (ok, _, err) = run(&["user", "list", "example.org"], None).await.unwrap();
    assert!(!ok && err.contains("example.org is not a domain of this server"), "{err}");
}
