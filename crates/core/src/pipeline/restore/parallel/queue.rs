//! The work of phase 2, and when each piece may start: the tables' COPY blocks, largest
//! first, and each table's index builds as soon as all of that table's data is committed (the
//! builds of a table without data of its own, once all data is), ahead of the blocks still
//! waiting — as `pg_restore -j` does, so that a table's indexes are built while other tables load
//! and while its pages are still in memory. A pure state machine; the sessions are in [`super::work`].

use super::plan::Block;
use crate::pipeline::stages::dumpscan::split_qualified;
use std::collections::{BTreeMap, VecDeque};

/// A table as schema and name.
pub(super) type Table = (String, String);

/// A table's builds: the table, its name as shown, and the SQL.
pub(super) type Builds = (Table, String, Vec<u8>);

/// The table a block loads, when its name parses.
pub(super) fn table_of(block: &Block) -> Option<Table> {
    split_qualified(&block.table)
}

/// What one session does at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Work {
    /// Loads a table's COPY block.
    Block(Block),
    /// Builds the indexes of one table (named as shown): what the gate passed of them.
    Builds(String, Vec<u8>),
}

/// What a session is to do next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    Work(Work),
    /// Nothing is ready, but builds wait for data that a session has loaded and not yet
    /// committed: commit (if this session holds any), then ask again.
    Wait,
    /// Nothing is left.
    Done,
}

/// The queue shared by the sessions.
#[derive(Debug, Default)]
pub(super) struct Queue {
    ready: VecDeque<Work>,
    /// Builds waiting for their table's data (largest table's first): the table, its blocks not
    /// yet committed, and the builds.
    waiting: Vec<(Table, usize, Work)>,
    /// Builds of tables without data of their own: they wait for all data.
    after_all: Vec<Work>,
    /// Blocks not yet committed.
    uncommitted: usize,
}

impl Queue {
    /// `blocks` (largest first), and each table's builds (largest table's data first).
    pub(super) fn new(blocks: Vec<Block>, builds: Vec<Builds>) -> Self {
        let mut per_table: BTreeMap<Table, usize> = BTreeMap::new();
        for t in blocks.iter().filter_map(table_of) {
            *per_table.entry(t).or_default() += 1;
        }
        let mut q = Queue {
            uncommitted: blocks.len(),
            ready: blocks.into_iter().map(Work::Block).collect(),
            ..Queue::default()
        };
        for (table, shown, sql) in builds {
            let work = Work::Builds(shown, sql);
            match per_table.get(&table) {
                Some(&n) => q.waiting.push((table, n, work)),
                None => q.after_all.push(work),
            }
        }
        q.release();
        q
    }

    /// The next piece of work for a session.
    pub(super) fn next(&mut self) -> Next {
        match self.ready.pop_front() {
            Some(work) => Next::Work(work),
            None if self.waiting.is_empty() && self.after_all.is_empty() => Next::Done,
            None => Next::Wait,
        }
    }

    /// How many pieces of work there are, ready or waiting.
    pub(super) fn len(&self) -> usize {
        self.ready.len() + self.waiting.len() + self.after_all.len()
    }

    /// Nothing is left to do or to wait for.
    pub(super) fn is_done(&self) -> bool {
        self.ready.is_empty() && self.waiting.is_empty() && self.after_all.is_empty()
    }

    /// Whether the next piece of work is a block of at least `bytes`.
    pub(super) fn large_block_next(&self, bytes: u64) -> bool {
        matches!(self.ready.front(), Some(Work::Block(b)) if b.part.length >= bytes)
    }

    /// Whether committing a transaction that holds blocks of `tables` would let builds start.
    pub(super) fn would_release(&self, tables: &[Option<Table>]) -> bool {
        let held = |t: &Table| tables.iter().flatten().filter(|x| *x == t).count();
        self.waiting.iter().any(|(t, n, _)| held(t) >= *n) || (tables.len() >= self.uncommitted && !self.after_all.is_empty())
    }

    /// A session committed blocks of `tables` (one entry each): the builds they held back are
    /// ready, ahead of the blocks.
    pub(super) fn committed(&mut self, tables: &[Option<Table>]) {
        self.uncommitted = self.uncommitted.saturating_sub(tables.len());
        for t in tables.iter().flatten() {
            if let Some((_, n, _)) = self.waiting.iter_mut().find(|(w, _, _)| w == t) {
                *n = n.saturating_sub(1);
            }
        }
        self.release();
    }

    fn release(&mut self) {
        // Largest table first, as they were given, all ahead of the blocks still waiting.
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting).into_iter().partition(|(_, n, _)| *n == 0);
        self.waiting = waiting;
        let mut freed: Vec<Work> = done.into_iter().map(|(_, _, work)| work).collect();
        if self.uncommitted == 0 {
            freed.append(&mut self.after_all);
        }
        for work in freed.into_iter().rev() {
            self.ready.push_front(work);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::restore::parallel::plan::Part;

    fn block(table: &str, length: u64) -> Block {
        Block {
            table: table.into(),
            rows: 1,
            part: Part {
                offset: 0,
                length,
                sha256: None,
            },
        }
    }

    fn t(name: &str) -> Option<Table> {
        split_qualified(name)
    }

    fn builds(name: &str) -> Builds {
        (split_qualified(name).unwrap(), name.into(), Vec::new())
    }

    /// What `next` gives, in short: `B table`, `I table`, `wait`, `done`.
    fn next(q: &mut Queue) -> String {
        match q.next() {
            Next::Work(Work::Block(b)) => format!("B {}", b.table),
            Next::Work(Work::Builds(t, _)) => format!("I {t}"),
            Next::Wait => "wait".into(),
            Next::Done => "done".into(),
        }
    }

    #[test]
    fn builds_start_once_their_tables_data_is_committed_ahead_of_other_blocks() {
        // public.a in two blocks, public.b in one; public.p has no data (a partitioned table).
        let mut q = Queue::new(
            vec![block("public.a", 50), block("public.b", 40), block("public.a", 30)],
            vec![builds("public.a"), builds("public.b"), builds("public.p")],
        );
        assert!(q.large_block_next(50) && !q.large_block_next(51));
        assert_eq!(next(&mut q), "B public.a");
        assert_eq!(next(&mut q), "B public.b");
        // Committing one block of a does not free a's builds; b's whole data does.
        assert!(!q.would_release(&[t("public.a")]));
        assert!(q.would_release(&[t("public.b")]));
        q.committed(&[t("public.a")]);
        q.committed(&[t("public.b")]);
        assert_eq!(next(&mut q), "I public.b");
        assert_eq!(next(&mut q), "B public.a");
        // Everything is taken; a's builds and p's wait for a's last block.
        assert_eq!(next(&mut q), "wait");
        assert!(q.would_release(&[t("public.a")]));
        q.committed(&[t("public.a")]);
        assert_eq!(next(&mut q), "I public.a");
        assert_eq!(next(&mut q), "I public.p");
        assert_eq!(next(&mut q), "done");
    }

    #[test]
    fn without_builds_the_blocks_go_largest_first_and_then_it_is_done() {
        let cases: [(Vec<Block>, Vec<Builds>, &[&str]); 3] = [
            (
                vec![block("public.a", 2), block("public.b", 1)],
                vec![],
                &["B public.a", "B public.b", "done"],
            ),
            // Builds on a table without data, and no data at all: ready at once.
            (vec![], vec![builds("public.p")], &["I public.p", "done"]),
            // A block whose name does not parse still holds back the builds that wait for all data.
            (vec![block("odd name", 1)], vec![builds("public.p")], &["B odd name", "wait"]),
        ];
        for (blocks, built, want) in cases {
            let mut q = Queue::new(blocks, built);
            let got: Vec<String> = want.iter().map(|_| next(&mut q)).collect();
            assert_eq!(got, *want);
        }
    }
}
