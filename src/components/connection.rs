//! One component's connection (XEP-0114 §3): the stream header, the handshake, then
//! stanzas both ways until either side ends the stream. One task owns the socket.

use std::sync::Arc;
use std::time::Duration;

use jid::Jid;
use tokio::io::ReadHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::handshake;
use crate::c2s::transport::{Transport, Writer};
use crate::core::Core;
use crate::modules::Ctx;
use crate::stanza::{Kind, Rejected, Stanza, StreamCondition, StreamError, new_id};
use crate::xml::{self, Element, Input, Limits, ReadStats, StreamEvent, StreamReader, XmlError, ns};

type Reader = StreamReader<ReadHalf<Transport>>;

/// Time a component has from connecting to the end of its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// A write to the component that makes no progress this long ends the connection.
const WRITE_STALL: Duration = Duration::from_secs(30);
/// Time given to the last words (a stream error, the closing tag) before the socket closes.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// After this long without a byte from the component (whitespace counts) the server pings
/// it (XEP-0199)...
const PING_AFTER: Duration = Duration::from_secs(300);
/// ...and a component that then sends nothing for this long is taken as gone, so that a
/// dead connection does not keep its domain (a second connection is refused meanwhile).
const PING_TIMEOUT: Duration = Duration::from_secs(60);
/// Queued stanzas written in one go.
const BATCH: usize = 64;

/// How a stream ends.
enum End {
    /// With this stream error (our header is out).
    Error(StreamError),
    /// The component closed the stream (or sent a stream error): we close ours.
    Closed,
    /// The connection is gone: nothing can be written.
    Lost,
}

/// Serve one connection on a component listener.
pub(super) async fn serve(core: Core, tcp: TcpStream) {
    let (read, write) = tokio::io::split(Transport::Plain(tcp));
    let limits = Limits {
        // A component is trusted like a peer server: the same stanza size limit.
        max_stanza_bytes: core.config.s2s.max_stanza_size,
        content_as_client: Some(ns::COMPONENT_ACCEPT),
        ..Limits::default()
    };
    let stats = ReadStats::new();
    let mut reader = Box::new(StreamReader::new(Input::new(read, stats.clone()), limits));
    let mut writer = Writer::new(write, WRITE_STALL);
    let stream_id = new_id();
    let domain = match negotiate(&core, &mut reader, &mut writer, &stream_id).await {
        Ok(domain) => domain,
        Err(end) => {
            if let End::Error(e) = &end {
                tracing::info!(error = %e, "component refused");
            }
            return finish(&mut writer, end).await;
        }
    };
    let (id, mut queue) = match core.components.attach(&domain) {
        Ok(attached) => attached,
        Err(super::AlreadyConnected) => {
            // Prosody's rule: the connection that holds the domain keeps it (a second one
            // would otherwise take the traffic of a working component away).
            tracing::warn!("a second connection for a component already connected: refused");
            let e = StreamError::new(StreamCondition::Conflict).with_text(format!("a component is already connected for {domain}; close it first"));
            return finish(&mut writer, End::Error(e)).await;
        }
    };
    // XEP-0114 §3: an empty <handshake/> acknowledges success.
    writer.queue_raw(b"<handshake/>");
    if writer.flush().await.is_err() {
        core.components.detach(&domain, id);
        return;
    }
    tracing::info!("component connected");
    let ctx = Ctx::new(core.clone());
    let mut connection = Connection { core: core.clone(), ctx: ctx.clone(), domain: domain.clone(), writer, stats, ping: None };
    let end = connection.run(reader, &mut queue).await;
    // Nothing more is routed here from now on; then the stream is closed, and what was still
    // queued for the component is answered as for a component that is not connected.
    core.components.detach(&domain, id);
    match &end {
        End::Error(e) => tracing::info!(error = %e, "component disconnected"),
        End::Closed => tracing::info!("component disconnected: it closed the stream"),
        End::Lost => tracing::info!("component disconnected: the connection was lost"),
    }
    finish(&mut connection.writer, end).await;
    queue.close();
    while let Ok(stanza) = queue.try_recv() {
        super::unavailable(&ctx, stanza, &domain).await;
    }
}

/// Read the stream header and the handshake (XEP-0114 §3): the component's domain once it
/// has proved the secret configured for it. Every error after the header was read is sent
/// after our own header (RFC 6120 §4.9.1.2, which §3 asks for).
async fn negotiate(core: &Core, reader: &mut Reader, writer: &mut Writer, stream_id: &str) -> Result<String, End> {
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let read = read_before(core, reader, deadline).await.and_then(|event| match event {
        StreamEvent::Open(header) => Ok(header),
        _ => Err(End::Error(StreamError::new(StreamCondition::NotWellFormed).with_text("expected a stream header"))),
    });
    let header = match read {
        Ok(header) => header,
        Err(End::Error(e)) => {
            writer.queue_raw(&stream_header(&core.config.domains[0], stream_id));
            return Err(End::Error(e));
        }
        Err(end) => return Err(end),
    };
    let requested = header.attr("to").unwrap_or_default().to_string();
    let domain = domain_of(&requested).filter(|d| core.components.serves(d));
    // §3: the header's `from` is the component's domain; for a name not served, the
    // server's own (as RFC 6120's examples of header errors write it).
    writer.queue_raw(&stream_header(domain.as_deref().unwrap_or(&core.config.domains[0]), stream_id));
    if !header.is("stream", ns::STREAMS) {
        return Err(End::Error(StreamError::new(StreamCondition::InvalidNamespace).with_text("expected <stream:stream> in http://etherx.jabber.org/streams")));
    }
    if reader.default_namespace().as_deref() != Some(ns::COMPONENT_ACCEPT) {
        // §3: a namespace the server does not support (jabber:component:connect, the other
        // method, is the server's to initiate and is not implemented).
        return Err(End::Error(StreamError::new(StreamCondition::InvalidNamespace).with_text("this port takes jabber:component:accept streams (XEP-0114)")));
    }
    let Some(domain) = domain else {
        let text = if requested.is_empty() { "the stream header has no 'to': it names the component's domain".to_string() } else { format!("no component is configured for {requested:?} ([components.domains])") };
        return Err(End::Error(StreamError::new(StreamCondition::HostUnknown).with_text(text)));
    };
    tracing::Span::current().record("domain", domain.as_str());
    if writer.flush().await.is_err() {
        return Err(End::Lost);
    }
    let el = match read_before(core, reader, deadline).await? {
        StreamEvent::Element(el) => el,
        StreamEvent::Close => return Err(End::Closed),
        StreamEvent::Open(_) => return Err(End::Error(StreamError::new(StreamCondition::NotWellFormed).with_text("a second stream header"))),
    };
    if el.is("error", ns::STREAMS) {
        tracing::info!("the component ended the stream: {}", describe_stream_error(&el));
        return Err(End::Closed);
    }
    // The stream's content namespace is read as jabber:client (see `Limits`).
    if !el.is("handshake", ns::CLIENT) {
        return Err(End::Error(StreamError::new(StreamCondition::NotAuthorized).with_text(format!("expected <handshake/>, got <{}/>", el.name()))));
    }
    let secret = core.components.secret(&domain).expect("a served component has a secret");
    if !handshake::verifies(&el.text(), stream_id, &secret.0) {
        return Err(End::Error(
            StreamError::new(StreamCondition::NotAuthorized).with_text(format!("the handshake does not match the secret configured for {domain}")),
        ));
    }
    Ok(domain)
}

/// The next event before `deadline` (or shutdown).
async fn read_before(core: &Core, reader: &mut Reader, deadline: Instant) -> Result<StreamEvent, End> {
    tokio::select! {
        _ = core.shutdown.cancelled() => Err(End::Error(shutdown_error())),
        read = tokio::time::timeout_at(deadline, reader.next()) => match read {
            Err(_) => Err(End::Error(
                StreamError::new(StreamCondition::ConnectionTimeout).with_text(format!("no handshake within {} s", HANDSHAKE_TIMEOUT.as_secs())),
            )),
            Ok(Ok(event)) => Ok(event),
            Ok(Err(XmlError::Eof | XmlError::Io(_))) => Err(End::Lost),
            Ok(Err(e)) => Err(End::Error(e.into())),
        },
    }
}

fn shutdown_error() -> StreamError {
    StreamError::new(StreamCondition::SystemShutdown).with_text("the server is shutting down")
}

/// A domain as the stream header names it, normalised as the config's are.
fn domain_of(text: &str) -> Option<String> {
    match jid::BareJid::new(text) {
        Ok(j) if j.node().is_none() => Some(j.domain().as_str().to_string()),
        _ => None,
    }
}

/// Our stream header (XEP-0114 Example 2): without `version`, as the protocol predates
/// XMPP 1.0's stream features and none are offered.
fn stream_header(from: &str, id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(200);
    out.extend_from_slice(b"<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='");
    out.extend_from_slice(ns::COMPONENT_ACCEPT.as_bytes());
    out.extend_from_slice(b"' from='");
    xml::escape_attr(&mut out, from);
    out.extend_from_slice(b"' id='");
    xml::escape_attr(&mut out, id);
    out.extend_from_slice(b"'>");
    out
}

/// `<stream:error/>`'s condition and text, for the log.
fn describe_stream_error(el: &Element) -> String {
    let condition = el.children().find(|c| c.ns() == ns::XMPP_STREAMS && c.name() != "text").map(|c| c.name().to_string());
    let text = el.get_child("text", ns::XMPP_STREAMS).map(|t| t.text());
    match (condition, text) {
        (Some(c), Some(t)) => format!("{c} ({t})"),
        (Some(c), None) => c,
        (None, Some(t)) => t,
        (None, None) => "no reason given".into(),
    }
}

/// Write the stream's last words, if any, and close the socket.
async fn finish(writer: &mut Writer, end: End) {
    match end {
        End::Error(e) => {
            writer.queue(&e.to_element());
            writer.queue_raw(b"</stream:stream>");
        }
        End::Closed => writer.queue_raw(b"</stream:stream>"),
        End::Lost => {}
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, writer.flush()).await;
    writer.shutdown().await;
}

/// The next event from the component. One such future lives across the iterations of the
/// connection's loop: quick-xml's read is not cancel-safe.
async fn read_next(mut reader: Box<Reader>) -> (Box<Reader>, Result<StreamEvent, XmlError>) {
    if let Err(e) = reader.wait_for_input().await {
        return (reader, Err(e));
    }
    let event = reader.next().await;
    (reader, event)
}

/// An authenticated component's stream.
struct Connection {
    core: Core,
    ctx: Ctx,
    domain: String,
    writer: Writer,
    stats: Arc<ReadStats>,
    /// The server's ping waiting for the component: its id, and when it was sent.
    ping: Option<(String, Instant)>,
}

impl Connection {
    async fn run(&mut self, reader: Box<Reader>, queue: &mut mpsc::Receiver<Stanza>) -> End {
        let read = read_next(reader);
        tokio::pin!(read);
        // Moved only when it fires: a stream woken for every stanza would otherwise set and
        // clear a timer each time.
        let timer = tokio::time::sleep(PING_AFTER);
        tokio::pin!(timer);
        loop {
            tokio::select! {
                biased;
                _ = self.core.shutdown.cancelled() => return End::Error(shutdown_error()),
                queued = queue.recv() => {
                    // The sender lives in the registry until this connection leaves it.
                    let Some(stanza) = queued else { return End::Lost };
                    self.writer.queue(&stanza.el);
                    for _ in 1..BATCH {
                        match queue.try_recv() {
                            Ok(stanza) => self.writer.queue(&stanza.el),
                            Err(_) => break,
                        }
                    }
                    if let Err(e) = self.writer.flush().await {
                        tracing::info!(error = %e, "writing to the component failed");
                        return End::Lost;
                    }
                }
                (reader, event) = &mut read => {
                    read.set(read_next(reader));
                    match event {
                        Ok(StreamEvent::Element(el)) => {
                            // Boxed: routing's state is large and exists only per stanza.
                            if let Some(end) = Box::pin(self.element(el)).await {
                                return end;
                            }
                        }
                        Ok(StreamEvent::Close) => return End::Closed,
                        Ok(StreamEvent::Open(_)) => {
                            return End::Error(StreamError::new(StreamCondition::NotWellFormed).with_text("a second stream header"));
                        }
                        Err(XmlError::Eof | XmlError::Io(_)) => return End::Lost,
                        Err(e) => return End::Error(e.into()),
                    }
                }
                _ = &mut timer => {
                    if let Some(end) = self.check_alive().await {
                        return end;
                    }
                    timer.as_mut().reset(self.next_check());
                }
            }
        }
    }

    /// One element from the component: a stanza from its domain (XEP-0114 §3), routed like
    /// any other, with its addresses as the component wrote them.
    async fn element(&mut self, el: Element) -> Option<End> {
        if el.is("error", ns::STREAMS) {
            tracing::info!("the component ended the stream: {}", describe_stream_error(&el));
            return Some(End::Closed);
        }
        // The answer to our ping needs nothing else.
        if let Some((id, _)) = &self.ping
            && el.is("iq", ns::CLIENT)
            && el.attr("id") == Some(id.as_str())
            && matches!(el.attr("type"), Some("result" | "error"))
        {
            self.ping = None;
            return None;
        }
        if el.has_ns(ns::CLIENT) && Kind::named(el.name()).is_some() {
            // §3: "All stanzas sent to the server MUST possess a 'from' attribute and a 'to'
            // attribute".
            let missing = |name| el.attr(name).is_none_or(str::is_empty);
            if missing("from") || missing("to") {
                let e = StreamError::new(StreamCondition::ImproperAddressing).with_text("a stanza from a component needs both 'from' and 'to' (XEP-0114 §3)");
                return Some(End::Error(e));
            }
            // §3: "The domain identifier portion of the JID contained in the 'from'
            // attribute MUST match the hostname of the component". Checked before anything
            // is answered, so that no error goes to a forged address.
            let from = el.attr("from").unwrap_or_default();
            let at_domain = Jid::new(from).is_ok_and(|j| j.domain().as_str() == self.domain);
            if !at_domain {
                let e = StreamError::new(StreamCondition::InvalidFrom).with_text(format!("{from:?} is not at {}, this component's domain", self.domain));
                return Some(End::Error(e));
            }
        }
        let stanza = match Stanza::from_server(el) {
            Ok(stanza) => stanza,
            Err(Rejected::Stream(e)) => return Some(End::Error(e)),
            Err(Rejected::Stanza(reply)) => {
                if let Some(reply) = Stanza::from_stored(reply) {
                    crate::router::route(&self.ctx, reply).await;
                }
                return None;
            }
            Err(Rejected::Ignore) => return None,
        };
        crate::router::route(&self.ctx, stanza).await;
        None
    }

    /// A quiet component is pinged; one that stays quiet after that is gone.
    async fn check_alive(&mut self) -> Option<End> {
        let now = Instant::now();
        if let Some((_, sent)) = &self.ping {
            let since = now.saturating_duration_since(*sent);
            if self.stats.idle() < since {
                // Something came since the ping: alive, whether it answered or not.
                self.ping = None;
            } else if since >= PING_TIMEOUT {
                let e = StreamError::new(StreamCondition::ConnectionTimeout)
                    .with_text(format!("nothing received for {} s, not even an answer to a ping", (PING_AFTER + PING_TIMEOUT).as_secs()));
                return Some(End::Error(e));
            }
        }
        if self.ping.is_none() && self.stats.idle() >= PING_AFTER {
            let id = format!("ping-{}", new_id());
            // From the served domain the component is under, else the first one.
            let server = self.core.config.domains.iter().find(|d| self.domain.strip_suffix(d.as_str()).is_some_and(|h| h.ends_with('.'))).unwrap_or(&self.core.config.domains[0]);
            let mut iq = xml::element("iq", ns::CLIENT, &[("type", "get"), ("id", &id), ("from", server), ("to", &self.domain)]);
            iq.append_child(Element::bare("ping", ns::PING));
            self.writer.queue(&iq);
            if self.writer.flush().await.is_err() {
                return Some(End::Lost);
            }
            self.ping = Some((id, now));
        }
        None
    }

    /// When to look again whether the component is alive.
    fn next_check(&self) -> Instant {
        match &self.ping {
            Some((_, sent)) => *sent + PING_TIMEOUT,
            None => Instant::now() + PING_AFTER.saturating_sub(self.stats.idle()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_the_xeps_example_2() {
        let header = String::from_utf8(stream_header("plays.shakespeare.lit", "3BF96D32")).unwrap();
        assert_eq!(
            header,
            "<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept' from='plays.shakespeare.lit' id='3BF96D32'>"
        );
    }

    #[test]
    fn header_domains_are_normalised() {
        assert_eq!(domain_of("Plays.Shakespeare.LIT").as_deref(), Some("plays.shakespeare.lit"));
        assert_eq!(domain_of("romeo@plays.shakespeare.lit"), None);
        assert_eq!(domain_of(""), None);
    }
}
