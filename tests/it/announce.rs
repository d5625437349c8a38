//! Announcements end to end against local servers speaking Discord's and Bluesky's wire
//! formats: the DecAPI window run from announcement to completion reaches every channel
//! exactly once and in order, also when the servers fail in every way they can.

use crate::common::TestApp;
use crate::common::fake_bluesky::FakeBluesky;
use crate::common::fake_discord::{FakeDiscord, Fault};
use herald::domain::{
    Channel, ChannelKind, ChannelSecret, DEFAULT_EVENTS, DEFAULT_MILESTONES, DeliveryState,
    NewChannel, Schedule, Subject, UpdateKind, WindowAction,
};
use serde_json::Value;

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
        events: DEFAULT_EVENTS.to_vec(),
        milestones: DEFAULT_MILESTONES.to_vec(),
        langs: vec!["en".into()],
        enabled: true,
        ..NewChannel::default()
    }
}

struct Setup {
    app: TestApp,
    discord: FakeDiscord,
    bluesky: FakeBluesky,
    webhook: Channel,
    bot: Channel,
    sky: Channel,
}

async fn setup() -> Setup {
    let app = TestApp::new().await;
    let discord = FakeDiscord::start().await;
    let bluesky = FakeBluesky::start().await;
    let webhook = app
        .add_channel(channel(
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
    Setup {
        app,
        discord,
        bluesky,
        webhook,
        bot,
        sky,
    }
}

async fn run_decapi(app: &TestApp, title: &str) -> i64 {
    let api = app.component("api", "API").await;
    app.run_decapi(title, vec![api]).await
}

/// Events announced by default for the DecAPI run, in order.
const EXPECTED: [UpdateKind; 10] = [
    UpdateKind::Announced,
    UpdateKind::Started,
    UpdateKind::StepDone,
    UpdateKind::StepDone,
    UpdateKind::StepDone,
    UpdateKind::Note,
    UpdateKind::StepDone,
    UpdateKind::StepDone,
    UpdateKind::StepDone,
    UpdateKind::Completed,
];

fn assert_no_mentions(m: &crate::common::fake_discord::Message) {
    let allowed = m
        .allowed_mentions
        .as_ref()
        .expect("allowed_mentions is always sent");
    assert_eq!(allowed["parse"], serde_json::json!([]), "{allowed}");
    assert!(
        allowed
            .get("roles")
            .is_none_or(|r| r == &serde_json::json!([]))
    );
    assert!(
        allowed
            .get("users")
            .is_none_or(|r| r == &serde_json::json!([]))
    );
}

/// Discord got one announcement per channel, edited after every later event, plus one
/// message per milestone (start, update, completion), none able to mention anyone.
fn check_discord(discord: &FakeDiscord, webhook: bool, expect_crosspost: bool) {
    let messages: Vec<_> = discord
        .messages()
        .into_iter()
        .filter(|m| m.webhook == webhook)
        .collect();
    let contents: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(
        messages.len(),
        4,
        "announcement + 3 milestones: {contents:#?}"
    );
    let announcement = &messages[0];
    let embed = &announcement.embeds[0];
    assert!(
        embed["title"].as_str().unwrap().contains("DecAPI"),
        "{embed}"
    );
    assert_eq!(announcement.edits, 9, "one edit per later event");
    let description = embed["description"].as_str().unwrap();
    assert_eq!(description.matches('✅').count(), 6, "{description}");
    assert!(description.contains("6 of 6 steps done"), "{description}");
    assert!(embed["url"].as_str().unwrap().ends_with("/maintenance/1"));
    assert!(
        messages[1].content.contains("has started"),
        "{}",
        messages[1].content
    );
    assert!(
        messages[2].content.contains("Halfway"),
        "{}",
        messages[2].content
    );
    assert!(
        messages[3].content.contains("is complete"),
        "{}",
        messages[3].content
    );
    for m in &messages {
        assert_no_mentions(m);
        assert_eq!(m.crossposted, expect_crosspost, "message {}", m.id);
        assert!(m.content.chars().count() <= 2000);
    }
    let errors = discord.schema_errors();
    assert!(
        errors.is_empty(),
        "bodies Discord would refuse: {errors:#?}"
    );
}

/// Bluesky holds one thread: the announcement (with a link card) as root, every later event a
/// reply to the one before, texts within limits and link facets over exactly the link.
fn check_bluesky_thread(records: &[Value], uris: &[String], cids: &[String], page: &str) {
    let posts: Vec<_> = records
        .iter()
        .zip(uris)
        .zip(cids)
        .map(|((v, u), c)| (v.clone(), u.clone(), c.clone()))
        .collect();
    crate::common::check_bluesky_thread(&posts, page, serde_json::json!(["en"]));
}

#[tokio::test]
async fn decapi_reaches_every_channel_exactly_once_in_order() {
    let s = setup().await;
    let outbox = s.app.start_outbox();
    let id = run_decapi(&s.app, "DecAPI infrastructure migration").await;
    let unsent = s.app.settle(30).await;
    assert!(unsent.is_empty(), "{unsent:#?}");

    let deliveries = s.app.service.deliveries(Subject::Window(id)).await.unwrap();
    for c in [&s.webhook, &s.bot, &s.sky] {
        let kinds: Vec<_> = deliveries
            .iter()
            .filter(|d| d.channel_id == c.id)
            .map(|d| d.kind)
            .collect();
        assert_eq!(kinds, EXPECTED, "channel {}", c.name);
    }
    assert!(
        deliveries
            .iter()
            .all(|d| d.state == DeliveryState::Sent && d.attempts == 1)
    );

    check_discord(&s.discord, true, false);
    check_discord(&s.discord, false, true);

    let records = s.bluesky.records();
    assert_eq!(records.len(), EXPECTED.len());
    let values: Vec<Value> = records.iter().map(|r| r.value.clone()).collect();
    let uris: Vec<String> = records.iter().map(|r| r.uri.clone()).collect();
    let cids: Vec<String> = records.iter().map(|r| r.cid.clone()).collect();
    check_bluesky_thread(&values, &uris, &cids, "http://127.0.0.1:8080/maintenance/1");
    assert!(values[0]["text"].as_str().unwrap().contains("this Sunday"));
    assert!(values[9]["text"].as_str().unwrap().contains("Completed"));
    assert_eq!(s.bluesky.create_sessions(), 1);
    assert!(s.bluesky.errors().is_empty(), "{:#?}", s.bluesky.errors());

    // Metrics: deliveries by channel and outcome, attempts, commit-to-delivery latency.
    let metrics = s.app.metrics().await.text();
    for needle in [
        "herald_deliveries_total{channel=\"bluesky\",outcome=\"sent\"}",
        "herald_delivery_attempts_total{channel=\"webhook\"}",
        "herald_delivery_latency_seconds_count{channel=\"bot\"}",
        // The backlog per channel, read at the scrape: all delivered.
        "herald_outbox_pending{channel=\"bot\"} 0",
        "herald_outbox_failed{channel=\"bluesky\"} 0",
        "herald_outbox_oldest_pending_seconds{channel=\"webhook\"} 0",
        "herald_db_pool_connections{state=\"idle\"}",
        "herald_build_info{",
    ] {
        assert!(
            metrics.contains(needle),
            "{needle} missing from:\n{metrics}"
        );
    }
    outbox.stop().await;
}

#[tokio::test]
async fn emoji_and_right_to_left_titles_keep_facets_on_the_link() {
    let s = setup().await;
    let outbox = s.app.start_outbox();
    let title = "🚀 Größere Wartung 👨‍👩‍👧‍👦 של מסד הנתונים — café ñandú ".repeat(3);
    let title = title.trim().chars().take(200).collect::<String>();
    let id = run_decapi(&s.app, &title).await;
    s.app.settle(30).await;
    let records = s.bluesky.records();
    assert_eq!(records.len(), EXPECTED.len());
    let values: Vec<Value> = records.iter().map(|r| r.value.clone()).collect();
    let uris: Vec<String> = records.iter().map(|r| r.uri.clone()).collect();
    let cids: Vec<String> = records.iter().map(|r| r.cid.clone()).collect();
    check_bluesky_thread(
        &values,
        &uris,
        &cids,
        &format!("http://127.0.0.1:8080/maintenance/{id}"),
    );
    assert!(s.bluesky.errors().is_empty(), "{:#?}", s.bluesky.errors());
    assert!(s.discord.schema_errors().is_empty());
    outbox.stop().await;
}

/// The texts Bluesky got, in thread order, must follow the events.
fn check_bluesky_order(values: &[Value]) {
    let text = |i: usize| values[i]["text"].as_str().unwrap().to_owned();
    assert!(text(0).contains("Planned maintenance"), "{}", text(0));
    assert!(text(1).contains("Started"), "{}", text(1));
    for (i, step) in [(2, 1), (3, 2), (4, 3), (6, 4), (7, 5), (8, 6)] {
        assert!(
            text(i).contains(&format!("Step {step} of 6 done")),
            "{}",
            text(i)
        );
    }
    assert!(text(5).contains("Halfway"), "{}", text(5));
    assert!(text(9).contains("Completed"), "{}", text(9));
}

fn bluesky_values(bluesky: &FakeBluesky) -> (Vec<Value>, Vec<String>, Vec<String>) {
    let records = bluesky.records();
    (
        records.iter().map(|r| r.value.clone()).collect(),
        records.iter().map(|r| r.uri.clone()).collect(),
        records.iter().map(|r| r.cid.clone()).collect(),
    )
}

/// Every way a server can fail once, on every channel: 500, 429 with `retry_after`, a hang
/// past the request timeout, a connection dropped before and after the server acted. Each
/// event still arrives exactly once and in order.
#[tokio::test]
async fn faults_are_retried_without_duplicates_or_reordering() {
    let s = setup().await;
    let hook = format!("/webhooks/{}", s.discord.webhook_id());
    let bot = format!("/channels/{}/messages", s.discord.announcement_channel());
    for fault in [
        Fault::Status(500),
        Fault::RateLimited { retry_after: 0.2 },
        Fault::Hang(std::time::Duration::from_millis(1500)),
        Fault::DropBeforeProcessing,
    ] {
        s.discord.push_fault(fault.clone(), Some(&hook));
        s.discord.push_fault(fault.clone(), Some(&bot));
        s.bluesky.push_fault(fault, Some("createRecord"));
    }
    // The server acted, the answer was lost: the bot's nonce and Bluesky's record key keep
    // the retry from posting twice. (Webhooks have neither; see notify/discord.rs.)
    s.discord.push_fault(Fault::DropAfterProcessing, Some(&bot));
    s.bluesky
        .push_fault(Fault::DropAfterProcessing, Some("createRecord"));
    s.bluesky.push_fault(Fault::Status(502), Some("getRecord"));

    let outbox = s.app.start_outbox();
    let id = run_decapi(&s.app, "DecAPI infrastructure migration").await;
    let unsent = s.app.settle(90).await;
    assert!(unsent.is_empty(), "{unsent:#?}");
    assert_eq!(s.discord.pending_faults(), 0, "every fault was met");
    assert_eq!(s.bluesky.pending_faults(), 0, "every fault was met");

    check_discord(&s.discord, true, false);
    check_discord(&s.discord, false, true);
    let (values, uris, cids) = bluesky_values(&s.bluesky);
    assert_eq!(values.len(), EXPECTED.len(), "one post per event");
    check_bluesky_thread(
        &values,
        &uris,
        &cids,
        &format!("http://127.0.0.1:8080/maintenance/{id}"),
    );
    check_bluesky_order(&values);
    assert!(s.bluesky.errors().is_empty(), "{:#?}", s.bluesky.errors());

    // The retries honoured the server's wish and backed off.
    let deliveries = s.app.service.deliveries(Subject::Window(id)).await.unwrap();
    assert!(deliveries.iter().any(|d| d.attempts > 1));
    outbox.stop().await;
}

/// A 401 fails the delivery at once with Discord's reason shown in the admin UI; later
/// events of the window wait behind it; Retry after fixing the token delivers all in order.
#[tokio::test]
async fn unauthorized_fails_at_once_and_retry_succeeds_once_fixed() {
    let s = setup().await;
    s.app.user("alice", herald::domain::Role::Admin).await;
    s.discord.set_bot_token("rotated-token");
    let outbox = s.app.start_outbox();
    let id = run_decapi(&s.app, "DecAPI infrastructure migration").await;
    let mut unsent = s.app.settle_except(30, Some(s.bot.id)).await;
    for _ in 0..200 {
        if unsent.iter().any(|d| d.state == DeliveryState::Failed) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        unsent = s.app.service.unsent_deliveries(100).await.unwrap();
    }
    let failed: Vec<_> = unsent
        .iter()
        .filter(|d| d.state == DeliveryState::Failed)
        .collect();
    assert_eq!(failed.len(), 1, "{unsent:#?}");
    let failed = failed[0].clone();
    assert_eq!(failed.channel_id, s.bot.id);
    assert_eq!(failed.kind, UpdateKind::Announced);
    assert_eq!(failed.attempts, 1, "a 401 is not retried");
    assert!(
        failed.last_error.as_deref().unwrap().contains("401"),
        "{failed:?}"
    );
    let held = s.app.service.deliveries(Subject::Window(id)).await.unwrap();
    assert_eq!(
        held.iter()
            .filter(|d| d.channel_id == s.bot.id && d.state == DeliveryState::Pending)
            .count(),
        9,
        "later events wait behind the failed announcement"
    );
    assert_eq!(
        s.app.service.store().next_due_ms(s.bot.id).await.unwrap(),
        None,
        "held deliveries do not wake the worker"
    );

    let me = s.app.sign_in("alice").await;
    let page = s
        .app
        .get_as(&format!("/admin/maintenances/{id}"), &me.cookie)
        .await
        .text();
    assert!(page.contains("401 Unauthorized"), "the reason is shown");
    assert!(page.contains(">Retry</button>"));

    // Fix the token in the channel, then Retry from the run view.
    let mut fixed = channel(
        "bot",
        ChannelKind::DiscordBot,
        &s.discord.announcement_channel().to_string(),
        "rotated-token",
        Some(s.discord.base()),
    );
    fixed.enabled = true;
    s.app.service.edit_channel(s.bot.id, fixed).await.unwrap();
    let r = s
        .app
        .post_form(
            &format!("/admin/maintenances/{id}/deliveries/{}", failed.id),
            Some(&me.cookie),
            &[("csrf", &me.csrf), ("action", "retry")],
            &[],
        )
        .await;
    assert_eq!(r.status, axum::http::StatusCode::SEE_OTHER, "{}", r.text());
    let unsent = s.app.settle(30).await;
    assert!(unsent.is_empty(), "{unsent:#?}");
    check_discord(&s.discord, false, true);
    outbox.stop().await;
}

/// A plan of 100 long steps stays within every Discord limit (the fake checks them and the
/// OpenAPI schema), cut at a whole step with a link to the page; a configured role is
/// mentioned at the start and nowhere else.
#[tokio::test]
async fn long_plans_fit_discord_and_only_the_configured_role_is_mentioned() {
    let app = TestApp::new().await;
    let discord = FakeDiscord::start().await;
    let mut bot = channel(
        "bot",
        ChannelKind::DiscordBot,
        &discord.text_channel().to_string(),
        &discord.bot_token(),
        Some(discord.base()),
    );
    bot.mention_role = Some("1400000000000000001".into());
    app.add_channel(bot).await;
    let outbox = app.start_outbox();
    let m = app
        .service
        .create_maintenance(herald::domain::NewMaintenance {
            title: "T".repeat(200),
            description: "D".repeat(5000),
            impact: herald::domain::Impact::Major,
            schedule: Schedule::Tentative { hint: None },
            component_ids: vec![],
            steps: (1..=100)
                .map(|i| herald::domain::NewStep {
                    title: format!("{i} {}", "step ".repeat(39)),
                    description: None,
                })
                .collect(),
            automation: Default::default(),
        })
        .await
        .unwrap();
    app.act(m.id, WindowAction::Announce).await;
    app.act(m.id, WindowAction::Start).await;
    let unsent = app.settle(30).await;
    assert!(unsent.is_empty(), "{unsent:#?}");
    assert!(
        discord.schema_errors().is_empty(),
        "{:#?}",
        discord.schema_errors()
    );
    let messages = discord.messages();
    assert_eq!(messages.len(), 2);
    let embed = &messages[0].embeds[0];
    let description = embed["description"].as_str().unwrap();
    assert!(description.chars().count() <= 4096);
    assert!(
        description.contains(&format!(
            "more steps: http://127.0.0.1:8080/maintenance/{}",
            m.id
        )),
        "{description}"
    );
    assert_no_mentions(&messages[0]);
    let start = &messages[1];
    assert!(
        start.content.starts_with("<@&1400000000000000001> "),
        "{}",
        start.content
    );
    let allowed = start.allowed_mentions.as_ref().unwrap();
    assert_eq!(allowed["parse"], serde_json::json!([]));
    assert_eq!(allowed["roles"], serde_json::json!(["1400000000000000001"]));
    outbox.stop().await;
}

/// Bluesky posts cannot be edited: each reschedule's post says the date it set, even when
/// the next reschedule commits before it is sent.
#[tokio::test]
async fn each_reschedule_post_keeps_its_own_date() {
    let s = setup().await;
    let m = s
        .app
        .window(
            "DecAPI migration",
            Schedule::Tentative { hint: None },
            2,
            vec![],
        )
        .await;
    s.app.act(m.id, WindowAction::Announce).await;
    for day in [5, 12] {
        let starts_at: jiff::Timestamp = format!("2030-01-{day:02}T10:00:00Z").parse().unwrap();
        s.app
            .service
            .reschedule(
                m.id,
                Schedule::Fixed {
                    starts_at,
                    ends_at: None,
                },
            )
            .await
            .unwrap();
    }
    // Both reschedules committed before any delivery ran.
    let outbox = s.app.start_outbox();
    let unsent = s.app.settle(30).await;
    assert!(unsent.is_empty(), "{unsent:#?}");
    let texts: Vec<String> = s
        .bluesky
        .records()
        .iter()
        .map(|r| r.value["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts.len(), 3, "{texts:#?}");
    assert!(texts[1].contains("5 Jan 2030"), "{}", texts[1]);
    assert!(texts[2].contains("12 Jan 2030"), "{}", texts[2]);
    outbox.stop().await;
}

/// A channel that cannot send at all (a stored webhook URL that is not one: the forms refuse
/// it, older data might not) fails its deliveries with the reason instead of leaving them
/// pending unexplained.
#[tokio::test]
async fn a_channel_that_cannot_send_fails_its_deliveries_with_the_reason() {
    let app = TestApp::new().await;
    let mut broken = channel("broken", ChannelKind::DiscordWebhook, "1", "", None);
    broken.secret = ChannelSecret::new("not a webhook url");
    app.service
        .store()
        .insert_channel(
            &broken,
            herald::domain::ChannelSource::Admin,
            jiff::Timestamp::now(),
        )
        .await
        .unwrap();
    let outbox = app.start_outbox();
    let m = app
        .window(
            "DecAPI migration",
            Schedule::Tentative { hint: None },
            1,
            vec![],
        )
        .await;
    app.act(m.id, WindowAction::Announce).await;
    let unsent = app.settle(30).await;
    assert_eq!(unsent.len(), 1, "{unsent:#?}");
    assert_eq!(unsent[0].state, DeliveryState::Failed);
    assert!(
        unsent[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("webhook URL"),
        "{unsent:#?}"
    );

    // The start waits behind the failed announcement until an admin skips it.
    app.act(m.id, WindowAction::Start).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let held = app.service.deliveries(Subject::Window(m.id)).await.unwrap();
    assert_eq!(held[1].state, DeliveryState::Pending);
    assert_eq!(held[1].attempts, 0);
    let skipped = app.service.skip_delivery(held[0].id).await.unwrap();
    assert_eq!(skipped.state, DeliveryState::Skipped);
    assert!(
        app.service.skip_delivery(held[0].id).await.is_err(),
        "only failed ones"
    );
    let after = app.settle(30).await;
    assert_eq!(after.len(), 1, "{after:#?}");
    assert_eq!(after[0].id, held[1].id);
    assert_eq!(
        after[0].attempts, 1,
        "the start was tried once the announcement was skipped"
    );
    outbox.stop().await;
}

/// A sender that panics on its first delivery and records the rest: through the channel seam,
/// not a switch in production code.
struct PanicsOnce {
    calls: std::sync::atomic::AtomicUsize,
    delivered: std::sync::Mutex<Vec<i64>>,
}

#[async_trait::async_trait]
impl herald::notify::Sender for PanicsOnce {
    async fn send(
        &self,
        job: &herald::notify::Job<'_>,
        _: &dyn herald::notify::Progress,
    ) -> Result<herald::notify::Sent, herald::notify::SendError> {
        if self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            panic!("a payload this sender cannot handle");
        }
        self.delivered.lock().unwrap().push(job.delivery.id);
        Ok(herald::notify::Sent {
            remote_id: Some(format!("m{}", job.delivery.id)),
            remote_url: None,
            thread: Some(herald::domain::Thread {
                root_id: format!("m{}", job.delivery.id),
                ..Default::default()
            }),
        })
    }

    async fn test(&self, _: &str) -> Result<String, herald::notify::SendError> {
        Ok(String::new())
    }

    async fn correct(
        &self,
        job: &herald::notify::Job<'_>,
        _: &herald::domain::Delivery,
        progress: &dyn herald::notify::Progress,
    ) -> Result<herald::notify::Sent, herald::notify::SendError> {
        self.send(job, progress).await
    }
}

#[tokio::test]
async fn a_panicking_sender_fails_one_delivery_and_the_worker_goes_on() {
    let app = TestApp::new().await;
    let c = app
        .add_channel(channel(
            "recorder",
            ChannelKind::DiscordWebhook,
            "",
            "https://discord.com/api/webhooks/1/x",
            None,
        ))
        .await;
    let sender = std::sync::Arc::new(PanicsOnce {
        calls: Default::default(),
        delivered: Default::default(),
    });
    let token = tokio_util::sync::CancellationToken::new();
    let tracker = tokio_util::task::TaskTracker::new();
    let factory: herald::notify::SenderFactory = {
        let sender = sender.clone();
        std::sync::Arc::new(move |_, _, _| {
            Ok(sender.clone() as std::sync::Arc<dyn herald::notify::Sender>)
        })
    };
    herald::notify::Outbox::spawn_with(
        app.service.store().clone(),
        app.service.outbox_events(),
        herald::notify::NotifySettings::from_settings(&app.state.settings),
        token.clone(),
        tracker.clone(),
        factory,
    );
    let first = app
        .window("First", Schedule::Tentative { hint: None }, 0, vec![])
        .await;
    app.act(first.id, WindowAction::Announce).await;
    let unsent = app.settle(10).await;
    assert_eq!(unsent.len(), 1);
    assert_eq!(unsent[0].state, DeliveryState::Failed);
    assert!(
        unsent[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("panicked: a payload this sender cannot handle"),
        "{unsent:#?}"
    );
    // The worker is still there: the next window's announcement goes out.
    let second = app
        .window("Second", Schedule::Tentative { hint: None }, 0, vec![])
        .await;
    app.act(second.id, WindowAction::Announce).await;
    app.settle(10).await;
    let sent = app
        .service
        .deliveries(Subject::Window(second.id))
        .await
        .unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].state, DeliveryState::Sent);
    assert_eq!(sent[0].channel_id, c.id);
    assert_eq!(*sender.delivered.lock().unwrap(), [sent[0].id]);
    token.cancel();
    tracker.close();
    tracker.wait().await;
}

/// A posted update corrected: Discord's messages are edited, Bluesky gets a correction in the
/// thread (a post cannot be edited there); withdrawn, both take the posts down. The page shows
/// the new text marked edited, then nothing.
#[tokio::test]
async fn corrections_edit_discord_and_reply_on_bluesky_and_withdrawals_take_posts_down() {
    let s = setup().await;
    let outbox = s.app.start_outbox();
    let id = run_decapi(&s.app, "DecAPI infrastructure migration").await;
    assert!(s.app.settle(30).await.is_empty());
    let note = s
        .app
        .service
        .store()
        .list_updates(id, None)
        .await
        .unwrap()
        .into_iter()
        .find(|u| u.kind == UpdateKind::Note)
        .unwrap();
    let records_before = s.bluesky.records().len();
    let service = s.app.service.acting(herald::domain::Actor::System);
    service
        .correct_update(id, note.id, Some("Dump imported; checksums match."))
        .await
        .unwrap();
    assert!(s.app.settle(30).await.is_empty());

    // Discord: the note's own message, edited in place on the webhook and the bot channel.
    let edited: Vec<_> = s
        .discord
        .messages()
        .into_iter()
        .filter(|m| m.content.contains("Dump imported; checksums match."))
        .collect();
    assert_eq!(edited.len(), 2, "{:#?}", s.discord.messages());
    assert!(edited.iter().all(|m| m.edits == 1));
    assert!(
        !s.discord
            .messages()
            .iter()
            .any(|m| m.content.contains(&note.body)),
        "the old text is gone"
    );
    // Bluesky: one more post, a reply in the window's thread saying what was meant.
    let records = s.bluesky.records();
    assert_eq!(records.len(), records_before + 1);
    let correction = records.last().unwrap();
    let text = correction.value["text"].as_str().unwrap();
    assert!(
        text.starts_with("📣 Correction: Dump imported; checksums match."),
        "{text}"
    );
    assert_eq!(
        correction.value["reply"]["root"]["uri"].as_str(),
        Some(records[0].uri.as_str())
    );
    let page = s.app.get(&format!("/maintenance/{id}")).await.text();
    assert!(page.contains("Dump imported; checksums match."));
    assert!(page.contains("edited"), "{page}");

    // Withdrawn: Discord deletes both messages, Bluesky the post and its correction.
    service.correct_update(id, note.id, None).await.unwrap();
    assert!(s.app.settle(30).await.is_empty());
    assert_eq!(s.discord.deleted().len(), 2);
    assert!(
        s.discord.schema_errors().is_empty(),
        "edits and deletions as Discord's API document has them: {:#?}",
        s.discord.schema_errors()
    );
    assert_eq!(s.bluesky.records().len(), records_before - 1);
    let page = s.app.get(&format!("/maintenance/{id}")).await.text();
    assert!(!page.contains("checksums match"), "{page}");
    // Only a maintainer's own words are corrected; Herald's texts follow the window.
    let started = s
        .app
        .service
        .store()
        .list_updates(id, None)
        .await
        .unwrap()
        .into_iter()
        .find(|u| u.kind == UpdateKind::Started && u.note.is_none())
        .unwrap();
    assert!(
        service
            .correct_update(id, started.id, Some("x"))
            .await
            .is_err()
    );
    outbox.stop().await;
}

/// A waiting delivery (not failed yet) can be paused, sent at once or skipped from the run
/// view; one being sent cannot be touched.
#[tokio::test]
async fn waiting_deliveries_can_be_paused_sent_now_or_skipped() {
    let s = setup().await;
    let id = run_decapi(&s.app, "DecAPI infrastructure migration").await;
    let waiting: Vec<_> = s
        .app
        .service
        .deliveries(Subject::Window(id))
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.channel_id == s.bot.id)
        .collect();
    assert!(waiting.iter().all(|d| d.state == DeliveryState::Pending));
    let first = waiting[0].id;
    let paused = s.app.service.pause_delivery(first).await.unwrap();
    assert_eq!(paused.state, DeliveryState::Pending);
    assert!(paused.last_error.unwrap().starts_with("Paused by system"));
    s.app.user("mo", herald::domain::Role::Maintainer).await;
    let me = s.app.sign_in("mo").await;
    let page = s
        .app
        .get_as(&format!("/admin/maintenances/{id}"), &me.cookie)
        .await
        .text();
    assert!(page.contains(">paused</span>"), "{page}");
    assert!(page.contains("Send now"), "the others wait: {page}");

    // Paused, nothing takes it: the outbox sends what other channels have, and this one's
    // queue waits behind it.
    let outbox = s.app.start_outbox();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let d = s.app.service.delivery(first).await.unwrap();
    assert_eq!(d.state, DeliveryState::Pending);
    assert_eq!(d.attempts, 0);
    assert!(
        s.discord
            .messages()
            .iter()
            .all(|m| m.channel_id != s.discord.announcement_channel())
    );
    // Skipped: the rest of its queue goes.
    let skipped = s.app.service.skip_delivery(first).await.unwrap();
    assert_eq!(skipped.state, DeliveryState::Skipped);
    assert!(s.app.settle(30).await.is_empty());
    assert!(
        s.app.service.retry_delivery(first).await.is_err(),
        "skipped is final"
    );
    outbox.stop().await;
}
