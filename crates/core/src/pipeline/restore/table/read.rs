//! Reading for a one-table restore: the ranges the manifest records (each checked against its
//! own SHA-256), or the whole object (checked against the manifest's), inflated and passed
//! through the [`Filter`] on a thread of its own.

use super::super::stream::{get, open_source, Hashing, Opened, CHUNK};
use super::filter::Filter;
use super::names::Name;
use crate::infra::storage::{DynStorage, Key};
use crate::records::manifest::{Manifest, MemberRange};
use bytes::Bytes;
use std::io::Read;
use tokio_util::sync::CancellationToken;

/// Where the bytes come from.
#[derive(Debug, Clone)]
pub(super) enum Source {
    /// The whole object, checked against the manifest's SHA-256 (and decrypted when sealed).
    Whole,
    /// The ranges before and after the data, and those table blocks the family needs.
    Ranged { before: MemberRange, after: MemberRange },
}

/// Ranged reads need every range recorded with its hash, and a plain object (offsets are into
/// the gzip stream, which an encrypted object only holds encrypted).
pub(super) fn source(m: &Manifest) -> Source {
    let ranged = m.encryption.is_none() && m.table_members.len() == m.tables.len() && m.table_members.iter().all(|t| t.sha256.is_some());
    match (&m.before_data, &m.after_data) {
        (Some(before), Some(after)) if ranged => Source::Ranged {
            before: before.clone(),
            after: after.clone(),
        },
        _ => Source::Whole,
    }
}

/// Whether a table restore of this backup reads only ranges (`false`: the whole object, and why).
pub fn reads_ranges(m: &Manifest) -> Result<(), &'static str> {
    match source(m) {
        Source::Ranged { .. } => Ok(()),
        Source::Whole if m.encryption.is_some() => Err("the backup is encrypted, and its ranges are offsets into the decrypted stream"),
        Source::Whole => Err("the backup was taken before pgvigil recorded the checksums of its ranges"),
    }
}

/// What the reading thread found.
pub(super) struct Produced {
    pub(super) filter: Filter,
    pub(super) problems: Vec<String>,
    pub(super) read: u64,
    /// The reader got to the end (`false`: it was stopped, and its counts mean nothing).
    pub(super) complete: bool,
}

/// The reading thread's own failure (not a verdict on the backup).
pub(super) enum Stop {
    Broken(String),
    Key(String),
    Consumer,
    Cancelled,
}

/// Sends what the filter let through.
fn pass(filter: &mut Filter, chunk: &[u8], tx: &tokio::sync::mpsc::Sender<Bytes>) -> Result<(), Stop> {
    let mut out = Vec::new();
    filter.feed(chunk, &mut out);
    send(out, tx)
}

fn send(out: Vec<u8>, tx: &tokio::sync::mpsc::Sender<Bytes>) -> Result<(), Stop> {
    if !out.is_empty() && tx.blocking_send(Bytes::from(out)).is_err() {
        return Err(Stop::Consumer);
    }
    Ok(())
}

/// Inflates `source` into the filter; the gzip layer's error, if any.
fn inflate(
    source: impl Read,
    filter: &mut Filter,
    tx: &tokio::sync::mpsc::Sender<Bytes>,
    cancel: &CancellationToken,
) -> Result<Option<String>, Stop> {
    let mut gz = flate2::read::MultiGzDecoder::new(source);
    let mut buf = vec![0u8; CHUNK];
    loop {
        // Noticed even while the filter sends nothing (large objects, other tables' data).
        if tx.is_closed() {
            return Err(Stop::Consumer);
        }
        if cancel.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        match gz.read(&mut buf) {
            Ok(0) => return Ok(None),
            Ok(n) => pass(filter, &buf[..n], tx)?,
            Err(e) => return Ok(Some(e.to_string())),
        }
        if filter.stopped() {
            return Ok(None);
        }
    }
}

/// The reading thread's means: where it reads from, where it sends to, and what it found so far.
struct Reader<'a> {
    handle: &'a tokio::runtime::Handle,
    storage: &'a DynStorage,
    key: &'a Key,
    tx: &'a tokio::sync::mpsc::Sender<Bytes>,
    cancel: &'a CancellationToken,
    /// Why what was read is not what the backup wrote.
    problems: Vec<String>,
    /// Bytes read from storage.
    read: u64,
}

/// The reading thread: ranges or the whole object, through the filter, to `tx`.
pub(super) fn produce(
    handle: &tokio::runtime::Handle,
    job: (DynStorage, Key, Manifest, Source),
    identities: Option<Vec<age::x25519::Identity>>,
    mut filter: Filter,
    tx: &tokio::sync::mpsc::Sender<Bytes>,
    cancel: &CancellationToken,
) -> Result<Produced, Stop> {
    let _runtime = handle.enter();
    let (storage, key, m, source) = job;
    let mut reader = Reader {
        handle,
        storage: &storage,
        key: &key,
        tx,
        cancel,
        problems: Vec::new(),
        read: 0,
    };
    match source {
        Source::Whole => reader.whole(&m, identities.as_deref(), &mut filter)?,
        Source::Ranged { before, after } => {
            reader.range(&before, "the schema before the data", &mut filter)?;
            // The family is known once the schema was read: only its tables' data is fetched.
            let mut out = Vec::new();
            filter.resolve(&mut out);
            send(out, tx)?;
            let family = filter.family().clone();
            let mut wanted: Vec<_> = m
                .table_members
                .iter()
                .filter(|t| Name::parse(&t.table).is_some_and(|n| family.has(&n)))
                .map(|t| {
                    let r = MemberRange {
                        offset: t.offset,
                        length: t.length,
                        sha256: t.sha256.clone().unwrap_or_default(),
                    };
                    (r, format!("the data of {}", t.table))
                })
                .collect();
            wanted.sort_by_key(|(r, _)| r.offset);
            wanted.push((after, "what follows the data".into()));
            for (r, what) in &wanted {
                reader.range(r, what, &mut filter)?;
            }
        }
    }
    let mut out = Vec::new();
    filter.finish(&mut out);
    send(out, tx)?;
    Ok(Produced {
        filter,
        problems: reader.problems,
        read: reader.read,
        complete: true,
    })
}

impl Reader<'_> {
    /// The whole object through the filter, checked against the manifest's size and SHA-256.
    fn whole(&mut self, m: &Manifest, identities: Option<&[age::x25519::Identity]>, filter: &mut Filter) -> Result<(), Stop> {
        let (body, announced) = self
            .handle
            .block_on(get(self.storage.as_ref(), self.key, self.cancel))
            .map_err(|e| Stop::Broken(e.to_string()))?;
        let mut hashing = Hashing::new(body, None);
        let gzip_error = match open_source(&mut hashing, identities) {
            Ok(r) => inflate(r, filter, self.tx, self.cancel)?,
            Err(Opened::Damaged(e)) => Some(e),
            Err(Opened::Key(e)) => return Err(Stop::Key(e)),
        };
        if let Some(e) = hashing.io_error() {
            return Err(Stop::Broken(format!("the download broke: {e}")));
        }
        hashing.read_rest().map_err(Stop::Broken)?;
        let (sha, size) = hashing.finish();
        self.read = size;
        if size < announced {
            return Err(Stop::Broken(format!("the download ended after {size} of {announced} bytes")));
        }
        if size != m.size || sha != m.sha256 {
            self.problems.push(format!(
                "the object is not what the backup wrote: {size} bytes with SHA-256 {sha}, its manifest says {} bytes with {}",
                m.size, m.sha256
            ));
        } else if let Some(e) = gzip_error {
            self.problems.push(format!("the object's gzip data is damaged: {e}"));
        }
        Ok(())
    }

    /// One ranged read through the filter, checked against its recorded hash.
    fn range(&mut self, r: &MemberRange, what: &str, filter: &mut Filter) -> Result<(), Stop> {
        if filter.stopped() {
            return Ok(());
        }
        let body = self
            .handle
            .block_on(self.storage.get_range(self.key, r.offset, r.length, self.cancel))
            .map_err(|e| Stop::Broken(e.to_string()))?;
        let mut hashing = Hashing::new(body, None);
        let gzip_error = inflate(&mut hashing, filter, self.tx, self.cancel)?;
        if let Some(e) = hashing.io_error() {
            return Err(Stop::Broken(format!("the download broke: {e}")));
        }
        hashing.read_rest().map_err(Stop::Broken)?;
        let (sha, size) = hashing.finish();
        self.read += size;
        if size < r.length {
            return Err(Stop::Broken(format!(
                "the download of {what} ended after {size} of {} bytes",
                r.length
            )));
        }
        if sha != r.sha256 {
            self.problems.push(format!(
                "{what} (bytes {} to {} of the object) is not what the backup wrote (SHA-256 {sha}, its manifest says {})",
                r.offset,
                r.offset + r.length,
                r.sha256
            ));
        } else if let Some(e) = gzip_error {
            self.problems.push(format!("{what} is damaged gzip data: {e}"));
        }
        Ok(())
    }
}
