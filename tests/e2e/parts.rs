//! Large parts are streamed, not held: a backup's memory does not grow with its part size, and the
//! object such parts make (its last part filled to the end with members that read as nothing)
//! restores with stock tools and passes the deep check, plain and encrypted.

use age::x25519::Identity;
use pgvigil_core::infra::config::Role;
use pgvigil_core::infra::storage;
use pgvigil_e2e::fixtures::{download, key_file, stock_restore};
use pgvigil_e2e::lines;
use pgvigil_e2e::run::{run, text, Service};
use pgvigil_e2e::{init_logs, settings, PgServer, S3Server};
use tokio_util::sync::CancellationToken;

const MIB: u64 = 1024 * 1024;

/// Peak resident memory (KiB) of one backup by the service, and the backup's object key.
async fn peak_of_one_backup(vars: &[(&'static str, String)]) -> (u64, String) {
    let mut svc = Service::start("pgvigil-backup", &[], vars);
    svc.wait_for(lines::BACKUP_COMPLETED, 1, 300).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", svc.pid())).unwrap();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let out = svc.output();
    let key = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix("key=").map(|k| k.trim_matches('"').to_string()))
        .unwrap_or_else(|| panic!("no key= in {out}"));
    svc.stop().await;
    (kib, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_does_not_grow_with_the_part_size() {
    init_logs();
    let pg = PgServer::start();
    pg.create_db("big").await;
    // About 90 MB of SQL that compresses to roughly half: a 45 MB object.
    pg.exec(
        "big",
        "CREATE TABLE noise (id int PRIMARY KEY, a text, b text);
         INSERT INTO noise SELECT g, md5(g::text) || md5((g * 7)::text), md5((g * 13)::text) || md5((g * 31)::text)
         FROM generate_series(1, 600000) g;",
    )
    .await;
    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = Identity::generate();
    let key_path = key_file(dir.path(), "key.txt", &key);
    let base = |prefix: &str| {
        let mut v = s3.vars(prefix);
        v.push(("DATABASE_URL", pg.url("big")));
        v.push(("BACKUP_INTERVAL", "3600".into()));
        v
    };
    // The part size follows the previous backup's size: a listing that shows one of 50 or 300 GB
    // (sparse files) plans parts of 22 and 128 MiB for the next.
    let after_a_backup_of = |prefix: &'static str, gb: u64| {
        let vars = base(prefix);
        let s3 = &s3;
        async move {
            let st = storage::connect(&settings(&vars, Role::Cli).storage).await.unwrap();
            let layout = pgvigil_core::records::keys::Layout::new(prefix);
            let id = pgvigil_e2e::fixtures::fake_old_backups(st.as_ref(), &layout, &[2]).await[0];
            s3.make_sparse(layout.backup(id).as_str(), gb * 1_000_000_000);
            vars
        }
    };

    // Parts of the default 16 MiB are held (up to three: 48 MiB). Larger parts are streamed: 22
    // MiB parts, or one 128 MiB part for the whole dump (held, it would take all 45 MB), need no
    // more memory than that.
    let (default, _) = peak_of_one_backup(&base("default")).await;
    let (large, large_key) = peak_of_one_backup(&after_a_backup_of("large", 50).await).await;
    let (huge, _) = peak_of_one_backup(&after_a_backup_of("huge", 300).await).await;
    let mut sealed_vars = after_a_backup_of("sealed", 50).await;
    sealed_vars.push(("BACKUP_ENCRYPTION_RECIPIENTS", key.to_public().to_string()));
    let (sealed, sealed_key) = peak_of_one_backup(&sealed_vars).await;
    println!("peak RSS KiB: 16 MiB parts {default}, 22 MiB {large}, 128 MiB {huge}, 22 MiB encrypted {sealed}");
    assert!(
        [large, huge, sealed].iter().all(|p| *p <= default + 4 * 1024) && huge.abs_diff(large) < 8 * 1024,
        "peak RSS: 16 MiB parts {default} KiB, 22 MiB {large} KiB, 128 MiB {huge} KiB, 22 MiB encrypted {sealed} KiB"
    );

    // The streamed object: whole parts, its last part filled to the end (what the service holds
    // back from a last part is less than 8 MiB, so at most that is sent whole after it).
    let st = storage::connect(&settings(&base("large"), Role::Cli).storage).await.unwrap();
    let object = download(&st, &large_key, dir.path()).await;
    let size = std::fs::metadata(&object).unwrap().len();
    assert!(size > 22 * MIB && size % (22 * MIB) < 8 * MIB, "{size}");
    pg.create_db("restored").await;
    stock_restore(&pg, &object, "restored");
    let sum = "SELECT count(*)::text || md5(string_agg(a || b, ',' ORDER BY id)) FROM noise";
    let (mut src, mut dst) = (pg.connect("big").await, pg.connect("restored").await);
    let want: String = sqlx::query_scalar(sum).fetch_one(&mut src).await.unwrap();
    assert_eq!(sqlx::query_scalar::<_, String>(sum).fetch_one(&mut dst).await.unwrap(), want);

    // The deep check cuts the filler into members like any other, plain and encrypted.
    for (prefix, extra) in [
        ("large", vec![]),
        ("sealed", vec![("BACKUP_ENCRYPTION_IDENTITY_FILE", key_path.clone())]),
    ] {
        let mut vars = base(prefix);
        vars.extend(extra);
        let o = run("pgvigil", &["check", "--deep", "--last", "1"], &vars).await;
        assert!(o.status.success() && text(&o).contains("checked: deep"), "{prefix}: {}", text(&o));
    }
    // Verification restores it through pgvigil's own reader (members in sequence) and passes.
    let mut vars = base("large");
    vars.push(("VERIFY_DATABASE_URL", pg.url("postgres")));
    vars.push(("VERIFY_RANDOM_RATE", "0".into()));
    let o = run("pgvigil-verify", &["--once"], &vars).await;
    assert!(o.status.success() && text(&o).contains(lines::VERIFY_PASSED), "{}", text(&o));
    let sealed_size = st
        .head(&storage::Key::new(sealed_key).unwrap(), &CancellationToken::new())
        .await
        .unwrap()
        .unwrap()
        .size;
    assert!(sealed_size % (22 * MIB) < 8 * MIB, "{sealed_size}");

    // A large fixed part size on a small database is held, not streamed: no filler, one part.
    let mut fixed = base("fixed");
    fixed.push(("S3_PART_SIZE_MB", "128".into()));
    let (_, fixed_key) = peak_of_one_backup(&fixed).await;
    let size = st
        .head(&storage::Key::new(fixed_key).unwrap(), &CancellationToken::new())
        .await
        .unwrap()
        .unwrap()
        .size;
    assert!(size < 60 * MIB, "{size}");
}
