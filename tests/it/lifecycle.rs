//! The server's life: shutdown, timeouts, rate limits, and the CLI next to a running server.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::client::CLIENT;
use crate::common::{Backend, Client, DOMAIN, TestServer};
use crate::db_tests;

/// Shutdown: every client gets <system-shutdown/>, and contacts see each other leave.
async fn shutdown_tells_clients(b: Backend) {
    let s = TestServer::start(b).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut half_way = Client::secure(&s).await;
    alice.available().await;
    let stopping = tokio::spawn(s.stop());
    assert_eq!(alice.expect_stream_error().await.as_deref(), Some("system-shutdown"));
    assert_eq!(half_way.expect_stream_error().await.as_deref(), Some("system-shutdown"));
    tokio::time::timeout(Duration::from_secs(10), stopping).await.expect("shutdown finishes").unwrap();
}

/// A client that never authenticates is dropped with <connection-timeout/>.
async fn unauthenticated_timeout(b: Backend) {
    let s = TestServer::start_with(b, |c| c.c2s.auth_timeout = 1).await;
    let mut c = Client::tcp(&s).await;
    c.open(DOMAIN).await;
    let started = Instant::now();
    assert_eq!(c.expect_stream_error().await.as_deref(), Some("connection-timeout"));
    assert!(started.elapsed() < Duration::from_secs(5));
    // A connection that sends nothing at all.
    let mut silent = Client::tcp(&s).await;
    assert_eq!(silent.expect_stream_error().await.as_deref(), Some("connection-timeout"));
    s.stop().await;
}

/// A client over its byte rate is slowed down, not disconnected; nothing is lost.
async fn rate_limit_slows_down(b: Backend) {
    let s = TestServer::start_with(b, |c| c.c2s.max_bytes_per_second = 20_000).await;
    s.users(&["alice", "bob"]).await;
    let mut alice = s.login("alice", "a").await;
    let mut bob = s.login("bob", "b").await;
    bob.available().await;
    let text = "x".repeat(1000);
    let started = Instant::now();
    // 150 kB: 80 kB of burst, then 20 kB/s.
    for i in 0..150 {
        alice.send(&format!("<message to='bob@localhost' type='chat' id='r{i}'><body>{i} {text}</body></message>")).await;
    }
    for i in 0..150 {
        let m = bob.expect_kind("message").await;
        assert_eq!(m.attr("id"), Some(format!("r{i}").as_str()));
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(2500), "the limit did not apply: {took:?}");
    assert!(took < Duration::from_secs(9), "{took:?}");
    let _ = CLIENT;
    s.stop().await;
}

fn starling(config: &std::path::Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_starling"))
        .arg("--config")
        .arg(config)
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

/// `starling user ...` works on the same database while the server runs.
async fn cli_while_running(b: Backend) {
    let s = TestServer::start(b).await;
    let config = s.dir.path().join("starling.toml");
    std::fs::write(
        &config,
        format!("domains = [\"localhost\", \"example.test\"]\ndata_dir = \".\"\n[storage]\nurl = \"{}\"\n", s.config.storage.url),
    )
    .unwrap();
    let cfg = config.clone();
    let run = move |args: Vec<&'static str>, stdin: Option<&'static str>| {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || starling(&cfg, &args, stdin))
    };
    let (ok, out, err) = run(vec!["user", "add", "dora@localhost", "--password-stdin"], Some("explorer\n")).await.unwrap();
    assert!(ok, "{out}{err}");
    let mut dora = Client::secure(&s).await;
    dora.auth_scram_sha256("dora", "explorer").await.expect("the new account works at once");
    let (ok, _, err) = run(vec!["user", "add", "dora@localhost", "--password-stdin"], Some("again\n")).await.unwrap();
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = run(vec!["user", "add", "x@elsewhere.org", "--password-stdin"], Some("pw\n")).await.unwrap();
    assert!(!ok && err.contains("not a domain of this server"), "{err}");
    run(vec!["user", "add", "eve@example.test", "--password-stdin"], Some("pw\n")).await.unwrap();
    let (ok, out, _) = run(vec!["user", "list"], None).await.unwrap();
    assert!(ok);
    assert_eq!(out.lines().collect::<Vec<_>>(), ["dora@localhost", "eve@example.test"]);
    let (_, out, _) = run(vec!["user", "list", "example.test"], None).await.unwrap();
    assert_eq!(out.trim(), "eve@example.test");
    let (ok, _, err) = run(vec!["user", "passwd", "dora@localhost", "--password-stdin"], Some("backpack\n")).await.unwrap();
    assert!(ok, "{err}");
    let mut c = Client::secure(&s).await;
    assert_eq!(c.auth_scram_sha256("dora", "explorer").await, Err("not-authorized".into()));
    c.auth_scram_sha256("dora", "backpack").await.unwrap();
    let (ok, _, err) = run(vec!["user", "del", "dora@localhost"], None).await.unwrap();
    assert!(ok, "{err}");
    let mut c = Client::secure(&s).await;
    assert_eq!(c.auth_scram_sha256("dora", "backpack").await, Err("not-authorized".into()));
    let (ok, _, err) = run(vec!["user", "del", "dora@localhost"], None).await.unwrap();
    assert!(!ok && err.contains("does not exist"), "{err}");
    // Batch import: all or nothing on bad input, then one transaction.
    let (ok, _, err) = run(vec!["user", "add", "--batch"], Some("b1@localhost pw1\nbad-line\nb2@nowhere.org pw\n")).await.unwrap();
    assert!(!ok && err.contains("line 2") && err.contains("line 3"), "{err}");
    let (ok, out, _) = run(vec!["user", "list", "localhost"], None).await.unwrap();
    assert!(ok && out.trim().is_empty(), "nothing was created: {out}");
    let (ok, out, err) =
        run(vec!["user", "add", "--batch"], Some("# accounts\nb1@localhost pw one\nb2@localhost pw2\n\neve@example.test x\n")).await.unwrap();
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "created 2 accounts (1 already existed)");
    let mut c = Client::secure(&s).await;
    c.auth_scram_sha256("b1", "pw one").await.expect("passwords may contain spaces");
    s.stop().await;
}

/// The real binary: `serve` with a config, a client logs in, SIGTERM ends it cleanly.
#[tokio::test]
async fn serve_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("s.toml");
    std::fs::write(&config, format!("[c2s]\nlisten = [\"127.0.0.1:{port}\"]\nlisten_tls = []\n[s2s]\nlisten = []\n[components]\nlisten = []\n")).unwrap();
    let cfg = config.clone();
    let (ok, _, err) = tokio::task::spawn_blocking(move || starling(&cfg, &["user", "add", "--create-db", "alice@localhost", "--password-stdin"], Some("pw\n"))).await.unwrap();
    assert!(ok, "{err}");
    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_starling"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut c = Client::from_tcp(tcp, dir.path().join("data/certs/localhost.crt"));
    c.open(DOMAIN).await;
    c.starttls().await;
    c.auth_scram_sha256("alice", "pw").await.unwrap();
    c.bind("r").await;
    // SAFETY: kill sends a signal to our own child.
    unsafe { libc::kill(server.id().unwrap() as i32, libc::SIGTERM) };
    assert_eq!(c.expect_stream_error().await.as_deref(), Some("system-shutdown"));
    let status = tokio::time::timeout(Duration::from_secs(20), server.wait()).await.expect("it exits").unwrap();
    assert!(status.success(), "{status}");
    // The binary answers --version.
    let out = Command::new(env!("CARGO_BIN_EXE_starling")).arg("--version").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("starling {}", env!("CARGO_PKG_VERSION")));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `starling check` accepts a good config and names the file and key of a bad one.
#[tokio::test]
async fn check_command() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[c2s]\nlisten = [\"127.0.0.1:0\"]\nlisten_tls = []\n[s2s]\nlisten = []\n[components]\nlisten = []\n").unwrap();
    let (ok, out, err) = tokio::task::spawn_blocking(move || starling(&good, &["check"], None)).await.unwrap();
    assert!(ok, "{out}{err}");
    assert!(out.contains("c2s STARTTLS: 127.0.0.1:0") && out.contains("starling.db (sqlite), will be created") && out.trim_end().ends_with("ok"), "{out}");
    assert!(!dir.path().join("data/certs").exists(), "check generates nothing");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "domains = []\n[c2s]\nmax_stanza_size = 5\nbogus = true\n").unwrap();
    let bad2 = bad.clone();
    let (ok, _, err) = tokio::task::spawn_blocking(move || starling(&bad2, &["check"], None)).await.unwrap();
    assert!(!ok);
    for want in ["bad.toml: 3 problems", "`domains`", "`c2s.max_stanza_size`", "`c2s.bogus`: unknown key"] {
        assert!(err.contains(want), "missing {want:?} in {err}");
    }
    // `serve` refuses the same file the same way.
    let (ok, _, err) = tokio::task::spawn_blocking(move || starling(&bad, &["serve"], None)).await.unwrap();
    assert!(!ok && err.contains("`c2s.bogus`"), "{err}");
}

db_tests!(shutdown_tells_clients, unauthenticated_timeout, rate_limit_slows_down, cli_while_running);
