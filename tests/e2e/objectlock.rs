//! Object lock (WORM): backups and their manifests are written with a retention date, checked
//! at the S3 server; a bucket without object lock is refused at start; retention never tries to
//! delete a backup whose lock has not ended.

use bytes::Bytes;
use pgvigil_core::infra::config::Role;
use pgvigil_core::infra::storage::{self, PutOptions};
use pgvigil_core::records::catalog::Catalog;
use pgvigil_core::records::keys::{BackupId, Layout};
use pgvigil_core::records::manifest::{self, Manifest};
use pgvigil_e2e::run::{run, text};
use pgvigil_e2e::{init_logs, sample, settings, PgServer, S3Server};
use tokio_util::sync::CancellationToken;

/// A tiny complete backup taken `days_ago`, locked until `locked_for_days` from now (negative:
/// a lock that already ended).
async fn locked_backup(st: &dyn storage::Storage, layout: &Layout, days_ago: i64, locked_for_days: i64) -> BackupId {
    let now = chrono::Utc::now();
    let id = BackupId::at(now - chrono::Duration::days(days_ago));
    let until = now + chrono::Duration::days(locked_for_days);
    let opts = PutOptions {
        retain_until: Some(until),
        ..Default::default()
    };
    storage::put_bytes_with(st, &layout.backup(id), Bytes::from_static(b"old"), opts, &CancellationToken::new())
        .await
        .unwrap();
    let m = Manifest {
        format: 1,
        key: layout.backup(id).to_string(),
        size: 3,
        uncompressed_size: 3,
        started_at: id.0,
        finished_at: id.0,
        database: "app".into(),
        locked_until: Some(until),
        ..Default::default()
    };
    manifest::write(st, layout, id, &m, None, &CancellationToken::new()).await.unwrap();
    id
}

#[tokio::test]
async fn locked_backups_carry_their_date_and_retention_waits_for_it() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 200).await;
    let s3 = S3Server::start().await;
    let mut vars = s3.vars("worm");
    vars.push(("DATABASE_URL", pg.url("app")));
    vars.push(("S3_OBJECT_LOCK_DAYS", "30".into()));

    // A bucket created without object lock: refused at start, saying why.
    let o = run("pgvigil-backup", &["--once"], &vars).await;
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("has no object lock"), "{}", text(&o));

    // With it: the backup and its manifest are locked for 30 days (governance by default), with
    // Content-MD5 (the server refuses lock headers without it); the latest copy is not locked.
    // (A default retention rule too: every write — leases, probes, records — needs Content-MD5.)
    s3.faults.enable_default_retention();
    let o = run("pgvigil-backup", &["--once"], &vars).await;
    assert!(o.status.success(), "{}", text(&o));
    let want = chrono::Utc::now().timestamp() + 30 * 86_400;
    let objects = s3.faults.locks("worm/backup_2");
    let manifests = s3.faults.locks("_pgvigil/worm/manifests/");
    assert_eq!((objects.len(), manifests.len()), (1, 1), "{objects:?} {manifests:?}");
    for l in objects.iter().chain(&manifests) {
        assert_eq!(l.mode, "GOVERNANCE");
        assert!((l.until - want).abs() < 600, "{l:?}");
    }
    assert!(s3.faults.locks("backup_latest").is_empty());
    // The verify service does not check the bucket's lock (its read-mostly policy may not allow it).
    let mut verify = vars.clone();
    verify.push(("VERIFY_DATABASE_URL", pg.url("postgres")));
    let o = run("pgvigil-verify", &["--once"], &verify).await;
    assert!(o.status.success(), "{}", text(&o));

    // Compliance mode, through a multipart upload (every part with Content-MD5).
    let mut compliance = vars.clone();
    compliance.push(("S3_OBJECT_LOCK_MODE", "compliance".into()));
    let s = settings(&compliance, Role::Backup);
    let st = storage::connect(&s.storage).await.unwrap();
    let big = Bytes::from(vec![7u8; 6 << 20]);
    let opts = PutOptions {
        force_multipart: true,
        retain_until: Some(chrono::Utc::now() + chrono::Duration::days(1)),
        ..Default::default()
    };
    let key = pgvigil_core::infra::storage::Key::new("worm/multipart-probe").unwrap();
    storage::put_bytes_with(st.as_ref(), &key, big, opts, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(s3.faults.locks("multipart-probe")[0].mode, "COMPLIANCE");

    // Retention: a backup past BACKUP_RETENTION_DAYS whose lock still runs is kept, and no delete
    // is ever sent for it; one whose lock ended goes.
    let layout = Layout::new("worm");
    let expired = locked_backup(st.as_ref(), &layout, 40, -5).await;
    let locked = locked_backup(st.as_ref(), &layout, 20, 10).await;
    let mut retention = vars.clone();
    retention.push(("BACKUP_RETENTION_DAYS", "7".into()));
    retention.push(("BACKUP_MIN_KEEP", "1".into()));
    let o = run("pgvigil-backup", &["--once"], &retention).await;
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("its object lock lasts until"), "{}", text(&o));
    assert!(s3.faults.locked_deletes().is_empty(), "{:?}", s3.faults.locked_deletes());
    let cat = Catalog::load(st.as_ref(), &layout, &CancellationToken::new()).await.unwrap();
    let ids: Vec<BackupId> = cat.backups.iter().map(|b| b.id).collect();
    assert!(ids.contains(&locked) && !ids.contains(&expired), "{ids:?}");
}

#[test]
fn object_lock_needs_s3_and_a_known_mode() {
    let dir = tempfile::tempdir().unwrap();
    let vars = [
        ("BACKUP_DIR".to_string(), dir.path().display().to_string()),
        ("DATABASE_URL".to_string(), "postgresql://u@h/db".to_string()),
        ("S3_OBJECT_LOCK_DAYS".to_string(), "30".to_string()),
        ("S3_OBJECT_LOCK_MODE".to_string(), "forever".to_string()),
    ];
    let err = pgvigil_core::infra::config::Settings::from_vars(vars, Role::Backup)
        .unwrap_err()
        .to_string();
    assert!(err.contains("S3_OBJECT_LOCK_DAYS") && err.contains("needs S3 storage"), "{err}");
    assert!(err.contains("S3_OBJECT_LOCK_MODE") && err.contains("\"forever\""), "{err}");
}
