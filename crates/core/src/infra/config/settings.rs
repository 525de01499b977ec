//! The typed, validated settings. Each setting is stored exactly once; components receive the
//! sub-struct they need, never the whole environment.

use crate::infra::secret::DbUrl;
use crate::policy::retention::RetentionPolicy;
use secrecy::SecretString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Notifications (the URLs are secrets: a Slack or Discord webhook URL is a credential).
#[derive(Clone, Default)]
pub struct NotifyConfig {
    /// `NOTIFY_WEBHOOK_URL` (comma-separated) or `NOTIFY_WEBHOOK_URL_FILE` (one per line).
    pub webhooks: Vec<SecretString>,
    /// `HEARTBEAT_URL`: requested after every successful run.
    pub heartbeat: Option<SecretString>,
    /// `NOTIFY_ON_SUCCESS`: also post every successful run.
    pub on_success: bool,
}

/// Private age keys; never shown (`Debug` prints their public keys).
#[derive(Clone, Default)]
pub struct Identities(pub Vec<age::x25519::Identity>);

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter().map(|i| i.to_public().to_string())).finish()
    }
}

impl fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifyConfig")
            .field("webhooks", &self.webhooks.len())
            .field("heartbeat", &self.heartbeat.is_some())
            .field("on_success", &self.on_success)
            .finish()
    }
}

/// Which databases one service covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Databases {
    /// The one in `DATABASE_URL`, under `BACKUP_PREFIX` itself.
    One,
    /// These, each under `BACKUP_PREFIX/<name>`.
    List(Vec<String>),
    /// Every database of the server that accepts connections (templates excepted), each under
    /// `BACKUP_PREFIX/<name>`; for the verify service and the CLI, every database with backups there.
    All,
}

/// Where backups live.
#[derive(Debug, Clone)]
pub enum Backend {
    /// An S3 (or S3-compatible) bucket.
    S3(S3Config),
    /// A local directory (development, air-gapped hosts).
    Local {
        /// Root directory; keys become relative paths under it.
        dir: PathBuf,
    },
}

/// Server-side encryption requested for every object pgvigil writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sse {
    /// SSE-S3 (`AES256`).
    Aes256,
    /// SSE-KMS, optionally with a specific key.
    Kms {
        /// `S3_SSE_KMS_KEY_ID`; `None` uses the bucket's default KMS key.
        key_id: Option<String>,
    },
}

/// S3 connection settings.
#[derive(Clone)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Custom endpoint for S3-compatible stores; `None` for AWS.
    pub endpoint: Option<String>,
    /// Region used for signing.
    pub region: String,
    /// Where `region` came from: `S3_REGION`, `AWS_REGION`, `AWS_DEFAULT_REGION` or the default.
    pub region_from: &'static str,
    /// Static credentials; `None` uses the standard AWS credential chain.
    pub credentials: Option<(String, SecretString)>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most compatible stores.
    pub force_path_style: bool,
    /// Optional server-side encryption.
    pub sse: Option<Sse>,
    /// Optional storage class, e.g. `STANDARD_IA`.
    pub storage_class: Option<String>,
    /// Fixed multipart part size; `None` chooses it from the expected size.
    pub part_size: Option<u64>,
    /// `S3_OBJECT_LOCK_DAYS`, `S3_OBJECT_LOCK_MODE`: backups and their manifests are written
    /// with a retention date (write once, read many) on a bucket created with object lock.
    pub object_lock: Option<ObjectLock>,
}

/// Object lock (WORM) for backups: how long, and how strictly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLock {
    /// Days from the upload until the object may be deleted or overwritten.
    pub days: u32,
    /// `compliance`: nobody, not even the root account, can shorten or remove it; `governance`:
    /// a principal with `s3:BypassGovernanceRetention` can.
    pub compliance: bool,
}

/// One line for the start-up log: where backups go, with the settings that decide how requests
/// are sent. Credentials are never part of it.
impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local { dir } => write!(f, "directory {}", dir.display()),
            Self::S3(c) => {
                write!(f, "s3://{} (region {} from {}", c.bucket, c.region, c.region_from)?;
                if let Some(e) = &c.endpoint {
                    write!(f, ", endpoint {e}")?;
                }
                if c.force_path_style {
                    f.write_str(", path-style")?;
                }
                match &c.sse {
                    None => {}
                    Some(Sse::Aes256) => f.write_str(", SSE AES256")?,
                    Some(Sse::Kms { key_id: None }) => f.write_str(", SSE aws:kms")?,
                    Some(Sse::Kms { key_id: Some(k) }) => write!(f, ", SSE aws:kms key {k}")?,
                }
                match &c.object_lock {
                    None => {}
                    // Locked parts need their Content-MD5 first: they are held whole (see
                    // S3_OBJECT_LOCK_DAYS in docs/configuration.md for the bound).
                    Some(l) => write!(
                        f,
                        ", object lock {} days {} (parts held whole in memory: up to 3 parts, 48 MiB below about 40 GiB of dump, more above)",
                        l.days,
                        if l.compliance { "compliance" } else { "governance" }
                    )?,
                }
                if let Some(class) = &c.storage_class {
                    write!(f, ", storage class {class}")?;
                }
                if let Some(p) = c.part_size {
                    write!(f, ", parts of {} MiB", p / (1024 * 1024))?;
                }
                let creds = if c.credentials.is_some() {
                    "S3_ACCESS_KEY_ID"
                } else {
                    "the AWS credential chain"
                };
                write!(f, ", credentials from {creds})")
            }
        }
    }
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.credentials.as_ref().map(|(id, _)| id))
            .field("secret_access_key", &self.credentials.as_ref().map(|_| "***"))
            .field("force_path_style", &self.force_path_style)
            .field("sse", &self.sse)
            .field("storage_class", &self.storage_class)
            .field("part_size", &self.part_size)
            .field("object_lock", &self.object_lock)
            .finish()
    }
}

/// Storage backend plus the key prefix that holds the backups.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// S3 or local directory.
    pub backend: Backend,
    /// `BACKUP_PREFIX`, without leading or trailing slashes.
    pub prefix: String,
}

impl StorageConfig {
    /// `S3_OBJECT_LOCK_DAYS`, when set (S3 only).
    pub fn lock_days(&self) -> Option<u32> {
        match &self.backend {
            Backend::S3(c) => c.object_lock.map(|l| l.days),
            Backend::Local { .. } => None,
        }
    }
}

/// Where to find `pg_dump` and `psql`.
#[derive(Debug, Clone, Default)]
pub struct ToolsConfig {
    /// `PG_DUMP_PATH`: use exactly this `pg_dump`.
    pub pg_dump: Option<PathBuf>,
    /// `PSQL_PATH`: use exactly this `psql`.
    pub psql: Option<PathBuf>,
}

/// How backups are taken and kept (the database itself is [`Settings::database_url`]). Always
/// present, with defaults, because `pgvigil status`, `prune` and `report` need it too.
#[derive(Debug, Clone)]
pub struct BackupConfig {
    /// `BACKUP_INTERVAL`: time between backups.
    pub interval: Duration,
    /// `COMPRESSION_LEVEL`: gzip level 1–9.
    pub compression_level: u32,
    /// `BACKUP_RETENTION_DAYS` and `BACKUP_MIN_KEEP`: what retention may delete.
    pub retention: RetentionPolicy,
    /// `CHECK_INTERVAL`: time between presence checks of the backups retention keeps.
    pub check_interval: Duration,
    /// `PG_DUMP_OPTIONS`: extra `pg_dump` arguments (checked, in normal form).
    pub dump_options: Vec<String>,
    /// `PG_DUMP_LOCK_WAIT_TIMEOUT`: how long pg_dump may wait for a table lock before failing
    /// (`None`: forever).
    pub lock_wait: Option<Duration>,
    /// `PG_DUMP_LOCK_WARN_AFTER`: warn once a session has waited this long behind the dump.
    pub lock_warn_after: Duration,
    /// `PG_DUMP_YIELD_AFTER`: give way once a session has waited this long (`None`: never).
    pub yield_after: Option<Duration>,
    /// `BACKUP_PRIVILEGES`: keep owners and grants in the dump (pg_dump's default), or leave
    /// them out (`--no-owner --no-privileges`).
    pub keep_privileges: bool,
    /// `TABLE_ANOMALY_DROP_PERCENT`, `TABLE_ANOMALY_MIN_ROWS`: when a table's change between two
    /// backups is an alarm.
    pub table_rules: crate::policy::anomaly::TableRules,
    /// `BACKUP_ENCRYPTION_RECIPIENTS(_FILE)`: age public keys the backups are encrypted to
    /// (empty: not encrypted). Never a private key.
    pub recipients: Vec<age::x25519::Recipient>,
    /// `BACKUP_LATEST_COPY`: keep `backup_latest.sql.gz` as a copy of the newest backup (a
    /// server-side copy after every backup).
    pub latest_copy: bool,
}

/// How backups are verified (the scratch server is [`Settings::verify_database_url`]).
#[derive(Debug, Clone)]
pub struct VerifyConfig {
    /// `VERIFY_INTERVAL`: time between verifications.
    pub interval: Duration,
    /// `VERIFY_QUERIES_FILE`: optional SQL checks run against the restored database.
    pub queries_file: Option<PathBuf>,
    /// `VERIFY_QUERIES`: the same checks given inline (at most one of the two is set).
    pub queries: Option<String>,
    /// `VERIFY_RANDOM_RATE`: probability (0–1) that a run also drills a random older backup.
    pub random_rate: f64,
    /// `VERIFY_AMCHECK`: which index checks run after the restore.
    pub amcheck: Amcheck,
    /// `VERIFY_TIMEOUT`: the most a restore and its checks may take (`None`: derived from the
    /// recorded restore times).
    pub timeout: Option<Duration>,
    /// `VERIFY_JOBS`: how many databases a service that covers several verifies at once.
    pub jobs: usize,
}

/// `VERIFY_AMCHECK`: how much `amcheck` does after a restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amcheck {
    /// No index checks.
    Off,
    /// `bt_index_check` of every B-tree index (reads each index once).
    Indexes,
    /// Also `heapallindexed`: every heap tuple must be found in each index (reads tables again).
    Heap,
}

impl Amcheck {
    /// The setting's value as written in the environment.
    pub fn as_str(self) -> &'static str {
        match self {
            Amcheck::Off => "off",
            Amcheck::Indexes => "indexes",
            Amcheck::Heap => "heap",
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where backups are stored.
    pub storage: StorageConfig,
    /// `SECONDARY_S3_BUCKET` or `SECONDARY_BACKUP_DIR`: a second destination that gets every
    /// backup too, under the same prefix.
    pub secondary: Option<StorageConfig>,
    /// Whether [`Settings::storage`] is the secondary destination's place (`pgvigil --from
    /// secondary`, or a fallback), and [`Settings::secondary`] the primary's.
    pub reading_secondary: bool,
    /// Client tool locations.
    pub tools: ToolsConfig,
    /// `DATABASE_URL`: the database to back up (required by the backup service).
    pub database_url: Option<DbUrl>,
    /// `BACKUP_DATABASES`: which databases of that server one service covers.
    pub databases: Databases,
    /// Where to tell people: webhooks, the heartbeat.
    pub notify: NotifyConfig,
    /// `BACKUP_ENCRYPTION_IDENTITY_FILE`: the age identities that open encrypted backups
    /// (verify service and CLI only; the backup service refuses to start with one).
    pub identities: Identities,
    /// `BACKUP_SIGNING_KEY_FILE`: the key the backup service signs manifests with.
    pub signing: Option<crate::infra::signing::SigningKey>,
    /// `BACKUP_TRUSTED_KEYS`: whose signatures the verify service and the CLI accept (empty:
    /// backups are not authenticated).
    pub trusted: crate::infra::signing::TrustedKeys,
    /// Schedule, compression and retention of backups.
    pub backup: BackupConfig,
    /// `VERIFY_DATABASE_URL`: the scratch server (required by the verify service).
    pub verify_database_url: Option<DbUrl>,
    /// Schedule and checks of verifications.
    pub verify: VerifyConfig,
    /// `RESTORE_DATABASE_URL`: the default target of `pgvigil restore` (keeps passwords out of argv).
    pub restore_database_url: Option<DbUrl>,
    /// libpq's environment, behind every URL above and behind one given on the command line.
    pub libpq: crate::infra::secret::LibpqEnv,
    /// `PORT`: HTTP port for `/healthz` and `/metrics`; `None` disables the endpoint.
    pub port: Option<u16>,
    /// `HEALTH_ADDRESS`, `HEALTH_TOKEN`: where the endpoint listens and who may read `/status`
    /// and `/metrics`.
    pub health: super::HealthAccess,
    /// `RETRY_BACKOFF_SECS`: the first wait after a failed run; it doubles after each further
    /// failure, up to 15 minutes (never more than the interval).
    pub retry_backoff: Duration,
    /// `LOG_FORMAT`: text or JSON logs.
    pub log_format: LogFormat,
    /// `STORAGE_PRICE_PER_GB_MONTH`: used by `pgvigil report` for the cost projection.
    pub price_per_gb_month: f64,
}
