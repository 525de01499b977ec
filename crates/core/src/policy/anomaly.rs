//! Size anomaly rules: a backup compared with the median of recent successful ones.

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
    Some(if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2 })
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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
