//! PostgreSQL: locating a `pg_dump`/`psql` of the right major version ([`tools`]), owned child
//! processes with a drained stderr tail ([`child`]), connections and their errors ([`conn`],
//! [`errors`]), starting the tools ([`dump`], [`globals`], [`psql`]) and the SQL that manages pgvigil's own
//! scratch databases ([`scratch`]) and inspects or cleans a restore target ([`target`]).
//!
//! Nothing here knows about object storage or backups' records.

mod child;
mod conn;
pub mod dump;
pub mod dump_options;
mod errors;
pub mod globals;
pub mod psql;
pub mod scratch;
pub mod target;
mod tools;

pub use child::{OwnedChild, ToolFailure};
pub use conn::{child_env, classify, close, connect, secrets_of, server_version};
pub use errors::{DumpFailure, EnvironmentCause, PgError, PsqlFailure, SqlState};
pub use tools::{find_tool, parse_version, tool_version, PgVersion, Tool};
