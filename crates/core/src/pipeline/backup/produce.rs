//! The producer side of a backup: reads `pg_dump`'s stdout, scans and compresses it, and feeds
//! the upload body. The body is finished only after `pg_dump` exited 0 and the dump proved
//! complete; anything else fails it, which aborts the upload.

use super::layout::{split_at_cuts, MemberMap};
use super::{BackupError, Incomplete};
use crate::infra::pg::{DumpFailure, OwnedChild, PgError};
use crate::infra::storage::{Abort, BodySender, PartPlan, StorageError};
use crate::pipeline::stages::compress::{filler, ParallelGzip, BLOCK_SIZE, FILLER_MIN};
use crate::pipeline::stages::dumpscan::DumpScanner;
use crate::pipeline::stages::seal::Sealer;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Statistics of the streamed dump.
pub(super) struct Streamed {
    pub(super) size: u64,
    pub(super) uncompressed: u64,
    pub(super) sha256: String,
    pub(super) tables: std::collections::BTreeMap<String, u64>,
    pub(super) privileges: crate::records::manifest::Privileges,
    pub(super) ranges: super::layout::Ranges,
    pub(super) toc: Vec<crate::records::manifest::TocEntry>,
}

/// Interval of progress lines during long dumps.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// Reads `pg_dump`'s stdout, scans and compresses it, encrypts it to `recipients` (when there are
/// any) and feeds the upload body. Finishes the body only after `pg_dump` exited 0 and the dump
/// proved complete; on any failure, stops `pg_dump` (when it still runs) and fails the body,
/// which aborts the upload.
pub(super) async fn produce(
    mut child: OwnedChild,
    mut tx: BodySender,
    level: u32,
    recipients: &[age::x25519::Recipient],
    cancel: &CancellationToken,
) -> Result<Streamed, BackupError> {
    let read = match (child.take_stdout(), Stream::new(level, recipients)) {
        (None, _) => Err(Incomplete::NoOutput.into()),
        (_, Err(e)) => Err(e),
        (Some(stdout), Ok(mut stream)) => stream.read(stdout, &tx, cancel).await.map(|()| stream),
    };
    let finished = match read {
        Err(e) => {
            child.kill().await;
            let _ = child.wait().await;
            Err(e)
        }
        // Only now, with the whole stream read, does pg_dump's exit status mean anything.
        Ok(stream) => match child.wait().await {
            Err(f) => Err(BackupError::Pg(PgError::Dump(DumpFailure::from_tool(f)))),
            Ok(_) => stream.finish(&mut tx).await,
        },
    };
    match finished {
        Ok(streamed) => {
            tx.finish().await;
            Ok(streamed)
        }
        Err(e) => {
            tx.fail().await;
            Err(e)
        }
    }
}

/// The uploader stopped; its own error explains why.
fn upload_stopped() -> BackupError {
    BackupError::Storage(StorageError::Aborted(Abort::UploadStopped))
}

/// The stream from `pg_dump`'s output to the upload body: scanned, cut into members, compressed,
/// sealed, hashed and counted.
struct Stream {
    scanner: DumpScanner,
    gz: ParallelGzip,
    sealer: Option<Sealer>,
    sha: Sha256,
    size: u64,
    /// Where each table's data sits among the members (see `layout`).
    map: MemberMap,
    /// The end of a line a block stopped inside, waiting for the next block: a COPY line never
    /// straddles two blocks.
    carry: Vec<u8>,
    started: Instant,
    last_progress: Instant,
}

impl Stream {
    fn new(level: u32, recipients: &[age::x25519::Recipient]) -> Result<Self, BackupError> {
        let sealer = if recipients.is_empty() {
            None
        } else {
            Some(Sealer::new(recipients).map_err(Incomplete::Encryption)?)
        };
        Ok(Self {
            scanner: DumpScanner::new(),
            gz: ParallelGzip::new(level),
            sealer,
            sha: Sha256::new(),
            size: 0,
            map: MemberMap::default(),
            carry: Vec::new(),
            started: Instant::now(),
            last_progress: Instant::now(),
        })
    }

    /// Reads the whole output, block by block, and sends what it makes.
    async fn read(&mut self, mut stdout: impl AsyncRead + Unpin, tx: &BodySender, cancel: &CancellationToken) -> Result<(), BackupError> {
        loop {
            let (block, eof) = self.next_block(&mut stdout, cancel).await?;
            let out = self.compress(block, eof).await?;
            self.send(out, tx).await?;
            self.progress();
            if eof {
                return Ok(());
            }
        }
    }

    /// The next block of output (ending at a line's end unless the output ended), and whether the
    /// output ended.
    async fn next_block(
        &mut self,
        stdout: &mut (impl AsyncRead + Unpin),
        cancel: &CancellationToken,
    ) -> Result<(Vec<u8>, bool), BackupError> {
        let mut block = self.gz.buffer();
        block.append(&mut self.carry);
        // (A reused buffer may be a small piece: never read past one block.)
        block.reserve(BLOCK_SIZE.saturating_sub(block.len()));
        while block.len() < BLOCK_SIZE {
            let left = BLOCK_SIZE - block.len();
            let mut room = bytes::BufMut::limit(&mut block, left);
            let n = tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(BackupError::Cancelled),
                r = stdout.read_buf(&mut room) => r.map_err(Incomplete::Read)?,
            };
            if n == 0 {
                return Ok((block, true));
            }
        }
        // A line longer than a whole block is cut where the block ends.
        if let Some(nl) = memchr::memrchr(b'\n', &block) {
            self.carry.extend_from_slice(&block[nl + 1..]);
            block.truncate(nl + 1);
        }
        Ok((block, false))
    }

    /// Scans `block`, cuts it where table data begins and ends, and compresses the pieces; at the
    /// end of the output, drains the compressors. The members ready to send, sealed when encrypting.
    async fn compress(&mut self, block: Vec<u8>, eof: bool) -> Result<Vec<bytes::Bytes>, BackupError> {
        let start = self.scanner.bytes();
        self.scanner.feed(&block);
        let cuts = self.scanner.take_cuts();
        cuts.iter().for_each(|&c| self.map.want(c));
        let mut out = Vec::new();
        if !block.is_empty() {
            for (at, piece) in split_at_cuts(block, start, &cuts) {
                self.map.queued(at);
                out.extend(self.gz.push(piece).await.map_err(Incomplete::Compression)?);
            }
        }
        if eof {
            while let Some(m) = self.gz.pop().await.map_err(Incomplete::Compression)? {
                out.push(m);
            }
        }
        out.iter().for_each(|m| self.map.emitted(m));
        let Some(s) = self.sealer.as_mut() else { return Ok(out) };
        let mut sealed = Vec::new();
        for m in out {
            sealed.extend(s.seal(&m).map_err(Incomplete::Encryption)?);
        }
        Ok(if sealed.is_empty() { Vec::new() } else { vec![sealed.into()] })
    }

    /// Hashes, counts and sends `out`.
    async fn send(&mut self, out: Vec<bytes::Bytes>, tx: &BodySender) -> Result<(), BackupError> {
        for m in out {
            self.sha.update(&m);
            self.size += m.len() as u64;
            tx.send(m).await.map_err(|()| upload_stopped())?;
        }
        Ok(())
    }

    /// A progress line every [`PROGRESS_EVERY`].
    fn progress(&mut self) {
        if self.last_progress.elapsed() < PROGRESS_EVERY {
            return;
        }
        self.last_progress = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        info!(
            dumped_bytes = self.scanner.bytes(),
            compressed_bytes = self.size,
            rate_mb_s = format!("{:.1}", self.scanner.bytes() as f64 / secs / 1e6),
            "Backup in progress"
        );
    }

    /// After `pg_dump` exited 0: proves the dump complete, ends the stream (filler the uploader
    /// may need, then the end of the encryption) and says what was streamed.
    async fn finish(mut self, tx: &mut BodySender) -> Result<Streamed, BackupError> {
        let scan = std::mem::take(&mut self.scanner).finish();
        if !scan.complete {
            return Err(match &scan.open_copy {
                Some(t) => Incomplete::EndsInsideCopy(t.clone()),
                None => Incomplete::Unfinished,
            }
            .into());
        }
        let plan = tx.plan().await;
        let mut left = filler_needed(self.sealer.as_ref(), self.map.compressed(), self.size, plan)?;
        // The filler can be as large as a part, so it goes out in pieces like the members did.
        while left > 0 || self.sealer.is_some() {
            // Pieces of about a block, none too small to be a member of its own.
            let piece = if left <= 2 * BLOCK_SIZE as u64 { left } else { BLOCK_SIZE as u64 };
            left -= piece;
            let plain = if piece > 0 { filler(piece) } else { Vec::new() };
            let data = match self.sealer.as_mut() {
                None => plain,
                Some(s) => {
                    let mut out = s.seal(&plain).map_err(Incomplete::Encryption)?;
                    if left == 0 {
                        let tail = self.sealer.take().map(Sealer::finish).transpose().map_err(Incomplete::Encryption)?;
                        out.extend(tail.unwrap_or_default());
                    }
                    out
                }
            };
            self.send(vec![data.into()], tx).await?;
        }
        Ok(Streamed {
            ranges: self.map.finish(&scan.copies, scan.bytes),
            toc: scan
                .toc
                .into_iter()
                .map(|t| crate::records::manifest::TocEntry {
                    kind: t.kind,
                    schema: t.schema,
                    name: t.name,
                })
                .collect(),
            size: self.size,
            uncompressed: scan.bytes,
            sha256: hex::encode(self.sha.finalize()),
            tables: scan.tables,
            privileges: crate::records::manifest::Privileges {
                owners: scan.owners,
                grants: scan.grants.into_iter().map(|(t, g)| (t, g.into_iter().collect())).collect(),
                roles: scan.roles.iter().map(|r| crate::pipeline::stages::dumpscan::unquote(r)).collect(),
            },
        })
    }
}

/// Bytes of filler members that must end the stream once every member was sent: none, unless the
/// uploader streams its parts and the body would otherwise end inside one it has started (see
/// [`PartPlan`]). `gzip_bytes` went into the sealer (when there is one), `sent` bytes went to the
/// uploader.
fn filler_needed(sealer: Option<&Sealer>, gzip_bytes: u64, sent: u64, plan: PartPlan) -> Result<u64, Incomplete> {
    // The body's final length if `extra` bytes of filler were added now.
    let final_len = |extra: u64| sealer.map_or(sent + extra, |s| s.sealed_len(gzip_bytes + extra));
    let Some(end) = plan.end_for(final_len(0)) else { return Ok(0) };
    // Filler grows the body at least byte for byte (encryption adds tags), so this reaches the
    // end; what goes past it is far less than the uploader holds back, and becomes a short last
    // part of its own.
    let extra = (end - final_len(0)).max(FILLER_MIN);
    match plan.end_for(final_len(extra)) {
        None => Ok(extra),
        Some(_) => Err(Incomplete::Filler { filler: extra, end }),
    }
}
