//! One rule, for the verify service and `pgvigil restore` alike, for whom a restore attempt
//! blames: the backup (its bytes are not what was written, or a statement of the dump fails on a
//! server able to run it) or the environment (storage, the server, the role, what the server
//! lacks). Decided from typed outcomes and SQLSTATEs, never from message text.

use super::Attempt;
use crate::infra::pg::psql::Outcome;
use crate::infra::pg::{self, PgError, PsqlFailure};
use crate::infra::secret::DbUrl;

/// Why the environment, not the backup, stopped a restore.
#[derive(Debug, thiserror::Error)]
pub enum EnvironmentFault {
    /// psql failed for a reason that lies with the server, the role, or psql itself.
    #[error("{}", psql_message(.0))]
    Psql(PsqlFailure),
    /// psql failed before the dump's first statement (connecting, opening the transaction, or
    /// the preamble such as `--clean`'s statements).
    #[error("psql failed before the backup's first statement: {}", psql_message(.0))]
    NotStarted(PsqlFailure),
    /// The server lacks extensions the dump creates.
    #[error("the server lacks the extension(s) {} that the dump creates; install them there (e.g. the postgresql-contrib package, or the extension's own package)", .0.join(", "))]
    MissingExtensions(Vec<String>),
    /// The connection broke while the COMMIT was in flight and the server could not be asked.
    #[error("the server's answer to the restore's COMMIT was lost ({0})")]
    CommitUnknown(PsqlFailure),
    /// The server could not be asked what it lacks.
    #[error(transparent)]
    Pg(PgError),
}

impl EnvironmentFault {
    /// Whether a later retry may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            EnvironmentFault::Psql(f) | EnvironmentFault::NotStarted(f) => f.environment_cause().is_some_and(|c| c.is_transient()),
            EnvironmentFault::CommitUnknown(_) => true,
            EnvironmentFault::MissingExtensions(_) => false,
            EnvironmentFault::Pg(e) => e.is_retryable(),
        }
    }
}

/// A psql failure that blames the environment, with what to do about it.
fn psql_message(f: &PsqlFailure) -> String {
    match (f, f.environment_cause()) {
        (PsqlFailure::Statement { line, .. }, Some(cause)) => format!("the server could not restore the dump: {line} ({})", cause.advice()),
        _ => f.to_string(),
    }
}

/// Whom an attempt blames.
#[derive(Debug)]
pub enum Judgement {
    /// The restore committed.
    Committed,
    /// The backup is at fault, for these reasons.
    Backup(Vec<String>),
    /// The environment is at fault.
    Environment(EnvironmentFault),
    /// Something the backup sent ended pgvigil's transaction before its `COMMIT`: what it had
    /// sent until then is in the database. The backup is at fault (a backup of pg_dump's cannot
    /// do this past the gate).
    EndedEarly(String),
}

fn ended_early(f: &PsqlFailure) -> Judgement {
    Judgement::EndedEarly(format!(
        "the backup ended pgvigil's transaction before its COMMIT ({f}); what it had sent until then was committed"
    ))
}

/// Extensions of the dump that the server of `url` cannot provide.
async fn missing_extensions(url: &DbUrl, wanted: &[String]) -> Result<Vec<String>, PgError> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let mut conn = pg::connect(url).await?;
    let missing =
        sqlx::query_scalar("SELECT w FROM unnest($1::text[]) AS w WHERE w NOT IN (SELECT name FROM pg_available_extensions) ORDER BY 1")
            .bind(wanted)
            .fetch_all(&mut conn)
            .await
            .map_err(|e| pg::classify(url, &e));
    pg::close(conn).await;
    missing
}

/// Judges an attempt on the server of `url` (asked, on a fresh connection, what it lacks).
pub async fn judge(attempt: Attempt, url: &DbUrl) -> Judgement {
    // What the server did comes first: a transaction it reports as committed, or cannot account
    // for, is never "left as it was", whatever the object's integrity.
    match attempt.outcome {
        Outcome::EndedEarly(f) => return ended_early(&f),
        Outcome::Unknown(f) => return Judgement::Environment(EnvironmentFault::CommitUnknown(f)),
        Outcome::Committed if attempt.problems.is_empty() => return Judgement::Committed,
        Outcome::Committed => {
            return Judgement::Environment(EnvironmentFault::CommitUnknown(PsqlFailure::Other {
                status: "committed".into(),
                line: format!(
                    "the server committed although the object is damaged ({})",
                    attempt.problems.join("; ")
                ),
            }))
        }
        _ => {}
    }
    if !attempt.problems.is_empty() {
        return Judgement::Backup(attempt.problems);
    }
    let failure = match attempt.outcome {
        Outcome::Committed => return Judgement::Committed,
        Outcome::RolledBack(None) => return Judgement::Backup(vec!["the restore was rolled back".into()]),
        Outcome::NotStarted(f) => return Judgement::Environment(EnvironmentFault::NotStarted(f)),
        Outcome::Unknown(f) => return Judgement::Environment(EnvironmentFault::CommitUnknown(f)),
        Outcome::EndedEarly(f) => return ended_early(&f),
        Outcome::RolledBack(Some(f)) => f,
    };
    if let PsqlFailure::Statement { state: Some(state), line } = &failure {
        if state.0 == super::toc::MISSING {
            // pgvigil's own check before COMMIT: the restore is partial.
            let why = line.split_once(super::toc::MISSING).map_or(line.as_str(), |(_, r)| r);
            return Judgement::Backup(vec![why.trim_start_matches(':').trim().to_string()]);
        }
    }
    if let PsqlFailure::Statement { .. } = failure {
        // An extension the server lacks is the environment's fault, whatever SQLSTATE the server
        // version reports it with (0A000 from 15 on, 58P01 before).
        match missing_extensions(url, &attempt.report.scan.extensions).await {
            Ok(names) if !names.is_empty() => return Judgement::Environment(EnvironmentFault::MissingExtensions(names)),
            Ok(_) => {}
            Err(e) => return Judgement::Environment(EnvironmentFault::Pg(e)),
        }
        if failure.environment_cause().is_none() {
            return Judgement::Backup(vec![failure.to_string()]);
        }
    }
    Judgement::Environment(EnvironmentFault::Psql(failure))
}
