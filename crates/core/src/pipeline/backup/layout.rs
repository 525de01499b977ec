//! Where each table's data lands in the compressed stream. The producer starts a new gzip member
//! wherever a COPY block begins or ends (the dump scanner's cuts), so every block is a run of
//! whole members; this map follows the members as they leave the compressor, in order, and turns
//! the uncompressed cut offsets into compressed ones. It holds only the cuts not yet reached and
//! one entry per cut, never one per member, so it stays small whatever the dump's size.

use crate::pipeline::stages::dumpscan::CopySpan;
use crate::records::manifest::TableMembers;
use std::collections::{BTreeMap, VecDeque};

/// Follows members from the compressor and resolves cut offsets.
#[derive(Debug, Default)]
pub(super) struct MemberMap {
    /// Uncompressed start of each member queued for compression, in order.
    queued: VecDeque<u64>,
    /// Cut offsets not reached yet, in order.
    wanted: VecDeque<u64>,
    /// Uncompressed cut offset → compressed offset of the member that starts there.
    at: BTreeMap<u64, u64>,
    /// Compressed bytes emitted so far.
    compressed: u64,
}

impl MemberMap {
    /// A member starting at uncompressed offset `start` was queued for compression.
    pub(super) fn queued(&mut self, start: u64) {
        self.queued.push_back(start);
    }

    /// A new member will start at uncompressed offset `cut` (cuts come in order).
    pub(super) fn want(&mut self, cut: u64) {
        self.wanted.push_back(cut);
    }

    /// The oldest queued member left the compressor with `len` compressed bytes.
    pub(super) fn emitted(&mut self, len: u64) {
        let Some(start) = self.queued.pop_front() else { return };
        // A cut the producer did not start a member at (it never happens: the producer cuts
        // every block at every cut) is left unresolved, so its table gets no range at all
        // rather than a wrong one.
        while self.wanted.front().is_some_and(|&w| w <= start) {
            let w = self.wanted.pop_front().expect("checked");
            if w == start {
                self.at.insert(w, self.compressed);
            }
        }
        self.compressed += len;
    }

    /// Compressed bytes emitted so far: the whole gzip stream once every member left.
    pub(super) fn compressed(&self) -> u64 {
        self.compressed
    }

    /// The table ranges, once every member has been emitted and `uncompressed` bytes were read;
    /// tables whose begin or end was not a member boundary are left out.
    pub(super) fn finish(mut self, copies: &[CopySpan], uncompressed: u64) -> Vec<TableMembers> {
        if self.wanted.iter().all(|&w| w == uncompressed) && self.queued.is_empty() {
            self.at.insert(uncompressed, self.compressed);
        }
        copies
            .iter()
            .filter_map(|c| {
                let (begin, end) = (*self.at.get(&c.begin)?, *self.at.get(&c.end)?);
                Some(TableMembers {
                    table: c.table.clone(),
                    offset: begin,
                    length: end - begin,
                    rows: c.rows,
                })
            })
            .collect()
    }
}

/// Cuts `block`, which starts at uncompressed offset `start`, at every cut strictly inside it.
pub(super) fn split_at_cuts(mut block: Vec<u8>, start: u64, cuts: &[u64]) -> Vec<(u64, Vec<u8>)> {
    let end = start + block.len() as u64;
    let mut pieces = Vec::new();
    for &cut in cuts.iter().rev().filter(|&&c| c > start && c < end) {
        let tail = block.split_off((cut - start) as usize);
        pieces.push((cut, tail));
    }
    pieces.push((start, block));
    pieces.reverse();
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(table: &str, begin: u64, end: u64, rows: u64) -> CopySpan {
        CopySpan {
            table: table.into(),
            begin,
            end,
            rows,
        }
    }

    #[test]
    fn blocks_are_cut_at_every_cut_inside_them() {
        let block: Vec<u8> = (0..10).collect();
        type Case<'a> = (&'a [u64], &'a [(u64, usize)]);
        let cases: [Case; 4] = [
            (&[], &[(100, 10)]),
            (&[100, 110], &[(100, 10)]),
            (&[103], &[(100, 3), (103, 7)]),
            (&[95, 101, 105, 109, 120], &[(100, 1), (101, 4), (105, 4), (109, 1)]),
        ];
        for (cuts, want) in cases {
            let pieces = split_at_cuts(block.clone(), 100, cuts);
            let got: Vec<(u64, usize)> = pieces.iter().map(|(s, p)| (*s, p.len())).collect();
            assert_eq!(got, want, "{cuts:?}");
            assert_eq!(pieces.concat_bytes(), block);
        }
    }

    trait Concat {
        fn concat_bytes(&self) -> Vec<u8>;
    }
    impl Concat for Vec<(u64, Vec<u8>)> {
        fn concat_bytes(&self) -> Vec<u8> {
            self.iter().flat_map(|(_, p)| p.clone()).collect()
        }
    }

    #[test]
    fn cut_offsets_become_compressed_offsets_of_whole_members() {
        // Members (uncompressed start, compressed length): 0..50 → 20 bytes, 50..80 (table a) → 9,
        // 80..90 (table b, empty) → 4, 90..200 → 30.
        let mut map = MemberMap::default();
        for (start, len) in [(0, 20), (50, 9), (80, 4), (90, 30)] {
            map.queued(start);
            if start > 0 {
                map.want(start);
            }
            map.emitted(len);
        }
        let tables = map.finish(&[span("a", 50, 80, 3), span("b", 80, 90, 0)], 200);
        let got: Vec<(&str, u64, u64, u64)> = tables.iter().map(|t| (t.table.as_str(), t.offset, t.length, t.rows)).collect();
        assert_eq!(got, [("a", 20, 9, 3), ("b", 29, 4, 0)]);
    }

    #[test]
    fn a_table_ending_the_stream_and_a_cut_inside_a_member() {
        let mut map = MemberMap::default();
        map.queued(0);
        map.want(10); // inside the first member: never a boundary
        map.queued(40);
        map.want(40);
        map.emitted(7);
        map.emitted(5);
        map.want(60); // the end of the stream
        let tables = map.finish(&[span("inside", 10, 40, 1), span("last", 40, 60, 2)], 60);
        let got: Vec<(&str, u64, u64)> = tables.iter().map(|t| (t.table.as_str(), t.offset, t.length)).collect();
        assert_eq!(got, [("last", 7, 5)]);
    }
}
