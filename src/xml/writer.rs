//! Element → bytes. Everything we send is re-serialised from a tree, never forwarded as the
//! bytes that arrived, so what a recipient parses is exactly what our parser understood.

use minidom::{Element, Node};

use super::ns;

/// The opening `<stream:stream>` we send.
pub struct StreamHeader<'a> {
    /// Content namespace: `jabber:client` or `jabber:server`.
    pub default_ns: &'a str,
    pub from: &'a str,
    pub to: Option<&'a str>,
    pub id: &'a str,
    pub lang: &'a str,
}

pub fn stream_header(out: &mut Vec<u8>, h: &StreamHeader<'_>) {
    out.extend_from_slice(b"<?xml version='1.0'?><stream:stream xmlns='");
    escape_attr(out, h.default_ns);
    out.extend_from_slice(b"' xmlns:stream='http://etherx.jabber.org/streams' version='1.0' from='");
    escape_attr(out, h.from);
    if let Some(to) = h.to {
        out.extend_from_slice(b"' to='");
        escape_attr(out, to);
    }
    out.extend_from_slice(b"' id='");
    escape_attr(out, h.id);
    out.extend_from_slice(b"' xml:lang='");
    escape_attr(out, h.lang);
    out.extend_from_slice(b"'>");
}

pub fn stream_footer(out: &mut Vec<u8>) {
    out.extend_from_slice(b"</stream:stream>");
}

/// Write `el` as it appears inside a context whose default namespace is `default_ns`
/// (`""` for a standalone document).
pub fn write_element(out: &mut Vec<u8>, el: &Element, default_ns: &str) {
    let el_ns = el.ns();
    write_inner(out, el, &el_ns, default_ns, true);
}

fn write_inner(out: &mut Vec<u8>, el: &Element, el_ns: &str, default_ns: &str, top: bool) {
    // First-level elements of a stream (<stream:features/>, <stream:error/>) use the
    // `stream:` prefix bound on the stream header; some clients match on the prefixed name.
    // Anywhere else the prefix is not declared, so the namespace is declared normally.
    let stream_prefixed = top && el_ns == ns::STREAMS && !default_ns.is_empty();
    out.push(b'<');
    if stream_prefixed {
        out.extend_from_slice(b"stream:");
    }
    out.extend_from_slice(el.name().as_bytes());
    let child_default = if stream_prefixed {
        default_ns
    } else {
        if el_ns != default_ns {
            out.extend_from_slice(b" xmlns='");
            escape_attr(out, el_ns);
            out.push(b'\'');
        }
        el_ns
    };
    let mut extra_prefixes = 0;
    for ((attr_ns, name), value) in el.attrs().iter() {
        out.push(b' ');
        let attr_ns: &str = attr_ns.as_str();
        if attr_ns.is_empty() {
        } else if attr_ns == ns::XML {
            out.extend_from_slice(b"xml:");
        } else {
            // A foreign-namespace attribute needs a prefix of its own.
            extra_prefixes += 1;
            let prefix = format!("ns{extra_prefixes}");
            out.extend_from_slice(b"xmlns:");
            out.extend_from_slice(prefix.as_bytes());
            out.extend_from_slice(b"='");
            escape_attr(out, attr_ns);
            out.extend_from_slice(b"' ");
            out.extend_from_slice(prefix.as_bytes());
            out.push(b':');
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b"='");
        escape_attr(out, value);
        out.push(b'\'');
    }
    let mut nodes = el.nodes().peekable();
    if nodes.peek().is_none() {
        out.extend_from_slice(b"/>");
        return;
    }
    out.push(b'>');
    for node in nodes {
        match node {
            Node::Element(child) => {
                let child_ns = child.ns();
                write_inner(out, child, &child_ns, child_default, false);
            }
            Node::Text(text) => escape_text(out, text),
        }
    }
    out.extend_from_slice(b"</");
    if stream_prefixed {
        out.extend_from_slice(b"stream:");
    }
    out.extend_from_slice(el.name().as_bytes());
    out.push(b'>');
}

fn escape_text(out: &mut Vec<u8>, text: &str) {
    let mut last = 0;
    for (i, b) in text.bytes().enumerate() {
        let rep: &[u8] = match b {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            // `>` only matters after `]]`, but escaping it always is simpler and safe.
            b'>' => b"&gt;",
            // A literal CR would be normalised to LF by the recipient's parser.
            b'\r' => b"&#xD;",
            _ => continue,
        };
        out.extend_from_slice(&text.as_bytes()[last..i]);
        out.extend_from_slice(rep);
        last = i + 1;
    }
    out.extend_from_slice(&text.as_bytes()[last..]);
}

fn escape_attr(out: &mut Vec<u8>, value: &str) {
    let mut last = 0;
    for (i, b) in value.bytes().enumerate() {
        let rep: &[u8] = match b {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'\'' => b"&apos;",
            b'"' => b"&quot;",
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
        assert!(text.contains("<body>&lt;b&gt; &amp; ]]&gt; &#xD;</body>"), "{text}");
    }

    #[test]
    fn declares_namespaces_only_where_they_change() {
        let (text, _) = roundtrip(
            "<iq xmlns='jabber:client' type='get' id='1'><query xmlns='jabber:iq:roster'><item jid='a@b'/></query></iq>",
        );
        // Attributes come out in name order (minidom keeps them in a sorted map).
        assert_eq!(
            text,
            "<iq xmlns='jabber:client' id='1' type='get'><query xmlns='jabber:iq:roster'><item jid='a@b'/></query></iq>"
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
}
