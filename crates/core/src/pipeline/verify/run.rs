//! One verification, start to end: read the manifest, refuse a verify server older than the
//! source, find a psql able to read the dump, create (and lock) the scratch database, restore into
//! it (committing only an intact object), run the checks, drop the scratch database whatever
//! happened, and turn it all into a record — or into [`CouldNotRun`] when the environment, not the
//! backup, failed.

use super::checks::checks;
use super::queries::split_statements;
use super::{scratch_name, CouldNotRun, VerifyContext, VerifyError};
use crate::infra::pg::psql::find_psql;
use crate::infra::pg::{self, PgVersion, Tool};
use crate::infra::secret::DbUrl;
use crate::infra::storage::Key;
use crate::pipeline::restore::{judge, Judgement, RestoreError, StreamError, Target};
use crate::pipeline::stages::seal::{self, OpenError};
use crate::records::history::{Cause, Evidence, Reason, VerificationRecord, Versions};
use crate::records::keys::{BackupId, SEALED};
use crate::records::manifest::{self, Manifest};
use chrono::Utc;
use sqlx::postgres::PgConnection;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Drops scratch databases left behind by a crash: only those with the scratch prefix that no
/// running verifier holds.
///
/// # Errors
/// When the verify server cannot be reached.
pub async fn cleanup_leftovers(ctx: &VerifyContext) -> Result<Vec<String>, VerifyError> {
    let url = &ctx.database_url;
    let mut conn = pg::connect(url).await?;
    let dropped = pg::scratch::drop_abandoned(&mut conn, url).await;
    pg::close(conn).await;
    Ok(dropped?)
}

/// How a verdict on a backup that no trusted backup service made begins.
pub const UNTRUSTED: &str = "not made by a trusted backup service";

/// Outcome of the restore and checks, before it becomes a record.
#[derive(Default)]
struct Verdict {
    reasons: Vec<Reason>,
    restore_secs: f64,
    checks_secs: f64,
    restored_bytes: Option<u64>,
    evidence: Evidence,
}

impl Verdict {
    fn failed(reasons: Vec<Reason>, restore_secs: f64, evidence: Evidence) -> Self {
        Self {
            reasons,
            restore_secs,
            evidence,
            ..Self::default()
        }
    }
}

/// The major version in a version string such as `15.18` or `18beta1`.
fn major(version: &str) -> u32 {
    pg::parse_version(&format!("x) {version}")).map_or(0, |v| v.major)
}

/// What a run needs besides the context.
pub(super) struct Run<'a> {
    pub(super) ctx: &'a VerifyContext,
    pub(super) key: &'a Key,
    pub(super) manifest: &'a Manifest,
    psql: &'a Tool,
    queries: &'a [String],
    /// The scratch database.
    pub(super) scratch: &'a str,
    privileges: super::privileges::Plan,
    /// The most the restore and the checks may take together.
    pub(super) deadline: std::time::Duration,
    /// Whether running out of time is the backup's fault (`VERIFY_TIMEOUT` set, or earlier
    /// verifications show how long this takes) or only says the default was too short.
    blames_backup: bool,
}

/// Why a verification that ran out of time failed. A backup whose statements keep the server busy
/// that long is suspect; a backup that simply grew needs a larger `VERIFY_TIMEOUT`.
fn timed_out(what: &str, deadline: std::time::Duration) -> String {
    format!(
        "{what} did not finish within {} s (VERIFY_TIMEOUT, or four times the recent verifications' time): pgvigil stopped it; a statement of the backup may be keeping the server busy — if the backups simply grew, raise VERIFY_TIMEOUT",
        deadline.as_secs()
    )
}

/// Restores into the (already created) scratch database and runs the checks.
async fn restore_and_check(
    run: &mut Run<'_>,
    scratch_url: &DbUrl,
    mut evidence: Evidence,
    cancel: &CancellationToken,
) -> Result<Verdict, VerifyError> {
    let t0 = Instant::now();
    let target = Target {
        psql: run.psql,
        url: scratch_url,
        preamble: "",
        strip: run.privileges.strip,
        identities: &run.ctx.identities,
        deadline: Some(run.deadline),
    };
    let (attempt, deciding, allowed) = match super::restore::restore(run, &target, &mut evidence, cancel).await {
        Ok(a) => a,
        Err(RestoreError::TimedOut(d)) if run.blames_backup => {
            return Ok(Verdict::failed(
                vec![Reason::new(Cause::Deadline, timed_out("the restore", d))],
                t0.elapsed().as_secs_f64(),
                evidence,
            ))
        }
        Err(RestoreError::TimedOut(d)) => return Err(CouldNotRun::Deadline(d).into()),
        Err(RestoreError::Stream(StreamError::Cancelled)) => return Err(VerifyError::Cancelled),
        Err(RestoreError::Stream(StreamError::Storage(e))) => return Err(e.into()),
        Err(RestoreError::Stream(StreamError::Key(why))) => return Err(CouldNotRun::Key(why).into()),
        Err(RestoreError::Pg(e)) => return Err(e.into()),
    };
    let restore_secs = t0.elapsed().as_secs_f64();
    run.privileges.evidence.statements_left_out = attempt.report.scan.privilege_lines_removed;
    evidence.privileges = run.privileges.evidence.clone();
    evidence.subscriptions_left_out = attempt.report.scan.subscription_lines_removed;
    match judge(attempt, scratch_url).await {
        Judgement::Committed => {}
        Judgement::Backup(reasons) => {
            let reasons = reasons.into_iter().map(|r| Reason::new(Cause::Restore, r)).collect();
            return Ok(Verdict::failed(reasons, restore_secs, evidence));
        }
        Judgement::EndedEarly(why) => return Ok(Verdict::failed(vec![Reason::new(Cause::Restore, why)], restore_secs, evidence)),
        Judgement::Environment(fault) => return Err(CouldNotRun::Restore(fault).into()),
    }
    let t1 = Instant::now();
    // The checks read what the backup defined (a policy or a view may call its functions): they
    // share the deadline. Past it the scratch database is dropped with whatever runs in it.
    let left = allowed.saturating_sub(deciding.elapsed());
    let mut conn = pg::connect(scratch_url).await?;
    let checked = tokio::select! {
        r = checks(&mut conn, scratch_url, run.manifest, run.queries, run.ctx.cfg.amcheck, &mut evidence) => r,
        () = cancel.cancelled() => return Err(VerifyError::Cancelled),
        () = tokio::time::sleep(left) => {
            if !run.blames_backup {
                return Err(CouldNotRun::Deadline(allowed).into());
            }
            let why = timed_out("the checks after the restore", allowed);
            return Ok(Verdict::failed(vec![Reason::new(Cause::Deadline, why)], restore_secs, evidence));
        }
    };
    let privileges = super::privileges::check(&mut conn, scratch_url, run.manifest, &mut run.privileges).await;
    pg::close(conn).await;
    let (mut reasons, restored_bytes) = checked?;
    let privilege_reasons = privileges.map_err(|source| CouldNotRun::Check {
        what: "comparing owners and grants with the dump's".into(),
        source,
    })?;
    reasons.extend(privilege_reasons.into_iter().map(|r| Reason::new(Cause::Privileges, r)));
    evidence.privileges = run.privileges.evidence.clone();
    if let Some(why) = &evidence.indexes.not_run {
        info!("index checks skipped: {why}");
    }
    Ok(Verdict {
        reasons,
        restore_secs,
        checks_secs: t1.elapsed().as_secs_f64(),
        restored_bytes,
        evidence,
    })
}

/// Verifies one backup. A returned record is a verdict (pass or fail, with reasons and evidence);
/// an error means the verification could not run.
///
/// # Errors
/// [`VerifyError::CouldNotRun`] for infrastructure problems, `Cancelled` on shutdown.
pub async fn verify_backup(ctx: &VerifyContext, id: BackupId, cancel: &CancellationToken) -> Result<VerificationRecord, VerifyError> {
    let started = Instant::now();
    let verified_at = Utc::now();
    let (m, trust, unreadable) = match manifest::read_checked(ctx.storage.as_ref(), &ctx.layout, id, &ctx.trusted, cancel).await? {
        manifest::Checked::Found(m, trust) => (Some(*m), trust, None),
        manifest::Checked::Unreadable(why) => (None, manifest::Trust::NotChecked, Some(why)),
        manifest::Checked::Missing => (None, manifest::Trust::NotChecked, None),
    };
    // The manifest names the object (encrypted or not); without one, whichever form exists.
    let [plain, sealed] = ctx.layout.objects(id);
    let key = match &m {
        Some(m) if m.encryption.is_some() => sealed,
        Some(_) => plain,
        None if ctx.storage.head(&sealed, cancel).await?.is_some() => sealed,
        None => plain,
    };
    let failed = |cause, why: String| Verdict::failed(vec![Reason::new(cause, why)], 0.0, Evidence::default());
    let (verdict, object_bytes) = match (m, &trust) {
        // Retention may have deleted it since it was chosen: that is not a bad backup.
        (None, _) if unreadable.is_none() && ctx.storage.head(&key, cancel).await?.is_none() => {
            return Err(VerifyError::Vanished(key.to_string()))
        }
        (None, _) => (
            failed(
                Cause::Manifest,
                unreadable.unwrap_or_else(|| "the manifest is missing: the backup did not complete or was not written by pgvigil".into()),
            ),
            None,
        ),
        // Not made by a trusted backup service: nothing of it is restored.
        (Some(m), manifest::Trust::Untrusted(why)) => (failed(Cause::Untrusted, format!("{UNTRUSTED}: {why}")), Some(m.size)),
        (Some(m), _) => {
            let mut verdict = verify_with_manifest(ctx, id, &key, &m, cancel).await?;
            if let manifest::Trust::Signed(by) = &trust {
                verdict.evidence.signed_by = Some(by.clone());
            }
            (verdict, Some(m.size))
        }
    };
    // Retention deletes the object, then its manifest with its roles and signature: a backup
    // that failed because these went missing under the verification is gone, not bad. (An object
    // lost while its manifest stays is still a failure.)
    if !verdict.reasons.is_empty()
        && matches!(ctx.storage.head(&key, cancel).await, Ok(None))
        && matches!(ctx.storage.head(&ctx.layout.manifest(id), cancel).await, Ok(None))
    {
        return Err(VerifyError::Vanished(key.to_string()));
    }
    Ok(VerificationRecord {
        key: key.to_string(),
        verified_at,
        passed: verdict.reasons.is_empty(),
        untrusted: matches!(trust, manifest::Trust::Untrusted(_)),
        causes: verdict.reasons.iter().map(|r| r.cause).collect(),
        reasons: verdict.reasons.into_iter().map(|r| r.text).collect(),
        restore_secs: verdict.restore_secs,
        checks_secs: verdict.checks_secs,
        total_secs: started.elapsed().as_secs_f64(),
        restored_bytes: verdict.restored_bytes,
        tables_checked: verdict.evidence.tables.iter().filter(|t| t.restored_rows.is_some()).count(),
        object_bytes,
        backup_time: Some(id.0),
        rpo_secs: Some((verified_at - id.0).num_seconds()),
        evidence: verdict.evidence,
    })
}

/// An encrypted backup: stops before anything is created when no identity held opens it (the key
/// file's fault, not the backup's), and warns when an identity held is not among its recipients.
fn check_identity(ctx: &VerifyContext, key: &Key, m: &Manifest) -> Result<(), VerifyError> {
    if !key.as_str().ends_with(SEALED) {
        return Ok(());
    }
    let held = seal::public_keys(&ctx.identities.0);
    if held.is_empty() {
        return Err(CouldNotRun::Key(OpenError::NoIdentity.to_string()).into());
    }
    let Some(enc) = &m.encryption else { return Ok(()) };
    if !enc.recipients.iter().any(|r| held.contains(r)) {
        return Err(CouldNotRun::Key(OpenError::WrongIdentity { held: held.join(", ") }.to_string()).into());
    }
    // The first identity in the file is the current key: a backup it cannot open needs an older
    // one kept (during a rotation, expected for backups taken before it).
    if !enc.recipients.contains(&held[0]) {
        warn!(
            recipients = %enc.recipients.join(", "),
            "{key} is not encrypted to the current identity {} (the first in BACKUP_ENCRYPTION_IDENTITY_FILE): keep the identity it was encrypted to until the backup is gone (docs/runbooks.md, rotating the encryption key)",
            held[0]
        );
    }
    Ok(())
}

async fn verify_with_manifest(
    ctx: &VerifyContext,
    id: BackupId,
    key: &Key,
    m: &Manifest,
    cancel: &CancellationToken,
) -> Result<Verdict, VerifyError> {
    check_identity(ctx, key, m)?;
    let admin_url = &ctx.database_url;
    let mut admin = pg::connect(admin_url).await?;
    let verify_server = match verify_server(&mut admin, admin_url, m).await {
        Ok(v) => v,
        Err(e) => {
            pg::close(admin).await;
            return Err(e);
        }
    };
    let psql = find_psql(ctx.tools.psql.as_deref(), major(&m.pg_dump_version)).await?;
    if let Some(why) = crate::infra::pg::psql::pg_dump_warning(&m.pg_dump_version) {
        warn!("{key} was {why}");
    }
    let queries = user_queries(ctx)?;
    let evidence = Evidence {
        versions: Versions {
            source_server: m.server_version.clone(),
            pg_dump: m.pg_dump_version.clone(),
            verify_server: Some(verify_server.to_string()),
            psql: Some(psql.version.to_string()),
        },
        ..Evidence::default()
    };
    let name = scratch_name(id, rand::random());
    if !pg::scratch::lock(&mut admin, admin_url, &name).await? {
        return Err(CouldNotRun::ScratchInUse(name).into());
    }
    if let Err(source) = pg::scratch::create(&mut admin, admin_url, &name).await {
        return Err(CouldNotRun::Scratch { name, source }.into());
    }
    let scratch_url = admin_url.with_database(&name).expect("scratch names are plain");
    let privileges = match super::privileges::prepare(&mut admin, admin_url, ctx.storage.as_ref(), m, cancel).await {
        Ok(Ok(plan)) => plan,
        Ok(Err(reason)) => {
            drop_scratch(Some(admin), admin_url, &name).await;
            return Ok(Verdict::failed(vec![Reason::new(Cause::Privileges, reason)], 0.0, evidence));
        }
        Err(e) => {
            drop_scratch(Some(admin), admin_url, &name).await;
            return Err(e);
        }
    };
    let (deadline, blames_backup) = match deadline(ctx, cancel).await {
        Ok(d) => d,
        Err(e) => {
            drop_scratch(Some(admin), admin_url, &name).await;
            return Err(e);
        }
    };
    let mut run = Run {
        ctx,
        key,
        manifest: m,
        psql: &psql,
        queries: &queries,
        scratch: &name,
        privileges,
        deadline,
        blames_backup,
    };
    // From here on the scratch database exists: whatever happens, drop it. Meanwhile its lock is
    // kept held, so that no other verifier's clean-up takes it for one left by a crash.
    let work = restore_and_check(&mut run, &scratch_url, evidence, cancel);
    let (outcome, admin) = pg::scratch::holding(admin, admin_url, &name, work).await;
    drop_scratch(admin, admin_url, &name).await;
    outcome
}

/// The verify server's version, once scratch databases that a crash or a lost connection left
/// behind are dropped (they would fill the server); a server older than the backup's source cannot
/// restore it, which is the environment's fault.
async fn verify_server(admin: &mut PgConnection, admin_url: &DbUrl, m: &Manifest) -> Result<PgVersion, VerifyError> {
    match pg::scratch::drop_abandoned(admin, admin_url).await {
        Ok(dropped) if !dropped.is_empty() => info!(databases = %dropped.join(", "), "dropped scratch databases left by an earlier run"),
        Ok(_) => {}
        Err(e) => warn!(error = %e, "could not look for scratch databases left by an earlier run"),
    }
    let verify_server: PgVersion = pg::server_version(admin, admin_url).await?;
    let source_major = major(&m.server_version);
    if verify_server.major < source_major {
        return Err(CouldNotRun::VerifyServerTooOld {
            verify: verify_server.to_string(),
            source_server: m.server_version.clone(),
            source_major,
        }
        .into());
    }
    Ok(verify_server)
}

/// The operator's checks (`VERIFY_QUERIES` or `VERIFY_QUERIES_FILE`), one statement each.
fn user_queries(ctx: &VerifyContext) -> Result<Vec<String>, VerifyError> {
    Ok(match (&ctx.cfg.queries, &ctx.cfg.queries_file) {
        (Some(text), _) => split_statements(text),
        (None, Some(f)) => {
            split_statements(&std::fs::read_to_string(f).map_err(|source| CouldNotRun::QueriesFile { path: f.clone(), source })?)
        }
        (None, None) => Vec::new(),
    })
}

/// How long the restore and its checks may take, and whether running out of time blames the
/// backup: `VERIFY_TIMEOUT`, or one derived from recent verifications (with none to go by, running
/// out of time says nothing about the backup).
async fn deadline(ctx: &VerifyContext, cancel: &CancellationToken) -> Result<(Duration, bool), VerifyError> {
    if let Some(d) = ctx.cfg.timeout {
        return Ok((d, true));
    }
    let cat = crate::records::catalog::Catalog::load(ctx.storage.as_ref(), &ctx.layout, cancel).await?;
    let recorded = crate::records::history::recent_passed_restore_secs(ctx.storage.as_ref(), &cat, 5, cancel).await;
    let usable = recorded.iter().any(|s| s.is_finite() && *s > 0.0);
    Ok((crate::pipeline::restore::default_deadline(&recorded), usable))
}

/// Drops a run's scratch database. The administration connection sat idle through the whole
/// restore and may have been cut (a proxy, `idle_session_timeout`): then a fresh one is used.
async fn drop_scratch(admin: Option<PgConnection>, admin_url: &DbUrl, name: &str) {
    let mut admin = admin;
    let first = match admin.as_mut() {
        Some(conn) => pg::scratch::drop(conn, admin_url, name).await,
        None => Err(pg::PgError::Rejected("no session".into())),
    };
    let dropped = match first {
        Ok(()) => Ok(()),
        Err(_) => match pg::connect(admin_url).await {
            Ok(mut fresh) => {
                let r = pg::scratch::drop(&mut fresh, admin_url, name).await;
                pg::close(fresh).await;
                r
            }
            Err(e) => Err(e),
        },
    };
    if let Err(e) = dropped {
        warn!(error = %e, database = name, "scratch database not dropped; the next verification drops it");
    }
    if let Some(admin) = admin {
        pg::close(admin).await;
    }
}
