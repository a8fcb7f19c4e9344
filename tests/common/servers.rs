//! Real servers from Debian packages, started inside a test's network namespace: OpenSSH,
//! nginx (plain HTTP, and HTTPS with a valid and with an expired certificate), PostgreSQL (TLS
//! through its SSLRequest), Redis, MariaDB, Dovecot (IMAP and POP3 with STARTTLS) and Exim
//! (SMTP with STARTTLS). Each listens on a port of its own on 127.0.0.1 inside the namespace;
//! its config, data and logs live in a temp dir; it is stopped (its own stop signal, then
//! SIGKILL after a bounded wait) and reaped on drop. Certificates come from a CA made here
//! (rcgen). The oracles: `nmap -sT -sV --script ssl-cert` for service names, TLS tunnels and
//! certificate dates, `openssl x509 -enddate` for each certificate's notAfter, and
//! `openssl s_client` for the TLS version and whether the chain verifies.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::netns::Netns;
use super::skip;

// The lab's ports, one per server (and per nginx server block), below the ephemeral range.
pub const SSH: u16 = 10022;
pub const SMTP: u16 = 10025;
pub const HTTP: u16 = 10080;
pub const POP3: u16 = 10110;
pub const IMAP: u16 = 10143;
pub const HTTPS_VALID: u16 = 10443;
pub const HTTPS_EXPIRED: u16 = 10444;
pub const MYSQL: u16 = 13306;
pub const POSTGRESQL: u16 = 15432;
pub const REDIS: u16 = 16379;

/// How TLS is spoken on a port: not at all, from the first byte (nmap's `ssl/...`), or after
/// the protocol's own upgrade (STARTTLS, PostgreSQL's SSLRequest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsKind {
    None,
    Implicit,
    StartTls,
}

impl TlsKind {
    /// The exporter's `tls` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsKind::None => "none",
            TlsKind::Implicit => "implicit",
            TlsKind::StartTls => "starttls",
        }
    }
}

/// What the lab runs on each port: (port, server, nmap's service name, TLS, the `-starttls`
/// word of `openssl s_client` where TLS comes after an upgrade).
pub const LAB: [(u16, &str, &str, TlsKind, Option<&str>); 10] = [
    (SSH, "OpenSSH", "ssh", TlsKind::None, None),
    (SMTP, "Exim", "smtp", TlsKind::StartTls, Some("smtp")),
    (HTTP, "nginx", "http", TlsKind::None, None),
    (POP3, "Dovecot", "pop3", TlsKind::StartTls, Some("pop3")),
    (IMAP, "Dovecot", "imap", TlsKind::StartTls, Some("imap")),
    (
        HTTPS_VALID,
        "nginx (valid cert)",
        "http",
        TlsKind::Implicit,
        None,
    ),
    (
        HTTPS_EXPIRED,
        "nginx (expired cert)",
        "http",
        TlsKind::Implicit,
        None,
    ),
    (MYSQL, "MariaDB", "mysql", TlsKind::None, None),
    (
        POSTGRESQL,
        "PostgreSQL",
        "postgresql",
        TlsKind::StartTls,
        Some("postgres"),
    ),
    (REDIS, "Redis", "redis", TlsKind::None, None),
];

pub fn lab_ports() -> Vec<u16> {
    LAB.iter().map(|row| row.0).collect()
}

/// The programs the lab runs, by absolute path (sbin is not always on a test's PATH).
const SSHD: &str = "/usr/sbin/sshd";
const SSH_KEYGEN: &str = "/usr/bin/ssh-keygen";
const NGINX: &str = "/usr/sbin/nginx";
const REDIS_SERVER: &str = "/usr/bin/redis-server";
const MARIADBD: &str = "/usr/sbin/mariadbd";
const MARIADB_INSTALL_DB: &str = "/usr/bin/mariadb-install-db";
const DOVECOT: &str = "/usr/sbin/dovecot";
const EXIM: &str = "/usr/sbin/exim4";
const SETPRIV: &str = "/usr/bin/setpriv";
pub const OPENSSL: &str = "/usr/bin/openssl";
pub const NMAP: &str = "/usr/bin/nmap";

/// The users the packages create and their servers run as.
const USERS: [&str; 3] = ["postgres", "mysql", "Debian-exim"];

/// Returns false (after printing SKIPPED, or panicking under CI=true) when the servers cannot
/// run here: not root, or a program or user of the packages missing.
pub fn servers_available() -> bool {
    if !nix::unistd::geteuid().is_root() {
        return !skip("service lab tests need root (network namespaces, servers' own users)");
    }
    if !super::have("ip") {
        return !skip("service lab tests need ip (iproute2) on PATH");
    }
    for program in [
        SSHD,
        SSH_KEYGEN,
        NGINX,
        REDIS_SERVER,
        MARIADBD,
        MARIADB_INSTALL_DB,
        DOVECOT,
        EXIM,
        SETPRIV,
        OPENSSL,
        NMAP,
    ] {
        if !Path::new(program).exists() {
            return !skip(&format!(
                "service lab tests need {program} (Debian packages openssh-server nginx \
                 postgresql redis-server mariadb-server dovecot-imapd dovecot-pop3d \
                 exim4-daemon-light openssl nmap)"
            ));
        }
    }
    if postgres_bin().is_none() {
        return !skip("service lab tests need PostgreSQL (/usr/lib/postgresql/*/bin/postgres)");
    }
    for tool in ["prometheus", "promtool"] {
        if !super::have(tool) {
            return !skip(&format!(
                "service lab tests need {tool} on PATH (Debian package prometheus): the shipped \
                 alert rules run in a real Prometheus"
            ));
        }
    }
    for user in USERS {
        if nix::unistd::User::from_name(user).ok().flatten().is_none() {
            return !skip(&format!("service lab tests need the system user {user}"));
        }
    }
    true
}

/// The newest installed PostgreSQL's bin dir.
fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

const DAY: u64 = 86_400;

/// A CA and two server certificates it signed for `localhost` and 127.0.0.1: one valid, one
/// expired. `*-chain.crt` is the leaf followed by the CA, as the servers send it.
pub struct Pki {
    pub ca: PathBuf,
    pub valid: PathBuf,
    pub valid_chain: PathBuf,
    pub valid_key: PathBuf,
    pub expired: PathBuf,
    pub expired_chain: PathBuf,
    pub expired_key: PathBuf,
    /// The notAfter the certificates were made with, in Unix seconds.
    pub ca_not_after: i64,
    pub valid_not_after: i64,
    pub expired_not_after: i64,
}

impl Pki {
    fn create(dir: &Path) -> Pki {
        fs::create_dir_all(dir).unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let at = |secs: u64| rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(secs);
        // Odd seconds in every date, so that a rounding anywhere shows.
        let ca_not_after = now + 3650 * DAY + 7;
        let valid_not_after = now + 90 * DAY + 1234;
        let expired_not_after = now - 30 * DAY - 4321;

        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "port_exporter lab CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = at(now - 400 * DAY);
        params.not_after = at(ca_not_after);
        let ca_pem = params.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(params, ca_key);

        let leaf = |not_before: u64, not_after: u64| {
            let key = KeyPair::generate().unwrap();
            let mut params =
                CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                    .unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, "localhost");
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.not_before = at(not_before);
            params.not_after = at(not_after);
            let cert = params.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (valid, valid_key) = leaf(now - DAY, valid_not_after);
        let (expired, expired_key) = leaf(now - 400 * DAY, expired_not_after);

        let write = |name: &str, text: &str, mode: u32| {
            let path = dir.join(name);
            fs::write(&path, text).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            path
        };
        Pki {
            ca: write("ca.crt", &ca_pem, 0o644),
            valid: write("valid.crt", &valid, 0o644),
            valid_chain: write("valid-chain.crt", &format!("{valid}{ca_pem}"), 0o644),
            valid_key: write("valid.key", &valid_key, 0o600),
            expired: write("expired.crt", &expired, 0o644),
            expired_chain: write("expired-chain.crt", &format!("{expired}{ca_pem}"), 0o644),
            expired_key: write("expired.key", &expired_key, 0o600),
            ca_not_after: ca_not_after as i64,
            valid_not_after: valid_not_after as i64,
            expired_not_after: expired_not_after as i64,
        }
    }

    /// The earliest notAfter of the chain a port's server sends.
    pub fn chain_not_after(&self, port: u16) -> i64 {
        let leaf = if port == HTTPS_EXPIRED {
            self.expired_not_after
        } else {
            self.valid_not_after
        };
        leaf.min(self.ca_not_after)
    }

    /// The leaf certificate file a port's server sends.
    pub fn leaf_of(&self, port: u16) -> &Path {
        if port == HTTPS_EXPIRED {
            &self.expired
        } else {
            &self.valid
        }
    }
}

/// When a server counts as started.
enum Ready {
    /// It accepts a connection on every port.
    Accepts,
    /// It accepts, and greets on each port (in the order of its ports) with a line that starts
    /// with this.
    Greets(&'static [&'static str]),
    /// It accepts, and its log has this line (PostgreSQL listens before it takes sessions).
    Logged(&'static str),
}

/// One server process in the namespace: stopped with `stop` (then SIGKILL) and reaped on drop.
pub struct Server {
    pub name: &'static str,
    pub ports: Vec<u16>,
    child: Child,
    log: PathBuf,
    stop: Signal,
}

impl Server {
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls until the server is ready (bounded by `limit`); panics with its log if it exits
    /// or never is.
    fn wait_ready(&mut self, ns: &Netns, ready: Ready, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{} exited ({status}); log:\n{}", self.name, self.log());
            }
            let logged = match ready {
                Ready::Logged(line) => self.log().contains(line),
                _ => true,
            };
            let greeting = |i: usize| match ready {
                Ready::Greets(prefixes) => Some(prefixes[i]),
                _ => None,
            };
            if logged
                && self
                    .ports
                    .iter()
                    .enumerate()
                    .all(|(i, &port)| answers(ns, port, greeting(i)))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready on {:?} within {limit:?}; log:\n{}",
                self.name,
                self.ports,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = kill(pid, self.stop);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if self.child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Whether 127.0.0.1:`port` in `ns` accepts a connection (and greets with `greeting`).
fn answers(ns: &Netns, port: u16, greeting: Option<&'static str>) -> bool {
    ns.enter(move || {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
            return false;
        };
        let Some(prefix) = greeting else {
            return true;
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buffer = vec![0; 256];
        let mut got = 0;
        while got < prefix.len() {
            match stream.read(&mut buffer[got..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        buffer[..got].starts_with(prefix.as_bytes())
    })
}

/// Every lab server, running in one namespace, with its files in a temp dir of its own. On
/// drop the servers stop first, then whatever they left in the namespace is killed, then the
/// dir goes.
pub struct Servers {
    servers: Vec<Server>,
    namespace: String,
    pub pki: Pki,
    dir: tempfile::TempDir,
}

impl Servers {
    /// Starts every server of [`LAB`] in `ns` and waits until each one is ready.
    pub fn start(ns: &Netns) -> Servers {
        let dir = tempfile::tempdir().unwrap();
        // The servers' own users (postgres, mysql, Debian-exim, dovecot) must reach their files.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let pki = Pki::create(&dir.path().join("pki"));
        let mut lab = Servers {
            servers: Vec::new(),
            namespace: ns.name().to_string(),
            pki,
            dir,
        };
        let limit = Duration::from_secs(60);
        let started = Instant::now();
        lab.start_sshd(ns, limit);
        lab.start_nginx(ns, limit);
        lab.start_postgres(ns, limit);
        lab.start_redis(ns, limit);
        lab.start_mariadb(ns, limit);
        lab.start_dovecot(ns, limit);
        lab.start_exim(ns, limit);
        println!(
            "lab servers ready in {:.1} s: {}",
            started.elapsed().as_secs_f64(),
            lab.servers
                .iter()
                .map(|s| format!("{} {:?}", s.name, s.ports))
                .collect::<Vec<_>>()
                .join(", ")
        );
        lab
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every server's log, for a failure message.
    pub fn logs(&self) -> String {
        self.servers
            .iter()
            .map(|s| format!("--- {} ---\n{}", s.name, s.log()))
            .collect()
    }

    /// A dir of the temp dir for one server, owned by `user` (root when None).
    fn subdir(&self, name: &str, user: Option<&str>) -> PathBuf {
        let path = self.dir.path().join(name);
        fs::create_dir_all(&path).unwrap();
        if let Some(user) = user {
            chown(&path, user);
        }
        path
    }

    fn spawn(
        &mut self,
        ns: &Netns,
        name: &'static str,
        ports: &[u16],
        argv: &[&str],
        stop: Signal,
    ) -> &mut Server {
        let log = self.dir.path().join(format!(
            "{}.log",
            name.to_lowercase().replace([' ', '(', ')'], "")
        ));
        let log_file = fs::File::create(&log).unwrap();
        let child = ns
            .command(argv)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({argv:?}): {e}"));
        self.servers.push(Server {
            name,
            ports: ports.to_vec(),
            child,
            log,
            stop,
        });
        self.servers.last_mut().unwrap()
    }

    /// OpenSSH with a host key of its own. sshd re-executes itself, so it runs by absolute
    /// path, and wants its privilege-separation dir /run/sshd (the package's tmpfiles.d
    /// creates it at boot; a container has none).
    fn start_sshd(&mut self, ns: &Netns, limit: Duration) {
        let dir = self.subdir("ssh", None);
        let key = dir.join("ssh_host_ed25519_key");
        ns.run(&[
            SSH_KEYGEN,
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            key.to_str().unwrap(),
        ]);
        let privsep = Path::new("/run/sshd");
        if !privsep.exists() {
            fs::create_dir_all(privsep).unwrap();
            fs::set_permissions(privsep, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let config = dir.join("sshd_config");
        fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nUsePAM no\n",
                key.display(),
                dir.join("sshd.pid").display()
            ),
        )
        .unwrap();
        let port = SSH.to_string();
        self.spawn(
            ns,
            "OpenSSH",
            &[SSH],
            &[
                SSHD,
                "-D",
                "-e",
                "-f",
                config.to_str().unwrap(),
                "-p",
                &port,
            ],
            Signal::SIGTERM,
        )
        .wait_ready(ns, Ready::Greets(&["SSH-2.0-"]), limit);
    }

    /// nginx, one process in the foreground: plain HTTP, HTTPS with the valid certificate
    /// (TLS 1.2 and 1.3) and HTTPS with the expired one (TLS 1.2 only), each a server block on
    /// its own port.
    fn start_nginx(&mut self, ns: &Netns, limit: Duration) {
        let dir = self.subdir("nginx", None);
        let pki = &self.pki;
        // Two TLS versions, so that the version label is checked on both.
        let tls_server = |port: u16, chain: &Path, key: &Path, protocols: &str, body: &str| {
            format!(
                "  server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {};\n    \
                 ssl_certificate_key {};\n    ssl_protocols {protocols};\n    \
                 location / {{ return 200 \"{body}\\n\"; }}\n  }}\n",
                chain.display(),
                key.display()
            )
        };
        let temp = |what: &str| format!("  {what}_temp_path {};\n", dir.join(what).display());
        let config = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {pid};\n\
             error_log {log};\nevents {{ worker_connections 64; }}\nhttp {{\n  access_log off;\n\
             {temps}  server {{\n    listen 127.0.0.1:{HTTP};\n    \
             location / {{ return 200 \"plain\\n\"; }}\n  }}\n{valid}{expired}}}\n",
            pid = dir.join("nginx.pid").display(),
            log = dir.join("error.log").display(),
            temps = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
                .map(temp)
                .concat(),
            valid = tls_server(
                HTTPS_VALID,
                &pki.valid_chain,
                &pki.valid_key,
                "TLSv1.2 TLSv1.3",
                "valid"
            ),
            expired = tls_server(
                HTTPS_EXPIRED,
                &pki.expired_chain,
                &pki.expired_key,
                "TLSv1.2",
                "expired"
            ),
        );
        let conf = dir.join("nginx.conf");
        fs::write(&conf, config).unwrap();
        let error_log = dir.join("error.log");
        self.spawn(
            ns,
            "nginx",
            &[HTTP, HTTPS_VALID, HTTPS_EXPIRED],
            &[
                NGINX,
                "-e",
                error_log.to_str().unwrap(),
                "-p",
                dir.to_str().unwrap(),
                "-c",
                conf.to_str().unwrap(),
            ],
            Signal::SIGTERM,
        )
        .wait_ready(ns, Ready::Accepts, limit);
    }

    /// PostgreSQL as the postgres user: `initdb`, then the postmaster in the foreground with
    /// `ssl = on` and the valid certificate (its key owned by postgres, mode 0600, as it
    /// demands). SIGINT is its fast shutdown (SIGTERM would wait for sessions to end).
    fn start_postgres(&mut self, ns: &Netns, limit: Duration) {
        let bin = postgres_bin().expect("PostgreSQL is installed");
        let dir = self.subdir("postgres", Some("postgres"));
        let data = dir.join("data");
        let as_postgres = [
            SETPRIV,
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
        ];
        let initdb = bin.join("initdb");
        ns.run(
            &[
                &as_postgres[..],
                &[
                    initdb.to_str().unwrap(),
                    "-D",
                    data.to_str().unwrap(),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-sync",
                ],
            ]
            .concat(),
        );
        let cert = dir.join("server.crt");
        let key = dir.join("server.key");
        fs::copy(&self.pki.valid_chain, &cert).unwrap();
        fs::copy(&self.pki.valid_key, &key).unwrap();
        for file in [&cert, &key] {
            chown(file, "postgres");
        }
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        let postgres = bin.join("postgres");
        let port = POSTGRESQL.to_string();
        let ssl_cert = format!("ssl_cert_file={}", cert.display());
        let ssl_key = format!("ssl_key_file={}", key.display());
        let argv = [
            &as_postgres[..],
            &[
                postgres.to_str().unwrap(),
                "-D",
                data.to_str().unwrap(),
                "-p",
                &port,
                "-k",
                dir.to_str().unwrap(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "ssl=on",
                "-c",
                &ssl_cert,
                "-c",
                &ssl_key,
                "-c",
                "fsync=off",
                "-c",
                "shared_buffers=16MB",
            ],
        ]
        .concat();
        self.spawn(ns, "PostgreSQL", &[POSTGRESQL], &argv, Signal::SIGINT)
            .wait_ready(
                ns,
                Ready::Logged("database system is ready to accept connections"),
                limit,
            );
    }

    /// Redis without persistence.
    fn start_redis(&mut self, ns: &Netns, limit: Duration) {
        let dir = self.subdir("redis", None);
        let port = REDIS.to_string();
        self.spawn(
            ns,
            "Redis",
            &[REDIS],
            &[
                REDIS_SERVER,
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                dir.to_str().unwrap(),
            ],
            Signal::SIGTERM,
        )
        .wait_ready(ns, Ready::Accepts, limit);
    }

    /// MariaDB with a datadir of its own (`mariadb-install-db`), no system option files, small
    /// InnoDB files; it drops to the mysql user itself.
    fn start_mariadb(&mut self, ns: &Netns, limit: Duration) {
        let dir = self.subdir("mariadb", Some("mysql"));
        let datadir = format!("--datadir={}", dir.join("data").display());
        let small = [
            "--innodb-log-file-size=4M",
            "--innodb-buffer-pool-size=16M",
            "--innodb-data-file-path=ibdata1:4M:autoextend",
        ];
        ns.run(
            &[
                &[
                    MARIADB_INSTALL_DB,
                    "--no-defaults",
                    &datadir,
                    "--user=mysql",
                    "--skip-test-db",
                    "--auth-root-authentication-method=normal",
                ][..],
                &small,
            ]
            .concat(),
        );
        let port = format!("--port={MYSQL}");
        let socket = format!("--socket={}", dir.join("mysqld.sock").display());
        let pid = format!("--pid-file={}", dir.join("mysqld.pid").display());
        let tmp = format!("--tmpdir={}", dir.display());
        let argv = [
            &[
                MARIADBD,
                "--no-defaults",
                &datadir,
                "--user=mysql",
                &port,
                "--bind-address=127.0.0.1",
                &socket,
                &pid,
                &tmp,
                "--skip-log-bin",
            ][..],
            &small,
        ]
        .concat();
        self.spawn(ns, "MariaDB", &[MYSQL], &argv, Signal::SIGTERM)
            .wait_ready(ns, Ready::Accepts, limit);
    }

    /// Dovecot in the foreground with a config of its own: IMAP and POP3 (no imaps/pop3s),
    /// `ssl = yes` with the valid certificate, so STARTTLS and STLS are offered.
    fn start_dovecot(&mut self, ns: &Netns, limit: Duration) {
        let dir = self.subdir("dovecot", None);
        let config = format!(
            "base_dir = {dir}/run\nstate_dir = {dir}/state\nlog_path = /dev/stderr\n\
             protocols = imap pop3\nlisten = 127.0.0.1\nssl = yes\nssl_cert = <{cert}\n\
             ssl_key = <{key}\nmail_location = maildir:{dir}/mail/%u\n\
             passdb {{\n  driver = static\n  args = nopassword=y\n}}\n\
             userdb {{\n  driver = static\n  args = uid=nobody gid=nogroup home={dir}/home/%u\n}}\n\
             service imap-login {{\n  inet_listener imap {{\n    port = {IMAP}\n  }}\n  \
             inet_listener imaps {{\n    port = 0\n  }}\n}}\n\
             service pop3-login {{\n  inet_listener pop3 {{\n    port = {POP3}\n  }}\n  \
             inet_listener pop3s {{\n    port = 0\n  }}\n}}\n",
            dir = dir.display(),
            cert = self.pki.valid_chain.display(),
            key = self.pki.valid_key.display(),
        );
        let conf = dir.join("dovecot.conf");
        fs::write(&conf, config).unwrap();
        self.spawn(
            ns,
            "Dovecot",
            &[IMAP, POP3],
            &[DOVECOT, "-F", "-c", conf.to_str().unwrap()],
            Signal::SIGTERM,
        )
        .wait_ready(ns, Ready::Greets(&["* OK", "+OK"]), limit);
    }

    /// Exim in the foreground (`-bdf`) with a config of its own (`-C`, so it gives up root and
    /// runs as Debian-exim: its spool, logs and key belong to that user) that offers STARTTLS
    /// and accepts no mail.
    fn start_exim(&mut self, ns: &Netns, limit: Duration) {
        let dir = self.subdir("exim", Some("Debian-exim"));
        for sub in ["spool", "log"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
            chown(&dir.join(sub), "Debian-exim");
        }
        let cert = dir.join("server.crt");
        let key = dir.join("server.key");
        fs::copy(&self.pki.valid_chain, &cert).unwrap();
        fs::copy(&self.pki.valid_key, &key).unwrap();
        chown(&key, "Debian-exim");
        let config = format!(
            "primary_hostname = mail.lab.test\nexim_user = Debian-exim\n\
             exim_group = Debian-exim\nnever_users = root\nkeep_environment =\n\
             daemon_smtp_ports = {SMTP}\nlocal_interfaces = 127.0.0.1\n\
             spool_directory = {dir}/spool\nlog_file_path = {dir}/log/%slog\n\
             pid_file_path = {dir}/exim.pid\nhost_lookup =\nrfc1413_hosts =\n\
             tls_advertise_hosts = *\ntls_certificate = {cert}\ntls_privatekey = {key}\n\
             acl_smtp_rcpt = refuse\nbegin acl\nrefuse:\n  deny\nbegin routers\n\
             begin transports\n",
            dir = dir.display(),
            cert = cert.display(),
            key = key.display(),
        );
        let conf = dir.join("exim.conf");
        fs::write(&conf, config).unwrap();
        let port = SMTP.to_string();
        self.spawn(
            ns,
            "Exim",
            &[SMTP],
            &[EXIM, "-C", conf.to_str().unwrap(), "-bdf", "-oX", &port],
            Signal::SIGTERM,
        )
        .wait_ready(ns, Ready::Greets(&["220 "]), limit);
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.servers.clear();
        // Anything the servers left behind in the namespace (a child of one that had to be
        // killed) was started by this test: kill it by pid.
        if let Ok(out) = std::process::Command::new("ip")
            .args(["netns", "pids", &self.namespace])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse() {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
    }
}

fn chown(path: &Path, user: &str) {
    let user = nix::unistd::User::from_name(user)
        .unwrap()
        .unwrap_or_else(|| panic!("user {user} exists"));
    std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw())).unwrap();
}

/// What `nmap -sV` found on one port.
#[derive(Clone, Debug, Default)]
pub struct NmapPort {
    pub state: String,
    pub reason: String,
    pub service: String,
    /// `tunnel="ssl"`: TLS from the first byte.
    pub tunnel: Option<String>,
    pub product: String,
    pub version: String,
    /// The ssl-cert script's notAfter (Unix seconds): a certificate seen, with or without
    /// STARTTLS.
    pub cert_not_after: Option<i64>,
}

impl NmapPort {
    /// How nmap saw TLS: a tunnel is implicit TLS; a certificate without one came through
    /// the protocol's upgrade (ssl-cert speaks STARTTLS for SMTP, IMAP, POP3 and PostgreSQL).
    pub fn tls(&self) -> TlsKind {
        match (&self.tunnel, self.cert_not_after) {
            (Some(tunnel), _) if tunnel == "ssl" => TlsKind::Implicit,
            (_, Some(_)) => TlsKind::StartTls,
            _ => TlsKind::None,
        }
    }

    /// nmap's `ssl/http` spelling.
    pub fn spelled(&self) -> String {
        match &self.tunnel {
            Some(tunnel) => format!("{tunnel}/{}", self.service),
            None => self.service.clone(),
        }
    }
}

/// `nmap -sT -sV -Pn -n --script ssl-cert -p PORTS 127.0.0.1 -oX -` inside `ns`, per port.
pub fn nmap_services(ns: &Netns, ports: &[u16]) -> BTreeMap<u16, NmapPort> {
    let list = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let xml = ns.run(&[
        "timeout",
        "300",
        NMAP,
        "-sT",
        "-sV",
        "-Pn",
        "-n",
        "--reason",
        "--script",
        "ssl-cert",
        "-p",
        &list,
        "127.0.0.1",
        "-oX",
        "-",
    ]);
    parse_nmap_xml(&xml)
}

/// The value of attribute `name` in the first element of `text` that has it.
fn attribute(text: &str, name: &str) -> Option<String> {
    let needle = format!(" {name}=\"");
    let start = text.find(&needle)? + needle.len();
    Some(xml_unescape(text[start..].split('"').next()?))
}

fn xml_unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn parse_nmap_xml(xml: &str) -> BTreeMap<u16, NmapPort> {
    xml.split("<port protocol=\"tcp\"")
        .skip(1)
        .map(|element| {
            let element = element.split("</port>").next().unwrap();
            let port: u16 = attribute(element, "portid").unwrap().parse().unwrap();
            let state = &element[element.find("<state ").unwrap()..];
            let mut found = NmapPort {
                state: attribute(state, "state").unwrap(),
                reason: attribute(state, "reason").unwrap_or_default(),
                ..NmapPort::default()
            };
            if let Some(at) = element.find("<service ") {
                let service = &element[at..];
                let service = &service[..service.find('>').unwrap()];
                found.service = attribute(service, "name").unwrap_or_default();
                found.tunnel = attribute(service, "tunnel");
                found.product = attribute(service, "product").unwrap_or_default();
                found.version = attribute(service, "version").unwrap_or_default();
            }
            if let Some(at) = element.find("<script id=\"ssl-cert\"") {
                let script = &element[at..];
                let key = "<elem key=\"notAfter\">";
                if let Some(start) = script.find(key) {
                    let text = &script[start + key.len()..];
                    found.cert_not_after = Some(parse_iso_utc(&text[..19]));
                }
            }
            (port, found)
        })
        .collect()
}

/// `openssl x509 -enddate -noout -in cert`: the certificate's notAfter in Unix seconds.
pub fn openssl_not_after(cert: &Path) -> i64 {
    let out = super::netns::run_ok(std::process::Command::new(OPENSSL).args([
        "x509",
        "-enddate",
        "-noout",
        "-in",
        cert.to_str().unwrap(),
    ]));
    parse_openssl_date(
        out.trim()
            .strip_prefix("notAfter=")
            .unwrap_or_else(|| panic!("openssl x509 -enddate: {out}")),
    )
}

/// What `openssl s_client` saw in a handshake with 127.0.0.1:`port` in `ns`.
#[derive(Debug)]
pub struct Handshake {
    /// "TLSv1.3", ...
    pub protocol: String,
    /// The chain verified against the CA for `localhost`.
    pub verified: bool,
}

/// `openssl s_client -brief` (with `-starttls word` where given) against the lab CA and the
/// name `localhost`.
pub fn openssl_handshake(ns: &Netns, port: u16, starttls: Option<&str>, ca: &Path) -> Handshake {
    let connect = format!("127.0.0.1:{port}");
    let mut argv = vec![
        "timeout",
        "20",
        OPENSSL,
        "s_client",
        "-brief",
        "-connect",
        &connect,
        "-servername",
        "localhost",
        "-verify_hostname",
        "localhost",
        "-CAfile",
        ca.to_str().unwrap(),
    ];
    if let Some(word) = starttls {
        argv.extend(["-starttls", word]);
    }
    let out = ns
        .command(&argv)
        .stdin(Stdio::null())
        .output()
        .expect("openssl s_client runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let protocol = text
        .lines()
        .find_map(|l| l.strip_prefix("Protocol version:"))
        .unwrap_or_else(|| panic!("openssl s_client on port {port}: no handshake:\n{text}"))
        .trim()
        .to_string();
    Handshake {
        protocol,
        verified: text.lines().any(|l| l.trim() == "Verification: OK"),
    }
}

/// The version number in a TLS version's spelling: "TLSv1.3", "TLS 1.3" and "TLS1.3" are "1.3".
pub fn tls_version_number(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_digit() || *c == '.')
        .collect()
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn seconds(year: i64, month: i64, day: i64, time: &str) -> i64 {
    let hms: Vec<i64> = time.split(':').map(|p| p.parse().unwrap()).collect();
    days_from_civil(year, month, day) * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2]
}

/// "Mar  2 01:46:08 2027 GMT" (OpenSSL's notAfter) in Unix seconds.
pub fn parse_openssl_date(text: &str) -> i64 {
    let parts: Vec<&str> = text.split_whitespace().collect();
    assert!(
        parts.len() == 5 && parts[4] == "GMT",
        "OpenSSL date: {text}"
    );
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == parts[0]).unwrap() as i64 + 1;
    seconds(
        parts[3].parse().unwrap(),
        month,
        parts[1].parse().unwrap(),
        parts[2],
    )
}

/// "2027-03-02T01:46:08" (nmap's ssl-cert, UTC) in Unix seconds.
pub fn parse_iso_utc(text: &str) -> i64 {
    let (date, time) = text.split_once('T').unwrap();
    let ymd: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
    seconds(ymd[0], ymd[1], ymd[2], time)
}
