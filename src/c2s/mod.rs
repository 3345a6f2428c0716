//! Client-to-server streams: one task per connection, the only writer of its socket.
//! Negotiation (`negotiate`, `sasl`) turns a connection into a bound session; the session
//! loop then reads stanzas, routes them, and writes what is routed to it.

mod negotiate;
mod sasl;
mod transport;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jid::FullJid;
use crate::xml::Element;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use crate::core::Core;
use crate::modules::{Ctx, SessionHook, SessionOutput};
use crate::router;
use crate::session::{ConnId, Control, next_conn_id};
use crate::stanza::{Kind, Rejected, Stanza, StreamCondition, StreamError, new_id};
use crate::xml::{self, ReadStats, StreamEvent, XmlError, ns};
use negotiate::{Bound, Negotiation, Reader};
use transport::Writer;
pub use transport::Transport;

/// Stanzas taken from the queue for one write.
const WRITE_BATCH: usize = 64;
/// How long the closing of a stream may take to write.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Serve one client connection until it ends.
pub async fn serve(core: Core, tcp: TcpStream, peer: SocketAddr, direct_tls: bool) {
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
            Negotiation::new(core.clone(), conn, peer, deadline).run(transport).await.ok()
        });
        let Some(bound) = negotiation.await else { return };
        tracing::Span::current().record("jid", tracing::field::display(&bound.jid));
        let (session, reader) = Session::new(core, conn, bound);
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
}

struct Session {
    core: Core,
    conn: ConnId,
    jid: FullJid,
    ctx: Ctx,
    output: Arc<SessionOutput>,
    writer: Writer,
    rx: mpsc::UnboundedReceiver<Box<Element>>,
    /// Taken from the queue and not yet known to be written: rerouted if the session ends
    /// before they are.
    in_flight: Vec<Box<Element>>,
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

/// Token bucket on bytes read (Prosody's mod_limits): a client over its rate is not
/// disconnected, we just stop reading from it for a while.
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    counted: u64,
    last: Instant,
    paused_until: Option<Instant>,
}

impl Bucket {
    fn new(rate: u64) -> Bucket {
        let burst = rate as f64 * 4.0;
        Bucket { rate: rate as f64, burst, tokens: burst, counted: 0, last: Instant::now(), paused_until: None }
    }

    fn account(&mut self, total: u64) {
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
/// a stanza is arriving.
async fn read_next(mut reader: Box<Reader>) -> (Box<Reader>, Result<StreamEvent, XmlError>) {
    if let Err(e) = reader.wait_for_input().await {
        return (reader, Err(e));
    }
    let event = Box::pin(reader.next()).await;
    (reader, event)
}

impl Session {
    /// Build the session (no await here: nothing of `bound` stays in the task's future).
    fn new(core: Core, conn: ConnId, bound: Bound) -> (Box<Session>, Box<Reader>) {
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
            conn,
            jid,
            output,
            writer,
            rx,
            in_flight: Vec::new(),
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
        let read = read_next(reader);
        tokio::pin!(read);
        let end = loop {
            let reading = self.bucket.paused_until.is_none();
            let timer = self.next_timer();
            tokio::select! {
                biased;
                _ = self.core.shutdown.cancelled() => {
                    break End::Error(StreamError::new(StreamCondition::SystemShutdown));
                }
                error = self.control.closed() => break End::Error(error),
                out = self.rx.recv() => match out {
                    Some(el) => {
                        // Write what else is waiting in one go.
                        let soft = self.core.sessions.queue_limits().soft;
                        self.control.dequeued(soft);
                        self.in_flight.push(el);
                        while self.in_flight.len() < WRITE_BATCH {
                            match self.rx.try_recv() {
                                Ok(el) => {
                                    self.control.dequeued(soft);
                                    self.in_flight.push(el);
                                }
                                Err(_) => break,
                            }
                        }
                        for el in &self.in_flight {
                            self.writer.queue(el);
                        }
                        if let Some(end) = self.flush().await {
                            break end;
                        }
                        // Written: nothing to reroute any more (and no buffer kept while idle).
                        self.in_flight = Vec::new();
                    }
                    None => break End::Lost,
                },
                (reader, event) = &mut read, if reading => {
                    read.set(read_next(reader));
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
                _ = tokio::time::sleep_until(timer) => {
                    if let Some(end) = self.on_timer() {
                        break end;
                    }
                    if let Some(end) = self.flush().await {
                        break end;
                    }
                }
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

    fn next_timer(&self) -> Instant {
        let now = Instant::now();
        let mut next = match &self.ping.pending {
            Some((_, deadline)) => *deadline,
            None => now + self.ping.interval.saturating_sub(self.stats.idle()),
        };
        if let Some(until) = self.bucket.paused_until {
            next = next.min(until);
        }
        next
    }

    /// Ping and throttle timers. Returns how the session ends, if it does.
    fn on_timer(&mut self) -> Option<End> {
        let now = Instant::now();
        if self.bucket.paused_until.is_some_and(|t| t <= now) {
            self.bucket.paused_until = None;
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
                self.writer.queue(&iq);
                self.ping.pending = Some((id, now + self.ping.timeout));
            }
            None => {}
        }
        None
    }

    /// One element from the client. Returns how the session ends, if it does.
    async fn handle(&mut self, el: Element) -> Option<End> {
        // Any stanza shows the client is alive; the answer to our ping needs nothing else.
        if let Some((id, _)) = self.ping.pending.take()
            && el.is("iq", ns::CLIENT) && el.attr("id") == Some(id.as_str()) && matches!(el.attr("type"), Some("result" | "error"))
        {
            return None;
        }
        let stanza = match Stanza::from_client(el, &self.jid) {
            Ok(s) => s,
            Err(Rejected::Stanza(reply)) => {
                self.writer.queue(&reply);
                return self.flush().await;
            }
            Err(Rejected::Stream(e)) => return Some(End::Error(e)),
            Err(Rejected::Ignore) => return None,
        };
        // RFC 3921 §3 session establishment, kept for old clients: a no-op.
        if stanza.kind == Kind::Iq && stanza.payload().is_some_and(|p| p.is("session", ns::SESSION)) && stanza.to.is_none() {
            let reply = stanza.iq_result(None);
            self.writer.queue(&reply.el);
            return self.flush().await;
        }
        router::from_client(&self.ctx, stanza).await;
        self.write_output().await
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
            for el in &direct {
                self.writer.queue(el);
                if self.writer.pending() > 256 * 1024
                    && let Some(end) = self.flush().await
                {
                    return Some(end);
                }
            }
            drop(direct);
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
        tokio::select! {
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
            End::Lost => return,
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

    /// Stanzas not known to be written (taken for a write that did not complete, or still
    /// queued) are rerouted, in order: messages find another resource or offline storage
    /// instead of being lost. A message of an unfinished write may have reached the client
    /// in part or in whole: it can arrive twice, never not at all.
    async fn reroute_queued(&mut self) {
        self.rx.close();
        let ctx = Ctx::rerouting(self.core.clone());
        let in_flight = std::mem::take(&mut self.in_flight);
        let queued = std::iter::from_fn(|| self.rx.try_recv().ok()).collect::<Vec<_>>();
        if !in_flight.is_empty() || !queued.is_empty() {
            tracing::debug!(in_flight = in_flight.len(), queued = queued.len(), "rerouting what was not written");
        }
        for el in in_flight.into_iter().chain(queued) {
            if let Some(stanza) = Stanza::from_stored(*el) && stanza.kind == Kind::Message {
                router::route(&ctx, stanza).await;
            }
        }
    }
}
