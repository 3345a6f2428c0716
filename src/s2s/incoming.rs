//! Incoming server-to-server streams (RFC 6120 §4, §5, §13; XEP-0220 §2.2): TLS, dialback
//! as the receiving server (the key checked with the authoritative server) and as the
//! authoritative one (answering `<db:verify/>`), then stanzas from the domain pairs the
//! stream has authenticated, routed like local ones.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::dialback::{Body, Dialback, Kind, Outcome};
use super::outgoing;
use super::stream::{self, Failure, Stream};
use super::S2s;
use crate::c2s::Bucket;
use crate::c2s::transport::{Transport, Writer};
use crate::core::Core;
use crate::modules::Ctx;
use crate::stanza::{Condition, Rejected, Stanza, StanzaError, StreamCondition, StreamError, new_id};
use crate::tls::TlsStream;
use crate::xml::{self, Element, StreamEvent, ns};
use rustls_pki_types::CertificateDer;

/// Time a peer has for TLS and its first dialback request.
const NEGOTIATION: Duration = Duration::from_secs(60);
/// Dialback requests one stream may have waiting for the authoritative server at once.
const MAX_PENDING_VERIFICATIONS: usize = 16;

/// Accept server-to-server connections until shutdown.
pub async fn accept_loop(core: Core, s2s: Arc<S2s>, listener: TcpListener, direct_tls: bool, connections: TaskTracker) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = core.shutdown.cancelled() => return,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                let span = tracing::info_span!("s2s", direction = "in", %peer);
                connections.spawn(serve(core.clone(), s2s.clone(), tcp, peer, direct_tls).instrument(span));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a server connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve(core: Core, s2s: Arc<S2s>, tcp: TcpStream, peer: SocketAddr, direct_tls: bool) {
    let Some(_slot) = s2s.admit(peer.ip()) else {
        tracing::info!("refused: too many server streams from this address");
        if !direct_tls {
            // A clear answer where one can be given: the header, then the error (RFC 6120
            // §4.9.1.1).
            let mut stream = Stream::new(Transport::Plain(tcp), 4096);
            stream.send_raw(&stream::header(&core.config.domains[0], None, &new_id()));
            let text = format!("more than {} server streams from your address", s2s.config.max_connections_per_ip);
            stream.fail(StreamError::new(StreamCondition::PolicyViolation).with_text(text)).await;
        }
        return;
    };
    let deadline = Instant::now() + NEGOTIATION;
    let transport = if direct_tls {
        match tokio::time::timeout_at(deadline, TlsStream::accept(tcp, s2s.server_tls.clone())).await {
            Ok(Ok(tls)) => Transport::Tls(Box::new(tls)),
            _ => return,
        }
    } else {
        Transport::Plain(tcp)
    };
    let (verdicts, verdicts_rx) = mpsc::channel(MAX_PENDING_VERIFICATIONS);
    let (outbox, outbox_rx) = mpsc::channel(s2s.config.max_queue);
    let bucket = Bucket::new(s2s.config.max_bytes_per_second);
    let incoming = Incoming {
        core,
        s2s,
        peer,
        stream_id: new_id(),
        local: String::new(),
        external: None,
        sasl_failures: 0,
        bucket,
        authorized: HashSet::new(),
        verdicts,
        pending: 0,
        bidi: false,
        outbox,
        adopted: Vec::new(),
    };
    incoming.run(transport, verdicts_rx, outbox_rx, deadline).await
}

/// The authoritative server's answer about one key received on this stream.
struct Verdict {
    remote: String,
    local: String,
    outcome: Result<bool, Failure>,
}

struct Incoming {
    core: Core,
    s2s: Arc<S2s>,
    peer: SocketAddr,
    /// The id of our response stream (the last one, after TLS): dialback keys are made for it.
    stream_id: String,
    /// The local domain the stream was opened to (its header's `to`).
    local: String,
    /// The remote domain SASL EXTERNAL is offered for on this stream: the header's `from`,
    /// when the peer's certificate is valid for it (XEP-0178 step 9).
    external: Option<String>,
    sasl_failures: u32,
    /// `[s2s] max_bytes_per_second`: a peer over it is read more slowly.
    bucket: Bucket,
    /// (remote domain, local domain) pairs the peer may send stanzas for.
    authorized: HashSet<(String, String)>,
    verdicts: mpsc::Sender<Verdict>,
    pending: usize,
    /// XEP-0288: the peer asked for a bidirectional stream (after TLS, if there is TLS).
    bidi: bool,
    /// Stanzas for the peer on this stream, once it is bidirectional: the sender is the link
    /// of the pairs in `adopted` (in `S2s::links`).
    outbox: mpsc::Sender<Stanza>,
    /// The (local, remote) pairs whose link this stream is.
    adopted: Vec<(String, String)>,
}

/// How one element or event left the stream.
enum Next {
    Continue,
    StartTls,
    /// SASL succeeded: a new stream on the same transport (RFC 6120 §6.4.6).
    Restart,
    End,
}

impl Incoming {
    async fn run(mut self, transport: Transport, mut verdicts: mpsc::Receiver<Verdict>, mut outbox: mpsc::Receiver<Stanza>, deadline: Instant) {
        self.streams(transport, &mut verdicts, &mut outbox, deadline).await;
        self.release(outbox).await;
    }

    async fn streams(&mut self, mut transport: Transport, verdicts: &mut mpsc::Receiver<Verdict>, outbox: &mut mpsc::Receiver<Stanza>, deadline: Instant) {
        loop {
            let secure = transport.is_tls();
            let peer_certificates = transport.peer_certificates();
            let mut stream = Stream::new(transport, self.s2s.config.max_stanza_size);
            match self.open(&mut stream, secure, &peer_certificates, deadline).await {
                Ok(()) => {}
                Err(Some(error)) => return stream.fail(error).await,
                Err(None) => return,
            }
            match self.elements(&mut stream, secure, verdicts, outbox, deadline).await {
                Next::Restart => {
                    transport = stream.into_transport();
                    self.stream_id = new_id();
                }
                Next::StartTls => {
                    let tcp = match stream.into_transport() {
                        Transport::Plain(tcp) => tcp,
                        _ => return,
                    };
                    match tokio::time::timeout_at(deadline, TlsStream::accept(tcp, self.s2s.server_tls.clone())).await {
                        Ok(Ok(tls)) => transport = Transport::Tls(Box::new(tls)),
                        Ok(Err(e)) => return tracing::info!(error = %e, "TLS handshake failed"),
                        Err(_) => return tracing::info!("TLS handshake timed out"),
                    }
                    // RFC 6120 §5.4.3.3: a new stream, with a new id.
                    self.stream_id = new_id();
                    // XEP-0288 §2.2: bidi comes after TLS; one asked for before is forgotten
                    // (the peer asks again on the new stream, or the stream stays one way).
                    self.bidi = false;
                }
                Next::End | Next::Continue => return,
            }
        }
    }

    /// Read the peer's header, answer with ours and the features (RFC 6120 §4.3).
    async fn open(&mut self, stream: &mut Stream, secure: bool, peer_certificates: &[CertificateDer<'_>], deadline: Instant) -> Result<(), Option<StreamError>> {
        let peer = self.peer.to_string();
        let header = match stream.read(deadline, &peer).await {
            Ok(StreamEvent::Open(header)) => header,
            Ok(_) => return Err(Some(StreamError::new(StreamCondition::NotWellFormed))),
            Err(_) => return Err(None),
        };
        let to = header.attr("to").unwrap_or_default().to_ascii_lowercase();
        let from = header.attr("from").map(str::to_ascii_lowercase);
        let ours = if S2s::is_hosted(&self.core, &to) { to.clone() } else { self.core.config.domains[0].clone() };
        stream.send_raw(&stream::header(&ours, from.as_deref(), &self.stream_id));
        if !header.is("stream", ns::STREAMS) {
            return Err(Some(StreamError::new(StreamCondition::InvalidNamespace)));
        }
        if stream.reader.default_namespace().as_deref() != Some(ns::SERVER) {
            return Err(Some(StreamError::new(StreamCondition::InvalidNamespace).with_text("expected jabber:server")));
        }
        if !S2s::is_hosted(&self.core, &to) {
            return Err(Some(StreamError::new(StreamCondition::HostUnknown).with_text(format!("this server does not serve {to:?}"))));
        }
        if let Some(from) = &from
            && self.s2s.is_blocked(from)
        {
            return Err(Some(StreamError::new(StreamCondition::PolicyViolation).with_text("this server does not federate with your domain")));
        }
        self.local = to;
        self.external = None;
        let sasl_done = self.authorized.contains(&(from.clone().unwrap_or_default(), self.local.clone()));
        if secure && !sasl_done {
            // XEP-0178 step 9: EXTERNAL only for the domain the certificate names.
            let verdict = match &from {
                Some(from) => self.s2s.trust.check(peer_certificates, from).map(|()| from.clone()),
                None => Err("the stream header has no 'from'".to_string()),
            };
            match verdict {
                Ok(domain) => self.external = Some(domain),
                Err(why) if !self.s2s.config.dialback => {
                    tracing::info!(reason = %why, "refusing a server whose certificate is not valid");
                    let text = format!("your certificate cannot be verified ({why}), and this server accepts no dialback");
                    return Err(Some(StreamError::new(StreamCondition::PolicyViolation).with_text(text)));
                }
                Err(why) => tracing::debug!(reason = %why, "the peer's certificate is not verified; dialback only"),
            }
        }
        let mut features = Element::bare("features", ns::STREAMS);
        if self.external.is_some() {
            let mut mechanisms = Element::bare("mechanisms", ns::SASL);
            mechanisms.append_child(xml::text_element("mechanism", ns::SASL, "EXTERNAL"));
            features.append_child(mechanisms);
        }
        if !secure {
            let mut starttls = Element::bare("starttls", ns::TLS);
            if self.s2s.config.require_encryption {
                starttls.append_child(Element::bare("required", ns::TLS));
            }
            features.append_child(starttls);
        }
        if (secure || !self.s2s.config.require_encryption) && self.s2s.config.dialback {
            // XEP-0220 §2.4.1: dialback, with errors.
            let mut dialback = Element::bare("dialback", super::dialback::FEATURE_NS);
            dialback.append_child(Element::bare("errors", super::dialback::FEATURE_NS));
            features.append_child(dialback);
        }
        if self.s2s.config.bidi {
            // XEP-0288 §2.1: before and after TLS.
            features.append_child(Element::bare("bidi", super::BIDI_FEATURE_NS));
        }
        stream.send(&features);
        stream.flush(&peer).await.map_err(|_| None)
    }

    async fn elements(&mut self, stream: &mut Stream, secure: bool, verdicts: &mut mpsc::Receiver<Verdict>, outbox: &mut mpsc::Receiver<Stanza>, deadline: Instant) -> Next {
        let peer = self.peer.to_string();
        let shutdown = self.core.shutdown.clone();
        // A new stream counts its bytes from zero.
        self.bucket.counted = 0;
        loop {
            if let Some(until) = self.bucket.paused_until.take() {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    _ = shutdown.cancelled() => {}
                }
            }
            // Before the first domain pair is authenticated, the negotiation deadline holds.
            let until = if self.authorized.is_empty() && self.pending == 0 { deadline } else { Instant::now() + Duration::from_secs(self.s2s.config.idle_timeout) };
            let event = tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    stream.fail(StreamError::new(StreamCondition::SystemShutdown)).await;
                    return Next::End;
                }
                event = self.next_event(stream, verdicts, outbox, until, &peer) => event,
            };
            let event = match event {
                Ok(event) => event,
                Err(error) => {
                    stream.fail(error).await;
                    return Next::End;
                }
            };
            self.bucket.account(stream.reader.input().stats().total());
            let el = match event {
                Ok(StreamEvent::Element(el)) => el,
                Ok(StreamEvent::Close) => {
                    stream.close().await;
                    return Next::End;
                }
                Ok(StreamEvent::Open(_)) => {
                    stream.fail(StreamError::new(StreamCondition::NotWellFormed)).await;
                    return Next::End;
                }
                Err(failure) => {
                    tracing::debug!(reason = %failure.text, "stream ended");
                    if failure.condition == Condition::RemoteServerTimeout {
                        stream.fail(StreamError::new(StreamCondition::ConnectionTimeout)).await;
                    }
                    return Next::End;
                }
            };
            let next = match self.element(stream, secure, el).await {
                Ok(next) => next,
                Err(error) => {
                    tracing::info!(%error, "ending the stream");
                    stream.fail(error).await;
                    return Next::End;
                }
            };
            if !matches!(next, Next::Continue) {
                return next;
            }
            // What the element queued (answers, dialback results) is written by `next_event`
            // while the next element is read.
        }
    }

    /// The next event from the peer, by `until`. Meanwhile what is queued for the peer is
    /// written, the authoritative servers' verdicts are answered and, on a bidirectional
    /// stream, the stanzas for the peer are taken from the outbox: none of that cancels the
    /// read, which is not cancel-safe (a verdict arriving while a stanza is half read would
    /// otherwise lose what was read of it), and a peer slow to take our stanzas is still read
    /// from. `Err`: the stream ends with that error.
    async fn next_event(&mut self, stream: &mut Stream, verdicts: &mut mpsc::Receiver<Verdict>, outbox: &mut mpsc::Receiver<Stanza>, until: Instant, peer: &str) -> Result<Result<StreamEvent, Failure>, StreamError> {
        let idle = Duration::from_secs(self.s2s.config.idle_timeout);
        let Stream { reader, writer } = stream;
        let read = reader.next();
        tokio::pin!(read);
        let timeout = tokio::time::sleep_until(until);
        tokio::pin!(timeout);
        loop {
            let sending = !self.adopted.is_empty();
            tokio::select! {
                biased;
                read = &mut read => return Ok(stream::read_result(read, peer)),
                written = writer.flush(), if writer.pending() > 0 => {
                    if let Err(e) = written {
                        return Ok(Err(Failure::not_found(format!("writing to {peer} failed: {e}"))));
                    }
                }
                Some(verdict) = verdicts.recv() => {
                    self.pending -= 1;
                    self.verdict(writer, verdict)?;
                    // Before the first pair is authenticated, the negotiation deadline holds.
                    if !self.authorized.is_empty() || self.pending > 0 {
                        timeout.as_mut().reset(Instant::now() + idle);
                    }
                }
                Some(stanza) = outbox.recv(), if sending && writer.pending() < WRITE_AHEAD => {
                    writer.queue(&outgoing::addressed(stanza));
                    // A stream that carries our stanzas is not idle.
                    timeout.as_mut().reset(Instant::now() + idle);
                }
                _ = &mut timeout => return Ok(Err(Failure::timeout(format!("{peer} did not answer in time")))),
            }
        }
    }

    async fn element(&mut self, stream: &mut Stream, secure: bool, el: Element) -> Result<Next, StreamError> {
        if el.is("starttls", ns::TLS) {
            if secure {
                return Err(StreamError::new(StreamCondition::PolicyViolation).with_text("TLS is already on"));
            }
            stream.send(&Element::bare("proceed", ns::TLS));
            stream.flush(&self.peer.to_string()).await.map_err(|_| StreamError::new(StreamCondition::UndefinedCondition))?;
            return Ok(Next::StartTls);
        }
        if el.ns() == ns::SASL {
            if !secure {
                return Err(StreamError::new(StreamCondition::PolicyViolation).with_text("TLS comes before SASL"));
            }
            return self.sasl(stream, &el).await;
        }
        if let Some(db) = Dialback::parse(&el) {
            let db = db.map_err(|e| StreamError::new(StreamCondition::BadFormat).with_text(e.0))?;
            if !secure && self.s2s.config.require_encryption {
                return Err(StreamError::new(StreamCondition::PolicyViolation).with_text("TLS is required before dialback"));
            }
            return self.dialback(stream, db).map(|()| Next::Continue);
        }
        if el.is("error", ns::STREAMS) {
            tracing::info!("the peer ended the stream: {}", stream::describe_stream_error(&el));
            return Ok(Next::End);
        }
        if el.is("bidi", super::BIDI_NS) {
            if !self.s2s.config.bidi {
                return Err(StreamError::new(StreamCondition::UnsupportedFeature).with_text("bidirectional streams are not offered here ([s2s] bidi = false)"));
            }
            // XEP-0288 §2.2: "SHOULD" come before authentication; pairs authenticated before it
            // become bidirectional too.
            self.bidi = true;
            for (remote, local) in self.authorized.clone() {
                self.adopt(remote, local);
            }
            return Ok(Next::Continue);
        }
        stanza(&self.core, &self.authorized, el).await.map(|()| Next::Continue)
    }

    /// XEP-0178 steps 10-12 (RFC 6120 §6.4) as the receiving server: SASL EXTERNAL for the
    /// domain the stream's certificate was found valid for.
    async fn sasl(&mut self, stream: &mut Stream, el: &Element) -> Result<Next, StreamError> {
        use base64::Engine;
        let failure = |condition: &str, text: &str| {
            let mut failure = Element::bare("failure", ns::SASL);
            failure.append_child(Element::bare(condition, ns::SASL));
            failure.append_child(xml::text_element("text", ns::SASL, text));
            failure
        };
        let refusal = if !el.is("auth", ns::SASL) {
            // <abort/>, or a response to a challenge never sent.
            failure("aborted", "no authentication is under way")
        } else if el.attr("mechanism") != Some("EXTERNAL") || self.external.is_none() {
            failure("invalid-mechanism", "EXTERNAL is the one mechanism, offered when your certificate is valid for the stream's 'from'")
        } else {
            let domain = self.external.clone().unwrap_or_default();
            let text = el.text();
            let authzid = match text.trim() {
                "" | "=" => Ok(domain.clone()),
                encoded => base64::engine::general_purpose::STANDARD.decode(encoded).ok().and_then(|b| String::from_utf8(b).ok()).ok_or(()),
            };
            match authzid {
                Err(()) => failure("incorrect-encoding", "not base64 of a UTF-8 string"),
                Ok(authzid) if !authzid.eq_ignore_ascii_case(&domain) => failure("invalid-authzid", &format!("this stream can only authenticate {domain}")),
                Ok(_) => {
                    tracing::info!(remote = %domain, local = %self.local, "authenticated by SASL EXTERNAL");
                    self.authorized.insert((domain.clone(), self.local.clone()));
                    self.adopt(domain, self.local.clone());
                    self.external = None;
                    stream.send(&Element::bare("success", ns::SASL));
                    stream.flush(&self.peer.to_string()).await.map_err(|_| StreamError::new(StreamCondition::UndefinedCondition))?;
                    return Ok(Next::Restart);
                }
            }
        };
        self.sasl_failures += 1;
        if self.sasl_failures > 3 {
            return Err(StreamError::new(StreamCondition::PolicyViolation).with_text("too many failed authentication attempts"));
        }
        stream.send(&refusal);
        Ok(Next::Continue)
    }

    fn dialback(&mut self, stream: &mut Stream, db: Dialback) -> Result<(), StreamError> {
        let Body::Key(key) = &db.body else {
            // XEP-0220 §2.2: without XEP-0288, answers never come this way.
            return Err(StreamError::new(StreamCondition::UndefinedCondition).with_text("a dialback answer on an incoming stream"));
        };
        let local = db.to.to_ascii_lowercase();
        let remote = db.from.to_ascii_lowercase();
        if !S2s::is_hosted(&self.core, &local) {
            // §2.4.2: an unknown target is a dialback error, not a stream error.
            let answer = db.answer(Outcome::Error(StanzaError::item_not_found().with_text(format!("{local} is not served here"))));
            stream.send_raw(&stream::dialback_bytes(&answer));
            return Ok(());
        }
        match db.kind {
            // §2.2.2: as the authoritative server: did we make this key?
            Kind::Verify => {
                let id = db.id.as_deref().unwrap_or_default();
                let valid = self.s2s.secret.verifies(key, &remote, &local, id);
                tracing::info!(remote = %remote, local = %local, valid, "answered a dialback verification");
                let answer = db.answer(if valid { Outcome::Valid } else { Outcome::Invalid });
                stream.send_raw(&stream::dialback_bytes(&answer));
            }
            // §2.2.1: as the receiving server: ask the authoritative server of the claimed
            // domain, on a connection of its own.
            Kind::Result => {
                if self.s2s.is_blocked(&remote) {
                    let answer = db.answer(Outcome::Error(StanzaError::forbidden().with_text("this server does not federate with your domain")));
                    stream.send_raw(&stream::dialback_bytes(&answer));
                    return Ok(());
                }
                if self.pending >= MAX_PENDING_VERIFICATIONS {
                    return Err(StreamError::new(StreamCondition::PolicyViolation).with_text("too many dialback requests at once"));
                }
                self.pending += 1;
                let (s2s, verdicts, stream_id, key) = (self.s2s.clone(), self.verdicts.clone(), self.stream_id.clone(), key.clone());
                let deadline = Instant::now() + Duration::from_secs(self.s2s.config.connect_timeout);
                self.core.spawn(
                    async move {
                        let outcome = outgoing::verify_key(&s2s, &local, &remote, &stream_id, &key, deadline).await;
                        let _ = verdicts.send(Verdict { remote, local, outcome }).await;
                    }
                    .in_current_span(),
                );
            }
        }
        Ok(())
    }

    /// XEP-0220 §2.2.1 Step 4: tell the initiating server what the authoritative one said
    /// (queued on `writer`; `next_event` writes it).
    fn verdict(&mut self, writer: &mut Writer, verdict: Verdict) -> Result<(), StreamError> {
        let Verdict { remote, local, outcome } = verdict;
        let request = Dialback { kind: Kind::Result, from: remote.clone(), to: local.clone(), id: None, body: Body::Key(String::new()) };
        let outcome = match outcome {
            Ok(true) => {
                tracing::info!(%remote, %local, "dialback: authenticated");
                self.authorized.insert((remote.clone(), local.clone()));
                self.adopt(remote.clone(), local.clone());
                Outcome::Valid
            }
            Ok(false) => {
                tracing::warn!(%remote, %local, "dialback: the authoritative server did not confirm the key");
                Outcome::Invalid
            }
            Err(failure) => {
                tracing::info!(%remote, reason = %failure.text, "dialback: the authoritative server could not be asked");
                Outcome::Error(StanzaError::remote_server_timeout().with_text(failure.text))
            }
        };
        let invalid = outcome == Outcome::Invalid;
        writer.queue_raw(&stream::dialback_bytes(&request.answer(outcome)));
        // §2.2.1: a first attempt found invalid ends the stream.
        if invalid && self.authorized.is_empty() {
            return Err(StreamError::new(StreamCondition::NotAuthorized).with_text("dialback failed"));
        }
        Ok(())
    }

    /// XEP-0288 §2.2: once the peer is authenticated for (remote, local) on a bidirectional
    /// stream, stanzas from `local` to `remote` may go to it here ("the inverse of any domain
    /// pair"), if no other link carries them already.
    fn adopt(&mut self, remote: String, local: String) {
        if !self.bidi {
            return;
        }
        let key = (local, remote);
        if !self.adopted.contains(&key) && self.s2s.adopt(&key, &self.outbox) {
            tracing::info!(local = %key.0, remote = %key.1, "bidirectional: this stream is the link");
            self.adopted.push(key);
        }
    }

    /// The stream ended: its links are taken out of the map, and what was still queued for
    /// them goes by new links, in order (as an outgoing link's `reroute` does).
    async fn release(&mut self, mut outbox: mpsc::Receiver<Stanza>) {
        if self.adopted.is_empty() {
            return;
        }
        let left = self.s2s.hand_over(&self.core, &self.adopted, &self.outbox, &mut outbox);
        let ctx = Ctx::new(self.core.clone());
        for stanza in left {
            self.s2s.send(&ctx, stanza).await;
        }
    }
}

/// Bytes written ahead of the peer's reading before no more stanzas are taken from the
/// outbox (the outbox then fills, and `S2s::send` bounces what does not fit).
const WRITE_AHEAD: usize = 64 << 10;

/// RFC 6120 §13.1-§13.3 and §8.1.2.2: a stanza is routed only if its domains are a pair
/// the stream authenticated (`authorized`: (remote, local) pairs). The same checks for an
/// incoming stream and for the peer's stanzas on a bidirectional outgoing one (XEP-0288).
pub(super) async fn stanza(core: &Core, authorized: &HashSet<(String, String)>, el: Element) -> Result<(), StreamError> {
    if authorized.is_empty() {
        return Err(StreamError::new(StreamCondition::NotAuthorized).with_text("no domain is authenticated on this stream"));
    }
    let ctx = Ctx::new(core.clone());
    let stanza = match Stanza::from_server(el) {
        Ok(stanza) => stanza,
        Err(Rejected::Stream(e)) => return Err(e),
        Err(Rejected::Stanza(reply)) => {
            if let Some(reply) = Stanza::from_stored(reply) {
                crate::router::route(&ctx, reply).await;
            }
            return Ok(());
        }
        Err(Rejected::Ignore) => return Ok(()),
    };
    let from = stanza.from.domain().as_str().to_string();
    let to = stanza.to.as_ref().map(|t| t.domain().as_str().to_string()).unwrap_or_default();
    if !authorized.iter().any(|(remote, _)| *remote == from) {
        return Err(StreamError::new(StreamCondition::InvalidFrom).with_text(format!("{from} is not authenticated on this stream")));
    }
    if !authorized.contains(&(from.clone(), to.clone())) {
        return Err(if S2s::is_hosted(core, &to) {
            StreamError::new(StreamCondition::NotAuthorized).with_text(format!("{from} is not authenticated for {to} on this stream"))
        } else {
            StreamError::new(StreamCondition::HostUnknown).with_text(format!("this server does not serve {to}"))
        });
    }
    crate::router::route(&ctx, stanza).await;
    Ok(())
}
