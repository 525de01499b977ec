//! Object naming: validated keys, backup names with sortable UTC timestamps, and where pgvigil's
//! own metadata lives (outside the backup prefix, so a listing of the prefix shows only backups).

use crate::infra::storage::Key;
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use std::fmt;

/// Checks a `BACKUP_PREFIX` value (already trimmed of slashes).
///
/// # Errors
/// What is wrong with the prefix.
pub fn validate_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Err("expected a non-empty key prefix such as \"backups\" or \"prod/main\"".into());
    }
    if prefix == META_ROOT || prefix.starts_with(&format!("{META_ROOT}/")) {
        return Err(format!("\"{META_ROOT}\" is reserved for pgvigil's metadata"));
    }
    Key::new(prefix)
        .map(|_| ())
        .map_err(|e| format!("expected a key prefix such as \"prod/main\": {e}"))
}

/// Root of pgvigil's metadata area in the bucket.
pub const META_ROOT: &str = "_pgvigil";
/// File name of the copy of the newest successful backup.
pub const LATEST: &str = "backup_latest.sql.gz";
/// What an encrypted (age) object's name ends with, after `.sql.gz`.
pub const SEALED: &str = ".age";
const TS_FORMAT: &str = "%Y-%m-%dT%H-%M-%SZ";

/// A backup's identity: its UTC timestamp, which gives both its name and its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackupId(pub DateTime<Utc>);

impl BackupId {
    /// The identity for a backup started at `t` (sub-second precision dropped).
    pub fn at(t: DateTime<Utc>) -> Self {
        Self(Utc.timestamp_opt(t.timestamp(), 0).single().unwrap_or(t))
    }

    /// `backup_2026-11-25T17-39-35Z.sql.gz`
    pub fn file_name(&self) -> String {
        format!("backup_{}.sql.gz", self.stamp())
    }

    /// `2026-11-25T17-39-35Z`
    pub fn stamp(&self) -> String {
        self.0.format(TS_FORMAT).to_string()
    }

    /// Parses a file name produced by [`BackupId::file_name`], or its encrypted form
    /// (`….sql.gz.age`); anything else (including `backup_latest.sql.gz` and foreign objects)
    /// is `None`.
    pub fn parse_file_name(name: &str) -> Option<Self> {
        let name = name.strip_suffix(SEALED).unwrap_or(name);
        let stamp = name.strip_prefix("backup_")?.strip_suffix(".sql.gz")?;
        Self::parse_stamp(stamp)
    }

    /// Parses `2026-11-25T17-39-35Z`: a year of four digits only (a name in the bucket may carry
    /// any year chrono can hold, and the calendar arithmetic on years near its limits fails).
    pub fn parse_stamp(stamp: &str) -> Option<Self> {
        if !stamp.as_bytes().first().is_some_and(u8::is_ascii_digit) || stamp.find('-') != Some(4) {
            return None;
        }
        let t = NaiveDateTime::parse_from_str(stamp, TS_FORMAT).ok()?;
        let id = Self(Utc.from_utc_datetime(&t));
        (id.stamp() == stamp).then_some(id)
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file_name())
    }
}

/// All key names under one `BACKUP_PREFIX`.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `BACKUP_PREFIX` without slashes.
    prefix: String,
}

impl Layout {
    /// Layout for a validated prefix.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_matches('/').to_string(),
        }
    }

    /// The backup prefix with a trailing slash, for listings.
    pub fn backups_prefix(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// The backup prefix as configured.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(s: String) -> Key {
        Key::new(s).expect("layout keys are built from a validated prefix")
    }

    /// Object key of a backup (not encrypted). Readers take the key from the catalog or the
    /// manifest: a backup may also be encrypted ([`Layout::object`]).
    pub fn backup(&self, id: BackupId) -> Key {
        self.object(id, false)
    }

    /// Object key of a backup, encrypted (`….sql.gz.age`) or not.
    pub fn object(&self, id: BackupId, sealed: bool) -> Key {
        Self::key(format!("{}/{}{}", self.prefix, id.file_name(), if sealed { SEALED } else { "" }))
    }

    /// Both keys a backup's object may have (for deleting it whatever its form).
    pub fn objects(&self, id: BackupId) -> [Key; 2] {
        [self.object(id, false), self.object(id, true)]
    }

    /// Object key of `backup_latest.sql.gz` (`backup_latest.sql.gz.age` when encrypted).
    pub fn latest_of(&self, sealed: bool) -> Key {
        Self::key(format!("{}/{LATEST}{}", self.prefix, if sealed { SEALED } else { "" }))
    }

    /// Object key of `backup_latest.sql.gz`.
    pub fn latest(&self) -> Key {
        self.latest_of(false)
    }

    /// If `key` is a backup under this prefix (directly, not in a sub-folder), its id.
    pub fn parse_backup(&self, key: &str) -> Option<BackupId> {
        let name = key.strip_prefix(&self.backups_prefix())?;
        if name.contains('/') {
            return None;
        }
        BackupId::parse_file_name(name)
    }

    fn meta(&self, rest: &str) -> String {
        format!("{META_ROOT}/{}/{rest}", self.prefix)
    }

    /// Prefix of all manifests.
    pub fn manifests_prefix(&self) -> String {
        self.meta("manifests/")
    }

    /// Manifest of one backup; its presence marks the backup complete.
    pub fn manifest(&self, id: BackupId) -> Key {
        Self::key(self.meta(&format!("manifests/{}.json", id.stamp())))
    }

    /// The minisign signature of a backup's manifest (`BACKUP_SIGNING_KEY_FILE`).
    pub fn manifest_signature(&self, id: BackupId) -> Key {
        Self::key(self.meta(&format!("manifests/{}.json.minisig", id.stamp())))
    }

    /// Parses a manifest signature's key back into its backup id.
    pub fn parse_manifest_signature(&self, key: &str) -> Option<BackupId> {
        let stamp = key.strip_prefix(&self.manifests_prefix())?.strip_suffix(".json.minisig")?;
        BackupId::parse_stamp(stamp)
    }

    /// Parses a manifest key back into its backup id.
    pub fn parse_manifest(&self, key: &str) -> Option<BackupId> {
        let stamp = key.strip_prefix(&self.manifests_prefix())?.strip_suffix(".json")?;
        BackupId::parse_stamp(stamp)
    }

    /// Prefix of the holds on backups (kept until acknowledged).
    pub fn holds_prefix(&self) -> String {
        self.meta("holds/")
    }

    /// The hold on one backup.
    pub fn hold(&self, id: BackupId) -> Key {
        Self::key(self.meta(&format!("holds/{}.json", id.stamp())))
    }

    /// Parses a hold key back into its backup id.
    pub fn parse_hold(&self, key: &str) -> Option<BackupId> {
        let stamp = key.strip_prefix(&self.holds_prefix())?.strip_suffix(".json")?;
        BackupId::parse_stamp(stamp)
    }

    /// Prefix of the backups `destination` (`primary` or `secondary`) is owed: it missed them,
    /// and catch-up copies them there. The records are kept in the other destination.
    pub fn owed_prefix(&self, destination: &str) -> String {
        self.meta(&format!("owed/{destination}/"))
    }

    /// The record that `destination` is owed backup `id`.
    pub fn owed(&self, destination: &str, id: BackupId) -> Key {
        Self::key(self.meta(&format!("owed/{destination}/{}", id.stamp())))
    }

    /// Parses an owed record's key back into its backup id.
    pub fn parse_owed(&self, destination: &str, key: &str) -> Option<BackupId> {
        BackupId::parse_stamp(key.strip_prefix(&self.owed_prefix(destination))?)
    }

    /// Prefix of the roles saved with the backups.
    pub fn globals_prefix(&self) -> String {
        self.meta("globals/")
    }

    /// Parses a saved-roles key back into its backup id.
    pub fn parse_globals(&self, key: &str) -> Option<BackupId> {
        let stamp = key.strip_prefix(&self.globals_prefix())?.strip_suffix(".sql")?;
        BackupId::parse_stamp(stamp)
    }

    /// The roles saved with one backup (`pg_dumpall --globals-only`), plain SQL.
    pub fn globals(&self, id: BackupId) -> Key {
        Self::key(self.meta(&format!("globals/{}.sql", id.stamp())))
    }

    /// Prefix of verification results.
    pub fn verifications_prefix(&self) -> String {
        self.meta("verifications/")
    }

    /// One verification result: `<verified at>__<backup stamp>__passed.json` (or `__failed`), so
    /// that a listing tells every verdict without reading the records.
    pub fn verification(&self, at: DateTime<Utc>, id: BackupId, passed: bool) -> Key {
        let verdict = if passed { "passed" } else { "failed" };
        Self::key(self.meta(&format!(
            "verifications/{}__{}__{verdict}.json",
            BackupId::at(at).stamp(),
            id.stamp()
        )))
    }

    /// Parses a verification key into (verified at, backup id, verdict). Records written before
    /// the verdict was part of the name (`<at>__<backup>.json`) have no verdict here.
    pub fn parse_verification(&self, key: &str) -> Option<(BackupId, BackupId, Option<bool>)> {
        let rest = key.strip_prefix(&self.verifications_prefix())?.strip_suffix(".json")?;
        let mut parts = rest.split("__");
        let at = BackupId::parse_stamp(parts.next()?)?;
        let id = BackupId::parse_stamp(parts.next()?)?;
        let verdict = match parts.next() {
            None => None,
            Some("passed") => Some(true),
            Some("failed") => Some(false),
            Some(_) => return None,
        };
        parts.next().is_none().then_some((at, id, verdict))
    }

    /// The lease that keeps two backup services on one prefix from running at once.
    pub fn lease(&self) -> Key {
        Self::key(self.meta("lease.json"))
    }

    /// The record of the effective settings a service (`backup` or `verify`) runs with.
    pub fn policy(&self, service: &str) -> Key {
        Self::key(self.meta(&format!("policy/{service}.json")))
    }

    /// Prefix of backup failure records.
    pub fn failures_prefix(&self) -> String {
        self.meta("failures/")
    }

    /// One failure record, named by the time the failed attempt started (with nanoseconds, so
    /// that several failures within one second keep separate records).
    pub fn failure(&self, at: DateTime<Utc>) -> Key {
        Self::key(self.meta(&format!(
            "failures/{}_{:09}.json",
            BackupId::at(at).stamp(),
            at.timestamp_subsec_nanos()
        )))
    }

    /// Parses a failure key into the time of the attempt (to the second).
    pub fn parse_failure(&self, key: &str) -> Option<BackupId> {
        let rest = key.strip_prefix(&self.failures_prefix())?.strip_suffix(".json")?;
        BackupId::parse_stamp(rest.split_once('_').map_or(rest, |(stamp, _)| stamp))
    }

    /// Key of a small probe object (storage self-test, clock and conditional-write checks), new
    /// for every call: two services starting together must not read each other's probe.
    pub fn probe(&self) -> Key {
        Self::key(self.meta(&format!("probe/{:016x}.bin", rand::random::<u64>())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_names_round_trip_and_sort_in_time_order() {
        let a = BackupId::at(Utc.with_ymd_and_hms(2026, 11, 25, 17, 39, 35).unwrap());
        let b = BackupId::at(Utc.with_ymd_and_hms(2026, 11, 25, 17, 40, 1).unwrap());
        assert_eq!(a.file_name(), "backup_2026-11-25T17-39-35Z.sql.gz");
        assert_eq!(BackupId::parse_file_name(&a.file_name()), Some(a));
        assert!(a.file_name() < b.file_name());
    }

    #[test]
    fn only_our_own_names_parse() {
        let l = Layout::new("prod/main");
        let cases = [
            ("prod/main/backup_2026-11-25T17-39-35Z.sql.gz", true),
            ("prod/main/backup_latest.sql.gz", false),
            ("prod/main/backup_latest.sql.gz.age", false),
            ("prod/main/backup_2026-11-25T17-39-35Z.sql.gz.age", true),
            ("prod/main/backup_2026-11-25T17-39-35Z.sql.age", false),
            ("prod/main/backup_2026-11-25T17-39-35Z.sql.gz.bak", false),
            ("prod/main/backup_2026-13-25T17-39-35Z.sql.gz", false),
            ("prod/main/sub/backup_2026-11-25T17-39-35Z.sql.gz", false),
            ("prod/mainx/backup_2026-11-25T17-39-35Z.sql.gz", false),
            ("prod/main/notes.txt", false),
            ("prod/main/backup_2026-11-25T17-39-35.sql.gz", false),
            ("prod/main/backup_-262143-01-01T00-00-00Z.sql.gz", false),
            ("prod/main/backup_+262142-12-31T23-59-59Z.sql.gz", false),
            ("prod/main/backup_12026-11-25T17-39-35Z.sql.gz", false),
            ("prod/main/backup_0001-01-01T00-00-00Z.sql.gz", true),
            ("prod/main/backup_9999-12-31T23-59-59Z.sql.gz", true),
        ];
        for (key, ok) in cases {
            assert_eq!(l.parse_backup(key).is_some(), ok, "{key}");
        }
    }

    #[test]
    fn metadata_lives_outside_the_backup_prefix() {
        let l = Layout::new("backups");
        let id = BackupId::at(Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap());
        let m = l.manifest(id);
        assert!(!m.as_str().starts_with(&l.backups_prefix()));
        assert_eq!(l.parse_manifest(m.as_str()), Some(id));
        for passed in [true, false] {
            let v = l.verification(id.0, id, passed);
            assert_eq!(l.parse_verification(v.as_str()), Some((id, id, Some(passed))));
        }
        let old = format!("{}{}__{}.json", l.verifications_prefix(), id.stamp(), id.stamp());
        assert_eq!(l.parse_verification(&old), Some((id, id, None)));
        assert_eq!(l.parse_verification(&old.replace(".json", "__maybe.json")), None);
        assert_eq!(l.parse_failure(l.failure(id.0).as_str()), Some(id));
    }

    #[test]
    fn prefixes_are_validated() {
        assert!(validate_prefix("_pgvigil").is_err());
        assert!(validate_prefix("prod/main").is_ok());
    }
}
