//! Reading the ClientHello off a new connection, and giving the bytes back afterwards.
//!
//! Portico must see the SNI name before it can choose a site, a certificate or a
//! passthrough backend, but whoever handles the connection next (rustls, or the backend of
//! a passthrough site) must see the stream from its first byte. So the hello is read here
//! with [`read_client_hello`], and the bytes read are replayed in front of the rest of the
//! stream by [`PrefixedIo`]. Reading must never go past the byte limit or the deadline,
//! since the peer is not yet known to be anything but a stranger, and a byte read must
//! never be lost or reordered.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::client_hello::{Hello, HelloError, HelloParser};

/// How much is asked of the socket at once. A whole hello, even a post-quantum one, fits
/// in one read of this size; larger reads would only buffer bytes that belong to the
/// handshake's later flights, which the client does not send before the server answers.
const READ_CHUNK: usize = 4096;

/// Why no ClientHello could be read from a connection.
#[derive(Debug)]
pub enum PeekError {
    /// Reading from the connection failed.
    Io(io::Error),
    /// The deadline passed before a whole hello arrived.
    Timeout,
    /// The peer closed the connection before a whole hello arrived.
    Closed,
    /// The bytes are not an acceptable ClientHello; `TooLarge` also when the byte limit
    /// was reached before the hello was complete.
    Hello(HelloError),
}

impl fmt::Display for PeekError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeekError::Io(_) => f.write_str("reading the ClientHello failed"),
            PeekError::Timeout => f.write_str("timed out waiting for the ClientHello"),
            PeekError::Closed => f.write_str("connection closed before a whole ClientHello"),
            PeekError::Hello(_) => f.write_str("unacceptable ClientHello"),
        }
    }
}

impl std::error::Error for PeekError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PeekError::Io(err) => Some(err),
            PeekError::Hello(err) => Some(err),
            PeekError::Timeout | PeekError::Closed => None,
        }
    }
}

impl From<io::Error> for PeekError {
    fn from(err: io::Error) -> Self {
        PeekError::Io(err)
    }
}

impl From<HelloError> for PeekError {
    fn from(err: HelloError) -> Self {
        PeekError::Hello(err)
    }
}

/// Reads from `io` until it holds a whole ClientHello, reading at most `limit` bytes and
/// giving up at `deadline`.
///
/// Returns the hello and every byte read, to be replayed (see [`PrefixedIo`]); these can
/// include bytes the client sent after the hello. Reaching `limit` first is
/// `PeekError::Hello(HelloError::TooLarge)`.
pub async fn read_client_hello<IO>(
    io: &mut IO,
    limit: usize,
    deadline: Instant,
) -> Result<(Hello, Vec<u8>), PeekError>
where
    IO: AsyncRead + Unpin + ?Sized,
{
    // One deadline over the whole read, not one per read: a peer sending a byte now and
    // then must not be able to hold the connection open any longer.
    tokio::time::timeout_at(deadline, read_until_hello(io, limit))
        .await
        .unwrap_or(Err(PeekError::Timeout))
}

async fn read_until_hello<IO>(io: &mut IO, limit: usize) -> Result<(Hello, Vec<u8>), PeekError>
where
    IO: AsyncRead + Unpin + ?Sized,
{
    let mut seen = Vec::new();
    // The incremental parser keeps the work linear however finely the peer splits its bytes.
    let mut parser = HelloParser::new();
    let mut chunk = vec![0; limit.min(READ_CHUNK)];
    loop {
        let room = limit.saturating_sub(seen.len()).min(chunk.len());
        let Some(into) = chunk.get_mut(..room).filter(|into| !into.is_empty()) else {
            return Err(PeekError::Hello(HelloError::TooLarge));
        };
        let n = match io.read(into).await {
            Ok(0) => return Err(PeekError::Closed),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(PeekError::Io(err)),
        };
        seen.extend_from_slice(into.get(..n).unwrap_or_default());
        if let Some(hello) = parser.feed(&seen)? {
            return Ok((hello, seen));
        }
    }
}

/// An IO that first yields `prefix`, then reads from the inner IO; writes, flushes and
/// shutdown go straight to the inner IO.
///
/// This is how the bytes [`read_client_hello`] took off a connection are put back in front
/// of it for rustls or a passthrough backend.
#[derive(Debug)]
pub struct PrefixedIo<IO> {
    prefix: Vec<u8>,
    /// How much of `prefix` has been handed out already.
    replayed: usize,
    inner: IO,
}

impl<IO> PrefixedIo<IO> {
    /// Yields `prefix` before anything read from `inner`.
    pub fn new(prefix: Vec<u8>, inner: IO) -> Self {
        Self {
            prefix,
            replayed: 0,
            inner,
        }
    }

    /// The inner IO, for its addresses or socket options. Reading from it directly would
    /// skip the prefix, hence no `get_mut`.
    pub fn get_ref(&self) -> &IO {
        &self.inner
    }

    /// The inner IO; any part of the prefix not yet read is dropped.
    pub fn into_inner(self) -> IO {
        self.inner
    }

    /// The part of the prefix not yet read, and the inner IO.
    pub fn into_parts(self) -> (Vec<u8>, IO) {
        let Self {
            mut prefix,
            replayed,
            inner,
        } = self;
        prefix.drain(..replayed.min(prefix.len()));
        (prefix, inner)
    }

    fn unread_prefix(&self) -> &[u8] {
        self.prefix.get(self.replayed..).unwrap_or_default()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for PrefixedIo<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let unread = this.unread_prefix();
        if unread.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = unread.len().min(buf.remaining());
        buf.put_slice(unread.get(..n).unwrap_or_default());
        this.replayed += n;
        if this.replayed >= this.prefix.len() {
            // The prefix is spent; give its memory back for the connection's long life.
            this.prefix = Vec::new();
            this.replayed = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for PrefixedIo<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{duplex, AsyncWriteExt};

    const CURL: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/client_hello/curl_openssl3.bin"
    ));
    const CHROMIUM_PQ: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/client_hello/chromium_pq.bin"
    ));

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[tokio::test]
    async fn hello_sent_one_byte_at_a_time_is_detected() {
        for fixture in [CURL, CHROMIUM_PQ] {
            // A one-byte pipe makes every read return a single byte.
            let (mut client, mut server) = duplex(1);
            let writer = tokio::spawn(async move {
                for byte in fixture {
                    client.write_all(&[*byte]).await.expect("write");
                }
                // Stay open: the hello must be recognised without waiting for EOF.
                client
            });
            let (hello, seen) = read_client_hello(&mut server, 16 * 1024, soon())
                .await
                .expect("hello");
            assert_eq!(seen, fixture);
            assert!(hello.server_name.is_some());
            drop(writer.await.expect("writer"));
        }
    }

    #[tokio::test]
    async fn silent_client_hits_the_deadline() {
        let (_client, mut server) = duplex(64);
        let start = Instant::now();
        let deadline = start + Duration::from_millis(200);
        let result = read_client_hello(&mut server, 16 * 1024, deadline).await;
        assert!(matches!(result, Err(PeekError::Timeout)), "{result:?}");
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(200) && waited < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn trickling_client_hits_the_deadline_too() {
        let (mut client, mut server) = duplex(64);
        let writer = tokio::spawn(async move {
            for byte in CURL {
                if client.write_all(&[*byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let deadline = Instant::now() + Duration::from_millis(200);
        let result = read_client_hello(&mut server, 16 * 1024, deadline).await;
        assert!(matches!(result, Err(PeekError::Timeout)), "{result:?}");
        drop(server);
        writer.await.expect("writer");
    }

    #[tokio::test]
    async fn oversized_stream_stops_at_the_limit() {
        // A header announcing a hello of exactly the parser's maximum, then filler.
        let mut data = b"\x16\x03\x01\x40\x00\x01\x00\xff\xfc".to_vec();
        data.resize(100_000, 0);
        let mut input = &data[..];
        let result = read_client_hello(&mut input, 4096, soon()).await;
        assert!(
            matches!(result, Err(PeekError::Hello(HelloError::TooLarge))),
            "{result:?}"
        );
        assert_eq!(
            data.len() - input.len(),
            4096,
            "read exactly up to the limit"
        );
    }

    #[tokio::test]
    async fn limit_smaller_than_the_hello_is_too_large() {
        let mut input = CHROMIUM_PQ;
        let result = read_client_hello(&mut input, 1200, soon()).await;
        assert!(
            matches!(result, Err(PeekError::Hello(HelloError::TooLarge))),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn eof_before_the_hello_is_closed() {
        let mut input = &CURL[..CURL.len() / 2];
        let result = read_client_hello(&mut input, 16 * 1024, soon()).await;
        assert!(matches!(result, Err(PeekError::Closed)), "{result:?}");
    }

    #[tokio::test]
    async fn plain_http_is_refused_at_once() {
        let (mut client, mut server) = duplex(1024);
        client
            .write_all(b"GET / HTTP/1.1\r\n")
            .await
            .expect("write");
        let result = read_client_hello(&mut server, 16 * 1024, soon()).await;
        assert!(
            matches!(result, Err(PeekError::Hello(HelloError::NotTls))),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn bytes_after_the_hello_come_back_too() {
        let mut data = CURL.to_vec();
        data.extend_from_slice(b"\x14\x03\x03\x00\x01\x01");
        let mut input = &data[..];
        let (_, seen) = read_client_hello(&mut input, 16 * 1024, soon())
            .await
            .expect("hello");
        assert_eq!(seen, data);
    }

    #[tokio::test]
    async fn prefixed_io_replays_the_prefix_then_the_rest() {
        let (mut client, server) = duplex(64);
        let mut io = PrefixedIo::new(b"hello, ".to_vec(), server);
        client.write_all(b"world").await.expect("write");
        client.shutdown().await.expect("shutdown");
        let mut got = Vec::new();
        io.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, b"hello, world");

        // Writes skip the prefix and go straight to the peer.
        io.write_all(b"reply").await.expect("write");
        io.flush().await.expect("flush");
        let mut reply = [0; 5];
        client.read_exact(&mut reply).await.expect("read reply");
        assert_eq!(&reply, b"reply");
    }

    #[tokio::test]
    async fn prefixed_io_replays_across_small_reads() {
        let mut io = PrefixedIo::new(b"abcdefg".to_vec(), &b"hij"[..]);
        let mut small = [0; 3];
        let n = io.read(&mut small).await.expect("read");
        assert_eq!(&small[..n], b"abc");
        let (rest, inner) = io.into_parts();
        assert_eq!(rest, b"defg");
        assert_eq!(inner, b"hij");
    }

    #[tokio::test]
    async fn peeked_connection_reads_as_if_untouched() {
        let (mut client, mut server) = duplex(256);
        let writer = tokio::spawn(async move {
            for piece in CHROMIUM_PQ.chunks(100) {
                client.write_all(piece).await.expect("write");
            }
            client.write_all(b"after").await.expect("write");
            client.shutdown().await.expect("shutdown");
        });
        let (hello, seen) = read_client_hello(&mut server, 16 * 1024, soon())
            .await
            .expect("hello");
        assert_eq!(hello.server_name.as_deref(), Some("pq.example.test"));
        let mut replayed = Vec::new();
        PrefixedIo::new(seen, server)
            .read_to_end(&mut replayed)
            .await
            .expect("read");
        assert_eq!(replayed, [CHROMIUM_PQ, b"after"].concat());
        writer.await.expect("writer");
    }

    #[test]
    fn errors_keep_their_source() {
        use std::error::Error;
        let err = PeekError::from(HelloError::NotTls);
        assert!(err.source().is_some());
        assert!(PeekError::Timeout.source().is_none());
        let err = PeekError::from(io::Error::other("boom"));
        assert_eq!(err.source().map(|s| s.to_string()).as_deref(), Some("boom"));
    }
}
