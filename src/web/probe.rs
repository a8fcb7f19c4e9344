//! `/probe?target=host:port`: one probe on demand, the multi-target pattern of
//! blackbox_exporter, so that Prometheus service discovery (and hashmod sharding) can drive
//! probing.
//!
//! An open `/probe` would let anyone make the exporter connect anywhere (an SSRF relay), so it
//! only connects to what the config's `[probe] allow` list names, checked against the very
//! addresses it then connects to. A refusal names the target as given and says it is not
//! allowed, never what the name resolves to (nor whether it does).
//!
//! `/probe` is kept apart from the schedule: it has a resolver of its own ([`PROBE_LOOKUPS`]
//! getaddrinfo calls and [`PROBE_LOOKUP_NAMES`] names at once, beside the scheduler's 32) and
//! its own cap on connects in flight across requests ([`PROBE_CONNECTS`]), so that a flood of
//! requests can neither take the configured targets' lookups nor open more sockets than that.
//! Each request has one deadline, from the scrape timeout (at most [`MAX_SCRAPE_TIMEOUT`]) or
//! the config, for its lookup, its wait for connect slots and its connects together. What does
//! not fit is answered 503: at once when the names are taken, at the deadline when no connect
//! slot came free.
//!
//! `protocol=udp` probes the port as a UDP target does (`nmap -sU`: the port's payload, a
//! reply `open`, ICMP port unreachable `closed`, silence `open|filtered`), on a UDP probe and
//! timing table of `/probe`'s own; `protocol=tcp` (the default) connects.
//!
//! `service=` (with `tls_server_name=`, `tls_insecure_skip_verify=`) adds the service check
//! of a target's `service` key, read by the config's rules; `[defaults.tls]` gives the rest
//! (a request never names a file). It takes up to one more `timeout` and
//! [`MAX_CONNECTIONS`] connections: the attempts are fitted so that it ends by the deadline,
//! and such a request takes that many connect slots.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntGauge;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::address::conflict;
use crate::config::host::valid_host_name;
use crate::config::service::{RequestedCheck, parse_server_name};
use crate::config::{Config, ServiceExpect};
use crate::domain::Expect;
use crate::domain::{Attempts, Protocol};
use crate::exposition::table::SERVICE_FAMILIES;
use crate::exposition::text::{
    Format, Numbers, STATE_SUFFIXES, push_label, push_line, push_service_sample,
};
use crate::families::{
    PORT_CONNECT_DURATION, PORT_STATE, PORT_STATE_REASON, PROBE_DNS_LOOKUP_TIME, PROBE_DURATION,
    PROBE_SUCCESS,
};
use crate::probe::service::MAX_CONNECTIONS;
use crate::probe::{Outcome, Probe, UdpProbe};
use crate::schedule::resolve::{Limits, LookupError, Resolver};

/// Taken off Prometheus' scrape timeout so the answer arrives before it gives up.
const SCRAPE_TIMEOUT_OFFSET: Duration = Duration::from_millis(500);
/// The longest scrape timeout taken from `X-Prometheus-Scrape-Timeout-Seconds`; a longer one
/// counts as this. It bounds how long one request (its lookup included) can last; Prometheus'
/// scrape timeouts are seconds (10 s by default).
pub const MAX_SCRAPE_TIMEOUT: Duration = Duration::from_secs(60);
/// The least time a probe is given, whatever the scrape timeout says.
const MIN_BUDGET: Duration = Duration::from_millis(100);
/// The least time left for an address's connects when they start: with less (after a slow
/// lookup, or a long wait for a connect slot) the request is answered 503 rather than a port
/// called filtered for want of time.
const MIN_CONNECT_TIME: Duration = Duration::from_millis(50);
/// The most getaddrinfo calls `/probe` runs at once, beside the scheduler's.
pub const PROBE_LOOKUPS: usize = 4;
/// The most names `/probe` looks up at once (running, or waiting for one of its calls); a
/// request for another name is answered 503 at once.
pub const PROBE_LOOKUP_NAMES: usize = 16;
/// The most connects `/probe` has in flight at once, across requests; an address waits for a
/// free one within its request's deadline.
pub const PROBE_CONNECTS: usize = 16;

/// What `/probe` has of its own, apart from the scheduler: a resolver, connect slots (which
/// UDP probes take too: a socket each) and a UDP probe.
pub struct OnDemand {
    resolver: Arc<Resolver>,
    connects: Arc<Semaphore>,
    udp: UdpProbe,
}

impl OnDemand {
    /// `/probe`'s resolver and slots; its lookups count in `dns_lookups_in_flight` with the
    /// scheduler's.
    pub fn new(dns_lookups_in_flight: IntGauge) -> OnDemand {
        let limits = Limits {
            lookups: PROBE_LOOKUPS,
            names: PROBE_LOOKUP_NAMES,
        };
        OnDemand {
            resolver: Arc::new(Resolver::with_limits(limits, dns_lookups_in_flight)),
            connects: Arc::new(Semaphore::new(PROBE_CONNECTS)),
            udp: UdpProbe::default(),
        }
    }
}

/// The scrape timeout an `X-Prometheus-Scrape-Timeout-Seconds` value gives: its seconds, at
/// most [`MAX_SCRAPE_TIMEOUT`]. Anything but a positive finite number of seconds (not a
/// number, NaN, an infinity, zero or less) gives `None`: the config's budget applies.
pub fn scrape_timeout(value: &str) -> Option<Duration> {
    let seconds = value.trim().parse::<f64>().ok().filter(|s| s.is_finite())?;
    let seconds = seconds.min(MAX_SCRAPE_TIMEOUT.as_secs_f64());
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| !d.is_zero())
}

/// A parsed `/probe` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeRequest {
    pub host: String,
    pub port: u16,
    /// `?protocol=`: `tcp` unless it says `udp`.
    pub protocol: Protocol,
    /// What `probe_success` checks; `open` unless `?expect=` says otherwise.
    pub expect: Expect,
    /// `?debug=true`: answer with the probe's trace instead of metrics.
    pub debug: bool,
    /// `?service=` and the TLS options: a service check on an open port, as a target's
    /// `service` key and `tls` table ask for; `None`: connect only.
    pub service: Option<RequestedCheck>,
}

/// Why a request gets no probe.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The request is malformed: 400.
    #[error("{0}")]
    BadRequest(String),
    /// The target is outside the allow list: 403. Nothing was connected to.
    #[error("{0}")]
    Forbidden(String),
    /// `/probe` has no room for the request within its budget (its names or connect slots
    /// are taken, or the lookup left too little time): 503, to try again.
    #[error("{0}")]
    Unavailable(String),
}

impl ProbeRequest {
    /// Parses the query string: `target=host:port` (IPv6 in brackets), optional
    /// `protocol=tcp|udp`, `expect=` (a word of [`Expect::ALL`]; `open|filtered` only for
    /// UDP), `debug=true`, and for TCP `service=` (`auto`, `tls` or a service name) with
    /// `tls_server_name=` and `tls_insecure_skip_verify=true|false`, read by the config's
    /// rules. No parameter names a file: the roots are `[defaults.tls]`'.
    pub fn parse(params: &[(String, String)]) -> Result<ProbeRequest, Refusal> {
        let bad = |message: String| Err(Refusal::BadRequest(message));
        let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let Some(target) = param("target") else {
            return bad("missing parameter target=host:port".into());
        };
        let (host, port) = if let Some(rest) = target.strip_prefix('[') {
            let Some((host, port)) = rest.split_once("]:") else {
                return bad(format!(
                    "target {target:?}: expected [ipv6]:port, e.g. [::1]:443"
                ));
            };
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return bad(format!(
                    "target {target:?}: {host:?} is not an IPv6 address"
                ));
            }
            (host, port)
        } else {
            let Some((host, port)) = target.rsplit_once(':') else {
                return bad(format!(
                    "target {target:?}: expected host:port, e.g. example.org:443"
                ));
            };
            if host.contains(':') {
                return bad(format!(
                    "target {target:?}: an IPv6 address needs brackets, e.g. [::1]:443"
                ));
            }
            (host, port)
        };
        if host.is_empty() {
            return bad(format!("target {target:?}: empty host"));
        }
        if host.parse::<IpAddr>().is_err() && !valid_host_name(host) {
            return bad(format!(
                "target {target:?}: expected a DNS name, an IPv4 or an IPv6 address"
            ));
        }
        let port = match port.parse::<u16>() {
            Ok(port) if port >= 1 => port,
            _ => {
                return bad(format!(
                    "target {target:?}: port {port:?} out of range: expected 1 to 65535"
                ));
            }
        };
        for name in ["protocol", "expect"] {
            if params.iter().filter(|(k, _)| k == name).count() > 1 {
                return bad(format!("{name}= given more than once"));
            }
        }
        let protocol = match param("protocol") {
            None => Protocol::Tcp,
            Some(word) => match Protocol::from_word(word) {
                Some(protocol) => protocol,
                None => return bad(format!("protocol {word:?}: expected tcp or udp")),
            },
        };
        let expect = match param("expect") {
            None => Expect::Open,
            Some(word) => match word.parse() {
                Ok(expect) => expect,
                Err(unknown) => return bad(format!("{unknown}")),
            },
        };
        if expect == Expect::OpenFiltered && protocol != Protocol::Udp {
            return bad("expect \"open|filtered\" is a UDP state: only with protocol=udp".into());
        }
        let debug = match param("debug").map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => return bad(format!("debug {other:?}: expected true or false")),
        };
        for name in ["service", "tls_server_name", "tls_insecure_skip_verify"] {
            if params.iter().filter(|(k, _)| k == name).count() > 1 {
                return bad(format!("{name}= given more than once"));
            }
        }
        for file in ["ca_file", "tls_ca_file"] {
            if param(file).is_some() {
                return bad(format!(
                    "{file}: a request cannot name a file; [defaults.tls] ca_file applies"
                ));
            }
        }
        let server_name = match param("tls_server_name") {
            None => None,
            Some(name) => match parse_server_name(name, "tls_server_name") {
                Ok(name) => Some(name),
                Err(why) => return bad(why),
            },
        };
        let insecure_skip_verify = match param("tls_insecure_skip_verify").map(String::as_str) {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(other) => {
                return bad(format!(
                    "tls_insecure_skip_verify {other:?}: expected true or false"
                ));
            }
        };
        let service = match param("service") {
            None => {
                if server_name.is_some() || insecure_skip_verify.is_some() {
                    return bad("the tls_ options need service=auto, tls or a name".into());
                }
                None
            }
            Some(_) if protocol == Protocol::Udp => {
                return bad("service= is a TCP check: not with protocol=udp".into());
            }
            Some(word) => match ServiceExpect::parse(word) {
                Ok(service) => Some(RequestedCheck {
                    service,
                    server_name,
                    insecure_skip_verify,
                }),
                Err(why) => return bad(why),
            },
        };
        Ok(ProbeRequest {
            host: host.to_string(),
            port,
            protocol,
            expect,
            debug,
            service,
        })
    }

    /// The target as the caller gave it: `host:port`, an IPv6 address in brackets.
    pub fn target(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// What one `/probe` found.
pub struct ProbeReport {
    request: ProbeRequest,
    dns_lookup: Option<Duration>,
    /// Per address; empty when the name did not resolve.
    outcomes: Vec<(IpAddr, Outcome)>,
    took: Duration,
    trace: String,
}

/// One address probed: what it found, with the attempts' timeout and the wait for a slot.
struct Connected {
    outcome: Outcome,
    timeout: Duration,
    waited: Duration,
}

/// Checks `request` against the allow list, resolves, and probes every address, all within
/// one budget: the scrape timeout (at most [`MAX_SCRAPE_TIMEOUT`], less an offset) when
/// Prometheus sends one, else the config's `timeout x (retries + 1)`.
pub async fn probe<P: Probe + Clone>(
    prober: &P,
    on_demand: &OnDemand,
    config: &Config,
    request: ProbeRequest,
    scrape_timeout: Option<Duration>,
) -> Result<ProbeReport, Refusal> {
    let started = Instant::now();
    let mut trace = String::new();
    let allow = &config.probe_allow;
    if allow.is_empty() {
        return Err(Refusal::Forbidden(
            "/probe is off: the config has no [probe] allow list".into(),
        ));
    }
    let configured = config.defaults.attempts();
    let attempts = configured.count();
    let budget = scrape_timeout
        .map(|t| t.saturating_sub(SCRAPE_TIMEOUT_OFFSET).max(MIN_BUDGET))
        .unwrap_or(configured.budget());
    let deadline = started + budget;
    let target = request.target();
    let _ = writeln!(
        trace,
        "probing {target} over {}: budget {budget:?} for the lookup and the connects, {attempts} attempts of at most {:?}",
        request.protocol.as_str(),
        configured.timeout
    );
    // The service check takes up to one more attempt's timeout, on up to MAX_CONNECTIONS
    // connections: its time is kept inside the deadline, its connections count against the
    // cap of connects in flight.
    let check = request
        .service
        .as_ref()
        .map(|asked| Arc::new(config.defaults.service.for_request(&request.host, asked)));
    let (shares, slots) = match &check {
        Some(check) => {
            let service = check.service.map_or("", ServiceExpect::as_str);
            let _ = writeln!(
                trace,
                "then service={service}: up to one more timeout and {MAX_CONNECTIONS} connections"
            );
            (attempts + 1, MAX_CONNECTIONS)
        }
        None => (attempts, 1),
    };

    let name_allowed = allow.allows_name(&request.host);
    let (addresses, dns_lookup) = match request.host.parse::<IpAddr>() {
        Ok(ip) => (vec![ip], None),
        Err(_) => {
            let lookup_started = Instant::now();
            let left = deadline.saturating_duration_since(lookup_started);
            let resolved = match on_demand.resolver.resolve(&request.host, left).await {
                Ok(ips) => ips,
                Err(LookupError::Busy(_)) => {
                    return Err(Refusal::Unavailable(format!(
                        "/probe is looking up {PROBE_LOOKUP_NAMES} names already, the most at once: try again later"
                    )));
                }
                Err(error) => {
                    let _ = writeln!(trace, "lookup failed: {error}");
                    Vec::new()
                }
            };
            let took = lookup_started.elapsed();
            let _ = writeln!(trace, "resolved to {resolved:?} in {took:?}");
            // `[defaults]` ip_protocol and source_address: only addresses of that family. None
            // left reads as a name that does not resolve.
            let family = config.defaults.family();
            let selected: Vec<IpAddr> = resolved
                .iter()
                .copied()
                .filter(|ip| family.admits(*ip))
                .collect();
            if selected.len() < resolved.len() {
                let _ = writeln!(trace, "{family} addresses only: {selected:?}");
            }
            (selected, Some(took))
        }
    };
    // The addresses checked are the ones connected to: no second lookup to rebind. The refusal
    // is the same whatever the addresses are, and whether there are any.
    if name_allowed {
        let _ = writeln!(trace, "allowed: the name matches the allow list");
    } else if addresses.is_empty() || !addresses.iter().all(|ip| allow.allows_address(*ip)) {
        return Err(Refusal::Forbidden(format!(
            "target {target} is not allowed"
        )));
    } else {
        let _ = writeln!(trace, "allowed: every address is in the allow list");
    }
    // An IP literal of another family than `[defaults]` probes (or their source's) cannot be
    // probed at all: the request asks for what this config does not do.
    if let (None, [ip]) = (dns_lookup, addresses.as_slice()) {
        let defaults = &config.defaults;
        if let Some(why) = conflict(*ip, defaults.ip_protocol, defaults.source_address) {
            return Err(Refusal::BadRequest(format!(
                "target {target}: {ip} {why} in [defaults]"
            )));
        }
    }

    let left = deadline.saturating_duration_since(Instant::now());
    if !addresses.is_empty() && left < MIN_CONNECT_TIME {
        return Err(Refusal::Unavailable(format!(
            "the lookup of {target} left {left:?} of the budget of {budget:?}, too little to connect: try again later"
        )));
    }
    // Connect slots are waited for while enough of the budget is left to use one.
    let slots_until = deadline.checked_sub(MIN_CONNECT_TIME).unwrap_or(deadline);
    let mut probes = JoinSet::new();
    for &ip in &addresses {
        let addr = SocketAddr::new(ip, request.port);
        let prober = prober.clone();
        let connects = on_demand.connects.clone();
        let udp = on_demand.udp.clone();
        let protocol = request.protocol;
        let check = check.clone();
        probes.spawn(async move {
            let waiting = Instant::now();
            let slot = connects.acquire_many_owned(slots);
            let slot = tokio::time::timeout_at(slots_until, slot).await;
            let Ok(Ok(_slot)) = slot else {
                return (ip, None);
            };
            let waited = waiting.elapsed();
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout = configured.timeout.min(left / shares);
            let attempts = Attempts {
                timeout,
                ..configured
            };
            let outcome = match protocol {
                Protocol::Tcp => prober.probe_service(addr, attempts, check.as_deref()).await,
                Protocol::Udp => udp.probe(addr, attempts).await,
            };
            let connected = Connected {
                outcome,
                timeout,
                waited,
            };
            (ip, Some(connected))
        });
    }
    let mut outcomes = Vec::with_capacity(addresses.len());
    while let Some(joined) = probes.join_next().await {
        let Ok((ip, connected)) = joined else {
            continue;
        };
        let Some(Connected {
            outcome,
            timeout,
            waited,
        }) = connected
        else {
            // Dropping `probes` stops the other addresses' connects.
            return Err(Refusal::Unavailable(format!(
                "/probe had no connect slot free for {target} within its budget of {budget:?} \
                 (at most {PROBE_CONNECTS} connects at once across requests): try again later"
            )));
        };
        let _ = write!(
            trace,
            "{ip} port {}: {} ({}) connect {:?}; attempts of at most {timeout:?}",
            request.port,
            outcome.state.as_str(),
            outcome.reason.as_str(),
            outcome.connect
        );
        if waited >= Duration::from_millis(1) {
            let _ = write!(trace, ", after {waited:?} waiting for a connect slot");
        }
        if let Some(found) = &outcome.service {
            let _ = write!(
                trace,
                "; service {} (tls {}, {}",
                found.service.as_str(),
                found.tls.as_str(),
                found.reason.as_str()
            );
            if found.unexpected == Some(true) {
                trace.push_str(", unexpected");
            }
            trace.push(')');
        }
        trace.push('\n');
        outcomes.push((ip, outcome));
    }
    outcomes.sort_by_key(|(ip, _)| *ip);
    Ok(ProbeReport {
        request,
        dns_lookup,
        outcomes,
        took: started.elapsed(),
        trace,
    })
}

impl ProbeReport {
    /// Whether every address met the expectation (and there was at least one), and no
    /// service check found what breaks `service=<name>` (or `tls`).
    pub fn success(&self) -> bool {
        !self.outcomes.is_empty()
            && self.outcomes.iter().all(|(_, o)| {
                let unexpected = o.service.as_ref().and_then(|found| found.unexpected);
                self.request.expect.is_met_by(o.state) && unexpected != Some(true)
            })
    }

    /// The probe as metrics in the text format: the `port_state` family of this probe (and
    /// the service check's families, when `service=` asked for one),
    /// `probe_success` and `probe_duration_seconds`, as blackbox_exporter answers, with the
    /// HELP, TYPE and number formatting of `/metrics` ([`crate::exposition::text`]). Written
    /// directly: a registry per request would cost more than the probe.
    pub fn render(&self) -> Vec<u8> {
        let format = Format::Text;
        let mut state_sets: Vec<(String, Outcome)> = self
            .outcomes
            .iter()
            .map(|(ip, o)| (ip.to_string(), o.clone()))
            .collect();
        if state_sets.is_empty() {
            // The name did not resolve: one series set with ip="" in state error, as /metrics.
            let at = std::time::SystemTime::now();
            state_sets.push((String::new(), Outcome::dns_failure(at)));
        }
        let mut numbers = Numbers::default();
        let series: Vec<(String, Outcome)> = state_sets
            .into_iter()
            .map(|(ip, outcome)| {
                let mut labels = String::from("{");
                push_label(&mut labels, "host", &self.request.host);
                labels.push(',');
                push_label(&mut labels, "port", numbers.int(self.request.port));
                labels.push(',');
                push_label(&mut labels, "protocol", self.request.protocol.as_str());
                labels.push(',');
                push_label(&mut labels, "ip", &ip);
                (labels, outcome)
            })
            .collect();
        let mut out = String::with_capacity(1024);
        PORT_STATE.write_header(&mut out, format);
        for (labels, outcome) in &series {
            for &s in self.request.protocol.states() {
                let value = if s == outcome.state { "1" } else { "0" };
                let suffix = STATE_SUFFIXES[s as usize];
                push_line(&mut out, PORT_STATE.name, labels, suffix, value);
            }
        }
        PORT_STATE_REASON.write_header(&mut out, format);
        for (labels, outcome) in &series {
            let reason = format!(",reason=\"{}\"}} ", outcome.reason.as_str());
            push_line(&mut out, PORT_STATE_REASON.name, labels, &reason, "1");
        }
        if series.iter().any(|(_, o)| o.connect.is_some()) {
            PORT_CONNECT_DURATION.write_header(&mut out, format);
            for (labels, outcome) in &series {
                if let Some(took) = outcome.connect {
                    let took = numbers.float(took.as_secs_f64());
                    push_line(&mut out, PORT_CONNECT_DURATION.name, labels, "} ", took);
                }
            }
        }
        if series.iter().any(|(_, o)| o.service.is_some()) {
            let mut samples = String::new();
            for family in SERVICE_FAMILIES {
                samples.clear();
                for (labels, outcome) in &series {
                    if let Some(found) = &outcome.service {
                        push_service_sample(&mut samples, family, labels, found, &mut numbers);
                    }
                }
                if !samples.is_empty() {
                    family.write_header(&mut out, format);
                    out.push_str(&samples);
                }
            }
        }
        if let Some(took) = self.dns_lookup {
            PROBE_DNS_LOOKUP_TIME.write_header(&mut out, format);
            let took = numbers.float(took.as_secs_f64());
            push_line(&mut out, PROBE_DNS_LOOKUP_TIME.name, "", " ", took);
        }
        PROBE_DURATION.write_header(&mut out, format);
        let took = numbers.float(self.took.as_secs_f64());
        push_line(&mut out, PROBE_DURATION.name, "", " ", took);
        PROBE_SUCCESS.write_header(&mut out, format);
        let success = if self.success() { "1" } else { "0" };
        push_line(&mut out, PROBE_SUCCESS.name, "", " ", success);
        out.into_bytes()
    }

    /// The `?debug=true` answer: the trace, then the metrics.
    pub fn debug_text(&self) -> String {
        let metrics = String::from_utf8_lossy(&self.render()).into_owned();
        format!(
            "Logs for the probe:\n{}took {:?}; probe_success {}\n\nMetrics that would have been returned:\n{metrics}",
            self.trace,
            self.took,
            u8::from(self.success())
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::SystemTime;

    use super::*;
    use crate::domain::{Reason, State};

    fn parse(query: &[(&str, &str)]) -> Result<ProbeRequest, Refusal> {
        let params: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProbeRequest::parse(&params)
    }

    fn host_port(query: &[(&str, &str)]) -> (String, u16) {
        let r = parse(query).unwrap();
        (r.host, r.port)
    }

    #[test]
    fn targets_parse_with_ports_and_bracketed_ipv6() {
        assert_eq!(
            host_port(&[("target", "example.org:443")]),
            ("example.org".into(), 443)
        );
        assert_eq!(
            host_port(&[("target", "127.0.0.1:80")]),
            ("127.0.0.1".into(), 80)
        );
        assert_eq!(host_port(&[("target", "[::1]:22")]), ("::1".into(), 22));
        let r = parse(&[("target", "h:1"), ("expect", "not_open"), ("debug", "true")]).unwrap();
        assert_eq!((r.expect, r.debug), (Expect::NotOpen, true));
    }

    #[test]
    fn protocol_is_tcp_unless_udp_and_its_rules_are_the_configs() {
        let t = ("target", "h:53");
        assert_eq!(parse(&[t]).unwrap().protocol, Protocol::Tcp);
        let udp = parse(&[t, ("protocol", "udp"), ("expect", "open|filtered")]).unwrap();
        assert_eq!(
            (udp.protocol, udp.expect),
            (Protocol::Udp, Expect::OpenFiltered)
        );
        let refused = |query: &[(&str, &str)]| match parse(query) {
            Err(Refusal::BadRequest(message)) => message,
            other => panic!("{query:?}: {other:?}"),
        };
        for (query, says) in [
            (
                vec![t, ("protocol", "UDP")],
                "protocol \"UDP\": expected tcp or udp",
            ),
            (vec![t, ("protocol", "sctp")], "expected tcp or udp"),
            (
                vec![t, ("protocol", "udp"), ("protocol", "tcp")],
                "protocol= given more than once",
            ),
            (
                vec![t, ("expect", "open"), ("expect", "closed")],
                "expect= given more than once",
            ),
            (
                vec![t, ("expect", "open|filtered")],
                "only with protocol=udp",
            ),
            (
                vec![t, ("protocol", "udp"), ("service", "auto")],
                "not with protocol=udp",
            ),
        ] {
            let message = refused(&query);
            assert!(message.contains(says), "{query:?}: {message}");
        }
    }

    #[test]
    fn bad_targets_are_bad_requests() {
        let long = format!("{}:80", "a".repeat(10_000));
        for target in [
            "example.org",
            "example.org:0",
            "example.org:70000",
            "example.org:http",
            ":80",
            "::1:80",
            "[::1]",
            "[nope]:80",
            "exa mple.org:80",
            long.as_str(),
        ] {
            assert!(
                matches!(parse(&[("target", target)]), Err(Refusal::BadRequest(_))),
                "{target:.40}"
            );
        }
        assert!(matches!(parse(&[]), Err(Refusal::BadRequest(_))));
        assert!(matches!(
            parse(&[("target", "h:1"), ("expect", "up")]),
            Err(Refusal::BadRequest(_))
        ));
    }

    #[test]
    fn service_parameters_are_read_by_the_configs_rules() {
        use crate::domain::Service;
        let service = |query: &[(&str, &str)]| parse(query).map(|r| r.service);
        let asked = |service, server_name: Option<&str>, insecure| {
            Ok(Some(RequestedCheck {
                service,
                server_name: server_name.map(String::from),
                insecure_skip_verify: insecure,
            }))
        };
        let t = ("target", "h:1");
        assert_eq!(service(&[t]), Ok(None));
        assert_eq!(
            service(&[t, ("service", "ssh")]),
            asked(ServiceExpect::Named(Service::Ssh), None, None)
        );
        assert_eq!(
            service(&[t, ("service", "auto")]),
            asked(ServiceExpect::Auto, None, None)
        );
        let tls = [
            t,
            ("service", "tls"),
            ("tls_server_name", "[::1]"),
            ("tls_insecure_skip_verify", "false"),
        ];
        assert_eq!(
            service(&tls),
            asked(ServiceExpect::Tls, Some("::1"), Some(false))
        );
        let refused = |query: &[(&str, &str)]| match parse(query) {
            Err(Refusal::BadRequest(message)) => message,
            other => panic!("{query:?}: {other:?}"),
        };
        // The config's own words for what it refuses.
        assert_eq!(
            refused(&[t, ("service", "sshd")]),
            ServiceExpect::parse("sshd").unwrap_err()
        );
        assert!(refused(&[t, ("service", "SSH")]).contains("invalid service \"SSH\""));
        assert_eq!(
            refused(&[t, ("service", "tls"), ("tls_server_name", "a b")]),
            "invalid tls_server_name \"a b\": expected a DNS name or an IP address"
        );
        let skip = refused(&[t, ("service", "tls"), ("tls_insecure_skip_verify", "1")]);
        assert!(skip.contains("expected true or false"), "{skip}");
        assert!(refused(&[t, ("tls_server_name", "x")]).contains("need service="));
        let twice = refused(&[t, ("service", "ssh"), ("service", "http")]);
        assert_eq!(twice, "service= given more than once");
        for file in ["ca_file", "tls_ca_file"] {
            let message = refused(&[t, ("service", "tls"), (file, "/etc/passwd")]);
            assert!(message.contains("cannot name a file"), "{message}");
        }
    }

    #[test]
    fn a_requested_check_takes_defaults_tls_and_the_host_as_server_name() {
        let config = Config::parse(
            "[defaults.tls]\ninsecure_skip_verify = true\n[probe]\nallow = [\"10.0.0.0/8\"]",
            "t",
        )
        .unwrap();
        let asked = parse(&[("target", "db.example:5432"), ("service", "postgresql")])
            .unwrap()
            .service
            .unwrap();
        let check = config.defaults.service.for_request("db.example", &asked);
        assert_eq!(check.tls.server_name.as_deref(), Some("db.example"));
        assert!(check.tls.insecure_skip_verify);
        assert!(check.query.is_none());
        let asked = RequestedCheck {
            server_name: Some("other".into()),
            insecure_skip_verify: Some(false),
            ..asked
        };
        let check = config.defaults.service.for_request("10.0.0.1", &asked);
        assert_eq!(check.tls.server_name.as_deref(), Some("other"));
        assert!(!check.tls.insecure_skip_verify);
    }

    #[test]
    fn probe_writes_the_families_it_shares_with_metrics_alike() {
        use crate::domain::Reason;
        use crate::exposition::table::{headers, render_table, with_headers};
        use crate::state::{RowKey, StateTable};
        use std::time::SystemTime;

        use crate::probe::service::ServiceFinding;

        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let found = ServiceFinding::https_example();
        let outcome = Outcome {
            state: State::Open,
            reason: Reason::SynAck,
            connect: Some(Duration::from_micros(250)),
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1),
            service: Some(Arc::new(found)),
        };
        let report = ProbeReport {
            request: parse(&[("target", "localhost:22")]).unwrap(),
            dns_lookup: Some(Duration::from_millis(3)),
            outcomes: vec![(ip, outcome.clone())],
            took: Duration::from_millis(5),
            trace: String::new(),
        };
        let probe = String::from_utf8(report.render()).unwrap();
        let config = Config::parse("[[targets]]\nhost = \"localhost\"\nports = [22]", "t").unwrap();
        let table = StateTable::new();
        table.set_targets(&config.targets);
        table.record(
            &config.targets[0].name,
            RowKey {
                port: 22,
                ip: Some(ip),
            },
            outcome,
        );
        let rendered = render_table(&table, &[], 1, Vec::new(), 0);
        let body = with_headers(&headers(Format::Text), rendered.families());
        let metrics = String::from_utf8(body.concat()).unwrap();

        let header_of = |text: &str, name: &str| -> Vec<String> {
            let (help, kind) = (format!("# HELP {name} "), format!("# TYPE {name} "));
            text.lines()
                .filter(|l| l.starts_with(&help) || l.starts_with(&kind))
                .map(String::from)
                .collect()
        };
        let shared = [&PORT_STATE, &PORT_STATE_REASON, &PORT_CONNECT_DURATION];
        for family in shared.into_iter().chain(SERVICE_FAMILIES.iter().copied()) {
            let lines = header_of(&probe, family.name);
            assert_eq!(lines.len(), 2, "{}:\n{probe}", family.name);
            assert_eq!(lines, header_of(&metrics, family.name));
        }
        // Every sample carries its family's labels; the numbers are written alike.
        let families: Vec<&crate::families::Family> = shared
            .into_iter()
            .chain(SERVICE_FAMILIES.iter().copied())
            .chain([&PROBE_DNS_LOOKUP_TIME, &PROBE_DURATION, &PROBE_SUCCESS])
            .collect();
        let mut seen = Vec::new();
        for line in probe.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = families.iter().find(|f| f.name == name).expect(name);
            for label in family.labels {
                let label = format!("{label}=\"");
                assert!(
                    line.contains(&format!("{{{label}")) || line.contains(&format!(",{label}")),
                    "{line}"
                );
            }
            seen.push(name);
        }
        seen.dedup();
        assert_eq!(seen, families.iter().map(|f| f.name).collect::<Vec<_>>());
        let expiry = "port_tls_cert_expiry_timestamp_seconds{host=\"localhost\",port=\"22\",protocol=\"tcp\",ip=\"127.0.0.1\"} 1900000000\n";
        assert!(probe.contains(expiry), "{probe}");
        assert!(
            metrics.contains(
                ",host=\"localhost\",port=\"22\",protocol=\"tcp\",ip=\"127.0.0.1\"} 1900000000\n"
            ),
            "{metrics}"
        );
        let connect = "port=\"22\",protocol=\"tcp\",ip=\"127.0.0.1\"} 0.00025\n";
        assert!(
            probe.contains(&format!("{{host=\"localhost\",{connect}")),
            "{probe}"
        );
        assert!(
            metrics.contains(&format!(",host=\"localhost\",{connect}")),
            "{metrics}"
        );
        assert!(
            probe.contains("\nprobe_dns_lookup_time_seconds 0.003\n"),
            "{probe}"
        );
        assert!(probe.ends_with("\nprobe_success 1\n"), "{probe}");
    }

    #[test]
    fn scrape_timeouts_have_a_ceiling_and_anything_but_positive_seconds_is_ignored() {
        let seconds = |s: f64| Some(Duration::from_secs_f64(s));
        for (value, expected) in [
            ("10", seconds(10.0)),
            (" 1.5 ", seconds(1.5)),
            ("60", seconds(60.0)),
            ("60.001", seconds(60.0)),
            ("86400", seconds(60.0)),
            ("1e300", seconds(60.0)),
            ("0", None),
            ("-0", None),
            ("-1", None),
            ("1e-300", None),
            ("NaN", None),
            ("inf", None),
            ("-inf", None),
            ("ten", None),
            ("", None),
        ] {
            assert_eq!(scrape_timeout(value), expected, "{value:?}");
        }
    }

    /// A probe of a silent port: it takes every attempt's timeout, and counts how many run.
    #[derive(Clone, Default)]
    struct SilentProbe {
        in_flight: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
    }

    impl Probe for SilentProbe {
        async fn probe(&self, _addr: SocketAddr, attempts: Attempts) -> Outcome {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(attempts.budget()).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            Outcome {
                state: State::Filtered,
                reason: Reason::NoResponse,
                connect: None,
                at: SystemTime::now(),
                service: None,
            }
        }
    }

    fn on_demand() -> OnDemand {
        OnDemand::new(IntGauge::new("t", "t").unwrap())
    }

    fn config(allow: &str) -> Config {
        let text =
            format!("[defaults]\ntimeout = \"1s\"\nretries = 1\n[probe]\nallow = [\"{allow}\"]\n");
        Config::parse(&text, "test").unwrap()
    }

    fn request(target: &str) -> ProbeRequest {
        parse(&[("target", target)]).unwrap()
    }

    /// `protocol=udp` on real loopback sockets: a port that answers reads open, a port with
    /// nothing bound closed (ICMP port unreachable), and the answer is written with UDP's
    /// protocol label and state set.
    #[tokio::test]
    async fn protocol_udp_probes_a_datagram_and_writes_udps_states() {
        let responder = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let open = responder.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0; 512];
            // Bounded: answers at most four datagrams.
            for _ in 0..4 {
                let Ok((_, from)) = responder.recv_from(&mut buf) else {
                    return;
                };
                let _ = responder.send_to(b"hi", from);
            }
        });
        let unbound = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let closed = unbound.local_addr().unwrap();
        drop(unbound);
        let (prober, on_demand, config) =
            (SilentProbe::default(), on_demand(), config("127.0.0.1"));
        let udp_request = |addr: SocketAddr, expect: &str| {
            let target = addr.to_string();
            parse(&[("target", &target), ("protocol", "udp"), ("expect", expect)]).unwrap()
        };
        let report = probe(
            &prober,
            &on_demand,
            &config,
            udp_request(open, "open"),
            None,
        )
        .await
        .unwrap();
        assert_eq!(report.outcomes[0].1.state, State::Open, "{}", report.trace);
        assert!(report.success());
        let text = String::from_utf8(report.render()).unwrap();
        let labels = format!(
            "{{host=\"127.0.0.1\",port=\"{}\",protocol=\"udp\",ip=\"127.0.0.1\"",
            open.port()
        );
        for line in [
            format!("port_state{labels},state=\"open\"}} 1\n"),
            format!("port_state{labels},state=\"open|filtered\"}} 0\n"),
            format!("port_state_reason{labels},reason=\"udp-response\"}} 1\n"),
        ] {
            assert!(text.contains(&line), "{line:?} missing from\n{text}");
        }
        assert!(text.ends_with("\nprobe_success 1\n"), "{text}");
        let report = probe(
            &prober,
            &on_demand,
            &config,
            udp_request(closed, "closed"),
            None,
        )
        .await
        .unwrap();
        assert_eq!(
            report.outcomes[0].1.state,
            State::Closed,
            "{}",
            report.trace
        );
        assert!(report.success());
        // The TCP prober was never asked.
        assert_eq!(prober.most.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn connects_in_flight_are_capped_across_requests_within_each_deadline() {
        let prober = SilentProbe::default();
        let on_demand = Arc::new(on_demand());
        let config = Arc::new(config("127.0.0.0/8"));
        let started = Instant::now();
        let mut requests = JoinSet::new();
        for i in 0..PROBE_CONNECTS + 4 {
            let (prober, on_demand, config) = (prober.clone(), on_demand.clone(), config.clone());
            let target = format!("127.0.0.{}:80", i + 1);
            requests.spawn(async move {
                let answer = probe(&prober, &on_demand, &config, request(&target), None).await;
                (answer.map(|r| r.success()), started.elapsed())
            });
        }
        let (mut probed, mut refused) = (0, 0);
        while let Some(joined) = requests.join_next().await {
            let (answer, took) = joined.unwrap();
            match answer {
                // Two attempts of 1 s at the silent port: the config's budget.
                Ok(success) => {
                    assert!(!success);
                    assert_eq!(took, Duration::from_secs(2));
                    probed += 1;
                }
                // No slot came free while the budget could still use one.
                Err(Refusal::Unavailable(message)) => {
                    assert!(message.contains("try again"), "{message}");
                    assert_eq!(took, Duration::from_secs(2) - MIN_CONNECT_TIME);
                    refused += 1;
                }
                Err(other) => panic!("{other:?}"),
            }
        }
        assert_eq!((probed, refused), (PROBE_CONNECTS, 4));
        assert_eq!(prober.most.load(Ordering::SeqCst), PROBE_CONNECTS);
        // The slots come back.
        let again = probe(&prober, &on_demand, &config, request("127.0.0.1:80"), None).await;
        assert!(again.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_for_a_connect_slot_comes_off_the_budget() {
        let prober = SilentProbe::default();
        let on_demand = Arc::new(on_demand());
        let config = Arc::new(config("127.0.0.0/8"));
        // Every slot taken for 1 s (budget 1.5 s less the offset: 2 attempts of 0.5 s)...
        let mut holders = JoinSet::new();
        for _ in 0..PROBE_CONNECTS {
            let (prober, on_demand, config) = (prober.clone(), on_demand.clone(), config.clone());
            holders.spawn(async move {
                let timeout = Some(Duration::from_millis(1500));
                probe(
                    &prober,
                    &on_demand,
                    &config,
                    request("127.0.0.1:80"),
                    timeout,
                )
                .await
            });
        }
        tokio::task::yield_now().await;
        // ... so a request of a 2 s budget gets its slot after 1 s, and 2 attempts of 0.5 s.
        let started = Instant::now();
        let report = probe(&prober, &on_demand, &config, request("127.0.0.2:80"), None)
            .await
            .unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert!(
            report
                .trace
                .contains("attempts of at most 500ms, after 1s waiting"),
            "{}",
            report.trace
        );
        while let Some(held) = holders.join_next().await {
            assert!(held.unwrap().is_ok());
        }
    }

    /// A service check costs up to one more timeout and [`MAX_CONNECTIONS`] connections: the
    /// attempts are fitted so that it ends by the deadline, and its connections count
    /// against the cap of connects in flight.
    #[tokio::test(start_paused = true)]
    async fn a_service_check_fits_the_deadline_and_counts_against_the_connect_cap() {
        let prober = SilentProbe::default();
        let on_demand = Arc::new(on_demand());
        let config = Arc::new(config("127.0.0.0/8"));
        let with_service = |target: &str| ProbeRequest {
            service: Some(RequestedCheck {
                service: ServiceExpect::Auto,
                server_name: None,
                insecure_skip_verify: None,
            }),
            ..request(target)
        };
        // A budget of 2 s: two attempts and the check, a third each.
        let report = probe(
            &prober,
            &on_demand,
            &config,
            with_service("127.0.0.1:80"),
            None,
        )
        .await
        .unwrap();
        assert!(
            report.trace.contains("attempts of at most 666.666666ms"),
            "{}",
            report.trace
        );
        // As many checks at once as the cap has room for four connections each.
        let started = Instant::now();
        let mut requests = JoinSet::new();
        let requests_at_once = PROBE_CONNECTS / MAX_CONNECTIONS as usize;
        for i in 0..requests_at_once + 1 {
            let (prober, on_demand, config) = (prober.clone(), on_demand.clone(), config.clone());
            let request = with_service(&format!("127.0.0.{}:80", i + 1));
            requests.spawn(async move { probe(&prober, &on_demand, &config, request, None).await });
        }
        while let Some(joined) = requests.join_next().await {
            assert!(joined.unwrap().is_ok());
        }
        assert_eq!(prober.most.load(Ordering::SeqCst), requests_at_once);
        // The last waited for the first ones' slots, and still ended by its deadline.
        assert!(started.elapsed() <= Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_refusal_names_the_target_and_nothing_it_resolves_to() {
        let prober = SilentProbe::default();
        let on_demand = on_demand();
        let config = config("10.0.0.0/8");
        // localhost resolves from the hosts file (no query) to loopback, outside the list.
        for target in [
            "localhost:80",
            "127.0.0.1:80",
            "[::1]:80",
            "[::ffff:127.0.0.1]:80",
        ] {
            for debug in [false, true] {
                let request = ProbeRequest {
                    debug,
                    ..request(target)
                };
                let refusal = probe(&prober, &on_demand, &config, request, None).await;
                let expected = format!("target {target} is not allowed");
                assert_eq!(refusal.err(), Some(Refusal::Forbidden(expected)));
            }
        }
        assert_eq!(prober.most.load(Ordering::SeqCst), 0, "nothing connected");
    }
}
