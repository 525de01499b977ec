//! Test harness: a throwaway PostgreSQL cluster, an in-process S3 server (s3s-fs) on a real
//! TCP port, a sample-database builder, and helpers to build pgvigil settings and run binaries.
//! Nothing here is a mock: the code under test talks to real servers over real sockets.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

pub mod browser;
pub mod corpus;
pub mod fixtures;
pub mod http;
pub mod lines;
pub mod pg;
pub mod proxy;
pub mod run;
pub mod s3;
pub mod sample;
pub mod scrape;
pub mod webhook;

pub use pg::PgServer;
pub use s3::S3Server;

use pgvigil_core::infra::config::{Role, Settings};

/// Builds settings from explicit variables (never the process environment).
pub fn settings(vars: &[(&str, String)], role: Role) -> Settings {
    Settings::from_vars(vars.iter().map(|(k, v)| ((*k).to_string(), v.clone())), role).expect("test settings are valid")
}

/// Installs a test log subscriber once (output captured by the test runner).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info,aws_config=warn,aws_smithy_runtime=warn,sqlx=warn")
        .with_test_writer()
        .try_init();
}
