//! Several databases under one prefix (`BACKUP_DATABASES`): each database's backups and records
//! live under `BACKUP_PREFIX/<name>` exactly as a single database's live under `BACKUP_PREFIX`,
//! so everything else — schedule, lease, retention, verification, the CLI — works per database
//! unchanged. Names become one key segment: letters, digits, `_` and `-` as they are, every other
//! byte of the UTF-8 name as `%XX`.

use crate::infra::config::Settings;
use crate::infra::storage::{Storage, StorageError};
use std::collections::BTreeSet;
use tokio_util::sync::CancellationToken;

/// The key segment for a database name.
pub fn segment(database: &str) -> String {
    let mut out = String::new();
    for b in database.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The database name a key segment stands for.
pub fn name(segment: &str) -> Option<String> {
    let mut bytes = Vec::new();
    let mut it = segment.bytes();
    while let Some(b) = it.next() {
        if b == b'%' {
            let hi = (it.next()? as char).to_digit(16)?;
            let lo = (it.next()? as char).to_digit(16)?;
            bytes.push((hi * 16 + lo) as u8);
        } else {
            bytes.push(b);
        }
    }
    String::from_utf8(bytes).ok()
}

/// The settings for one database of a service that covers several: its prefix, and the source
/// URL pointing at it.
///
/// # Errors
/// A name no URL can carry (`.`, `..`).
pub fn settings_for(settings: &Settings, database: &str) -> Result<Settings, String> {
    let mut s = settings.clone();
    s.storage.prefix = format!("{}/{}", settings.storage.prefix, segment(database));
    if let Some(secondary) = &mut s.secondary {
        secondary.prefix.clone_from(&s.storage.prefix);
    }
    s.database_url = settings.database_url.as_ref().map(|u| u.with_database(database)).transpose()?;
    s.databases = crate::infra::config::Databases::One;
    Ok(s)
}

/// The databases with backups under the configured prefix, listed in the primary destination or,
/// when it cannot be listed because of an outage and a second destination is configured, in the
/// secondary.
///
/// # Errors
/// Storage errors (the primary's, when the secondary cannot be listed either).
pub async fn with_backups_in(settings: &Settings, cancel: &CancellationToken) -> Result<Vec<String>, StorageError> {
    let st = crate::infra::storage::connect(&settings.storage).await?;
    match with_backups(st.as_ref(), &settings.storage.prefix, cancel).await {
        Err(e) if e.is_retryable() => {
            let Some(cfg) = &settings.secondary else { return Err(e) };
            let other = crate::infra::storage::connect(cfg).await?;
            with_backups(other.as_ref(), &cfg.prefix, cancel).await.map_err(|_| e)
        }
        other => other,
    }
}

/// The databases that have backups under `prefix` (one level below it).
///
/// # Errors
/// Storage errors.
pub async fn with_backups(storage: &dyn Storage, prefix: &str, cancel: &CancellationToken) -> Result<Vec<String>, StorageError> {
    let root = format!("{prefix}/");
    let mut found = BTreeSet::new();
    for o in storage.list(&root, cancel).await? {
        let Some(rest) = o.key.as_str().strip_prefix(&root) else { continue };
        let Some((seg, file)) = rest.split_once('/') else { continue };
        // Only names pgvigil itself would have written (not another deployment's prefix).
        let canonical = name(seg).filter(|n| segment(n) == seg);
        if super::keys::BackupId::parse_file_name(file).is_some() {
            found.extend(canonical);
        }
    }
    Ok(found.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_one_key_segment() {
        for (db, seg) in [
            ("app", "app"),
            ("billing_2024", "billing_2024"),
            ("My DB", "My%20DB"),
            ("a/b", "a%2Fb"),
            ("..", "%2E%2E"),
            ("café", "caf%C3%A9"),
        ] {
            assert_eq!(segment(db), seg);
            assert_eq!(name(seg).as_deref(), Some(db));
        }
        assert_eq!(name("bad%2"), None);
    }
}
