//! The two long-running services, wired from configuration: storage, self-test, health
//! endpoint and the shared runner.

use crate::backup::{self, BackupContext};
use crate::catalog::Catalog;
use crate::config::Settings;
use crate::health::Health;
use crate::keys::Layout;
use crate::runner::{self, Backoff, Job, RunFailure};
use crate::storage::{self, preflight, DynStorage};
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
