//! `pgvigil prune`: retention on demand, with the plan shown first.

use super::{Operator, OperatorError};
use crate::pipeline::backup::prune_with;
use crate::policy::retention::RetentionPolicy;
use crate::records::keys::BackupId;
use tokio_util::sync::CancellationToken;

/// What retention would delete, and under which policy.
#[derive(Debug, Clone)]
pub struct PrunePlan {
    /// The policy applied.
    pub policy: RetentionPolicy,
    /// Backups to delete, oldest first.
    pub doomed: Vec<BackupId>,
}

impl Operator {
    /// The retention plan under the configured policy.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn prune_plan(&self, cancel: &CancellationToken) -> Result<PrunePlan, OperatorError> {
        let policy = self.settings.backup.retention;
        let doomed = prune_with(self.storage.as_ref(), &self.layout, policy, true, cancel).await?;
        Ok(PrunePlan { policy, doomed })
    }

    /// Applies retention; returns what was deleted.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn prune(&self, cancel: &CancellationToken) -> Result<Vec<BackupId>, OperatorError> {
        Ok(prune_with(self.storage.as_ref(), &self.layout, self.settings.backup.retention, false, cancel).await?)
    }
}
