//! Arbitrary bytes inside a client stream, under the limits before login (16 KiB) and after
//! (256 KiB): every stanza that comes out holds no more than the stanza limit once parsed,
//! and what it is written as stays within a small constant of the bytes that came in
//! (issue 10, SECURITY.md T10a; `tests/xml_amplification.rs` is the property-test twin).
//!
//! Input layout: byte 0 bit 0 = logged in (256 KiB) or not (16 KiB); the rest is the body
//! after a client stream header.

#![no_main]

use std::future::Future;
use std::task::{Context, Poll};

use libfuzzer_sys::fuzz_target;
use starling::xml::{Input, Limits, ReadStats, StreamEvent, StreamReader, write_element};

const HEAD: &[u8] = b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";
/// Bytes written per byte read, at most (see `tests/xml_amplification.rs`).
const OUTPUT_PER_BYTE: usize = 16;

fuzz_target!(|data: &[u8]| {
    let Some((&control, body)) = data.split_first() else { return };
    let max = if control & 1 == 1 { 256 * 1024 } else { 16 * 1024 };
    let limits = Limits { max_stanza_bytes: max, ..Limits::default() };
    let mut input = HEAD.to_vec();
    input.extend_from_slice(body);
    let mut reader = StreamReader::new(Input::new(&input[..], ReadStats::new()), limits);
    let mut written = 0;
    loop {
        match block_on(reader.next()) {
            Ok(StreamEvent::Element(el)) => {
                assert!(el.heap_bytes() <= max, "a stanza holds {} bytes, over the {max} limit", el.heap_bytes());
                let mut out = Vec::new();
                write_element(&mut out, &el, "jabber:client");
                written += out.len();
            }
            Ok(StreamEvent::Open(_)) => {}
            Ok(StreamEvent::Close) | Err(_) => break,
        }
    }
    assert!(written <= OUTPUT_PER_BYTE * input.len(), "{written} bytes written for {} read", input.len());
});

/// The input is in memory and always ready: one poll completes the future.
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(std::task::Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("in-memory input never blocks"),
    }
}
