//! Time-driven changes with a clock the test moves: automatic start and completion, overrun,
//! reminders at each offset, a reschedule after a reminder, cancelling, a restart in the middle,
//! and two Herald processes on one database firing each event once in total. One test runs the
//! real scheduler loop and the outbox against the local Discord server.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::common::TestApp;
use crate::common::fake_discord::FakeDiscord;
use herald::domain::{
    Automation, ChannelKind, ChannelSecret, DEFAULT_EVENTS, DEFAULT_MILESTONES, Edit, Maintenance,
    NewChannel, Schedule, ScheduleChange, StepAction, Subject, UpdateKind, WindowAction,
    WindowState,
};
use herald::service::Service;
use herald::store::{SqlStore, Store};
use jiff::Timestamp;

const HOUR: i64 = 60;
const DAY: i64 = 24 * HOUR;

fn webhook(discord: &FakeDiscord) -> NewChannel {
    NewChannel {
        name: "webhook".into(),
        kind: Some(ChannelKind::DiscordWebhook),
        secret: ChannelSecret::new(discord.webhook_url()),
        events: DEFAULT_EVENTS.to_vec(),
        milestones: DEFAULT_MILESTONES.to_vec(),
        langs: vec!["en".into()],
        enabled: true,
        ..NewChannel::default()
    }
}

/// A recording channel: deliveries are created for it but nothing sends them (no outbox
/// runs), so the test reads exactly what each change queued.
async fn recording_channel(app: &TestApp) {
    let discord = FakeDiscord::start().await;
    app.add_channel(webhook(&discord)).await;
    // The fake is dropped; no worker runs in these tests, so nothing is sent.
}

/// A public window from `start` to `end` minutes after the test's start, with `automation`.
async fn scheduled(
    app: &TestApp,
    start: i64,
    end: i64,
    steps: usize,
    automation: Automation,
) -> Maintenance {
    let m = app
        .window(
            "Database cluster migration",
            Schedule::Fixed {
                starts_at: app.time(start),
                ends_at: Some(app.time(end)),
            },
            steps,
            vec![],
        )
        .await;
    app.service
        .edit(
            m.id,
            Edit {
                auto_start: Some(automation.auto_start),
                auto_complete: Some(automation.auto_complete),
                reminders: Some(automation.reminders),
                ..Edit::default()
            },
            ScheduleChange::default(),
        )
        .await
        .unwrap();
    app.act(m.id, WindowAction::Announce).await
}

/// Timeline kinds of window `id`, oldest first.
async fn kinds(service: &Service, id: i64) -> Vec<UpdateKind> {
    let mut updates = service.store().list_updates(id, None).await.unwrap();
    updates.sort_by_key(|u| u.id);
    updates.into_iter().map(|u| u.kind).collect()
}

async fn reminders(service: &Service, id: i64) -> Vec<String> {
    let mut updates = service.store().list_updates(id, None).await.unwrap();
    updates.sort_by_key(|u| u.id);
    updates
        .into_iter()
        .filter(|u| u.kind == UpdateKind::Reminder)
        .map(|u| u.body)
        .collect()
}

async fn delivered_kinds(service: &Service, id: i64) -> Vec<UpdateKind> {
    let mut d = service
        .store()
        .list_deliveries(Subject::Window(id))
        .await
        .unwrap();
    d.sort_by_key(|d| d.id);
    d.into_iter().map(|d| d.kind).collect()
}

fn both() -> Automation {
    Automation {
        auto_start: true,
        auto_complete: true,
        ..Automation::default()
    }
}

#[tokio::test]
async fn a_window_starts_and_completes_by_itself_and_tells_each_channel_once() {
    let app = TestApp::new().await;
    recording_channel(&app).await;
    let m = scheduled(&app, 3 * HOUR, 5 * HOUR, 0, both()).await;
    assert_eq!(
        m.next_due(app.time(0)),
        Some(app.time(2 * HOUR)),
        "the hour-before reminder is next"
    );

    // The run view tells the maintainer what will happen by itself.
    app.user("mo", herald::domain::Role::Maintainer).await;
    let mo = app.sign_in("mo").await;
    let run = app
        .get_as(&format!("/admin/maintenances/{}", m.id), &mo.cookie)
        .await
        .text();
    // Times are written in UTC and marked up, so the page shows them in the reader's zone.
    let time = |iso: &str, text: &str| {
        format!("<time datetime=\"{iso}\" data-style=\"full\">{text}</time>")
    };
    assert!(
        run.contains(&format!(
            "Starts by itself at {}.",
            time("2026-05-28T23:26:00Z", "Thu 28 May 2026, 23:26 UTC")
        )),
        "{run}"
    );
    assert!(
        run.contains(&format!(
            "1 d before (done); 1 h before, at {}",
            time("2026-05-28T22:26:00Z", "Thu 28 May 2026, 22:26 UTC")
        )),
        "{run}"
    );
    assert!(run.contains(&format!(
        "Completes by itself at {} if no step is left.",
        time("2026-05-29T01:26:00Z", "Fri 29 May 2026, 01:26 UTC")
    )));

    app.at(3 * HOUR - 1);
    app.service.check_windows().await.unwrap();
    assert_eq!(
        app.service.maintenance(m.id).await.unwrap().state,
        WindowState::Scheduled
    );

    app.at(3 * HOUR);
    let next = app.service.check_windows().await.unwrap();
    let now = app.service.maintenance(m.id).await.unwrap();
    assert_eq!(now.state, WindowState::InProgress);
    assert_eq!(now.started_at, Some(app.time(3 * HOUR)));
    assert_eq!(next, Some(app.time(5 * HOUR)), "the end is due next");

    app.at(5 * HOUR);
    app.service.check_windows().await.unwrap();
    app.service.check_windows().await.unwrap();
    let done = app.service.maintenance(m.id).await.unwrap();
    assert_eq!(done.state, WindowState::Completed);
    assert_eq!(
        kinds(&app.service, m.id).await,
        [
            UpdateKind::Announced,
            UpdateKind::Reminder,
            UpdateKind::Started,
            UpdateKind::Completed
        ],
        "announced at 0 with the day-before reminder already past: only the hour-before one"
    );
    assert_eq!(
        delivered_kinds(&app.service, m.id).await,
        kinds(&app.service, m.id).await,
        "one delivery per event for the one channel"
    );
    let updates = app.service.store().list_updates(m.id, None).await.unwrap();
    let started = updates
        .iter()
        .find(|u| u.kind == UpdateKind::Started)
        .unwrap();
    assert!(started.body.contains("automatically"), "{}", started.body);
    let audit = app.service.audit_log(10).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.actor == "scheduler" && e.action == "window.started"),
        "{audit:?}"
    );
}

#[tokio::test]
async fn without_auto_start_nothing_moves_and_past_the_end_it_overruns_once() {
    let app = TestApp::new().await;
    recording_channel(&app).await;
    let m = scheduled(&app, 30, 90, 2, Automation::default()).await;
    app.at(40);
    app.service.check_windows().await.unwrap();
    assert_eq!(
        app.service.maintenance(m.id).await.unwrap().state,
        WindowState::Scheduled,
        "auto start is off by default"
    );
    app.act(m.id, WindowAction::Start).await;
    app.at(89);
    app.service.check_windows().await.unwrap();
    let (_, json, _) = app
        .api(
            axum::http::Method::GET,
            &format!("/api/v1/maintenances/{}", m.id),
            Some(&app.token(herald::domain::Role::Maintainer).await),
            None,
        )
        .await;
    assert_eq!(json["overrunning"], false);

    app.at(91);
    app.service.check_windows().await.unwrap();
    app.at(120);
    app.service.check_windows().await.unwrap();
    let k = kinds(&app.service, m.id).await;
    assert_eq!(
        k.iter().filter(|k| **k == UpdateKind::Overrunning).count(),
        1,
        "{k:?}"
    );
    let (_, json, _) = app
        .api(
            axum::http::Method::GET,
            &format!("/api/v1/maintenances/{}", m.id),
            Some(&app.token(herald::domain::Role::Maintainer).await),
            None,
        )
        .await;
    assert_eq!(json["overrunning"], true);
    let page = app.get(&format!("/maintenance/{}", m.id)).await.text();
    assert!(page.contains("overrunning"), "the page says so");
    let embed = herald::notify::render::discord_embed(
        &app.service.maintenance(m.id).await.unwrap(),
        "https://status.example.com/maintenance/1",
        "DecAPI status",
        app.time(120),
    );
    let embed = serde_json::to_value(&embed).unwrap();
    assert_eq!(
        embed["fields"][0]["value"], "In progress, overrunning",
        "the Discord embed says so: {embed}"
    );

    // Moving the end re-arms the overrun note.
    app.service
        .edit(
            m.id,
            Edit::default(),
            ScheduleChange {
                ends_at: Some(Some(app.time(150))),
                ..ScheduleChange::default()
            },
        )
        .await
        .unwrap();
    app.at(151);
    app.service.check_windows().await.unwrap();
    let k = kinds(&app.service, m.id).await;
    assert_eq!(
        k.iter().filter(|k| **k == UpdateKind::Overrunning).count(),
        2,
        "{k:?}"
    );
}

#[tokio::test]
async fn auto_complete_leaves_a_window_with_work_left_to_a_person() {
    let app = TestApp::new().await;
    let m = scheduled(&app, 30, 90, 2, both()).await;
    app.at(30);
    app.service.check_windows().await.unwrap();
    app.step(m.id, 1, StepAction::Start).await;
    app.at(90);
    app.service.check_windows().await.unwrap();
    let now = app.service.maintenance(m.id).await.unwrap();
    assert_eq!(
        now.state,
        WindowState::InProgress,
        "step 1 is still running"
    );
    assert!(now.is_overrunning(app.time(90)));
    assert_eq!(now.overran_at, Some(app.time(90)));
    // Finishing the step later does not make it complete behind the maintainer's back.
    app.step(m.id, 1, StepAction::Done).await;
    app.at(100);
    app.service.check_windows().await.unwrap();
    assert_eq!(
        app.service.maintenance(m.id).await.unwrap().state,
        WindowState::InProgress
    );
}

#[tokio::test]
async fn reminders_go_out_at_each_offset_and_a_reschedule_rearms_them() {
    let app = TestApp::new().await;
    recording_channel(&app).await;
    let m = scheduled(&app, 3 * DAY, 3 * DAY + HOUR, 0, Automation::default()).await;
    app.at(2 * DAY - 1);
    app.service.check_windows().await.unwrap();
    assert!(reminders(&app.service, m.id).await.is_empty());

    app.at(2 * DAY);
    let next = app.service.check_windows().await.unwrap();
    let sent = reminders(&app.service, m.id).await;
    assert_eq!(
        sent,
        [
            "Starts in 1 d. Scheduled for Sun 31 May 2026, 20:26 UTC until Sun 31 May 2026, 21:26 UTC."
        ]
    );
    assert_eq!(next, Some(app.time(3 * DAY - HOUR)));

    app.at(3 * DAY - HOUR);
    app.service.check_windows().await.unwrap();
    app.service.check_windows().await.unwrap();
    let sent = reminders(&app.service, m.id).await;
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent[1].starts_with("Starts in 1 h."), "{sent:?}");

    // Moved a day later after both went out: both are due again before the new start.
    app.at(3 * DAY - 30);
    app.service
        .reschedule(
            m.id,
            Schedule::Fixed {
                starts_at: app.time(4 * DAY),
                ends_at: Some(app.time(4 * DAY + HOUR)),
            },
        )
        .await
        .unwrap();
    app.at(3 * DAY);
    app.service.check_windows().await.unwrap();
    app.at(4 * DAY - HOUR);
    app.service.check_windows().await.unwrap();
    let sent = reminders(&app.service, m.id).await;
    assert_eq!(sent.len(), 4, "{sent:?}");
    assert!(sent[2].starts_with("Starts in 1 d."), "{sent:?}");
    assert!(sent[3].starts_with("Starts in 1 h."), "{sent:?}");

    // Reminders are announcements: the deliveries carry them, the public timeline does not.
    let k = delivered_kinds(&app.service, m.id).await;
    assert_eq!(
        k.iter().filter(|k| **k == UpdateKind::Reminder).count(),
        4,
        "{k:?}"
    );
    let page = app.get(&format!("/maintenance/{}", m.id)).await.text();
    assert!(
        !page.contains("Starts in 1 h."),
        "no reminder on the timeline"
    );
}

#[tokio::test]
async fn an_offset_already_past_when_scheduled_never_fires_and_cancelling_disarms() {
    let app = TestApp::new().await;
    recording_channel(&app).await;
    // Announced 5 h before the start: the day-before reminder is already past.
    let m = scheduled(&app, 5 * HOUR, 6 * HOUR, 0, Automation::default()).await;
    app.at(4 * HOUR);
    app.service.check_windows().await.unwrap();
    let sent = reminders(&app.service, m.id).await;
    assert_eq!(sent.len(), 1, "only the hour before: {sent:?}");

    let other = scheduled(&app, 2 * DAY, 2 * DAY + HOUR, 0, both()).await;
    app.act(other.id, WindowAction::Cancel).await;
    for t in [DAY, 2 * DAY - HOUR, 2 * DAY, 2 * DAY + HOUR] {
        app.at(t);
        app.service.check_windows().await.unwrap();
    }
    assert_eq!(
        kinds(&app.service, other.id).await,
        [UpdateKind::Announced, UpdateKind::Cancelled]
    );
    assert_eq!(
        app.service
            .maintenance(other.id)
            .await
            .unwrap()
            .next_due(app.time(0)),
        None
    );
}

#[tokio::test]
async fn custom_offsets_and_none() {
    let app = TestApp::new().await;
    let m = scheduled(
        &app,
        DAY,
        DAY + HOUR,
        0,
        Automation {
            reminders: vec![600, 7200],
            ..Automation::default()
        },
    )
    .await;
    assert_eq!(m.automation.reminders, [7200, 600], "largest first");
    for t in [DAY - 2 * HOUR, DAY - 10] {
        app.at(t);
        app.service.check_windows().await.unwrap();
    }
    let sent = reminders(&app.service, m.id).await;
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent[1].starts_with("Starts in 10 min."), "{sent:?}");

    let quiet = scheduled(
        &app,
        2 * DAY,
        2 * DAY + HOUR,
        0,
        Automation {
            reminders: vec![],
            ..Automation::default()
        },
    )
    .await;
    for t in [DAY + 1, 2 * DAY - HOUR] {
        app.at(t);
        app.service.check_windows().await.unwrap();
    }
    assert!(reminders(&app.service, quiet.id).await.is_empty());

    let err = app
        .service
        .edit(
            quiet.id,
            Edit {
                reminders: Some(vec![5]),
                ..Edit::default()
            },
            ScheduleChange::default(),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("between 1 minute and 30 days"),
        "{err}"
    );
}

/// A second service on the same database file, as another process or a restarted one would
/// have it, with its own clock.
async fn process(app: &TestApp, clock: Arc<AtomicI64>) -> Service {
    let store = SqlStore::connect(&app.url).await.unwrap();
    store.migrate().await.unwrap();
    Service::with_clock(
        Arc::new(store),
        Arc::new(move || Timestamp::from_second(clock.load(Ordering::SeqCst)).unwrap()),
    )
}

#[tokio::test]
async fn after_a_restart_missed_events_fire_once_if_still_relevant() {
    let app = TestApp::new().await;
    recording_channel(&app).await;
    // Herald is down from before the day-before reminder until 20 minutes before the start.
    let soon = scheduled(&app, 2 * DAY, 2 * DAY + 2 * HOUR, 0, both()).await;
    // Down through the whole slot of this one.
    let missed = scheduled(&app, 2 * DAY - 3 * HOUR, 2 * DAY - 2 * HOUR, 0, both()).await;
    // And through the start (but not the end) of this one.
    let late = scheduled(&app, 2 * DAY - 90, 2 * DAY + HOUR, 0, both()).await;
    drop(app.service.clone());

    let clock = Arc::new(AtomicI64::new(app.time(2 * DAY - 20).as_second()));
    let restarted = process(&app, clock.clone()).await;
    restarted.check_windows().await.unwrap();
    restarted.check_windows().await.unwrap();

    let sent = reminders(&restarted, soon.id).await;
    assert_eq!(sent.len(), 1, "only the nearest missed reminder: {sent:?}");
    assert!(sent[0].starts_with("Starts in 20 min."), "{sent:?}");

    let missed = restarted.maintenance(missed.id).await.unwrap();
    assert_eq!(
        missed.state,
        WindowState::Scheduled,
        "its slot passed while Herald was down: left to a person"
    );
    assert_eq!(
        missed.next_due(app.time(2 * DAY - 20)),
        None,
        "and not retried"
    );

    let late = restarted.maintenance(late.id).await.unwrap();
    assert_eq!(late.state, WindowState::InProgress);
    let updates = restarted.store().list_updates(late.id, None).await.unwrap();
    let started = updates
        .iter()
        .find(|u| u.kind == UpdateKind::Started)
        .unwrap();
    assert!(
        started
            .body
            .contains("Started automatically, 1 h 10 min after its scheduled start"),
        "{}",
        started.body
    );

    // The scheduler of the restarted process picks up where it is.
    clock.store(app.time(2 * DAY).as_second(), Ordering::SeqCst);
    restarted.check_windows().await.unwrap();
    assert_eq!(
        restarted.maintenance(soon.id).await.unwrap().state,
        WindowState::InProgress
    );
}

#[tokio::test]
async fn two_processes_on_one_database_fire_each_event_once_in_total() {
    let app = TestApp::new().await;
    recording_channel(&app).await;
    let windows = [
        scheduled(&app, 2 * DAY, 2 * DAY + HOUR, 0, both()).await,
        scheduled(&app, 2 * DAY + 10, 2 * DAY + 2 * HOUR, 0, both()).await,
        scheduled(
            &app,
            2 * DAY + 20,
            2 * DAY + 40,
            0,
            Automation {
                auto_start: true,
                ..Automation::default()
            },
        )
        .await,
    ];
    let clock = Arc::new(AtomicI64::new(0));
    let a = process(&app, clock.clone()).await;
    let b = process(&app, clock.clone()).await;
    // Step through the two days a minute or an hour at a time; at each step both processes
    // look at once, several times.
    let mut t = 0;
    while t <= 2 * DAY + 3 * HOUR {
        clock.store(app.time(t).as_second(), Ordering::SeqCst);
        let (x, y, z, w) = tokio::join!(
            a.check_windows(),
            b.check_windows(),
            a.check_windows(),
            b.check_windows()
        );
        for r in [x, y, z, w] {
            r.unwrap();
        }
        t += if t >= 2 * DAY - 2 * HOUR { 1 } else { HOUR };
    }
    for (m, expected) in windows.iter().zip([
        vec![
            UpdateKind::Announced,
            UpdateKind::Reminder,
            UpdateKind::Reminder,
            UpdateKind::Started,
            UpdateKind::Completed,
        ],
        vec![
            UpdateKind::Announced,
            UpdateKind::Reminder,
            UpdateKind::Reminder,
            UpdateKind::Started,
            UpdateKind::Completed,
        ],
        vec![
            UpdateKind::Announced,
            UpdateKind::Reminder,
            UpdateKind::Reminder,
            UpdateKind::Started,
            UpdateKind::Overrunning,
        ],
    ]) {
        assert_eq!(kinds(&a, m.id).await, expected, "window {}", m.id);
        assert_eq!(delivered_kinds(&a, m.id).await, expected, "window {}", m.id);
    }
}

#[tokio::test]
async fn the_scheduler_loop_and_the_outbox_post_a_reminder_with_a_relative_time() {
    let app = TestApp::new().await;
    let discord = FakeDiscord::start().await;
    app.add_channel(webhook(&discord)).await;
    let outbox = app.start_outbox();
    let m = scheduled(&app, 3 * HOUR, 4 * HOUR, 0, Automation::default()).await;
    app.at(2 * HOUR);
    let cancel = tokio_util::sync::CancellationToken::new();
    let tracker = tokio_util::task::TaskTracker::new();
    herald::scheduler::spawn(app.service.clone(), cancel.clone(), &tracker);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let reminder = loop {
        let found = discord
            .messages()
            .into_iter()
            .find(|msg| msg.content.starts_with("⏰"));
        if let Some(found) = found {
            break found;
        }
        assert!(std::time::Instant::now() < deadline, "no reminder posted");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let content = reminder.content;
    let start = app.time(3 * HOUR).as_second();
    assert!(content.contains(&format!("<t:{start}:R>")), "{content}");
    assert!(content.contains("Database cluster migration"), "{content}");
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    app.settle(20).await;
    drop(outbox);
    assert_eq!(
        reminders(&app.service, m.id).await.len(),
        1,
        "one reminder however often the loop looked"
    );
}
