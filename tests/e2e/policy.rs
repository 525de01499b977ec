//! Retention keeps the evidence, calendar rules keep one backup per period in the operator's time
//! zone, the CLI applies the service's policy (not the shell's), and two backup services on one
//! prefix cannot corrupt each other.

use bytes::Bytes;
use pgvigil_core::infra::storage;
use pgvigil_core::pipeline::backup;
use pgvigil_core::policy::retention::KeptBecause;
use pgvigil_core::records::catalog::Catalog;
use pgvigil_core::records::keys::{BackupId, Layout};
use pgvigil_core::records::manifest;
use pgvigil_e2e::fixtures::{context, fake_backups_at, fake_old_backups, pausing_pg_dump, record_verdict};
use pgvigil_e2e::lines;
use pgvigil_e2e::run::{run, spawn, terminate, text};
use pgvigil_e2e::{init_logs, sample, PgServer, S3Server};
use sha2::Digest;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn retention_keeps_the_last_verified_backup_when_every_later_one_failed() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 10).await;
    let s3 = S3Server::start().await;
    let ctx = context(
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
    assert!(both.contains(lines::BACKUP_COMPLETED), "{both}");
    assert!(
        both.contains(&format!("{}: another backup service", lines::BACKUP_SKIPPED)),
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

/// The line of `text` that mentions `stamp`.
fn line_of<'a>(text: &'a str, stamp: &str) -> &'a str {
    text.lines()
        .find(|l| l.contains(stamp))
        .unwrap_or_else(|| panic!("no line for {stamp} in:\n{text}"))
}

#[tokio::test]
async fn calendar_retention_keeps_one_backup_per_month_in_the_operators_time_zone() {
    use chrono::TimeZone;
    init_logs();
    let s3 = S3Server::start().await;
    let layout = Layout::new("cal");
    let st = storage::connect(&pgvigil_e2e::settings(&s3.vars("cal"), pgvigil_core::infra::config::Role::Cli).storage)
        .await
        .unwrap();
    let at = |y, m, d, h, mi| chrono::Utc.with_ymd_and_hms(y, m, d, h, mi, 0).unwrap();
    // 29 February 2024 23:30 UTC is already 1 March in Berlin.
    fake_backups_at(
        st.as_ref(),
        &layout,
        &[
            at(2024, 1, 15, 12, 0),
            at(2024, 1, 20, 12, 0),
            at(2024, 2, 10, 12, 0),
            at(2024, 2, 25, 12, 0),
            at(2024, 2, 29, 23, 30),
            at(2025, 6, 1, 12, 0),
        ],
    )
    .await;
    let mut berlin = s3.vars("cal");
    berlin.push(("BACKUP_KEEP_MONTHLY", "3".into()));
    berlin.push(("BACKUP_MIN_KEEP", "1".into()));
    berlin.push(("BACKUP_TIMEZONE", "Europe/Berlin".into()));

    // Berlin's months: June 2025, March 2024 (the 29 February 23:30 UTC backup), February 2024.
    let o = run("pgvigil", &["prune", "--dry-run"], &berlin).await;
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("keep the newest backup of each period: 3 monthly (periods in Europe/Berlin)"),
        "{t}"
    );
    for kept in ["2024-02-29T23-30-00Z", "2024-02-25T12-00-00Z"] {
        assert!(
            line_of(&t, kept).starts_with("keeping") && line_of(&t, kept).contains("its month (BACKUP_KEEP_MONTHLY)"),
            "{t}"
        );
    }
    for gone in ["2024-01-15T12-00-00Z", "2024-01-20T12-00-00Z", "2024-02-10T12-00-00Z"] {
        assert!(line_of(&t, gone).starts_with("would delete"), "{t}");
    }
    let newest = line_of(&t, "2025-06-01T12-00-00Z");
    assert!(newest.contains("the newest complete backup") && newest.contains("its month"), "{t}");

    let o = run("pgvigil", &["list"], &berlin).await;
    let t = text(&o);
    assert!(o.status.success() && t.contains("KEPT BY"), "{t}");
    assert!(line_of(&t, "2024-02-25T12-00-00Z").ends_with("monthly"), "{t}");
    assert!(
        line_of(&t, "2024-01-20T12-00-00Z").ends_with("nothing: the next prune deletes it"),
        "{t}"
    );
    let o = run("pgvigil", &["list", "--json"], &berlin).await;
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let newest = &rows.as_array().unwrap()[0];
    assert_eq!(newest["kept_by"], serde_json::json!(["newest", "min-keep", "monthly"]), "{rows}");

    // In UTC the same backups fall into other months: January keeps its 20th, February its 29th.
    let mut utc = berlin.clone();
    utc.retain(|(k, _)| *k != "BACKUP_TIMEZONE");
    let t = text(&run("pgvigil", &["prune", "--dry-run"], &utc).await);
    assert!(line_of(&t, "2024-01-20T12-00-00Z").starts_with("keeping"), "{t}");
    assert!(line_of(&t, "2024-02-25T12-00-00Z").starts_with("would delete"), "{t}");

    // Applied: exactly the plan shown.
    let o = run("pgvigil", &["prune", "--retention-days", "7", "--yes"], &berlin).await;
    let t = text(&o);
    assert!(o.status.success() && t.contains("deleted 3 backups"), "{t}");
    let left: Vec<BackupId> = Catalog::load(st.as_ref(), &layout, &CancellationToken::new())
        .await
        .unwrap()
        .backups
        .iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(
        left,
        vec![
            BackupId::at(at(2025, 6, 1, 12, 0)),
            BackupId::at(at(2024, 2, 29, 23, 30)),
            BackupId::at(at(2024, 2, 25, 12, 0))
        ]
    );

    // A recorded policy is untrusted: a calendar pgvigil cannot read stops prune (rather than
    // pruning as if there were no calendar rule), and `list` still lists.
    let rec = pgvigil_core::records::policy::BackupPolicy {
        interval_secs: 3600,
        retention_days: 7,
        min_keep: 1,
        compression_level: 6,
        keep: pgvigil_core::records::policy::KeepRecord {
            monthly: 3,
            timezone: "Mars/Olympus_Mons".into(),
            ..Default::default()
        },
        recorded_at: chrono::Utc::now(),
        version: "test".into(),
    };
    pgvigil_core::records::policy::write_backup(st.as_ref(), &layout, &rec, &CancellationToken::new())
        .await
        .unwrap();
    let o = run("pgvigil", &["prune", "--dry-run"], &s3.vars("cal")).await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("not pruning") && t.contains("\"Mars/Olympus_Mons\" is not one pgvigil knows") && !t.contains("panicked"),
        "{t}"
    );
    let o = run("pgvigil", &["list"], &s3.vars("cal")).await;
    assert!(o.status.success(), "{}", text(&o));
    let o = run("pgvigil", &["status"], &s3.vars("cal")).await;
    assert!(
        text(&o).contains("cannot be used") && !text(&o).contains("panicked"),
        "{}",
        text(&o)
    );
    // Out-of-range numbers are refused the same way (a retention of 0 days would prune it all).
    let rec = pgvigil_core::records::policy::BackupPolicy {
        retention_days: 0,
        keep: Default::default(),
        ..rec
    };
    pgvigil_core::records::policy::write_backup(st.as_ref(), &layout, &rec, &CancellationToken::new())
        .await
        .unwrap();
    let t = text(&run("pgvigil", &["prune", "--yes"], &s3.vars("cal")).await);
    assert!(t.contains("retention_days 0 is outside 1–36500"), "{t}");
    assert_eq!(
        Catalog::load(st.as_ref(), &layout, &CancellationToken::new())
            .await
            .unwrap()
            .backups
            .len(),
        3,
        "nothing deleted"
    );
}

#[tokio::test]
async fn a_kept_backup_deleted_or_cut_behind_pgvigils_back_is_found_alerted_and_cleared() {
    use pgvigil_e2e::run::Service;
    use pgvigil_e2e::webhook::Receiver;
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 50).await;
    let s3 = S3Server::start().await;
    let hooks = Receiver::start().await;
    let never = CancellationToken::new();
    let layout = Layout::new("pres");
    let cli = s3.vars("pres");
    let st = storage::connect(&pgvigil_e2e::settings(&cli, pgvigil_core::infra::config::Role::Cli).storage)
        .await
        .unwrap();
    // Kept by a 30-day retention: the 20- and 10-day-old ones. The 40-day-old one is past it: its
    // object gone and its manifest left (a clean-up that stopped half-way) is nobody's concern.
    let old = fake_old_backups(st.as_ref(), &layout, &[40, 20, 10]).await;
    let o = run(
        "pgvigil",
        &["check", "--presence", "--retention-days", "30", "--min-keep", "1"],
        &cli,
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert_eq!(t.lines().filter(|l| l.starts_with("OK")).count(), 2, "the two kept backups: {t}");

    st.delete_many(&[layout.backup(old[0]), layout.backup(old[1])], &never)
        .await
        .unwrap();
    storage::put_bytes(st.as_ref(), &layout.backup(old[2]), Bytes::from_static(b"o"), &never)
        .await
        .unwrap();
    let o = run(
        "pgvigil",
        &["check", "--presence", "--retention-days", "30", "--min-keep", "1"],
        &cli,
    )
    .await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        line_of(&t, &old[1].file_name()).starts_with("ABSENT") && t.contains("is gone from storage; its manifest remains"),
        "{t}"
    );
    assert!(
        line_of(&t, &old[2].file_name()).contains("is 1 bytes in storage, but its manifest says 3 bytes"),
        "{t}"
    );
    assert!(!t.contains(&old[0].file_name()), "past retention, not judged: {t}");
    let o = run("pgvigil", &["status", "--retention-days", "30", "--min-keep", "1"], &cli).await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "CRITICAL: {t}");
    assert!(t.contains("is gone from storage"), "{t}");

    // The backup service finds the same at start, after its backup and every CHECK_INTERVAL, and
    // says so once.
    let mut vars = s3.vars("pres");
    vars.push(("DATABASE_URL", pg.url("app")));
    vars.push(("BACKUP_INTERVAL", "3600".into()));
    vars.push(("CHECK_INTERVAL", "2".into()));
    vars.push(("BACKUP_RETENTION_DAYS", "30".into()));
    vars.push(("BACKUP_MIN_KEEP", "1".into()));
    vars.push(("NOTIFY_WEBHOOK_URL", hooks.url("/hook")));
    let mut svc = Service::start("pgvigil-backup", &[], &vars);
    svc.wait_for(lines::BACKUPS_MISSING, 1, 60).await;
    let firing = hooks
        .wait_for(1, 30, |r| r.body.contains("backup_missing") && r.body.contains("firing"))
        .await;
    assert!(firing[0].body.contains(&old[1].file_name()), "{}", firing[0].body);
    svc.wait_for(lines::BACKUP_COMPLETED, 1, 60).await;

    // Retention keeps the lost backup's manifest, so the report stands until someone acts.
    svc.wait_for(lines::BACKUPS_MISSING, 3, 60).await;
    assert!(storage::get_bytes(st.as_ref(), &layout.manifest(old[1]), 1 << 20, &never)
        .await
        .is_ok());
    // Put right: the cut object restored, the lost one acknowledged.
    storage::put_bytes(st.as_ref(), &layout.backup(old[2]), Bytes::from_static(b"old"), &never)
        .await
        .unwrap();
    let o = run("pgvigil", &["ack", &old[1].file_name()], &cli).await;
    assert!(o.status.success() && text(&o).contains("the loss is acknowledged"), "{}", text(&o));
    let o = run("pgvigil", &["ack", &old[2].file_name()], &cli).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("is neither held nor missing"), "{}", text(&o));
    hooks
        .wait_for(1, 60, |r| r.body.contains("backup_missing") && r.body.contains("resolved"))
        .await;
    let (_, out) = svc.stop().await;
    assert!(!out.contains(pgvigil_e2e::s3::SECRET_KEY), "{out}");
    let fired = hooks
        .received()
        .into_iter()
        .filter(|r| r.body.contains("backup_missing") && r.body.contains("firing"))
        .count();
    assert_eq!(fired, 1, "one message when it starts, however often it is seen");
    let o = run("pgvigil", &["check", "--presence"], &cli).await;
    assert!(o.status.success(), "{}", text(&o));
}
