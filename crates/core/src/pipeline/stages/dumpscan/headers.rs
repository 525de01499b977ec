//! What single lines of a dump say: table-of-contents headers, `CREATE EXTENSION`, the table of a
//! `COPY … FROM stdin;`.

/// Kinds of object whose presence after a restore proves it complete.
const TOC_KINDS: &[&str] = &[
    "TABLE",
    "FOREIGN TABLE",
    "INDEX",
    "CONSTRAINT",
    "FK CONSTRAINT",
    "SEQUENCE",
    "VIEW",
    "MATERIALIZED VIEW",
    "FUNCTION",
    "PROCEDURE",
    "TRIGGER",
    "POLICY",
];

/// One object of the dump's table of contents, as pg_dump's header names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TocItem {
    /// pg_dump's type (`TABLE`, `INDEX`, `CONSTRAINT`, …).
    pub kind: String,
    /// Its schema.
    pub schema: String,
    /// Its name as the header gives it.
    pub name: String,
}

/// A table-of-contents header, `-- Name: t; Type: TABLE; Schema: public; Owner: app`, of one of
/// the [`TOC_KINDS`] (not `-- Data for Name: …`).
pub(super) fn toc_entry(line: &str) -> Option<TocItem> {
    let rest = line.strip_prefix("-- Name: ")?;
    let (name, rest) = rest.split_once("; Type: ")?;
    let (kind, rest) = rest.split_once("; Schema: ")?;
    let schema = rest.split_once("; Owner: ").map_or(rest, |(s, _)| s);
    (TOC_KINDS.contains(&kind) && schema != "-").then(|| TocItem {
        kind: kind.to_string(),
        schema: schema.to_string(),
        name: name.to_string(),
    })
}

/// The extension of a `CREATE EXTENSION [IF NOT EXISTS] name [WITH SCHEMA …];` line, unquoted.
pub(super) fn extension(line: &str) -> Option<String> {
    let rest = line.strip_prefix("CREATE EXTENSION ")?;
    let rest = rest.strip_prefix("IF NOT EXISTS ").unwrap_or(rest);
    let name = match rest.strip_prefix('"') {
        Some(q) => q.split('"').next()?.to_string(),
        None => rest.split([' ', ';']).next()?.to_string(),
    };
    (!name.is_empty()).then_some(name)
}

/// The table of a `COPY <table> (<columns>) FROM stdin;` line (`line` may be cut short; the
/// caller checked how the whole line ends).
pub(super) fn copy_table(line: &str) -> Option<String> {
    let rest = line.strip_prefix("COPY ")?;
    let mut in_quotes = false;
    for (i, c) in rest.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            ' ' if !in_quotes => return Some(rest[..i].to_string()),
            _ => {}
        }
    }
    None
}
