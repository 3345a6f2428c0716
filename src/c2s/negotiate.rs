//! Stream negotiation (RFC 6120 §4-§7): header, features, STARTTLS, SASL, binding.
//! Everything happens before `auth_timeout`; the stream then becomes a bound session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jid::{BareJid, FullJid, Jid};
use crate::xml::Element;
use tokio::io::ReadHalf;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::resume::{Handover, Lookup, Refusal, Refused, Resumptions};
use super::sasl::{self, SaslResult};
use super::sm::{self, Nonza, ResumeRequest};
use super::transport::{Transport, Writer};
use crate::auth::ChannelBindings;
use crate::core::Core;
use crate::modules::{Ctx, PreAuthIq, SessionHook, Stage};
use crate::session::{BindError, ConnId, Control, Link, PresenceState};
use crate::stanza::{Condition, IqType, StanzaError, StreamCondition, StreamError, new_id};
use crate::tls::TlsStream;
use crate::xml::{self, Limits, ReadStats, StreamEvent, StreamReader, ns};

/// Before authentication, stanzas are small (ejabberd's pre_auth_max_stanza_size).
const PRE_AUTH_MAX_STANZA: usize = 16 * 1024;

pub type Reader = StreamReader<ReadHalf<Transport>>;

/// A stream ready to carry stanzas.
pub struct Bound {
    pub reader: Reader,
    pub writer: Writer,
    pub jid: FullJid,
    pub rx: mpsc::UnboundedReceiver<Box<Element>>,
    pub control: Arc<Control>,
    pub stats: Arc<ReadStats>,
}

/// Negotiation ended without a session; the stream has been closed.
pub struct Ended;

pub struct Negotiation {
    core: Core,
    resumptions: Arc<Resumptions>,
    conn: ConnId,
    peer: SocketAddr,
    deadline: Instant,
    stats: Arc<ReadStats>,
    secure: bool,
    domain: Option<String>,
    /// Our header for the current stream has been sent (a stream error before it must be
    /// preceded by one, RFC 6120 §4.9.1.2; each restart is a new stream).
    header_sent: bool,
    lang: String,
    account: Option<BareJid>,
    /// Failed credentials (wrong password, unknown user), limited by `auth.max_failures`.
    sasl_failures: u32,
    /// Every failed exchange, including malformed ones, so that a client cannot loop forever.
    sasl_attempts: u32,
}

/// Failed SASL exchanges of any kind allowed on one stream.
const MAX_SASL_ATTEMPTS: u32 = 10;

/// What one element during negotiation led to.
enum Step {
    Continue,
    Restart,
    Bound(FullJid, mpsc::UnboundedReceiver<Box<Element>>, Arc<Control>),
}

impl Negotiation {
    /// `deadline`: when authentication and binding must be over, counted from accept (a TLS
    /// handshake before negotiation spends from the same allowance).
    pub fn new(core: Core, resumptions: Arc<Resumptions>, conn: ConnId, peer: SocketAddr, deadline: Instant) -> Self {
        Negotiation {
            core,
            resumptions,
            conn,
            peer,
            deadline,
            stats: ReadStats::new(),
            secure: false,
            domain: None,
            header_sent: false,
            lang: "en".into(),
            account: None,
            sasl_failures: 0,
            sasl_attempts: 0,
        }
    }

    fn limits(&self) -> Limits {
        let max = if self.account.is_some() { self.core.config.c2s.max_stanza_size } else { PRE_AUTH_MAX_STANZA };
        Limits { max_stanza_bytes: max, ..Limits::default() }
    }

    fn split(&self, transport: Transport) -> (Reader, Writer) {
        let (read, write) = tokio::io::split(transport);
        let stall = Duration::from_secs(self.core.config.c2s.write_timeout);
        let reader = StreamReader::new(xml::Input::new(read, self.stats.clone()), self.limits());
        (reader, Writer::new(write, stall))
    }

    /// Negotiate on `transport` until a resource is bound or the stream ends.
    pub async fn run(mut self, transport: Transport) -> Result<Bound, Ended> {
        self.secure = transport.is_tls();
        let mut bindings = transport.channel_bindings();
        let (mut reader, mut writer) = self.split(transport);
        loop {
            // A new stream: header, features, then elements until a restart.
            self.header_sent = false;
            let header = match self.read(&mut reader, &mut writer).await? {
                StreamEvent::Open(root) => root,
                _ => return Err(self.fail(&mut writer, StreamError::new(StreamCondition::NotWellFormed), true).await),
            };
            let content_ns = reader.default_namespace();
            self.send_header(&mut writer, &header);
            if let Err(e) = self.check_header(&header, content_ns.as_deref()) {
                return Err(self.fail(&mut writer, e, false).await);
            }
            writer.queue(&self.features(&bindings));
            if writer.flush().await.is_err() {
                return Err(Ended);
            }
            loop {
                let el = match self.read(&mut reader, &mut writer).await? {
                    StreamEvent::Element(el) => el,
                    StreamEvent::Close => return Err(self.close(&mut writer).await),
                    StreamEvent::Open(_) => {
                        return Err(self.fail(&mut writer, StreamError::new(StreamCondition::NotWellFormed), false).await);
                    }
                };
                if el.is("starttls", ns::TLS) {
                    let transport = self.starttls(reader, writer).await?;
                    bindings = transport.channel_bindings();
                    (reader, writer) = self.split(transport);
                    break;
                }
                if let Some(nonza) = Nonza::parse(&el) {
                    match nonza {
                        // XEP-0198 §5: resumption instead of binding.
                        Ok(Nonza::Resume(request)) if self.account.is_some() => {
                            match self.resume(reader, writer, request).await? {
                                Some((r, w)) => (reader, writer) = (r, w),
                                None => return Err(Ended),
                            }
                        }
                        // §3: not before binding (nor resumption before authentication).
                        Ok(Nonza::Enable(_) | Nonza::Resume(_)) => {
                            writer.queue(&sm::failed(Condition::UnexpectedRequest, None, None));
                        }
                        Err(m) if el.name() == "resume" => writer.queue(&sm::failed(Condition::BadRequest, None, Some(m.0))),
                        // Acks mean nothing before stream management is enabled.
                        Ok(Nonza::Request | Nonza::Ack(_)) | Err(_) => {}
                    }
                    if writer.flush().await.is_err() {
                        return Err(Ended);
                    }
                    continue;
                }
                match self.element(&mut reader, &mut writer, el, &bindings).await? {
                    Step::Continue => {
                        if writer.flush().await.is_err() {
                            return Err(Ended);
                        }
                    }
                    Step::Restart => {
                        // RFC 6120 §6.4.6: after SASL the stream restarts on the same bytes.
                        let limits = self.limits();
                        reader = StreamReader::new(reader.into_input(), limits);
                        break;
                    }
                    Step::Bound(jid, rx, control) => {
                        if writer.flush().await.is_err() {
                            self.core.sessions.unbind(&jid, self.conn);
                            return Err(Ended);
                        }
                        return Ok(Bound { reader, writer, jid, rx, control, stats: self.stats });
                    }
                }
            }
        }
    }

    /// XEP-0198 §5: hand this connection to the session it resumes. `Ok(None)` once the
    /// session has it; `Ok(Some)` with the connection back if the resumption failed (the
    /// client was told with `<failed/>` and may bind a new resource instead).
    async fn resume(&mut self, reader: Reader, writer: Writer, request: ResumeRequest) -> Result<Option<(Reader, Writer)>, Ended> {
        let account = self.account.clone().expect("checked by the caller");
        let gone = match self.resumptions.find(&request.previd, &account) {
            Lookup::Gone(h) => Some((Box::new(reader), writer, h)),
            Lookup::Live(tx) => {
                let (reply, answer) = tokio::sync::oneshot::channel();
                let handover = Box::new(Handover {
                    reader: Box::new(reader),
                    writer,
                    stats: self.stats.clone(),
                    peer: self.peer,
                    h: request.h,
                    reply,
                });
                match tx.send(handover).await {
                    Err(tokio::sync::mpsc::error::SendError(h)) => Some((h.reader, h.writer, None)),
                    Ok(()) => match answer.await {
                        Ok(Ok(())) => return Ok(None),
                        Ok(Err(Refused { reader, writer, why: Refusal::Gone(h) })) => Some((reader, writer, h)),
                        Ok(Err(Refused { writer: mut w, why: Refusal::Error(e), .. })) => {
                            return Err(self.fail(&mut w, e, false).await);
                        }
                        // The session's task failed with the connection in hand.
                        Err(_) => return Err(Ended),
                    },
                }
            }
        };
        let (reader, mut writer, h) = gone.expect("every other case returned");
        tracing::debug!("resumption failed: no such session");
        writer.queue(&sm::failed(Condition::ItemNotFound, h, None));
        Ok(Some((*reader, writer)))
    }

    /// Read the next event before the deadline; errors end the stream.
    async fn read(&self, reader: &mut Reader, writer: &mut Writer) -> Result<StreamEvent, Ended> {
        // Dropping the read on shutdown is fine: the stream ends right after.
        let read = tokio::select! {
            read = tokio::time::timeout_at(self.deadline, reader.next()) => read,
            _ = self.core.shutdown.cancelled() => {
                return Err(self.fail(writer, StreamError::new(StreamCondition::SystemShutdown), !self.header_sent).await);
            }
        };
        match read {
            Ok(Ok(event)) => Ok(event),
            Ok(Err(xml::XmlError::Eof | xml::XmlError::Io(_))) => Err(Ended),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "bad XML during negotiation");
                Err(self.fail(writer, e.into(), !self.header_sent).await)
            }
            Err(_) => {
                let e = StreamError::new(StreamCondition::ConnectionTimeout).with_text("authentication took too long");
                Err(self.fail(writer, e, !self.header_sent).await)
            }
        }
    }

    fn send_header(&mut self, writer: &mut Writer, header: &Element) {
        self.header_sent = true;
        if let Some(lang) = xml::xml_lang(header).filter(|l| !l.is_empty() && l.len() < 36) {
            self.lang = lang.to_string();
        }
        let to = header.attr("to").unwrap_or_default().to_ascii_lowercase();
        let from = if self.core.is_local_domain(&to) { to } else { self.core.config.domains[0].clone() };
        let client = header.attr("from").and_then(|f| Jid::new(f).ok());
        let mut out = Vec::new();
        xml::stream_header(
            &mut out,
            &xml::StreamHeader {
                default_ns: ns::CLIENT,
                from: self.domain.as_deref().unwrap_or(&from),
                to: client.as_ref().map(|j| j.as_str()),
                id: &new_id(),
                lang: &self.lang,
            },
        );
        writer.queue_raw(&out);
    }

    /// RFC 6120 §4.7-§4.8: the stream header's namespace, version and domain.
    fn check_header(&mut self, header: &Element, content_ns: Option<&str>) -> Result<(), StreamError> {
        if !header.is("stream", ns::STREAMS) {
            return Err(StreamError::new(StreamCondition::InvalidNamespace));
        }
        if content_ns != Some(ns::CLIENT) {
            return Err(StreamError::new(StreamCondition::InvalidNamespace).with_text("expected jabber:client"));
        }
        // §4.7.5: we speak 1.0; no version (pre-RFC 3920) or another major version is refused.
        let major = header.attr("version").and_then(|v| v.split('.').next()).and_then(|m| m.parse::<u32>().ok());
        if major != Some(1) {
            return Err(StreamError::new(StreamCondition::UnsupportedVersion));
        }
        let Some(to) = header.attr("to").filter(|t| !t.is_empty()) else {
            return Err(StreamError::new(StreamCondition::HostUnknown).with_text("the stream header has no 'to'"));
        };
        let to = to.to_ascii_lowercase();
        if !self.core.is_local_domain(&to) {
            return Err(StreamError::new(StreamCondition::HostUnknown));
        }
        // A restarted stream cannot switch to another domain (CVE-2018-10847 class).
        if let Some(domain) = &self.domain && domain != &to {
            return Err(StreamError::new(StreamCondition::HostUnknown).with_text("the domain changed"));
        }
        self.domain = Some(to);
        Ok(())
    }

    /// The SASL mechanisms offered on this stream (RFC 6120 §6.3.3).
    fn mechanisms(&self, bindings: &ChannelBindings) -> Vec<&'static str> {
        if !self.secure && self.core.config.c2s.require_encryption {
            return Vec::new();
        }
        let mut m = Vec::new();
        if bindings.any() {
            m.extend(["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"]);
        }
        m.extend(["SCRAM-SHA-256", "SCRAM-SHA-1"]);
        // PLAIN sends the password itself: only over TLS.
        if self.secure {
            m.push("PLAIN");
        }
        m
    }

    fn features(&self, bindings: &ChannelBindings) -> Element {
        let mut features = Element::bare("features", ns::STREAMS);
        let config = &self.core.config.c2s;
        if self.account.is_some() {
            features.append_child(Element::bare("bind", ns::BIND));
            // RFC 6121 does not need the session IQ; old clients may still send it.
            let mut session = Element::bare("session", ns::SESSION);
            session.append_child(Element::bare("optional", ns::SESSION));
            features.append_child(session);
            // XEP-0198: enabled after binding, or resumption instead of it.
            features.append_child(Element::bare("sm", ns::SM));
            // XEP-0352.
            features.append_child(Element::bare("csi", ns::CSI));
            for f in self.core.modules.stream_features(Stage::PostAuth) {
                features.append_child(f.clone());
            }
            return features;
        }
        if !self.secure {
            let mut starttls = Element::bare("starttls", ns::TLS);
            if config.require_encryption {
                starttls.append_child(Element::bare("required", ns::TLS));
            }
            features.append_child(starttls);
        }
        let mechanisms = self.mechanisms(bindings);
        if !mechanisms.is_empty() {
            let mut el = Element::bare("mechanisms", ns::SASL);
            for m in mechanisms {
                el.append_child(xml::text_element("mechanism", ns::SASL, m));
            }
            features.append_child(el);
            if bindings.any() {
                // XEP-0440: which channel-binding types the -PLUS mechanisms support.
                let mut cb = Element::bare("sasl-channel-binding", ns::SASL_CB);
                for t in bindings.types() {
                    cb.append_child(xml::element("channel-binding", ns::SASL_CB, &[("type", t)]));
                }
                features.append_child(cb);
            }
            for f in self.core.modules.stream_features(Stage::PreAuth) {
                features.append_child(f.clone());
            }
        }
        features
    }

    async fn starttls(&mut self, reader: Reader, mut writer: Writer) -> Result<Transport, Ended> {
        if self.secure {
            let e = StreamError::new(StreamCondition::PolicyViolation).with_text("TLS is already on");
            return Err(self.fail(&mut writer, e, false).await);
        }
        // RFC 6120 §5.4.3.3: nothing may follow <starttls/> before <proceed/>; bytes already
        // received were sent in the clear and could have been injected.
        if !reader.input().buffered().is_empty() {
            let e = StreamError::new(StreamCondition::PolicyViolation).with_text("data after <starttls/>");
            return Err(self.fail(&mut writer, e, false).await);
        }
        writer.queue(&Element::bare("proceed", ns::TLS));
        if writer.flush().await.is_err() {
            return Err(Ended);
        }
        let Transport::Plain(tcp) = reader.into_input().into_inner().unsplit(writer.into_inner()) else {
            return Err(Ended);
        };
        match tokio::time::timeout_at(self.deadline, TlsStream::accept(tcp, self.core.tls.clone())).await {
            Ok(Ok(tls)) => {
                self.secure = true;
                Ok(Transport::Tls(Box::new(tls)))
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                Err(Ended)
            }
            Err(_) => Err(Ended),
        }
    }

    async fn element(&mut self, reader: &mut Reader, writer: &mut Writer, el: Element, bindings: &ChannelBindings) -> Result<Step, Ended> {
        if el.is("auth", ns::SASL) && self.account.is_none() {
            let domain = self.domain.clone().unwrap_or_default();
            let offered = self.mechanisms(bindings);
            let stream =
                sasl::StreamInfo { domain: &domain, offered: &offered, bindings, deadline: self.deadline, peer: self.peer.ip() };
            return match sasl::authenticate(&self.core, reader, writer, el, &stream).await {
                SaslResult::Success(account) => {
                    tracing::debug!(%account, "authenticated");
                    self.account = Some(account);
                    Ok(Step::Restart)
                }
                SaslResult::Failed { credentials } => {
                    self.sasl_failures += u32::from(credentials);
                    self.sasl_attempts += 1;
                    if self.sasl_failures >= self.core.config.auth.max_failures || self.sasl_attempts >= MAX_SASL_ATTEMPTS {
                        let e = StreamError::new(StreamCondition::PolicyViolation).with_text("too many failed authentication attempts");
                        return Err(self.fail(writer, e, false).await);
                    }
                    Ok(Step::Continue)
                }
                SaslResult::Stream(e) => Err(self.fail(writer, e, false).await),
                SaslResult::Lost => Err(Ended),
            };
        }
        if el.is("iq", ns::CLIENT) {
            return self.iq(writer, el).await;
        }
        // Stanzas need a bound resource (RFC 6120 §7.1); unknown nonzas are not supported.
        let error = if el.is("message", ns::CLIENT) || el.is("presence", ns::CLIENT) {
            StreamError::new(StreamCondition::NotAuthorized)
        } else {
            StreamError::new(StreamCondition::UnsupportedStanzaType).with_text(format!("unexpected <{}/>", el.name()))
        };
        Err(self.fail(writer, error, false).await)
    }

    /// IQs before a resource is bound: binding itself, and pre-authentication IQs that a
    /// module handles (XEP-0077 registration).
    async fn iq(&mut self, writer: &mut Writer, el: Element) -> Result<Step, Ended> {
        let id = el.attr("id").unwrap_or_default().to_string();
        let kind = match el.attr("type") {
            Some("get") => IqType::Get,
            Some("set") => IqType::Set,
            _ => return Err(self.fail(writer, StreamError::new(StreamCondition::NotAuthorized), false).await),
        };
        let Some(payload) = el.children().next().cloned() else {
            return Err(self.fail(writer, StreamError::new(StreamCondition::NotAuthorized), false).await);
        };
        let result = match (&self.account, kind) {
            (Some(account), IqType::Set) if payload.is("bind", ns::BIND) => {
                let account = account.clone();
                match self.bind(&payload, &account) {
                    Ok((jid, rx, control, replaced)) => {
                        if let Some(state) = replaced {
                            // The replaced session ends like any other: contacts and
                            // directed-presence recipients see it go.
                            let ctx = Ctx::new(self.core.clone());
                            self.core.modules.run_session_hook(SessionHook::Closed, &ctx, &jid, Some(state), false).await;
                        }
                        let mut bind = Element::bare("bind", ns::BIND);
                        bind.append_child(xml::text_element("jid", ns::BIND, jid.as_str()));
                        writer.queue(&iq_reply(&id, Ok(Some(bind))));
                        return Ok(Step::Bound(jid, rx, control));
                    }
                    Err(e) => Err(e),
                }
            }
            (None, _) => {
                let handler = self.core.modules.preauth_handler(payload.ns());
                let allowed = self.secure || !self.core.config.c2s.require_encryption;
                match handler {
                    Some(handler) if allowed => {
                        let domain = self.domain.clone().unwrap_or_default();
                        let ctx = Ctx::new(self.core.clone());
                        handler(ctx, PreAuthIq { domain, ip: Some(self.peer.ip()), kind, payload }).await
                    }
                    Some(_) => Err(StanzaError::not_allowed().with_text("start TLS first")),
                    // E.g. registration when it is disabled: an answer the client can show
                    // (XEP-0077 §3.1), rather than a closed stream.
                    None => Err(StanzaError::service_unavailable()),
                }
            }
            // Authenticated but not bound: only binding is possible (RFC 6120 §7.1).
            (Some(_), _) => return Err(self.fail(writer, StreamError::new(StreamCondition::NotAuthorized), false).await),
        };
        writer.queue(&iq_reply(&id, result));
        Ok(Step::Continue)
    }

    /// RFC 6120 §7.6-§7.7: bind the client's resource or one we generate.
    #[allow(clippy::type_complexity)]
    fn bind(
        &self,
        payload: &Element,
        account: &BareJid,
    ) -> Result<(FullJid, mpsc::UnboundedReceiver<Box<Element>>, Arc<Control>, Option<PresenceState>), StanzaError> {
        let requested = payload.get_child("resource", ns::BIND).map(|r| r.text()).unwrap_or_default();
        let resource = if requested.trim().is_empty() { format!("starling-{}", new_id()) } else { requested };
        let jid = account
            .with_resource_str(&resource)
            .map_err(|_| StanzaError::bad_request("that resource is not allowed"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let control = Arc::new(Control::default());
        let link = Link { tx, control: control.clone(), peer: self.peer, since: std::time::SystemTime::now() };
        match self.core.sessions.bind(jid.clone(), self.conn, link) {
            Ok(replaced) => Ok((jid, rx, control, replaced)),
            // XEP-0205 §3 and RFC 6120 §7.6.2.1.
            Err(BindError::TooManyResources) => Err(StanzaError::new(Condition::ResourceConstraint)
                .with_text("too many resources are bound to this account")
                .with_app(Element::bare("resource-limit-exceeded", ns::XMPP_ERRORS))),
        }
    }

    /// Send a stream error and close. `header` first if ours was not sent yet (§4.9.1.2).
    async fn fail(&self, writer: &mut Writer, error: StreamError, header: bool) -> Ended {
        if header {
            let mut out = Vec::new();
            xml::stream_header(
                &mut out,
                &xml::StreamHeader { default_ns: ns::CLIENT, from: self.domain.as_deref().unwrap_or(&self.core.config.domains[0]), to: None, id: &new_id(), lang: &self.lang },
            );
            writer.queue_raw(&out);
        }
        tracing::debug!(condition = error.condition.name(), "stream error during negotiation");
        writer.queue(&error.to_element());
        self.close(writer).await
    }

    async fn close(&self, writer: &mut Writer) -> Ended {
        writer.queue_raw(b"</stream:stream>");
        let _ = writer.flush().await;
        writer.shutdown().await;
        Ended
    }
}

/// An IQ answer during negotiation (no addresses: the stream is not bound yet).
fn iq_reply(id: &str, result: Result<Option<Element>, StanzaError>) -> Element {
    let mut iq = xml::element("iq", ns::CLIENT, &[("id", id)]);
    match result {
        Ok(payload) => {
            xml::set_attr(&mut iq, "type", "result");
            if let Some(p) = payload {
                iq.append_child(p);
            }
        }
        Err(e) => {
            xml::set_attr(&mut iq, "type", "error");
            iq.append_child(e.to_element(None));
        }
    }
    iq
}
