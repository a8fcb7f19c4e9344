//! The binary as an operator runs it: flags, logs, signals.

mod common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use common::start_binary;

const EXE: &str = env!("CARGO_BIN_EXE_port_exporter");

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
        let (mut child, addr, _) = start_binary(&[]);
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
    let (mut child, addr, _) = start_binary(&[]);
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
    let (mut child, _, lines) = start_binary(&[]);
    assert!(
        lines.last().unwrap().starts_with("ts=") && lines.last().unwrap().contains(" level=info "),
        "{lines:?}"
    );
    child.kill().unwrap();
    child.wait().unwrap();

    let (mut child, _, lines) = start_binary(&["--log.format", "json"]);
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

#[test]
fn sighup_reloads_the_config_file_and_a_bad_one_is_kept_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ports.toml");
    let path_arg = path.to_str().unwrap().to_string();
    std::fs::write(
        &path,
        "[[targets]]\nname = \"one\"\nhost = \"127.0.0.1\"\nports = [1]\n",
    )
    .unwrap();
    let (mut child, addr, _) = start_binary(&["--config.file", &path_arg]);
    common::wait_ready(addr, Duration::from_secs(15));
    let pid = Pid::from_raw(child.id() as i32);
    let targets = || {
        let samples = common::parse_samples(&common::get(addr, "/metrics").text());
        let mut names: Vec<String> = common::find(&samples, "port_state", &[("state", "open")])
            .iter()
            .map(|s| s.labels["target"].clone())
            .collect();
        names.dedup();
        (names, samples)
    };
    assert_eq!(targets().0, ["one"]);

    std::fs::write(
        &path,
        "[[targets]]\nname = \"two\"\nhost = \"127.0.0.1\"\nports = [2]\n",
    )
    .unwrap();
    kill(pid, Signal::SIGHUP).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while targets().0 != ["two"] {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload: {:?}",
            targets().0
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    std::fs::write(
        &path,
        "[[targets]]\nname = \"three\"\nhost = \"127.0.0.1\"\nports = [0]\n",
    )
    .unwrap();
    kill(pid, Signal::SIGHUP).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (names, samples) = targets();
        let successful =
            common::value(&samples, "port_exporter_config_last_reload_successful", &[]);
        if successful == 0.0 {
            assert_eq!(
                names,
                ["two"],
                "the bad file must not replace the running config"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the failed reload was not reported"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "a bad reload must not stop the exporter"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn shards_split_the_ports_with_no_overlap_and_no_gap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ports.toml");
    std::fs::write(
        &path,
        "[[targets]]\nname = \"many\"\nhost = \"127.0.0.1\"\nports = [\"1-40\"]\nexpect = \"not_open\"\n[[targets]]\nname = \"few\"\nhost = \"127.0.0.1\"\nports = [1, 2, 3]\n",
    )
    .unwrap();
    let path_arg = path.to_str().unwrap();
    let mut seen: Vec<(String, String)> = Vec::new();
    for index in ["0", "1", "2"] {
        let (mut child, addr, _) = start_binary(&[
            "--config.file",
            path_arg,
            "--shard.count",
            "3",
            "--shard.index",
            index,
        ]);
        common::wait_ready(addr, Duration::from_secs(15));
        let samples = common::parse_samples(&common::get(addr, "/metrics").text());
        // Range ports have no series while closed as expected: count them per target instead.
        let counted: f64 = common::find(&samples, "port_target_ports", &[("target", "many")])
            .iter()
            .map(|s| s.value)
            .sum();
        let listed: Vec<(String, String)> =
            common::find(&samples, "port_state", &[("state", "closed")])
                .iter()
                .map(|s| (s.labels["target"].clone(), s.labels["port"].clone()))
                .collect();
        assert!(
            counted > 0.0 && counted < 40.0,
            "shard {index}: {counted} of 40"
        );
        seen.extend(listed);
        seen.extend((0..counted as usize).map(|i| ("many".to_string(), format!("{index}#{i}"))));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let many = seen.iter().filter(|(t, _)| t == "many").count();
    assert_eq!(
        many, 40,
        "the shards' range ports add up to the whole range"
    );
    let mut few: Vec<&str> = seen
        .iter()
        .filter(|(t, _)| t == "few")
        .map(|(_, p)| p.as_str())
        .collect();
    few.sort_unstable();
    assert_eq!(
        few,
        ["1", "2", "3"],
        "each listed port in exactly one shard"
    );

    let out = Command::new(EXE)
        .args(["--shard.count", "2", "--shard.index", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("shard index 2 out of range"));
}
