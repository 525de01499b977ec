//! One dump stream, several uploads: what the producer sends is forwarded to every destination's
//! upload in turn. The first upload leads: its part plan is the one the producer ends the body
//! for, so the others hold their parts whole (any length suits them). A destination whose upload
//! stops, or takes nothing for [`STALL`] while another still takes the body, is cut off (its
//! upload is cancelled, so it publishes nothing) and the others go on: a slow or failed
//! destination never fails the other's backup. Once one destination holds the whole backup, the
//! others get as long again as it took (and at least [`STALL`]) to finish theirs.

use super::produce::Streamed;
use super::{BackupContext, BackupError};
use crate::infra::storage::{body_channel, BodyReceiver, BodySender, DynStorage, Key, PartPlan, PutOptions, PutResult, StorageError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long one destination may take no data while another one still does.
pub const STALL: Duration = Duration::from_secs(120);

/// How the body went to one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fed {
    /// Every byte, and the end of the body: its upload may publish.
    Whole,
    /// Its upload stopped taking the body (its own error says why).
    Stopped,
    /// It took nothing for [`STALL`] while another destination did: its upload was cancelled.
    Stalled,
    /// The producer failed or stopped first: nothing is published anywhere.
    Abandoned,
}

/// One destination's side of the fan-out: the body going to its upload, and the token that
/// cancels that upload when it is cut off.
pub(super) struct Sink {
    pub tx: BodySender,
    pub cancel: CancellationToken,
}

/// Forwards the producer's body (`rx`) to every sink until the producer finishes or fails, or no
/// sink takes it any more (then the producer's next send fails). Returns how each sink was fed.
pub(super) async fn forward(mut rx: BodyReceiver, sinks: Vec<Sink>, stall: Duration) -> Vec<Fed> {
    let mut fed = vec![Fed::Whole; sinks.len()];
    let mut open: Vec<Option<Sink>> = sinks.into_iter().map(Some).collect();
    // The producer ends the body where the lead's parts need it to end.
    // (An upload that has not said within `stall` is stuck: any plan will do for it.)
    if let Some(Some(lead)) = open.first_mut() {
        rx.announce(tokio::time::timeout(stall, lead.tx.plan()).await.unwrap_or(PartPlan::Held));
    }
    loop {
        let chunk = match rx.next().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => {
                for i in 0..open.len() {
                    let Some(s) = open[i].take() else { continue };
                    // The last one still taking the body waits as long as it needs: others are
                    // those already finished whole, and those whose upload still runs.
                    let others = (0..open.len()).any(|j| {
                        j != i && fed[j] == Fed::Whole && open[j].as_ref().is_none_or(|o| !o.tx.is_closed()) && (j < i || open[j].is_some())
                    });
                    if !others {
                        s.tx.finish().await;
                    } else if tokio::time::timeout(stall, s.tx.finish()).await.is_err() {
                        s.cancel.cancel();
                        fed[i] = Fed::Stalled;
                    }
                }
                return fed;
            }
            Err(_) => {
                // Dropping the senders aborts every upload.
                for (i, sink) in open.iter_mut().enumerate() {
                    if sink.take().is_some() {
                        fed[i] = Fed::Abandoned;
                    }
                }
                return fed;
            }
        };
        for i in 0..open.len() {
            let others = open
                .iter()
                .enumerate()
                .filter(|(j, s)| *j != i && s.as_ref().is_some_and(|s| !s.tx.is_closed()))
                .count();
            let Some(sink) = &open[i] else { continue };
            let sent = if others == 0 {
                // The last destination left is never cut off for being slow.
                Ok(sink.tx.send(chunk.clone()).await)
            } else {
                tokio::time::timeout(stall, sink.tx.send(chunk.clone())).await
            };
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(())) => {
                    open[i] = None;
                    fed[i] = Fed::Stopped;
                }
                Err(_) => {
                    if let Some(s) = open[i].take() {
                        s.cancel.cancel();
                    }
                    fed[i] = Fed::Stalled;
                }
            }
        }
        if open.iter().all(Option::is_none) {
            return fed;
        }
    }
}

/// The dump, compressed (and sealed), into every destination at once: one producer, and with
/// two destinations a fan-out between it and the uploads. Returns what the producer made, each
/// upload's result and how each was fed.
pub(super) async fn upload(
    ctx: &BackupContext,
    key: &Key,
    child: crate::infra::pg::OwnedChild,
    dests: &[(&'static str, &DynStorage)],
    opts: PutOptions,
    give_way: &CancellationToken,
) -> (
    Result<Streamed, BackupError>,
    Vec<crate::infra::storage::Result<PutResult>>,
    Vec<Fed>,
) {
    let (tx, rx) = body_channel(4);
    let produce = super::produce::produce(child, tx, ctx.cfg.compression_level, &ctx.cfg.recipients, give_way);
    if let [(_, st)] = dests {
        let (produced, put) = tokio::join!(produce, st.put(key, rx, opts, give_way));
        return (produced, vec![put], vec![Fed::Whole]);
    }
    let stall = ctx.stall();
    // Once one destination holds the whole backup, the others get `stall` more to finish theirs
    // (they hold at most a few parts by then); a request that hangs cannot hold the backup up.
    let first_done = CancellationToken::new();
    let started = std::time::Instant::now();
    let first_took = std::sync::Arc::new(std::sync::Mutex::new(Duration::ZERO));
    let mut sinks = Vec::with_capacity(dests.len());
    let mut puts = Vec::with_capacity(dests.len());
    for (i, (_, st)) in dests.iter().enumerate() {
        let (tx, rx) = body_channel(4);
        let cut = give_way.child_token();
        sinks.push(Sink { tx, cancel: cut.clone() });
        // Only the lead's parts may be streamed: the body ends where they need it to.
        let opts = PutOptions { whole: i > 0, ..opts };
        let (first_done, first_took) = (first_done.clone(), first_took.clone());
        puts.push(async move {
            let put = st.put(key, rx, opts, &cut);
            tokio::pin!(put);
            // A destination up to twice as slow as the other (and at least `stall`) still makes it.
            let late = async {
                first_done.cancelled().await;
                let took = *first_took.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                tokio::time::sleep(took.max(stall)).await;
            };
            tokio::select! {
                r = &mut put => {
                    if r.is_ok() && !first_done.is_cancelled() {
                        *first_took.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = started.elapsed();
                        first_done.cancel();
                    }
                    (r, false)
                }
                () = late => {
                    cut.cancel();
                    // A moment to clean up after itself; then it is dropped. One that completed
                    // after all is reported as it is, so that it is taken back.
                    match tokio::time::timeout(Duration::from_secs(5), put).await {
                        Ok(Ok(done)) => (Ok(done), true),
                        _ => (Err(StorageError::Cancelled), true),
                    }
                }
            }
        });
    }
    let (produced, mut fed, done) = tokio::join!(produce, forward(rx, sinks, stall), futures::future::join_all(puts));
    let mut puts = Vec::with_capacity(done.len());
    for (i, (r, late)) in done.into_iter().enumerate() {
        if late {
            fed[i] = Fed::Stalled;
        }
        puts.push(r);
    }
    (produced, puts, fed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infra::storage::body_channel;
    use bytes::Bytes;

    /// A producer sending `n` chunks, then finishing.
    async fn produce(tx: BodySender, n: usize) -> bool {
        for _ in 0..n {
            if tx.send(Bytes::from_static(b"chunk")).await.is_err() {
                return false;
            }
        }
        tx.finish().await;
        true
    }

    /// Reads a body to its end; `None` when it was aborted or cancelled.
    async fn drain(mut rx: BodyReceiver, cancel: CancellationToken) -> Option<usize> {
        let mut n = 0;
        loop {
            match rx.next_or_cancel(&cancel).await {
                Ok(Some(_)) => n += 1,
                Ok(None) => return Some(n),
                Err(_) => return None,
            }
        }
    }

    fn sink(cap: usize) -> (Sink, BodyReceiver, CancellationToken) {
        let (tx, rx) = body_channel(cap);
        let cancel = CancellationToken::new();
        (
            Sink {
                tx,
                cancel: cancel.clone(),
            },
            rx,
            cancel,
        )
    }

    #[tokio::test]
    async fn every_destination_gets_the_whole_body() {
        let (tx, rx) = body_channel(2);
        let (a, ra, ca) = sink(2);
        let (b, rb, cb) = sink(2);
        let (produced, fed, got_a, got_b) = tokio::join!(produce(tx, 50), forward(rx, vec![a, b], STALL), drain(ra, ca), drain(rb, cb));
        assert!(produced);
        assert_eq!(fed, vec![Fed::Whole, Fed::Whole]);
        assert_eq!((got_a, got_b), (Some(50), Some(50)));
    }

    #[tokio::test]
    async fn a_stopped_destination_leaves_the_other_whole() {
        let (tx, rx) = body_channel(2);
        let (a, ra, _) = sink(2);
        let (b, rb, cb) = sink(2);
        drop(ra);
        let (produced, fed, got_b) = tokio::join!(produce(tx, 50), forward(rx, vec![a, b], STALL), drain(rb, cb));
        assert!(produced);
        assert_eq!(fed, vec![Fed::Stopped, Fed::Whole]);
        assert_eq!(got_b, Some(50));
    }

    #[tokio::test]
    async fn a_stalled_destination_is_cut_off_and_cancelled() {
        let (tx, rx) = body_channel(2);
        let (a, ra, ca) = sink(2);
        let (b, _stuck, cb) = sink(2);
        let (produced, fed, got_a) = tokio::join!(produce(tx, 50), forward(rx, vec![a, b], Duration::from_millis(50)), drain(ra, ca));
        assert!(produced);
        assert_eq!(fed, vec![Fed::Whole, Fed::Stalled]);
        assert_eq!(got_a, Some(50));
        assert!(cb.is_cancelled());
    }

    #[tokio::test]
    async fn a_failed_producer_abandons_every_upload() {
        let (tx, rx) = body_channel(2);
        let (a, ra, ca) = sink(2);
        let (b, rb, cb) = sink(2);
        let producer = async move {
            tx.send(Bytes::from_static(b"x")).await.ok();
            tx.fail().await;
        };
        let (_, fed, got_a, got_b) = tokio::join!(producer, forward(rx, vec![a, b], STALL), drain(ra, ca), drain(rb, cb));
        assert_eq!(fed, vec![Fed::Abandoned, Fed::Abandoned]);
        assert_eq!((got_a, got_b), (None, None));
    }

    #[tokio::test]
    async fn when_every_destination_stops_the_producer_hears_of_it() {
        let (tx, rx) = body_channel(2);
        let (a, ra, _) = sink(2);
        drop(ra);
        let (produced, fed) = tokio::join!(produce(tx, 50), forward(rx, vec![a], STALL));
        assert!(!produced);
        assert_eq!(fed, vec![Fed::Stopped]);
    }
}
