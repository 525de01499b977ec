//! The secrets audit: every way pgvigil is run here uses known secrets — database passwords in
//! the user-info and in `?password=` form, a wrong password, a refused `?sslpassword=`, the S3
//! secret key — and none may appear in anything pgvigil writes or shows: stdout, stderr (text
//! and JSON logs, at debug level too), objects in the bucket (backups decompressed), the HTTP
//! endpoints (after a success and after a failure), or the command line of any process pgvigil
//! starts.

use flate2::read::MultiGzDecoder;
use pgvigil_e2e::fixtures;
use pgvigil_e2e::lines;
use pgvigil_e2e::pg::free_port;
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

/// Secrets used by this test only (the S3 key is shared by all tests, but only this test's own
/// processes are watched).
fn secrets() -> Vec<&'static str> {
    vec![DB_SECRET, SSL_SECRET, VERIFY_SECRET, WRONG_SECRET, pgvigil_e2e::s3::SECRET_KEY]
}

fn assert_clean(what: &str, content: &str) {
    for s in secrets() {
        assert!(!content.contains(s), "{what} contains the secret {s:?}:\n{content}");
    }
}

/// The process ids of `root` and everything it started (from `/proc/*/stat`).
fn family(root: i32) -> Vec<i32> {
    let mut parent = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid …; comm may contain spaces and parentheses.
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        parent.insert(pid, ppid);
    }
    let mut out = vec![root];
    let mut grew = true;
    while grew {
        grew = false;
        for (pid, ppid) in &parent {
            if out.contains(ppid) && !out.contains(pid) {
                out.push(*pid);
                grew = true;
            }
        }
    }
    out
}

/// Watches the command lines of a process and its children while it runs, and counts the
/// real (not `--version`) `pg_dump`/`psql` runs it saw, so a test knows the watch covered them.
struct ArgvWatch {
    stop: Arc<AtomicBool>,
    leaks: Arc<Mutex<Vec<String>>>,
    seen: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl ArgvWatch {
    fn start(root: i32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let leaks = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(AtomicUsize::new(0));
        let (st, l, sn) = (stop.clone(), leaks.clone(), seen.clone());
        let task = tokio::task::spawn_blocking(move || {
            while !st.load(Ordering::SeqCst) {
                for pid in family(root) {
                    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                        continue;
                    };
                    let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
                    let tool = cmdline.contains("pg_dump") || cmdline.contains("psql");
                    if tool && !cmdline.contains("--version") {
                        sn.fetch_add(1, Ordering::SeqCst);
                    }
                    if secrets().iter().any(|s| cmdline.contains(s)) {
                        l.lock().unwrap().push(cmdline);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
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
            "{what}: the watch never saw its pg_dump or psql run"
        );
    }
}

/// Runs a binary to its end with its process family watched; returns its output.
async fn watched(name: &str, args: &[&str], vars: &[(&str, String)], what: &str, tool_runs: bool) -> (bool, String) {
    let svc = Service::start(name, args, vars);
    let watch = ArgvWatch::start(svc.pid());
    let (status, out) = svc.wait(120).await;
    if tool_runs {
        watch.finish(what).await;
    } else {
        watch.stop.store(true, Ordering::SeqCst);
        watch.task.await.unwrap();
        let leaks = watch.leaks.lock().unwrap().clone();
        assert!(leaks.is_empty(), "{what}: a secret in a command line: {leaks:?}");
    }
    (status.success(), out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_records_endpoints_or_command_lines() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 20_000).await;
    pg.exec("postgres", &format!("CREATE ROLE auditor LOGIN SUPERUSER PASSWORD '{DB_SECRET}'"))
        .await;
    pg.create_createdb_role("auditverify", VERIFY_SECRET).await;
    let s3 = S3Server::start().await;
    let port = pg.port;
    let query_form = format!("postgresql://auditor@127.0.0.1:{port}/app?password={DB_SECRET}&sslmode=disable");
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
    let mut svc = Service::start("pgvigil-backup", &[], &service_vars);
    let watch = ArgvWatch::start(svc.pid());
    svc.wait_for(lines::BACKUP_COMPLETED, 1, 90).await;
    watch.finish("backup service").await;
    for path in ["/healthz", "/status", "/metrics"] {
        let (_, body) = pgvigil_e2e::http::get(http, path).await.expect("the endpoint answers");
        outputs.push((format!("backup service {path}"), body));
    }
    let (status, out) = svc.stop().await;
    assert!(status.success(), "{out}");
    assert!(out.contains(lines::BACKUP_STARTED), "{out}");
    outputs.push(("backup service log".into(), out));

    // A failing backup service — the wrong password in the URL's query — with JSON logs at
    // debug level, and its endpoints while it fails. The failure is recorded in the bucket.
    let http = free_port();
    // Its own prefix: under "audit" a backup was just taken, so the next is an hour away.
    let mut wrong = vars.clone();
    wrong.retain(|(k, _)| *k != "DATABASE_URL" && *k != "BACKUP_PREFIX");
    wrong.push(("BACKUP_PREFIX", "audit-failing".into()));
    wrong.push((
        "DATABASE_URL",
        format!("postgresql://auditor@127.0.0.1:{port}/app?password={WRONG_SECRET}"),
    ));
    wrong.push(("PORT", http.to_string()));
    wrong.push(("LOG_FORMAT", "json".into()));
    let mut svc = Service::start_with_log_level("pgvigil-backup", &[], &wrong, "debug");
    svc.wait_for(lines::BACKUP_FAILED, 2, 60).await;
    for path in ["/healthz", "/status", "/metrics"] {
        let (_, body) = pgvigil_e2e::http::get(http, path).await.expect("the endpoint answers");
        outputs.push((format!("failing backup service {path}"), body));
    }
    let (_, out) = svc.stop().await;
    assert!(out.contains("password authentication failed"), "{out}");
    outputs.push(("failing backup service, JSON debug log".into(), out));

    // A refused ?sslpassword= is named without its value.
    let mut ssl = vars.clone();
    ssl.retain(|(k, _)| *k != "DATABASE_URL");
    ssl.push(("DATABASE_URL", format!("{query_form}&sslpassword={SSL_SECRET}")));
    let o = run("pgvigil-backup", &["--once"], &ssl).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("sslpassword"), "{}", text(&o));
    outputs.push(("refused sslpassword".into(), text(&o)));

    // The verify service, with its endpoints and its psql watched.
    let http = free_port();
    let mut verify_vars = vars.clone();
    verify_vars.push(("PORT", http.to_string()));
    let mut svc = Service::start("pgvigil-verify", &[], &verify_vars);
    let watch = ArgvWatch::start(svc.pid());
    svc.wait_for(lines::VERIFY_FINISHED, 1, 120).await;
    watch.finish("verify service").await;
    for path in ["/healthz", "/status", "/metrics"] {
        let (_, body) = pgvigil_e2e::http::get(http, path).await.expect("the endpoint answers");
        outputs.push((format!("verify service {path}"), body));
    }
    let (status, out) = svc.stop().await;
    assert!(status.success(), "{out}");
    assert!(out.contains(lines::VERIFY_PASSED), "{out}");
    outputs.push(("verify service log".into(), out));

    // Every CLI command an operator runs, including a restore with the password in the URL.
    pg.create_db("target").await;
    let mut cli = vars.clone();
    cli.push(("RESTORE_DATABASE_URL", pg.url_as("auditor", DB_SECRET, "target")));
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["list"],
        &["list", "--json"],
        &["report"],
        &["check", "--last", "1"],
        &["prune", "--dry-run"],
    ] {
        let (_, out) = watched("pgvigil", args, &cli, &format!("pgvigil {}", args.join(" ")), false).await;
        outputs.push((format!("pgvigil {}", args.join(" ")), out));
    }
    let (ok, out) = watched("pgvigil", &["restore"], &cli, "pgvigil restore", true).await;
    assert!(ok, "{out}");
    outputs.push(("pgvigil restore".into(), out));
    let (_, out) = watched("pgvigil", &["backup-now"], &cli, "pgvigil backup-now", true).await;
    outputs.push(("pgvigil backup-now".into(), out));

    for (what, content) in &outputs {
        assert_clean(what, content);
    }
    // Every object in the bucket, backups decompressed.
    let mut objects = 0;
    for path in fixtures::walk(s3.root.path()) {
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
    assert!(
        objects >= 5,
        "backups, manifests, failure records, a verification record: {objects}"
    );
}
