//! Stream stages: pure transformations of the bytes flowing through a backup or a restore —
//! parallel gzip ([`compress`]) and the dump scanner that counts rows and proves completeness
//! ([`dumpscan`]) and judges every statement of a restore, with the small SQL lexer it needs
//! ([`sqllex`]) and the client encodings psql reads like the server ([`encoding`]), and age
//! encryption ([`seal`]).
//!
//! Stages know nothing of storage, PostgreSQL connections or records: they must not import
//! `infra::storage`, `infra::pg` or `records`.

pub mod compress;
pub mod dumpscan;
pub mod encoding;
pub mod seal;
pub mod sqllex;
