//! The two long-running services, wired from configuration: storage, self-test, health
//! endpoint and the shared runner.

use crate::backup::{self, BackupContext};
use crate::catalog::Catalog;
use crate::config::{Role, Settings};
use crate::health::Health;
use crate::keys::Layout;
use crate::runner::{self, Backoff, Job, RunFailure};
use crate::storage::{self, preflight, DynStorage};
use crate::verify::{self, VerifyContext, VerifyError};
use async_trait::async_trait;
use chrono::Utc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// First delay after a failure; doubles up to [`max_backoff`].
pub const BACKOFF_BASE: Duration = Duration::from_secs(30);

/// Longest wait between retries: 15 minutes, but never longer than the interval.
pub fn max_backoff(interval: Duration) -> Duration {
    interval.clamp(BACKOFF_BASE, Duration::from_secs(15 * 60))
}

/// A startup problem that stops a one-shot command.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartupError(pub String);

/// Connects to storage and runs the self-test. Daemons (`retry = true`) keep trying with backoff
/// until it passes or shutdown is requested; one-shot commands fail at once.
///
/// # Errors
/// The self-test's sentence, when `retry` is false, or when cancelled.
pub async fn open_storage(settings: &Settings, retry: bool, cancel: &CancellationToken) -> Result<DynStorage, StartupError> {
    let layout = Layout::new(&settings.storage.prefix);
    let mut backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(300));
    loop {
        let attempt = async {
            let st = storage::connect(&settings.storage).await?;
            preflight(st.as_ref(), &layout).await?;
            Ok::<_, storage::StorageError>(st)
        }
        .await;
        match attempt {
            Ok(st) => return Ok(st),
            Err(e) if !retry => return Err(StartupError(e.to_string())),
            Err(e) => {
                let d = backoff.next_delay();
                error!(error = %e, "Storage is not usable yet; retrying in {}s", d.as_secs());
                if !runner::sleep_or_cancel(d, cancel).await {
                    return Err(StartupError("shutdown requested before storage became usable".into()));
                }
            }
        }
    }
}

/// The backup job as the runner sees it.
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

    async fn due_in(&self) -> Result<Duration, RunFailure> {
        let cat = Catalog::load(self.ctx.storage.as_ref(), &self.ctx.layout)
            .await
            .map_err(|e| RunFailure {
                message: e.to_string(),
                retryable: e.is_retryable(),
            })?;
        Ok(due_in(cat.newest_complete().map(|b| b.id.0), self.ctx.cfg.interval, Utc::now()))
    }

    async fn run(&self, cancel: &CancellationToken) -> Result<(), RunFailure> {
        backup::run_and_log(&self.ctx, cancel).await.map(|_| ()).map_err(|e| RunFailure {
            message: e.to_string(),
            retryable: e.is_retryable(),
        })
    }
}

/// Time until a job is due: `interval` after the newest success, zero when overdue or never run.
/// Because it is derived from storage, restarts neither double nor skip runs.
pub fn due_in(newest: Option<chrono::DateTime<Utc>>, interval: Duration, now: chrono::DateTime<Utc>) -> Duration {
    match newest {
        None => Duration::ZERO,
        Some(t) => {
            let due = t + chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::days(1));
            (due - now).to_std().unwrap_or(Duration::ZERO).min(interval)
        }
    }
}

/// Builds the backup context from settings and an opened storage.
///
/// # Errors
/// When `DATABASE_URL` is missing.
pub fn backup_context(settings: &Settings, storage: DynStorage) -> Result<BackupContext, StartupError> {
    let cfg = settings
        .backup
        .clone()
        .ok_or_else(|| StartupError("DATABASE_URL is required for backups".into()))?;
    Ok(BackupContext {
        storage,
        layout: Layout::new(&settings.storage.prefix),
        cfg,
        tools: settings.tools.clone(),
    })
}

/// Runs `pgvigil-backup`: once (`once = true`, exit status from the result) or forever.
///
/// # Errors
/// Startup problems; in `once` mode also the backup's failure.
pub async fn run_backup_service(settings: Settings, once: bool, cancel: CancellationToken) -> Result<(), StartupError> {
    let cfg = settings
        .backup
        .clone()
        .ok_or_else(|| StartupError("DATABASE_URL is required".into()))?;
    info!(
        version = env!("CARGO_PKG_VERSION"),
        database = %cfg.database_url,
        storage = ?settings.storage.backend,
        prefix = %settings.storage.prefix,
        interval_secs = cfg.interval.as_secs(),
        compression_level = cfg.compression_level,
        retention_days = cfg.retention.retention_days,
        min_keep = cfg.retention.min_keep,
        dump_options = %cfg.dump_options.join(" "),
        mode = if once { "once" } else { "service" },
        "Backup service started"
    );
    let storage = open_storage(&settings, !once, &cancel).await?;
    let ctx = backup_context(&settings, storage)?;
    if once {
        return backup::run_and_log(&ctx, &cancel).await.map(|_| ()).map_err(|e| {
            StartupError(format!(
                "exiting with status 1 because the backup did not complete ({})",
                if e.is_retryable() {
                    "a retry may succeed"
                } else {
                    "fix the cause above first"
                }
            ))
        });
    }
    let health = Health::new(cfg.interval * 2 + Duration::from_secs(3600));
    spawn_health(settings.port, health.clone(), "backup", &cancel);
    let job = BackupJob { ctx };
    runner::run_forever(&job, Backoff::new(BACKOFF_BASE, max_backoff(cfg.interval)), &health, &cancel).await;
    Ok(())
}

/// The verify job as the runner sees it.
#[derive(Debug)]
pub struct VerifyJob {
    /// What to verify and where.
    pub ctx: VerifyContext,
}

#[async_trait]
impl Job for VerifyJob {
    fn noun(&self) -> &'static str {
        "verification"
    }

    async fn due_in(&self) -> Result<Duration, RunFailure> {
        let cat = Catalog::load(self.ctx.storage.as_ref(), &self.ctx.layout)
            .await
            .map_err(|e| RunFailure {
                message: e.to_string(),
                retryable: e.is_retryable(),
            })?;
        let newest_verification = cat.verifications.last().map(|(at, _)| at.0);
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
        match verify::run_and_log(&self.ctx, None, cancel).await {
            // A failed verification is a result, recorded and reported; the schedule goes on.
            Ok(_) => Ok(()),
            Err(VerifyError::NothingToVerify) => Err(RunFailure {
                message: "no backup yet".into(),
                retryable: true,
            }),
            Err(e) => Err(RunFailure {
                message: e.to_string(),
                retryable: true,
            }),
        }
    }
}

/// Builds the verify context from settings and an opened storage.
///
/// # Errors
/// When `VERIFY_DATABASE_URL` is missing.
pub fn verify_context(settings: &Settings, storage: DynStorage) -> Result<VerifyContext, StartupError> {
    let cfg = settings
        .verify
        .clone()
        .ok_or_else(|| StartupError("VERIFY_DATABASE_URL is required for verification".into()))?;
    Ok(VerifyContext {
        storage,
        layout: Layout::new(&settings.storage.prefix),
        cfg,
        tools: settings.tools.clone(),
    })
}

/// Runs `pgvigil-verify`: once (exit status from the verdict) or forever.
///
/// # Errors
/// Startup problems; in `once` mode also a failed or impossible verification.
pub async fn run_verify_service(settings: Settings, once: bool, cancel: CancellationToken) -> Result<(), StartupError> {
    let cfg = settings
        .verify
        .clone()
        .ok_or_else(|| StartupError("VERIFY_DATABASE_URL is required".into()))?;
    info!(
        version = env!("CARGO_PKG_VERSION"),
        verify_server = %cfg.database_url,
        storage = ?settings.storage.backend,
        prefix = %settings.storage.prefix,
        interval_secs = cfg.interval.as_secs(),
        random_rate = cfg.random_rate,
        queries_file = ?cfg.queries_file,
        mode = if once { "once" } else { "service" },
        "Verify service started"
    );
    let storage = open_storage(&settings, !once, &cancel)
        .await
        .map_err(|e| StartupError(format!("Verification could not run: {e}")))?;
    let ctx = verify_context(&settings, storage)?;
    // Scratch databases left by a crash: ours only, by prefix.
    let mut backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(300));
    loop {
        match verify::cleanup_leftovers(&ctx).await {
            Ok(dropped) => {
                if !dropped.is_empty() {
                    info!(databases = %dropped.join(", "), "dropped scratch databases left by an earlier run");
                }
                break;
            }
            Err(e) if once => return Err(StartupError(format!("Verification could not run: {e}"))),
            Err(e) => {
                let d = backoff.next_delay();
                error!(error = %e, "Verification could not run: {e}; retrying in {}s", d.as_secs());
                if !runner::sleep_or_cancel(d, &cancel).await {
                    return Ok(());
                }
            }
        }
    }
    if once {
        return match verify::run_and_log(&ctx, None, &cancel).await {
            Ok(rec) if rec.passed => Ok(()),
            Ok(rec) => Err(StartupError(format!("Restore verification failed for {}", rec.key))),
            Err(e) => Err(StartupError(format!("Verification could not run: {e}"))),
        };
    }
    let health = Health::new(cfg.interval * 2 + Duration::from_secs(3600));
    spawn_health(settings.port, health.clone(), "verify", &cancel);
    let job = VerifyJob { ctx };
    runner::run_forever(&job, Backoff::new(BACKOFF_BASE, max_backoff(cfg.interval)), &health, &cancel).await;
    Ok(())
}

/// The whole `main` of a service binary: logging, validated configuration (exit 2 naming every
/// bad variable), signal handling, then the service (exit 1 when a one-shot run failed).
pub async fn service_main(role: Role, once: bool) -> std::process::ExitCode {
    crate::telemetry::init(crate::telemetry::format_from_env());
    let settings = match Settings::from_env(role) {
        Ok(s) => s,
        Err(e) => {
            error!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let cancel = crate::shutdown::on_signals();
    let result = match role {
        Role::Verify => run_verify_service(settings, once, cancel).await,
        _ => run_backup_service(settings, once, cancel).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Starts the health endpoint when `PORT` is set.
pub fn spawn_health(port: Option<u16>, health: Health, service: &'static str, cancel: &CancellationToken) {
    if let Some(port) = port {
        let c = cancel.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::health::serve(port, health, service, c).await {
                error!(port, error = %e, "health endpoint could not start");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn schedule_survives_restarts() {
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap();
        let h = Duration::from_secs(3600);
        let cases = [
            (None, 0),
            (Some(now - chrono::Duration::minutes(20)), 2400),
            (Some(now - chrono::Duration::hours(5)), 0),
            (Some(now), 3600),
            (Some(now + chrono::Duration::hours(3)), 3600),
        ];
        for (newest, want) in cases {
            assert_eq!(due_in(newest, h, now).as_secs(), want, "{newest:?}");
        }
    }
}
