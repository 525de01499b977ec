//! Faithful backups: owners, grants, default privileges and role memberships come back — through
//! `pgvigil restore` and through the stock recipe — on a fresh cluster; verification restores and
//! checks as much of them as its role allows, and says what it left out.

use pgvigil_e2e::fixtures;
use pgvigil_e2e::run::{run, text};
use pgvigil_e2e::{init_logs, PgServer, S3Server};
use serde_json::Value;
use std::process::{Command, Stdio};

/// A database with two application roles and a member of one of them: an owner, a read-only role
/// with grants and default privileges, and a login role that inherits it.
const SCHEMA: &str = r#"
CREATE SCHEMA sales AUTHORIZATION app_owner;
CREATE TABLE sales.orders (id int PRIMARY KEY, total numeric NOT NULL);
INSERT INTO sales.orders SELECT g, g * 1.5 FROM generate_series(1, 500) g;
ALTER TABLE sales.orders OWNER TO app_owner;
CREATE TABLE public.items (id int PRIMARY KEY, name text);
INSERT INTO public.items SELECT g, 'item ' || g FROM generate_series(1, 50) g;
ALTER TABLE public.items OWNER TO app_owner;
CREATE TABLE public."Audit Log" (at timestamptz DEFAULT now(), what text);
ALTER TABLE public."Audit Log" OWNER TO "App Auditor";
CREATE VIEW sales.big_orders AS SELECT * FROM sales.orders WHERE total > 100;
ALTER VIEW sales.big_orders OWNER TO app_owner;
GRANT USAGE ON SCHEMA sales TO app_ro;
GRANT SELECT ON sales.orders TO app_ro;
GRANT SELECT, INSERT ON public.items TO app_ro;
GRANT SELECT (id) ON public.items TO "App Auditor";
GRANT SELECT ON sales.big_orders TO app_reader;
GRANT INSERT ON public."Audit Log" TO PUBLIC;
REVOKE ALL ON public.items FROM app_owner;
GRANT SELECT ON public.items TO app_owner;
ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA sales GRANT SELECT ON TABLES TO app_ro;
"#;

const ROLES: &str = r#"
CREATE ROLE app_owner LOGIN PASSWORD 'owner-pw-not-saved';
CREATE ROLE app_ro NOLOGIN;
CREATE ROLE app_reader LOGIN IN ROLE app_ro;
CREATE ROLE "App Auditor" NOLOGIN;
"#;

/// Owners, ACLs, default privileges and memberships, as comparable rows (names, not oids).
async fn catalog(pg: &PgServer, db: &str) -> Vec<String> {
    let mut c = pg.connect(db).await;
    let q = r#"
      SELECT 'rel ' || n.nspname || '.' || c.relname || ' ' || c.relkind::text || ' owner=' || pg_get_userbyid(c.relowner)
             || ' acl=' || coalesce((SELECT string_agg(x::text, ',' ORDER BY x::text) FROM unnest(c.relacl) x), '-')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
      UNION ALL
      SELECT 'col ' || c.relname || '.' || a.attname || ' acl=' || (SELECT string_agg(x::text, ',' ORDER BY x::text) FROM unnest(a.attacl) x)
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE a.attacl IS NOT NULL AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      UNION ALL
      SELECT 'schema ' || nspname || ' owner=' || pg_get_userbyid(nspowner) || ' acl=' || coalesce((SELECT string_agg(x::text, ',' ORDER BY x::text) FROM unnest(nspacl) x), '-')
        FROM pg_namespace WHERE nspname NOT LIKE 'pg\_%' AND nspname <> 'information_schema'
      UNION ALL
      SELECT 'default ' || pg_get_userbyid(defaclrole) || ' ' || coalesce(defaclnamespace::regnamespace::text, '-')
             || ' ' || defaclobjtype::text || ' ' || (SELECT string_agg(x::text, ',' ORDER BY x::text) FROM unnest(defaclacl) x)
        FROM pg_default_acl
      UNION ALL
      SELECT 'member ' || r.rolname || ' -> ' || m.rolname
        FROM pg_auth_members am JOIN pg_roles r ON r.oid = am.roleid JOIN pg_roles m ON m.oid = am.member
       WHERE r.rolname NOT LIKE 'pg\_%'
      UNION ALL
      SELECT 'role ' || rolname || ' login=' || rolcanlogin::text FROM pg_roles WHERE rolname LIKE 'app%' OR rolname = 'App Auditor'
      ORDER BY 1"#;
    let rows: Vec<String> = sqlx::query_scalar(q).fetch_all(&mut c).await.unwrap();
    rows
}

/// Equal catalogs, or a failure that shows only the rows that differ.
fn assert_same(got: &[String], want: &[String], what: &str) {
    let missing: Vec<_> = want.iter().filter(|r| !got.contains(r)).collect();
    let extra: Vec<_> = got.iter().filter(|r| !want.contains(r)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: missing {missing:#?}\nextra {extra:#?}"
    );
}

fn psql(pg: &PgServer, db: &str, stop_on_error: bool) -> Command {
    let mut c = Command::new(pg.psql());
    c.args([
        "-X",
        "-q",
        "-h",
        "127.0.0.1",
        "-p",
        &pg.port.to_string(),
        "-U",
        "postgres",
        "-d",
        db,
    ])
    .env("PGPASSWORD", pgvigil_e2e::pg::PASSWORD)
    .stdout(Stdio::null());
    if stop_on_error {
        c.args(["-v", "ON_ERROR_STOP=1"]);
    }
    c
}

/// The newest verification record in the bucket.
fn newest_record(s3: &S3Server) -> Value {
    let mut records: Vec<String> = fixtures::walk(s3.root.path())
        .into_iter()
        .filter(|p| p.contains("/verifications/"))
        .collect();
    records.sort();
    let newest = records.last().expect("a verification record");
    serde_json::from_slice(&std::fs::read(newest).unwrap()).unwrap()
}

#[tokio::test]
async fn owners_grants_and_roles_come_back_on_a_fresh_cluster() {
    init_logs();
    let source = PgServer::start();
    source.exec("postgres", ROLES).await;
    source.create_db("shop").await;
    source.exec("shop", SCHEMA).await;
    let s3 = S3Server::start().await;
    let mut vars = s3.vars("roles");
    vars.push(("DATABASE_URL", source.url("shop")));
    let o = run("pgvigil-backup", &["--once"], &vars).await;
    assert!(o.status.success(), "{}", text(&o));
    let want = catalog(&source, "shop").await;
    assert!(
        want.iter()
            .any(|r| r.contains("rel sales.orders r owner=app_owner acl=app_owner=arwdDxt/app_owner,app_ro=r/app_owner")),
        "{want:#?}"
    );

    // pgvigil restore into a fresh cluster: the roles are created first, then owners and grants.
    let fresh = PgServer::start();
    fresh.create_db("shop").await;
    let mut restore = s3.vars("roles");
    restore.push(("RESTORE_DATABASE_URL", fresh.url("shop")));
    let o = run("pgvigil", &["restore"], &restore).await;
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("creating the missing roles") && t.contains("app_owner"), "{t}");
    assert_same(&catalog(&fresh, "shop").await, &want, "pgvigil restore");

    // --no-privileges: everything belongs to the restoring role, no grants.
    fresh.create_db("shop_plain").await;
    let mut plain = s3.vars("roles");
    plain.push(("RESTORE_DATABASE_URL", fresh.url("shop_plain")));
    let o = run("pgvigil", &["restore", "--no-privileges"], &plain).await;
    assert!(o.status.success(), "{}", text(&o));
    let got = catalog(&fresh, "shop_plain").await;
    assert!(
        got.iter().any(|r| r.starts_with("rel sales.orders r owner=postgres acl=-")),
        "{got:#?}"
    );

    // A restoring role that may not create the missing roles is stopped before anything runs.
    let bare = PgServer::start();
    bare.exec("postgres", "CREATE ROLE restorer LOGIN PASSWORD 'restorer-pw'").await;
    bare.exec("postgres", "CREATE DATABASE shop OWNER restorer").await;
    let mut limited = s3.vars("roles");
    limited.push(("RESTORE_DATABASE_URL", bare.url_as("restorer", "restorer-pw", "shop")));
    let o = run("pgvigil", &["restore"], &limited).await;
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("the target lacks the roles") && t.contains("--no-privileges"), "{t}");
    assert!(
        !catalog(&bare, "shop").await.iter().any(|r| r.starts_with("rel ")),
        "nothing was restored"
    );

    // A restoring role with CREATEROLE (not a superuser) creates the roles and joins them, but on
    // PostgreSQL 15+ an owner also needs CREATE on `public` to be given a table there: the
    // restore stops with the server's reason and the target stays as it was.
    let creator = PgServer::start();
    creator
        .exec("postgres", "CREATE ROLE creator LOGIN CREATEROLE PASSWORD 'creator-pw'")
        .await;
    creator.exec("postgres", "CREATE DATABASE shop OWNER creator").await;
    let mut via_creator = s3.vars("roles");
    via_creator.push(("RESTORE_DATABASE_URL", creator.url_as("creator", "creator-pw", "shop")));
    let o = run("pgvigil", &["restore"], &via_creator).await;
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("made a member") && t.contains("permission denied for schema public") && t.contains("left as it was"),
        "{t}"
    );
    assert!(
        !catalog(&creator, "shop").await.iter().any(|r| r.starts_with("rel ")),
        "nothing was restored"
    );
    let mut c = creator.connect("postgres").await;
    let leftover: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'app_%'")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(
        leftover, 0,
        "the roles were created inside the restore's transaction and went with it"
    );

    // The stock recipe: the saved roles, then the dump.
    let stock = PgServer::start();
    let globals = fixtures::walk(s3.root.path())
        .into_iter()
        .find(|p| p.contains("/globals/"))
        .expect("roles saved");
    let backup = fixtures::walk(s3.root.path())
        .into_iter()
        .find(|p| p.contains("/roles/backup_2"))
        .unwrap();
    let r = psql(&stock, "postgres", false).arg("-f").arg(&globals).output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    stock.create_db("shop").await;
    let mut gz = Command::new("gunzip")
        .arg("-c")
        .arg(&backup)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let r = psql(&stock, "shop", true).stdin(gz.stdout.take().unwrap()).output().unwrap();
    assert!(gz.wait().unwrap().success());
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_same(&catalog(&stock, "shop").await, &want, "stock recipe");
}

#[tokio::test]
async fn verification_checks_owners_and_grants_as_far_as_its_role_may() {
    init_logs();
    let source = PgServer::start();
    source.exec("postgres", ROLES).await;
    source.create_db("shop").await;
    source.exec("shop", SCHEMA).await;
    let s3 = S3Server::start().await;
    let mut vars = s3.vars("vroles");
    vars.push(("DATABASE_URL", source.url("shop")));
    let o = run("pgvigil-backup", &["--once"], &vars).await;
    assert!(o.status.success(), "{}", text(&o));

    let scratch = PgServer::start();
    scratch.exec("postgres", "CREATE ROLE v_db LOGIN CREATEDB PASSWORD 'v-db-pw'").await;
    scratch
        .exec("postgres", "CREATE ROLE v_role LOGIN CREATEDB CREATEROLE PASSWORD 'v-role-pw'")
        .await;
    let verify = |url: String| {
        let mut v = s3.vars("vroles");
        v.push(("VERIFY_DATABASE_URL", url));
        v
    };

    // CREATEDB only: owners and grants left out, and the record says so.
    let o = run(
        "pgvigil-verify",
        &["--once"],
        &verify(scratch.url_as("v_db", "v-db-pw", "postgres")),
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let p = &newest_record(&s3)["evidence"]["privileges"];
    assert_eq!(p["restored"], "left out", "{p}");
    assert!(p["skipped"].as_str().unwrap().contains("may not create the roles"), "{p}");
    assert!(p["statements_left_out"].as_u64().unwrap() >= 8, "{p}");

    // CREATEROLE: the missing roles are created (no login), grants restored and compared.
    let o = run(
        "pgvigil-verify",
        &["--once"],
        &verify(scratch.url_as("v_role", "v-role-pw", "postgres")),
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let p = &newest_record(&s3)["evidence"]["privileges"];
    assert_eq!(p["restored"], "table-level grants restored and checked", "{p}");
    assert!(p["skipped"].as_str().unwrap().contains("ownership skipped"), "{p}");
    assert_eq!(p["not_compared"], 0, "{p}");
    assert!(p["grants_checked"].as_u64().unwrap() >= 3, "{p}");
    assert_eq!(p["owners_checked"], 0, "{p}");
    let created: Vec<&str> = p["roles_created"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    for role in ["app_owner", "app_ro", "app_reader", "App Auditor"] {
        assert!(created.contains(&role), "{role} in {created:?}");
    }
    let mut c = scratch.connect("postgres").await;
    let logins: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'app_%' AND rolcanlogin")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(logins, 0, "roles created for verification cannot log in");

    // Superuser: ownership and grants restored and checked.
    let o = run("pgvigil-verify", &["--once"], &verify(scratch.url("postgres"))).await;
    assert!(o.status.success(), "{}", text(&o));
    let p = &newest_record(&s3)["evidence"]["privileges"];
    assert_eq!(p["restored"], "table owners and table-level grants restored and checked", "{p}");
    assert_eq!(p["not_compared"], 0, "{p}");
    assert!(p["owners_checked"].as_u64().unwrap() >= 3, "{p}");
    assert_eq!(p["statements_left_out"], 0, "{p}");
}
