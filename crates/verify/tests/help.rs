//! The binary starts, answers `--help` and `--version`. (Also makes `cargo nextest run
//! --workspace` build this binary, which the end-to-end suite in `tests/` runs.)

use std::process::Command;

#[test]
fn help_and_version() {
    let exe = env!("CARGO_BIN_EXE_pgvigil-verify");
    let help = Command::new(exe).arg("--help").output().expect("binary runs");
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("Usage"));
    let version = Command::new(exe).arg("--version").output().expect("binary runs");
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
}
