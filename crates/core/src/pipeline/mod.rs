//! The data paths: taking a backup ([`backup`]: `pg_dump` → gzip → storage), streaming one back
//! out ([`restore`]: storage → integrity → `psql`), and proving one good ([`verify`]: restore into
//! a scratch database, then checks), built from the stream [`stages`].
//!
//! The data paths use `infra`, `records` and `policy`; they never import `operator`.

pub mod backup;
pub mod restore;
pub mod stages;
pub mod verify;
