//! Just enough of PostgreSQL's lexer to know, at the start of each line of a plain dump, whether it
//! begins at statement level or inside a string, quoted identifier, dollar-quoted body or comment.
//!
//! The dump scanner needs that to tell pg_dump's own `COPY … FROM stdin;` and transaction lines
//! (`BEGIN;` … `COMMIT;` around large objects) from the same text inside a function body. It is
//! fed every byte outside COPY data, in any chunking.

/// Longest dollar-quote tag followed: a longer run after `$` is not taken for one (bounded memory
/// on hostile input; pg_dump writes tags of a few bytes, and a restore's gate re-reads every
/// statement with PostgreSQL's own parser).
const MAX_TAG: usize = 1024;

/// Lexer state between bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
enum State {
    /// Statement level.
    #[default]
    Top,
    /// After `--`, until the end of the line.
    LineComment,
    /// Inside `/* … */`, nested to this depth.
    Block(u32),
    /// Inside `'…'`; `escapes` for `E'…'` strings, where a backslash escapes the next byte.
    Single {
        /// An `E'…'` string.
        escapes: bool,
        /// The previous byte was an escaping backslash.
        backslash: bool,
        /// The previous byte was a `'` that may be the first of a doubled `''`.
        quote: bool,
    },
    /// Inside `"…"`.
    Double,
    /// After `$` and these tag characters, not yet closed by a second `$`.
    DollarOpen(Vec<u8>),
    /// Inside a dollar-quoted string opened by `tag` (including both `$`); `matched` bytes of
    /// the closing tag seen so far.
    Dollar {
        /// The delimiter, e.g. `$$` or `$_$`.
        tag: Vec<u8>,
        /// How much of the closing delimiter has been seen.
        matched: usize,
    },
}

/// Incremental lexer over the non-COPY text of a dump.
#[derive(Debug, Clone)]
pub struct SqlLexer {
    /// Where we are.
    state: State,
    /// The previous byte at statement level (to tell `E'` and `$1`/`a$b` apart).
    prev: u8,
    /// The byte before `prev`.
    prev2: u8,
    /// Parentheses open at statement level.
    depth: u32,
    /// Nothing significant since the last `;` at statement level (or since the start).
    boundary: bool,
    /// Something other than whitespace and comments was seen since [`SqlLexer::take_significant`].
    significant: bool,
}

impl Default for SqlLexer {
    fn default() -> Self {
        Self {
            state: State::Top,
            prev: b'\n',
            prev2: b'\n',
            depth: 0,
            boundary: true,
            significant: false,
        }
    }
}

fn ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

impl SqlLexer {
    /// True at statement level (not inside a string, identifier, body or block comment). A line
    /// comment ends with its line, so at the start of a line this is all that matters.
    pub fn at_top(&self) -> bool {
        matches!(self.state, State::Top | State::LineComment)
    }

    /// True where a new statement may begin: at statement level, outside parentheses, and with
    /// nothing but whitespace and comments since the last `;`.
    pub fn at_statement_start(&self) -> bool {
        self.at_top() && self.depth == 0 && self.boundary
    }

    /// Whether anything but whitespace and comments was fed since the last call.
    pub fn take_significant(&mut self) -> bool {
        std::mem::take(&mut self.significant)
    }

    /// Feeds bytes of one or more lines.
    pub fn feed(&mut self, data: &[u8]) {
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            match &mut self.state {
                State::Top => {
                    match b {
                        // Whitespace and the starts of comments are not significant.
                        b' ' | b'\t' | b'\r' | b'\n' | b'-' | b'/' => {}
                        b'*' if self.prev == b'/' => {}
                        b';' if self.depth == 0 => {
                            self.boundary = true;
                            self.significant = true;
                        }
                        b'(' => {
                            self.depth += 1;
                            self.boundary = false;
                            self.significant = true;
                        }
                        b')' => {
                            self.depth = self.depth.saturating_sub(1);
                            self.boundary = false;
                            self.significant = true;
                        }
                        _ => {
                            self.boundary = false;
                            self.significant = true;
                        }
                    }
                    match b {
                        b'\'' => {
                            let escapes = matches!(self.prev, b'E' | b'e') && !ident_byte(self.prev2);
                            self.state = State::Single {
                                escapes,
                                backslash: false,
                                quote: false,
                            };
                        }
                        b'"' => self.state = State::Double,
                        b'$' if !ident_byte(self.prev) => self.state = State::DollarOpen(vec![b'$']),
                        b'-' if self.prev == b'-' => self.state = State::LineComment,
                        b'*' if self.prev == b'/' => self.state = State::Block(1),
                        _ => {}
                    }
                    self.prev2 = self.prev;
                    self.prev = b;
                    // A `--` or `/*` consumed its second byte: it must not start anything else.
                    if !matches!(self.state, State::Top) {
                        self.prev = 0;
                    }
                }
                State::LineComment => {
                    if b == b'\n' {
                        self.state = State::Top;
                        self.prev = b'\n';
                    }
                }
                State::Block(depth) => {
                    if self.prev == b'*' && b == b'/' {
                        *depth -= 1;
                        self.prev = 0;
                        if *depth == 0 {
                            self.state = State::Top;
                            self.prev = b' ';
                        }
                    } else if self.prev == b'/' && b == b'*' {
                        *depth += 1;
                        self.prev = 0;
                    } else {
                        self.prev = b;
                    }
                }
                State::Single { escapes, backslash, quote } => {
                    if *quote {
                        *quote = false;
                        if b != b'\'' {
                            // The previous quote closed the string: this byte is at statement level.
                            self.state = State::Top;
                            self.prev = b'\'';
                            continue;
                        }
                    } else if *backslash {
                        *backslash = false;
                    } else if *escapes && b == b'\\' {
                        *backslash = true;
                    } else if b == b'\'' {
                        *quote = true;
                    } else {
                        // Skip ahead to the next byte that can matter.
                        let rest = &data[i + 1..];
                        let skip = if *escapes {
                            memchr::memchr2(b'\'', b'\\', rest)
                        } else {
                            memchr::memchr(b'\'', rest)
                        };
                        i += 1 + skip.unwrap_or(rest.len());
                        continue;
                    }
                }
                State::Double => {
                    if b == b'"' {
                        self.state = State::Top;
                        self.prev = b'"';
                    }
                }
                State::DollarOpen(tag) => {
                    if b == b'$' {
                        tag.push(b'$');
                        let tag = std::mem::take(tag);
                        self.state = State::Dollar { tag, matched: 0 };
                    } else if ident_byte(b) && !(tag.len() == 1 && b.is_ascii_digit()) && tag.len() < MAX_TAG {
                        tag.push(b);
                    } else {
                        // `$1` or a lone `$`: not a dollar quote.
                        self.state = State::Top;
                        self.prev = b'$';
                        continue;
                    }
                }
                State::Dollar { tag, matched } => {
                    if b == tag[*matched] {
                        *matched += 1;
                        if *matched == tag.len() {
                            self.state = State::Top;
                            self.prev = b'$';
                        }
                    } else {
                        *matched = usize::from(b == tag[0]);
                        if *matched == 0 {
                            let rest = &data[i + 1..];
                            i += 1 + memchr::memchr(tag[0], rest).unwrap_or(rest.len());
                            continue;
                        }
                    }
                }
            }
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether each line of `sql` starts at statement level.
    fn line_starts(sql: &str, chunk: usize) -> Vec<bool> {
        let mut lx = SqlLexer::default();
        let mut out = vec![lx.at_top()];
        let bytes = sql.as_bytes();
        let mut pending: Vec<u8> = Vec::new();
        for c in bytes.chunks(chunk) {
            pending.extend_from_slice(c);
            while let Some(p) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=p).collect();
                lx.feed(&line);
                out.push(lx.at_top());
            }
        }
        out.pop();
        out
    }

    #[test]
    fn knows_when_a_line_starts_inside_a_body_or_string() {
        let cases: &[(&str, &[bool])] = &[
            ("SELECT 1;\nCOMMIT;\n", &[true, true]),
            (
                "CREATE FUNCTION f() AS $$\nBEGIN\nCOMMIT;\nEND $$;\nCOMMIT;\n",
                &[true, false, false, false, true],
            ),
            ("AS $_$\nCOMMIT;\n$_$;\nBEGIN;\n", &[true, false, false, true]),
            ("AS $a$ $$ \nCOMMIT;\n$a$;\nx\n", &[true, false, false, true]),
            (
                "COMMENT ON TABLE t IS 'multi\nCOMMIT;\nit''s';\nBEGIN;\n",
                &[true, false, false, true],
            ),
            ("SELECT E'it\\'s\nstill';\nx\n", &[true, false, true]),
            ("SELECT 'a\\';\nx\n", &[true, true]),
            ("SELECT $1, a$b;\nx\n", &[true, true]),
            ("CREATE TABLE \"odd\n\"\"name\" ();\nx\n", &[true, false, true]),
            ("/* block /* nested */\nstill */\nx\n", &[true, false, true]),
            ("-- it's a comment\nx\n", &[true, true]),
        ];
        for (sql, want) in cases {
            for chunk in [1, 2, 3, 5, 64] {
                assert_eq!(line_starts(sql, chunk), *want, "chunk {chunk}: {sql:?}");
            }
        }
    }

    #[test]
    fn knows_where_a_statement_may_start() {
        let starts = |sql: &str| {
            let mut lx = SqlLexer::default();
            let mut out = Vec::new();
            for line in sql.split_inclusive('\n') {
                out.push(lx.at_statement_start());
                lx.feed(line.as_bytes());
            }
            out
        };
        let cases: &[(&str, &[bool])] = &[
            ("SELECT 1;\nCOMMIT;\n", &[true, true]),
            ("SELECT 1\nCOMMIT;\n", &[true, false]),
            (
                "CREATE VIEW v AS SELECT CASE WHEN a THEN 1\n        END;\nx;\n",
                &[true, false, true],
            ),
            (
                "CREATE RULE r AS ON INSERT TO t DO (\nDELETE FROM u;\nCOMMIT;\n);\n",
                &[true, false, false, false],
            ),
            ("SELECT 1; -- done\n/* note */\nBEGIN;\n", &[true, true, true]),
        ];
        for (sql, want) in cases {
            assert_eq!(starts(sql), *want, "{sql:?}");
        }
    }
}
