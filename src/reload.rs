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
        // Held from reading the file to applying it, so that reloads apply in the order they
        // read: one that read an older file can never apply it after a newer one.
        let mut scheduler = self.scheduler.lock().unwrap_or_else(|e| e.into_inner());
        let config = match self.source.load() {
            Ok(config) => config,
            Err(error) => {
                self.metrics.record(false);
                tracing::error!(%error, "config reload failed; keeping the running config");
                return Err(error);
            }
        };
        scheduler.apply(&config);
        let targets = config.targets.len();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        drop(scheduler);
        self.metrics.record(true);
        tracing::info!(targets, "config reloaded");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Mutex as StdMutex;

    use tokio::sync::watch;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::domain::{Attempts, Reason, State};
    use crate::probe::Outcome;
    use crate::schedule::SchedulerParts;
    use crate::schedule::resolve::Resolver;
    use crate::state::StateTable;
    use crate::telemetry::Telemetry;

    /// Answers "closed" at once: these tests are about configs, not ports.
    #[derive(Clone)]
    struct Closed;

    impl Probe for Closed {
        async fn probe(&self, _: SocketAddr, _: Attempts) -> Outcome {
            Outcome {
                state: State::Closed,
                reason: Reason::ConnRefused,
                connect: None,
                at: std::time::SystemTime::now(),
                service: None,
            }
        }
    }

    fn version(n: usize) -> String {
        let mut text = format!("# version {n}\n");
        for t in 0..300 {
            text.push_str(&format!(
                "[[targets]]\nname = \"t{t}\"\nhost = \"127.0.0.1\"\nports = [{}]\ninterval = \"1h\"\n",
                1 + (t + n) % 1000
            ));
        }
        text
    }

    fn version_of(config: &Config) -> usize {
        let first = config.source.lines().next().unwrap_or_default();
        first.trim_start_matches("# version ").parse().unwrap()
    }

    /// Regression: two reloads at once could apply the older file, as each read and parsed
    /// the file before taking the lock that orders the applies. Each thread writes a newer
    /// version, then reloads: once its reload returns, nothing older may be in force.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reloads_never_apply_an_older_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ports.toml");
        std::fs::write(&path, version(0)).unwrap();
        let telemetry = Telemetry::new().unwrap();
        let table = Arc::new(StateTable::new());
        let parts = SchedulerParts {
            probe: Closed,
            udp: crate::probe::UdpProbe::default(),
            table,
            metrics: telemetry.probes.clone(),
            max_in_flight: 16,
            max_per_second: 0,
            resolver: Arc::new(Resolver::new(
                telemetry.probes.dns_lookups_in_flight.clone(),
            )),
        };
        let source = ConfigSource {
            path: Some(path.clone()),
            shard: None,
        };
        let config = source.load().unwrap();
        let (ready, _) = watch::channel(false);
        let (tracker, shutdown) = (TaskTracker::new(), CancellationToken::new());
        let scheduler = Scheduler::start(parts, &config, ready, &tracker, &shutdown);
        let reloader = Reloader::new(source, config, scheduler, telemetry.reloads.clone());
        let written = StdMutex::new(0usize);
        let runtime = tokio::runtime::Handle::current();
        let stale = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        // A reload starts the loops of new targets on the runtime.
                        let _runtime = runtime.enter();
                        let mut stale = Vec::new();
                        for _ in 0..15 {
                            let mine = {
                                let mut n = written.lock().unwrap();
                                *n += 1;
                                // Written whole, then renamed, as config tools do: a reload
                                // never reads half a file.
                                let next = dir.path().join("next.toml");
                                std::fs::write(&next, version(*n)).unwrap();
                                std::fs::rename(&next, &path).unwrap();
                                *n
                            };
                            reloader.reload().unwrap();
                            let in_force = version_of(&reloader.current());
                            if in_force < mine {
                                stale.push((mine, in_force));
                            }
                        }
                        stale
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .collect::<Vec<_>>()
        });
        shutdown.cancel();
        assert!(
            stale.is_empty(),
            "(written, in force after its reload): {stale:?}"
        );
        assert_eq!(version_of(&reloader.current()), 120);
    }
}
