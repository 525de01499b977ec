//! The scanner's side of the [`super::gate`]: which bytes of a line join the statement being read,
//! when a statement is complete enough to be judged, and how COPY data is passed on.

use super::gate::{self, Refusal};
use super::DumpScanner;

impl DumpScanner {
    /// One piece of a COPY data line, passed on; a line that starts with a backslash is held
    /// until it is clear it is not `\.` and a carriage return (never passed on: the gate refuses it).
    pub(super) fn copy_piece(&mut self, head: &[u8], ended: bool, out: &mut Vec<u8>) {
        const CR_END: &[u8] = b"\\.\r";
        if self.held.is_none() && self.fresh && head.first() == Some(&b'\\') {
            self.held = Some(Vec::new());
        }
        let Some(held) = self.held.as_mut() else {
            out.extend_from_slice(head);
            if ended {
                out.push(b'\n');
            }
            return;
        };
        held.extend_from_slice(head);
        if ended || held.len() > CR_END.len() {
            let held = self.held.take().unwrap_or_default();
            if !(ended && held == CR_END) {
                out.extend_from_slice(&held);
                if ended {
                    out.push(b'\n');
                }
            }
        }
    }

    /// Gate: one piece of a line outside COPY data. A line that starts with a backslash where a
    /// statement may start is a psql command line, kept apart; the rest joins the candidate.
    pub(super) fn gate_piece(&mut self, head: &[u8], ended: bool) {
        if self.command.is_none() {
            match head.first() {
                Some(&b) => self.command = Some(self.line_start && b == b'\\'),
                None if ended => self.command = Some(false),
                None => return,
            }
        }
        if self.command == Some(true) {
            // Read whole by `on_line`; never fed to the lexer.
            return;
        }
        self.lexer.feed(head);
        if ended {
            self.lexer.feed(b"\n");
        }
        if self.candidate.len() + head.len() + 1 > gate::MAX_STATEMENT {
            self.refuse(Refusal::TooLong { line: self.lines + 1 });
            return;
        }
        self.candidate.extend_from_slice(head);
        if ended {
            self.candidate.push(b'\n');
        }
    }

    /// Gate: whether what was read so far ends cleanly, as a part of an object read on its own
    /// must: at a line's end, outside COPY data, at statement level with no statement begun (a
    /// statement or psql command cut there would join what follows, unjudged), and outside
    /// pg_dump's large-object block.
    pub fn ends_cleanly(&self) -> bool {
        self.fresh
            && self.line.is_empty()
            && self.copy.is_none()
            && self.held.is_none()
            && self.lexer.at_statement_start()
            && !self.lexer.significant()
            && self.gate.as_ref().is_some_and(|g| !g.state().0)
    }

    /// Gate: the session settings the dump changed (see [`gate::Gate::settings`]), and which of its
    /// own `\restrict` / `\unrestrict` lines were seen.
    pub fn session(&self) -> (std::collections::BTreeMap<String, String>, (bool, bool)) {
        self.gate.as_ref().map(|g| (g.settings().clone(), g.state().1)).unwrap_or_default()
    }

    /// Gate: the end of a line that began outside COPY data. Judges the candidate once it ends
    /// at statement level; a COPY that starts here must end the candidate.
    pub(super) fn gate_line_end(&mut self, whole: &[u8], out: &mut Vec<u8>) {
        let Some(gate) = self.gate.as_mut() else { return };
        let line = self.lines;
        if self.command == Some(true) {
            if let Err(why) = gate.command_line(whole, line) {
                self.refuse(why);
            }
            return;
        }
        let copy_line = self.copy.is_some();
        let at_end = self.lexer.at_statement_start();
        if copy_line && !at_end {
            self.refuse(Refusal::Copy {
                line,
                what: "a line that starts COPY data but does not end a statement",
            });
            return;
        }
        if !at_end || !self.lexer.take_significant() {
            return;
        }
        let candidate = std::mem::take(&mut self.candidate);
        match gate.candidate(&candidate, copy_line, line, out) {
            Ok(passed) => {
                self.result.transaction_lines += passed.transaction_lines;
                self.result.privilege_lines_removed += passed.privilege_lines;
                self.result.subscription_lines_removed += passed.subscription_lines;
            }
            Err(why) => self.refuse(why),
        }
        self.candidate = candidate;
        self.candidate.clear();
    }
}
