//! One backup: `pg_dump` → parallel gzip → storage ([`produce`]), with the manifest written only
//! after the upload completed, then `backup_latest.sql.gz`, retention ([`prune`]) and size checks.
//! [`log`] wraps a run with the operator-facing log lines and the failure record; [`presence`]
//! checks that the backups retention keeps are still in storage as their manifests say.
//!
//! The upload is published only when `pg_dump` exited 0, its output ended with the closing line,
//! and every block was compressed. Anything else aborts the upload: no partial object, no
//! manifest, `backup_latest.sql.gz` untouched.

mod catchup;
mod error;
mod fanout;
mod layout;
pub mod lease;
mod log;
mod open;
mod presence;
mod produce;
mod prune;
mod run;
mod watch;

pub use catchup::{catch_up, plan as catch_up_plan, record_owed, Gap};
pub use error::{check_dump_encoding, BackupError, Incomplete};
pub use fanout::STALL;
pub use log::run_and_log;
pub use open::{open_destinations, Destinations};
pub use presence::{absent, check_presence, summary, Absent, Presence};
pub use prune::prune_with;

use crate::infra::config::{BackupConfig, Settings, ToolsConfig};
use crate::infra::pg::{dump, globals, PgError};
use crate::infra::secret::DbUrl;
use crate::infra::storage::{DynStorage, Key, Storage, StorageError};
use crate::policy::anomaly::{self, Anomaly, TableAnomaly};
use crate::policy::retention::Plan;
use crate::records::holds::{self, Hold};
use crate::records::keys::{BackupId, Layout};
use crate::records::manifest::{self, Manifest, ObjectRef};
use chrono::Utc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Largest difference between this machine's clock and the storage server's at which retention,
/// which decides by age, still runs.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// Everything a backup needs.
#[derive(Debug, Clone)]
pub struct BackupContext {
    /// Where backups go.
    pub storage: DynStorage,
    /// Key names under the prefix.
    pub layout: Layout,
    /// `DATABASE_URL`: the database to back up.
    pub database_url: DbUrl,
    /// Interval, compression, retention, dump options.
    pub cfg: BackupConfig,
    /// Which client tools to use.
    pub tools: ToolsConfig,
    /// Smallest part size for the next upload: raised when one outgrew its parts, so that the next
    /// attempt does not fail the same way.
    pub part_size_floor: Arc<AtomicU64>,
    /// `S3_OBJECT_LOCK_DAYS`: backups and manifests are locked this many days.
    pub lock_days: Option<u32>,
    /// `BACKUP_SIGNING_KEY_FILE`: every manifest is signed with it.
    pub signing: Option<crate::infra::signing::SigningKey>,
    /// Backups in a row that gave way to sessions waiting behind them (`PG_DUMP_YIELD_AFTER`).
    pub yields: Arc<AtomicU32>,
    /// `SECONDARY_*`: the second destination, which gets every backup too.
    pub secondary: Option<Secondary>,
}

/// The second destination of a backup context.
#[derive(Debug, Clone)]
pub struct Secondary {
    /// Its store.
    pub storage: DynStorage,
    /// Whether the roles are swapped for this run: the primary could not be reached, so
    /// [`BackupContext::storage`] is the secondary store and this one the primary.
    pub swapped: bool,
    /// How long one destination may take no data while the other does ([`STALL`]).
    pub stall: std::time::Duration,
}

/// One destination's name in messages, logs and metrics.
pub fn destination_name(secondary: bool) -> &'static str {
    if secondary {
        "secondary"
    } else {
        "primary"
    }
}

/// After giving way this many times in a row, a backup proceeds whoever waits: backups must
/// happen.
pub const MAX_YIELDS: u32 = 3;

/// What the lock watcher of this backup watches for.
fn watch_plan(ctx: &BackupContext, plan: &dump::DumpPlan, app_name: String) -> watch::Watch {
    let yields = ctx.yields.load(Ordering::Relaxed);
    if ctx.cfg.yield_after.is_some() && yields >= MAX_YIELDS {
        warn!("the last {yields} backups gave way to sessions waiting behind them (PG_DUMP_YIELD_AFTER); this one proceeds even if sessions wait");
    }
    watch::Watch {
        url: ctx.database_url.clone(),
        app_name,
        server_major: plan.server.major,
        warn_after: ctx.cfg.lock_warn_after,
        yield_after: ctx.cfg.yield_after.filter(|_| yields < MAX_YIELDS),
    }
}

impl BackupContext {
    /// The context for `database_url` (`DATABASE_URL`) and the rest of `settings`.
    pub fn new(settings: &Settings, database_url: DbUrl, storage: DynStorage) -> Self {
        Self {
            storage,
            layout: Layout::new(&settings.storage.prefix),
            database_url,
            cfg: settings.backup.clone(),
            tools: settings.tools.clone(),
            part_size_floor: Arc::default(),
            lock_days: settings.storage.lock_days(),
            signing: settings.signing.clone(),
            yields: Arc::default(),
            secondary: None,
        }
    }

    /// The same context with a second destination.
    #[must_use]
    pub fn with_secondary(self, storage: DynStorage) -> Self {
        Self {
            secondary: Some(Secondary {
                storage,
                swapped: false,
                stall: STALL,
            }),
            ..self
        }
    }

    /// How long one destination may make no progress while the other does ([`STALL`] unless
    /// set otherwise).
    pub(crate) fn stall(&self) -> std::time::Duration {
        self.secondary.as_ref().map_or(STALL, |s| s.stall)
    }

    /// `S3_OBJECT_LOCK_DAYS` where it applies: the primary destination only.
    pub(crate) fn lock_days_in(&self, destination: &str) -> Option<u32> {
        self.lock_days.filter(|_| destination == destination_name(false))
    }

    /// Every destination of this run, the lead first, each with its name.
    pub fn destinations(&self) -> Vec<(&'static str, &DynStorage)> {
        let swapped = self.secondary.as_ref().is_some_and(|s| s.swapped);
        let mut out = vec![(destination_name(swapped), &self.storage)];
        if let Some(s) = &self.secondary {
            out.push((destination_name(!swapped), &s.storage));
        }
        out
    }

    /// The context with the two destinations' roles swapped: the secondary leads (holds the
    /// lease, and is where the backup must be published) while the primary cannot be reached.
    fn swapped(&self) -> Option<Self> {
        let s = self.secondary.as_ref()?;
        Some(Self {
            storage: s.storage.clone(),
            secondary: Some(Secondary {
                storage: self.storage.clone(),
                swapped: !s.swapped,
                stall: s.stall,
            }),
            ..self.clone()
        })
    }
}

/// A destination that did not get this backup, and why; catch-up copies it there later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missed {
    /// `primary` or `secondary`.
    pub destination: &'static str,
    /// Why, in plain words.
    pub reason: String,
}

/// A finished backup.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    /// Identity.
    pub id: BackupId,
    /// The manifest as written.
    pub manifest: Manifest,
    /// Size warning, if any.
    pub anomaly: Option<Anomaly>,
    /// Tables that vanished, emptied or lost most of their rows since the previous backup, and
    /// that backup (now held until acknowledged).
    pub table_anomalies: Option<(BackupId, Vec<TableAnomaly>)>,
    /// What retention did afterwards (deleted, and kept beyond the bare policy), in the lead
    /// destination.
    pub retention: Plan,
    /// Destinations that did not get this backup (with a second destination configured).
    pub missed: Vec<Missed>,
    /// Backups copied to a destination that had missed them, per destination.
    pub caught_up: Vec<(&'static str, Gap)>,
}

/// Takes one backup under this prefix's lease. The same code path serves the service loop,
/// `--once` and `pgvigil backup-now`.
///
/// # Errors
/// [`BackupError`]; in every case nothing partial is published.
pub async fn run_once(ctx: &BackupContext, cancel: &CancellationToken) -> Result<BackupOutcome, BackupError> {
    // The run stops when shutdown comes or when the lease is lost.
    let run = cancel.child_token();
    let acquired = match ctx.secondary.as_ref() {
        // A primary that hangs must not hold the backup up when there is somewhere else to go.
        Some(s) => tokio::time::timeout(s.stall, lease::acquire(&ctx.storage, &ctx.layout, run.clone(), cancel))
            .await
            .unwrap_or_else(|_| {
                Err(StorageError::other(
                    format!("{}: no answer within {} s", ctx.storage.describe(), s.stall.as_secs()),
                    true,
                ))
            }),
        None => lease::acquire(&ctx.storage, &ctx.layout, run.clone(), cancel).await,
    };
    let (ctx, held) = match acquired {
        // Only an outage: a refusal is a configuration to fix, not a reason to write elsewhere.
        Err(e) if e.is_retryable() && ctx.secondary.is_some() => {
            // The primary is down: the backup goes to the secondary, under its lease (every
            // backup service of this prefix makes the same choice), and is copied back later.
            let other = ctx.swapped().unwrap_or_else(|| ctx.clone());
            let names: Vec<&str> = other.destinations().iter().map(|(n, _)| *n).collect();
            let (up, down) = (names[0], names.get(1).copied().unwrap_or("other"));
            warn!(
                error = %e,
                "the {down} destination cannot be reached; this backup goes to the {up} destination alone and is copied to the {down} once it is back"
            );
            let held = lease::acquire(&other.storage, &other.layout, run.clone(), cancel).await?;
            (std::borrow::Cow::Owned(other), held)
        }
        other => (std::borrow::Cow::Borrowed(ctx), other?),
    };
    let lease = held?;
    let result = run::leased(&ctx, &lease, &run).await;
    lease.release().await;
    match result {
        Err(BackupError::Cancelled) if !cancel.is_cancelled() => Err(BackupError::LeaseLost),
        other => other,
    }
}

/// Saves the cluster's roles next to the backup. Best effort: a server that will not show them
/// still gets its backup, and the log says what is missing.
async fn save_globals(
    ctx: &BackupContext,
    plan: &dump::DumpPlan,
    id: BackupId,
    stores: &[&dyn Storage],
    cancel: &CancellationToken,
) -> Option<ObjectRef> {
    use sha2::Digest;
    let saved = async {
        let tool = globals::find(plan.server, ctx.tools.pg_dump.as_deref()).await?;
        let sql = globals::dump(&tool, &ctx.database_url, cancel).await?;
        Ok::<_, PgError>(sql)
    }
    .await;
    let sql = match saved {
        Ok(sql) => sql,
        Err(e) => {
            warn!(error = %e, "the roles could not be saved with this backup (a restore elsewhere must create them by hand)");
            return None;
        }
    };
    let key = ctx.layout.globals(id);
    let r = ObjectRef {
        key: key.to_string(),
        size: sql.len() as u64,
        sha256: hex::encode(sha2::Sha256::digest(&sql)),
    };
    let sql = bytes::Bytes::from(sql);
    let mut stored = false;
    for st in stores {
        match crate::infra::storage::put_bytes(*st, &key, sql.clone(), cancel).await {
            Ok(()) => stored = true,
            Err(e) => warn!(error = %e, "the roles could not be stored with this backup in {}", st.describe()),
        }
    }
    stored.then_some(r)
}

/// Compares the new backup's row counts with the previous backup's; when a table vanished, emptied
/// or lost most of its rows, puts a hold on the previous backup (the data as it was). Best effort:
/// a previous manifest that cannot be read, or a hold that cannot be written, is logged.
async fn hold_before_table_anomalies(
    ctx: &BackupContext,
    st: &dyn Storage,
    previous: Option<BackupId>,
    manifest: &Manifest,
    cancel: &CancellationToken,
) -> Option<(BackupId, Vec<TableAnomaly>)> {
    let previous = previous?;
    let before = match manifest::read(st, &ctx.layout, previous, cancel).await {
        Ok(Some(m)) => m.tables,
        Ok(None) => return None,
        Err(e) => {
            warn!(error = %e, "could not read the previous backup's manifest to compare row counts");
            return None;
        }
    };
    let found = anomaly::table_anomalies(&before, &manifest.tables, ctx.cfg.table_rules);
    if found.is_empty() {
        return None;
    }
    let hold = Hold {
        backup: ctx.layout.backup(previous).to_string(),
        seen_in: manifest.key.clone(),
        reasons: found.iter().map(|a| a.message.clone()).collect(),
        since: Utc::now(),
    };
    if let Err(e) = holds::put(st, &ctx.layout, previous, &hold, cancel).await {
        warn!(error = %e, "could not put a hold on {}; retention may delete it", previous.file_name());
    }
    Some((previous, found))
}

/// Removes an uploaded object that did not become a backup. If the store refuses, the object
/// stays without a manifest — pgvigil never treats it as a backup, but a stock-tools restore that
/// picks the newest object would — so that is logged as an error naming it.
async fn take_back(st: &dyn Storage, key: &Key, cancel: &CancellationToken) {
    if let Err(e) = st.delete_many(std::slice::from_ref(key), cancel).await {
        tracing::error!(
            key = %key,
            error = %e,
            "an object that is not a complete backup could not be removed; delete it by hand (pgvigil ignores it: it has no manifest)"
        );
    }
}

/// Keeps `backup_latest.sql.gz` (`.age` when encrypted) a copy of the newest backup, or removes
/// it when `BACKUP_LATEST_COPY=false` (a stale copy would be a lie). A failure is a warning: the
/// backup itself is complete.
async fn update_latest(ctx: &BackupContext, st: &dyn Storage, key: &Key, sealed: bool, cancel: &CancellationToken) {
    // The copy of the other form is older than this backup (and, when encryption was just turned
    // on, readable by anyone); with copies off, or when the copy failed, so is any copy.
    let mut stale: Vec<Key> = vec![ctx.layout.latest_of(!sealed)];
    let latest = ctx.layout.latest_of(sealed);
    if ctx.cfg.latest_copy {
        let started = std::time::Instant::now();
        match st.copy(key, &latest, cancel).await {
            Ok(()) => info!(
                secs = format!("{:.1}", started.elapsed().as_secs_f64()),
                "updated {latest} (server-side copy)"
            ),
            Err(e) => {
                warn!(key = %key, error = %e, "could not update {latest}; the backup itself is complete, and the older copy is removed rather than left stale");
                stale.push(latest);
            }
        }
    } else {
        stale.push(latest);
    }
    // Only names that exist: a versioned bucket gets no delete marker for one that never did.
    let mut present = Vec::new();
    for k in stale {
        if matches!(st.head(&k, cancel).await, Ok(Some(_))) {
            present.push(k);
        }
    }
    if !present.is_empty() {
        if let Err(e) = st.delete_many(&present, cancel).await {
            warn!(error = %e, "could not delete {}, a copy of an older backup", present[0]);
        }
    }
}
