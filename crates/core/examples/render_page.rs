//! Benchmark of the status page (`bench/run.sh` runs it): renders the page for a synthetic
//! history of DAYS days (a backup every hour, a verification every six) 21 times and prints a
//! Markdown row with the median time; writes the page to FILE when given.
//!
//! `cargo run --release -p pgvigil-core --example render_page -- [DAYS] [FILE]`

use pgvigil_core::policy::report::ReportSettings;
use pgvigil_core::view::page::{render, Database, Page};
use pgvigil_core::view::sample;
use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let days: i64 = args.next().and_then(|d| d.parse().ok()).unwrap_or(365);
    let file = args.next();
    let now = chrono::Utc::now();
    let history = sample::history(now, days);
    let page = |t| Page {
        heading: "pgvigil backup service".into(),
        now,
        refresh_secs: Some(60),
        details: false,
        docs: "/docs/",
        databases: vec![Database {
            name: "app".into(),
            timeline: Some(t),
            error: None,
            backup_interval: Duration::from_secs(3600),
            verify_interval: Duration::from_secs(6 * 3600),
            report: ReportSettings {
                retention_days: 365,
                calendar: None,
                price_per_gb_month: 0.023,
            },
            live_problems: Vec::new(),
        }],
    };
    let mut times = Vec::new();
    let mut html = String::new();
    for _ in 0..21 {
        let start = Instant::now();
        html = render(&page(&history));
        times.push(start.elapsed());
    }
    times.sort();
    println!(
        "| {days} days: {} backups, {} verifications, {} failed attempts | {:.1} | {:.0} KB |",
        history.backups.len(),
        history.verifications.len(),
        history.failures.len(),
        times[times.len() / 2].as_secs_f64() * 1000.0,
        html.len() as f64 / 1000.0
    );
    if let Some(f) = file {
        if let Err(e) = std::fs::write(&f, &html) {
            eprintln!("cannot write {f}: {e}");
            std::process::exit(1);
        }
    }
}
