//! The HTTP server: `/metrics`, a landing page, and the health and readiness endpoints.
//!
//! - [`probe`]: `/probe?target=host:port`, behind the allow list;
//! - [`status`]: the status page at `/`;
//! - [`security`]: the web config file (TLS, basic auth).

pub mod probe;
pub mod security;
pub mod status;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

use crate::exposition::{Format, Metrics, TEXT_CONTENT_TYPE};
use crate::probe::TcpProbe;
use crate::reload::Reloader;
use crate::schedule::resolve::Resolver;
use crate::state::StateTable;
use crate::web::probe::{ProbeRequest, Refusal};
use crate::web::security::WebConfig;
use crate::web::status::StatusPage;

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head (request line and headers) read; larger ones get 431.
const MAX_REQUEST_HEAD: usize = 64 * 1024;
/// Seconds between automatic reloads of the status page.
const STATUS_REFRESH_SECONDS: u32 = 15;
/// How long open connections get to finish after shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the request handlers need.
pub struct Web {
    pub metrics: Arc<Metrics>,
    pub table: Arc<StateTable>,
    /// The config in force, and reloads.
    pub reloader: Arc<Reloader<TcpProbe>>,
    /// Name lookups for `/probe`, shared with the scheduler.
    pub resolver: Arc<Resolver>,
    /// TLS and basic auth (`--web.config.file`); `None` serves plain HTTP to everyone.
    pub web_config: Option<WebConfig>,
    pub ready: watch::Receiver<bool>,
    /// Path of the metrics endpoint (`--web.telemetry-path`).
    pub telemetry_path: String,
    /// The cap on requests handled at once (`--web.max-requests`); `None`: no cap.
    pub request_slots: Option<Arc<Semaphore>>,
}

/// A response body of one or more buffers, sent without copying them together.
pub struct Body {
    chunks: std::collections::VecDeque<Bytes>,
}

impl Body {
    fn from_chunks(chunks: impl IntoIterator<Item = Bytes>) -> Body {
        Body {
            chunks: chunks.into_iter().filter(|c| !c.is_empty()).collect(),
        }
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
pub async fn serve(listener: TcpListener, web: Arc<Web>, shutdown: CancellationToken) {
    let graceful = GracefulShutdown::new();
    // Failed accepts in a row: out of fds, say. Logged once, then once more on recovery.
    let mut failed_accepts: u32 = 0;
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
        let web = web.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
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
async fn serve_connection<I>(io: I, web: Arc<Web>, watcher: Watcher) -> hyper::Result<()>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
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
                async move { Ok::<_, Infallible>(handle(&web, request).await) }
            }),
        );
    watcher.watch(connection).await
}

async fn handle<B>(web: &Web, request: Request<B>) -> Response<Body> {
    // Over the cap, answer at once instead of queueing: a scraper retries, a pile-up does not.
    let _permit = match &web.request_slots {
        Some(slots) => match slots.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many requests in flight (--web.max-requests)\n",
                );
            }
        },
        None => None,
    };
    let authorized = web
        .web_config
        .as_ref()
        .is_none_or(|c| c.authorized(request.headers().get(header::AUTHORIZATION)));
    if !authorized {
        let mut response = text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"port_exporter\""),
        );
        return response;
    }
    let path = request.uri().path();
    let read_only = path == web.telemetry_path
        || ["/", "/-/healthy", "/-/ready", "/config", "/probe"].contains(&path);
    let allowed_methods = match path {
        "/-/reload" => "POST",
        _ if read_only => "GET, HEAD",
        _ => return text(StatusCode::NOT_FOUND, "404 page not found\n"),
    };
    let method_allowed = match allowed_methods {
        "POST" => request.method() == Method::POST,
        _ => request.method() == Method::GET || request.method() == Method::HEAD,
    };
    if !method_allowed {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allowed_methods));
        return response;
    }
    match path {
        p if p == web.telemetry_path => metrics(web, &request).await,
        "/" => status_page(web, &request),
        "/probe" => probe(web, &request).await,
        "/config" => text(StatusCode::OK, web.reloader.current().source.clone()),
        "/-/reload" => match web.reloader.reload() {
            Ok(()) => text(StatusCode::OK, "config reloaded\n"),
            Err(error) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("config reload failed, the running config stays: {error}\n"),
            ),
        },
        "/-/healthy" => text(StatusCode::OK, "port_exporter is healthy.\n"),
        _ if *web.ready.borrow() => text(StatusCode::OK, "port_exporter is ready.\n"),
        _ => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "port_exporter is not ready: the first round of probes is still running.\n",
        ),
    }
}

/// `/probe?target=host:port`: 400 for a bad request, 403 outside the allow list.
async fn probe<B>(web: &Web, request: &Request<B>) -> Response<Body> {
    let Some(params) = query_params(request.uri().query()) else {
        return text(StatusCode::BAD_REQUEST, "malformed query string\n");
    };
    let probe_request = match ProbeRequest::parse(&params) {
        Ok(probe_request) => probe_request,
        Err(refusal) => return refused(&refusal),
    };
    let scrape_timeout = request
        .headers()
        .get("X-Prometheus-Scrape-Timeout-Seconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .filter(|d| !d.is_zero());
    let config = web.reloader.current();
    let debug = probe_request.debug;
    let report = match probe::probe(
        &TcpProbe,
        &web.resolver,
        &config,
        probe_request,
        scrape_timeout,
    )
    .await
    {
        Ok(report) => report,
        Err(refusal) => return refused(&refusal),
    };
    if debug {
        return text(StatusCode::OK, report.debug_text());
    }
    let mut response = Response::new(Body::from(Bytes::from(report.render())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(TEXT_CONTENT_TYPE),
    );
    response
}

fn refused(refusal: &Refusal) -> Response<Body> {
    let status = match refusal {
        Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
        Refusal::Forbidden(_) => StatusCode::FORBIDDEN,
    };
    text(status, format!("{refusal}\n"))
}

async fn metrics<B>(web: &Web, request: &Request<B>) -> Response<Body> {
    let gzip = accepts_gzip(request.headers().get(header::ACCEPT_ENCODING));
    let accept = request.headers().get(header::ACCEPT);
    let format = Format::from_accept(accept.and_then(|v| v.to_str().ok()));
    let body = web.metrics.scrape(format, gzip).await;
    let mut response = Response::new(Body::from_chunks(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if gzip {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    response
}

/// Whether an Accept-Encoding header allows gzip (a `q=0` weight refuses it).
fn accepts_gzip(value: Option<&HeaderValue>) -> bool {
    let Some(value) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    value.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let coding = parts.next().unwrap_or_default();
        let refused = parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
    })
}

fn status_page<B>(web: &Web, request: &Request<B>) -> Response<Body> {
    let state_filter = query_param(request.uri().query(), "state");
    let page = StatusPage {
        telemetry_path: &web.telemetry_path,
        refresh_seconds: STATUS_REFRESH_SECONDS,
    }
    .render(&web.table, SystemTime::now(), state_filter.as_deref());
    let mut response = Response::new(Body::from(Bytes::from(page)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// The percent-decoded value of `name` in a query string.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query_params(query)?
        .into_iter()
        .find_map(|(key, value)| (key == name).then_some(value))
}

/// Every (name, value) of a query string, percent-decoded; `None` if an escape is malformed.
fn query_params(query: Option<&str>) -> Option<Vec<(String, String)>> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(key)?, percent_decode(value)?))
        })
        .collect()
}

/// Decodes `%XX` escapes and `+` (a space in query strings); `None` for a bad escape or UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        match b {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(rest.get(..2)?).ok()?;
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
                rest = &rest[2..];
            }
            b => bytes.push(b),
        }
    }
    String::from_utf8(bytes).ok()
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Body::from(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_decoded() {
        assert_eq!(
            query_param(Some("state=open"), "state").as_deref(),
            Some("open")
        );
        assert_eq!(
            query_param(Some("a=1&state=cl%6Fsed"), "state").as_deref(),
            Some("closed")
        );
        assert_eq!(
            query_param(Some("target=a+b"), "target").as_deref(),
            Some("a b")
        );
        assert_eq!(query_param(Some("state"), "state").as_deref(), Some(""));
        assert_eq!(query_param(Some("state=%zz"), "state"), None);
        assert_eq!(query_param(Some("other=1"), "state"), None);
        assert_eq!(query_param(None, "state"), None);
    }

    #[test]
    fn accept_encoding_parsing() {
        let cases = [
            (None, false),
            (Some("gzip"), true),
            (Some("deflate, gzip;q=1.0, *;q=0.5"), true),
            (Some("identity"), false),
            (Some("gzip;q=0"), false),
            (Some("GZIP"), true),
            (Some("*"), true),
            (Some("br"), false),
        ];
        for (header, gzip) in cases {
            let value = header.map(HeaderValue::from_static);
            assert_eq!(accepts_gzip(value.as_ref()), gzip, "{header:?}");
        }
    }
}
