//! port_exporter: a Prometheus exporter that tells, per host, port and address, whether a TCP
//! port is open, closed or filtered, and whether that is what the operator expects.
//!
//! # Layout
//! Data flows one way: config → scheduler → probe → state table → rendered on scrape.
//! - [`config`]: the TOML file, parsed strictly and validated into [`config::Config`].
//! - [`scheduler`]: background rounds per target under a global concurrency cap, paced by
//!   [`pacer`].
//! - [`probe`]: one connect attempt and its classification into a state and a reason.
//! - [`state`]: the state table, the single source of truth.
//! - [`metrics`]: the table rendered as Prometheus metrics at scrape time ([`exposition`]),
//!   cached and shared between concurrent scrapes, plus self-metrics; [`parallel`] spreads a
//!   rendering and its compression over the cores.
//! - [`http`]: `/metrics`, the [`status`] page at `/`, `/-/healthy`, `/-/ready`, guarded by
//!   [`web_config`] (TLS, basic auth).
//! - [`resolve`]: name lookups, deduplicated and bounded.
//! - [`reload`]: SIGHUP and `POST /-/reload`: validate, then diff the scheduler.
//! - [`on_demand`]: `/probe?target=host:port` for Prometheus-driven probing, behind an allow list.
//! - [`logging`], [`limits`]: process set-up for the binary.

#![forbid(unsafe_code)]

pub mod config;
pub mod domain;
pub mod exposition;
pub mod limits;
pub mod logging;
pub mod probe;
pub mod reload;
pub mod schedule;
pub mod state;
pub mod telemetry;
pub mod web;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::exposition::Metrics;
use crate::probe::TcpProbe;
use crate::reload::{ConfigSource, Reloader};
use crate::schedule::resolve::Resolver;
use crate::schedule::shard::Shard;
use crate::schedule::{Scheduler, SchedulerParts};
use crate::state::StateTable;
use crate::telemetry::Telemetry;
use crate::web::security::WebConfig;

/// Run-time settings that come from flags rather than the config file.
pub struct Options {
    /// The global cap on probes in flight.
    pub max_in_flight: usize,
    /// The most probes started per second (0: unlimited).
    pub max_per_second: u32,
    /// Path of the metrics endpoint.
    pub telemetry_path: String,
    /// TLS and basic auth for every endpoint.
    pub web_config: Option<WebConfig>,
    /// The file reloads read; `None`: the embedded default.
    pub config_file: Option<PathBuf>,
    /// Whether SIGHUP reloads the config (the binary's choice; tests reload over HTTP).
    pub reload_on_sighup: bool,
    /// This replica's part of the config (`--shard.*`); `None`: all of it.
    pub shard: Option<Shard>,
    /// The most HTTP requests handled at once; beyond, 503 (0: no cap).
    pub max_requests: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_in_flight: 1024,
            max_per_second: 100_000,
            telemetry_path: "/metrics".to_string(),
            web_config: None,
            config_file: None,
            reload_on_sighup: false,
            shard: None,
            max_requests: 128,
        }
    }
}

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot set up metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Probes `config`'s targets and serves HTTP on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    options: Options,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let source = ConfigSource {
        path: options.config_file,
        shard: options.shard,
    };
    let config = source.part_of(config);
    let table = Arc::new(StateTable::new());
    let telemetry = Arc::new(Telemetry::new()?);
    let metrics = Arc::new(Metrics::new(table.clone(), telemetry.clone()));
    let (ready_tx, ready) = watch::channel(false);
    let tracker = TaskTracker::new();
    let resolver = Arc::new(Resolver::new(
        telemetry.probes.dns_lookups_in_flight.clone(),
    ));
    let parts = SchedulerParts {
        probe: TcpProbe,
        table: table.clone(),
        metrics: telemetry.probes.clone(),
        max_in_flight: options.max_in_flight,
        max_per_second: options.max_per_second,
        resolver,
    };
    let scheduler = Scheduler::start(parts, &config, ready_tx, &tracker, &shutdown);
    let reloader = Arc::new(Reloader::new(
        source,
        config,
        scheduler,
        telemetry.reloads.clone(),
    ));
    if options.reload_on_sighup {
        tracker.spawn(reload_on_sighup(reloader.clone(), shutdown.clone()));
    }
    let web = web::Web {
        metrics,
        table,
        reloader,
        probe: TcpProbe,
        on_demand: web::probe::OnDemand::new(telemetry.probes.dns_lookups_in_flight.clone()),
        web_config: options.web_config,
        ready,
        telemetry_path: options.telemetry_path,
        request_slots: (options.max_requests > 0)
            .then(|| Arc::new(tokio::sync::Semaphore::new(options.max_requests))),
    };
    web::serve(listener, Arc::new(web), shutdown).await;
    tracker.close();
    tracker.wait().await;
    Ok(())
}

async fn reload_on_sighup(reloader: Arc<Reloader<TcpProbe>>, shutdown: CancellationToken) {
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGHUP; reload with POST /-/reload");
            return;
        }
    };
    while shutdown
        .run_until_cancelled(hangups.recv())
        .await
        .flatten()
        .is_some()
    {
        tracing::info!("SIGHUP: reloading the config");
        // A failure is logged and counted by the reloader; the running config stays.
        let _ = reloader.reload();
    }
}
