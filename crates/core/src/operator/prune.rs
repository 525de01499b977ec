//! `pgvigil prune`: retention on demand, under the service's policy, with the plan shown first.

use super::{EffectivePolicy, Operator, OperatorError};
use crate::pipeline::backup::prune_with;
use crate::policy::retention::Plan;
use tokio_util::sync::CancellationToken;

/// What retention would delete (and keep beyond the bare policy), and under which policy.
#[derive(Debug, Clone)]
pub struct PrunePlan {
    /// The policy applied, and where it came from.
    pub policy: EffectivePolicy,
    /// The plan.
    pub plan: Plan,
}

impl Operator {
    /// The retention plan under `policy`.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn prune_plan(&self, policy: &EffectivePolicy, cancel: &CancellationToken) -> Result<PrunePlan, OperatorError> {
        let plan = prune_with(self.storage.as_ref(), &self.layout, policy.retention, true, cancel).await?;
        Ok(PrunePlan {
            policy: policy.clone(),
            plan,
        })
    }

    /// Applies retention under `policy`; returns what it did.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn prune(&self, policy: &EffectivePolicy, cancel: &CancellationToken) -> Result<Plan, OperatorError> {
        Ok(prune_with(self.storage.as_ref(), &self.layout, policy.retention, false, cancel).await?)
    }
}
