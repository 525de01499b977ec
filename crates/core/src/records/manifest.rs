//! Per-backup manifest: written after the upload completed; its presence marks a backup complete.

use super::keys::{BackupId, Layout};
use crate::infra::signing::{SigningKey, TrustedKeys, Untrusted};
use crate::infra::storage::{get_bytes, put_bytes_with, PutOptions, Storage, StorageError, MAX_RECORD, MAX_SMALL};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tokio_util::sync::CancellationToken;

/// Everything known about one backup.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Manifest format version.
    pub format: u32,
    /// Object key of the backup.
    pub key: String,
    /// Size of the object in bytes.
    pub size: u64,
    /// SHA-256 of the object, hex.
    pub sha256: String,
    /// Size of the SQL before compression.
    pub uncompressed_size: u64,
    /// When the dump started.
    pub started_at: DateTime<Utc>,
    /// When the upload completed.
    pub finished_at: DateTime<Utc>,
    /// Database name.
    pub database: String,
    /// Server version (`server_version_num` based, e.g. `15.18`).
    pub server_version: String,
    /// pg_dump version used.
    pub pg_dump_version: String,
    /// gzip level.
    pub compression_level: u32,
    /// Multipart part size used (1 part = single request).
    pub parts: u32,
    /// Exact rows per table as dumped.
    pub tables: BTreeMap<String, u64>,
    /// Owners and grants as dumped; absent when the dump left them out (`BACKUP_PRIVILEGES=omit`,
    /// or a backup taken before pgvigil kept them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileges: Option<Privileges>,
    /// The cluster's roles, saved with this backup; absent when they could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub globals: Option<ObjectRef>,
    /// How the object is encrypted; absent when it is not. `size` and `sha256` are those of
    /// the encrypted object, as stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// Object lock (`S3_OBJECT_LOCK_DAYS`): this manifest's lock date, never earlier than the
    /// object's (which counts from the dump's start); retention keeps the backup until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked_until: Option<DateTime<Utc>>,
    /// Where each table's COPY block sits in the compressed stream, in dump order: a run of
    /// whole gzip members, so one table can be fetched with a ranged GET and read by `gunzip`.
    /// Offsets are into the gzip stream: the object itself when it is not encrypted, the
    /// decrypted stream when it is. Empty for backups taken before pgvigil recorded them. A table
    /// loaded through its partition root has one entry per partition, under the root's name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub table_members: Vec<TableMembers>,
    /// The members before the first COPY block: the schema (tables, types, functions, sequences,
    /// defaults), so a one-table restore reads it with a ranged GET. Absent for backups taken
    /// before pgvigil recorded it, and for dumps with no COPY block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_data: Option<MemberRange>,
    /// The members after the last COPY block up to the end of the dump (sequence values, large
    /// objects, then indexes, constraints, triggers, policies and grants). Same offsets and
    /// absence as [`Manifest::before_data`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_data: Option<MemberRange>,
    /// The runs between two COPY blocks (pg_dump writes only comments there), each with its
    /// SHA-256, in order: with them every byte of the object lies in a part whose hash is
    /// recorded, so a restore over several sessions proves the object part by part and reads it
    /// once. Empty for backups taken before pgvigil recorded them, for encrypted ones, and where
    /// no run lies between blocks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub between_data: Vec<MemberRange>,
    /// The dump's table of contents (its `-- Name: …; Type: …; Schema: …` headers) for the kinds
    /// of object a restore must recreate: after a restore every one must exist, or the restore
    /// is partial. Empty for backups taken before pgvigil recorded it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub toc: Vec<TocEntry>,
}

/// One object of the dump's table of contents, named as pg_dump named it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct TocEntry {
    /// pg_dump's type: `TABLE`, `INDEX`, `CONSTRAINT`, `FK CONSTRAINT`, `SEQUENCE`, `VIEW`,
    /// `MATERIALIZED VIEW`, `FUNCTION`, `PROCEDURE`, `TRIGGER`, `POLICY`, `FOREIGN TABLE`.
    pub kind: String,
    /// Its schema.
    pub schema: String,
    /// Its name; `table name` for constraints, triggers and policies; `name(argument types)`
    /// for functions and procedures.
    pub name: String,
}

/// One table's COPY block (its `COPY … FROM stdin;` line, its rows and the closing `\.`) as
/// whole gzip members of the backup.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TableMembers {
    /// The table as pg_dump printed it (as in [`Manifest::tables`]).
    pub table: String,
    /// Offset of its first member in the gzip stream.
    pub offset: u64,
    /// Bytes from that offset to the end of its last member.
    pub length: u64,
    /// Rows in the block.
    pub rows: u64,
    /// SHA-256 (hex) of the range's bytes in the gzip stream, so a ranged read is proven intact
    /// without reading the whole object; absent for backups taken before pgvigil recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// A run of whole gzip members of a backup, and what proves it intact.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberRange {
    /// Offset of its first member in the gzip stream (as [`TableMembers::offset`]).
    pub offset: u64,
    /// Bytes from that offset to the end of its last member.
    pub length: u64,
    /// SHA-256 (hex) of those bytes.
    pub sha256: String,
}

/// Client-side encryption of a backup object.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Encryption {
    /// `age`.
    pub scheme: String,
    /// The public keys (`age1…`) it was encrypted to: any of their identities opens it.
    pub recipients: Vec<String>,
}

/// Who owns each table and who holds table-level grants on it, as the dump says (names as
/// pg_dump wrote them).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Privileges {
    /// Owner of each table.
    pub owners: BTreeMap<String, String>,
    /// Grantees (`PUBLIC` or roles) of each table.
    pub grants: BTreeMap<String, Vec<String>>,
    /// Every role the dump names (owners, grantees, `FOR ROLE`, policies), unquoted: the roles a
    /// restore needs.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Another object that belongs to a backup, with what proves it intact.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ObjectRef {
    /// Its key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
}

/// Current manifest format.
pub const FORMAT: u32 = 1;

impl Manifest {
    /// Duration of the backup in seconds.
    pub fn duration_secs(&self) -> f64 {
        (self.finished_at - self.started_at).num_milliseconds() as f64 / 1000.0
    }
}

/// The trusted comment of a manifest's signature: it names the backup the manifest is for.
pub fn signed_for(object_key: &str) -> String {
    format!("pgvigil manifest for {object_key}")
}

/// Stores a manifest, signed with `signer` when there is one (the signature is written first:
/// the manifest's presence marks the backup complete, and a complete backup is never unsigned).
///
/// # Errors
/// Storage errors, or a signature that could not be made.
pub async fn write(
    storage: &dyn Storage,
    layout: &Layout,
    id: BackupId,
    m: &Manifest,
    signer: Option<&SigningKey>,
    cancel: &CancellationToken,
) -> Result<(), StorageError> {
    let json = serde_json::to_vec_pretty(m).map_err(|e| StorageError::other(format!("encoding manifest: {e}"), false))?;
    // Locked as long as its backup: a manifest that could be deleted would leave a locked
    // object that nothing calls a backup.
    let opts = PutOptions {
        retain_until: m.locked_until,
        ..PutOptions::default()
    };
    if let Some(key) = signer {
        let signature = key.sign(&json, &signed_for(&m.key)).map_err(|e| StorageError::other(e, false))?;
        put_bytes_with(storage, &layout.manifest_signature(id), signature.into_bytes().into(), opts, cancel).await?;
    }
    put_bytes_with(storage, &layout.manifest(id), json.into(), opts, cancel).await
}

/// Reads a manifest; `Ok(None)` when it does not exist. Its signature is not looked at: use
/// [`read_checked`] where a backup is restored or verified.
///
/// # Errors
/// Storage errors, or a manifest that is not valid JSON.
pub async fn read(
    storage: &dyn Storage,
    layout: &Layout,
    id: BackupId,
    cancel: &CancellationToken,
) -> Result<Option<Manifest>, StorageError> {
    Ok(read_bytes(storage, layout, id, cancel).await?.map(|(m, _)| m))
}

async fn read_bytes(
    storage: &dyn Storage,
    layout: &Layout,
    id: BackupId,
    cancel: &CancellationToken,
) -> Result<Option<(Manifest, Vec<u8>)>, StorageError> {
    match get_bytes(storage, &layout.manifest(id), MAX_RECORD, cancel).await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(|m| Some((m, bytes)))
            .map_err(|e| StorageError::other(format!("manifest of {} is unreadable: {e}", id.file_name()), false)),
        Err(StorageError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether a manifest was made by a trusted backup service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// No trusted keys are set: backups are not authenticated.
    NotChecked,
    /// Signed by the trusted key with this id.
    Signed(String),
    /// Not made by a trusted backup service, and why.
    Untrusted(Untrusted),
}

/// A manifest read where a backup is about to be restored or verified.
#[derive(Debug, Clone)]
pub enum Checked {
    /// There is none: the backup did not complete, or was not written by pgvigil.
    Missing,
    /// There is one, but it cannot be read (not JSON, or larger than any manifest): the backup
    /// is at fault, as for a damaged object.
    Unreadable(String),
    /// The manifest, and whether a trusted backup service made it.
    Found(Box<Manifest>, Trust),
}

/// Reads a manifest and checks it against `trusted`: signed by one of the keys, for this very
/// backup.
///
/// # Errors
/// Storage errors (an outage, a refusal): not a verdict on the backup.
pub async fn read_checked(
    storage: &dyn Storage,
    layout: &Layout,
    id: BackupId,
    trusted: &TrustedKeys,
    cancel: &CancellationToken,
) -> Result<Checked, StorageError> {
    // With trusted keys, a manifest that cannot be read cannot be trusted either: say so.
    let unreadable = |why: String| {
        if trusted.is_set() {
            Checked::Found(Box::default(), Trust::Untrusted(Untrusted::Unreadable))
        } else {
            Checked::Unreadable(why)
        }
    };
    let bytes = match get_bytes(storage, &layout.manifest(id), MAX_RECORD, cancel).await {
        Ok(b) => b,
        Err(StorageError::NotFound(_)) => return Ok(Checked::Missing),
        Err(e @ StorageError::Oversized { .. }) => return Ok(unreadable(format!("the manifest is unreadable: {e}"))),
        Err(e) => return Err(e),
    };
    let m: Manifest = match serde_json::from_slice(&bytes) {
        Ok(m) => m,
        // Where, not what: the text may quote whatever the manifest holds.
        Err(e) => {
            return Ok(unreadable(format!(
                "the manifest is unreadable ({:?} error at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            )))
        }
    };
    if !trusted.is_set() {
        return Ok(Checked::Found(Box::new(m), Trust::NotChecked));
    }
    let signature = match get_bytes(storage, &layout.manifest_signature(id), MAX_SMALL, cancel).await {
        Ok(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        Err(StorageError::NotFound(_)) => None,
        Err(StorageError::Oversized { .. }) => Some(String::new()),
        Err(e) => return Err(e),
    };
    let this_backup = layout.objects(id).iter().any(|k| k.as_str() == m.key);
    let trust = match trusted.verify(&bytes, signature.as_deref(), &signed_for(&m.key)) {
        Ok(_) if !this_backup => Trust::Untrusted(Untrusted::OtherBackup(m.key.chars().take(200).collect())),
        Ok(key) => Trust::Signed(key),
        Err(why) => Trust::Untrusted(why),
    };
    Ok(Checked::Found(Box::new(m), trust))
}
