//! How the status page writes times and durations: UTC calendar times, ISO 8601 for
//! `datetime` attributes, "3m ago" ages, and milliseconds with the precision that matters.
//!
//! Plain `Display` wrappers, so the template prints them like any other value (and escapes
//! them, which costs nothing: they never contain markup). They hold references because
//! askama passes a template's values to calls by reference.

use std::fmt::{self, Display};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::domain::State;

/// A state as a token for class names, ids and `data-*` attribute names: its word, but
/// `open-filtered` for `open|filtered` (`|` is neither a plain class selector nor allowed in
/// an attribute name).
pub fn token(state: &State) -> &'static str {
    match state {
        State::OpenFiltered => "open-filtered",
        state => state.as_str(),
    }
}

/// A duration in milliseconds, with the precision that matters at its size.
pub struct Millis<'a>(pub &'a Duration);

impl Display for Millis<'_> {
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

/// How long before `now` (the first) a time was: "12s ago", "3m ago", "2h 5m ago", "4d 1h ago".
pub struct Ago<'a>(pub &'a SystemTime, pub &'a SystemTime);

impl Display for Ago<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A time after `now` (the clock stepped back) is shown as now.
        let s = self.0.duration_since(*self.1).map_or(0, |d| d.as_secs());
        match s {
            0..60 => write!(f, "{s}s ago"),
            60..3600 => write!(f, "{}m ago", s / 60),
            3600..86400 => write!(f, "{}h {}m ago", s / 3600, s % 3600 / 60),
            _ => write!(f, "{}d {}h ago", s / 86400, s % 86400 / 3600),
        }
    }
}

/// A time as UTC calendar date and time: "2024-05-01 12:34:56 UTC".
pub struct Utc<'a>(pub &'a SystemTime);

/// A time as UTC calendar date: "2024-05-01".
pub struct Date<'a>(pub &'a SystemTime);

impl Display for Date<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, mo, d, ..) = civil(*self.0);
        write!(f, "{y:04}-{mo:02}-{d:02}")
    }
}

/// A time for a `datetime` attribute: "2024-05-01T12:34:56Z".
pub struct Iso<'a>(pub &'a SystemTime);

impl Display for Utc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, mo, d, h, mi, s) = civil(*self.0);
        write!(f, "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
    }
}

impl Display for Iso<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, mo, d, h, mi, s) = civil(*self.0);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// 2024-05-01 12:00:00 UTC.
    const NOW: u64 = 1_714_564_800;

    #[test]
    fn times_and_durations_are_formatted() {
        assert_eq!(Utc(&at(0)).to_string(), "1970-01-01 00:00:00 UTC");
        assert_eq!(Utc(&at(951_782_400)).to_string(), "2000-02-29 00:00:00 UTC");
        assert_eq!(Iso(&at(NOW + 3661)).to_string(), "2024-05-01T13:01:01Z");
        assert_eq!(
            Utc(&at(4_102_444_799)).to_string(),
            "2099-12-31 23:59:59 UTC"
        );
        let ago = |secs| Ago(&at(NOW), &at(NOW - secs)).to_string();
        assert_eq!(ago(0), "0s ago");
        assert_eq!(ago(59), "59s ago");
        assert_eq!(ago(180), "3m ago");
        assert_eq!(ago(7500), "2h 5m ago");
        assert_eq!(ago(90_000), "1d 1h ago");
        assert_eq!(Ago(&at(NOW), &at(NOW + 10)).to_string(), "0s ago");
        let ms = |micros| Millis(&Duration::from_micros(micros)).to_string();
        assert_eq!(ms(52), "0.052");
        assert_eq!(ms(2_346), "2.35");
        assert_eq!(ms(23_440), "23.4");
        assert_eq!(ms(1_234_000), "1234");
    }
}
