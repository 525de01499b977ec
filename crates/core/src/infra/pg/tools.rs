//! Finding `pg_dump` and `psql` binaries of a suitable major version.

use super::PgError;
use std::path::{Path, PathBuf};

/// A PostgreSQL version (major and minor, e.g. 15.18).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct PgVersion {
    /// Major version (10 and later numbering).
    pub major: u32,
    /// Minor (point) release.
    pub minor: u32,
}

impl std::fmt::Display for PgVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A client tool and its version.
#[derive(Debug, Clone)]
pub struct Tool {
    /// Absolute path of the executable.
    pub path: PathBuf,
    /// Its version as reported by `--version`.
    pub version: PgVersion,
}

/// Parses `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)` or `psql (PostgreSQL) 18beta1`.
pub fn parse_version(text: &str) -> Option<PgVersion> {
    let after = text.split(')').nth(1).unwrap_or(text);
    let token = after.split_whitespace().next()?;
    let lead = |s: &str| s.chars().take_while(char::is_ascii_digit).collect::<String>();
    let mut parts = token.split('.');
    let first = parts.next()?;
    let major = lead(first).parse().ok()?;
    // `18beta1` has no minor release; `15.18` does.
    let minor = if lead(first) == first {
        parts.next().and_then(|m| lead(m).parse().ok()).unwrap_or(0)
    } else {
        0
    };
    Some(PgVersion { major, minor })
}

/// Runs `<path> --version`.
///
/// # Errors
/// When the tool cannot be run or prints something unexpected.
pub async fn tool_version(path: &Path) -> Result<PgVersion, PgError> {
    let out = tokio::process::Command::new(path)
        .arg("--version")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| PgError::VersionSkew(format!("cannot run {}: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_version(&text).ok_or_else(|| {
        PgError::VersionSkew(format!(
            "{} --version printed {:?}, not a PostgreSQL version",
            path.display(),
            text.trim()
        ))
    })
}

/// Every candidate for `name`: the versioned Debian/PGDG directories, then `PATH`.
fn candidates(name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        for e in entries.flatten() {
            let p = e.path().join("bin").join(name);
            if p.is_file() {
                out.push(p);
            }
        }
    }
    for dir in ["/usr/local/pgsql/bin", "/opt/homebrew/bin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            out.push(p);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() && !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// Chooses among found tools: the newest of the same major as `min_major`, else the newest newer one.
pub fn pick(found: &[Tool], min_major: u32) -> Option<Tool> {
    found
        .iter()
        .filter(|t| t.version.major >= min_major)
        .min_by_key(|t| (t.version.major != min_major, std::cmp::Reverse(t.version)))
        .cloned()
}

/// Finds `name` (`pg_dump` or `psql`) of major version >= `min_major`. Prefers the same major as
/// `min_major`, then the newest. An explicit path is used as given, but still version-checked.
///
/// # Errors
/// [`PgError::VersionSkew`] naming the versions found and what to install.
pub async fn find_tool(name: &str, explicit: Option<&Path>, min_major: u32, why: &str) -> Result<Tool, PgError> {
    let paths = match explicit {
        Some(p) => vec![p.to_path_buf()],
        None => candidates(name),
    };
    let mut found = Vec::new();
    for p in paths {
        if let Ok(v) = tool_version(&p).await {
            found.push(Tool { path: p, version: v });
        }
    }
    match pick(&found, min_major) {
        Some(t) => Ok(t),
        None => {
            let have = if found.is_empty() {
                format!("no {name} was found")
            } else {
                let list: Vec<String> = found.iter().map(|t| format!("{} {}", t.path.display(), t.version)).collect();
                format!("only found {}", list.join(", "))
            };
            Err(PgError::VersionSkew(format!(
                "{why} needs {name} {min_major} or newer, but {have}; install the PostgreSQL {min_major} client tools (e.g. apt-get install postgresql-client-{min_major}) or point {} at one",
                if name == "pg_dump" { "PG_DUMP_PATH" } else { "PSQL_PATH" }
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_matching_major_else_the_newest_newer_one() {
        let tool = |major, minor| Tool {
            path: PathBuf::from(format!("/usr/lib/postgresql/{major}/bin/pg_dump")),
            version: PgVersion { major, minor },
        };
        let installed = vec![tool(13, 9), tool(15, 4), tool(15, 18), tool(17, 2)];
        let cases = [
            (13, Some((13, 9))),
            (14, Some((17, 2))),
            (15, Some((15, 18))),
            (16, Some((17, 2))),
            (17, Some((17, 2))),
            (18, None),
        ];
        for (server, want) in cases {
            let got = pick(&installed, server).map(|t| (t.version.major, t.version.minor));
            assert_eq!(got, want, "server {server}");
        }
    }

    #[test]
    fn parses_tool_versions() {
        let cases = [
            ("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)", Some((15, 18))),
            ("psql (PostgreSQL) 17.2", Some((17, 2))),
            ("psql (PostgreSQL) 18beta1", Some((18, 0))),
            ("pg_dump (PostgreSQL) 9.6.24", Some((9, 6))),
            ("garbage", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_version(text).map(|v| (v.major, v.minor)), want, "{text}");
        }
    }
}
