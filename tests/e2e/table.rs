//! `pgvigil restore --table`: one table back into the live database, from only the parts of the
//! backup it needs, never over anything that exists unless `--replace`, and all or nothing.

use pgvigil_core::pipeline::backup;
use pgvigil_e2e::fixtures::{context, key_file, original, replace_object};
use pgvigil_e2e::run::{run, text};
use pgvigil_e2e::{init_logs, sample, PgServer, S3Server};
use tokio_util::sync::CancellationToken;

/// More than the sample: a partitioned table, row-level security and an empty table.
const EXTRA: &str = r#"
CREATE TABLE public.m (at date NOT NULL, v int, PRIMARY KEY (at)) PARTITION BY RANGE (at);
CREATE TABLE public.m_2024 PARTITION OF public.m FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE public.m_2025 PARTITION OF public.m FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO public.m SELECT date '2024-01-01' + g, g FROM generate_series(0, 600) g;
CREATE INDEX m_v ON public.m (v);
ALTER TABLE public.customers ENABLE ROW LEVEL SECURITY;
CREATE POLICY own ON public.customers USING (balance >= 0);
COMMENT ON TABLE public.customers IS 'who pays';
CREATE STATISTICS public.customers_stats (ndistinct) ON id, balance FROM public.customers;
COMMENT ON STATISTICS public.customers_stats IS 'pairs';
CREATE TABLE public.base (x int);
CREATE TABLE public.kid (y int) INHERITS (public.base);
INSERT INTO public.kid VALUES (1, 2);
"#;

async fn scalar<T>(pg: &PgServer, db: &str, sql: &str) -> T
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    let mut c = pg.connect(db).await;
    sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
}

/// A fingerprint of a table's rows.
async fn digest(pg: &PgServer, db: &str, table: &str) -> (i64, String) {
    let mut c = pg.connect(db).await;
    let q = format!("SELECT count(*), coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '') FROM {table} t");
    sqlx::query_as(&q).fetch_one(&mut c).await.unwrap()
}

async fn restore_table(vars: &[(&str, String)], args: &[&str]) -> std::process::Output {
    let mut all = vec!["restore", "--table"];
    all.extend_from_slice(args);
    run("pgvigil", &all, vars).await
}

async fn no_staging_left(pg: &PgServer) {
    let n: i64 = scalar(
        pg,
        "app",
        "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'pgvigil_restore_%'",
    )
    .await;
    assert_eq!(n, 0, "a staging schema was left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_table_comes_back_from_its_ranges_beside_or_in_place_of_the_live_one() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 3000).await;
    pg.exec("app", EXTRA).await;
    let s3 = S3Server::start().await;
    let ctx = context(&pg, "app", s3.vars("tables"), &[]).await;
    let out = backup::run_once(&ctx, &CancellationToken::new()).await.unwrap();
    let mut vars = s3.vars("tables");
    vars.push(("RESTORE_DATABASE_URL", pg.url("app")));
    let orders = digest(&pg, "app", "sales.orders").await;
    let customers = digest(&pg, "app", "public.customers").await;

    // Someone dropped a table: it comes back under its own name, with its index, its key to
    // customers and its sequence, from a fraction of the object.
    pg.exec("app", "DROP TABLE sales.orders CASCADE").await;
    let o = restore_table(&vars, &["sales.orders"]).await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(
        t.contains("restored sales.orders from") && t.contains("as sales.orders in app"),
        "{t}"
    );
    assert!(t.contains("rows: 6000") && t.contains("only the parts this table needs"), "{t}");
    assert_eq!(digest(&pg, "app", "sales.orders").await, orders);
    let idx: i64 = scalar(
        &pg,
        "app",
        "SELECT count(*) FROM pg_indexes WHERE schemaname = 'sales' AND indexname IN ('orders_pkey', 'orders_placed_at')",
    )
    .await;
    assert_eq!(idx, 2);
    let fk: i64 = scalar(
        &pg,
        "app",
        "SELECT count(*) FROM pg_constraint WHERE conrelid = 'sales.orders'::regclass AND contype = 'f'",
    )
    .await;
    assert_eq!(fk, 1, "the key to customers came back with the table");
    let next: i64 = scalar(&pg, "app", "SELECT nextval(pg_get_serial_sequence('sales.orders', 'id'))").await;
    assert_eq!(next, 6001, "the sequence's value came back");
    no_staging_left(&pg).await;
    let read: u64 = t
        .lines()
        .find_map(|l| l.strip_prefix("read "))
        .map(|l| l.split(" of").next().unwrap().to_string())
        .map(|b| parse_human(&b))
        .unwrap();
    // Exactly the schema before the data, the table's block and what follows the data.
    let m = &out.manifest;
    let block = m.table_members.iter().find(|b| b.table == "sales.orders").unwrap();
    let wanted = m.before_data.as_ref().unwrap().length + block.length + m.after_data.as_ref().unwrap().length;
    assert!(
        wanted < m.size && read.abs_diff(wanted) * 100 <= wanted,
        "read {read}, wanted {wanted} of {}:\n{t}",
        m.size
    );

    // The table is there: it comes back beside it, with its policy, comment and renamed index,
    // and the live one is untouched; a name that is taken is refused.
    pg.exec("app", "UPDATE public.customers SET name = 'changed' WHERE id <= 10").await;
    let changed = digest(&pg, "app", "public.customers").await;
    let o = restore_table(&vars, &["public.customers"]).await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("as public.customers_restored"), "{t}");
    assert_eq!(digest(&pg, "app", "public.customers_restored").await, customers);
    assert_eq!(digest(&pg, "app", "public.customers").await, changed);
    let rls: bool = scalar(
        &pg,
        "app",
        "SELECT relrowsecurity FROM pg_class WHERE oid = 'public.customers_restored'::regclass",
    )
    .await;
    assert!(rls);
    let policy: i64 = scalar(
        &pg,
        "app",
        "SELECT count(*) FROM pg_policies WHERE tablename = 'customers_restored'",
    )
    .await;
    assert_eq!(policy, 1);
    let pkey: i64 = scalar(
        &pg,
        "app",
        "SELECT count(*) FROM pg_indexes WHERE indexname = 'customers_restored_pkey'",
    )
    .await;
    assert_eq!(pkey, 1);
    let stats: i64 = scalar(
        &pg,
        "app",
        "SELECT count(*) FROM pg_statistic_ext WHERE stxname = 'customers_restored_stats' \
           AND stxrelid = 'public.customers_restored'::regclass AND obj_description(oid, 'pg_statistic_ext') = 'pairs'",
    )
    .await;
    assert_eq!(stats, 1, "the extended statistics came with the copy, renamed");
    for args in [&["public.customers", "--as", "public.customers"][..], &["public.customers"][..]] {
        let o = restore_table(&vars, args).await;
        let t = text(&o);
        assert_ne!(o.status.code(), Some(0), "{t}");
        assert!(t.contains("already exists") && t.contains("--replace"), "{t}");
    }
    let o = restore_table(&vars, &["public.nope"]).await;
    assert_ne!(o.status.code(), Some(0));
    assert!(text(&o).contains("holds no table public.nope"), "{}", text(&o));

    // --replace: the backup's rows in place of the live ones, the other table's key and the
    // publication that names it (with its row filter) added back.
    pg.exec("app", "CREATE PUBLICATION live_pub FOR TABLE public.customers WHERE (id > 0);")
        .await;
    let o = restore_table(&vars, &["public.customers", "--replace"]).await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("in place of the live table"), "{t}");
    assert_eq!(digest(&pg, "app", "public.customers").await, customers);
    let fk: i64 = scalar(
        &pg,
        "app",
        "SELECT count(*) FROM pg_constraint WHERE confrelid = 'public.customers'::regclass AND contype = 'f'",
    )
    .await;
    assert_eq!(fk, 1, "the orders' key to customers is back");
    let published: Option<String> = scalar(
        &pg,
        "app",
        "SELECT rowfilter FROM pg_publication_tables WHERE pubname = 'live_pub' AND tablename = 'customers'",
    )
    .await;
    assert_eq!(published.as_deref(), Some("(id > 0)"), "the publication names customers again");
    let stats: String = scalar(
        &pg,
        "app",
        "SELECT stxrelid::regclass::text FROM pg_statistic_ext WHERE stxname = 'customers_stats' AND stxnamespace = 'public'::regnamespace",
    )
    .await;
    assert_eq!(stats, "customers");

    // A replace whose key cannot hold (orders of customers the backup does not have) changes
    // nothing at all.
    pg.exec(
        "app",
        "INSERT INTO public.customers (id, name) VALUES (900001, 'new');
         INSERT INTO sales.orders (customer_id, amount) VALUES (900001, 1);",
    )
    .await;
    let before = digest(&pg, "app", "public.customers").await;
    let o = restore_table(&vars, &["public.customers", "--replace"]).await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("orders_customer_id_fkey") && t.contains("Nothing was changed"), "{t}");
    assert!(!t.contains("at fault"), "the backup is not blamed for the target's rows:\n{t}");
    assert_eq!(digest(&pg, "app", "public.customers").await, before);
    no_staging_left(&pg).await;

    // A partitioned table comes back with its partitions; an empty one comes back empty.
    let m = digest(&pg, "app", "public.m").await;
    pg.exec("app", "DROP TABLE public.m; DROP TABLE public.empty_table;").await;
    let o = restore_table(&vars, &["public.m"]).await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("public.m_2024") && t.contains("public.m_2025"), "{t}");
    assert_eq!(digest(&pg, "app", "public.m").await, m);
    let parts: i64 = scalar(
        &pg,
        "app",
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'public.m'::regclass",
    )
    .await;
    assert_eq!(parts, 2);
    let o = restore_table(&vars, &["public.empty_table"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(digest(&pg, "app", "public.empty_table").await.0, 0);
    // A copy of a child table would add its rows to the live parent: refused, nothing changed.
    let o = restore_table(&vars, &["public.kid"]).await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("inherits from") && t.contains("Nothing was changed"), "{t}");
    let base: i64 = scalar(&pg, "app", "SELECT count(*) FROM public.base").await;
    assert_eq!(base, 1, "the live parent did not gain the copy's rows");
    // Mixed case and quotes, as PostgreSQL writes them, into another schema.
    pg.exec("app", "CREATE SCHEMA side").await;
    let odd = digest(&pg, "app", r#""Mixed Case"."Odd ""Name"" Table""#).await;
    let o = restore_table(&vars, &[r#""Mixed Case"."Odd ""Name"" Table""#, "--as", "side.odd"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(digest(&pg, "app", "side.odd").await, odd);
    let key: i64 = scalar(
        &pg,
        "app",
        "SELECT count(*) FROM pg_indexes WHERE schemaname = 'side' AND indexname = 'odd_pkey'",
    )
    .await;
    assert_eq!(key, 1, "its key came back (renamed after the table)");
    no_staging_left(&pg).await;
}

/// `12.3 KB` and the like, back to bytes (roughly).
fn parse_human(s: &str) -> u64 {
    let (n, unit) = s.trim().split_once(' ').unwrap_or((s.trim(), "B"));
    let n: f64 = n.parse().unwrap();
    let f = match unit {
        "B" => 1.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        other => panic!("unit {other}"),
    };
    (n * f) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_range_restores_nothing_and_an_encrypted_backup_is_read_whole() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 2000).await;
    let s3 = S3Server::start().await;
    let ctx = context(&pg, "app", s3.vars("tamper"), &[]).await;
    let out = backup::run_once(&ctx, &CancellationToken::new()).await.unwrap();
    let mut vars = s3.vars("tamper");
    vars.push(("RESTORE_DATABASE_URL", pg.url("app")));

    // One byte of the customers' rows changed in the bucket: the range's hash says so, and
    // nothing is created.
    let m = &out.manifest;
    let t = m.table_members.iter().find(|t| t.table == "public.customers").unwrap();
    let mut data = original(&ctx.storage, &out).await;
    let at = (t.offset + t.length / 2) as usize;
    data[at] ^= 0x55;
    replace_object(&ctx.storage, &out, data, false, |_| {}).await;
    let o = restore_table(&vars, &["public.customers"]).await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("not what the backup wrote") && t.contains("Nothing was changed"), "{t}");
    let n: i64 = scalar(&pg, "app", "SELECT count(*) FROM pg_class WHERE relname = 'customers_restored'").await;
    assert_eq!(n, 0);
    no_staging_left(&pg).await;

    // The contents list a constraint on the table that the restore does not rebuild: it is
    // refused before the COMMIT, and nothing is created.
    // (The bytes changed above are changed back.)
    let mut intact = original(&ctx.storage, &out).await;
    intact[at] ^= 0x55;
    replace_object(&ctx.storage, &out, intact, false, |m| {
        m.toc.push(pgvigil_core::records::manifest::TocEntry {
            kind: "CONSTRAINT".into(),
            schema: "public".into(),
            name: "customers customers_ghost".into(),
        });
    })
    .await;
    let o = restore_table(&vars, &["public.customers"]).await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("(1 object(s) of the dump's table of contents are missing after the restore: CONSTRAINT customers customers_ghost)")
            && t.contains("cannot be restored")
            && t.contains("Nothing was changed"),
        "{t}"
    );
    let n: i64 = scalar(&pg, "app", "SELECT count(*) FROM pg_class WHERE relname = 'customers_restored'").await;
    assert_eq!(n, 0);
    no_staging_left(&pg).await;

    replace_object(&ctx.storage, &out, original(&ctx.storage, &out).await, false, |_| {}).await;

    // The live table is busy: --replace waits for its lock only so long, then changes nothing.
    let live = digest(&pg, "app", "public.customers").await;
    let mut holder = pg.connect("app").await;
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("LOCK TABLE public.customers IN ACCESS SHARE MODE")
        .execute(&mut holder)
        .await
        .unwrap();
    let o = restore_table(&vars, &["public.customers", "--replace"]).await;
    let t = text(&o);
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("stayed locked") && t.contains("Nothing was changed"), "{t}");
    assert_eq!(digest(&pg, "app", "public.customers").await, live);
    no_staging_left(&pg).await;

    // An encrypted backup: the whole object is read (and said so), and the table comes back.
    let dir = tempfile::tempdir().unwrap();
    let id = age::x25519::Identity::generate();
    let file = key_file(dir.path(), "key.txt", &id);
    let sealed_ctx = context(
        &pg,
        "app",
        s3.vars("sealed"),
        &[("BACKUP_ENCRYPTION_RECIPIENTS", id.to_public().to_string())],
    )
    .await;
    backup::run_once(&sealed_ctx, &CancellationToken::new()).await.unwrap();
    let want = digest(&pg, "app", "sales.orders").await;
    pg.exec("app", "DROP TABLE sales.orders CASCADE").await;
    let mut vars = s3.vars("sealed");
    vars.push(("RESTORE_DATABASE_URL", pg.url("app")));
    vars.push(("BACKUP_ENCRYPTION_IDENTITY_FILE", file));
    let o = restore_table(&vars, &["sales.orders"]).await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("read the whole backup") && t.contains("encrypted"), "{t}");
    assert_eq!(digest(&pg, "app", "sales.orders").await, want);
}

/// Where a publication of every table is read by a logical replication slot, a one-table restore
/// would send its staged rows to the subscribers under a name they do not have: it is refused
/// before anything is changed, and goes ahead once nothing reads the publication.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_replicated_with_all_its_tables_gets_no_one_table_restore() {
    init_logs();
    let pg = PgServer::start_with(&["wal_level=logical"]);
    sample::build(&pg, "app", 200).await;
    let s3 = S3Server::start().await;
    let ctx = context(&pg, "app", s3.vars("replicated"), &[]).await;
    backup::run_once(&ctx, &CancellationToken::new()).await.unwrap();
    let mut vars = s3.vars("replicated");
    vars.push(("RESTORE_DATABASE_URL", pg.url("app")));
    pg.exec(
        "app",
        "CREATE PUBLICATION everything FOR ALL TABLES; DROP TABLE sales.orders CASCADE;",
    )
    .await;
    pg.exec("app", "SELECT pg_create_logical_replication_slot('subscriber', 'pgoutput');")
        .await;
    let o = restore_table(&vars, &["sales.orders"]).await;
    let t = text(&o);
    assert_ne!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("publication everything FOR ALL TABLES") && t.contains("--to"), "{t}");
    no_staging_left(&pg).await;
    pg.exec("app", "SELECT pg_drop_replication_slot('subscriber');").await;
    let o = restore_table(&vars, &["sales.orders"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}
