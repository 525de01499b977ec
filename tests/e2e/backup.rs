//! Backup behaviour against a real PostgreSQL and a real S3 server.

use bytes::Bytes;
use pgvigil_core::infra::storage;
use pgvigil_core::pipeline::backup::{self, BackupError};
use pgvigil_core::records::catalog::Catalog;
use pgvigil_core::records::keys::{BackupId, Layout};
use pgvigil_core::records::manifest;
use pgvigil_e2e::fixtures::{context, download, fake_old_backups, pausing_pg_dump, stock_restore, walk};
use pgvigil_e2e::lines;
use pgvigil_e2e::run::{run, text};
use pgvigil_e2e::{init_logs, sample, PgServer, S3Server};
use std::io::Write;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn backup_restores_with_stock_tools_and_the_manifest_is_exact() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 300).await;
    let s3 = S3Server::start().await;
    let ctx = context(&pg, "app", s3.vars("prod/main"), &[]).await;
    let out = backup::run_once(&ctx, &CancellationToken::new()).await.unwrap();

    let cat = Catalog::load(ctx.storage.as_ref(), &ctx.layout, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(cat.backups.len(), 1);
    assert!(cat.backups[0].complete);
    assert!(cat.foreign.is_empty(), "only backups under the prefix: {:?}", cat.foreign);
    let listing: Vec<String> = ctx
        .storage
        .list("prod/main/", &CancellationToken::new())
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(
        listing,
        vec![out.manifest.key.clone(), "prod/main/backup_latest.sql.gz".to_string()]
    );

    let dir = tempfile::tempdir().unwrap();
    let file = download(&ctx.storage, &out.manifest.key, dir.path()).await;
    let latest = download(&ctx.storage, "prod/main/backup_latest.sql.gz", dir.path()).await;
    assert_eq!(std::fs::read(&file).unwrap(), std::fs::read(&latest).unwrap());
    use sha2::Digest;
    assert_eq!(
        hex::encode(sha2::Sha256::digest(std::fs::read(&file).unwrap())),
        out.manifest.sha256
    );
    assert_eq!(std::fs::metadata(&file).unwrap().len(), out.manifest.size);

    pg.create_db("restored").await;
    stock_restore(&pg, &file, "restored");
    assert_eq!(sample::row_counts(&pg, "app").await, sample::row_counts(&pg, "restored").await);
    assert_eq!(sample::checksums(&pg, "app").await, sample::checksums(&pg, "restored").await);
    assert!(sample::objects_ok(&pg, "restored").await);

    // The manifest's counts are exactly count(*) on the source, for every table.
    let m = manifest::read(ctx.storage.as_ref(), &ctx.layout, out.id, &CancellationToken::new())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m, out.manifest);
    let source = sample::row_counts(&pg, "app").await;
    assert_eq!(m.tables.len(), source.len(), "{:?}", m.tables);
    let mut c = pg.connect("app").await;
    for (table, rows) in &m.tables {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM ONLY {table}"))
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(n as u64, *rows, "{table}");
    }
    assert_eq!(m.tables["public.customers"], 300);
    assert_eq!(m.tables["sales.orders"], 600);
    assert_eq!(m.database, "app");
    assert!(m.uncompressed_size > m.size);
}

#[tokio::test]
async fn each_tables_data_is_a_run_of_whole_members_fetched_with_a_ranged_get() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 200).await;
    // A table larger than several gzip members, and an empty one.
    pg.exec(
        "app",
        "CREATE TABLE public.big (id int, body text);
         INSERT INTO public.big SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 15000) g;
         CREATE TABLE public.\"empty one\" (id int);",
    )
    .await;
    let s3 = S3Server::start().await;
    let ctx = context(&pg, "app", s3.vars("prod/main"), &[]).await;
    let out = backup::run_once(&ctx, &CancellationToken::new()).await.unwrap();
    let m = out.manifest;
    let dir = tempfile::tempdir().unwrap();
    let object = std::fs::read(download(&ctx.storage, &m.key, dir.path()).await).unwrap();

    // One range per table, with the manifest's row counts, in order and not overlapping.
    let ranged: std::collections::BTreeMap<&str, u64> = m.table_members.iter().map(|t| (t.table.as_str(), t.rows)).collect();
    let counted: std::collections::BTreeMap<&str, u64> = m.tables.iter().map(|(t, r)| (t.as_str(), *r)).collect();
    assert_eq!(ranged, counted);
    assert!(m.table_members.windows(2).all(|w| w[0].offset + w[0].length <= w[1].offset));
    assert_eq!(m.tables["public.big"], 15000);
    assert_eq!(m.tables["public.\"empty one\""], 0);
    for t in &m.table_members {
        // Cut out by the recorded range alone, the bytes are whole gzip members holding exactly
        // the table's COPY block: its COPY line, one line per row, and the closing `\.`.
        let bytes = &object[t.offset as usize..(t.offset + t.length) as usize];
        let mut sql = String::new();
        std::io::Read::read_to_string(&mut flate2::read::MultiGzDecoder::new(bytes), &mut sql).unwrap();
        assert!(
            sql.starts_with(&format!("COPY {} (", t.table)),
            "{}: {}",
            t.table,
            &sql[..sql.len().min(80)]
        );
        assert!(sql.ends_with("FROM stdin;\n\\.\n") || sql.ends_with("\n\\.\n"), "{}", t.table);
        assert_eq!(sql.lines().count() as u64, t.rows + 2, "{}", t.table);
        assert_eq!(t.sha256.as_deref(), Some(sha256_hex(bytes).as_str()), "{}", t.table);
    }
    // What comes before the first block is the schema, what follows the last one the indexes,
    // constraints and the rest: both whole members, with their own hashes, ending where the
    // dump's members end.
    let (before, after) = (m.before_data.clone().unwrap(), m.after_data.clone().unwrap());
    let first = m.table_members.first().unwrap();
    let last = m.table_members.last().unwrap();
    assert_eq!((before.offset, before.length), (0, first.offset));
    assert_eq!(after.offset, last.offset + last.length);
    for (range, holds) in [(&before, "CREATE TABLE public.big"), (&after, "PRIMARY KEY")] {
        let bytes = &object[range.offset as usize..(range.offset + range.length) as usize];
        assert_eq!(range.sha256, sha256_hex(bytes));
        let mut sql = String::new();
        std::io::Read::read_to_string(&mut flate2::read::MultiGzDecoder::new(bytes), &mut sql).unwrap();
        assert!(sql.contains(holds), "{holds}");
        assert!(!sql.contains("FROM stdin;"), "no COPY block outside the tables' ranges");
    }
    // The comment runs between the blocks have their own hashes too: every byte of the object
    // lies in a part whose hash is recorded.
    assert!(!m.between_data.is_empty());
    for run in &m.between_data {
        let bytes = &object[run.offset as usize..(run.offset + run.length) as usize];
        assert_eq!(run.sha256, sha256_hex(bytes));
        let mut sql = String::new();
        std::io::Read::read_to_string(&mut flate2::read::MultiGzDecoder::new(bytes), &mut sql).unwrap();
        assert!(sql.lines().all(|l| l.is_empty() || l.starts_with("--")), "{sql}");
    }
    let covered = before.length
        + after.length
        + m.table_members.iter().map(|t| t.length).sum::<u64>()
        + m.between_data.iter().map(|r| r.length).sum::<u64>();
    assert_eq!(covered, m.size);
    // The big table spans several members, and a ranged GET from the store returns the same
    // bytes, which stock gunzip reads and psql loads back into an emptied table.
    let big = m.table_members.iter().find(|t| t.table == "public.big").unwrap();
    assert!(big.length > 3 * 64 * 1024, "{}", big.length);
    let fetched = s3.get_range(&m.key, big.offset, big.length).await;
    assert_eq!(fetched, object[big.offset as usize..(big.offset + big.length) as usize]);
    let part = dir.path().join("big.sql.gz");
    std::fs::write(&part, &fetched).unwrap();
    pg.exec("app", "TRUNCATE public.big").await;
    stock_restore(&pg, &part, "app");
    let mut c = pg.connect("app").await;
    let (n, sum): (i64, String) = sqlx::query_as("SELECT count(*), md5(string_agg(body, ',' ORDER BY id)) FROM public.big")
        .fetch_one(&mut c)
        .await
        .unwrap();
    let want: String =
        sqlx::query_scalar("SELECT md5(string_agg(repeat(md5(g::text), 8), ',' ORDER BY g)) FROM generate_series(1, 15000) g")
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert_eq!((n, sum), (15000, want));
}

/// A pg_dump stand-in that runs the real pg_dump but fails part-way, as a crashing pg_dump
/// or a dropped connection would.
fn failing_pg_dump(dir: &std::path::Path, exit_code: i32) -> String {
    let real = pgvigil_e2e::pg::bindir().join("pg_dump");
    let path = dir.join(format!("pg_dump_fails_{exit_code}"));
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\ncase \"$1\" in --version) exec {real} --version;; esac\n{real} \"$@\" | dd bs=4096 count=8 iflag=fullblock 2>/dev/null\necho 'pg_dump: error: connection to server lost' >&2\nexit {exit_code}\n",
            real = real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn a_failed_dump_publishes_nothing_and_leaves_latest_untouched() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 2000).await;
    let s3 = S3Server::start().await;
    let good = context(&pg, "app", s3.vars("b"), &[]).await;
    backup::run_and_log(&good, &CancellationToken::new()).await.unwrap();
    let latest_before = storage::get_bytes(good.storage.as_ref(), &good.layout.latest(), u64::MAX, &CancellationToken::new())
        .await
        .unwrap();
    let objects_before = good.storage.list("", &CancellationToken::new()).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    for (code, want) in [(1, "pg_dump exited with status 1"), (0, "the dump ended inside the data of table")] {
        let ctx = context(&pg, "app", s3.vars("b"), &[("PG_DUMP_PATH", failing_pg_dump(dir.path(), code))]).await;
        let err = backup::run_and_log(&ctx, &CancellationToken::new()).await.unwrap_err();
        assert!(err.to_string().contains(want), "{err}");
        assert!(!err.to_string().contains(pgvigil_e2e::pg::PASSWORD));
        let now: Vec<_> = ctx
            .storage
            .list("", &CancellationToken::new())
            .await
            .unwrap()
            .into_iter()
            .filter(|o| !o.key.contains("/failures/"))
            .collect();
        assert_eq!(now, objects_before, "something was published or deleted");
        assert!(s3.pending_uploads().is_empty());
        assert_eq!(
            storage::get_bytes(ctx.storage.as_ref(), &ctx.layout.latest(), u64::MAX, &CancellationToken::new())
                .await
                .unwrap(),
            latest_before
        );
    }
    let cat = Catalog::load(good.storage.as_ref(), &good.layout, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(cat.failures.len(), 2, "failure records kept for reports");
}

async fn wait_for(path: &std::path::Path) {
    for _ in 0..600 {
        if path.exists() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{} never appeared", path.display());
}

#[tokio::test]
async fn cancelling_a_backup_aborts_the_upload() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 30_000).await;
    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (wrapper, marker) = pausing_pg_dump(dir.path(), 10, 30);
    let ctx = context(
        &pg,
        "app",
        s3.vars("c"),
        &[("S3_PART_SIZE_MB", "5".into()), ("PG_DUMP_PATH", wrapper)],
    )
    .await;
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        wait_for(&marker).await;
        c2.cancel();
    });
    let started = std::time::Instant::now();
    let r = backup::run_once(&ctx, &cancel).await;
    assert!(matches!(r, Err(BackupError::Cancelled)), "{r:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "cancel must not wait for pg_dump"
    );
    assert!(
        ctx.storage.list("", &CancellationToken::new()).await.unwrap().is_empty(),
        "nothing may be published"
    );
    assert!(s3.pending_uploads().is_empty(), "the multipart upload was aborted");
}

#[tokio::test]
async fn an_s3_outage_mid_upload_publishes_nothing_and_the_service_resumes() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 30_000).await;
    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    // A pg_dump that pauses after 10 MiB so the test can take S3 down while the upload is open.
    let (wrapper, marker) = pausing_pg_dump(dir.path(), 10, 3);
    let ctx = context(
        &pg,
        "app",
        s3.vars("o"),
        &[
            ("S3_PART_SIZE_MB", "5".into()),
            ("PG_DUMP_PATH", wrapper),
            ("BACKUP_INTERVAL", "3600".into()),
        ],
    )
    .await;

    let health = pgvigil_service::health::Health::new(std::time::Duration::from_secs(3600), pgvigil_core::infra::config::Role::Backup);
    let job = pgvigil_service::jobs::BackupJob::new(ctx.clone(), health.clone(), Default::default());
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    let h2 = health.clone();
    let service = tokio::spawn(async move {
        let backoff = pgvigil_service::retry::Backoff::new(std::time::Duration::from_secs(1), std::time::Duration::from_secs(2));
        pgvigil_service::runner::run_forever(&job, backoff, &h2, &c2).await;
    });
    wait_for(&marker).await;
    s3.stop();
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    // While S3 is down nothing can have been published; check the bucket directory directly.
    let published: Vec<_> = walk(s3.root.path()).into_iter().filter(|p| p.contains("backup_20")).collect();
    assert!(published.is_empty(), "{published:?}");
    s3.restart().await;
    let mut done = None;
    for _ in 0..600 {
        if let Ok(cat) = Catalog::load(ctx.storage.as_ref(), &ctx.layout, &CancellationToken::new()).await {
            if let Some(b) = cat.newest_complete() {
                done = Some(b.clone());
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    cancel.cancel();
    service.await.unwrap();
    let b = done.expect("the service resumed by itself and completed a backup");
    let cat = Catalog::load(ctx.storage.as_ref(), &ctx.layout, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(cat.backups.len(), 1, "exactly one backup, no partial ones: {:?}", cat.backups);
    let m = manifest::read(ctx.storage.as_ref(), &ctx.layout, b.id, &CancellationToken::new())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.tables["public.customers"], 30_000);
    assert!(!cat.failures.is_empty() || health.verdict().0, "the failed attempt was recorded");
}

#[tokio::test]
async fn retention_deletes_only_old_pgvigil_backups() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 10).await;
    let dir = tempfile::tempdir().unwrap();
    let local = vec![("BACKUP_DIR", dir.path().display().to_string()), ("BACKUP_PREFIX", "r".to_string())];
    let ctx = context(
        &pg,
        "app",
        local,
        &[("BACKUP_RETENTION_DAYS", "7".into()), ("BACKUP_MIN_KEEP", "2".into())],
    )
    .await;
    let layout = Layout::new("r");
    let st = ctx.storage.as_ref();
    let old = fake_old_backups(st, &layout, &[30, 20, 10, 3]).await;
    let foreign = [
        "r/notes.txt",
        "r/backup_2001-01-01T00-00-00Z.sql.gz.bak",
        "r/other/backup_2001-01-01T00-00-00Z.sql.gz",
        "elsewhere/backup_2001-01-01T00-00-00Z.sql.gz",
    ];
    for k in foreign {
        storage::put_bytes(
            st,
            &pgvigil_core::infra::storage::Key::new(k).unwrap(),
            Bytes::from_static(b"keep me"),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    }
    let out = backup::run_once(&ctx, &CancellationToken::new()).await.unwrap();
    assert_eq!(out.retention.delete, vec![old[0], old[1], old[2]]);
    let cat = Catalog::load(st, &layout, &CancellationToken::new()).await.unwrap();
    let ids: Vec<BackupId> = cat.backups.iter().map(|b| b.id).collect();
    assert_eq!(ids, vec![out.id, old[3]]);
    for k in foreign {
        assert!(
            st.head(&pgvigil_core::infra::storage::Key::new(k).unwrap(), &CancellationToken::new())
                .await
                .unwrap()
                .is_some(),
            "{k} was deleted"
        );
    }
    assert!(cat.orphan_manifests.is_empty(), "manifests of deleted backups are deleted too");
}

#[tokio::test]
async fn the_schedule_is_derived_from_the_newest_backup() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 10).await;
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(
        &pg,
        "app",
        vec![("BACKUP_DIR", dir.path().display().to_string())],
        &[("BACKUP_INTERVAL", "3600".into())],
    )
    .await;
    let health = || pgvigil_service::health::Health::new(std::time::Duration::from_secs(3600), pgvigil_core::infra::config::Role::Backup);
    let job = pgvigil_service::jobs::BackupJob::new(ctx.clone(), health(), Default::default());
    use pgvigil_service::runner::Job;
    assert_eq!(
        job.due_in(&CancellationToken::new()).await.unwrap().as_secs(),
        0,
        "no backup yet: due at once"
    );
    backup::run_once(&ctx, &CancellationToken::new()).await.unwrap();
    // A restarted service (a new job over the same storage) waits for the rest of the interval.
    let restarted = pgvigil_service::jobs::BackupJob::new(ctx.clone(), health(), Default::default());
    let wait = restarted.due_in(&CancellationToken::new()).await.unwrap().as_secs();
    assert!((3590..=3600).contains(&wait), "{wait}");
    // Its metrics know the newest backup from storage, before it has run at all.
    let m = restarted.health.metrics();
    assert!(m.contains("pgvigil_backups_stored{service=\"backup\"} 1"), "{m}");
    assert!(m.contains("pgvigil_newest_backup_timestamp_seconds{service=\"backup\"} 1"), "{m}");
}

#[tokio::test]
async fn the_binary_gives_one_plain_message_per_problem_and_no_secret() {
    let pg = PgServer::start();
    sample::build(&pg, "app", 10).await;
    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();

    // Success: exit 0 and the operator line.
    let mut vars = s3.vars("bin");
    vars.push(("DATABASE_URL", pg.url("app")));
    let o = run("pgvigil-backup", &["--once"], &vars).await;
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains(lines::BACKUP_STARTED) && t.contains(lines::BACKUP_COMPLETED), "{t}");
    assert!(
        !t.contains(pgvigil_e2e::pg::PASSWORD) && !t.contains(pgvigil_e2e::s3::SECRET_KEY),
        "{t}"
    );

    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (
            vec![
                ("DATABASE_URL", pg.url_as("postgres", "wrong-password-xyz", "app")),
                ("BACKUP_DIR", dir.path().display().to_string()),
            ],
            "authentication failed",
        ),
        (
            vec![
                ("DATABASE_URL", "postgresql://postgres:pw-unreachable@127.0.0.1:9/app".into()),
                ("BACKUP_DIR", dir.path().display().to_string()),
            ],
            "cannot reach",
        ),
        (
            vec![
                ("DATABASE_URL", pg.url("nosuchdb")),
                ("BACKUP_DIR", dir.path().display().to_string()),
            ],
            "does not exist",
        ),
        (
            {
                let mut v = s3.vars("bin");
                v.retain(|(k, _)| *k != "S3_BUCKET");
                v.push(("S3_BUCKET", "missing-bucket".into()));
                v.push(("DATABASE_URL", pg.url("app")));
                v
            },
            "the bucket does not exist",
        ),
    ];
    for (vars, want) in cases {
        let o = run("pgvigil-backup", &["--once"], &vars).await;
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{t}");
        assert!(t.contains(want), "expected {want:?} in:\n{t}");
        for secret in [
            "wrong-password-xyz",
            "pw-unreachable",
            pgvigil_e2e::pg::PASSWORD,
            pgvigil_e2e::s3::SECRET_KEY,
        ] {
            assert!(!t.contains(secret), "secret {secret} printed:\n{t}");
        }
        assert!(!t.contains("panicked") && !t.contains("RUST_BACKTRACE"), "{t}");
    }

    // Bad configuration: exit 2, every problem named at once.
    let o = run(
        "pgvigil-backup",
        &["--once"],
        &[("BACKUP_INTERVAL", "6h".into()), ("COMPRESSION_LEVEL", "0".into())],
    )
    .await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    for want in [
        "DATABASE_URL: required",
        "S3_BUCKET: required",
        "BACKUP_INTERVAL: expected whole seconds",
        "COMPRESSION_LEVEL: expected a gzip level",
    ] {
        assert!(t.contains(want), "expected {want:?} in:\n{t}");
    }
}

#[tokio::test]
async fn an_older_pg_dump_than_the_server_is_refused_in_plain_words() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 10).await;
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("pg_dump");
    std::fs::write(&old, "#!/bin/sh\necho 'pg_dump (PostgreSQL) 12.22'\n").unwrap();
    std::fs::set_permissions(&old, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let ctx = context(
        &pg,
        "app",
        vec![("BACKUP_DIR", dir.path().join("b").display().to_string())],
        &[("PG_DUMP_PATH", old.display().to_string())],
    )
    .await;
    let err = backup::run_once(&ctx, &CancellationToken::new()).await.unwrap_err().to_string();
    assert!(
        err.contains("runs PostgreSQL 15") && err.contains("needs pg_dump 15 or newer") && err.contains("12.22"),
        "{err}"
    );
    assert!(err.contains("postgresql-client-15") && err.contains("PG_DUMP_PATH"), "{err}");
}

#[tokio::test]
async fn sigterm_aborts_an_in_flight_upload_and_exits_promptly() {
    let pg = PgServer::start();
    sample::build(&pg, "app", 30_000).await;
    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (wrapper, marker) = pausing_pg_dump(dir.path(), 10, 60);
    let mut vars = s3.vars("term");
    vars.push(("DATABASE_URL", pg.url("app")));
    vars.push(("PG_DUMP_PATH", wrapper));
    vars.push(("S3_PART_SIZE_MB", "5".into()));
    let child = pgvigil_e2e::run::spawn("pgvigil-backup", &[], &vars);
    wait_for(&marker).await;
    let out = pgvigil_e2e::run::terminate(child).await;
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("SIGTERM received") && t.contains("interrupted by shutdown"), "{t}");
    let published: Vec<_> = walk(s3.root.path())
        .into_iter()
        .filter(|p| p.contains("/term/") && !p.contains("/policy/"))
        .collect();
    assert!(published.is_empty(), "{published:?}");
    assert!(s3.pending_uploads().is_empty(), "the multipart upload was aborted");
}

#[tokio::test]
async fn the_latest_copy_can_be_turned_off_and_then_none_is_left_stale() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 10).await;
    let s3 = pgvigil_e2e::S3Server::start().await;
    let mut vars = s3.vars("nolatest");
    vars.push(("DATABASE_URL", pg.url("app")));
    let latest = s3.root.path().join(pgvigil_e2e::s3::BUCKET).join("nolatest/backup_latest.sql.gz");
    let o = pgvigil_e2e::run::run("pgvigil-backup", &["--once"], &vars).await;
    assert!(o.status.success(), "{}", pgvigil_e2e::run::text(&o));
    assert!(latest.exists());
    assert!(pgvigil_e2e::run::text(&o).contains("updated nolatest/backup_latest.sql.gz (server-side copy)"));
    // A stale encrypted copy too (left by an earlier failed delete): both forms go.
    let sealed = latest.with_file_name("backup_latest.sql.gz.age");
    std::fs::write(&sealed, b"stale").unwrap();
    vars.push(("BACKUP_LATEST_COPY", "false".into()));
    let o = pgvigil_e2e::run::run("pgvigil-backup", &["--once"], &vars).await;
    assert!(o.status.success(), "{}", pgvigil_e2e::run::text(&o));
    assert!(!latest.exists() && !sealed.exists(), "a copy of an older backup is not left behind");
}

#[tokio::test]
async fn deep_check_inflates_members_in_parallel_and_older_objects_in_sequence() {
    use sha2::Digest;
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 3000).await;
    let dir = tempfile::tempdir().unwrap();
    let vars = vec![
        ("BACKUP_DIR", dir.path().display().to_string()),
        ("BACKUP_PREFIX", "deep".to_string()),
        ("DATABASE_URL", pg.url("app")),
    ];
    let o = pgvigil_e2e::run::run("pgvigil-backup", &["--once"], &vars).await;
    assert!(o.status.success(), "{}", pgvigil_e2e::run::text(&o));
    let check = |args: &'static [&'static str]| {
        let vars = vars.clone();
        async move {
            let o = pgvigil_e2e::run::run("pgvigil", args, &vars).await;
            (o.status.code(), pgvigil_e2e::run::text(&o))
        }
    };
    let (code, out) = check(&["check", "--deep"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("checked: deep") && out.contains("OK "), "{out}");

    let object = std::fs::read_dir(dir.path().join("deep"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("backup_2"))
        .unwrap();
    let original = std::fs::read(&object).unwrap();
    let manifests = dir.path().join("_pgvigil/deep/manifests");
    let mpath = std::fs::read_dir(&manifests).unwrap().next().unwrap().unwrap().path();
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    let mut replace = |bytes: &[u8]| {
        std::fs::write(&object, bytes).unwrap();
        m["size"] = bytes.len().into();
        m["sha256"] = hex::encode(sha2::Sha256::digest(bytes)).into();
        std::fs::write(&mpath, serde_json::to_vec(&m).unwrap()).unwrap();
    };

    // Truncated inside a member, with a manifest made to agree (so only the gzip layer can tell).
    replace(&original[..original.len() / 2]);
    let (code, out) = check(&["check", "--deep"]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("CORRUPTED") && out.contains("truncated"), "{out}");

    // An object gzipped by another tool (one member, no recorded lengths): the sequential path
    // reads it.
    let mut sql = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&original[..]), &mut sql).unwrap();
    let mut other = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    other.write_all(&sql).unwrap();
    replace(&other.finish().unwrap());
    let (code, out) = check(&["check", "--deep"]).await;
    assert_eq!(code, Some(0), "{out}");
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
