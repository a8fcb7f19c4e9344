//! The HTTP server: `/metrics`, a landing page, and the health and readiness endpoints.

use std::convert::Infallible;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, TEXT_CONTENT_TYPE};

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish after shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the request handlers need.
pub struct Web {
    pub metrics: Arc<Metrics>,
    pub ready: watch::Receiver<bool>,
    /// Path of the metrics endpoint (`--web.telemetry-path`).
    pub telemetry_path: String,
}

type Body = Full<Bytes>;

/// Serves HTTP on `listener` until `shutdown` is cancelled, then lets open requests finish.
pub async fn serve(listener: TcpListener, web: Arc<Web>, shutdown: CancellationToken) {
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of fds or similar: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let web = web.clone();
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(
                TokioIo::new(stream),
                service_fn(move |request| {
                    let web = web.clone();
                    async move { Ok::<_, Infallible>(handle(&web, request).await) }
                }),
            );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
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

async fn handle<B>(web: &Web, request: Request<B>) -> Response<Body> {
    let path = request.uri().path();
    let known = path == web.telemetry_path || ["/", "/-/healthy", "/-/ready"].contains(&path);
    if !known {
        return text(StatusCode::NOT_FOUND, "404 page not found\n");
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        p if p == web.telemetry_path => metrics(web, &request).await,
        "/" => landing_page(web),
        "/-/healthy" => text(StatusCode::OK, "port_exporter is healthy.\n"),
        _ if *web.ready.borrow() => text(StatusCode::OK, "port_exporter is ready.\n"),
        _ => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "port_exporter is not ready: the first round of probes is still running.\n",
        ),
    }
}

async fn metrics<B>(web: &Web, request: &Request<B>) -> Response<Body> {
    let gzip = accepts_gzip(request.headers().get(header::ACCEPT_ENCODING));
    let registry = web.metrics.clone();
    // Rendering a large table is CPU work: keep it off the threads that serve connections.
    let rendered = tokio::task::spawn_blocking(move || {
        let text = registry.render();
        if gzip { gzip_bytes(&text) } else { text }
    })
    .await;
    let Ok(body) = rendered else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "rendering metrics failed\n",
        );
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(TEXT_CONTENT_TYPE),
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

fn gzip_bytes(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(data.len() / 4), Compression::fast());
    encoder
        .write_all(data)
        .and_then(|()| encoder.finish())
        .expect("writing to a Vec cannot fail")
}

fn landing_page(web: &Web) -> Response<Body> {
    let page = format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>port_exporter</title></head>
<body>
<h1>port_exporter</h1>
<p>Prometheus exporter of TCP port states: open, closed, filtered. Version {version}.</p>
<ul>
<li><a href="{metrics}">Metrics</a></li>
<li><a href="/-/healthy">Health</a></li>
<li><a href="/-/ready">Readiness</a></li>
</ul>
</body>
</html>
"#,
        version = env!("CARGO_PKG_VERSION"),
        metrics = html_escape(&web.telemetry_path),
    );
    let mut response = Response::new(Full::new(Bytes::from(page)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
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
