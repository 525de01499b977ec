//! Upload bodies: a bounded channel from a producer (the backup pipeline) to [`super::Storage::put`].
//! A body counts as complete only after an explicit [`BodySender::finish`]: a producer that fails,
//! or is dropped, aborts the upload.

use super::{Abort, Result, StorageError};
use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// How the uploader sends the body, announced before it reads the first chunk so that the
/// producer can end the body where the uploader needs it to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartPlan {
    /// Parts are held whole before they are sent (or there are no parts): any length will do.
    Held,
    /// Parts of `part` bytes are streamed as they arrive, each one started once `hold` bytes of
    /// it are there; a part that was started must receive all its bytes (S3 needs every part's
    /// length before its first byte), so a body must not end inside one.
    Streamed {
        /// The part size.
        part: u64,
        /// Bytes held before a part is started; a shorter last part is sent whole.
        hold: u64,
    },
}

impl PartPlan {
    /// Where a body of `len` bytes must end instead, when it would end inside a streamed part:
    /// that part's end. `None` when `len` is fine as it is (parts held, the body ends exactly at
    /// a part's end, or its last part is shorter than `hold` and so was never started).
    pub fn end_for(self, len: u64) -> Option<u64> {
        match self {
            PartPlan::Held => None,
            PartPlan::Streamed { part, hold } => {
                let last = len % part;
                (last >= hold).then(|| len - last + part)
            }
        }
    }
}

enum BodyMsg {
    Data(Bytes),
    Finish,
    Fail,
}

/// Producer side of an upload body.
#[derive(Debug)]
pub struct BodySender {
    /// Channel to the uploader; bounded, so a slow upload slows the producer.
    tx: mpsc::Sender<BodyMsg>,
    /// The uploader's plan, once announced.
    plan: watch::Receiver<Option<PartPlan>>,
}

/// Consumer side of an upload body, handed to [`super::Storage::put`].
pub struct BodyReceiver {
    /// Channel from the producer.
    rx: mpsc::Receiver<BodyMsg>,
    /// Set once `Finish` was seen, after which the receiver yields `None`.
    finished: bool,
    /// Announces the plan to the producer.
    plan: watch::Sender<Option<PartPlan>>,
}

impl std::fmt::Debug for BodyReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyReceiver").field("finished", &self.finished).finish()
    }
}

/// A bounded body channel holding at most `capacity` chunks in flight.
pub fn body_channel(capacity: usize) -> (BodySender, BodyReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let (plan_tx, plan_rx) = watch::channel(None);
    (
        BodySender { tx, plan: plan_rx },
        BodyReceiver {
            rx,
            finished: false,
            plan: plan_tx,
        },
    )
}

impl BodySender {
    /// Sends one chunk; waits while the uploader is behind.
    ///
    /// # Errors
    /// When the uploader has already stopped (its error is reported by `put`).
    pub async fn send(&self, data: Bytes) -> Result<(), ()> {
        self.tx.send(BodyMsg::Data(data)).await.map_err(|_| ())
    }

    /// The uploader's plan, waiting until it is announced (an uploader that reads its body
    /// announces it by then at the latest). An uploader that has already stopped counts as
    /// [`PartPlan::Held`]: its own error is what `put` reports.
    pub async fn plan(&mut self) -> PartPlan {
        match self.plan.wait_for(Option::is_some).await {
            Ok(p) => p.unwrap_or(PartPlan::Held),
            Err(_) => PartPlan::Held,
        }
    }

    /// Whether the uploader has stopped taking the body (its `put` returned or went away).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Marks the body complete: only now may the upload be published.
    pub async fn finish(self) {
        let _ = self.tx.send(BodyMsg::Finish).await;
    }

    /// Aborts the upload: the producer failed (and returns its own error to its caller).
    pub async fn fail(self) {
        let _ = self.tx.send(BodyMsg::Fail).await;
    }
}

impl BodyReceiver {
    /// Tells the producer how the body will be sent; before the first chunk is read, or the
    /// plan stays [`PartPlan::Held`].
    pub fn announce(&self, plan: PartPlan) {
        self.plan.send_if_modified(|p| {
            let first = p.is_none();
            p.get_or_insert(plan);
            first
        });
    }

    /// Next chunk; `Ok(None)` only after an explicit finish.
    ///
    /// # Errors
    /// [`StorageError::Aborted`] when the producer failed or went away without finishing.
    pub async fn next(&mut self) -> Result<Option<Bytes>> {
        if self.finished {
            return Ok(None);
        }
        self.announce(PartPlan::Held);
        match self.rx.recv().await {
            Some(BodyMsg::Data(b)) => Ok(Some(b)),
            Some(BodyMsg::Finish) => {
                self.finished = true;
                Ok(None)
            }
            Some(BodyMsg::Fail) => Err(StorageError::Aborted(Abort::ProducerFailed)),
            None => Err(StorageError::Aborted(Abort::ProducerGone)),
        }
    }

    /// Next chunk, or [`StorageError::Cancelled`] when the token fires first.
    ///
    /// # Errors
    /// As [`BodyReceiver::next`], plus cancellation.
    pub async fn next_or_cancel(&mut self, cancel: &CancellationToken) -> Result<Option<Bytes>> {
        tokio::select! {
            biased;
            () = cancel.cancelled() => Err(StorageError::Cancelled),
            r = self.next() => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_never_ends_inside_a_streamed_part() {
        let p = PartPlan::Streamed { part: 100, hold: 10 };
        // (length, where it must end instead)
        let cases = [
            (0, None),
            (5, None), // the only part is short: never started, sent whole
            (9, None),
            (10, Some(100)), // started: filled to its end
            (99, Some(100)),
            (100, None),
            (205, None),
            (210, Some(300)),
            (299, Some(300)),
        ];
        for (len, want) in cases {
            assert_eq!(p.end_for(len), want, "{len}");
        }
        assert_eq!(PartPlan::Held.end_for(99), None);
    }

    #[tokio::test]
    async fn the_plan_is_the_first_announced_or_held_once_reading_began() {
        let (mut tx, mut rx) = body_channel(4);
        rx.announce(PartPlan::Streamed { part: 100, hold: 10 });
        rx.announce(PartPlan::Held);
        assert_eq!(tx.plan().await, PartPlan::Streamed { part: 100, hold: 10 });
        tx.send(Bytes::from_static(b"a")).await.unwrap();
        assert!(rx.next().await.unwrap().is_some());
        assert_eq!(tx.plan().await, PartPlan::Streamed { part: 100, hold: 10 });

        // A reader that announces nothing reads under a held plan; one that went away too.
        let (mut tx, mut rx) = body_channel(4);
        tx.send(Bytes::from_static(b"a")).await.unwrap();
        rx.next().await.unwrap();
        assert_eq!(tx.plan().await, PartPlan::Held);
        let (mut tx, rx) = body_channel(4);
        drop(rx);
        assert_eq!(tx.plan().await, PartPlan::Held);
    }

    #[tokio::test]
    async fn a_body_dropped_without_finish_is_an_abort() {
        let (tx, mut rx) = body_channel(4);
        tx.send(Bytes::from_static(b"abc")).await.unwrap();
        drop(tx);
        assert_eq!(rx.next().await.unwrap().unwrap(), Bytes::from_static(b"abc"));
        assert!(matches!(rx.next().await, Err(StorageError::Aborted(_))));
    }
}
