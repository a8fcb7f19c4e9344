//! Basic auth under a flood of wrong passwords: the scraper with the right (cached) password
//! keeps getting 200 quickly, the process does not pile up threads, and start-up warns when
//! passwords travel over plain HTTP.
//!
//! Runs the binary (so `/proc/PID/status` counts its threads alone) on 127.0.0.1 with a web
//! config of bcrypt users; the flood comes from async clients of this process, each on one
//! keep-alive connection, in a loop bounded in requests and time.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{http, try_http};

/// Clients sending wrong passwords at once.
const FLOOD_CLIENTS: usize = 150;
/// How long the flood lasts.
const FLOOD_TIME: Duration = Duration::from_secs(4);
/// Most requests one flood client sends.
const FLOOD_REQUESTS_PER_CLIENT: usize = 400;
/// How long one right-password request may take under the flood.
const RIGHT_LIMIT: Duration = Duration::from_secs(1);
/// Most threads the exporter may have under the flood: the runtime's workers (one per core),
/// the main thread, a few blocking-pool threads and the bcrypt thread; far below the 132 the
/// flood used to make.
const MAX_THREADS: usize = 16;

/// The binary, killed on drop.
struct Binary {
    child: Child,
    addr: SocketAddr,
    /// Its stderr up to the "port_exporter started" line.
    start_log: Vec<String>,
}

impl Binary {
    fn start(dir: &Path, web_config: &str) -> Binary {
        let config = dir.join("ports.toml");
        std::fs::write(&config, "").unwrap();
        let web = dir.join("web.yml");
        std::fs::write(&web, web_config).unwrap();
        let (child, addr, start_log) = common::start_binary(&[
            "--config.file",
            config.to_str().unwrap(),
            "--web.config.file",
            web.to_str().unwrap(),
        ]);
        Binary {
            child,
            addr,
            start_log,
        }
    }

    /// `Threads:` of /proc/PID/status.
    fn threads(&self) -> usize {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .expect("a Threads line")
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        common::base64(format!("{user}:{password}").as_bytes())
    )
}

/// alice (password "wonderland") and bob ("builder"), bcrypt cost 8.
fn users() -> String {
    let alice = bcrypt::hash("wonderland", 8).unwrap();
    let bob = bcrypt::hash("builder", 8).unwrap();
    format!("basic_auth_users:\n  alice: {alice}\n  bob: {bob}\n")
}

/// What one flood client got: status to count, and whether every 429 had a Retry-After.
#[derive(Default)]
struct Tally {
    statuses: BTreeMap<u16, usize>,
    retry_after_missing: usize,
    errors: usize,
}

/// One response read off a keep-alive connection: status and lower-cased header names.
async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
) -> std::io::Result<(u16, BTreeMap<String, String>)> {
    stream.write_all(request).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 || head.len() > 64 * 1024 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await?;
    Ok((status, headers))
}

/// One flood client: wrong passwords (client `n` odd: an unknown user) on one keep-alive
/// connection, reconnecting when it closes, until `deadline` or its request bound.
async fn flood_client(addr: SocketAddr, n: usize, deadline: Instant) -> Tally {
    let mut tally = Tally::default();
    let mut stream = None;
    for i in 0..FLOOD_REQUESTS_PER_CLIENT {
        if Instant::now() >= deadline {
            break;
        }
        let authorization = if n.is_multiple_of(2) {
            basic("alice", &format!("wrong-{n}-{i}"))
        } else {
            basic(&format!("mallory{n}"), "wonderland")
        };
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {authorization}\r\n\r\n"
        );
        if stream.is_none() {
            stream = TcpStream::connect(addr).await.ok();
        }
        let Some(connection) = stream.as_mut() else {
            tally.errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let left = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(5);
        match tokio::time::timeout(left, exchange(connection, request.as_bytes())).await {
            Ok(Ok((status, headers))) => {
                *tally.statuses.entry(status).or_default() += 1;
                if status == 429 && !headers.contains_key("retry-after") {
                    tally.retry_after_missing += 1;
                }
                if headers.get("connection").is_some_and(|v| v == "close") {
                    stream = None;
                }
            }
            _ => {
                tally.errors += 1;
                stream = None;
            }
        }
    }
    tally
}

/// The flood, on a runtime of its own in another thread: 150 clients until `deadline`.
fn start_flood(addr: SocketAddr, deadline: Instant) -> std::thread::JoinHandle<Tally> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let clients: Vec<_> = (0..FLOOD_CLIENTS)
                .map(|n| tokio::spawn(flood_client(addr, n, deadline)))
                .collect();
            let mut total = Tally::default();
            for client in clients {
                let tally = client.await.unwrap_or_default();
                for (status, count) in tally.statuses {
                    *total.statuses.entry(status).or_default() += count;
                }
                total.retry_after_missing += tally.retry_after_missing;
                total.errors += tally.errors;
            }
            total
        })
    })
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() - 1) * p / 100]
}

#[test]
fn wrong_passwords_do_not_lock_out_the_right_one_nor_pile_up_threads() {
    let dir = tempfile::tempdir().unwrap();
    let exporter = Binary::start(dir.path(), &users());
    let addr = exporter.addr;
    let right = basic("alice", "wonderland");
    let scrape = |authorization: &str| {
        let start = Instant::now();
        let response = try_http(addr, "GET", "/metrics", &[("Authorization", authorization)]);
        (response.map(|r| r.status).unwrap_or(0), start.elapsed())
    };
    // One successful request puts alice's password in the cache.
    assert_eq!(scrape(&right).0, 200);
    let threads_before = exporter.threads();

    let deadline = Instant::now() + FLOOD_TIME;
    let flood = start_flood(addr, deadline);
    // Let the flood build up before the first right-password scrape.
    std::thread::sleep(Duration::from_millis(500));
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    let mut max_threads = threads_before;
    while Instant::now() < deadline && latencies.len() < 40 {
        let (status, took) = scrape(&right);
        if status != 200 || took >= RIGHT_LIMIT {
            failures.push((status, took));
        }
        latencies.push(took);
        max_threads = max_threads.max(exporter.threads());
        std::thread::sleep(Duration::from_millis(50));
    }
    let tally = flood.join().unwrap();
    latencies.sort();
    println!(
        "right password under the flood: {} requests, p50 {:?}, max {:?}; failures {failures:?}",
        latencies.len(),
        percentile(&latencies, 50),
        latencies.last().unwrap(),
    );
    println!(
        "flood: {:?}, {} errors; threads {threads_before} before, {max_threads} at most",
        tally.statuses, tally.errors
    );
    assert!(
        latencies.len() >= 10,
        "a few scrapes during the flood: {latencies:?}"
    );
    assert!(
        failures.is_empty(),
        "right-password scrapes that failed or took {RIGHT_LIMIT:?} or more: {failures:?}"
    );
    assert!(
        max_threads <= MAX_THREADS,
        "{max_threads} threads under the flood (bound {MAX_THREADS})"
    );
    // The bcrypt bound was hit: failures beyond it got 429 with Retry-After, and no wrong
    // password ever passed or took a request slot (503).
    assert!(
        tally.statuses.get(&429).is_some_and(|n| *n > 0),
        "{:?}",
        tally.statuses
    );
    assert!(
        tally.statuses.get(&401).is_some_and(|n| *n > 0),
        "{:?}",
        tally.statuses
    );
    assert!(
        tally.statuses.keys().all(|s| [401, 429].contains(s)),
        "{:?}",
        tally.statuses
    );
    assert_eq!(tally.retry_after_missing, 0, "every 429 has a Retry-After");
    // After the flood, a user never seen before still gets in (a bcrypt run is free again),
    // and a wrong password is a plain 401 again.
    assert_eq!(scrape(&basic("bob", "builder")).0, 200);
    let wrong = http(
        addr,
        "GET",
        "/metrics",
        &[("Authorization", &basic("bob", "x"))],
    );
    assert_eq!(wrong.status, 401);
}

#[test]
fn basic_auth_over_plain_http_is_a_start_up_warning() {
    let dir = tempfile::tempdir().unwrap();
    let exporter = Binary::start(dir.path(), &users());
    let warning = exporter
        .start_log
        .iter()
        .find(|l| l.contains("level=warn") && l.contains("clear text"));
    assert!(
        warning.is_some(),
        "no warning about clear-text passwords: {:?}",
        exporter.start_log
    );
    // Without users there is nothing to warn about.
    let dir = tempfile::tempdir().unwrap();
    let plain = Binary::start(dir.path(), "");
    assert!(
        !plain.start_log.iter().any(|l| l.contains("clear text")),
        "{:?}",
        plain.start_log
    );
}
