//! The scheduler: probes every target's ports in background rounds and records the outcomes.
//!
//! Each target runs its own loop: a first round at once (so the exporter is useful quickly),
//! then one round per interval at a phase derived from the target's name, which spreads the
//! targets over the interval the way Prometheus spreads scrapes. A round resolves the host,
//! then probes every (port, address) under one global concurrency cap; a silent port holds
//! one slot, never the round of another target.
//!
//! - [`pacer`]: the rate at which connects start;
//! - [`resolve`]: name lookups, deduplicated and bounded;
//! - [`shard`]: this replica's part of the config.

pub mod pacer;
pub mod resolve;
pub mod shard;

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Target};
use crate::domain::Protocol;
use crate::probe::{Outcome, Probe, UdpProbe};
use crate::schedule::pacer::Pacer;
use crate::schedule::resolve::Resolver;
use crate::state::{RowKey, StateTable};
use crate::telemetry::ProbeMetrics;

/// Starts allowed at once after idle: well below the kernel's loopback backlog of 1000.
const PACER_BURST: u32 = 64;

/// What every target loop shares.
struct Shared<P> {
    /// The probe of TCP targets.
    probe: P,
    /// The probe of UDP targets, with a timing table of its own: the ICMP rate limit's
    /// silences must not raise the drop rates TCP's timeouts are planned by.
    udp: UdpProbe,
    table: Arc<StateTable>,
    metrics: ProbeMetrics,
    /// The global cap on probes in flight.
    slots: Arc<Semaphore>,
    /// The global pace of connection attempts.
    pacer: Pacer,
    resolver: Arc<Resolver>,
}

/// Flips `ready` once every target has finished its first round.
struct FirstRounds {
    remaining: AtomicUsize,
    ready: watch::Sender<bool>,
}

impl FirstRounds {
    fn one_done(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.ready.send_replace(true);
        }
    }
}

/// The parts a scheduler works with.
pub struct SchedulerParts<P> {
    pub probe: P,
    /// The UDP targets' probe, learning on a timing table of its own.
    pub udp: UdpProbe,
    pub table: Arc<StateTable>,
    pub metrics: ProbeMetrics,
    /// The global cap on probes in flight.
    pub max_in_flight: usize,
    /// The most probes started per second (0: unlimited).
    pub max_per_second: u32,
    pub resolver: Arc<Resolver>,
}

/// The running scheduler: one loop per target, which [`Scheduler::apply`] diffs against a new
/// config instead of restarting.
pub struct Scheduler<P> {
    shared: Arc<Shared<P>>,
    loops: HashMap<String, TargetLoop>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    /// Every target's rounds are aligned to this instant plus its phase, so that a target whose
    /// loop is restarted or updated keeps its place in the interval.
    epoch: Instant,
}

/// Handle to one target's loop.
struct TargetLoop {
    updates: watch::Sender<Arc<Target>>,
    stop: CancellationToken,
}

/// How a target loop starts.
enum FirstRound {
    /// At start-up: probe everything at once and report to the readiness countdown.
    Startup(Arc<FirstRounds>),
    /// Added by a reload: probe everything at once.
    Added,
}

impl<P: Probe> Scheduler<P> {
    /// Starts one loop per target on `tracker`; they run until `shutdown` is cancelled.
    /// `ready` becomes true once every target has been probed once.
    pub fn start(
        parts: SchedulerParts<P>,
        config: &Config,
        ready: watch::Sender<bool>,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Scheduler<P> {
        parts.table.set_targets(&config.targets);
        let shared = Arc::new(Shared {
            probe: parts.probe,
            udp: parts.udp,
            table: parts.table,
            metrics: parts.metrics,
            slots: Arc::new(Semaphore::new(parts.max_in_flight.max(1))),
            pacer: Pacer::new(parts.max_per_second, PACER_BURST),
            resolver: parts.resolver,
        });
        if config.targets.is_empty() {
            ready.send_replace(true);
        }
        let first_rounds = Arc::new(FirstRounds {
            remaining: AtomicUsize::new(config.targets.len()),
            ready,
        });
        let mut scheduler = Scheduler {
            shared,
            loops: HashMap::new(),
            tracker: tracker.clone(),
            shutdown: shutdown.clone(),
            epoch: Instant::now(),
        };
        for target in &config.targets {
            scheduler.spawn_loop(target, FirstRound::Startup(first_rounds.clone()));
        }
        scheduler
    }

    /// Moves to `config` without a restart: loops of removed targets stop and their rows go;
    /// changed targets get their new settings (new ports are probed at once, the others keep
    /// their state and schedule); new targets start with a round at once.
    pub fn apply(&mut self, config: &Config) {
        self.shared.table.set_targets(&config.targets);
        self.loops.retain(|name, target_loop| {
            let kept = config.targets.iter().any(|t| &t.name == name);
            if !kept {
                target_loop.stop.cancel();
            }
            kept
        });
        for target in &config.targets {
            match self.loops.get(&target.name) {
                Some(target_loop) => {
                    target_loop.updates.send_if_modified(|current| {
                        let changed = **current != *target;
                        if changed {
                            *current = Arc::new(target.clone());
                        }
                        changed
                    });
                }
                None => self.spawn_loop(target, FirstRound::Added),
            }
        }
    }

    fn spawn_loop(&mut self, target: &Target, first_round: FirstRound) {
        let (updates, receiver) = watch::channel(Arc::new(target.clone()));
        let stop = self.shutdown.child_token();
        let shared = self.shared.clone();
        let epoch = self.epoch;
        let until = stop.clone();
        self.tracker.spawn(async move {
            until
                .run_until_cancelled(run_target(shared, receiver, first_round, epoch))
                .await;
        });
        self.loops
            .insert(target.name.clone(), TargetLoop { updates, stop });
    }
}

async fn run_target<P: Probe>(
    shared: Arc<Shared<P>>,
    mut updates: watch::Receiver<Arc<Target>>,
    first_round: FirstRound,
    epoch: Instant,
) {
    let mut target = updates.borrow_and_update().clone();
    run_round(&shared, &target, &target.ports, Instant::now()).await;
    if let FirstRound::Startup(first_rounds) = first_round {
        first_rounds.one_done();
    }
    let mut ticks = ticker(&target, epoch);
    loop {
        tokio::select! {
            scheduled = ticks.tick() => {
                run_round(&shared, &target, &target.ports, scheduled).await;
            }
            changed = updates.changed() => {
                if changed.is_err() {
                    return; // the scheduler is gone
                }
                let new = updates.borrow_and_update().clone();
                if new.interval != target.interval {
                    ticks = ticker(&new, epoch);
                }
                let added: Vec<u16> = new
                    .ports
                    .iter()
                    .copied()
                    .filter(|p| target.ports.binary_search(p).is_err())
                    .collect();
                target = new;
                if !added.is_empty() {
                    run_round(&shared, &target, &added, Instant::now()).await;
                }
            }
        }
    }
}

/// Ticks at `epoch + phase + k * interval`, starting with the first of those still ahead.
fn ticker(target: &Target, epoch: Instant) -> tokio::time::Interval {
    let first = epoch + phase(target);
    let now = Instant::now();
    let start = if first >= now {
        first
    } else {
        let interval_ns = target.interval.as_nanos().max(1);
        let behind = (now - first).as_nanos();
        let periods = behind.div_ceil(interval_ns);
        first + Duration::from_nanos(u64::try_from(periods * interval_ns).unwrap_or(u64::MAX))
    };
    let mut ticks = tokio::time::interval_at(start, target.interval);
    // A round that overran its interval is followed by the next at once, never by a burst.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticks
}

/// A stable offset in `[0, interval)` for the target, so that restarts keep the spread.
fn phase(target: &Target) -> Duration {
    let mut hasher = DefaultHasher::new();
    target.name.hash(&mut hasher);
    let interval_ns = target.interval.as_nanos().max(1);
    Duration::from_nanos((u128::from(hasher.finish()) % interval_ns) as u64)
}

/// Probes `ports` of `target` on every address its host resolves to.
async fn run_round<P: Probe>(
    shared: &Arc<Shared<P>>,
    target: &Arc<Target>,
    ports: &[u16],
    scheduled: Instant,
) {
    // How late the round itself began (a busy runtime fires ticks late).
    let round_late = Instant::now().saturating_duration_since(scheduled);
    let Some(addresses) = resolve(shared, target).await else {
        let at = SystemTime::now();
        for &port in ports {
            let key = RowKey { port, ip: None };
            shared
                .table
                .record(&target.name, key, Outcome::dns_failure(at));
        }
        return;
    };
    let mut probes = JoinSet::new();
    let pairs = (0..ports.len() * addresses.len())
        .map(|i| (ports[i / addresses.len()], addresses[i % addresses.len()]));
    // The round's waits for slots so far: each probe after a wait starts that much later than
    // planned, so its lateness counts every wait before it, not only its own.
    let mut slot_waits = Duration::ZERO;
    for (port, ip) in pairs {
        // A slot first, then the pacer: connects leave spaced even when slots free up at once.
        let waiting_since = Instant::now();
        let slot = shared
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        slot_waits += waiting_since.elapsed();
        // Lateness: the round's own delay plus its waits for slots. The pacer's spacing is the
        // plan, not lateness.
        let lateness = round_late + slot_waits;
        shared.pacer.wait().await;
        shared
            .metrics
            .start_lateness
            .observe(lateness.as_secs_f64());
        let shared = shared.clone();
        let target = target.clone();
        probes.spawn(async move {
            let _slot = slot;
            shared.metrics.in_flight.inc();
            let addr = SocketAddr::new(ip, port);
            let outcome = match target.protocol {
                Protocol::Tcp => {
                    shared
                        .probe
                        .probe_service(addr, target.attempts(), target.service.as_deref())
                        .await
                }
                Protocol::Udp => {
                    shared
                        .udp
                        .probe_service(addr, target.attempts(), target.service.as_deref())
                        .await
                }
            };
            shared.metrics.in_flight.dec();
            shared.metrics.count_probe(outcome.state);
            let key = RowKey { port, ip: Some(ip) };
            shared.table.record(&target.name, key, outcome);
        });
        // Reap finished probes as we go so a large range does not pile up finished tasks.
        while probes.try_join_next().is_some() {}
    }
    while probes.join_next().await.is_some() {}
}

/// Resolves the target's host to all its addresses (A and AAAA) of the family probed,
/// recording the lookup in the table; `None` when it does not resolve within the target's
/// budget, or to no address of that family.
async fn resolve<P: Probe>(shared: &Shared<P>, target: &Target) -> Option<Vec<IpAddr>> {
    if let Ok(ip) = target.host.parse::<IpAddr>() {
        // The config makes sure an IP literal is of the family probed.
        return Some(vec![ip]);
    }
    let budget = target.attempts().budget();
    let started = Instant::now();
    let answer = shared.resolver.resolve(&target.host, budget).await;
    let addresses = match answer.and_then(|ips| resolve::of_family(ips, target.family())) {
        Ok(ips) => Some(ips),
        Err(error) => {
            tracing::debug!(target = %target.name, host = %target.host, %error, "lookup failed");
            None
        }
    };
    if addresses.is_none() {
        shared.metrics.dns_lookup_failures.inc();
    }
    shared.table.record_lookup(
        &target.name,
        &target.host,
        addresses.as_deref(),
        started.elapsed(),
    );
    addresses
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Attempts, Reason, State};
    use crate::telemetry::Telemetry;
    use std::sync::Mutex;

    /// A probe that answers after a fixed delay per port and logs when each probe started.
    #[derive(Clone, Default)]
    struct FakeProbe {
        started: Arc<Mutex<Vec<(u16, Instant)>>>,
        in_flight: Arc<AtomicUsize>,
        most_in_flight: Arc<AtomicUsize>,
    }

    impl Probe for FakeProbe {
        async fn probe(&self, addr: SocketAddr, attempts: Attempts) -> Outcome {
            let timeout = attempts.timeout;
            self.started
                .lock()
                .unwrap()
                .push((addr.port(), Instant::now()));
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(now, Ordering::SeqCst);
            // Port 1 is silent: it uses its whole timeout.
            let (delay, state) = match addr.port() {
                1 => (timeout, State::Filtered),
                _ => (Duration::from_millis(100), State::Open),
            };
            tokio::time::sleep(delay).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            Outcome {
                state,
                reason: Reason::Unknown,
                connect: None,
                at: SystemTime::now(),
                service: None,
            }
        }
    }

    fn start(
        text: &str,
        max_in_flight: usize,
    ) -> (
        FakeProbe,
        Arc<StateTable>,
        watch::Receiver<bool>,
        Scheduler<FakeProbe>,
    ) {
        let config = Config::parse(text, "test").unwrap();
        let table = Arc::new(StateTable::new());
        let metrics = Telemetry::new().unwrap();
        let probe = FakeProbe::default();
        let (ready_tx, ready) = watch::channel(false);
        let parts = SchedulerParts {
            probe: probe.clone(),
            udp: crate::probe::UdpProbe::default(),
            table: table.clone(),
            metrics: metrics.probes.clone(),
            max_in_flight,
            max_per_second: 0,
            resolver: Arc::new(Resolver::new(metrics.probes.dns_lookups_in_flight.clone())),
        };
        let scheduler = Scheduler::start(
            parts,
            &config,
            ready_tx,
            &TaskTracker::new(),
            &CancellationToken::new(),
        );
        (probe, table, ready, scheduler)
    }

    fn starts_of(probe: &FakeProbe, port: u16) -> Vec<Instant> {
        let log = probe.started.lock().unwrap();
        log.iter()
            .filter(|(p, _)| *p == port)
            .map(|(_, t)| *t)
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn each_port_is_probed_once_per_interval() {
        let (probe, table, mut ready, _scheduler) = start(
            "[[targets]]\nhost = \"127.0.0.1\"\nports = [2, 3]\ninterval = \"10s\"",
            8,
        );
        ready.wait_for(|r| *r).await.unwrap();
        let begin = Instant::now();
        tokio::time::sleep(Duration::from_secs(95)).await;
        let starts = starts_of(&probe, 2);
        // The first round at once, then one per interval: 1 + 9 or 10 in 95 s.
        assert!((10..=11).contains(&starts.len()), "{}", starts.len());
        for pair in starts[1..].windows(2) {
            assert_eq!(pair[1] - pair[0], Duration::from_secs(10));
        }
        assert!(starts[0] < begin);
        assert_eq!(table.view(Clone::clone)["127.0.0.1"].rows.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_port_does_not_delay_other_targets() {
        let (probe, _table, mut ready, _scheduler) = start(
            concat!(
                "[defaults]\ntimeout = \"5s\"\nretries = 0\ninterval = \"20s\"\n",
                "[[targets]]\nname = \"silent\"\nhost = \"127.0.0.1\"\nports = [1]\n",
                "[[targets]]\nname = \"busy\"\nhost = \"127.0.0.2\"\nports = [2, 3, 4, 5]\n",
            ),
            2,
        );
        let begin = Instant::now();
        ready.wait_for(|r| *r).await.unwrap();
        // Two slots, one held by the silent port for 5 s: the other target's four ports
        // (0.1 s each) still pass one after another through the free slot.
        for port in 2..=5 {
            let first = starts_of(&probe, port)[0];
            assert!(first - begin < Duration::from_millis(500), "port {port}");
        }
        // Ready only once the silent port's round finished too.
        assert!(Instant::now() - begin >= Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn the_concurrency_cap_holds() {
        let (probe, _table, mut ready, _scheduler) = start(
            "[defaults]\nretries = 0\n[[targets]]\nhost = \"127.0.0.1\"\nports = [\"2-9\"]",
            3,
        );
        ready.wait_for(|r| *r).await.unwrap();
        assert_eq!(probe.started.lock().unwrap().len(), 8);
        assert_eq!(probe.most_in_flight.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn lateness_counts_every_wait_for_a_slot_before_a_probe() {
        let config = Config::parse(
            "[defaults]\nretries = 0\n[[targets]]\nhost = \"127.0.0.1\"\nports = [\"2-5\"]",
            "test",
        )
        .unwrap();
        let telemetry = Telemetry::new().unwrap();
        let (ready_tx, mut ready) = watch::channel(false);
        let parts = SchedulerParts {
            probe: FakeProbe::default(),
            udp: crate::probe::UdpProbe::default(),
            table: Arc::new(StateTable::new()),
            metrics: telemetry.probes.clone(),
            max_in_flight: 1,
            max_per_second: 0,
            resolver: Arc::new(Resolver::new(
                telemetry.probes.dns_lookups_in_flight.clone(),
            )),
        };
        let _scheduler = Scheduler::start(
            parts,
            &config,
            ready_tx,
            &TaskTracker::new(),
            &CancellationToken::new(),
        );
        ready.wait_for(|r| *r).await.unwrap();
        // One slot, four probes of 100 ms: planned at once, they start 0, 0.1, 0.2 and 0.3 s
        // late (each one's own wait is only 0.1 s).
        let lateness = &telemetry.probes.start_lateness;
        assert_eq!(lateness.get_sample_count(), 4);
        let sum = lateness.get_sample_sum();
        assert!((0.55..0.65).contains(&sum), "{sum}");
    }

    #[tokio::test(start_paused = true)]
    async fn apply_probes_only_what_is_new_and_stops_what_is_gone() {
        let text = "[defaults]\ninterval = \"10s\"\n[[targets]]\nname = \"a\"\nhost = \"127.0.0.1\"\nports = [2]\n[[targets]]\nname = \"b\"\nhost = \"127.0.0.2\"\nports = [4]";
        let (probe, _table, mut ready, mut scheduler) = start(text, 8);
        ready.wait_for(|r| *r).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (a_before, b_before) = (starts_of(&probe, 2).len(), starts_of(&probe, 4).len());
        let reloaded = Instant::now();
        let changed = text
            .replace("ports = [2]", "ports = [2, 3]")
            .replace("name = \"b\"", "name = \"c\"");
        scheduler.apply(&Config::parse(&changed, "test").unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The new port and the new target at once; the old port not again until its tick.
        assert_eq!(starts_of(&probe, 3), [reloaded]);
        assert_eq!(starts_of(&probe, 2).len(), a_before);
        assert_eq!(
            starts_of(&probe, 4).len(),
            b_before + 1,
            "c probes port 4 at once"
        );
        tokio::time::sleep(Duration::from_secs(30)).await;
        // "b" is gone: from now on only "c" probes port 4, once per interval; "a" keeps going.
        let a_ticks = starts_of(&probe, 2);
        assert!(a_ticks.len() >= a_before + 2, "{}", a_ticks.len());
        let port4 = starts_of(&probe, 4);
        let after: Vec<_> = port4.iter().filter(|t| **t > reloaded).collect();
        assert!((3..=4).contains(&after.len()), "{after:?}");
    }

    #[test]
    fn phases_are_stable_and_inside_the_interval() {
        let config = Config::parse(
            "[[targets]]\nhost = \"a\"\nports = [1]\n[[targets]]\nhost = \"b\"\nports = [1]",
            "t",
        )
        .unwrap();
        let phases: Vec<_> = config.targets.iter().map(phase).collect();
        assert_eq!(phases, config.targets.iter().map(phase).collect::<Vec<_>>());
        assert!(phases.iter().all(|p| *p < config.targets[0].interval));
        assert_ne!(phases[0], phases[1]);
    }
}
