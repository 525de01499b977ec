//! Reads a plain-SQL dump as it streams past and records what it contains: the exact number of
//! rows in every table's COPY block, the versions in the header, and whether the dump ends with
//! pg_dump's closing line. No extra queries, no buffering beyond the current line.

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
}

/// Incremental scanner; feed it the uncompressed dump in any chunking.
#[derive(Debug, Default)]
pub struct DumpScanner {
    /// Current line so far (capped at [`MAX_LINE`]).
    line: Vec<u8>,
    /// Table whose COPY block we are inside, with its row count so far.
    copy: Option<(String, u64)>,
    /// Results so far.
    result: ScanResult,
}

impl DumpScanner {
    /// A fresh scanner.
    pub fn new() -> Self {
        Self::default()
    }

    /// Scans the next chunk.
    pub fn feed(&mut self, mut data: &[u8]) {
        self.result.bytes += data.len() as u64;
        while let Some(pos) = memchr::memchr(b'\n', data) {
            let (head, rest) = data.split_at(pos);
            if self.line.is_empty() {
                self.on_line(head);
            } else {
                self.push(head);
                let line = std::mem::take(&mut self.line);
                self.on_line(&line);
                self.line = line;
                self.line.clear();
            }
            data = &rest[1..];
        }
        self.push(data);
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
        if text == CLOSING_LINE {
            self.result.complete = true;
            return;
        }
        let harmless_tail = text.starts_with("--") || text.starts_with("\\unrestrict");
        if !harmless_tail {
            self.result.complete = false;
        }
        if let Some(v) = text.strip_prefix("-- Dumped from database version ") {
            self.result.dumped_from = Some(v.trim().to_string());
        } else if let Some(v) = text.strip_prefix("-- Dumped by pg_dump version ") {
            self.result.dumped_by = Some(v.trim().to_string());
        } else if let Some(table) = copy_table(text) {
            self.copy = Some((table, 0));
        }
    }

    /// Bytes scanned so far.
    pub fn bytes(&self) -> u64 {
        self.result.bytes
    }

    /// Ends the scan.
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
}
