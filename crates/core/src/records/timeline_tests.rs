//! Loading a window of records from the in-memory store, counting what the store is asked for.

use super::*;
use crate::infra::storage::faulty::{Faulty, Op};
use crate::infra::storage::{put_bytes, DynStorage, MemoryStorage};
use crate::records::history::{write_failure, write_verification};
use crate::records::manifest::Manifest;
use bytes::Bytes;
use std::sync::Arc;

fn ago(days: i64) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::days(days) - chrono::Duration::minutes(5)
}

async fn backup(st: &dyn Storage, layout: &Layout, at: DateTime<Utc>) -> BackupId {
    let never = CancellationToken::new();
    let id = BackupId::at(at);
    let m = Manifest {
        uncompressed_size: 5000,
        started_at: at,
        finished_at: at + chrono::Duration::seconds(30),
        ..Manifest::default()
    };
    put_bytes(st, &layout.backup(id), Bytes::from_static(b"x"), &never).await.unwrap();
    put_bytes(st, &layout.manifest(id), serde_json::to_vec(&m).unwrap().into(), &never)
        .await
        .unwrap();
    id
}

fn verification(at: DateTime<Utc>, passed: bool) -> VerificationRecord {
    serde_json::from_value(serde_json::json!({
        "key": "p/backup.sql.gz", "verified_at": at, "passed": passed,
        "reasons": if passed { vec![] } else { vec!["x".repeat(100_000)] },
        "restore_secs": 1.0, "checks_secs": 1.0, "total_secs": 2.0, "restored_bytes": null,
        "tables_checked": 3,
    }))
    .unwrap()
}

#[tokio::test]
async fn a_window_is_read_once_the_newest_verdicts_however_old_and_unreadable_records_counted() {
    let faulty = Arc::new(Faulty::new(Arc::new(MemoryStorage::new())));
    let st: DynStorage = faulty.clone();
    let layout = Layout::new("p");
    let never = CancellationToken::new();
    backup(st.as_ref(), &layout, ago(100)).await;
    let mut ids = Vec::new();
    for d in [3, 2, 1] {
        ids.push(backup(st.as_ref(), &layout, ago(d)).await);
    }
    // The only verification is older than the window: it still counts for the verdict.
    write_verification(st.as_ref(), &layout, ids[0], &verification(ago(95), false), &never)
        .await
        .unwrap();
    let failure = FailureRecord {
        at: ago(1),
        error: "connection refused".into(),
        retryable: true,
    };
    write_failure(st.as_ref(), &layout, &failure, &never).await.unwrap();
    put_bytes(st.as_ref(), &layout.failure(ago(2)), Bytes::from_static(b"{broken"), &never)
        .await
        .unwrap();

    let mut cache = RecordCache::default();
    let t = Timeline::load(st.as_ref(), &layout, ago(90), &mut cache, &never).await.unwrap();
    assert_eq!(
        t.backups.iter().map(|b| b.id).collect::<Vec<_>>(),
        ids,
        "the window's backups, oldest first"
    );
    assert_eq!(t.backups[0].sql_size, 5000);
    assert_eq!(t.backups[0].duration_secs, Some(30.0));
    assert_eq!(t.verifications.len(), 1);
    assert!(t.verifications[0].reasons[0].len() < TEXT_KEPT + 10, "long texts are cut");
    assert_eq!(t.failures, vec![failure.clone()]);
    assert_eq!(t.unreadable, 1);
    assert_eq!(t.catalog.backups.len(), 4);
    // What the prefix holds in all: the catalog's listing plus the metadata area.
    let mut all = st.list(&layout.backups_prefix(), &never).await.unwrap();
    all.extend(st.list(&format!("{META_ROOT}/p/"), &never).await.unwrap());
    assert_eq!((t.object_count, t.total_bytes), (all.len(), all.iter().map(|o| o.size).sum()));

    // Loaded again: only the unreadable record is asked for again.
    let gets = faulty.calls(Op::Get);
    let again = Timeline::load(st.as_ref(), &layout, ago(90), &mut cache, &never).await.unwrap();
    assert_eq!(faulty.calls(Op::Get) - gets, 1);
    assert_eq!(again.backups, t.backups);

    // A newest verification whose record cannot be read is still known by its name.
    let key = layout.verification(ago(0), ids[2], false);
    put_bytes(st.as_ref(), &key, Bytes::from_static(b"not json"), &never).await.unwrap();
    let t = Timeline::load(st.as_ref(), &layout, ago(90), &mut cache, &never).await.unwrap();
    let newest = t.newest_verification_unreadable.expect("named");
    assert_eq!((newest.backup, newest.passed), (ids[2], Some(false)));
    assert_eq!(t.unreadable, 2);

    // A manifest replaced by another of a different size is read again.
    put_bytes(st.as_ref(), &layout.backup(ids[1]), Bytes::from_static(b"bigger"), &never)
        .await
        .unwrap();
    let gets = faulty.calls(Op::Get);
    Timeline::load(st.as_ref(), &layout, ago(90), &mut cache, &never).await.unwrap();
    assert_eq!(
        faulty.calls(Op::Get) - gets,
        3,
        "the changed backup's manifest and the two unreadable records"
    );
}
