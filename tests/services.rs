//! Service identification against real servers (issue 13): OpenSSH, nginx (plain, and HTTPS
//! with a valid and with an expired certificate), PostgreSQL with TLS, Redis, MariaDB, Dovecot
//! (IMAP and POP3 with STARTTLS) and Exim (SMTP with STARTTLS), each started from its Debian
//! package inside a network namespace of the test's own (tests/common/servers.rs). `nmap -sV`
//! in the same namespace is the oracle for every service name and for TLS (its `ssl/` tunnel;
//! its ssl-cert script for a certificate behind STARTTLS), `openssl x509 -enddate` for every
//! certificate's notAfter, `openssl s_client` for the TLS version and whether the chain
//! verifies. A real Prometheus in the same namespace scrapes the exporter with the shipped rule
//! files (deploy/prometheus/rules) loaded: the certificate and service alerts must fire where
//! the servers break them and nowhere else. Needs root and the packages `.ci/run` installs
//! (prometheus among them): without them the test prints `SKIPPED: <why>`, and fails under
//! CI=true.

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
    // Prometheus with the shipped rules, started at once so that its `for` clocks run while
    // the scrape is checked below.
    let rules: Vec<_> = std::fs::read_dir("deploy/prometheus/rules")
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let prometheus = start_prometheus_in(&ns, lab.dir(), &rules);
    let prometheus_started = Instant::now();
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

    shipped_alerts_fire_where_the_servers_break_them(&ns, &prometheus, prometheus_started);

    drop(prometheus);
    drop(exporter);
    drop(lab);
    println!("\ntotal {:.1} s", started.elapsed().as_secs_f64());
}

/// (target, port, state) of each alert.
fn alert_rows(alerts: &[serde_json::Value]) -> Vec<(String, String, String)> {
    let mut rows: Vec<_> = alerts
        .iter()
        .map(|a| {
            let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
            (
                text(&a["labels"]["target"]),
                text(&a["labels"]["port"]),
                text(&a["state"]),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// The shipped rules (issue 13: "the rules alert in a real Prometheus on the expired
/// certificate and not on the valid one"): PortTLSCertificateExpired (`for: 0m`) fires for
/// the expired certificate only; PortServiceUnexpected (`for: 1m`) goes pending and then fires
/// for the two targets whose server breaks `service = "<name>"`, for none of the others; no
/// PortTLSCertificateNotVerified (every other chain verifies against the CA; the expired one
/// is left to PortTLSCertificateExpired by the rule) and no PortServiceChanged (nothing
/// changed).
fn shipped_alerts_fire_where_the_servers_break_them(
    ns: &Netns,
    prometheus: &Process,
    prometheus_started: Instant,
) {
    let phase = Instant::now();
    let alerts = |name| active_alerts(ns, name).unwrap_or_default();
    // Every expectation target scraped, with its verdict: the rules have their input.
    wait_for(
        "port_service_unexpected of every expectation target in Prometheus",
        Duration::from_secs(60),
        prometheus,
        || {
            prometheus_query(ns, "port_service_unexpected")
                .filter(|r| r.len() == EXPECTATIONS.len())
        },
    );
    let expired_port = HTTPS_EXPIRED.to_string();
    let valid_port = HTTPS_VALID.to_string();
    let expired = wait_for(
        "PortTLSCertificateExpired firing",
        Duration::from_secs(30),
        prometheus,
        || {
            let found = alerts("PortTLSCertificateExpired");
            found
                .iter()
                .any(|a| a["state"] == "firing")
                .then_some(found)
        },
    );
    assert_eq!(
        alert_rows(&expired),
        [(
            "auto".to_string(),
            expired_port.clone(),
            "firing".to_string()
        )],
        "PortTLSCertificateExpired: the expired certificate's port only, not {valid_port}: {expired:#?}"
    );
    let alert = &expired[0];
    for (name, want) in [
        ("host", "127.0.0.1"),
        ("ip", "127.0.0.1"),
        ("severity", "critical"),
        ("job", "port_exporter"),
    ] {
        assert_eq!(alert["labels"][name], want, "label {name} of {alert}");
    }
    let summary = alert["annotations"]["summary"].as_str().unwrap();
    assert!(
        summary.contains(&expired_port) && summary.contains("has expired"),
        "{summary}"
    );
    println!(
        "\nPrometheus: PortTLSCertificateExpired firing for {expired_port} after {:.1} s",
        prometheus_started.elapsed().as_secs_f64()
    );

    // The broken expectations: pending first (`for: 1m`), then firing, never the right ones.
    let mut broken: Vec<(String, String)> = EXPECTATIONS
        .iter()
        .filter(|row| row.3)
        .map(|row| (row.0.to_string(), row.1.to_string()))
        .collect();
    broken.sort();
    let of = |rows: Vec<(String, String, String)>| -> Vec<(String, String)> {
        rows.into_iter().map(|(t, p, _)| (t, p)).collect()
    };
    let pending = wait_for(
        "PortServiceUnexpected active for both broken expectations",
        Duration::from_secs(30),
        prometheus,
        || {
            let found = alerts("PortServiceUnexpected");
            (found.len() >= broken.len()).then_some(found)
        },
    );
    assert_eq!(of(alert_rows(&pending)), broken, "{pending:#?}");
    println!(
        "Prometheus: PortServiceUnexpected {:?} after {:.1} s",
        alert_rows(&pending),
        prometheus_started.elapsed().as_secs_f64()
    );
    let firing = wait_for(
        "PortServiceUnexpected firing (its `for` is 1m)",
        Duration::from_secs(90),
        prometheus,
        || {
            let found = alerts("PortServiceUnexpected");
            found
                .iter()
                .all(|a| a["state"] == "firing")
                .then_some(found)
        },
    );
    assert_eq!(of(alert_rows(&firing)), broken, "{firing:#?}");
    let ssh_as_http = firing
        .iter()
        .find(|a| a["labels"]["target"] == "ssh-as-http")
        .unwrap();
    let summary = ssh_as_http["annotations"]["summary"].as_str().unwrap();
    assert!(summary.contains("answers as ssh"), "{summary}");
    println!(
        "Prometheus: PortServiceUnexpected firing after {:.1} s",
        prometheus_started.elapsed().as_secs_f64()
    );

    // Still only the expired certificate, and nothing about the valid, verified one.
    assert_eq!(
        of(alert_rows(&alerts("PortTLSCertificateExpired"))),
        [("auto".to_string(), expired_port)]
    );
    for name in [
        "PortTLSCertificateNotVerified",
        "PortTLSCertificateExpiringSoon",
        "PortServiceChanged",
    ] {
        let found = alerts(name);
        assert!(
            found.is_empty(),
            "{name} active (none may be: every chain but the expired one verifies, none \
             expires soon, nothing changed): {found:#?}"
        );
    }
    assert!(
        prometheus_query(
            ns,
            &format!("port_tls_cert_verified{{target=\"auto\",port=\"{valid_port}\"}} == 1")
        )
        .is_some_and(|r| r.len() == 1),
        "Prometheus has the valid certificate's port_tls_cert_verified 1"
    );
    println!("alerts checked in {:.1} s", phase.elapsed().as_secs_f64());
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
