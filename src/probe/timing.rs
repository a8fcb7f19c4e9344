//! Per-address timing: what each address's answers taught about its round-trip time and its
//! losses, and the attempt timeouts and retries derived from them (adaptive timing).
//!
//! The model is nmap's, with TCP's estimator (RFC 6298):
//! - every answer (SYN-ACK, reset, ICMP error) is a round-trip sample of its address; the
//!   smoothed RTT and its variation give the attempt timeout `srtt + 4 x rttvar`, within
//!   `min_timeout..=timeout`. An address without samples gets `timeout`. Each attempt uses its
//!   own socket, so a sample is never ambiguous between a try and its retry (Karn's problem),
//!   except when the kernel itself retransmitted the SYN, which it does after 1 s: samples of
//!   1 s or more are not used.
//! - the drop rate is the share of attempts that met silence on ports that then answered: the
//!   evidence that silence may be loss. A silent port is tried until a port that answers would
//!   have been heard with near certainty (`drop^tries <= 1e-6`), at least twice while the
//!   address is known to answer (one lost answer never reads as filtered), at most
//!   `max_retries + 1` times, and within the probe's budget `timeout x (retries + 1)`. An address that never answered gets the configured `retries`.
//! - counts decay (halved past [`DECAY_AT`] attempts), so the rate follows a path that changes.
//! - where the far end may rate-limit its answers (UDP: ICMP errors) an address known to answer
//!   gets all `max_retries` ([`Timings::tries_rate_limited`]), within the same budget, until
//!   it has shown that it does not: [`UNLIMITED_AFTER`] answers, each to a first attempt.
//! - a retry waits twice the learned timeout ([`Timings::plan`], TCP), or twice the retry
//!   before it ([`Timings::plan_backing_off`], UDP: ICMP errors are rate-limited by the host
//!   that sends them, and only waiting longer earns the next one).
//!
//! The table holds at most [`MAX_ADDRESSES`] addresses; past that the least recently used one
//! is forgotten, and an address idle for [`FORGET_AFTER`] is dropped when the table is read.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::domain::{Attempts, Timing};

/// The most addresses whose timing is kept.
pub const MAX_ADDRESSES: usize = 65_536;

/// An address not probed for this long is forgotten (its next probe starts from `timeout`).
pub const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// Answers at or above this may be to the kernel's own SYN retransmission (Linux's initial
/// retransmission timeout is 1 s), so they are no round-trip sample.
const AMBIGUOUS_SAMPLE: Duration = Duration::from_secs(1);

/// The chance, at the observed drop rate, that a port which would answer is given up on.
///
/// One in a million: a lab run of 1,200 probes at 20% loss each way must show none (nmap
/// shows none most runs), and a silent port on such a path still costs less than fixed
/// timing's budget (14 attempts: 100 ms + 13 x 200 ms).
const GIVE_UP_CHANCE: f64 = 1e-6;

/// First-attempt answers, with no silence before any answer, after which an address is taken
/// not to rate-limit its answers: more than Linux's buckets give at once (6 ICMP errors per
/// destination, `icmp_msgs_burst` 50 in all), so a host that withholds errors cannot show it.
/// Its silent UDP ports then get the drop rate's retries, as TCP's, not all of `max_retries`:
/// 1,000 ports on such a host took 4.0 s a round against nmap `-sU -T4`'s 1.3 s (bench row k).
pub const UNLIMITED_AFTER: u64 = 64;

/// Past this many counted attempts both counts are halved: the drop rate weighs recent
/// evidence most.
const DECAY_AT: u32 = 4_096;

/// What one address's answers taught so far.
#[derive(Clone, Copy, Debug)]
struct Learned {
    /// Smoothed RTT and its variation, in seconds; `None` before the first usable sample.
    rtt: Option<(f64, f64)>,
    /// Attempts on ports that answered, and how many of them met silence (decayed counts).
    attempts: u32,
    silent: u32,
    answers: u64,
    retransmissions: u64,
    /// The attempt timeout and the retries last handed out, for the metrics.
    timeout: Duration,
    retries: u32,
    used: Instant,
}

impl Learned {
    fn new(now: Instant) -> Learned {
        Learned {
            rtt: None,
            attempts: 0,
            silent: 0,
            answers: 0,
            retransmissions: 0,
            timeout: Duration::ZERO,
            retries: 0,
            used: now,
        }
    }

    fn drop_ratio(&self) -> f64 {
        if self.attempts == 0 {
            0.0
        } else {
            f64::from(self.silent) / f64::from(self.attempts)
        }
    }

    /// The timeout of a first attempt, and whether it is learned (else it is the upper bound).
    fn timeout(&self, timeout: Duration, min_timeout: Duration) -> (Duration, bool) {
        match self.rtt {
            Some((srtt, rttvar)) => {
                let rto = Duration::try_from_secs_f64(srtt + 4.0 * rttvar).unwrap_or(timeout);
                (rto.clamp(min_timeout, timeout), true)
            }
            None => (timeout, false),
        }
    }

    fn retries(&self, configured: u32, max_retries: u32) -> u32 {
        if self.answers == 0 {
            return configured;
        }
        let drop = self.drop_ratio();
        let tries = if drop <= 0.0 {
            2.0
        } else if drop >= 1.0 {
            f64::INFINITY
        } else {
            (GIVE_UP_CHANCE.ln() / drop.ln()).ceil().max(2.0)
        };
        let cap = max_retries.saturating_add(1);
        let tries = if tries >= f64::from(cap) {
            cap
        } else {
            tries as u32
        };
        tries.saturating_sub(1).max(1).min(max_retries)
    }

    fn record_sample(&mut self, rtt: Duration) {
        let r = rtt.as_secs_f64();
        self.rtt = Some(match self.rtt {
            None => (r, r / 2.0),
            Some((srtt, rttvar)) => {
                let rttvar = 0.75 * rttvar + 0.25 * (srtt - r).abs();
                (0.875 * srtt + 0.125 * r, rttvar)
            }
        });
    }
}

/// What the metrics show of one address.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AddressTiming {
    pub ip: IpAddr,
    /// Smoothed RTT and its variation; `None` before the first usable sample.
    pub rtt: Option<(Duration, Duration)>,
    pub drop_ratio: f64,
    /// The attempt timeout and the retries the last probe of this address was given.
    pub timeout: Duration,
    pub retries: u32,
    pub retransmissions: u64,
}

/// How one attempt of a probe waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttemptPlan {
    /// How long the attempt waits for its answer.
    pub timeout: Duration,
    /// Whether the timeout is learned; an unlearned one (the upper bound) is worth shortening
    /// as soon as other ports of the address answer, so its wait looks again every
    /// `min_timeout`.
    pub learned: bool,
    /// Whether this attempt's socket keeps listening during the next one, so that a late
    /// answer still counts.
    pub overlap: bool,
}

/// The timing of every address probed, shared by all probes of one prober.
#[derive(Debug, Default)]
pub struct Timings {
    addresses: Mutex<HashMap<IpAddr, Learned>>,
}

impl Timings {
    pub fn new() -> Timings {
        Timings::default()
    }

    fn with<R>(&self, ip: IpAddr, f: impl FnOnce(&mut Learned) -> R) -> R {
        let now = Instant::now();
        let mut addresses = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
        if !addresses.contains_key(&ip) && addresses.len() >= MAX_ADDRESSES {
            // Rare (the table is as large as the config's addresses), so a scan will do.
            if let Some(oldest) = addresses
                .iter()
                .min_by_key(|(_, l)| l.used)
                .map(|(ip, _)| *ip)
            {
                addresses.remove(&oldest);
            }
        }
        let learned = addresses.entry(ip).or_insert_with(|| Learned::new(now));
        learned.used = now;
        f(learned)
    }

    /// How attempt `number` (1 for the first) of a probe of `ip` waits.
    pub fn plan(&self, ip: IpAddr, attempts: &Attempts, number: u32) -> AttemptPlan {
        // A retry waits twice as long (RFC 6298's backoff, once): silence may also mean the
        // path got slower than its samples say.
        self.plan_scaled(ip, attempts, if number > 1 { 2 } else { 1 })
    }

    /// Like [`plan`](Timings::plan), but each retry waits twice as long as the one before (up
    /// to `timeout`): for answers the far end rate-limits, as hosts do ICMP errors (UDP's
    /// closed ports), where a quick retry meets the same empty token bucket and only waiting
    /// longer can earn an answer.
    pub fn plan_backing_off(&self, ip: IpAddr, attempts: &Attempts, number: u32) -> AttemptPlan {
        let doublings = number.saturating_sub(1).min(16);
        self.plan_scaled(ip, attempts, 1 << doublings)
    }

    /// An attempt's plan whose learned timeout is multiplied by `factor` (within `timeout`).
    fn plan_scaled(&self, ip: IpAddr, attempts: &Attempts, factor: u32) -> AttemptPlan {
        let Timing::Adaptive { min_timeout, .. } = attempts.timing else {
            return AttemptPlan {
                timeout: attempts.timeout,
                learned: true,
                overlap: false,
            };
        };
        self.with(ip, |learned| {
            let (first, is_learned) = learned.timeout(attempts.timeout, min_timeout);
            let timeout = first.saturating_mul(factor).min(attempts.timeout);
            learned.timeout = first;
            AttemptPlan {
                timeout,
                learned: is_learned,
                // Only where answers come: a late one is then likely, and an address that never
                // answered holds one socket per probe, as under fixed timing.
                overlap: is_learned,
            }
        })
    }

    /// How many attempts a silent port of `ip` gets in all, as of now.
    pub fn tries(&self, ip: IpAddr, attempts: &Attempts) -> u32 {
        let Timing::Adaptive { max_retries, .. } = attempts.timing else {
            return attempts.count();
        };
        self.with(ip, |learned| {
            learned.retries = learned.retries(attempts.retries, max_retries);
            learned.retries + 1
        })
    }

    /// How many attempts a silent port of `ip` gets in all, as of now, where the far end may
    /// rate-limit its answers (UDP's ICMP errors): all of `max_retries` once the address is
    /// known to answer, since its silence is then as likely a withheld answer as a drop, and
    /// a token bucket's silences are not the independent losses the drop rate models. But an
    /// address with [`UNLIMITED_AFTER`] answers, all to first attempts, does not withhold:
    /// the drop rate's retries, as [`tries`](Timings::tries). The first answer to a retry
    /// (a withheld one, or a loss) brings all of `max_retries` back. The probe's budget still
    /// bounds them.
    pub fn tries_rate_limited(&self, ip: IpAddr, attempts: &Attempts) -> u32 {
        let Timing::Adaptive { max_retries, .. } = attempts.timing else {
            return attempts.count();
        };
        self.with(ip, |learned| {
            learned.retries = if learned.answers == 0 {
                attempts.retries
            } else if learned.silent == 0 && learned.answers >= UNLIMITED_AFTER {
                learned.retries(attempts.retries, max_retries)
            } else {
                max_retries
            };
            learned.retries + 1
        })
    }

    /// Counts a retransmission (any attempt after the first) to `ip`.
    pub fn retransmitted(&self, ip: IpAddr) {
        self.with(ip, |learned| learned.retransmissions += 1);
    }

    /// Records that attempt `number` of a probe of `ip` was answered after `rtt`; the attempts
    /// before it met silence.
    pub fn answered(&self, ip: IpAddr, number: u32, rtt: Duration) {
        self.with(ip, |learned| {
            learned.answers += 1;
            learned.attempts = learned.attempts.saturating_add(number);
            learned.silent = learned.silent.saturating_add(number - 1);
            if learned.attempts >= DECAY_AT {
                learned.attempts /= 2;
                learned.silent /= 2;
            }
            if rtt < AMBIGUOUS_SAMPLE {
                learned.record_sample(rtt);
            }
        });
    }

    /// Every address probed within [`FORGET_AFTER`], sorted; older ones are forgotten.
    pub fn view(&self) -> Vec<AddressTiming> {
        let now = Instant::now();
        let mut addresses = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
        addresses.retain(|_, learned| now.saturating_duration_since(learned.used) < FORGET_AFTER);
        let mut view: Vec<AddressTiming> = addresses
            .iter()
            .map(|(ip, learned)| AddressTiming {
                ip: *ip,
                rtt: learned.rtt.map(|(srtt, rttvar)| {
                    (
                        Duration::from_secs_f64(srtt),
                        Duration::from_secs_f64(rttvar),
                    )
                }),
                drop_ratio: learned.drop_ratio(),
                timeout: learned.timeout,
                retries: learned.retries,
                retransmissions: learned.retransmissions,
            })
            .collect();
        view.sort_by_key(|a| a.ip);
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::testing::adaptive;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[tokio::test]
    async fn an_address_without_answers_gets_the_configured_timeout_and_retries() {
        let timings = Timings::new();
        let plan = timings.plan(IP, &adaptive(), 1);
        assert_eq!(plan.timeout, Duration::from_secs(2));
        assert!(!plan.learned && !plan.overlap);
        assert_eq!(timings.tries(IP, &adaptive()), 2);
        let none = Attempts {
            retries: 0,
            ..adaptive()
        };
        assert_eq!(timings.tries(IP, &none), 1);
    }

    #[tokio::test]
    async fn the_timeout_follows_the_samples_within_its_bounds() {
        let timings = Timings::new();
        for _ in 0..20 {
            timings.answered(IP, 1, Duration::from_micros(50));
        }
        // Loopback: far below the lower bound.
        assert_eq!(
            timings.plan(IP, &adaptive(), 1).timeout,
            Duration::from_millis(100)
        );
        // The retry waits twice as long.
        assert_eq!(
            timings.plan(IP, &adaptive(), 2).timeout,
            Duration::from_millis(200)
        );
        // The path gets slow: 300 ms answers raise the timeout above them.
        for _ in 0..20 {
            timings.answered(IP, 1, Duration::from_millis(300));
        }
        let plan = timings.plan(IP, &adaptive(), 1);
        assert!(plan.learned);
        assert!(
            plan.timeout > Duration::from_millis(300) && plan.timeout < Duration::from_millis(600),
            "{plan:?}"
        );
        // Answers of 1 s and more may be to the kernel's own retransmission: not samples.
        let before = timings.view()[0].rtt;
        timings.answered(IP, 1, Duration::from_millis(1_500));
        assert_eq!(timings.view()[0].rtt, before);
        // Never above the configured timeout.
        let tight = Attempts {
            timeout: Duration::from_millis(250),
            ..adaptive()
        };
        assert_eq!(
            timings.plan(IP, &tight, 1).timeout,
            Duration::from_millis(250)
        );
    }

    #[tokio::test]
    async fn retries_follow_the_drop_rate() {
        let timings = Timings::new();
        // Known to answer, no loss seen: one retry, so one lost answer is not read as filtered.
        timings.answered(IP, 1, Duration::from_micros(50));
        assert_eq!(timings.tries(IP, &adaptive()), 2);
        let none = Attempts {
            retries: 0,
            ..adaptive()
        };
        assert_eq!(timings.tries(IP, &none), 2, "answers earn a retry");
        // 20% of packets lost each way: 36% of attempts meet silence.
        let timings = Timings::new();
        for i in 0..1_000u32 {
            // 640 answered at once, 230 on the second try, 130 on the third.
            let number = match i % 100 {
                0..64 => 1,
                64..87 => 2,
                _ => 3,
            };
            timings.answered(IP, number, Duration::from_micros(50));
        }
        let drop = timings.view()[0].drop_ratio;
        assert!((0.3..0.4).contains(&drop), "{drop}");
        // 0.33^13 < 1e-6 < 0.33^12.
        assert_eq!(timings.tries(IP, &adaptive()), 13);
        let capped = Attempts {
            timing: Timing::Adaptive {
                min_timeout: Duration::from_millis(100),
                max_retries: 3,
            },
            ..adaptive()
        };
        assert_eq!(timings.tries(IP, &capped), 4);
        // 5% each way: about 10% of attempts silent.
        let timings = Timings::new();
        for i in 0..1_000u32 {
            timings.answered(IP, if i % 10 == 0 { 2 } else { 1 }, Duration::ZERO);
        }
        // 0.09^6 < 1e-6 < 0.09^5.
        assert_eq!(timings.tries(IP, &adaptive()), 6);
    }

    #[tokio::test]
    async fn backing_off_doubles_every_retry_up_to_the_timeout() {
        let timings = Timings::new();
        timings.answered(IP, 1, Duration::from_micros(50));
        let waits: Vec<u128> = (1..=7)
            .map(|n| {
                timings
                    .plan_backing_off(IP, &adaptive(), n)
                    .timeout
                    .as_millis()
            })
            .collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 2000, 2000]);
        let far = timings.plan_backing_off(IP, &adaptive(), u32::MAX);
        assert_eq!(far.timeout, Duration::from_secs(2));
        // Unlearned: the upper bound, as plan; fixed: the timeout, always.
        let fresh = Timings::new();
        assert_eq!(
            fresh.plan_backing_off(IP, &adaptive(), 3),
            fresh.plan(IP, &adaptive(), 3)
        );
        let fixed = Attempts {
            timing: Timing::Fixed,
            ..adaptive()
        };
        assert_eq!(
            timings.plan_backing_off(IP, &fixed, 4).timeout,
            Duration::from_secs(2)
        );
    }

    #[tokio::test]
    async fn rate_limited_answers_earn_every_retry() {
        let timings = Timings::new();
        assert_eq!(timings.tries_rate_limited(IP, &adaptive()), 2, "configured");
        timings.answered(IP, 1, Duration::from_micros(50));
        assert_eq!(timings.tries(IP, &adaptive()), 2);
        assert_eq!(timings.tries_rate_limited(IP, &adaptive()), 16);
        assert_eq!(timings.view()[0].retries, 15);
        let fixed = Attempts {
            timing: Timing::Fixed,
            ..adaptive()
        };
        assert_eq!(timings.tries_rate_limited(IP, &fixed), 2);
    }

    #[tokio::test]
    async fn an_address_that_answers_every_first_attempt_is_not_rate_limited() {
        let timings = Timings::new();
        for _ in 1..UNLIMITED_AFTER {
            timings.answered(IP, 1, Duration::from_micros(50));
        }
        assert_eq!(
            timings.tries_rate_limited(IP, &adaptive()),
            16,
            "not shown yet"
        );
        timings.answered(IP, 1, Duration::from_micros(50));
        assert_eq!(
            timings.tries_rate_limited(IP, &adaptive()),
            timings.tries(IP, &adaptive()),
            "the drop rate's, as TCP's"
        );
        assert_eq!(timings.tries(IP, &adaptive()), 2);
        // One answer that came only to a retry: withheld (or lost), every retry again.
        timings.answered(IP, 2, Duration::from_micros(50));
        assert_eq!(timings.tries_rate_limited(IP, &adaptive()), 16);
    }

    #[tokio::test]
    async fn fixed_timing_ignores_what_was_learned() {
        let timings = Timings::new();
        for _ in 0..10 {
            timings.answered(IP, 3, Duration::from_micros(50));
        }
        let fixed = Attempts {
            timing: Timing::Fixed,
            ..adaptive()
        };
        let plan = timings.plan(IP, &fixed, 2);
        assert_eq!(plan.timeout, Duration::from_secs(2));
        assert!(!plan.overlap);
        assert_eq!(timings.tries(IP, &fixed), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_is_bounded_and_forgets_idle_addresses() {
        let timings = Timings::new();
        for i in 0..=MAX_ADDRESSES as u32 {
            timings.retransmitted(IpAddr::V4(i.into()));
            if i == 0 {
                tokio::time::advance(Duration::from_millis(1)).await;
            }
        }
        let view = timings.view();
        assert_eq!(view.len(), MAX_ADDRESSES);
        assert!(
            !view.iter().any(|a| a.ip == IpAddr::V4(0.into())),
            "the least recently used address goes first"
        );
        tokio::time::advance(FORGET_AFTER).await;
        timings.retransmitted(IP);
        assert_eq!(timings.view().len(), 1);
    }
}
