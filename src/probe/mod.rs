//! Probing: what one connection attempt found out about a port, and how it is classified.
//!
//! A failed probe is data (a [`State`] and a [`Reason`]), never an `Err`.

mod classify;
mod tcp;

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

pub use classify::classify;
pub use tcp::TcpProbe;

/// A port's state, as nmap's connect scan names it, plus `Error` for "we could not tell".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    Open,
    Closed,
    Filtered,
    Error,
}

impl State {
    pub const ALL: [State; 4] = [State::Open, State::Closed, State::Filtered, State::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Open => "open",
            State::Closed => "closed",
            State::Filtered => "filtered",
            State::Error => "error",
        }
    }
}

/// Why a port is in its state, in nmap's words where nmap has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    SynAck,
    ConnRefused,
    NoResponse,
    HostUnreach,
    NetUnreach,
    AdminProhibited,
    /// Every attempt connected the socket to itself: nothing listens on the port.
    SelfConnect,
    /// The name did not resolve.
    Dns,
    /// A failure on the prober's side (fd limit, ephemeral ports, ...): the raw errno.
    Local(i32),
    /// A failure that carried no errno.
    Unknown,
}

impl Reason {
    /// The `reason` label value; for a local failure, the errno's name in lower case.
    pub fn as_str(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Reason::SynAck => "syn-ack",
            Reason::ConnRefused => "conn-refused",
            Reason::NoResponse => "no-response",
            Reason::HostUnreach => "host-unreach",
            Reason::NetUnreach => "net-unreach",
            Reason::AdminProhibited => "admin-prohibited",
            Reason::SelfConnect => "self-connect",
            Reason::Dns => "dns",
            Reason::Unknown => "unknown",
            Reason::Local(errno) => {
                let name = format!("{:?}", nix::errno::Errno::from_raw(errno));
                return Cow::Owned(match name.as_str() {
                    "UnknownErrno" => format!("errno{errno}"),
                    _ => name.to_ascii_lowercase(),
                });
            }
        })
    }
}

/// The result of probing one address and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub state: State,
    pub reason: Reason,
    /// From connect() to the answer (SYN-ACK, RST or ICMP); `None` when nothing answered.
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

/// How a connection that succeeded is closed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Close {
    /// SO_LINGER {1, 0}: a reset, as nmap does; the prober keeps no TIME_WAIT socket.
    #[default]
    Reset,
    /// A normal FIN close, for services that log resets as errors; each open probe leaves a
    /// TIME_WAIT socket on the prober for 60 s.
    Graceful,
}

/// How to probe one address: the budget of an attempt, how many more attempts silence gets,
/// and how to close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempts {
    pub timeout: Duration,
    pub retries: u32,
    pub close: Close,
}

/// How a target's port is probed; the scheduler takes it as a parameter so that scheduling can
/// be tested without sockets.
pub trait Probe: Send + Sync + 'static {
    /// Probes `addr`, trying again up to `attempts.retries` times while nothing answers within
    /// `attempts.timeout`.
    fn probe(&self, addr: SocketAddr, attempts: Attempts) -> impl Future<Output = Outcome> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_reasons_are_lower_case_errno_names() {
        assert_eq!(Reason::Local(nix::libc::EMFILE).as_str(), "emfile");
        assert_eq!(
            Reason::Local(nix::libc::EADDRNOTAVAIL).as_str(),
            "eaddrnotavail"
        );
        assert_eq!(Reason::Local(99999).as_str(), "errno99999");
        assert_eq!(Reason::HostUnreach.as_str(), "host-unreach");
    }
}
