//! The metric families the exporter serves, each defined once: name, HELP, type and labels.
//!
//! The vocabulary of every writer (the state table's rendering, `/probe`, the exporter's own
//! metrics, in [`crate::exposition`]) and of the registry the lower layers update
//! ([`crate::telemetry`]): it sits below both, so that what is counted and what is written
//! can never disagree, and neither depends on the other.

/// What a family's samples mean, and so its `# TYPE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    /// Named with its `_total` suffix (see [`Family::name`]).
    Counter,
    Histogram,
    Summary,
    /// A gauge of constant 1 whose labels are the information (named with `_info`).
    Info,
    /// Untyped: the text format's `untyped`, OpenMetrics' `unknown`.
    Unknown,
}

/// A metric family the exporter serves.
pub struct Family {
    /// The name of its series as Prometheus stores them, which is the family's name in the
    /// text format: a counter's with `_total`, an info's with `_info`.
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    /// The labels every series of the family has, on every endpoint that serves it
    /// (`/metrics` adds `target` and the target's own labels to the per-port families).
    pub labels: &'static [&'static str],
}

// The state table's families, on `/metrics` (the service check's are below); `port_state`,
// `port_state_reason` and `port_connect_duration_seconds` are also `/probe`'s.

/// A gauge with a `state` label, not an OpenMetrics StateSet: a StateSet's label must be
/// named after the family (`port_state{port_state="open"}`), which would break every rule,
/// query and dashboard written against `state`. So both formats write the same gauge.
pub const PORT_STATE: Family = Family {
    name: "port_state",
    help: "Port state as a state set: 1 for the current state (open, closed, filtered, error; a UDP port also open|filtered), 0 for the others.",
    kind: Kind::Gauge,
    labels: &["host", "port", "protocol", "ip", "state"],
};
pub const PORT_STATE_REASON: Family = Family {
    name: "port_state_reason",
    help: "The reason behind the current port state, in nmap's words (syn-ack, conn-refused, no-response, ...).",
    kind: Kind::Gauge,
    labels: &["host", "port", "protocol", "ip", "reason"],
};
pub const PORT_CONNECT_DURATION: Family = Family {
    name: "port_connect_duration_seconds",
    help: "Time from connect() to the answer (SYN-ACK, RST or ICMP) on the last probe; absent when nothing answered.",
    kind: Kind::Gauge,
    labels: &["host", "port", "protocol", "ip"],
};
pub const PORT_DNS_LOOKUP_DURATION: Family = Family {
    name: "port_dns_lookup_duration_seconds",
    help: "Duration of the last DNS lookup of the target's host.",
    kind: Kind::Gauge,
    labels: &["host"],
};
pub const PORT_STATE_UNEXPECTED: Family = Family {
    name: "port_state_unexpected",
    help: "1 when the port state breaks the target's expectation, else 0; absent when any state is expected.",
    kind: Kind::Gauge,
    labels: &["host", "port", "protocol", "ip"],
};
pub const PORT_STATE_CHANGES: Family = Family {
    name: "port_state_changes_total",
    help: "Port state changes seen since the series appeared.",
    kind: Kind::Counter,
    labels: &["host", "port", "protocol", "ip"],
};
pub const PORT_STATE_LAST_CHANGE: Family = Family {
    name: "port_state_last_change_timestamp_seconds",
    help: "Unix time of the last port state change (or of the first probe).",
    kind: Kind::Gauge,
    labels: &["host", "port", "protocol", "ip"],
};
pub const PORT_LAST_PROBE: Family = Family {
    name: "port_last_probe_timestamp_seconds",
    help: "Unix time the last probe of the port finished.",
    kind: Kind::Gauge,
    labels: &["host", "port", "protocol", "ip"],
};
pub const PORT_TARGET_PORTS: Family = Family {
    name: "port_target_ports",
    help: "Ports of the target per address and state, counting range ports that have no series of their own.",
    kind: Kind::Gauge,
    labels: &["host", "ip", "state"],
};

// The service check's families (targets with `service` or `query`), on `/metrics`: written
// only for open ports whose last probe ran the check.

pub const PORT_SERVICE_INFO: Family = Family {
    name: "port_service_info",
    help: "1 for the service found on the last probe of an open port (nmap's names; unknown when nothing matched), with TLS beside it (none, implicit, starttls) and the version it announces, where short.",
    kind: Kind::Info,
    labels: &[
        "host", "port", "protocol", "ip", "service", "tls", "version",
    ],
};
pub const PORT_SERVICE_UNEXPECTED: Family = Family {
    name: "port_service_unexpected",
    help: "1 when the service found breaks the target's service = \"<name>\" (or its query failed), else 0; absent when no service is expected.",
    kind: Kind::Gauge,
    labels: &["host", "port", "protocol", "ip"],
};
pub const PORT_SERVICE_REASON: Family = Family {
    name: "port_service_reason",
    help: "Why the service check ended (matched, banner-mismatch, no-banner, tls-handshake-failed, timeout, closed-by-peer, ...).",
    kind: Kind::Gauge,
    labels: &["host", "port", "protocol", "ip", "reason"],
};
pub const PORT_TLS_CERT_EXPIRY: Family = Family {
    name: "port_tls_cert_expiry_timestamp_seconds",
    help: "Unix time of the earliest notAfter in the certificate chain the server sent, whether it verifies or not.",
    kind: Kind::Gauge,
    labels: &["host", "port", "protocol", "ip"],
};
pub const PORT_TLS_VERSION_INFO: Family = Family {
    name: "port_tls_version_info",
    help: "1, labelled with the TLS version the handshake agreed on (TLS 1.2, TLS 1.3).",
    kind: Kind::Info,
    labels: &["host", "port", "protocol", "ip", "version"],
};
pub const PORT_TLS_CERT_VERIFIED: Family = Family {
    name: "port_tls_cert_verified",
    help: "1 when the chain verifies against the roots (ca_file, else the system's) for the server name now, else 0; absent under insecure_skip_verify.",
    kind: Kind::Gauge,
    labels: &["host", "port", "protocol", "ip"],
};

// `/probe`'s own families, as blackbox_exporter names them.

pub const PROBE_DNS_LOOKUP_TIME: Family = Family {
    name: "probe_dns_lookup_time_seconds",
    help: "How long the DNS lookup took.",
    kind: Kind::Gauge,
    labels: &[],
};
pub const PROBE_DURATION: Family = Family {
    name: "probe_duration_seconds",
    help: "How long the probe took, lookup included.",
    kind: Kind::Gauge,
    labels: &[],
};
pub const PROBE_SUCCESS: Family = Family {
    name: "probe_success",
    help: "Whether the probe met its expectation.",
    kind: Kind::Gauge,
    labels: &[],
};

// The exporter's own metrics: registered by `crate::telemetry` under these names, written
// from what the registry gathers. The process collector's `process_*` families are the
// `prometheus` crate's.

pub const TABLE_RENDERS: Family = Family {
    name: "port_exporter_table_renders_total",
    help: "Renderings of the state table for scrapes; concurrent scrapes share one.",
    kind: Kind::Counter,
    labels: &[],
};
pub const BUILD_INFO: Family = Family {
    name: "port_exporter_build_info",
    help: "A metric with a constant '1' value labeled by the exporter's version and revision.",
    kind: Kind::Info,
    labels: &["revision", "version"],
};
pub const PROBES: Family = Family {
    name: "port_exporter_probes_total",
    help: "Probes finished, by the state they found.",
    kind: Kind::Counter,
    labels: &["state"],
};
pub const PROBES_IN_FLIGHT: Family = Family {
    name: "port_exporter_probes_in_flight",
    help: "Probes started and not yet finished.",
    kind: Kind::Gauge,
    labels: &[],
};
pub const PROBE_START_LATENESS: Family = Family {
    name: "port_exporter_probe_start_lateness_seconds",
    help: "How late a probe started: its round's delay plus every wait of the round for the concurrency cap up to it (the pacer's spacing is planned, not late).",
    kind: Kind::Histogram,
    labels: &[],
};
pub const DNS_LOOKUP_FAILURES: Family = Family {
    name: "port_exporter_dns_lookup_failures_total",
    help: "DNS lookups of target names that failed or timed out.",
    kind: Kind::Counter,
    labels: &[],
};
pub const DNS_LOOKUPS_IN_FLIGHT: Family = Family {
    name: "port_exporter_dns_lookups_in_flight",
    help: "Name lookups (getaddrinfo calls) running or waiting for one of their bounded slots.",
    kind: Kind::Gauge,
    labels: &[],
};
pub const CONFIG_LAST_RELOAD_SUCCESSFUL: Family = Family {
    name: "port_exporter_config_last_reload_successful",
    help: "Whether the last config load (start-up or reload) succeeded.",
    kind: Kind::Gauge,
    labels: &[],
};
pub const CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP: Family = Family {
    name: "port_exporter_config_last_reload_success_timestamp_seconds",
    help: "Unix time of the last successful config load.",
    kind: Kind::Gauge,
    labels: &[],
};

// What adaptive timing learned of each address probed (see `crate::probe::timing`), on
// `/metrics`: per address, since every target probing it shares what it learned.

pub const HOST_RTT: Family = Family {
    name: "port_host_rtt_seconds",
    help: "Smoothed round-trip time of the address, from the answers to its probes (RFC 6298); absent before the first.",
    kind: Kind::Gauge,
    labels: &["protocol", "ip"],
};
pub const HOST_RTT_VARIATION: Family = Family {
    name: "port_host_rtt_variation_seconds",
    help: "Smoothed variation of the address's round-trip time; the adaptive attempt timeout is rtt + 4 x variation.",
    kind: Kind::Gauge,
    labels: &["protocol", "ip"],
};
pub const HOST_TIMEOUT: Family = Family {
    name: "port_host_timeout_seconds",
    help: "The attempt timeout the last probe of the address started with (its retries wait twice as long).",
    kind: Kind::Gauge,
    labels: &["protocol", "ip"],
};
pub const HOST_DROP_RATIO: Family = Family {
    name: "port_host_drop_ratio",
    help: "Share of attempts that met silence on ports of the address that then answered: the evidence that silence may be loss.",
    kind: Kind::Gauge,
    labels: &["protocol", "ip"],
};
pub const HOST_RETRIES: Family = Family {
    name: "port_host_retries",
    help: "Retries a silent port of the address gets now: from its drop rate while it answers, else the configured retries.",
    kind: Kind::Gauge,
    labels: &["protocol", "ip"],
};
pub const HOST_RETRANSMISSIONS: Family = Family {
    name: "port_host_retransmissions_total",
    help: "Attempts (connects, or datagrams for UDP) to the address after a probe's first: retries of silent ports.",
    kind: Kind::Counter,
    labels: &["protocol", "ip"],
};

/// The exporter's own families, as registered by `crate::telemetry`.
pub const OWN_FAMILIES: [&Family; 9] = [
    &TABLE_RENDERS,
    &BUILD_INFO,
    &PROBES,
    &PROBES_IN_FLIGHT,
    &PROBE_START_LATENESS,
    &DNS_LOOKUP_FAILURES,
    &DNS_LOOKUPS_IN_FLIGHT,
    &CONFIG_LAST_RELOAD_SUCCESSFUL,
    &CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP,
];
