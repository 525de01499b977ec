//! Upload bodies: a bounded channel from a producer (the backup pipeline) to [`super::Storage::put`].
//! A body counts as complete only after an explicit [`BodySender::finish`]: a producer that fails,
//! or is dropped, aborts the upload.

use super::{Result, StorageError};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

enum BodyMsg {
    Data(Bytes),
    Finish,
    Fail(String),
}

/// Producer side of an upload body.
#[derive(Debug)]
pub struct BodySender {
    /// Channel to the uploader; bounded, so a slow upload slows the producer.
    tx: mpsc::Sender<BodyMsg>,
}

/// Consumer side of an upload body, handed to [`super::Storage::put`].
pub struct BodyReceiver {
    /// Channel from the producer.
    rx: mpsc::Receiver<BodyMsg>,
    /// Set once `Finish` was seen, after which the receiver yields `None`.
    finished: bool,
}

impl std::fmt::Debug for BodyReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyReceiver").field("finished", &self.finished).finish()
    }
}

/// A bounded body channel holding at most `capacity` chunks in flight.
pub fn body_channel(capacity: usize) -> (BodySender, BodyReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (BodySender { tx }, BodyReceiver { rx, finished: false })
}

impl BodySender {
    /// Sends one chunk; waits while the uploader is behind.
    ///
    /// # Errors
    /// When the uploader has already stopped (its error is reported by `put`).
    pub async fn send(&self, data: Bytes) -> Result<(), ()> {
        self.tx.send(BodyMsg::Data(data)).await.map_err(|_| ())
    }

    /// Marks the body complete: only now may the upload be published.
    pub async fn finish(self) {
        let _ = self.tx.send(BodyMsg::Finish).await;
    }

    /// Aborts the upload with a reason.
    pub async fn fail(self, reason: impl Into<String>) {
        let _ = self.tx.send(BodyMsg::Fail(reason.into())).await;
    }
}

impl BodyReceiver {
    /// Next chunk; `Ok(None)` only after an explicit finish.
    ///
    /// # Errors
    /// [`StorageError::Aborted`] when the producer failed or went away without finishing.
    pub async fn next(&mut self) -> Result<Option<Bytes>> {
        if self.finished {
            return Ok(None);
        }
        match self.rx.recv().await {
            Some(BodyMsg::Data(b)) => Ok(Some(b)),
            Some(BodyMsg::Finish) => {
                self.finished = true;
                Ok(None)
            }
            Some(BodyMsg::Fail(reason)) => Err(StorageError::Aborted(reason)),
            None => Err(StorageError::Aborted("the producer stopped before the end of the stream".into())),
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

    #[tokio::test]
    async fn a_body_dropped_without_finish_is_an_abort() {
        let (tx, mut rx) = body_channel(4);
        tx.send(Bytes::from_static(b"abc")).await.unwrap();
        drop(tx);
        assert_eq!(rx.next().await.unwrap().unwrap(), Bytes::from_static(b"abc"));
        assert!(matches!(rx.next().await, Err(StorageError::Aborted(_))));
    }
}
