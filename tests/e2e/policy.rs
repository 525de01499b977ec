//! Retention keeps the evidence, the CLI applies the service's policy (not the shell's), and two
//! backup services on one prefix cannot corrupt each other.

use crate::backup::{context as backup_context, fake_old_backups, pausing_pg_dump};
use bytes::Bytes;
use pgvigil_core::infra::storage::{self, Storage};
use pgvigil_core::pipeline::backup;
use pgvigil_core::policy::retention::KeptBecause;
use pgvigil_core::records::catalog::Catalog;
use pgvigil_core::records::history::{write_verification, VerificationRecord};
use pgvigil_core::records::keys::{BackupId, Layout};
use pgvigil_core::records::manifest;
use pgvigil_e2e::run::{run, spawn, terminate, text};
use pgvigil_e2e::{init_logs, sample, PgServer, S3Server};
use sha2::Digest;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

async fn record_verdict(st: &dyn Storage, layout: &Layout, id: BackupId, passed: bool) {
    let rec = VerificationRecord {
        key: layout.backup(id).to_string(),
        verified_at: id.0 + chrono::Duration::hours(1),
        passed,
        untrusted: false,
        reasons: if passed {
            vec![]
        } else {
            vec!["table t has 0 rows after restore".into()]
        },
        restore_secs: 1.0,
        checks_secs: 0.0,
        total_secs: 1.0,
        restored_bytes: None,
        tables_checked: 1,
        object_bytes: Some(3),
        backup_time: Some(id.0),
        rpo_secs: Some(3600),
        evidence: Default::default(),
    };
    write_verification(st, layout, id, &rec, &CancellationToken::new()).await.unwrap();
}

#[tokio::test]
async fn retention_keeps_the_last_verified_backup_when_every_later_one_failed() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 10).await;
    let s3 = S3Server::start().await;
    let ctx = backup_context(
        &pg,
        "app",
        s3.vars("ev"),
        &[("BACKUP_RETENTION_DAYS", "7".into()), ("BACKUP_MIN_KEEP", "1".into())],
    )
    .await;
    let st = ctx.storage.as_ref();
    let old = fake_old_backups(st, &ctx.layout, &[30, 20, 10]).await;
    record_verdict(st, &ctx.layout, old[0], true).await;
    record_verdict(st, &ctx.layout, old[1], false).await;
    record_verdict(st, &ctx.layout, old[2], false).await;

    let out = backup::run_once(&ctx, &CancellationToken::new()).await.unwrap();
    assert_eq!(out.retention.delete, vec![old[1], old[2]], "the failed ones go");
    assert_eq!(out.retention.kept, vec![(old[0], KeptBecause::NewestVerified)]);
    let cat = Catalog::load(st, &ctx.layout, &CancellationToken::new()).await.unwrap();
    let ids: Vec<BackupId> = cat.backups.iter().map(|b| b.id).collect();
    assert_eq!(ids, vec![out.id, old[0]], "the newest verified backup survived");
    let verified: Vec<BackupId> = cat.verifications.iter().map(|v| v.backup).collect();
    assert_eq!(verified, vec![old[0]], "verification records went with their backups");
}

#[tokio::test]
async fn prune_applies_the_services_policy_not_the_shells() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 10).await;
    let s3 = S3Server::start().await;
    let mut service = s3.vars("pol");
    service.push(("DATABASE_URL", pg.url("app")));
    service.push(("BACKUP_RETENTION_DAYS", "30".into()));
    service.push(("BACKUP_INTERVAL", "86400".into()));
    let child = spawn("pgvigil-backup", &[], &service);
    let layout = Layout::new("pol");
    let st = storage::connect(&pgvigil_e2e::settings(&s3.vars("pol"), pgvigil_core::infra::config::Role::Cli).storage)
        .await
        .unwrap();
    let mut ready = false;
    for _ in 0..300 {
        let cat = Catalog::load(st.as_ref(), &layout, &CancellationToken::new()).await.unwrap();
        if cat.newest_complete().is_some() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = terminate(child).await;
    assert!(ready, "the service never took its backup:\n{}", text(&out));
    fake_old_backups(st.as_ref(), &layout, &[20, 10]).await;

    // The operator's shell says nothing about retention: its default would be 7 days.
    let shell = s3.vars("pol");
    let o = run("pgvigil", &["prune", "--yes"], &shell).await;
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("policy: the backup service's policy") && t.contains("older than 30 days"),
        "{t}"
    );
    assert!(t.contains("nothing to delete"), "{t}");

    // Overridden on the command line, and said so; not on a terminal it needs --yes.
    let o = run("pgvigil", &["prune", "--retention-days", "7", "--min-keep", "1"], &shell).await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("with --retention-days, --min-keep from the command line") && t.contains("nothing deleted"),
        "{t}"
    );
    assert_eq!(
        Catalog::load(st.as_ref(), &layout, &CancellationToken::new())
            .await
            .unwrap()
            .backups
            .len(),
        3
    );
    let o = run("pgvigil", &["prune", "--retention-days", "7", "--min-keep", "1", "--yes"], &shell).await;
    let t = text(&o);
    assert!(o.status.success() && t.contains("deleted 2 backups"), "{t}");

    let o = run("pgvigil", &["status"], &shell).await;
    assert!(text(&o).contains("newest backup:"), "{}", text(&o));
}

#[tokio::test]
async fn two_backup_services_on_one_prefix_leave_only_complete_matching_pairs() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 20_000).await;
    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    // The first dump pauses after 2 MiB for 8 s, so that the two services overlap even when
    // one of them starts late on a loaded machine.
    let (wrapper, _marker) = pausing_pg_dump(dir.path(), 2, 8);
    let mut vars = s3.vars("two");
    vars.push(("DATABASE_URL", pg.url("app")));
    vars.push(("PG_DUMP_PATH", wrapper));
    vars.push(("BACKUP_INTERVAL", "3600".into()));
    let a = spawn("pgvigil-backup", &[], &vars);
    let b = spawn("pgvigil-backup", &[], &vars);
    let layout = Layout::new("two");
    let st = storage::connect(&pgvigil_e2e::settings(&s3.vars("two"), pgvigil_core::infra::config::Role::Cli).storage)
        .await
        .unwrap();
    for _ in 0..300 {
        let cat = Catalog::load(st.as_ref(), &layout, &CancellationToken::new()).await.unwrap();
        if cat.newest_complete().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (ta, tb) = (text(&terminate(a).await), text(&terminate(b).await));
    let both = format!("{ta}\n----\n{tb}");
    assert!(both.contains("Backup completed successfully"), "{both}");
    assert!(
        both.contains("Backup skipped: another backup service"),
        "the second service waited:\n{both}"
    );

    let never = CancellationToken::new();
    let cat = Catalog::load(st.as_ref(), &layout, &never).await.unwrap();
    assert!(cat.orphan_manifests.is_empty(), "{:?}", cat.orphan_manifests);
    assert!(!cat.backups.is_empty());
    for b in &cat.backups {
        assert!(b.complete, "{} has no manifest", b.key);
        let m = manifest::read(st.as_ref(), &layout, b.id, &never).await.unwrap().unwrap();
        let data = storage::get_bytes(st.as_ref(), &layout.backup(b.id), u64::MAX, &never)
            .await
            .unwrap();
        assert_eq!(data.len() as u64, m.size, "{}", b.key);
        assert_eq!(hex::encode(sha2::Sha256::digest(&data)), m.sha256, "{}", b.key);
    }
    assert!(s3.pending_uploads().is_empty());
    let latest = storage::get_bytes(st.as_ref(), &layout.latest(), u64::MAX, &never).await.unwrap();
    let newest = cat.newest_complete().unwrap();
    assert_eq!(
        Bytes::from(latest),
        Bytes::from(
            storage::get_bytes(st.as_ref(), &layout.backup(newest.id), u64::MAX, &never)
                .await
                .unwrap()
        ),
        "backup_latest is a copy of the newest backup"
    );
}
