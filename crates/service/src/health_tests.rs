use super::*;
use pgvigil_core::records::history::Evidence;

fn verdict(key: &str, passed: bool) -> VerificationRecord {
    VerificationRecord {
        causes: Vec::new(),
        key: key.into(),
        verified_at: Utc::now(),
        passed,
        reasons: if passed { vec![] } else { vec!["SHA-256 differs".into()] },
        untrusted: false,
        restore_secs: 2.5,
        checks_secs: 1.0,
        total_secs: 3.5,
        restored_bytes: None,
        tables_checked: 1,
        object_bytes: None,
        backup_time: None,
        rpo_secs: Some(60),
        evidence: Evidence::default(),
    }
}

#[test]
fn a_passing_drill_of_an_older_backup_does_not_hide_a_failed_newest_one() {
    let h = Health::new(Duration::from_secs(3600), Role::Verify);
    let newest = Utc::now();
    let older = newest - chrono::Duration::hours(6);
    h.record_verification(newest, &verdict("p/new", false));
    h.record_verification(older, &verdict("p/old", true));
    let (ok, reasons) = h.verdict();
    assert!(!ok && reasons[0].contains("p/new"), "{reasons:?}");
    assert!(!reasons[0].contains("SHA-256"), "reasons stay in the record");
    let m = h.metrics();
    assert!(m.contains("pgvigil_last_verification_passed{service=\"verify\"} 0"), "{m}");
    assert!(m.contains("pgvigil_last_verification_rto_seconds{service=\"verify\"} 2.5"), "{m}");
    // A newer backup that passes clears it.
    h.record_verification(newest + chrono::Duration::hours(1), &verdict("p/newer", true));
    assert!(h.verdict().0);
    assert!(h.metrics().contains("pgvigil_last_verification_passed{service=\"verify\"} 1"));
}

#[test]
fn one_failing_database_is_not_hidden_by_the_others() {
    let group = Health::new(Duration::from_secs(3600), Role::Backup);
    let (a, b) = (group.part("app"), group.part("bill\"ing"));
    for _ in 0..3 {
        b.record_failure("database", Some(Duration::from_secs(1)));
        a.record_success(Duration::from_secs(2));
    }
    let (ok, reasons) = group.verdict();
    assert!(
        !ok && reasons.len() == 1 && reasons[0].starts_with("database bill\"ing: 3 consecutive"),
        "{reasons:?}"
    );
    let m = group.metrics();
    assert_eq!(m.matches("# TYPE pgvigil_runs counter").count(), 1, "{m}");
    assert!(
        m.contains("pgvigil_consecutive_failures{service=\"backup\",database=\"bill\\\"ing\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("pgvigil_runs_total{service=\"backup\",database=\"app\",result=\"success\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("pgvigil_failures_total{service=\"backup\",database=\"bill\\\"ing\",cause=\"database\"} 3"),
        "{m}"
    );
    assert!(m.ends_with("# EOF\n"), "{m}");
}
