//! Reads a plain-SQL dump as it streams past and records what it contains: the exact number of
//! rows in every table's COPY block, the versions in the header, the extensions it creates, and
//! whether the dump ends with pg_dump's closing line. No extra queries, no buffering beyond the
//! start of the current line (and, when restoring, the statement being read).
//!
//! For a restore (or a deep check) a [`gate`] judges every statement outside COPY data with
//! PostgreSQL's own parser before any of it is passed on ([`DumpScanner::feed_filtered`]):
//! pg_dump's `BEGIN;` … `COMMIT;` around large objects and its `\restrict`/`\unrestrict` lines
//! are removed, privilege statements are left out as [`Strip`] asks, and anything a backup of
//! pg_dump's cannot contain stops the scan with a [`Refusal`] in [`ScanResult::forbidden`],
//! which fails the integrity check: the gate fails closed.

mod allow;
mod builds;
mod combine;
pub mod gate;
mod gating;
mod headers;
pub mod nodes;
mod privileges;
pub mod roles;
mod session;

pub use allow::KnownRoles;
pub use builds::Build;
pub use gate::{GateRules, Refusal};
pub use privileges::{split_qualified, unquote, Strip};

use super::sqllex::SqlLexer;
use gate::Gate;
pub use headers::TocItem;
use headers::{copy_table, extension, toc_entry};
use std::borrow::Cow;
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
    /// What the gate refused (the scan stopped there).
    pub forbidden: Option<Refusal>,
    /// Owner of each table, from `ALTER TABLE … OWNER TO …` (names as pg_dump wrote them).
    pub owners: BTreeMap<String, String>,
    /// Grantees of table-level grants on each table (`PUBLIC` or a role, as pg_dump wrote it).
    pub grants: BTreeMap<String, BTreeSet<String>>,
    /// Ownership and privilege statements the filter left out (see [`Strip`]).
    pub privilege_lines_removed: u32,
    /// Subscription statements the filter left out: a restore never creates subscriptions.
    pub subscription_lines_removed: u32,
    /// Every role the dump's ownership, privilege, session-authorization and policy statements
    /// name (as pg_dump wrote them).
    pub roles: BTreeSet<String>,
    /// Every COPY block, in dump order: where it starts and ends in the uncompressed dump.
    pub copies: Vec<CopySpan>,
    /// The table of contents: the objects pg_dump's headers name, of the kinds a restore must
    /// recreate (see [`toc_entry`]).
    pub toc: Vec<TocItem>,
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

/// Most tables, COPY blocks, headers and privilege entries a restore keeps track of: memory stays
/// bounded whatever a tampered dump holds.
const MAX_ENTRIES: usize = 4_000_000;

impl ScanResult {
    /// More entries than one scan keeps ([`MAX_ENTRIES`]): what parts scanned apart and added
    /// up ([`ScanResult::then`]) must not hold where one stream would stop.
    pub fn too_many_entries(&self) -> bool {
        self.entries() > MAX_ENTRIES
    }

    /// Entries kept so far, over every map and list.
    fn entries(&self) -> usize {
        self.tables.len()
            + self.copies.len()
            + self.toc.len()
            + self.owners.len()
            + self.grants.len()
            + self.roles.len()
            + self.extensions.len()
    }
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
    /// Lines completed so far (for messages).
    lines: u64,
    /// The statement gate, when restoring or checking deeply.
    gate: Option<Gate>,
    /// Gate: the text read since the last judged candidate.
    candidate: Vec<u8>,
    /// Gate: whether the current line is a psql command line (`None` until its first byte).
    command: Option<bool>,
    /// Gate: the start of a COPY data line that begins with a backslash, held until it is clear
    /// that it is not `\.` with a carriage return (`None`: not holding).
    held: Option<Vec<u8>>,
    /// Nothing of the current line was read yet.
    fresh: bool,
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
            lines: 0,
            gate: None,
            candidate: Vec::new(),
            command: None,
            held: None,
            fresh: true,
            result: ScanResult::default(),
        }
    }
}

impl DumpScanner {
    /// A fresh scanner.
    pub fn new() -> Self {
        Self::default()
    }

    /// A scanner that judges every statement with the [`gate`] (a restore or a deep check).
    pub fn gated(rules: GateRules) -> Self {
        Self {
            gate: Some(Gate::new(rules)),
            ..Self::default()
        }
    }

    /// Notes the index builds the gate passes from now on (see [`Build`]), to be taken with
    /// [`DumpScanner::take_builds`]; offsets are into all that [`DumpScanner::feed_filtered`]
    /// appended.
    pub fn noting_builds(mut self) -> Self {
        if let Some(gate) = self.gate.as_mut() {
            gate.note_builds();
        }
        self
    }

    /// The index builds noted since the last call.
    pub fn take_builds(&mut self) -> Vec<Build> {
        self.gate.as_mut().map(Gate::take_builds).unwrap_or_default()
    }

    /// Scans the next chunk.
    pub fn feed(&mut self, data: &[u8]) {
        self.scan(data, None);
    }

    /// Scans the next chunk and appends to `out` what psql is to receive (see the module
    /// documentation). Nothing is appended once the gate refused.
    pub fn feed_filtered(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.scan(data, Some(out));
    }

    /// Whether the gate refused something: the scan has stopped.
    pub fn refused(&self) -> bool {
        self.result.forbidden.is_some()
    }

    fn refuse(&mut self, why: Refusal) {
        self.result.forbidden.get_or_insert(why);
    }

    fn scan(&mut self, mut data: &[u8], mut out: Option<&mut Vec<u8>>) {
        if self.refused() {
            return;
        }
        let out_start = out.as_deref().map_or(0, Vec::len);
        if let (Some(gate), Some(_)) = (self.gate.as_mut(), out.as_deref()) {
            gate.chunk_begins(out_start);
        }
        if self.gate.is_some() && memchr::memchr(0, data).is_some() {
            // pg_dump never writes one; psql and the parser would each read it their own way.
            self.refuse(Refusal::Nul { line: self.lines + 1 });
            return;
        }
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
                if self.gate.is_some() {
                    self.gate_piece(head, ended);
                } else {
                    self.lexer.feed(head);
                    if ended {
                        self.lexer.feed(b"\n");
                    }
                }
            } else if let Some(out) = out.as_deref_mut() {
                // COPY data is not parsed: it reaches psql only after the gate passed its COPY.
                self.copy_piece(head, ended, out);
            }
            self.fresh = ended || (self.fresh && head.is_empty());
            if !ended {
                self.push(head);
                break;
            }
            self.lines += 1;
            let in_copy = self.copy.is_some();
            let (whole, from_stdin) = if self.line.is_empty() && head.len() <= MAX_LINE {
                (Cow::Borrowed(head), head.len() >= TAIL && head.ends_with(b"FROM stdin;"))
            } else {
                self.push(head);
                (Cow::Owned(std::mem::take(&mut self.line)), self.tail.ends_with(b"FROM stdin;"))
            };
            self.on_line(&whole, from_stdin);
            if self.gate.is_some() && !in_copy {
                let mut sink = Vec::new();
                self.gate_line_end(&whole, out.as_deref_mut().unwrap_or(&mut sink));
                if self.result.entries() > MAX_ENTRIES {
                    self.refuse(Refusal::Statement {
                        line: self.lines,
                        what: format!("more than {MAX_ENTRIES} tables, COPY blocks and named objects"),
                    });
                }
            }
            if let Cow::Owned(mut kept) = whole {
                kept.clear();
                self.line = kept;
            }
            self.tail.clear();
            self.line_at.0 = pos;
            self.line_top = self.copy.is_none() && self.lexer.at_top();
            self.line_start = self.copy.is_none() && self.lexer.at_statement_start();
            self.command = None;
            if self.refused() {
                break;
            }
            data = rest;
        }
        if self.refused() {
            // Nothing of a refused chunk is passed on.
            if let Some(out) = out {
                out.truncate(out_start);
            }
        } else if let (Some(gate), Some(out)) = (self.gate.as_mut(), out) {
            gate.chunk_ends(out.len());
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
        if self.copy.is_some() {
            // psql also ends COPY data at `\.` followed by a carriage return; pg_dump never
            // writes that, so a restore refuses it rather than follow psql there.
            let cr = line == b"\\.\r";
            if cr && self.gate.is_some() {
                self.refuse(Refusal::Copy {
                    line: self.lines,
                    what: "a COPY block ended by \\. and a carriage return",
                });
            }
            if line == b"\\." || cr {
                let (table, rows) = self.copy.take().expect("checked");
                *self.result.tables.entry(table.clone()).or_insert(0) += rows;
                let (begin, end) = (self.copy_begin, self.line_at.1);
                self.cuts.push(end);
                self.result.copies.push(CopySpan { table, begin, end, rows });
            } else if let Some((_, rows)) = &mut self.copy {
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
            if let Some(entry) = toc_entry(text) {
                self.result.toc.push(entry);
            } else if let Some(v) = text.strip_prefix("-- Dumped from database version ") {
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
        self.judge_the_rest();
        self.result
    }

    /// Gate: a dump that ends complete (its closing line read) may hold no statement that never
    /// ended: nothing of it reached psql, but a backup of pg_dump's holds no such text.
    fn judge_the_rest(&mut self) {
        let complete = self.result.complete && !self.refused();
        let Some(gate) = self.gate.as_mut() else { return };
        if !complete || !self.lexer.take_significant() {
            return;
        }
        let candidate = std::mem::take(&mut self.candidate);
        let why = match gate.candidate(&candidate, false, self.lines, &mut Vec::new()) {
            Err(why) if !matches!(why, Refusal::Unparseable { .. }) => why,
            _ => Refusal::Statement {
                line: self.lines,
                what: "a statement that does not end before the dump does".into(),
            },
        };
        self.refuse(why);
    }
}

#[cfg(test)]
mod tests;
