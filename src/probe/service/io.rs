//! Bounded reads and writes for the service check: every exchange stops at a byte limit and a
//! deadline, and a TLS connection's raw bytes are counted (and its first ones kept, to tell
//! what answered a ClientHello when it was not TLS).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, timeout_at};

/// The most bytes one exchange reads (a greeting, a reply).
pub const READ_LIMIT: usize = 16 * 1024;

/// The most raw bytes a TLS connection reads in all: the handshake's certificate chain, then
/// the exchanges inside.
pub const TLS_LIMIT: usize = 64 * 1024;

/// How an exchange's read ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The bytes told what they were.
    Decided,
    /// The deadline came first.
    Timeout,
    /// The peer closed (or reset) the connection.
    Closed,
    /// [`READ_LIMIT`] bytes came without telling anything.
    Limit,
}

/// What one exchange read, how it ended, and the answer `decide` gave.
#[derive(Debug)]
pub struct Reply<T> {
    pub answer: Option<T>,
    pub ended: Ended,
    pub bytes: Vec<u8>,
}

/// Sends `send` (if any), then reads until `decide` answers, the peer closes, [`READ_LIMIT`]
/// bytes came or `until`. `decide(bytes, done)` is asked after every read with `done` false
/// (`None`: read on), and once more with `done` true when the read ends without its answer.
pub async fn exchange<S, T>(
    stream: &mut S,
    send: &[u8],
    until: Instant,
    decide: impl FnMut(&[u8], bool) -> Option<T>,
) -> Reply<T>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Err(ended) = write(stream, send, until).await {
        return Reply {
            answer: None,
            ended,
            bytes: Vec::new(),
        };
    }
    let mut bytes = Vec::new();
    let (answer, ended) = read_until(stream, &mut bytes, until, decide).await;
    Reply {
        answer,
        ended,
        bytes,
    }
}

/// Writes all of `bytes` and flushes (a TLS stream sends on flush), by `until`.
pub async fn write<S>(stream: &mut S, bytes: &[u8], until: Instant) -> Result<(), Ended>
where
    S: AsyncWrite + Unpin,
{
    if bytes.is_empty() {
        return Ok(());
    }
    let sent = async {
        stream.write_all(bytes).await?;
        stream.flush().await
    };
    match timeout_at(until, sent).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Ended::Closed),
        Err(_) => Err(Ended::Timeout),
    }
}

/// Reads into `bytes` (which may hold bytes already read) as [`exchange`] does.
pub async fn read_until<S, T>(
    stream: &mut S,
    bytes: &mut Vec<u8>,
    until: Instant,
    mut decide: impl FnMut(&[u8], bool) -> Option<T>,
) -> (Option<T>, Ended)
where
    S: AsyncRead + Unpin,
{
    let mut chunk = [0u8; 4096];
    let ended = loop {
        if let Some(answer) = decide(bytes, false) {
            return (Some(answer), Ended::Decided);
        }
        let room = READ_LIMIT.saturating_sub(bytes.len()).min(chunk.len());
        if room == 0 {
            break Ended::Limit;
        }
        match timeout_at(until, stream.read(&mut chunk[..room])).await {
            Ok(Ok(0) | Err(_)) => break Ended::Closed,
            Ok(Ok(read)) => bytes.extend_from_slice(&chunk[..read]),
            Err(_) => break Ended::Timeout,
        }
    };
    (decide(bytes, true), ended)
}

/// A stream whose reads stop with an error past [`TLS_LIMIT`] bytes, and which keeps the
/// first [`READ_LIMIT`] bytes it read.
#[derive(Debug)]
pub struct Counted<S> {
    inner: S,
    read: usize,
    first: Vec<u8>,
}

/// The error a [`Counted`] stream's read fails with past its limit.
#[derive(Debug, thiserror::Error)]
#[error("more than {TLS_LIMIT} bytes read")]
pub struct OverLimit;

impl<S> Counted<S> {
    pub fn new(inner: S) -> Counted<S> {
        Counted {
            inner,
            read: 0,
            first: Vec::new(),
        }
    }

    /// The first bytes read.
    pub fn first(&self) -> &[u8] {
        &self.first
    }

    /// Whether the limit stopped a read.
    pub fn over_limit(&self) -> bool {
        self.read >= TLS_LIMIT
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let room = TLS_LIMIT.saturating_sub(self.read).min(buf.remaining());
        if room == 0 && buf.remaining() > 0 {
            return Poll::Ready(Err(io::Error::other(OverLimit)));
        }
        let mut chunk = [0u8; 4096];
        let mut limited = ReadBuf::new(&mut chunk[..room.min(4096)]);
        ready!(Pin::new(&mut self.inner).poll_read(cx, &mut limited))?;
        let got = limited.filled();
        buf.put_slice(got);
        let keep = READ_LIMIT.saturating_sub(self.first.len()).min(got.len());
        self.first.extend_from_slice(&got[..keep]);
        self.read += got.len();
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_reply_that_never_ends_stops_at_the_byte_limit() {
        let (mut ours, mut theirs) = tokio::io::duplex(1 << 20);
        let flood = tokio::spawn(async move {
            let junk = [b'x'; 1024];
            while theirs.write_all(&junk).await.is_ok() {}
        });
        let until = Instant::now() + Duration::from_secs(5);
        let reply = exchange(&mut ours, b"hello", until, |_, done| done.then_some(())).await;
        assert_eq!(reply.ended, Ended::Limit);
        assert_eq!(reply.bytes.len(), READ_LIMIT);
        drop(ours);
        flood.await.unwrap();
    }

    #[tokio::test]
    async fn silence_ends_at_the_deadline() {
        let (mut ours, _theirs) = tokio::io::duplex(1024);
        let started = Instant::now();
        let until = started + Duration::from_millis(100);
        let (answer, ended) =
            read_until(&mut ours, &mut Vec::new(), until, |_, _| None::<()>).await;
        assert_eq!((answer, ended), (None, Ended::Timeout));
        assert!(started.elapsed() < Duration::from_millis(500));
    }

    #[tokio::test]
    async fn a_counted_stream_fails_past_its_limit_and_keeps_the_first_bytes() {
        let (ours, mut theirs) = tokio::io::duplex(1 << 20);
        tokio::spawn(async move {
            let junk = [b'y'; 1024];
            while theirs.write_all(&junk).await.is_ok() {}
        });
        let mut counted = Counted::new(ours);
        let mut sink = vec![0; 8192];
        let error = loop {
            match counted.read(&mut sink).await {
                Ok(_) => {}
                Err(error) => break error,
            }
        };
        assert!(error.get_ref().is_some_and(|e| e.is::<OverLimit>()));
        assert!(counted.over_limit());
        assert_eq!(counted.first().len(), READ_LIMIT);
    }
}
