//! Late answers without netem (these kernels have none): an NFQUEUE reader inside a namespace
//! that holds every packet queued to it and gives it its ACCEPT verdict after a random delay.
//! An iptables rule `-j NFQUEUE --queue-num N` chooses the packets.

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::netns::Netns;

/// A running delayer; dropping it releases every packet it still holds and unbinds the queue.
pub struct Delayer {
    stop: Arc<AtomicBool>,
    delayed: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Delayer {
    /// Binds NFQUEUE `queue` inside `ns` and delays each packet by a duration drawn uniformly
    /// from `delay` (so packets may also be reordered). Fails when the kernel has no NFQUEUE.
    pub fn start(ns: &Netns, queue: u16, delay: RangeInclusive<Duration>) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let delayed = Arc::new(AtomicU64::new(0));
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let thread = {
            let stop = stop.clone();
            let delayed = delayed.clone();
            ns.enter_background(move || {
                let mut nfq = match open(queue) {
                    Ok(nfq) => {
                        bound_tx.send(Ok(())).unwrap();
                        nfq
                    }
                    Err(error) => {
                        bound_tx.send(Err(error)).unwrap();
                        return;
                    }
                };
                hold_and_release(&mut nfq, &stop, &delayed, delay);
                let _ = nfq.unbind(queue);
            })
        };
        let bound = bound_rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| Err(std::io::Error::other("the NFQUEUE thread did not report")));
        let delayer = Delayer {
            stop,
            delayed,
            thread: Some(thread),
        };
        bound.map(|()| delayer)
    }

    /// Packets delayed (and released) so far.
    pub fn delayed(&self) -> u64 {
        self.delayed.load(Ordering::Relaxed)
    }
}

impl Drop for Delayer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn open(queue: u16) -> std::io::Result<nfq::Queue> {
    let mut nfq = nfq::Queue::open()?;
    nfq.bind(queue)?;
    nfq.set_nonblocking(true);
    Ok(nfq)
}

/// Until `stop`: takes every queued packet, and gives each its verdict once its delay is over.
fn hold_and_release(
    nfq: &mut nfq::Queue,
    stop: &AtomicBool,
    delayed: &AtomicU64,
    delay: RangeInclusive<Duration>,
) {
    let mut random = XorShift::seeded();
    let (low, high) = (delay.start().as_micros(), delay.end().as_micros());
    let mut held: Vec<(Instant, nfq::Message)> = Vec::new();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        loop {
            match nfq.recv() {
                Ok(message) => {
                    let micros = low + u128::from(random.next()) % (high - low + 1);
                    let due = Instant::now() + Duration::from_micros(micros as u64);
                    held.push((due, message));
                }
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(error) => panic!("NFQUEUE recv: {error}"),
            }
        }
        let now = Instant::now();
        let mut i = 0;
        while i < held.len() {
            if stopping || held[i].0 <= now {
                let (_, mut message) = held.swap_remove(i);
                message.set_verdict(nfq::Verdict::Accept);
                nfq.verdict(message).expect("NFQUEUE verdict");
                delayed.fetch_add(1, Ordering::Relaxed);
            } else {
                i += 1;
            }
        }
        if stopping {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A small PRNG for the jitter (the tests need no crate for it).
struct XorShift(u64);

impl XorShift {
    fn seeded() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        XorShift(u64::from(nanos) | 1)
    }

    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 32) as u32
    }
}
