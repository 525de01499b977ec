//! The records pgvigil keeps about what happened: one per verification (the verdict and its
//! evidence) and one per failed backup attempt. They live in the metadata area, never under the
//! backup prefix.

use super::keys::{BackupId, Layout};
use crate::infra::storage::{get_bytes, put_bytes, Key, Storage, StorageError, MAX_RECORD};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// The stored result of one verification.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VerificationRecord {
    /// Backup object key.
    pub key: String,
    /// When the verification started.
    pub verified_at: DateTime<Utc>,
    /// Pass or fail.
    pub passed: bool,
    /// Every reason it failed, in words (empty when it passed).
    pub reasons: Vec<String>,
    /// What each reason blames, one per reason in the same order, for whatever branches on it
    /// (older records have none).
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "causes_leniently")]
    pub causes: Vec<Cause>,
    /// The backup was refused because no trusted backup service signed it (`BACKUP_TRUSTED_KEYS`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub untrusted: bool,
    /// Seconds spent downloading + restoring (they overlap: the restore streams the download).
    pub restore_secs: f64,
    /// Seconds spent on checks after the restore.
    pub checks_secs: f64,
    /// Total seconds.
    pub total_secs: f64,
    /// Size of the restored database in bytes.
    pub restored_bytes: Option<u64>,
    /// Number of tables whose row counts were compared.
    pub tables_checked: usize,
    /// Size of the backup object in bytes.
    #[serde(default)]
    pub object_bytes: Option<u64>,
    /// When the backup's data was taken (the backup's identity).
    #[serde(default)]
    pub backup_time: Option<DateTime<Utc>>,
    /// RPO: the age of the backup's data when it was verified, in seconds.
    #[serde(default)]
    pub rpo_secs: Option<i64>,
    /// What the verdict rests on.
    #[serde(default)]
    pub evidence: Evidence,
}

/// The evidence behind a verdict: what was compared and checked, and what was not (and why).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Evidence {
    /// Versions involved.
    pub versions: Versions,
    /// Per table: the rows the manifest recorded and the rows found after the restore.
    pub tables: Vec<TableEvidence>,
    /// Index checks (amcheck).
    pub indexes: IndexEvidence,
    /// The operator's own checks, with the value each returned.
    pub user_checks: Vec<UserCheckEvidence>,
    /// Tables whose `FORCE ROW LEVEL SECURITY` was lifted in the scratch database so that counts
    /// see every row.
    pub row_security_lifted: Vec<String>,
    /// Ownership and grants: what was restored and checked, and what was left out (and why).
    #[serde(default)]
    pub privileges: PrivilegeEvidence,
    /// The id of the trusted key that signed the manifest (`None`: not authenticated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
    /// Sessions that loaded table data at once (`None`: the restore ran in one stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_sessions: Option<u32>,
    /// Why the restore ran in one stream although several sessions were allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_stream: Option<String>,
    /// Subscription statements in the dump that were not restored (a restore never creates a
    /// subscription).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub subscriptions_left_out: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What one reason of a failed verification blames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The manifest is missing or unreadable.
    Manifest,
    /// No trusted backup service signed the manifest.
    Untrusted,
    /// The restore failed, stopped early, or was refused (a statement pg_dump does not write,
    /// an object that differs from its manifest).
    Restore,
    /// A table's row count differs from the manifest's.
    RowCount,
    /// A check on the restored data failed (an index, a count statement).
    Check,
    /// One of the operator's check queries failed.
    UserCheck,
    /// Owners or grants differ from the dump's, or the roles saved with the backup are damaged.
    Privileges,
    /// The restore or the checks ran past the deadline.
    Deadline,
    /// A cause this version does not know.
    #[serde(other)]
    Unknown,
}

impl Cause {
    /// Its name in records and logs (the serde name).
    pub fn name(self) -> &'static str {
        match self {
            Cause::Manifest => "manifest",
            Cause::Untrusted => "untrusted",
            Cause::Restore => "restore",
            Cause::RowCount => "row_count",
            Cause::Check => "check",
            Cause::UserCheck => "user_check",
            Cause::Privileges => "privileges",
            Cause::Deadline => "deadline",
            Cause::Unknown => "unknown",
        }
    }
}

/// `causes` as read back from storage, where anyone may have written anything: a value that is
/// not a list reads as none, an item that is not a cause this version knows as `Unknown`, so the
/// record itself stays readable (see [`super::lenient`]).
fn causes_leniently<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Cause>, D::Error> {
    super::lenient::names(d, Cause::Unknown)
}

/// One reason a backup failed verification: what it blames, and the words for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// What it blames.
    pub cause: Cause,
    /// The reason in words.
    pub text: String,
}

impl Reason {
    /// A reason blaming `cause`.
    pub fn new(cause: Cause, text: impl Into<String>) -> Self {
        Self { cause, text: text.into() }
    }
}

/// What a verification did with the dump's ownership and privilege statements.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PrivilegeEvidence {
    /// What was restored and checked (stored in words, as records always were).
    pub restored: PrivilegesRestored,
    /// Why something was left out, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Roles created on the verify server (without login or password) for the restore.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles_created: Vec<String>,
    /// Tables whose owner was compared with the dump's.
    pub owners_checked: usize,
    /// Tables whose grantees were compared with the dump's.
    pub grants_checked: usize,
    /// Tables the dump gives owners or grants that the restored database does not have under
    /// that name (not compared).
    #[serde(default)]
    pub not_compared: usize,
    /// Ownership and privilege statements not run.
    pub statements_left_out: u32,
}

/// What a verification restored of the dump's ownership and privileges. Stored as the words a
/// person reads in the record; words this version does not know (a newer writer, a tampered
/// record) read as [`PrivilegesRestored::Unknown`] rather than making the record unreadable.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum PrivilegesRestored {
    /// A superuser verify role restored owners and grants, and both were compared.
    #[serde(rename = "table owners and table-level grants restored and checked")]
    OwnersAndGrants,
    /// Grants restored and compared; ownership needs a superuser.
    #[serde(rename = "table-level grants restored and checked")]
    Grants,
    /// Left out (the reason is in `skipped`).
    #[serde(rename = "left out")]
    LeftOut,
    /// The backup was taken without owners and grants.
    #[serde(rename = "not in the backup (taken without owners and grants)")]
    NotInBackup,
    /// Words this version does not know.
    #[default]
    #[serde(other, rename = "unknown")]
    Unknown,
}

impl std::fmt::Display for PrivilegesRestored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PrivilegesRestored::OwnersAndGrants => "table owners and table-level grants restored and checked",
            PrivilegesRestored::Grants => "table-level grants restored and checked",
            PrivilegesRestored::LeftOut => "left out",
            PrivilegesRestored::NotInBackup => "not in the backup (taken without owners and grants)",
            PrivilegesRestored::Unknown => "unknown",
        })
    }
}

/// Versions of everything that took part.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Versions {
    /// The source server (from the manifest).
    pub source_server: String,
    /// The pg_dump that wrote the backup (from the manifest).
    pub pg_dump: String,
    /// The verify server.
    pub verify_server: Option<String>,
    /// The psql that restored it.
    pub psql: Option<String>,
}

/// One table's count.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TableEvidence {
    /// Table name as pg_dump printed it.
    pub table: String,
    /// Rows in the dump.
    pub manifest_rows: u64,
    /// Rows after the restore (`None`: not counted).
    pub restored_rows: Option<u64>,
}

/// What amcheck did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct IndexEvidence {
    /// `off`, `indexes` or `heap` (`VERIFY_AMCHECK`).
    pub mode: String,
    /// Why no index was checked at all, when none was (e.g. the role may not create amcheck).
    pub not_run: Option<String>,
    /// Indexes checked.
    pub checked: Vec<String>,
    /// Indexes skipped by rule, with the rule.
    pub skipped: Vec<SkippedIndex>,
}

/// An index amcheck does not apply to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SkippedIndex {
    /// Index name.
    pub index: String,
    /// Why it was not checked.
    pub reason: String,
}

/// One of the operator's checks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UserCheckEvidence {
    /// The statement (shortened).
    pub query: String,
    /// The first value it returned, as text (`None`: NULL, no row, or an error).
    pub value: Option<String>,
    /// Whether it passed.
    pub passed: bool,
}

/// The stored record of a failed backup attempt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FailureRecord {
    /// When the attempt started.
    pub at: DateTime<Utc>,
    /// The cause in plain words.
    pub error: String,
    /// Whether it looked transient.
    pub retryable: bool,
}

/// Stores a verification record.
///
/// # Errors
/// Storage errors.
pub async fn write_verification(
    storage: &dyn Storage,
    layout: &Layout,
    id: BackupId,
    rec: &VerificationRecord,
    cancel: &CancellationToken,
) -> Result<(), StorageError> {
    let json = serde_json::to_vec_pretty(rec).map_err(|e| StorageError::other(e.to_string(), false))?;
    put_bytes(storage, &layout.verification(rec.verified_at, id, rec.passed), json.into(), cancel).await
}

/// Reads one verification record by its key (from [`super::catalog::Catalog::verifications`]).
///
/// # Errors
/// Storage errors or unreadable JSON.
pub async fn read_verification(storage: &dyn Storage, key: &str, cancel: &CancellationToken) -> Result<VerificationRecord, StorageError> {
    let key = Key::new(key).map_err(|e| StorageError::other(e, false))?;
    let bytes = get_bytes(storage, &key, MAX_RECORD, cancel).await?;
    serde_json::from_slice(&bytes).map_err(|e| StorageError::other(format!("verification record unreadable: {e}"), false))
}

/// Stores a failure record.
///
/// # Errors
/// Storage errors.
pub async fn write_failure(
    storage: &dyn Storage,
    layout: &Layout,
    rec: &FailureRecord,
    cancel: &CancellationToken,
) -> Result<(), StorageError> {
    let json = serde_json::to_vec_pretty(rec).map_err(|e| StorageError::other(e.to_string(), false))?;
    put_bytes(storage, &layout.failure(rec.at), json.into(), cancel).await
}

/// Reads one failure record by its key (from [`Catalog::failures`]).
///
/// # Errors
/// Storage errors or unreadable JSON.
pub async fn read_failure(storage: &dyn Storage, key: &str, cancel: &CancellationToken) -> Result<FailureRecord, StorageError> {
    let key = Key::new(key).map_err(|e| StorageError::other(e, false))?;
    let bytes = get_bytes(storage, &key, MAX_RECORD, cancel).await?;
    serde_json::from_slice(&bytes).map_err(|e| StorageError::other(format!("failure record unreadable: {e}"), false))
}

/// How long the restores (with their checks) of the newest `n` verifications that passed took, in
/// seconds (see [`recent_restore_secs`]).
pub async fn recent_passed_restore_secs(
    storage: &dyn Storage,
    catalog: &super::catalog::Catalog,
    n: usize,
    cancel: &CancellationToken,
) -> Vec<f64> {
    let keys: Vec<String> = catalog
        .verifications
        .iter()
        .filter(|v| v.passed == Some(true))
        .map(|v| v.key.clone())
        .collect();
    recent_restore_secs(storage, &keys, n, cancel).await
}

/// How long the restores (with their checks) of the newest `n` verification records took, in
/// seconds: what a restore's deadline is derived from. Unreadable records are skipped.
pub async fn recent_restore_secs(storage: &dyn Storage, keys: &[String], n: usize, cancel: &CancellationToken) -> Vec<f64> {
    let mut out = Vec::new();
    for key in keys.iter().rev().take(n) {
        if let Ok(rec) = read_verification(storage, key, cancel).await {
            out.push(rec.restore_secs + rec.checks_secs);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::PrivilegesRestored as P;

    #[test]
    fn causes_read_by_name_and_unknown_ones_do_not_spoil_the_record() {
        let read: Vec<super::Cause> =
            serde_json::from_value(serde_json::json!(["row_count", "deadline", "from_the_future"])).expect("reads");
        assert_eq!(read, [super::Cause::RowCount, super::Cause::Deadline, super::Cause::Unknown]);
        assert_eq!(
            serde_json::to_value(super::Cause::UserCheck).expect("serialises"),
            serde_json::json!("user_check")
        );
        use super::Cause::*;
        for c in [Manifest, Untrusted, Restore, RowCount, Check, UserCheck, Privileges, Deadline] {
            assert_eq!(serde_json::to_value(c).expect("serialises"), serde_json::json!(c.name()), "{c:?}");
        }
    }

    #[test]
    fn a_record_with_causes_of_any_shape_still_reads() {
        use super::Cause::*;
        let record = |causes: serde_json::Value| {
            serde_json::json!({
                "key": "p/backup.sql.gz", "verified_at": "2026-01-01T00:00:00Z", "passed": false,
                "reasons": ["bad"], "causes": causes, "restore_secs": 1.0, "checks_secs": 1.0,
                "total_secs": 2.0, "restored_bytes": null, "tables_checked": 0,
            })
        };
        for (causes, want) in [
            (serde_json::json!(null), vec![]),
            (serde_json::json!(5), vec![]),
            (serde_json::json!("row_count"), vec![]),
            (serde_json::json!({"a": 1}), vec![]),
            (
                serde_json::json!([1, {}, true, "row_count", "nonsense"]),
                vec![Unknown, Unknown, Unknown, RowCount, Unknown],
            ),
        ] {
            let r: super::VerificationRecord = serde_json::from_value(record(causes.clone())).unwrap_or_else(|e| panic!("{causes}: {e}"));
            assert_eq!(r.causes, want, "{causes}");
            // Read from the bytes, as from storage, the same.
            let bytes = serde_json::to_vec(&record(causes.clone())).expect("serialises");
            let r: super::VerificationRecord = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{causes}: {e}"));
            assert_eq!(r.causes, want, "{causes}");
        }
        // A list of a million items, or one item of a million, keeps a few and holds none of the rest.
        let many = format!("[\"deadline\",{}0]", "0,".repeat(1_000_000));
        let nested = format!("[[{}0],\"check\"]", "0,".repeat(1_000_000));
        for (causes, want) in [(many, vec![Deadline; 1]), (nested, vec![Unknown, Check])] {
            let text = serde_json::to_string(&record(serde_json::json!(null)))
                .expect("serialises")
                .replace("\"causes\":null", &format!("\"causes\":{causes}"));
            let r: super::VerificationRecord = serde_json::from_str(&text).expect("reads");
            assert!(r.causes.len() <= super::super::lenient::MAX_ITEMS);
            assert_eq!(r.causes[..want.len()], want[..]);
        }
    }

    #[test]
    fn privileges_restored_reads_and_writes_the_words_records_always_held() {
        for (words, value) in [
            ("table owners and table-level grants restored and checked", P::OwnersAndGrants),
            ("table-level grants restored and checked", P::Grants),
            ("left out", P::LeftOut),
            ("not in the backup (taken without owners and grants)", P::NotInBackup),
            ("something a newer version writes", P::Unknown),
            ("<script>", P::Unknown),
        ] {
            let read: P = serde_json::from_value(serde_json::json!(words)).expect("any words read");
            assert_eq!(read, value, "{words}");
            if value != P::Unknown {
                assert_eq!(serde_json::to_value(value).expect("serialises"), serde_json::json!(words));
                assert_eq!(value.to_string(), words);
            }
        }
    }
}
