//! Metrics scraped from running services and parsed as OpenMetrics; the sample alerting rules
//! only name metrics the services expose; Docker's HEALTHCHECK command tells alive from dead.

use pgvigil_e2e::lines;
use pgvigil_e2e::pg::free_port;
use pgvigil_e2e::run::{run, text, Service};
use pgvigil_e2e::scrape::Scrape;
use pgvigil_e2e::{init_logs, sample, PgServer, S3Server};

/// Every `pgvigil_…` metric name the sample alerting rules' expressions use.
fn names_in_rules() -> Vec<String> {
    let rules = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/prometheus-alerts.yml")).unwrap();
    // `expr:` lines and the lines indented under them.
    let mut exprs = String::new();
    let mut expr_indent = None;
    for line in rules.lines() {
        let indent = line.len() - line.trim_start().len();
        if line.trim_start().starts_with("expr:") {
            expr_indent = Some(indent);
        } else if expr_indent.is_none_or(|i| indent <= i || line.trim().is_empty()) {
            expr_indent = None;
            continue;
        }
        exprs.push_str(line);
        exprs.push('\n');
    }
    let mut names: Vec<String> = exprs
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("pgvigil_"))
        .map(String::from)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Whether `name` (a sample name such as `pgvigil_anomalies_total`) is in the scrape.
fn exposed(scrape: &Scrape, name: &str) -> bool {
    let family = name.strip_suffix("_total").unwrap_or(name);
    scrape.families().iter().any(|f| f == family || f == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_scraped_parsed_and_cover_the_alerting_rules() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 5000).await;
    let s3 = S3Server::start().await;
    let mut vars = s3.vars("metrics");
    vars.push(("DATABASE_URL", pg.url("app")));
    vars.push(("VERIFY_DATABASE_URL", pg.url("postgres")));
    vars.push(("BACKUP_INTERVAL", "3600".into()));
    vars.push(("VERIFY_INTERVAL", "3600".into()));
    let version = env!("CARGO_PKG_VERSION");

    // The backup service.
    let http = free_port();
    let mut backup_vars = vars.clone();
    backup_vars.push(("PORT", http.to_string()));
    let mut svc = Service::start("pgvigil-backup", &[], &backup_vars);
    svc.wait_for(lines::BACKUP_COMPLETED, 1, 90).await;
    svc.wait_for(lines::NEXT_BACKUP, 2, 30).await;
    let b = Scrape::from(http).await;
    let svc_label = [("service", "backup")];
    assert_eq!(b.value("pgvigil_runs", &[("result", "success")]), Some(1.0), "{}", b.text);
    assert_eq!(b.value("pgvigil_runs", &[("result", "failure")]), Some(0.0), "{}", b.text);
    assert_eq!(b.value("pgvigil_consecutive_failures", &svc_label), Some(0.0));
    let compressed = b.value("pgvigil_last_backup_size_bytes", &[("format", "compressed")]).unwrap();
    let sql = b.value("pgvigil_last_backup_size_bytes", &[("format", "sql")]).unwrap();
    assert!(compressed > 0.0 && sql > compressed, "{}", b.text);
    assert_eq!(b.value("pgvigil_uploaded_bytes", &svc_label), Some(compressed));
    assert_eq!(b.value("pgvigil_storage_used_bytes", &svc_label), Some(compressed));
    assert_eq!(b.value("pgvigil_backups_stored", &svc_label), Some(1.0));
    assert_eq!(b.value("pgvigil_interval_seconds", &svc_label), Some(3600.0));
    assert_eq!(b.value("pgvigil_anomalies", &[("kind", "table")]), Some(0.0));
    let now = chrono::Utc::now().timestamp() as f64;
    let newest = b.value("pgvigil_newest_backup_timestamp_seconds", &svc_label).unwrap();
    assert!((now - newest).abs() < 120.0, "{newest} vs {now}");
    assert!(b.value("pgvigil_last_run_duration_seconds", &svc_label).unwrap() > 0.0);
    assert_eq!(b.value("pgvigil_build_info", &[("version", version)]), Some(1.0), "{}", b.text);
    let pgv = b.values("pgvigil_postgres_info", &[]);
    assert!(
        pgv.len() == 1 && pgv[0].0.iter().any(|(k, v)| k == "server_version" && v.starts_with("15")),
        "{pgv:?}"
    );

    // Docker's HEALTHCHECK: alive while the service answers.
    let health_vars = [("PORT", http.to_string())];
    let o = run("pgvigil-backup", &["--healthcheck"], &health_vars).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (status, out) = svc.stop().await;
    assert!(status.success(), "{out}");
    let o = run("pgvigil-backup", &["--healthcheck"], &health_vars).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("no answer"), "{}", text(&o));

    // The verify service.
    let http = free_port();
    let mut verify_vars = vars.clone();
    verify_vars.push(("PORT", http.to_string()));
    let mut svc = Service::start("pgvigil-verify", &[], &verify_vars);
    svc.wait_for(lines::VERIFY_FINISHED, 1, 120).await;
    svc.wait_for(lines::NEXT_VERIFICATION, 2, 30).await;
    let v = Scrape::from(http).await;
    let svc_label = [("service", "verify")];
    assert_eq!(v.value("pgvigil_last_verification_passed", &svc_label), Some(1.0), "{}", v.text);
    assert_eq!(v.value("pgvigil_verification_lag_seconds", &svc_label), Some(0.0), "{}", v.text);
    assert_eq!(v.value("pgvigil_last_verified_backup_timestamp_seconds", &svc_label), Some(newest));
    assert!(v.value("pgvigil_last_verification_rto_seconds", &svc_label).unwrap() > 0.0);
    assert!(v.value("pgvigil_last_verification_rpo_seconds", &svc_label).unwrap() >= 0.0);
    let at = v.value("pgvigil_last_verification_timestamp_seconds", &svc_label).unwrap();
    assert!(at >= newest, "{}", v.text);
    // The catalog is listed again after the run: the newest record in storage is this one.
    assert_eq!(
        v.value("pgvigil_newest_verification_timestamp_seconds", &svc_label),
        Some(at),
        "{}",
        v.text
    );
    assert_eq!(v.value("pgvigil_failures", &[("cause", "restore")]), Some(0.0), "{}", v.text);
    assert_eq!(v.value("pgvigil_runs", &[("result", "success")]), Some(1.0), "{}", v.text);
    let o = run("pgvigil-verify", &["--healthcheck"], &[("PORT", http.to_string())]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (status, out) = svc.stop().await;
    assert!(status.success(), "{out}");

    // A restarted verify service knows the verdict before it runs again.
    let mut svc = Service::start("pgvigil-verify", &[], &verify_vars);
    svc.wait_for(lines::NEXT_VERIFICATION, 1, 60).await;
    let restarted = Scrape::from(http).await;
    assert_eq!(
        restarted.value("pgvigil_last_verification_passed", &svc_label),
        Some(1.0),
        "{}",
        restarted.text
    );
    assert_eq!(restarted.value("pgvigil_last_verification_timestamp_seconds", &svc_label), Some(at));
    let (status, out) = svc.stop().await;
    assert!(status.success(), "{out}");

    // Every metric the sample rules alert on is one the services expose.
    let rules = names_in_rules();
    assert!(rules.len() >= 5, "{rules:?}");
    for name in &rules {
        assert!(
            exposed(&b, name) || exposed(&v, name),
            "docs/prometheus-alerts.yml uses {name}, which neither service exposes"
        );
    }
}

#[tokio::test]
async fn the_healthcheck_needs_a_port() {
    let o = run("pgvigil-verify", &["--healthcheck"], &[]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("PORT is not set"), "{}", text(&o));
}

#[tokio::test]
async fn with_a_health_token_only_liveness_is_open_and_the_address_is_chosen() {
    use pgvigil_e2e::http::{get, get_with};
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let token = "0123456789abcdef0123456789abcdef";
    let vars = vec![
        ("BACKUP_DIR", dir.path().display().to_string()),
        ("VERIFY_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/postgres".to_string()),
        ("PORT", http.to_string()),
        ("HEALTH_ADDRESS", "127.0.0.1".to_string()),
        ("HEALTH_TOKEN", token.to_string()),
    ];
    let svc = Service::start("pgvigil-verify", &[], &vars);
    let mut alive = None;
    for _ in 0..100 {
        alive = get(http, "/healthz").await;
        if alive.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(alive.map(|(code, _)| code), Some(200), "/healthz stays open");
    for path in ["/status", "/metrics"] {
        let (code, _) = get(http, path).await.unwrap();
        assert_eq!(code, 401, "{path} without the token");
        let (code, _) = get_with(http, path, "Authorization: Bearer wrong-token-of-some-length\r\n")
            .await
            .unwrap();
        assert_eq!(code, 401, "{path} with another token");
        let (code, _) = get_with(http, path, &format!("Authorization: Bearer {token}\r\n")).await.unwrap();
        assert!(code == 200 || code == 503, "{path} with the token: {code}");
    }
    let (_, out) = svc.stop().await;
    assert!(!out.contains(token), "the token is never logged:\n{out}");
    assert!(out.contains("address=127.0.0.1"), "{out}");
    let bad = run(
        "pgvigil-verify",
        &["--once"],
        &[("BACKUP_DIR", dir.path().display().to_string()), ("HEALTH_TOKEN", "short".into())],
    )
    .await;
    assert!(
        text(&bad).contains("HEALTH_TOKEN: expected at least 16 characters"),
        "{}",
        text(&bad)
    );
}
