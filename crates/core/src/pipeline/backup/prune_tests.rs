//! Retention against the in-memory store, with failures injected where deletes happen.

use super::*;
use crate::infra::storage::faulty::{denied, outage, Faulty, Op};
use crate::infra::storage::{put_bytes, DynStorage, MemoryStorage};
use bytes::Bytes;
use std::sync::Arc;

/// Ten daily backups with their manifests under `p`, the newest first.
async fn ten_days(st: &dyn Storage, layout: &Layout) -> Vec<BackupId> {
    let never = CancellationToken::new();
    let mut ids = Vec::new();
    for days in 0..10 {
        let id = BackupId::at(Utc::now() - chrono::Duration::days(days) - chrono::Duration::minutes(1));
        put_bytes(st, &layout.backup(id), Bytes::from_static(b"backup"), &never)
            .await
            .unwrap();
        put_bytes(st, &layout.manifest(id), Bytes::from_static(b"{}"), &never)
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

async fn names(st: &dyn Storage, prefix: &str) -> usize {
    st.list(prefix, &CancellationToken::new()).await.unwrap().len()
}

#[tokio::test]
async fn retention_deletes_old_backups_with_their_manifests_and_nothing_when_deletes_fail() {
    let faulty = Arc::new(Faulty::new(Arc::new(MemoryStorage::new())));
    let st: DynStorage = faulty.clone();
    let layout = Layout::new("p");
    let never = CancellationToken::new();
    let ids = ten_days(st.as_ref(), &layout).await;
    let policy = RetentionPolicy::simple(3, 2);

    // A store that refuses deletes: an error, and every backup and manifest still there.
    faulty.fail(Op::Delete, "backup_", denied, None);
    let r = prune_with((st.as_ref(), None), &layout, policy, None, false, None, &never).await;
    assert!(r.is_err(), "{r:?}");
    assert_eq!(names(st.as_ref(), &layout.backups_prefix()).await, 10);
    assert_eq!(names(st.as_ref(), &layout.manifests_prefix()).await, 10);

    // An outage on the manifests only: the backups go, their manifests stay for the next run
    // (a manifest is never removed before its backup).
    faulty.clear();
    faulty.fail(Op::Delete, "manifests/", outage, Some(1));
    let r = prune_with((st.as_ref(), None), &layout, policy, None, false, None, &never).await;
    assert!(r.is_err(), "{r:?}");
    let backups = names(st.as_ref(), &layout.backups_prefix()).await;
    assert!(backups < 10, "the backups were deleted");
    assert_eq!(names(st.as_ref(), &layout.manifests_prefix()).await, 10, "the manifests wait");

    // Recovered: the next run removes the manifests of backups already gone (the catalog lists
    // them as lost, and no rule keeps them).
    let plan = prune_with((st.as_ref(), None), &layout, policy, None, false, None, &never)
        .await
        .unwrap();
    assert!(plan.delete.is_empty(), "{plan:?}");
    let kept = names(st.as_ref(), &layout.backups_prefix()).await;
    assert_eq!(kept, backups);
    for id in &ids[..kept] {
        assert!(st.head(&layout.backup(*id), &never).await.unwrap().is_some(), "the newest are kept");
    }
    assert_eq!(names(st.as_ref(), &layout.manifests_prefix()).await, kept, "{} manifests", kept);
}

#[tokio::test]
async fn a_catalog_that_cannot_be_listed_deletes_nothing() {
    let faulty = Arc::new(Faulty::new(Arc::new(MemoryStorage::new())));
    let st: DynStorage = faulty.clone();
    let layout = Layout::new("p");
    let never = CancellationToken::new();
    ten_days(st.as_ref(), &layout).await;
    faulty.fail(Op::List, "verifications/", outage, None);
    let r = prune_with(
        (st.as_ref(), None),
        &layout,
        RetentionPolicy::simple(1, 1),
        None,
        false,
        None,
        &never,
    )
    .await;
    assert!(matches!(r, Err(e) if e.is_retryable()));
    assert_eq!(faulty.calls(Op::Delete), 0, "no delete was even tried");
    assert_eq!(names(st.as_ref(), &layout.backups_prefix()).await, 10);
}
