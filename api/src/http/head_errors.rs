//! Problem+json for the requests hyper refuses itself.
//!
//! A request head hyper cannot take — over the size or header-count limit (431), a URI too long
//! (414), not HTTP (400) — is answered by hyper before any of our code runs, with an empty body,
//! and the connection closed. [`ProblemHeads`] wraps each connection's stream and rewrites those
//! answers, and only those, into the problem+json every other refusal gets. It recognises them by
//! their shape: a 400, 414 or 431 with `content-length: 0` and nothing after the head, which no
//! handler of ours writes (every refusal of ours has a body).
//!
//! The client may still be sending the head that was refused (a megabyte of headers): closing at
//! once would reset the connection and lose the answer in flight, so once the answer is written
//! the stream half-closes and reads what still comes, for a bounded time and amount (a lingering
//! close), before hyper drops it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::http::error::ApiError;

/// Largest request head (request line and headers) accepted, in bytes.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields a request may have (hyper's default, said here for the refusal's message).
pub const MAX_HEADERS: usize = 100;

/// How long, and for how many bytes, a refused client's late bytes are read after the answer.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 4 * 1024 * 1024;

/// A connection's stream whose automatic error answers come out as problem+json.
pub struct ProblemHeads<S> {
    inner: S,
    /// The rewritten answer and how much of it is written.
    pending: Option<(Vec<u8>, usize)>,
    /// After a rewritten answer: the lingering close's deadline and what it has read.
    linger: Option<(Pin<Box<Sleep>>, usize)>,
}

impl<S> ProblemHeads<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            pending: None,
            linger: None,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> ProblemHeads<S> {
    /// Writes what is left of a rewritten answer, then lingers.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((answer, written)) = &mut self.pending {
            if *written < answer.len() {
                let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &answer[*written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *written += n;
                continue;
            }
            ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
            // Only the write side closes: the client's late bytes are still read below.
            ready!(Pin::new(&mut self.inner).poll_shutdown(cx))?;
            self.pending = None;
            self.linger = Some((Box::pin(tokio::time::sleep(LINGER_TIME)), 0));
        }
        self.poll_linger(cx)
    }

    /// Reads and drops what the refused client still sends, until it closes, or the time or the
    /// amount runs out.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some((deadline, read)) = &mut self.linger else {
            return Poll::Ready(Ok(()));
        };
        let mut scratch = [0u8; 8192];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    *read += buf.filled().len();
                    if *read > LINGER_BYTES {
                        break;
                    }
                }
                Poll::Ready(_) => break,
                Poll::Pending if deadline.as_mut().poll(cx).is_ready() => break,
                Poll::Pending => return Poll::Pending,
            }
        }
        self.linger = None;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ProblemHeads<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> ProblemHeads<S> {
    /// Takes `head` in place of writing it when it is (or, offered again after a `Pending`, was)
    /// one of hyper's automatic error answers; `None` for anything else.
    fn poll_rewrite(
        &mut self,
        cx: &mut Context<'_>,
        head: &[u8],
    ) -> Option<Poll<io::Result<usize>>> {
        if self.pending.is_none() && self.linger.is_none() {
            self.pending = Some((problem_for(head)?, 0));
        }
        Some(self.poll_pending(cx).map_ok(|()| head.len()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ProblemHeads<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(rewritten) = self.poll_rewrite(cx, buf) {
            return rewritten;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // hyper's automatic answer is a head alone, in one buffer.
        if let [head] = bufs
            && let Some(rewritten) = self.poll_rewrite(cx, head)
        {
            return rewritten;
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The problem+json answer replacing `written`, if it is one of hyper's automatic error answers.
fn problem_for(written: &[u8]) -> Option<Vec<u8>> {
    let status = written
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| written.strip_prefix(b"HTTP/1.0 "))?
        .get(..3)?;
    let error = match status {
        b"400" => ApiError::malformed("the request head is not valid HTTP/1.1"),
        b"414" => ApiError::uri_too_long(),
        b"431" => ApiError::head_too_large(MAX_HEAD_BYTES, MAX_HEADERS),
        _ => return None,
    };
    let head_end = memchr::memmem::find(written, b"\r\n\r\n")? + 4;
    let empty = memchr::memmem::find(
        &written[..head_end].to_ascii_lowercase(),
        b"\r\ncontent-length: 0\r\n",
    )
    .is_some();
    if !empty || head_end != written.len() {
        return None;
    }
    let status = error.status();
    let body = serde_json::to_string(&error.problem()).unwrap_or_default();
    let mut answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error"),
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(body.as_bytes());
    Some(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(written: &str) -> Option<String> {
        problem_for(written.as_bytes()).map(|a| String::from_utf8(a).expect("UTF-8"))
    }

    #[test]
    fn hypers_empty_error_answers_become_problem_json() {
        let rewritten = answer(
            "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\
             date: Mon, 30 Nov 2026 05:00:00 GMT\r\n\r\n",
        )
        .expect("rewritten");
        assert!(rewritten.starts_with("HTTP/1.1 431 "), "{rewritten}");
        assert!(rewritten.contains("application/problem+json"));
        assert!(rewritten.contains("connection: close"));
        let body: serde_json::Value =
            serde_json::from_str(rewritten.split("\r\n\r\n").nth(1).expect("body")).expect("JSON");
        assert_eq!(body["status"], 431);
        assert_eq!(body["code"], "header_too_large");
        assert!(answer("HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n").is_some());
    }

    #[test]
    fn answers_of_our_own_pass_untouched() {
        assert!(answer("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(
            answer(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\n\
                 content-length: 2\r\n\r\n{}"
            )
            .is_none()
        );
        assert!(answer("{\"HTTP/1.1 431\"}").is_none());
    }
}
