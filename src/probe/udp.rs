//! The UDP probe, as `nmap -sU` tells UDP ports apart: per attempt a connected UDP socket of
//! its own sends the port's request ([`payloads`]) and waits for one datagram, or for the ICMP
//! error the kernel records on the socket and hands over on the next receive.
//!
//! | heard | state (reason) |
//! |---|---|
//! | a datagram | `open` (`udp-response`) |
//! | ICMP port unreachable | `closed` (`port-unreach`) |
//! | ICMP host or net unreachable, prohibited | `filtered` (`host-unreach`, `net-unreach`, `admin-prohibited`) |
//! | nothing, after every try | `open|filtered` (`no-response`) |
//!
//! Linux hands a connected UDP socket only the "hard" ICMP errors (port unreachable,
//! prohibited) unless `IP_RECVERR` / `IPV6_RECVERR` is set; without it host and net
//! unreachable (what `--reject-with icmp-host-unreachable` sends) would read `open|filtered`.
//! Errors of the prober's own host (socket, bind, connect, send) are `error` with the errno, as
//! for TCP, but for an `unreachable` route (`filtered`, `host-unreach`).
//!
//! # Bounds
//! An attempt holds one socket and reads at most one datagram: the receive buffer is the
//! kernel's minimum, and Linux queues a datagram of any size (up to 64 KiB) on an empty queue
//! and drops those that follow while it waits. Of it the probe keeps the length and the first
//! [`REPLY_HEAD`] bytes. The budget is TCP's: `timeout x (retries + 1)`; an attempt's socket
//! keeps listening during the next attempt (adaptive timing, learned address) and is closed
//! after it.
//!
//! # Silence is not proof: ICMP rate limiting
//! Hosts rate-limit the ICMP errors they send. Linux keeps a token bucket per destination:
//! one token per `net.ipv4.icmp_ratelimit` (1000 ms) or `net.ipv6.icmp.ratelimit` (100 ms on
//! these kernels), at most 6 saved; and a global one, `net.ipv4.icmp_msgs_per_sec` (1000) with
//! a burst of `icmp_msgs_burst` (50), for the types in `icmp_ratemask` (destination
//! unreachable is one). Measured here (6.18, a veth pair between two namespaces): 200 closed
//! ports at once drew 6 port unreachables and 194 silences (`IcmpOutRateLimitHost` 194), then
//! one a second (IPv4) or ten (IPv6). Loopback is exempt: 1000 closed ports at once on
//! 127.0.0.1 were all answered, and the global limit did not bite either.
//!
//! So a closed port's silence may be a withheld error, not a firewall. The model:
//! - every reply and every ICMP error is an answer: a round-trip sample of its address
//!   ([`Timings`], shared with whatever else probes through it), and evidence that the address
//!   answers, which earns a silent port all of `max_retries` ([`Timings::tries_rate_limited`])
//!   until the address has shown that it does not withhold: [`UNLIMITED_AFTER`] answers, all
//!   to first attempts (more than a Linux host's buckets let out at once), after which its
//!   silent ports get TCP's drop-rate retries, and the first answer to a retry undoes that;
//! - each retry waits twice as long as the one before ([`Timings::plan_backing_off`]: from the
//!   learned timeout, e.g. 100, 200, 400, 800, 1600 ms), so that some try lands after the
//!   bucket got its next token, where quick retries would all meet the same empty bucket;
//! - all within the budget. An address that never answered gets the configured retries and
//!   timeout, as TCP.
//!
//! One port at a time of a rate-limited host thus reads closed, given about a second per port
//! past the burst. Many ports of one such host at once share its token a second: pacing them
//! (fewer at once per host) is the scheduler's work, not one probe's.

pub mod payloads;

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use nix::sys::socket::{MsgFlags, setsockopt, sockopt};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::attempt::{Answers, Run, Waiting, bind_source, finished, listen};
use super::classify::{classify_datagram, classify_local};
use super::timing::Timings;
#[cfg(doc)]
use super::timing::UNLIMITED_AFTER;
use super::{Outcome, Probe, ServiceFinding};
use crate::config::ServiceCheck;
use crate::domain::{Attempts, Reason, Service, State, TlsMode};

/// The most bytes of a reply kept: enough to recognise a service by.
pub const REPLY_HEAD: usize = 1024;

/// The datagram a port answered with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Its whole length, of which at most [`REPLY_HEAD`] bytes are kept.
    pub len: usize,
    pub head: Vec<u8>,
}

/// What one UDP probe found: the outcome, and the reply that made the port open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub outcome: Outcome,
    pub reply: Option<Reply>,
}

/// Probes UDP ports with their service's request, like `nmap -sU`; needs no privileges.
///
/// ```
/// use std::time::Duration;
/// use port_exporter::domain::{Attempts, Close, State, Timing};
/// use port_exporter::probe::{Probe, UdpProbe};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let bound = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
/// let closed = bound.local_addr().unwrap();
/// drop(bound);
/// let attempts = Attempts {
///     timeout: Duration::from_secs(1),
///     retries: 1,
///     timing: Timing::Fixed,
///     close: Close::Reset,
///     source: None,
/// };
/// let outcome = UdpProbe::default().probe(closed, attempts).await;
/// assert_eq!(outcome.state, State::Closed);
/// # });
/// ```
#[derive(Clone, Debug, Default)]
pub struct UdpProbe {
    timings: Arc<Timings>,
}

impl UdpProbe {
    /// A probe that learns into (and takes its timeouts from) `timings`.
    pub fn new(timings: Arc<Timings>) -> UdpProbe {
        UdpProbe { timings }
    }

    /// What this probe learned of every address.
    pub fn timings(&self) -> &Arc<Timings> {
        &self.timings
    }

    /// Probes `addr` with `payload` (instead of the port's own request), trying again while
    /// nothing answers, as `settings` says.
    pub async fn exchange(&self, addr: SocketAddr, settings: Attempts, payload: &[u8]) -> Exchange {
        let mut run = Run::new(&self.timings, addr.ip(), &settings, Answers::RateLimited);
        let silent = |state, reason| Exchange {
            outcome: finished(state, reason, None),
            reply: None,
        };
        // The previous attempt, still listening for a late answer (adaptive timing).
        let mut earlier: Option<Sent> = None;
        loop {
            let (number, started) = run.start();
            let plan = run.plan();
            let socket = match open(addr, &settings, payload) {
                Ok(socket) => socket,
                Err(Unsent::Refused(error)) => {
                    let (state, reason) = classify_local(&error);
                    return silent(state, reason);
                }
                Err(Unsent::SelfConnected) if run.again() => continue,
                Err(Unsent::SelfConnected) => return silent(State::Closed, Reason::SelfConnect),
            };
            let current = Sent {
                socket,
                started,
                number,
            };
            let heard = listen(&current, earlier.as_ref(), answer, plan, &run).await;
            earlier = plan.overlap.then_some(current);
            let Some(heard) = heard else {
                if run.again() {
                    continue;
                }
                return silent(State::OpenFiltered, Reason::NoResponse);
            };
            let rtt = heard.started.elapsed();
            let (result, reply) = match heard.answer {
                Ok(reply) => (Ok(()), Some(reply)),
                Err(error) => (Err(error), None),
            };
            let (state, reason) = classify_datagram(&result);
            if state == State::Error {
                return silent(state, reason);
            }
            run.answered(heard.number, rtt);
            return Exchange {
                outcome: finished(state, reason, Some(rtt)),
                reply,
            };
        }
    }
}

impl Probe for UdpProbe {
    async fn probe(&self, addr: SocketAddr, attempts: Attempts) -> Outcome {
        let payload = payloads::for_port(addr.port());
        self.exchange(addr, attempts, payload).await.outcome
    }

    /// With a target's `query` (one step): its datagram instead of the port's request, and
    /// on a reply a finding (`custom`) that says whether the reply matched its `expect`.
    async fn probe_service(
        &self,
        addr: SocketAddr,
        attempts: Attempts,
        check: Option<&ServiceCheck>,
    ) -> Outcome {
        let Some(step) = check
            .and_then(|c| c.query.as_ref())
            .and_then(|q| q.steps.first())
        else {
            return self.probe(addr, attempts).await;
        };
        let payload = step.send.as_deref().unwrap_or_default();
        let Exchange { mut outcome, reply } = self.exchange(addr, attempts, payload).await;
        if let Some(reply) = reply {
            let matched = step.expect.as_ref().is_none_or(|e| e.is_match(&reply.head));
            outcome.service = Some(Arc::new(ServiceFinding {
                service: Service::Custom,
                version: None,
                tls: TlsMode::None,
                reason: if matched {
                    Reason::Matched
                } else {
                    Reason::QueryMismatch
                },
                unexpected: Some(!matched),
                cert: None,
            }));
        }
        outcome
    }
}

/// An attempt whose datagram is on its way.
type Sent = Waiting<UdpSocket>;

/// Why an attempt sent nothing.
enum Unsent {
    /// The prober's own host refused (socket, bind, connect or send failed).
    Refused(io::Error),
    /// The kernel gave the socket the target's own address and port (a loopback target port
    /// in the ephemeral range): it would hear its own datagram.
    SelfConnected,
}

/// A connected socket of its own for one attempt, its datagram sent.
fn open(addr: SocketAddr, settings: &Attempts, payload: &[u8]) -> Result<UdpSocket, Unsent> {
    let refused = Unsent::Refused;
    let domain = Domain::for_address(addr);
    let socket =
        Socket::new(domain, Type::DGRAM.nonblocking(), Some(Protocol::UDP)).map_err(refused)?;
    bind_source(&socket, settings.source).map_err(refused)?;
    let every_error = match addr {
        SocketAddr::V4(_) => setsockopt(&socket, sockopt::Ipv4RecvErr, &true),
        SocketAddr::V6(_) => setsockopt(&socket, sockopt::Ipv6RecvErr, &true),
    };
    every_error.map_err(|errno| refused(errno.into()))?;
    // The kernel rounds it up to its minimum (about 2 KiB), and still queues one datagram of
    // any size on an empty queue.
    socket.set_recv_buffer_size(1).map_err(refused)?;
    socket.connect(&addr.into()).map_err(refused)?;
    let local = socket.local_addr().map_err(refused)?;
    if local.as_socket() == Some(addr) {
        return Err(Unsent::SelfConnected);
    }
    socket.send(payload).map_err(refused)?;
    UdpSocket::from_std(socket.into()).map_err(refused)
}

/// Waits on the reactor for the attempt's datagram or ICMP error. The error arrives as
/// EPOLLERR alone, which a wait for "readable" would not wake for.
async fn answer(sent: &Sent) -> io::Result<Reply> {
    loop {
        let ready = sent
            .socket
            .ready(Interest::READABLE | Interest::ERROR)
            .await?;
        // One interest at a time: tokio's try_io sees no readiness for a combined one.
        let interest = if ready.is_error() {
            Interest::ERROR
        } else {
            Interest::READABLE
        };
        match sent.socket.try_io(interest, || receive(&sent.socket)) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            heard => return heard,
        }
    }
}

/// Reads the one datagram (its true length, its head into a bounded buffer), or the error
/// the kernel recorded for the socket.
fn receive(socket: &UdpSocket) -> io::Result<Reply> {
    let mut head = [0u8; REPLY_HEAD];
    let len = nix::sys::socket::recv(socket.as_raw_fd(), &mut head, MsgFlags::MSG_TRUNC)?;
    Ok(Reply {
        len,
        head: head[..len.min(REPLY_HEAD)].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::probe::testing::{adaptive, fixed};
    use tokio::time::Instant;

    /// A port on 127.0.0.1 where nothing is bound: ICMP port unreachable at once.
    fn closed_port() -> SocketAddr {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap()
    }

    /// A socket bound on `ip` whose datagrams `serve` answers (or not) on a thread of its own,
    /// until the test ends: `serve` gets each datagram and the socket.
    fn responder(
        ip: std::net::IpAddr,
        serve: impl Fn(&[u8], SocketAddr, &std::net::UdpSocket) + Send + 'static,
    ) -> SocketAddr {
        let socket = std::net::UdpSocket::bind((ip, 0)).unwrap();
        let addr = socket.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while let Ok((len, from)) = socket.recv_from(&mut buf) {
                serve(&buf[..len], from, &socket);
            }
        });
        addr
    }

    fn echo(ip: std::net::IpAddr) -> SocketAddr {
        responder(ip, |datagram, from, socket| {
            let _ = socket.send_to(datagram, from);
        })
    }

    #[tokio::test]
    async fn a_reply_is_open_and_an_rtt_sample() {
        let prober = UdpProbe::default();
        let addr = echo(Ipv4Addr::LOCALHOST.into());
        let exchange = prober
            .exchange(addr, fixed(Duration::from_secs(1), 1), b"ping")
            .await;
        let outcome = exchange.outcome;
        assert_eq!(
            (outcome.state, outcome.reason),
            (State::Open, Reason::UdpResponse)
        );
        assert!(outcome.connect.is_some());
        let reply = exchange.reply.unwrap();
        assert_eq!((reply.len, reply.head.as_slice()), (4, &b"ping"[..]));
        assert!(prober.timings().view()[0].rtt.is_some());
    }

    #[tokio::test]
    async fn ipv6_loopback_too() {
        let Ok(bound) = std::net::UdpSocket::bind("[::1]:0") else {
            return; // no IPv6 on this host
        };
        drop(bound);
        let prober = UdpProbe::default();
        let open = prober
            .exchange(echo(Ipv6Addr::LOCALHOST.into()), adaptive(), b"x")
            .await;
        assert_eq!(open.outcome.state, State::Open);
        let closed = std::net::UdpSocket::bind("[::1]:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let outcome = prober.probe(addr, adaptive()).await;
        assert_eq!(
            (outcome.state, outcome.reason),
            (State::Closed, Reason::PortUnreach)
        );
    }

    #[tokio::test]
    async fn port_unreachable_is_closed_at_once() {
        let prober = UdpProbe::default();
        let started = Instant::now();
        let outcome = prober.probe(closed_port(), adaptive()).await;
        assert_eq!(
            (outcome.state, outcome.reason),
            (State::Closed, Reason::PortUnreach)
        );
        assert!(started.elapsed() < Duration::from_millis(500));
        assert!(outcome.connect.is_some(), "an ICMP error is an answer");
        let learned = prober.timings().view();
        assert!(learned[0].rtt.is_some(), "and an RTT sample");
    }

    #[tokio::test]
    async fn silence_is_open_filtered_after_every_try() {
        let heard = Arc::new(Mutex::new(0));
        let count = heard.clone();
        let silent = responder(Ipv4Addr::LOCALHOST.into(), move |_, _, _| {
            *count.lock().unwrap() += 1;
        });
        let prober = UdpProbe::default();
        let started = Instant::now();
        let outcome = prober
            .probe(silent, fixed(Duration::from_millis(200), 2))
            .await;
        let took = started.elapsed();
        assert_eq!(
            (outcome.state, outcome.reason, outcome.connect),
            (State::OpenFiltered, Reason::NoResponse, None)
        );
        assert!(
            took >= Duration::from_millis(600) && took < Duration::from_millis(900),
            "{took:?}"
        );
        assert_eq!(
            *heard.lock().unwrap(),
            3,
            "three datagrams: one and two retries"
        );
    }

    #[tokio::test]
    async fn the_port_gets_its_services_request() {
        // A DNS server answers a query and ignores an empty datagram (which a silent port
        // would be left with).
        let dns = responder(Ipv4Addr::LOCALHOST.into(), |query, from, socket| {
            if query.len() >= 12 && query[2] & 0x80 == 0 && query[5] == 1 {
                let mut reply = query.to_vec();
                reply[2] |= 0x80; // QR: a response
                reply[3] = 0x05; // REFUSED
                let _ = socket.send_to(&reply, from);
            }
        });
        let prober = UdpProbe::default();
        let attempts = fixed(Duration::from_millis(200), 0);
        let asked = prober.exchange(dns, attempts, payloads::for_port(53)).await;
        assert_eq!(asked.outcome.state, State::Open);
        let reply = asked.reply.unwrap();
        assert_eq!(
            &reply.head[..2],
            &payloads::for_port(53)[..2],
            "our query's id"
        );
        let empty = prober.exchange(dns, attempts, b"").await;
        assert_eq!(empty.outcome.state, State::OpenFiltered);
    }

    /// A target's one-step query, parsed as the config parses it.
    fn query_check(step: &str) -> ServiceCheck {
        let text = format!(
            "[[targets]]\nhost = \"127.0.0.1\"\nports = [9]\nprotocol = \"udp\"\nquery = [{step}]\n"
        );
        let config = crate::config::Config::parse(&text, "t").unwrap();
        (**config.targets[0].service.as_ref().unwrap()).clone()
    }

    #[tokio::test]
    async fn a_query_sends_its_datagram_and_judges_the_reply() {
        // Answers only the query's datagram, with a banner.
        let server = responder(Ipv4Addr::LOCALHOST.into(), |datagram, from, socket| {
            if datagram == b"HELLO\r\n" {
                let _ = socket.send_to(b"WELCOME v2\r\n", from);
            }
        });
        let prober = UdpProbe::default();
        let attempts = fixed(Duration::from_millis(300), 0);
        let finding = |outcome: &Outcome| {
            let found = outcome.service.as_ref().expect("a finding on a reply");
            (found.service, found.reason, found.unexpected)
        };
        let matching = query_check(r#"{ send = "HELLO\r\n", expect = "^WELCOME v[0-9]" }"#);
        let outcome = prober
            .probe_service(server, attempts, Some(&matching))
            .await;
        assert_eq!(outcome.state, State::Open);
        assert_eq!(
            finding(&outcome),
            (Service::Custom, Reason::Matched, Some(false))
        );
        let hex = query_check(r#"{ send_hex = "48 45 4c 4c 4f 0d 0a", expect = "v3" }"#);
        let outcome = prober.probe_service(server, attempts, Some(&hex)).await;
        assert_eq!(outcome.state, State::Open, "the same datagram, from hex");
        assert_eq!(
            finding(&outcome),
            (Service::Custom, Reason::QueryMismatch, Some(true))
        );
        // Another datagram than the one the server answers: silence, and no finding.
        let other = query_check(r#"{ send = "BYE", expect = "." }"#);
        let outcome = prober.probe_service(server, attempts, Some(&other)).await;
        assert_eq!(outcome.state, State::OpenFiltered);
        assert!(outcome.service.is_none());
        // Without a check: the port's own (empty) datagram, no finding.
        assert_eq!(
            prober.probe_service(server, attempts, None).await.state,
            State::OpenFiltered
        );
    }

    #[tokio::test]
    async fn one_datagram_is_read_of_any_size_and_only_its_head_kept() {
        // Three datagrams of 65,000 bytes answer the probe; the first is read whole (its
        // length) but kept to REPLY_HEAD; the socket never queues the others.
        let flood = responder(Ipv4Addr::LOCALHOST.into(), |_, from, socket| {
            for fill in 1..=3u8 {
                let _ = socket.send_to(&vec![fill; 65_000], from);
            }
        });
        let prober = UdpProbe::default();
        let exchange = prober
            .exchange(flood, fixed(Duration::from_secs(1), 0), b"go")
            .await;
        let reply = exchange.reply.unwrap();
        assert_eq!(reply.len, 65_000);
        assert_eq!(reply.head, vec![1; REPLY_HEAD]);
        // The attempt's socket itself: one datagram queued, the rest dropped.
        let socket = open(flood, &fixed(Duration::from_secs(1), 0), b"go")
            .ok()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(receive(&socket).unwrap().len, 65_000);
        let next = receive(&socket).unwrap_err();
        assert_eq!(next.kind(), io::ErrorKind::WouldBlock, "{next}");
    }

    #[tokio::test]
    async fn a_late_reply_to_the_previous_attempt_counts() {
        // The first datagram is answered after 150 ms, later ones never; the address's
        // learned timeout is 100 ms, so the answer comes during the second attempt.
        let first = Arc::new(Mutex::new(true));
        let slow = responder(Ipv4Addr::LOCALHOST.into(), move |_, from, socket| {
            let mut first = first.lock().unwrap();
            if std::mem::take(&mut *first) {
                std::thread::sleep(Duration::from_millis(150));
                let _ = socket.send_to(b"late", from);
            }
        });
        let prober = UdpProbe::default();
        prober.probe(closed_port(), adaptive()).await;
        let exchange = prober.exchange(slow, adaptive(), b"x").await;
        assert_eq!(exchange.outcome.state, State::Open);
        let learned = prober.timings().view();
        assert_eq!(learned[0].retransmissions, 1);
    }

    /// Ports on one address whose answers share a token bucket, as a host's ICMP errors do:
    /// `burst` answers at once, then one per `refill`. Loopback has no ICMP rate limit, so
    /// the bucket is the responder's.
    fn rate_limited(ports: usize, burst: u32, refill: Duration) -> Vec<SocketAddr> {
        let bucket = Arc::new(Mutex::new((burst, Instant::now())));
        (0..ports)
            .map(|_| {
                let bucket = bucket.clone();
                responder(Ipv4Addr::LOCALHOST.into(), move |_, from, socket| {
                    let mut bucket = bucket.lock().unwrap();
                    let (tokens, since) = &mut *bucket;
                    let earned = since.elapsed().as_nanos() / refill.as_nanos();
                    if earned > 0 {
                        *tokens = (*tokens + earned as u32).min(burst);
                        *since = Instant::now();
                    }
                    if *tokens > 0 {
                        *tokens -= 1;
                        let _ = socket.send_to(b"!", from);
                    }
                })
            })
            .collect()
    }

    #[tokio::test]
    async fn rate_limited_answers_are_heard_given_time() {
        let prober = UdpProbe::default();
        for addr in rate_limited(5, 2, Duration::from_millis(300)) {
            let outcome = prober.probe(addr, adaptive()).await;
            assert_eq!(outcome.state, State::Open, "{addr}");
        }
        let learned = prober.timings().view();
        assert!(learned[0].retransmissions >= 3, "{learned:?}");
        // Two quick tries, as the drop rate alone would give, meet the empty bucket.
        let quick = fixed(Duration::from_millis(50), 1);
        let mut states = Vec::new();
        for addr in rate_limited(5, 2, Duration::from_millis(500)) {
            states.push(prober.probe(addr, quick).await.state);
        }
        assert!(states.contains(&State::OpenFiltered), "{states:?}");
    }

    #[tokio::test]
    async fn a_local_refusal_is_an_error_of_the_prober() {
        // A source address that is not this machine's: nothing is sent.
        let attempts = Attempts {
            source: Some("192.0.2.1".parse().unwrap()),
            ..fixed(Duration::from_secs(1), 1)
        };
        let outcome = UdpProbe::default().probe(closed_port(), attempts).await;
        assert_eq!(
            (outcome.state, outcome.reason),
            (State::Error, Reason::Local(nix::libc::EADDRNOTAVAIL))
        );
    }
}
