//! Settings that choose between a few forms: which databases a service covers, whether dumps keep
//! owners and grants, when a table's change is an anomaly.

use super::settings::Databases;
use super::validate::{nonempty, Validator};

impl Validator {
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
}
