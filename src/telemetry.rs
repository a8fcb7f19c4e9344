//! The exporter's own metrics: probes, lookups, renderings, reloads, build and process.
//!
//! They live in a `prometheus` registry, which the scheduler, the resolver and the reloader
//! update through the handles here; the exposition module writes them out on each scrape.
//! Nothing here knows how metrics are rendered.

use std::time::SystemTime;

use prometheus::proto::MetricFamily;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::domain::State;

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

impl Telemetry {
    pub fn new() -> Result<Telemetry, prometheus::Error> {
        let registry = Registry::new();
        let renders = IntCounter::new(
            "port_exporter_table_renders_total",
            "Renderings of the state table for scrapes; concurrent scrapes share one.",
        )?;
        registry.register(Box::new(renders.clone()))?;

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
        let per_state = State::ALL.map(|state| probes_total.with_label_values(&[state.as_str()]));
        let in_flight = IntGauge::new(
            "port_exporter_probes_in_flight",
            "Probes started and not yet finished.",
        )?;
        let start_lateness = Histogram::with_opts(
            HistogramOpts::new(
                "port_exporter_probe_start_lateness_seconds",
                "How late a probe started: its round's delay plus its wait for the concurrency cap (the pacer's spacing is planned, not late).",
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
        let dns_lookups_in_flight = IntGauge::new(
            "port_exporter_dns_lookups_in_flight",
            "Name lookups (getaddrinfo calls) running or waiting for one of their bounded slots.",
        )?;
        registry.register(Box::new(dns_lookups_in_flight.clone()))?;
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
