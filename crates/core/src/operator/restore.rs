//! `pgvigil restore`: a backup into a database, all or nothing, falling back to older backups
//! only when the backup itself is at fault.
//!
//! Every attempt runs in one transaction that pgvigil opens and commits only after the object was
//! proven intact (see [`crate::pipeline::restore`]); `--clean` empties the target inside that same
//! transaction. So whatever happens — a damaged backup, a storage error, a signal, pgvigil killed —
//! the target is either fully restored or exactly as it was.
//!
//! Fallback: a damaged object, or a statement of the dump that fails on the target, blames the
//! backup, and the next older one is tried. A storage error, a lost connection, a full disk, a
//! missing privilege or extension, shutdown: nothing older can do better, so the restore stops and
//! says so.

use super::restore_create::Building;
use super::{Observer, Operator, OperatorError};
use crate::infra::pg::psql::find_psql;
use crate::infra::pg::{self, target::Contents, PsqlFailure};
use crate::infra::secret::DbUrl;
use crate::infra::storage::Key;
use crate::pipeline::restore::{judge, restore_into, Attempt, EnvironmentFault, Judgement, RestoreError, StreamError, Target};
use crate::records::catalog::Catalog;
use crate::records::keys::BackupId;
use crate::records::manifest::{self, Manifest};
use chrono::{DateTime, Utc};
use std::time::Duration;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// What to restore, and where.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    /// The target database (must exist).
    pub target: DbUrl,
    /// `latest`, a key or file name, or a time: the newest backup taken at or before it.
    pub backup: String,
    /// How many older backups to try when the chosen one is at fault.
    pub fallback: usize,
    /// Replace the target's contents (inside the restore's transaction).
    pub clean: bool,
    /// Restore ownership and grants, creating missing roles first (`false`: `--no-privileges`).
    pub privileges: bool,
    /// `--timeout`: the most one attempt may take (`None`: `VERIFY_TIMEOUT`, else derived).
    pub timeout: Option<std::time::Duration>,
    /// `--create NAME`: restore into a new database of that name on the target's server, made by
    /// pgvigil and named only once the restore succeeded.
    pub create: Option<String>,
    /// `--jobs`: sessions loading table data at once (with `--create` only; 1: one stream).
    pub jobs: usize,
}

/// A restore that committed.
#[derive(Debug, Clone)]
pub struct RestoreOutcome {
    /// The backup restored.
    pub key: String,
    /// Its identity (the time its data is from).
    pub id: BackupId,
    /// Seconds from the start of the command to the commit (the RTO of this restore).
    pub rto_secs: f64,
    /// Newer backups that were tried first and were at fault, with why.
    pub skipped: Vec<(String, String)>,
    /// What `--clean` replaced, when it was used on a non-empty target.
    pub replaced: Option<Contents>,
    /// The database `--create` made.
    pub created: Option<String>,
    /// Sessions that loaded table data at once (`None`: one stream).
    pub sessions: Option<usize>,
    /// Subscription statements of the backup that were not run (a restore never creates one).
    pub subscriptions_left_out: u32,
}

impl RestoreOutcome {
    /// Age of the restored data now (the RPO of this restore), in seconds.
    pub fn rpo_secs(&self, now: DateTime<Utc>) -> i64 {
        (now - self.id.0).num_seconds()
    }
}

/// Why nothing was restored. In every case the target was left exactly as it was, except
/// [`RestoreFailure::CommitUnknown`], which says that it cannot tell, and
/// [`RestoreFailure::EndedEarly`], which says that it was changed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreFailure {
    /// There is nothing to restore.
    #[error("there is no complete backup to restore")]
    NoBackup,
    /// The target holds user objects and `--clean` was not given.
    #[error("the target database {database} already holds {contents}; restore into an empty database, or pass --clean to replace its contents (inside the restore's transaction: if the restore fails, nothing is dropped)")]
    TargetNotEmpty {
        /// Database name.
        database: String,
        /// What is in it.
        contents: Contents,
    },
    /// The target holds subscriptions, which `--clean` does not drop.
    #[error("the target database {database} holds {count} logical-replication subscription(s), which --clean does not drop (dropping one also drops its replication slot on the publisher, which cannot be undone if the restore fails). Drop them first, keeping the publisher's slot, which may be another subscriber's (ALTER SUBSCRIPTION name DISABLE; ALTER SUBSCRIPTION name SET (slot_name = NONE); DROP SUBSCRIPTION name;), or restore into a new database with --create")]
    TargetHasSubscriptions {
        /// Database name.
        database: String,
        /// Subscriptions in it.
        count: i64,
    },
    /// The environment failed while restoring `key`; older backups were not tried because they
    /// would meet the same problem.
    #[error(
        "stopped while restoring {key}: {cause}. The target was left as it was. No older backup was tried: the backup is not at fault"
    )]
    Environment {
        /// The backup being restored.
        key: String,
        /// The cause in plain words.
        cause: String,
    },
    /// The backup ended pgvigil's transaction early: part of it is in the target.
    #[error("{key} ended pgvigil's transaction before its COMMIT: {why}. The target was CHANGED: part of the backup is in it (and, with --clean, what it held may be gone); inspect it, then restore an older backup with --clean. Treat {key} as tampered")]
    EndedEarly {
        /// The backup being restored.
        key: String,
        /// What the server and psql said.
        why: String,
    },
    /// The connection broke while the COMMIT was in flight and the server could not be asked.
    #[error("the connection to the target broke while {key} was being committed, and the server could not be asked afterwards: the target may or may not hold the restored data; check it before doing anything else ({failure})")]
    CommitUnknown {
        /// The backup being restored.
        key: String,
        /// How psql ended.
        failure: PsqlFailure,
    },
    /// Shutdown.
    #[error("interrupted; nothing was committed and the target was left as it was")]
    Cancelled,
    /// The backup chosen for a one-table restore is at fault.
    #[error("{key} is at fault: {why}. Nothing was changed; restore the table from an older backup (--backup)")]
    TableAtFault {
        /// The backup.
        key: String,
        /// Why.
        why: String,
    },
    /// A one-table restore cannot be made from this backup.
    #[error("one table cannot be restored from {key}: {why}. Nothing was changed")]
    TableUnsupported {
        /// The backup.
        key: String,
        /// Why.
        why: String,
    },
    /// A one-table restore failed on the target and was rolled back.
    #[error("restoring {table} from {key} failed on the target and was rolled back: {why}. Nothing was changed")]
    TableFailed {
        /// The backup.
        key: String,
        /// The table.
        table: String,
        /// What the server said.
        why: String,
    },
    /// Every backup tried was at fault.
    #[error("no backup could be restored ({tried} tried, each at fault; see above); the target was left as it was. Run `pgvigil check --last 10` to find a good one")]
    AllFailed {
        /// How many were tried.
        tried: usize,
    },
}

/// What one attempt showed.
pub(super) enum Verdict {
    /// Restored.
    Done,
    /// The backup is at fault: try an older one.
    BackupAtFault(String),
}

impl Operator {
    /// Restores with fallback.
    ///
    /// # Errors
    /// [`OperatorError::Restore`] when nothing was restored (and why), storage or target errors
    /// before any attempt.
    pub async fn restore(
        &self,
        req: &RestoreRequest,
        observer: &dyn Observer,
        cancel: &CancellationToken,
    ) -> Result<RestoreOutcome, OperatorError> {
        match &req.create {
            Some(name) => self.restore_create(req, name, observer, cancel).await,
            None if req.jobs > 1 => Err(OperatorError::Usage(
                "--jobs loads tables over several sessions that commit as they go: it needs a database of its own; add --create NAME"
                    .into(),
            )),
            None => self.restore_attempts(req, None, observer, cancel).await,
        }
    }

    /// The backups tried in turn, newest first, into `req.target` (the database `building` when
    /// `--create` made it).
    pub(super) async fn restore_attempts(
        &self,
        req: &RestoreRequest,
        building: Option<&Building>,
        observer: &dyn Observer,
        cancel: &CancellationToken,
    ) -> Result<RestoreOutcome, OperatorError> {
        let started = Instant::now();
        let st = self.storage.as_ref();
        let cat = Catalog::load(st, &self.layout, cancel).await?;
        let (complete, first) = self.candidates(&cat, &req.backup, observer)?;
        // An operator restoring is there to interrupt it: without VERIFY_TIMEOUT or --timeout the
        // deadline comes only from verifications on record, never from a default.
        let deadline = match req.timeout.or(self.settings.verify.timeout) {
            Some(d) => Some(d),
            None => self.recorded_deadline(&cat, cancel).await,
        };
        let (preamble, replaced, target_major) = self.prepare_target(req).await?;
        if let Some(c) = &replaced {
            observer.note(&format!(
                "--clean: {} in {} will be replaced, inside the restore's transaction",
                c,
                req.target.database()
            ));
        }
        let candidates = complete.iter().skip(first).take(req.fallback + 1);
        let mut skipped = Vec::new();
        for id in candidates {
            let m = match self.trusted_manifest(*id, cancel).await? {
                Ok(m) => m,
                Err(why) => {
                    let key = self.layout.backup(*id).to_string();
                    observer.note(&format!("FAILED {key}: {why}"));
                    observer.note("nothing was restored from it; trying the next older backup");
                    skipped.push((key, why));
                    continue;
                }
            };
            let key = match &m {
                Some(m) if m.encryption.is_some() => self.layout.object(*id, true),
                _ => self.layout.backup(*id),
            };
            let how = How {
                preamble: &preamble,
                target_major,
                deadline,
                building,
            };
            let (attempt, sessions) = self.attempt(&key, m.as_ref(), req, &how, observer, cancel).await?;
            let attempt = attempt.map_err(|e| stopped(key.as_str(), e))?;
            let subscriptions_left_out = attempt.report.scan.subscription_lines_removed;
            match decide(key.as_str(), &req.target, attempt).await? {
                Verdict::Done => {
                    return Ok(RestoreOutcome {
                        key: key.to_string(),
                        id: *id,
                        rto_secs: started.elapsed().as_secs_f64(),
                        skipped,
                        replaced,
                        created: None,
                        sessions,
                        subscriptions_left_out,
                    })
                }
                Verdict::BackupAtFault(why) => {
                    observer.note(&format!("FAILED {key}: {why}"));
                    observer.note("the target was left as it was (nothing was committed); trying the next older backup");
                    skipped.push((key.to_string(), why));
                }
            }
        }
        Err(RestoreFailure::AllFailed { tried: skipped.len() }.into())
    }

    /// How long a restore may take when nobody said: from the restores on record (`None`: none).
    async fn recorded_deadline(&self, cat: &Catalog, cancel: &CancellationToken) -> Option<Duration> {
        let recorded = crate::records::history::recent_passed_restore_secs(self.storage.as_ref(), cat, 5, cancel).await;
        recorded
            .iter()
            .any(|s| s.is_finite() && *s > 0.0)
            .then(|| crate::pipeline::restore::default_deadline(&recorded))
    }

    /// The backup's manifest when it may be restored or checked (`Ok(None)`: it has none), or why
    /// not: nothing of a backup that no trusted backup service made is restored.
    pub(super) async fn trusted_manifest(
        &self,
        id: BackupId,
        cancel: &CancellationToken,
    ) -> Result<Result<Option<Manifest>, String>, OperatorError> {
        Ok(
            match manifest::read_checked(self.storage.as_ref(), &self.layout, id, &self.settings.trusted, cancel).await? {
                manifest::Checked::Found(_, manifest::Trust::Untrusted(why)) => {
                    Err(format!("{}: {why}", crate::pipeline::verify::UNTRUSTED))
                }
                manifest::Checked::Unreadable(why) => Err(why),
                manifest::Checked::Found(m, _) => Ok(Some(*m)),
                manifest::Checked::Missing => Ok(None),
            },
        )
    }

    /// One restore of `key` into the target: the versions checked, the right psql, the roles
    /// planned, then the restore itself (over several sessions first, when `--create` made the
    /// target and `--jobs` asks for it). The target's server being older than the backup's source
    /// is the environment's fault: no older backup would fix it. With the attempt, the sessions
    /// that loaded the data when there were several.
    async fn attempt(
        &self,
        key: &Key,
        m: Option<&Manifest>,
        req: &RestoreRequest,
        how: &How<'_>,
        observer: &dyn Observer,
        cancel: &CancellationToken,
    ) -> Result<(Result<Attempt, RestoreError>, Option<usize>), OperatorError> {
        if let Some(m) = m {
            source_not_newer(key, m, how.target_major)?;
        }
        let tool = self.psql_for(key, m, observer).await?;
        let mut parallel_first = match (how.building, m) {
            (Some(b), Some(m)) if req.jobs > 1 => match crate::pipeline::restore::parallel::plan(m) {
                Ok(plan) => Some((b, m, plan)),
                Err(why) => {
                    observer.note(&format!("restoring in one stream: {why}"));
                    None
                }
            },
            _ => None,
        };
        loop {
            let roles = super::roles::plan(self.storage.as_ref(), m, &req.target, req.privileges, cancel).await?;
            observer.note(&roles.note);
            let preamble = format!("{}{}", roles.sql, how.preamble);
            let target = Target {
                psql: &tool,
                url: &req.target,
                preamble: &preamble,
                strip: roles.strip,
                identities: &self.settings.identities,
                deadline: how.deadline,
            };
            let parallel = parallel_first.take();
            if parallel.is_some() && !roles.sql.trim().is_empty() {
                // They would be committed with the schema, before the backup is proven.
                observer.note("restoring in one stream: the roles the backup needs are created in the restore's own transaction");
            }
            let Some((building, m, plan)) = parallel.filter(|_| roles.sql.trim().is_empty()) else {
                return Ok((self.one_stream(key, m, &target, observer, cancel).await, None));
            };
            match self.parallel(key, m, &plan, &target, req.jobs, observer, cancel).await {
                Ok(Some((attempt, used))) => return Ok((Ok(attempt), Some(used))),
                Ok(None) => building.recreate().await?,
                Err(e) => return Ok((Err(e), None)),
            }
        }
    }

    /// The restore in one stream, in one transaction.
    async fn one_stream(
        &self,
        key: &Key,
        m: Option<&Manifest>,
        target: &Target<'_>,
        observer: &dyn Observer,
        cancel: &CancellationToken,
    ) -> Result<Attempt, RestoreError> {
        observer.note(&format!("restoring {key} into {} ...", target.url));
        let progress = observer.begin(&format!("restoring {key}"), m.map_or(0, |m| m.size));
        let attempt = restore_into(self.storage.as_ref(), key, m, target, progress, cancel).await;
        observer.end();
        attempt
    }

    /// What is in a target now, and its server's major version (for a confirmation before
    /// `--clean`).
    ///
    /// # Errors
    /// When the target cannot be reached.
    pub async fn inspect_target(&self, url: &DbUrl) -> Result<(Contents, u32), OperatorError> {
        let mut conn = pg::connect(url).await?;
        let contents = pg::target::contents(&mut conn, url).await;
        let version = pg::server_version(&mut conn, url).await;
        pg::close(conn).await;
        Ok((contents?, version?.major))
    }

    /// Refuses a non-empty target unless `clean`; with `clean`, returns the preamble that empties
    /// it inside the restore's transaction, and what it will replace; and the target's major
    /// version.
    async fn prepare_target(&self, req: &RestoreRequest) -> Result<(String, Option<Contents>, u32), OperatorError> {
        let url = &req.target;
        let mut conn = pg::connect(url).await?;
        let major = pg::server_version(&mut conn, url).await?.major;
        let contents = pg::target::contents(&mut conn, url).await?;
        let result = if contents.is_empty() {
            Ok((String::new(), None, major))
        } else if contents.subscriptions > 0 {
            // Said first: --clean would not help.
            Err(RestoreFailure::TargetHasSubscriptions {
                database: url.database(),
                count: contents.subscriptions,
            }
            .into())
        } else if !req.clean {
            Err(RestoreFailure::TargetNotEmpty {
                database: url.database(),
                contents,
            }
            .into())
        } else {
            pg::target::clean_preamble(&mut conn, url)
                .await
                .map(|p| (p, Some(contents), major))
                .map_err(OperatorError::from)
        };
        pg::close(conn).await;
        result
    }
}

/// How each attempt of one restore runs.
struct How<'a> {
    /// SQL sent first in the restore's transaction (`--clean`'s statements).
    preamble: &'a str,
    /// The target server's major version.
    target_major: u32,
    /// The most one attempt may take.
    deadline: Option<Duration>,
    /// The database `--create` is building (the only kind a parallel restore may go into).
    building: Option<&'a Building>,
}

/// A dump restores only on a server at least as new as its source: a target older than that is
/// the environment's fault, which no older backup would fix.
pub(super) fn source_not_newer(key: &Key, m: &Manifest, target_major: u32) -> Result<(), RestoreFailure> {
    match pg::parse_version(&format!("x) {}", m.server_version)) {
        Some(source) if source.major > target_major => Err(RestoreFailure::Environment {
            key: key.to_string(),
            cause: format!(
                "the target server runs PostgreSQL {target_major}, older than the backup's source (PostgreSQL {source}); restore into PostgreSQL {} or newer",
                source.major
            ),
        }),
        _ => Ok(()),
    }
}

impl Operator {
    /// The psql that reads `key`'s dump (of its pg_dump's major version or newer, able to
    /// restrict itself), noting when that pg_dump lacked the fix for CVE-2025-8715.
    ///
    /// # Errors
    /// When no such psql is found.
    pub(super) async fn psql_for(&self, key: &Key, m: Option<&Manifest>, observer: &dyn Observer) -> Result<pg::Tool, OperatorError> {
        let dump_major = m
            .and_then(|m| pg::parse_version(&format!("x) {}", m.pg_dump_version)))
            .map_or(0, |v| v.major);
        let tool = find_psql(self.settings.tools.psql.as_deref(), dump_major).await?;
        if let Some(why) = m.and_then(|m| crate::infra::pg::psql::pg_dump_warning(&m.pg_dump_version)) {
            observer.note(&format!("warning: {key} was {why}"));
        }
        Ok(tool)
    }
}

/// What stopped an attempt before any verdict, in the operator's words.
pub(super) fn stopped(key: &str, e: RestoreError) -> RestoreFailure {
    let environment = |cause: String| RestoreFailure::Environment {
        key: key.to_string(),
        cause,
    };
    match e {
        RestoreError::Stream(StreamError::Cancelled) => RestoreFailure::Cancelled,
        RestoreError::Stream(StreamError::Storage(e)) => environment(format!("storage failed ({e}); when storage works again, run the same command")),
        RestoreError::Stream(StreamError::Key(why)) => environment(why),
        RestoreError::Pg(e) => environment(e.to_string()),
        e @ RestoreError::TimedOut(_) => environment(format!(
            "{e}; the target was left as it was. If the restore just needs longer, pass --timeout (or set VERIFY_TIMEOUT); if a statement of the backup kept it busy, the backup is suspect"
        )),
    }
}

/// Decides what an attempt means for the fallback (the rule is [`judge`], shared with the verify
/// service).
pub(super) async fn decide(key: &str, target: &DbUrl, attempt: Attempt) -> Result<Verdict, RestoreFailure> {
    let environment = |cause: String| RestoreFailure::Environment {
        key: key.to_string(),
        cause,
    };
    match judge(attempt, target).await {
        Judgement::Committed => Ok(Verdict::Done),
        Judgement::Backup(reasons) => Ok(Verdict::BackupAtFault(reasons.join("; "))),
        Judgement::EndedEarly(why) => Err(RestoreFailure::EndedEarly { key: key.to_string(), why }),
        Judgement::Environment(EnvironmentFault::CommitUnknown(failure)) => Err(RestoreFailure::CommitUnknown {
            key: key.to_string(),
            failure,
        }),
        Judgement::Environment(fault) => Err(environment(fault.to_string())),
    }
}
