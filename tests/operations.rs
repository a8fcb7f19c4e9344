//! Running it like a Prometheus exporter: hot reload that diffs instead of restarting, and
//! `/probe` behind its allow list. The real server on 127.0.0.1:0 against real listeners.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use port_exporter::Options;

fn listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    (listener, port)
}

fn closed_port() -> String {
    listener().1
}

fn scrape(exporter: &Exporter) -> Vec<Sample> {
    parse_samples(&get(exporter.addr, "/metrics").text())
}

/// Polls the scrape until `check` holds; panics after `limit`.
fn wait_until(exporter: &Exporter, what: &str, limit: Duration, check: impl Fn(&[Sample]) -> bool) {
    let deadline = Instant::now() + limit;
    while !check(&scrape(exporter)) {
        assert!(
            Instant::now() < deadline,
            "{what}: not seen within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn post(exporter: &Exporter, path: &str) -> Response {
    http(exporter.addr, "POST", path, &[("Content-Length", "0")])
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn reload_diffs_the_running_config_and_a_bad_file_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ports.toml");
    let (flipping, flip_port) = listener();
    let stable_closed = closed_port();
    let (_grow_open, grow_port) = listener();
    let (_new_port_listener, new_port) = listener();
    let gone_port = closed_port();
    let first = format!(
        r#"
        [defaults]
        timeout = "400ms"
        retries = 1
        [[targets]]
        name = "stable"
        host = "127.0.0.1"
        ports = [{flip_port}, {stable_closed}]
        interval = "1s"
        [[targets]]
        name = "grow"
        host = "127.0.0.1"
        ports = [{grow_port}]
        interval = "1h"
        [[targets]]
        name = "gone"
        host = "127.0.0.1"
        ports = [{gone_port}]
        "#
    );
    write(&path, &first);
    let options = Options {
        config_file: Some(path.clone()),
        ..Options::default()
    };
    let exporter = start_exporter_with(&first, options);
    wait_ready(exporter.addr, Duration::from_secs(10));
    let flip = [("target", "stable"), ("port", flip_port.as_str())];
    assert_eq!(state_of(&scrape(&exporter), &flip), "open");
    drop(flipping);
    wait_until(
        &exporter,
        "the flipped port closed",
        Duration::from_secs(10),
        |s| state_of(s, &flip) == "closed",
    );
    let before = scrape(&exporter);
    let changed_at = value(&before, "port_state_last_change_timestamp_seconds", &flip);
    assert_eq!(value(&before, "port_state_changes_total", &flip), 1.0);
    let loaded_at = value(
        &before,
        "port_exporter_config_last_reload_success_timestamp_seconds",
        &[],
    );
    let grow_old = [("target", "grow"), ("port", grow_port.as_str())];
    let grow_probed_at = value(&before, "port_last_probe_timestamp_seconds", &grow_old);
    assert_eq!(get(exporter.addr, "/config").text(), first);

    // The new file: "stable" unchanged, "grow" gains a port, "gone" goes, "added" comes.
    let second = first
        .replace(
            &format!("ports = [{grow_port}]"),
            &format!("ports = [{grow_port}, {new_port}]"),
        )
        .replace(
            &format!("name = \"gone\"\n        host = \"127.0.0.1\"\n        ports = [{gone_port}]"),
            &format!("name = \"added\"\n        host = \"127.0.0.1\"\n        ports = [{gone_port}]\n        interval = \"1h\""),
        );
    assert_ne!(first, second);
    write(&path, &second);
    let reloaded_at = Instant::now();
    let response = post(&exporter, "/-/reload");
    assert_eq!(response.status, 200, "{}", response.text());
    // New ports and targets are probed at once, not after their hour-long interval.
    wait_until(
        &exporter,
        "the new port and target probed",
        Duration::from_secs(5),
        |s| {
            !find(
                s,
                "port_state",
                &[("target", "grow"), ("port", new_port.as_str())],
            )
            .is_empty()
                && !find(s, "port_state", &[("target", "added")]).is_empty()
        },
    );
    assert!(reloaded_at.elapsed() < Duration::from_secs(5));
    let after = scrape(&exporter);
    assert_eq!(
        state_of(&after, &[("target", "grow"), ("port", new_port.as_str())]),
        "open"
    );
    // Removed: gone from /metrics at once.
    assert!(find(&after, "port_state", &[("target", "gone")]).is_empty());
    // The changed target's old port keeps its schedule: no probe at reload (a restart would).
    assert_eq!(
        value(&after, "port_last_probe_timestamp_seconds", &grow_old),
        grow_probed_at
    );
    // Unchanged rows keep their state history.
    assert_eq!(value(&after, "port_state_changes_total", &flip), 1.0);
    assert_eq!(
        value(&after, "port_state_last_change_timestamp_seconds", &flip),
        changed_at
    );
    assert_eq!(
        value(&after, "port_exporter_config_last_reload_successful", &[]),
        1.0
    );
    assert!(
        value(
            &after,
            "port_exporter_config_last_reload_success_timestamp_seconds",
            &[]
        ) >= loaded_at
    );
    assert_eq!(get(exporter.addr, "/config").text(), second);

    // A bad file: 500 with the error, the running config stays, the failure is visible.
    write(&path, &second.replace("retries = 1", "retries = -1"));
    let response = post(&exporter, "/-/reload");
    assert_eq!(response.status, 500);
    let message = response.text();
    assert!(
        message.contains(&format!("{}:4:", path.display())),
        "{message}"
    );
    assert!(message.contains("expected u32"), "{message}");
    let failed = scrape(&exporter);
    assert_eq!(
        value(&failed, "port_exporter_config_last_reload_successful", &[]),
        0.0
    );
    assert_eq!(get(exporter.addr, "/config").text(), second);
    assert!(!find(&failed, "port_state", &[("target", "added")]).is_empty());
    assert_eq!(
        state_of(
            &failed,
            &[("target", "stable"), ("port", stable_closed.as_str())]
        ),
        "closed"
    );

    // Only POST reloads.
    let response = get(exporter.addr, "/-/reload");
    assert_eq!(response.status, 405);
    assert_eq!(response.headers["allow"], "POST");
    exporter.stop();
}

/// Config text with a `/probe` allow list.
fn probe_config(allow: &str) -> String {
    format!("[defaults]\ntimeout = \"500ms\"\nretries = 1\n[probe]\nallow = [{allow}]\n")
}

#[test]
fn probe_answers_for_allowed_targets_like_blackbox() {
    let (_open, open_port) = listener();
    let closed = closed_port();
    let exporter = start_exporter(&probe_config("\"127.0.0.0/8\""));
    wait_ready(exporter.addr, Duration::from_secs(10));

    let response = get(
        exporter.addr,
        &format!("/probe?target=127.0.0.1:{open_port}"),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let samples = parse_samples(&response.text());
    let labels = [
        ("host", "127.0.0.1"),
        ("port", open_port.as_str()),
        ("ip", "127.0.0.1"),
    ];
    assert_eq!(state_of(&samples, &labels), "open");
    assert_eq!(value(&samples, "probe_success", &[]), 1.0);
    assert!(value(&samples, "probe_duration_seconds", &[]) > 0.0);
    assert!(value(&samples, "port_connect_duration_seconds", &labels) > 0.0);
    if have("promtool") {
        promtool_check_metrics(&response.text()).expect("promtool check metrics");
    } else {
        skip("promtool not installed");
    }
    // Nothing of /probe lands in the scheduled state table.
    assert!(find(&scrape(&exporter), "port_state", &[]).is_empty());

    let closed_probe = |expect: &str| {
        let path = format!("/probe?target=127.0.0.1:{closed}{expect}");
        parse_samples(&get(exporter.addr, &path).text())
    };
    let samples = closed_probe("");
    assert_eq!(state_of(&samples, &[("port", closed.as_str())]), "closed");
    assert_eq!(value(&samples, "probe_success", &[]), 0.0);
    assert_eq!(
        value(&closed_probe("&expect=closed"), "probe_success", &[]),
        1.0
    );
    assert_eq!(
        value(&closed_probe("&expect=not_open"), "probe_success", &[]),
        1.0
    );

    let debug = get(
        exporter.addr,
        &format!("/probe?target=127.0.0.1:{open_port}&debug=true"),
    );
    assert_eq!(debug.status, 200);
    let text = debug.text();
    assert!(
        text.contains("Logs for the probe") && text.contains("open (syn-ack)"),
        "{text}"
    );
    assert!(text.contains("probe_success 1"), "{text}");
    exporter.stop();
}

#[test]
fn probe_honours_the_scrape_timeout_header() {
    // A listener with a full accept queue: its SYNs are dropped, so the probe waits its budget.
    let silent = silent_port();
    let port = silent.port.to_string();
    let exporter = start_exporter(&probe_config("\"127.0.0.1\""));
    wait_ready(exporter.addr, Duration::from_secs(10));
    let started = Instant::now();
    let response = http(
        exporter.addr,
        "GET",
        &format!("/probe?target=127.0.0.1:{port}"),
        &[("X-Prometheus-Scrape-Timeout-Seconds", "1.5")],
    );
    let took = started.elapsed();
    // 1.5 s less the 0.5 s offset: two attempts of 0.5 s, the config's own timeout.
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    let samples = parse_samples(&response.text());
    assert_eq!(state_of(&samples, &[("port", port.as_str())]), "filtered");
    assert_eq!(value(&samples, "probe_success", &[]), 0.0);

    // A shorter scrape timeout shortens the attempts.
    let started = Instant::now();
    get_with_timeout(&exporter, &port, "0.9");
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    drop(silent);
    exporter.stop();
}

fn get_with_timeout(exporter: &Exporter, port: &str, seconds: &str) -> Response {
    http(
        exporter.addr,
        "GET",
        &format!("/probe?target=127.0.0.1:{port}"),
        &[("X-Prometheus-Scrape-Timeout-Seconds", seconds)],
    )
}

#[test]
fn probe_refuses_what_the_allow_list_does_not_name_and_never_connects() {
    // A listener on 127.0.0.2 that must never see a connection.
    let bait = TcpListener::bind("127.0.0.2:0").unwrap();
    bait.set_nonblocking(true).unwrap();
    let bait_port = bait.local_addr().unwrap().port();

    let off = start_exporter("");
    wait_ready(off.addr, Duration::from_secs(10));
    let response = get(off.addr, &format!("/probe?target=127.0.0.2:{bait_port}"));
    assert_eq!(response.status, 403);
    assert!(
        response.text().contains("no [probe] allow list"),
        "{}",
        response.text()
    );
    off.stop();

    let exporter = start_exporter(&probe_config("\"127.0.0.1/32\", \"*.allowed.test\""));
    wait_ready(exporter.addr, Duration::from_secs(10));
    for target in [
        format!("127.0.0.2:{bait_port}"),
        format!("[::ffff:127.0.0.2]:{bait_port}"),
        format!("[::1]:{bait_port}"),
        // inet_aton spellings of 127.0.0.2 resolve through getaddrinfo to the same address.
        format!("127.2:{bait_port}"),
        format!("2130706434:{bait_port}"),
    ] {
        let response = get(exporter.addr, &format!("/probe?target={target}"));
        assert_eq!(response.status, 403, "{target}: {}", response.text());
        assert!(
            response.text().contains("not allowed"),
            "{target}: {}",
            response.text()
        );
    }
    assert!(bait.accept().is_err(), "a refused target was connected to");

    let long_host = "a".repeat(10_000);
    for target in [
        "",
        "127.0.0.1",
        "127.0.0.1:0",
        "127.0.0.1:70000",
        ":80",
        "::1:80",
        "[::1]",
        long_host.as_str(),
    ] {
        let response = get(exporter.addr, &format!("/probe?target={target}"));
        assert_eq!(response.status, 400, "{target:.40}: {}", response.text());
    }
    assert_eq!(get(exporter.addr, "/probe").status, 400);
    assert_eq!(get(exporter.addr, "/probe?target=%zz").status, 400);
    assert!(bait.accept().is_err(), "a bad request was connected to");
    exporter.stop();
}

/// Regression: target `db` with `host = "127.0.0.1"` reloaded to `host = "127.0.0.2"` kept its
/// series with `ip="127.0.0.1"` and the old state for ever.
#[test]
fn a_reload_that_changes_a_host_leaves_no_series_of_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ports.toml");
    let (_open, port) = listener();
    let config = |host: &str| {
        format!(
            "[[targets]]\nname = \"db\"\nhost = \"{host}\"\nports = [{port}]\ninterval = \"1s\"\ntimeout = \"400ms\"\n"
        )
    };
    write(&path, &config("127.0.0.1"));
    let options = Options {
        config_file: Some(path.clone()),
        ..Options::default()
    };
    let exporter = start_exporter_with(&config("127.0.0.1"), options);
    wait_ready(exporter.addr, Duration::from_secs(10));
    let old = [("target", "db"), ("ip", "127.0.0.1")];
    assert_eq!(state_of(&scrape(&exporter), &old), "open");
    write(&path, &config("127.0.0.2"));
    assert_eq!(post(&exporter, "/-/reload").status, 200);
    let new = [("target", "db"), ("ip", "127.0.0.2")];
    // The listener is on 127.0.0.1 only: the new host's port is closed.
    wait_until(
        &exporter,
        "the new host probed",
        Duration::from_secs(10),
        |s| s.iter().any(|sample| matches(sample, &new)),
    );
    // A few rounds later, still nothing of the old address.
    std::thread::sleep(Duration::from_millis(2500));
    let samples = scrape(&exporter);
    let stale: Vec<_> = samples.iter().filter(|s| matches(s, &old)).collect();
    assert!(stale.is_empty(), "series of the old host: {stale:?}");
    assert_eq!(state_of(&samples, &new), "closed");
}

fn matches(sample: &Sample, labels: &[(&str, &str)]) -> bool {
    labels
        .iter()
        .all(|(name, value)| sample.labels.get(*name).map(String::as_str) == Some(*value))
}
