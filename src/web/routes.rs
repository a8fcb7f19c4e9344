//! The endpoints: one table of (method, path) to endpoint, and the handler of each.
//!
//! Before routing, every request passes the web config's basic auth (401; 429 when the
//! password check is busy), then the `--web.max-requests` cap (503 beyond it). Auth comes
//! first, so that wrong passwords, which wait for bcrypt, never hold a request slot, and a
//! cached right password is let in at once. A path in no row is a 404; a path whose rows name
//! other methods is a 405 with an `Allow` header listing them. Every response gets the
//! security headers (`security::headers`).

use std::time::SystemTime;

use bytes::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::probe::{self, ProbeRequest, Refusal};
use super::query::{query_param, query_params};
use super::security::{Verdict, add_security_headers, add_status_page_headers};
use super::status::StatusPage;
use super::{Body, Web};
use crate::exposition::{Format, TEXT_CONTENT_TYPE};
use crate::probe::Probe;
use crate::web::connection::Superseded;

/// Seconds between automatic reloads of the status page.
const STATUS_REFRESH_SECONDS: u32 = 15;

/// The `Retry-After` of a 429 (the password check was busy), in seconds.
const AUTH_BUSY_RETRY_AFTER_SECONDS: u32 = 1;

/// What answers a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Metrics,
    Status,
    Probe,
    Config,
    Reload,
    Healthy,
    Ready,
}

/// A path of the routing table.
enum Path {
    /// The metrics endpoint's, a flag (`--web.telemetry-path`); it wins over a fixed path.
    Telemetry,
    Fixed(&'static str),
}

/// Every endpoint, with the methods it answers: HEAD where GET is (hyper leaves out the body).
static ROUTES: [(Method, Path, Endpoint); 13] = [
    (Method::GET, Path::Telemetry, Endpoint::Metrics),
    (Method::HEAD, Path::Telemetry, Endpoint::Metrics),
    (Method::GET, Path::Fixed("/"), Endpoint::Status),
    (Method::HEAD, Path::Fixed("/"), Endpoint::Status),
    (Method::GET, Path::Fixed("/probe"), Endpoint::Probe),
    (Method::HEAD, Path::Fixed("/probe"), Endpoint::Probe),
    (Method::GET, Path::Fixed("/config"), Endpoint::Config),
    (Method::HEAD, Path::Fixed("/config"), Endpoint::Config),
    (Method::POST, Path::Fixed("/-/reload"), Endpoint::Reload),
    (Method::GET, Path::Fixed("/-/healthy"), Endpoint::Healthy),
    (Method::HEAD, Path::Fixed("/-/healthy"), Endpoint::Healthy),
    (Method::GET, Path::Fixed("/-/ready"), Endpoint::Ready),
    (Method::HEAD, Path::Fixed("/-/ready"), Endpoint::Ready),
];

/// Why a request has no endpoint.
#[derive(Debug, PartialEq, Eq)]
enum Unrouted {
    /// No row has the path: 404.
    NotFound,
    /// The path's rows name other methods, listed for the `Allow` header: 405.
    MethodNotAllowed(String),
}

/// The endpoint of `method` and `path`, by [`ROUTES`].
fn route(telemetry_path: &str, method: &Method, path: &str) -> Result<Endpoint, Unrouted> {
    let telemetry = path == telemetry_path;
    let rows = ROUTES.iter().filter(|(_, p, _)| match p {
        Path::Telemetry => telemetry,
        Path::Fixed(fixed) => !telemetry && *fixed == path,
    });
    let mut allowed = Vec::new();
    for (row_method, _, endpoint) in rows {
        if row_method == method {
            return Ok(*endpoint);
        }
        allowed.push(row_method.as_str());
    }
    if allowed.is_empty() {
        Err(Unrouted::NotFound)
    } else {
        Err(Unrouted::MethodNotAllowed(allowed.join(", ")))
    }
}

/// Answers one request, with the security headers.
pub(super) async fn handle<P: Probe + Clone, B>(
    web: &Web<P>,
    request: Request<B>,
) -> Response<Body> {
    let mut response = answer(web, request).await;
    add_security_headers(response.headers_mut());
    response
}

/// Answers one request: auth, the request cap, then the endpoint.
async fn answer<P: Probe + Clone, B>(web: &Web<P>, request: Request<B>) -> Response<Body> {
    let verdict = match &web.web_config {
        Some(config) => {
            config
                .authorize(request.headers().get(header::AUTHORIZATION))
                .await
        }
        None => Verdict::Passed,
    };
    match verdict {
        Verdict::Passed => {}
        Verdict::Refused => {
            let mut response = text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"port_exporter\""),
            );
            return response;
        }
        Verdict::Busy => {
            let mut response = text(
                StatusCode::TOO_MANY_REQUESTS,
                "too many password checks at once; retry later\n",
            );
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(AUTH_BUSY_RETRY_AFTER_SECONDS),
            );
            return response;
        }
    }
    // Over the cap, answer at once instead of queueing: a scraper retries, a pile-up does not.
    // The slot is the response's until it is sent: a response still being sent (to a client
    // that reads slowly) is a request in flight too.
    let slot = match &web.request_slots {
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
    let endpoint = match route(&web.telemetry_path, request.method(), request.uri().path()) {
        Ok(endpoint) => endpoint,
        Err(Unrouted::NotFound) => return text(StatusCode::NOT_FOUND, "404 page not found\n"),
        Err(Unrouted::MethodNotAllowed(allowed)) => {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            // Method names are tokens, always a valid header value.
            if let Ok(allowed) = HeaderValue::try_from(allowed) {
                response.headers_mut().insert(header::ALLOW, allowed);
            }
            return response;
        }
    };
    let response = match endpoint {
        Endpoint::Metrics => metrics(web, &request).await,
        Endpoint::Status => status_page(web, &request),
        Endpoint::Probe => probe(web, &request).await,
        Endpoint::Config => text(StatusCode::OK, web.reloader.current().source.clone()),
        Endpoint::Reload => match web.reloader.reload() {
            Ok(()) => text(StatusCode::OK, "config reloaded\n"),
            Err(error) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("config reload failed, the running config stays: {error}\n"),
            ),
        },
        Endpoint::Healthy => text(StatusCode::OK, "port_exporter is healthy.\n"),
        Endpoint::Ready if *web.ready.borrow() => text(StatusCode::OK, "port_exporter is ready.\n"),
        Endpoint::Ready => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "port_exporter is not ready: the first round of probes is still running.\n",
        ),
    };
    match slot {
        Some(slot) => response.map(|body| body.holding(slot)),
        None => response,
    }
}

/// `/probe?target=host:port`: 400 for a bad request, 403 outside the allow list, 503 when
/// `/probe` has no room for it within its budget.
async fn probe<P: Probe + Clone, B>(web: &Web<P>, request: &Request<B>) -> Response<Body> {
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
        .and_then(probe::scrape_timeout);
    let config = web.reloader.current();
    let debug = probe_request.debug;
    let report = match probe::probe(
        &web.probe,
        &web.on_demand,
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
        Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    text(status, format!("{refusal}\n"))
}

async fn metrics<P, B>(web: &Web<P>, request: &Request<B>) -> Response<Body> {
    let gzip = accepts_gzip(request.headers().get(header::ACCEPT_ENCODING));
    let accept = request.headers().get(header::ACCEPT);
    let format = Format::from_accept(accept.and_then(|v| v.to_str().ok()));
    let scrape = web.metrics.scrape(format, gzip).await;
    let mut response = Response::new(Body::from_chunks(scrape.body).holding(scrape.lease));
    response
        .extensions_mut()
        .insert(Superseded(scrape.superseded));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if gzip {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    // The body depends on both: a cache must not serve one scraper's answer to another.
    headers.insert(
        header::VARY,
        HeaderValue::from_static("Accept, Accept-Encoding"),
    );
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

/// The status page; a malformed query string shows every row, as no `?state=` does.
fn status_page<P, B>(web: &Web<P>, request: &Request<B>) -> Response<Body> {
    let state_filter = query_param(request.uri().query(), "state");
    let page = StatusPage {
        telemetry_path: &web.telemetry_path,
        refresh_seconds: STATUS_REFRESH_SECONDS,
    }
    .render(&web.table, SystemTime::now(), state_filter.as_deref());
    let mut response = Response::new(Body::from(Bytes::from(page)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    add_status_page_headers(headers);
    response
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
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::sync::watch;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use tokio::sync::Semaphore;

    use super::*;
    use crate::config::Config;
    use crate::domain::{Attempts, Reason, State};
    use crate::exposition::Metrics;
    use crate::probe::Outcome;
    use crate::reload::{ConfigSource, Reloader};
    use crate::schedule::resolve::Resolver;
    use crate::schedule::{Scheduler, SchedulerParts};
    use crate::state::StateTable;
    use crate::telemetry::Telemetry;
    use crate::web::security::WebConfig;

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

    #[test]
    fn the_table_routes_by_path_then_method() {
        let not_allowed = |allow: &str| Err(Unrouted::MethodNotAllowed(allow.to_string()));
        let cases = [
            ("/metrics", Method::GET, Ok(Endpoint::Metrics)),
            ("/metrics", Method::HEAD, Ok(Endpoint::Metrics)),
            ("/metrics", Method::POST, not_allowed("GET, HEAD")),
            ("/", Method::GET, Ok(Endpoint::Status)),
            ("/probe", Method::GET, Ok(Endpoint::Probe)),
            ("/config", Method::HEAD, Ok(Endpoint::Config)),
            ("/-/reload", Method::POST, Ok(Endpoint::Reload)),
            ("/-/reload", Method::GET, not_allowed("POST")),
            ("/-/healthy", Method::DELETE, not_allowed("GET, HEAD")),
            ("/-/ready", Method::GET, Ok(Endpoint::Ready)),
            ("/nope", Method::GET, Err(Unrouted::NotFound)),
            ("*", Method::OPTIONS, Err(Unrouted::NotFound)),
            ("/metrics/", Method::GET, Err(Unrouted::NotFound)),
        ];
        for (path, method, expected) in cases {
            assert_eq!(
                route("/metrics", &method, path),
                expected,
                "{method} {path}"
            );
        }
        // A telemetry path elsewhere frees /metrics, and wins over a fixed path.
        assert_eq!(
            route("/custom", &Method::GET, "/metrics"),
            Err(Unrouted::NotFound)
        );
        assert_eq!(
            route("/custom", &Method::GET, "/custom"),
            Ok(Endpoint::Metrics)
        );
        assert_eq!(route("/", &Method::GET, "/"), Ok(Endpoint::Metrics));
    }

    /// A probe that answers `state` at once, without a socket, and logs what it probed.
    #[derive(Clone)]
    struct FakeProbe {
        state: State,
        probed: Arc<Mutex<Vec<SocketAddr>>>,
    }

    impl Probe for FakeProbe {
        async fn probe(&self, addr: SocketAddr, _attempts: Attempts) -> Outcome {
            self.probed.lock().unwrap().push(addr);
            let (reason, connect) = match self.state {
                State::Open => (Reason::SynAck, Some(Duration::from_millis(3))),
                State::Closed => (Reason::ConnRefused, Some(Duration::from_millis(1))),
                _ => (Reason::NoResponse, None),
            };
            Outcome {
                state: self.state,
                reason,
                connect,
                at: SystemTime::now(),
                service: None,
            }
        }
    }

    /// The handlers' parts around `probe`, for a config without targets.
    fn web_with(probe: FakeProbe, config: &str) -> Web<FakeProbe> {
        let config = Config::parse(config, "test").unwrap();
        let table = Arc::new(StateTable::new());
        let telemetry = Arc::new(Telemetry::new().unwrap());
        let resolver = Arc::new(Resolver::new(
            telemetry.probes.dns_lookups_in_flight.clone(),
        ));
        let on_demand = probe::OnDemand::new(telemetry.probes.dns_lookups_in_flight.clone());
        let (ready_tx, ready) = watch::channel(false);
        let parts = SchedulerParts {
            probe: probe.clone(),
            udp: crate::probe::UdpProbe::default(),
            table: table.clone(),
            metrics: telemetry.probes.clone(),
            max_in_flight: 1,
            max_per_second: 0,
            resolver,
        };
        let scheduler = Scheduler::start(
            parts,
            &config,
            ready_tx,
            &TaskTracker::new(),
            &CancellationToken::new(),
        );
        let reloader = Reloader::new(
            ConfigSource::default(),
            config,
            scheduler,
            telemetry.reloads.clone(),
        );
        Web {
            metrics: Arc::new(Metrics::new(table.clone(), Default::default(), telemetry)),
            table,
            reloader: Arc::new(reloader),
            probe,
            on_demand,
            web_config: None,
            ready,
            telemetry_path: "/metrics".to_string(),
            request_slots: None,
            max_connections: 1,
            timeouts: crate::web::Timeouts::default(),
        }
    }

    fn fake(state: State) -> FakeProbe {
        FakeProbe {
            state,
            probed: Arc::default(),
        }
    }

    /// Status, body as text, and content type of `GET uri`.
    async fn get(web: &Web<FakeProbe>, uri: &str) -> (StatusCode, String, String) {
        let request = Request::get(uri).body(()).unwrap();
        let response = handle(web, request).await;
        let content_type = response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        let status = response.status();
        let body: Vec<u8> = response.into_body().chunks.into_iter().flatten().collect();
        (status, String::from_utf8(body).unwrap(), content_type)
    }

    const ALLOW_LOOPBACK: &str = "[probe]\nallow = [\"127.0.0.0/8\"]\n";

    #[tokio::test]
    async fn probe_answers_the_fake_probes_outcome_as_metrics() {
        let prober = fake(State::Open);
        let web = web_with(prober.clone(), ALLOW_LOOPBACK);
        let (status, body, content_type) = get(&web, "/probe?target=127.0.0.1:9").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(content_type, TEXT_CONTENT_TYPE);
        let series = "{host=\"127.0.0.1\",port=\"9\",protocol=\"tcp\",ip=\"127.0.0.1\"";
        assert!(
            body.contains(&format!("port_state{series},state=\"open\"}} 1\n")),
            "{body}"
        );
        assert!(
            body.contains(&format!(
                "port_state_reason{series},reason=\"syn-ack\"}} 1\n"
            )),
            "{body}"
        );
        assert!(
            body.contains(&format!("port_connect_duration_seconds{series}}} 0.003\n")),
            "{body}"
        );
        assert!(body.contains("\nprobe_success 1\n"), "{body}");
        let probed = prober.probed.lock().unwrap().clone();
        assert_eq!(probed, ["127.0.0.1:9".parse().unwrap()]);
    }

    #[tokio::test]
    async fn probe_success_follows_the_expectation() {
        let web = web_with(fake(State::Closed), ALLOW_LOOPBACK);
        let (_, body, _) = get(&web, "/probe?target=127.0.0.1:9").await;
        assert!(body.contains("\nprobe_success 0\n"), "{body}");
        let (_, body, _) = get(&web, "/probe?target=127.0.0.1:9&expect=closed").await;
        assert!(body.contains("\nprobe_success 1\n"), "{body}");
        let (status, body, content_type) =
            get(&web, "/probe?target=127.0.0.1:9&expect=closed&debug=true").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "text/plain; charset=utf-8");
        assert!(body.starts_with("Logs for the probe:\n"), "{body}");
        assert!(
            body.contains("127.0.0.1 port 9: closed (conn-refused)"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn refused_probes_never_reach_the_probe() {
        let prober = fake(State::Open);
        let web = web_with(prober.clone(), ALLOW_LOOPBACK);
        let cases = [
            ("/probe?target=10.0.0.1:9", StatusCode::FORBIDDEN),
            ("/probe?target=127.0.0.1:0", StatusCode::BAD_REQUEST),
            ("/probe?target=127.0.0.1:9%", StatusCode::BAD_REQUEST),
            ("/probe?target=127.0.0.1%FF:9", StatusCode::BAD_REQUEST),
            ("/probe", StatusCode::BAD_REQUEST),
        ];
        for (uri, expected) in cases {
            let (status, body, _) = get(&web, uri).await;
            assert_eq!(status, expected, "{uri}: {body}");
            assert!(body.len() > 10 && body.ends_with('\n'), "{uri}: {body:?}");
        }
        let (_, body, _) = get(&web, "/probe?target=127.0.0.1:9%").await;
        assert_eq!(body, "malformed query string\n");
        // Without an allow list, /probe is off.
        let off = web_with(prober.clone(), "");
        let (status, _, _) = get(&off, "/probe?target=127.0.0.1:9").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(prober.probed.lock().unwrap().is_empty());
    }

    /// `Basic` credentials of `user:password`.
    fn basic(user: &str, password: &str) -> HeaderValue {
        use base64::Engine as _;
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::try_from(format!("Basic {encoded}")).unwrap()
    }

    async fn get_with(
        web: &Web<FakeProbe>,
        uri: &str,
        auth: Option<HeaderValue>,
    ) -> Response<Body> {
        let mut request = Request::get(uri);
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth);
        }
        handle(web, request.body(()).unwrap()).await
    }

    #[tokio::test]
    async fn auth_comes_before_the_request_slot_and_a_busy_check_is_429() {
        let mut web = web_with(fake(State::Open), "");
        let hash = bcrypt::hash("wonderland", 4).unwrap();
        let users = format!("basic_auth_users:\n  alice: {hash}\n");
        web.web_config =
            Some(WebConfig::parse(&users, "web.yml", std::path::Path::new(".")).unwrap());
        let slots = Arc::new(Semaphore::new(1));
        web.request_slots = Some(slots.clone());
        let right = || Some(basic("alice", "wonderland"));
        assert_eq!(
            get_with(&web, "/-/healthy", right()).await.status(),
            StatusCode::OK
        );

        // Every slot taken: failures still get 401, without a slot; the right password gets
        // past auth, then finds no slot.
        let all_slots = slots.clone().try_acquire_owned().unwrap();
        let response = get_with(&web, "/-/healthy", Some(basic("alice", "wrong"))).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Basic realm=\"port_exporter\""
        );
        assert_eq!(
            get_with(&web, "/-/healthy", None).await.status(),
            StatusCode::UNAUTHORIZED
        );
        let response = get_with(&web, "/-/healthy", right()).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        drop(all_slots);

        // bcrypt busy: an uncached check is refused at once with 429 and Retry-After; the
        // cached right password passes.
        let config = web.web_config.as_ref().unwrap();
        let busy = config.occupy_bcrypt().unwrap();
        let response = get_with(&web, "/-/healthy", Some(basic("alice", "wrong"))).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(
            response.headers()[header::X_CONTENT_TYPE_OPTIONS],
            "nosniff"
        );
        assert!(!response.headers().contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(
            get_with(&web, "/-/healthy", right()).await.status(),
            StatusCode::OK
        );
        drop(busy);
        let response = get_with(&web, "/-/healthy", Some(basic("alice", "wrong"))).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }

    /// `'sha256-<base64>'` of `text`.
    fn csp_hash(text: &str) -> String {
        use base64::Engine as _;
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(text.as_bytes());
        format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest)
        )
    }

    /// The text between `<tag>` and `</tag>` in `page`, which has exactly one.
    fn inline<'a>(page: &'a str, tag: &str) -> &'a str {
        let open = format!("<{tag}>");
        assert_eq!(page.matches(&open).count(), 1, "{page}");
        let start = page.find(&open).unwrap() + open.len();
        let end = start + page[start..].find(&format!("</{tag}>")).unwrap();
        &page[start..end]
    }

    #[tokio::test]
    async fn every_response_is_nosniff_and_the_status_page_has_a_csp_with_its_inline_hashes() {
        let web = web_with(fake(State::Open), "");
        let response = get_with(&web, "/", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers().clone();
        let body: Vec<u8> = response.into_body().chunks.into_iter().flatten().collect();
        let page = String::from_utf8(body).unwrap();
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
        let style = format!("style-src {}", csp_hash(inline(&page, "style")));
        let script = format!("script-src {}", csp_hash(inline(&page, "script")));
        for expected in [
            "default-src 'none'",
            style.as_str(),
            script.as_str(),
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ] {
            assert!(directives.contains(&expected), "{expected} in {csp}");
        }
        assert_eq!(directives.len(), 6, "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");

        let post = handle(&web, Request::post("/metrics").body(()).unwrap()).await;
        for (uri, response) in [
            ("/metrics", get_with(&web, "/metrics", None).await),
            ("/-/healthy", get_with(&web, "/-/healthy", None).await),
            ("/config", get_with(&web, "/config", None).await),
            ("/probe", get_with(&web, "/probe", None).await),
            ("/nope", get_with(&web, "/nope", None).await),
            ("POST /metrics", post),
        ] {
            let headers = response.headers();
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{uri}");
            assert!(
                !headers.contains_key(header::CONTENT_SECURITY_POLICY),
                "{uri}"
            );
        }
    }

    #[tokio::test]
    async fn unrouted_requests_get_404_and_405_with_allow() {
        let web = web_with(fake(State::Open), "");
        let (status, body, _) = get(&web, "/nope").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::NOT_FOUND, "404 page not found\n")
        );
        let request = Request::post("/metrics").body(()).unwrap();
        let response = handle(&web, request).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "GET, HEAD");
        let (status, _, _) = get(&web, "/-/reload").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        // No targets: ready at once.
        let (status, _, _) = get(&web, "/-/ready").await;
        assert_eq!(status, StatusCode::OK);
    }
}
