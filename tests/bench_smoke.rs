//! The benchmark harness must not rot: `benches/run.sh --smoke` (tiny sizes, 1-2 s durations,
//! its own network namespace) runs every step of the benchmark against the binary under test
//! and prints the comparison table. Needs root, iproute2, iptables, curl, nmap, wrk,
//! prometheus-blackbox-exporter and python3: without them the test prints `SKIPPED: <why>`, and
//! fails under CI=true. Smoke mode judges the goals but never fails on them (the figures of a
//! tiny run mean nothing); only a failing step makes the script exit non-zero.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{have, skip};

/// The whole smoke run takes about 80 s; this bound only stops a hung harness.
const LIMIT: Duration = Duration::from_secs(150);

/// The figures the table must have a row for (the row's first cell starts with the letter).
const FIGURES: [(&str, &str); 11] = [
    (
        "a. /probe throughput",
        "/probe throughput, ours vs blackbox_exporter",
    ),
    ("b. full range", "the full port range vs nmap"),
    ("c. /metrics", "/metrics with many pairs"),
    (
        "d. scheduled probing",
        "scheduled probing: CPU, memory, lateness",
    ),
    ("e. ", "silent ports in flight"),
    ("f. TIME_WAIT", "TIME_WAIT after probing"),
    ("g. firewalled host", "a firewalled host vs nmap"),
    ("h. lossy path", "false filtered on a lossy path vs nmap"),
    (
        "i. ",
        "silent pairs on schedule: rounds, CPU, memory, lateness",
    ),
    (
        "j. service = \"auto\"",
        "service = \"auto\" vs connect-only on open ports",
    ),
    ("k. UDP", "UDP ports vs nmap -sU"),
];

#[test]
fn benchmark_smoke_run_prints_every_figure() {
    if !nix::unistd::geteuid().is_root() {
        skip("the benchmark needs root to create a network namespace");
        return;
    }
    for tool in [
        "bash",
        "ip",
        "iptables",
        "ss",
        "curl",
        "nmap",
        "wrk",
        "prometheus-blackbox-exporter",
        "python3",
    ] {
        if !have(tool) {
            skip(&format!("the benchmark needs {tool} on PATH"));
            return;
        }
    }

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/run.sh");
    let started = Instant::now();
    let mut child = Command::new("bash")
        .args([
            script,
            "--smoke",
            "--bin",
            env!("CARGO_BIN_EXE_port_exporter"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run benches/run.sh");
    // Drain both pipes on threads so the script never blocks on a full pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).map(|_| text)
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the script") {
            break status;
        }
        if started.elapsed() > LIMIT {
            // SIGTERM: the script's trap stops its processes and deletes its namespace.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
            panic!("benches/run.sh --smoke still running after {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = out.join().unwrap().expect("stdout is UTF-8");
    let stderr = err.join().unwrap().expect("stderr is UTF-8");
    let took = started.elapsed();
    assert!(
        status.success(),
        "benches/run.sh --smoke failed ({status}) after {took:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    println!("{stdout}");
    println!("smoke run took {took:.1?}");

    assert!(
        stdout.contains("| figure | ours | peer | ratio | goal | pass/fail |"),
        "no table header:\n{stdout}"
    );
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| figure"))
        .collect();
    for (prefix, what) in FIGURES {
        let row = rows
            .iter()
            .find(|r| r[2..].starts_with(prefix))
            .unwrap_or_else(|| panic!("no row for {what} ({prefix:?}):\n{stdout}"));
        // figure | ours | peer | ratio | goal | pass/fail: six cells, the last one a verdict.
        let cells: Vec<&str> = row.trim_matches('|').split(" | ").collect();
        assert_eq!(cells.len(), 6, "row {row:?}");
        let verdict = cells[5].trim();
        assert!(
            ["pass", "FAIL", "n/a"].contains(&verdict),
            "row {row:?} has no verdict"
        );
        assert!(!cells[1].trim().is_empty(), "row {row:?} has no figure");
    }
    for header in ["Machine:", "Versions:", "Commands"] {
        assert!(stdout.contains(header), "no {header} line:\n{stdout}");
    }
    assert!(
        !stdout.contains("DISAGREE"),
        "our states disagree with nmap's:\n{stdout}"
    );
}
