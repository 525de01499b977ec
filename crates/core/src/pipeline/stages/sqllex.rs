//! Just enough of PostgreSQL's lexer to know, at the start of each line of a plain dump, whether it
//! begins at statement level or inside a string, quoted identifier, dollar-quoted body or comment.
//!
//! The dump scanner needs that to tell pg_dump's own `COPY … FROM stdin;` and transaction lines
//! (`BEGIN;` … `COMMIT;` around large objects) from the same text inside a function body. It is
//! fed every byte outside COPY data, in any chunking.
//!
//! Where a statement ends follows psql's own rule ([`PsqlSplit`]): a `;` outside parentheses and
//! outside a `BEGIN … END` that psql counts in `CREATE [OR REPLACE] FUNCTION|PROCEDURE`.

/// Longest dollar-quote tag followed: a longer run after `$` is not taken for one (bounded memory
/// on hostile input; pg_dump writes tags of a few bytes, and a restore's gate re-reads every
/// statement with PostgreSQL's own parser).
const MAX_TAG: usize = 1024;

/// psql's rule for where a statement ends (`psqlscan.l`): a `;` ends it only outside parentheses
/// and outside `BEGIN … END`, which psql counts — from the unquoted words alone — in a statement
/// that starts `CREATE [OR REPLACE] FUNCTION` or `… PROCEDURE` (SQL-standard bodies, `BEGIN
/// ATOMIC … END`). psql applies it whatever the words mean (a function named `begin` counts too),
/// so pgvigil applies it exactly the same way: the text it judges as one statement is the text
/// psql sends as one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PsqlSplit {
    /// `BEGIN` (and `CASE` inside one) not yet closed by `END`.
    begin: u32,
    /// Unquoted words seen since the statement began.
    count: usize,
    /// The first letters of the first four words, where they are `create`, `or`, `replace`,
    /// `function` or `procedure` (0 otherwise).
    first: [u8; 4],
}

impl PsqlSplit {
    /// An unquoted word (identifier or keyword) at statement level, with `parens` open.
    pub fn word(&mut self, word: &[u8], parens: u32) {
        if self.count == 0 {
            self.first = [0; 4];
        }
        let lower: Vec<u8> = word.iter().map(u8::to_ascii_lowercase).collect();
        let tracked = matches!(lower.as_slice(), b"create" | b"function" | b"procedure" | b"or" | b"replace");
        if tracked && self.count < self.first.len() {
            self.first[self.count] = lower[0];
        }
        self.count += 1;
        let f = self.first;
        let routine = f[0] == b'c' && (f[1] == b'f' || f[1] == b'p' || (f[1] == b'o' && f[2] == b'r' && (f[3] == b'f' || f[3] == b'p')));
        if routine && parens == 0 {
            match lower.as_slice() {
                b"begin" => self.begin += 1,
                b"case" if self.begin >= 1 => self.begin += 1,
                b"end" if self.begin > 0 => self.begin -= 1,
                _ => {}
            }
        }
    }

    /// A `;` at statement level: whether psql ends the statement there.
    pub fn semicolon(&mut self, parens: u32) -> bool {
        let ends = parens == 0 && self.begin == 0;
        if ends {
            self.count = 0;
        }
        ends
    }

    /// Nothing of a statement has been read since the last end.
    pub fn at_end(&self) -> bool {
        self.count == 0 && self.begin == 0
    }
}

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
    /// psql's statement-end rule.
    split: PsqlSplit,
    /// The unquoted word being read at statement level (its first bytes; `None`: not in one).
    word: Option<Vec<u8>>,
    /// That word follows a lone `:`: psql reads `:name` as a variable, not as a word it counts.
    variable: bool,
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
            split: PsqlSplit::default(),
            word: None,
            variable: false,
        }
    }
}

fn ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// What may start an unquoted word (psql's `ident_start`).
fn word_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

/// What may continue one (psql's `ident_cont`).
fn word_cont(b: u8) -> bool {
    ident_byte(b) || b == b'$'
}

impl SqlLexer {
    /// True at statement level (not inside a string, identifier, body or block comment). A line
    /// comment ends with its line, so at the start of a line this is all that matters.
    pub fn at_top(&self) -> bool {
        matches!(self.state, State::Top | State::LineComment)
    }

    /// True outside every string, identifier, body and comment (a line comment included): where a
    /// backslash would be a psql command.
    pub fn in_plain_text(&self) -> bool {
        matches!(self.state, State::Top)
    }

    /// True where a new statement may begin: at statement level, outside parentheses, and with
    /// nothing but whitespace and comments since the last `;`.
    pub fn at_statement_start(&self) -> bool {
        self.at_top() && self.depth == 0 && self.boundary
    }

    /// Whether anything but whitespace and comments was fed since the last
    /// [`Self::take_significant`] (which it does not reset).
    pub fn significant(&self) -> bool {
        self.significant
    }

    /// Whether anything but whitespace and comments was fed since the last call.
    pub fn take_significant(&mut self) -> bool {
        std::mem::take(&mut self.significant)
    }

    /// The word being read ended before `next`: psql counts it, unless it was the prefix of a
    /// string constant (`E'…'`, `B'…'`, `X'…'`, `N'…'`, `U&'…'`).
    fn end_word(&mut self, next: u8) {
        let Some(word) = self.word.take() else { return };
        let prefix = matches!(
            (word.as_slice(), next),
            ([b'e' | b'E' | b'b' | b'B' | b'x' | b'X' | b'n' | b'N'], b'\'') | ([b'u' | b'U'], b'&')
        );
        if !prefix && !std::mem::take(&mut self.variable) {
            self.split.word(&word, self.depth);
        }
    }

    /// Feeds bytes of one or more lines.
    pub fn feed(&mut self, data: &[u8]) {
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            if matches!(self.state, State::Top) {
                match self.word.as_mut() {
                    // Only the first bytes matter: psql compares whole words with short keywords.
                    Some(w) if word_cont(b) && w.len() < 16 => w.push(b),
                    Some(_) if word_cont(b) => {}
                    Some(_) => self.end_word(b),
                    None if word_start(b) && !word_cont(self.prev) => {
                        self.variable = self.prev == b':' && self.prev2 != b':';
                        self.word = Some(vec![b]);
                    }
                    None => {}
                }
            }
            match &mut self.state {
                State::Top => {
                    match b {
                        // Whitespace and the starts of comments are not significant.
                        b' ' | b'\t' | b'\r' | b'\n' | b'-' | b'/' => {}
                        b'*' if self.prev == b'/' => {}
                        b';' if self.split.semicolon(self.depth) => {
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
                        b'$' if !word_cont(self.prev) => self.state = State::DollarOpen(vec![b'$']),
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
            // psql counts BEGIN … END in a routine's header and body, but not `:end` (a variable).
            (
                "CREATE FUNCTION f() RETURNS int LANGUAGE sql\nBEGIN ATOMIC SELECT a[1:end];\nSELECT 2;\nEND;\nx;\n",
                &[true, false, false, false, true],
            ),
            (
                "CREATE FUNCTION public.begin() RETURNS int AS $$ x $$;\nSELECT 1;\n",
                &[true, false],
            ),
            ("CREATE FUNCTION f() AS E'begin';\nSELECT 1;\n", &[true, true]),
        ];
        for (sql, want) in cases {
            assert_eq!(starts(sql), *want, "{sql:?}");
        }
    }
}
