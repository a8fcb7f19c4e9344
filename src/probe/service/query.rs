//! A target's `query`: its send/expect steps, in order, on one connection (inside TLS when
//! `service = "tls"`), within the check's budget. Each `expect` is matched against the bytes
//! read after the previous step's match and the rest of its line; what follows is kept for
//! the next step, so that `^` anchors at the start of the next line (or, for a binary reply
//! without line ends, right after the match).

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::io::{Ended, read_until, write};
use crate::config::service::Query;
use crate::domain::Reason;

/// Runs `query` on `stream`: [`Reason::Matched`] when every step got its reply, else why not.
pub async fn run<S>(stream: &mut S, query: &Query, until: Instant) -> Reason
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut pending = Vec::new();
    for step in &query.steps {
        if let Some(send) = &step.send
            && let Err(ended) = write(stream, send, until).await
        {
            return match ended {
                Ended::Timeout => Reason::Timeout,
                _ => Reason::ClosedByPeer,
            };
        }
        let Some(expect) = &step.expect else {
            continue;
        };
        let (matched, ended) = read_until(stream, &mut pending, until, |bytes, _| {
            expect.find(bytes).map(|found| found.end())
        })
        .await;
        match matched {
            Some(end) => {
                // The rest of the matched line goes with it: the next expect starts on the
                // next line (or, without a line end, right after the match).
                let line_end = pending[end..].iter().position(|&b| b == b'\n');
                pending.drain(..line_end.map_or(end, |at| end + at + 1));
            }
            None if !pending.is_empty() => return Reason::QueryMismatch,
            None if ended == Ended::Closed => return Reason::ClosedByPeer,
            None => return Reason::Timeout,
        }
    }
    Reason::Matched
}
