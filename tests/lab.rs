//! The lab: a network namespace per test with iptables/ip6tables rules on its loopback, the real
//! exporter binary inside it, nmap as the oracle for port states, and a real Prometheus server
//! scraping the exporter. Needs root, iproute2, iptables, nmap, prometheus and promtool: without
//! them each test prints `SKIPPED: <why>`, and fails under CI=true.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;

const EXPORTER: &str = env!("CARGO_BIN_EXE_port_exporter");
const EXPORTER_ADDR: &str = "127.0.0.1:9799";
const PROMETHEUS_ADDR: &str = "127.0.0.1:9090";

/// Returns false (after printing SKIPPED, or panicking under CI=true) when the lab cannot run.
fn lab_available() -> bool {
    if !nix::unistd::geteuid().is_root() {
        return !skip("lab tests need root to create network namespaces");
    }
    for tool in [
        "ip",
        "iptables",
        "ip6tables",
        "nmap",
        "prometheus",
        "promtool",
    ] {
        if !have(tool) {
            return !skip(&format!("lab tests need {tool} on PATH"));
        }
    }
    true
}

/// A network namespace of our own, removed with everything in it on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn create(tag: &str) -> Netns {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "pe-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.run(&["ip", "link", "set", "lo", "up"]);
        // Name resolution inside the namespace: our hosts file, and a resolver on loopback
        // where nothing listens, so a lookup that misses the file fails at once and no DNS
        // query leaves the namespace.
        let etc = ns.etc();
        fs::create_dir_all(&etc).unwrap();
        fs::write(etc.join("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
        fs::write(
            etc.join("hosts"),
            "127.0.0.1 localhost\n::1 localhost\n127.0.0.1 dual.lab\n::1 dual.lab\n",
        )
        .unwrap();
        ns
    }

    fn etc(&self) -> PathBuf {
        Path::new("/etc/netns").join(&self.name)
    }

    /// A command that runs inside the namespace.
    fn command(&self, argv: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).args(argv);
        command
    }

    /// Runs `argv` inside the namespace; panics unless it succeeds. Returns stdout.
    fn run(&self, argv: &[&str]) -> String {
        run_ok(&mut self.command(argv))
    }

    /// Runs `f` on a thread that has entered the namespace: sockets it creates live there.
    fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = Path::new("/run/netns").join(&self.name);
        std::thread::spawn(move || {
            let file = fs::File::open(&path).expect("namespace file");
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("namespace thread")
    }

    /// Listeners on 127.0.0.1 and ::1 inside the namespace that accept and drop connections
    /// until the test process ends.
    fn listen(&self, port: u16) {
        let listeners: Vec<TcpListener> = self.enter(move || {
            ["127.0.0.1", "[::1]"]
                .iter()
                .map(|ip| TcpListener::bind(format!("{ip}:{port}")).expect("bind in namespace"))
                .collect()
        });
        for listener in listeners {
            std::thread::spawn(move || {
                for connection in listener.incoming() {
                    drop(connection);
                }
            });
        }
    }

    /// A blocking GET from inside the namespace.
    fn get(&self, addr: &str, path: &str) -> Response {
        self.try_get(addr, path).expect("GET inside the namespace")
    }

    fn try_get(&self, addr: &str, path: &str) -> std::io::Result<Response> {
        let addr: SocketAddr = addr.parse().unwrap();
        let path = path.to_string();
        self.enter(move || try_http(addr, "GET", &path, &[]))
    }

    /// Starts a long-running process inside the namespace, killed on drop.
    fn spawn(&self, argv: &[&str], log: &Path) -> Process {
        let log_file = fs::File::create(log).unwrap();
        let child = self
            .command(argv)
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn in namespace");
        Process {
            child,
            log: log.to_path_buf(),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = fs::remove_dir_all(self.etc());
    }
}

/// A child process killed (and reaped) on drop.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_ok(command: &mut Command) -> String {
    let out = command.output().expect("command runs");
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Waits until the exporter in `ns` is ready; shows its log if it never is.
fn wait_exporter_ready(ns: &Netns, exporter: &Process, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let ready = ns.try_get(EXPORTER_ADDR, "/-/ready");
        if ready.is_ok_and(|r| r.status == 200) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "exporter not ready within {limit:?}; log:\n{}",
            exporter.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// nmap's verdict per port: `nmap -sT -Pn -n --reason` on `ip` inside the namespace, with the
/// exporter's budget (2 s per attempt, one retry). nmap's default on loopback waits far less
/// than the 1 s after which Linux delivers an ICMPv6 error to a connecting socket (the error
/// for the first SYN arrives while connect() still holds the socket and is kept as a soft
/// error; the one for the retransmitted SYN ends the connect), and so would call
/// ICMPv6-rejected ports "filtered (no-response)" even when the answer is "port unreachable".
fn nmap_states(ns: &Netns, ip: &str, ports: &[u16]) -> BTreeMap<u16, (String, String)> {
    let list = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut argv = vec![
        "nmap",
        "-sT",
        "-Pn",
        "-n",
        "--reason",
        "--initial-rtt-timeout",
        "2s",
        "--min-rtt-timeout",
        "2s",
        "--max-retries",
        "1",
        "-oX",
        "-",
        "-p",
        &list,
    ];
    if ip.contains(':') {
        argv.push("-6");
    }
    argv.push(ip);
    let xml = ns.run(&argv);
    let attribute = |element: &str, name: &str| -> String {
        let start = element.find(&format!("{name}=\"")).expect(name) + name.len() + 2;
        element[start..].split('"').next().unwrap().to_string()
    };
    xml.split("<port protocol=\"tcp\" ")
        .skip(1)
        .map(|element| {
            let port = attribute(element, "portid").parse().unwrap();
            let state_element = &element[element.find("<state ").unwrap()..];
            (
                port,
                (
                    attribute(state_element, "state"),
                    attribute(state_element, "reason"),
                ),
            )
        })
        .collect()
}

// The lab's ports and what the namespace does to them.
const OPEN: u16 = 10001;
const CLOSED: u16 = 10002;
const DROPPED: u16 = 10003;
const RESET: u16 = 10004;
const ADMIN_PROHIBITED: u16 = 10005;
const HOST_UNREACHABLE: u16 = 10006;
const PORT_UNREACHABLE: u16 = 10007;
const NET_UNREACHABLE: u16 = 10008;
const LAB_PORTS: [u16; 8] = [
    OPEN,
    CLOSED,
    DROPPED,
    RESET,
    ADMIN_PROHIBITED,
    HOST_UNREACHABLE,
    PORT_UNREACHABLE,
    NET_UNREACHABLE,
];

/// (iptables, ip6tables) rule targets per port.
const RULES: [(u16, &[&str], &[&str]); 6] = [
    (DROPPED, &["-j", "DROP"], &["-j", "DROP"]),
    (
        RESET,
        &["-j", "REJECT", "--reject-with", "tcp-reset"],
        &["-j", "REJECT", "--reject-with", "tcp-reset"],
    ),
    (
        ADMIN_PROHIBITED,
        &["-j", "REJECT", "--reject-with", "icmp-admin-prohibited"],
        &["-j", "REJECT", "--reject-with", "icmp6-adm-prohibited"],
    ),
    (
        HOST_UNREACHABLE,
        &["-j", "REJECT", "--reject-with", "icmp-host-unreachable"],
        &["-j", "REJECT", "--reject-with", "icmp6-addr-unreachable"],
    ),
    (
        PORT_UNREACHABLE,
        &["-j", "REJECT", "--reject-with", "icmp-port-unreachable"],
        &["-j", "REJECT", "--reject-with", "icmp6-port-unreachable"],
    ),
    (
        NET_UNREACHABLE,
        &["-j", "REJECT", "--reject-with", "icmp-net-unreachable"],
        &["-j", "REJECT", "--reject-with", "icmp6-no-route"],
    ),
];

/// The (state, reason) the exporter must report per (ip, port).
fn expected(ip: &str, port: u16) -> (&'static str, &'static str) {
    let v6 = ip.contains(':');
    match port {
        OPEN => ("open", "syn-ack"),
        CLOSED | RESET | PORT_UNREACHABLE => ("closed", "conn-refused"),
        DROPPED => ("filtered", "no-response"),
        ADMIN_PROHIBITED if v6 => ("filtered", "admin-prohibited"),
        ADMIN_PROHIBITED | HOST_UNREACHABLE => ("filtered", "host-unreach"),
        NET_UNREACHABLE => ("filtered", "net-unreach"),
        _ => unreachable!("port {port} is not in the lab"),
    }
}

#[test]
fn exporter_matches_nmap_and_prometheus_scrapes_it() {
    if !lab_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::create("states");
    for (port, v4, v6) in RULES {
        let port = port.to_string();
        let base = ["-A", "INPUT", "-p", "tcp", "--dport", port.as_str()];
        ns.run(&[&["iptables"][..], &base, v4].concat());
        ns.run(&[&["ip6tables"][..], &base, v6].concat());
    }
    ns.run(&["ip", "route", "add", "unreachable", "198.18.200.0/24"]);
    ns.listen(OPEN);
    ns.listen(RESET); // the tcp-reset rule answers before this listener can

    let ports = LAB_PORTS
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let config = dir.path().join("lab.toml");
    fs::write(
        &config,
        format!(
            r#"
            [defaults]
            interval = "5s"
            timeout = "2s"
            retries = 1

            [[targets]]
            name = "lab"
            host = "dual.lab"
            ports = [{ports}]
            expect = "not_open"
            labels = {{ site = "lab" }}

            [[targets]]
            name = "unreachable-route"
            host = "198.18.200.1"
            ports = [80]

            [[targets]]
            name = "nxdomain"
            host = "no-such-host.lab"
            ports = [80, 443]
            "#
        ),
    )
    .unwrap();
    let exporter = ns.spawn(
        &[
            EXPORTER,
            "--config.file",
            config.to_str().unwrap(),
            "--web.listen-address",
            EXPORTER_ADDR,
        ],
        &dir.path().join("exporter.log"),
    );
    wait_exporter_ready(&ns, &exporter, Duration::from_secs(30));
    let scrape = ns.get(EXPORTER_ADDR, "/metrics").text();
    let samples = parse_samples(&scrape);

    // Every address of the name is its own series; every port matches nmap and our table.
    let mut compared = 0;
    for ip in ["127.0.0.1", "::1"] {
        let oracle = nmap_states(&ns, ip, &LAB_PORTS);
        for port in LAB_PORTS {
            let port_label = port.to_string();
            let labels = [("target", "lab"), ("ip", ip), ("port", port_label.as_str())];
            let state = state_of(&samples, &labels);
            let reason = find(&samples, "port_state_reason", &labels)[0].labels["reason"].clone();
            assert_eq!(
                (&state, &reason),
                (&oracle[&port].0, &oracle[&port].1),
                "{ip} port {port}: exporter vs nmap"
            );
            assert_eq!(
                (state.as_str(), reason.as_str()),
                expected(ip, port),
                "{ip} port {port}"
            );
            compared += 1;
        }
    }
    let oracle = nmap_states(&ns, "198.18.200.1", &[80]);
    let labels = [
        ("target", "unreachable-route"),
        ("ip", "198.18.200.1"),
        ("port", "80"),
    ];
    let reason = find(&samples, "port_state_reason", &labels)[0].labels["reason"].clone();
    assert_eq!((state_of(&samples, &labels), reason), oracle[&80]);
    assert_eq!(
        oracle[&80],
        ("filtered".to_string(), "host-unreach".to_string())
    );
    compared += 1;
    assert_eq!(compared, 17);

    // The expectation: only the open port breaks "not_open".
    for sample in find(&samples, "port_state_unexpected", &[("target", "lab")]) {
        let is_open_port = sample.labels["port"] == OPEN.to_string();
        assert_eq!(
            sample.value,
            f64::from(u8::from(is_open_port)),
            "{sample:?}"
        );
    }
    // A name that does not resolve: one series set per port with ip="" in state error.
    for port in ["80", "443"] {
        let labels = [("target", "nxdomain"), ("ip", ""), ("port", port)];
        assert_eq!(state_of(&samples, &labels), "error");
        assert_eq!(
            find(&samples, "port_state_reason", &labels)[0].labels["reason"],
            "dns"
        );
    }
    assert!(value(&samples, "port_exporter_dns_lookup_failures_total", &[]) >= 1.0);
    assert!(
        find(
            &samples,
            "port_dns_lookup_duration_seconds",
            &[("target", "nxdomain")]
        )
        .len()
            == 1
    );
    promtool_check_metrics(&scrape).expect("promtool check metrics passes on the lab scrape");

    // A real Prometheus scrapes the exporter and answers PromQL over port_state.
    let prometheus_config = dir.path().join("prometheus.yml");
    fs::write(
        &prometheus_config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: port_exporter\n    static_configs:\n      - targets: ['{EXPORTER_ADDR}']\n"
        ),
    )
    .unwrap();
    run_ok(Command::new("promtool").args(["check", "config", prometheus_config.to_str().unwrap()]));
    let storage = dir.path().join("tsdb");
    let prometheus = ns.spawn(
        &[
            "prometheus",
            &format!("--config.file={}", prometheus_config.display()),
            &format!("--storage.tsdb.path={}", storage.display()),
            &format!("--web.listen-address={PROMETHEUS_ADDR}"),
        ],
        &dir.path().join("prometheus.log"),
    );
    let ours: BTreeMap<(String, String, String), String> = samples
        .iter()
        .filter(|s| s.name == "port_state" && s.value == 1.0)
        .map(|s| {
            (
                (
                    s.labels["target"].clone(),
                    s.labels["port"].clone(),
                    s.labels["ip"].clone(),
                ),
                s.labels["state"].clone(),
            )
        })
        .collect();
    let query = "/api/v1/query?query=port_state%20%3D%3D%201";
    let deadline = Instant::now() + Duration::from_secs(60);
    let theirs = loop {
        if let Ok(answer) = ns.try_get(PROMETHEUS_ADDR, query) {
            let json: serde_json::Value = serde_json::from_str(&answer.text()).unwrap_or_default();
            let series = json["data"]["result"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if series.len() >= ours.len() {
                break series;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never returned {} series; log:\n{}",
            ours.len(),
            prometheus.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let theirs: BTreeMap<(String, String, String), String> = theirs
        .iter()
        .map(|s| {
            let m = &s["metric"];
            let label = |k: &str| m[k].as_str().unwrap_or_default().to_string();
            (
                (label("target"), label("port"), label("ip")),
                label("state"),
            )
        })
        .collect();
    assert_eq!(
        theirs, ours,
        "Prometheus sees the states the exporter exposes"
    );
    let by_state = ns.get(
        PROMETHEUS_ADDR,
        "/api/v1/query?query=sum%20by%20(state)%20(port_state%7Btarget%3D%22lab%22%7D)",
    );
    let json: serde_json::Value = serde_json::from_str(&by_state.text()).unwrap();
    let counts: BTreeMap<String, String> = json["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["metric"]["state"].as_str().unwrap().to_string(),
                s["value"][1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // 16 rows (8 ports x 2 addresses): 2 open, 6 closed, 8 filtered, 0 error.
    let expected_counts: BTreeMap<String, String> = [
        ("closed", "6"),
        ("error", "0"),
        ("filtered", "8"),
        ("open", "2"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(counts, expected_counts);
    drop(prometheus);
    drop(exporter);
}

#[test]
fn a_socket_connected_to_itself_is_not_an_open_port() {
    if !lab_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::create("selfconnect");
    // With one ephemeral port, a connect to 127.0.0.1:40000 comes from 127.0.0.1:40000 and
    // the kernel's simultaneous open connects the socket to itself.
    ns.run(&[
        "sysctl",
        "-q",
        "-w",
        "net.ipv4.ip_local_port_range=40000 40000",
    ]);
    let config = dir.path().join("self.toml");
    fs::write(
        &config,
        "[[targets]]\nname = \"self\"\nhost = \"127.0.0.1\"\nports = [40000]\ntimeout = \"1s\"\nretries = 1\n",
    )
    .unwrap();
    let exporter = ns.spawn(
        &[
            EXPORTER,
            "--config.file",
            config.to_str().unwrap(),
            "--web.listen-address",
            EXPORTER_ADDR,
        ],
        &dir.path().join("exporter.log"),
    );
    wait_exporter_ready(&ns, &exporter, Duration::from_secs(20));
    let samples = parse_samples(&ns.get(EXPORTER_ADDR, "/metrics").text());
    let labels = [("target", "self"), ("port", "40000")];
    assert_eq!(state_of(&samples, &labels), "closed");
    assert_eq!(
        find(&samples, "port_state_reason", &labels)[0].labels["reason"],
        "self-connect"
    );
}
