//! `pgvigil restore` can never make things worse: whatever happens — a damaged backup, a download
//! cut in the middle, pgvigil killed at any moment — the target is fully restored or exactly as it
//! was, and what pgvigil says about it is true.

use pgvigil_core::infra::pg::target::{contents, Contents};
use pgvigil_core::infra::secret::DbUrl;
use pgvigil_core::infra::storage::DynStorage;
use pgvigil_core::pipeline::backup::{self, BackupOutcome};
use pgvigil_e2e::fixtures::{context, original, replace_object};
use pgvigil_e2e::lines;
use pgvigil_e2e::proxy::Proxy;
use pgvigil_e2e::run::{run, text};
use pgvigil_e2e::{init_logs, sample, PgServer, S3Server};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What is in `db` now.
async fn what_is_in(pg: &PgServer, db: &str) -> Contents {
    let url = DbUrl::parse(&pg.url(db)).unwrap();
    let mut c = pgvigil_core::infra::pg::connect(&url).await.unwrap();
    let got = contents(&mut c, &url).await.unwrap();
    pgvigil_core::infra::pg::close(c).await;
    got
}

/// Waits until no session is connected to `db` (a psql left behind finishes its input and exits).
async fn no_sessions(pg: &PgServer, db: &str) {
    for _ in 0..200 {
        let mut c = pg.connect("postgres").await;
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
            .bind(db)
            .fetch_one(&mut c)
            .await
            .unwrap();
        if n == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("sessions on {db} did not end");
}

/// A source with `rows` customers, `n` backups of it, and the storage.
async fn backups(rows: u64, n: usize, prefix: &str) -> (PgServer, S3Server, Vec<BackupOutcome>, DynStorage) {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", rows).await;
    let s3 = S3Server::start().await;
    let ctx = context(&pg, "app", s3.vars(prefix), &[]).await;
    let mut outs = Vec::new();
    for _ in 0..n {
        outs.push(backup::run_once(&ctx, &CancellationToken::new()).await.unwrap());
    }
    (pg, s3, outs, ctx.storage)
}

/// A target holding a table `precious` with 3 rows.
async fn precious_target(pg: &PgServer, db: &str) {
    pg.create_db(db).await;
    pg.exec(
        db,
        "CREATE TABLE precious (id int PRIMARY KEY); INSERT INTO precious VALUES (1), (2), (3);",
    )
    .await;
}

async fn precious_rows(pg: &PgServer, db: &str) -> i64 {
    let mut c = pg.connect(db).await;
    sqlx::query_scalar("SELECT count(*) FROM precious").fetch_one(&mut c).await.unwrap()
}

#[tokio::test]
async fn clean_with_no_restorable_backup_leaves_the_targets_data() {
    let (pg, s3, outs, st) = backups(20_000, 2, "clean").await;
    // Cut late, so that psql has long run --clean's statements when the damage shows.
    for out in &outs {
        let data = original(&st, out).await;
        replace_object(&st, out, data[..data.len() * 9 / 10].to_vec(), false, |_| {}).await;
    }
    precious_target(&pg, "target").await;
    let mut vars = s3.vars("clean");
    vars.push(("RESTORE_DATABASE_URL", pg.url("target")));
    let o = run("pgvigil", &["restore", "--clean", "--yes", "--fallback", "3"], &vars).await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("no backup could be restored (2 tried") && t.contains("left as it was"),
        "{t}"
    );
    assert_eq!(precious_rows(&pg, "target").await, 3, "the target's data survived:\n{t}");
    assert_eq!(what_is_in(&pg, "target").await.tables, 1);
}

#[tokio::test]
async fn a_download_cut_in_the_middle_stops_with_a_storage_error_and_tries_nothing_older() {
    let (pg, s3, _outs, _st) = backups(20_000, 2, "cut").await;
    let proxy = Proxy::start(s3.addr).await;
    pg.create_db("target").await;
    let mut vars = s3.vars_via("cut", proxy.endpoint());
    vars.push(("RESTORE_DATABASE_URL", pg.url("target")));
    // The listings and the manifest are a few KB: the cut lands inside the backup's body.
    proxy.cut_after(300_000);
    let o = run("pgvigil", &["restore", "--fallback", "3"], &vars).await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("storage failed") && t.contains("No older backup was tried"), "{t}");
    assert!(!t.contains("FAILED ") && !t.contains("trying the next older"), "{t}");
    assert!(
        !t.contains("SHA-256") && !t.contains("truncated"),
        "a broken download is not corruption:\n{t}"
    );
    no_sessions(&pg, "target").await;
    assert!(what_is_in(&pg, "target").await.is_empty(), "{t}");
}

#[tokio::test]
async fn killing_pgvigil_at_any_moment_leaves_the_target_as_it_was() {
    let (pg, s3, outs, _st) = backups(30_000, 1, "kill").await;
    let size = outs[0].manifest.size;
    let proxy = Proxy::start(s3.addr).await;
    // About three seconds of download, so that the kills land before, inside and after the data.
    proxy.throttle(size / 3);
    let mut vars = s3.vars_via("kill", proxy.endpoint());
    let secret_free_url = pg.url("target");
    vars.push(("RESTORE_DATABASE_URL", secret_free_url));
    precious_target(&pg, "target").await;
    for millis in [300u64, 1200, 2400, 3300] {
        let child = pgvigil_e2e::run::spawn("pgvigil", &["restore", "--clean", "--yes"], &vars);
        let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
        tokio::time::sleep(Duration::from_millis(millis)).await;
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        child.wait_with_output().await.unwrap();
        no_sessions(&pg, "target").await;
        let now = what_is_in(&pg, "target").await;
        if now.tables == 1 {
            assert_eq!(precious_rows(&pg, "target").await, 3, "killed after {millis} ms");
        } else {
            // pgvigil had proven the object and sent COMMIT before it died: then all of it is there.
            assert_eq!(
                sample::row_counts(&pg, "app").await,
                sample::row_counts(&pg, "target").await,
                "killed after {millis} ms: neither as it was nor fully restored: {now}"
            );
            break;
        }
    }
}

/// The restoring session in `db`, if one exists: its state and its current (or last) statement.
async fn restoring_session(pg: &PgServer, db: &str) -> Option<(String, String)> {
    let mut c = pg.connect("postgres").await;
    sqlx::query_as("SELECT coalesce(state, ''), coalesce(query, '') FROM pg_stat_activity WHERE datname = $1 AND application_name = 'psql'")
        .bind(db)
        .fetch_optional(&mut c)
        .await
        .unwrap()
}

#[tokio::test]
async fn killing_pgvigil_mid_copy_or_while_indexing_leaves_the_target_as_it_was_or_restored() {
    let (pg, s3, outs, _st) = backups(30_000, 1, "phase").await;
    let proxy = Proxy::start(s3.addr).await;
    proxy.throttle(outs[0].manifest.size / 3);
    let mut vars = s3.vars_via("phase", proxy.endpoint());
    vars.push(("RESTORE_DATABASE_URL", pg.url("target")));
    precious_target(&pg, "target").await;
    type Phase = (&'static str, fn(&str, &str) -> bool);
    let phases: [Phase; 2] = [
        ("in the middle of a COPY", |state, query| {
            state == "active" && query.starts_with("COPY ")
        }),
        ("while building indexes and constraints", |state, query| {
            state == "active" && (query.starts_with("ALTER TABLE ONLY") || query.starts_with("CREATE INDEX"))
        }),
    ];
    for (phase, reached) in phases {
        let child = pgvigil_e2e::run::spawn("pgvigil", &["restore", "--clean", "--yes"], &vars);
        let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
        let mut seen = None;
        let mut observed = std::collections::BTreeSet::new();
        for _ in 0..1000 {
            if let Some((state, query)) = restoring_session(&pg, "target").await {
                observed.insert(format!("{state}: {}", query.chars().take(25).collect::<String>()));
                if reached(&state, &query) {
                    seen = Some(format!("{state}: {}", query.chars().take(60).collect::<String>()));
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let seen = seen.unwrap_or_else(|| panic!("the restore never reached the phase {phase}; saw {:?}", observed));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        child.wait_with_output().await.unwrap();
        no_sessions(&pg, "target").await;
        let now = what_is_in(&pg, "target").await;
        if now.tables == 1 {
            assert_eq!(precious_rows(&pg, "target").await, 3, "killed {phase} ({seen})");
        } else {
            // pgvigil had proven the object and sent COMMIT before it died: then all of it is there.
            assert_eq!(
                sample::row_counts(&pg, "app").await,
                sample::row_counts(&pg, "target").await,
                "killed {phase} ({seen}): neither as it was nor fully restored: {now}"
            );
            pg.exec("postgres", "DROP DATABASE target").await;
            precious_target(&pg, "target").await;
        }
    }
}

#[tokio::test]
async fn a_target_with_only_views_or_functions_is_not_empty() {
    let (pg, s3, _outs, _st) = backups(10, 1, "notempty").await;
    pg.create_db("target").await;
    pg.exec(
        "target",
        "CREATE VIEW v AS SELECT 1 AS x; CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';",
    )
    .await;
    let mut vars = s3.vars("notempty");
    vars.push(("RESTORE_DATABASE_URL", pg.url("target")));
    let o = run("pgvigil", &["restore"], &vars).await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("already holds 1 view, 1 function"), "{t}");
}

#[tokio::test]
async fn a_download_cut_in_the_middle_is_a_storage_error_for_check_and_verify_too() {
    let (pg, s3, _outs, _st) = backups(20_000, 1, "cutv").await;
    let proxy = Proxy::start(s3.addr).await;
    let mut vars = s3.vars_via("cutv", proxy.endpoint());
    vars.push(("VERIFY_DATABASE_URL", pg.url("postgres")));
    proxy.cut_after(300_000);
    let o = run("pgvigil", &["check", "--last", "1"], &vars).await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("could not read") && t.contains("says nothing about the backup"), "{t}");
    assert!(!t.contains("CORRUPTED"), "{t}");
    proxy.cut_after(300_000);
    let o = run("pgvigil-verify", &["--once"], &vars).await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains(lines::VERIFY_COULD_NOT_RUN) && !t.contains(lines::VERIFY_FAILED), "{t}");
}

#[tokio::test]
async fn no_password_reaches_any_command_line() {
    let (pg, s3, outs, _st) = backups(30_000, 1, "argv").await;
    let proxy = Proxy::start(s3.addr).await;
    proxy.throttle(outs[0].manifest.size / 2);
    pg.create_db("target").await;
    let mut vars = s3.vars_via("argv", proxy.endpoint());
    vars.push(("RESTORE_DATABASE_URL", pg.url("target")));
    let child = pgvigil_e2e::run::spawn("pgvigil", &["restore"], &vars);
    let mut seen_psql = false;
    for _ in 0..30 {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            assert!(!cmdline.contains(pgvigil_e2e::pg::PASSWORD), "a password in argv: {cmdline}");
            assert!(!cmdline.contains(pgvigil_e2e::s3::SECRET_KEY), "a secret in argv: {cmdline}");
            seen_psql |= cmdline.contains("psql") && cmdline.contains("ON_ERROR_STOP");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(seen_psql, "the test never saw psql running");

    // A password given with --to works, with a warning that says how to avoid it.
    pg.create_db("target2").await;
    let mut vars = s3.vars("argv");
    vars.push(("RESTORE_DATABASE_URL", String::new()));
    let o = run("pgvigil", &["restore", "--to", &pg.url("target2")], &vars).await;
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("visible to other users") && t.contains("RESTORE_DATABASE_URL"), "{t}");
}

/// Databases a `restore --create` is building, and sessions connected to them.
async fn building(pg: &PgServer) -> (Vec<String>, i64) {
    let mut c = pg.connect("postgres").await;
    let names: Vec<String> = sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname LIKE 'pgvigil_building_%'")
        .fetch_all(&mut c)
        .await
        .unwrap();
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname LIKE 'pgvigil_building_%'")
        .fetch_one(&mut c)
        .await
        .unwrap();
    (names, sessions)
}

async fn exists(pg: &PgServer, db: &str) -> bool {
    let mut c = pg.connect("postgres").await;
    sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)")
        .bind(db)
        .fetch_one(&mut c)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_parallel_restore_into_a_new_database_is_whole_or_absent() {
    let (pg, s3, outs, st) = backups(30_000, 1, "par").await;
    let mut vars = s3.vars("par");
    vars.push(("RESTORE_DATABASE_URL", pg.url("postgres")));

    // Over two sessions, into a database that gets its name once it is whole.
    let o = run("pgvigil", &["restore", "--create", "app_new", "--jobs", "2"], &vars).await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(
        t.contains("over 2 sessions") && t.contains("into app_new") && t.contains("ALTER DATABASE"),
        "{t}"
    );
    assert_eq!(sample::row_counts(&pg, "app").await, sample::row_counts(&pg, "app_new").await);
    assert!(building(&pg).await.0.is_empty());
    let o = run("pgvigil", &["restore", "--create", "app_new", "--jobs", "2"], &vars).await;
    assert_ne!(o.status.code(), Some(0));
    assert!(text(&o).contains("already exists"), "{}", text(&o));
    let o = run("pgvigil", &["restore", "--jobs", "2"], &vars).await;
    assert_ne!(o.status.code(), Some(0), "--jobs needs --create");
    // A name the verify service or the next --create would drop as a leftover is refused.
    for name in ["pgvigil_verify_app", "pgvigil_building_0a1b2c3d", "PGVIGIL_VERIFY_x"] {
        let o = run("pgvigil", &["restore", "--create", name], &vars).await;
        assert_ne!(o.status.code(), Some(0), "{name}: {}", text(&o));
        assert!(text(&o).contains("scratch databases"), "{}", text(&o));
    }

    // Killed halfway: no database of that name, only one being built, dropped by the next run.
    let proxy = Proxy::start(s3.addr).await;
    proxy.throttle(outs[0].manifest.size / 3);
    let mut slow = s3.vars_via("par", proxy.endpoint());
    slow.push(("RESTORE_DATABASE_URL", pg.url("postgres")));
    let child = pgvigil_e2e::run::spawn("pgvigil", &["restore", "--create", "app_killed", "--jobs", "2"], &slow);
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    child.wait_with_output().await.unwrap();
    for _ in 0..200 {
        if building(&pg).await.1 == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!exists(&pg, "app_killed").await);
    let left = building(&pg).await.0;
    assert_eq!(left.len(), 1, "the killed restore's database is still being built: {left:?}");

    // A damaged backup: nothing is restored, nothing of that name exists, nothing is left.
    let mut data = original(&st, &outs[0]).await;
    let mid = data.len() / 2;
    data[mid] ^= 0x5a;
    replace_object(&st, &outs[0], data, false, |_| {}).await;
    let o = run(
        "pgvigil",
        &["restore", "--create", "app_bad", "--jobs", "2", "--fallback", "0"],
        &vars,
    )
    .await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains(&format!("dropped {}", left[0])), "the leftover was dropped: {t}");
    assert!(!exists(&pg, "app_bad").await);
    assert!(building(&pg).await.0.is_empty());
}

/// A backup of a database that holds a subscription restores without it: a subscription needs a
/// superuser, would tie the restored database to a publisher, and keeps its database from being
/// dropped. The output says what was left out.
#[tokio::test]
async fn a_subscription_in_the_backup_is_left_out_and_said() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 100).await;
    pg.exec(
        "app",
        "CREATE SUBSCRIPTION app_sub CONNECTION 'host=127.0.0.1 port=9 dbname=x' PUBLICATION p \
           WITH (connect = false, enabled = false, slot_name = NONE);",
    )
    .await;
    let s3 = S3Server::start().await;
    let ctx = context(&pg, "app", s3.vars("sub"), &[]).await;
    backup::run_once(&ctx, &CancellationToken::new()).await.unwrap();
    let mut vars = s3.vars("sub");
    vars.push(("RESTORE_DATABASE_URL", pg.url("postgres")));

    for (name, jobs) in [("app_one", "1"), ("app_two", "2")] {
        let o = run("pgvigil", &["restore", "--create", name, "--jobs", jobs], &vars).await;
        let t = text(&o);
        assert_eq!(o.status.code(), Some(0), "{t}");
        assert!(t.contains("left out: 2 subscription statement(s)"), "{t}");
        assert_eq!(t.contains("over 2 sessions"), jobs == "2", "{t}");
        assert_eq!(sample::row_counts(&pg, "app").await, sample::row_counts(&pg, name).await);
        let mut c = pg.connect("postgres").await;
        let subs: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid WHERE d.datname = $1")
                .bind(name)
                .fetch_one(&mut c)
                .await
                .unwrap();
        assert_eq!(subs, 0, "no subscription in {name}");
        sqlx::query(&format!("DROP DATABASE {name}")).execute(&mut c).await.unwrap();
    }

    // A target that holds a subscription of its own: --clean does not drop it (that would drop the
    // publisher's slot outside the restore's transaction), so it says what to do and restores nothing.
    let mut at_source = s3.vars("sub");
    at_source.push(("RESTORE_DATABASE_URL", pg.url("app")));
    let before = sample::row_counts(&pg, "app").await;
    let o = run("pgvigil", &["restore", "--clean", "--yes"], &at_source).await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("1 logical-replication subscription(s)") && t.contains("--create"), "{t}");
    assert_eq!(sample::row_counts(&pg, "app").await, before);
    let o = run("pgvigil", &["restore"], &at_source).await;
    assert!(text(&o).contains("1 logical-replication subscription(s)"), "{}", text(&o));
}
