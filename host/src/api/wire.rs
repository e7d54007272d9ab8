//! JSON bodies for the errors hyper answers by itself.
//!
//! A request hyper cannot parse never reaches poem: hyper answers it with a
//! status line and an empty body and closes the connection — 400 for a
//! malformed request line or header, 414 for a URI over 65,534 bytes, 431 for
//! more than 100 headers or a head over about 400 KiB. poem has no hook for
//! these, so the connection's writer is wrapped here: such a head-only answer
//! is replaced by the same status with the API's JSON error body. Nothing
//! else can match: every answer the API itself gives carries a body.
//!
//! What still cannot be wrapped: HTTP/2 protocol errors (a stream reset has
//! no body) and a connection closed before a full request head arrived.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use poem::http::StatusCode;
use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use poem_openapi::types::ToJSON as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::error::ErrorBody;

/// An acceptor whose connections answer hyper's own errors in JSON.
pub struct JsonErrors<A>(pub A);

impl<A: Acceptor> Acceptor for JsonErrors<A> {
    type Io = JsonErrorsIo<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.0.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let (io, local, remote, scheme) = self.0.accept().await?;
        Ok((
            JsonErrorsIo {
                inner: io,
                pending: None,
            },
            local,
            remote,
            scheme,
        ))
    }
}

/// A connection whose writes are passed through, except hyper's head-only
/// error answers.
pub struct JsonErrorsIo<IO> {
    inner: IO,
    /// A replacement being written: its bytes, how many are written, and
    /// the length of the write it replaces (what hyper is told was written).
    pending: Option<(Vec<u8>, usize, usize)>,
}

/// The JSON answer for one of hyper's automatic error heads, if `head` is one.
fn replacement(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    if !text.starts_with("HTTP/1.") || !text.ends_with("\r\n\r\n") {
        return None;
    }
    let code: u16 = text.split(' ').nth(1)?.parse().ok()?;
    let empty = text
        .split("\r\n")
        .any(|line| line.eq_ignore_ascii_case("content-length: 0"));
    if !empty {
        return None;
    }
    let (status, message) = match code {
        400 => (
            StatusCode::BAD_REQUEST,
            "malformed HTTP request: the request line or a header could not be parsed",
        ),
        414 => (
            StatusCode::URI_TOO_LONG,
            "the request URI is longer than 65534 bytes; send large input in a body",
        ),
        431 => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "the request headers are too many (more than 100) or too large (about 400 KiB in all)",
        ),
        _ => return None,
    };
    let body = ErrorBody::new(status, message).to_json_string();
    Some(
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        )
        .into_bytes(),
    )
}

impl<IO: AsyncWrite + Unpin> JsonErrorsIo<IO> {
    /// Writes the pending replacement out; `Ready(Ok(n))` with the length
    /// of the write it replaced once all of it is written.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        while let Some((bytes, written, replaced)) = &mut self.pending {
            if *written == bytes.len() {
                let replaced = *replaced;
                self.pending = None;
                return Poll::Ready(Ok(replaced));
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(0))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for JsonErrorsIo<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for JsonErrorsIo<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.pending.is_none() {
            match replacement(buf) {
                Some(bytes) => self.pending = Some((bytes, 0, buf.len())),
                None => return Pin::new(&mut self.inner).poll_write(cx, buf),
            }
        }
        self.drain(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // hyper writes an error head as one slice; anything else goes through.
        let first = bufs.iter().find(|b| !b.is_empty());
        match first {
            Some(head) if self.pending.is_some() || (bufs.len() == 1 && replacement(head).is_some()) => {
                self.poll_write(cx, head)
            }
            _ => Pin::new(&mut self.inner).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_empty_error_heads_are_replaced() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let text = String::from_utf8(replacement(head).expect("replaced")).expect("utf-8");
        assert!(
            text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{text}"
        );
        assert!(text.contains("\"error\":\"request_header_fields_too_large\""), "{text}");
        assert!(replacement(b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n").is_some());
        // The API's own answers have bodies; other statuses are left alone.
        assert!(replacement(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 80\r\n\r\n{}").is_none());
        assert!(replacement(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(replacement(b"{\"status\":\"ok\"}").is_none());
    }
}
