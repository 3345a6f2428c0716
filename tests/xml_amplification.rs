//! Property test: what the XML layer keeps in memory, and what it writes out again, stays
//! within a small constant of the bytes it was given, however those bytes are arranged.
//!
//! The inputs are the shapes of the namespace-amplification attack (issue 10, SECURITY.md
//! T10a): long and short namespace names bound on the stream header, on the stanza or on each
//! element, used by many elements and prefixed attributes, nested or flat, with text that
//! needs escaping; under the limits before login (16 KiB) and after (256 KiB).
//!
//! Memory is measured, not estimated: this test binary counts every allocation of its own
//! thread (a counting global allocator), so "retained" is what the parsed stanzas really
//! hold, and "peak" the most the parse ever had allocated at once.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use futures_util::FutureExt;
use proptest::prelude::*;
use starling::xml::{Element, Input, Limits, ReadStats, StreamEvent, StreamReader, XmlError, write_element};

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn add(n: isize) {
    // `try_with`: the thread's own storage may be gone while it exits.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + n;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counters only
// observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.with(Cell::get)
}

fn reset_peak() -> isize {
    let now = live();
    PEAK.with(|p| p.set(now));
    now
}

fn peak() -> isize {
    PEAK.with(Cell::get)
}

/// Bytes held per input byte, at most: an element as small as `<b/>` (4 bytes) takes a
/// child slot (96 bytes, and its vector may have grown to twice what it uses) and its name.
const MEMORY_PER_BYTE: usize = 64;
/// Bytes written per input byte, at most: `<x:b/>` with `x` bound to a 64-character
/// namespace is written `<b xmlns='…64…'/>`.
const OUTPUT_PER_BYTE: usize = 16;

#[derive(Debug, Clone)]
struct Attack {
    /// Length of the namespace name the prefix `x` is bound to.
    ns_len: usize,
    /// Where `x` is bound: 0 the stream header, 1 the stanza, 2 every element.
    bound_on: u8,
    /// Child elements of the stanza.
    elements: usize,
    /// Elements nest this deep, in runs (1: flat).
    nesting: usize,
    /// `x:`-prefixed attributes per element.
    attrs: usize,
    /// Text inside each element, written with characters that need escaping.
    text: String,
    logged_in: bool,
    /// The stanza is left open (as in the attack: held until the auth timeout).
    unclosed: bool,
}

fn attack() -> impl Strategy<Value = Attack> {
    (
        prop_oneof![Just(4usize), Just(40), Just(64), Just(65), 1usize..400, Just(15_000)],
        0u8..3,
        prop_oneof![0usize..20, 20usize..3_000],
        prop_oneof![Just(1usize), 2usize..48],
        0usize..4,
        "[a-z'\"<>&\\]]{0,12}",
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(ns_len, bound_on, elements, nesting, attrs, text, logged_in, unclosed)| Attack {
            ns_len,
            bound_on,
            elements,
            nesting,
            attrs,
            text,
            logged_in,
            unclosed,
        })
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn render(a: &Attack) -> String {
    let ns = format!("urn:{}", "n".repeat(a.ns_len.saturating_sub(4)));
    let declare = format!(" xmlns:x='{ns}'");
    let mut doc = String::from("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'");
    if a.bound_on == 0 {
        doc.push_str(&declare);
    }
    doc.push_str("><message to='a@b'");
    if a.bound_on == 1 {
        doc.push_str(&declare);
    }
    doc.push('>');
    let mut open = 0;
    for i in 0..a.elements {
        doc.push_str("<x:b");
        if a.bound_on == 2 {
            doc.push_str(&declare);
        }
        for j in 0..a.attrs {
            doc.push_str(&format!(" x:a{j}='{}'", escape(&a.text).replace('\'', "&apos;")));
        }
        doc.push('>');
        doc.push_str(&escape(&a.text));
        open += 1;
        if (i + 1) % a.nesting == 0 || i + 1 == a.elements {
            for _ in 0..open {
                doc.push_str("</x:b>");
            }
            open = 0;
        }
    }
    if !a.unclosed {
        doc.push_str("</message>");
    }
    doc
}

/// Parse everything the reader gives for `doc`; the stanzas, and the error that ended it.
fn parse(doc: &[u8], limits: Limits) -> (Vec<Element>, Option<XmlError>) {
    let mut reader = StreamReader::new(Input::new(doc, ReadStats::new()), limits);
    let mut stanzas = Vec::new();
    loop {
        // The input is in memory: every read completes at once.
        match reader.next().now_or_never().expect("an in-memory read never waits") {
            Ok(StreamEvent::Element(el)) => stanzas.push(el),
            Ok(StreamEvent::Open(_)) => {}
            Ok(StreamEvent::Close) => return (stanzas, None),
            Err(e) => return (stanzas, Some(e)),
        }
    }
}

fn check(a: &Attack) -> Result<(), TestCaseError> {
    let doc = render(a);
    let input = doc.len();
    let limits = Limits { max_stanza_bytes: if a.logged_in { 256 * 1024 } else { 16 * 1024 }, ..Limits::default() };
    let before = reset_peak();
    let (stanzas, error) = parse(doc.as_bytes(), limits);
    let retained = (live() - before).max(0) as usize;
    let peak = (peak() - before).max(0) as usize;
    // Only the limits end a stream of well-formed input.
    if let Some(e) = &error {
        prop_assert!(
            matches!(e, XmlError::TooBig | XmlError::TreeTooBig | XmlError::TooDeep(_) | XmlError::InvalidNamespace(_) | XmlError::Eof),
            "{e:?}"
        );
    }
    prop_assert!(
        retained <= MEMORY_PER_BYTE * input,
        "{retained} bytes retained for {input} bytes in ({a:?})"
    );
    // While parsing, the reader's own buffers come on top, bounded by the stanza limit.
    prop_assert!(
        peak <= MEMORY_PER_BYTE * input + 2 * limits.max_stanza_bytes,
        "{peak} bytes at the peak for {input} bytes in ({a:?})"
    );
    let mut written = 0;
    for el in &stanzas {
        prop_assert!(el.heap_bytes() <= limits.max_stanza_bytes, "{} bytes in a tree", el.heap_bytes());
        let mut out = Vec::new();
        write_element(&mut out, el, "jabber:client");
        written += out.len();
        out.clear();
        write_element(&mut out, el, "");
        prop_assert!(out.len() <= OUTPUT_PER_BYTE * input + 512, "{} bytes stored for {input} in", out.len());
    }
    prop_assert!(written <= OUTPUT_PER_BYTE * input, "{written} bytes written for {input} bytes in ({a:?})");
    Ok(())
}

/// One test function, so that the counters see this thread only.
#[test]
fn memory_and_output_are_bounded_by_the_input() {
    // The attack of issue 10 itself, first: 2,600 uses of a 15,000-character namespace.
    for bound_on in 0..3 {
        for logged_in in [false, true] {
            let a = Attack {
                ns_len: 15_000,
                bound_on,
                elements: 2_600,
                nesting: 1,
                attrs: 0,
                text: String::new(),
                logged_in,
                unclosed: true,
            };
            check(&a).unwrap();
        }
    }
    let config = ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() };
    proptest!(config, |(a in attack())| { check(&a)?; });
}
