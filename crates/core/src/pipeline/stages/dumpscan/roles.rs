//! Reading back the roles saved with a backup (`pg_dumpall --globals-only` output) — as data, never
//! as SQL to run: a restore builds its own `CREATE ROLE` statements from what is parsed here, with
//! every name quoted by pgvigil and only the attributes it allows, so a tampered file cannot smuggle
//! a statement (or a psql command) into a restore.

use super::privileges::{identifier, one_identifier, unquote};

/// One role as saved.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SavedRole {
    /// Its name (unquoted).
    pub name: String,
    /// Attribute keywords from its `ALTER ROLE … WITH …` line, e.g. `LOGIN`, `NOSUPERUSER`,
    /// `CONNECTION LIMIT 5`.
    pub attributes: Vec<String>,
}

/// The roles and memberships of a globals file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SavedRoles {
    /// Roles, in file order.
    pub roles: Vec<SavedRole>,
    /// Memberships: (granted role, member, with admin option), names unquoted.
    pub memberships: Vec<(String, String, bool)>,
}

/// Attributes a restore gives a role it creates. `SUPERUSER`, `CREATEROLE`, `REPLICATION` and
/// `BYPASSRLS` are never given (a restore must not hand out the keys to the server), nor
/// passwords or expiry.
pub const ALLOWED_ATTRIBUTES: &[&str] = &["INHERIT", "NOINHERIT", "NOCREATEROLE", "CREATEDB", "NOCREATEDB", "LOGIN", "NOLOGIN"];

/// Parses a globals file. Lines it does not understand are ignored.
pub fn parse(sql: &str) -> SavedRoles {
    let mut out = SavedRoles::default();
    for line in sql.lines() {
        let Some(body) = line.trim().strip_suffix(';') else { continue };
        if let Some(name) = body.strip_prefix("CREATE ROLE ").and_then(one_identifier) {
            out.roles.push(SavedRole {
                name: unquote(name),
                attributes: Vec::new(),
            });
        } else if let Some(rest) = body.strip_prefix("ALTER ROLE ") {
            let Some((name, rest)) = identifier(rest) else { continue };
            let Some(attrs) = rest.strip_prefix(" WITH ") else { continue };
            let name = unquote(name);
            let Some(role) = out.roles.iter_mut().find(|r| r.name == name) else {
                continue;
            };
            let words: Vec<&str> = attrs.split_whitespace().collect();
            let mut i = 0;
            while i < words.len() {
                match words[i] {
                    "CONNECTION" if words.get(1 + i) == Some(&"LIMIT") => {
                        if let Some(n) = words.get(i + 2).and_then(|n| n.parse::<i64>().ok()) {
                            role.attributes.push(format!("CONNECTION LIMIT {n}"));
                        }
                        i += 3;
                    }
                    w if w.chars().all(|c| c.is_ascii_uppercase()) => {
                        role.attributes.push(w.to_string());
                        i += 1;
                    }
                    _ => i += 1,
                }
            }
        } else if let Some(rest) = body.strip_prefix("GRANT ") {
            // GRANT granted TO member [WITH …] [GRANTED BY …]
            let Some((granted, rest)) = identifier(rest) else { continue };
            let Some(rest) = rest.strip_prefix(" TO ") else { continue };
            let Some((member, rest)) = identifier(rest) else { continue };
            let admin = rest.contains("ADMIN OPTION") || rest.contains("ADMIN TRUE");
            out.memberships.push((unquote(granted), unquote(member), admin));
        }
    }
    out
}

/// Attributes that made a role privileged where it was saved: membership in such a role is never
/// re-created.
const PRIVILEGED: &[&str] = &["SUPERUSER", "CREATEROLE", "BYPASSRLS", "REPLICATION"];

/// The saved memberships a restore may re-create: both roles among `created` (the roles this
/// restore creates), neither a `pg_*` role, the granted role not privileged where it was saved,
/// and never with the admin option (which would let the member hand the role on).
pub fn memberships_among(saved: &SavedRoles, created: &[&String]) -> Vec<(String, String)> {
    let new = |r: &String| created.contains(&r) && !r.starts_with("pg_");
    let privileged = |r: &String| {
        saved
            .roles
            .iter()
            .find(|s| &s.name == r)
            .is_some_and(|s| s.attributes.iter().any(|a| PRIVILEGED.contains(&a.as_str())))
    };
    saved
        .memberships
        .iter()
        .filter(|(granted, member, _)| new(granted) && new(member) && !privileged(granted))
        .map(|(granted, member, _)| (granted.clone(), member.clone()))
        .collect()
}

/// `"name"`, quoted for SQL.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl SavedRole {
    /// `CREATE ROLE "name" WITH …;` with only the allowed attributes (`NOLOGIN` when nothing is
    /// known), and the attributes that were left out.
    pub fn create_statement(&self) -> (String, Vec<String>) {
        let (kept, dropped): (Vec<&String>, Vec<&String>) = self
            .attributes
            .iter()
            .partition(|a| ALLOWED_ATTRIBUTES.contains(&a.as_str()) || a.starts_with("CONNECTION LIMIT "));
        let dropped: Vec<String> = dropped.into_iter().filter(|a| !a.starts_with("NO")).cloned().collect();
        let attrs = if kept.is_empty() {
            "NOLOGIN".to_string()
        } else {
            kept.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(" ")
        };
        (format!("CREATE ROLE {} WITH {attrs};", quote(&self.name)), dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GLOBALS: &str = "--\n-- Roles\n--\n\nCREATE ROLE app_owner;\nALTER ROLE app_owner WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 20;\nCREATE ROLE \"Read \"\"Only\"\"\";\nALTER ROLE \"Read \"\"Only\"\"\" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;\nCREATE ROLE admin;\nALTER ROLE admin WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS VALID UNTIL 'infinity';\nALTER ROLE app_owner SET search_path TO app;\nCREATE ROLE x; \\! id;\n\n--\n-- Role memberships\n--\n\nGRANT \"Read \"\"Only\"\"\" TO app_owner GRANTED BY postgres;\nGRANT admin TO app_owner WITH ADMIN OPTION GRANTED BY postgres;\n";

    #[test]
    fn roles_are_read_as_data() {
        let r = parse(GLOBALS);
        let names: Vec<&str> = r.roles.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            ["app_owner", "Read \"Only\"", "admin"],
            "a line with a second statement is not a role"
        );
        let (sql, dropped) = r.roles[0].create_statement();
        assert_eq!(
            sql,
            "CREATE ROLE \"app_owner\" WITH INHERIT NOCREATEROLE NOCREATEDB LOGIN CONNECTION LIMIT 20;"
        );
        assert!(dropped.is_empty(), "{dropped:?}");
        let (sql, dropped) = r.roles[2].create_statement();
        assert_eq!(sql, "CREATE ROLE \"admin\" WITH INHERIT CREATEDB LOGIN;");
        assert_eq!(dropped, ["SUPERUSER", "CREATEROLE", "REPLICATION", "BYPASSRLS", "VALID", "UNTIL"]);
        assert_eq!(
            r.memberships,
            [
                ("Read \"Only\"".to_string(), "app_owner".to_string(), false),
                ("admin".to_string(), "app_owner".to_string(), true)
            ]
        );
        assert_eq!(quote("Read \"Only\""), "\"Read \"\"Only\"\"\"");
    }

    #[test]
    fn memberships_from_a_backup_never_raise_privileges() {
        let r = parse(GLOBALS);
        let name = |s: &str| s.to_string();
        let (app, ro, admin, other) = (name("app_owner"), name("Read \"Only\""), name("admin"), name("someone"));
        type Case<'a> = (&'a [&'a String], &'a [(&'a str, &'a str)]);
        let cases: &[Case] = &[
            // Both created by this restore: re-created (without the admin option).
            (&[&app, &ro], &[("Read \"Only\"", "app_owner")]),
            // The member exists already: never granted into an existing role.
            (&[&ro], &[]),
            // The granted role exists already: never.
            (&[&app], &[]),
            // A role that was a superuser where it was saved: never granted, even when created.
            (&[&app, &ro, &admin], &[("Read \"Only\"", "app_owner")]),
            (&[&other], &[]),
        ];
        for (created, want) in cases {
            let got = memberships_among(&r, created);
            let want: Vec<(String, String)> = want.iter().map(|(g, m)| (name(g), name(m))).collect();
            assert_eq!(got, want, "{created:?}");
        }
        let pg = SavedRoles {
            roles: Vec::new(),
            memberships: vec![(name("pg_execute_server_program"), name("x"), false)],
        };
        assert!(memberships_among(&pg, &[&name("pg_execute_server_program"), &name("x")]).is_empty());
    }
}
