//! Configuration: a TOML file parsed strictly into raw structs, then validated into [`Config`].
//!
//! Parsing and validation are separate steps so that every rule lives in one place and every
//! error can point at the file, line and column it is about.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;

use crate::probe::{Attempts, Close, State};

/// The config used when no `--config.file` is given: localhost on the common server ports.
pub const EMBEDDED_DEFAULT: &str = include_str!("default_config.toml");

/// Label names the exporter sets itself; a target's `labels` may not reuse them.
const RESERVED_LABELS: [&str; 6] = ["target", "host", "port", "ip", "state", "reason"];

/// Upper bound for `retries`: more attempts only delay the verdict on a silent port.
const MAX_RETRIES: u32 = 10;

/// The values a target gets for every field it leaves out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Defaults {
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub expect: Expect,
    pub close: Close,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(2),
            retries: 1,
            expect: Expect::Any,
            close: Close::Reset,
        }
    }
}

/// What the operator says a target's ports must look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    Open,
    Closed,
    Filtered,
    NotOpen,
    Any,
}

impl Expect {
    /// Whether `state` breaks this expectation; `None` when there is nothing to break (`any`).
    ///
    /// An `error` state says nothing about the port, so it never breaks an expectation: probe
    /// errors have their own series and alert.
    pub fn is_broken_by(self, state: State) -> Option<bool> {
        let allowed = match self {
            Expect::Any => return None,
            Expect::Open => state == State::Open,
            Expect::Closed => state == State::Closed,
            Expect::Filtered => state == State::Filtered,
            Expect::NotOpen => state != State::Open,
        };
        Some(state != State::Error && !allowed)
    }
}

/// A validated configuration: what the scheduler probes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub targets: Vec<Target>,
    /// Timeout and retries for `/probe` come from here.
    pub defaults: Defaults,
    /// Who `/probe` may connect to; empty: `/probe` is off.
    pub probe_allow: AllowList,
    /// The TOML text this was parsed from, shown at `/config`.
    pub source: String,
}

/// The `[probe] allow` list: address ranges and host name patterns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList {
    /// Networks as (address, prefix length).
    pub networks: Vec<(IpAddr, u8)>,
    /// Lower-case host name patterns; `*` matches any run of characters within the name.
    pub names: Vec<String>,
}

impl AllowList {
    /// Whether `/probe` is enabled at all.
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty() && self.names.is_empty()
    }

    /// Whether `ip` lies in an allowed network.
    pub fn allows_address(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.networks
            .iter()
            .any(|&(network, prefix)| in_network(ip, network, prefix))
    }

    /// Whether the host name matches an allowed pattern (case-insensitively).
    pub fn allows_name(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.names.iter().any(|pattern| glob_match(pattern, &name))
    }
}

/// An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is the IPv4 address it maps.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn in_network(ip: IpAddr, network: IpAddr, prefix: u8) -> bool {
    let (ip, network, width) = match (ip, network) {
        (IpAddr::V4(a), IpAddr::V4(n)) => (u128::from(u32::from(a)), u128::from(u32::from(n)), 32),
        (IpAddr::V6(a), IpAddr::V6(n)) => (u128::from(a), u128::from(n), 128),
        _ => return false,
    };
    let shift = width - u32::from(prefix);
    shift >= width || (ip >> shift) == (network >> shift)
}

/// Matches `text` against `pattern`, where `*` stands for any run of characters but a dot.
fn glob_match(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            let Some(rest) = text.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len())
                .take_while(|&i| !rest[..i].contains('.'))
                .any(|i| glob_match(tail, &rest[i..]))
        }
    }
}

/// One host and the ports to probe on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Unique name, the `target` label.
    pub name: String,
    /// DNS name or IP literal (IPv6 without brackets), the `host` label.
    pub host: String,
    /// Every port to probe: sorted, without duplicates, `exclude` already removed.
    pub ports: Vec<u16>,
    /// The ports listed one by one (not through a range): their series always exist, while a
    /// range port has series only when it is open or breaks the expectation. Sorted.
    pub listed: Vec<u16>,
    pub expect: Expect,
    /// Extra labels for every series of this target, sorted by name.
    pub labels: Vec<(String, String)>,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub close: Close,
}

impl Target {
    /// How each of this target's addresses is probed.
    pub fn attempts(&self) -> Attempts {
        Attempts {
            timeout: self.timeout,
            retries: self.retries,
            close: self.close,
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config file: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}:{line}:{column}: {message}")]
    Invalid {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// The embedded default configuration.
    pub fn embedded_default() -> Config {
        Config::parse(EMBEDDED_DEFAULT, "<embedded default>")
            .expect("the embedded default config is valid (checked by a unit test)")
    }

    /// Parses and validates `text`; `origin` names it in errors (usually the file path).
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let locate = |span: Option<Range<usize>>, message: String| {
            let (line, column) = line_column(text, span.map_or(0, |s| s.start));
            ConfigError::Invalid {
                origin: origin.to_string(),
                line,
                column,
                message,
            }
        };
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| locate(e.span(), e.message().trim().to_string()))?;
        let mut config = raw
            .validate()
            .map_err(|Invalid { span, message }| locate(Some(span), message))?;
        config.source = text.to_string();
        Ok(config)
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// A validation failure with the span of the value it is about.
struct Invalid {
    span: Range<usize>,
    message: String,
}

fn invalid<T>(span: Range<usize>, message: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid {
        span,
        message: message.into(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
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
    expect: Option<Expect>,
    close: Option<Close>,
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
    close: Option<Close>,
}

/// One entry of `ports` or `exclude`: a number or an inclusive `"lo-hi"` range, not yet
/// range-checked.
enum RawPorts {
    Single(i64),
    Range(String),
}

impl<'de> Deserialize<'de> for RawPorts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PortsVisitor;
        impl Visitor<'_> for PortsVisitor {
            type Value = RawPorts;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port number or a \"lo-hi\" range string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawPorts, E> {
                Ok(RawPorts::Single(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawPorts, E> {
                Ok(RawPorts::Single(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawPorts, E> {
                Ok(RawPorts::Range(v.to_string()))
            }
        }
        deserializer.deserialize_any(PortsVisitor)
    }
}

impl RawConfig {
    fn validate(self) -> Result<Config, Invalid> {
        let builtin = Defaults::default();
        let d = &self.defaults;
        let defaults = Defaults {
            interval: optional_duration(&d.interval, "interval")?.unwrap_or(builtin.interval),
            timeout: optional_duration(&d.timeout, "timeout")?.unwrap_or(builtin.timeout),
            retries: optional_retries(&d.retries)?.unwrap_or(builtin.retries),
            expect: d.expect.unwrap_or(builtin.expect),
            close: d.close.unwrap_or(builtin.close),
        };
        let mut names = HashSet::new();
        let mut targets = Vec::with_capacity(self.targets.len());
        for raw in self.targets {
            let span = raw.span();
            let raw = raw.into_inner();
            // The name defaults to the host, so a duplicate is reported where the name came from.
            let name_span = raw.name.as_ref().unwrap_or(&raw.host).span();
            let target = raw.validate(&defaults, span)?;
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
    fn validate(self, defaults: &Defaults, span: Range<usize>) -> Result<Target, Invalid> {
        let host = validate_host(&self.host)?;
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
        let retries = optional_retries(&self.retries)?.unwrap_or(defaults.retries);
        // A round must fit in its interval, or probes of one port would overlap.
        let worst_case = timeout * (retries + 1);
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
                    "target {name:?}: timeout x (retries + 1) = {} must not exceed interval {}",
                    format_duration(worst_case),
                    format_duration(interval)
                ),
            );
        }
        Ok(Target {
            name,
            host,
            ports,
            listed,
            expect: self.expect.unwrap_or(defaults.expect),
            labels,
            interval,
            timeout,
            retries,
            close: self.close.unwrap_or(defaults.close),
        })
    }
}

fn validate_host(host: &Spanned<String>) -> Result<String, Invalid> {
    let text = host.get_ref().as_str();
    // An IPv6 literal may come with brackets, as in URLs; the label carries it without.
    let text = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    if text.is_empty() {
        return invalid(host.span(), "host must not be empty");
    }
    if text.parse::<std::net::IpAddr>().is_ok() {
        return Ok(text.to_string());
    }
    if !valid_host_name(text) {
        return invalid(
            host.span(),
            format!("invalid host {text:?}: expected a DNS name, an IPv4 or an IPv6 address"),
        );
    }
    Ok(text.to_string())
}

/// Whether `text` is a well-formed DNS name: dot-separated labels of letters, digits, `-` and
/// `_`, each 1 to 63 characters, 253 in all.
pub fn valid_host_name(text: &str) -> bool {
    text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// Expands `ports` less `exclude` into the sorted port list, and the ports listed one by one.
/// Works on the entries' ranges, so a target costs what it lists, not 65,535 ports.
fn validate_ports(
    ports: &Spanned<Vec<Spanned<RawPorts>>>,
    exclude: Option<&Spanned<Vec<Spanned<RawPorts>>>>,
) -> Result<(Vec<u16>, Vec<u16>), Invalid> {
    if ports.get_ref().is_empty() {
        return invalid(ports.span(), "ports must list at least one port");
    }
    let mut selected = PortSet::default();
    let mut listed = Vec::new();
    for entry in ports.get_ref() {
        let (lo, hi) = parse_port_entry(entry)?;
        if let Some(port) = selected.first_in(lo, hi) {
            return invalid(
                entry.span(),
                format!("port {port} is listed more than once"),
            );
        }
        selected.insert(lo, hi);
        if matches!(entry.get_ref(), RawPorts::Single(_)) {
            listed.push(lo);
        }
    }
    for entry in exclude.map_or(&[][..], |e| e.get_ref()) {
        let (lo, hi) = parse_port_entry(entry)?;
        if let Some(port) = selected.first_missing_in(lo, hi) {
            return invalid(
                entry.span(),
                format!("exclude: port {port} is not in ports (or excluded twice)"),
            );
        }
        selected.remove(lo, hi);
    }
    let kept = selected.ports();
    if kept.is_empty() {
        let span = exclude.map_or(ports.span(), Spanned::span);
        return invalid(span, "exclude removes every port");
    }
    listed.retain(|&p| selected.first_in(p, p).is_some());
    listed.sort_unstable();
    Ok((kept, listed))
}

/// A set of ports as disjoint inclusive ranges, keyed by their first port.
#[derive(Default)]
struct PortSet(BTreeMap<u16, u16>);

impl PortSet {
    /// The range holding `port`, if any.
    fn holding(&self, port: u16) -> Option<(u16, u16)> {
        let (&lo, &hi) = self.0.range(..=port).next_back()?;
        (hi >= port).then_some((lo, hi))
    }

    /// The lowest port of `lo..=hi` in the set.
    fn first_in(&self, lo: u16, hi: u16) -> Option<u16> {
        if self.holding(lo).is_some() {
            return Some(lo);
        }
        self.0.range(lo..=hi).next().map(|(&start, _)| start)
    }

    /// The lowest port of `lo..=hi` not in the set.
    fn first_missing_in(&self, lo: u16, hi: u16) -> Option<u16> {
        let mut port = lo;
        while let Some((_, end)) = self.holding(port) {
            if end >= hi {
                return None;
            }
            port = end + 1;
        }
        Some(port)
    }

    /// Adds `lo..=hi`, which must not overlap the set.
    fn insert(&mut self, lo: u16, hi: u16) {
        self.0.insert(lo, hi);
    }

    /// Removes `lo..=hi`, which must lie within the set.
    fn remove(&mut self, lo: u16, hi: u16) {
        let mut overlapping: Vec<(u16, u16)> = self
            .holding(lo)
            .into_iter()
            .chain(self.0.range(lo..=hi).map(|(&a, &b)| (a, b)))
            .collect();
        overlapping.dedup();
        for (start, end) in overlapping {
            self.0.remove(&start);
            if start < lo {
                self.0.insert(start, lo - 1);
            }
            if end > hi {
                self.0.insert(hi + 1, end);
            }
        }
    }

    /// Every port, in order.
    fn ports(&self) -> Vec<u16> {
        self.0.iter().flat_map(|(&lo, &hi)| lo..=hi).collect()
    }
}

fn parse_port_entry(entry: &Spanned<RawPorts>) -> Result<(u16, u16), Invalid> {
    let port = |n: i64| -> Result<u16, Invalid> {
        match u16::try_from(n) {
            Ok(p) if p >= 1 => Ok(p),
            _ => invalid(
                entry.span(),
                format!("port {n} out of range: expected 1 to 65535"),
            ),
        }
    };
    match entry.get_ref() {
        RawPorts::Single(n) => port(*n).map(|p| (p, p)),
        RawPorts::Range(text) => {
            let bad = || {
                invalid(
                    entry.span(),
                    format!("invalid port range {text:?}: expected \"lo-hi\", e.g. \"8000-8010\""),
                )
            };
            let Some((lo, hi)) = text.split_once('-') else {
                return bad();
            };
            let (Ok(lo), Ok(hi)) = (lo.trim().parse::<i64>(), hi.trim().parse::<i64>()) else {
                return bad();
            };
            let (lo, hi) = (port(lo)?, port(hi)?);
            if lo > hi {
                return invalid(
                    entry.span(),
                    format!("invalid port range {text:?}: the first port must not exceed the last"),
                );
            }
            Ok((lo, hi))
        }
    }
}

fn validate_allow_list(entries: &[Spanned<String>]) -> Result<AllowList, Invalid> {
    let mut allow = AllowList::default();
    for entry in entries {
        let text = entry.get_ref().trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        if let Ok(ip) = address.parse::<IpAddr>() {
            let width = if ip.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix.map(str::parse::<u8>) {
                None => width,
                Some(Ok(p)) if p <= width => p,
                Some(_) => {
                    return invalid(
                        entry.span(),
                        format!("invalid network {text:?}: the prefix length must be 0 to {width}"),
                    );
                }
            };
            allow.networks.push((canonical(ip), prefix));
            continue;
        }
        let valid_pattern = prefix.is_none()
            && !text.is_empty()
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '*'));
        if !valid_pattern {
            return invalid(
                entry.span(),
                format!(
                    "invalid allow entry {text:?}: expected an address, a network such as \"10.0.0.0/8\", or a host name pattern such as \"*.example.org\""
                ),
            );
        }
        allow.names.push(text.to_ascii_lowercase());
    }
    Ok(allow)
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

fn optional_retries(value: &Option<Spanned<u32>>) -> Result<Option<u32>, Invalid> {
    match value {
        Some(r) if *r.get_ref() > MAX_RETRIES => invalid(
            r.span(),
            format!(
                "retries {} too high: expected 0 to {MAX_RETRIES}",
                r.get_ref()
            ),
        ),
        Some(r) => Ok(Some(*r.get_ref())),
        None => Ok(None),
    }
}

/// The units of a duration, largest first, with their length in milliseconds.
pub const DURATION_UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Parses a Prometheus-style duration: units d, h, m, s, ms in decreasing order, e.g. "1m30s".
pub fn parse_duration(text: &str) -> Option<Duration> {
    if text.is_empty() {
        return None;
    }
    let mut rest = text;
    let mut total_ms: u64 = 0;
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let index = DURATION_UNITS[next_unit..]
            .iter()
            .position(|(u, _)| *u == unit)?
            + next_unit;
        total_ms = total_ms.checked_add(number.checked_mul(DURATION_UNITS[index].1)?)?;
        next_unit = index + 1;
    }
    Some(Duration::from_millis(total_ms))
}

/// Formats a duration the way it is written in the config.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid_and_probes_common_ports_on_localhost() {
        let config = Config::embedded_default();
        assert_eq!(config.targets.len(), 1);
        assert_eq!(config.targets[0].host, "localhost");
        assert_eq!(config.targets[0].ports, [21, 22, 25, 80, 443, 3306, 3389]);
    }

    #[test]
    fn defaults_fill_missing_fields() {
        let config = Config::parse("[[targets]]\nhost = \"h\"\nports = [1]\n", "t").unwrap();
        let t = &config.targets[0];
        let d = Defaults::default();
        assert_eq!(t.name, "h");
        assert_eq!(
            (t.interval, t.timeout, t.retries, t.expect),
            (d.interval, d.timeout, d.retries, d.expect)
        );
    }

    #[test]
    fn target_fields_override_defaults_and_ranges_expand() {
        let text = r#"
            [defaults]
            interval = "1m"
            expect = "closed"
            [[targets]]
            name = "web"
            host = "[::1]"
            ports = ["8000-8002", 443, 80]
            expect = "not_open"
            timeout = "500ms"
            retries = 3
            labels = { team = "web", env = "prod" }
        "#;
        let t = &Config::parse(text, "t").unwrap().targets[0];
        assert_eq!(t.host, "::1");
        assert_eq!(t.ports, [80, 443, 8000, 8001, 8002]);
        assert_eq!(t.listed, [80, 443]);
        assert_eq!(t.expect, Expect::NotOpen);
        assert_eq!(t.interval, Duration::from_secs(60));
        assert_eq!(t.timeout, Duration::from_millis(500));
        assert_eq!(t.retries, 3);
        assert_eq!(
            t.labels,
            [("env".into(), "prod".into()), ("team".into(), "web".into())]
        );
    }

    #[test]
    fn exclude_removes_ports_and_ranges() {
        let text = r#"
            [[targets]]
            host = "h"
            ports = ["1-65535"]
            exclude = [22, "8000-8009", 443]
            [[targets]]
            name = "listed"
            host = "h"
            ports = [22, 80, "100-102"]
            exclude = [80, 101]
        "#;
        let config = Config::parse(text, "t").unwrap();
        let all = &config.targets[0];
        assert_eq!(all.ports.len(), 65535 - 12);
        assert!(!all.ports.contains(&22) && !all.ports.contains(&8005));
        assert!(all.ports.contains(&21) && all.ports.contains(&8010));
        assert!(all.listed.is_empty());
        let listed = &config.targets[1];
        assert_eq!(listed.ports, [22, 100, 102]);
        assert_eq!(listed.listed, [22]);
    }

    #[test]
    fn durations_parse_like_prometheus() {
        let cases = [
            ("15s", Some(15_000)),
            ("1m30s", Some(90_000)),
            ("500ms", Some(500)),
            ("1h", Some(3_600_000)),
            ("2d", Some(172_800_000)),
            ("1s500ms", Some(1_500)),
            ("", None),
            ("15", None),
            ("s", None),
            ("1.5s", None),
            ("30s1m", None),
            ("1s1s", None),
            ("-1s", None),
            ("99999999999999999999s", None),
        ];
        for (text, ms) in cases {
            assert_eq!(
                parse_duration(text),
                ms.map(Duration::from_millis),
                "parse_duration({text:?})"
            );
        }
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
            (Expect::Open, Error, Some(false)),
            (Expect::Any, Open, None),
        ];
        for (expect, state, broken) in table {
            assert_eq!(expect.is_broken_by(state), broken, "{expect:?} {state:?}");
        }
    }

    #[test]
    fn the_probe_allow_list_matches_networks_and_name_patterns() {
        let text = r#"
            [probe]
            allow = ["127.0.0.0/8", "::1", "10.1.2.3", "*.example.org", "db-*.internal", "exact.host"]
        "#;
        let allow = Config::parse(text, "t").unwrap().probe_allow;
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for yes in [
            "127.0.0.1",
            "127.255.0.9",
            "::1",
            "10.1.2.3",
            "::ffff:127.0.0.1",
        ] {
            assert!(allow.allows_address(ip(yes)), "{yes}");
        }
        for no in [
            "128.0.0.1",
            "10.1.2.4",
            "::2",
            "169.254.169.254",
            "::ffff:10.1.2.4",
        ] {
            assert!(!allow.allows_address(ip(no)), "{no}");
        }
        for yes in [
            "www.example.org",
            "WWW.Example.org.",
            "db-1.internal",
            "exact.host",
        ] {
            assert!(allow.allows_name(yes), "{yes}");
        }
        for no in [
            "example.org",
            "a.b.example.org",
            "evil.org",
            "db-1.internal.evil",
            "exact.host.evil",
            "xexact.host",
        ] {
            assert!(!allow.allows_name(no), "{no}");
        }
        assert!(Config::parse("", "t").unwrap().probe_allow.is_empty());
        let all = Config::parse("[probe]\nallow = [\"0.0.0.0/0\"]", "t")
            .unwrap()
            .probe_allow;
        assert!(all.allows_address(ip("8.8.8.8")) && !all.allows_address(ip("::1")));
    }

    #[test]
    fn line_and_column_count_characters() {
        assert_eq!(line_column("ab\ncdé\nx", 0), (1, 1));
        assert_eq!(line_column("ab\ncdé\nx", 3), (2, 1));
        assert_eq!(line_column("ab\ncdé\nx", 8), (3, 1));
        assert_eq!(line_column("ab\ncdé\nx", 7), (2, 4));
    }

    /// The obvious reading of `ports` less `exclude`: a flag per port, entries in file order.
    /// Returns the kept ports, or the first error's message.
    fn ports_by_flags(ports: &[(u16, u16)], exclude: &[(u16, u16)]) -> Result<Vec<u16>, String> {
        let mut selected = vec![false; 65536];
        for &(lo, hi) in ports {
            for port in lo..=hi {
                if std::mem::replace(&mut selected[usize::from(port)], true) {
                    return Err(format!("port {port} is listed more than once"));
                }
            }
        }
        for &(lo, hi) in exclude {
            for port in lo..=hi {
                if !std::mem::replace(&mut selected[usize::from(port)], false) {
                    return Err(format!(
                        "exclude: port {port} is not in ports (or excluded twice)"
                    ));
                }
            }
        }
        let kept: Vec<u16> = (1..=u16::MAX)
            .filter(|&p| selected[usize::from(p)])
            .collect();
        if kept.is_empty() {
            return Err("exclude removes every port".to_string());
        }
        Ok(kept)
    }

    fn entry_text(&(lo, hi): &(u16, u16)) -> String {
        if lo == hi {
            lo.to_string()
        } else {
            format!("\"{lo}-{hi}\"")
        }
    }

    proptest::proptest! {
        #[test]
        fn ranges_agree_with_a_flag_per_port(
            // Ports near each other, so that overlaps, adjacency and splits are common.
            ports in proptest::collection::vec((1u16..200, 0u16..40), 1..8),
            exclude in proptest::collection::vec((1u16..200, 0u16..40), 0..5),
        ) {
            let ranges = |entries: &[(u16, u16)]| -> Vec<(u16, u16)> {
                entries.iter().map(|&(lo, len)| (lo, lo + len)).collect()
            };
            let (ports, exclude) = (ranges(&ports), ranges(&exclude));
            let list = |entries: &[(u16, u16)]| {
                entries.iter().map(entry_text).collect::<Vec<_>>().join(", ")
            };
            let text = format!(
                "[[targets]]\nhost = \"h\"\nports = [{}]\nexclude = [{}]\n",
                list(&ports),
                list(&exclude)
            );
            let ours = Config::parse(&text, "t")
                .map(|c| c.targets[0].ports.clone())
                .map_err(|e| e.to_string());
            match (ours, ports_by_flags(&ports, &exclude)) {
                (Ok(ours), Ok(expected)) => proptest::prop_assert_eq!(ours, expected),
                (Err(ours), Err(expected)) => proptest::prop_assert!(
                    ours.ends_with(&expected),
                    "{} vs {}", ours, expected
                ),
                (ours, expected) => proptest::prop_assert!(false, "{:?} vs {:?}", ours, expected),
            }
        }
    }
}
