//! The bounds of `/probe` against the real server (in this process, on 127.0.0.1:0): its own
//! cap on connects in flight across requests, and the ceiling on the budget a scrape timeout
//! header can ask for.
//!
//! Traffic goes only to loopback.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The connects the exporter has in flight to `port` on 127.0.0.1: sockets in SYN_SENT, as
/// /proc/net/tcp lists them (state 02). The file is not read at once: a socket that moves in
/// the table meanwhile can be listed twice, so they are counted by their local address.
fn connecting_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let connecting: std::collections::BTreeSet<&str> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let remote_port = fields[2]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            (remote_port == Some(port) && fields[3] == "02").then_some(fields[1])
        })
        .collect();
    connecting.len()
}

/// Regression: `/probe` connected to every address of every request at once, outside the
/// scheduler's cap and pacer, so a flood of requests opened as many sockets as it liked. Now
/// at most 16 connects are in flight across `/probe` requests; a request finding none free
/// waits within its budget, then gets 503.
#[test]
fn probe_connects_in_flight_are_capped_across_requests() {
    /// `/probe`'s cap on connects in flight (`web::probe::PROBE_CONNECTS`).
    const CAP: usize = 16;
    const FIRST: usize = 16;
    const MORE: usize = 24;
    let silent = silent_port();
    let exporter = start_exporter(
        "[defaults]\ntimeout = \"1s\"\nretries = 1\n[probe]\nallow = [\"127.0.0.0/8\"]\n",
    );
    let addr = exporter.addr;
    wait_ready(addr, Duration::from_secs(10));
    let path = format!("/probe?target=127.0.0.1:{}", silent.port);
    let request = |timeout: Option<&'static str>| {
        let path = path.clone();
        std::thread::spawn(move || {
            let headers: Vec<(&str, &str)> = timeout
                .map(|t| ("X-Prometheus-Scrape-Timeout-Seconds", t))
                .into_iter()
                .collect();
            let sent = Instant::now();
            let response = http(addr, "GET", &path, &headers);
            (response.status, response.text(), sent.elapsed())
        })
    };
    // 16 requests that take their whole budget (2 attempts of 1 s) at the silent port...
    let first: Vec<_> = (0..FIRST).map(|_| request(None)).collect();
    let mut most_connecting = 0;
    let watch_until = |until: Instant, most: &mut usize| {
        while Instant::now() < until {
            *most = (*most).max(connecting_to(silent.port));
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let started = Instant::now();
    watch_until(started + Duration::from_millis(400), &mut most_connecting);
    // ... then 24 more with a budget of 1 s, over before the first ones free a slot.
    let more: Vec<_> = (0..MORE).map(|_| request(Some("1.5"))).collect();
    watch_until(started + Duration::from_millis(2300), &mut most_connecting);
    let more: Vec<_> = more.into_iter().map(|t| t.join().unwrap()).collect();
    let first: Vec<_> = first.into_iter().map(|t| t.join().unwrap()).collect();
    let refused = more.iter().filter(|(status, _, _)| *status == 503).count();
    println!(
        "{FIRST} + {MORE} requests at a silent port: at most {most_connecting} connects at once, \
         {refused} x 503"
    );
    assert!(
        most_connecting <= CAP,
        "{most_connecting} connects in flight at once"
    );
    assert!(most_connecting >= CAP / 2, "the probes never connected");
    for (status, text, took) in more {
        assert_eq!(status, 503, "{text}");
        assert!(text.contains("try again"), "{text}");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_millis(1500),
            "503 after {took:?}: not within its budget of 1 s"
        );
    }
    for (status, text, took) in first {
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("state=\"filtered\"} 1"), "{text}");
        assert!(took < Duration::from_millis(2500), "{took:?}");
    }
    // The slots come back.
    let (status, text, _) = request(Some("1")).join().unwrap();
    assert_eq!(status, 200, "{text}");
    drop(silent);
    exporter.stop();
}

/// Regression: `X-Prometheus-Scrape-Timeout-Seconds: 86400` gave a `/probe` a budget of a day,
/// its lookup included. The header counts up to 60 s; what is not a positive number of seconds
/// is ignored (the config's budget applies), as before.
#[test]
fn the_scrape_timeout_header_has_a_ceiling() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let exporter = start_exporter(
        "[defaults]\ntimeout = \"500ms\"\nretries = 1\n[probe]\nallow = [\"127.0.0.0/8\"]\n",
    );
    wait_ready(exporter.addr, Duration::from_secs(10));
    let path = format!("/probe?target=127.0.0.1:{closed}&debug=true");
    for (header, budget) in [
        ("86400", "budget 59.5s"),
        ("1e300", "budget 59.5s"),
        ("60.5", "budget 59.5s"),
        ("30", "budget 29.5s"),
        ("1.5", "budget 1s"),
        ("nan", "budget 1s"),
        ("inf", "budget 1s"),
        ("-3", "budget 1s"),
        ("0", "budget 1s"),
        ("soon", "budget 1s"),
    ] {
        let response = http(
            exporter.addr,
            "GET",
            &path,
            &[("X-Prometheus-Scrape-Timeout-Seconds", header)],
        );
        assert_eq!(response.status, 200, "{header}: {}", response.text());
        let trace = response.text();
        assert!(
            trace.contains(budget),
            "{header}: wanted {budget}:\n{trace}"
        );
    }
    exporter.stop();
}
