//! Two destinations: every backup goes to both at once; one that is down, or stalls, never fails
//! or holds up the other's backup; what it missed is copied to it afterwards, checked by
//! SHA-256; each keeps its own retention; restore and verify read from either. Both stores are
//! real S3 servers, each behind a fault proxy.

use pgvigil_core::infra::config::Role;
use pgvigil_core::infra::storage::{self, DynStorage, MemoryStorage};
use pgvigil_core::pipeline::backup::{self, BackupContext, BackupOutcome};
use pgvigil_core::pipeline::verify::{self, VerifyContext};
use pgvigil_core::records::catalog::Catalog;
use pgvigil_core::records::keys::{BackupId, Layout};
use pgvigil_e2e::fixtures::key;
use pgvigil_e2e::proxy::Proxy;
use pgvigil_e2e::run::{run, text};
use pgvigil_e2e::{init_logs, sample, settings, PgServer, S3Server};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Two S3 servers, each behind a proxy that can refuse or stall it.
struct Pair {
    a: S3Server,
    b: S3Server,
    pa: Proxy,
    pb: Proxy,
}

impl Pair {
    async fn start() -> Self {
        let (a, b) = (S3Server::start().await, S3Server::start().await);
        let (pa, pb) = (Proxy::start(a.addr).await, Proxy::start(b.addr).await);
        Self { a, b, pa, pb }
    }

    /// The variables of both destinations, through the proxies.
    fn vars(&self, prefix: &str) -> Vec<(&'static str, String)> {
        let mut v = self.a.vars_via(prefix, self.pa.endpoint());
        let second: Vec<(&'static str, String)> = self
            .b
            .vars_via(prefix, self.pb.endpoint())
            .into_iter()
            .filter_map(|(k, val)| {
                let name = match k {
                    "S3_BUCKET" => "SECONDARY_S3_BUCKET",
                    "S3_ENDPOINT" => "SECONDARY_S3_ENDPOINT",
                    "S3_REGION" => "SECONDARY_S3_REGION",
                    "S3_ACCESS_KEY_ID" => "SECONDARY_S3_ACCESS_KEY_ID",
                    "S3_SECRET_ACCESS_KEY" => "SECONDARY_S3_SECRET_ACCESS_KEY",
                    _ => return None,
                };
                Some((name, val))
            })
            .collect();
        v.extend(second);
        v
    }

    /// Each store directly (not through its proxy), for looking at what it holds.
    async fn stores(&self, prefix: &str) -> (DynStorage, DynStorage) {
        let a = settings(&self.a.vars(prefix), Role::Cli);
        let b = settings(&self.b.vars(prefix), Role::Cli);
        (
            storage::connect(&a.storage).await.unwrap(),
            storage::connect(&b.storage).await.unwrap(),
        )
    }
}

/// A backup context over both destinations, cutting off a destination stalled for 2 s.
async fn context(pg: &PgServer, pair: &Pair, prefix: &str, extra: &[(&'static str, String)]) -> BackupContext {
    let mut vars = pair.vars(prefix);
    vars.push(("DATABASE_URL", pg.url("app")));
    vars.extend(extra.iter().cloned());
    let s = settings(&vars, Role::Backup);
    let primary = storage::connect(&s.storage).await.unwrap();
    let secondary = storage::connect(s.secondary.as_ref().unwrap()).await.unwrap();
    let mut ctx = BackupContext::new(&s, s.database_url.clone().unwrap(), primary).with_secondary(secondary);
    if let Some(sec) = &mut ctx.secondary {
        sec.stall = Duration::from_secs(2);
    }
    ctx
}

/// The complete backups a store holds, oldest first, each with its object's SHA-256.
async fn complete(st: &DynStorage, prefix: &str) -> Vec<(BackupId, String)> {
    let layout = Layout::new(prefix);
    let cat = Catalog::load(st.as_ref(), &layout, &CancellationToken::new()).await.unwrap();
    assert!(
        cat.backups.iter().all(|b| b.complete),
        "a partial backup is visible: {:?}",
        cat.backups
    );
    let mut out = Vec::new();
    for b in cat.backups.iter().rev() {
        let bytes = storage::get_bytes(st.as_ref(), &key(&b.key), u64::MAX, &CancellationToken::new())
            .await
            .unwrap();
        out.push((b.id, hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))));
    }
    out
}

/// A database `app` of `rows` rows, two destinations, and a backup context over both.
async fn setup(rows: u64, prefix: &str, extra: &[(&'static str, String)]) -> (PgServer, Pair, BackupContext, DynStorage, DynStorage) {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", rows).await;
    let pair = Pair::start().await;
    let ctx = context(&pg, &pair, prefix, extra).await;
    let (a, b) = pair.stores(prefix).await;
    (pg, pair, ctx, a, b)
}

/// Records in `from` that the secondary is owed backup `id`, then catches `to` up from it.
async fn owe_and_catch_up(
    from: &DynStorage,
    to: &DynStorage,
    layout: &Layout,
    id: BackupId,
    own: Option<&pgvigil_core::infra::signing::SigningKey>,
) -> backup::Gap {
    let never = CancellationToken::new();
    backup::record_owed(&[from.as_ref()], layout, "secondary", id, &never)
        .await
        .unwrap();
    backup::catch_up(from.as_ref(), to.as_ref(), "secondary", layout, None, own, &never)
        .await
        .unwrap()
}

async fn backup(ctx: &BackupContext) -> BackupOutcome {
    backup::run_once(ctx, &CancellationToken::new()).await.unwrap()
}

#[tokio::test]
async fn one_destination_down_or_stalled_never_stops_the_other_and_catches_up_after() {
    let (pg, pair, ctx, a, b) = setup(2_000, "two", &[]).await;

    // Both up: one dump, the same bytes in both.
    let first = backup(&ctx).await;
    assert!(first.missed.is_empty(), "{:?}", first.missed);
    assert_eq!(complete(&a, "two").await, complete(&b, "two").await);

    // The secondary refuses connections: the primary's backup publishes.
    pair.pb.refuse(true);
    let second = backup(&ctx).await;
    assert_eq!(second.missed.len(), 1, "{:?}", second.missed);
    assert_eq!(second.missed[0].destination, "secondary");
    assert_eq!(complete(&a, "two").await.len(), 2);
    assert_eq!(complete(&b, "two").await.len(), 1);

    // It stalls (takes nothing, answers nothing): cut off after 2 s, the primary publishes.
    pair.pb.refuse(false);
    pair.pb.stall(true);
    let started = std::time::Instant::now();
    let third = backup(&ctx).await;
    assert!(
        third
            .missed
            .iter()
            .any(|m| m.destination == "secondary" && m.reason.contains("made no progress")),
        "{:?}",
        third.missed
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the stalled destination held the backup up"
    );
    assert_eq!(complete(&a, "two").await.len(), 3);
    pair.pb.stall(false);

    // Back: the next backup goes to both, and the two it missed are copied, byte for byte.
    let fourth = backup(&ctx).await;
    assert!(fourth.missed.is_empty(), "{:?}", fourth.missed);
    let copied: Vec<BackupId> = fourth
        .caught_up
        .iter()
        .filter(|(to, _)| *to == "secondary")
        .flat_map(|(_, g)| g.copied.clone())
        .collect();
    assert_eq!(copied, vec![second.id, third.id]);
    assert_eq!(complete(&a, "two").await, complete(&b, "two").await);
    assert_eq!(complete(&b, "two").await.len(), 4);

    // The primary is down: the backup goes to the secondary alone, under its lease.
    pair.pa.refuse(true);
    let fifth = backup(&ctx).await;
    assert!(fifth.missed.iter().any(|m| m.destination == "primary"), "{:?}", fifth.missed);
    assert_eq!(complete(&b, "two").await.len(), 5);
    assert_eq!(complete(&a, "two").await.len(), 4);

    // Restore while the primary is still down: the CLI reads the secondary and says so.
    pg.create_db("target").await;
    let mut vars = pair.vars("two");
    vars.push(("RESTORE_DATABASE_URL", pg.url("target")));
    let o = run("pgvigil", &["restore"], &vars).await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("reading from the other destination"), "{t}");
    assert!(t.contains(&fifth.id.file_name()), "the newest backup, from the secondary:\n{t}");
    assert_eq!(sample::row_counts(&pg, "target").await, sample::row_counts(&pg, "app").await);
    // Status says WARNING, naming the primary, not CRITICAL: backups go on in the secondary.
    let o = run("pgvigil", &["status"], &vars).await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("the primary destination cannot be read"), "{t}");
    // The verify service verifies from the secondary meanwhile.
    let mut vvars = pair.vars("two");
    vvars.push(("VERIFY_DATABASE_URL", pg.url("postgres")));
    let o = run("pgvigil-verify", &["--once"], &vvars).await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("verifying from the secondary destination"), "{t}");
    // Asked for by name, it reads there too, without a note.
    let o = run("pgvigil", &["--from", "secondary", "list"], &vars).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains(&fifth.id.file_name()), "{}", text(&o));

    // The primary is back: it catches up, and every backup verifies from either destination.
    pair.pa.refuse(false);
    let sixth = backup(&ctx).await;
    assert!(sixth.missed.is_empty(), "{:?}", sixth.missed);
    assert_eq!(complete(&a, "two").await, complete(&b, "two").await);
    for (reading, st) in [("primary", a.clone()), ("secondary", b.clone())] {
        let s = settings(&vvars, Role::Verify);
        let vctx = VerifyContext::new(&s, s.verify_database_url.clone().unwrap(), st);
        for id in [fifth.id, second.id] {
            let rec = verify::run_and_log(&vctx, Some(id), &CancellationToken::new()).await.unwrap();
            assert!(rec.passed, "{} from the {reading}: {:?}", id.file_name(), rec.reasons);
        }
    }
}

#[tokio::test]
async fn a_copy_that_does_not_match_its_manifest_is_never_caught_up() {
    let (pg, pair, ctx, a, _) = setup(300, "tamper", &[]).await;
    let out = backup(&ctx).await;
    let layout = Layout::new("tamper");
    let never = CancellationToken::new();

    // A destination that missed it, and a source whose object was replaced behind its manifest
    // (same size, other bytes): nothing is copied.
    let empty: DynStorage = Arc::new(MemoryStorage::new());
    let mut data = storage::get_bytes(a.as_ref(), &key(&out.manifest.key), u64::MAX, &never)
        .await
        .unwrap();
    let keep = data.clone();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    storage::put_bytes(a.as_ref(), &key(&out.manifest.key), data.into(), &never)
        .await
        .unwrap();
    let gap = owe_and_catch_up(&a, &empty, &layout, out.id, None).await;
    assert!(gap.copied.is_empty(), "{gap:?}");
    assert!(gap.refused[0].1.contains("SHA-256"), "{gap:?}");
    // A refusal is reported once: its record is gone.
    let again = backup::catch_up(a.as_ref(), empty.as_ref(), "secondary", &layout, None, None, &never)
        .await
        .unwrap();
    assert_eq!(again, backup::Gap::default());
    assert!(
        empty.list("", &never).await.unwrap().is_empty(),
        "a refused copy left something behind"
    );

    // Put back, it is copied whole; the copy is the same bytes.
    storage::put_bytes(a.as_ref(), &key(&out.manifest.key), keep.clone().into(), &never)
        .await
        .unwrap();
    let gap = owe_and_catch_up(&a, &empty, &layout, out.id, None).await;
    assert_eq!(gap.copied, vec![out.id]);
    let copy = storage::get_bytes(empty.as_ref(), &key(&out.manifest.key), u64::MAX, &never)
        .await
        .unwrap();
    assert_eq!(copy, keep);
    // Once copied, nothing is owed any more.
    let again = backup::catch_up(a.as_ref(), empty.as_ref(), "secondary", &layout, None, None, &never)
        .await
        .unwrap();
    assert_eq!(again, backup::Gap::default());

    // With a signing key, an unsigned manifest (someone else's) is not copied.
    let dir = tempfile::tempdir().unwrap();
    let sk = dir.path().join("k.key");
    let made = std::process::Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(dir.path().join("k.pub"))
        .arg("-s")
        .arg(&sk)
        .output()
        .expect("the minisign command line tool (apt-get install minisign)");
    assert!(made.status.success());
    let signed = context(&pg, &pair, "tamper", &[("BACKUP_SIGNING_KEY_FILE", sk.display().to_string())]).await;
    let other: DynStorage = Arc::new(MemoryStorage::new());
    let gap = owe_and_catch_up(&a, &other, &layout, out.id, signed.signing.as_ref()).await;
    assert!(gap.copied.is_empty(), "{gap:?}");
    assert!(gap.refused[0].1.contains("not signed"), "{gap:?}");
    assert!(other.list("", &never).await.unwrap().is_empty());
}

#[tokio::test]
async fn two_names_for_one_place_are_refused_at_start() {
    init_logs();
    let s3 = S3Server::start().await;
    let mut vars = s3.vars("same");
    // The same bucket of the same server, spelled another way.
    let other = s3.endpoint().replace("127.0.0.1", "localhost");
    for (k, v) in s3.vars("same") {
        let name = match k {
            "S3_BUCKET" => "SECONDARY_S3_BUCKET",
            "S3_ACCESS_KEY_ID" => "SECONDARY_S3_ACCESS_KEY_ID",
            "S3_SECRET_ACCESS_KEY" => "SECONDARY_S3_SECRET_ACCESS_KEY",
            _ => continue,
        };
        vars.push((name, v));
    }
    vars.push(("SECONDARY_S3_ENDPOINT", other));
    vars.push(("DATABASE_URL", "postgresql://u@127.0.0.1:1/db".into()));
    let s = settings(&vars, Role::Backup);
    let e = backup::open_destinations(&s, &CancellationToken::new()).await.unwrap_err();
    assert!(e.to_string().contains("the same place"), "{e}");
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn retention_runs_in_each_destination() {
    let keep = [("BACKUP_RETENTION_DAYS", "7".to_string()), ("BACKUP_MIN_KEEP", "1".to_string())];
    let (_pg, pair, ctx, a, b) = setup(300, "keep", &keep).await;
    let layout = Layout::new("keep");
    // Old backups in each destination, different ones: each is judged where it is.
    let old_a = pgvigil_e2e::fixtures::fake_old_backups(a.as_ref(), &layout, &[30, 3]).await;
    let old_b = pgvigil_e2e::fixtures::fake_old_backups(b.as_ref(), &layout, &[20, 2]).await;
    let out = backup(&ctx).await;
    assert!(out.missed.is_empty(), "{:?}", out.missed);
    let ids = |v: Vec<(BackupId, String)>| v.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
    assert_eq!(
        ids(complete(&a, "keep").await),
        vec![old_a[1], out.id],
        "the 30-day-old one went from the primary"
    );
    assert_eq!(
        ids(complete(&b, "keep").await),
        vec![old_b[1], out.id],
        "the 20-day-old one went from the secondary"
    );

    // The presence check covers both: the newest backup deleted from the secondary alone is found
    // there, and named as the secondary's.
    b.delete_many(&[key(&out.manifest.key)], &CancellationToken::new()).await.unwrap();
    let mut vars = pair.vars("keep");
    vars.extend(keep.iter().cloned());
    let o = run(
        "pgvigil",
        &["check", "--presence", "--retention-days", "7", "--min-keep", "1"],
        &vars,
    )
    .await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    let secondary_row = format!("[secondary] {}", out.manifest.key);
    assert!(t.lines().any(|l| l.starts_with("ABSENT") && l.contains(&secondary_row)), "{t}");
    assert!(
        t.lines().any(|l| l.starts_with("OK") && l.ends_with(&out.manifest.key)),
        "the primary's copy is there:\n{t}"
    );
}

#[tokio::test]
async fn the_databases_of_a_prefix_are_listed_in_the_secondary_while_the_primary_is_down() {
    init_logs();
    let pair = Pair::start().await;
    let mut vars = pair.vars("multi");
    vars.push(("BACKUP_DATABASES", "*".into()));
    let s = settings(&vars, Role::Cli);
    let (_, b) = pair.stores("multi").await;
    pgvigil_e2e::fixtures::fake_old_backups(b.as_ref(), &Layout::new("multi/app"), &[1]).await;
    pair.pa.refuse(true);
    let names = pgvigil_core::records::databases::with_backups_in(&s, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(names, vec!["app".to_string()]);
}

#[tokio::test]
async fn the_secondary_keeps_the_backup_the_primary_saw_verified() {
    // The verify service writes its records to the primary: the secondary's retention counts them,
    // so it keeps the newest verified backup as the primary does, and waits while the primary
    // cannot be read.
    let extra = [("BACKUP_RETENTION_DAYS", "7".to_string()), ("BACKUP_MIN_KEEP", "1".to_string())];
    let (_pg, pair, ctx, a, b) = setup(100, "ev", &extra).await;
    let layout = Layout::new("ev");
    let now = chrono::Utc::now();
    let times = [now - chrono::Duration::days(30), now - chrono::Duration::days(20)];
    let old = pgvigil_e2e::fixtures::fake_backups_at(a.as_ref(), &layout, &times).await;
    assert_eq!(pgvigil_e2e::fixtures::fake_backups_at(b.as_ref(), &layout, &times).await, old);
    pgvigil_e2e::fixtures::record_verdict(a.as_ref(), &layout, old[0], true).await;
    pgvigil_e2e::fixtures::record_verdict(a.as_ref(), &layout, old[1], false).await;

    // The primary is down: the secondary takes the backup, and its retention waits.
    pair.pa.refuse(true);
    let first = backup(&ctx).await;
    assert!(first.missed.iter().any(|m| m.destination == "primary"), "{:?}", first.missed);
    let ids = |st: DynStorage| async move {
        let cat = Catalog::load(st.as_ref(), &Layout::new("ev"), &CancellationToken::new())
            .await
            .unwrap();
        cat.backups.iter().map(|b| b.id).collect::<Vec<BackupId>>()
    };
    assert!(ids(b.clone()).await.contains(&old[1]), "nothing deleted in the secondary meanwhile");
    pair.pa.refuse(false);

    // Both up: the failed one goes in both, the verified one stays in both.
    let second = backup(&ctx).await;
    assert!(second.missed.is_empty(), "{:?}", second.missed);
    for st in [a.clone(), b.clone()] {
        let have = ids(st).await;
        assert!(have.contains(&old[0]) && !have.contains(&old[1]), "{have:?}");
    }
}
