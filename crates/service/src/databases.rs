//! One service for several databases (`BACKUP_DATABASES`): the same service runs once per
//! database, each under `BACKUP_PREFIX/<name>` with its own schedule, lease, retention and
//! verdicts (see [`pgvigil_core::records::databases`]), sharing one health endpoint. Backups take
//! turns (one dump at a time, so the database server carries what a single database would);
//! verifications run side by side up to `VERIFY_JOBS`, each in its own scratch database. A failure in one database never stops the others: its run is retried
//! by its own schedule, and the log names the database on every line of it.

use super::health::Health;
use super::retry::until_ok;
use super::runner::{Job, RunFailure};
use super::skeleton::{run_service, spawn_health, Listing, Service, StartupError};
use async_trait::async_trait;
use pgvigil_core::infra::config::{Databases, Role, Settings};
use pgvigil_core::infra::pg;
use pgvigil_core::infra::storage;
use pgvigil_core::records::databases;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, Instrument};

/// What the per-database services of one process share.
#[derive(Clone, Default)]
pub(super) struct Shared {
    /// One health state for the one endpoint.
    pub health: Option<Health>,
    /// The turns: one backup at a time, or up to `VERIFY_JOBS` verifications.
    pub gate: Option<Arc<Semaphore>>,
    /// `--once`: where the run reports anomalies (its outcome is reported by the caller).
    pub notify: Option<super::notify::Notifier>,
}

/// A job whose runs wait for their turn.
pub(super) struct Gated<J> {
    pub job: J,
    pub gate: Option<Arc<Semaphore>>,
}

#[async_trait]
impl<J: Job> Job for Gated<J> {
    fn noun(&self) -> &'static str {
        self.job.noun()
    }

    async fn due_in(&self, cancel: &CancellationToken) -> Result<Duration, RunFailure> {
        self.job.due_in(cancel).await
    }

    async fn run(&self, cancel: &CancellationToken) -> Result<(), RunFailure> {
        let _turn = match &self.gate {
            None => None,
            Some(g) => tokio::select! {
                biased;
                () = cancel.cancelled() => return Ok(()),
                p = g.acquire() => p.ok(),
            },
        };
        self.job.run(cancel).await
    }
}

/// The databases to cover: the list, or for `*` every database of the source server that accepts
/// connections (backup), or every database with backups under the prefix (verify). Retried while
/// the server or storage is not reachable — and, for the verify service, while no database has a
/// backup yet — unless `--once`, which fails at once.
async fn resolve(settings: &Settings, role: Role, once: bool, cancel: &CancellationToken) -> Result<Vec<String>, StartupError> {
    if let Databases::List(names) = &settings.databases {
        return Ok(names.clone());
    }
    let attempt = || async {
        let names = tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(60), names_of_all(settings, role, cancel)) =>
                r.unwrap_or(Err(StartupError::Listing(Listing::TimedOut)))?,
            () = cancel.cancelled() => return Err(StartupError::Cancelled),
        };
        if names.is_empty() {
            return Err(StartupError::Listing(Listing::NoBackupsYet {
                prefix: settings.storage.prefix.clone(),
            }));
        }
        Ok(names)
    };
    if once {
        return attempt().await;
    }
    let backoff = super::retry::Backoff::new(settings.retry_backoff.min(Duration::from_secs(5)), Duration::from_secs(300));
    let found = until_ok(backoff, cancel, attempt, |e, d| {
        info!("Waiting for the databases to cover: {e}; looking again in {}s", d.as_secs());
    })
    .await;
    found.ok_or(StartupError::Cancelled)
}

async fn names_of_all(settings: &Settings, role: Role, cancel: &CancellationToken) -> Result<Vec<String>, StartupError> {
    if role == Role::Backup {
        let url = settings.database_url.as_ref().ok_or(StartupError::Missing("DATABASE_URL"))?;
        let mut conn = pg::connect(url).await.map_err(|e| StartupError::Listing(Listing::Server(e)))?;
        // pgvigil's own scratch databases (a verify server that is also the source) and those
        // this role may not connect to are not backed up.
        let names: Result<Vec<String>, _> = sqlx::query_scalar(
            "SELECT datname::text FROM pg_database WHERE datallowconn AND NOT datistemplate \
             AND has_database_privilege(oid, 'CONNECT') AND datname NOT LIKE 'pgvigil\\_verify\\_%' ORDER BY 1",
        )
        .fetch_all(&mut conn)
        .await;
        pg::close(conn).await;
        return names.map_err(|e| StartupError::Listing(Listing::Server(pg::classify(url, &e))));
    }
    databases::with_backups_in(settings, cancel).await.map_err(StartupError::Storage)
}

/// Runs the service for `settings`: once, or once per database when it covers several.
pub(super) async fn run_all<S: Service>(settings: Settings, once: bool, cancel: CancellationToken) -> Result<(), StartupError> {
    if settings.databases == Databases::One {
        return run_service::<S>(settings, once, cancel, Shared::default()).await;
    }
    let role = S::ROLE;
    let group = Health::new(S::interval(&settings) * 2 + Duration::from_secs(3600), S::ROLE);
    if !once {
        spawn_health(&settings, group.clone(), S::ROLE, &cancel);
    }
    let names = resolve(&settings, role, once, &cancel).await?;
    if role == Role::Backup {
        warn_about_single_database_backups(&settings, &cancel).await;
    }
    info!(
        databases = %names.join(", "),
        "covering {} databases, each under {}/<name>",
        names.len(),
        settings.storage.prefix
    );
    // Backups take turns; verifications run side by side up to VERIFY_JOBS.
    let gate = Some(Arc::new(Semaphore::new(S::jobs(&settings).max(1))));
    let one = |db: &String| {
        let span = tracing::info_span!("database", name = %db);
        let shared = Shared {
            health: Some(group.part(db)),
            gate: gate.clone(),
            notify: None,
        };
        let settings = databases::settings_for(&settings, db).map_err(|reason| Listing::Unusable {
            database: db.clone(),
            reason,
        });
        let cancel = cancel.clone();
        async move {
            match settings {
                Ok(s) => run_service::<S>(s, once, cancel, shared).await,
                Err(unusable) => Err(StartupError::Listing(unusable)),
            }
        }
        .instrument(span)
    };
    if once {
        // All at once, each waiting for its turn at the gate.
        let results = futures::future::join_all(names.iter().map(one)).await;
        let mut failed = Vec::new();
        for (db, r) in names.iter().zip(results) {
            match r {
                Ok(()) => {}
                Err(StartupError::Cancelled) => {
                    tracing::warn!(database = %db, "shutdown came before this database's turn: not run");
                    failed.push(db.clone());
                }
                Err(e) => {
                    error!(database = %db, "{e}");
                    failed.push(db.clone());
                }
            }
        }
        return if failed.is_empty() {
            Ok(())
        } else {
            Err(StartupError::Databases(failed))
        };
    }
    let results = futures::future::join_all(names.iter().map(one)).await;
    for (db, r) in names.iter().zip(results) {
        match r {
            Ok(()) | Err(StartupError::Cancelled) => {}
            Err(e) => error!(database = %db, "{e}"),
        }
    }
    Ok(())
}

/// Backups taken before the service covered several databases stay under the prefix itself,
/// where nothing prunes, verifies or shows them any more: say so once.
async fn warn_about_single_database_backups(settings: &Settings, cancel: &CancellationToken) {
    let Ok(st) = storage::connect(&settings.storage).await else {
        return;
    };
    let layout = pgvigil_core::records::keys::Layout::new(&settings.storage.prefix);
    if let Ok(cat) = pgvigil_core::records::catalog::Catalog::load(st.as_ref(), &layout, cancel).await {
        if let Some(b) = cat.newest_complete() {
            tracing::warn!(
                newest = %b.key,
                "{} backups lie under {} itself, from before BACKUP_DATABASES was set; they are no longer pruned, verified or shown (and {}/backup_latest.sql.gz is stale); move or delete them",
                cat.backups.len(),
                settings.storage.prefix,
                settings.storage.prefix
            );
        }
    }
}
