//! The entry to a service run: forever, or once (`--once`, e.g. from cron) with the outcome
//! reported to the webhooks and the heartbeat before the process exits.

use super::databases::Shared;
use super::notify::{Condition, Notifier};
use super::skeleton::{start, Service, StartupError};
use pgvigil_core::infra::config::Settings;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Runs a service: once (exit status from the result) or forever. A single run (`--once`, e.g.
/// from cron) reports to the webhooks and the heartbeat too, and waits a bounded time for them.
pub(super) async fn run_service<S: Service>(
    settings: Settings,
    once: bool,
    cancel: CancellationToken,
    shared: Shared,
) -> Result<(), StartupError> {
    if !once {
        return start::<S>(settings, false, cancel, shared).await;
    }
    let notify = Notifier::start(&settings.notify, S::ROLE, &settings.storage.prefix, &cancel);
    let shared = Shared {
        notify: Some(notify.clone()),
        ..shared
    };
    let result = start::<S>(settings, true, cancel, shared).await;
    match &result {
        Ok(()) => notify.success(format!("{} run completed successfully (--once)", S::ROLE.name())),
        Err(StartupError::Backup(e)) => notify.raise(Condition::BackupFailing, format!("Backup failed: {e}")),
        Err(StartupError::VerificationFailed(key)) => notify.raise(
            Condition::VerificationFailed,
            format!("Restore verification failed: {key}; `pgvigil status` and its verification record say why"),
        ),
        // Nothing to verify yet is not a failure; bad configuration never reached a run.
        Err(
            StartupError::Config(_)
            | StartupError::Cancelled
            | StartupError::Verify(pgvigil_core::pipeline::verify::VerifyError::NothingToVerify),
        ) => {}
        Err(e) if S::ROLE == pgvigil_core::infra::config::Role::Backup => {
            notify.raise(Condition::BackupFailing, format!("Backup failed: {e}"))
        }
        Err(e) => notify.raise(Condition::VerificationNotRunning, format!("Verification could not run: {e}")),
    }
    notify.finish(Duration::from_secs(30)).await;
    result
}
