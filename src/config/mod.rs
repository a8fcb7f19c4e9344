//! Configuration: a TOML file parsed strictly into raw structs (`raw`), then validated into
//! [`Config`], the type the rest of the program uses.
//!
//! Parsing and validation are separate steps so that every rule lives in one place and every
//! error can point at the file, line and column it is about. Defaults live in one place,
//! [`Defaults::default`].
//!
//! - `raw`: the serde structs (`deny_unknown_fields`) and their validation;
//! - [`ports`]: `ports` and `exclude` as range algebra;
//! - [`duration`]: Prometheus-style durations;
//! - [`allow`]: the `/probe` allow list (networks and host name patterns);
//! - [`host`]: what a host may be;
//! - [`address`]: which of a host's addresses are probed, and from which source address;
//! - [`service`]: the service check keys (`service`, the `tls` table, `query`).

pub mod address;
pub mod allow;
pub mod duration;
pub mod host;
pub mod ports;
mod raw;
pub mod service;

use std::net::IpAddr;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use address::IpProtocol;
pub use allow::AllowList;
pub use service::{ServiceCheck, ServiceDefaults, ServiceExpect};

use crate::domain::{Attempts, Close, Expect, Protocol, Timing};
use raw::RawConfig;

/// The config used when no `--config.file` is given: localhost on the common server ports.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

/// The values a target gets for every field it leaves out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Defaults {
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub timing: Timing,
    pub expect: Expect,
    pub close: Close,
    /// Which addresses of a name are probed (for `/probe` too).
    pub ip_protocol: IpProtocol,
    /// The transport probed: TCP unless set.
    pub protocol: Protocol,
    /// The local address probes bind to before they connect (for `/probe` too).
    pub source_address: Option<IpAddr>,
    /// `service`, `query` and the `tls` table; none of them by default: connect only.
    pub service: ServiceDefaults,
}

/// The adaptive lower bound of an attempt's timeout, as nmap's `--min-rtt-timeout`: below it a
/// busy prober's own scheduling delay would read as loss.
pub const DEFAULT_MIN_TIMEOUT: Duration = Duration::from_millis(100);

/// Adaptive retries on an address that answers: enough that at 36% of attempts lost (20% of
/// packets each way) an answering port reads filtered less than once in a million probes
/// (the drop rate asks for 14 attempts there; this leaves room for a worse path).
pub const DEFAULT_MAX_RETRIES: u32 = 15;

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(2),
            retries: 1,
            timing: Timing::Adaptive {
                min_timeout: DEFAULT_MIN_TIMEOUT,
                max_retries: DEFAULT_MAX_RETRIES,
            },
            expect: Expect::Any,
            close: Close::Reset,
            ip_protocol: IpProtocol::Both,
            protocol: Protocol::Tcp,
            source_address: None,
            service: ServiceDefaults::default(),
        }
    }
}

/// A validated configuration: what the scheduler probes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub targets: Vec<Target>,
    /// Timeout and retries for `/probe` come from here.
    pub defaults: Defaults,
    /// Who `/probe` may connect to; empty: `/probe` is off.
    pub probe_allow: AllowList,
    /// The TOML text this was parsed from, shown at `/config`.
    pub source: String,
}

/// One host and the ports to probe on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Unique name, the `target` label.
    pub name: String,
    /// DNS name or IP literal (IPv6 without brackets), the `host` label.
    pub host: String,
    /// Every port to probe: sorted, without duplicates, `exclude` already removed.
    pub ports: Vec<u16>,
    /// The ports listed one by one (not through a range): their series always exist, while a
    /// range port has series only when it is open or breaks the expectation. Sorted.
    pub listed: Vec<u16>,
    pub expect: Expect,
    /// TCP or UDP: which probe, and the `protocol` label.
    pub protocol: Protocol,
    /// Extra labels for every series of this target, sorted by name.
    pub labels: Vec<(String, String)>,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub timing: Timing,
    pub close: Close,
    /// Which addresses of the host are probed, as written; see [`Target::family`].
    pub ip_protocol: IpProtocol,
    /// The local address probes bind to before they connect; `None`: the kernel's choice.
    pub source_address: Option<IpAddr>,
    /// What must speak on the open ports, and how to tell; `None`: connect only.
    pub service: Option<Arc<ServiceCheck>>,
}

impl Target {
    /// How each of this target's addresses is probed.
    pub fn attempts(&self) -> Attempts {
        Attempts {
            timeout: self.timeout,
            retries: self.retries,
            timing: self.timing,
            close: self.close,
            source: self.source_address,
        }
    }

    /// The address families probed: `ip_protocol`, narrowed to the source address's family.
    pub fn family(&self) -> IpProtocol {
        address::family(self.ip_protocol, self.source_address)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config file: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}:{line}:{column}: {message}")]
    Invalid {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },
}

impl Defaults {
    /// How `/probe` probes each address.
    pub fn attempts(&self) -> Attempts {
        Attempts {
            timeout: self.timeout,
            retries: self.retries,
            timing: self.timing,
            close: self.close,
            source: self.source_address,
        }
    }

    /// The address families `/probe` probes: `ip_protocol`, narrowed to the source address's.
    pub fn family(&self) -> IpProtocol {
        address::family(self.ip_protocol, self.source_address)
    }
}

impl Config {
    /// The one loader of start-up, `--config.check` and every reload: the file at `path`, or
    /// the embedded default when there is none.
    ///
    /// ```
    /// use port_exporter::config::Config;
    /// let config = Config::load(None).unwrap();
    /// assert_eq!(config.targets[0].host, "localhost");
    /// ```
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(path) => Config::from_file(path),
            None => Ok(Config::embedded_default()),
        }
    }

    /// Reads and validates the file at `path`.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse_in(&text, &path.display().to_string(), path.parent())
    }

    /// The embedded default configuration.
    pub fn embedded_default() -> Config {
        Config::parse(EMBEDDED_DEFAULT, "<embedded default>")
            .expect("the embedded default config is valid (checked by a unit test)")
    }

    /// Parses and validates `text`; `origin` names it in errors (usually the file path).
    ///
    /// ```
    /// use port_exporter::config::Config;
    /// let text = "[[targets]]\nhost = \"db\"\nports = [5432, \"8000-8002\"]\n";
    /// let config = Config::parse(text, "inline").unwrap();
    /// assert_eq!(config.targets[0].ports, [5432, 8000, 8001, 8002]);
    ///
    /// let error = Config::parse("[[targets]]\nhost = \"db\"\nports = [0]\n", "inline");
    /// assert_eq!(
    ///     error.unwrap_err().to_string(),
    ///     "inline:3:10: port 0 out of range: expected 1 to 65535"
    /// );
    /// ```
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Config::parse_in(text, origin, None)
    }

    /// [`Config::parse`], with relative paths in it (`tls.ca_file`) taken relative to `base`.
    fn parse_in(text: &str, origin: &str, base: Option<&Path>) -> Result<Config, ConfigError> {
        let locate = |span: Option<Range<usize>>, message: String| {
            let (line, column) = line_column(text, span.map_or(0, |s| s.start));
            ConfigError::Invalid {
                origin: origin.to_string(),
                line,
                column,
                message,
            }
        };
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| locate(e.span(), e.message().trim().to_string()))?;
        let mut config = raw
            .validate(base)
            .map_err(|Invalid { span, message }| locate(Some(span), message))?;
        config.source = text.to_string();
        Ok(config)
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// A validation failure with the span of the value it is about.
struct Invalid {
    span: Range<usize>,
    message: String,
}

fn invalid<T>(span: Range<usize>, message: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid {
        span,
        message: message.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid_and_probes_common_ports_on_localhost() {
        let config = Config::embedded_default();
        assert_eq!(config.targets.len(), 1);
        assert_eq!(config.targets[0].host, "localhost");
        assert_eq!(config.targets[0].ports, [21, 22, 25, 80, 443, 3306, 3389]);
    }

    #[test]
    fn defaults_fill_missing_fields() {
        let config = Config::parse("[[targets]]\nhost = \"h\"\nports = [1]\n", "t").unwrap();
        let t = &config.targets[0];
        let d = Defaults::default();
        assert_eq!(t.name, "h");
        assert_eq!(
            (t.interval, t.timeout, t.retries, t.expect),
            (d.interval, d.timeout, d.retries, d.expect)
        );
    }

    #[test]
    fn protocol_is_tcp_unless_set_and_udp_targets_take_open_filtered_but_no_service_check() {
        let text = "[defaults]\nprotocol = \"udp\"\nexpect = \"open|filtered\"\nservice = \"auto\"\n\
                    [[targets]]\nhost = \"a\"\nports = [161]\n\
                    [[targets]]\nhost = \"b\"\nports = [22]\nprotocol = \"tcp\"\nexpect = \"open\"\n";
        let config = Config::parse(text, "t").unwrap();
        let (udp, tcp) = (&config.targets[0], &config.targets[1]);
        assert_eq!(
            (udp.protocol, udp.expect),
            (Protocol::Udp, Expect::OpenFiltered)
        );
        // [defaults]' service check is for the TCP targets.
        assert!(udp.service.is_none());
        assert_eq!(tcp.protocol, Protocol::Tcp);
        assert!(tcp.service.is_some());
        let plain = Config::parse("[[targets]]\nhost = \"h\"\nports = [1]\n", "t").unwrap();
        assert_eq!(plain.targets[0].protocol, Protocol::Tcp);
    }

    #[test]
    fn target_fields_override_defaults_and_ranges_expand() {
        let text = r#"
            [defaults]
            interval = "1m"
            expect = "closed"
            [[targets]]
            name = "web"
            host = "[::1]"
            ports = ["8000-8002", 443, 80]
            expect = "not_open"
            timeout = "500ms"
            retries = 3
            labels = { team = "web", env = "prod" }
        "#;
        let t = &Config::parse(text, "t").unwrap().targets[0];
        assert_eq!(t.host, "::1");
        assert_eq!(t.ports, [80, 443, 8000, 8001, 8002]);
        assert_eq!(t.listed, [80, 443]);
        assert_eq!(t.expect, Expect::NotOpen);
        assert_eq!(t.interval, Duration::from_secs(60));
        assert_eq!(t.timeout, Duration::from_millis(500));
        assert_eq!(t.retries, 3);
        assert_eq!(
            t.labels,
            [("env".into(), "prod".into()), ("team".into(), "web".into())]
        );
    }

    #[test]
    fn timing_is_inherited_key_by_key_and_fixed_drops_the_bounds() {
        let text = r#"
            [defaults]
            min_timeout = "250ms"
            [[targets]]
            name = "inherits"
            host = "h"
            ports = [1]
            [[targets]]
            name = "tight"
            host = "h"
            ports = [1]
            timeout = "200ms"
            max_retries = 4
            [[targets]]
            name = "fixed"
            host = "h"
            ports = [1]
            timing = "fixed"
        "#;
        let config = Config::parse(text, "t").unwrap();
        let timing: Vec<Timing> = config.targets.iter().map(|t| t.timing).collect();
        assert_eq!(
            timing,
            [
                Timing::Adaptive {
                    min_timeout: Duration::from_millis(250),
                    max_retries: DEFAULT_MAX_RETRIES
                },
                // An inherited lower bound follows a lower timeout down.
                Timing::Adaptive {
                    min_timeout: Duration::from_millis(200),
                    max_retries: 4
                },
                Timing::Fixed,
            ]
        );
        assert_eq!(
            Defaults::default().timing,
            Timing::Adaptive {
                min_timeout: DEFAULT_MIN_TIMEOUT,
                max_retries: DEFAULT_MAX_RETRIES
            }
        );
    }

    #[test]
    fn exclude_removes_ports_and_ranges() {
        let text = r#"
            [[targets]]
            host = "h"
            ports = ["1-65535"]
            exclude = [22, "8000-8009", 443]
            [[targets]]
            name = "listed"
            host = "h"
            ports = [22, 80, "100-102"]
            exclude = [80, 101]
        "#;
        let config = Config::parse(text, "t").unwrap();
        let all = &config.targets[0];
        assert_eq!(all.ports.len(), 65535 - 12);
        assert!(!all.ports.contains(&22) && !all.ports.contains(&8005));
        assert!(all.ports.contains(&21) && all.ports.contains(&8010));
        assert!(all.listed.is_empty());
        let listed = &config.targets[1];
        assert_eq!(listed.ports, [22, 100, 102]);
        assert_eq!(listed.listed, [22]);
    }

    #[test]
    fn address_selection_defaults_to_both_families_and_no_source() {
        let config = Config::parse("[[targets]]\nhost = \"h\"\nports = [1]\n", "t").unwrap();
        let t = &config.targets[0];
        assert_eq!((t.ip_protocol, t.source_address), (IpProtocol::Both, None));
        assert_eq!(t.family(), IpProtocol::Both);
        assert_eq!(t.attempts().source, None);
        assert_eq!(config.defaults.family(), IpProtocol::Both);
    }

    #[test]
    fn address_selection_comes_from_defaults_or_the_target_and_a_source_narrows_both() {
        let text = r#"
            [defaults]
            source_address = "198.18.0.2"
            [[targets]]
            name = "from-defaults"
            host = "h"
            ports = [1]
            [[targets]]
            name = "own-source"
            host = "[::1]"
            ports = [1]
            source_address = "[fd00::2]"
            [[targets]]
            name = "v4-only"
            host = "h"
            ports = [1]
            ip_protocol = "ipv4"
        "#;
        let config = Config::parse(text, "t").unwrap();
        let v4: IpAddr = "198.18.0.2".parse().unwrap();
        let v6: IpAddr = "fd00::2".parse().unwrap();
        assert_eq!(config.defaults.source_address, Some(v4));
        assert_eq!(config.defaults.attempts().source, Some(v4));
        // "both" with an IPv4 source probes IPv4 addresses only, for /probe too.
        assert_eq!(config.defaults.family(), IpProtocol::Ipv4);
        let [defaults, own, v4_only] = &config.targets[..] else {
            panic!("three targets")
        };
        assert_eq!(defaults.ip_protocol, IpProtocol::Both);
        assert_eq!(defaults.family(), IpProtocol::Ipv4);
        assert_eq!(defaults.attempts().source, Some(v4));
        assert_eq!(own.family(), IpProtocol::Ipv6);
        assert_eq!(own.attempts().source, Some(v6));
        assert_eq!(v4_only.ip_protocol, IpProtocol::Ipv4);
        assert_eq!(v4_only.attempts().source, Some(v4));
        let ipv6 = Config::parse(
            "[defaults]\nip_protocol = \"ipv6\"\n[[targets]]\nhost = \"::1\"\nports = [1]\n",
            "t",
        )
        .unwrap();
        assert_eq!(ipv6.targets[0].family(), IpProtocol::Ipv6);
    }

    #[test]
    fn address_selection_errors_name_the_conflict_where_the_target_sets_it() {
        let error = |text: &str| Config::parse(text, "t").unwrap_err().to_string();
        let target = "[[targets]]\nhost = \"h\"\nports = [1]\n";
        let cases = [
            (
                format!("{target}ip_protocol = \"v6\"\n"),
                "t:4:15: unknown variant `v6`, expected one of `both`, `ipv4`, `ipv6`",
            ),
            (
                format!("{target}source_address = \"198.18.0\"\n"),
                "t:4:18: invalid source_address \"198.18.0\": expected an IPv4 or an IPv6 address",
            ),
            (
                format!("{target}source_address = \"ff02::1\"\n"),
                "t:4:18: invalid source_address ff02::1: expected an address of this machine, not an unspecified or multicast one",
            ),
            (
                format!("{target}ip_protocol = \"ipv4\"\nsource_address = \"::1\"\n"),
                "t:5:18: source_address ::1 is an IPv6 address but ip_protocol = \"ipv4\"",
            ),
            (
                format!("[defaults]\nsource_address = \"::1\"\n{target}ip_protocol = \"ipv4\"\n"),
                "t:6:15: source_address ::1 of [defaults] is an IPv6 address but ip_protocol = \"ipv4\"",
            ),
            (
                "[[targets]]\nhost = \"[::1]\"\nports = [1]\nip_protocol = \"ipv4\"\n".into(),
                "t:2:8: host ::1 is an IPv6 address but ip_protocol = \"ipv4\"",
            ),
            (
                "[[targets]]\nhost = \"127.0.0.1\"\nports = [1]\nsource_address = \"::1\"\n".into(),
                "t:2:8: host 127.0.0.1 is an IPv4 address but source_address ::1 is an IPv6 address",
            ),
        ];
        for (text, message) in cases {
            assert_eq!(error(&text), message, "{text}");
        }
        // A target's own source of the family its ip_protocol names overrides the default's.
        let overridden = "[defaults]\nsource_address = \"::1\"\n[[targets]]\nhost = \"h\"\nports = [1]\nip_protocol = \"ipv4\"\nsource_address = \"127.0.0.2\"\n";
        assert!(Config::parse(overridden, "t").is_ok());
    }

    #[test]
    fn line_and_column_count_characters() {
        assert_eq!(line_column("ab\ncdé\nx", 0), (1, 1));
        assert_eq!(line_column("ab\ncdé\nx", 3), (2, 1));
        assert_eq!(line_column("ab\ncdé\nx", 8), (3, 1));
        assert_eq!(line_column("ab\ncdé\nx", 7), (2, 4));
    }
}
