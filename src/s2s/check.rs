//! `starling check s2s DOMAIN`: set up a link to another server the way the server would,
//! step by step, saying what each step found, and where it fails, what to do about it.
//!
//! Everything up to authentication is done for real: DNS, TCP to each address in turn, TLS,
//! the certificate against our trust anchors, the stream features, SASL EXTERNAL with our
//! certificate. Dialback is not: the peer would check our key by connecting back to the
//! running server, which did not make it; the check says whether dialback would be used and
//! what it needs.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::outgoing::{self, Opened, Report};
use super::S2s;
use crate::config::Config;
use crate::tls::Certificates;

/// Which steps were reached, to point at the failing one.
#[derive(Default)]
struct Reached {
    dns: bool,
    tcp: bool,
    tls: bool,
}

/// Check a link from `local` (one of ours) to `remote`, reporting each step through `out`.
/// `Ok` with the way links would be authenticated, `Err` with the failing step and advice.
pub async fn check(config: &Config, certs: Arc<Certificates>, local: &str, remote: &str, out: &mut Report<'_>) -> Result<String, String> {
    let remote = remote.trim_end_matches('.').to_ascii_lowercase();
    let s2s = S2s::new(&config.s2s, certs);
    if s2s.is_blocked(&remote) {
        return Err(format!("{remote} is in [s2s] blocked_domains: this server does not federate with it"));
    }
    out(format!("from {local} to {remote}; trusted roots: {}", s2s.trust.description));
    let deadline = Instant::now() + Duration::from_secs(config.s2s.connect_timeout);
    let mut reached = Reached::default();
    let opened = {
        let mut track = |step: String| {
            reached.dns |= step.contains(": connecting to ");
            reached.tcp |= step.starts_with("TCP: connected");
            reached.tls |= step.starts_with("TLS: ");
            out(step)
        };
        outgoing::open(&s2s, local, &remote, deadline, &mut track).await
    };
    let Opened { stream, features, certificate, .. } = match opened {
        Ok(opened) => opened,
        Err(failure) => {
            let advice = if !reached.dns {
                format!(
                    "DNS gives no address for {remote}'s server: it needs _xmpp-server._tcp (or _xmpps-server._tcp) SRV records, or an A/AAAA record with a server on port 5269; for a private federation, [s2s.targets]"
                )
            } else if !reached.tcp {
                format!("no address of {remote}'s server accepted a connection: is its server running, listening for servers (port 5269 by default), and open through firewalls?")
            } else if !reached.tls {
                "the connection was made but TLS could not be set up: the peer may not offer STARTTLS ([s2s] require_encryption asks for it), or refuse our TLS versions (1.2 and 1.3 only)".to_string()
            } else {
                "TLS was set up but the stream failed: see the last step".to_string()
            };
            return Err(format!("{}\n  what to do: {advice}", failure.text));
        }
    };
    let dialback = config.s2s.dialback;
    if let Err(why) = &certificate {
        if !dialback {
            let mut stream = stream;
            stream.close().await;
            return Err(format!(
                "{remote}'s certificate is not valid ({why}) and [s2s] dialback = false\n  what to do: {remote} needs a certificate for its domain from a CA this server trusts (the system's roots, or [s2s] ca_file), or allow dialback"
            ));
        }
    }
    if outgoing::offers_external(&features) {
        out(format!("SASL EXTERNAL: offered; authenticating as {local} with our certificate"));
        match outgoing::sasl_external(stream, local, &remote, config.s2s.max_stanza_size, deadline).await {
            Ok(Ok(mut stream)) => {
                stream.close().await;
                out("SASL EXTERNAL: accepted".into());
                return Ok(format!("links from {local} to {remote} are authenticated by SASL EXTERNAL"));
            }
            Ok(Err((mut stream, why))) => {
                out(format!("SASL EXTERNAL: refused: {why}"));
                stream.close().await;
            }
            Err(failure) => return Err(failure.text),
        }
    } else {
        let mut stream = stream;
        stream.close().await;
        out(format!("SASL EXTERNAL: not offered ({remote} does not accept our certificate for {local}: not from a CA it trusts, or not naming {local})"));
    }
    if !dialback {
        return Err(format!(
            "{remote} does not accept our certificate and [s2s] dialback = false\n  what to do: give {local} a certificate from a CA {remote} trusts (Let's Encrypt and other public CAs are trusted by most servers), or allow dialback"
        ));
    }
    let offered = features.has_child("dialback", super::dialback::FEATURE_NS);
    out(format!(
        "dialback: {} by {remote}; not tried here (the peer would check our key with the running server, which did not make it)",
        if offered { "offered" } else { "not announced" }
    ));
    Ok(format!(
        "links from {local} to {remote} would be authenticated by dialback (XEP-0220): {remote} will connect back to {local} to check our key, so {local} must resolve to this server (SRV or A/AAAA) and its s2s port be reachable from {remote}"
    ))
}
