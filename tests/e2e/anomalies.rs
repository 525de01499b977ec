//! The table anomaly: a table that lost most of its rows between two backups raises the alarm,
//! and the backup taken before it is held from retention until someone acknowledges it.

use pgvigil_core::infra::config::Role;
use pgvigil_core::infra::storage;
use pgvigil_core::records::catalog::Catalog;
use pgvigil_core::records::keys::Layout;
use pgvigil_core::records::manifest;
use pgvigil_e2e::fixtures::fake_old_backups;
use pgvigil_e2e::lines;
use pgvigil_e2e::run::{run, text};
use pgvigil_e2e::{init_logs, sample, settings, PgServer, S3Server};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_table_losing_most_rows_raises_the_alarm_and_holds_the_backup_before_it() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 2000).await;
    let s3 = S3Server::start().await;
    let st = storage::connect(&settings(&s3.vars("anom"), Role::Cli).storage).await.unwrap();
    let layout = Layout::new("anom");
    let never = CancellationToken::new();
    // The backup before: 30 days old, when customers had 20,000 rows.
    let old = fake_old_backups(st.as_ref(), &layout, &[30]).await[0];
    let mut m = manifest::read(st.as_ref(), &layout, old, &never).await.unwrap().unwrap();
    m.tables.insert("public.customers".into(), 20_000);
    manifest::write(st.as_ref(), &layout, old, &m, None, &never).await.unwrap();

    let mut vars = s3.vars("anom");
    vars.push(("DATABASE_URL", pg.url("app")));
    vars.push(("BACKUP_RETENTION_DAYS", "7".into()));
    vars.push(("BACKUP_MIN_KEEP", "1".into()));
    let o = run("pgvigil-backup", &["--once"], &vars).await;
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let line = t
        .lines()
        .find(|l| l.contains(lines::TABLE_ANOMALY))
        .unwrap_or_else(|| panic!("{t}"));
    assert!(
        line.contains("table public.customers lost 90% of its rows (20000 → 2000)"),
        "{line}"
    );
    assert!(line.contains(&format!("pgvigil ack {}", old.file_name())), "{line}");
    // Retention would have deleted the 30-day-old backup; the hold keeps it.
    assert!(t.contains("held after a table anomaly"), "{t}");
    let cat = Catalog::load(st.as_ref(), &layout, &never).await.unwrap();
    assert!(cat.backups.iter().any(|b| b.id == old), "the backup before the drop is kept");

    let o = run("pgvigil", &["status"], &vars).await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "WARNING until acknowledged:\n{t}");
    assert!(t.contains("table anomaly") && t.contains("pgvigil ack"), "{t}");

    let o = run("pgvigil", &["ack", &old.file_name()], &vars).await;
    assert!(o.status.success(), "{}", text(&o));
    let o = run("pgvigil", &["ack", &old.file_name()], &vars).await;
    assert!(
        !o.status.success() && text(&o).contains("is neither held nor missing"),
        "{}",
        text(&o)
    );
    let o = run("pgvigil", &["prune", "--yes"], &vars).await;
    assert!(o.status.success(), "{}", text(&o));
    let cat = Catalog::load(st.as_ref(), &layout, &never).await.unwrap();
    assert!(
        !cat.backups.iter().any(|b| b.id == old),
        "after the acknowledgement retention applies again"
    );
    let o = run("pgvigil", &["status"], &vars).await;
    assert!(!text(&o).contains("table anomaly"), "{}", text(&o));
}

#[tokio::test]
async fn a_hold_that_cannot_be_read_still_holds_and_spoils_nothing_else() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 200).await;
    let s3 = S3Server::start().await;
    let st = storage::connect(&settings(&s3.vars("junk"), Role::Cli).storage).await.unwrap();
    let layout = Layout::new("junk");
    let never = CancellationToken::new();
    let ids = fake_old_backups(st.as_ref(), &layout, &[30, 29]).await;
    let (old, other) = (ids[0], ids[1]);
    // One hold is not JSON; another is JSON with an escape sequence and a thousand reasons.
    storage::put_bytes(st.as_ref(), &layout.hold(old), b"\x1b[2J not json".to_vec().into(), &never)
        .await
        .unwrap();
    let loud = serde_json::json!({
        "backup": "x", "seen_in": "junk/backup_x\u{1b}]52;c;aGk=\u{7}", "since": "2026-01-01T00:00:00Z",
        "reasons": vec!["table t lost everything"; 1000],
    });
    storage::put_bytes(st.as_ref(), &layout.hold(other), serde_json::to_vec(&loud).unwrap().into(), &never)
        .await
        .unwrap();

    let mut vars = s3.vars("junk");
    vars.push(("DATABASE_URL", pg.url("app")));
    vars.push(("BACKUP_RETENTION_DAYS", "7".into()));
    vars.push(("BACKUP_MIN_KEEP", "1".into()));
    let o = run("pgvigil", &["status"], &vars).await;
    let t = text(&o);
    assert!(t.contains("is unreadable") && t.contains(&old.file_name()), "{t}");
    assert!(t.contains("and 990 more") && !t.contains('\u{1b}'), "{t}");
    // Retention keeps both held backups; acknowledging the unreadable hold lifts it.
    let o = run("pgvigil-backup", &["--once"], &vars).await;
    assert!(o.status.success(), "{}", text(&o));
    let cat = Catalog::load(st.as_ref(), &layout, &never).await.unwrap();
    assert!(cat.backups.iter().any(|b| b.id == old) && cat.backups.iter().any(|b| b.id == other));
    let o = run("pgvigil", &["ack", &old.file_name()], &vars).await;
    assert!(o.status.success(), "{}", text(&o));
    let o = run("pgvigil", &["prune", "--yes"], &vars).await;
    assert!(o.status.success(), "{}", text(&o));
    let cat = Catalog::load(st.as_ref(), &layout, &never).await.unwrap();
    assert!(!cat.backups.iter().any(|b| b.id == old), "lifted, retention applies again");
    assert!(cat.backups.iter().any(|b| b.id == other), "still held");

    // The newest verification record cannot be read: its name says it failed, and status says
    // so, CRITICAL, without failing itself.
    let at = chrono::Utc::now();
    storage::put_bytes(
        st.as_ref(),
        &layout.verification(at, other, false),
        b"{ not json\n".to_vec().into(),
        &never,
    )
    .await
    .unwrap();
    let o = run("pgvigil", &["status"], &vars).await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("the last verification failed") && t.contains("cannot be read"), "{t}");
}
