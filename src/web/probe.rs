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
use crate::exposition::text::{
    Format, Numbers, PORT_CONNECT_DURATION, PORT_STATE, PORT_STATE_REASON, PROBE_DNS_LOOKUP_TIME,
    PROBE_DURATION, PROBE_SUCCESS, STATE_SUFFIXES, push_label, push_line,
};
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
    /// `probe_success` and `probe_duration_seconds`, as blackbox_exporter answers, with the
    /// HELP, TYPE and number formatting of `/metrics` ([`crate::exposition::text`]). Written
    /// directly: a registry per request would cost more than the probe.
    pub fn render(&self) -> Vec<u8> {
        let format = Format::Text;
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
        let mut numbers = Numbers::default();
        let series: Vec<(String, Outcome)> = state_sets
            .into_iter()
            .map(|(ip, outcome)| {
                let mut labels = String::from("{");
                push_label(&mut labels, "host", &self.request.host);
                labels.push(',');
                push_label(&mut labels, "port", numbers.int(self.request.port));
                labels.push(',');
                push_label(&mut labels, "ip", &ip);
                (labels, outcome)
            })
            .collect();
        let mut out = String::with_capacity(1024);
        PORT_STATE.write_header(&mut out, format);
        for (labels, outcome) in &series {
            for s in State::ALL {
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

    #[test]
    fn probe_writes_the_families_it_shares_with_metrics_alike() {
        use crate::domain::Reason;
        use crate::exposition::table::{headers, render_table, with_headers};
        use crate::state::{RowKey, StateTable};
        use std::time::SystemTime;

        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let outcome = Outcome {
            state: State::Open,
            reason: Reason::SynAck,
            connect: Some(Duration::from_micros(250)),
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1),
        };
        let report = ProbeReport {
            request: parse(&[("target", "localhost:22")]).unwrap(),
            dns_lookup: Some(Duration::from_millis(3)),
            outcomes: vec![(ip, outcome)],
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
        let rendered = render_table(&table, 1, Vec::new(), 0);
        let body = with_headers(&headers(Format::Text), rendered.families());
        let metrics = String::from_utf8(body.concat()).unwrap();

        let header_of = |text: &str, name: &str| -> Vec<String> {
            let (help, kind) = (format!("# HELP {name} "), format!("# TYPE {name} "));
            text.lines()
                .filter(|l| l.starts_with(&help) || l.starts_with(&kind))
                .map(String::from)
                .collect()
        };
        for family in [&PORT_STATE, &PORT_STATE_REASON, &PORT_CONNECT_DURATION] {
            let lines = header_of(&probe, family.name);
            assert_eq!(lines.len(), 2, "{}:\n{probe}", family.name);
            assert_eq!(lines, header_of(&metrics, family.name));
        }
        // Every sample carries its family's labels; the numbers are written alike.
        let families = [
            &PORT_STATE,
            &PORT_STATE_REASON,
            &PORT_CONNECT_DURATION,
            &PROBE_DNS_LOOKUP_TIME,
            &PROBE_DURATION,
            &PROBE_SUCCESS,
        ];
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
        assert_eq!(seen, families.map(|f| f.name));
        let connect = "port=\"22\",ip=\"127.0.0.1\"} 0.00025\n";
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
}
