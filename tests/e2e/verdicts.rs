//! Verdicts that can be trusted: databases that look like real ones pass (as a superuser and as a
//! CREATEDB-only role), each broken environment gives "could not run" and never a failed
//! verification, and the record carries the evidence.

use pgvigil_core::infra::config::Role;
use pgvigil_core::infra::storage;
use pgvigil_core::pipeline::backup::{self, BackupOutcome};
use pgvigil_core::pipeline::restore::EnvironmentFault;
use pgvigil_core::pipeline::verify::{self, CouldNotRun, VerifyContext, VerifyError};
use pgvigil_core::records::catalog::Catalog;
use pgvigil_core::records::history::VerificationRecord;
use pgvigil_e2e::fixtures;
use pgvigil_e2e::fixtures::{context, download, gunzip, gzip, original, replace_object, scratch_dbs, stock_restore};
use pgvigil_e2e::lines;
use pgvigil_e2e::run::{run, text};
use pgvigil_e2e::{corpus, init_logs, sample, settings, PgServer, S3Server};
use tokio_util::sync::CancellationToken;

/// A verify context whose scratch server is `url`.
async fn context_at(url: String, s3: &S3Server, prefix: &str, extra: &[(&'static str, String)]) -> VerifyContext {
    let mut vars = s3.vars(prefix);
    vars.push(("VERIFY_DATABASE_URL", url));
    vars.push(("VERIFY_RANDOM_RATE", "0".into()));
    vars.extend(extra.iter().cloned());
    let s = settings(&vars, Role::Verify);
    let st = storage::connect(&s.storage).await.unwrap();
    VerifyContext::new(&s, s.verify_database_url.clone().unwrap(), st)
}

async fn verify_once(ctx: &VerifyContext) -> Result<VerificationRecord, VerifyError> {
    verify::run_and_log(ctx, None, &CancellationToken::new()).await
}

/// Backs up `db` on `pg` into `prefix`.
async fn back_up(pg: &PgServer, db: &str, s3: &S3Server, prefix: &str) -> BackupOutcome {
    let ctx = context(pg, db, s3.vars(prefix), &[]).await;
    backup::run_once(&ctx, &CancellationToken::new()).await.unwrap()
}

#[tokio::test]
async fn a_realistic_schema_passes_as_superuser_and_as_a_createdb_role_and_restores_with_stock_tools() {
    init_logs();
    let pg = PgServer::start();
    corpus::build(&pg, "corpus").await;
    let s3 = S3Server::start().await;
    let out = back_up(&pg, "corpus", &s3, "corpus").await;
    assert_eq!(out.manifest.tables["public.secured"], corpus::SECURED_ROWS);

    // As a superuser: every B-tree index with storage is checked; the rest are skipped by rule.
    // Restored over two sessions at once (partitions, keys across tables, large objects, row-level
    // security and odd names included), with the verdict of one stream.
    let two = [("VERIFY_AMCHECK", "heap".into()), ("VERIFY_JOBS", "2".into())];
    let ctx = context_at(pg.url("postgres"), &s3, "corpus", &two).await;
    let rec = verify_once(&ctx).await.unwrap();
    assert!(rec.passed, "{:?}", rec.reasons);
    assert_eq!(rec.evidence.restore_sessions, Some(2), "{:?}", rec.evidence.one_stream);
    let one = [("VERIFY_AMCHECK", "heap".into()), ("VERIFY_JOBS", "1".into())];
    let sequential = verify_once(&context_at(pg.url("postgres"), &s3, "corpus", &one).await)
        .await
        .unwrap();
    assert!(sequential.passed, "{:?}", sequential.reasons);
    assert_eq!(sequential.evidence.restore_sessions, None);
    assert_eq!(sequential.evidence.tables, rec.evidence.tables, "the same rows, table by table");
    assert_eq!(sequential.evidence.indexes.checked, rec.evidence.indexes.checked);
    assert_eq!(sequential.evidence.privileges, rec.evidence.privileges);
    let ev = &rec.evidence;
    // The subscription, its owner and its comment were not restored.
    assert_eq!((ev.subscriptions_left_out, sequential.evidence.subscriptions_left_out), (3, 3));
    assert!(scratch_dbs(&pg).await.is_empty());
    assert_eq!(ev.indexes.mode, "heap");
    assert_eq!(ev.indexes.not_run, None);
    for checked in ["billing.events_2025_pkey", "public.places_pkey", "public.regions_eu_pkey"] {
        assert!(
            ev.indexes.checked.iter().any(|i| i == checked),
            "{checked} not checked: {:?}",
            ev.indexes
        );
    }
    let skipped = |name: &str| ev.indexes.skipped.iter().find(|s| s.index == name).map(|s| s.reason.clone());
    assert!(
        skipped("billing.events_pkey").is_some_and(|r| r.contains("partitioned")),
        "{:?}",
        ev.indexes.skipped
    );
    for (index, am) in [
        ("public.places_area", "gist"),
        ("public.places_seen", "brin"),
        ("public.places_tag", "hash"),
        ("public.sessions_0_data_idx", "gin"),
        ("public.sessions_data", "partitioned"),
    ] {
        assert!(skipped(index).is_some_and(|r| r.contains(am)), "{index}: {:?}", ev.indexes.skipped);
    }
    let via_root = ev.tables.iter().find(|t| t.table == "billing.by_status");
    if let Some(t) = via_root {
        // pg_dump loaded the enum-hash partitions through their root: counted as a whole.
        assert_eq!((t.manifest_rows, t.restored_rows), (300, Some(300)), "{t:?}");
    }
    // One level down, mixed: the 2025 partitions through the top root, 2026 on its own.
    let rows = |name: &str| {
        ev.tables
            .iter()
            .find(|t| t.table == name)
            .map(|t| (t.manifest_rows, t.restored_rows))
    };
    if let Some(root) = rows("billing.ledger") {
        assert_eq!(root, (364, Some(364)), "{:?}", ev.tables);
    }
    assert_eq!(rows("billing.ledger_2026"), Some((36, Some(36))), "{:?}", ev.tables);
    let secured = ev.tables.iter().find(|t| t.table == "public.secured").unwrap();
    assert_eq!(secured.restored_rows, Some(corpus::SECURED_ROWS));
    assert_eq!(ev.versions.source_server, out.manifest.server_version);
    assert!(ev.versions.verify_server.is_some() && ev.versions.psql.is_some());
    assert!(rec.rpo_secs.is_some() && rec.object_bytes == Some(out.manifest.size));

    // As the least-privilege role SECURITY.md recommends: counts still see every row through
    // FORCE ROW LEVEL SECURITY, and the record says why indexes were not checked.
    pg.create_createdb_role("verifier", "verifier-pw").await;
    let ctx = context_at(pg.url_as("verifier", "verifier-pw", "postgres"), &s3, "corpus", &[]).await;
    let rec = verify_once(&ctx).await.unwrap();
    assert!(rec.passed, "{:?}", rec.reasons);
    assert_eq!(rec.evidence.row_security_lifted, vec!["public.secured".to_string()]);
    let not_run = rec.evidence.indexes.not_run.clone().unwrap_or_default();
    assert!(
        not_run.contains("may not create the amcheck extension"),
        "{:?}",
        rec.evidence.indexes
    );
    assert!(rec.evidence.indexes.checked.is_empty());
    assert!(scratch_dbs(&pg).await.is_empty());

    // Stock tools restore it too, with the same rows everywhere.
    let dir = tempfile::tempdir().unwrap();
    let file = download(&ctx.storage, &out.manifest.key, dir.path()).await;
    // pg_dump's keys and indexes are builds a parallel restore runs apart, table by table: nothing
    // before them in what follows the data stops the gate from noting them.
    let object = std::fs::read(&file).unwrap();
    let after = out.manifest.after_data.as_ref().unwrap();
    let mut sql = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::MultiGzDecoder::new(&object[after.offset as usize..(after.offset + after.length) as usize]),
        &mut sql,
    )
    .unwrap();
    let rules = pgvigil_core::pipeline::stages::dumpscan::GateRules::default();
    let mut scanner = pgvigil_core::pipeline::stages::dumpscan::DumpScanner::gated(rules).noting_builds();
    scanner.feed_filtered(&sql, &mut Vec::new());
    let built: std::collections::BTreeSet<_> = scanner.take_builds().into_iter().map(|b| b.table).collect();
    assert!(built.len() >= 10, "builds noted on {} tables: {built:?}", built.len());
    pg.create_db("stock").await;
    stock_restore(&pg, &file, "stock");
    // Rows of enum-hash partitions land by the new database's enum OIDs: compare those as a whole.
    let counts = |mut c: std::collections::BTreeMap<String, u64>| {
        c.retain(|t, _| !t.starts_with("billing.by_status_") && !t.starts_with("billing.ledger_2025_"));
        c
    };
    assert_eq!(
        counts(sample::row_counts(&pg, "corpus").await),
        counts(sample::row_counts(&pg, "stock").await)
    );
}

/// Verifies after `edit` changed the object's SQL (keeping the manifest in step) and returns
/// what came back.
async fn verify_edited(prefix: &str, edit: impl FnOnce(String) -> String) -> (PgServer, Result<VerificationRecord, VerifyError>) {
    let (pg, s3, out, st) = fixtures::setup(prefix).await;
    let sql = gunzip(&original(&st, &out).await);
    let edited = edit(sql.clone());
    assert_ne!(edited, sql, "the edit changed nothing");
    replace_object(&st, &out, gzip(&edited), true, |_| {}).await;
    let ctx = context_at(pg.url("postgres"), &s3, prefix, &[]).await;
    let r = verify_once(&ctx).await;
    assert!(scratch_dbs(&pg).await.is_empty(), "scratch database left behind");
    let cat = Catalog::load(ctx.storage.as_ref(), &ctx.layout, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(cat.verifications.len(), usize::from(r.is_ok()), "only verdicts are recorded");
    (pg, r)
}

fn could_not_run(r: Result<VerificationRecord, VerifyError>) -> CouldNotRun {
    match r {
        Err(VerifyError::CouldNotRun(c)) => c,
        other => panic!("expected 'could not run', got {other:?}"),
    }
}

#[tokio::test]
async fn an_extension_the_verify_server_lacks_is_the_environment() {
    let (_pg, r) = verify_edited("ext", |sql| {
        sql.replacen(
            "CREATE SCHEMA sales;",
            "CREATE EXTENSION IF NOT EXISTS pgvigil_no_such_extension WITH SCHEMA public;\nCREATE SCHEMA sales;",
            1,
        )
    })
    .await;
    let c = could_not_run(r);
    assert!(
        matches!(&c, CouldNotRun::Restore(EnvironmentFault::MissingExtensions(names)) if names == &["pgvigil_no_such_extension"]),
        "{c:?}"
    );
    assert!(c.to_string().contains("lacks the extension(s) pgvigil_no_such_extension"), "{c}");
}

#[tokio::test]
async fn a_verify_server_older_than_the_source_is_named_before_anything_runs() {
    let (pg, s3, out, st) = fixtures::setup("old").await;
    let data = original(&st, &out).await;
    replace_object(&st, &out, data, true, |m| m.server_version = "99.1".into()).await;
    let ctx = context_at(pg.url("postgres"), &s3, "old", &[]).await;
    let c = could_not_run(verify_once(&ctx).await);
    let msg = c.to_string();
    assert!(
        msg.contains("older than the source server's 99.1") && msg.contains("PostgreSQL 99 or newer"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_psql_older_than_the_pg_dump_is_the_environment() {
    let (pg, s3, out, st) = fixtures::setup("oldpsql").await;
    let data = original(&st, &out).await;
    replace_object(&st, &out, data, true, |m| m.pg_dump_version = "99.0".into()).await;
    let ctx = context_at(pg.url("postgres"), &s3, "oldpsql", &[]).await;
    let msg = could_not_run(verify_once(&ctx).await).to_string();
    assert!(msg.contains("needs psql 99 or newer") && msg.contains("PSQL_PATH"), "{msg}");
}

#[tokio::test]
async fn out_of_shared_memory_on_the_verify_server_is_the_environment() {
    init_logs();
    let source = PgServer::start();
    source.create_db("wide").await;
    let tables: String = (0..400)
        .map(|i| format!("CREATE TABLE t{i} (id int PRIMARY KEY, v text);\n"))
        .collect();
    source.exec("wide", &tables).await;
    let s3 = S3Server::start().await;
    back_up(&source, "wide", &s3, "wide").await;
    // A restore in one transaction holds a lock per table and index: more than this server's
    // lock table has room for.
    let small = PgServer::start_with(&["max_locks_per_transaction=10", "max_connections=10"]);
    let ctx = context_at(small.url("postgres"), &s3, "wide", &[]).await;
    let c = could_not_run(verify_once(&ctx).await);
    let msg = c.to_string();
    assert!(msg.contains("53200") || msg.contains("shared memory"), "{msg}");
    assert!(msg.contains("max_locks_per_transaction"), "{msg}");
}

#[tokio::test]
async fn a_connection_lost_during_the_checks_is_the_environment() {
    let (pg, s3, _out, _st) = fixtures::setup("lost").await;
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("checks.sql");
    // The server ends this very session while the check runs (as a restart or a network cut would).
    std::fs::write(
        &q,
        "DO $$ BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(1); END $$;\n",
    )
    .unwrap();
    let ctx = context_at(pg.url("postgres"), &s3, "lost", &[("VERIFY_QUERIES_FILE", q.display().to_string())]).await;
    let c = could_not_run(verify_once(&ctx).await);
    assert!(matches!(c, CouldNotRun::Check { .. }), "{c:?}");
    assert!(scratch_dbs(&pg).await.is_empty());
}

#[tokio::test]
async fn user_checks_fail_on_zero_of_any_numeric_type_and_keep_their_values() {
    let (pg, s3, _out, _st) = fixtures::setup("uc").await;
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("checks.sql");
    std::fs::write(
        &q,
        "SELECT count(*) FROM public.customers;\nSELECT 0::numeric;\nSELECT 0.0::float8;\nSELECT 'yes'::text;\nSELECT 1/0;\n",
    )
    .unwrap();
    let ctx = context_at(pg.url("postgres"), &s3, "uc", &[("VERIFY_QUERIES_FILE", q.display().to_string())]).await;
    let rec = verify_once(&ctx).await.unwrap();
    assert!(!rec.passed);
    let checks: Vec<(bool, Option<&str>)> = rec.evidence.user_checks.iter().map(|c| (c.passed, c.value.as_deref())).collect();
    assert_eq!(
        checks,
        vec![
            (true, Some("300")),
            (false, Some("0")),
            (false, Some("0")),
            (true, Some("yes")),
            (false, None)
        ]
    );
    assert_eq!(rec.reasons.len(), 3, "{:?}", rec.reasons);
    assert!(
        rec.reasons.iter().any(|r| r.contains("returned zero: SELECT 0::numeric")),
        "{:?}",
        rec.reasons
    );
    assert!(rec.reasons.iter().any(|r| r.contains("division by zero")), "{:?}", rec.reasons);
}

#[tokio::test]
async fn a_second_verifier_never_drops_a_scratch_database_in_use() {
    let (pg, s3, _out, _st) = fixtures::setup("two").await;
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("slow.sql");
    std::fs::write(&q, "SELECT pg_sleep(4) IS NOT NULL;\n").unwrap();
    let first = context_at(pg.url("postgres"), &s3, "two", &[("VERIFY_QUERIES_FILE", q.display().to_string())]).await;
    let running = tokio::spawn(async move { verify_once(&first).await });
    let mut in_use = Vec::new();
    for _ in 0..200 {
        in_use = scratch_dbs(&pg).await;
        if !in_use.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(in_use.len(), 1, "the first verification never created its scratch database");
    // A new instance starting up (a deploy overlap) cleans up leftovers: ours only, and only free
    // ones. One whose lock another verifier holds stays, even with nobody connected to it.
    pg.create_db("pgvigil_verify_left_by_a_crash").await;
    // (Holding a subscription, as older versions restored them: PostgreSQL refuses to drop it
    // until the subscription is detached from its publisher's slot and dropped.)
    pg.exec(
        "pgvigil_verify_left_by_a_crash",
        "CREATE SUBSCRIPTION left_over CONNECTION 'host=127.0.0.1 port=9 dbname=x' PUBLICATION p \
           WITH (connect = false, slot_name = 'left_over');",
    )
    .await;
    pg.create_db("pgvigil_verify_locked_by_another").await;
    let held_url = pgvigil_core::infra::secret::DbUrl::parse(&pg.url("postgres")).unwrap();
    let mut holder = pgvigil_core::infra::pg::connect(&held_url).await.unwrap();
    assert!(
        pgvigil_core::infra::pg::scratch::lock(&mut holder, &held_url, "pgvigil_verify_locked_by_another")
            .await
            .unwrap()
    );
    let second = context_at(pg.url("postgres"), &s3, "two", &[]).await;
    let dropped = verify::cleanup_leftovers(&second).await.unwrap();
    assert_eq!(dropped, vec!["pgvigil_verify_left_by_a_crash".to_string()]);
    let mut left = in_use.clone();
    left.push("pgvigil_verify_locked_by_another".to_string());
    left.sort();
    assert_eq!(
        scratch_dbs(&pg).await,
        left,
        "the running verification and the locked one kept their databases"
    );
    pgvigil_core::infra::pg::close(holder).await;
    let rec = running.await.unwrap().unwrap();
    assert!(rec.passed, "{:?}", rec.reasons);

    // The session holding a scratch database's lock is cut (a proxy, idle_session_timeout): the
    // lock is taken again on a fresh session, and no clean-up can take it meanwhile.
    use pgvigil_core::infra::pg::scratch;
    let name = "pgvigil_verify_kept";
    let mut kept = pgvigil_core::infra::pg::connect(&held_url).await.unwrap();
    assert!(scratch::lock(&mut kept, &held_url, name).await.unwrap());
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut kept).await.unwrap();
    let kept = scratch::keep(Some(kept), &held_url, name).await.expect("a live session is kept");
    let mut other = pgvigil_core::infra::pg::connect(&held_url).await.unwrap();
    let cut: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 10000)")
        .bind(pid)
        .fetch_one(&mut other)
        .await
        .unwrap();
    assert!(cut);
    let mut kept = scratch::keep(Some(kept), &held_url, name).await.expect("the lock is taken again");
    let fresh: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut kept).await.unwrap();
    assert_ne!(fresh, pid, "a fresh session holds it");
    assert!(
        !scratch::lock(&mut other, &held_url, name).await.unwrap(),
        "another session cannot take the lock"
    );
    pgvigil_core::infra::pg::close(kept).await;
    pgvigil_core::infra::pg::close(other).await;
}

#[tokio::test]
async fn a_failed_verification_is_logged_once_and_turns_the_status_endpoint_red_but_not_liveness() {
    let (pg, s3, out, st) = fixtures::setup("sig").await;
    let mut data = original(&st, &out).await;
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    replace_object(&st, &out, data, false, |_| {}).await;
    let mut vars = s3.vars("sig");
    vars.push(("VERIFY_DATABASE_URL", pg.url("postgres")));
    let o = run("pgvigil-verify", &["--once"], &vars).await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert_eq!(t.matches(lines::VERIFY_FAILED).count(), 1, "{t}");

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    vars.push(("PORT", port.to_string()));
    vars.push(("VERIFY_INTERVAL", "3600".into()));
    let child = pgvigil_e2e::run::spawn("pgvigil-verify", &[], &vars);
    let mut status = None;
    for _ in 0..300 {
        if let Some((code, body)) = pgvigil_e2e::http::get(port, "/status").await {
            if code == 503 {
                status = Some(body);
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let body = status.expect("/status turned 503 after the failed verification");
    assert!(body.contains("the newest backup failed verification"), "{body}");
    assert!(
        !body.contains("SHA-256"),
        "the reasons stay in the record, not on an open port: {body}"
    );
    let (code, live) = pgvigil_e2e::http::get(port, "/healthz").await.unwrap();
    assert_eq!(code, 200, "{live}");
    let (_, metrics) = pgvigil_e2e::http::get(port, "/metrics").await.unwrap();
    assert!(
        metrics.contains("pgvigil_last_verification_passed{service=\"verify\"} 0"),
        "{metrics}"
    );
    let out = pgvigil_e2e::run::terminate(child).await;
    assert!(out.status.success(), "{}", text(&out));
}
