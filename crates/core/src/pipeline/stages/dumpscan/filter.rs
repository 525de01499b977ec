//! The restore filter of the dump scanner: which lines at the start of a statement are passed
//! to psql, which are pg_dump's own large-object transaction lines (removed), and which would
//! break the restore's transaction (removed and reported: the filter fails closed).

use super::DumpScanner;

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
/// Whole lines that would end the restore's transaction and that pg_dump never writes.
const FORBIDDEN_LINES: &[&[u8]] = &[b"ROLLBACK;", b"ABORT;", b"START TRANSACTION;"];

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
        if !ended {
            // `END;` ends a `BEGIN ATOMIC` body and is passed on, but only whole: a cut `END` or
            // `COMMIT` must never reach psql, which runs what it holds when its input ends.
            let may_still_matter = [&b"BEGIN;"[..], b"COMMIT;", b"END;"]
                .iter()
                .chain(FORBIDDEN_LINES)
                .any(|l| l.starts_with(held));
            return (!may_still_matter).then_some(LineMode::Pass);
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
            b"COMMIT;" => {
                self.forbid("the dump contains a COMMIT outside pg_dump's large-object block".into());
                Some(LineMode::Drop)
            }
            l if FORBIDDEN_LINES.contains(&l) => {
                let shown = String::from_utf8_lossy(l).into_owned();
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
