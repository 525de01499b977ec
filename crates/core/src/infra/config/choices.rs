//! Settings that choose between a few forms: which databases a service covers, whether dumps keep
//! owners and grants, when a table's change is an anomaly, which calendar periods retention keeps.

use super::settings::Databases;
use super::validate::{nonempty, Validator};

impl Validator {
    /// `BACKUP_KEEP_HOURLY` … `BACKUP_KEEP_YEARLY` (each 0 to [`calendar::MAX_COUNT`], 0 or unset:
    /// off) and `BACKUP_TIMEZONE` (an IANA zone name, UTC unless set).
    pub(super) fn calendar(&mut self, counts: [Option<String>; 5], zone: Option<String>) -> crate::policy::calendar::Calendar {
        use crate::policy::calendar::{self, Calendar, Period};
        let mut cal = Calendar::default();
        for (kind, value) in Period::ALL.into_iter().zip(counts) {
            let what = format!(
                "a whole number of {}s to keep, 0 to {} (0 or unset: off)",
                kind.noun(),
                calendar::MAX_COUNT
            );
            let n = self.uint(kind.variable(), value, 0, 0, u64::from(calendar::MAX_COUNT), &what) as u32;
            cal.set(kind, n);
        }
        if let Some(name) = nonempty(zone) {
            match name.trim().parse::<chrono_tz::Tz>() {
                Ok(tz) => cal.zone = tz,
                Err(_) => self.bad(
                    "BACKUP_TIMEZONE",
                    format!("{name:?} is not a time zone name from the IANA database (e.g. Europe/Berlin, America/New_York, UTC)"),
                ),
            }
        }
        cal
    }

    fn has_problem(&self, var: &str) -> bool {
        self.problems.iter().any(|p| p.var == var)
    }

    /// `BACKUP_DATABASES`: empty, `*`, or a comma-separated list without repeats.
    pub(super) fn databases(&mut self, value: Option<String>) -> Databases {
        match nonempty(value).map(|s| s.trim().to_string()).as_deref() {
            None => Databases::One,
            Some("*") => Databases::All,
            Some(list) => {
                let names: Vec<String> = list.split(',').map(|n| n.trim().to_string()).collect();
                if names.iter().any(String::is_empty) {
                    self.bad("BACKUP_DATABASES", "expected database names separated by commas, or *");
                }
                let mut seen = std::collections::BTreeSet::new();
                if let Some(dup) = names.iter().find(|n| !seen.insert(*n)) {
                    self.bad("BACKUP_DATABASES", format!("{dup:?} is listed twice"));
                }
                Databases::List(names)
            }
        }
    }

    /// `S3_OBJECT_LOCK_DAYS` (1–36500) and `S3_OBJECT_LOCK_MODE` (`governance`, the default, or
    /// `compliance`); S3 only.
    pub(super) fn object_lock(&mut self, days: Option<String>, mode: Option<String>, s3: bool) -> Option<super::settings::ObjectLock> {
        let compliance = match nonempty(mode.clone()).map(|s| s.trim().to_ascii_lowercase()).as_deref() {
            None | Some("governance") => false,
            Some("compliance") => true,
            Some(other) => {
                self.bad("S3_OBJECT_LOCK_MODE", format!("expected governance or compliance, got {other:?}"));
                false
            }
        };
        nonempty(days.clone())?;
        if !s3 {
            self.bad("S3_OBJECT_LOCK_DAYS", "object lock needs S3 storage (S3_BUCKET), not BACKUP_DIR");
            return None;
        }
        let days = self.uint("S3_OBJECT_LOCK_DAYS", days, 0, 1, 36_500, "whole days from 1 to 36500");
        Some(super::settings::ObjectLock {
            days: u32::try_from(days).unwrap_or(36_500),
            compliance,
        })
    }

    /// `VERIFY_AMCHECK`: `off`, `indexes` (default) or `heap`.
    pub(super) fn amcheck(&mut self, value: Option<String>) -> super::settings::Amcheck {
        use super::settings::Amcheck;
        match nonempty(value).map(|s| s.trim().to_ascii_lowercase()).as_deref() {
            None | Some("indexes") => Amcheck::Indexes,
            Some("off") => Amcheck::Off,
            Some("heap") => Amcheck::Heap,
            Some(other) => {
                self.bad("VERIFY_AMCHECK", format!("expected off, indexes or heap, got {other:?}"));
                Amcheck::Indexes
            }
        }
    }

    /// `VERIFY_TIMEOUT`: seconds a restore (and a verification's checks) may take; unset, it is
    /// derived from the recorded restore times ([`crate::pipeline::restore::default_deadline`]).
    pub(super) fn verify_timeout(&mut self, value: Option<String>) -> Option<std::time::Duration> {
        nonempty(value.clone())?;
        let secs = self.uint(
            "VERIFY_TIMEOUT",
            value,
            0,
            1,
            30 * 86_400,
            "whole seconds from 1 to 2592000 (e.g. 7200), or nothing to derive it from the recorded restore times",
        );
        (secs > 0).then(|| std::time::Duration::from_secs(secs))
    }

    /// `VERIFY_JOBS`: databases verified at once by a service that covers several; by default the
    /// number of cores, at least 2.
    pub(super) fn verify_jobs(&mut self, value: Option<String>) -> usize {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get).max(2);
        let jobs = self.uint(
            "VERIFY_JOBS",
            value,
            cores as u64,
            1,
            64,
            "a whole number of verifications at once, from 1 to 64 (default: the number of cores)",
        );
        usize::try_from(jobs).unwrap_or(1)
    }

    /// `PG_DUMP_LOCK_WARN_AFTER` (seconds, default 5) and `PG_DUMP_YIELD_AFTER` (seconds, off
    /// unless set).
    pub(super) fn lock_watch(
        &mut self,
        warn_after: Option<String>,
        yield_after: Option<String>,
    ) -> (std::time::Duration, Option<std::time::Duration>) {
        let warn = self.uint("PG_DUMP_LOCK_WARN_AFTER", warn_after, 5, 1, 3600, "whole seconds from 1 to 3600");
        let give_way = nonempty(yield_after.clone()).map(|_| {
            self.uint(
                "PG_DUMP_YIELD_AFTER",
                yield_after,
                0,
                1,
                3600,
                "whole seconds from 1 to 3600, or nothing to never give way",
            )
        });
        (
            std::time::Duration::from_secs(warn),
            give_way.filter(|s| *s > 0).map(std::time::Duration::from_secs),
        )
    }

    /// `VERIFY_RANDOM_RATE`: a fraction from 0 to 1 (default 0.2).
    pub(super) fn random_rate(&mut self, value: Option<String>) -> f64 {
        match nonempty(value) {
            None => 0.2,
            Some(s) => match s.trim().parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => r,
                _ => {
                    self.bad(
                        "VERIFY_RANDOM_RATE",
                        format!("expected a fraction from 0 to 1 (e.g. 0.2), got {s:?}"),
                    );
                    0.0
                }
            },
        }
    }

    /// `LOG_FORMAT`: `text` (default) or `json`.
    pub(super) fn log_format(&mut self, value: Option<String>) -> super::settings::LogFormat {
        use super::settings::LogFormat;
        match nonempty(value).map(|s| s.trim().to_ascii_lowercase()).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                self.bad("LOG_FORMAT", format!("expected text or json, got {other:?}"));
                LogFormat::Text
            }
        }
    }

    /// `BACKUP_PRIVILEGES`: `keep` (default) or `omit`.
    pub(super) fn keep_privileges(&mut self, value: Option<String>) -> bool {
        match nonempty(value).map(|s| s.trim().to_ascii_lowercase()).as_deref() {
            None | Some("keep") => true,
            Some("omit") => false,
            Some(other) => {
                self.bad("BACKUP_PRIVILEGES", format!("expected keep or omit, got {other:?}"));
                true
            }
        }
    }

    /// `TABLE_ANOMALY_DROP_PERCENT` and `TABLE_ANOMALY_MIN_ROWS`.
    pub(super) fn table_rules(&mut self, drop: Option<String>, min_rows: Option<String>) -> crate::policy::anomaly::TableRules {
        let drop_percent = self.uint("TABLE_ANOMALY_DROP_PERCENT", drop, 50, 1, 100, "a whole percentage from 1 to 100");
        let min_rows = self.uint("TABLE_ANOMALY_MIN_ROWS", min_rows, 100, 1, u64::MAX, "a whole number of rows >= 1");
        crate::policy::anomaly::TableRules {
            drop_fraction: drop_percent as f64 / 100.0,
            min_rows,
        }
    }

    /// `NOTIFY_WEBHOOK_URL(_FILE)`, `HEARTBEAT_URL(_FILE)`, `NOTIFY_ON_SUCCESS`. URLs are checked
    /// but never shown (a webhook URL is a credential).
    pub(super) fn notify(
        &mut self,
        webhooks: (Option<String>, Option<String>),
        heartbeat: (Option<String>, Option<String>),
        on_success: Option<String>,
    ) -> super::settings::NotifyConfig {
        let hooks = self.secret("NOTIFY_WEBHOOK_URL", "NOTIFY_WEBHOOK_URL_FILE", webhooks.0, webhooks.1);
        let beat = self.secret("HEARTBEAT_URL", "HEARTBEAT_URL_FILE", heartbeat.0, heartbeat.1);
        let mut cfg = super::settings::NotifyConfig::default();
        for url in hooks.iter().flat_map(|h| h.split([',', '\n'])).filter(|u| !u.trim().is_empty()) {
            cfg.webhooks.extend(self.http_url("NOTIFY_WEBHOOK_URL", url));
        }
        cfg.heartbeat = beat.and_then(|u| self.http_url("HEARTBEAT_URL", &u));
        cfg.on_success = self.boolean("NOTIFY_ON_SUCCESS", on_success, false);
        cfg
    }

    /// An http(s) URL kept secret; a problem is reported without showing it.
    fn http_url(&mut self, var: &'static str, url: &str) -> Option<secrecy::SecretString> {
        let ok = url::Url::parse(url.trim()).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if !ok {
            self.bad(var, "expected http:// or https:// URLs (not shown: a webhook URL is a secret)");
        }
        ok.then(|| secrecy::SecretString::from(url.trim().to_string()))
    }

    /// `BACKUP_ENCRYPTION_RECIPIENTS(_FILE)` (age public keys, separated by commas, spaces or
    /// lines; `#` starts a comment) and `BACKUP_ENCRYPTION_IDENTITY(_FILE)` (age identities, as
    /// `age-keygen` writes them).
    /// The backup service holds no private key: it is refused one. Key material is never shown.
    pub(super) fn encryption(
        &mut self,
        role: super::Role,
        recipients: (Option<String>, Option<String>),
        identity: (Option<String>, Option<String>),
    ) -> (Vec<age::x25519::Recipient>, super::settings::Identities) {
        const RECIPIENTS: &str = "BACKUP_ENCRYPTION_RECIPIENTS";
        const IDENTITY: &str = "BACKUP_ENCRYPTION_IDENTITY";
        const IDENTITY_FILE: &str = "BACKUP_ENCRYPTION_IDENTITY_FILE";
        let listed = self.secret(RECIPIENTS, "BACKUP_ENCRYPTION_RECIPIENTS_FILE", recipients.0, recipients.1);
        let mut keys = Vec::new();
        for word in listed
            .iter()
            .flat_map(|l| l.lines())
            .flat_map(|l| l.split('#').next())
            .flat_map(|l| l.split([',', ' ', '\t']))
        {
            let word = word.trim();
            if word.is_empty() {
                continue;
            }
            if word.to_ascii_uppercase().starts_with("AGE-SECRET-KEY-") {
                self.bad(RECIPIENTS, "this is a private key (not shown): give the backup service only public keys (age1…, printed by age-keygen -y), and the private key to the verify service and the CLI");
            } else {
                match word.parse::<age::x25519::Recipient>() {
                    Ok(r) => keys.push(r),
                    Err(_) if word.starts_with("age1") => self.bad(RECIPIENTS, format!("{word:?} is not a valid age public key")),
                    Err(_) => self.bad(
                        RECIPIENTS,
                        "expected age public keys (age1…); one is not (not shown); SSH keys and plugins are not supported",
                    ),
                }
            }
        }
        if listed.is_some() && keys.is_empty() && !self.has_problem(RECIPIENTS) {
            self.bad(RECIPIENTS, "no public key in it");
        }
        let mut identities = super::settings::Identities::default();
        if role == super::Role::Backup {
            if nonempty(identity.0).is_some() || nonempty(identity.1).is_some() {
                self.bad(IDENTITY, "the backup service must hold no private key: give it BACKUP_ENCRYPTION_RECIPIENTS (public keys) and the identity only to the verify service and the CLI");
            }
            return (keys, identities);
        }
        let Some(text) = self.secret(IDENTITY, IDENTITY_FILE, identity.0, identity.1) else {
            return (keys, identities);
        };
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            match line.parse::<age::x25519::Identity>() {
                Ok(i) => identities.0.push(i),
                Err(_) => {
                    self.bad(
                        IDENTITY,
                        "the identity holds a line that is not an age identity (AGE-SECRET-KEY-1…; not shown)",
                    );
                    break;
                }
            }
        }
        if identities.0.is_empty() && !self.has_problem(IDENTITY) {
            self.bad(IDENTITY, "the identity holds no age identity");
        }
        (keys, identities)
    }
}
