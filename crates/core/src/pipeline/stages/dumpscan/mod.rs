//! Reads a plain-SQL dump as it streams past and records what it contains: the exact number of
//! rows in every table's COPY block, the versions in the header, the extensions it creates, and
//! whether the dump ends with pg_dump's closing line. No extra queries, no buffering beyond the
//! start of the current line.
//!
//! For a restore it also passes the dump on ([`DumpScanner::feed_filtered`]) without what would
//! break the restore's own transaction. pg_dump wraps large objects in `BEGIN;` … `COMMIT;`: those
//! two lines are removed, and only those — exactly `BEGIN;` at the start of a statement, and the
//! `COMMIT;` that closes it. Anything else that would end the transaction or leave psql's control
//! (a `COMMIT;` or `ROLLBACK;` elsewhere, a psql command other than `\restrict`/`\unrestrict`) is
//! not passed on and is reported in [`ScanResult::forbidden`], which fails the integrity check:
//! the filter fails closed. Lines are judged at statement level (see [`super::sqllex`]), so a
//! procedure body or a string that says `COMMIT;` is passed on untouched.

mod filter;
mod privileges;
pub mod roles;

pub use privileges::{split_qualified, unquote, Strip};

use super::sqllex::SqlLexer;
use filter::LineMode;
use std::collections::{BTreeMap, BTreeSet};

/// The line pg_dump writes at the very end of a complete plain dump.
pub const CLOSING_LINE: &str = "-- PostgreSQL database dump complete";
/// Longest line prefix kept while scanning; COPY data lines are only checked for `\.`.
const MAX_LINE: usize = 64 * 1024;
/// Bytes kept from the end of the current line (a COPY header longer than [`MAX_LINE`] still
/// ends with `FROM stdin;`).
const TAIL: usize = 16;

/// What the scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanResult {
    /// Rows per table, keyed by the table name as pg_dump printed it (`public.t`, `"S"."T"`).
    pub tables: BTreeMap<String, u64>,
    /// True when the closing line was seen and only comments, blank lines or `\unrestrict` follow.
    pub complete: bool,
    /// `-- Dumped from database version …`
    pub dumped_from: Option<String>,
    /// `-- Dumped by pg_dump version …`
    pub dumped_by: Option<String>,
    /// Total bytes scanned.
    pub bytes: u64,
    /// A COPY block that was still open at the end (the dump was cut inside it).
    pub open_copy: Option<String>,
    /// Extensions the dump creates (`CREATE EXTENSION … name …`), in order.
    pub extensions: Vec<String>,
    /// pg_dump's own transaction lines removed by [`DumpScanner::feed_filtered`].
    pub transaction_lines: u32,
    /// The first line that was held back because it would break the restore's transaction.
    pub forbidden: Option<String>,
    /// Owner of each table, from `ALTER TABLE … OWNER TO …` (names as pg_dump wrote them).
    pub owners: BTreeMap<String, String>,
    /// Grantees of table-level grants on each table (`PUBLIC` or a role, as pg_dump wrote it).
    pub grants: BTreeMap<String, BTreeSet<String>>,
    /// Ownership and privilege statements the filter left out (see [`Strip`]).
    pub privilege_lines_removed: u32,
    /// Every role the dump's ownership, privilege, session-authorization and policy statements
    /// name (as pg_dump wrote them).
    pub roles: BTreeSet<String>,
    /// Every COPY block, in dump order: where it starts and ends in the uncompressed dump.
    pub copies: Vec<CopySpan>,
}

/// One table's COPY block in the uncompressed dump: from the start of its `COPY … FROM stdin;`
/// line to just after its `\.` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySpan {
    /// The table as pg_dump printed it.
    pub table: String,
    /// Offset of the first byte of the `COPY` line.
    pub begin: u64,
    /// Offset just past the `\.` line's newline.
    pub end: u64,
    /// Data rows in the block.
    pub rows: u64,
}

/// Incremental scanner; feed it the uncompressed dump in any chunking.
#[derive(Debug)]
pub struct DumpScanner {
    /// Current line so far (capped at [`MAX_LINE`]).
    line: Vec<u8>,
    /// The last [`TAIL`] bytes of the current line.
    tail: Vec<u8>,
    /// Table whose COPY block we are inside, with its row count so far.
    copy: Option<(String, u64)>,
    /// Offset where the current COPY block's `COPY` line began.
    copy_begin: u64,
    /// Offset where the current line began, and where it ends (past its newline) once complete.
    line_at: (u64, u64),
    /// Offsets where a COPY block began or ended since the last [`DumpScanner::take_cuts`].
    cuts: Vec<u64>,
    /// Statement-level tracking of the text outside COPY data.
    lexer: SqlLexer,
    /// The current line began at statement level, outside COPY data (comments count).
    line_top: bool,
    /// The current line began where a new statement may start, outside COPY data.
    line_start: bool,
    /// Filtering: what happens to the current line.
    mode: LineMode,
    /// Filtering: bytes of the current line held back while undecided.
    held: Vec<u8>,
    /// Filtering: inside pg_dump's large-object block (after its `BEGIN;`).
    in_large_objects: bool,
    /// Filtering: which privilege statements are left out.
    strip: Strip,
    /// Results so far.
    result: ScanResult,
}

impl Default for DumpScanner {
    fn default() -> Self {
        Self {
            line: Vec::new(),
            tail: Vec::new(),
            copy: None,
            copy_begin: 0,
            line_at: (0, 0),
            cuts: Vec::new(),
            lexer: SqlLexer::default(),
            line_top: true,
            line_start: true,
            mode: LineMode::Undecided,
            held: Vec::new(),
            in_large_objects: false,
            strip: Strip::Nothing,
            result: ScanResult::default(),
        }
    }
}

impl DumpScanner {
    /// A fresh scanner.
    pub fn new() -> Self {
        Self::default()
    }

    /// A scanner whose filter also leaves out the privilege statements `strip` names.
    pub fn stripping(strip: Strip) -> Self {
        Self { strip, ..Self::default() }
    }

    /// Scans the next chunk.
    pub fn feed(&mut self, data: &[u8]) {
        self.scan(data, None);
    }

    /// Scans the next chunk and appends it to `out` without the lines that would break the
    /// restore's transaction (see the module documentation).
    pub fn feed_filtered(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.scan(data, Some(out));
    }

    fn scan(&mut self, mut data: &[u8], mut out: Option<&mut Vec<u8>>) {
        let mut pos = self.result.bytes;
        self.result.bytes += data.len() as u64;
        loop {
            let (head, rest, ended) = match memchr::memchr(b'\n', data) {
                Some(p) => (&data[..p], &data[p + 1..], true),
                None => (data, &data[data.len()..], false),
            };
            pos += (data.len() - rest.len()) as u64;
            self.line_at.1 = pos;
            if self.copy.is_none() {
                self.lexer.feed(head);
                if ended {
                    self.lexer.feed(b"\n");
                }
            }
            if let Some(out) = out.as_deref_mut() {
                self.emit(head, ended, out);
            }
            if !ended {
                self.push(head);
                return;
            }
            if self.line.is_empty() && head.len() <= MAX_LINE {
                self.on_line(head, head.len() >= TAIL && head.ends_with(b"FROM stdin;"));
            } else {
                self.push(head);
                let line = std::mem::take(&mut self.line);
                let from_stdin = self.tail.ends_with(b"FROM stdin;");
                self.on_line(&line, from_stdin);
                self.line = line;
                self.line.clear();
            }
            self.tail.clear();
            self.line_at.0 = pos;
            self.line_top = self.copy.is_none() && self.lexer.at_top();
            self.line_start = self.copy.is_none() && self.lexer.at_statement_start();
            self.mode = if self.line_start { LineMode::Undecided } else { LineMode::Pass };
            data = rest;
        }
    }

    fn push(&mut self, data: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.line.len());
        self.line.extend_from_slice(&data[..data.len().min(room)]);
        if data.len() >= TAIL {
            self.tail.clear();
            self.tail.extend_from_slice(&data[data.len() - TAIL..]);
        } else {
            self.tail.extend_from_slice(data);
            let excess = self.tail.len().saturating_sub(TAIL);
            self.tail.drain(..excess);
        }
    }

    fn on_line(&mut self, line: &[u8], from_stdin: bool) {
        if let Some((_, rows)) = &mut self.copy {
            if line == b"\\." {
                let (table, rows) = self.copy.take().expect("checked");
                *self.result.tables.entry(table.clone()).or_insert(0) += rows;
                let (begin, end) = (self.copy_begin, self.line_at.1);
                self.cuts.push(end);
                self.result.copies.push(CopySpan { table, begin, end, rows });
            } else {
                *rows += 1;
            }
            return;
        }
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        if text.is_empty() {
            return;
        }
        if self.line_top && text == CLOSING_LINE {
            self.result.complete = true;
            return;
        }
        let harmless_tail = self.line_top && (text.starts_with("--") || text.starts_with("\\unrestrict"));
        if !harmless_tail {
            self.result.complete = false;
        }
        if self.line_top {
            if let Some(v) = text.strip_prefix("-- Dumped from database version ") {
                self.result.dumped_from = Some(v.trim().to_string());
            } else if let Some(v) = text.strip_prefix("-- Dumped by pg_dump version ") {
                self.result.dumped_by = Some(v.trim().to_string());
            }
        }
        if !self.line_start {
            return;
        }
        if let Some(table) = from_stdin.then(|| copy_table(text)).flatten() {
            self.copy = Some((table, 0));
            self.copy_begin = self.line_at.0;
            self.cuts.push(self.copy_begin);
        } else if let Some(ext) = extension(text) {
            self.result.extensions.push(ext);
        } else {
            if let Some((table, owner)) = privileges::table_owner(text) {
                self.result.owners.insert(table, owner);
            } else if let Some((table, grantee)) = privileges::table_grant(text) {
                self.result.grants.entry(table).or_default().insert(grantee);
            }
            self.result.roles.extend(privileges::roles_named(text));
        }
    }

    /// Bytes scanned so far.
    pub fn bytes(&self) -> u64 {
        self.result.bytes
    }

    /// Offsets in the uncompressed dump, in order, where a COPY block began (its `COPY` line) or
    /// ended (past its `\.` line) since the last call: where the backup starts a new gzip member,
    /// so that each table's data can be fetched on its own.
    pub fn take_cuts(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.cuts)
    }

    /// Ends the scan. When filtering, a last line without its newline that is still held back is
    /// never passed on (the stream was cut; nothing will be committed anyway).
    pub fn finish(mut self) -> ScanResult {
        if !self.line.is_empty() {
            self.line_at.1 = self.result.bytes;
            let line = std::mem::take(&mut self.line);
            let from_stdin = self.tail.ends_with(b"FROM stdin;");
            self.on_line(&line, from_stdin);
        }
        if let Some((table, _)) = self.copy.take() {
            self.result.complete = false;
            self.result.open_copy = Some(table);
        }
        self.result
    }
}

/// The extension of a `CREATE EXTENSION [IF NOT EXISTS] name [WITH SCHEMA …];` line, unquoted.
fn extension(line: &str) -> Option<String> {
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
fn copy_table(line: &str) -> Option<String> {
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

#[cfg(test)]
mod tests;
