//! Herald read by the tools people already follow maintenance with, each an independent
//! implementation from PyPI (installed by `.ci/pytools`, versions in
//! tests/ecosystem/requirements.txt): the Atom feed through feedparser, the calendar through
//! icalendar and vobject, the Statuspage-compatible API against a JSON Schema of Atlassian's
//! documented shapes and through the DiscordStatus client, and signed webhooks through the
//! Standard Webhooks reference library, the way a receiver checks them.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::common::TestApp;
use axum::http::{HeaderMap, StatusCode};
use herald::domain::{
    ChannelKind, Edit, NewChannel, Schedule, ScheduleChange, StepAction, WindowAction,
};
use serde_json::{Value, json};

const HOUR: i64 = 60;

/// The virtualenv's python: `HERALD_TEST_PYTOOLS`, or installed now by `.ci/pytools`.
pub(crate) fn python() -> String {
    if let Ok(p) = std::env::var("HERALD_TEST_PYTOOLS") {
        return p;
    }
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/pytools"))
        .stderr(Stdio::inherit())
        .output()
        .expect("running .ci/pytools");
    assert!(out.status.success(), ".ci/pytools failed");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Run `tests/ecosystem/{script}` with `args` (and `stdin`), expecting success; its JSON output.
async fn run(script: &str, args: &[&str], stdin: Option<String>) -> Value {
    let python = python();
    let script = format!("{}/tests/ecosystem/{script}", env!("CARGO_MANIFEST_DIR"));
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new(python)
            .arg(&script)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting python");
        let mut input = child.stdin.take().unwrap();
        input
            .write_all(stdin.unwrap_or_default().as_bytes())
            .unwrap();
        drop(input);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{script} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{script}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    })
    .await
    .unwrap()
}

/// Serve the app's router on a local port; returns its base URL.
async fn serve(app: &TestApp) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

/// The DecAPI window in progress, a scheduled one, a tentative one, a cancelled one and a
/// rollout on its own.
async fn situation(app: &TestApp) -> (i64, i64, i64, i64) {
    let api = app.component("api", "API").await;
    let db = app.component("database", "Database").await;
    let running = app
        .window(
            "Database cluster migration",
            Schedule::Fixed {
                starts_at: app.time(0),
                ends_at: Some(app.time(2 * HOUR)),
            },
            3,
            vec![api, db],
        )
        .await;
    app.act(running.id, WindowAction::Announce).await;
    app.act(running.id, WindowAction::Start).await;
    app.step(running.id, 1, StepAction::Start).await;
    let upcoming = app
        .window(
            "Cache upgrade & <cleanup>",
            Schedule::Fixed {
                starts_at: app.time(48 * HOUR),
                ends_at: Some(app.time(49 * HOUR)),
            },
            0,
            vec![db],
        )
        .await;
    app.act(upcoming.id, WindowAction::Announce).await;
    let tentative = app
        .window(
            "Move to a new data centre",
            Schedule::Tentative {
                hint: Some("some time next month".into()),
            },
            0,
            vec![api],
        )
        .await;
    app.act(tentative.id, WindowAction::Announce).await;
    let cancelled = app
        .window(
            "Load balancer swap",
            Schedule::Fixed {
                starts_at: app.time(24 * HOUR),
                ends_at: None,
            },
            0,
            vec![api],
        )
        .await;
    app.act(cancelled.id, WindowAction::Announce).await;
    app.act(cancelled.id, WindowAction::Cancel).await;
    let token = app.token(herald::domain::Role::Maintainer).await;
    let (status, _, _) = app
        .api(
            axum::http::Method::POST,
            "/api/v1/rollouts",
            Some(&token),
            Some(json!({"title": "Fishjam v1.4.0", "from_version": "v1.3.2",
                        "to_version": "v1.4.0", "targets": ["fishjam-1", "fishjam-2"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _, _) = app
        .api(
            axum::http::Method::PUT,
            "/api/v1/rollouts/1/targets/fishjam-1",
            Some(&token),
            Some(json!({"state": "draining", "remaining": {"rooms": 3}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    (running.id, upcoming.id, tentative.id, cancelled.id)
}

#[tokio::test]
async fn feed_and_calendar_read_cleanly_and_a_reschedule_keeps_the_uid() {
    let app = TestApp::new().await;
    let (running, upcoming, tentative, cancelled) = situation(&app).await;
    let base = serve(&app).await;
    let read = |path: &str| format!("{base}{path}");
    let out = run(
        "check_feeds.py",
        &[&read("/feed.atom"), &read("/calendar.ics")],
        None,
    )
    .await;
    let entries = out["entries"].as_array().unwrap();
    let titles: Vec<&str> = entries
        .iter()
        .map(|e| e["title"].as_str().unwrap())
        .collect();
    assert!(
        titles.contains(&"Database cluster migration: In progress"),
        "{titles:?}"
    );
    assert!(
        titles.contains(&"Cache upgrade & <cleanup>: Scheduled"),
        "{titles:?}"
    );
    assert!(
        titles.contains(&"Fishjam v1.4.0: In progress"),
        "{titles:?}"
    );
    let running_entry = entries
        .iter()
        .find(|e| e["title"].as_str().unwrap().starts_with("Database"))
        .unwrap();
    assert!(
        running_entry["link"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/maintenance/{running}")),
        "{running_entry}"
    );
    assert!(
        running_entry["summary"]
            .as_str()
            .unwrap()
            .contains("Step 1 of 3 started"),
        "its latest update: {running_entry}"
    );

    let events = out["events"].as_array().unwrap();
    let uid = |id: i64| format!("maintenance-{id}@127.0.0.1:8080");
    let event = |id: i64| events.iter().find(|e| e["uid"] == uid(id)).cloned();
    assert!(event(tentative).is_none(), "no date, no event: {events:?}");
    assert_eq!(event(cancelled).unwrap()["status"], "CANCELLED");
    let before = event(upcoming).unwrap();
    assert_eq!(before["status"], "CONFIRMED");
    assert_eq!(before["utc"], true);
    assert_eq!(out["vobject"].as_array().unwrap().len(), events.len());

    app.service
        .reschedule(
            upcoming,
            Schedule::Fixed {
                starts_at: app.time(72 * HOUR),
                ends_at: Some(app.time(73 * HOUR)),
            },
        )
        .await
        .unwrap();
    let out = run(
        "check_feeds.py",
        &[&read("/feed.atom"), &read("/calendar.ics")],
        None,
    )
    .await;
    let after = out["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["uid"] == uid(upcoming))
        .cloned()
        .expect("the rescheduled event keeps its UID");
    assert!(
        after["sequence"].as_i64() > before["sequence"].as_i64(),
        "{before} -> {after}"
    );
    assert_ne!(after["start"], before["start"]);
    let by_vobject = out["vobject"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["uid"] == uid(upcoming))
        .cloned()
        .unwrap();
    assert_eq!(by_vobject["sequence"], after["sequence"]);
    assert_eq!(by_vobject["start"], after["start"]);

    // A component's own feed and calendar: only what affects it.
    let out = run(
        "check_feeds.py",
        &[
            &read("/components/database/feed.atom"),
            &read("/components/database/calendar.ics"),
        ],
        None,
    )
    .await;
    let titles: Vec<&str> = out["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles.len(), 2, "{titles:?}");
    assert!(
        titles.iter().all(|t| !t.starts_with("Load balancer")),
        "{titles:?}"
    );
    assert_eq!(out["events"].as_array().unwrap().len(), 2);
    assert_eq!(
        app.get("/components/nope/feed.atom").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_statuspage_api_validates_and_a_statuspage_client_reads_it() {
    let app = TestApp::new().await;
    situation(&app).await;
    let base = serve(&app).await;
    let out = run("check_statuspage.py", &[&base], None).await;
    assert_eq!(out["indicator"], "maintenance", "{out}");
    assert_eq!(out["description"], "Service Under Maintenance");
    assert_eq!(out["components"]["API"], "under_maintenance");
    assert_eq!(out["components"]["Database"], "under_maintenance");
    assert_eq!(out["upcoming"], json!(["Cache upgrade & <cleanup>"]));
    let active = out["active"].as_array().unwrap();
    assert!(
        active.contains(&json!("Database cluster migration")),
        "{out}"
    );
    assert!(
        active.contains(&json!("Fishjam v1.4.0")),
        "an unlinked rollout: {out}"
    );
    assert_eq!(
        out["all"]["Load balancer swap"], "completed",
        "cancelled maps to completed"
    );
    assert!(
        out["all"].get("Move to a new data centre").is_none(),
        "a tentative window has no scheduled_for: {out}"
    );
    assert_eq!(out["unresolved"], json!([]));

    // A failed step is trouble: the indicator and the components say so.
    app.step(1, 1, StepAction::Fail).await;
    let out = run("check_statuspage.py", &[&base], None).await;
    assert_eq!(out["indicator"], "minor", "{out}");
    assert_eq!(out["components"]["API"], "degraded_performance");

    let badge = app.get("/badge.svg").await;
    assert_eq!(
        badge.header("content-type"),
        Some("image/svg+xml; charset=utf-8")
    );
    assert!(badge.text().contains("<title>status: degraded</title>"));
    let badge = app.get("/components/api/badge.svg").await.text();
    assert!(badge.contains("aria-label=\"API: degraded\""), "{badge}");

    // An open incident: in Statuspage's shapes (the script validates every endpoint again),
    // and the client reads it with its components; the indicator follows its impact.
    let token = app.token(herald::domain::Role::Maintainer).await;
    let (status, i, _) = app
        .api(
            axum::http::Method::POST,
            "/api/v1/incidents",
            Some(&token),
            Some(
                json!({"title": "API errors on writes", "impact": "critical",
                        "components": [{"slug": "api", "status": "major_outage"}],
                        "body": "Writes fail."}),
            ),
        )
        .await;
    assert_eq!(status, axum::http::StatusCode::CREATED, "{i}");
    let (status, _, _) = app
        .api(
            axum::http::Method::POST,
            &format!("/api/v1/incidents/{}/updates", i["id"]),
            Some(&token),
            Some(json!({"status": "identified", "body": "A bad index."})),
        )
        .await;
    assert_eq!(status, axum::http::StatusCode::CREATED);
    let out = run("check_statuspage.py", &[&base], None).await;
    assert_eq!(out["indicator"], "critical", "{out}");
    assert_eq!(out["components"]["API"], "major_outage");
    let unresolved = &out["unresolved"][0];
    assert_eq!(unresolved["name"], "API errors on writes", "{out}");
    assert_eq!(unresolved["status"], "identified");
    assert_eq!(unresolved["components"][0]["name"], "API");
    assert_eq!(unresolved["incident_updates"].as_array().unwrap().len(), 2);
}

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    /// Answer 503 to the first this many requests.
    refuse: Arc<Mutex<usize>>,
}

async fn receiver(r: Receiver) -> String {
    let router = axum::Router::new().fallback(move |headers: HeaderMap, body: String| {
        let r = r.clone();
        async move {
            r.got.lock().unwrap().push((headers, body));
            let mut refuse = r.refuse.lock().unwrap();
            if *refuse > 0 {
                *refuse -= 1;
                return StatusCode::SERVICE_UNAVAILABLE;
            }
            StatusCode::NO_CONTENT
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}/hooks/herald")
}

#[tokio::test]
async fn signed_webhooks_verify_with_the_reference_library_and_tampering_does_not() {
    let app = TestApp::new().await;
    let r = Receiver::default();
    *r.refuse.lock().unwrap() = 1;
    let url = receiver(r.clone()).await;
    let channel = app
        .add_channel(NewChannel {
            name: "hooks".into(),
            kind: Some(ChannelKind::Webhook),
            target: url.clone(),
            events: herald::domain::default_events(ChannelKind::Webhook),
            enabled: true,
            ..NewChannel::default()
        })
        .await;
    let secret = channel.secret.expose().to_owned();
    assert!(secret.starts_with("whsec_"), "Herald made the secret");
    let _outbox = app.start_outbox();

    let m = app
        .window(
            "Database cluster migration",
            Schedule::Fixed {
                starts_at: app.time(HOUR),
                ends_at: Some(app.time(2 * HOUR)),
            },
            1,
            vec![],
        )
        .await;
    app.service
        .edit(
            m.id,
            Edit {
                reminders: Some(vec![]),
                ..Edit::default()
            },
            ScheduleChange::default(),
        )
        .await
        .unwrap();
    app.act(m.id, WindowAction::Announce).await;
    app.act(m.id, WindowAction::Start).await;
    app.step(m.id, 1, StepAction::Start).await;
    let unsent = app.settle(30).await;
    assert!(unsent.is_empty(), "{unsent:?}");

    let got = r.got.lock().unwrap().clone();
    assert_eq!(got.len(), 4, "three events, the first tried twice");
    assert_eq!(
        got[0].0["webhook-id"], got[1].0["webhook-id"],
        "a retry keeps the message id"
    );
    let deliveries: Vec<Value> = got
        .iter()
        .map(|(h, body)| {
            let header = |n: &str| h[n].to_str().unwrap().to_owned();
            json!({
                "headers": {
                    "webhook-id": header("webhook-id"),
                    "webhook-timestamp": header("webhook-timestamp"),
                    "webhook-signature": header("webhook-signature"),
                },
                "body": body,
            })
        })
        .collect();
    let verified = run(
        "check_webhooks.py",
        &[],
        Some(json!({"secret": secret, "deliveries": deliveries}).to_string()),
    )
    .await;
    let types: Vec<&str> = verified
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "maintenance.announced",
            "maintenance.announced",
            "maintenance.started",
            "maintenance.step_started"
        ]
    );
    let last = &verified[3]["data"];
    assert_eq!(
        last["maintenance"]["state"], "in_progress",
        "the window as it is now"
    );
    assert_eq!(last["maintenance"]["steps"][0]["state"], "in_progress");
    assert_eq!(last["update"]["kind"], "step_started");

    // A new secret: the old one no longer verifies what is sent next.
    let rotated = app.service.rotate_webhook_secret(channel.id).await.unwrap();
    let new_secret = rotated.secret.expose().to_owned();
    assert_ne!(new_secret, secret);
    app.step(m.id, 1, StepAction::Done).await;
    app.settle(30).await;
    let got = r.got.lock().unwrap().clone();
    let (h, body) = got.last().unwrap();
    let header = |n: &str| h[n].to_str().unwrap().to_owned();
    let delivery = json!({
        "headers": {
            "webhook-id": header("webhook-id"),
            "webhook-timestamp": header("webhook-timestamp"),
            "webhook-signature": header("webhook-signature"),
        },
        "body": body,
    });
    let verified = run(
        "check_webhooks.py",
        &[],
        Some(json!({"secret": new_secret, "deliveries": [delivery]}).to_string()),
    )
    .await;
    assert_eq!(verified[0]["type"], "maintenance.step_done");
    let key = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(s.strip_prefix("whsec_").unwrap())
            .unwrap()
    };
    let ts: i64 = header("webhook-timestamp").parse().unwrap();
    assert_ne!(
        herald::notify::webhook::sign(&key(&secret), &header("webhook-id"), ts, body),
        header("webhook-signature"),
        "signed with the new secret, not the old"
    );
}
