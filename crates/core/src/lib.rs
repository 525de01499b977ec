//! pgvigil core: everything the backup service, the verify service and the operator CLI share.
//!
//! The folders follow the way a backup flows:
//!
//! | folder | owns | must not import |
//! |---|---|---|
//! | [`infra`] | configuration, object storage, PostgreSQL connections and client tools, secrets | anything below |
//! | [`records`] | what pgvigil writes about backups: object names, manifests, verification and failure records, the catalog | `pipeline`, `service`, `operator`, `infra::pg` |
//! | [`policy`] | pure decisions: retention, size anomalies, schedule, status verdict, report figures | any I/O (`infra`, tokio, sqlx) |
//! | [`pipeline`] | the data paths (backup, restore, verify) and their stream stages (compression, dump scanning) | `service`, `operator` |
//! | [`service`] | the machinery of the two daemons: service skeleton, runner, retry, health, shutdown, telemetry | `operator` |
//! | [`operator`] | what the CLI's commands do; the CLI only parses arguments and renders the results | `service` (except shutdown tokens handed in) |
//! | [`view`] | pages for people: the status page and its SVG charts, pure functions of loaded records | any I/O (`infra`, tokio, sqlx), `pipeline`, `service`, `operator` |
//!
//! The binaries are thin: `pgvigil-backup` and `pgvigil-verify` call [`service::skeleton::service_main`],
//! `pgvigil` calls [`operator`].

pub mod infra;
pub mod operator;
pub mod pipeline;
pub mod policy;
pub mod records;
pub mod service;
pub mod view;
