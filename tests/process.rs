//! The binary as an operator runs it: flags, logs, signals.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const EXE: &str = env!("CARGO_BIN_EXE_port_exporter");

/// Starts the binary on an OS-chosen port with `args`, and returns it with the address it
/// logged ("address=...").
fn start(args: &[&str]) -> (Child, std::net::SocketAddr, Vec<String>) {
    let mut child = Command::new(EXE)
        .args(["--web.listen-address", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    let addr = loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "exited early: {lines:?}"
        );
        lines.push(line.clone());
        if let Some(rest) = line.split("address").nth(1) {
            let addr: String = rest
                .trim_start_matches(['=', '"', ':'])
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '"' && *c != ',')
                .collect();
            break addr.parse().unwrap();
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in reader.lines() {});
    (child, addr, lines)
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_and_sigint_stop_it_gracefully_with_exit_code_0() {
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        // The embedded default config: localhost's common ports.
        let (mut child, addr, _) = start(&[]);
        common::wait_ready(addr, Duration::from_secs(15));
        kill(Pid::from_raw(child.id() as i32), signal).unwrap();
        assert_eq!(
            wait_exit(&mut child, Duration::from_secs(10)),
            Some(0),
            "{signal}"
        );
    }
}

#[test]
fn embedded_default_probes_the_common_ports_of_localhost() {
    let (mut child, addr, _) = start(&[]);
    common::wait_ready(addr, Duration::from_secs(15));
    let samples = common::parse_samples(&common::get(addr, "/metrics").text());
    let mut ports: Vec<u16> = common::find(&samples, "port_state", &[("state", "open")])
        .iter()
        .map(|s| s.labels["port"].parse().unwrap())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports, [21, 22, 25, 80, 443, 3306, 3389]);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn logs_are_logfmt_by_default_and_json_on_request() {
    let (mut child, _, lines) = start(&[]);
    assert!(
        lines.last().unwrap().starts_with("ts=") && lines.last().unwrap().contains(" level=info "),
        "{lines:?}"
    );
    child.kill().unwrap();
    child.wait().unwrap();

    let (mut child, _, lines) = start(&["--log.format", "json"]);
    let json: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(json["level"], "INFO");
    assert_eq!(json["message"], "port_exporter started");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn an_address_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(EXE)
        .args(["--web.listen-address", &addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}
