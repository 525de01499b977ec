//! What a service binary's command line asks for, and the runtime that does it: each binary
//! parses its own command line (flattening [`ServiceArgs`]) and hands the result to [`run`].

use pgvigil_core::infra::config::Role;

/// The options every service binary has: everything else comes from the environment.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct ServiceArgs {
    /// Run once and exit: status 0 on success, 1 with the cause otherwise (2 for bad configuration).
    #[arg(long)]
    pub once: bool,
    /// Ask the service running in this container (on PORT) whether it is alive, for Docker's
    /// HEALTHCHECK: status 0 when /healthz answers, 1 otherwise.
    #[arg(long, conflicts_with = "once")]
    pub healthcheck: bool,
}

/// Runs the service of `role` as `args` ask, on a multi-threaded runtime: the health probe,
/// one run (`--once`), or the service until SIGTERM. Call after
/// [`pgvigil_core::infra::process::prepare`].
pub fn run(role: Role, args: ServiceArgs) -> std::process::ExitCode {
    match tokio::runtime::Runtime::new() {
        Ok(rt) if args.healthcheck => rt.block_on(crate::http::probe()),
        Ok(rt) => rt.block_on(crate::skeleton::service_main(role, args.once)),
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
