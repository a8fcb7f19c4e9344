//! Probing: what one connection attempt found out about a port, and how it is classified;
//! on an open TCP port, what speaks there ([`service`]). TCP ([`TcpProbe`], like `nmap -sT`)
//! and UDP ([`UdpProbe`], like `nmap -sU`) probes share the per-address timing ([`timing`])
//! and the classification of errnos.
//!
//! A failed probe is data (a [`State`] and a [`Reason`]), never an `Err`.

mod attempt;
mod classify;
pub mod service;
mod tcp;
pub mod timing;
pub mod udp;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use classify::classify;
pub use service::ServiceFinding;
pub use tcp::TcpProbe;
pub use timing::Timings;
pub use udp::UdpProbe;

use crate::config::ServiceCheck;
use crate::domain::{Attempts, Reason, State};

/// The result of probing one address and port. Cheap to clone: the service finding, the only
/// part that is not a few words, is shared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub state: State,
    pub reason: Reason,
    /// From connect() to the answer (SYN-ACK, RST or ICMP), or for UDP from the datagram sent
    /// to the reply or ICMP error; `None` when nothing answered.
    pub connect: Option<Duration>,
    /// When the probe finished.
    pub at: SystemTime,
    /// What speaks on the port: only for an open port of a target with a service check.
    pub service: Option<Arc<ServiceFinding>>,
}

impl Outcome {
    /// The outcome for a name that did not resolve.
    pub fn dns_failure(at: SystemTime) -> Outcome {
        Outcome {
            state: State::Error,
            reason: Reason::Dns,
            connect: None,
            at,
            service: None,
        }
    }
}

/// How a target's port is probed; the scheduler takes it as a parameter so that scheduling can
/// be tested without sockets.
pub trait Probe: Send + Sync + 'static {
    /// Probes `addr`, trying again while nothing answers, as `attempts` says (see
    /// [`timing`] for adaptive timing).
    fn probe(&self, addr: SocketAddr, attempts: Attempts) -> impl Future<Output = Outcome> + Send;

    /// [`Probe::probe`], and when the port is open and `check` is given, the service check on
    /// the connection that found it open ([`Outcome::service`]). `None` costs nothing more
    /// than `probe`. By default the check is left out: probes that cannot make one (the fakes
    /// of tests) need only `probe`.
    fn probe_service(
        &self,
        addr: SocketAddr,
        attempts: Attempts,
        check: Option<&ServiceCheck>,
    ) -> impl Future<Output = Outcome> + Send {
        let _ = check;
        self.probe(addr, attempts)
    }
}

/// Settings the probes' tests share.
#[cfg(test)]
mod testing {
    use std::time::Duration;

    use crate::domain::{Attempts, Close, Timing};

    /// Adaptive timing as configured by default: 2 s, 1 retry, 100 ms up to 15 retries.
    pub fn adaptive() -> Attempts {
        Attempts {
            timing: Timing::Adaptive {
                min_timeout: Duration::from_millis(100),
                max_retries: 15,
            },
            ..fixed(Duration::from_secs(2), 1)
        }
    }

    /// Fixed timing: `retries` more attempts of `timeout` each.
    pub fn fixed(timeout: Duration, retries: u32) -> Attempts {
        Attempts {
            timeout,
            retries,
            timing: Timing::Fixed,
            close: Close::Reset,
            source: None,
        }
    }
}
