//! The one writer of the exposition formats: every family the exporter serves (name, HELP, TYPE,
//! label names), their HELP and TYPE lines, label escaping, numbers and timestamps, in the
//! Prometheus text format 0.0.4 or OpenMetrics 1.0; and the exporter's own metrics, gathered
//! from the `prometheus` registry as `MetricFamily` protos, written with the same functions.
//!
//! The state table's families are written by [`super::table`] and `/probe`'s by
//! `web::probe`, both through this module, so that a family served by both endpoints has the
//! same HELP and TYPE on each, and the same number formatting.
//!
//! The two formats differ only in what OpenMetrics demands:
//! - a counter family is named without `_total` (`# TYPE port_state_changes counter`); its
//!   samples keep the suffix (`port_state_changes_total{...}`), so Prometheus stores the same
//!   series from either format. A counter whose name lacks `_total` would get it added by
//!   OpenMetrics, a different series, so it is written as `unknown` there instead;
//! - an info family (`port_exporter_build_info`, a gauge in the text format) is
//!   `# TYPE port_exporter_build info`, its sample still `port_exporter_build_info{...} 1`;
//! - HELP escapes `"` as well, and TYPE comes before HELP (the order the specification
//!   recommends);
//! - sample timestamps are in seconds rather than milliseconds;
//! - the exposition ends with `# EOF` ([`finish`]);
//! - UNIT lines, which OpenMetrics makes optional, are left out (the names end with the unit
//!   anyway), and so are counters' optional `_created` samples.
//!
//! Numbers: integers (counts, 0 and 1) through `itoa`; floating point values (durations,
//! timestamps) through `ryu`'s shortest round-trip form, which always has a decimal point or an
//! exponent (`1.0`, `0.00025`, `1e-7`) as OpenMetrics wants for floats, and `NaN`, `+Inf`,
//! `-Inf` for the values that are not finite. Histogram bounds (`le`) are written the same
//! way in both formats (`le="1.0"`), so that they are the same series either way.

use bytes::BytesMut;
use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType};

use crate::domain::State;
use crate::families::{self, Family, Kind, OWN_FAMILIES};
use crate::probe::ServiceFinding;

/// The Content-Type of the Prometheus text format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The Content-Type of OpenMetrics 1.0.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// An exposition format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format 0.0.4.
    Text,
    /// OpenMetrics 1.0.0 (text).
    OpenMetrics,
}

impl Format {
    /// The format to answer a scrape with, from its Accept header: OpenMetrics when the
    /// client weighs `application/openmetrics-text` (version 1.0.0 or none) above the text
    /// format (`text/plain` of version 0.0.4 or none, `text/*`, `*/*`), the text format
    /// otherwise: without an Accept header, for `*/*` alone (curl), on a tie, and when the
    /// client accepts neither. The most specific range that matches an offer gives its
    /// weight (`q`, 1 when absent; 0 refuses).
    ///
    /// Prometheus 2.x sends `application/openmetrics-text;version=1.0.0,
    /// application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,
    /// */*;q=0.1` and gets OpenMetrics.
    pub fn from_accept(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text;
        };
        // Per offer: (specificity, q) of the most specific matching range so far.
        let mut text: Option<(u8, f32)> = None;
        let mut openmetrics: Option<(u8, f32)> = None;
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media_type = parts.next().unwrap_or_default().to_ascii_lowercase();
            let (mut version, mut q) = (None, 1.0_f32);
            for parameter in parts {
                let Some((name, value)) = parameter.split_once('=') else {
                    continue;
                };
                let value = value.trim().trim_matches('"');
                match name.trim().to_ascii_lowercase().as_str() {
                    "version" => version = Some(value.to_string()),
                    "q" => q = value.parse().unwrap_or(0.0),
                    _ => {}
                }
            }
            let versioned = u8::from(version.is_some());
            let (offer, specificity) = match media_type.as_str() {
                "application/openmetrics-text"
                    if version.as_deref().is_none_or(|v| v == "1.0.0") =>
                {
                    (&mut openmetrics, 2 + versioned)
                }
                "text/plain" if version.as_deref().is_none_or(|v| v == "0.0.4") => {
                    (&mut text, 2 + versioned)
                }
                "text/*" => (&mut text, 1),
                "*/*" => (&mut text, 0),
                _ => continue,
            };
            if offer.is_none_or(|(known, _)| specificity > known) {
                *offer = Some((specificity, q));
            }
        }
        let weight = |offer: Option<(u8, f32)>| offer.map_or(0.0, |(_, q)| q);
        if weight(openmetrics) > weight(text) {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    /// The Content-Type of an exposition in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => TEXT_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

impl Family {
    /// Writes the family's HELP and TYPE lines.
    pub fn write_header(&self, out: &mut impl Out, format: Format) {
        header(out, format, self.name, self.help, self.kind);
    }
}

/// `,state="..."} ` per state, indexed by `state as usize` (`State::ALL` order): the end of a
/// `port_state` or `port_target_ports` series, before its value.
pub const STATE_SUFFIXES: [&str; State::ALL.len()] = [
    ",state=\"open\"} ",
    ",state=\"closed\"} ",
    ",state=\"filtered\"} ",
    ",state=\"open|filtered\"} ",
    ",state=\"error\"} ",
];

/// Where text is written: the renderers' buffers and strings.
pub trait Out {
    fn put(&mut self, text: &str);
}

impl Out for String {
    #[inline]
    fn put(&mut self, text: &str) {
        self.push_str(text);
    }
}

impl Out for BytesMut {
    #[inline]
    fn put(&mut self, text: &str) {
        self.extend_from_slice(text.as_bytes());
    }
}

/// Writes a family's HELP (unless `help` is empty) and TYPE lines. `name` is the name of the
/// family's series (see [`Family::name`]); OpenMetrics names the family without the
/// counter's `_total` or the info's `_info`.
pub fn header(out: &mut impl Out, format: Format, name: &str, help: &str, kind: Kind) {
    match format {
        Format::Text => {
            help_line(out, name, help, false);
            for part in ["# TYPE ", name, " ", text_type(kind), "\n"] {
                out.put(part);
            }
        }
        Format::OpenMetrics => {
            let (name, type_name) = openmetrics_type(name, kind);
            for part in ["# TYPE ", name, " ", type_name, "\n"] {
                out.put(part);
            }
            help_line(out, name, help, true);
        }
    }
}

/// `# HELP name help`, escaped as the text format (`quotes` false) or OpenMetrics wants.
fn help_line(out: &mut impl Out, name: &str, help: &str, quotes: bool) {
    if !help.is_empty() {
        for part in ["# HELP ", name, " "] {
            out.put(part);
        }
        escape(out, help, quotes);
        out.put("\n");
    }
}

fn text_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Gauge | Kind::Info => "gauge",
        Kind::Counter => "counter",
        Kind::Histogram => "histogram",
        Kind::Summary => "summary",
        Kind::Unknown => "untyped",
    }
}

/// The OpenMetrics family name and type of a family whose series are named `name`.
fn openmetrics_type(name: &str, kind: Kind) -> (&str, &'static str) {
    match kind {
        Kind::Counter => match name.strip_suffix("_total") {
            Some(family) => (family, "counter"),
            // OpenMetrics would name its samples `name_total`: another series.
            None => (name, "unknown"),
        },
        Kind::Info => match name.strip_suffix("_info") {
            Some(family) => (family, "info"),
            None => (name, "gauge"),
        },
        Kind::Gauge => (name, "gauge"),
        Kind::Histogram => (name, "histogram"),
        Kind::Summary => (name, "summary"),
        Kind::Unknown => (name, "unknown"),
    }
}

/// Writes `text` with backslash and line feed escaped, and double quotes when `quotes`.
fn escape(out: &mut impl Out, text: &str, quotes: bool) {
    let mut rest = text;
    while let Some(at) = rest
        .bytes()
        .position(|b| b == b'\\' || b == b'\n' || (quotes && b == b'"'))
    {
        out.put(&rest[..at]);
        out.put(match rest.as_bytes()[at] {
            b'\\' => "\\\\",
            b'\n' => "\\n",
            _ => "\\\"",
        });
        rest = &rest[at + 1..];
    }
    out.put(rest);
}

/// Appends `name="value"` with the value escaped (backslash, double quote, line feed), as
/// both formats require.
pub fn push_label(out: &mut impl Out, name: &str, value: &str) {
    out.put(name);
    out.put("=\"");
    escape(out, value, true);
    out.put("\"");
}

/// Writes one sample line from its parts: `name`, the series' labels from `{` on (escaped,
/// without the closing brace), `suffix` (more labels, `} ` and the like), the value.
#[inline]
pub fn push_line(out: &mut impl Out, name: &str, labels: &str, suffix: &str, value: &str) {
    for part in [name, labels, suffix, value, "\n"] {
        out.put(part);
    }
}

/// Writes `name{labels,label="value",...} 1`: a sample whose labels are the information.
pub fn push_info(out: &mut impl Out, name: &str, labels: &str, values: &[(&str, &str)]) {
    out.put(name);
    out.put(labels);
    for (label, value) in values {
        out.put(",");
        push_label(out, label, value);
    }
    out.put("} 1\n");
}

/// Writes `name{labels} 1` or `0` for a flag that is known; nothing for one that is not.
pub fn push_flag(out: &mut impl Out, name: &str, labels: &str, flag: Option<bool>) {
    if let Some(flag) = flag {
        push_line(out, name, labels, "} ", if flag { "1" } else { "0" });
    }
}

/// Writes the sample of `family` (one of [`super::table::SERVICE_FAMILIES`]) for one port's service
/// finding, `labels` from `{` on without the closing brace; nothing where the finding has
/// none (no expectation, no handshake, no expiry, `insecure_skip_verify`).
pub fn push_service_sample(
    out: &mut impl Out,
    family: &Family,
    labels: &str,
    found: &ServiceFinding,
    numbers: &mut Numbers,
) {
    let name = family.name;
    if name == families::PORT_SERVICE_INFO.name {
        let values = [
            ("service", found.service.as_str()),
            ("tls", found.tls.as_str()),
            ("version", found.version.as_deref().unwrap_or("")),
        ];
        push_info(out, name, labels, &values);
    } else if name == families::PORT_SERVICE_UNEXPECTED.name {
        push_flag(out, name, labels, found.unexpected);
    } else if name == families::PORT_SERVICE_REASON.name {
        let reason = found.reason.as_str();
        push_info(out, name, labels, &[("reason", &reason)]);
    } else if let Some(cert) = &found.cert {
        if name == families::PORT_TLS_CERT_EXPIRY.name {
            if let Some(expiry) = cert.expiry {
                push_line(out, name, labels, "} ", numbers.int(expiry));
            }
        } else if name == families::PORT_TLS_VERSION_INFO.name {
            push_info(out, name, labels, &[("version", cert.version)]);
        } else if name == families::PORT_TLS_CERT_VERIFIED.name {
            push_flag(out, name, labels, cert.verified);
        }
    }
}

/// Number formatting, with the buffers it needs.
#[derive(Default)]
pub struct Numbers {
    ints: itoa::Buffer,
    floats: ryu::Buffer,
}

impl Numbers {
    pub fn int(&mut self, value: impl itoa::Integer) -> &str {
        self.ints.format(value)
    }

    /// A floating point value: the shortest text that reads back as `value`, always with a
    /// decimal point or an exponent; `NaN`, `+Inf` and `-Inf` as Prometheus writes them.
    #[inline]
    pub fn float(&mut self, value: f64) -> &str {
        if value.is_finite() {
            self.floats.format_finite(value)
        } else if value.is_nan() {
            "NaN"
        } else if value > 0.0 {
            "+Inf"
        } else {
            "-Inf"
        }
    }

    /// A value gathered from the registry, which keeps every value as a float: an integer
    /// value (a count) as an integer, as the text format always wrote it (and scripts read
    /// it), any other as [`Numbers::float`].
    fn gathered(&mut self, value: f64) -> &str {
        const EXACT: f64 = (1_u64 << 53) as f64;
        if value.abs() < EXACT && value.fract() == 0.0 {
            // Exact: an integer below 2^53.
            self.ints.format(value as i64)
        } else {
            self.float(value)
        }
    }
}

/// Writes the families gathered from the exporter's registry (its own metrics and the
/// process collector's) in `format`. A family named in [`OWN_FAMILIES`] as an info is
/// written as one; the others by their proto type.
pub fn write_gathered(out: &mut String, format: Format, families: &[MetricFamily]) {
    let mut numbers = Numbers::default();
    for family in families {
        let name = family.name();
        let kind = match family.get_field_type() {
            MetricType::COUNTER => Kind::Counter,
            MetricType::GAUGE
                if OWN_FAMILIES
                    .iter()
                    .any(|f| f.name == name && f.kind == Kind::Info) =>
            {
                Kind::Info
            }
            MetricType::GAUGE => Kind::Gauge,
            MetricType::HISTOGRAM => Kind::Histogram,
            MetricType::SUMMARY => Kind::Summary,
            MetricType::UNTYPED => Kind::Unknown,
        };
        header(out, format, name, family.help(), kind);
        for metric in family.get_metric() {
            let mut sample = Sample {
                out: &mut *out,
                numbers: &mut numbers,
                format,
                name,
                metric,
            };
            match kind {
                Kind::Counter => sample.write("", None, metric.get_counter().value()),
                Kind::Gauge | Kind::Info => sample.write("", None, metric.get_gauge().value()),
                Kind::Unknown => sample.write("", None, metric.untyped.value()),
                Kind::Histogram => {
                    let histogram = metric.get_histogram();
                    // The +Inf bucket is implicit in the proto: it counts every sample.
                    for bucket in histogram.get_bucket() {
                        let bound = bucket.upper_bound();
                        if bound != f64::INFINITY {
                            let count = bucket.cumulative_count() as f64;
                            sample.write("_bucket", Some(("le", bound)), count);
                        }
                    }
                    let count = histogram.get_sample_count() as f64;
                    sample.write("_bucket", Some(("le", f64::INFINITY)), count);
                    sample.write("_sum", None, histogram.get_sample_sum());
                    sample.write("_count", None, count);
                }
                Kind::Summary => {
                    let summary = metric.get_summary();
                    for quantile in summary.get_quantile() {
                        let at = quantile.quantile();
                        sample.write("", Some(("quantile", at)), quantile.value());
                    }
                    sample.write("_sum", None, summary.sample_sum());
                    sample.write("_count", None, summary.sample_count() as f64);
                }
            }
        }
    }
}

/// Ends an exposition: OpenMetrics' `# EOF` (the text format has no end marker).
pub fn finish(out: &mut impl Out, format: Format) {
    if format == Format::OpenMetrics {
        out.put("# EOF\n");
    }
}

/// The samples of one gathered metric.
struct Sample<'a> {
    out: &'a mut String,
    numbers: &'a mut Numbers,
    format: Format,
    name: &'a str,
    metric: &'a Metric,
}

impl Sample<'_> {
    /// One sample: the family's name with `suffix`, the metric's labels and `bound` (`le` or
    /// `quantile` and its value), the value, and the metric's timestamp if it has one
    /// (milliseconds in the text format, seconds in OpenMetrics).
    fn write(&mut self, suffix: &str, bound: Option<(&str, f64)>, value: f64) {
        let out = &mut *self.out;
        out.put(self.name);
        out.put(suffix);
        let labels: &[LabelPair] = self.metric.get_label();
        if !labels.is_empty() || bound.is_some() {
            let mut separator = "{";
            for label in labels {
                out.put(separator);
                push_label(out, label.name(), label.value());
                separator = ",";
            }
            if let Some((name, at)) = bound {
                out.put(separator);
                push_label(out, name, self.numbers.float(at));
            }
            out.put("}");
        }
        out.put(" ");
        out.put(self.numbers.gathered(value));
        let timestamp_ms = self.metric.timestamp_ms();
        if timestamp_ms != 0 {
            out.put(" ");
            match self.format {
                Format::Text => out.put(self.numbers.int(timestamp_ms)),
                Format::OpenMetrics => out.put(self.numbers.float(timestamp_ms as f64 / 1000.0)),
            }
        }
        out.put("\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families::BUILD_INFO;

    #[test]
    fn state_suffixes_are_indexed_by_state() {
        for state in State::ALL {
            let suffix = STATE_SUFFIXES[state as usize];
            assert_eq!(suffix, format!(",state=\"{}\"}} ", state.as_str()));
        }
    }
    use prometheus::proto::{Quantile, Summary};
    use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};

    #[test]
    fn label_values_and_help_are_escaped_per_format() {
        let mut out = String::new();
        push_label(&mut out, "note", "a\\b \"c\"\nd é");
        assert_eq!(out, r#"note="a\\b \"c\"\nd é""#);
        let help = "Say \"hi\" \\ twice\nplease";
        let mut text = String::new();
        header(&mut text, Format::Text, "x_total", help, Kind::Counter);
        assert_eq!(
            text,
            "# HELP x_total Say \"hi\" \\\\ twice\\nplease\n# TYPE x_total counter\n"
        );
        let mut om = String::new();
        header(&mut om, Format::OpenMetrics, "x_total", help, Kind::Counter);
        assert_eq!(
            om,
            "# TYPE x counter\n# HELP x Say \\\"hi\\\" \\\\ twice\\nplease\n"
        );
        let mut empty = String::new();
        header(&mut empty, Format::Text, "g", "", Kind::Gauge);
        assert_eq!(empty, "# TYPE g gauge\n", "no HELP line for an empty help");
    }

    #[test]
    fn openmetrics_names_families_without_the_type_suffix_unless_that_changes_the_series() {
        let type_line = |name, kind| {
            let mut out = String::new();
            header(&mut out, Format::OpenMetrics, name, "", kind);
            out
        };
        assert_eq!(type_line("a_total", Kind::Counter), "# TYPE a counter\n");
        assert_eq!(type_line("a", Kind::Counter), "# TYPE a unknown\n");
        assert_eq!(type_line("b_info", Kind::Info), "# TYPE b info\n");
        assert_eq!(type_line("b", Kind::Info), "# TYPE b gauge\n");
        assert_eq!(type_line("c", Kind::Unknown), "# TYPE c unknown\n");
        let mut text = String::new();
        header(&mut text, Format::Text, "b_info", "", Kind::Info);
        header(&mut text, Format::Text, "c", "", Kind::Unknown);
        assert_eq!(text, "# TYPE b_info gauge\n# TYPE c untyped\n");
    }

    #[test]
    fn numbers_are_shortest_round_trip_and_valid_for_prometheus() {
        let mut numbers = Numbers::default();
        for (value, text) in [
            (1.0, "1.0"),
            (0.00025, "0.00025"),
            (1.5, "1.5"),
            (1e-7, "1e-7"),
            (1_700_000_000.123, "1700000000.123"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ] {
            assert_eq!(numbers.float(value), text);
            assert_eq!(
                text.parse::<f64>().map(|v| v.to_bits()),
                Ok(value.to_bits())
            );
        }
        assert_eq!(numbers.int(42_u64), "42");
        for (value, text) in [
            (23.0, "23"),
            (-0.0, "0"),
            (0.5, "0.5"),
            (9_007_199_254_740_991.0, "9007199254740991"),
            (9_007_199_254_740_992.0, "9007199254740992.0"),
            (f64::INFINITY, "+Inf"),
        ] {
            assert_eq!(numbers.gathered(value), text);
        }
    }

    #[test]
    fn accept_headers_negotiate_openmetrics_only_when_preferred() {
        let prometheus_2 = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let prometheus_3 = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5,application/openmetrics-text;version=1.0.0;q=0.4,application/openmetrics-text;version=0.0.1;q=0.3,text/plain;version=1.0.0;q=0.2,text/plain;version=0.0.4;q=0.1,*/*;q=0.05";
        let cases = [
            (None, Format::Text),
            (Some(prometheus_2), Format::OpenMetrics),
            (Some(prometheus_3), Format::OpenMetrics),
            (Some("*/*"), Format::Text),
            (Some("text/plain;version=0.0.4"), Format::Text),
            (Some("application/openmetrics-text"), Format::OpenMetrics),
            (
                Some("Application/OpenMetrics-Text; version=\"1.0.0\""),
                Format::OpenMetrics,
            ),
            // Only a version we do not write.
            (
                Some("application/openmetrics-text;version=0.0.1"),
                Format::Text,
            ),
            (
                Some("application/openmetrics-text;version=1.0.0;q=0"),
                Format::Text,
            ),
            // A tie goes to the text format; so does a stronger text/plain.
            (
                Some("application/openmetrics-text, text/plain"),
                Format::Text,
            ),
            (
                Some("application/openmetrics-text;q=0.5, text/*"),
                Format::Text,
            ),
            // The most specific range decides: text refused, anything else welcome.
            (
                Some("text/plain;q=0, application/openmetrics-text;q=0.2, */*"),
                Format::OpenMetrics,
            ),
            (Some("application/json"), Format::Text),
        ];
        for (accept, format) in cases {
            assert_eq!(Format::from_accept(accept), format, "{accept:?}");
        }
        assert_eq!(
            Format::OpenMetrics.content_type(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        assert_eq!(
            Format::Text.content_type(),
            "text/plain; version=0.0.4; charset=utf-8"
        );
    }

    /// A registry with one family of each kind the exporter registers, set to known values.
    fn sample_families() -> Vec<MetricFamily> {
        let registry = prometheus::Registry::new();
        let counter = IntCounter::new("demo_events_total", "Events.").unwrap();
        counter.inc_by(3);
        let by_state =
            IntCounterVec::new(Opts::new("demo_probes_total", "Probes."), &["state"]).unwrap();
        by_state.with_label_values(&["open\"x"]).inc();
        let gauge = IntGauge::new("demo_in_flight", "In \"flight\".").unwrap();
        gauge.set(-2);
        let info = IntGauge::with_opts(
            Opts::new(BUILD_INFO.name, BUILD_INFO.help).const_label("version", "1.2"),
        )
        .unwrap();
        info.set(1);
        let histogram = Histogram::with_opts(
            HistogramOpts::new("demo_seconds", "Latency.").buckets(vec![0.001, 1.0]),
        )
        .unwrap();
        histogram.observe(0.5);
        histogram.observe(0.25);
        registry.register(Box::new(counter)).unwrap();
        registry.register(Box::new(by_state)).unwrap();
        registry.register(Box::new(gauge)).unwrap();
        registry.register(Box::new(info)).unwrap();
        registry.register(Box::new(histogram)).unwrap();
        registry.gather()
    }

    fn gathered(format: Format, families: &[MetricFamily]) -> String {
        let mut out = String::new();
        write_gathered(&mut out, format, families);
        finish(&mut out, format);
        out
    }

    #[test]
    fn gathered_families_in_both_formats() {
        let families = sample_families();
        let help = BUILD_INFO.help;
        assert_eq!(
            gathered(Format::Text, &families),
            format!(
                "# HELP demo_events_total Events.
# TYPE demo_events_total counter
demo_events_total 3
# HELP demo_in_flight In \"flight\".
# TYPE demo_in_flight gauge
demo_in_flight -2
# HELP demo_probes_total Probes.
# TYPE demo_probes_total counter
demo_probes_total{{state=\"open\\\"x\"}} 1
# HELP demo_seconds Latency.
# TYPE demo_seconds histogram
demo_seconds_bucket{{le=\"0.001\"}} 0
demo_seconds_bucket{{le=\"1.0\"}} 2
demo_seconds_bucket{{le=\"+Inf\"}} 2
demo_seconds_sum 0.75
demo_seconds_count 2
# HELP port_exporter_build_info {help}
# TYPE port_exporter_build_info gauge
port_exporter_build_info{{version=\"1.2\"}} 1
"
            )
        );
        assert_eq!(
            gathered(Format::OpenMetrics, &families),
            format!(
                "# TYPE demo_events counter
# HELP demo_events Events.
demo_events_total 3
# TYPE demo_in_flight gauge
# HELP demo_in_flight In \\\"flight\\\".
demo_in_flight -2
# TYPE demo_probes counter
# HELP demo_probes Probes.
demo_probes_total{{state=\"open\\\"x\"}} 1
# TYPE demo_seconds histogram
# HELP demo_seconds Latency.
demo_seconds_bucket{{le=\"0.001\"}} 0
demo_seconds_bucket{{le=\"1.0\"}} 2
demo_seconds_bucket{{le=\"+Inf\"}} 2
demo_seconds_sum 0.75
demo_seconds_count 2
# TYPE port_exporter_build info
# HELP port_exporter_build {help}
port_exporter_build_info{{version=\"1.2\"}} 1
# EOF
"
            )
        );
    }

    #[test]
    fn summaries_untyped_metrics_and_timestamps_are_written_too() {
        let mut summary = Summary::default();
        summary.set_sample_count(4);
        summary.set_sample_sum(2.5);
        let mut quantile = Quantile::default();
        quantile.set_quantile(0.5);
        quantile.set_value(0.625);
        summary.set_quantile(vec![quantile]);
        let mut metric = Metric::default();
        metric.set_summary(summary);
        metric.set_timestamp_ms(1_700_000_000_123);
        let mut family = MetricFamily::default();
        family.set_name("demo_summary_seconds".into());
        family.set_field_type(MetricType::SUMMARY);
        family.set_metric(vec![metric]);
        let mut untyped = MetricFamily::default();
        untyped.set_name("demo_untyped".into());
        untyped.set_field_type(MetricType::UNTYPED);
        let mut value = Metric::default();
        value.untyped.mut_or_insert_default().set_value(7.0);
        untyped.set_metric(vec![value]);
        let families = [family, untyped];
        assert_eq!(
            gathered(Format::Text, &families),
            "# TYPE demo_summary_seconds summary
demo_summary_seconds{quantile=\"0.5\"} 0.625 1700000000123
demo_summary_seconds_sum 2.5 1700000000123
demo_summary_seconds_count 4 1700000000123
# TYPE demo_untyped untyped
demo_untyped 7
"
        );
        assert_eq!(
            gathered(Format::OpenMetrics, &families),
            "# TYPE demo_summary_seconds summary
demo_summary_seconds{quantile=\"0.5\"} 0.625 1700000000.123
demo_summary_seconds_sum 2.5 1700000000.123
demo_summary_seconds_count 4 1700000000.123
# TYPE demo_untyped unknown
demo_untyped 7
# EOF
"
        );
    }
}
