//! Process setup shared by the two services and the CLI: allocator tuning ([`memory`]), logging
//! ([`telemetry`]), one TLS provider ([`tls`]) and one cancellation token for SIGTERM/SIGINT
//! ([`shutdown`]).

pub mod memory;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

/// Process-wide setup that must come before anything else runs: allocator tuning and the TLS
/// provider. Each binary calls it first thing in `main`.
pub fn prepare() {
    memory::tune_allocator();
    tls::install_provider();
}
