//! Which backups a verification run takes: the newest complete backup not yet verified first, and
//! now and then a random older one as well — the runbook's drill of a random, not-latest backup.

use crate::records::catalog::Catalog;
use crate::records::keys::BackupId;

/// The backups one verification run takes, in order. A newest complete backup that nobody has
/// verified always comes first: a drill never delays it. A drill of a random older backup (the
/// runbook's weekly restore of a random, not-latest backup) is an *extra* verification in the same
/// run, taken with probability `rate`, or always when there is nothing new to verify; it prefers
/// backups that were never verified. `roll` and `pick` are uniform in [0, 1).
pub fn choose(cat: &Catalog, rate: f64, roll: f64, pick: f64) -> Vec<BackupId> {
    let complete: Vec<BackupId> = cat.complete().map(|b| b.id).collect();
    let Some((&newest, older)) = complete.split_first() else {
        return Vec::new();
    };
    let mut plan = Vec::new();
    let newest_unverified = !cat.is_verified(newest);
    if newest_unverified {
        plan.push(newest);
    }
    if older.is_empty() {
        if plan.is_empty() {
            // Nothing else to verify: prove the environment still restores the only backup.
            plan.push(newest);
        }
        return plan;
    }
    if roll < rate || !newest_unverified {
        let never: Vec<BackupId> = older.iter().copied().filter(|b| !cat.is_verified(*b)).collect();
        let pool = if never.is_empty() { older } else { &never[..] };
        let i = ((pick * pool.len() as f64) as usize).min(pool.len() - 1);
        plan.push(pool[i]);
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::catalog::{BackupEntry, VerificationRef};
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
        c.verifications = verified
            .iter()
            .map(|h| VerificationRef {
                at: id(23),
                backup: id(*h),
                passed: Some(true),
                key: String::new(),
            })
            .collect();
        c
    }

    #[test]
    fn the_newest_unverified_comes_first_and_a_drill_is_extra() {
        let cases: Vec<(Catalog, f64, f64, f64, Vec<u32>)> = vec![
            (catalog(&[], &[]), 0.2, 0.9, 0.0, vec![]),
            (catalog(&[1], &[]), 0.2, 0.0, 0.0, vec![1]),
            (catalog(&[1], &[1]), 0.2, 0.9, 0.0, vec![1]),
            (catalog(&[1, 2, 3], &[]), 0.2, 0.9, 0.0, vec![3]),
            // A drill this run: the newest still comes first.
            (catalog(&[1, 2, 3], &[]), 0.2, 0.1, 0.0, vec![3, 2]),
            (catalog(&[1, 2, 3], &[]), 0.2, 0.1, 0.99, vec![3, 1]),
            (catalog(&[1, 2, 3], &[]), 1.0, 0.5, 0.5, vec![3, 1]),
            // Nothing new: the run is a drill, preferring never-verified backups.
            (catalog(&[1, 2, 3], &[3]), 0.0, 0.9, 0.99, vec![1]),
            (catalog(&[1, 2, 3], &[3, 1]), 0.0, 0.9, 0.99, vec![2]),
            (catalog(&[1, 2, 3], &[3, 2, 1]), 0.0, 0.9, 0.0, vec![2]),
            (catalog(&[1, 2, 3], &[]), 0.0, 0.0, 0.5, vec![3]),
        ];
        for (cat, rate, roll, pick, want) in cases {
            let want: Vec<BackupId> = want.into_iter().map(id).collect();
            assert_eq!(choose(&cat, rate, roll, pick), want, "rate {rate} roll {roll} pick {pick}");
        }
    }
}
