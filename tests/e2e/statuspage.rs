//! The status page, loaded from running services in a real browser (headless Chromium): the values
//! it shows are the records', its charts have a point per record, it logs no console error, makes
//! no request, passes contrast and label checks, fits a phone, and is valid HTML (tidy). With
//! `HEALTH_TOKEN` the page asks for the token and then shows reasons it otherwise leaves out.
//! A screenshot lands in `target/test-artefacts/`.

use pgvigil_core::infra::config::Role;
use pgvigil_core::infra::storage;
use pgvigil_core::records::history::{write_failure, FailureRecord};
use pgvigil_core::records::keys::Layout;
use pgvigil_core::records::timeline::{RecordCache, Timeline};
use pgvigil_e2e::browser::{artefacts, Browser};
use pgvigil_e2e::lines;
use pgvigil_e2e::pg::free_port;
use pgvigil_e2e::run::{run, text, Service};
use pgvigil_e2e::{init_logs, sample, settings, PgServer, S3Server};
use tokio_util::sync::CancellationToken;

/// What the test reads off the rendered page, in the browser.
const FACTS: &str = r#"
const charts = {};
for (const f of document.querySelectorAll('figure.chart')) {
  charts[f.id] = {};
  for (const g of f.querySelectorAll('g.series')) {
    charts[f.id][g.dataset.series] = { declared: +g.dataset.points, drawn: g.querySelector('polyline').points.numberOfItems };
  }
  charts[f.id].failures = f.querySelectorAll('line.mark.failure').length;
}
// Every chart is an image with a name; every table has a caption; the page has a language.
const unlabelled = [...document.querySelectorAll('svg')].filter(s => {
  if (s.getAttribute('role') !== 'img') return true;
  const ids = (s.getAttribute('aria-labelledby') || '').split(' ').filter(Boolean);
  return ids.length === 0 || ids.some(id => !document.getElementById(id) || !document.getElementById(id).textContent.trim());
}).length;
const uncaptioned = [...document.querySelectorAll('table')].filter(t => !t.caption || !t.caption.textContent.trim()).length;
// Contrast (WCAG 2) of every element's own text against the background it sits on.
const rgb = c => (c.match(/[\d.]+/g) || []).map(Number);
const lum = c => { const [r, g, b] = rgb(c).slice(0, 3).map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); }); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
const background = el => { for (; el; el = el.parentElement) { const c = getComputedStyle(el).backgroundColor; const a = rgb(c)[3]; if (a === undefined || a > 0) return c; } return 'rgb(255, 255, 255)'; };
let worst = 21, worstText = '';
for (const el of document.querySelectorAll('body *')) {
  const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
  if (!own || el.closest('svg') || getComputedStyle(el).visibility === 'hidden' || el.getClientRects().length === 0) continue;
  const [a, b] = [lum(getComputedStyle(el).color), lum(background(el))];
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  if (ratio < worst) { worst = ratio; worstText = el.textContent.trim().slice(0, 40); }
}
return {
  charts,
  verdicts: [...document.querySelectorAll('[data-verdict]')].map(e => e.dataset.verdict),
  text: document.body.innerText,
  resources: performance.getEntriesByType('resource').map(r => r.name),
  unlabelled, uncaptioned, lang: document.documentElement.lang,
  contrast: worst, contrastText: worstText,
  overflow: document.documentElement.scrollWidth - window.innerWidth,
};
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_records_in_a_real_browser() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 2000).await;
    let s3 = S3Server::start().await;
    let mut vars = s3.vars("page");
    vars.push(("DATABASE_URL", pg.url("app")));
    vars.push(("VERIFY_DATABASE_URL", pg.url("postgres")));
    vars.push(("BACKUP_INTERVAL", "86400".into()));
    vars.push(("VERIFY_INTERVAL", "86400".into()));
    for _ in 0..3 {
        let out = run("pgvigil-backup", &["--once"], &vars).await;
        assert!(out.status.success(), "{}", text(&out));
    }
    let out = run("pgvigil-verify", &["--once"], &vars).await;
    assert!(out.status.success(), "{}", text(&out));
    // A failed attempt after the newest backup, whose message quotes something an open page must
    // not show.
    let st = storage::connect(&settings(&vars, Role::Cli).storage).await.unwrap();
    let layout = Layout::new("page");
    let never = CancellationToken::new();
    let failed_at = chrono::Utc::now();
    let failure = FailureRecord {
        at: failed_at,
        error: "pg_dump: error: <secret-ish> row quoted".into(),
        retryable: true,
    };
    write_failure(st.as_ref(), &layout, &failure, &never).await.unwrap();
    let since = chrono::Utc::now() - chrono::Duration::days(90);
    let t = Timeline::load(st.as_ref(), &layout, since, &mut RecordCache::default(), &never)
        .await
        .unwrap();
    assert_eq!((t.backups.len(), t.verifications.len(), t.failures.len()), (3, 1, 1));

    // The backup service, open (no token).
    let port = free_port();
    let mut open_vars = vars.clone();
    open_vars.push(("PORT", port.to_string()));
    let mut svc = Service::start("pgvigil-backup", &[], &open_vars);
    svc.wait_for(lines::NEXT_BACKUP, 1, 60).await;
    let url = format!("http://127.0.0.1:{port}/");
    let page = reqwest::get(&url).await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(!html.contains("secret-ish"), "an open page leaves out what records quote");

    // Valid HTML.
    let file = artefacts().join("status-page.html");
    std::fs::create_dir_all(artefacts()).unwrap();
    std::fs::write(&file, &html).unwrap();
    let tidy = std::process::Command::new("tidy").args(["-q", "-e"]).arg(&file).output();
    let tidy = tidy.expect("tidy is missing: install Debian's tidy package (.ci/run does)");
    assert!(tidy.status.success(), "tidy:\n{}", String::from_utf8_lossy(&tidy.stderr));

    let browser = Browser::start(1280, 2200).await;
    browser.open(&url).await;
    let facts = browser.eval(FACTS).await;
    browser.screenshot(&artefacts().join("status-page.png")).await;
    let chart = |id: &str, series: &str| -> (i64, i64) {
        let s = &facts["charts"][id][series];
        (s["declared"].as_i64().unwrap_or(-1), s["drawn"].as_i64().unwrap_or(-1))
    };
    for days in [30, 90] {
        assert_eq!(chart(&format!("db0-w{days}-size"), "compressed"), (3, 3), "{facts}");
        assert_eq!(chart(&format!("db0-w{days}-size"), "SQL"), (3, 3));
        assert_eq!(chart(&format!("db0-w{days}-duration"), "backup"), (3, 3));
        assert_eq!(chart(&format!("db0-w{days}-verify"), "verification"), (1, 1));
        assert_eq!(chart(&format!("db0-w{days}-verify"), "RTO (restore)"), (1, 1));
        assert_eq!(chart(&format!("db0-w{days}-storage"), "stored"), (3, 3));
        assert_eq!(
            facts["charts"][format!("db0-w{days}-size")]["failures"],
            1,
            "the failed attempt is marked"
        );
    }
    assert_eq!(
        facts["verdicts"],
        serde_json::json!(["warning"]),
        "the last attempt failed: {facts}"
    );
    let shown = facts["text"].as_str().unwrap();
    let newest = t.catalog.newest_complete().unwrap();
    assert!(shown.contains(&newest.id.0.format("%Y-%m-%d %H:%M UTC").to_string()), "{shown}");
    assert!(shown.contains("the last backup attempt failed"), "{shown}");
    let v = &t.verifications[0];
    assert!(shown.contains(&format!("{} tables checked", v.tables_checked)), "{shown}");
    assert!(shown.contains("Verifications passed\t1 of 1"), "{shown}");
    assert_eq!(facts["resources"], serde_json::json!([]), "the page requests nothing");
    assert_eq!(facts["unlabelled"], 0, "every chart has a name and a description");
    assert_eq!(facts["uncaptioned"], 0);
    assert_eq!(facts["lang"], "en");
    assert!(facts["contrast"].as_f64().unwrap() >= 4.5, "contrast: {facts}");
    let console = browser.console().await;
    assert!(
        console.iter().all(|(level, _)| level != "SEVERE" && level != "WARNING"),
        "console: {console:?}"
    );
    // On a phone: nothing wider than the screen.
    browser.resize(390, 844).await;
    let phone = browser
        .eval("return document.documentElement.scrollWidth - window.innerWidth;")
        .await;
    assert!(phone.as_i64().unwrap_or(999) <= 0, "wider than a phone by {phone}px");
    browser.screenshot(&artefacts().join("status-page-phone.png")).await;
    browser.close().await;
    svc.stop().await;

    // The verify service, with a token: the page asks for it, and then shows the reasons.
    let port = free_port();
    let mut token_vars = vars.clone();
    token_vars.push(("PORT", port.to_string()));
    token_vars.push(("HEALTH_TOKEN", "s3cret-token-1234567890".into()));
    let mut svc = Service::start("pgvigil-verify", &[], &token_vars);
    svc.wait_for(lines::HEALTH_LISTENING, 1, 60).await;
    svc.wait_for(lines::NEXT_VERIFICATION, 1, 60).await;
    let url = format!("http://127.0.0.1:{port}/");
    let client = reqwest::Client::new();
    let denied = client.get(&url).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    assert!(denied.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    let wrong = client.get(&url).basic_auth("ops", Some("wrong")).send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let page = client
        .get(&url)
        .basic_auth("ops", Some("s3cret-token-1234567890"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("&lt;secret-ish&gt; row quoted"), "behind the token, escaped");
    assert!(html.contains("pgvigil verify service"));
    let bearer = client.get(&url).bearer_auth("s3cret-token-1234567890").send().await.unwrap();
    assert_eq!(bearer.status(), 200);
    let doc = client
        .get(format!("{url}docs/runbooks.md"))
        .bearer_auth("s3cret-token-1234567890")
        .send()
        .await
        .unwrap();
    assert!(doc.text().await.unwrap().contains("## Emergencies"));
    svc.stop().await;

    // A newest verification record named "failed" that cannot be read: the written report says
    // failing, names it, and counts it as unreadable.
    let garbage_at = chrono::Utc::now();
    let newest = t.catalog.newest_complete().unwrap().id;
    let key = layout.verification(garbage_at, newest, false);
    storage::put_bytes(st.as_ref(), &key, bytes::Bytes::from_static(b"{not json"), &never)
        .await
        .unwrap();
    let file = artefacts().join("weekly.html");
    let out = run("pgvigil", &["report", "--html", file.to_str().unwrap()], &vars).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("1 record(s) in storage could not be read"), "{}", text(&out));
    let html = std::fs::read_to_string(&file).unwrap();
    assert!(html.contains("data-verdict=\"failing\""), "{html}");
    assert!(html.contains("its record cannot be read"), "{html}");
    assert!(html.contains("Content-Security-Policy"), "the file carries its own policy");
    assert!(html.contains("&lt;secret-ish&gt;"), "the operator's file shows the reasons");
    assert!(!html.contains("href=\"docs/") && !html.contains("http-equiv=\"refresh\""));
    let tidy = std::process::Command::new("tidy").args(["-q", "-e"]).arg(&file).output().unwrap();
    assert!(tidy.status.success(), "tidy:\n{}", String::from_utf8_lossy(&tidy.stderr));
}
