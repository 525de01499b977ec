//! `pgvigil restore --create NAME [--jobs N]`: a backup into a database that pgvigil makes.
//!
//! The database is built under a name of pgvigil's own (`pgvigil_building_…`), marked as in use
//! by an advisory lock for as long as the restore runs, and renamed to NAME only once the restore
//! succeeded: a database called NAME is always a whole restore. Any failure drops it; should
//! pgvigil die, the next `--create` on that server drops it (its lock is free). So with `--jobs`
//! the table data may load over several sessions that commit as they go
//! ([`crate::pipeline::restore::parallel`]).

use super::restore::{RestoreOutcome, RestoreRequest};
use super::{Observer, Operator, OperatorError};
use crate::infra::pg::{self, scratch, PgError};
use crate::infra::secret::DbUrl;
use crate::infra::storage::Key;
use crate::pipeline::restore::{Attempt, RestoreError, Target};
use crate::pipeline::stages::dumpscan::roles::quote;
use crate::records::manifest::Manifest;
use tokio_util::sync::CancellationToken;

/// The database a `--create` restore is building.
pub(super) struct Building {
    /// A database of the same server to manage it from (the target the command was given).
    pub(super) admin: DbUrl,
    /// Its name while it is being built.
    pub(super) name: String,
}

impl Building {
    /// Empties it: dropped and made anew (after a parallel restore gave way).
    ///
    /// # Errors
    /// The server's refusal.
    pub(super) async fn recreate(&self) -> Result<(), PgError> {
        let mut conn = pg::connect(&self.admin).await?;
        let made = async {
            scratch::drop(&mut conn, &self.admin, &self.name).await?;
            scratch::create(&mut conn, &self.admin, &self.name).await
        }
        .await;
        pg::close(conn).await;
        made
    }
}

/// The longest database name PostgreSQL keeps whole.
const MAX_NAME: usize = 63;

fn usage(text: String) -> OperatorError {
    OperatorError::Usage(text)
}

impl Operator {
    /// Restores into a new database `name` on the target's server (see the module).
    ///
    /// # Errors
    /// Usage errors (a name taken or too long), [`super::restore::RestoreFailure`] when nothing was
    /// restored; the database then does not exist.
    pub(super) async fn restore_create(
        &self,
        req: &RestoreRequest,
        name: &str,
        observer: &dyn Observer,
        cancel: &CancellationToken,
    ) -> Result<RestoreOutcome, OperatorError> {
        if name.is_empty() || name.len() > MAX_NAME || name.contains('\0') {
            return Err(usage(format!("--create: a database name of 1 to {MAX_NAME} bytes, please")));
        }
        // pgvigil drops leftover databases of these names: a restored database must not be one.
        let lower = name.to_lowercase();
        if [scratch::PREFIX, scratch::BUILDING].iter().any(|p| lower.starts_with(p)) {
            return Err(usage(format!(
                "--create: names starting with {} or {} are pgvigil's own scratch databases, which it drops when it finds them left over; choose another name",
                scratch::PREFIX,
                scratch::BUILDING
            )));
        }
        let admin = &req.target;
        let building = format!("{}{:08x}", scratch::BUILDING, rand::random::<u32>());
        let inner = RestoreRequest {
            target: admin.with_database(&building).map_err(usage)?,
            clean: false,
            create: None,
            ..req.clone()
        };
        let mut conn = pg::connect(admin).await?;
        let prepared = self.prepare_building(&mut conn, admin, (name, building, observer)).await;
        let building = match prepared {
            Ok(b) => b,
            Err(e) => {
                pg::close(conn).await;
                return Err(e);
            }
        };
        observer.note(&format!(
            "building the new database as {} (renamed to {name} once the restore succeeded)",
            building.name
        ));
        let work = self.restore_attempts(&inner, Some(&building), observer, cancel);
        let (restored, held) = scratch::holding(conn, admin, &building.name, work).await;
        let mut conn = match held {
            Some(c) => c,
            None => pg::connect(admin).await?,
        };
        let result = match restored {
            Ok(out) => rename(&mut conn, admin, &building.name, name).await.map(|()| out),
            Err(e) => Err(e),
        };
        if result.is_err() {
            if let Err(e) = scratch::drop(&mut conn, admin, &building.name).await {
                observer.note(&format!(
                    "warning: {} could not be dropped ({e}); the next restore --create drops it",
                    building.name
                ));
            }
        }
        pg::close(conn).await;
        result.map(|out| RestoreOutcome {
            created: Some(name.to_string()),
            ..out
        })
    }

    /// Drops what an earlier `--create` left behind, refuses a name that is taken, and creates the
    /// database under its building name, locked.
    async fn prepare_building(
        &self,
        conn: &mut sqlx::PgConnection,
        admin: &DbUrl,
        (name, building, observer): (&str, String, &dyn Observer),
    ) -> Result<Building, OperatorError> {
        match scratch::drop_abandoned_with(conn, admin, scratch::BUILDING).await {
            Ok(dropped) if !dropped.is_empty() => {
                observer.note(&format!(
                    "dropped {}, left by a restore --create that did not finish",
                    dropped.join(", ")
                ));
            }
            Ok(_) => {}
            Err(e) => observer.note(&format!(
                "warning: could not look for databases left by an earlier restore --create: {e}"
            )),
        }
        let taken: bool = sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| pg::classify(admin, &e))?;
        if taken {
            return Err(usage(format!(
                "database {name} already exists on the target's server; pick another name for --create (or restore into it without --create)"
            )));
        }
        if !scratch::lock(conn, admin, &building).await? {
            return Err(usage(format!("{building} is in use by another restore; run the command again")));
        }
        scratch::create(conn, admin, &building).await.map_err(|e| {
            OperatorError::Usage(format!(
                "could not create a database on the target's server ({e}); --create needs a role with CREATEDB"
            ))
        })?;
        Ok(Building {
            admin: admin.clone(),
            name: building,
        })
    }
}

impl Operator {
    /// The restore over up to `jobs` sessions, and how many loaded data: `Ok(None)` when it gave
    /// way (the database is to be emptied and the restore run in one stream).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn parallel(
        &self,
        key: &Key,
        m: &Manifest,
        plan: &crate::pipeline::restore::parallel::Plan,
        target: &Target<'_>,
        jobs: usize,
        observer: &dyn Observer,
        cancel: &CancellationToken,
    ) -> Result<Option<(Attempt, usize)>, RestoreError> {
        use crate::pipeline::restore::parallel::{restore_parallel, Parallel, Sessions};
        let jobs = jobs.min(plan.blocks.len());
        observer.note(&format!("restoring {key} into {} over {jobs} sessions ...", target.url));
        let bound = tokio::sync::Semaphore::new(jobs);
        // With trusted keys, only a manifest whose signature was verified is restored.
        let sessions = Sessions {
            jobs,
            bound: &bound,
            signed: self.settings.trusted.is_set(),
        };
        let deadline = target.deadline.map(|d| tokio::time::Instant::now() + d);
        let run = restore_parallel(&self.storage, key, m, plan, target, &sessions, cancel);
        let why = match crate::pipeline::restore::before(deadline, run).await {
            Some(Ok(Parallel::Done(attempt, used))) => return Ok(Some((*attempt, used))),
            Some(Ok(Parallel::GaveWay(why))) => why,
            Some(Err(e)) => return Err(e),
            None => "it did not finish within the deadline".into(),
        };
        let why: String = why.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        observer.note(&format!("the parallel restore gave way to one stream: {why}"));
        Ok(None)
    }
}

/// Gives the restored database its name (nobody may be connected to it).
async fn rename(conn: &mut sqlx::PgConnection, admin: &DbUrl, building: &str, name: &str) -> Result<(), OperatorError> {
    if !scratch::is_scratch_name(building) {
        return Err(usage(format!("refusing to rename {building}: not pgvigil's")));
    }
    sqlx::query(&format!("ALTER DATABASE \"{building}\" RENAME TO {}", quote(name)))
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(|e| {
            usage(format!(
                "the restore succeeded, but the database could not be renamed to {name} ({}); nothing was kept",
                pg::classify(admin, &e)
            ))
        })
}
