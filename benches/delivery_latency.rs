//! Time from a step's API call to the message arriving at local Discord and Bluesky servers
//! (speaking the real wire formats, healthy), over 200 step events: p50 and p99, with the
//! ratio to a baseline measured in the same run (one plain POST to the same Discord server,
//! i.e. what the network and the server cost on their own).
//!
//! Run: `cargo bench --bench delivery_latency`. Target: p99 under 250 ms (aim: 100 ms).

#[path = "../tests/it/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::time::{Duration, Instant};

use axum::http::Method;
use common::fake_bluesky::FakeBluesky;
use common::fake_discord::FakeDiscord;
use herald::domain::{
    ChannelKind, ChannelSecret, DEFAULT_EVENTS, DEFAULT_MILESTONES, NewChannel, Role, Schedule,
    WindowAction,
};

const EVENTS: usize = 200;
const STEPS: i64 = 100;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn report(name: &str, mut samples: Vec<Duration>, baseline: Duration) {
    samples.sort();
    let p50 = percentile(&samples, 0.50);
    let p99 = percentile(&samples, 0.99);
    println!(
        "{name:<28} p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  (p50 {:.1}x baseline)",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3,
        p50.as_secs_f64() / baseline.as_secs_f64(),
    );
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: no delivery within 10 s");
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let app = common::TestApp::new().await;
        let discord = FakeDiscord::start().await;
        let bluesky = FakeBluesky::start().await;
        let channel = |name: &str, kind, target: String, secret: String, api: String| NewChannel {
            name: name.into(),
            kind: Some(kind),
            target,
            secret: ChannelSecret::new(secret),
            api_url: Some(api),
            events: DEFAULT_EVENTS.to_vec(),
            milestones: DEFAULT_MILESTONES.to_vec(),
            enabled: true,
            ..NewChannel::default()
        };
        app.add_channel(channel(
            "bot",
            ChannelKind::DiscordBot,
            discord.text_channel().to_string(),
            discord.bot_token(),
            discord.base(),
        ))
        .await;
        app.add_channel(channel(
            "bluesky",
            ChannelKind::Bluesky,
            bluesky.handle(),
            bluesky.password(),
            bluesky.url(),
        ))
        .await;
        let token = app.token(Role::Maintainer).await;
        let outbox = app.start_outbox();

        // Baseline: a plain POST of a message to the same Discord server.
        let client = reqwest::Client::new();
        let mut base = Vec::new();
        for i in 0..50 {
            let t = Instant::now();
            let r = client
                .post(format!(
                    "{}/api/v10/channels/{}/messages",
                    discord.base(),
                    discord.text_channel()
                ))
                .header("authorization", format!("Bot {}", discord.bot_token()))
                .json(&serde_json::json!({"content": format!("baseline {i}")}))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
            base.push(t.elapsed());
        }
        base.sort();
        let baseline = percentile(&base, 0.5);

        let mut to_discord = Vec::new();
        let mut to_bluesky = Vec::new();
        let mut windows = 0;
        while to_discord.len() < EVENTS {
            let m = app
                .window(
                    &format!("Rolling update {windows}"),
                    Schedule::Tentative { hint: None },
                    STEPS as usize,
                    vec![],
                )
                .await;
            windows += 1;
            // Let the announcement and start land before measuring.
            let expected_posts = bluesky.records().len() + 2;
            app.act(m.id, WindowAction::Announce).await;
            app.act(m.id, WindowAction::Start).await;
            let t = Instant::now();
            while bluesky.records().len() < expected_posts {
                if t.elapsed() > Duration::from_secs(10) {
                    panic!(
                        "window {windows}: {} records, expected {expected_posts}; deliveries {:#?}",
                        bluesky.records().len(),
                        app.service
                            .deliveries(herald::domain::Subject::Window(m.id))
                            .await
                            .unwrap()
                            .iter()
                            .map(|d| (d.channel_id, d.kind, d.state, d.last_error.clone()))
                            .collect::<Vec<_>>()
                    );
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            for p in 1..=STEPS {
                if to_discord.len() == EVENTS {
                    break;
                }
                app.step(m.id, p, herald::domain::StepAction::Start).await;
                let edits_before = discord
                    .requests()
                    .iter()
                    .filter(|r| r.method == "PATCH")
                    .count();
                let posts_before = bluesky.records().len();
                let t = Instant::now();
                let (status, _, _) = app
                    .api(
                        Method::POST,
                        &format!("/api/v1/maintenances/{}/steps/{p}/done", m.id),
                        Some(&token),
                        Some(serde_json::json!({})),
                    )
                    .await;
                assert!(status.is_success());
                let (mut d, mut b) = (None, None);
                wait_until("step", || {
                    if d.is_none()
                        && discord
                            .requests()
                            .iter()
                            .filter(|r| r.method == "PATCH")
                            .count()
                            > edits_before
                    {
                        d = Some(t.elapsed());
                    }
                    if b.is_none() && bluesky.records().len() > posts_before {
                        b = Some(t.elapsed());
                    }
                    d.is_some() && b.is_some()
                })
                .await;
                to_discord.push(d.unwrap());
                to_bluesky.push(b.unwrap());
            }
        }
        outbox.stop().await;
        println!("delivery latency over {EVENTS} step events (API call -> test server received)");
        println!(
            "{:<28} p50 {:>7.2} ms",
            "baseline: direct POST",
            baseline.as_secs_f64() * 1e3
        );
        report("Discord (edit of the embed)", to_discord, baseline);
        report("Bluesky (reply post)", to_bluesky, baseline);
    });
}
