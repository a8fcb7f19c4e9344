//! The state table: the single source of truth for what `/metrics` shows.
//!
//! One row per (target, port, address). The scheduler writes outcomes into it; the metrics
//! collector reads it at scrape time. Rows that the config or DNS no longer names are removed
//! here, so no stale series can survive.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use crate::config::Target;
use crate::domain::State;
use crate::domain::{Expect, Protocol};
use crate::probe::Outcome;

/// What the table knows about a target apart from its rows: the labels of its series.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetInfo {
    pub name: String,
    pub host: String,
    pub expect: Expect,
    /// TCP or UDP: the `protocol` label of every per-port series.
    pub protocol: Protocol,
    pub labels: Vec<(String, String)>,
    /// Ports listed one by one, sorted: their series always exist.
    pub listed: Vec<u16>,
    /// Every port of the target, sorted.
    pub ports: Vec<u16>,
}

impl TargetInfo {
    /// Whether the row's per-port series are rendered. A port that came from a range is shown
    /// only while it is open or breaks the expectation, so that a whole range costs series
    /// only for what matters; its row (and state history) stays in the table regardless.
    pub fn shows(&self, port: u16, row: &Row) -> bool {
        let state = row.outcome.state;
        self.listed.binary_search(&port).is_ok()
            || state == State::Open
            || self.expect.is_broken_by(state) == Some(true)
    }
}

impl From<&Target> for TargetInfo {
    fn from(target: &Target) -> Self {
        TargetInfo {
            name: target.name.clone(),
            host: target.host.clone(),
            expect: target.expect,
            protocol: target.protocol,
            labels: target.labels.clone(),
            listed: target.listed.clone(),
            ports: target.ports.clone(),
        }
    }
}

/// A row's key: the port, and the address probed (`None` when the name did not resolve).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RowKey {
    pub port: u16,
    pub ip: Option<IpAddr>,
}

/// The latest outcome of one (target, port, address) and its history. A row without a
/// service check is the size it was before there were any (the finding is one pointer).
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub outcome: Outcome,
    /// How often the state changed since the row appeared.
    pub changes: u64,
    /// When the state last changed, or when the row first got a state.
    pub last_change: SystemTime,
}

/// All rows of one target.
#[derive(Clone, Debug)]
pub struct TargetRows {
    pub info: Arc<TargetInfo>,
    /// Duration of the last DNS lookup; `None` for IP literals, which need none.
    pub dns_lookup: Option<Duration>,
    pub rows: BTreeMap<RowKey, Row>,
    /// What the host is known to stand for now; a row may only be of such an address.
    addresses: Addresses,
}

/// The addresses a target's host stands for, as far as the table knows.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Addresses {
    /// A name not looked up since the host was set: rows of any address are taken, and the
    /// first lookup removes those of addresses it does not return.
    Unknown,
    /// The last lookup failed: only the address-less rows that say so.
    Unresolved,
    /// An IP literal, or what the last lookup returned.
    Known(Vec<IpAddr>),
}

impl Addresses {
    fn of_host(host: &str) -> Addresses {
        match host.parse::<IpAddr>() {
            Ok(ip) => Addresses::Known(vec![ip]),
            Err(_) => Addresses::Unknown,
        }
    }

    fn admits(&self, ip: Option<IpAddr>) -> bool {
        match (self, ip) {
            (Addresses::Unknown, _) => true,
            (Addresses::Unresolved, ip) => ip.is_none(),
            (Addresses::Known(addresses), Some(ip)) => addresses.contains(&ip),
            (Addresses::Known(_), None) => false,
        }
    }
}

/// The table, keyed by target name (which the config keeps unique).
#[derive(Debug, Default)]
pub struct StateTable {
    targets: RwLock<BTreeMap<String, TargetRows>>,
    /// Bumped by every change, so a rendering can tell whether it is still current.
    generation: AtomicU64,
}

impl StateTable {
    pub fn new() -> StateTable {
        StateTable::default()
    }

    /// Makes the table's targets those of `targets`: new ones start with no rows, removed
    /// ones disappear with their rows, changed labels apply to the next scrape. A target whose
    /// host changed loses every row: none of them was a probe of the new host, and an IP
    /// literal's rows are only ever of that address.
    pub fn set_targets(&self, targets: &[Target]) {
        let mut table = self.write();
        let names: HashSet<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        table.retain(|name, _| names.contains(name.as_str()));
        for target in targets {
            let info = Arc::new(TargetInfo::from(target));
            let entry = table
                .entry(target.name.clone())
                .or_insert_with(|| TargetRows {
                    info: info.clone(),
                    dns_lookup: None,
                    rows: BTreeMap::new(),
                    addresses: Addresses::of_host(&target.host),
                });
            // Another host, or another protocol: the rows are of other ports.
            if entry.info.host != target.host || entry.info.protocol != target.protocol {
                entry.rows.clear();
                entry.dns_lookup = None;
                entry.addresses = Addresses::of_host(&target.host);
            }
            entry.info = info;
            entry
                .rows
                .retain(|key, _| target.ports.binary_search(&key.port).is_ok());
        }
    }

    /// Records a lookup of `host` for the target: rows of addresses it no longer resolves to
    /// go. `addresses` is `None` when the lookup failed; then only the address-less rows stay.
    /// A lookup of a host the target no longer has (a reload changed it meanwhile) is ignored.
    pub fn record_lookup(
        &self,
        target: &str,
        host: &str,
        addresses: Option<&[IpAddr]>,
        took: Duration,
    ) {
        let mut table = self.write();
        let Some(entry) = table.get_mut(target) else {
            return;
        };
        if entry.info.host != host {
            return;
        }
        entry.dns_lookup = Some(took);
        entry.addresses = match addresses {
            Some(addresses) => Addresses::Known(addresses.to_vec()),
            None => Addresses::Unresolved,
        };
        let now = &entry.addresses;
        entry.rows.retain(|key, _| now.admits(key.ip));
    }

    /// Records the outcome of one probe.
    pub fn record(&self, target: &str, key: RowKey, outcome: Outcome) {
        let mut table = self.write();
        let Some(entry) = table.get_mut(target) else {
            // The target was removed while its probe ran.
            return;
        };
        if entry.info.ports.binary_search(&key.port).is_err() || !entry.addresses.admits(key.ip) {
            // The port was removed, or the host changed, by a reload while its probe ran.
            return;
        }
        match entry.rows.entry(key) {
            std::collections::btree_map::Entry::Occupied(mut row) => {
                let row = row.get_mut();
                if row.outcome.state != outcome.state {
                    row.changes += 1;
                    row.last_change = outcome.at;
                }
                row.outcome = outcome;
            }
            std::collections::btree_map::Entry::Vacant(vacant) => {
                vacant.insert(Row {
                    last_change: outcome.at,
                    outcome,
                    changes: 0,
                });
            }
        }
    }

    /// A number that grows with every change to the table.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Runs `copy` on a consistent view of the whole table, under its read lock, and returns
    /// what it copied out. Every probe that finishes waits while `copy` runs, so it should
    /// copy what it needs and do the rest (formatting, rendering) after it returns; no guard
    /// leaves this module.
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use port_exporter::config::Config;
    /// use port_exporter::domain::{Reason, State};
    /// use port_exporter::probe::Outcome;
    /// use port_exporter::state::{RowKey, StateTable};
    ///
    /// let config = Config::parse("[[targets]]\nname = \"db\"\nhost = \"127.0.0.1\"\nports = [5432]", "t").unwrap();
    /// let table = StateTable::new();
    /// table.set_targets(&config.targets);
    /// let closed = Outcome { state: State::Closed, reason: Reason::ConnRefused, connect: None, at: SystemTime::now(), service: None };
    /// table.record("db", RowKey { port: 5432, ip: Some("127.0.0.1".parse().unwrap()) }, closed);
    /// let states: Vec<State> = table.view(|targets| {
    ///     targets["db"].rows.values().map(|row| row.outcome.state).collect()
    /// });
    /// assert_eq!(states, [State::Closed]);
    /// ```
    pub fn view<R>(&self, copy: impl FnOnce(&BTreeMap<String, TargetRows>) -> R) -> R {
        // A writer cannot leave the table half-updated (each write is one map operation), so a
        // poisoned lock still guards consistent data.
        copy(&self.targets.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The table for a change; the generation moves on with it.
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, TargetRows>> {
        let guard = self.targets.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        guard
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::domain::Reason;

    fn outcome(state: State, secs: u64) -> Outcome {
        Outcome {
            state,
            reason: Reason::Unknown,
            connect: None,
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            service: None,
        }
    }

    fn config(text: &str) -> Config {
        Config::parse(text, "test").unwrap()
    }

    const V4: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    const V6: Option<IpAddr> = Some(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST));

    #[test]
    fn state_changes_are_counted_with_their_time() {
        let table = StateTable::new();
        table.set_targets(&config("[[targets]]\nhost = \"h\"\nports = [1]").targets);
        let key = RowKey { port: 1, ip: V4 };
        table.record("h", key, outcome(State::Open, 10));
        table.record("h", key, outcome(State::Open, 20));
        let row = table.view(Clone::clone)["h"].rows[&key].clone();
        assert_eq!(
            (row.changes, row.last_change),
            (0, outcome(State::Open, 10).at)
        );
        table.record("h", key, outcome(State::Closed, 30));
        table.record("h", key, outcome(State::Open, 40));
        let row = table.view(Clone::clone)["h"].rows[&key].clone();
        assert_eq!(
            (row.changes, row.last_change),
            (2, outcome(State::Open, 40).at)
        );
        assert_eq!(row.outcome.at, outcome(State::Open, 40).at);
    }

    #[test]
    fn range_ports_show_only_when_open_or_unexpected() {
        let config =
            config("[[targets]]\nhost = \"h\"\nports = [5, \"10-12\"]\nexpect = \"filtered\"");
        let info = TargetInfo::from(&config.targets[0]);
        let row = |state| Row {
            outcome: outcome(state, 1),
            changes: 0,
            last_change: SystemTime::UNIX_EPOCH,
        };
        assert!(info.shows(5, &row(State::Filtered)), "listed: always");
        assert!(
            !info.shows(10, &row(State::Filtered)),
            "range, expected state"
        );
        assert!(info.shows(10, &row(State::Open)), "range, open");
        assert!(info.shows(11, &row(State::Closed)), "range, unexpected");
        assert!(
            !info.shows(12, &row(State::Error)),
            "range, error breaks nothing"
        );
    }

    #[test]
    fn lookups_drop_rows_of_addresses_gone() {
        let table = StateTable::new();
        table.set_targets(&config("[[targets]]\nhost = \"h\"\nports = [1]").targets);
        for ip in [V4, V6, None] {
            table.record("h", RowKey { port: 1, ip }, outcome(State::Open, 1));
        }
        table.record_lookup("h", "h", Some(&[V6.unwrap()]), Duration::from_millis(3));
        let keys: Vec<_> = table.view(Clone::clone)["h"]
            .rows
            .keys()
            .map(|k| k.ip)
            .collect();
        assert_eq!(keys, [V6]);
        table.record_lookup("h", "h", None, Duration::from_millis(3));
        assert!(table.view(Clone::clone)["h"].rows.is_empty());
        // A probe of an address the host no longer resolves to leaves no row.
        table.record("h", RowKey { port: 1, ip: V4 }, outcome(State::Open, 2));
        assert!(table.view(Clone::clone)["h"].rows.is_empty());
    }

    /// Regression: `db` with host 127.0.0.1 reloaded to host 127.0.0.2 kept its 127.0.0.1 row
    /// (and its old state) for ever, because rows were pruned by port only.
    #[test]
    fn a_changed_host_leaves_no_row_of_the_old_one() {
        let table = StateTable::new();
        let db = |host: &str| {
            config(&format!(
                "[[targets]]\nname = \"db\"\nhost = \"{host}\"\nports = [1]"
            ))
            .targets
        };
        let v4 = |text: &str| RowKey {
            port: 1,
            ip: Some(text.parse().unwrap()),
        };
        let ips = |table: &StateTable| -> Vec<Option<IpAddr>> {
            table.view(|t| t["db"].rows.keys().map(|k| k.ip).collect())
        };
        table.set_targets(&db("127.0.0.1"));
        table.record("db", v4("127.0.0.1"), outcome(State::Open, 1));
        table.set_targets(&db("127.0.0.2"));
        assert!(ips(&table).is_empty(), "the literal's old address is gone");
        // A probe of the old host that finishes after the reload leaves nothing either.
        table.record("db", v4("127.0.0.1"), outcome(State::Open, 2));
        table.record("db", v4("127.0.0.2"), outcome(State::Closed, 2));
        assert_eq!(ips(&table), [Some("127.0.0.2".parse().unwrap())]);
        // A name changed to a literal, and a lookup of the old name arriving late.
        table.set_targets(&db("old.example"));
        table.record_lookup(
            "db",
            "old.example",
            Some(&["127.0.0.9".parse().unwrap()]),
            Duration::ZERO,
        );
        table.record("db", v4("127.0.0.9"), outcome(State::Open, 3));
        table.set_targets(&db("127.0.0.3"));
        table.record_lookup(
            "db",
            "old.example",
            Some(&["127.0.0.9".parse().unwrap()]),
            Duration::ZERO,
        );
        table.record("db", v4("127.0.0.9"), outcome(State::Open, 4));
        assert!(ips(&table).is_empty(), "{:?}", ips(&table));
        assert_eq!(table.view(|t| t["db"].dns_lookup), None);
    }

    #[test]
    fn removed_targets_and_ports_disappear() {
        let table = StateTable::new();
        table.set_targets(
            &config(
                "[[targets]]\nhost = \"a\"\nports = [1, 2]\n[[targets]]\nhost = \"b\"\nports = [1]",
            )
            .targets,
        );
        for (t, p) in [("a", 1), ("a", 2), ("b", 1)] {
            table.record(t, RowKey { port: p, ip: V4 }, outcome(State::Open, 1));
        }
        table.set_targets(&config("[[targets]]\nhost = \"a\"\nports = [2]").targets);
        let read = table.view(Clone::clone);
        assert_eq!(read.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(
            read["a"].rows.keys().map(|k| k.port).collect::<Vec<_>>(),
            [2]
        );
        drop(read);
        // A probe that finishes after its target or port was removed leaves no trace.
        table.record("b", RowKey { port: 1, ip: V4 }, outcome(State::Open, 2));
        table.record("a", RowKey { port: 1, ip: V4 }, outcome(State::Open, 2));
        assert!(!table.view(Clone::clone).contains_key("b"));
        assert!(
            !table.view(Clone::clone)["a"]
                .rows
                .contains_key(&RowKey { port: 1, ip: V4 })
        );
    }
}
