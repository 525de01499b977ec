//! Storage conformance: the same behaviour from every backend (local directory, S3, the in-memory
//! store, and the fault injector around it when it injects nothing).

use bytes::Bytes;
use pgvigil_core::infra::config::Role;
use pgvigil_core::infra::storage::Key;
use pgvigil_core::infra::storage::{self, body_channel, Abort, Condition, DynStorage, PartPlan, PutOptions, StorageError};
use pgvigil_core::records::keys::Layout;
use pgvigil_e2e::{settings, S3Server};
use tokio_util::sync::CancellationToken;

const MIB: usize = 1024 * 1024;

/// Every backend, with the guard that keeps its server or directory alive.
async fn backends() -> Vec<(&'static str, DynStorage, Box<dyn std::any::Any>)> {
    let dir = tempfile::tempdir().unwrap();
    let local = settings(&[("BACKUP_DIR", dir.path().display().to_string())], Role::Cli);
    let s3 = S3Server::start().await;
    let mut vars = s3.vars("conformance");
    vars.push(("S3_PART_SIZE_MB", "5".into()));
    let remote = settings(&vars, Role::Cli);
    let memory = || -> DynStorage { std::sync::Arc::new(storage::MemoryStorage::new()) };
    vec![
        ("local", storage::connect(&local.storage).await.unwrap(), Box::new(dir)),
        ("s3", storage::connect(&remote.storage).await.unwrap(), Box::new(s3)),
        ("memory", memory(), Box::new(())),
        // The fault injector, injecting nothing, changes nothing.
        ("faulty(memory)", std::sync::Arc::new(storage::Faulty::new(memory())), Box::new(())),
    ]
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

async fn put_chunks(st: &DynStorage, key: &Key, data: &[u8], chunk: usize, force_multipart: bool) -> Result<u32, StorageError> {
    let (tx, rx) = body_channel(4);
    let cancel = CancellationToken::new();
    let owned = data.to_vec();
    let producer = async move {
        for c in owned.chunks(chunk.max(1)) {
            if tx.send(Bytes::copy_from_slice(c)).await.is_err() {
                return;
            }
        }
        tx.finish().await;
    };
    let opts = PutOptions {
        expected_size: None,
        force_multipart,
        min_part_size: 0,
        ..Default::default()
    };
    let (_, r) = tokio::join!(producer, st.put(key, rx, opts, &cancel));
    r.map(|p| p.parts)
}

#[tokio::test]
async fn round_trips_of_every_size() {
    for (name, st, _guard) in backends().await {
        let sizes = [0, 1, 5 * MIB, 5 * MIB + 1, 17 * MIB + 333];
        for (i, size) in sizes.into_iter().enumerate() {
            for force in [false, true] {
                let key = Key::new(format!("conformance/obj-{i}-{force}")).unwrap();
                let data = pattern(size);
                put_chunks(&st, &key, &data, 300_000, force)
                    .await
                    .unwrap_or_else(|e| panic!("{name} put {size}: {e}"));
                let back = storage::get_bytes(st.as_ref(), &key, u64::MAX, &CancellationToken::new())
                    .await
                    .unwrap();
                assert!(back == data, "{name}: {size} bytes (multipart forced: {force}) did not round-trip");
                assert_eq!(
                    st.head(&key, &CancellationToken::new()).await.unwrap().unwrap().size,
                    size as u64,
                    "{name}"
                );
            }
        }
    }
}

#[tokio::test]
async fn s3_uploads_use_equal_parts() {
    let s3 = S3Server::start().await;
    let mut vars = s3.vars("parts");
    vars.push(("S3_PART_SIZE_MB", "5".into()));
    let st = storage::connect(&settings(&vars, Role::Cli).storage).await.unwrap();
    let key = Key::new("parts/x").unwrap();
    assert_eq!(put_chunks(&st, &key, &pattern(5 * MIB), 1 << 20, true).await.unwrap(), 1);
    assert_eq!(put_chunks(&st, &key, &pattern(16 * MIB), 777_777, false).await.unwrap(), 4);
}

#[tokio::test]
async fn failed_or_cancelled_uploads_leave_nothing_behind() {
    for (name, st, guard) in backends().await {
        // The producer fails after more than one part was sent.
        let key = Key::new("conformance/failed").unwrap();
        let (tx, rx) = body_channel(4);
        let cancel = CancellationToken::new();
        let producer = async move {
            for c in pattern(12 * MIB).chunks(MIB) {
                tx.send(Bytes::copy_from_slice(c)).await.unwrap();
            }
            tx.fail().await;
        };
        let (_, r) = tokio::join!(producer, st.put(&key, rx, PutOptions::default(), &cancel));
        assert!(matches!(r, Err(StorageError::Aborted(Abort::ProducerFailed))), "{name}: {r:?}");
        assert!(
            st.head(&key, &CancellationToken::new()).await.unwrap().is_none(),
            "{name}: object published after failure"
        );

        // The producer disappears without finishing.
        let (tx, rx) = body_channel(4);
        let producer = async move {
            for c in pattern(7 * MIB).chunks(MIB) {
                tx.send(Bytes::copy_from_slice(c)).await.unwrap();
            }
            drop(tx);
        };
        let (_, r) = tokio::join!(producer, st.put(&key, rx, PutOptions::default(), &cancel));
        assert!(matches!(r, Err(StorageError::Aborted(Abort::ProducerGone))), "{name}: {r:?}");

        // Cancellation in the middle.
        let (tx, rx) = body_channel(4);
        let c2 = cancel.clone();
        let producer = async move {
            for (i, c) in pattern(12 * MIB).chunks(MIB).enumerate() {
                if i == 7 {
                    c2.cancel();
                }
                if tx.send(Bytes::copy_from_slice(c)).await.is_err() {
                    return;
                }
            }
            std::future::pending::<()>().await;
        };
        let r = tokio::select! {
            r = st.put(&key, rx, PutOptions::default(), &cancel) => r,
            () = producer => unreachable!(),
        };
        assert!(matches!(r, Err(StorageError::Cancelled)), "{name}: {r:?}");
        assert!(
            st.head(&key, &CancellationToken::new()).await.unwrap().is_none(),
            "{name}: object published after cancel"
        );
        let pending = match guard.downcast_ref::<S3Server>() {
            Some(s3) => s3.pending_uploads(),
            None => st.pending_uploads("conformance/", &CancellationToken::new()).await.unwrap(),
        };
        assert!(pending.is_empty(), "{name}: pending uploads left behind: {pending:?}");
        assert!(
            st.list("conformance/", &CancellationToken::new()).await.unwrap().is_empty(),
            "{name}: listing shows leftovers"
        );
    }
}

#[tokio::test]
async fn listing_past_a_thousand_keys_and_batch_delete() {
    for (name, st, _guard) in backends().await {
        let keys: Vec<Key> = (0..1100).map(|i| Key::new(format!("many/k{i:05}")).unwrap()).collect();
        let mut set = tokio::task::JoinSet::new();
        for k in keys.clone() {
            let st = st.clone();
            set.spawn(async move { storage::put_bytes(st.as_ref(), &k, Bytes::from_static(b"x"), &CancellationToken::new()).await });
            if set.len() >= 32 {
                set.join_next().await.unwrap().unwrap().unwrap();
            }
        }
        while let Some(r) = set.join_next().await {
            r.unwrap().unwrap();
        }
        let listed = st.list("many/", &CancellationToken::new()).await.unwrap();
        assert_eq!(listed.len(), 1100, "{name}");
        assert!(listed.windows(2).all(|w| w[0].key < w[1].key), "{name}: listing not in key order");
        assert!(
            st.list("many/k0109", &CancellationToken::new()).await.unwrap().len() == 10,
            "{name}: prefix filter"
        );
        st.delete_many(&keys, &CancellationToken::new()).await.unwrap();
        assert!(st.list("many/", &CancellationToken::new()).await.unwrap().is_empty(), "{name}");
        // Deleting missing keys is not an error.
        st.delete_many(&keys[..3], &CancellationToken::new()).await.unwrap();
    }
}

#[tokio::test]
async fn copy_head_and_missing_objects() {
    for (name, st, _guard) in backends().await {
        let a = Key::new("c/a").unwrap();
        let b = Key::new("c/sub/b").unwrap();
        let data = pattern(3 * MIB + 5);
        put_chunks(&st, &a, &data, MIB, false).await.unwrap();
        st.copy(&a, &b, &CancellationToken::new()).await.unwrap();
        assert!(
            storage::get_bytes(st.as_ref(), &b, u64::MAX, &CancellationToken::new())
                .await
                .unwrap()
                == data,
            "{name}"
        );
        let missing = Key::new("c/missing").unwrap();
        assert!(st.head(&missing, &CancellationToken::new()).await.unwrap().is_none(), "{name}");
        assert!(
            matches!(st.get(&missing, &CancellationToken::new()).await, Err(StorageError::NotFound(_))),
            "{name}"
        );
        assert!(
            matches!(
                st.copy(&missing, &b, &CancellationToken::new()).await,
                Err(StorageError::NotFound(_))
            ),
            "{name}"
        );
    }
}

#[tokio::test]
async fn preflight_passes_on_every_backend() {
    for (name, st, _guard) in backends().await {
        storage::preflight(
            st.as_ref(),
            &Layout::new("conformance").backups_prefix(),
            &Layout::new("conformance").probe(),
            &CancellationToken::new(),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            st.list("_pgvigil/", &CancellationToken::new()).await.unwrap().is_empty(),
            "{name}: probe left behind"
        );
    }
}

#[tokio::test]
async fn every_preflight_failure_has_its_own_message() {
    let s3 = S3Server::start().await;
    let check = |vars: Vec<(&'static str, String)>| async move {
        let st = storage::connect(&settings(&vars, Role::Cli).storage).await.unwrap();
        storage::preflight(
            st.as_ref(),
            &Layout::new("pf").backups_prefix(),
            &Layout::new("pf").probe(),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err()
    };
    let with = |k: &'static str, v: &str| {
        let mut vars = s3.vars("pf");
        vars.retain(|(n, _)| *n != k);
        vars.push((k, v.to_string()));
        vars
    };
    let cases = [
        (with("S3_BUCKET", "no-such-bucket"), "the bucket does not exist", false),
        (
            with("S3_SECRET_ACCESS_KEY", "wrong-secret-key-000000000"),
            "signature was rejected",
            false,
        ),
        (with("S3_ACCESS_KEY_ID", "unknown-access-key"), "access", false),
        (with("S3_ENDPOINT", "http://127.0.0.1:9"), "could not connect", true),
    ];
    for (vars, want, retryable) in cases {
        let err = check(vars).await;
        let msg = err.to_string();
        assert!(msg.contains(want), "expected {want:?} in {msg:?}");
        assert!(msg.starts_with("storage self-test failed while listing"), "{msg}");
        assert_eq!(err.is_retryable(), retryable, "{msg}");
        assert!(
            !msg.contains("wrong-secret") && !msg.contains(pgvigil_e2e::s3::SECRET_KEY),
            "secret in {msg}"
        );
    }
}

#[tokio::test]
async fn conditional_writes_create_once_and_replace_only_the_version_they_read() {
    let never = CancellationToken::new();
    for (name, st, _guard) in backends().await {
        let k = Key::new("cond/lease.json").unwrap();
        let v1 = st
            .put_if(&k, Bytes::from_static(b"one"), &Condition::Absent, &never)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let again = st.put_if(&k, Bytes::from_static(b"two"), &Condition::Absent, &never).await;
        assert!(matches!(again, Err(StorageError::PreconditionFailed(_))), "{name}: {again:?}");
        let head = st.head(&k, &never).await.unwrap().unwrap();
        assert!(head.etag.is_some(), "{name}: the version is listed");
        let v2 = st
            .put_if(
                &k,
                Bytes::from_static(b"three"),
                &Condition::Matches(head.etag.clone().unwrap()),
                &never,
            )
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_ne!(v1, v2, "{name}");
        let stale = st
            .put_if(&k, Bytes::from_static(b"four"), &Condition::Matches(head.etag.unwrap()), &never)
            .await;
        assert!(matches!(stale, Err(StorageError::PreconditionFailed(_))), "{name}: {stale:?}");
        assert_eq!(
            storage::get_bytes(st.as_ref(), &k, u64::MAX, &never).await.unwrap(),
            b"three",
            "{name}"
        );
    }
}

/// Sends `data`, then (when `pad`) as many more bytes as the uploader's plan asks for; returns the
/// plan, the bytes sent and the upload's result.
async fn put_planned(st: &DynStorage, key: &Key, data: Vec<u8>, pad: bool) -> (PartPlan, Vec<u8>, Result<u32, StorageError>) {
    // Planned for a large backup: 17 MiB parts are then at most 1/64 of it.
    put_planned_for(st, key, data, pad, Some(64 * 17 * MIB as u64)).await
}

/// As [`put_planned`], for an upload planned for `expected` bytes.
async fn put_planned_for(
    st: &DynStorage,
    key: &Key,
    data: Vec<u8>,
    pad: bool,
    expected: Option<u64>,
) -> (PartPlan, Vec<u8>, Result<u32, StorageError>) {
    let opts = PutOptions {
        expected_size: expected,
        ..PutOptions::default()
    };
    let (mut tx, rx) = body_channel(4);
    let cancel = CancellationToken::new();
    let producer = async move {
        let mut sent = data;
        for c in sent.chunks(700_000) {
            if tx.send(Bytes::copy_from_slice(c)).await.is_err() {
                return (PartPlan::Held, sent);
            }
        }
        let plan = tx.plan().await;
        if let Some(end) = plan.end_for(sent.len() as u64).filter(|_| pad) {
            let more = pattern(end as usize - sent.len());
            for c in more.chunks(700_000) {
                tx.send(Bytes::copy_from_slice(c)).await.unwrap();
            }
            sent.extend(more);
        }
        tx.finish().await;
        (plan, sent)
    };
    let ((plan, sent), r) = tokio::join!(producer, st.put(key, rx, opts, &cancel));
    (plan, sent, r.map(|p| p.parts))
}

#[tokio::test]
async fn large_parts_are_streamed_and_a_body_never_ends_inside_one() {
    let s3 = S3Server::start().await;
    let mut vars = s3.vars("streamed");
    vars.push(("S3_PART_SIZE_MB", "17".into()));
    let st = storage::connect(&settings(&vars, Role::Cli).storage).await.unwrap();
    let streamed = PartPlan::Streamed {
        part: 17 * MIB as u64,
        hold: 8 * MIB as u64,
    };
    // (bytes, parts): a small body is one request; a last part shorter than what a streamed
    // part holds is sent whole; a body that would end inside a started part is filled to its end.
    let cases = [
        (3 * MIB, 1, 3 * MIB),
        (34 * MIB + MIB, 3, 35 * MIB),
        (17 * MIB + 9 * MIB, 2, 34 * MIB),
        (17 * MIB, 1, 17 * MIB),
    ];
    for (i, (len, parts, stored)) in cases.into_iter().enumerate() {
        let key = Key::new(format!("streamed/obj-{i}")).unwrap();
        let (plan, sent, r) = put_planned(&st, &key, pattern(len), true).await;
        assert_eq!(plan, streamed, "{len}");
        assert_eq!(r.unwrap_or_else(|e| panic!("{len}: {e}")), parts, "{len}");
        let back = storage::get_bytes(st.as_ref(), &key, u64::MAX, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(back.len(), stored, "{len}");
        assert!(back == sent, "{len} bytes did not round-trip");
    }
    // A producer that ignores the plan cannot publish a short part: the upload fails, nothing is
    // published and the multipart upload is aborted.
    let key = Key::new("streamed/short").unwrap();
    let (_, _, r) = put_planned(&st, &key, pattern(17 * MIB + 9 * MIB), false).await;
    let e = r.unwrap_err();
    assert!(e.to_string().contains("ended inside streamed part 2"), "{e}");
    assert!(st.head(&key, &CancellationToken::new()).await.unwrap().is_none());
    assert!(s3.pending_uploads().is_empty(), "{:?}", s3.pending_uploads());

    // A body already in memory (a manifest, a record) is never streamed, whatever its size.
    let key = Key::new("streamed/whole").unwrap();
    let opts = PutOptions {
        expected_size: Some(64 * 17 * MIB as u64),
        ..PutOptions::default()
    };
    let data = Bytes::from(pattern(9 * MIB));
    storage::put_bytes_with(st.as_ref(), &key, data.clone(), opts, &CancellationToken::new())
        .await
        .unwrap();
    assert!(
        storage::get_bytes(st.as_ref(), &key, u64::MAX, &CancellationToken::new())
            .await
            .unwrap()
            == data
    );
    // A fixed part size is streamed only for a backup expected to be at least 64 parts.
    let (plan, _, r) = put_planned_for(&st, &Key::new("streamed/small").unwrap(), pattern(9 * MIB), true, None).await;
    assert_eq!((plan, r.unwrap()), (PartPlan::Held, 1));

    // Parts of the default size are held, and a local directory has no parts at all.
    let mut vars = s3.vars("held");
    vars.push(("S3_PART_SIZE_MB", "16".into()));
    let held = storage::connect(&settings(&vars, Role::Cli).storage).await.unwrap();
    let (plan, _, r) = put_planned(&held, &Key::new("held/x").unwrap(), pattern(MIB), true).await;
    assert_eq!((plan, r.unwrap()), (PartPlan::Held, 1));
    let dir = tempfile::tempdir().unwrap();
    let local = storage::connect(&settings(&[("BACKUP_DIR", dir.path().display().to_string())], Role::Cli).storage)
        .await
        .unwrap();
    let (plan, _, _) = put_planned(&local, &Key::new("local/x").unwrap(), pattern(MIB), true).await;
    assert_eq!(plan, PartPlan::Held);
}

#[tokio::test]
async fn a_local_directory_is_private_and_follows_no_link_out_of_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let root = dir.path().join("backups-root");
    let s = settings(&[("BACKUP_DIR", root.display().to_string())], Role::Cli);
    let st = storage::connect(&s.storage).await.unwrap();
    let never = CancellationToken::new();
    let key = Key::new("p/sub/backup_2026-12-03T10-00-00Z.sql.gz").unwrap();
    storage::put_bytes(st.as_ref(), &key, Bytes::from_static(b"data"), &never)
        .await
        .unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&root.join(key.as_str())), 0o600, "files are private");
    assert_eq!(mode(&root.join("p/sub")), 0o700, "directories are private");
    assert_eq!(mode(&root), 0o700);

    // A directory link out of BACKUP_DIR: nothing is written, read, listed or deleted through it.
    std::os::unix::fs::symlink(outside.path(), root.join("p/out")).unwrap();
    std::fs::write(outside.path().join("secret"), b"outside").unwrap();
    let through = Key::new("p/out/secret").unwrap();
    assert!(
        storage::put_bytes(st.as_ref(), &Key::new("p/out/new").unwrap(), Bytes::from_static(b"x"), &never)
            .await
            .is_err()
    );
    assert!(!outside.path().join("new").exists());
    assert!(storage::get_bytes(st.as_ref(), &through, u64::MAX, &never).await.is_err());
    assert!(st.delete_many(std::slice::from_ref(&through), &never).await.is_err());
    assert!(outside.path().join("secret").exists());
    // A file link: not an object, and never opened.
    std::os::unix::fs::symlink(outside.path().join("secret"), root.join("p/backup_2026-12-03T11-00-00Z.sql.gz")).unwrap();
    let listed = st.list("p/", &never).await.unwrap();
    assert_eq!(
        listed.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(),
        [key.as_str()],
        "links are not listed"
    );
    let link = Key::new("p/backup_2026-12-03T11-00-00Z.sql.gz").unwrap();
    assert!(storage::get_bytes(st.as_ref(), &link, u64::MAX, &never).await.is_err());
    assert!(st.head(&link, &never).await.unwrap_or(None).is_none());
}
