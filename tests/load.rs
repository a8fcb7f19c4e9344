//! Load: 64 scrapers at once for 30 s against the binary with 10,000 targets. Every response
//! must be a complete 200, and resident memory must stay flat.
//!
//! The targets are closed ports on 127.1.x.y (loopback). The longer soak (a million probes) is
//! `scripts/soak.sh`; see docs/RELIABILITY.md.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const TARGETS: usize = 10_000;
const SCRAPERS: usize = 64;
const LOAD: Duration = Duration::from_secs(40);
/// RSS climbs while concurrent responses keep several renderings alive; with the test binary's
/// other test running beside it, 10 s was seen to be too short for that climb (91 -> 103 MiB).
const WARM_UP: Duration = Duration::from_secs(15);

/// The tests of this file measure resident memory and rates, so they run one at a time: the 64
/// scrapers beside the soak slowed its rounds past their interval (4,667 probes/s instead of
/// 25,000), and a round half done at the warm-up's sample read as 7.6 % growth.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// What went wrong with one response, if anything.
fn check_response(head: &str, body: &[u8]) -> Result<(), String> {
    if !head.starts_with("HTTP/1.1 200 ") {
        return Err(format!(
            "status: {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    if !body.starts_with(b"# HELP port_state ") {
        return Err(format!(
            "body starts with {:?}",
            String::from_utf8_lossy(&body[..body.len().min(40)])
        ));
    }
    // The last family rendered is the process collector's; the body ends with its sample.
    let tail = String::from_utf8_lossy(&body[body.len().saturating_sub(200)..]).to_string();
    let last_line = tail
        .trim_end_matches('\n')
        .rsplit('\n')
        .next()
        .unwrap_or_default();
    if !body.ends_with(b"\n") || !last_line.starts_with("process_virtual_memory_bytes ") {
        return Err(format!("body ends with {tail:?}"));
    }
    Ok(())
}

/// One GET /metrics on a kept-alive connection: the response's head and body (by
/// Content-Length).
fn scrape(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(String, usize), String> {
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: load\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    buf.clear();
    let mut chunk = [0u8; 65536];
    let head_end = loop {
        let n = stream.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before the head".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        if buf.len() > 65536 {
            return Err("no end of head".into());
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .ok_or_else(|| format!("no content-length: {head}"))?
        .parse()
        .map_err(|e| format!("content-length: {e}"))?;
    let body_start = head_end + 4;
    let have = buf.len() - body_start;
    if have > length {
        return Err(format!("{have} bytes for a body of {length}"));
    }
    buf.resize(body_start + length, 0);
    stream
        .read_exact(&mut buf[body_start + have..])
        .map_err(|e| format!("body: {e} (Content-Length {length})"))?;
    check_response(&head, &buf[body_start..])?;
    Ok((head, length))
}

/// `defaults` and then [`TARGETS`] targets of one closed port each: 127.1.0.1 to
/// 127.1.39.250, ports 1000 to 1999, where nothing listens.
fn closed_targets(defaults: &str) -> String {
    let mut text = String::from(defaults);
    for i in 0..TARGETS {
        text.push_str(&format!(
            "[[targets]]\nname = \"t{i}\"\nhost = \"127.1.{}.{}\"\nports = [{}]\n",
            i / 250,
            i % 250 + 1,
            1000 + i % 1000
        ));
    }
    text
}

#[test]
fn sixty_four_scrapers_for_40_s_on_10000_targets_get_complete_200s_and_rss_stays_flat() {
    let _alone = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("load.toml");
    let text = closed_targets("[defaults]\ninterval = \"15s\"\ntimeout = \"1s\"\nretries = 0\n");
    std::fs::write(&config, text).unwrap();
    let (child, addr, _) = start_binary(&[
        "--config.file",
        config.to_str().unwrap(),
        "--web.max-requests",
        "128",
    ]);
    let pid = child.id();
    // Killed on drop, also when an assertion fails first.
    let _child = KillOnDrop(child);
    wait_ready(addr, Duration::from_secs(60));
    let first = get(addr, "/metrics");
    let samples = parse_samples(&first.text());
    assert_eq!(
        find(&samples, "port_state", &[("state", "closed")])
            .iter()
            .filter(|s| s.value == 1.0)
            .count(),
        TARGETS
    );

    let stop = Arc::new(AtomicBool::new(false));
    let rss: Arc<Mutex<Vec<(Duration, u64)>>> = Arc::default();
    let started = Instant::now();
    let sampler = {
        let (stop, rss) = (stop.clone(), rss.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                rss.lock()
                    .unwrap()
                    .push((started.elapsed(), vm_rss_kib(pid)));
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    let scrapers: Vec<_> = (0..SCRAPERS)
        .map(|_| std::thread::spawn(move || scraper(addr, started + LOAD)))
        .collect();
    let mut done = 0usize;
    let mut bytes = 0usize;
    let mut errors = Vec::new();
    let mut latencies = Vec::new();
    for thread in scrapers {
        let result = thread.join().unwrap();
        done += result.done;
        bytes += result.bytes;
        errors.extend(result.errors);
        latencies.extend(result.latencies);
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();

    latencies.sort_unstable();
    let percentile = |p: f64| {
        let last = latencies.len().saturating_sub(1);
        latencies
            .get((last as f64 * p) as usize)
            .copied()
            .unwrap_or_default()
    };
    let rss = rss.lock().unwrap().clone();
    let window_max = |from: Duration, to: Duration| {
        rss.iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, kib)| *kib)
            .max()
            .expect("RSS samples in the window")
    };
    let early = window_max(WARM_UP, WARM_UP + Duration::from_secs(10));
    let late = window_max(LOAD - Duration::from_secs(10), LOAD);
    let overall = rss.iter().map(|(_, kib)| *kib).max().unwrap();
    println!(
        "{SCRAPERS} scrapers, {elapsed:.1?}: {done} scrapes ({:.1}/s, {:.0} MB/s), latency p50 {:?} p99 {:?} max {:?}; \
         VmRSS max {} MiB in {:?}..{:?}, {} MiB in the last 10 s, {} MiB overall",
        done as f64 / elapsed.as_secs_f64(),
        bytes as f64 / elapsed.as_secs_f64() / 1e6,
        percentile(0.5),
        percentile(0.99),
        latencies.last().copied().unwrap_or_default(),
        early / 1024,
        WARM_UP,
        WARM_UP + Duration::from_secs(10),
        late / 1024,
        overall / 1024
    );
    assert!(
        errors.is_empty(),
        "{} errors: {:?}",
        errors.len(),
        &errors[..errors.len().min(10)]
    );
    assert!(done >= SCRAPERS * 2, "only {done} scrapes");
    assert!(
        late as f64 <= early as f64 * 1.10,
        "VmRSS grew: {early} KiB after warm-up, {late} KiB in the last 10 s"
    );
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Scraped {
    done: usize,
    bytes: usize,
    errors: Vec<String>,
    latencies: Vec<Duration>,
}

/// Scrapes on one kept-alive connection (as Prometheus does) until `until`; reconnects after
/// an error, which is counted.
fn scraper(addr: SocketAddr, until: Instant) -> Scraped {
    let mut result = Scraped {
        done: 0,
        bytes: 0,
        errors: Vec::new(),
        latencies: Vec::new(),
    };
    let mut buf = Vec::new();
    let connect = || {
        let stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(stream)
    };
    let mut stream = None;
    while Instant::now() < until {
        let connection = match stream.take() {
            Some(connection) => Ok(connection),
            None => connect(),
        };
        let started = Instant::now();
        match connection.and_then(|mut c| scrape(&mut c, &mut buf).map(|r| (c, r))) {
            Ok((connection, (_, length))) => {
                result.latencies.push(started.elapsed());
                result.done += 1;
                result.bytes += length;
                stream = Some(connection);
            }
            Err(error) => result.errors.push(error),
        }
    }
    result
}

/// The soak's smoke run: `scripts/soak.sh` with this build's binary, a full 1-65535 range every
/// 5 s for 20 s in a namespace of its own; RSS's peak must not grow 15 % after a 10 s warm-up.
/// 15, not the real soak's 5: this short run of a debug build sees the allocator step RSS by up
/// to 2 MiB (5.76 % of 35 MiB, 1 run in 9 here) with no trend, while the leak it is for (200
/// bytes a probe, `std::mem::forget` in the probe task) measured 42.9 %. (The real
/// soak, a million probes and more, is documented in docs/RELIABILITY.md.)
#[test]
fn soak_smoke_full_range_every_5_s_keeps_rss_flat() {
    let _alone = one_at_a_time();
    if !nix::unistd::geteuid().is_root() && skip("the soak needs root for its namespace") {
        return;
    }
    for tool in ["ip", "curl", "awk"] {
        if !have(tool) && skip(&format!("the soak needs {tool}")) {
            return;
        }
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/soak.sh");
    let out = std::process::Command::new("bash")
        .args([
            script,
            "--bin",
            env!("CARGO_BIN_EXE_port_exporter"),
            "--duration",
            "20",
            "--warmup",
            "10",
            "--min-probes",
            "100000",
            "--max-growth",
            "15",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("all goals met"),
        "soak.sh: {:?}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Regression: 300 clients that sent `GET /metrics` and never read, on 10,000 pairs with a new
/// rendering every few seconds, added 456 MB of resident memory: each stalled response kept
/// its own rendering. Renderings that responses hold are bounded (128 MiB, or three of the
/// current size); past it the oldest responses are dropped. The write timeout, which would end
/// them anyway, is set far beyond the test so that only the bound is at work.
#[test]
fn stalled_readers_pin_a_bounded_amount_of_memory() {
    let _alone = one_at_a_time();
    const STALLED: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("stalled.toml");
    // Rounds every second, so the table changes (and a scrape renders anew) all the time.
    let text = closed_targets("[defaults]\ninterval = \"1s\"\ntimeout = \"500ms\"\nretries = 0\n");
    std::fs::write(&config, text).unwrap();
    let (child, addr, _) = start_binary(&[
        "--config.file",
        config.to_str().unwrap(),
        "--web.write-timeout",
        "10m",
        "--web.max-requests",
        "0",
    ]);
    let pid = child.id();
    let _child = KillOnDrop(child);
    wait_ready(addr, Duration::from_secs(60));
    let rendering = get(addr, "/metrics").body.len() as u64;
    std::thread::sleep(Duration::from_secs(2));
    let before = vm_rss_kib(pid);
    // Stalled clients arrive over 15 s, each after the table changed: a rendering each.
    let started = Instant::now();
    let mut stalled = Vec::with_capacity(STALLED);
    let mut peak = before;
    for i in 0..STALLED {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        stalled.push(stream);
        std::thread::sleep(Duration::from_millis(50));
        if i % 10 == 0 {
            peak = peak.max(vm_rss_kib(pid));
        }
    }
    while started.elapsed() < Duration::from_secs(20) {
        peak = peak.max(vm_rss_kib(pid));
        std::thread::sleep(Duration::from_millis(250));
    }
    let grown_mib = (peak.saturating_sub(before)) / 1024;
    println!(
        "{STALLED} stalled readers, renderings of {} KiB: VmRSS {} MiB before, peak {} MiB (+{grown_mib} MiB)",
        rendering / 1024,
        before / 1024,
        peak / 1024
    );
    // The bound (128 MiB here) plus the allocator's slack and the renderings in the making.
    assert!(
        grown_mib < 200,
        "stalled readers grew the exporter by {grown_mib} MiB"
    );
    // The exporter still serves.
    assert_eq!(get(addr, "/-/healthy").status, 200);
    drop(stalled);
}
