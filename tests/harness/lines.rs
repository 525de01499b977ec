//! The log lines operators and their alerts match on, as the tests wait for them: one place
//! to change them, and a docs test (`docs::every_log_line_the_tests_wait_for_is_documented`)
//! keeps each one documented where users look and written by the code.

/// Declares each line as a constant and lists them all in [`ALL`], so none escapes the docs test.
macro_rules! lines {
    ($($(#[$doc:meta])* $name:ident = $text:literal;)*) => {
        $($(#[$doc])* pub const $name: &str = $text;)*
        /// Every line above.
        pub const ALL: &[&str] = &[$($name),*];
    };
}

lines! {
    /// A backup was published.
    BACKUP_COMPLETED = "Backup completed successfully";
    /// A backup run failed.
    BACKUP_FAILED = "Backup failed";
    /// The backup service is up.
    BACKUP_STARTED = "Backup service started";
    /// The verify service is up.
    VERIFY_STARTED = "Verify service started";
    /// The backup service waits (`Next backup in <N>s`).
    NEXT_BACKUP = "Next backup in";
    /// The verify service waits (`Next verification in <N>s`).
    NEXT_VERIFICATION = "Next verification in";
    /// A backup passed verification.
    VERIFY_PASSED = "Restore verification completed successfully";
    /// A backup failed verification: the backup is bad.
    VERIFY_FAILED = "Restore verification failed";
    /// A verification could not run: the environment is broken.
    VERIFY_COULD_NOT_RUN = "Verification could not run";
    /// The verification's timing line.
    VERIFY_FINISHED = "Verification finished in";
    /// Storage failed its self-test at start-up; the service retries.
    STORAGE_NOT_USABLE = "Storage is not usable yet";
    /// A table lost most of its rows between two backups.
    TABLE_ANOMALY = "Table anomaly";
    /// The presence check found a kept backup gone or changed.
    BACKUPS_MISSING = "Backups missing from storage";
    /// Objects named with a time ahead of the clock.
    FUTURE_DATED = "Future-dated backup";
    /// The running dump gave way to sessions waiting on its locks.
    BACKUP_GIVES_WAY = "Backup gives way";
    /// Another backup service holds the lease of this prefix.
    BACKUP_SKIPPED = "Backup skipped";
    /// The health endpoint is up.
    HEALTH_LISTENING = "health endpoint listening";
}
