//! One skeleton for both services: settings → storage → self-test → preparation → health → runner.
//! A binary's `main` is [`service_main`] with its role; what differs between the two services is
//! the small [`Service`] implementation of each.

use super::databases::{run_all, Gated, Shared};
pub use super::error::{Listing, StartupError};
use super::jobs::{BackupJob, VerifyJob};
use super::notify::Notifier;
pub(super) use super::once::run_service;
use super::retry::{until_ok, Backoff};
use super::{health::Health, runner};
use async_trait::async_trait;
use pgvigil_core::infra::config::{Role, Settings};
use pgvigil_core::infra::storage::{self, DynStorage, StorageError};
use pgvigil_core::pipeline::backup::{self, BackupContext};
use pgvigil_core::pipeline::verify::{self, VerifyContext};
use pgvigil_core::records::keys::Layout;
use pgvigil_core::records::policy;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, Instrument};

/// Longest wait between retries: 15 minutes, but never longer than the interval (nor shorter
/// than the first wait).
pub fn max_backoff(first: Duration, interval: Duration) -> Duration {
    interval.clamp(first, Duration::from_secs(15 * 60).max(first))
}

/// Backoff while a service is starting (storage or the verify server not usable yet).
fn startup_backoff(settings: &Settings) -> Backoff {
    Backoff::new(settings.retry_backoff.min(Duration::from_secs(5)), Duration::from_secs(300))
}

/// Connects to storage and runs the self-test once.
///
/// # Errors
/// The self-test's sentence.
pub async fn open_storage(settings: &Settings, cancel: &CancellationToken) -> Result<DynStorage, StorageError> {
    let layout = Layout::new(&settings.storage.prefix);
    storage::connect_checked(&settings.storage, &layout.backups_prefix(), &layout.probe(), cancel).await
}

/// [`open_storage`]; with a second destination, or for the backup service, every destination
/// (either may be down at start), with the object lock check.
async fn open_storage_for<S: Service>(settings: &Settings, cancel: &CancellationToken) -> Result<backup::Destinations, StorageError> {
    if S::ROLE == Role::Backup || settings.secondary.is_some() {
        return backup::open_destinations(settings, cancel).await;
    }
    Ok(backup::Destinations {
        primary: open_storage(settings, cancel).await?,
        secondary: None,
    })
}

/// What differs between the two services.
#[async_trait]
pub(super) trait Service: Sized + Send + Sync {
    /// The runner's job.
    type Job: runner::Job;
    /// Which service it is: its name in log lines and `/metrics`, and what differs beyond this
    /// trait.
    const ROLE: Role;
    /// Logs the `… service started` line with the effective (redacted) settings.
    fn announce(settings: &Settings, once: bool);
    /// Builds the service from settings and the opened storage.
    ///
    /// # Errors
    /// When the database URL the service needs is missing.
    fn new(settings: &Settings, storage: backup::Destinations) -> Result<Self, StartupError>;
    /// Work before the first run (e.g. dropping scratch databases left by a crash).
    async fn prepare(&self) -> Result<(), StartupError> {
        Ok(())
    }
    /// The settings this service runs with, to record for the CLI (see [`pgvigil_core::records::policy`]),
    /// and where.
    fn policy(&self, settings: &Settings) -> (DynStorage, Layout, policy::ServicePolicy);
    /// Tells `health` what storage already knows (e.g. the newest verification's verdict), so that
    /// `/status` is right from the start, not only after the next run.
    async fn seed_health(&self, _health: &Health) {}
    /// One run for `--once`.
    async fn once(&self, cancel: &CancellationToken, notify: &Notifier) -> Result<(), StartupError>;
    /// The job for the runner, reporting to `health` and `notify`.
    fn job(self, health: &Health, notify: Notifier) -> Self::Job;
    /// The interval between runs.
    fn interval(settings: &Settings) -> Duration;
    /// How many of its databases run at once when it covers several.
    fn jobs(settings: &Settings) -> usize;
}

/// The backup service.
pub(super) struct BackupService(BackupContext);

#[async_trait]
impl Service for BackupService {
    type Job = BackupJob;
    const ROLE: Role = Role::Backup;

    fn announce(settings: &Settings, once: bool) {
        let cfg = &settings.backup;
        info!(
            version = env!("CARGO_PKG_VERSION"),
            database = %settings.database_url.as_ref().map(ToString::to_string).unwrap_or_default(),
            storage = %settings.storage.backend,
            secondary = %settings.secondary.as_ref().map(|s| s.backend.to_string()).unwrap_or_else(|| "none".into()),
            prefix = %settings.storage.prefix,
            interval_secs = cfg.interval.as_secs(),
            compression_level = cfg.compression_level,
            retention = %cfg.retention.describe(),
            dump_options = %cfg.dump_options.join(" "),
            signing = %pgvigil_core::infra::signing::describe_signing(settings.signing.as_ref()),
            mode = if once { "once" } else { "service" },
            "Backup service started"
        );
    }

    fn new(settings: &Settings, storage: backup::Destinations) -> Result<Self, StartupError> {
        let url = settings.database_url.clone().ok_or(StartupError::Missing("DATABASE_URL"))?;
        backup::check_dump_encoding(&settings.backup.dump_options)?;
        let ctx = BackupContext::new(settings, url, storage.primary);
        Ok(Self(match storage.secondary {
            Some(secondary) => ctx.with_secondary(secondary),
            None => ctx,
        }))
    }

    async fn prepare(&self) -> Result<(), StartupError> {
        let ctx = &self.0;
        let never = CancellationToken::new();
        match storage::conditional_writes_work(ctx.storage.as_ref(), &ctx.layout.probe(), &never).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                "this storage ignores conditional writes: two backup services on one prefix are kept apart only loosely (see docs/reliability.md)"
            ),
            Err(e) => tracing::debug!(error = %e, "could not test conditional writes"),
        }
        match storage::clock_skew(ctx.storage.as_ref(), &ctx.layout.probe(), &never).await {
            Ok(Some(skew)) if skew.abs() > backup::MAX_CLOCK_SKEW_SECS => tracing::warn!(
                skew_secs = skew,
                "this machine's clock differs from the storage server's by {}s; fix the clock: retention is skipped while they disagree",
                skew
            ),
            _ => {}
        }
        Ok(())
    }

    async fn once(&self, cancel: &CancellationToken, notify: &Notifier) -> Result<(), StartupError> {
        let out = backup::run_and_log(&self.0, cancel).await.map_err(StartupError::Backup)?;
        super::jobs::report_anomalies(notify, &out);
        Ok(())
    }

    fn policy(&self, settings: &Settings) -> (DynStorage, Layout, policy::ServicePolicy) {
        let b = &settings.backup;
        let rec = policy::BackupPolicy {
            interval_secs: b.interval.as_secs(),
            retention_days: b.retention.retention_days,
            min_keep: b.retention.min_keep,
            compression_level: b.compression_level,
            keep: b.retention.calendar.to_record(),
            recorded_at: chrono::Utc::now(),
            version: env!("CARGO_PKG_VERSION").into(),
        };
        (self.0.storage.clone(), self.0.layout.clone(), policy::ServicePolicy::Backup(rec))
    }

    fn job(self, health: &Health, notify: Notifier) -> BackupJob {
        BackupJob::new(self.0, health.clone(), notify)
    }

    fn interval(settings: &Settings) -> Duration {
        settings.backup.interval
    }

    /// One dump at a time: dumps of one server compete for its disk and its locks.
    fn jobs(_: &Settings) -> usize {
        1
    }
}

/// The verify service.
pub(super) struct VerifyService(VerifyContext, Option<DynStorage>);

#[async_trait]
impl Service for VerifyService {
    type Job = VerifyJob;
    const ROLE: Role = Role::Verify;

    fn announce(settings: &Settings, once: bool) {
        let cfg = &settings.verify;
        info!(
            version = env!("CARGO_PKG_VERSION"),
            verify_server = %settings.verify_database_url.as_ref().map(ToString::to_string).unwrap_or_default(),
            storage = %settings.storage.backend,
            prefix = %settings.storage.prefix,
            interval_secs = cfg.interval.as_secs(),
            random_rate = cfg.random_rate,
            jobs = cfg.jobs,
            queries_file = ?cfg.queries_file,
            inline_queries = cfg.queries.is_some(),
            trusted_keys = %settings.trusted.describe(),
            mode = if once { "once" } else { "service" },
            "Verify service started"
        );
    }

    fn new(settings: &Settings, storage: backup::Destinations) -> Result<Self, StartupError> {
        let url = settings
            .verify_database_url
            .clone()
            .ok_or(StartupError::Missing("VERIFY_DATABASE_URL"))?;
        Ok(Self(VerifyContext::new(settings, url, storage.primary), storage.secondary))
    }

    async fn prepare(&self) -> Result<(), StartupError> {
        // Scratch databases left by a crash: ours only, by prefix.
        let dropped = verify::cleanup_leftovers(&self.0).await.map_err(StartupError::Verify)?;
        if !dropped.is_empty() {
            info!(databases = %dropped.join(", "), "dropped scratch databases left by an earlier run");
        }
        Ok(())
    }

    fn policy(&self, settings: &Settings) -> (DynStorage, Layout, policy::ServicePolicy) {
        let rec = policy::VerifyPolicy {
            interval_secs: settings.verify.interval.as_secs(),
            recorded_at: chrono::Utc::now(),
            version: env!("CARGO_PKG_VERSION").into(),
        };
        (self.0.storage.clone(), self.0.layout.clone(), policy::ServicePolicy::Verify(rec))
    }

    async fn seed_health(&self, health: &Health) {
        match verify::newest_verification(&self.0, &CancellationToken::new()).await {
            Ok(Some((id, rec))) => health.record_verification(id.0, &rec),
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "could not read the newest verification record"),
        }
    }

    async fn once(&self, cancel: &CancellationToken, _notify: &Notifier) -> Result<(), StartupError> {
        let ctx = super::jobs::reachable(&self.0, self.1.as_ref(), cancel).await;
        match verify::run_and_log(&ctx, None, cancel).await {
            Ok(rec) if rec.passed => Ok(()),
            Ok(rec) => Err(StartupError::VerificationFailed(rec.key)),
            Err(e) => Err(StartupError::Verify(e)),
        }
    }

    fn job(self, health: &Health, notify: Notifier) -> VerifyJob {
        VerifyJob {
            ctx: self.0,
            secondary: self.1,
            health: health.clone(),
            notify,
            not_running: std::sync::atomic::AtomicU32::new(0),
        }
    }

    fn interval(settings: &Settings) -> Duration {
        settings.verify.interval
    }

    fn jobs(settings: &Settings) -> usize {
        settings.verify.jobs
    }
}

/// Records the service's policy for the CLI in the background, retrying until it is stored (a
/// storage outage at start must not leave the CLI applying a shell's defaults).
fn record_policy((storage, layout, p): (DynStorage, Layout, policy::ServicePolicy), backoff: Backoff, cancel: &CancellationToken) {
    let cancel = cancel.clone();
    tokio::spawn(
        async move {
            let write = || policy::write_service(storage.as_ref(), &layout, &p, &cancel);
            until_ok(backoff, &cancel, write, |e, d| {
                tracing::warn!(error = %e, "could not record this service's settings for the CLI; retrying in {}s", d.as_secs());
            })
            .await;
        }
        .in_current_span(),
    );
}

/// Starts a service and runs it (see [`run_service`], which wraps it).
pub(super) async fn start<S: Service>(
    settings: Settings,
    once: bool,
    cancel: CancellationToken,
    shared: Shared,
) -> Result<(), StartupError> {
    S::announce(&settings, once);
    let interval = S::interval(&settings);
    let health = match &shared.health {
        Some(h) => h.clone(),
        None => {
            let health = Health::new(interval * 2 + Duration::from_secs(3600), S::ROLE);
            if !once {
                // Liveness answers from the start: a service waiting for its storage or database
                // is alive.
                spawn_health(&settings, health.clone(), S::ROLE, &cancel);
            }
            health
        }
    };
    health.record_interval(interval);
    let storage = if once {
        open_storage_for::<S>(&settings, &cancel).await.map_err(StartupError::Storage)?
    } else {
        let opened = until_ok(
            startup_backoff(&settings),
            &cancel,
            || open_storage_for::<S>(&settings, &cancel),
            |e, d| {
                error!(error = %e, "Storage is not usable yet; retrying in {}s", d.as_secs());
            },
        )
        .await;
        opened.ok_or(StartupError::Cancelled)?
    };
    let service = S::new(&settings, storage)?;
    let (st, layout, _) = service.policy(&settings);
    health.attach(super::page::Feed::new(st, layout, &settings, S::ROLE));
    // Best effort: what it does is repeated before every run, and a server that is down now
    // must not keep the service from starting.
    // Shutdown must not wait for it (a stalled store or server can hold it for minutes).
    tokio::select! {
        r = service.prepare() => if let Err(e) = r {
            tracing::warn!("{e}; the first run will try again");
        },
        () = cancel.cancelled() => {}
    }
    if cancel.is_cancelled() && !once {
        return Err(StartupError::Cancelled);
    }
    if once {
        let (storage, layout, p) = service.policy(&settings);
        if let Err(e) = policy::write_service(storage.as_ref(), &layout, &p, &cancel).await {
            tracing::warn!(error = %e, "could not record this service's settings for the CLI");
        }
        let notify = shared.notify.clone().unwrap_or_default();
        // Several databases: each waits for its turn (backups one at a time, verifications up to
        // VERIFY_JOBS).
        let _turn = match &shared.gate {
            None => None,
            Some(g) => tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(StartupError::Cancelled),
                p = g.acquire() => p.ok(),
            },
        };
        return service.once(&cancel, &notify).await;
    }
    record_policy(service.policy(&settings), startup_backoff(&settings), &cancel);
    tokio::select! {
        () = service.seed_health(&health) => {}
        () = cancel.cancelled() => return Err(StartupError::Cancelled),
    }
    let notify = Notifier::start(&settings.notify, S::ROLE, &settings.storage.prefix, &cancel);
    let job = Gated {
        job: service.job(&health, notify),
        gate: shared.gate.clone(),
    };
    let first = settings.retry_backoff;
    runner::run_forever(&job, Backoff::new(first, max_backoff(first, interval)), &health, &cancel).await;
    Ok(())
}

/// The service itself: logging, validated configuration (exit 2 naming every bad variable),
/// signal handling, then the service (exit 1 when a one-shot run failed).
pub async fn service_main(role: Role, once: bool) -> std::process::ExitCode {
    pgvigil_core::infra::process::telemetry::init(pgvigil_core::infra::process::telemetry::format_from_env());
    let settings = match Settings::from_env(role) {
        Ok(s) => s,
        Err(e) => {
            error!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let cancel = pgvigil_core::infra::process::shutdown::on_signals();
    let result = match role {
        Role::Verify => run_all::<VerifyService>(settings, once, cancel).await,
        _ => run_all::<BackupService>(settings, once, cancel).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // Asked to stop while still waiting for a dependency: a clean stop, not a failure.
        Err(StartupError::Cancelled) => {
            info!("Shutdown requested before the service was ready; stopped");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            error!(retryable = e.is_retryable(), "{e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Starts the health endpoint when `PORT` is set.
pub fn spawn_health(settings: &Settings, health: Health, role: Role, cancel: &CancellationToken) {
    if let Some(port) = settings.port {
        let c = cancel.clone();
        let access = settings.health.clone();
        tokio::spawn(async move {
            if let Err(e) = super::http::serve(port, access, health, role, c).await {
                error!(port, error = %e, "health endpoint could not start");
            }
        });
    }
}
