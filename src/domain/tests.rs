//! Every lifecycle rule: each legal transition with the update it writes, each illegal one with
//! the reason it gives.

use jiff::{SignedDuration, Timestamp};

use super::*;

fn t(minutes: i64) -> Timestamp {
    Timestamp::from_second(1_732_000_000).unwrap() + SignedDuration::from_mins(minutes)
}

fn step(position: i64, state: StepState) -> Step {
    Step {
        id: Some(position),
        position,
        title: format!("Step {position}"),
        description: None,
        state,
        started_at: (state != StepState::Pending).then(|| t(0)),
        finished_at: matches!(
            state,
            StepState::Done | StepState::Failed | StepState::Skipped
        )
        .then(|| t(1)),
        note: None,
        attempts: i64::from(state != StepState::Pending),
    }
}

/// A window in `state` with steps in the given states.
fn window(state: WindowState, steps: &[StepState]) -> Maintenance {
    let public = state != WindowState::Draft;
    Maintenance {
        id: 1,
        title: "Database cluster migration".into(),
        description: String::new(),
        state,
        impact: Impact::Minor,
        starts_at: (state != WindowState::Planned).then(|| t(60)),
        ends_at: (state != WindowState::Planned).then(|| t(120)),
        schedule_hint: (state == WindowState::Planned).then(|| "this Sunday".to_owned()),
        started_at: matches!(
            state,
            WindowState::InProgress | WindowState::Completed | WindowState::Cancelled
        )
        .then(|| t(60)),
        finished_at: matches!(state, WindowState::Completed | WindowState::Cancelled)
            .then(|| t(100)),
        announced_at: public.then(|| t(0)),
        created_at: t(0),
        updated_at: t(0),
        version: 3,
        components: Vec::new(),
        steps: steps
            .iter()
            .enumerate()
            .map(|(i, s)| step(i as i64 + 1, *s))
            .collect(),
        automation: Automation::default(),
        reminded: Vec::new(),
        overran_at: None,
        sequence: 0,
    }
}

fn rule_error(result: Result<Vec<NewUpdate>, DomainError>) -> String {
    match result {
        Err(DomainError::Rule(RuleError(message))) => message,
        other => panic!("expected a rule error, got {other:?}"),
    }
}

fn one_update(result: Result<Vec<NewUpdate>, DomainError>) -> NewUpdate {
    let mut updates = result.expect("legal transition");
    assert_eq!(updates.len(), 1, "{updates:?}");
    updates.remove(0)
}

use WindowState::*;

#[test]
fn announce_makes_a_draft_public() {
    let mut w = window(Draft, &[]);
    w.starts_at = None;
    w.ends_at = None;
    w.schedule_hint = Some("this Sunday or within two weeks".into());
    let u = one_update(w.announce(t(5)));
    assert_eq!(w.state, Planned);
    assert_eq!(w.announced_at, Some(t(5)));
    assert_eq!(u.kind, UpdateKind::Announced);
    assert!(
        u.body
            .contains("No date yet: this Sunday or within two weeks"),
        "{}",
        u.body
    );

    let mut w = window(Draft, &[]);
    let u = one_update(w.announce(t(5)));
    assert_eq!(w.state, Scheduled);
    assert!(u.body.contains("Scheduled for"), "{}", u.body);
}

#[test]
fn announce_is_refused_once_public() {
    for state in [Planned, Scheduled, InProgress, Completed, Cancelled] {
        let mut w = window(state, &[]);
        let before = w.clone();
        let message = rule_error(w.announce(t(5)));
        assert!(
            message.starts_with("cannot announce"),
            "{state:?}: {message}"
        );
        assert_eq!(w, before, "a refused change changes nothing");
    }
}

#[test]
fn start_from_planned_or_scheduled() {
    for state in [Planned, Scheduled] {
        let mut w = window(state, &[StepState::Pending; 6]);
        let u = one_update(w.start(t(61)));
        assert_eq!(w.state, InProgress);
        assert_eq!(w.started_at, Some(t(61)));
        assert_eq!(u.kind, UpdateKind::Started);
        assert!(u.body.contains("6 steps"), "{}", u.body);
    }
}

#[test]
fn start_is_refused_elsewhere() {
    let cases = [
        (Draft, "announce it first"),
        (InProgress, "already in progress"),
        (Completed, "already completed"),
        (Cancelled, "was cancelled"),
    ];
    for (state, why) in cases {
        let mut w = window(state, &[]);
        let message = rule_error(w.start(t(61)));
        assert!(message.contains(why), "{state:?}: {message}");
        assert_eq!(w.state, state);
    }
}

#[test]
fn complete_from_in_progress_skips_what_never_ran() {
    use StepState::*;
    let mut w = window(WindowState::InProgress, &[Done, Failed, Pending, Pending]);
    let u = one_update(w.complete(Some("Good enough for today."), t(90)));
    assert_eq!(w.state, Completed);
    assert_eq!(w.finished_at, Some(t(90)));
    assert_eq!(
        w.steps.iter().map(|s| s.state).collect::<Vec<_>>(),
        [Done, Failed, Skipped, Skipped]
    );
    assert_eq!(u.kind, UpdateKind::Completed);
    assert!(u.body.contains("1 of 4 steps done"), "{}", u.body);
    assert!(u.body.contains("Not run: steps 3 and 4"), "{}", u.body);
    assert_eq!(u.note.as_deref(), Some("Good enough for today."));
}

#[test]
fn complete_is_refused_while_a_step_runs_or_before_start() {
    let mut w = window(InProgress, &[StepState::Done, StepState::InProgress]);
    let message = rule_error(w.complete(None, t(90)));
    assert!(message.contains("step 2"), "{message}");
    assert!(message.contains("still in progress"), "{message}");
    for state in [Draft, Planned, Scheduled] {
        let mut w = window(state, &[]);
        assert!(rule_error(w.complete(None, t(90))).contains("has not started"));
    }
    for state in [Completed, Cancelled] {
        let mut w = window(state, &[]);
        assert!(rule_error(w.complete(None, t(90))).starts_with("cannot complete"));
    }
}

#[test]
fn cancel_from_any_open_state() {
    for state in [Planned, Scheduled] {
        let mut w = window(state, &[StepState::Pending]);
        let u = one_update(w.cancel(Some("Postponed to next month"), t(30)));
        assert_eq!(w.state, Cancelled);
        assert_eq!(u.kind, UpdateKind::Cancelled);
        assert_eq!(u.note.as_deref(), Some("Postponed to next month"));
        assert_eq!(
            w.steps[0].state,
            StepState::Pending,
            "steps that never ran stay pending"
        );
    }
    // A draft was never public: cancelling it writes no public update.
    let mut w = window(Draft, &[]);
    assert_eq!(w.cancel(None, t(30)).unwrap(), Vec::new());
    assert_eq!(w.state, Cancelled);
    assert!(!w.is_public());
}

#[test]
fn cancel_in_progress_closes_open_steps() {
    use StepState::*;
    let mut w = window(WindowState::InProgress, &[Done, InProgress, Pending]);
    let u = one_update(w.cancel(None, t(80)));
    assert_eq!(
        w.steps.iter().map(|s| s.state).collect::<Vec<_>>(),
        [Done, Skipped, Skipped]
    );
    assert!(w.steps[1].note.as_deref().unwrap().contains("Interrupted"));
    assert!(u.body.contains("1 of 3 steps done"), "{}", u.body);
}

#[test]
fn cancel_is_refused_when_finished() {
    for state in [Completed, Cancelled] {
        let mut w = window(state, &[]);
        assert!(rule_error(w.cancel(None, t(1))).starts_with("cannot cancel"));
    }
}

#[test]
fn reschedule_moves_between_planned_and_scheduled() {
    let mut w = window(Planned, &[]);
    let fixed = Schedule::Fixed {
        starts_at: t(600),
        ends_at: Some(t(720)),
    };
    let u = one_update(w.reschedule(fixed.clone(), t(10)));
    assert_eq!(w.state, Scheduled);
    assert_eq!(w.starts_at, Some(t(600)));
    assert_eq!(w.schedule_hint, None);
    assert_eq!(u.kind, UpdateKind::Rescheduled);
    assert!(
        u.body.starts_with("Date set."),
        "the first date: {}",
        u.body
    );
    let later = Schedule::Fixed {
        starts_at: t(660),
        ends_at: Some(t(720)),
    };
    let u = one_update(w.reschedule(later, t(10)));
    assert!(
        u.body.starts_with("Rescheduled."),
        "a date moved: {}",
        u.body
    );

    let u = one_update(w.reschedule(
        Schedule::Tentative {
            hint: Some("next week".into()),
        },
        t(11),
    ));
    assert_eq!(w.state, Planned);
    assert_eq!((w.starts_at, w.ends_at), (None, None));
    assert!(u.body.contains("next week"));

    // The same schedule again is no change and writes nothing.
    assert_eq!(
        w.reschedule(
            Schedule::Tentative {
                hint: Some("next week".into())
            },
            t(12)
        )
        .unwrap(),
        Vec::new()
    );
}

#[test]
fn reschedule_a_draft_writes_no_update() {
    let mut w = window(Draft, &[]);
    let updates = w
        .reschedule(Schedule::Tentative { hint: None }, t(1))
        .unwrap();
    assert!(updates.is_empty());
    assert_eq!(w.state, Draft);
    assert_eq!(w.starts_at, None);
}

#[test]
fn reschedule_in_progress_moves_only_the_end() {
    let mut w = window(InProgress, &[]);
    let u = one_update(w.reschedule(
        Schedule::Fixed {
            starts_at: t(60),
            ends_at: Some(t(180)),
        },
        t(100),
    ));
    assert_eq!(w.ends_at, Some(t(180)));
    assert!(u.body.contains("Expected end moved"), "{}", u.body);
    let message = rule_error(w.reschedule(
        Schedule::Fixed {
            starts_at: t(70),
            ends_at: Some(t(180)),
        },
        t(101),
    ));
    assert!(message.contains("cannot move the start"), "{message}");
    let message = rule_error(w.reschedule(Schedule::Tentative { hint: None }, t(101)));
    assert!(message.contains("cannot remove the date"), "{message}");
}

#[test]
fn reschedule_is_refused_when_finished() {
    for state in [Completed, Cancelled] {
        let mut w = window(state, &[]);
        let message = rule_error(w.reschedule(Schedule::Tentative { hint: None }, t(1)));
        assert!(message.starts_with("cannot reschedule"), "{message}");
    }
}

#[test]
fn schedule_validation() {
    assert_eq!(
        Schedule::from_parts(Some(t(10)), Some(t(5)), None)
            .unwrap_err()
            .field,
        "ends_at"
    );
    assert_eq!(
        Schedule::from_parts(None, Some(t(5)), None)
            .unwrap_err()
            .field,
        "ends_at"
    );
    assert_eq!(
        Schedule::from_parts(None, None, Some("  ")).unwrap(),
        Schedule::Tentative { hint: None }
    );
}

/// Each step state × action while the window runs: (from, action, allowed, resulting state).
#[test]
fn every_step_transition() {
    use StepAction as A;
    use StepState::*;
    let table = [
        (Pending, A::Start, Some(InProgress)),
        (Pending, A::Done, None),
        (Pending, A::Fail, None),
        (Pending, A::Skip, Some(Skipped)),
        (InProgress, A::Start, None),
        (InProgress, A::Done, Some(Done)),
        (InProgress, A::Fail, Some(Failed)),
        (InProgress, A::Skip, Some(Skipped)),
        (Done, A::Start, None),
        (Done, A::Done, None),
        (Done, A::Fail, None),
        (Done, A::Skip, None),
        (Failed, A::Start, Some(InProgress)),
        (Failed, A::Done, None),
        (Failed, A::Fail, None),
        (Failed, A::Skip, Some(Skipped)),
        (Skipped, A::Start, None),
        (Skipped, A::Done, None),
        (Skipped, A::Fail, None),
        (Skipped, A::Skip, None),
    ];
    for (from, action, to) in table {
        // The step under test is the first, so ordering rules do not interfere.
        let mut w = window(WindowState::InProgress, &[from, Pending]);
        let result = w.step(1, action, Some("a note"), t(70));
        match to {
            Some(to) => {
                let u = one_update(result);
                assert_eq!(w.steps[0].state, to, "{from:?} {action:?}");
                assert_eq!(u.step_position, Some(1));
                assert_eq!(u.note.as_deref(), Some("a note"));
                assert_eq!(w.steps[0].note.as_deref(), Some("a note"));
                let kind = match action {
                    A::Start => UpdateKind::StepStarted,
                    A::Done => UpdateKind::StepDone,
                    A::Fail => UpdateKind::StepFailed,
                    A::Skip => UpdateKind::StepSkipped,
                };
                assert_eq!(u.kind, kind);
                if to == InProgress {
                    assert_eq!(w.steps[0].started_at, Some(t(70)));
                    assert_eq!(w.steps[0].finished_at, None);
                } else {
                    assert_eq!(w.steps[0].finished_at, Some(t(70)));
                }
            }
            None => {
                let before = w.clone();
                let message = rule_error(result);
                assert!(message.contains("step 1"), "{from:?} {action:?}: {message}");
                assert_eq!(w, before);
            }
        }
    }
}

#[test]
fn retry_counts_attempts() {
    let mut w = window(InProgress, &[StepState::Failed]);
    let u = one_update(w.step(1, StepAction::Start, None, t(70)));
    assert!(u.body.contains("restarted (retry)"), "{}", u.body);
    assert_eq!(w.steps[0].attempts, 2);
}

#[test]
fn steps_run_in_order_one_at_a_time() {
    use StepState::*;
    let mut w = window(WindowState::InProgress, &[Done, Pending, Pending]);
    let message = rule_error(w.step(3, StepAction::Start, None, t(70)));
    assert!(message.contains("step 2 is not done yet"), "{message}");

    let mut w = window(WindowState::InProgress, &[InProgress, Pending]);
    let message = rule_error(w.step(2, StepAction::Start, None, t(70)));
    assert!(message.contains("while step 1 is in progress"), "{message}");

    let mut w = window(WindowState::InProgress, &[Failed, Pending]);
    let message = rule_error(w.step(2, StepAction::Start, None, t(70)));
    assert!(
        message.contains("step 1 is failed; retry or skip it first"),
        "{message}"
    );

    let mut w = window(WindowState::InProgress, &[Skipped, Done, Pending]);
    one_update(w.step(3, StepAction::Start, None, t(70)));

    // Skipping a later pending step while another runs is a plan change, and allowed.
    let mut w = window(WindowState::InProgress, &[InProgress, Pending, Pending]);
    one_update(w.step(3, StepAction::Skip, None, t(70)));
}

#[test]
fn steps_need_a_running_window() {
    for state in [Draft, Planned, Scheduled] {
        let mut w = window(state, &[StepState::Pending]);
        let message = rule_error(w.step(1, StepAction::Start, None, t(1)));
        assert!(message.contains("has not started"), "{state:?}: {message}");
    }
    for state in [Completed, Cancelled] {
        let mut w = window(state, &[StepState::Done]);
        let message = rule_error(w.step(1, StepAction::Skip, None, t(1)));
        assert!(
            message.starts_with("cannot change a step"),
            "{state:?}: {message}"
        );
    }
    let mut w = window(InProgress, &[StepState::Pending]);
    let message = rule_error(w.step(7, StepAction::Start, None, t(1)));
    assert_eq!(message, "there is no step 7; the plan has 1 step");
}

#[test]
fn progress_text_in_step_updates() {
    let mut w = window(
        InProgress,
        &[StepState::Done, StepState::InProgress, StepState::Pending],
    );
    let u = one_update(w.step(2, StepAction::Done, None, t(70)));
    assert_eq!(u.body, "Step 2 of 3 done: Step 2 (2 of 3 done)");
}

#[test]
fn free_updates_need_a_public_window() {
    let w = window(Draft, &[]);
    assert!(rule_error(w.post_update("hello", t(1))).contains("announce the window first"));
    for state in [Planned, Scheduled, InProgress, Completed, Cancelled] {
        let w = window(state, &[]);
        let u = one_update(w.post_update("  Follow-up: all good.  ", t(1)));
        assert_eq!(u.kind, UpdateKind::Note);
        assert_eq!(u.body, "Follow-up: all good.");
    }
    let w = window(InProgress, &[]);
    assert!(matches!(
        w.post_update("   ", t(1)),
        Err(DomainError::Invalid(ValidationError { field: "body", .. }))
    ));
}

#[test]
fn notes_and_titles_are_validated() {
    let mut w = window(InProgress, &[StepState::InProgress]);
    let long = "x".repeat(limits::NOTE_MAX + 1);
    assert!(matches!(
        w.step(1, StepAction::Done, Some(&long), t(1)),
        Err(DomainError::Invalid(ValidationError { field: "note", .. }))
    ));
    assert_eq!(w.steps[0].state, StepState::InProgress);
    let new = NewMaintenance {
        title: "  ".into(),
        description: String::new(),
        impact: Impact::None,
        schedule: Schedule::Tentative { hint: None },
        component_ids: vec![],
        steps: vec![],
        automation: Default::default(),
    };
    assert_eq!(new.validate().unwrap_err().field, "title");
    let new = NewComponent {
        slug: "Bad Slug".into(),
        name: "API".into(),
        description: None,
        group_name: None,
    };
    assert_eq!(new.validate().unwrap_err().field, "slug");
}

#[test]
fn overrunning_is_derived_from_the_expected_end() {
    let w = window(InProgress, &[]);
    assert!(!w.is_overrunning(t(119)));
    assert!(w.is_overrunning(t(121)));
    assert!(!window(Completed, &[]).is_overrunning(t(500)));
}

#[test]
fn component_status_follows_windows() {
    let component = Component {
        id: 9,
        slug: "api".into(),
        name: "API".into(),
        description: None,
        group_name: None,
        position: 1,
        created_at: jiff::Timestamp::UNIX_EPOCH,
        manual: None,
    };
    let mut running = window(InProgress, &[StepState::Done]);
    running.components = vec![component.clone()];
    let mut upcoming = window(Scheduled, &[]);
    upcoming.components = vec![component.clone()];
    assert_eq!(
        ComponentStatus::of(9, &[upcoming.clone()], &[]),
        ComponentStatus::Operational
    );
    assert_eq!(
        ComponentStatus::of(9, &[upcoming, running.clone()], &[]),
        ComponentStatus::UnderMaintenance
    );
    assert_eq!(
        ComponentStatus::of(1, &[running.clone()], &[]),
        ComponentStatus::Operational
    );
    running.steps[0].state = StepState::Failed;
    assert_eq!(
        ComponentStatus::of(9, &[running], &[]),
        ComponentStatus::Degraded
    );
}

#[test]
fn announce_and_start_carry_a_checked_note() {
    let mut w = window(Draft, &[]);
    let updates = w
        .apply(
            WindowAction::Announce,
            Some("Expect a few minutes of downtime."),
            t(1),
        )
        .unwrap();
    assert_eq!(
        updates[0].note.as_deref(),
        Some("Expect a few minutes of downtime.")
    );
    let mut w = window(Scheduled, &[]);
    let before = w.clone();
    assert!(matches!(
        w.apply(WindowAction::Start, Some("nul\0byte"), t(1)),
        Err(DomainError::Invalid(ValidationError { field: "note", .. }))
    ));
    assert_eq!(w, before, "nothing changes when the note is refused");
}

#[test]
fn plan_edits_touch_only_steps_that_have_not_started() {
    use StepState::*;
    let mut w = window(
        WindowState::InProgress,
        &[Done, InProgress, Pending, Pending],
    );
    w.edit_plan(
        PlanEdit::Add {
            title: "Check the dashboards".into(),
            description: None,
        },
        t(1),
    )
    .unwrap();
    assert_eq!(w.steps.len(), 5);
    assert_eq!((w.steps[4].position, w.steps[4].state), (5, Pending));
    w.edit_plan(
        PlanEdit::Move {
            position: 4,
            up: true,
        },
        t(1),
    )
    .unwrap();
    assert_eq!(w.steps[2].title, "Step 4");
    assert_eq!(w.steps[3].title, "Step 3");
    let message = rule_error(w.edit_plan(
        PlanEdit::Move {
            position: 3,
            up: true,
        },
        t(1),
    ));
    assert!(message.contains("step 2 is in progress"), "{message}");
    let message = rule_error(w.edit_plan(PlanEdit::Remove { position: 1 }, t(1)));
    assert!(message.contains("step 1 is done"), "{message}");
    w.edit_plan(PlanEdit::Remove { position: 3 }, t(1)).unwrap();
    assert_eq!(
        w.steps.iter().map(|s| s.position).collect::<Vec<_>>(),
        [1, 2, 3, 4],
        "positions stay 1..n"
    );
    w.edit_plan(
        PlanEdit::Edit {
            position: 3,
            title: "Renamed".into(),
            description: Some("why".into()),
        },
        t(1),
    )
    .unwrap();
    assert_eq!(w.steps[2].title, "Renamed");
    assert!(matches!(
        w.edit_plan(
            PlanEdit::Edit {
                position: 3,
                title: " ".into(),
                description: None
            },
            t(1)
        ),
        Err(DomainError::Invalid(_))
    ));
    let mut done = window(WindowState::Completed, &[Pending]);
    assert!(
        rule_error(done.edit_plan(PlanEdit::Remove { position: 1 }, t(1)))
            .starts_with("cannot change the plan")
    );
}

#[test]
fn allowed_actions_follow_the_rules() {
    use WindowAction as A;
    assert_eq!(
        window(Draft, &[]).allowed_actions(),
        [A::Announce, A::Cancel]
    );
    assert_eq!(
        window(Planned, &[]).allowed_actions(),
        [A::Start, A::Cancel]
    );
    assert_eq!(
        window(WindowState::InProgress, &[StepState::Done]).allowed_actions(),
        [A::Complete, A::Cancel]
    );
    assert_eq!(
        window(WindowState::InProgress, &[StepState::InProgress]).allowed_actions(),
        [A::Cancel],
        "no completing while a step runs"
    );
    assert!(window(Completed, &[]).allowed_actions().is_empty());
    let w = window(
        WindowState::InProgress,
        &[StepState::Failed, StepState::Pending],
    );
    assert_eq!(
        w.allowed_step_actions(1),
        [StepAction::Start, StepAction::Skip]
    );
    assert_eq!(w.allowed_step_actions(2), [StepAction::Skip]);
}

#[test]
fn reminder_offsets_read_as_people_write_them() {
    assert_eq!(
        Automation::parse_reminders("24h, 1h, 30m").unwrap(),
        [86_400, 3_600, 1_800]
    );
    assert_eq!(
        Automation::parse_reminders(" 2d ,90min").unwrap(),
        [172_800, 5_400]
    );
    assert_eq!(Automation::parse_reminders("").unwrap(), Vec::<i64>::new());
    for bad in ["1", "h", "1w", "-1h", "1.5h", "99999999999999999999d"] {
        let e = Automation::parse_reminders(bad).unwrap_err();
        assert_eq!(e.field, "reminders", "{bad}");
    }
    let a = Automation {
        reminders: vec![3_600, 86_400, 3_600, 5_400],
        ..Automation::default()
    }
    .validate()
    .unwrap();
    assert_eq!(a.reminders, [86_400, 5_400, 3_600]);
    assert_eq!(a.reminders_text(), "1d, 90m, 1h");
    assert!(
        Automation {
            reminders: vec![60; 6]
                .into_iter()
                .enumerate()
                .map(|(i, o)| o * (i as i64 + 1))
                .collect(),
            ..Automation::default()
        }
        .validate()
        .is_err()
    );
}

#[test]
fn after_a_tick_nothing_is_due_until_later() {
    // Every combination of automation and time around start and end: a tick at `now` leaves
    // nothing due at `now`, so the scheduler never spins.
    for auto_start in [false, true] {
        for auto_complete in [false, true] {
            for steps in [
                &[][..],
                &[StepState::Pending][..],
                &[StepState::InProgress][..],
            ] {
                let mut w = window(WindowState::Scheduled, &[]);
                w.steps = window(WindowState::Scheduled, steps).steps;
                w.automation = Automation {
                    auto_start,
                    auto_complete,
                    reminders: vec![30 * 60, 60],
                };
                w.arm_reminders(t(0));
                for minute in (0..200).step_by(1) {
                    let now = t(minute);
                    w.tick(now).unwrap();
                    if let Some(due) = w.next_due(now) {
                        assert!(
                            due > now,
                            "{auto_start} {auto_complete} {steps:?} at {minute}: due {due}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn times_in_texts_are_found_exactly() {
    let t: Timestamp = "2026-12-13T01:00:00Z".parse().unwrap();
    let t2: Timestamp = "2026-12-05T22:30:00Z".parse().unwrap();
    let text = format!(
        "Rescheduled. Scheduled for {} until {}. Not a time: Sun 14 Dec 2026, 01:00 UTC (wrong weekday), Mon 99 Dec.",
        format_utc(t),
        format_utc(t2)
    );
    let found = utc_times(&text);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].1, t);
    assert_eq!(&text[found[0].0.clone()], "Sun 13 Dec 2026, 01:00 UTC");
    assert_eq!(found[1].1, t2);
    assert_eq!(&text[found[1].0.clone()], "Sat 5 Dec 2026, 22:30 UTC");
    let tagged = map_utc_times(&text, str::to_owned, |t| format!("<t:{}:F>", t.as_second()));
    assert!(
        tagged.starts_with(&format!(
            "Rescheduled. Scheduled for <t:{}:F> until <t:{}:F>.",
            t.as_second(),
            t2.as_second()
        )),
        "{tagged}"
    );
    assert!(tagged.contains("Sun 14 Dec 2026, 01:00 UTC"));
    assert!(utc_times("ünïcödé Sun ").is_empty());
}

#[test]
fn channel_addresses_carry_no_credentials_fragment_or_query_in_an_api_base() {
    use crate::domain::{ChannelKind, ChannelSecret, DEFAULT_EVENTS, NewChannel};
    let bot = |api: &str| NewChannel {
        name: "bot".into(),
        kind: Some(ChannelKind::DiscordBot),
        target: "1200000000000000001".into(),
        secret: ChannelSecret::new("token".to_owned()),
        api_url: Some(api.into()),
        events: DEFAULT_EVENTS.to_vec(),
        enabled: true,
        ..Default::default()
    };
    for (api, said) in [
        ("https://evil.example/any/path?", "no ?query"),
        ("https://evil.example/any/path#", "#fragment"),
        ("https://user:pw@discord.com", "user name or password"),
    ] {
        let e = bot(api).validate(false).unwrap_err();
        assert_eq!(e.field, "api_url");
        assert!(e.message.contains(said), "{api}: {}", e.message);
    }
    assert!(bot("https://discord.com").validate(false).is_ok());
    let hook = |target: &str| NewChannel {
        name: "hook".into(),
        kind: Some(ChannelKind::Webhook),
        target: target.into(),
        secret: ChannelSecret::new(String::new()),
        events: DEFAULT_EVENTS.to_vec(),
        enabled: true,
        ..Default::default()
    };
    // A webhook may have a query (some receivers take their key there), not a fragment.
    assert!(hook("https://hooks.example/x?key=1").validate(true).is_ok());
    assert!(hook("https://hooks.example/x#y").validate(true).is_err());
}
