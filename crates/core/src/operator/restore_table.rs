//! `pgvigil restore --table`: one table back from a backup, with its partitions, sequences,
//! indexes, constraints, triggers, policies, comments and grants, into the live database.
//!
//! By default the table comes back under its own name when it is gone, or as `<name>_restored`
//! when it is still there: nothing existing is touched. `--replace` puts it in place of the live
//! table, with the other tables' foreign keys to it dropped and added back, all or nothing. The
//! restore is one transaction (see [`crate::pipeline::restore::table`]): a failure changes
//! nothing. No older backup is tried: the operator chose this one.

use super::restore::{decide, stopped, RestoreFailure, Verdict};
use super::{Observer, Operator, OperatorError};
use crate::infra::pg::{self};
use crate::infra::secret::DbUrl;
use crate::pipeline::restore::table::names::{Name, MAX_NAME};
use crate::pipeline::restore::table::{self, epilogue, select::Family, TableJob};
use crate::pipeline::restore::Target;
use crate::records::catalog::Catalog;
use crate::records::keys::BackupId;
use crate::records::manifest::Manifest;
use chrono::Utc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// One table to bring back.
#[derive(Debug, Clone)]
pub struct TableRequest {
    /// The database it goes into.
    pub target: DbUrl,
    /// Which backup (as for `pgvigil restore`).
    pub backup: String,
    /// `schema.name` as the user wrote it.
    pub table: String,
    /// `--as schema.name`.
    pub rename: Option<String>,
    /// `--replace`: in place of the live table.
    pub replace: bool,
    /// Restore ownership and grants (`false`: `--no-privileges`).
    pub privileges: bool,
    /// The most the restore may take.
    pub timeout: Option<std::time::Duration>,
}

/// A table restore that committed.
#[derive(Debug, Clone)]
pub struct TableOutcome {
    /// The backup it came from.
    pub key: String,
    /// Its identity (the time its data is from).
    pub id: BackupId,
    /// The table as the backup holds it.
    pub table: String,
    /// Where it is now.
    pub placed: String,
    /// The live table was replaced.
    pub replaced: bool,
    /// Rows restored (all partitions).
    pub rows: u64,
    /// The relations restored besides the table (partitions, sequences), as the backup named them
    /// (a copy renames them after the table).
    pub others: Vec<String>,
    /// Left out on purpose (foreign keys of a copy to other tables).
    pub left_out: Vec<String>,
    /// Bytes read from storage, and the object's size.
    pub read: (u64, u64),
    /// Why the whole object was read (`None`: only ranges were).
    pub whole_because: Option<&'static str>,
    /// Seconds from the start of the command to the commit.
    pub secs: f64,
}

fn usage(text: String) -> OperatorError {
    OperatorError::Usage(text)
}

/// Reads `--table`/`--as`.
fn parse_name(flag: &str, text: &str) -> Result<Name, OperatorError> {
    Name::parse(text).ok_or_else(|| {
        usage(format!(
            "{flag} {text}: write the table as schema.name (e.g. public.invoices; quote mixed case as PostgreSQL does: public.\"Invoices\")"
        ))
    })
}

/// Whether the manifest's backup holds the table.
fn holds(m: &Manifest, table: &Name) -> bool {
    m.tables.keys().any(|t| Name::parse(t).as_ref() == Some(table))
        || m.toc
            .iter()
            .any(|e| e.kind == "TABLE" && e.schema == table.schema && e.name == table.name)
}

/// Whether each of `names` exists in the target, and whether `schema` does.
async fn exist(conn: &mut sqlx::PgConnection, url: &DbUrl, names: &[&Name], schema: &str) -> Result<(Vec<bool>, bool), OperatorError> {
    let mut found = Vec::new();
    for n in names {
        let q = sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace s ON s.oid = c.relnamespace WHERE s.nspname = $1 AND c.relname = $2)",
        )
        .bind(&n.schema)
        .bind(&n.name)
        .fetch_one(&mut *conn)
        .await;
        found.push(q.map_err(|e| pg::classify(url, &e))?);
    }
    let schema_exists = sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = $1)")
        .bind(schema)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| pg::classify(url, &e))?;
    Ok((found, schema_exists))
}

impl Operator {
    /// Brings one table back.
    ///
    /// # Errors
    /// Usage errors (no such table, a name taken), [`RestoreFailure`] when nothing was restored.
    pub async fn restore_table(
        &self,
        req: &TableRequest,
        observer: &dyn Observer,
        cancel: &CancellationToken,
    ) -> Result<TableOutcome, OperatorError> {
        let started = Instant::now();
        let table = parse_name("--table", &req.table)?;
        let (id, m, key) = self.chosen(req, &table, observer, cancel).await?;
        let (to, replace, target_major) = self.placement(req, &table).await?;
        observer.note(&format!("backup: {key}"));
        if let Err(why) = table::reads_ranges(&m) {
            observer.note(&format!("reading the whole object: {why}"));
        }
        super::restore::source_not_newer(&key, &m, target_major)?;
        let tool = self.psql_for(&key, Some(&m), observer).await?;
        let roles = super::roles::plan(self.storage.as_ref(), Some(&m), &req.target, req.privileges, cancel).await?;
        observer.note(&roles.note);
        // Every lock on a live table (a foreign key's referenced table, the one replaced) is
        // waited for only so long; the backup's own `SET lock_timeout = 0` is left out.
        let preamble = format!("{}SET lock_timeout = '{}ms';\n", roles.sql, epilogue::LOCK_WAIT.as_millis());
        let stage = format!("pgvigil_restore_{:08x}", rand::random::<u32>());
        let target = Target {
            psql: &tool,
            url: &req.target,
            preamble: &preamble,
            strip: roles.strip,
            identities: &self.settings.identities,
            deadline: req.timeout.or(self.settings.verify.timeout),
        };
        let job = TableJob {
            key: &key,
            manifest: &m,
            family: Family::new(table.clone(), replace || to == table),
            stage: stage.clone(),
            placing: epilogue::Move {
                stage,
                table: table.clone(),
                to: to.clone(),
                rows: 0,
                replace,
                guard: String::new(),
            },
        };
        observer.note(&format!("restoring {table} from {key} as {to} ..."));
        let done = table::restore_table(self.storage.clone(), job, &target, cancel).await;
        let done = done.map_err(|e| stopped(key.as_str(), e))?;
        let (family, rows, left_out, read, ranged) = (done.family, done.rows, done.left_out, done.read, done.ranged);
        verdict(&key, &table, &req.target, done.attempt, done.unsupported).await?;
        Ok(TableOutcome {
            key: key.to_string(),
            id,
            table: table.sql(),
            placed: to.sql(),
            replaced: replace,
            rows: rows.values().sum(),
            others: family.relations.iter().filter(|n| **n != table).map(Name::sql).collect(),
            left_out,
            read: (read, m.size),
            whole_because: if ranged { None } else { table::reads_ranges(&m).err() },
            secs: started.elapsed().as_secs_f64(),
        })
    }

    /// The backup to restore the table from, its trusted manifest and its object's key; refuses
    /// a backup that does not hold the table.
    async fn chosen(
        &self,
        req: &TableRequest,
        table: &Name,
        observer: &dyn Observer,
        cancel: &CancellationToken,
    ) -> Result<(BackupId, Manifest, crate::infra::storage::Key), OperatorError> {
        let cat = Catalog::load(self.storage.as_ref(), &self.layout, cancel).await?;
        let (complete, first) = self.candidates(&cat, &req.backup, observer)?;
        let id = complete[first];
        let m = match self.trusted_manifest(id, cancel).await? {
            Ok(Some(m)) => m,
            Ok(None) => {
                return Err(usage(format!(
                    "{} has no manifest: a table can be restored only from a complete backup",
                    self.layout.backup(id)
                )))
            }
            Err(why) => {
                let key = self.layout.backup(id).to_string();
                return Err(RestoreFailure::TableAtFault { key, why }.into());
            }
        };
        let key = crate::infra::storage::Key::new(m.key.clone())
            .map_err(|_| usage(format!("the manifest of {} names an invalid key", id.file_name())))?;
        if !holds(&m, table) {
            return Err(usage(format!(
                "{key} holds no table {table}; `pgvigil list` shows the backups, and the table may have been created after this one"
            )));
        }
        Ok((id, m, key))
    }

    /// The backups to choose from and the chosen one's index (as `pgvigil restore` picks).
    pub(super) fn candidates(&self, cat: &Catalog, backup: &str, observer: &dyn Observer) -> Result<(Vec<BackupId>, usize), OperatorError> {
        let named = BackupId::parse_file_name(backup.rsplit('/').next().unwrap_or(backup));
        if let Some(future) = cat.future.iter().find(|b| Some(b.id) == named) {
            return Err(usage(format!(
                "{} is dated later than this machine's clock allows; pgvigil restores no backup from the future (check the clocks, and who can write to the bucket)",
                future.key
            )));
        }
        let complete: Vec<BackupId> = cat.complete().map(|b| b.id).collect();
        let (first, chosen) = super::pick::select(&complete, backup, Utc::now())?;
        observer.note(&format!("backup: {chosen}"));
        Ok((complete, first))
    }

    /// Where the table goes, whether it replaces the live one, and the target server's major
    /// version; refuses to overwrite anything without `--replace`.
    async fn placement(&self, req: &TableRequest, table: &Name) -> Result<(Name, bool, u32), OperatorError> {
        let asked = req.rename.as_deref().map(|r| parse_name("--as", r)).transpose()?;
        if req.replace && asked.as_ref().is_some_and(|a| a != table) {
            return Err(usage("--replace puts the table back under its own name; leave out --as".into()));
        }
        let mut conn = pg::connect(&req.target).await?;
        let placed = place(&mut conn, req, table, asked).await;
        let major = pg::server_version(&mut conn, &req.target).await;
        pg::close(conn).await;
        let (to, replace) = placed?;
        Ok((to, replace, major?.major))
    }
}

/// [`Operator::placement`] on one connection to the target.
async fn place(
    conn: &mut sqlx::PgConnection,
    req: &TableRequest,
    table: &Name,
    asked: Option<Name>,
) -> Result<(Name, bool), OperatorError> {
    let copy = Name::new(&table.schema, &format!("{}_restored", table.name));
    let (exists, _) = exist(conn, &req.target, &[table, &copy], &table.schema).await?;
    let to = match asked {
        Some(a) => a,
        None if req.replace || !exists[0] => table.clone(),
        None => copy,
    };
    // PostgreSQL would cut a longer name, and the output would name a table that is not there.
    if to.name.len() > MAX_NAME {
        return Err(usage(format!(
            "{to} is longer than PostgreSQL's {MAX_NAME}-byte names; pass --as with a shorter name"
        )));
    }
    let (taken, schema) = exist(conn, &req.target, &[&to], &to.schema).await?;
    if !schema {
        return Err(usage(format!(
            "schema {} does not exist in {}; create it first, or pass --as another schema",
            names_ident(&to.schema),
            req.target.database()
        )));
    }
    let replace = req.replace && taken[0];
    if taken[0] && !replace {
        return Err(usage(format!(
            "{to} already exists in {}; pass --as another name, or --replace to put the backup's table in its place (all or nothing)",
            req.target.database()
        )));
    }
    if let Some(what) = replicated_whole(conn, &req.target).await? {
        return Err(usage(format!(
            "{} is read by logical replication that takes every table ({what}): the rows this restore loads, first into a staging schema, would reach the subscribers under a name they do not have and stop their replication. Restore the table into another database (--to) and copy the rows across; or narrow or drop that publication, or drop the slot if nothing uses it",
            req.target.database(),
        )));
    }
    Ok((to, replace))
}

/// Logical replication of the target database that would carry what the restore loads into its
/// staging schema: a publication of every table while a `pgoutput` slot of the database is live,
/// or a live slot whose decoder takes every table regardless of publications.
async fn replicated_whole(conn: &mut sqlx::PgConnection, url: &DbUrl) -> Result<Option<String>, OperatorError> {
    let row: Option<(String, String)> = sqlx::query_as(
        "WITH slots AS (SELECT s.slot_name::text AS slot, s.plugin::text AS plugin FROM pg_catalog.pg_replication_slots s \
           WHERE s.database = pg_catalog.current_database() AND s.slot_type = 'logical' AND s.wal_status IS DISTINCT FROM 'lost') \
         SELECT 'slot', slot || ' decoding with ' || plugin FROM slots WHERE plugin <> 'pgoutput' \
         UNION ALL \
         SELECT 'publication', p.pubname::text || ' FOR ALL TABLES' FROM pg_catalog.pg_publication p \
           WHERE p.puballtables AND EXISTS (SELECT FROM slots WHERE plugin = 'pgoutput') \
         LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| pg::classify(url, &e))?;
    Ok(row.map(|(kind, what)| format!("{kind} {what}")))
}

/// What a table restore's attempt means: `Ok` when it committed. What the server did comes
/// first (as in the shared rule): a transaction that ended early, or whose end is unknown, is
/// never "nothing was changed". Then the backup's faults, then what this backup cannot give,
/// then the target's failures.
async fn verdict(
    key: &crate::infra::storage::Key,
    table: &Name,
    target: &DbUrl,
    attempt: crate::pipeline::restore::Attempt,
    unsupported: Option<String>,
) -> Result<(), OperatorError> {
    use crate::infra::pg::{psql::Outcome, PsqlFailure};
    let key = key.to_string();
    if matches!(attempt.outcome, Outcome::RolledBack(_) | Outcome::NotStarted(_)) {
        if !attempt.problems.is_empty() {
            let why = attempt.problems.join("; ");
            return Err(RestoreFailure::TableAtFault { key, why }.into());
        }
        if let Some(why) = unsupported {
            return Err(RestoreFailure::TableUnsupported { key, why }.into());
        }
        if let Outcome::RolledBack(Some(f @ PsqlFailure::Statement { state, .. })) = &attempt.outcome {
            // The epilogue's own checks: what the backup delivered is wrong (its fault), or the
            // table's inheritance reaches outside what one table's restore can make.
            let code = state.as_ref().map(|s| s.0.as_str());
            return Err(match code {
                Some(epilogue::WRONG_ROWS | epilogue::NOT_CREATED) => RestoreFailure::TableAtFault { key, why: f.to_string() },
                Some(epilogue::OUTSIDE) => RestoreFailure::TableUnsupported { key, why: f.to_string() },
                Some(epilogue::INCOMPLETE) => RestoreFailure::TableUnsupported {
                    key,
                    why: format!(
                        "not everything the backup's table of contents lists on the table was rebuilt ({}); restore the whole backup into a new database and copy the table from there (docs/runbooks.md, one table back)",
                        statement_error(f, epilogue::INCOMPLETE)
                    ),
                },
                Some(epilogue::UNPUBLISHED) => RestoreFailure::TableFailed {
                    key,
                    table: table.sql(),
                    why: statement_error(f, epilogue::UNPUBLISHED),
                },
                Some(epilogue::LOCKED) => RestoreFailure::TableFailed {
                    key,
                    table: table.sql(),
                    why: format!(
                        "a live table it touches (one its foreign keys reference, the one replaced, or one whose foreign key points at it) stayed locked by other sessions for {} s; run it again when they are done, or end them",
                        epilogue::LOCK_WAIT.as_secs()
                    ),
                },
                // A name taken, a key that does not hold, a view that depends on the table.
                _ => RestoreFailure::TableFailed {
                    key,
                    table: table.sql(),
                    why: f.to_string(),
                },
            }
            .into());
        }
    }
    match decide(&key, target, attempt).await? {
        Verdict::Done => Ok(()),
        Verdict::BackupAtFault(why) => Err(RestoreFailure::TableAtFault { key, why }.into()),
    }
}

/// What a failed statement of pgvigil's own (raising SQLSTATE `code`) said, without psql's prefix.
fn statement_error(f: &crate::infra::pg::PsqlFailure, code: &str) -> String {
    let text = f.to_string();
    let said = text.split_once(&format!("{code}: ")).map_or(text.as_str(), |(_, m)| m.trim());
    // The staging schema is pgvigil's own: objects are named by their table alone.
    let mut out = String::new();
    let mut rest = said;
    while let Some(at) = rest.find("pgvigil_restore_") {
        out.push_str(&rest[..at]);
        rest = rest[at..].split_once('.').map_or("", |(_, after)| after);
    }
    out.push_str(rest);
    out
}

fn names_ident(name: &str) -> String {
    crate::pipeline::restore::table::names::ident(name)
}
