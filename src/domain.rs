//! The words of the domain, each defined once: a port's [`State`], the [`Reason`] behind it,
//! what the operator [`Expect`]s, how a port is probed ([`Attempts`], [`Timing`], [`Close`]),
//! and what speaks on it ([`Service`], [`TlsMode`]).
//!
//! Every other module (config, probe, state table, exposition, status page, `/probe`) spells
//! these through the functions here, so a label value, a config word and a page's wording can
//! never disagree.

use std::borrow::Cow;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

/// A port's state, as nmap's connect (`-sT`) and UDP (`-sU`) scans name it, plus `Error` for
/// "we could not tell".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    Open,
    Closed,
    Filtered,
    /// UDP only: nothing answered, so a service that ignored the probe and a firewall that
    /// dropped it cannot be told apart (`open|filtered`, nmap's word).
    OpenFiltered,
    Error,
}

impl State {
    /// Every state, in the order the state-set series are written; indexed by `state as usize`
    /// (see [`StateCounts`]).
    pub const ALL: [State; 5] = [
        State::Open,
        State::Closed,
        State::Filtered,
        State::OpenFiltered,
        State::Error,
    ];

    /// The states a TCP probe can find, in [`State::ALL`] order: the state set of a TCP
    /// port's series. A connect is always answered or timed out, so never `open|filtered`.
    pub const TCP: [State; 4] = [State::Open, State::Closed, State::Filtered, State::Error];

    /// The states a UDP probe can find: the state set of a UDP port's series.
    pub const UDP: [State; 5] = State::ALL;

    /// The `state` label value.
    ///
    /// ```
    /// use port_exporter::domain::State;
    /// assert_eq!(State::Filtered.as_str(), "filtered");
    /// assert_eq!(State::OpenFiltered.as_str(), "open|filtered");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            State::Open => "open",
            State::Closed => "closed",
            State::Filtered => "filtered",
            State::OpenFiltered => "open|filtered",
            State::Error => "error",
        }
    }
}

/// How many ports (or rows) are in each [`State`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateCounts([u64; State::ALL.len()]);

impl StateCounts {
    /// Counts one more in `state`.
    pub fn add(&mut self, state: State) {
        self.0[state as usize] += 1;
    }

    /// How many are in `state`.
    pub fn get(&self, state: State) -> u64 {
        self.0[state as usize]
    }

    /// How many in all.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &StateCounts) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            *mine += theirs;
        }
    }
}

/// Why a port is in its state, in nmap's words where nmap has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    SynAck,
    ConnRefused,
    /// A UDP datagram came back from the port.
    UdpResponse,
    /// ICMP port unreachable, to a UDP probe.
    PortUnreach,
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
    // Why a service check ended (`port_service_reason`).
    /// The service was identified, or is the one expected, or the query's steps all matched.
    Matched,
    /// The server answered, but not as any service known (or not as the one expected).
    BannerMismatch,
    /// A server expected to speak first said nothing within the wait.
    NoBanner,
    /// A TLS handshake (implicit or after STARTTLS) failed.
    TlsHandshakeFailed,
    /// `service = "tls"`, but the service found offers no TLS.
    NoTls,
    /// The check's time budget (the target's `timeout`) ran out before it could tell.
    Timeout,
    /// The server closed the connection before anything told what it is.
    ClosedByPeer,
    /// A reply reached the byte limit before anything told what it is.
    ByteLimit,
    /// A step of the target's `query` did not get the reply it expects.
    QueryMismatch,
}

impl Reason {
    /// The `reason` label value; for a local failure, the errno's name in lower case.
    ///
    /// ```
    /// use port_exporter::domain::Reason;
    /// assert_eq!(Reason::ConnRefused.as_str(), "conn-refused");
    /// assert_eq!(Reason::Local(24).as_str(), "emfile");
    /// ```
    pub fn as_str(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Reason::SynAck => "syn-ack",
            Reason::ConnRefused => "conn-refused",
            Reason::UdpResponse => "udp-response",
            Reason::PortUnreach => "port-unreach",
            Reason::NoResponse => "no-response",
            Reason::HostUnreach => "host-unreach",
            Reason::NetUnreach => "net-unreach",
            Reason::AdminProhibited => "admin-prohibited",
            Reason::SelfConnect => "self-connect",
            Reason::Dns => "dns",
            Reason::Unknown => "unknown",
            Reason::Matched => "matched",
            Reason::BannerMismatch => "banner-mismatch",
            Reason::NoBanner => "no-banner",
            Reason::TlsHandshakeFailed => "tls-handshake-failed",
            Reason::NoTls => "no-tls",
            Reason::Timeout => "timeout",
            Reason::ClosedByPeer => "closed-by-peer",
            Reason::ByteLimit => "byte-limit",
            Reason::QueryMismatch => "query-mismatch",
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

/// The transport a target's ports are probed over: the `protocol` label.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// A full connect, like `nmap -sT`.
    #[default]
    Tcp,
    /// A datagram and what answers it, like `nmap -sU`.
    Udp,
}

impl Protocol {
    /// The word the config and the `protocol` label use.
    ///
    /// ```
    /// use port_exporter::domain::Protocol;
    /// assert_eq!(Protocol::Udp.as_str(), "udp");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// The protocol a word names, as the config and `/probe`'s `protocol=` spell it.
    ///
    /// ```
    /// use port_exporter::domain::Protocol;
    /// assert_eq!(Protocol::from_word("udp"), Some(Protocol::Udp));
    /// assert_eq!(Protocol::from_word("UDP"), None);
    /// ```
    pub fn from_word(word: &str) -> Option<Protocol> {
        [Protocol::Tcp, Protocol::Udp]
            .into_iter()
            .find(|p| p.as_str() == word)
    }

    /// The states a port probed over this protocol can be in, in exposition order.
    pub fn states(self) -> &'static [State] {
        match self {
            Protocol::Tcp => &State::TCP,
            Protocol::Udp => &State::UDP,
        }
    }
}

/// What the operator says a target's ports must look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    Open,
    Closed,
    Filtered,
    /// UDP's silence: met only by `open|filtered` (a TCP port never is).
    #[serde(rename = "open|filtered")]
    OpenFiltered,
    NotOpen,
    Any,
}

impl Expect {
    /// Every expectation, in the order messages list them.
    pub const ALL: [Expect; 6] = [
        Expect::Open,
        Expect::Closed,
        Expect::Filtered,
        Expect::OpenFiltered,
        Expect::NotOpen,
        Expect::Any,
    ];

    /// The word the config and `/probe?expect=` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Expect::Open => "open",
            Expect::Closed => "closed",
            Expect::Filtered => "filtered",
            Expect::OpenFiltered => "open|filtered",
            Expect::NotOpen => "not_open",
            Expect::Any => "any",
        }
    }

    /// Whether `state` breaks this expectation; `None` when there is nothing to break (`any`).
    ///
    /// An `error` state says nothing about the port, so it never breaks an expectation: probe
    /// errors have their own series and alert. `not_open` takes UDP's `open|filtered` (nothing
    /// answered); `filtered` does not (a firewall's silence and an ignoring service look alike,
    /// so only `open|filtered` itself or `not_open` can expect it).
    ///
    /// ```
    /// use port_exporter::domain::{Expect, State};
    /// assert_eq!(Expect::NotOpen.is_broken_by(State::Open), Some(true));
    /// assert_eq!(Expect::NotOpen.is_broken_by(State::Filtered), Some(false));
    /// assert_eq!(Expect::NotOpen.is_broken_by(State::OpenFiltered), Some(false));
    /// assert_eq!(Expect::Open.is_broken_by(State::Error), Some(false));
    /// assert_eq!(Expect::Any.is_broken_by(State::Closed), None);
    /// ```
    pub fn is_broken_by(self, state: State) -> Option<bool> {
        let allowed = match self {
            Expect::Any => return None,
            Expect::Open => state == State::Open,
            Expect::Closed => state == State::Closed,
            Expect::Filtered => state == State::Filtered,
            Expect::OpenFiltered => state == State::OpenFiltered,
            Expect::NotOpen => state != State::Open,
        };
        Some(state != State::Error && !allowed)
    }

    /// Whether `state` is a definite answer that this expectation allows (what `/probe`'s
    /// `probe_success` reports): an `error` never meets one, `any` takes every other state.
    pub fn is_met_by(self, state: State) -> bool {
        state != State::Error && self.is_broken_by(state) != Some(true)
    }
}

/// An expectation word that is none of [`Expect::ALL`].
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("expect {0:?}: expected one of open, closed, filtered, open|filtered, not_open, any")]
pub struct UnknownExpect(pub String);

impl FromStr for Expect {
    type Err = UnknownExpect;

    fn from_str(text: &str) -> Result<Expect, UnknownExpect> {
        Expect::ALL
            .into_iter()
            .find(|e| e.as_str() == text)
            .ok_or_else(|| UnknownExpect(text.to_string()))
    }
}

/// What speaks on a port, as nmap's service names call it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    Ssh,
    Http,
    Smtp,
    Imap,
    Pop3,
    Ftp,
    Mysql,
    Postgresql,
    Redis,
    /// Something answered (or TLS did), but no rule knew it.
    Unknown,
    /// A target's `query` steps were the check, and it names no service.
    Custom,
}

impl Service {
    /// The services the exporter identifies, which `service = "<name>"` may name.
    pub const NAMED: [Service; 9] = [
        Service::Ssh,
        Service::Http,
        Service::Smtp,
        Service::Imap,
        Service::Pop3,
        Service::Ftp,
        Service::Mysql,
        Service::Postgresql,
        Service::Redis,
    ];

    /// The `service` label value, and the config word.
    ///
    /// ```
    /// use port_exporter::domain::Service;
    /// assert_eq!(Service::Postgresql.as_str(), "postgresql");
    /// assert_eq!("ssh".parse(), Ok(Service::Ssh));
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Ssh => "ssh",
            Service::Http => "http",
            Service::Smtp => "smtp",
            Service::Imap => "imap",
            Service::Pop3 => "pop3",
            Service::Ftp => "ftp",
            Service::Mysql => "mysql",
            Service::Postgresql => "postgresql",
            Service::Redis => "redis",
            Service::Unknown => "unknown",
            Service::Custom => "custom",
        }
    }
}

impl FromStr for Service {
    type Err = ();

    /// One of [`Service::NAMED`].
    fn from_str(text: &str) -> Result<Service, ()> {
        Service::NAMED
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or(())
    }
}

/// How TLS was found on a port: the `tls` label beside the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlsMode {
    /// No TLS (none offered, or none tried).
    None,
    /// TLS from the first byte, as on 443 (nmap's `ssl/http`).
    Implicit,
    /// The service's own upgrade: SMTP, IMAP and POP3 STARTTLS, PostgreSQL's SSLRequest.
    StartTls,
}

impl TlsMode {
    /// The `tls` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::None => "none",
            TlsMode::Implicit => "implicit",
            TlsMode::StartTls => "starttls",
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

/// How the attempt timeouts and retries of a probe are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timing {
    /// Every attempt waits the configured `timeout`; silence gets `retries` more attempts.
    Fixed,
    /// Learned per address (see [`crate::probe::timing`]): the timeout from the address's
    /// round-trip times, within `min_timeout..=timeout`; the retries from its drop rate, up to
    /// `max_retries` while the address is known to answer.
    Adaptive {
        min_timeout: Duration,
        max_retries: u32,
    },
}

/// How to probe one address: the budget of an attempt, how many more attempts silence gets,
/// how those are chosen, how to close, and the local address to connect from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempts {
    /// The timeout of every attempt ([`Timing::Fixed`]), or its upper bound and the timeout
    /// of an address that has not answered yet ([`Timing::Adaptive`]).
    pub timeout: Duration,
    /// The retries of a silent port: always ([`Timing::Fixed`]), or on an address that has
    /// not answered yet ([`Timing::Adaptive`]).
    pub retries: u32,
    pub timing: Timing,
    pub close: Close,
    /// Bound (port 0) before connecting; `None`: the kernel picks the source.
    pub source: Option<IpAddr>,
}

impl Attempts {
    /// How many connects a silent port gets in all when timing is fixed, or on an address
    /// that has not answered yet.
    pub fn count(&self) -> u32 {
        self.retries.saturating_add(1)
    }

    /// The longest one probe can take: `timeout x (retries + 1)`, reached when every attempt
    /// meets silence. Adaptive timing spends the same budget on more, shorter attempts when
    /// the address answers and loses packets, never more.
    ///
    /// ```
    /// use std::time::Duration;
    /// use port_exporter::domain::{Attempts, Close, Timing};
    /// let attempts = Attempts {
    ///     timeout: Duration::from_secs(2),
    ///     retries: 1,
    ///     timing: Timing::Fixed,
    ///     close: Close::Reset,
    ///     source: None,
    /// };
    /// assert_eq!(attempts.budget(), Duration::from_secs(4));
    /// ```
    pub fn budget(&self) -> Duration {
        self.timeout.saturating_mul(self.count())
    }
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
        assert_eq!(Reason::TlsHandshakeFailed.as_str(), "tls-handshake-failed");
    }

    #[test]
    fn service_words_round_trip_and_only_named_services_parse() {
        for service in Service::NAMED {
            assert_eq!(service.as_str().parse(), Ok(service));
        }
        assert_eq!("unknown".parse::<Service>(), Err(()));
        assert_eq!("custom".parse::<Service>(), Err(()));
        assert_eq!(TlsMode::StartTls.as_str(), "starttls");
    }

    #[test]
    fn udp_words_are_nmaps() {
        assert_eq!(State::OpenFiltered.as_str(), "open|filtered");
        assert_eq!(Reason::UdpResponse.as_str(), "udp-response");
        assert_eq!(Reason::PortUnreach.as_str(), "port-unreach");
        assert_eq!("open|filtered".parse(), Ok(Expect::OpenFiltered));
    }

    #[test]
    fn state_sets_follow_all_and_index_it() {
        for (i, state) in State::ALL.into_iter().enumerate() {
            assert_eq!(state as usize, i, "{state:?}");
        }
        assert!(!State::TCP.contains(&State::OpenFiltered));
        let in_all_order: Vec<State> = State::ALL
            .into_iter()
            .filter(|s| State::TCP.contains(s))
            .collect();
        assert_eq!(in_all_order, State::TCP);
        let mut counts = StateCounts::default();
        counts.add(State::OpenFiltered);
        assert_eq!(counts.get(State::OpenFiltered), 1);
        assert_eq!(counts.get(State::Error), 0);
    }

    #[test]
    fn the_config_word_for_open_filtered_is_nmaps() {
        #[derive(serde::Deserialize)]
        struct Doc {
            expect: Expect,
        }
        let doc: Doc = toml::from_str("expect = \"open|filtered\"").unwrap();
        assert_eq!(doc.expect, Expect::OpenFiltered);
    }

    #[test]
    fn expectations() {
        use State::*;
        let table = [
            (Expect::Open, Open, Some(false)),
            (Expect::Open, Closed, Some(true)),
            (Expect::Open, Filtered, Some(true)),
            (Expect::Closed, Filtered, Some(true)),
            (Expect::Filtered, Filtered, Some(false)),
            (Expect::NotOpen, Closed, Some(false)),
            (Expect::NotOpen, Filtered, Some(false)),
            (Expect::NotOpen, Open, Some(true)),
            (Expect::NotOpen, OpenFiltered, Some(false)),
            (Expect::OpenFiltered, OpenFiltered, Some(false)),
            (Expect::OpenFiltered, Open, Some(true)),
            (Expect::OpenFiltered, Filtered, Some(true)),
            (Expect::Filtered, OpenFiltered, Some(true)),
            (Expect::Open, OpenFiltered, Some(true)),
            (Expect::Closed, OpenFiltered, Some(true)),
            (Expect::OpenFiltered, Error, Some(false)),
            (Expect::Open, Error, Some(false)),
            (Expect::Any, Open, None),
        ];
        for (expect, state, broken) in table {
            assert_eq!(expect.is_broken_by(state), broken, "{expect:?} {state:?}");
        }
    }

    #[test]
    fn expect_words_round_trip_and_unknown_words_are_refused() {
        for expect in Expect::ALL {
            assert_eq!(expect.as_str().parse(), Ok(expect));
        }
        assert_eq!(
            "opened".parse::<Expect>(),
            Err(UnknownExpect("opened".into()))
        );
    }

    #[test]
    fn counts_per_state() {
        let mut counts = StateCounts::default();
        counts.add(State::Open);
        counts.add(State::Open);
        counts.add(State::Error);
        assert_eq!((counts.get(State::Open), counts.get(State::Closed)), (2, 0));
        let mut all = StateCounts::default();
        all.merge(&counts);
        all.merge(&counts);
        assert_eq!(all.total(), 6);
    }
}
