//! Security: the exporter needs no privileges; `/probe` is not an SSRF relay, whatever spelling
//! or name a target comes in; basic auth guards every endpoint, the ones that act included.
//!
//! Extends tests/operations.rs (`probe_refuses_what_the_allow_list_does_not_name_and_never_
//! connects`: the allow list on 127.0.0.1, `[::ffff:127.0.0.2]`, `[::1]`, `127.2` and
//! `2130706434`) and tests/web_config.rs (`basic_auth_guards_every_endpoint`: /metrics, /,
//! /-/healthy, /-/ready over TLS with curl).

mod common;

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Child;
use std::time::Duration;

use common::netns::{EXPORTER_ADDR, Netns, start_exporter_in};
use common::*;
use port_exporter::Options;
use port_exporter::web::security::WebConfig;

// ---------------------------------------------------------------------------------------------
// No privileges

/// The binary behind `wrapper`, on 127.0.0.1:0; killed on drop.
struct Binary {
    child: Child,
    addr: SocketAddr,
}

impl Binary {
    fn start(wrapper: &[&str], args: &[&str]) -> Binary {
        let (child, addr, _) = common::start_binary_behind(wrapper, args);
        Binary { child, addr }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status_line(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field}"))
        .trim()
        .to_string()
}

#[test]
fn as_nobody_without_capabilities_it_probes_and_serves() {
    if !nix::unistd::geteuid().is_root() && skip("needs root to drop to another user") {
        return;
    }
    if !have("setpriv") && skip("needs setpriv (util-linux)") {
        return;
    }
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let open_port = open.local_addr().unwrap().port().to_string();
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    // A config user 65534 can read.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ports.toml");
    std::fs::write(
        &config,
        format!("[[targets]]\nname = \"local\"\nhost = \"127.0.0.1\"\nports = [{open_port}, {closed_port}]\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();

    let binary = Binary::start(
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
        ],
        &["--config.file", config.to_str().unwrap()],
    );
    let pid = binary.child.id();
    assert_eq!(status_line(pid, "Uid"), "65534\t65534\t65534\t65534");
    assert_eq!(status_line(pid, "Gid"), "65534\t65534\t65534\t65534");
    assert_eq!(status_line(pid, "Groups"), "");
    for caps in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_line(pid, caps), "0000000000000000", "{caps}");
    }
    assert_eq!(status_line(pid, "NoNewPrivs"), "1");

    wait_ready(binary.addr, Duration::from_secs(10));
    let samples = parse_samples(&get(binary.addr, "/metrics").text());
    assert_eq!(state_of(&samples, &[("port", open_port.as_str())]), "open");
    assert_eq!(
        state_of(&samples, &[("port", closed_port.as_str())]),
        "closed"
    );
    assert_eq!(get(binary.addr, "/-/healthy").status, 200);
    assert_eq!(get(binary.addr, "/").status, 200);
    drop(open);
}

// ---------------------------------------------------------------------------------------------
// /probe: names and spellings

/// The namespace's name (Netns keeps it private): the /run/netns entry with its inode.
fn ns_name(ns: &Netns) -> String {
    use std::os::unix::fs::MetadataExt;
    let inode = ns.enter(|| std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino());
    std::fs::read_dir("/run/netns")
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| std::fs::metadata(e.path()).is_ok_and(|m| m.ino() == inode))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .expect("the namespace is in /run/netns")
}

#[test]
fn probe_refuses_names_resolving_outside_the_allow_list_and_every_spelling_of_a_refused_address() {
    if !nix::unistd::geteuid().is_root() && skip("needs root to create network namespaces") {
        return;
    }
    if !have("ip") && skip("needs ip (iproute2)") {
        return;
    }
    let ns = Netns::create("sec");
    // Names in the namespace's hosts file: one outside the allow list, one with an address
    // on each side, one as an IPv4-mapped IPv6 address, one inside.
    let hosts = Path::new("/etc/netns").join(ns_name(&ns)).join("hosts");
    let mut text = std::fs::read_to_string(&hosts).unwrap();
    text.push_str(
        "127.0.0.2 evil.lab\n127.0.0.1 mixed.lab\n127.0.0.2 mixed.lab\n::ffff:127.0.0.2 mapped.lab\n127.0.0.1 good.lab\n",
    );
    std::fs::write(&hosts, text).unwrap();
    // The bait: every address of the namespace, IPv4 and IPv6, on one port. Any connection
    // to that port, whatever address it was spelled as, lands here.
    let bait = ns.enter(|| TcpListener::bind("[::]:7777").expect("bind the bait"));
    bait.set_nonblocking(true).unwrap();
    // An allowed target with a listener of its own, for the control.
    let _control = ns.listen(7778);

    let dir = tempfile::tempdir().unwrap();
    let _exporter = start_exporter_in(
        &ns,
        dir.path(),
        "[defaults]\ntimeout = \"500ms\"\nretries = 0\n[probe]\nallow = [\"127.0.0.1\"]\n",
        Duration::from_secs(10),
    );
    let probe = |target: &str| ns.get(EXPORTER_ADDR, &format!("/probe?target={target}"));

    // The control: an allowed name is probed.
    let allowed = probe("good.lab:7778");
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    assert!(
        allowed.text().contains("state=\"open\"} 1"),
        "{}",
        allowed.text()
    );

    let forbidden = [
        // names resolving outside the list, or partly outside, or not at all
        "evil.lab:7777",
        "EVIL.Lab:7777",
        "mixed.lab:7777",
        "mapped.lab:7777",
        "unknown.lab:7777",
        // inet_aton's spellings of 127.0.0.2 (decimal, hex, octal, short forms)
        "2130706434:7777",
        "0x7f000002:7777",
        "0x7f.0.0.2:7777",
        "0x7F.0x0.0x0.0x2:7777",
        "0177.0.0.2:7777",
        "0177.0000.0000.0002:7777",
        "127.0.0.02:7777",
        "127.0.2:7777",
        "127.2:7777",
        // "this host" (connecting to it reaches loopback)
        "0.0.0.0:7777",
        "0:7777",
        "[::]:7777",
        // IPv6 spellings: mapped (several forms), compatible, NAT64, loopback
        "[::ffff:127.0.0.2]:7777",
        "[::ffff:7f00:2]:7777",
        "[0:0:0:0:0:ffff:127.0.0.2]:7777",
        "[::FFFF:127.0.0.2]:7777",
        "[::127.0.0.2]:7777",
        "[64:ff9b::7f00:2]:7777",
        "[::1]:7777",
        // percent-encoded
        "%31%32%37%2e%30%2e%30%2e%32:7777",
        "127%2E0%2E0%2E2%3A7777",
        "%5B%3A%3Affff%3A127.0.0.2%5D:7777",
        "evil%2Elab:7777",
    ];
    for target in forbidden {
        let response = probe(target);
        assert_eq!(response.status, 403, "{target}: {}", response.text());
        assert!(
            response.text().contains("not allowed"),
            "{target}: {}",
            response.text()
        );
    }
    // Spellings that are not addresses at all: 400, and no connection either.
    for target in [
        "evil.lab.:7777",
        "%2565vil.lab:7777",
        "[::ffff:127.0.0.2%25lo]:7777",
        "[fe80::1%25lo]:7777",
        "127.0.0.2%2F32:7777",
    ] {
        let response = probe(target);
        assert_eq!(response.status, 400, "{target}: {}", response.text());
    }
    match bait.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("a refused target was connected to: {other:?}"),
    }
    // The bait does catch a probe that gets through (so the check above can fail).
    assert_eq!(probe("127.0.0.1:7777").status, 200);
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        bait.accept().is_ok(),
        "the control probe did not reach the bait"
    );
}

// ---------------------------------------------------------------------------------------------
// Basic auth on the endpoints that act

#[test]
fn basic_auth_guards_probe_config_and_reload_and_a_refused_request_does_nothing() {
    let bait = TcpListener::bind("127.0.0.2:0").unwrap();
    bait.set_nonblocking(true).unwrap();
    let bait_port = bait.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("ports.toml");
    let first = "[defaults]\ntimeout = \"500ms\"\n[probe]\nallow = [\"127.0.0.0/8\"]\n";
    std::fs::write(&config_path, first).unwrap();
    let hash = bcrypt::hash("wonderland", 4).unwrap();
    let web_config = WebConfig::parse(
        &format!("basic_auth_users:\n  alice: {hash}\n"),
        "web.yml",
        dir.path(),
    )
    .expect("the web config is valid");
    let exporter = start_exporter_with(
        first,
        Options {
            web_config: Some(web_config),
            config_file: Some(config_path.clone()),
            ..Options::default()
        },
    );
    let addr = exporter.addr;
    // A new config on disk: a reload that got through would show it at /config.
    let second = format!("{first}# reloaded\n");
    std::fs::write(&config_path, &second).unwrap();

    let right = format!("Basic {}", common::base64(b"alice:wonderland"));
    let huge = format!("Basic {}", common::base64(&vec![b'a'; 40_000]));
    let wrong_credentials = [
        None,
        Some(format!("Basic {}", common::base64(b"alice:alice"))),
        Some(format!("Basic {}", common::base64(b"mallory:wonderland"))),
        Some(format!("Basic {}", common::base64(b"alice:"))),
        Some(format!("Basic {}", common::base64(b"alice"))),
        Some(format!("Basic {}", common::base64(b":wonderland"))),
        Some(format!("Basic {}", common::base64(b"alice:wonderland\0"))),
        Some(format!("Basic {}", common::base64(b"ALICE:wonderland"))),
        Some("Basic".to_string()),
        Some("Basic !!!!".to_string()),
        Some(format!("Bearer {}", common::base64(b"alice:wonderland"))),
        Some(format!("Digest {}", common::base64(b"alice:wonderland"))),
        Some(huge),
    ];
    let probe_path = format!("/probe?target=127.0.0.2:{bait_port}");
    let requests: [(&str, &str); 7] = [
        ("GET", probe_path.as_str()),
        ("GET", "/config"),
        ("POST", "/-/reload"),
        ("PUT", "/-/reload"),
        ("GET", "/-/reload"),
        ("HEAD", "/metrics"),
        ("GET", "/no-such-page"),
    ];
    for (method, path) in requests {
        for authorization in &wrong_credentials {
            let mut headers = vec![("Content-Length", "0")];
            if let Some(value) = authorization {
                headers.push(("Authorization", value.as_str()));
            }
            let response = http(addr, method, path, &headers);
            let shown = authorization.as_deref().map(|a| &a[..a.len().min(40)]);
            assert_eq!(response.status, 401, "{method} {path} with {shown:?}");
            assert_eq!(
                response.headers["www-authenticate"], "Basic realm=\"port_exporter\"",
                "{method} {path}"
            );
            let body = response.text();
            assert!(
                !body.contains("allow") && !body.contains("port_state") && !body.contains("reload"),
                "{method} {path} leaks: {body}"
            );
        }
    }
    // Nothing happened: no probe connected, no reload took the new file.
    match bait.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("an unauthenticated /probe connected: {other:?}"),
    }
    let with = |method: &str, path: &str| {
        http(
            addr,
            method,
            path,
            &[("Authorization", right.as_str()), ("Content-Length", "0")],
        )
    };
    assert_eq!(with("GET", "/config").text(), first);
    // With the right credentials each does what it says.
    let probe = with("GET", &probe_path);
    assert_eq!(probe.status, 200, "{}", probe.text());
    assert!(
        bait.accept().is_ok(),
        "the authorized probe did not connect"
    );
    let reload = with("POST", "/-/reload");
    assert_eq!(reload.status, 200, "{}", reload.text());
    assert_eq!(with("GET", "/config").text(), second);
    assert_eq!(with("GET", "/-/reload").status, 405);
    assert_eq!(with("GET", "/no-such-page").status, 404);
    exporter.stop();
}
