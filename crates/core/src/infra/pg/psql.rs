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
//!
//! Before the first byte of the backup, psql is restricted (`\restrict` with a random key that
//! never appears in the stream): from then on it refuses every psql command, so nothing in a
//! backup can run on the host. pgvigil's own closing commands come after its `\unrestrict`.
//! A psql without `\restrict` (older than 13.22, 14.19, 15.14, 16.10, 17.6) is refused.

use super::{child_env, connect, find_tool, OwnedChild, PgError, PgVersion, PsqlFailure, Tool};
use crate::infra::secret::DbUrl;
use std::path::Path;
use tokio::io::AsyncWriteExt;
use tokio::process::ChildStdin;
use tokio_util::sync::CancellationToken;

/// Picks a `psql` able to read a dump written by `pg_dump` of major `dump_major`, and able to
/// restrict itself (`\restrict`).
///
/// # Errors
/// [`PgError::VersionSkew`] when only older ones exist, or the one found cannot restrict itself.
pub async fn find_psql(explicit: Option<&Path>, dump_major: u32) -> Result<Tool, PgError> {
    let tool = find_tool(
        "psql",
        explicit,
        dump_major,
        &format!("restoring a dump written by pg_dump {dump_major}"),
    )
    .await?;
    if !has_restrict(tool.version) {
        return Err(PgError::VersionSkew(format!(
            "{} is psql {}, which cannot refuse the psql commands a tampered backup may hold (\\restrict); restoring needs psql {RESTRICT_RELEASES} or newer within its major version, or 18 and later",
            tool.path.display(),
            tool.version
        )));
    }
    Ok(tool)
}

/// The first releases of each major version with `\restrict` (and the pg_dump fix for
/// CVE-2025-8715).
pub const RESTRICT_RELEASES: &str = "13.22, 14.19, 15.14, 16.10, 17.6";

/// Whether a psql (or pg_dump) of this version has `\restrict` (CVE-2025-8714, CVE-2025-8715).
pub fn has_restrict(v: PgVersion) -> bool {
    match v.major {
        0..=12 => false,
        13 => v.minor >= 22,
        14 => v.minor >= 19,
        15 => v.minor >= 14,
        16 => v.minor >= 10,
        17 => v.minor >= 6,
        _ => true,
    }
}

/// A warning for a backup taken by a pg_dump without the fix for CVE-2025-8715 (object names with
/// line breaks could place statements in the dump), or `None`.
pub fn pg_dump_warning(version: &str) -> Option<String> {
    let v = super::parse_version(&format!("x) {version}"))?;
    (!has_restrict(v)).then(|| {
        format!(
            "taken by pg_dump {v}, which lacks the fix for CVE-2025-8715 (an object name with a line break could place statements in the dump; pgvigil's gate still judges every one): upgrade the backup host's PostgreSQL client to {RESTRICT_RELEASES} or newer"
        )
    })
}

/// A random key for `\restrict` (letters and digits, as psql requires).
fn restrict_key() -> String {
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
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
    /// The transaction committed before pgvigil's own `COMMIT`: something the restore sent ended
    /// it early, and what had been sent until then is in the database.
    EndedEarly(PsqlFailure),
}

/// Why an early end is reported, when psql itself said nothing.
fn ended_early_without_failure() -> PsqlFailure {
    PsqlFailure::Other {
        status: "was stopped by pgvigil".into(),
        line: "pgvigil's transaction had ended before its COMMIT; statements after that were committed on their own".into(),
    }
}

/// A restore in progress: psql reading from pgvigil inside pgvigil's own transaction. (No
/// `Debug`: it holds the `\restrict` key.)
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
    /// The key of pgvigil's `\restrict`, to lift it for pgvigil's own closing commands.
    restrict_key: String,
    /// pgvigil's `COMMIT` was sent.
    commit_sent: bool,
}

/// What the markers psql printed say.
struct Markers {
    /// The transaction id.
    xid: Option<i64>,
    /// The server process of psql's session.
    pid: Option<i32>,
    /// pgvigil's opening statements (and the preamble) finished.
    opened: bool,
    /// pgvigil's closing found its transaction already ended.
    ended: bool,
    /// pgvigil's closing found its transaction still open, its guard passed, and COMMIT was next.
    committing: bool,
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
            restrict_key: restrict_key(),
            commit_sent: false,
        };
        tx.stdin = tx.child.take_stdin();
        let marker = tx.child.marker().to_string();
        // The lexing settings are pinned before anything of the backup arrives: the gate read it
        // with standard_conforming_strings on and a client encoding psql reads like the server.
        let mut opening = String::from("BEGIN;\nSET standard_conforming_strings = on;\nSET client_encoding = 'UTF8';\n");
        if tx.markers {
            opening.push_str(&format!(
                "SELECT txid_current() AS pgvigil_xid, pg_backend_pid() AS pgvigil_pid \\gset\n\\warn {marker}xid :pgvigil_xid\n\\warn {marker}pid :pgvigil_pid\n\\unset pgvigil_pid\n"
            ));
        }
        opening.push_str(preamble);
        if tx.markers {
            opening.push_str(&format!("\n\\warn {marker}opened\n"));
        }
        // From here on psql runs no psql command but pgvigil's `\unrestrict` (CVE-2025-8714).
        opening.push_str(&format!("\n\\restrict {}\n", tx.restrict_key));
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
            // Whatever ended the session, the server says whether the transaction survived it.
            Some(cause) if cause.is_transient() => match Self::ask_server(&self.target, self.read_markers().xid).await {
                Some(true) => Some(Outcome::EndedEarly(failure)),
                _ => Some(Outcome::RolledBack(Some(failure))),
            },
            _ => None,
        }
    }

    fn read_markers(&self) -> Markers {
        let all = self.child.markers();
        Markers {
            xid: all.iter().find_map(|m| m.strip_prefix("xid ").and_then(|x| x.trim().parse().ok())),
            pid: all.iter().find_map(|m| m.strip_prefix("pid ").and_then(|x| x.trim().parse().ok())),
            opened: all.iter().any(|m| m == "opened"),
            ended: all.iter().any(|m| m == "ended"),
            committing: all.iter().any(|m| m == "committing"),
        }
    }

    /// Sends `guard` (pgvigil's own last check, which fails the transaction when the restore is
    /// incomplete) and `COMMIT`, ends the input, waits for psql, and asks the server what became
    /// of the transaction. Shutdown (`cancel`) kills psql; the server is asked all the same.
    pub async fn commit(&mut self, guard: Option<&str>, cancel: &CancellationToken) -> Outcome {
        let sent = !self.broken && !cancel.is_cancelled();
        if sent {
            // Still inside pgvigil's own transaction? (`pgvigil_xid` is psql's variable from the
            // opening, which the gate lets no backup refer to.) After an early end the rest ran
            // in transactions of their own: then nothing is committed and psql says so. Every
            // name is qualified: the dump may have set a search_path with its own `=` first.
            let marker = self.child.marker().to_string();
            let closing = format!(
                "\\unrestrict {key}\nSELECT pg_catalog.int8eq(pg_catalog.txid_current(), CAST(:pgvigil_xid AS pg_catalog.int8)) AS pgvigil_open \\gset\n\\if :pgvigil_open\n{guard}\\warn {marker}committing\nCOMMIT;\n\\else\n\\warn {marker}ended\n\\endif\n",
                key = self.restrict_key,
                guard = guard.unwrap_or("")
            );
            self.write(closing.as_bytes()).await;
            self.commit_sent = true;
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
        if markers.ended {
            // Whatever the server says of the transaction's id (committed or rolled back), what
            // followed the early end was committed on its own.
            return Outcome::EndedEarly(failure.unwrap_or_else(ended_early_without_failure));
        }
        match Self::ask_server(&self.target, markers.xid).await {
            // Committed, and by pgvigil's own COMMIT only if the closing found the transaction
            // still open and reached it (psql may then have lost the answer to the COMMIT).
            Some(true) if sent && markers.committing => Outcome::Committed,
            Some(true) => Outcome::EndedEarly(failure.unwrap_or_else(ended_early_without_failure)),
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

    /// Ends the server process `pid` of psql's session (best effort: the role may end its own).
    async fn terminate(target: &DbUrl, pid: i32) {
        let Ok(mut conn) = connect(target).await else { return };
        let _ = sqlx::query("SELECT pg_terminate_backend($1, 10000)")
            .bind(pid)
            .execute(&mut conn)
            .await;
        super::close(conn).await;
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

    /// Abandons the transaction: psql is killed before its input ends, and its server process
    /// is ended too (a statement of the backup may keep it busy long after psql is gone, holding
    /// its locks), so nothing is committed and nothing stays locked. (Should the dump have ended
    /// the transaction early, the server says so.)
    pub async fn rollback(&mut self) -> Outcome {
        self.child.kill().await;
        let _ = self.child.wait_in_place().await;
        let markers = self.read_markers();
        if let Some(pid) = markers.pid {
            Self::terminate(&self.target, pid).await;
        }
        match Self::ask_server(&self.target, markers.xid).await {
            // Stopped while its own COMMIT was in flight, and that COMMIT went through: only if
            // the closing found its transaction still open and reached the COMMIT (as in
            // `commit`); otherwise what committed was ended early by the restore itself.
            Some(true) if self.commit_sent && markers.committing && !markers.ended => Outcome::Committed,
            Some(true) => Outcome::EndedEarly(ended_early_without_failure()),
            Some(false) => Outcome::RolledBack(None),
            None if self.commit_sent => Outcome::Unknown(PsqlFailure::Other {
                status: "was stopped by pgvigil".into(),
                line: "stopped while its COMMIT was in flight, and the server could not be asked afterwards".into(),
            }),
            // psql was stopped before pgvigil's COMMIT: only an early end could have committed
            // anything, and the gate lets no statement through that ends a transaction.
            None => Outcome::RolledBack(None),
        }
    }
}
