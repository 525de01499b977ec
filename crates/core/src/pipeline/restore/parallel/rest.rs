//! What follows the data: indexes, constraints, triggers, sequence values, large objects.
//! Read whole through the gate and held in memory before the data loads (when it is not too large,
//! and several sessions may run), it is split: the index builds of each table (see
//! [`crate::pipeline::stages::dumpscan::Build`]) go to the data's sessions ([`super::queue`]), a
//! table's builds together, as soon as that table's data is committed; everything else runs last,
//! in the dump's order (foreign keys after the keys they reference, partition indexes attached
//! after they were built), in one session committed only after the table-of-contents guard passed.
//! Nothing of it runs before the whole part was read and found exactly as recorded.

use super::part::{PartRead, Sink};
use super::plan::{Part, Plan};
use super::queue::Builds;
use super::{as_recorded, committed, session, Job, Sessions, Step};
use crate::infra::pg::psql::Outcome;
use crate::pipeline::restore::stream::StreamError;
use crate::pipeline::stages::dumpscan::{split_qualified, Build, ScanResult};
use crate::records::manifest::Manifest;
use std::collections::{BTreeMap, BTreeSet};
use tokio_util::sync::CancellationToken;

/// Most bytes of what follows the data held in memory (compressed, and as the gate passed it; held
/// once more while it is split, and then through the whole data load); a larger part (many large
/// objects) is restored in one session as it streams, after the data.
const HOLD: usize = 64 << 20;

const WHAT: &str = "what follows the data";

/// What follows the data, held: each table's builds (largest table's data first), the rest in
/// the dump's order, and what the gate found in all of it.
pub(super) struct Held {
    pub builds: Vec<Builds>,
    pub rest: Vec<u8>,
    pub scan: ScanResult,
}

/// What follows the data, as read before the data loads.
pub(super) enum After {
    /// Held, to be split.
    Held(Box<Held>),
    /// Restored in one session as it streams, after the data.
    Streamed,
}

/// Reads what follows the data and splits it, when several sessions may run and it is small
/// enough to hold.
pub(super) async fn read(job: &Job<'_>, plan: &Plan, sessions: &Sessions<'_>, cancel: &CancellationToken) -> Step<After> {
    if sessions.jobs <= 1 || plan.after.length > HOLD as u64 {
        return Ok(Ok(After::Streamed));
    }
    let mut held = Vec::new();
    let (read, stopped) = job.gated(&plan.after, Sink::Held(&mut held, HOLD), cancel).await?;
    if read.too_large {
        return Ok(Ok(After::Streamed));
    }
    if let Err(why) = checked(&read, stopped.as_ref(), &plan.after) {
        return Ok(Err(why));
    }
    let (builds, rest) = split(held, &read.builds, plan).unwrap_or_else(|held| (Vec::new(), held));
    Ok(Ok(After::Held(Box::new(Held {
        builds,
        rest,
        scan: read.scan,
    }))))
}

/// Restores the rest of what follows the data (after the builds), committed after the
/// table-of-contents guard.
pub(super) async fn finish(job: &Job<'_>, m: &Manifest, plan: &Plan, after: After, cancel: &CancellationToken) -> Step<ScanResult> {
    let guard = crate::pipeline::restore::toc::guard_sql(&m.toc);
    let mut tx = session(job.target).await?;
    let scan = match after {
        After::Held(held) => {
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(StreamError::Cancelled.into()),
                () = tx.write(&held.rest) => {}
            }
            held.scan
        }
        After::Streamed => {
            let (read, stopped) = job.gated(&plan.after, Sink::Psql(&mut tx), cancel).await?;
            if let Err(why) = checked(&read, stopped.as_ref(), &plan.after) {
                tx.rollback().await;
                return Ok(Err(why));
            }
            read.scan
        }
    };
    Ok(committed(&mut tx, guard.as_deref(), WHAT, cancel).await?.map(|()| scan))
}

/// `Err(why)` unless the part is exactly as recorded, ends the dump, and holds neither COPY data
/// nor the dump's opening lines.
fn checked(read: &PartRead, stopped: Option<&Outcome>, part: &Part) -> Result<(), String> {
    match as_recorded(read, stopped, part, WHAT) {
        Ok(()) if !read.scan.complete => Err("the dump does not end with pg_dump's closing line".into()),
        Ok(()) if !read.scan.copies.is_empty() || read.restrict.0 => Err(format!("{WHAT} holds COPY data or the dump's opening lines")),
        other => other,
    }
}

/// The builds of `held` by table (each table's in the dump's order, its tablespace set before
/// each), largest table's data first, and what is left of `held` in the dump's order; or `held`
/// itself when there are builds on fewer than two tables, or builds that do not lie in order
/// inside it (never: the gate notes them as it passes them).
#[allow(clippy::type_complexity)]
fn split(held: Vec<u8>, builds: &[Build], plan: &Plan) -> Result<(Vec<Builds>, Vec<u8>), Vec<u8>> {
    // Each table's data, by its name (pg_dump names every table with its schema).
    let mut sizes: BTreeMap<(String, String), u64> = BTreeMap::new();
    for b in &plan.blocks {
        if let Some(name) = split_qualified(&b.table) {
            *sizes.entry(name).or_default() += b.part.length;
        }
    }
    // An index built without ONLY on a table without data (a partitioned one, say) would reach
    // tables that other sessions build on: it keeps the dump's order, and so does every build
    // after it (one of them could depend on what it made).
    let builds: Vec<&Build> = builds.iter().take_while(|b| !b.recurses || sizes.contains_key(&b.table)).collect();
    let in_order = builds
        .iter()
        .try_fold(0u64, |at, b| {
            (b.start >= at && b.end >= b.start && b.end <= held.len() as u64).then_some(b.end)
        })
        .is_some();
    let tables: BTreeSet<&(String, String)> = builds.iter().map(|b| &b.table).collect();
    if !in_order || tables.len() < 2 {
        return Err(held);
    }
    let mut groups: BTreeMap<(String, String), Vec<u8>> = BTreeMap::new();
    let mut rest = Vec::with_capacity(held.len());
    let mut at = 0usize;
    for b in builds {
        let (start, end) = (b.start as usize, b.end as usize);
        rest.extend_from_slice(&held[at..start]);
        let sql = groups.entry(b.table.clone()).or_default();
        // Each build sets the tablespace it was dumped under: the session's own, or the dump's.
        let tablespace = b.tablespace.as_deref().unwrap_or("");
        sql.extend_from_slice(format!("SET default_tablespace = '{tablespace}';\n").as_bytes());
        sql.extend_from_slice(&held[start..end]);
        at = end;
    }
    rest.extend_from_slice(&held[at..]);
    drop(held);
    let mut groups: Vec<((String, String), Vec<u8>)> = groups.into_iter().collect();
    groups.sort_by_key(|(t, _)| std::cmp::Reverse(sizes.get(t).copied().unwrap_or(0)));
    // (Shown in messages: no control characters, not too long.)
    let shown = |(s, n): &(String, String)| {
        let name = if s.is_empty() { n.clone() } else { format!("{s}.{n}") };
        name.chars().filter(|c| !c.is_control()).take(80).collect::<String>()
    };
    Ok((groups.into_iter().map(|(t, sql)| (t.clone(), shown(&t), sql)).collect(), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_with(blocks: &[(&str, u64)]) -> Plan {
        let part = |length| Part {
            offset: 0,
            length,
            sha256: None,
        };
        Plan {
            before: part(1),
            blocks: blocks
                .iter()
                .map(|(t, len)| super::super::plan::Block {
                    table: (*t).into(),
                    rows: 1,
                    part: part(*len),
                })
                .collect(),
            between: Vec::new(),
            after: part(1),
        }
    }

    fn build(held: &str, stmt: &str, table: (&str, &str), tablespace: Option<&str>) -> Build {
        let start = held.find(stmt).unwrap() as u64;
        Build {
            start,
            end: start + stmt.len() as u64,
            table: (table.0.into(), table.1.into()),
            tablespace: tablespace.map(Into::into),
            recurses: false,
        }
    }

    #[test]
    fn builds_go_by_table_largest_first_and_the_rest_keeps_its_order() {
        let held = "SET default_tablespace = '';\nA1;\nFK1;\nB1;\nSET default_tablespace = fast;\nA2;\nTRIGGER;\n";
        let builds = [
            build(held, "A1;\n", ("public", "a"), None),
            build(held, "B1;\n", ("public", "b"), None),
            build(held, "A2;\n", ("public", "a"), Some("fast")),
        ];
        let plan = plan_with(&[("public.a", 10), ("public.b", 500)]);
        let (groups, rest) = split(held.as_bytes().to_vec(), &builds, &plan).unwrap();
        let groups: Vec<(String, String)> = groups.into_iter().map(|(_, t, s)| (t, String::from_utf8(s).unwrap())).collect();
        assert_eq!(
            groups,
            [
                ("public.b".to_string(), "SET default_tablespace = '';\nB1;\n".to_string()),
                (
                    "public.a".to_string(),
                    "SET default_tablespace = '';\nA1;\nSET default_tablespace = 'fast';\nA2;\n".to_string()
                ),
            ]
        );
        assert_eq!(
            String::from_utf8(rest).unwrap(),
            "SET default_tablespace = '';\nFK1;\nSET default_tablespace = fast;\nTRIGGER;\n"
        );
    }

    #[test]
    fn an_index_without_only_on_a_table_without_data_keeps_the_dumps_order() {
        let held = "A1;\nB1;\nP1;\nQ1;\n";
        let recursing = |stmt: &str, table: (&str, &str)| Build {
            recurses: true,
            ..build(held, stmt, table, None)
        };
        let builds = [
            build(held, "A1;\n", ("public", "a"), None),
            recursing("B1;\n", ("public", "b")),
            recursing("P1;\n", ("public", "p")),
            build(held, "Q1;\n", ("public", "b"), None),
        ];
        let plan = plan_with(&[("public.a", 10), ("public.b", 500)]);
        let (groups, rest) = split(held.as_bytes().to_vec(), &builds, &plan).unwrap();
        let groups: Vec<(String, String)> = groups.into_iter().map(|(_, t, s)| (t, String::from_utf8(s).unwrap())).collect();
        let set = "SET default_tablespace = '';\n";
        assert_eq!(
            groups,
            [
                ("public.b".to_string(), format!("{set}B1;\n")),
                ("public.a".to_string(), format!("{set}A1;\n")),
            ]
        );
        assert_eq!(String::from_utf8(rest).unwrap(), "P1;\nQ1;\n");
    }

    #[test]
    fn builds_out_of_order_or_on_one_table_leave_everything_to_one_session() {
        let held = "A1;\nB1;\n";
        let plan = plan_with(&[]);
        let beyond = Build {
            start: 4,
            end: 99,
            table: ("".into(), "b".into()),
            tablespace: None,
            recurses: false,
        };
        let cases = [
            vec![build(held, "B1;\n", ("", "b"), None), build(held, "A1;\n", ("", "a"), None)],
            vec![build(held, "A1;\n", ("", "a"), None), beyond],
            vec![build(held, "A1;\n", ("", "a"), None), build(held, "B1;\n", ("", "a"), None)],
            vec![],
        ];
        for builds in cases {
            let whole = split(held.as_bytes().to_vec(), &builds, &plan).unwrap_err();
            assert_eq!(whole, held.as_bytes(), "{builds:?}");
        }
    }
}
