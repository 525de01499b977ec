//! The session a part of a dump is restored in: the later phases start mid-dump, so they begin as
//! pg_dump's header leaves a session, and the schema must have left it exactly so.

use std::collections::BTreeMap;

/// The session settings of pg_dump's own header, for the sessions that start mid-dump (the dump's
/// encoding is UTF-8, checked, and pgvigil's opening set it).
pub(super) const SESSION: &str = "SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;
SET default_tablespace = '';
";

/// What pg_dump's header sets, as the gate records it: the schema must leave the session so (the
/// later sessions begin with [`SESSION`]).
const HEADER: [(&str, &[&str]); 10] = [
    ("statement_timeout", &["0"]),
    ("lock_timeout", &["0"]),
    ("idle_in_transaction_session_timeout", &["0"]),
    ("client_encoding", &["UTF8", "UTF-8", "utf8", "utf-8"]),
    ("standard_conforming_strings", &["on", "true"]),
    ("search_path", &[""]),
    ("check_function_bodies", &["false", "off"]),
    ("xmloption", &["content"]),
    ("client_min_messages", &["warning"]),
    ("row_security", &["off", "false"]),
];

/// Whether the schema leaves the session as pg_dump's header sets it, which is how the later
/// sessions begin ([`SESSION`]): every setting of the header set as it sets it, and nothing else
/// but the tablespace and table access method of the objects it makes.
pub(super) fn same_session(settings: &BTreeMap<String, String>) -> Result<(), String> {
    let shown = |v: &str| v.chars().filter(|c| !c.is_control()).take(40).collect::<String>();
    let utf8 = settings
        .get("client_encoding")
        .is_some_and(|e| e.replace(['-', '_'], "").eq_ignore_ascii_case("utf8"));
    if !utf8 {
        return Err("the dump's encoding is not UTF-8".into());
    }
    for (name, values) in HEADER {
        match settings.get(name) {
            Some(v) if values.iter().any(|w| v.eq_ignore_ascii_case(w)) => {}
            Some(v) => return Err(format!("the dump's schema leaves the session with {name} = '{}'", shown(v))),
            None => return Err(format!("the dump's schema does not set {name} as pg_dump does")),
        }
    }
    for (name, value) in settings {
        let known = HEADER.iter().any(|(n, _)| n == name)
            || name == "transaction_timeout" && value == "0"
            || name == "default_tablespace" && value.is_empty()
            || name == "default_table_access_method";
        if !known {
            return Err(format!(
                "the dump's schema leaves the session with {} = '{}'",
                shown(name),
                shown(value)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pg_dumps_own_session_lets_later_sessions_start_as_it_does() {
        let header = [
            ("statement_timeout", "0"),
            ("lock_timeout", "0"),
            ("idle_in_transaction_session_timeout", "0"),
            ("client_encoding", "UTF8"),
            ("standard_conforming_strings", "on"),
            ("search_path", ""),
            ("check_function_bodies", "false"),
            ("xmloption", "content"),
            ("client_min_messages", "warning"),
            ("row_security", "off"),
            ("default_tablespace", ""),
            ("default_table_access_method", "heap"),
        ];
        let with = |extra: &[(&str, &str)]| -> BTreeMap<String, String> {
            header
                .iter()
                .chain(extra)
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect()
        };
        assert_eq!(same_session(&with(&[])), Ok(()));
        for (extra, why) in [
            (("role", "app_ro"), "role"),
            (("session_authorization", "app"), "session_authorization"),
            (("search_path", "public"), "search_path"),
            (("client_encoding", "LATIN1"), "not UTF-8"),
            (("row_security", "on"), "row_security"),
            (("statement_timeout", "5"), "statement_timeout"),
        ] {
            let got = same_session(&with(&[extra])).unwrap_err();
            assert!(got.contains(why), "{extra:?}: {got}");
        }
        assert!(same_session(&BTreeMap::new()).unwrap_err().contains("not UTF-8"));
        assert_eq!(same_session(&with(&[("client_encoding", "utf-8")])), Ok(()));
        let mut short = with(&[]);
        short.remove("check_function_bodies");
        assert!(same_session(&short).unwrap_err().contains("does not set check_function_bodies"));
        assert!(same_session(&with(&[("temporary object", "")])).is_err());
        assert!(same_session(&with(&[("search_path", "(several values)")])).is_err());
    }
}
