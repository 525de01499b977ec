//! Ownership, grants and roles for `pgvigil restore`. A backup keeps its tables' owners and grants,
//! and the roles they name were saved next to it. Restoring where those roles are missing, pgvigil
//! creates them first — inside the restore's own transaction, so a failed restore leaves no role
//! behind — with the attributes they had (never `SUPERUSER`, `CREATEROLE`, `REPLICATION` or
//! `BYPASSRLS`) and no password (none is ever saved). With
//! `--no-privileges` the ownership and privilege statements are left out instead and everything
//! belongs to the restoring role.
//!
//! A backup is untrusted input, so roles from it never raise anyone's privileges: memberships are
//! re-created only among roles this restore creates (never into an existing role, never a `pg_*`
//! role, never a role that was privileged where it was saved), and the restoring role is made a
//! member only of roles it just created.

use super::OperatorError;
use crate::infra::pg::{self, globals};
use crate::infra::secret::DbUrl;
use crate::infra::storage::{get_bytes, Key, Storage};
use crate::pipeline::stages::dumpscan::roles::{self, quote, SavedRoles};
use crate::pipeline::stages::dumpscan::Strip;
use crate::records::manifest::Manifest;
use sha2::Digest;
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

/// The roles saved with the backup, when they are there and intact; otherwise why not.
async fn saved_roles(storage: &dyn Storage, m: &Manifest, cancel: &CancellationToken) -> Result<SavedRoles, String> {
    let Some(g) = &m.globals else {
        return Err("no roles were saved with this backup".into());
    };
    let key = Key::new(g.key.clone()).map_err(|_| format!("the manifest names an invalid key for the saved roles: {}", g.key))?;
    if g.size > globals::MAX_GLOBALS {
        return Err(format!("the roles saved with the backup ({}) are implausibly large", g.key));
    }
    let bytes = get_bytes(storage, &key, g.size, cancel)
        .await
        .map_err(|e| format!("the roles saved with the backup could not be read ({e})"))?;
    if bytes.len() as u64 != g.size || hex::encode(sha2::Sha256::digest(&bytes)) != g.sha256 {
        return Err(format!("the roles saved with the backup ({}) are not what the backup wrote", g.key));
    }
    Ok(roles::parse(&String::from_utf8_lossy(&bytes)))
}

/// Plans ownership and grants for restoring a backup with manifest `m` into `target`: roles the
/// dump names that the target lacks are created (with their saved attributes, never SUPERUSER,
/// REPLICATION or BYPASSRLS, never a password), and a restoring role that is not a superuser is
/// made a member of each, as giving objects to a role requires.
///
/// # Errors
/// The target failed; or roles are missing (or the restoring role is not a member of them) and
/// the restoring role may not fix that.
pub(super) async fn plan(
    storage: &dyn Storage,
    m: Option<&Manifest>,
    target: &DbUrl,
    keep: bool,
    cancel: &CancellationToken,
) -> Result<RolePlan, OperatorError> {
    let Some((m, dumped)) = m.and_then(|m| m.privileges.as_ref().map(|p| (m, p))) else {
        return Ok(RolePlan {
            sql: String::new(),
            strip: Strip::Nothing,
            note: "ownership and grants: not in this backup; every object will belong to the restoring role".into(),
        });
    };
    if !keep {
        return Ok(RolePlan {
            sql: String::new(),
            strip: Strip::OwnershipAndGrants,
            note: "ownership and grants: left out (--no-privileges); every object will belong to the restoring role".into(),
        });
    }
    let needed = crate::pipeline::verify::needed_roles(dumped);
    let needed: Vec<String> = needed.into_iter().filter(|r| !r.starts_with("pg_")).collect();
    let mut conn = pg::connect(target).await?;
    let facts = target_facts(&mut conn, target, &needed).await;
    pg::close(conn).await;
    let (superuser, createrole, state) = facts?;
    let missing: Vec<&String> = needed.iter().filter(|r| !state.get(*r).is_some_and(|s| s.0)).collect();
    let not_member: Vec<&String> = needed.iter().filter(|r| state.get(*r).is_some_and(|s| s.0 && !s.1)).collect();
    refuse_unless_allowed(superuser, createrole, &missing, &not_member)?;
    let saved = saved_roles(storage, m, cancel).await;
    let (sql, notes) = creation(saved.as_ref(), &missing, superuser);
    let head = if missing.is_empty() {
        "ownership and grants: restored (every role they name exists on the target)".to_string()
    } else {
        format!(
            "ownership and grants: restored; creating the missing roles {} first (in the same transaction), without passwords — set them afterwards with ALTER ROLE … PASSWORD",
            listed(&missing)
        )
    };
    let note = std::iter::once(head).chain(notes).collect::<Vec<_>>().join("; ");
    Ok(RolePlan {
        sql,
        strip: Strip::Nothing,
        note,
    })
}

fn listed(roles: &[&String]) -> String {
    roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
}

/// Refuses what the restoring role may not do: create the `missing` roles without CREATEROLE, or
/// use existing roles it is not a member of (joining one would hand it that role's privileges
/// because a backup named it).
fn refuse_unless_allowed(superuser: bool, createrole: bool, missing: &[&String], not_member: &[&String]) -> Result<(), OperatorError> {
    if !superuser && !createrole && !missing.is_empty() {
        return Err(OperatorError::Usage(format!(
            "the target lacks the roles {}, which the backup's owners and grants name, and the restoring role may not create roles; restore as a role with CREATEROLE, create them first, or pass --no-privileges",
            listed(missing)
        )));
    }
    if !superuser && !not_member.is_empty() {
        return Err(OperatorError::Usage(format!(
            "the restoring role is not a member of {}, which own or grant objects in the backup; pgvigil does not make it a member of existing roles: restore as a superuser, grant it those roles yourself, or pass --no-privileges",
            listed(not_member)
        )));
    }
    Ok(())
}

/// The SQL that creates the `missing` roles (with their saved attributes where the backup kept
/// them, memberships only among themselves) and, for a restoring role that is not a superuser,
/// makes it a member of each; with notes for the operator on what was not given.
fn creation(saved: Result<&SavedRoles, &String>, missing: &[&String], superuser: bool) -> (String, Vec<String>) {
    let mut sql = String::new();
    let mut notes = Vec::new();
    let mut withheld = Vec::new();
    for role in missing {
        match saved.ok().and_then(|s| s.roles.iter().find(|r| &&r.name == role)) {
            Some(r) => {
                let (create, dropped) = r.create_statement();
                sql.push_str(&create);
                if !dropped.is_empty() {
                    withheld.push(format!("{role} ({})", dropped.join(" ")));
                }
            }
            None => sql.push_str(&format!("CREATE ROLE {} WITH NOLOGIN;", quote(role))),
        }
        sql.push('\n');
    }
    if let Ok(s) = saved {
        for (granted, member) in roles::memberships_among(s, missing) {
            sql.push_str(&format!("GRANT {} TO {};\n", quote(&granted), quote(&member)));
        }
    }
    if !superuser {
        for role in missing {
            sql.push_str(&format!("GRANT {} TO CURRENT_USER;\n", quote(role)));
        }
        if !missing.is_empty() {
            notes.push("the restoring role is made a member of the roles it creates, as giving objects to them requires".to_string());
        }
    }
    if let Err(why) = saved {
        if !missing.is_empty() {
            notes.push(format!("{why}: the missing roles are created without login"));
        }
    }
    if !withheld.is_empty() {
        notes.push(format!("attributes not given: {}", withheld.join(", ")));
    }
    (sql, notes)
}

/// Whether the restoring role is a superuser, may create roles, and for each needed role whether
/// it exists and whether the restoring role is a member of it.
async fn target_facts(
    conn: &mut sqlx::postgres::PgConnection,
    target: &DbUrl,
    needed: &[String],
) -> Result<(bool, bool, std::collections::BTreeMap<String, (bool, bool)>), OperatorError> {
    let (superuser, createrole): (bool, bool) = sqlx::query_as("SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| pg::classify(target, &e))?;
    let mut state = std::collections::BTreeMap::new();
    for role in needed {
        let facts: (bool, bool) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1), \
             EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1 AND pg_has_role(current_user, oid, 'MEMBER'))",
        )
        .bind(role)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| pg::classify(target, &e))?;
        state.insert(role.clone(), facts);
    }
    Ok((superuser, createrole, state))
}
