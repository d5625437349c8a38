//! Snapshots of every payload the two seeds' scenarios send, as the local Discord, Bluesky and
//! webhook servers received them (method, path and JSON body, in order, per channel), and of
//! the public pages they leave behind. A change to what Herald posts shows as a diff of
//! `tests/it/snapshots/*.snap`; review it and accept it with `cargo insta review` (or
//! `INSTA_UPDATE=always cargo test`) when it is meant. Times, ids, ports, nonces and record keys
//! are filtered out, so the snapshots only move when the content does.

use std::sync::{Arc, Mutex};

use herald::domain::{
    ChannelKind, ChannelSecret, DEFAULT_EVENTS, DEFAULT_MILESTONES, NewChannel, NewRollout, Report,
    Schedule, StepAction, TargetState, WindowAction, default_events, default_milestones,
};
use serde_json::{Value, json};

use crate::common::TestApp;
use crate::common::fake_bluesky::FakeBluesky;
use crate::common::fake_discord::{FakeDiscord, Recorded};

/// What varies from run to run, replaced before comparing.
fn filters() -> Vec<(&'static str, &'static str)> {
    vec![
        (r"127\.0\.0\.1:\d+", "127.0.0.1:[port]"),
        (
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)",
            "[time]",
        ),
        (r"<t:\d+(:[a-zA-Z])?>", "<t:[unix]$1>"),
        (r"\b\d{15,20}\b", "[snowflake]"),
        (r"\bh[0-9a-f]{20}\b", "[nonce]"),
        (r"\b3[a-z2-7]{12}\b", "[tid]"),
        (r"\bbafy[a-z2-7]{20,}\b", "[cid]"),
        (r"\bmsg_[0-9A-Za-z]+\b", "[webhook-id]"),
        (r"did:plc:[a-z0-9]+", "did:plc:[did]"),
    ]
}

fn snapshot(name: &str, value: &Value) {
    let mut settings = insta::Settings::clone_current();
    for (pattern, replacement) in filters() {
        settings.add_filter(pattern, replacement);
    }
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| insta::assert_json_snapshot!(name, value));
}

/// The requests that carried something (skipping reads and sign-ins), as sent.
fn sent(requests: Vec<Recorded>, skip: &[&str]) -> Value {
    Value::Array(
        requests
            .into_iter()
            .filter(|r| r.method != "GET" && !skip.iter().any(|s| r.path.contains(s)))
            .map(|r| {
                json!({
                    "method": r.method,
                    "path": r.path,
                    "status": r.status,
                    "body": r.body,
                })
            })
            .collect(),
    )
}

/// A receiver of signed webhooks, keeping each body as JSON.
async fn webhook_receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let router = axum::Router::new().fallback({
        let got = got.clone();
        move |body: String| {
            let got = got.clone();
            async move {
                got.lock()
                    .unwrap()
                    .push(serde_json::from_str(&body).unwrap_or(Value::String(body)));
                axum::http::StatusCode::NO_CONTENT
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (format!("http://{addr}/hooks/herald"), got)
}

struct Channels {
    discord: FakeDiscord,
    bluesky: FakeBluesky,
    hooks: Arc<Mutex<Vec<Value>>>,
}

/// A Discord webhook, a Discord bot in an announcement channel, a Bluesky account and a signed
/// webhook, each with its default events.
async fn channels(app: &TestApp) -> Channels {
    let discord = FakeDiscord::start().await;
    let bluesky = FakeBluesky::start().await;
    let (url, hooks) = webhook_receiver().await;
    let base = |name: &str, kind: ChannelKind| NewChannel {
        name: name.into(),
        kind: Some(kind),
        events: if kind == ChannelKind::Webhook {
            default_events(kind)
        } else {
            DEFAULT_EVENTS.to_vec()
        },
        milestones: DEFAULT_MILESTONES.to_vec(),
        langs: vec!["en".into()],
        enabled: true,
        ..NewChannel::default()
    };
    app.add_channel(NewChannel {
        secret: ChannelSecret::new(discord.webhook_url()),
        events: default_events(ChannelKind::DiscordWebhook),
        milestones: default_milestones(),
        ..base("discord-webhook", ChannelKind::DiscordWebhook)
    })
    .await;
    app.add_channel(NewChannel {
        target: discord.announcement_channel().to_string(),
        secret: ChannelSecret::new(discord.bot_token()),
        api_url: Some(discord.base()),
        events: default_events(ChannelKind::DiscordBot),
        ..base("discord-bot", ChannelKind::DiscordBot)
    })
    .await;
    app.add_channel(NewChannel {
        target: bluesky.handle(),
        secret: ChannelSecret::new(bluesky.password()),
        api_url: Some(bluesky.url()),
        events: default_events(ChannelKind::Bluesky),
        ..base("bluesky", ChannelKind::Bluesky)
    })
    .await;
    app.add_channel(NewChannel {
        target: url,
        ..base("hooks", ChannelKind::Webhook)
    })
    .await;
    Channels {
        discord,
        bluesky,
        hooks,
    }
}

impl Channels {
    fn snapshot(&self, scenario: &str) {
        let discord = self.discord.requests();
        let (webhook, bot): (Vec<_>, Vec<_>) = discord
            .into_iter()
            .partition(|r| r.path.contains("/webhooks/"));
        snapshot(&format!("{scenario}-discord-webhook"), &sent(webhook, &[]));
        snapshot(&format!("{scenario}-discord-bot"), &sent(bot, &[]));
        snapshot(
            &format!("{scenario}-bluesky"),
            &sent(
                self.bluesky.requests(),
                &["createSession", "refreshSession", "uploadBlob"],
            ),
        );
        snapshot(
            &format!("{scenario}-webhook"),
            &Value::Array(self.hooks.lock().unwrap().clone()),
        );
    }
}

/// Let every delivery of the last change go out before the next change, so each channel's
/// requests come in one order whatever the timing.
async fn settled(app: &TestApp) {
    let unsent = app.settle(60).await;
    assert!(unsent.is_empty(), "{unsent:#?}");
    // Past the fold of live rollout messages (200 ms in tests).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let unsent = app.settle(60).await;
    assert!(unsent.is_empty(), "{unsent:#?}");
}

/// The DecAPI migration (the first seed): announced with no date, then run step by step with
/// a note halfway, then completed.
#[tokio::test]
async fn decapi_payloads_and_pages() {
    let app = TestApp::new().await;
    let channels = channels(&app).await;
    let _outbox = app.start_outbox();
    let api = app.component("api", "API").await;
    let m = app
        .window(
            "Database cluster migration",
            Schedule::Tentative {
                hint: Some("this Sunday or within two weeks".into()),
            },
            3,
            vec![api],
        )
        .await;
    app.act(m.id, WindowAction::Announce).await;
    settled(&app).await;
    app.at(60);
    app.act(m.id, WindowAction::Start).await;
    settled(&app).await;
    for p in 1..=3 {
        app.at(60 + 10 * p);
        app.step(m.id, p, StepAction::Start).await;
        settled(&app).await;
        app.at(65 + 10 * p);
        app.step(m.id, p, StepAction::Done).await;
        settled(&app).await;
        if p == 2 {
            app.service
                .post_update(m.id, "Halfway: the database moved without trouble.")
                .await
                .unwrap();
            settled(&app).await;
        }
    }
    app.at(100);
    app.act(m.id, WindowAction::Complete).await;
    settled(&app).await;
    channels.snapshot("decapi");

    let mut settings = insta::Settings::clone_current();
    for (pattern, replacement) in filters() {
        settings.add_filter(pattern, replacement);
    }
    settings.add_filter(r"/static/([a-z]+)\.[0-9a-f]+\.", "/static/$1.[hash].");
    settings.set_prepend_module_to_snapshot(false);
    for (name, path) in [
        ("decapi-page-status", "/".to_owned()),
        ("decapi-page-window", format!("/maintenance/{}", m.id)),
    ] {
        let html = app.get(&path).await.text();
        settings.bind(|| insta::assert_snapshot!(name, html));
    }
}

/// The Fishjam rolling update (the second seed): three instances one at a time, one drain
/// reported as it goes down, one instance forced, and the rollout completed.
#[tokio::test]
async fn fishjam_payloads() {
    let app = TestApp::new().await;
    let channels = channels(&app).await;
    let _outbox = app.start_outbox();
    let r = app
        .service
        .create_rollout(NewRollout::new(
            "Fishjam v1.4.0 rolling update",
            Some("v1.3.2"),
            "v1.4.0",
            &["fishjam-1", "fishjam-2", "fishjam-3"],
        ))
        .await
        .unwrap();
    let draining = |counts: &[(&str, i64)]| Report {
        remaining: Some(counts.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()),
        ..Report::state(TargetState::Draining)
    };
    let steps: Vec<(i64, &str, Report)> = vec![
        (1, "fishjam-1", draining(&[("rooms", 4), ("recordings", 1)])),
        (5, "fishjam-1", draining(&[("rooms", 1), ("recordings", 0)])),
        (9, "fishjam-1", Report::state(TargetState::Drained)),
        (10, "fishjam-1", Report::state(TargetState::Updating)),
        (12, "fishjam-1", Report::state(TargetState::Healthy)),
        (
            13,
            "fishjam-2",
            draining(&[("rooms", 12), ("recordings", 2)]),
        ),
        (
            30,
            "fishjam-2",
            Report {
                forced: true,
                note: Some("Two rooms idle for an hour; ending them.".into()),
                ..Report::state(TargetState::Healthy)
            },
        ),
        (31, "fishjam-3", Report::state(TargetState::Drained)),
        (33, "fishjam-3", Report::state(TargetState::Healthy)),
    ];
    for (minute, target, report) in steps {
        app.at(minute);
        app.service.report(r.id, target, &report).await.unwrap();
        settled(&app).await;
    }
    channels.snapshot("fishjam");
}
