//! The part-size rule, in one place: S3 allows 10,000 parts per upload and R2 needs them all the
//! same size, so one part size is chosen per upload, before it starts, from what is known about
//! the size of the stream.

/// Smallest part S3 accepts (except the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Default part size when nothing is known about the size.
pub const DEFAULT_PART_SIZE: u64 = 16 * 1024 * 1024;
/// Largest part S3 accepts.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// S3's limit on parts per upload.
pub const MAX_PARTS: u64 = 10_000;

/// Chooses one part size for a whole upload so that a stream four times the expected size still
/// fits in 9,000 parts, rounded up to whole MiB. A fixed size (`S3_PART_SIZE_MB`) wins.
pub fn choose_part_size(expected: Option<u64>, fixed: Option<u64>) -> u64 {
    choose_part_size_at_least(expected, fixed, 0)
}

/// As [`choose_part_size`], but never below `floor` (raised after an upload outgrew its parts, so
/// that the next attempt does not fail the same way).
pub fn choose_part_size_at_least(expected: Option<u64>, fixed: Option<u64>, floor: u64) -> u64 {
    planned(expected, fixed).max(floor.min(MAX_PART_SIZE))
}

fn planned(expected: Option<u64>, fixed: Option<u64>) -> u64 {
    if let Some(f) = fixed {
        return f.max(MIN_PART_SIZE);
    }
    let needed = expected.map_or(0, |e| e.saturating_mul(4) / 9_000 + 1);
    let mib = 1024 * 1024;
    let size = needed.max(DEFAULT_PART_SIZE).div_ceil(mib) * mib;
    size.min(MAX_PART_SIZE)
}

/// The size a backup upload should be planned for: the larger of the previous backup's size and a
/// quarter of the database's size on disk. [`choose_part_size`] allows four times that, so even a
/// first backup as large as the database on disk fits in S3's 10,000 parts, and a database that
/// grew a lot since the last backup is not held back by the old size.
pub fn expected_backup_size(previous: Option<u64>, database_size: Option<u64>) -> Option<u64> {
    match (previous, database_size.map(|d| d / 4)) {
        (Some(p), Some(d)) => Some(p.max(d)),
        (p, d) => p.or(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_size_keeps_large_dumps_under_the_part_limit() {
        let mib = 1024 * 1024;
        let cases = [
            (None, None, 16 * mib),
            (Some(0), None, 16 * mib),
            (Some(10 * mib), None, 16 * mib),
            (None, Some(8 * mib), 8 * mib),
            (None, Some(mib), 5 * mib),
        ];
        for (expected, fixed, want) in cases {
            assert_eq!(choose_part_size(expected, fixed), want, "{expected:?} {fixed:?}");
        }
        for tb in [1u64, 2, 5] {
            let expected = tb << 40;
            let p = choose_part_size(Some(expected), None);
            assert!(expected * 4 / p < 9_001, "{tb} TiB -> {p}");
            assert_eq!(p % mib, 0);
        }
    }

    #[test]
    fn a_floor_raised_after_too_many_parts_wins() {
        let mib = 1024 * 1024;
        assert_eq!(choose_part_size_at_least(None, None, 64 * mib), 64 * mib);
        assert_eq!(choose_part_size_at_least(None, Some(8 * mib), 64 * mib), 64 * mib);
        assert_eq!(choose_part_size_at_least(None, Some(8 * mib), 0), 8 * mib);
        assert_eq!(choose_part_size_at_least(None, None, u64::MAX), MAX_PART_SIZE);
    }

    #[test]
    fn backups_plan_for_the_larger_of_the_last_backup_and_the_database() {
        let gib = 1u64 << 30;
        let cases = [
            (Some(5 * gib), Some(900 * gib), Some(225 * gib)),   // the database grew: it wins
            (Some(300 * gib), Some(400 * gib), Some(300 * gib)), // the previous backup wins
            (None, Some(800 * gib), Some(200 * gib)),
            (Some(7), None, Some(7)),
            (None, None, None),
        ];
        for (previous, db, want) in cases {
            assert_eq!(expected_backup_size(previous, db), want, "{previous:?} {db:?}");
        }
        // A first backup of a 2 TiB database that compresses badly (object as large as the
        // database) still fits in 10,000 parts; without the estimate it would not.
        let db = 2u64 << 40;
        let part = choose_part_size(expected_backup_size(None, Some(db)), None);
        assert!(db / part < MAX_PARTS, "{part}");
        assert!(db / choose_part_size(None, None) > MAX_PARTS);
    }
}
