//! Name resolution with deduplication and a bound on blocking lookups.
//!
//! getaddrinfo runs on tokio's blocking pool, where it cannot be cancelled: a caller that gives
//! up leaves its thread waiting for the resolver (5 s per attempt and server by default). With
//! a dead resolver and many names, one blocking thread per lookup per round would pile up. So
//! lookups of the same name share one getaddrinfo call (and its answer for a moment after),
//! and at most [`MAX_BLOCKING_LOOKUPS`] calls run at once; callers wait for an answer only as
//! long as their own budget.

use std::collections::HashMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::IntGauge;
use tokio::sync::{Semaphore, watch};

/// The most getaddrinfo calls running at once.
pub const MAX_BLOCKING_LOOKUPS: usize = 32;
/// How long an answer is shared with later callers: targets of the same host whose rounds
/// start together share one lookup.
const SHARE_ANSWER_FOR: Duration = Duration::from_secs(1);

/// Why a name did not resolve.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("{0}")]
    Failed(String),
    #[error("the name has no addresses")]
    NoAddresses,
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

type Answer = Result<Vec<IpAddr>, LookupError>;

/// Shared resolver state.
pub struct Resolver {
    slots: Arc<Semaphore>,
    /// Lookups running or recently answered, by name.
    lookups: Mutex<HashMap<String, watch::Receiver<Option<Answer>>>>,
    in_flight: IntGauge,
}

impl Resolver {
    /// `in_flight` counts the getaddrinfo calls running (or waiting for a slot).
    pub fn new(in_flight: IntGauge) -> Resolver {
        Resolver {
            slots: Arc::new(Semaphore::new(MAX_BLOCKING_LOOKUPS)),
            lookups: Mutex::new(HashMap::new()),
            in_flight,
        }
    }

    /// All addresses of `host` (A and AAAA), sorted, or why not, within `budget`.
    pub async fn resolve(self: &Arc<Self>, host: &str, budget: Duration) -> Answer {
        let mut answer = self.lookup(host);
        let waited = tokio::time::timeout(budget, answer.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(answer)) => answer.clone().expect("waited for Some"),
            Ok(Err(_closed)) => Err(LookupError::Failed("the lookup was abandoned".into())),
            Err(_elapsed) => Err(LookupError::TimedOut(budget)),
        }
    }

    /// The running or recent lookup of `host`, or a new one.
    fn lookup(self: &Arc<Self>, host: &str) -> watch::Receiver<Option<Answer>> {
        let mut lookups = self.lookups.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(running) = lookups.get(host) {
            return running.clone();
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
        receiver
    }
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

    #[tokio::test]
    async fn concurrent_lookups_of_a_name_share_one_call() {
        let resolver = resolver();
        let first = resolver.lookup("localhost");
        for _ in 0..20 {
            assert!(resolver.lookup("localhost").same_channel(&first));
        }
        assert!(!resolver.lookup("localhost.").same_channel(&first));
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
}
