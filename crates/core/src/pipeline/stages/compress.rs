//! Parallel gzip (pigz-style): the input is cut into blocks, each block becomes one complete
//! gzip member compressed on a blocking thread, and members are emitted in input order. The
//! concatenation is a standard multi-member gzip file that `gunzip` reads. Members are made by
//! libdeflate, which needs whole buffers — exactly what independent members are. At most
//! `workers + 1` blocks are in flight, so memory stays bounded whatever the input size.

use bytes::Bytes;
use libdeflater::{CompressionLvl, Compressor};
use std::cell::RefCell;
use std::collections::VecDeque;
use tokio::task::JoinHandle;

/// Uncompressed bytes per gzip member.
pub const BLOCK_SIZE: usize = 1024 * 1024;

/// Bytes of a member's header as pgvigil writes it: the 10 fixed bytes (with `FEXTRA` set), the
/// extra field's length, and one 8-byte subfield.
pub const MEMBER_HEADER: usize = 20;
/// The fixed start of every member pgvigil writes: magic, deflate, `FEXTRA`, no time, OS unknown;
/// then `XLEN` = 8 and the subfield `PV` of 4 bytes: the member's total length (BGZF-style, so a
/// reader finds every member boundary without inflating and can inflate members on all cores;
/// `gunzip` skips extra fields).
const HEADER_START: [u8; 16] = [0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff, 8, 0, b'P', b'V', 4, 0];

/// The total length of the member that `header` (its first [`MEMBER_HEADER`] bytes) starts, when
/// pgvigil wrote it; `None` for any other gzip member. A [`filler`] member has a longer extra
/// field, with the same length subfield first.
pub fn member_len(header: &[u8]) -> Option<usize> {
    let len = header.get(16..MEMBER_HEADER)?;
    let xlen = u16::from_le_bytes([header[10], header[11]]);
    (header[..10] == HEADER_START[..10] && header[12..16] == HEADER_START[12..16] && xlen >= 8)
        .then(|| u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize)
}

/// Bytes of the smallest [`filler`] member.
pub const FILLER_MIN: u64 = 34;
/// Bytes of the largest filler member (the extra field's length is 16 bits).
const FILLER_MAX: u64 = FILLER_MIN + 65_523;

/// Gzip members that inflate to nothing, `len` bytes in all (at least [`FILLER_MIN`]): what ends
/// a body exactly where an upload's streamed part ends. Each has pgvigil's length subfield and a
/// second subfield `PZ` of zeros; `gunzip` and every reader here skip extra fields and output
/// nothing for them.
///
/// # Panics
/// When `len` is below [`FILLER_MIN`] (a caller's arithmetic error, never data).
pub fn filler(len: u64) -> Vec<u8> {
    assert!(len >= FILLER_MIN, "filler of {len} bytes");
    let mut out = Vec::with_capacity(len as usize);
    let mut left = len;
    while left > 0 {
        // Never leave a remainder too small for a member of its own.
        let size = if left <= FILLER_MAX {
            left
        } else {
            FILLER_MAX.min(left - FILLER_MIN)
        };
        let zeros = (size - FILLER_MIN) as u16;
        out.extend_from_slice(&HEADER_START[..10]);
        out.extend_from_slice(&(8 + 4 + zeros).to_le_bytes());
        out.extend_from_slice(&HEADER_START[12..16]);
        out.extend_from_slice(&(size as u32).to_le_bytes());
        out.extend_from_slice(b"PZ");
        out.extend_from_slice(&zeros.to_le_bytes());
        out.resize(out.len() + usize::from(zeros), 0);
        // An empty final block of fixed Huffman codes, then CRC-32 and length of nothing.
        out.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        left -= size;
    }
    out
}

thread_local! {
    /// Each compression thread keeps its compressor (libdeflate's state, a few hundred KiB) for
    /// the level last used instead of allocating a new one for every member.
    static DEFLATE: RefCell<Option<(u32, Compressor)>> = const { RefCell::new(None) };
}

/// Compresses one block into a complete gzip member (header with its own length, deflate data,
/// CRC-32 and length) with libdeflate, which compresses whole buffers about twice as fast as zlib at the same level
/// and a little smaller.
///
/// # Errors
/// A block of 4 GiB or more (gzip records the length in 32 bits), or a level outside 1–12.
pub fn compress_block(data: &[u8], level: u32) -> std::io::Result<Vec<u8>> {
    u32::try_from(data.len()).map_err(|_| std::io::Error::other("gzip member larger than 4 GiB"))?;
    let lvl = i32::try_from(level)
        .ok()
        .and_then(|l| CompressionLvl::new(l).ok())
        .ok_or_else(|| std::io::Error::other(format!("compression level {level} is not from 1 to 12")))?;
    DEFLATE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let compressor = match &mut *slot {
            Some((l, c)) if *l == level => c,
            other => &mut other.insert((level, Compressor::new(lvl))).1,
        };
        // A worst-case buffer for this member only (kept per thread it measurably raised peak
        // memory: the blocking pool has many threads); the member leaves with its own size.
        let mut out = vec![0u8; compressor.deflate_compress_bound(data.len())];
        let n = compressor
            .deflate_compress(data, &mut out)
            .map_err(|e| std::io::Error::other(format!("compression failed: {e:?}")))?;
        let total = MEMBER_HEADER + n + 8;
        let total32 = u32::try_from(total).map_err(|_| std::io::Error::other("gzip member larger than 4 GiB"))?;
        let mut member = Vec::with_capacity(total);
        member.extend_from_slice(&HEADER_START);
        member.extend_from_slice(&total32.to_le_bytes());
        member.extend_from_slice(&out[..n]);
        member.extend_from_slice(&libdeflater::crc32(data).to_le_bytes());
        member.extend_from_slice(&(data.len() as u32).to_le_bytes());
        Ok(member)
    })
}

/// A finished job: the gzip member and the input buffer, returned for reuse.
type Job = JoinHandle<std::io::Result<(Vec<u8>, Vec<u8>)>>;

/// Ordered pool of compression jobs.
#[derive(Debug)]
pub struct ParallelGzip {
    /// gzip level.
    level: u32,
    /// Most blocks compressing at once.
    max_in_flight: usize,
    /// Jobs in input order.
    queue: VecDeque<Job>,
    /// Input buffers whose block was compressed, ready to be filled again.
    free: Vec<Vec<u8>>,
}

impl ParallelGzip {
    /// A compressor using all available cores.
    pub fn new(level: u32) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            level,
            max_in_flight: cores + 1,
            queue: VecDeque::new(),
            free: Vec::new(),
        }
    }

    /// An empty input buffer with room for [`BLOCK_SIZE`] bytes, reused when one is free, so the
    /// same few buffers carry the whole dump.
    pub fn buffer(&mut self) -> Vec<u8> {
        self.free.pop().unwrap_or_else(|| Vec::with_capacity(BLOCK_SIZE))
    }

    /// Queues a block. When the pool is full, first returns the oldest finished member, so the
    /// caller can pass it on before reading more input (backpressure).
    ///
    /// # Errors
    /// A failed compression job.
    pub async fn push(&mut self, block: Vec<u8>) -> std::io::Result<Option<Bytes>> {
        let out = if self.queue.len() >= self.max_in_flight {
            self.pop().await?
        } else {
            None
        };
        let level = self.level;
        self.queue.push_back(tokio::task::spawn_blocking(move || {
            let member = compress_block(&block, level)?;
            Ok((member, block))
        }));
        Ok(out)
    }

    /// The oldest member, waiting for it; `None` when nothing is queued.
    ///
    /// # Errors
    /// A failed compression job.
    pub async fn pop(&mut self) -> std::io::Result<Option<Bytes>> {
        match self.queue.pop_front() {
            None => Ok(None),
            Some(job) => match job.await {
                Ok(Ok((member, mut block))) => {
                    // Only whole-block buffers come back, and no more than can be in flight: the
                    // pieces of a block cut at a table's start or end are dropped, not hoarded.
                    if block.capacity() >= BLOCK_SIZE && self.free.len() <= self.max_in_flight {
                        block.clear();
                        self.free.push(block);
                    }
                    Ok(Some(Bytes::from(member)))
                }
                Ok(Err(e)) => Err(e),
                Err(e) => Err(std::io::Error::other(format!("compression task failed: {e}"))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::MultiGzDecoder;
    use std::io::Read;

    #[tokio::test]
    async fn members_decode_in_order_to_the_full_input() {
        let input: Vec<u8> = (0..3 * BLOCK_SIZE + 123).map(|i| (i * 7 % 251) as u8).collect();
        let mut gz = ParallelGzip::new(1);
        let mut out = Vec::new();
        for block in input.chunks(BLOCK_SIZE) {
            if let Some(m) = gz.push(block.to_vec()).await.unwrap() {
                out.extend_from_slice(&m);
            }
        }
        while let Some(m) = gz.pop().await.unwrap() {
            out.extend_from_slice(&m);
        }
        let mut decoded = Vec::new();
        MultiGzDecoder::new(&out[..]).read_to_end(&mut decoded).unwrap();
        assert_eq!(decoded, input);
        // A single-member decoder would stop early: that is why readers must use MultiGzDecoder.
        let mut first = Vec::new();
        flate2::read::GzDecoder::new(&out[..]).read_to_end(&mut first).unwrap();
        assert_eq!(first.len(), BLOCK_SIZE);
    }

    #[test]
    fn every_member_says_its_own_length_and_others_are_told_apart() {
        let a: Vec<u8> = (0..300_000u32).flat_map(|i| (i % 991).to_le_bytes()).collect();
        let (m1, m2) = (compress_block(&a, 6).unwrap(), compress_block(b"x", 1).unwrap());
        assert_eq!(member_len(&m1), Some(m1.len()));
        assert_eq!(member_len(&m2), Some(m2.len()));
        // Splitting the concatenation by the recorded lengths gives back the members.
        let both = [m1.clone(), m2.clone()].concat();
        let first = member_len(&both).unwrap();
        assert_eq!((&both[..first], &both[first..]), (&m1[..], &m2[..]));
        // A member from another compressor (no such extra field) has no recorded length.
        let mut other = Vec::new();
        let mut e = flate2::write::GzEncoder::new(&mut other, flate2::Compression::new(6));
        std::io::Write::write_all(&mut e, b"hello").unwrap();
        e.finish().unwrap();
        assert_eq!(member_len(&other), None);
        assert_eq!(member_len(&m1[..10]), None);
    }

    #[tokio::test]
    async fn only_whole_block_buffers_are_kept_for_reuse() {
        let mut gz = ParallelGzip::new(1);
        // Pieces of blocks (cut at tables' starts and ends) are not hoarded.
        for _ in 0..50 {
            gz.push(vec![7u8; 10]).await.unwrap();
        }
        while gz.pop().await.unwrap().is_some() {}
        assert!(gz.free.is_empty());
        // Whole blocks are, but never more than can be in flight.
        for _ in 0..50 {
            let mut b = gz.buffer();
            b.resize(BLOCK_SIZE, 1);
            gz.push(b).await.unwrap();
        }
        while gz.pop().await.unwrap().is_some() {}
        assert!(!gz.free.is_empty() && gz.free.len() <= gz.max_in_flight + 1, "{}", gz.free.len());
    }

    #[test]
    fn filler_is_exactly_as_long_as_asked_and_reads_as_nothing() {
        let data = compress_block(b"SELECT 1;\n", 6).unwrap();
        for len in [
            FILLER_MIN,
            35,
            1000,
            FILLER_MAX,
            FILLER_MAX + 1,
            FILLER_MAX + FILLER_MIN - 1,
            3 * FILLER_MAX + 7,
            5 << 20,
        ] {
            let f = filler(len);
            assert_eq!(f.len() as u64, len);
            // After real data, it inflates to nothing more, and it can be cut into members by
            // their recorded lengths like any member pgvigil writes.
            let both = [data.clone(), f.clone()].concat();
            let mut decoded = Vec::new();
            MultiGzDecoder::new(&both[..]).read_to_end(&mut decoded).unwrap();
            assert_eq!(decoded, b"SELECT 1;\n", "{len}");
            let mut at = 0;
            while at < f.len() {
                let n = member_len(&f[at..]).unwrap();
                assert!(n as u64 >= FILLER_MIN && n as u64 <= FILLER_MAX, "{len}: {n}");
                let mut d = libdeflater::Decompressor::new();
                let mut out = [0u8; 1];
                assert_eq!(d.gzip_decompress(&f[at..at + n], &mut out).unwrap(), 0);
                at += n;
            }
            assert_eq!(at, f.len());
        }
    }

    #[test]
    fn reused_state_gives_independent_members_at_any_level() {
        let a: Vec<u8> = (0..200_000u32).flat_map(|i| (i % 997).to_le_bytes()).collect();
        let b = b"tiny".to_vec();
        // Same thread, alternating levels and sizes (including empty): each member stands alone.
        for (data, level) in [(&a, 6), (&b, 6), (&a, 1), (&Vec::new(), 1), (&a, 9), (&a, 12)] {
            let member = compress_block(data, level).unwrap();
            let mut decoded = Vec::new();
            flate2::read::GzDecoder::new(&member[..]).read_to_end(&mut decoded).unwrap();
            assert_eq!(&decoded, data, "level {level}, {} bytes", data.len());
        }
    }
}
