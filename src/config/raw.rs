//! The config file as serde reads it: every table `deny_unknown_fields`, every value with its
//! span, so validation can say where a bad value is.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::address::{IpProtocol, check_source_family, conflict, validate_source_address};
use super::allow::validate_allow_list;
use super::duration::{format_duration, parse_duration};
use super::host::validate_host;
use super::ports::{RawPorts, validate_ports};
use super::service::{RawQuery, RawTls, ServiceKeys, validate_udp_query};
use super::{Config, DEFAULT_MAX_RETRIES, DEFAULT_MIN_TIMEOUT, Defaults, Invalid, Target, invalid};
use crate::domain::{Attempts, Close, Expect, Protocol, Timing};

/// Label names the exporter sets itself; a target's `labels` may not reuse them.
const RESERVED_LABELS: [&str; 7] = [
    "target", "host", "port", "protocol", "ip", "state", "reason",
];

/// Upper bound for `retries`: more attempts only delay the verdict on a silent port.
const MAX_RETRIES: u32 = 10;

/// Upper bound for `max_retries`: adaptive retries are short, and only where answers are lost.
const MAX_ADAPTIVE_RETRIES: u32 = 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    targets: Vec<Spanned<RawTarget>>,
    #[serde(default)]
    probe: RawProbe,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    #[serde(default)]
    allow: Vec<Spanned<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    interval: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    retries: Option<Spanned<u32>>,
    timing: Option<TimingMode>,
    min_timeout: Option<Spanned<String>>,
    max_retries: Option<Spanned<u32>>,
    expect: Option<Expect>,
    close: Option<Close>,
    ip_protocol: Option<Spanned<IpProtocol>>,
    protocol: Option<Protocol>,
    source_address: Option<Spanned<String>>,
    service: Option<Spanned<String>>,
    tls: Option<RawTls>,
    query: Option<RawQuery>,
}

#[derive(Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum TimingMode {
    Adaptive,
    Fixed,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    name: Option<Spanned<String>>,
    host: Spanned<String>,
    ports: Spanned<Vec<Spanned<RawPorts>>>,
    exclude: Option<Spanned<Vec<Spanned<RawPorts>>>>,
    expect: Option<Expect>,
    labels: Option<Spanned<BTreeMap<String, String>>>,
    interval: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    retries: Option<Spanned<u32>>,
    timing: Option<TimingMode>,
    min_timeout: Option<Spanned<String>>,
    max_retries: Option<Spanned<u32>>,
    close: Option<Close>,
    ip_protocol: Option<Spanned<IpProtocol>>,
    protocol: Option<Protocol>,
    source_address: Option<Spanned<String>>,
    service: Option<Spanned<String>>,
    tls: Option<RawTls>,
    query: Option<RawQuery>,
}

impl RawConfig {
    /// Validates every table; a relative `ca_file` is taken relative to `base` (the config
    /// file's folder), else to the working directory.
    pub(super) fn validate(self, base: Option<&Path>) -> Result<Config, Invalid> {
        let builtin = Defaults::default();
        let d = &self.defaults;
        let (ip_protocol, source_address) = d.address_selection()?;
        let defaults = Defaults {
            interval: optional_duration(&d.interval, "interval")?.unwrap_or(builtin.interval),
            timeout: optional_duration(&d.timeout, "timeout")?.unwrap_or(builtin.timeout),
            retries: optional_retries(&d.retries, "retries", MAX_RETRIES)?
                .unwrap_or(builtin.retries),
            timing: builtin.timing,
            expect: d.expect.unwrap_or(builtin.expect),
            close: d.close.unwrap_or(builtin.close),
            ip_protocol,
            protocol: d.protocol.unwrap_or(builtin.protocol),
            source_address,
            service: ServiceKeys {
                service: &d.service,
                tls: &d.tls,
                query: &d.query,
            }
            .validate_defaults(base)?,
        };
        let defaults = Defaults {
            timing: validate_timing(
                TimingKeys {
                    mode: d.timing,
                    min_timeout: &d.min_timeout,
                    max_retries: &d.max_retries,
                },
                defaults.timeout,
                builtin.timing,
            )?,
            ..defaults
        };
        let mut names = HashSet::new();
        let mut targets = Vec::with_capacity(self.targets.len());
        for raw in self.targets {
            let span = raw.span();
            let raw = raw.into_inner();
            // The name defaults to the host, so a duplicate is reported where the name came from.
            let name_span = raw.name.as_ref().unwrap_or(&raw.host).span();
            let target = raw.validate(&defaults, span, base)?;
            if !names.insert(target.name.clone()) {
                return invalid(
                    name_span,
                    format!(
                        "duplicate target name {:?}: names must be unique",
                        target.name
                    ),
                );
            }
            targets.push(target);
        }
        let probe_allow = validate_allow_list(&self.probe.allow)?;
        Ok(Config {
            targets,
            defaults,
            probe_allow,
            source: String::new(),
        })
    }
}

impl RawTarget {
    fn validate(
        self,
        defaults: &Defaults,
        span: Range<usize>,
        base: Option<&Path>,
    ) -> Result<Target, Invalid> {
        let host = validate_host(&self.host)?;
        let (ip_protocol, source_address) = self.address_selection(&host, defaults)?;
        let name = match &self.name {
            Some(name) if name.get_ref().trim().is_empty() => {
                return invalid(name.span(), "target name must not be empty");
            }
            Some(name) => name.get_ref().clone(),
            None => host.clone(),
        };
        let (ports, listed) = validate_ports(&self.ports, self.exclude.as_ref())?;
        let labels = match &self.labels {
            Some(labels) => validate_labels(labels)?,
            None => Vec::new(),
        };
        let interval = optional_duration(&self.interval, "interval")?.unwrap_or(defaults.interval);
        let timeout = optional_duration(&self.timeout, "timeout")?.unwrap_or(defaults.timeout);
        let retries =
            optional_retries(&self.retries, "retries", MAX_RETRIES)?.unwrap_or(defaults.retries);
        let timing = validate_timing(
            TimingKeys {
                mode: self.timing,
                min_timeout: &self.min_timeout,
                max_retries: &self.max_retries,
            },
            timeout,
            defaults.timing,
        )?;
        let protocol = self.protocol.unwrap_or(defaults.protocol);
        let expect = self.expect.unwrap_or(defaults.expect);
        if expect == Expect::OpenFiltered && protocol != Protocol::Udp {
            return invalid(
                span,
                format!(
                    "target {name:?}: expect \"open|filtered\" is a UDP state: only for protocol = \"udp\""
                ),
            );
        }
        let service = match protocol {
            Protocol::Tcp => ServiceKeys {
                service: &self.service,
                tls: &self.tls,
                query: &self.query,
            }
            .validate_target(&defaults.service, &host, base)?,
            Protocol::Udp => {
                let set = [self.service.as_ref().map(Spanned::span)]
                    .into_iter()
                    .flatten()
                    .next()
                    .or(self.tls.is_some().then(|| span.clone()));
                if let Some(at) = set {
                    return invalid(
                        at,
                        format!(
                            "target {name:?}: service and tls are TCP service checks: not for protocol = \"udp\" (a query of one step is)"
                        ),
                    );
                }
                // Its own query only: [defaults]' service checks are for the TCP targets.
                match &self.query {
                    Some(query) => Some(Arc::new(validate_udp_query(query)?)),
                    None => None,
                }
            }
        };
        // A round must fit in its interval, or probes of one port would overlap. A service
        // check takes at most one more `timeout` after the connect.
        let close = self.close.unwrap_or(defaults.close);
        let connects = Attempts {
            timeout,
            retries,
            timing,
            close,
            source: None,
        }
        .budget();
        // A UDP query is the probe's own datagram: no exchange after it.
        let (worst_case, formula) = match (&service, protocol) {
            (Some(_), Protocol::Tcp) => {
                (connects.saturating_add(timeout), "timeout x (retries + 2)")
            }
            _ => (connects, "timeout x (retries + 1)"),
        };
        if worst_case > interval {
            // Point at whichever of the three the target itself sets.
            let span = [&self.timeout, &self.interval]
                .into_iter()
                .flatten()
                .map(Spanned::span)
                .chain(self.retries.as_ref().map(Spanned::span))
                .next()
                .unwrap_or(span);
            return invalid(
                span,
                format!(
                    "target {name:?}: {formula} = {} must not exceed interval {}{}",
                    format_duration(worst_case),
                    format_duration(interval),
                    if service.is_some() {
                        " (a service check takes up to one more timeout)"
                    } else {
                        ""
                    }
                ),
            );
        }
        Ok(Target {
            name,
            host,
            ports,
            listed,
            expect,
            protocol,
            labels,
            interval,
            timeout,
            retries,
            timing,
            close,
            ip_protocol,
            source_address,
            service,
        })
    }
}

/// The timing keys one table (`[defaults]` or a target) sets.
struct TimingKeys<'a> {
    mode: Option<TimingMode>,
    min_timeout: &'a Option<Spanned<String>>,
    max_retries: &'a Option<Spanned<u32>>,
}

/// The timing of a table: what it sets over what it inherits, for its `timeout`.
fn validate_timing(
    keys: TimingKeys<'_>,
    timeout: Duration,
    inherited: Timing,
) -> Result<Timing, Invalid> {
    let (inherited_min, inherited_max) = match inherited {
        Timing::Adaptive {
            min_timeout,
            max_retries,
        } => (min_timeout, max_retries),
        Timing::Fixed => (DEFAULT_MIN_TIMEOUT, DEFAULT_MAX_RETRIES),
    };
    let set_min = optional_duration(keys.min_timeout, "min_timeout")?;
    let max_retries = optional_retries(keys.max_retries, "max_retries", MAX_ADAPTIVE_RETRIES)?
        .unwrap_or(inherited_max);
    let mode = keys.mode.unwrap_or(match inherited {
        Timing::Fixed => TimingMode::Fixed,
        Timing::Adaptive { .. } => TimingMode::Adaptive,
    });
    if mode == TimingMode::Fixed {
        return Ok(Timing::Fixed);
    }
    // An inherited lower bound above this table's timeout follows the timeout down; one set
    // here must fit under it.
    let min_timeout = match (set_min, keys.min_timeout) {
        (Some(min), Some(set)) if min > timeout => {
            return invalid(
                set.span(),
                format!(
                    "min_timeout {} must not exceed timeout {}",
                    format_duration(min),
                    format_duration(timeout)
                ),
            );
        }
        (Some(min), _) => min,
        _ => inherited_min.min(timeout),
    };
    Ok(Timing::Adaptive {
        min_timeout,
        max_retries,
    })
}

impl RawDefaults {
    /// `[defaults]` `ip_protocol` and `source_address`: the source must be of a family that
    /// `ip_protocol` allows.
    fn address_selection(&self) -> Result<(IpProtocol, Option<IpAddr>), Invalid> {
        let ip_protocol = self
            .ip_protocol
            .as_ref()
            .map_or(IpProtocol::default(), |p| *p.get_ref());
        let Some(raw_source) = &self.source_address else {
            return Ok((ip_protocol, None));
        };
        let source = validate_source_address(raw_source)?;
        check_source_family(Some(source), "", ip_protocol, raw_source.span())?;
        Ok((ip_protocol, Some(source)))
    }
}

impl RawTarget {
    /// The target's `ip_protocol` and `source_address` (its own, else `[defaults]`'): they must
    /// agree with each other and with an IP literal `host`.
    fn address_selection(
        &self,
        host: &str,
        defaults: &Defaults,
    ) -> Result<(IpProtocol, Option<IpAddr>), Invalid> {
        let ip_protocol = self
            .ip_protocol
            .as_ref()
            .map_or(defaults.ip_protocol, |p| *p.get_ref());
        let source = match &self.source_address {
            Some(raw) => Some(validate_source_address(raw)?),
            None => defaults.source_address,
        };
        // Point at whichever of the two the target sets itself (the source first): a conflict
        // of two defaults was reported at [defaults].
        let span = (self.source_address.as_ref().map(Spanned::span))
            .or_else(|| self.ip_protocol.as_ref().map(Spanned::span));
        if let Some(span) = span {
            let whose = match self.source_address {
                Some(_) => "",
                None => " of [defaults]",
            };
            check_source_family(source, whose, ip_protocol, span)?;
        }
        if let Ok(ip) = host.parse::<IpAddr>()
            && let Some(why) = conflict(ip, ip_protocol, source)
        {
            return invalid(self.host.span(), format!("host {ip} {why}"));
        }
        Ok((ip_protocol, source))
    }
}

fn validate_labels(
    labels: &Spanned<BTreeMap<String, String>>,
) -> Result<Vec<(String, String)>, Invalid> {
    for name in labels.get_ref().keys() {
        let mut chars = name.chars();
        let well_formed = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !well_formed || name.starts_with("__") {
            return invalid(
                labels.span(),
                format!(
                    "invalid label name {name:?}: expected [a-zA-Z_][a-zA-Z0-9_]* not starting with \"__\""
                ),
            );
        }
        if RESERVED_LABELS.contains(&name.as_str()) {
            return invalid(
                labels.span(),
                format!("label name {name:?} is reserved: the exporter sets it"),
            );
        }
    }
    Ok(labels
        .get_ref()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect())
}

fn optional_duration(
    value: &Option<Spanned<String>>,
    field: &str,
) -> Result<Option<Duration>, Invalid> {
    let Some(value) = value else { return Ok(None) };
    match parse_duration(value.get_ref()) {
        Some(d) if !d.is_zero() => Ok(Some(d)),
        Some(_) => invalid(value.span(), format!("{field} must be greater than zero")),
        None => invalid(
            value.span(),
            format!(
                "invalid {field} {:?}: expected a duration such as \"500ms\", \"15s\", \"1m30s\"",
                value.get_ref()
            ),
        ),
    }
}

fn optional_retries(
    value: &Option<Spanned<u32>>,
    field: &str,
    max: u32,
) -> Result<Option<u32>, Invalid> {
    match value {
        Some(r) if *r.get_ref() > max => invalid(
            r.span(),
            format!("{field} {} too high: expected 0 to {max}", r.get_ref()),
        ),
        Some(r) => Ok(Some(*r.get_ref())),
        None => Ok(None),
    }
}
