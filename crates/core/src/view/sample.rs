//! A synthetic history (hourly backups, a verification every six hours, a failure now and then)
//! for the page's tests and its rendering benchmark.

use crate::records::catalog::{BackupEntry, VerificationRef};
use crate::records::history::{FailureRecord, VerificationRecord};
use crate::records::keys::BackupId;
use crate::records::timeline::{BackupPoint, Timeline};
use chrono::{DateTime, Utc};

/// `days` of history ending at `now`, under the prefix `app`.
pub fn history(now: DateTime<Utc>, days: i64) -> Timeline {
    let mut t = Timeline::default();
    let hours = days * 24;
    for h in (0..hours).rev() {
        let at = now - chrono::Duration::hours(h) - chrono::Duration::minutes(5);
        let id = BackupId::at(at);
        let key = format!("app/{}", id.file_name());
        // Slow growth, with one size anomaly three days ago.
        let mut size = 1_000_000 + (hours - h) as u64 * 100;
        if h == 72 {
            size /= 10;
        }
        t.catalog.backups.push(BackupEntry {
            id,
            key: key.clone(),
            size,
            complete: true,
        });
        t.backups.push(BackupPoint {
            id,
            key,
            size,
            sql_size: size * 5,
            duration_secs: Some(30.0 + (h % 7) as f64),
        });
        if h % 6 == 0 {
            let passed = h != 12;
            let verified_at = at + chrono::Duration::minutes(3);
            let key = format!("_pgvigil/app/verifications/{}", verified_at.timestamp());
            t.catalog.verifications.push(VerificationRef {
                at: BackupId::at(verified_at),
                backup: id,
                passed: Some(passed),
                key: key.clone(),
            });
            t.verifications.push(VerificationRecord {
                causes: Vec::new(),
                key: format!("app/{}", id.file_name()),
                verified_at,
                passed,
                reasons: if passed {
                    vec![]
                } else {
                    vec!["table public.t: 10 rows in the backup, 9 restored".into()]
                },
                untrusted: false,
                restore_secs: 60.0,
                checks_secs: 5.0,
                total_secs: 65.0,
                restored_bytes: Some(size * 6),
                tables_checked: 12,
                object_bytes: Some(size),
                backup_time: Some(at),
                rpo_secs: Some(1200),
                evidence: Default::default(),
            });
        }
        if h % 100 == 50 {
            let at = at + chrono::Duration::minutes(30);
            t.catalog
                .failures
                .push((BackupId::at(at), format!("_pgvigil/app/failures/{}", at.timestamp())));
            t.failures.push(FailureRecord {
                at,
                error: "could not connect to the database: password authentication failed".into(),
                retryable: true,
            });
        }
    }
    t.catalog.backups.reverse();
    t.total_bytes = t.catalog.backups.iter().map(|b| b.size).sum();
    t.object_count = t.catalog.backups.len() * 2;
    t
}
