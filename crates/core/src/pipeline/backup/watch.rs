//! While pg_dump runs it holds an ACCESS SHARE lock on every table it dumps, until it ends. A
//! migration's `ALTER TABLE` then waits for it, and every query of the application waits behind
//! the `ALTER` — the classic outage caused by a backup. pgvigil passes a lock-wait timeout so that
//! pg_dump never queues itself, and this watcher reports sessions queued behind pg_dump's locks
//! within a second, so that nobody has to guess why the application stalls — and, with
//! `PG_DUMP_YIELD_AFTER`, makes the backup give way before the application stalls for long.

use crate::infra::pg::{self, dump};
use crate::infra::secret::DbUrl;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// How often sessions waiting behind the dump are counted.
const EVERY: Duration = Duration::from_secs(1);

/// What to watch, and when to speak up or give way.
#[derive(Debug, Clone)]
pub(super) struct Watch {
    /// The source database.
    pub url: DbUrl,
    /// pg_dump's `application_name`.
    pub app_name: String,
    /// The server's major version (the wait is read from `pg_locks` on 14 and later).
    pub server_major: u32,
    /// `PG_DUMP_LOCK_WARN_AFTER`: warn once a session has waited this long.
    pub warn_after: Duration,
    /// `PG_DUMP_YIELD_AFTER`: give way once a session has waited this long (`None`: never).
    pub yield_after: Option<Duration>,
}

/// Watches until `stop` fires, warning once per episode when sessions have waited
/// `warn_after` for the locks of the pg_dump named `app_name`, and cancelling `give_way` (the
/// backup's own token) once they have waited `yield_after`. Returns what made it give way.
/// Best effort otherwise: it never affects the backup.
pub(super) async fn blocked_sessions(w: Watch, stop: CancellationToken, give_way: CancellationToken) -> Option<(i64, u64)> {
    let Ok(mut conn) = pg::connect(&w.url).await else { return None };
    let mut warned = false;
    // Servers before 14 cannot say how long a session has waited: count from when it was seen.
    let mut since: Option<std::time::Instant> = None;
    let mut gave_way = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(EVERY) => {}
        }
        let (n, secs) = match dump::blocked_behind(&mut conn, &w.url, &w.app_name, w.server_major).await {
            Ok((0, _)) => {
                (warned, since) = (false, None);
                continue;
            }
            // From 14 on, the server's own wait start is exact: short waits one after another
            // do not add up.
            Ok((n, secs)) if w.server_major >= 14 => (n, secs),
            Ok((n, secs)) => (
                n,
                secs.max(since.get_or_insert_with(std::time::Instant::now).elapsed().as_secs_f64()),
            ),
            Err(_) => break,
        };
        if w.yield_after.is_some_and(|limit| secs >= limit.as_secs_f64()) {
            warn!(
                waiting = n,
                waited_secs = secs as u64,
                "Backup gives way: {n} session(s) have waited {secs:.0}s for tables the running backup holds (PG_DUMP_YIELD_AFTER); the dump is stopped, nothing is published, and the backup is retried after the backoff"
            );
            gave_way = Some((n, secs as u64));
            give_way.cancel();
            break;
        }
        if !warned && secs >= w.warn_after.as_secs_f64() {
            warned = true;
            warn!(
                waiting = n,
                longest_secs = secs as u64,
                "{n} session(s) have waited {secs:.0}s for locks held by the running backup (pg_dump holds ACCESS SHARE on every table until it ends; an ALTER TABLE queues behind it and the application behind the ALTER). See docs/reliability.md: lock waits"
            );
        }
    }
    pg::close(conn).await;
    gave_way
}
