//! The two jobs as the runner sees them: when each is due (derived from storage, so restarts
//! neither double nor skip runs) and how one run is done.

use super::health::Health;
use super::runner::{Job, RunFailure};
use crate::infra::storage::DynStorage;
use crate::pipeline::backup::{self, BackupContext};
use crate::pipeline::verify::{self, VerifyContext, VerifyError};
use crate::policy::schedule::due_in;
use crate::records::catalog::Catalog;
use crate::records::keys::Layout;
use async_trait::async_trait;
use chrono::Utc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What is in storage now, for the schedule; a listing that fails makes the runner back off.
async fn catalog(storage: &DynStorage, layout: &Layout, cancel: &CancellationToken) -> Result<Catalog, RunFailure> {
    Catalog::load(storage.as_ref(), layout, cancel).await.map_err(|e| RunFailure {
        message: e.to_string(),
        retryable: e.is_retryable(),
    })
}

/// The backup job.
#[derive(Debug)]
pub struct BackupJob {
    /// What to back up and where.
    pub ctx: BackupContext,
}

#[async_trait]
impl Job for BackupJob {
    fn noun(&self) -> &'static str {
        "backup"
    }

    async fn due_in(&self, cancel: &CancellationToken) -> Result<Duration, RunFailure> {
        let cat = catalog(&self.ctx.storage, &self.ctx.layout, cancel).await?;
        Ok(due_in(cat.newest_complete().map(|b| b.id.0), self.ctx.cfg.interval, Utc::now()))
    }

    async fn run(&self, cancel: &CancellationToken) -> Result<(), RunFailure> {
        backup::run_and_log(&self.ctx, cancel).await.map(|_| ()).map_err(|e| RunFailure {
            message: e.to_string(),
            retryable: e.is_retryable(),
        })
    }
}

/// The verify job.
#[derive(Debug)]
pub struct VerifyJob {
    /// What to verify and where.
    pub ctx: VerifyContext,
    /// Where verdicts are reported for `/status` and `/metrics`.
    pub health: Health,
}

#[async_trait]
impl Job for VerifyJob {
    fn noun(&self) -> &'static str {
        "verification"
    }

    async fn due_in(&self, cancel: &CancellationToken) -> Result<Duration, RunFailure> {
        let cat = catalog(&self.ctx.storage, &self.ctx.layout, cancel).await?;
        let newest_verification = cat.verifications.last().map(|v| v.at.0);
        let newest_backup = cat.newest_complete().map(|b| b.id);
        // A new backup that nobody has verified yet is due at once.
        if newest_backup.is_some_and(|b| !cat.is_verified(b))
            && newest_verification.is_none_or(|v| v < Utc::now() - chrono::Duration::minutes(1))
        {
            return Ok(Duration::ZERO);
        }
        Ok(due_in(newest_verification, self.ctx.cfg.interval, Utc::now()))
    }

    async fn run(&self, cancel: &CancellationToken) -> Result<(), RunFailure> {
        let (verdicts, stopped) = verify::run_planned(&self.ctx, cancel).await;
        for (id, rec) in &verdicts {
            // A failed verification is a result, recorded and reported; the schedule goes on.
            self.health
                .record_verification(id.0, &rec.key, (!rec.passed).then(|| rec.reasons.join("; ")));
        }
        stopped.map_or(Ok(()), Err).map_err(|e| RunFailure {
            retryable: e.is_retryable(),
            message: match e {
                VerifyError::NothingToVerify => "no backup yet".into(),
                other => other.to_string(),
            },
        })
    }
}
