//! S3 backend (AWS and S3-compatible stores: MinIO, R2, B2, Garage, …).
//!
//! [`client`] configures the SDK, [`upload`] streams multipart uploads (parts held whole, or
//! [`streamed`] as they arrive when they are large), [`copy`] does server-side
//! copies, [`errors`] turns SDK errors into plain sentences with a retry verdict. The per-object
//! settings (encryption, storage class, content type) are applied in one place,
//! [`ObjectSettings`], for every request that creates an object.

mod client;
mod copy;
mod errors;
mod streamed;
mod upload;

use super::{or_cancel, BodyReceiver, Condition, Key, ObjectMeta, ObjectReader, PutOptions, PutResult, Result, Storage, StorageError};
use crate::infra::config::{S3Config, Sse};
use async_trait::async_trait;
use aws_sdk_s3::types::{Delete, ObjectIdentifier, ServerSideEncryption, StorageClass};
use aws_sdk_s3::Client;
use bytes::Bytes;
use errors::classify;
use tokio_util::sync::CancellationToken;

/// Age after which an uncommitted multipart upload is considered abandoned.
const STALE_UPLOAD_SECS: i64 = 24 * 3600;

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

/// Requests that create an object: they all get the same encryption and storage class.
trait ObjectSettings: Sized {
    /// Applies `S3_SSE`, `S3_SSE_KMS_KEY_ID` and `S3_STORAGE_CLASS`.
    fn object_settings(self, cfg: &S3Config) -> Self;
}

macro_rules! object_settings {
    ($($builder:ty),*) => {$(
        impl ObjectSettings for $builder {
            fn object_settings(self, cfg: &S3Config) -> Self {
                let (sse, kms) = match &cfg.sse {
                    None => (None, None),
                    Some(Sse::Aes256) => (Some(ServerSideEncryption::Aes256), None),
                    Some(Sse::Kms { key_id }) => (Some(ServerSideEncryption::AwsKms), key_id.clone()),
                };
                self.set_server_side_encryption(sse)
                    .set_ssekms_key_id(kms)
                    .set_storage_class(cfg.storage_class.as_deref().map(StorageClass::from))
            }
        }
    )*};
}

object_settings!(
    aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder,
    aws_sdk_s3::operation::create_multipart_upload::builders::CreateMultipartUploadFluentBuilder,
    aws_sdk_s3::operation::copy_object::builders::CopyObjectFluentBuilder
);

/// Converts an SDK timestamp.
fn timestamp(t: Option<&aws_sdk_s3::primitives::DateTime>) -> Option<chrono::DateTime<chrono::Utc>> {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.secs(), 0))
}

#[async_trait]
impl Storage for S3Storage {
    async fn put(&self, key: &Key, body: BodyReceiver, opts: PutOptions, cancel: &CancellationToken) -> Result<PutResult> {
        self.upload(key, body, opts, cancel).await
    }

    async fn get(&self, key: &Key, cancel: &CancellationToken) -> Result<(ObjectReader, u64)> {
        let out = or_cancel(cancel, async {
            self.client
                .get_object()
                .bucket(&self.bucket)
                .key(key.as_str())
                .send()
                .await
                .map_err(|e| classify("downloading", key.as_str(), &e))
        })
        .await?;
        let size = out.content_length().unwrap_or(0).max(0) as u64;
        Ok((Box::new(out.body.into_async_read()), size))
    }

    async fn get_range(&self, key: &Key, offset: u64, length: u64, cancel: &CancellationToken) -> Result<ObjectReader> {
        if length == 0 {
            return Ok(Box::new(tokio::io::empty()));
        }
        let last = offset
            .checked_add(length - 1)
            .ok_or_else(|| StorageError::other(format!("reading {key}: no object has bytes {offset} + {length}"), false))?;
        let out = or_cancel(cancel, async {
            self.client
                .get_object()
                .bucket(&self.bucket)
                .key(key.as_str())
                .range(format!("bytes={offset}-{last}"))
                .send()
                .await
                .map_err(|e| classify("downloading", key.as_str(), &e))
        })
        .await?;
        // A store (or proxy) that ignores the range answers with the whole object from byte 0:
        // a storage fault, not damage to the backup.
        let whole = offset > 0 && out.content_range().is_none_or(|r| !r.starts_with(&format!("bytes {offset}-")));
        if whole {
            return Err(StorageError::other(
                format!("reading {key}: the store did not honour the byte range {offset}-{last} (ranged GET)"),
                false,
            ));
        }
        Ok(Box::new(tokio::io::AsyncReadExt::take(out.body.into_async_read(), length)))
    }

    async fn object_lock_enabled(&self, cancel: &CancellationToken) -> Result<Option<bool>> {
        let res = or_cancel(cancel, async {
            self.client
                .get_object_lock_configuration()
                .bucket(&self.bucket)
                .send()
                .await
                .map_err(|e| classify("reading the object lock configuration of", &self.bucket, &e))
        })
        .await;
        match res {
            Ok(out) => Ok(Some(
                out.object_lock_configuration()
                    .and_then(|c| c.object_lock_enabled())
                    .is_some_and(|e| *e == aws_sdk_s3::types::ObjectLockEnabled::Enabled),
            )),
            // ObjectLockConfigurationNotFoundError (404).
            Err(StorageError::NotFound(_)) => Ok(Some(false)),
            Err(e) => Err(e),
        }
    }

    async fn head(&self, key: &Key, cancel: &CancellationToken) -> Result<Option<ObjectMeta>> {
        let res = or_cancel(cancel, async {
            self.client
                .head_object()
                .bucket(&self.bucket)
                .key(key.as_str())
                .send()
                .await
                .map_err(|e| classify("reading", key.as_str(), &e))
        })
        .await;
        match res {
            Ok(out) => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: out.content_length().unwrap_or(0).max(0) as u64,
                last_modified: timestamp(out.last_modified()),
                etag: out.e_tag().map(String::from),
            })),
            Err(StorageError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn list(&self, prefix: &str, cancel: &CancellationToken) -> Result<Vec<ObjectMeta>> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = or_cancel(cancel, async { Ok(pages.next().await) }).await? {
            let page = page.map_err(|e| classify("listing", &format!("s3://{}/{prefix}", self.bucket), &e))?;
            for o in page.contents() {
                out.push(ObjectMeta {
                    key: o.key().unwrap_or_default().to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    last_modified: timestamp(o.last_modified()),
                    etag: o.e_tag().map(String::from),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn put_if(&self, key: &Key, data: Bytes, condition: &Condition, cancel: &CancellationToken) -> Result<String> {
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .content_length(data.len() as i64)
            .content_type("application/json")
            .object_settings(&self.cfg)
            .set_content_md5(self.cfg.object_lock.map(|_| upload::content_md5(&data)))
            .body(aws_sdk_s3::primitives::ByteStream::from(data));
        request = match condition {
            Condition::Absent => request.if_none_match("*"),
            Condition::Matches(etag) => request.if_match(etag),
        };
        let out = or_cancel(cancel, async {
            request.send().await.map_err(|e| classify("writing", key.as_str(), &e))
        })
        .await?;
        Ok(out.e_tag().unwrap_or_default().to_string())
    }

    async fn delete_many(&self, keys: &[Key], cancel: &CancellationToken) -> Result<()> {
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
            let what = format!("deleting {} objects", batch.len());
            let out = or_cancel(cancel, async {
                self.client
                    .delete_objects()
                    .bucket(&self.bucket)
                    .delete(delete)
                    .send()
                    .await
                    .map_err(|e| {
                        use aws_sdk_s3::error::ProvideErrorMetadata;
                        let denied = e.as_service_error().and_then(|s| s.code()) == Some("AccessDenied")
                            || e.raw_response().is_some_and(|r| r.status().as_u16() == 403);
                        if denied {
                            StorageError::DeleteDenied(what.clone())
                        } else {
                            classify("deleting", &format!("{} objects", batch.len()), &e)
                        }
                    })
            })
            .await?;
            // Stores answer 200 and list the keys they refused: all refused for lack of
            // permission is a denial; anything else may pass on a retry.
            let errors = out.errors();
            if !errors.is_empty() {
                let failed: Vec<String> = errors
                    .iter()
                    .take(5)
                    .map(|e| format!("{} ({})", e.key().unwrap_or("?"), e.code().unwrap_or("error")))
                    .collect();
                let listed = format!(
                    "could not delete {} of {} objects: {}",
                    errors.len(),
                    batch.len(),
                    failed.join(", ")
                );
                if errors.iter().all(|e| e.code() == Some("AccessDenied")) {
                    return Err(StorageError::DeleteDenied(listed));
                }
                return Err(StorageError::other(listed, true));
            }
        }
        Ok(())
    }

    async fn copy(&self, from: &Key, to: &Key, cancel: &CancellationToken) -> Result<()> {
        self.copy_object(from, to, cancel).await
    }

    async fn pending_uploads(&self, prefix: &str, cancel: &CancellationToken) -> Result<Vec<String>> {
        let out = or_cancel(cancel, async {
            self.client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .send()
                .await
                .map_err(|e| classify("listing pending uploads in", prefix, &e))
        })
        .await?;
        Ok(out.uploads().iter().filter_map(|u| u.key().map(String::from)).collect())
    }

    async fn abort_pending(&self, prefix: &str, cancel: &CancellationToken) -> Result<usize> {
        use aws_sdk_s3::error::ProvideErrorMetadata;
        let listed = or_cancel(cancel, async {
            Ok(self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .send()
                .await)
        })
        .await?;
        let out = match listed {
            Ok(out) => out,
            // Some compatible stores cannot list uploads; their lifecycle rules must clean up.
            Err(e) if e.code() == Some("NotImplemented") => return Ok(0),
            Err(e) => return Err(classify("listing pending uploads in", prefix, &e)),
        };
        let mut n = 0;
        // Only uploads started more than a day ago: a concurrent backup (the service and
        // `pgvigil backup-now`) may own a younger one.
        let cutoff = chrono::Utc::now().timestamp() - STALE_UPLOAD_SECS;
        // And only uploads of pgvigil's own objects (`backup_….sql.gz[.age]` right under the
        // prefix): another tool's upload under the same prefix is not ours to end.
        let ours = |key: &str| {
            key.strip_prefix(prefix).is_some_and(|name| {
                !name.contains('/') && name.starts_with("backup_") && (name.ends_with(".sql.gz") || name.ends_with(".sql.gz.age"))
            })
        };
        let stale = out
            .uploads()
            .iter()
            .filter(|u| u.initiated().is_some_and(|t| t.secs() < cutoff) && u.key().is_some_and(ours));
        for u in stale {
            if let (Some(key), Some(id)) = (u.key(), u.upload_id()) {
                or_cancel(cancel, async {
                    self.client
                        .abort_multipart_upload()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(id)
                        .send()
                        .await
                        .map_err(|e| classify("aborting the stale upload of", key, &e))
                })
                .await?;
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

/// With `S3_OBJECT_LOCK_DAYS`, checks that the bucket has object lock: without it the lock
/// headers would be refused or, worse, ignored.
///
/// # Errors
/// When it has none, in one sentence saying what to do; storage errors.
pub async fn check_object_lock(cfg: &S3Config, st: &dyn Storage, cancel: &CancellationToken) -> Result<()> {
    if cfg.object_lock.is_some() && st.object_lock_enabled(cancel).await? != Some(true) {
        return Err(StorageError::other(
            format!(
                "S3_OBJECT_LOCK_DAYS is set but bucket {} has no object lock: use a bucket created with object lock enabled (aws s3api create-bucket --object-lock-enabled-for-bucket, or enable it on a versioned bucket), or unset S3_OBJECT_LOCK_DAYS",
                cfg.bucket
            ),
            false,
        ));
    }
    Ok(())
}
