//! The SQL that inspects and cleans a restore target. "Empty" means no user objects of any kind;
//! cleaning is a preamble that runs inside the restore's own transaction, so a restore that fails
//! leaves the target exactly as it was, data included.

use super::{classify, server_version, PgError};
use crate::infra::secret::DbUrl;
use sqlx::postgres::PgConnection;
use std::fmt;

/// User objects found in a database (objects that belong to extensions are not counted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contents {
    /// Tables (plain, partitioned, foreign).
    pub tables: i64,
    /// Views and materialized views.
    pub views: i64,
    /// Sequences.
    pub sequences: i64,
    /// Functions and procedures.
    pub functions: i64,
    /// Types (enums, domains, ranges, composite and base types).
    pub types: i64,
    /// Schemas other than `public`.
    pub schemas: i64,
    /// Large objects.
    pub large_objects: i64,
    /// Objects outside schemas: event triggers, publications, foreign servers.
    pub others: i64,
    /// Logical-replication subscriptions of this database (`--clean` does not drop them).
    pub subscriptions: i64,
    /// Installed extensions other than `plpgsql` (not counted as user objects: the dump's
    /// `CREATE EXTENSION IF NOT EXISTS` accepts them).
    pub extensions: i64,
}

impl Contents {
    /// True when the database holds no user objects.
    pub fn is_empty(&self) -> bool {
        self.tables
            + self.views
            + self.sequences
            + self.functions
            + self.types
            + self.schemas
            + self.large_objects
            + self.others
            + self.subscriptions
            == 0
    }
}

impl fmt::Display for Contents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = [
            (self.tables, "table"),
            (self.views, "view"),
            (self.sequences, "sequence"),
            (self.functions, "function"),
            (self.types, "type"),
            (self.schemas, "schema"),
            (self.large_objects, "large object"),
            (self.others, "event trigger, publication or foreign server"),
            (self.subscriptions, "subscription"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}{}", if *n == 1 { "" } else { "s" }))
        .collect();
        if parts.is_empty() {
            f.write_str("no user objects")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// Namespaces that hold user objects.
const USER_NS: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)'";
/// Not a member of an extension.
const NOT_EXTENSION: &str = "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = o.oid AND d.deptype = 'e')";

/// A schema that no extension owns (pg_cron's `cron`, for example, belongs to its extension).
const NOT_EXTENSION_NS: &str = "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = n.oid AND d.deptype = 'e')";

/// Counts the user objects in the database `conn` is connected to.
///
/// # Errors
/// Connection or query failures.
pub async fn contents(conn: &mut PgConnection, url: &DbUrl) -> Result<Contents, PgError> {
    let class = |kinds: &str| {
        format!("(SELECT count(*) FROM pg_class o JOIN pg_namespace n ON n.oid = o.relnamespace WHERE {USER_NS} AND o.relkind IN ({kinds}) AND {NOT_EXTENSION})")
    };
    let sql = format!(
        "SELECT {}, {}, {}, \
         (SELECT count(*) FROM pg_proc o JOIN pg_namespace n ON n.oid = o.pronamespace WHERE {USER_NS} AND {NOT_EXTENSION}), \
         (SELECT count(*) FROM pg_type o JOIN pg_namespace n ON n.oid = o.typnamespace WHERE {USER_NS} AND {NOT_EXTENSION} \
            AND o.typcategory <> 'A' AND (o.typrelid = 0 OR (SELECT c.relkind FROM pg_class c WHERE c.oid = o.typrelid) = 'c')), \
         (SELECT count(*) FROM pg_namespace n WHERE {USER_NS} AND n.nspname <> 'public' AND {NOT_EXTENSION_NS}), \
         (SELECT count(*) FROM pg_largeobject_metadata), \
         (SELECT (SELECT count(*) FROM pg_event_trigger) + (SELECT count(*) FROM pg_publication) \
            + (SELECT count(*) FROM pg_foreign_server o WHERE {NOT_EXTENSION})), \
         (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql'), \
         (SELECT count(*) FROM pg_subscription WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database()))",
        class("'r', 'p', 'f'"),
        class("'v', 'm'"),
        class("'S'"),
    );
    let row: (i64, i64, i64, i64, i64, i64, i64, i64, i64, i64) =
        sqlx::query_as(&sql).fetch_one(&mut *conn).await.map_err(|e| classify(url, &e))?;
    Ok(Contents {
        tables: row.0,
        views: row.1,
        sequences: row.2,
        functions: row.3,
        types: row.4,
        schemas: row.5,
        large_objects: row.6,
        others: row.7,
        extensions: row.8,
        subscriptions: row.9,
    })
}

/// SQL that empties a database of every user object, to run inside the restore's transaction:
/// every user schema is dropped with its contents (including `public`, recreated as the server
/// creates it), then large objects, publications and event triggers. Schemas that belong to an
/// extension stay (the dump's `CREATE EXTENSION IF NOT EXISTS` accepts the extension).
///
/// # Errors
/// When the server version cannot be read.
pub async fn clean_preamble(conn: &mut PgConnection, url: &DbUrl) -> Result<String, PgError> {
    let major = server_version(conn, url).await?.major;
    let public = match major {
        15.. => "CREATE SCHEMA public AUTHORIZATION pg_database_owner;\nGRANT USAGE ON SCHEMA public TO PUBLIC;\n",
        14 => "CREATE SCHEMA public AUTHORIZATION pg_database_owner;\nGRANT CREATE, USAGE ON SCHEMA public TO PUBLIC;\n",
        _ => "CREATE SCHEMA public;\nGRANT ALL ON SCHEMA public TO PUBLIC;\n",
    };
    Ok(format!(
        "DO $pgvigil_clean$\nDECLARE r record;\nBEGIN\n\
         FOR r IN SELECT n.nspname FROM pg_namespace n WHERE {USER_NS} AND {NOT_EXTENSION_NS} LOOP\n\
           EXECUTE format('DROP SCHEMA %I CASCADE', r.nspname);\n\
         END LOOP;\n\
         PERFORM lo_unlink(oid) FROM pg_largeobject_metadata;\n\
         FOR r IN SELECT pubname FROM pg_publication LOOP\n\
           EXECUTE format('DROP PUBLICATION %I', r.pubname);\n\
         END LOOP;\n\
         FOR r IN SELECT evtname FROM pg_event_trigger LOOP\n\
           EXECUTE format('DROP EVENT TRIGGER %I', r.evtname);\n\
         END LOOP;\n\
         FOR r IN SELECT srvname FROM pg_foreign_server s WHERE NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = s.oid AND d.deptype = 'e') LOOP\n\
           EXECUTE format('DROP SERVER %I CASCADE', r.srvname);\n\
         END LOOP;\n\
         END\n$pgvigil_clean$;\n\
         {public}COMMENT ON SCHEMA public IS 'standard public schema';\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_read_as_a_sentence() {
        let c = Contents {
            tables: 3,
            views: 1,
            functions: 2,
            extensions: 4,
            ..Contents::default()
        };
        assert_eq!(c.to_string(), "3 tables, 1 view, 2 functions");
        assert!(!c.is_empty());
        let only_extensions = Contents {
            extensions: 2,
            ..Contents::default()
        };
        assert!(only_extensions.is_empty());
        assert_eq!(only_extensions.to_string(), "no user objects");
    }
}
