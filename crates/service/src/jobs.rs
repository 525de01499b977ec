//! The two jobs as the runner sees them: when each is due (derived from storage, so restarts
//! neither double nor skip runs) and how one run is done.

use super::health::Health;
use super::notify::{Condition, Notifier};
use super::runner::{Job, RunFailure};
use async_trait::async_trait;
use chrono::Utc;
use pgvigil_core::infra::storage::{DynStorage, StorageError};
use pgvigil_core::pipeline::backup::{self, BackupContext, BackupError};
use pgvigil_core::pipeline::verify::{self, VerifyContext, VerifyError};
use pgvigil_core::policy::schedule::{due_in, stale_age};
use pgvigil_core::records::catalog::Catalog;
use pgvigil_core::records::keys::Layout;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What is in storage now, for the schedule; a listing that fails makes the runner back off.
async fn catalog(storage: &DynStorage, layout: &Layout, cancel: &CancellationToken) -> Result<Catalog, RunFailure> {
    Catalog::load(storage.as_ref(), layout, cancel).await.map_err(|e| RunFailure {
        message: e.to_string(),
        retryable: e.is_retryable(),
        cause: "storage",
    })
}

/// The backup job.
#[derive(Debug)]
pub struct BackupJob {
    /// What to back up and where.
    pub ctx: BackupContext,
    /// Where runs and what storage holds are reported for `/status` and `/metrics`.
    pub health: Health,
    /// Where conditions are reported.
    pub notify: Notifier,
    /// Set once the presence checker runs (it starts at the first look at the schedule, with
    /// the service's cancellation).
    checker: std::sync::OnceLock<()>,
}

/// Raises (or clears) the size and table anomalies of a backup just taken.
pub(super) fn report_anomalies(n: &Notifier, out: &backup::BackupOutcome) {
    let key = &out.manifest.key;
    match &out.anomaly {
        Some(a) => n.raise(Condition::SizeAnomaly, format!("{key}: {}", a.message)),
        None => n.clear(Condition::SizeAnomaly),
    }
    match &out.table_anomalies {
        Some((previous, found)) => n.raise(
            Condition::TableAnomaly,
            format!(
                "{} (in {key}); {} is kept until acknowledged: pgvigil ack {}",
                found.iter().map(|a| a.message.as_str()).collect::<Vec<_>>().join("; "),
                previous.file_name(),
                previous.file_name()
            ),
        ),
        None => n.clear(Condition::TableAnomaly),
    }
}

/// Notifies while storage holds backups dated later than this host's clock allows (the log line
/// comes from the run that loads the catalog): they count for nothing and are left alone.
fn future_dated(notify: &Notifier, cat: &Catalog) {
    match cat.future_warning() {
        Some(text) => notify.raise(Condition::FutureDated, text),
        None => notify.clear(Condition::FutureDated),
    }
}

/// Warns (and notifies) while the newest success is older than twice the interval; the warning
/// repeats every time the schedule is looked at, so at start and after every run.
fn stale(notify: &Notifier, what: &str, newest: Option<chrono::DateTime<Utc>>, interval: Duration) {
    if let Some(age) = stale_age(newest, interval, Utc::now()) {
        let text = format!(
            "the newest {what} is {} old, more than twice the interval ({}s)",
            pgvigil_core::policy::status::human_secs(age.as_secs() as i64),
            interval.as_secs()
        );
        tracing::warn!("Stale: {text}");
        notify.raise(Condition::Stale, text);
    } else {
        notify.clear(Condition::Stale);
    }
}

impl BackupJob {
    /// The job, its presence checker not started yet.
    pub fn new(ctx: BackupContext, health: Health, notify: Notifier) -> Self {
        BackupJob {
            ctx,
            health,
            notify,
            checker: std::sync::OnceLock::new(),
        }
    }

    /// Starts the presence check every `CHECK_INTERVAL` (the first at once), until shutdown.
    fn start_checker(&self, cancel: &CancellationToken) {
        self.checker.get_or_init(|| {
            let stores = stores(&self.ctx);
            let (layout, every) = (self.ctx.layout.clone(), self.ctx.cfg.check_interval);
            let (retention, health, notify) = (self.ctx.cfg.retention, self.health.clone(), self.notify.clone());
            let cancel = cancel.clone();
            tokio::spawn(async move {
                loop {
                    presence(&stores, &layout, retention, &health, &notify, &cancel).await;
                    if !super::retry::sleep_or_cancel(every, &cancel).await {
                        break;
                    }
                }
            });
        });
    }

    /// What storage holds, from the primary or, when it cannot be listed, the secondary (the
    /// backup then goes there): an outage of one destination must not stop the schedule.
    async fn catalog(&self, cancel: &CancellationToken) -> Result<Catalog, RunFailure> {
        let primary = match &self.ctx.secondary {
            Some(s) => tokio::time::timeout(s.stall, catalog(&self.ctx.storage, &self.ctx.layout, cancel))
                .await
                .unwrap_or_else(|_| {
                    Err(RunFailure {
                        message: format!("{} did not answer within {} s", self.ctx.storage.describe(), s.stall.as_secs()),
                        retryable: true,
                        cause: "storage",
                    })
                }),
            None => catalog(&self.ctx.storage, &self.ctx.layout, cancel).await,
        };
        match (&primary, &self.ctx.secondary) {
            (Err(e), Some(s)) if e.retryable => match tokio::time::timeout(s.stall, catalog(&s.storage, &self.ctx.layout, cancel)).await {
                Ok(Ok(cat)) => Ok(cat),
                _ => primary,
            },
            _ => primary,
        }
    }

    /// Reports which destination lacks the backup just taken (it missed it and catch-up has not
    /// copied it yet).
    fn report_destinations(&self, out: &backup::BackupOutcome) {
        if self.ctx.secondary.is_none() {
            return;
        }
        let mut behind = Vec::new();
        for (name, _) in self.ctx.destinations() {
            let missed = out.missed.iter().find(|m| m.destination == name);
            let copied = out.caught_up.iter().any(|(to, gap)| *to == name && gap.copied.contains(&out.id));
            let lacks = missed.is_some() && !copied;
            let gap = out.caught_up.iter().find(|(to, _)| *to == name).map(|(_, g)| g);
            let stuck = gap.and_then(|g| g.error.clone());
            let refused = gap.map_or(0, |g| g.refused.len());
            self.health.record_behind(name, lacks || stuck.is_some() || refused > 0);
            if let Some(m) = missed.filter(|_| lacks) {
                behind.push(format!("the {name} destination did not get {}: {}", out.manifest.key, m.reason));
            }
            if let Some(e) = stuck {
                behind.push(format!("the {name} destination could not be caught up: {e}"));
            }
            if refused > 0 {
                behind.push(format!(
                    "{refused} backup(s) were not copied to the {name} destination because the other destination's copy does not match its manifest (the log names them)"
                ));
            }
        }
        if behind.is_empty() {
            self.notify.clear(Condition::DestinationBehind);
        } else {
            self.notify.raise(
                Condition::DestinationBehind,
                format!("{}; it is copied there once that destination takes it", behind.join("; ")),
            );
        }
    }
}

/// Every destination of a backup context, with its name.
fn stores(ctx: &BackupContext) -> Vec<(&'static str, DynStorage)> {
    ctx.destinations().into_iter().map(|(n, st)| (n, st.clone())).collect()
}

/// The presence check: every backup retention keeps must be in storage (in every destination)
/// with its manifest's size. A check that cannot run says so and changes nothing; it never
/// fails a backup.
async fn presence(
    stores: &[(&'static str, DynStorage)],
    layout: &Layout,
    retention: pgvigil_core::policy::retention::RetentionPolicy,
    health: &Health,
    notify: &Notifier,
    cancel: &CancellationToken,
) {
    let (mut count, mut texts, mut ran, mut all) = (0, Vec::new(), false, true);
    for (name, storage) in stores {
        match backup::check_presence(storage.as_ref(), layout, retention, cancel).await {
            Ok(rows) => {
                ran = true;
                let gone = backup::absent(&rows);
                if gone.is_empty() {
                    continue;
                }
                count += gone.len();
                let text = backup::summary(&gone);
                texts.push(if stores.len() > 1 {
                    format!("in the {name} destination: {text}")
                } else {
                    text
                });
            }
            Err(StorageError::Cancelled) => return,
            Err(e) => {
                all = false;
                tracing::warn!(error = %e, destination = name, "The presence check could not run; trying again at the next check");
            }
        }
    }
    // A destination that was not checked may still miss what it missed before: nothing clears.
    if !ran || (!all && texts.is_empty()) {
        return;
    }
    health.record_absent(count);
    if texts.is_empty() {
        notify.clear(Condition::Absent);
        return;
    }
    let text = texts.join("; ");
    tracing::error!(count, "Backups missing from storage: {text}");
    notify.raise(Condition::Absent, format!("Backups missing from storage: {text}"));
}

#[async_trait]
impl Job for BackupJob {
    fn noun(&self) -> &'static str {
        "backup"
    }

    async fn due_in(&self, cancel: &CancellationToken) -> Result<Duration, RunFailure> {
        let cat = self.catalog(cancel).await?;
        self.health.record_catalog(&cat);
        future_dated(&self.notify, &cat);
        let newest = cat.newest_complete().map(|b| b.id.0);
        stale(&self.notify, "backup", newest, self.ctx.cfg.interval);
        self.start_checker(cancel);
        Ok(due_in(newest, self.ctx.cfg.interval, Utc::now()))
    }

    async fn run(&self, cancel: &CancellationToken) -> Result<(), RunFailure> {
        let n = &self.notify;
        match backup::run_and_log(&self.ctx, cancel).await {
            Ok(out) => {
                let key = &out.manifest.key;
                self.health
                    .record_backup(&out.manifest, out.anomaly.is_some(), out.table_anomalies.is_some());
                n.clear(Condition::BackupFailing);
                n.clear(Condition::Stale);
                report_anomalies(n, &out);
                self.report_destinations(&out);
                n.success(format!("Backup completed successfully: {key} ({} bytes)", out.manifest.size));
                // Retention just ran: see at once whether what it keeps is all there.
                // Only where this backup went: a destination that missed it may hang.
                if out.missed.is_empty() {
                    presence(
                        &stores(&self.ctx),
                        &self.ctx.layout,
                        self.ctx.cfg.retention,
                        &self.health,
                        n,
                        cancel,
                    )
                    .await;
                }
                Ok(())
            }
            Err(e) => {
                if !matches!(e, BackupError::Busy(_) | BackupError::Cancelled) {
                    n.raise(Condition::BackupFailing, format!("Backup failed: {e}"));
                }
                Err(RunFailure {
                    message: e.to_string(),
                    retryable: e.is_retryable(),
                    cause: e.cause(),
                })
            }
        }
    }
}

/// The verify job.
#[derive(Debug)]
pub struct VerifyJob {
    /// What to verify and where.
    pub ctx: VerifyContext,
    /// `SECONDARY_*`: where to verify from while the primary cannot be read.
    pub secondary: Option<DynStorage>,
    /// Where verdicts are reported for `/status` and `/metrics`.
    pub health: Health,
    /// Where conditions are reported.
    pub notify: Notifier,
    /// Runs in a row that could not verify (the environment failed).
    pub not_running: std::sync::atomic::AtomicU32,
}

impl VerifyJob {
    /// See [`reachable`].
    async fn reachable(&self, cancel: &CancellationToken) -> std::borrow::Cow<'_, VerifyContext> {
        reachable(&self.ctx, self.secondary.as_ref(), cancel).await
    }
}

/// The context to verify with: `ctx`, or while its primary cannot be read (an outage, or no
/// answer within two minutes) and a second destination is configured, the same on the
/// secondary; verification records then go there.
pub(super) async fn reachable<'a>(
    ctx: &'a VerifyContext,
    secondary: Option<&DynStorage>,
    cancel: &CancellationToken,
) -> std::borrow::Cow<'a, VerifyContext> {
    let Some(secondary) = secondary else {
        return std::borrow::Cow::Borrowed(ctx);
    };
    let listed = tokio::time::timeout(backup::STALL, ctx.storage.list(&ctx.layout.backups_prefix(), cancel))
        .await
        .unwrap_or_else(|_| {
            Err(StorageError::Backend {
                message: "no answer within 120 s".into(),
                retryable: true,
            })
        });
    match listed {
        Err(e) if e.is_retryable() => {
            tracing::warn!(error = %e, "the primary destination cannot be read; verifying from the secondary destination");
            std::borrow::Cow::Owned(VerifyContext {
                storage: secondary.clone(),
                ..ctx.clone()
            })
        }
        _ => std::borrow::Cow::Borrowed(ctx),
    }
}

/// Verifications that could not run this many times in a row are worth a message.
const NOT_RUNNING_ALERT: u32 = 3;

#[async_trait]
impl Job for VerifyJob {
    fn noun(&self) -> &'static str {
        "verification"
    }

    async fn due_in(&self, cancel: &CancellationToken) -> Result<Duration, RunFailure> {
        let ctx = self.reachable(cancel).await;
        let cat = catalog(&ctx.storage, &ctx.layout, cancel).await?;
        self.health.record_catalog(&cat);
        future_dated(&self.notify, &cat);
        let newest_verification = cat.verifications.last().map(|v| v.at.0);
        let newest_backup = cat.newest_complete().map(|b| b.id);
        stale(&self.notify, "verification", newest_verification, self.ctx.cfg.interval);
        // A new backup that nobody has verified yet is due at once.
        if newest_backup.is_some_and(|b| !cat.is_verified(b))
            && newest_verification.is_none_or(|v| v < Utc::now() - chrono::Duration::minutes(1))
        {
            return Ok(Duration::ZERO);
        }
        Ok(due_in(newest_verification, self.ctx.cfg.interval, Utc::now()))
    }

    async fn run(&self, cancel: &CancellationToken) -> Result<(), RunFailure> {
        use std::sync::atomic::Ordering;
        let ctx = self.reachable(cancel).await;
        let (verdicts, stopped) = verify::run_planned(&ctx, cancel).await;
        for (id, rec) in &verdicts {
            // A failed verification is a result, recorded and reported; the schedule goes on.
            self.health.record_verification(id.0, rec);
        }
        let n = &self.notify;
        if let Some((_, rec)) = verdicts.iter().find(|(_, r)| r.untrusted) {
            n.raise(
                Condition::Untrusted,
                format!(
                    "Refused {}: not made by a trusted backup service; `pgvigil status` and its verification record say why; check who can write to the bucket (SECURITY.md)",
                    rec.key
                ),
            );
        } else if verdicts.iter().any(|(_, r)| r.passed) {
            n.clear(Condition::Untrusted);
        }
        // The newest backup verified so far decides — a passing drill of an older backup after a
        // failed newest one clears nothing. The reasons (which may quote data) stay in the record.
        if !verdicts.is_empty() {
            match self.health.newest_verdict() {
                Some((key, true)) => {
                    n.clear(Condition::VerificationFailed);
                    n.success(format!("Restore verification completed successfully: {key}"));
                }
                Some((key, false)) => n.raise(
                    Condition::VerificationFailed,
                    format!("Restore verification failed: {key}; `pgvigil status` and its verification record say why"),
                ),
                None => {}
            }
        }
        match &stopped {
            Some(VerifyError::NothingToVerify | VerifyError::Cancelled) => {}
            Some(e) => {
                let count = self.not_running.fetch_add(1, Ordering::SeqCst) + 1;
                if count >= NOT_RUNNING_ALERT {
                    n.raise(
                        Condition::VerificationNotRunning,
                        format!("Verification could not run {count} times in a row: {e}"),
                    );
                }
            }
            None => {
                self.not_running.store(0, Ordering::SeqCst);
                n.clear(Condition::VerificationNotRunning);
                n.clear(Condition::Stale);
            }
        }
        stopped.map_or(Ok(()), Err).map_err(|e| RunFailure {
            retryable: e.is_retryable(),
            cause: e.cause(),
            message: match e {
                VerifyError::NothingToVerify => "no backup yet".into(),
                other => other.to_string(),
            },
        })
    }
}
