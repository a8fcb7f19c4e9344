//! Probing: what one connection attempt found out about a port, and how it is classified.
//! TCP ([`TcpProbe`], like `nmap -sT`) and UDP ([`UdpProbe`], like `nmap -sU`) probes share
//! the per-address timing ([`timing`]) and the classification of errnos.
//!
//! A failed probe is data (a [`State`] and a [`Reason`]), never an `Err`.

mod attempt;
mod classify;
mod tcp;
pub mod timing;
pub mod udp;

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

pub use classify::classify;
pub use tcp::TcpProbe;
pub use timing::Timings;
pub use udp::UdpProbe;

use crate::domain::{Attempts, Reason, State};

/// The result of probing one address and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub state: State,
    pub reason: Reason,
    /// From connect() to the answer (SYN-ACK, RST or ICMP), or for UDP from the datagram sent
    /// to the reply or ICMP error; `None` when nothing answered.
    pub connect: Option<Duration>,
    /// When the probe finished.
    pub at: SystemTime,
}

impl Outcome {
    /// The outcome for a name that did not resolve.
    pub fn dns_failure(at: SystemTime) -> Outcome {
        Outcome {
            state: State::Error,
            reason: Reason::Dns,
            connect: None,
            at,
        }
    }
}

/// How a target's port is probed; the scheduler takes it as a parameter so that scheduling can
/// be tested without sockets.
pub trait Probe: Send + Sync + 'static {
    /// Probes `addr`, trying again while nothing answers, as `attempts` says (see
    /// [`timing`] for adaptive timing).
    fn probe(&self, addr: SocketAddr, attempts: Attempts) -> impl Future<Output = Outcome> + Send;
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
