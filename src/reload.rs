//! Config reloads (SIGHUP, `POST /-/reload`): parse and validate the whole file first, then
//! diff the running scheduler against it; a bad file keeps the running config.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use crate::config::{Config, ConfigError};
use crate::probe::Probe;
use crate::schedule::Scheduler;
use crate::schedule::shard::Shard;
use crate::telemetry::ReloadMetrics;

/// Where the config comes from and which part of it this replica probes: the one loader of
/// start-up and reloads.
#[derive(Clone, Debug, Default)]
pub struct ConfigSource {
    /// The config file; `None` for the embedded default, which a reload keeps.
    pub path: Option<PathBuf>,
    /// This replica's part (`--shard.*`); `None`: all of it.
    pub shard: Option<Shard>,
}

impl ConfigSource {
    /// Loads the config and keeps this replica's part of it.
    pub fn load(&self) -> Result<Config, ConfigError> {
        Config::load(self.path.as_deref()).map(|config| self.part_of(config))
    }

    /// This replica's part of `config`.
    pub fn part_of(&self, config: Config) -> Config {
        match self.shard {
            Some(shard) => shard.apply(config),
            None => config,
        }
    }
}

/// Holds the config in force and applies new ones.
pub struct Reloader<P> {
    source: ConfigSource,
    current: RwLock<Arc<Config>>,
    scheduler: Mutex<Scheduler<P>>,
    metrics: ReloadMetrics,
}

impl<P: Probe> Reloader<P> {
    /// `config` is the one in force, already [`ConfigSource::part_of`] this replica.
    pub fn new(
        source: ConfigSource,
        config: Config,
        scheduler: Scheduler<P>,
        metrics: ReloadMetrics,
    ) -> Reloader<P> {
        Reloader {
            source,
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
        let config = match self.source.load() {
            Ok(config) => config,
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
