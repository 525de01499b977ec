//! Rendering of the operator layer's results: human tables and text (the default) or JSON.

pub use pgvigil_core::operator::prelude::human_bytes;
use pgvigil_core::operator::prelude::{human_secs, KeptBecause, Report, Spread, Verdict, VerificationRecord};
use pgvigil_core::operator::{CheckReport, ListRow, PrunePlan, StatusView};
use serde::Serialize;
use std::fmt::Write as _;

/// Pretty JSON of anything serializable.
pub fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\": \"cannot encode: {e}\"}}"))
}

#[derive(Serialize)]
struct StatusJson<'a> {
    verdict: Verdict,
    problems: &'a [String],
    newest_backup: Option<&'a str>,
    newest_backup_age_secs: Option<i64>,
    newest_backup_size: Option<u64>,
    last_verification: Option<&'a VerificationRecord>,
    next_backup_due_in_secs: Option<i64>,
}

/// `pgvigil status --json`
pub fn status_json(v: &StatusView) -> String {
    json(&StatusJson {
        verdict: v.verdict,
        problems: &v.problems,
        newest_backup: v.newest.as_ref().map(|b| b.key.as_str()),
        newest_backup_age_secs: v.newest.as_ref().map(|b| (v.now - b.id.0).num_seconds()),
        newest_backup_size: v.newest.as_ref().map(|b| b.size),
        last_verification: v.last_verification.as_ref(),
        next_backup_due_in_secs: v.next_backup_due_in_secs,
    })
}

/// `pgvigil status`
pub fn status(v: &StatusView, storage: &str) -> String {
    let mut s = String::new();
    let now = v.now;
    let _ = writeln!(s, "{}: {storage}", format!("{:?}", v.verdict).to_uppercase());
    match &v.newest {
        Some(b) => {
            let _ = writeln!(
                s,
                "newest backup:       {} ({} old, {})",
                b.key,
                human_secs((now - b.id.0).num_seconds()),
                human_bytes(b.size)
            );
        }
        None => s.push_str("newest backup:       none\n"),
    }
    match &v.last_verification {
        Some(r) => {
            let _ = writeln!(
                s,
                "last verification:   {} {} ({} ago, {:.1}s)",
                if r.passed { "passed" } else { "FAILED" },
                crate::term::one_line(&r.key),
                human_secs((now - r.verified_at).num_seconds()),
                r.total_secs
            );
        }
        None => s.push_str("last verification:   none\n"),
    }
    match v.next_backup_due_in_secs {
        Some(0) => s.push_str("next backup due:     now (overdue)\n"),
        Some(d) => {
            let _ = writeln!(s, "next backup due in:  {}", human_secs(d));
        }
        None => s.push_str("next backup due:     now (no backup yet)\n"),
    }
    for p in &v.problems {
        let _ = writeln!(s, "problem:             {}", crate::term::one_line(p));
    }
    s
}

/// `pgvigil list`
pub fn list(rows: &[ListRow], prefix: &str) -> String {
    let mut s = format!(
        "{:<22} {:>10} {:>8}  {:<10} KEY  KEPT BY\n",
        "TIME (UTC)", "SIZE", "CHANGE", "VERIFIED"
    );
    for r in rows {
        let verified = match (r.complete, r.verified) {
            (false, _) => "INCOMPLETE",
            (_, Some(true)) => "passed",
            (_, Some(false)) => "FAILED",
            (_, None) => "no",
        };
        let change = r.change_vs_median.map_or("-".into(), |c| format!("{:+.0}%", c * 100.0));
        let kept_by = match (r.policy_unknown, r.deleted_next) {
            (true, _) => "?".to_string(),
            (false, true) => "nothing: the next prune deletes it".to_string(),
            (false, false) => r.kept_by.join(","),
        };
        let _ = writeln!(
            s,
            "{:<22} {:>10} {:>8}  {:<10} {}  {kept_by}",
            r.time.format("%Y-%m-%d %H:%M:%S"),
            human_bytes(r.size),
            change,
            verified,
            r.key
        );
    }
    if rows.is_empty() {
        let _ = writeln!(s, "(no backups under {prefix})");
    }
    s
}

/// `pgvigil check`
pub fn check(r: &CheckReport, prefix: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "checked: {}", r.depth);
    for row in &r.backups {
        let _ = writeln!(
            s,
            "{:<10} {}{}",
            match (row.ok, r.depth.starts_with("presence")) {
                (true, _) => "OK",
                (false, true) if row.problems.iter().any(|p| p.contains("is gone")) => "ABSENT",
                (false, true) => "CHANGED",
                (false, false) => "CORRUPTED",
            },
            row.key,
            if row.ok {
                String::new()
            } else {
                format!(": {}", crate::term::one_line(&row.problems.join("; ")))
            }
        );
    }
    if r.backups.is_empty() {
        let _ = writeln!(s, "(no backups under {prefix})");
    } else if r.depth.starts_with("presence") {
        let bad = r.backups.iter().filter(|b| !b.ok).count();
        let _ = writeln!(
            s,
            "{} of {} kept backups are not in storage as their manifests say",
            bad,
            r.backups.len()
        );
    } else {
        let _ = writeln!(
            s,
            "newest good backup: {}",
            r.newest_good.as_deref().unwrap_or("NONE of those checked")
        );
    }
    s
}

/// An error and its causes as one line, `outer: inner: …`, each cause said once: an error that
/// ends its own message with its source (`compression failed: {source}`) does not have that
/// source repeated by the chain. Any other cause is kept, even if its words appear earlier.
pub fn error(e: &anyhow::Error) -> String {
    let mut line = String::new();
    let mut previous = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || previous.ends_with(&text) {
            previous = text;
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
        previous = text;
    }
    line
}

fn pct(v: f64) -> String {
    format!("{:+.0}%", v * 100.0)
}

/// `pgvigil report`
pub fn report(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "pgvigil report — last {} days", r.days);
    if r.unreadable > 0 {
        let _ = writeln!(
            s,
            "WARNING: {} record(s) in storage could not be read and are left out of these figures (pgvigil check says more)",
            r.unreadable
        );
    }
    let _ = writeln!(s, "\nBackups");
    let _ = writeln!(s, "  made:                {}", r.backups_made);
    let _ = writeln!(s, "  failed attempts:     {}", r.backups_failed);
    let _ = writeln!(
        s,
        "  average duration:    {}",
        r.backup_avg_secs.map_or("-".into(), |d| format!("{d:.1}s"))
    );
    let _ = writeln!(s, "  newest size:         {}", r.newest_size.map_or("-".into(), human_bytes));
    let _ = writeln!(s, "  size trend:          {}", r.size_change.map_or("-".into(), pct));
    if r.anomalies.is_empty() {
        let _ = writeln!(s, "  anomalies:           none");
    } else {
        for (k, a) in &r.anomalies {
            let _ = writeln!(s, "  anomaly ({:?}):  {k}: {}", a.severity, a.message);
        }
    }
    let _ = writeln!(s, "\nVerification");
    let _ = writeln!(s, "  runs:                {} ({} passed)", r.verifications, r.verifications_passed);
    let rate = match (r.success_rate, r.meets_target) {
        (Some(x), Some(true)) => format!("{:.1}% (target 95%: met)", x * 100.0),
        (Some(x), _) => format!("{:.1}% (target 95%: MISSED)", x * 100.0),
        _ => "- (no verifications in the window)".into(),
    };
    let _ = writeln!(s, "  success rate:        {rate}");
    let _ = writeln!(
        s,
        "  average duration:    {}",
        r.verify_avg_secs.map_or("-".into(), |d| format!("{d:.1}s"))
    );
    let _ = writeln!(s, "  duration trend:      {}", r.verify_duration_trend.map_or("-".into(), pct));
    let secs = |x: f64| if x < 120.0 { format!("{x:.1}s") } else { human_secs(x as i64) };
    let spread = |x: Option<Spread>| x.map_or("-".into(), |s| format!("median {}, worst {}", secs(s.median), secs(s.worst)));
    let _ = writeln!(s, "  RTO (restore time):  {}", spread(r.rto_secs));
    let _ = writeln!(s, "  RPO (data age):      {}", spread(r.rpo_secs));
    let _ = writeln!(
        s,
        "  verification lag:    {}{}",
        spread(r.lag_secs),
        if r.unverified_in_window > 0 {
            format!(" ({} not verified yet)", r.unverified_in_window)
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        s,
        "  coverage:            {}",
        r.coverage.map_or("-".into(), |c| format!(
            "{:.0}% of stored backups were verified at least once",
            c * 100.0
        ))
    );
    let _ = writeln!(s, "\nStorage");
    let _ = writeln!(
        s,
        "  total:               {} in {} objects ({} backups)",
        human_bytes(r.total_bytes),
        r.object_count,
        r.backup_count
    );
    let oldest = match r.oldest_age_days {
        Some(d) if r.calendar.is_some() => format!(
            "{d:.1} days (retention {} days, and the newest backup of each period: {})",
            r.retention_days,
            r.calendar.as_deref().unwrap_or_default()
        ),
        Some(d) if d > r.retention_days as f64 + 1.0 => {
            format!("{d:.1} days (retention {} days: retention is not keeping up)", r.retention_days)
        }
        Some(d) => format!("{d:.1} days (retention {} days)", r.retention_days),
        None => "-".into(),
    };
    let _ = writeln!(s, "  oldest backup:       {oldest}");
    let _ = writeln!(s, "  projected cost:      ${:.2} per month", r.monthly_cost);
    s
}

/// What `pgvigil prune` will do: the policy, what it keeps beyond the bare policy and why, and
/// what it deletes (or would, with `--dry-run`).
pub fn prune_plan(p: &PrunePlan, prefix: &str, dry_run: bool) -> String {
    let mut s = String::new();
    let r = &p.policy.retention;
    let _ = writeln!(s, "policy: {}", p.policy.source);
    let _ = writeln!(s, "retention: {}", r.describe());
    // Every backup kept beyond the age window, with every rule that keeps it (the ones inside
    // it in one line: `pgvigil list` shows them all).
    let young = p.plan.rules.iter().filter(|(_, r)| r.contains(&KeptBecause::Window)).count();
    let _ = writeln!(s, "keeping {young} backups younger than {} days", r.retention_days);
    for (id, rules) in p.plan.rules.iter().rev() {
        if rules.contains(&KeptBecause::Window) {
            continue;
        }
        let why: Vec<String> = rules.iter().map(|r| r.describe()).collect();
        let _ = writeln!(s, "keeping {prefix}{} ({})", id.file_name(), why.join("; "));
    }
    if p.plan.delete.is_empty() {
        let _ = writeln!(s, "nothing to delete");
    }
    for id in &p.plan.delete {
        let _ = writeln!(
            s,
            "{} {prefix}{}",
            if dry_run { "would delete" } else { "to delete:" },
            id.file_name()
        );
    }
    s
}

#[cfg(test)]
mod tests {
    /// An error that shows its source in its own message and also gives it as its source, as
    /// several of core's do.
    #[derive(Debug)]
    struct Compression(std::io::Error);

    impl std::fmt::Display for Compression {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "compression failed: {}", self.0)
        }
    }

    impl std::error::Error for Compression {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn an_error_is_one_line_with_each_cause_once() {
        let e = anyhow::Error::from(Compression(std::io::Error::other("zlib broke"))).context("the backup did not complete");
        assert_eq!(super::error(&e), "the backup did not complete: compression failed: zlib broke");
        let plain = anyhow::Error::from(std::io::Error::other("disk full")).context("writing the report");
        assert_eq!(super::error(&plain), "writing the report: disk full");
        // A cause whose words happen to stand earlier is another fact: kept.
        let other = anyhow::Error::from(std::io::Error::other("timed out")).context("the restore timed out before the checks");
        assert_eq!(super::error(&other), "the restore timed out before the checks: timed out");
    }
}
