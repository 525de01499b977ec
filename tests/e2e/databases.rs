//! One service for several databases: each backed up and verified under its own sub-prefix, a
//! broken one never blocking the others, and the CLI working per database.

use pgvigil_core::infra::config::Role;
use pgvigil_core::infra::storage;
use pgvigil_core::records::catalog::Catalog;
use pgvigil_core::records::keys::Layout;
use pgvigil_e2e::lines;
use pgvigil_e2e::run::{run, text, Service};
use pgvigil_e2e::{init_logs, sample, settings, PgServer, S3Server};
use tokio_util::sync::CancellationToken;

async fn complete_backups(s3: &S3Server, prefix: &str) -> usize {
    let st = storage::connect(&settings(&s3.vars(prefix), Role::Cli).storage).await.unwrap();
    let cat = Catalog::load(st.as_ref(), &Layout::new(prefix), &CancellationToken::new())
        .await
        .unwrap();
    assert!(cat.backups.iter().all(|b| b.complete), "{:?}", cat.backups);
    cat.backups.len()
}

#[tokio::test]
async fn three_databases_one_broken_each_backed_up_and_verified() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 200).await;
    pg.create_db("billing").await;
    pg.exec(
        "billing",
        "CREATE TABLE invoices (id int PRIMARY KEY); INSERT INTO invoices SELECT generate_series(1, 30);",
    )
    .await;
    let s3 = S3Server::start().await;
    let mut vars = s3.vars("multi");
    vars.push(("DATABASE_URL", pg.url("postgres")));
    vars.push(("BACKUP_DATABASES", "app,billing,gone".into()));
    vars.push(("BACKUP_INTERVAL", "3600".into()));
    vars.push(("RETRY_BACKOFF_SECS", "1".into()));

    // The service: app and billing are backed up while "gone" (which does not exist) fails and is
    // retried on its own schedule.
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut service_vars = vars.clone();
    service_vars.push(("PORT", http.to_string()));
    let mut svc = Service::start("pgvigil-backup", &[], &service_vars);
    svc.wait_for(lines::BACKUP_COMPLETED, 2, 90).await;
    svc.wait_for(lines::BACKUP_FAILED, 3, 60).await;
    // The two good databases do not hide the broken one. (The failure is counted just after its
    // log line, so the third may take a moment to show.)
    let mut status = pgvigil_e2e::http::get(http, "/status").await.unwrap();
    for _ in 0..50 {
        if status.0 == 503 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        status = pgvigil_e2e::http::get(http, "/status").await.unwrap();
    }
    let (code, body) = status;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("database gone: ") && !body.contains("database app:"), "{body}");
    let metrics = pgvigil_e2e::scrape::Scrape::from(http).await;
    assert_eq!(
        metrics.value("pgvigil_runs", &[("database", "billing"), ("result", "success")]),
        Some(1.0),
        "{}",
        metrics.text
    );
    assert!(
        metrics.value("pgvigil_consecutive_failures", &[("database", "gone")]).unwrap() >= 3.0,
        "{}",
        metrics.text
    );
    let (status, out) = svc.stop().await;
    assert!(status.success(), "{out}");
    assert!(out.contains("covering 3 databases"), "{out}");
    let failure = out.lines().find(|l| l.contains(lines::BACKUP_FAILED)).unwrap();
    assert!(
        failure.contains("name=gone") && failure.contains("does not exist"),
        "the database is named: {failure}"
    );
    assert_eq!(
        out.matches(lines::BACKUP_COMPLETED).count(),
        2,
        "no database was backed up twice:\n{out}"
    );
    assert_eq!(complete_backups(&s3, "multi/app").await, 1);
    assert_eq!(complete_backups(&s3, "multi/billing").await, 1);
    assert_eq!(complete_backups(&s3, "multi/gone").await, 0);

    // Verification covers each database; the one without backups cannot run, the others pass.
    let mut verify = s3.vars("multi");
    verify.push(("VERIFY_DATABASE_URL", pg.url("postgres")));
    verify.push(("BACKUP_DATABASES", "app,billing,gone".into()));
    let o = run("pgvigil-verify", &["--once"], &verify).await;
    let t = text(&o);
    assert!(!o.status.success(), "gone has nothing to verify:\n{t}");
    assert_eq!(t.matches(lines::VERIFY_PASSED).count(), 2, "{t}");
    assert!(t.contains("the run failed for gone"), "{t}");

    // The CLI: status of every database (the worst decides the exit status), one database on request.
    let o = run("pgvigil", &["status"], &verify).await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "gone has no backup: CRITICAL\n{t}");
    for db in ["app", "billing", "gone"] {
        assert!(t.contains(&format!("== database {db} ==")), "{t}");
    }
    let o = run("pgvigil", &["list", "--json", "--database", "billing"], &verify).await;
    assert!(o.status.success(), "{}", text(&o));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["verified"], true);
    let o = run("pgvigil", &["list"], &verify).await;
    assert!(!o.status.success() && text(&o).contains("--database"), "{}", text(&o));
    let o = run("pgvigil", &["list", "--database", "elsewhere"], &verify).await;
    assert!(
        !o.status.success() && text(&o).contains("not one of BACKUP_DATABASES"),
        "{}",
        text(&o)
    );
    let o = run("pgvigil", &["status", "--json"], &verify).await;
    let all: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", text(&o)));
    assert_eq!(all.as_array().unwrap().len(), 3, "{all}");
    // One restore target for several databases: the backup of another database is never poured in.
    let mut restore = verify.clone();
    restore.push(("RESTORE_DATABASE_URL", pg.url("app")));
    let o = run("pgvigil", &["restore", "--database", "billing"], &restore).await;
    assert!(!o.status.success() && text(&o).contains("pass --to"), "{}", text(&o));

    // `*`: every database that accepts connections.
    let mut all = s3.vars("every");
    all.push(("DATABASE_URL", pg.url("postgres")));
    all.push(("BACKUP_DATABASES", "*".into()));
    let o = run("pgvigil-backup", &["--once"], &all).await;
    assert!(o.status.success(), "{}", text(&o));
    for db in ["postgres", "app", "billing"] {
        assert_eq!(complete_backups(&s3, &format!("every/{db}")).await, 1, "{db}");
    }
}

/// The most scratch databases seen at once while `run` ran.
async fn most_scratch_at_once(
    pg: &PgServer,
    run: impl std::future::Future<Output = std::process::Output>,
) -> (usize, std::process::Output) {
    let done = std::sync::atomic::AtomicBool::new(false);
    let watch = async {
        let mut most = 0;
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            most = most.max(pgvigil_e2e::fixtures::scratch_dbs(pg).await.len());
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        most
    };
    let finish = async {
        let out = run.await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        out
    };
    let (most, out) = tokio::join!(watch, finish);
    (most, out)
}

#[tokio::test]
async fn several_databases_verify_side_by_side_up_to_verify_jobs() {
    init_logs();
    let pg = PgServer::start();
    for db in ["one", "two", "three"] {
        pg.create_db(db).await;
        pg.exec(
            db,
            "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100);",
        )
        .await;
    }
    let s3 = S3Server::start().await;
    let mut vars = s3.vars("side");
    vars.push(("DATABASE_URL", pg.url("postgres")));
    vars.push(("BACKUP_DATABASES", "one,two,three".into()));
    vars.push(("PG_DUMP_LOCK_WAIT_TIMEOUT", "0".into()));

    // Backups take turns: with every database's table locked, each pg_dump waits for its lock;
    // were they side by side, several would wait at once.
    let mut holders = Vec::new();
    for db in ["one", "two", "three"] {
        let mut c = pg.connect(db).await;
        sqlx::query("BEGIN").execute(&mut c).await.unwrap();
        sqlx::query("LOCK TABLE t IN ACCESS EXCLUSIVE MODE").execute(&mut c).await.unwrap();
        holders.push(c);
    }
    let watch = async {
        let mut watcher = pg.connect("postgres").await;
        let (mut most, mut seen) = (0, 0);
        for _ in 0..40 {
            let dumps: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pgvigil-backup %' AND wait_event_type = 'Lock'",
            )
            .fetch_one(&mut watcher)
            .await
            .unwrap();
            most = most.max(dumps);
            seen += usize::from(dumps > 0);
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        for mut c in holders {
            sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
        }
        (most, seen)
    };
    let (o, (most, seen)) = tokio::join!(run("pgvigil-backup", &["--once"], &vars), watch);
    assert!(o.status.success(), "{}", text(&o));
    assert!(seen > 10, "no pg_dump was seen waiting for its lock");
    assert_eq!(most, 1, "backups take turns: one pg_dump at a time");

    // Each verification holds its scratch database for two seconds after the restore.
    let mut verify = s3.vars("side");
    verify.push(("VERIFY_DATABASE_URL", pg.url("postgres")));
    verify.push(("BACKUP_DATABASES", "one,two,three".into()));
    verify.push(("VERIFY_QUERIES", "SELECT true FROM pg_sleep(2);".into()));
    let mut two = verify.clone();
    two.push(("VERIFY_JOBS", "2".into()));
    let (most, o) = most_scratch_at_once(&pg, run("pgvigil-verify", &["--once"], &two)).await;
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert_eq!(t.matches(lines::VERIFY_PASSED).count(), 3, "{t}");
    assert_eq!(most, 2, "VERIFY_JOBS=2: two verifications at once, never three\n{t}");
    assert!(pgvigil_e2e::fixtures::scratch_dbs(&pg).await.is_empty());

    let mut one = verify.clone();
    one.push(("VERIFY_JOBS", "1".into()));
    let (most, o) = most_scratch_at_once(&pg, run("pgvigil-verify", &["--once"], &one)).await;
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert_eq!(t.matches(lines::VERIFY_PASSED).count(), 3, "{t}");
    assert_eq!(most, 1, "VERIFY_JOBS=1: they take turns\n{t}");
}
