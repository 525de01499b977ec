//! `BACKUP_SIGNING_KEY(_FILE)` (the backup service signs manifests) and `BACKUP_TRUSTED_KEYS`
//! (the verify service and the CLI accept only what those keys signed).

use super::validate::{nonempty, Validator};
use crate::infra::signing::{SigningKey, TrustedKeys};

impl Validator {
    /// The signing key (backup service) and the trusted keys (verify service, CLI).
    pub(super) fn authenticity(
        &mut self,
        role: super::Role,
        key: (Option<String>, Option<String>),
        trusted: (Option<String>, Option<String>),
    ) -> (Option<SigningKey>, TrustedKeys) {
        const KEY: &str = "BACKUP_SIGNING_KEY";
        if role != super::Role::Backup && (nonempty(key.0.clone()).is_some() || nonempty(key.1.clone()).is_some()) {
            self.bad(
                KEY,
                "only the backup service signs: give the verify service and the CLI BACKUP_TRUSTED_KEYS (public keys) instead",
            );
        }
        const TRUSTED: &str = "BACKUP_TRUSTED_KEYS";
        let signing = if role == super::Role::Backup {
            self.secret(KEY, "BACKUP_SIGNING_KEY_FILE", key.0, key.1).and_then(|text| {
                SigningKey::from_file_text(&text)
                    .map_err(|why| self.bad(KEY, format!("the key {why}")))
                    .ok()
            })
        } else {
            None
        };
        let listed = self.secret(TRUSTED, "BACKUP_TRUSTED_KEYS_FILE", trusted.0, trusted.1);
        let keys = match listed.as_deref().map(TrustedKeys::parse) {
            None => TrustedKeys::default(),
            Some(Ok(keys)) if keys.is_set() => keys,
            Some(Ok(_)) => {
                self.bad(TRUSTED, "no public key in it");
                TrustedKeys::default()
            }
            Some(Err(why)) => {
                self.bad(TRUSTED, why);
                TrustedKeys::default()
            }
        };
        (signing, keys)
    }
}
