//! The restore gate: nothing of a backup reaches psql before PostgreSQL's own parser has read it
//! and [`super::allow`] has let it through.
//!
//! Outside COPY data the dump is cut into candidates — the text up to a line that ends at
//! statement level (as [`crate::pipeline::stages::sqllex`] sees it) — and each candidate is parsed
//! with libpg_query. psql receives a candidate only when it parsed (so every byte of it is
//! accounted for as tokens of complete statements) and every statement in it is allowed. What
//! psql would read differently from the server's parser is refused outright:
//!
//! * a backslash outside quotes (a psql command; psql runs it wherever it stands), except the
//!   dump's own `\restrict`/`\unrestrict` lines, which are dropped (pgvigil restricts psql itself);
//! * a reference to one of psql's own variables (`:VERSION`, `:'DBNAME'`), which psql replaces
//!   before the server sees the text;
//! * a NUL byte, and `\.` followed by a carriage return (psql ends COPY data there, pg_dump never
//!   writes it);
//! * settings that change how the rest of the stream is lexed (see [`super::allow`]).
//!
//! A function the dump defines may still change `standard_conforming_strings` or
//! `client_encoding` while the restore runs (from an index expression, say). Candidates whose
//! lexing depends on those settings — a backslash right before a quote, or a non-ASCII byte right
//! before a backslash — are sent alone, right after pgvigil's own `SET` of both, so psql and the
//! server read them exactly as the parser did.
//!
//! Some allowed statements are dropped rather than passed on: pg_dump's own transaction lines
//! around large objects, ownership and privilege statements where the restore leaves them out, and
//! every statement about a subscription (a restore never creates one). Each must stand alone in
//! its candidate, and each is counted.

use super::allow::{self, Decision, KnownRoles};
use super::builds::{self, Build};
use super::Strip;
use crate::pipeline::stages::sqllex::PsqlSplit;
use std::fmt;

/// Longest statement (with the comments before it) a restore accepts.
pub const MAX_STATEMENT: usize = 16 * 1024 * 1024;
/// Most index builds noted ([`Gate::note_builds`]): past that none are, and everything keeps the
/// dump's order (memory stays bounded whatever a tampered dump holds).
const MAX_BUILDS: usize = 100_000;
/// Longest psql command line (`\restrict <key>`) read.
const MAX_COMMAND_LINE: usize = 1024;

/// psql's own variables (psql 13–18): a `:NAME` in the text would be replaced by their value.
const PSQL_VARIABLES: &str = "AUTOCOMMIT COMP_KEYWORD_CASE DBNAME ECHO ECHO_HIDDEN ENCODING ERROR FETCH_COUNT \
    HIDE_TABLEAM HIDE_TOAST_COMPRESSION HISTCONTROL HISTFILE HISTSIZE HOST IGNOREEOF LASTOID \
    LAST_ERROR_MESSAGE LAST_ERROR_SQLSTATE ON_ERROR_ROLLBACK ON_ERROR_STOP PORT PROMPT1 PROMPT2 PROMPT3 \
    QUIET ROW_COUNT SERVER_VERSION_NAME SERVER_VERSION_NUM SERVICE SHELL_ERROR SHELL_EXIT_CODE \
    SHOW_ALL_RESULTS SHOW_CONTEXT SINGLELINE SINGLESTEP SQLSTATE USER VERBOSITY VERSION VERSION_NAME \
    VERSION_NUM WATCH_INTERVAL SERVICEFILE PIPELINE_SYNC_COUNT PIPELINE_COMMAND_COUNT PIPELINE_RESULT_COUNT \
    pgvigil_xid pgvigil_pid";

/// Why a backup was not restored: it contains something pg_dump does not write, which could
/// reach the host, leave the restore's transaction or be read differently by psql and by pgvigil.
/// The backup is at fault. `line` is the line of the dump where the statement ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A psql command: a backslash outside quotes.
    PsqlCommand {
        /// Line in the dump.
        line: u64,
        /// The command (`\!`, `\copy`, …) when it starts a line, else `None`.
        command: Option<String>,
    },
    /// A reference to a psql variable.
    PsqlVariable {
        /// Line in the dump.
        line: u64,
        /// The variable.
        name: String,
    },
    /// A statement outside what pg_dump writes.
    Statement {
        /// Line in the dump.
        line: u64,
        /// What it is, in a few words.
        what: String,
    },
    /// Text PostgreSQL's parser cannot read.
    Unparseable {
        /// Line in the dump.
        line: u64,
        /// The parser's message.
        error: String,
    },
    /// A NUL byte.
    Nul {
        /// Line in the dump.
        line: u64,
    },
    /// A statement longer than [`MAX_STATEMENT`].
    TooLong {
        /// Line in the dump.
        line: u64,
    },
    /// A COPY that psql and pgvigil would not follow alike.
    Copy {
        /// Line in the dump.
        line: u64,
        /// What is wrong.
        what: &'static str,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::PsqlCommand { line, command: Some(c) } => write!(f, "the dump contains the psql command {c} (line {line})"),
            Refusal::PsqlCommand { line, command: None } => {
                write!(f, "the dump contains a psql command (a backslash outside quotes, line {line})")
            }
            Refusal::PsqlVariable { line, name } => write!(f, "the dump refers to the psql variable {name} (line {line})"),
            Refusal::Statement { line, what } => write!(f, "the dump contains {what} (line {line})"),
            Refusal::Unparseable { line, error } => write!(f, "PostgreSQL's parser cannot read the dump at line {line}: {error}"),
            Refusal::Nul { line } => write!(f, "the dump contains a NUL byte (line {line})"),
            Refusal::TooLong { line } => write!(
                f,
                "the dump contains a statement longer than {} MiB (line {line})",
                MAX_STATEMENT >> 20
            ),
            Refusal::Copy { line, what } => write!(f, "the dump contains {what} (line {line})"),
        }
    }
}

impl Refusal {
    /// The line of the dump it concerns.
    pub fn line(&self) -> u64 {
        match self {
            Refusal::PsqlCommand { line, .. }
            | Refusal::PsqlVariable { line, .. }
            | Refusal::Statement { line, .. }
            | Refusal::Unparseable { line, .. }
            | Refusal::Nul { line }
            | Refusal::TooLong { line }
            | Refusal::Copy { line, .. } => *line,
        }
    }
}

/// What the gate lets through, and what it is told about the backup.
#[derive(Debug, Clone, Default)]
pub struct GateRules {
    /// Ownership and privilege statements left out.
    pub strip: Strip,
    /// Roles `SET ROLE` and `SET SESSION AUTHORIZATION` may name.
    pub roles: KnownRoles,
}

/// What the gate did with a candidate.
#[derive(Debug, Default)]
pub(super) struct Passed {
    /// The candidate starts COPY data.
    pub copy: bool,
    /// pg_dump's own transaction lines removed.
    pub transaction_lines: u32,
    /// Privilege statements removed.
    pub privilege_lines: u32,
    /// Subscription statements removed.
    pub subscription_lines: u32,
}

/// The gate's state between candidates.
#[derive(Debug, Default)]
pub(super) struct Gate {
    /// What it lets through.
    pub rules: GateRules,
    /// Inside pg_dump's large-object block (after its `BEGIN;`).
    in_large_objects: bool,
    /// The dump's own `\restrict` / `\unrestrict` lines seen.
    restrict_lines: (bool, bool),
    /// The client encoding the dump set last (normalised), re-asserted before sensitive text.
    encoding: Option<String>,
    /// Every session setting the dump changed, with the value it set last (`RESET`: reset), and
    /// `search_path` as `set_config` set it.
    settings: std::collections::BTreeMap<String, String>,
    /// The index builds passed so far, when noting them ([`Build`]).
    builds: Option<Vec<Build>>,
    /// More than [`MAX_BUILDS`] were passed: none are noted any more.
    too_many_builds: bool,
    /// Whether builds may still be noted (nothing a build might depend on passed yet).
    order: builds::Order,
    /// Bytes passed before the current chunk, and where the chunk's output began in the buffer
    /// given to [`Gate::candidate`]: what turns a place there into an offset in all that passed.
    passed: u64,
    /// See `passed`.
    out_start: usize,
}

/// Whether psql ends a statement exactly where `sql` (one candidate, as PostgreSQL's scanner
/// cut it into `tokens`) ends: psql sends text together until its own rule says a statement
/// ended ([`PsqlSplit`]), so a candidate that does not end there would reach the server
/// together with whatever follows — COPY data included — unjudged.
fn psql_ends_it(sql: &str, tokens: &[pg_query::protobuf::ScanToken]) -> bool {
    use pg_query::protobuf::{KeywordKind, Token};
    let mut split = PsqlSplit::default();
    let mut parens = 0u32;
    // The end of a lone `:` just before: psql reads `:name` as a variable, not a word it counts.
    let mut colon_end = -1;
    for t in tokens {
        let text = sql.get(t.start as usize..t.end as usize).unwrap_or("");
        match t.token {
            40 => parens += 1,
            41 => parens = parens.saturating_sub(1),
            59 => {
                split.semicolon(parens);
            }
            58 => colon_end = t.end,
            k if k == Token::SqlComment as i32 || k == Token::CComment as i32 => {}
            _ if t.start == colon_end => {}
            k if (k == Token::Ident as i32 && !text.starts_with('"')) || t.keyword_kind != KeywordKind::NoKeyword as i32 => {
                split.word(text.as_bytes(), parens);
            }
            _ => {}
        }
    }
    parens == 0 && split.at_end()
}

impl Gate {
    /// A gate with these rules.
    pub fn new(rules: GateRules) -> Self {
        Self { rules, ..Self::default() }
    }

    /// Notes the index builds it passes from now on ([`Gate::take_builds`]).
    pub fn note_builds(&mut self) {
        if !self.too_many_builds {
            self.builds.get_or_insert_with(Vec::new);
        }
    }

    /// The index builds noted since the last call.
    pub fn take_builds(&mut self) -> Vec<Build> {
        self.builds.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// A chunk begins; its output starts at `out_start` of the buffer given to [`Gate::candidate`].
    pub fn chunk_begins(&mut self, out_start: usize) {
        self.out_start = out_start;
    }

    /// The chunk ended with its output at `out_end` of that buffer.
    pub fn chunk_ends(&mut self, out_end: usize) {
        self.passed += out_end.saturating_sub(self.out_start) as u64;
        self.out_start = out_end;
    }

    /// Every session setting the dump changed so far, with its last value.
    pub fn settings(&self) -> &std::collections::BTreeMap<String, String> {
        &self.settings
    }

    /// Inside pg_dump's large-object block, and which of the dump's own `\restrict` /
    /// `\unrestrict` lines were seen.
    pub fn state(&self) -> (bool, (bool, bool)) {
        (self.in_large_objects, self.restrict_lines)
    }

    /// A psql command line at statement level (`line` without its newline): the dump's own
    /// `\restrict KEY` and `\unrestrict KEY` (once each) are dropped, anything else is refused.
    pub fn command_line(&mut self, line: &[u8], lineno: u64) -> Result<(), Refusal> {
        let text = String::from_utf8_lossy(&line[..line.len().min(MAX_COMMAND_LINE)]);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        let mut words = text.split(' ');
        let command = words.next().unwrap_or("");
        let key_ok = words
            .next()
            .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric()))
            && words.next().is_none();
        let seen = match command {
            "\\restrict" => Some(&mut self.restrict_lines.0),
            "\\unrestrict" => Some(&mut self.restrict_lines.1),
            _ => None,
        };
        match seen {
            Some(seen) if key_ok && !*seen && line.len() <= MAX_COMMAND_LINE => {
                *seen = true;
                Ok(())
            }
            _ => Err(Refusal::PsqlCommand {
                line: lineno,
                command: Some(command.chars().take(20).collect()),
            }),
        }
    }

    /// Judges one candidate (complete statements with the comments before them). Appends what
    /// psql is to receive to `out`.
    pub fn candidate(&mut self, text: &[u8], copy_line: bool, lineno: u64, out: &mut Vec<u8>) -> Result<Passed, Refusal> {
        let refuse_statement = |what: String| Refusal::Statement { line: lineno, what };
        if memchr::memchr(0, text).is_some() {
            return Err(Refusal::Nul { line: lineno });
        }
        let sql = String::from_utf8_lossy(text);
        psql_variables(&sql, lineno)?;
        let parsed = match pg_query::parse(&sql, 0) {
            Ok(p) => p.protobuf,
            Err(e) => return Err(unparseable(&sql, &e.to_string(), lineno)),
        };
        let tokens = pg_query::scan_tokens(&sql).map_err(|e| unparseable(&sql, &e.to_string(), lineno))?;
        if !psql_ends_it(&sql, &tokens) {
            return Err(refuse_statement(
                "a statement psql would read together with what follows (BEGIN … END outside a routine's body, or a routine named begin)"
                    .into(),
            ));
        }
        let sensitive = lexing_sensitive(text);
        if sensitive && parsed.stmts.len() > 1 {
            return Err(refuse_statement(
                "several statements on one line, one of them with a backslash before a quote".into(),
            ));
        }
        let mut passed = Passed::default();
        let mut keep = true;
        let count = parsed.stmts.len();
        // An index build alone in its candidate, outside the large-object block: its table and tablespace.
        let mut built = None;
        for (i, raw) in parsed.stmts.iter().enumerate() {
            let Some(stmt) = raw.stmt.as_ref().and_then(|n| n.node.as_ref()) else {
                continue;
            };
            let last = i + 1 == count;
            match allow::judge(stmt, &self.rules.roles) {
                Decision::Pass => {
                    if count == 1 && !self.in_large_objects && self.builds.is_some() && self.order.open() {
                        built = builds::table_built(stmt)
                            .map(|t| (t, builds::recurses(stmt)))
                            .zip(builds::tablespace_for(&self.settings));
                    }
                    if let Some((name, value)) = super::session::setting_changed(stmt) {
                        self.settings.insert(name, value);
                    }
                    if let pg_query::NodeEnum::VariableSetStmt(s) = stmt {
                        if s.name == "client_encoding" {
                            self.encoding = s.args.first().and_then(|a| match &a.node {
                                Some(pg_query::NodeEnum::AConst(c)) => match &c.val {
                                    Some(pg_query::protobuf::a_const::Val::Sval(v)) => Some(allow::encoding_key(&v.sval)),
                                    _ => None,
                                },
                                _ => None,
                            });
                        }
                    }
                }
                Decision::Copy if last && copy_line => passed.copy = true,
                Decision::Copy => {
                    return Err(Refusal::Copy {
                        line: lineno,
                        what: "a COPY … FROM stdin that is not alone on its line in pg_dump's form",
                    })
                }
                Decision::Begin | Decision::Commit if count > 1 => {
                    return Err(refuse_statement("transaction control beside other statements".into()))
                }
                Decision::Begin if !self.in_large_objects => {
                    self.in_large_objects = true;
                    passed.transaction_lines += 1;
                    keep = false;
                }
                Decision::Commit if self.in_large_objects => {
                    self.in_large_objects = false;
                    passed.transaction_lines += 1;
                    keep = false;
                }
                Decision::Begin | Decision::Commit => {
                    return Err(refuse_statement(
                        "transaction control outside pg_dump's large-object block, which would end or change the restore's transaction"
                            .into(),
                    ))
                }
                Decision::Ownership | Decision::Grant if count > 1 && self.rules.strip != Strip::Nothing => {
                    return Err(refuse_statement("a privilege statement beside other statements".into()))
                }
                Decision::Ownership if self.rules.strip != Strip::Nothing => {
                    passed.privilege_lines += 1;
                    keep = false;
                }
                Decision::Grant if self.rules.strip == Strip::OwnershipAndGrants => {
                    passed.privilege_lines += 1;
                    keep = false;
                }
                Decision::Ownership | Decision::Grant => {}
                Decision::Subscription if count > 1 => {
                    return Err(refuse_statement("a subscription statement beside other statements".into()))
                }
                Decision::Subscription => {
                    passed.subscription_lines += 1;
                    keep = false;
                }
                Decision::Refuse(what) => return Err(refuse_statement(what)),
            }
            if self.builds.is_some() {
                self.order.passed(stmt, built.is_some());
            }
        }
        if copy_line && !passed.copy {
            return Err(Refusal::Copy {
                line: lineno,
                what: "a line that reads like COPY … FROM stdin but is not one",
            });
        }
        if keep {
            let start = out.len();
            if sensitive {
                let encoding = self.encoding.as_deref().unwrap_or("utf8");
                out.extend_from_slice(format!("SET standard_conforming_strings = on;\nSET client_encoding = '{encoding}';\n").as_bytes());
            }
            out.extend_from_slice(text);
            let (passed, out_start) = (self.passed, self.out_start);
            let at = |p: usize| passed + p.saturating_sub(out_start) as u64;
            if let (Some(((table, recurses), tablespace)), Some(noted)) = (built, self.builds.as_mut()) {
                noted.push(Build {
                    start: at(start),
                    end: at(out.len()),
                    table,
                    tablespace,
                    recurses,
                });
                if noted.len() > MAX_BUILDS {
                    self.builds = None;
                    self.too_many_builds = true;
                }
            }
        }
        Ok(passed)
    }
}

/// Whether psql would read `text` differently were `standard_conforming_strings` off or the
/// client encoding one of the unsafe ones: a backslash right before a quote, or a byte above
/// ASCII right before a backslash.
fn lexing_sensitive(text: &[u8]) -> bool {
    memchr::memchr_iter(b'\\', text).any(|i| text.get(i + 1) == Some(&b'\'') || (i > 0 && text[i - 1] >= 0x80))
}

/// Why a candidate did not parse: a backslash outside quotes is a psql command; anything else is
/// the parser's own message (without the text it quotes, which may be data).
fn unparseable(sql: &str, error: &str, line: u64) -> Refusal {
    let backslash = match pg_query::scan_tokens(sql) {
        Ok(tokens) => tokens.iter().any(|t| t.token == i32::from(b'\\')),
        // PostgreSQL's lexer stops at its first error (trailing junk after a number, say, which
        // a psql command's argument may well be): then pgvigil's own lexer looks for it.
        Err(_) => {
            let mut lexer = crate::pipeline::stages::sqllex::SqlLexer::default();
            sql.as_bytes().iter().any(|b| {
                let command = *b == b'\\' && lexer.in_plain_text();
                lexer.feed(std::slice::from_ref(b));
                command
            })
        }
    };
    if backslash {
        return Refusal::PsqlCommand { line, command: None };
    }
    let error = match error.split_once(" at or near ") {
        Some((head, _)) => head.to_string(),
        None => error.chars().take(120).collect(),
    };
    Refusal::Unparseable { line, error }
}

/// Refuses a `:name`, `:'name'` or `:"name"` outside quotes that names one of psql's variables.
fn psql_variables(sql: &str, line: u64) -> Result<(), Refusal> {
    let b = sql.as_bytes();
    let maybe = memchr::memchr_iter(b':', b).any(|i| {
        let next = b.get(i + 1).copied().unwrap_or(b' ');
        let prev = if i > 0 { b[i - 1] } else { b' ' };
        prev != b':' && next != b':' && (next.is_ascii_alphabetic() || next == b'_' || next >= 0x80 || matches!(next, b'\'' | b'"' | b'{'))
    });
    if !maybe {
        return Ok(());
    }
    let Ok(tokens) = pg_query::scan_tokens(sql) else { return Ok(()) };
    for pair in tokens.windows(2) {
        let (colon, next) = (&pair[0], &pair[1]);
        if colon.token != i32::from(b':') || next.start != colon.end {
            continue;
        }
        let raw = sql.get(next.start as usize..next.end as usize).unwrap_or("");
        let name = raw.trim_matches(|c| c == '\'' || c == '"');
        if raw.starts_with('{') || PSQL_VARIABLES.split_whitespace().any(|v| v == name) {
            return Err(Refusal::PsqlVariable {
                line,
                name: name.chars().take(40).collect(),
            });
        }
    }
    // `:{?name}` scans as `:` and an unknown character.
    if sql.contains(":{?") {
        return Err(Refusal::PsqlVariable {
            line, name: "{?…}".into()
        });
    }
    Ok(())
}

#[cfg(test)]
#[path = "gate_tests.rs"]
mod tests;
