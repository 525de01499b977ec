//! Fixtures the end-to-end tests share: contexts for the two pipelines, a database with one
//! good backup, fake old backups, objects replaced behind pgvigil's back, stock-tool restores,
//! gzip helpers and encryption key files. Test files use these; they export nothing themselves.

use crate::{init_logs, sample, settings, PgServer, S3Server};
use age::secrecy::ExposeSecret;
use age::x25519::Identity;
use bytes::Bytes;
use flate2::read::MultiGzDecoder;
use pgvigil_core::infra::config::Role;
use pgvigil_core::infra::storage::{self, DynStorage};
use pgvigil_core::pipeline::backup::{self, BackupContext, BackupOutcome};
use pgvigil_core::pipeline::verify::{self, VerifyContext};
use pgvigil_core::records::keys::{BackupId, Layout};
use pgvigil_core::records::manifest;
use sha2::Digest;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use tokio_util::sync::CancellationToken;

/// A backup context for database `db` of `pg`, on the storage `storage_vars` name, with `extra` variables.
pub async fn context(
    pg: &PgServer,
    db: &str,
    storage_vars: Vec<(&'static str, String)>,
    extra: &[(&'static str, String)],
) -> BackupContext {
    let mut vars = storage_vars;
    vars.push(("DATABASE_URL", pg.url(db)));
    vars.extend(extra.iter().cloned());
    let s = settings(&vars, Role::Backup);
    let st = storage::connect(&s.storage).await.unwrap();
    BackupContext::new(&s, s.database_url.clone().unwrap(), st)
}

/// Restores a gzip file with stock tools: `gunzip -t`, then `gunzip -c FILE | psql`.
pub fn stock_restore(pg: &PgServer, file: &std::path::Path, db: &str) {
    let t = Command::new("gunzip").arg("-t").arg(file).output().unwrap();
    assert!(
        t.status.success(),
        "gunzip -t rejected the backup: {}",
        String::from_utf8_lossy(&t.stderr)
    );
    let mut gz = Command::new("gunzip").arg("-c").arg(file).stdout(Stdio::piped()).spawn().unwrap();
    let out = pg.psql_into(db).stdin(gz.stdout.take().unwrap()).output().unwrap();
    assert!(gz.wait().unwrap().success());
    assert!(out.status.success(), "psql failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Downloads object `key` into `dir`, under its file name.
pub async fn download(st: &DynStorage, key: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let bytes = storage::get_bytes(
        st.as_ref(),
        &pgvigil_core::infra::storage::Key::new(key).unwrap(),
        u64::MAX,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    let path = dir.join(key.rsplit('/').next().unwrap());
    std::fs::File::create(&path).unwrap().write_all(&bytes).unwrap();
    path
}

/// A `pg_dump` that stops writing for `pause_secs` after `mb` MiB (its locks held), then goes on;
/// later calls run the real one. It exits with pg_dump's own status (`pipefail`).
pub fn pausing_pg_dump(dir: &std::path::Path, mb: u32, pause_secs: u32) -> (String, std::path::PathBuf) {
    let real = crate::pg::bindir().join("pg_dump");
    let marker = dir.join("paused");
    let wrapper = dir.join("pg_dump_pauses");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/bash\nset -o pipefail\ncase \"$1\" in --version) exec {real} --version;; esac\nif [ -e {m}.done ]; then exec {real} \"$@\"; fi\n{real} \"$@\" | {{ dd bs=1M count={mb} iflag=fullblock 2>/dev/null; touch {m}; sleep {pause_secs}; touch {m}.done; cat; }}\n",
            real = real.display(),
            m = marker.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (wrapper.display().to_string(), marker)
}

/// Every file below `dir`, recursively.
pub fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

/// Complete (tiny, fake) backups taken `days` ago, newest last in the list as given.
pub async fn fake_old_backups(st: &dyn pgvigil_core::infra::storage::Storage, layout: &Layout, days: &[i64]) -> Vec<BackupId> {
    let now = chrono::Utc::now();
    let times: Vec<chrono::DateTime<chrono::Utc>> = days.iter().map(|d| now - chrono::Duration::days(*d)).collect();
    fake_backups_at(st, layout, &times).await
}

/// Complete backups (a tiny object and its manifest) stamped at the given times.
pub async fn fake_backups_at(
    st: &dyn pgvigil_core::infra::storage::Storage,
    layout: &Layout,
    times: &[chrono::DateTime<chrono::Utc>],
) -> Vec<BackupId> {
    let ids: Vec<BackupId> = times.iter().map(|t| BackupId::at(*t)).collect();
    for id in &ids {
        storage::put_bytes(st, &layout.backup(*id), Bytes::from_static(b"old"), &CancellationToken::new())
            .await
            .unwrap();
        let m = pgvigil_core::records::manifest::Manifest {
            format: 1,
            key: layout.backup(*id).to_string(),
            size: 3,
            sha256: String::new(),
            uncompressed_size: 3,
            started_at: id.0,
            finished_at: id.0,
            database: "app".into(),
            server_version: "15.0".into(),
            pg_dump_version: "15.0".into(),
            compression_level: 6,
            parts: 1,
            tables: Default::default(),
            privileges: None,
            globals: None,
            encryption: None,
            locked_until: None,
            table_members: Vec::new(),
            before_data: None,
            after_data: None,
            between_data: Vec::new(),
            toc: Vec::new(),
        };
        manifest::write(st, layout, *id, &m, None, &CancellationToken::new()).await.unwrap();
    }
    ids
}

/// A verification context on the S3 test server under `prefix`, with `extra` variables (no random picks).
pub async fn verify_context(pg: &PgServer, s3: &S3Server, prefix: &str, extra: &[(&'static str, String)]) -> VerifyContext {
    let mut vars = s3.vars(prefix);
    vars.push(("VERIFY_DATABASE_URL", pg.url("postgres")));
    vars.push(("VERIFY_RANDOM_RATE", "0".into()));
    vars.extend(extra.iter().cloned());
    let s = settings(&vars, Role::Verify);
    let st = storage::connect(&s.storage).await.unwrap();
    VerifyContext::new(&s, s.verify_database_url.clone().unwrap(), st)
}

/// A source database and one good backup of it.
pub async fn setup(prefix: &str) -> (PgServer, S3Server, BackupOutcome, DynStorage) {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 300).await;
    let s3 = S3Server::start().await;
    let ctx = context(&pg, "app", s3.vars(prefix), &[]).await;
    let out = backup::run_once(&ctx, &CancellationToken::new()).await.unwrap();
    (pg, s3, out, ctx.storage)
}

/// The scratch databases left on `pg`.
pub async fn scratch_dbs(pg: &PgServer) -> Vec<String> {
    pg.databases()
        .await
        .into_iter()
        .filter(|d| d.starts_with(verify::SCRATCH_PREFIX))
        .collect()
}

/// A storage key (valid by construction in tests).
pub fn key(s: &str) -> pgvigil_core::infra::storage::Key {
    pgvigil_core::infra::storage::Key::new(s).unwrap()
}

/// Replaces the backup object with `data`, optionally keeping the manifest in step with it.
pub async fn replace_object(
    st: &DynStorage,
    out: &BackupOutcome,
    data: Vec<u8>,
    update_manifest: bool,
    edit: impl FnOnce(&mut manifest::Manifest),
) {
    let k = key(&out.manifest.key);
    let mut m = out.manifest.clone();
    if update_manifest {
        m.size = data.len() as u64;
        m.sha256 = hex::encode(sha2::Sha256::digest(&data));
    }
    edit(&mut m);
    storage::put_bytes(st.as_ref(), &k, Bytes::from(data), &CancellationToken::new())
        .await
        .unwrap();
    let layout = pgvigil_core::records::keys::Layout::new(out.manifest.key.rsplit_once('/').unwrap().0);
    manifest::write(st.as_ref(), &layout, out.id, &m, None, &CancellationToken::new())
        .await
        .unwrap();
}

/// The backup object as stored.
pub async fn original(st: &DynStorage, out: &BackupOutcome) -> Vec<u8> {
    storage::get_bytes(st.as_ref(), &key(&out.manifest.key), u64::MAX, &CancellationToken::new())
        .await
        .unwrap()
}

/// Every gzip member of `data`, inflated.
pub fn gunzip(data: &[u8]) -> String {
    let mut s = String::new();
    MultiGzDecoder::new(data).read_to_string(&mut s).unwrap();
    s
}

/// `s` as one gzip member.
pub fn gzip(s: &str) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(s.as_bytes()).unwrap();
    e.finish().unwrap()
}

/// The reasons of a verification that must fail.
pub async fn verdict(pg: &PgServer, s3: &S3Server, prefix: &str, extra: &[(&'static str, String)]) -> Vec<String> {
    let ctx = verify_context(pg, s3, prefix, extra).await;
    let rec = verify::run_and_log(&ctx, None, &CancellationToken::new()).await.unwrap();
    assert!(!rec.passed, "expected a failed verification");
    assert!(scratch_dbs(pg).await.is_empty(), "scratch database dropped after a failure");
    rec.reasons
}

/// Whether any reason contains `want`.
pub fn has(reasons: &[String], want: &str) -> bool {
    reasons.iter().any(|r| r.contains(want))
}

/// Writes `id` as an age identity file `name` in `dir`; returns its path.
pub fn key_file(dir: &std::path::Path, name: &str, id: &Identity) -> String {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "# created: test\n# public key: {}\n{}\n",
            id.to_public(),
            id.to_string().expose_secret()
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// Records a verification of `id` that passed or failed, an hour after it was taken.
pub async fn record_verdict(st: &dyn pgvigil_core::infra::storage::Storage, layout: &Layout, id: BackupId, passed: bool) {
    let rec = pgvigil_core::records::history::VerificationRecord {
        causes: Vec::new(),
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
    pgvigil_core::records::history::write_verification(st, layout, id, &rec, &CancellationToken::new())
        .await
        .unwrap();
}
