//! Hostile HTTP input against the real server (in this process, on 127.0.0.1:0): malformed
//! request lines and headers, oversized heads, header floods, slow clients, `/probe` targets
//! that must be refused without a connection, and `--web.max-requests`. After each, the
//! server must still answer `/-/healthy`, and nothing in the exporter may have panicked.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use port_exporter::Options;

/// Panics on threads that are not test threads: the exporter's runtime and its tasks.
static EXPORTER_PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts panics outside the test threads (tokio catches a task's panic and carries on, so
/// without this a panicking connection handler would go unnoticed).
fn watch_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            if thread.name().is_none_or(|n| n.starts_with("tokio")) {
                EXPORTER_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default(info);
        }));
    });
}

fn assert_no_exporter_panics() {
    assert_eq!(
        EXPORTER_PANICS.load(Ordering::SeqCst),
        0,
        "a task of the exporter panicked (see the output above)"
    );
}

fn start(config: &str, options: Options) -> Exporter {
    watch_panics();
    let exporter = start_exporter_with(config, options);
    wait_ready(exporter.addr, Duration::from_secs(10));
    exporter
}

fn assert_healthy(addr: SocketAddr) {
    let started = Instant::now();
    let response = get(addr, "/-/healthy");
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// What came back for raw bytes: the status (None when the server closed without one), and
/// the response head and body as text.
#[derive(Debug)]
struct Raw {
    status: Option<u16>,
    head: String,
    body: String,
}

/// Writes `bytes` in one go (a write error is fine: the server may close early), then reads
/// one response: its head, and its body by Content-Length; or whatever came before EOF.
fn raw(addr: SocketAddr, bytes: &[u8]) -> Raw {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream.write_all(bytes);
    let mut got = Vec::new();
    let mut buf = [0u8; 16384];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_string();
            let length = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                break;
            }
        }
        if Instant::now() > deadline {
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&got).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok());
    Raw {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

#[test]
fn malformed_request_lines_and_headers_get_400_and_the_server_carries_on() {
    let exporter = start("", Options::default());
    let addr = exporter.addr;
    // (what, bytes, the status hyper or the handler answers)
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "binary garbage",
            b"\x00\x01\x02\xff\xfe garbage\r\n\r\n".to_vec(),
            400,
        ),
        ("missing version", b"GET /-/healthy\r\n\r\n".to_vec(), 400),
        ("HTTP/0.9 style", b"GET /\r\n".to_vec(), 400),
        (
            "HTTP/0.9 style, then nothing",
            b"GET /-/healthy\r\n".to_vec(),
            400,
        ),
        (
            "bad method token",
            b"G@T /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            400,
        ),
        (
            "method with a control byte",
            b"GE\x07T /-/healthy HTTP/1.1\r\n\r\n".to_vec(),
            400,
        ),
        (
            "space in the method",
            b"GE T /-/healthy HTTP/1.1\r\n\r\n".to_vec(),
            400,
        ),
        (
            "unknown version",
            b"GET /-/healthy HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(),
            400,
        ),
        (
            "version garbage",
            b"GET /-/healthy HTTQ/1.1\r\n\r\n".to_vec(),
            400,
        ),
        (
            "space in the path",
            b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            400,
        ),
        (
            "NUL in the path",
            b"GET /probe?target=127.0.0.2\x00:1 HTTP/1.1\r\n\r\n".to_vec(),
            400,
        ),
        (
            "header without a colon",
            b"GET /-/healthy HTTP/1.1\r\nHost x\r\n\r\n".to_vec(),
            400,
        ),
        (
            "space in a header name",
            b"GET /-/healthy HTTP/1.1\r\nHo st: x\r\n\r\n".to_vec(),
            400,
        ),
        (
            "NUL in a header value",
            b"GET /-/healthy HTTP/1.1\r\nX: a\x00b\r\n\r\n".to_vec(),
            400,
        ),
        (
            "Content-Length not a number",
            b"POST /-/reload HTTP/1.1\r\nContent-Length: abc\r\n\r\n".to_vec(),
            400,
        ),
        (
            "negative Content-Length",
            b"POST /-/reload HTTP/1.1\r\nContent-Length: -1\r\n\r\n".to_vec(),
            400,
        ),
        (
            "two Content-Lengths",
            b"POST /-/reload HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".to_vec(),
            400,
        ),
        (
            "Content-Length beyond u64",
            b"POST /-/reload HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n".to_vec(),
            400,
        ),
        // Well-formed but odd: the handler answers.
        (
            "unknown method",
            b"FOO /-/healthy HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(),
            405,
        ),
        (
            "asterisk form",
            b"OPTIONS * HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(),
            404,
        ),
    ];
    for (what, bytes, status) in &cases {
        let response = raw(addr, bytes);
        assert_eq!(response.status, Some(*status), "{what}: {response:?}");
        // hyper's own 400s have no body; the handler's answers say what is wrong.
        let expected_body = match status {
            405 => "method not allowed\n",
            404 => "404 page not found\n",
            _ => "",
        };
        assert_eq!(response.body, expected_body, "{what}: {response:?}");
        assert_healthy(addr);
    }
    // An HTTP/2 preface on an HTTP/1 server: closed without an answer.
    let response = raw(addr, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    assert_eq!(response.status, None, "{response:?}");
    // Random bytes, a few hundred requests' worth.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..200 {
        let mut bytes: Vec<u8> = (0..64)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        bytes.extend_from_slice(b"\r\n\r\n");
        let response = raw(addr, &bytes);
        assert!(
            matches!(response.status, None | Some(400)),
            "{bytes:?}: {response:?}"
        );
    }
    assert_healthy(addr);
    assert_no_exporter_panics();
    exporter.stop();
}

#[test]
fn request_heads_over_64_kib_are_refused_with_431_or_414() {
    let exporter = start("", Options::default());
    let addr = exporter.addr;
    let with_header = |value_len: usize| {
        let mut request = b"GET /-/healthy HTTP/1.1\r\nX-Big: ".to_vec();
        request.extend(std::iter::repeat_n(b'a', value_len));
        request.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        request
    };
    let with_path = |path_len: usize| {
        let mut request = b"GET /".to_vec();
        request.extend(std::iter::repeat_n(b'a', path_len));
        request.extend_from_slice(b" HTTP/1.1\r\nConnection: close\r\n\r\n");
        request
    };
    // Below the cap: served.
    let response = raw(addr, &with_header(60_000));
    assert_eq!(
        response.status,
        Some(200),
        "a 60 kB header: {}",
        response.head
    );
    let response = raw(addr, &with_path(60_000));
    assert_eq!(
        response.status,
        Some(404),
        "a 60 kB path: {}",
        response.head
    );
    // Above: 431 (hyper: the head is over the cap) for headers, 431 or 414 (hyper: a complete
    // head whose URI is over 65,534 bytes) for paths; never served. Each head is written at
    // once, the way a client that means it sends it.
    let head_size = |request: &[u8]| request.len();
    for size in [0, 80_000, 100_000, 130_000, 1_000_000] {
        // 0: a head of exactly 64 KiB + 1 byte.
        let request = with_header(size.max(65_537 - with_header(0).len()));
        let response = raw(addr, &request);
        assert_eq!(
            response.status,
            Some(431),
            "a {}-byte head (header): {response:?}",
            head_size(&request)
        );
        assert_healthy(addr);
        let request = with_path(size.max(65_537 - with_path(0).len()));
        let response = raw(addr, &request);
        assert!(
            matches!(response.status, Some(431 | 414)),
            "a {}-byte head (path): {response:?}",
            head_size(&request)
        );
        assert_healthy(addr);
    }
    assert_no_exporter_panics();
    exporter.stop();
}

#[test]
fn header_floods_get_431() {
    let exporter = start("", Options::default());
    let addr = exporter.addr;
    let flood = |count: usize| {
        let mut request = b"GET /-/healthy HTTP/1.1\r\nConnection: close\r\n".to_vec();
        for i in 1..count {
            request.extend_from_slice(format!("X-Flood-{i}: a\r\n").as_bytes());
        }
        request.extend_from_slice(b"\r\n");
        request
    };
    // hyper's limit is 100 header lines.
    assert_eq!(raw(addr, &flood(100)).status, Some(200));
    for count in [101, 1_000, 5_000] {
        let response = raw(addr, &flood(count));
        assert_eq!(response.status, Some(431), "{count} headers: {response:?}");
        assert_healthy(addr);
    }
    // The same header name over and over.
    let mut request = b"GET /-/healthy HTTP/1.1\r\n".to_vec();
    request.extend(b"Cookie: a=b\r\n".repeat(3_000));
    request.extend_from_slice(b"\r\n");
    assert_eq!(raw(addr, &request).status, Some(431));
    // Many requests pipelined on one connection: answered in order, none lost.
    let mut pipelined = b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n".repeat(200);
    pipelined.extend_from_slice(b"GET /-/healthy HTTP/1.1\r\nConnection: close\r\n\r\n");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(&pipelined).unwrap();
    let mut all = String::new();
    stream.read_to_string(&mut all).unwrap();
    assert_eq!(all.matches("HTTP/1.1 200 OK").count(), 201);
    assert_healthy(addr);
    assert_no_exporter_panics();
    exporter.stop();
}

#[test]
fn slow_clients_hold_no_request_slot_and_are_cut_off_after_the_header_timeout() {
    let exporter = start(
        "",
        Options {
            max_requests: 4,
            ..Options::default()
        },
    );
    let addr = exporter.addr;
    // 200 clients that start a request head and never finish it (slowloris), far more than
    // the 4 request slots.
    let started = Instant::now();
    let mut slow: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            stream
        })
        .collect();
    // Everyone else is still served at once.
    for _ in 0..10 {
        assert_healthy(addr);
        assert_eq!(get(addr, "/metrics").status, 200);
    }
    // hyper's header read timeout (10 s) closes every one of them.
    for stream in &mut slow {
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let mut buf = [0u8; 256];
        let closed = match stream.read(&mut buf) {
            Ok(n) => n == 0 || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"),
            Err(e) => e.kind() == ErrorKind::ConnectionReset,
        };
        assert!(closed, "a slow client was not cut off");
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(14),
        "slow clients cut off after {took:?}"
    );
    assert_healthy(addr);
    assert_no_exporter_panics();
    exporter.stop();
}

#[test]
fn bad_probe_targets_get_400_with_a_message_and_no_connection() {
    // A listener on 127.0.0.2 that must see no connection: any lenient parse of the targets
    // below would reach it, since the allow list admits all of 127.0.0.0/8.
    let bait = TcpListener::bind("127.0.0.2:0").unwrap();
    bait.set_nonblocking(true).unwrap();
    let port = bait.local_addr().unwrap().port();
    let exporter = start(
        "[defaults]\ntimeout = \"500ms\"\n[probe]\nallow = [\"127.0.0.0/8\"]\n",
        Options::default(),
    );
    let addr = exporter.addr;
    let long_host = format!("{}.example", "a".repeat(10_000));
    let queries = [
        // ports
        "target=127.0.0.2".to_string(),
        "target=127.0.0.2:".to_string(),
        "target=127.0.0.2:0".to_string(),
        "target=127.0.0.2:70000".to_string(),
        "target=127.0.0.2:65536".to_string(),
        "target=127.0.0.2:-1".to_string(),
        format!("target=127.0.0.2:{port}x"),
        format!("target=127.0.0.2:{port}:{port}"),
        format!("target=127.0.0.2:+{port}"), // '+' is a space in a query
        format!("target=127.0.0.2:%20{port}"),
        // hosts
        format!("target=:{port}"),
        format!("target=%20:{port}"),
        format!("target=[]:{port}"),
        format!("target=::ffff:127.0.0.2:{port}"),
        format!("target=::1:{port}"),
        "target=[::ffff:127.0.0.2]".to_string(),
        "target=[::ffff:127.0.0.2]:0".to_string(),
        format!("target=[127.0.0.2]:{port}"),
        format!("target=[::ffff:127.0.0.2:{port}"),
        format!("target={long_host}:{port}"),
        format!("target={}:{port}", "a".repeat(64)),
        format!("target=ex%C3%A4mple.org:{port}"),
        format!("target=127.0.0.2%20:{port}"),
        format!("target=127.0.0.2/8:{port}"),
        format!("target=user@127.0.0.2:{port}"),
        format!("target=http://127.0.0.2:{port}"),
        // NUL bytes and control characters
        format!("target=127.0.0.2%00:{port}"),
        format!("target=%00127.0.0.2:{port}"),
        format!("target=127.0.0.2:{port}%00"),
        format!("target=127.0.0.2:{port}%0D%0AX-Injected:%201"),
        format!("target=127.0.0.2%09:{port}"),
        // percent-encoded garbage
        "target=%".to_string(),
        "target=%4".to_string(),
        "target=%zz".to_string(),
        "target=%C0%AE".to_string(),
        format!("target=127.0.0.2%FF:{port}"),
        format!("target=127.0.0.2:{port}%"),
        format!("%74arget=127.0.0.2:{port}%G0"),
        // the first target counts, and other parameters are checked before connecting
        format!("target=&target=127.0.0.2:{port}"),
        format!("target=127.0.0.2:{port}&expect=bogus"),
        format!("target=127.0.0.2:{port}&debug=yes"),
        format!("tarGet=127.0.0.2:{port}"),
        String::new(),
    ];
    for query in &queries {
        let response = get(addr, &format!("/probe?{query}"));
        assert_eq!(response.status, 400, "{query:.80}: {}", response.text());
        let message = response.text();
        assert!(
            message.len() > 10 && message.ends_with('\n'),
            "{query:.80}: no message: {message:?}"
        );
        assert!(
            message.len() < 12_000,
            "{query:.80}: {} bytes",
            message.len()
        );
    }
    match bait.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("a bad /probe request connected to the bait: {other:?}"),
    }
    assert_healthy(addr);
    // The bait does see a probe that is allowed and well-formed: the check above can fail.
    let response = get(addr, &format!("/probe?target=127.0.0.2:{port}"));
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(
        bait.accept().is_ok(),
        "the control probe did not reach the bait"
    );
    assert_no_exporter_panics();
    exporter.stop();
}

#[test]
fn max_requests_answers_503_at_once_beyond_the_cap_and_recovers() {
    let silent = silent_port();
    let exporter = start(
        "[defaults]\ntimeout = \"2s\"\nretries = 1\n[probe]\nallow = [\"127.0.0.0/8\"]\n",
        Options {
            max_requests: 2,
            ..Options::default()
        },
    );
    let addr = exporter.addr;
    let path = format!("/probe?target=127.0.0.1:{}", silent.port);
    // Two requests that take the probe's whole budget (2 attempts of 2 s): the cap is full.
    let held: Vec<_> = (0..2)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let response = get(addr, &path);
                (response.status, response.text(), started.elapsed())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    for path in ["/-/healthy", "/metrics", path.as_str()] {
        let started = Instant::now();
        let response = get(addr, path);
        assert_eq!(response.status, 503, "{path}: {}", response.text());
        assert!(
            response.text().contains("--web.max-requests"),
            "{}",
            response.text()
        );
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{path}: 503 after {:?}, not at once",
            started.elapsed()
        );
    }
    for thread in held {
        let (status, text, took) = thread.join().unwrap();
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("state=\"filtered\"} 1"), "{text}");
        assert!(took >= Duration::from_millis(3_500), "{took:?}");
    }
    // Slots are given back: served again, and so are two at a time.
    assert_healthy(addr);
    let pair: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || get(addr, "/metrics").status))
        .collect();
    for thread in pair {
        assert_eq!(thread.join().unwrap(), 200);
    }
    drop(silent);
    assert_no_exporter_panics();
    exporter.stop();
}

/// A config whose `/metrics` is about 20 MB (20,000 shown ports): far more than the socket
/// buffers hold, so a client that does not read stalls the response.
const BIG_METRICS: &str = "[[targets]]\nhost = \"127.0.0.1\"\nports = [\"1-20000\"]\nexpect = \"open\"\ninterval = \"1h\"\ntimeout = \"500ms\"\n";

/// `count` clients that ask for `/metrics` and never read.
fn stalled_metrics_clients(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    (0..count)
        .map(|_| {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            stream
        })
        .collect()
}

/// How many bytes came before the server closed `stream` (EOF or reset), reading whatever it
/// sent; `None` when it did not close it within `limit`.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<usize> {
    let deadline = Instant::now() + limit;
    let mut buf = vec![0u8; 64 * 1024];
    let mut received = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return Some(received),
            Ok(n) => received += n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Some(received),
            Err(_) => return None,
        }
    }
}

/// Regression: a client that asked for /metrics and never read kept its connection (and the
/// rendering its response pinned) for ever; there was no write timeout.
#[test]
fn a_client_that_never_reads_is_dropped_after_the_write_timeout() {
    let exporter = start(
        BIG_METRICS,
        Options {
            timeouts: port_exporter::web::Timeouts {
                write: Duration::from_secs(2),
                idle: Duration::from_secs(60),
            },
            ..Options::default()
        },
    );
    let addr = exporter.addr;
    let started = Instant::now();
    let mut stalled = stalled_metrics_clients(addr, 20);
    // Let every response start and stall; meanwhile the server answers everyone else.
    std::thread::sleep(Duration::from_millis(500));
    assert_healthy(addr);
    // Still open before the timeout: the one stalled read drains nothing on purpose.
    let first = &mut stalled[0];
    first.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    assert!(
        matches!(first.peek(&mut byte), Ok(1)),
        "the response started"
    );
    first.set_nonblocking(false).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    // Past the 2 s write timeout (checked every 0.5 s), each connection is gone: reading now
    // drains what the kernel still held, then finds the end, well short of the whole body.
    let whole = get(addr, "/metrics").body.len();
    for (i, stream) in stalled.iter_mut().enumerate() {
        let received = closed_within(stream, Duration::from_secs(5));
        assert!(
            received.is_some_and(|n| n < whole),
            "stalled connection {i}: {received:?} of {whole} bytes before the end, after {:?}",
            started.elapsed()
        );
    }
    assert_healthy(addr);
    assert_no_exporter_panics();
    exporter.stop();
}

/// Regression: idle keep-alive connections stayed open for ever, and there was no cap on
/// connections open at once.
#[test]
fn connections_are_capped_and_idle_ones_closed_after_the_idle_timeout() {
    let exporter = start(
        "",
        Options {
            max_connections: 20,
            timeouts: port_exporter::web::Timeouts {
                write: Duration::from_secs(30),
                idle: Duration::from_secs(3),
            },
            ..Options::default()
        },
    );
    let addr = exporter.addr;
    // 20 idle connections take every place.
    let mut idle: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    // The next one is closed at once, without an answer.
    let mut over = TcpStream::connect(addr).unwrap();
    let _ = over.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut answer = Vec::new();
    over.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let read = over.read_to_end(&mut answer);
    assert!(
        answer.is_empty()
            && read.map_or_else(|e| e.kind() == ErrorKind::ConnectionReset, |n| n == 0),
        "a connection over the cap was served: {:?}",
        String::from_utf8_lossy(&answer)
    );
    // The idle ones are closed after the idle timeout; then new connections are served.
    let started = Instant::now();
    for stream in &mut idle {
        assert_eq!(
            closed_within(stream, Duration::from_secs(6)),
            Some(0),
            "an idle connection stayed open"
        );
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "idle connections closed after {took:?}"
    );
    assert_healthy(addr);
    assert_no_exporter_panics();
    exporter.stop();
}

/// Regression: `--web.max-requests` let a request go as soon as its handler returned, so
/// responses still being sent (to clients that do not read) were not counted and could pile up
/// without bound. A response holds its slot until it is sent, or dropped by the write timeout.
#[test]
fn responses_being_sent_hold_their_request_slot() {
    let exporter = start(
        BIG_METRICS,
        Options {
            max_requests: 2,
            timeouts: port_exporter::web::Timeouts {
                write: Duration::from_secs(2),
                idle: Duration::from_secs(60),
            },
            ..Options::default()
        },
    );
    let addr = exporter.addr;
    // Two clients ask for 20 MB of metrics and do not read.
    let mut stalled = stalled_metrics_clients(addr, 2);
    std::thread::sleep(Duration::from_millis(800));
    let response = get(addr, "/-/healthy");
    assert_eq!(response.status, 503, "{}", response.text());
    // The write timeout (2 s, looked at every 0.5 s) drops them, and their slots come back.
    std::thread::sleep(Duration::from_secs(3));
    for stream in &mut stalled {
        assert!(closed_within(stream, Duration::from_secs(6)).is_some());
    }
    assert_healthy(addr);
    assert_no_exporter_panics();
    exporter.stop();
}
