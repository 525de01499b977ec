//! `PG_DUMP_OPTIONS`, parsed the way pg_dump parses its command line (getopt: bundled and attached
//! short options, `--name=value`, `--name value`, unique prefixes of long names) and checked against
//! an allowlist. What passes is handed to pg_dump in one normal form (`--name=value`), so pg_dump
//! sees exactly what was checked. Anything that would change the format or the connection, or make
//! verification prove nothing, is refused with a sentence saying why.

/// Whether and why an option is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Allowed.
    Safe,
    /// Refused, with the reason.
    Refused(&'static str),
}

const OUTPUT: &str = "pgvigil writes plain SQL into its own compressed stream";
const CONNECTION: &str = "the connection comes from DATABASE_URL (and a password here would show in the process list)";
const VACUOUS: &str =
    "row counts come from COPY blocks: with INSERT statements the manifest records no rows and verification would prove nothing";
const PARTIAL: &str = "the backup must restore into an empty database and hold its data, or verification would prove nothing";
const TARGET: &str = "the dump must restore into the database pgvigil chooses (it would switch databases or drop objects itself)";

/// pg_dump's options: long name, short letter, whether it takes a value, and the rule.
const OPTIONS: &[(&str, Option<char>, bool, Rule)] = &[
    ("format", Some('F'), true, Rule::Refused(OUTPUT)),
    ("file", Some('f'), true, Rule::Refused(OUTPUT)),
    ("compress", Some('Z'), true, Rule::Refused(OUTPUT)),
    ("jobs", Some('j'), true, Rule::Refused(OUTPUT)),
    ("dbname", Some('d'), true, Rule::Refused(CONNECTION)),
    ("host", Some('h'), true, Rule::Refused(CONNECTION)),
    ("port", Some('p'), true, Rule::Refused(CONNECTION)),
    ("username", Some('U'), true, Rule::Refused(CONNECTION)),
    ("no-password", Some('w'), false, Rule::Refused(CONNECTION)),
    ("password", Some('W'), false, Rule::Refused(CONNECTION)),
    ("inserts", None, false, Rule::Refused(VACUOUS)),
    ("column-inserts", None, false, Rule::Refused(VACUOUS)),
    ("attribute-inserts", None, false, Rule::Refused(VACUOUS)),
    ("rows-per-insert", None, true, Rule::Refused(VACUOUS)),
    ("schema-only", Some('s'), false, Rule::Refused(PARTIAL)),
    ("data-only", Some('a'), false, Rule::Refused(PARTIAL)),
    ("section", None, true, Rule::Refused(PARTIAL)),
    ("create", Some('C'), false, Rule::Refused(TARGET)),
    ("clean", Some('c'), false, Rule::Refused(TARGET)),
    ("if-exists", None, false, Rule::Refused(TARGET)),
    ("help", Some('?'), false, Rule::Refused("it prints help instead of a dump")),
    (
        "version",
        Some('V'),
        false,
        Rule::Refused("it prints the version instead of a dump"),
    ),
    ("schema", Some('n'), true, Rule::Safe),
    ("exclude-schema", Some('N'), true, Rule::Safe),
    ("table", Some('t'), true, Rule::Safe),
    ("exclude-table", Some('T'), true, Rule::Safe),
    ("exclude-table-and-children", None, true, Rule::Safe),
    ("exclude-table-data", None, true, Rule::Safe),
    ("exclude-table-data-and-children", None, true, Rule::Safe),
    ("table-and-children", None, true, Rule::Safe),
    ("extension", Some('e'), true, Rule::Safe),
    ("exclude-extension", None, true, Rule::Safe),
    ("encoding", Some('E'), true, Rule::Safe),
    ("large-objects", Some('b'), false, Rule::Safe),
    ("blobs", None, false, Rule::Safe),
    ("no-large-objects", Some('B'), false, Rule::Safe),
    ("no-blobs", None, false, Rule::Safe),
    ("no-owner", Some('O'), false, Rule::Safe),
    ("no-privileges", Some('x'), false, Rule::Safe),
    ("no-acl", None, false, Rule::Safe),
    ("no-comments", None, false, Rule::Safe),
    ("no-publications", None, false, Rule::Safe),
    ("no-subscriptions", None, false, Rule::Safe),
    ("no-security-labels", None, false, Rule::Safe),
    ("no-table-access-method", None, false, Rule::Safe),
    ("no-tablespaces", None, false, Rule::Safe),
    ("no-toast-compression", None, false, Rule::Safe),
    ("no-unlogged-table-data", None, false, Rule::Safe),
    ("no-sync", None, false, Rule::Safe),
    ("no-synchronized-snapshots", None, false, Rule::Safe),
    ("quote-all-identifiers", None, false, Rule::Safe),
    ("enable-row-security", None, false, Rule::Safe),
    ("load-via-partition-root", None, false, Rule::Safe),
    ("include-foreign-data", None, true, Rule::Safe),
    ("lock-wait-timeout", None, true, Rule::Safe),
    ("extra-float-digits", None, true, Rule::Safe),
    ("serializable-deferrable", None, false, Rule::Safe),
    ("snapshot", None, true, Rule::Safe),
    ("strict-names", None, false, Rule::Safe),
    ("use-set-session-authorization", None, false, Rule::Safe),
    ("disable-dollar-quoting", None, false, Rule::Safe),
    ("disable-triggers", None, false, Rule::Safe),
    ("superuser", Some('S'), true, Rule::Safe),
    ("role", None, true, Rule::Safe),
    ("verbose", Some('v'), false, Rule::Safe),
];

/// Splits like a shell would for simple cases: whitespace separates, `'…'` and `"…"` quote.
fn split(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            (None, c) => cur.push(c),
        }
    }
    if quote.is_some() {
        return Err("a quote is not closed".into());
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// The option a long name (or a unique prefix of one) means.
fn long(name: &str) -> Result<&'static (&'static str, Option<char>, bool, Rule), String> {
    if let Some(o) = OPTIONS.iter().find(|o| o.0 == name) {
        return Ok(o);
    }
    let matches: Vec<_> = OPTIONS.iter().filter(|o| o.0.starts_with(name)).collect();
    match matches.as_slice() {
        [one] => Ok(one),
        // What was written is shown only when it looks like an option name: a mistyped value
        // (a connection string, say) may carry a password.
        [] if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') => Err(format!("--{name} is not a pg_dump option pgvigil knows")),
        [] => Err("an argument starting with -- is not a pg_dump option pgvigil knows (not shown: it may hold a secret)".into()),
        many => Err(format!(
            "--{name} is ambiguous (it could be {})",
            many.iter().map(|o| format!("--{}", o.0)).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Checks one option and its value, returning it in normal form.
fn admit(option: &(&'static str, Option<char>, bool, Rule), value: Option<String>, written: &str) -> Result<String, String> {
    let excludes_data = option.0.starts_with("exclude-table");
    if excludes_data
        && value
            .as_deref()
            .is_some_and(|v| matches!(v.trim(), "*" | "*.*" | "\"*\"" | "*.\"*\""))
    {
        return Err(format!(
            "{written} * is not allowed: it leaves no table data in the backup, so verification would prove nothing"
        ));
    }
    match option.3 {
        Rule::Refused(why) if written == format!("--{}", option.0) => Err(format!("{written} is not allowed: {why}")),
        Rule::Refused(why) => Err(format!("{written} means --{}, which is not allowed: {why}", option.0)),
        Rule::Safe => Ok(match value {
            Some(v) => format!("--{}={v}", option.0),
            None => format!("--{}", option.0),
        }),
    }
}

/// Parses `PG_DUMP_OPTIONS` into the arguments to give pg_dump.
///
/// # Errors
/// Every refused or malformed option, each in a sentence.
pub fn parse(value: &str) -> Result<Vec<String>, Vec<String>> {
    let tokens = split(value).map_err(|e| vec![e])?;
    let mut args = Vec::new();
    let mut problems = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let token = &tokens[i];
        i += 1;
        if let Some(rest) = token.strip_prefix("--") {
            let (name, attached) = match rest.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (rest, None),
            };
            let option = match long(name) {
                Ok(o) => o,
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            };
            let value = match (option.2, attached) {
                (true, Some(v)) => Some(v),
                (true, None) if i < tokens.len() => {
                    i += 1;
                    Some(tokens[i - 1].clone())
                }
                (true, None) => {
                    problems.push(format!("--{} needs a value", option.0));
                    continue;
                }
                (false, Some(_)) => {
                    problems.push(format!("--{} takes no value", option.0));
                    continue;
                }
                (false, None) => None,
            };
            match admit(option, value, &format!("--{name}")) {
                Ok(a) => args.push(a),
                Err(e) => problems.push(e),
            }
        } else if let Some(letters) = token.strip_prefix('-').filter(|l| !l.is_empty()) {
            // Bundled short options; one that takes a value takes the rest of the token, or the
            // next token.
            for (at, c) in letters.char_indices() {
                let Some(option) = OPTIONS.iter().find(|o| o.1 == Some(c)) else {
                    problems.push(format!("-{c} is not a pg_dump option pgvigil knows"));
                    break;
                };
                let value = if option.2 {
                    let rest = &letters[at + c.len_utf8()..];
                    if !rest.is_empty() {
                        Some(rest.to_string())
                    } else if i < tokens.len() {
                        i += 1;
                        Some(tokens[i - 1].clone())
                    } else {
                        problems.push(format!("-{c} needs a value"));
                        break;
                    }
                } else {
                    None
                };
                let takes = value.is_some();
                match admit(option, value, &format!("-{c}")) {
                    Ok(a) => args.push(a),
                    Err(e) => problems.push(e),
                }
                if takes {
                    break;
                }
            }
        } else {
            // Not shown: a connection string put here by mistake carries its password.
            problems.push(format!(
                "argument {i} is not an option (not shown: it may hold a secret); the database comes from DATABASE_URL"
            ));
        }
    }
    if problems.is_empty() {
        Ok(args)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_options_come_out_in_one_form() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("--schema=public", &["--schema=public"]),
            ("-n public -N audit", &["--schema=public", "--exclude-schema=audit"]),
            ("-npublic", &["--schema=public"]),
            ("-Ox", &["--no-owner", "--no-privileges"]),
            ("-Oxnpublic", &["--no-owner", "--no-privileges", "--schema=public"]),
            ("--exclude-table-data 'audit.*'", &["--exclude-table-data=audit.*"]),
            ("--table \"My Table\"", &["--table=My Table"]),
            ("--no-comm", &["--no-comments"]),
            ("--lock-wait-timeout=5s", &["--lock-wait-timeout=5s"]),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input).unwrap_or_else(|e| panic!("{input}: {e:?}")), *want, "{input}");
        }
    }

    #[test]
    fn what_would_break_the_contract_is_refused_in_every_spelling() {
        let cases: &[(&str, &str)] = &[
            ("--format=custom", "plain SQL"),
            ("-Fc", "plain SQL"),
            ("-F c", "plain SQL"),
            ("--form=c", "plain SQL"),
            ("-fout.sql", "plain SQL"),
            ("-dpostgresql://u:pw@h/db", "DATABASE_URL"),
            ("--dbname=postgresql://u:pw@h/db", "DATABASE_URL"),
            ("-Ox -h other", "DATABASE_URL"),
            ("--inserts", "verification would prove nothing"),
            ("--column-inserts", "verification would prove nothing"),
            ("--rows-per-insert=100", "verification would prove nothing"),
            ("-s", "prove nothing"),
            ("--data-only", "prove nothing"),
            ("-C", "database pgvigil chooses"),
            ("--clean --if-exists", "database pgvigil chooses"),
            ("--no", "ambiguous"),
            ("--frobnicate", "not a pg_dump option"),
            ("-q", "not a pg_dump option"),
            ("app", "not an option"),
            ("--schema 'unclosed", "not closed"),
            ("--lock-wait", "needs a value"),
            ("--no-comments=yes", "takes no value"),
            ("--exclude-table-data=*", "leaves no table data"),
            ("-T '*'", "leaves no table data"),
            ("postgresql://u:pw@h/db", "not an option"),
            ("-X postgresql://u:pw@h/db", "not an option"),
            ("--maintenance-db postgresql://u:pw@h/db", "not an option"),
            ("--postgresql://u:pw@h/db", "not a pg_dump option"),
        ];
        for (input, want) in cases {
            let e = parse(input).expect_err(input);
            assert!(e.iter().any(|p| p.contains(want)), "{input}: {e:?}");
            assert!(!e.iter().any(|p| p.contains("pw@")), "the value is never echoed: {e:?}");
        }
    }
}
