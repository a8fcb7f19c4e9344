//! Spreading CPU-bound work of one scrape (rendering, compressing) over the machine's cores.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Applies `f` to every item on up to `workers` threads, the calling thread among them, and
/// returns the results in the items' order. Idle threads take the next item, so unequal items
/// still share out evenly.
pub fn map<T: Send, R: Send>(items: Vec<T>, workers: usize, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let count = items.len();
    let items: Vec<Mutex<Option<T>>> = items.into_iter().map(|i| Mutex::new(Some(i))).collect();
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            let Some(slot) = items.get(index) else {
                return done;
            };
            let item = slot
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .expect("each index is taken once");
            done.push((index, f(item)));
        }
    };
    let mut results: Vec<(usize, R)> = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..workers.clamp(1, count.max(1)))
            .map(|_| scope.spawn(work))
            .collect();
        let mut results = work();
        for helper in helpers {
            match helper.join() {
                Ok(done) => results.extend(done),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        results
    });
    results.sort_unstable_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, result)| result).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn results_keep_the_items_order_whatever_the_thread_count() {
        for workers in [0, 1, 2, 7, 100] {
            let items: Vec<u64> = (0..50).collect();
            let squares = super::map(items, workers, |i| {
                // Uneven work, so that threads finish out of order.
                std::thread::sleep(std::time::Duration::from_micros((i % 7) * 100));
                i * i
            });
            assert_eq!(squares, (0..50).map(|i| i * i).collect::<Vec<u64>>());
        }
        assert!(super::map(Vec::<u8>::new(), 4, |i| i).is_empty());
    }
}
