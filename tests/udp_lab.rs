//! Lab tests of the UDP probe against real servers and the kernel's ICMP rate limit, with
//! `nmap -sU` as the oracle, each in network namespaces of its own.
//!
//! Needs what the lab needs (`lab_available`: root, iproute2, iptables, nmap, ...) and the
//! servers: `dnsmasq` (Debian `dnsmasq-base`), `snmpd` and `chronyd` (`chrony`). Without
//! them the tests print `SKIPPED: <why>`; with `CI=true` they fail instead.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::netns::{EXPORTER_ADDR, Netns, Process, lab_available, nmap_scan, start_exporter_in};
use common::{have, parse_samples, skip, state_of, value};
use port_exporter::domain::{Attempts, Close, Reason, State, Timing};
use port_exporter::probe::{Outcome, Probe, UdpProbe};

/// Adaptive timing as the exporter's defaults have it, with a shorter `timeout`.
fn adaptive(timeout: Duration) -> Attempts {
    Attempts {
        timeout,
        retries: 1,
        timing: Timing::Adaptive {
            min_timeout: Duration::from_millis(100),
            max_retries: 15,
        },
        close: Close::Reset,
        source: None,
    }
}

/// Probes every address with one prober, all at once, inside `ns`.
fn probe_in(
    ns: &Netns,
    prober: &UdpProbe,
    addrs: &[SocketAddr],
    at_once: bool,
    attempts: Attempts,
) -> Vec<Outcome> {
    let (prober, addrs) = (prober.clone(), addrs.to_vec());
    ns.enter(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            if !at_once {
                let mut outcomes = Vec::new();
                for addr in addrs {
                    outcomes.push(prober.probe(addr, attempts).await);
                }
                return outcomes;
            }
            let mut tasks = tokio::task::JoinSet::new();
            for (i, addr) in addrs.into_iter().enumerate() {
                let prober = prober.clone();
                tasks.spawn(async move { (i, prober.probe(addr, attempts).await) });
            }
            let mut outcomes: Vec<(usize, Outcome)> = tasks.join_all().await;
            outcomes.sort_by_key(|(i, _)| *i);
            outcomes.into_iter().map(|(_, o)| o).collect()
        })
    })
}

/// Whether the servers' binaries are here (skips, or fails under CI=true, when not).
fn servers_available() -> bool {
    for (tool, package) in [
        ("dnsmasq", "dnsmasq-base"),
        ("snmpd", "snmpd"),
        ("chronyd", "chrony"),
    ] {
        if !have(tool) && !have(&format!("/usr/sbin/{tool}")) {
            return !skip(&format!("the UDP lab needs {tool} (Debian {package})"));
        }
    }
    true
}

/// dnsmasq (53), snmpd (161, community public) and chronyd (123) on 127.0.0.1 inside `ns`,
/// each answering once it does.
fn start_servers(ns: &Netns, dir: &std::path::Path) -> Vec<Process> {
    let snmpd_conf = dir.join("snmpd.conf");
    std::fs::write(&snmpd_conf, "rocommunity public 127.0.0.1\n").unwrap();
    let chrony_conf = dir.join("chrony.conf");
    std::fs::write(
        &chrony_conf,
        format!(
            "port 123\nbindaddress 127.0.0.1\nallow 127.0.0.1\ncmdport 0\nlocal stratum 10\n\
             pidfile {}\n",
            dir.join("chronyd.pid").display()
        ),
    )
    .unwrap();
    let servers = vec![
        ns.spawn(
            &[
                "dnsmasq",
                "-k",
                "--conf-file=/dev/null",
                "-p",
                "53",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--pid-file=",
            ],
            &dir.join("dnsmasq.log"),
        ),
        ns.spawn(
            &[
                "snmpd",
                "-f",
                "-Lo",
                "-C",
                "-c",
                snmpd_conf.to_str().unwrap(),
                "udp:127.0.0.1:161",
            ],
            &dir.join("snmpd.log"),
        ),
        ns.spawn(
            &["chronyd", "-x", "-d", "-f", chrony_conf.to_str().unwrap()],
            &dir.join("chronyd.log"),
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let bound = ns.run(&["ss", "-uln"]);
        if [":53 ", ":123 ", ":161 "]
            .iter()
            .all(|port| bound.contains(&format!("127.0.0.1{port}")))
        {
            return servers;
        }
        let logs: Vec<String> = servers.iter().map(Process::log).collect();
        assert!(
            Instant::now() < deadline,
            "servers did not bind: {bound}\n{logs:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn udp_states_agree_with_nmap_on_real_servers_round_after_round() {
    if !lab_available() || !servers_available() {
        return;
    }
    let ns = Netns::create("udp");
    let dir = tempfile::tempdir().unwrap();
    let _servers = start_servers(&ns, dir.path());
    // 514: a syslog daemon, which never answers; 7000: nothing bound; then a DROP and two
    // kinds of REJECT.
    let _syslog = ns.enter(|| std::net::UdpSocket::bind("127.0.0.1:514").unwrap());
    ns.iptables("-A INPUT -p udp --dport 7001 -j DROP");
    ns.iptables("-A INPUT -p udp --dport 7002 -j REJECT --reject-with icmp-admin-prohibited");
    ns.iptables("-A INPUT -p udp --dport 7003 -j REJECT --reject-with icmp-host-unreachable");
    ns.iptables("-A INPUT -p udp --dport 7004 -j REJECT --reject-with icmp-net-unreachable");
    let expected: BTreeMap<u16, (State, Reason)> = [
        (53, (State::Open, Reason::UdpResponse)),
        (123, (State::Open, Reason::UdpResponse)),
        (161, (State::Open, Reason::UdpResponse)),
        (514, (State::OpenFiltered, Reason::NoResponse)),
        (7000, (State::Closed, Reason::PortUnreach)),
        (7001, (State::OpenFiltered, Reason::NoResponse)),
        // Linux reports ICMP admin prohibited (3/13) as EHOSTUNREACH: host-unreach, where
        // nmap, reading the ICMP itself, says admin-prohibited. The state is the same.
        (7002, (State::Filtered, Reason::HostUnreach)),
        (7003, (State::Filtered, Reason::HostUnreach)),
        (7004, (State::Filtered, Reason::NetUnreach)),
    ]
    .into();
    let ports: Vec<u16> = expected.keys().copied().collect();
    let addrs: Vec<SocketAddr> = ports
        .iter()
        .map(|port| SocketAddr::from(([127, 0, 0, 1], *port)))
        .collect();
    let port_list: Vec<String> = ports.iter().map(u16::to_string).collect();
    let nmap = nmap_scan(
        &ns,
        &["-sU", "-Pn", "-n", "-p", &port_list.join(","), "127.0.0.1"],
    );
    let prober = UdpProbe::default();
    for round in 1..=3 {
        let outcomes = probe_in(&ns, &prober, &addrs, true, adaptive(Duration::from_secs(1)));
        for (port, outcome) in ports.iter().zip(&outcomes) {
            let (state, reason) = expected[port];
            assert_eq!(
                (outcome.state, outcome.reason),
                (state, reason),
                "round {round}, port {port}"
            );
            let nmap_state = nmap.listed.get(port).map(String::as_str);
            assert_eq!(
                Some(outcome.state.as_str()),
                nmap_state,
                "round {round}, port {port}: nmap -sU says {nmap_state:?}"
            );
        }
    }
}

/// The ICMP counters of the namespace's kernel, by name (`OutRateLimitHost`, ...).
fn icmp_counters(ns: &Netns) -> BTreeMap<String, u64> {
    let snmp = ns.run(&["cat", "/proc/net/snmp"]);
    let mut icmp = snmp.lines().filter(|l| l.starts_with("Icmp: "));
    let (names, values) = (icmp.next().unwrap(), icmp.next().unwrap());
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .skip(1)
        .map(|(name, value)| (name.to_string(), value.parse().unwrap()))
        .collect()
}

#[test]
fn rate_limited_closed_ports_read_closed_given_time() {
    if !lab_available() {
        return;
    }
    // The prober and the target in namespaces of their own, joined by a veth pair: the
    // target's kernel rate-limits the ICMP errors it sends there (loopback is exempt).
    let prober_ns = Netns::create("udprl-a");
    let target = Netns::create("udprl-b");
    prober_ns.run(&[
        "ip", "link", "add", "pe-a", "type", "veth", "peer", "name", "pe-b",
    ]);
    prober_ns.run(&["ip", "link", "set", "pe-b", "netns", target.name()]);
    prober_ns.run(&["ip", "addr", "add", "10.201.0.1/24", "dev", "pe-a"]);
    prober_ns.run(&["ip", "link", "set", "pe-a", "up"]);
    target.run(&["ip", "addr", "add", "10.201.0.2/24", "dev", "pe-b"]);
    target.run(&["ip", "link", "set", "pe-b", "up"]);
    let limit = target.run(&["sysctl", "-n", "net.ipv4.icmp_ratelimit"]);
    assert_eq!(
        limit.trim(),
        "1000",
        "the kernel's default: one error a second"
    );
    let addrs: Vec<SocketAddr> = (20_000..20_020)
        .map(|port| SocketAddr::from(([10, 201, 0, 2], port)))
        .collect();

    // The trap: quick fixed retries, all ports at once, meet the empty bucket.
    let quick = Attempts {
        timeout: Duration::from_millis(100),
        retries: 1,
        timing: Timing::Fixed,
        close: Close::Reset,
        source: None,
    };
    let outcomes = probe_in(&prober_ns, &UdpProbe::default(), &addrs, true, quick);
    let silent = outcomes
        .iter()
        .filter(|o| o.state == State::OpenFiltered)
        .count();
    assert!(
        silent >= 10,
        "the limit is not in force: {silent} of 20 closed ports were silent"
    );

    // Give the bucket its burst back, then probe one port at a time, as a per-host pace
    // would: every port reads closed, while the kernel kept withholding errors.
    std::thread::sleep(Duration::from_secs(7));
    let limited_before = icmp_counters(&target)["OutRateLimitHost"];
    let started = Instant::now();
    let prober = UdpProbe::default();
    let outcomes = probe_in(
        &prober_ns,
        &prober,
        &addrs,
        false,
        adaptive(Duration::from_secs(2)),
    );
    let took = started.elapsed();
    for (addr, outcome) in addrs.iter().zip(&outcomes) {
        assert_eq!(
            (outcome.state, outcome.reason),
            (State::Closed, Reason::PortUnreach),
            "{addr} after {took:?}"
        );
    }
    let withheld = icmp_counters(&target)["OutRateLimitHost"] - limited_before;
    assert!(
        withheld > 0,
        "no error was withheld: the test proved nothing"
    );
    println!("20 rate-limited closed ports read closed in {took:?}; {withheld} errors withheld");
}

/// The exporter itself, with a `protocol = "udp"` target, against the same servers and rules:
/// every round its `port_state` (labelled `protocol="udp"`) agrees with `nmap -sU`, and a TCP
/// target on the same host and port number (dnsmasq's DNS over TCP) keeps series of its own.
#[test]
fn an_exporter_with_a_udp_target_reads_what_nmap_reads_round_after_round() {
    if !lab_available() || !servers_available() {
        return;
    }
    let ns = Netns::create("udpx");
    let dir = tempfile::tempdir().unwrap();
    let _servers = start_servers(&ns, dir.path());
    ns.iptables("-A INPUT -p udp --dport 7001 -j DROP");
    ns.iptables("-A INPUT -p udp --dport 7002 -j REJECT --reject-with icmp-admin-prohibited");
    let ports: [u16; 6] = [53, 123, 161, 7000, 7001, 7002];
    let expected = [
        "open",
        "open",
        "open",
        "closed",
        "open|filtered",
        "filtered",
    ];
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    let config = format!(
        "[defaults]\ninterval = \"3s\"\ntimeout = \"1s\"\n\n\
         [[targets]]\nname = \"udp\"\nhost = \"127.0.0.1\"\nprotocol = \"udp\"\nports = [{}]\n\n\
         [[targets]]\nname = \"dns-tcp\"\nhost = \"127.0.0.1\"\nports = [53]\n",
        list.join(", ")
    );
    let exporter = start_exporter_in(&ns, dir.path(), &config, Duration::from_secs(20));
    let nmap = nmap_scan(
        &ns,
        &["-sU", "-Pn", "-n", "-p", &list.join(","), "127.0.0.1"],
    );
    let mut last_probe = BTreeMap::new();
    for round in 1..=3 {
        if round > 1 {
            std::thread::sleep(Duration::from_millis(3_200));
        }
        let text = ns.get(EXPORTER_ADDR, "/metrics").text();
        let samples = parse_samples(&text);
        for (port, want) in ports.iter().zip(expected) {
            let port_label = port.to_string();
            let labels = [
                ("target", "udp"),
                ("port", port_label.as_str()),
                ("protocol", "udp"),
                ("ip", "127.0.0.1"),
            ];
            let state = state_of(&samples, &labels);
            let nmap_state = nmap.listed.get(port).map(String::as_str);
            assert_eq!(
                (state.as_str(), Some(state.as_str())),
                (want, nmap_state),
                "round {round}, port {port}: nmap -sU says {nmap_state:?}; log:\n{}",
                exporter.log()
            );
            let at = value(&samples, "port_last_probe_timestamp_seconds", &labels);
            if let Some(before) = last_probe.insert(*port, at) {
                assert!(at > before, "round {round}, port {port}: not probed again");
            }
        }
        // UDP series carry the open|filtered state; TCP's do not.
        let udp_states = common::find(
            &samples,
            "port_state",
            &[("target", "udp"), ("port", "7000")],
        );
        assert_eq!(udp_states.len(), 5, "{udp_states:?}");
        let tcp = [("target", "dns-tcp"), ("port", "53"), ("protocol", "tcp")];
        assert_eq!(state_of(&samples, &tcp), "open");
        assert_eq!(common::find(&samples, "port_state", &tcp).len(), 4);
    }
}
