//! `psql` restoring a plain-SQL dump from its stdin, inside a transaction that pgvigil opens and
//! that only pgvigil ends.
//!
//! `psql --single-transaction` commits whenever its input ends — also when the process feeding it
//! dies halfway through, if the input happens to stop on a statement boundary. So pgvigil sends
//! `BEGIN` itself and `COMMIT` only when [`PsqlTransaction::commit`] is called (after the object's
//! integrity was proven). If pgvigil dies at any moment, by any signal, psql reaches the end of its
//! input without a `COMMIT`, and the server rolls the whole transaction back. Failures are typed by
//! [`PsqlFailure`].

use super::{child_env, connect, find_tool, OwnedChild, PgError, PsqlFailure, Tool};
use crate::infra::secret::DbUrl;
use std::path::Path;
use tokio::io::AsyncWriteExt;
use tokio::process::ChildStdin;

/// Picks a `psql` able to read a dump written by `pg_dump` of major `dump_major`.
///
/// # Errors
/// [`PgError::VersionSkew`] when only older ones exist.
pub async fn find_psql(explicit: Option<&Path>, dump_major: u32) -> Result<Tool, PgError> {
    find_tool(
        "psql",
        explicit,
        dump_major,
        &format!("restoring a dump written by pg_dump {dump_major}"),
    )
    .await
}

/// How a transaction ended, as far as the server is concerned.
#[derive(Debug)]
pub enum Outcome {
    /// `COMMIT` succeeded: everything sent is in the database.
    Committed,
    /// Nothing was committed; the failure says why (or `None` when pgvigil rolled back).
    RolledBack(Option<PsqlFailure>),
    /// The connection broke while `COMMIT` was in flight and the server could not be asked
    /// afterwards: the data may or may not be there.
    Unknown(PsqlFailure),
}

/// A restore in progress: psql reading from pgvigil inside pgvigil's own transaction.
#[derive(Debug)]
pub struct PsqlTransaction {
    /// The psql process; killed when dropped, which rolls the transaction back.
    child: OwnedChild,
    /// Its stdin, until it is closed.
    stdin: Option<ChildStdin>,
    /// psql stopped reading (it hit an error; its exit status says which).
    broken: bool,
    /// Where it restores to (to ask the server about a commit whose answer was lost).
    target: DbUrl,
    /// psql 13+ prints marker lines (`\warn`) that confirm the commit and name the transaction.
    markers: bool,
}

impl PsqlTransaction {
    /// Starts `psql` on `target`, stopping at the first error, and opens the transaction, then
    /// sends `preamble` (e.g. the statements of `--clean`) inside it.
    ///
    /// # Errors
    /// When psql cannot be started.
    pub async fn begin(psql: &Tool, target: &DbUrl, preamble: &str) -> Result<Self, PgError> {
        let args: Vec<String> = [
            "--no-psqlrc",
            "--quiet",
            "--no-password",
            "-v",
            "ON_ERROR_STOP=1",
            // Errors carry their SQLSTATE, so failures are classified by code, not by message text.
            "-v",
            "VERBOSITY=verbose",
        ]
        .iter()
        .map(|s| (*s).to_string())
        .collect();
        let child = OwnedChild::spawn("psql", &psql.path, &args, &child_env(target), true)
            .map_err(|e| PgError::Spawn(format!("cannot start {}: {e}", psql.path.display())))?;
        let mut tx = Self {
            stdin: None,
            child,
            broken: false,
            target: target.clone(),
            markers: psql.version.major >= 13,
        };
        tx.stdin = tx.child.take_stdin();
        let mut opening = String::from("BEGIN;\n");
        if tx.markers {
            // The transaction id, so that a commit whose answer was lost can be looked up.
            opening.push_str(&format!(
                "SELECT txid_current() AS pgvigil_xid \\gset\n\\warn {}xid :pgvigil_xid\n",
                super::child::MARKER
            ));
        }
        opening.push_str(preamble);
        tx.write(opening.as_bytes()).await;
        Ok(tx)
    }

    /// Sends SQL. A psql that stopped reading is not an error here: [`Self::commit`] reports why.
    pub async fn write(&mut self, data: &[u8]) {
        if self.broken {
            return;
        }
        if let Some(w) = self.stdin.as_mut() {
            if w.write_all(data).await.is_err() {
                self.broken = true;
            }
        }
    }

    /// Whether psql stopped reading early (it failed; [`Self::commit`] will say how).
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Sends `COMMIT`, ends the input and waits for psql. With psql 13 or newer the commit is
    /// confirmed by a marker psql prints only after `COMMIT` succeeded, and a commit whose answer
    /// was lost is looked up on the server by transaction id.
    pub async fn commit(mut self) -> Outcome {
        let sent = !self.broken;
        if sent {
            let commit = if self.markers {
                format!("COMMIT;\n\\warn {}committed\n", super::child::MARKER)
            } else {
                "COMMIT;\n".to_string()
            };
            self.write(commit.as_bytes()).await;
        }
        if let Some(mut w) = self.stdin.take() {
            let _ = w.shutdown().await;
        }
        let waited = self.child.wait_in_place().await;
        let markers = self.child.markers();
        let confirmed = markers.iter().any(|m| m == "committed");
        let xid = markers.iter().find_map(|m| m.strip_prefix("xid ").map(str::to_string));
        let failure = match waited {
            Ok(_) if confirmed || (sent && !self.markers) => return Outcome::Committed,
            Ok(_) => {
                return Outcome::RolledBack(Some(PsqlFailure::Other {
                    status: "exited before pgvigil's COMMIT".into(),
                    line: "the dump ended psql's session early (e.g. with \\q)".into(),
                }))
            }
            Err(_) if confirmed => return Outcome::Committed,
            Err(f) => PsqlFailure::from_tool(&f),
        };
        // A statement that failed (even COMMIT itself) aborted the transaction. Anything else after
        // COMMIT was sent — a lost connection, a killed psql — leaves the answer to the server.
        if !sent || matches!(failure, PsqlFailure::Statement { .. }) {
            return Outcome::RolledBack(Some(failure));
        }
        match Self::ask_server(&self.target, xid.as_deref()).await {
            Some(true) => Outcome::Committed,
            Some(false) => Outcome::RolledBack(Some(failure)),
            None => Outcome::Unknown(failure),
        }
    }

    /// Whether the transaction `xid` committed, if the server can still say.
    async fn ask_server(target: &DbUrl, xid: Option<&str>) -> Option<bool> {
        let xid: i64 = xid?.trim().parse().ok()?;
        let mut conn = connect(target).await.ok()?;
        let status: Option<String> = sqlx::query_scalar("SELECT txid_status($1)::text")
            .bind(xid)
            .fetch_one(&mut conn)
            .await
            .ok()?;
        super::close(conn).await;
        match status.as_deref() {
            Some("committed") => Some(true),
            Some("aborted") => Some(false),
            _ => None,
        }
    }

    /// Abandons the transaction: psql is killed before its input ends, so nothing is committed.
    pub async fn rollback(mut self) -> Outcome {
        self.child.kill().await;
        let _ = self.child.wait().await;
        Outcome::RolledBack(None)
    }
}
