//! The status page at `/`: every target, port and address with its state, for a person.
//!
//! A pure function of the state table, the time and the `?state=` filter: one HTML5 document
//! with inline CSS and a few lines of inline JS, no external assets, readable without JS.
//! Target names, hosts and label values come from the config (user input); askama escapes
//! every value the template prints.
//!
//! Ports that come from a range are listed only when `/metrics` has series for them
//! ([`TargetInfo::shows`]); every target gets a summary line counting all its rows per state,
//! so a 65535-port range stays one line plus its open and unexpected ports.
//!
//! The parts: `view.rs` copies what the page shows out of the table, under its lock;
//! `page.html` (with `style.css` and `script.js`) renders the copy, after the lock;
//! `filter.rs` reads `?state=`, `format.rs` writes times, `escape.rs` spells the entities.
//!
//! [`TargetInfo::shows`]: crate::state::TargetInfo::shows

mod escape;
mod filter;
mod format;
mod view;

use std::time::SystemTime;

use askama::Template;

// page.html counts TCP's states, and UDP's `open|filtered` where a target is UDP; it writes a
// state into class names, ids and data-* names as `format::token` (`open-filtered`).
use crate::state::StateTable;
use filter::Filter;
use view::PageView;

/// Most rows listed per target; the rest are counted in a note (the summary line counts all).
/// Keeps the page usable when a whole range breaks its expectation.
pub const MAX_ROWS_PER_TARGET: usize = 1000;

/// Most rows listed on the whole page, whatever the number of targets: bounds the copy made
/// under the table's lock, the page's memory and its size (about 1 KB a row).
pub const MAX_ROWS_PER_PAGE: usize = 10_000;

/// What the page shows besides the table.
pub struct StatusPage<'a> {
    /// Path of the metrics endpoint, for the link.
    pub telemetry_path: &'a str,
    /// Seconds between automatic reloads of the page (0: no automatic reload).
    pub refresh_seconds: u32,
}

/// The template's inputs: `page.html` reads these fields by name.
#[derive(Template)]
#[template(path = "page.html", config = "src/web/status/askama.toml")]
struct Page<'a> {
    telemetry_path: &'a str,
    refresh_seconds: u32,
    now: SystemTime,
    filter: &'a Filter,
    view: &'a PageView,
}

impl StatusPage<'_> {
    /// Renders the page for `table` as of `now`; `state_filter` is the `?state=` parameter.
    pub fn render(
        &self,
        table: &StateTable,
        now: SystemTime,
        state_filter: Option<&str>,
    ) -> String {
        let filter = Filter::parse(state_filter);
        // Only the copy runs under the table's lock; probes that finish while the page is
        // formatted are not held up by it.
        let view = table.view(|targets| PageView::copy(targets, &filter));
        Page {
            telemetry_path: self.telemetry_path,
            refresh_seconds: self.refresh_seconds,
            now,
            filter: &filter,
            view: &view,
        }
        .render()
        // The template writes into a String, and none of its values or filters can fail.
        .expect("rendering the status page cannot fail")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::domain::{Reason, State};
    use crate::probe::Outcome;
    use crate::state::RowKey;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use std::time::{Duration, UNIX_EPOCH};

    const V4: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    const V6: Option<IpAddr> = Some(IpAddr::V6(Ipv6Addr::LOCALHOST));

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// 2024-05-01 12:00:00 UTC.
    const NOW: u64 = 1_714_564_800;

    fn table(config: &str) -> StateTable {
        let table = StateTable::new();
        table.set_targets(&Config::parse(config, "test").unwrap().targets);
        table
    }

    fn record(table: &StateTable, target: &str, port: u16, ip: Option<IpAddr>, state: State) {
        let reason = match state {
            State::Open => Reason::SynAck,
            State::Closed => Reason::ConnRefused,
            State::Filtered => Reason::NoResponse,
            State::OpenFiltered => Reason::NoResponse,
            State::Error => Reason::Dns,
        };
        let outcome = Outcome {
            state,
            reason,
            connect: (state == State::Open).then_some(Duration::from_micros(250)),
            at: at(NOW - 5),
            service: None,
        };
        table.record(target, RowKey { port, ip }, outcome);
    }

    fn render(table: &StateTable, filter: Option<&str>) -> String {
        StatusPage {
            telemetry_path: "/metrics",
            refresh_seconds: 15,
        }
        .render(table, at(NOW), filter)
    }

    /// The `data-port` values of the listed rows, in page order.
    fn listed(page: &str) -> Vec<(String, String)> {
        page.lines()
            .filter(|l| l.starts_with("<tr class=\"port "))
            .map(|l| {
                let attr = |name: &str| {
                    let start = l.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
                    l[start..start + l[start..].find('"').unwrap()].to_string()
                };
                (attr("data-port"), attr("data-state"))
            })
            .collect()
    }

    fn two_ports() -> StateTable {
        let t = table(
            "[[targets]]\nname = \"web\"\nhost = \"127.0.0.1\"\nports = [80, 22]\nexpect = \"open\"",
        );
        record(&t, "web", 80, V4, State::Open);
        record(&t, "web", 22, V4, State::Closed);
        t
    }

    #[test]
    fn user_input_is_escaped() {
        let t = table(
            r#"[[targets]]
            name = "<script>alert(1)</script>"
            host = "127.0.0.1"
            ports = [1]
            labels = { note = "\"><img src=x onerror=alert(2)>&'" }"#,
        );
        record(&t, "<script>alert(1)</script>", 1, V4, State::Open);
        let page = render(&t, Some("<b>x</b>\"'"));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!page.contains("<script>alert"));
        assert!(!page.contains("<img"));
        assert!(page.contains("note=&quot;&gt;&lt;img src=x onerror=alert(2)&gt;&amp;&#39;"));
        assert!(page.contains("&ldquo;&lt;b&gt;x&lt;/b&gt;&quot;&#39;&rdquo;"));
        // The only script element is the page's own countdown.
        assert_eq!(page.matches("<script").count(), 1);
        assert!(page.starts_with("<!DOCTYPE html>\n<html lang=\"en\">"));
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "no external assets"
        );
    }

    /// The port row of `port` in `page`: one line.
    fn row_line(page: &str, port: u16) -> &str {
        let mark = format!("data-port=\"{port}\"");
        page.lines().find(|l| l.contains(&mark)).expect("row")
    }

    #[test]
    fn open_rows_show_their_service_and_certificate_expiry() {
        use crate::domain::{Service, TlsMode};
        use crate::probe::service::{ServiceFinding, TlsFinding};
        use std::sync::Arc;

        let t = table(
            "[[targets]]\nname = \"web\"\nhost = \"127.0.0.1\"\nports = [22, 443, 8443, 80]\nservice = \"auto\"",
        );
        let day = 86_400;
        let open = |port: u16, found: ServiceFinding| {
            let outcome = Outcome {
                state: State::Open,
                reason: Reason::SynAck,
                connect: Some(Duration::from_micros(250)),
                at: at(NOW - 5),
                service: Some(Arc::new(found)),
            };
            t.record("web", RowKey { port, ip: V4 }, outcome);
        };
        let cert = |expiry: u64, verified| {
            Some(TlsFinding {
                version: "TLS 1.3",
                expiry: Some(expiry as i64),
                verified,
            })
        };
        let found = |service, version: Option<&str>, tls, cert| ServiceFinding {
            service,
            version: version.map(Into::into),
            tls,
            reason: Reason::Matched,
            unexpected: None,
            cert,
        };
        // A hostile banner: the version is server input.
        let hostile = "<script>alert(3)</script>";
        open(22, found(Service::Ssh, Some(hostile), TlsMode::None, None));
        let https = found(
            Service::Http,
            None,
            TlsMode::Implicit,
            cert(NOW + 30 * day + 5, Some(true)),
        );
        open(443, https);
        let expired = cert(NOW - 3 * day - 5, Some(false));
        open(
            8443,
            found(Service::Http, Some("nginx"), TlsMode::Implicit, expired),
        );
        record(&t, "web", 80, V4, State::Closed);
        let page = render(&t, None);

        let ssh = row_line(&page, 22);
        assert!(
            ssh.contains("<td class=\"service\"><span class=\"svc\">ssh</span>"),
            "{ssh}"
        );
        assert!(
            ssh.contains("&lt;script&gt;alert(3)&lt;/script&gt;"),
            "{ssh}"
        );
        assert!(!ssh.contains("chip tls") && !ssh.contains("cert"), "{ssh}");
        assert!(!page.contains("<script>alert"));
        assert_eq!(page.matches("<script").count(), 1, "only the countdown");

        let https = row_line(&page, 443);
        assert!(
            https.contains("<span class=\"chip tls\">implicit</span>"),
            "{https}"
        );
        assert!(
            https.contains(r#"<span class="cert" "#)
                && https.contains(r#"<time datetime="2024-05-31T12:00:05Z">2024-05-31</time> &middot; 30 days left</span>"#),
            "{https}"
        );
        let bad = row_line(&page, 8443);
        assert!(
            bad.contains(r#"<span class="cert expired unverified" "#),
            "{bad}"
        );
        assert!(
            bad.contains("2024-04-28</time> &middot; expired 3 days ago &middot; unverified"),
            "{bad}"
        );
        assert!(bad.contains("svc-version\">nginx</span>"), "{bad}");
        // A port without a check shows a dash; the header names the column.
        assert!(row_line(&page, 80).contains("</td><td class=\"muted\">&mdash;</td>"));
        assert!(page.contains("<th>Reason</th><th>Service</th>"));
        // The classes the marks use are in the page's (hashed) style.
        for class in [".cert.expired", ".cert.unverified", ".chip.tls"] {
            assert!(include_str!("style.css").contains(class), "{class}");
        }
    }

    #[test]
    fn filtering_by_state_is_done_on_the_server() {
        let t = two_ports();
        let row = |p: &str, s: &str| (p.to_string(), s.to_string());
        // Sorted by port.
        assert_eq!(
            listed(&render(&t, None)),
            [row("22", "closed"), row("80", "open")]
        );
        let open = render(&t, Some("open"));
        assert_eq!(listed(&open), [row("80", "open")]);
        assert!(open.contains("id=\"filter-open\" class=\"current open\" aria-current=\"page\""));
        assert!(open.contains("id=\"filter-all\" class=\"all\">"));
        assert!(!open.contains("invalid-filter"));
        assert_eq!(listed(&render(&t, Some("CLOSED"))), [row("22", "closed")]);
        // The summary counts all rows whatever the filter.
        assert!(open.contains("data-open=\"1\" data-closed=\"1\" data-filtered=\"0\""));
        // A target with no listed row in the state is left out, and the page says so.
        let filtered = render(&t, Some("filtered"));
        assert!(listed(&filtered).is_empty());
        assert!(filtered.contains("No listed port is filtered."));
        assert!(!filtered.contains("data-target=\"web\""));
        for all in [None, Some(""), Some("all")] {
            let page = render(&t, all);
            assert_eq!(listed(&page).len(), 2);
            assert!(page.contains("id=\"filter-all\" class=\"current all\" aria-current=\"page\""));
            assert!(!page.contains("invalid-filter"));
        }
        let bogus = render(&t, Some("bogus"));
        assert_eq!(listed(&bogus).len(), 2, "an invalid state shows every row");
        assert!(bogus.contains("id=\"invalid-filter\""));
        assert!(bogus.contains("Unknown state &ldquo;bogus&rdquo;: showing all rows."));
        assert!(bogus.contains("id=\"filter-all\" class=\"current all\""));
        // Filter links, counts of listed rows, and the refresh that keeps the query.
        assert!(bogus.contains("<a href=\"?state=closed\" id=\"filter-closed\" class=\"closed\">Closed<span class=\"c\">1</span></a>"));
        assert!(bogus.contains("<meta http-equiv=\"refresh\" content=\"15\">"));
    }

    #[test]
    fn unexpected_rows_are_marked() {
        let page = render(&two_ports(), None);
        let line = |port: &str| {
            page.lines()
                .find(|l| l.contains(&format!("data-port=\"{port}\"")))
                .unwrap()
                .to_string()
        };
        let closed = line("22");
        assert!(closed.starts_with("<tr class=\"port closed unexpected\""));
        assert!(closed.contains("data-unexpected=\"true\""));
        assert!(closed.contains("&#10007; unexpected</span> <span class=\"muted\">expects open"));
        let open = line("80");
        assert!(open.starts_with("<tr class=\"port open\""));
        assert!(open.contains("&#10003; open"));
        assert!(open.contains("<td class=\"num mono\">0.250</td>"), "{open}");
        assert!(page.contains("id=\"total-unexpected\"><div class=\"n\">1</div>"));
        assert!(page.contains("<title>(1 unexpected) port_exporter</title>"));
    }

    #[test]
    fn ranges_are_summarised_and_list_only_what_metrics_shows() {
        let t = table(
            "[[targets]]\nname = \"scan\"\nhost = \"127.0.0.1\"\nports = [5, \"10-20\"]\nexpect = \"not_open\"",
        );
        record(&t, "scan", 5, V4, State::Closed);
        record(&t, "scan", 12, V4, State::Open);
        record(&t, "scan", 13, V4, State::Filtered);
        record(&t, "scan", 14, V4, State::Error);
        for port in (10..=20).filter(|p| ![12, 13, 14].contains(p)) {
            record(&t, "scan", port, V4, State::Closed);
        }
        let page = render(&t, None);
        assert!(page.contains(
            "data-total=\"12\" data-open=\"1\" data-closed=\"9\" data-filtered=\"1\" \
             data-error=\"1\" data-unexpected=\"1\">12 ports:"
        ));
        // Listed: the port given alone (5) and the open range port (12), as on /metrics.
        let ports: Vec<_> = listed(&page).into_iter().map(|(p, _)| p).collect();
        assert_eq!(ports, ["5", "12"]);
        assert!(page.contains("<span class=\"hidden\">10 not listed</span>"));
        assert!(page.contains("10 range ports in their expected state are counted"));
        assert!(page.contains("id=\"total-ports\"><div class=\"n\">12</div>"));
        assert!(page.contains("id=\"total-closed\"><div class=\"n\">9</div>"));
        // Filter counts are of listed rows.
        assert!(page.contains("Closed<span class=\"c\">1</span>"));
    }

    #[test]
    fn udp_targets_count_open_filtered_and_say_their_protocol() {
        let t = table(
            "[[targets]]\nname = \"dns\"\nhost = \"127.0.0.1\"\nports = [53, 161, 5353]\nprotocol = \"udp\"\n\
             [[targets]]\nname = \"ssh\"\nhost = \"127.0.0.1\"\nports = [53]\n",
        );
        record(&t, "dns", 53, V4, State::Open);
        record(&t, "dns", 161, V4, State::OpenFiltered);
        record(&t, "dns", 5353, V4, State::Closed);
        record(&t, "ssh", 53, V4, State::Closed);
        let page = render(&t, None);
        // The UDP target's summary counts its five states; the TCP one's its four.
        assert!(
            page.contains(
                "data-total=\"3\" data-open=\"1\" data-closed=\"1\" data-filtered=\"0\" \
             data-open-filtered=\"1\" data-error=\"0\" data-unexpected=\"0\">3 ports:"
            ),
            "{page}"
        );
        assert!(
            page.contains(
                "data-total=\"1\" data-open=\"0\" data-closed=\"1\" data-filtered=\"0\" \
             data-error=\"0\" data-unexpected=\"0\">1 port:"
            ),
            "{page}"
        );
        assert!(page.contains("<span class=\"chip protocol\">udp</span>"));
        assert!(page.contains("<span class=\"chip protocol\">tcp</span>"));
        let row = page
            .lines()
            .find(|l| l.contains("data-port=\"161\""))
            .unwrap();
        assert!(row.starts_with("<tr class=\"port open-filtered\""), "{row}");
        assert!(row.contains("data-protocol=\"udp\" "), "{row}");
        assert!(row.contains("data-state=\"open|filtered\""), "{row}");
        assert!(
            row.contains("<span class=\"badge open-filtered\">open|filtered</span>"),
            "{row}"
        );
        assert!(page.contains("id=\"total-open-filtered\"><div class=\"n\">1</div>"));
        assert!(
            page.contains("href=\"?state=open%7Cfiltered\" id=\"filter-open-filtered\""),
            "{page}"
        );
        // Filtered to UDP's silence: the one row.
        let only = render(&t, Some("open|filtered"));
        assert_eq!(
            listed(&only),
            [("161".to_string(), "open|filtered".to_string())]
        );
    }

    #[test]
    fn a_tcp_only_page_has_no_open_filtered_card_or_link() {
        let t = table("[[targets]]\nname = \"web\"\nhost = \"127.0.0.1\"\nports = [80]");
        record(&t, "web", 80, V4, State::Open);
        let page = render(&t, None);
        for absent in ["id=\"total-open-filtered\"", "id=\"filter-open-filtered\""] {
            assert!(!page.contains(absent), "{absent} in\n{page}");
        }
        assert!(page.contains("id=\"total-filtered\""));
        let bogus = render(&t, Some("bogus"));
        assert!(bogus.contains("Valid states are open, closed, filtered and error."));
    }

    #[test]
    fn unresolved_rows_and_several_addresses() {
        let t = table(
            "[[targets]]\nname = \"gone\"\nhost = \"nx.invalid\"\nports = [443]\n[[targets]]\nname = \"dual\"\nhost = \"localhost\"\nports = [80]",
        );
        t.record(
            "gone",
            RowKey {
                port: 443,
                ip: None,
            },
            Outcome::dns_failure(at(NOW - 90)),
        );
        record(&t, "dual", 80, V6, State::Open);
        record(&t, "dual", 80, V4, State::Closed);
        let page = render(&t, None);
        let row = page
            .lines()
            .find(|l| l.contains("data-target=\"gone\" data-port=\"443\""))
            .unwrap();
        assert!(row.contains("data-ip=\"\""));
        assert!(row.contains("<td class=\"unresolved\">unresolved</td>"));
        assert!(row.contains("<span class=\"badge error\">error</span>"));
        assert!(row.contains("<td class=\"mono reason\">dns</td>"));
        assert!(row.contains("<td class=\"num muted\">&mdash;</td>"));
        assert!(row.contains("title=\"2024-05-01 11:58:30 UTC\">1m ago</time>"));
        // Sorted by target, then port, then address (IPv4 before IPv6).
        let order: Vec<_> = page
            .lines()
            .filter(|l| l.starts_with("<tr class=\"port "))
            .map(|l| (l.contains("\"dual\""), l.contains("data-ip=\"::1\"")))
            .collect();
        assert_eq!(order, [(true, false), (true, true), (false, false)]);
        assert!(page.contains("1 port (2 rows):"));
    }

    #[test]
    fn empty_table_and_targets_not_probed_yet() {
        let empty = render(&StateTable::new(), None);
        assert!(empty.contains("No targets configured."));
        let t = table("[[targets]]\nhost = \"127.0.0.1\"\nports = [1]");
        assert!(render(&t, None).contains("Not probed yet."));
    }

    #[test]
    fn links_version_and_render_time() {
        let page = StatusPage {
            telemetry_path: "/custom\"metrics",
            refresh_seconds: 0,
        }
        .render(&two_ports(), at(NOW), None);
        assert!(page.contains("<a href=\"/custom&quot;metrics\" id=\"link-metrics\">"));
        for path in ["/config", "/-/healthy", "/-/ready"] {
            assert!(page.contains(&format!("<a href=\"{path}\"")), "{path}");
        }
        assert!(page.contains(concat!("v", env!("CARGO_PKG_VERSION"))));
        assert!(page.contains("datetime=\"2024-05-01T12:00:00Z\">2024-05-01 12:00:00 UTC</time>"));
        // No refresh asked: no meta refresh and no countdown script.
        assert!(!page.contains("http-equiv=\"refresh\""));
        assert!(!page.contains("<script"));
    }

    #[test]
    fn long_lists_are_capped() {
        let t = table(
            "[[targets]]\nname = \"all\"\nhost = \"127.0.0.1\"\nports = [\"1-1500\"]\nexpect = \"open\"",
        );
        for port in 1..=1500 {
            record(&t, "all", port, V4, State::Filtered);
        }
        let page = render(&t, None);
        assert_eq!(listed(&page).len(), MAX_ROWS_PER_TARGET);
        assert!(page.contains("&hellip; 500 more rows not shown"));
        assert!(page.contains("data-filtered=\"1500\" data-error=\"0\" data-unexpected=\"1500\""));
    }
}
