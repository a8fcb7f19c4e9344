//! Every invalid config fixture is rejected with its exact message (file, line, column, what
//! was expected), by the library and by `port_exporter --config.check`.

use std::path::Path;
use std::process::Command;

use port_exporter::config::Config;

const FIXTURES: &str = "tests/fixtures/invalid";

/// Fixture name and the message after "FILE:" — line:column: what is wrong.
const CASES: &[(&str, &str)] = &[
    (
        "bad_expect",
        "2:10: unknown variant `opened`, expected one of `open`, `closed`, `filtered`, `open|filtered`, `not_open`, `any`",
    ),
    (
        "bad_protocol",
        "4:12: unknown variant `sctp`, expected `tcp` or `udp`",
    ),
    (
        "bad_host",
        "2:8: invalid host \"exa mple.org\": expected a DNS name, an IPv4 or an IPv6 address",
    ),
    (
        "bad_interval",
        "2:12: invalid interval \"15\": expected a duration such as \"500ms\", \"15s\", \"1m30s\"",
    ),
    (
        "bad_label_name",
        "4:10: invalid label name \"1team\": expected [a-zA-Z_][a-zA-Z0-9_]* not starting with \"__\"",
    ),
    (
        "duplicate_host_as_name",
        "6:8: duplicate target name \"a\": names must be unique",
    ),
    (
        "duplicate_name",
        "7:8: duplicate target name \"web\": names must be unique",
    ),
    ("exclude_everything", "4:11: exclude removes every port"),
    (
        "exclude_not_in_ports",
        "4:16: exclude: port 200 is not in ports (or excluded twice)",
    ),
    (
        "open_filtered_on_tcp",
        "1:1: target \"127.0.0.1\": expect \"open|filtered\" is a UDP state: only for protocol = \"udp\"",
    ),
    (
        "probe_bad_prefix",
        "2:10: invalid network \"127.0.0.0/33\": the prefix length must be 0 to 32",
    ),
    (
        "probe_bad_pattern",
        "2:10: invalid allow entry \"http://x\": expected an address, a network such as \"10.0.0.0/8\", or a host name pattern such as \"*.example.org\"",
    ),
    (
        "probe_unknown_field",
        "3:1: unknown field `timeout`, expected `allow`",
    ),
    (
        "bad_close",
        "2:9: unknown variant `fin`, expected `reset` or `graceful`",
    ),
    ("empty_host", "2:8: host must not be empty"),
    ("empty_name", "2:8: target name must not be empty"),
    ("empty_ports", "3:9: ports must list at least one port"),
    (
        "label_not_string",
        "4:19: invalid type: integer `1`, expected a string",
    ),
    ("missing_host", "1:1: missing field `host`"),
    ("missing_ports", "1:1: missing field `ports`"),
    (
        "negative_retries",
        "2:11: invalid value: integer `-1`, expected u32",
    ),
    (
        "port_float",
        "3:10: invalid type: floating point `80.5`, expected a port number or a \"lo-hi\" range string",
    ),
    (
        "port_too_high",
        "3:10: port 70000 out of range: expected 1 to 65535",
    ),
    ("port_twice", "3:14: port 22 is listed more than once"),
    (
        "port_zero",
        "3:14: port 0 out of range: expected 1 to 65535",
    ),
    (
        "ports_not_array",
        "3:9: invalid type: integer `80`, expected a sequence",
    ),
    (
        "range_malformed",
        "3:10: invalid port range \"80:90\": expected \"lo-hi\", e.g. \"8000-8010\"",
    ),
    (
        "range_reversed",
        "3:10: invalid port range \"90-80\": the first port must not exceed the last",
    ),
    (
        "range_too_high",
        "3:10: port 65536 out of range: expected 1 to 65535",
    ),
    (
        "min_timeout_exceeds_timeout",
        "7:15: min_timeout 1s must not exceed timeout 500ms",
    ),
    (
        "reserved_label",
        "4:10: label name \"port\" is reserved: the exporter sets it",
    ),
    ("syntax_error", "3:12: unclosed array, expected `]`"),
    (
        "timeout_exceeds_interval",
        "5:11: target \"a\": timeout x (retries + 1) = 4s must not exceed interval 3s",
    ),
    (
        "too_many_retries",
        "2:11: retries 11 too high: expected 0 to 10",
    ),
    (
        "too_many_max_retries",
        "2:15: max_retries 50 too high: expected 0 to 20",
    ),
    (
        "udp_query_of_two_steps",
        "5:9: query has 2 steps: a UDP query is one step (the datagram sent, the reply expected)",
    ),
    (
        "udp_service_check",
        "5:11: target \"127.0.0.1\": service and tls are TCP service checks: not for protocol = \"udp\" (a query of one step is)",
    ),
    (
        "unknown_defaults_field",
        "3:1: unknown field `colour`, expected one of `interval`, `timeout`, `retries`, `timing`, `min_timeout`, `max_retries`, `expect`, `close`, `ip_protocol`, `protocol`, `source_address`, `service`, `tls`, `query`",
    ),
    (
        "unknown_field",
        "4:1: unknown field `prots`, expected one of `name`, `host`, `ports`, `exclude`, `expect`, `labels`, `interval`, `timeout`, `retries`, `timing`, `min_timeout`, `max_retries`, `close`, `ip_protocol`, `protocol`, `source_address`, `service`, `tls`, `query`",
    ),
    (
        "unknown_timing",
        "4:10: unknown variant `fast`, expected `adaptive` or `fixed`",
    ),
    (
        "unknown_section",
        "1:2: unknown field `global`, expected one of `defaults`, `targets`, `probe`",
    ),
    ("zero_timeout", "2:11: timeout must be greater than zero"),
    (
        "service_unknown",
        "4:11: invalid service \"postgres\": expected \"auto\", \"tls\" or a service name: ssh, http, smtp, imap, pop3, ftp, mysql, postgresql, redis",
    ),
    (
        "service_timeout_exceeds_interval",
        "5:12: target \"db\": timeout x (retries + 2) = 6s must not exceed interval 4s (a service check takes up to one more timeout)",
    ),
    (
        "tls_unknown_field",
        "6:1: unknown field `sni`, expected one of `server_name`, `ca_file`, `insecure_skip_verify`",
    ),
    (
        "tls_bad_server_name",
        "6:15: invalid tls.server_name \"not a name\": expected a DNS name or an IP address",
    ),
    (
        "tls_ca_file_missing",
        "2:19: tls.ca_file \"no-such-ca.pem\": cannot read: No such file or directory (os error 2)",
    ),
    (
        "tls_ca_file_not_pem",
        "5:19: tls.ca_file \"tls_ca_file_missing.toml\": no PEM certificate in it",
    ),
    (
        "query_bad_regex",
        "4:40: invalid expect regex \"(PONG\": unclosed group",
    ),
    (
        "query_send_and_send_hex",
        "5:28: a query step takes send or send_hex, not both",
    ),
    (
        "query_bad_hex",
        "4:23: invalid send_hex \"0000000804d2162\": expected pairs of hex digits such as \"0000000804d2162f\"",
    ),
    (
        "query_empty_step",
        "4:29: a query step needs send, send_hex or expect",
    ),
    ("query_empty", "4:9: query must list at least one step"),
    (
        "query_unknown_field",
        "4:27: unknown field `reply`, expected one of `send`, `send_hex`, `expect`",
    ),
    (
        "bad_ip_protocol",
        "4:15: unknown variant `ip4`, expected one of `both`, `ipv4`, `ipv6`",
    ),
    (
        "host_family_not_ip_protocol",
        "2:8: host 10.0.0.1 is an IPv4 address but ip_protocol = \"ipv6\"",
    ),
    (
        "host_family_not_defaults_ip_protocol",
        "5:8: host ::1 is an IPv6 address but ip_protocol = \"ipv4\"",
    ),
    (
        "bad_source_address",
        "4:18: invalid source_address \"eth0\": expected an IPv4 or an IPv6 address",
    ),
    (
        "source_address_unspecified",
        "2:18: invalid source_address 0.0.0.0: expected an address of this machine, not an unspecified or multicast one",
    ),
    (
        "source_address_not_string",
        "4:18: invalid type: integer `1`, expected a string",
    ),
    (
        "source_address_not_ip_protocol",
        "5:18: source_address 198.18.0.2 is an IPv4 address but ip_protocol = \"ipv6\"",
    ),
    (
        "defaults_source_address_not_ip_protocol",
        "3:18: source_address fd00::2 is an IPv6 address but ip_protocol = \"ipv4\"",
    ),
    (
        "defaults_source_address_not_target_ip_protocol",
        "7:15: source_address 198.18.0.2 of [defaults] is an IPv4 address but ip_protocol = \"ipv6\"",
    ),
    (
        "host_family_not_source_address",
        "5:8: host ::1 is an IPv6 address but source_address 198.18.0.2 is an IPv4 address",
    ),
];

fn fixture(name: &str) -> String {
    format!("{FIXTURES}/{name}.toml")
}

#[test]
fn every_fixture_has_a_case_and_every_case_a_fixture() {
    let mut on_disk: Vec<String> = std::fs::read_dir(FIXTURES)
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = CASES.iter().map(|(name, _)| name.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}

#[test]
fn each_invalid_config_is_rejected_with_its_message() {
    for (name, message) in CASES {
        let path = fixture(name);
        let error = Config::from_file(Path::new(&path)).expect_err(&path);
        assert_eq!(
            error.to_string(),
            format!("{path}:{message}"),
            "fixture {name}"
        );
    }
}

#[test]
fn config_check_exits_non_zero_with_the_message() {
    let exe = env!("CARGO_BIN_EXE_port_exporter");
    for (name, message) in CASES {
        let path = fixture(name);
        let out = Command::new(exe)
            .args(["--config.check", "--config.file", &path])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "fixture {name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("{path}:{message}")),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn config_check_accepts_the_examples_and_the_embedded_default() {
    let exe = env!("CARGO_BIN_EXE_port_exporter");
    let mut configs: Vec<Vec<String>> = std::fs::read_dir("examples")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| vec!["--config.file".to_string(), p.display().to_string()])
        .collect();
    assert!(!configs.is_empty(), "examples/ holds at least one config");
    configs.push(vec![]);
    for args in configs {
        let out = Command::new(exe)
            .arg("--config.check")
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("config OK"));
    }
}

#[test]
fn a_missing_file_is_an_error_naming_it() {
    let error = Config::from_file(Path::new("tests/fixtures/no-such-file.toml")).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("tests/fixtures/no-such-file.toml: cannot read config file")
    );
}

#[test]
fn a_bad_config_binds_nothing_and_exits_non_zero() {
    let exe = env!("CARGO_BIN_EXE_port_exporter");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let out = Command::new(exe)
        .args([
            "--config.file",
            &fixture("port_zero"),
            "--web.listen-address",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("port 0 out of range"));
    // The port is still free: nothing was bound.
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("port still free");
}
