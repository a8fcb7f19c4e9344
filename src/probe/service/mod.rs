//! The service check: what speaks on an open port, whether it is what the target expects,
//! and its TLS certificate.
//!
//! It runs after the connect probe found the port open, on that probe's connection, and takes
//! at most the target's `timeout` more. The smallest exchange that is sure comes first, as
//! nmap's service probes do: wait for a server that speaks first (SSH, SMTP, FTP, POP3, IMAP,
//! MySQL), else probe (`probes`: a TLS ClientHello, an HTTP request, Redis' `PING`,
//! PostgreSQL's SSLRequest), each on a connection of its own where the last one was spent, at
//! most [`MAX_CONNECTIONS`] in all. What the bytes say is decided by [`rules`]. Over TLS the
//! service inside is identified the same way; SMTP, IMAP, POP3 and PostgreSQL are asked to
//! start TLS (`starttls`) to read their certificate. A target's `query` replaces all of this
//! with its own steps (`query`).
//!
//! Bounded: 16 KiB per exchange, 64 KiB per TLS connection (`io`'s limits), a share of the
//! budget per exchange (a quarter; a half for the probe the port or the expectation points
//! at, and for a handshake after STARTTLS or before a query), no exchange past the budget's
//! end. Every connection is closed as the probe's own (a reset by default). A failed check is
//! data: a [`Reason`], never an `Err`.
//!
//! - `rules`: the match rules on the bytes read;
//! - `probes`: the probes' bytes and the order they are tried in;
//! - `io`: bounded reads and writes;
//! - `tls`: the handshake, the chain's expiry and its verification;
//! - `starttls`: the upgrades of SMTP, IMAP, POP3 and PostgreSQL;
//! - `query`: a target's own send/expect steps.

mod io;
mod probes;
mod query;
pub mod rules;
mod starttls;
mod tls;

use std::future::Future;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

use self::io::{Ended, Reply};
use self::probes::ProbeKind;
use self::rules::{Identified, RuleFn, Verdict};
use self::starttls::{Ehlo, Upgrade};
use crate::config::ServiceCheck;
use crate::config::ServiceExpect;
use crate::config::service::Query;
use crate::domain::{Attempts, Reason, Service, TlsMode};

/// The most connections one check uses, the connect probe's own included.
pub const MAX_CONNECTIONS: u32 = 4;

/// What the service check of one open port found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceFinding {
    pub service: Service,
    /// What the server announces of its software, where short (`OpenSSH_9.2p1`).
    pub version: Option<Box<str>>,
    pub tls: TlsMode,
    /// Why the check ended.
    pub reason: Reason,
    /// Whether the service breaks the target's `service = "<name>"` (or its `query` failed);
    /// `None` when nothing is expected.
    pub unexpected: Option<bool>,
    /// The TLS session's facts, whenever a handshake succeeded.
    pub cert: Option<TlsFinding>,
}

#[cfg(test)]
impl ServiceFinding {
    /// A finding for tests: HTTP (nginx/1.22.1) over TLS 1.3, as expected, its chain valid
    /// until 1,900,000,000 and verified.
    pub(crate) fn https_example() -> ServiceFinding {
        ServiceFinding {
            service: Service::Http,
            version: Some("nginx/1.22.1".into()),
            tls: TlsMode::Implicit,
            reason: Reason::Matched,
            unexpected: Some(false),
            cert: Some(TlsFinding {
                version: "TLS 1.3",
                expiry: Some(1_900_000_000),
                verified: Some(true),
            }),
        }
    }
}

/// What a TLS handshake showed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFinding {
    /// `TLS 1.2` or `TLS 1.3`.
    pub version: &'static str,
    /// The earliest notAfter in the chain the server sent, as a Unix time.
    pub expiry: Option<i64>,
    /// Whether the chain verifies for the server name; `None` under `insecure_skip_verify`.
    pub verified: Option<bool>,
}

/// Opens the further connections a check needs, set up as the probe's own (source address,
/// close): the connect probe lends its own, so that this module needs nothing of it.
pub trait Connector: Sync {
    /// A connection to `addr`, connected by `until`.
    fn connect(
        &self,
        addr: SocketAddr,
        attempts: &Attempts,
        until: Instant,
    ) -> impl Future<Output = std::io::Result<TcpStream>> + Send;
}

/// Checks what speaks on `stream`, the connect probe's connection to `addr`, as `check`
/// says, within `attempts.timeout`; further connections come from `connector`.
pub async fn check(
    stream: TcpStream,
    addr: SocketAddr,
    check: &ServiceCheck,
    attempts: &Attempts,
    connector: &impl Connector,
) -> ServiceFinding {
    let mut session = Session {
        connector,
        addr,
        check,
        attempts,
        end: Instant::now() + attempts.timeout,
        connections: 1,
        heard: false,
    };
    let finding = match &check.query {
        Some(query) => session.query(stream, query).await,
        None => session.identify(stream).await,
    };
    judge(finding, check)
}

/// One check's budget and what it has seen so far.
struct Session<'a, C> {
    connector: &'a C,
    addr: SocketAddr,
    check: &'a ServiceCheck,
    attempts: &'a Attempts,
    end: Instant,
    connections: u32,
    /// Whether the server sent any byte.
    heard: bool,
}

impl<C: Connector> Session<'_, C> {
    /// When an exchange started now ends: after a `share`th of the budget, or at its end.
    fn until(&self, share: u32) -> Instant {
        (Instant::now() + self.attempts.timeout / share).min(self.end)
    }

    fn expect(&self) -> Option<ServiceExpect> {
        self.check.service
    }

    /// Another connection, while the budget and [`MAX_CONNECTIONS`] allow.
    async fn connect(&mut self) -> Option<TcpStream> {
        if self.connections >= MAX_CONNECTIONS || Instant::now() >= self.end {
            return None;
        }
        self.connections += 1;
        self.connector
            .connect(self.addr, self.attempts, self.end)
            .await
            .ok()
    }

    /// Sends `send` on `stream` and reads the reply, decided by `rules`.
    async fn ask<S>(
        &mut self,
        stream: &mut S,
        send: &[u8],
        share: u32,
        rules: &[RuleFn],
    ) -> Reply<Verdict>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let until = self.until(share);
        let reply = io::exchange(stream, send, until, |bytes, done| {
            rules::decide(rules, bytes, done)
        })
        .await;
        self.heard |= !reply.bytes.is_empty();
        reply
    }

    /// Tries the probes in the port's order until one is sure.
    ///
    /// An HTTP answer to another probe's bytes (a 400 to `PING` or to a ClientHello) is not
    /// sure while TLS is still to be tried: a TLS server may answer plain text with a plain
    /// 400 (nginx does). It is kept, the handshake tried next, and taken if nothing better
    /// comes. A server that met a probe with silence does not speak first: the greeting's
    /// wait is skipped after that.
    async fn identify(&mut self, first: TcpStream) -> ServiceFinding {
        let (mut order, hinted) = probes::order(self.addr.port(), self.expect());
        // A connection nothing was sent on yet: the next probe may use it.
        let mut spare = Some(first);
        let mut failure = Failure::default();
        let mut maybe_http: Option<Identified> = None;
        let mut quiet = false;
        let mut next = 0;
        while let Some(&kind) = order.get(next) {
            let share = if next == 0 && hinted { 2 } else { 4 };
            next += 1;
            if kind == ProbeKind::Greeting && quiet {
                continue;
            }
            let mut stream = match spare.take() {
                Some(stream) => stream,
                None => match self.connect().await {
                    Some(stream) => stream,
                    None => break,
                },
            };
            let tls_pending = order[next..].contains(&ProbeKind::Tls);
            let (verdict, silent) = match kind {
                ProbeKind::Greeting => {
                    let reply = self.ask(&mut stream, b"", share, rules::ONLY_ANY).await;
                    match reply.answer {
                        Some(Verdict::Found(id)) => return self.found(id, Some(stream)).await,
                        Some(Verdict::Ambiguous220) => return self.ambiguous_220(stream).await,
                        _ if reply.bytes.is_empty() && reply.ended == Ended::Timeout => {
                            spare = Some(stream);
                            failure.note(Reason::Timeout);
                        }
                        _ if reply.bytes.is_empty() => failure.note(Reason::ClosedByPeer),
                        // It spoke first, as nothing known: any probe would hear the same.
                        _ => return unknown(reason_of(reply.ended, &reply.bytes)),
                    }
                    continue;
                }
                ProbeKind::Tls => {
                    let tls = &self.check.tls;
                    match tls::handshake(stream, tls, self.addr, self.until(share)).await {
                        Ok((tls, cert)) => return self.inside(tls, cert).await,
                        Err(failed) => {
                            // A server that spoke first, or an HTTP server's error, says so.
                            self.heard |= !failed.first.is_empty();
                            failure.note(failed.reason);
                            let silent = failed.first.is_empty();
                            let verdict = rules::decide(rules::ONLY_ANY, &failed.first, true);
                            (verdict, silent)
                        }
                    }
                }
                ProbeKind::Http | ProbeKind::Redis | ProbeKind::Postgres => {
                    let (send, rules) = match kind {
                        ProbeKind::Http => (
                            probes::http_request(
                                self.check.tls.server_name.as_deref(),
                                self.addr,
                                false,
                            ),
                            rules::ONLY_ANY,
                        ),
                        ProbeKind::Redis => (probes::PING.to_vec(), rules::ONLY_ANY),
                        _ => (probes::SSL_REQUEST.to_vec(), rules::SSL_REQUEST),
                    };
                    let reply = self.ask(&mut stream, &send, share, rules).await;
                    if kind == ProbeKind::Postgres
                        && let [answer @ (b'S' | b'N')] = reply.bytes[..]
                        && let Some(Verdict::Found(id)) = reply.answer
                    {
                        let upgrade = match answer {
                            b'S' => Upgrade::Ready,
                            _ => Upgrade::NotOffered,
                        };
                        return self.upgraded(id, stream, upgrade).await;
                    }
                    if reply.answer.is_none() || reply.answer == Some(Verdict::NoMatch) {
                        failure.note(reason_of(reply.ended, &reply.bytes));
                    }
                    (reply.answer, reply.bytes.is_empty())
                }
            };
            quiet |= silent;
            match verdict {
                Some(Verdict::Found(id))
                    if id.service == Service::Http && kind != ProbeKind::Http && tls_pending =>
                {
                    maybe_http = Some(id);
                    tls_next(&mut order, next);
                }
                Some(Verdict::Found(id)) => return self.found(id, None).await,
                Some(Verdict::Ambiguous220) => return self.greet_again().await,
                Some(Verdict::WantsTls) => {
                    // Plain text reached a TLS port: the handshake next.
                    failure.note(Reason::BannerMismatch);
                    maybe_http = Some(Identified {
                        service: Service::Http,
                        version: None,
                    });
                    tls_next(&mut order, next);
                }
                Some(Verdict::NoMatch) | None => {}
            }
        }
        if let Some(http) = maybe_http {
            return plain(http, Reason::Matched);
        }
        let reason = match self.expect() {
            Some(ServiceExpect::Named(service)) if speaks_first(service) && !self.heard => {
                Reason::NoBanner
            }
            _ => failure.reason(),
        };
        unknown(reason)
    }

    /// `id` was found; a service with STARTTLS is asked for it, on `clean` (just greeted)
    /// or on a connection greeted anew.
    async fn found(&mut self, id: Identified, clean: Option<TcpStream>) -> ServiceFinding {
        if !starttls::speaks(id.service) {
            return plain(id, Reason::Matched);
        }
        let mut stream = match clean {
            Some(stream) => stream,
            None => match self.greeted_as(id.service).await {
                Some(stream) => stream,
                None => return plain(id, Reason::Matched),
            },
        };
        let until = || self.until(4);
        let upgrade = starttls::upgrade(id.service, &mut stream, until).await;
        self.upgraded(id, stream, upgrade).await
    }

    /// A new connection on which `service` greeted again (PostgreSQL does not greet).
    async fn greeted_as(&mut self, service: Service) -> Option<TcpStream> {
        let mut stream = self.connect().await?;
        if service == Service::Postgresql {
            return Some(stream);
        }
        let reply = self.ask(&mut stream, b"", 4, rules::ONLY_ANY).await;
        match reply.answer {
            Some(Verdict::Found(again)) if again.service == service => Some(stream),
            _ => None,
        }
    }

    /// After the server's answer to a STARTTLS: the handshake, when it is ready for one.
    async fn upgraded(
        &mut self,
        id: Identified,
        stream: TcpStream,
        upgrade: Upgrade,
    ) -> ServiceFinding {
        match upgrade {
            Upgrade::Ready => {
                match tls::handshake(stream, &self.check.tls, self.addr, self.until(2)).await {
                    Ok((_, cert)) => finding(id, TlsMode::StartTls, Some(cert), Reason::Matched),
                    Err(failed) if failed.reason == Reason::Timeout => plain(id, Reason::Timeout),
                    Err(_) => plain(id, Reason::TlsHandshakeFailed),
                }
            }
            Upgrade::NotOffered => plain(id, Reason::Matched),
            Upgrade::Failed(reason) => plain(id, reason),
        }
    }

    /// A `220` greeting that names neither SMTP nor FTP: `EHLO` is SMTP's alone.
    async fn ambiguous_220(&mut self, mut stream: TcpStream) -> ServiceFinding {
        let smtp = Identified {
            service: Service::Smtp,
            version: None,
        };
        match starttls::ehlo(&mut stream, self.until(4)).await {
            Ehlo::Accepted { starttls } => {
                let upgrade = match starttls {
                    true => starttls::smtp_starttls(&mut stream, self.until(4)).await,
                    false => Upgrade::NotOffered,
                };
                self.upgraded(smtp, stream, upgrade).await
            }
            Ehlo::Refused => plain(
                Identified {
                    service: Service::Ftp,
                    version: None,
                },
                Reason::Matched,
            ),
            Ehlo::Failed(reason) => unknown(reason),
        }
    }

    /// A `220` heard on a connection already spent on a probe: greeted anew, to tell.
    async fn greet_again(&mut self) -> ServiceFinding {
        let Some(mut stream) = self.connect().await else {
            return unknown(Reason::BannerMismatch);
        };
        let reply = self.ask(&mut stream, b"", 4, rules::ONLY_ANY).await;
        match reply.answer {
            Some(Verdict::Found(id)) => self.found(id, Some(stream)).await,
            Some(Verdict::Ambiguous220) => self.ambiguous_220(stream).await,
            _ => unknown(reason_of(reply.ended, &reply.bytes)),
        }
    }

    /// Identifies the service inside TLS, on its one connection.
    async fn inside<S>(&mut self, mut tls: tls::Tls<S>, cert: TlsFinding) -> ServiceFinding
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut reason = Reason::Timeout;
        for &kind in probes::inner_order(self.addr.port(), self.expect()) {
            let send = match kind {
                ProbeKind::Greeting => Vec::new(),
                _ => probes::http_request(self.check.tls.server_name.as_deref(), self.addr, true),
            };
            let reply = self.ask(&mut tls, &send, 4, rules::ONLY_ANY).await;
            match reply.answer {
                Some(Verdict::Found(id)) => {
                    return finding(id, TlsMode::Implicit, Some(cert), Reason::Matched);
                }
                _ if kind == ProbeKind::Greeting
                    && reply.bytes.is_empty()
                    && reply.ended == Ended::Timeout => {}
                _ => {
                    reason = reason_of(reply.ended, &reply.bytes);
                    break;
                }
            }
        }
        finding(unidentified(), TlsMode::Implicit, Some(cert), reason)
    }

    /// The target's own steps, inside TLS for `service = "tls"`.
    async fn query(&mut self, mut stream: TcpStream, query: &Query) -> ServiceFinding {
        let service = match self.expect() {
            Some(ServiceExpect::Named(service)) => service,
            _ => Service::Custom,
        };
        let id = Identified {
            service,
            version: None,
        };
        if self.expect() != Some(ServiceExpect::Tls) {
            let reason = query::run(&mut stream, query, self.end).await;
            return plain(id, reason);
        }
        match tls::handshake(stream, &self.check.tls, self.addr, self.until(2)).await {
            Ok((mut tls, cert)) => {
                let reason = query::run(&mut tls, query, self.end).await;
                finding(id, TlsMode::Implicit, Some(cert), reason)
            }
            Err(failed) => plain(id, failed.reason),
        }
    }
}

/// Moves the TLS probe, if it is still to come, to `order[next]`.
fn tls_next(order: &mut Vec<ProbeKind>, next: usize) {
    if let Some(at) = order[next..].iter().position(|&k| k == ProbeKind::Tls) {
        order.remove(next + at);
        order.insert(next, ProbeKind::Tls);
    }
}

/// The services that speak first: their silence is [`Reason::NoBanner`].
fn speaks_first(service: Service) -> bool {
    matches!(
        service,
        Service::Ssh
            | Service::Smtp
            | Service::Imap
            | Service::Pop3
            | Service::Ftp
            | Service::Mysql
    )
}

/// Why an exchange told nothing, from how its read ended and what it read.
fn reason_of(ended: Ended, bytes: &[u8]) -> Reason {
    match ended {
        Ended::Limit => Reason::ByteLimit,
        _ if !bytes.is_empty() => Reason::BannerMismatch,
        Ended::Closed => Reason::ClosedByPeer,
        Ended::Timeout => Reason::Timeout,
        Ended::Decided => Reason::BannerMismatch,
    }
}

/// The most telling reason among the exchanges that told nothing.
#[derive(Default)]
struct Failure(Option<Reason>);

impl Failure {
    fn note(&mut self, reason: Reason) {
        let rank = |reason: Reason| match reason {
            Reason::ByteLimit => 5,
            Reason::BannerMismatch => 4,
            Reason::TlsHandshakeFailed => 3,
            Reason::ClosedByPeer => 2,
            _ => 1,
        };
        if self.0.is_none_or(|old| rank(reason) > rank(old)) {
            self.0 = Some(reason);
        }
    }

    /// Nothing noted: the budget or the connections ran out before any exchange ended.
    fn reason(&self) -> Reason {
        self.0.unwrap_or(Reason::Timeout)
    }
}

fn unidentified() -> Identified {
    Identified {
        service: Service::Unknown,
        version: None,
    }
}

fn unknown(reason: Reason) -> ServiceFinding {
    plain(unidentified(), reason)
}

fn plain(id: Identified, reason: Reason) -> ServiceFinding {
    finding(id, TlsMode::None, None, reason)
}

fn finding(
    id: Identified,
    tls: TlsMode,
    cert: Option<TlsFinding>,
    reason: Reason,
) -> ServiceFinding {
    ServiceFinding {
        service: id.service,
        version: id.version,
        tls,
        reason,
        unexpected: None,
        cert,
    }
}

/// Holds `finding` against what `check` expects.
fn judge(mut finding: ServiceFinding, check: &ServiceCheck) -> ServiceFinding {
    if check.query.is_some() {
        finding.unexpected = Some(finding.reason != Reason::Matched);
        return finding;
    }
    match check.service {
        Some(ServiceExpect::Named(service)) => {
            let broken = finding.service != service;
            finding.unexpected = Some(broken);
            if broken && finding.reason == Reason::Matched {
                finding.reason = Reason::BannerMismatch;
            }
        }
        Some(ServiceExpect::Tls) => {
            let broken = finding.tls == TlsMode::None;
            finding.unexpected = Some(broken);
            if !broken {
                // TLS spoke: what it carries is not the question.
                finding.reason = Reason::Matched;
            } else if finding.reason == Reason::Matched {
                finding.reason = Reason::NoTls;
            }
        }
        Some(ServiceExpect::Auto) | None => {}
    }
    finding
}
