//! The status page at `/`: every target, port and address with its state, for a person.
//!
//! A pure function of the state table, the time and the `?state=` filter: one HTML5 document
//! with inline CSS and a few lines of inline JS, no external assets, readable without JS.
//! Target names, hosts and label values come from the config (user input) and are escaped.
//!
//! Ports that come from a range are listed only when `/metrics` has series for them
//! ([`TargetInfo::shows`]); every target gets a summary line counting all its rows per state,
//! so a 65535-port range stays one line plus its open and unexpected ports.

use std::fmt::{self, Display, Write as _};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::domain::Expect;
use crate::domain::State;
use crate::state::{Row, RowKey, StateTable, TargetInfo};

/// Most rows listed per target; the rest are counted in a note (the summary line counts all).
/// Keeps the page usable when a whole range breaks its expectation.
pub const MAX_ROWS_PER_TARGET: usize = 1000;

/// Columns of the port table.
const COLUMNS: usize = 10;

/// What the page shows besides the table.
pub struct StatusPage<'a> {
    /// Path of the metrics endpoint, for the link.
    pub telemetry_path: &'a str,
    /// Seconds between automatic reloads of the page (0: no automatic reload).
    pub refresh_seconds: u32,
}

/// The `?state=` parameter, understood.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Filter {
    All,
    Only(State),
    /// A value that names no state: every row is shown, and the page says so.
    Invalid(String),
}

impl Filter {
    fn parse(value: Option<&str>) -> Filter {
        match value.map(str::trim) {
            None | Some("") => Filter::All,
            Some(v) if v.eq_ignore_ascii_case("all") => Filter::All,
            Some(v) => State::ALL
                .into_iter()
                .find(|s| s.as_str().eq_ignore_ascii_case(v))
                .map_or_else(|| Filter::Invalid(v.to_string()), Filter::Only),
        }
    }

    fn admits(&self, state: State) -> bool {
        match self {
            Filter::Only(only) => *only == state,
            Filter::All | Filter::Invalid(_) => true,
        }
    }
}

/// Counts per state, indexed like [`State::ALL`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts([usize; 4]);

impl Counts {
    fn add(&mut self, state: State) {
        self.0[state as usize] += 1;
    }

    fn get(&self, state: State) -> usize {
        self.0[state as usize]
    }

    fn total(&self) -> usize {
        self.0.iter().sum()
    }

    fn merge(&mut self, other: &Counts) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }
}

/// One target, digested for rendering.
struct TargetView<'t> {
    info: &'t TargetInfo,
    dns_lookup: Option<Duration>,
    /// Every row per state, listed or not (like `port_target_ports`).
    all: Counts,
    /// Rows whose state breaks the expectation, listed or not.
    unexpected: usize,
    /// Rows `/metrics` has series for, per state.
    listed: Counts,
    /// Rows listed and admitted by the filter, sorted by port and address.
    rows: Vec<(RowKey, &'t Row)>,
    /// Distinct ports among all rows.
    ports: usize,
}

impl StatusPage<'_> {
    /// Renders the page for `table` as of `now`; `state_filter` is the `?state=` parameter.
    pub fn render(
        &self,
        table: &StateTable,
        now: SystemTime,
        state_filter: Option<&str>,
    ) -> String {
        let mut out = String::with_capacity(16 * 1024);
        self.write(&mut out, table, now, &Filter::parse(state_filter))
            .expect("writing to a String cannot fail");
        out
    }

    fn write(
        &self,
        out: &mut String,
        table: &StateTable,
        now: SystemTime,
        filter: &Filter,
    ) -> fmt::Result {
        table.view(|table| self.write_targets(out, table, now, filter))
    }

    fn write_targets(
        &self,
        out: &mut String,
        table: &std::collections::BTreeMap<String, crate::state::TargetRows>,
        now: SystemTime,
        filter: &Filter,
    ) -> fmt::Result {
        let views: Vec<TargetView<'_>> = table
            .values()
            .map(|target| {
                let info = &*target.info;
                let mut view = TargetView {
                    info,
                    dns_lookup: target.dns_lookup,
                    all: Counts::default(),
                    unexpected: 0,
                    listed: Counts::default(),
                    rows: Vec::new(),
                    ports: 0,
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
                    if info.expect.is_broken_by(state) == Some(true) {
                        view.unexpected += 1;
                    }
                    if info.shows(key.port, row) {
                        view.listed.add(state);
                        if filter.admits(state) {
                            view.rows.push((*key, row));
                        }
                    }
                }
                view
            })
            .collect();
        let mut all = Counts::default();
        let mut listed = Counts::default();
        for view in &views {
            all.merge(&view.all);
            listed.merge(&view.listed);
        }
        let unexpected: usize = views.iter().map(|v| v.unexpected).sum();

        self.write_head(out, unexpected)?;
        out.push_str("<body>\n");
        self.write_header(out)?;
        out.push_str("<main>\n");
        write!(
            out,
            "<p class=\"meta\">Rendered <time id=\"rendered\" datetime=\"{}\">{}</time>",
            Iso(now),
            Utc(now)
        )?;
        if self.refresh_seconds > 0 {
            write!(
                out,
                " &middot; refreshes every {} s <span id=\"countdown\" data-seconds=\"{0}\"></span>",
                self.refresh_seconds
            )?;
        }
        out.push_str("</p>\n");
        write_cards(out, views.len(), &all, unexpected)?;
        write_filters(out, filter, &listed)?;
        let hidden = all.total() - listed.total();
        if let Filter::Invalid(value) = filter {
            writeln!(
                out,
                "<p class=\"notice warn\" id=\"invalid-filter\" role=\"status\">Unknown state \
                 &ldquo;{}&rdquo;: showing all rows. Valid states are open, closed, filtered \
                 and error.</p>",
                Html(value)
            )?;
        }
        if hidden > 0 {
            writeln!(
                out,
                "<p class=\"hint\">{hidden} range {} in {} expected state {} counted in the \
                 summaries but not listed, as on <a href=\"{}\">metrics</a>.</p>",
                plural(hidden, "port", "ports"),
                if hidden == 1 { "its" } else { "their" },
                if hidden == 1 { "is" } else { "are" },
                Html(self.telemetry_path)
            )?;
        }
        write_table(out, &views, filter, now)?;
        out.push_str("</main>\n");
        writeln!(
            out,
            "<footer>port_exporter {} &middot; <a href=\"{}\">metrics</a> &middot; \
             <a href=\"/config\">config</a> &middot; <a href=\"/-/healthy\">healthy</a> &middot; \
             <a href=\"/-/ready\">ready</a></footer>",
            Html(env!("CARGO_PKG_VERSION")),
            Html(self.telemetry_path)
        )?;
        if self.refresh_seconds > 0 {
            out.push_str(SCRIPT);
        }
        out.push_str("</body>\n</html>\n");
        Ok(())
    }

    fn write_head(&self, out: &mut String, unexpected: usize) -> fmt::Result {
        out.push_str(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
        );
        if self.refresh_seconds > 0 {
            // Reloads the same URL, so the ?state= filter is kept.
            writeln!(
                out,
                "<meta http-equiv=\"refresh\" content=\"{}\">",
                self.refresh_seconds
            )?;
        }
        if unexpected > 0 {
            writeln!(
                out,
                "<title>({unexpected} unexpected) port_exporter</title>"
            )?;
        } else {
            out.push_str("<title>port_exporter</title>\n");
        }
        out.push_str(STYLE);
        out.push_str("</head>\n");
        Ok(())
    }

    fn write_header(&self, out: &mut String) -> fmt::Result {
        write!(
            out,
            "<header class=\"top\">\n<h1>port_exporter</h1>\
             <span class=\"version\" id=\"version\">v{}</span>\n\
             <nav>\
             <a href=\"{}\" id=\"link-metrics\">Metrics</a>\
             <a href=\"/config\" id=\"link-config\">Config</a>\
             <a href=\"/-/healthy\" id=\"link-healthy\">Healthy</a>\
             <a href=\"/-/ready\" id=\"link-ready\">Ready</a>\
             </nav>\n</header>\n",
            Html(env!("CARGO_PKG_VERSION")),
            Html(self.telemetry_path)
        )
    }
}

fn write_cards(out: &mut String, targets: usize, all: &Counts, unexpected: usize) -> fmt::Result {
    out.push_str("<section class=\"cards\" aria-label=\"Totals\">\n");
    let card = |out: &mut String, class: &str, n: usize, label: &str| {
        writeln!(
            out,
            "<div class=\"card {class}\" id=\"total-{class}\"><div class=\"n\">{n}</div>\
             <div class=\"l\">{label}</div></div>"
        )
    };
    card(
        out,
        "targets",
        targets,
        plural(targets, "target", "targets"),
    )?;
    card(out, "ports", all.total(), "ports probed")?;
    for state in State::ALL {
        card(out, state.as_str(), all.get(state), state.as_str())?;
    }
    let class = if unexpected > 0 {
        "unexpected bad"
    } else {
        "unexpected"
    };
    writeln!(
        out,
        "<div class=\"card {class}\" id=\"total-unexpected\"><div class=\"n\">{unexpected}</div>\
         <div class=\"l\">unexpected</div></div>"
    )?;
    out.push_str("</section>\n");
    Ok(())
}

fn write_filters(out: &mut String, filter: &Filter, listed: &Counts) -> fmt::Result {
    out.push_str("<nav class=\"filters\" aria-label=\"Filter by state\"><span class=\"label\">Show</span><div class=\"seg\">");
    let link = |out: &mut String, value: &str, label: &str, count: usize, current: bool| {
        write!(
            out,
            "<a href=\"?state={value}\" id=\"filter-{value}\" class=\"{}{value}\"{}>{label}\
             <span class=\"c\">{count}</span></a>",
            if current { "current " } else { "" },
            if current {
                " aria-current=\"page\""
            } else {
                ""
            },
        )
    };
    let all_current = !matches!(filter, Filter::Only(_));
    link(out, "all", "All", listed.total(), all_current)?;
    for state in State::ALL {
        let current = *filter == Filter::Only(state);
        let name = state.as_str();
        let label = match state {
            State::Open => "Open",
            State::Closed => "Closed",
            State::Filtered => "Filtered",
            State::Error => "Error",
        };
        link(out, name, label, listed.get(state), current)?;
    }
    out.push_str("</div></nav>\n");
    Ok(())
}

fn write_table(
    out: &mut String,
    views: &[TargetView<'_>],
    filter: &Filter,
    now: SystemTime,
) -> fmt::Result {
    if views.is_empty() {
        out.push_str("<p class=\"empty\" id=\"no-targets\">No targets configured.</p>\n");
        return Ok(());
    }
    out.push_str(
        "<div class=\"tablewrap\"><table class=\"ports\">\n<thead><tr>\
         <th>Target</th><th>Host</th><th class=\"num\">Port</th><th>IP</th><th>State</th>\
         <th>Reason</th><th class=\"num\">Connect (ms)</th><th>Last change</th>\
         <th>Last probe</th><th>Expectation</th></tr></thead>\n",
    );
    let mut without_rows = 0;
    for view in views {
        // Under a filter, a target none of whose listed rows match is left out (and counted).
        if matches!(filter, Filter::Only(_)) && view.rows.is_empty() {
            without_rows += 1;
            continue;
        }
        write_target(out, view, now)?;
    }
    if let Filter::Only(state) = filter {
        if without_rows == views.len() {
            writeln!(
                out,
                "<tbody><tr class=\"none\"><td colspan=\"{COLUMNS}\" id=\"no-rows\">No listed \
                 port is {}.</td></tr></tbody>",
                state.as_str()
            )?;
        } else if without_rows > 0 {
            writeln!(
                out,
                "<tbody><tr class=\"none\"><td colspan=\"{COLUMNS}\">{without_rows} more {} \
                 without listed {} ports.</td></tr></tbody>",
                plural(without_rows, "target", "targets"),
                state.as_str()
            )?;
        }
    }
    out.push_str("</table></div>\n");
    Ok(())
}

fn write_target(out: &mut String, view: &TargetView<'_>, now: SystemTime) -> fmt::Result {
    let info = view.info;
    let name = Html(&info.name);
    write!(
        out,
        "<tbody class=\"target\" data-target=\"{name}\">\n<tr class=\"group\"><th colspan=\"{COLUMNS}\">\
         <span class=\"tname\">{name}</span> <span class=\"thost mono\">{}</span>\
         <span class=\"chip\">expect {}</span>",
        Html(&info.host),
        expect_name(info.expect)
    )?;
    for (label, value) in &info.labels {
        write!(
            out,
            "<span class=\"chip label\">{}={}</span>",
            Html(label),
            Html(value)
        )?;
    }
    if let Some(took) = view.dns_lookup {
        write!(out, "<span class=\"chip\">DNS {} ms</span>", Millis(took))?;
    }
    write!(
        out,
        "<span class=\"summary\" data-total=\"{}\"",
        view.all.total()
    )?;
    for state in State::ALL {
        write!(out, " data-{}=\"{}\"", state.as_str(), view.all.get(state))?;
    }
    write!(
        out,
        " data-unexpected=\"{}\">{} {}",
        view.unexpected,
        view.ports,
        plural(view.ports, "port", "ports")
    )?;
    if view.all.total() != view.ports {
        write!(out, " ({} rows)", view.all.total())?;
    }
    out.push(':');
    for state in State::ALL {
        let n = view.all.get(state);
        let zero = if n == 0 { " zero" } else { "" };
        write!(
            out,
            " <span class=\"count {}{zero}\"><i></i>{n} {}</span>",
            state.as_str(),
            state.as_str()
        )?;
    }
    if view.unexpected > 0 {
        write!(
            out,
            " <span class=\"count unexpected\">&#9888; {} unexpected</span>",
            view.unexpected
        )?;
    }
    let hidden = view.all.total() - view.listed.total();
    if hidden > 0 {
        write!(out, " <span class=\"hidden\">{hidden} not listed</span>")?;
    }
    out.push_str("</span></th></tr>\n");

    if view.all.total() == 0 {
        writeln!(
            out,
            "<tr class=\"none\"><td colspan=\"{COLUMNS}\">Not probed yet.</td></tr>"
        )?;
    }
    for (key, row) in view.rows.iter().take(MAX_ROWS_PER_TARGET) {
        write_row(out, info, key, row, now)?;
    }
    if view.rows.len() > MAX_ROWS_PER_TARGET {
        let more = view.rows.len() - MAX_ROWS_PER_TARGET;
        writeln!(
            out,
            "<tr class=\"none more\"><td colspan=\"{COLUMNS}\">&hellip; {more} more {} not shown: \
             filter by state, or see the metrics.</td></tr>",
            plural(more, "row", "rows")
        )?;
    }
    out.push_str("</tbody>\n");
    Ok(())
}

fn write_row(
    out: &mut String,
    info: &TargetInfo,
    key: &RowKey,
    row: &Row,
    now: SystemTime,
) -> fmt::Result {
    let outcome = &row.outcome;
    let state = outcome.state.as_str();
    let broken = info.expect.is_broken_by(outcome.state);
    let unexpected = broken == Some(true);
    let ip = key.ip.map(|ip| ip.to_string());
    write!(
        out,
        "<tr class=\"port {state}{}\" data-target=\"{}\" data-port=\"{}\" data-ip=\"{}\" \
         data-state=\"{state}\" data-unexpected=\"{unexpected}\">",
        if unexpected { " unexpected" } else { "" },
        Html(&info.name),
        key.port,
        Html(ip.as_deref().unwrap_or("")),
    )?;
    write!(
        out,
        "<td class=\"tname\">{}</td><td class=\"mono\">{}</td><td class=\"num mono\">{}</td>",
        Html(&info.name),
        Html(&info.host),
        key.port
    )?;
    match &ip {
        Some(ip) => write!(out, "<td class=\"mono\">{}</td>", Html(ip))?,
        None => out.push_str("<td class=\"unresolved\">unresolved</td>"),
    }
    write!(
        out,
        "<td><span class=\"badge {state}\">{state}</span></td><td class=\"mono reason\">{}</td>",
        Html(&outcome.reason.as_str())
    )?;
    match outcome.connect {
        Some(took) => write!(out, "<td class=\"num mono\">{}</td>", Millis(took))?,
        None => out.push_str("<td class=\"num muted\">&mdash;</td>"),
    }
    let changes = match row.changes {
        0 => String::new(),
        1 => " &middot; 1 change".to_string(),
        n => format!(" &middot; {n} changes"),
    };
    write!(
        out,
        "<td><time datetime=\"{}\" title=\"{}{changes}\">{}</time></td>",
        Iso(row.last_change),
        Utc(row.last_change),
        Ago(now, row.last_change)
    )?;
    write!(
        out,
        "<td><time datetime=\"{}\" title=\"{}\">{}</time></td>",
        Iso(outcome.at),
        Utc(outcome.at),
        Ago(now, outcome.at)
    )?;
    let expect = expect_name(info.expect);
    match broken {
        Some(true) => write!(
            out,
            "<td><span class=\"mark bad\" title=\"expected {expect}, found {state}\">\
             &#10007; unexpected</span> <span class=\"muted\">expects {expect}</span></td>"
        )?,
        Some(false) => write!(
            out,
            "<td><span class=\"mark ok\" title=\"expected {expect}\">&#10003; {expect}</span></td>"
        )?,
        None => out.push_str("<td class=\"muted\" title=\"expect any\">&mdash;</td>"),
    }
    out.push_str("</tr>\n");
    Ok(())
}

fn expect_name(expect: Expect) -> &'static str {
    match expect {
        Expect::Open => "open",
        Expect::Closed => "closed",
        Expect::Filtered => "filtered",
        Expect::NotOpen => "not open",
        Expect::Any => "any",
    }
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// Text escaped for HTML element content and quoted attribute values.
struct Html<'a>(&'a str);

impl Display for Html<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

/// A duration in milliseconds, with the precision that matters at its size.
struct Millis(Duration);

impl Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_secs_f64() * 1000.0;
        match ms {
            ms if ms < 1.0 => write!(f, "{ms:.3}"),
            ms if ms < 10.0 => write!(f, "{ms:.2}"),
            ms if ms < 100.0 => write!(f, "{ms:.1}"),
            ms => write!(f, "{ms:.0}"),
        }
    }
}

/// How long before `now` a time was: "12s ago", "3m ago", "2h 5m ago", "4d 1h ago".
struct Ago(SystemTime, SystemTime);

impl Display for Ago {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A time after `now` (the clock stepped back) is shown as now.
        let s = self.0.duration_since(self.1).map_or(0, |d| d.as_secs());
        match s {
            0..60 => write!(f, "{s}s ago"),
            60..3600 => write!(f, "{}m ago", s / 60),
            3600..86400 => write!(f, "{}h {}m ago", s / 3600, s % 3600 / 60),
            _ => write!(f, "{}d {}h ago", s / 86400, s % 86400 / 3600),
        }
    }
}

/// A time as UTC calendar date and time: "2024-05-01 12:34:56 UTC".
struct Utc(SystemTime);

/// A time for a `datetime` attribute: "2024-05-01T12:34:56Z".
struct Iso(SystemTime);

impl Display for Utc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, mo, d, h, mi, s) = civil(self.0);
        write!(f, "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
    }
}

impl Display for Iso {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, mo, d, h, mi, s) = civil(self.0);
        write!(f, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    }
}

/// Year, month, day, hour, minute, second (UTC) of a time; times before 1970 count as 1970.
fn civil(time: SystemTime) -> (u64, u64, u64, u64, u64, u64) {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86400, secs % 86400);
    // Howard Hinnant's civil_from_days, for days >= 0.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day, rem / 3600, rem % 3600 / 60, rem % 60)
}

const STYLE: &str = r#"<style>
:root{--fg:#1f2328;--muted:#656d76;--border:#d0d7de;--line:#eaeef2;--bg:#f6f8fa;
--open:#1a7f37;--open-bg:#dafbe1;--closed:#44618b;--closed-bg:#e3eaf4;
--filtered:#b35900;--filtered-bg:#fff1dc;--error:#cf222e;--error-bg:#ffebe9;--accent:#0969da}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Liberation Sans",sans-serif;color:var(--fg);background:var(--bg)}
a{color:var(--accent)}
.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono","Liberation Mono",monospace;font-size:13px}
.muted{color:var(--muted)}
header.top{background:#24292f;color:#fff;padding:10px 24px;display:flex;align-items:center;gap:10px;flex-wrap:wrap}
header.top h1{font-size:18px;margin:0;font-weight:600;letter-spacing:.01em}
.version{font-size:12px;background:rgba(255,255,255,.16);border-radius:10px;padding:1px 8px}
header.top nav{margin-left:auto;display:flex;gap:2px;flex-wrap:wrap}
header.top nav a{color:#e6edf3;text-decoration:none;padding:5px 10px;border-radius:6px}
header.top nav a:hover{background:rgba(255,255,255,.14);color:#fff}
main{padding:16px 24px 8px;max-width:1500px;margin:0 auto}
.meta{color:var(--muted);margin:0 0 14px;font-size:13px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(120px,1fr));gap:12px;margin:0 0 16px}
.card{background:#fff;border:1px solid var(--border);border-top:3px solid var(--border);border-radius:8px;padding:8px 14px}
.card .n{font-size:24px;font-weight:600;font-variant-numeric:tabular-nums}
.card .l{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.05em}
.card.open{border-top-color:var(--open)}.card.open .n{color:var(--open)}
.card.closed{border-top-color:var(--closed)}.card.closed .n{color:var(--closed)}
.card.filtered{border-top-color:var(--filtered)}.card.filtered .n{color:var(--filtered)}
.card.error{border-top-color:var(--error)}.card.error .n{color:var(--error)}
.card.targets,.card.ports{border-top-color:#8c959f}
.card.unexpected.bad{border-color:#ff8182;border-top-color:var(--error);background:var(--error-bg)}
.card.unexpected.bad .n,.card.unexpected.bad .l{color:var(--error)}
.filters{display:flex;align-items:center;gap:10px;margin:0 0 12px;flex-wrap:wrap}
.filters .label{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.05em}
.seg{display:inline-flex;border:1px solid var(--border);border-radius:6px;overflow:hidden;background:#fff}
.seg a{padding:5px 12px;color:var(--fg);text-decoration:none;border-left:1px solid var(--border)}
.seg a:first-child{border-left:0}
.seg a:hover{background:var(--bg)}
.seg a .c{color:var(--muted);margin-left:6px;font-size:12px;font-variant-numeric:tabular-nums}
.seg a.current{background:var(--accent);color:#fff;font-weight:600}
.seg a.current .c{color:#d6e6ff}
.notice{padding:8px 12px;border-radius:6px;border:1px solid;margin:0 0 12px}
.notice.warn{background:#fff8c5;border-color:#d4a72c}
.hint{color:var(--muted);font-size:13px;margin:0 0 12px}
.empty{background:#fff;border:1px solid var(--border);border-radius:8px;padding:24px;text-align:center;color:var(--muted)}
.tablewrap{background:#fff;border:1px solid var(--border);border-radius:8px;overflow-x:auto}
table.ports{width:100%;border-collapse:collapse}
th,td{padding:6px 10px;text-align:left;border-bottom:1px solid var(--line);white-space:nowrap;vertical-align:middle}
thead th{font-size:12px;font-weight:600;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);background:#fff;border-bottom:1px solid var(--border)}
.num{text-align:right;font-variant-numeric:tabular-nums}
tr.group th{background:#f3f5f8;font-weight:400;white-space:normal;border-top:1px solid var(--border);padding:8px 10px}
tbody.target:first-of-type tr.group th{border-top:0}
.tname{font-weight:600}
tr.group .tname{font-size:15px}
.thost{color:var(--muted);margin-right:6px}
.chip{display:inline-block;font-size:12px;border:1px solid var(--border);background:#fff;border-radius:10px;padding:0 8px;margin-right:4px;color:var(--muted)}
.chip.label{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace}
.summary{margin-left:10px;color:var(--fg);font-size:13px}
.count{margin-left:10px;font-variant-numeric:tabular-nums}
.count i{display:inline-block;width:8px;height:8px;border-radius:50%;margin-right:5px;vertical-align:1px}
.count.open i{background:var(--open)}.count.closed i{background:var(--closed)}
.count.filtered i{background:var(--filtered)}.count.error i{background:var(--error)}
.count.zero{color:#8c959f}
.count.unexpected{color:var(--error);font-weight:600}
.hidden{margin-left:10px;color:var(--muted);font-style:italic}
td.tname{font-weight:500}
.badge{display:inline-block;min-width:64px;text-align:center;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.badge.open{color:var(--open);background:var(--open-bg)}
.badge.closed{color:var(--closed);background:var(--closed-bg)}
.badge.filtered{color:var(--filtered);background:var(--filtered-bg)}
.badge.error{color:var(--error);background:var(--error-bg)}
.reason{color:var(--muted)}
.unresolved{color:var(--muted);font-style:italic}
tr.port:hover td{background:#f6f8fa}
tr.unexpected td{background:#fff4f4}
tr.unexpected:hover td{background:#ffeaea}
tr.unexpected td:first-child{box-shadow:inset 4px 0 0 var(--error)}
.mark.bad{color:var(--error);font-weight:700}
.mark.ok{color:var(--open)}
tr.none td{color:var(--muted);font-style:italic;text-align:center;padding:10px}
time[title]{text-decoration:underline dotted #afb8c1;text-underline-offset:3px;cursor:help}
footer{color:var(--muted);font-size:12px;text-align:center;padding:16px}
footer a{color:var(--muted)}
</style>
"#;

/// Counts down to the next reload; the reload itself is the meta refresh, which works without JS.
const SCRIPT: &str = r#"<script>
(function () {
  var el = document.getElementById("countdown");
  if (!el) return;
  var left = parseInt(el.getAttribute("data-seconds"), 10);
  function tick() { el.textContent = "(next in " + left + " s)"; if (left > 0) left--; }
  tick();
  setInterval(tick, 1000);
})();
</script>
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::domain::Reason;
    use crate::probe::Outcome;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
            State::Error => Reason::Dns,
        };
        let outcome = Outcome {
            state,
            reason,
            connect: (state == State::Open).then_some(Duration::from_micros(250)),
            at: at(NOW - 5),
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

    #[test]
    fn times_and_durations_are_formatted() {
        assert_eq!(Utc(at(0)).to_string(), "1970-01-01 00:00:00 UTC");
        assert_eq!(Utc(at(951_782_400)).to_string(), "2000-02-29 00:00:00 UTC");
        assert_eq!(Iso(at(NOW + 3661)).to_string(), "2024-05-01T13:01:01Z");
        assert_eq!(
            Utc(at(4_102_444_799)).to_string(),
            "2099-12-31 23:59:59 UTC"
        );
        let ago = |secs| Ago(at(NOW), at(NOW - secs)).to_string();
        assert_eq!(ago(0), "0s ago");
        assert_eq!(ago(59), "59s ago");
        assert_eq!(ago(180), "3m ago");
        assert_eq!(ago(7500), "2h 5m ago");
        assert_eq!(ago(90_000), "1d 1h ago");
        assert_eq!(Ago(at(NOW), at(NOW + 10)).to_string(), "0s ago");
        let ms = |micros| Millis(Duration::from_micros(micros)).to_string();
        assert_eq!(ms(52), "0.052");
        assert_eq!(ms(2_346), "2.35");
        assert_eq!(ms(23_440), "23.4");
        assert_eq!(ms(1_234_000), "1234");
        assert_eq!(Html("a&<>\"'b").to_string(), "a&amp;&lt;&gt;&quot;&#39;b");
    }
}
