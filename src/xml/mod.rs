//! The XML layer: one parser (quick-xml) turned into `minidom` trees with the checks of
//! RFC 6120 §11 (restricted XML), and one writer that re-serialises every tree it sends.

pub mod ns;
mod reader;
mod tree;
mod writer;

pub use reader::{Input, ReadStats, StreamReader, parse_element};
pub use tree::{Limits, XmlError};
pub use writer::{stream_footer, stream_header, write_element, StreamHeader};

pub use minidom::Element;

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
pub fn element(name: &str, ns: &str, attrs: &[(&str, &str)]) -> Element {
    let mut el = Element::bare(name, ns);
    for (k, v) in attrs {
        set_attr(&mut el, k, *v);
    }
    el
}

/// Set (or replace) an unqualified attribute. Panics only on an invalid attribute *name*,
/// which is always a literal in our code.
pub fn set_attr(el: &mut Element, name: &str, value: impl Into<String>) {
    let name = minidom::rxml::NcName::try_from(name).expect("attribute names are literals");
    let value = value.into();
    match el.attrs_mut().get_mut(&minidom::rxml::Namespace::NONE, &name) {
        Some(v) => *v = value,
        None => {
            el.attrs_mut().insert(minidom::rxml::Namespace::NONE, name, value);
        }
    }
}

/// Remove an unqualified attribute if present.
pub fn remove_attr(el: &mut Element, name: &str) {
    el.attrs_mut().remove(&minidom::rxml::Namespace::NONE, name);
}

/// The value of `xml:lang` on an element.
pub fn xml_lang(el: &Element) -> Option<&str> {
    el.attr_ns(minidom::rxml::Namespace::xml(), "lang")
}

/// A child element with text content: `<name xmlns=ns>text</name>`.
pub fn text_element(name: &str, ns: &str, text: &str) -> Element {
    let mut el = Element::bare(name, ns);
    if !text.is_empty() {
        el.append_text(text);
    }
    el
}

/// Serialise one element on its own (with its namespace declared), for storage and logs.
pub fn to_string(el: &Element) -> String {
    let mut out = Vec::new();
    write_element(&mut out, el, "");
    String::from_utf8(out).expect("the writer only emits UTF-8")
}
