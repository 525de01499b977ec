//! Presence: are the backups retention keeps still in storage, as their manifests describe them?
//! A lifecycle rule, someone's clean-up script or a replication gap can remove or replace an
//! object behind pgvigil's back; this finds it from the listing (one LIST) and each kept backup's
//! manifest (one small GET each), without downloading any backup.
//!
//! A backup retention would delete anyway is not judged (so a prune in progress, which deletes
//! objects before their manifests, raises nothing).

use super::prune::candidates;
use crate::infra::signing::TrustedKeys;
use crate::infra::storage::{Storage, StorageError};
use crate::policy::retention::{self, RetentionPolicy};
use crate::records::catalog::{BackupEntry, Catalog};
use crate::records::keys::{BackupId, Layout};
use crate::records::manifest;
use chrono::Utc;
use tokio_util::sync::CancellationToken;

/// A kept backup that is not in storage as its manifest says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Absent {
    /// The backup.
    pub id: BackupId,
    /// What is wrong, in plain words.
    pub problem: String,
}

/// One kept backup, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// The backup.
    pub id: BackupId,
    /// The object key (as listed, or as its manifest names it when it is gone).
    pub key: String,
    /// `None` when the object is listed with the size its manifest records.
    pub problem: Option<String>,
}

/// Checks every backup that retention keeps under `policy`: its object must be listed, with the
/// size its manifest records. Backups whose manifest cannot be read are left to verification and
/// `check`, which say why. A backup is called gone only when neither of its object names answers
/// a HEAD (the listing may have been taken while it was being written).
///
/// # Errors
/// Storage errors (listing, or reading a manifest fails for a reason other than its absence).
pub async fn check_presence(
    storage: &dyn Storage,
    layout: &Layout,
    policy: RetentionPolicy,
    cancel: &CancellationToken,
) -> Result<Vec<Presence>, StorageError> {
    let catalog = Catalog::load(storage, layout, cancel).await?;
    // Lost backups included: if a rule keeps one, its object should be there.
    let (mut all, lost) = candidates(storage, layout, &catalog, None, cancel).await?;
    all.extend(lost);
    let plan = retention::plan(&all, policy, Utc::now());
    let mut out = Vec::new();
    for (id, _) in &plan.rules {
        // Both forms of one backup may be listed (encryption turned on or off): judge the one
        // its manifest names.
        let forms: Vec<&BackupEntry> = catalog.backups.iter().filter(|b| b.id == *id).collect();
        if !forms.is_empty() && forms.iter().all(|b| !b.complete) {
            continue; // no manifest: an incomplete backup, nothing promised
        }
        // Size only: whether a trusted service made the manifest is verification's question.
        let m = match manifest::read_checked(storage, layout, *id, &TrustedKeys::default(), cancel).await? {
            manifest::Checked::Found(m, _) => m,
            manifest::Checked::Missing | manifest::Checked::Unreadable(_) => continue,
        };
        // The manifest is untrusted text: messages name the backup by its id, never by what the
        // manifest says.
        let name = id.file_name();
        let listed = forms.iter().find(|b| b.key == m.key).or(forms.first());
        let problem = match listed {
            None => {
                let mut found = false;
                for key in layout.objects(*id) {
                    found |= storage.head(&key, cancel).await?.is_some();
                }
                (!found).then(|| format!("{name} is gone from storage; its manifest remains"))
            }
            Some(b) if b.size != m.size => Some(format!(
                "{name} is {} bytes in storage, but its manifest says {} bytes: it was replaced or cut",
                b.size, m.size
            )),
            Some(_) => None,
        };
        let key = listed.map_or_else(|| layout.backup(*id).to_string(), |b| b.key.clone());
        out.push(Presence { id: *id, key, problem });
    }
    Ok(out)
}

/// The problems among `rows`.
pub fn absent(rows: &[Presence]) -> Vec<Absent> {
    rows.iter()
        .filter_map(|r| r.problem.clone().map(|problem| Absent { id: r.id, problem }))
        .collect()
}

/// The problems in one sentence for a log line or a message: the first ten, then how many more.
pub fn summary(gone: &[Absent]) -> String {
    const SHOWN: usize = 10;
    let mut text = gone.iter().take(SHOWN).map(|a| a.problem.as_str()).collect::<Vec<_>>().join("; ");
    if gone.len() > SHOWN {
        text.push_str(&format!("; and {} more (pgvigil check --presence lists them)", gone.len() - SHOWN));
    }
    text
}
