//! The real binary killed with SIGKILL while deliveries are in flight, then started again on
//! the same database: every event still reaches each channel exactly once and in order. And
//! Bluesky sessions: many posts, one sign-in; an expired token, one refresh.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::fake_bluesky::FakeBluesky;
use crate::common::fake_discord::{FakeDiscord, Fault};
use herald::domain::{
    ChannelKind, ChannelSecret, DEFAULT_EVENTS, DEFAULT_MILESTONES, DeliveryState, NewChannel,
    WindowAction,
};
use herald::store::{Outbox as _, SqlStore};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

struct Env {
    dir: tempfile::TempDir,
    port: u16,
    vars: Vec<(String, String)>,
}

impl Env {
    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
        cmd.current_dir(self.dir.path())
            .env("HERALD_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("HERALD_LOG", "warn")
            .env("HERALD_DELIVERY_TIMEOUT", "1s")
            .env("HERALD_DATABASE_URL", self.url())
            .stdin(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
        cmd
    }

    fn url(&self) -> String {
        crate::common::database_url(&self.dir.path().join("data"), "herald.db")
    }

    /// The caller kills and waits for the returned child.
    #[allow(clippy::zombie_processes)]
    async fn start(&self) -> Child {
        let mut child = self
            .command()
            .arg("serve")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = reqwest::Client::new();
        loop {
            let ready = client
                .get(format!("http://127.0.0.1:{}/readyz", self.port))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return child;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("herald did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn token(&self) -> String {
        let out = self
            .command()
            .args(["token", "create", "deploy", "--role", "maintainer"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    async fn store(&self) -> SqlStore {
        SqlStore::connect(&self.url()).await.unwrap()
    }
}

async fn api(port: u16, token: &str, path: &str, body: Value) -> Value {
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/v1{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_delivery_then_restart_delivers_each_event_once() {
    let discord = FakeDiscord::start().await;
    let bluesky = FakeBluesky::start().await;
    let env = Env {
        dir: tempfile::tempdir().unwrap(),
        port: crate::common::free_port(),
        vars: crate::common::channel_env(&discord, &bluesky),
    };
    // The server makes the database; commands only use one that exists.
    let mut herald = env.start().await;
    let token = env.token();

    // Each server sits on requests, and acts on them after Herald has given up or died.
    let bot = format!("/channels/{}/messages", discord.announcement_channel());
    for _ in 0..3 {
        discord.push_fault(Fault::Hang(Duration::from_millis(1500)), Some(&bot));
        bluesky.push_fault(
            Fault::Hang(Duration::from_millis(1500)),
            Some("createRecord"),
        );
    }
    let m = api(
        env.port,
        &token,
        "/maintenances",
        json!({"title": "DecAPI infrastructure migration", "schedule_hint": "this Sunday",
               "steps": [{"title": "Back up"}, {"title": "Move"}, {"title": "Switch DNS"}]}),
    )
    .await;
    let id = m["id"].as_i64().unwrap();
    api(
        env.port,
        &token,
        &format!("/maintenances/{id}/announce"),
        json!({}),
    )
    .await;
    api(
        env.port,
        &token,
        &format!("/maintenances/{id}/start"),
        json!({}),
    )
    .await;
    api(
        env.port,
        &token,
        &format!("/maintenances/{id}/steps/1/start"),
        json!({}),
    )
    .await;
    api(
        env.port,
        &token,
        &format!("/maintenances/{id}/steps/1/done"),
        json!({}),
    )
    .await;

    // Kill it while the first posts hang.
    tokio::time::sleep(Duration::from_millis(400)).await;
    kill(Pid::from_raw(herald.id() as i32), Signal::SIGKILL).unwrap();
    herald.wait().unwrap();
    let store = env.store().await;
    let in_flight = store.unsent_deliveries(100).await.unwrap();
    assert!(
        in_flight.iter().any(|d| d.attempts > 0),
        "a delivery was in flight when killed: {in_flight:#?}"
    );

    // Let the hung requests land on the servers (as if Discord and Bluesky had acted), then
    // start again and finish the window.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut herald = env.start().await;
    for (p, action) in [(2, "start"), (2, "done"), (3, "start"), (3, "done")] {
        api(
            env.port,
            &token,
            &format!("/maintenances/{id}/steps/{p}/{action}"),
            json!({}),
        )
        .await;
    }
    api(
        env.port,
        &token,
        &format!("/maintenances/{id}/updates"),
        json!({"body": "All moved."}),
    )
    .await;
    api(
        env.port,
        &token,
        &format!("/maintenances/{id}/complete"),
        json!({}),
    )
    .await;

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let unsent = store.unsent_deliveries(100).await.unwrap();
        if unsent.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still unsent: {unsent:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all = store
        .list_deliveries(herald::domain::Subject::Window(id))
        .await
        .unwrap();
    assert!(
        all.iter().all(|d| d.state == DeliveryState::Sent),
        "{all:#?}"
    );

    // Discord: one announcement, edited after each later event; start, update and completion
    // as messages of their own. Nothing twice.
    let messages = discord.messages();
    let contents: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(messages.len(), 4, "{contents:#?}");
    assert!(messages[0].content.is_empty() && messages[0].embeds[0]["title"].is_string());
    assert!(contents[1].contains("has started"));
    assert!(contents[2].contains("All moved"));
    assert!(contents[3].contains("is complete"));
    assert_eq!(
        messages[0].edits, 6,
        "start, 3 steps done, update, completion"
    );
    assert!(discord.schema_errors().is_empty());

    // Bluesky: one post per event, one thread, in order.
    let records = bluesky.records();
    let texts: Vec<&str> = records
        .iter()
        .map(|r| r.value["text"].as_str().unwrap())
        .collect();
    assert_eq!(records.len(), 7, "{texts:#?}");
    for (i, r) in records.iter().enumerate().skip(1) {
        assert_eq!(r.value["reply"]["root"]["uri"], records[0].uri.as_str());
        assert_eq!(
            r.value["reply"]["parent"]["uri"],
            records[i - 1].uri.as_str()
        );
    }
    assert!(texts[0].contains("Planned maintenance"));
    assert!(texts[1].contains("Started"));
    assert!(texts[2].contains("Step 1 of 3 done"));
    assert!(texts[3].contains("Step 2 of 3 done"));
    assert!(texts[4].contains("Step 3 of 3 done"));
    assert!(texts[5].contains("All moved"));
    assert!(texts[6].contains("Completed"));
    assert_eq!(
        bluesky.create_sessions(),
        1,
        "the session survived the restart"
    );

    kill(Pid::from_raw(herald.id() as i32), Signal::SIGTERM).unwrap();
    assert!(herald.wait().unwrap().success());
}

#[tokio::test]
async fn fifty_posts_sign_in_once_and_an_expired_token_refreshes_once() {
    let app = crate::common::TestApp::new().await;
    let bluesky = FakeBluesky::start().await;
    app.add_channel(NewChannel {
        name: "bluesky".into(),
        kind: Some(ChannelKind::Bluesky),
        target: bluesky.handle(),
        secret: ChannelSecret::new(bluesky.password()),
        api_url: Some(bluesky.url()),
        events: DEFAULT_EVENTS.to_vec(),
        milestones: DEFAULT_MILESTONES.to_vec(),
        enabled: true,
        ..NewChannel::default()
    })
    .await;
    let outbox = app.start_outbox();
    let m = app
        .window(
            "Many updates",
            herald::domain::Schedule::Tentative { hint: None },
            0,
            vec![],
        )
        .await;
    app.act(m.id, WindowAction::Announce).await;
    for i in 1..=49 {
        app.service
            .post_update(m.id, &format!("Update number {i}"))
            .await
            .unwrap();
    }
    let unsent = app.settle(60).await;
    assert!(unsent.is_empty(), "{unsent:#?}");
    assert_eq!(bluesky.records().len(), 50);
    assert_eq!(bluesky.create_sessions(), 1, "50 posts, one createSession");
    assert_eq!(bluesky.refresh_sessions(), 0);

    bluesky.expire_access_tokens();
    app.service.post_update(m.id, "After expiry").await.unwrap();
    let unsent = app.settle(30).await;
    assert!(unsent.is_empty(), "{unsent:#?}");
    assert_eq!(bluesky.records().len(), 51, "the post went through");
    assert_eq!(bluesky.refresh_sessions(), 1, "one refreshSession");
    assert_eq!(bluesky.create_sessions(), 1, "no new sign-in");
    outbox.stop().await;
}

/// SIGTERM while a delivery is in flight: Herald finishes it, then exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_delivery_in_flight_finish() {
    let discord = FakeDiscord::start().await;
    let env = Env {
        dir: tempfile::tempdir().unwrap(),
        port: crate::common::free_port(),
        vars: vec![
            ("HERALD_DISCORD_BOT_TOKEN".into(), discord.bot_token()),
            (
                "HERALD_DISCORD_CHANNEL_ID".into(),
                discord.text_channel().to_string(),
            ),
            ("HERALD_DISCORD_API_URL".into(), discord.base()),
            ("HERALD_ALLOW_PRIVATE_TARGETS".into(), "true".into()),
            // The post hangs 700 ms: a 1 s timeout left a loaded machine 300 ms to spare,
            // and once it timed out (CI with both cores busy).
            ("HERALD_DELIVERY_TIMEOUT".into(), "10s".into()),
        ],
    };
    // The server makes the database; commands only use one that exists.
    let mut herald = env.start().await;
    let token = env.token();
    let bot = format!("/channels/{}/messages", discord.text_channel());
    discord.push_fault(Fault::Hang(Duration::from_millis(700)), Some(&bot));
    let m = api(
        env.port,
        &token,
        "/maintenances",
        json!({"title": "DecAPI infrastructure migration"}),
    )
    .await;
    let id = m["id"].as_i64().unwrap();
    api(
        env.port,
        &token,
        &format!("/maintenances/{id}/announce"),
        json!({}),
    )
    .await;
    // SIGTERM once the post is in flight (the fake took the hang fault on its arrival and
    // is holding the answer), not after a fixed sleep a busy machine may not have reached.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while discord.pending_faults() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the post never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    kill(Pid::from_raw(herald.id() as i32), Signal::SIGTERM).unwrap();
    let status = tokio::task::spawn_blocking(move || herald.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    let store = env.store().await;
    let deliveries = store
        .list_deliveries(herald::domain::Subject::Window(id))
        .await
        .unwrap();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].state, DeliveryState::Sent, "{deliveries:#?}");
    assert_eq!(discord.messages().len(), 1);
}
