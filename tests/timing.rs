//! The lab tests of the timing (issue 12): the truth under loss and delay, and speed on silence.
//! A network namespace per test with iptables rules on its loopback (random loss with
//! `-m statistic`, the exact loss of one packet with `--mode nth`, late answers through an
//! NFQUEUE delayer, a firewalled host), the real exporter binary inside it with the default
//! timing, and `nmap -sT -T4` on the same ports in the same namespace as the peer.
//!
//! Needs what the lab needs (`lab_available`: root, iproute2, iptables, nmap, ...) and NFQUEUE
//! in the kernel: without them each test prints `SKIPPED: <why>`, and fails under CI=true.
//! The tests run one at a time (they measure time and count timeouts, so they must not share
//! the two cores with each other).

mod common;

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use common::delayer::Delayer;
use common::netns::*;
use common::*;

/// One test at a time.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Short, so that several rounds fit in a test; the timing itself is the default (no
/// `timeout`, `retries` or `timing` key anywhere in these tests' configs).
const INTERVAL: &str = "5s";

/// The target's config: `ports` of 127.0.0.1 listed one by one (so every port has its series),
/// every other setting the default.
fn lab_config(ports: &[u16]) -> String {
    let list = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[defaults]\ninterval = \"{INTERVAL}\"\n\n[[targets]]\nname = \"lab\"\nhost = \"127.0.0.1\"\nports = [{list}]\n"
    )
}

/// The true state of every probed port: open (a listener) or closed (nothing listens).
struct Truth(BTreeMap<u16, &'static str>);

impl Truth {
    fn new(open: &[u16], closed: &[u16]) -> Truth {
        let open = open.iter().map(|&p| (p, "open"));
        let closed = closed.iter().map(|&p| (p, "closed"));
        Truth(open.chain(closed).collect())
    }

    fn ports(&self) -> Vec<u16> {
        self.0.keys().copied().collect()
    }

    fn nmap_list(&self) -> String {
        self.ports()
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The exporter as seen in a scrape at the end of one of its rounds.
struct RoundEnd {
    /// `port_exporter_probes_total` per state, so far (the exporter probes nothing else).
    probes: BTreeMap<String, u64>,
    /// Whether the scrape fell between two rounds (nothing in flight, exactly k rounds of
    /// probes finished); if not (rounds back to back), its figures straddle two rounds.
    exact: bool,
    /// Every probed port's state in that scrape.
    states: BTreeMap<u16, String>,
    samples: Vec<Sample>,
}

impl RoundEnd {
    fn count(&self, state: &str) -> u64 {
        self.probes.get(state).copied().unwrap_or(0)
    }

    fn total(&self) -> u64 {
        self.probes.values().sum()
    }
}

/// Follows the exporter's rounds by scraping it every 50 ms: a round has ended when the
/// probes finished reach the next multiple of the number of ports.
struct Rounds<'a> {
    ns: &'a Netns,
    ports: usize,
    ends: Vec<RoundEnd>,
}

impl<'a> Rounds<'a> {
    fn new(ns: &'a Netns, ports: usize) -> Rounds<'a> {
        Rounds {
            ns,
            ports,
            ends: Vec::new(),
        }
    }

    /// Returns once `rounds` rounds in all of `exporter` have ended; panics after `limit`.
    fn follow(&mut self, exporter: &Process, rounds: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.ends.len() < rounds {
            assert!(
                Instant::now() < deadline,
                "{} of {rounds} rounds ended within {limit:?}; exporter log:\n{}",
                self.ends.len(),
                exporter.log()
            );
            let samples = parse_samples(&self.ns.get(EXPORTER_ADDR, "/metrics").text());
            let probes: BTreeMap<String, u64> = find(&samples, "port_exporter_probes_total", &[])
                .iter()
                .map(|s| (s.labels["state"].clone(), s.value as u64))
                .collect();
            let finished: u64 = probes.values().sum();
            let next = ((self.ends.len() + 1) * self.ports) as u64;
            if finished < next {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            let in_flight = value(&samples, "port_exporter_probes_in_flight", &[]);
            let states = find(&samples, "port_state", &[("target", "lab")])
                .into_iter()
                .filter(|s| s.value == 1.0)
                .map(|s| (s.labels["port"].parse().unwrap(), s.labels["state"].clone()))
                .collect();
            self.ends.push(RoundEnd {
                probes,
                exact: finished == next && in_flight == 0.0,
                states,
                samples,
            });
        }
    }

    fn last(&self) -> &RoundEnd {
        self.ends.last().expect("a round has ended")
    }

    /// Probes that read `state` in each round (`~` where the scrape straddled two rounds).
    fn per_round(&self, state: &str) -> String {
        let mut before = 0;
        self.ends
            .iter()
            .map(|end| {
                let now = end.count(state);
                let text = format!("{}{}", if end.exact { "" } else { "~" }, now - before);
                before = now;
                text
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Ports shown filtered at each round's end: the round's false filtered.
    fn filtered_ports(&self) -> Vec<(usize, u16)> {
        self.ends
            .iter()
            .enumerate()
            .flat_map(|(round, end)| {
                end.states
                    .iter()
                    .filter(|(_, s)| *s == "filtered")
                    .map(move |(&port, _)| (round + 1, port))
            })
            .collect()
    }

    /// (round, port, state) wherever a scrape showed a port in a state that is neither its
    /// true one nor filtered (an open port read closed, an error, a missing series).
    fn other_wrong(&self, truth: &Truth) -> Vec<(usize, u16, String)> {
        let mut wrong = Vec::new();
        for (round, end) in self.ends.iter().enumerate() {
            for (&port, &state) in &truth.0 {
                let seen = end.states.get(&port).map_or("none", String::as_str);
                if seen != state && seen != "filtered" {
                    wrong.push((round + 1, port, seen.to_string()));
                }
            }
        }
        wrong
    }
}

/// nmap's false filtered in one scan of ports whose truth is `truth`, after checking that
/// everything else it says is true (the lab is what we think it is).
fn nmap_false_filtered(scan: &NmapScan, truth: &Truth) -> usize {
    for (port, state) in &scan.listed {
        let true_state = truth.0.get(port).copied();
        assert!(
            Some(state.as_str()) == true_state || state == "filtered",
            "nmap: port {port} {state}, truly {true_state:?}"
        );
    }
    for (state, &count) in &scan.folded {
        assert_ne!(state, "filtered", "nmap folded filtered ports: {count}");
        let unlisted = truth
            .0
            .iter()
            .filter(|(port, s)| *s == state && !scan.listed.contains_key(port))
            .count();
        assert_eq!(count, unlisted, "nmap: {count} {state} ports not listed");
    }
    scan.count("filtered")
}

/// The nmap command of these tests: a connect scan at -T4, as its users run it.
fn nmap_t4(ns: &Netns, ports: &str, ip: &str) -> NmapScan {
    nmap_scan(ns, &["-sT", "-T4", "-Pn", "-n", "-p", ports, ip])
}

/// How many rounds of ours (and scans of nmap) each loss rate gets: 1,200 probes of 200 ports,
/// so 0.1% allows one false filtered.
const LOSS_ROUNDS: usize = 6;

/// 100 open and 100 closed ports; every packet to them and every answer from them is dropped
/// with probability `percent`/100. The exporter (first round included) and nmap, as many
/// scans as we have rounds, at the same time: at most 0.1% of our probes may read filtered,
/// and no more than nmap's.
fn random_loss(percent: u32) {
    if !lab_available() {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::create(&format!("loss{percent}"));
    let open: Vec<u16> = (20001..=20100).collect();
    let closed: Vec<u16> = (20101..=20200).collect();
    let truth = Truth::new(&open, &closed);
    let _listening = ns.listen_on("127.0.0.1", &open);
    // On loopback both directions pass INPUT: the SYNs to the probed ports match --dport, the
    // answers from them (SYN-ACK, RST) --sport. The exporter's own web port and the scrapes
    // are outside both ranges, and the prober's source ports (32768-60999) too.
    let p = f64::from(percent) / 100.0;
    let statistic = format!("-m statistic --mode random --probability {p} -j DROP");
    ns.iptables(&format!("-A INPUT -p tcp --dport 20001:20200 {statistic}"));
    ns.iptables(&format!("-A INPUT -p tcp --sport 20001:20200 {statistic}"));

    let started = Instant::now();
    let exporter = start_exporter_in(
        &ns,
        dir.path(),
        &lab_config(&truth.ports()),
        Duration::from_secs(60),
    );
    let nmap_ports = truth.nmap_list();
    let (rounds, scans) = std::thread::scope(|scope| {
        let scans = scope.spawn(|| {
            (0..LOSS_ROUNDS)
                .map(|_| nmap_t4(&ns, &nmap_ports, "127.0.0.1"))
                .collect::<Vec<_>>()
        });
        let mut rounds = Rounds::new(&ns, truth.0.len());
        rounds.follow(&exporter, LOSS_ROUNDS, Duration::from_secs(90));
        (rounds, scans.join().expect("nmap thread"))
    });
    let took = started.elapsed();
    drop(exporter);
    let drops = ns.rule_packets("INPUT");

    let last = rounds.last();
    let (ours, probes) = (last.count("filtered"), last.total());
    let theirs_per_scan: Vec<usize> = scans
        .iter()
        .map(|s| nmap_false_filtered(s, &truth))
        .collect();
    let theirs: usize = theirs_per_scan.iter().sum();
    let nmap_probes = scans.len() * truth.0.len();
    let nmap_time: Duration = scans.iter().map(|s| s.took).sum();
    let summary = format!(
        "{percent}% loss each way: ours {ours} of {probes} probes read filtered ({:.2}%; per round: {}; ports by round: {:?}), \
         nmap -sT -T4 {theirs} of {nmap_probes} ({:.2}%; per scan: {theirs_per_scan:?}; {nmap_time:.1?} of scans); \
         {} SYNs and {} answers dropped; {took:.1?} in all",
        100.0 * ours as f64 / probes as f64,
        rounds.per_round("filtered"),
        rounds.filtered_ports(),
        100.0 * theirs as f64 / nmap_probes as f64,
        drops[0],
        drops[1],
    );
    println!("{summary}");
    assert!(drops[0] > 0 && drops[1] > 0, "no loss happened: {summary}");
    assert_eq!(last.count("error"), 0, "{summary}");
    assert_eq!(rounds.other_wrong(&truth), vec![], "{summary}");
    assert!(
        ours * 1000 <= probes,
        "more than 0.1% of our probes read filtered: {summary}"
    );
    assert!(
        ours as usize <= theirs,
        "more false filtered than nmap: {summary}"
    );
}

#[test]
fn at_20_percent_loss_each_way_at_most_a_thousandth_reads_filtered_and_no_more_than_nmap() {
    random_loss(20);
}

#[test]
fn at_10_percent_loss_each_way_at_most_a_thousandth_reads_filtered_and_no_more_than_nmap() {
    random_loss(10);
}

#[test]
fn at_5_percent_loss_each_way_at_most_a_thousandth_reads_filtered_and_no_more_than_nmap() {
    random_loss(5);
}

/// `-m statistic --mode nth --every 2 --packet 0`: the first of every two packets a rule
/// matches is dropped. One rule per port, so each counts only its own packets.
const FIRST_OF_TWO: &str = "-m statistic --mode nth --every 2 --packet 0 -j DROP";

#[test]
fn one_lost_packet_never_reads_filtered() {
    if !lab_available() {
        return;
    }
    let _serial = serial();
    const ROUNDS: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::create("onelost");
    // The SYN of the first attempt is lost: to open ports, and to closed ones.
    let syn_open: Vec<u16> = (20001..=20010).collect();
    let syn_closed: Vec<u16> = (20011..=20020).collect();
    // The answer to the first attempt is lost: the SYN-ACK of open ports, the RST of closed.
    let answer_open: Vec<u16> = (20021..=20030).collect();
    let answer_closed: Vec<u16> = (20031..=20040).collect();
    let open = [syn_open.clone(), answer_open.clone()].concat();
    let closed = [syn_closed.clone(), answer_closed.clone()].concat();
    let truth = Truth::new(&open, &closed);
    let _listening = ns.listen_on("127.0.0.1", &open);
    // The listener must not resend a lost SYN-ACK on its own timer (1 s): that would be a
    // second answer to the first attempt and shift every rule's count of two. Answering a
    // retransmitted SYN with a SYN-ACK is not affected by this setting.
    ns.run(&["sysctl", "-q", "-w", "net.ipv4.tcp_synack_retries=0"]);
    for &port in syn_open.iter().chain(&syn_closed) {
        ns.iptables(&format!(
            "-A INPUT -p tcp --syn --dport {port} {FIRST_OF_TWO}"
        ));
    }
    for &port in &answer_open {
        ns.iptables(&format!(
            "-A INPUT -p tcp --sport {port} --tcp-flags SYN,ACK SYN,ACK {FIRST_OF_TWO}"
        ));
    }
    for &port in &answer_closed {
        ns.iptables(&format!(
            "-A INPUT -p tcp --sport {port} --tcp-flags RST RST {FIRST_OF_TWO}"
        ));
    }

    let started = Instant::now();
    let exporter = start_exporter_in(
        &ns,
        dir.path(),
        &lab_config(&truth.ports()),
        Duration::from_secs(60),
    );
    let mut rounds = Rounds::new(&ns, truth.0.len());
    rounds.follow(&exporter, ROUNDS, Duration::from_secs(60));
    drop(exporter);
    let took = started.elapsed();
    let drops = ns.rule_packets("INPUT");
    // nmap afterwards, once, its first packets lost the same way (the counts above are ours).
    let scan = nmap_t4(&ns, &truth.nmap_list(), "127.0.0.1");
    let theirs = nmap_false_filtered(&scan, &truth);

    let last = rounds.last();
    let rounds_done = last.total() / truth.0.len() as u64;
    let summary = format!(
        "first packet of each attempt pair lost: ours {} of {} probes read filtered (per round: {}; ports by round: {:?}), \
         nmap -sT -T4 {theirs} of {} in one scan ({:.1?}); drops per rule {}..{} ({} rules) for {rounds_done} rounds; {took:.1?}",
        last.count("filtered"),
        last.total(),
        rounds.per_round("filtered"),
        rounds.filtered_ports(),
        truth.0.len(),
        scan.took,
        drops.iter().min().unwrap(),
        drops.iter().max().unwrap(),
        drops.len(),
    );
    println!("{summary}");
    assert_eq!(drops.len(), truth.0.len());
    // Every round lost the first packet of every port.
    assert!(
        drops.iter().all(|&d| d >= rounds_done),
        "a round was not lossy: {summary}"
    );
    assert_eq!(rounds.other_wrong(&truth), vec![], "{summary}");
    assert_eq!(last.count("error"), 0, "{summary}");
    assert_eq!(
        rounds.filtered_ports(),
        vec![],
        "a port read filtered at a round's end: {summary}"
    );
    assert_eq!(last.count("filtered"), 0, "{summary}");
    assert!(last.count("filtered") as usize <= theirs, "{summary}");
}

#[test]
fn late_answers_read_their_true_states_even_when_the_delay_starts_mid_run() {
    if !lab_available() {
        return;
    }
    let _serial = serial();
    const QUEUE: u16 = 7;
    const CALM_ROUNDS: usize = 2;
    const LATE_ROUNDS: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::create("late");
    let open: Vec<u16> = (20001..=20050).collect();
    let closed: Vec<u16> = (20051..=20100).collect();
    let truth = Truth::new(&open, &closed);
    let _listening = ns.listen_on("127.0.0.1", &open);

    let started = Instant::now();
    let exporter = start_exporter_in(
        &ns,
        dir.path(),
        &lab_config(&truth.ports()),
        Duration::from_secs(60),
    );
    let mut rounds = Rounds::new(&ns, truth.0.len());
    // Rounds on a calm loopback first: the answers come in microseconds.
    rounds.follow(&exporter, CALM_ROUNDS, Duration::from_secs(30));
    let calm = rounds.last().count("filtered");

    // Then, between two rounds, every answer (SYN-ACK, RST) from the probed ports comes
    // 150-400 ms late, in any order.
    let delay = Duration::from_millis(150)..=Duration::from_millis(400);
    let delayer = match Delayer::start(&ns, QUEUE, delay) {
        Ok(delayer) => delayer,
        Err(error) => {
            skip(&format!("no NFQUEUE in this kernel: {error}"));
            return;
        }
    };
    for flags in ["SYN,ACK SYN,ACK", "RST RST"] {
        ns.iptables(&format!(
            "-A INPUT -p tcp --sport 20001:20100 --tcp-flags {flags} -j NFQUEUE --queue-num {QUEUE}"
        ));
    }
    let nmap_ports = truth.nmap_list();
    let scans = std::thread::scope(|scope| {
        let scans = scope.spawn(|| {
            (0..LATE_ROUNDS)
                .map(|_| nmap_t4(&ns, &nmap_ports, "127.0.0.1"))
                .collect::<Vec<_>>()
        });
        rounds.follow(
            &exporter,
            CALM_ROUNDS + LATE_ROUNDS,
            Duration::from_secs(60),
        );
        scans.join().expect("nmap thread")
    });
    let took = started.elapsed();
    let last = rounds.last();
    let host_rtt: Vec<f64> = find(&last.samples, "port_host_rtt_seconds", &[])
        .iter()
        .map(|s| s.value)
        .collect();
    let delayed = delayer.delayed();
    let mut connect: Vec<f64> = find(&last.samples, "port_connect_duration_seconds", &[])
        .iter()
        .map(|s| s.value)
        .collect();
    connect.sort_by(f64::total_cmp);
    drop(exporter);
    drop(delayer);

    let late = last.count("filtered") - calm;
    let late_probes = last.total() - rounds.ends[CALM_ROUNDS - 1].total();
    let theirs_per_scan: Vec<usize> = scans
        .iter()
        .map(|s| nmap_false_filtered(s, &truth))
        .collect();
    let theirs: usize = theirs_per_scan.iter().sum();
    let summary = format!(
        "answers 150-400 ms late from round {}: ours {late} of {late_probes} late probes read filtered \
         ({calm} before; per round: {}; ports by round: {:?}; connect times of the last round {:.3?}..{:.3?} s; \
         port_host_rtt_seconds {host_rtt:?}), \
         nmap -sT -T4 {theirs} of {} (per scan: {theirs_per_scan:?}; {:.1?} of scans); {delayed} answers delayed; {took:.1?}",
        CALM_ROUNDS + 1,
        rounds.per_round("filtered"),
        rounds.filtered_ports(),
        connect.first(),
        connect.last(),
        scans.len() * truth.0.len(),
        scans.iter().map(|s| s.took).sum::<Duration>(),
    );
    println!("{summary}");
    assert!(
        delayed >= late_probes,
        "the answers were not all delayed: {summary}"
    );
    assert_eq!(rounds.other_wrong(&truth), vec![], "{summary}");
    assert_eq!(last.count("error"), 0, "{summary}");
    assert_eq!(
        last.count("filtered"),
        0,
        "a late answer read filtered: {summary}"
    );
    assert!(late as usize <= theirs, "{summary}");
}

#[test]
fn a_firewalled_host_is_scanned_in_at_most_half_of_nmaps_time_and_agrees_with_it() {
    if !lab_available() {
        return;
    }
    let _serial = serial();
    // A host of its own in the namespace, so that the rules leave the exporter's web port on
    // 127.0.0.1 alone: every SYN to it is dropped, except to 80 and 443 (listeners: open) and
    // 8080 (a reset: closed).
    const HOST: &str = "198.18.0.1";
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::create("firewalled");
    ns.run(&["ip", "addr", "add", &format!("{HOST}/32"), "dev", "lo"]);
    let _listening = ns.listen_on(HOST, &[80, 443]);
    ns.iptables(&format!(
        "-A INPUT -d {HOST} -p tcp -m multiport --dports 80,443 -j ACCEPT"
    ));
    ns.iptables(&format!(
        "-A INPUT -d {HOST} -p tcp --dport 8080 -j REJECT --reject-with tcp-reset"
    ));
    ns.iptables(&format!("-A INPUT -d {HOST} -p tcp --syn -j DROP"));

    // The first round of 1-65535 with the default timing (timeout 2s, retries 1): start to
    // /-/ready. The bound covers today's fixed timing (2 x 2 s per silent port, 1,024 at a time).
    let started = Instant::now();
    let exporter = start_exporter_in(
        &ns,
        dir.path(),
        &format!(
            "[[targets]]\nname = \"firewalled\"\nhost = \"{HOST}\"\nports = [\"1-65535\"]\nexpect = \"filtered\"\ninterval = \"10m\"\n"
        ),
        Duration::from_secs(420),
    );
    let ours_took = started.elapsed();
    let samples = parse_samples(&ns.get(EXPORTER_ADDR, "/metrics").text());
    drop(exporter);
    // Range ports in their expected state (filtered) have no series: the rest is listed.
    let mut ours: BTreeMap<String, Vec<u16>> = BTreeMap::new();
    for sample in find(&samples, "port_state", &[("target", "firewalled")]) {
        if sample.value == 1.0 {
            let port = sample.labels["port"].parse().unwrap();
            ours.entry(sample.labels["state"].clone())
                .or_default()
                .push(port);
        }
    }
    ours.values_mut().for_each(|ports| ports.sort_unstable());
    let count = |state: &str| {
        value(
            &samples,
            "port_target_ports",
            &[("target", "firewalled"), ("ip", HOST), ("state", state)],
        ) as usize
    };

    let scan = nmap_scan(&ns, &["-sT", "-T4", "-Pn", "-n", "-p-", HOST]);
    let summary = format!(
        "firewalled host, 1-65535: ours first round {ours_took:.1?} (open {:?}, closed {:?}, {} filtered), \
         nmap -sT -T4 -p- {:.1?} (open {:?}, closed {:?}, {} filtered); ratio {:.2}",
        ours.get("open"),
        ours.get("closed"),
        count("filtered"),
        scan.took,
        scan.listed_in("open"),
        scan.listed_in("closed"),
        scan.count("filtered"),
        ours_took.as_secs_f64() / scan.took.as_secs_f64(),
    );
    println!("{summary}");
    assert_eq!(scan.listed_in("open"), vec![80, 443], "{summary}");
    assert_eq!(scan.listed_in("closed"), vec![8080], "{summary}");
    assert_eq!(scan.count("filtered"), 65532, "{summary}");
    assert_eq!(ours.get("open"), Some(&vec![80, 443]), "{summary}");
    assert_eq!(ours.get("closed"), Some(&vec![8080]), "{summary}");
    assert_eq!(
        ours.len(),
        2,
        "only open and closed ports listed: {summary}"
    );
    assert_eq!(count("filtered"), 65532, "{summary}");
    assert_eq!(count("error"), 0, "{summary}");
    assert!(
        ours_took.as_secs_f64() <= 0.5 * scan.took.as_secs_f64(),
        "our first round took more than half of nmap's time: {summary}"
    );
}
