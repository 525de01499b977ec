//! The dump, line by line, reduced to what rebuilds one table (see [`super::select`]): psql
//! command lines and session settings pass, statements about the table's family pass with its
//! relations pointed at the staging schema, COPY blocks of the family pass with their `COPY`
//! line restaged, and everything else is dropped. The schema part is held until the first COPY
//! block (or the end), because partitions and sequences join the family only in statements that
//! follow their definitions; from there on the filter streams.
//!
//! What passes is still untrusted: the gate judges all of it afterwards, as for a full restore.

use super::names::{named, Name};
use super::select::{wanted_select, Choice, Family};
use crate::pipeline::stages::dumpscan::gate::MAX_STATEMENT;
use crate::pipeline::stages::sqllex::SqlLexer;
use std::collections::BTreeMap;

/// Most bytes of schema held before the first COPY block.
pub const MAX_SCHEMA: usize = 512 * 1024 * 1024;

/// A statement or psql command line of the schema part, held until the family is known.
enum Held {
    Command(String),
    Statement(String),
}

/// The COPY block being read.
struct Block {
    /// Its rows are sent.
    keep: bool,
    /// The table as pg_dump printed it.
    table: String,
    /// Rows so far.
    rows: u64,
}

/// The line-by-line filter.
pub struct Filter {
    family: Family,
    stage: String,
    lexer: SqlLexer,
    /// The line being read.
    line: Vec<u8>,
    /// Lines read so far (outside and inside COPY data).
    lines: u64,
    /// The statement being read (whole lines).
    stmt: String,
    /// The schema part, until the family is known (`None` once it is).
    held: Option<(Vec<Held>, usize)>,
    copy: Option<Block>,
    /// Rows of each COPY block sent, by the table as pg_dump printed it.
    pub rows: BTreeMap<String, u64>,
    /// What was left out on purpose, for the operator.
    pub left_out: Vec<String>,
    /// Why the filter stopped because the backup is damaged (nothing more is sent).
    pub error: Option<String>,
    /// Why the filter stopped because a one-table restore cannot handle this backup (nothing
    /// more is sent; the backup is not at fault).
    pub unsupported: Option<String>,
}

fn parse(sql: &str) -> Option<pg_query::ParseResult> {
    pg_query::parse(sql, 0).ok()
}

impl Filter {
    /// A filter for `family`, staging into schema `stage`.
    pub fn new(family: Family, stage: &str) -> Self {
        Self {
            family,
            stage: stage.to_string(),
            lexer: SqlLexer::default(),
            line: Vec::new(),
            lines: 0,
            stmt: String::new(),
            held: Some((Vec::new(), 0)),
            copy: None,
            rows: BTreeMap::new(),
            left_out: Vec::new(),
            error: None,
            unsupported: None,
        }
    }

    /// Nothing more is read: see [`Filter::error`] and [`Filter::unsupported`].
    pub fn stopped(&self) -> bool {
        self.error.is_some() || self.unsupported.is_some()
    }

    /// The family as known so far (complete once [`Filter::resolve`] ran).
    pub fn family(&self) -> &Family {
        &self.family
    }

    /// Feeds SQL in any chunking; appends what passes to `out`.
    pub fn feed(&mut self, mut data: &[u8], out: &mut Vec<u8>) {
        while !self.stopped() && !data.is_empty() {
            let Some(nl) = memchr::memchr(b'\n', data) else {
                self.line.extend_from_slice(data);
                if self.line.len() > MAX_STATEMENT {
                    self.error = Some(format!("the backup holds a line longer than {} MiB", MAX_STATEMENT >> 20));
                }
                return;
            };
            self.line.extend_from_slice(&data[..nl]);
            data = &data[nl + 1..];
            let line = std::mem::take(&mut self.line);
            self.on_line(&line, out);
            self.line = line;
            self.line.clear();
        }
    }

    fn on_line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        self.lines += 1;
        if let Some(block) = self.copy.as_mut() {
            let end = line == b"\\.";
            if block.keep {
                out.extend_from_slice(line);
                out.push(b'\n');
            }
            if end {
                let block = self.copy.take().expect("checked");
                if block.keep {
                    *self.rows.entry(block.table).or_insert(0) += block.rows;
                }
            } else {
                block.rows += 1;
            }
            return;
        }
        let Ok(text) = std::str::from_utf8(line) else {
            // Rewriting names in another encoding could change the text around them.
            self.unsupported = Some(format!(
                "line {} of the SQL read is not UTF-8 (the source database's encoding is another); restore the whole backup into a new database and copy the table from there",
                self.lines
            ));
            return;
        };
        if self.lexer.at_statement_start() && text.starts_with('\\') {
            // A psql command line (`\restrict`, `\unrestrict`): the gate judges it.
            self.stmt.clear();
            let command = format!("{text}\n");
            match self.held.as_mut() {
                Some((held, size)) => {
                    *size += command.len();
                    held.push(Held::Command(command));
                }
                None => out.extend_from_slice(command.as_bytes()),
            }
            return;
        }
        self.lexer.feed(line);
        self.lexer.feed(b"\n");
        self.stmt.push_str(text);
        self.stmt.push('\n');
        if self.stmt.len() > MAX_STATEMENT {
            self.error = Some(format!("the backup holds a statement longer than {} MiB", MAX_STATEMENT >> 20));
            return;
        }
        if self.lexer.at_statement_start() && self.lexer.take_significant() {
            let stmt = std::mem::take(&mut self.stmt);
            self.on_statement(stmt, out);
        }
    }

    fn on_statement(&mut self, stmt: String, out: &mut Vec<u8>) {
        let last = stmt.trim_end().lines().last().unwrap_or_default();
        if last.starts_with("COPY ") && last.ends_with("FROM stdin;") {
            self.resolve(out);
            let table = printed_table(last);
            let keep = named(last).first().is_some_and(|n| self.family.has(n));
            if keep {
                out.extend_from_slice(self.family.restaged(&stmt, &self.stage).as_bytes());
            }
            self.copy = Some(Block { keep, table, rows: 0 });
            return;
        }
        match self.held.as_mut() {
            Some((held, size)) => {
                *size += stmt.len();
                if *size > MAX_SCHEMA {
                    self.unsupported = Some(format!(
                        "the schema part of this backup is larger than {} MiB; restore the whole backup into a new database and copy the table from there",
                        MAX_SCHEMA >> 20
                    ));
                    return;
                }
                held.push(Held::Statement(stmt));
            }
            None => self.send(&stmt, None, out),
        }
    }

    /// Decides one statement and sends it when kept. Statements that name nothing of the family
    /// and set nothing are dropped without parsing (large objects, other tables).
    fn send(&mut self, stmt: &str, parsed: Option<pg_query::ParseResult>, out: &mut Vec<u8>) {
        let body = stmt.trim_start_matches(|c: char| c.is_whitespace());
        let body = skip_comments(body);
        let setting = body.starts_with("SET ") || body.starts_with("RESET ") || body.starts_with("SELECT pg_catalog.set_config(");
        if parsed.is_none() && !setting && !self.mentions_family(stmt) {
            return;
        }
        let Some(parsed) = parsed.or_else(|| parse(stmt)) else {
            // The gate refuses what PostgreSQL cannot parse; it says where.
            out.extend_from_slice(stmt.as_bytes());
            return;
        };
        let select = parsed.protobuf.stmts.iter().all(|s| {
            matches!(
                s.stmt.as_ref().and_then(|n| n.node.as_ref()),
                Some(pg_query::NodeEnum::SelectStmt(_))
            )
        });
        let choice = if select {
            // (`wanted_select` reads only plain string constants: anything else is left out.)
            if wanted_select(stmt, &parsed, &self.family) && !super::names::unusual_strings(stmt) {
                Choice::Keep(self.family.restaged(stmt, &self.stage))
            } else {
                Choice::Skip
            }
        } else {
            self.family.choose(stmt, &parsed, &self.stage)
        };
        match choice {
            Choice::Keep(sql) => out.extend_from_slice(sql.as_bytes()),
            Choice::Skip => {}
            Choice::LeftOut(what) => self.left_out.push(what),
            Choice::Refuse(why) => {
                self.error.get_or_insert(format!("the backup holds {why}"));
            }
        }
    }

    /// Whether `stmt` mentions a relation or index of the family by name (a cheap test before
    /// parsing).
    fn mentions_family(&self, stmt: &str) -> bool {
        let f = &self.family;
        // As written: bare, or quoted with its own quotes doubled.
        f.relations.iter().chain(f.indexes.iter()).chain(f.statistics.iter()).any(|n| {
            // In a string constant (`'schema.name'::regclass`) quotes are doubled again.
            let quoted = n.name.replace('"', "\"\"");
            [n.name.clone(), n.name.replace('\'', "''"), quoted.replace('\'', "''"), quoted]
                .iter()
                .any(|form| stmt.contains(form.as_str()))
        })
    }

    /// Learns the family from the held schema part and sends what of it is kept. Runs once: at
    /// the first COPY block, at the end of the range before the data, or at the end.
    pub fn resolve(&mut self, out: &mut Vec<u8>) {
        let Some((held, _)) = self.held.take() else { return };
        let parsed: Vec<(Held, Option<pg_query::ParseResult>)> = held
            .into_iter()
            .map(|h| match h {
                Held::Statement(s) => {
                    let p = parse(&s);
                    (Held::Statement(s), p)
                }
                command => (command, None),
            })
            .collect();
        let trees: Vec<&pg_query::ParseResult> = parsed.iter().filter_map(|(_, p)| p.as_ref()).collect();
        self.family.grow(&trees);
        for (item, tree) in parsed {
            if self.stopped() {
                return;
            }
            match item {
                Held::Command(c) => out.extend_from_slice(c.as_bytes()),
                Held::Statement(s) => match tree {
                    Some(t) => self.send(&s, Some(t), out),
                    None => out.extend_from_slice(s.as_bytes()),
                },
            }
        }
    }

    /// The end of the dump: what is still held is decided.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.on_line(&line, out);
        }
        self.resolve(out);
        if self.copy.is_some() {
            self.error.get_or_insert_with(|| "the backup ends inside a COPY block".into());
        }
    }
}

/// The text after leading `--` comment lines.
fn skip_comments(mut body: &str) -> &str {
    while body.starts_with("--") {
        body = body.split_once('\n').map_or("", |(_, rest)| rest).trim_start();
    }
    body
}

/// The table of a `COPY … FROM stdin;` line as pg_dump printed it (the key of the manifest's
/// row counts).
fn printed_table(line: &str) -> String {
    let rest = line.strip_prefix("COPY ").unwrap_or(line);
    let mut quoted = false;
    for (i, c) in rest.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => return rest[..i].to_string(),
            _ => {}
        }
    }
    rest.to_string()
}

/// `name` as a manifest names it (as pg_dump printed it), read back.
pub fn manifest_name(printed: &str) -> Option<Name> {
    Name::parse(printed)
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "filter_hostile_tests.rs"]
mod hostile_tests;
