//! The fault matrix: the real service binaries against a real PostgreSQL and a real S3 server,
//! with one fault at a time. Every case checks what is in the bucket afterwards (only complete
//! backups, nothing wrongly deleted), that the log names the problem in plain words, and that the
//! service recovers by itself once the fault clears. docs/reliability.md lists each scenario with
//! the test that proves it.

use pgvigil_core::infra::config::Role;
use pgvigil_core::infra::storage::{self, DynStorage};
use pgvigil_core::records::catalog::Catalog;
use pgvigil_core::records::keys::Layout;
use pgvigil_e2e::fixtures;
use pgvigil_e2e::fixtures::{fake_old_backups, pausing_pg_dump, scratch_dbs};
use pgvigil_e2e::lines;
use pgvigil_e2e::proxy::Proxy;
use pgvigil_e2e::run::{run, text, Service};
use pgvigil_e2e::{init_logs, sample, settings, PgServer, S3Server};
use s3s::S3ErrorCode;
use tokio_util::sync::CancellationToken;

/// A backup service's environment: hourly, retrying after 1 s.
fn backup_vars(pg: &PgServer, storage_vars: Vec<(&'static str, String)>) -> Vec<(&'static str, String)> {
    let mut v = storage_vars;
    v.push(("DATABASE_URL", pg.url("app")));
    v.push(("RETRY_BACKOFF_SECS", "1".into()));
    v.push(("BACKUP_INTERVAL", "3600".into()));
    v
}

async fn open(s3: &S3Server, prefix: &str) -> DynStorage {
    let s = settings(&s3.vars(prefix), Role::Cli);
    storage::connect(&s.storage).await.unwrap()
}

/// The bucket as pgvigil sees it, asserting that every backup in it is complete (has its
/// manifest) and that there are `n` of them.
async fn assert_complete_backups(s3: &S3Server, prefix: &str, n: usize) -> Catalog {
    let st = open(s3, prefix).await;
    let cat = Catalog::load(st.as_ref(), &Layout::new(prefix), &CancellationToken::new())
        .await
        .unwrap();
    assert!(
        cat.backups.iter().all(|b| b.complete),
        "a partial backup is visible: {:?}",
        cat.backups
    );
    assert_eq!(cat.backups.len(), n, "{:?}", cat.backups);
    cat
}

/// No line of `out` is a panic, a backtrace or a debug dump of an error.
fn assert_plain(out: &str) {
    for bad in [
        "panicked",
        "RUST_BACKTRACE",
        "stack backtrace",
        "Error {",
        "Some(",
        "DispatchFailure",
    ] {
        assert!(!out.contains(bad), "{bad:?} in the output:\n{out}");
    }
    assert!(!out.contains(pgvigil_e2e::pg::PASSWORD), "the database password leaked:\n{out}");
    assert!(!out.contains(pgvigil_e2e::s3::SECRET_KEY), "the S3 secret leaked:\n{out}");
}

#[tokio::test]
async fn database_down_at_start_then_back() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 200).await;
    let s3 = S3Server::start().await;
    pg.stop();
    let mut svc = Service::start("pgvigil-backup", &[], &backup_vars(&pg, s3.vars("down")));
    svc.wait_for(lines::BACKUP_FAILED, 2, 30).await;
    assert_complete_backups(&s3, "down", 0).await;
    pg.restart();
    svc.wait_for(lines::BACKUP_COMPLETED, 1, 60).await;
    let (status, out) = svc.stop().await;
    assert!(status.success(), "{out}");
    assert_plain(&out);
    let failure = out.lines().find(|l| l.contains(lines::BACKUP_FAILED)).unwrap();
    assert!(failure.contains("cannot reach"), "the cause is named: {failure}");
    assert_complete_backups(&s3, "down", 1).await;
    assert!(s3.pending_uploads().is_empty());
}

#[tokio::test]
async fn database_down_mid_dump() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 30_000).await;
    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (wrapper, marker) = pausing_pg_dump(dir.path(), 4, 3);
    let mut vars = backup_vars(&pg, s3.vars("mid"));
    vars.push(("PG_DUMP_PATH", wrapper));
    vars.push(("S3_PART_SIZE_MB", "5".into()));
    let mut svc = Service::start("pgvigil-backup", &[], &vars);
    wait_for_file(&marker, &svc).await;
    pg.stop();
    svc.wait_for(lines::BACKUP_FAILED, 1, 60).await;
    assert_complete_backups(&s3, "mid", 0).await;
    pg.restart();
    svc.wait_for(lines::BACKUP_COMPLETED, 1, 90).await;
    let (status, out) = svc.stop().await;
    assert!(status.success(), "{out}");
    assert_plain(&out);
    let cat = assert_complete_backups(&s3, "mid", 1).await;
    assert!(!cat.failures.is_empty(), "the failed attempt left a failure record");
    assert!(s3.pending_uploads().is_empty(), "the cut upload was aborted");
}

/// Waits for the pausing `pg_dump`'s marker, failing with the service's output so far.
#[tokio::test]
async fn s3_down_mid_upload() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 30_000).await;
    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (wrapper, marker) = pausing_pg_dump(dir.path(), 6, 2);
    let mut vars = backup_vars(&pg, s3.vars("s3mid"));
    vars.push(("PG_DUMP_PATH", wrapper));
    vars.push(("S3_PART_SIZE_MB", "5".into()));
    let mut svc = Service::start("pgvigil-backup", &[], &vars);
    wait_for_file(&marker, &svc).await;
    s3.stop();
    svc.wait_for(lines::BACKUP_FAILED, 1, 90).await;
    let published: Vec<_> = fixtures::walk(s3.root.path())
        .into_iter()
        .filter(|p| p.contains("/s3mid/backup_"))
        .collect();
    assert!(published.is_empty(), "{published:?}");
    s3.restart().await;
    svc.wait_for(lines::BACKUP_COMPLETED, 1, 120).await;
    let (status, out) = svc.stop().await;
    assert!(status.success(), "{out}");
    assert_plain(&out);
    assert_complete_backups(&s3, "s3mid", 1).await;
}

async fn wait_for_file(path: &std::path::Path, svc: &Service) {
    for _ in 0..1200 {
        if path.exists() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{} never appeared:\n{}", path.display(), svc.output());
}

#[tokio::test]
async fn service_killed_mid_backup_and_restarted() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 30_000).await;
    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (wrapper, marker) = pausing_pg_dump(dir.path(), 6, 2);
    let mut vars = backup_vars(&pg, s3.vars("kill"));
    vars.push(("PG_DUMP_PATH", wrapper));
    vars.push(("S3_PART_SIZE_MB", "5".into()));
    let first = Service::start("pgvigil-backup", &[], &vars);
    wait_for_file(&marker, &first).await;
    let killed = first.kill().await;
    assert!(!killed.contains(lines::BACKUP_COMPLETED));
    // The killed run holds the lease; a new process on the same host sees its holder is dead.
    let mut second = Service::start("pgvigil-backup", &[], &vars);
    second.wait_for(lines::BACKUP_COMPLETED, 1, 90).await;
    second.wait_for(lines::NEXT_BACKUP, 1, 30).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let (status, out) = second.stop().await;
    assert!(status.success(), "{out}");
    assert_plain(&out);
    assert_eq!(
        out.matches(lines::BACKUP_COMPLETED).count(),
        1,
        "exactly one backup after the restart:\n{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains(lines::NEXT_BACKUP) && !l.contains("Next backup in 0s")),
        "the next one is an interval away:\n{out}"
    );
    assert_complete_backups(&s3, "kill", 1).await;
    // Restarted once more after the success: the next backup is an interval away, not now.
    let mut third = Service::start("pgvigil-backup", &[], &vars);
    third.wait_for(lines::NEXT_BACKUP, 1, 30).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let (_, out) = third.stop().await;
    assert!(
        !out.contains(lines::BACKUP_COMPLETED) && !out.contains("Next backup in 0s"),
        "{out}"
    );
    assert_complete_backups(&s3, "kill", 1).await;
    // A SIGKILLed upload cannot abort itself. s3s-fs cannot list uploads, so pgvigil's clean-up
    // of stale uploads cannot reach it here; on S3 it runs before each backup.
    assert!(s3.pending_uploads().len() <= 1, "{:?}", s3.pending_uploads());
}

#[tokio::test]
async fn throttling_is_retried() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 2000).await;
    let s3 = S3Server::start().await;
    for op in [
        "ListObjectsV2",
        "PutObject",
        "CreateMultipartUpload",
        "UploadPart",
        "CompleteMultipartUpload",
        "CopyObject",
    ] {
        s3.faults.slow_down(op, 2);
    }
    let out = run("pgvigil-backup", &["--once"], &backup_vars(&pg, s3.vars("slow"))).await;
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert_plain(&t);
    let injected: usize = ["ListObjectsV2", "PutObject", "UploadPart"]
        .iter()
        .map(|op| s3.faults.injected(op))
        .sum();
    assert!(injected >= 4, "the test server throttled requests ({injected})");
    assert_complete_backups(&s3, "slow", 1).await;
}

#[tokio::test]
async fn s3_stalls_mid_upload() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 30_000).await;
    let s3 = S3Server::start().await;
    let proxy = Proxy::start(s3.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let (wrapper, marker) = pausing_pg_dump(dir.path(), 6, 1);
    let mut vars = backup_vars(&pg, s3.vars_via("stall", proxy.endpoint()));
    vars.push(("PG_DUMP_PATH", wrapper));
    vars.push(("S3_PART_SIZE_MB", "5".into()));
    let mut svc = Service::start("pgvigil-backup", &[], &vars);
    wait_for_file(&marker, &svc).await;
    proxy.stall(true);
    tokio::time::sleep(std::time::Duration::from_secs(8)).await;
    assert_eq!(svc.count(lines::BACKUP_COMPLETED), 0);
    proxy.stall(false);
    svc.wait_for(lines::BACKUP_COMPLETED, 1, 90).await;
    let (status, out) = svc.stop().await;
    assert!(status.success(), "{out}");
    assert_plain(&out);
    assert_complete_backups(&s3, "stall", 1).await;
}

#[tokio::test]
async fn retention_denied_or_failing_deletes_nothing_and_catches_up() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 100).await;
    let s3 = S3Server::start().await;
    let st = open(&s3, "ret").await;
    let old = fake_old_backups(st.as_ref(), &Layout::new("ret"), &[30, 20]).await;
    let mut vars = backup_vars(&pg, s3.vars("ret"));
    vars.push(("BACKUP_RETENTION_DAYS", "7".into()));
    vars.push(("BACKUP_MIN_KEEP", "1".into()));

    // No delete allowed at all (AWS and MinIO answer 200 and refuse each key): the start-up
    // self-test warns, the backup is taken, retention says why it could not run.
    s3.faults.deny_deleting("");
    let out = run("pgvigil-backup", &["--once"], &vars).await;
    let t = text(&out);
    assert!(out.status.success(), "the backup itself succeeded:\n{t}");
    assert_plain(&t);
    assert!(
        t.contains("expired backups stay until deletes are allowed"),
        "the self-test warned at start:\n{t}"
    );
    let line = t
        .lines()
        .find(|l| l.contains("retention could not run"))
        .unwrap_or_else(|| panic!("{t}"));
    assert!(line.contains("deletes are not allowed"), "{line}");
    let cat = assert_complete_backups(&s3, "ret", 3).await;
    assert!(old.iter().all(|id| cat.backups.iter().any(|b| b.id == *id)));

    // Only backup objects protected (metadata deletable): no backup loses its manifest.
    s3.faults.clear();
    s3.faults.deny_deleting("ret/backup_");
    let out = run("pgvigil-backup", &["--once"], &vars).await;
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("retention could not run"), "{t}");
    let cat = assert_complete_backups(&s3, "ret", 4).await;
    assert!(old.iter().all(|id| cat.backups.iter().any(|b| b.id == *id && b.complete)));

    // The store fails (500) when retention deletes: the backup stands, nothing is deleted.
    s3.faults.clear();
    s3.faults.fail_deleting("ret/backup_", S3ErrorCode::InternalError);
    let out = run("pgvigil-backup", &["--once"], &vars).await;
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let line = t
        .lines()
        .find(|l| l.contains("retention could not run"))
        .unwrap_or_else(|| panic!("{t}"));
    assert!(line.contains("busy or failing"), "{line}");
    assert_complete_backups(&s3, "ret", 5).await;

    s3.faults.clear();
    let out = run("pgvigil-backup", &["--once"], &vars).await;
    assert!(out.status.success(), "{}", text(&out));
    let cat = assert_complete_backups(&s3, "ret", 4).await;
    assert!(
        old.iter().all(|id| !cat.backups.iter().any(|b| b.id == *id)),
        "the expired backups went once deletes worked"
    );
}

#[tokio::test]
async fn wrong_region_and_missing_bucket() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 100).await;
    let s3 = S3Server::start().await;

    // The store names the bucket's region: pgvigil says so once and uses it.
    s3.faults.bucket_region("eu-central-1");
    let out = run("pgvigil-backup", &["--once"], &backup_vars(&pg, s3.vars("reg"))).await;
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("answers from region eu-central-1, not us-east-1 (from S3_REGION): using eu-central-1; set S3_REGION=eu-central-1"),
        "{t}"
    );
    assert_plain(&t);
    assert_complete_backups(&s3, "reg", 1).await;

    // AWS's own variable, when S3_REGION is unset: no correction needed, the start line says where
    // the region came from.
    let mut vars = backup_vars(&pg, s3.vars("reg"));
    vars.retain(|(k, _)| *k != "S3_REGION");
    vars.push(("AWS_REGION", "eu-central-1".into()));
    let out = run("pgvigil-backup", &["--once"], &vars).await;
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("region eu-central-1 from AWS_REGION") && !t.contains("answers from region"),
        "{t}"
    );
    s3.faults.clear();
    assert_complete_backups(&s3, "reg", 2).await;

    // Without S3_* keys, the AWS SDK's own chain supplies them (here its environment variables).
    let mut vars = backup_vars(&pg, s3.vars("reg"));
    let mut moved = Vec::new();
    for (from, to) in [
        ("S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        ("S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
    ] {
        let value = vars.iter().find(|(k, _)| *k == from).unwrap().1.clone();
        vars.retain(|(k, _)| *k != from);
        moved.push((to, value));
    }
    vars.extend(moved);
    let out = run("pgvigil-backup", &["--once"], &vars).await;
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("credentials from the AWS credential chain"), "{t}");
    assert!(!t.contains(pgvigil_e2e::s3::SECRET_KEY), "{t}");
    assert_complete_backups(&s3, "reg", 3).await;

    // A bucket that does not exist yet: the service says so, waits, and starts once it exists.
    let mut vars = backup_vars(&pg, s3.vars("nob"));
    vars.retain(|(k, _)| *k != "S3_BUCKET");
    vars.push(("S3_BUCKET", "created-later".into()));
    let mut svc = Service::start("pgvigil-backup", &[], &vars);
    svc.wait_for("the bucket does not exist (check S3_BUCKET)", 1, 30).await;
    s3.create_bucket("created-later");
    svc.wait_for(lines::BACKUP_COMPLETED, 1, 60).await;
    let (status, out) = svc.stop().await;
    assert!(status.success(), "{out}");
    assert_plain(&out);
}

/// A `psql` that runs the real one on the first `kib` KiB of its input; then `then` happens
/// (`kill` kills it, `hang` holds the rest back for a minute).
fn interrupted_psql(dir: &std::path::Path, kib: u32, then: &str) -> String {
    let real = pgvigil_e2e::pg::bindir().join("psql");
    let path = dir.join(format!("psql_{then}"));
    let fifo = dir.join(format!("psql_{then}.fifo"));
    let after = match then {
        "kill" => "kill -9 $$".to_string(),
        _ => "sleep 60; cat <&3".to_string(),
    };
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\ncase \"$1\" in --version) exec {real} --version;; esac\nrm -f {f}; mkfifo {f}\nexec 3<&0\n( dd bs=1024 count={kib} iflag=fullblock <&3 2>/dev/null; {after} ) > {f} &\nexec {real} \"$@\" < {f}\n",
            real = real.display(),
            f = fifo.display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path.display().to_string()
}

/// A source with a backup big enough that its restore takes a while, and a verify service's
/// environment for it.
async fn verify_setup(prefix: &str) -> (PgServer, S3Server, Vec<(&'static str, String)>) {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 30_000).await;
    let s3 = S3Server::start().await;
    let out = run("pgvigil-backup", &["--once"], &backup_vars(&pg, s3.vars(prefix))).await;
    assert!(out.status.success(), "{}", text(&out));
    let mut vars = s3.vars(prefix);
    vars.push(("VERIFY_DATABASE_URL", pg.url("postgres")));
    vars.push(("RETRY_BACKOFF_SECS", "1".into()));
    vars.push(("VERIFY_INTERVAL", "3600".into()));
    (pg, s3, vars)
}

fn verification_records(s3: &S3Server) -> Vec<String> {
    fixtures::walk(s3.root.path())
        .into_iter()
        .filter(|p| p.ends_with("__passed.json") || p.ends_with("__failed.json"))
        .collect()
}

#[tokio::test]
async fn psql_killed_mid_restore_is_not_a_bad_backup() {
    let (pg, s3, mut vars) = verify_setup("psqlkill").await;
    let dir = tempfile::tempdir().unwrap();
    vars.push(("PSQL_PATH", interrupted_psql(dir.path(), 256, "kill")));
    let out = run("pgvigil-verify", &["--once"], &vars).await;
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains(lines::VERIFY_COULD_NOT_RUN), "{t}");
    assert!(!t.contains(lines::VERIFY_FAILED), "psql dying is not the backup's fault:\n{t}");
    assert_plain(&t);
    assert!(verification_records(&s3).is_empty(), "{:?}", verification_records(&s3));
    assert!(scratch_dbs(&pg).await.is_empty(), "the scratch database was dropped");
    // With a psql that is left alone, the same backup verifies.
    vars.retain(|(k, _)| *k != "PSQL_PATH");
    let out = run("pgvigil-verify", &["--once"], &vars).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(verification_records(&s3).len(), 1);
}

#[tokio::test]
async fn sigterm_mid_restore() {
    let (pg, s3, mut vars) = verify_setup("termrestore").await;
    let dir = tempfile::tempdir().unwrap();
    vars.push(("PSQL_PATH", interrupted_psql(dir.path(), 256, "hang")));
    let svc = Service::start("pgvigil-verify", &[], &vars);
    // The restore is under way once the scratch database has tables.
    let mut restoring = false;
    for _ in 0..300 {
        for db in scratch_dbs(&pg).await {
            let mut c = pg.connect(&db).await;
            let n: i64 =
                sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
                    .fetch_one(&mut c)
                    .await
                    .unwrap_or(0);
            restoring |= n > 0;
        }
        if restoring {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(restoring, "the restore never started:\n{}", svc.output());
    let started = std::time::Instant::now();
    let (status, out) = svc.stop().await;
    assert!(status.success(), "{out}");
    assert!(started.elapsed() < std::time::Duration::from_secs(12), "stopped promptly");
    assert!(!out.contains(lines::VERIFY_FAILED), "{out}");
    assert_plain(&out);
    assert!(scratch_dbs(&pg).await.is_empty(), "scratch database dropped:\n{out}");
    assert!(verification_records(&s3).is_empty());
}

/// Mounts a tmpfs of `mb` MiB at `dir` owned by the PostgreSQL user. Needs CAP_SYS_ADMIN (root
/// on a normal machine or VM); `false` when the mount is not allowed here.
fn mount_tmpfs(dir: &std::path::Path, mb: u32) -> bool {
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={mb}m,mode=0700"), "tmpfs"])
        .arg(dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok && std::process::Command::new("chown")
        .args(["postgres:postgres"])
        .arg(dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn resize_tmpfs(dir: &std::path::Path, mb: u32) {
    let s = std::process::Command::new("mount")
        .args(["-o", &format!("remount,size={mb}m")])
        .arg(dir)
        .status()
        .unwrap();
    assert!(s.success());
}

struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
async fn disk_full_on_the_verify_server() {
    let (pg, s3, vars) = verify_setup("full").await;
    let dir = tempfile::Builder::new().prefix("pgvigil-full-").tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let space = dir.path().join("space");
    std::fs::create_dir(&space).unwrap();
    if !mount_tmpfs(&space, 16) {
        eprintln!("SKIPPED disk_full_on_the_verify_server: this machine does not allow mounting a tmpfs");
        return;
    }
    let _unmount = Unmount(space.clone());
    // Scratch databases are created from template0: moving it to a 16 MiB tablespace makes every
    // scratch database live there, and the 10 MB restore does not fit.
    pg.exec("postgres", &format!("CREATE TABLESPACE small LOCATION '{}'", space.display()))
        .await;
    pg.exec("postgres", "ALTER DATABASE template0 SET TABLESPACE small").await;

    let mut svc = Service::start("pgvigil-verify", &[], &vars);
    svc.wait_for(lines::VERIFY_COULD_NOT_RUN, 1, 120).await;
    assert_eq!(svc.count(lines::VERIFY_FAILED), 0, "{}", svc.output());
    assert!(verification_records(&s3).is_empty());
    // Room again: the service verifies by itself.
    resize_tmpfs(&space, 256);
    svc.wait_for(lines::VERIFY_PASSED, 1, 120).await;
    let (status, out) = svc.stop().await;
    assert!(status.success(), "{out}");
    assert_plain(&out);
    let line = out.lines().find(|l| l.contains(lines::VERIFY_COULD_NOT_RUN)).unwrap();
    assert!(line.to_lowercase().contains("space"), "the cause is named: {line}");
    assert!(scratch_dbs(&pg).await.is_empty());
    pg.exec("postgres", "ALTER DATABASE template0 SET TABLESPACE pg_default").await;
    pg.exec("postgres", "DROP TABLESPACE small").await;
}

#[tokio::test]
async fn s3_down_at_start() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 100).await;
    let s3 = S3Server::start().await;
    s3.stop();
    // SIGTERM while the service waits for storage: a prompt, clean stop.
    let mut svc = Service::start("pgvigil-backup", &[], &backup_vars(&pg, s3.vars("wait")));
    svc.wait_for(lines::STORAGE_NOT_USABLE, 2, 30).await;
    let started = std::time::Instant::now();
    let (status, out) = svc.stop().await;
    assert!(status.success(), "{out}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "stopped promptly:\n{out}");
    assert_plain(&out);
    // Left alone, it starts by itself once storage answers.
    let mut svc = Service::start("pgvigil-backup", &[], &backup_vars(&pg, s3.vars("wait")));
    svc.wait_for(lines::STORAGE_NOT_USABLE, 1, 30).await;
    s3.restart().await;
    svc.wait_for(lines::BACKUP_COMPLETED, 1, 90).await;
    let (status, out) = svc.stop().await;
    assert!(status.success(), "{out}");
    assert_plain(&out);
    let line = out.lines().find(|l| l.contains(lines::STORAGE_NOT_USABLE)).unwrap();
    assert!(line.contains("could not connect"), "the cause is named: {line}");
    assert_complete_backups(&s3, "wait", 1).await;
}

#[tokio::test]
async fn sigterm_during_retention() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 100).await;
    let s3 = S3Server::start().await;
    let st = open(&s3, "termret").await;
    let old = fake_old_backups(st.as_ref(), &Layout::new("termret"), &[30, 20]).await;
    let mut vars = backup_vars(&pg, s3.vars("termret"));
    vars.push(("BACKUP_RETENTION_DAYS", "7".into()));
    vars.push(("BACKUP_MIN_KEEP", "1".into()));
    // Retention's deletes fail and are retried by the client for several seconds: the first
    // failed attempt says retention is under way, and SIGTERM lands there.
    s3.faults.fail_deleting("termret/backup_", S3ErrorCode::InternalError);
    let svc = Service::start("pgvigil-backup", &[], &vars);
    let mut waited = 0;
    while s3.faults.injected("DeleteObjects") == 0 {
        assert!(waited < 600, "retention never started:\n{}", svc.output());
        waited += 1;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let started = std::time::Instant::now();
    let (status, out) = svc.stop().await;
    assert!(status.success(), "{out}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "stopped promptly:\n{out}");
    assert_plain(&out);
    s3.faults.clear();
    // The new backup was published before retention began; nothing was deleted.
    let cat = assert_complete_backups(&s3, "termret", 3).await;
    assert!(old.iter().all(|id| cat.backups.iter().any(|b| b.id == *id)), "nothing deleted");
}

#[tokio::test]
async fn a_held_lock_makes_the_dump_give_up_instead_of_queueing() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 100).await;
    let s3 = S3Server::start().await;
    // A migration holds a table: pg_dump must not queue behind it (and everything else behind
    // pg_dump), it gives up after PG_DUMP_LOCK_WAIT_TIMEOUT and the service tries again.
    let mut migration = pg.connect("app").await;
    sqlx::raw_sql("BEGIN; LOCK TABLE public.customers IN ACCESS EXCLUSIVE MODE")
        .execute(&mut migration)
        .await
        .unwrap();
    let mut vars = backup_vars(&pg, s3.vars("lock"));
    vars.push(("PG_DUMP_LOCK_WAIT_TIMEOUT", "2".into()));
    let mut svc = Service::start("pgvigil-backup", &[], &vars);
    svc.wait_for(lines::BACKUP_FAILED, 1, 60).await;
    assert_complete_backups(&s3, "lock", 0).await;
    sqlx::raw_sql("ROLLBACK").execute(&mut migration).await.unwrap();
    svc.wait_for(lines::BACKUP_COMPLETED, 1, 60).await;
    let (status, out) = svc.stop().await;
    assert!(status.success(), "{out}");
    assert_plain(&out);
    let failure = out.lines().find(|l| l.contains(lines::BACKUP_FAILED)).unwrap();
    assert!(failure.contains("could not lock public.customers"), "the cause is named: {failure}");
    assert_complete_backups(&s3, "lock", 1).await;
}

#[tokio::test]
async fn sessions_queued_behind_the_dump_are_reported() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 30_000).await;
    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    // pg_dump stalls for 25 s with its locks held, as a long dump would (the watcher looks
    // every 10 s).
    let (wrapper, marker) = pausing_pg_dump(dir.path(), 1, 25);
    let mut vars = backup_vars(&pg, s3.vars("queue"));
    vars.push(("PG_DUMP_PATH", wrapper));
    let mut svc = Service::start("pgvigil-backup", &[], &vars);
    wait_for_file(&marker, &svc).await;
    let mut migration = pg.connect("app").await;
    let alter = tokio::spawn(async move {
        sqlx::query("ALTER TABLE public.customers ADD COLUMN audit int")
            .execute(&mut migration)
            .await
            .map(|_| ())
    });
    svc.wait_for("session(s) have waited", 1, 40).await;
    svc.wait_for(lines::BACKUP_COMPLETED, 1, 60).await;
    alter.await.unwrap().unwrap();
    let (status, out) = svc.stop().await;
    assert!(status.success(), "{out}");
    let warning = out.lines().find(|l| l.contains("session(s) have waited")).unwrap();
    assert!(warning.contains("waiting=1"), "{warning}");
    assert_complete_backups(&s3, "queue", 1).await;
}

#[tokio::test]
async fn a_backup_gives_way_to_a_migration_and_is_retried() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 30_000).await;
    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    // The first dump stalls with its locks held; a migration queues behind it.
    let (wrapper, marker) = pausing_pg_dump(dir.path(), 1, 6);
    let mut vars = backup_vars(&pg, s3.vars("yield"));
    vars.push(("PG_DUMP_PATH", wrapper));
    vars.push(("PG_DUMP_YIELD_AFTER", "2".into()));
    let mut svc = Service::start("pgvigil-backup", &[], &vars);
    wait_for_file(&marker, &svc).await;
    let mut migration = pg.connect("app").await;
    let started = std::time::Instant::now();
    let alter = tokio::spawn(async move {
        sqlx::query("ALTER TABLE public.customers ADD COLUMN audit int")
            .execute(&mut migration)
            .await
            .map(|_| ())
    });
    svc.wait_for(lines::BACKUP_GIVES_WAY, 1, 30).await;
    alter.await.unwrap().unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "the migration went ahead");
    svc.wait_for(lines::BACKUP_COMPLETED, 1, 90).await;
    let (status, out) = svc.stop().await;
    assert!(status.success(), "{out}");
    assert!(out.contains(lines::BACKUP_FAILED) && out.contains("gave way to"), "{out}");
    assert_complete_backups(&s3, "yield", 1).await;
    assert!(
        s3.pending_uploads().is_empty(),
        "the upload of the backup that gave way was aborted"
    );
}
