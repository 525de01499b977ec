//! Start-up self-test of the storage: list, write (multipart), read back, delete a small probe.

use super::{body_channel, get_bytes, PutOptions, Storage, StorageError};
use crate::keys::Layout;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

/// Checks that the store is reachable and that pgvigil may list, write, read and delete objects.
///
/// # Errors
/// The first failing step, as one plain sentence (bucket missing, access denied, unreachable,
/// wrong region, checksum scheme rejected …); `is_retryable` tells outages from misconfiguration.
pub async fn preflight(storage: &dyn Storage, layout: &Layout) -> Result<(), StorageError> {
    let step = |what: &'static str| {
        move |e: StorageError| match e {
            StorageError::Backend { message, retryable } => StorageError::Backend {
                message: format!("storage self-test failed while {what}: {message}"),
                retryable,
            },
            other => StorageError::other(format!("storage self-test failed while {what}: {other}"), other.is_retryable()),
        }
    };
    storage
        .list(&layout.backups_prefix())
        .await
        .map_err(step("listing the backup prefix"))?;
    let probe = layout.probe();
    let payload = Bytes::from(format!("pgvigil storage self-test {}", chrono::Utc::now().to_rfc3339()));
    let (tx, rx) = body_channel(2);
    let cancel = CancellationToken::new();
    let data = payload.clone();
    let producer = async move {
        if tx.send(data).await.is_ok() {
            tx.finish().await;
        }
    };
    let opts = PutOptions {
        expected_size: Some(payload.len() as u64),
        force_multipart: true,
    };
    let (_, put) = tokio::join!(producer, storage.put(&probe, rx, opts, &cancel));
    put.map_err(step("writing a probe object with a multipart upload"))?;
    let back = get_bytes(storage, &probe).await.map_err(step("reading the probe object back"))?;
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
    storage.delete_many(&[probe]).await.map_err(step("deleting the probe object"))?;
    Ok(())
}
