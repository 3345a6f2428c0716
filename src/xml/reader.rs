//! Drivers for the tree builder: an endless network stream, and standalone stored stanzas.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use super::Element;
use quick_xml::NsReader;
use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};

use super::StreamEvent;
use super::tree::{Built, Limits, Mode, TreeBuilder, XmlError};

/// Bytes read from the socket in one go. Read into the stack, so an idle connection holds no
/// read buffer at all (it only holds one while a stanza is arriving).
const READ_CHUNK: usize = 4096;

/// Marker carried through quick-xml's `io::Error` when the first bytes are not markup.
#[derive(Debug)]
struct NotMarkup;
impl std::fmt::Display for NotMarkup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the stream does not start with markup")
    }
}
impl std::error::Error for NotMarkup {}

/// Marker carried through quick-xml's `io::Error` when the byte budget is exceeded.
#[derive(Debug)]
struct BudgetExceeded;
impl std::fmt::Display for BudgetExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stanza size limit exceeded")
    }
}
impl std::error::Error for BudgetExceeded {}

/// What the session needs to know about reading while the reader is busy inside a future:
/// when bytes last arrived and how many, for idle pings and rate limiting.
#[derive(Debug, Default)]
pub struct ReadStats {
    last_read_ms: AtomicU64,
    total: AtomicU64,
}

fn clock_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl ReadStats {
    pub fn new() -> Arc<ReadStats> {
        let stats = ReadStats::default();
        stats.last_read_ms.store(clock_ms(), Ordering::Relaxed);
        Arc::new(stats)
    }

    /// How long since bytes last arrived (whitespace keep-alives included).
    pub fn idle(&self) -> Duration {
        Duration::from_millis(clock_ms().saturating_sub(self.last_read_ms.load(Ordering::Relaxed)))
    }

    /// Bytes read so far.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    fn record(&self, n: usize) {
        self.last_read_ms.store(clock_ms(), Ordering::Relaxed);
        self.total.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The buffered byte source under the XML reader.
///
/// It enforces the stanza size limit *before* quick-xml copies bytes into its event buffer:
/// quick-xml would otherwise buffer an endless attribute or text node until memory runs out.
pub struct Input<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
    /// Bytes handed to the parser since the last stanza boundary.
    used: usize,
    budget: usize,
    stats: Arc<ReadStats>,
    /// Nothing but whitespace (and a BOM) has arrived yet: an XML stream starts with `<`.
    /// Checked here so that an HTTP request or a TLS ClientHello on the STARTTLS port is
    /// refused at once instead of waiting for a `<` that never comes.
    before_markup: bool,
    /// Bytes of a leading UTF-8 BOM seen so far (it may arrive split across reads);
    /// `u8::MAX` once anything else was seen, after which no BOM is allowed.
    bom_seen: u8,
}

impl<R> Input<R> {
    /// Look at newly read bytes until the first `<`: `false` if something else comes first.
    fn check_leading_bytes(&mut self) -> bool {
        const BOM: &[u8] = b"\xEF\xBB\xBF";
        for &b in &self.buf[self.pos..] {
            if (self.bom_seen as usize) < BOM.len() && b == BOM[self.bom_seen as usize] {
                self.bom_seen += 1;
                continue;
            }
            if self.bom_seen != 0 && (self.bom_seen as usize) < BOM.len() {
                return false; // a broken BOM
            }
            self.bom_seen = u8::MAX;
            match b {
                b' ' | b'\t' | b'\r' | b'\n' => {}
                b'<' => {
                    self.before_markup = false;
                    return true;
                }
                _ => return false,
            }
        }
        true
    }
}

impl<R> Input<R> {
    pub fn new(inner: R, stats: Arc<ReadStats>) -> Self {
        Input { inner, buf: Vec::new(), pos: 0, used: 0, budget: usize::MAX, stats, before_markup: true, bom_seen: 0 }
    }

    /// Bytes received but not yet parsed. Must be empty at a STARTTLS switch (RFC 6120
    /// §5.4.3.3): anything the client pipelined after `<starttls/>` was sent in the clear.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn stats(&self) -> &Arc<ReadStats> {
        &self.stats
    }

    fn reset_budget(&mut self, budget: usize) {
        self.used = 0;
        self.budget = budget;
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Input<R> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let available = ready!(Pin::new(&mut *this).poll_fill_buf(cx))?;
        let n = available.len().min(out.remaining());
        out.put_slice(&available[..n]);
        Pin::new(this).consume(n);
        Poll::Ready(Ok(()))
    }
}

impl<R: AsyncRead + Unpin> AsyncBufRead for Input<R> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.used > this.budget {
            return Poll::Ready(Err(io::Error::other(BudgetExceeded)));
        }
        if this.pos >= this.buf.len() {
            let mut chunk = [0u8; READ_CHUNK];
            let mut read_buf = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read_buf))?;
            let filled = read_buf.filled();
            this.buf.clear();
            this.buf.extend_from_slice(filled);
            this.pos = 0;
            if !filled.is_empty() {
                this.stats.record(filled.len());
            }
            if this.before_markup && !this.check_leading_bytes() {
                return Poll::Ready(Err(io::Error::other(NotMarkup)));
            }
        }
        Poll::Ready(Ok(&this.buf[this.pos..]))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.pos = (this.pos + amt).min(this.buf.len());
        this.used = this.used.saturating_add(amt);
        if this.pos == this.buf.len() {
            // Drained: give the memory back rather than keep 4 KiB per idle session.
            this.buf = Vec::new();
            this.pos = 0;
        }
    }
}

/// Reads an XMPP stream: the header, then one first-level element at a time.
///
/// `next()` is not cancel-safe (quick-xml keeps partial state inside its future), so callers
/// keep one `next()` future alive across `select!` iterations instead of re-creating it.
pub struct StreamReader<R> {
    xml: NsReader<Input<R>>,
    buf: Vec<u8>,
    tree: TreeBuilder,
    limits: Limits,
}

impl<R: AsyncRead + Unpin> StreamReader<R> {
    pub fn new(mut input: Input<R>, limits: Limits) -> Self {
        input.reset_budget(limits.max_stanza_bytes);
        let mut xml = NsReader::from_reader(input);
        configure(&mut xml);
        StreamReader { xml, buf: Vec::new(), tree: TreeBuilder::new(Mode::Stream, limits), limits }
    }

    /// Change the limits, e.g. once the client has authenticated.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
        self.tree.set_limits(limits);
        if self.tree.depth() == 0 {
            self.xml.get_mut().reset_budget(limits.max_stanza_bytes);
        }
    }

    pub fn input(&self) -> &Input<R> {
        self.xml.get_ref()
    }

    /// Wait until bytes are buffered (or the connection ends), without starting to parse.
    pub async fn wait_for_input(&mut self) -> Result<(), XmlError> {
        use tokio::io::AsyncBufReadExt;
        match self.xml.get_mut().fill_buf().await {
            Ok(_) => Ok(()),
            Err(e) => Err(map_error(quick_xml::Error::Io(std::sync::Arc::new(e)))),
        }
    }

    /// The default namespace in scope at stream level (`jabber:client` for clients), known
    /// once the header has been read.
    pub fn default_namespace(&self) -> Option<String> {
        match self.xml.resolver().resolve_element(quick_xml::name::QName("x")).0 {
            quick_xml::name::ResolveResult::Bound(ns) => Some(ns.as_ref().to_string()),
            _ => None,
        }
    }

    pub fn into_input(self) -> Input<R> {
        self.xml.into_inner()
    }

    pub async fn next(&mut self) -> Result<StreamEvent, XmlError> {
        // A self-closed `<stream:stream/>` opened and closed the stream at once: its close
        // is due now, not when more bytes arrive (they never will; the peer waits for ours).
        if self.tree.stream_closed() {
            return Ok(StreamEvent::Close);
        }
        loop {
            self.buf.clear();
            let event = match self.xml.read_event_into_async(&mut self.buf).await {
                Ok(event) => event,
                Err(e) => return Err(map_error(e)),
            };
            match self.tree.on_event(event, self.xml.resolver())? {
                Built::Nothing => {}
                Built::Open(root) => {
                    self.boundary();
                    return Ok(StreamEvent::Open(root));
                }
                Built::Element(el) => {
                    self.boundary();
                    return Ok(StreamEvent::Element(el));
                }
                Built::Close => return Ok(StreamEvent::Close),
            }
        }
    }

    /// A first-level element is complete: the next one gets a fresh size budget.
    fn boundary(&mut self) {
        self.xml.get_mut().reset_budget(self.limits.max_stanza_bytes);
        // Between stanzas nothing is kept: an idle session should cost as little as possible.
        if self.buf.capacity() > 256 {
            self.buf = Vec::new();
        }
        self.tree.release_stack();
    }
}

fn configure<R>(xml: &mut NsReader<R>) {
    let config = xml.config_mut();
    config.trim_text(false);
    config.expand_empty_elements = false;
    config.check_end_names = true;
    config.allow_unmatched_ends = false;
    config.allow_dangling_amp = false;
    xml.resolver_mut().set_max_namespace_bindings(128);
}

fn map_error(e: quick_xml::Error) -> XmlError {
    use quick_xml::Error as Q;
    match e {
        Q::Io(io) => {
            if io.get_ref().is_some_and(|inner| inner.is::<BudgetExceeded>()) {
                XmlError::TooBig
            } else if io.get_ref().is_some_and(|inner| inner.is::<NotMarkup>()) {
                XmlError::NotWellFormed(NotMarkup.to_string())
            } else if io.kind() == io::ErrorKind::UnexpectedEof {
                XmlError::Eof
            } else {
                XmlError::Io(io::Error::new(io.kind(), io.to_string()))
            }
        }
        Q::Encoding(_) => XmlError::NotWellFormed("invalid UTF-8".into()),
        Q::Namespace(quick_xml::name::NamespaceError::TooManyBindings(_)) => XmlError::TooBig,
        Q::Syntax(quick_xml::errors::SyntaxError::UnclosedTag)
        | Q::Syntax(quick_xml::errors::SyntaxError::UnclosedPI)
        | Q::Syntax(quick_xml::errors::SyntaxError::UnclosedXmlDecl)
        | Q::Syntax(quick_xml::errors::SyntaxError::UnclosedComment)
        | Q::Syntax(quick_xml::errors::SyntaxError::UnclosedDoctype)
        | Q::Syntax(quick_xml::errors::SyntaxError::UnclosedCData)
        | Q::Syntax(quick_xml::errors::SyntaxError::UnclosedSingleQuotedAttributeValue)
        | Q::Syntax(quick_xml::errors::SyntaxError::UnclosedDoubleQuotedAttributeValue) => XmlError::Eof,
        other => XmlError::NotWellFormed(other.to_string()),
    }
}

/// Parse one standalone element (a stored stanza) with the same builder and checks as the
/// network stream, so that one parser decides what a stanza is.
pub fn parse_element(text: &str) -> Result<Element, XmlError> {
    let mut xml = NsReader::from_str(text);
    configure(&mut xml);
    let limits = Limits { max_stanza_bytes: usize::MAX, ..Limits::default() };
    let mut tree = TreeBuilder::new(Mode::Document, limits);
    let mut result = None;
    loop {
        let event = xml.read_event().map_err(map_error)?;
        let eof = matches!(event, quick_xml::events::Event::Eof);
        match tree.on_event(event, xml.resolver())? {
            Built::Element(el) => result = Some(el),
            Built::Nothing => {}
            Built::Open(_) | Built::Close => unreachable!("document mode never opens a stream"),
        }
        if eof {
            return result.ok_or(XmlError::Eof);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(input: &[u8], limits: Limits) -> Vec<Result<StreamEvent, String>> {
        let mut reader = StreamReader::new(Input::new(input, ReadStats::new()), limits);
        let mut out = Vec::new();
        loop {
            match reader.next().await {
                Ok(StreamEvent::Close) => {
                    out.push(Ok(StreamEvent::Close));
                    return out;
                }
                Ok(ev) => out.push(Ok(ev)),
                Err(e) => {
                    out.push(Err(format!("{e:?}")));
                    return out;
                }
            }
        }
    }

    const HEAD: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

    /// A self-closed stream header is the whole stream: the close comes right after the
    /// header, without waiting for bytes that will never come.
    #[tokio::test]
    async fn self_closed_stream_header() {
        let (mut client, server) = tokio::io::duplex(1024);
        use tokio::io::AsyncWriteExt;
        client
            .write_all(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'/>")
            .await
            .unwrap();
        // The connection stays open, as a client waiting for our answer keeps it.
        let mut reader = StreamReader::new(Input::new(server, ReadStats::new()), Limits::default());
        assert!(matches!(reader.next().await, Ok(StreamEvent::Open(_))));
        let close = tokio::time::timeout(Duration::from_secs(1), reader.next()).await;
        assert!(matches!(close, Ok(Ok(StreamEvent::Close))), "{close:?}");
        drop(client);
    }

    #[tokio::test]
    async fn reads_header_stanzas_and_close() {
        let doc = format!("{HEAD} <message to='a@b'><body>hi &amp; &#x263A;</body></message>\n<presence/></stream:stream>");
        let events = read_all(doc.as_bytes(), Limits::default()).await;
        assert_eq!(events.len(), 4, "{events:?}");
        match &events[0] {
            Ok(StreamEvent::Open(root)) => {
                assert!(root.is("stream", super::super::ns::STREAMS));
                assert_eq!(root.attr("to"), Some("localhost"));
            }
            other => panic!("{other:?}"),
        }
        match &events[1] {
            Ok(StreamEvent::Element(m)) => {
                assert!(m.is("message", "jabber:client"));
                let body = m.get_child("body", "jabber:client").unwrap();
                assert_eq!(body.text(), "hi & \u{263A}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&events[2], Ok(StreamEvent::Element(p)) if p.is("presence", "jabber:client")));
        assert!(matches!(events[3], Ok(StreamEvent::Close)));
    }

    fn last_error(events: &[Result<StreamEvent, String>]) -> &str {
        events.last().unwrap().as_ref().err().map(String::as_str).unwrap_or("no error")
    }

    #[tokio::test]
    async fn rejects_restricted_and_malformed_xml() {
        let cases: &[(&str, &str)] = &[
            ("<!DOCTYPE x [<!ENTITY a 'aaa'>]><message/>", "Restricted"),
            ("<!-- hi --><message/>", "Restricted"),
            ("<?foo bar?><message/>", "Restricted"),
            ("<message><body>&foo;</body></message>", "Restricted"),
            ("<message to='&foo;'/>", "Restricted"),
            ("<message><body>&#x1;</body></message>", "NotWellFormed"),
            ("<message><body>\u{1}</body></message>", "NotWellFormed"),
            ("<message><body>&#xFFFE;</body></message>", "NotWellFormed"),
            ("<mes$age/>", "NotWellFormed"),
            ("<message id='a' id='b'/>", "NotWellFormed"),
            ("<message a:id='a' b:id='b' xmlns:a='x' xmlns:b='x'/>", "NotWellFormed"),
            ("<message to='a<b'/>", "NotWellFormed"),
            ("<message><body>a]]>b</body></message>", "NotWellFormed"),
            ("<message></presence>", "NotWellFormed"),
            ("<foo:message/>", "NotWellFormed"),
            ("<message/>text", "BadFormat"),
            ("<message><body>a & b</body></message>", "NotWellFormed"),
            ("<?xml version='1.0'?><message/>", "Restricted"),
        ];
        for (stanza, want) in cases {
            let doc = format!("{HEAD}{stanza}</stream:stream>");
            let events = read_all(doc.as_bytes(), Limits::default()).await;
            let err = last_error(&events);
            assert!(err.starts_with(want), "{stanza}: expected {want}, got {err}");
        }
    }

    #[tokio::test]
    async fn rejects_invalid_utf8() {
        for bad in [&b"\xff"[..], b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82"] {
            let mut doc = HEAD.as_bytes().to_vec();
            doc.extend_from_slice(b"<message><body>");
            doc.extend_from_slice(bad);
            doc.extend_from_slice(b"</body></message></stream:stream>");
            let events = read_all(&doc, Limits::default()).await;
            assert!(last_error(&events).starts_with("NotWellFormed"), "{bad:?}: {events:?}");
        }
    }

    #[tokio::test]
    async fn enforces_size_and_depth() {
        let limits = Limits { max_stanza_bytes: 1000, max_depth: 8, ..Limits::default() };
        let big = format!("{HEAD}<message><body>{}</body></message>", "x".repeat(5000));
        assert!(last_error(&read_all(big.as_bytes(), limits).await).starts_with("TooBig"));
        let big_attr = format!("{HEAD}<message to='{}'/>", "x".repeat(50_000));
        assert!(last_error(&read_all(big_attr.as_bytes(), limits).await).starts_with("TooBig"));
        let deep = format!("{HEAD}{}", "<a>".repeat(20));
        let roomy = Limits { max_stanza_bytes: 100_000, ..limits };
        assert!(last_error(&read_all(deep.as_bytes(), roomy).await).starts_with("TooDeep"));
        // Many small stanzas are fine: the budget is per stanza.
        let many = format!("{HEAD}{}</stream:stream>", "<presence/>".repeat(500));
        let events = read_all(many.as_bytes(), limits).await;
        assert_eq!(events.len(), 502);
    }

    /// The same stream split at every byte boundary yields the same elements.
    #[tokio::test]
    async fn split_at_every_boundary() {
        let doc = format!("{HEAD}<message to='a@b' xml:lang='en'><body>caf\u{e9} &lt;3</body><x xmlns='urn:x' a='1'/></message> <iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq></stream:stream>");
        let bytes = doc.as_bytes();
        let whole = read_all(bytes, Limits::default()).await;
        let whole: Vec<String> = whole.iter().map(|e| format!("{e:?}")).collect();
        for split in 1..bytes.len() {
            let (a, b) = bytes.split_at(split);
            let input = tokio_test_chain(a.to_vec(), b.to_vec());
            let mut reader = StreamReader::new(Input::new(input, ReadStats::new()), Limits::default());
            let mut got = Vec::new();
            loop {
                let ev = reader.next().await.map_err(|e| format!("{e:?}"));
                let done = !matches!(ev, Ok(StreamEvent::Open(_)) | Ok(StreamEvent::Element(_)));
                got.push(format!("{ev:?}"));
                if done {
                    break;
                }
            }
            assert_eq!(got, whole, "split at {split}");
        }
    }

    /// An AsyncRead that yields its two parts in separate reads.
    fn tokio_test_chain(a: Vec<u8>, b: Vec<u8>) -> impl AsyncRead + Unpin {
        struct TwoReads {
            parts: Vec<Vec<u8>>,
        }
        impl AsyncRead for TwoReads {
            fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
                if let Some(part) = self.parts.first_mut() {
                    let n = part.len().min(out.remaining());
                    out.put_slice(&part[..n]);
                    part.drain(..n);
                    if part.is_empty() {
                        self.parts.remove(0);
                    }
                }
                Poll::Ready(Ok(()))
            }
        }
        TwoReads { parts: vec![a, b] }
    }

    #[test]
    fn parses_stored_stanza() {
        let el = parse_element("<message xmlns='jabber:client' from='a@b/c'><body>x &amp; y</body><delay xmlns='urn:xmpp:delay' stamp='2020-01-01T00:00:00Z'/></message>").unwrap();
        assert_eq!(el.attr("from"), Some("a@b/c"));
        assert_eq!(el.get_child("body", "jabber:client").unwrap().text(), "x & y");
        assert!(el.has_child("delay", "urn:xmpp:delay"));
        assert!(parse_element("<message xmlns='jabber:client'><!-- c --></message>").is_err());
        assert!(parse_element("<message xmlns='jabber:client'/><message xmlns='jabber:client'/>").is_err());
        assert!(parse_element("<message xmlns='jabber:client'>").is_err());
    }
}
