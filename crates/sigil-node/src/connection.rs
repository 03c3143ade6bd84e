//! Workload API connections: the Unix stream with what the kernel says about the peer, plus the
//! program the peer ran when the connection was accepted, so attestation can tell whether the
//! process has since exec'd another program (keeping its pid and credentials).

use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tonic::transport::server::{Connected, UdsConnectInfo};

/// A connected caller, as the gRPC request's extension.
#[derive(Debug, Clone)]
pub struct CallerAtConnect {
    pub uds: UdsConnectInfo,
    pub exe: Option<PathBuf>,
}

/// An accepted Workload API connection.
#[derive(Debug)]
pub struct AttestedStream {
    inner: UnixStream,
    exe: Option<PathBuf>,
}

impl AttestedStream {
    /// Wraps a just-accepted stream, reading the peer's program now.
    pub fn accepted(inner: UnixStream) -> Self {
        let pid = inner.peer_cred().ok().and_then(|c| c.pid());
        let exe = crate::attestor::exe_of(pid);
        Self { inner, exe }
    }
}

impl Connected for AttestedStream {
    type ConnectInfo = CallerAtConnect;

    fn connect_info(&self) -> CallerAtConnect {
        CallerAtConnect {
            uds: self.inner.connect_info(),
            exe: self.exe.clone(),
        }
    }
}

impl AsyncRead for AttestedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for AttestedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
