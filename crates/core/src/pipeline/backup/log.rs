//! A backup run as operators see it: one span per run, the exact log lines of spec.md
//! (`Backup completed successfully`, `Backup failed`), anomaly warnings, and a failure record.

use super::{run_once, BackupContext, BackupError, BackupOutcome};
use crate::policy::anomaly::Severity;
use crate::policy::retention::KeptBecause;
use crate::records::history::{write_failure, FailureRecord};
use crate::records::keys::BackupId;
use chrono::Utc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn, Instrument};

/// Runs one backup and logs the operator-facing lines; records failures (best effort).
///
/// # Errors
/// The backup's error, after it was logged.
pub async fn run_and_log(ctx: &BackupContext, cancel: &CancellationToken) -> Result<BackupOutcome, BackupError> {
    let at = Utc::now();
    let span = tracing::info_span!("backup", run = %BackupId::at(at).stamp());
    log_run(ctx, at, cancel).instrument(span).await
}

async fn log_run(ctx: &BackupContext, at: chrono::DateTime<Utc>, cancel: &CancellationToken) -> Result<BackupOutcome, BackupError> {
    let started = Instant::now();
    match run_once(ctx, cancel).await {
        Ok(out) => {
            let m = &out.manifest;
            info!(
                key = %m.key,
                size_bytes = m.size,
                uncompressed_bytes = m.uncompressed_size,
                duration_secs = format!("{:.1}", started.elapsed().as_secs_f64()),
                tables = m.tables.len(),
                rows = m.tables.values().sum::<u64>(),
                "Backup completed successfully"
            );
            if let Some(a) = &out.anomaly {
                match a.severity {
                    Severity::Warning => warn!(key = %m.key, "Backup size anomaly: {}", a.message),
                    Severity::Critical => error!(key = %m.key, "Backup size anomaly (critical): {}", a.message),
                }
            }
            if let Some((previous, found)) = &out.table_anomalies {
                for a in found {
                    error!(
                        key = %m.key,
                        table = %a.table,
                        "Table anomaly: {} since {}; that backup is kept until acknowledged: pgvigil ack {}",
                        a.message,
                        previous.file_name(),
                        previous.file_name()
                    );
                }
            }
            // Calendar picks in one line (there may be dozens); other reasons one by one.
            let calendar = out
                .retention
                .kept
                .iter()
                .filter(|(_, why)| matches!(why, KeptBecause::Calendar(_)))
                .count();
            if calendar > 0 {
                info!(
                    count = calendar,
                    "Retention kept {calendar} backups older than BACKUP_RETENTION_DAYS for the calendar rules (pgvigil list shows which)"
                );
            }
            for (id, why) in out
                .retention
                .kept
                .iter()
                .filter(|(_, why)| !matches!(why, KeptBecause::Calendar(_)))
            {
                info!(backup = %id.file_name(), "Retention kept a backup older than BACKUP_RETENTION_DAYS: {}", why.describe());
            }
            if !out.retention.delete.is_empty() {
                let names: Vec<String> = out.retention.delete.iter().map(BackupId::file_name).collect();
                info!(deleted = names.len(), backups = %names.join(", "), "Retention removed old backups");
            }
            Ok(out)
        }
        // Not a failure: the other service takes the backup.
        Err(e @ BackupError::Busy(_)) => {
            info!("Backup skipped: {e}");
            Err(e)
        }
        Err(e) => {
            error!(error = %e, retryable = e.is_retryable(), "Backup failed");
            if !matches!(e, BackupError::Cancelled) {
                let rec = FailureRecord {
                    at,
                    error: e.to_string(),
                    retryable: e.is_retryable(),
                };
                if let Err(we) = write_failure(ctx.storage.as_ref(), &ctx.layout, &rec, &CancellationToken::new()).await {
                    tracing::debug!(error = %we, "could not store the failure record");
                }
            }
            Err(e)
        }
    }
}
