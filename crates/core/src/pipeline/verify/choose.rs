//! Which backup a verification run takes: the newest complete backup not yet verified, and now
//! and then a random older one — the runbook's drill of a random, not-latest backup.

use crate::records::catalog::Catalog;
use crate::records::keys::BackupId;

/// Which backup to verify this run: the newest complete one not yet verified; with probability
/// `rate` (or when the newest is already verified) a random older complete one instead, like the
/// runbook's weekly drill of a random, not-latest backup. `roll` and `pick` are uniform in [0, 1).
pub fn choose(cat: &Catalog, rate: f64, roll: f64, pick: f64) -> Option<BackupId> {
    let complete: Vec<BackupId> = cat.complete().map(|b| b.id).collect();
    let newest = *complete.first()?;
    let older = &complete[1..];
    let newest_unverified = !cat.is_verified(newest);
    if older.is_empty() {
        return Some(newest);
    }
    if newest_unverified && roll >= rate {
        return Some(newest);
    }
    let i = ((pick * older.len() as f64) as usize).min(older.len() - 1);
    Some(older[i])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::catalog::BackupEntry;
    use chrono::{TimeZone, Utc};

    fn id(h: u32) -> BackupId {
        BackupId::at(Utc.with_ymd_and_hms(2026, 11, 25, h, 0, 0).unwrap())
    }

    fn catalog(ids: &[u32], verified: &[u32]) -> Catalog {
        let mut c = Catalog::default();
        for h in ids.iter().rev() {
            c.backups.push(BackupEntry {
                id: id(*h),
                key: String::new(),
                size: 1,
                complete: true,
            });
        }
        c.verifications = verified.iter().map(|h| (id(23), id(*h))).collect();
        c
    }

    #[test]
    fn choose_prefers_the_newest_unverified_and_sometimes_an_older_one() {
        let cases = [
            (catalog(&[], &[]), 0.2, 0.9, 0.0, None),
            (catalog(&[1], &[]), 0.2, 0.0, 0.0, Some(1)),
            (catalog(&[1, 2, 3], &[]), 0.2, 0.9, 0.0, Some(3)),
            (catalog(&[1, 2, 3], &[]), 0.2, 0.1, 0.0, Some(2)),
            (catalog(&[1, 2, 3], &[]), 0.2, 0.1, 0.99, Some(1)),
            (catalog(&[1, 2, 3], &[3]), 0.0, 0.9, 0.99, Some(1)),
            (catalog(&[1, 2, 3], &[]), 0.0, 0.0, 0.5, Some(3)),
        ];
        for (cat, rate, roll, pick, want) in cases {
            assert_eq!(choose(&cat, rate, roll, pick), want.map(id), "rate {rate} roll {roll} pick {pick}");
        }
    }
}
