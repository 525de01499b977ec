//! Authenticated backups and bounded time. With `BACKUP_TRUSTED_KEYS`, only what the backup
//! service signed (`BACKUP_SIGNING_KEY_FILE`) is verified or restored, the stock `minisign` tool
//! checks a manifest without pgvigil, and an unsigned, wrongly signed or altered backup is
//! refused as "not made by a trusted backup service". A backup dated in the future never becomes
//! the newest and is left alone.

use bytes::Bytes;
use pgvigil_core::infra::storage::faulty::{self, Faulty, Op};
use pgvigil_core::infra::storage::{self, Key};
use pgvigil_core::pipeline::backup;
use pgvigil_core::pipeline::verify::{self, VerifyContext};
use pgvigil_core::records::keys::{BackupId, Layout};
use pgvigil_core::records::manifest;
use pgvigil_e2e::fixtures::{context, verify_context};
use pgvigil_e2e::lines;
use pgvigil_e2e::run::{run, text};
use pgvigil_e2e::{corpus, init_logs, PgServer, S3Server};
use std::path::{Path, PathBuf};
use std::process::Command;
use tokio_util::sync::CancellationToken;

/// A key pair made by the stock tool, without a password: (secret key file, public key).
fn minisign_keypair(dir: &Path, name: &str) -> (PathBuf, String) {
    let (sk, pk) = (dir.join(format!("{name}.key")), dir.join(format!("{name}.pub")));
    let out = Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(&pk)
        .arg("-s")
        .arg(&sk)
        .output()
        .expect("the minisign command line tool (apt-get install minisign)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let public = std::fs::read_to_string(&pk).unwrap().lines().nth(1).unwrap().trim().to_string();
    (sk, public)
}

async fn fetch(st: &storage::DynStorage, key: &Key) -> Vec<u8> {
    storage::get_bytes(st.as_ref(), key, u64::MAX, &CancellationToken::new())
        .await
        .unwrap()
}

#[tokio::test]
async fn only_backups_signed_by_a_trusted_key_are_verified_or_restored() {
    init_logs();
    let pg = PgServer::start();
    corpus::build(&pg, "corpus").await;
    let s3 = S3Server::start().await;
    let keys = tempfile::tempdir().unwrap();
    let (secret, public) = minisign_keypair(keys.path(), "pgvigil");
    let (other_secret, _) = minisign_keypair(keys.path(), "other");

    // A signed backup of a realistic schema.
    let signing = [("BACKUP_SIGNING_KEY_FILE", secret.display().to_string())];
    let ctx = context(&pg, "corpus", s3.vars("signed"), &signing).await;
    let out = backup::run_once(&ctx, &CancellationToken::new()).await.unwrap();
    let layout = Layout::new("signed");

    // Anyone can check it with the stock tool.
    let m_path = keys.path().join("manifest.json");
    let s_path = keys.path().join("manifest.json.minisig");
    std::fs::write(&m_path, fetch(&ctx.storage, &layout.manifest(out.id)).await).unwrap();
    std::fs::write(&s_path, fetch(&ctx.storage, &layout.manifest_signature(out.id)).await).unwrap();
    let checked = Command::new("minisign")
        .args(["-V", "-P", &public, "-m"])
        .arg(&m_path)
        .arg("-x")
        .arg(&s_path)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "minisign -V: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(String::from_utf8_lossy(&checked.stdout).contains(&format!("pgvigil manifest for {}", out.manifest.key)));

    let mut vars = s3.vars("signed");
    vars.push(("VERIFY_DATABASE_URL", pg.url("postgres")));
    vars.push(("BACKUP_TRUSTED_KEYS", public.clone()));
    let v = run("pgvigil-verify", &["--once"], &vars).await;
    assert!(text(&v).contains(lines::VERIFY_PASSED), "{}", text(&v));

    // Signed, the backup is restored over two sessions reading the object once, part by part
    // (each against its recorded hash): no read of the whole object is made.
    let jobs = [("BACKUP_TRUSTED_KEYS", public.clone()), ("VERIFY_JOBS", "2".to_string())];
    let plain = verify_context(&pg, &s3, "signed", &jobs).await;
    let faulty = std::sync::Arc::new(Faulty::new(plain.storage.clone()));
    faulty.fail(Op::Get, &out.manifest.key, faulty::denied, None);
    let once = VerifyContext {
        storage: faulty.clone(),
        ..plain
    };
    let rec = verify::run_and_log(&once, None, &CancellationToken::new()).await.unwrap();
    assert!(rec.passed, "{:?}", rec.reasons);
    assert_eq!(rec.evidence.restore_sessions, Some(2), "{:?}", rec.evidence.one_stream);
    assert!(rec.evidence.signed_by.is_some());
    assert!(faulty.calls(Op::GetRange) > 3);

    // The key given inline (where files are awkward, as on Railway) signs the same way.
    let inline = [("BACKUP_SIGNING_KEY", std::fs::read_to_string(&secret).unwrap())];
    let inline_ctx = context(&pg, "corpus", s3.vars("signed"), &inline).await;
    let newer = backup::run_once(&inline_ctx, &CancellationToken::new()).await.unwrap();
    let v = run("pgvigil-verify", &["--once"], &vars).await;
    assert!(
        text(&v).contains(lines::VERIFY_PASSED) && text(&v).contains(&newer.manifest.key),
        "{}",
        text(&v)
    );

    // The same backup planted as newer ones: unsigned, signed by another key, changed after
    // it was signed.
    let plant = |id: BackupId, m: manifest::Manifest, signature: Option<String>| {
        let (st, out, layout) = (ctx.storage.clone(), out.clone(), layout.clone());
        async move {
            let never = CancellationToken::new();
            let object = fetch(&st, &Key::new(out.manifest.key.clone()).unwrap()).await;
            storage::put_bytes(st.as_ref(), &layout.backup(id), Bytes::from(object), &never)
                .await
                .unwrap();
            manifest::write(st.as_ref(), &layout, id, &m, None, &never).await.unwrap();
            if let Some(sig) = signature {
                storage::put_bytes(st.as_ref(), &layout.manifest_signature(id), Bytes::from(sig), &never)
                    .await
                    .unwrap();
            }
        }
    };
    pg.create_db("target").await;
    pg.exec("target", "CREATE TABLE precious (id int); INSERT INTO precious VALUES (1);")
        .await;
    let mut restore_vars = vars.clone();
    restore_vars.push(("RESTORE_DATABASE_URL", pg.url("target")));
    let key_of = |path: &Path| pgvigil_core::infra::signing::SigningKey::from_file_text(&std::fs::read_to_string(path).unwrap()).unwrap();
    let (ours, theirs) = (key_of(&secret), key_of(&other_secret));
    let cases = [
        ("unsigned", "the manifest is not signed"),
        ("signed by another key", "which is not among BACKUP_TRUSTED_KEYS"),
        ("changed after signing", "does not match"),
    ];
    for (i, (name, why)) in cases.into_iter().enumerate() {
        let id = BackupId::at(out.id.0 + chrono::Duration::minutes(i as i64 + 1));
        let mut m = out.manifest.clone();
        m.key = layout.backup(id).to_string();
        let json = serde_json::to_vec_pretty(&m).unwrap();
        let comment = manifest::signed_for(&m.key);
        let signature = match name {
            "unsigned" => None,
            "signed by another key" => Some(theirs.sign(&json, &comment).unwrap()),
            _ => {
                let honest = ours.sign(&json, &comment).unwrap();
                m.tables.clear();
                Some(honest)
            }
        };
        plant(id, m, signature).await;
        let v = run("pgvigil-verify", &["--once"], &vars).await;
        let t = text(&v);
        assert!(
            t.contains(lines::VERIFY_FAILED) && t.contains("not made by a trusted backup service") && t.contains(why),
            "{name}:\n{t}"
        );
        let r = run("pgvigil", &["restore", "--clean", "--yes", "--fallback", "0"], &restore_vars).await;
        let rt = text(&r);
        assert_ne!(r.status.code(), Some(0), "{name}:\n{rt}");
        assert!(rt.contains("not made by a trusted backup service"), "{name}:\n{rt}");
        let mut c = pg.connect("target").await;
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_class WHERE relname = 'events'")
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(n, 0, "{name}: nothing was restored");
    }
    // The signed backup still restores, and a service without trusted keys says so at start.
    let r = run(
        "pgvigil",
        &["restore", "--backup", &out.id.file_name(), "--clean", "--yes"],
        &restore_vars,
    )
    .await;
    assert_eq!(r.status.code(), Some(0), "{}", text(&r));
    let mut unauthenticated = s3.vars("signed");
    unauthenticated.push(("VERIFY_DATABASE_URL", pg.url("postgres")));
    let v = run("pgvigil-verify", &["--once"], &unauthenticated).await;
    assert!(text(&v).contains("backups are not authenticated"), "{}", text(&v));
}

#[tokio::test]
async fn a_backup_dated_in_the_future_never_becomes_the_newest_and_is_left_alone() {
    init_logs();
    let pg = PgServer::start();
    pgvigil_e2e::sample::build(&pg, "app", 20).await;
    let s3 = S3Server::start().await;
    let ctx = context(&pg, "app", s3.vars("future"), &[]).await;
    let out = backup::run_once(&ctx, &CancellationToken::new()).await.unwrap();
    let layout = Layout::new("future");
    let never = CancellationToken::new();
    let future = BackupId::parse_stamp("2099-01-01T00-00-00Z").unwrap();
    let object = fetch(&ctx.storage, &Key::new(out.manifest.key.clone()).unwrap()).await;
    storage::put_bytes(ctx.storage.as_ref(), &layout.backup(future), Bytes::from(object), &never)
        .await
        .unwrap();
    let mut m = out.manifest.clone();
    m.key = layout.backup(future).to_string();
    manifest::write(ctx.storage.as_ref(), &layout, future, &m, None, &never)
        .await
        .unwrap();

    let mut vars = s3.vars("future");
    vars.push(("VERIFY_DATABASE_URL", pg.url("postgres")));
    vars.push(("DATABASE_URL", pg.url("app")));
    let status = run("pgvigil", &["status"], &vars).await;
    let t = text(&status);
    assert!(t.contains("dated in the future") && t.contains("2099"), "{t}");
    assert_ne!(status.status.code(), Some(0), "a warning, not OK:\n{t}");

    let v = run("pgvigil-verify", &["--once"], &vars).await;
    let t = text(&v);
    assert!(t.contains(lines::FUTURE_DATED) && t.contains(&out.manifest.key), "{t}");
    assert!(t.contains(lines::VERIFY_PASSED), "{t}");
    assert!(!t.contains("verification completed successfully key=future/backup_2099"), "{t}");

    pg.create_db("target").await;
    let mut restore_vars = vars.clone();
    restore_vars.push(("RESTORE_DATABASE_URL", pg.url("target")));
    let r = run("pgvigil", &["restore"], &restore_vars).await;
    assert!(text(&r).contains(&format!("restored {}", out.manifest.key)), "{}", text(&r));
    let r = run("pgvigil", &["restore", "--backup", &future.file_name()], &restore_vars).await;
    assert!(text(&r).contains("dated later than this machine's clock allows"), "{}", text(&r));

    // The backup service warns, backs up, and its retention neither counts nor deletes it.
    let b = run("pgvigil-backup", &["--once"], &vars).await;
    assert!(
        text(&b).contains(lines::FUTURE_DATED) && text(&b).contains(lines::BACKUP_COMPLETED),
        "{}",
        text(&b)
    );
    assert!(ctx.storage.head(&layout.backup(future), &never).await.unwrap().is_some());
}
