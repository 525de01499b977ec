use super::*;
use crate::view::sample;
use chrono::TimeZone;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
}

fn db<'a>(name: &str, t: &'a Timeline) -> Database<'a> {
    Database {
        name: name.into(),
        timeline: Some(t),
        error: None,
        backup_interval: Duration::from_secs(3600),
        verify_interval: Duration::from_secs(6 * 3600),
        report: ReportSettings {
            retention_days: 90,
            calendar: None,
            price_per_gb_month: 0.02,
        },
        live_problems: vec![],
    }
}

fn page<'a>(dbs: Vec<Database<'a>>, details: bool) -> String {
    render(&Page {
        heading: "pgvigil status".into(),
        now: now(),
        refresh_secs: Some(60),
        details,
        docs: "/docs/",
        databases: dbs,
    })
}

/// The `data-points` of the series named `series` in chart `chart`.
fn points(html: &str, chart: &str, series: &str) -> usize {
    let part = html.split(&format!("id=\"{chart}\"")).nth(1).unwrap();
    let part = part.split("</figure>").next().unwrap();
    let attr = part.split(&format!("data-series=\"{series}\" data-points=\"")).nth(1).unwrap();
    attr.split('"').next().unwrap().parse().unwrap()
}

#[test]
fn charts_have_one_point_per_record_in_their_window() {
    let t = sample::history(now(), 100);
    let html = page(vec![db("app", &t)], true);
    let since = |d: i64| now() - chrono::Duration::days(d);
    for days in WINDOWS {
        let d = i64::from(days);
        let backups = t.backups.iter().filter(|b| b.id.0 >= since(d)).count();
        let verifications = t.verifications.iter().filter(|v| v.verified_at >= since(d)).count();
        assert!(t.verifications.iter().all(|v| v.verified_at <= now()));
        let passed = t.verifications.iter().filter(|v| v.passed && v.verified_at >= since(d)).count();
        assert_eq!(points(&html, &format!("db0-w{days}-size"), "compressed"), backups);
        assert_eq!(points(&html, &format!("db0-w{days}-size"), "SQL"), backups);
        assert_eq!(points(&html, &format!("db0-w{days}-duration"), "backup"), backups);
        assert_eq!(points(&html, &format!("db0-w{days}-verify"), "verification"), verifications);
        assert_eq!(points(&html, &format!("db0-w{days}-verify"), "RTO (restore)"), passed);
        assert_eq!(points(&html, &format!("db0-w{days}-rpo"), "RPO"), verifications);
        assert_eq!(points(&html, &format!("db0-w{days}-storage"), "stored"), backups);
    }
    assert_eq!(html.matches("<figure class=\"chart\"").count(), 10);
    // The one size anomaly and the failures are marked.
    let w30 = html.split("id=\"db0-w30-size\"").nth(1).unwrap().split("</figure>").next().unwrap();
    assert_eq!(w30.matches("class=\"mark anomaly\"").count(), 1, "{w30}");
    let failures_30 = t.failures.iter().filter(|f| f.at >= since(30)).count()
        + t.verifications.iter().filter(|v| !v.passed && v.verified_at >= since(30)).count();
    assert_eq!(w30.matches("class=\"mark failure\"").count(), failures_30);
}

#[test]
fn the_verdict_and_the_facts_come_from_the_records() {
    let t = sample::history(now(), 10);
    let html = page(vec![db("app", &t)], true);
    // The newest verification passed; the newest backup is 5 minutes old.
    assert!(html.contains("data-verdict=\"healthy\""), "{html}");
    assert!(html.contains("Newest backup</dt><dd>2026-11-25 11:55 UTC (5m ago"), "{html}");
    assert!(html.contains("Next backup due</dt><dd>in 55m"), "{html}");
    let mut failing = t.clone();
    failing.verifications.last_mut().unwrap().passed = false;
    failing.verifications.last_mut().unwrap().reasons = vec!["row 42 holds alice@example.com".into()];
    let html = page(vec![db("app", &failing)], false);
    assert!(html.contains("data-verdict=\"failing\""));
    assert!(!html.contains("alice@example.com"), "reasons quoting data stay off an open page");
    let html = page(vec![db("app", &failing)], true);
    assert!(html.contains("alice@example.com"), "shown behind the token");
    let mut live = db("app", &t);
    live.live_problems = vec!["3 consecutive failed runs".into()];
    assert!(page(vec![live], false).contains("data-verdict=\"failing\""));
}

#[test]
fn hostile_names_from_storage_are_escaped_and_the_page_loads_nothing() {
    let mut t = sample::history(now(), 2);
    t.backups.last_mut().unwrap().key = "app/<img src=x onerror=alert(1)>".into();
    t.failures.push(FailureRecord {
        at: now(),
        error: "<script>alert(2)</script>".into(),
        retryable: false,
    });
    let mut d = db("<script>alert(3)</script>", &t);
    d.error = Some("\"><iframe>".into());
    let mut broken = db("</section>", &t);
    broken.timeline = None;
    broken.error = Some("<b>denied</b>".into());
    let html = page(vec![d, broken], true);
    // Nothing is loaded: no element that fetches, no style that does.
    for bad in ["<script", "<img", "<iframe", "<link", "<object", "<embed", "<b>", "url("] {
        assert!(!html.contains(bad), "{bad} in the page");
    }
    assert!(!html.contains("http://") && !html.contains("https://"), "no external address");
    assert!(html.contains("storage could not be read: &lt;b&gt;denied&lt;/b&gt;"));
}

#[test]
fn an_empty_bucket_renders_a_page_that_says_so() {
    let t = Timeline::default();
    let html = page(vec![db("app", &t)], false);
    assert!(html.contains("data-verdict=\"failing\""));
    assert!(html.contains("no complete backup exists"));
    assert!(html.contains("none stored yet"));
    assert_eq!(html.matches("no data in this window").count(), 10);
    assert!(page(vec![], false).contains("has not opened its storage"));
}

#[test]
fn every_docs_link_is_listed_and_a_file_has_none() {
    let mut t = sample::history(now(), 2);
    t.verifications.last_mut().unwrap().passed = false;
    let html = page(vec![db("app", &t)], false);
    let links: Vec<&str> = html.split("href=\"/docs/").skip(1).map(|l| l.split('"').next().unwrap()).collect();
    assert!(
        links.len() >= 10 && links.contains(&"runbooks.md#verification-failing"),
        "{links:?}"
    );
    for target in links {
        assert!(DOC_LINKS.contains(&target), "{target} is not in DOC_LINKS");
    }
    let file = render(&Page {
        heading: "report".into(),
        now: now(),
        refresh_secs: None,
        details: true,
        docs: "",
        databases: vec![db("app", &t)],
    });
    assert!(
        !file.contains("href=\"docs") && !file.contains("refresh"),
        "a file links nowhere it cannot reach"
    );
    assert!(file.contains("verification failing (docs/runbooks.md)"));
}

#[test]
fn holds_a_failed_newest_verification_whose_record_is_unreadable_and_live_problems_count() {
    use crate::records::catalog::VerificationRef;
    use crate::records::holds::Hold;
    use crate::records::keys::BackupId;
    let mut t = sample::history(now(), 2);
    let id = t.catalog.backups[3].id;
    t.holds = vec![(
        id,
        Hold {
            backup: t.catalog.backups[3].key.clone(),
            seen_in: "app/backup_x.sql.gz".into(),
            reasons: vec!["public.orders lost 90 % of its rows".into()],
            since: now(),
        },
    )];
    let html = page(vec![db("app", &t)], false);
    assert!(
        html.contains("data-verdict=\"warning\"") && html.contains("public.orders lost 90 %"),
        "{html}"
    );
    t.newest_verification_unreadable = Some(VerificationRef {
        at: BackupId::at(now()),
        backup: id,
        passed: Some(false),
        key: "_pgvigil/app/verifications/x__y__failed.json".into(),
    });
    let html = page(vec![db("app", &t)], false);
    assert!(html.contains("data-verdict=\"failing\"") && html.contains("x__y__failed.json); its record cannot be read"));
    t.newest_verification_unreadable.as_mut().unwrap().passed = Some(true);
    t.holds.clear();
    assert!(page(vec![db("app", &t)], false).contains("data-verdict=\"warning\""));
}
