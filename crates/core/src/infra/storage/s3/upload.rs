//! Streaming uploads: a body smaller than one part goes up in one request; anything larger becomes
//! a multipart upload with one part size throughout (R2 rejects unequal parts), up to
//! [`PARTS_IN_FLIGHT`] parts uploading while the next one fills. Memory is bounded by part size ×
//! (parts in flight + 1); parts larger than the default size are streamed instead
//! ([`super::streamed`]), so memory does not grow with the part size. Any failure or cancellation aborts the multipart upload.

use super::errors::classify;
use super::streamed::{HOLD, STREAM_PARTS_ABOVE};
use super::{ObjectSettings, S3Storage};
use crate::infra::storage::parts::{choose_part_size_at_least, MAX_PARTS};
use crate::infra::storage::{body_channel, BodyReceiver, Key, PartPlan, PutOptions, PutResult, Result, StorageError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ObjectLockMode};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Parts uploading concurrently while the next part fills.
pub(super) const PARTS_IN_FLIGHT: usize = 2;
/// Content type of an object pgvigil writes through this path: gzip, or an age file.
fn content_type(key: &Key) -> &'static str {
    // An age file (`….sql.gz.age`), whose name the records layer gives it.
    if key.as_str().ends_with(".age") {
        "application/octet-stream"
    } else {
        "application/gzip"
    }
}

/// Content-MD5 of a request body, which S3 requires on every write that carries object lock.
pub(super) fn content_md5(data: &[u8]) -> String {
    use base64::Engine;
    use md5::Digest;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(data))
}

/// A multipart upload in progress.
pub(super) struct OpenUpload<'a> {
    /// Object key.
    pub(super) key: &'a Key,
    /// Upload id from CreateMultipartUpload.
    pub(super) id: &'a str,
    /// The one part size used for every part of this upload.
    pub(super) part_size: u64,
    /// Parts carry Content-MD5 (object lock requires it).
    pub(super) md5: bool,
}

/// Parts already uploading.
pub(super) type InFlight = JoinSet<Result<CompletedPart>>;

/// Reads the body into `buf` until it holds `limit` bytes; true when the body ended first.
pub(super) async fn fill(buf: &mut BytesMut, limit: u64, body: &mut BodyReceiver, cancel: &CancellationToken) -> Result<bool> {
    while (buf.len() as u64) < limit {
        match body.next_or_cancel(cancel).await? {
            Some(chunk) => buf.extend_from_slice(&chunk),
            None => return Ok(true),
        }
    }
    Ok(false)
}

/// Waits for the next part in flight to finish, unless cancelled.
pub(super) async fn join_one(in_flight: &mut InFlight, cancel: &CancellationToken) -> Result<Option<CompletedPart>> {
    let joined = tokio::select! {
        () = cancel.cancelled() => return Err(StorageError::Cancelled),
        j = in_flight.join_next() => j,
    };
    match joined {
        None => Ok(None),
        Some(j) => Ok(Some(j.map_err(|e| StorageError::other(format!("upload task failed: {e}"), true))??)),
    }
}

/// The error of a part that failed, waiting for the parts in flight (one of them stopped taking
/// its data).
pub(super) async fn first_error(in_flight: &mut InFlight, cancel: &CancellationToken) -> StorageError {
    loop {
        let j = tokio::select! {
            () = cancel.cancelled() => return StorageError::Cancelled,
            j = in_flight.join_next() => match j { Some(j) => j, None => break },
        };
        match j {
            Ok(Err(e)) => return e,
            Err(e) => return StorageError::other(format!("upload task failed: {e}"), true),
            Ok(Ok(_)) => {}
        }
    }
    StorageError::other("a part's upload stopped taking data", true)
}

/// Whether an upload streams its parts (see [`super::streamed`]) rather than holding them: only
/// parts larger than the default, whose last one may be filled up to its size. A part size chosen
/// from the expected size is at most 1/2250 of it; a fixed one (`S3_PART_SIZE_MB`) must be at most
/// 1/64 of the expected size, or a small backup would be filled up to one large part. Never with
/// object lock (each part's MD5 is needed first) or for a body already in memory.
pub(super) fn streams(part_size: u64, opts: &PutOptions, fixed: bool, locked: bool) -> bool {
    let small_enough = !fixed || opts.expected_size.is_some_and(|e| e / 64 >= part_size);
    part_size > STREAM_PARTS_ABOVE && small_enough && !locked && !opts.whole
}

/// Object lock headers: mode and retain-until date.
#[derive(Clone)]
struct Lock(ObjectLockMode, aws_sdk_s3::primitives::DateTime);

impl S3Storage {
    /// The lock for an upload retained until `until`, when `S3_OBJECT_LOCK_DAYS` is set.
    fn lock(&self, until: Option<chrono::DateTime<chrono::Utc>>) -> Option<Lock> {
        let (cfg, until) = (self.cfg.object_lock?, until?);
        let mode = if cfg.compliance {
            ObjectLockMode::Compliance
        } else {
            ObjectLockMode::Governance
        };
        Some(Lock(mode, aws_sdk_s3::primitives::DateTime::from_secs(until.timestamp())))
    }

    async fn put_single(&self, key: &Key, data: Bytes, lock: Option<Lock>) -> Result<PutResult> {
        let size = data.len() as u64;
        // Object lock buckets (with a default retention, every write) want Content-MD5.
        let md5 = self.cfg.object_lock.map(|_| content_md5(&data));
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .content_length(size as i64)
            .content_type(content_type(key))
            .object_settings(&self.cfg)
            .set_object_lock_mode(lock.as_ref().map(|l| l.0.clone()))
            .set_object_lock_retain_until_date(lock.map(|l| l.1))
            .set_content_md5(md5)
            .body(ByteStream::from(data))
            .send();
        // Not raced against `cancel`: the body is complete and at most one part, and a PUT that
        // lands after "cancelled" was reported would leave an object nobody knows about.
        request
            .await
            .map_err(|e| classify("uploading", key.as_str(), &e))
            .map(|_| PutResult { size, parts: 1 })
    }

    pub(super) async fn upload_part(
        client: Client,
        bucket: String,
        key: Key,
        upload_id: String,
        number: i32,
        data: Bytes,
        md5: bool,
    ) -> Result<CompletedPart> {
        let len = data.len() as i64;
        let md5 = md5.then(|| content_md5(&data));
        let out = client
            .upload_part()
            .bucket(bucket)
            .key(key.as_str())
            .upload_id(upload_id)
            .part_number(number)
            .content_length(len)
            .set_content_md5(md5)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| classify(&format!("uploading part {number} of"), key.as_str(), &e))?;
        Ok(CompletedPart::builder()
            .set_e_tag(out.e_tag().map(String::from))
            .part_number(number)
            .build())
    }

    /// Streams the body into an already created multipart upload.
    async fn fill_multipart(
        &self,
        up: &OpenUpload<'_>,
        first: BytesMut,
        body: &mut BodyReceiver,
        in_flight: &mut InFlight,
        cancel: &CancellationToken,
    ) -> Result<PutResult> {
        let (key, upload_id, part_size) = (up.key, up.id, up.part_size);
        let mut buf = first;
        let mut parts: Vec<CompletedPart> = Vec::new();
        let mut next_number: i32 = 1;
        let mut size: u64 = 0;
        let mut done = false;
        while !done {
            // Fill one part (the first may already hold data).
            done = fill(&mut buf, part_size, body, cancel).await?;
            // A full buffer may hold more than one part's worth: split exactly at part_size.
            while (buf.len() as u64) >= part_size || (done && !buf.is_empty()) || (done && next_number == 1) {
                let take = (buf.len() as u64).min(part_size) as usize;
                let data = buf.split_to(take).freeze();
                if next_number as u64 > MAX_PARTS {
                    return Err(StorageError::TooLarge {
                        limit: part_size * MAX_PARTS,
                        part_size,
                    });
                }
                size += data.len() as u64;
                while in_flight.len() >= PARTS_IN_FLIGHT {
                    parts.extend(join_one(in_flight, cancel).await?);
                }
                in_flight.spawn(Self::upload_part(
                    self.client.clone(),
                    self.bucket.clone(),
                    key.clone(),
                    upload_id.to_string(),
                    next_number,
                    data,
                    up.md5,
                ));
                next_number += 1;
                if buf.is_empty() {
                    break;
                }
            }
            if !done {
                buf.reserve(part_size as usize);
            }
        }
        self.finish_parts(up, parts, in_flight, size, cancel).await
    }

    /// Waits for the parts still in flight, then completes the upload from all of them, in order.
    pub(super) async fn finish_parts(
        &self,
        up: &OpenUpload<'_>,
        mut parts: Vec<CompletedPart>,
        in_flight: &mut InFlight,
        size: u64,
        cancel: &CancellationToken,
    ) -> Result<PutResult> {
        while let Some(part) = join_one(in_flight, cancel).await? {
            parts.push(part);
        }
        parts.sort_by_key(|p| p.part_number());
        let count = parts.len() as u32;
        if cancel.is_cancelled() {
            return Err(StorageError::Cancelled);
        }
        self.complete(up.key, up.id, parts, "completing the upload of").await?;
        Ok(PutResult { size, parts: count })
    }

    /// Completes a multipart upload (or copy) from its parts, in order.
    pub(super) async fn complete(&self, key: &Key, upload_id: &str, parts: Vec<CompletedPart>, what: &str) -> Result<()> {
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| classify(what, key.as_str(), &e))?;
        Ok(())
    }

    /// Aborts a multipart upload, best effort and bounded in time (it also runs at shutdown).
    pub(super) async fn abort(&self, key: &Key, upload_id: &str) {
        let res = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .upload_id(upload_id)
            .send();
        // Short: this also runs at shutdown, inside the runner's deadline.
        match tokio::time::timeout(Duration::from_secs(5), res).await {
            Ok(Ok(_)) => tracing::debug!(key = %key, "multipart upload aborted"),
            Ok(Err(e)) => {
                tracing::warn!(key = %key, error = %classify("aborting the upload of", key.as_str(), &e), "could not abort a multipart upload; a bucket lifecycle rule for incomplete uploads will remove it")
            }
            Err(_) => tracing::warn!(key = %key, "timed out aborting a multipart upload"),
        }
    }

    /// The body of [`crate::infra::storage::Storage::put`].
    pub(super) async fn upload(
        &self,
        key: &Key,
        mut body: BodyReceiver,
        opts: PutOptions,
        cancel: &CancellationToken,
    ) -> Result<PutResult> {
        let part_size = choose_part_size_at_least(opts.expected_size, self.cfg.part_size, opts.min_part_size);
        let streamed = streams(part_size, &opts, self.cfg.part_size.is_some(), self.cfg.object_lock.is_some());
        if !streamed && self.cfg.object_lock.is_some() && part_size > STREAM_PARTS_ABOVE {
            // Content-MD5 needs a part's bytes before it is sent: the bound is the held parts.
            tracing::info!(
                part_mib = part_size >> 20,
                "object lock: parts are held whole for their Content-MD5, so this upload may hold up to {} MiB in memory",
                (part_size * (PARTS_IN_FLIGHT as u64 + 1)) >> 20
            );
        }
        body.announce(if streamed {
            PartPlan::Streamed {
                part: part_size,
                hold: HOLD,
            }
        } else {
            PartPlan::Held
        });
        // Read up to one part (or what a streamed part holds) first: a body smaller than that
        // goes up in one request.
        let first_limit = if streamed { HOLD } else { part_size };
        // (Room for what a streamed part holds and a chunk more: growing it would copy it.)
        let room = if streamed { HOLD + (2 << 20) } else { part_size.min(8 << 20) };
        let mut first = BytesMut::with_capacity(room as usize);
        let complete = fill(&mut first, first_limit, &mut body, cancel).await?;
        let lock = self.lock(opts.retain_until);
        if complete && !opts.force_multipart {
            return self.put_single(key, first.freeze(), lock.clone()).await;
        }
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .content_type(content_type(key))
            .object_settings(&self.cfg)
            .set_object_lock_mode(lock.as_ref().map(|l| l.0.clone()))
            .set_object_lock_retain_until_date(lock.as_ref().map(|l| l.1))
            .send()
            .await
            .map_err(|e| classify("starting the upload of", key.as_str(), &e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        if complete {
            // Make the body yield end-of-stream again inside fill_multipart.
            let (tx, rx) = body_channel(1);
            tx.finish().await;
            body = rx;
        }
        let mut in_flight = JoinSet::new();
        let up = OpenUpload {
            key,
            id: &upload_id,
            part_size,
            md5: self.cfg.object_lock.is_some(),
        };
        let res = if streamed {
            self.stream_multipart(&up, first, &mut body, &mut in_flight, cancel).await
        } else {
            self.fill_multipart(&up, first, &mut body, &mut in_flight, cancel).await
        };
        if res.is_err() {
            // A part still uploading could land after the abort and linger: let the ones in flight
            // finish (briefly), cancel the rest, then abort.
            let drain = async { while in_flight.join_next().await.is_some() {} };
            let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
            in_flight.abort_all();
            self.abort(key, &upload_id).await;
        }
        res
    }
}
