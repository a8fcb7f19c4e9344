//! Metrics: the state table rendered at scrape time, plus the exporter's own metrics.
//!
//! The table's series are built by a custom [`Collector`] on every scrape instead of being kept
//! in metric vectors: a row removed from the table can never linger as a stale series.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::probe::State;
use crate::state::{StateTable, TargetRows};

/// The Content-Type of the text exposition format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Buckets for probe start lateness: scheduling is good to milliseconds, bad past seconds.
const LATENESS_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The registry behind `/metrics` and the exporter's self-metrics.
pub struct Metrics {
    registry: Registry,
    pub probes: ProbeMetrics,
    pub reloads: ReloadMetrics,
}

/// Self-metrics of config reloads.
#[derive(Clone)]
pub struct ReloadMetrics {
    last_successful: IntGauge,
    last_success_timestamp: prometheus::Gauge,
}

impl ReloadMetrics {
    /// Records the outcome of loading the config (at start-up or on reload).
    pub fn record(&self, successful: bool) {
        self.last_successful.set(i64::from(successful));
        if successful {
            self.last_success_timestamp
                .set(unix_seconds(SystemTime::now()));
        }
    }
}

/// Self-metrics the scheduler updates.
#[derive(Clone)]
pub struct ProbeMetrics {
    probes_total: IntCounterVec,
    pub in_flight: IntGauge,
    pub start_lateness: Histogram,
    pub dns_lookup_failures: IntCounter,
}

impl ProbeMetrics {
    /// Counts a finished probe by the state it found.
    pub fn count_probe(&self, state: State) {
        self.probes_total.with_label_values(&[state.as_str()]).inc();
    }
}

impl Metrics {
    pub fn new(table: Arc<StateTable>) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        registry.register(Box::new(TableCollector::new(table)?))?;

        let build_info = IntGauge::with_opts(
            Opts::new(
                "port_exporter_build_info",
                "A metric with a constant '1' value labeled by the exporter's version and revision.",
            )
            .const_label("version", env!("CARGO_PKG_VERSION"))
            .const_label("revision", env!("PORT_EXPORTER_REVISION")),
        )?;
        build_info.set(1);
        registry.register(Box::new(build_info))?;

        let probes_total = IntCounterVec::new(
            Opts::new(
                "port_exporter_probes_total",
                "Probes finished, by the state they found.",
            ),
            &["state"],
        )?;
        for state in State::ALL {
            probes_total.with_label_values(&[state.as_str()]);
        }
        let in_flight = IntGauge::new(
            "port_exporter_probes_in_flight",
            "Probes started and not yet finished.",
        )?;
        let start_lateness = Histogram::with_opts(
            HistogramOpts::new(
                "port_exporter_probe_start_lateness_seconds",
                "How long after its scheduled time a probe started (waiting for the concurrency cap).",
            )
            .buckets(LATENESS_BUCKETS.to_vec()),
        )?;
        let dns_lookup_failures = IntCounter::new(
            "port_exporter_dns_lookup_failures_total",
            "DNS lookups of target names that failed or timed out.",
        )?;
        registry.register(Box::new(probes_total.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(start_lateness.clone()))?;
        registry.register(Box::new(dns_lookup_failures.clone()))?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let reloads = ReloadMetrics {
            last_successful: IntGauge::new(
                "port_exporter_config_last_reload_successful",
                "Whether the last config load (start-up or reload) succeeded.",
            )?,
            last_success_timestamp: prometheus::Gauge::new(
                "port_exporter_config_last_reload_success_timestamp_seconds",
                "Unix time of the last successful config load.",
            )?,
        };
        registry.register(Box::new(reloads.last_successful.clone()))?;
        registry.register(Box::new(reloads.last_success_timestamp.clone()))?;
        reloads.record(true);

        Ok(Metrics {
            registry,
            reloads,
            probes: ProbeMetrics {
                probes_total,
                in_flight,
                start_lateness,
                dns_lookup_failures,
            },
        })
    }

    /// Renders every metric in the text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding to a Vec cannot fail: every family is built with a type and help");
        out
    }
}

/// One metric family of the table.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
}

const PORT_STATE: Family = Family {
    name: "port_state",
    help: "Port state as a state set: 1 for the current state (open, closed, filtered, error), 0 for the others.",
    kind: MetricType::GAUGE,
};
const PORT_STATE_REASON: Family = Family {
    name: "port_state_reason",
    help: "The reason behind the current port state, in nmap's words (syn-ack, conn-refused, no-response, ...).",
    kind: MetricType::GAUGE,
};
const CONNECT_DURATION: Family = Family {
    name: "port_connect_duration_seconds",
    help: "Time from connect() to the answer (SYN-ACK, RST or ICMP) on the last probe; absent when nothing answered.",
    kind: MetricType::GAUGE,
};
const DNS_LOOKUP_DURATION: Family = Family {
    name: "port_dns_lookup_duration_seconds",
    help: "Duration of the last DNS lookup of the target's host.",
    kind: MetricType::GAUGE,
};
const UNEXPECTED: Family = Family {
    name: "port_state_unexpected",
    help: "1 when the port state breaks the target's expectation, else 0; absent when any state is expected.",
    kind: MetricType::GAUGE,
};
const CHANGES: Family = Family {
    name: "port_state_changes_total",
    help: "Port state changes seen since the series appeared.",
    kind: MetricType::COUNTER,
};
const LAST_CHANGE: Family = Family {
    name: "port_state_last_change_timestamp_seconds",
    help: "Unix time of the last port state change (or of the first probe).",
    kind: MetricType::GAUGE,
};
const LAST_PROBE: Family = Family {
    name: "port_last_probe_timestamp_seconds",
    help: "Unix time the last probe of the port finished.",
    kind: MetricType::GAUGE,
};

const TARGET_PORTS: Family = Family {
    name: "port_target_ports",
    help: "Ports of the target per address and state, counting range ports that have no series of their own.",
    kind: MetricType::GAUGE,
};

const FAMILIES: [&Family; 9] = [
    &PORT_STATE,
    &PORT_STATE_REASON,
    &CONNECT_DURATION,
    &DNS_LOOKUP_DURATION,
    &UNEXPECTED,
    &CHANGES,
    &LAST_CHANGE,
    &LAST_PROBE,
    &TARGET_PORTS,
];

/// Renders the state table on every scrape.
struct TableCollector {
    table: Arc<StateTable>,
    descs: Vec<Desc>,
}

impl TableCollector {
    fn new(table: Arc<StateTable>) -> Result<TableCollector, prometheus::Error> {
        let descs = FAMILIES
            .iter()
            .map(|f| Desc::new(f.name.into(), f.help.into(), vec![], Default::default()))
            .collect::<Result<_, _>>()?;
        Ok(TableCollector { table, descs })
    }
}

impl Collector for TableCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let table = self.table.read();
        let mut series: [Vec<Metric>; FAMILIES.len()] = Default::default();
        let [
            state,
            reason,
            connect,
            dns,
            unexpected,
            changes,
            last_change,
            last_probe,
            target_ports,
        ] = &mut series;
        for target in table.values() {
            let target_labels = target_labels(target);
            if let Some(took) = target.dns_lookup {
                dns.push(gauge(target_labels.clone(), took.as_secs_f64()));
            }
            // Rows are ordered by port, then address: count per address across all ports.
            let mut counts: BTreeMap<Option<IpAddr>, [u64; State::ALL.len()]> = BTreeMap::new();
            for (key, row) in &target.rows {
                counts.entry(key.ip).or_default()[row.outcome.state as usize] += 1;
                if !target.info.shows(key.port, row) {
                    continue;
                }
                let mut labels = target_labels.clone();
                labels.push(label("port", key.port.to_string()));
                labels.push(label(
                    "ip",
                    key.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                ));
                let outcome = &row.outcome;
                for s in State::ALL {
                    state.push(gauge(
                        with(&labels, "state", s.as_str()),
                        f64::from(u8::from(s == outcome.state)),
                    ));
                }
                reason.push(gauge(with(&labels, "reason", outcome.reason.as_str()), 1.0));
                if let Some(took) = outcome.connect {
                    connect.push(gauge(labels.clone(), took.as_secs_f64()));
                }
                if let Some(broken) = target.info.expect.is_broken_by(outcome.state) {
                    unexpected.push(gauge(labels.clone(), f64::from(u8::from(broken))));
                }
                changes.push(counter(labels.clone(), row.changes as f64));
                last_change.push(gauge(labels.clone(), unix_seconds(row.last_change)));
                last_probe.push(gauge(labels, unix_seconds(outcome.at)));
            }
            for (ip, per_state) in counts {
                let mut labels = target_labels.clone();
                labels.push(label("ip", ip.map(|ip| ip.to_string()).unwrap_or_default()));
                for s in State::ALL {
                    target_ports.push(gauge(
                        with(&labels, "state", s.as_str()),
                        per_state[s as usize] as f64,
                    ));
                }
            }
        }
        FAMILIES
            .iter()
            .zip(series)
            .map(|(family, metrics)| {
                let mut mf = MetricFamily::default();
                mf.set_name(family.name.into());
                mf.set_help(family.help.into());
                mf.set_field_type(family.kind);
                mf.set_metric(metrics);
                mf
            })
            .collect()
    }
}

fn target_labels(target: &TargetRows) -> Vec<LabelPair> {
    let info = &target.info;
    let mut labels = vec![
        label("target", info.name.clone()),
        label("host", info.host.clone()),
    ];
    labels.extend(info.labels.iter().map(|(k, v)| label(k, v.clone())));
    labels
}

fn label(name: &str, value: String) -> LabelPair {
    let mut pair = LabelPair::default();
    pair.set_name(name.to_string());
    pair.set_value(value);
    pair
}

fn with(labels: &[LabelPair], name: &str, value: impl Into<Cow<'static, str>>) -> Vec<LabelPair> {
    let mut labels = labels.to_vec();
    labels.push(label(name, value.into().into_owned()));
    labels
}

fn gauge(labels: Vec<LabelPair>, value: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(value);
    let mut m = Metric::from_gauge(g);
    m.set_label(labels);
    m
}

fn counter(labels: Vec<LabelPair>, value: f64) -> Metric {
    let mut c = Counter::default();
    c.set_value(value);
    let mut m = Metric::default();
    m.set_counter(c);
    m.set_label(labels);
    m
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}
