//! Helpers shared by the integration tests: the real exporter, a blocking HTTP client, a parser
//! for the text exposition format, and the SKIPPED-or-fail rule for missing tools.
#![allow(dead_code)] // each test crate uses its own subset of these helpers

pub mod dashboard;
pub mod delayer;
pub mod netns;
pub mod servers;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use port_exporter::config::Config;
use port_exporter::{Options, run};
use tokio_util::sync::CancellationToken;

/// The exporter running in this process on 127.0.0.1 and an OS-chosen port.
pub struct Exporter {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts the real server (library `run`) on its own runtime with the config `text`.
pub fn start_exporter(text: &str) -> Exporter {
    start_exporter_with(text, Options::default())
}

/// Like [`start_exporter`], with run-time options (web config, config file for reloads, ...).
pub fn start_exporter_with(text: &str, options: Options) -> Exporter {
    let config = Config::parse(text, "test config").expect("test config is valid");
    let shutdown = CancellationToken::new();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let token = shutdown.clone();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            run(config, listener, options, token).await.unwrap();
        });
    });
    let addr = addr_rx
        .recv()
        .expect("the exporter thread reports its address");
    Exporter {
        addr,
        shutdown,
        thread: Some(thread),
    }
}

impl Exporter {
    /// Stops the exporter and waits for it to finish.
    pub fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the exporter thread does not panic");
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A response: status, lower-cased header names, body.
pub struct Response {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("body is UTF-8")
    }
}

/// A blocking HTTP/1.1 request with `Connection: close`.
pub fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    try_http(addr, method, path, headers).expect("HTTP request")
}

/// Like [`http`], but a failure to connect or read is returned.
pub fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = raw[split + 4..].to_vec();
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|v: &String| v.eq_ignore_ascii_case("chunked"));
    Ok(Response {
        status,
        body: if chunked { dechunk(&body) } else { body },
        headers,
    })
}

/// Decodes a chunked transfer-encoded body.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = std::str::from_utf8(&raw[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return body;
        }
        let start = line_end + 2;
        body.extend_from_slice(&raw[start..start + size]);
        raw = &raw[start + size + 2..];
    }
}

pub fn get(addr: SocketAddr, path: &str) -> Response {
    http(addr, "GET", path, &[])
}

/// Polls `/-/ready` until it answers 200; panics after `limit`.
pub fn wait_ready(addr: SocketAddr, limit: Duration) {
    let deadline = Instant::now() + limit;
    while get(addr, "/-/ready").status != 200 {
        assert!(Instant::now() < deadline, "not ready within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One sample of the text format.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the samples of a text-format exposition (comments skipped).
pub fn parse_samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("sample has a value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            Sample {
                name: name.to_string(),
                labels,
                value: value.parse().expect("numeric sample value"),
            }
        })
        .collect()
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((name, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => value.push(
                    chars
                        .next()
                        .map_or('\\', |(_, c)| if c == 'n' { '\n' } else { c }),
                ),
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(name.trim_start_matches(',').to_string(), value);
        rest = &after[end..];
    }
    labels
}

/// Samples named `name` whose labels include every pair of `labels`.
pub fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

/// The single value of `name` with `labels`; panics when there is not exactly one.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = find(samples, name, labels);
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    found[0].value
}

/// The state whose `port_state` sample is 1 for the labels given.
pub fn state_of(samples: &[Sample], labels: &[(&str, &str)]) -> String {
    let on: Vec<_> = find(samples, "port_state", labels)
        .into_iter()
        .filter(|s| s.value == 1.0)
        .collect();
    assert_eq!(on.len(), 1, "exactly one state is 1 for {labels:?}: {on:?}");
    on[0].labels["state"].clone()
}

/// Whether tests that need `what` must fail instead of skipping (CI=true).
pub fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Prints `SKIPPED: why` and returns true, or panics under CI=true.
pub fn skip(why: &str) -> bool {
    assert!(!required(), "CI=true and a requirement is missing: {why}");
    println!("SKIPPED: {why}");
    true
}

/// Whether `tool` is on PATH.
pub fn have(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `promtool check metrics` on `text`; returns its combined output on failure.
pub fn promtool_check_metrics(text: &str) -> Result<(), String> {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run promtool: {e}"))?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A listener whose accept queue is full: the kernel drops further SYNs, so the port is silent
/// for as long as this lives.
pub struct SilentPort {
    pub port: u16,
    _listener: tokio::net::TcpListener,
    _fillers: Vec<std::net::TcpStream>,
    _runtime: tokio::runtime::Runtime,
}

pub fn silent_port() -> SilentPort {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let listener = runtime.block_on(async { socket.listen(0) }).unwrap();
    // Backlog 0 holds one connection; the second filler finds it full already.
    let fillers = (0..2)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()
        })
        .collect();
    SilentPort {
        port: addr.port(),
        _listener: listener,
        _fillers: fillers,
        _runtime: runtime,
    }
}

/// Starts the binary on an OS-chosen port with `args`, and returns it with the address it
/// logged ("address=...").
pub fn start_binary(args: &[&str]) -> (std::process::Child, SocketAddr, Vec<String>) {
    start_binary_behind(&[], args)
}

/// Like [`start_binary`], run by `wrapper` (e.g. `setpriv ...`) when it is not empty.
pub fn start_binary_behind(
    wrapper: &[&str],
    args: &[&str],
) -> (std::process::Child, SocketAddr, Vec<String>) {
    let exe = env!("CARGO_BIN_EXE_port_exporter");
    let (program, before) = match wrapper.split_first() {
        Some((program, rest)) => (*program, [rest, &[exe]].concat()),
        None => (exe, Vec::new()),
    };
    let mut child = std::process::Command::new(program)
        .args(before)
        .args(["--web.listen-address", "127.0.0.1:0"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let mut lines = Vec::new();
    let mut reader = std::io::BufReader::new(child.stderr.take().unwrap());
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

/// `bytes` in standard base64 with padding, as a `Basic` credential carries them.
pub fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
