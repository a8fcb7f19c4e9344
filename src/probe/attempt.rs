//! What every probe kind does the same way around its attempts: numbering and planning them
//! under the address's timing ([`Run`]), the socket's source address, and the wait for an
//! answer, with the previous attempt still listening for a late one.

use std::future::{Future, pending};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use socket2::Socket;
use tokio::time::Instant;

use super::Outcome;
use super::timing::{AttemptPlan, Timings};
use crate::domain::{Attempts, Reason, State, Timing};

/// How a probe kind's answers come, which decides how its retries are spaced and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Answers {
    /// Straight from the port (TCP): see [`Timings::plan`] and [`Timings::tries`].
    Direct,
    /// Rate-limited by the far end (UDP's ICMP errors): see [`Timings::plan_backing_off`] and
    /// [`Timings::tries_rate_limited`].
    RateLimited,
}

/// One probe's attempts on one address: their numbers, plans, and whether silence earns
/// another, within the probe's budget.
pub(super) struct Run<'a> {
    timings: &'a Timings,
    ip: IpAddr,
    settings: &'a Attempts,
    answers: Answers,
    end: Instant,
    number: u32,
}

impl<'a> Run<'a> {
    /// A probe of `ip` starting now.
    pub fn new(timings: &'a Timings, ip: IpAddr, settings: &'a Attempts, answers: Answers) -> Self {
        Run {
            timings,
            ip,
            settings,
            answers,
            end: Instant::now() + settings.budget(),
            number: 0,
        }
    }

    /// Starts the next attempt (every one after the first is a retransmission): its number
    /// (1 for the first) and when it started.
    pub fn start(&mut self) -> (u32, Instant) {
        self.number += 1;
        if self.number > 1 {
            self.timings.retransmitted(self.ip);
        }
        (self.number, Instant::now())
    }

    /// How the current attempt waits, as of now.
    pub fn plan(&self) -> AttemptPlan {
        match self.answers {
            Answers::Direct => self.timings.plan(self.ip, self.settings, self.number),
            Answers::RateLimited => {
                self.timings
                    .plan_backing_off(self.ip, self.settings, self.number)
            }
        }
    }

    /// Whether the port's silence (or a try that could not count) earns another attempt.
    pub fn again(&self) -> bool {
        let tries = match self.answers {
            Answers::Direct => self.timings.tries(self.ip, self.settings),
            Answers::RateLimited => self.timings.tries_rate_limited(self.ip, self.settings),
        };
        self.number < tries && Instant::now() < self.end
    }

    /// Records that attempt `number` was answered after `rtt`.
    pub fn answered(&self, number: u32, rtt: Duration) {
        self.timings.answered(self.ip, number, rtt);
    }
}

/// An attempt the network has not answered yet.
pub(super) struct Waiting<S> {
    pub socket: S,
    pub started: Instant,
    /// Which attempt of its probe this is (1 for the first).
    pub number: u32,
}

/// What one attempt heard, and which attempt it answers.
pub(super) struct Heard<A> {
    pub answer: A,
    pub started: Instant,
    pub number: u32,
}

/// Waits for `current` (or the `earlier` attempt still listening) to be answered, as `answer`
/// hears it, within the attempt's timeout (`plan` at first) and the probe's budget; `None` on
/// silence.
///
/// The timeout is looked up again when it runs out (answers of other ports may have raised
/// it), and every `min_timeout` while it is not learned yet (they may have lowered it).
pub(super) async fn listen<'a, S, A, F>(
    current: &'a Waiting<S>,
    earlier: Option<&'a Waiting<S>>,
    answer: impl Fn(&'a Waiting<S>) -> F,
    mut plan: AttemptPlan,
    run: &Run<'_>,
) -> Option<Heard<A>>
where
    F: Future<Output = A>,
{
    let (settings, end) = (run.settings, run.end);
    let recheck = match settings.timing {
        Timing::Adaptive { min_timeout, .. } => min_timeout,
        Timing::Fixed => settings.timeout,
    };
    let current_answer = answer(current);
    tokio::pin!(current_answer);
    // Boxed, and only when there is one: inline, the earlier answer's wait sized every probe's
    // future (256 bytes of 1,672), overlap or not; most waits have none.
    let answer = &answer;
    let mut earlier_answer =
        earlier.map(|earlier| Box::pin(async move { (answer(earlier).await, earlier) }));
    loop {
        let deadline = (current.started + plan.timeout).min(end);
        let wake = if plan.learned {
            deadline
        } else {
            deadline.min(Instant::now() + recheck)
        };
        tokio::select! {
            biased;
            answer = &mut current_answer => {
                return Some(Heard { answer, started: current.started, number: current.number });
            }
            Some((answer, earlier)) = async {
                match earlier_answer.as_mut() {
                    Some(waiting) => Some(waiting.await),
                    None => pending().await,
                }
            } => {
                return Some(Heard { answer, started: earlier.started, number: earlier.number });
            }
            () = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                plan = run.plan();
                if now >= deadline && (current.started + plan.timeout).min(end) <= now {
                    return None;
                }
            }
        }
    }
}

/// Binds the socket to `source` (port 0: the kernel picks the port) before it connects, for a
/// target with a `source_address`. A failure (EADDRNOTAVAIL: the address is not on this machine)
/// is the prober's own, like an error of connect() itself: no packet left.
pub(super) fn bind_source(socket: &Socket, source: Option<IpAddr>) -> io::Result<()> {
    match source {
        Some(ip) => socket.bind(&SocketAddr::new(ip, 0).into()),
        None => Ok(()),
    }
}

/// The outcome of a probe that ends now.
pub(super) fn finished(state: State, reason: Reason, connect: Option<Duration>) -> Outcome {
    Outcome {
        state,
        reason,
        connect,
        at: SystemTime::now(),
        service: None,
    }
}
