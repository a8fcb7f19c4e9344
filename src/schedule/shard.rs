//! Sharding: each of n replicas probes a disjoint part of the same config, chosen by a stable
//! hash of (target name, port), so n replicas cover the inventory with no overlap and no gap.

use std::fmt;
use std::str::FromStr;

use crate::config::Config;

/// This replica's part: `index` of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    count: u32,
}

/// Why a shard could not be set up.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("shard index {index} out of range: expected 0 to {} for {count} shards", count - 1)]
    IndexOutOfRange { index: u32, count: u32 },
    #[error("shard count must be at least 1")]
    NoShards,
    #[error(
        "invalid shard index {0:?}: expected a number, or \"hostname\" for the trailing number of the host name (a StatefulSet pod's ordinal)"
    )]
    BadIndex(String),
    #[error("host name {0:?} does not end in -<number>")]
    NoOrdinal(String),
}

impl Shard {
    pub fn new(index: u32, count: u32) -> Result<Shard, ShardError> {
        match count {
            0 => Err(ShardError::NoShards),
            _ if index >= count => Err(ShardError::IndexOutOfRange { index, count }),
            _ => Ok(Shard { index, count }),
        }
    }

    /// Whether this shard probes `port` of the target named `target`.
    pub fn owns(&self, target: &str, port: u16) -> bool {
        // FNV-1a: stable across builds and platforms, unlike std's hasher.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in target.bytes().chain([0]).chain(port.to_be_bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        hash % u64::from(self.count) == u64::from(self.index)
    }

    /// `config` with only this shard's ports; targets left without ports are dropped.
    pub fn apply(&self, mut config: Config) -> Config {
        if self.count == 1 {
            return config;
        }
        for target in &mut config.targets {
            let name = target.name.clone();
            target.ports.retain(|&p| self.owns(&name, p));
            target.listed.retain(|&p| self.owns(&name, p));
        }
        config.targets.retain(|t| !t.ports.is_empty());
        config
    }
}

/// The `--shard.index` value: a number, or `hostname` for the host name's trailing ordinal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardIndex {
    Number(u32),
    FromHostname,
}

impl FromStr for ShardIndex {
    type Err = ShardError;

    fn from_str(text: &str) -> Result<ShardIndex, ShardError> {
        match text {
            "hostname" => Ok(ShardIndex::FromHostname),
            _ => text
                .parse()
                .map(ShardIndex::Number)
                .map_err(|_| ShardError::BadIndex(text.to_string())),
        }
    }
}

impl fmt::Display for ShardIndex {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            ShardIndex::Number(n) => write!(f, "{n}"),
            ShardIndex::FromHostname => f.write_str("hostname"),
        }
    }
}

impl ShardIndex {
    /// The index, reading `hostname` (e.g. `port-exporter-2` gives 2) when asked to.
    pub fn resolve(&self, hostname: &str) -> Result<u32, ShardError> {
        match self {
            ShardIndex::Number(n) => Ok(*n),
            ShardIndex::FromHostname => hostname
                .rsplit_once('-')
                .and_then(|(_, ordinal)| ordinal.parse().ok())
                .ok_or_else(|| ShardError::NoOrdinal(hostname.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn inventory() -> Config {
        Config::parse(
            r#"
            [[targets]]
            name = "web"
            host = "127.0.0.1"
            ports = [80, 443, "8000-8099"]
            [[targets]]
            name = "all"
            host = "::1"
            ports = ["1-65535"]
            [[targets]]
            name = "one"
            host = "localhost"
            ports = [22]
            "#,
            "test",
        )
        .unwrap()
    }

    fn pairs(config: &Config) -> BTreeSet<(String, u16)> {
        config
            .targets
            .iter()
            .flat_map(|t| t.ports.iter().map(|&p| (t.name.clone(), p)))
            .collect()
    }

    #[test]
    fn shards_are_disjoint_and_cover_everything() {
        let full = pairs(&inventory());
        for count in [1, 2, 3, 7, 16] {
            let mut union = BTreeSet::new();
            let mut total = 0;
            for index in 0..count {
                let part = pairs(&Shard::new(index, count).unwrap().apply(inventory()));
                total += part.len();
                union.extend(part);
            }
            assert_eq!(union, full, "{count} shards leave a gap");
            assert_eq!(total, full.len(), "{count} shards overlap");
        }
    }

    #[test]
    fn shards_are_balanced_and_stable() {
        let full = pairs(&inventory()).len();
        for index in 0..4 {
            let part = pairs(&Shard::new(index, 4).unwrap().apply(inventory())).len();
            assert!(
                part > full / 4 * 9 / 10 && part < full / 4 * 11 / 10,
                "{part} of {full}"
            );
        }
        // Pinned values: the hash must not change between builds, or replicas would disagree
        // during a rolling upgrade.
        let shard = Shard::new(0, 3).unwrap();
        let owned: Vec<u16> = (1..=12).filter(|&p| shard.owns("web", p)).collect();
        assert_eq!(owned, [5, 6, 9, 10]);
    }

    #[test]
    fn listed_ports_follow_their_shard() {
        let shard = Shard::new(1, 2).unwrap();
        let config = shard.apply(inventory());
        for target in &config.targets {
            assert!(target.listed.iter().all(|p| target.ports.contains(p)));
        }
    }

    #[test]
    fn bad_shards_and_indexes() {
        assert_eq!(Shard::new(0, 0), Err(ShardError::NoShards));
        assert_eq!(
            Shard::new(3, 3),
            Err(ShardError::IndexOutOfRange { index: 3, count: 3 })
        );
        assert_eq!("hostname".parse(), Ok(ShardIndex::FromHostname));
        assert_eq!("2".parse(), Ok(ShardIndex::Number(2)));
        assert!("x".parse::<ShardIndex>().is_err());
        assert_eq!(ShardIndex::FromHostname.resolve("port-exporter-12"), Ok(12));
        assert!(ShardIndex::FromHostname.resolve("exporter").is_err());
    }
}
