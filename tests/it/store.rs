//! Storage and the service on a real database (a SQLite file, or PostgreSQL under `.ci/test`):
//! creation, persistence, atomic commits, concurrent changes, the demo seed and components
//! from configuration.

use std::sync::Arc;

use crate::common::TestApp;
use herald::config::{ComponentSetting, Settings};
use herald::domain::{
    DomainError, Impact, NewMaintenance, Schedule, StepAction, StepState, UpdateKind, WindowAction,
    WindowState,
};
use herald::service::{Service, ServiceError};
use herald::store::{SqlStore, Store, StoreError, Windows as _};

#[tokio::test]
async fn creates_the_database_and_its_folder_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/herald.db");
    let url = format!("sqlite://{}", path.display());
    {
        let store = SqlStore::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        let service = Service::new(Arc::new(store));
        let w = service
            .create_maintenance(NewMaintenance {
                title: "Persisted".into(),
                description: String::new(),
                impact: Impact::None,
                schedule: Schedule::Tentative { hint: None },
                component_ids: vec![],
                steps: vec![],
                automation: Default::default(),
            })
            .await
            .unwrap();
        service
            .window_action(w.id, WindowAction::Announce, None)
            .await
            .unwrap();
    }
    assert!(path.exists());
    assert!(dir.path().join("a/b/herald.db-wal").exists(), "WAL journal");
    let store = SqlStore::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let w = store.get_maintenance(1).await.unwrap().unwrap();
    assert_eq!(w.title, "Persisted");
    assert_eq!(w.state, WindowState::Planned);
    // Also without the `//`.
    let other = dir.path().join("c/herald.db");
    SqlStore::connect(&format!("sqlite:{}", other.display()))
        .await
        .unwrap();
    assert!(other.exists());
}

#[tokio::test]
async fn a_change_and_its_update_commit_together() {
    let app = TestApp::new().await;
    let w = app
        .window("Atomic", Schedule::Tentative { hint: None }, 2, vec![])
        .await;
    app.act(w.id, WindowAction::Announce).await;
    app.act(w.id, WindowAction::Start).await;
    let m = app.step(w.id, 1, StepAction::Start).await;
    assert_eq!(m.steps[0].state, StepState::InProgress);
    let stored = app.service.maintenance(w.id).await.unwrap();
    assert_eq!(stored, m, "what the service returns is what was stored");
    let updates = app.service.store().list_updates(w.id, None).await.unwrap();
    let kinds: Vec<_> = updates.iter().map(|u| u.kind).collect();
    assert_eq!(
        kinds,
        [
            UpdateKind::StepStarted,
            UpdateKind::Started,
            UpdateKind::Announced
        ]
    );

    // A stale copy loses: nothing of it is written, not even its update.
    let mut stale = w.clone();
    stale.title = "Overwritten".into();
    let update = [herald::domain::NewUpdate {
        kind: UpdateKind::Note,
        body: "lost".into(),
        note: None,
        step_position: None,
        created_at: app.time(0),
    }];
    assert!(matches!(
        app.service
            .store()
            .save_maintenance(
                &stale,
                &herald::store::Commit {
                    actor: "test",
                    updates: &update,
                    deliveries: &[],
                    audit: None,
                },
            )
            .await,
        Err(StoreError::Conflict)
    ));
    let after = app.service.maintenance(w.id).await.unwrap();
    assert_eq!(after.title, "Atomic");
    assert_eq!(
        app.service
            .store()
            .list_updates(w.id, None)
            .await
            .unwrap()
            .len(),
        3
    );
}

#[tokio::test]
async fn refused_changes_write_nothing() {
    let app = TestApp::new().await;
    let w = app
        .window("Refused", Schedule::Tentative { hint: None }, 1, vec![])
        .await;
    let err = app
        .service
        .window_action(w.id, WindowAction::Start, None)
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::Domain(DomainError::Rule(_))));
    assert_eq!(app.service.maintenance(w.id).await.unwrap(), w);
    assert!(matches!(
        app.service
            .window_action(999, WindowAction::Start, None)
            .await,
        Err(ServiceError::NotFound(_))
    ));
}

#[tokio::test]
async fn concurrent_changes_all_land() {
    let app = TestApp::new().await;
    let w = app
        .window("Busy", Schedule::Tentative { hint: None }, 0, vec![])
        .await;
    app.act(w.id, WindowAction::Announce).await;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let service = app.service.clone();
            tokio::spawn(async move { service.post_update(w.id, &format!("update {i}")).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let updates = app.service.store().list_updates(w.id, None).await.unwrap();
    assert_eq!(updates.len(), 9);
    let m = app.service.maintenance(w.id).await.unwrap();
    assert_eq!(m.version, 9);
}

#[tokio::test]
async fn unknown_components_are_refused() {
    let app = TestApp::new().await;
    let err = app
        .service
        .create_maintenance(NewMaintenance {
            title: "x".into(),
            description: String::new(),
            impact: Impact::None,
            schedule: Schedule::Tentative { hint: None },
            component_ids: vec![42],
            steps: vec![],
            automation: Default::default(),
        })
        .await
        .unwrap_err();
    match err {
        ServiceError::Domain(DomainError::Invalid(v)) => assert_eq!(v.field, "components"),
        other => panic!("{other:?}"),
    }
    assert_eq!(app.service.store().count_maintenances().await.unwrap(), 0);
    let err = app
        .service
        .component_ids(&["nope".to_owned()])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nope"));
}

#[tokio::test]
async fn duplicate_component_slugs_are_refused_with_the_field() {
    let app = TestApp::new().await;
    app.component("api", "API").await;
    let err = app
        .service
        .create_component(herald::domain::NewComponent {
            slug: "api".into(),
            name: "Again".into(),
            description: None,
            group_name: None,
        })
        .await
        .unwrap_err();
    match err {
        ServiceError::Domain(DomainError::Invalid(v)) => {
            assert_eq!(v.field, "slug");
            assert!(v.message.contains("already exists"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn demo_seeds_the_decapi_migration_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = crate::common::database_url(dir.path(), "demo.db");
    let settings = Settings::for_database(&url);
    let state = herald::server::build(&settings, true).await.unwrap();
    let store = state.service.store();
    let open = store.open_public_maintenances().await.unwrap();
    assert_eq!(open.len(), 1);
    let m = &open[0];
    assert_eq!(m.title, "Database cluster migration");
    assert_eq!(m.state, WindowState::InProgress);
    assert_eq!(m.steps.len(), 6);
    assert_eq!(m.steps_done(), 3);
    assert_eq!(m.current_step().unwrap().position, 4);
    let names: Vec<_> = m.components.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["API", "Database"]);
    let updates = store.list_updates(m.id, None).await.unwrap();
    let announced = updates.last().unwrap();
    assert_eq!(announced.kind, UpdateKind::Announced);
    assert!(announced.body.contains("No date yet"), "tentative first");
    assert!(updates.iter().any(|u| u.kind == UpdateKind::Rescheduled));
    assert!(updates.iter().any(|u| u.kind == UpdateKind::Note));
    let history = store.finished_maintenances(0, 10).await.unwrap();
    assert_eq!(history.total, 1);
    assert_eq!(history.items[0].state, WindowState::Completed);

    // Starting again with --demo on a populated database seeds nothing more.
    let again = herald::server::build(&settings, true).await.unwrap();
    assert_eq!(again.service.store().count_maintenances().await.unwrap(), 2);
}

#[tokio::test]
async fn components_from_configuration_are_created_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = crate::common::database_url(dir.path(), "c.db");
    let mut settings = Settings::for_database(&url);
    settings.components = vec![ComponentSetting {
        slug: "api".into(),
        name: "API".into(),
        description: Some("The API".into()),
        group: Some("Backend".into()),
    }];
    herald::server::build(&settings, false).await.unwrap();
    let state = herald::server::build(&settings, false).await.unwrap();
    let components = state.service.components().await.unwrap();
    assert_eq!(components.len(), 1);
    assert_eq!(components[0].group_name.as_deref(), Some("Backend"));
    settings.components[0].slug = "Not A Slug".into();
    let Err(err) = herald::server::build(&settings, false).await else {
        panic!("an invalid component in the configuration must stop the start");
    };
    assert!(format!("{err:#}").contains("slug"), "{err:#}");
}

/// A database from before signed webhooks: its channels table refuses the new kind. Opening
/// it rebuilds the table without losing a channel, a delivery or a thread.
#[tokio::test]
async fn the_channels_table_is_rebuilt_for_webhooks_keeping_deliveries() {
    use herald::domain::{ChannelKind, ChannelSecret, DEFAULT_EVENTS, NewChannel, Subject};
    let app = TestApp::sqlite().await;
    let channel = app
        .add_channel(NewChannel {
            name: "webhook".into(),
            kind: Some(ChannelKind::DiscordWebhook),
            secret: ChannelSecret::new("https://discord.com/api/webhooks/123/abc"),
            events: DEFAULT_EVENTS.to_vec(),
            enabled: true,
            ..NewChannel::default()
        })
        .await;
    let m = app
        .window(
            "Database cluster migration",
            Schedule::Tentative { hint: None },
            1,
            vec![],
        )
        .await;
    app.act(m.id, WindowAction::Announce).await;
    let before = app.service.deliveries(Subject::Window(m.id)).await.unwrap();
    assert_eq!(before.len(), 1);

    // Put the table back as it was before (the old CHECK), the way an older Herald left it.
    let pool = sqlx::SqlitePool::connect(&app.url).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let old = include_str!("../../migrations/sqlite/0004_announcements.sql");
    let create = &old[old.find("CREATE TABLE channels").unwrap()..];
    let create = &create[..create.find(");").unwrap() + 2];
    let sql = format!(
        "PRAGMA foreign_keys = OFF; BEGIN; {}; INSERT INTO channels_old SELECT * FROM channels; \
         DROP TABLE channels; ALTER TABLE channels_old RENAME TO channels; COMMIT; \
         PRAGMA foreign_keys = ON;",
        create
            .replace("CREATE TABLE channels", "CREATE TABLE channels_old")
            .trim_end_matches(';')
    );
    sqlx::Executor::execute(&mut *conn, sql.as_str())
        .await
        .unwrap();
    let definition: String =
        sqlx::query_scalar("SELECT sql FROM sqlite_schema WHERE name = 'channels'")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert!(!definition.contains("'webhook'"));
    drop(conn);
    pool.close().await;

    let store = SqlStore::connect(&app.url).await.unwrap();
    store.migrate().await.unwrap();
    let service = Service::new(Arc::new(store));
    let after = service.deliveries(Subject::Window(m.id)).await.unwrap();
    assert_eq!(after.len(), before.len(), "no delivery lost");
    assert_eq!(after[0].channel_id, channel.id);
    let hook = service
        .create_channel(NewChannel {
            name: "hooks".into(),
            kind: Some(ChannelKind::Webhook),
            target: "https://hooks.example.com/".into(),
            events: DEFAULT_EVENTS.to_vec(),
            enabled: true,
            ..NewChannel::default()
        })
        .await
        .unwrap();
    assert_eq!(hook.kind, ChannelKind::Webhook);
    // Deleting a channel still cascades to its deliveries: the foreign keys are back on.
    service.delete_channel(channel.id).await.unwrap();
    assert!(
        service
            .deliveries(Subject::Window(m.id))
            .await
            .unwrap()
            .is_empty()
    );
}

/// Run one statement on the app's database, behind Herald's back.
async fn execute(app: &TestApp, sql: &str) {
    use sqlx::Connection as _;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&app.url).await.unwrap();
    sqlx::query(sql).execute(&mut conn).await.unwrap();
}

#[tokio::test]
async fn a_change_whose_audit_entry_cannot_be_written_is_not_committed() {
    use herald::domain::{Actor, ChannelKind, ChannelSecret, NewChannel, NewRollout, Subject};
    let app = TestApp::new().await;
    app.add_channel(NewChannel {
        name: "hook".into(),
        kind: Some(ChannelKind::Webhook),
        target: "http://127.0.0.1:9/hook".into(),
        secret: ChannelSecret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        events: herald::domain::default_events(ChannelKind::Webhook),
        milestones: herald::domain::default_milestones(),
        langs: vec!["en".into()],
        enabled: true,
        ..NewChannel::default()
    })
    .await;
    let service = app.service.acting(Actor::Token {
        name: "deploy".into(),
        role: herald::domain::Role::Maintainer,
    });
    let w = app
        .window("Audited", Schedule::Tentative { hint: None }, 2, vec![])
        .await;
    service
        .window_action(w.id, WindowAction::Announce, None)
        .await
        .unwrap();
    let r = service
        .create_rollout(NewRollout::new(
            "Fishjam",
            Some("v1"),
            "v2",
            &["f-1", "f-2"],
        ))
        .await
        .unwrap();
    // Every change so far is in the audit log, by the typed actor.
    let audit = app.service.audit_log(50).await.unwrap();
    let said: Vec<(&str, &str, Option<&str>)> = audit
        .iter()
        .map(|e| (e.actor.as_str(), e.action.as_str(), e.target.as_deref()))
        .collect();
    assert!(
        said.contains(&(
            "token:deploy",
            "window.announce",
            Some(&*format!("window {}", w.id))
        )),
        "{said:?}"
    );
    assert!(
        said.contains(&(
            "token:deploy",
            "rollout.create",
            Some(&*format!("rollout {}", r.id))
        )),
        "{said:?}"
    );

    let updates = app
        .service
        .store()
        .list_updates(w.id, None)
        .await
        .unwrap()
        .len();
    let deliveries = app
        .service
        .deliveries(Subject::Window(w.id))
        .await
        .unwrap()
        .len();
    let notes = app.service.rollout_updates(r.id, None).await.unwrap().len();
    let rollout_deliveries = app
        .service
        .deliveries(Subject::Rollout(r.id))
        .await
        .unwrap()
        .len();
    assert!(deliveries > 0, "the announcement is queued");

    // The audit log cannot be written any more: every audited change fails whole.
    execute(&app, "DROP TABLE audit_log").await;
    assert!(
        service
            .window_action(w.id, WindowAction::Start, None)
            .await
            .is_err()
    );
    assert!(service.post_update(w.id, "Half way").await.is_err());
    assert!(service.post_rollout_note(r.id, "Starting").await.is_err());
    assert!(
        service
            .create_rollout(NewRollout::new("Other", Some("v1"), "v2", &["x"]))
            .await
            .is_err()
    );
    assert!(
        service
            .create_maintenance(NewMaintenance {
                title: "Lost".into(),
                description: String::new(),
                impact: Impact::None,
                schedule: Schedule::Tentative { hint: None },
                component_ids: vec![],
                steps: vec![],
                automation: Default::default(),
            })
            .await
            .is_err()
    );

    let after = app.service.maintenance(w.id).await.unwrap();
    assert_eq!(
        after.state,
        WindowState::Planned,
        "the window did not start"
    );
    assert_eq!(
        after.version,
        w.version + 1,
        "only the announcement was committed"
    );
    assert_eq!(
        app.service
            .store()
            .list_updates(w.id, None)
            .await
            .unwrap()
            .len(),
        updates
    );
    assert_eq!(
        app.service
            .deliveries(Subject::Window(w.id))
            .await
            .unwrap()
            .len(),
        deliveries
    );
    assert_eq!(
        app.service.rollout_updates(r.id, None).await.unwrap().len(),
        notes
    );
    assert_eq!(
        app.service
            .deliveries(Subject::Rollout(r.id))
            .await
            .unwrap()
            .len(),
        rollout_deliveries
    );
    assert_eq!(app.service.rollouts(None, 0, 10).await.unwrap().len(), 1);
    assert_eq!(app.service.store().count_maintenances().await.unwrap(), 1);
}
