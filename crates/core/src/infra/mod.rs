//! Infrastructure: the environment contract ([`config`]), object storage ([`storage`]), PostgreSQL
//! connections and client tools ([`pg`]), secret handling ([`secret`]), manifest signatures
//! ([`signing`]) and process setup ([`process`]: allocator, logging, signals).
//!
//! Nothing here knows what a backup *means*: storage moves bytes under validated keys and knows
//! nothing of PostgreSQL; `pg` runs tools and SQL and knows nothing of storage. Configuration names
//! the types it fills (a retention policy, a key prefix) and nothing more.

pub mod config;
pub mod pg;
pub mod process;
pub mod secret;
pub mod signing;
pub mod storage;
