//! OpenMetrics and the text format from the real exporter: `/metrics` answers the format the
//! scrape's Accept header asks for, with the same series either way, and `/probe` writes the
//! families it shares with `/metrics` alike; then a real Prometheus (Debian's 2.42) scrapes
//! the exporter once with its own negotiation (OpenMetrics) and once made to ask for the text
//! format, and stores the same series from both. The Prometheus part needs root, iproute2,
//! iptables, nmap, prometheus and promtool (see `common::netns`): without them it prints
//! `SKIPPED: <why>`, and fails under CI=true.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::netns::*;
use common::*;

/// What Prometheus 2.x sends: OpenMetrics first.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The series of an exposition: each sample's name and labels.
fn series(exposition: &str) -> BTreeSet<(String, BTreeMap<String, String>)> {
    parse_samples(exposition)
        .into_iter()
        .map(|s| (s.name, s.labels))
        .collect()
}

fn gunzip(body: &[u8]) -> String {
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(body)
        .read_to_string(&mut text)
        .expect("valid gzip");
    text
}

/// The HELP and TYPE lines of the family `name`.
fn header_of(exposition: &str, name: &str) -> Vec<String> {
    let (help, kind) = (format!("# HELP {name} "), format!("# TYPE {name} "));
    exposition
        .lines()
        .filter(|l| l.starts_with(&help) || l.starts_with(&kind))
        .map(String::from)
        .collect()
}

#[test]
fn metrics_answers_openmetrics_when_asked_with_the_same_series() {
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = open.local_addr().unwrap().port();
    let exporter = start_exporter(&format!(
        r#"
        [probe]
        allow = ["127.0.0.0/8"]
        [[targets]]
        name = "local"
        host = "127.0.0.1"
        ports = [{port}]
        expect = "open"
        labels = {{ note = 'say "hi" \ twice' }}
        "#
    ));
    wait_ready(exporter.addr, Duration::from_secs(10));

    let text = get(exporter.addr, "/metrics");
    assert_eq!(text.headers["content-type"], TEXT);
    let text = text.text();
    assert!(text.contains("\n# TYPE port_state_changes_total counter\n"));
    assert!(!text.contains("# EOF"));
    if have("promtool") {
        promtool_check_metrics(&text).expect("promtool check metrics passes on the text format");
    } else {
        skip("promtool not installed: the text format not checked by promtool");
    }

    let asked = [("Accept", PROMETHEUS_ACCEPT)];
    let om = http(exporter.addr, "GET", "/metrics", &asked);
    assert_eq!(om.status, 200);
    assert_eq!(om.headers["content-type"], OPENMETRICS);
    let om = om.text();
    for line in [
        "# TYPE port_state gauge",
        "# TYPE port_state_changes counter",
        "# TYPE port_exporter_table_renders counter",
        "# TYPE port_exporter_probes counter",
        "# TYPE port_exporter_build info",
        "# TYPE port_exporter_probe_start_lateness_seconds histogram",
        "# TYPE process_cpu_seconds counter",
    ] {
        assert!(om.lines().any(|l| l == line), "missing {line:?}:\n{om}");
    }
    assert!(!om.contains("_total counter"), "{om}");
    assert!(om.contains(r#"note="say \"hi\" \\ twice""#), "{om}");
    assert_eq!(om.lines().last(), Some("# EOF"));
    assert_eq!(om.matches("# EOF").count(), 1);
    assert!(om.ends_with("# EOF\n"));
    // The same series (values move on between scrapes; names and labels do not).
    assert_eq!(series(&om), series(&text));

    // The gzip path: members, the last of them ending with `# EOF`.
    let zipped = http(
        exporter.addr,
        "GET",
        "/metrics",
        &[("Accept", PROMETHEUS_ACCEPT), ("Accept-Encoding", "gzip")],
    );
    assert_eq!(zipped.headers["content-type"], OPENMETRICS);
    assert_eq!(zipped.headers["content-encoding"], "gzip");
    let unzipped = gunzip(&zipped.body);
    assert!(unzipped.ends_with("\n# EOF\n"));
    assert_eq!(series(&unzipped), series(&text));

    // /probe writes the families it shares with /metrics with the same HELP and TYPE.
    let probe = get(exporter.addr, &format!("/probe?target=127.0.0.1:{port}"));
    assert_eq!(probe.status, 200);
    let probe = probe.text();
    for family in [
        "port_state",
        "port_state_reason",
        "port_connect_duration_seconds",
    ] {
        let lines = header_of(&probe, family);
        assert_eq!(lines.len(), 2, "{family}:\n{probe}");
        assert_eq!(lines, header_of(&text, family), "{family}");
    }
    drop(open);
    exporter.stop();
}

/// One scrape as a [`Forwarder`] saw it.
#[derive(Clone, Debug)]
struct Exchange {
    /// The Accept header Prometheus sent.
    accept: String,
    content_type: String,
    content_encoding: String,
}

/// An HTTP forwarder between Prometheus and the exporter inside the lab's namespace, one
/// request per connection: it notes each scrape's Accept header and the answer's
/// Content-Type and Content-Encoding, and sends the exporter `accept` instead of the Accept
/// header when given. (Prometheus 2.42 has no `scrape_protocols` setting to make it ask for
/// the text format; the forwarder asks for it the way later versions do when so configured.)
struct Forwarder {
    exchanges: Arc<Mutex<Vec<Exchange>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Forwarder {
    fn start(ns: &Netns, addr: &'static str, accept: Option<&'static str>) -> Forwarder {
        let exchanges = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (noted, stopped) = (exchanges.clone(), stop.clone());
        // Spawned by a thread inside the namespace, the forwarding thread lives there too:
        // so do the connections it opens to the exporter.
        let thread = ns.enter(move || {
            let listener = TcpListener::bind(addr).expect("bind the forwarder");
            listener.set_nonblocking(true).unwrap();
            std::thread::spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            if let Ok(exchange) = forward(client, accept) {
                                noted.lock().unwrap().push(exchange);
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        });
        Forwarder {
            exchanges,
            stop,
            thread: Some(thread),
        }
    }

    fn exchanges(&self) -> Vec<Exchange> {
        self.exchanges.lock().unwrap().clone()
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Forwards one request (a scrape: a GET, nothing after its head) to the exporter with
/// `Connection: close`, and its answer back.
fn forward(mut client: TcpStream, accept: Option<&str>) -> std::io::Result<Exchange> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = Vec::new();
    let mut buffer = [0; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = client.read(&mut buffer)?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buffer[..read]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.trim_end().split("\r\n");
    let mut request = format!("{}\r\n", lines.next().unwrap_or_default());
    let mut asked = String::new();
    for line in lines {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "accept" => asked = value.trim().to_string(),
            "connection" => {}
            _ => request.push_str(&format!("{line}\r\n")),
        }
    }
    let sent = accept.unwrap_or(&asked);
    request.push_str(&format!("Accept: {sent}\r\nConnection: close\r\n\r\n"));
    let mut upstream = TcpStream::connect(EXPORTER_ADDR)?;
    upstream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    upstream.read_to_end(&mut response)?;
    client.write_all(&response)?;
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(response.len());
    let response_head = String::from_utf8_lossy(&response[..end]).into_owned();
    let header = |name: &str| {
        response_head
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    Ok(Exchange {
        accept: asked,
        content_type: header("content-type"),
        content_encoding: header("content-encoding"),
    })
}

/// The series Prometheus stores for `job`, without the `job` and `instance` labels.
fn stored_series(ns: &Netns, job: &str) -> Option<BTreeSet<BTreeMap<String, String>>> {
    let matcher = url_encode(&format!("{{job=\"{job}\"}}"));
    let answer = prometheus_api(ns, &format!("/api/v1/series?match[]={matcher}"))?;
    if answer["status"] != "success" {
        return None;
    }
    let series = answer["data"].as_array()?;
    Some(
        series
            .iter()
            .filter_map(|labels| labels.as_object())
            .map(|labels| {
                labels
                    .iter()
                    .filter(|(name, _)| *name != "job" && *name != "instance")
                    .map(|(name, value)| (name.clone(), value.as_str().unwrap_or("").into()))
                    .collect()
            })
            .collect(),
    )
}

#[test]
fn prometheus_stores_the_same_series_from_openmetrics_and_the_text_format() {
    if !lab_available() {
        return;
    }
    const OPEN: u16 = 10501;
    const CLOSED: u16 = 10502;
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::create("openmetrics");
    let _open = ns.listen(OPEN);
    let _exporter = start_exporter_in(
        &ns,
        dir.path(),
        &format!(
            r#"
            [defaults]
            interval = "1s"
            timeout = "500ms"
            [[targets]]
            name = "lab"
            host = "dual.lab"
            ports = [{OPEN}, {CLOSED}]
            expect = "open"
            labels = {{ site = "lab" }}
            "#
        ),
        Duration::from_secs(20),
    );
    let openmetrics = Forwarder::start(&ns, "127.0.0.1:9801", None);
    let text = Forwarder::start(&ns, "127.0.0.1:9802", Some("text/plain;version=0.0.4"));
    // Besides the direct job `port_exporter`: one through each forwarder.
    let jobs = "  - job_name: openmetrics\n    static_configs:\n      - targets: ['127.0.0.1:9801']\n  - job_name: text\n    static_configs:\n      - targets: ['127.0.0.1:9802']\n";
    let prometheus = start_prometheus_with(&ns, dir.path(), &[], jobs);

    let targets = wait_for(
        "three healthy targets",
        Duration::from_secs(60),
        &prometheus,
        || {
            let answer = prometheus_api(&ns, "/api/v1/targets")?;
            let active = answer["data"]["activeTargets"].as_array()?.clone();
            (active.len() == 3 && active.iter().all(|t| t["health"] == "up")).then_some(active)
        },
    );
    for target in &targets {
        assert_eq!(target["lastError"], "", "{target}");
    }

    // The same series in all three jobs, once each has scraped a few times.
    let deadline = Instant::now() + Duration::from_secs(60);
    let stored = loop {
        let stored: Vec<_> = ["port_exporter", "openmetrics", "text"]
            .iter()
            .map(|job| stored_series(&ns, job).unwrap_or_default())
            .collect();
        let scraped = openmetrics.exchanges().len() >= 3 && text.exchanges().len() >= 3;
        if scraped && !stored[0].is_empty() && stored.iter().all(|s| s == &stored[0]) {
            break stored.into_iter().next().unwrap();
        }
        if Instant::now() > deadline {
            let only = |a: usize, b: usize| stored[a].difference(&stored[b]).cloned();
            panic!(
                "the jobs store different series:\nonly openmetrics: {:?}\nonly text: {:?}\nonly port_exporter: {:?}\nPrometheus log:\n{}",
                only(1, 2).collect::<Vec<_>>(),
                only(2, 1).collect::<Vec<_>>(),
                only(0, 1).collect::<Vec<_>>(),
                prometheus.log()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let names: BTreeSet<&str> = stored.iter().map(|s| s["__name__"].as_str()).collect();
    for name in [
        "port_state",
        "port_state_reason",
        "port_connect_duration_seconds",
        "port_dns_lookup_duration_seconds",
        "port_state_unexpected",
        "port_state_changes_total",
        "port_state_last_change_timestamp_seconds",
        "port_last_probe_timestamp_seconds",
        "port_target_ports",
        "port_exporter_build_info",
        "port_exporter_table_renders_total",
        "port_exporter_probes_total",
        "port_exporter_probe_start_lateness_seconds_bucket",
        "port_exporter_probe_start_lateness_seconds_count",
        "process_cpu_seconds_total",
        "up",
    ] {
        assert!(names.contains(name), "{name} not stored: {names:?}");
    }
    let open_state = stored
        .iter()
        .find(|s| s["__name__"] == "port_state" && s["state"] == "open" && s["ip"] == "::1");
    assert_eq!(
        open_state.map(|s| (s["site"].as_str(), s["port"].as_str())),
        Some(("lab", OPEN.to_string().as_str()))
    );

    // What each job was answered: OpenMetrics (gzipped) as Prometheus asked, and the text
    // format where the forwarder asked for it instead.
    for exchange in openmetrics.exchanges() {
        assert!(
            exchange
                .accept
                .starts_with("application/openmetrics-text;version=1.0.0"),
            "{exchange:?}"
        );
        assert_eq!(exchange.content_type, OPENMETRICS, "{exchange:?}");
        assert_eq!(exchange.content_encoding, "gzip", "{exchange:?}");
    }
    for exchange in text.exchanges() {
        assert!(
            exchange.accept.starts_with("application/openmetrics-text"),
            "{exchange:?}"
        );
        assert_eq!(exchange.content_type, TEXT, "{exchange:?}");
    }
    let build = prometheus_query(&ns, r#"port_exporter_build_info{job="openmetrics"}"#).unwrap();
    assert_eq!(build.len(), 1);
    assert_eq!(build[0]["value"][1], "1");
    assert_eq!(
        build[0]["metric"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{build:?}"
    );
}
