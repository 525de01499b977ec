//! Streamed parts, for uploads whose parts are too large to hold: each part's request starts once
//! [`HOLD`] bytes of it are there and then takes the body as it arrives, so memory stays at about
//! `HOLD` plus a few chunks whatever the part size (up to S3's 5 GiB). S3 needs a part's length
//! before its first byte, so every started part must be filled: the uploader announces
//! [`PartPlan::Streamed`] and the producer ends the body where a started part ends (with filler
//! that readers skip); a last part shorter than `HOLD` was never started and is sent whole.
//!
//! The price: a streamed part cannot be re-sent, so a failed part fails the upload (which is
//! aborted and retried as a whole), where a held part is retried by the SDK; and Content-MD5
//! (object lock) needs a part's bytes before it is sent, so locked uploads always hold parts.

use super::errors::classify;
use super::upload::{first_error, join_one, InFlight, OpenUpload, PARTS_IN_FLIGHT};
use super::S3Storage;
use crate::infra::storage::parts::MAX_PARTS;
use crate::infra::storage::{BodyReceiver, PutResult, Result, StorageError};
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::StalledStreamProtectionConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::CompletedPart;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Parts larger than this are streamed rather than held (the default part size: uploads of
/// ordinary size keep the SDK's retries of single parts).
pub const STREAM_PARTS_ABOVE: u64 = crate::infra::storage::parts::DEFAULT_PART_SIZE;
/// How long the store may take to answer once a streamed part was handed over, or to take the
/// next piece of it (the SDK's own limit per attempt cannot apply to a request that lasts as long
/// as the dump takes to make a part).
const ANSWER_WITHIN: Duration = Duration::from_secs(600);
/// Bytes of a part held before its request starts; a last part shorter than this is sent whole.
pub const HOLD: u64 = 8 * 1024 * 1024;

/// Bytes per frame handed to the HTTP client, which queues up to 16 frames whatever their size.
const FRAME: usize = 64 * 1024;

/// The body of one part's request: exactly `left` bytes from a channel, an error if it ends
/// early (so a short part is never stored).
struct PartBody {
    rx: mpsc::Receiver<Bytes>,
    /// Fired once every byte was handed to the HTTP client.
    sent: Option<tokio::sync::oneshot::Sender<()>>,
    /// The rest of the chunk being sent.
    current: Bytes,
    left: u64,
}

impl Body for PartBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<std::result::Result<Frame<Bytes>, Self::Error>>> {
        if self.current.is_empty() {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(b)) => self.current = b,
                Poll::Ready(None) if self.left == 0 => return Poll::Ready(None),
                Poll::Ready(None) => return Poll::Ready(Some(Err(std::io::Error::other("the part's data ended early")))),
                Poll::Pending => return Poll::Pending,
            }
        }
        // A copy: a frame that shares the chunk's memory kept the whole chunk alive until the
        // request ended (measured: memory grew with the part), a copy is freed once written.
        let n = self.current.len().min(FRAME);
        let frame = Bytes::copy_from_slice(&self.current.split_to(n));
        self.left = self.left.saturating_sub(n as u64);
        if self.left == 0 {
            if let Some(sent) = self.sent.take() {
                let _ = sent.send(());
            }
        }
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0 && self.current.is_empty() && self.rx.is_closed() && self.rx.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

impl S3Storage {
    /// Uploads part `number` of `len` bytes, taking them from `rx` as they come.
    async fn stream_part(self, key: String, upload_id: String, number: i32, len: u64, rx: mpsc::Receiver<Bytes>) -> Result<CompletedPart> {
        // The request lasts as long as the producer takes to make the part: no stall or
        // per-attempt limit meant for whole bodies applies to it.
        let patient = aws_sdk_s3::config::Builder::default()
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(Duration::from_secs(24 * 3600))
                    .build(),
            );
        let (sent, all_sent) = tokio::sync::oneshot::channel();
        let request = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&key)
            .upload_id(upload_id)
            .part_number(number)
            .content_length(len as i64)
            .body(ByteStream::from_body_1_x(PartBody {
                rx,
                sent: Some(sent),
                current: Bytes::new(),
                left: len,
            }))
            .customize()
            .config_override(patient)
            .send();
        // Once the whole part is sent, the store has as long to answer as for any request.
        let answer_within = async {
            if all_sent.await.is_ok() {
                tokio::time::sleep(ANSWER_WITHIN).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let out = tokio::select! {
            r = request => r.map_err(|e| classify(&format!("uploading part {number} of"), &key, &e))?,
            () = answer_within => {
                return Err(StorageError::other(
                    format!("uploading part {number} of {key}: no answer {} s after the part was sent", ANSWER_WITHIN.as_secs()),
                    true,
                ))
            }
        };
        Ok(CompletedPart::builder()
            .set_e_tag(out.e_tag().map(String::from))
            .part_number(number)
            .build())
    }

    /// Streams the body into an already created multipart upload, part by part as it arrives;
    /// `first` holds the bytes read before the upload was created (at most [`HOLD`] and a chunk).
    pub(super) async fn stream_multipart(
        &self,
        up: &OpenUpload<'_>,
        first: BytesMut,
        body: &mut BodyReceiver,
        in_flight: &mut InFlight,
        cancel: &CancellationToken,
    ) -> Result<PutResult> {
        let part_size = up.part_size;
        // What the next part holds before it starts, as the chunks came (never copied).
        let mut held: VecDeque<Bytes> = VecDeque::from([first.freeze()]);
        let mut parts: Vec<CompletedPart> = Vec::new();
        let mut number: i32 = 1;
        let mut size: u64 = 0;
        loop {
            let done = hold(&mut held, body, cancel).await?;
            let held_len: u64 = held.iter().map(|c| c.len() as u64).sum();
            if number as u64 > MAX_PARTS && !(done && held_len == 0) {
                return Err(StorageError::TooLarge {
                    limit: part_size * MAX_PARTS,
                    part_size,
                });
            }
            while in_flight.len() >= PARTS_IN_FLIGHT {
                parts.extend(join_one(in_flight, cancel).await?);
            }
            if done {
                // The last part, short enough to have been held: sent whole (an empty body is
                // one empty part).
                if held_len > 0 || number == 1 {
                    let data: Bytes = held.drain(..).flatten().collect::<Vec<u8>>().into();
                    size += data.len() as u64;
                    in_flight.spawn(Self::upload_part(
                        self.client.clone(),
                        self.bucket.clone(),
                        up.key.clone(),
                        up.id.to_string(),
                        number,
                        data,
                        false,
                    ));
                }
                break;
            }
            let (tx, rx) = mpsc::channel::<Bytes>(2);
            in_flight.spawn(
                self.clone()
                    .stream_part(up.key.to_string(), up.id.to_string(), number, part_size, rx),
            );
            feed_part(up, number, &mut held, body, &tx, in_flight, cancel).await?;
            size += part_size;
            number += 1;
        }
        self.finish_parts(up, parts, in_flight, size, cancel).await
    }
}

/// Feeds streamed part `number` its `up.part_size` bytes through `tx`: the held chunks first, then
/// the body's; what is left of the last chunk begins the next part.
async fn feed_part(
    up: &OpenUpload<'_>,
    number: i32,
    held: &mut VecDeque<Bytes>,
    body: &mut BodyReceiver,
    tx: &mpsc::Sender<Bytes>,
    in_flight: &mut InFlight,
    cancel: &CancellationToken,
) -> Result<()> {
    let part_size = up.part_size;
    let mut sent = 0u64;
    while sent < part_size {
        let chunk = match held.pop_front() {
            Some(c) => c,
            None => match body.next_or_cancel(cancel).await? {
                Some(c) => c,
                None => {
                    return Err(StorageError::other(
                        format!(
                            "the body ended inside streamed part {number} (internal error: it should have been filled to the part's end)"
                        ),
                        false,
                    ))
                }
            },
        };
        let take = chunk.len().min((part_size - sent) as usize);
        if take < chunk.len() {
            held.push_front(chunk.slice(take..));
        }
        sent += take as u64;
        // A store that stops taking data (its window closed) fails the part, as one that does
        // not answer once it has all of it.
        let delivered = tokio::select! {
            () = cancel.cancelled() => return Err(StorageError::Cancelled),
            r = tokio::time::timeout(ANSWER_WITHIN, tx.send(chunk.slice(..take))) => match r {
                Ok(sent) => sent.is_ok(),
                Err(_) => {
                    return Err(StorageError::other(
                        format!("uploading part {number} of {}: the store took no data for {} s", up.key, ANSWER_WITHIN.as_secs()),
                        true,
                    ))
                }
            },
        };
        if !delivered {
            // The part's request ended early: its error says why.
            return Err(first_error(in_flight, cancel).await);
        }
    }
    Ok(())
}

/// Reads chunks into `held` until it holds [`HOLD`] bytes; true when the body ended first.
async fn hold(held: &mut VecDeque<Bytes>, body: &mut BodyReceiver, cancel: &CancellationToken) -> Result<bool> {
    let mut len: u64 = held.iter().map(|c| c.len() as u64).sum();
    while len < HOLD {
        match body.next_or_cancel(cancel).await? {
            Some(chunk) => {
                len += chunk.len() as u64;
                held.push_back(chunk);
            }
            None => return Ok(true),
        }
    }
    Ok(false)
}
