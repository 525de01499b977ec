//! Ownership and privilege statements in a dump: recognised for the manifest (who owns each table,
//! who was granted what on it) and, when a restore cannot reproduce them (the roles are missing
//! and may not be created), left out by the filter.
//!
//! pg_dump writes each of these statements on one line: `ALTER … OWNER TO role;`, `GRANT …;`,
//! `REVOKE …;`, `ALTER DEFAULT PRIVILEGES …;`.

/// Which ownership and privilege statements a restore leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strip {
    /// Everything is restored.
    #[default]
    Nothing,
    /// `ALTER … OWNER TO …` is left out; grants are restored.
    Ownership,
    /// Ownership and every `GRANT`, `REVOKE` and `ALTER DEFAULT PRIVILEGES` are left out.
    OwnershipAndGrants,
}

/// The kind of a privilege statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `ALTER … OWNER TO …;`
    Ownership,
    /// `GRANT`, `REVOKE`, `ALTER DEFAULT PRIVILEGES`.
    Grant,
}

impl Strip {
    /// Whether statements of `kind` are left out.
    pub(super) fn drops(self, kind: Kind) -> bool {
        match self {
            Strip::Nothing => false,
            Strip::Ownership => kind == Kind::Ownership,
            Strip::OwnershipAndGrants => true,
        }
    }
}

/// First words of the statements that may be privilege statements.
pub(super) const FIRST_WORDS: &[&str] = &["ALTER", "GRANT", "REVOKE"];

/// What a whole line at the start of a statement is, if it is an ownership or privilege statement.
pub(super) fn classify(line: &str) -> Option<Kind> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let joined = words.join(" ");
    let t = joined.as_str();
    if !t.ends_with(';') {
        return None;
    }
    if t.starts_with("GRANT ") || t.starts_with("REVOKE ") || t.starts_with("ALTER DEFAULT PRIVILEGES ") {
        return Some(Kind::Grant);
    }
    (t.starts_with("ALTER ") && t.contains(" OWNER TO ")).then_some(Kind::Ownership)
}

/// `ALTER TABLE <name> OWNER TO <role>;`: the table (as pg_dump names it) and its owner.
pub(super) fn table_owner(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix("ALTER TABLE ")?.trim_end().strip_suffix(';')?;
    let (name, role) = rest.rsplit_once(" OWNER TO ")?;
    Some((name.to_string(), role.trim().to_string()))
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
    Some((name.to_string(), grantee.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_recognised_by_kind() {
        let cases = [
            ("ALTER TABLE public.t OWNER TO app;", Some(Kind::Ownership)),
            ("ALTER SCHEMA sales OWNER TO \"App Owner\";", Some(Kind::Ownership)),
            ("ALTER FUNCTION public.f(integer) OWNER TO app;", Some(Kind::Ownership)),
            ("GRANT SELECT ON TABLE public.t TO ro;", Some(Kind::Grant)),
            ("REVOKE ALL ON SCHEMA public FROM PUBLIC;", Some(Kind::Grant)),
            (
                "ALTER DEFAULT PRIVILEGES FOR ROLE app IN SCHEMA public GRANT SELECT ON TABLES TO ro;",
                Some(Kind::Grant),
            ),
            ("ALTER TABLE ONLY public.t", None),
            ("ALTER TABLE public.t ADD COLUMN owner_to text;", None),
            ("CREATE TABLE public.t (", None),
        ];
        for (line, want) in cases {
            assert_eq!(classify(line), want, "{line}");
        }
    }

    #[test]
    fn owners_and_grants_are_read_per_table() {
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
    }
}
