//! Metrics: the state table rendered at scrape time, plus the exporter's own metrics, in the
//! format the scraper asked for (the Prometheus text format or OpenMetrics, see
//! [`Format::from_accept`]).
//!
//! - [`text`]: the one writer of both formats: every family's name, HELP and TYPE, labels,
//!   numbers, and the exporter's own metrics;
//! - [`table`]: the state table's samples, written from the table on every scrape instead of
//!   being kept in metric vectors, so a row removed from the table can never linger as a
//!   stale series.
//!
//! The table's samples are the same in both formats (only the HELP and TYPE lines in front
//! of each family differ, and those are written once per format), so one rendering, cached
//! by the table's generation, serves every scrape until the table changes, whatever the
//! format; scrapes that arrive while it is being rendered wait for that render instead of
//! starting their own. The exporter's own metrics are written fresh, last; in OpenMetrics
//! they end with `# EOF`.
//!
//! A response being sent keeps its rendering alive, and a client that stops reading would
//! keep it for as long as its connection lives: many such clients, each arriving after the
//! table changed, would pin a rendering each. So the renderings that responses still hold
//! are bounded in bytes ([`MIN_PINNED_BYTES`], or [`PINNED_RENDERINGS`] renderings of today's
//! size): past the bound, the oldest ones are [`Scrape::superseded`], and the web layer drops
//! the connections still sending them.

use std::collections::VecDeque;
use std::io::Write as _;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use rayon::prelude::*;
use tokio_util::sync::CancellationToken;

mod hosts;
pub mod table;
pub mod text;

use crate::domain::Protocol;
use crate::exposition::table::{FAMILIES, TableText, render_table, with_headers};
use crate::probe::Timings;
use crate::probe::timing::AddressTiming;
use crate::state::StateTable;
use crate::telemetry::Telemetry;

pub use text::{Format, TEXT_CONTENT_TYPE};

/// Renderings that responses still hold may take this many bytes in all, whatever their size.
pub const MIN_PINNED_BYTES: usize = 128 << 20;
/// ... or this many renderings of the current one's size, if that is more (a large table's
/// scrapes must not be cut merely for being large).
pub const PINNED_RENDERINGS: usize = 3;

/// One scrape's answer.
pub struct Scrape {
    /// The buffers to send one after the other.
    pub body: Vec<Bytes>,
    /// Cancelled when the rendering the body is made of must be let go: a response still
    /// being sent then is to be dropped.
    pub superseded: CancellationToken,
    /// Counts this answer as holding its rendering until dropped: keep it with the body.
    pub lease: Lease,
}

/// A response's hold on a rendering, counted while it lives.
#[derive(Debug)]
pub struct Lease {
    _held: Arc<()>,
}

/// A rendering no longer in the cache, as long as responses may hold it.
struct Replaced {
    /// One count here, one per response holding the rendering.
    lease: Arc<()>,
    bytes: usize,
    superseded: CancellationToken,
}

impl Replaced {
    fn is_held(&self) -> bool {
        Arc::strong_count(&self.lease) > 1
    }
}

/// Every address each protocol's probes learned, with that protocol.
fn learned(timings: &[(Protocol, Arc<Timings>)]) -> Vec<(Protocol, AddressTiming)> {
    timings
        .iter()
        .flat_map(|(protocol, timings)| timings.view().into_iter().map(|a| (*protocol, a)))
        .collect()
}

/// Renders `/metrics`: the table's text from its cache, the exporter's own metrics fresh.
pub struct Metrics {
    telemetry: Arc<Telemetry>,
    table: Arc<StateTable>,
    /// What the scheduler's probes learned of each address, per protocol.
    timings: Vec<(Protocol, Arc<Timings>)>,
    /// The last rendering of the table.
    cached: Mutex<Option<Arc<RenderedTable>>>,
    /// Renderings replaced since, oldest first, while some response may still hold them.
    replaced: Mutex<VecDeque<Replaced>>,
    /// [`MIN_PINNED_BYTES`], but for tests.
    min_pinned_bytes: usize,
    /// Held while the table is rendered: one render at a time, shared by those who wait.
    rendering: tokio::sync::Mutex<()>,
    /// Threads a rendering or compression may use: the machine's cores.
    workers: usize,
}

impl Metrics {
    pub fn new(
        table: Arc<StateTable>,
        timings: Vec<(Protocol, Arc<Timings>)>,
        telemetry: Arc<Telemetry>,
    ) -> Metrics {
        Metrics {
            telemetry,
            table,
            timings,
            cached: Mutex::new(None),
            replaced: Mutex::new(VecDeque::new()),
            min_pinned_bytes: MIN_PINNED_BYTES,
            rendering: tokio::sync::Mutex::new(()),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    /// Every metric in `format` as buffers to send one after the other, gzip members when
    /// `gzip` (decoders read concatenated members as one stream): the table's part from the
    /// cache when the table has not changed since, the exporter's own metrics fresh, and in
    /// OpenMetrics `# EOF` at the very end.
    pub async fn scrape(&self, format: Format, gzip: bool) -> Scrape {
        let table = self.table_text().await;
        let own = self.own_metrics(format);
        let headers = TableHeaders::of(format);
        let mut body = if gzip {
            with_headers(&headers.gzip, table.gzip().await.iter().map(Vec::as_slice))
        } else {
            with_headers(&headers.plain, table.text.families())
        };
        body.push(if gzip {
            Bytes::from(gzip_bytes(own.as_bytes()))
        } else {
            Bytes::from(own)
        });
        Scrape {
            body,
            superseded: table.superseded.clone(),
            lease: Lease {
                _held: table.lease.clone(),
            },
        }
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
        let timings = self.timings.clone();
        let workers = self.workers;
        // Let go of the stale rendering first (two full renderings at once would double the
        // peak memory of a large table), and write the new one into its memory where no
        // scrape is still sending it.
        let stale = self.lock_cache().take();
        if let Some(stale) = &stale {
            self.lock_replaced().push_back(Replaced {
                lease: stale.lease.clone(),
                bytes: stale.bytes(),
                superseded: stale.superseded.clone(),
            });
        }
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
                text: render_table(&table, &learned(&timings), workers, scratch, capacity),
                gzip: tokio::sync::OnceCell::new(),
                superseded: CancellationToken::new(),
                lease: Arc::new(()),
            }
        })
        .await
        .expect("rendering the table does not panic");
        self.telemetry.renders.inc();
        let rendered = Arc::new(rendered);
        *self.lock_cache() = Some(rendered.clone());
        self.bound_pinned(rendered.bytes());
        rendered
    }

    /// Supersedes the oldest replaced renderings still held by responses until those left,
    /// with the current one of `current_bytes`, fit the bound.
    fn bound_pinned(&self, current_bytes: usize) {
        let bound = self
            .min_pinned_bytes
            .max(PINNED_RENDERINGS.saturating_mul(current_bytes));
        let mut replaced = self.lock_replaced();
        replaced.retain(Replaced::is_held);
        let mut pinned = current_bytes + replaced.iter().map(|r| r.bytes).sum::<usize>();
        while pinned > bound {
            let Some(oldest) = replaced.pop_front() else {
                break;
            };
            pinned -= oldest.bytes;
            oldest.superseded.cancel();
        }
    }

    /// How many replaced renderings some response still holds.
    #[cfg(test)]
    fn pinned(&self) -> usize {
        self.lock_replaced().iter().filter(|r| r.is_held()).count()
    }

    fn lock_replaced(&self) -> std::sync::MutexGuard<'_, VecDeque<Replaced>> {
        self.replaced.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Option<Arc<RenderedTable>>> {
        self.cached.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The exporter's own metrics (self-metrics and process metrics) in `format`, with the
    /// end of the exposition.
    fn own_metrics(&self, format: Format) -> String {
        let mut out = String::new();
        text::write_gathered(&mut out, format, &self.telemetry.gather());
        text::finish(&mut out, format);
        out
    }
}

/// The table families' HELP and TYPE lines in one format, plain and as gzip members: the
/// same for every rendering, so written once.
struct TableHeaders {
    plain: Vec<Bytes>,
    gzip: Vec<Bytes>,
}

impl TableHeaders {
    fn of(format: Format) -> &'static TableHeaders {
        static TEXT: OnceLock<TableHeaders> = OnceLock::new();
        static OPENMETRICS: OnceLock<TableHeaders> = OnceLock::new();
        let headers = match format {
            Format::Text => &TEXT,
            Format::OpenMetrics => &OPENMETRICS,
        };
        headers.get_or_init(|| {
            let plain = table::headers(format);
            let gzip = plain.iter().map(|h| Bytes::from(gzip_bytes(h))).collect();
            TableHeaders { plain, gzip }
        })
    }
}

/// One rendering of the table, and its gzip form once a scraper asked for it.
struct RenderedTable {
    generation: u64,
    text: TableText,
    /// Per family of [`FAMILIES`], its samples as gzip members.
    gzip: tokio::sync::OnceCell<Vec<Vec<Bytes>>>,
    /// Cancelled when responses must let this rendering go.
    superseded: CancellationToken,
    /// Counted by every response made of this rendering.
    lease: Arc<()>,
}

/// Text is compressed in pieces of at most this size, one gzip member each, so that all
/// cores can compress at once.
const GZIP_PIECE: usize = 4 << 20;

impl RenderedTable {
    /// The memory this rendering holds: its text, and its gzip form if made.
    fn bytes(&self) -> usize {
        let gzip = self.gzip.get().map_or(0, |families| {
            families.iter().flatten().map(Bytes::len).sum()
        });
        self.text.len() + gzip
    }

    async fn gzip(self: &Arc<Self>) -> &[Vec<Bytes>] {
        let this = self.clone();
        self.gzip
            .get_or_init(|| async move {
                tokio::task::spawn_blocking(move || {
                    let pieces: Vec<(usize, Bytes)> = this
                        .text
                        .families()
                        .enumerate()
                        .flat_map(|(family, chunks)| {
                            chunks.iter().flat_map(move |chunk| {
                                (0..chunk.len()).step_by(GZIP_PIECE).map(move |at| {
                                    (family, chunk.slice(at..chunk.len().min(at + GZIP_PIECE)))
                                })
                            })
                        })
                        .collect();
                    let members: Vec<(usize, Bytes)> = pieces
                        .into_par_iter()
                        .map(|(family, piece)| (family, Bytes::from(gzip_bytes(&piece))))
                        .collect();
                    let mut families = vec![Vec::new(); FAMILIES.len()];
                    for (family, member) in members {
                        families[family].push(member);
                    }
                    families
                })
                .await
                .expect("compressing does not panic")
            })
            .await
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

    /// A table of one target, 127.0.0.1 ports 1-2000 expected open.
    fn range_table() -> Arc<StateTable> {
        let config = Config::parse(
            "[[targets]]\nhost = \"127.0.0.1\"\nports = [\"1-2000\"]\nexpect = \"open\"",
            "t",
        )
        .unwrap();
        let table = Arc::new(StateTable::new());
        table.set_targets(&config.targets);
        table
    }

    /// Records `state` for every port of [`range_table`]'s target.
    fn record_all(table: &StateTable, state: State) {
        for port in 1..=2000 {
            let outcome = Outcome {
                state,
                reason: Reason::Unknown,
                connect: None,
                at: SystemTime::now(),
                service: None,
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
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_scrapes_share_one_rendering() {
        let table = range_table();
        let record = |state| record_all(&table, state);
        record(State::Closed);
        let telemetry = Arc::new(Telemetry::new().unwrap());
        let metrics = Arc::new(Metrics::new(
            table.clone(),
            Default::default(),
            telemetry.clone(),
        ));
        let scrape_all = |gzip| {
            let scrapes: Vec<_> = (0..8)
                .map(|_| {
                    let metrics = metrics.clone();
                    tokio::spawn(async move { metrics.scrape(Format::Text, gzip).await.body })
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

    fn gunzip(members: &[Bytes]) -> String {
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::MultiGzDecoder::new(&members.concat()[..]),
            &mut text,
        )
        .unwrap();
        text
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn both_formats_share_one_rendering_and_openmetrics_ends_with_eof() {
        let table = range_table();
        record_all(&table, State::Closed);
        let telemetry = Arc::new(Telemetry::new().unwrap());
        let metrics = Metrics::new(table, Default::default(), telemetry.clone());
        let text = metrics.scrape(Format::Text, false).await.body;
        let om = metrics.scrape(Format::OpenMetrics, false).await.body;
        let om_gzip = metrics.scrape(Format::OpenMetrics, true).await.body;
        let text_gzip = metrics.scrape(Format::Text, true).await.body;
        assert_eq!(telemetry.renders.get(), 1, "one rendering for both formats");
        // The body's parts: the table's, then the exporter's own metrics.
        let table_part = |body: &[Bytes]| body[..body.len() - 1].to_vec();
        let om_table = String::from_utf8(table_part(&om).concat()).unwrap();
        let text_table = String::from_utf8(table_part(&text).concat()).unwrap();
        assert_eq!(gunzip(&table_part(&om_gzip)), om_table);
        assert_eq!(gunzip(&table_part(&text_gzip)), text_table);
        let samples = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .map(String::from)
                .collect()
        };
        assert_eq!(samples(&om_table), samples(&text_table));
        // Per row: four port_state, reason, unexpected, changes, last change, last probe;
        // and the four counts of port_target_ports.
        assert_eq!(samples(&om_table).len(), 2000 * 9 + 4);
        assert!(om_table.contains("\n# TYPE port_state_changes counter\n"));
        assert!(text_table.contains("\n# TYPE port_state_changes_total counter\n"));
        // `# EOF` ends the exposition, after the exporter's own metrics, plain or gzipped.
        for whole in [String::from_utf8(om.concat()).unwrap(), gunzip(&om_gzip)] {
            assert!(
                whole.ends_with("\n# EOF\n"),
                "{}",
                &whole[whole.len() - 200..]
            );
            assert_eq!(whole.matches("# EOF").count(), 1);
            assert!(whole.contains("\n# TYPE port_exporter_build info\n"));
        }
        assert!(!String::from_utf8(text.concat()).unwrap().contains("# EOF"));
    }

    /// Regression: 300 clients that asked for /metrics and never read, each after the table
    /// had changed, pinned a rendering each (456 MB of RSS at 10,000 pairs). Renderings that
    /// responses hold are bounded: past the bound the oldest are superseded.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn renderings_held_by_responses_are_bounded_and_the_oldest_superseded() {
        let table = range_table();
        let telemetry = Arc::new(Telemetry::new().unwrap());
        let mut metrics = Metrics::new(table.clone(), Default::default(), telemetry);
        record_all(&table, State::Closed);
        let one = metrics.scrape(Format::Text, false).await;
        let rendering: usize = one.body.iter().map(Bytes::len).sum();
        // Room for about five renderings of this table.
        metrics.min_pinned_bytes = rendering * 5;
        let mut held = vec![one];
        for i in 0..12 {
            record_all(
                &table,
                if i % 2 == 0 {
                    State::Open
                } else {
                    State::Closed
                },
            );
            held.push(metrics.scrape(Format::Text, false).await);
        }
        let superseded = held.iter().filter(|s| s.superseded.is_cancelled()).count();
        // Every response still holds its rendering: each replaced one is still counted as
        // pinned, or was superseded.
        assert_eq!(metrics.pinned() + superseded, 12);
        assert!(
            (7..=9).contains(&superseded),
            "{superseded} of 13 superseded with room for 5"
        );
        // The oldest go first; the newest is never superseded.
        let first_kept = held
            .iter()
            .position(|s| !s.superseded.is_cancelled())
            .unwrap();
        assert!(
            held[first_kept..]
                .iter()
                .all(|s| !s.superseded.is_cancelled())
        );
        // Once the responses let go, nothing is pinned.
        held.clear();
        record_all(&table, State::Open);
        drop(metrics.scrape(Format::Text, false).await);
        assert_eq!(metrics.pinned(), 0);
    }
}
