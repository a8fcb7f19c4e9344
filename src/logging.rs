//! Logging to stderr in logfmt (the Prometheus ecosystem's default) or JSON.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The `--log.format` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Logfmt,
    Json,
}

/// Installs the global subscriber: events at `level` and above, to stderr.
pub fn init(level: Level, format: Format) {
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        // A failed write to stderr (a log reader gone) must not panic the task that logged,
        // which could be the one that handles SIGTERM.
        .log_internal_errors(false);
    match format {
        Format::Logfmt => builder.event_format(Logfmt).init(),
        Format::Json => builder.json().flatten_event(true).init(),
    }
}

/// `ts=... level=info target=... msg="..." key=value` lines.
struct Logfmt;

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut ts = String::new();
        SystemTime.format_time(&mut Writer::new(&mut ts))?;
        let meta = event.metadata();
        let mut line = format!(
            "ts={} level={} target={}",
            ts,
            meta.level().as_str().to_ascii_lowercase(),
            meta.target()
        );
        event.record(&mut LogfmtFields(&mut line));
        writeln!(writer, "{line}")
    }
}

struct LogfmtFields<'a>(&'a mut String);

impl Visit for LogfmtFields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let key = match field.name() {
            "message" => "msg",
            name => name,
        };
        let _ = write!(self.0, " {key}={}", quote(value));
    }
}

/// Quotes a logfmt value when it is empty or holds spaces, quotes, `=` or control characters.
fn quote(value: &str) -> String {
    let plain = !value.is_empty()
        && !value
            .chars()
            .any(|c| c == ' ' || c == '"' || c == '=' || c.is_control());
    if plain {
        value.to_string()
    } else {
        format!("{value:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn logfmt_values_are_quoted_only_when_needed() {
        assert_eq!(quote("abc"), "abc");
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote("k=v"), "\"k=v\"");
        assert_eq!(quote("say \"hi\"\n"), "\"say \\\"hi\\\"\\n\"");
    }
}
