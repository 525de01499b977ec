//! The page's tables and facts: the newest backup and verification and the next backup due, the
//! weekly figures, and the latest runs.

use super::chart::Unit;
use super::html::{esc, when};
use super::page::{shown_failure, shown_verification, Database};
use crate::policy::report::{self, Report};
use crate::policy::schedule::due_in;
use crate::policy::status::{human_bytes, human_secs};
use crate::records::timeline::Timeline;
use chrono::{DateTime, Utc};
use std::fmt::Write as _;

/// Rows of the latest runs table.
const RUNS: usize = 20;

fn secs_opt(s: Option<f64>) -> String {
    s.map_or_else(|| "–".into(), |s| Unit::Seconds.format(s))
}

pub fn figures_table(r: &Report) -> String {
    let pct = |v: Option<f64>| v.map_or_else(|| "–".into(), |v| format!("{:.0} %", v * 100.0));
    let spread = |s: Option<report::Spread>| {
        s.map_or_else(
            || "–".into(),
            |s| format!("median {}, worst {}", Unit::Seconds.format(s.median), Unit::Seconds.format(s.worst)),
        )
    };
    let rows = [
        ("Backups made", format!("{} ({} failed attempts)", r.backups_made, r.backups_failed)),
        ("Average backup time", secs_opt(r.backup_avg_secs)),
        (
            "Verifications passed",
            format!(
                "{} of {} ({}; target 95 %)",
                r.verifications_passed,
                r.verifications,
                pct(r.success_rate)
            ),
        ),
        ("Average verification time", secs_opt(r.verify_avg_secs)),
        ("RTO", spread(r.rto_secs)),
        ("RPO", spread(r.rpo_secs)),
        ("Verified at least once", pct(r.coverage)),
        ("Size anomalies", r.anomalies.len().to_string()),
        (
            "Storage",
            format!(
                "{} in {} objects; {} backups kept, the oldest {}",
                human_bytes(r.total_bytes),
                r.object_count,
                r.backup_count,
                r.oldest_age_days.map_or_else(|| "–".into(), |d| format!("{d:.0} days old"))
            ),
        ),
        ("Projected monthly cost", format!("{:.2} at the configured price", r.monthly_cost)),
    ];
    let mut o = format!(
        "<div class=\"scroll\"><table class=\"figures\"><caption class=\"muted\">The weekly review: {} days up to now</caption><tbody>",
        r.days
    );
    for (k, v) in rows {
        let _ = write!(o, "<tr><th scope=\"row\">{k}</th><td>{}</td></tr>", esc(&v));
    }
    o.push_str("</tbody></table></div>");
    o
}

/// The latest runs, newest first: backups, failed attempts and verifications.
pub fn runs_table(t: &Timeline, details: bool) -> String {
    let mut rows: Vec<(DateTime<Utc>, String, String, String)> = Vec::new();
    for b in &t.backups {
        rows.push((
            b.id.0,
            "backup".into(),
            "stored".into(),
            format!(
                "{}, {} ({} SQL), took {}",
                b.key.rsplit('/').next().unwrap_or(&b.key),
                human_bytes(b.size),
                human_bytes(b.sql_size),
                secs_opt(b.duration_secs)
            ),
        ));
    }
    for f in &t.failures {
        rows.push((f.at, "backup".into(), "failed".into(), shown_failure(f, details).error));
    }
    for v in &t.verifications {
        let v = shown_verification(v, details);
        let name = v.key.rsplit('/').next().unwrap_or(&v.key).to_string();
        let what = if v.passed {
            format!(
                "{name}: {} tables checked, restored in {}",
                v.tables_checked,
                secs_opt(Some(v.restore_secs))
            )
        } else {
            format!("{name}: {}", v.reasons.join("; "))
        };
        rows.push((
            v.verified_at,
            "verification".into(),
            if v.passed { "passed" } else { "failed" }.into(),
            what,
        ));
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut o = String::from(
        "<div class=\"scroll\"><table class=\"runs\"><caption class=\"muted\">The latest runs, newest first</caption><thead><tr><th scope=\"col\">When</th><th scope=\"col\">Run</th><th scope=\"col\">Result</th><th scope=\"col\">Details</th></tr></thead><tbody>",
    );
    if rows.is_empty() {
        o.push_str("<tr><td colspan=\"4\">no runs recorded in the last 90 days</td></tr>");
    }
    for (at, run, result, what) in rows.into_iter().take(RUNS) {
        let _ = write!(
            o,
            "<tr class=\"{result}\"><td>{}</td><td>{run}</td><td>{result}</td><td>{}</td></tr>",
            when(at),
            esc(&what)
        );
    }
    o.push_str("</tbody></table></div>");
    o
}

pub fn facts(db: &Database, t: &Timeline, now: DateTime<Utc>) -> String {
    let mut o = String::from("<dl class=\"facts\">");
    let mut fact = |k: &str, v: String| {
        let _ = write!(o, "<dt>{k}</dt><dd>{}</dd>", esc(&v));
    };
    match t.catalog.newest_complete() {
        Some(b) => {
            fact(
                "Newest backup",
                format!(
                    "{} ({} ago, {})",
                    when(b.id.0),
                    human_secs((now - b.id.0).num_seconds()),
                    human_bytes(b.size)
                ),
            );
            let due = due_in(Some(b.id.0), db.backup_interval, now);
            fact(
                "Next backup due",
                if due.is_zero() {
                    "now".into()
                } else {
                    format!("in {}", human_secs(due.as_secs() as i64))
                },
            );
        }
        None => fact("Newest backup", "none stored yet".into()),
    }
    match t.verifications.last() {
        Some(v) => fact(
            "Newest verification",
            format!(
                "{} ({} ago): {} {}",
                when(v.verified_at),
                human_secs((now - v.verified_at).num_seconds()),
                if v.passed { "passed," } else { "failed," },
                v.key.rsplit('/').next().unwrap_or(&v.key)
            ),
        ),
        None => fact("Newest verification", "none recorded in the last 90 days".into()),
    }
    o.push_str("</dl>");
    o
}
