//! Every rollout rule: the Fishjam rollout as the seed describes it, each refusal, the state
//! the rollout takes from its targets, stalls, estimates and rollback.

use jiff::{SignedDuration, Timestamp};

use super::*;

fn t0() -> Timestamp {
    Timestamp::from_second(1_780_000_000).unwrap()
}

fn at(mins: i64) -> Timestamp {
    t0() + SignedDuration::from_mins(mins)
}

fn fishjam() -> Rollout {
    let new = NewRollout::new(
        "Fishjam v1.4.0",
        Some("v1.3.2"),
        "v1.4.0",
        &["fishjam-1", "fishjam-2", "fishjam-3"],
    )
    .validate()
    .unwrap();
    Rollout::from_new(1, new, t0())
}

fn counts(pairs: &[(&str, i64)]) -> Counts {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

fn draining(pairs: &[(&str, i64)]) -> Report {
    Report {
        remaining: Some(counts(pairs)),
        ..Report::state(TargetState::Draining)
    }
}

fn kinds(c: &RolloutChange) -> Vec<UpdateKind> {
    c.updates.iter().map(|u| u.kind).collect()
}

#[test]
fn the_seed_rollout_runs_instance_by_instance() {
    let mut r = fishjam();
    assert_eq!(r.state, RolloutState::Pending);
    let c = r
        .report("fishjam-1", &draining(&[("rooms", 2)]), at(1))
        .unwrap();
    assert_eq!(
        kinds(&c),
        [UpdateKind::RolloutStarted, UpdateKind::TargetDraining]
    );
    assert_eq!(r.state, RolloutState::InProgress);
    assert_eq!(r.started_at, Some(at(1)));
    assert_eq!(c.updates[1].body, "fishjam-1 is draining: rooms 2.");
    let c = r
        .report("fishjam-1", &draining(&[("rooms", 0)]), at(3))
        .unwrap();
    assert!(
        c.updates.is_empty() && c.drain,
        "a count report redraws, no entry"
    );
    let c = r
        .report("fishjam-1", &Report::state(TargetState::Drained), at(4))
        .unwrap();
    assert_eq!(c.updates[0].body, "fishjam-1 is drained after 3 min.");
    r.report("fishjam-1", &Report::state(TargetState::Updating), at(5))
        .unwrap();
    let c = r
        .report("fishjam-1", &Report::state(TargetState::Healthy), at(6))
        .unwrap();
    assert_eq!(c.updates[0].body, "fishjam-1 is healthy on v1.4.0.");
    // Two versions side by side.
    assert_eq!(
        r.version_headline(),
        "v1.4.0 on 1 of 3 instances · v1.3.2 on 2"
    );
    r.report(
        "fishjam-2",
        &draining(&[("rooms", 12), ("recordings", 3)]),
        at(7),
    )
    .unwrap();
    assert_eq!(
        r.summary(),
        "1 of 3 targets on v1.4.0, fishjam-2 draining: recordings 3, rooms 12"
    );
    // The team forces fishjam-2 down: a forced marker with the reason.
    let forced = Report {
        forced: true,
        note: Some("a recording hung".into()),
        ..Report::state(TargetState::Updating)
    };
    let c = r.report("fishjam-2", &forced, at(9)).unwrap();
    assert_eq!(kinds(&c), [UpdateKind::TargetForced]);
    assert_eq!(
        c.updates[0].body,
        "fishjam-2 was forced to updating before its drain finished with recordings 3, rooms 12 left."
    );
    let t = r.target("fishjam-2").unwrap();
    assert!(t.forced);
    assert_eq!(t.forced_reason.as_deref(), Some("a recording hung"));
    r.report("fishjam-2", &Report::state(TargetState::Healthy), at(10))
        .unwrap();
    // An idle instance goes straight to drained.
    r.report("fishjam-3", &Report::state(TargetState::Drained), at(11))
        .unwrap();
    let c = r
        .report("fishjam-3", &Report::state(TargetState::Healthy), at(12))
        .unwrap();
    assert_eq!(
        kinds(&c),
        [UpdateKind::TargetHealthy, UpdateKind::RolloutCompleted]
    );
    assert_eq!(r.state, RolloutState::Completed);
    assert_eq!(r.finished_at, Some(at(12)));
    assert_eq!(
        c.updates[1].body,
        "Rollout completed in 11 min: v1.4.0 on all 3 targets."
    );
    assert_eq!(r.version_headline(), "v1.4.0 on 3 of 3 instances");
}

#[test]
fn the_same_report_twice_changes_nothing() {
    let mut r = fishjam();
    r.report("fishjam-1", &draining(&[("rooms", 4)]), at(1))
        .unwrap();
    let before = r.clone();
    let c = r
        .report("fishjam-1", &draining(&[("rooms", 4)]), at(2))
        .unwrap();
    assert_eq!(c, RolloutChange::default());
    assert_eq!(r, before);
    r.report("fishjam-1", &Report::state(TargetState::Drained), at(3))
        .unwrap();
    let before = r.clone();
    let c = r
        .report("fishjam-1", &Report::state(TargetState::Drained), at(4))
        .unwrap();
    assert_eq!(c, RolloutChange::default());
    assert_eq!(r, before);
}

#[test]
fn out_of_order_reports_are_refused_with_the_reason() {
    let mut r = fishjam();
    let e = r
        .report("fishjam-1", &Report::state(TargetState::Healthy), at(1))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "fishjam-1 has not drained yet: report drained first, or send forced: true to take it down anyway"
    );
    r.report("fishjam-1", &draining(&[("rooms", 3)]), at(1))
        .unwrap();
    let e = r
        .report("fishjam-1", &Report::state(TargetState::Updating), at(2))
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("fishjam-1 is still draining (rooms 3 left)"),
        "{e}"
    );
    r.report("fishjam-1", &Report::state(TargetState::Drained), at(3))
        .unwrap();
    let e = r
        .report("fishjam-1", &draining(&[("rooms", 1)]), at(4))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "fishjam-1 is already drained; it cannot go back to draining"
    );
    let e = r
        .report("fishjam-1", &Report::state(TargetState::Pending), at(4))
        .unwrap_err();
    assert!(e.to_string().contains("cannot go back to pending"), "{e}");
    // Non-zero counts belong to draining (or failed).
    let e = r
        .report(
            "fishjam-2",
            &Report {
                remaining: Some(counts(&[("rooms", 2)])),
                ..Report::state(TargetState::Drained)
            },
            at(4),
        )
        .unwrap_err();
    assert!(
        matches!(e, DomainError::Invalid(ref v) if v.field == "remaining"),
        "{e:?}"
    );
}

#[test]
fn report_fields_are_checked() {
    let mut r = fishjam();
    let field = |e: DomainError| match e {
        DomainError::Invalid(v) => v.field,
        other => panic!("{other:?}"),
    };
    let e = r
        .report("fishjam-1", &draining(&[("rooms", -1)]), at(1))
        .unwrap_err();
    assert_eq!(field(e), "remaining");
    let e = r
        .report("fishjam-1", &draining(&[("two words", 1)]), at(1))
        .unwrap_err();
    assert_eq!(field(e), "remaining");
    let many: Vec<(String, i64)> = (0..11).map(|i| (format!("l{i}"), 1)).collect();
    let report = Report {
        remaining: Some(many.into_iter().collect()),
        ..Report::state(TargetState::Draining)
    };
    assert_eq!(
        field(r.report("fishjam-1", &report, at(1)).unwrap_err()),
        "remaining"
    );
    let report = Report {
        version: Some("v".repeat(65)),
        ..Report::state(TargetState::Draining)
    };
    assert_eq!(
        field(r.report("fishjam-1", &report, at(1)).unwrap_err()),
        "version"
    );
    assert_eq!(r, fishjam(), "a refused report changes nothing");
}

#[test]
fn a_failed_target_fails_the_rollout_once_all_are_settled_and_can_be_retried() {
    let mut r = fishjam();
    r.report("fishjam-1", &Report::state(TargetState::Drained), at(1))
        .unwrap();
    r.report("fishjam-1", &Report::state(TargetState::Healthy), at(2))
        .unwrap();
    r.report("fishjam-2", &draining(&[("rooms", 3)]), at(3))
        .unwrap();
    let c = r
        .report(
            "fishjam-2",
            &Report {
                note: Some("crashed".into()),
                ..Report::state(TargetState::Failed)
            },
            at(4),
        )
        .unwrap();
    assert_eq!(kinds(&c), [UpdateKind::TargetFailed]);
    assert_eq!(
        c.updates[0].body,
        "fishjam-2 failed while draining with rooms 3 left."
    );
    assert_eq!(c.updates[0].note.as_deref(), Some("crashed"));
    assert_eq!(
        r.state,
        RolloutState::InProgress,
        "fishjam-3 is still to go"
    );
    let e = r
        .report("fishjam-2", &Report::state(TargetState::Updating), at(5))
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("fishjam-2 failed; retry it first"),
        "{e}"
    );
    r.report("fishjam-3", &Report::state(TargetState::Drained), at(5))
        .unwrap();
    let c = r
        .report("fishjam-3", &Report::state(TargetState::Healthy), at(6))
        .unwrap();
    assert_eq!(
        kinds(&c),
        [UpdateKind::TargetHealthy, UpdateKind::RolloutFailed]
    );
    assert_eq!(r.state, RolloutState::Failed);
    assert_eq!(
        c.updates[1].body,
        "Rollout failed: 2 of 3 targets healthy; failed: fishjam-2."
    );
    assert!(r.allowed_actions().contains(&RolloutAction::Abort));
    let e = r.retry("fishjam-1", None, at(7)).unwrap_err();
    assert!(
        e.to_string()
            .contains("only a failed target can be retried")
    );
    let c = r.retry("fishjam-2", Some("fixed the disk"), at(7)).unwrap();
    assert_eq!(kinds(&c), [UpdateKind::TargetRetried]);
    assert_eq!(r.state, RolloutState::InProgress);
    assert_eq!(r.finished_at, None);
    let t = r.target("fishjam-2").unwrap();
    assert_eq!((t.state, t.attempts), (TargetState::Pending, 2));
    r.report("fishjam-2", &Report::state(TargetState::Drained), at(8))
        .unwrap();
    r.report("fishjam-2", &Report::state(TargetState::Healthy), at(9))
        .unwrap();
    assert_eq!(r.state, RolloutState::Completed);
}

#[test]
fn pause_holds_the_state_and_stops_the_stall_clock() {
    let mut r = fishjam();
    r.report("fishjam-1", &draining(&[("rooms", 3)]), at(0))
        .unwrap();
    assert!(!r.is_stalled(at(9)));
    assert!(r.is_stalled(at(10)));
    r.apply(RolloutAction::Pause, None, at(5)).unwrap();
    assert_eq!(r.state, RolloutState::Paused);
    assert!(!r.is_stalled(at(60)), "no stall clock while paused");
    assert_eq!(r.check_stall(at(60)), RolloutChange::default());
    // Reports are still accepted and do not unpause.
    r.report("fishjam-1", &Report::state(TargetState::Drained), at(61))
        .unwrap();
    assert_eq!(r.state, RolloutState::Paused);
    assert_eq!(
        r.allowed_actions(),
        [RolloutAction::Resume, RolloutAction::Abort]
    );
    r.apply(RolloutAction::Resume, None, at(70)).unwrap();
    assert_eq!(r.state, RolloutState::InProgress);
    assert!(
        !r.is_stalled(at(79)),
        "the clock starts again at the resume"
    );
    assert!(r.is_stalled(at(80)));
    let e = r.apply(RolloutAction::Resume, None, at(80)).unwrap_err();
    assert!(e.to_string().contains("not paused"));
}

#[test]
fn a_stall_is_announced_once_and_progress_clears_it() {
    let mut r = fishjam();
    r.report("fishjam-1", &draining(&[("rooms", 3)]), at(0))
        .unwrap();
    assert_eq!(r.stall_due(), Some(at(10)));
    assert_eq!(r.check_stall(at(9)), RolloutChange::default());
    // Flat counts are no progress; the deadline does not slide.
    r.report(
        "fishjam-1",
        &draining(&[("rooms", 3), ("recordings", 1)]),
        at(5),
    )
    .unwrap();
    let c = r.check_stall(at(10));
    assert_eq!(kinds(&c), [UpdateKind::RolloutStalled]);
    assert_eq!(
        c.updates[0].body,
        "Rollout stalled: no progress for 10 min. Waiting on fishjam-1 draining (recordings 1, rooms 3)."
    );
    assert_eq!(
        r.check_stall(at(11)),
        RolloutChange::default(),
        "announced once"
    );
    assert_eq!(r.stall_due(), None);
    // A count going down is progress: the stall clears, the deadline slides.
    r.report(
        "fishjam-1",
        &draining(&[("rooms", 2), ("recordings", 1)]),
        at(12),
    )
    .unwrap();
    assert!(!r.is_stalled(at(21)));
    assert_eq!(r.stalled_at, None);
    assert_eq!(r.stall_due(), Some(at(22)));
    assert!(r.is_stalled(at(22)));
}

#[test]
fn a_steady_drain_is_estimated_and_a_flat_one_is_not() {
    let mut r = fishjam();
    // 12 rooms closing one every 2 minutes: drained at minute 24.
    r.report("fishjam-1", &draining(&[("rooms", 12)]), at(0))
        .unwrap();
    for m in 1..=6 {
        let report = draining(&[("rooms", 12 - m)]);
        r.report("fishjam-1", &report, at(2 * m)).unwrap();
        r.targets[0].last_report_at = Some(at(2 * m));
    }
    let e = r.targets[0].drain_estimate().unwrap();
    let truth = at(24);
    let error = (e.at.as_second() - truth.as_second()).abs() as f64;
    assert!(error <= 0.1 * 24.0 * 60.0, "{e:?}");
    assert_eq!(e.label, "rooms");
    assert!((e.per_minute - 0.5).abs() < 0.01, "{e:?}");
    // The same counts for the whole window: no estimate.
    r.targets[0].last_report_at = Some(at(12 + 16));
    assert_eq!(r.targets[0].drain_estimate(), None);
    // Rising counts: no estimate.
    let mut r = fishjam();
    r.report("fishjam-1", &draining(&[("rooms", 2)]), at(0))
        .unwrap();
    r.report("fishjam-1", &draining(&[("rooms", 4)]), at(1))
        .unwrap();
    r.targets[0].last_report_at = Some(at(1));
    assert_eq!(r.targets[0].drain_estimate(), None);
}

#[test]
fn a_silent_moving_target_is_stale() {
    let mut r = fishjam();
    r.report("fishjam-1", &draining(&[("rooms", 1)]), at(0))
        .unwrap();
    r.targets[0].last_report_at = Some(at(0));
    let stale = r.stale_after;
    assert!(!r.targets[0].is_stale(stale, at(2)));
    assert!(r.targets[0].is_stale(stale, at(3)));
    assert!(
        !r.targets[1].is_stale(stale, at(30)),
        "pending targets are not expected to report"
    );
}

#[test]
fn rollback_reverses_the_targets_on_the_new_version() {
    let mut r = fishjam();
    let e = r.rollback(None, at(0)).unwrap_err();
    assert_eq!(e.to_string(), "cannot roll back: no target runs v1.4.0 yet");
    r.report("fishjam-1", &Report::state(TargetState::Drained), at(1))
        .unwrap();
    r.report("fishjam-1", &Report::state(TargetState::Healthy), at(2))
        .unwrap();
    assert!(r.allowed_actions().contains(&RolloutAction::Rollback));
    let (c, reverse) = r.rollback(Some("errors on v1.4.0"), at(3)).unwrap();
    assert_eq!(kinds(&c), [UpdateKind::RolloutRolledBack]);
    assert_eq!(c.updates[0].body, "Rolling back to v1.3.2 on fishjam-1.");
    assert_eq!(r.state, RolloutState::Aborted);
    assert_eq!(reverse.from_version.as_deref(), Some("v1.4.0"));
    assert_eq!(reverse.to_version, "v1.3.2");
    assert_eq!(reverse.targets, ["fishjam-1"]);
    assert_eq!(reverse.rollback_of, Some(1));
    assert_eq!(reverse.clone().validate().unwrap(), reverse);
    let mut no_from = Rollout::from_new(
        2,
        NewRollout::new("x", None, "v2", &["a"]).validate().unwrap(),
        t0(),
    );
    let e = no_from.rollback(None, at(0)).unwrap_err();
    assert!(e.to_string().contains("from_version"));
}

#[test]
fn aborted_rollouts_take_no_more_reports() {
    let mut r = fishjam();
    r.apply(RolloutAction::Abort, Some("wrong build"), at(1))
        .unwrap();
    assert_eq!(r.state, RolloutState::Aborted);
    let e = r
        .report("fishjam-1", &draining(&[("rooms", 1)]), at(2))
        .unwrap_err();
    assert!(e.to_string().contains("aborted"), "{e}");
    let e = r
        .report("fishjam-1", &Report::state(TargetState::Pending), at(2))
        .unwrap_err();
    assert!(e.to_string().contains("aborted"), "{e}");
    assert!(r.allowed_actions().is_empty());
}

#[test]
fn private_names_are_positions() {
    let mut r = fishjam();
    r.public_names = false;
    let c = r
        .report("fishjam-2", &draining(&[("rooms", 1)]), at(1))
        .unwrap();
    assert_eq!(c.updates[1].body, "instance 2 of 3 is draining: rooms 1.");
    assert_eq!(c.updates[1].target.as_deref(), Some("fishjam-2"));
}

#[test]
fn maintainers_are_offered_exactly_the_legal_reports() {
    let mut r = fishjam();
    assert_eq!(
        r.allowed_reports("fishjam-1"),
        [
            (TargetState::Draining, false),
            (TargetState::Drained, false),
            (TargetState::Updating, true),
            (TargetState::Healthy, true),
            (TargetState::Failed, false),
        ]
    );
    r.report("fishjam-1", &Report::state(TargetState::Drained), at(1))
        .unwrap();
    assert_eq!(
        r.allowed_reports("fishjam-1"),
        [
            (TargetState::Updating, false),
            (TargetState::Healthy, false),
            (TargetState::Failed, false),
        ]
    );
}

#[test]
fn new_rollouts_are_checked() {
    let field = |n: NewRollout| n.validate().unwrap_err().field;
    assert_eq!(field(NewRollout::new("x", None, "v1", &[])), "targets");
    assert_eq!(
        field(NewRollout::new("x", None, "v1", &["a", "a"])),
        "targets"
    );
    assert_eq!(
        field(NewRollout::new("x", None, "v 1", &["a"])),
        "to_version"
    );
    assert_eq!(field(NewRollout::new("", None, "v1", &["a"])), "title");
    let mut n = NewRollout::new("x", None, "v1", &["a"]);
    n.progress_deadline = SignedDuration::from_secs(5);
    assert_eq!(field(n), "progress_deadline_seconds");
    let ok = NewRollout::new("x", Some(" "), "v1", &[" fishjam-1.eu ", "ñandú_2"])
        .validate()
        .unwrap();
    assert_eq!(ok.targets, ["fishjam-1.eu", "ñandú_2"]);
    assert_eq!(ok.from_version, None);
}

#[test]
fn a_rolled_back_rollout_takes_no_more_reports_or_retries() {
    let mut r = fishjam();
    r.report("fishjam-1", &Report::state(TargetState::Drained), at(1))
        .unwrap();
    r.report("fishjam-1", &Report::state(TargetState::Healthy), at(2))
        .unwrap();
    r.report("fishjam-2", &Report::state(TargetState::Failed), at(3))
        .unwrap();
    r.rollback(None, at(4)).unwrap();
    r.rolled_back_by = Some(2);
    let e = r.retry("fishjam-2", None, at(5)).unwrap_err();
    assert!(e.to_string().contains("rolled back"), "{e}");
    let e = r
        .report("fishjam-3", &Report::state(TargetState::Drained), at(5))
        .unwrap_err();
    assert!(e.to_string().contains("rolled back"), "{e}");
    assert!(r.allowed_actions().is_empty());
}

#[test]
fn names_made_private_later_are_hidden_in_old_texts() {
    let mut r = Rollout::from_new(
        1,
        NewRollout::new("x", None, "v2", &["node-1", "node-10"])
            .validate()
            .unwrap(),
        t0(),
    );
    let c = r
        .report("node-10", &draining(&[("rooms", 1)]), at(1))
        .unwrap();
    let body = c.updates[1].body.clone();
    assert_eq!(r.public_text(&body), body);
    let c = r
        .edit(
            &RolloutEdit {
                public_names: Some(false),
                ..RolloutEdit::default()
            },
            at(2),
        )
        .unwrap();
    assert!(
        c.redraw && !c.drain,
        "an edit redraws Discord's live message"
    );
    assert_eq!(
        r.public_text(&body),
        "instance 2 of 2 is draining: rooms 1."
    );
}

#[test]
fn the_transition_table_covers_every_pair_of_states() {
    use Move::*;
    use TargetState::*;
    // Rows: from; columns: to, in the order of TargetState::ALL
    // (pending, draining, drained, updating, healthy, failed).
    let table: [(TargetState, [Move; 6]); 6] = [
        (
            Pending,
            [Stay, Forward, Forward, SkipsDrain, SkipsDrain, Forward],
        ),
        (
            Draining,
            [
                BackToPending,
                Stay,
                Forward,
                SkipsDrain,
                SkipsDrain,
                Forward,
            ],
        ),
        (
            Drained,
            [BackToPending, Backwards, Stay, Forward, Forward, Forward],
        ),
        (
            Updating,
            [BackToPending, Backwards, Backwards, Stay, Forward, Forward],
        ),
        (
            Healthy,
            [
                BackToPending,
                Backwards,
                Backwards,
                Backwards,
                Stay,
                Forward,
            ],
        ),
        (
            Failed,
            [
                RetryFirst, RetryFirst, RetryFirst, RetryFirst, RetryFirst, Stay,
            ],
        ),
    ];
    for (from, row) in table {
        for (to, expected) in TargetState::ALL.into_iter().zip(row) {
            assert_eq!(target_move(from, to), expected, "{from:?} → {to:?}");
        }
    }
}

/// `Rollout::report` does what the table says for every pair: a move the table allows (or
/// allows when forced, and the report is forced) is accepted; any other is refused, changing
/// nothing.
#[test]
fn reports_follow_the_transition_table() {
    for from in TargetState::ALL {
        for to in TargetState::ALL {
            for forced in [false, true] {
                let mut r = fishjam();
                r.report("fishjam-2", &Report::state(TargetState::Draining), at(0))
                    .unwrap();
                r.targets[0].state = from;
                let before = r.clone();
                let report = Report {
                    forced,
                    ..Report::state(to)
                };
                let outcome = r.report("fishjam-1", &report, at(1));
                let allowed = match target_move(from, to) {
                    Move::Stay | Move::Forward => true,
                    Move::SkipsDrain => forced,
                    Move::RetryFirst | Move::BackToPending | Move::Backwards => false,
                };
                assert_eq!(
                    outcome.is_ok(),
                    allowed,
                    "{from:?} → {to:?} (forced: {forced}): {outcome:?}"
                );
                if allowed {
                    assert_eq!(r.targets[0].state, to, "{from:?} → {to:?}");
                } else {
                    assert_eq!(r, before, "a refused report changes nothing");
                }
            }
        }
    }
}
