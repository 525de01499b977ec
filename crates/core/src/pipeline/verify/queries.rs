//! The operator's own checks (`VERIFY_QUERIES_FILE`): split into statements, each run against the
//! restored database; a check passes when its first column is true or non-zero.

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

/// Runs one operator check; `None` when it passed, otherwise why not.
pub(super) async fn run_check(conn: &mut PgConnection, sql: &str) -> Option<String> {
    let short: String = sql.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(120).collect();
    let row = match sqlx::query(sql).fetch_optional(&mut *conn).await {
        Err(e) => return Some(format!("verification query failed: {short}: {e}")),
        Ok(None) => return Some(format!("verification query returned no rows: {short}")),
        Ok(Some(r)) => r,
    };
    if row.columns().is_empty() {
        return Some(format!("verification query returned no columns: {short}"));
    }
    let ty = row.column(0).type_info().name().to_string();
    let verdict = match ty.as_str() {
        "BOOL" => row.try_get::<Option<bool>, _>(0).ok().flatten(),
        "INT2" => row.try_get::<Option<i16>, _>(0).ok().flatten().map(|v| v != 0),
        "INT4" => row.try_get::<Option<i32>, _>(0).ok().flatten().map(|v| v != 0),
        "INT8" => row.try_get::<Option<i64>, _>(0).ok().flatten().map(|v| v != 0),
        "FLOAT4" | "FLOAT8" => row.try_get::<Option<f64>, _>(0).ok().flatten().map(|v| v != 0.0),
        _ => match row.try_get_raw(0) {
            Ok(v) if sqlx::ValueRef::is_null(&v) => None,
            Ok(_) => Some(true),
            Err(_) => None,
        },
    };
    match verdict {
        Some(true) => None,
        Some(false) => Some(format!("verification query returned false or 0: {short}")),
        None => Some(format!("verification query returned NULL: {short}")),
    }
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
}
