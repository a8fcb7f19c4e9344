//! `/probe?target=host:port`: one probe on demand, the multi-target pattern of
//! blackbox_exporter, so that Prometheus service discovery (and hashmod sharding) can drive
//! probing.
//!
//! An open `/probe` would let anyone make the exporter connect anywhere (an SSRF relay), so it
//! only connects to what the config's `[probe] allow` list names, checked against the very
//! addresses it then connects to.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::Config;
use crate::config::host::valid_host_name;
use crate::domain::Expect;
use crate::domain::{Attempts, State};
use crate::exposition::table::push_label;
use crate::probe::{Outcome, Probe};
use crate::schedule::resolve::Resolver;

/// Taken off Prometheus' scrape timeout so the answer arrives before it gives up.
const SCRAPE_TIMEOUT_OFFSET: Duration = Duration::from_millis(500);
/// The least time a probe is given, whatever the scrape timeout says.
const MIN_BUDGET: Duration = Duration::from_millis(100);

/// A parsed `/probe` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeRequest {
    pub host: String,
    pub port: u16,
    /// What `probe_success` checks; `open` unless `?expect=` says otherwise.
    pub expect: Expect,
    /// `?debug=true`: answer with the probe's trace instead of metrics.
    pub debug: bool,
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
}

impl ProbeRequest {
    /// Parses the query string: `target=host:port` (IPv6 in brackets), optional
    /// `expect=open|closed|filtered|not_open|any` and `debug=true`.
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
        let expect = match param("expect") {
            None => Expect::Open,
            Some(word) => match word.parse() {
                Ok(expect) => expect,
                Err(unknown) => return bad(format!("{unknown}")),
            },
        };
        let debug = match param("debug").map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => return bad(format!("debug {other:?}: expected true or false")),
        };
        Ok(ProbeRequest {
            host: host.to_string(),
            port,
            expect,
            debug,
        })
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

/// Checks `request` against the allow list, resolves, and probes every address; the budget is
/// the scrape timeout (less an offset) when Prometheus sends one.
pub async fn probe<P: Probe + Clone>(
    prober: &P,
    resolver: &Arc<Resolver>,
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
    let timeout = configured.timeout.min(budget / attempts);
    let _ = writeln!(
        trace,
        "probing {}:{} (timeout {timeout:?} x {attempts} attempts, budget {budget:?})",
        request.host, request.port
    );

    let name_allowed = allow.allows_name(&request.host);
    let (addresses, dns_lookup) = match request.host.parse::<IpAddr>() {
        Ok(ip) => (vec![ip], None),
        Err(_) => {
            let lookup_started = Instant::now();
            let resolved = match resolver.resolve(&request.host, budget).await {
                Ok(ips) => ips,
                Err(error) => {
                    let _ = writeln!(trace, "lookup failed: {error}");
                    Vec::new()
                }
            };
            let took = lookup_started.elapsed();
            let _ = writeln!(trace, "resolved to {resolved:?} in {took:?}");
            (resolved, Some(took))
        }
    };
    // The addresses checked are the ones connected to: no second lookup to rebind.
    if name_allowed {
        let _ = writeln!(trace, "allowed: the name matches the allow list");
    } else {
        let outside: Vec<String> = addresses
            .iter()
            .filter(|ip| !allow.allows_address(**ip))
            .map(IpAddr::to_string)
            .collect();
        if addresses.is_empty() || !outside.is_empty() {
            let why = if addresses.is_empty() {
                "it does not resolve".to_string()
            } else {
                format!("{} outside the allow list", outside.join(", "))
            };
            return Err(Refusal::Forbidden(format!(
                "target {} is not allowed: {why}",
                request.host
            )));
        }
        let _ = writeln!(trace, "allowed: every address is in the allow list");
    }

    let mut probes = JoinSet::new();
    for &ip in &addresses {
        let addr = SocketAddr::new(ip, request.port);
        let prober = prober.clone();
        let attempts = Attempts {
            timeout,
            ..configured
        };
        probes.spawn(async move { (ip, prober.probe(addr, attempts).await) });
    }
    let mut outcomes = Vec::with_capacity(addresses.len());
    while let Some(joined) = probes.join_next().await {
        if let Ok((ip, outcome)) = joined {
            let _ = writeln!(
                trace,
                "{ip} port {}: {} ({}) connect {:?}",
                request.port,
                outcome.state.as_str(),
                outcome.reason.as_str(),
                outcome.connect
            );
            outcomes.push((ip, outcome));
        }
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
    /// Whether every address met the expectation (and there was at least one).
    pub fn success(&self) -> bool {
        !self.outcomes.is_empty()
            && self
                .outcomes
                .iter()
                .all(|(_, o)| self.request.expect.is_met_by(o.state))
    }

    /// The probe as metrics in the text format: the `port_state` family of this probe,
    /// `probe_success` and `probe_duration_seconds`, as blackbox_exporter answers. Written
    /// directly: a registry per request would cost more than the probe.
    pub fn render(&self) -> Vec<u8> {
        let mut state_sets: Vec<(String, Outcome)> = self
            .outcomes
            .iter()
            .map(|(ip, o)| (ip.to_string(), *o))
            .collect();
        if state_sets.is_empty() {
            // The name did not resolve: one series set with ip="" in state error, as /metrics.
            let at = std::time::SystemTime::now();
            state_sets.push((String::new(), Outcome::dns_failure(at)));
        }
        let labels: Vec<String> = state_sets
            .iter()
            .map(|(ip, _)| {
                let mut labels = String::from("{");
                push_label(&mut labels, "host", &self.request.host);
                labels.push_str(&format!(",port=\"{}\",", self.request.port));
                push_label(&mut labels, "ip", ip);
                labels
            })
            .collect();
        let mut out = String::with_capacity(1024);
        let header = |out: &mut String, name: &str, help: &str| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        };
        header(
            &mut out,
            "port_state",
            "Port state as a state set: 1 for the current state.",
        );
        for (labels, (_, outcome)) in labels.iter().zip(&state_sets) {
            for s in State::ALL {
                let value = u8::from(s == outcome.state);
                out.push_str(&format!(
                    "port_state{labels},state=\"{}\"}} {value}\n",
                    s.as_str()
                ));
            }
        }
        header(
            &mut out,
            "port_state_reason",
            "The reason behind the current port state.",
        );
        for (labels, (_, outcome)) in labels.iter().zip(&state_sets) {
            let reason = outcome.reason.as_str();
            out.push_str(&format!(
                "port_state_reason{labels},reason=\"{reason}\"}} 1\n"
            ));
        }
        if state_sets.iter().any(|(_, o)| o.connect.is_some()) {
            header(
                &mut out,
                "port_connect_duration_seconds",
                "Time from connect() to the answer; absent when nothing answered.",
            );
            for (labels, (_, outcome)) in labels.iter().zip(&state_sets) {
                if let Some(took) = outcome.connect {
                    let took = took.as_secs_f64();
                    out.push_str(&format!("port_connect_duration_seconds{labels}}} {took}\n"));
                }
            }
        }
        if let Some(took) = self.dns_lookup {
            header(
                &mut out,
                "probe_dns_lookup_time_seconds",
                "How long the DNS lookup took.",
            );
            out.push_str(&format!(
                "probe_dns_lookup_time_seconds {}\n",
                took.as_secs_f64()
            ));
        }
        header(
            &mut out,
            "probe_duration_seconds",
            "How long the probe took, lookup included.",
        );
        out.push_str(&format!(
            "probe_duration_seconds {}\n",
            self.took.as_secs_f64()
        ));
        header(
            &mut out,
            "probe_success",
            "Whether the probe met its expectation.",
        );
        out.push_str(&format!("probe_success {}\n", u8::from(self.success())));
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
    use super::*;

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
}
