//! An acknowledgement is a promise: the real binary is killed with SIGKILL while a client
//! sends messages with stream management on; after a restart on the same database, every
//! message the server acknowledged reaches its recipient exactly once: from offline storage
//! (recipient offline), or live and in the archive with the same stanza-id (recipient
//! online). Likewise for a room: what a client had acknowledged of its groupchat messages is
//! in the room's archive once, and the room's configuration and affiliations survive.
//!
//! Each test runs `STARLING_CRASH_RUNS` rounds (default 3), killing at a different moment
//! each time; the longer run the issue asks for is `STARLING_CRASH_RUNS=50`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::client::{CLIENT, Got};
use crate::common::{Backend, Client, DOMAIN, pg};
use crate::db_tests;

const SM: &str = "urn:xmpp:sm:3";

fn rounds() -> usize {
    std::env::var("STARLING_CRASH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3)
}

struct Process {
    dir: tempfile::TempDir,
    config: PathBuf,
    port: u16,
    child: Option<tokio::process::Child>,
}

impl Process {
    async fn new(backend: Backend) -> Process {
        let dir = tempfile::Builder::new().prefix("starling-crash-").tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = match backend {
            Backend::Sqlite => "sqlite://starling.db".to_string(),
            Backend::Postgres => pg::new_database().await,
        };
        let config = dir.path().join("starling.toml");
        std::fs::write(
            &config,
            format!("data_dir = \"data\"\n[storage]\nurl = \"{url}\"\n[c2s]\nlisten = [\"127.0.0.1:{port}\"]\nlisten_tls = []\n[s2s]\nlisten = []\n[components]\nlisten = []\n"),
        )
        .unwrap();
        let process = Process { dir, config, port, child: None };
        for user in ["alice", "bob"] {
            process.cli(&["user", "add", "--create-db", &format!("{user}@localhost"), "--password-stdin"], "pw\n").await;
        }
        process
    }

    async fn cli(&self, args: &[&str], stdin: &str) {
        use tokio::io::AsyncWriteExt;
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_starling"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).await.unwrap();
        let out = child.wait_with_output().await.unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    async fn start(&mut self) {
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_starling"))
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        // The listener is bound before the certificate is made (nothing is created when the
        // port is taken): wait for both.
        let cert = self.cert();
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() || std::fs::metadata(&cert).map_or(true, |m| m.len() == 0) {
            assert!(Instant::now() < deadline, "the server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.start_kill().unwrap(); // SIGKILL
        child.wait().await.unwrap();
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("data/certs/localhost.crt")
    }

    async fn login(&self, user: &str, resource: &str) -> Client {
        login_at(self.port, &self.cert(), user, resource).await
    }
}

async fn login_at(port: u16, cert: &Path, user: &str, resource: &str) -> Client {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut c = Client::from_tcp(tcp, cert.to_path_buf());
    c.open(DOMAIN).await;
    c.starttls().await;
    c.auth_scram_sha256(user, "pw").await.unwrap();
    c.bind(resource).await;
    c
}

/// Alice sends numbered messages of type `kind` to `to`, each followed by `<r/>`, reading up
/// to the answer (which covers what is safe so far), until the server dies. Returns the
/// highest `h` the server acknowledged: messages 1..=h are its promise.
async fn send_until_killed(alice: &mut Client, to: &str, kind: &str) -> u32 {
    alice.send(&format!("<enable xmlns='{SM}'/>")).await;
    let mut acked = 0;
    for n in 1..=1_000_000u32 {
        let stanza = format!("<message to='{to}' type='{kind}' id='m{n}'><body>{n}</body></message><r xmlns='{SM}'/>");
        if !alice.send_bytes(stanza.as_bytes()).await {
            return acked;
        }
        loop {
            match alice.read().await {
                Got::Element(el) if el.is("a", SM) => {
                    acked = acked.max(el.attr("h").unwrap().parse::<u32>().unwrap());
                    break;
                }
                Got::Element(_) | Got::Header(_) => {}
                Got::Closed | Got::Eof => return acked,
            }
        }
    }
    panic!("the server was never killed");
}

/// Kill at a different moment each round, from 50 to ~450 ms into the sending.
fn kill_after(round: usize) -> Duration {
    Duration::from_millis(50 + (round as u64 * 137) % 400)
}

/// [`send_until_killed`] while the server is killed [`kill_after`] the round's delay;
/// the highest acknowledged message.
async fn send_and_kill(server: &mut Process, alice: &mut Client, round: usize, to: &str, kind: &str) -> u32 {
    let sending = async { send_until_killed(alice, to, kind).await };
    let killing = async {
        tokio::time::sleep(kill_after(round)).await;
        server.kill9().await;
    };
    let (acked, ()) = tokio::join!(sending, killing);
    acked
}

/// Offline recipient: what the server acknowledged is in offline storage after the crash,
/// once each.
async fn acked_messages_survive_kill_9(b: Backend) {
    let mut report = Vec::new();
    for round in 0..rounds() {
        let mut server = Process::new(b).await;
        server.start().await;
        let mut alice = server.login("alice", "phone").await;
        let acked = send_and_kill(&mut server, &mut alice, round, "bob@localhost", "chat").await;
        server.start().await;
        let mut bob = server.login("bob", "desk").await;
        bob.send("<presence/>").await;
        let mut seen: BTreeMap<u32, usize> = BTreeMap::new();
        while let Ok(got) = tokio::time::timeout(Duration::from_millis(1500), bob.read()).await {
            if let Got::Element(el) = got
                && el.name() == "message"
                && let Some(body) = el.get_child("body", CLIENT)
            {
                *seen.entry(body.text().parse().unwrap()).or_default() += 1;
            }
        }
        let missing: Vec<u32> = (1..=acked).filter(|n| !seen.contains_key(n)).collect();
        let doubled: Vec<u32> = seen.iter().filter(|(_, c)| **c > 1).map(|(n, _)| *n).collect();
        assert!(missing.is_empty(), "round {round}: acknowledged but lost: {missing:?} (acked {acked})");
        assert!(doubled.is_empty(), "round {round}: delivered twice: {doubled:?}");
        report.push(format!("acked {acked}, stored {}", seen.len()));
        server.kill9().await;
    }
    eprintln!("kill -9 rounds ({b:?}): {}", report.join("; "));
}

const MAM: &str = "urn:xmpp:mam:2";
const SID: &str = "urn:xmpp:sid:0";

/// Everything in an archive (the client's own, or the room's at `to`): (body, archive id),
/// oldest first, paging with RSM.
async fn whole_archive(bob: &mut Client, to: Option<&str>) -> Vec<(u32, String)> {
    let to = to.map(|t| format!(" to='{t}'")).unwrap_or_default();
    let mut all = Vec::new();
    let mut after = String::new();
    for page in 0.. {
        assert!(page < 10_000, "the archive does not end");
        let set = if after.is_empty() { "<max>250</max>".to_string() } else { format!("<max>250</max><after>{after}</after>") };
        bob.send(&format!(
            "<iq type='set' id='page{page}'{to}><query xmlns='{MAM}' queryid='all'><set xmlns='http://jabber.org/protocol/rsm'>{set}</set></query></iq>"
        ))
        .await;
        let fin = loop {
            match bob.read().await {
                Got::Element(el) if el.name() == "message" => {
                    let result = el.get_child("result", MAM).expect("a MAM result");
                    let forwarded = result.get_child("forwarded", "urn:xmpp:forward:0").unwrap();
                    let message = forwarded.get_child("message", CLIENT).unwrap();
                    let n = message.get_child("body", CLIENT).unwrap().text().parse().unwrap();
                    all.push((n, result.attr("id").unwrap().to_string()));
                }
                Got::Element(el) if el.name() == "iq" => break el,
                Got::Element(_) | Got::Header(_) => {}
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(fin.attr("type"), Some("result"), "{fin:?}");
        let fin = fin.get_child("fin", MAM).unwrap();
        if fin.attr("complete") == Some("true") {
            return all;
        }
        after = fin.get_child("set", "http://jabber.org/protocol/rsm").unwrap().get_child("last", "http://jabber.org/protocol/rsm").unwrap().text();
    }
    unreachable!()
}

/// The archive by message number, checked: every message 1..=`acked` is in it, none twice.
fn archived_once(round: usize, acked: u32, archive: Vec<(u32, String)>) -> BTreeMap<u32, Vec<String>> {
    let mut archived: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for (n, id) in archive {
        archived.entry(n).or_default().push(id);
    }
    let missing: Vec<u32> = (1..=acked).filter(|n| !archived.contains_key(n)).collect();
    assert!(missing.is_empty(), "round {round}: acknowledged but not archived: {missing:?} (acked {acked})");
    let doubled: Vec<u32> = archived.iter().filter(|(_, ids)| ids.len() > 1).map(|(n, _)| *n).collect();
    assert!(doubled.is_empty(), "round {round}: archived twice: {doubled:?}");
    archived
}

/// Online recipient: each acknowledged message is in bob's archive once, and what bob
/// received live carries the same stanza-id as its archived copy (a client syncing from
/// the archive by stanza-id sees each message once).
async fn acked_messages_are_archived_across_kill_9(b: Backend) {
    let mut report = Vec::new();
    for round in 0..rounds() {
        let mut server = Process::new(b).await;
        server.start().await;
        let mut alice = server.login("alice", "phone").await;
        let mut bob = server.login("bob", "desk").await;
        bob.send("<presence/>").await;
        let kill_after = kill_after(round);
        let sending = async { send_until_killed(&mut alice, "bob@localhost", "chat").await };
        let receiving = async {
            let mut live = BTreeMap::new();
            loop {
                match bob.read().await {
                    Got::Element(el) if el.name() == "message" => {
                        let Some(body) = el.get_child("body", CLIENT) else { continue };
                        let id = el
                            .children()
                            .find(|c| c.is("stanza-id", SID) && c.attr("by") == Some("bob@localhost"))
                            .and_then(|c| c.attr("id"))
                            .expect("a stanza-id by bob's archive")
                            .to_string();
                        live.insert(body.text().parse::<u32>().unwrap(), id);
                    }
                    Got::Element(_) | Got::Header(_) => {}
                    Got::Closed | Got::Eof => return live,
                }
            }
        };
        let killing = async {
            tokio::time::sleep(kill_after).await;
            server.kill9().await;
        };
        let (acked, live, ()) = tokio::join!(sending, receiving, killing);
        server.start().await;
        let mut bob = server.login("bob", "desk").await;
        let archived = archived_once(round, acked, whole_archive(&mut bob, None).await);
        for (n, id) in &live {
            if let Some(ids) = archived.get(n) {
                assert_eq!(&ids[0], id, "round {round}: message {n} has another id in the archive than live");
            }
        }
        report.push(format!("acked {acked}, received live {}, archived {}", live.len(), archived.len()));
        server.kill9().await;
    }
    eprintln!("kill -9 rounds, online recipient ({b:?}): {}", report.join("; "));
}

const ROOM: &str = "hall@conference.localhost";
const MUC: &str = "http://jabber.org/protocol/muc";
const MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
const DATA: &str = "jabber:x:data";

/// An IQ that must be answered with a result (the server's promise that it is stored).
async fn acknowledged(c: &mut Client, iq: &str) {
    let r = c.request(iq).await;
    assert_eq!(r.attr("type"), Some("result"), "{r:?}");
}

/// Alice creates the room as a persistent one with a name and presence broadcast for
/// moderators only (XEP-0045 §10.1.3), and makes bob a member with a reserved nick (§9.3):
/// each acknowledged by an IQ result.
async fn set_up_room(alice: &mut Client) {
    alice.send(&format!("<presence to='{ROOM}/Ålice'><x xmlns='{MUC}'/></presence>")).await;
    alice.expect("the room's subject", |e| e.name() == "message" && e.get_child("subject", CLIENT).is_some()).await;
    acknowledged(
        alice,
        &format!(
            "<iq type='set' id='config' to='{ROOM}'><query xmlns='{MUC_OWNER}'><x xmlns='{DATA}' type='submit'>\
             <field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>\
             <field var='muc#roomconfig_persistentroom'><value>1</value></field>\
             <field var='muc#roomconfig_roomname'><value>The Great Hall</value></field>\
             <field var='muc#roomconfig_presencebroadcast'><value>moderator</value></field></x></query></iq>"
        ),
    )
    .await;
    acknowledged(alice, &format!("<iq type='set' id='member' to='{ROOM}'><query xmlns='{MUC_ADMIN}'><item affiliation='member' jid='bob@localhost' nick='Bøb'/></query></iq>")).await;
    alice.drain().await;
}

/// After the restart: the room is there with its configuration and bob's membership.
async fn check_room_survived(alice: &mut Client) {
    let form = alice.request(&format!("<iq type='get' id='form' to='{ROOM}'><query xmlns='{MUC_OWNER}'/></iq>")).await;
    assert_eq!(form.attr("type"), Some("result"), "{form:?}");
    let x = form.get_child("query", MUC_OWNER).and_then(|q| q.get_child("x", DATA)).expect("a form");
    let values = |var: &str| -> Vec<String> {
        x.children()
            .filter(|f| f.attr("var") == Some(var))
            .flat_map(|f| f.children().filter(|v| v.is("value", DATA)).map(|v| v.text()))
            .collect()
    };
    assert_eq!(values("muc#roomconfig_persistentroom"), ["1"]);
    assert_eq!(values("muc#roomconfig_roomname"), ["The Great Hall"]);
    assert_eq!(values("muc#roomconfig_presencebroadcast"), ["moderator"]);
    let list = alice.request(&format!("<iq type='get' id='members' to='{ROOM}'><query xmlns='{MUC_ADMIN}'><item affiliation='member'/></query></iq>")).await;
    let items: Vec<(String, String)> = list
        .get_child("query", MUC_ADMIN)
        .expect("a member list")
        .children()
        .map(|i| (i.attr("jid").unwrap_or_default().to_string(), i.attr("nick").unwrap_or_default().to_string()))
        .collect();
    assert_eq!(items, [("bob@localhost".to_string(), "Bøb".to_string())]);
}

/// A room: alice, with stream management, sends groupchat messages to a persistent room
/// until kill -9; after the restart every message she had an acknowledgement for (the ack
/// waits for the room archive's commit) is in the room's archive (MAM on the room JID)
/// exactly once, and the room, its configuration and its affiliations (acknowledged by IQ
/// results before the messages) are there.
async fn acked_room_messages_survive_kill_9(b: Backend) {
    let mut report = Vec::new();
    for round in 0..rounds() {
        let mut server = Process::new(b).await;
        server.start().await;
        let mut alice = server.login("alice", "phone").await;
        set_up_room(&mut alice).await;
        let acked = send_and_kill(&mut server, &mut alice, round, ROOM, "groupchat").await;
        server.start().await;
        let mut alice = server.login("alice", "phone").await;
        check_room_survived(&mut alice).await;
        let archived = archived_once(round, acked, whole_archive(&mut alice, Some(ROOM)).await);
        report.push(format!("acked {acked}, archived {}", archived.len()));
        server.kill9().await;
    }
    eprintln!("kill -9 rounds, room ({b:?}): {}", report.join("; "));
}

db_tests!(acked_messages_survive_kill_9, acked_messages_are_archived_across_kill_9, acked_room_messages_survive_kill_9);
