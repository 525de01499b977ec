//! `pgvigil backup-now`: one backup through exactly the service's code path.

use super::OperatorError;
use crate::infra::config::Settings;
use crate::pipeline::backup::{self, BackupContext, BackupOutcome};
use tokio_util::sync::CancellationToken;

/// Takes one backup now (the storage self-test first, as the service does); it never gives way
/// to sessions waiting behind it (`PG_DUMP_YIELD_AFTER`).
///
/// # Errors
/// A missing `DATABASE_URL`, storage that fails its self-test, or the backup's own failure
/// (already logged with `Backup failed`).
pub async fn backup_now(settings: &Settings, cancel: &CancellationToken) -> Result<BackupOutcome, OperatorError> {
    let url = settings
        .database_url
        .clone()
        .ok_or_else(|| OperatorError::Usage("backup-now needs DATABASE_URL".into()))?;
    let dests = backup::open_destinations(settings, cancel).await?;
    // Asked for now: it warns about sessions waiting behind it but never gives way (a forced
    // backup that failed each time a migration ran would help nobody).
    let mut settings = settings.clone();
    settings.backup.yield_after = None;
    let mut ctx = BackupContext::new(&settings, url, dests.primary);
    if let Some(secondary) = dests.secondary {
        ctx = ctx.with_secondary(secondary);
    }
    Ok(backup::run_and_log(&ctx, cancel).await?)
}
