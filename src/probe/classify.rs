//! Maps a connect() result to a port state and reason, the way nmap's connect scan does, and
//! what a connected UDP socket heard, the way nmap's UDP scan does.

use std::io;

use nix::libc;

use crate::domain::{Reason, State};

/// Classifies the result of one connect attempt. Our own timeout arrives as
/// `io::ErrorKind::TimedOut` without an errno; the kernel's as `ETIMEDOUT`.
pub fn classify(result: &io::Result<()>) -> (State, Reason) {
    match result {
        Ok(()) => (State::Open, Reason::SynAck),
        Err(error) => classify_error(error),
    }
}

/// Classifies what the receive on a connected UDP socket returned: `Ok` for a datagram, else
/// the ICMP error the kernel recorded for the socket (IP_RECVERR / IPV6_RECVERR make it record
/// every unreachable, not only the "hard" ones). Silence is the prober's to judge, not this.
///
/// | ICMP | errno | state (reason) |
/// |---|---|---|
/// | port unreachable (3/3, v6 1/4) | ECONNREFUSED | closed (port-unreach) |
/// | host unreachable, host or admin prohibited (3/1, 3/10, 3/13; v6 1/3) | EHOSTUNREACH | filtered (host-unreach) |
/// | net unreachable or prohibited (3/0, 3/9; v6 1/0) | ENETUNREACH | filtered (net-unreach) |
/// | v6 admin prohibited, policy, reject route (1/1, 1/5, 1/6) | EACCES | filtered (admin-prohibited) |
pub fn classify_datagram(result: &io::Result<()>) -> (State, Reason) {
    match result {
        Ok(()) => (State::Open, Reason::UdpResponse),
        Err(error) if error.raw_os_error() == Some(libc::ECONNREFUSED) => {
            (State::Closed, Reason::PortUnreach)
        }
        Err(error) => classify_error(error),
    }
}

/// Classifies the error a connect attempt ended with.
fn classify_error(error: &io::Error) -> (State, Reason) {
    match error.raw_os_error() {
        Some(libc::ECONNREFUSED) => (State::Closed, Reason::ConnRefused),
        Some(libc::ETIMEDOUT) => (State::Filtered, Reason::NoResponse),
        // ICMP host unreachable, host prohibited, admin prohibited (v4), or an `unreachable`
        // route; EHOSTDOWN and ENONET are the kernel's words for ICMP host unknown/isolated.
        Some(libc::EHOSTUNREACH | libc::EHOSTDOWN | libc::ENONET) => {
            (State::Filtered, Reason::HostUnreach)
        }
        Some(libc::ENETUNREACH) => (State::Filtered, Reason::NetUnreach),
        // ICMPv6 administratively prohibited.
        Some(libc::EACCES) => (State::Filtered, Reason::AdminProhibited),
        Some(errno) => (State::Error, Reason::Local(errno)),
        None if error.kind() == io::ErrorKind::TimedOut => (State::Filtered, Reason::NoResponse),
        None => (State::Error, Reason::Unknown),
    }
}

/// Classifies an error that connect() itself returned, before any packet could be answered.
///
/// Such an error is the prober's own host speaking: a security module or a `prohibit` route
/// (`EACCES`), no route at all (`ENETUNREACH`, e.g. no IPv6 on the host), an OUTPUT rule
/// (`EPERM`). None of them says anything about the port, so they are `error` with the errno,
/// never `filtered`. Only an `unreachable` route keeps its network meaning (EHOSTUNREACH:
/// filtered, host-unreach, as nmap says), since operators use it to model a rejecting network.
pub fn classify_local(error: &io::Error) -> (State, Reason) {
    match error.raw_os_error() {
        Some(errno @ (libc::EACCES | libc::ENETUNREACH)) => (State::Error, Reason::Local(errno)),
        _ => classify_error(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        use Reason::*;
        use State::*;
        let os = |errno| Err(io::Error::from_raw_os_error(errno));
        let table: [(io::Result<()>, State, Reason); 13] = [
            (Ok(()), Open, SynAck),
            (os(libc::ECONNREFUSED), Closed, ConnRefused),
            (os(libc::ETIMEDOUT), Filtered, NoResponse),
            (Err(io::ErrorKind::TimedOut.into()), Filtered, NoResponse),
            (os(libc::EHOSTUNREACH), Filtered, HostUnreach),
            (os(libc::EHOSTDOWN), Filtered, HostUnreach),
            (os(libc::ENETUNREACH), Filtered, NetUnreach),
            (os(libc::EACCES), Filtered, AdminProhibited),
            (os(libc::EMFILE), Error, Local(libc::EMFILE)),
            (os(libc::EADDRNOTAVAIL), Error, Local(libc::EADDRNOTAVAIL)),
            (os(libc::ENOBUFS), Error, Local(libc::ENOBUFS)),
            (os(libc::EPERM), Error, Local(libc::EPERM)),
            (Err(io::Error::other("no errno")), Error, Unknown),
        ];
        for (result, state, reason) in table {
            assert_eq!(classify(&result), (state, reason), "{result:?}");
        }
    }

    #[test]
    fn errors_of_connect_itself_are_local_but_an_unreachable_route() {
        use Reason::*;
        use State::*;
        let os = io::Error::from_raw_os_error;
        let table = [
            (libc::EACCES, Error, Local(libc::EACCES)),
            (libc::ENETUNREACH, Error, Local(libc::ENETUNREACH)),
            (libc::EPERM, Error, Local(libc::EPERM)),
            (libc::EHOSTUNREACH, Filtered, HostUnreach),
            (libc::ECONNREFUSED, Closed, ConnRefused),
        ];
        for (errno, state, reason) in table {
            assert_eq!(classify_local(&os(errno)), (state, reason), "errno {errno}");
        }
    }

    #[test]
    fn udp_classification_table() {
        use Reason::*;
        use State::*;
        let os = |errno| Err(io::Error::from_raw_os_error(errno));
        let table: [(io::Result<()>, State, Reason); 8] = [
            (Ok(()), Open, UdpResponse),
            (os(libc::ECONNREFUSED), Closed, PortUnreach),
            (os(libc::EHOSTUNREACH), Filtered, HostUnreach),
            (os(libc::EHOSTDOWN), Filtered, HostUnreach),
            (os(libc::ENETUNREACH), Filtered, NetUnreach),
            (os(libc::EACCES), Filtered, AdminProhibited),
            // ICMP fragmentation needed: our datagram's fault, not the port's.
            (os(libc::EMSGSIZE), Error, Local(libc::EMSGSIZE)),
            (os(libc::ENOBUFS), Error, Local(libc::ENOBUFS)),
        ];
        for (result, state, reason) in table {
            assert_eq!(classify_datagram(&result), (state, reason), "{result:?}");
        }
    }

    #[test]
    fn message_text_is_never_consulted() {
        // A refused connection whose message says "timed out" is still closed.
        let error = io::Error::new(io::ErrorKind::ConnectionRefused, "timed out");
        assert_eq!(classify(&Err(error)), (State::Error, Reason::Unknown));
    }
}
