//! The state table's samples, written straight from the table.
//!
//! A table of 100k (target, port) rows makes about a million samples. Building them as
//! protobuf `MetricFamily` values (what a `prometheus` `Collector` returns) and encoding those
//! took over 4 s and most of a gigabyte; writing the text directly takes a small fraction of
//! that: in release mode, about 20 ms for 100k rows on two cores (36 ms on one) reusing the
//! last rendering's memory, 120-140 ms for the first rendering, which allocates it (measured
//! by `cargo test --release --lib render_timing -- --ignored --nocapture`). The table's
//! read lock is held only while each row's label fragment is formatted and the row copied;
//! the text is written after the lock is released, so probes finishing during a scrape are
//! not held up. Both steps run on every core, each on its share of the targets, and reuse
//! the memory of the previous rendering.
//!
//! The samples read the same in the text format and in OpenMetrics; only the families' HELP
//! and TYPE lines differ (a counter's family name, their order), so they are not part of the
//! rendering: [`headers`] writes them per format and [`with_headers`] puts them in front of
//! each family's samples, and one rendering serves scrapes of both formats. Labels, numbers
//! and the families themselves come from [`super::text`], the writer `/probe` uses too.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::ops::Range;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rayon::prelude::*;

use super::hosts;
use crate::domain::{Protocol, State, StateCounts};
use crate::exposition::text::{
    Format, Numbers, STATE_SUFFIXES, push_flag, push_info, push_label, push_line,
    push_service_sample,
};
use crate::families::{self, Family};
use crate::probe::ServiceFinding;
use crate::probe::timing::AddressTiming;
use crate::state::{Row, StateTable, TargetRows};
use crate::telemetry::unix_seconds;

/// The table's families, in the order they are written: those of `Section`, then the
/// per-address timing of [`super::hosts::COLUMNS`].
pub const FAMILIES: [&Family; 21] = [
    &families::PORT_STATE,
    &families::PORT_STATE_REASON,
    &families::PORT_CONNECT_DURATION,
    &families::PORT_DNS_LOOKUP_DURATION,
    &families::PORT_STATE_UNEXPECTED,
    &families::PORT_STATE_CHANGES,
    &families::PORT_STATE_LAST_CHANGE,
    &families::PORT_LAST_PROBE,
    &families::PORT_TARGET_PORTS,
    &families::PORT_SERVICE_INFO,
    &families::PORT_SERVICE_UNEXPECTED,
    &families::PORT_SERVICE_REASON,
    &families::PORT_TLS_CERT_EXPIRY,
    &families::PORT_TLS_VERSION_INFO,
    &families::PORT_TLS_CERT_VERIFIED,
    &families::HOST_RTT,
    &families::HOST_RTT_VARIATION,
    &families::HOST_TIMEOUT,
    &families::HOST_DROP_RATIO,
    &families::HOST_RETRIES,
    &families::HOST_RETRANSMISSIONS,
];

/// The service check's families, within [`FAMILIES`]: the order `/metrics` and `/probe` write
/// them in.
pub const SERVICE_FAMILIES: &[&Family] = FAMILIES.split_at(9).1.split_at(6).0;

/// The sections of the table's text, one family each.
#[derive(Clone, Copy)]
enum Section {
    State,
    Reason,
    Connect,
    DnsLookup,
    Unexpected,
    Changes,
    LastChange,
    LastProbe,
    TargetPorts,
    ServiceInfo,
    ServiceUnexpected,
    ServiceReason,
    TlsCertExpiry,
    TlsVersion,
    TlsCertVerified,
}

impl Section {
    /// In the order they are written.
    const ALL: [Section; 15] = [
        Section::State,
        Section::Reason,
        Section::Connect,
        Section::DnsLookup,
        Section::Unexpected,
        Section::Changes,
        Section::LastChange,
        Section::LastProbe,
        Section::TargetPorts,
        Section::ServiceInfo,
        Section::ServiceUnexpected,
        Section::ServiceReason,
        Section::TlsCertExpiry,
        Section::TlsVersion,
        Section::TlsCertVerified,
    ];

    fn family(self) -> &'static Family {
        FAMILIES[self as usize]
    }
}

/// Below this many table rows per worker, another thread costs more than it saves. (Rows, shown
/// or not: counting the shown ones would take another pass under the read lock, and a table of
/// mostly hidden range rows has little text to share anyway.)
const MIN_ROWS_PER_WORKER: usize = 10_000;

/// A rendering of the table: the samples as chunks to send in order, family by family, the
/// whole buffers the chunks are slices of, and the copies of the table it was written from.
/// Both are kept so that the next rendering can reuse the memory: a fresh 100 MB buffer costs
/// more in page faults than the writing itself, and memory freed by the worker threads would
/// mostly stay with the allocator anyway.
pub struct TableText {
    chunks: Vec<Bytes>,
    /// Per family of [`FAMILIES`], the range of `chunks` that holds its samples.
    families: [Range<usize>; FAMILIES.len()],
    buffers: Vec<Bytes>,
    snapshots: Vec<Snapshot>,
}

impl TableText {
    /// Length of the samples' text in bytes.
    pub(crate) fn len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }

    /// The chunks of each family's samples, in [`FAMILIES`] order: none for a family
    /// without samples.
    pub fn families(&self) -> impl Iterator<Item = &[Bytes]> {
        self.families
            .iter()
            .map(|range| &self.chunks[range.clone()])
    }

    /// The memory for the next rendering: the snapshots, and the buffers no one else holds
    /// any more (a response still being sent keeps its own), emptied.
    pub fn into_scratch(self) -> Vec<Scratch> {
        drop(self.chunks);
        self.buffers
            .into_iter()
            .zip(self.snapshots)
            .map(|(buffer, snapshot)| Scratch {
                snapshot,
                out: buffer.try_into_mut().unwrap_or_default(),
            })
            .collect()
    }
}

/// One worker's memory: its copy of a share of the table, and the buffer it writes into.
#[derive(Default)]
pub struct Scratch {
    snapshot: Snapshot,
    out: BytesMut,
}

/// A target as the renderer needs it: its label prefix and its per-target samples.
struct TargetSnapshot {
    /// `{target="..",host="..",<labels>` escaped, without the closing brace, in the arena.
    labels: Range<usize>,
    dns_lookup: Option<Duration>,
    /// Ports per state, per address (`None`: unresolved), over all rows, shown or not.
    counts: Vec<(Option<IpAddr>, StateCounts)>,
}

/// A row whose series are shown.
struct RowSnapshot {
    /// `{target="..",host="..",<labels>,port="..",protocol="..",ip=".."`, without the closing
    /// brace, in the arena.
    labels: Range<usize>,
    /// The states its `port_state` series are of (TCP's or UDP's).
    states: &'static [State],
    row: Row,
    unexpected: Option<bool>,
}

/// What the text needs, copied out of the table under its read lock. The label fragments
/// live in one arena string rather than in a string per row.
#[derive(Default)]
struct Snapshot {
    arena: String,
    targets: Vec<TargetSnapshot>,
    rows: Vec<RowSnapshot>,
    /// Whether any row has a service finding: the service check's sections are skipped
    /// without a pass over the rows when none has.
    checked: bool,
}

/// Writes the table's families as text, on up to `workers` threads (the caller's among
/// them), in the memory of `scratch` where there is some; `capacity_hint` is the expected
/// length of the text.
pub fn render_table(
    table: &StateTable,
    addresses: &[(Protocol, AddressTiming)],
    workers: usize,
    mut scratch: Vec<Scratch>,
    capacity_hint: usize,
) -> TableText {
    // Worker `i` copies, then writes, every section for its share of the targets; the chunks
    // are then taken section by section, worker by worker, so each family stays contiguous.
    let parts: Vec<Scratch> = table.view(|table| {
        let targets: Vec<&TargetRows> = table.values().collect();
        let rows: usize = targets.iter().map(|t| t.rows.len()).sum();
        let workers = workers.min(rows / MIN_ROWS_PER_WORKER).max(1);
        let shares: Vec<_> = shares_by_rows(&targets, rows, workers)
            .into_iter()
            .map(|share| (share, scratch.pop().unwrap_or_default()))
            .collect();
        shares
            .into_par_iter()
            .map(|(share, mut scratch): (Vec<&TargetRows>, Scratch)| {
                scratch.snapshot.fill(share);
                scratch
            })
            .collect()
    });
    let workers = parts.len();
    let capacity = (capacity_hint + capacity_hint / 8) / workers;
    let written: Vec<_> = parts
        .into_par_iter()
        .map(|mut part| {
            part.out.clear();
            part.out.reserve(capacity);
            let offsets = part.write();
            (part.out.freeze(), part.snapshot, offsets)
        })
        .collect();
    let mut hosts = BytesMut::new();
    let host_offsets = hosts::write_hosts(&mut hosts, addresses);
    let hosts = hosts.freeze();
    let mut chunks = Vec::with_capacity(Section::ALL.len() * workers + hosts::COLUMNS.len());
    let families = std::array::from_fn(|family| {
        let start = chunks.len();
        if family < Section::ALL.len() {
            for (buffer, _, offsets) in &written {
                let range = offsets[family]..offsets[family + 1];
                if !range.is_empty() {
                    chunks.push(buffer.slice(range));
                }
            }
        } else {
            let column = family - Section::ALL.len();
            let range = host_offsets[column]..host_offsets[column + 1];
            if !range.is_empty() {
                chunks.push(hosts.slice(range));
            }
        }
        start..chunks.len()
    });
    let (buffers, snapshots) = written
        .into_iter()
        .map(|(buffer, snapshot, _)| (buffer, snapshot))
        .unzip();
    TableText {
        chunks,
        families,
        buffers,
        snapshots,
    }
}

/// The HELP and TYPE lines of each of [`FAMILIES`] in `format`, in that order.
pub fn headers(format: Format) -> Vec<Bytes> {
    FAMILIES
        .iter()
        .map(|family| {
            let mut out = BytesMut::new();
            family.write_header(&mut out, format);
            out.freeze()
        })
        .collect()
}

/// The body of the table's part of a scrape: each family's header in front of its parts,
/// both given per family in [`FAMILIES`] order (the samples of [`TableText::families`], or
/// their gzip members); a family without parts gets no header either.
pub fn with_headers<'a>(
    headers: &[Bytes],
    parts: impl IntoIterator<Item = &'a [Bytes]>,
) -> Vec<Bytes> {
    let mut body = Vec::new();
    for (header, parts) in headers.iter().zip(parts) {
        if !parts.is_empty() {
            body.push(header.clone());
            body.extend(parts.iter().cloned());
        }
    }
    body
}

/// `count` contiguous shares of `targets` (at least one), with about equally many rows each.
fn shares_by_rows<'a>(
    targets: &[&'a TargetRows],
    rows: usize,
    count: usize,
) -> Vec<Vec<&'a TargetRows>> {
    let mut shares = vec![Vec::new(); count];
    let mut before = 0;
    for target in targets {
        let share = (before * count).checked_div(rows).unwrap_or(0);
        shares[share.min(count - 1)].push(*target);
        before += target.rows.len();
    }
    shares
}

impl Scratch {
    /// Writes every section's samples for this share; returns where each section starts in
    /// `out` (and, last, where the text ends).
    fn write(&mut self) -> [usize; Section::ALL.len() + 1] {
        let mut offsets = [0; Section::ALL.len() + 1];
        let mut numbers = Numbers::default();
        let Snapshot {
            arena,
            targets,
            rows,
            checked: any_checked,
        } = &self.snapshot;
        let checked_rows: &[RowSnapshot] = if *any_checked { rows } else { &[] };
        let out = &mut self.out;
        for (i, section) in Section::ALL.into_iter().enumerate() {
            offsets[i] = out.len();
            let name = section.family().name;
            match section {
                Section::State => {
                    for r in rows {
                        for &s in r.states {
                            let value = if s == r.row.outcome.state { "1" } else { "0" };
                            let suffix = STATE_SUFFIXES[s as usize];
                            push_line(out, name, &arena[r.labels.clone()], suffix, value);
                        }
                    }
                }
                Section::Reason => {
                    for r in rows {
                        let reason = r.row.outcome.reason.as_str();
                        push_info(out, name, &arena[r.labels.clone()], &[("reason", &reason)]);
                    }
                }
                Section::Connect => {
                    for r in rows {
                        if let Some(took) = r.row.outcome.connect {
                            let value = numbers.float(took.as_secs_f64());
                            push_line(out, name, &arena[r.labels.clone()], "} ", value);
                        }
                    }
                }
                Section::DnsLookup => {
                    for target in targets {
                        if let Some(took) = target.dns_lookup {
                            let value = numbers.float(took.as_secs_f64());
                            push_line(out, name, &arena[target.labels.clone()], "} ", value);
                        }
                    }
                }
                Section::Unexpected => {
                    for r in rows {
                        push_flag(out, name, &arena[r.labels.clone()], r.unexpected);
                    }
                }
                Section::Changes => {
                    for r in rows {
                        let value = numbers.int(r.row.changes);
                        push_line(out, name, &arena[r.labels.clone()], "} ", value);
                    }
                }
                Section::LastChange => {
                    for r in rows {
                        let value = numbers.float(unix_seconds(r.row.last_change));
                        push_line(out, name, &arena[r.labels.clone()], "} ", value);
                    }
                }
                Section::LastProbe => {
                    for r in rows {
                        let value = numbers.float(unix_seconds(r.row.outcome.at));
                        push_line(out, name, &arena[r.labels.clone()], "} ", value);
                    }
                }
                Section::ServiceInfo
                | Section::ServiceUnexpected
                | Section::ServiceReason
                | Section::TlsCertExpiry
                | Section::TlsVersion
                | Section::TlsCertVerified => {
                    let family = section.family();
                    for (r, found) in checked(checked_rows) {
                        let labels = &arena[r.labels.clone()];
                        push_service_sample(out, family, labels, found, &mut numbers);
                    }
                }
                Section::TargetPorts => {
                    for target in targets {
                        for (ip, per_state) in &target.counts {
                            let mut labels = String::from(&arena[target.labels.clone()]);
                            labels.push_str(",ip=\"");
                            if let Some(ip) = ip {
                                let _ = write!(labels, "{ip}");
                            }
                            labels.push('"');
                            for s in State::TCP {
                                let value = numbers.int(per_state.get(s));
                                let suffix = STATE_SUFFIXES[s as usize];
                                push_line(out, name, &labels, suffix, value);
                            }
                        }
                    }
                }
            }
        }
        offsets[Section::ALL.len()] = out.len();
        offsets
    }
}

/// The rows whose last probe ran a service check, with its finding.
fn checked(rows: &[RowSnapshot]) -> impl Iterator<Item = (&RowSnapshot, &ServiceFinding)> {
    rows.iter()
        .filter_map(|r| Some((r, r.row.outcome.service.as_deref()?)))
}

impl Snapshot {
    /// Copies what the text needs out of `share`, under the table's read lock, into the
    /// memory of the last copy.
    fn fill(&mut self, share: Vec<&TargetRows>) {
        let Snapshot {
            arena,
            targets,
            rows,
            checked,
        } = self;
        *checked = false;
        arena.clear();
        targets.clear();
        rows.clear();
        rows.reserve(share.iter().map(|t| t.rows.len()).sum());
        // A target's rows share a few addresses: each is formatted once.
        let mut ip_texts: Vec<(Option<IpAddr>, Range<usize>)> = Vec::new();
        for target in share {
            let info = &target.info;
            let start = arena.len();
            arena.push('{');
            push_label(arena, "target", &info.name);
            arena.push(',');
            push_label(arena, "host", &info.host);
            for (name, value) in &info.labels {
                arena.push(',');
                push_label(arena, name, value);
            }
            let prefix = start..arena.len();
            ip_texts.clear();
            let mut counts: Vec<(Option<IpAddr>, StateCounts)> = Vec::new();
            for (key, row) in &target.rows {
                let at = match counts.iter().position(|(ip, _)| *ip == key.ip) {
                    Some(at) => at,
                    None => {
                        counts.push((key.ip, StateCounts::default()));
                        counts.len() - 1
                    }
                };
                counts[at].1.add(row.outcome.state);
                if !info.shows(key.port, row) {
                    continue;
                }
                let start = arena.len();
                arena.extend_from_within(prefix.clone());
                arena.push_str(",port=\"");
                arena.push_str(itoa::Buffer::new().format(key.port));
                arena.push_str("\",protocol=\"");
                arena.push_str(info.protocol.as_str());
                arena.push_str("\",ip=\"");
                match ip_texts.iter().find(|(ip, _)| *ip == key.ip) {
                    Some((_, text)) => arena.extend_from_within(text.clone()),
                    None => {
                        let text_start = arena.len();
                        if let Some(ip) = key.ip {
                            let _ = write!(arena, "{ip}");
                        }
                        ip_texts.push((key.ip, text_start..arena.len()));
                    }
                }
                arena.push('"');
                *checked |= row.outcome.service.is_some();
                rows.push(RowSnapshot {
                    labels: start..arena.len(),
                    states: info.protocol.states(),
                    row: row.clone(),
                    unexpected: info.expect.is_broken_by(row.outcome.state),
                });
            }
            counts.sort_by_key(|(ip, _)| *ip);
            targets.push(TargetSnapshot {
                labels: prefix,
                dns_lookup: target.dns_lookup,
                counts,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::domain::Reason;
    use crate::probe::Outcome;
    use crate::state::RowKey;
    use std::time::SystemTime;

    #[test]
    fn labels_are_escaped_and_families_without_samples_are_left_out() {
        let config = Config::parse(
            "[[targets]]\nname = 'we\"ird\\'\nhost = \"127.0.0.1\"\nports = [7]\nlabels = { note = \"a\\nb\" }",
            "t",
        )
        .unwrap();
        let table = StateTable::new();
        table.set_targets(&config.targets);
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_500);
        let outcome = Outcome {
            state: State::Closed,
            reason: Reason::ConnRefused,
            connect: Some(Duration::from_micros(250)),
            at,
            service: None,
        };
        let key = RowKey {
            port: 7,
            ip: Some("127.0.0.1".parse().unwrap()),
        };
        table.record(&config.targets[0].name, key, outcome);
        let rendered = render_table(&table, &[], 1, Vec::new(), 0);
        let body = with_headers(&headers(Format::Text), rendered.families());
        let text = String::from_utf8(body.concat()).unwrap();
        let labels = r#"target="we\"ird\\",host="127.0.0.1",note="a\nb",port="7",protocol="tcp",ip="127.0.0.1""#;
        for line in [
            format!("port_state{{{labels},state=\"closed\"}} 1"),
            format!("port_state{{{labels},state=\"open\"}} 0"),
            format!("port_state_reason{{{labels},reason=\"conn-refused\"}} 1"),
            format!("port_connect_duration_seconds{{{labels}}} 0.00025"),
            format!("port_state_changes_total{{{labels}}} 0"),
            format!("port_last_probe_timestamp_seconds{{{labels}}} 1.5"),
            r#"port_target_ports{target="we\"ird\\",host="127.0.0.1",note="a\nb",ip="127.0.0.1",state="closed"} 1"#.to_string(),
            "# TYPE port_state_changes_total counter".to_string(),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        // No DNS lookup (an IP literal) and no expectation: those families are absent.
        assert!(!text.contains("port_dns_lookup_duration_seconds"));
        assert!(!text.contains("port_state_unexpected"));
    }

    #[test]
    fn the_service_families_are_the_six_of_the_check() {
        let names: Vec<&str> = SERVICE_FAMILIES.iter().map(|f| f.name).collect();
        let first = families::PORT_SERVICE_INFO.name;
        assert_eq!(names.len(), 6);
        assert_eq!(names[0], first);
        assert_eq!(names[5], families::PORT_TLS_CERT_VERIFIED.name);
    }

    #[test]
    fn udp_and_tcp_rows_of_one_port_number_are_told_apart_by_protocol_and_states() {
        let config = Config::parse(
            "[[targets]]\nname = \"u\"\nhost = \"127.0.0.1\"\nports = [53]\nprotocol = \"udp\"\n\
             [[targets]]\nname = \"t\"\nhost = \"127.0.0.1\"\nports = [53]\n",
            "t",
        )
        .unwrap();
        let table = StateTable::new();
        table.set_targets(&config.targets);
        let ip = Some("127.0.0.1".parse().unwrap());
        let silent = Outcome {
            state: State::OpenFiltered,
            reason: Reason::NoResponse,
            connect: None,
            at: SystemTime::UNIX_EPOCH,
            service: None,
        };
        let refused = Outcome {
            state: State::Closed,
            reason: Reason::ConnRefused,
            ..silent.clone()
        };
        table.record("u", RowKey { port: 53, ip }, silent);
        table.record("t", RowKey { port: 53, ip }, refused);
        let rendered = render_table(&table, &[], 1, Vec::new(), 0);
        let body = with_headers(&headers(Format::Text), rendered.families());
        let text = String::from_utf8(body.concat()).unwrap();
        let states = |target: &str, protocol: &str| -> Vec<String> {
            let prefix = format!(
                r#"port_state{{target="{target}",host="127.0.0.1",port="53",protocol="{protocol}",ip="127.0.0.1",state="#
            );
            text.lines()
                .filter_map(|l| l.strip_prefix(&prefix))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(
            states("u", "udp"),
            [
                r#""open"} 0"#,
                r#""closed"} 0"#,
                r#""filtered"} 0"#,
                r#""open|filtered"} 1"#,
                r#""error"} 0"#
            ],
            "{text}"
        );
        assert_eq!(
            states("t", "tcp"),
            [
                r#""open"} 0"#,
                r#""closed"} 1"#,
                r#""filtered"} 0"#,
                r#""error"} 0"#
            ],
            "{text}"
        );
    }

    #[test]
    fn a_service_finding_is_written_as_its_families_and_a_row_without_one_writes_none() {
        use crate::domain::{Service, TlsMode};
        use std::sync::Arc;

        let config = Config::parse(
            "[[targets]]\nname = \"web\"\nhost = \"127.0.0.1\"\nports = [443, 8443, 22]\nlabels = { team = \"a\" }\nservice = \"tls\"",
            "t",
        )
        .unwrap();
        let table = StateTable::new();
        table.set_targets(&config.targets);
        let open = |service: Option<ServiceFinding>| Outcome {
            state: State::Open,
            reason: Reason::SynAck,
            connect: Some(Duration::from_micros(100)),
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(5),
            service: service.map(Arc::new),
        };
        let https = ServiceFinding::https_example();
        let plain = ServiceFinding {
            service: Service::Ssh,
            version: None,
            tls: TlsMode::None,
            reason: Reason::NoTls,
            unexpected: Some(true),
            cert: None,
        };
        let ip = Some("127.0.0.1".parse().unwrap());
        table.record("web", RowKey { port: 443, ip }, open(Some(https)));
        table.record("web", RowKey { port: 22, ip }, open(Some(plain)));
        table.record("web", RowKey { port: 8443, ip }, open(None));
        let rendered = render_table(&table, &[], 1, Vec::new(), 0);
        let body = with_headers(&headers(Format::OpenMetrics), rendered.families());
        let text = String::from_utf8(body.concat()).unwrap();
        let at = |port: u16| {
            format!(
                r#"target="web",host="127.0.0.1",team="a",port="{port}",protocol="tcp",ip="127.0.0.1""#
            )
        };
        let (https, ssh) = (at(443), at(22));
        for line in [
            format!(
                r#"port_service_info{{{https},service="http",tls="implicit",version="nginx/1.22.1"}} 1"#
            ),
            format!(r#"port_service_info{{{ssh},service="ssh",tls="none",version=""}} 1"#),
            format!("port_service_unexpected{{{https}}} 0"),
            format!("port_service_unexpected{{{ssh}}} 1"),
            format!(r#"port_service_reason{{{https},reason="matched"}} 1"#),
            format!(r#"port_service_reason{{{ssh},reason="no-tls"}} 1"#),
            format!("port_tls_cert_expiry_timestamp_seconds{{{https}}} 1900000000"),
            format!(r#"port_tls_version_info{{{https},version="TLS 1.3"}} 1"#),
            format!("port_tls_cert_verified{{{https}}} 1"),
            "# TYPE port_service info".to_string(),
            "# TYPE port_tls_version info".to_string(),
            "# TYPE port_tls_cert_expiry_timestamp_seconds gauge".to_string(),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        // TLS series only where a handshake succeeded; none at all for the row without a check.
        assert!(!text.contains(&format!("port_tls_cert_verified{{{ssh}}}")));
        let unchecked = at(8443);
        let service_lines = text
            .lines()
            .filter(|l| l.starts_with("port_service") || l.starts_with("port_tls"))
            .filter(|l| l.contains(&unchecked))
            .count();
        assert_eq!(service_lines, 0, "{text}");
        assert!(text.contains(&format!(r#"port_state{{{unchecked},state="open"}} 1"#)));
    }

    #[test]
    fn a_row_without_a_check_grows_by_one_pointer_at_most() {
        // The finding is an `Option<Arc<_>>`: one pointer, with None in its niche.
        assert_eq!(
            std::mem::size_of::<Option<std::sync::Arc<ServiceFinding>>>(),
            std::mem::size_of::<usize>()
        );
        assert!(
            std::mem::size_of::<Row>() <= 80,
            "{}",
            std::mem::size_of::<Row>()
        );
    }

    #[test]
    fn one_rendering_reads_in_both_formats_with_their_own_headers() {
        let table = table_of(3);
        let rendered = render_table(&table, &[], 1, Vec::new(), 0);
        let body = |format| {
            let body = with_headers(&headers(format), rendered.families());
            String::from_utf8(body.concat()).unwrap()
        };
        let (text, om) = (body(Format::Text), body(Format::OpenMetrics));
        let samples = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .map(String::from)
                .collect()
        };
        assert_eq!(samples(&om), samples(&text));
        assert!(samples(&text).len() > 300);
        let comments = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| l.starts_with('#'))
                .map(String::from)
                .collect()
        };
        let help = families::PORT_STATE_CHANGES.help;
        assert_eq!(
            comments(&text)[8..10],
            [
                format!("# HELP port_state_changes_total {help}"),
                "# TYPE port_state_changes_total counter".to_string()
            ]
        );
        assert_eq!(
            comments(&om)[8..10],
            [
                "# TYPE port_state_changes counter".to_string(),
                format!("# HELP port_state_changes {help}"),
            ]
        );
        assert!(om.starts_with("# TYPE port_state gauge\n# HELP port_state "));
    }

    /// A table of `targets` x 100 listed ports on 127.0.0.x and ::1, every row probed.
    fn table_of(targets: usize) -> StateTable {
        let ports: Vec<String> = (10_000..10_100).map(|p| p.to_string()).collect();
        let mut text = String::new();
        for i in 0..targets {
            let host = if i % 2 == 0 {
                format!("127.0.0.{}", i % 250 + 1)
            } else {
                "::1".to_string()
            };
            text.push_str(&format!(
                "[[targets]]\nname = \"t{i}\"\nhost = \"{host}\"\nports = [{}]\nexpect = \"closed\"\n",
                ports.join(",")
            ));
        }
        let config = Config::parse(&text, "t").unwrap();
        let table = StateTable::new();
        table.set_targets(&config.targets);
        for target in &config.targets {
            for &port in &target.ports {
                let open = port % 10 == 0;
                let outcome = Outcome {
                    state: if open { State::Open } else { State::Closed },
                    reason: if open {
                        Reason::SynAck
                    } else {
                        Reason::ConnRefused
                    },
                    connect: Some(Duration::from_micros(u64::from(port))),
                    at: SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(port)),
                    service: None,
                };
                let key = RowKey {
                    port,
                    ip: Some(target.host.parse().unwrap()),
                };
                table.record(&target.name, key, outcome);
            }
        }
        table
    }

    /// The figure behind the module doc's "a small fraction": 100k rows rendered on every core,
    /// reusing the memory of the last rendering as scrapes do. A measurement, so it is ignored
    /// by default; it fails only on a gross regression.
    #[test]
    #[ignore = "timing: cargo test --release --lib render_timing -- --ignored --nocapture"]
    fn render_timing_of_100k_rows() {
        let table = table_of(1000);
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (mut scratch, mut capacity) = (Vec::new(), 0);
        let mut took = Vec::new();
        for _ in 0..15 {
            let started = std::time::Instant::now();
            let text = render_table(&table, &[], workers, scratch, capacity);
            took.push(started.elapsed());
            capacity = text.len();
            scratch = text.into_scratch();
        }
        // The first rendering allocates; the others reuse its memory.
        let first = took.remove(0);
        took.sort();
        let median = took[took.len() / 2];
        println!(
            "render of 100k rows on {workers} workers: first {first:?}, then min {:?} median {median:?} max {:?} ({capacity} bytes)",
            took[0],
            took[took.len() - 1]
        );
        assert!(median < Duration::from_secs(1), "median {median:?}");
    }

    #[test]
    fn workers_write_the_same_text_as_one_thread_with_each_family_in_one_block() {
        let table = table_of(250);
        let alone = render_table(&table, &[], 1, Vec::new(), 0);
        assert_eq!(alone.buffers.len(), 1);
        let shared = render_table(&table, &[], 3, Vec::new(), alone.len());
        assert_eq!(shared.buffers.len(), 2, "25,000 rows make two shares");
        let text = String::from_utf8(shared.chunks.concat()).unwrap();
        assert_eq!(text.as_bytes(), &alone.chunks.concat()[..]);
        let open = text
            .lines()
            .filter(|l| l.starts_with("port_state{") && l.ends_with("state=\"open\"} 1"));
        assert_eq!(open.count(), 2_500);
        // Every family's lines follow its HELP and TYPE, with no other family in between.
        let mut seen = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = &line[..line.find('{').unwrap()];
            if seen.last() != Some(&name) {
                assert!(!seen.contains(&name), "{name} comes in two blocks");
                seen.push(name);
            }
        }
        assert_eq!(seen.len(), 8, "{seen:?}");
    }

    #[test]
    fn a_rendering_reuses_the_memory_of_the_last_one_unless_it_is_still_held() {
        let table = table_of(250);
        let first = render_table(&table, &[], 2, Vec::new(), 0);
        let addresses: Vec<*const u8> = first.buffers.iter().map(|b| b.as_ptr()).collect();
        let arenas: Vec<*const u8> = first.snapshots.iter().map(|s| s.arena.as_ptr()).collect();
        let expected = first.chunks.concat();
        let scratch = first.into_scratch();
        assert_eq!(scratch.len(), 2);
        let second = render_table(&table, &[], 2, scratch, 0);
        let mut reused: Vec<*const u8> = second.buffers.iter().map(|b| b.as_ptr()).collect();
        reused.sort();
        let mut addresses_sorted = addresses.clone();
        addresses_sorted.sort();
        assert_eq!(reused, addresses_sorted, "the same buffers, written again");
        let mut arenas_again: Vec<*const u8> =
            second.snapshots.iter().map(|s| s.arena.as_ptr()).collect();
        arenas_again.sort();
        let mut arenas = arenas;
        arenas.sort();
        assert_eq!(arenas_again, arenas, "the same snapshot memory");
        assert_eq!(second.chunks.concat(), expected);
        // A chunk still being sent keeps its buffer from being reused.
        let in_flight = second.chunks[0].clone();
        let scratch = second.into_scratch();
        let kept: Vec<usize> = scratch.iter().map(|s| s.out.capacity()).collect();
        assert!(kept.contains(&0) && kept.iter().any(|&c| c > 0), "{kept:?}");
        assert_eq!(&in_flight[..], &expected[..in_flight.len()]);
    }
}
