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
use crate::infra::pg::{self, globals, PgError, SqlState};
use crate::infra::secret::DbUrl;
use crate::infra::storage::{get_bytes, Key, Storage};
use crate::pipeline::stages::dumpscan::roles::quote;
use crate::pipeline::stages::dumpscan::Strip;
use crate::pipeline::stages::dumpscan::{split_qualified, unquote};
use crate::records::history::{PrivilegeEvidence, PrivilegesRestored};
use crate::records::manifest::{Manifest, Privileges};
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

/// Reads the roles saved with the backup and proves them intact. `Err` is why they are not.
async fn saved_roles_intact(
    storage: &dyn Storage,
    m: &Manifest,
    cancel: &CancellationToken,
) -> Result<Result<(), String>, super::VerifyError> {
    let Some(g) = &m.globals else { return Ok(Ok(())) };
    let Ok(key) = Key::new(g.key.clone()) else {
        return Ok(Err(format!("the manifest names an invalid key for the saved roles: {}", g.key)));
    };
    if g.size > globals::MAX_GLOBALS {
        return Ok(Err(format!(
            "the roles saved with the backup ({}) are larger than any roles file",
            g.key
        )));
    }
    match get_bytes(storage, &key, g.size, cancel).await {
        Ok(bytes) if bytes.len() as u64 == g.size && hex::encode(sha2::Sha256::digest(&bytes)) == g.sha256 => Ok(Ok(())),
        Ok(_) => Ok(Err(format!(
            "the roles saved with the backup ({}) are not what the backup wrote (size or SHA-256 differs)",
            g.key
        ))),
        Err(crate::infra::storage::StorageError::NotFound(_)) => {
            Ok(Err(format!("the roles saved with the backup ({}) are missing", g.key)))
        }
        // Larger than the manifest records: not what the backup wrote.
        Err(crate::infra::storage::StorageError::Oversized { .. }) => Ok(Err(format!(
            "the roles saved with the backup ({}) are not what the backup wrote (larger than recorded)",
            g.key
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Decides what can be restored, creating the roles the dump names where the verify role may
/// (without login, without password) and making the verify role a member of each, as `ALTER
/// DEFAULT PRIVILEGES FOR ROLE …` needs. `Ok(Err(reason))` blames the backup (the roles saved with
/// it are missing or damaged).
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
                restored: PrivilegesRestored::NotInBackup,
                ..PrivilegeEvidence::default()
            },
        }));
    };
    if let Err(reason) = saved_roles_intact(storage, m, cancel).await? {
        return Ok(Err(reason));
    }
    let (superuser, createrole): (bool, bool) = sqlx::query_as("SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user")
        .fetch_one(&mut *admin)
        .await
        .map_err(|e| pg::classify(url, &e))?;
    if !superuser && !createrole {
        return Ok(Ok(Plan {
            strip: Strip::OwnershipAndGrants,
            evidence: PrivilegeEvidence {
                restored: PrivilegesRestored::LeftOut,
                skipped: Some("ownership and grants skipped: the verify role may not create the roles the dump names (give it CREATEROLE, or use a superuser)".into()),
                ..PrivilegeEvidence::default()
            },
        }));
    }
    let (created, foreign) = create_roles(admin, url, &needed_roles(dumped), superuser).await?;
    if !foreign.is_empty() {
        return Ok(Ok(Plan {
            strip: Strip::OwnershipAndGrants,
            evidence: PrivilegeEvidence {
                restored: PrivilegesRestored::LeftOut,
                skipped: Some(format!(
                    "ownership and grants skipped: the roles {} exist on the verify server and the verify role is not a member; pgvigil joins only roles it created (use a verify server of its own, or a superuser verify role)",
                    foreign.join(", ")
                )),
                roles_created: created,
                ..PrivilegeEvidence::default()
            },
        }));
    }
    let (strip, restored, skipped) = if superuser {
        (Strip::Nothing, PrivilegesRestored::OwnersAndGrants, None)
    } else {
        (
            Strip::Ownership,
            PrivilegesRestored::Grants,
            Some("ownership skipped: only a superuser verify role may give objects to other roles".to_string()),
        )
    };
    Ok(Ok(Plan {
        strip,
        evidence: PrivilegeEvidence {
            restored,
            skipped,
            roles_created: created,
            ..PrivilegeEvidence::default()
        },
    }))
}

/// Creates the roles the dump names that the verify server lacks (without login), and makes a
/// verify role that is no superuser a member of each. Returns the roles created, and those that
/// exist already without the verify role being a member: pgvigil joins only roles it created,
/// since joining one because a backup names it would hand the verify role its privileges.
async fn create_roles(
    admin: &mut PgConnection,
    url: &DbUrl,
    needed: &BTreeSet<String>,
    superuser: bool,
) -> Result<(Vec<String>, Vec<String>), super::VerifyError> {
    let mut created = Vec::new();
    let mut foreign = Vec::new();
    for role in needed.iter().filter(|r| !r.starts_with("pg_")) {
        let what = || format!("creating role {role} on the verify server for the restore");
        let (exists, member): (bool, bool) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1), \
             EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1 AND pg_has_role(current_user, oid, 'MEMBER'))",
        )
        .bind(role)
        .fetch_one(&mut *admin)
        .await
        .map_err(|e| pg::classify(url, &e))?;
        if exists {
            if !superuser && !member {
                // An existing role pgvigil did not create: joining it because a backup names it
                // would hand the verify role its privileges.
                foreign.push(role.clone());
            }
            continue;
        }
        match sqlx::query(&format!("CREATE ROLE {} NOLOGIN", quote(role)))
            .execute(&mut *admin)
            .await
        {
            Ok(_) => created.push(role.clone()),
            // Another verifier created it a moment ago.
            Err(e) if SqlState::is(&e, SqlState::DUPLICATE_OBJECT) => {
                foreign.push(role.clone());
                continue;
            }
            Err(e) => {
                return Err(CouldNotRun::Check {
                    what: what(),
                    source: pg::classify(url, &e),
                }
                .into())
            }
        }
        if !superuser {
            sqlx::query(&format!("GRANT {} TO CURRENT_USER", quote(role)))
                .execute(&mut *admin)
                .await
                .map_err(|e| CouldNotRun::Check {
                    what: format!("making the verify role a member of {role} (needed to restore its default privileges)"),
                    source: pg::classify(url, &e),
                })?;
        }
    }
    Ok((created, foreign))
}

/// After the restore: each table's owner (when ownership was restored) and grantees (when grants
/// were) against the dump's, by plain names. Objects that belong to an extension are left out
/// (their privileges start from the extension's own). Differences blame the backup: the dump did
/// not restore as written. Tables the dump names that the scratch database lacks are counted as
/// not compared.
///
/// # Errors
/// The scratch database could not be read.
pub(super) async fn check(conn: &mut PgConnection, url: &DbUrl, m: &Manifest, plan: &mut Plan) -> Result<Vec<String>, PgError> {
    let Some(dumped) = &m.privileges else { return Ok(Vec::new()) };
    if plan.strip == Strip::OwnershipAndGrants {
        return Ok(Vec::new());
    }
    let rows: Vec<(String, String, String, Vec<String>)> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text, pg_get_userbyid(c.relowner)::text, \
         coalesce((SELECT array_agg(DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee)::text END) \
                   FROM aclexplode(c.relacl) a), '{}') \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| pg::classify(url, &e))?;
    let restored: BTreeMap<(String, String), (String, BTreeSet<String>)> = rows
        .into_iter()
        .map(|(n, t, o, g)| ((n, t), (o, g.into_iter().collect())))
        .collect();
    let plain = |grantee: &String| if grantee == "PUBLIC" { grantee.clone() } else { unquote(grantee) };
    let tables: BTreeSet<&String> = dumped.owners.keys().chain(dumped.grants.keys()).collect();
    let mut reasons = Vec::new();
    for table in tables {
        let Some((owner, grantees)) = split_qualified(table).and_then(|k| restored.get(&k)) else {
            plan.evidence.not_compared += 1;
            continue;
        };
        let dumped_owner = dumped.owners.get(table).map(|o| unquote(o));
        if plan.strip == Strip::Nothing {
            if let Some(want) = &dumped_owner {
                plan.evidence.owners_checked += 1;
                if owner != want {
                    reasons.push(format!(
                        "table {table} is owned by {owner} after the restore; the dump gives it to {want}"
                    ));
                }
            }
        }
        let want: BTreeSet<String> = dumped
            .grants
            .get(table)
            .into_iter()
            .flatten()
            .map(plain)
            .filter(|g| Some(g) != dumped_owner.as_ref())
            .collect();
        let got: BTreeSet<String> = grantees
            .iter()
            .filter(|g| *g != owner && Some(*g) != dumped_owner.as_ref())
            .cloned()
            .collect();
        plan.evidence.grants_checked += 1;
        if want != got {
            let list = |s: &BTreeSet<String>| s.iter().map(String::as_str).collect::<Vec<_>>().join(", ");
            reasons.push(format!(
                "table {table} is granted to [{}] after the restore; the dump grants it to [{}]",
                list(&got),
                list(&want)
            ));
        }
    }
    Ok(reasons)
}

/// The roles a restore of this dump needs: those the manifest lists, or, for backups taken
/// before it listed them, those its tables' owners and grants name.
pub fn needed_roles(dumped: &Privileges) -> BTreeSet<String> {
    if dumped.roles.is_empty() {
        dumped
            .owners
            .values()
            .chain(dumped.grants.values().flatten())
            .filter(|r| *r != "PUBLIC")
            .map(|r| unquote(r))
            .collect()
    } else {
        dumped.roles.iter().cloned().collect()
    }
}
