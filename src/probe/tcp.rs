//! The TCP connect probe: one non-blocking connect per attempt, closed with a reset.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::classify::{classify, classify_local};
use super::{Outcome, Probe};
use crate::domain::{Attempts, Close, Reason, State};

/// Probes with a full TCP connect, like `nmap -sT`; needs no privileges.
///
/// ```
/// use std::time::Duration;
/// use port_exporter::domain::{Attempts, Close, State};
/// use port_exporter::probe::{Probe, TcpProbe};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
/// let attempts = Attempts { timeout: Duration::from_secs(1), retries: 1, close: Close::Reset, source: None };
/// let outcome = TcpProbe.probe(listener.local_addr().unwrap(), attempts).await;
/// assert_eq!(outcome.state, State::Open);
/// # });
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpProbe;

enum Attempt {
    Answered(io::Result<()>),
    /// connect() itself failed: the prober's host refused before the network could answer.
    RefusedLocally(io::Error),
    /// The socket connected to itself (loopback target port inside the ephemeral range).
    SelfConnected,
}

impl Probe for TcpProbe {
    async fn probe(&self, addr: SocketAddr, settings: Attempts) -> Outcome {
        let attempts = settings.count();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = Instant::now();
            let result =
                connect_once(addr, settings.timeout, settings.close, settings.source).await;
            let elapsed = started.elapsed();
            let last = attempt >= attempts;
            let (state, reason) = match result {
                Attempt::SelfConnected if last => (State::Closed, Reason::SelfConnect),
                Attempt::SelfConnected => continue,
                Attempt::Answered(result) => classify(&result),
                Attempt::RefusedLocally(error) => classify_local(&error),
            };
            // Only silence is worth another try: any answer is the port's truth.
            if reason == Reason::NoResponse && !last {
                continue;
            }
            let answered = state != State::Error && reason != Reason::NoResponse;
            return Outcome {
                state,
                reason,
                connect: answered.then_some(elapsed),
                at: SystemTime::now(),
            };
        }
    }
}

async fn connect_once(
    addr: SocketAddr,
    timeout: Duration,
    close: Close,
    source: Option<IpAddr>,
) -> Attempt {
    let socket = match Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    ) {
        Ok(socket) => socket,
        Err(error) => return Attempt::Answered(Err(error)),
    };
    if let Err(error) = bind_source(&socket, source) {
        return Attempt::RefusedLocally(error);
    }
    // Set before connecting: this future may be dropped (a timeout, a cancelled /probe request,
    // a removed target) after the kernel finished the handshake but before we saw it, and that
    // socket must be reset too, or the listener's side ends in TIME_WAIT.
    if close == Close::Reset {
        reset_on_close(&socket);
    }
    match socket.connect(&addr.into()) {
        Ok(()) => connected(SockRef::from(&socket), addr, close),
        Err(error) if error.raw_os_error() != Some(Errno::EINPROGRESS as i32) => {
            Attempt::RefusedLocally(error)
        }
        Err(_in_progress) => match settled(&socket) {
            Some(Ok(())) => connected(SockRef::from(&socket), addr, close),
            Some(Err(error)) => Attempt::Answered(Err(error)),
            None => wait_for_answer(socket, addr, timeout, close).await,
        },
    }
}

/// Binds the socket to `source` (port 0: the kernel picks the port) before it connects, for a
/// target with a `source_address`. A failure (EADDRNOTAVAIL: the address is not on this machine)
/// is the prober's own, like an error of connect() itself: no packet left.
fn bind_source(socket: &Socket, source: Option<IpAddr>) -> io::Result<()> {
    match source {
        Some(ip) => socket.bind(&SocketAddr::new(ip, 0).into()),
        None => Ok(()),
    }
}

/// The connect's outcome if it is known already. On loopback and the host's own addresses the
/// kernel has usually handled the SYN-ACK or reset before connect() returns; looking costs one
/// poll() instead of a registration with the reactor (two epoll_ctl calls and a wake-up), which
/// is a tenth of a full range's CPU time there.
fn settled(socket: &Socket) -> Option<io::Result<()>> {
    let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLOUT)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(pending_error(SockRef::from(socket))),
    }
}

/// Waits on the reactor until the connect is answered, or `timeout`.
async fn wait_for_answer(
    socket: Socket,
    addr: SocketAddr,
    timeout: Duration,
    close: Close,
) -> Attempt {
    let stream = match TcpStream::from_std(socket.into()) {
        Ok(stream) => stream,
        Err(error) => return Attempt::Answered(Err(error)),
    };
    match tokio::time::timeout(timeout, stream.writable()).await {
        Err(_elapsed) => Attempt::Answered(Err(io::ErrorKind::TimedOut.into())),
        Ok(Err(error)) => Attempt::Answered(Err(error)),
        Ok(Ok(())) => match pending_error(SockRef::from(&stream)) {
            Ok(()) => connected(SockRef::from(&stream), addr, close),
            Err(error) => Attempt::Answered(Err(error)),
        },
    }
}

/// What a writable (or failed) connecting socket says: `Ok` when connected, else the error the
/// kernel recorded (SO_ERROR).
fn pending_error(socket: SockRef<'_>) -> io::Result<()> {
    match socket.take_error()? {
        None => Ok(()),
        Some(error) => Err(error),
    }
}

/// A connected socket, about to be closed: an answer, unless it connected to itself.
fn connected(socket: SockRef<'_>, addr: SocketAddr, close: Close) -> Attempt {
    let self_connected = socket
        .local_addr()
        .is_ok_and(|local| local.as_socket() == Some(addr));
    if !self_connected {
        return Attempt::Answered(Ok(()));
    }
    if close == Close::Graceful {
        // A graceful close of a self-connection would leave it in TIME_WAIT on the very port
        // we probe.
        reset_on_close(&socket);
    }
    Attempt::SelfConnected
}

/// SO_LINGER {1, 0}, as nmap does: the close sends a reset instead of a FIN, so neither the
/// prober nor the probed service keeps a TIME_WAIT socket per open port probed.
fn reset_on_close(socket: &Socket) {
    // If setting the option fails the close is merely graceful; nothing to report.
    let _ = socket.set_linger(Some(Duration::ZERO));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TCP states of the sockets on this machine's loopback whose either end is `port`, as
    /// /proc/net/tcp lists them (hex: 01 established, 06 time-wait, ...).
    fn states_on(port: u16) -> Vec<String> {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let port_of = |end: &str| u16::from_str_radix(end.rsplit(':').next().unwrap(), 16).ok();
        table
            .lines()
            .skip(1)
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let ends = [port_of(fields[1]), port_of(fields[2])];
                ends.contains(&Some(port)).then(|| fields[3].to_string())
            })
            .collect()
    }

    #[tokio::test]
    async fn a_probe_dropped_after_an_unseen_handshake_resets_its_connection() {
        // A listener with a full queue drops the probe's first SYN, so the probe waits on the
        // reactor; the queue is then freed, the SYN retransmitted after 1 s completes the
        // handshake while the probe is not polled, and the probe is dropped (as a cancelled
        // /probe request is). Its close must be a reset, or TIME_WAIT follows.
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        listener
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        listener.listen(0).unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        let fillers: Vec<std::net::TcpStream> = (0..2)
            .filter_map(|_| {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()
            })
            .collect();
        let mut probe = Box::pin(connect_once(
            addr,
            Duration::from_secs(10),
            Close::Reset,
            None,
        ));
        let waiting = tokio::time::timeout(Duration::from_millis(200), &mut probe).await;
        assert!(
            waiting.is_err(),
            "the first SYN was answered: the queue was not full"
        );
        for filler in fillers {
            reset_on_close(&SockRef::from(&filler));
        }
        listener.set_nonblocking(true).unwrap();
        while listener.accept().is_ok() {}
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let established = states_on(addr.port()).iter().filter(|s| *s == "01").count();
        assert_eq!(
            established, 2,
            "the handshake completed (both ends established)"
        );
        drop(probe);
        // The listener's end: accept it and close it, as a service would.
        tokio::time::sleep(Duration::from_millis(50)).await;
        while listener.accept().is_ok() {}
        tokio::time::sleep(Duration::from_millis(200)).await;
        let states = states_on(addr.port());
        assert!(
            !states.iter().any(|s| s == "06"),
            "TIME_WAIT after the probe was dropped: {states:?}"
        );
    }
}
