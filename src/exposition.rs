//! The state table written as the Prometheus text format, straight from the table.
//!
//! A table of 100k (target, port) rows makes about a million samples. Building them as
//! protobuf `MetricFamily` values (what a `prometheus` `Collector` returns) and encoding those
//! took over 4 s and most of a gigabyte; writing the text directly takes a small fraction of
//! that. The table's read lock is held only while each row's label fragment is formatted and
//! the row copied; the text is written after the lock is released, so probes finishing
//! during a scrape are not held up.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use crate::probe::State;
use crate::state::{Row, StateTable};

/// One metric family of the table: name, help, type.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
}

const PORT_STATE: Family = Family {
    name: "port_state",
    help: "Port state as a state set: 1 for the current state (open, closed, filtered, error), 0 for the others.",
    kind: "gauge",
};
const PORT_STATE_REASON: Family = Family {
    name: "port_state_reason",
    help: "The reason behind the current port state, in nmap's words (syn-ack, conn-refused, no-response, ...).",
    kind: "gauge",
};
const CONNECT_DURATION: Family = Family {
    name: "port_connect_duration_seconds",
    help: "Time from connect() to the answer (SYN-ACK, RST or ICMP) on the last probe; absent when nothing answered.",
    kind: "gauge",
};
const DNS_LOOKUP_DURATION: Family = Family {
    name: "port_dns_lookup_duration_seconds",
    help: "Duration of the last DNS lookup of the target's host.",
    kind: "gauge",
};
const UNEXPECTED: Family = Family {
    name: "port_state_unexpected",
    help: "1 when the port state breaks the target's expectation, else 0; absent when any state is expected.",
    kind: "gauge",
};
const CHANGES: Family = Family {
    name: "port_state_changes_total",
    help: "Port state changes seen since the series appeared.",
    kind: "counter",
};
const LAST_CHANGE: Family = Family {
    name: "port_state_last_change_timestamp_seconds",
    help: "Unix time of the last port state change (or of the first probe).",
    kind: "gauge",
};
const LAST_PROBE: Family = Family {
    name: "port_last_probe_timestamp_seconds",
    help: "Unix time the last probe of the port finished.",
    kind: "gauge",
};
const TARGET_PORTS: Family = Family {
    name: "port_target_ports",
    help: "Ports of the target per address and state, counting range ports that have no series of their own.",
    kind: "gauge",
};

/// A target as the renderer needs it: its label prefix and its per-target samples.
struct TargetSnapshot {
    /// `{target="..",host="..",<labels>` escaped, without the closing brace.
    labels: String,
    dns_lookup: Option<Duration>,
    /// Ports per state, per address (`None`: unresolved), over all rows, shown or not.
    counts: Vec<(Option<IpAddr>, [u64; State::ALL.len()])>,
}

/// A row whose series are shown.
struct RowSnapshot {
    /// `{target="..",host="..",<labels>,port="..",ip=".."`, without the closing brace.
    labels: String,
    row: Row,
    unexpected: Option<bool>,
}

/// Writes the table's families to `out`.
pub fn render_table(table: &StateTable, out: &mut Vec<u8>) {
    let (targets, rows) = snapshot(table);
    let mut ints = itoa::Buffer::new();
    let mut floats = ryu::Buffer::new();
    // One line: `name{labels` + `suffix` (the closing `,label="..."} ` part) + value + newline.
    let line = |out: &mut Vec<u8>, name: &str, labels: &str, suffix: &str, value: &str| {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(labels.as_bytes());
        out.extend_from_slice(suffix.as_bytes());
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    };

    header(out, &PORT_STATE, !rows.is_empty());
    for r in &rows {
        for s in State::ALL {
            let value = if s == r.row.outcome.state { "1" } else { "0" };
            line(
                out,
                PORT_STATE.name,
                &r.labels,
                STATE_SUFFIXES[s as usize],
                value,
            );
        }
    }
    header(out, &PORT_STATE_REASON, !rows.is_empty());
    for r in &rows {
        let reason = r.row.outcome.reason.as_str();
        for part in [
            PORT_STATE_REASON.name,
            &r.labels,
            ",reason=\"",
            &reason,
            "\"} 1\n",
        ] {
            out.extend_from_slice(part.as_bytes());
        }
    }
    let any_connect = rows.iter().any(|r| r.row.outcome.connect.is_some());
    header(out, &CONNECT_DURATION, any_connect);
    for r in &rows {
        if let Some(took) = r.row.outcome.connect {
            let value = floats.format(took.as_secs_f64());
            line(out, CONNECT_DURATION.name, &r.labels, "} ", value);
        }
    }
    let any_lookup = targets.iter().any(|t| t.dns_lookup.is_some());
    header(out, &DNS_LOOKUP_DURATION, any_lookup);
    for target in &targets {
        if let Some(took) = target.dns_lookup {
            let value = floats.format(took.as_secs_f64());
            line(out, DNS_LOOKUP_DURATION.name, &target.labels, "} ", value);
        }
    }
    header(
        out,
        &UNEXPECTED,
        rows.iter().any(|r| r.unexpected.is_some()),
    );
    for r in &rows {
        if let Some(broken) = r.unexpected {
            let value = if broken { "1" } else { "0" };
            line(out, UNEXPECTED.name, &r.labels, "} ", value);
        }
    }
    header(out, &CHANGES, !rows.is_empty());
    for r in &rows {
        line(
            out,
            CHANGES.name,
            &r.labels,
            "} ",
            ints.format(r.row.changes),
        );
    }
    header(out, &LAST_CHANGE, !rows.is_empty());
    for r in &rows {
        let value = floats.format(unix_seconds(r.row.last_change));
        line(out, LAST_CHANGE.name, &r.labels, "} ", value);
    }
    header(out, &LAST_PROBE, !rows.is_empty());
    for r in &rows {
        let value = floats.format(unix_seconds(r.row.outcome.at));
        line(out, LAST_PROBE.name, &r.labels, "} ", value);
    }
    header(
        out,
        &TARGET_PORTS,
        targets.iter().any(|t| !t.counts.is_empty()),
    );
    for target in &targets {
        for (ip, per_state) in &target.counts {
            let mut labels = target.labels.clone();
            labels.push_str(",ip=\"");
            if let Some(ip) = ip {
                labels.push_str(&ip.to_string());
            }
            labels.push('"');
            for s in State::ALL {
                let value = ints.format(per_state[s as usize]);
                line(
                    out,
                    TARGET_PORTS.name,
                    &labels,
                    STATE_SUFFIXES[s as usize],
                    value,
                );
            }
        }
    }
}

/// Writes a family's HELP and TYPE lines, when it has samples.
fn header(out: &mut Vec<u8>, family: &Family, has_samples: bool) {
    if has_samples {
        let (name, help, kind) = (family.name, family.help, family.kind);
        for part in [
            "# HELP ",
            name,
            " ",
            help,
            "\n# TYPE ",
            name,
            " ",
            kind,
            "\n",
        ] {
            out.extend_from_slice(part.as_bytes());
        }
    }
}

/// `,state="..."} ` per state, in `State::ALL` order.
const STATE_SUFFIXES: [&str; 4] = [
    ",state=\"open\"} ",
    ",state=\"closed\"} ",
    ",state=\"filtered\"} ",
    ",state=\"error\"} ",
];

/// Copies what the text needs out of the table, under its read lock.
fn snapshot(table: &StateTable) -> (Vec<TargetSnapshot>, Vec<RowSnapshot>) {
    let table = table.read();
    let mut targets = Vec::with_capacity(table.len());
    let mut rows = Vec::new();
    for target in table.values() {
        let info = &target.info;
        let mut prefix = String::with_capacity(64);
        prefix.push('{');
        push_label(&mut prefix, "target", &info.name);
        prefix.push(',');
        push_label(&mut prefix, "host", &info.host);
        for (name, value) in &info.labels {
            prefix.push(',');
            push_label(&mut prefix, name, value);
        }
        let mut counts: Vec<(Option<IpAddr>, [u64; State::ALL.len()])> = Vec::new();
        for (key, row) in &target.rows {
            match counts.iter_mut().find(|(ip, _)| *ip == key.ip) {
                Some((_, per_state)) => per_state[row.outcome.state as usize] += 1,
                None => {
                    let mut per_state = [0; State::ALL.len()];
                    per_state[row.outcome.state as usize] = 1;
                    counts.push((key.ip, per_state));
                }
            }
            if !info.shows(key.port, row) {
                continue;
            }
            let mut labels = String::with_capacity(prefix.len() + 40);
            labels.push_str(&prefix);
            labels.push_str(",port=\"");
            labels.push_str(itoa::Buffer::new().format(key.port));
            labels.push_str("\",ip=\"");
            if let Some(ip) = key.ip {
                let _ = std::fmt::Write::write_fmt(&mut labels, format_args!("{ip}"));
            }
            labels.push('"');
            rows.push(RowSnapshot {
                labels,
                row: *row,
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
    (targets, rows)
}

/// Appends `name="value"` with the value escaped as the text format requires.
pub(crate) fn push_label(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

pub(crate) fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::probe::{Outcome, Reason};
    use crate::state::RowKey;

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
        };
        let key = RowKey {
            port: 7,
            ip: Some("127.0.0.1".parse().unwrap()),
        };
        table.record(&config.targets[0].name, key, outcome);
        let mut out = Vec::new();
        render_table(&table, &mut out);
        let text = String::from_utf8(out).unwrap();
        let labels = r#"target="we\"ird\\",host="127.0.0.1",note="a\nb",port="7",ip="127.0.0.1""#;
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
}
