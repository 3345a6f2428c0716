//! What the multi-user chat scenarios (XEP-0045) share: occupant sessions whose reader
//! follows joins (self-presence, status 110), subjects, leaves and IQ answers, and hands
//! every live room message (one without a `<delay/>`) to the scenario; the setup of rooms
//! (created by one account, configured persistent, left); joins timed from the join
//! presence to the room's subject, which ends the join sequence (§7.2.16).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::WriteHalf;
use tokio::sync::{Semaphore, mpsc};

use crate::Ctx;
use crate::client::{self, SendExt, Stream};

pub const MUC: &str = "http://jabber.org/protocol/muc";
pub const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";

pub type Writer = Arc<tokio::sync::Mutex<WriteHalf<Stream>>>;

/// What the reader tells the session's driver.
#[derive(Debug)]
pub enum Signal {
    /// A presence of ours in a room (status 110): joined (available) or left.
    SelfPresence { room: String, codes: Vec<u16>, available: bool },
    /// The room's subject: the last stanza of a join.
    Subject { room: String },
    /// A presence or message error from a room.
    Error { room: String, condition: String },
    /// The answer to one of our IQs.
    Iq { id: String, ok: bool, condition: String },
}

/// A live room message: (room bare JID, body, microseconds on the scenario's clock).
pub type OnMessage = Arc<dyn Fn(&str, &str, u64) + Send + Sync>;

/// What all the readers of a scenario received.
#[derive(Default)]
pub struct Counts {
    pub presences: AtomicU64,
    pub messages: AtomicU64,
    /// Messages with a `<delay/>`: history sent on entry.
    pub history: AtomicU64,
    pub errors: AtomicU64,
}

/// One logged-in session of an occupant.
pub struct Occupant {
    pub writer: Writer,
    pub signals: mpsc::UnboundedReceiver<Signal>,
    /// Bare JID of the account.
    pub bare: String,
}

/// Start the reader of a logged-in session.
pub fn start(session: client::Session, on_message: Option<OnMessage>, counts: Arc<Counts>, clock: Instant) -> Occupant {
    let client::Session { mut reader, writer, jid, .. } = session;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(s) = reader.stanza().await {
            let room = || s.from.as_deref().unwrap_or("").split('/').next().unwrap_or("").to_string();
            match s.name.as_str() {
                "presence" => {
                    counts.presences.fetch_add(1, Ordering::Relaxed);
                    if s.kind.as_deref() == Some("error") {
                        counts.errors.fetch_add(1, Ordering::Relaxed);
                        let _ = tx.send(Signal::Error { room: room(), condition: s.inner.clone() });
                    } else if s.codes.contains(&110) {
                        let available = s.kind.as_deref() != Some("unavailable");
                        let _ = tx.send(Signal::SelfPresence { room: room(), codes: s.codes.clone(), available });
                    }
                }
                "message" => {
                    if s.kind.as_deref() == Some("error") {
                        counts.errors.fetch_add(1, Ordering::Relaxed);
                        let _ = tx.send(Signal::Error { room: room(), condition: s.inner.clone() });
                        continue;
                    }
                    let Some(body) = &s.body else {
                        if s.children.iter().any(|c| c == "subject") {
                            let _ = tx.send(Signal::Subject { room: room() });
                        }
                        continue;
                    };
                    if s.children.iter().any(|c| c == "delay") {
                        counts.history.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    counts.messages.fetch_add(1, Ordering::Relaxed);
                    if let Some(f) = &on_message {
                        f(&room(), body, clock.elapsed().as_micros() as u64);
                    }
                }
                "iq" => {
                    if let Some(id) = s.id.clone() {
                        let ok = s.kind.as_deref() == Some("result");
                        let _ = tx.send(Signal::Iq { id, ok, condition: s.inner.clone() });
                    }
                }
                _ => {}
            }
        }
    });
    Occupant {
        writer: Arc::new(tokio::sync::Mutex::new(writer)),
        signals: rx,
        bare: jid.split('/').next().unwrap_or("").to_string(),
    }
}

/// How a join went.
#[derive(Debug, Clone, Copy)]
pub struct Joined {
    /// Join presence sent → self-presence.
    pub self_presence_us: u64,
    /// Join presence sent → subject (0 when the room was created and is locked).
    pub subject_us: u64,
    /// Status 201: this join created the room.
    pub created: bool,
}

impl Occupant {
    pub async fn send(&self, xml: &str) -> Result<(), String> {
        self.writer.lock().await.send(xml.as_bytes()).await.map_err(|e| format!("send: {e}"))
    }

    /// The next signal, within `deadline`.
    async fn signal(&mut self, deadline: Instant, what: &str) -> Result<Signal, String> {
        match tokio::time::timeout_at(deadline.into(), self.signals.recv()).await {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err(format!("{}: the stream closed while waiting for {what}", self.bare)),
            Err(_) => Err(format!("{}: timed out waiting for {what}", self.bare)),
        }
    }

    /// §7.2: enter `room` as `nick`; done at the subject (or, for a room this join
    /// created, at the self-presence: a new room is locked until configured). `history`:
    /// the `<history/>` element to send, if any.
    pub async fn join(&mut self, room: &str, nick: &str, history: &str, timeout: Duration) -> Result<Joined, String> {
        let t0 = Instant::now();
        let deadline = t0 + timeout;
        self.send(&format!("<presence to='{room}/{nick}'><x xmlns='{MUC}'>{history}</x></presence>")).await?;
        let mut joined = Joined { self_presence_us: 0, subject_us: 0, created: false };
        let mut present = false;
        loop {
            match self.signal(deadline, &format!("joining {room}")).await? {
                Signal::SelfPresence { room: r, codes, available: true } if r == room => {
                    present = true;
                    joined.self_presence_us = t0.elapsed().as_micros() as u64;
                    if codes.contains(&201) {
                        joined.created = true;
                        return Ok(joined);
                    }
                }
                Signal::Subject { room: r } if r == room && present => {
                    joined.subject_us = t0.elapsed().as_micros() as u64;
                    return Ok(joined);
                }
                Signal::Error { room: r, condition } if r == room => {
                    return Err(format!("{} joining {room}: error {condition}", self.bare));
                }
                _ => {}
            }
        }
    }

    /// §7.14: leave `room`, until our unavailable self-presence comes back.
    pub async fn leave(&mut self, room: &str, nick: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        self.send(&format!("<presence to='{room}/{nick}' type='unavailable'/>")).await?;
        loop {
            match self.signal(deadline, &format!("leaving {room}")).await? {
                Signal::SelfPresence { room: r, available: false, .. } if r == room => return Ok(()),
                Signal::Error { room: r, condition } if r == room => {
                    return Err(format!("{} leaving {room}: error {condition}", self.bare));
                }
                _ => {}
            }
        }
    }

    /// An IQ to `to` and its answer.
    pub async fn iq(&mut self, id: &str, xml: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        self.send(xml).await?;
        loop {
            match self.signal(deadline, &format!("the answer to IQ {id}")).await? {
                Signal::Iq { id: i, ok, condition } if i == id => {
                    return if ok { Ok(()) } else { Err(format!("IQ {id} refused: {condition}")) };
                }
                _ => {}
            }
        }
    }

    /// Messages to a room: one `<message type='groupchat'/>` per body, in one write.
    pub async fn groupchat(&self, room: &str, bodies: &[String]) -> Result<(), String> {
        let mut buf = String::new();
        for b in bodies {
            buf.push_str(&format!("<message to='{room}' type='groupchat'><body>{b}</body></message>"));
        }
        self.send(&buf).await
    }
}

/// The room JID of `name` on the scenario's service.
pub fn room_jid(name: &str, service: &str) -> String {
    format!("{name}@{service}")
}

/// A name no earlier run on the same server has used: rooms are persistent, and a room of
/// an earlier run would still have its history and archive.
pub fn run_id() -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    format!("{}x{}", t % 100_000_000, std::process::id() % 1000)
}

/// Create `rooms` with account `owner` (resource "setup"): enter, and if the room is new
/// (status 201), submit a configuration that only makes it persistent (everything else is
/// the server's default: archive on, history 20); then leave. The session stays open (for
/// the scenario to use) and is returned.
pub async fn create_rooms(ctx: &Ctx, owner: usize, rooms: &[String], counts: Arc<Counts>, timeout: Duration) -> Result<Occupant, String> {
    let session = tokio::time::timeout(timeout, ctx.login(owner, "setup", true))
        .await
        .map_err(|_| format!("login {}: timed out", ctx.user(owner)))?
        .map_err(|e| format!("login {}: {e}", ctx.user(owner)))?;
    let mut o = start(session, None, counts, Instant::now());
    for (k, room) in rooms.iter().enumerate() {
        let joined = o.join(room, "owner", "<history maxstanzas='0'/>", timeout).await?;
        if joined.created {
            let id = format!("cfg{k}");
            let form = format!(
                "<iq type='set' id='{id}' to='{room}'><query xmlns='{MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'>\
                 <field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>\
                 <field var='muc#roomconfig_persistentroom'><value>1</value></field></x></query></iq>"
            );
            o.iq(&id, &form, timeout).await.map_err(|e| format!("configuring {room}: {e}"))?;
        }
        o.leave(room, "owner", timeout).await?;
    }
    Ok(o)
}

/// Log in accounts `first..first+count` (resource "muc", initial presence), `parallel` at
/// a time, and start their readers.
pub async fn login_all(
    ctx: &Arc<Ctx>,
    first: usize,
    count: usize,
    parallel: usize,
    on_message: impl Fn(usize) -> Option<OnMessage>,
    counts: &Arc<Counts>,
    clock: Instant,
) -> Result<Vec<Occupant>, String> {
    let limit = Arc::new(Semaphore::new(parallel));
    let mut logins = Vec::new();
    for i in first..first + count {
        let permit = limit.clone().acquire_owned().await.unwrap();
        let ctx = ctx.clone();
        logins.push(tokio::spawn(async move {
            let s = tokio::time::timeout(Duration::from_secs(60), ctx.login(i, "muc", true)).await;
            drop(permit);
            match s {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) => Err(format!("login {}: {e}", ctx.user(i))),
                Err(_) => Err(format!("login {}: timed out", ctx.user(i))),
            }
        }));
    }
    let mut out = Vec::new();
    for (k, l) in logins.into_iter().enumerate() {
        let s = l.await.map_err(|e| e.to_string())??;
        out.push(start(s, on_message(k), counts.clone(), clock));
    }
    Ok(out)
}

/// Every occupant enters its rooms (`plan[i]`: the rooms of occupant i, in order, each
/// with the nick), `parallel` occupants at a time. Returns each join's time to the
/// subject, in microseconds, and the wall time until all had joined.
pub async fn join_all(
    occupants: Vec<Occupant>,
    plan: Vec<Vec<(String, String)>>,
    parallel: usize,
    timeout: Duration,
) -> (Vec<Occupant>, Result<(Vec<u32>, f64), String>) {
    let limit = Arc::new(Semaphore::new(parallel));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (mut o, rooms) in occupants.into_iter().zip(plan) {
        let permit = limit.clone().acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            let mut result = Ok(());
            for (room, nick) in &rooms {
                match o.join(room, nick, "", timeout).await {
                    Ok(j) if j.created => {
                        result = Err(format!("{} created {room}, which should exist", o.bare));
                        break;
                    }
                    Ok(j) => times.push(j.subject_us.min(u32::MAX as u64) as u32),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            drop(permit);
            (o, times, result)
        }));
    }
    let mut occupants = Vec::new();
    let mut times = Vec::new();
    let mut first_error = None;
    let mut errors = 0;
    for t in tasks {
        let (o, ts, r) = t.await.unwrap();
        occupants.push(o);
        times.extend(ts);
        if let Err(e) = r {
            errors += 1;
            first_error.get_or_insert(e);
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    match first_error {
        Some(e) => (occupants, Err(format!("{errors} occupant(s) could not join; first: {e}"))),
        None => (occupants, Ok((times, wall))),
    }
}

/// Close every session (`</stream:stream>`).
pub async fn close_all(occupants: &[Occupant]) {
    for o in occupants {
        let _ = o.writer.lock().await.send(b"</stream:stream>").await;
    }
}
