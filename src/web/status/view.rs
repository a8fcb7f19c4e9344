//! The status page's view model: what the page shows, copied out of the state table.
//!
//! [`PageView::copy`] runs under the table's read lock (inside [`StateTable::view`]), where
//! every probe that finishes waits, so it only counts and copies: per-target counts of all
//! rows, and at most [`MAX_ROWS_PER_TARGET`] rows per target and [`MAX_ROWS_PER_PAGE`] in
//! all, as owned values. Formatting and
//! rendering happen on the copy, after the lock is released.
//!
//! [`StateTable::view`]: crate::state::StateTable::view

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::filter::Filter;
use super::{MAX_ROWS_PER_PAGE, MAX_ROWS_PER_TARGET};
use crate::domain::{Protocol, State, StateCounts, TlsMode};
use crate::probe::Outcome;
use crate::state::{TargetInfo, TargetRows};

/// The whole page's data.
pub struct PageView {
    /// Targets configured, shown or not.
    pub targets: u64,
    /// Every row per state, all targets (the cards).
    pub all: StateCounts,
    /// Rows `/metrics` has series for, per state, all targets (the filter links).
    pub listed: StateCounts,
    /// Rows whose state breaks their target's expectation, listed or not.
    pub unexpected: u64,
    /// The targets the page lists, sorted by name.
    pub shown: Vec<TargetView>,
    /// Targets left out because none of their listed rows is in the state filtered for.
    pub left_out: u64,
    /// Whether some target is probed over UDP: the page then counts `open|filtered` too.
    pub udp: bool,
}

/// One target's data.
pub struct TargetView {
    /// Shared with the table, not copied: the table replaces a target's info on reload and
    /// never changes it in place.
    pub info: Arc<TargetInfo>,
    pub dns_lookup: Option<Duration>,
    /// Every row per state, listed or not (like `port_target_ports`).
    pub all: StateCounts,
    /// Rows whose state breaks the expectation, listed or not.
    pub unexpected: u64,
    /// Rows `/metrics` has series for, per state.
    pub listed: StateCounts,
    /// Distinct ports among all rows.
    pub ports: u64,
    /// The first rows listed and admitted by the filter (at most [`MAX_ROWS_PER_TARGET`], fewer
    /// when the page's [`MAX_ROWS_PER_PAGE`] runs out), sorted by port and address.
    pub rows: Vec<RowView>,
    /// Rows listed and admitted by the filter beyond `rows`.
    pub more: u64,
}

/// One listed row: a (port, address) of the target and its latest outcome.
pub struct RowView {
    pub port: u16,
    /// `None` when the name did not resolve.
    pub ip: Option<IpAddr>,
    pub outcome: Outcome,
    /// How often the state changed since the row appeared.
    pub changes: u64,
    pub last_change: SystemTime,
    /// Whether the state breaks the target's expectation; `None` when it expects any state.
    pub broken: Option<bool>,
}

impl PageView {
    /// Copies what the page shows out of `table`, listing the rows `filter` admits.
    pub fn copy(table: &BTreeMap<String, TargetRows>, filter: &Filter) -> PageView {
        let mut page = PageView {
            targets: 0,
            all: StateCounts::default(),
            listed: StateCounts::default(),
            unexpected: 0,
            shown: Vec::new(),
            left_out: 0,
            udp: false,
        };
        let mut room = MAX_ROWS_PER_PAGE;
        for target in table.values() {
            let view = TargetView::copy(target, filter, room.min(MAX_ROWS_PER_TARGET));
            room -= view.rows.len();
            page.targets += 1;
            page.udp |= view.info.protocol == Protocol::Udp;
            page.all.merge(&view.all);
            page.listed.merge(&view.listed);
            page.unexpected += view.unexpected;
            // Under a filter, a target none of whose listed rows match is left out (and counted).
            if filter.only().is_some() && view.rows.is_empty() && view.more == 0 {
                page.left_out += 1;
            } else {
                page.shown.push(view);
            }
        }
        page
    }

    /// The states the cards and filter links count: TCP's, and `open|filtered` when some
    /// target is UDP.
    pub fn states(&self) -> &'static [State] {
        if self.udp { &State::UDP } else { &State::TCP }
    }

    /// Rows counted in the summaries but not listed: range ports `/metrics` has no series for.
    pub fn hidden(&self) -> u64 {
        self.all.total() - self.listed.total()
    }
}

impl TargetView {
    /// Copies `target`, listing at most `cap` of its rows.
    fn copy(target: &TargetRows, filter: &Filter, cap: usize) -> TargetView {
        let info = &target.info;
        let mut view = TargetView {
            info: Arc::clone(info),
            dns_lookup: target.dns_lookup,
            all: StateCounts::default(),
            unexpected: 0,
            listed: StateCounts::default(),
            ports: 0,
            rows: Vec::new(),
            more: 0,
        };
        let mut last_port = None;
        // BTreeMap order: by port, then address (unresolved first).
        for (key, row) in &target.rows {
            let state = row.outcome.state;
            view.all.add(state);
            if last_port != Some(key.port) {
                view.ports += 1;
                last_port = Some(key.port);
            }
            let broken = info.expect.is_broken_by(state);
            if broken == Some(true) {
                view.unexpected += 1;
            }
            if !info.shows(key.port, row) {
                continue;
            }
            view.listed.add(state);
            if !filter.admits(state) {
                continue;
            }
            if view.rows.len() < cap {
                view.rows.push(RowView {
                    port: key.port,
                    ip: key.ip,
                    outcome: row.outcome.clone(),
                    changes: row.changes,
                    last_change: row.last_change,
                    broken,
                });
            } else {
                view.more += 1;
            }
        }
        view
    }

    /// Rows counted in the summary but not listed: range ports `/metrics` has no series for.
    pub fn hidden(&self) -> u64 {
        self.all.total() - self.listed.total()
    }
}

impl RowView {
    /// Whether the state breaks the target's expectation.
    pub fn unexpected(&self) -> bool {
        self.broken == Some(true)
    }

    /// The service column: what the last probe's service check found, as of `now`; `None`
    /// when it ran none (a port not open, a target without `service` or `query`).
    pub fn service(&self, now: &SystemTime) -> Option<ServiceCell<'_>> {
        let found = self.outcome.service.as_deref()?;
        let cert = found.cert.as_ref().and_then(|cert| {
            let expiry = cert.expiry?;
            let at = if expiry >= 0 {
                SystemTime::UNIX_EPOCH + Duration::from_secs(expiry.unsigned_abs())
            } else {
                SystemTime::UNIX_EPOCH - Duration::from_secs(expiry.unsigned_abs())
            };
            let now_secs = match now.duration_since(SystemTime::UNIX_EPOCH) {
                Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
            };
            let left = expiry.saturating_sub(now_secs);
            Some(CertCell {
                expiry: at,
                expired: left < 0,
                days: left.unsigned_abs() / 86_400,
                unverified: cert.verified == Some(false),
            })
        });
        Some(ServiceCell {
            name: found.service.as_str(),
            tls: (found.tls != TlsMode::None).then(|| found.tls.as_str()),
            version: found.version.as_deref(),
            cert,
        })
    }
}

/// A row's service column.
#[derive(Debug, PartialEq, Eq)]
pub struct ServiceCell<'a> {
    /// nmap's name (`unknown` when nothing matched).
    pub name: &'static str,
    /// `implicit` or `starttls`; `None` without TLS.
    pub tls: Option<&'static str>,
    /// What the server announces, where short: server input, escaped as every value.
    pub version: Option<&'a str>,
    /// The certificate's expiry, when a handshake showed one.
    pub cert: Option<CertCell>,
}

/// The certificate part of a row's service column.
#[derive(Debug, PartialEq, Eq)]
pub struct CertCell {
    /// The earliest notAfter of the chain.
    pub expiry: SystemTime,
    /// Whether `expiry` is past.
    pub expired: bool,
    /// Whole days left until `expiry` (since, when expired).
    pub days: u64,
    /// The chain did not verify (`port_tls_cert_verified` 0); false under
    /// `insecure_skip_verify`.
    pub unverified: bool,
}

impl CertCell {
    /// The classes of its element: `cert`, and `expired`, `unverified` as they apply.
    pub fn classes(&self) -> &'static str {
        match (self.expired, self.unverified) {
            (false, false) => "cert",
            (true, false) => "cert expired",
            (false, true) => "cert unverified",
            (true, true) => "cert expired unverified",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::domain::{Reason, State};
    use crate::state::{RowKey, StateTable};
    use std::net::Ipv4Addr;

    const V4: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));

    fn outcome(state: State) -> Outcome {
        Outcome {
            state,
            reason: Reason::Unknown,
            connect: None,
            at: SystemTime::UNIX_EPOCH,
            service: None,
        }
    }

    #[test]
    fn the_service_cell_counts_whole_days_and_marks_only_what_is_known_to_be_bad() {
        use crate::probe::service::ServiceFinding;
        // https_example: HTTP over TLS, its chain verified, valid until 1,900,000,000.
        let expiry = 1_900_000_000;
        let row = |found: Option<ServiceFinding>| RowView {
            port: 443,
            ip: V4,
            outcome: Outcome {
                service: found.map(Arc::new),
                ..outcome(State::Open)
            },
            changes: 0,
            last_change: SystemTime::UNIX_EPOCH,
            broken: None,
        };
        let at = |secs: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(row(None).service(&at(expiry)), None);
        let https = row(Some(ServiceFinding::https_example()));
        let cert = |now| https.service(&at(now)).unwrap().cert.unwrap();
        let cell = https.service(&at(0)).unwrap();
        assert_eq!(
            (cell.name, cell.tls, cell.version),
            ("http", Some("implicit"), Some("nginx/1.22.1"))
        );
        // Days left round down; the moment itself is not past yet.
        assert_eq!(
            (cert(expiry - 86_401).days, cert(expiry - 86_401).expired),
            (1, false)
        );
        assert_eq!((cert(expiry - 1).days, cert(expiry).expired), (0, false));
        assert_eq!((cert(expiry + 1).days, cert(expiry + 1).expired), (0, true));
        assert_eq!(cert(expiry + 2 * 86_400).days, 2);
        assert_eq!(cert(expiry).expiry, at(expiry));
        assert_eq!(cert(expiry).classes(), "cert");
        assert_eq!(cert(expiry + 1).classes(), "cert expired");
        // Unverified only when verification ran and failed: not under insecure_skip_verify.
        let mut found = ServiceFinding::https_example();
        let tls = found.cert.as_mut().unwrap();
        tls.verified = None;
        assert!(
            !row(Some(found.clone()))
                .service(&at(0))
                .unwrap()
                .cert
                .unwrap()
                .unverified
        );
        found.cert.as_mut().unwrap().verified = Some(false);
        let unverified = row(Some(found.clone()));
        let cell = unverified.service(&at(0)).unwrap();
        assert_eq!(cell.cert.unwrap().classes(), "cert unverified");
        // No TLS, no chip; a handshake without an expiry, no certificate part.
        found.tls = crate::domain::TlsMode::None;
        found.cert.as_mut().unwrap().expiry = None;
        let plain = row(Some(found));
        let cell = plain.service(&at(0)).unwrap();
        assert_eq!((cell.tls, cell.cert), (None, None));
    }

    #[test]
    fn the_copy_counts_every_row_and_keeps_the_listed_ones_it_may_show() {
        let table = StateTable::new();
        let config = "[[targets]]\nname = \"a\"\nhost = \"127.0.0.1\"\nports = [\"1-1500\"]\n\
                      expect = \"closed\"\n[[targets]]\nname = \"b\"\nhost = \"127.0.0.1\"\nports = [7]";
        table.set_targets(&Config::parse(config, "test").unwrap().targets);
        for port in 1..=1500 {
            let state = if port <= 1200 {
                State::Open
            } else {
                State::Closed
            };
            table.record("a", RowKey { port, ip: V4 }, outcome(state));
        }
        table.record("b", RowKey { port: 7, ip: V4 }, outcome(State::Closed));

        let page = table.view(|t| PageView::copy(t, &Filter::All));
        let a = &page.shown[0];
        assert_eq!((page.targets, page.shown.len(), page.left_out), (2, 2, 0));
        assert_eq!((a.all.total(), a.ports, a.unexpected), (1500, 1500, 1200));
        // The open range ports are listed (capped); the closed ones are only counted.
        assert_eq!((a.listed.total(), a.hidden()), (1200, 300));
        assert_eq!(
            (a.rows.len() as u64, a.more),
            (MAX_ROWS_PER_TARGET as u64, 200)
        );
        assert!(a.rows.iter().all(RowView::unexpected));
        assert_eq!(a.rows.first().map(|r| r.port), Some(1));
        assert_eq!(
            (page.all.total(), page.hidden(), page.unexpected),
            (1501, 300, 1200)
        );

        let closed = table.view(|t| PageView::copy(t, &Filter::Only(State::Closed)));
        // Target a lists no closed row (its closed ports are in their expected state).
        assert_eq!((closed.targets, closed.left_out), (2, 1));
        assert_eq!(closed.shown[0].info.name, "b");
        assert_eq!(closed.shown[0].rows[0].broken, None, "b expects any state");
        assert_eq!(closed.all, page.all, "counts do not depend on the filter");
    }

    /// Regression: the page capped rows per target only, so many targets with many listed
    /// rows each made a page (and a copy under the table's lock) without bound.
    #[test]
    fn the_whole_page_lists_a_bounded_number_of_rows() {
        let table = StateTable::new();
        let targets = MAX_ROWS_PER_PAGE / MAX_ROWS_PER_TARGET + 3;
        let config: String = (0..targets)
            .map(|t| format!("[[targets]]\nname = \"t{t:02}\"\nhost = \"127.0.0.1\"\nports = [\"1-{MAX_ROWS_PER_TARGET}\"]\n"))
            .collect();
        table.set_targets(&Config::parse(&config, "test").unwrap().targets);
        for t in 0..targets {
            for port in 1..=MAX_ROWS_PER_TARGET as u16 {
                table.record(
                    &format!("t{t:02}"),
                    RowKey { port, ip: V4 },
                    outcome(State::Open),
                );
            }
        }
        let page = table.view(|t| PageView::copy(t, &Filter::Only(State::Open)));
        let listed: usize = page.shown.iter().map(|t| t.rows.len()).sum();
        let more: u64 = page.shown.iter().map(|t| t.more).sum();
        assert_eq!(listed, MAX_ROWS_PER_PAGE);
        assert_eq!(
            more as usize,
            targets * MAX_ROWS_PER_TARGET - MAX_ROWS_PER_PAGE
        );
        // Targets past the cap are still shown (with their counts and a note), not left out.
        assert_eq!((page.shown.len(), page.left_out), (targets, 0));
    }
}
