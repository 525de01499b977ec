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
    /// one word (the server may speak another language: `FEHLER:`, `ERREUR:`); a notice or a
    /// warning (`NOTICE`, `WARNING`, … or a state of class 00, 01 or 02) is not an error. Only the
    /// start of the line counts: a message quoting the backup's text (`CONTEXT:  COPY t, line 1:
    /// "…"`) names no state. See [`Self::psql_error`] for which line to ask.
    pub fn in_psql_line(line: &str) -> Option<Self> {
        let line = Self::located(line).unwrap_or(line);
        let (severity, rest) = line.split_once(":  ")?;
        if severity.is_empty() || !severity.chars().all(char::is_alphabetic) {
            return None;
        }
        if matches!(
            severity,
            "NOTICE" | "WARNING" | "INFO" | "LOG" | "DEBUG" | "DETAIL" | "HINT" | "CONTEXT" | "LOCATION" | "STATEMENT" | "QUERY"
        ) {
            return None;
        }
        let code = rest.get(..5)?;
        let valid = code.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()) && rest[5..].starts_with(':');
        let state = SqlState(code.to_string());
        (valid && !matches!(state.class(), "00" | "01" | "02")).then_some(state)
    }

    /// What follows psql's location (`psql:<stdin>:12: `), when the line starts with one: psql
    /// puts it before each message it prints, never before the lines that continue a message.
    fn located(line: &str) -> Option<&str> {
        line.strip_prefix("psql:<stdin>:")?
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .strip_prefix(": ")
    }

    /// The state of psql's error among its output lines, and that line: psql stops at its first
    /// error (ON_ERROR_STOP), so the first line that states one, among those psql located; only
    /// if none is located, the first line at all. (What follows a message may quote the backup's
    /// own text, and so say anything.)
    pub fn psql_error(lines: &[String]) -> Option<(Self, &String)> {
        fn stated(l: &String) -> Option<(SqlState, &String)> {
            SqlState::in_psql_line(l).map(|s| (s, l))
        }
        lines
            .iter()
            .filter(|l| Self::located(l).is_some())
            .find_map(stated)
            .or_else(|| lines.iter().find_map(stated))
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
        let stated = SqlState::psql_error(&f.stderr);
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
#[path = "errors_tests.rs"]
mod tests;
