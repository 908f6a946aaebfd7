//! The byte stream under a connection: a plain glommio TCP socket, or a rustls server session
//! over one. Both implement futures-io `AsyncRead`/`AsyncWrite`, so the reader and writer tasks
//! of `conn.rs` and `mqtt.rs` run unchanged over either.
//!
//! Why our own adapter rather than futures-rustls' `TlsStream`: an MQTT connection moves to
//! the shard that owns its client id right after CONNECT, as a duplicated descriptor in a mesh
//! message (`mesh::Adopt`), and a TLS connection must keep its session across that move.
//! futures-rustls keeps the session inside a stream generic over the socket and has no way to
//! take the two apart and put them together around another socket. Here the session is a
//! plain `rustls::ServerConnection` (which is `Send`) next to the socket, so [`Stream::into_parts`]
//! and [`Stream::from_parts`] move it, with any plaintext it already decrypted and not yet
//! handed out. The adapter is the usual rustls loop: `read_tls` / `process_new_packets` /
//! `reader()` in, `writer()` / `write_tls` out.
//!
//! Sharing: the reader and writer tasks share one stream through `Rc<RefCell<_>>` (`conn::Half`),
//! borrowed only inside one poll. Socket writes go through rustls' one outgoing queue whichever
//! task calls, so records never interleave. Only the writer waits for the socket to take
//! records: glommio keeps one waker per readiness source, and a reader waiting there would
//! replace the writer's. Records the reader side causes (alerts, key update answers) are sent
//! at once without waiting ([`TlsStream::send_now`]); what the socket does not take then leaves
//! with the next write.

use crate::tls::certificate_identity;
use futures_lite::io::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use rustls::ServerConnection;
use std::future::poll_fn;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

/// The first byte of a TLS record carrying a handshake message (a ClientHello starts with it).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// A connection's socket, plain or TLS.
#[derive(Debug)]
pub enum Stream {
    /// Plaintext TCP.
    Plain(TcpStream),
    /// A TLS session over TCP, handshake done.
    Tls(Box<TlsStream>),
}

/// A rustls server session over a glommio socket.
#[derive(Debug)]
pub struct TlsStream {
    tcp: TcpStream,
    session: ServerConnection,
    /// Bytes of the caller's current write that rustls took (and encrypted) while the socket
    /// has not yet taken all their records. Reported once it has, so a write is done when its
    /// records are on the socket, and the writer's back-pressure and write deadline hold.
    taken: usize,
}

/// Why a TLS handshake did not complete.
#[derive(Debug)]
pub enum HandshakeError {
    /// The peer's first byte is not a TLS handshake record: it speaks plaintext.
    NotTls,
    /// Not done within the time allowed.
    TimedOut,
    /// The peer closed before the handshake was done.
    Closed,
    /// A TLS protocol failure (bad certificate, no common cipher suite, ...).
    Tls(rustls::Error),
    /// The socket failed.
    Io(io::Error),
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::NotTls => f.write_str("first bytes are not a TLS handshake"),
            HandshakeError::TimedOut => f.write_str("handshake timed out"),
            HandshakeError::Closed => f.write_str("closed during the handshake"),
            HandshakeError::Tls(error) => write!(f, "{error}"),
            HandshakeError::Io(error) => write!(f, "{error}"),
        }
    }
}

impl Stream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => &tls.tcp,
        }
    }

    /// True for a TLS connection.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// The identity of the client's verified certificate: its subject CN, else its first DNS
    /// or email SAN. `None` for plaintext and for TLS clients without a certificate.
    pub fn tls_identity(&self) -> Option<Box<str>> {
        let Stream::Tls(tls) = self else { return None };
        let leaf = tls.session.peer_certificates()?.first()?;
        certificate_identity(leaf)
    }

    /// Takes the stream apart for a move to another executor: the socket and, for TLS, the
    /// session with whatever plaintext it holds undelivered.
    pub fn into_parts(self) -> (TcpStream, Option<Box<ServerConnection>>) {
        match self {
            Stream::Plain(tcp) => (tcp, None),
            Stream::Tls(tls) => {
                debug_assert_eq!(tls.taken, 0, "no write is half done before CONNECT is read");
                let TlsStream { tcp, session, .. } = *tls;
                (tcp, Some(Box::new(session)))
            }
        }
    }

    /// Puts a stream back together from [`Stream::into_parts`].
    pub fn from_parts(tcp: TcpStream, session: Option<Box<ServerConnection>>) -> Stream {
        match session {
            None => Stream::Plain(tcp),
            Some(session) => Stream::Tls(Box::new(TlsStream { tcp, session: *session, taken: 0 })),
        }
    }
}

/// Duplicates the socket's descriptor so that it can move to another executor.
#[allow(unsafe_code)]
pub(super) fn duplicate_fd(stream: &TcpStream) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::BorrowedFd;
    // SAFETY: the descriptor belongs to `stream`, which outlives this borrow; the duplicate is
    // a new descriptor owned by the returned `OwnedFd`.
    let borrowed = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    borrowed.try_clone_to_owned()
}

/// Makes a descriptor handed over by another shard a stream of this executor.
#[allow(unsafe_code)]
pub(super) fn adopt_fd(fd: std::os::fd::OwnedFd) -> TcpStream {
    use std::os::fd::{FromRawFd, IntoRawFd};
    // SAFETY: `into_raw_fd` gives up ownership of an open socket descriptor; the stream takes
    // it over and is its only owner. (glommio 0.9 builds streams from socket2 0.4, which has
    // no safe conversion from `OwnedFd`.)
    unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) }
}

/// Takes a plain TCP stream out of the cell its reader and writer shared, with a duplicate of
/// its descriptor, so that the socket can leave its tasks (for the dormant set, or another
/// shard). Gives the stream back if it runs over TLS, is still shared, or the descriptor cannot
/// be duplicated.
pub(super) fn detach(
    stream: std::rc::Rc<std::cell::RefCell<Stream>>,
) -> Result<(TcpStream, std::os::fd::OwnedFd), std::rc::Rc<std::cell::RefCell<Stream>>> {
    use std::cell::RefCell;
    use std::rc::Rc;
    let tcp = match Rc::try_unwrap(stream).map(RefCell::into_inner) {
        Ok(Stream::Plain(tcp)) => tcp,
        Ok(tls) => return Err(Rc::new(RefCell::new(tls))),
        Err(stream) => return Err(stream),
    };
    match duplicate_fd(&tcp) {
        Ok(fd) => Ok((tcp, fd)),
        Err(error) => {
            tracing::warn!(%error, "cannot duplicate a socket to hand it over");
            Err(Rc::new(RefCell::new(Stream::Plain(tcp))))
        }
    }
}

/// Runs the server side of a TLS handshake on `tcp`, within `limit`. On failure the socket is
/// handed back (a NATS client that spoke plaintext is told so in plaintext) with the reason.
pub async fn handshake(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    limit: Duration,
) -> Result<Stream, (TcpStream, HandshakeError)> {
    let session = match ServerConnection::new(config) {
        Ok(session) => session,
        Err(error) => return Err((tcp, HandshakeError::Tls(error))),
    };
    let mut tls = Box::new(TlsStream { tcp, session, taken: 0 });
    let mut first = None;
    let done = futures_lite::future::or(
        async { Some(poll_fn(|cx| tls.poll_handshake(cx, &mut first)).await) },
        async {
            glommio::timer::sleep(limit).await;
            None
        },
    )
    .await;
    match done {
        Some(Ok(())) => Ok(Stream::Tls(tls)),
        Some(Err(error)) => {
            tls.send_now();
            Err((tls.tcp, error))
        }
        None => Err((tls.tcp, HandshakeError::TimedOut)),
    }
}

impl TlsStream {
    fn poll_handshake(
        &mut self,
        cx: &mut Context<'_>,
        first: &mut Option<u8>,
    ) -> Poll<Result<(), HandshakeError>> {
        loop {
            // The server's flights go out before it reads on; after the handshake, its session
            // tickets go out before the connection is handed to the protocol.
            ready!(self.poll_send(cx)).map_err(HandshakeError::Io)?;
            if !self.session.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            let mut socket = SocketRead { tcp: &mut self.tcp, cx, first };
            match self.session.read_tls(&mut socket) {
                Ok(0) => return Poll::Ready(Err(HandshakeError::Closed)),
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(error) => return Poll::Ready(Err(HandshakeError::Io(error))),
            }
            if first.is_some_and(|byte| byte != TLS_HANDSHAKE_RECORD) {
                return Poll::Ready(Err(HandshakeError::NotTls));
            }
            if let Err(error) = self.session.process_new_packets() {
                // rustls queued an alert for the peer; `handshake` sends it.
                return Poll::Ready(Err(HandshakeError::Tls(error)));
            }
        }
    }

    /// Writes queued records until none is left or the socket is full (then `cx` is woken).
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.session.wants_write() {
            let mut socket = SocketWrite { tcp: &mut self.tcp, cx };
            match self.session.write_tls(&mut socket) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Writes queued records the socket takes now, without waiting and without registering a
    /// waker (see the module doc: only the writer waits for the socket).
    fn send_now(&mut self) {
        let mut socket = SocketNow(self.tcp.as_raw_fd());
        while self.session.wants_write() {
            match self.session.write_tls(&mut socket) {
                Ok(n) if n > 0 => {}
                _ => return,
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => tls.poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Stream::Tls(tls) => tls.poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(tls) => tls.poll_send(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_close(cx),
            Stream::Tls(tls) => {
                // close_notify is sent if the socket takes it now; a close never waits on a
                // peer that stopped reading (every write before it waited for its records).
                // Idempotent: rustls queues close_notify once.
                tls.session.send_close_notify();
                tls.send_now();
                Pin::new(&mut tls.tcp).poll_close(cx)
            }
        }
    }
}

impl TlsStream {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        loop {
            match self.session.reader().read(buf) {
                // 0: the peer sent close_notify, the TLS end of stream.
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                // UnexpectedEof: TCP closed without close_notify; the caller ends either way.
                Err(error) => return Poll::Ready(Err(error)),
            }
            let mut first = None;
            let mut socket = SocketRead { tcp: &mut self.tcp, cx, first: &mut first };
            match self.session.read_tls(&mut socket) {
                // End of stream: processing below turns it into the reader's EOF or error.
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(error) => return Poll::Ready(Err(error)),
            }
            let processed = self.session.process_new_packets();
            if self.session.wants_write() {
                self.send_now();
            }
            if let Err(error) = processed {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, error)));
            }
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.taken == 0 {
            if buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            // Records the reader queued go first; then rustls has room (its default limit,
            // 64 KiB of queued records) for this write.
            ready!(self.poll_send(cx))?;
            self.taken = self.session.writer().write(buf)?;
            if self.taken == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
        }
        debug_assert!(self.taken <= buf.len(), "the caller writes the same bytes again");
        // Pending here keeps `taken`: the caller polls again with the same buffer, as every
        // writer does after Pending, and gets the count once the records are out.
        let sent = ready!(self.poll_send(cx));
        let taken = std::mem::take(&mut self.taken);
        Poll::Ready(sent.map(|()| taken))
    }
}

/// The socket as a `Read` for `read_tls`: `Pending` becomes `WouldBlock` (with `cx` woken when
/// the socket turns readable). Remembers the first byte read.
struct SocketRead<'a, 'b> {
    tcp: &'a mut TcpStream,
    cx: &'a mut Context<'b>,
    first: &'a mut Option<u8>,
}

impl Read for SocketRead<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.tcp).poll_read(self.cx, buf) {
            Poll::Ready(Ok(n)) => {
                if n > 0 && self.first.is_none() {
                    *self.first = Some(buf[0]);
                }
                Ok(n)
            }
            Poll::Ready(Err(error)) => Err(error),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

/// The socket as a `Write` for `write_tls`: `Pending` becomes `WouldBlock` (with `cx` woken when
/// the socket turns writable, or when the write deadline passes).
struct SocketWrite<'a, 'b> {
    tcp: &'a mut TcpStream,
    cx: &'a mut Context<'b>,
}

impl Write for SocketWrite<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.tcp).poll_write(self.cx, buf) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A non-blocking send on the socket that registers nothing with glommio.
struct SocketNow(std::os::fd::RawFd);

impl Write for SocketNow {
    #[allow(unsafe_code)]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: the descriptor belongs to the `TcpStream` this was built from, which is
        // borrowed for as long as this value lives (`TlsStream::send_now`).
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.0) };
        socket2::SockRef::from(&fd).send_with_flags(buf, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
