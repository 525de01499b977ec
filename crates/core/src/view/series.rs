//! Which charts a database gets, from its records: sizes, durations, verification time and RTO,
//! RPO and storage, each with failures and size anomalies marked on the time axis.

use super::chart::{Chart, Mark, MarkKind, Series, Unit};
use super::html::when;
use crate::policy::anomaly;
use crate::records::history::VerificationRecord;
use crate::records::keys::BackupId;
use crate::records::timeline::{BackupPoint, Timeline};
use chrono::{DateTime, Utc};

/// Failures and size anomalies, as marks on the time axis.
fn marks(t: &Timeline) -> Vec<Mark> {
    let mut marks: Vec<Mark> = t
        .failures
        .iter()
        .map(|f| Mark {
            at: f.at,
            kind: MarkKind::Failure,
            label: format!("backup attempt failed, {}", when(f.at)),
        })
        .collect();
    marks.extend(t.verifications.iter().filter(|v| !v.passed).map(|v| Mark {
        at: v.verified_at,
        kind: MarkKind::Failure,
        label: format!("verification failed, {}", when(v.verified_at)),
    }));
    // Newest first: the seven backups before each one follow it.
    let complete: Vec<(BackupId, u64)> = t.catalog.complete().map(|b| (b.id, b.size)).collect();
    for b in &t.backups {
        let from = complete.partition_point(|(id, _)| *id >= b.id);
        let recent: Vec<u64> = complete[from..].iter().take(7).map(|(_, size)| *size).collect();
        if let Some(a) = anomaly::assess(b.size, &recent) {
            marks.push(Mark {
                at: b.id.0,
                kind: MarkKind::Anomaly,
                label: format!("size anomaly, {}: {}", when(b.id.0), a.message),
            });
        }
    }
    marks
}

/// The charts of one window.
pub fn charts(t: &Timeline, id: &str, now: DateTime<Utc>, days: u32) -> Vec<Chart> {
    let from = now - chrono::Duration::days(i64::from(days));
    let marks = marks(t);
    let chart = |key: &str, title: &str, unit: Unit, series: Vec<Series>| Chart {
        id: format!("{id}-w{days}-{key}"),
        title: title.to_string(),
        unit,
        from,
        to: now,
        series,
        marks: marks.clone(),
    };
    let backups = |f: &dyn Fn(&BackupPoint) -> Option<f64>| -> Vec<(DateTime<Utc>, f64)> {
        t.backups.iter().filter_map(|b| f(b).map(|v| (b.id.0, v))).collect()
    };
    let verifications = |f: &dyn Fn(&VerificationRecord) -> Option<f64>| -> Vec<(DateTime<Utc>, f64)> {
        t.verifications.iter().filter_map(|v| f(v).map(|x| (v.verified_at, x))).collect()
    };
    // Storage: what the backups still stored add up to, by the time each was taken.
    let mut stored = Vec::new();
    let mut sum = 0u64;
    for b in t.catalog.complete().collect::<Vec<_>>().iter().rev() {
        sum = sum.saturating_add(b.size);
        stored.push((b.id.0, sum as f64));
    }
    let s = |name, points| Series { name, points };
    vec![
        chart(
            "size",
            "Backup size",
            Unit::Bytes,
            vec![
                s("compressed", backups(&|b| Some(b.size as f64))),
                s("SQL", backups(&|b| Some(b.sql_size as f64))),
            ],
        ),
        chart(
            "duration",
            "Backup duration",
            Unit::Seconds,
            vec![s("backup", backups(&|b| b.duration_secs))],
        ),
        chart(
            "verify",
            "Verification time and RTO",
            Unit::Seconds,
            vec![
                s("verification", verifications(&|v| Some(v.total_secs))),
                s("RTO (restore)", verifications(&|v| v.passed.then_some(v.restore_secs))),
            ],
        ),
        chart(
            "rpo",
            "RPO (age of the data when verified)",
            Unit::Seconds,
            vec![s("RPO", verifications(&|v| v.rpo_secs.map(|s| s as f64)))],
        ),
        chart(
            "storage",
            "Storage used by the backups kept",
            Unit::Bytes,
            vec![s("stored", stored)],
        ),
    ]
}

/// Which docs section explains a chart.
pub fn chart_doc(key: &str) -> &'static str {
    match key {
        "size" => "status-page.md#backup-size",
        "duration" => "status-page.md#backup-duration",
        "verify" => "status-page.md#verification-time-and-rto",
        "rpo" => "status-page.md#rpo",
        _ => "status-page.md#storage-used",
    }
}
