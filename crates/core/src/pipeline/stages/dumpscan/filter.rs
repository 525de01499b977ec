//! The restore filter of the dump scanner: which lines at the start of a statement are passed
//! to psql, which are pg_dump's own large-object transaction lines (removed), and which would
//! break the restore's transaction (removed and reported: the filter fails closed).

use super::privileges::{classify, FIRST_WORDS};
use super::{DumpScanner, Strip};

/// What happens to the current line when filtering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LineMode {
    /// Held back until it is clear what it is (only at the start of a statement).
    Undecided,
    /// Passed on.
    Pass,
    /// Removed.
    Drop,
}

/// psql commands pg_dump writes that may run inside the restore's transaction.
const ALLOWED_COMMANDS: &[&[u8]] = &[b"\\restrict", b"\\unrestrict"];
/// Statements that begin with these words end or replace the restore's transaction (pg_dump
/// writes none of them, except `BEGIN;`/`COMMIT;` around large objects and the `END;` that closes
/// a `BEGIN ATOMIC` body).
const TRANSACTION_WORDS: &[&str] = &["BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "PREPARE"];
/// Longest start of a statement held back while it may still be transaction control.
const MAX_HELD: usize = 256;
/// Longest line held back while it may be a privilege statement to leave out.
const MAX_PRIVILEGE_LINE: usize = 64 * 1024;

/// The words of a statement's start: leading whitespace skipped, upper case, one space between.
fn words(held: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(held)
        .split(|c: char| c.is_whitespace() || c == ';')
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_uppercase)
        .collect()
}

/// Whether a statement starting with `words` ends or replaces the transaction.
fn ends_transaction(words: &[String]) -> bool {
    match words.first().map(String::as_str) {
        Some("COMMIT" | "ROLLBACK" | "ABORT") => true,
        // `END;` alone closes a BEGIN ATOMIC body; `END TRANSACTION`/`END WORK` commit.
        Some("END") => words.len() > 1,
        Some("PREPARE") => words.get(1).is_some_and(|w| w == "TRANSACTION"),
        _ => false,
    }
}

impl DumpScanner {
    /// Records why a line was held back (the first reason is kept).
    pub(super) fn forbid(&mut self, why: String) {
        self.result.forbidden.get_or_insert(why);
    }

    /// Decides about the held start of a statement: `Some(mode)` once it is clear.
    fn decide(&mut self, ended: bool) -> Option<LineMode> {
        let held = &self.held[..];
        if held.first() == Some(&b'\\') {
            let word_end = held.iter().position(|b| b.is_ascii_whitespace()).or(ended.then_some(held.len()));
            let word = &held[..word_end.unwrap_or(held.len())];
            if word_end.is_none() && held.len() <= 16 {
                return None;
            }
            if ALLOWED_COMMANDS.contains(&word) {
                return Some(LineMode::Pass);
            }
            let shown = String::from_utf8_lossy(word).into_owned();
            self.forbid(format!(
                "the dump contains the psql command {shown}, which pgvigil does not run inside its restore transaction"
            ));
            return Some(LineMode::Drop);
        }
        if self.strip != Strip::Nothing {
            let text = String::from_utf8_lossy(held);
            let start = text.trim_start();
            let word = start.split_whitespace().next().unwrap_or("");
            let complete = ended || start.contains(char::is_whitespace);
            if !complete && FIRST_WORDS.iter().any(|w| w.starts_with(word)) {
                return None;
            }
            if complete && FIRST_WORDS.contains(&word) {
                if !ended && held.len() <= MAX_PRIVILEGE_LINE {
                    return None;
                }
                if ended && classify(&text).is_some_and(|k| self.strip.drops(k)) {
                    self.result.privilege_lines_removed += 1;
                    return Some(LineMode::Drop);
                }
            }
        }
        let w = words(held);
        if !ended {
            // Held while it may still be transaction control, which must never reach psql cut
            // short: psql runs what it holds when its input ends.
            let first = w.first().map(String::as_str).unwrap_or("");
            let may_matter = first.is_empty()
                || TRANSACTION_WORDS
                    .iter()
                    .any(|t| t.starts_with(first) || (w.len() > 1 && *t == first));
            if !may_matter {
                return Some(LineMode::Pass);
            }
            if held.len() <= MAX_HELD {
                return None;
            }
            if !ends_transaction(&w) && !TRANSACTION_WORDS.contains(&first) {
                return Some(LineMode::Pass);
            }
            self.forbid(
                "the dump contains a long transaction-control statement, which pgvigil does not run inside its restore transaction".into(),
            );
            return Some(LineMode::Drop);
        }
        match held {
            b"BEGIN;" => {
                self.in_large_objects = true;
                self.result.transaction_lines += 1;
                Some(LineMode::Drop)
            }
            b"COMMIT;" if self.in_large_objects => {
                self.in_large_objects = false;
                self.result.transaction_lines += 1;
                Some(LineMode::Drop)
            }
            _ if ends_transaction(&w) => {
                let shown: String = w.join(" ").chars().take(40).collect();
                self.forbid(format!("the dump contains {shown}, which would end the restore's transaction"));
                Some(LineMode::Drop)
            }
            _ => Some(LineMode::Pass),
        }
    }

    /// Passes one piece of the current line on, holding back the start of a statement until it
    /// is clear what it is.
    pub(super) fn emit(&mut self, head: &[u8], ended: bool, out: &mut Vec<u8>) {
        if self.mode == LineMode::Undecided {
            self.held.extend_from_slice(head);
            match self.decide(ended) {
                None => return,
                Some(LineMode::Pass) => {
                    out.extend_from_slice(&self.held);
                    if ended {
                        out.push(b'\n');
                    }
                    self.mode = LineMode::Pass;
                }
                Some(mode) => self.mode = mode,
            }
            self.held.clear();
            return;
        }
        if self.mode == LineMode::Pass {
            out.extend_from_slice(head);
            if ended {
                out.push(b'\n');
            }
        }
    }
}
