//! `--web.config.file`: TLS and basic auth as an operator sees them, through curl, promtool and
//! the binary. Certificates come from a test CA made here (rcgen) in a temp dir; every request
//! goes to 127.0.0.1.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use port_exporter::Options;
use port_exporter::web::security::WebConfig;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

const EXE: &str = env!("CARGO_BIN_EXE_port_exporter");

/// A temp dir with a server CA (`ca.crt`), a server certificate for 127.0.0.1
/// (`server.crt`, `server.key`), a client CA (`client-ca.crt`), a client certificate it signed
/// (`client.crt`, `client.key`), and a self-signed client certificate (`rogue.crt`,
/// `rogue.key`).
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        let (ca_pem, ca) = make_ca("port_exporter test server CA");
        write("ca.crt", &ca_pem);
        let (cert, key) = issue(
            Some(&ca),
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        write("server.crt", &cert);
        write("server.key", &key);
        let (client_ca_pem, client_ca) = make_ca("port_exporter test client CA");
        write("client-ca.crt", &client_ca_pem);
        let (cert, key) = issue(
            Some(&client_ca),
            &["scraper"],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        write("client.crt", &cert);
        write("client.key", &key);
        let (cert, key) = issue(None, &["rogue"], ExtendedKeyUsagePurpose::ClientAuth);
        write("rogue.crt", &cert);
        write("rogue.key", &key);
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Writes a web config file `name` in the dir; returns its path.
    fn web_config(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

fn make_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let pem = params.self_signed(&key).unwrap().pem();
    (pem, Issuer::new(params, key))
}

/// A certificate (PEM) and its key (PEM), signed by `ca` or self-signed.
fn issue(
    ca: Option<&Issuer<'static, KeyPair>>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "port_exporter test");
    params.extended_key_usages = vec![usage];
    let cert = match ca {
        Some(ca) => params.signed_by(&key, ca).unwrap(),
        None => params.self_signed(&key).unwrap(),
    };
    (cert.pem(), key.serialize_pem())
}

/// `basic_auth_users` with alice (password "wonderland") at bcrypt cost `cost`.
fn users(cost: u32) -> String {
    let hash = bcrypt::hash("wonderland", cost).unwrap();
    format!("basic_auth_users:\n  alice: {hash}\n")
}

const TLS: &str = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";

/// What curl did: its exit code, the HTTP status (0 when there was none), headers and body.
#[derive(Debug)]
struct Curl {
    exit: i32,
    status: u16,
    head: String,
    body: String,
    stderr: String,
}

fn curl(url: &str, args: &[&str]) -> Curl {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-i",
            "--max-time",
            "10",
            "-w",
            "\n__status=%{http_code}",
        ])
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("curl runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let (response, status) = stdout
        .rsplit_once("\n__status=")
        .expect("curl prints the status");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((response, ""));
    Curl {
        exit: out.status.code().unwrap_or(-1),
        status: status.trim().parse().unwrap_or(0),
        head: head.to_string(),
        body: body.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

/// Whether curl is here; prints SKIPPED (or panics under CI=true) when not.
fn have_curl() -> bool {
    common::have("curl") || !common::skip("curl is not installed")
}

/// An open port on 127.0.0.1 for the exporter to probe, and a config probing it.
fn target() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = format!("[[targets]]\nname = \"local\"\nhost = \"127.0.0.1\"\nports = [{port}]\n");
    (listener, config)
}

fn start_with_web_config(path: &Path) -> (common::Exporter, TcpListener) {
    let (listener, config) = target();
    let web_config = WebConfig::from_file(path).expect("the web config is valid");
    let options = Options {
        web_config: Some(web_config),
        ..Options::default()
    };
    (common::start_exporter_with(&config, options), listener)
}

fn https(addr: SocketAddr, path: &str) -> String {
    format!("https://{addr}{path}")
}

const ENDPOINTS: [&str; 4] = ["/metrics", "/", "/-/healthy", "/-/ready"];

#[test]
fn promtool_accepts_the_files_the_exporter_accepts_and_the_exporter_rejects_what_promtool_rejects()
{
    if !common::have("promtool") && common::skip("promtool is not installed") {
        return;
    }
    let pki = Pki::new();
    let good = [
        format!("{TLS}{}", users(10)),
        format!(
            "{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: client-ca.crt\n  \
             min_version: TLS12\n  max_version: TLS13\n  \
             cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384]\n  \
             prefer_server_cipher_suites: false\n  curve_preferences: [X25519, CurveP256]\n"
        ),
        format!(
            "{TLS}  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: client-ca.crt\n"
        ),
        format!("{TLS}  client_auth_type: RequireAnyClientCert\n"),
        format!(
            "http_server_config:\n  http2: false\n{}",
            bcrypt::hash_with_result("pw", 5)
                .map(|h| format!(
                    "basic_auth_users:\n  bob: '{}'\n",
                    h.format_for_version(bcrypt::Version::TwoY)
                ))
                .unwrap()
        ),
        String::new(),
    ];
    let hash = bcrypt::hash("pw", 4).unwrap();
    let bad = [
        ("unknown top-level field", format!("{TLS}unknown: 1\n")),
        ("unknown TLS field", format!("{TLS}  client_allowed_sans: [a]\n")),
        ("inline cert", format!("{TLS}  cert: x\n")),
        ("rate limit", "rate_limit:\n  burst: 1\n".to_string()),
        ("not a bcrypt hash", "basic_auth_users:\n  alice: secret\n".to_string()),
        (
            "bcrypt cost 3",
            "basic_auth_users:\n  a: $2b$03$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi\n"
                .to_string(),
        ),
        (
            "duplicate user",
            format!("basic_auth_users:\n  a: {hash}\n  a: {hash}\n"),
        ),
        ("unknown cipher", format!("{TLS}  cipher_suites: [NOPE]\n")),
        ("unknown curve", format!("{TLS}  curve_preferences: [P256]\n")),
        ("unknown TLS version", format!("{TLS}  min_version: TLS14\n")),
        ("unknown client auth", format!("{TLS}  client_auth_type: Always\n")),
        (
            "client CA without client auth",
            format!("{TLS}  client_ca_file: client-ca.crt\n"),
        ),
        (
            "missing cert file",
            "tls_server_config:\n  cert_file: nope.crt\n  key_file: server.key\n".to_string(),
        ),
        (
            "key file holds a certificate",
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.crt\n".to_string(),
        ),
        (
            "header that cannot be set",
            "http_server_config:\n  headers:\n    Foo: bar\n".to_string(),
        ),
        ("YAML syntax", "tls_server_config:\n  cert_file: \"a\n".to_string()),
    ];
    let promtool = |path: &Path| {
        let out = Command::new("promtool")
            .args(["check", "web-config"])
            .arg(path)
            .output()
            .expect("promtool runs");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    for (i, text) in good.iter().enumerate() {
        let path = pki.web_config(&format!("good-{i}.yml"), text);
        let ours = WebConfig::from_file(&path);
        assert!(ours.is_ok(), "{text}\nexporter: {:?}", ours.err());
        let (ok, output) = promtool(&path);
        assert!(ok, "{text}\npromtool: {output}");
    }
    for (what, text) in &bad {
        let path = pki.web_config("bad.yml", text);
        let (ok, output) = promtool(&path);
        assert!(!ok, "{what}: promtool accepts it after all: {output}");
        let ours = WebConfig::from_file(&path);
        assert!(
            ours.is_err(),
            "{what}: the exporter accepts it, promtool does not: {output}"
        );
    }
}

#[test]
fn basic_auth_guards_every_endpoint() {
    if !have_curl() {
        return;
    }
    let pki = Pki::new();
    let path = pki.web_config("web.yml", &format!("{TLS}{}", users(10)));
    let (exporter, _target) = start_with_web_config(&path);
    let cacert = pki.path("ca.crt");
    let with = |extra: &[&'static str]| -> Vec<String> {
        let mut args = vec!["--cacert".to_string(), cacert.clone()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let run = |path: &str, args: &[String]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&https(exporter.addr, path), &args)
    };
    for endpoint in ENDPOINTS {
        for (what, args) in [
            ("no credentials", with(&[])),
            ("a wrong password", with(&["-u", "alice:alice"])),
            ("an unknown user", with(&["-u", "mallory:wonderland"])),
            ("an empty password", with(&["-u", "alice:"])),
        ] {
            let response = run(endpoint, &args);
            assert_eq!(response.status, 401, "{endpoint} with {what}: {response:?}");
            assert!(
                response
                    .head
                    .to_ascii_lowercase()
                    .contains("www-authenticate: basic realm=\"port_exporter\""),
                "{endpoint} with {what}: {}",
                response.head
            );
            assert!(
                !response.body.contains("port_state"),
                "{endpoint}: {response:?}"
            );
        }
        let right = with(&["-u", "alice:wonderland"]);
        let deadline = Instant::now() + Duration::from_secs(15);
        let response = loop {
            let response = run(endpoint, &right);
            if response.status != 503 || Instant::now() > deadline {
                break response;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(
            response.status, 200,
            "{endpoint} with the right password: {response:?}"
        );
    }
    let metrics = run("/metrics", &with(&["-u", "alice:wonderland"]));
    assert!(metrics.body.contains("port_state{"), "{}", metrics.body);
    exporter.stop();
}

#[test]
fn tls_is_verified_against_the_test_ca() {
    if !have_curl() {
        return;
    }
    let pki = Pki::new();
    let path = pki.web_config("web.yml", TLS);
    let (exporter, _target) = start_with_web_config(&path);
    let url = https(exporter.addr, "/-/healthy");

    let verified = curl(&url, &["--cacert", &pki.path("ca.crt")]);
    assert_eq!(verified.status, 200, "{verified:?}");
    assert!(verified.body.contains("healthy"), "{verified:?}");

    // Without the test CA, curl cannot verify the server: exit 60, no response.
    let unverified = curl(&url, &[]);
    assert_eq!(unverified.status, 0, "{unverified:?}");
    assert_eq!(unverified.exit, 60, "{unverified:?}");
    assert!(unverified.stderr.contains("certificate"), "{unverified:?}");
    // Nor with another CA (the client CA did not sign the server's certificate).
    let other = curl(&url, &["--cacert", &pki.path("client-ca.crt")]);
    assert_eq!((other.status, other.exit), (0, 60), "{other:?}");

    // Plain HTTP gets no answer from a TLS port.
    let plain = curl(&format!("http://{}/-/healthy", exporter.addr), &[]);
    assert_eq!(plain.status, 0, "{plain:?}");
    assert_ne!(plain.exit, 0, "{plain:?}");

    // TLS 1.2 and 1.3 both work by default.
    for version in ["--tls-max", "--tlsv1.3"] {
        let args: &[&str] = if version == "--tls-max" {
            &["--tls-max", "1.2"]
        } else {
            &["--tlsv1.3"]
        };
        let mut args = args.to_vec();
        let cacert = pki.path("ca.crt");
        args.extend(["--cacert", &cacert]);
        let response = curl(&url, &args);
        assert_eq!(response.status, 200, "{args:?}: {response:?}");
    }
    exporter.stop();
}

#[test]
fn min_version_tls13_refuses_tls12_clients() {
    if !have_curl() {
        return;
    }
    let pki = Pki::new();
    let path = pki.web_config("web.yml", &format!("{TLS}  min_version: TLS13\n"));
    let (exporter, _target) = start_with_web_config(&path);
    let url = https(exporter.addr, "/-/healthy");
    let cacert = pki.path("ca.crt");
    let tls12 = curl(&url, &["--cacert", &cacert, "--tls-max", "1.2"]);
    assert_eq!(tls12.status, 0, "{tls12:?}");
    assert_ne!(tls12.exit, 0, "{tls12:?}");
    let tls13 = curl(&url, &["--cacert", &cacert, "--tlsv1.3"]);
    assert_eq!(tls13.status, 200, "{tls13:?}");
    exporter.stop();
}

#[test]
fn client_certificates_are_required_and_verified() {
    if !have_curl() {
        return;
    }
    let pki = Pki::new();
    let text = format!(
        "{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: client-ca.crt\n"
    );
    let path = pki.web_config("web.yml", &text);
    let (exporter, _target) = start_with_web_config(&path);
    let cacert = pki.path("ca.crt");
    let (client_crt, client_key) = (pki.path("client.crt"), pki.path("client.key"));
    let (rogue_crt, rogue_key) = (pki.path("rogue.crt"), pki.path("rogue.key"));
    for endpoint in ENDPOINTS {
        let url = https(exporter.addr, endpoint);
        let without = curl(&url, &["--cacert", &cacert]);
        assert_eq!(
            without.status, 0,
            "{endpoint} without a client cert: {without:?}"
        );
        assert_ne!(
            without.exit, 0,
            "{endpoint} without a client cert: {without:?}"
        );

        let rogue = curl(
            &url,
            &[
                "--cacert", &cacert, "--cert", &rogue_crt, "--key", &rogue_key,
            ],
        );
        assert_eq!(
            rogue.status, 0,
            "{endpoint} with a self-signed cert: {rogue:?}"
        );
        assert_ne!(
            rogue.exit, 0,
            "{endpoint} with a self-signed cert: {rogue:?}"
        );

        let signed = curl(
            &url,
            &[
                "--cacert",
                &cacert,
                "--cert",
                &client_crt,
                "--key",
                &client_key,
            ],
        );
        assert!(
            signed.status == 200 || (endpoint == "/-/ready" && signed.status == 503),
            "{endpoint} with a cert of the client CA: {signed:?}"
        );
    }
    // Over TLS 1.2 too, where the handshake itself fails without a certificate.
    let url = https(exporter.addr, "/-/healthy");
    let without = curl(&url, &["--cacert", &cacert, "--tls-max", "1.2"]);
    assert_eq!(
        (without.status, without.exit == 0),
        (0, false),
        "{without:?}"
    );
    let signed = curl(
        &url,
        &[
            "--cacert",
            &cacert,
            "--tls-max",
            "1.2",
            "--cert",
            &client_crt,
            "--key",
            &client_key,
        ],
    );
    assert_eq!(signed.status, 200, "{signed:?}");
    exporter.stop();
}

/// Runs the binary with `--web.config.file path` until it exits (at most 10 s); returns the
/// exit code and stderr.
fn run_binary(path: &Path) -> (Option<i32>, String) {
    let child = Command::new(EXE)
        .args(["--web.listen-address", "127.0.0.1:0", "--web.config.file"])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !waiter.is_finished() {
        if Instant::now() > deadline {
            // It kept running: it accepted the file. Stop it and report no exit code.
            let _ = Command::new("kill").arg(pid.to_string()).status();
            let out = waiter.join().unwrap();
            return (None, String::from_utf8_lossy(&out.stderr).into_owned());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = waiter.join().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_binary_exits_1_before_binding_on_a_bad_web_config() {
    let pki = Pki::new();
    let bad = pki.web_config("bad.yml", "basic_auth_users:\n  alice: not-a-bcrypt-hash\n");
    let (code, stderr) = run_binary(&bad);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("bad.yml"), "{stderr}");
    assert!(stderr.contains("alice"), "{stderr}");
    assert!(!stderr.contains("port_exporter started"), "{stderr}");

    let unknown = pki.web_config(
        "unknown.yml",
        "tls_server_config:\n  cert_fil: server.crt\n",
    );
    let (code, stderr) = run_binary(&unknown);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("unknown.yml:2:"), "{stderr}");
    assert!(!stderr.contains("port_exporter started"), "{stderr}");

    let (code, stderr) = run_binary(&pki.dir.path().join("missing.yml"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("missing.yml: cannot read web config file"),
        "{stderr}"
    );
}

#[test]
fn the_binary_serves_https_with_basic_auth() {
    if !have_curl() {
        return;
    }
    let pki = Pki::new();
    let path = pki.web_config("web.yml", &format!("{TLS}{}", users(10)));
    let (mut child, addr, _) = common::start_binary(&["--web.config.file", path.to_str().unwrap()]);
    let url = https(addr, "/-/healthy");
    let cacert = pki.path("ca.crt");
    let denied = curl(&url, &["--cacert", &cacert]);
    let allowed = curl(&url, &["--cacert", &cacert, "-u", "alice:wonderland"]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(denied.status, 401, "{denied:?}");
    assert_eq!(allowed.status, 200, "{allowed:?}");
}
