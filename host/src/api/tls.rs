//! HTTPS for the sync API: a poem acceptor that wraps each accepted
//! connection in TLS (tokio-rustls with the ring provider).
//!
//! Not poem's own `rustls` feature: it brings tokio-rustls' default
//! provider, aws-lc-rs, which needs cmake and breaks the Windows
//! cross-build. The configuration (certificate, key) is built and checked
//! at start-up by [`crate::tls::server_config`].
//!
//! The handshake runs on the connection's own task, on first read or
//! write, not in `accept`: a client that connects and says nothing holds
//! up only itself, never the next connection.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::server::TlsStream;

use crate::tls::ServerTls;

/// Connections of `A`, in TLS.
pub struct TlsAcceptor<A> {
    inner: A,
    tls: tokio_rustls::TlsAcceptor,
}

impl<A> TlsAcceptor<A> {
    pub fn new(inner: A, config: ServerTls) -> TlsAcceptor<A> {
        TlsAcceptor {
            inner,
            tls: tokio_rustls::TlsAcceptor::from(config),
        }
    }
}

impl<A: Acceptor> Acceptor for TlsAcceptor<A> {
    type Io = Handshake<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let (io, local, remote, _) = self.inner.accept().await?;
        let handshake = Handshake {
            state: State::Handshaking(Box::new(self.tls.accept(io))),
            remote: remote.to_string(),
        };
        Ok((handshake, local, remote, Scheme::HTTPS))
    }
}

/// A connection whose TLS handshake completes on first use.
pub struct Handshake<IO> {
    state: State<IO>,
    /// The client, for the log line of a failed handshake.
    remote: String,
}

/// Both live states are boxed: rustls' connection state is over a kilobyte.
enum State<IO> {
    Handshaking(Box<tokio_rustls::Accept<IO>>),
    Ready(Box<TlsStream<IO>>),
    Failed,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Handshake<IO> {
    /// Drives the handshake; `Ready` with the TLS stream once it is done.
    fn stream(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&mut TlsStream<IO>>> {
        if let State::Handshaking(accept) = &mut self.state {
            match ready!(Pin::new(&mut **accept).poll(cx)) {
                Ok(stream) => self.state = State::Ready(Box::new(stream)),
                Err(error) => {
                    // A client that does not trust this certificate says so
                    // here (an alert), and only here.
                    tracing::info!(remote = %self.remote, %error, "sync API: TLS handshake failed");
                    self.state = State::Failed;
                    return Poll::Ready(Err(error));
                }
            }
        }
        match &mut self.state {
            State::Ready(stream) => Poll::Ready(Ok(stream)),
            _ => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the TLS handshake failed",
            ))),
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for Handshake<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let stream = ready!(self.stream(cx))?;
        Pin::new(stream).poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Handshake<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let stream = ready!(self.stream(cx))?;
        Pin::new(stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let stream = ready!(self.stream(cx))?;
        Pin::new(stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        match &self.state {
            State::Ready(stream) => stream.is_write_vectored(),
            _ => false,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let stream = ready!(self.stream(cx))?;
        Pin::new(stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let stream = ready!(self.stream(cx))?;
        Pin::new(stream).poll_shutdown(cx)
    }
}
