//! Documentation kept true by tests: every variable the code reads is documented, and nothing
//! documented is unread; the README's test command is what CI runs.

use pgvigil_core::infra::config::VARIABLES;
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
    let src = repo_file("crates/core/src/infra/config/raw.rs");
    let start = src.find("pub struct RawEnv {").unwrap();
    let body = &src[start..start + src[start..].find('}').unwrap()];
    for line in body.lines().skip(1) {
        if let Some(field) = line.trim().trim_start_matches("pub(super) ").strip_suffix(": Option<String>,") {
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

/// Every `.rs` file below `dir` (relative to the repository), with its code lines (comments left out).
fn code_lines(dir: &str) -> Vec<(String, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = Vec::new();
    let mut stack = vec![root.join(dir)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let name = p.strip_prefix(&root).unwrap().display().to_string();
                for line in std::fs::read_to_string(&p).unwrap().lines() {
                    if !line.trim_start().starts_with("//") {
                        out.push((name.clone(), line.to_string()));
                    }
                }
            }
        }
    }
    out
}

/// What a pure layer (policy, view) must not use: anything that does I/O, and the layers above.
const PURE: &[&str] = &["crate::infra", "crate::pipeline", "crate::operator", "tokio", "sqlx", "aws_"];

#[test]
fn each_folder_imports_only_what_its_module_documentation_allows() {
    let rules: &[(&str, &[&str])] = &[
        ("crates/core/src/policy", PURE),
        (
            "crates/core/src/records",
            &["crate::infra::pg", "crate::pipeline", "crate::operator", "sqlx"],
        ),
        (
            "crates/core/src/infra/storage",
            &[
                "crate::infra::pg",
                "crate::records",
                "crate::policy",
                "crate::pipeline",
                "crate::operator",
                "sqlx",
            ],
        ),
        (
            "crates/core/src/infra/pg",
            &[
                "crate::infra::storage",
                "crate::records",
                "crate::policy",
                "crate::pipeline",
                "crate::operator",
                "aws_",
            ],
        ),
        (
            "crates/core/src/pipeline/stages",
            &["crate::infra", "crate::records", "crate::operator", "sqlx", "aws_"],
        ),
        ("crates/core/src/view", PURE),
        ("crates/core/src/pipeline", &["crate::operator"]),
        // The daemons' crate: everything of core but what the CLI's commands do.
        ("crates/service/src", &["pgvigil_core::operator"]),
        (
            "crates/cli/src",
            &[
                "pgvigil_core::infra",
                "pgvigil_core::pipeline",
                "pgvigil_core::records",
                "pgvigil_core::policy",
                "pgvigil_service",
                "sqlx",
            ],
        ),
    ];
    let mut broken = Vec::new();
    for (dir, forbidden) in rules {
        for (file, line) in code_lines(dir) {
            for f in *forbidden {
                if line.contains(f) {
                    broken.push(format!("{file}: uses {f}: {}", line.trim()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "imports that break the layering:\n{}", broken.join("\n"));
}

/// Operators' alerts match the log lines the tests wait for: each is documented where users look
/// (README or docs/) and written by the code (or, `Next … in`, built from the job's noun).
#[test]
fn every_log_line_the_tests_wait_for_is_documented() {
    let mut docs = repo_file("README.md");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for e in std::fs::read_dir(root.join("docs")).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "md") {
            docs.push_str(&std::fs::read_to_string(e.path()).unwrap());
        }
    }
    let code: String = code_lines("crates").into_iter().map(|(_, l)| l + "\n").collect();
    for line in pgvigil_e2e::lines::ALL {
        assert!(docs.contains(line), "{line:?} is not documented in README.md or docs/");
        // `Next backup in` / `Next verification in`: the runner's line with the job's noun.
        let built = line
            .strip_prefix("Next ")
            .and_then(|rest| rest.strip_suffix(" in"))
            .is_some_and(|noun| code.contains("\"Next {noun} in {}s\"") && code.contains(&format!("\"{noun}\"")));
        assert!(code.contains(line) || built, "{line:?} is written nowhere in crates/");
    }
}

/// The operator CLI links the library, not the daemons: no HTTP server, metrics registry or
/// webhook client in `pgvigil`.
#[test]
fn the_cli_links_no_service_code() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let tree = std::process::Command::new(cargo)
        .current_dir(&root)
        .args(["tree", "--locked", "--offline", "-p", "pgvigil", "-e", "normal", "--prefix", "none"])
        .output()
        .expect("cargo tree runs");
    assert!(tree.status.success(), "{}", String::from_utf8_lossy(&tree.stderr));
    let tree = String::from_utf8_lossy(&tree.stdout);
    let crates: std::collections::BTreeSet<&str> = tree.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(crates.contains("pgvigil-core"), "{tree}");
    for service_only in ["pgvigil-service", "axum", "prometheus-client", "reqwest"] {
        assert!(!crates.contains(service_only), "the CLI links {service_only}:\n{tree}");
    }
}

#[test]
fn no_file_in_core_is_longer_than_one_sitting() {
    let mut long = Vec::new();
    let mut counts = std::collections::BTreeMap::new();
    for (file, _) in code_lines("crates/core/src").into_iter().chain(code_lines("crates/service/src")) {
        *counts.entry(file).or_insert(0usize) += 1;
    }
    for (file, n) in counts {
        if n > 400 {
            long.push(format!("{file}: {n} code lines"));
        }
    }
    assert!(long.is_empty(), "split these by concern:\n{}", long.join("\n"));
}

/// The test named by a `module::name` or `core::path::name` reference in docs/reliability.md, as
/// the file that must define it and the function name.
fn test_location(reference: &str) -> Option<(Vec<String>, String)> {
    let parts: Vec<&str> = reference.split("::").collect();
    let (name, path) = parts.split_last()?;
    let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if path.is_empty() || !parts.iter().all(|p| ok(p)) {
        return None;
    }
    let files = match path {
        ["core", rest @ ..] if !rest.is_empty() => {
            let p = rest.join("/");
            // Tests may sit in a `<module>_tests.rs` next to the module.
            vec![
                format!("crates/core/src/{p}.rs"),
                format!("crates/core/src/{p}/mod.rs"),
                format!("crates/core/src/{p}_tests.rs"),
            ]
        }
        [module] => vec![format!("tests/e2e/{module}.rs")],
        _ => return None,
    };
    Some((files, (*name).to_string()))
}

#[test]
fn every_test_named_in_reliability_md_exists() {
    let doc = repo_file("docs/reliability.md");
    let rows: Vec<&str> = doc
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| scenario") && !l.starts_with("|---"))
        .collect();
    assert!(rows.len() >= 30, "the fault matrix has {} rows", rows.len());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for row in rows {
        let last = row.trim_end_matches('|').rsplit('|').next().unwrap();
        let refs: Vec<&str> = last.split('`').skip(1).step_by(2).collect();
        assert!(!refs.is_empty(), "a row without a test: {row}");
        for r in refs {
            let (files, name) = test_location(r).unwrap_or_else(|| panic!("not a test reference: {r:?} in {row}"));
            let defined = files.iter().any(|f| {
                std::fs::read_to_string(root.join(f))
                    .map(|src| src.contains(&format!("fn {name}(")) && src.contains("#[t"))
                    .unwrap_or(false)
            });
            assert!(defined, "{r}: no test `fn {name}` in {files:?}");
        }
    }
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn anchor_of(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Whether the Markdown `body` has a heading whose anchor is `anchor`.
fn has_heading(body: &str, anchor: &str) -> bool {
    body.lines()
        .filter_map(|l| l.trim_start_matches('#').strip_prefix(' ').filter(|_| l.starts_with('#')))
        .any(|h| anchor_of(h) == anchor)
}

/// Every relative link in the docs, README and SECURITY.md leads to a file that exists, and every
/// `#anchor` to a heading of that file; the docs index lists every page.
#[test]
fn every_docs_link_resolves_and_the_index_lists_every_page() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut pages = vec!["README.md".to_string(), "SECURITY.md".to_string()];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".md") {
            pages.push(format!("docs/{name}"));
        }
    }
    let mut broken = Vec::new();
    for page in &pages {
        let text = repo_file(page);
        let dir = std::path::Path::new(page).parent().unwrap_or(std::path::Path::new(""));
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let Some(end) = rest.find(')') else { continue };
            let link = &rest[..end];
            if link.contains("://") || link.starts_with("mailto:") || link.contains(' ') {
                continue;
            }
            let (file, anchor) = link.split_once('#').unwrap_or((link, ""));
            let target = if file.is_empty() {
                root.join(page)
            } else {
                root.join(dir).join(file)
            };
            if !target.exists() {
                broken.push(format!("{page}: {link} (no such file)"));
                continue;
            }
            if !anchor.is_empty()
                && target.extension().is_some_and(|e| e == "md")
                && !has_heading(&std::fs::read_to_string(&target).unwrap(), anchor)
            {
                broken.push(format!("{page}: {link} (no such heading)"));
            }
        }
    }
    // The status page's links into the docs, and the pages the services serve for them.
    for link in pgvigil_core::view::page::DOC_LINKS {
        let (file, anchor) = link.split_once('#').unwrap();
        if !has_heading(&repo_file(&format!("docs/{file}")), anchor) || pgvigil_service::page::doc(file).is_none() {
            broken.push(format!("the status page's link {link} (no such heading, or not served)"));
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));

    let index = repo_file("docs/README.md");
    let unlisted: Vec<_> = pages
        .iter()
        .filter_map(|p| p.strip_prefix("docs/"))
        .filter(|p| *p != "README.md" && !index.contains(&format!("]({p}")))
        .collect();
    assert!(unlisted.is_empty(), "docs/README.md does not list: {unlisted:?}");
}
