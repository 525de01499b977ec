//! Ownership and grants in a verification. A dump keeps owners and grants, so restoring it needs
//! the roles it names. The verify server is pgvigil's: missing roles are created there (without
//! login, without password) when the verify role may create roles. What the verify role can do
//! decides how much is restored, and the record says so — a verdict never silently rests on less
//! than it claims:
//!
//! | verify role | restored and checked | left out |
//! |---|---|---|
//! | superuser | ownership and grants | — |
//! | `CREATEROLE` | grants | ownership (only a superuser may give objects to other roles) |
//! | neither | — | ownership and grants |

use super::CouldNotRun;
use crate::infra::pg::{self, globals, PgError};
use crate::infra::secret::DbUrl;
use crate::infra::storage::{get_bytes, Key, Storage};
use crate::pipeline::stages::dumpscan::Strip;
use crate::records::history::PrivilegeEvidence;
use crate::records::manifest::Manifest;
use sha2::Digest;
use sqlx::postgres::PgConnection;
use std::collections::{BTreeMap, BTreeSet};
use tokio_util::sync::CancellationToken;

/// How this verification treats the dump's ownership and privilege statements.
#[derive(Debug, Clone, Default)]
pub(super) struct Plan {
    /// What the restore leaves out.
    pub strip: Strip,
    /// What goes into the record.
    pub evidence: PrivilegeEvidence,
}

/// `"name"`, as SQL needs a role name that came back from the catalog unquoted.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Decides what can be restored, creating the roles the dump needs where the verify role may.
/// `Ok(Err(reason))` blames the backup (its saved roles are not what was written).
///
/// # Errors
/// The verify server or storage failed, or a role could not be created.
pub(super) async fn prepare(
    admin: &mut PgConnection,
    url: &DbUrl,
    storage: &dyn Storage,
    m: &Manifest,
    cancel: &CancellationToken,
) -> Result<Result<Plan, String>, super::VerifyError> {
    let Some(dumped) = &m.privileges else {
        return Ok(Ok(Plan {
            strip: Strip::Nothing,
            evidence: PrivilegeEvidence {
                restored: "not in the backup (taken without owners and grants)".into(),
                ..PrivilegeEvidence::default()
            },
        }));
    };
    let (superuser, createrole): (bool, bool) = sqlx::query_as("SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user")
        .fetch_one(&mut *admin)
        .await
        .map_err(|e| pg::classify(url, &e))?;
    if !superuser && !createrole {
        return Ok(Ok(Plan {
            strip: Strip::OwnershipAndGrants,
            evidence: PrivilegeEvidence {
                restored: "left out".into(),
                skipped: Some("the verify role may not create the roles the dump names (give it CREATEROLE, or use a superuser)".into()),
                ..PrivilegeEvidence::default()
            },
        }));
    }
    // The roles to have: those saved with the backup, else those the dump's tables name.
    let needed: Vec<String> = match &m.globals {
        Some(g) => {
            let Ok(key) = Key::new(g.key.clone()) else {
                return Ok(Err(format!("the manifest names an invalid key for the saved roles: {}", g.key)));
            };
            let bytes = get_bytes(storage, &key, cancel).await?;
            if bytes.len() as u64 != g.size || hex::encode(sha2::Sha256::digest(&bytes)) != g.sha256 {
                return Ok(Err(format!(
                    "the roles saved with the backup ({}) are not what the backup wrote (size or SHA-256 differs)",
                    g.key
                )));
            }
            globals::role_names(&String::from_utf8_lossy(&bytes))
                .iter()
                .map(|r| globals::unquote(r))
                .collect()
        }
        None => dumped
            .owners
            .values()
            .chain(dumped.grants.values().flatten())
            .filter(|r| *r != "PUBLIC")
            .map(|r| globals::unquote(r))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
    };
    let existing: BTreeSet<String> = sqlx::query_scalar("SELECT rolname::text FROM pg_roles")
        .fetch_all(&mut *admin)
        .await
        .map_err(|e| pg::classify(url, &e))?
        .into_iter()
        .collect();
    let mut created = Vec::new();
    for role in needed.iter().filter(|r| !existing.contains(*r) && !r.starts_with("pg_")) {
        let mut sql = vec![format!("CREATE ROLE {} NOLOGIN", quote(role))];
        if !superuser {
            // Needed for `ALTER DEFAULT PRIVILEGES FOR ROLE …`.
            sql.push(format!("GRANT {} TO CURRENT_USER", quote(role)));
        }
        for s in sql {
            sqlx::query(&s).execute(&mut *admin).await.map_err(|e| CouldNotRun::Check {
                what: format!("creating role {role} on the verify server for the restore"),
                source: pg::classify(url, &e),
            })?;
        }
        created.push(role.clone());
    }
    let (strip, restored, skipped) = if superuser {
        (Strip::Nothing, "ownership and grants restored and checked", None)
    } else {
        (
            Strip::Ownership,
            "grants restored and checked",
            Some("ownership left out: only a superuser verify role may give objects to other roles".to_string()),
        )
    };
    Ok(Ok(Plan {
        strip,
        evidence: PrivilegeEvidence {
            restored: restored.into(),
            skipped,
            roles_created: created,
            ..PrivilegeEvidence::default()
        },
    }))
}

/// After the restore: each table's owner (when ownership was restored) and grantees (when grants
/// were) against the dump's. Differences blame the backup: the dump did not restore as written.
///
/// # Errors
/// The scratch database could not be read.
pub(super) async fn check(conn: &mut PgConnection, url: &DbUrl, m: &Manifest, plan: &mut Plan) -> Result<Vec<String>, PgError> {
    let Some(dumped) = &m.privileges else { return Ok(Vec::new()) };
    if plan.strip == Strip::OwnershipAndGrants {
        return Ok(Vec::new());
    }
    let rows: Vec<(String, String, Vec<String>)> = sqlx::query_as(
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), quote_ident(pg_get_userbyid(c.relowner)), \
         coalesce((SELECT array_agg(DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END) \
                   FROM aclexplode(c.relacl) a), '{}') \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema')",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| pg::classify(url, &e))?;
    let restored: BTreeMap<String, (String, BTreeSet<String>)> =
        rows.into_iter().map(|(t, o, g)| (t, (o, g.into_iter().collect()))).collect();
    let mut reasons = Vec::new();
    if plan.strip == Strip::Nothing {
        for (table, owner) in &dumped.owners {
            let Some((actual, _)) = restored.get(table) else { continue };
            plan.evidence.owners_checked += 1;
            if actual != owner {
                reasons.push(format!(
                    "table {table} is owned by {actual} after the restore; the dump gives it to {owner}"
                ));
            }
        }
    }
    for (table, (owner, grantees)) in &restored {
        let dumped_owner = dumped.owners.get(table);
        let want: BTreeSet<&String> = dumped
            .grants
            .get(table)
            .into_iter()
            .flatten()
            .filter(|g| Some(*g) != dumped_owner)
            .collect();
        let got: BTreeSet<&String> = grantees.iter().filter(|g| *g != owner && Some(*g) != dumped_owner).collect();
        if want.is_empty() && !dumped.owners.contains_key(table) {
            continue;
        }
        plan.evidence.grants_checked += 1;
        if want != got {
            let list = |s: &BTreeSet<&String>| s.iter().map(|g| g.as_str()).collect::<Vec<_>>().join(", ");
            reasons.push(format!(
                "table {table} is granted to [{}] after the restore; the dump grants it to [{}]",
                list(&got),
                list(&want)
            ));
        }
    }
    Ok(reasons)
}
