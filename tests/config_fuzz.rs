//! Property tests of the config loader: whatever text an operator (or a broken deploy) hands
//! it, `Config::parse` must not panic, every rejection must point at a line and column inside
//! the text, and a config it accepts must mean what it says.
//!
//! Three properties, 512 cases each (`PROPTEST_CASES` overrides; `PROPTEST_RNG_SEED` replays a
//! seed; a failure prints the shrunk input):
//! - arbitrary strings, and strings over TOML's punctuation;
//! - valid configs generated from a model (targets, hosts, ports and ranges, exclude,
//!   durations, labels, ip_protocol and source_address, unicode names, table styles) must
//!   parse, with the model's port counts;
//! - those valid configs mutated (values of other types, unknown keys, huge numbers, broken
//!   ranges and durations, deep nesting, truncation, stray bytes): no panic, and either a
//!   located rejection or a config that keeps the loader's invariants.

use std::collections::BTreeSet;
use std::time::Duration;

use port_exporter::config::{Config, ConfigError};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

const ORIGIN: &str = "fuzz.toml";

fn proptest_config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 512;
    }
    // No regression files next to the sources: the failing input is printed instead.
    config.failure_persistence = None;
    config
}

/// Parses `text`; a rejection must read `fuzz.toml:LINE:COLUMN: message` with LINE and COLUMN
/// inside the text (1-based; the column may be one past the end of its line).
fn parse(text: &str) -> Result<Result<Config, String>, TestCaseError> {
    match Config::parse(text, ORIGIN) {
        Ok(config) => Ok(Ok(config)),
        Err(error) => {
            let shown = error.to_string();
            let ConfigError::Invalid {
                origin,
                line,
                column,
                message,
            } = &error
            else {
                return Err(TestCaseError::fail(format!(
                    "parse returned a non-located error: {shown}"
                )));
            };
            prop_assert_eq!(origin, ORIGIN);
            let prefix = format!("{ORIGIN}:{line}:{column}: ");
            prop_assert!(
                shown.starts_with(&prefix),
                "{:?} does not start with {:?}",
                shown,
                prefix
            );
            prop_assert!(!message.trim().is_empty(), "empty message: {:?}", shown);
            let lines: Vec<&str> = text.split('\n').collect();
            prop_assert!(
                *line >= 1 && *line <= lines.len(),
                "line {} outside 1..={} in {:?}",
                line,
                lines.len(),
                shown
            );
            let width = lines[*line - 1].chars().count();
            prop_assert!(
                *column >= 1 && *column <= width + 1,
                "column {} outside 1..={} of line {} in {:?}",
                column,
                width + 1,
                line,
                shown
            );
            Ok(Err(shown))
        }
    }
}

/// What every accepted config guarantees the scheduler, whatever text it came from.
fn check_invariants(config: &Config) -> Result<(), TestCaseError> {
    let mut names = BTreeSet::new();
    for t in &config.targets {
        prop_assert!(names.insert(t.name.clone()), "duplicate name {:?}", t.name);
        prop_assert!(!t.name.trim().is_empty());
        prop_assert!(!t.host.is_empty());
        prop_assert!(!t.ports.is_empty(), "{}: no ports", t.name);
        prop_assert!(t.ports[0] >= 1);
        prop_assert!(
            t.ports.windows(2).all(|w| w[0] < w[1]),
            "{}: ports not sorted and unique",
            t.name
        );
        prop_assert!(t.listed.iter().all(|p| t.ports.binary_search(p).is_ok()));
        prop_assert!(!t.interval.is_zero() && !t.timeout.is_zero());
        prop_assert!(t.retries <= 10);
        prop_assert!(t.timeout * (t.retries + 1) <= t.interval);
        // A service check takes up to one more timeout, and it has something to check.
        if let Some(check) = &t.service {
            prop_assert!(t.timeout * (t.retries + 2) <= t.interval);
            prop_assert!(check.service.is_some() || check.query.is_some());
            if check.query.as_ref().is_some_and(|q| q.steps.is_empty()) {
                return Err(TestCaseError::fail(format!(
                    "{}: a query without steps",
                    t.name
                )));
            }
        }
        // A literal host, and the source address, are of the family probed.
        let family = t.family();
        if let Ok(ip) = t.host.parse::<std::net::IpAddr>() {
            prop_assert!(family.admits(ip), "{}: host {} not {}", t.name, ip, family);
        }
        if let Some(source) = t.source_address {
            prop_assert!(t.ip_protocol.admits(source) && family.admits(source));
            prop_assert_eq!(t.attempts().source, Some(source));
        }
        for (name, _) in &t.labels {
            prop_assert!(
                ![
                    "target", "host", "port", "protocol", "ip", "state", "reason"
                ]
                .contains(&name.as_str())
            );
            prop_assert!(!name.starts_with("__"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The model of a valid config, and how it is written as TOML.

#[derive(Clone, Debug)]
enum Entry {
    Single(u16),
    Range(u16, u16, bool), // lo, hi, with spaces around the dash
}

#[derive(Clone, Debug)]
struct ModelTarget {
    name: Option<String>,
    host: String,
    ports: Vec<Entry>,
    exclude: Vec<Entry>,
    expect: Option<&'static str>,
    close: Option<&'static str>,
    labels: Vec<(String, String)>,
    /// interval, timeout (ms), retries, and how each duration is spelled
    timing: Option<(u64, u64, u32, usize, usize)>,
    /// `ip_protocol` and `source_address`, consistent with each other and a literal host
    ip_protocol: Option<&'static str>,
    source_address: Option<&'static str>,
    /// `service`, and whether the `tls` table sets `insecure_skip_verify`
    service: Option<(&'static str, bool)>,
}

#[derive(Clone, Debug)]
struct Model {
    defaults: bool,
    targets: Vec<ModelTarget>,
    allow: Vec<&'static str>,
    /// 0: [[targets]] tables; 1: an inline array; 2: [[targets]] with [targets.labels] tables
    style: u8,
    quote_keys: bool,
}

impl ModelTarget {
    /// The ports the loader must end up with, and the ones listed one by one.
    fn expected(&self) -> (Vec<u16>, Vec<u16>) {
        let mut selected = vec![false; 65536];
        let mut listed = Vec::new();
        for e in &self.ports {
            let (lo, hi) = bounds(e);
            for p in lo..=hi {
                selected[usize::from(p)] = true;
            }
            if let Entry::Single(p) = e {
                listed.push(*p);
            }
        }
        for e in &self.exclude {
            let (lo, hi) = bounds(e);
            for p in lo..=hi {
                selected[usize::from(p)] = false;
            }
        }
        let ports: Vec<u16> = (1..=u16::MAX)
            .filter(|&p| selected[usize::from(p)])
            .collect();
        listed.retain(|p| selected[usize::from(*p)]);
        listed.sort_unstable();
        (ports, listed)
    }

    fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.host_label())
    }

    fn host_label(&self) -> String {
        self.host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string()
    }
}

fn bounds(e: &Entry) -> (u16, u16) {
    match *e {
        Entry::Single(p) => (p, p),
        Entry::Range(lo, hi, _) => (lo, hi),
    }
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A duration of `ms` milliseconds in the config's syntax, starting at unit `top`
/// (0: days ... 4: milliseconds), largest units first.
fn duration_text(ms: u64, top: usize) -> String {
    const UNITS: [(&str, u64); 5] = port_exporter::config::duration::DURATION_UNITS;
    let mut rest = ms;
    let mut out = String::new();
    for (unit, size) in &UNITS[top.min(4)..] {
        let n = rest / size;
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
            rest -= n * size;
        }
    }
    out
}

fn entry_text(e: &Entry) -> String {
    match *e {
        Entry::Single(p) => p.to_string(),
        Entry::Range(lo, hi, false) => format!("\"{lo}-{hi}\""),
        Entry::Range(lo, hi, true) => format!("\"{lo} - {hi}\""),
    }
}

fn list(entries: &[Entry]) -> String {
    let items: Vec<String> = entries.iter().map(entry_text).collect();
    format!("[{}]", items.join(", "))
}

impl Model {
    fn key(&self, k: &str) -> String {
        if self.quote_keys {
            format!("\"{k}\"")
        } else {
            k.to_string()
        }
    }

    /// The target's fields as `key = value` pairs (labels handled by the caller).
    fn fields(&self, t: &ModelTarget) -> Vec<String> {
        let mut fields = Vec::new();
        if let Some(name) = &t.name {
            fields.push(format!("{} = {}", self.key("name"), toml_str(name)));
        }
        fields.push(format!("{} = {}", self.key("host"), toml_str(&t.host)));
        fields.push(format!("{} = {}", self.key("ports"), list(&t.ports)));
        if !t.exclude.is_empty() {
            fields.push(format!("{} = {}", self.key("exclude"), list(&t.exclude)));
        }
        if let Some(expect) = t.expect {
            fields.push(format!("{} = {}", self.key("expect"), toml_str(expect)));
        }
        if let Some(close) = t.close {
            fields.push(format!("{} = {}", self.key("close"), toml_str(close)));
        }
        if let Some((interval, timeout, retries, a, b)) = t.timing {
            fields.push(format!(
                "{} = {}",
                self.key("interval"),
                toml_str(&duration_text(interval, a))
            ));
            fields.push(format!(
                "{} = {}",
                self.key("timeout"),
                toml_str(&duration_text(timeout, b))
            ));
            fields.push(format!("{} = {retries}", self.key("retries")));
        }
        if let Some(ip_protocol) = t.ip_protocol {
            fields.push(format!(
                "{} = {}",
                self.key("ip_protocol"),
                toml_str(ip_protocol)
            ));
        }
        if let Some(source) = t.source_address {
            fields.push(format!(
                "{} = {}",
                self.key("source_address"),
                toml_str(source)
            ));
        }
        if let Some((service, insecure)) = t.service {
            fields.push(format!("{} = {}", self.key("service"), toml_str(service)));
            if insecure {
                let table = format!("{{ {} = true }}", self.key("insecure_skip_verify"));
                fields.push(format!("{} = {table}", self.key("tls")));
            }
        }
        fields
    }

    fn labels_inline(&self, t: &ModelTarget) -> String {
        let pairs: Vec<String> = t
            .labels
            .iter()
            .map(|(k, v)| format!("{} = {}", self.key(k), toml_str(v)))
            .collect();
        format!("{{ {} }}", pairs.join(", "))
    }

    fn render(&self) -> String {
        let mut out = String::new();
        if self.style == 1 {
            // An inline array of tables, before any [table] header takes the keys.
            out.push_str("targets = [\n");
            for t in &self.targets {
                let mut fields = self.fields(t);
                if !t.labels.is_empty() {
                    fields.push(format!(
                        "{} = {}",
                        self.key("labels"),
                        self.labels_inline(t)
                    ));
                }
                out.push_str(&format!("  {{ {} }},\n", fields.join(", ")));
            }
            out.push_str("]\n\n");
        }
        if self.defaults {
            // Long enough for every target's own timing.
            out.push_str("[defaults]\ninterval = \"1d\"\ntimeout = \"1s\"\nretries = 2\n\n");
        }
        if !self.allow.is_empty() {
            let entries: Vec<String> = self.allow.iter().map(|a| toml_str(a)).collect();
            out.push_str(&format!("[probe]\nallow = [{}]\n\n", entries.join(", ")));
        }
        if self.style == 1 {
            return out;
        }
        for t in &self.targets {
            out.push_str("[[targets]]\n");
            for field in self.fields(t) {
                out.push_str(&field);
                out.push('\n');
            }
            if t.labels.is_empty() {
            } else if self.style == 2 {
                out.push_str("[targets.labels]\n");
                for (k, v) in &t.labels {
                    out.push_str(&format!("{} = {}\n", self.key(k), toml_str(v)));
                }
            } else {
                out.push_str(&format!("labels = {}\n", self.labels_inline(t)));
            }
            out.push('\n');
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies.

/// Disjoint port entries: sorted distinct boundaries paired into ranges, a leftover single,
/// and some ranges written out as single ports; then shuffled.
fn ports_strategy() -> impl Strategy<Value = Vec<Entry>> {
    (
        prop::collection::btree_set(1u16..=65535, 1..10),
        any::<u64>(),
    )
        .prop_map(|(bounds, bits)| {
            let b: Vec<u16> = bounds.into_iter().collect();
            let mut entries = Vec::new();
            for (i, pair) in b.chunks(2).enumerate() {
                let bit = |k: usize| bits >> ((i * 3 + k) % 64) & 1 == 1;
                match *pair {
                    [lo, hi] if hi - lo < 4 && bit(0) => {
                        entries.extend((lo..=hi).map(Entry::Single));
                    }
                    [lo, hi] => entries.push(Entry::Range(lo, hi, bit(1))),
                    [p] => entries.push(Entry::Single(p)),
                    _ => unreachable!(),
                }
            }
            let len = entries.len();
            for i in 0..len {
                let j = (bits.rotate_left(i as u32 * 7) as usize) % len;
                entries.swap(i, j);
            }
            entries
        })
}

/// Excludes within `ports` that leave at least one port: parts of ranges and single ports,
/// never the last port of the first entry.
fn exclude_for(ports: &[Entry], pick: u64) -> Vec<Entry> {
    let mut exclude = Vec::new();
    for (i, e) in ports.iter().enumerate().skip(1) {
        if pick >> (i % 64) & 1 == 0 {
            continue;
        }
        match *e {
            Entry::Single(p) => exclude.push(Entry::Single(p)),
            Entry::Range(lo, hi, _) => {
                let mid = lo + (hi - lo) / 2;
                exclude.push(Entry::Range(lo, mid, false));
            }
        }
    }
    if let Some(Entry::Range(lo, hi, _)) = ports.first()
        && pick & 1 == 1
        && hi > lo
    {
        exclude.push(Entry::Single(*lo));
    }
    exclude
}

fn host_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3])),
        any::<u128>().prop_map(|v| std::net::Ipv6Addr::from(v).to_string()),
        any::<u128>().prop_map(|v| format!("[{}]", std::net::Ipv6Addr::from(v))),
        prop::collection::vec("[a-z0-9_][a-z0-9_-]{0,15}", 1..5).prop_map(|l| l.join(".")),
        Just("localhost".to_string()),
    ]
}

/// Any name the loader accepts: not blank; unicode, quotes and escapes welcome.
fn name_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9_-]{0,12}",
        "\\PC{1,12}",
        Just("café 🚀 \"quoted\" \\ back\tslash".to_string()),
    ]
    .prop_filter("names are not blank", |n| !n.trim().is_empty())
}

fn labels_strategy() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::btree_map("[a-zA-Z][a-zA-Z0-9_]{0,10}", "\\PC{0,10}", 0..4).prop_map(|m| {
        m.into_iter()
            .filter(|(k, _)| {
                ![
                    "target", "host", "port", "protocol", "ip", "state", "reason",
                ]
                .contains(&k.as_str())
            })
            .collect()
    })
}

fn timing_strategy() -> impl Strategy<Value = Option<(u64, u64, u32, usize, usize)>> {
    prop::option::of(
        (
            1u64..10_000_000,
            0u32..=10,
            0usize..5,
            0usize..5,
            1u64..1000,
        )
            .prop_map(|(timeout, retries, a, b, extra)| {
                let interval = timeout * u64::from(retries + 1) + extra;
                (interval, timeout, retries, a, b)
            }),
    )
}

/// Source addresses the model picks from, by family.
const SOURCES_V4: [&str; 2] = ["198.18.0.2", "10.1.2.3"];
const SOURCES_V6: [&str; 3] = ["fd00::2", "[2001:db8::1]", "::1"];

/// An `ip_protocol` and a `source_address` (each maybe absent) that agree with each other and
/// with `host` when it is an IP literal, picked by `protocol` and `source`.
fn address_selection(
    host: &str,
    protocol: Option<usize>,
    source: Option<usize>,
) -> (Option<&'static str>, Option<&'static str>) {
    let literal = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .ok();
    let protocols: &[&str] = match literal {
        None => &["both", "ipv4", "ipv6"],
        Some(ip) if ip.is_ipv4() => &["both", "ipv4"],
        Some(_) => &["both", "ipv6"],
    };
    let ip_protocol = protocol.map(|p| protocols[p % protocols.len()]);
    let v4 = match (ip_protocol, literal) {
        (Some("ipv4"), _) => Some(true),
        (Some("ipv6"), _) => Some(false),
        (_, Some(ip)) => Some(ip.is_ipv4()),
        _ => None,
    };
    let sources: Vec<&str> = match v4 {
        Some(true) => SOURCES_V4.to_vec(),
        Some(false) => SOURCES_V6.to_vec(),
        None => [SOURCES_V4.as_slice(), SOURCES_V6.as_slice()].concat(),
    };
    (ip_protocol, source.map(|s| sources[s % sources.len()]))
}

fn target_strategy() -> impl Strategy<Value = ModelTarget> {
    (
        prop::option::of(name_strategy()),
        host_strategy(),
        ports_strategy(),
        any::<u64>(),
        prop::option::of(prop::sample::select(vec![
            "open", "closed", "filtered", "not_open", "any",
        ])),
        prop::option::of(prop::sample::select(vec!["reset", "graceful"])),
        labels_strategy(),
        timing_strategy(),
        (prop::option::of(0usize..3), prop::option::of(0usize..5)),
        prop::option::of((
            prop::sample::select(vec!["auto", "tls", "ssh", "http", "postgresql", "redis"]),
            any::<bool>(),
        )),
    )
        .prop_map(
            |(
                name,
                host,
                ports,
                pick,
                expect,
                close,
                labels,
                timing,
                (protocol, source),
                service,
            )| {
                let (ip_protocol, source_address) = address_selection(&host, protocol, source);
                // A service check needs one more timeout within the interval.
                let timing = timing.map(|(interval, timeout, retries, a, b)| {
                    let more = if service.is_some() { timeout } else { 0 };
                    (interval + more, timeout, retries, a, b)
                });
                ModelTarget {
                    name,
                    exclude: exclude_for(&ports, pick),
                    host,
                    ports,
                    expect,
                    close,
                    labels,
                    timing,
                    ip_protocol,
                    source_address,
                    service,
                }
            },
        )
}

fn model_strategy() -> impl Strategy<Value = Model> {
    (
        any::<bool>(),
        prop::collection::vec(target_strategy(), 0..6),
        prop::collection::vec(
            prop::sample::select(vec!["10.0.0.0/8", "::1", "*.example.org", "db-*.internal"]),
            0..3,
        ),
        0u8..3,
        any::<bool>(),
    )
        .prop_map(|(defaults, mut targets, allow, style, quote_keys)| {
            // Names must be unique: the loader rejects duplicates (tested below by mutation).
            for (i, t) in targets.iter_mut().enumerate() {
                match &mut t.name {
                    Some(name) => name.push_str(&format!("#{i}")),
                    None => t.host = dedup_host(&t.host, i),
                }
            }
            Model {
                defaults,
                targets,
                allow,
                style,
                quote_keys,
            }
        })
}

/// A host that is unique among the targets, so that a target named after it is too.
fn dedup_host(host: &str, i: usize) -> String {
    if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
        format!("t{i}.example")
    } else {
        format!("t{i}.{host}")
    }
}

/// Values of every TOML type, and the awkward ones of each.
fn value_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("99999999999999999999999999".to_string()),
        Just("-9223372036854775808".to_string()),
        Just("9223372036854775807".to_string()),
        Just("4294967296".to_string()),
        Just("-1".to_string()),
        Just("0".to_string()),
        Just("1.5".to_string()),
        Just("inf".to_string()),
        Just("nan".to_string()),
        Just("1e400".to_string()),
        Just("0x10".to_string()),
        Just("true".to_string()),
        Just("1979-05-27T07:32:00Z".to_string()),
        Just("\"\"".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("'''multi\nline'''".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        "\\PC{0,20}".prop_map(|s| toml_str(&s)),
        // port lists and ranges, good and bad
        prop::collection::vec(any::<i32>(), 0..5).prop_map(|v| format!("{v:?}")),
        (any::<i32>(), any::<i32>()).prop_map(|(a, b)| format!("[\"{a}-{b}\"]")),
        prop::sample::select(vec![
            "[\"1-\"]",
            "[\"-5\"]",
            "[\"65535-1\"]",
            "[\"0-0\"]",
            "[\"1-65536\"]",
            "[\"1--2\"]",
            "[\"a-b\"]",
            "[\"1-65535\", 1]",
            "[1, 1]",
            "[[1]]",
            "[1.0]",
            "[true]",
        ])
        .prop_map(str::to_string),
        // durations, good and bad
        prop::sample::select(vec![
            "\"1.5s\"",
            "\"1h1h\"",
            "\"0s\"",
            "\"0ms\"",
            "\"1µs\"",
            "\"15\"",
            "\"s\"",
            "\"99999999999999999999ms\"",
            "\"18446744073709551615ms\"",
            "\"213503982334d\"",
            "\"1d1h1m1s1ms\"",
            "\"1ms1s\"",
            "\"١s\"",
            "\" 1s\"",
        ])
        .prop_map(str::to_string),
        // hosts, names, labels and enums the validator must refuse
        prop::sample::select(vec![
            "\"[\"",
            "\"[::1\"",
            "\"::1]\"",
            "\"a..b\"",
            "\"-\"",
            "\"a b\"",
            "\"🚀.example\"",
            "\"1.2.3.4.5\"",
            "\"   \"",
            "{ __x = \"y\" }",
            "{ target = \"t\" }",
            "{ 1a = \"b\" }",
            "{ a = 1 }",
            "{ \"a-b\" = \"c\" }",
            "{ \"\" = \"c\" }",
            "\"opne\"",
            "\"RESET\"",
            "[\"10.0.0.0/33\"]",
            "[\"*.a/8\"]",
            "[\"\"]",
            "[\"::/129\"]",
            "[\"1.2.3.4/-1\"]",
            "{ ca_file = \"/nonexistent\" }",
            "{ server_name = 1 }",
            "[{}]",
            "[{ expect = \"(\" }]",
            "[{ send_hex = \"0\" }]",
        ])
        .prop_map(str::to_string),
        (1usize..300).prop_map(|n| format!("{}1{}", "[".repeat(n), "]".repeat(n))),
        (1usize..300).prop_map(|n| format!("{}1{}", "{a=".repeat(n), "}".repeat(n))),
    ]
}

/// Values of the right type for each field, mostly invalid ones.
#[derive(Clone, Debug)]
struct TypedValues {
    ports: String,
    duration: String,
    retries: String,
    host: String,
    labels: String,
    word: String,
    tls: String,
    query: String,
}

impl TypedValues {
    fn for_key(&self, key: &str) -> String {
        match key {
            "ports" | "exclude" => self.ports.clone(),
            "interval" | "timeout" | "min_timeout" => self.duration.clone(),
            "retries" | "max_retries" => self.retries.clone(),
            "host" | "name" => self.host.clone(),
            "labels" => self.labels.clone(),
            "expect" | "close" | "ip_protocol" | "timing" | "service" => self.word.clone(),
            "source_address" | "server_name" => self.host.clone(),
            "tls" => self.tls.clone(),
            "query" => self.query.clone(),
            // a label's value: any string is fine; make it a long one
            _ => toml_str(&"é".repeat(10_000)),
        }
    }
}

fn typed_values_strategy() -> impl Strategy<Value = TypedValues> {
    let port = prop_oneof![
        (-70_000i64..140_000).prop_map(|n| n.to_string()),
        (-70_000i64..140_000, -70_000i64..140_000).prop_map(|(a, b)| format!("\"{a}-{b}\"")),
        prop::sample::select(vec![
            "0",
            "65535",
            "65536",
            "\"1-65535\"",
            "\"0-1\"",
            "\"5-4\"",
            "\"-\"",
            "\"\"",
            "\"1-2-3\"",
            "\"+1-+2\"",
            "\" 7 - 9 \"",
            "\"0x10-0x20\"",
            "\"١-٢\"",
        ])
        .prop_map(str::to_string),
    ];
    (
        prop::collection::vec(port, 0..5).prop_map(|v| format!("[{}]", v.join(", "))),
        prop_oneof![
            "[0-9]{0,22}(d|h|m|s|ms|us|µs|ns|y|w|){0,3}[0-9]{0,3}(ms|s|)",
            "\\PC{0,6}",
        ]
        .prop_map(|d| toml_str(&d)),
        prop_oneof![
            (-5i64..20).prop_map(|n| n.to_string()),
            Just("4294967296".to_string())
        ],
        prop_oneof![
            "[a-z0-9.:\\[\\]_ -]{0,20}",
            "\\PC{0,10}",
            (60usize..70).prop_map(|n| "a".repeat(n)),
            (250usize..260).prop_map(|n| vec!["a"; n / 2].join(".")),
            // literals of either family, for hosts and source addresses of the wrong one
            prop::sample::select(vec!["10.0.0.1", "::1", "[fd00::2]", "0.0.0.0", "ff02::1"])
                .prop_map(str::to_string),
        ]
        .prop_map(|h| toml_str(&h)),
        prop::collection::btree_map("[a-zA-Z_0-9]{0,6}|\\PC{1,4}", "\\PC{0,4}", 0..3).prop_map(
            |m| {
                let pairs: Vec<String> = m
                    .iter()
                    .map(|(k, v)| format!("{} = {}", toml_str(k), toml_str(v)))
                    .collect();
                format!("{{ {} }}", pairs.join(", "))
            },
        ),
        prop_oneof![
            prop::sample::select(vec![
                "open",
                "Open",
                "not-open",
                "reset",
                "graceful",
                "any",
                "ipv4",
                "ipv6",
                "both",
                "adaptive",
                "fixed",
                "Fixed",
                "auto",
                "tls",
                "ssh",
                "SSH",
                "postgres",
                "postgresql",
                "unknown",
                "custom",
                ""
            ])
            .prop_map(str::to_string),
            "\\PC{0,8}",
        ]
        .prop_map(|w| toml_str(&w)),
        tls_value_strategy(),
        query_value_strategy(),
    )
        .prop_map(
            |(ports, duration, retries, host, labels, word, tls, query)| TypedValues {
                ports,
                duration,
                retries,
                host,
                labels,
                word,
                tls,
                query,
            },
        )
}

/// `tls` tables, mostly with a bad key or value.
fn tls_value_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "{}",
            "{ insecure_skip_verify = true }",
            "{ insecure_skip_verify = \"yes\" }",
            "{ server_name = \"\" }",
            "{ server_name = \"a b\" }",
            "{ server_name = \"[::1]\" }",
            "{ ca_file = \"\" }",
            "{ ca_file = \"/nonexistent/ca.pem\" }",
            "{ ca_file = \"/dev/null\" }",
            "{ ca_file = \"Cargo.toml\" }",
            "{ sni = \"x\" }",
        ])
        .prop_map(str::to_string),
        ("\\PC{0,12}", "\\PC{0,12}").prop_map(|(name, file)| format!(
            "{{ server_name = {}, ca_file = {} }}",
            toml_str(&name),
            toml_str(&file)
        )),
    ]
}

/// `query` step lists, mostly with a bad step.
fn query_value_strategy() -> impl Strategy<Value = String> {
    let step = prop_oneof![
        "\\PC{0,10}".prop_map(|text| format!("{{ send = {} }}", toml_str(&text))),
        "[0-9a-fA-FxZ ]{0,12}".prop_map(|hex| format!("{{ send_hex = {} }}", toml_str(&hex))),
        "[\\[\\](){}*+?^$.\\\\a-z0-9|]{0,12}"
            .prop_map(|regex| format!("{{ expect = {} }}", toml_str(&regex))),
        Just("{}".to_string()),
        Just("{ send = \"a\", send_hex = \"00\" }".to_string()),
        Just("{ expect = \"a{99999}{99999}\" }".to_string()),
        Just("{ reply = \"x\" }".to_string()),
    ];
    prop::collection::vec(step, 0..4).prop_map(|steps| format!("[{}]", steps.join(", ")))
}

fn key_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "name",
            "host",
            "ports",
            "exclude",
            "expect",
            "close",
            "labels",
            "interval",
            "timeout",
            "retries",
            "allow",
            "defaults",
            "targets",
            "probe",
            "target",
            "port",
            "ip_protocol",
            "source_address",
            "timing",
            "min_timeout",
            "max_retries",
            "service",
            "tls",
            "server_name",
            "ca_file",
            "insecure_skip_verify",
            "query",
            "send",
            "send_hex",
        ])
        .prop_map(str::to_string),
        "[a-z_]{1,12}",
        "\\PC{1,8}".prop_map(|k| toml_str(&k)),
        (1usize..200).prop_map(|n| vec!["a"; n].join(".")),
    ]
}

#[derive(Clone, Debug)]
enum Mutation {
    /// Replace the value of the n-th `key = value` line.
    Value(usize, String),
    /// Insert `key = value` before line n.
    Insert(usize, String, String),
    /// Insert a table header before line n.
    Header(usize, String),
    DeleteLine(usize),
    DuplicateLine(usize),
    /// Cut the text at the n-th character.
    Truncate(usize),
    /// Insert text at the n-th character.
    Splice(usize, String),
}

fn mutation_strategy() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        6 => (any::<usize>(), value_strategy()).prop_map(|(n, v)| Mutation::Value(n, v)),
        2 => (any::<usize>(), key_strategy(), value_strategy())
            .prop_map(|(n, k, v)| Mutation::Insert(n, k, v)),
        1 => (
            any::<usize>(),
            prop::sample::select(vec![
                "[defaults]", "[probe]", "[[targets]]", "[targets]", "[[defaults]]",
                "[targets.labels]", "[[targets.labels]]", "[x.y.z]", "[]", "[[]]",
                "[targets.tls]", "[defaults.tls]", "[[targets.query]]", "[[defaults.query]]",
            ])
        )
            .prop_map(|(n, h)| Mutation::Header(n, h.to_string())),
        1 => any::<usize>().prop_map(Mutation::DeleteLine),
        1 => any::<usize>().prop_map(Mutation::DuplicateLine),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        2 => (
            any::<usize>(),
            prop_oneof![
                "\\PC{1,4}",
                "[\\[\\]{}=\",.'#\\\\\n\r\t -]{1,4}",
                Just("\u{0}".to_string()),
                Just("\u{feff}".to_string()),
                Just("\r".to_string()),
            ]
        )
            .prop_map(|(n, s)| Mutation::Splice(n, s)),
    ]
}

fn apply(text: &str, mutation: &Mutation) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let line_at = |n: usize, len: usize| if len == 0 { 0 } else { n % len };
    match mutation {
        Mutation::Value(n, value) => {
            // `key = value` lines of tables (not the inline style's lines of many pairs).
            let assignments: Vec<usize> = (0..lines.len())
                .filter(|&i| {
                    lines[i]
                        .split_once(" = ")
                        .is_some_and(|(key, _)| !key.contains(['{', '[']))
                })
                .collect();
            if let Some(&i) = assignments.get(line_at(*n, assignments.len())) {
                let key = lines[i].split(" = ").next().unwrap().to_string();
                lines[i] = format!("{key} = {value}");
            }
        }
        Mutation::Insert(n, key, value) => {
            let i = line_at(*n, lines.len() + 1);
            lines.insert(i, format!("{key} = {value}"));
        }
        Mutation::Header(n, header) => {
            let i = line_at(*n, lines.len() + 1);
            lines.insert(i, header.clone());
        }
        Mutation::DeleteLine(n) => {
            if !lines.is_empty() {
                let i = line_at(*n, lines.len());
                lines.remove(i);
            }
        }
        Mutation::DuplicateLine(n) => {
            if !lines.is_empty() {
                let i = line_at(*n, lines.len());
                lines.insert(i, lines[i].clone());
            }
        }
        Mutation::Truncate(n) => {
            let chars: Vec<char> = text.chars().collect();
            return chars[..line_at(*n, chars.len() + 1)].iter().collect();
        }
        Mutation::Splice(n, insert) => {
            let mut chars: Vec<char> = text.chars().collect();
            let i = line_at(*n, chars.len() + 1);
            chars.splice(i..i, insert.chars());
            return chars.into_iter().collect();
        }
    }
    lines.join("\n")
}

// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn arbitrary_text_never_panics_and_every_rejection_is_located(
        text in prop_oneof![
            any::<String>(),
            "[\\[\\]{}=\",.'#\\\\\n\r\t a-z0-9_:+-]{0,120}",
            "\\PC{0,60}",
        ]
    ) {
        if let Ok(config) = parse(&text)? {
            check_invariants(&config)?;
        }
    }

    #[test]
    fn generated_valid_configs_parse_with_their_port_counts(model in model_strategy()) {
        let text = model.render();
        let config = match parse(&text)? {
            Ok(config) => config,
            Err(message) => {
                return Err(TestCaseError::fail(format!("rejected: {message}\n{text}")));
            }
        };
        check_invariants(&config)?;
        prop_assert_eq!(config.targets.len(), model.targets.len(), "{}", text);
        for (got, want) in config.targets.iter().zip(&model.targets) {
            let (ports, listed) = want.expected();
            prop_assert_eq!(&got.name, &want.name(), "{}", text);
            prop_assert_eq!(&got.host, &want.host_label(), "{}", text);
            prop_assert_eq!(got.ports.len(), ports.len(), "port count of {}\n{}", got.name, text);
            prop_assert!(got.ports == ports, "ports of {}\n{}", got.name, text);
            prop_assert_eq!(&got.listed, &listed, "{}", text);
            let mut labels = want.labels.clone();
            labels.sort();
            prop_assert_eq!(&got.labels, &labels, "{}", text);
            if let Some((interval, timeout, retries, _, _)) = want.timing {
                prop_assert_eq!(got.interval, Duration::from_millis(interval));
                prop_assert_eq!(got.timeout, Duration::from_millis(timeout));
                prop_assert_eq!(got.retries, retries);
            }
            let ip_protocol = got.ip_protocol.as_str();
            prop_assert_eq!(ip_protocol, want.ip_protocol.unwrap_or("both"), "{}", text);
            let source = want.source_address.map(|s| {
                s.trim_start_matches('[').trim_end_matches(']').parse().unwrap()
            });
            prop_assert_eq!(got.source_address, source, "{}", text);
            let check = got.service.as_deref();
            prop_assert_eq!(
                check.and_then(|c| c.service).map(|s| s.as_str()),
                want.service.map(|(s, _)| s),
                "{}",
                text
            );
            if let Some(check) = check {
                // SNI defaults to the host when it is a name.
                let literal = got.host.parse::<std::net::IpAddr>().is_ok();
                let name = (!literal).then(|| got.host.clone());
                prop_assert_eq!(&check.tls.server_name, &name, "{}", text);
                let insecure = want.service.is_some_and(|(_, insecure)| insecure);
                prop_assert_eq!(check.tls.insecure_skip_verify, insecure, "{}", text);
            }
        }
        prop_assert_eq!(config.probe_allow.is_empty(), model.allow.is_empty());
        prop_assert_eq!(config.source, text);
    }

    #[test]
    fn mutated_configs_never_panic_and_every_rejection_is_located(
        model in model_strategy(),
        mutations in prop::collection::vec(mutation_strategy(), 1..3),
    ) {
        let mut text = model.render();
        for mutation in &mutations {
            text = apply(&text, mutation);
        }
        if let Ok(config) = parse(&text)? {
            check_invariants(&config)?;
        }
    }
}

proptest! {
    #![proptest_config(proptest_config())]

    /// One value of one target replaced (a wrong type, a port out of range, a bad range,
    /// duration, host, label or enum): the rejection points into that target's table.
    #[test]
    fn a_bad_value_in_a_target_is_reported_within_that_target(
        model in model_strategy().prop_map(|mut m| {
            m.style = if m.style == 1 { 0 } else { m.style };
            m
        }),
        pick in any::<usize>(),
        generic in value_strategy(),
        typed in typed_values_strategy(),
        use_typed in any::<bool>(),
    ) {
        let text = model.render();
        let lines: Vec<&str> = text.lines().collect();
        // Each target's table: from its [[targets]] line to the next one.
        let starts: Vec<usize> = (0..lines.len()).filter(|&i| lines[i] == "[[targets]]").collect();
        let candidates: Vec<(usize, usize, usize)> = starts
            .iter()
            .enumerate()
            .flat_map(|(k, &start)| {
                let end = starts.get(k + 1).copied().unwrap_or(lines.len());
                (start + 1..end)
                    .filter(|&i| lines[i].contains(" = "))
                    .map(move |i| (i, start, end))
                    .collect::<Vec<_>>()
            })
            .collect();
        prop_assume!(!candidates.is_empty());
        let (line, start, end) = candidates[pick % candidates.len()];
        let mut changed: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        let key = lines[line].split(" = ").next().unwrap();
        let value = if use_typed { typed.for_key(key.trim_matches('"')) } else { generic };
        changed[line] = format!("{key} = {value}");
        let mutated = changed.join("\n");
        match parse(&mutated)? {
            Ok(config) => check_invariants(&config)?,
            Err(message) => {
                let reported: usize = message.split(':').nth(1).unwrap().parse().unwrap();
                let end = end + mutated.lines().count() - lines.len();
                prop_assert!(
                    message.contains("duplicate target name") || (start + 1..=end).contains(&reported),
                    "line {} was changed (table lines {}..={}), the error says {:?}\n{}",
                    line + 1, start + 1, end, message, mutated
                );
            }
        }
    }
}

/// Inputs the generators reach only by luck, each once.
#[test]
fn edge_inputs_are_rejected_with_a_location_or_accepted_sanely() {
    let deep = |open: &str, close: &str, n: usize| {
        format!(
            "[[targets]]\nhost = \"h\"\nports = {}1{}\n",
            open.repeat(n),
            close.repeat(n)
        )
    };
    let cases = [
        String::new(),
        "\n\n\n".to_string(),
        "\u{feff}".to_string(),
        "\u{feff}[[targets]]\nhost = \"h\"\nports = [1]\n".to_string(),
        "é".to_string(),
        "[é".to_string(),
        "a = \"é".to_string(),
        "x = 1\r\ny = é\r\n".to_string(),
        "[[targets]]\r\nhost = \"h\"\r\nports = [0]\r\n".to_string(),
        "[[targets]]\nhost = \"h\"\nports = [\"1-65535\"]\nexclude = [\"1-65535\"]\n".to_string(),
        "[[targets]]\nhost = \"h\"\nports = [\"1-65535\"]\ninterval = \"213503982334d\"\ntimeout = \"213503982334d\"\nretries = 10\n".to_string(),
        "[[targets]]\nhost = \"h\"\nports = [1]\ntimeout = \"18446744073709551615ms\"\nretries = 10\ninterval = \"1ms\"\n".to_string(),
        "[[targets]]\nhost = \"🚀\"\nports = [1]\n".to_string(),
        format!("[[targets]]\nhost = \"{}\"\nports = [1]\n", "a".repeat(100_000)),
        format!("[[targets]]\nhost = \"h\"\nports = [{}]\n", vec!["1"; 10_000].join(",")),
        deep("[", "]", 100_000),
        deep("{a=", "}", 100_000),
        format!("{} = 1\n", vec!["a"; 100_000].join(".")),
        format!("[{}]\n", vec!["a"; 100_000].join(".")),
    ];
    for text in &cases {
        let outcome = parse(text).unwrap_or_else(|e| panic!("{e}: {:.200?}", text));
        if let Ok(config) = outcome {
            check_invariants(&config).unwrap_or_else(|e| panic!("{e}: {:.200?}", text));
        }
    }
    // Ten thousand lines of targets: still located, still no panic.
    let mut many = String::new();
    for i in 0..2_000 {
        many.push_str(&format!(
            "[[targets]]\nname = \"t{i}\"\nhost = \"h\"\nports = [1]\n\n"
        ));
    }
    let with_error = format!("{many}[[targets]]\nname = \"t0\"\nhost = \"h\"\nports = [1]\n");
    let message = parse(&with_error).unwrap().unwrap_err();
    assert!(
        message.starts_with("fuzz.toml:10002:8: duplicate target name \"t0\""),
        "{message}"
    );
}
