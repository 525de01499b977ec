//! Records with known values for the policies' table-driven tests.

use crate::records::catalog::BackupEntry;
use crate::records::history::VerificationRecord;
use crate::records::keys::BackupId;
use chrono::{DateTime, TimeZone, Utc};

pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
}
pub fn entry(hours_ago: i64, size: u64) -> BackupEntry {
    let id = BackupId::at(now() - chrono::Duration::hours(hours_ago));
    BackupEntry {
        id,
        key: format!("p/{}", id.file_name()),
        size,
        complete: true,
    }
}
pub fn verification(hours_ago: i64, passed: bool, secs: f64) -> VerificationRecord {
    VerificationRecord {
        causes: Vec::new(),
        key: "p/x".into(),
        verified_at: now() - chrono::Duration::hours(hours_ago),
        passed,
        reasons: if passed { vec![] } else { vec!["bad".into()] },
        untrusted: false,
        restore_secs: secs,
        checks_secs: 0.0,
        total_secs: secs,
        restored_bytes: None,
        tables_checked: 1,
        object_bytes: None,
        backup_time: None,
        rpo_secs: None,
        evidence: Default::default(),
    }
}
