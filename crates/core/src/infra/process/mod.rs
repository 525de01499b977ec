//! Process setup shared by the two services and the CLI: allocator tuning ([`memory`]), logging
//! ([`telemetry`]) and one cancellation token for SIGTERM/SIGINT ([`shutdown`]).

pub mod memory;
pub mod shutdown;
pub mod telemetry;
