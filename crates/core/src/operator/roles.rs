//! Ownership, grants and roles for `pgvigil restore`. A backup keeps its tables' owners and grants,
//! and the roles they name were saved next to it. Restoring where those roles are missing, pgvigil
//! creates them first — inside the restore's own transaction, so a failed restore leaves no role
//! behind — with the attributes they had and no password (none is ever saved). With
//! `--no-privileges` the ownership and privilege statements are left out instead and everything
//! belongs to the restoring role.

use super::OperatorError;
use crate::infra::pg::{self, globals};
use crate::infra::secret::DbUrl;
use crate::infra::storage::{get_bytes, Key, Storage};
use crate::pipeline::stages::dumpscan::Strip;
use crate::records::manifest::Manifest;
use sha2::Digest;
use std::collections::BTreeSet;
use tokio_util::sync::CancellationToken;

/// What a restore does about ownership and grants.
#[derive(Debug, Clone)]
pub(super) struct RolePlan {
    /// SQL to run first, inside the restore's transaction (creating missing roles).
    pub sql: String,
    /// What the restore leaves out.
    pub strip: Strip,
    /// One line for the operator, printed before the restore starts.
    pub note: String,
}

/// `"name"`.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Plans ownership and grants for restoring a backup with manifest `m` into `target`.
/// `Ok(Err(reason))` blames the backup (its saved roles are not what was written).
///
/// # Errors
/// The target or storage failed; or roles are missing and the target role may not create them.
pub(super) async fn plan(
    storage: &dyn Storage,
    m: Option<&Manifest>,
    target: &DbUrl,
    keep: bool,
    cancel: &CancellationToken,
) -> Result<Result<RolePlan, String>, OperatorError> {
    let Some(dumped) = m.and_then(|m| m.privileges.as_ref()) else {
        return Ok(Ok(RolePlan {
            sql: String::new(),
            strip: Strip::Nothing,
            note: "ownership and grants: not in this backup; every object will belong to the restoring role".into(),
        }));
    };
    if !keep {
        return Ok(Ok(RolePlan {
            sql: String::new(),
            strip: Strip::OwnershipAndGrants,
            note: "ownership and grants: left out (--no-privileges); every object will belong to the restoring role".into(),
        }));
    }
    let saved = match m.and_then(|m| m.globals.as_ref()) {
        None => None,
        Some(g) => {
            let Ok(key) = Key::new(g.key.clone()) else {
                return Ok(Err(format!("the manifest names an invalid key for the saved roles: {}", g.key)));
            };
            let bytes = get_bytes(storage, &key, cancel).await.map_err(|source| OperatorError::Unreadable {
                key: g.key.clone(),
                source,
            })?;
            if bytes.len() as u64 != g.size || hex::encode(sha2::Sha256::digest(&bytes)) != g.sha256 {
                return Ok(Err(format!(
                    "the roles saved with the backup ({}) are not what the backup wrote",
                    g.key
                )));
            }
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
    };
    // Every role the backup knows of (saved roles), else those its tables name.
    let wanted: Vec<String> = match &saved {
        Some(sql) => globals::role_names(sql),
        None => dumped
            .owners
            .values()
            .chain(dumped.grants.values().flatten())
            .filter(|r| *r != "PUBLIC")
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
    };
    let mut conn = pg::connect(target).await?;
    let existing: Result<Vec<String>, _> = sqlx::query_scalar("SELECT rolname::text FROM pg_roles").fetch_all(&mut conn).await;
    let may: Result<(bool, bool), _> = sqlx::query_as("SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user")
        .fetch_one(&mut conn)
        .await;
    pg::close(conn).await;
    let existing: BTreeSet<String> = existing.map_err(|e| pg::classify(target, &e))?.into_iter().collect();
    let (superuser, createrole) = may.map_err(|e| pg::classify(target, &e))?;
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|r| !existing.contains(&globals::unquote(r)) && !globals::unquote(r).starts_with("pg_"))
        .collect();
    if missing.is_empty() {
        return Ok(Ok(RolePlan {
            sql: String::new(),
            strip: Strip::Nothing,
            note: "ownership and grants: restored (every role they name exists on the target)".into(),
        }));
    }
    let names = missing.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ");
    if !superuser && !createrole {
        return Err(OperatorError::Usage(format!(
            "the target lacks the roles {names}, which the backup's owners and grants name, and the restoring role may not create roles; restore as a role with CREATEROLE, create them first, or pass --no-privileges"
        )));
    }
    let mut sql = String::new();
    for role in &missing {
        match &saved {
            Some(g) => {
                for statement in globals::role_statements(g, role) {
                    sql.push_str(&statement);
                    sql.push('\n');
                }
            }
            None => sql.push_str(&format!("CREATE ROLE {} NOLOGIN;\n", quote(&globals::unquote(role)))),
        }
    }
    if let Some(g) = &saved {
        // Memberships that involve a created role, without their grantor (who may not exist here).
        for grant in globals::memberships(g) {
            if missing.iter().any(|r| grant.contains(r.as_str())) {
                let stmt = grant.split(" GRANTED BY ").next().unwrap_or(&grant).trim_end_matches(';');
                sql.push_str(stmt);
                sql.push_str(";\n");
            }
        }
    }
    Ok(Ok(RolePlan {
        sql,
        strip: Strip::Nothing,
        note: format!(
            "ownership and grants: restored; creating the missing roles {names} first (in the same transaction), without passwords — set them afterwards with ALTER ROLE … PASSWORD"
        ),
    }))
}
