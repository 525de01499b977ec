//! Server-side copies (for `backup_latest.sql.gz`): one CopyObject up to 5 GiB, a multipart copy
//! beyond, aborted on any failure so no partial copy is ever published.

use super::errors::classify;
use super::{ObjectSettings, S3Storage};
use crate::infra::storage::{or_cancel, Key, Result, Storage, StorageError};
use aws_sdk_s3::types::CompletedPart;
use tokio_util::sync::CancellationToken;

/// Largest object a single CopyObject may copy.
const MAX_SINGLE_COPY: u64 = 5 * 1024 * 1024 * 1024;
/// Part size for multipart copies.
const COPY_PART: u64 = 512 * 1024 * 1024;

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

impl S3Storage {
    pub(super) async fn copy_object(&self, from: &Key, to: &Key, cancel: &CancellationToken) -> Result<()> {
        let size = self
            .head(from, cancel)
            .await?
            .ok_or_else(|| StorageError::NotFound(from.to_string()))?
            .size;
        let source = format!("{}/{}", self.bucket, encode_key(from.as_str()));
        if size <= MAX_SINGLE_COPY {
            return or_cancel(cancel, async {
                self.client
                    .copy_object()
                    .bucket(&self.bucket)
                    .key(to.as_str())
                    .copy_source(source)
                    .object_settings(&self.cfg)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| classify("copying to", to.as_str(), &e))
            })
            .await;
        }
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(to.as_str())
            .object_settings(&self.cfg)
            .send()
            .await
            .map_err(|e| classify("starting the copy to", to.as_str(), &e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let result = or_cancel(cancel, self.copy_parts(&source, size, to, &upload_id)).await;
        if result.is_err() {
            self.abort(to, &upload_id).await;
        }
        result
    }

    async fn copy_parts(&self, source: &str, size: u64, to: &Key, upload_id: &str) -> Result<()> {
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
                .upload_id(upload_id)
                .part_number(number)
                .copy_source(source)
                .copy_source_range(format!("bytes={start}-{end}"))
                .send()
                .await
                .map_err(|e| classify("copying to", to.as_str(), &e))?;
            let etag = out.copy_part_result().and_then(|r| r.e_tag()).map(String::from);
            parts.push(CompletedPart::builder().set_e_tag(etag).part_number(number).build());
            start = end + 1;
            number += 1;
        }
        self.complete(to, upload_id, parts, "completing the copy to").await
    }
}
