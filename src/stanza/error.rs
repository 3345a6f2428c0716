//! Stanza errors (RFC 6120 §8.3) and stream errors (RFC 6120 §4.9).

use crate::xml::Element;

use crate::xml::{self, ns};

/// RFC 6120 §8.3.2 error types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    Auth,
    Cancel,
    Continue,
    Modify,
    Wait,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::Cancel => "cancel",
            ErrorType::Continue => "continue",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }

    pub fn parse(s: &str) -> Option<ErrorType> {
        [ErrorType::Auth, ErrorType::Cancel, ErrorType::Continue, ErrorType::Modify, ErrorType::Wait].into_iter().find(|t| t.as_str() == s)
    }
}

/// RFC 6120 §8.3.3 defined conditions, each with the error type the RFC gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    BadRequest,
    Conflict,
    FeatureNotImplemented,
    Forbidden,
    InternalServerError,
    ItemNotFound,
    JidMalformed,
    NotAcceptable,
    NotAllowed,
    NotAuthorized,
    PolicyViolation,
    RecipientUnavailable,
    RegistrationRequired,
    RemoteServerNotFound,
    RemoteServerTimeout,
    ResourceConstraint,
    ServiceUnavailable,
    SubscriptionRequired,
    UndefinedCondition,
    UnexpectedRequest,
}

impl Condition {
    /// The legacy error code of XEP-0086 §3, still read by some clients (Profanity decides
    /// from `code='404'` that an OMEMO bundle or device list does not exist).
    pub fn legacy_code(self) -> Option<&'static str> {
        use Condition::*;
        Some(match self {
            BadRequest | JidMalformed | UnexpectedRequest => "400",
            NotAuthorized => "401",
            Forbidden => "403",
            ItemNotFound | RecipientUnavailable | RemoteServerNotFound => "404",
            RemoteServerTimeout => "504",
            NotAllowed => "405",
            NotAcceptable => "406",
            RegistrationRequired | SubscriptionRequired => "407",
            Conflict => "409",
            InternalServerError | ResourceConstraint | UndefinedCondition => "500",
            FeatureNotImplemented => "501",
            ServiceUnavailable => "503",
            // Not in XEP-0086's table.
            PolicyViolation => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Condition::BadRequest => "bad-request",
            Condition::Conflict => "conflict",
            Condition::FeatureNotImplemented => "feature-not-implemented",
            Condition::Forbidden => "forbidden",
            Condition::InternalServerError => "internal-server-error",
            Condition::ItemNotFound => "item-not-found",
            Condition::JidMalformed => "jid-malformed",
            Condition::NotAcceptable => "not-acceptable",
            Condition::NotAllowed => "not-allowed",
            Condition::NotAuthorized => "not-authorized",
            Condition::PolicyViolation => "policy-violation",
            Condition::RecipientUnavailable => "recipient-unavailable",
            Condition::RegistrationRequired => "registration-required",
            Condition::RemoteServerNotFound => "remote-server-not-found",
            Condition::RemoteServerTimeout => "remote-server-timeout",
            Condition::ResourceConstraint => "resource-constraint",
            Condition::ServiceUnavailable => "service-unavailable",
            Condition::SubscriptionRequired => "subscription-required",
            Condition::UndefinedCondition => "undefined-condition",
            Condition::UnexpectedRequest => "unexpected-request",
        }
    }

    /// The condition an element name in `urn:ietf:params:xml:ns:xmpp-stanzas` stands for;
    /// `None` for a name this server does not know (RFC 6120 §8.3.3 lists `gone` and
    /// `redirect` too, which it never sends).
    pub fn from_name(name: &str) -> Option<Condition> {
        use Condition::*;
        [
            BadRequest, Conflict, FeatureNotImplemented, Forbidden, InternalServerError, ItemNotFound, JidMalformed, NotAcceptable,
            NotAllowed, NotAuthorized, PolicyViolation, RecipientUnavailable, RegistrationRequired, RemoteServerNotFound,
            RemoteServerTimeout, ResourceConstraint, ServiceUnavailable, SubscriptionRequired, UndefinedCondition, UnexpectedRequest,
        ]
        .into_iter()
        .find(|c| c.name() == name)
    }

    /// The type RFC 6120 §8.3.3 uses for each condition.
    pub fn default_type(self) -> ErrorType {
        use Condition::*;
        match self {
            BadRequest | JidMalformed | NotAcceptable | PolicyViolation => ErrorType::Modify,
            Forbidden | NotAuthorized | RegistrationRequired | SubscriptionRequired => ErrorType::Auth,
            RecipientUnavailable | RemoteServerTimeout | ResourceConstraint | UnexpectedRequest => ErrorType::Wait,
            Conflict | FeatureNotImplemented | InternalServerError | ItemNotFound | NotAllowed
            | RemoteServerNotFound | ServiceUnavailable | UndefinedCondition => ErrorType::Cancel,
        }
    }
}

/// An error to answer a stanza with.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}{}", condition.name(), text.as_deref().map(|t| format!(": {t}")).unwrap_or_default())]
pub struct StanzaError {
    pub condition: Condition,
    pub error_type: ErrorType,
    pub text: Option<String>,
    /// An application-specific condition element (e.g. XEP-0191 `<blocked/>`); boxed
    /// because it is rare and every `Result` carrying this error would pay for its size.
    pub app: Option<Box<Element>>,
}

impl StanzaError {
    pub fn new(condition: Condition) -> Self {
        StanzaError { condition, error_type: condition.default_type(), text: None, app: None }
    }

    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    pub fn with_type(mut self, error_type: ErrorType) -> Self {
        self.error_type = error_type;
        self
    }

    pub fn with_app(mut self, app: Element) -> Self {
        self.app = Some(Box::new(app));
        self
    }

    pub fn bad_request(text: impl Into<String>) -> Self {
        Self::new(Condition::BadRequest).with_text(text)
    }

    /// An `<error/>` element as received (a peer's): its condition, type and text. `None`
    /// if it names no known condition.
    pub fn from_element(error: &Element) -> Option<StanzaError> {
        let condition = error.children().filter(|c| c.ns() == ns::XMPP_STANZAS).find_map(|c| Condition::from_name(c.name()))?;
        let mut e = StanzaError::new(condition);
        if let Some(t) = error.attr("type").and_then(ErrorType::parse) {
            e.error_type = t;
        }
        e.text = error.get_child("text", ns::XMPP_STANZAS).map(|t| t.text());
        Some(e)
    }

    pub fn remote_server_timeout() -> Self {
        Self::new(Condition::RemoteServerTimeout)
    }

    pub fn service_unavailable() -> Self {
        Self::new(Condition::ServiceUnavailable)
    }

    pub fn forbidden() -> Self {
        Self::new(Condition::Forbidden)
    }

    pub fn item_not_found() -> Self {
        Self::new(Condition::ItemNotFound)
    }

    pub fn not_allowed() -> Self {
        Self::new(Condition::NotAllowed)
    }

    pub fn internal() -> Self {
        Self::new(Condition::InternalServerError)
    }

    /// The `<error/>` child of an error stanza.
    pub fn to_element(&self, by: Option<&str>) -> Element {
        let mut error = xml::element("error", ns::CLIENT, &[("type", self.error_type.as_str())]);
        if let Some(code) = self.condition.legacy_code() {
            xml::set_attr(&mut error, "code", code);
        }
        if let Some(by) = by {
            xml::set_attr(&mut error, "by", by);
        }
        error.append_child(Element::bare(self.condition.name(), ns::XMPP_STANZAS));
        if let Some(text) = &self.text {
            let mut t = xml::text_element("text", ns::XMPP_STANZAS, text);
            t.set_attr_ns(crate::xml::Namespace::XML, "lang", "en");
            error.append_child(t);
        }
        if let Some(app) = &self.app {
            error.append_child((**app).clone());
        }
        error
    }
}

/// Storage failures are logged once, here, with their detail; the client only learns that
/// something went wrong on our side. A write refused by a per-account limit is no failure:
/// the client is told which limit, with `<resource-constraint/>` of type `cancel` (as
/// XEP-0205 §3.4 answers an account at its limit of resources): retrying will not help
/// until the account holds less.
impl From<crate::storage::StorageError> for StanzaError {
    fn from(e: crate::storage::StorageError) -> Self {
        if let crate::storage::StorageError::Limit(limit) = &e {
            tracing::debug!(%limit, "write refused by a limit");
            return StanzaError::new(Condition::ResourceConstraint).with_type(ErrorType::Cancel).with_text(limit.to_string());
        }
        tracing::error!(error = %e, "storage error while handling a stanza");
        StanzaError::internal()
    }
}

/// RFC 6120 §4.9.3 stream error conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamCondition {
    BadFormat,
    Conflict,
    ConnectionTimeout,
    HostUnknown,
    ImproperAddressing,
    InternalServerError,
    InvalidFrom,
    InvalidNamespace,
    InvalidXml,
    NotAuthorized,
    NotWellFormed,
    PolicyViolation,
    ResourceConstraint,
    RestrictedXml,
    SystemShutdown,
    UndefinedCondition,
    UnsupportedEncoding,
    UnsupportedFeature,
    UnsupportedStanzaType,
    UnsupportedVersion,
}

impl StreamCondition {
    pub fn name(self) -> &'static str {
        use StreamCondition::*;
        match self {
            BadFormat => "bad-format",
            Conflict => "conflict",
            ConnectionTimeout => "connection-timeout",
            HostUnknown => "host-unknown",
            ImproperAddressing => "improper-addressing",
            InternalServerError => "internal-server-error",
            InvalidFrom => "invalid-from",
            InvalidNamespace => "invalid-namespace",
            InvalidXml => "invalid-xml",
            NotAuthorized => "not-authorized",
            NotWellFormed => "not-well-formed",
            PolicyViolation => "policy-violation",
            ResourceConstraint => "resource-constraint",
            RestrictedXml => "restricted-xml",
            SystemShutdown => "system-shutdown",
            UndefinedCondition => "undefined-condition",
            UnsupportedEncoding => "unsupported-encoding",
            UnsupportedFeature => "unsupported-feature",
            UnsupportedStanzaType => "unsupported-stanza-type",
            UnsupportedVersion => "unsupported-version",
        }
    }
}

/// A fatal stream error: sent, then the stream is closed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("stream error {}{}", condition.name(), text.as_deref().map(|t| format!(": {t}")).unwrap_or_default())]
pub struct StreamError {
    pub condition: StreamCondition,
    pub text: Option<String>,
    /// Boxed for the same reason as [`StanzaError::app`].
    pub app: Option<Box<Element>>,
}

impl StreamError {
    pub fn new(condition: StreamCondition) -> Self {
        StreamError { condition, text: None, app: None }
    }

    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    pub fn with_app(mut self, app: Element) -> Self {
        self.app = Some(Box::new(app));
        self
    }

    pub fn to_element(&self) -> Element {
        let mut error = Element::bare("error", ns::STREAMS);
        error.append_child(Element::bare(self.condition.name(), ns::XMPP_STREAMS));
        if let Some(text) = &self.text {
            error.append_child(xml::text_element("text", ns::XMPP_STREAMS, text));
        }
        if let Some(app) = &self.app {
            error.append_child((**app).clone());
        }
        error
    }
}

impl From<xml::XmlError> for StreamError {
    fn from(e: xml::XmlError) -> Self {
        use xml::XmlError as X;
        match &e {
            X::NotWellFormed(_) | X::Eof | X::Io(_) => StreamError::new(StreamCondition::NotWellFormed),
            X::Restricted(_) => StreamError::new(StreamCondition::RestrictedXml),
            X::UnsupportedEncoding => StreamError::new(StreamCondition::UnsupportedEncoding),
            // XEP-0205 / Prosody: policy-violation with <stanza-too-big/> from urn:xmpp:errors.
            X::TooBig | X::TreeTooBig | X::TooDeep(_) => StreamError::new(StreamCondition::PolicyViolation)
                .with_app(Element::bare("stanza-too-big", ns::XMPP_ERRORS)),
            X::InvalidNamespace(_) => StreamError::new(StreamCondition::InvalidNamespace),
            X::BadFormat => StreamError::new(StreamCondition::BadFormat),
        }
        .with_text(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// XEP-0086: the legacy code next to the condition (Profanity reads `code='404'`).
    #[test]
    fn errors_carry_the_legacy_code() {
        let el = StanzaError::item_not_found().to_element(None);
        assert_eq!((el.attr("type"), el.attr("code")), (Some("cancel"), Some("404")));
        assert_eq!(StanzaError::service_unavailable().to_element(None).attr("code"), Some("503"));
        assert_eq!(StanzaError::new(Condition::PolicyViolation).to_element(None).attr("code"), None);
    }
}
