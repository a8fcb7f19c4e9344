//! Service identification against real servers (issue 13): OpenSSH, nginx (plain, and HTTPS
//! with a valid and with an expired certificate), PostgreSQL with TLS, Redis, MariaDB, Dovecot
//! (IMAP and POP3 with STARTTLS) and Exim (SMTP with STARTTLS), each started from its Debian
//! package inside a network namespace of the test's own (tests/common/servers.rs). `nmap -sV`
//! in the same namespace is the oracle for every service name and for TLS (its `ssl/` tunnel;
//! its ssl-cert script for a certificate behind STARTTLS), `openssl x509 -enddate` for every
//! certificate's notAfter, `openssl s_client` for the TLS version and whether the chain
//! verifies. Needs root and the packages `.ci/run` installs: without them the test prints
//! `SKIPPED: <why>`, and fails under CI=true.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::netns::*;
use common::servers::*;
use common::*;

/// The targets that state what must speak on a port: (target, port, service, whether the
/// server there breaks it).
const EXPECTATIONS: [(&str, u16, &str, bool); 5] = [
    ("ssh-as-http", SSH, "http", true),
    ("ssh-as-ssh", SSH, "ssh", false),
    ("https-as-http", HTTPS_VALID, "http", false),
    ("postgres-as-postgresql", POSTGRESQL, "postgresql", false),
    ("redis-as-mysql", REDIS, "mysql", true),
];

fn exporter_config(lab: &Servers) -> String {
    let tls = format!(
        "[targets.tls]\nserver_name = \"localhost\"\nca_file = \"{}\"\n",
        lab.pki.ca.display()
    );
    let ports = lab_ports()
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let mut config = format!(
        "[defaults]\ninterval = \"10s\"\n\n\
         [[targets]]\nname = \"auto\"\nhost = \"127.0.0.1\"\nports = [{ports}]\n\
         service = \"auto\"\n{tls}"
    );
    for (name, port, service, _) in EXPECTATIONS {
        config.push_str(&format!(
            "\n[[targets]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nports = [{port}]\n\
             service = \"{service}\"\n"
        ));
        if LAB
            .iter()
            .any(|row| row.0 == port && row.3 != TlsKind::None)
        {
            config.push_str(&tls);
        }
    }
    config
}

/// The labels of the auto target's row for `port`.
fn auto(port: &str) -> [(&'static str, &str); 3] {
    [("target", "auto"), ("port", port), ("ip", "127.0.0.1")]
}

/// The single sample of `name` at 1 for `labels` (an info or state-set family).
fn on<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    let found: Vec<_> = find(samples, name, labels)
        .into_iter()
        .filter(|s| s.value == 1.0)
        .collect();
    assert!(
        found.len() <= 1,
        "more than one {name} {labels:?}: {found:?}"
    );
    found.first().copied()
}

/// Scrapes until every port of the auto target has its service (and every TLS port its
/// expiry), within `limit`.
fn scrape_identified(ns: &Netns, exporter: &Process, limit: Duration) -> (String, Vec<Sample>) {
    let deadline = Instant::now() + limit;
    loop {
        let text = ns.get(EXPORTER_ADDR, "/metrics").text();
        let samples = parse_samples(&text);
        let missing: Vec<u16> = LAB
            .iter()
            .filter(|(port, _, _, tls, _)| {
                let port = port.to_string();
                let labels = auto(&port);
                on(&samples, "port_service_info", &labels).is_none()
                    || (*tls != TlsKind::None
                        && find(&samples, "port_tls_cert_expiry_timestamp_seconds", &labels)
                            .is_empty())
            })
            .map(|row| row.0)
            .collect();
        if missing.is_empty() {
            return (text, samples);
        }
        assert!(
            Instant::now() < deadline,
            "ports {missing:?} not identified within {limit:?}; scrape:\n{text}\nexporter log:\n{}",
            exporter.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn services_on_real_servers_agree_with_nmap() {
    if !servers_available() {
        return;
    }
    let started = Instant::now();
    let ns = Netns::create("services");
    let lab = Servers::start(&ns);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;

    // The oracles, and the lab checked against them: every server is what the lab says.
    let phase = Instant::now();
    let nmap = nmap_services(&ns, &lab_ports());
    println!(
        "nmap -sV --script ssl-cert: {:.1} s",
        phase.elapsed().as_secs_f64()
    );
    let ca_not_after = openssl_not_after(&lab.pki.ca);
    assert_eq!(ca_not_after, lab.pki.ca_not_after, "openssl x509 on the CA");
    let mut expiry = BTreeMap::new();
    let mut handshakes = BTreeMap::new();
    for (port, server, service, tls, starttls) in LAB {
        let theirs = &nmap[&port];
        assert_eq!(
            (theirs.state.as_str(), theirs.reason.as_str()),
            ("open", "syn-ack"),
            "{server} on {port}: nmap's state; logs:\n{}",
            lab.logs()
        );
        assert_eq!(
            (theirs.service.as_str(), theirs.tls()),
            (service, tls),
            "{server} on {port}: nmap -sV sees {theirs:?}"
        );
        if tls == TlsKind::None {
            continue;
        }
        let leaf = openssl_not_after(lab.pki.leaf_of(port));
        assert_eq!(leaf.min(ca_not_after), lab.pki.chain_not_after(port));
        assert_eq!(
            theirs.cert_not_after,
            Some(leaf),
            "{server} on {port}: nmap's ssl-cert notAfter vs openssl x509 -enddate"
        );
        expiry.insert(port, leaf.min(ca_not_after));
        let handshake = openssl_handshake(&ns, port, starttls, &lab.pki.ca);
        assert_eq!(
            handshake.verified,
            port != HTTPS_EXPIRED,
            "{server} on {port}: openssl s_client verification: {handshake:?}"
        );
        handshakes.insert(port, handshake);
    }
    assert!(expiry[&HTTPS_EXPIRED] < now && expiry[&HTTPS_VALID] > now);

    println!(
        "\n{:<6} {:<22} {:<16} {:<42} {:<10} {:<12}",
        "port", "server", "nmap -sV", "nmap product/version", "openssl", "notAfter"
    );
    for (port, server, _, _, _) in LAB {
        let theirs = &nmap[&port];
        println!(
            "{port:<6} {server:<22} {:<16} {:<42} {:<10} {:<12}",
            theirs.spelled(),
            format!("{} {}", theirs.product, theirs.version),
            handshakes.get(&port).map_or("-", |h| h.protocol.as_str()),
            expiry.get(&port).map_or("-".to_string(), i64::to_string),
        );
    }

    // The exporter in the same namespace. Without service identification (issue 13) in this
    // build it refuses the config: say so at once instead of waiting for it to be ready.
    let config = exporter_config(&lab);
    let config_file = lab.dir().join("check.toml");
    std::fs::write(&config_file, &config).unwrap();
    let check = Command::new(EXPORTER)
        .args([
            "--config.check",
            "--config.file",
            config_file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "the exporter refuses the service config (is service identification in this build?):\n{}{}\nconfig:\n{config}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let phase = Instant::now();
    let exporter = start_exporter_in(&ns, lab.dir(), &config, Duration::from_secs(30));
    let (text, samples) = scrape_identified(&ns, &exporter, Duration::from_secs(60));
    println!(
        "\nexporter identified every port in {:.1} s",
        phase.elapsed().as_secs_f64()
    );

    // The table: ours against nmap's, before any assertion so a failure shows it.
    println!(
        "\n{:<6} {:<22} {:<16} {:<22} {:<34} {:<12} {:<12} {:<8} reason",
        "port", "server", "nmap", "ours (tls)", "our version", "notAfter", "our expiry", "verified"
    );
    for (port, server, _, _, _) in LAB {
        let port_label = port.to_string();
        let labels = auto(&port_label);
        let info = on(&samples, "port_service_info", &labels).unwrap();
        let our_expiry = find(&samples, "port_tls_cert_expiry_timestamp_seconds", &labels)
            .first()
            .map_or("-".to_string(), |s| format!("{}", s.value));
        let verified = find(&samples, "port_tls_cert_verified", &labels)
            .first()
            .map_or("-".to_string(), |s| format!("{}", s.value));
        let reason = find(&samples, "port_service_reason", &labels)
            .iter()
            .filter(|s| s.value == 1.0)
            .map(|s| s.labels["reason"].clone())
            .collect::<Vec<_>>()
            .join(",");
        println!(
            "{port:<6} {server:<22} {:<16} {:<22} {:<34} {:<12} {:<12} {:<8} {reason}",
            nmap[&port].spelled(),
            format!("{} ({})", info.labels["service"], info.labels["tls"]),
            info.labels.get("version").map_or("", String::as_str),
            expiry.get(&port).map_or("-".to_string(), i64::to_string),
            our_expiry,
            verified,
        );
    }

    // Every port of the auto target: open, the service and TLS nmap saw, and for TLS the
    // expiry of the chain to the second, the version openssl negotiated, and whether it verifies.
    for (port, server, _, _, _) in LAB {
        let port_label = port.to_string();
        let labels = auto(&port_label);
        let theirs = &nmap[&port];
        assert_eq!(state_of(&samples, &labels), "open", "{server} on {port}");
        let info = on(&samples, "port_service_info", &labels).unwrap();
        assert_eq!(
            (info.labels["service"].as_str(), info.labels["tls"].as_str()),
            (theirs.service.as_str(), theirs.tls().as_str()),
            "{server} on {port}: ours vs nmap -sV ({})",
            theirs.spelled()
        );
        assert_eq!(info.labels["host"], "127.0.0.1");
        match expiry.get(&port) {
            None => assert!(
                find(&samples, "port_tls_cert_expiry_timestamp_seconds", &labels).is_empty(),
                "{server} on {port} speaks no TLS"
            ),
            Some(&not_after) => {
                assert_eq!(
                    value(&samples, "port_tls_cert_expiry_timestamp_seconds", &labels),
                    not_after as f64,
                    "{server} on {port}: expiry vs openssl x509 -enddate"
                );
                let handshake = &handshakes[&port];
                let version = on(&samples, "port_tls_version_info", &labels)
                    .unwrap_or_else(|| panic!("{server} on {port}: port_tls_version_info"));
                assert_eq!(
                    tls_version_number(&version.labels["version"]),
                    tls_version_number(&handshake.protocol),
                    "{server} on {port}: TLS version vs openssl s_client"
                );
                assert_eq!(
                    value(&samples, "port_tls_cert_verified", &labels),
                    f64::from(u8::from(handshake.verified)),
                    "{server} on {port}: verified vs openssl s_client"
                );
            }
        }
    }
    // SSH announces its software: the version label carries nmap's version of it.
    let ssh = on(&samples, "port_service_info", &auto(&SSH.to_string())).unwrap();
    let nmap_ssh = nmap[&SSH].version.split_whitespace().next().unwrap();
    assert!(
        ssh.labels
            .get("version")
            .is_some_and(|v| v.contains(nmap_ssh)),
        "the SSH version label carries {nmap_ssh}: {ssh:?}"
    );
    // The expired certificate: still HTTP inside TLS, with its (past) expiry, not verified;
    // the valid one with the CA given: verified.
    let expired_port = HTTPS_EXPIRED.to_string();
    let expired = auto(&expired_port);
    let info = on(&samples, "port_service_info", &expired).unwrap();
    assert_eq!(
        (info.labels["service"].as_str(), info.labels["tls"].as_str()),
        ("http", "implicit")
    );
    assert!(value(&samples, "port_tls_cert_expiry_timestamp_seconds", &expired) < now as f64);
    assert_eq!(value(&samples, "port_tls_cert_verified", &expired), 0.0);
    assert_eq!(
        value(
            &samples,
            "port_tls_cert_verified",
            &auto(&HTTPS_VALID.to_string())
        ),
        1.0
    );

    // Expectations: only the ones the server breaks are unexpected; none without one.
    assert!(
        find(&samples, "port_service_unexpected", &[("target", "auto")]).is_empty(),
        "service = \"auto\" expects nothing"
    );
    for (name, port, service, broken) in EXPECTATIONS {
        let port_label = port.to_string();
        let labels = [("target", name), ("port", port_label.as_str())];
        assert_eq!(
            value(&samples, "port_service_unexpected", &labels),
            f64::from(u8::from(broken)),
            "{name}: service = \"{service}\" on port {port} ({})",
            nmap[&port].spelled()
        );
        assert_eq!(state_of(&samples, &labels), "open", "{name}");
    }
    if have("promtool") {
        promtool_check_metrics(&text).expect("promtool check metrics passes on the scrape");
    }

    drop(exporter);
    drop(lab);
    println!("\ntotal {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn certificate_dates_parse_to_unix_seconds() {
    assert_eq!(parse_openssl_date("Jan  1 00:00:00 1970 GMT"), 0);
    assert_eq!(
        parse_openssl_date("Mar  1 12:34:56 2028 GMT"),
        1_835_526_896
    );
    assert_eq!(parse_iso_utc("2028-03-01T12:34:56"), 1_835_526_896);
    assert_eq!(parse_iso_utc("2000-02-29T23:59:59"), 951_868_799);
    assert_eq!(tls_version_number("TLSv1.3"), tls_version_number("TLS 1.3"));
}
