//! While pg_dump runs it holds an ACCESS SHARE lock on every table it dumps, until it ends. A
//! migration's `ALTER TABLE` then waits for it, and every query of the application waits behind
//! the `ALTER` — the classic outage caused by a backup. pgvigil passes a lock-wait timeout so that
//! pg_dump never queues itself, and this watcher reports sessions queued behind pg_dump's locks,
//! so that nobody has to guess why the application stalls.

use crate::infra::pg::{self, dump};
use crate::infra::secret::DbUrl;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// How often sessions waiting behind the dump are counted.
const EVERY: Duration = Duration::from_secs(10);

/// Watches until `stop` fires, warning while sessions wait for the locks of the pg_dump named
/// `app_name`. Best effort: it never affects the backup.
pub(super) async fn blocked_sessions(url: DbUrl, app_name: String, server_major: u32, stop: CancellationToken) {
    let Ok(mut conn) = pg::connect(&url).await else { return };
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(EVERY) => {}
        }
        match dump::blocked_behind(&mut conn, &url, &app_name, server_major).await {
            Ok((n, secs)) if n > 0 => warn!(
                waiting = n,
                longest_secs = secs as u64,
                "{n} session(s) have waited up to {:.0}s for locks held by the running backup (pg_dump holds ACCESS SHARE on every table until it ends; an ALTER TABLE queues behind it and the application behind the ALTER). See docs/reliability.md: lock waits",
                secs
            ),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    pg::close(conn).await;
}
