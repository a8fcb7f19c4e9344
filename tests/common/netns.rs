//! The lab: network namespaces of the test's own, processes inside them, and the tools run
//! there (the exporter binary, nmap, Prometheus). Needs root, iproute2, iptables, nmap,
//! prometheus and promtool.

use std::collections::BTreeMap;
use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{Response, have, skip, try_http};

pub const EXPORTER: &str = env!("CARGO_BIN_EXE_port_exporter");
pub const EXPORTER_ADDR: &str = "127.0.0.1:9799";
pub const PROMETHEUS_ADDR: &str = "127.0.0.1:9090";

/// Returns false (after printing SKIPPED, or panicking under CI=true) when the lab cannot run.
pub fn lab_available() -> bool {
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
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn create(tag: &str) -> Netns {
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

    /// The namespace's name (`ip netns exec NAME ...`, `ip link set DEV netns NAME`).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn etc(&self) -> PathBuf {
        Path::new("/etc/netns").join(&self.name)
    }

    /// Adds `lines` (`address name`, one a line) to the namespace's hosts file.
    pub fn add_hosts(&self, lines: &str) {
        let path = self.etc().join("hosts");
        let mut hosts = fs::read_to_string(&path).unwrap();
        hosts.push_str(lines);
        fs::write(path, hosts).unwrap();
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).args(argv);
        command
    }

    /// Runs `argv` inside the namespace; panics unless it succeeds. Returns stdout.
    pub fn run(&self, argv: &[&str]) -> String {
        run_ok(&mut self.command(argv))
    }

    /// Runs `f` on a thread that has entered the namespace: sockets it creates live there.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = Path::new("/run/netns").join(&self.name);
        std::thread::spawn(move || {
            let file = fs::File::open(&path).expect("namespace file");
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("namespace thread")
    }

    /// Runs `f` on a thread that has entered the namespace, and returns at once: for work that
    /// must go on inside it (a packet queue's reader) while the test does other things.
    pub fn enter_background<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = Path::new("/run/netns").join(&self.name);
        std::thread::spawn(move || {
            let file = fs::File::open(&path).expect("namespace file");
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
    }

    /// Adds or removes an iptables rule given as one line (words split at spaces), e.g.
    /// `-A INPUT -p tcp --dport 80 -j DROP`.
    pub fn iptables(&self, rule: &str) {
        let argv: Vec<&str> = ["iptables"].into_iter().chain(rule.split(' ')).collect();
        self.run(&argv);
    }

    /// The packet counters of the rules of `chain` in the filter table, in rule order.
    pub fn rule_packets(&self, chain: &str) -> Vec<u64> {
        self.run(&["iptables", "-L", chain, "-v", "-x", "-n"])
            .lines()
            .skip(2)
            .map(|line| {
                let packets = line.split_whitespace().next().expect("a counter column");
                packets.parse().expect("a packet count")
            })
            .collect()
    }

    /// Listeners on `ip` inside the namespace for every port of `ports`, all served by one
    /// thread (a hundred ports cost one thread, not two hundred), that accept and drop
    /// connections until the returned handle is dropped.
    #[must_use = "the ports close when the handle is dropped"]
    pub fn listen_on(&self, ip: &str, ports: &[u16]) -> Listening {
        let ip: std::net::IpAddr = ip.parse().expect("an IP address");
        let ports = ports.to_vec();
        let listeners: Vec<TcpListener> = self.enter(move || {
            ports
                .iter()
                .map(|&port| TcpListener::bind((ip, port)).expect("bind in namespace"))
                .collect()
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
                use std::os::fd::AsFd;
                for listener in &listeners {
                    listener.set_nonblocking(true).unwrap();
                }
                while !stop.load(Ordering::Relaxed) {
                    let mut fds: Vec<PollFd> = listeners
                        .iter()
                        .map(|l| PollFd::new(l.as_fd(), PollFlags::POLLIN))
                        .collect();
                    // Bounded, so that the stop flag is seen.
                    let _ = poll(&mut fds, PollTimeout::from(50u16));
                    for listener in &listeners {
                        while let Ok((connection, _)) = listener.accept() {
                            drop(connection);
                        }
                    }
                }
            })
        };
        Listening {
            stop,
            threads: vec![thread],
        }
    }

    /// Listeners on 127.0.0.1 and ::1 inside the namespace that accept and drop connections
    /// until the returned handle is dropped.
    #[must_use = "the port closes when the handle is dropped"]
    pub fn listen(&self, port: u16) -> Listening {
        let listeners: Vec<TcpListener> = self.enter(move || {
            ["127.0.0.1", "[::1]"]
                .iter()
                .map(|ip| TcpListener::bind(format!("{ip}:{port}")).expect("bind in namespace"))
                .collect()
        });
        let stop = Arc::new(AtomicBool::new(false));
        let threads = listeners
            .into_iter()
            .map(|listener| {
                let stop = stop.clone();
                listener.set_nonblocking(true).unwrap();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match listener.accept() {
                            Ok((connection, _)) => drop(connection),
                            Err(_) => std::thread::sleep(Duration::from_millis(5)),
                        }
                    }
                })
            })
            .collect();
        Listening { stop, threads }
    }

    /// A blocking GET from inside the namespace.
    pub fn get(&self, addr: &str, path: &str) -> Response {
        self.try_get(addr, path).expect("GET inside the namespace")
    }

    pub fn try_get(&self, addr: &str, path: &str) -> std::io::Result<Response> {
        let addr: SocketAddr = addr.parse().unwrap();
        let path = path.to_string();
        self.enter(move || try_http(addr, "GET", &path, &[]))
    }

    /// Starts a long-running process inside the namespace, killed on drop.
    pub fn spawn(&self, argv: &[&str], log: &Path) -> Process {
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

/// Listeners in a namespace; dropping this closes them (the port is closed again).
pub struct Listening {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A child process killed (and reaped) on drop.
pub struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn run_ok(command: &mut Command) -> String {
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
pub fn wait_exporter_ready(ns: &Netns, exporter: &Process, limit: Duration) {
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

/// Starts the exporter binary inside `ns` on [`EXPORTER_ADDR`] with the config `text`, and
/// waits until it is ready.
pub fn start_exporter_in(ns: &Netns, dir: &Path, text: &str, limit: Duration) -> Process {
    let config = dir.join("exporter.toml");
    fs::write(&config, text).unwrap();
    let exporter = ns.spawn(
        &[
            EXPORTER,
            "--config.file",
            config.to_str().unwrap(),
            "--web.listen-address",
            EXPORTER_ADDR,
        ],
        &dir.join("exporter.log"),
    );
    wait_exporter_ready(ns, &exporter, limit);
    exporter
}

/// Starts Prometheus inside `ns` on [`PROMETHEUS_ADDR`], scraping the exporter every second as
/// job `port_exporter` and evaluating `rule_files` every second.
pub fn start_prometheus_in(ns: &Netns, dir: &Path, rule_files: &[PathBuf]) -> Process {
    start_prometheus_with(ns, dir, rule_files, "")
}

/// Like [`start_prometheus_in`], with more scrape jobs (`scrape_configs` list items, indented
/// by two spaces).
pub fn start_prometheus_with(
    ns: &Netns,
    dir: &Path,
    rule_files: &[PathBuf],
    extra_scrape_configs: &str,
) -> Process {
    let config = dir.join("prometheus.yml");
    let rules: String = rule_files
        .iter()
        .map(|f| format!("  - {}\n", fs::canonicalize(f).unwrap().display()))
        .collect();
    let rule_section = if rules.is_empty() {
        String::new()
    } else {
        format!("rule_files:\n{rules}")
    };
    fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{rule_section}scrape_configs:\n  - job_name: port_exporter\n    static_configs:\n      - targets: ['{EXPORTER_ADDR}']\n{extra_scrape_configs}"
        ),
    )
    .unwrap();
    run_ok(Command::new("promtool").args(["check", "config", config.to_str().unwrap()]));
    ns.spawn(
        &[
            "prometheus",
            &format!("--config.file={}", config.display()),
            &format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
            &format!("--web.listen-address={PROMETHEUS_ADDR}"),
        ],
        &dir.join("prometheus.log"),
    )
}

/// Percent-encodes a query string value.
pub fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The JSON answer of Prometheus' `path` API inside `ns`, or None while it is not up.
pub fn prometheus_api(ns: &Netns, path: &str) -> Option<serde_json::Value> {
    let response = ns.try_get(PROMETHEUS_ADDR, path).ok()?;
    serde_json::from_slice(&response.body).ok()
}

/// An instant query; returns the `data.result` array once Prometheus answers with success.
pub fn prometheus_query(ns: &Netns, query: &str) -> Option<Vec<serde_json::Value>> {
    let answer = prometheus_api(ns, &format!("/api/v1/query?query={}", url_encode(query)))?;
    if answer["status"] != "success" {
        return None;
    }
    answer["data"]["result"].as_array().cloned()
}

/// Polls `check` every 250 ms until it returns Some; panics after `limit` with `what` and the
/// Prometheus log.
pub fn wait_for<T>(
    what: &str,
    limit: Duration,
    prometheus: &Process,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not seen within {limit:?}; Prometheus log:\n{}",
            prometheus.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// What one nmap run found: the ports it lists with their state, its count per state of the
/// ports it folds into `<extraports>`, and its wall time.
pub struct NmapScan {
    pub listed: BTreeMap<u16, String>,
    pub folded: BTreeMap<String, usize>,
    pub took: Duration,
}

impl NmapScan {
    /// Ports in `state`, listed or folded.
    pub fn count(&self, state: &str) -> usize {
        self.listed.values().filter(|s| *s == state).count()
            + self.folded.get(state).copied().unwrap_or(0)
    }

    /// The listed ports in `state`.
    pub fn listed_in(&self, state: &str) -> Vec<u16> {
        self.listed
            .iter()
            .filter(|(_, s)| *s == state)
            .map(|(&port, _)| port)
            .collect()
    }
}

/// Runs `nmap ARGS -oX -` inside `ns` and reads its XML report (TCP or UDP ports).
pub fn nmap_scan(ns: &Netns, args: &[&str]) -> NmapScan {
    let argv: Vec<&str> = ["nmap"]
        .iter()
        .chain(args)
        .chain(&["-oX", "-"])
        .copied()
        .collect();
    let started = Instant::now();
    let xml = ns.run(&argv);
    let took = started.elapsed();
    let attribute = |element: &str, name: &str| -> String {
        let start = element.find(&format!("{name}=\"")).expect(name) + name.len() + 2;
        element[start..].split('"').next().unwrap().to_string()
    };
    let listed = xml
        .split("<port protocol=\"")
        .skip(1)
        .map(|element| {
            let state_element = &element[element.find("<state ").unwrap()..];
            (
                attribute(element, "portid").parse().unwrap(),
                attribute(state_element, "state"),
            )
        })
        .collect();
    let folded = xml
        .split("<extraports ")
        .skip(1)
        .map(|element| {
            (
                attribute(element, "state"),
                attribute(element, "count").parse().unwrap(),
            )
        })
        .collect();
    NmapScan {
        listed,
        folded,
        took,
    }
}

/// Prometheus' active alerts (pending and firing) named `name`.
pub fn active_alerts(ns: &Netns, name: &str) -> Option<Vec<serde_json::Value>> {
    let answer = prometheus_api(ns, "/api/v1/alerts")?;
    let alerts = answer["data"]["alerts"].as_array()?;
    Some(
        alerts
            .iter()
            .filter(|a| a["labels"]["alertname"] == name)
            .cloned()
            .collect(),
    )
}
