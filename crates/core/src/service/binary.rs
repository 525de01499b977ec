//! The `main` every service binary shares: its command line (`--once`, `--healthcheck`,
//! `--help`, `--version`; everything else comes from the environment), process set-up, and the
//! runtime that runs [`super::skeleton::service_main`].

use crate::infra::config::Role;

/// The command line of a service binary: everything else comes from the environment.
#[derive(clap::Parser, Debug)]
struct ServiceArgs {
    /// Run once and exit: status 0 on success, 1 with the cause otherwise (2 for bad configuration).
    #[arg(long)]
    once: bool,
    /// Ask the service running in this container (on PORT) whether it is alive, for Docker's
    /// HEALTHCHECK: status 0 when /healthz answers, 1 otherwise.
    #[arg(long, conflicts_with = "once")]
    healthcheck: bool,
}

/// The whole `main` of a service binary: arguments (`--once`, `--help`, `--version`), allocator
/// tuning, then [`service_main`] on a multi-threaded runtime.
pub fn main(role: Role, name: &'static str, about: &'static str) -> std::process::ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    crate::infra::process::prepare();
    let matches = ServiceArgs::command()
        .name(name)
        .about(about)
        .version(env!("CARGO_PKG_VERSION"))
        .get_matches();
    let args = match ServiceArgs::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    match tokio::runtime::Runtime::new() {
        Ok(rt) if args.healthcheck => rt.block_on(super::http::probe()),
        Ok(rt) => rt.block_on(super::skeleton::service_main(role, args.once)),
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
