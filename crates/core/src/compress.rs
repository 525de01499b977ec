//! Parallel gzip (pigz-style): the input is cut into blocks, each block becomes one complete
//! gzip member compressed on a blocking thread, and members are emitted in input order. The
//! concatenation is a standard multi-member gzip file that `gunzip` reads. At most
//! `workers + 1` blocks are in flight, so memory stays bounded whatever the input size.

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use std::collections::VecDeque;
use std::io::Write;
use tokio::task::JoinHandle;

/// Uncompressed bytes per gzip member.
pub const BLOCK_SIZE: usize = 1024 * 1024;

/// Compresses one block into a complete gzip member.
///
/// # Errors
/// Only on allocation/IO failures inside the encoder.
pub fn compress_block(data: &[u8], level: u32) -> std::io::Result<Vec<u8>> {
    let mut enc = GzEncoder::new(Vec::with_capacity(data.len() / 2 + 64), Compression::new(level));
    enc.write_all(data)?;
    enc.finish()
}

/// Ordered pool of compression jobs.
#[derive(Debug)]
pub struct ParallelGzip {
    /// gzip level.
    level: u32,
    /// Most blocks compressing at once.
    max_in_flight: usize,
    /// Jobs in input order.
    queue: VecDeque<JoinHandle<std::io::Result<Vec<u8>>>>,
}

impl ParallelGzip {
    /// A compressor using all available cores.
    pub fn new(level: u32) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            level,
            max_in_flight: cores + 1,
            queue: VecDeque::new(),
        }
    }

    /// Queues a block. When the pool is full, first returns the oldest finished member, so the
    /// caller can pass it on before reading more input (backpressure).
    ///
    /// # Errors
    /// A failed compression job.
    pub async fn push(&mut self, block: Bytes) -> std::io::Result<Option<Bytes>> {
        let out = if self.queue.len() >= self.max_in_flight {
            self.pop().await?
        } else {
            None
        };
        let level = self.level;
        self.queue
            .push_back(tokio::task::spawn_blocking(move || compress_block(&block, level)));
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
                Ok(r) => r.map(|v| Some(Bytes::from(v))),
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
            if let Some(m) = gz.push(Bytes::copy_from_slice(block)).await.unwrap() {
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
}
