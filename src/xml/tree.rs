//! quick-xml events → `minidom::Element`, with the checks quick-xml does not make.
//!
//! quick-xml is fast but lenient: it does not check XML character legality, name syntax or
//! `<` in attribute values, and it reports (rather than rejects) comments, processing
//! instructions and DTDs. RFC 6120 §11.1 forbids those in XMPP, so every check lives here,
//! in the one place that turns bytes into trees. Both the network reader and the parser of
//! stored stanzas go through this builder, so there is exactly one notion of "valid XML".

use std::borrow::Cow;

use minidom::Element;
use minidom::rxml::{Namespace, NcName};
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{NamespaceResolver, ResolveResult};
use quick_xml::XmlVersion;

use super::ns;

/// Why the XML could not be accepted. Each maps to one RFC 6120 §4.9.3 stream error.
#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    #[error("not well-formed: {0}")]
    NotWellFormed(String),
    /// Comments, processing instructions, DTDs and entity declarations (RFC 6120 §11.1).
    #[error("restricted XML: {0}")]
    Restricted(&'static str),
    #[error("unsupported encoding")]
    UnsupportedEncoding,
    #[error("element or stanza exceeds the size limit")]
    TooBig,
    #[error("elements nested deeper than {0}")]
    TooDeep(usize),
    #[error("invalid namespace: {0}")]
    InvalidNamespace(String),
    #[error("text at stream level")]
    BadFormat,
    /// The peer closed the connection in the middle of the stream.
    #[error("connection closed inside the stream")]
    Eof,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Structural limits applied while building trees.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Maximum bytes of one first-level element (a stanza), markup included.
    pub max_stanza_bytes: usize,
    /// Maximum nesting depth inside a stanza.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_stanza_bytes: 262_144, max_depth: 48 }
    }
}

/// What one event produced.
pub(crate) enum Built {
    Nothing,
    Open(Element),
    Element(Element),
    Close,
}

/// Whether the builder reads an endless stream (`<stream:stream>` root, children emitted one
/// by one) or one standalone element (a stored stanza).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Stream,
    Document,
}

pub(crate) struct TreeBuilder {
    mode: Mode,
    limits: Limits,
    /// Open elements below the stream root (in document mode: from the root down).
    stack: Vec<Element>,
    /// The stream root (or the document element) has started.
    opened: bool,
    /// Anything at all has been seen (an XML declaration is only allowed before that).
    seen_any: bool,
    /// Document mode: the root element has been completed.
    done: bool,
}

impl TreeBuilder {
    pub(crate) fn new(mode: Mode, limits: Limits) -> Self {
        TreeBuilder { mode, limits, stack: Vec::new(), opened: false, seen_any: false, done: false }
    }

    pub(crate) fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Depth of open elements below the stream root; 0 between stanzas.
    pub(crate) fn depth(&self) -> usize {
        self.stack.len()
    }

    pub(crate) fn on_event(
        &mut self,
        event: Event<'_>,
        resolver: &NamespaceResolver,
    ) -> Result<Built, XmlError> {
        let first = !self.seen_any;
        self.seen_any = true;
        if self.done && !matches!(event, Event::Eof | Event::Text(_)) {
            return Err(XmlError::NotWellFormed("content after the document element".into()));
        }
        match event {
            Event::Decl(decl) => {
                if !first {
                    return Err(XmlError::Restricted("XML declaration after the start"));
                }
                check_decl(&decl)?;
                Ok(Built::Nothing)
            }
            Event::Start(start) => self.start(&start, resolver, false),
            Event::Empty(start) => self.start(&start, resolver, true),
            Event::End(_) => self.end(),
            Event::Text(text) => {
                let content = text.xml_content(XmlVersion::Implicit1_0);
                self.text(&content, true)
            }
            Event::CData(cdata) => {
                let content = cdata.xml_content(XmlVersion::Implicit1_0);
                check_chars(&content)?;
                self.text(&content, false)
            }
            Event::GeneralRef(reference) => {
                let ch = match reference.resolve_char_ref() {
                    Ok(Some(ch)) => ch,
                    Ok(None) => match quick_xml::escape::resolve_predefined_entity(&reference) {
                        Some(s) => {
                            return self.text(s, false);
                        }
                        None => return Err(XmlError::Restricted("undefined entity reference")),
                    },
                    Err(_) => return Err(XmlError::NotWellFormed("bad character reference".into())),
                };
                if !is_xml_char(ch) {
                    return Err(XmlError::NotWellFormed("character reference to an illegal character".into()));
                }
                let mut tmp = [0u8; 4];
                self.text(ch.encode_utf8(&mut tmp), false)
            }
            Event::Comment(_) => Err(XmlError::Restricted("comment")),
            Event::PI(_) => Err(XmlError::Restricted("processing instruction")),
            Event::DocType(_) => Err(XmlError::Restricted("document type declaration")),
            Event::Eof => {
                if self.mode == Mode::Document && self.done {
                    Ok(Built::Nothing)
                } else {
                    Err(XmlError::Eof)
                }
            }
        }
    }

    fn start(
        &mut self,
        start: &BytesStart<'_>,
        resolver: &NamespaceResolver,
        empty: bool,
    ) -> Result<Built, XmlError> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(XmlError::TooDeep(self.limits.max_depth));
        }
        let el = build_element(start, resolver)?;
        if !self.opened {
            self.opened = true;
            match self.mode {
                Mode::Stream => {
                    if empty {
                        // `<stream:stream/>` opens and closes at once; the caller sees the
                        // header and then the close on the next read.
                        self.done = true;
                    }
                    return Ok(Built::Open(el));
                }
                Mode::Document => {
                    if empty {
                        self.done = true;
                        return Ok(Built::Element(el));
                    }
                    self.stack.push(el);
                    return Ok(Built::Nothing);
                }
            }
        }
        if self.mode == Mode::Stream && self.done {
            return Err(XmlError::NotWellFormed("content after the stream closed".into()));
        }
        if empty {
            Ok(self.attach(el))
        } else {
            self.stack.push(el);
            Ok(Built::Nothing)
        }
    }

    fn end(&mut self) -> Result<Built, XmlError> {
        match self.stack.pop() {
            Some(el) => Ok(self.attach(el)),
            // quick-xml already checked that the end tag matches the root's name.
            None if self.mode == Mode::Stream && self.opened => {
                self.done = true;
                Ok(Built::Close)
            }
            None => Err(XmlError::NotWellFormed("unexpected end tag".into())),
        }
    }

    /// Append a completed element to its parent, or emit it if it is first-level.
    fn attach(&mut self, el: Element) -> Built {
        match self.stack.last_mut() {
            Some(parent) => {
                parent.append_child(el);
                Built::Nothing
            }
            None => {
                if self.mode == Mode::Document {
                    self.done = true;
                }
                Built::Element(el)
            }
        }
    }

    fn text(&mut self, content: &str, raw: bool) -> Result<Built, XmlError> {
        if raw {
            check_chars(content)?;
            if content.contains("]]>") {
                return Err(XmlError::NotWellFormed("']]>' in character data".into()));
            }
        }
        match self.stack.last_mut() {
            Some(parent) => {
                parent.append_text(content);
                Ok(Built::Nothing)
            }
            // Between stanzas only whitespace is allowed (keep-alives, RFC 6120 §4.6.1).
            None if content.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n')) => {
                Ok(Built::Nothing)
            }
            None if !self.opened || self.done => {
                Err(XmlError::NotWellFormed("text outside the root element".into()))
            }
            None => Err(XmlError::BadFormat),
        }
    }
}

fn check_decl(decl: &quick_xml::events::BytesDecl<'_>) -> Result<(), XmlError> {
    let version = decl.version().map_err(|_| XmlError::NotWellFormed("bad XML declaration".into()))?;
    if &*version != "1.0" {
        return Err(XmlError::NotWellFormed("only XML 1.0 is supported".into()));
    }
    if let Some(encoding) = decl.encoding() {
        let encoding = encoding.map_err(|_| XmlError::NotWellFormed("bad XML declaration".into()))?;
        if !encoding.eq_ignore_ascii_case("utf-8") {
            return Err(XmlError::UnsupportedEncoding);
        }
    }
    Ok(())
}

/// Build an element (without children) from a start tag, resolving namespaces and checking
/// names, attribute values and duplicates.
fn build_element(start: &BytesStart<'_>, resolver: &NamespaceResolver) -> Result<Element, XmlError> {
    let qname = start.name();
    let (resolved, local) = resolver.resolve_element(qname);
    check_qname(qname.as_ref())?;
    let namespace = match resolved {
        ResolveResult::Bound(ns) => ns.as_ref().to_owned(),
        ResolveResult::Unbound => {
            return Err(XmlError::InvalidNamespace(format!("element '{}' has no namespace", qname.as_ref())));
        }
        ResolveResult::Unknown(prefix) => {
            return Err(XmlError::NotWellFormed(format!("unbound prefix '{prefix}'")));
        }
    };
    let mut el = Element::bare(local.as_ref(), namespace);
    for attr in start.attributes() {
        let attr = attr.map_err(|e| XmlError::NotWellFormed(format!("attribute: {e}")))?;
        let key = attr.key.as_ref();
        check_qname(key)?;
        if attr.value.contains('<') {
            return Err(XmlError::NotWellFormed("'<' in an attribute value".into()));
        }
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|e| match e {
                quick_xml::Error::Escape(quick_xml::escape::EscapeError::UnrecognizedEntity(..)) => XmlError::Restricted("undefined entity reference"),
                other => XmlError::NotWellFormed(format!("attribute value: {other}")),
            })?;
        check_chars(&value)?;
        if let Some(binding) = attr.key.as_namespace_binding() {
            // Namespace declarations are not attributes of the tree (minidom derives them
            // on output). Binding the reserved prefixes is an error (Namespaces in XML §3).
            if let quick_xml::name::PrefixDeclaration::Named(prefix) = binding {
                if prefix == "xmlns" || (prefix == "xml" && value != ns::XML) {
                    return Err(XmlError::NotWellFormed("reserved prefix rebound".into()));
                }
            }
            continue;
        }
        let (resolved, attr_local) = resolver.resolve_attribute(attr.key);
        let attr_ns: Namespace<'static> = match resolved {
            ResolveResult::Unbound => Namespace::NONE,
            ResolveResult::Bound(ns) if ns.as_ref() == ns::XML => Namespace::xml().clone(),
            ResolveResult::Bound(ns) => Namespace::from(ns.as_ref().to_owned()),
            ResolveResult::Unknown(prefix) => {
                return Err(XmlError::NotWellFormed(format!("unbound prefix '{prefix}'")));
            }
        };
        let name = NcName::try_from(attr_local.as_ref())
            .map_err(|_| XmlError::NotWellFormed(format!("bad attribute name '{key}'")))?;
        let value = match value {
            Cow::Borrowed(s) => s.to_owned(),
            Cow::Owned(s) => s,
        };
        // quick-xml's duplicate check compares raw names; `a:x` and `b:x` bound to the same
        // namespace are still duplicates (Namespaces in XML §6.3).
        if el.attrs_mut().insert(attr_ns, name, value).is_some() {
            return Err(XmlError::NotWellFormed(format!("duplicate attribute '{key}'")));
        }
    }
    Ok(el)
}

/// A qualified name: `NCName` or `NCName:NCName`.
fn check_qname(name: &str) -> Result<(), XmlError> {
    let ok = match name.split_once(':') {
        Some((prefix, local)) => NcName::try_from(prefix).is_ok() && NcName::try_from(local).is_ok(),
        None => NcName::try_from(name).is_ok(),
    };
    if ok { Ok(()) } else { Err(XmlError::NotWellFormed(format!("bad name '{name}'"))) }
}

/// XML 1.0 `Char`: #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF].
/// Surrogates cannot occur in a Rust `str`.
pub(crate) fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{FFFD}' | '\u{10000}'..)
        && !matches!(c, '\u{FFFE}' | '\u{FFFF}')
}

fn check_chars(s: &str) -> Result<(), XmlError> {
    // Fast path: printable ASCII and whitespace are by far the most common.
    if s.bytes().all(|b| b >= 0x20 && b < 0x80 || matches!(b, b'\t' | b'\n' | b'\r')) {
        return Ok(());
    }
    match s.chars().find(|&c| !is_xml_char(c)) {
        Some(c) => Err(XmlError::NotWellFormed(format!("illegal character U+{:04X}", c as u32))),
        None => Ok(()),
    }
}
