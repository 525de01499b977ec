//! The operator's own checks (`VERIFY_QUERIES_FILE`): split into statements, each run against the
//! restored database. A check fails when it errors, returns no rows, or its first value is NULL,
//! false, or a zero of any numeric type; the record keeps each check's text and value.

use super::checks::blame;
use super::CouldNotRun;
use crate::infra::pg;
use crate::infra::secret::DbUrl;
use crate::records::history::UserCheckEvidence;
use sqlx::postgres::PgConnection;
use sqlx::{Column, Row, TypeInfo};

/// Splits a file of SQL statements on `;` outside quotes, dollar quotes and comments.
pub fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = sql.chars().collect();
    let mut i = 0;
    let mut dollar: Option<String> = None;
    let mut quote: Option<char> = None;
    while i < chars.len() {
        let c = chars[i];
        if let Some(tag) = &dollar {
            if sql_at(&chars, i, tag) {
                cur.push_str(tag);
                i += tag.chars().count();
                dollar = None;
                continue;
            }
        } else if let Some(q) = quote {
            if c == q {
                quote = None;
            }
        } else if c == '\'' || c == '"' {
            quote = Some(c);
        } else if c == '-' && chars.get(i + 1) == Some(&'-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        } else if c == '$' {
            let end = chars[i + 1..].iter().position(|&ch| ch == '$').map(|p| i + 1 + p);
            if let Some(end) = end {
                let tag: String = chars[i..=end].iter().collect();
                if tag[1..tag.len() - 1].chars().all(|ch| ch.is_alphanumeric() || ch == '_') {
                    cur.push_str(&tag);
                    i = end + 1;
                    dollar = Some(tag);
                    continue;
                }
            }
        } else if c == ';' {
            if !cur.trim().is_empty() {
                out.push(cur.trim().to_string());
            }
            cur.clear();
            i += 1;
            continue;
        }
        cur.push(c);
        i += 1;
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

fn sql_at(chars: &[char], i: usize, tag: &str) -> bool {
    tag.chars().enumerate().all(|(k, t)| chars.get(i + k) == Some(&t))
}

/// One operator check, run.
#[derive(Debug)]
pub(super) struct UserCheck {
    /// What it returned.
    pub(super) evidence: UserCheckEvidence,
    /// Why it failed, when it did (the backup is blamed).
    pub(super) failure: Option<String>,
}

/// Types whose zero means "false" for a check.
const NUMERIC_TYPES: &[&str] = &["INT2", "INT4", "INT8", "NUMERIC", "FLOAT4", "FLOAT8", "OID", "MONEY"];

/// The verdict on a check's first value, given as text with its type's name: `Ok(())` when it
/// passes, otherwise why not.
pub fn judge_value(type_name: &str, value: Option<&str>) -> Result<(), &'static str> {
    let Some(v) = value else { return Err("returned NULL") };
    let v = v.trim();
    if type_name == "BOOL" {
        return if v == "t" || v == "true" { Ok(()) } else { Err("returned false") };
    }
    if NUMERIC_TYPES.contains(&type_name) {
        // Money prints with a currency symbol and separators; numbers may print as 0.000 or -0.
        let digits: String = v
            .chars()
            .filter(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | 'e' | 'E' | '+'))
            .collect();
        if digits.parse::<f64>().is_ok_and(|n| n == 0.0) {
            return Err("returned zero");
        }
    }
    Ok(())
}

/// Runs one operator check through the simple query protocol, so every value arrives as text
/// whatever its type. An error that blames the environment stops the verification
/// ([`CouldNotRun`]); any other failure blames the backup.
///
/// # Errors
/// [`CouldNotRun`] when the check failed because of the verify server or the connection.
pub(super) async fn run_user_check(conn: &mut PgConnection, url: &DbUrl, sql: &str) -> Result<UserCheck, CouldNotRun> {
    let short: String = sql.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(120).collect();
    let failed = |value: Option<String>, why: String| UserCheck {
        evidence: UserCheckEvidence {
            query: short.clone(),
            value,
            passed: false,
        },
        failure: Some(why),
    };
    // (`RawSql::fetch_optional` behaves like `fetch_one` in sqlx 0.8: take the first row of the stream.)
    let first = {
        use futures::TryStreamExt;
        let mut rows = sqlx::raw_sql(sql).fetch(&mut *conn);
        rows.try_next().await
    };
    let row = match first {
        Err(e) => {
            let why = blame(format!("verification query {short}"), pg::classify(url, &e))?;
            return Ok(failed(None, why));
        }
        Ok(None) => return Ok(failed(None, format!("verification query returned no rows: {short}"))),
        Ok(Some(r)) => r,
    };
    if row.columns().is_empty() {
        return Ok(failed(None, format!("verification query returned no columns: {short}")));
    }
    let type_name = row.column(0).type_info().name().to_string();
    let value: Option<String> = match row.try_get_raw(0) {
        Ok(v) if sqlx::ValueRef::is_null(&v) => None,
        Ok(v) => v.as_str().ok().map(str::to_string),
        Err(_) => None,
    };
    Ok(match judge_value(&type_name, value.as_deref()) {
        Ok(()) => UserCheck {
            evidence: UserCheckEvidence {
                query: short.clone(),
                value,
                passed: true,
            },
            failure: None,
        },
        Err(what) => failed(value, format!("verification query {what}: {short}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_outside_quotes_and_comments() {
        let sql =
            "-- a comment; with semicolon\nSELECT 1;\nSELECT 'a;b' = 'a;b';\nSELECT $$x;y$$ <> '';\nSELECT count(*) > 0 FROM \"t;\"\n";
        assert_eq!(
            split_statements(sql),
            vec![
                "SELECT 1",
                "SELECT 'a;b' = 'a;b'",
                "SELECT $$x;y$$ <> ''",
                "SELECT count(*) > 0 FROM \"t;\""
            ]
        );
    }

    #[test]
    fn values_pass_unless_null_false_or_zero() {
        let cases = [
            ("BOOL", Some("t"), true),
            ("BOOL", Some("f"), false),
            ("INT8", Some("0"), false),
            ("INT4", Some("12"), true),
            ("NUMERIC", Some("0"), false),
            ("NUMERIC", Some("0.000"), false),
            ("NUMERIC", Some("-0"), false),
            ("NUMERIC", Some("0.5"), true),
            ("FLOAT8", Some("0"), false),
            ("FLOAT4", Some("-0"), false),
            ("FLOAT8", Some("NaN"), true),
            ("MONEY", Some("$0.00"), false),
            ("MONEY", Some("$1,000.00"), true),
            ("OID", Some("0"), false),
            ("TEXT", Some("0"), true),
            ("TEXT", Some(""), true),
            ("INT4", None, false),
            ("TEXT", None, false),
        ];
        for (ty, v, pass) in cases {
            assert_eq!(judge_value(ty, v).is_ok(), pass, "{ty} {v:?}");
        }
    }
}
