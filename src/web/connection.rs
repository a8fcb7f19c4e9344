//! How long one HTTP connection may make no progress: the idle and write timeouts.
//!
//! hyper bounds how long a request head may take to arrive; nothing of hyper's bounds a client
//! that stops reading a response (its socket buffer full, the body's buffers pinned in memory)
//! or a keep-alive connection that never sends another request. So every connection's I/O is
//! [`Watched`]: each read or write that moves bytes stamps the time, and [`watchdog`] ends
//! the connection when, with no handler running, nothing moved for longer than allowed: the
//! write timeout while a response is being sent, the idle timeout between requests. A handler
//! that is still working (a `/probe` waiting for its answer) has its own budget and is not cut.
//! A response whose memory must be let go (its rendering [`Superseded`]) is cut at once.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the watchdog looks at a connection.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// The timeouts of every connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// A response that makes no progress for this long is dropped (`--web.write-timeout`).
    pub write: Duration,
    /// A connection with no request for this long is closed (`--web.idle-timeout`).
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            write: Duration::from_secs(30),
            idle: Duration::from_secs(120),
        }
    }
}

/// A response extension: cancelled when the memory the response is made of must be let go.
#[derive(Clone, Debug)]
pub struct Superseded(pub CancellationToken);

/// What one connection is doing, shared by its I/O, its handlers and its watchdog.
#[derive(Debug)]
pub struct Activity {
    started: Instant,
    /// Milliseconds since `started` of the last read or write that moved bytes.
    last_progress: AtomicU64,
    /// Requests whose handler is running.
    handling: AtomicUsize,
    /// Responses being sent (their bodies alive).
    sending: AtomicUsize,
    /// The [`Superseded`] token of the response being sent, if it has one. HTTP/1.1 sends
    /// one response at a time, so one place is enough.
    superseded: std::sync::Mutex<Option<CancellationToken>>,
    /// Pinged when a response starts, so the watchdog waits on its token at once.
    response_started: tokio::sync::Notify,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            started: Instant::now(),
            last_progress: AtomicU64::new(0),
            handling: AtomicUsize::new(0),
            sending: AtomicUsize::new(0),
            superseded: std::sync::Mutex::new(None),
            response_started: tokio::sync::Notify::new(),
        })
    }

    fn progressed(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_progress.store(now, Ordering::Relaxed);
    }

    fn still_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_progress.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    /// Marks a handler running until the guard is dropped.
    pub fn handling(self: &Arc<Self>) -> Handling {
        self.handling.fetch_add(1, Ordering::AcqRel);
        Handling(self.clone())
    }

    /// Marks a response being sent until the guard (held by its body) is dropped; the
    /// connection is cut if `superseded` is cancelled meanwhile.
    pub fn sending(self: &Arc<Self>, superseded: Option<Superseded>) -> Sending {
        self.sending.fetch_add(1, Ordering::AcqRel);
        *self.lock_superseded() = superseded.map(|s| s.0);
        self.response_started.notify_one();
        Sending(self.clone())
    }

    fn lock_superseded(&self) -> std::sync::MutexGuard<'_, Option<CancellationToken>> {
        self.superseded.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_superseded(&self) -> bool {
        self.lock_superseded()
            .as_ref()
            .is_some_and(CancellationToken::is_cancelled)
    }
}

/// A handler running on the connection.
pub struct Handling(Arc<Activity>);

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.handling.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response being sent on the connection.
pub struct Sending(Arc<Activity>);

impl Drop for Sending {
    fn drop(&mut self) {
        *self.0.lock_superseded() = None;
        self.0.sending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why the watchdog ended a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stalled {
    /// A response made no progress for the write timeout: the client does not read.
    Write,
    /// No request came for the idle timeout.
    Idle,
    /// The response's memory had to be let go.
    Superseded,
}

/// Returns once the connection stalled past its timeout; runs as long as it does not.
pub async fn watchdog(activity: &Activity, timeouts: Timeouts) -> Stalled {
    loop {
        // A superseded response is cut the moment it is superseded: stalled clients arriving
        // fast must not pin a rendering each until the next look.
        let superseded = activity.lock_superseded().clone();
        tokio::select! {
            () = tokio::time::sleep(WATCH_EVERY) => {}
            () = async {
                match &superseded {
                    Some(token) => token.cancelled().await,
                    None => std::future::pending().await,
                }
            } => {}
            () = activity.response_started.notified() => continue,
        }
        if activity.handling.load(Ordering::Acquire) > 0 {
            continue;
        }
        let still = activity.still_for();
        if activity.sending.load(Ordering::Acquire) > 0 {
            if activity.is_superseded() {
                return Stalled::Superseded;
            }
            if still > timeouts.write {
                return Stalled::Write;
            }
        } else if still > timeouts.idle {
            return Stalled::Idle;
        }
    }
}

/// I/O that stamps [`Activity`] whenever bytes move.
pub struct Watched<I> {
    io: I,
    activity: Arc<Activity>,
}

impl<I> Watched<I> {
    pub fn new(io: I, activity: Arc<Activity>) -> Watched<I> {
        activity.progressed();
        Watched { io, activity }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.progressed();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.progressed();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.progressed();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_superseded_response_is_cut_at_once() {
        let activity = Activity::new();
        activity.progressed();
        let token = CancellationToken::new();
        let sending = activity.sending(Some(Superseded(token.clone())));
        let waited = tokio::time::timeout(Duration::from_secs(1), watchdog(&activity, SHORT));
        assert!(waited.await.is_err(), "cut before it was superseded");
        token.cancel();
        assert_eq!(watchdog(&activity, SHORT).await, Stalled::Superseded);
        // Once the response is sent, its token no longer matters.
        drop(sending);
        let _next = activity.sending(None);
        activity.progressed();
        assert_eq!(watchdog(&activity, SHORT).await, Stalled::Write);
    }

    const SHORT: Timeouts = Timeouts {
        write: Duration::from_secs(2),
        idle: Duration::from_secs(5),
    };

    #[tokio::test(start_paused = true)]
    async fn a_stalled_response_is_cut_after_the_write_timeout() {
        let activity = Activity::new();
        activity.progressed();
        let _sending = activity.sending(None);
        let started = Instant::now();
        assert_eq!(watchdog(&activity, SHORT).await, Stalled::Write);
        let took = started.elapsed();
        assert!(
            took > SHORT.write && took <= SHORT.write + WATCH_EVERY,
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed_after_the_idle_timeout_and_a_handler_is_never_cut() {
        let activity = Activity::new();
        activity.progressed();
        let handling = activity.handling();
        // A handler working for longer than both timeouts is left alone.
        let waited = tokio::time::timeout(Duration::from_secs(60), watchdog(&activity, SHORT));
        assert!(waited.await.is_err(), "cut while its handler ran");
        drop(handling);
        let started = Instant::now();
        assert_eq!(watchdog(&activity, SHORT).await, Stalled::Idle);
        assert!(
            started.elapsed() <= WATCH_EVERY,
            "idle since before the handler ended"
        );
        // Progress resets the clock.
        activity.progressed();
        let started = Instant::now();
        assert_eq!(watchdog(&activity, SHORT).await, Stalled::Idle);
        assert!(started.elapsed() > SHORT.idle);
    }
}
