//! Address selection (`ip_protocol`, `source_address`), in a network namespace of the test's
//! own: two extra addresses on its loopback, a firewall rule that rejects one of them, a name
//! with an A and an AAAA record and one with an A record only. The real exporter binary runs
//! inside it and is scraped there. Needs root and iproute2, iptables (the lab's tools): without
//! them the lab tests print `SKIPPED: <why>`, and fail under CI=true.
//!
//! Traffic goes only to loopback addresses: 127.0.0.x here, inside the namespace in the lab.

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::time::Duration;

use common::netns::*;
use common::*;
use port_exporter::domain::{Attempts, Close, Reason, State, Timing};
use port_exporter::probe::{Probe, TcpProbe};

/// The lab's port: a listener on 127.0.0.1 and ::1.
const PORT: u16 = 10101;
/// On the namespace's loopback: probes from here find the port open.
const ALLOWED_SOURCE: &str = "198.18.0.2";
/// On the namespace's loopback too, but the firewall rejects it (ICMP admin prohibited).
const REJECTED_SOURCE: &str = "198.18.0.3";
/// Not on the machine: bind() fails with EADDRNOTAVAIL.
const ABSENT_SOURCE: &str = "198.18.9.9";

/// A namespace with the two sources on its loopback, the rule against one of them, and a
/// name with only an A record (`v4only.lab`; `dual.lab` has 127.0.0.1 and ::1).
fn lab() -> Netns {
    let ns = Netns::create("addr");
    for source in [ALLOWED_SOURCE, REJECTED_SOURCE] {
        ns.run(&["ip", "addr", "add", &format!("{source}/32"), "dev", "lo"]);
    }
    let port = PORT.to_string();
    ns.run(&[
        "iptables",
        "-A",
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        &port,
        "-s",
        REJECTED_SOURCE,
        "-j",
        "REJECT",
        "--reject-with",
        "icmp-admin-prohibited",
    ]);
    ns.add_hosts("127.0.0.1 v4only.lab\n");
    ns
}

/// (state, reason) of the target's series for `ip` ("" when its name did not resolve).
fn state_and_reason(samples: &[Sample], target: &str, ip: &str) -> (String, String) {
    let port = PORT.to_string();
    let labels = [("target", target), ("ip", ip), ("port", port.as_str())];
    let state = state_of(samples, &labels);
    let reasons = find(samples, "port_state_reason", &labels);
    assert_eq!(reasons.len(), 1, "{target} {ip}: {reasons:?}");
    (state, reasons[0].labels["reason"].clone())
}

/// The `ip` labels of the target's `port_state` series.
fn ips_of(samples: &[Sample], target: &str) -> BTreeSet<String> {
    find(samples, "port_state", &[("target", target)])
        .iter()
        .map(|s| s.labels["ip"].clone())
        .collect()
}

fn pair(state: &str, reason: &str) -> (String, String) {
    (state.to_string(), reason.to_string())
}

#[test]
fn the_source_address_decides_what_the_port_looks_like() {
    if !lab_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ns = lab();
    let _open = ns.listen(PORT);
    let config = format!(
        r#"
            [defaults]
            interval = "2s"
            timeout = "1s"
            retries = 0

            [[targets]]
            name = "kernel-source"
            host = "127.0.0.1"
            ports = [{PORT}]

            [[targets]]
            name = "allowed-source"
            host = "127.0.0.1"
            ports = [{PORT}]
            source_address = "{ALLOWED_SOURCE}"

            [[targets]]
            name = "rejected-source"
            host = "127.0.0.1"
            ports = [{PORT}]
            source_address = "{REJECTED_SOURCE}"

            [[targets]]
            name = "absent-source"
            host = "127.0.0.1"
            ports = [{PORT}]
            source_address = "{ABSENT_SOURCE}"
        "#
    );
    let exporter = start_exporter_in(&ns, dir.path(), &config, Duration::from_secs(20));
    let samples = parse_samples(&ns.get(EXPORTER_ADDR, "/metrics").text());
    let ip = "127.0.0.1";
    assert_eq!(
        state_and_reason(&samples, "kernel-source", ip),
        pair("open", "syn-ack")
    );
    assert_eq!(
        state_and_reason(&samples, "allowed-source", ip),
        pair("open", "syn-ack")
    );
    assert_eq!(
        state_and_reason(&samples, "rejected-source", ip),
        pair("filtered", "host-unreach"),
        "the firewall rejects {REJECTED_SOURCE}: the probe left from it"
    );
    assert_eq!(
        state_and_reason(&samples, "absent-source", ip),
        pair("error", "eaddrnotavail"),
        "a source that is not on the machine is the prober's error, not a port state"
    );
    let absent = [("target", "absent-source")];
    let first_probe = value(&samples, "port_last_probe_timestamp_seconds", &absent);

    // The exporter keeps running and probing: the next rounds say the same.
    std::thread::sleep(Duration::from_millis(4_500));
    assert_eq!(ns.get(EXPORTER_ADDR, "/-/healthy").status, 200);
    let later = parse_samples(&ns.get(EXPORTER_ADDR, "/metrics").text());
    assert_eq!(
        state_and_reason(&later, "absent-source", ip),
        pair("error", "eaddrnotavail")
    );
    assert_eq!(
        state_and_reason(&later, "rejected-source", ip),
        pair("filtered", "host-unreach")
    );
    let last_probe = value(&later, "port_last_probe_timestamp_seconds", &absent);
    assert!(
        last_probe > first_probe,
        "probed again: {first_probe} then {last_probe}; log:\n{}",
        exporter.log()
    );
}

#[test]
fn ip_protocol_picks_the_addresses_of_a_name() {
    if !lab_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ns = lab();
    let _open = ns.listen(PORT);
    let config = format!(
        r#"
            [defaults]
            interval = "5s"
            timeout = "1s"
            retries = 0

            [[targets]]
            name = "both"
            host = "dual.lab"
            ports = [{PORT}]

            [[targets]]
            name = "ipv4"
            host = "dual.lab"
            ports = [{PORT}]
            ip_protocol = "ipv4"

            [[targets]]
            name = "ipv6"
            host = "dual.lab"
            ports = [{PORT}]
            ip_protocol = "ipv6"

            [[targets]]
            name = "ipv4-source"
            host = "dual.lab"
            ports = [{PORT}]
            source_address = "{ALLOWED_SOURCE}"

            [[targets]]
            name = "ipv6-of-a-v4-name"
            host = "v4only.lab"
            ports = [{PORT}]
            ip_protocol = "ipv6"
        "#
    );
    let _exporter = start_exporter_in(&ns, dir.path(), &config, Duration::from_secs(20));
    let samples = parse_samples(&ns.get(EXPORTER_ADDR, "/metrics").text());
    let set = |ips: &[&str]| -> BTreeSet<String> { ips.iter().map(|s| s.to_string()).collect() };
    assert_eq!(ips_of(&samples, "both"), set(&["127.0.0.1", "::1"]));
    assert_eq!(ips_of(&samples, "ipv4"), set(&["127.0.0.1"]));
    assert_eq!(ips_of(&samples, "ipv6"), set(&["::1"]));
    assert_eq!(
        ips_of(&samples, "ipv4-source"),
        set(&["127.0.0.1"]),
        "an IPv4 source probes only IPv4 addresses under ip_protocol = \"both\""
    );
    for (target, ip) in [
        ("both", "127.0.0.1"),
        ("both", "::1"),
        ("ipv4", "127.0.0.1"),
        ("ipv6", "::1"),
        ("ipv4-source", "127.0.0.1"),
    ] {
        assert_eq!(
            state_and_reason(&samples, target, ip),
            pair("open", "syn-ack"),
            "{target} {ip}"
        );
    }
    // A name with no address of the family reads as a name that does not resolve.
    assert_eq!(ips_of(&samples, "ipv6-of-a-v4-name"), set(&[""]));
    assert_eq!(
        state_and_reason(&samples, "ipv6-of-a-v4-name", ""),
        pair("error", "dns")
    );
    assert!(value(&samples, "port_exporter_dns_lookup_failures_total", &[]) >= 1.0);
}

#[test]
fn probe_uses_the_defaults_address_selection() {
    if !lab_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ns = lab();
    let _open = ns.listen(PORT);
    let config = format!(
        r#"
            [defaults]
            timeout = "1s"
            retries = 0
            source_address = "{REJECTED_SOURCE}"

            [probe]
            allow = ["127.0.0.0/8", "::1", "*.lab"]

            [[targets]]
            host = "127.0.0.1"
            ports = [{PORT}]
            source_address = "{ALLOWED_SOURCE}"
        "#
    );
    let _exporter = start_exporter_in(&ns, dir.path(), &config, Duration::from_secs(20));
    let probe = |target: &str| ns.get(EXPORTER_ADDR, &format!("/probe?target={target}"));

    // From the defaults' source, which the firewall rejects; only the IPv4 address of the name.
    let answer = probe(&format!("dual.lab:{PORT}"));
    assert_eq!(answer.status, 200);
    let samples = parse_samples(&answer.text());
    let ips: BTreeSet<String> = find(&samples, "port_state", &[])
        .iter()
        .map(|s| s.labels["ip"].clone())
        .collect();
    assert_eq!(ips, BTreeSet::from(["127.0.0.1".to_string()]));
    let on = find(&samples, "port_state", &[("state", "filtered")]);
    assert_eq!(on.len(), 1);
    assert_eq!(on[0].value, 1.0, "{}", answer.text());
    assert_eq!(value(&samples, "probe_success", &[]), 0.0);

    // An IPv6 literal cannot be probed from an IPv4 source.
    let refused = probe(&format!("[::1]:{PORT}"));
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(
        refused
            .text()
            .contains("::1 is an IPv6 address but source_address 198.18.0.3 is an IPv4 address"),
        "{}",
        refused.text()
    );
}

/// Without the lab: a probe with a source address binds to it, and the listener sees the
/// connection come from there.
#[tokio::test]
async fn a_probe_connects_from_its_source_address() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let source: IpAddr = "127.0.0.2".parse().unwrap();
    let attempts = Attempts {
        timeout: Duration::from_secs(1),
        retries: 0,
        timing: Timing::Fixed,
        close: Close::Graceful,
        source: Some(source),
    };
    let outcome = TcpProbe::default().probe(addr, attempts).await;
    assert_eq!(
        (outcome.state, outcome.reason),
        (State::Open, Reason::SynAck)
    );
    let (_connection, peer): (_, SocketAddr) = listener.accept().unwrap();
    assert_eq!(peer.ip(), source);
    assert_ne!(peer.port(), 0);
}
