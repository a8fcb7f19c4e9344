//! The real exporter on 127.0.0.1:0 against real listeners on loopback.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::*;

/// A port on 127.0.0.1 where nothing listens: bound once by the OS, then released.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn open_and_closed_ports_are_told_apart_on_metrics() {
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let open_port = open.local_addr().unwrap().port().to_string();
    let closed_port = closed_port().to_string();
    let exporter = start_exporter(&format!(
        r#"
        [[targets]]
        name = "local"
        host = "127.0.0.1"
        ports = [{open_port}, {closed_port}]
        expect = "open"
        labels = {{ team = "infra" }}
        "#
    ));
    wait_ready(exporter.addr, Duration::from_secs(10));

    let response = get(exporter.addr, "/metrics");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let samples = parse_samples(&response.text());
    let open_labels = [
        ("target", "local"),
        ("port", open_port.as_str()),
        ("ip", "127.0.0.1"),
    ];
    let closed_labels = [
        ("target", "local"),
        ("port", closed_port.as_str()),
        ("ip", "127.0.0.1"),
    ];

    assert_eq!(state_of(&samples, &open_labels), "open");
    assert_eq!(state_of(&samples, &closed_labels), "closed");
    // A state set: one series per state, exactly one of them 1.
    assert_eq!(find(&samples, "port_state", &open_labels).len(), 4);
    let reason = |labels: &[(&str, &str)]| {
        let found = find(&samples, "port_state_reason", labels);
        assert_eq!(found.len(), 1);
        (found[0].labels["reason"].clone(), found[0].value)
    };
    assert_eq!(reason(&open_labels), ("syn-ack".to_string(), 1.0));
    assert_eq!(reason(&closed_labels), ("conn-refused".to_string(), 1.0));
    assert_eq!(value(&samples, "port_state_unexpected", &open_labels), 0.0);
    assert_eq!(
        value(&samples, "port_state_unexpected", &closed_labels),
        1.0
    );
    let latency = value(&samples, "port_connect_duration_seconds", &open_labels);
    assert!(latency > 0.0 && latency < 1.0, "{latency}");
    assert!(value(&samples, "port_last_probe_timestamp_seconds", &open_labels) > 1.7e9);
    assert_eq!(
        value(&samples, "port_state_changes_total", &open_labels),
        0.0
    );
    // The target's labels are on its series; IP literals need no DNS lookup.
    assert!(find(&samples, "port_state", &[("team", "infra")]).len() == 8);
    assert!(find(&samples, "port_dns_lookup_duration_seconds", &[]).is_empty());
    // Self-metrics.
    assert_eq!(
        find(
            &samples,
            "port_exporter_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        )
        .len(),
        1
    );
    assert!(value(&samples, "port_exporter_probes_total", &[("state", "open")]) >= 1.0);
    assert!(
        value(
            &samples,
            "port_exporter_probe_start_lateness_seconds_count",
            &[]
        ) >= 2.0
    );
    assert_eq!(value(&samples, "port_exporter_probes_in_flight", &[]), 0.0);
    assert!(!find(&samples, "process_resident_memory_bytes", &[]).is_empty());

    if have("promtool") {
        promtool_check_metrics(&response.text()).expect("promtool check metrics passes");
    } else {
        skip("promtool not installed: exposition not checked by promtool");
    }
    drop(open);
    exporter.stop();
}

#[test]
fn a_name_from_the_hosts_file_is_resolved_and_probed() {
    // localhost resolves through /etc/hosts: no DNS traffic leaves the machine.
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = open.local_addr().unwrap().port().to_string();
    let exporter = start_exporter(&format!(
        "[[targets]]\nhost = \"localhost\"\nports = [{port}]\nexpect = \"closed\""
    ));
    wait_ready(exporter.addr, Duration::from_secs(10));
    let samples = parse_samples(&get(exporter.addr, "/metrics").text());
    let labels = [
        ("target", "localhost"),
        ("host", "localhost"),
        ("port", port.as_str()),
        ("ip", "127.0.0.1"),
    ];
    assert_eq!(state_of(&samples, &labels), "open");
    assert_eq!(value(&samples, "port_state_unexpected", &labels), 1.0);
    let lookup = value(
        &samples,
        "port_dns_lookup_duration_seconds",
        &[("target", "localhost")],
    );
    assert!(lookup > 0.0 && lookup < 5.0, "{lookup}");
    exporter.stop();
}

#[test]
fn a_state_change_is_counted_and_timestamped() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let exporter = start_exporter(&format!(
        "[[targets]]\nname = \"flip\"\nhost = \"127.0.0.1\"\nports = [{port}]\ninterval = \"1s\"\ntimeout = \"500ms\""
    ));
    wait_ready(exporter.addr, Duration::from_secs(10));
    let labels = [("target", "flip"), ("port", port.as_str())];
    let samples = parse_samples(&get(exporter.addr, "/metrics").text());
    assert_eq!(state_of(&samples, &labels), "open");
    let first_change = value(
        &samples,
        "port_state_last_change_timestamp_seconds",
        &labels,
    );
    drop(listener);
    // Within a few intervals the closed port is seen.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let samples = loop {
        let samples = parse_samples(&get(exporter.addr, "/metrics").text());
        if state_of(&samples, &labels) == "closed" {
            break samples;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "port never seen closed"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(value(&samples, "port_state_changes_total", &labels), 1.0);
    assert!(
        value(
            &samples,
            "port_state_last_change_timestamp_seconds",
            &labels
        ) > first_change
    );
    // No answer time is missing for a refused connection: the RST is an answer.
    assert!(value(&samples, "port_connect_duration_seconds", &labels) >= 0.0);
    exporter.stop();
}

#[test]
fn http_endpoints_behave_like_a_prometheus_exporter() {
    let exporter = start_exporter(&format!(
        "[[targets]]\nhost = \"127.0.0.1\"\nports = [{}]",
        closed_port()
    ));
    wait_ready(exporter.addr, Duration::from_secs(10));
    assert_eq!(get(exporter.addr, "/-/healthy").status, 200);
    let landing = get(exporter.addr, "/");
    assert_eq!(landing.status, 200);
    assert!(landing.headers["content-type"].starts_with("text/html"));
    assert!(landing.text().contains("href=\"/metrics\""));
    assert_eq!(get(exporter.addr, "/nope").status, 404);
    let post = http(
        exporter.addr,
        "POST",
        "/metrics",
        &[("Content-Length", "0")],
    );
    assert_eq!(post.status, 405);
    assert_eq!(post.headers["allow"], "GET, HEAD");

    let zipped = http(
        exporter.addr,
        "GET",
        "/metrics",
        &[("Accept-Encoding", "gzip")],
    );
    assert_eq!(zipped.headers["content-encoding"], "gzip");
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(&zipped.body[..]),
        &mut text,
    )
    .expect("valid gzip");
    assert!(text.contains("# TYPE port_state gauge"));
    let plain = get(exporter.addr, "/metrics");
    assert!(!plain.headers.contains_key("content-encoding"));
    exporter.stop();
}

#[test]
fn ready_waits_for_the_first_round_and_silence_is_filtered() {
    let silent = silent_port();
    let port = silent.port.to_string();
    let exporter = start_exporter(&format!(
        "[[targets]]\nname = \"slow\"\nhost = \"127.0.0.1\"\nports = [{port}]\ntimeout = \"700ms\"\nretries = 1"
    ));
    // Two attempts of 0.7 s each: not ready before 1.4 s.
    let started = std::time::Instant::now();
    let early = get(exporter.addr, "/-/ready");
    assert_eq!(early.status, 503, "ready before the first round finished");
    assert!(early.text().contains("not ready"));
    assert_eq!(get(exporter.addr, "/-/healthy").status, 200);
    wait_ready(exporter.addr, Duration::from_secs(10));
    assert!(
        started.elapsed() >= Duration::from_millis(1300),
        "{:?}",
        started.elapsed()
    );
    let samples = parse_samples(&get(exporter.addr, "/metrics").text());
    let labels = [("target", "slow"), ("port", port.as_str())];
    assert_eq!(state_of(&samples, &labels), "filtered");
    assert_eq!(
        find(&samples, "port_state_reason", &labels)[0].labels["reason"],
        "no-response"
    );
    // Nothing answered, so there is no connect duration.
    assert!(find(&samples, "port_connect_duration_seconds", &labels).is_empty());
    exporter.stop();
}
