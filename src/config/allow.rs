//! The `[probe] allow` list: who `/probe` may connect to, as networks and host name patterns.
//!
//! Networks are [`ipnet`] values. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is the IPv4
//! address it maps, both in an entry and in an address checked against the list, so
//! `::ffff:192.0.2.10` allows exactly 192.0.2.10. Name patterns are matched label by label in
//! linear time (see [`pattern_matches`]); they never match an IP literal.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};
use toml::Spanned;

use super::{Invalid, invalid};

/// The `[probe] allow` list: address ranges and host name patterns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList {
    /// Networks, IPv4-mapped ones as IPv4.
    networks: Vec<IpNet>,
    /// Lower-case host name patterns; `*` matches any run of characters within one label.
    names: Vec<String>,
}

impl AllowList {
    /// Whether `/probe` is enabled at all.
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty() && self.names.is_empty()
    }

    /// Whether `ip` lies in an allowed network.
    pub fn allows_address(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.networks.iter().any(|network| network.contains(&ip))
    }

    /// Whether the host name matches an allowed pattern (case-insensitively). An IP literal is
    /// no name: only [`allows_address`](Self::allows_address) can allow it.
    pub fn allows_name(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let literal = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(&name);
        if literal.parse::<IpAddr>().is_ok() {
            return false;
        }
        self.names
            .iter()
            .any(|pattern| pattern_matches(pattern, &name))
    }
}

/// The network `ip/prefix`, an IPv4-mapped one (`::ffff:0:0/96` or longer) as IPv4.
fn canonical_network(ip: IpAddr, prefix: u8) -> IpNet {
    let network = IpNet::new(ip, prefix)
        .expect("the prefix length was checked against the address family")
        .trunc();
    match network {
        IpNet::V6(v6) if prefix >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => IpNet::V4(
                Ipv4Net::new(v4, prefix - 96).expect("a mapped prefix of 96..=128 is 0..=32"),
            ),
            None => network,
        },
        other => other,
    }
}

/// Whether `name` matches `pattern`, where `*` stands for any run of characters but a dot.
///
/// Linear in the lengths: a pattern and a name match label by label, and within a label the
/// parts between stars are found left to right, each at its first place after the previous
/// one (taking the first place never loses a match a later place would give, since a star
/// can absorb whatever lies between).
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    let (mut patterns, mut labels) = (pattern.split('.'), name.split('.'));
    loop {
        match (patterns.next(), labels.next()) {
            (None, None) => return true,
            (Some(pattern), Some(label)) if label_matches(pattern, label) => {}
            _ => return false,
        }
    }
}

fn label_matches(pattern: &str, label: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = label.strip_prefix(first) else {
        return false;
    };
    let mut middle: Vec<&str> = parts.collect();
    let Some(last) = middle.pop() else {
        // No star: the whole label is the literal.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

pub(super) fn validate_allow_list(entries: &[Spanned<String>]) -> Result<AllowList, Invalid> {
    let mut allow = AllowList::default();
    for entry in entries {
        let text = entry.get_ref().trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        if let Ok(ip) = address.parse::<IpAddr>() {
            let width = if ip.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix.map(str::parse::<u8>) {
                None => width,
                Some(Ok(p)) if p <= width => p,
                Some(_) => {
                    return invalid(
                        entry.span(),
                        format!("invalid network {text:?}: the prefix length must be 0 to {width}"),
                    );
                }
            };
            allow.networks.push(canonical_network(ip, prefix));
            continue;
        }
        let valid_pattern = prefix.is_none()
            && !text.is_empty()
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '*'));
        if !valid_pattern {
            return invalid(
                entry.span(),
                format!(
                    "invalid allow entry {text:?}: expected an address, a network such as \"10.0.0.0/8\", or a host name pattern such as \"*.example.org\""
                ),
            );
        }
        allow.names.push(text.to_ascii_lowercase());
    }
    Ok(allow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn the_probe_allow_list_matches_networks_and_name_patterns() {
        let text = r#"
            [probe]
            allow = ["127.0.0.0/8", "::1", "10.1.2.3", "*.example.org", "db-*.internal", "exact.host"]
        "#;
        let allow = Config::parse(text, "t").unwrap().probe_allow;
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for yes in [
            "127.0.0.1",
            "127.255.0.9",
            "::1",
            "10.1.2.3",
            "::ffff:127.0.0.1",
        ] {
            assert!(allow.allows_address(ip(yes)), "{yes}");
        }
        for no in [
            "128.0.0.1",
            "10.1.2.4",
            "::2",
            "169.254.169.254",
            "::ffff:10.1.2.4",
        ] {
            assert!(!allow.allows_address(ip(no)), "{no}");
        }
        for yes in [
            "www.example.org",
            "WWW.Example.org.",
            "db-1.internal",
            "exact.host",
        ] {
            assert!(allow.allows_name(yes), "{yes}");
        }
        for no in [
            "example.org",
            "a.b.example.org",
            "evil.org",
            "db-1.internal.evil",
            "exact.host.evil",
            "xexact.host",
        ] {
            assert!(!allow.allows_name(no), "{no}");
        }
        assert!(Config::parse("", "t").unwrap().probe_allow.is_empty());
        let all = Config::parse("[probe]\nallow = [\"0.0.0.0/0\"]", "t")
            .unwrap()
            .probe_allow;
        assert!(all.allows_address(ip("8.8.8.8")) && !all.allows_address(ip("::1")));
    }

    #[test]
    fn a_mapped_entry_allows_exactly_the_address_it_maps() {
        // Regression: "::ffff:192.0.2.10" was stored as IPv4 with prefix 128, and the prefix
        // arithmetic wrapped so that it allowed every IPv4 address.
        let allow = Config::parse("[probe]\nallow = [\"::ffff:192.0.2.10\"]", "t")
            .unwrap()
            .probe_allow;
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(allow.allows_address(ip("192.0.2.10")));
        assert!(allow.allows_address(ip("::ffff:192.0.2.10")));
        for no in ["127.0.0.1", "192.0.2.11", "8.8.8.8", "::1"] {
            assert!(!allow.allows_address(ip(no)), "{no}");
        }
        let net = Config::parse("[probe]\nallow = [\"::ffff:10.0.0.0/104\"]", "t")
            .unwrap()
            .probe_allow;
        assert!(net.allows_address(ip("10.200.0.1")) && !net.allows_address(ip("11.0.0.1")));
    }

    #[test]
    fn name_patterns_never_match_ip_literals() {
        let allow = Config::parse("[probe]\nallow = [\"*\", \"*.*.*.*\"]", "t")
            .unwrap()
            .probe_allow;
        for literal in ["::1", "[::1]", "127.0.0.1", "::ffff:127.0.0.1"] {
            assert!(!allow.allows_name(literal), "{literal}");
        }
        assert!(allow.allows_name("localhost"));
    }

    #[test]
    fn a_pattern_made_to_backtrack_is_fast() {
        let pattern = format!("{}b", "*a".repeat(30));
        let name = "a".repeat(63);
        let started = std::time::Instant::now();
        for _ in 0..1000 {
            assert!(!pattern_matches(&pattern, &name));
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    /// The obvious backtracking reading of a pattern, for small inputs only.
    fn backtracking(pattern: &[u8], name: &[u8]) -> bool {
        match pattern.split_first() {
            None => name.is_empty(),
            Some((b'*', tail)) => (0..=name.len())
                .take_while(|&i| !name[..i].contains(&b'.'))
                .any(|i| backtracking(tail, &name[i..])),
            Some((&c, tail)) => name.first() == Some(&c) && backtracking(tail, &name[1..]),
        }
    }

    proptest::proptest! {
        #[test]
        fn linear_matching_agrees_with_backtracking(
            pattern in "[ab.*]{0,8}",
            name in "[ab.]{0,10}",
        ) {
            proptest::prop_assert_eq!(
                pattern_matches(&pattern, &name),
                backtracking(pattern.as_bytes(), name.as_bytes()),
                "{:?} against {:?}", pattern, name
            );
        }
    }
}
