//! Reads a plain-SQL dump as it streams past and records what it contains: the exact number of
//! rows in every table's COPY block, the versions in the header, the extensions it creates, and
//! whether the dump ends with pg_dump's closing line. No extra queries, no buffering beyond the
//! current line.
//!
//! For a restore it can also pass the dump on with the dump's own transaction lines removed
//! ([`DumpScanner::feed_filtered`]): pg_dump wraps large objects in `BEGIN;` … `COMMIT;`, and a
//! restore that must be all or nothing cannot let the dump commit half of itself. Lines are judged
//! only at statement level (see [`super::sqllex`]), so a procedure body that says `COMMIT;` is
//! passed on untouched.

use super::sqllex::SqlLexer;
use std::collections::BTreeMap;

/// The line pg_dump writes at the very end of a complete plain dump.
pub const CLOSING_LINE: &str = "-- PostgreSQL database dump complete";
/// Longest line prefix kept while scanning; COPY data lines are only checked for `\.`.
const MAX_LINE: usize = 64 * 1024;

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
    /// Transaction-control lines removed by [`DumpScanner::feed_filtered`].
    pub transaction_lines: u32,
}

/// Statements that would end or replace the restore's own transaction; removed when filtering.
const TRANSACTION_CONTROL: &[&str] = &[
    "BEGIN;",
    "BEGIN TRANSACTION;",
    "BEGIN WORK;",
    "START TRANSACTION;",
    "COMMIT;",
    "COMMIT TRANSACTION;",
    "COMMIT WORK;",
    "END;",
    "END TRANSACTION;",
    "END WORK;",
    "ROLLBACK;",
    "ROLLBACK TRANSACTION;",
    "ROLLBACK WORK;",
    "ABORT;",
];
/// Longest entry of [`TRANSACTION_CONTROL`].
const MAX_TRANSACTION_LINE: usize = 21;

/// Incremental scanner; feed it the uncompressed dump in any chunking.
#[derive(Debug)]
pub struct DumpScanner {
    /// Current line so far (capped at [`MAX_LINE`]).
    line: Vec<u8>,
    /// Table whose COPY block we are inside, with its row count so far.
    copy: Option<(String, u64)>,
    /// Statement-level tracking of the text outside COPY data.
    lexer: SqlLexer,
    /// The current line began at statement level, outside COPY data.
    line_top: bool,
    /// Filtering: bytes of the current line held back while it may still be a transaction line.
    held: Vec<u8>,
    /// Filtering: the current line cannot be a transaction line; pass it on as it comes.
    passthrough: bool,
    /// Results so far.
    result: ScanResult,
}

impl Default for DumpScanner {
    fn default() -> Self {
        Self {
            line: Vec::new(),
            copy: None,
            lexer: SqlLexer::default(),
            line_top: true,
            held: Vec::new(),
            passthrough: false,
            result: ScanResult::default(),
        }
    }
}

fn transaction_line(line: &[u8]) -> bool {
    let text = String::from_utf8_lossy(line);
    let normal = text.split_whitespace().collect::<Vec<_>>().join(" ").to_ascii_uppercase();
    TRANSACTION_CONTROL.contains(&normal.as_str())
}

fn may_become_transaction_line(part: &[u8]) -> bool {
    part.len() <= MAX_TRANSACTION_LINE + 8 && part.iter().all(|b| b.is_ascii_alphabetic() || matches!(b, b' ' | b'\t' | b';'))
}

impl DumpScanner {
    /// A fresh scanner.
    pub fn new() -> Self {
        Self::default()
    }

    /// Scans the next chunk.
    pub fn feed(&mut self, data: &[u8]) {
        self.scan(data, None);
    }

    /// Scans the next chunk and appends it to `out` without the dump's own transaction-control
    /// lines (see the module documentation).
    pub fn feed_filtered(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.scan(data, Some(out));
    }

    fn scan(&mut self, mut data: &[u8], mut out: Option<&mut Vec<u8>>) {
        self.result.bytes += data.len() as u64;
        loop {
            let (head, rest, ended) = match memchr::memchr(b'\n', data) {
                Some(p) => (&data[..p], &data[p + 1..], true),
                None => (data, &data[data.len()..], false),
            };
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
            if self.line.is_empty() {
                self.on_line(head);
            } else {
                self.push(head);
                let line = std::mem::take(&mut self.line);
                self.on_line(&line);
                self.line = line;
                self.line.clear();
            }
            self.line_top = self.copy.is_none() && self.lexer.at_top();
            self.passthrough = false;
            data = rest;
        }
    }

    /// Passes one piece of the current line on, holding back what may be a transaction line.
    fn emit(&mut self, head: &[u8], ended: bool, out: &mut Vec<u8>) {
        if !self.line_top || self.passthrough {
            out.extend_from_slice(head);
            if ended {
                out.push(b'\n');
            }
            return;
        }
        self.held.extend_from_slice(head);
        if ended {
            if transaction_line(&self.held) {
                self.result.transaction_lines += 1;
            } else {
                out.extend_from_slice(&self.held);
                out.push(b'\n');
            }
            self.held.clear();
        } else if !may_become_transaction_line(&self.held) {
            out.extend_from_slice(&self.held);
            self.held.clear();
            self.passthrough = true;
        }
    }

    fn push(&mut self, data: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.line.len());
        self.line.extend_from_slice(&data[..data.len().min(room)]);
    }

    fn on_line(&mut self, line: &[u8]) {
        if let Some((_, rows)) = &mut self.copy {
            if line == b"\\." {
                let (table, rows) = self.copy.take().expect("checked");
                *self.result.tables.entry(table).or_insert(0) += rows;
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
        if !self.line_top {
            return;
        }
        if let Some(v) = text.strip_prefix("-- Dumped from database version ") {
            self.result.dumped_from = Some(v.trim().to_string());
        } else if let Some(v) = text.strip_prefix("-- Dumped by pg_dump version ") {
            self.result.dumped_by = Some(v.trim().to_string());
        } else if let Some(table) = copy_table(text) {
            self.copy = Some((table, 0));
        } else if let Some(ext) = extension(text) {
            self.result.extensions.push(ext);
        }
    }

    /// Bytes scanned so far.
    pub fn bytes(&self) -> u64 {
        self.result.bytes
    }

    /// Ends the scan. A last line without its newline is scanned, but when filtering it is never
    /// passed on if it could still be a transaction line.
    pub fn finish(mut self) -> ScanResult {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.on_line(&line);
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

/// The table of a `COPY <table> (<columns>) FROM stdin;` line.
fn copy_table(line: &str) -> Option<String> {
    let rest = line.strip_prefix("COPY ")?;
    if !line.ends_with("FROM stdin;") {
        return None;
    }
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
mod tests {
    use super::*;

    const DUMP: &str = "--\n-- PostgreSQL database dump\n--\n\n-- Dumped from database version 15.18\n-- Dumped by pg_dump version 15.18\n\nSET x = 1;\n\nCOPY public.items (id, name) FROM stdin;\n1\ta\n2\tb\\nwith newline\n3\t\\.\n\\.\n\nCOPY \"My Schema\".\"Odd Table\" (id) FROM stdin;\n\\.\n\nCOPY public.t2 (a) FROM stdin;\n7\n\\.\n\n--\n-- PostgreSQL database dump complete\n--\n\n";

    fn scan_in_chunks(data: &[u8], chunk: usize) -> ScanResult {
        let mut s = DumpScanner::new();
        for c in data.chunks(chunk) {
            s.feed(c);
        }
        s.finish()
    }

    #[test]
    fn counts_rows_whatever_the_chunking() {
        for chunk in [1, 2, 3, 7, 64, 4096] {
            let r = scan_in_chunks(DUMP.as_bytes(), chunk);
            assert_eq!(r.tables.get("public.items"), Some(&3), "chunk {chunk}");
            assert_eq!(r.tables.get("\"My Schema\".\"Odd Table\""), Some(&0));
            assert_eq!(r.tables.get("public.t2"), Some(&1));
            assert!(r.complete);
            assert_eq!(r.dumped_by.as_deref(), Some("15.18"));
            assert_eq!(r.bytes, DUMP.len() as u64);
        }
    }

    #[test]
    fn detects_truncation() {
        let cases = [
            (DUMP.find("2\tb").unwrap(), false, Some("public.items")),
            (DUMP.find("-- PostgreSQL database dump complete").unwrap(), false, None),
            (DUMP.len(), true, None),
        ];
        for (cut, complete, open) in cases {
            let r = scan_in_chunks(&DUMP.as_bytes()[..cut], 5);
            assert_eq!(r.complete, complete, "cut at {cut}");
            assert_eq!(r.open_copy.as_deref(), open);
        }
    }

    #[test]
    fn unrestrict_after_the_closing_line_is_still_complete() {
        let d = format!("{DUMP}\\unrestrict abc\n\n");
        assert!(scan_in_chunks(d.as_bytes(), 3).complete);
        let d = format!("{DUMP}SELECT 1;\n");
        assert!(!scan_in_chunks(d.as_bytes(), 3).complete);
    }

    #[test]
    fn filtering_removes_only_the_dumps_own_transaction_lines() {
        let dump = "SET x = 1;\nCREATE EXTENSION IF NOT EXISTS hstore WITH SCHEMA public;\nCREATE PROCEDURE p() LANGUAGE plpgsql AS $$\nBEGIN\nCOMMIT;\nEND $$;\n\nCOPY public.t (a) FROM stdin;\nCOMMIT;\n\\.\n\nBEGIN;\n\nSELECT pg_catalog.lo_open('16390', 131072);\nSELECT pg_catalog.lowrite(0, '\\x68656c6c6f');\nCOMMIT;\n\n--\n-- PostgreSQL database dump complete\n--\n\n";
        let want = dump
            .replacen("\nBEGIN;\n\nSELECT", "\n\nSELECT", 1)
            .replacen("'\\x68656c6c6f');\nCOMMIT;\n", "'\\x68656c6c6f');\n", 1);
        for chunk in [1, 2, 3, 7, 64, 4096] {
            let mut s = DumpScanner::new();
            let mut out = Vec::new();
            for c in dump.as_bytes().chunks(chunk) {
                s.feed_filtered(c, &mut out);
            }
            let r = s.finish();
            assert_eq!(String::from_utf8(out).unwrap(), want, "chunk {chunk}");
            assert_eq!(r.transaction_lines, 2, "chunk {chunk}");
            assert_eq!(r.tables.get("public.t"), Some(&1), "a COPY row that reads COMMIT; is data");
            assert_eq!(r.extensions, vec!["hstore".to_string()]);
            assert!(r.complete);
        }
    }

    #[test]
    fn a_cut_transaction_line_is_never_passed_on() {
        for cut in ["SELECT 1;\nCOMMIT", "SELECT 1;\nCOMMIT;", "SELECT 1;\nEND"] {
            let mut s = DumpScanner::new();
            let mut out = Vec::new();
            s.feed_filtered(cut.as_bytes(), &mut out);
            assert_eq!(out, b"SELECT 1;\n", "{cut:?}");
            assert!(!s.finish().complete);
        }
    }
}
