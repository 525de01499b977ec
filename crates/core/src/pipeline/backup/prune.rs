//! Retention after a backup (and for `pgvigil prune`): the pure plan from [`crate::policy::retention`]
//! applied to what is listed, deleting each doomed backup together with its manifest.

use super::BackupContext;
use crate::infra::storage::{Key, Storage, StorageError};
use crate::policy::retention::{self, Candidate, RetentionPolicy};
use crate::records::catalog::Catalog;
use crate::records::keys::{BackupId, Layout};
use chrono::Utc;
use tokio_util::sync::CancellationToken;

/// Applies retention: deletes old backups (and their manifests) under the prefix. With `dry_run`
/// it only returns the plan.
///
/// # Errors
/// Storage errors.
pub async fn prune(ctx: &BackupContext, dry_run: bool, cancel: &CancellationToken) -> Result<Vec<BackupId>, StorageError> {
    prune_with(ctx.storage.as_ref(), &ctx.layout, ctx.cfg.retention, dry_run, cancel).await
}

/// Retention on any storage and policy (used by the CLI as well).
///
/// # Errors
/// Storage errors.
pub async fn prune_with(
    storage: &dyn Storage,
    layout: &Layout,
    policy: RetentionPolicy,
    dry_run: bool,
    cancel: &CancellationToken,
) -> Result<Vec<BackupId>, StorageError> {
    let catalog = Catalog::load(storage, layout, cancel).await?;
    let candidates: Vec<Candidate> = catalog
        .backups
        .iter()
        .map(|b| Candidate {
            id: b.id,
            complete: b.complete,
        })
        .collect();
    let doomed = retention::plan(&candidates, policy, Utc::now());
    if dry_run || doomed.is_empty() {
        return Ok(doomed);
    }
    let mut keys: Vec<Key> = Vec::new();
    for id in &doomed {
        keys.push(layout.backup(*id));
        keys.push(layout.manifest(*id));
    }
    // Manifests whose backups are already gone and that are past retention go too.
    let cutoff = Utc::now() - chrono::Duration::days(policy.retention_days as i64);
    keys.extend(
        catalog
            .orphan_manifests
            .iter()
            .filter(|m| m.0 < cutoff)
            .map(|m| layout.manifest(*m)),
    );
    storage.delete_many(&keys, cancel).await?;
    Ok(doomed)
}
