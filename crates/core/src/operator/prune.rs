//! `pgvigil prune`: retention on demand, under the service's policy, with the plan shown first and
//! exactly the confirmed plan applied.

use super::{EffectivePolicy, Operator, OperatorError};
use crate::infra::storage::clock_skew;
use crate::pipeline::backup::{prune_with, MAX_CLOCK_SKEW_SECS};
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
    /// `S3_OBJECT_LOCK_DAYS`, when set.
    fn lock_days(&self) -> Option<u32> {
        self.settings.storage.lock_days()
    }

    /// The retention plan under `policy`.
    ///
    /// # Errors
    /// [`OperatorError::Usage`] when the recorded policy cannot be used; storage errors.
    pub async fn prune_plan(&self, policy: &EffectivePolicy, cancel: &CancellationToken) -> Result<PrunePlan, OperatorError> {
        if let Some(why) = &policy.unusable {
            return Err(OperatorError::Usage(format!("not pruning: {why}")));
        }
        let plan = prune_with(
            (self.storage.as_ref(), None),
            &self.layout,
            policy.retention,
            self.lock_days(),
            true,
            None,
            cancel,
        )
        .await?;
        Ok(PrunePlan {
            policy: policy.clone(),
            plan,
        })
    }

    /// Applies a plan the operator confirmed: deletes only backups that are still in a fresh plan.
    /// Refuses when no service recorded its retention and none was given, and when this machine's
    /// clock disagrees with the storage server's (retention decides by age).
    ///
    /// # Errors
    /// [`OperatorError::Usage`] for those refusals; storage errors.
    pub async fn prune(&self, confirmed: &PrunePlan, cancel: &CancellationToken) -> Result<Plan, OperatorError> {
        if let Some(why) = &confirmed.policy.unusable {
            return Err(OperatorError::Usage(format!("not pruning: {why}")));
        }
        if !confirmed.policy.retention_is_known {
            return Err(OperatorError::Usage(
                "no backup service has recorded its retention policy under this prefix; pass --retention-days (and --min-keep) to say which policy to apply".into(),
            ));
        }
        if let Some(skew) = clock_skew(self.storage.as_ref(), &self.layout.probe(), cancel).await? {
            if skew.abs() > MAX_CLOCK_SKEW_SECS {
                return Err(OperatorError::Usage(format!(
                    "this machine's clock differs from the storage server's by {skew}s; retention decides by age, so fix the clock first"
                )));
            }
        }
        let policy = confirmed.policy.retention;
        Ok(prune_with(
            (self.storage.as_ref(), None),
            &self.layout,
            policy,
            self.lock_days(),
            false,
            Some(&confirmed.plan.delete),
            cancel,
        )
        .await?)
    }
}
