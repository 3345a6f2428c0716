//! The XML layer: one parser (quick-xml) turned into [`Element`] trees with the checks of
//! RFC 6120 §11 (restricted XML), and one writer that re-serialises every tree it sends.

mod element;
pub mod ns;
mod reader;
mod tree;
mod writer;

pub use reader::{Input, ReadStats, StreamReader, parse_element};
pub use tree::{Limits, XmlError};
pub use writer::{stream_footer, stream_header, write_element, StreamHeader};
pub(crate) use writer::escape_attr;

pub use element::{Attr, Element, ElementBuilder, Namespace, Node, Serialised};

/// The longest namespace name written the usual way, as a default declaration on each
/// element that starts it (see `writer.rs`), and the longest a client may bind on its stream
/// header (see `tree.rs`). Every protocol namespace is far shorter.
pub(crate) const SHORT_NAMESPACE: usize = 64;

/// Something the stream reader produced.
#[derive(Debug)]
pub enum StreamEvent {
    /// `<stream:stream ...>`: the root element with its attributes and no children.
    Open(Element),
    /// A complete first-level child of the stream: a stanza or a nonza.
    Element(Element),
    /// `</stream:stream>`.
    Close,
}

/// Build an element in `ns` with `attrs`; the short way for server-made stanzas.
pub fn element(name: &str, ns: &'static str, attrs: &[(&str, &str)]) -> Element {
    let mut el = Element::bare(name, ns);
    for (k, v) in attrs {
        el.set_attr(k, *v);
    }
    el
}

/// Set (or replace) an unqualified attribute.
pub fn set_attr(el: &mut Element, name: &str, value: impl Into<String>) {
    el.set_attr(name, value);
}

/// Remove an unqualified attribute if present.
pub fn remove_attr(el: &mut Element, name: &str) {
    el.remove_attr(name);
}

/// The value of `xml:lang` on an element.
pub fn xml_lang(el: &Element) -> Option<&str> {
    el.attr_ns(ns::XML, "lang")
}

/// A child element with text content: `<name xmlns=ns>text</name>`.
pub fn text_element(name: &str, ns: &'static str, text: &str) -> Element {
    let mut el = Element::bare(name, ns);
    el.append_text(text);
    el
}

/// Serialise one element on its own (with its namespace declared), for storage and logs.
pub fn to_string(el: &Element) -> String {
    let mut out = Vec::new();
    write_element(&mut out, el, "");
    String::from_utf8(out).expect("the writer only emits UTF-8")
}
