//! Arbitrary bytes through the network stream reader (in fuzzer-chosen chunks) and through
//! `parse_element`. Nothing may panic, and every element either accepts is re-serialised by
//! `write_element` and must parse back to the same tree.
//!
//! Input layout: byte 0 = mode flags, bytes 1..4 = chunk sizes (cycled), the rest = body.
//!   bit 0: prefix the body with a client stream header (so the fuzzer starts inside a stream)
//!   bit 1: small limits (1 KiB stanzas, depth 8) instead of effectively unlimited ones

#![no_main]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use libfuzzer_sys::fuzz_target;
use starling::xml::{Element, Input, Limits, ReadStats, StreamEvent, StreamReader, XmlError, parse_element, write_element};

const HEAD: &[u8] = b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";
const STREAMS: &str = "http://etherx.jabber.org/streams";

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (control, body) = data.split_at(4);
    let with_header = control[0] & 1 != 0;
    let small = control[0] & 2 != 0;
    let chunks: Vec<usize> = control[1..].iter().map(|&b| b as usize % 64 + 1).collect();
    let mut input = Vec::with_capacity(HEAD.len() + body.len());
    if with_header {
        input.extend_from_slice(HEAD);
    }
    input.extend_from_slice(body);
    let limits = if small {
        Limits { max_stanza_bytes: 1024, max_depth: 8, ..Limits::default() }
    } else {
        Limits { max_stanza_bytes: 1 << 30, ..Limits::default() }
    };

    let chunked = read_stream(&input, &chunks, limits);
    for event in chunked.iter().flatten() {
        if let StreamEvent::Element(el) = event {
            // Never a stream header inside the stream (stanza smuggling).
            assert!(!has_stream_header(el), "a nested stream header got through");
            check_round_trip(el);
        }
    }
    // Two byte-order marks before the document: quick-xml skips the first only when it
    // arrives whole, so that case depends on the chunks (reported; one BOM is consistent).
    let two_boms = !with_header && body.starts_with(b"\xEF\xBB\xBF\xEF\xBB\xBF");
    if !small && !two_boms {
        // Where the chunk boundaries fall changes nothing (the size budget aside, which is
        // checked between reads and so may trip at a different point).
        let whole = read_stream(&input, &[], limits);
        assert_eq!(format!("{chunked:?}"), format!("{whole:?}"), "chunking changed the result");
    }

    if let Ok(text) = std::str::from_utf8(body) {
        if let Ok(el) = parse_element(text) {
            check_round_trip(&el);
        }
    }
});

/// Written inside a stream (what a recipient sees) and standalone (what storage keeps), the
/// element must read back as itself.
fn check_round_trip(el: &Element) {
    // A stored document may be anything; one with a stream header in it cannot go into a
    // stream (the reader refuses it, checked above), so only its standalone form is checked.
    if !has_stream_header(el) {
        check_network_round_trip(el);
    }
    // Known bug (reported): an element of the streams namespace below the top is written
    // with an undeclared `stream:` prefix when standalone.
    if has_streams_descendant(el) {
        return;
    }
    let mut out = Vec::new();
    write_element(&mut out, el, "");
    let text = String::from_utf8(out).expect("the writer emits UTF-8");
    match parse_element(&text) {
        Ok(again) => assert_eq!(&again, el, "standalone round trip: {text}"),
        Err(e) => panic!("our own output {text:?} does not parse: {e}"),
    }
}

fn check_network_round_trip(el: &Element) {
    let mut out = HEAD.to_vec();
    write_element(&mut out, el, "jabber:client");
    out.extend_from_slice(b"</stream:stream>");
    let events = read_stream(&out, &[], Limits { max_stanza_bytes: 1 << 30, max_depth: 1 << 20, ..Limits::default() });
    match &events[..] {
        [Ok(StreamEvent::Open(_)), Ok(StreamEvent::Element(again)), Ok(StreamEvent::Close)] => {
            assert_eq!(again, el, "network round trip: {}", String::from_utf8_lossy(&out));
        }
        other => panic!("our own output {:?} reads as {other:?}", String::from_utf8_lossy(&out)),
    }
}

fn has_stream_header(el: &Element) -> bool {
    el.is("stream", STREAMS) || el.children().any(has_stream_header)
}

fn has_streams_descendant(el: &Element) -> bool {
    el.children().any(|c| c.ns() == STREAMS || has_streams_descendant(c))
}

/// All events up to the close or the first error.
fn read_stream(input: &[u8], chunks: &[usize], limits: Limits) -> Vec<Result<StreamEvent, XmlError>> {
    let source = Chunked { data: input, sizes: chunks, next: 0 };
    let mut reader = StreamReader::new(Input::new(source, ReadStats::new()), limits);
    let mut events = Vec::new();
    block_on(async {
        loop {
            let event = reader.next().await;
            let done = !matches!(event, Ok(StreamEvent::Open(_) | StreamEvent::Element(_)));
            events.push(event);
            if done {
                break;
            }
        }
    });
    events
}

struct Chunked<'a> {
    data: &'a [u8],
    sizes: &'a [usize],
    next: usize,
}

impl tokio::io::AsyncRead for Chunked<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, out: &mut tokio::io::ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let size = if self.sizes.is_empty() { usize::MAX } else { self.sizes[self.next % self.sizes.len()] };
        self.next += 1;
        let n = size.min(self.data.len()).min(out.remaining());
        out.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(()))
    }
}

/// The input is in memory and always ready: one poll completes the future.
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(std::task::Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("in-memory input never blocks"),
    }
}
