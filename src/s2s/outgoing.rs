//! An outgoing link: one task per domain pair that resolves the remote domain, connects,
//! negotiates TLS, authenticates by dialback, and then writes the pair's stanzas in order
//! until the link has been idle for `[s2s] idle_timeout`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use super::certs as certificates;
use super::dialback::{Body, Dialback, Kind, Outcome};
use super::stream::{self, Failure, Reader, Stream};
use super::S2s;
use super::resolve::Target;
use crate::c2s::transport::Transport;
use crate::core::Core;
use crate::modules::Ctx;
use crate::stanza::{Stanza, StreamCondition};
use crate::xml::{self, Element, StreamEvent, XmlError, ns};

/// The longest a single TCP connection attempt may take, within the link's setup time.
const CONNECT_ATTEMPT: Duration = Duration::from_secs(10);

pub(super) struct Link {
    pub s2s: Arc<S2s>,
    pub core: Core,
    pub local: String,
    pub remote: String,
}

impl Link {
    pub async fn run(self, rx: mpsc::Receiver<Stanza>) {
        let span = tracing::info_span!("s2s", direction = "out", local = %self.local, remote = %self.remote);
        self.live(rx).instrument(span).await
    }

    async fn live(self, mut rx: mpsc::Receiver<Stanza>) {
        let deadline = Instant::now() + Duration::from_secs(self.s2s.config.connect_timeout);
        let stream = tokio::select! {
            result = self.establish(deadline) => result,
            _ = self.core.shutdown.cancelled() => Err(Failure::timeout("the server is shutting down")),
        };
        match stream {
            Ok((stream, bidi)) => {
                tracing::info!(bidi, "link established");
                self.serve(stream, bidi, &mut rx).await;
                tracing::info!("link closed");
                self.reroute(rx).await
            }
            Err(failure) => {
                tracing::info!(reason = %failure.text, "link failed");
                self.s2s.remember_failure(&self.remote, &failure.to_error());
                self.bounce_all(rx, &failure).await
            }
        }
    }

    /// A stream to the remote domain, authenticated by SASL EXTERNAL when the peer accepts
    /// our certificate (XEP-0178), else by dialback if `[s2s] dialback` allows it. With
    /// dialback off, the peer's certificate must be valid for its domain too. `true` with the
    /// stream: it is bidirectional (XEP-0288).
    async fn establish(&self, deadline: Instant) -> Result<(Stream, bool), Failure> {
        let Opened { mut stream, id, features, certificate } = open(&self.s2s, &self.local, &self.remote, deadline, &mut log_step).await?;
        let (local, remote) = (self.local.as_str(), self.remote.as_str());
        let dialback = self.s2s.config.dialback;
        if let Err(why) = &certificate {
            if !dialback {
                stream.close().await;
                return Err(Failure::not_found(format!("{remote} cannot be trusted: {why}; [s2s] dialback = false accepts only servers with a valid certificate")));
            }
            tracing::debug!(reason = %why, "the peer's certificate is not verified; dialback proves its domain instead");
        }
        // XEP-0288 §2.2: after TLS (`open` has done it), before SASL or dialback; it goes
        // out with the first of those. No answer comes to it.
        let bidi = self.s2s.config.bidi && features.has_child("bidi", super::BIDI_FEATURE_NS);
        if bidi {
            stream.send(&Element::bare("bidi", super::BIDI_NS));
        }
        let refused = if offers_external(&features) {
            match sasl_external(stream, local, remote, self.s2s.config.max_stanza_size, deadline).await? {
                Ok(stream) => {
                    tracing::info!("authenticated by SASL EXTERNAL");
                    return Ok((stream, bidi));
                }
                Err((same_stream, why)) => {
                    stream = same_stream;
                    why
                }
            }
        } else {
            format!("{remote} does not offer SASL EXTERNAL for our certificate (does {remote} trust its issuer, and does it name {local}?)")
        };
        if !dialback {
            stream.close().await;
            return Err(Failure::not_found(format!("{refused}; [s2s] dialback = false turns off the other way in")));
        }
        tracing::debug!(reason = %refused, "not SASL EXTERNAL; trying dialback");
        self.dialback(&mut stream, &id, deadline).await?;
        tracing::info!(peer_certificate_verified = certificate.is_ok(), "authenticated by dialback");
        Ok((stream, bidi))
    }

    /// XEP-0220 §2.1.1: send our key for the pair and wait for the verdict.
    async fn dialback(&self, stream: &mut Stream, stream_id: &str, deadline: Instant) -> Result<(), Failure> {
        let remote = self.remote.as_str();
        let key = self.s2s.secret.key(remote, &self.local, stream_id);
        let request = Dialback { kind: Kind::Result, from: self.local.clone(), to: remote.to_string(), id: None, body: Body::Key(key) };
        stream.send_raw(&stream::dialback_bytes(&request));
        stream.flush(remote).await?;
        loop {
            let el = stream.element(deadline, remote).await?;
            let Some(Ok(answer)) = Dialback::parse(&el) else { continue };
            if answer.kind != Kind::Result || !answer.from.eq_ignore_ascii_case(remote) || answer.to != self.local {
                continue;
            }
            match answer.body {
                Body::Answer(Outcome::Valid) => return Ok(()),
                Body::Answer(Outcome::Invalid) => return Err(Failure::not_found(format!("{remote} did not accept our dialback key"))),
                // §2.4: not about the key; queued stanzas get remote-server-timeout.
                Body::Answer(Outcome::Error(e)) => return Err(Failure::timeout(format!("{remote} could not check our dialback key: {e}"))),
                Body::Key(_) => continue,
            }
        }
    }

    /// Write the pair's stanzas until the link is idle, closed, or the server stops. On a
    /// bidirectional stream, the peer's stanzas for the pair's reverse are taken too.
    async fn serve(&self, stream: Stream, bidi: bool, rx: &mut mpsc::Receiver<Stanza>) {
        let Stream { reader, mut writer } = stream;
        // XEP-0288 §2.2: the peer may send from the domain we connected to (the stream's
        // 'to') to ours. Its identity rests on what the link's set-up proved: its certificate
        // when valid for `remote`, else (dialback allowed) the DNS look-up we connected by,
        // which is what dialback trusts the receiving server with (XEP-0220 §1). See
        // xeps/xep-0288.md.
        let authorized = if bidi { HashSet::from([(self.remote.clone(), self.local.clone())]) } else { HashSet::new() };
        let read = next_event(reader);
        tokio::pin!(read);
        let idle = Duration::from_secs(self.s2s.config.idle_timeout);
        let remote = self.remote.as_str();
        loop {
            tokio::select! {
                biased;
                _ = self.core.shutdown.cancelled() => {
                    writer.queue(&crate::stanza::StreamError::new(StreamCondition::SystemShutdown).to_element());
                    break;
                }
                stanza = rx.recv() => {
                    let Some(stanza) = stanza else { break };
                    writer.queue(&addressed(stanza));
                    // What else waits goes in the same write.
                    for _ in 0..64 {
                        match rx.try_recv() {
                            Ok(stanza) => writer.queue(&addressed(stanza)),
                            Err(_) => break,
                        }
                    }
                    if let Err(e) = writer.flush().await {
                        tracing::info!(error = %e, "writing to {remote} failed");
                        return;
                    }
                }
                (reader, event) = &mut read => {
                    match event {
                        Ok(StreamEvent::Element(el)) if el.is("error", ns::STREAMS) => {
                            tracing::info!("{remote} ended the stream: {}", stream::describe_stream_error(&el));
                            return;
                        }
                        Ok(StreamEvent::Element(el)) if bidi => {
                            if let Some(db) = Dialback::parse(&el) {
                                if let Some(answer) = db.ok().and_then(|db| self.verify_answer(&db)) {
                                    writer.queue_raw(&stream::dialback_bytes(&answer));
                                    if writer.flush().await.is_err() {
                                        return;
                                    }
                                }
                            } else if let Err(error) = super::incoming::stanza(&self.core, &authorized, el).await {
                                tracing::info!(%error, "ending the stream");
                                writer.queue(&error.to_element());
                                break;
                            }
                        }
                        // Without XEP-0288 nothing but dialback answers for other pairs comes
                        // this way (RFC 6120 §2.4: a stream carries stanzas one way).
                        Ok(StreamEvent::Element(_)) => {}
                        Ok(StreamEvent::Close) => break,
                        Ok(StreamEvent::Open(_)) | Err(_) => return,
                    }
                    read.set(next_event(reader));
                }
                _ = tokio::time::sleep(idle) => {
                    tracing::debug!("idle; closing");
                    break;
                }
            }
        }
        let mut footer = Vec::new();
        xml::stream_footer(&mut footer);
        writer.queue_raw(&footer);
        let _ = writer.flush().await;
        writer.shutdown().await;
    }

    /// XEP-0220 §2.2.2 on a bidirectional stream: the peer, as a receiving server, may ask us
    /// (the authoritative server) about a key received on another connection (XEP-0288 §2.2:
    /// never on the one the request came on). Other dialback elements are not for this link.
    fn verify_answer(&self, db: &Dialback) -> Option<Dialback> {
        let Body::Key(key) = &db.body else { return None };
        if db.kind != Kind::Verify || !db.from.eq_ignore_ascii_case(&self.remote) {
            return None;
        }
        let local = db.to.to_ascii_lowercase();
        if !S2s::is_hosted(&self.core, &local) {
            return Some(db.answer(Outcome::Error(crate::stanza::StanzaError::item_not_found().with_text(format!("{local} is not served here")))));
        }
        let valid = self.s2s.secret.verifies(key, &self.remote, &local, db.id.as_deref().unwrap_or_default());
        tracing::info!(%local, valid, "answered a dialback verification on a bidirectional link");
        Some(db.answer(if valid { Outcome::Valid } else { Outcome::Invalid }))
    }

    /// Out of the map, so that no more is queued here; what still came goes by a new link.
    async fn reroute(&self, mut rx: mpsc::Receiver<Stanza>) {
        self.leave();
        rx.close();
        let ctx = Ctx::new(self.core.clone());
        while let Some(stanza) = rx.recv().await {
            self.s2s.send(&ctx, stanza).await;
        }
    }

    /// RFC 6120 §10.4.3: what could not be sent goes back to its sender with the reason.
    async fn bounce_all(&self, mut rx: mpsc::Receiver<Stanza>, failure: &Failure) {
        self.leave();
        rx.close();
        let ctx = Ctx::new(self.core.clone());
        let error = failure.to_error();
        while let Some(stanza) = rx.recv().await {
            crate::router::bounce(&ctx, &stanza, error.clone()).await;
        }
    }

    fn leave(&self) {
        self.s2s.links.lock().unwrap().remove(&(self.local.clone(), self.remote.clone()));
    }
}

/// What a link's setup reports step by step: the log (at debug level) for a link, the
/// admin's terminal for `starling check s2s`.
pub(super) type Report<'a> = dyn FnMut(String) + Send + 'a;

fn log_step(step: String) {
    tracing::debug!("{step}");
}

/// Where to connect for `remote`: `[s2s.targets]` if it names the domain, else DNS (RFC 6120
/// §3.2, XEP-0368), in the order to try.
async fn targets(s2s: &S2s, remote: &str, report: &mut Report<'_>) -> Vec<Target> {
    if let Some(configured) = s2s.config.targets.get(remote) {
        report(format!("DNS: not asked, [s2s.targets] names {remote}: {}", configured.join(", ")));
        return configured
            .iter()
            .filter_map(|t| crate::config::parse_s2s_target(t))
            .map(|(host, port, direct_tls)| Target { host: host.to_string(), port, direct_tls })
            .collect();
    }
    let resolution = s2s.resolver.targets(remote).await;
    for step in resolution.steps {
        report(format!("DNS: {step}"));
    }
    resolution.targets
}

/// A stream from `local` to `remote`, not yet authenticated.
pub(super) struct Opened {
    pub stream: Stream,
    /// The id the remote side gave its stream (dialback keys are made with it).
    pub id: String,
    /// The stream features it offered.
    pub features: Element,
    /// Whether its certificate is valid for `remote` (RFC 6125); `Err` says why not.
    pub certificate: Result<(), String>,
}

/// A stream from `local` to `remote`, with TLS where it can be had (required by `[s2s]
/// require_encryption`), not yet authenticated: each target in turn, each of its addresses
/// in turn (looked up only when its turn comes), until one works.
pub(super) async fn open(s2s: &S2s, local: &str, remote: &str, deadline: Instant, report: &mut Report<'_>) -> Result<Opened, Failure> {
    let targets = targets(s2s, remote, report).await;
    let mut last = Failure::not_found(format!("{remote} has no server: DNS names no target for it"));
    for target in targets {
        if Instant::now() >= deadline {
            break;
        }
        let addrs = match tokio::time::timeout_at(deadline, s2s.resolver.addresses(&target.host, target.port)).await {
            Ok(Ok(addrs)) => addrs,
            Ok(Err(e)) => {
                last = Failure::not_found(format!("{remote} cannot be found: {e}"));
                report(format!("target {}:{}: {e}", target.host, target.port));
                continue;
            }
            Err(_) => return Err(Failure::timeout(format!("looking up {} for {remote} took too long", target.host))),
        };
        for addr in addrs {
            if Instant::now() >= deadline {
                break;
            }
            report(format!("target {}:{} ({}): connecting to {addr}", target.host, target.port, if target.direct_tls { "direct TLS" } else { "STARTTLS" }));
            match open_at(s2s, local, remote, addr, target.direct_tls, deadline, report).await {
                Ok(opened) => return Ok(opened),
                Err(failure) => {
                    tracing::info!(%addr, reason = %failure.text, "could not use this address");
                    report(format!("failed: {}", failure.text));
                    last = failure;
                }
            }
        }
    }
    Err(last)
}

async fn open_at(s2s: &S2s, local: &str, remote: &str, addr: SocketAddr, direct_tls: bool, deadline: Instant, report: &mut Report<'_>) -> Result<Opened, Failure> {
    let started = Instant::now();
    let attempt = deadline.min(Instant::now() + CONNECT_ATTEMPT);
    let tcp = match tokio::time::timeout_at(attempt, TcpStream::connect(addr)).await {
        Err(_) => return Err(Failure::timeout(format!("connecting to {remote} at {addr} timed out"))),
        Ok(Err(e)) => return Err(Failure::not_found(format!("connecting to {remote} at {addr} failed: {e}"))),
        Ok(Ok(tcp)) => tcp,
    };
    let _ = tcp.set_nodelay(true);
    report(format!("TCP: connected in {} ms", started.elapsed().as_millis()));
    let mut transport = Transport::Plain(tcp);
    if direct_tls {
        transport = stream::connect_tls(transport, s2s.client_tls(local), remote, deadline).await?;
    }
    loop {
        let secure = transport.is_tls();
        let certificate = if secure {
            let chain = transport.peer_certificates();
            report(format!("TLS: {}", transport.describe_tls()));
            report(certificates::describe_chain(&chain));
            let verdict = s2s.trust.check(&chain, remote);
            match &verdict {
                Ok(()) => report(format!("certificate: valid for {remote} (trusted: {})", s2s.trust.description)),
                Err(why) => report(format!("certificate: not valid for {remote}: {why}")),
            }
            verdict
        } else {
            Err("the stream is not encrypted".to_string())
        };
        let mut stream = Stream::new(transport, s2s.config.max_stanza_size);
        let (id, features) = restart(&mut stream, local, remote, deadline).await?;
        report(format!("stream features: {}", describe_features(&features)));
        if !secure {
            if features.has_child("starttls", ns::TLS) {
                stream.send(&Element::bare("starttls", ns::TLS));
                stream.flush(remote).await?;
                let answer = stream.element(deadline, remote).await?;
                if !answer.is("proceed", ns::TLS) {
                    return Err(Failure::not_found(format!("{remote} refused STARTTLS")));
                }
                transport = stream::connect_tls(stream.into_transport(), s2s.client_tls(local), remote, deadline).await?;
                continue;
            }
            if s2s.config.require_encryption {
                stream.close().await;
                return Err(Failure::not_found(format!("{remote} does not offer TLS, which [s2s] require_encryption asks for")));
            }
        }
        return Ok(Opened { stream, id, features, certificate });
    }
}

/// Send our stream header and read theirs and the features that follow (RFC 6120 §4.3):
/// their stream's id and the features.
async fn restart(stream: &mut Stream, local: &str, remote: &str, deadline: Instant) -> Result<(String, Element), Failure> {
    stream.send_raw(&stream::header(local, Some(remote), ""));
    stream.flush(remote).await?;
    let id = match stream.read(deadline, remote).await? {
        StreamEvent::Open(header) => check_header(&header, remote)?,
        _ => return Err(Failure::not_found(format!("{remote} did not open a stream"))),
    };
    let features = stream.element(deadline, remote).await?;
    if !features.is("features", ns::STREAMS) {
        return Err(Failure::not_found(format!("{remote} sent no stream features (an XMPP 1.0 server sends them)")));
    }
    Ok((id, features))
}

/// What a features element offers, in words: "STARTTLS (required), SASL EXTERNAL, dialback".
pub(super) fn describe_features(features: &Element) -> String {
    let mut offered = Vec::new();
    if let Some(tls) = features.get_child("starttls", ns::TLS) {
        offered.push(if tls.has_child("required", ns::TLS) { "STARTTLS (required)".to_string() } else { "STARTTLS".to_string() });
    }
    if let Some(mechanisms) = features.get_child("mechanisms", ns::SASL) {
        let names: Vec<String> = mechanisms.children().filter(|c| c.is("mechanism", ns::SASL)).map(|c| format!("SASL {}", c.text().trim())).collect();
        offered.push(if names.is_empty() { "SASL with no mechanism".to_string() } else { names.join(", ") });
    }
    if features.has_child("dialback", super::dialback::FEATURE_NS) {
        offered.push("dialback".into());
    }
    if features.has_child("bidi", "urn:xmpp:features:bidi") {
        offered.push("bidi (XEP-0288)".into());
    }
    if offered.is_empty() { "none".into() } else { offered.join(", ") }
}

pub(super) fn offers_external(features: &Element) -> bool {
    features.get_child("mechanisms", ns::SASL).is_some_and(|m| m.children().any(|c| c.is("mechanism", ns::SASL) && c.text().trim() == "EXTERNAL"))
}

/// XEP-0178 §2 steps 10-12: authenticate as `local` with our certificate, then restart the
/// stream (RFC 6120 §6.4.6). The inner `Err` gives the stream back with the peer's reason,
/// for dialback to try on it.
pub(super) async fn sasl_external(mut stream: Stream, local: &str, remote: &str, max_stanza: usize, deadline: Instant) -> Result<Result<Stream, (Stream, String)>, Failure> {
    use base64::Engine;
    // The authorization identity: XEP-0178 says to send it, for servers that rely on it.
    let mut auth = xml::element("auth", ns::SASL, &[("mechanism", "EXTERNAL")]);
    auth.append_text(base64::engine::general_purpose::STANDARD.encode(local));
    stream.send(&auth);
    stream.flush(remote).await?;
    let answer = stream.element(deadline, remote).await?;
    if answer.is("failure", ns::SASL) {
        let condition = answer.children().find(|c| c.ns() == ns::SASL && c.name() != "text").map(|c| c.name().to_string()).unwrap_or_else(|| "no condition".into());
        let text = answer.get_child("text", ns::SASL).map(|t| format!(" ({})", t.text())).unwrap_or_default();
        return Ok(Err((stream, format!("{remote} refused our certificate for {local}: {condition}{text}"))));
    }
    if !answer.is("success", ns::SASL) {
        return Err(Failure::not_found(format!("{remote} answered SASL EXTERNAL with <{}/>", answer.name())));
    }
    // Nothing follows <success/> before our new header: the transport holds no unread bytes.
    let mut stream = Stream::new(stream.into_transport(), max_stanza);
    restart(&mut stream, local, remote, deadline).await?;
    Ok(Ok(stream))
}

/// RFC 6120 §4.7: their answer is a stream, from the domain we asked for, with an id (which
/// the dialback key is made with).
fn check_header(header: &Element, remote: &str) -> Result<String, Failure> {
    if !header.is("stream", ns::STREAMS) {
        return Err(Failure::not_found(format!("{remote} answered with something other than an XMPP stream")));
    }
    if let Some(from) = header.attr("from")
        && !from.eq_ignore_ascii_case(remote)
    {
        return Err(Failure::not_found(format!("{remote} answered as {from}")));
    }
    header.attr("id").filter(|id| !id.is_empty()).map(str::to_string).ok_or_else(|| Failure::not_found(format!("{remote} gave its stream no id")))
}

/// XEP-0220 §2.1.2: as the receiving server, ask the authoritative server of `remote`
/// whether it made `key` for our stream `stream_id`, on a connection of its own (closed
/// after the answer, as §2.1.2's note suggests). `Ok(true)`: valid.
pub(super) async fn verify_key(s2s: &S2s, local: &str, remote: &str, stream_id: &str, key: &str, deadline: Instant) -> Result<bool, Failure> {
    let Opened { mut stream, .. } = open(s2s, local, remote, deadline, &mut log_step).await?;
    let request = Dialback { kind: Kind::Verify, from: local.to_string(), to: remote.to_string(), id: Some(stream_id.to_string()), body: Body::Key(key.to_string()) };
    stream.send_raw(&stream::dialback_bytes(&request));
    stream.flush(remote).await?;
    let verdict = loop {
        let el = stream.element(deadline, remote).await?;
        let Some(Ok(answer)) = Dialback::parse(&el) else { continue };
        if answer.kind != Kind::Verify || answer.id.as_deref() != Some(stream_id) || !answer.from.eq_ignore_ascii_case(remote) || answer.to != local {
            continue;
        }
        match answer.body {
            Body::Answer(Outcome::Valid) => break Ok(true),
            Body::Answer(Outcome::Invalid) => break Ok(false),
            Body::Answer(Outcome::Error(e)) => break Err(Failure::timeout(format!("{remote} could not check the key: {e}"))),
            Body::Key(_) => continue,
        }
    };
    stream.close().await;
    verdict
}

/// The element of a stanza with its addresses on it (inside the server they travel beside
/// it).
pub(super) fn addressed(stanza: Stanza) -> Element {
    let Stanza { from, to, mut el, .. } = stanza;
    el.set_attr("from", from.as_str());
    if let Some(to) = to {
        el.set_attr("to", to.as_str());
    }
    el
}

/// The next event from the peer; one future lives across the loop's turns (the reader's
/// read is not cancel-safe).
async fn next_event(mut reader: Reader) -> (Reader, Result<StreamEvent, XmlError>) {
    let event = reader.next().await;
    (reader, event)
}
