//! The integrity rule: what a streamed object must agree with before its restore may commit —
//! the manifest's size and SHA-256, every gzip member's CRC and length, and pg_dump's closing line.

use crate::pipeline::stages::dumpscan::ScanResult;
use crate::records::manifest::Manifest;

/// What streaming an object found.
#[derive(Debug, Clone, Default)]
pub struct StreamReport {
    /// SHA-256 of the bytes downloaded.
    pub sha256: String,
    /// Bytes downloaded.
    pub size: u64,
    /// The gzip layer's error (bad CRC or length, corrupt data, early end), if any.
    pub gzip_error: Option<String>,
    /// An encrypted object that no identity held opened (why); nothing was decrypted.
    pub key_error: Option<String>,
    /// What the SQL contained.
    pub scan: ScanResult,
}

/// For an object no identity opened: whether it is nevertheless exactly what the backup wrote
/// (then the key file is at fault — `Some(why)`), or damaged (`None`: its problems say so).
pub fn key_fault(m: Option<&Manifest>, r: &StreamReport) -> Option<String> {
    let why = r.key_error.as_ref()?;
    let intact = m.is_some_and(|m| m.size == r.size && m.sha256 == r.sha256);
    intact.then(|| why.clone())
}

/// Compares a stream report with the manifest; every disagreement is one reason. Empty means the
/// object is exactly what the backup wrote and a complete dump.
pub fn integrity_problems(m: Option<&Manifest>, r: &StreamReport) -> Vec<String> {
    if let Some(why) = &r.scan.forbidden {
        // The gate stopped reading there: nothing is known of the rest, and nothing more is needed.
        return vec![format!("{why}; a backup of pg_dump's holds no such thing, so it was not restored")];
    }
    let mut problems = Vec::new();
    match m {
        None => problems.push("the manifest is missing: the backup did not complete or was not written by pgvigil".into()),
        Some(m) => {
            if r.size != m.size {
                problems.push(format!(
                    "object size {} bytes differs from the manifest's {} bytes (truncated or replaced)",
                    r.size, m.size
                ));
            }
            if r.sha256 != m.sha256 {
                problems.push("SHA-256 of the object differs from the manifest (the object is corrupted)".into());
            }
        }
    }
    if let Some(e) = &r.gzip_error {
        problems.push(format!("the gzip stream is damaged: {e}"));
    }
    if let Some(t) = &r.scan.open_copy {
        problems.push(format!("the dump ends inside the data of table {t}"));
    } else if !r.scan.complete {
        problems.push("the dump does not end with pg_dump's closing line (truncated)".into());
    }
    problems
}
