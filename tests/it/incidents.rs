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
                "components": [{"component": "api", "status": "partial_outage"}],
                "publish": false,
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
                        "components": [{"component": "api", "status": "degraded_performance"}]}),
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
            Some(json!({"body": "x", "components": [{"component": "nope", "status": "major_outage"}]})),
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
