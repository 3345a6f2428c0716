//! The SASL exchange on a client stream (RFC 6120 §6): SCRAM-SHA-1/-256 with and without
//! channel binding, and PLAIN over TLS. The mechanisms' logic is in `crate::auth`.

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use jid::BareJid;
use crate::xml::Element;
use tokio::time::Instant;

use super::negotiate::Reader;
use super::transport::Writer;
use crate::auth::{self, ChannelBindings, SaslFailure, ScramCredential, ScramHash, scram};
use crate::core::Core;
use crate::stanza::{StreamCondition, StreamError};
use crate::xml::{self, StreamEvent, ns};

pub enum SaslResult {
    Success(BareJid),
    /// A `<failure/>` was sent; the client may try again. `credentials`: the failure was
    /// a wrong password or unknown account (rather than a malformed exchange or a refusal).
    Failed { credentials: bool },
    /// End the stream with this error.
    Stream(StreamError),
    /// The connection is gone.
    Lost,
}

/// What the exchange needs to know about the stream it runs on.
pub struct StreamInfo<'a> {
    pub domain: &'a str,
    /// The mechanisms offered in the stream features.
    pub offered: &'a [&'static str],
    pub bindings: &'a ChannelBindings,
    /// Authentication must be over by then (set once, at accept).
    pub deadline: Instant,
    pub peer: IpAddr,
}

/// Run one SASL exchange that starts with `auth`.
pub async fn authenticate(core: &Core, reader: &mut Reader, writer: &mut Writer, auth: Element, stream: &StreamInfo<'_>) -> SaslResult {
    let received = Instant::now();
    let mechanism = auth.attr("mechanism").unwrap_or_default().to_string();
    if stream.offered.is_empty() {
        return refuse(writer, SaslFailure::EncryptionRequired, None).await;
    }
    let Some(&mechanism) = stream.offered.iter().find(|&&m| m == mechanism) else {
        return refuse(writer, SaslFailure::InvalidMechanism, None).await;
    };
    let mut exchange = Exchange { reader, writer, deadline: stream.deadline, received, user: None, admission: None };
    // RFC 6120 §6.4.2: "=" is an empty initial response; no text means none was sent.
    let outcome = match decode(&auth.text()) {
        Err(f) => Err(f.into()),
        Ok(initial) if mechanism == "PLAIN" => plain(core, &mut exchange, initial, stream).await,
        Ok(initial) => {
            let plus = mechanism.ends_with("-PLUS");
            let hash = ScramHash::from_mechanism(mechanism.trim_end_matches("-PLUS")).expect("offered mechanisms are known");
            scram_exchange(core, &mut exchange, initial, stream, hash, plus).await
        }
    };
    let failure = match outcome {
        Ok((account, additional)) => {
            let mut success = Element::bare("success", ns::SASL);
            if let Some(data) = additional {
                success.append_text(B64.encode(data));
            }
            exchange.writer.queue(&success);
            if exchange.writer.flush().await.is_err() {
                return SaslResult::Lost;
            }
            if let Some(admission) = exchange.admission.take() {
                core.auth.throttle.succeeded(admission, stream.peer, &account, std::time::Instant::now());
            }
            return SaslResult::Success(account);
        }
        // Not a failed authentication: the attempt's charge is given back.
        Err(Abort::Stream(e)) => {
            exchange.release(core);
            return SaslResult::Stream(e);
        }
        Err(Abort::Lost) => {
            exchange.release(core);
            return SaslResult::Lost;
        }
        Err(Abort::Refused(f, text)) => {
            exchange.release(core);
            return refuse(exchange.writer, f, text).await;
        }
        Err(Abort::Throttled(wait)) => {
            log_failure(&exchange, stream, mechanism, SaslFailure::TemporaryAuthFailure);
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let text = format!("too many failed authentication attempts; retry in {seconds} s");
            return refuse(exchange.writer, SaslFailure::TemporaryAuthFailure, Some(text.into())).await;
        }
        Err(Abort::Denied(f)) => f,
    };
    // A wrong password, an unknown account, a binding from another channel, or someone
    // else's authzid: logged for fail2ban, charged to the throttle, and answered a fixed time
    // after the client's last message, so the time taken tells nothing either.
    log_failure(&exchange, stream, mechanism, failure);
    if let Some(admission) = exchange.admission.take() {
        core.auth.throttle.failed(admission, std::time::Instant::now());
    }
    tokio::time::sleep_until(exchange.received + Duration::from_millis(core.config.auth.failure_delay_ms)).await;
    match send_failure(exchange.writer, failure, None).await {
        Ok(()) => SaslResult::Failed { credentials: true },
        Err(()) => SaslResult::Lost,
    }
}

enum Abort {
    /// The credentials were checked and are wrong (`not-authorized`, `invalid-authzid`).
    Denied(SaslFailure),
    /// Any other failure, answered at once, with an optional `<text/>`.
    Refused(SaslFailure, Option<Cow<'static, str>>),
    /// The address or the account is over its failure limit: refused unchecked.
    Throttled(Duration),
    Stream(StreamError),
    Lost,
}

impl From<SaslFailure> for Abort {
    fn from(f: SaslFailure) -> Self {
        match f {
            SaslFailure::NotAuthorized | SaslFailure::InvalidAuthzid => Abort::Denied(f),
            f => Abort::Refused(f, None),
        }
    }
}

struct Exchange<'a> {
    reader: &'a mut Reader,
    writer: &'a mut Writer,
    deadline: Instant,
    /// When the client's last message arrived.
    received: Instant,
    /// The username as the log shows it (the account when it names one on our domain, else
    /// as sent) and the account, once the mechanism has read them.
    user: Option<(String, Option<BareJid>)>,
    /// The throttle's charge for this attempt, taken before any password is checked.
    admission: Option<auth::throttle::Admission>,
}

impl Exchange<'_> {
    /// Send a challenge and wait for the response (or an abort).
    async fn challenge(&mut self, data: &[u8]) -> Result<Vec<u8>, Abort> {
        let mut challenge = Element::bare("challenge", ns::SASL);
        if !data.is_empty() {
            challenge.append_text(B64.encode(data));
        }
        self.writer.queue(&challenge);
        self.writer.flush().await.map_err(|_| Abort::Lost)?;
        let event = match tokio::time::timeout_at(self.deadline, self.reader.next()).await {
            Ok(Ok(event)) => event,
            Ok(Err(e)) => return Err(Abort::Stream(e.into())),
            Err(_) => return Err(Abort::Stream(StreamError::new(StreamCondition::ConnectionTimeout))),
        };
        self.received = Instant::now();
        match event {
            StreamEvent::Element(el) if el.is("response", ns::SASL) => Ok(decode(&el.text())?.unwrap_or_default()),
            StreamEvent::Element(el) if el.is("abort", ns::SASL) => Err(Abort::Refused(SaslFailure::Aborted, None)),
            StreamEvent::Element(el) => Err(Abort::Stream(
                StreamError::new(StreamCondition::PolicyViolation).with_text(format!("<{}/> during SASL", el.name())),
            )),
            _ => Err(Abort::Lost),
        }
    }

    /// Record who the client claims to be, and admit the attempt if neither that account nor
    /// the client's address is over its failure limit (XEP-0205); otherwise it is refused
    /// unchecked: no password is tried. Admitting charges the account at once, so that
    /// guesses running in parallel cannot all get past its limit.
    fn claim(&mut self, core: &Core, peer: IpAddr, username: &str, account: Option<BareJid>) -> Result<(), Abort> {
        let admitted = core.auth.throttle.admit(peer, account.as_ref(), std::time::Instant::now());
        let shown = account.as_ref().map_or_else(|| username.to_string(), |a| a.to_string());
        self.user = Some((shown, account));
        self.admission = Some(admitted.map_err(Abort::Throttled)?);
        Ok(())
    }

    /// The attempt ended without a verdict on the credentials: give its charge back.
    fn release(&mut self, core: &Core) {
        if let Some(admission) = self.admission.take() {
            core.auth.throttle.release(admission);
        }
    }
}

fn log_failure(ex: &Exchange<'_>, stream: &StreamInfo<'_>, mechanism: &str, failure: SaslFailure) {
    let user = ex.user.as_ref().map_or("", |(shown, _)| shown.as_str());
    // A fixed target, so the line that fail2ban filters on does not change with the code layout.
    tracing::info!(target: "starling::auth", "{}", auth::failure_line(stream.peer, user, mechanism, failure));
}

/// `None` when there was no data, `Some(empty)` for "=".
fn decode(text: &str) -> Result<Option<Vec<u8>>, SaslFailure> {
    let text = text.trim();
    match text {
        "" => Ok(None),
        "=" => Ok(Some(Vec::new())),
        t => B64.decode(t).map(Some).map_err(|_| SaslFailure::IncorrectEncoding),
    }
}

async fn plain(core: &Core, ex: &mut Exchange<'_>, initial: Option<Vec<u8>>, stream: &StreamInfo<'_>) -> Result<(BareJid, Option<Vec<u8>>), Abort> {
    let data = match initial {
        Some(d) if !d.is_empty() => d,
        _ => ex.challenge(b"").await?,
    };
    let message = auth::parse_plain(&data)?;
    let account = auth::account_for(&message.authcid, stream.domain);
    ex.claim(core, stream.peer, &message.authcid, account.clone())?;
    let credential = match &account {
        Some(account) => {
            let accounts = core.db.accounts();
            let stored = match accounts.credential(account, ScramHash::Sha256).await {
                Ok(Some(c)) => Ok(Some(c)),
                Ok(None) => accounts.credential(account, ScramHash::Sha1).await,
                Err(e) => Err(e),
            };
            stored.map_err(|e| {
                tracing::error!(error = %e, "cannot read credentials");
                Abort::Refused(SaslFailure::TemporaryAuthFailure, None)
            })?
        }
        None => None,
    };
    // An unknown account (or a name that cannot be one) costs the same PBKDF2 derivation as
    // a known one, against a decoy that matches no password: the time taken must not tell
    // whether the account exists (the reasoning of RFC 5802 §9, applied to PLAIN).
    let known = credential.is_some();
    let credential = credential.unwrap_or_else(|| {
        ScramCredential::decoy(ScramHash::Sha256, &message.authcid, &core.secret, core.config.auth.scram_iterations)
    });
    let matches = core.auth.verify_password(credential, message.password).await;
    let Some(account) = account.filter(|_| known && matches) else { return Err(SaslFailure::NotAuthorized.into()) };
    if !auth::authzid_ok(message.authzid.as_deref(), &account) {
        return Err(SaslFailure::InvalidAuthzid.into());
    }
    Ok((account, None))
}

async fn scram_exchange(
    core: &Core,
    ex: &mut Exchange<'_>,
    initial: Option<Vec<u8>>,
    stream: &StreamInfo<'_>,
    hash: ScramHash,
    plus: bool,
) -> Result<(BareJid, Option<Vec<u8>>), Abort> {
    let data = match initial {
        Some(d) if !d.is_empty() => d,
        _ => ex.challenge(b"").await?,
    };
    let first = scram::parse_client_first(&data, plus)?;
    let plus_offered = stream.offered.iter().any(|m| m.ends_with("-PLUS"));
    if let Some(text) = first.binding_refusal(stream.bindings, plus_offered) {
        // COMPAT(slixmpp 1.8.3, compat/slixmpp.md): refused before any challenge and not as a
        // wrong password, so the client moves on to its next mechanism at once.
        return Err(Abort::Refused(SaslFailure::MalformedRequest, Some(text.into())));
    }
    let account = auth::account_for(&first.username, stream.domain);
    ex.claim(core, stream.peer, &first.username, account.clone())?;
    let credential = match &account {
        Some(a) => core.db.accounts().credential(a, hash).await.map_err(|e| {
            tracing::error!(error = %e, "cannot read credentials");
            Abort::Refused(SaslFailure::TemporaryAuthFailure, None)
        })?,
        None => None,
    };
    // An unknown user gets the same exchange with a decoy, and fails at the end: the
    // answer does not tell whether the account exists (RFC 5802 §9).
    let authzid_ok = account.as_ref().is_some_and(|a| auth::authzid_ok(first.authzid.as_deref(), a));
    let known = credential.is_some();
    let credential = credential.unwrap_or_else(|| {
        ScramCredential::decoy(hash, &first.username, &core.secret, core.config.auth.scram_iterations)
    });
    let (server, server_first) = scram::ScramServer::new(first, credential);
    let client_final = ex.challenge(&server_first).await?;
    let server_final = server.finish(&client_final, stream.bindings)?;
    let Some(account) = account.filter(|_| known) else { return Err(SaslFailure::NotAuthorized.into()) };
    if !authzid_ok {
        return Err(SaslFailure::InvalidAuthzid.into());
    }
    // RFC 6120 §6.3.10: the server-final-message goes with <success/>.
    Ok((account, Some(server_final)))
}

/// A failure answered at once: nothing about credentials was learnt or checked.
async fn refuse(writer: &mut Writer, failure: SaslFailure, text: Option<Cow<'static, str>>) -> SaslResult {
    tracing::debug!(condition = failure.condition(), text = text.as_deref(), "SASL failure");
    match send_failure(writer, failure, text.as_deref()).await {
        Ok(()) => SaslResult::Failed { credentials: false },
        Err(()) => SaslResult::Lost,
    }
}

/// RFC 6120 §6.4.5: `<failure><condition/><text xml:lang='en'>…</text></failure>`.
async fn send_failure(writer: &mut Writer, failure: SaslFailure, text: Option<&str>) -> Result<(), ()> {
    let mut el = Element::bare("failure", ns::SASL);
    el.append_child(Element::bare(failure.condition(), ns::SASL));
    if let Some(text) = text {
        let mut t = xml::text_element("text", ns::SASL, text);
        t.set_attr_ns(xml::Namespace::XML, "lang", "en");
        el.append_child(t);
    }
    writer.queue(&el);
    writer.flush().await.map_err(|_| ())
}
