//! The producer side of a backup: reads `pg_dump`'s stdout, scans and compresses it, and feeds
//! the upload body. The body is finished only after `pg_dump` exited 0 and the dump proved
//! complete; anything else fails it, which aborts the upload.

use super::layout::{split_at_cuts, MemberMap};
use super::BackupError;
use crate::infra::pg::{DumpFailure, OwnedChild, PgError};
use crate::infra::storage::{BodySender, PartPlan, StorageError};
use crate::pipeline::stages::compress::{filler, ParallelGzip, BLOCK_SIZE, FILLER_MIN};
use crate::pipeline::stages::dumpscan::DumpScanner;
use crate::pipeline::stages::seal::Sealer;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Statistics of the streamed dump.
pub(super) struct Streamed {
    pub(super) size: u64,
    pub(super) uncompressed: u64,
    pub(super) sha256: String,
    pub(super) tables: std::collections::BTreeMap<String, u64>,
    pub(super) privileges: crate::records::manifest::Privileges,
    pub(super) table_members: Vec<crate::records::manifest::TableMembers>,
    pub(super) toc: Vec<crate::records::manifest::TocEntry>,
}

/// Interval of progress lines during long dumps.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// Reads `pg_dump`'s stdout, scans and compresses it, encrypts it to `recipients` (when there are
/// any) and feeds the upload body. Finishes the body only after `pg_dump` exited 0 and the dump
/// proved complete.
pub(super) async fn produce(
    mut child: OwnedChild,
    mut tx: BodySender,
    level: u32,
    recipients: &[age::x25519::Recipient],
    cancel: &CancellationToken,
) -> Result<Streamed, BackupError> {
    let Some(mut stdout) = child.take_stdout() else {
        tx.fail("pg_dump has no stdout").await;
        return Err(BackupError::Incomplete("pg_dump has no stdout".into()));
    };
    let mut scanner = DumpScanner::new();
    let mut gz = ParallelGzip::new(level);
    let mut sealer = if recipients.is_empty() {
        None
    } else {
        match Sealer::new(recipients) {
            Ok(s) => Some(s),
            Err(e) => {
                child.kill().await;
                tx.fail(e.to_string()).await;
                return Err(BackupError::Incomplete(e.to_string()));
            }
        }
    };
    let mut sha = Sha256::new();
    let mut size = 0u64;
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut eof = false;
    // Members start where each COPY block begins and ends (see `layout`); blocks otherwise end at
    // a line's end, so a COPY line never straddles two blocks: the rest of the line waits here.
    let mut carry: Vec<u8> = Vec::new();
    let mut map = MemberMap::default();
    let result: Result<(), BackupError> = async {
        while !eof {
            let mut block = gz.buffer();
            block.append(&mut carry);
            // (A reused buffer may be a small piece: never read past one block.)
            block.reserve(BLOCK_SIZE.saturating_sub(block.len()));
            while block.len() < BLOCK_SIZE {
                let left = BLOCK_SIZE - block.len();
                let mut room = bytes::BufMut::limit(&mut block, left);
                let n = tokio::select! {
                    biased;
                    () = cancel.cancelled() => return Err(BackupError::Cancelled),
                    r = stdout.read_buf(&mut room) => r.map_err(|e| BackupError::Incomplete(format!("reading pg_dump output: {e}")))?,
                };
                if n == 0 {
                    eof = true;
                    break;
                }
            }
            if !eof {
                // A line longer than a whole block is cut where the block ends.
                if let Some(nl) = memchr::memrchr(b'\n', &block) {
                    carry.extend_from_slice(&block[nl + 1..]);
                    block.truncate(nl + 1);
                }
            }
            let start = scanner.bytes();
            scanner.feed(&block);
            let cuts = scanner.take_cuts();
            cuts.iter().for_each(|&c| map.want(c));
            let mut out = Vec::new();
            if !block.is_empty() {
                for (at, piece) in split_at_cuts(block, start, &cuts) {
                    map.queued(at);
                    let member = gz
                        .push(piece)
                        .await
                        .map_err(|e| BackupError::Incomplete(format!("compression failed: {e}")))?;
                    out.extend(member);
                }
            }
            if eof {
                while let Some(m) = gz
                    .pop()
                    .await
                    .map_err(|e| BackupError::Incomplete(format!("compression failed: {e}")))?
                {
                    out.push(m);
                }
            }
            out.iter().for_each(|m| map.emitted(m.len() as u64));
            if let Some(s) = sealer.as_mut() {
                let mut sealed = Vec::new();
                for m in out {
                    sealed.extend(s.seal(&m).map_err(|e| BackupError::Incomplete(format!("encryption failed: {e}")))?);
                }
                out = if sealed.is_empty() { Vec::new() } else { vec![sealed.into()] };
            }
            for m in out {
                sha.update(&m);
                size += m.len() as u64;
                if tx.send(m).await.is_err() {
                    // The uploader stopped; its own error explains why.
                    return Err(BackupError::Storage(StorageError::Aborted("the upload stopped".into())));
                }
            }
            if last_progress.elapsed() >= PROGRESS_EVERY {
                last_progress = Instant::now();
                let secs = started.elapsed().as_secs_f64().max(0.001);
                info!(
                    dumped_bytes = scanner.bytes(),
                    compressed_bytes = size,
                    rate_mb_s = format!("{:.1}", scanner.bytes() as f64 / secs / 1e6),
                    "Backup in progress"
                );
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        child.kill().await;
        let _ = child.wait().await;
        tx.fail(e.to_string()).await;
        return Err(e);
    }
    // Only now, with the whole stream read, does pg_dump's exit status mean anything.
    if let Err(f) = child.wait().await {
        let failure = DumpFailure::from_tool(f);
        tx.fail(failure.to_string()).await;
        return Err(BackupError::Pg(PgError::Dump(failure)));
    }
    let scan = scanner.finish();
    if !scan.complete {
        let why = match &scan.open_copy {
            Some(t) => format!("the dump ended inside the data of table {t}"),
            None => "the dump does not end with pg_dump's closing line".into(),
        };
        tx.fail(why.clone()).await;
        return Err(BackupError::Incomplete(why));
    }
    // The end of the stream: filler the uploader may need, then the end of the encryption. The
    // filler can be as large as a part, so it goes out in pieces like the members did.
    let plan = tx.plan().await;
    let extra = match filler_needed(sealer.as_ref(), map.compressed(), size, plan) {
        Ok(n) => n,
        Err(e) => {
            tx.fail(e.clone()).await;
            return Err(BackupError::Incomplete(e));
        }
    };
    let mut left = extra;
    while left > 0 || sealer.is_some() {
        // Pieces of about a block, none too small to be a member of its own.
        let piece = if left <= 2 * BLOCK_SIZE as u64 { left } else { BLOCK_SIZE as u64 };
        left -= piece;
        let plain = if piece > 0 { filler(piece) } else { Vec::new() };
        let data = match sealer.as_mut() {
            None => plain,
            Some(s) => {
                let mut out = s.seal(&plain);
                if left == 0 {
                    let tail = sealer.take().expect("checked").finish();
                    out = out.and_then(|mut o| tail.map(|t| [std::mem::take(&mut o), t].concat()));
                }
                match out {
                    Ok(o) => o,
                    Err(e) => {
                        tx.fail(format!("encryption failed: {e}")).await;
                        return Err(BackupError::Incomplete(format!("encryption failed: {e}")));
                    }
                }
            }
        };
        sha.update(&data);
        size += data.len() as u64;
        if tx.send(data.into()).await.is_err() {
            return Err(BackupError::Storage(StorageError::Aborted("the upload stopped".into())));
        }
    }
    tx.finish().await;
    let table_members = map.finish(&scan.copies, scan.bytes);
    Ok(Streamed {
        table_members,
        toc: scan
            .toc
            .into_iter()
            .map(|t| crate::records::manifest::TocEntry {
                kind: t.kind,
                schema: t.schema,
                name: t.name,
            })
            .collect(),
        size,
        uncompressed: scan.bytes,
        sha256: hex::encode(sha.finalize()),
        tables: scan.tables,
        privileges: crate::records::manifest::Privileges {
            owners: scan.owners,
            grants: scan.grants.into_iter().map(|(t, g)| (t, g.into_iter().collect())).collect(),
            roles: scan.roles.iter().map(|r| crate::pipeline::stages::dumpscan::unquote(r)).collect(),
        },
    })
}

/// Bytes of filler members that must end the stream once every member was sent: none, unless the
/// uploader streams its parts and the body would otherwise end inside one it has started (see
/// [`PartPlan`]). `gzip_bytes` went into the sealer (when there is one), `sent` bytes went to the
/// uploader.
fn filler_needed(sealer: Option<&Sealer>, gzip_bytes: u64, sent: u64, plan: PartPlan) -> Result<u64, String> {
    // The body's final length if `extra` bytes of filler were added now.
    let final_len = |extra: u64| sealer.map_or(sent + extra, |s| s.sealed_len(gzip_bytes + extra));
    let Some(end) = plan.end_for(final_len(0)) else { return Ok(0) };
    // Filler grows the body at least byte for byte (encryption adds tags), so this reaches the
    // end; what goes past it is far less than the uploader holds back, and becomes a short last
    // part of its own.
    let extra = (end - final_len(0)).max(FILLER_MIN);
    match plan.end_for(final_len(extra)) {
        None => Ok(extra),
        Some(_) => Err(format!("internal error: {extra} bytes of filler do not end the body at {end}")),
    }
}
