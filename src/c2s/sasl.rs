//! The SASL exchange on a client stream (RFC 6120 §6): SCRAM-SHA-1/-256 with and without
//! channel binding, and PLAIN over TLS. The mechanisms' logic is in `crate::auth`.

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
use crate::xml::{StreamEvent, ns};

pub enum SaslResult {
    Success(BareJid),
    /// A `<failure/>` was sent; the client may try again. `credentials`: the failure was
    /// a wrong password or unknown account (rather than a malformed exchange).
    Failed { credentials: bool },
    /// End the stream with this error.
    Stream(StreamError),
    /// The connection is gone.
    Lost,
}

/// Run one SASL exchange that starts with `auth`.
#[allow(clippy::too_many_arguments)]
pub async fn authenticate(
    core: &Core,
    reader: &mut Reader,
    writer: &mut Writer,
    auth: Element,
    domain: &str,
    offered: &[&str],
    plus_offered: bool,
    bindings: &ChannelBindings,
    deadline: Instant,
) -> SaslResult {
    let mechanism = auth.attr("mechanism").unwrap_or_default().to_string();
    if offered.is_empty() {
        return fail(core, writer, SaslFailure::EncryptionRequired).await;
    }
    if !offered.contains(&mechanism.as_str()) {
        return fail(core, writer, SaslFailure::InvalidMechanism).await;
    }
    let mut exchange = Exchange { reader, writer, deadline };
    // RFC 6120 §6.4.2: "=" is an empty initial response; no text means none was sent.
    let initial = match decode(&auth.text()) {
        Ok(data) => data,
        Err(f) => return fail(core, exchange.writer, f).await,
    };
    let outcome = if mechanism == "PLAIN" {
        plain(core, &mut exchange, initial, domain).await
    } else {
        let plus = mechanism.ends_with("-PLUS");
        let hash = ScramHash::from_mechanism(mechanism.trim_end_matches("-PLUS")).expect("offered mechanisms are known");
        scram_exchange(core, &mut exchange, initial, domain, hash, plus, plus_offered, bindings).await
    };
    match outcome {
        Ok((account, additional)) => {
            let mut success = Element::bare("success", ns::SASL);
            if let Some(data) = additional {
                success.append_text(B64.encode(data));
            }
            exchange.writer.queue(&success);
            if exchange.writer.flush().await.is_err() {
                return SaslResult::Lost;
            }
            SaslResult::Success(account)
        }
        Err(Abort::Failure(f)) => fail(core, exchange.writer, f).await,
        Err(Abort::Stream(e)) => SaslResult::Stream(e),
        Err(Abort::Lost) => SaslResult::Lost,
    }
}

enum Abort {
    Failure(SaslFailure),
    Stream(StreamError),
    Lost,
}

impl From<SaslFailure> for Abort {
    fn from(f: SaslFailure) -> Self {
        Abort::Failure(f)
    }
}

struct Exchange<'a> {
    reader: &'a mut Reader,
    writer: &'a mut Writer,
    deadline: Instant,
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
        match event {
            StreamEvent::Element(el) if el.is("response", ns::SASL) => Ok(decode(&el.text())?.unwrap_or_default()),
            StreamEvent::Element(el) if el.is("abort", ns::SASL) => Err(Abort::Failure(SaslFailure::Aborted)),
            StreamEvent::Element(el) => Err(Abort::Stream(
                StreamError::new(StreamCondition::PolicyViolation).with_text(format!("<{}/> during SASL", el.name())),
            )),
            _ => Err(Abort::Lost),
        }
    }
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

async fn plain(core: &Core, ex: &mut Exchange<'_>, initial: Option<Vec<u8>>, domain: &str) -> Result<(BareJid, Option<Vec<u8>>), Abort> {
    let data = match initial {
        Some(d) if !d.is_empty() => d,
        _ => ex.challenge(b"").await?,
    };
    let message = auth::parse_plain(&data)?;
    let account = auth::account_for(&message.authcid, domain).ok_or(SaslFailure::NotAuthorized)?;
    let accounts = core.db.accounts();
    let credential = match accounts.credential(&account, ScramHash::Sha256).await {
        Ok(Some(c)) => Some(c),
        Ok(None) => accounts.credential(&account, ScramHash::Sha1).await.ok().flatten(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read credentials");
            return Err(Abort::Failure(SaslFailure::TemporaryAuthFailure));
        }
    };
    let Some(credential) = credential else { return Err(SaslFailure::NotAuthorized.into()) };
    if !auth::verify_password(credential, message.password).await {
        return Err(SaslFailure::NotAuthorized.into());
    }
    if !auth::authzid_ok(message.authzid.as_deref(), &account) {
        return Err(SaslFailure::InvalidAuthzid.into());
    }
    Ok((account, None))
}

#[allow(clippy::too_many_arguments)]
async fn scram_exchange(
    core: &Core,
    ex: &mut Exchange<'_>,
    initial: Option<Vec<u8>>,
    domain: &str,
    hash: ScramHash,
    plus: bool,
    plus_offered: bool,
    bindings: &ChannelBindings,
) -> Result<(BareJid, Option<Vec<u8>>), Abort> {
    let data = match initial {
        Some(d) if !d.is_empty() => d,
        _ => ex.challenge(b"").await?,
    };
    let first = scram::parse_client_first(&data, plus, plus_offered)?;
    let account = auth::account_for(&first.username, domain);
    let credential = match &account {
        Some(a) => core.db.accounts().credential(a, hash).await.map_err(|e| {
            tracing::error!(error = %e, "cannot read credentials");
            Abort::Failure(SaslFailure::TemporaryAuthFailure)
        })?,
        None => None,
    };
    // An unknown user gets the same exchange with a decoy, and fails at the end: the
    // answer does not tell whether the account exists (RFC 5802 §9).
    let authzid_ok = account.as_ref().is_some_and(|a| auth::authzid_ok(first.authzid.as_deref(), a));
    let credential = credential.unwrap_or_else(|| {
        ScramCredential::decoy(hash, &first.username, &core.secret, core.config.auth.scram_iterations)
    });
    let (server, server_first) = scram::ScramServer::new(first, credential);
    let client_final = ex.challenge(&server_first).await?;
    let server_final = server.finish(&client_final, bindings)?;
    let account = account.ok_or(SaslFailure::NotAuthorized)?;
    if !authzid_ok {
        return Err(SaslFailure::InvalidAuthzid.into());
    }
    // RFC 6120 §6.3.10: the server-final-message goes with <success/>.
    Ok((account, Some(server_final)))
}

/// A failure, after the configured delay (slows down password guessing).
async fn fail(core: &Core, writer: &mut Writer, failure: SaslFailure) -> SaslResult {
    if matches!(failure, SaslFailure::NotAuthorized | SaslFailure::InvalidAuthzid) {
        tokio::time::sleep(Duration::from_millis(core.config.auth.failure_delay_ms)).await;
    }
    tracing::debug!(condition = failure.condition(), "SASL failure");
    let mut el = Element::bare("failure", ns::SASL);
    el.append_child(Element::bare(failure.condition(), ns::SASL));
    writer.queue(&el);
    match writer.flush().await {
        Ok(()) => SaslResult::Failed { credentials: matches!(failure, SaslFailure::NotAuthorized | SaslFailure::InvalidAuthzid) },
        Err(_) => SaslResult::Lost,
    }
}
