//! The probes for servers that wait for the client, and the order they are tried in.
//!
//! The port number only chooses the order (443 tries TLS first, 5432 the SSLRequest, 80 the
//! HTTP request): the answer always comes from the bytes. A server that speaks first answers
//! any probe with its greeting, so trying another probe first costs it nothing.

use std::net::SocketAddr;

use crate::config::ServiceExpect;
use crate::domain::Service;

/// One exchange of the identification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    /// Send nothing; wait for the server to speak first.
    Greeting,
    /// A TLS ClientHello: the handshake.
    Tls,
    /// `GET / HTTP/1.0` with a `Host`.
    Http,
    /// Redis' inline `PING`.
    Redis,
    /// PostgreSQL's 8-byte SSLRequest, answered `S` or `N`.
    Postgres,
}

/// What every port that no hint names tries, in this order. `PING` comes first of the probes
/// because every server known here answers it at once: Redis with `+PONG`, an HTTP server
/// with a 400, TLS and PostgreSQL servers by closing; only then the handshake (which a Redis
/// server would meet with silence).
const DEFAULT_ORDER: [ProbeKind; 5] = [
    ProbeKind::Greeting,
    ProbeKind::Redis,
    ProbeKind::Tls,
    ProbeKind::Http,
    ProbeKind::Postgres,
];

/// Ports where TLS usually speaks from the first byte.
const TLS_PORTS: &[u16] = &[
    261, 443, 465, 563, 585, 636, 853, 989, 990, 992, 993, 994, 995, 2376, 3269, 4443, 5061, 5223,
    5986, 6443, 6697, 8443, 8883, 9443, 10443,
];

/// TLS ports whose service inside speaks first (SMTPS, IMAPS, POP3S, FTPS, ...).
const TLS_GREETING_PORTS: &[u16] = &[465, 563, 585, 989, 990, 992, 993, 994, 995, 5223, 6697];

const HTTP_PORTS: &[u16] = &[
    80, 81, 591, 3000, 5000, 8000, 8008, 8080, 8081, 8088, 8888, 9000, 9090,
];

/// Ports whose service speaks first: its greeting is given longer.
const GREETING_PORTS: &[u16] = &[21, 22, 25, 110, 143, 587, 2222, 3306];

const REDIS_PORTS: &[u16] = &[6379];

const POSTGRES_PORTS: &[u16] = &[5432, 5433, 6432];

/// PostgreSQL's SSLRequest: length 8, then the code 1234/5679.
pub const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// Redis' inline PING.
pub const PING: &[u8] = b"PING\r\n";

/// The probe that shows `service` soonest.
fn probe_for(service: Service) -> ProbeKind {
    match service {
        Service::Http => ProbeKind::Http,
        Service::Redis => ProbeKind::Redis,
        Service::Postgresql => ProbeKind::Postgres,
        _ => ProbeKind::Greeting,
    }
}

/// The port's hint, if it has one.
fn hint(port: u16) -> Option<ProbeKind> {
    let among = |ports: &[u16]| ports.contains(&port);
    if among(TLS_PORTS) {
        Some(ProbeKind::Tls)
    } else if among(HTTP_PORTS) {
        Some(ProbeKind::Http)
    } else if among(REDIS_PORTS) {
        Some(ProbeKind::Redis)
    } else if among(POSTGRES_PORTS) {
        Some(ProbeKind::Postgres)
    } else if among(GREETING_PORTS) {
        Some(ProbeKind::Greeting)
    } else {
        None
    }
}

/// The order of the probes on `port`: the port's hint, then the expected service's probe,
/// then the rest; and whether the first was chosen by a hint or an expectation (it is then
/// given longer).
pub fn order(port: u16, expect: Option<ServiceExpect>) -> (Vec<ProbeKind>, bool) {
    let expected = match expect {
        Some(ServiceExpect::Named(service)) => Some(probe_for(service)),
        Some(ServiceExpect::Tls) => Some(ProbeKind::Tls),
        Some(ServiceExpect::Auto) | None => None,
    };
    let hint = hint(port);
    let mut order = Vec::with_capacity(DEFAULT_ORDER.len());
    for kind in hint.into_iter().chain(expected).chain(DEFAULT_ORDER) {
        if !order.contains(&kind) {
            order.push(kind);
        }
    }
    (order, hint.or(expected).is_some())
}

/// The probes inside TLS, on its one connection: the greeting first unless the port or the
/// expectation says HTTP (a service that speaks first greets an HTTP request anyway).
pub fn inner_order(port: u16, expect: Option<ServiceExpect>) -> &'static [ProbeKind] {
    let http_first = match expect {
        Some(ServiceExpect::Named(Service::Http)) => true,
        Some(ServiceExpect::Named(_)) => false,
        _ => TLS_PORTS.contains(&port) && !TLS_GREETING_PORTS.contains(&port),
    };
    if http_first {
        &[ProbeKind::Http]
    } else {
        &[ProbeKind::Greeting, ProbeKind::Http]
    }
}

/// The HTTP request, with `Host` the server name (else the address) and the port when it is
/// not the scheme's.
pub fn http_request(server_name: Option<&str>, addr: SocketAddr, tls: bool) -> Vec<u8> {
    let host = match (server_name, addr) {
        (Some(name), _) => name.to_string(),
        (None, SocketAddr::V4(v4)) => v4.ip().to_string(),
        (None, SocketAddr::V6(v6)) => format!("[{}]", v6.ip()),
    };
    let default_port = if tls { 443 } else { 80 };
    let port = match addr.port() {
        port if port == default_port => String::new(),
        port => format!(":{port}"),
    };
    format!(
        "GET / HTTP/1.0\r\nHost: {host}{port}\r\nUser-Agent: port_exporter/{}\r\nAccept: */*\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProbeKind::*;

    #[test]
    fn the_port_and_the_expectation_choose_the_order_only() {
        assert_eq!(order(22, None), (DEFAULT_ORDER.to_vec(), true));
        assert_eq!(order(7000, None), (DEFAULT_ORDER.to_vec(), false));
        assert_eq!(
            order(443, Some(ServiceExpect::Auto)),
            (vec![Tls, Greeting, Redis, Http, Postgres], true)
        );
        assert_eq!(order(5432, None).0[0], Postgres);
        assert_eq!(order(6379, None).0[0], Redis);
        assert_eq!(order(8080, None).0[0], Http);
        let named = order(7000, Some(ServiceExpect::Named(Service::Postgresql)));
        assert_eq!(named, (vec![Postgres, Greeting, Redis, Tls, Http], true));
        // The port's hint comes before the expectation: https on 443 is TLS first.
        let https = order(443, Some(ServiceExpect::Named(Service::Http))).0;
        assert_eq!(https[..2], [Tls, Http]);
        assert_eq!(inner_order(443, None), [Http]);
        assert_eq!(inner_order(993, None), [Greeting, Http]);
        assert_eq!(inner_order(7000, None), [Greeting, Http]);
    }

    #[test]
    fn the_http_request_names_the_host_and_a_port_other_than_the_schemes() {
        let v6: SocketAddr = "[::1]:8080".parse().unwrap();
        let text = String::from_utf8(http_request(None, v6, false)).unwrap();
        assert!(
            text.starts_with("GET / HTTP/1.0\r\nHost: [::1]:8080\r\n"),
            "{text}"
        );
        let named: SocketAddr = "127.0.0.1:443".parse().unwrap();
        let text = String::from_utf8(http_request(Some("www.example.org"), named, true)).unwrap();
        assert!(text.contains("\r\nHost: www.example.org\r\n") && text.ends_with("\r\n\r\n"));
    }
}
