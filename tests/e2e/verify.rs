//! Verification behaviour against a real PostgreSQL and a real S3 server.

use pgvigil_core::pipeline::verify::{self, VerifyError};
use pgvigil_core::records::catalog::Catalog;
use pgvigil_e2e::fixtures::{gunzip, gzip, has, original, replace_object, scratch_dbs, setup, verdict, verify_context};
use pgvigil_e2e::lines;
use pgvigil_e2e::run::{run, text};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_good_backup_passes_and_its_scratch_database_is_gone() {
    let (pg, s3, out, _st) = setup("v").await;
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("checks.sql");
    std::fs::write(
        &q,
        "-- customers came back\nSELECT count(*) = 300 FROM public.customers;\nSELECT count(*) FROM sales.orders;\nSELECT 'ok';\n",
    )
    .unwrap();
    let ctx = verify_context(&pg, &s3, "v", &[("VERIFY_QUERIES_FILE", q.display().to_string())]).await;
    let rec = verify::run_and_log(&ctx, None, &CancellationToken::new()).await.unwrap();
    assert!(rec.passed, "{:?}", rec.reasons);
    assert_eq!(rec.key, out.manifest.key);
    assert_eq!(rec.tables_checked, 4);
    assert!(rec.restored_bytes.unwrap() > 0);
    assert!(scratch_dbs(&pg).await.is_empty());
    let cat = Catalog::load(ctx.storage.as_ref(), &ctx.layout, &CancellationToken::new())
        .await
        .unwrap();
    assert!(cat.is_verified(out.id), "a verification record is stored");
}

#[tokio::test]
async fn a_corrupted_object_fails() {
    let (pg, s3, out, st) = setup("x").await;
    let mut data = original(&st, &out).await;
    let mid = data.len() / 2;
    for b in &mut data[mid..mid + 16] {
        *b ^= 0x5a;
    }
    replace_object(&st, &out, data, false, |_| {}).await;
    let reasons = verdict(&pg, &s3, "x", &[]).await;
    assert!(has(&reasons, "SHA-256 of the object differs"), "{reasons:?}");
    assert!(has(&reasons, "gzip stream is damaged"), "{reasons:?}");
    // Nothing was committed from a damaged dump: psql was killed before the end of its input.
}

#[tokio::test]
async fn a_parallel_restore_gives_way_to_one_stream_when_a_part_is_not_as_recorded() {
    // A byte of a table's data changed, and the manifest's size and hash rewritten to match: the
    // part's own hash disagrees, so the one-stream restore judges it (its gzip check fails).
    let (pg, s3, out, st) = setup("gw").await;
    let pristine = original(&st, &out).await;
    let mut data = pristine.clone();
    let t = out.manifest.table_members.iter().max_by_key(|t| t.length).unwrap();
    data[(t.offset + t.length / 2) as usize] ^= 0x5a;
    replace_object(&st, &out, data, true, |_| {}).await;
    let ctx = verify_context(&pg, &s3, "gw", &[("VERIFY_JOBS", "2".into())]).await;
    let rec = verify::run_and_log(&ctx, None, &CancellationToken::new()).await.unwrap();
    assert!(!rec.passed);
    assert!(has(&rec.reasons, "gzip stream is damaged"), "{:?}", rec.reasons);
    let why = rec.evidence.one_stream.clone().unwrap_or_default();
    assert!(why.contains("gave way") && why.contains(&t.table), "{why}");
    assert_eq!(rec.evidence.restore_sessions, None);
    assert!(scratch_dbs(&pg).await.is_empty());

    // Unsigned, a manifest whose whole hash alone is wrong (its parts' are right) is failed over
    // two sessions as in one stream: the object is read whole too.
    replace_object(&st, &out, pristine.clone(), false, |m| m.sha256 = "0".repeat(64)).await;
    let rec = verify::run_and_log(&ctx, None, &CancellationToken::new()).await.unwrap();
    assert!(!rec.passed);
    assert!(has(&rec.reasons, "SHA-256 of the object differs"), "{:?}", rec.reasons);
    // (The second read runs beside the data's sessions; it is awaited before the last session, the
    // one that commits after the table-of-contents guard, and its finding makes the restore give way.)
    let why = rec.evidence.one_stream.clone().unwrap_or_default();
    assert!(why.contains("gave way") && why.contains("not what its manifest records"), "{why}");
    assert!(scratch_dbs(&pg).await.is_empty());

    // A comment run between two blocks, changed likewise: the run's own recorded hash disagrees.
    let mut data = pristine;
    let run = out.manifest.between_data.iter().max_by_key(|r| r.length).unwrap();
    data[(run.offset + run.length / 2) as usize] ^= 0x5a;
    replace_object(&st, &out, data, true, |_| {}).await;
    let rec = verify::run_and_log(&ctx, None, &CancellationToken::new()).await.unwrap();
    assert!(!rec.passed, "{:?}", rec.evidence);
    let why = rec.evidence.one_stream.clone().unwrap_or_default();
    assert!(
        why.contains("gave way") && why.contains(&format!("bytes {} to", run.offset)),
        "{why}"
    );
    assert!(scratch_dbs(&pg).await.is_empty());
}

#[tokio::test]
async fn a_truncated_object_fails() {
    let (pg, s3, out, st) = setup("t").await;
    let data = original(&st, &out).await;
    replace_object(&st, &out, data[..data.len() * 2 / 3].to_vec(), false, |_| {}).await;
    let reasons = verdict(&pg, &s3, "t", &[]).await;
    assert!(has(&reasons, "differs from the manifest's"), "{reasons:?}");
}

#[tokio::test]
async fn a_wrong_row_count_in_the_manifest_fails() {
    let (pg, s3, out, st) = setup("r").await;
    let data = original(&st, &out).await;
    replace_object(&st, &out, data, true, |m| {
        m.tables.insert("public.customers".into(), 301);
    })
    .await;
    let reasons = verdict(&pg, &s3, "r", &[]).await;
    assert_eq!(
        reasons,
        vec!["table public.customers has 300 rows after restore, the manifest recorded 301".to_string()]
    );
}

#[tokio::test]
async fn a_table_name_in_the_manifest_is_only_ever_a_name() {
    // A relation whose name reads as SQL (a comma and a call), restored by the dump and listed
    // in the manifest: its rows are counted by the name the server resolves, and nothing the
    // name spells is run (counted as text, it would call pg_sleep('x'), which fails).
    let (pg, s3, out, st) = setup("n").await;
    let sql = gunzip(&original(&st, &out).await);
    let odd = sql.replacen(
        "CREATE SCHEMA sales;",
        "CREATE SCHEMA sales;\nCREATE TABLE public.\"c,pg_sleep('x')\" (a integer);",
        1,
    );
    assert_ne!(odd, sql);
    replace_object(&st, &out, gzip(&odd), true, |m| {
        m.tables.insert("public.c,pg_sleep('x')".into(), 0);
    })
    .await;
    let ctx = verify_context(&pg, &s3, "n", &[]).await;
    let rec = verify::run_and_log(&ctx, None, &CancellationToken::new()).await.unwrap();
    assert!(rec.passed, "{:?}", rec.reasons);
    // One row more in the manifest than in the table: the same name is counted, and is short.
    replace_object(&st, &out, gzip(&odd), true, |m| {
        m.tables.insert("public.c,pg_sleep('x')".into(), 1);
    })
    .await;
    let reasons = verdict(&pg, &s3, "n", &[]).await;
    assert!(has(&reasons, "has 0 rows after restore, the manifest recorded 1"), "{reasons:?}");
}

#[tokio::test]
async fn roles_saved_with_the_backup_grown_or_gone_fail_the_backup() {
    let (pg, s3, out, st) = setup("g").await;
    let never = CancellationToken::new();
    let g = out.manifest.globals.clone().expect("roles saved with the backup");
    let key = pgvigil_core::infra::storage::Key::new(g.key.clone()).unwrap();
    let saved = pgvigil_core::infra::storage::get_bytes(st.as_ref(), &key, u64::MAX, &never)
        .await
        .unwrap();
    // Larger than recorded: a failed verdict, not "could not run" on every run.
    let mut grown = saved.to_vec();
    grown.extend_from_slice(b"CREATE ROLE intruder SUPERUSER;\n");
    pgvigil_core::infra::storage::put_bytes(st.as_ref(), &key, grown.into(), &never)
        .await
        .unwrap();
    let reasons = verdict(&pg, &s3, "g", &[]).await;
    assert!(has(&reasons, "not what the backup wrote (larger than recorded)"), "{reasons:?}");
    // Gone while the object and its manifest stay: a failed verdict too.
    st.delete_many(std::slice::from_ref(&key), &never).await.unwrap();
    let reasons = verdict(&pg, &s3, "g", &[]).await;
    assert!(has(&reasons, "are missing"), "{reasons:?}");
}

#[tokio::test]
async fn a_statement_that_fails_on_restore_fails() {
    let (pg, s3, out, st) = setup("s").await;
    let sql = gunzip(&original(&st, &out).await);
    // A statement of pg_dump's kind that the server refuses.
    let broken = sql.replacen(
        "CREATE SCHEMA sales;",
        "CREATE SCHEMA sales;\nALTER TABLE ONLY public.no_such_table ADD CONSTRAINT c CHECK (true);",
        1,
    );
    assert_ne!(broken, sql);
    replace_object(&st, &out, gzip(&broken), true, |_| {}).await;
    let reasons = verdict(&pg, &s3, "s", &[]).await;
    assert!(
        has(&reasons, "the dump failed to restore") && has(&reasons, "no_such_table"),
        "{reasons:?}"
    );
    // A statement pg_dump never writes does not even reach the server.
    let called = sql.replacen("CREATE SCHEMA sales;", "CREATE SCHEMA sales;\nSELECT no_such_function();", 1);
    replace_object(&st, &out, gzip(&called), true, |_| {}).await;
    let reasons = verdict(&pg, &s3, "s", &[]).await;
    assert!(has(&reasons, "a query calling \"no_such_function\""), "{reasons:?}");
}

#[tokio::test]
async fn a_verification_query_returning_false_fails_and_is_named() {
    let (pg, s3, _out, _st) = setup("q").await;
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("checks.sql");
    std::fs::write(
        &q,
        "SELECT true;\nSELECT count(*) > 1000000 AS enough FROM public.customers;\nSELECT NULL::int;\nSELECT 1 WHERE false;\n",
    )
    .unwrap();
    let reasons = verdict(&pg, &s3, "q", &[("VERIFY_QUERIES_FILE", q.display().to_string())]).await;
    assert!(
        has(
            &reasons,
            "returned false: SELECT count(*) > 1000000 AS enough FROM public.customers"
        ),
        "{reasons:?}"
    );
    assert!(has(&reasons, "returned NULL: SELECT NULL::int"), "{reasons:?}");
    assert!(has(&reasons, "returned no rows: SELECT 1 WHERE false"), "{reasons:?}");
    assert_eq!(reasons.len(), 3);
}

#[tokio::test]
async fn a_missing_manifest_fails_with_its_own_message() {
    let (pg, s3, out, st) = setup("m").await;
    let layout = pgvigil_core::records::keys::Layout::new("m");
    st.delete_many(&[layout.manifest(out.id)], &CancellationToken::new()).await.unwrap();
    let ctx = verify_context(&pg, &s3, "m", &[]).await;
    let rec = verify::run_and_log(&ctx, Some(out.id), &CancellationToken::new()).await.unwrap();
    assert!(!rec.passed);
    assert!(has(&rec.reasons, "the manifest is missing"), "{:?}", rec.reasons);
}

#[tokio::test]
async fn leftover_scratch_databases_are_cleaned_and_nothing_else_is_touched() {
    let (pg, s3, _out, _st) = setup("l").await;
    for db in [
        "pgvigil_verify_2020_01_01t00_00_00z",
        "pgvigil_verify_crashed",
        "pgvigil_verif",
        "other_db",
        "my_pgvigil_verify_x",
    ] {
        pg.create_db(db).await;
    }
    let ctx = verify_context(&pg, &s3, "l", &[]).await;
    let dropped = verify::cleanup_leftovers(&ctx).await.unwrap();
    assert_eq!(dropped, vec!["pgvigil_verify_2020_01_01t00_00_00z", "pgvigil_verify_crashed"]);
    let left = pg.databases().await;
    for db in ["pgvigil_verif", "other_db", "my_pgvigil_verify_x", "app", "postgres"] {
        assert!(left.contains(&db.to_string()), "{db} was dropped");
    }
}

#[tokio::test]
async fn broken_infrastructure_is_not_a_bad_backup() {
    let (pg, s3, out, _st) = setup("i").await;
    let ctx = verify_context(&pg, &s3, "i", &[]).await;

    s3.stop();
    let e = verify::run_and_log(&ctx, Some(out.id), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(e, VerifyError::CouldNotRun(_)), "{e:?}");
    s3.restart().await;

    pg.stop();
    let e = verify::run_and_log(&ctx, Some(out.id), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(e, VerifyError::CouldNotRun(_)) && e.to_string().contains("cannot reach"),
        "{e:?}"
    );
    pg.restart();

    let cat = Catalog::load(ctx.storage.as_ref(), &ctx.layout, &CancellationToken::new())
        .await
        .unwrap();
    assert!(cat.verifications.is_empty(), "outages are not recorded as failed verifications");
}

#[tokio::test]
async fn the_binary_reports_the_operator_lines() {
    let (pg, s3, _out, _st) = setup("b").await;
    let mut vars = s3.vars("b");
    vars.push(("VERIFY_DATABASE_URL", pg.url("postgres")));
    let o = run("pgvigil-verify", &["--once"], &vars).await;
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    for line in [lines::VERIFY_STARTED, lines::VERIFY_PASSED, lines::VERIFY_FINISHED] {
        assert!(t.contains(line), "missing {line:?} in:\n{t}");
    }
    assert!(
        !t.contains(pgvigil_e2e::pg::PASSWORD) && !t.contains(pgvigil_e2e::s3::SECRET_KEY),
        "{t}"
    );

    // S3 down: "could not run", exit 1, not a failed verification.
    s3.stop();
    let o = run("pgvigil-verify", &["--once"], &vars).await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("could not connect"), "{t}");
    assert!(!t.contains(lines::VERIFY_FAILED), "{t}");
}

#[tokio::test]
async fn sigterm_stops_the_verify_service_and_drops_its_scratch_database() {
    let (pg, s3, _out, _st) = setup("term").await;
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("slow.sql");
    std::fs::write(&q, "SELECT pg_sleep(60) IS NOT NULL;\n").unwrap();
    let mut vars = s3.vars("term");
    vars.push(("VERIFY_DATABASE_URL", pg.url("postgres")));
    vars.push(("VERIFY_QUERIES_FILE", q.display().to_string()));
    let child = pgvigil_e2e::run::spawn("pgvigil-verify", &[], &vars);
    // Wait until the checks run inside the scratch database.
    let mut sleeping = false;
    for _ in 0..300 {
        let mut c = pg.connect("postgres").await;
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%' AND datname LIKE 'pgvigil_verify_%'",
        )
        .fetch_one(&mut c)
        .await
        .unwrap();
        if n > 0 {
            sleeping = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(sleeping, "the verification never reached its checks");
    assert_eq!(scratch_dbs(&pg).await.len(), 1);
    let out = pgvigil_e2e::run::terminate(child).await;
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(scratch_dbs(&pg).await.is_empty(), "scratch database dropped on shutdown:\n{t}");
    assert!(!t.contains(lines::VERIFY_FAILED), "a shutdown is not a failed verification:\n{t}");
}
