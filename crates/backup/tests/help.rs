//! The binary starts, answers `--help` and `--version`. (Also makes `cargo nextest run
//! --workspace` build this binary, which the end-to-end suite in `tests/` runs.)

#[test]
fn help_and_version() {
    pgvigil_e2e::run::assert_help_and_version(env!("CARGO_BIN_EXE_pgvigil-backup"), env!("CARGO_PKG_VERSION"));
}
