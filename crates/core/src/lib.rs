//! pgvigil core: everything the backup service, the verify service and the operator CLI share.
//! The daemons' own machinery (skeleton, runner, health endpoint, metrics, notifications) is the
//! `pgvigil-service` crate, which the CLI does not link.
//!
//! The folders follow the way a backup flows:
//!
//! | folder | owns | must not import |
//! |---|---|---|
//! | [`infra`] | configuration, object storage, PostgreSQL connections and client tools, secrets | anything below |
//! | [`records`] | what pgvigil writes about backups: object names, manifests, verification and failure records, the catalog | `pipeline`, `operator`, `infra::pg` |
//! | [`policy`] | pure decisions: retention, size anomalies, schedule, status verdict, report figures | any I/O (`infra`, tokio, sqlx) |
//! | [`pipeline`] | the data paths (backup, restore, verify) and their stream stages (compression, dump scanning) | `operator` |
//! | [`operator`] | what the CLI's commands do; the CLI only parses arguments and renders the results | — |
//! | [`view`] | pages for people: the status page and its SVG charts, pure functions of loaded records | any I/O (`infra`, tokio, sqlx), `pipeline`, `operator` |
//!
//! The binaries are thin: `pgvigil-backup` and `pgvigil-verify` parse their command line and call
//! `pgvigil_service::run`, `pgvigil` calls [`operator`].
//!
//! # Errors
//!
//! * **Each layer returns its own typed error** (`thiserror`): storage `StorageError`, PostgreSQL
//!   and its tools `PgError`, configuration `ConfigError`, the data paths `BackupError`,
//!   `RestoreFailure` and `VerifyError`, the services (in `pgvigil-service`) `StartupError`, the operator commands
//!   `OperatorError`. `anyhow` lives only in the CLI.
//! * **Callers branch on kinds, never on text.** Whatever a caller or a verdict decides on is a
//!   variant or a field: whether a retry can help (`is_retryable`), cancellation apart from
//!   failure, a cause as an enum (`backup::Incomplete`, SQLSTATE classes through `SqlState`), sizes
//!   as numbers. Words are for people: a `String` payload is only ever shown, never matched.
//! * **Context is added where it is known**, by the layer that knows it (the key, the table, the
//!   tool and its stderr tail), and an underlying error is kept as the `#[source]`, not flattened
//!   into text, where a caller may need it.
//! * **Nothing panics on input.** Everything read from storage, a database or the environment is
//!   untrusted; a bad value is an error naming it, never an `unwrap`.
//! * **A verdict is not an error.** A backup judged bad is a `VerificationRecord` with
//!   `passed: false`; an error means the judgement could not be made (the environment failed).

pub mod infra;
pub mod operator;
pub mod pipeline;
pub mod policy;
pub mod records;
pub mod view;
