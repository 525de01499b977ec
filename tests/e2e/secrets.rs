//! The secrets audit: every way pgvigil is run here uses known secrets — database passwords in
//! the user-info and in `?password=`/`?sslpassword=` form, a wrong password, the S3 secret key —
//! and none may appear in anything pgvigil writes or shows: stdout, stderr, objects in the
//! bucket (backups decompressed), the HTTP endpoints, or the command line of any process.

use flate2::read::MultiGzDecoder;
use pgvigil_e2e::run::{run, text, Service};
use pgvigil_e2e::{init_logs, sample, PgServer, S3Server};
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const DB_SECRET: &str = "Audit-db-SECRET-7q2x";
const SSL_SECRET: &str = "Audit-sslkey-SECRET-3zk";
const VERIFY_SECRET: &str = "Audit-verify-SECRET-8wm";
const WRONG_SECRET: &str = "Audit-wrong-SECRET-1hn";

fn secrets() -> Vec<&'static str> {
    vec![
        DB_SECRET,
        SSL_SECRET,
        VERIFY_SECRET,
        WRONG_SECRET,
        pgvigil_e2e::s3::SECRET_KEY,
        pgvigil_e2e::pg::PASSWORD,
    ]
}

fn assert_clean(what: &str, content: &str) {
    for s in secrets() {
        assert!(!content.contains(s), "{what} contains the secret {s:?}:\n{content}");
    }
}

/// Watches every process's command line while it runs; counts the `pg_dump` and `psql`
/// processes it saw so a test knows the watch covered them.
struct ArgvWatch {
    stop: Arc<AtomicBool>,
    leaks: Arc<Mutex<Vec<String>>>,
    seen: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl ArgvWatch {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let leaks = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(AtomicUsize::new(0));
        let (st, l, sn) = (stop.clone(), leaks.clone(), seen.clone());
        let task = tokio::spawn(async move {
            while !st.load(Ordering::SeqCst) {
                for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                    let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
                        continue;
                    };
                    let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
                    if cmdline.contains("pg_dump ") || cmdline.contains("psql ") {
                        sn.fetch_add(1, Ordering::SeqCst);
                    }
                    if secrets().iter().any(|s| cmdline.contains(s)) {
                        l.lock().unwrap().push(cmdline);
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        Self { stop, leaks, seen, task }
    }

    async fn finish(self, what: &str) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        let leaks = self.leaks.lock().unwrap().clone();
        assert!(leaks.is_empty(), "{what}: a secret in a command line: {leaks:?}");
        assert!(
            self.seen.load(Ordering::SeqCst) > 0,
            "{what}: the watch never saw pg_dump or psql run"
        );
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn no_secret_reaches_logs_records_endpoints_or_command_lines() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 20_000).await;
    pg.exec("postgres", &format!("CREATE ROLE auditor LOGIN SUPERUSER PASSWORD '{DB_SECRET}'"))
        .await;
    pg.create_createdb_role("auditverify", VERIFY_SECRET).await;
    let s3 = S3Server::start().await;
    let port = pg.port;
    let query_form = format!("postgresql://auditor@127.0.0.1:{port}/app?password={DB_SECRET}&sslpassword={SSL_SECRET}");
    let mut vars = s3.vars("audit");
    vars.push(("DATABASE_URL", query_form.clone()));
    vars.push(("VERIFY_DATABASE_URL", pg.url_as("auditverify", VERIFY_SECRET, "postgres")));
    vars.push(("BACKUP_INTERVAL", "3600".into()));
    vars.push(("VERIFY_INTERVAL", "3600".into()));
    vars.push(("RETRY_BACKOFF_SECS", "1".into()));
    let mut outputs: Vec<(String, String)> = Vec::new();

    // The backup service, its endpoints, and its children's command lines.
    let http = free_port();
    let mut service_vars = vars.clone();
    service_vars.push(("PORT", http.to_string()));
    let watch = ArgvWatch::start();
    let mut svc = Service::start("pgvigil-backup", &[], &service_vars);
    svc.wait_for("Backup completed successfully", 1, 90).await;
    watch.finish("backup service").await;
    for path in ["/healthz", "/status", "/metrics"] {
        let (_, body) = pgvigil_e2e::http::get(http, path).await.expect("the endpoint answers");
        outputs.push((format!("backup service {path}"), body));
    }
    let (status, out) = svc.stop().await;
    assert!(status.success(), "{out}");
    assert!(out.contains("Backup service started"), "{out}");
    outputs.push(("backup service log".into(), out));

    // A failing backup: the wrong password in the URL's query, recorded in the bucket.
    let mut wrong = vars.clone();
    wrong.retain(|(k, _)| *k != "DATABASE_URL");
    wrong.push((
        "DATABASE_URL",
        format!("postgresql://auditor@127.0.0.1:{port}/app?password={WRONG_SECRET}"),
    ));
    let o = run("pgvigil-backup", &["--once"], &wrong).await;
    assert!(!o.status.success());
    assert!(text(&o).contains("password authentication failed"), "{}", text(&o));
    outputs.push(("failed backup".into(), text(&o)));

    // The verify service, once, with its psql watched.
    let watch = ArgvWatch::start();
    let o = run("pgvigil-verify", &["--once"], &vars).await;
    assert!(o.status.success(), "{}", text(&o));
    watch.finish("verify").await;
    outputs.push(("verify".into(), text(&o)));

    // Every CLI command an operator runs, including a restore with the password in the URL.
    pg.create_db("target").await;
    let mut cli = vars.clone();
    cli.push(("RESTORE_DATABASE_URL", pg.url_as("auditor", DB_SECRET, "target")));
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["list", "--json"],
        &["report"],
        &["check", "--last", "1"],
        &["list"],
        &["prune", "--dry-run"],
    ] {
        let o = run("pgvigil", args, &cli).await;
        outputs.push((format!("pgvigil {}", args.join(" ")), text(&o)));
    }
    let watch = ArgvWatch::start();
    let o = run("pgvigil", &["restore"], &cli).await;
    assert!(o.status.success(), "{}", text(&o));
    watch.finish("restore").await;
    outputs.push(("pgvigil restore".into(), text(&o)));

    for (what, content) in &outputs {
        assert_clean(what, content);
    }
    // Every object in the bucket, backups decompressed.
    let mut objects = 0;
    for path in crate::backup::walk(s3.root.path()) {
        let raw = std::fs::read(&path).unwrap();
        let content = if path.ends_with(".gz") {
            let mut s = String::new();
            MultiGzDecoder::new(&raw[..]).read_to_string(&mut s).unwrap();
            s
        } else {
            String::from_utf8_lossy(&raw).into_owned()
        };
        assert_clean(&path, &content);
        objects += 1;
    }
    assert!(objects >= 4, "backup, manifest, failure record, verification record: {objects}");
}
