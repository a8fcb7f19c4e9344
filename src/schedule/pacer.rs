//! Pacing of connection attempts: a rate with a small burst allowance (GCRA).
//!
//! Bursts of SYNs on loopback overflow the kernel's per-CPU backlog (`netdev_max_backlog`,
//! 1000 by default) and come back as 1 s retransmits or false timeouts; spacing the connects
//! keeps a full port range honest.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Timers fire on millisecond ticks, so a wait may end a millisecond or more after its slot.
/// The slots that passed meanwhile were planned, not idle time: up to this much lag is caught
/// up at once, or a high rate would lose a share of its slots on every wait...
const TIMER_CATCH_UP: Duration = Duration::from_millis(2);

/// ...but never more starts at once than this, well below the kernel's per-CPU backlog of
/// 1000 packets: the pacer cannot tell timer lag from idle time, and after idle the catch-up
/// is a burst.
const MAX_CATCH_UP_STARTS: u32 = 256;

/// Hands out start times no closer than `period`, allowing `burst` starts at once after idle
/// (at high rates up to 2 ms worth, at most 256: see `TIMER_CATCH_UP`).
#[derive(Debug)]
pub struct Pacer {
    period: Duration,
    burst_allowance: Duration,
    /// The earliest start time the next caller may get.
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    /// A pacer for `per_second` starts per second (0: unlimited) with bursts of `burst`.
    pub fn new(per_second: u32, burst: u32) -> Pacer {
        let period = if per_second == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs(1) / per_second
        };
        Pacer {
            period,
            burst_allowance: (period * burst.saturating_sub(1))
                .max(TIMER_CATCH_UP.min(period * MAX_CATCH_UP_STARTS)),
            next: Mutex::new(None),
        }
    }

    /// Waits until the caller may start.
    pub async fn wait(&self) {
        if self.period.is_zero() {
            return;
        }
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let earliest = now.checked_sub(self.burst_allowance).unwrap_or(now);
            let slot = next.map_or(earliest, |n| n.max(earliest));
            *next = Some(slot + self.period);
            slot
        };
        // A slot already due needs no timer.
        if slot > Instant::now() {
            tokio::time::sleep_until(slot).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn starts_are_spaced_after_the_burst() {
        let pacer = Pacer::new(1000, 4);
        let begin = Instant::now();
        let mut starts = Vec::new();
        for _ in 0..10 {
            pacer.wait().await;
            starts.push(Instant::now() - begin);
        }
        // Four at once (the burst), then one per millisecond.
        let ms: Vec<u128> = starts.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [0, 0, 0, 0, 1, 2, 3, 4, 5, 6]);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_refills_the_burst_but_not_more() {
        let pacer = Pacer::new(100, 2);
        pacer.wait().await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let begin = Instant::now();
        for _ in 0..3 {
            pacer.wait().await;
        }
        // Two at once, the third one period later: five idle seconds are not a 500-start burst.
        assert_eq!(Instant::now() - begin, Duration::from_millis(10));
    }

    #[tokio::test(start_paused = true)]
    async fn late_wake_ups_do_not_lower_a_high_rate() {
        // 100k starts per second, 10 us apart, and a wake-up 1.5 ms late every 500 starts, as
        // a loaded runtime's millisecond timer gives: the lag is caught up, not lost.
        let pacer = Pacer::new(100_000, 64);
        let begin = Instant::now();
        for i in 1..=10_000 {
            pacer.wait().await;
            if i % 500 == 0 {
                tokio::time::advance(Duration::from_micros(1_500)).await;
            }
        }
        let took = Instant::now() - begin;
        assert!(
            took < Duration::from_millis(102),
            "{took:?} for 100 ms of slots"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_catch_up_never_makes_a_burst_the_backlog_cannot_take() {
        for (rate, at_once) in [(100_000, 201), (1_000_000, 257)] {
            let pacer = Pacer::new(rate, 64);
            pacer.wait().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let begin = Instant::now();
            let mut starts = 0;
            while Instant::now() == begin {
                pacer.wait().await;
                starts += 1;
            }
            // The loop ends on the first start that had to wait: one more than the burst.
            assert_eq!(starts, at_once + 1, "rate {rate}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn zero_means_unlimited() {
        let pacer = Pacer::new(0, 1);
        let begin = Instant::now();
        for _ in 0..1000 {
            pacer.wait().await;
        }
        assert_eq!(Instant::now(), begin);
    }
}
