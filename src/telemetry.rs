//! The exporter's own metrics: probes, lookups, renderings, reloads, build and process.
//!
//! They live in a `prometheus` registry, which the scheduler, the resolver and the reloader
//! update through the handles here; the exposition module writes them out on each scrape.
//! Their names, HELP and labels come from [`crate::families`], the vocabulary the exposition
//! writes with too; nothing here knows how metrics are rendered.

use std::time::SystemTime;

use prometheus::proto::MetricFamily;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::domain::State;
use crate::families::{
    BUILD_INFO, CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP, CONFIG_LAST_RELOAD_SUCCESSFUL,
    DNS_LOOKUP_FAILURES, DNS_LOOKUPS_IN_FLIGHT, Family, PROBE_START_LATENESS, PROBES,
    PROBES_IN_FLIGHT, TABLE_RENDERS,
};

/// Buckets for probe start lateness: scheduling is good to milliseconds, bad past seconds.
const LATENESS_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The exporter's own metrics, registered once.
pub struct Telemetry {
    registry: Registry,
    /// Renderings of the state table.
    pub renders: IntCounter,
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
    /// `port_exporter_probes_total` per state, in `State::ALL` order (looked up once).
    probes_total: [IntCounter; State::ALL.len()],
    pub in_flight: IntGauge,
    pub start_lateness: Histogram,
    pub dns_lookup_failures: IntCounter,
    pub dns_lookups_in_flight: IntGauge,
}

impl ProbeMetrics {
    /// Counts a finished probe by the state it found.
    pub fn count_probe(&self, state: State) {
        self.probes_total[state as usize].inc();
    }
}

/// A family's name and HELP as the registry takes them.
fn opts(family: &Family) -> Opts {
    Opts::new(family.name, family.help)
}

impl Telemetry {
    pub fn new() -> Result<Telemetry, prometheus::Error> {
        let registry = Registry::new();
        let renders = IntCounter::with_opts(opts(&TABLE_RENDERS))?;
        registry.register(Box::new(renders.clone()))?;

        let build_info = IntGauge::with_opts(
            opts(&BUILD_INFO)
                .const_label("version", env!("CARGO_PKG_VERSION"))
                .const_label("revision", env!("PORT_EXPORTER_REVISION")),
        )?;
        build_info.set(1);
        registry.register(Box::new(build_info))?;

        let probes_total = IntCounterVec::new(opts(&PROBES), PROBES.labels)?;
        let per_state = State::ALL.map(|state| probes_total.with_label_values(&[state.as_str()]));
        let in_flight = IntGauge::with_opts(opts(&PROBES_IN_FLIGHT))?;
        let start_lateness = Histogram::with_opts(
            HistogramOpts::new(PROBE_START_LATENESS.name, PROBE_START_LATENESS.help)
                .buckets(LATENESS_BUCKETS.to_vec()),
        )?;
        let dns_lookup_failures = IntCounter::with_opts(opts(&DNS_LOOKUP_FAILURES))?;
        registry.register(Box::new(probes_total.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(start_lateness.clone()))?;
        registry.register(Box::new(dns_lookup_failures.clone()))?;
        let dns_lookups_in_flight = IntGauge::with_opts(opts(&DNS_LOOKUPS_IN_FLIGHT))?;
        registry.register(Box::new(dns_lookups_in_flight.clone()))?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let reloads = ReloadMetrics {
            last_successful: IntGauge::with_opts(opts(&CONFIG_LAST_RELOAD_SUCCESSFUL))?,
            last_success_timestamp: prometheus::Gauge::with_opts(opts(
                &CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP,
            ))?,
        };
        registry.register(Box::new(reloads.last_successful.clone()))?;
        registry.register(Box::new(reloads.last_success_timestamp.clone()))?;
        reloads.record(true);
        Ok(Telemetry {
            registry,
            renders,
            reloads,
            probes: ProbeMetrics {
                probes_total: per_state,
                in_flight,
                start_lateness,
                dns_lookup_failures,
                dns_lookups_in_flight,
            },
        })
    }

    /// Every family's current values.
    pub fn gather(&self) -> Vec<MetricFamily> {
        self.registry.gather()
    }
}

/// Unix time in seconds, as Prometheus timestamps are written.
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::text::{Format, finish, write_gathered};
    use crate::families::{Kind, OWN_FAMILIES};
    use prometheus::proto::MetricType;

    #[test]
    fn every_own_family_is_registered_as_the_vocabulary_says() {
        let gathered = Telemetry::new().unwrap().gather();
        let own: Vec<_> = gathered
            .iter()
            .filter(|f| !f.name().starts_with("process_"))
            .collect();
        assert_eq!(own.len(), OWN_FAMILIES.len());
        for family in own {
            let known = OWN_FAMILIES
                .iter()
                .find(|f| f.name == family.name())
                .unwrap_or_else(|| panic!("{} is not in the vocabulary", family.name()));
            assert_eq!(family.help(), known.help, "{}", known.name);
            let registered = match known.kind {
                Kind::Counter => MetricType::COUNTER,
                Kind::Gauge | Kind::Info => MetricType::GAUGE,
                Kind::Histogram => MetricType::HISTOGRAM,
                Kind::Summary => MetricType::SUMMARY,
                Kind::Unknown => MetricType::UNTYPED,
            };
            assert_eq!(family.get_field_type(), registered, "{}", known.name);
            for metric in family.get_metric() {
                let names: Vec<&str> = metric.get_label().iter().map(|l| l.name()).collect();
                assert_eq!(names, known.labels, "{}", known.name);
            }
        }
    }

    #[test]
    fn own_metrics_in_both_formats() {
        let telemetry = Telemetry::new().unwrap();
        telemetry.probes.count_probe(State::Open);
        telemetry.probes.start_lateness.observe(0.002);
        let gathered = telemetry.gather();
        let write = |format| {
            let mut out = String::new();
            write_gathered(&mut out, format, &gathered);
            finish(&mut out, format);
            out
        };
        // The text format as the `prometheus` crate's encoder, which this replaced, wrote it:
        // the same lines, but for the bounds now written as floats.
        let text = write(Format::Text);
        let mut reference = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&gathered, &mut reference)
            .unwrap();
        let reference = reference
            .replace("le=\"1\"", "le=\"1.0\"")
            .replace("le=\"5\"", "le=\"5.0\"");
        assert_eq!(text, reference);
        let om = write(Format::OpenMetrics);
        for line in [
            "# TYPE port_exporter_table_renders counter",
            "port_exporter_table_renders_total 0",
            "# TYPE port_exporter_probes counter",
            "port_exporter_probes_total{state=\"open\"} 1",
            "# TYPE port_exporter_build info",
            "# TYPE process_cpu_seconds counter",
            "# TYPE port_exporter_probe_start_lateness_seconds histogram",
            "port_exporter_probe_start_lateness_seconds_bucket{le=\"0.0025\"} 1",
            "port_exporter_probe_start_lateness_seconds_bucket{le=\"+Inf\"} 1",
            "port_exporter_probe_start_lateness_seconds_count 1",
            "# TYPE process_resident_memory_bytes gauge",
        ] {
            assert!(om.lines().any(|l| l == line), "missing {line}\n{om}");
        }
        let build = om
            .lines()
            .find(|l| l.starts_with("port_exporter_build_info{"))
            .unwrap();
        assert!(build.ends_with("} 1"), "{build}");
        assert!(!om.contains("_total counter"), "{om}");
        assert_eq!(om.lines().last(), Some("# EOF"));
        assert_eq!(om.matches("# EOF").count(), 1);
        // The same samples, line for line, in both formats.
        let samples = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .map(String::from)
                .collect()
        };
        assert_eq!(samples(&om), samples(&text));
    }
}
