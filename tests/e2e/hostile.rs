//! A backup is data, never code. Tampered objects, with manifests that match them (what anyone
//! holding the backup service's own S3 key could write), are planted in the test S3 server and
//! run through the real binaries: `pgvigil-verify --once`, `pgvigil restore` and
//! `pgvigil restore --clean`. For every one, no canary file ever appears on the host, the
//! verification fails with a specific reason (never success), and both restores exit non-zero
//! and leave the target exactly as it was.

use bytes::Bytes;
use pgvigil_core::infra::storage::{self, DynStorage, Key};
use pgvigil_core::pipeline::backup::{self, BackupOutcome};
use pgvigil_core::records::keys::{BackupId, Layout};
use pgvigil_core::records::manifest::{self, Manifest};
use pgvigil_e2e::fixtures;
use pgvigil_e2e::fixtures::{context, gzip};
use pgvigil_e2e::lines;
use pgvigil_e2e::run::{run, text};
use pgvigil_e2e::{init_logs, sample, PgServer, S3Server};
use sha2::Digest;
use tokio_util::sync::CancellationToken;

/// One tampered backup: how it is made from the honest dump, and what the verdict must say.
struct Case {
    /// Short name (also the prefix it is planted under).
    name: &'static str,
    /// The tampered dump, from the honest one and the canary's path.
    make: fn(&str, &str) -> String,
    /// What the verdict must contain.
    why: &'static str,
}

/// The honest dump with `text` inserted before the closing comment lines.
fn appended(sql: &str, text: &str) -> String {
    let at = sql.rfind("\n--\n-- PostgreSQL database dump complete").expect("a complete dump");
    format!("{}\n{text}\n{}", &sql[..at], &sql[at..])
}

/// The honest dump with `text` right after its first `CREATE SCHEMA sales;`.
fn early(sql: &str, text: &str) -> String {
    let out = sql.replacen("CREATE SCHEMA sales;\n", &format!("CREATE SCHEMA sales;\n{text}\n"), 1);
    assert_ne!(out, sql);
    out
}

/// A source, one honest backup of it, and its dump as text.
struct Bench {
    pg: PgServer,
    s3: S3Server,
    st: DynStorage,
    honest: BackupOutcome,
    sql: String,
    canaries: tempfile::TempDir,
}

async fn bench() -> Bench {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 50).await;
    let s3 = S3Server::start().await;
    let ctx = context(&pg, "app", s3.vars("honest"), &[]).await;
    let honest = backup::run_once(&ctx, &CancellationToken::new()).await.unwrap();
    let object = storage::get_bytes(
        ctx.storage.as_ref(),
        &Key::new(honest.manifest.key.clone()).unwrap(),
        u64::MAX,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    let sql = fixtures::gunzip(&object);
    let canaries = tempfile::tempdir().unwrap();
    // The server (running as `postgres`) must be able to create a canary there, were it asked to.
    std::process::Command::new("chmod")
        .arg("777")
        .arg(canaries.path())
        .status()
        .unwrap();
    pg.create_db("target").await;
    pg.exec(
        "target",
        "CREATE TABLE precious (id int PRIMARY KEY); INSERT INTO precious VALUES (1), (2), (3);",
    )
    .await;
    Bench {
        pg,
        s3,
        st: ctx.storage,
        honest,
        sql,
        canaries,
    }
}

/// Plants `sql` under `prefix` as its newest backup, with a manifest that matches it exactly.
async fn plant(b: &Bench, prefix: &str, id: BackupId, sql: &str) {
    let data = gzip(sql);
    let layout = Layout::new(prefix);
    let key = layout.backup(id);
    let m = Manifest {
        key: key.to_string(),
        size: data.len() as u64,
        sha256: hex::encode(sha2::Sha256::digest(&data)),
        uncompressed_size: sql.len() as u64,
        started_at: id.0,
        finished_at: id.0,
        table_members: Vec::new(),
        globals: None,
        ..b.honest.manifest.clone()
    };
    let never = CancellationToken::new();
    storage::put_bytes(b.st.as_ref(), &key, Bytes::from(data), &never).await.unwrap();
    manifest::write(b.st.as_ref(), &layout, id, &m, None, &never).await.unwrap();
}

/// The target's tables and every row of `precious`, to compare before and after.
async fn target_state(pg: &PgServer) -> (Vec<String>, Vec<i32>) {
    let mut c = pg.connect("target").await;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') ORDER BY 1",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    let rows: Vec<i32> = sqlx::query_scalar("SELECT id FROM precious ORDER BY 1")
        .fetch_all(&mut c)
        .await
        .unwrap();
    (tables, rows)
}

/// Runs the three binaries on one planted case and checks what each did.
async fn judge(b: &Bench, case: &Case, extra: &[(&'static str, String)]) {
    let canary = b.canaries.path().join(case.name);
    let sql = (case.make)(&b.sql, &canary.display().to_string());
    plant(b, case.name, BackupId::at(chrono::Utc::now() - chrono::Duration::minutes(1)), &sql).await;
    let before = target_state(&b.pg).await;
    let mut vars = b.s3.vars(case.name);
    vars.push(("VERIFY_DATABASE_URL", b.pg.url("postgres")));
    vars.push(("RESTORE_DATABASE_URL", b.pg.url("target")));
    vars.extend(extra.iter().cloned());

    let v = run("pgvigil-verify", &["--once"], &vars).await;
    let t = text(&v);
    assert!(
        t.contains(lines::VERIFY_FAILED) && t.contains(case.why),
        "{}: the verdict must fail naming {:?}:\n{t}",
        case.name,
        case.why
    );
    assert!(!t.contains("completed successfully"), "{}:\n{t}", case.name);

    for args in [
        &["restore", "--fallback", "0"][..],
        &["restore", "--clean", "--yes", "--fallback", "0"],
    ] {
        let r = run("pgvigil", args, &vars).await;
        let t = text(&r);
        assert_ne!(r.status.code(), Some(0), "{} {args:?} must fail:\n{t}", case.name);
        assert!(!t.lines().any(|l| l.starts_with("restored ")), "{} {args:?}:\n{t}", case.name);
        assert_eq!(target_state(&b.pg).await, before, "{} {args:?} changed the target:\n{t}", case.name);
    }
    assert!(!canary.exists(), "{}: the canary appeared on the host", case.name);
}

const PSQL_COMMANDS: &[Case] = &[
    Case {
        name: "bang",
        make: |sql, canary| appended(sql, &format!("\\! touch {canary}")),
        why: "psql command \\!",
    },
    Case {
        name: "bang-after-statement",
        make: |sql, canary| appended(sql, &format!("SET row_security = off; \\! touch {canary}")),
        why: "psql command",
    },
    Case {
        name: "bang-mid-statement",
        make: |sql, canary| early(sql, &format!("CREATE TABLE public.x (\n a int \\! touch {canary}\n);")),
        why: "psql command",
    },
    Case {
        name: "gexec",
        make: |sql, canary| appended(sql, &format!("SELECT 'COPY (SELECT 1) TO PROGRAM ''touch {canary}''' \\gexec")),
        why: "psql command",
    },
    Case {
        name: "copy-to-file",
        make: |sql, canary| appended(sql, &format!("\\copy public.customers to '{canary}'")),
        why: "psql command \\copy",
    },
    Case {
        name: "output",
        make: |sql, canary| early(sql, &format!("\\o {canary}")),
        why: "psql command \\o",
    },
    Case {
        name: "copy-end-cr",
        make: |sql, canary| {
            let out = sql.replacen("\n\\.\n", &format!("\n\\.\r\n\\! touch {canary}\n\\.\n"), 1);
            assert_ne!(out, sql);
            out
        },
        why: "carriage return",
    },
    Case {
        name: "second-restrict",
        make: |sql, canary| appended(sql, &format!("\\restrict abc\n\\! touch {canary}")),
        why: "psql command",
    },
    Case {
        name: "variable",
        make: |sql, _| appended(sql, "CREATE VIEW public.v AS SELECT :'VERSION'::text AS v;"),
        why: "psql variable VERSION",
    },
    Case {
        name: "strings-off",
        make: |sql, canary| {
            early(
                sql,
                &format!("SET standard_conforming_strings = off;\nCOMMENT ON TABLE public.customers IS 'a\\' \\! touch {canary} --';"),
            )
        },
        why: "standard_conforming_strings",
    },
    Case {
        name: "sjis",
        make: |sql, _| early(sql, "SET client_encoding = 'SJIS';"),
        why: "client_encoding",
    },
    Case {
        name: "nul",
        make: |sql, _| early(sql, "COMMENT ON TABLE public.customers IS 'a\0b';"),
        why: "NUL byte",
    },
];

const ESCAPES: &[Case] = &[
    Case {
        name: "commit",
        make: |sql, _| early(sql, "COMMIT;"),
        why: "transaction control",
    },
    Case {
        name: "end",
        make: |sql, _| early(sql, "END;"),
        why: "transaction control",
    },
    Case {
        name: "commit-second-on-line",
        make: |sql, _| early(sql, "SET row_security = off; commit ;"),
        why: "transaction control",
    },
    Case {
        name: "commit-in-comment-position",
        make: |sql, _| early(sql, "/* x */ COMMIT /* y */;"),
        why: "transaction control",
    },
    Case {
        name: "rollback",
        make: |sql, _| appended(sql, "ROLLBACK;"),
        why: "ROLLBACK",
    },
    Case {
        name: "chain",
        make: |sql, _| early(sql, "COMMIT AND CHAIN;"),
        why: "COMMIT AND CHAIN",
    },
    Case {
        name: "prepare",
        make: |sql, _| early(sql, "PREPARE TRANSACTION 'x';"),
        why: "PREPARE TRANSACTION",
    },
    Case {
        name: "start",
        make: |sql, _| early(sql, "START TRANSACTION;"),
        why: "BEGIN or START",
    },
    Case {
        name: "begin-twice",
        make: |sql, _| early(sql, "BEGIN;\nBEGIN;"),
        why: "transaction control",
    },
    Case {
        name: "routine-named-begin",
        make: |sql, canary| {
            let out = sql.replacen(
                "\nCOPY ",
                &format!("\nCREATE FUNCTION public.begin() RETURNS integer LANGUAGE sql AS $$SELECT 1$$;\nCOPY public.customers (id) FROM stdin;\nend; COMMIT; COPY (SELECT 1) TO PROGRAM 'touch {canary}';\n\\.\n\nCOPY "),
                1,
            );
            assert_ne!(out, sql);
            out
        },
        why: "COPY",
    },
    Case {
        name: "savepoint",
        make: |sql, _| appended(sql, "ROLLBACK TO SAVEPOINT s;"),
        why: "ROLLBACK TO SAVEPOINT",
    },
];

const SERVER_SIDE: &[Case] = &[
    Case {
        name: "copy-from-program",
        make: |sql, canary| early(sql, &format!("COPY public.customers FROM PROGRAM 'touch {canary}';")),
        why: "COPY to or from a program",
    },
    Case {
        name: "copy-to-program",
        make: |sql, canary| appended(sql, &format!("COPY (SELECT 1) TO PROGRAM 'touch {canary}';")),
        why: "COPY to or from a program",
    },
    Case {
        name: "copy-to-file-on-server",
        make: |sql, canary| appended(sql, &format!("COPY public.customers TO '{canary}';")),
        why: "file on the server",
    },
    Case {
        name: "do",
        make: |sql, canary| {
            appended(
                sql,
                &format!("DO $$ BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch {canary}'''; END $$;"),
            )
        },
        why: "contains DO",
    },
    Case {
        name: "select-call",
        make: |sql, _| appended(sql, "SELECT pg_catalog.pg_reload_conf();"),
        why: "a query calling \"pg_reload_conf\"",
    },
    Case {
        name: "alter-system",
        make: |sql, _| appended(sql, "ALTER SYSTEM SET log_min_messages = debug5;"),
        why: "ALTER SYSTEM",
    },
    Case {
        name: "create-database",
        make: |sql, _| appended(sql, "CREATE DATABASE evil;"),
        why: "CREATE DATABASE",
    },
    Case {
        name: "set-role",
        make: |sql, _| early(sql, "SET ROLE evil_admin;"),
        why: "a role the backup's manifest does not name",
    },
    Case {
        name: "grant-role",
        make: |sql, _| appended(sql, "GRANT pg_execute_server_program TO PUBLIC;"),
        why: "GRANT of a role",
    },
    Case {
        name: "oversized",
        make: |sql, _| appended(sql, &format!("COMMENT ON TABLE public.customers IS '{}';", "x".repeat(17 << 20))),
        why: "longer than 16 MiB",
    },
    Case {
        name: "load",
        make: |sql, _| appended(sql, "LOAD 'plpgsql';"),
        why: "LOAD",
    },
    Case {
        name: "grant-parameter",
        make: |sql, _| appended(sql, "GRANT ALTER SYSTEM ON PARAMETER archive_command TO PUBLIC;"),
        why: "on a server setting",
    },
    Case {
        name: "owner-of-database",
        make: |sql, _| appended(sql, "ALTER DATABASE postgres OWNER TO pg_database_owner;"),
        why: "OWNER of a database",
    },
    Case {
        name: "deeply-nested",
        make: |sql, _| appended(sql, &format!("CREATE VIEW public.deep AS SELECT {}1 AS x;", "1+".repeat(100_000))),
        why: "parser cannot read",
    },
];

#[tokio::test]
async fn psql_commands_and_lexer_tricks_never_run_and_fail_the_backup() {
    let b = bench().await;
    for case in PSQL_COMMANDS {
        judge(&b, case, &[]).await;
    }
}

#[tokio::test]
async fn transaction_escapes_of_any_spelling_fail_the_backup_and_commit_nothing() {
    let b = bench().await;
    for case in ESCAPES {
        judge(&b, case, &[]).await;
    }
}

#[tokio::test]
async fn file_program_and_server_access_fail_the_backup() {
    let b = bench().await;
    for case in SERVER_SIDE {
        judge(&b, case, &[]).await;
    }
}

#[tokio::test]
async fn a_sleeping_statement_cannot_hold_the_verify_service_or_a_restore() {
    let b = bench().await;
    let case = Case {
        name: "sleeper",
        make: |sql, _| {
            appended(
                sql,
                "CREATE FUNCTION public.slow() RETURNS integer LANGUAGE sql AS $$ SELECT 1 FROM pg_catalog.pg_sleep(3600) $$;\nCREATE MATERIALIZED VIEW public.mv AS SELECT public.slow() AS x WITH NO DATA;\nREFRESH MATERIALIZED VIEW public.mv;",
            )
        },
        why: "did not finish within 5 s",
    };
    judge(&b, &case, &[("VERIFY_TIMEOUT", "5".into())]).await;
    // Nothing is left running on the server: the target's table is not locked.
    let mut c = b.pg.connect("postgres").await;
    let busy: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%REFRESH MATERIALIZED VIEW%' AND pid <> pg_backend_pid()",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(busy, 0, "the sleeping statement was stopped");
}

#[tokio::test]
async fn an_honest_backup_with_a_statement_the_server_refuses_is_still_only_a_failed_restore() {
    // The control: the gate lets pg_dump's own statements through, and a plain failure of one of
    // them is reported as the server's error.
    let b = bench().await;
    let case = Case {
        name: "refused-by-server",
        make: |sql, _| early(sql, "ALTER TABLE ONLY public.no_such_table ADD CONSTRAINT c CHECK (true);"),
        why: "no_such_table",
    };
    judge(&b, &case, &[]).await;
    // And the honest backup itself verifies and restores.
    let mut vars = b.s3.vars("honest");
    vars.push(("VERIFY_DATABASE_URL", b.pg.url("postgres")));
    let v = run("pgvigil-verify", &["--once"], &vars).await;
    assert!(text(&v).contains(lines::VERIFY_PASSED), "{}", text(&v));
}
