//! Reading one part of an object for a parallel restore: a ranged GET, hashed, inflated, and either
//! judged by the statement gate (what it passes goes to one psql session) or, for the runs between
//! COPY blocks, allowed to hold nothing but comments and blank lines.

use super::plan::Part;
use crate::infra::pg::psql::{Outcome, PsqlTransaction};
use crate::infra::storage::{DynStorage, Key, StorageError};
use crate::pipeline::restore::stream::{feed_psql, recv_or_cancel, Hashing, StreamError, CHUNK, PARSER_STACK};
use crate::pipeline::stages::dumpscan::{Build, DumpScanner, GateRules, ScanResult};
use std::io::Read;
use tokio_util::sync::CancellationToken;

/// How a part is judged.
#[derive(Debug, Clone)]
pub(super) enum Judge {
    /// Every statement through the gate.
    Gate(GateRules),
    /// Nothing but comments and blank lines (what pg_dump writes between COPY blocks).
    CommentsOnly,
}

/// Where what the gate passes goes.
pub(super) enum Sink<'a> {
    /// Into a psql session as it is read.
    Psql(&'a mut PsqlTransaction),
    /// Nowhere (the runs between COPY blocks).
    Nowhere,
    /// Into memory, at most so many bytes ([`PartRead::too_large`] when there was more).
    Held(&'a mut Vec<u8>, usize),
}

/// What reading one part found.
#[derive(Debug, Default)]
pub(super) struct PartRead {
    /// The part could not be read whole (why): storage failed, or the object changed under the
    /// restore. Either way the one-stream restore reads it again and tells which.
    pub failed: Option<String>,
    /// SHA-256 (hex) of the bytes read.
    pub sha256: String,
    /// The gzip layer's error, if any.
    pub gzip_error: Option<String>,
    /// What the gate found ([`Judge::Gate`]).
    pub scan: ScanResult,
    /// A line that is neither a comment nor blank ([`Judge::CommentsOnly`]).
    pub not_comments: bool,
    /// The gate's state at the part's end: it ends cleanly (see
    /// [`DumpScanner::ends_cleanly`]), the session settings the part changed, and which of the
    /// dump's own `\restrict` / `\unrestrict` lines it held.
    pub ends_cleanly: bool,
    /// See `ends_cleanly`.
    pub settings: std::collections::BTreeMap<String, String>,
    /// See `ends_cleanly`.
    pub restrict: (bool, bool),
    /// The index builds the gate passed (see [`Build`]), with offsets into what it passed; only
    /// for a part held in memory ([`Sink::Held`]), and none when there were too many.
    pub builds: Vec<Build>,
    /// What the gate passed did not fit in the memory given ([`Sink::Held`]): nothing else of
    /// the read counts.
    pub too_large: bool,
}

impl PartRead {
    /// Why the part is not exactly as the manifest records it (`None`: it is).
    pub(super) fn differs(&self, part: &Part, what: &str) -> Option<String> {
        if let Some(why) = &self.failed {
            return Some(format!("{what} could not be read whole: {why}"));
        }
        if part.sha256.as_ref().is_some_and(|h| *h != self.sha256) {
            return Some(format!("{what} is not what the manifest records"));
        }
        if let Some(e) = &self.gzip_error {
            return Some(format!("{what} is damaged gzip data: {e}"));
        }
        if let Some(r) = &self.scan.forbidden {
            return Some(format!("{what}: {r}"));
        }
        self.not_comments.then(|| format!("{what} holds more than comments"))
    }
}

/// The most a run between two COPY blocks may hold (pg_dump writes a few lines): one stream
/// reads the run together with the next COPY line, as one statement it limits in length.
const MAX_RUN: u64 = 64 * 1024;

/// Whether every line so far is a comment or blank, without a NUL byte (which one stream refuses
/// in a comment too), and no longer than [`MAX_RUN`].
#[derive(Default)]
struct Comments {
    /// The first bytes of the current line (at most two).
    head: Vec<u8>,
    bad: bool,
    len: u64,
}

impl Comments {
    fn feed(&mut self, data: &[u8]) {
        self.len += data.len() as u64;
        self.bad |= self.len > MAX_RUN || memchr::memchr(0, data).is_some();
        for &b in data {
            if b == b'\n' {
                self.end_line();
            } else if self.head.len() < 2 {
                self.head.push(b);
                self.bad |= self.head.iter().zip(b"--").any(|(a, b)| a != b);
            }
        }
    }

    fn end_line(&mut self) {
        self.bad |= self.head.len() == 1;
        self.head.clear();
    }

    /// A last line without its newline is not a comment: read together with what follows, it
    /// would take in the next block's first line.
    fn finish(self) -> bool {
        !self.bad && self.head.is_empty()
    }
}

/// Reads `part` on the calling (blocking) thread, sending what the gate passes to `tx`.
fn read_part(
    handle: &tokio::runtime::Handle,
    job: (DynStorage, Key, Part),
    (judge, note_builds): (Judge, bool),
    tx: &tokio::sync::mpsc::Sender<Vec<u8>>,
    cancel: &CancellationToken,
) -> Result<PartRead, String> {
    let _runtime = handle.enter();
    let (storage, key, part) = job;
    let body = handle
        .block_on(storage.get_range(&key, part.offset, part.length, cancel))
        .map_err(|e| e.to_string())?;
    let mut hashing = Hashing::new(body, None);
    let mut read = PartRead::default();
    let (mut scanner, mut comments) = match judge {
        Judge::Gate(rules) if note_builds => (Some(DumpScanner::gated(rules).noting_builds()), None),
        Judge::Gate(rules) => (Some(DumpScanner::gated(rules)), None),
        Judge::CommentsOnly => (None, Some(Comments::default())),
    };
    {
        let mut gz = flate2::read::MultiGzDecoder::new(&mut hashing);
        let mut buf = vec![0u8; CHUNK];
        loop {
            if cancel.is_cancelled() {
                return Err("cancelled".into());
            }
            let n = match gz.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    read.gzip_error = Some(e.to_string());
                    break;
                }
            };
            if let Some(c) = comments.as_mut() {
                c.feed(&buf[..n]);
            }
            let Some(s) = scanner.as_mut() else { continue };
            let mut out = Vec::with_capacity(n + 256);
            s.feed_filtered(&buf[..n], &mut out);
            if s.refused() {
                break;
            }
            if !out.is_empty() && tx.blocking_send(out).is_err() {
                return Err("the restore stopped reading".into());
            }
        }
    }
    if let Some(e) = hashing.io_error() {
        return Err(format!("the download broke: {e}"));
    }
    hashing.read_rest()?;
    let (sha256, size) = hashing.finish();
    if size < part.length {
        return Err(format!("the download ended after {size} of {} bytes", part.length));
    }
    read.sha256 = sha256;
    if let Some(s) = scanner.as_mut() {
        read.ends_cleanly = s.ends_cleanly();
        (read.settings, read.restrict) = s.session();
        read.builds = s.take_builds();
    }
    read.scan = scanner.map(DumpScanner::finish).unwrap_or_default();
    read.not_comments = comments.is_some_and(|c| !c.finish());
    Ok(read)
}

/// Reads `part` on a thread of its own, what the gate passes going to `sink`. `Some` outcome when
/// psql stopped for a reason of its own (the part was not read to its end).
///
/// # Errors
/// [`StreamError`] when storage fails or shutdown (`cancel`) interrupts.
pub(super) async fn read(
    storage: &DynStorage,
    key: &Key,
    part: &Part,
    judge: Judge,
    sink: Sink<'_>,
    cancel: &CancellationToken,
) -> Result<(PartRead, Option<Outcome>), StreamError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    // Only a part held in memory is split into its builds.
    let note_builds = matches!(sink, Sink::Held(..));
    let handle = tokio::runtime::Handle::current();
    let job = (storage.clone(), key.clone(), part.clone());
    let thread_cancel = cancel.clone();
    // PostgreSQL's parser recurses as deep as a statement nests: its thread gets a stack to match.
    std::thread::Builder::new()
        .name("pgvigil-part".into())
        .stack_size(PARSER_STACK)
        .spawn(move || {
            let _ = done_tx.send(read_part(&handle, job, (judge, note_builds), &tx, &thread_cancel));
        })
        .map_err(|e| StorageError::other(format!("cannot start a reading thread: {e}"), true))?;
    let mut too_large = false;
    let stopped = match sink {
        Sink::Psql(p) => feed_psql(p, &mut rx, cancel).await?,
        Sink::Nowhere => {
            while recv_or_cancel(&mut rx, cancel).await?.is_some() {}
            None
        }
        Sink::Held(held, limit) => {
            while let Some(sql) = recv_or_cancel(&mut rx, cancel).await? {
                if held.len() + sql.len() > limit {
                    too_large = true;
                    break;
                }
                held.extend_from_slice(&sql);
            }
            None
        }
    };
    drop(rx);
    let done = done_rx.await.map_err(|_| StorageError::other("a reading thread failed", true))?;
    if too_large && !cancel.is_cancelled() {
        return Ok((
            PartRead {
                too_large,
                ..PartRead::default()
            },
            None,
        ));
    }
    if stopped.is_some() {
        return Ok((PartRead::default(), stopped));
    }
    if cancel.is_cancelled() {
        return Err(StreamError::Cancelled);
    }
    let read = done.unwrap_or_else(|why| PartRead {
        failed: Some(why),
        ..PartRead::default()
    });
    Ok((read, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_comments_and_blank_lines_pass_between_blocks() {
        let long = [b"-- a comment run longer than pg_dump writes\n".as_slice(); 2000].concat();
        let cases: [(&[&[u8]], bool); 10] = [
            (
                &[b"\n--\n-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: app\n--\n\n"],
                true,
            ),
            (&[b"-", b"-", b" split\n", b"\n"], true),
            (&[b""], true),
            (&[b"--\nSELECT 1;\n"], false),
            (&[b"-\n"], false),
            (&[b"\\! rm -rf /\n"], false),
            (&[b"-- fine\n-x"], false),
            (&[b"-- no newline at the end"], false),
            (&[b"-- a NUL \0 in a comment\n"], false),
            (&[&long], false),
        ];
        for (chunks, want) in cases {
            let mut c = Comments::default();
            for chunk in chunks {
                c.feed(chunk);
            }
            assert_eq!(c.finish(), want, "{chunks:?}");
        }
    }
}
