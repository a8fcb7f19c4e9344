//! Name resolution with deduplication and bounds on blocking lookups and on names tracked.
//!
//! getaddrinfo runs on tokio's blocking pool, where it cannot be cancelled: a caller that gives
//! up leaves its thread waiting for the resolver (5 s per attempt and server by default). With
//! a dead resolver and many names, one blocking thread per lookup per round would pile up. So
//! lookups of the same name share one getaddrinfo call (and its answer for a moment after),
//! and a resolver runs at most [`Limits::lookups`] calls at once; callers wait for an answer
//! only as long as their own budget. It also tracks at most [`Limits::names`] names (each a
//! map entry and a task waiting for its call): a new name beyond them is refused at once.
//!
//! The scheduler has one resolver ([`Limits::SCHEDULED`]); `/probe` has another, smaller one,
//! so that names asked for on demand cannot take the configured targets' lookups.

use std::collections::HashMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::IntGauge;
use tokio::sync::{Semaphore, watch};

use crate::config::IpProtocol;

/// The most getaddrinfo calls the scheduler's resolver runs at once.
pub const MAX_BLOCKING_LOOKUPS: usize = 32;
/// The most names the scheduler's resolver tracks at once: far more than the distinct host
/// names of a config (each target's loop looks up one name at a time); it bounds what reloads
/// that swap names while the resolver is dead leave waiting.
pub const MAX_SCHEDULED_NAMES: usize = 65_536;
/// How long an answer is shared with later callers: targets of the same host whose rounds
/// start together share one lookup.
const SHARE_ANSWER_FOR: Duration = Duration::from_secs(1);

/// What one resolver may hold at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// getaddrinfo calls running at once; each holds a blocking thread until it returns.
    pub lookups: usize,
    /// Names tracked at once: looked up, waiting for one of the `lookups`, or (while there is
    /// room) answered less than a second ago. A new name beyond them is refused at once.
    pub names: usize,
}

impl Limits {
    /// The scheduler's resolver.
    pub const SCHEDULED: Limits = Limits {
        lookups: MAX_BLOCKING_LOOKUPS,
        names: MAX_SCHEDULED_NAMES,
    };
}

/// Why a name did not resolve.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("{0}")]
    Failed(String),
    #[error("the name has no addresses")]
    NoAddresses,
    /// The name resolved, but to no address of the family probed (`ip_protocol`).
    #[error("the name has no {0} addresses")]
    NoAddressesOf(IpProtocol),
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    /// The resolver tracks as many names as it may; nothing was looked up.
    #[error("{0} names are being looked up already, the most at once")]
    Busy(usize),
}

type Answer = Result<Vec<IpAddr>, LookupError>;

/// Shared resolver state.
pub struct Resolver {
    limits: Limits,
    slots: Arc<Semaphore>,
    /// Lookups running, waiting for a slot, or recently answered, by name.
    lookups: Mutex<HashMap<String, watch::Receiver<Option<Answer>>>>,
    in_flight: IntGauge,
}

impl Resolver {
    /// The scheduler's resolver ([`Limits::SCHEDULED`]); `in_flight` counts the getaddrinfo
    /// calls running (or waiting for a slot).
    pub fn new(in_flight: IntGauge) -> Resolver {
        Resolver::with_limits(Limits::SCHEDULED, in_flight)
    }

    /// A resolver that holds at most `limits`; `in_flight` as for [`Resolver::new`].
    pub fn with_limits(limits: Limits, in_flight: IntGauge) -> Resolver {
        Resolver {
            limits,
            slots: Arc::new(Semaphore::new(limits.lookups)),
            lookups: Mutex::new(HashMap::new()),
            in_flight,
        }
    }

    /// All addresses of `host` (A and AAAA), sorted, or why not, within `budget`.
    pub async fn resolve(self: &Arc<Self>, host: &str, budget: Duration) -> Answer {
        let mut answer = self.lookup(host)?;
        let waited = tokio::time::timeout(budget, answer.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(answer)) => match &*answer {
                Some(answer) => answer.clone(),
                None => Err(LookupError::Failed("the lookup gave no answer".into())),
            },
            Ok(Err(_closed)) => Err(LookupError::Failed("the lookup was abandoned".into())),
            Err(_elapsed) => Err(LookupError::TimedOut(budget)),
        }
    }

    /// The running or recent lookup of `host`, or a new one if there is room for its name.
    fn lookup(
        self: &Arc<Self>,
        host: &str,
    ) -> Result<watch::Receiver<Option<Answer>>, LookupError> {
        let mut lookups = self.lookups.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(running) = lookups.get(host) {
            return Ok(running.clone());
        }
        if lookups.len() >= self.limits.names {
            // Answered names only wait to be shared: they make room first.
            lookups.retain(|_, answer| answer.borrow().is_none());
            if lookups.len() >= self.limits.names {
                return Err(LookupError::Busy(lookups.len()));
            }
        }
        let (answer, receiver) = watch::channel(None);
        lookups.insert(host.to_string(), receiver.clone());
        drop(lookups);
        let this = self.clone();
        let host = host.to_string();
        let ours = receiver.clone();
        tokio::spawn(async move {
            this.in_flight.inc();
            let slot = this.slots.clone().acquire_owned().await;
            let name = host.clone();
            // The slot goes with the blocking call: it is freed when getaddrinfo returns,
            // however long that takes, so blocking threads stay bounded.
            let result = tokio::task::spawn_blocking(move || {
                let _slot = slot;
                getaddrinfo(&name)
            })
            .await
            .unwrap_or_else(|e| Err(LookupError::Failed(e.to_string())));
            this.in_flight.dec();
            answer.send_replace(Some(result));
            tokio::time::sleep(SHARE_ANSWER_FOR).await;
            let mut lookups = this.lookups.lock().unwrap_or_else(|e| e.into_inner());
            if lookups.get(&host).is_some_and(|r| r.same_channel(&ours)) {
                lookups.remove(&host);
            }
        });
        Ok(receiver)
    }
}

/// The addresses of `ips` that `family` admits; none is a lookup failure, as a name that does
/// not resolve.
pub fn of_family(ips: Vec<IpAddr>, family: IpProtocol) -> Answer {
    let admitted: Vec<IpAddr> = ips.into_iter().filter(|ip| family.admits(*ip)).collect();
    if admitted.is_empty() {
        return Err(LookupError::NoAddressesOf(family));
    }
    Ok(admitted)
}

fn getaddrinfo(host: &str) -> Answer {
    let addrs = (host, 0)
        .to_socket_addrs()
        .map_err(|e| LookupError::Failed(e.to_string()))?;
    let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
    ips.sort_unstable();
    ips.dedup();
    if ips.is_empty() {
        return Err(LookupError::NoAddresses);
    }
    Ok(ips)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver() -> Arc<Resolver> {
        Arc::new(Resolver::new(IntGauge::new("t", "t").unwrap()))
    }

    #[tokio::test]
    async fn names_from_the_hosts_file_resolve_and_literals_pass_through() {
        let resolver = resolver();
        let localhost = resolver
            .resolve("localhost", Duration::from_secs(5))
            .await
            .unwrap();
        assert!(
            localhost.contains(&"127.0.0.1".parse().unwrap()),
            "{localhost:?}"
        );
        let literal = resolver
            .resolve("127.0.0.9", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(literal, ["127.0.0.9".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn only_addresses_of_the_family_probed_are_kept() {
        let ips: Vec<IpAddr> = ["127.0.0.1", "::1", "10.0.0.1"]
            .iter()
            .map(|ip| ip.parse().unwrap())
            .collect();
        let v4 = of_family(ips.clone(), IpProtocol::Ipv4).unwrap();
        assert_eq!(v4, [ips[0], ips[2]]);
        assert_eq!(of_family(ips.clone(), IpProtocol::Ipv6), Ok(vec![ips[1]]));
        assert_eq!(of_family(ips.clone(), IpProtocol::Both), Ok(ips));
        let error = of_family(v4, IpProtocol::Ipv6).unwrap_err();
        assert_eq!(error, LookupError::NoAddressesOf(IpProtocol::Ipv6));
        assert_eq!(error.to_string(), "the name has no IPv6 addresses");
    }

    #[tokio::test]
    async fn concurrent_lookups_of_a_name_share_one_call() {
        let resolver = resolver();
        let first = resolver.lookup("localhost").unwrap();
        for _ in 0..20 {
            assert!(resolver.lookup("localhost").unwrap().same_channel(&first));
        }
        // Another name gets a call of its own (a numeric one: no query leaves the machine).
        assert!(!resolver.lookup("127.0.0.1").unwrap().same_channel(&first));
        assert_eq!(resolver.lookups.lock().unwrap().len(), 2);
        assert!(
            resolver
                .resolve("localhost", Duration::from_secs(5))
                .await
                .is_ok()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_waits_only_its_budget() {
        let resolver = resolver();
        // Hold every slot, as a dead resolver would: the lookup cannot start.
        let _held = resolver
            .slots
            .clone()
            .acquire_many_owned(MAX_BLOCKING_LOOKUPS as u32)
            .await;
        let answer = resolver
            .resolve("localhost", Duration::from_millis(300))
            .await;
        assert_eq!(
            answer,
            Err(LookupError::TimedOut(Duration::from_millis(300)))
        );
        assert_eq!(
            resolver.in_flight.get(),
            1,
            "one lookup waits for a slot, no more"
        );
        let again = resolver
            .resolve("localhost", Duration::from_millis(300))
            .await;
        assert!(again.is_err());
        assert_eq!(
            resolver.in_flight.get(),
            1,
            "a second caller joins the waiting lookup"
        );
    }

    #[tokio::test]
    async fn names_beyond_the_bound_are_refused_at_once_and_answered_ones_make_room() {
        let limits = Limits {
            lookups: 1,
            names: 2,
        };
        let resolver = Arc::new(Resolver::with_limits(
            limits,
            IntGauge::new("t", "t").unwrap(),
        ));
        // Hold the one slot, as a dead resolver would. IP literals: getaddrinfo answers them
        // without a query.
        let held = resolver.slots.clone().acquire_owned().await.unwrap();
        let budget = Duration::from_millis(100);
        for name in ["127.0.0.1", "127.0.0.2"] {
            assert_eq!(
                resolver.resolve(name, budget).await,
                Err(LookupError::TimedOut(budget))
            );
        }
        assert_eq!(resolver.in_flight.get(), 2);
        let started = std::time::Instant::now();
        assert_eq!(
            resolver.resolve("127.0.0.3", budget).await,
            Err(LookupError::Busy(2))
        );
        assert!(started.elapsed() < budget, "refused at once");
        assert_eq!(resolver.lookups.lock().unwrap().len(), 2);
        // A name tracked already is joined, not refused.
        assert_eq!(
            resolver.resolve("127.0.0.2", budget).await,
            Err(LookupError::TimedOut(budget))
        );
        // Answered names make room for new ones while they wait to be shared.
        drop(held);
        let long = Duration::from_secs(5);
        let two: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(resolver.resolve("127.0.0.2", long).await, Ok(vec![two]));
        let one: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(resolver.resolve("127.0.0.1", long).await, Ok(vec![one]));
        let three: IpAddr = "127.0.0.3".parse().unwrap();
        assert_eq!(resolver.resolve("127.0.0.3", long).await, Ok(vec![three]));
        assert!(resolver.lookups.lock().unwrap().len() <= limits.names);
        assert_eq!(resolver.in_flight.get(), 0);
    }
}
