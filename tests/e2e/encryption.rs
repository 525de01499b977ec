//! Client-side encryption with age: the backup service holds only public keys; verification,
//! restore and check open the object with an identity; stock `age -d | gunzip | psql` restores it;
//! the wrong identity is the environment's fault, never a bad-backup verdict.

use age::secrecy::ExposeSecret;
use age::x25519::Identity;
use pgvigil_e2e::fixtures::key_file;
use pgvigil_e2e::lines;
use pgvigil_e2e::run::{run, text};
use pgvigil_e2e::{init_logs, sample, PgServer, S3Server};
use std::process::{Command, Stdio};

fn with(vars: &[(&'static str, String)], extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut v = vars.to_vec();
    v.extend(extra.iter().cloned());
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_backups_verify_restore_check_and_open_with_stock_age() {
    init_logs();
    let pg = PgServer::start();
    sample::build(&pg, "app", 3000).await;
    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (current, escrow, stranger) = (Identity::generate(), Identity::generate(), Identity::generate());
    let current_file = key_file(dir.path(), "current.txt", &current);
    let escrow_file = key_file(dir.path(), "escrow.txt", &escrow);
    let stranger_file = key_file(dir.path(), "stranger.txt", &stranger);
    let secret = current.to_string().expose_secret().to_string();
    let mut vars = s3.vars("sealed");
    vars.push(("DATABASE_URL", pg.url("app")));
    vars.push(("VERIFY_DATABASE_URL", pg.url("postgres")));
    let recipients = (
        "BACKUP_ENCRYPTION_RECIPIENTS",
        format!("{}, {}", current.to_public(), escrow.to_public()),
    );

    // The backup service holds no private key: an identity file, or a private key given as a
    // recipient, is refused — without showing it.
    let o = run(
        "pgvigil-backup",
        &["--once"],
        &with(
            &vars,
            &[recipients.clone(), ("BACKUP_ENCRYPTION_IDENTITY_FILE", current_file.clone())],
        ),
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("must hold no private key"), "{}", text(&o));
    let o = run(
        "pgvigil-backup",
        &["--once"],
        &with(&vars, &[("BACKUP_ENCRYPTION_RECIPIENTS", secret.clone())]),
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("this is a private key") && !text(&o).contains(&secret),
        "{}",
        text(&o)
    );

    // An encrypted backup: the object is an age file, named so, and so is the latest copy.
    let o = run("pgvigil-backup", &["--once"], &with(&vars, std::slice::from_ref(&recipients))).await;
    assert!(o.status.success(), "{}", text(&o));
    let bucket = s3.root.path().join(pgvigil_e2e::s3::BUCKET).join("sealed");
    let names: Vec<String> = std::fs::read_dir(&bucket)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let object = names
        .iter()
        .find(|n| n.starts_with("backup_2") && n.ends_with(".sql.gz.age"))
        .unwrap_or_else(|| panic!("{names:?}"));
    assert!(names.contains(&"backup_latest.sql.gz.age".to_string()), "{names:?}");
    assert!(!names.iter().any(|n| n.ends_with(".sql.gz")), "no plaintext object: {names:?}");
    let path = bucket.join(object);
    assert!(std::fs::read(&path).unwrap().starts_with(b"age-encryption.org/v1"));

    // Verification with the identity passes; with the escrow identity too; and with the identity
    // given inline (Railway has no file mounts), which is never shown.
    let inline = ("BACKUP_ENCRYPTION_IDENTITY", secret.clone());
    for given in [
        ("BACKUP_ENCRYPTION_IDENTITY_FILE", current_file.clone()),
        ("BACKUP_ENCRYPTION_IDENTITY_FILE", escrow_file.clone()),
        inline.clone(),
    ] {
        let o = run("pgvigil-verify", &["--once"], &with(&vars, &[given])).await;
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains(lines::VERIFY_PASSED), "{}", text(&o));
        assert!(!text(&o).contains(&secret), "{}", text(&o));
    }
    let o = run("pgvigil-backup", &["--once"], &with(&vars, &[recipients.clone(), inline])).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("must hold no private key") && !text(&o).contains(&secret),
        "{}",
        text(&o)
    );
    // With an identity the backup was not encrypted to, it could not run: no verdict.
    let o = run(
        "pgvigil-verify",
        &["--once"],
        &with(&vars, &[("BACKUP_ENCRYPTION_IDENTITY_FILE", stranger_file.clone())]),
    )
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("could not run") && text(&o).contains("cannot decrypt with this identity"),
        "{}",
        text(&o)
    );
    assert!(!text(&o).contains(lines::VERIFY_FAILED), "{}", text(&o));
    // Without any identity, the same.
    let o = run("pgvigil-verify", &["--once"], &vars).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("BACKUP_ENCRYPTION_IDENTITY_FILE"), "{}", text(&o));
    let (code, status) = {
        let o = run("pgvigil", &["status", "--json"], &vars).await;
        (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned())
    };
    assert_eq!(code, Some(0), "only passing verdicts were recorded: {status}");

    // check and restore with the identity.
    let ident = [("BACKUP_ENCRYPTION_IDENTITY_FILE", current_file.clone())];
    // The default check compares the ciphertext with the manifest: no identity needed.
    let o = run("pgvigil", &["check"], &vars).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("checked: size and SHA-256"), "{}", text(&o));
    let o = run("pgvigil", &["check", "--deep"], &with(&vars, &ident)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("checked: deep"), "{}", text(&o));
    let o = run("pgvigil", &["check", "--deep"], &vars).await;
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("BACKUP_ENCRYPTION_IDENTITY_FILE"), "{}", text(&o));
    pg.create_db("restored").await;
    let o = run("pgvigil", &["restore", "--to", &pg.url("restored")], &with(&vars, &ident)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let want = sample::row_counts(&pg, "app").await;
    assert_eq!(sample::row_counts(&pg, "restored").await, want);

    // Without pgvigil: age -d -i key.txt backup.sql.gz.age | gunzip | psql
    pg.create_db("stock").await;
    let mut age = Command::new("age")
        .args(["-d", "-i", &current_file])
        .arg(&path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("the age command line tool (apt-get install age)");
    let mut gunzip = Command::new("gunzip")
        .arg("-c")
        .stdin(age.stdout.take().unwrap())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = pg.psql_into("stock").stdin(gunzip.stdout.take().unwrap()).output().unwrap();
    assert!(age.wait().unwrap().success() && gunzip.wait().unwrap().success());
    assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sample::row_counts(&pg, "stock").await, want);

    // A damaged header looks to age like a key it cannot unwrap: the hash tells that it is the
    // backup that is bad, not the key file. Verification fails it; restore falls back.
    let o = run("pgvigil-backup", &["--once"], &with(&vars, std::slice::from_ref(&recipients))).await;
    assert!(o.status.success(), "{}", text(&o));
    let mut newest: Vec<String> = std::fs::read_dir(&bucket)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("backup_2"))
        .collect();
    newest.sort();
    let damaged = bucket.join(newest.last().unwrap());
    let mut data = std::fs::read(&damaged).unwrap();
    // Inside the first recipient stanza's wrapped file key (the header's second and third lines).
    let stanza = data.iter().position(|b| *b == b'\n').unwrap() + 1;
    let body = stanza + data[stanza..].iter().position(|b| *b == b'\n').unwrap() + 3;
    data[body] = if data[body] == b'A' { b'B' } else { b'A' };
    std::fs::write(&damaged, &data).unwrap();
    let o = run("pgvigil-verify", &["--once"], &with(&vars, &ident)).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains(lines::VERIFY_FAILED), "a bad backup, not a bad key: {}", text(&o));
    assert!(text(&o).contains("SHA-256"), "{}", text(&o));
    pg.create_db("fallback").await;
    let o = run("pgvigil", &["restore", "--to", &pg.url("fallback")], &with(&vars, &ident)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("FAILED {}", newest.last().unwrap())) || text(&o).contains("FAILED"),
        "{}",
        text(&o)
    );
    assert_eq!(sample::row_counts(&pg, "fallback").await, want);
}
