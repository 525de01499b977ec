//! Table tests of the error types: psql's failures typed by status and SQLSTATE, pg_dump's lock
//! timeouts, and which states blame the environment.

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
                    "DETAIL:  53100: another",
                    "CONTEXT:  COPY t, line 1, column a: \"ERROR:  53100: x\"",
                ],
            ),
            "Statement 22P02",
            None,
        ),
        // A warning with an error's state, then the error.
        (
            failure(
                Some(3),
                &[
                    "psql:<stdin>:4: WARNING:  53100: raised by a function of the dump",
                    "psql:<stdin>:9: ERROR:  23505: duplicate key value violates unique constraint",
                ],
            ),
            "Statement 23505",
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
        // A feature the server lacks: the backup's own code may raise it too, so it is not taken
        // for the environment's (docs/troubleshooting.md says what a missing lz4 or ICU looks like).
        ("0A000", None),
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
