//! The HTTP server: the accept loop, and the bounds and timeouts of each connection.
//!
//! - `connection`: the idle and write timeouts of each connection;
//! - `routes`: the endpoints (`/metrics`, `/`, `/probe`, `/config`, `/-/reload`,
//!   `/-/healthy`, `/-/ready`) and their handlers;
//! - `query`: query strings, decoded;
//! - [`probe`]: `/probe?target=host:port`, behind the allow list;
//! - [`status`]: the status page at `/`;
//! - [`security`]: the web config file (TLS, basic auth).

mod connection;
pub mod probe;
mod query;
mod routes;
pub mod security;
pub mod status;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

use crate::exposition::Metrics;
use crate::probe::Probe;
use crate::reload::Reloader;
use crate::state::StateTable;
use crate::web::security::WebConfig;
pub use connection::Timeouts;
use connection::{Activity, Watched};

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head (request line and headers) read; larger ones get 431.
const MAX_REQUEST_HEAD: usize = 64 * 1024;
/// How long open connections get to finish after shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the request handlers need; `P` probes for `/probe`.
pub struct Web<P> {
    pub metrics: Arc<Metrics>,
    pub table: Arc<StateTable>,
    /// The config in force, and reloads.
    pub reloader: Arc<Reloader<P>>,
    /// How `/probe` probes: the scheduler's probe, [`TcpProbe`](crate::probe::TcpProbe), in
    /// the exporter.
    pub probe: P,
    /// `/probe`'s own lookups and connect slots, apart from the scheduler's.
    pub on_demand: probe::OnDemand,
    /// TLS and basic auth (`--web.config.file`); `None` serves plain HTTP to everyone.
    pub web_config: Option<WebConfig>,
    pub ready: watch::Receiver<bool>,
    /// Path of the metrics endpoint (`--web.telemetry-path`).
    pub telemetry_path: String,
    /// The cap on requests handled at once (`--web.max-requests`); `None`: no cap.
    pub request_slots: Option<Arc<Semaphore>>,
    /// The most connections open at once (`--web.max-connections`); more are closed at once.
    pub max_connections: usize,
    /// How long a connection may make no progress.
    pub timeouts: Timeouts,
}

/// A response body of one or more buffers, sent without copying them together, and what must
/// live as long as it is being sent (its connection's "sending" mark, its request slot).
pub struct Body {
    chunks: std::collections::VecDeque<Bytes>,
    held: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

impl Body {
    fn from_chunks(chunks: impl IntoIterator<Item = Bytes>) -> Body {
        Body {
            chunks: chunks.into_iter().filter(|c| !c.is_empty()).collect(),
            held: Vec::new(),
        }
    }

    /// Keeps `value` until the body is sent or dropped.
    fn holding(mut self, value: impl std::any::Any + Send + Sync) -> Body {
        self.held.push(Box::new(value));
        self
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Body {
        Body::from_chunks([bytes])
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(
            self.chunks
                .pop_front()
                .map(|c| Ok(hyper::body::Frame::data(c))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        let len = self.chunks.iter().map(|c| c.len() as u64).sum();
        hyper::body::SizeHint::with_exact(len)
    }
}

/// The first pause after a failed accept; it doubles with each failure in a row, up to 1 s.
const ACCEPT_BACK_OFF: Duration = Duration::from_millis(10);

/// Serves HTTP (or HTTPS, per the web config) on `listener` until `shutdown` is cancelled,
/// then lets open requests finish.
pub async fn serve<P: Probe + Clone>(
    listener: TcpListener,
    web: Arc<Web<P>>,
    shutdown: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(web.max_connections.max(1)));
    // Failed accepts in a row: out of fds, say. Logged once, then once more on recovery.
    let mut failed_accepts: u32 = 0;
    // Connections closed at once for the cap, since the last one let in.
    let mut refused: u64 = 0;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    if failed_accepts == 0 {
                        tracing::warn!(%error, "accept failed; retrying with back-off");
                    }
                    failed_accepts = failed_accepts.saturating_add(1);
                    // Back off instead of spinning.
                    let doublings = (failed_accepts - 1).min(7);
                    let back_off = ACCEPT_BACK_OFF.saturating_mul(1 << doublings);
                    tokio::select! {
                        () = tokio::time::sleep(back_off.min(Duration::from_secs(1))) => {}
                        () = shutdown.cancelled() => break,
                    }
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        if failed_accepts > 0 {
            tracing::info!(failed_accepts, "accepting connections again");
            failed_accepts = 0;
        }
        let Ok(connection_slot) = connections.clone().try_acquire_owned() else {
            if refused == 0 {
                tracing::warn!(
                    %peer,
                    max_connections = web.max_connections,
                    "too many connections (--web.max-connections); closing new ones at once"
                );
            }
            refused = refused.saturating_add(1);
            drop(stream);
            continue;
        };
        if refused > 0 {
            tracing::info!(refused, "accepting connections under the cap again");
            refused = 0;
        }
        let web = web.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _connection_slot = connection_slot;
            let tls = web.web_config.as_ref().and_then(|c| c.tls()).cloned();
            let result = match tls {
                None => serve_connection(stream, web, watcher).await,
                Some(tls) => {
                    let handshake = tokio::time::timeout(HEADER_READ_TIMEOUT, tls.accept(stream));
                    match handshake.await {
                        Ok(Ok(stream)) => serve_connection(stream, web, watcher).await,
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                            return;
                        }
                        Err(_elapsed) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("connections still open after the grace period; closing them");
        }
    }
}

/// Serves one HTTP/1.1 connection over `io` (plain TCP or TLS) until it ends or shutdown.
async fn serve_connection<I, P>(io: I, web: Arc<Web<P>>, watcher: Watcher) -> hyper::Result<()>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    P: Probe + Clone,
{
    let activity = Activity::new();
    let timeouts = web.timeouts;
    let io = Watched::new(io, activity.clone());
    let requests = activity.clone();
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD)
        // The buffer cap alone is soft (a head arriving in one write may exceed it).
        .max_header_size(MAX_REQUEST_HEAD)
        .serve_connection(
            TokioIo::new(io),
            service_fn(move |request| {
                let web = web.clone();
                let activity = requests.clone();
                async move {
                    let handling = activity.handling();
                    let mut response = routes::handle(&web, request).await;
                    // Marked sending before the handler's mark goes: no moment unwatched.
                    let superseded = response.extensions_mut().remove::<connection::Superseded>();
                    let sending = activity.sending(superseded);
                    drop(handling);
                    Ok::<_, Infallible>(response.map(|body| body.holding(sending)))
                }
            }),
        );
    tokio::select! {
        result = watcher.watch(connection) => result,
        stalled = connection::watchdog(&activity, timeouts) => {
            // Dropping the connection closes it and frees the response it was sending.
            tracing::debug!(?stalled, "connection closed: no progress");
            Ok(())
        }
    }
}
