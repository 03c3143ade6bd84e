//! Connections that go quiet are closed: a client that opens a connection and sends nothing, or
//! half a request and then nothing more (slowloris), would otherwise hold it — and a shutdown —
//! for ever. A read that waits longer than the limit fails, which ends the connection.
//!
//! Trickling is not quiet: a client that sends one byte every few seconds never waits long
//! for a read. So a request must also be complete within [`REQUEST_LIMIT`]: from the first byte
//! the server has not answered yet to the first byte of its answer. Thousands of connections
//! held open that way would otherwise exhaust the server's file descriptors.
//!
//! And there is a ceiling on how many connections are open at once: past it the listener stops
//! accepting (new clients wait in the kernel's backlog) until one closes, so a crowd of clients
//! costs a bounded amount of memory and cannot take the file descriptors the database needs.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// How long a connection may wait for its client's next bytes.
pub const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// How long a client may take to send a request (headers and body, at most the body limit)
/// before the server answers; about 3 KB/s for the largest body.
pub const REQUEST_LIMIT: Duration = Duration::from_secs(20);

/// A listener whose connections are [`IdleIo`], at most `max_connections` of them at once.
#[derive(Debug)]
pub struct IdleTimeout<L> {
    inner: L,
    limit: Duration,
    slots: Arc<Semaphore>,
    /// The ceiling was reached and not yet left: logged once per episode, not per connection.
    full: AtomicBool,
}

impl<L> IdleTimeout<L> {
    pub fn new(inner: L, limit: Duration, max_connections: usize) -> Self {
        Self {
            inner,
            limit,
            slots: Arc::new(Semaphore::new(max_connections.clamp(1, Semaphore::MAX_PERMITS))),
            full: AtomicBool::new(false),
        }
    }
}

/// Waits for a free connection slot. (A free function over the two fields: the listener itself
/// need not be `Sync`, and `accept`'s future must be `Send`.)
async fn free_slot(slots: &Arc<Semaphore>, full: &AtomicBool) -> Option<OwnedSemaphorePermit> {
    if let Ok(p) = Arc::clone(slots).try_acquire_owned() {
        if full.swap(false, Ordering::Relaxed) {
            tracing::info!("below the connection ceiling again; accepting");
        }
        return Some(p);
    }
    if !full.swap(true, Ordering::Relaxed) {
        tracing::warn!("connection ceiling reached (limits.max_connections); new clients wait until one closes");
    }
    // The semaphore is never closed, so this only ends with a permit.
    Arc::clone(slots).acquire_owned().await.ok()
}

impl<L: axum::serve::Listener> axum::serve::Listener for IdleTimeout<L> {
    type Io = IdleIo<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let slot = free_slot(&self.slots, &self.full).await;
        let (io, addr) = self.inner.accept().await;
        let mut io = IdleIo::new(io, self.limit);
        io.slot = slot;
        (io, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection whose reads fail once nothing has arrived for the limit.
#[derive(Debug)]
pub struct IdleIo<T> {
    io: T,
    limit: Duration,
    request_limit: Duration,
    deadline: Pin<Box<Sleep>>,
    /// When the client sent the first byte the server has not answered yet.
    unanswered_since: Option<Instant>,
    /// The listener's connection slot, given back when the connection is dropped.
    slot: Option<OwnedSemaphorePermit>,
}

impl<T> IdleIo<T> {
    fn new(io: T, limit: Duration) -> Self {
        Self::with_request_limit(io, limit, REQUEST_LIMIT)
    }

    fn with_request_limit(io: T, limit: Duration, request_limit: Duration) -> Self {
        Self {
            io,
            limit,
            request_limit,
            deadline: Box::pin(tokio::time::sleep(limit)),
            unanswered_since: None,
            slot: None,
        }
    }

    /// The server wrote: whatever the client had sent is being answered.
    fn answered(&mut self, written: &io::Result<usize>) {
        if written.as_ref().is_ok_and(|n| *n > 0) {
            self.unanswered_since = None;
        }
    }

    /// The wrapped connection (a TLS stream's peer certificate, say).
    pub fn inner(&self) -> &T {
        &self.io
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                let now = Instant::now();
                if buf.filled().len() > before && this.unanswered_since.is_none() {
                    this.unanswered_since = Some(now);
                }
                let request_deadline = this.unanswered_since.map(|t| t + this.request_limit);
                if request_deadline.is_some_and(|d| now >= d) {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client took too long to send its request",
                    )));
                }
                let idle = now + this.limit;
                this.deadline
                    .as_mut()
                    .reset(request_deadline.map_or(idle, |d| d.min(idle)));
                Poll::Ready(r)
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent nothing, or not a whole request, for too long",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(w) = &written {
            self.answered(w);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(w) = &written {
            self.answered(w);
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A quiet peer fails the read after the limit; one that keeps talking does not.
    #[tokio::test]
    async fn quiet_connections_fail_their_reads() {
        let (_quiet, server) = tokio::io::duplex(64);
        let mut io = IdleIo::new(server, Duration::from_millis(100));
        let mut buf = [0u8; 8];
        let started = std::time::Instant::now();
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(100));
        let (mut client, server) = tokio::io::duplex(64);
        let mut io = IdleIo::new(server, Duration::from_millis(100));
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(60)).await;
            client.write_all(b"x").await.unwrap();
            assert_eq!(io.read(&mut buf).await.unwrap(), 1);
        }
    }

    /// A listener yielding in-memory connections, for the ceiling test.
    struct Duplexes(tokio::sync::mpsc::UnboundedReceiver<tokio::io::DuplexStream>);

    impl axum::serve::Listener for Duplexes {
        type Io = tokio::io::DuplexStream;
        type Addr = ();

        async fn accept(&mut self) -> (Self::Io, ()) {
            match self.0.recv().await {
                Some(io) => (io, ()),
                None => std::future::pending().await,
            }
        }

        fn local_addr(&self) -> io::Result<()> {
            Ok(())
        }
    }

    /// At the ceiling the listener accepts nothing more until a connection is dropped.
    #[tokio::test]
    async fn the_listener_holds_new_connections_at_the_ceiling() {
        use axum::serve::Listener;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut listener = IdleTimeout::new(Duplexes(rx), Duration::from_secs(5), 2);
        let mut peers = Vec::new();
        for _ in 0..3 {
            let (client, server) = tokio::io::duplex(64);
            tx.send(server).unwrap();
            peers.push(client);
        }
        let first = listener.accept().await.0;
        let _second = listener.accept().await.0;
        let third = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
        assert!(third.is_err(), "a third connection was accepted over a ceiling of two");
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(1), listener.accept()).await;
        assert!(
            third.is_ok(),
            "a slot was freed but the waiting connection was not accepted"
        );
    }

    /// A client trickling a request byte by byte is cut off once the request limit has passed
    /// since its first unanswered byte; an answer starts the clock again.
    #[tokio::test]
    async fn a_request_must_arrive_within_the_request_limit() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut io = IdleIo::with_request_limit(server, Duration::from_millis(200), Duration::from_millis(150));
        let mut buf = [0u8; 8];
        for _ in 0..2 {
            client.write_all(b"G").await.unwrap();
            assert_eq!(io.read(&mut buf).await.unwrap(), 1);
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        // Answered: the next request has a limit of its own.
        io.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        for _ in 0..2 {
            client.write_all(b"G").await.unwrap();
            assert_eq!(io.read(&mut buf).await.unwrap(), 1);
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        client.write_all(b"G").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 1);
        tokio::time::sleep(Duration::from_millis(60)).await;
        client.write_all(b"G").await.unwrap();
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        // A client that stops halfway waits no longer than the request limit either.
        let (mut client, server) = tokio::io::duplex(64);
        let mut io = IdleIo::with_request_limit(server, Duration::from_secs(5), Duration::from_millis(100));
        client.write_all(b"GET /").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 5);
        let started = std::time::Instant::now();
        assert_eq!(io.read(&mut buf).await.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
