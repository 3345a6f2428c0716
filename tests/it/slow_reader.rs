//! Clients that stop reading (issue 10 defects 4 and 5; SECURITY.md T37, T37a): a sender
//! never waits on a recipient, a recipient that takes nothing is disconnected within
//! `c2s.write_timeout` (or at once when its queue is full), and every stanza it was sent
//! and did not take goes where it would have gone had it been offline.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::client::{CLIENT, Got};
use crate::common::{Backend, Client, TestServer, befriend};
use crate::db_tests;

async fn start(b: Backend) -> TestServer {
    start_queue(b, 16).await
}

async fn start_queue(b: Backend, max_queue: usize) -> TestServer {
    let s = TestServer::start_with(b, |c| {
        c.c2s.max_queue = max_queue;
        c.c2s.write_timeout = 2;
        // The senders here send megabytes on purpose.
        c.c2s.max_bytes_per_second = 0;
    })
    .await;
    s.users(&["alice", "bob"]).await;
    s
}

async fn wait_gone(s: &TestServer, full: &str, within: Duration) -> Duration {
    let jid = jid::FullJid::new(full).unwrap();
    let started = Instant::now();
    while s.server().core().sessions.is_connected(&jid) {
        assert!(started.elapsed() < within, "{full} is still connected after {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// T37a: a contact with three resources that do not read does not freeze the sender. Each
/// status change of alice goes to bob's three stuck resources; her own pings are answered
/// at once throughout, and the stuck resources are disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_contact_does_not_stall_the_sender() {
    let s = start(Backend::Sqlite).await;
    let mut alice = s.login("alice", "a").await;
    alice.available().await;
    let mut bob = s.login("bob", "r0").await;
    bob.available().await;
    befriend(&mut alice, &mut bob).await;
    bob.close().await;
    let mut stuck = Vec::new();
    for i in 1..=3 {
        let mut c = Client::login_small_buffer(&s, "bob", "pw", &format!("stuck{i}")).await;
        c.available().await;
        // From here on, this client reads nothing.
        stuck.push(c);
    }
    alice.drain().await;
    // Enough to fill what the kernel buffers for each of them (several MiB on loopback).
    let status = "s".repeat(16_000);
    let mut slowest = Duration::ZERO;
    for i in 0..400 {
        alice.send(&format!("<presence><status>{i} {status}</status></presence>")).await;
        if i % 10 == 9 {
            let started = Instant::now();
            let pong = alice.request(&format!("<iq type='get' id='p{i}'><ping xmlns='urn:xmpp:ping'/></iq>")).await;
            assert_eq!(pong.attr("type"), Some("result"));
            slowest = slowest.max(started.elapsed());
        }
    }
    eprintln!("stuck contact: slowest ping answer {slowest:?}");
    assert!(slowest < Duration::from_secs(1), "alice waited {slowest:?} for a ping answer");
    for i in 1..=3 {
        wait_gone(&s, &format!("bob@localhost/stuck{i}"), Duration::from_secs(10)).await;
    }
    drop(stuck);
    s.stop().await;
}

/// T37a, defect 5: nothing accepted for a resource that stops reading is lost. Every message
/// alice sends to bob's stuck resource is found either in what that resource did receive
/// before it was cut off, or at bob's next login (rerouted to offline storage).
async fn nothing_accepted_is_lost(b: Backend) {
    let s = start(b).await;
    let mut alice = s.login("alice", "a").await;
    let mut stuck = Client::login_small_buffer(&s, "bob", "pw", "stuck").await;
    stuck.available().await;
    // Enough to fill what the kernel buffers for it (several MiB on loopback), sent until it
    // is cut off: by its writes stalling for `write_timeout`, or by its queue staying over
    // its limit that long.
    let body = "m".repeat(12_000);
    let stuck_jid = jid::FullJid::new("bob@localhost/stuck").unwrap();
    let started = Instant::now();
    let mut n = 0;
    while s.server().core().sessions.is_connected(&stuck_jid) {
        assert!(started.elapsed() < Duration::from_secs(30), "the stuck resource was never cut off");
        for _ in 0..32 {
            alice.send(&format!("<message to='bob@localhost/stuck' type='chat' id='m{n}'><body>{n} {body}</body></message>")).await;
            n += 1;
        }
        alice.request(&format!("<iq type='get' id='sync{n}'><ping xmlns='urn:xmpp:ping'/></iq>")).await;
    }
    eprintln!("stuck reader disconnected after {:?} and {n} messages", started.elapsed());
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    // What the stuck resource did receive before it was cut off is still in its socket.
    loop {
        match stuck.read().await {
            Got::Element(el) if el.name() == "message" => {
                *seen.entry(el.attr("id").unwrap_or_default().to_string()).or_default() += 1;
            }
            Got::Element(_) | Got::Header(_) => {}
            Got::Closed | Got::Eof => break,
        }
    }
    let direct = seen.len();
    // The rest waits offline.
    let mut bob = s.login("bob", "later").await;
    bob.send("<presence/>").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while (0..n).any(|i| !seen.contains_key(&format!("m{i}"))) && Instant::now() < deadline {
        let m = bob.expect_kind("message").await;
        assert!(m.get_child("body", CLIENT).is_some());
        *seen.entry(m.attr("id").unwrap_or_default().to_string()).or_default() += 1;
    }
    let lost: Vec<String> = (0..n).map(|i| format!("m{i}")).filter(|id| !seen.contains_key(id)).collect();
    let duplicated = seen.values().filter(|&&c| c > 1).count();
    eprintln!("stuck reader: {direct} received before the cut, {} after, {duplicated} duplicated", seen.len() - direct);
    assert!(lost.is_empty(), "lost: {lost:?}");
    s.stop().await;
}

db_tests!(nothing_accepted_is_lost);

/// What a resource that stopped reading leaves behind goes to the account's resource that
/// reads, however much it is: the backlog is handed over at the pace that one takes it, and
/// into at most half of its queue, so it is cut off neither for the backlog nor for the live
/// messages that arrive meanwhile (here, alice's own, which go to it once the stuck one is
/// gone).
async fn a_reading_resource_takes_the_backlog(b: Backend) {
    // The stuck resource's backlog (a full queue and a batch in flight) is twice the queue of
    // the resource that reads.
    let s = start_queue(b, 64).await;
    let mut alice = s.login("alice", "a").await;
    let mut good = s.login("bob", "good").await;
    good.available().await;
    let mut stuck = Client::login_small_buffer(&s, "bob", "pw", "stuck").await;
    stuck.available().await;
    good.drain().await;
    // The good resource reads all along, in its own task.
    let collector = tokio::spawn(async move {
        let mut ids = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(6), good.read()).await {
                Ok(Got::Element(el)) if el.name() == "message" => ids.push(el.attr("id").unwrap_or_default().to_string()),
                Ok(Got::Element(_) | Got::Header(_)) => {}
                Ok(Got::Closed | Got::Eof) => return (ids, false),
                Err(_) => return (ids, true),
            }
        }
    });
    // Enough to fill what the kernel buffers for the stuck one (several MiB on loopback).
    let body = "m".repeat(12_000);
    let stuck_jid = jid::FullJid::new("bob@localhost/stuck").unwrap();
    let mut n = 0;
    // Until the stuck resource is cut off, in rounds, so that what goes to the reader is the
    // stuck one's backlog and not a flood of alice's own.
    while s.server().core().sessions.is_connected(&stuck_jid) {
        assert!(n < 2_000, "the stuck resource was never cut off");
        for _ in 0..16 {
            alice.send(&format!("<message to='bob@localhost/stuck' type='chat' id='m{n}'><body>{n} {body}</body></message>")).await;
            n += 1;
        }
        alice.request(&format!("<iq type='get' id='sync{n}'><ping xmlns='urn:xmpp:ping'/></iq>")).await;
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    // What the server had written when it gave up may end inside a message.
    stuck.cut_off_expected = true;
    loop {
        match stuck.read().await {
            Got::Element(el) if el.name() == "message" => *seen.entry(el.attr("id").unwrap_or_default().to_string()).or_default() += 1,
            Got::Element(_) | Got::Header(_) => {}
            Got::Closed | Got::Eof => break,
        }
    }
    let (ids, still_open) = collector.await.unwrap();
    assert!(still_open, "the resource that reads was disconnected");
    for id in ids {
        *seen.entry(id).or_default() += 1;
    }
    let lost: Vec<String> = (0..n).map(|i| format!("m{i}")).filter(|id| !seen.contains_key(id)).collect();
    assert!(lost.is_empty(), "lost: {lost:?}");
    // Nothing was refused to the sender either.
    alice.expect_silence(Duration::from_millis(300)).await;
    s.stop().await;
}

db_tests!(a_reading_resource_takes_the_backlog);
