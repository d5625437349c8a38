//! `Idempotency-Key` on `/api/v1` writes: a retried POST replays the first answer instead of
//! making the change (and its announcement) twice, in sequence and concurrently; the same key
//! with another request is a 422; answers are kept per token and for 24 hours.

use axum::http::{Method, StatusCode};
use herald::domain::{
    ChannelKind, ChannelSecret, NewChannel, Role, Subject, default_events, default_milestones,
};
use serde_json::{Value, json};

use crate::common::TestApp;

/// A webhook channel, so that every public change queues a delivery the test can count (no
/// worker runs: the deliveries stay in the outbox).
async fn with_channel(app: &TestApp) {
    app.add_channel(NewChannel {
        name: "hook".into(),
        kind: Some(ChannelKind::Webhook),
        target: "http://127.0.0.1:9/hook".into(),
        secret: ChannelSecret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        events: default_events(ChannelKind::Webhook),
        milestones: default_milestones(),
        langs: vec!["en".into()],
        enabled: true,
        ..NewChannel::default()
    })
    .await;
}

async fn post(
    app: &TestApp,
    token: &str,
    path: &str,
    body: Value,
    key: &str,
) -> (StatusCode, Value, axum::http::HeaderMap) {
    app.api_with(
        Method::POST,
        path,
        Some(token),
        Some(body),
        &[("idempotency-key", key)],
    )
    .await
}

/// An announced window with one channel; returns its id.
async fn announced(app: &TestApp, token: &str) -> i64 {
    with_channel(app).await;
    let (status, window, _) = app
        .api(
            Method::POST,
            "/api/v1/maintenances",
            Some(token),
            Some(json!({"title": "Database move", "steps": [{"title": "Copy"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{window}");
    let id = window["id"].as_i64().unwrap();
    let (status, body, _) = app
        .api(
            Method::POST,
            &format!("/api/v1/maintenances/{id}/announce"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    id
}

async fn updates(app: &TestApp, id: i64) -> usize {
    app.service
        .store()
        .list_updates(id, None)
        .await
        .unwrap()
        .len()
}

async fn deliveries(app: &TestApp, id: i64) -> usize {
    app.service
        .deliveries(Subject::Window(id))
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn a_retried_update_replays_the_first_answer() {
    let app = TestApp::new().await;
    let token = app.token(Role::Maintainer).await;
    let id = announced(&app, &token).await;
    let (before_updates, before_deliveries) = (updates(&app, id).await, deliveries(&app, id).await);
    let path = format!("/api/v1/maintenances/{id}/updates");
    let body = json!({"body": "Copying the data now."});

    let first = post(&app, &token, &path, body.clone(), "retry-1").await;
    assert_eq!(first.0, StatusCode::CREATED, "{}", first.1);
    assert!(first.2.get("idempotent-replayed").is_none());
    let again = post(&app, &token, &path, body.clone(), "retry-1").await;
    assert_eq!(again.0, StatusCode::CREATED);
    assert_eq!(again.1, first.1, "the retry gets the first answer");
    assert_eq!(again.2["idempotent-replayed"], "true");
    assert_eq!(again.2["content-type"], "application/json");
    assert_eq!(updates(&app, id).await, before_updates + 1, "one update");
    assert_eq!(
        deliveries(&app, id).await,
        before_deliveries + 1,
        "one announcement"
    );

    // The same key with another body, or at another address, is refused and changes nothing.
    let other = post(
        &app,
        &token,
        &path,
        json!({"body": "Something else."}),
        "retry-1",
    )
    .await;
    assert_eq!(other.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(other.1["error"]["code"], "idempotency_key_reused");
    let elsewhere = post(
        &app,
        &token,
        "/api/v1/maintenances",
        json!({"title": "Another"}),
        "retry-1",
    )
    .await;
    assert_eq!(elsewhere.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(updates(&app, id).await, before_updates + 1);

    // A new key is a new change; no key at all is a new change every time.
    let next = post(&app, &token, &path, body.clone(), "retry-2").await;
    assert_eq!(next.0, StatusCode::CREATED);
    assert_ne!(next.1["id"], first.1["id"]);
    let (status, _, _) = app
        .api(Method::POST, &path, Some(&token), Some(body.clone()))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(updates(&app, id).await, before_updates + 3);

    // Keys belong to their token: another client's same key is its own.
    let other_token = app.token(Role::Maintainer).await;
    let theirs = post(&app, &other_token, &path, body.clone(), "retry-1").await;
    assert_eq!(theirs.0, StatusCode::CREATED);
    assert!(theirs.2.get("idempotent-replayed").is_none());
    assert_eq!(updates(&app, id).await, before_updates + 4);

    // Kept for 24 hours, then the key is new again.
    app.at(24 * 60 + 1);
    let later = post(&app, &token, &path, body, "retry-1").await;
    assert_eq!(later.0, StatusCode::CREATED);
    assert!(later.2.get("idempotent-replayed").is_none());
    assert_ne!(later.1["id"], first.1["id"]);
}

#[tokio::test]
async fn concurrent_retries_make_one_rollout() {
    let app = TestApp::new().await;
    let token = app.token(Role::Maintainer).await;
    with_channel(&app).await;
    let body = json!({
        "title": "Fishjam 0.9 → 0.10",
        "from_version": "0.9.0",
        "to_version": "0.10.0",
        "targets": ["fishjam-1", "fishjam-2"],
    });
    let tries = futures_util::future::join_all((0..6).map(|_| {
        post(
            &app,
            &token,
            "/api/v1/rollouts",
            body.clone(),
            "deploy-4711",
        )
    }))
    .await;
    for (status, answer, _) in &tries {
        assert_eq!(*status, StatusCode::CREATED, "{answer}");
        assert_eq!(answer, &tries[0].1, "every try gets the same answer");
    }
    let replayed = tries
        .iter()
        .filter(|(_, _, h)| h.get("idempotent-replayed").is_some())
        .count();
    assert_eq!(
        replayed, 5,
        "one try made the rollout, the others replayed it"
    );
    let rollouts = app.service.rollouts(None, 0, 100).await.unwrap();
    assert_eq!(rollouts.len(), 1);

    // The same for a timeline entry and its announcement.
    let id = rollouts[0].id;
    let path = format!("/api/v1/rollouts/{id}/updates");
    let note = json!({"body": "Starting with fishjam-1."});
    let tries = futures_util::future::join_all(
        (0..6).map(|_| post(&app, &token, &path, note.clone(), "note-1")),
    )
    .await;
    for (status, answer, _) in &tries {
        assert_eq!(*status, StatusCode::CREATED, "{answer}");
        assert_eq!(answer, &tries[0].1);
    }
    let notes = app.service.rollout_updates(id, None).await.unwrap();
    assert_eq!(
        notes
            .iter()
            .filter(|u| u.body.contains("Starting with"))
            .count(),
        1
    );
    let deliveries = app.service.deliveries(Subject::Rollout(id)).await.unwrap();
    let first = deliveries.len();
    assert!(first >= 1, "the note is announced");
    let again = post(&app, &token, &path, note, "note-1").await;
    assert_eq!(again.1, tries[0].1);
    assert_eq!(
        app.service
            .deliveries(Subject::Rollout(id))
            .await
            .unwrap()
            .len(),
        first
    );
}

#[tokio::test]
async fn answers_that_say_try_again_are_not_kept() {
    let app = TestApp::new().await;
    let token = app.token(Role::Maintainer).await;
    // A refusal is an answer: replayed as it was.
    let (status, first, _) = post(
        &app,
        &token,
        "/api/v1/maintenances/999/updates",
        json!({"body": "x"}),
        "k",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, again, headers) = post(
        &app,
        &token,
        "/api/v1/maintenances/999/updates",
        json!({"body": "x"}),
        "k",
    )
    .await;
    assert_eq!((status, &again), (StatusCode::NOT_FOUND, &first));
    assert_eq!(headers["idempotent-replayed"], "true");

    // A wrong token is not kept: the same key with the right one then works.
    let (status, _, _) = post(
        &app,
        "hrld_wrong",
        "/api/v1/maintenances",
        json!({"title": "T"}),
        "k2",
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Malformed keys are refused before anything runs.
    for bad in ["", "with space", &"x".repeat(256)] {
        let (status, body, _) = post(
            &app,
            &token,
            "/api/v1/maintenances",
            json!({"title": "T"}),
            bad,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {body}");
        assert_eq!(body["error"]["field"], "Idempotency-Key");
    }
    assert_eq!(app.service.store().count_maintenances().await.unwrap(), 0);
    // A quoted key (the draft's structured-field string) is the same key unquoted.
    let (status, a, _) = post(
        &app,
        &token,
        "/api/v1/maintenances",
        json!({"title": "T"}),
        "\"abc\"",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, b, headers) = post(
        &app,
        &token,
        "/api/v1/maintenances",
        json!({"title": "T"}),
        "abc",
    )
    .await;
    assert_eq!(a, b);
    assert_eq!(headers["idempotent-replayed"], "true");
}

#[tokio::test]
async fn the_openapi_document_names_the_header() {
    let app = TestApp::new().await;
    let doc: Value = serde_json::from_slice(&app.get("/api/openapi.json").await.body).unwrap();
    let post = &doc["paths"]["/api/v1/maintenances/{id}/updates"]["post"];
    let names: Vec<&str> = post["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(names.contains(&"Idempotency-Key"), "{names:?}");
    assert!(post["responses"]["409"].is_object());
    assert!(post["responses"]["422"].is_object());
}
