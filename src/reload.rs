//! Config reloads (SIGHUP, `POST /-/reload`): parse and validate the whole file first, then
//! diff the running scheduler against it; a bad file keeps the running config.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use crate::config::{Config, ConfigError};
use crate::probe::Probe;
use crate::schedule::Scheduler;
use crate::schedule::shard::Shard;
use crate::telemetry::ReloadMetrics;

/// Holds the config in force and applies new ones.
pub struct Reloader<P> {
    /// The config file; `None` for the embedded default, which a reload keeps.
    path: Option<PathBuf>,
    /// Applied to every config loaded.
    shard: Option<Shard>,
    current: RwLock<Arc<Config>>,
    scheduler: Mutex<Scheduler<P>>,
    metrics: ReloadMetrics,
}

impl<P: Probe> Reloader<P> {
    pub fn new(
        path: Option<PathBuf>,
        shard: Option<Shard>,
        config: Config,
        scheduler: Scheduler<P>,
        metrics: ReloadMetrics,
    ) -> Reloader<P> {
        Reloader {
            path,
            shard,
            current: RwLock::new(Arc::new(config)),
            scheduler: Mutex::new(scheduler),
            metrics,
        }
    }

    /// The config in force.
    pub fn current(&self) -> Arc<Config> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-reads the config file and applies it; on error the running config stays.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let loaded = Config::load(self.path.as_deref());
        let config = match loaded {
            Ok(config) => match self.shard {
                Some(shard) => shard.apply(config),
                None => config,
            },
            Err(error) => {
                self.metrics.record(false);
                tracing::error!(%error, "config reload failed; keeping the running config");
                return Err(error);
            }
        };
        // Both locks in this order everywhere, so concurrent reloads apply in one order.
        let mut scheduler = self.scheduler.lock().unwrap_or_else(|e| e.into_inner());
        scheduler.apply(&config);
        let targets = config.targets.len();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        drop(scheduler);
        self.metrics.record(true);
        tracing::info!(targets, "config reloaded");
        Ok(())
    }
}
