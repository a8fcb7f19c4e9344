//! The status page at `/`, rendered by a real headless Chromium against the real exporter on
//! 127.0.0.1. Chromium loads only that address: no external assets, and its own background
//! traffic (updates, sync, QUIC, DNS of other names) is switched off.
//!
//! Needs Debian's `chromium` package; without it the tests print SKIPPED (and fail under CI=true).

mod common;

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;

/// One Chromium at a time: the machine has two cores.
static CHROMIUM: Mutex<()> = Mutex::new(());

/// How long one Chromium run may take before it is killed (a run takes a few seconds; one that
/// hangs is usually blocked on a dialog, such as an `alert` that escaping failed to stop).
const CHROMIUM_LIMIT: Duration = Duration::from_secs(60);

/// A port on 127.0.0.1 where nothing listens: bound once by the OS, then released.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs headless Chromium with a fresh profile on `url` plus `extra` flags; returns stdout.
fn chromium(extra: &[String], url: &str) -> String {
    chromium_logged(extra, url).0
}

/// Like [`chromium`], returning stdout and stderr (where `--enable-logging=stderr` puts the
/// console's messages, CSP violations among them).
fn chromium_logged(extra: &[String], url: &str) -> (String, String) {
    assert!(
        url.starts_with("http://127.0.0.1:"),
        "Chromium only loads the local exporter: {url}"
    );
    let _one_at_a_time = CHROMIUM.lock().unwrap_or_else(|e| e.into_inner());
    let profile = tempfile::tempdir().unwrap();
    let stdout_path = profile.path().join("stdout");
    let stderr_path = profile.path().join("stderr");
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--disable-breakpad",
            // Any name other than the exporter's address fails to resolve, without a query.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        ])
        .arg(format!(
            "--user-data-dir={}",
            profile.path().join("profile").display()
        ))
        .args(extra)
        .arg(url)
        .env("HOME", profile.path())
        .stdin(Stdio::null())
        .stdout(File::create(&stdout_path).unwrap())
        .stderr(File::create(&stderr_path).unwrap())
        .spawn()
        .expect("chromium starts");
    let deadline = Instant::now() + CHROMIUM_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "chromium did not finish within {CHROMIUM_LIMIT:?} (blocked on a dialog?): {}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(&stdout_path).unwrap();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(status.success(), "chromium failed ({status}): {stderr}");
    (stdout, stderr)
}

/// The DOM of `path` on the exporter as Chromium has it after loading (scripts run).
fn dump_dom(addr: SocketAddr, path: &str) -> String {
    let dom = chromium(&["--dump-dom".to_string()], &format!("http://{addr}{path}"));
    assert!(
        dom.contains("</html>"),
        "a whole document was dumped: {dom}"
    );
    dom
}

/// The `<tr>` element of the row of `target` and `port`, if the page lists it.
fn row<'a>(dom: &'a str, target: &str, port: u16) -> Option<&'a str> {
    let at = dom.find(&format!("data-target=\"{target}\" data-port=\"{port}\" "))?;
    let start = dom[..at].rfind("<tr")?;
    let end = at + dom[at..].find("</tr>")? + "</tr>".len();
    Some(&dom[start..end])
}

/// The `<a>` start tag with the id given.
fn link<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element #{id}"));
    let start = dom[..at].rfind("<a ").unwrap();
    &dom[start..at + dom[at..].find('>').unwrap() + 1]
}

fn output_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-output");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn status_page_in_headless_chromium() {
    if !have("chromium") {
        skip("chromium not installed");
        return;
    }
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let open_port = open.local_addr().unwrap().port();
    let closed_port = closed_port();
    let db_port = closed_port_other_than(closed_port);
    // A small range around the open port: its closed ports are counted but not listed.
    let (lo, hi) = (
        open_port.saturating_sub(5).max(1),
        open_port.saturating_add(5),
    );
    // UDP: a bound socket that never answers (open|filtered) and the closed port's number.
    let silent_udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_port = silent_udp.local_addr().unwrap().port();
    let exporter = start_exporter(&format!(
        r#"
        [[targets]]
        name = "web"
        host = "127.0.0.1"
        ports = [{open_port}, {closed_port}]
        expect = "open"
        labels = {{ team = "infra", env = "test" }}

        [[targets]]
        name = "db"
        host = "localhost"
        ports = [{db_port}]
        expect = "not_open"

        [[targets]]
        name = "scan"
        host = "127.0.0.1"
        ports = ["{lo}-{hi}"]
        expect = "not_open"

        [[targets]]
        name = "udp"
        host = "127.0.0.1"
        protocol = "udp"
        ports = [{silent_port}, {closed_port}]
        expect = "not_open"
        "#
    ));
    wait_ready(exporter.addr, Duration::from_secs(20));

    // Every row, and the JS-free page works as a browser renders it.
    let dom = dump_dom(exporter.addr, "/");
    let open_row = row(&dom, "web", open_port).expect("the open port is listed");
    assert!(open_row.contains("data-state=\"open\""), "{open_row}");
    assert!(open_row.contains("data-unexpected=\"false\""), "{open_row}");
    assert!(
        open_row.contains("<td class=\"mono\">127.0.0.1</td>"),
        "{open_row}"
    );
    assert!(open_row.contains("<span class=\"badge open\">open</span>"));
    assert!(open_row.contains("syn-ack"));
    assert!(
        open_row.contains("\u{2713} open"),
        "expectation met: {open_row}"
    );
    assert!(open_row.contains(" ago</time>") && open_row.contains(" UTC\""));
    let closed_row = row(&dom, "web", closed_port).expect("the closed port is listed");
    assert!(
        closed_row.starts_with("<tr class=\"port closed unexpected\""),
        "{closed_row}"
    );
    assert!(closed_row.contains("data-unexpected=\"true\""));
    assert!(closed_row.contains("<span class=\"badge closed\">closed</span>"));
    assert!(closed_row.contains("conn-refused"));
    assert!(
        closed_row.contains("\u{2717} unexpected"),
        "the mark: {closed_row}"
    );
    assert!(closed_row.contains("expects open"));
    // Rows are sorted by target name, then port.
    let order: Vec<usize> = [
        ("db", db_port),
        ("scan", open_port),
        ("web", open_port.min(closed_port)),
        ("web", open_port.max(closed_port)),
    ]
    .iter()
    .map(|(t, p)| {
        let r = row(&dom, t, *p).unwrap_or_else(|| panic!("row {t} {p}"));
        dom.find(r).unwrap()
    })
    .collect();
    assert!(order.is_sorted(), "{order:?}");
    // Per-target summaries count every row; the range lists its open port as an exposure.
    assert!(dom.contains("data-total=\"2\" data-open=\"1\" data-closed=\"1\" data-filtered=\"0\" data-error=\"0\" data-unexpected=\"1\""));
    let scan = row(&dom, "scan", open_port).expect("the range's open port is listed");
    assert!(scan.contains("data-unexpected=\"true\""), "{scan}");
    assert!(dom.contains(&format!("data-total=\"{}\"", hi - lo + 1)));
    assert!(dom.contains("team=infra") && dom.contains("env=test"));
    // Links and the version.
    for (id, href) in [
        ("link-metrics", "/metrics"),
        ("link-config", "/config"),
        ("link-healthy", "/-/healthy"),
        ("link-ready", "/-/ready"),
        ("filter-all", "?state=all"),
        ("filter-open", "?state=open"),
        ("filter-closed", "?state=closed"),
        ("filter-filtered", "?state=filtered"),
        ("filter-error", "?state=error"),
    ] {
        assert!(link(&dom, id).contains(&format!("href=\"{href}\"")), "{id}");
    }
    for path in ["/metrics", "/-/healthy", "/-/ready"] {
        assert_eq!(get(exporter.addr, path).status, 200, "{path}");
    }
    assert!(link(&dom, "filter-all").contains("aria-current=\"page\""));
    assert!(dom.contains(concat!("v", env!("CARGO_PKG_VERSION"))));
    assert!(dom.contains("<meta http-equiv=\"refresh\" content=\"15\">"));
    // The inline script ran in the browser.
    assert!(dom.contains("(next in "), "the countdown script ran");

    // The UDP target: its protocol, UDP's silence as its own state, and its filter link.
    let silent = row(&dom, "udp", silent_port).expect("the silent UDP port is listed");
    assert!(
        silent.starts_with("<tr class=\"port open-filtered\""),
        "{silent}"
    );
    assert!(silent.contains("data-protocol=\"udp\""), "{silent}");
    assert!(silent.contains("<span class=\"badge open-filtered\">open|filtered</span>"));
    let closed_udp = row(&dom, "udp", closed_port).expect("the closed UDP port is listed");
    assert!(closed_udp.contains("port-unreach"), "{closed_udp}");
    assert!(dom.contains("<span class=\"chip protocol\">udp</span>"));
    assert!(dom.contains("data-filtered=\"0\" data-open-filtered=\"1\" data-error=\"0\""));
    assert!(link(&dom, "filter-open-filtered").contains("href=\"?state=open%7Cfiltered\""));
    let dom = dump_dom(exporter.addr, "/?state=open%7Cfiltered");
    assert!(
        row(&dom, "udp", silent_port).is_some(),
        "the silent UDP row kept"
    );
    assert!(row(&dom, "udp", closed_port).is_none() && row(&dom, "web", open_port).is_none());

    // Server-side filtering: the closed row is gone, the open ones stay.
    let dom = dump_dom(exporter.addr, "/?state=open");
    assert!(row(&dom, "web", open_port).is_some(), "open row kept");
    assert!(
        row(&dom, "web", closed_port).is_none(),
        "closed row filtered out"
    );
    assert!(
        !dom.contains("data-state=\"closed\""),
        "no closed row at all"
    );
    assert!(link(&dom, "filter-open").contains("aria-current=\"page\""));
    assert!(!link(&dom, "filter-all").contains("aria-current"));
    // The db target has no open port: left out under the filter.
    assert!(!dom.contains("data-target=\"db\""));

    // An unknown state shows every row and says so.
    let dom = dump_dom(exporter.addr, "/?state=bogus");
    assert!(dom.contains("id=\"invalid-filter\""));
    assert!(row(&dom, "web", closed_port).is_some() && row(&dom, "web", open_port).is_some());

    // A screenshot of the page, for a person (and the README).
    let png = output_dir().join("status-page.png");
    let _ = std::fs::remove_file(&png);
    chromium(
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1280,800".to_string(),
            "--hide-scrollbars".to_string(),
        ],
        &format!("http://{}/", exporter.addr),
    );
    let bytes = std::fs::read(&png).expect("the screenshot was written");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), (1280, 800));
    assert!(
        bytes.len() > 20_000,
        "a page, not a blank: {} bytes",
        bytes.len()
    );
    println!("screenshot: {}", png.display());

    drop((open, silent_udp));
    exporter.stop();
}

#[test]
fn user_input_is_text_in_the_browser() {
    if !have("chromium") {
        skip("chromium not installed");
        return;
    }
    let port = closed_port();
    let exporter = start_exporter(&format!(
        r#"
        [[targets]]
        name = "<script>alert(1)</script>"
        host = "127.0.0.1"
        ports = [{port}]
        labels = {{ note = "\"><img src=x onerror=alert(2)>" }}
        "#
    ));
    wait_ready(exporter.addr, Duration::from_secs(20));
    let dom = dump_dom(exporter.addr, "/?state=%3Cb%3Ebold%3C/b%3E");
    assert!(
        dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{dom}"
    );
    assert!(!dom.contains("<script>alert"), "no injected script element");
    assert!(!dom.contains("<img"), "no injected image element");
    assert!(
        !dom.contains("<b>bold"),
        "no injected markup from the query"
    );
    assert!(dom.contains("Unknown state \u{201c}&lt;b&gt;bold&lt;/b&gt;\u{201d}"));
    assert_eq!(
        dom.matches("<script").count(),
        1,
        "only the page's own script"
    );
    assert!(row(&dom, "&lt;script&gt;alert(1)&lt;/script&gt;", port).is_some());
    exporter.stop();
}

/// Serves `html` on 127.0.0.1 to at most 4 connections, for at most 60 s (or until dropped).
struct HtmlServer {
    addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl HtmlServer {
    fn start(html: String) -> HtmlServer {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut served = 0;
            while served < 4 && Instant::now() < deadline && !stopped.load(Ordering::Relaxed) {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                served += 1;
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = [0u8; 4096];
                let _ = stream.read(&mut head);
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{html}",
                    html.len()
                );
            }
        });
        HtmlServer { addr, stop }
    }
}

impl Drop for HtmlServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn the_inline_style_and_script_run_under_the_content_security_policy_and_framing_is_refused() {
    if !have("chromium") {
        skip("chromium not installed");
        return;
    }
    // An SSH server, so that the page has a service cell (and its classes) too.
    let ssh = TcpListener::bind("127.0.0.1:0").unwrap();
    let ssh_port = ssh.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in ssh.incoming().take(64) {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = stream.write_all(b"SSH-2.0-test_1.0\r\n");
                let mut buf = [0u8; 256];
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    let exporter = start_exporter(&format!(
        "[[targets]]\nname = \"web\"\nhost = \"127.0.0.1\"\nports = [{}]\n\
         [[targets]]\nname = \"ssh\"\nhost = \"127.0.0.1\"\nports = [{ssh_port}]\n\
         service = \"ssh\"\ntimeout = \"1s\"\n",
        closed_port()
    ));
    wait_ready(exporter.addr, Duration::from_secs(20));
    let csp = get(exporter.addr, "/").headers["content-security-policy"].clone();
    assert!(
        csp.contains("style-src 'sha256-") && csp.contains("script-src 'sha256-"),
        "{csp}"
    );
    let flags = ["--enable-logging=stderr", "--v=0", "--dump-dom"].map(String::from);
    let url = format!("http://{}/", exporter.addr);
    let (dom, log) = chromium_logged(&flags, &url);
    // The script ran: it wrote the countdown into its span. (Its own text, in the <script>
    // element, says "(next in " too: look at the span.)
    assert!(
        dom.contains("id=\"countdown\" data-seconds=\"15\">(next in 15 s)</span>"),
        "the inline script did not run: {dom}"
    );
    // The service cell is there, under the same policy.
    let ssh_row = row(&dom, "ssh", ssh_port).expect("the ssh row");
    assert!(
        ssh_row.contains("<span class=\"svc\">ssh</span>")
            && ssh_row.contains("<span class=\"mono svc-version\">test_1.0</span>"),
        "{ssh_row}"
    );
    // Nothing was blocked: Chromium logs every CSP violation (below, it logs one).
    assert!(
        !log.contains("Content Security Policy"),
        "the page's CSP blocked its own style or script: {log}"
    );

    // A page elsewhere that frames the status page: refused by frame-ancestors 'none'.
    let framer = HtmlServer::start(format!(
        "<!DOCTYPE html><html><body><iframe src=\"{url}\"></iframe></body></html>"
    ));
    let (_, log) = chromium_logged(&flags, &format!("http://{}/", framer.addr));
    assert!(
        log.contains(
            "violates the following Content Security Policy directive: \"frame-ancestors 'none'\""
        ),
        "framing was not refused: {log}"
    );
    drop(framer);
    exporter.stop();
}

/// A closed port different from `other`.
fn closed_port_other_than(other: u16) -> u16 {
    loop {
        let port = closed_port();
        if port != other {
            return port;
        }
    }
}
