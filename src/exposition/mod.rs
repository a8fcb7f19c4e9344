//! Metrics: the state table rendered at scrape time, plus the exporter's own metrics.
//!
//! The table's series are written from the table on every scrape (see [`crate::exposition`])
//! instead of being kept in metric vectors: a row removed from the table can never linger as a
//! stale series. The table's text is cached by the table's generation, and scrapes that arrive
//! while it is being rendered wait for that render instead of starting their own.

use std::io::Write as _;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use prometheus::{Encoder, TextEncoder};
use rayon::prelude::*;

pub mod table;

use crate::exposition::table::{TableText, render_table};
use crate::state::StateTable;
use crate::telemetry::Telemetry;

/// The Content-Type of the text exposition format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders `/metrics`: the table's text from its cache, the exporter's own metrics fresh.
pub struct Metrics {
    telemetry: Arc<Telemetry>,
    table: Arc<StateTable>,
    /// The last rendering of the table.
    cached: Mutex<Option<Arc<RenderedTable>>>,
    /// Held while the table is rendered: one render at a time, shared by those who wait.
    rendering: tokio::sync::Mutex<()>,
    /// Threads a rendering or compression may use: the machine's cores.
    workers: usize,
}

impl Metrics {
    pub fn new(table: Arc<StateTable>, telemetry: Arc<Telemetry>) -> Metrics {
        Metrics {
            telemetry,
            table,
            cached: Mutex::new(None),
            rendering: tokio::sync::Mutex::new(()),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    /// Every metric in the text format as buffers to send one after the other, gzip members
    /// when `gzip` (decoders read concatenated members as one stream): the table's part from
    /// the cache when the table has not changed since, the exporter's own metrics fresh.
    pub async fn scrape(&self, gzip: bool) -> Vec<Bytes> {
        let table = self.table_text().await;
        let own = self.own_metrics();
        let mut body = if gzip {
            table.gzip().await
        } else {
            table.text.chunks.clone()
        };
        body.push(Bytes::from(if gzip { gzip_bytes(&own) } else { own }));
        body
    }

    /// The table's text, rendered at or after the table's generation at the time of the call.
    async fn table_text(&self) -> Arc<RenderedTable> {
        let wanted = self.table.generation();
        let fresh = |cached: &Option<Arc<RenderedTable>>| {
            cached.as_ref().filter(|c| c.generation >= wanted).cloned()
        };
        if let Some(cached) = fresh(&self.lock_cache()) {
            return cached;
        }
        let _rendering = self.rendering.lock().await;
        // Whoever held the lock before us may have rendered what we need.
        if let Some(cached) = fresh(&self.lock_cache()) {
            return cached;
        }
        let table = self.table.clone();
        let workers = self.workers;
        // Let go of the stale rendering first (two full renderings at once would double the
        // peak memory of a large table), and write the new one into its memory where no
        // scrape is still sending it.
        let stale = self.lock_cache().take();
        let capacity = stale.as_ref().map_or(0, |c| c.text.len());
        let scratch = stale
            .and_then(|c| Arc::try_unwrap(c).ok())
            .map(|c| c.text.into_scratch())
            .unwrap_or_default();
        let rendered = tokio::task::spawn_blocking(move || {
            // Read the generation before the rows, so the text is at least this fresh.
            let generation = table.generation();
            RenderedTable {
                generation,
                text: render_table(&table, workers, scratch, capacity),
                gzip: tokio::sync::OnceCell::new(),
            }
        })
        .await
        .expect("rendering the table does not panic");
        self.telemetry.renders.inc();
        let rendered = Arc::new(rendered);
        *self.lock_cache() = Some(rendered.clone());
        rendered
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Option<Arc<RenderedTable>>> {
        self.cached.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The exporter's own metrics (self-metrics and process metrics) in the text format.
    fn own_metrics(&self) -> Vec<u8> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.telemetry.gather(), &mut out)
            .expect("encoding to a Vec cannot fail: every family is built with a type and help");
        out
    }
}

/// One rendering of the table, and its gzip form once a scraper asked for it.
struct RenderedTable {
    generation: u64,
    text: TableText,
    gzip: tokio::sync::OnceCell<Vec<Bytes>>,
}

/// Text is compressed in pieces of at most this size, one gzip member each, so that all
/// cores can compress at once.
const GZIP_PIECE: usize = 4 << 20;

impl RenderedTable {
    async fn gzip(self: &Arc<Self>) -> Vec<Bytes> {
        let this = self.clone();
        self.gzip
            .get_or_init(|| async move {
                tokio::task::spawn_blocking(move || {
                    let pieces: Vec<Bytes> = this
                        .text
                        .chunks
                        .iter()
                        .flat_map(|chunk| {
                            (0..chunk.len())
                                .step_by(GZIP_PIECE)
                                .map(|at| chunk.slice(at..chunk.len().min(at + GZIP_PIECE)))
                        })
                        .collect();
                    pieces
                        .into_par_iter()
                        .map(|piece| Bytes::from(gzip_bytes(&piece)))
                        .collect()
                })
                .await
                .expect("compressing does not panic")
            })
            .await
            .clone()
    }
}

fn gzip_bytes(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(data.len() / 8), Compression::fast());
    let mut gzip = encoder
        .write_all(data)
        .and_then(|()| encoder.finish())
        .expect("writing to a Vec cannot fail");
    // Kept until the table changes: hold only what was written.
    gzip.shrink_to_fit();
    gzip
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::domain::{Reason, State};
    use crate::probe::Outcome;
    use crate::state::RowKey;
    use std::time::SystemTime;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_scrapes_share_one_rendering() {
        let config = Config::parse(
            "[[targets]]\nhost = \"127.0.0.1\"\nports = [\"1-2000\"]\nexpect = \"open\"",
            "t",
        )
        .unwrap();
        let table = Arc::new(StateTable::new());
        table.set_targets(&config.targets);
        let record = |state| {
            for port in 1..=2000 {
                let outcome = Outcome {
                    state,
                    reason: Reason::Unknown,
                    connect: None,
                    at: SystemTime::now(),
                };
                table.record(
                    "127.0.0.1",
                    RowKey {
                        port,
                        ip: Some("127.0.0.1".parse().unwrap()),
                    },
                    outcome,
                );
            }
        };
        record(State::Closed);
        let telemetry = Arc::new(Telemetry::new().unwrap());
        let metrics = Arc::new(Metrics::new(table.clone(), telemetry.clone()));
        let scrape_all = |gzip| {
            let scrapes: Vec<_> = (0..8)
                .map(|_| {
                    let metrics = metrics.clone();
                    tokio::spawn(async move { metrics.scrape(gzip).await })
                })
                .collect();
            async move {
                let mut bodies = Vec::new();
                for scrape in scrapes {
                    bodies.push(scrape.await.unwrap());
                }
                bodies
            }
        };
        let first = scrape_all(false).await;
        assert_eq!(
            telemetry.renders.get(),
            1,
            "eight scrapes of an unchanged table, one render"
        );
        // The table's part: all but the last buffer, the exporter's own metrics.
        let first: Vec<Vec<u8>> = first
            .iter()
            .map(|body| body[..body.len() - 1].concat())
            .collect();
        assert!(first.iter().all(|b| b == &first[0]));
        assert_eq!(
            String::from_utf8_lossy(&first[0])
                .matches("state=\"closed\"} 1")
                .count(),
            2000
        );
        record(State::Open);
        let second = scrape_all(true).await;
        assert_eq!(
            telemetry.renders.get(),
            2,
            "after a change, eight scrapes share one render"
        );
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::MultiGzDecoder::new(&second[0].concat()[..]),
            &mut text,
        )
        .unwrap();
        assert_eq!(text.matches("state=\"open\"} 1").count(), 2000);
    }
}
