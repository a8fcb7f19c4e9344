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
//! - [`metrics`]: the table rendered as Prometheus metrics at scrape time, plus self-metrics.
//! - [`http`]: `/metrics`, `/`, `/-/healthy`, `/-/ready`.
//! - [`logging`], [`limits`]: process set-up for the binary.

#![forbid(unsafe_code)]

pub mod config;
pub mod http;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod pacer;
pub mod probe;
pub mod scheduler;
pub mod state;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::probe::TcpProbe;
use crate::scheduler::Scheduler;
use crate::state::StateTable;

/// Run-time settings that come from flags rather than the config file.
#[derive(Clone, Debug)]
pub struct Options {
    /// The global cap on probes in flight.
    pub max_in_flight: usize,
    /// The most probes started per second (0: unlimited).
    pub max_per_second: u32,
    /// Path of the metrics endpoint.
    pub telemetry_path: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_in_flight: 512,
            max_per_second: 20_000,
            telemetry_path: "/metrics".to_string(),
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
    let table = Arc::new(StateTable::new());
    let metrics = Arc::new(Metrics::new(table.clone())?);
    let (ready_tx, ready) = watch::channel(false);
    let tracker = TaskTracker::new();
    let scheduler = Scheduler {
        probe: TcpProbe,
        table,
        metrics: metrics.probes.clone(),
        max_in_flight: options.max_in_flight,
        max_per_second: options.max_per_second,
    };
    scheduler.spawn(&config, ready_tx, &tracker, &shutdown);
    tracker.close();
    let web = http::Web {
        metrics,
        ready,
        telemetry_path: options.telemetry_path,
    };
    http::serve(listener, Arc::new(web), shutdown).await;
    tracker.wait().await;
    Ok(())
}
