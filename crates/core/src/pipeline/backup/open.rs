//! Opening the destinations of the backup service (and `pgvigil backup-now`): the self-test of
//! each, where one that fails is not fatal while the other passes: backups go where they can, and
//! catch-up fills the gap later.

use crate::infra::config::Settings;
use crate::infra::storage::{self, DynStorage, StorageError};
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
    match (primary_ok, secondary_ok) {
        (Ok(()), Ok(())) => {}
        (Err(e), Ok(())) => warn!(
            error = %e,
            "the primary destination is not usable now; backups go to the secondary destination and are copied to the primary once it is back"
        ),
        (Ok(()), Err(e)) => warn!(
            error = %e,
            "the secondary destination is not usable now; backups go to the primary destination and are copied to the secondary once it is back"
        ),
        (Err(e), Err(_)) => return Err(e),
    }
    Ok(Destinations {
        primary,
        secondary: Some(secondary),
    })
}
