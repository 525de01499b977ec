//! Anomaly rules: a backup's size compared with the median of recent successful ones, and each
//! table's exact row count compared with the previous backup's — the alarm for an accidental
//! `DELETE` without `WHERE`, a dropped table, a truncated one.

use std::collections::BTreeMap;

/// How loud the warning should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Severity {
    /// Size moved more than 20% from the median.
    Warning,
    /// Empty dump, a drop over 50%, or growth over 100%.
    Critical,
}

/// One detected anomaly.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Anomaly {
    /// Warning or critical.
    pub severity: Severity,
    /// Plain description with the numbers.
    pub message: String,
    /// Relative change from the median (e.g. -0.6 for a 60% drop); `None` for an empty backup.
    pub change: Option<f64>,
}

/// Median of the given sizes (`None` when empty).
pub fn median(sizes: &[u64]) -> Option<u64> {
    if sizes.is_empty() {
        return None;
    }
    let mut s = sizes.to_vec();
    s.sort_unstable();
    let n = s.len();
    Some(if n % 2 == 1 { s[n / 2] } else { s[n / 2 - 1].midpoint(s[n / 2]) })
}

/// Relative change of `size` from the median of `recent`.
pub fn change(size: u64, recent: &[u64]) -> Option<f64> {
    let m = median(recent)?;
    (m > 0).then(|| (size as f64 - m as f64) / m as f64)
}

/// Compares a new backup's size with recent ones.
pub fn assess(size: u64, recent: &[u64]) -> Option<Anomaly> {
    if size == 0 {
        return Some(Anomaly {
            severity: Severity::Critical,
            message: "the backup is empty (0 bytes)".into(),
            change: None,
        });
    }
    let m = median(recent)?;
    let ch = change(size, recent)?;
    let pct = ch * 100.0;
    let (severity, what) = if ch < -0.5 {
        (Severity::Critical, "dropped")
    } else if ch > 1.0 {
        (Severity::Critical, "grew")
    } else if ch.abs() > 0.2 {
        (Severity::Warning, if ch < 0.0 { "shrank" } else { "grew" })
    } else {
        return None;
    };
    Some(Anomaly {
        severity,
        message: format!(
            "backup size {what} {:.0}% from the recent median ({size} bytes vs {m} bytes)",
            pct.abs()
        ),
        change: Some(ch),
    })
}

/// When a table's change is an anomaly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TableRules {
    /// A drop of at least this share of the rows (0.5 = half).
    pub drop_fraction: f64,
    /// Tables with fewer rows before are not judged (scratch and queue tables come and go).
    pub min_rows: u64,
}

impl Default for TableRules {
    fn default() -> Self {
        Self {
            drop_fraction: 0.5,
            min_rows: 100,
        }
    }
}

/// What happened to one table between two backups.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TableAnomaly {
    /// The table, as pg_dump names it.
    pub table: String,
    /// Rows in the previous backup.
    pub before: u64,
    /// Rows now (`None`: the table is gone).
    pub after: Option<u64>,
    /// In plain words, with the numbers.
    pub message: String,
}

/// Tables of `before` (the previous backup) that vanished, became empty, or lost at least the
/// rules' share of their rows in `after`. Growth and new tables are never anomalies here.
pub fn table_anomalies(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, rules: TableRules) -> Vec<TableAnomaly> {
    let mut out = Vec::new();
    for (table, &was) in before {
        if was < rules.min_rows.max(1) {
            continue;
        }
        let now = after.get(table).copied();
        let message = match now {
            None => format!("table {table} is gone (it had {was} rows)"),
            Some(0) => format!("table {table} is empty (it had {was} rows)"),
            Some(n) if (n as f64) <= was as f64 * (1.0 - rules.drop_fraction) => {
                format!(
                    "table {table} lost {:.0}% of its rows ({was} → {n})",
                    (1.0 - n as f64 / was as f64) * 100.0
                )
            }
            Some(_) => continue,
        };
        out.push(TableAnomaly {
            table: table.clone(),
            before: was,
            after: now,
            message,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_changes() {
        let rules = TableRules::default();
        let before: BTreeMap<String, u64> = [("a", 1000), ("b", 1000), ("c", 1000), ("d", 1000), ("tiny", 10), ("e", 1000)]
            .into_iter()
            .map(|(t, n)| (t.to_string(), n))
            .collect();
        let after: BTreeMap<String, u64> = [("a", 1000), ("b", 100), ("c", 0), ("tiny", 0), ("e", 501), ("new", 5)]
            .into_iter()
            .map(|(t, n)| (t.to_string(), n))
            .collect();
        let found = table_anomalies(&before, &after, rules);
        let got: Vec<(&str, Option<u64>)> = found.iter().map(|a| (a.table.as_str(), a.after)).collect();
        assert_eq!(got, [("b", Some(100)), ("c", Some(0)), ("d", None)]);
        assert_eq!(found[0].message, "table b lost 90% of its rows (1000 → 100)");
        assert!(found[2].message.contains("gone"));
        // Exactly half is a drop at the default share; a stricter rule ignores it.
        let half: BTreeMap<String, u64> = [("a".to_string(), 500)].into_iter().collect();
        let one: BTreeMap<String, u64> = [("a".to_string(), 1000)].into_iter().collect();
        assert_eq!(table_anomalies(&one, &half, rules).len(), 1);
        let strict = TableRules {
            drop_fraction: 0.9,
            min_rows: 100,
        };
        assert!(table_anomalies(&one, &half, strict).is_empty());
    }

    #[test]
    fn table() {
        let recent = [100, 100, 110, 90, 100];
        let cases: [(u64, &[u64], Option<Severity>); 11] = [
            (100, &recent, None),
            (119, &recent, None),
            (121, &recent, Some(Severity::Warning)),
            (79, &recent, Some(Severity::Warning)),
            (51, &recent, Some(Severity::Warning)),
            (49, &recent, Some(Severity::Critical)),
            (200, &recent, Some(Severity::Warning)),
            (201, &recent, Some(Severity::Critical)),
            (0, &recent, Some(Severity::Critical)),
            (0, &[], Some(Severity::Critical)),
            (5000, &[], None),
        ];
        for (size, recent, want) in cases {
            assert_eq!(assess(size, recent).map(|a| a.severity), want, "size {size}");
        }
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&[3, 1, 2]), Some(2));
        assert_eq!(median(&[4, 1, 2, 3]), Some(2));
        assert_eq!(median(&[]), None);
        assert_eq!(
            median(&[u64::MAX, u64::MAX - 2]),
            Some(u64::MAX - 1),
            "sizes a sparse file may claim"
        );
    }
}
