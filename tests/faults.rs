//! The binary under faults it must survive without lying: out of file descriptors, a resolver
//! that never answers, SIGTERM in the middle of a full round, the wall clock jumping, a prober
//! host that refuses to send (no route, a `prohibit` route), and `/probe` under a flood, a dead
//! or slow resolver.
//!
//! A listener whose accept backlog is full (a silent port) is covered by tests/exporter.rs
//! (`ready_waits_for_the_first_round_and_silence_is_filtered`).
//!
//! Traffic goes only to loopback, or to addresses inside network namespaces made here.

mod common;

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::netns::{EXPORTER, EXPORTER_ADDR, Listening, Netns};
use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

// ---------------------------------------------------------------------------------------------
// Helpers

/// The binary started on 127.0.0.1:0 behind `wrapper` (e.g. `prlimit ...`) with `env`; its
/// stderr is collected in `log`.
struct Binary {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Binary {
    fn start(wrapper: &[&str], args: &[&str], env: &[(&str, &str)]) -> Binary {
        let argv: Vec<&str> = wrapper
            .iter()
            .copied()
            .chain([EXPORTER, "--web.listen-address", "127.0.0.1:0"])
            .chain(args.iter().copied())
            .collect();
        let mut child = Command::new(argv[0])
            .args(&argv[1..])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut reader = std::io::BufReader::new(child.stderr.take().unwrap());
        let addr = loop {
            let mut line = String::new();
            assert!(
                reader.read_line(&mut line).unwrap() > 0,
                "exited early: {:?}",
                log.lock().unwrap()
            );
            log.lock().unwrap().push(line.clone());
            if let Some(rest) = line.split(" address=").nth(1) {
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        };
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Binary { child, addr, log }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A field of /proc/PID/status as a number (the first word after the colon).
fn proc_status(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// How many of the process's threads sit in poll() (where glibc's resolver waits for an
/// answer); None where the syscall numbers are not known here.
fn threads_waiting_for_the_resolver(pid: i32) -> Option<usize> {
    let poll_calls: &[&str] = if cfg!(target_arch = "x86_64") {
        &["7", "271"] // poll, ppoll
    } else if cfg!(target_arch = "aarch64") {
        &["73"] // ppoll
    } else {
        return None;
    };
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    Some(
        tasks
            .filter_map(Result::ok)
            .filter_map(|t| std::fs::read_to_string(t.path().join("syscall")).ok())
            .filter(|s| {
                s.split_whitespace()
                    .next()
                    .is_some_and(|n| poll_calls.contains(&n))
            })
            .count(),
    )
}

/// CPU seconds (user + system) the process has used.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Waits for the child to exit; its exit code and how long that took, or None after `limit`.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<(Option<i32>, Duration)> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some((status.code(), started.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

fn scrape(addr: SocketAddr) -> Vec<Sample> {
    parse_samples(&get(addr, "/metrics").text())
}

fn total(samples: &[Sample], name: &str) -> f64 {
    find(samples, name, &[]).iter().map(|s| s.value).sum()
}

/// (state, reason) of every port of `target`, by port.
fn states(samples: &[Sample], target: &str) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = find(samples, "port_state", &[("target", target)])
        .into_iter()
        .filter(|s| s.value == 1.0)
        .map(|s| {
            let port = s.labels["port"].clone();
            let reason = find(
                samples,
                "port_state_reason",
                &[("target", target), ("port", &port)],
            )
            .first()
            .map(|r| r.labels["reason"].clone())
            .unwrap_or_default();
            (port, s.labels["state"].clone(), reason)
        })
        .collect();
    out.sort();
    out
}

/// One HTTP/1.1 connection kept open for many requests (one that is already accepted keeps
/// working when the server can accept no more).
struct KeepAlive {
    stream: TcpStream,
}

impl KeepAlive {
    fn connect(addr: SocketAddr) -> KeepAlive {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        KeepAlive { stream }
    }

    fn get(&mut self, path: &str) -> (u16, String) {
        write!(self.stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_string();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .expect("content-length")
                    .parse()
                    .unwrap();
                if got.len() >= end + 4 + length {
                    assert_eq!(got.len(), end + 4 + length, "one response at a time");
                    let status = head[9..12].parse().unwrap();
                    return (status, String::from_utf8_lossy(&got[end + 4..]).to_string());
                }
            }
            let n = self.stream.read(&mut buf).expect("keep-alive read");
            assert!(n > 0, "the server closed the keep-alive connection");
            got.extend_from_slice(&buf[..n]);
        }
    }
}

fn root_and(tools: &[&str]) -> bool {
    if !nix::unistd::geteuid().is_root() {
        return !skip("needs root to create network namespaces");
    }
    for tool in tools {
        if !have(tool) {
            return !skip(&format!("needs {tool} on PATH"));
        }
    }
    true
}

/// A child process killed (and reaped) on drop, so that a failing test leaves none behind.
struct Running(Child);

impl Running {
    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary inside `ns` on [`EXPORTER_ADDR`] with the config `text`; stderr to `dir`.
fn start_in(ns: &Netns, dir: &Path, text: &str, env: &[(&str, &str)]) -> Running {
    let config = dir.join("exporter.toml");
    std::fs::write(&config, text).unwrap();
    let log = std::fs::File::create(dir.join("exporter.log")).unwrap();
    // `ip netns exec` execs the command: the child's pid is the exporter's.
    ns.command(&[
        EXPORTER,
        "--config.file",
        config.to_str().unwrap(),
        "--web.listen-address",
        EXPORTER_ADDR,
    ])
    .envs(env.iter().copied())
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(log)
    .spawn()
    .map(Running)
    .unwrap()
}

fn ns_scrape(ns: &Netns) -> Option<Vec<Sample>> {
    let response = ns.try_get(EXPORTER_ADDR, "/metrics").ok()?;
    (response.status == 200).then(|| parse_samples(&response.text()))
}

// ---------------------------------------------------------------------------------------------
// The prober's own host refuses

/// Regression: connect() failing at once on the prober's host (no route at all: ENETUNREACH;
/// a `prohibit` route, as a security module would: EACCES) read as `filtered`, a port state,
/// although no packet ever left. They are `error` with the errno; an `unreachable` route keeps
/// nmap's filtered/host-unreach.
#[test]
fn failures_on_the_probers_own_host_are_errors_not_port_states() {
    if !root_and(&["ip"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::create("local-fail");
    ns.run(&["ip", "route", "add", "prohibit", "198.18.201.0/24"]);
    ns.run(&["ip", "route", "add", "unreachable", "198.18.200.0/24"]);
    // The namespace has loopback only: 198.18.5.0/24 and 2001:2::/48 (benchmarking ranges)
    // have no route at all, so nothing is sent anywhere.
    let config = r#"
        [defaults]
        interval = "2s"
        timeout = "500ms"
        [[targets]]
        name = "no-route-v4"
        host = "198.18.5.5"
        ports = [80]
        [[targets]]
        name = "no-route-v6"
        host = "2001:2::5"
        ports = [80]
        [[targets]]
        name = "prohibited"
        host = "198.18.201.1"
        ports = [80]
        [[targets]]
        name = "unreachable-route"
        host = "198.18.200.1"
        ports = [80]
    "#;
    let _exporter =
        common::netns::start_exporter_in(&ns, dir.path(), config, Duration::from_secs(20));
    let samples = ns_scrape(&ns).expect("the exporter answers /metrics");
    let expected = [
        ("no-route-v4", "error", "enetunreach"),
        ("no-route-v6", "error", "enetunreach"),
        ("prohibited", "error", "eacces"),
        ("unreachable-route", "filtered", "host-unreach"),
    ];
    for (target, state, reason) in expected {
        assert_eq!(
            states(&samples, target),
            [("80".to_string(), state.to_string(), reason.to_string())],
            "{target}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Out of file descriptors

#[test]
fn out_of_fds_probes_report_error_emfile_never_a_port_state_and_recover() {
    if !have("prlimit") && skip("needs prlimit (util-linux)") {
        return;
    }
    // 150 closed ports (nothing listens on 127.1.0.77), probed every second.
    let ports: Vec<String> = (1001..=1150).map(|p| p.to_string()).collect();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ports.toml");
    std::fs::write(
        &config,
        format!(
            "[[targets]]\nname = \"closed\"\nhost = \"127.1.0.77\"\nports = [{}]\ninterval = \"1s\"\ntimeout = \"500ms\"\nretries = 0\n",
            ports.join(", ")
        ),
    )
    .unwrap();
    // Soft and hard limit 200: the exporter cannot raise it, and fits its concurrency to it.
    let binary = Binary::start(
        &["prlimit", "--nofile=200:200", "--"],
        &[
            "--config.file",
            config.to_str().unwrap(),
            "--probe.concurrency",
            "10000",
        ],
        &[],
    );
    let addr = binary.addr;
    let pid = binary.pid();
    wait_ready(addr, Duration::from_secs(10));
    assert!(
        binary
            .log()
            .contains("concurrency lowered to fit the file descriptor limit")
            && binary.log().contains("max_in_flight=36"),
        "{}",
        binary.log()
    );
    // Probes alone never run out: 150 ports, 36 in flight at most (two descriptors each), all closed.
    let all_closed = |samples: &[Sample]| {
        let s = states(samples, "closed");
        s.len() == 150 && s.iter().all(|(_, state, _)| state == "closed")
    };
    assert!(all_closed(&scrape(addr)));

    // Something else takes the descriptors: 250 idle HTTP connections, accepted until the
    // limit. A keep-alive connection opened before keeps scraping.
    let mut scraper = KeepAlive::connect(addr);
    assert_eq!(scraper.get("/-/healthy").0, 200);
    let hogs: Vec<TcpStream> = (0..250)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    // While out of fds: a port is closed (its probe got a socket) or error/emfile; never
    // filtered, never another reason.
    let mut scrape_emfile = || {
        let (status, text) = scraper.get("/metrics");
        assert_eq!(status, 200);
        let mut emfile = 0;
        for (port, state, reason) in states(&parse_samples(&text), "closed") {
            match (state.as_str(), reason.as_str()) {
                ("closed", "conn-refused") => {}
                ("error", "emfile") => emfile += 1,
                other => panic!("port {port} with every fd taken: {other:?}"),
            }
        }
        emfile
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while scrape_emfile() < 100 {
        assert!(
            Instant::now() < deadline,
            "no emfile errors with every fd taken"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // And the accept loop backs off instead of spinning.
    let cpu_before = cpu_seconds(pid);
    let window = Instant::now();
    let mut emfile_seen = 0;
    while window.elapsed() < Duration::from_secs(3) {
        emfile_seen += scrape_emfile();
        std::thread::sleep(Duration::from_millis(250));
    }
    let cpu = (cpu_seconds(pid) - cpu_before) / window.elapsed().as_secs_f64();
    assert!(emfile_seen > 0);
    assert!(cpu < 0.5, "{cpu:.2} cores used while out of fds");
    let log = binary.log();
    assert!(
        log.contains("accept failed") && log.contains("os error 24"),
        "{log}"
    );
    // Logged once per run of failures, not once per retry (a fixed 50 ms retry logged 60
    // lines in these 3 s).
    let accept_warnings = log.matches("accept failed").count();
    assert!(
        accept_warnings <= 5,
        "{accept_warnings} accept warnings:\n{log}"
    );
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    assert!(fds >= 195, "{fds} fds open: the hogs did not take them");

    // The descriptors come back: the next rounds find every port closed again.
    drop(hogs);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !all_closed(&parse_samples(&scraper.get("/metrics").1)) {
        assert!(Instant::now() < deadline, "did not recover from EMFILE");
        std::thread::sleep(Duration::from_millis(200));
    }
    // New connections are accepted again, and the errors were counted.
    let samples = scrape(addr);
    assert!(all_closed(&samples));
    assert!(
        value(
            &samples,
            "port_exporter_probes_total",
            &[("state", "error")]
        ) > 0.0
    );
    assert_eq!(
        value(
            &samples,
            "port_exporter_probes_total",
            &[("state", "filtered")]
        ),
        0.0
    );
    assert_eq!(get(addr, "/-/healthy").status, 200);
    assert!(
        binary.log().contains("accepting connections again"),
        "{}",
        binary.log()
    );
    println!(
        "out of fds: {emfile_seen} emfile port-scrapes in 3 s, {cpu:.2} cores, {fds} fds open, {accept_warnings} accept warnings"
    );
}

// ---------------------------------------------------------------------------------------------
// A resolver that never answers

/// A DNS server on 127.0.0.53 inside the namespace that reads queries and never answers.
struct DeadResolver {
    queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DeadResolver {
    fn start(ns: &Netns) -> DeadResolver {
        let socket = ns.enter(|| UdpSocket::bind("127.0.0.53:53").expect("bind 127.0.0.53:53"));
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let queries = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, done) = (queries.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !done.load(Ordering::Relaxed) {
                if socket.recv_from(&mut buf).is_ok() {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        DeadResolver {
            queries,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for DeadResolver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

const NAMES: usize = 100;
/// The names' budget: timeout x (retries + 1).
const BUDGET: Duration = Duration::from_secs(2);

/// A namespace whose resolver is dead (5 s per attempt, 2 attempts: a lookup blocks 10 s), an
/// open port on its loopback, and a config of `names` names under .lab (not in the hosts
/// file) plus the IP literal 127.0.0.1 on the open port, probed every second.
fn dead_resolver_lab(names: usize) -> (Netns, DeadResolver, Listening, String) {
    let ns = Netns::create("dns");
    std::fs::write(
        Path::new("/etc/netns")
            .join(ns_name(&ns))
            .join("resolv.conf"),
        "nameserver 127.0.0.53\noptions timeout:5 attempts:2\n",
    )
    .unwrap();
    let resolver = DeadResolver::start(&ns);
    let listening = ns.listen(9100);
    let mut text = String::from("[defaults]\ninterval = \"5s\"\ntimeout = \"1s\"\nretries = 1\n");
    for i in 0..names {
        text.push_str(&format!(
            "[[targets]]\nname = \"n{i}\"\nhost = \"n{i}.lab\"\nports = [80]\n"
        ));
    }
    text.push_str("[[targets]]\nname = \"literal\"\nhost = \"127.0.0.1\"\nports = [9100]\ninterval = \"1s\"\ntimeout = \"300ms\"\nretries = 0\n");
    (ns, resolver, listening, text)
}

/// The namespace's name: Netns keeps it private, but its namespace file is in /run/netns.
fn ns_name(ns: &Netns) -> String {
    // Enter the namespace and compare inodes with /run/netns/*.
    let inode = ns.enter(|| {
        std::fs::metadata("/proc/thread-self/ns/net")
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap()
    });
    std::fs::read_dir("/run/netns")
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| {
            std::fs::metadata(e.path())
                .is_ok_and(|m| std::os::unix::fs::MetadataExt::ino(&m) == inode)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .expect("the namespace is in /run/netns")
}

#[test]
fn a_dead_resolver_costs_each_name_its_budget_and_holds_up_nothing_else() {
    if !root_and(&["ip"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ns, resolver, _listening, text) = dead_resolver_lab(NAMES);
    let started = Instant::now();
    let child = start_in(&ns, dir.path(), &text, &[]);
    let pid = child.pid();
    // Ready once every target's first round is done: the names after their budget.
    let deadline = started + Duration::from_secs(10);
    while ns
        .try_get(EXPORTER_ADDR, "/-/ready")
        .map_or(true, |r| r.status != 200)
    {
        assert!(Instant::now() < deadline, "not ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ready_after = started.elapsed();
    assert!(
        ready_after >= BUDGET - Duration::from_millis(100)
            && ready_after < BUDGET + Duration::from_millis(1500),
        "ready after {ready_after:?}; each name's budget is {BUDGET:?}"
    );
    let mut max_in_flight = 0.0f64;
    let mut max_threads = 0;
    let mut max_blocked = 0;
    let mut literal_probes: Vec<f64> = Vec::new();
    // Longer than a blocked lookup (10 s): lookups finish, fail and start again.
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(12) {
        let scraped = Instant::now();
        let samples = ns_scrape(&ns).expect("scrape");
        assert!(scraped.elapsed() < Duration::from_secs(1), "slow scrape");
        for i in 0..NAMES {
            let name = format!("n{i}");
            let labels = [("target", name.as_str()), ("port", "80"), ("ip", "")];
            assert_eq!(state_of(&samples, &labels), "error", "{name}");
            assert_eq!(
                find(&samples, "port_state_reason", &labels)[0].labels["reason"],
                "dns"
            );
        }
        let literal = [("target", "literal"), ("ip", "127.0.0.1")];
        assert_eq!(state_of(&samples, &literal), "open");
        literal_probes.push(value(
            &samples,
            "port_last_probe_timestamp_seconds",
            &literal,
        ));
        let in_flight = value(&samples, "port_exporter_dns_lookups_in_flight", &[]);
        max_in_flight = max_in_flight.max(in_flight);
        max_threads = max_threads.max(proc_status(pid, "Threads"));
        if let Some(blocked) = threads_waiting_for_the_resolver(pid) {
            max_blocked = max_blocked.max(blocked);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // One lookup per name at most (running or waiting for one of the 32 slots): no pile-up
    // from round after round.
    assert!(
        max_in_flight <= NAMES as f64,
        "{max_in_flight} lookups for {NAMES} names"
    );
    // At most 32 threads wait in getaddrinfo; the blocking pool keeps up to as many idle
    // ones for 10 s after; plus main and the workers. Without the bound: one per name.
    if let Some(blocked) = threads_waiting_for_the_resolver(pid) {
        assert!(
            (16..=32).contains(&max_blocked),
            "{max_blocked} threads waited for the resolver at once (now {blocked})"
        );
    }
    let workers = std::thread::available_parallelism().map_or(4, |n| n.get()) as u64;
    assert!(
        max_threads <= 2 * 32 + workers + 4,
        "{max_threads} threads for {NAMES} blocked lookups"
    );
    // The IP literal is probed every second regardless.
    literal_probes.dedup();
    let gaps: Vec<f64> = literal_probes.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(literal_probes.len() >= 10, "{literal_probes:?}");
    assert!(
        gaps.iter().all(|&g| g > 0.5 && g < 1.6),
        "the literal's probes came {gaps:?} s apart"
    );
    let samples = ns_scrape(&ns).unwrap();
    assert!(value(&samples, "port_exporter_dns_lookup_failures_total", &[]) >= NAMES as f64);
    assert!(
        resolver.queries.load(Ordering::Relaxed) > 0,
        "the lookups never reached the dead resolver"
    );
    println!(
        "ready after {ready_after:?}; lookups in flight <= {max_in_flight}; threads <= {max_threads}, in poll() <= {max_blocked}; {} queries",
        resolver.queries.load(Ordering::Relaxed)
    );
    drop(child);
}

#[test]
fn sigterm_while_lookups_hang_on_a_dead_resolver_exits_0_within_the_grace_period() {
    if !root_and(&["ip"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ns, _resolver, _listening, text) = dead_resolver_lab(40);
    let mut child = start_in(&ns, dir.path(), &text, &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while ns
        .try_get(EXPORTER_ADDR, "/-/ready")
        .map_or(true, |r| r.status != 200)
    {
        assert!(Instant::now() < deadline, "not ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The first lookups started at start-up and block for 10 s; stop now.
    std::thread::sleep(Duration::from_millis(500));
    kill(Pid::from_raw(child.pid()), Signal::SIGTERM).unwrap();
    let exited = wait_exit(&mut child.0, Duration::from_secs(15));
    let log = std::fs::read_to_string(dir.path().join("exporter.log")).unwrap();
    let (code, took) = exited.expect("still running 15 s after SIGTERM");
    assert_eq!(code, Some(0), "{log}");
    assert!(
        took < Duration::from_secs(5),
        "exited {took:?} after SIGTERM (grace period 5 s); log:\n{log}"
    );
    println!("SIGTERM with lookups blocked: exit 0 after {took:?}");
}

// ---------------------------------------------------------------------------------------------
// SIGTERM during a full round

#[test]
fn sigterm_during_a_full_range_round_exits_0_within_the_grace_period() {
    if !root_and(&["ip", "iptables"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::create("term");
    // A thousand ports that drop SYNs: their probes wait out their timeouts (5 s x 2).
    ns.run(&[
        "iptables",
        "-A",
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        "30000:30999",
        "-j",
        "DROP",
    ]);
    let text = "[[targets]]\nname = \"all\"\nhost = \"127.0.0.1\"\nports = [\"1-65535\"]\ninterval = \"1h\"\ntimeout = \"5s\"\nretries = 1\nexpect = \"not_open\"\n";
    let config = dir.path().join("exporter.toml");
    std::fs::write(&config, text).unwrap();
    let log_path = dir.path().join("exporter.log");
    // 10,000 probes a second: the round takes over 6 s.
    let mut child = Running(
        ns.command(&[
            EXPORTER,
            "--config.file",
            config.to_str().unwrap(),
            "--web.listen-address",
            EXPORTER_ADDR,
            "--probe.rate",
            "10000",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap(),
    );
    // Mid-round: past the dropped ports, with probes in flight, not done.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (done, in_flight) = loop {
        if let Some(samples) = ns_scrape(&ns) {
            let done = total(&samples, "port_exporter_probes_total");
            let in_flight = value(&samples, "port_exporter_probes_in_flight", &[]);
            if done >= 32_000.0 {
                break (done, in_flight);
            }
        }
        assert!(Instant::now() < deadline, "the round did not get going");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(done < 65_535.0, "the round finished before SIGTERM: {done}");
    assert!(in_flight >= 100.0, "{in_flight} probes in flight");
    assert_eq!(
        ns.get(EXPORTER_ADDR, "/-/ready").status,
        503,
        "the first round is not done"
    );
    kill(Pid::from_raw(child.pid()), Signal::SIGTERM).unwrap();
    let exited = wait_exit(&mut child.0, Duration::from_secs(15));
    let log = std::fs::read_to_string(&log_path).unwrap();
    let (code, took) = exited.expect("still running 15 s after SIGTERM");
    assert_eq!(code, Some(0), "{log}");
    assert!(
        took < Duration::from_secs(5),
        "exited {took:?} after SIGTERM; log:\n{log}"
    );
    assert!(
        log.contains("signal=SIGTERM") && log.contains("port_exporter stopped"),
        "{log}"
    );
    println!("SIGTERM with {done} probes done and {in_flight} in flight: exit 0 after {took:?}");
}

// ---------------------------------------------------------------------------------------------
// A log that cannot be written

#[test]
fn a_broken_stderr_neither_stops_it_starting_nor_stops_sigterm_working() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ports.toml");
    std::fs::write(
        &config,
        "[[targets]]\nname = \"c\"\nhost = \"127.1.0.9\"\nports = [1]\ninterval = \"1s\"\ntimeout = \"200ms\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();

    // The log's reader goes away (a log shipper or journald restarting): the next lines
    // cannot be written, and SIGTERM must still stop the exporter.
    let mut child = Command::new(EXPORTER)
        .args([
            "--config.file",
            config,
            "--web.listen-address",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map(Running)
        .unwrap();
    let mut reader = std::io::BufReader::new(child.0.stderr.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let addr: SocketAddr = line
        .split(" address=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    drop(reader);
    wait_ready(addr, Duration::from_secs(10));
    kill(Pid::from_raw(child.pid()), Signal::SIGTERM).unwrap();
    let exited = wait_exit(&mut child.0, Duration::from_secs(10));
    assert_eq!(
        exited.map(|(code, _)| code),
        Some(Some(0)),
        "with its log reader gone, SIGTERM did not stop the exporter (exit, time: {exited:?})"
    );

    // stderr on a full device from the start: it must start, serve and stop all the same.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut child = Command::new(EXPORTER)
        .args([
            "--config.file",
            config,
            "--web.listen-address",
            &addr.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::options()
                .write(true)
                .open("/dev/full")
                .unwrap(),
        )
        .spawn()
        .map(Running)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while try_http(addr, "GET", "/-/ready", &[]).map_or(true, |r| r.status != 200) {
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!("exited with stderr on /dev/full: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "not ready with stderr on /dev/full"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    kill(Pid::from_raw(child.pid()), Signal::SIGTERM).unwrap();
    let exited = wait_exit(&mut child.0, Duration::from_secs(10));
    assert_eq!(exited.map(|(code, _)| code), Some(Some(0)), "{exited:?}");
}

// ---------------------------------------------------------------------------------------------
// The wall clock jumping

fn libfaketime() -> Option<String> {
    ["x86_64-linux-gnu", "aarch64-linux-gnu", "i386-linux-gnu"]
        .iter()
        .map(|arch| format!("/usr/lib/{arch}/faketime/libfaketime.so.1"))
        .find(|p| Path::new(p).exists())
}

#[test]
fn rounds_keep_their_interval_when_the_wall_clock_jumps_a_day_back_and_forth() {
    let Some(library) = libfaketime() else {
        skip("needs libfaketime (Debian package faketime)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // libfaketime reads the offset from this file at every clock call; CLOCK_MONOTONIC is
    // left alone, as the kernel leaves it alone when the wall clock is set.
    let stamp = dir.path().join("faketime");
    std::fs::write(&stamp, "+0\n").unwrap();
    let config = dir.path().join("ports.toml");
    std::fs::write(
        &config,
        "[[targets]]\nname = \"c\"\nhost = \"127.1.0.9\"\nports = [1, 2, 3]\ninterval = \"1s\"\ntimeout = \"200ms\"\nretries = 0\n",
    )
    .unwrap();
    let binary = Binary::start(
        &[],
        &["--config.file", config.to_str().unwrap()],
        &[
            ("LD_PRELOAD", library.as_str()),
            ("FAKETIME_TIMESTAMP_FILE", stamp.to_str().unwrap()),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    let addr = binary.addr;
    wait_ready(addr, Duration::from_secs(10));
    let now = || {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let probes = || total(&scrape(addr), "port_exporter_probes_total");
    let last_probe = || {
        value(
            &scrape(addr),
            "port_last_probe_timestamp_seconds",
            &[("target", "c"), ("port", "1")],
        )
    };
    // 3 ports each second: over 4 s, 12 probes (a round more or less at either end).
    let count_over_4s = || {
        let before = probes();
        std::thread::sleep(Duration::from_secs(4));
        probes() - before
    };
    let steady = count_over_4s();
    assert!((9.0..=15.0).contains(&steady), "{steady} probes in 4 s");
    println!("steady: {steady} probes in 4 s");
    for (offset, shift) in [("-1d", -86_400.0), ("+1d", 86_400.0), ("+0", 0.0)] {
        std::fs::write(&stamp, format!("{offset}\n")).unwrap();
        // The process's wall clock did jump: the next probe's timestamp says so.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let seen = last_probe() - now();
            if (seen - shift).abs() < 5.0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{offset}: no probe stamped {shift} s off within 5 s (seen: {seen:.0} s): the \
                 rounds stalled, or libfaketime does not work here"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // Rounds keep coming at the interval: no stall after a jump back, no burst after a
        // jump forward.
        let counted = count_over_4s();
        println!("{offset}: {counted} probes in 4 s");
        assert!(
            (9.0..=15.0).contains(&counted),
            "{offset}: {counted} probes in 4 s (steady: {steady})"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// /probe beside the schedule: lookups, connects and a budget of its own

/// Appends `lines` to the namespace's hosts file.
fn add_hosts(ns: &Netns, lines: &str) {
    let hosts = Path::new("/etc/netns").join(ns_name(ns)).join("hosts");
    let mut text = std::fs::read_to_string(&hosts).unwrap();
    text.push_str(lines);
    std::fs::write(&hosts, text).unwrap();
}

fn wait_ns_ready(ns: &Netns, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while ns
        .try_get(EXPORTER_ADDR, "/-/ready")
        .map_or(true, |r| r.status != 200)
    {
        let log = std::fs::read_to_string(dir.join("exporter.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "not ready; log:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Regression: with a resolver that does not answer, 100 clients asking `/probe` for names that
/// do not resolve took the scheduler's 32 lookup slots, and a map entry and a waiting task per
/// name: a configured target whose name is in the hosts file turned error/dns within 5 s and
/// stayed there, and `port_exporter_dns_lookups_in_flight` sat at 101. `/probe` now has
/// lookups of its own (4 at once, 16 names), and a name beyond them is answered 503 at once.
#[test]
fn a_flood_of_probes_of_names_that_never_resolve_leaves_the_configured_lookups_alone() {
    const CLIENTS: usize = 100;
    const WINDOW: Duration = Duration::from_secs(20);
    /// Each client's requests: at most this many, and none after the window (plus a budget).
    const MAX_PER_CLIENT: usize = 150;
    /// `/probe`'s bound on the names it looks up at once (`web::probe::PROBE_LOOKUP_NAMES`).
    const PROBE_NAMES: f64 = 16.0;
    /// `/probe`'s getaddrinfo calls at once (`web::probe::PROBE_LOOKUPS`).
    const PROBE_LOOKUPS: usize = 4;
    if !root_and(&["ip"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ns, resolver, _listening, mut text) = dead_resolver_lab(0);
    // dual.lab is in the namespace's hosts file (127.0.0.1 and ::1), where the open port is.
    text.push_str(
        "[[targets]]\nname = \"hosts\"\nhost = \"dual.lab\"\nports = [9100]\ninterval = \"1s\"\ntimeout = \"300ms\"\nretries = 0\n[probe]\nallow = [\"127.0.0.0/8\"]\n",
    );
    let child = start_in(&ns, dir.path(), &text, &[]);
    let pid = child.pid();
    wait_ns_ready(&ns, dir.path());
    // Every series set of the configured target, as "ip state (reason)", sorted.
    let hosts_state = |samples: &[Sample]| -> Vec<String> {
        let mut states: Vec<String> = find(samples, "port_state", &[("target", "hosts")])
            .into_iter()
            .filter(|s| s.value == 1.0)
            .map(|s| {
                let ip = s.labels["ip"].as_str();
                let labels = [("target", "hosts"), ("ip", ip)];
                let reason = find(samples, "port_state_reason", &labels)
                    .first()
                    .map_or("?".to_string(), |r| r.labels["reason"].clone());
                format!("{ip} {} ({reason})", s.labels["state"])
            })
            .collect();
        states.sort();
        states
    };
    let open = ["127.0.0.1 open (syn-ack)", "::1 open (syn-ack)"];
    assert_eq!(hosts_state(&ns_scrape(&ns).unwrap()), open);

    let stop = Arc::new(AtomicBool::new(false));
    let answers: Arc<Mutex<Vec<(u16, Duration, String)>>> = Arc::default();
    let flood_started = Instant::now();
    let mut seen: Vec<(Duration, Vec<String>)> = Vec::new();
    let (mut max_in_flight, mut max_blocked) = (0.0f64, 0);
    std::thread::scope(|scope| {
        for client in 0..CLIENTS {
            let (ns, stop, answers) = (&ns, stop.clone(), answers.clone());
            scope.spawn(move || {
                ns.enter(move || {
                    let addr: SocketAddr = EXPORTER_ADDR.parse().unwrap();
                    for k in 0..MAX_PER_CLIENT {
                        if stop.load(Ordering::Relaxed) || flood_started.elapsed() > WINDOW {
                            break;
                        }
                        let path = format!("/probe?target=n{client}-{k}.example:80");
                        let sent = Instant::now();
                        let answer = match try_http(addr, "GET", &path, &[]) {
                            Ok(response) => (response.status, sent.elapsed(), response.text()),
                            Err(error) => (0, sent.elapsed(), error.to_string()),
                        };
                        let quick = answer.1 < Duration::from_millis(500);
                        answers.lock().unwrap().push(answer);
                        // A quick answer: pause, so that the flood is 100 clients, not a spin.
                        if quick {
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    }
                });
            });
        }
        while flood_started.elapsed() < WINDOW {
            if let Some(samples) = ns_scrape(&ns) {
                seen.push((flood_started.elapsed(), hosts_state(&samples)));
                let in_flight = value(&samples, "port_exporter_dns_lookups_in_flight", &[]);
                max_in_flight = max_in_flight.max(in_flight);
            }
            if let Some(blocked) = threads_waiting_for_the_resolver(pid) {
                max_blocked = max_blocked.max(blocked);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let answers = answers.lock().unwrap().clone();
    let count = |status: u16| answers.iter().filter(|a| a.0 == status).count();
    let (refused, busy) = (count(403), count(503));
    let slowest_503 = answers
        .iter()
        .filter(|a| a.0 == 503)
        .map(|a| a.1)
        .max()
        .unwrap_or_default();
    let not_open = seen.iter().filter(|(_, states)| states != &open).count();
    println!(
        "{} /probe requests from {CLIENTS} clients in {WINDOW:?}: {refused} x 403, {busy} x 503 \
         (the slowest after {slowest_503:?}); the configured target not open in {not_open} of \
         {} scrapes; lookups in flight <= {max_in_flight}, threads in poll() <= {max_blocked}; \
         {} queries to the dead resolver",
        answers.len(),
        seen.len(),
        resolver.queries.load(Ordering::Relaxed)
    );
    // The configured target, whose name is in the hosts file, stays open throughout.
    assert!(seen.len() >= 40, "{} scrapes in {WINDOW:?}", seen.len());
    if let Some((at, states)) = seen.iter().find(|(_, states)| states != &open) {
        panic!("the configured target turned {states:?} {at:?} into the flood");
    }
    assert!(
        max_in_flight <= PROBE_NAMES + 1.0,
        "{max_in_flight} lookups in flight"
    );
    // The /probe lookups that block in getaddrinfo; the configured name needs no DNS. (One more
    // for a probe's own zero-timeout poll() caught in passing.)
    if threads_waiting_for_the_resolver(pid).is_some() {
        assert!(
            max_blocked <= PROBE_LOOKUPS + 1,
            "{max_blocked} threads waited for the resolver"
        );
    }
    // Every request is answered: 403 once its name did not resolve within its budget, or 503
    // at once when /probe has no room for another name.
    for (status, took, body) in &answers {
        match status {
            403 => assert!(body.contains("is not allowed"), "{body}"),
            503 => {
                assert!(body.contains("try again"), "{body}");
                assert!(*took < Duration::from_millis(500), "503 after {took:?}");
            }
            _ => panic!("{status} after {took:?}: {body}"),
        }
    }
    assert!(busy > 0, "no request was turned away");
    assert!(
        resolver.queries.load(Ordering::Relaxed) > 0,
        "the lookups never reached the dead resolver"
    );
    drop(child);
}

/// Regression: a 403 told what a name resolves to ("target secret.lab is not allowed: 127.0.0.5
/// outside the allow list"), and a name that does not resolve got another answer ("it does not
/// resolve"). A refusal now names the target as given and says it is not allowed, no more: the
/// same answer whatever the name resolves to, or whether it resolves, with `debug=true` too.
#[test]
fn probe_refusals_say_not_allowed_and_nothing_of_what_the_name_resolves_to() {
    if !root_and(&["ip"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ns, _resolver, _listening, mut text) = dead_resolver_lab(0);
    add_hosts(
        &ns,
        "127.0.0.5 secret.lab\n127.0.0.1 mixed.lab\n127.0.0.6 mixed.lab\n127.0.0.1 single.lab\n",
    );
    text.push_str("[probe]\nallow = [\"127.0.0.1/32\"]\n");
    let _child = start_in(&ns, dir.path(), &text, &[]);
    wait_ns_ready(&ns, dir.path());
    // The control: a name inside the allow list is probed.
    let allowed = ns.get(EXPORTER_ADDR, "/probe?target=single.lab:9100");
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    assert!(
        allowed.text().contains("state=\"open\"} 1"),
        "{}",
        allowed.text()
    );
    // Outside, partly outside, and (the dead resolver) not resolving within the budget.
    for target in [
        "secret.lab:80",
        "mixed.lab:80",
        "dual.lab:80",
        "never.example:80",
    ] {
        for debug in ["", "&debug=true"] {
            let response = ns.get(EXPORTER_ADDR, &format!("/probe?target={target}{debug}"));
            assert_eq!(response.status, 403, "{target}{debug}: {}", response.text());
            assert_eq!(
                response.text(),
                format!("target {target} is not allowed\n"),
                "{target}{debug}"
            );
        }
    }
}

/// A DNS server on 127.0.0.53 inside the namespace that answers every query after `delay`: A
/// queries with `ip`, others with no records.
struct SlowResolver {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SlowResolver {
    fn start(ns: &Netns, delay: Duration, ip: std::net::Ipv4Addr) -> SlowResolver {
        let socket = ns.enter(|| UdpSocket::bind("127.0.0.53:53").expect("bind 127.0.0.53:53"));
        socket
            .set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let done = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut pending: Vec<(Instant, Vec<u8>, SocketAddr)> = Vec::new();
            let mut buf = [0u8; 2048];
            while !done.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = socket.recv_from(&mut buf)
                    && let Some(reply) = dns_reply(&buf[..n], ip)
                {
                    pending.push((Instant::now() + delay, reply, peer));
                }
                let now = Instant::now();
                pending.retain(|(due, reply, peer)| {
                    if *due > now {
                        return true;
                    }
                    let _ = socket.send_to(reply, peer);
                    false
                });
            }
        });
        SlowResolver {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SlowResolver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The answer to a DNS query: the question copied, and for an A query one record with `ip`.
fn dns_reply(query: &[u8], ip: std::net::Ipv4Addr) -> Option<Vec<u8>> {
    let mut end = 12;
    while *query.get(end)? != 0 {
        end += 1 + usize::from(query[end]);
    }
    let question_end = end + 5; // the root label, type, class
    let qtype = u16::from_be_bytes([*query.get(end + 1)?, *query.get(end + 2)?]);
    let a = qtype == 1;
    let mut reply = query.get(..2)?.to_vec(); // the id
    // A response, recursion desired and available, no error; one question, 0 or 1 answers.
    reply.extend_from_slice(&[0x81, 0x80, 0, 1, 0, u8::from(a), 0, 0, 0, 0]);
    reply.extend_from_slice(query.get(12..question_end)?);
    if a {
        // The name by pointer to the question, A, IN, TTL 60, 4 bytes.
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        reply.extend_from_slice(&ip.octets());
    }
    Some(reply)
}

/// Regression: the lookup was not taken off the connects' budget, so one request could take
/// twice its budget: with a lookup of 1.5 s and a scrape timeout of 3 s (budget 2.5 s), the
/// connects to a silent port still got 2 x 1 s and the answer came after 3.5 s, when
/// Prometheus had given up. The budget now covers the lookup and the connects together.
#[test]
fn the_probe_budget_covers_the_lookup_and_the_connects_together() {
    if !root_and(&["ip", "iptables"]) {
        return;
    }
    const LOOKUP: Duration = Duration::from_millis(1500);
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::create("slowdns");
    std::fs::write(
        Path::new("/etc/netns")
            .join(ns_name(&ns))
            .join("resolv.conf"),
        "nameserver 127.0.0.53\noptions timeout:5 attempts:1\n",
    )
    .unwrap();
    let _resolver = SlowResolver::start(&ns, LOOKUP, "127.0.0.7".parse().unwrap());
    // 127.0.0.7:81 is silent: its SYNs are dropped.
    ns.run(&[
        "iptables",
        "-A",
        "INPUT",
        "-p",
        "tcp",
        "-d",
        "127.0.0.7",
        "--dport",
        "81",
        "-j",
        "DROP",
    ]);
    let _child = start_in(
        &ns,
        dir.path(),
        "[defaults]\ntimeout = \"1s\"\nretries = 1\n[probe]\nallow = [\"127.0.0.0/8\"]\n",
        &[],
    );
    wait_ns_ready(&ns, dir.path());
    // With the header, the budget is 3 s less 0.5 s; without, the config's 2 x 1 s.
    for (name, header, budget) in [
        ("slow1.lab", Some("3"), Duration::from_millis(2500)),
        ("slow2.lab", None, Duration::from_secs(2)),
    ] {
        let headers: Vec<(&str, &str)> = header
            .map(|h| ("X-Prometheus-Scrape-Timeout-Seconds", h))
            .into_iter()
            .collect();
        let path = format!("/probe?target={name}:81");
        let sent = Instant::now();
        let response = ns.enter(move || {
            try_http(EXPORTER_ADDR.parse().unwrap(), "GET", &path, &headers).unwrap()
        });
        let took = sent.elapsed();
        let text = response.text();
        println!("{name} with scrape timeout {header:?}: answered after {took:?}");
        assert_eq!(response.status, 200, "{text}");
        let samples = parse_samples(&text);
        assert_eq!(state_of(&samples, &[("ip", "127.0.0.7")]), "filtered");
        let lookup = value(&samples, "probe_dns_lookup_time_seconds", &[]);
        assert!(lookup >= LOOKUP.as_secs_f64() - 0.05, "lookup {lookup} s");
        let duration = value(&samples, "probe_duration_seconds", &[]);
        assert!(
            duration <= budget.as_secs_f64() + 0.05,
            "probe_duration_seconds {duration} for a budget of {budget:?}"
        );
        assert!(
            took >= budget - Duration::from_millis(100)
                && took < budget + Duration::from_millis(300),
            "{name}: answered after {took:?} for a budget of {budget:?}"
        );
    }
}
