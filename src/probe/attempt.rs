//! What every probe kind does the same way around one attempt: the socket's source address,
//! and the wait for an answer under the address's timing, with the previous attempt still
//! listening for a late one.

use std::future::{Future, pending};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use socket2::Socket;
use tokio::time::Instant;

use super::Outcome;
use super::timing::AttemptPlan;
use crate::domain::{Attempts, Reason, State, Timing};

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
/// hears it, within the attempt's timeout and the probe's `end`; `None` on silence.
///
/// The timeout is looked up again (`replan`) when it runs out (answers of other ports may have
/// raised it), and every `min_timeout` while it is not learned yet (they may have lowered it).
pub(super) async fn listen<'a, S, A, F>(
    current: &'a Waiting<S>,
    earlier: Option<&'a Waiting<S>>,
    answer: impl Fn(&'a Waiting<S>) -> F,
    mut plan: AttemptPlan,
    replan: impl Fn() -> AttemptPlan,
    settings: &Attempts,
    end: Instant,
) -> Option<Heard<A>>
where
    F: Future<Output = A>,
{
    let recheck = match settings.timing {
        Timing::Adaptive { min_timeout, .. } => min_timeout,
        Timing::Fixed => settings.timeout,
    };
    let current_answer = answer(current);
    let earlier_answer = async {
        match earlier {
            Some(earlier) => (answer(earlier).await, earlier),
            None => pending().await,
        }
    };
    tokio::pin!(current_answer, earlier_answer);
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
            (answer, earlier) = &mut earlier_answer => {
                return Some(Heard { answer, started: earlier.started, number: earlier.number });
            }
            () = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                plan = replan();
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
    }
}
