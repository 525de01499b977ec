//! Ownership and privilege statements in a dump: recognised for the manifest (who owns each table,
//! who was granted what on it, which roles the dump names at all) and, when a restore cannot
//! reproduce them (the roles are missing and may not be created), left out by the gate.
//!
//! pg_dump writes each of these statements on one line: `ALTER … OWNER TO role;`, `GRANT …;`,
//! `REVOKE …;`, `ALTER DEFAULT PRIVILEGES …;`, and `SET SESSION AUTHORIZATION role;` /
//! `RESET SESSION AUTHORIZATION;` around grants made by someone other than the owner.

/// Which ownership and privilege statements a restore leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strip {
    /// Everything is restored.
    #[default]
    Nothing,
    /// `ALTER … OWNER TO …` and session-authorization switches are left out; grants are
    /// restored (as the restoring role, which then owns everything).
    Ownership,
    /// Ownership and every `GRANT`, `REVOKE` and `ALTER DEFAULT PRIVILEGES` are left out.
    OwnershipAndGrants,
}

/// One SQL identifier as pg_dump writes it (`name` or `"Name ""quoted"""`) at the start of `s`:
/// the identifier as written and the rest.
pub(super) fn identifier(s: &str) -> Option<(&str, &str)> {
    if let Some(inner) = s.strip_prefix('"') {
        let mut i = 0;
        let b = inner.as_bytes();
        while i < b.len() {
            if b[i] == b'"' {
                if b.get(i + 1) == Some(&b'"') {
                    i += 2;
                    continue;
                }
                return Some((&s[..i + 2], &s[i + 2..]));
            }
            i += 1;
        }
        return None;
    }
    let end = s
        .char_indices()
        .find(|(_, c)| !(c.is_alphanumeric() || *c == '_' || *c == '$'))
        .map_or(s.len(), |(i, _)| i);
    (end > 0 && !s.starts_with(|c: char| c.is_ascii_digit() || c == '$')).then(|| (&s[..end], &s[end..]))
}

/// The text is exactly one identifier.
pub(super) fn one_identifier(s: &str) -> Option<&str> {
    match identifier(s.trim()) {
        Some((id, "")) => Some(id),
        _ => None,
    }
}

/// A comma-separated list of identifiers (`a, "B", PUBLIC`).
fn identifier_list(s: &str) -> Option<Vec<String>> {
    s.split(", ").map(|p| one_identifier(p).map(String::from)).collect()
}

/// `ALTER <kind…> <name> OWNER TO <role>;` → the role; only when the tail is exactly one identifier
/// (a name or a literal that merely contains " OWNER TO " is not an ownership statement).
fn owner_of(t: &str) -> Option<&str> {
    let body = t.strip_prefix("ALTER ")?.strip_suffix(';')?;
    let (_, role) = body.rsplit_once(" OWNER TO ")?;
    one_identifier(role)
}

/// Roles a line names: an owner, grantees, `FOR ROLE`, a session authorization, a policy's roles.
/// As written (quoted where pg_dump quoted them); `PUBLIC` and `CURRENT_USER`-style words excluded.
pub(super) fn roles_named(line: &str) -> Vec<String> {
    let t = line.trim();
    let mut out: Vec<String> = Vec::new();
    let body = t.strip_suffix(';').unwrap_or(t);
    if t.starts_with("ALTER SUBSCRIPTION ") {
        // Never restored (see `allow::Decision::Subscription`): its owner is no role a restore needs.
    } else if let Some(role) = owner_of(t) {
        out.push(role.to_string());
    } else if t.starts_with("GRANT ") || t.starts_with("ALTER DEFAULT PRIVILEGES ") {
        let body = body.split(" GRANTED BY ").next().unwrap_or(body);
        let body = body.strip_suffix(" WITH GRANT OPTION").unwrap_or(body);
        if let Some((_, list)) = body.rsplit_once(" TO ") {
            out.extend(identifier_list(list).unwrap_or_default());
        }
        if let Some(rest) = body.strip_prefix("ALTER DEFAULT PRIVILEGES FOR ROLE ") {
            out.extend(identifier(rest).map(|(r, _)| r.to_string()));
        }
    } else if t.starts_with("REVOKE ") {
        if let Some((_, list)) = body.rsplit_once(" FROM ") {
            out.extend(identifier_list(list.trim_end_matches(" CASCADE")).unwrap_or_default());
        }
    } else if let Some(role) = body.strip_prefix("SET SESSION AUTHORIZATION ") {
        out.extend(one_identifier(role).map(String::from));
    } else if t.starts_with("CREATE POLICY ") {
        // CREATE POLICY p ON t [AS …] [FOR …] TO r1, r2 [USING (…)] [WITH CHECK (…)];
        if let Some((_, after)) = body.split_once(" TO ") {
            let list = after.split(" USING (").next().unwrap_or(after);
            let list = list.split(" WITH CHECK (").next().unwrap_or(list);
            out.extend(identifier_list(list).unwrap_or_default());
        }
    }
    out.retain(|r| !matches!(r.as_str(), "PUBLIC" | "CURRENT_USER" | "SESSION_USER" | "CURRENT_ROLE"));
    out
}

/// `ALTER TABLE <name> OWNER TO <role>;`: the table (as pg_dump names it) and its owner.
pub(super) fn table_owner(line: &str) -> Option<(String, String)> {
    let t = line.trim();
    let role = owner_of(t)?;
    let name = t.strip_prefix("ALTER TABLE ")?.strip_suffix(';')?.rsplit_once(" OWNER TO ")?.0;
    Some((name.to_string(), role.to_string()))
}

/// `GRANT <privileges> ON TABLE <name> TO <grantee> [WITH GRANT OPTION] [GRANTED BY …];`: the
/// table and the grantee (`PUBLIC` or a role, as pg_dump writes it). Column grants
/// (`GRANT SELECT(col) …`) are not grants on the table and are skipped.
pub(super) fn table_grant(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix("GRANT ")?.trim_end().strip_suffix(';')?;
    let (privileges, rest) = rest.split_once(" ON TABLE ")?;
    if privileges.contains('(') {
        return None;
    }
    let rest = rest.split(" GRANTED BY ").next()?;
    let rest = rest.strip_suffix(" WITH GRANT OPTION").unwrap_or(rest);
    let (name, grantee) = rest.rsplit_once(" TO ")?;
    Some((name.to_string(), one_identifier(grantee)?.to_string()))
}

/// Splits `schema.table` as pg_dump writes it into the two plain names.
pub fn split_qualified(name: &str) -> Option<(String, String)> {
    let (schema, rest) = identifier(name)?;
    let (table, rest) = identifier(rest.strip_prefix('.')?)?;
    rest.is_empty().then(|| (unquote(schema), unquote(table)))
}

/// An identifier as written (`app`, `"App Owner"`) turned into the name itself.
pub fn unquote(ident: &str) -> String {
    match ident.strip_prefix('"').and_then(|i| i.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => ident.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_grants_and_named_roles_are_read() {
        assert_eq!(
            table_owner("ALTER TABLE \"My Schema\".\"T\" OWNER TO \"App Owner\";"),
            Some(("\"My Schema\".\"T\"".into(), "\"App Owner\"".into()))
        );
        assert_eq!(table_owner("ALTER SCHEMA s OWNER TO app;"), None);
        let grants = [
            ("GRANT SELECT ON TABLE public.t TO ro;", Some(("public.t", "ro"))),
            ("GRANT ALL ON TABLE public.t TO app WITH GRANT OPTION;", Some(("public.t", "app"))),
            ("GRANT SELECT ON TABLE public.t TO PUBLIC;", Some(("public.t", "PUBLIC"))),
            ("GRANT SELECT ON TABLE public.t TO ro GRANTED BY app;", Some(("public.t", "ro"))),
            ("GRANT SELECT(a) ON TABLE public.t TO ro;", None),
            ("GRANT USAGE ON SCHEMA s TO ro;", None),
        ];
        for (line, want) in grants {
            assert_eq!(table_grant(line), want.map(|(t, g)| (t.to_string(), g.to_string())), "{line}");
        }
        let named = [
            ("ALTER FUNCTION public.f() OWNER TO app;", vec!["app"]),
            (
                "GRANT SELECT ON TABLE t TO ro, \"Odd One\" WITH GRANT OPTION;",
                vec!["ro", "\"Odd One\""],
            ),
            ("REVOKE ALL ON TABLE t FROM PUBLIC;", vec![]),
            ("REVOKE ALL ON TABLE t FROM app;", vec!["app"]),
            (
                "ALTER DEFAULT PRIVILEGES FOR ROLE app IN SCHEMA s GRANT SELECT ON TABLES TO ro;",
                vec!["ro", "app"],
            ),
            ("SET SESSION AUTHORIZATION grantor;", vec!["grantor"]),
            (
                "CREATE POLICY p ON public.t FOR SELECT TO app_ro, auditor USING ((a > 0));",
                vec!["app_ro", "auditor"],
            ),
            ("CREATE POLICY p ON public.t USING (true);", vec![]),
            // Subscriptions are never restored: their owner is no role a restore needs.
            ("ALTER SUBSCRIPTION sub OWNER TO postgres;", vec![]),
        ];
        for (line, want) in named {
            assert_eq!(roles_named(line), want, "{line}");
        }
        assert_eq!(split_qualified("\"My \"\"S\"\"\".t"), Some(("My \"S\"".into(), "t".into())));
        assert_eq!(split_qualified("public.\"a.b\""), Some(("public".into(), "a.b".into())));
        assert_eq!(split_qualified("nodot"), None);
    }
}
