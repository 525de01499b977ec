//! Opening the destinations of the backup service (and `pgvigil backup-now`): the self-test of
//! each, where one that fails is not fatal while the other passes: backups go where they can, and
//! catch-up fills the gap later.

use crate::infra::config::Settings;
use crate::infra::storage::{self, DynStorage, Storage, StorageError};
use crate::records::keys::Layout;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// The primary store and, with `SECONDARY_*`, the secondary one.
#[derive(Debug, Clone)]
pub struct Destinations {
    /// The primary (`S3_BUCKET` or `BACKUP_DIR`).
    pub primary: DynStorage,
    /// The secondary, when configured.
    pub secondary: Option<DynStorage>,
}

/// Connects to every destination and runs each one's self-test (and the object lock check of
/// the primary). Without a second destination, the primary must pass; with one, either may fail
/// as long as the other passes (a warning names it).
///
/// # Errors
/// A client that cannot be built; the self-test's sentence when no destination passes it.
pub async fn open_destinations(settings: &Settings, cancel: &CancellationToken) -> Result<Destinations, StorageError> {
    let layout = Layout::new(&settings.storage.prefix);
    let test = |st: DynStorage| {
        let layout = layout.clone();
        async move { storage::preflight(st.as_ref(), &layout.backups_prefix(), &layout.probe(), cancel).await }
    };
    let primary = storage::connect(&settings.storage).await?;
    let primary_ok = match test(primary.clone()).await {
        Ok(()) => storage::check_object_lock(&settings.storage, primary.as_ref(), cancel).await,
        Err(e) => Err(e),
    };
    let Some(cfg) = &settings.secondary else {
        return primary_ok.map(|()| Destinations { primary, secondary: None });
    };
    let secondary = storage::connect(cfg).await?;
    let secondary_ok = test(secondary.clone()).await;
    // Only an outage is waited out in the other destination: a refusal (credentials, a missing
    // bucket, object lock the bucket cannot keep) is a configuration to fix now.
    for r in [&primary_ok, &secondary_ok] {
        if let Err(e) = r {
            if !e.is_retryable() {
                return Err(StorageError::other(e.to_string(), false));
            }
        }
    }
    match (primary_ok, secondary_ok) {
        (Ok(()), Ok(())) => same_place(primary.as_ref(), secondary.as_ref(), &layout, cancel).await?,
        (Err(e), Ok(())) => warn!(
            error = %e,
            "the primary destination is not reachable now; backups go to the secondary destination and are copied to the primary once it is back"
        ),
        (Ok(()), Err(e)) => warn!(
            error = %e,
            "the secondary destination is not reachable now; backups go to the primary destination and are copied to the secondary once it is back"
        ),
        (Err(e), Err(_)) => return Err(e),
    }
    Ok(Destinations {
        primary,
        secondary: Some(secondary),
    })
}

/// Refuses two destinations that are one place under two names (another spelling of the same
/// endpoint, a directory linked to the other): an object written to one is looked for in the
/// other. Each one's clean-up would delete the other's backups.
async fn same_place(
    primary: &dyn Storage,
    secondary: &dyn Storage,
    layout: &Layout,
    cancel: &CancellationToken,
) -> Result<(), StorageError> {
    let probe = layout.probe();
    storage::put_bytes(primary, &probe, bytes::Bytes::from_static(b"pgvigil destination probe"), cancel).await?;
    let seen = secondary.head(&probe, cancel).await;
    let _ = primary.delete_many(std::slice::from_ref(&probe), cancel).await;
    match seen {
        Ok(Some(_)) => Err(StorageError::other(
            "the primary and the secondary destination are the same place (an object written to one appears in the other); set SECONDARY_* to another bucket, store or directory",
            false,
        )),
        _ => Ok(()),
    }
}
