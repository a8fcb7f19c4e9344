//! The TCP connect probe: one non-blocking connect per attempt, closed with a reset; the
//! attempts' timeouts and count come from [`Timings`].

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::attempt::{Answers, Heard, Run, Waiting, bind_source, finished, listen};
use super::classify::{classify, classify_local};
use super::service;
use super::timing::Timings;
use super::{Outcome, Probe};
use crate::config::ServiceCheck;
use crate::domain::{Attempts, Close, Reason, State};

/// Probes with a full TCP connect, like `nmap -sT`; needs no privileges.
///
/// ```
/// use std::time::Duration;
/// use port_exporter::domain::{Attempts, Close, State, Timing};
/// use port_exporter::probe::{Probe, TcpProbe};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
/// let attempts = Attempts {
///     timeout: Duration::from_secs(1),
///     retries: 1,
///     timing: Timing::Fixed,
///     close: Close::Reset,
///     source: None,
/// };
/// let outcome = TcpProbe::default().probe(listener.local_addr().unwrap(), attempts).await;
/// assert_eq!(outcome.state, State::Open);
/// # });
/// ```
#[derive(Clone, Debug, Default)]
pub struct TcpProbe {
    timings: Arc<Timings>,
}

impl TcpProbe {
    /// A probe that learns into (and takes its timeouts from) `timings`.
    pub fn new(timings: Arc<Timings>) -> TcpProbe {
        TcpProbe { timings }
    }

    /// What this probe learned of every address.
    pub fn timings(&self) -> &Arc<Timings> {
        &self.timings
    }
}

enum Attempt {
    Answered(io::Result<()>),
    /// connect() itself failed: the prober's host refused before the network could answer.
    RefusedLocally(io::Error),
    /// The socket connected to itself (loopback target port inside the ephemeral range).
    SelfConnected,
}

/// A connect the network has not answered yet.
type Pending = Waiting<TcpStream>;

impl Probe for TcpProbe {
    async fn probe(&self, addr: SocketAddr, settings: Attempts) -> Outcome {
        self.connect::<false>(addr, settings).await.0
    }

    async fn probe_service(
        &self,
        addr: SocketAddr,
        settings: Attempts,
        check: Option<&ServiceCheck>,
    ) -> Outcome {
        let Some(check) = check else {
            return self.probe(addr, settings).await;
        };
        let (mut outcome, stream) = self.connect::<true>(addr, settings).await;
        if let Some(stream) = stream {
            // Boxed: the check's state (TLS, buffers) is ~7.6 KB, and inline it would size every
            // probe's task, waiting connects included (9,000 silent probes held 78.5 MB).
            let finding =
                Box::pin(service::check(stream, addr, check, &settings, &Reconnect)).await;
            outcome.service = Some(Arc::new(finding));
            outcome.at = SystemTime::now();
        }
        outcome
    }
}

impl TcpProbe {
    /// The connect probe. With `KEEP`, an open port's connection is handed back instead of
    /// closed (for the service check); without, the code is that of the connect alone.
    async fn connect<const KEEP: bool>(
        &self,
        addr: SocketAddr,
        settings: Attempts,
    ) -> (Outcome, Option<TcpStream>) {
        let mut run = Run::new(&self.timings, addr.ip(), &settings, Answers::Direct);
        // The previous attempt, still listening for a late answer (adaptive timing).
        let mut earlier: Option<Pending> = None;
        let mut kept = None;
        loop {
            let (number, started) = run.start();
            let plan = run.plan();
            let heard = match open::<KEEP>(addr, settings.close, settings.source) {
                Opened::Settled(answer) => Some(Heard {
                    answer,
                    started,
                    number,
                }),
                Opened::Connected(stream) => {
                    kept = Some(stream);
                    Some(Heard {
                        answer: Attempt::Answered(Ok(())),
                        started,
                        number,
                    })
                }
                Opened::Pending(socket) => {
                    let current = Pending {
                        socket,
                        started,
                        number,
                    };
                    let answer = |pending| answer(pending, addr, settings.close);
                    let heard = listen(&current, earlier.as_ref(), answer, plan, &run).await;
                    if KEEP
                        && let Some(Heard {
                            answer: Attempt::Answered(Ok(())),
                            number: answered,
                            ..
                        }) = &heard
                    {
                        let answered = *answered;
                        // The attempt that answered keeps its connection: this one, or the
                        // earlier one still listening.
                        kept = match earlier.take() {
                            Some(earlier) if earlier.number == answered => Some(earlier.socket),
                            _ => Some(current.socket),
                        };
                    } else {
                        earlier = plan.overlap.then_some(current);
                    }
                    heard
                }
            };
            let (state, reason, heard_after) = match heard {
                None => (State::Filtered, Reason::NoResponse, None),
                Some(heard) => {
                    let (state, reason) = match heard.answer {
                        Attempt::Answered(result) => classify(&result),
                        Attempt::RefusedLocally(error) => {
                            let (state, reason) = classify_local(&error);
                            return (finished(state, reason, None), None);
                        }
                        Attempt::SelfConnected => {
                            if run.again() {
                                earlier = None;
                                continue;
                            }
                            return (finished(State::Closed, Reason::SelfConnect, None), None);
                        }
                    };
                    (state, reason, Some((heard.number, heard.started.elapsed())))
                }
            };
            // Only silence is worth another try: any answer is the port's truth.
            if reason == Reason::NoResponse {
                if run.again() {
                    continue;
                }
                return (finished(state, reason, None), None);
            }
            let connect = heard_after.filter(|_| state != State::Error);
            if let Some((answered, rtt)) = connect {
                run.answered(answered, rtt);
            }
            return (finished(state, reason, connect.map(|(_, rtt)| rtt)), kept);
        }
    }
}

/// A connect just started: answered already, or pending.
enum Opened {
    Settled(Attempt),
    /// Connected at once, and kept (`KEEP`) for a service check.
    Connected(TcpStream),
    Pending(TcpStream),
}

/// Starts a connect to `addr`. With `KEEP`, a connect that succeeds at once comes back as
/// [`Opened::Connected`] with its stream; without, it is closed here.
fn open<const KEEP: bool>(addr: SocketAddr, close: Close, source: Option<IpAddr>) -> Opened {
    let socket = match Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    ) {
        Ok(socket) => socket,
        Err(error) => return Opened::Settled(Attempt::Answered(Err(error))),
    };
    if let Err(error) = bind_source(&socket, source) {
        return Opened::Settled(Attempt::RefusedLocally(error));
    }
    // Set before connecting: this future may be dropped (a timeout, a cancelled /probe request,
    // a removed target) after the kernel finished the handshake but before we saw it, and that
    // socket must be reset too, or the listener's side ends in TIME_WAIT.
    if close == Close::Reset {
        reset_on_close(&socket);
    }
    let settled = match socket.connect(&addr.into()) {
        Ok(()) => connected(SockRef::from(&socket), addr, close),
        Err(error) if error.raw_os_error() != Some(Errno::EINPROGRESS as i32) => {
            Attempt::RefusedLocally(error)
        }
        Err(_in_progress) => match settled(&socket) {
            Some(Ok(())) => connected(SockRef::from(&socket), addr, close),
            Some(Err(error)) => Attempt::Answered(Err(error)),
            None => {
                return match TcpStream::from_std(socket.into()) {
                    Ok(stream) => Opened::Pending(stream),
                    Err(error) => Opened::Settled(Attempt::Answered(Err(error))),
                };
            }
        },
    };
    if KEEP
        && matches!(settled, Attempt::Answered(Ok(())))
        && let Ok(stream) = TcpStream::from_std(socket.into())
    {
        return Opened::Connected(stream);
    }
    Opened::Settled(settled)
}

/// The further connections of a service check: [`connect_once`].
struct Reconnect;

impl service::Connector for Reconnect {
    async fn connect(
        &self,
        addr: SocketAddr,
        attempts: &Attempts,
        until: Instant,
    ) -> io::Result<TcpStream> {
        connect_once(addr, attempts, until).await
    }
}

/// One more connection to `addr` for a service check, set up as the probe's own (source
/// address, reset on close), by `until`.
async fn connect_once(
    addr: SocketAddr,
    settings: &Attempts,
    until: Instant,
) -> io::Result<TcpStream> {
    let stream = match open::<true>(addr, settings.close, settings.source) {
        Opened::Connected(stream) => return Ok(stream),
        Opened::Pending(stream) => stream,
        Opened::Settled(Attempt::Answered(Err(error)) | Attempt::RefusedLocally(error)) => {
            return Err(error);
        }
        Opened::Settled(_) => return Err(io::ErrorKind::ConnectionRefused.into()),
    };
    let pending = Pending {
        socket: stream,
        started: Instant::now(),
        number: 1,
    };
    match tokio::time::timeout_at(until, answer(&pending, addr, settings.close)).await {
        Ok(Attempt::Answered(Ok(()))) => Ok(pending.socket),
        Ok(Attempt::Answered(Err(error))) => Err(error),
        Ok(_) => Err(io::ErrorKind::ConnectionRefused.into()),
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
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

/// Waits on the reactor until the connect is answered.
async fn answer(pending: &Pending, addr: SocketAddr, close: Close) -> Attempt {
    let stream = &pending.socket;
    match stream.writable().await {
        Err(error) => Attempt::Answered(Err(error)),
        Ok(()) => match pending_error(SockRef::from(stream)) {
            Ok(()) => connected(SockRef::from(stream), addr, close),
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
    use crate::domain::Timing;

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

    /// A listener on 127.0.0.1 whose accept queue is full, so the kernel drops further SYNs,
    /// with the connections that fill it (reset them to free the queue).
    fn full_listener() -> (Socket, SocketAddr, Vec<std::net::TcpStream>) {
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        listener
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        listener.listen(0).unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        let fillers = (0..2)
            .filter_map(|_| {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()
            })
            .collect();
        (listener, addr, fillers)
    }

    /// A port on 127.0.0.1 where nothing listens: answered at once with a reset.
    fn closed_port() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    }

    fn adaptive(min_timeout: Duration) -> Attempts {
        Attempts {
            timeout: Duration::from_secs(2),
            retries: 1,
            timing: Timing::Adaptive {
                min_timeout,
                max_retries: 9,
            },
            close: Close::Reset,
            source: None,
        }
    }

    #[tokio::test]
    async fn silence_on_an_answering_address_costs_the_learned_timeouts_not_the_budget() {
        let (_listener, silent, _fillers) = full_listener();
        let prober = TcpProbe::default();
        let attempts = adaptive(Duration::from_millis(100));
        let closed = prober.probe(closed_port(), attempts).await;
        assert_eq!(closed.state, State::Closed);
        let started = Instant::now();
        let outcome = prober.probe(silent, attempts).await;
        let took = started.elapsed();
        assert_eq!(
            (outcome.state, outcome.reason),
            (State::Filtered, Reason::NoResponse)
        );
        // 100 ms, then a retry of 200 ms: not 2 s x 2.
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_millis(900),
            "{took:?}"
        );
        let learned = prober.timings().view();
        assert_eq!(learned[0].retransmissions, 1);
        assert_eq!(learned[0].retries, 1);
        // Fixed timing waits what it is told, whatever was learned.
        let fixed = Attempts {
            timeout: Duration::from_millis(600),
            retries: 1,
            timing: Timing::Fixed,
            close: Close::Reset,
            source: None,
        };
        let started = Instant::now();
        prober.probe(silent, fixed).await;
        assert!(started.elapsed() >= Duration::from_millis(1_200));
    }

    #[tokio::test]
    async fn an_address_that_never_answered_costs_at_most_the_budget() {
        let (_listener, silent, _fillers) = full_listener();
        let prober = TcpProbe::default();
        let attempts = Attempts {
            timeout: Duration::from_millis(300),
            ..adaptive(Duration::from_millis(100))
        };
        let started = Instant::now();
        let outcome = prober.probe(silent, attempts).await;
        let took = started.elapsed();
        assert_eq!(outcome.state, State::Filtered);
        assert!(
            took >= Duration::from_millis(600) && took < Duration::from_millis(800),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn an_unlearned_timeout_shortens_as_soon_as_the_address_answers() {
        let (_listener, silent, _fillers) = full_listener();
        let prober = TcpProbe::default();
        let attempts = adaptive(Duration::from_millis(100));
        let started = Instant::now();
        let silent_probe = prober.probe(silent, attempts);
        let answer_later = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            prober.probe(closed_port(), attempts).await
        };
        let (outcome, closed) = tokio::join!(silent_probe, answer_later);
        assert_eq!(closed.state, State::Closed);
        assert_eq!(outcome.state, State::Filtered);
        // The first attempt began with the 2 s upper bound; the reset 50 ms in taught a
        // timeout of 100 ms, so it ends at its next look (200 ms), and the retry 200 ms later.
        let took = started.elapsed();
        assert!(took < Duration::from_millis(900), "{took:?}");
    }

    #[tokio::test]
    async fn a_late_answer_to_an_earlier_attempt_counts() {
        let (listener, addr, fillers) = full_listener();
        let prober = TcpProbe::default();
        // Teach the address a 700 ms timeout: answers far quicker, lower bound 700 ms.
        let attempts = adaptive(Duration::from_millis(700));
        prober.probe(closed_port(), attempts).await;
        let started = Instant::now();
        let probing = prober.probe(addr, attempts);
        let free_the_queue = async {
            // Attempt 1's SYN (0 ms) and attempt 2's (700 ms) meet a full queue; the kernel
            // sends attempt 1's again at 1 s, when the queue has room.
            tokio::time::sleep(Duration::from_millis(850)).await;
            for filler in &fillers {
                reset_on_close(&SockRef::from(filler));
            }
            drop(fillers);
            listener.set_nonblocking(true).unwrap();
            while listener.accept().is_ok() {}
        };
        let (outcome, ()) = tokio::join!(probing, free_the_queue);
        let took = started.elapsed();
        assert_eq!(outcome.state, State::Open);
        // Attempt 1's answer, at about 1 s, during attempt 2: attempt 2's own SYN would not
        // be sent again before 1.7 s.
        assert!(
            took < Duration::from_millis(1_500),
            "answered after {took:?}: the earlier attempt's answer was not heard"
        );
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
        let prober = TcpProbe::default();
        let attempts = Attempts {
            timeout: Duration::from_secs(10),
            retries: 0,
            timing: Timing::Fixed,
            close: Close::Reset,
            source: None,
        };
        let mut probe = Box::pin(prober.probe(addr, attempts));
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

    /// Every probe's task holds its future for as long as it waits, so the future's size is the
    /// memory of a silent probe. The service check's state (~7.6 KB) once sat inline in it:
    /// 9,000 silent probes held 78.5 MB (bench row e); boxed, 1,672 bytes were left, and 1,416
    /// with the earlier attempt's answer boxed too (only an overlap allocates it).
    #[test]
    fn a_waiting_probe_holds_a_small_future_with_or_without_a_service_check() {
        const BOUND: usize = 1_536;
        let timings = Arc::new(Timings::new());
        let prober = TcpProbe::new(timings.clone());
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let attempts = adaptive(Duration::from_millis(100));
        // One future type whether a check is given or not: its size is that of the largest.
        let with_check = prober.probe_service(addr, attempts, None);
        let udp = crate::probe::udp::UdpProbe::new(timings.clone());
        let udp_probe = udp.probe_service(addr, attempts, None);
        for (what, size) in [
            ("probe_service", std::mem::size_of_val(&with_check)),
            ("udp probe", std::mem::size_of_val(&udp_probe)),
        ] {
            assert!(size <= BOUND, "{what}'s future is {size} bytes");
        }
    }
}
