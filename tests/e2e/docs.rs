//! Documentation kept true by tests: every variable the code reads is documented, and nothing
//! documented is unread; the README's test command is what CI runs.

use pgvigil_core::config::VARIABLES;
use std::collections::BTreeSet;

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)).unwrap()
}

#[test]
fn configuration_md_lists_exactly_the_variables_the_code_reads() {
    let doc = repo_file("docs/configuration.md");
    let documented: BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|name| name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .map(String::from)
        .collect();
    let read: BTreeSet<String> = VARIABLES.iter().map(|s| (*s).to_string()).collect();
    let undocumented: Vec<_> = read.difference(&documented).collect();
    let unread: Vec<_> = documented.difference(&read).collect();
    assert!(
        undocumented.is_empty(),
        "read by the code but missing from docs/configuration.md: {undocumented:?}"
    );
    assert!(
        unread.is_empty(),
        "documented in docs/configuration.md but not read by the code: {unread:?}"
    );
}

#[test]
fn every_variable_in_the_config_struct_is_listed() {
    // The raw struct's fields are the variable names in lower case; each must be in VARIABLES.
    let src = repo_file("crates/core/src/config.rs");
    let start = src.find("pub struct RawEnv {").unwrap();
    let body = &src[start..start + src[start..].find('}').unwrap()];
    for line in body.lines().skip(1) {
        if let Some(field) = line.trim().strip_suffix(": Option<String>,") {
            assert!(
                VARIABLES.contains(&field.to_ascii_uppercase().as_str()),
                "{field} is read but not in VARIABLES"
            );
        }
    }
}

#[test]
fn ci_runs_the_readme_test_command() {
    let readme = repo_file("README.md");
    let ci = repo_file(".ci/run");
    assert!(
        readme.contains("cargo nextest run --workspace"),
        "README must give the test command"
    );
    assert!(
        ci.contains("cargo nextest run --workspace"),
        ".ci/run must run the README's test command"
    );
}
