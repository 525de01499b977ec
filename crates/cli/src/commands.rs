//! The read-mostly commands: status, list, backup-now, check, prune, report.

use anyhow::{Context, Result};
use chrono::Utc;
use pgvigil_core::anomaly;
use pgvigil_core::backup;
use pgvigil_core::catalog::{read_failure, read_verification, Catalog, VerificationRecord};
use pgvigil_core::config::{Role, Settings};
use pgvigil_core::daemon;
use pgvigil_core::keys::{BackupId, Layout};
use pgvigil_core::manifest;
use pgvigil_core::report::{self, human_bytes, human_secs, ReportInput, Verdict};
use pgvigil_core::restore::{integrity_problems, stream};
use pgvigil_core::storage::{self, DynStorage};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// Loads the configuration and connects to storage (read-only: no self-test writes).
pub async fn open(role: Role) -> Result<(Settings, DynStorage, Layout)> {
    let settings = Settings::from_env(role)?;
    let st = storage::connect(&settings.storage)
        .await
        .context("cannot use the configured storage")?;
    let layout = Layout::new(&settings.storage.prefix);
    Ok((settings, st, layout))
}

/// The newest verification record, if any.
async fn last_verification(st: &DynStorage, layout: &Layout, cat: &Catalog) -> Result<Option<VerificationRecord>> {
    match cat.verifications.last() {
        None => Ok(None),
        Some((at, id)) => Ok(Some(read_verification(st.as_ref(), layout, *at, *id).await?)),
    }
}

#[derive(Serialize)]
struct StatusJson {
    verdict: Verdict,
    problems: Vec<String>,
    newest_backup: Option<String>,
    newest_backup_age_secs: Option<i64>,
    newest_backup_size: Option<u64>,
    last_verification: Option<VerificationRecord>,
    next_backup_due_in_secs: Option<i64>,
}

/// `pgvigil status`
pub async fn status(json: bool) -> Result<u8> {
    let (settings, st, layout) = open(Role::Cli).await?;
    let cat = Catalog::load(st.as_ref(), &layout).await?;
    let now = Utc::now();
    let newest = cat.newest_complete();
    let verification = last_verification(&st, &layout, &cat).await?;
    let failure = match cat.failures.last() {
        Some((_, key)) => read_failure(st.as_ref(), key).await.ok(),
        None => None,
    };
    let (verdict, problems) = report::assess_status(
        now,
        newest,
        verification.as_ref(),
        failure.as_ref(),
        settings.backup_interval,
        settings.verify_interval,
    );
    let due = newest.map(|b| daemon::due_in(Some(b.id.0), settings.backup_interval, now).as_secs() as i64);
    if json {
        let out = StatusJson {
            verdict,
            problems,
            newest_backup: newest.map(|b| b.key.clone()),
            newest_backup_age_secs: newest.map(|b| (now - b.id.0).num_seconds()),
            newest_backup_size: newest.map(|b| b.size),
            last_verification: verification,
            next_backup_due_in_secs: due,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(verdict.exit_code());
    }
    println!("{}: {}", format!("{verdict:?}").to_uppercase(), st.describe());
    match newest {
        Some(b) => println!(
            "newest backup:       {} ({} old, {})",
            b.key,
            human_secs((now - b.id.0).num_seconds()),
            human_bytes(b.size)
        ),
        None => println!("newest backup:       none"),
    }
    match &verification {
        Some(v) => println!(
            "last verification:   {} {} ({} ago, {:.1}s)",
            if v.passed { "passed" } else { "FAILED" },
            v.key,
            human_secs((now - v.verified_at).num_seconds()),
            v.total_secs
        ),
        None => println!("last verification:   none"),
    }
    match due {
        Some(0) => println!("next backup due:     now (overdue)"),
        Some(s) => println!("next backup due in:  {}", human_secs(s)),
        None => println!("next backup due:     now (no backup yet)"),
    }
    for p in &problems {
        println!("problem:             {p}");
    }
    Ok(verdict.exit_code())
}

#[derive(Serialize)]
struct ListRow {
    key: String,
    time: chrono::DateTime<Utc>,
    size: u64,
    complete: bool,
    change_vs_median: Option<f64>,
    verified: Option<bool>,
}

/// `pgvigil list`
pub async fn list(limit: usize, json: bool) -> Result<u8> {
    let (_settings, st, layout) = open(Role::Cli).await?;
    let cat = Catalog::load(st.as_ref(), &layout).await?;
    let mut rows = Vec::new();
    for b in cat.backups.iter().take(limit) {
        let recent = cat.recent_sizes_before(b.id, 7);
        let verified = match cat.verifications.iter().rev().find(|(_, id)| *id == b.id) {
            Some((at, id)) => read_verification(st.as_ref(), &layout, *at, *id).await.ok().map(|r| r.passed),
            None => None,
        };
        rows.push(ListRow {
            key: b.key.clone(),
            time: b.id.0,
            size: b.size,
            complete: b.complete,
            change_vs_median: anomaly::change(b.size, &recent),
            verified,
        });
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    println!("{:<22} {:>10} {:>8}  {:<10} KEY", "TIME (UTC)", "SIZE", "CHANGE", "VERIFIED");
    for r in &rows {
        let verified = match (r.complete, r.verified) {
            (false, _) => "INCOMPLETE",
            (_, Some(true)) => "passed",
            (_, Some(false)) => "FAILED",
            (_, None) => "no",
        };
        let change = r.change_vs_median.map_or("-".into(), |c| format!("{:+.0}%", c * 100.0));
        println!(
            "{:<22} {:>10} {:>8}  {:<10} {}",
            r.time.format("%Y-%m-%d %H:%M:%S"),
            human_bytes(r.size),
            change,
            verified,
            r.key
        );
    }
    if rows.is_empty() {
        println!("(no backups under {})", layout.backups_prefix());
    }
    Ok(0)
}

/// `pgvigil backup-now`
pub async fn backup_now(cancel: &CancellationToken) -> Result<u8> {
    let settings = Settings::from_env(Role::Backup)?;
    let st = daemon::open_storage(&settings, false, cancel).await?;
    let ctx = daemon::backup_context(&settings, st)?;
    match backup::run_and_log(&ctx, cancel).await {
        Ok(out) => {
            println!(
                "{} ({}, {} tables, {} rows)",
                out.manifest.key,
                human_bytes(out.manifest.size),
                out.manifest.tables.len(),
                out.manifest.tables.values().sum::<u64>()
            );
            Ok(0)
        }
        Err(_) => Ok(1),
    }
}

#[derive(Serialize)]
struct CheckRow {
    key: String,
    ok: bool,
    problems: Vec<String>,
}

/// `pgvigil check --last N`
pub async fn check(last: usize, json: bool, cancel: &CancellationToken) -> Result<u8> {
    let (_settings, st, layout) = open(Role::Cli).await?;
    let cat = Catalog::load(st.as_ref(), &layout).await?;
    let mut rows = Vec::new();
    for b in cat.backups.iter().take(last) {
        let m = manifest::read(st.as_ref(), &layout, b.id).await?;
        let key = layout.backup(b.id);
        let progress = crate::progress::show(format!("checking {key}"), b.size);
        let (report, _) = stream(st.as_ref(), &key, None, m.as_ref(), progress.counter(), cancel)
            .await
            .with_context(|| format!("could not read {key}"))?;
        drop(progress);
        let problems = integrity_problems(m.as_ref(), &report);
        if !json {
            println!(
                "{:<10} {}{}",
                if problems.is_empty() { "OK" } else { "CORRUPTED" },
                b.key,
                if problems.is_empty() {
                    String::new()
                } else {
                    format!(": {}", problems.join("; "))
                }
            );
        }
        rows.push(CheckRow {
            key: b.key.clone(),
            ok: problems.is_empty(),
            problems,
        });
    }
    let newest_good = rows.iter().find(|r| r.ok).map(|r| r.key.clone());
    let newest_bad = rows.first().is_some_and(|r| !r.ok);
    if json {
        println!("{}", serde_json::json!({ "backups": rows, "newest_good": newest_good }));
    } else if rows.is_empty() {
        println!("(no backups under {})", layout.backups_prefix());
    } else {
        println!("newest good backup: {}", newest_good.as_deref().unwrap_or("NONE of those checked"));
    }
    Ok(u8::from(newest_bad || rows.is_empty()))
}

/// `pgvigil prune`
pub async fn prune(dry_run: bool) -> Result<u8> {
    let (settings, st, layout) = open(Role::Cli).await?;
    let plan = backup::prune_with(st.as_ref(), &layout, settings.retention, true).await?;
    println!(
        "retention: delete backups older than {} days, keep at least {} complete backups and always the newest",
        settings.retention.retention_days, settings.retention.min_keep
    );
    if plan.is_empty() {
        println!("nothing to delete");
        return Ok(0);
    }
    for id in &plan {
        println!("{} {}", if dry_run { "would delete" } else { "deleting" }, layout.backup(*id));
    }
    if !dry_run {
        let done = backup::prune_with(st.as_ref(), &layout, settings.retention, false).await?;
        println!("deleted {} backups (and their manifests)", done.len());
    }
    Ok(0)
}

/// `pgvigil report`
pub async fn report(days: u32, json: bool) -> Result<u8> {
    let (settings, st, layout) = open(Role::Cli).await?;
    let cat = Catalog::load(st.as_ref(), &layout).await?;
    let now = Utc::now();
    let since = BackupId::at(now - chrono::Duration::days(i64::from(days)));
    let mut verifications = Vec::new();
    for (at, id) in cat.verifications.iter().filter(|(at, _)| *at >= since) {
        verifications.push(read_verification(st.as_ref(), &layout, *at, *id).await?);
    }
    let mut failures = Vec::new();
    for (_, key) in cat.failures.iter().filter(|(at, _)| *at >= since) {
        failures.push(read_failure(st.as_ref(), key).await?);
    }
    let mut backup_durations = Vec::new();
    for b in cat.complete().filter(|b| b.id >= since) {
        if let Some(m) = manifest::read(st.as_ref(), &layout, b.id).await? {
            backup_durations.push(m.duration_secs());
        }
    }
    let mut objects = st.list(&layout.backups_prefix()).await?;
    objects.extend(st.list(&format!("{}/{}/", pgvigil_core::keys::META_ROOT, layout.prefix())).await?);
    let input = ReportInput {
        now,
        days,
        backups: cat.backups.clone(),
        backup_durations,
        verifications,
        failures,
        total_bytes: objects.iter().map(|o| o.size).sum(),
        object_count: objects.len(),
        retention_days: settings.retention.retention_days,
        price_per_gb_month: settings.price_per_gb_month,
    };
    let r = report::compute(&input);
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", report::render(&r));
    }
    Ok(0)
}
