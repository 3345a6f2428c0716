//! The byte stream under a client session: plain TCP until STARTTLS, or TLS from the start
//! (XEP-0368). One type, so that the session code is the same either way.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::xml::Element;
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf, WriteHalf};
use tokio::net::TcpStream;

use crate::auth::ChannelBindings;
use crate::tls::TlsStream;
use crate::xml;

pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
    /// TLS where this server is the client: a stream to another server (`s2s/`).
    TlsClient(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Transport {
    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_) | Transport::TlsClient(_))
    }

    /// The TLS version and cipher suite, for `starling check s2s`.
    pub fn describe_tls(&self) -> String {
        let (version, suite) = match self {
            Transport::Plain(_) => return "none".into(),
            Transport::Tls(tls) => (tls.protocol_version(), tls.cipher_suite()),
            Transport::TlsClient(tls) => {
                let conn = tls.get_ref().1;
                (conn.protocol_version(), conn.negotiated_cipher_suite())
            }
        };
        match (version, suite) {
            (Some(v), Some(s)) => format!("{v:?}, {:?}", s.suite()),
            _ => "handshake not finished".into(),
        }
    }

    /// The certificate chain the peer presented in the TLS handshake (empty without TLS or
    /// without a certificate).
    pub fn peer_certificates(&self) -> Vec<rustls_pki_types::CertificateDer<'static>> {
        match self {
            Transport::Plain(_) => Vec::new(),
            Transport::Tls(tls) => tls.peer_certificates(),
            Transport::TlsClient(tls) => tls.get_ref().1.peer_certificates().map(<[_]>::to_vec).unwrap_or_default(),
        }
    }

    /// RFC 9266 `tls-exporter` (TLS 1.3 only) and RFC 5929 `tls-server-end-point`, learnt
    /// during the handshake.
    pub fn channel_bindings(&self) -> ChannelBindings {
        match self {
            Transport::Tls(tls) => tls.channel_bindings(),
            Transport::Plain(_) | Transport::TlsClient(_) => ChannelBindings::default(),
        }
    }
}

impl AsyncRead for Transport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Transport::TlsClient(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Transport::TlsClient(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Transport::TlsClient(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Transport::TlsClient(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Transport::TlsClient(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Transport::Plain(s) => s.is_write_vectored(),
            Transport::Tls(s) => s.is_write_vectored(),
            Transport::TlsClient(s) => s.is_write_vectored(),
        }
    }
}

/// Serialises elements into a buffer and writes it out in one go.
///
/// `flush` is cancel-safe: what was written stays written (`written`), so a flush cut short
/// by a close request resumes where it stopped instead of sending bytes twice.
pub struct Writer {
    /// `None` once the connection was handed elsewhere (see [`Writer::detached`]).
    half: Option<WriteHalf<Transport>>,
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already handed to the transport.
    written: usize,
    /// A write that makes no progress for this long means the client is not reading.
    stall: Duration,
}

/// What a write buffer starts with: most stanzas fit, and it lives only until the flush.
const FIRST_RESERVE: usize = 1024;

/// Write buffers between flushes, kept by each runtime thread: a session holds a buffer
/// only while it has something to write, and takes one here instead of from the allocator
/// (a fan-out writes one stanza to each of thousands of sessions in turn; an allocation of
/// this size makes glibc sweep its small free chunks every time).
mod spare {
    use std::cell::RefCell;

    /// Buffers kept per thread: sessions write one after another on a thread, so a few
    /// serve all of them.
    const KEPT: usize = 8;
    /// A buffer grown beyond this by a large write goes back to the allocator.
    const LARGEST_KEPT: usize = 64 * 1024;

    thread_local! {
        static BUFFERS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }

    pub fn take() -> Vec<u8> {
        BUFFERS
            .with(|b| b.borrow_mut().pop())
            .unwrap_or_else(|| Vec::with_capacity(super::FIRST_RESERVE))
    }

    pub fn give(mut buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > LARGEST_KEPT {
            return;
        }
        buf.clear();
        BUFFERS.with(|b| {
            let mut b = b.borrow_mut();
            if b.len() < KEPT {
                b.push(buf);
            }
        });
    }
}

/// The error of a flush that made no progress for the stall timeout.
pub fn is_stalled(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::TimedOut
}

impl Writer {
    pub fn new(half: WriteHalf<Transport>, stall: Duration) -> Self {
        Writer { half: Some(half), buf: Vec::new(), written: 0, stall }
    }

    /// A writer with no connection under it (a session waiting to be resumed): every
    /// flush fails as if the connection were lost.
    pub fn detached() -> Self {
        Writer { half: None, buf: Vec::new(), written: 0, stall: Duration::ZERO }
    }

    pub fn into_inner(self) -> WriteHalf<Transport> {
        self.half.expect("negotiation's writer is never detached")
    }

    /// Drop what is queued and not yet written. `false` if a write was cut short in the
    /// middle (nothing more can be written on this stream that would make sense).
    pub fn discard(&mut self) -> bool {
        let clean = self.written == 0;
        spare::give(std::mem::take(&mut self.buf));
        self.written = 0;
        clean
    }

    /// The buffer to queue into: none is held between flushes, one is taken at the first
    /// write after one (with room for a usual stanza, not grown from nothing by doubling).
    fn buffer(&mut self) -> &mut Vec<u8> {
        if self.buf.capacity() == 0 {
            self.buf = spare::take();
        }
        &mut self.buf
    }

    pub fn queue(&mut self, el: &Element) {
        xml::write_element(self.buffer(), el, xml::ns::CLIENT);
    }

    pub fn queue_raw(&mut self, bytes: &[u8]) {
        self.buffer().extend_from_slice(bytes);
    }

    /// Bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.written
    }

    /// Write everything queued. A client that takes nothing for the stall timeout is not
    /// reading: `TimedOut` (see [`is_stalled`]). A slow client that keeps reading is not.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let stalled = || io::Error::new(io::ErrorKind::TimedOut, "the client does not read");
        let Some(half) = self.half.as_mut() else { return Err(io::ErrorKind::NotConnected.into()) };
        while self.written < self.buf.len() {
            let rest = &self.buf[self.written..];
            // Mostly the socket takes it all at once: no timer is set for that write.
            let n = match half.write(rest).now_or_never() {
                Some(n) => n?,
                None => tokio::time::timeout(self.stall, half.write(rest)).await.map_err(|_| stalled())??,
            };
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.written += n;
        }
        match half.flush().now_or_never() {
            Some(flushed) => flushed?,
            None => tokio::time::timeout(self.stall, half.flush()).await.map_err(|_| stalled())??,
        }
        // An idle session keeps no write buffer (see `spare`).
        spare::give(std::mem::take(&mut self.buf));
        self.written = 0;
        Ok(())
    }

    pub async fn shutdown(&mut self) {
        let Some(half) = self.half.as_mut() else { return };
        let _ = tokio::time::timeout(Duration::from_secs(2), half.shutdown()).await;
    }
}
