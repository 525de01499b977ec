//! `psql` restoring a plain-SQL dump from its stdin, inside a transaction that pgvigil opens and
//! that only pgvigil ends.
//!
//! `psql --single-transaction` commits whenever its input ends — also when the process feeding it
//! dies halfway through, if the input happens to stop on a statement boundary. So pgvigil sends
//! `BEGIN` itself and `COMMIT` only when [`PsqlTransaction::commit`] is called (after the object's
//! integrity was proven). If pgvigil dies at any moment, by any signal, psql reaches the end of its
//! input without a `COMMIT`, and the server rolls the whole transaction back. Failures are typed by
//! [`PsqlFailure`].
//!
//! What the server did is not guessed from psql's exit status: psql (13 or newer) reports the
//! transaction's id when it opens it, and afterwards the server is asked (`txid_status`) whether
//! that transaction committed. A failure before pgvigil's own opening statements (and `--clean`'s)
//! finished is told apart from a failure of the dump's statements.

use super::{child_env, connect, find_tool, OwnedChild, PgError, PsqlFailure, Tool};
use crate::infra::secret::DbUrl;
use std::path::Path;
use tokio::io::AsyncWriteExt;
use tokio::process::ChildStdin;
use tokio_util::sync::CancellationToken;

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
    /// Nothing was committed; the failure says why (`None`: pgvigil rolled back on purpose).
    RolledBack(Option<PsqlFailure>),
    /// psql failed before the dump's first statement (connecting, opening the transaction, or
    /// `--clean`'s statements): nothing was committed, and the dump is not to blame.
    NotStarted(PsqlFailure),
    /// The server could not be asked whether the transaction committed (the connection broke
    /// while `COMMIT` was in flight, or psql is too old to report its transaction): the data may
    /// or may not be there.
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
    /// Where it restores to (to ask the server about the transaction afterwards).
    target: DbUrl,
    /// psql 13+ prints marker lines (`\warn`) naming the transaction and confirming the opening.
    markers: bool,
}

/// What the markers psql printed say.
struct Markers {
    /// The transaction id.
    xid: Option<i64>,
    /// pgvigil's opening statements (and the preamble) finished.
    opened: bool,
}

impl PsqlTransaction {
    /// Starts `psql` on `target`, stopping at the first error, opens the transaction, and sends
    /// `preamble` (e.g. the statements of `--clean`) inside it.
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
        let marker = super::child::MARKER;
        let mut opening = String::from("BEGIN;\n");
        if tx.markers {
            opening.push_str(&format!(
                "SELECT txid_current() AS pgvigil_xid \\gset\n\\warn {marker}xid :pgvigil_xid\n"
            ));
        }
        opening.push_str(preamble);
        if tx.markers {
            opening.push_str(&format!("\n\\warn {marker}opened\n"));
        }
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

    /// When psql stopped reading: waits for it and returns its failure if that failure lies with
    /// the environment (a lost connection, or pgvigil's own opening statements), so that the
    /// caller can stop reading the backup at once instead of to its end.
    pub async fn environment_failure(&mut self) -> Option<Outcome> {
        if !self.broken {
            return None;
        }
        self.stdin = None;
        let waited = tokio::time::timeout(std::time::Duration::from_secs(10), self.child.wait_in_place())
            .await
            .ok()?;
        let failure = PsqlFailure::from_tool(&waited.err()?);
        let opened = self.read_markers().opened || !self.markers;
        // Only a failure before the dump began, or one that will pass by itself (a lost
        // connection, a server restarting), stops the reading: for any other the object is read
        // to its end, so that a damaged backup is still called damaged.
        match failure.environment_cause() {
            _ if !opened => Some(Outcome::NotStarted(failure)),
            Some(cause) if cause.is_transient() => Some(Outcome::RolledBack(Some(failure))),
            _ => None,
        }
    }

    fn read_markers(&self) -> Markers {
        let all = self.child.markers();
        Markers {
            xid: all.iter().find_map(|m| m.strip_prefix("xid ").and_then(|x| x.trim().parse().ok())),
            opened: all.iter().any(|m| m == "opened"),
        }
    }

    /// Sends `COMMIT`, ends the input, waits for psql, and asks the server what became of the
    /// transaction. Shutdown (`cancel`) kills psql; the server is asked all the same.
    pub async fn commit(mut self, cancel: &CancellationToken) -> Outcome {
        let sent = !self.broken && !cancel.is_cancelled();
        if sent {
            self.write(b"COMMIT;\n").await;
        }
        self.stdin = None;
        let waited = tokio::select! {
            w = self.child.wait_in_place() => w,
            () = cancel.cancelled() => {
                self.child.kill().await;
                self.child.wait_in_place().await
            }
        };
        let markers = self.read_markers();
        let failure = waited.err().map(|f| PsqlFailure::from_tool(&f));
        if let Some(f) = &failure {
            if self.markers && !markers.opened {
                return Outcome::NotStarted(f.clone());
            }
        }
        match Self::ask_server(&self.target, markers.xid).await {
            Some(true) => Outcome::Committed,
            Some(false) => Outcome::RolledBack(failure),
            None => match failure {
                // No answer from the server: psql's own account is all there is.
                None if sent => Outcome::Committed,
                None => Outcome::RolledBack(None),
                Some(f) if !sent || matches!(f, PsqlFailure::Statement { .. }) => Outcome::RolledBack(Some(f)),
                Some(f) => Outcome::Unknown(f),
            },
        }
    }

    /// Whether the transaction `xid` committed, if the server can still say. A transaction whose
    /// session was just cut may still show as in progress for a moment: then ask again, briefly.
    async fn ask_server(target: &DbUrl, xid: Option<i64>) -> Option<bool> {
        let xid = xid?;
        let mut conn = connect(target).await.ok()?;
        let mut answer = None;
        for _ in 0..50 {
            let status: Option<String> = sqlx::query_scalar("SELECT txid_status($1)::text")
                .bind(xid)
                .fetch_one(&mut conn)
                .await
                .ok()?;
            answer = match status.as_deref() {
                Some("committed") => Some(true),
                Some("aborted") => Some(false),
                _ => None,
            };
            if answer.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        super::close(conn).await;
        answer
    }

    /// Abandons the transaction: psql is killed before its input ends, so nothing is committed.
    /// (Should the dump have ended the transaction early, the server says so.)
    pub async fn rollback(mut self) -> Outcome {
        self.child.kill().await;
        let _ = self.child.wait_in_place().await;
        match Self::ask_server(&self.target, self.read_markers().xid).await {
            Some(true) => Outcome::Unknown(PsqlFailure::Other {
                status: "was stopped by pgvigil".into(),
                line: "the server reports pgvigil's transaction as committed, although pgvigil never sent COMMIT".into(),
            }),
            _ => Outcome::RolledBack(None),
        }
    }
}
