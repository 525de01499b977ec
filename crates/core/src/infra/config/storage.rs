//! Where backups are kept: `S3_*` (bucket, endpoint, region, credentials, encryption at rest,
//! object lock, part size) or `BACKUP_DIR`, and `BACKUP_PREFIX`; and, optionally, a second
//! destination with `SECONDARY_S3_*` or `SECONDARY_BACKUP_DIR` under the same prefix.

use super::raw::RawEnv;
use super::settings::{Backend, S3Config, Sse, StorageConfig};
use super::validate::{nonempty, Validator};
use secrecy::SecretString;
use std::path::PathBuf;

/// The names of one destination's variables, for messages.
struct Names {
    bucket: &'static str,
    dir: &'static str,
    endpoint: &'static str,
    access: &'static str,
    access_file: &'static str,
    secret: &'static str,
    secret_file: &'static str,
    path_style: &'static str,
}

const PRIMARY: Names = Names {
    bucket: "S3_BUCKET",
    dir: "BACKUP_DIR",
    endpoint: "S3_ENDPOINT",
    access: "S3_ACCESS_KEY_ID",
    access_file: "S3_ACCESS_KEY_ID_FILE",
    secret: "S3_SECRET_ACCESS_KEY",
    secret_file: "S3_SECRET_ACCESS_KEY_FILE",
    path_style: "S3_FORCE_PATH_STYLE",
};

const SECONDARY: Names = Names {
    bucket: "SECONDARY_S3_BUCKET",
    dir: "SECONDARY_BACKUP_DIR",
    endpoint: "SECONDARY_S3_ENDPOINT",
    access: "SECONDARY_S3_ACCESS_KEY_ID",
    access_file: "SECONDARY_S3_ACCESS_KEY_ID_FILE",
    secret: "SECONDARY_S3_SECRET_ACCESS_KEY",
    secret_file: "SECONDARY_S3_SECRET_ACCESS_KEY_FILE",
    path_style: "SECONDARY_S3_FORCE_PATH_STYLE",
};

/// One destination's raw values, in the order of [`Names`].
struct Values {
    bucket: Option<String>,
    dir: Option<String>,
    endpoint: Option<String>,
    access: (Option<String>, Option<String>),
    secret: (Option<String>, Option<String>),
    path_style: Option<String>,
}

/// A bucket or directory with its connection settings, before the S3-only extras.
struct Place {
    bucket: Option<String>,
    dir: Option<String>,
    endpoint: Option<String>,
    credentials: Option<(String, SecretString)>,
    force_path_style: bool,
}

impl Validator {
    pub(super) fn storage(&mut self, raw: &RawEnv) -> Option<StorageConfig> {
        let prefix = nonempty(raw.backup_prefix.clone()).unwrap_or_else(|| "backups".into());
        let prefix = prefix.trim().trim_matches('/').to_string();
        if let Err(e) = crate::records::keys::validate_prefix(&prefix) {
            self.bad("BACKUP_PREFIX", e);
        }
        let place = self.place(
            &PRIMARY,
            Values {
                bucket: raw.s3_bucket.clone(),
                dir: raw.backup_dir.clone(),
                endpoint: raw.s3_endpoint.clone(),
                access: (raw.s3_access_key_id.clone(), raw.s3_access_key_id_file.clone()),
                secret: (raw.s3_secret_access_key.clone(), raw.s3_secret_access_key_file.clone()),
                path_style: raw.s3_force_path_style.clone(),
            },
        );
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
        let (region, region_from) = region(&[
            ("S3_REGION", &raw.s3_region),
            ("AWS_REGION", &raw.aws_region),
            ("AWS_DEFAULT_REGION", &raw.aws_default_region),
        ]);
        let object_lock = self.object_lock(
            raw.s3_object_lock_days.clone(),
            raw.s3_object_lock_mode.clone(),
            nonempty(raw.s3_bucket.clone()).is_some(),
        );
        let Some(place) = place else {
            self.bad(
                "S3_BUCKET",
                "required: the bucket to store backups in (or set BACKUP_DIR to use a local directory)",
            );
            return None;
        };
        let extras = S3Extras {
            sse,
            storage_class: nonempty(raw.s3_storage_class.clone()),
            part_size,
            object_lock,
        };
        let backend = backend(place, (region, region_from), extras);
        Some(StorageConfig { backend, prefix })
    }

    /// The second destination (`SECONDARY_S3_BUCKET` or `SECONDARY_BACKUP_DIR`), under the same
    /// prefix as the first, which it must not be. Encryption at rest, storage class, part size
    /// and object lock are the first destination's only.
    pub(super) fn secondary(&mut self, raw: &RawEnv, primary: Option<&StorageConfig>) -> Option<StorageConfig> {
        let place = self.place(
            &SECONDARY,
            Values {
                bucket: raw.secondary_s3_bucket.clone(),
                dir: raw.secondary_backup_dir.clone(),
                endpoint: raw.secondary_s3_endpoint.clone(),
                access: (raw.secondary_s3_access_key_id.clone(), raw.secondary_s3_access_key_id_file.clone()),
                secret: (
                    raw.secondary_s3_secret_access_key.clone(),
                    raw.secondary_s3_secret_access_key_file.clone(),
                ),
                path_style: raw.secondary_s3_force_path_style.clone(),
            },
        )?;
        let (region, region_from) = region(&[
            ("SECONDARY_S3_REGION", &raw.secondary_s3_region),
            ("AWS_REGION", &raw.aws_region),
            ("AWS_DEFAULT_REGION", &raw.aws_default_region),
        ]);
        let backend = backend(place, (region, region_from), S3Extras::default());
        let primary = primary?;
        if same_place(&primary.backend, &backend) {
            self.bad(
                "SECONDARY_S3_BUCKET",
                "names the same place as the first destination; a second copy must be kept somewhere else (another bucket, store or directory)",
            );
        }
        Some(StorageConfig {
            backend,
            prefix: primary.prefix.clone(),
        })
    }

    /// A bucket (with its endpoint and credentials) or a directory, `None` when neither is set.
    fn place(&mut self, n: &Names, v: Values) -> Option<Place> {
        let credentials = self.s3_credentials(n, v.access, v.secret);
        let endpoint = self.s3_endpoint(n, v.endpoint);
        let force_path_style = self.boolean(n.path_style, v.path_style, endpoint.is_some());
        match (nonempty(v.bucket), nonempty(v.dir)) {
            (Some(_), Some(_)) => {
                // Whichever won, someone would look for the backups in the other place.
                self.bad(
                    n.dir,
                    format!(
                        "set either {} (S3 storage) or {} (a local directory), not both (to use the directory, unset {}: {}= {}=…)",
                        n.bucket, n.dir, n.bucket, n.bucket, n.dir
                    ),
                );
                Some(Place {
                    bucket: None,
                    dir: None,
                    endpoint,
                    credentials,
                    force_path_style,
                })
            }
            (Some(bucket), None) => {
                if bucket.len() < 3 || bucket.len() > 63 || bucket.contains('/') {
                    self.bad(
                        n.bucket,
                        format!("expected a bucket name (3-63 characters, no '/'), got {bucket:?}"),
                    );
                }
                Some(Place {
                    bucket: Some(bucket),
                    dir: None,
                    endpoint,
                    credentials,
                    force_path_style,
                })
            }
            (None, Some(dir)) => Some(Place {
                bucket: None,
                dir: Some(dir),
                endpoint,
                credentials,
                force_path_style,
            }),
            (None, None) => None,
        }
    }

    /// The access key id and secret (or their `_FILE`s): both or neither.
    fn s3_credentials(
        &mut self,
        n: &Names,
        access: (Option<String>, Option<String>),
        secret: (Option<String>, Option<String>),
    ) -> Option<(String, SecretString)> {
        let access = self.secret(n.access, n.access_file, access.0, access.1);
        let secret = self.secret(n.secret, n.secret_file, secret.0, secret.1);
        match (access, secret) {
            (Some(a), Some(s)) => Some((a, SecretString::from(s))),
            (None, None) => None,
            (Some(_), None) => {
                self.bad(n.secret, format!("required when {} is set", n.access));
                None
            }
            (None, Some(_)) => {
                self.bad(n.access, format!("required when {} is set", n.secret));
                None
            }
        }
    }

    /// An endpoint: an http(s) URL without credentials.
    fn s3_endpoint(&mut self, n: &Names, value: Option<String>) -> Option<String> {
        let var = n.endpoint;
        let endpoint = nonempty(value).map(|e| e.trim().trim_end_matches('/').to_string());
        if let Some(e) = &endpoint {
            match url::Url::parse(e) {
                Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                    // Not shown: it carries credentials.
                    self.bad(
                        var,
                        format!("must not contain a user name or password; use {} and {}", n.access, n.secret),
                    );
                }
                Ok(_) if e.starts_with("http://") || e.starts_with("https://") => {}
                _ if e.contains('@') => self.bad(var, "expected an http:// or https:// URL (not shown: it contains '@')"),
                _ => self.bad(var, format!("expected an http:// or https:// URL, got {e:?}")),
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

/// What only the first destination's bucket gets: encryption at rest, storage class, part size
/// and object lock.
#[derive(Default)]
struct S3Extras {
    sse: Option<Sse>,
    storage_class: Option<String>,
    part_size: Option<u64>,
    object_lock: Option<super::settings::ObjectLock>,
}

/// The backend of a place: its bucket, in `region`, with `extras`, or its directory.
fn backend(place: Place, (region, region_from): (String, &'static str), extras: S3Extras) -> Backend {
    match place {
        Place {
            bucket: Some(bucket),
            endpoint,
            credentials,
            force_path_style,
            ..
        } => Backend::S3(S3Config {
            bucket,
            endpoint,
            region,
            region_from,
            credentials,
            force_path_style,
            sse: extras.sse,
            storage_class: extras.storage_class,
            part_size: extras.part_size,
            object_lock: extras.object_lock,
        }),
        Place { dir, .. } => Backend::Local {
            dir: PathBuf::from(dir.unwrap_or_default()),
        },
    }
}

/// The first region set among `vars`, and which variable set it.
fn region(vars: &[(&'static str, &Option<String>)]) -> (String, &'static str) {
    vars.iter()
        .find_map(|(name, v)| nonempty((*v).clone()).map(|v| (v, *name)))
        .unwrap_or_else(|| ("us-east-1".into(), "the default"))
}

/// Whether two backends are one place: the same bucket at the same endpoint, or the same directory.
fn same_place(a: &Backend, b: &Backend) -> bool {
    match (a, b) {
        (Backend::S3(a), Backend::S3(b)) => a.bucket == b.bucket && a.endpoint == b.endpoint,
        (Backend::Local { dir: a }, Backend::Local { dir: b }) => {
            let canon = |d: &PathBuf| std::fs::canonicalize(d).unwrap_or_else(|_| d.components().collect());
            canon(a) == canon(b)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use crate::infra::config::{Backend, Role, Settings};

    fn load(vars: &[(&str, &str)]) -> Result<Settings, String> {
        let mut all = vec![("BACKUP_DIR", "/tmp/pgvigil-first"), ("DATABASE_URL", "postgresql://u:pw@h/db")];
        all.extend_from_slice(vars);
        Settings::from_vars(all.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())), Role::Backup).map_err(|e| e.to_string())
    }

    #[test]
    fn a_second_destination_is_another_place_under_the_same_prefix() {
        let s = load(&[("SECONDARY_S3_BUCKET", "copies"), ("BACKUP_PREFIX", "prod")]).unwrap();
        let second = s.secondary.unwrap();
        assert_eq!(second.prefix, "prod");
        let Backend::S3(c) = second.backend else { panic!("expected S3") };
        assert_eq!(c.bucket, "copies");
        assert!(c.object_lock.is_none() && c.sse.is_none());
        assert!(load(&[]).unwrap().secondary.is_none());
        let s = load(&[("SECONDARY_BACKUP_DIR", "/tmp/pgvigil-second")]).unwrap();
        assert!(matches!(s.secondary.unwrap().backend, Backend::Local { .. }));

        // (variables, what the error names)
        let refused: &[(&[(&str, &str)], &str)] = &[
            (
                &[("SECONDARY_BACKUP_DIR", "/tmp/pgvigil-first")],
                "SECONDARY_S3_BUCKET: names the same place",
            ),
            (
                &[("SECONDARY_S3_BUCKET", "copies"), ("SECONDARY_BACKUP_DIR", "/tmp/x")],
                "SECONDARY_BACKUP_DIR: set either SECONDARY_S3_BUCKET",
            ),
            (
                &[("SECONDARY_S3_BUCKET", "copies"), ("SECONDARY_S3_ACCESS_KEY_ID", "AK")],
                "SECONDARY_S3_SECRET_ACCESS_KEY: required when SECONDARY_S3_ACCESS_KEY_ID is set",
            ),
            (
                &[("SECONDARY_S3_BUCKET", "copies"), ("SECONDARY_S3_ENDPOINT", "http://u:secret@host")],
                "SECONDARY_S3_ENDPOINT: must not contain a user name or password",
            ),
            (&[("SECONDARY_S3_BUCKET", "a/b")], "SECONDARY_S3_BUCKET: expected a bucket name"),
        ];
        for (vars, want) in refused {
            let err = load(vars).unwrap_err();
            assert!(err.contains(want), "{vars:?}: {err}");
            assert!(!err.contains("secret@"), "{err}");
        }
    }
}
