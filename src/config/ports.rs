//! `ports` and `exclude`: entries (a port or an inclusive `"lo-hi"` range) turned into the
//! sorted list of ports to probe, with range algebra so a target costs what it lists.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;

use super::{Invalid, invalid};

/// One entry of `ports` or `exclude`: a number or an inclusive `"lo-hi"` range, not yet
/// range-checked.
pub(super) enum RawPorts {
    Single(i64),
    Range(String),
}

impl<'de> Deserialize<'de> for RawPorts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PortsVisitor;
        impl Visitor<'_> for PortsVisitor {
            type Value = RawPorts;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port number or a \"lo-hi\" range string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawPorts, E> {
                Ok(RawPorts::Single(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawPorts, E> {
                Ok(RawPorts::Single(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawPorts, E> {
                Ok(RawPorts::Range(v.to_string()))
            }
        }
        deserializer.deserialize_any(PortsVisitor)
    }
}

/// Expands `ports` less `exclude` into the sorted port list, and the ports listed one by one.
/// Works on the entries' ranges, so a target costs what it lists, not 65,535 ports.
pub(super) fn validate_ports(
    ports: &Spanned<Vec<Spanned<RawPorts>>>,
    exclude: Option<&Spanned<Vec<Spanned<RawPorts>>>>,
) -> Result<(Vec<u16>, Vec<u16>), Invalid> {
    if ports.get_ref().is_empty() {
        return invalid(ports.span(), "ports must list at least one port");
    }
    let mut selected = PortSet::default();
    let mut listed = Vec::new();
    for entry in ports.get_ref() {
        let (lo, hi) = parse_port_entry(entry)?;
        if let Some(port) = selected.first_in(lo, hi) {
            return invalid(
                entry.span(),
                format!("port {port} is listed more than once"),
            );
        }
        selected.insert(lo, hi);
        if matches!(entry.get_ref(), RawPorts::Single(_)) {
            listed.push(lo);
        }
    }
    for entry in exclude.map_or(&[][..], |e| e.get_ref()) {
        let (lo, hi) = parse_port_entry(entry)?;
        if let Some(port) = selected.first_missing_in(lo, hi) {
            return invalid(
                entry.span(),
                format!("exclude: port {port} is not in ports (or excluded twice)"),
            );
        }
        selected.remove(lo, hi);
    }
    let kept = selected.ports();
    if kept.is_empty() {
        let span = exclude.map_or(ports.span(), Spanned::span);
        return invalid(span, "exclude removes every port");
    }
    listed.retain(|&p| selected.first_in(p, p).is_some());
    listed.sort_unstable();
    Ok((kept, listed))
}

/// A set of ports as disjoint inclusive ranges, keyed by their first port.
#[derive(Default)]
struct PortSet(BTreeMap<u16, u16>);

impl PortSet {
    /// The range holding `port`, if any.
    fn holding(&self, port: u16) -> Option<(u16, u16)> {
        let (&lo, &hi) = self.0.range(..=port).next_back()?;
        (hi >= port).then_some((lo, hi))
    }

    /// The lowest port of `lo..=hi` in the set.
    fn first_in(&self, lo: u16, hi: u16) -> Option<u16> {
        if self.holding(lo).is_some() {
            return Some(lo);
        }
        self.0.range(lo..=hi).next().map(|(&start, _)| start)
    }

    /// The lowest port of `lo..=hi` not in the set.
    fn first_missing_in(&self, lo: u16, hi: u16) -> Option<u16> {
        let mut port = lo;
        while let Some((_, end)) = self.holding(port) {
            if end >= hi {
                return None;
            }
            port = end + 1;
        }
        Some(port)
    }

    /// Adds `lo..=hi`, which must not overlap the set.
    fn insert(&mut self, lo: u16, hi: u16) {
        self.0.insert(lo, hi);
    }

    /// Removes `lo..=hi`, which must lie within the set.
    fn remove(&mut self, lo: u16, hi: u16) {
        let mut overlapping: Vec<(u16, u16)> = self
            .holding(lo)
            .into_iter()
            .chain(self.0.range(lo..=hi).map(|(&a, &b)| (a, b)))
            .collect();
        overlapping.dedup();
        for (start, end) in overlapping {
            self.0.remove(&start);
            if start < lo {
                self.0.insert(start, lo - 1);
            }
            if end > hi {
                self.0.insert(hi + 1, end);
            }
        }
    }

    /// Every port, in order.
    fn ports(&self) -> Vec<u16> {
        self.0.iter().flat_map(|(&lo, &hi)| lo..=hi).collect()
    }
}

fn parse_port_entry(entry: &Spanned<RawPorts>) -> Result<(u16, u16), Invalid> {
    let port = |n: i64| -> Result<u16, Invalid> {
        match u16::try_from(n) {
            Ok(p) if p >= 1 => Ok(p),
            _ => invalid(
                entry.span(),
                format!("port {n} out of range: expected 1 to 65535"),
            ),
        }
    };
    match entry.get_ref() {
        RawPorts::Single(n) => port(*n).map(|p| (p, p)),
        RawPorts::Range(text) => {
            let bad = || {
                invalid(
                    entry.span(),
                    format!("invalid port range {text:?}: expected \"lo-hi\", e.g. \"8000-8010\""),
                )
            };
            let Some((lo, hi)) = text.split_once('-') else {
                return bad();
            };
            let (Ok(lo), Ok(hi)) = (lo.trim().parse::<i64>(), hi.trim().parse::<i64>()) else {
                return bad();
            };
            let (lo, hi) = (port(lo)?, port(hi)?);
            if lo > hi {
                return invalid(
                    entry.span(),
                    format!("invalid port range {text:?}: the first port must not exceed the last"),
                );
            }
            Ok((lo, hi))
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    /// The obvious reading of `ports` less `exclude`: a flag per port, entries in file order.
    /// Returns the kept ports, or the first error's message.
    fn ports_by_flags(ports: &[(u16, u16)], exclude: &[(u16, u16)]) -> Result<Vec<u16>, String> {
        let mut selected = vec![false; 65536];
        for &(lo, hi) in ports {
            for port in lo..=hi {
                if std::mem::replace(&mut selected[usize::from(port)], true) {
                    return Err(format!("port {port} is listed more than once"));
                }
            }
        }
        for &(lo, hi) in exclude {
            for port in lo..=hi {
                if !std::mem::replace(&mut selected[usize::from(port)], false) {
                    return Err(format!(
                        "exclude: port {port} is not in ports (or excluded twice)"
                    ));
                }
            }
        }
        let kept: Vec<u16> = (1..=u16::MAX)
            .filter(|&p| selected[usize::from(p)])
            .collect();
        if kept.is_empty() {
            return Err("exclude removes every port".to_string());
        }
        Ok(kept)
    }

    fn entry_text(&(lo, hi): &(u16, u16)) -> String {
        if lo == hi {
            lo.to_string()
        } else {
            format!("\"{lo}-{hi}\"")
        }
    }

    proptest::proptest! {
        #[test]
        fn ranges_agree_with_a_flag_per_port(
            // Ports near each other, so that overlaps, adjacency and splits are common.
            ports in proptest::collection::vec((1u16..200, 0u16..40), 1..8),
            exclude in proptest::collection::vec((1u16..200, 0u16..40), 0..5),
        ) {
            let ranges = |entries: &[(u16, u16)]| -> Vec<(u16, u16)> {
                entries.iter().map(|&(lo, len)| (lo, lo + len)).collect()
            };
            let (ports, exclude) = (ranges(&ports), ranges(&exclude));
            let list = |entries: &[(u16, u16)]| {
                entries.iter().map(entry_text).collect::<Vec<_>>().join(", ")
            };
            let text = format!(
                "[[targets]]\nhost = \"h\"\nports = [{}]\nexclude = [{}]\n",
                list(&ports),
                list(&exclude)
            );
            let ours = Config::parse(&text, "t")
                .map(|c| c.targets[0].ports.clone())
                .map_err(|e| e.to_string());
            match (ours, ports_by_flags(&ports, &exclude)) {
                (Ok(ours), Ok(expected)) => proptest::prop_assert_eq!(ours, expected),
                (Err(ours), Err(expected)) => proptest::prop_assert!(
                    ours.ends_with(&expected),
                    "{} vs {}", ours, expected
                ),
                (ours, expected) => proptest::prop_assert!(false, "{:?} vs {:?}", ours, expected),
            }
        }
    }
}
