//! Validation: turns raw strings into typed settings, collecting every problem (each naming its
//! variable and what it expects) instead of stopping at the first. Secret values are never echoed.

use super::raw::RawEnv;
use super::settings::{BackupConfig, Settings};
use super::{Problem, Role};
use crate::infra::secret::DbUrl;
use std::time::Duration;

/// Collects problems while turning raw strings into typed values.
#[derive(Default)]
pub(super) struct Validator {
    pub(super) problems: Vec<Problem>,
}

impl Validator {
    pub(super) fn bad(&mut self, var: &'static str, message: impl Into<String>) {
        self.problems.push(Problem {
            var,
            message: message.into(),
        });
    }

    /// Reads a secret from `VAR` or the file named by `VAR_FILE` (not both).
    pub(super) fn secret(
        &mut self,
        var: &'static str,
        file_var: &'static str,
        direct: Option<String>,
        file: Option<String>,
    ) -> Option<String> {
        match (nonempty(direct), nonempty(file)) {
            (Some(_), Some(_)) => {
                self.bad(var, format!("set either {var} or {file_var}, not both"));
                None
            }
            (Some(v), None) => Some(v),
            (None, Some(path)) => match std::fs::read_to_string(&path) {
                Ok(s) if !s.trim().is_empty() => Some(s.trim_end_matches(['\n', '\r']).to_string()),
                Ok(_) => {
                    self.bad(file_var, format!("file {path:?} is empty"));
                    None
                }
                Err(e) => {
                    self.bad(file_var, format!("cannot read file {path:?}: {e}"));
                    None
                }
            },
            (None, None) => None,
        }
    }

    pub(super) fn db_url(&mut self, var: &'static str, value: Option<String>, required: bool) -> Option<DbUrl> {
        match value {
            None if required => {
                self.bad(
                    var,
                    "required: the postgresql:// URL of the database (e.g. postgresql://user:password@host:5432/dbname)",
                );
                None
            }
            None => None,
            Some(v) => match DbUrl::parse(&v) {
                Ok(u) => Some(u),
                Err(e) => {
                    // The value may contain a password: describe the problem, never echo it.
                    self.bad(var, e);
                    None
                }
            },
        }
    }

    pub(super) fn uint(&mut self, var: &'static str, value: Option<String>, default: u64, min: u64, max: u64, what: &str) -> u64 {
        match nonempty(value) {
            None => default,
            Some(s) => match s.trim().parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => n,
                _ => {
                    self.bad(var, format!("expected {what}, got {s:?}"));
                    default
                }
            },
        }
    }

    pub(super) fn boolean(&mut self, var: &'static str, value: Option<String>, default: bool) -> bool {
        match nonempty(value).map(|s| s.trim().to_ascii_lowercase()) {
            None => default,
            Some(s) => match s.as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                _ => {
                    self.bad(var, format!("expected true or false, got {s:?}"));
                    default
                }
            },
        }
    }

    pub(super) fn settings(&mut self, mut raw: RawEnv, role: Role) -> Option<Settings> {
        // Every section is validated before anything can stop short, so that one message lists
        // every bad variable (in the order of the sections).
        let libpq_env = crate::infra::secret::LibpqEnv::new(self.libpq_env(&raw));
        let storage = self.storage(&raw);
        let secondary = self.secondary(&raw, storage.as_ref());
        let tools = self.tools(&mut raw);
        let db = self.secret(
            "DATABASE_URL",
            "DATABASE_URL_FILE",
            raw.database_url.take(),
            raw.database_url_file.take(),
        );
        let database_url = self.db_url("DATABASE_URL", db, role == Role::Backup);
        let backup = self.backup(&mut raw);
        let (recipients, identities) = self.encryption(
            role,
            (
                raw.backup_encryption_recipients.take(),
                raw.backup_encryption_recipients_file.take(),
            ),
            (raw.backup_encryption_identity.take(), raw.backup_encryption_identity_file.take()),
        );
        let vdb = self.secret(
            "VERIFY_DATABASE_URL",
            "VERIFY_DATABASE_URL_FILE",
            raw.verify_database_url.take(),
            raw.verify_database_url_file.take(),
        );
        let verify_url = self.db_url("VERIFY_DATABASE_URL", vdb, role == Role::Verify);
        let verify = self.verify(&mut raw);
        let (signing, trusted) = self.authenticity(
            role,
            (raw.backup_signing_key.take(), raw.backup_signing_key_file.take()),
            (raw.backup_trusted_keys.take(), raw.backup_trusted_keys_file.take()),
        );
        let databases = self.databases(raw.backup_databases.take());
        let notify = self.notify(
            (raw.notify_webhook_url.take(), raw.notify_webhook_url_file.take()),
            (raw.heartbeat_url.take(), raw.heartbeat_url_file.take()),
            raw.notify_on_success.take(),
        );
        let port = self.port(raw.port.take());
        let log_format = self.log_format(raw.log_format.take());
        let price_per_gb_month = self.price(raw.storage_price_per_gb_month.take());
        let restore_database_url = self.restore_target(&mut raw, role);
        let retry_backoff = self.uint(
            "RETRY_BACKOFF_SECS",
            raw.retry_backoff_secs.take(),
            30,
            1,
            3600,
            "whole seconds from 1 to 3600",
        );
        let health = self.health_access(raw.health_address.take(), (raw.health_token.take(), raw.health_token_file.take()));
        Some(Settings {
            storage: storage?,
            secondary,
            reading_secondary: false,
            tools,
            database_url: database_url.map(|u| u.with_environment(&libpq_env)),
            backup: BackupConfig { recipients, ..backup },
            verify_database_url: verify_url.map(|u| u.with_environment(&libpq_env)),
            verify,
            restore_database_url: restore_database_url.map(|u| u.with_environment(&libpq_env)),
            libpq: libpq_env,
            databases,
            notify,
            identities,
            signing,
            trusted,
            port,
            health,
            retry_backoff: Duration::from_secs(retry_backoff),
            log_format,
            price_per_gb_month,
        })
    }
}

pub(super) fn nonempty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}
