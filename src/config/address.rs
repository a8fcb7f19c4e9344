//! Address selection, as blackbox_exporter offers it: which of a host's addresses are probed
//! (`ip_protocol`), and which local address the probes leave from (`source_address`).
//!
//! A source address has one family, so it narrows `ip_protocol = "both"` to that family;
//! [`family`] is that rule, and [`IpProtocol::admits`] the one filter the scheduler and `/probe`
//! apply to what a name resolves to.

use std::fmt;
use std::net::IpAddr;

use serde::Deserialize;
use toml::Spanned;

use super::{Invalid, invalid};

/// The address families a target is probed on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpProtocol {
    /// Every address the host resolves to, A and AAAA.
    #[default]
    Both,
    Ipv4,
    Ipv6,
}

impl IpProtocol {
    /// The family of `ip`.
    pub fn of(ip: IpAddr) -> IpProtocol {
        match ip {
            IpAddr::V4(_) => IpProtocol::Ipv4,
            IpAddr::V6(_) => IpProtocol::Ipv6,
        }
    }

    /// Whether an address of `ip`'s family is probed.
    ///
    /// ```
    /// use port_exporter::config::IpProtocol;
    /// assert!(IpProtocol::Ipv4.admits("127.0.0.1".parse().unwrap()));
    /// assert!(!IpProtocol::Ipv4.admits("::1".parse().unwrap()));
    /// assert!(IpProtocol::Both.admits("::1".parse().unwrap()));
    /// ```
    pub fn admits(self, ip: IpAddr) -> bool {
        self == IpProtocol::Both || self == IpProtocol::of(ip)
    }

    /// The config word: `both`, `ipv4`, `ipv6`.
    pub fn as_str(self) -> &'static str {
        match self {
            IpProtocol::Both => "both",
            IpProtocol::Ipv4 => "ipv4",
            IpProtocol::Ipv6 => "ipv6",
        }
    }
}

/// The family's name in prose: `IPv4`, `IPv6`, or `IPv4 or IPv6`.
impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpProtocol::Both => "IPv4 or IPv6",
            IpProtocol::Ipv4 => "IPv4",
            IpProtocol::Ipv6 => "IPv6",
        })
    }
}

/// The families actually probed: a source address's own family, else `ip_protocol`. (The
/// config makes sure the two agree.)
pub fn family(ip_protocol: IpProtocol, source: Option<IpAddr>) -> IpProtocol {
    source.map_or(ip_protocol, IpProtocol::of)
}

/// Why `ip` cannot be probed under `ip_protocol` from `source`, as the end of a sentence that
/// names `ip` ("... is an IPv6 address but ip_protocol = \"ipv4\""); `None` when it can.
pub fn conflict(ip: IpAddr, ip_protocol: IpProtocol, source: Option<IpAddr>) -> Option<String> {
    let own = IpProtocol::of(ip);
    if !ip_protocol.admits(ip) {
        return Some(format!(
            "is an {own} address but ip_protocol = {:?}",
            ip_protocol.as_str()
        ));
    }
    match source {
        Some(source) if IpProtocol::of(source) != own => Some(format!(
            "is an {own} address but source_address {source} is an {} address",
            IpProtocol::of(source)
        )),
        _ => None,
    }
}

/// A `source_address`: an IP literal (an IPv6 one with or without brackets).
pub(super) fn validate_source_address(value: &Spanned<String>) -> Result<IpAddr, Invalid> {
    let text = value.get_ref().as_str();
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    match bare.parse::<IpAddr>() {
        Ok(ip) if !ip.is_unspecified() && !ip.is_multicast() => Ok(ip),
        Ok(ip) => invalid(
            value.span(),
            format!(
                "invalid source_address {ip}: expected an address of this machine, not an unspecified or multicast one"
            ),
        ),
        Err(_) => invalid(
            value.span(),
            format!("invalid source_address {text:?}: expected an IPv4 or an IPv6 address"),
        ),
    }
}

/// Checks that a source address agrees with `ip_protocol`; `span` is where the error points,
/// `whose` says where the source comes from when that is elsewhere (" of [defaults]").
pub(super) fn check_source_family(
    source: Option<IpAddr>,
    whose: &str,
    ip_protocol: IpProtocol,
    span: std::ops::Range<usize>,
) -> Result<(), Invalid> {
    match source {
        Some(ip) if !ip_protocol.admits(ip) => invalid(
            span,
            format!(
                "source_address {ip}{whose} is an {} address but ip_protocol = {:?}",
                IpProtocol::of(ip),
                ip_protocol.as_str()
            ),
        ),
        _ => Ok(()),
    }
}
