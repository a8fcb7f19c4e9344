//! port_exporter: a Prometheus exporter that tells, per host, port and address, whether a TCP
//! port is open, closed or filtered, and whether that is what the operator expects.
//!
//! # Layout
//! Data flows one way: config → schedule → probe → state table → exposition and web. Each
//! module below imports only modules listed before it.
//!
//! | module | concern |
//! |---|---|
//! | [`domain`] | the shared words: [`domain::State`], [`domain::Reason`], [`domain::Expect`], [`domain::Attempts`] and its budget, [`domain::Service`], [`domain::TlsMode`] |
//! | [`families`] | every metric family's name, HELP, type and labels, defined once |
//! | [`config`] | the TOML file: raw serde structs, validated into [`config::Config`]; ports, durations, address selection, service checks, the `/probe` allow list |
//! | [`probe`] | one probe of one address: the [`probe::Probe`] trait, the TCP connect probe, errno classification, and on an open port the service check ([`probe::service`]: what speaks, its TLS certificate) |
//! | [`telemetry`] | the exporter's own metrics (a registry the layers above update) |
//! | [`state`] | the state table, the single source of truth, read through [`state::StateTable::view`] |
//! | [`schedule`] | background rounds per target under a global cap, paced; name lookups; sharding |
//! | [`exposition`] | the one text writer (0.0.4 and OpenMetrics), the table's rendering and its cache |
//! | [`reload`] | the one config loader of start-up and reloads, and hot reload as a diff |
//! | [`web`] | the HTTP server: connection bounds, routes, `/probe`, the status page, TLS and basic auth |
//! | [`logging`], [`limits`] | process set-up for the binary |
//!
//! The binary (`src/main.rs`) turns flags into [`Options`] and calls [`run`]; tests start the
//! same server on port 0 the same way.

#![forbid(unsafe_code)]

pub mod config;
pub mod domain;
pub mod exposition;
pub mod families;
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
use crate::domain::Protocol;
use crate::exposition::Metrics;
use crate::probe::{TcpProbe, UdpProbe};
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
    /// The most HTTP connections open at once; more are closed at once.
    pub max_connections: usize,
    /// How long an HTTP connection may make no progress.
    pub timeouts: web::Timeouts,
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
            max_connections: 512,
            timeouts: web::Timeouts::default(),
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
///
/// ```no_run
/// use port_exporter::{Options, config::Config, run};
/// use tokio_util::sync::CancellationToken;
///
/// # async fn serve() -> Result<(), Box<dyn std::error::Error>> {
/// let config = Config::load(None)?; // the embedded default: localhost's common ports
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9799").await?;
/// let shutdown = CancellationToken::new();
/// run(config, listener, Options::default(), shutdown).await?;
/// # Ok(())
/// # }
/// ```
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
    let probe = TcpProbe::default();
    let udp = UdpProbe::default();
    let timings = vec![
        (Protocol::Tcp, probe.timings().clone()),
        (Protocol::Udp, udp.timings().clone()),
    ];
    let metrics = Arc::new(Metrics::new(table.clone(), timings, telemetry.clone()));
    let (ready_tx, ready) = watch::channel(false);
    let tracker = TaskTracker::new();
    let resolver = Arc::new(Resolver::new(
        telemetry.probes.dns_lookups_in_flight.clone(),
    ));
    let parts = SchedulerParts {
        probe,
        udp,
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
        // Its own: what on-demand probes learn never changes the scheduler's timeouts.
        probe: TcpProbe::default(),
        on_demand: web::probe::OnDemand::new(telemetry.probes.dns_lookups_in_flight.clone()),
        web_config: options.web_config,
        ready,
        telemetry_path: options.telemetry_path,
        request_slots: (options.max_requests > 0)
            .then(|| Arc::new(tokio::sync::Semaphore::new(options.max_requests))),
        max_connections: options.max_connections,
        timeouts: options.timeouts,
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
