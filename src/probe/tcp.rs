//! The TCP connect probe: one non-blocking connect per attempt, closed with a reset.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use tokio::net::TcpSocket;
use tokio::time::Instant;

use super::{Attempts, Close, Outcome, Probe, Reason, State, classify};

/// Probes with a full TCP connect, like `nmap -sT`; needs no privileges.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpProbe;

enum Attempt {
    Answered(io::Result<()>),
    /// The socket connected to itself (loopback target port inside the ephemeral range).
    SelfConnected,
}

impl Probe for TcpProbe {
    async fn probe(&self, addr: SocketAddr, settings: Attempts) -> Outcome {
        let attempts = settings.retries.saturating_add(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = Instant::now();
            let result = connect_once(addr, settings.timeout, settings.close).await;
            let elapsed = started.elapsed();
            let last = attempt >= attempts;
            let (state, reason) = match result {
                Attempt::SelfConnected if last => (State::Closed, Reason::SelfConnect),
                Attempt::SelfConnected => continue,
                Attempt::Answered(result) => classify(&result),
            };
            // Only silence is worth another try: any answer is the port's truth.
            if reason == Reason::NoResponse && !last {
                continue;
            }
            let answered = state != State::Error && reason != Reason::NoResponse;
            return Outcome {
                state,
                reason,
                connect: answered.then_some(elapsed),
                at: SystemTime::now(),
            };
        }
    }
}

async fn connect_once(addr: SocketAddr, timeout: Duration, close: Close) -> Attempt {
    let socket = match if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    } {
        Ok(socket) => socket,
        Err(error) => return Attempt::Answered(Err(error)),
    };
    // Set before connecting: this future may be dropped (a timeout, a cancelled /probe request,
    // a removed target) after the kernel finished the handshake but before we saw it, and that
    // socket must be reset too, or the listener's side ends in TIME_WAIT.
    if close == Close::Reset {
        reset_on_close(&socket);
    }
    match tokio::time::timeout(timeout, socket.connect(addr)).await {
        Err(_elapsed) => Attempt::Answered(Err(io::ErrorKind::TimedOut.into())),
        Ok(Err(error)) => Attempt::Answered(Err(error)),
        Ok(Ok(stream)) => {
            let self_connected = stream.local_addr().is_ok_and(|local| local == addr);
            if self_connected && close == Close::Graceful {
                // A graceful close of a self-connection would leave it in TIME_WAIT on the
                // very port we probe.
                let _ = stream.set_zero_linger();
            }
            if self_connected {
                Attempt::SelfConnected
            } else {
                Attempt::Answered(Ok(()))
            }
        }
    }
}

/// SO_LINGER {1, 0}, as nmap does: the close sends a reset instead of a FIN, so neither the
/// prober nor the probed service keeps a TIME_WAIT socket per open port probed.
fn reset_on_close(socket: &TcpSocket) {
    // If setting the option fails the close is merely graceful; nothing to report.
    let _ = socket.set_zero_linger();
}
