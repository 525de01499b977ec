//! `BACKUP_SIGNING_KEY_FILE` (the backup service signs manifests) and `BACKUP_TRUSTED_KEYS`
//! (the verify service and the CLI accept only what those keys signed).

use super::validate::{nonempty, Validator};
use crate::infra::signing::{SigningKey, TrustedKeys};

impl Validator {
    /// The signing key (backup service) and the trusted keys (verify service, CLI).
    pub(super) fn authenticity(
        &mut self,
        role: super::Role,
        key_file: Option<String>,
        trusted: (Option<String>, Option<String>),
    ) -> (Option<SigningKey>, TrustedKeys) {
        const KEY: &str = "BACKUP_SIGNING_KEY_FILE";
        const TRUSTED: &str = "BACKUP_TRUSTED_KEYS";
        let signing = nonempty(key_file).and_then(|path| {
            if role != super::Role::Backup {
                self.bad(
                    KEY,
                    "only the backup service signs: give the verify service and the CLI BACKUP_TRUSTED_KEYS (public keys) instead",
                );
                return None;
            }
            match std::fs::read_to_string(path.trim()) {
                Err(e) => {
                    self.bad(KEY, format!("cannot read {:?}: {}", path.trim(), e.kind()));
                    None
                }
                Ok(text) => SigningKey::from_file_text(&text)
                    .map_err(|why| self.bad(KEY, format!("{:?} {why}", path.trim())))
                    .ok(),
            }
        });
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
