//! S3 backend (AWS and S3-compatible stores: MinIO, R2, B2, Garage, …).
//!
//! Uploads are multipart with one part size per upload (R2 rejects unequal parts), up to
//! [`PARTS_IN_FLIGHT`] parts uploading while the next one fills; memory is bounded by
//! part size × (parts in flight + 1). Any failure or cancellation aborts the multipart upload.

use super::{choose_part_size, BodyReceiver, ObjectMeta, ObjectReader, PutOptions, PutResult, Result, Storage, StorageError, MAX_PARTS};
use crate::config::{S3Config, Sse};
use crate::keys::Key;
use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation, StalledStreamProtectionConfig};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier, ServerSideEncryption, StorageClass};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};
use secrecy::ExposeSecret;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Parts uploading concurrently while the next part fills.
pub const PARTS_IN_FLIGHT: usize = 2;
/// Age after which an uncommitted multipart upload is considered abandoned.
const STALE_UPLOAD_SECS: i64 = 24 * 3600;
/// Largest object a single CopyObject may copy.
const MAX_SINGLE_COPY: u64 = 5 * 1024 * 1024 * 1024;
/// Part size for multipart copies.
const COPY_PART: u64 = 512 * 1024 * 1024;

/// A multipart upload in progress.
struct OpenUpload<'a> {
    /// Object key.
    key: &'a Key,
    /// Upload id from CreateMultipartUpload.
    id: &'a str,
    /// The one part size used for every part of this upload.
    part_size: u64,
}

/// An S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Storage {
    /// SDK client configured for the endpoint and credentials.
    client: Client,
    /// Bucket name.
    bucket: String,
    /// Encryption, storage class and part size settings.
    cfg: S3Config,
}

/// Percent-encodes a key for `x-amz-copy-source`, keeping `/`.
fn encode_key(key: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(key, SET).to_string()
}

/// Turns an SDK error into one plain sentence and a retry verdict.
pub(crate) fn classify<E>(op: &str, target: &str, err: &SdkError<E, HttpResponse>) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::TimeoutError(_) => StorageError::other(format!("{op} {target}: the S3 endpoint did not answer in time"), true),
        SdkError::DispatchFailure(d) => {
            let why = if d.is_timeout() {
                "timed out connecting"
            } else {
                "could not connect (endpoint unreachable)"
            };
            StorageError::other(format!("{op} {target}: {why}"), true)
        }
        SdkError::ResponseError(_) => {
            StorageError::other(format!("{op} {target}: the S3 endpoint sent a malformed or cut-off response"), true)
        }
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let e = ctx.err();
            let code = e.code().unwrap_or("");
            let msg = e.message().unwrap_or("");
            let (text, retryable) = match code {
                "NoSuchBucket" => ("the bucket does not exist (check S3_BUCKET)".to_string(), false),
                "AccessDenied" | "Forbidden" => ("access denied (check the credentials and the bucket policy)".to_string(), false),
                "InvalidAccessKeyId" => (
                    "the access key id is not known to the store (check S3_ACCESS_KEY_ID)".to_string(),
                    false,
                ),
                "SignatureDoesNotMatch" => (
                    "the request signature was rejected (check S3_SECRET_ACCESS_KEY and S3_REGION)".to_string(),
                    false,
                ),
                "PermanentRedirect" | "AuthorizationHeaderMalformed" | "IllegalLocationConstraintException" => {
                    ("the bucket is in another region (check S3_REGION)".to_string(), false)
                }
                "NoSuchKey" | "NotFound" => return StorageError::NotFound(target.to_string()),
                "SlowDown" | "ServiceUnavailable" | "InternalError" | "RequestTimeout" => {
                    (format!("the store is busy or failing ({code})"), true)
                }
                c if c.contains("Checksum") || c == "BadDigest" || c == "InvalidDigest" => {
                    (format!("the store rejected the checksum scheme ({code}: {msg})"), false)
                }
                _ if status == 404 => return StorageError::NotFound(target.to_string()),
                _ if status == 403 => ("access denied (check the credentials and the bucket policy)".to_string(), false),
                _ if status == 301 => ("the bucket is in another region (check S3_REGION)".to_string(), false),
                _ => (
                    format!("HTTP {status} {code} {msg}").trim().to_string(),
                    status >= 500 || status == 429,
                ),
            };
            StorageError::other(format!("{op} {target}: {text}"), retryable)
        }
        _ => StorageError::other(format!("{op} {target}: {}", aws_sdk_s3::error::DisplayErrorContext(err)), true),
    }
}

impl S3Storage {
    /// Configures the client. No request is made here; use [`super::preflight`] to test access.
    ///
    /// # Errors
    /// Never at present; kept fallible for future credential providers.
    pub async fn new(cfg: &S3Config) -> Result<Self> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).region(Region::new(cfg.region.clone()));
        if let Some((id, secret)) = &cfg.credentials {
            loader = loader.credentials_provider(Credentials::new(
                id.clone(),
                secret.expose_secret().to_string(),
                None,
                None,
                "pgvigil-env",
            ));
        }
        if let Some(endpoint) = &cfg.endpoint {
            loader = loader.endpoint_url(endpoint.clone());
        }
        let sdk = loader.load().await;
        let conf = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(cfg.force_path_style)
            // Newer SDK defaults add CRC checksums that several compatible stores reject.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(5)
                    .with_initial_backoff(Duration::from_millis(500))
                    .with_max_backoff(Duration::from_secs(20)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(Duration::from_secs(600))
                    .build(),
            )
            // A slow link must not cut an upload: allow long stalls before giving up.
            .stalled_stream_protection(
                StalledStreamProtectionConfig::enabled()
                    .grace_period(Duration::from_secs(60))
                    .build(),
            )
            .build();
        Ok(Self {
            client: Client::from_conf(conf),
            bucket: cfg.bucket.clone(),
            cfg: cfg.clone(),
        })
    }

    fn sse(&self) -> (Option<ServerSideEncryption>, Option<String>) {
        match &self.cfg.sse {
            None => (None, None),
            Some(Sse::Aes256) => (Some(ServerSideEncryption::Aes256), None),
            Some(Sse::Kms { key_id }) => (Some(ServerSideEncryption::AwsKms), key_id.clone()),
        }
    }

    fn storage_class(&self) -> Option<StorageClass> {
        self.cfg.storage_class.as_deref().map(StorageClass::from)
    }

    async fn put_single(&self, key: &Key, data: Bytes) -> Result<PutResult> {
        let (sse, kms) = self.sse();
        let size = data.len() as u64;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .content_length(size as i64)
            .content_type("application/gzip")
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms)
            .set_storage_class(self.storage_class())
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| classify("uploading", key.as_str(), &e))?;
        Ok(PutResult { size, parts: 1 })
    }

    async fn upload_part(client: Client, bucket: String, key: Key, upload_id: String, number: i32, data: Bytes) -> Result<CompletedPart> {
        let len = data.len() as i64;
        let out = client
            .upload_part()
            .bucket(bucket)
            .key(key.as_str())
            .upload_id(upload_id)
            .part_number(number)
            .content_length(len)
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
        in_flight: &mut JoinSet<Result<CompletedPart>>,
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
            while (buf.len() as u64) < part_size {
                match body.next_or_cancel(cancel).await? {
                    Some(chunk) => buf.extend_from_slice(&chunk),
                    None => {
                        done = true;
                        break;
                    }
                }
            }
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
                    let joined = tokio::select! {
                        () = cancel.cancelled() => return Err(StorageError::Cancelled),
                        j = in_flight.join_next() => j,
                    };
                    if let Some(j) = joined {
                        parts.push(j.map_err(|e| StorageError::other(format!("upload task failed: {e}"), true))??);
                    }
                }
                in_flight.spawn(Self::upload_part(
                    self.client.clone(),
                    self.bucket.clone(),
                    key.clone(),
                    upload_id.to_string(),
                    next_number,
                    data,
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
        loop {
            let joined = tokio::select! {
                () = cancel.cancelled() => return Err(StorageError::Cancelled),
                j = in_flight.join_next() => j,
            };
            match joined {
                Some(j) => parts.push(j.map_err(|e| StorageError::other(format!("upload task failed: {e}"), true))??),
                None => break,
            }
        }
        parts.sort_by_key(|p| p.part_number());
        let count = parts.len() as u32;
        if cancel.is_cancelled() {
            return Err(StorageError::Cancelled);
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| classify("completing the upload of", key.as_str(), &e))?;
        Ok(PutResult { size, parts: count })
    }

    async fn abort(&self, key: &Key, upload_id: &str) {
        let res = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .upload_id(upload_id)
            .send();
        match tokio::time::timeout(Duration::from_secs(30), res).await {
            Ok(Ok(_)) => tracing::debug!(key = %key, "multipart upload aborted"),
            Ok(Err(e)) => {
                tracing::warn!(key = %key, error = %classify("aborting the upload of", key.as_str(), &e), "could not abort a multipart upload; a bucket lifecycle rule for incomplete uploads will remove it")
            }
            Err(_) => tracing::warn!(key = %key, "timed out aborting a multipart upload"),
        }
    }
}

#[async_trait]
impl Storage for S3Storage {
    async fn put(&self, key: &Key, mut body: BodyReceiver, opts: PutOptions, cancel: &CancellationToken) -> Result<PutResult> {
        let part_size = choose_part_size(opts.expected_size, self.cfg.part_size);
        // Read up to one part first: a body smaller than a part goes up in one request.
        let mut first = BytesMut::with_capacity(part_size.min(8 << 20) as usize);
        let mut complete = false;
        while (first.len() as u64) < part_size {
            match body.next_or_cancel(cancel).await? {
                Some(chunk) => first.extend_from_slice(&chunk),
                None => {
                    complete = true;
                    break;
                }
            }
        }
        if complete && !opts.force_multipart {
            return self.put_single(key, first.freeze()).await;
        }
        let (sse, kms) = self.sse();
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .content_type("application/gzip")
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms)
            .set_storage_class(self.storage_class())
            .send()
            .await
            .map_err(|e| classify("starting the upload of", key.as_str(), &e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        if complete {
            // Make the body yield end-of-stream again inside fill_multipart.
            let (tx, rx) = super::body_channel(1);
            tx.finish().await;
            body = rx;
        }
        let mut in_flight = JoinSet::new();
        let up = OpenUpload {
            key,
            id: &upload_id,
            part_size,
        };
        let res = self.fill_multipart(&up, first, &mut body, &mut in_flight, cancel).await;
        if res.is_err() {
            // A part still uploading could land after the abort and linger: let the ones in flight
            // finish (briefly), cancel the rest, then abort.
            let drain = async { while in_flight.join_next().await.is_some() {} };
            let _ = tokio::time::timeout(Duration::from_secs(3), drain).await;
            in_flight.abort_all();
            self.abort(key, &upload_id).await;
        }
        res
    }

    async fn get(&self, key: &Key) -> Result<(ObjectReader, u64)> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(|e| classify("downloading", key.as_str(), &e))?;
        let size = out.content_length().unwrap_or(0).max(0) as u64;
        Ok((Box::new(out.body.into_async_read()), size))
    }

    async fn head(&self, key: &Key) -> Result<Option<ObjectMeta>> {
        match self.client.head_object().bucket(&self.bucket).key(key.as_str()).send().await {
            Ok(out) => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: out.content_length().unwrap_or(0).max(0) as u64,
                last_modified: out.last_modified().and_then(|t| chrono::DateTime::from_timestamp(t.secs(), 0)),
            })),
            Err(e) => match classify("reading", key.as_str(), &e) {
                StorageError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify("listing", &format!("s3://{}/{prefix}", self.bucket), &e))?;
            for o in page.contents() {
                out.push(ObjectMeta {
                    key: o.key().unwrap_or_default().to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    last_modified: o.last_modified().and_then(|t| chrono::DateTime::from_timestamp(t.secs(), 0)),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete_many(&self, keys: &[Key]) -> Result<()> {
        for batch in keys.chunks(1000) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k.as_str()).build())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| StorageError::other(format!("building a delete request: {e}"), false))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| StorageError::other(format!("building a delete request: {e}"), false))?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| classify("deleting", &format!("{} objects", batch.len()), &e))?;
            let failed: Vec<String> = out
                .errors()
                .iter()
                .map(|e| format!("{} ({})", e.key().unwrap_or("?"), e.code().unwrap_or("error")))
                .collect();
            if !failed.is_empty() {
                return Err(StorageError::other(format!("could not delete: {}", failed.join(", ")), true));
            }
        }
        Ok(())
    }

    async fn copy(&self, from: &Key, to: &Key) -> Result<()> {
        let size = self.head(from).await?.ok_or_else(|| StorageError::NotFound(from.to_string()))?.size;
        let source = format!("{}/{}", self.bucket, encode_key(from.as_str()));
        let (sse, kms) = self.sse();
        if size <= MAX_SINGLE_COPY {
            self.client
                .copy_object()
                .bucket(&self.bucket)
                .key(to.as_str())
                .copy_source(source)
                .set_server_side_encryption(sse)
                .set_ssekms_key_id(kms)
                .set_storage_class(self.storage_class())
                .send()
                .await
                .map_err(|e| classify("copying to", to.as_str(), &e))?;
            return Ok(());
        }
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(to.as_str())
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms)
            .set_storage_class(self.storage_class())
            .send()
            .await
            .map_err(|e| classify("starting the copy to", to.as_str(), &e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let result: Result<()> = async {
            let mut parts = Vec::new();
            let mut start = 0u64;
            let mut number = 1;
            while start < size {
                let end = (start + COPY_PART).min(size) - 1;
                let out = self
                    .client
                    .upload_part_copy()
                    .bucket(&self.bucket)
                    .key(to.as_str())
                    .upload_id(&upload_id)
                    .part_number(number)
                    .copy_source(&source)
                    .copy_source_range(format!("bytes={start}-{end}"))
                    .send()
                    .await
                    .map_err(|e| classify("copying to", to.as_str(), &e))?;
                let etag = out.copy_part_result().and_then(|r| r.e_tag()).map(String::from);
                parts.push(CompletedPart::builder().set_e_tag(etag).part_number(number).build());
                start = end + 1;
                number += 1;
            }
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(to.as_str())
                .upload_id(&upload_id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                .send()
                .await
                .map_err(|e| classify("completing the copy to", to.as_str(), &e))?;
            Ok(())
        }
        .await;
        if result.is_err() {
            self.abort(to, &upload_id).await;
        }
        result
    }

    async fn pending_uploads(&self, prefix: &str) -> Result<Vec<String>> {
        let out = self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(prefix)
            .send()
            .await
            .map_err(|e| classify("listing pending uploads in", prefix, &e))?;
        Ok(out.uploads().iter().filter_map(|u| u.key().map(String::from)).collect())
    }

    async fn abort_pending(&self, prefix: &str) -> Result<usize> {
        let out = match self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(prefix)
            .send()
            .await
        {
            Ok(out) => out,
            // Some compatible stores cannot list uploads; their lifecycle rules must clean up.
            Err(e) if e.code() == Some("NotImplemented") => return Ok(0),
            Err(e) => return Err(classify("listing pending uploads in", prefix, &e)),
        };
        let mut n = 0;
        // Only uploads started more than a day ago: a concurrent backup (the service and
        // `pgvigil backup-now`) may own a younger one.
        let cutoff = chrono::Utc::now().timestamp() - STALE_UPLOAD_SECS;
        for u in out.uploads().iter().filter(|u| u.initiated().is_some_and(|t| t.secs() < cutoff)) {
            if let (Some(key), Some(id)) = (u.key(), u.upload_id()) {
                self.client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(id)
                    .send()
                    .await
                    .map_err(|e| classify("aborting the stale upload of", key, &e))?;
                n += 1;
            }
        }
        Ok(n)
    }

    fn describe(&self) -> String {
        match &self.cfg.endpoint {
            Some(e) => format!("s3://{} at {e}", self.bucket),
            None => format!("s3://{} ({})", self.bucket, self.cfg.region),
        }
    }
}
