//! Where backups are kept: `S3_*` (bucket, endpoint, region, credentials, encryption at rest,
//! object lock, part size) or `BACKUP_DIR`, and `BACKUP_PREFIX`.

use super::raw::RawEnv;
use super::settings::{Backend, S3Config, Sse, StorageConfig};
use super::validate::{nonempty, Validator};
use secrecy::SecretString;
use std::path::PathBuf;

impl Validator {
    pub(super) fn storage(&mut self, raw: &RawEnv) -> Option<StorageConfig> {
        let prefix = nonempty(raw.backup_prefix.clone()).unwrap_or_else(|| "backups".into());
        let prefix = prefix.trim().trim_matches('/').to_string();
        if let Err(e) = crate::records::keys::validate_prefix(&prefix) {
            self.bad("BACKUP_PREFIX", e);
        }
        let credentials = self.s3_credentials(raw);
        let endpoint = self.s3_endpoint(raw);
        let force_path_style = self.boolean("S3_FORCE_PATH_STYLE", raw.s3_force_path_style.clone(), endpoint.is_some());
        let sse = self.s3_sse(raw);
        let part_size = nonempty(raw.s3_part_size_mb.clone()).map(|_| {
            self.uint(
                "S3_PART_SIZE_MB",
                raw.s3_part_size_mb.clone(),
                16,
                5,
                5 * 1024,
                "a part size in MiB from 5 to 5120",
            ) * 1024
                * 1024
        });
        let (region, region_from) = [
            ("S3_REGION", &raw.s3_region),
            ("AWS_REGION", &raw.aws_region),
            ("AWS_DEFAULT_REGION", &raw.aws_default_region),
        ]
        .into_iter()
        .find_map(|(name, v)| nonempty(v.clone()).map(|v| (v, name)))
        .unwrap_or_else(|| ("us-east-1".into(), "the default"));
        let object_lock = self.object_lock(
            raw.s3_object_lock_days.clone(),
            raw.s3_object_lock_mode.clone(),
            nonempty(raw.s3_bucket.clone()).is_some(),
        );

        let backend = match (nonempty(raw.s3_bucket.clone()), nonempty(raw.backup_dir.clone())) {
            (Some(_), Some(_)) => {
                // Whichever won, someone would look for the backups in the other place.
                self.bad(
                    "BACKUP_DIR",
                    "set either S3_BUCKET (S3 storage) or BACKUP_DIR (a local directory), not both (to use the directory, unset S3_BUCKET: S3_BUCKET= BACKUP_DIR=…)",
                );
                Backend::Local { dir: PathBuf::new() }
            }
            (Some(bucket), None) => {
                if bucket.len() < 3 || bucket.len() > 63 || bucket.contains('/') {
                    self.bad(
                        "S3_BUCKET",
                        format!("expected a bucket name (3-63 characters, no '/'), got {bucket:?}"),
                    );
                }
                Backend::S3(S3Config {
                    bucket,
                    endpoint,
                    region,
                    region_from,
                    credentials,
                    force_path_style,
                    sse,
                    storage_class: nonempty(raw.s3_storage_class.clone()),
                    part_size,
                    object_lock,
                })
            }
            (None, Some(dir)) => Backend::Local { dir: PathBuf::from(dir) },
            (None, None) => {
                self.bad(
                    "S3_BUCKET",
                    "required: the bucket to store backups in (or set BACKUP_DIR to use a local directory)",
                );
                return None;
            }
        };
        Some(StorageConfig { backend, prefix })
    }

    /// `S3_ACCESS_KEY_ID` and `S3_SECRET_ACCESS_KEY` (or their `_FILE`s): both or neither.
    fn s3_credentials(&mut self, raw: &RawEnv) -> Option<(String, SecretString)> {
        let access = self.secret(
            "S3_ACCESS_KEY_ID",
            "S3_ACCESS_KEY_ID_FILE",
            raw.s3_access_key_id.clone(),
            raw.s3_access_key_id_file.clone(),
        );
        let secret = self.secret(
            "S3_SECRET_ACCESS_KEY",
            "S3_SECRET_ACCESS_KEY_FILE",
            raw.s3_secret_access_key.clone(),
            raw.s3_secret_access_key_file.clone(),
        );
        match (access, secret) {
            (Some(a), Some(s)) => Some((a, SecretString::from(s))),
            (None, None) => None,
            (Some(_), None) => {
                self.bad("S3_SECRET_ACCESS_KEY", "required when S3_ACCESS_KEY_ID is set");
                None
            }
            (None, Some(_)) => {
                self.bad("S3_ACCESS_KEY_ID", "required when S3_SECRET_ACCESS_KEY is set");
                None
            }
        }
    }

    /// `S3_ENDPOINT`: an http(s) URL without credentials.
    fn s3_endpoint(&mut self, raw: &RawEnv) -> Option<String> {
        let endpoint = nonempty(raw.s3_endpoint.clone()).map(|e| e.trim().trim_end_matches('/').to_string());
        if let Some(e) = &endpoint {
            match url::Url::parse(e) {
                Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                    // Not shown: it carries credentials.
                    self.bad(
                        "S3_ENDPOINT",
                        "must not contain a user name or password; use S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY",
                    );
                }
                Ok(_) if e.starts_with("http://") || e.starts_with("https://") => {}
                _ if e.contains('@') => self.bad("S3_ENDPOINT", "expected an http:// or https:// URL (not shown: it contains '@')"),
                _ => self.bad("S3_ENDPOINT", format!("expected an http:// or https:// URL, got {e:?}")),
            }
        }
        endpoint
    }

    /// `S3_SSE` and `S3_SSE_KMS_KEY_ID`.
    fn s3_sse(&mut self, raw: &RawEnv) -> Option<Sse> {
        let sse = match nonempty(raw.s3_sse.clone()).as_deref() {
            None => None,
            Some("AES256") => Some(Sse::Aes256),
            Some("aws:kms") => Some(Sse::Kms {
                key_id: nonempty(raw.s3_sse_kms_key_id.clone()),
            }),
            Some(other) => {
                self.bad("S3_SSE", format!("expected AES256 or aws:kms, got {other:?}"));
                None
            }
        };
        if nonempty(raw.s3_sse_kms_key_id.clone()).is_some() && !matches!(sse, Some(Sse::Kms { .. })) {
            self.bad("S3_SSE_KMS_KEY_ID", "only valid together with S3_SSE=aws:kms");
        }
        sse
    }
}
