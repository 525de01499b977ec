//! The operator CLI against a bucket prepared by the backup and verify code paths.

use pgvigil_e2e::lines;
use pgvigil_e2e::run::{run, text};
use pgvigil_e2e::{init_logs, sample, PgServer, S3Server};
use serde_json::Value;

async fn pgvigil(args: &[&str], vars: &[(&'static str, String)]) -> (Option<i32>, String, String) {
    let o = run("pgvigil", args, vars).await;
    (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned(), text(&o))
}

#[tokio::test]
async fn every_command_against_a_prepared_bucket() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 200).await;
    let s3 = S3Server::start().await;
    let mut vars = s3.vars("cli");
    vars.push(("DATABASE_URL", pg.url("app")));
    vars.push(("VERIFY_DATABASE_URL", pg.url("postgres")));
    vars.push(("BACKUP_INTERVAL", "3600".into()));
    vars.push(("VERIFY_RANDOM_RATE", "0".into()));

    // Empty bucket: status is CRITICAL (exit 2).
    let (code, out, all) = pgvigil(&["status"], &vars).await;
    assert_eq!(code, Some(2), "{all}");
    assert!(out.contains("CRITICAL") && out.contains("no complete backup exists"), "{out}");

    // Two backups through the same code path as the service, one verification.
    for _ in 0..2 {
        let (code, out, all) = pgvigil(&["backup-now"], &vars).await;
        assert_eq!(code, Some(0), "{all}");
        assert!(out.contains("cli/backup_") && out.contains("4 tables"), "{out}");
        assert!(all.contains(lines::BACKUP_COMPLETED), "{all}");
    }
    let o = run("pgvigil-verify", &["--once"], &vars).await;
    assert!(o.status.success(), "{}", text(&o));

    let (code, out, all) = pgvigil(&["status", "--json"], &vars).await;
    assert_eq!(code, Some(0), "{all}");
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["verdict"], "Ok");
    assert_eq!(status["last_verification"]["passed"], true);

    let (code, out, _) = pgvigil(&["list", "--json"], &vars).await;
    assert_eq!(code, Some(0));
    let rows: Value = serde_json::from_str(&out).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["verified"], true, "the newest was verified");
    assert!(rows[0]["key"].as_str().unwrap() > rows[1]["key"].as_str().unwrap(), "newest first");
    let (_, table, _) = pgvigil(&["list"], &vars).await;
    assert!(table.contains("passed") && table.contains("TIME (UTC)"), "{table}");

    let (code, out, all) = pgvigil(&["check", "--last", "5"], &vars).await;
    assert_eq!(code, Some(0), "{all}");
    assert_eq!(out.matches("OK ").count(), 2, "{out}");

    // Corrupt the newest backup: check fails and names the newest good one.
    let newest = rows[0]["key"].as_str().unwrap().to_string();
    let older = rows[1]["key"].as_str().unwrap().to_string();
    let path = s3.root.path().join(pgvigil_e2e::s3::BUCKET).join(&newest);
    let mut data = std::fs::read(&path).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    data[mid + 1] ^= 0xff;
    std::fs::write(&path, &data).unwrap();
    let (code, out, all) = pgvigil(&["check", "--json"], &vars).await;
    assert_eq!(code, Some(1), "{all}");
    let check: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(check["backups"][0]["ok"], false);
    assert_eq!(check["newest_good"], older.as_str());
    assert!(check["depth"].as_str().unwrap().starts_with("size and SHA-256"), "{check}");
    // --deep inflates too, and says so.
    let (code, out, all) = pgvigil(&["check", "--deep", "--json"], &vars).await;
    assert_eq!(code, Some(1), "{all}");
    let deep: Value = serde_json::from_str(&out).unwrap();
    assert!(deep["depth"].as_str().unwrap().starts_with("deep"), "{deep}");
    assert_eq!(deep["newest_good"], older.as_str());
    let problems = deep["backups"][0]["problems"].to_string();
    assert!(problems.contains("SHA-256") && problems.contains("gzip"), "{problems}");

    // Restore falls back to the older backup and reports RTO and RPO.
    pg.create_db("target").await;
    let target = pg.url("target");
    let (code, out, all) = pgvigil(&["restore", "--to", &target], &vars).await;
    assert_eq!(code, Some(0), "{all}");
    assert!(all.contains(&format!("FAILED {newest}")), "{all}");
    assert!(
        out.contains(&format!("restored {older}")) && out.contains("RTO") && out.contains("RPO"),
        "{out}"
    );
    assert_eq!(sample::checksums(&pg, "app").await, sample::checksums(&pg, "target").await);
    assert!(!all.contains(pgvigil_e2e::pg::PASSWORD), "{all}");

    // A non-empty target is refused unless --clean.
    let (code, _, all) = pgvigil(&["restore", "--to", &target, "--backup", &older], &vars).await;
    assert_eq!(code, Some(1), "{all}");
    assert!(all.contains("already holds") && all.contains("--clean"), "{all}");
    let (code, _, all) = pgvigil(&["restore", "--to", &target, "--backup", &older, "--clean"], &vars).await;
    assert_eq!(code, Some(1), "--clean asks first: {all}");
    assert!(
        all.contains("--clean will replace everything in") && all.contains("nothing was changed"),
        "{all}"
    );
    let (code, _, all) = pgvigil(&["restore", "--to", &target, "--backup", &older, "--clean", "--yes"], &vars).await;
    assert_eq!(code, Some(0), "{all}");
    assert_eq!(sample::row_counts(&pg, "app").await, sample::row_counts(&pg, "target").await);

    let (code, out, _) = pgvigil(&["prune", "--dry-run"], &vars).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("nothing to delete"), "{out}");

    let (code, out, all) = pgvigil(&["report", "--json"], &vars).await;
    assert_eq!(code, Some(0), "{all}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["backups_made"], 2);
    assert_eq!(report["verifications"], 1);
    assert_eq!(report["success_rate"], 1.0);
    let (_, text_report, _) = pgvigil(&["report"], &vars).await;
    assert!(
        text_report.contains("success rate:")
            && text_report.contains("projected cost:")
            && text_report.contains("RTO (restore time):  median")
            && text_report.contains("coverage:            50% of stored backups"),
        "{text_report}"
    );

    // Every command has --help.
    for cmd in ["status", "list", "backup-now", "restore", "check", "prune", "report"] {
        let (code, out, _) = pgvigil(&[cmd, "--help"], &vars).await;
        assert_eq!(code, Some(0), "{cmd}");
        assert!(out.contains("Usage"), "{cmd}: {out}");
    }
}

#[tokio::test]
async fn status_is_critical_whenever_storage_cannot_be_read_and_restore_takes_times_as_typed() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 20).await;
    let s3 = S3Server::start().await;
    let mut vars = s3.vars("typed");
    vars.push(("DATABASE_URL", pg.url("app")));
    let (code, _, all) = pgvigil(&["backup-now"], &vars).await;
    assert_eq!(code, Some(0), "{all}");

    // A time as the emergency runbook types it, and a span ago: the newest at or before it, named.
    pg.create_db("typed_target").await;
    let mut restore_vars = vars.clone();
    restore_vars.push(("RESTORE_DATABASE_URL", pg.url("typed_target")));
    let soon = (chrono::Utc::now() + chrono::Duration::minutes(2))
        .format("%Y-%m-%dT%H:%MZ")
        .to_string();
    let (code, _, all) = pgvigil(&["restore", "--backup", &soon], &restore_vars).await;
    assert_eq!(code, Some(0), "{all}");
    assert!(
        all.contains("the newest backup taken at or before") && all.contains(&format!("({soon})")),
        "{all}"
    );
    let (code, _, all) = pgvigil(&["restore", "--backup", "3d", "--clean", "--yes"], &restore_vars).await;
    assert_eq!(code, Some(1), "{all}");
    assert!(
        all.contains("no backup was taken at or before") && all.contains("3d before now"),
        "{all}"
    );

    // The store is gone, in single-database mode and with a database list alike: CRITICAL.
    s3.stop();
    for extra in [None, Some(("BACKUP_DATABASES", "app".to_string()))] {
        let mut v = vars.clone();
        v.extend(extra);
        for args in [&["status"][..], &["status", "--json"]] {
            let (code, out, all) = tokio::time::timeout(std::time::Duration::from_secs(100), pgvigil(args, &v))
                .await
                .expect("status gives up in time");
            assert_eq!(code, Some(2), "{args:?} {v:?}: {all}");
            assert!(out.contains("CRITICAL"), "{args:?}: {out}");
        }
    }
}

/// URLs without a password, as a libpq user writes them: the password comes from `PGPASSWORD`,
/// `PGPASSWORD_FILE` or a `PGPASSFILE`, for pgvigil's own connections and pg_dump/psql alike; a
/// wrong one is one plain error that does not show it.
#[tokio::test]
async fn libpq_variables_supply_what_the_url_leaves_out() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 20).await;
    pg.create_db("env_target").await;
    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bare = |db: &str| pg.url(db).replace(&format!(":{}@", pgvigil_e2e::pg::PASSWORD), "@");
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, format!("{}\n", pgvigil_e2e::pg::PASSWORD)).unwrap();
    let passfile = dir.path().join("pgpass");
    std::fs::write(&passfile, format!("*:*:*:postgres:{}\n", pgvigil_e2e::pg::PASSWORD)).unwrap();
    std::fs::set_permissions(&passfile, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();

    let mut vars = s3.vars("libpq");
    vars.push(("DATABASE_URL", bare("app")));
    vars.push(("PGPASSWORD_FILE", password_file.display().to_string()));
    let (code, _, all) = pgvigil(&["backup-now"], &vars).await;
    assert_eq!(code, Some(0), "{all}");

    let mut verify = s3.vars("libpq");
    verify.push(("VERIFY_DATABASE_URL", bare("postgres")));
    verify.push(("PGPASSFILE", passfile.display().to_string()));
    let o = run("pgvigil-verify", &["--once"], &verify).await;
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(lines::VERIFY_PASSED), "{}", text(&o));

    let mut restore = s3.vars("libpq");
    restore.push(("RESTORE_DATABASE_URL", bare("env_target")));
    restore.push(("PGPASSWORD", pgvigil_e2e::pg::PASSWORD.to_string()));
    let (code, _, all) = pgvigil(&["restore"], &restore).await;
    assert_eq!(code, Some(0), "{all}");

    let wrong = "Wrong-libpq-SECRET-5vq";
    let mut bad = vars.clone();
    bad.retain(|(k, _)| *k != "PGPASSWORD_FILE");
    bad.push(("PGPASSWORD", wrong.to_string()));
    let (code, _, all) = pgvigil(&["backup-now"], &bad).await;
    assert_eq!(code, Some(1), "{all}");
    assert!(all.contains("password authentication failed"), "{all}");
    assert!(!all.contains(wrong) && !all.contains(pgvigil_e2e::pg::PASSWORD), "{all}");
}

/// A server that takes only client certificates (TLS, `cert` authentication): with libpq's
/// `PGSSL*` variables the backup (pgvigil's connection and pg_dump) and the restore (psql) both
/// get in; without the certificate, one plain error.
#[tokio::test]
async fn a_server_that_requires_a_client_certificate_is_reached_through_libpq_variables() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 20).await;
    pg.create_db("tls_target").await;
    let certs = tempfile::tempdir().unwrap();
    let tls = pg.require_client_certificates(certs.path()).await;
    let s3 = S3Server::start().await;
    let url = |db: &str| format!("postgresql://postgres@127.0.0.1:{}/{db}", pg.port);
    let mut vars = s3.vars("tls");
    vars.push(("DATABASE_URL", url("app")));
    vars.push(("PGSSLMODE", "verify-ca".into()));
    vars.push(("PGSSLROOTCERT", tls.ca.display().to_string()));
    let (code, _, all) = pgvigil(&["backup-now"], &vars).await;
    assert_eq!(code, Some(1), "no client certificate, no entry: {all}");
    assert!(all.contains("certificate") || all.contains("pg_hba.conf"), "{all}");
    assert!(!all.contains("panicked"), "TLS set up for the process, not a crash: {all}");

    vars.push(("PGSSLCERT", tls.cert.display().to_string()));
    vars.push(("PGSSLKEY", tls.key.display().to_string()));
    let (code, _, all) = pgvigil(&["backup-now"], &vars).await;
    assert_eq!(code, Some(0), "{all}");
    let mut restore = vars.clone();
    restore.retain(|(k, _)| *k != "DATABASE_URL");
    restore.push(("RESTORE_DATABASE_URL", url("tls_target")));
    let (code, _, all) = pgvigil(&["restore"], &restore).await;
    assert_eq!(code, Some(0), "{all}");
    assert!(all.contains("restored"), "{all}");
}
