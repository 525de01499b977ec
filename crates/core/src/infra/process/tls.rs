//! TLS for every connection the process makes: one rustls crypto provider for the whole process.
//!
//! The dependency tree enables both of rustls's providers (the AWS SDK brings aws-lc-rs, reqwest
//! and sqlx bring ring), and rustls then refuses to pick one: the first PostgreSQL connection with
//! `sslmode=require` or stricter would panic. Choosing aws-lc-rs at start-up settles it.

/// Installs aws-lc-rs as the process-wide rustls provider. Call once, before any connection; a
/// second call (tests that start several services in one process) keeps the first choice.
pub fn install_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
