//! A throwaway PostgreSQL cluster: initdb + pg_ctl in a temp dir on a free port, run as the
//! `postgres` system user when the tests run as root, stopped and removed on drop.

use nix::unistd::{Gid, Uid, User};
use sqlx::postgres::PgConnection;
use sqlx::Connection;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tempfile::TempDir;

/// Password of the `postgres` superuser in every test cluster (TCP connections need it).
pub const PASSWORD: &str = "pgvigil-test-Pw1";

/// A running cluster.
pub struct PgServer {
    /// Holds the data directory and socket.
    dir: TempDir,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Directory of initdb/pg_ctl/psql.
    pub bindir: PathBuf,
    /// Run as this user when we are root.
    owner: Option<(Uid, Gid)>,
    /// Extra `-c name=value` server settings.
    settings: Vec<String>,
}

/// Directory of the newest installed server binaries (or `PGVIGIL_TEST_PG_BIN`).
pub fn bindir() -> PathBuf {
    if let Some(d) = std::env::var_os("PGVIGIL_TEST_PG_BIN") {
        return PathBuf::from(d);
    }
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let major = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                    let bin = e.path().join("bin");
                    bin.join("initdb").is_file().then_some((major, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.pop()
        .map(|(_, d)| d)
        .expect("PostgreSQL server binaries not found: install postgresql (see .ci/run)")
}

/// A TCP port free on this machine now (for a server a test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl PgServer {
    /// Creates and starts a new cluster.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Creates and starts a new cluster with extra server settings (`"max_connections=5"`).
    pub fn start_with(settings: &[&str]) -> Self {
        let owner = if Uid::effective().is_root() {
            let u = User::from_name("postgres")
                .unwrap()
                .expect("the postgres system user must exist when running as root");
            Some((u.uid, u.gid))
        } else {
            None
        };
        let dir = tempfile::Builder::new().prefix("pgvigil-pg-").tempdir().unwrap();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid.as_raw()), Some(gid.as_raw())).unwrap();
        }
        let bindir = bindir();
        let mut server = Self {
            dir,
            port: 0,
            bindir,
            owner,
            settings: settings.iter().map(|s| format!(" -c {s}")).collect(),
        };
        let pwfile = server.dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&pwfile, Some(uid.as_raw()), Some(gid.as_raw())).unwrap();
        }
        let data = server.data();
        server.checked(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-N",
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--pwfile",
                pwfile.to_str().unwrap(),
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
        );
        for _ in 0..5 {
            server.port = free_port();
            if server.try_start() {
                return server;
            }
        }
        panic!(
            "could not start PostgreSQL: {}",
            std::fs::read_to_string(server.dir.path().join("log")).unwrap_or_default()
        );
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, tool: &str) -> Command {
        let mut c = Command::new(self.bindir.join(tool));
        c.env_clear().env("PATH", "/usr/bin:/bin").env("LC_ALL", "C.UTF-8");
        if let Some((uid, gid)) = self.owner {
            c.uid(uid.as_raw()).gid(gid.as_raw());
        }
        c.current_dir(self.dir.path());
        c
    }

    fn checked(&self, tool: &str, args: &[&str]) -> Output {
        let out = self.command(tool).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn try_start(&self) -> bool {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c synchronous_commit=off{}",
            self.port,
            self.dir.path().display(),
            self.settings.concat()
        );
        let log = self.dir.path().join("log");
        self.command("pg_ctl")
            .args([
                "-D",
                self.data().to_str().unwrap(),
                "-w",
                "-t",
                "30",
                "-l",
                log.to_str().unwrap(),
                "-o",
                &opts,
                "start",
            ])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Starts the server again after [`PgServer::stop`], on the same port.
    pub fn restart(&self) {
        assert!(self.try_start(), "restart failed");
    }

    /// Stops the server (fast mode), e.g. to simulate an outage.
    pub fn stop(&self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", self.data().to_str().unwrap(), "-m", "fast", "-w", "stop"])
            .output();
    }

    /// `postgresql://postgres:PASSWORD@127.0.0.1:PORT/db`
    pub fn url(&self, db: &str) -> String {
        format!("postgresql://postgres:{PASSWORD}@127.0.0.1:{}/{db}", self.port)
    }

    /// A URL with another user and password.
    pub fn url_as(&self, user: &str, password: &str, db: &str) -> String {
        format!("postgresql://{user}:{password}@127.0.0.1:{}/{db}", self.port)
    }

    /// Connects as the superuser.
    pub async fn connect(&self, db: &str) -> PgConnection {
        PgConnection::connect(&self.url(db)).await.unwrap()
    }

    /// Runs SQL statements (simple protocol, several allowed) as the superuser.
    pub async fn exec(&self, db: &str, sql: &str) {
        let mut c = self.connect(db).await;
        sqlx::raw_sql(sql).execute(&mut c).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        c.close().await.unwrap();
    }

    /// Creates a role that may log in with `password` and create databases, nothing more (the
    /// least-privilege verify role of SECURITY.md).
    pub async fn create_createdb_role(&self, name: &str, password: &str) {
        self.exec("postgres", &format!("CREATE ROLE \"{name}\" LOGIN CREATEDB PASSWORD '{password}'"))
            .await;
    }

    /// Creates a database.
    pub async fn create_db(&self, name: &str) {
        self.exec("postgres", &format!("CREATE DATABASE \"{name}\"")).await;
    }

    /// Names of all databases.
    pub async fn databases(&self) -> Vec<String> {
        let mut c = self.connect("postgres").await;
        let names: Vec<String> = sqlx::query_scalar("SELECT datname FROM pg_database ORDER BY 1")
            .fetch_all(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
        names
    }

    /// `psql` into `db` as the superuser, stopping at the first error, its output discarded:
    /// what a stock restore pipes SQL into.
    pub fn psql_into(&self, db: &str) -> std::process::Command {
        let mut c = std::process::Command::new(self.psql());
        c.args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-d",
            db,
        ])
        .env("PGPASSWORD", PASSWORD)
        .stdout(std::process::Stdio::null());
        c
    }

    /// The psql of this cluster.
    pub fn psql(&self) -> PathBuf {
        self.bindir.join("psql")
    }

    /// Socket directory.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Turns TLS on with a throwaway CA and from then on accepts TCP connections only with a
    /// client certificate that CA signed, for the role it names (`cert` authentication; the
    /// password no longer works over TCP). Returns the CA certificate and a client certificate
    /// and key for `postgres`, kept in `dir`.
    pub async fn require_client_certificates(&self, dir: &Path) -> TlsClient {
        let server_dir = self.dir.path().join("tls");
        std::fs::create_dir_all(&server_dir).unwrap();
        let ext = dir.join("ext.cnf");
        std::fs::write(
            &ext,
            "[server]\nbasicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n\
             [client]\nbasicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl").args(args).output().expect("openssl must be installed");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let p = |d: &Path, f: &str| d.join(f).display().to_string();
        let (ca_key, ca) = (p(dir, "ca.key"), p(dir, "ca.crt"));
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-nodes",
            "-newkey",
            "rsa:2048",
            "-keyout",
            &ca_key,
            "-out",
            &ca,
            "-subj",
            "/CN=pgvigil test CA",
            "-days",
            "2",
        ]);
        let issue = |d: &Path, name: &str, cn: &str| {
            let (key, csr, crt) = (
                p(d, &format!("{name}.key")),
                p(d, &format!("{name}.csr")),
                p(d, &format!("{name}.crt")),
            );
            openssl(&[
                "req",
                "-new",
                "-nodes",
                "-newkey",
                "rsa:2048",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={cn}"),
            ]);
            let serial = p(dir, "ca.srl");
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca,
                "-CAkey",
                &ca_key,
                "-CAserial",
                &serial,
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                ext.to_str().unwrap(),
                "-extensions",
                name,
            ]);
            std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
            (PathBuf::from(crt), PathBuf::from(key))
        };
        let (server_crt, server_key) = issue(&server_dir, "server", "localhost");
        let (client_crt, client_key) = issue(dir, "client", "postgres");
        std::fs::copy(&ca, server_dir.join("ca.crt")).unwrap();
        if let Some((uid, gid)) = self.owner {
            for f in [
                server_dir.clone(),
                server_dir.join("ca.crt"),
                server_crt.clone(),
                server_key.clone(),
            ] {
                std::os::unix::fs::chown(&f, Some(uid.as_raw()), Some(gid.as_raw())).unwrap();
            }
        }
        // ALTER SYSTEM cannot share a query string with other statements.
        for (name, value) in [
            ("ssl_cert_file", server_crt.display().to_string()),
            ("ssl_key_file", server_key.display().to_string()),
            ("ssl_ca_file", server_dir.join("ca.crt").display().to_string()),
            ("ssl", "on".to_string()),
        ] {
            self.exec("postgres", &format!("ALTER SYSTEM SET {name} = '{value}'")).await;
        }
        std::fs::write(
            self.data().join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 cert\n",
        )
        .unwrap();
        self.checked("pg_ctl", &["-D", self.data().to_str().unwrap(), "reload"]);
        std::thread::sleep(std::time::Duration::from_secs(1));
        TlsClient {
            ca: PathBuf::from(ca),
            cert: client_crt,
            key: client_key,
        }
    }
}

/// What a client needs for a server from [`PgServer::require_client_certificates`].
pub struct TlsClient {
    /// The CA certificate (`PGSSLROOTCERT`).
    pub ca: PathBuf,
    /// The client certificate for `postgres` (`PGSSLCERT`).
    pub cert: PathBuf,
    /// Its key, mode 0600 (`PGSSLKEY`).
    pub key: PathBuf,
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", self.data().to_str().unwrap(), "-m", "immediate", "-w", "stop"])
            .output();
    }
}
