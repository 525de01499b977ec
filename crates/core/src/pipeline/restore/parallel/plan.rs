//! Whether a backup can be restored over several sessions, and in which parts: the schema before
//! the data, each table's block (largest first), the short runs between blocks (pg_dump writes only
//! comments there), and what follows the data. A pure function of the manifest.

use crate::records::manifest::{Manifest, MemberRange};

/// One part of the object to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Where it lies in the object.
    pub offset: u64,
    /// How long it is.
    pub length: u64,
    /// Its SHA-256 as the manifest records it (`None`: a run between blocks of a backup taken
    /// before pgvigil recorded theirs, proven only by the object's own SHA-256).
    pub sha256: Option<String>,
}

/// A table's block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The table as pg_dump printed it.
    pub table: String,
    /// Rows the manifest counts in it.
    pub rows: u64,
    /// Where it lies.
    pub part: Part,
}

/// The parts of a backup, in the order a parallel restore reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Everything before the first COPY block.
    pub before: Part,
    /// The tables' blocks, largest first.
    pub blocks: Vec<Block>,
    /// The runs between blocks.
    pub between: Vec<Part>,
    /// Everything after the last COPY block.
    pub after: Part,
}

impl Plan {
    /// Whether every part has its SHA-256 recorded: then the parts, each checked against its own,
    /// prove the whole object, and it is read once. Otherwise a second read through SHA-256
    /// proves it.
    pub fn proven_by_parts(&self) -> bool {
        self.between.iter().all(|p| p.sha256.is_some())
    }
}

fn recorded(r: &MemberRange) -> Part {
    Part {
        offset: r.offset,
        length: r.length,
        sha256: Some(r.sha256.clone()),
    }
}

/// The plan for `m`, or why its backup is restored in one stream: it must be plain (offsets are
/// into the gzip stream), record every part with its SHA-256, and its parts must tile the object
/// without overlapping.
///
/// # Errors
/// Why not, in a few words.
pub fn plan(m: &Manifest) -> Result<Plan, &'static str> {
    if m.encryption.is_some() {
        return Err("the backup is encrypted, and its parts are offsets into the decrypted stream");
    }
    let (Some(before), Some(after)) = (&m.before_data, &m.after_data) else {
        return Err("the backup was taken before pgvigil recorded the checksums of its parts");
    };
    // (A table whose partitions pg_dump loads through it has several blocks: each is a part.)
    if m.table_members.iter().any(|t| t.sha256.is_none() || t.length == 0) || before.length == 0 || after.length == 0 {
        return Err("the backup was taken before pgvigil recorded the checksums of its parts");
    }
    if m.table_members.is_empty() {
        return Err("the backup holds no table data");
    }
    let mut blocks: Vec<Block> = m
        .table_members
        .iter()
        .map(|t| Block {
            table: t.table.clone(),
            rows: t.rows,
            part: Part {
                offset: t.offset,
                length: t.length,
                sha256: t.sha256.clone(),
            },
        })
        .collect();
    blocks.sort_by_key(|b| b.part.offset);
    let mut between = Vec::new();
    let mut runs = m.between_data.iter();
    let mut at = before.offset.checked_add(before.length).filter(|_| before.offset == 0);
    for b in &blocks {
        let Some(end) = at.filter(|e| *e <= b.part.offset) else {
            return Err("the backup's recorded parts overlap or leave the object");
        };
        if b.part.offset > end {
            let length = b.part.offset - end;
            // Recorded runs must be exactly the runs between the blocks, all of them.
            let sha256 = match runs.next() {
                Some(r) if r.offset == end && r.length == length => Some(r.sha256.clone()),
                Some(_) => return Err("the backup's recorded parts overlap or leave the object"),
                None if m.between_data.is_empty() => None,
                None => return Err("the backup's recorded parts overlap or leave the object"),
            };
            between.push(Part {
                offset: end,
                length,
                sha256,
            });
        }
        at = b.part.offset.checked_add(b.part.length);
    }
    match at {
        Some(end) if end == after.offset && after.offset.checked_add(after.length) == Some(m.size) && runs.next().is_none() => {}
        _ => return Err("the backup's recorded parts overlap or leave the object"),
    }
    blocks.sort_by(|a, b| b.part.length.cmp(&a.part.length).then_with(|| a.part.offset.cmp(&b.part.offset)));
    Ok(Plan {
        before: recorded(before),
        blocks,
        between,
        after: recorded(after),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::manifest::TableMembers;

    fn range(offset: u64, length: u64) -> MemberRange {
        MemberRange {
            offset,
            length,
            sha256: format!("h{offset}"),
        }
    }

    fn manifest(tables: &[(&str, u64, u64)], before: (u64, u64), after: (u64, u64), size: u64) -> Manifest {
        Manifest {
            size,
            tables: tables.iter().map(|(t, _, _)| ((*t).to_string(), 1)).collect(),
            table_members: tables
                .iter()
                .map(|(t, o, l)| TableMembers {
                    table: (*t).to_string(),
                    offset: *o,
                    length: *l,
                    rows: 1,
                    sha256: Some(format!("h{o}")),
                })
                .collect(),
            before_data: Some(range(before.0, before.1)),
            after_data: Some(range(after.0, after.1)),
            ..Manifest::default()
        }
    }

    #[test]
    fn parts_tile_the_object_largest_block_first() {
        // before 0..10, a 10..30, run 30..32, b 32..80, after 80..100
        let m = manifest(&[("a", 10, 20), ("b", 32, 48)], (0, 10), (80, 20), 100);
        let p = plan(&m).unwrap();
        assert_eq!(p.blocks.iter().map(|b| b.table.as_str()).collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(
            p.between,
            [Part {
                offset: 30,
                length: 2,
                sha256: None
            }]
        );
        assert_eq!(p.after.offset, 80);
        assert!(!p.proven_by_parts(), "a run without its hash: the object is read whole too");

        // With the runs' hashes recorded, the parts prove the object.
        let mut m = m;
        m.between_data = vec![range(30, 2)];
        let p = plan(&m).unwrap();
        assert_eq!(p.between[0].sha256.as_deref(), Some("h30"));
        assert!(p.proven_by_parts());
    }

    #[test]
    fn anything_that_does_not_tile_the_object_is_read_in_one_stream() {
        let cases: [(&str, Manifest); 5] = [
            ("overlap", manifest(&[("a", 10, 25), ("b", 32, 48)], (0, 10), (80, 20), 100)),
            ("before not at 0", manifest(&[("a", 10, 20)], (1, 9), (30, 70), 100)),
            ("before runs into a block", manifest(&[("a", 10, 20)], (0, 11), (30, 70), 100)),
            ("after does not end the object", manifest(&[("a", 10, 20)], (0, 10), (30, 60), 100)),
            ("a gap before after", manifest(&[("a", 10, 20)], (0, 10), (31, 69), 100)),
        ];
        for (what, m) in cases {
            assert!(plan(&m).is_err(), "{what}");
        }
        let mut no_hash = manifest(&[("a", 10, 20)], (0, 10), (30, 70), 100);
        assert!(plan(&no_hash).is_ok());
        no_hash.table_members[0].sha256 = None;
        assert!(plan(&no_hash).is_err());
        // Recorded runs that are not exactly the runs between the blocks.
        let two = manifest(&[("a", 10, 20), ("b", 32, 48)], (0, 10), (80, 20), 100);
        for runs in [vec![range(30, 1)], vec![range(31, 1)], vec![range(30, 2), range(40, 2)]] {
            let mut m = two.clone();
            m.between_data = runs.clone();
            assert!(plan(&m).is_err(), "{runs:?}");
        }
        let mut met = manifest(&[("a", 10, 20)], (0, 10), (30, 70), 100);
        met.between_data = vec![range(30, 1)];
        assert!(plan(&met).is_err(), "a run where the blocks meet");
        let mut huge = manifest(&[("a", 10, u64::MAX)], (0, 10), (30, 70), 100);
        assert!(plan(&huge).is_err(), "an offset past u64 is refused, not wrapped");
        huge.encryption = Some(Default::default());
        assert!(plan(&huge).is_err());
    }
}
