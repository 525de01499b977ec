//! Relation names as a dump writes them, read with PostgreSQL's own scanner, and the one edit a
//! one-table restore makes to a statement: the schema of the relations it rebuilds becomes the
//! staging schema, wherever the statement names them (`schema.name`, `schema.name.column`, or a
//! string such as `'schema.sequence'::regclass`).

use pg_query::protobuf::{KeywordKind, ScanToken, Token};
use std::collections::BTreeSet;

/// PostgreSQL's scanner over `sql` (through its protobuf form: `pg_query::scan_tokens` reads a
/// null pointer when there is no token at all), without comments: `public/**/.t` names `public.t`
/// to the parser, so it must to the restaging too.
fn scan(sql: &str) -> pg_query::Result<Vec<ScanToken>> {
    let comment = |t: &ScanToken| t.token == Token::SqlComment as i32 || t.token == Token::CComment as i32;
    pg_query::scan(sql).map(|r| r.tokens.into_iter().filter(|t| !comment(t)).collect())
}

/// Whether `sql` writes a name or string with Unicode escapes (`U&"…"`, `U&'…'`), an escape
/// string (`E'…'`) or a dollar-quoted one: pg_dump writes none of them outside routine bodies,
/// and the restaging would not read them as the parser does, so such a statement could name a
/// live relation while the parser reads it as one the restore rebuilds.
pub fn unusual_strings(sql: &str) -> bool {
    scan(sql).map_or(true, |tokens| {
        tokens.iter().any(|t| {
            let plain = sql.get(t.start as usize..t.end as usize).is_some_and(|s| s.starts_with('\''));
            t.token == Token::Uident as i32 || t.token == Token::Usconst as i32 || (t.token == Token::Sconst as i32 && !plain)
        })
    })
}

/// PostgreSQL's longest name in bytes (`NAMEDATALEN - 1`): the scanner cuts longer ones.
pub const MAX_NAME: usize = 63;

/// `name` cut as PostgreSQL's scanner cuts an identifier: at most [`MAX_NAME`] bytes, on a
/// character boundary.
fn truncated(mut name: String) -> String {
    name.truncate(name.floor_char_boundary(MAX_NAME));
    name
}

/// A relation's schema and name, unquoted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name {
    /// Its schema.
    pub schema: String,
    /// Its name.
    pub name: String,
}

impl Name {
    /// A name from its parts.
    pub fn new(schema: &str, name: &str) -> Self {
        Self {
            schema: schema.to_string(),
            name: name.to_string(),
        }
    }

    /// `schema.name` as SQL would write it, quoting only where needed.
    pub fn sql(&self) -> String {
        format!("{}.{}", ident(&self.schema), ident(&self.name))
    }

    /// Reads `schema.name` as SQL writes it (`public.invoices`, `public."Odd Name"`); unquoted
    /// parts fold to lower case as PostgreSQL folds them. `None` when it is not exactly that.
    pub fn parse(text: &str) -> Option<Self> {
        let tokens = scan(text).ok()?;
        match tokens.as_slice() {
            [a, dot, b] if dot.token == Token::Ascii46 as i32 => Some(Self {
                schema: word(text, a)?,
                name: word(text, b)?,
            }),
            _ => None,
        }
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.sql())
    }
}

/// An identifier as SQL writes it: bare when PostgreSQL would read it back unchanged, else
/// quoted (keywords are quoted too: never wrong, sometimes unneeded).
pub fn ident(name: &str) -> String {
    let bare = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && scan(name).is_ok_and(|t| t.len() == 1 && t[0].keyword_kind == KeywordKind::NoKeyword as i32);
    if bare {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// A string constant as SQL writes it (standard-conforming: quotes doubled).
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The identifier a token spells, unquoted and folded, or `None` when the token is no
/// identifier (keywords count: pg_dump leaves unreserved ones bare).
fn word(sql: &str, t: &ScanToken) -> Option<String> {
    let text = sql.get(t.start as usize..t.end as usize)?;
    // As PostgreSQL reads it in a UTF-8 database: only ASCII letters fold, and long names are cut.
    if t.token == Token::Ident as i32 {
        if let Some(inner) = text.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            return Some(truncated(inner.replace("\"\"", "\"")));
        }
        return Some(truncated(text.to_ascii_lowercase()));
    }
    (t.keyword_kind != KeywordKind::NoKeyword as i32).then(|| text.to_ascii_lowercase())
}

/// The content of a plain string constant token (`'…'`), `None` for any other token.
fn string_constant(sql: &str, t: &ScanToken) -> Option<String> {
    if t.token != Token::Sconst as i32 {
        return None;
    }
    let text = sql.get(t.start as usize..t.end as usize)?;
    let inner = text.strip_prefix('\'')?.strip_suffix('\'')?;
    Some(inner.replace("''", "'"))
}

/// Every `schema.name` the statement writes as identifiers (the first two parts of a longer
/// dotted name), with the byte range of its schema part.
fn qualified(sql: &str, tokens: &[ScanToken]) -> Vec<(Name, std::ops::Range<usize>)> {
    let dot = Token::Ascii46 as i32;
    let mut found = Vec::new();
    for i in 0..tokens.len().saturating_sub(2) {
        let after_dot = i > 0 && tokens[i - 1].token == dot;
        if after_dot || tokens[i + 1].token != dot {
            continue;
        }
        if let (Some(schema), Some(name)) = (word(sql, &tokens[i]), word(sql, &tokens[i + 2])) {
            found.push((Name { schema, name }, tokens[i].start as usize..tokens[i].end as usize));
        }
    }
    found
}

/// Every `'schema.name'` string that names a relation: cast to `regclass`, or the first argument
/// of `setval` (as pg_dump writes sequence defaults and values), with its byte range.
fn relation_strings(sql: &str, tokens: &[ScanToken]) -> Vec<(Name, std::ops::Range<usize>)> {
    let is_word = |i: usize, w: &str| tokens.get(i).and_then(|t| word(sql, t)).is_some_and(|x| x == w);
    let mut found = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let Some(name) = string_constant(sql, t).and_then(|s| Name::parse(&s)) else {
            continue;
        };
        let cast = tokens.get(i + 1).is_some_and(|n| n.token == Token::Typecast as i32) && is_word(i + 2, "regclass");
        let setval = i >= 2 && tokens[i - 1].token == Token::Ascii40 as i32 && is_word(i - 2, "setval");
        if cast || setval {
            found.push((name, t.start as usize..t.end as usize));
        }
    }
    found
}

/// The relations a statement names, as identifiers and as relation strings.
pub fn named(sql: &str) -> Vec<Name> {
    let Ok(tokens) = scan(sql) else { return Vec::new() };
    let mut names: Vec<Name> = qualified(sql, &tokens).into_iter().map(|(n, _)| n).collect();
    names.extend(relation_strings(sql, &tokens).into_iter().map(|(n, _)| n));
    names
}

/// `sql` with every reference to a relation of `moved` pointed at schema `stage` instead. A
/// statement the scanner cannot read is returned as it was (the gate refuses it later).
pub fn restage(sql: &str, moved: &BTreeSet<Name>, stage: &str) -> String {
    let Ok(tokens) = scan(sql) else { return sql.to_string() };
    let mut edits: Vec<(std::ops::Range<usize>, String)> = qualified(sql, &tokens)
        .into_iter()
        .filter(|(n, _)| moved.contains(n))
        .map(|(_, at)| (at, ident(stage)))
        .collect();
    for (n, at) in relation_strings(sql, &tokens) {
        if moved.contains(&n) {
            edits.push((at, literal(&Name::new(stage, &n.name).sql())));
        }
    }
    edits.sort_by_key(|(at, _)| at.start);
    let mut out = String::with_capacity(sql.len() + 32);
    let mut pos = 0;
    for (at, text) in edits {
        if at.start < pos {
            continue;
        }
        out.push_str(&sql[pos..at.start]);
        out.push_str(&text);
        pos = at.end;
    }
    out.push_str(&sql[pos..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_as_postgresql_reads_them() {
        let cases: [(&str, Option<(&str, &str)>); 7] = [
            ("public.invoices", Some(("public", "invoices"))),
            ("Public.Invoices", Some(("public", "invoices"))),
            ("public.\"Odd \"\"Name\"\"\"", Some(("public", "Odd \"Name\""))),
            ("\"my schema\".data", Some(("my schema", "data"))),
            ("invoices", None),
            ("a.b.c", None),
            ("public.invoices; DROP TABLE x", None),
        ];
        for (text, want) in cases {
            assert_eq!(Name::parse(text), want.map(|(s, n)| Name::new(s, n)), "{text}");
        }
    }

    #[test]
    fn identifiers_are_quoted_only_where_needed() {
        let cases = [
            ("invoices", "invoices"),
            ("Invoices", "\"Invoices\""),
            ("odd name", "\"odd name\""),
            ("select", "\"select\""),
            ("a\"b", "\"a\"\"b\""),
            ("x$pgvigil$", "\"x$pgvigil$\""),
            ("", "\"\""),
        ];
        for (name, want) in cases {
            assert_eq!(ident(name), want);
        }
    }

    #[test]
    fn only_the_moved_relations_change_schema() {
        let moved: BTreeSet<Name> = [
            Name::new("public", "t"),
            Name::new("public", "t_id_seq"),
            Name::new("public", "Odd"),
        ]
        .into();
        let cases = [
            ("CREATE TABLE public.t (id integer);", "CREATE TABLE s.t (id integer);"),
            (
                "ALTER TABLE ONLY public.t ALTER COLUMN id SET DEFAULT nextval('public.t_id_seq'::regclass);",
                "ALTER TABLE ONLY s.t ALTER COLUMN id SET DEFAULT nextval('s.t_id_seq'::regclass);",
            ),
            (
                "ALTER TABLE ONLY public.t ADD CONSTRAINT fk FOREIGN KEY (c) REFERENCES public.other(id);",
                "ALTER TABLE ONLY s.t ADD CONSTRAINT fk FOREIGN KEY (c) REFERENCES public.other(id);",
            ),
            (
                "ALTER SEQUENCE public.t_id_seq OWNED BY public.t.id;",
                "ALTER SEQUENCE s.t_id_seq OWNED BY s.t.id;",
            ),
            (
                "COMMENT ON COLUMN public.t.id IS 'public.t';",
                "COMMENT ON COLUMN s.t.id IS 'public.t';",
            ),
            ("COPY public.\"Odd\" (a) FROM stdin;", "COPY s.\"Odd\" (a) FROM stdin;"),
            (
                "SELECT pg_catalog.setval('public.t_id_seq', 42, true);",
                "SELECT pg_catalog.setval('s.t_id_seq', 42, true);",
            ),
            (
                "CREATE VIEW public.v AS SELECT x.t FROM other.t x;",
                "CREATE VIEW public.v AS SELECT x.t FROM other.t x;",
            ),
        ];
        for (sql, want) in cases {
            assert_eq!(restage(sql, &moved, "s"), want, "{sql}");
        }
    }

    #[test]
    fn named_relations_include_strings() {
        let got = named("ALTER TABLE ONLY public.t ALTER COLUMN id SET DEFAULT nextval('public.t_id_seq'::regclass);");
        assert_eq!(got, [Name::new("public", "t"), Name::new("public", "t_id_seq")]);
    }
}
