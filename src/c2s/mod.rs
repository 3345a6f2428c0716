//! Client-to-server streams: one task per connection, the only writer of its socket.
//! Negotiation (`negotiate`, `sasl`) turns a connection into a bound session; the session
//! loop then reads stanzas, routes them, and writes what is routed to it.

mod csi;
mod negotiate;
pub mod resume;
mod sasl;
mod sm;
pub(crate) mod transport;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use jid::FullJid;
use crate::xml::Element;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use crate::core::Core;
use crate::modules::{Asleep, BoxFuture, Ctx, SessionHook, SessionOutput, Sleep, SleepOutcome};
use crate::router;
use crate::session::{ConnId, Control, next_conn_id};
use crate::stanza::{Condition, Kind, Rejected, Stanza, StreamCondition, StreamError, new_id};
use crate::xml::{self, ReadStats, StreamEvent, XmlError, ns};
use csi::Holdback;
use negotiate::{Bound, Negotiation, Reader};
use resume::{Handover, Refusal, Refused, Resumptions};
use sm::{Nonza, StreamManagement};
use transport::Writer;
pub use transport::Transport;

/// Stanzas taken from the queue for one write.
const WRITE_BATCH: usize = 64;
/// How long the closing of a stream may take to write.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// When a session waiting for resumption stops waiting, given what the modules made of the
/// latest event (see [`SleepOutcome`]): a device that can be woken keeps it longer, until
/// it is notified; from then on it waits `timeout` (`c2s.resume_timeout`, or less if the
/// client asked), never less than it would have without the modules.
fn hibernation_deadline(deadline: Instant, fell_asleep: Instant, timeout: Duration, outcome: SleepOutcome) -> Instant {
    let mut deadline = deadline;
    if let Some(keep) = outcome.keep_for {
        deadline = deadline.max(fell_asleep + keep);
    }
    if outcome.notified {
        deadline = deadline.min(Instant::now() + timeout);
    }
    deadline
}

/// Serve one client connection until it ends.
pub async fn serve(core: Core, resumptions: Arc<Resumptions>, tcp: TcpStream, peer: SocketAddr, direct_tls: bool) {
    let conn = next_conn_id();
    let span = tracing::info_span!("c2s", conn, %peer, jid = tracing::field::Empty);
    async move {
        let _ = tcp.set_nodelay(true);
        // One allowance from accept to a bound resource, whatever it is spent on (TLS
        // handshake, SASL, binding): an unauthenticated connection holds resources for at
        // most `auth_timeout`.
        let deadline = Instant::now() + Duration::from_secs(core.config.c2s.auth_timeout);
        // Negotiation is boxed: its state (TLS handshake, SASL) is large and needed only for
        // a moment, while the task's own future lives as long as the session.
        let negotiation = Box::pin(async {
            let transport = if direct_tls {
                // XEP-0368: TLS from the first byte.
                let handshake = crate::tls::TlsStream::accept(tcp, core.tls.clone());
                match tokio::time::timeout_at(deadline, handshake).await {
                    Ok(Ok(tls)) => Transport::Tls(Box::new(tls)),
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        return None;
                    }
                    Err(_) => {
                        tracing::debug!("TLS handshake timed out");
                        return None;
                    }
                }
            } else {
                Transport::Plain(tcp)
            };
            Negotiation::new(core.clone(), resumptions.clone(), conn, peer, deadline).run(transport).await.ok()
        });
        // Nothing: the stream ended, or it was handed to the session it resumed.
        let Some(bound) = negotiation.await else { return };
        tracing::Span::current().record("jid", tracing::field::display(&bound.jid));
        let (session, reader) = Session::new(core, resumptions, conn, bound);
        Box::pin(session.start(reader)).await;
    }
    .instrument(span)
    .await
}

/// How a session ended.
enum End {
    /// The connection is gone; nothing more can be written.
    Lost,
    /// The client takes nothing written to it (`c2s.write_timeout` without progress).
    Stalled,
    /// The client sent `</stream:stream>`.
    ClientClosed,
    /// We end the stream with this error.
    Error(StreamError),
    /// A new connection resumes this session (XEP-0198) while this one is still open.
    Resumed(Box<Handover>),
}

impl End {
    /// The connection failed rather than the session: a resumable session waits for the
    /// client to come back (a lost or stalled connection, an unanswered ping).
    fn connection_failed(&self) -> bool {
        match self {
            End::Lost | End::Stalled => true,
            End::Error(e) => e.condition == StreamCondition::ConnectionTimeout,
            End::ClientClosed | End::Resumed(_) => false,
        }
    }
}

/// Stream Management on one session, boxed: most sessions never enable it, and an idle
/// session should cost as little as possible.
struct SmState {
    proto: StreamManagement,
    /// For each client stanza whose effects are not yet safe, the promises it waits for;
    /// resolves to the stanza's number, in order.
    pending: FuturesOrdered<BoxFuture<u32>>,
    /// The client asked for an ack that could not cover everything it sent yet: an `<a/>`
    /// goes out once it can.
    ack_wanted: bool,
    /// When a request waiting for commits is answered anyway, with what is safe by then.
    answer_due: Option<Instant>,
    /// New connections resuming this session (only if it is resumable).
    handovers: Option<tokio::sync::mpsc::Receiver<Box<Handover>>>,
    /// How long the session waits for the client to come back.
    resume_timeout: Duration,
    /// When to ask for an ack of what is unacknowledged, if it is not asked before.
    ack_due: Option<Instant>,
}

/// The longest an ack request waits for the commits of what the client sent before it.
const ANSWER_WAIT: Duration = Duration::from_secs(1);

/// Unacknowledged stanzas that make the server ask for an ack at once.
const ACK_REQUEST_AT: usize = 8;
/// How long fewer of them wait before the server asks.
const ACK_REQUEST_DELAY: Duration = Duration::from_millis(500);

/// Something Stream Management waits for, besides the session's own events.
enum SmEvent {
    /// Everything up to this client stanza is safe.
    Durable(u32),
    Handover(Box<Handover>),
}

async fn next_sm_event(sm: &mut Option<Box<SmState>>) -> SmEvent {
    let Some(sm) = sm.as_deref_mut() else { return std::future::pending().await };
    let handover = async {
        match sm.handovers.as_mut() {
            Some(rx) => match rx.recv().await {
                Some(h) => h,
                None => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        Some(h) = sm.pending.next() => SmEvent::Durable(h),
        h = handover => SmEvent::Handover(h),
    }
}

struct Session {
    core: Core,
    resumptions: Arc<Resumptions>,
    conn: ConnId,
    jid: FullJid,
    ctx: Ctx,
    output: Arc<SessionOutput>,
    writer: Writer,
    rx: mpsc::UnboundedReceiver<Box<Element>>,
    /// Taken from the queue and not yet known to be written: rerouted if the session ends
    /// before they are. (With Stream Management, the unacknowledged queue does this.)
    in_flight: Vec<Box<Element>>,
    sm: Option<Box<SmState>>,
    /// XEP-0352: what is held back while the client says it is inactive; made at the
    /// first `<inactive/>`.
    csi: Option<Box<Holdback>>,
    /// With Stream Management: the messages up to this one of ours (a `sent_count`) were
    /// reported to the modules as written while the client was inactive (`Sleep::Message`),
    /// so that falling asleep on a lost connection does not report them again.
    reported_through: u32,
    control: Arc<Control>,
    stats: Arc<ReadStats>,
    ping: PingState,
    bucket: Bucket,
    /// The reader hit an error: no closing tag can come from the client any more.
    read_failed: bool,
    /// Still in the registry. If the task ends without `leave` (a panic), `Drop` cleans up,
    /// so that no ghost resource keeps receiving stanzas.
    registered: bool,
}

impl Drop for Session {
    fn drop(&mut self) {
        // Steps still queued hold this session's context (a flush's next batch), which holds
        // the output they sit in: dropping them breaks that cycle (and releases the flush).
        drop(self.output.take());
        if !self.registered {
            return;
        }
        tracing::error!("session task ended abnormally; cleaning up");
        if let Some(sm) = self.sm.as_deref()
            && let Some(id) = &sm.proto.id
        {
            self.resumptions.expire(id, &self.jid.to_bare(), sm.proto.durable_h());
        }
        if let Some((state, last)) = self.core.sessions.unbind(&self.jid, self.conn) {
            let (core, jid) = (self.core.clone(), self.jid.clone());
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let ctx = Ctx::new(core.clone());
                    core.modules.run_session_hook(SessionHook::Closed, &ctx, &jid, Some(state), last).await;
                    if last {
                        core.rosters.evict(&jid.to_bare());
                    }
                });
            }
        }
    }
}

/// XEP-0199 §4.2: the server pings a client that has been silent, and drops it if it does
/// not answer.
struct PingState {
    interval: Duration,
    timeout: Duration,
    pending: Option<(String, Instant)>,
}

/// Token bucket on bytes read (Prosody's mod_limits): a peer over its rate is not
/// disconnected, we just stop reading from it for a while. Rate 0: no limit.
pub(crate) struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    pub(crate) counted: u64,
    last: Instant,
    pub(crate) paused_until: Option<Instant>,
}

impl Bucket {
    pub(crate) fn new(rate: u64) -> Bucket {
        let burst = rate as f64 * 4.0;
        Bucket { rate: rate as f64, burst, tokens: burst, counted: 0, last: Instant::now(), paused_until: None }
    }

    /// Count what was read up to `total` bytes in all; over the rate, `paused_until` says
    /// until when not to read.
    pub(crate) fn account(&mut self, total: u64) {
        if self.rate <= 0.0 {
            return;
        }
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        self.tokens -= total.saturating_sub(self.counted) as f64;
        self.counted = total;
        if self.tokens < 0.0 {
            self.paused_until = Some(now + Duration::from_secs_f64(-self.tokens / self.rate));
        }
    }
}

/// The next event from the client. While idle this future only waits for bytes, which
/// takes a few bytes of state; the parser's own state (large) is boxed and exists only while
/// a stanza is arriving. Without a reader (a session waiting to be resumed) it never ends.
async fn read_next(reader: Option<Box<Reader>>) -> (Box<Reader>, Result<StreamEvent, XmlError>) {
    let Some(mut reader) = reader else { return std::future::pending().await };
    if let Err(e) = reader.wait_for_input().await {
        return (reader, Err(e));
    }
    let event = Box::pin(reader.next()).await;
    (reader, event)
}

impl Session {
    /// Build the session (no await here: nothing of `bound` stays in the task's future).
    fn new(core: Core, resumptions: Arc<Resumptions>, conn: ConnId, bound: Bound) -> (Box<Session>, Box<Reader>) {
        let Bound { reader, writer, jid, rx, control, stats } = bound;
        let output = Arc::new(SessionOutput::default());
        let config = &core.config.c2s;
        let session = Box::new(Session {
            ctx: Ctx::for_session(core.clone(), jid.clone(), output.clone()),
            ping: PingState {
                interval: Duration::from_secs(config.ping_interval),
                timeout: Duration::from_secs(config.ping_timeout),
                pending: None,
            },
            bucket: Bucket::new(config.max_bytes_per_second),
            read_failed: false,
            registered: true,
            core,
            resumptions,
            conn,
            jid,
            output,
            writer,
            rx,
            in_flight: Vec::new(),
            sm: None,
            csi: None,
            reported_through: 0,
            control,
            stats,
        });
        (session, Box::new(reader))
    }

    /// The session's life. The session and its reader are on the heap and the rare paths are
    /// boxed, so that the task's future of an idle session stays small.
    async fn start(mut self: Box<Self>, reader: Box<Reader>) {
        tracing::info!("session started");
        let early_end = Box::pin(async {
            self.core.modules.run_session_hook(SessionHook::Bound, &self.ctx, &self.jid, None, false).await;
            self.write_output().await
        })
        .await;
        match early_end {
            Some(end) => {
                Box::pin(async {
                    self.leave().await;
                    self.close_stream(end, None::<std::pin::Pin<&mut std::future::Ready<()>>>).await;
                    self.reroute_queued().await;
                })
                .await
            }
            None => self.run(reader).await,
        }
        tracing::info!("session ended");
    }

    async fn run(&mut self, reader: Box<Reader>) {
        // One read future lives across iterations: quick-xml's read is not cancel-safe.
        let read = read_next(Some(reader));
        tokio::pin!(read);
        // A resumption queued `<resumed/>` and what is sent again: written first.
        let mut resumed = false;
        // The connection that came to resume went away before it could take over.
        let mut detached = false;
        // One timer for the session's life, moved only when its deadline does: a session
        // woken for every stanza it is sent would otherwise set and clear a timer each time.
        let timer = tokio::time::sleep_until(self.next_timer());
        tokio::pin!(timer);
        let end = 'session: loop {
            let end = loop {
                if std::mem::take(&mut detached) {
                    break End::Lost;
                }
                if std::mem::take(&mut resumed)
                    && let Some(end) = self.flush().await
                {
                    break end;
                }
                let reading = self.bucket.paused_until.is_none();
                // A client this far behind in its acks gets nothing more until it catches up.
                let taking = self.sm.as_ref().is_none_or(|sm| sm.proto.unacked_len() < self.core.config.c2s.max_unacked);
                let due = self.next_timer();
                if timer.deadline() != due {
                    timer.as_mut().reset(due);
                }
                // Shutdown also comes as a close request (`Server::shutdown`): waiting on the
                // token here too would register and remove a waiter on every wake.
                if self.core.shutdown.is_cancelled() {
                    break End::Error(StreamError::new(StreamCondition::SystemShutdown));
                }
                tokio::select! {
                    biased;
                    error = self.control.closed() => break End::Error(error),
                    event = next_sm_event(&mut self.sm) => match event {
                        SmEvent::Durable(h) => {
                            if let Some(end) = self.durable(h).await {
                                break end;
                            }
                        }
                        SmEvent::Handover(handover) => break End::Resumed(handover),
                    },
                    out = self.rx.recv(), if taking => match out {
                        Some(el) => {
                            if let Some(end) = self.write_queued(el).await {
                                break end;
                            }
                        }
                        None => break End::Lost,
                    },
                    (reader, event) = &mut read, if reading => {
                        read.set(read_next(Some(reader)));
                        match event {
                            Ok(StreamEvent::Element(el)) => {
                                // Boxed: routing's state is large and exists only per stanza.
                                if let Some(end) = Box::pin(self.handle(el)).await {
                                    break end;
                                }
                                self.bucket.account(self.stats.total());
                            }
                            Ok(StreamEvent::Close) => break End::ClientClosed,
                            Ok(StreamEvent::Open(_)) => {
                                self.read_failed = true;
                                break End::Error(StreamError::new(StreamCondition::NotWellFormed));
                            }
                            Err(XmlError::Eof | XmlError::Io(_)) => break End::Lost,
                            Err(e) => {
                                tracing::debug!(error = %e, "bad XML from client");
                                self.read_failed = true;
                                break End::Error(e.into());
                            }
                        }
                    }
                    _ = &mut timer => {
                        if let Some(end) = self.on_timer() {
                            break end;
                        }
                        if let Some(end) = self.flush().await {
                            break end;
                        }
                    }
                }
            };
            // XEP-0198: a new connection takes over, whether this one is still open or
            // failed and the session waited for the client to come back.
            let handover = match end {
                End::Resumed(handover) => {
                    let Some(handover) = self.accept_resumption(handover) else { continue 'session };
                    // §5: the old stream, still open, is closed with a conflict.
                    let conflict = StreamError::new(StreamCondition::Conflict).with_text("the session was resumed on another connection");
                    self.replace_connection(Some(conflict));
                    read.set(read_next(None));
                    handover
                }
                end if end.connection_failed() && self.resumable() => {
                    let farewell = match end {
                        End::Error(e) => Some(e),
                        _ => None,
                    };
                    self.replace_connection(farewell);
                    // The old connection's socket is closed while the session waits.
                    read.set(read_next(None));
                    loop {
                        match Box::pin(self.hibernate()).await {
                            Some(handover) => {
                                if let Some(handover) = self.accept_resumption(handover) {
                                    break handover;
                                }
                            }
                            None => break 'session End::Lost,
                        }
                    }
                }
                end => break 'session end,
            };
            match Box::pin(self.take_over(handover)).await {
                Some(reader) => {
                    read.set(read_next(Some(reader)));
                    resumed = true;
                }
                None => detached = true,
            }
        };
        // Out of the registry first, so that nothing more is routed here and contacts see
        // us go at once; then the closing handshake; then what was still queued.
        let read_pending = !matches!(end, End::Lost | End::Stalled | End::ClientClosed) && !self.read_failed;
        Box::pin(async {
            self.leave().await;
            self.close_stream(end, read_pending.then_some(read.as_mut())).await;
            self.reroute_queued().await;
        })
        .await;
    }

    /// Write what waits in the queue, `first` and as many more as one batch takes.
    async fn write_queued(&mut self, first: Box<Element>) -> Option<End> {
        let soft = self.core.sessions.queue_limits().soft;
        self.control.dequeued(soft);
        let mut batch = vec![first];
        // With Stream Management, no more than the client may leave unacknowledged.
        let room = match self.sm.as_deref() {
            Some(sm) => self.core.config.c2s.max_unacked.saturating_sub(sm.proto.unacked_len()).clamp(1, WRITE_BATCH),
            None => WRITE_BATCH,
        };
        while batch.len() < room {
            match self.rx.try_recv() {
                Ok(el) => {
                    self.control.dequeued(soft);
                    batch.push(el);
                }
                Err(_) => break,
            }
        }
        // XEP-0352: an inactive client gets now only what it must see now; the modules
        // that can wake its device hear of the messages it is sent meanwhile.
        let inactive = self.csi.as_deref().is_some_and(Holdback::is_inactive);
        if inactive && self.core.modules.watches_sleep(&self.jid) {
            for el in batch.iter().filter(|el| el.name() == "message") {
                let sleep = Sleep::Message { why: Asleep::Inactive, message: (**el).clone() };
                self.core.modules.run_sleep_hook(&self.ctx, &self.jid, sleep).await;
            }
        }
        if let Some(csi) = self.csi.as_deref_mut() {
            batch = batch.into_iter().flat_map(|el| csi.offer(el)).collect();
            if batch.is_empty() {
                return None;
            }
        }
        let end = self.write_elements(batch).await;
        if inactive && let Some(sm) = self.sm.as_deref() {
            self.reported_through = sm.proto.sent_count();
        }
        end
    }

    /// Write elements taken from the queue (or released by CSI), kept for rerouting until
    /// they are known to be written (with Stream Management, acknowledged).
    async fn write_elements(&mut self, batch: Vec<Box<Element>>) -> Option<End> {
        for el in &batch {
            self.writer.queue(el);
        }
        match self.sm.as_deref_mut() {
            // Kept until the client acknowledges them.
            Some(sm) => batch.into_iter().for_each(|el| sm.proto.sent(el)),
            None => self.in_flight = batch,
        }
        let end = self.flush().await;
        if end.is_none() {
            // Written: nothing to reroute any more (and no buffer kept while idle).
            self.in_flight = Vec::new();
        }
        end
    }

    /// Write one stanza (not from the queue), counted for Stream Management.
    fn write_stanza(&mut self, el: Element) {
        self.writer.queue(&el);
        if let Some(sm) = self.sm.as_deref_mut() {
            sm.proto.sent(Box::new(el));
        }
    }

    fn next_timer(&self) -> Instant {
        let now = Instant::now();
        let mut next = match &self.ping.pending {
            Some((_, deadline)) => *deadline,
            None => now + self.ping.interval.saturating_sub(self.stats.idle()),
        };
        if let Some(until) = self.bucket.paused_until {
            next = next.min(until);
        }
        if let Some(sm) = self.sm.as_deref() {
            for due in [sm.ack_due, sm.answer_due].into_iter().flatten() {
                next = next.min(due);
            }
        }
        next
    }

    /// Ping and throttle timers. Returns how the session ends, if it does.
    fn on_timer(&mut self) -> Option<End> {
        let now = Instant::now();
        if self.bucket.paused_until.is_some_and(|t| t <= now) {
            self.bucket.paused_until = None;
        }
        if let Some(sm) = self.sm.as_deref_mut()
            && sm.answer_due.is_some_and(|t| t <= now)
        {
            // The commits take long: answer with what is safe; the rest follows when it is
            // (`ack_wanted` stays).
            sm.answer_due = None;
            let ack = sm.proto.ack();
            self.writer.queue(&ack);
        }
        match &self.ping.pending {
            Some((_, deadline)) if *deadline <= now => {
                tracing::info!("client did not answer the ping");
                return Some(End::Error(StreamError::new(StreamCondition::ConnectionTimeout)));
            }
            Some(_) => {}
            None if self.stats.idle() >= self.ping.interval => {
                let id = format!("ping-{}", new_id());
                let domain = self.jid.domain().as_str();
                let mut iq = xml::element("iq", ns::CLIENT, &[("type", "get"), ("id", &id), ("from", domain), ("to", self.jid.as_str())]);
                iq.append_child(Element::bare("ping", ns::PING));
                self.write_stanza(iq);
                self.ping.pending = Some((id, now + self.ping.timeout));
            }
            None => {}
        }
        None
    }

    /// One element from the client. Returns how the session ends, if it does.
    async fn handle(&mut self, el: Element) -> Option<End> {
        // Any element shows the client is alive.
        self.ping.pending.take_if(|_| el.has_ns(ns::SM));
        if let Some(nonza) = Nonza::parse(&el) {
            return self.stream_management(nonza).await;
        }
        if el.has_ns(ns::CSI) {
            return self.client_state(&el).await;
        }
        let end = self.handle_stanza(el).await;
        self.stanza_handled();
        end
    }

    async fn handle_stanza(&mut self, el: Element) -> Option<End> {
        // The answer to our ping needs nothing else.
        if let Some((id, _)) = self.ping.pending.take()
            && el.is("iq", ns::CLIENT) && el.attr("id") == Some(id.as_str()) && matches!(el.attr("type"), Some("result" | "error"))
        {
            return None;
        }
        let stanza = match Stanza::from_client(el, &self.jid) {
            Ok(s) => s,
            Err(Rejected::Stanza(reply)) => {
                self.write_stanza(reply);
                return self.flush().await;
            }
            Err(Rejected::Stream(e)) => return Some(End::Error(e)),
            Err(Rejected::Ignore) => return None,
        };
        // RFC 3921 §3 session establishment, kept for old clients: a no-op.
        if stanza.kind == Kind::Iq && stanza.payload().is_some_and(|p| p.is("session", ns::SESSION)) && stanza.to.is_none() {
            let reply = stanza.iq_result(None);
            self.write_stanza(reply.el);
            return self.flush().await;
        }
        router::from_client(&self.ctx, stanza).await;
        self.write_output().await
    }

    /// A stanza from the client has been handled: count it, with the writes its
    /// acknowledgement must wait for (see [`crate::modules::Durable`]).
    fn stanza_handled(&mut self) {
        let promises = self.output.take_durable();
        let Some(sm) = self.sm.as_deref_mut() else { return };
        let h = sm.proto.handled();
        if promises.is_empty() && sm.pending.is_empty() {
            sm.proto.durable_up_to(h);
        } else {
            sm.pending.push_back(Box::pin(async move {
                for promise in promises {
                    // Kept or broken (the writer failed and the sender was told): done.
                    let _ = promise.await;
                }
                h
            }));
        }
    }

    /// Everything up to client stanza `h` is safe; answer an ack request that is waiting
    /// for it.
    async fn durable(&mut self, h: u32) -> Option<End> {
        let sm = self.sm.as_deref_mut()?;
        sm.proto.durable_up_to(h);
        if sm.ack_wanted && sm.pending.is_empty() {
            sm.ack_wanted = false;
            sm.answer_due = None;
            let ack = sm.proto.ack();
            self.writer.queue(&ack);
            return self.flush().await;
        }
        None
    }

    /// XEP-0198 elements once the session is bound.
    async fn stream_management(&mut self, nonza: Result<Nonza, sm::Malformed>) -> Option<End> {
        let nonza = match nonza {
            Ok(n) => n,
            Err(m) => {
                // `<a/>` without a usable `h` leaves the counts unknowable.
                return Some(End::Error(StreamError::new(StreamCondition::BadFormat).with_text(m.0)));
            }
        };
        match nonza {
            Nonza::Enable(request) => {
                let reply = if self.sm.is_some() {
                    // §3: at most one attempt per stream.
                    sm::failed(Condition::UnexpectedRequest, None, Some("stream management is already enabled"))
                } else {
                    let config = &self.core.config.c2s;
                    let (id, handovers, timeout) = if request.resume && config.resume_timeout > 0 {
                        let timeout = request.max.map_or(config.resume_timeout, |m| m.clamp(1, config.resume_timeout));
                        let (id, rx) = self.resumptions.register(&self.jid.to_bare());
                        (Some(id), Some(rx), timeout)
                    } else {
                        (None, None, 0)
                    };
                    let reply = sm::enabled(id.as_deref(), id.as_ref().map(|_| timeout));
                    tracing::debug!(resumable = id.is_some(), "stream management enabled");
                    self.sm = Some(Box::new(SmState {
                        proto: StreamManagement::new(id),
                        pending: FuturesOrdered::new(),
                        ack_wanted: false,
                        answer_due: None,
                        handovers,
                        resume_timeout: Duration::from_secs(timeout),
                        ack_due: None,
                    }));
                    reply
                };
                self.writer.queue(&reply);
            }
            // Resumption replaces binding: a bound session cannot resume another.
            Nonza::Resume(_) => {
                self.writer.queue(&sm::failed(Condition::UnexpectedRequest, None, Some("a session is already bound on this stream")));
            }
            Nonza::Request => {
                let sm = self.sm.as_deref_mut()?;
                if sm.pending.is_empty() {
                    let ack = sm.proto.ack();
                    self.writer.queue(&ack);
                } else {
                    // What the client sent last waits for its commit, a few milliseconds
                    // away: the answer waits for it too, and covers it, rather than a first
                    // `<a/>` now that leaves it out and a second one then (a write and a
                    // wakeup of the client each). §4 requires an answer, not an instant one;
                    // a slow disk delays it by ANSWER_WAIT at most.
                    sm.ack_wanted = true;
                    sm.answer_due.get_or_insert(Instant::now() + ANSWER_WAIT);
                    return None;
                }
            }
            Nonza::Ack(h) => {
                let sm = self.sm.as_deref_mut()?;
                if let Err(e) = sm.proto.acknowledged(h) {
                    return Some(End::Error(e));
                }
                return None;
            }
        }
        self.flush().await
    }

    /// XEP-0352 §4: `<inactive/>` and `<active/>`, never answered. Becoming active writes
    /// what was held before anything else (§5.1).
    async fn client_state(&mut self, el: &Element) -> Option<End> {
        match el.name() {
            "inactive" => {
                self.csi.get_or_insert_default().set_inactive(true);
                let fell_asleep = Sleep::FellAsleep { why: Asleep::Inactive, pending: Vec::new() };
                self.core.modules.run_sleep_hook(&self.ctx, &self.jid, fell_asleep).await;
            }
            "active" => {
                self.core.modules.run_sleep_hook(&self.ctx, &self.jid, Sleep::Woke).await;
                if let Some(mut csi) = self.csi.take() {
                    let held = csi.drain();
                    if !held.is_empty() {
                        return self.write_elements(held).await;
                    }
                }
            }
            other => {
                return Some(End::Error(
                    StreamError::new(StreamCondition::UnsupportedStanzaType).with_text(format!("unexpected <{other}/>")),
                ));
            }
        }
        None
    }

    fn resumable(&self) -> bool {
        self.sm.as_ref().is_some_and(|sm| sm.handovers.is_some())
    }

    /// The connection is being replaced, or has failed: close it, with `farewell` if it
    /// can still be written to, without waiting. What was being written stays
    /// unacknowledged (and is sent again on resumption).
    fn replace_connection(&mut self, farewell: Option<StreamError>) {
        let old = std::mem::replace(&mut self.writer, Writer::detached());
        tokio::spawn(
            async move {
                let mut old = old;
                // After a write cut short in the middle, nothing more would parse.
                if old.discard() && let Some(error) = farewell {
                    old.queue(&error.to_element());
                    old.queue_raw(b"</stream:stream>");
                    let _ = tokio::time::timeout(CLOSE_WAIT, old.flush()).await;
                }
                old.shutdown().await;
            }
            .instrument(tracing::Span::current()),
        );
    }

    /// The connection failed: wait up to the resumption timeout for the client to come
    /// back, keeping what it is sent meanwhile. The session stays available to its
    /// contacts until then (XEP-0198 §5: the session is kept, not ended).
    async fn hibernate(&mut self) -> Option<Box<Handover>> {
        let soft = self.core.sessions.queue_limits().soft;
        let max_unacked = self.core.config.c2s.max_unacked;
        let timeout = self.sm.as_ref()?.resume_timeout;
        let fell_asleep = Instant::now();
        let mut deadline = fell_asleep + timeout;
        // The modules that can wake the client's device hear of it (and of the messages
        // it may not have got), and may keep the session longer.
        let watching = self.core.modules.watches_sleep(&self.jid);
        if watching {
            let pending = self.unreported_messages();
            let fell = Sleep::FellAsleep { why: Asleep::Hibernating, pending };
            let outcome = self.core.modules.run_sleep_hook(&self.ctx, &self.jid, fell).await;
            deadline = hibernation_deadline(deadline, fell_asleep, timeout, outcome);
        }
        tracing::info!(timeout = deadline.duration_since(fell_asleep).as_secs(), "connection lost; the session waits to be resumed");
        loop {
            let sm = self.sm.as_deref_mut()?;
            tokio::select! {
                biased;
                _ = self.core.shutdown.cancelled() => return None,
                _ = self.control.closed() => return None,
                handover = async { sm.handovers.as_mut()?.recv().await } => return handover,
                Some(h) = sm.pending.next() => sm.proto.durable_up_to(h),
                out = self.rx.recv() => {
                    let el = out?;
                    self.control.dequeued(soft);
                    if watching && el.name() == "message" {
                        let sleep = Sleep::Message { why: Asleep::Hibernating, message: (*el).clone() };
                        let outcome = self.core.modules.run_sleep_hook(&self.ctx, &self.jid, sleep).await;
                        deadline = hibernation_deadline(deadline, fell_asleep, timeout, outcome);
                    }
                    sm.proto.sent(el);
                    if sm.proto.unacked_len() > max_unacked {
                        tracing::info!("too much waits for a session being resumed; ending it");
                        return None;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::info!("the session was not resumed in time");
                    return None;
                }
            }
        }
    }

    /// The `h` of a resumption acknowledges what the client got before it lost the
    /// connection; one beyond what we sent refuses the resumption (the session carries on
    /// as it was).
    fn accept_resumption(&mut self, handover: Box<Handover>) -> Option<Box<Handover>> {
        let sm = self.sm.as_deref_mut().expect("only a resumable session is handed connections");
        match sm.proto.acknowledged(handover.h) {
            Ok(()) => Some(handover),
            Err(e) => {
                let Handover { reader, writer, reply, .. } = *handover;
                let _ = reply.send(Err(Refused { reader, writer, why: Refusal::Error(e) }));
                None
            }
        }
    }

    /// A new connection takes this session over: answer `<resumed/>` and send again what
    /// the client has not acknowledged (XEP-0198 §5). Returns the new connection's reader,
    /// or `None` if the new connection went away meanwhile.
    async fn take_over(&mut self, handover: Box<Handover>) -> Option<Box<Reader>> {
        let Handover { reader, writer, stats, peer, h: _, reply } = *handover;
        let sm = self.sm.as_deref_mut().expect("only a resumable session is handed connections");
        // The `h` we send back covers what is safe: wait for the writes still pending (the
        // group commit takes milliseconds), so that the client does not send again what we
        // already handled.
        let wait = Duration::from_secs(self.core.config.c2s.write_timeout);
        let _ = tokio::time::timeout(wait, async {
            while let Some(h) = sm.pending.next().await {
                sm.proto.durable_up_to(h);
            }
        })
        .await;
        if reply.send(Ok(())).is_err() {
            return None;
        }
        tracing::info!(%peer, "session resumed");
        self.core.sessions.set_peer(&self.jid, self.conn, peer);
        self.writer = writer;
        self.stats = stats;
        self.bucket.counted = self.stats.total();
        self.read_failed = false;
        self.ping.pending = None;
        let sm = self.sm.as_deref_mut().expect("checked above");
        sm.ack_wanted = false;
        sm.answer_due = None;
        let previd = sm.proto.id.clone().unwrap_or_default();
        let resumed = sm::resumed(&previd, sm.proto.durable_h());
        self.writer.queue(&resumed);
        // Sent again, with the time they were first sent; they keep their numbers.
        let unacked = sm.proto.take_unacked();
        let domain = self.jid.domain().as_str();
        for u in &unacked {
            self.writer.queue(&sm::with_delay((*u.el).clone(), u.since, domain));
        }
        sm.proto.restore_unacked(unacked);
        // XEP-0352 §5.2: a resumed stream starts active; what was held goes out now.
        if let Some(mut csi) = self.csi.take() {
            let held = csi.drain();
            for el in &held {
                self.writer.queue(el);
            }
            let sm = self.sm.as_deref_mut().expect("checked above");
            held.into_iter().for_each(|el| sm.proto.sent(el));
        }
        self.core.modules.run_sleep_hook(&self.ctx, &self.jid, Sleep::Woke).await;
        Some(reader)
    }

    /// The messages written to the client that it has not acknowledged and that were not
    /// reported while it was inactive (copies, for the modules).
    fn unreported_messages(&self) -> Vec<Element> {
        let Some(sm) = self.sm.as_deref() else { return Vec::new() };
        sm.proto.unacked_after(self.reported_through).filter(|u| u.el.name() == "message").map(|u| (*u.el).clone()).collect()
    }

    /// Write what handlers gave to this session directly, then run their after-write steps;
    /// again while those steps give more (the offline flush queues its next batch from the
    /// step that deletes the previous one), so that all of it is written before anything
    /// routed to the session meanwhile.
    async fn write_output(&mut self) -> Option<End> {
        loop {
            let (direct, after) = self.output.take();
            if direct.is_empty() && after.is_empty() {
                return None;
            }
            for el in direct {
                self.write_stanza(el);
                if self.writer.pending() > 256 * 1024
                    && let Some(end) = self.flush().await
                {
                    return Some(end);
                }
            }
            if let Some(end) = self.flush().await {
                return Some(end);
            }
            for f in after {
                f.await;
            }
        }
    }

    /// Write what is queued. The write is given up when the client takes nothing for
    /// `c2s.write_timeout`, and cut short by a close request or shutdown (a stalled write
    /// must not keep a session that was told to go).
    async fn flush(&mut self) -> Option<End> {
        // XEP-0198: ask for an ack of what we sent, one request at a time: at once when
        // several stanzas wait for one, else a moment later, so that a steady stream of
        // messages does not cost a request and an answer each (nor wake a phone for them).
        if let Some(sm) = self.sm.as_deref_mut()
            && !sm.proto.requested
            && sm.proto.unacked_len() > 0
        {
            if sm.proto.unacked_len() >= ACK_REQUEST_AT || sm.ack_due.is_some_and(|due| due <= Instant::now()) {
                sm.proto.requested = true;
                sm.ack_due = None;
                self.writer.queue(&sm::request());
            } else if sm.ack_due.is_none() {
                sm.ack_due = Some(Instant::now() + ACK_REQUEST_DELAY);
            }
        }
        tokio::select! {
            // The write first: it is done at once unless the client stopped reading, and
            // the other two are then not polled at all.
            biased;
            result = self.writer.flush() => match result {
                Ok(()) => None,
                Err(e) if transport::is_stalled(&e) => {
                    tracing::info!("the client does not read what it is sent; disconnecting it");
                    Some(End::Stalled)
                }
                Err(_) => Some(End::Lost),
            },
            error = self.control.closed() => Some(End::Error(error)),
            _ = self.core.shutdown.cancelled() => Some(End::Error(StreamError::new(StreamCondition::SystemShutdown))),
        }
    }

    /// Unregister, and tell the modules (presence goes unavailable, last activity).
    async fn leave(&mut self) {
        self.registered = false;
        if let Some(sm) = self.sm.as_deref_mut()
            && let Some(mut handovers) = sm.handovers.take()
        {
            let id = sm.proto.id.as_deref().unwrap_or_default();
            let h = sm.proto.durable_h();
            self.resumptions.expire(id, &self.jid.to_bare(), h);
            // A connection that came to resume at the last moment can still bind instead.
            handovers.close();
            while let Ok(handover) = handovers.try_recv() {
                let Handover { reader, writer, reply, .. } = *handover;
                let _ = reply.send(Err(Refused { reader, writer, why: Refusal::Gone(Some(h)) }));
            }
        }
        let core = self.core.clone();
        if let Some((state, last)) = core.sessions.unbind(&self.jid, self.conn) {
            let ctx = Ctx::new(core.clone());
            core.modules.run_session_hook(SessionHook::Closed, &ctx, &self.jid, Some(state), last).await;
            if last {
                core.rosters.evict(&self.jid.to_bare());
            }
        }
    }

    /// Send our end of the stream. If a read is still in progress, give the client a moment
    /// to close its own (RFC 6120 §4.4).
    async fn close_stream<F: std::future::Future>(&mut self, end: End, read: Option<std::pin::Pin<&mut F>>) {
        match &end {
            End::Lost | End::Resumed(_) => return,
            // Nothing more can be written to a client that takes nothing.
            End::Stalled => return self.writer.shutdown().await,
            End::ClientClosed => {}
            End::Error(e) => {
                tracing::debug!(condition = e.condition.name(), "closing the stream");
                self.writer.queue(&e.to_element());
            }
        }
        self.writer.queue_raw(b"</stream:stream>");
        // The close may follow a write that was cut short: it gets a moment, not the whole
        // stall timeout.
        let written = tokio::time::timeout(CLOSE_WAIT, self.writer.flush()).await.is_ok_and(|r| r.is_ok());
        if written {
            // The interrupted write went out before the closing.
            self.in_flight.clear();
        }
        if written && let Some(read) = read {
            let _ = tokio::time::timeout(CLOSE_WAIT, read).await;
        }
        self.writer.shutdown().await;
    }

    /// Stanzas not known to have reached the client (not acknowledged with Stream
    /// Management; without it, taken for a write that did not complete) and those still
    /// queued are rerouted, in order: messages find another resource or offline storage
    /// instead of being lost (XEP-0198 §4, with the time they were first sent). A message
    /// of an unfinished write may have reached the client in part or in whole: it can
    /// arrive twice, never not at all.
    async fn reroute_queued(&mut self) {
        self.rx.close();
        let ctx = Ctx::rerouting(self.core.clone());
        let unacked = self.sm.as_deref_mut().map(|sm| sm.proto.take_unacked()).unwrap_or_default();
        let mut in_flight = std::mem::take(&mut self.in_flight);
        // Held back by CSI: taken from the queue after what was in flight.
        in_flight.extend(self.csi.take().map(|csi| csi.finish()).unwrap_or_default());
        let queued = std::iter::from_fn(|| self.rx.try_recv().ok()).collect::<Vec<_>>();
        if !unacked.is_empty() || !in_flight.is_empty() || !queued.is_empty() {
            tracing::debug!(unacked = unacked.len(), in_flight = in_flight.len(), queued = queued.len(), "rerouting what was not written");
        }
        let domain = self.jid.domain().as_str().to_string();
        let unacked = unacked.into_iter().map(|u| sm::with_delay(*u.el, u.since, &domain));
        for el in unacked.chain(in_flight.into_iter().chain(queued).map(|el| *el)) {
            if let Some(stanza) = Stanza::from_stored(el) {
                router::redeliver(&ctx, stanza).await;
            }
        }
    }
}
