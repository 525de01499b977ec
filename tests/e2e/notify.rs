//! Notifications and the heartbeat: one message when a condition starts, one when it clears,
//! delivered through a receiver's outage, with no secret in the service's output.

use pgvigil_e2e::lines;
use pgvigil_e2e::run::Service;
use pgvigil_e2e::webhook::Receiver;
use pgvigil_e2e::{init_logs, sample, PgServer, S3Server};
use serde_json::Value;

fn event(r: &pgvigil_e2e::webhook::Request) -> (String, String) {
    let v: Value = serde_json::from_str(&r.body).unwrap_or_default();
    (
        v["event"].as_str().unwrap_or("").to_string(),
        v["state"].as_str().unwrap_or("").to_string(),
    )
}

#[tokio::test]
async fn conditions_are_sent_once_when_they_start_and_once_when_they_clear() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 2000).await;
    let s3 = S3Server::start().await;
    let hooks = Receiver::start().await;
    pg.stop();
    let secret_path = "/hook/T0KEN-in-the-url-is-a-secret";
    let mut vars = s3.vars("notify");
    vars.push(("DATABASE_URL", pg.url("app")));
    vars.push(("BACKUP_INTERVAL", "6".into()));
    vars.push(("RETRY_BACKOFF_SECS", "1".into()));
    vars.push(("NOTIFY_WEBHOOK_URL", hooks.url(secret_path)));
    vars.push(("HEARTBEAT_URL", hooks.url("/beat")));
    // The receiver is down for the first two attempts: the message still arrives.
    hooks.refuse_next(2);
    let mut svc = Service::start("pgvigil-backup", &[], &vars);
    svc.wait_for(lines::BACKUP_FAILED, 3, 60).await;
    let failed = hooks
        .wait_for(1, 30, |r| event(r) == ("backup_failed".into(), "firing".into()))
        .await;
    let body: Value = serde_json::from_str(&failed[0].body).unwrap();
    assert!(body["text"].as_str().unwrap().contains("cannot reach"), "{body}");
    assert!(!failed[0].body.contains(pgvigil_e2e::pg::PASSWORD));

    pg.restart();
    svc.wait_for(lines::BACKUP_COMPLETED, 1, 60).await;
    hooks
        .wait_for(1, 30, |r| event(r) == ("backup_failed".into(), "resolved".into()))
        .await;
    hooks.wait_for(1, 30, |r| r.method == "GET" && r.path == "/beat").await;

    // A table loses 90% of its rows before the next backup (6 s later).
    pg.exec("app", "DELETE FROM sales.orders WHERE id % 10 <> 0").await;
    svc.wait_for(lines::TABLE_ANOMALY, 1, 60).await;
    let anomaly = hooks
        .wait_for(1, 30, |r| event(r) == ("table_anomaly".into(), "firing".into()))
        .await;
    assert!(
        anomaly[0].body.contains("lost 90% of its rows") && anomaly[0].body.contains("pgvigil ack"),
        "{}",
        anomaly[0].body
    );
    let (status, out) = svc.stop().await;
    assert!(status.success(), "{out}");
    assert!(out.matches(lines::BACKUP_FAILED).count() >= 3, "{out}");
    let firing = hooks
        .received()
        .iter()
        .filter(|r| event(r) == ("backup_failed".into(), "firing".into()))
        .count();
    assert_eq!(firing, 1, "one message per condition, however many failures");
    assert!(!out.contains("T0KEN"), "the webhook URL is a secret:\n{out}");
}

#[tokio::test]
async fn a_stale_backup_is_reported_after_a_restart_until_a_backup_succeeds() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 500).await;
    let s3 = S3Server::start().await;
    let hooks = Receiver::start().await;
    let mut vars = s3.vars("stale");
    vars.push(("DATABASE_URL", pg.url("app")));
    vars.push(("RETRY_BACKOFF_SECS", "1".into()));
    // A backup, then the database goes away and time passes: more than twice the 2 s interval.
    let o = pgvigil_e2e::run::run("pgvigil-backup", &["--once"], &vars).await;
    assert!(o.status.success(), "{}", pgvigil_e2e::run::text(&o));
    pg.stop();
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;

    // The restarted service says so at once, and again after every failed run — but sends one
    // message.
    vars.push(("BACKUP_INTERVAL", "2".into()));
    vars.push(("NOTIFY_WEBHOOK_URL", hooks.url("/hook")));
    let mut svc = Service::start("pgvigil-backup", &[], &vars);
    svc.wait_for("Stale: the newest backup is", 3, 60).await;
    let stale = hooks
        .wait_for(1, 30, |r| event(r) == ("backup_stale".into(), "firing".into()))
        .await;
    assert!(stale[0].body.contains("more than twice the interval (2s)"), "{}", stale[0].body);

    // A successful backup clears it.
    pg.restart();
    svc.wait_for(lines::BACKUP_COMPLETED, 1, 60).await;
    hooks
        .wait_for(1, 30, |r| event(r) == ("backup_stale".into(), "resolved".into()))
        .await;
    let (status, out) = svc.stop().await;
    assert!(status.success(), "{out}");
    let firing = hooks
        .received()
        .iter()
        .filter(|r| event(r) == ("backup_stale".into(), "firing".into()))
        .count();
    assert_eq!(firing, 1, "one message while it lasts");
}

#[tokio::test]
async fn a_single_run_from_cron_reports_too() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 200).await;
    let s3 = S3Server::start().await;
    let hooks = Receiver::start().await;
    let mut vars = s3.vars("cron");
    vars.push(("DATABASE_URL", pg.url("app")));
    vars.push(("NOTIFY_WEBHOOK_URL", hooks.url("/hook")));
    vars.push(("HEARTBEAT_URL", hooks.url("/beat")));
    // Success: the heartbeat is requested before the process exits.
    let o = pgvigil_e2e::run::run("pgvigil-backup", &["--once"], &vars).await;
    assert!(o.status.success(), "{}", pgvigil_e2e::run::text(&o));
    assert_eq!(hooks.received().iter().filter(|r| r.path == "/beat").count(), 1);
    // Failure: the message is delivered before the process exits with status 1, through a
    // receiver that refuses the first attempt.
    pg.stop();
    hooks.refuse_next(1);
    let o = pgvigil_e2e::run::run("pgvigil-backup", &["--once"], &vars).await;
    assert_eq!(o.status.code(), Some(1), "{}", pgvigil_e2e::run::text(&o));
    let failed: Vec<_> = hooks
        .received()
        .into_iter()
        .filter(|r| event(r) == ("backup_failed".into(), "firing".into()))
        .collect();
    assert_eq!(failed.len(), 1, "{:?}", hooks.received());
    assert!(!failed[0].body.contains(pgvigil_e2e::pg::PASSWORD));
}
