//! Start-up self-test of the storage: list, write (multipart), read back, delete a small probe.

use super::{get_bytes, put_bytes_with, Key, PutOptions, Storage, StorageError, MAX_SMALL};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

/// Checks that the store is reachable and that pgvigil may list `list_prefix` and write, read and
/// delete the object `probe`. A refused delete is logged as a warning, not an error: it only
/// stops retention.
///
/// # Errors
/// The first failing step, as one plain sentence (bucket missing, access denied, unreachable,
/// wrong region, checksum scheme rejected …); `is_retryable` tells outages from misconfiguration.
pub async fn preflight(storage: &dyn Storage, list_prefix: &str, probe: &Key, cancel: &CancellationToken) -> Result<(), StorageError> {
    let step = |what: &'static str| {
        move |e: StorageError| match e {
            StorageError::Backend { message, retryable } => StorageError::Backend {
                message: format!("storage self-test failed while {what}: {message}"),
                retryable,
            },
            StorageError::Cancelled => StorageError::Cancelled,
            other => StorageError::other(format!("storage self-test failed while {what}: {other}"), other.is_retryable()),
        }
    };
    storage.list(list_prefix, cancel).await.map_err(step("listing the backup prefix"))?;
    let payload = Bytes::from(format!("pgvigil storage self-test {}", chrono::Utc::now().to_rfc3339()));
    let opts = PutOptions {
        expected_size: Some(payload.len() as u64),
        force_multipart: true,
        min_part_size: 0,
        ..Default::default()
    };
    put_bytes_with(storage, probe, payload.clone(), opts, cancel)
        .await
        .map_err(step("writing a probe object with a multipart upload"))?;
    let back = get_bytes(storage, probe, MAX_SMALL, cancel)
        .await
        .map_err(step("reading the probe object back"))?;
    if back != payload {
        return Err(StorageError::other(
            format!(
                "storage self-test failed: the probe object read back differs from what was written ({} bytes instead of {})",
                back.len(),
                payload.len()
            ),
            false,
        ));
    }
    match storage.delete_many(std::slice::from_ref(probe), cancel).await {
        // Deletes refused (a write-only policy, object lock): backups can still be taken, so
        // this is a warning; retention says the same each time it cannot delete.
        Err(denied @ StorageError::DeleteDenied(_)) => {
            tracing::warn!(
                "storage self-test: {denied}; backups continue, but expired backups stay until deletes are allowed (or a lifecycle rule removes them)"
            );
            Ok(())
        }
        other => other.map_err(step("deleting the probe object")),
    }
}
