//! The log lines operators and their alerts match on, as the tests wait for them: one place
//! to change them, and a docs test (`docs::every_log_line_the_tests_wait_for_is_documented`)
//! keeps each one documented where users look.

/// A backup was published.
pub const BACKUP_COMPLETED: &str = "Backup completed successfully";
/// A backup run failed.
pub const BACKUP_FAILED: &str = "Backup failed";
/// The backup service is up.
pub const BACKUP_STARTED: &str = "Backup service started";
/// The backup service waits (`Next backup in <N>s`).
pub const NEXT_BACKUP: &str = "Next backup in";
/// The verify service waits (`Next verification in <N>s`).
pub const NEXT_VERIFICATION: &str = "Next verification in";
/// A backup passed verification.
pub const VERIFY_PASSED: &str = "Restore verification completed successfully";
/// A backup failed verification: the backup is bad.
pub const VERIFY_FAILED: &str = "Restore verification failed";
/// A verification could not run: the environment is broken.
pub const VERIFY_COULD_NOT_RUN: &str = "Verification could not run";
/// The verification's timing line.
pub const VERIFY_FINISHED: &str = "Verification finished in";
/// Storage failed its self-test at start-up; the service retries.
pub const STORAGE_NOT_USABLE: &str = "Storage is not usable yet";
/// A table lost most of its rows between two backups.
pub const TABLE_ANOMALY: &str = "Table anomaly";
/// The presence check found a kept backup gone or changed.
pub const BACKUPS_MISSING: &str = "Backups missing from storage";
/// Objects named with a time ahead of the clock.
pub const FUTURE_DATED: &str = "Future-dated backup";
/// The running dump gave way to sessions waiting on its locks.
pub const BACKUP_GIVES_WAY: &str = "Backup gives way";

/// Every line above.
pub const ALL: &[&str] = &[
    BACKUP_COMPLETED,
    BACKUP_FAILED,
    BACKUP_STARTED,
    NEXT_BACKUP,
    NEXT_VERIFICATION,
    VERIFY_PASSED,
    VERIFY_FAILED,
    VERIFY_COULD_NOT_RUN,
    VERIFY_FINISHED,
    STORAGE_NOT_USABLE,
    TABLE_ANOMALY,
    BACKUPS_MISSING,
    FUTURE_DATED,
    BACKUP_GIVES_WAY,
];
