//! Element → bytes. Everything we send is re-serialised from a tree, never forwarded as the
//! bytes that arrived, so what a recipient parses is exactly what our parser understood.

use std::collections::HashMap;

use super::{Element, Node};

use super::ns;

/// The opening `<stream:stream>` we send.
pub struct StreamHeader<'a> {
    /// Content namespace: `jabber:client` or `jabber:server`.
    pub default_ns: &'a str,
    pub from: &'a str,
    pub to: Option<&'a str>,
    /// The stream id; "" for none (the initiating side of a stream sends none).
    pub id: &'a str,
    pub lang: &'a str,
}

pub fn stream_header(out: &mut Vec<u8>, h: &StreamHeader<'_>) {
    out.extend_from_slice(b"<?xml version='1.0'?><stream:stream xmlns='");
    escape_attr(out, h.default_ns);
    out.extend_from_slice(b"' xmlns:stream='http://etherx.jabber.org/streams'");
    if h.default_ns == ns::SERVER {
        // XEP-0220 §2.3: servers that do dialback declare its prefix on the stream, and
        // some match `db:result` by its prefix.
        out.extend_from_slice(b" xmlns:db='jabber:server:dialback'");
    }
    out.extend_from_slice(b" version='1.0' from='");
    escape_attr(out, h.from);
    if let Some(to) = h.to {
        out.extend_from_slice(b"' to='");
        escape_attr(out, to);
    }
    if !h.id.is_empty() {
        out.extend_from_slice(b"' id='");
        escape_attr(out, h.id);
    }
    out.extend_from_slice(b"' xml:lang='");
    escape_attr(out, h.lang);
    out.extend_from_slice(b"'>");
}

pub fn stream_footer(out: &mut Vec<u8>) {
    out.extend_from_slice(b"</stream:stream>");
}

/// A namespace longer than this that would be declared more than once in one element's
/// output is declared once, with a prefix, on the top element. Shorter ones are declared as
/// the default namespace where they start, as every XMPP server does: some clients match
/// elements by their literal `xmlns` attribute (Conversations does) and would not see a
/// prefixed element.
const INLINE_NS_MAX: usize = super::SHORT_NAMESPACE;

/// Write `el` as it appears inside a context whose default namespace is `default_ns`
/// (`""` for a standalone document).
///
/// What is written stays within a small constant of what the tree holds: a namespace is
/// declared once per subtree that uses it, never once per element (see [`Hoisted`]).
pub fn write_element(out: &mut Vec<u8>, el: &Element, default_ns: &str) {
    let hoisted = Hoisted::plan(el, default_ns);
    write_inner(out, el, default_ns, Top::Stanza, &hoisted);
}

/// Whether `el` is written without hoisted declarations (as ordinary stanzas are).
pub(crate) fn hoists_nothing(el: &Element) -> bool {
    Hoisted::plan(el, el.ns()).order.is_empty()
}

/// Nodes of an element that [`hoists_nothing`], written where `default_ns` is the default
/// namespace, none using the stream's prefix: bytes that mean the same inside any element
/// whose children see `default_ns` as their default namespace, in a stream or out of one
/// (see [`Element::share_content`]).
pub(crate) fn write_nodes(out: &mut Vec<u8>, nodes: &[Node], default_ns: &str) {
    let hoisted = Hoisted { order: Vec::new(), index: HashMap::new(), last: std::cell::Cell::new(None) };
    for node in nodes {
        match node {
            Node::Element(child) => write_inner(out, child, default_ns, Top::Nested, &hoisted),
            Node::Text(text) => escape_text(out, text),
            Node::Serialised(s) => out.extend_from_slice(s.as_str().as_bytes()),
        }
    }
}

/// Where an element is written: whether it declares the hoisted namespaces, and whether it
/// may be a first-level element of a stream, which takes the stream's prefix.
#[derive(Clone, Copy, PartialEq)]
enum Top {
    Stanza,
    /// A child written apart from its parent ([`write_nodes`]).
    Nested,
    Inner,
}

/// The namespaces declared once on the top element, with prefixes `h0`, `h1`…: long
/// namespaces of elements that would otherwise be declared more than once, and namespaces
/// of foreign attributes used more than once. Empty (and free) for ordinary stanzas.
struct Hoisted<'a> {
    order: Vec<&'a str>,
    index: HashMap<&'a str, usize>,
    /// The last namespace looked up, by address and length: the elements of one namespace
    /// share one string, so a long name is hashed once, not once per element.
    last: std::cell::Cell<Option<(NameAddress, Option<usize>)>>,
}

/// A namespace string's address and length.
type NameAddress = (usize, usize);

fn key(s: &str) -> (usize, usize) {
    (s.as_ptr() as usize, s.len())
}

/// Equal strings, without reading them when they are the same string.
fn same(a: &str, b: &str) -> bool {
    key(a) == key(b) || a == b
}

impl<'a> Hoisted<'a> {
    fn plan(el: &'a Element, default_ns: &str) -> Hoisted<'a> {
        struct Counts<'a> {
            seen: HashMap<&'a str, usize>,
            last: Option<(&'a str, usize)>,
        }
        impl<'a> Counts<'a> {
            fn bump(&mut self, ns: &'a str) {
                if let Some((last, n)) = &mut self.last
                    && key(last) == key(ns)
                {
                    *n += 1;
                    return;
                }
                self.flush();
                self.last = Some((ns, 1));
            }
            fn flush(&mut self) {
                if let Some((ns, n)) = self.last.take() {
                    *self.seen.entry(ns).or_default() += n;
                }
            }
        }
        fn count<'a>(el: &'a Element, parent_default: &str, counts: &mut Counts<'a>) {
            if !same(el.ns(), parent_default) && el.ns().len() > INLINE_NS_MAX {
                counts.bump(el.ns());
            }
            for a in el.attrs().filter(|a| !a.ns.is_empty() && a.ns.as_str() != ns::XML) {
                counts.bump(a.ns.as_str());
            }
            if el.written_content(el.ns()).is_some() {
                // Written already, with its own declarations (and written anew, declaring
                // as it goes, only if this element ends up prefixed).
                return;
            }
            for child in el.children() {
                count(child, el.ns(), counts);
            }
        }
        let mut counts = Counts { seen: HashMap::new(), last: None };
        count(el, default_ns, &mut counts);
        counts.flush();
        let mut order: Vec<&str> = counts.seen.into_iter().filter(|&(_, n)| n > 1).map(|(ns, _)| ns).collect();
        // A stable output for the same tree.
        order.sort_unstable();
        let index = order.iter().enumerate().map(|(i, &ns)| (ns, i)).collect();
        Hoisted { order, index, last: std::cell::Cell::new(None) }
    }

    fn get(&self, ns: &str) -> Option<usize> {
        if self.order.is_empty() {
            return None;
        }
        if let Some((k, found)) = self.last.get()
            && k == key(ns)
        {
            return found;
        }
        let found = self.index.get(ns).copied();
        self.last.set(Some((key(ns), found)));
        found
    }
}

fn write_inner(out: &mut Vec<u8>, el: &Element, default_ns: &str, top: Top, hoisted: &Hoisted<'_>) {
    let el_ns = el.ns();
    // First-level elements of a stream (<stream:features/>, <stream:error/>) use the
    // `stream:` prefix bound on the stream header; some clients match on the prefixed name.
    // Anywhere else the prefix is not declared, so the namespace is declared normally.
    let stream_prefixed = top == Top::Stanza && el_ns == ns::STREAMS && !default_ns.is_empty();
    let prefix = if stream_prefixed {
        Some(Prefix::Stream)
    } else if same(el_ns, default_ns) {
        None
    } else {
        hoisted.get(el_ns).map(Prefix::Hoisted)
    };
    out.push(b'<');
    write_qname(out, prefix, el.name());
    let child_default = match prefix {
        Some(_) => default_ns,
        None => {
            if !same(el_ns, default_ns) {
                out.extend_from_slice(b" xmlns='");
                escape_attr(out, el_ns);
                out.push(b'\'');
            }
            el_ns
        }
    };
    if top != Top::Inner {
        for (i, ns) in hoisted.order.iter().enumerate() {
            out.extend_from_slice(format!(" xmlns:h{i}='").as_bytes());
            escape_attr(out, ns);
            out.push(b'\'');
        }
    }
    for (i, attr) in el.attrs().enumerate() {
        let attr_ns = attr.ns.as_str();
        out.push(b' ');
        if attr_ns.is_empty() {
        } else if attr_ns == ns::XML {
            out.extend_from_slice(b"xml:");
        } else if let Some(h) = hoisted.get(attr_ns) {
            out.extend_from_slice(format!("h{h}:").as_bytes());
        } else {
            // Used by this attribute only (else it would be hoisted): declared right here.
            out.extend_from_slice(format!("xmlns:a{i}='").as_bytes());
            escape_attr(out, attr_ns);
            out.extend_from_slice(format!("' a{i}:").as_bytes());
        }
        out.extend_from_slice(attr.name.as_bytes());
        out.push(b'=');
        quoted(out, &attr.value);
    }
    let mut nodes = el.nodes().peekable();
    if nodes.peek().is_none() {
        out.extend_from_slice(b"/>");
        return;
    }
    out.push(b'>');
    if let Some(written) = el.written_content(child_default) {
        out.extend_from_slice(written.as_bytes());
        nodes = [].iter().peekable();
    }
    for node in nodes {
        match node {
            Node::Element(child) => write_inner(out, child, child_default, Top::Inner, hoisted),
            Node::Text(text) => escape_text(out, text),
            // Self-contained (see `Serialised`): the same in any context.
            Node::Serialised(s) => out.extend_from_slice(s.as_str().as_bytes()),
        }
    }
    out.extend_from_slice(b"</");
    write_qname(out, prefix, el.name());
    out.push(b'>');
}

#[derive(Clone, Copy)]
enum Prefix {
    Stream,
    Hoisted(usize),
}

fn write_qname(out: &mut Vec<u8>, prefix: Option<Prefix>, name: &str) {
    match prefix {
        None => {}
        Some(Prefix::Stream) => out.extend_from_slice(b"stream:"),
        Some(Prefix::Hoisted(i)) => out.extend_from_slice(format!("h{i}:").as_bytes()),
    }
    out.extend_from_slice(name.as_bytes());
}

/// Character data. Only what XML requires is escaped, so that what we write is never
/// larger than a peer could make us write by sending the same text in its shortest form.
fn escape_text(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    let mut last = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let rep: &[u8] = match b {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            // `]]>` may not appear in character data (XML 1.0 §2.4).
            b'>' if i >= 2 && &bytes[i - 2..i] == b"]]" => b"&gt;",
            // A literal CR would be normalised to LF by the recipient's parser.
            b'\r' => b"&#xD;",
            _ => continue,
        };
        out.extend_from_slice(&bytes[last..i]);
        out.extend_from_slice(rep);
        last = i + 1;
    }
    out.extend_from_slice(&bytes[last..]);
}

/// An attribute value with its quotes: `'…'`, or `"…"` when the value holds an apostrophe
/// and no quotation mark, so that neither needs escaping.
fn quoted(out: &mut Vec<u8>, value: &str) {
    let quote = if value.contains('\'') && !value.contains('"') { b'"' } else { b'\'' };
    out.push(quote);
    escape_attr_value(out, value, quote);
    out.push(quote);
}

/// An attribute value inside `'…'`.
pub(crate) fn escape_attr(out: &mut Vec<u8>, value: &str) {
    escape_attr_value(out, value, b'\'');
}

fn escape_attr_value(out: &mut Vec<u8>, value: &str, quote: u8) {
    let mut last = 0;
    for (i, b) in value.bytes().enumerate() {
        let rep: &[u8] = match b {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'\'' if quote == b'\'' => b"&apos;",
            b'"' if quote == b'"' => b"&quot;",
            // Attribute-value normalisation would turn these into spaces.
            b'\t' => b"&#x9;",
            b'\n' => b"&#xA;",
            b'\r' => b"&#xD;",
            _ => continue,
        };
        out.extend_from_slice(&value.as_bytes()[last..i]);
        out.extend_from_slice(rep);
        last = i + 1;
    }
    out.extend_from_slice(&value.as_bytes()[last..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::parse_element;

    fn roundtrip(xml: &str) -> (String, Element) {
        let el = parse_element(xml).unwrap();
        let mut out = Vec::new();
        write_element(&mut out, &el, "");
        let text = String::from_utf8(out).unwrap();
        let again = parse_element(&text).unwrap();
        assert_eq!(el, again, "{text}");
        (text, el)
    }

    #[test]
    fn escapes_and_round_trips() {
        let (text, _) = roundtrip(
            "<message xmlns='jabber:client' to='a&amp;b' id='&apos;&quot;&#x9;&#xA;&#xD;'><body>&lt;b&gt; &amp; ]]&gt; &#xD;</body></message>",
        );
        assert!(text.starts_with("<message xmlns='jabber:client' "), "{text}");
        // `>` is escaped only where `]]>` would otherwise appear.
        assert!(text.contains("<body>&lt;b> &amp; ]]&gt; &#xD;</body>"), "{text}");
        // An apostrophe in a value picks the other quote rather than an escape.
        let (text, _) = roundtrip("<message xmlns='jabber:client' id=\"it's\"/>");
        assert!(text.contains("id=\"it's\""), "{text}");
    }

    /// A long namespace used by many elements (declared once on the stream header or the
    /// stanza, then used through a prefix) is declared once, not once per element.
    #[test]
    fn a_long_namespace_is_declared_once_per_stanza() {
        let long = format!("urn:{}", "x".repeat(15_000));
        let mut input = format!("<message xmlns='jabber:client' xmlns:x='{long}'>");
        for _ in 0..100 {
            input.push_str("<x:b><x:c x:a='1'/></x:b><y xmlns='urn:y'/>");
        }
        input.push_str("</message>");
        let (text, el) = roundtrip(&input);
        assert_eq!(text.matches(long.as_str()).count(), 1, "declared more than once");
        assert!(text.len() < input.len() * 11 / 10, "{} bytes out for {} in", text.len(), input.len());
        // Short namespaces keep the usual form: a default declaration on the element.
        assert_eq!(text.matches("<y xmlns='urn:y'/>").count(), 100);
        assert_eq!(el.children().count(), 200);
        // In a stream, the same.
        let mut out = Vec::new();
        write_element(&mut out, &el, ns::CLIENT);
        assert_eq!(String::from_utf8(out).unwrap().matches(long.as_str()).count(), 1);
    }

    /// Attributes of one foreign namespace on several elements share one declaration.
    #[test]
    fn foreign_attributes_share_a_declaration() {
        let (text, _) = roundtrip(
            "<iq xmlns='jabber:client' xmlns:p='urn:p' xmlns:q='urn:q' p:a='1'><c p:b='2' q:c='3'/><d p:e='4'/></iq>",
        );
        assert_eq!(text.matches("'urn:p'").count(), 1, "{text}");
        assert_eq!(text.matches("'urn:q'").count(), 1, "{text}");
    }

    #[test]
    fn declares_namespaces_only_where_they_change() {
        let (text, _) = roundtrip(
            "<iq xmlns='jabber:client' type='get' id='1'><query xmlns='jabber:iq:roster'><item jid='a@b'/></query></iq>",
        );
        // Attributes come out in the order they came in.
        assert_eq!(
            text,
            "<iq xmlns='jabber:client' type='get' id='1'><query xmlns='jabber:iq:roster'><item jid='a@b'/></query></iq>"
        );
    }

    #[test]
    fn foreign_and_xml_attributes() {
        let (text, el) = roundtrip(
            "<message xmlns='jabber:client' xml:lang='en' xmlns:x='urn:x' x:a='1'><body xml:lang='fr'>salut</body></message>",
        );
        assert_eq!(crate::xml::xml_lang(&el), Some("en"));
        assert!(text.contains("xml:lang='en'"), "{text}");
        assert!(text.contains(":a='1'"), "{text}");
    }

    /// A serialised element written into another means what the element itself would there:
    /// whatever the namespaces around it and in it (a foreign one with a prefix, long ones
    /// declared once on top, in the outer tree as well as the inner one). One in no namespace
    /// (which the parser never makes) says so, so as not to take its new parent's.
    #[test]
    fn serialised_elements_mean_the_same_anywhere() {
        use crate::xml::Serialised;
        let long = format!("urn:{}", "l".repeat(100));
        let inner = [
            "<message xmlns='jabber:client' to='a@b' type='chat'><body>a &amp; b &lt; c</body></message>".to_string(),
            "<message xmlns='jabber:client'><e:y xmlns:e='urn:e' e:a='1' xml:lang='en'/><z xmlns='urn:z'><z/></z></message>".to_string(),
            format!("<message xmlns='jabber:client' xmlns:l='{long}'><l:a/><l:b l:c='2'/></message>"),
        ];
        for text in &inner {
            let el = parse_element(text).unwrap();
            let serialised = Serialised::of(&el);
            if !el.ns().is_empty() {
                assert_eq!(serialised.as_str(), crate::xml::to_string(&el));
            }
            for outer_ns in ["urn:xmpp:forward:0", "jabber:client"] {
                // The outer tree uses the long namespace too, so it hoists it on its own top.
                let outer = |child: Option<Element>| {
                    let mut root = Element::bare("r", ns::CLIENT);
                    root.append_child(Element::bare("u", long.clone()));
                    root.append_child(Element::bare("v", long.clone()));
                    let mut wrapper = Element::bare("w", outer_ns);
                    match child {
                        Some(c) => {
                            wrapper.append_child(c);
                        }
                        None => wrapper.append_serialised(serialised.clone()),
                    }
                    root.append_child(wrapper);
                    root
                };
                for context in ["", ns::CLIENT] {
                    let mut out = Vec::new();
                    write_element(&mut out, &outer(None), context);
                    let written = String::from_utf8(out).unwrap();
                    // As a client would read it in its stream.
                    let document = if context.is_empty() { written.clone() } else { written.replacen("<r", "<r xmlns='jabber:client'", 1) };
                    assert_eq!(parse_element(&document).unwrap(), outer(Some(el.clone())), "{written}");
                }
            }
        }
        let mut none = Element::bare("m", "");
        none.append_child(Element::bare("c", ""));
        assert_eq!(Serialised::of(&none).as_str(), "<m xmlns=''><c/></m>");
    }

    #[test]
    fn stream_elements_are_prefixed_in_a_stream() {
        let el = Element::builder("features", ns::STREAMS)
            .append(Element::bare("starttls", ns::TLS))
            .build();
        let mut out = Vec::new();
        write_element(&mut out, &el, ns::CLIENT);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:features>"
        );
    }

    /// A copy with shared children reads back as the same tree in every context it is
    /// written in (a stream of either namespace, a document, inside a prefixed parent), and
    /// changing one copy's children changes nothing in the others.
    #[test]
    fn shared_children_are_written_once_and_mean_the_same() {
        let long = format!("urn:{}", "l".repeat(100));
        let texts = [
            "<message xmlns='jabber:client' from='r@s/n' type='groupchat'><body>a &amp; b &lt; c ]]&gt;</body></message>".to_string(),
            "<message xmlns='jabber:client'><e:y xmlns:e='urn:e' e:a='1' xml:lang='en'/><z xmlns='urn:z'><z/></z>text</message>".to_string(),
            format!("<message xmlns='jabber:client' xmlns:l='{long}'><l:a/><l:b l:c='2'/><l:d><l:e/></l:d></message>"),
            "<message xmlns='jabber:client'><features xmlns='http://etherx.jabber.org/streams'/></message>".to_string(),
            "<message xmlns='jabber:client'/>".to_string(),
        ];
        for text in &texts {
            let plain = parse_element(text).unwrap();
            let mut shared = plain.clone();
            shared.share_content();
            assert_eq!(shared, plain);
            // A long namespace twice is declared once, on the top: such children are not
            // written apart, where each would declare it.
            assert_eq!(shared.written_content(ns::CLIENT).is_none(), text.contains(&long), "{text}");
            let mut copy = shared.clone();
            copy.set_attr("to", "x@y/z");
            let mut addressed = plain.clone();
            addressed.set_attr("to", "x@y/z");
            for context in ["", ns::CLIENT, ns::SERVER] {
                let write = |el: &Element| {
                    let mut out = Vec::new();
                    write_element(&mut out, el, context);
                    String::from_utf8(out).unwrap()
                };
                let written = write(&copy);
                let document = if context.is_empty() { written.clone() } else { format!("<s xmlns='{context}' xmlns:stream='http://etherx.jabber.org/streams'>{written}</s>") };
                let read = parse_element(&document).unwrap();
                let read = if context.is_empty() { read } else { read.children().next().unwrap().clone() };
                assert_eq!(read, addressed, "{written}");
                if context == ns::CLIENT {
                    assert_eq!(written, write(&addressed), "the same bytes as unshared where the children's context is the same");
                }
                // Under a parent that hoists the message's namespace, the message is
                // prefixed and its children are written anew.
                let mut parent = Element::bare("p", "urn:p");
                parent.append_child(copy.clone());
                parent.append_child(copy.clone());
                let mut expected = Element::bare("p", "urn:p");
                expected.append_child(addressed.clone());
                expected.append_child(addressed.clone());
                let written = write(&parent);
                assert_eq!(parse_element(&written).unwrap(), expected, "{written}");
            }
            let mut changed = copy.clone();
            changed.append_child(Element::bare("delay", ns::DELAY));
            assert!(changed.has_child("delay", ns::DELAY));
            assert!(!copy.has_child("delay", ns::DELAY) && !shared.has_child("delay", ns::DELAY));
            assert!(crate::xml::to_string(&changed).contains("delay"));
            assert!(!crate::xml::to_string(&copy).contains("delay"));
        }
    }
}
