//! Incidents end to end: opened as a draft, published, moved through identified and
//! monitoring to resolved and a postmortem, through the API; after each step the public
//! page, the API, the Statuspage API and the announcement channels say so.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::TestApp;
use crate::common::fake_bluesky::FakeBluesky;
use crate::common::fake_discord::FakeDiscord;
use herald::domain::{
    ChannelKind, ChannelSecret, NewChannel, Role, Subject, default_events, default_milestones,
};

fn channel(name: &str, kind: ChannelKind, target: &str, secret: &str, api: String) -> NewChannel {
    NewChannel {
        name: name.into(),
        kind: Some(kind),
        target: target.into(),
        secret: ChannelSecret::new(secret),
        api_url: Some(api),
        events: default_events(kind),
        milestones: default_milestones(),
        langs: vec!["en".into()],
        enabled: true,
        ..NewChannel::default()
    }
}

pub struct Setup {
    pub app: TestApp,
    pub discord: FakeDiscord,
    pub bluesky: FakeBluesky,
    pub token: String,
}

pub async fn setup() -> Setup {
    let app = TestApp::new().await;
    let discord = FakeDiscord::start().await;
    let bluesky = FakeBluesky::start().await;
    app.add_channel(channel(
        "bot",
        ChannelKind::DiscordBot,
        &discord.announcement_channel().to_string(),
        &discord.bot_token(),
        discord.base(),
    ))
    .await;
    app.add_channel(channel(
        "bluesky",
        ChannelKind::Bluesky,
        &bluesky.handle(),
        &bluesky.password(),
        bluesky.url(),
    ))
    .await;
    app.component("api", "API").await;
    app.component("web", "Web").await;
    let token = app.token(Role::Maintainer).await;
    Setup {
        app,
        discord,
        bluesky,
        token,
    }
}

impl Setup {
    /// Post a monitor's notification; what Herald did with it.
    pub async fn alert(&self, token: &str, path: &str, body: Value) -> (String, Option<i64>) {
        let (status, v, _) = self
            .app
            .api(Method::POST, path, Some(token), Some(body))
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        (
            v["outcome"].as_str().unwrap().to_owned(),
            v["incident_id"].as_i64(),
        )
    }

    /// How many updates incident `id` has.
    pub async fn updates(&self, id: i64) -> usize {
        let (_, i) = self
            .call(Method::GET, &format!("/api/v1/incidents/{id}"), None)
            .await;
        i["updates"].as_array().unwrap().len()
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, v, _) = self.app.api(method, path, Some(&self.token), body).await;
        (status, v)
    }

    /// What the public sees: the front page's text, the incident page's status, and the
    /// Statuspage API's unresolved incidents and API component.
    pub async fn public(&self, id: i64) -> (String, StatusCode, Value, Value) {
        let front = self.app.get("/").await.text();
        let page = self.app.get(&format!("/incidents/{id}")).await.status;
        let unresolved = self.app.get("/api/v2/incidents/unresolved.json").await;
        let unresolved: Value = serde_json::from_str(&unresolved.text()).unwrap();
        let components = self.app.get("/api/v2/components.json").await;
        let components: Value = serde_json::from_str(&components.text()).unwrap();
        let api = components["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == "api")
            .cloned()
            .unwrap();
        (front, page, unresolved["incidents"].clone(), api)
    }
}

#[tokio::test]
async fn an_incident_is_told_on_the_page_the_api_and_every_channel() {
    let s = setup().await;
    // A channel that chose windows only: incidents never reach it.
    s.app
        .add_channel(NewChannel {
            name: "windows only".into(),
            kind: Some(ChannelKind::Webhook),
            target: "http://127.0.0.1:9/hook".into(),
            events: herald::domain::DEFAULT_EVENTS.to_vec(),
            enabled: true,
            ..NewChannel::default()
        })
        .await;
    let outbox = s.app.start_outbox();

    // A draft: nothing public, nothing announced.
    let (status, i) = s
        .call(
            Method::POST,
            "/api/v1/incidents",
            Some(json!({
                "title": "API errors on writes",
                "body": "Some **writes** fail with 500.",
                "impact": "major",
                "components": [{"slug": "api", "status": "partial_outage"}],
                "draft": true,
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{i}");
    assert_eq!(i["draft"], true);
    assert_eq!(i["status"], "investigating");
    let id = i["id"].as_i64().unwrap();
    let (front, page, unresolved, api) = s.public(id).await;
    assert!(
        front.contains("All systems operational"),
        "a draft is not public"
    );
    assert!(!front.contains("API errors on writes"));
    assert_eq!(page, StatusCode::NOT_FOUND);
    assert_eq!(unresolved, json!([]));
    assert_eq!(api["status"], "operational");

    // Published: red banner, the page, the API, the components.
    let (status, i) = s
        .call(
            Method::POST,
            &format!("/api/v1/incidents/{id}/publish"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{i}");
    assert_eq!(i["draft"], false);
    let (front, page, unresolved, api) = s.public(id).await;
    assert!(front.contains("banner-outage"), "{front}");
    assert!(front.contains("API errors on writes"));
    assert_eq!(page, StatusCode::OK);
    assert_eq!(unresolved[0]["name"], "API errors on writes");
    assert_eq!(unresolved[0]["status"], "investigating");
    assert_eq!(unresolved[0]["impact"], "major");
    assert_eq!(unresolved[0]["components"][0]["id"], "api");
    assert_eq!(api["status"], "partial_outage");
    let feed = s.app.get("/feed.atom").await.text();
    assert!(
        feed.contains("Incident: API errors on writes: Investigating"),
        "{feed}"
    );
    let feed = s.app.get("/components/web/feed.atom").await.text();
    assert!(
        !feed.contains("API errors on writes"),
        "not on another component's feed"
    );
    let badge = s.app.get("/badge.svg").await.text();
    assert!(badge.contains("partial outage"), "{badge}");
    let summary: Value =
        serde_json::from_str(&s.app.get("/api/v2/summary.json").await.text()).unwrap();
    assert_eq!(summary["status"]["indicator"], "major");
    assert_eq!(summary["incidents"].as_array().unwrap().len(), 1);

    // Identified, then monitoring with the component better; a step back is refused.
    let (status, i) = s
        .call(
            Method::POST,
            &format!("/api/v1/incidents/{id}/updates"),
            Some(json!({"status": "identified", "body": "A bad index on the writes table."})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{i}");
    assert_eq!(i["status"], "identified");
    let (status, i) = s
        .call(
            Method::POST,
            &format!("/api/v1/incidents/{id}/updates"),
            Some(
                json!({"status": "monitoring", "body": "Index rebuilt; watching error rates.",
                        "components": [{"slug": "api", "status": "degraded_performance"}]}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{i}");
    let (status, e) = s
        .call(
            Method::POST,
            &format!("/api/v1/incidents/{id}/updates"),
            Some(json!({"status": "investigating", "body": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{e}");
    let (status, e) = s
        .call(
            Method::POST,
            &format!("/api/v1/incidents/{id}/updates"),
            Some(json!({"body": "x", "components": [{"slug": "nope", "status": "major_outage"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(e["error"]["field"], "components");
    let (front, _, unresolved, api) = s.public(id).await;
    assert!(front.contains("Index rebuilt"), "the latest update leads");
    assert_eq!(unresolved[0]["status"], "monitoring");
    assert!(unresolved[0]["monitoring_at"].is_string());
    assert_eq!(api["status"], "degraded_performance");
    let changed = &unresolved[0]["incident_updates"][0]["affected_components"][0];
    assert_eq!(changed["old_status"], "partial_outage", "{changed}");
    assert_eq!(changed["new_status"], "degraded_performance");

    // Resolved: green again, the incident in the API as resolved.
    let (status, i) = s
        .call(
            Method::POST,
            &format!("/api/v1/incidents/{id}/resolve"),
            Some(json!({"body": "Error rates are back to normal."})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{i}");
    assert_eq!(i["status"], "resolved");
    assert!(i["resolved_at"].is_string());
    let (front, page, unresolved, api) = s.public(id).await;
    assert!(front.contains("All systems operational"), "{front}");
    assert_eq!(page, StatusCode::OK);
    assert_eq!(unresolved, json!([]));
    assert_eq!(api["status"], "operational");
    let all: Value =
        serde_json::from_str(&s.app.get("/api/v2/incidents.json").await.text()).unwrap();
    assert_eq!(all["incidents"][0]["status"], "resolved");

    // The postmortem: announced once, an edit is not.
    let (status, e) = s
        .call(
            Method::POST,
            &format!("/api/v1/incidents/{id}/reopen"),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a reopen says why: {e}"
    );
    for text in [
        "## What happened\nAn index was dropped.",
        "## What happened\nAn index was dropped by a migration.",
    ] {
        let (status, i) = s
            .call(
                Method::PUT,
                &format!("/api/v1/incidents/{id}/postmortem"),
                Some(json!({"body": text})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{i}");
    }
    let page = s.app.get(&format!("/incidents/{id}")).await.text();
    assert!(page.contains("<h2>What happened</h2>"), "{page}");
    assert!(page.contains("dropped by a migration"));
    let all: Value =
        serde_json::from_str(&s.app.get("/api/v2/incidents.json").await.text()).unwrap();
    assert_eq!(all["incidents"][0]["status"], "postmortem");

    let unsent = s.app.settle(30).await;
    assert!(unsent.is_empty(), "{unsent:#?}");
    let deliveries = s
        .app
        .service
        .deliveries(Subject::Incident(id))
        .await
        .unwrap();
    assert_eq!(
        deliveries.len(),
        2 * 5,
        "5 events on each of 2 channels: {deliveries:#?}"
    );

    // Discord: one live message, edited after each later event, plus a short message for
    // each (identified, monitoring, resolved, postmortem); nobody mentioned.
    let messages = s.discord.messages();
    let contents: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(messages.len(), 5, "{contents:#?}");
    let live = &messages[0];
    assert_eq!(live.edits, 4);
    let embed = &live.embeds[0];
    assert_eq!(embed["title"], "Incident: API errors on writes");
    assert!(
        embed["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/incidents/{id}"))
    );
    assert!(contents[1].contains("Identified"), "{}", contents[1]);
    assert!(contents[2].contains("Monitoring"), "{}", contents[2]);
    assert!(contents[3].contains("Resolved"), "{}", contents[3]);
    assert!(contents[4].contains("Postmortem"), "{}", contents[4]);
    for m in &messages {
        assert_eq!(m.allowed_mentions.as_ref().unwrap()["parse"], json!([]));
    }
    assert!(
        s.discord.schema_errors().is_empty(),
        "{:#?}",
        s.discord.schema_errors()
    );

    // Bluesky: one thread, the opening (with a link card) as its root.
    let records = s.bluesky.records();
    assert_eq!(records.len(), 5);
    let posts: Vec<(Value, String, String)> = records
        .iter()
        .map(|r| (r.value.clone(), r.uri.clone(), r.cid.clone()))
        .collect();
    crate::common::check_bluesky_thread(
        &posts,
        &format!("http://127.0.0.1:8080/incidents/{id}"),
        json!(["en"]),
    );
    let root = posts[0].0["text"].as_str().unwrap();
    assert!(root.contains("Incident: API errors on writes"), "{root}");
    assert!(root.contains("API (partial outage)"), "{root}");
    outbox.stop().await;
}

/// A receiver of signed webhooks: every body it was sent.
async fn hooks() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = got.clone();
    let router = axum::Router::new().fallback(move |body: String| {
        let keep = keep.clone();
        async move {
            keep.lock()
                .unwrap()
                .push(serde_json::from_str(&body).unwrap());
            StatusCode::NO_CONTENT
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (format!("http://{addr}/hooks"), got)
}

/// An Alertmanager webhook body (format version 4) for group `group` with these alerts
/// (fingerprint, status).
pub fn alertmanager(group: &str, status: &str, alerts: &[(&str, &str)]) -> Value {
    let alerts: Vec<Value> = alerts
        .iter()
        .map(|(fp, st)| {
            json!({
                "status": st,
                "labels": {"alertname": "HighErrorRate", "component": "api",
                           "severity": "critical", "instance": format!("api-{fp}")},
                "annotations": {"summary": format!("5xx above 5% on api-{fp}")},
                "startsAt": "2026-12-06T10:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.example/graph",
                "fingerprint": fp,
            })
        })
        .collect();
    json!({
        "version": "4",
        "groupKey": group,
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "herald",
        "groupLabels": {"alertname": "HighErrorRate"},
        "commonLabels": {"alertname": "HighErrorRate", "component": "api"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example",
        "alerts": alerts,
    })
}

#[tokio::test]
async fn an_alert_opens_a_draft_a_maintainer_runs_to_resolution_and_repeats_say_nothing() {
    let s = setup().await;
    let (url, got) = hooks().await;
    s.app
        .add_channel(NewChannel {
            name: "hooks".into(),
            kind: Some(ChannelKind::Webhook),
            target: url,
            events: default_events(ChannelKind::Webhook),
            enabled: true,
            ..NewChannel::default()
        })
        .await;
    let outbox = s.app.start_outbox();
    let reporter = s.app.token(Role::Reporter).await;
    let alert = |body: Value| s.alert(&reporter, "/api/v1/alerts/alertmanager", body);
    let updates = |id: i64| s.updates(id);

    // The alert fires: a draft, with what fired; nothing public, nothing announced.
    let group = "{}:{alertname=\"HighErrorRate\"}";
    let (outcome, id) = alert(alertmanager(group, "firing", &[("a1", "firing")])).await;
    assert_eq!(outcome, "opened");
    let id = id.unwrap();
    let (_, i) = s
        .call(Method::GET, &format!("/api/v1/incidents/{id}"), None)
        .await;
    assert_eq!(i["draft"], true);
    assert_eq!(i["source"], "alertmanager");
    assert_eq!(i["impact"], "major");
    assert_eq!(
        i["components"],
        json!([{"slug": "api", "status": "major_outage"}])
    );
    assert!(
        i["updates"][0]["body"]
            .as_str()
            .unwrap()
            .contains("5xx above 5% on api-a1")
    );
    let (front, page, unresolved, _) = s.public(id).await;
    assert!(front.contains("All systems operational"));
    assert_eq!(page, StatusCode::NOT_FOUND);
    assert_eq!(unresolved, json!([]));
    assert_eq!(s.app.settle(5).await.len(), 0);
    assert!(
        s.app
            .service
            .deliveries(Subject::Incident(id))
            .await
            .unwrap()
            .is_empty()
    );

    // Alertmanager repeats it every repeat_interval: nothing changes.
    for _ in 0..3 {
        let (outcome, again) = alert(alertmanager(group, "firing", &[("a1", "firing")])).await;
        assert_eq!((outcome.as_str(), again), ("unchanged", Some(id)));
    }
    assert_eq!(updates(id).await, 1);

    // A maintainer publishes it and follows it through.
    let (status, i) = s
        .call(
            Method::POST,
            &format!("/api/v1/incidents/{id}/publish"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{i}");
    let (front, page, unresolved, api) = s.public(id).await;
    assert!(front.contains("banner-outage"));
    assert_eq!(page, StatusCode::OK);
    assert_eq!(unresolved[0]["id"], format!("incident-{id}"));
    assert_eq!(api["status"], "major_outage");
    for (status, body) in [
        ("identified", "A bad deploy of the API."),
        ("monitoring", "Rolled back; watching."),
    ] {
        let (code, i) = s
            .call(
                Method::POST,
                &format!("/api/v1/incidents/{id}/updates"),
                Some(json!({"status": status, "body": body})),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED, "{i}");
        let (_, _, unresolved, _) = s.public(id).await;
        assert_eq!(unresolved[0]["status"], status);
    }
    let (outcome, _) = alert(alertmanager(group, "firing", &[("a1", "firing")])).await;
    assert_eq!(outcome, "unchanged");
    let before = updates(id).await;

    // A second alert joins the group: one update.
    let (outcome, _) = alert(alertmanager(
        group,
        "firing",
        &[("a1", "firing"), ("a2", "firing")],
    ))
    .await;
    assert_eq!(outcome, "updated");
    assert_eq!(updates(id).await, before + 1);
    let (outcome, _) = alert(alertmanager(
        group,
        "firing",
        &[("a1", "firing"), ("a2", "firing")],
    ))
    .await;
    assert_eq!(outcome, "unchanged");

    // The group resolves: so does the incident, once.
    let (outcome, _) = alert(alertmanager(
        group,
        "resolved",
        &[("a1", "resolved"), ("a2", "resolved")],
    ))
    .await;
    assert_eq!(outcome, "resolved");
    let (_, i) = s
        .call(Method::GET, &format!("/api/v1/incidents/{id}"), None)
        .await;
    assert_eq!(i["status"], "resolved");
    let (front, _, unresolved, api) = s.public(id).await;
    assert!(front.contains("All systems operational"));
    assert_eq!(unresolved, json!([]));
    assert_eq!(api["status"], "operational");
    let (outcome, _) = alert(alertmanager(group, "resolved", &[("a1", "resolved")])).await;
    assert_eq!(outcome, "unchanged");

    // It fires again within the quiet time: the same incident reopens.
    let (outcome, again) = alert(alertmanager(group, "firing", &[("a1", "firing")])).await;
    assert_eq!((outcome.as_str(), again), ("reopened", Some(id)));
    let (_, i) = s
        .call(Method::GET, &format!("/api/v1/incidents/{id}"), None)
        .await;
    assert_eq!(i["status"], "investigating");

    // Bad payloads: a clear 4xx, nothing changed.
    let count = updates(id).await;
    for (path, body, code) in [
        (
            "/api/v1/alerts/alertmanager",
            json!({"status": "firing"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/alerts/alertmanager",
            json!({"version": "3", "groupKey": "g", "status": "firing", "alerts": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/alerts/alertmanager",
            json!({"groupKey": group, "status": "exploded", "alerts": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("/api/v1/alerts/nagios", json!({}), StatusCode::NOT_FOUND),
        (
            "/api/v1/alerts/uptime-kuma",
            json!({"heartbeat": "down"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let (status, e, _) = s
            .app
            .api(Method::POST, path, Some(&reporter), Some(body))
            .await;
        assert_eq!(status, code, "{path}: {e}");
        assert!(e["error"]["message"].is_string(), "{e}");
    }
    assert_eq!(updates(id).await, count);
    // The reporter token posts alerts, and no more.
    let (status, _, _) = s
        .app
        .api(
            Method::POST,
            &format!("/api/v1/incidents/{id}/resolve"),
            Some(&reporter),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Announced: the publication, identified, monitoring, the joining alert, the resolution
    // and the reopening; never a repeat.
    let unsent = s.app.settle(30).await;
    assert!(unsent.is_empty(), "{unsent:#?}");
    let messages = s.discord.messages();
    assert_eq!(
        messages.len(),
        6,
        "{:#?}",
        messages.iter().map(|m| &m.content).collect::<Vec<_>>()
    );
    assert_eq!(messages[0].edits, 5);
    assert_eq!(s.bluesky.records().len(), 6);
    let events: Vec<String> = got
        .lock()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        events,
        [
            "incident.opened",
            "incident.updated",
            "incident.updated",
            "incident.updated",
            "incident.resolved",
            "incident.reopened"
        ]
    );
    let first = got.lock().unwrap()[0].clone();
    assert_eq!(first["data"]["incident"]["source"], "alertmanager");
    assert_eq!(first["data"]["incident"]["components"][0]["slug"], "api");
    outbox.stop().await;
}

#[tokio::test]
async fn uptime_kuma_and_grafana_open_and_resolve_their_incidents() {
    let s = setup().await;
    let reporter = s.app.token(Role::Reporter).await;
    let post = |path: &'static str, body: Value| s.alert(&reporter, path, body);
    // Uptime Kuma's "Test" button: no monitor, nothing to do.
    let (outcome, _) = post(
        "/api/v1/alerts/uptime-kuma",
        json!({"heartbeat": null, "monitor": null, "msg": "Uptime Kuma Alert"}),
    )
    .await;
    assert_eq!(outcome, "ignored");
    let kuma = |status: i64| {
        json!({
            "heartbeat": {"monitorID": 7, "status": status, "time": "2026-12-06 10:00:00", "msg": "timeout", "important": true, "duration": 60},
            "monitor": {"id": 7, "name": "Web", "url": "https://example.com", "type": "http"},
            "msg": "[Web] [🔴 Down] timeout",
        })
    };
    let (outcome, id) = post("/api/v1/alerts/uptime-kuma", kuma(0)).await;
    assert_eq!(outcome, "opened");
    let id = id.unwrap();
    let (_, i) = s
        .call(Method::GET, &format!("/api/v1/incidents/{id}"), None)
        .await;
    assert_eq!(i["title"], "Web is down");
    assert_eq!(
        i["components"],
        json!([{"slug": "web", "status": "major_outage"}])
    );
    assert_eq!(
        post("/api/v1/alerts/uptime-kuma", kuma(0)).await.0,
        "unchanged"
    );
    assert_eq!(
        post("/api/v1/alerts/uptime-kuma", kuma(2)).await.0,
        "ignored",
        "pending"
    );
    assert_eq!(
        post("/api/v1/alerts/uptime-kuma", kuma(1)).await,
        ("resolved".to_owned(), Some(id))
    );

    // Grafana: Alertmanager's body plus its own fields.
    let mut grafana = alertmanager(
        "{}/{}:{alertname=\"Latency\"}",
        "firing",
        &[("g1", "firing")],
    );
    grafana["orgId"] = json!(1);
    grafana["title"] = json!("[FIRING:1] Latency");
    grafana["state"] = json!("alerting");
    grafana["message"] = json!("Latency is high");
    grafana["alerts"][0]["labels"]["severity"] = json!("warning");
    grafana["alerts"][0]["values"] = json!({"B": 1.5});
    let (outcome, gid) = post("/api/v1/alerts/grafana", grafana.clone()).await;
    assert_eq!(outcome, "opened");
    assert_ne!(gid, Some(id), "another monitor, another incident");
    let (_, i) = s
        .call(
            Method::GET,
            &format!("/api/v1/incidents/{}", gid.unwrap()),
            None,
        )
        .await;
    assert_eq!(i["source"], "grafana");
    assert_eq!(i["impact"], "minor");
    assert_eq!(i["components"][0]["status"], "partial_outage");
    // Grafana's "Test" button: nothing broke.
    let mut test = alertmanager("test-1", "firing", &[("t1", "firing")]);
    test["alerts"][0]["labels"]["alertname"] = json!("TestAlert");
    assert_eq!(post("/api/v1/alerts/grafana", test).await.0, "ignored");
    // A summary with a tab and an escape: still an incident, the words on one line.
    let mut odd = alertmanager("{}:{alertname=\"Odd\"}", "firing", &[("o1", "firing")]);
    odd["alerts"][0]["annotations"]["summary"] = json!("disk\tfull\u{1b}[31m");
    odd["commonAnnotations"]["summary"] = json!("disk\tfull");
    let (outcome, _) = post("/api/v1/alerts/alertmanager", odd).await;
    assert_eq!(outcome, "opened");
    // A group of 300 alerts with long summaries: still one incident, its update within limits.
    let fps: Vec<(String, &str)> = (0..300).map(|n| (format!("big{n}"), "firing")).collect();
    let fps: Vec<(&str, &str)> = fps.iter().map(|(f, s)| (f.as_str(), *s)).collect();
    let mut big = alertmanager("{}:{alertname=\"Big\"}", "firing", &fps);
    for a in big["alerts"].as_array_mut().unwrap() {
        a["annotations"]["summary"] = json!("s".repeat(400));
    }
    let (outcome, bid) = post("/api/v1/alerts/alertmanager", big).await;
    assert_eq!(outcome, "opened");
    let (_, i) = s
        .call(
            Method::GET,
            &format!("/api/v1/incidents/{}", bid.unwrap()),
            None,
        )
        .await;
    assert!(
        i["updates"][0]["body"]
            .as_str()
            .unwrap()
            .ends_with("and 290 more"),
        "{i}"
    );
    grafana["status"] = json!("resolved");
    grafana["alerts"][0]["status"] = json!("resolved");
    assert_eq!(post("/api/v1/alerts/grafana", grafana).await.0, "resolved");
}

/// The Alertmanager configuration in docs/alerts.md, pointed at `herald` with `token`, its
/// waits shortened to seconds. Fails when the guide's block changed shape.
fn guide_alertmanager_config(herald: &str, token: &str) -> String {
    let guide =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/alerts.md")).unwrap();
    let section = &guide[guide
        .find("## Alertmanager")
        .expect("the Alertmanager section")..];
    let start = section.find("```yaml\n").expect("its configuration block") + 8;
    let block = &section[start..start + section[start..].find("```").unwrap()];
    let mut config = block.to_owned();
    for (from, to) in [
        ("https://status.example.com", herald),
        ("REPORTER_TOKEN", token),
        ("group_wait: 30s", "group_wait: 1s"),
        ("group_interval: 5m", "group_interval: 1s"),
    ] {
        assert!(
            config.contains(from),
            "docs/alerts.md no longer has {from:?}"
        );
        config = config.replace(from, to);
    }
    config
}

/// The real Alertmanager (Debian's prometheus-alertmanager), configured as docs/alerts.md
/// says, opens an incident in Herald from an alert posted to it, then resolves it.
#[tokio::test]
async fn the_real_alertmanager_opens_and_resolves_an_incident() {
    let s = setup().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let herald = format!("http://{}", listener.local_addr().unwrap());
    let router = s.app.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let reporter = s.app.token(Role::Reporter).await;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(&config, guide_alertmanager_config(&herald, &reporter)).unwrap();
    let port = crate::common::free_port();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _alertmanager = Kill(
        std::process::Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("alertmanager.log")).unwrap())
            .spawn()
            .expect("prometheus-alertmanager (Debian's package; .ci/test installs it)"),
    );
    let log = || std::fs::read_to_string(dir.path().join("alertmanager.log")).unwrap_or_default();

    let client = reqwest::Client::new();
    let am_url = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while client
        .get(format!("{am_url}/-/ready"))
        .send()
        .await
        .map(|r| !r.status().is_success())
        .unwrap_or(true)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "Alertmanager did not start:\n{}",
            log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let post_alert = |ends_at: jiff::Timestamp| {
        let client = client.clone();
        let url = format!("{am_url}/api/v2/alerts");
        async move {
            let r = client
                .post(url)
                .json(&json!([{
                    "labels": {"alertname": "APIErrorRate", "component": "api", "severity": "critical"},
                    "annotations": {"summary": "More than 5% of API requests fail"},
                    "startsAt": jiff::Timestamp::now().checked_sub(jiff::SignedDuration::from_secs(60)).unwrap().to_string(),
                    "endsAt": ends_at.to_string(),
                }]))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        }
    };
    let wait_for = |want: &'static str| {
        let s = &s;
        let log = &log;
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                let (_, list) = s.call(Method::GET, "/api/v1/incidents", None).await;
                if let Some(i) = list.as_array().unwrap().first()
                    && i["status"] == want
                {
                    return i.clone();
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "no {want} incident within 30 s: {list}\n{}",
                    log()
                );
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    };

    post_alert(
        jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_secs(3600))
            .unwrap(),
    )
    .await;
    let i = wait_for("investigating").await;
    assert_eq!(i["title"], "More than 5% of API requests fail");
    assert_eq!(i["source"], "alertmanager");
    assert_eq!(i["draft"], true, "an alert opens a draft by default");
    assert_eq!(
        i["components"],
        json!([{"slug": "api", "status": "major_outage"}])
    );

    // Ended: Alertmanager sends the resolution, and Herald resolves the same incident.
    post_alert(
        jiff::Timestamp::now()
            .checked_sub(jiff::SignedDuration::from_secs(1))
            .unwrap(),
    )
    .await;
    let resolved = wait_for("resolved").await;
    assert_eq!(resolved["id"], i["id"]);
    let (_, all) = s.call(Method::GET, "/api/v1/incidents", None).await;
    assert_eq!(
        all.as_array().unwrap().len(),
        1,
        "one incident for the group: {all}"
    );
}

/// A maintainer runs an incident from the admin pages: opens it from a failed step (linked
/// both ways), a bad form keeps what was typed, updates change the status and the
/// components, resolve, postmortem; every action audited with who did it.
#[tokio::test]
async fn a_maintainer_runs_an_incident_from_the_admin_pages() {
    let app = TestApp::new().await;
    let api = app.component("api", "API").await;
    app.component("web", "Web").await;
    app.user("mo", Role::Maintainer).await;
    let b = app.sign_in("mo").await;
    let w = app
        .window(
            "DecAPI migration",
            herald::domain::Schedule::Tentative { hint: None },
            2,
            vec![api],
        )
        .await;
    app.act(w.id, herald::domain::WindowAction::Announce).await;
    app.act(w.id, herald::domain::WindowAction::Start).await;
    app.step(w.id, 1, herald::domain::StepAction::Start).await;
    app.step(w.id, 1, herald::domain::StepAction::Fail).await;
    let run = app
        .get_as(&format!("/admin/maintenances/{}", w.id), &b.cookie)
        .await
        .text();
    let link = format!("/admin/incidents?maintenance={}", w.id);
    assert!(run.contains(&link), "the run view offers an incident");
    let form = app.get_as(&link, &b.cookie).await.text();
    assert!(form.contains("Problem during DecAPI migration"), "{form}");

    // No title: the form comes back with the error and what was typed.
    let r = app
        .post_form(
            "/admin/incidents",
            Some(&b.cookie),
            &[
                ("csrf", &b.csrf),
                ("title", " "),
                ("impact", "major"),
                ("status", "investigating"),
                ("c_api", "partial_outage"),
                ("body", "Writes fail."),
                ("maintenance_id", &w.id.to_string()),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let page = r.text();
    assert!(page.contains("field-error"), "{page}");
    assert!(page.contains("Writes fail."));
    assert!(
        page.contains(r#"<option value="partial_outage" selected>"#),
        "{page}"
    );

    let r = app
        .submit(
            "/admin/incidents",
            &b.cookie,
            &[
                ("csrf", &b.csrf),
                ("title", "Writes fail after the migration"),
                ("impact", "major"),
                ("status", "investigating"),
                ("c_api", "partial_outage"),
                ("c_web", ""),
                ("body", "Writes fail."),
                ("maintenance_id", &w.id.to_string()),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains("Incident opened"), "{}", r.text());
    let token = app.token(Role::Maintainer).await;
    let (_, list, _) = app
        .api(Method::GET, "/api/v1/incidents", Some(&token), None)
        .await;
    let id = list[0]["id"].as_i64().unwrap();
    assert_eq!(list[0]["maintenance_id"], w.id);
    let dashboard = app.get_as("/admin", &b.cookie).await.text();
    assert!(
        dashboard.contains(&format!("/admin/incidents/{id}")),
        "the dashboard lists open incidents"
    );
    let window_page = app.get(&format!("/maintenance/{}", w.id)).await.text();
    assert!(
        window_page.contains(&format!("/incidents/{id}")),
        "linked both ways"
    );
    let incident_page = app.get(&format!("/incidents/{id}")).await.text();
    assert!(incident_page.contains(&format!("/maintenance/{}", w.id)));

    // Identified, the web component now degraded too.
    let r = app
        .submit(
            &format!("/admin/incidents/{id}/updates"),
            &b.cookie,
            &[
                ("csrf", &b.csrf),
                ("status", "identified"),
                ("c_api", "partial_outage"),
                ("c_web", "degraded_performance"),
                ("body", "The migration dropped an index."),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let i = app.service.incident(id).await.unwrap();
    assert_eq!(i.status, herald::domain::IncidentStatus::Identified);
    assert_eq!(i.components.len(), 2);
    // A refused update keeps the words.
    let r = app
        .post_form(
            &format!("/admin/incidents/{id}/updates"),
            Some(&b.cookie),
            &[
                ("csrf", &b.csrf),
                ("status", "identified"),
                ("c_api", "partial_outage"),
                ("body", " "),
            ],
            &[],
        )
        .await;
    assert!(r.status.is_client_error(), "{}", r.status);
    assert!(r.text().contains("Not done"));

    for (path, pairs) in [
        (
            format!("/admin/incidents/{id}/action"),
            vec![("action", "resolve"), ("note", "Index rebuilt.")],
        ),
        (
            format!("/admin/incidents/{id}/postmortem"),
            vec![("postmortem", "## Cause\nA migration dropped the index.")],
        ),
    ] {
        let mut all = vec![("csrf", b.csrf.as_str())];
        all.extend(pairs);
        let r = app.submit(&path, &b.cookie, &all).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
    }
    let i = app.service.incident(id).await.unwrap();
    assert!(!i.is_open());
    assert!(i.postmortem.unwrap().contains("dropped the index"));
    let audit = app.service.audit_log(100).await.unwrap();
    for action in [
        "incident.create",
        "incident.update",
        "incident.resolve",
        "incident.postmortem",
    ] {
        assert!(
            audit
                .iter()
                .any(|a| a.action == action && a.actor == "user:mo"),
            "{action} audited: {audit:#?}"
        );
    }
    let admin = app
        .get_as(&format!("/admin/incidents/{id}"), &b.cookie)
        .await
        .text();
    assert!(admin.contains("user:mo"), "the timeline names who posted");
}

/// An admin sets a component's status by hand, with why, as Statuspage allows: it shows
/// everywhere the status does, as the worst with incidents and windows, until set back to
/// operational; a maintainer may not.
#[tokio::test]
async fn an_admin_sets_a_component_status_by_hand() {
    let app = TestApp::new().await;
    app.component("api", "API").await;
    let admin = app.token(Role::Admin).await;
    let maintainer = app.token(Role::Maintainer).await;
    let put = |token: String, body: Value| {
        let app = &app;
        async move {
            app.api(
                Method::PUT,
                "/api/v1/components/api/status",
                Some(&token),
                Some(body),
            )
            .await
        }
    };
    let (status, _, _) = put(maintainer, json!({"status": "major_outage", "body": "x"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, e, _) = put(admin.clone(), json!({"status": "partial_outage"})).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a status set by hand says why: {e}"
    );
    let (status, e, _) = put(admin.clone(), json!({"status": "broken", "body": "x"})).await;
    assert_eq!(
        (status, e["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("status"))
    );
    let (status, c, _) = put(
        admin.clone(),
        json!({"status": "partial_outage", "body": "The EU region answers slowly."}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{c}");
    assert_eq!(c["status"], "partial_outage");
    let front = app.get("/").await.text();
    assert!(
        front.contains("The EU region answers slowly."),
        "the note on the page"
    );
    let v2: Value = serde_json::from_str(&app.get("/api/v2/components.json").await.text()).unwrap();
    assert_eq!(v2["components"][0]["status"], "partial_outage");
    assert!(
        app.get("/badge.svg")
            .await
            .text()
            .contains("partial outage")
    );
    let audit = app.service.audit_log(10).await.unwrap();
    assert!(
        audit.iter().any(|a| a.action == "component.status"),
        "{audit:#?}"
    );

    let (status, c, _) = put(admin, json!({"status": "operational"})).await;
    assert_eq!(status, StatusCode::OK, "{c}");
    assert_eq!(c["status"], "operational");
    assert!(!app.get("/").await.text().contains("The EU region"));

    // The same from the admin pages.
    app.user("ada", Role::Admin).await;
    let b = app.sign_in("ada").await;
    let r = app
        .submit(
            "/admin/components/api",
            &b.cookie,
            &[
                ("csrf", &b.csrf),
                ("op", "status"),
                ("status", "major_outage"),
                ("note", "Down in every region."),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains("Status set"), "{}", r.text());
    assert!(app.get("/").await.text().contains("Down in every region."));
    let (_, list, _) = app
        .api(
            Method::GET,
            "/api/v1/components",
            Some(&app.token(Role::Reporter).await),
            None,
        )
        .await;
    assert_eq!(list[0]["status"], "major_outage");
}

/// Two instances on one database take the same new alert group at the same moment: one
/// incident, whoever wins (the group's key is unique; the loser retries and finds it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_racing_on_a_new_alert_group_open_one_incident() {
    use herald::service::{AlertNotice, AlertPolicy, Service};
    let app = TestApp::new().await;
    let store = app.service.store().clone();
    let a = Service::new(store.clone()).acting(herald::domain::Actor::System);
    let b = Service::new(store).acting(herald::domain::Actor::System);
    let notice = |n: usize| AlertNotice {
        source: "alertmanager".into(),
        group_key: "{}:{alertname=\"Race\"}".into(),
        firing: true,
        alerts: vec![(format!("fp{}", n % 2), format!("Race {n}"))],
        title: "Race".into(),
        impact: herald::domain::Impact::Minor,
        components: vec![],
        detail: String::new(),
    };
    let policy = AlertPolicy {
        quiet: std::time::Duration::from_secs(3600),
        publish: false,
    };
    let mut tasks = Vec::new();
    for n in 0..20 {
        let service = if n % 2 == 0 { a.clone() } else { b.clone() };
        let notice = notice(n);
        let policy = policy.clone();
        tasks.push(tokio::spawn(async move {
            service.receive_alert(&notice, &policy).await.unwrap()
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap().1.unwrap());
    }
    assert_eq!(ids.len(), 1, "one incident for the group: {ids:?}");
    let all = app
        .service
        .incidents(herald::store::IncidentFilter::All, 0, 10)
        .await
        .unwrap();
    assert_eq!(all.total, 1);
}
