//! Where each table's data lands in the compressed stream. The producer starts a new gzip member
//! wherever a COPY block begins or ends (the dump scanner's cuts), so every block is a run of
//! whole members; this map follows the members as they leave the compressor, in order, and turns
//! the uncompressed cut offsets into compressed ones. It holds only the cuts not yet reached and
//! one entry per cut, never one per member, so it stays small whatever the dump's size.

use crate::pipeline::stages::dumpscan::CopySpan;
use crate::records::manifest::{MemberRange, TableMembers};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, VecDeque};

/// Follows members from the compressor and resolves cut offsets. Between two resolved cuts lies
/// a segment (the schema before the data, a table's block, the headers between blocks, what
/// follows the data); each gets its own SHA-256, so a ranged read can be proven intact.
#[derive(Debug, Default)]
pub(super) struct MemberMap {
    /// Uncompressed start of each member queued for compression, in order.
    queued: VecDeque<u64>,
    /// Cut offsets not reached yet, in order.
    wanted: VecDeque<u64>,
    /// Uncompressed cut offset → compressed offset of the member that starts there.
    at: BTreeMap<u64, u64>,
    /// Uncompressed start of a segment → SHA-256 of its compressed bytes (hex).
    hashes: BTreeMap<u64, String>,
    /// The segment being hashed: its uncompressed start, and the hash so far.
    segment: (u64, Sha256),
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

    /// The oldest queued member left the compressor as `member`.
    pub(super) fn emitted(&mut self, member: &[u8]) {
        let Some(start) = self.queued.pop_front() else { return };
        // A cut the producer did not start a member at (it never happens: the producer cuts
        // every block at every cut) is left unresolved, so its table gets no range at all
        // rather than a wrong one.
        while self.wanted.front().is_some_and(|&w| w <= start) {
            let w = self.wanted.pop_front().expect("checked");
            if w == start {
                self.at.insert(w, self.compressed);
                self.end_segment(w);
            }
        }
        self.segment.1.update(member);
        self.compressed += member.len() as u64;
    }

    /// Ends the segment being hashed; the next one starts at uncompressed offset `next`.
    fn end_segment(&mut self, next: u64) {
        let (start, sha) = std::mem::replace(&mut self.segment, (next, Sha256::new()));
        self.hashes.insert(start, hex::encode(sha.finalize()));
    }

    /// Compressed bytes emitted so far: the whole gzip stream once every member left.
    pub(super) fn compressed(&self) -> u64 {
        self.compressed
    }

    /// The table ranges, and the ranges before and after the data, once every member has been
    /// emitted and `uncompressed` bytes were read; tables whose begin or end was not a member
    /// boundary are left out.
    pub(super) fn finish(mut self, copies: &[CopySpan], uncompressed: u64) -> Ranges {
        let whole = self.wanted.iter().all(|&w| w == uncompressed) && self.queued.is_empty();
        if whole {
            self.at.insert(uncompressed, self.compressed);
            self.end_segment(uncompressed);
        }
        let at = &self.at;
        let hashes = &self.hashes;
        // The range from one resolved cut to the next, and its hash.
        let segment = |begin: u64, end: u64| -> Option<MemberRange> {
            let offset = if begin == 0 { 0 } else { *at.get(&begin)? };
            let next = at.range(begin + 1..).next().map(|(&cut, &off)| (cut, off));
            let sha256 = match next {
                Some((cut, _)) if cut == end => hashes.get(&begin)?.clone(),
                _ => return None,
            };
            Some(MemberRange {
                offset,
                length: next?.1 - offset,
                sha256,
            })
        };
        let tables = copies
            .iter()
            .filter_map(|c| {
                let (begin, end) = (*at.get(&c.begin)?, *at.get(&c.end)?);
                Some(TableMembers {
                    table: c.table.clone(),
                    offset: begin,
                    length: end - begin,
                    rows: c.rows,
                    sha256: segment(c.begin, c.end).map(|r| r.sha256),
                })
            })
            .collect();
        let (before, after) = match (copies.first(), copies.last()) {
            (Some(first), Some(last)) if whole => (segment(0, first.begin), segment(last.end, uncompressed)),
            _ => (None, None),
        };
        // The runs between blocks, where there are any: all or none (a run without its hash
        // leaves the object to be proven whole).
        let between = copies
            .windows(2)
            .filter(|w| w[0].end < w[1].begin)
            .map(|w| segment(w[0].end, w[1].begin))
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default();
        Ranges {
            tables,
            before,
            after,
            between,
        }
    }
}

/// Where the dump's parts lie in the compressed stream.
#[derive(Debug, Default)]
pub(super) struct Ranges {
    /// Each table's COPY block.
    pub(super) tables: Vec<TableMembers>,
    /// Everything before the first COPY block.
    pub(super) before: Option<MemberRange>,
    /// Everything after the last COPY block.
    pub(super) after: Option<MemberRange>,
    /// The runs between two COPY blocks.
    pub(super) between: Vec<MemberRange>,
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
    use sha2::Digest;

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
            map.emitted(&vec![len as u8; len as usize]);
        }
        let ranges = map.finish(&[span("a", 50, 80, 3), span("b", 80, 90, 0)], 200);
        let got: Vec<(&str, u64, u64, u64)> = ranges
            .tables
            .iter()
            .map(|t| (t.table.as_str(), t.offset, t.length, t.rows))
            .collect();
        assert_eq!(got, [("a", 20, 9, 3), ("b", 29, 4, 0)]);
        // Each range's hash is that of exactly its members' bytes.
        let sha = |len: u64| hex::encode(sha2::Sha256::digest(vec![len as u8; len as usize]));
        assert_eq!(ranges.tables[0].sha256.as_deref(), Some(sha(9).as_str()));
        assert_eq!(ranges.tables[1].sha256.as_deref(), Some(sha(4).as_str()));
        let (before, after) = (ranges.before.unwrap(), ranges.after.unwrap());
        assert_eq!((before.offset, before.length, before.sha256), (0, 20, sha(20)));
        assert_eq!((after.offset, after.length, after.sha256), (33, 30, sha(30)));
        assert!(ranges.between.is_empty(), "the blocks meet");
    }

    #[test]
    fn the_runs_between_blocks_get_their_own_hashes() {
        // Members: 0..50 → 20, 50..80 (a) → 9, 80..85 (comments) → 3, 85..90 (b) → 4, 90..200 → 30.
        let mut map = MemberMap::default();
        for (start, len) in [(0u64, 20u64), (50, 9), (80, 3), (85, 4), (90, 30)] {
            map.queued(start);
            if start > 0 {
                map.want(start);
            }
            map.emitted(&vec![len as u8; len as usize]);
        }
        let ranges = map.finish(&[span("a", 50, 80, 3), span("b", 85, 90, 1)], 200);
        let sha = |len: u64| hex::encode(sha2::Sha256::digest(vec![len as u8; len as usize]));
        let got: Vec<(u64, u64, String)> = ranges.between.iter().map(|r| (r.offset, r.length, r.sha256.clone())).collect();
        assert_eq!(got, [(29, 3, sha(3))]);
        // The parts tile the object: before, a, the run, b, after.
        assert_eq!(ranges.tables[1].offset, 32);
        assert_eq!(ranges.after.unwrap().offset, 36);
    }

    #[test]
    fn a_segment_that_does_not_end_where_its_table_ends_gets_no_hash() {
        // Members: 0..50 → 20, 50..70 → 5, 70..200 → 30; the block 50..80 ends inside a member.
        let mut map = MemberMap::default();
        for (start, len) in [(0u64, 20u64), (50, 5), (70, 30)] {
            map.queued(start);
            if start > 0 {
                map.want(start);
            }
            map.emitted(&vec![1; len as usize]);
        }
        let ranges = map.finish(&[span("a", 50, 70, 1), span("b", 70, 80, 1)], 200);
        assert_eq!(ranges.tables.len(), 1, "b's end is no boundary: no range");
        assert!(ranges.tables[0].sha256.is_some());
        assert_eq!(ranges.after, None, "what follows b does not start at a boundary");
    }

    #[test]
    fn a_table_ending_the_stream_and_a_cut_inside_a_member() {
        let mut map = MemberMap::default();
        map.queued(0);
        map.want(10); // inside the first member: never a boundary
        map.queued(40);
        map.want(40);
        map.emitted(&[7; 7]);
        map.emitted(&[5; 5]);
        map.want(60); // the end of the stream
        let ranges = map.finish(&[span("inside", 10, 40, 1), span("last", 40, 60, 2)], 60);
        let got: Vec<(&str, u64, u64)> = ranges.tables.iter().map(|t| (t.table.as_str(), t.offset, t.length)).collect();
        assert_eq!(got, [("last", 7, 5)]);
        // Nothing follows the last block, and the first block has no range: neither side has one.
        assert_eq!((ranges.before, ranges.after), (None, None));
    }
}
