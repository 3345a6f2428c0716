//! A TLS server stream on rustls' unbuffered API, so that an idle connection holds no buffer.
//!
//! tokio-rustls drives rustls' buffered connection, whose read buffer, once anything was read,
//! stays at 4 KiB for the life of the connection (rustls 0.23 `DeframerVecBuffer::
//! prepare_read`): more than half of what an idle TLS session cost. Here the bytes received,
//! the bytes decrypted and the bytes to send are each kept only while there are some, the way
//! the plaintext reader keeps its own.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use rustls::ServerConfig;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::binding::HandshakeFacts;
use crate::auth::ChannelBindings;

/// Bytes read from the socket per read call (on the stack; only what is left of a partial
/// record is kept).
const READ_CHUNK: usize = 8192;
/// Received bytes not yet processed. rustls takes handshake messages up to 64 KiB and records
/// up to 16 KiB; more than this is not TLS.
const MAX_INCOMING: usize = 96 * 1024;
/// Plaintext taken from one write call (four full records).
const MAX_WRITE: usize = 64 * 1024;
/// Encrypted bytes waiting for a slow reader before writes wait for the socket.
const MAX_OUTGOING: usize = 128 * 1024;

pub struct TlsStream {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// Received and not yet processed: after processing, at most a partial record.
    incoming: Vec<u8>,
    /// Decrypted and not yet read; the first `plain_read` bytes were handed out.
    plaintext: Vec<u8>,
    plain_read: usize,
    /// To send; the first `sent` bytes were written.
    outgoing: Vec<u8>,
    sent: usize,
    /// The peer sent close_notify or ended the TCP stream: reads return end of stream.
    read_closed: bool,
    close_notify_sent: bool,
    /// The reader, woken when a write had to decrypt records that were waiting.
    read_waker: Option<Waker>,
    bindings: ChannelBindings,
}

/// What to do when rustls can take application data.
#[derive(Clone, Copy)]
enum Send<'a> {
    Nothing,
    Data(&'a [u8]),
    CloseNotify,
}

/// The outcome of one `process_tls_records` call.
enum Step {
    /// Something was done; call again.
    Again,
    /// Nothing more to do until more bytes arrive.
    NeedInput,
    /// This many bytes of application data were encrypted into `outgoing`.
    Sent(usize),
}

impl TlsStream {
    /// Run the server handshake on `tcp` (the caller bounds it with a timeout).
    pub async fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<TlsStream> {
        let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let mut stream = TlsStream {
            tcp,
            conn,
            incoming: Vec::new(),
            plaintext: Vec::new(),
            plain_read: 0,
            outgoing: Vec::new(),
            sent: 0,
            read_closed: false,
            close_notify_sent: false,
            read_waker: None,
            bindings: ChannelBindings::default(),
        };
        let mut facts = HandshakeFacts::default();
        loop {
            facts.collect(|| stream.process())?;
            poll_fn(|cx| stream.poll_send(cx)).await?;
            if !stream.conn.is_handshaking() {
                break;
            }
            if stream.read_closed || poll_fn(|cx| stream.poll_fill(cx)).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        stream.bindings = facts.into_bindings(stream.conn.protocol_version(), stream.conn.negotiated_cipher_suite());
        stream.release_empty();
        Ok(stream)
    }

    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.conn.protocol_version()
    }

    pub fn cipher_suite(&self) -> Option<rustls::SupportedCipherSuite> {
        self.conn.negotiated_cipher_suite()
    }

    /// The certificate chain the peer presented, end entity first (empty if none).
    pub fn peer_certificates(&self) -> Vec<rustls_pki_types::CertificateDer<'static>> {
        self.conn.peer_certificates().map(<[_]>::to_vec).unwrap_or_default()
    }

    pub fn channel_bindings(&self) -> ChannelBindings {
        self.bindings.clone()
    }

    /// Bytes of buffer this connection holds beyond rustls' own state (0 when idle).
    pub fn buffered(&self) -> usize {
        self.incoming.capacity() + self.plaintext.capacity() + self.outgoing.capacity()
    }

    /// Let rustls process what was received until it needs more.
    fn process(&mut self) -> io::Result<()> {
        while let Step::Again = self.step(Send::Nothing)? {}
        Ok(())
    }

    /// Encrypt `data` (or part of it) into `outgoing`.
    fn encrypt(&mut self, send: Send<'_>) -> io::Result<usize> {
        loop {
            match self.step(send)? {
                Step::Again => continue,
                Step::Sent(n) => return Ok(n),
                Step::NeedInput => return Err(io::Error::new(io::ErrorKind::NotConnected, "TLS handshake not complete")),
            }
        }
    }

    fn step(&mut self, send: Send<'_>) -> io::Result<Step> {
        let UnbufferedStatus { mut discard, state } = self.conn.process_tls_records(&mut self.incoming);
        let result = match state {
            Err(e) => Err(tls_error(e)),
            Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                let mut result = Ok(Step::Again);
                while let Some(record) = traffic.next_record() {
                    match record {
                        Ok(record) => {
                            discard += record.discard;
                            self.plaintext.extend_from_slice(record.payload);
                        }
                        Err(e) => {
                            result = Err(tls_error(e));
                            break;
                        }
                    }
                }
                if let Some(waker) = self.read_waker.take() {
                    waker.wake();
                }
                result
            }
            Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                append(&mut self.outgoing, 4096, |out| {
                    encode.encode(out).map_err(|e| match e {
                        EncodeError::InsufficientSize(s) => Some(s.required_size),
                        _ => None,
                    })
                })
                .map(|_| Step::Again)
            }
            // Written by whoever flushes `outgoing` next: the handshake and every read send it
            // before they wait for the peer.
            Ok(ConnectionState::TransmitTlsData(transmit)) => {
                transmit.done();
                Ok(Step::Again)
            }
            Ok(ConnectionState::BlockedHandshake) => Ok(Step::NeedInput),
            Ok(ConnectionState::PeerClosed) => {
                self.read_closed = true;
                Ok(Step::Again)
            }
            Ok(ConnectionState::Closed) => {
                self.read_closed = true;
                match send {
                    Send::Data(_) => Err(io::ErrorKind::BrokenPipe.into()),
                    _ => Ok(Step::Sent(0)),
                }
            }
            Ok(ConnectionState::WriteTraffic(mut traffic)) => match send {
                Send::Nothing => Ok(Step::NeedInput),
                Send::Data(data) => {
                    let guess = data.len() + (data.len() / 16384 + 1) * 64;
                    append(&mut self.outgoing, guess, |out| traffic.encrypt(data, out).map_err(insufficient))
                        .map(|_| Step::Sent(data.len()))
                }
                Send::CloseNotify => {
                    append(&mut self.outgoing, 64, |out| traffic.queue_close_notify(out).map_err(insufficient))
                        .map(|_| Step::Sent(0))
                }
            },
            // Early data is off (`max_early_data_size` 0) and the enum is non-exhaustive.
            Ok(_) => Err(io::Error::new(io::ErrorKind::InvalidData, "unexpected TLS state")),
        };
        self.incoming.drain(..discard.min(self.incoming.len()));
        result
    }

    /// Read what the socket has into `incoming`; 0 at end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut chunk);
        ready!(Pin::new(&mut self.tcp).poll_read(cx, &mut buf))?;
        let read = buf.filled();
        if read.is_empty() {
            self.read_closed = true;
            return Poll::Ready(Ok(0));
        }
        if self.incoming.len() + read.len() > MAX_INCOMING {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, "TLS record too large")));
        }
        self.incoming.extend_from_slice(read);
        Poll::Ready(Ok(read.len()))
    }

    /// Write `outgoing` to the socket.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.outgoing = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    fn release_empty(&mut self) {
        if self.incoming.is_empty() {
            self.incoming = Vec::new();
        }
        if self.plain_read == self.plaintext.len() {
            self.plaintext = Vec::new();
            self.plain_read = 0;
        }
    }
}

/// Append to `out` what `write` puts into a slice of it, growing the slice to the size rustls
/// asks for (`Err(Some(size))`).
fn append(out: &mut Vec<u8>, guess: usize, mut write: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>) -> io::Result<()> {
    let start = out.len();
    let mut room = guess;
    loop {
        out.resize(start + room, 0);
        match write(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(Some(required)) if required > room => room = required,
            Err(_) => {
                out.truncate(start);
                return Err(io::Error::other("TLS record encoding failed"));
            }
        }
    }
}

fn insufficient(e: EncryptError) -> Option<usize> {
    match e {
        EncryptError::InsufficientSize(s) => Some(s.required_size),
        _ => None,
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl AsyncRead for TlsStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Set again below if this read waits; a stale one would cost a spurious wake-up.
        this.read_waker = None;
        loop {
            if this.plain_read < this.plaintext.len() {
                let available = &this.plaintext[this.plain_read..];
                let n = available.len().min(buf.remaining());
                buf.put_slice(&available[..n]);
                this.plain_read += n;
                this.release_empty();
                return Poll::Ready(Ok(()));
            }
            if this.read_closed {
                return Poll::Ready(Ok(()));
            }
            // Records rustls queued while reading (alerts, key updates) go out now; a peer that
            // does not read cannot stall reading: the next write carries them.
            if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                return Poll::Ready(Err(e));
            }
            match this.poll_fill(cx) {
                Poll::Pending => {
                    this.read_waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(0)) if !this.incoming.is_empty() => {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, "TCP closed inside a TLS record")));
                }
                Poll::Ready(Ok(_)) => {}
            }
            this.process()?;
            this.release_empty();
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.outgoing.len() - this.sent >= MAX_OUTGOING {
            ready!(this.poll_send(cx))?;
        }
        let n = this.encrypt(Send::Data(&data[..data.len().min(MAX_WRITE)]))?;
        // Start sending now; `poll_flush` finishes.
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_notify_sent {
            this.close_notify_sent = true;
            this.encrypt(Send::CloseNotify)?;
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::config::Config;
    use crate::tls::Certificates;

    struct Fixture {
        _dir: tempfile::TempDir,
        certs: Arc<Certificates>,
        server: Arc<ServerConfig>,
        certs_dir: std::path::PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::defaults_here();
        config.data_dir = dir.path().to_path_buf();
        config.domains = vec!["localhost".into(), "example.org".into()];
        let certs = Arc::new(Certificates::load(&config).unwrap());
        let server = certs.server_config();
        Fixture { certs_dir: dir.path().join("certs"), _dir: dir, certs, server }
    }

    fn client_config(cert: &Path, versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(cert).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    /// A server stream and a tokio-rustls client connected to it over loopback.
    async fn connect(
        f: &Fixture,
        domain: &'static str,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> (TlsStream, tokio_rustls::client::TlsStream<TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connector = tokio_rustls::TlsConnector::from(client_config(&f.certs_dir.join(format!("{domain}.crt")), versions));
        let client = async {
            let tcp = TcpStream::connect(addr).await.unwrap();
            connector.connect(ServerName::try_from(domain).unwrap(), tcp).await.unwrap()
        };
        let server = async {
            let (tcp, _) = listener.accept().await.unwrap();
            TlsStream::accept(tcp, f.server.clone()).await.unwrap()
        };
        tokio::join!(server, client)
    }

    /// Send `out` and read `expected` at the same time on one stream.
    async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S, out: &[u8], expected: &[u8], what: &str) {
        let (mut r, mut w) = tokio::io::split(io);
        let send = async {
            w.write_all(out).await.unwrap();
            w.flush().await.unwrap();
        };
        let recv = async {
            let mut got = vec![0u8; expected.len()];
            r.read_exact(&mut got).await.unwrap();
            assert!(got == expected, "{what}");
        };
        tokio::join!(send, recv);
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    #[tokio::test]
    async fn tls13_bindings_match_the_client_and_data_flows_both_ways() {
        let f = fixture();
        let (mut server, mut client) = connect(&f, "example.org", &[&rustls::version::TLS13]).await;
        // The exporter the client computes (rustls' own export) equals ours.
        let expected = client
            .get_ref()
            .1
            .export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
            .unwrap();
        let bindings = server.channel_bindings();
        assert_eq!(bindings.tls_exporter.as_deref(), Some(&expected[..]));
        // The end-point hash is that of the certificate served for the SNI.
        assert_eq!(bindings.tls_server_end_point, f.certs.end_point_hash(Some("example.org")));
        assert_ne!(bindings.tls_server_end_point, f.certs.end_point_hash(Some("localhost")));

        // More than the socket buffers and many records, in both directions at once.
        let up = pattern(700_000, 1);
        let down = pattern(900_000, 7);
        tokio::join!(
            exchange(&mut client, &up, &down, "the client received what the server sent"),
            exchange(&mut server, &down, &up, "the server received what the client sent"),
        );
        // Idle again: nothing kept.
        assert_eq!(server.buffered(), 0);

        // close_notify from the client: end of stream, then our close_notify reaches it.
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        assert_eq!(server.read_to_end(&mut rest).await.unwrap(), 0);
        server.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn tls12_has_no_exporter_but_an_end_point_and_works() {
        let f = fixture();
        let (mut server, mut client) = connect(&f, "localhost", &[&rustls::version::TLS12]).await;
        let bindings = server.channel_bindings();
        assert_eq!(bindings.tls_exporter, None, "RFC 9266: tls-exporter needs TLS 1.3");
        assert_eq!(bindings.tls_server_end_point, f.certs.end_point_hash(Some("localhost")));
        client.write_all(b"<stream:stream>").await.unwrap();
        client.flush().await.unwrap();
        let mut got = [0u8; 15];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"<stream:stream>");
        server.write_all(b"<features/>").await.unwrap();
        server.flush().await.unwrap();
        let mut got = [0u8; 11];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"<features/>");
        assert_eq!(server.buffered(), 0);
    }

    #[tokio::test]
    async fn small_reads_get_every_byte_in_order() {
        let f = fixture();
        let (mut server, mut client) = connect(&f, "localhost", &[&rustls::version::TLS13]).await;
        let data = pattern(40_000, 3);
        client.write_all(&data).await.unwrap();
        client.flush().await.unwrap();
        let mut got = Vec::new();
        let mut small = [0u8; 7];
        while got.len() < data.len() {
            let n = server.read(&mut small).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&small[..n]);
        }
        assert!(got == data);
        assert_eq!(server.buffered(), 0);
    }

    #[tokio::test]
    async fn not_tls_and_cut_handshakes_fail_cleanly() {
        let f = fixture();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // A plaintext XMPP client on the direct-TLS port.
        let mut plain = TcpStream::connect(addr).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        plain.write_all(b"<?xml version='1.0'?><stream:stream to='localhost'>").await.unwrap();
        let err = TlsStream::accept(tcp, f.server.clone()).await.err().expect("not TLS");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // A client that goes away after the first bytes of a ClientHello.
        let mut cut = TcpStream::connect(addr).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        cut.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.unwrap();
        drop(cut);
        let err = TlsStream::accept(tcp, f.server.clone()).await.err().expect("cut");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
