//! Typed failures of PostgreSQL and its client tools, so that callers branch on kinds, never on
//! message text. A tool's stderr is parsed once, here, into these types.

use super::child::ToolFailure;
use std::fmt;

/// Errors talking to PostgreSQL or running its client tools.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// Could not connect or lost the connection; a later retry may help.
    #[error("{0}")]
    Unavailable(String),
    /// Wrong password, unknown role or database, missing permission: retrying will not help.
    #[error("{0}")]
    Rejected(String),
    /// A client tool is missing or too old for the server or the dump.
    #[error("{0}")]
    VersionSkew(String),
    /// A statement failed on the server.
    #[error("{message} (SQLSTATE {state})")]
    Sql {
        /// The server's SQLSTATE.
        state: SqlState,
        /// What the server said, naming the (redacted) server.
        message: String,
    },
    /// `pg_dump` failed.
    #[error(transparent)]
    Dump(#[from] DumpFailure),
    /// `psql` failed.
    #[error(transparent)]
    Psql(#[from] PsqlFailure),
    /// A client tool could not be started.
    #[error("{0}")]
    Spawn(String),
}

impl PgError {
    /// Whether a later retry may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            PgError::Unavailable(_) => true,
            PgError::Sql { state, .. } => state.environment_cause().is_some_and(|c| c.is_transient()),
            PgError::Dump(d) => d.is_retryable(),
            PgError::Psql(p) => matches!(p, PsqlFailure::ConnectionLost { .. }),
            PgError::Rejected(_) | PgError::VersionSkew(_) | PgError::Spawn(_) => false,
        }
    }
}

/// A five-character SQLSTATE such as `42P01`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SqlState(pub String);

impl fmt::Display for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A cause that lies with the server or its environment, not with the SQL that was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvironmentCause {
    /// Class 08: the connection failed or was lost.
    ConnectionLost,
    /// Class 57 (but 57014): the server is shutting down or restarting.
    ServerStopping,
    /// 57014: the statement was cancelled (statement_timeout, or by an administrator).
    StatementCancelled,
    /// 22023: a setting value the server does not accept (a tablespace, locale or access method
    /// that exists on the source but not here).
    UnknownSettingValue,
    /// 53100: the server's disk is full.
    DiskFull,
    /// 53200: out of memory, or out of shared memory (lock table full).
    OutOfMemory,
    /// 53300: too many connections.
    TooManyConnections,
    /// Any other class 53 (insufficient resources).
    Resources,
    /// 42501: the role lacks a privilege the statement needs.
    InsufficientPrivilege,
    /// Class 25 (e.g. 25006): the server refuses writes (a read-only replica, or
    /// `default_transaction_read_only`).
    ReadOnly,
    /// Classes 40 and 55 (deadlock, serialization failure, lock timeout, object in use): another
    /// session got in the way.
    Contention,
    /// 42P07/42710: the target already holds an object of the same name.
    AlreadyExists,
    /// 42704: the server lacks a global object the statement refers to (a role, a collation, a
    /// tablespace). pg_dump writes objects in dependency order, so a complete, intact dump never
    /// refers to an object of its own that does not exist yet.
    MissingGlobalObject,
    /// Class 58 or XX: an I/O or internal error of the server.
    ServerError,
}

impl EnvironmentCause {
    /// Whether waiting may make it go away by itself.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            EnvironmentCause::ConnectionLost
                | EnvironmentCause::ServerStopping
                | EnvironmentCause::TooManyConnections
                | EnvironmentCause::Contention
        )
    }

    /// What an operator should do about it, in plain words.
    pub fn advice(self) -> &'static str {
        match self {
            EnvironmentCause::ConnectionLost => "the connection to the server was lost; check that it is up and reachable",
            EnvironmentCause::ServerStopping => "the server was shutting down or restarting",
            EnvironmentCause::StatementCancelled => {
                "the statement was cancelled: a statement_timeout set for the role or database, or an administrator"
            }
            EnvironmentCause::UnknownSettingValue => {
                "the server lacks a tablespace, locale or access method the dump names; create it there, or leave it out of the dump"
            }
            EnvironmentCause::DiskFull => "the server's disk is full; free space on it",
            EnvironmentCause::OutOfMemory => {
                "the server ran out of memory or of shared memory for locks; raise max_locks_per_transaction (or give the server more memory)"
            }
            EnvironmentCause::TooManyConnections => "the server has too many connections; raise max_connections or wait",
            EnvironmentCause::Resources => "the server ran out of a resource",
            EnvironmentCause::InsufficientPrivilege => "the role lacks a privilege this needs",
            EnvironmentCause::ReadOnly => "the server accepts no writes (a read-only replica, or default_transaction_read_only)",
            EnvironmentCause::Contention => "another session got in the way (a lock, a deadlock, a conflict); try again",
            EnvironmentCause::AlreadyExists => "the target already holds an object of that name: restore into an empty database, or use --clean",
            EnvironmentCause::MissingGlobalObject => {
                "the server lacks a role, collation or tablespace the dump refers to; create it there first"
            }
            EnvironmentCause::ServerError => "the server hit an I/O or internal error; check its log",
        }
    }
}

impl SqlState {
    /// `42501`: the role lacks a privilege.
    pub const INSUFFICIENT_PRIVILEGE: &'static str = "42501";
    /// `42710`: the object (a role) exists already.
    pub const DUPLICATE_OBJECT: &'static str = "42710";
    /// `3D000`: no database of that name.
    pub const INVALID_CATALOG_NAME: &'static str = "3D000";
    /// `0A000`: a feature the server lacks (an extension not installed).
    pub const FEATURE_NOT_SUPPORTED: &'static str = "0A000";
    /// `58P01`: a file the server needs is missing (an extension's).
    pub const UNDEFINED_FILE: &'static str = "58P01";

    /// Whether a database error has the SQLSTATE `code` (one of the constants above).
    pub fn is(e: &sqlx::Error, code: &str) -> bool {
        Self::of(e).is_some_and(|s| s.0 == code)
    }

    /// The SQLSTATE of a database error, if it is one.
    pub fn of(e: &sqlx::Error) -> Option<Self> {
        e.as_database_error().and_then(|d| d.code()).map(|c| SqlState(c.into_owned()))
    }

    /// The two-character class.
    pub fn class(&self) -> &str {
        self.0.get(..2).unwrap_or("")
    }

    /// `Some` when the state blames the server or its environment rather than the statement.
    pub fn environment_cause(&self) -> Option<EnvironmentCause> {
        Some(match (self.class(), self.0.as_str()) {
            ("08", _) => EnvironmentCause::ConnectionLost,
            (_, "57014") => EnvironmentCause::StatementCancelled,
            ("57", _) => EnvironmentCause::ServerStopping,
            (_, "22023") => EnvironmentCause::UnknownSettingValue,
            (_, "53100") => EnvironmentCause::DiskFull,
            (_, "53200") => EnvironmentCause::OutOfMemory,
            (_, "53300") => EnvironmentCause::TooManyConnections,
            ("53", _) => EnvironmentCause::Resources,
            (_, "42501") => EnvironmentCause::InsufficientPrivilege,
            ("25", _) => EnvironmentCause::ReadOnly,
            ("40" | "55", _) => EnvironmentCause::Contention,
            (_, "42P07" | "42710") => EnvironmentCause::AlreadyExists,
            (_, "42704") => EnvironmentCause::MissingGlobalObject,
            ("58" | "XX", _) => EnvironmentCause::ServerError,
            _ => return None,
        })
    }

    /// The SQLSTATE of an error as psql prints it with `VERBOSITY=verbose`:
    /// `psql:<stdin>:12: ERROR:  42P01: …`, or the same without psql's location. The severity is
    /// any one word (the server may speak another language: `FEHLER:`, `ERREUR:`), and a notice
    /// or a warning (classes 00, 01, 02) is not an error. Only the start of the line counts: a
    /// message quoting the backup's text (`CONTEXT:  COPY t, line 1: "…"`) names no state.
    pub fn in_psql_line(line: &str) -> Option<Self> {
        let line = match line.strip_prefix("psql:<stdin>:") {
            Some(rest) => rest.trim_start_matches(|c: char| c.is_ascii_digit()).strip_prefix(": ")?,
            None => line,
        };
        let (severity, rest) = line.split_once(":  ")?;
        if severity.is_empty() || !severity.chars().all(char::is_alphabetic) {
            return None;
        }
        let code = rest.get(..5)?;
        let valid = code.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()) && rest[5..].starts_with(':');
        let state = SqlState(code.to_string());
        (valid && !matches!(state.class(), "00" | "01" | "02")).then_some(state)
    }
}

/// How `pg_dump` failed.
#[derive(Debug, thiserror::Error)]
pub enum DumpFailure {
    /// It refused to dump a newer server.
    #[error("pg_dump is older than the database server: {detail}")]
    VersionMismatch {
        /// pg_dump's own explanation.
        detail: String,
    },
    /// It gave up waiting for a table lock (`--lock-wait-timeout`, from PG_DUMP_LOCK_WAIT_TIMEOUT).
    #[error(
        "pg_dump could not lock {table} within PG_DUMP_LOCK_WAIT_TIMEOUT: another session holds a conflicting lock (a migration or a long transaction?); the backup is retried, and it gave up rather than queue the application's queries behind it"
    )]
    LockTimeout {
        /// The table it waited for, as pg_dump named it.
        table: String,
    },
    /// It ended with an error.
    #[error("{0}")]
    Failed(ToolFailure),
}

impl DumpFailure {
    /// Parses a failed run.
    pub fn from_tool(f: ToolFailure) -> Self {
        match f.stderr.iter().find(|l| l.contains("server version mismatch")) {
            Some(_) => DumpFailure::VersionMismatch {
                detail: f
                    .stderr
                    .iter()
                    .find(|l| l.contains("version"))
                    .cloned()
                    .unwrap_or_else(|| f.stderr.join(" ")),
            },
            None => match lock_wait_gave_up(&f.stderr) {
                Some(table) => DumpFailure::LockTimeout { table },
                None => DumpFailure::Failed(f),
            },
        }
    }

    /// Whether a retry may help (a crash, a lost connection or a lock may; a version mismatch
    /// will not).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, DumpFailure::VersionMismatch { .. })
    }
}

/// pg_dump's `--lock-wait-timeout` is a statement timeout around `LOCK TABLE`: the table it gave
/// up on, from `Query was: LOCK TABLE t IN ACCESS SHARE MODE`.
fn lock_wait_gave_up(stderr: &[String]) -> Option<String> {
    if !stderr.iter().any(|l| l.contains("canceling statement due to statement timeout")) {
        return None;
    }
    // `detail: Query was: …` (pg_dump 15+) or `error: query was: …` (older).
    stderr.iter().find_map(|l| {
        let at = l.to_ascii_lowercase().find("query was: lock table ")?;
        let rest = &l[at + "query was: lock table ".len()..];
        let tables = rest.rsplit_once(" IN ").map_or(rest, |(t, _)| t).trim();
        // A pg_dump that locks in batches names several: any of them may be the one.
        Some(match tables.split_once(", ") {
            Some(_) => format!("one of the tables {}", tables.chars().take(200).collect::<String>()),
            None => tables.to_string(),
        })
    })
}

/// How `psql` failed while restoring a dump.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PsqlFailure {
    /// psql could not connect or lost its connection (exit status 2).
    #[error("psql lost its connection to the server: {line}")]
    ConnectionLost {
        /// The line psql printed.
        line: String,
    },
    /// A statement failed (exit status 3 with `ON_ERROR_STOP`).
    #[error("the dump failed to restore: {line}")]
    Statement {
        /// The SQLSTATE, when psql printed one.
        state: Option<SqlState>,
        /// The error line psql printed.
        line: String,
    },
    /// psql ended in any other way (killed, a fatal start-up error).
    #[error("psql {status}: {line}")]
    Other {
        /// How it ended.
        status: String,
        /// Its last error line.
        line: String,
    },
}

impl PsqlFailure {
    /// Parses a failed run (exit 3: an SQL error; 2: connection lost).
    pub fn from_tool(f: &ToolFailure) -> Self {
        // psql stops at its first error (ON_ERROR_STOP): the first line that states one is it.
        // What follows may quote the backup's own text, and so say anything.
        let stated = f.stderr.iter().find_map(|l| SqlState::in_psql_line(l).map(|s| (s, l)));
        let error_line = stated
            .as_ref()
            .map(|(_, l)| *l)
            .or_else(|| {
                f.stderr
                    .iter()
                    .rev()
                    .find(|l| l.contains("ERROR") || l.contains("FATAL") || l.contains("error:"))
            })
            .or(f.stderr.last())
            .cloned()
            .unwrap_or_default();
        match f.code {
            Some(3) => PsqlFailure::Statement {
                state: stated.map(|(s, _)| s),
                line: error_line,
            },
            Some(2) => PsqlFailure::ConnectionLost { line: error_line },
            _ => PsqlFailure::Other {
                status: f.status.clone(),
                line: error_line,
            },
        }
    }

    /// `Some` when the failure lies with the server, the client or the role, not with the dump.
    pub fn environment_cause(&self) -> Option<EnvironmentCause> {
        match self {
            PsqlFailure::ConnectionLost { .. } => Some(EnvironmentCause::ConnectionLost),
            PsqlFailure::Statement { state, .. } => state.as_ref().and_then(SqlState::environment_cause),
            PsqlFailure::Other { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: Option<i32>, stderr: &[&str]) -> ToolFailure {
        ToolFailure {
            tool: "psql".into(),
            status: code.map_or("was killed by signal 9".into(), |c| format!("exited with status {c}")),
            stderr: stderr.iter().map(|s| (*s).to_string()).collect(),
            code,
        }
    }

    #[test]
    fn psql_failures_are_typed_from_status_and_sqlstate() {
        let cases: Vec<(ToolFailure, &str, Option<EnvironmentCause>)> = vec![
            (
                failure(Some(3), &["ERROR:  42883: function f() does not exist", "LOCATION:  x.c:1"]),
                "Statement 42883",
                None,
            ),
            (
                failure(
                    Some(3),
                    &["psql:<stdin>:9: ERROR:  53100: could not extend file: No space left on device"],
                ),
                "Statement 53100",
                Some(EnvironmentCause::DiskFull),
            ),
            (
                failure(Some(3), &["ERROR:  53200: out of shared memory"]),
                "Statement 53200",
                Some(EnvironmentCause::OutOfMemory),
            ),
            (
                failure(Some(3), &["ERROR:  57P01: terminating connection due to administrator command"]),
                "Statement 57P01",
                Some(EnvironmentCause::ServerStopping),
            ),
            (
                failure(Some(2), &["server closed the connection unexpectedly"]),
                "ConnectionLost",
                Some(EnvironmentCause::ConnectionLost),
            ),
            // Text a backup can make psql print says nothing about psql itself (its version is
            // checked before it runs).
            (
                failure(Some(3), &["psql:<stdin>:3: error: invalid command \\restrict"]),
                "Statement -",
                None,
            ),
            (failure(None, &[]), "Other", None),
            // The server speaks German: the state is read all the same.
            (
                failure(Some(3), &["psql:<stdin>:9: FEHLER:  53100: konnte Datei nicht erweitern"]),
                "Statement 53100",
                Some(EnvironmentCause::DiskFull),
            ),
            // A row quoted after the real error cannot pass for another one; a warning before it
            // is not the error.
            (
                failure(
                    Some(3),
                    &[
                        "psql:<stdin>:4: WARNING:  01000: something the dump set",
                        "psql:<stdin>:9: ERROR:  22P02: invalid input syntax for type integer: \"x\"",
                        "ERROR:  53100: a line of the backup's own text",
                        "CONTEXT:  COPY t, line 1, column a: \"ERROR:  53100: x\"",
                    ],
                ),
                "Statement 22P02",
                None,
            ),
        ];
        for (f, want, cause) in cases {
            let p = PsqlFailure::from_tool(&f);
            let got = match &p {
                PsqlFailure::Statement { state, .. } => format!("Statement {}", state.as_ref().map_or("-", |s| s.0.as_str())),
                PsqlFailure::ConnectionLost { .. } => "ConnectionLost".into(),
                PsqlFailure::Other { .. } => "Other".into(),
            };
            assert_eq!(got, want, "{f:?}");
            assert_eq!(p.environment_cause(), cause, "{f:?}");
        }
    }

    #[test]
    fn a_lock_wait_timeout_names_the_table() {
        let f = failure(
            Some(1),
            &[
                "pg_dump: error: query failed: ERROR:  canceling statement due to statement timeout",
                "pg_dump: detail: Query was: LOCK TABLE public.\"Odd Name\" IN ACCESS SHARE MODE",
            ],
        );
        match DumpFailure::from_tool(f) {
            DumpFailure::LockTimeout { table } => assert_eq!(table, "public.\"Odd Name\""),
            other => panic!("{other:?}"),
        }
        let f = failure(
            Some(1),
            &["pg_dump: error: query failed: ERROR:  canceling statement due to statement timeout"],
        );
        assert!(matches!(DumpFailure::from_tool(f), DumpFailure::Failed(_)));
    }

    #[test]
    fn sqlstates_blame_the_environment_by_class() {
        let cases = [
            ("08006", Some(EnvironmentCause::ConnectionLost)),
            ("57014", Some(EnvironmentCause::StatementCancelled)),
            ("57P01", Some(EnvironmentCause::ServerStopping)),
            ("22023", Some(EnvironmentCause::UnknownSettingValue)),
            ("22P02", None),
            ("53100", Some(EnvironmentCause::DiskFull)),
            ("53400", Some(EnvironmentCause::Resources)),
            ("42501", Some(EnvironmentCause::InsufficientPrivilege)),
            ("XX001", Some(EnvironmentCause::ServerError)),
            ("42704", Some(EnvironmentCause::MissingGlobalObject)),
            ("25006", Some(EnvironmentCause::ReadOnly)),
            ("40P01", Some(EnvironmentCause::Contention)),
            ("55P03", Some(EnvironmentCause::Contention)),
            ("42710", Some(EnvironmentCause::AlreadyExists)),
            ("42P01", None),
            ("23505", None),
            ("22P02", None),
        ];
        for (code, want) in cases {
            assert_eq!(SqlState(code.into()).environment_cause(), want, "{code}");
        }
        assert_eq!(SqlState::in_psql_line("ERROR:  syntax error at or near"), None);
        assert_eq!(SqlState::in_psql_line("CONTEXT:  COPY t, line 1: \"ERROR:  53100: x\""), None);
        assert_eq!(SqlState::in_psql_line("psql:<stdin>:3: NOTICE:  00000: nothing"), None);
        assert_eq!(
            SqlState::in_psql_line("ОШИБКА:  42P01: отношение не существует"),
            Some(SqlState("42P01".into()))
        );
        assert_eq!(
            SqlState::in_psql_line("psql:<stdin>:12: FATAL:  57P01: terminating"),
            Some(SqlState("57P01".into()))
        );
    }
}
