//! Rollouts end to end: the Fishjam rollout (the second seed) driven through the API one
//! instance at a time, with a forced target and two versions side by side, checked after every
//! report on the public page, in the API and on local servers speaking Discord's and Bluesky's
//! wire formats; stalls, pauses, estimates and stale targets with a clock the test moves.

use std::time::Duration;

use crate::common::TestApp;
use crate::common::fake_bluesky::FakeBluesky;
use crate::common::fake_discord::FakeDiscord;
use axum::http::{Method, StatusCode};
use herald::domain::{
    Channel, ChannelKind, ChannelSecret, DeliveryState, NewChannel, Role, Subject, UpdateKind,
    default_events, default_milestones,
};
use serde_json::{Value, json};

fn channel(
    name: &str,
    kind: ChannelKind,
    target: &str,
    secret: &str,
    api: Option<String>,
) -> NewChannel {
    NewChannel {
        name: name.into(),
        kind: Some(kind),
        target: target.into(),
        secret: ChannelSecret::new(secret),
        api_url: api,
        events: default_events(kind),
        milestones: default_milestones(),
        langs: vec!["en".into()],
        enabled: true,
        ..NewChannel::default()
    }
}

struct Setup {
    app: TestApp,
    discord: FakeDiscord,
    bluesky: FakeBluesky,
    bot: Channel,
    sky: Channel,
    token: String,
}

async fn setup_with(app: TestApp) -> Setup {
    let discord = FakeDiscord::start().await;
    let bluesky = FakeBluesky::start().await;
    app.add_channel(channel(
        "webhook",
        ChannelKind::DiscordWebhook,
        "",
        &discord.webhook_url(),
        None,
    ))
    .await;
    let bot = app
        .add_channel(channel(
            "bot",
            ChannelKind::DiscordBot,
            &discord.announcement_channel().to_string(),
            &discord.bot_token(),
            Some(discord.base()),
        ))
        .await;
    let sky = app
        .add_channel(channel(
            "bluesky",
            ChannelKind::Bluesky,
            &bluesky.handle(),
            &bluesky.password(),
            Some(bluesky.url()),
        ))
        .await;
    let token = app.token(Role::Maintainer).await;
    Setup {
        app,
        discord,
        bluesky,
        bot,
        sky,
        token,
    }
}

async fn setup() -> Setup {
    setup_with(TestApp::new().await).await
}

impl Setup {
    async fn create(&self, body: Value) -> i64 {
        let (status, r, _) = self
            .app
            .api(
                Method::POST,
                "/api/v1/rollouts",
                Some(&self.token),
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{r}");
        r["id"].as_i64().unwrap()
    }

    async fn report(&self, id: i64, name: &str, body: Value) -> Value {
        let (status, r, _) = self
            .app
            .api(
                Method::PUT,
                &format!("/api/v1/rollouts/{id}/targets/{name}"),
                Some(&self.token),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{name} {body}: {r}");
        r
    }

    async fn get(&self, id: i64) -> Value {
        let (status, r, _) = self
            .app
            .api(
                Method::GET,
                &format!("/api/v1/rollouts/{id}"),
                Some(&self.token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        r
    }

    async fn page(&self, path: &str) -> String {
        let r = self.app.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        r.text()
    }

    async fn timeline_len(&self, id: i64) -> usize {
        self.app
            .service
            .rollout_updates(id, None)
            .await
            .unwrap()
            .len()
    }

    /// Every delivery sent, none left; then what the bot posted in its channel.
    async fn settled(&self) -> Vec<crate::common::fake_discord::Message> {
        let unsent = self.app.settle(30).await;
        assert!(unsent.is_empty(), "{unsent:#?}");
        self.discord
            .messages()
            .into_iter()
            .filter(|m| !m.webhook)
            .collect()
    }

    fn posts(&self) -> Vec<Value> {
        self.bluesky
            .records()
            .into_iter()
            .map(|r| r.value)
            .collect()
    }
}

fn live_description(m: &crate::common::fake_discord::Message) -> String {
    m.embeds[0]["description"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn the_fishjam_rollout_reaches_the_page_the_api_discord_and_bluesky() {
    let s = setup().await;
    let outbox = s.app.start_outbox();
    let id = s
        .create(json!({"title": "Fishjam v1.4.0", "from_version": "v1.3.2",
                       "to_version": "v1.4.0",
                       "targets": ["fishjam-1", "fishjam-2", "fishjam-3"]}))
        .await;
    let page = s.page(&format!("/rollouts/{id}")).await;
    assert!(page.contains("Not started"), "{page}");
    assert!(
        s.settled().await.is_empty(),
        "nothing is announced before a report"
    );

    // fishjam-1 receives SIGTERM: it drains.
    s.report(
        id,
        "fishjam-1",
        json!({"state": "draining", "remaining": {"rooms": 2}}),
    )
    .await;
    let r = s.get(id).await;
    assert_eq!(r["state"], "in_progress");
    assert_eq!(
        r["summary"],
        "0 of 3 targets on v1.4.0, fishjam-1 draining: rooms 2"
    );
    let front = s.page("/").await;
    assert!(front.contains("Rolling out now"), "{front}");
    assert!(front.contains("fishjam-1"));
    assert!(front.contains("Rollout in progress"));
    let bot = s.settled().await;
    assert_eq!(bot.len(), 1, "the live message, carrying the start");
    assert!(
        bot[0].content.contains("rolling out v1.4.0"),
        "{}",
        bot[0].content
    );
    assert!(bot[0].crossposted, "announcement channels publish");
    assert!(live_description(&bot[0]).contains("fishjam-1: draining (rooms 2 of 2)"));
    let posts = s.posts();
    assert_eq!(posts.len(), 1, "Bluesky: the start");
    assert!(
        posts[0]["text"]
            .as_str()
            .unwrap()
            .contains("Rolling out v1.4.0")
    );
    assert_eq!(
        posts[0]["embed"]["external"]["uri"],
        format!("http://127.0.0.1:8080/rollouts/{id}")
    );

    // The same report again: nothing new anywhere.
    let entries = s.timeline_len(id).await;
    let deliveries = s
        .app
        .service
        .deliveries(Subject::Rollout(id))
        .await
        .unwrap()
        .len();
    s.report(
        id,
        "fishjam-1",
        json!({"state": "draining", "remaining": {"rooms": 2}}),
    )
    .await;
    assert_eq!(s.timeline_len(id).await, entries);
    assert_eq!(
        s.app
            .service
            .deliveries(Subject::Rollout(id))
            .await
            .unwrap()
            .len(),
        deliveries
    );

    // It drains, updates, comes back on v1.4.0: two versions side by side.
    for body in [
        json!({"state": "draining", "remaining": {"rooms": 0}}),
        json!({"state": "drained"}),
        json!({"state": "updating"}),
        json!({"state": "healthy", "version": "v1.4.0"}),
    ] {
        s.report(id, "fishjam-1", body).await;
    }
    let r = s.get(id).await;
    assert_eq!(
        r["versions_headline"],
        "v1.4.0 on 1 of 3 instances · v1.3.2 on 2"
    );
    let page = s.page(&format!("/rollouts/{id}")).await;
    assert!(
        page.contains("v1.4.0 on 1 of 3 instances · v1.3.2 on 2"),
        "{page}"
    );
    let bot = s.settled().await;
    assert_eq!(
        bot.len(),
        1,
        "moves that are not milestones only redraw the live message"
    );
    assert!(
        live_description(&bot[0]).contains("fishjam-1: healthy"),
        "{}",
        live_description(&bot[0])
    );
    assert!(bot[0].edits >= 1);
    assert_eq!(
        s.posts().len(),
        1,
        "drains and healthy targets never post to Bluesky"
    );

    // fishjam-2 has a hung recording: the team forces it.
    s.report(
        id,
        "fishjam-2",
        json!({"state": "draining", "remaining": {"rooms": 12, "recordings": 3}}),
    )
    .await;
    s.report(
        id,
        "fishjam-2",
        json!({"state": "draining", "remaining": {"rooms": 0, "recordings": 1}}),
    )
    .await;
    let page = s.page(&format!("/rollouts/{id}")).await;
    assert!(page.contains("left of 3"), "{page}");
    let (status, e, _) = s
        .app
        .api(
            Method::PUT,
            &format!("/api/v1/rollouts/{id}/targets/fishjam-2"),
            Some(&s.token),
            Some(json!({"state": "updating"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{e}");
    s.report(
        id,
        "fishjam-2",
        json!({"state": "updating", "forced": true, "note": "recording stuck for 40 min"}),
    )
    .await;
    let page = s.page(&format!("/rollouts/{id}")).await;
    assert!(page.contains("recording stuck for 40 min"), "{page}");
    assert!(page.contains("Forced"), "{page}");
    let bot = s.settled().await;
    assert_eq!(bot.len(), 2, "the forced target gets a message of its own");
    assert!(
        bot[1].content.contains("fishjam-2 was forced to updating"),
        "{}",
        bot[1].content
    );
    assert!(live_description(&bot[0]).contains("fishjam-2: updating · forced"));
    let posts = s.posts();
    assert_eq!(posts.len(), 2);
    assert!(posts[1]["text"].as_str().unwrap().contains("forced"));
    assert_eq!(posts[1]["reply"]["root"]["uri"], s.bluesky.records()[0].uri);

    s.report(
        id,
        "fishjam-2",
        json!({"state": "healthy", "version": "v1.4.0"}),
    )
    .await;
    // fishjam-3 has no rooms: straight to drained.
    s.report(id, "fishjam-3", json!({"state": "drained"})).await;
    s.report(id, "fishjam-3", json!({"state": "healthy"})).await;
    let r = s.get(id).await;
    assert_eq!(r["state"], "completed");
    assert_eq!(r["versions_headline"], "v1.4.0 on 3 of 3 instances");
    let front = s.page("/").await;
    assert!(
        !front.contains("Rolling out now"),
        "finished: no longer current"
    );
    assert!(front.contains("Rollout completed"), "{front}");
    let bot = s.settled().await;
    assert_eq!(bot.len(), 3, "live message, forced, completed");
    assert!(
        bot[2].content.contains("Rollout completed"),
        "{}",
        bot[2].content
    );
    assert!(live_description(&bot[0]).contains("3 of 3 healthy"));
    assert_eq!(bot[0].embeds[0]["fields"][0]["value"], "Completed");
    let posts = s.posts();
    assert_eq!(posts.len(), 3, "start, forced, completed");
    assert!(
        posts[2]["text"]
            .as_str()
            .unwrap()
            .contains("Rollout completed")
    );
    assert!(
        s.discord.schema_errors().is_empty(),
        "{:#?}",
        s.discord.schema_errors()
    );
    assert!(s.bluesky.errors().is_empty(), "{:#?}", s.bluesky.errors());

    // Exactly once: every Bluesky delivery made one record, none failed.
    let deliveries = s
        .app
        .service
        .deliveries(Subject::Rollout(id))
        .await
        .unwrap();
    assert!(deliveries.iter().all(|d| d.state == DeliveryState::Sent));
    let sky: Vec<_> = deliveries
        .iter()
        .filter(|d| d.channel_id == s.sky.id)
        .collect();
    assert_eq!(
        sky.iter().map(|d| d.kind).collect::<Vec<_>>(),
        [
            UpdateKind::RolloutStarted,
            UpdateKind::TargetForced,
            UpdateKind::RolloutCompleted
        ]
    );
    let bot_kinds: Vec<_> = deliveries
        .iter()
        .filter(|d| d.channel_id == s.bot.id && d.kind != UpdateKind::RolloutRefresh)
        .map(|d| d.kind)
        .collect();
    assert_eq!(
        bot_kinds,
        [
            UpdateKind::RolloutStarted,
            UpdateKind::TargetForced,
            UpdateKind::RolloutCompleted
        ]
    );
    outbox.stop().await;
}

#[tokio::test]
async fn drain_reports_fold_into_at_most_one_edit_per_interval() {
    let s = setup_with(TestApp::with_fold(Duration::from_secs(2)).await).await;
    let outbox = s.app.start_outbox();
    let id = s
        .create(json!({"title": "Big rollout", "to_version": "v2",
                       "targets": (1..=50).map(|i| format!("node-{i}")).collect::<Vec<_>>()}))
        .await;
    s.report(
        id,
        "node-1",
        json!({"state": "draining", "remaining": {"rooms": 100}}),
    )
    .await;
    s.settled().await;
    let started = std::time::Instant::now();
    for n in (0..=96).rev().step_by(4) {
        s.report(
            id,
            "node-1",
            json!({"state": "draining", "remaining": {"rooms": n}}),
        )
        .await;
    }
    let reports_took = started.elapsed();
    let bot = s.settled().await;
    assert_eq!(bot.len(), 1);
    // 25 count changes within `reports_took`: one edit per 2 s interval at most, plus the
    // one that follows the last report.
    let allowed = 2 + (reports_took.as_secs_f64() / 2.0).ceil() as usize;
    assert!(
        bot[0].edits <= allowed,
        "{} edits for 25 reports in {reports_took:?}",
        bot[0].edits
    );
    assert!(
        live_description(&bot[0]).contains("node-1: draining (rooms 0 of 100)"),
        "the last edit shows the last count: {}",
        live_description(&bot[0])
    );
    assert_eq!(s.posts().len(), 1, "Bluesky: only the start");
    // 50 targets fit Discord's limits, cut with a link to the page.
    let description = live_description(&bot[0]);
    assert!(description.chars().count() <= 4096);
    assert!(
        s.discord.schema_errors().is_empty(),
        "{:#?}",
        s.discord.schema_errors()
    );
    outbox.stop().await;
}

#[tokio::test]
async fn a_stall_is_noticed_announced_once_and_cleared_by_progress() {
    let s = setup().await;
    let outbox = s.app.start_outbox();
    let id = s
        .create(json!({"title": "Fishjam v1.4.0", "from_version": "v1.3.2",
                       "to_version": "v1.4.0", "targets": ["fishjam-1", "fishjam-2"]}))
        .await;
    s.app.at(0);
    s.report(
        id,
        "fishjam-1",
        json!({"state": "draining", "remaining": {"rooms": 3}}),
    )
    .await;
    s.app.at(9);
    assert_eq!(
        s.app.service.check_stalls().await.unwrap(),
        Some(s.app.time(10))
    );
    assert_eq!(s.get(id).await["stalled"], false);
    // The same counts are no progress.
    s.report(
        id,
        "fishjam-1",
        json!({"state": "draining", "remaining": {"rooms": 3}}),
    )
    .await;
    s.app.at(10);
    assert_eq!(
        s.get(id).await["stalled"],
        true,
        "computed, even before the scheduler ran"
    );
    s.app.service.check_stalls().await.unwrap();
    s.app.at(15);
    s.app.service.check_stalls().await.unwrap();
    let page = s.page(&format!("/rollouts/{id}")).await;
    assert!(page.contains("Stalled"), "{page}");
    let bot = s.settled().await;
    let stalls: Vec<_> = bot
        .iter()
        .filter(|m| m.content.contains("stalled"))
        .collect();
    assert_eq!(stalls.len(), 1, "announced once: {bot:#?}");
    let sky: Vec<Value> = s.posts();
    assert_eq!(
        sky.iter()
            .filter(|p| p["text"].as_str().unwrap().contains("stalled"))
            .count(),
        1
    );
    let (_, stalled, _) = s
        .app
        .api(
            Method::GET,
            "/api/v1/rollouts?state=stalled",
            Some(&s.token),
            None,
        )
        .await;
    assert_eq!(stalled.as_array().unwrap().len(), 1);

    // A count going down is progress: the stall clears, the deadline slides from now.
    s.app.at(16);
    s.report(
        id,
        "fishjam-1",
        json!({"state": "draining", "remaining": {"rooms": 2}}),
    )
    .await;
    let r = s.get(id).await;
    assert_eq!(r["stalled"], false);
    assert_eq!(r["stalled_at"], Value::Null);
    s.app.at(25);
    assert_eq!(
        s.app.service.check_stalls().await.unwrap(),
        Some(s.app.time(26))
    );
    assert_eq!(s.get(id).await["stalled"], false);

    // Paused: no stall clock at all.
    let (status, _, _) = s
        .app
        .api(
            Method::POST,
            &format!("/api/v1/rollouts/{id}/pause"),
            Some(&s.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    s.app.at(90);
    assert_eq!(s.app.service.check_stalls().await.unwrap(), None);
    assert_eq!(s.get(id).await["stalled"], false);
    let (status, _, _) = s
        .app
        .api(
            Method::POST,
            &format!("/api/v1/rollouts/{id}/resume"),
            Some(&s.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        s.app.service.check_stalls().await.unwrap(),
        Some(s.app.time(100))
    );
    s.settled().await;
    outbox.stop().await;
}

#[tokio::test]
async fn a_steady_drain_is_estimated_and_a_silent_target_goes_stale() {
    let s = setup().await;
    let id = s
        .create(json!({"title": "Fishjam v1.4.0", "to_version": "v1.4.0",
                       "targets": ["fishjam-1"]}))
        .await;
    // 12 rooms, one closing each minute: drained at minute 12.
    for m in 0..=5 {
        s.app.at(m);
        s.report(
            id,
            "fishjam-1",
            json!({"state": "draining", "remaining": {"rooms": 12 - m}}),
        )
        .await;
    }
    let r = s.get(id).await;
    let t = &r["targets"][0];
    let estimate: jiff::Timestamp = t["estimated_drained_at"].as_str().unwrap().parse().unwrap();
    let truth = s.app.time(12);
    let error = (estimate.as_second() - truth.as_second()).abs();
    assert!(
        error as f64 <= 0.1 * 12.0 * 60.0,
        "estimate {estimate}, truth {truth}"
    );
    assert_eq!(t["stale"], false);
    let page = s.page(&format!("/rollouts/{id}")).await;
    assert!(page.contains("Drained in about 7 min"), "{page}");
    // Then nothing for 3 minutes: stale (the default stale-report time is 2 min).
    s.app.at(8);
    let r = s.get(id).await;
    assert_eq!(r["targets"][0]["stale"], true);
    let page = s.page(&format!("/rollouts/{id}")).await;
    assert!(page.contains("no report for 3 min"), "{page}");
    // Flat counts for the whole window: no estimate.
    for m in [9, 20, 25] {
        s.app.at(m);
        s.report(
            id,
            "fishjam-1",
            json!({"state": "draining", "remaining": {"rooms": 7}}),
        )
        .await;
    }
    let r = s.get(id).await;
    assert_eq!(r["targets"][0]["estimated_drained_at"], Value::Null);
    assert_eq!(r["targets"][0]["stale"], false, "reports refresh it");
    let page = s.page(&format!("/rollouts/{id}")).await;
    assert!(
        page.contains("No estimate: the counts are not going down"),
        "{page}"
    );
}

#[tokio::test]
async fn private_target_names_stay_off_the_public_page_and_the_posts() {
    let s = setup().await;
    let outbox = s.app.start_outbox();
    let id = s
        .create(
            json!({"title": "Edge nodes", "to_version": "v9", "public_names": false,
                       "targets": ["edge-secret-ams", "edge-secret-fra"]}),
        )
        .await;
    s.report(
        id,
        "edge-secret-fra",
        json!({"state": "failed", "note": "disk full"}),
    )
    .await;
    let page = s.page(&format!("/rollouts/{id}")).await;
    assert!(!page.contains("edge-secret"), "{page}");
    assert!(page.contains("instance 2 of 2"), "{page}");
    let bot = s.settled().await;
    for m in &bot {
        assert!(!m.content.contains("edge-secret"), "{}", m.content);
        assert!(!live_description(m).contains("edge-secret"));
    }
    for p in s.posts() {
        assert!(!p["text"].as_str().unwrap().contains("edge-secret"), "{p}");
    }
    // The API (for the team) names them.
    assert_eq!(s.get(id).await["targets"][1]["name"], "edge-secret-fra");
    outbox.stop().await;
}

/// A refresh that posted the live message but has not finished (its publish failed) must not
/// let a later milestone post a second live message.
#[tokio::test]
async fn a_live_message_is_posted_once_when_its_first_delivery_is_retried() {
    let s = setup().await;
    let mut only_failures = channel(
        "bot-failures",
        ChannelKind::DiscordBot,
        &s.discord.announcement_channel().to_string(),
        &s.discord.bot_token(),
        Some(s.discord.base()),
    );
    only_failures.milestones = vec![UpdateKind::TargetFailed];
    // Only this channel: the others are removed so the count below is about it.
    for c in s.app.service.channels().await.unwrap() {
        s.app.service.delete_channel(c.id).await.unwrap();
    }
    s.app.add_channel(only_failures).await;
    s.discord.push_fault(
        crate::common::fake_discord::Fault::Status(500),
        Some("crosspost"),
    );
    let outbox = s.app.start_outbox();
    let id = s
        .create(json!({"title": "Fishjam v1.4.0", "to_version": "v1.4.0",
                       "targets": ["fishjam-1", "fishjam-2"]}))
        .await;
    s.report(
        id,
        "fishjam-1",
        json!({"state": "draining", "remaining": {"rooms": 2}}),
    )
    .await;
    // The refresh posts the live message; its publish fails and waits for a retry.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.discord.messages().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no live message");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.report(
        id,
        "fishjam-2",
        json!({"state": "failed", "note": "crashed"}),
    )
    .await;
    let bot = s.settled().await;
    assert_eq!(
        bot.len(),
        2,
        "one live message and the failure's own: {:#?}",
        bot.iter().map(|m| &m.content).collect::<Vec<_>>()
    );
    assert_eq!(
        bot[1].embeds,
        json!([]),
        "a short message, not a second live message"
    );
    assert!(bot[0].crossposted, "the retry published the live message");
    assert!(
        bot[1].content.contains("fishjam-2 failed"),
        "{}",
        bot[1].content
    );
    assert!(live_description(&bot[0]).contains("fishjam-2: failed"));
    assert_eq!(s.discord.pending_faults(), 0);
    outbox.stop().await;
}
