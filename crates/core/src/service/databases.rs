//! One service for several databases (`BACKUP_DATABASES`): the same service runs once per
//! database, each under `BACKUP_PREFIX/<name>` with its own schedule, lease, retention and
//! verdicts (see [`crate::records::databases`]), sharing one health endpoint. Runs take turns —
//! one dump or one restore at a time — so the database server and the verify server carry what
//! a single database would. A failure in one database never stops the others: its run is retried
//! by its own schedule, and the log names the database on every line of it.

use super::health::Health;
use super::retry::until_ok;
use super::runner::{Job, RunFailure};
use super::skeleton::{run_service, spawn_health, Service, StartupError};
use crate::infra::config::{Databases, Role, Settings};
use crate::infra::pg;
use crate::infra::storage;
use crate::records::databases;
use async_trait::async_trait;
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
    /// One run at a time.
    pub gate: Option<Arc<Semaphore>>,
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
                p = g.acquire() => p.ok(),
                () = cancel.cancelled() => return Ok(()),
            },
        };
        self.job.run(cancel).await
    }
}

/// The databases to cover: the list, or for `*` every database of the source server that accepts
/// connections (backup), or every database with backups under the prefix (verify). Retried while
/// the server or storage is not reachable (services) or failed at once (`--once`).
async fn resolve(settings: &Settings, role: Role, once: bool, cancel: &CancellationToken) -> Result<Vec<String>, StartupError> {
    let names = match &settings.databases {
        Databases::One => return Ok(Vec::new()),
        Databases::List(names) => return Ok(names.clone()),
        Databases::All => names_of_all(settings, role, cancel),
    };
    if once {
        return names.await;
    }
    let backoff = super::retry::Backoff::new(settings.retry_backoff.min(Duration::from_secs(5)), Duration::from_secs(300));
    let found = until_ok(
        backoff,
        cancel,
        || names_of_all(settings, role, cancel),
        |e, d| error!(error = %e, "Could not list the databases to cover yet; retrying in {}s", d.as_secs()),
    )
    .await;
    found.ok_or(StartupError::Cancelled)
}

async fn names_of_all(settings: &Settings, role: Role, cancel: &CancellationToken) -> Result<Vec<String>, StartupError> {
    if role == Role::Backup {
        let url = settings.database_url.as_ref().ok_or(StartupError::Missing("DATABASE_URL"))?;
        let mut conn = pg::connect(url).await.map_err(|e| StartupError::Backup(e.into()))?;
        let names: Result<Vec<String>, _> =
            sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1")
                .fetch_all(&mut conn)
                .await;
        pg::close(conn).await;
        return names.map_err(|e| StartupError::Backup(pg::classify(url, &e).into()));
    }
    let st = storage::connect(&settings.storage).await.map_err(StartupError::Storage)?;
    databases::with_backups(st.as_ref(), &settings.storage.prefix, cancel)
        .await
        .map_err(StartupError::Storage)
}

/// Runs the service for `settings`: once, or once per database when it covers several.
pub(super) async fn run_all<S: Service>(settings: Settings, once: bool, cancel: CancellationToken) -> Result<(), StartupError> {
    if settings.databases == Databases::One {
        return run_service::<S>(settings, once, cancel, Shared::default()).await;
    }
    let role = if S::NAME == "backup" { Role::Backup } else { Role::Verify };
    let health = Health::new(S::interval(&settings) * 2 + Duration::from_secs(3600));
    if !once {
        spawn_health(settings.port, health.clone(), S::NAME, &cancel);
    }
    let names = resolve(&settings, role, once, &cancel).await?;
    if names.is_empty() {
        info!("no database to cover yet (BACKUP_DATABASES=* found none with backups under the prefix)");
        return Ok(());
    }
    info!(
        databases = %names.join(", "),
        "covering {} databases, each under {}/<name>",
        names.len(),
        settings.storage.prefix
    );
    let shared = Shared {
        health: Some(health),
        gate: Some(Arc::new(Semaphore::new(1))),
    };
    let one = |db: &String| {
        let span = tracing::info_span!("database", name = %db);
        run_service::<S>(databases::settings_for(&settings, db), once, cancel.clone(), shared.clone()).instrument(span)
    };
    if once {
        let mut failed = Vec::new();
        for db in &names {
            if let Err(e) = one(db).await {
                error!(database = %db, "{e}");
                failed.push(db.clone());
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
        if let Err(e) = r {
            error!(database = %db, "{e}");
        }
    }
    Ok(())
}
