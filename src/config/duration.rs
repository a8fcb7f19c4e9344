//! Durations written the Prometheus way: `"500ms"`, `"15s"`, `"1m30s"`.

use std::time::Duration;

/// The units of a duration, largest first, with their length in milliseconds.
pub const DURATION_UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Parses a Prometheus-style duration: units d, h, m, s, ms in decreasing order, e.g. "1m30s".
///
/// ```
/// use std::time::Duration;
/// use port_exporter::config::duration::parse_duration;
/// assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
/// assert_eq!(parse_duration("1.5s"), None); // no fractions, as in Prometheus
/// ```
pub fn parse_duration(text: &str) -> Option<Duration> {
    if text.is_empty() {
        return None;
    }
    let mut rest = text;
    let mut total_ms: u64 = 0;
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let index = DURATION_UNITS[next_unit..]
            .iter()
            .position(|(u, _)| *u == unit)?
            + next_unit;
        total_ms = total_ms.checked_add(number.checked_mul(DURATION_UNITS[index].1)?)?;
        next_unit = index + 1;
    }
    Some(Duration::from_millis(total_ms))
}

/// Formats a duration the way it is written in the config.
///
/// ```
/// use std::time::Duration;
/// use port_exporter::config::duration::format_duration;
/// assert_eq!(format_duration(Duration::from_millis(2500)), "2500ms");
/// assert_eq!(format_duration(Duration::from_secs(90)), "90s");
/// ```
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_prometheus() {
        let cases = [
            ("15s", Some(15_000)),
            ("1m30s", Some(90_000)),
            ("500ms", Some(500)),
            ("1h", Some(3_600_000)),
            ("2d", Some(172_800_000)),
            ("1s500ms", Some(1_500)),
            ("", None),
            ("15", None),
            ("s", None),
            ("1.5s", None),
            ("30s1m", None),
            ("1s1s", None),
            ("-1s", None),
            ("99999999999999999999s", None),
        ];
        for (text, ms) in cases {
            assert_eq!(
                parse_duration(text),
                ms.map(Duration::from_millis),
                "parse_duration({text:?})"
            );
        }
    }
}
