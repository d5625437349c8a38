//! The local Discord and Bluesky test servers, exercised with plain reqwest so every behaviour
//! other tests rely on (faults, dedupe, validation, sessions) is known to work.

use std::time::Duration;

use crate::common::fake_bluesky::{self, FakeBluesky};
use crate::common::fake_discord::{self, FakeDiscord, Fault};
use serde_json::{Value, json};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn send(request: reqwest::RequestBuilder) -> (u16, Value, reqwest::header::HeaderMap) {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON body")
    };
    (status, body, headers)
}

// ------------------------------------------------------------------------------------------
// Discord
// ------------------------------------------------------------------------------------------

struct Bot {
    fake: FakeDiscord,
    http: reqwest::Client,
}

impl Bot {
    async fn new() -> Self {
        Self {
            fake: FakeDiscord::start().await,
            http: client(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v10{path}", self.fake.base())
    }

    fn auth(&self) -> String {
        format!("Bot {}", self.fake.bot_token())
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value, reqwest::header::HeaderMap) {
        send(
            self.http
                .post(self.url(path))
                .header("authorization", self.auth())
                .json(&body),
        )
        .await
    }

    async fn say(&self, channel: u64, body: Value) -> (u16, Value) {
        let (s, b, _) = self
            .post(&format!("/channels/{channel}/messages"), body)
            .await;
        (s, b)
    }
}

#[tokio::test]
async fn discord_bot_message_create_edit_and_channel() {
    let bot = Bot::new().await;
    let (status, channel, _) = send(
        bot.http
            .get(bot.url(&format!("/channels/{}", fake_discord::ANNOUNCEMENT_CHANNEL)))
            .header("authorization", bot.auth()),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(channel["type"], 5);
    assert_eq!(channel["guild_id"], fake_discord::GUILD.to_string());

    let (status, msg) = bot
        .say(
            fake_discord::TEXT_CHANNEL,
            json!({
                "content": "Maintenance <t:1780000000:F>",
                "embeds": [{"title": "DB move", "description": "Step 1", "fields": [{"name": "a", "value": "b"}]}],
                "allowed_mentions": {"parse": []},
            }),
        )
        .await;
    assert_eq!(status, 200, "{msg}");
    for key in [
        "id",
        "channel_id",
        "author",
        "timestamp",
        "embeds",
        "mentions",
        "flags",
    ] {
        assert!(msg.get(key).is_some(), "{key} missing: {msg}");
    }
    assert_eq!(msg["type"], 0);
    assert!(msg["edited_timestamp"].is_null());
    assert_eq!(msg["embeds"][0]["type"], "rich");
    let id = msg["id"].as_str().unwrap().to_owned();

    let (status, edited, _) = send(
        bot.http
            .patch(bot.url(&format!(
                "/channels/{}/messages/{id}",
                fake_discord::TEXT_CHANNEL
            )))
            .header("authorization", bot.auth())
            .json(&json!({"content": "Done", "embeds": []})),
    )
    .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["content"], "Done");
    assert!(edited["edited_timestamp"].is_string());

    let messages = bot.fake.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].id.to_string(), id);
    assert_eq!(messages[0].edits, 1);
    assert!(!messages[0].webhook);
    assert_eq!(messages[0].allowed_mentions, Some(json!({"parse": []})));
    assert!(
        bot.fake.schema_errors().is_empty(),
        "{:?}",
        bot.fake.schema_errors()
    );

    // Snowflakes increase.
    let (_, second) = bot
        .say(fake_discord::TEXT_CHANNEL, json!({"content": "two"}))
        .await;
    let second: u64 = second["id"].as_str().unwrap().parse().unwrap();
    assert!(second > id.parse::<u64>().unwrap());

    // Unknowns.
    let (status, body) = bot
        .say(1_200_000_000_000_000_099, json!({"content": "x"}))
        .await;
    assert_eq!((status, body["code"].clone()), (404, json!(10003)));
    let (status, body, _) = send(
        bot.http
            .patch(bot.url(&format!(
                "/channels/{}/messages/42",
                fake_discord::TEXT_CHANNEL
            )))
            .header("authorization", bot.auth())
            .json(&json!({"content": "x"})),
    )
    .await;
    assert_eq!((status, body["code"].clone()), (404, json!(10008)));
    let (status, body) = bot
        .say(fake_discord::TEXT_CHANNEL, json!({"content": ""}))
        .await;
    assert_eq!((status, body["code"].clone()), (400, json!(50006)));
}

#[tokio::test]
async fn discord_nonce_dedupes_only_when_enforced() {
    let bot = Bot::new().await;
    let body = json!({"content": "once", "nonce": "herald-d-17", "enforce_nonce": true});
    let (s1, first) = bot.say(fake_discord::TEXT_CHANNEL, body.clone()).await;
    let (s2, again) = bot.say(fake_discord::TEXT_CHANNEL, body).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(first["id"], again["id"]);
    assert_eq!(first["nonce"], "herald-d-17");
    assert_eq!(bot.fake.messages().len(), 1);

    // Same nonce in the other channel is a different message.
    let (_, other) = bot
        .say(
            fake_discord::ANNOUNCEMENT_CHANNEL,
            json!({"content": "once", "nonce": "herald-d-17", "enforce_nonce": true}),
        )
        .await;
    assert_ne!(other["id"], first["id"]);
    // Without enforce_nonce Discord creates a second message.
    let (_, dup) = bot
        .say(
            fake_discord::TEXT_CHANNEL,
            json!({"content": "once", "nonce": "herald-d-17"}),
        )
        .await;
    assert_ne!(dup["id"], first["id"]);
    assert_eq!(bot.fake.messages().len(), 3);
    // A nonce over 25 characters breaks the schema.
    let (status, body) = bot
        .say(
            fake_discord::TEXT_CHANNEL,
            json!({"content": "x", "nonce": "n".repeat(26), "enforce_nonce": true}),
        )
        .await;
    assert_eq!((status, body["code"].clone()), (400, json!(50035)));
}

#[tokio::test]
async fn discord_wrong_bot_token_is_401_until_it_matches() {
    let bot = Bot::new().await;
    assert_eq!(bot.fake.bot_token(), "bot-token");
    let old = bot.auth();
    bot.fake.set_bot_token("rotated-token");
    let (status, body, _) = send(
        bot.http
            .post(bot.url(&format!(
                "/channels/{}/messages",
                fake_discord::TEXT_CHANNEL
            )))
            .header("authorization", old)
            .json(&json!({"content": "hi"})),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body, json!({"message": "401: Unauthorized", "code": 0}));
    assert!(bot.fake.messages().is_empty());
    let (status, _) = bot
        .say(fake_discord::TEXT_CHANNEL, json!({"content": "hi"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(bot.fake.messages().len(), 1);
}

#[tokio::test]
async fn discord_rate_limit_has_discords_shape_and_headers() {
    let bot = Bot::new().await;
    bot.fake
        .push_fault(Fault::RateLimited { retry_after: 1.25 }, Some("/messages"));
    let (status, body, headers) = bot
        .post(
            &format!("/channels/{}/messages", fake_discord::TEXT_CHANNEL),
            json!({"content": "hi"}),
        )
        .await;
    assert_eq!(status, 429);
    assert_eq!(body["message"], "You are being rate limited.");
    assert_eq!(body["retry_after"], 1.25);
    assert_eq!(body["global"], false);
    let h = |n: &str| headers.get(n).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(h("retry-after").as_deref(), Some("2"));
    assert_eq!(h("x-ratelimit-remaining").as_deref(), Some("0"));
    assert_eq!(h("x-ratelimit-reset-after").as_deref(), Some("1.250"));
    assert_eq!(h("x-ratelimit-scope").as_deref(), Some("user"));
    for n in [
        "x-ratelimit-limit",
        "x-ratelimit-reset",
        "x-ratelimit-bucket",
    ] {
        assert!(h(n).is_some(), "{n}");
    }
    assert!(bot.fake.messages().is_empty());

    // The fault is used up: the next request succeeds, with the usual headers.
    let (status, _, headers) = bot
        .post(
            &format!("/channels/{}/messages", fake_discord::TEXT_CHANNEL),
            json!({"content": "hi"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-ratelimit-limit"], "5");
    assert!(headers.contains_key("x-ratelimit-bucket"));
    let statuses: Vec<_> = bot.fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![Some(429), Some(200)]);
    assert_eq!(
        bot.fake.requests()[0].fault,
        Some(Fault::RateLimited { retry_after: 1.25 })
    );
}

#[tokio::test]
async fn discord_faults_are_fifo_and_filtered_by_path() {
    let bot = Bot::new().await;
    bot.fake.push_fault(Fault::Status(502), Some("/webhooks/"));
    bot.fake.push_fault(Fault::Status(500), None);
    // The first fault does not match a channel path; the second does.
    let (status, body) = bot
        .say(fake_discord::TEXT_CHANNEL, json!({"content": "a"}))
        .await;
    assert_eq!(status, 500);
    assert_eq!(body["message"], "500: Internal Server Error");
    let (status, body, _) = send(
        bot.http
            .post(format!(
                "{}?wait=true",
                bot.fake.webhook_url().replace("/api/", "/api/v10/")
            ))
            .json(&json!({"content": "a"})),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(bot.fake.pending_faults(), 0);
    assert!(bot.fake.messages().is_empty());
    // Keep-alive: all three requests came over one connection.
    let (status, _) = bot
        .say(fake_discord::TEXT_CHANNEL, json!({"content": "a"}))
        .await;
    assert_eq!(status, 200);
    let peers: Vec<_> = bot.fake.requests().iter().map(|r| r.peer).collect();
    assert!(peers.iter().all(|p| *p == peers[0]), "{peers:?}");
}

#[tokio::test]
async fn discord_schema_and_limit_violations_are_recorded() {
    let bot = Bot::new().await;
    let channel = fake_discord::TEXT_CHANNEL;
    // Embed title over 256 characters (the schema says so).
    let (status, body) = bot
        .say(channel, json!({"embeds": [{"title": "t".repeat(300)}]}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], 50035);
    assert_eq!(body["message"], "Invalid Form Body");
    assert_eq!(
        body["errors"]["embeds"]["0"]["title"]["_errors"][0]["code"], "BASE_TYPE_MAX_LENGTH",
        "{body}"
    );
    // A known field with the wrong type.
    let (status, body) = bot
        .say(channel, json!({"content": "x", "tts": "yes"}))
        .await;
    assert_eq!((status, body["code"].clone()), (400, json!(50035)));
    assert!(body["errors"]["tts"]["_errors"].is_array(), "{body}");
    // Limits the schema does not state: content 2000 here, 6000 across embeds.
    let (status, body) = bot.say(channel, json!({"content": "c".repeat(2001)})).await;
    assert_eq!((status, body["code"].clone()), (400, json!(50035)));
    assert!(body["errors"]["content"].is_object(), "{body}");
    let big = json!({"description": "d".repeat(3500)});
    let (status, body) = bot.say(channel, json!({"embeds": [big, big]})).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["errors"]["embeds"]["_errors"][0]["code"], "MAX_EMBED_SIZE_EXCEEDED",
        "{body}"
    );
    // Field value over 1024, through the webhook (a different operation in the document).
    let (status, body, _) = send(
        bot.http
            .post(format!(
                "{}/api/v10/webhooks/{}/{}?wait=true",
                bot.fake.base(),
                bot.fake.webhook_id(),
                bot.fake.webhook_token()
            ))
            .json(&json!({"embeds": [{"fields": [{"name": "n", "value": "v".repeat(1025)}]}]})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["errors"]["embeds"]["0"]["fields"]["0"]["value"].is_object(),
        "{body}"
    );

    let errors = bot.fake.schema_errors();
    let pointers: Vec<&str> = errors.iter().map(|e| e.pointer.as_str()).collect();
    assert_eq!(
        pointers,
        vec![
            "/embeds/0/title",
            "/tts",
            "/content",
            "/embeds",
            "/embeds/0/fields/0/value"
        ],
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .all(|e| !e.error.is_empty() && !e.method.is_empty())
    );
    assert!(errors[4].path.starts_with("/api/v10/webhooks/"));
    assert!(bot.fake.messages().is_empty());
}

#[tokio::test]
async fn discord_drop_before_processing_leaves_nothing() {
    let bot = Bot::new().await;
    bot.fake.push_fault(Fault::DropBeforeProcessing, None);
    let err = bot
        .http
        .post(bot.url(&format!(
            "/channels/{}/messages",
            fake_discord::TEXT_CHANNEL
        )))
        .header("authorization", bot.auth())
        .json(&json!({"content": "lost"}))
        .send()
        .await
        .expect_err("connection closed");
    assert!(!err.is_timeout(), "{err:?}");
    assert!(bot.fake.messages().is_empty());
    let requests = bot.fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].status, None);
    assert_eq!(requests[0].body, Some(json!({"content": "lost"})));
    // The client recovers on a new connection.
    let (status, _) = bot
        .say(fake_discord::TEXT_CHANNEL, json!({"content": "ok"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(bot.fake.messages().len(), 1);
}

#[tokio::test]
async fn discord_drop_after_processing_creates_the_message() {
    let bot = Bot::new().await;
    bot.fake
        .push_fault(Fault::DropAfterProcessing, Some("/webhooks/"));
    let err = bot
        .http
        .post(format!(
            "{}/api/v10/webhooks/{}/{}?wait=true",
            bot.fake.base(),
            bot.fake.webhook_id(),
            bot.fake.webhook_token()
        ))
        .json(&json!({"content": "sent but unseen"}))
        .send()
        .await
        .expect_err("connection closed");
    assert!(!err.is_timeout(), "{err:?}");
    let messages = bot.fake.messages();
    assert_eq!(messages.len(), 1);
    assert!(messages[0].webhook);
    assert_eq!(messages[0].content, "sent but unseen");
    assert_eq!(bot.fake.requests()[0].status, None);

    // Looking before re-posting: the webhook can read its message back.
    let (status, body, _) = send(bot.http.get(format!(
        "{}/api/v10/webhooks/{}/{}/messages/{}",
        bot.fake.base(),
        bot.fake.webhook_id(),
        bot.fake.webhook_token(),
        messages[0].id
    )))
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["content"], "sent but unseen");
}

#[tokio::test]
async fn discord_hang_makes_the_client_time_out_then_acts() {
    let bot = Bot::new().await;
    bot.fake
        .push_fault(Fault::Hang(Duration::from_millis(600)), None);
    let err = reqwest::Client::builder()
        .timeout(Duration::from_millis(150))
        .build()
        .unwrap()
        .post(bot.url(&format!(
            "/channels/{}/messages",
            fake_discord::TEXT_CHANNEL
        )))
        .header("authorization", bot.auth())
        .json(&json!({"content": "slow"}))
        .send()
        .await
        .expect_err("timeout");
    assert!(err.is_timeout(), "{err:?}");
    assert!(bot.fake.messages().is_empty());
    // The server goes on and creates it after the hang, as a slow Discord would.
    for _ in 0..50 {
        if !bot.fake.messages().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(bot.fake.messages().len(), 1);
    assert_eq!(bot.fake.requests()[0].status, Some(200));
}

#[tokio::test]
async fn discord_crosspost_only_in_announcement_channels_and_once() {
    let bot = Bot::new().await;
    let (_, news) = bot
        .say(
            fake_discord::ANNOUNCEMENT_CHANNEL,
            json!({"content": "news"}),
        )
        .await;
    let (_, chat) = bot
        .say(fake_discord::TEXT_CHANNEL, json!({"content": "chat"}))
        .await;
    let crosspost = |channel: u64, id: &str| {
        let url = bot.url(&format!("/channels/{channel}/messages/{id}/crosspost"));
        send(bot.http.post(url).header("authorization", bot.auth()))
    };
    let (status, body, _) = crosspost(
        fake_discord::ANNOUNCEMENT_CHANNEL,
        news["id"].as_str().unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["flags"], 1);
    assert_eq!(body["id"], news["id"]);
    let (status, body, _) = crosspost(
        fake_discord::ANNOUNCEMENT_CHANNEL,
        news["id"].as_str().unwrap(),
    )
    .await;
    assert_eq!((status, body["code"].clone()), (400, json!(40033)));
    let (status, body, _) =
        crosspost(fake_discord::TEXT_CHANNEL, chat["id"].as_str().unwrap()).await;
    assert_eq!((status, body["code"].clone()), (400, json!(50024)));
    let messages = bot.fake.messages();
    assert!(messages[0].crossposted);
    assert!(!messages[1].crossposted);
}

#[tokio::test]
async fn discord_webhook_execute_get_and_edit() {
    let fake = FakeDiscord::start().await;
    let http = client();
    assert_eq!(
        fake.webhook_url(),
        format!(
            "{}/api/webhooks/1100000000000000001/webhook-token",
            fake.base()
        )
    );
    let hook = format!(
        "{}/api/v10/webhooks/1100000000000000001/webhook-token",
        fake.base()
    );
    let (status, info, _) = send(http.get(&hook)).await;
    assert_eq!(status, 200);
    assert_eq!(info["channel_id"], fake_discord::TEXT_CHANNEL.to_string());
    assert_eq!(info["guild_id"], fake_discord::GUILD.to_string());

    let (status, msg, _) = send(
        http.post(format!("{hook}?wait=true"))
            .json(&json!({"content": "hello", "allowed_mentions": {"parse": []}})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(msg["webhook_id"], "1100000000000000001");
    let id = msg["id"].as_str().unwrap();
    let (status, body, _) = send(http.post(&hook).json(&json!({"content": "no wait"}))).await;
    assert_eq!((status, body), (204, Value::Null));

    let (status, edited, _) = send(
        http.patch(format!("{hook}/messages/{id}"))
            .json(&json!({"content": "hello again", "embeds": [{"title": "x"}]})),
    )
    .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["embeds"][0]["title"], "x");
    let (_, fetched, _) = send(http.get(format!("{hook}/messages/{id}"))).await;
    assert_eq!(fetched["content"], "hello again");
    let m = fake.message(id.parse().unwrap()).unwrap();
    assert_eq!((m.edits, m.webhook), (1, true));
    assert_eq!(fake.messages().len(), 2);

    // Wrong token, unknown webhook, bot cannot edit a webhook message.
    let (status, body, _) = send(http.get(hook.replace("webhook-token", "nope"))).await;
    assert_eq!((status, body["code"].clone()), (401, json!(50027)));
    let (status, body, _) =
        send(http.get(hook.replace("1100000000000000001", "1100000000000000009"))).await;
    assert_eq!((status, body["code"].clone()), (404, json!(10015)));
    let (status, body, _) = send(
        http.patch(format!(
            "{}/api/v10/channels/{}/messages/{id}",
            fake.base(),
            fake_discord::TEXT_CHANNEL
        ))
        .header("authorization", format!("Bot {}", fake.bot_token()))
        .json(&json!({"content": "mine now"})),
    )
    .await;
    assert_eq!((status, body["code"].clone()), (403, json!(50005)));
}

// ------------------------------------------------------------------------------------------
// Bluesky
// ------------------------------------------------------------------------------------------

struct Pds {
    fake: FakeBluesky,
    http: reqwest::Client,
}

impl Pds {
    async fn new() -> Self {
        Self {
            fake: FakeBluesky::start().await,
            http: client(),
        }
    }

    fn url(&self, nsid: &str) -> String {
        format!("{}/xrpc/{nsid}", self.fake.url())
    }

    async fn call(&self, nsid: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let mut request = match &body {
            Some(b) => self.http.post(self.url(nsid)).json(b),
            None => self.http.post(self.url(nsid)),
        };
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let (s, b, _) = send(request).await;
        (s, b)
    }

    async fn get(&self, nsid: &str, token: Option<&str>, query: &[(&str, &str)]) -> (u16, Value) {
        let mut request = self.http.get(self.url(nsid)).query(query);
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let (s, b, _) = send(request).await;
        (s, b)
    }

    async fn login(&self) -> (String, String) {
        let (status, body) = self
            .call(
                "com.atproto.server.createSession",
                None,
                Some(
                    json!({"identifier": fake_bluesky::HANDLE, "password": fake_bluesky::PASSWORD}),
                ),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        (
            body["accessJwt"].as_str().unwrap().to_owned(),
            body["refreshJwt"].as_str().unwrap().to_owned(),
        )
    }

    async fn post(&self, token: &str, rkey: Option<&str>, record: Value) -> (u16, Value) {
        let mut input =
            json!({"repo": self.fake.did(), "collection": "app.bsky.feed.post", "record": record});
        if let Some(k) = rkey {
            input["rkey"] = json!(k);
        }
        self.call("com.atproto.repo.createRecord", Some(token), Some(input))
            .await
    }
}

fn post(text: &str) -> Value {
    json!({"$type": "app.bsky.feed.post", "text": text, "createdAt": "2026-05-28T10:00:00.000Z", "langs": ["en"]})
}

#[tokio::test]
async fn bluesky_session_login_and_get_session() {
    let pds = Pds::new().await;
    let (status, body) = pds
        .call(
            "com.atproto.server.createSession",
            None,
            Some(json!({"identifier": "herald.test", "password": "wrong"})),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        json!({"error": "AuthenticationRequired", "message": "Invalid identifier or password"})
    );
    let (status, session) = pds
        .call(
            "com.atproto.server.createSession",
            None,
            Some(json!({"identifier": fake_bluesky::DID, "password": fake_bluesky::PASSWORD})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(session["did"], fake_bluesky::DID);
    assert_eq!(session["handle"], "herald.test");
    assert_eq!(session["active"], true);
    assert_eq!(
        session["didDoc"]["service"][0]["serviceEndpoint"],
        pds.fake.url()
    );
    let access = session["accessJwt"].as_str().unwrap();
    assert_eq!(access.split('.').count(), 3);
    let (status, me) = pds
        .get("com.atproto.server.getSession", Some(access), &[])
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (me["did"].clone(), me["handle"].clone()),
        (json!(fake_bluesky::DID), json!("herald.test"))
    );
    let (status, body) = pds.get("com.atproto.server.getSession", None, &[]).await;
    assert_eq!(
        (status, body["error"].clone()),
        (401, json!("AuthenticationRequired"))
    );
    assert_eq!(pds.fake.create_sessions(), 2);
}

#[tokio::test]
async fn bluesky_expired_access_token_then_refresh_rotates() {
    let pds = Pds::new().await;
    let (access, refresh) = pds.login().await;
    pds.fake.expire_access_tokens();
    let (status, body) = pds
        .get("com.atproto.server.getSession", Some(&access), &[])
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": "ExpiredToken", "message": "Token has expired"})
    );
    let (status, body) = pds.post(&access, None, post("hi")).await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("ExpiredToken"))
    );

    // An access token is no refresh token.
    let (status, body) = pds
        .call("com.atproto.server.refreshSession", Some(&access), None)
        .await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("InvalidToken"))
    );
    let (status, fresh) = pds
        .call("com.atproto.server.refreshSession", Some(&refresh), None)
        .await;
    assert_eq!(status, 200, "{fresh}");
    let new_access = fresh["accessJwt"].as_str().unwrap();
    assert_ne!(fresh["refreshJwt"].as_str().unwrap(), refresh);
    let (status, _) = pds
        .get("com.atproto.server.getSession", Some(new_access), &[])
        .await;
    assert_eq!(status, 200);
    // The old refresh token was rotated away.
    let (status, body) = pds
        .call("com.atproto.server.refreshSession", Some(&refresh), None)
        .await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("ExpiredToken"))
    );
    assert_eq!(pds.fake.refresh_sessions(), 3);
    assert_eq!(pds.fake.create_sessions(), 1);
}

#[tokio::test]
async fn bluesky_create_with_rkey_twice_is_500_and_get_record_reads_back() {
    let pds = Pds::new().await;
    let (token, _) = pds.login().await;
    let rkey = "3lbqwy2kx4c2z";
    let (status, created) = pds
        .post(&token, Some(rkey), post("Maintenance begins"))
        .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(
        created["uri"],
        format!("at://{}/app.bsky.feed.post/{rkey}", fake_bluesky::DID)
    );
    assert_eq!(created["validationStatus"], "valid");
    // A CIDv1 string (dag-cbor, sha2-256, base32) as CID parsers expect.
    let cid = created["cid"].as_str().unwrap();
    assert!(cid.starts_with("bafyrei") && cid.len() == 59, "{cid}");
    let (status, body) = pds
        .post(&token, Some(rkey), post("Maintenance begins"))
        .await;
    assert_eq!(status, 500);
    assert_eq!(body["error"], "InternalServerError");
    assert_eq!(pds.fake.records().len(), 1);

    let query = [
        ("repo", fake_bluesky::DID),
        ("collection", "app.bsky.feed.post"),
        ("rkey", rkey),
    ];
    let (status, got) = pds.get("com.atproto.repo.getRecord", None, &query).await;
    assert_eq!(status, 200);
    assert_eq!(got["cid"], created["cid"]);
    assert_eq!(got["value"]["text"], "Maintenance begins");
    let (status, body) = pds
        .get(
            "com.atproto.repo.getRecord",
            None,
            &[
                ("repo", "herald.test"),
                ("collection", "app.bsky.feed.post"),
                ("rkey", "3lbqwy2kx4c22"),
            ],
        )
        .await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("RecordNotFound"))
    );

    // Without an rkey the fake picks a TID.
    let (status, created) = pds.post(&token, None, post("second")).await;
    assert_eq!(status, 200);
    let rkey = created["uri"].as_str().unwrap().rsplit('/').next().unwrap();
    assert!(fake_bluesky::is_tid(rkey), "{rkey}");
    let records = pds.fake.records();
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].rkey, rkey);
}

#[tokio::test]
async fn bluesky_put_record_is_idempotent_for_identical_content() {
    let pds = Pds::new().await;
    let (token, _) = pds.login().await;
    let put = |record: Value, swap: Option<Value>| {
        let mut input = json!({"repo": fake_bluesky::DID, "collection": "app.bsky.feed.post", "rkey": "3lbqwy2kx4c2z", "record": record});
        if let Some(s) = swap {
            input["swapRecord"] = s;
        }
        pds.call("com.atproto.repo.putRecord", Some(&token), Some(input))
    };
    let (s1, first) = put(post("same"), Some(Value::Null)).await;
    let (s2, second) = put(post("same"), Some(Value::Null)).await;
    assert_eq!((s1, s2), (200, 200), "{second}");
    assert_eq!(first["cid"], second["cid"]);
    let (status, body) = put(post("different"), Some(Value::Null)).await;
    assert_eq!((status, body["error"].clone()), (400, json!("InvalidSwap")));
    let (status, updated) = put(post("different"), Some(first["cid"].clone())).await;
    assert_eq!(status, 200);
    assert_ne!(updated["cid"], first["cid"]);
    let records = pds.fake.records();
    assert_eq!(records.len(), 1);
    assert_eq!(
        (records[0].writes, records[0].value["text"].clone()),
        (2, json!("different"))
    );
}

#[tokio::test]
async fn bluesky_reply_refs_must_name_existing_records() {
    let pds = Pds::new().await;
    let (token, _) = pds.login().await;
    let (_, root) = pds.post(&token, None, post("root")).await;
    let strong = json!({"uri": root["uri"], "cid": root["cid"]});
    let mut reply = post("reply");
    reply["reply"] = json!({"root": strong, "parent": strong});
    let (status, body) = pds.post(&token, None, reply).await;
    assert_eq!(status, 200, "{body}");

    let mut orphan = post("orphan");
    let missing = json!({"uri": format!("at://{}/app.bsky.feed.post/3lbqwy2kx4c22", fake_bluesky::DID), "cid": root["cid"]});
    orphan["reply"] = json!({"root": strong, "parent": missing});
    let (status, body) = pds.post(&token, None, orphan).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "InvalidRequest");
    assert!(
        body["message"].as_str().unwrap().contains("reply/parent"),
        "{body}"
    );

    let mut stale = post("stale cid");
    stale["reply"] = json!({"root": {"uri": root["uri"], "cid": "bafyreibogus"}, "parent": strong});
    let (status, _) = pds.post(&token, None, stale).await;
    assert_eq!(status, 400);
    let mut half = post("no parent");
    half["reply"] = json!({"root": strong});
    let (status, _) = pds.post(&token, None, half).await;
    assert_eq!(status, 400);

    assert_eq!(pds.fake.records().len(), 2);
    assert_eq!(pds.fake.errors().len(), 3);
    assert!(
        pds.fake
            .errors()
            .iter()
            .all(|e| e.nsid == "com.atproto.repo.createRecord")
    );
}

#[tokio::test]
async fn bluesky_post_limits_facets_and_embeds() {
    let pds = Pds::new().await;
    let (token, _) = pds.login().await;
    // 300 graphemes of several code points each pass; 301 do not.
    let thumbs = "👍🏽".repeat(300);
    assert!(thumbs.len() <= 3000);
    let (status, body) = pds.post(&token, None, post(&thumbs)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = pds.post(&token, None, post(&format!("{thumbs}x"))).await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("300 graphemes"),
        "{body}"
    );
    // Few graphemes, too many bytes.
    let family = "👨‍👩‍👧‍👦".repeat(130);
    let (status, body) = pds.post(&token, None, post(&family)).await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().contains("3000"), "{body}");

    // Facets: a good link; end past the text; a split character.
    let text = "Status: https://status.example/m/1 ✓";
    let link = |start: usize, end: usize| {
        let mut p = post(text);
        p["facets"] = json!([{"index": {"byteStart": start, "byteEnd": end}, "features": [{"$type": "app.bsky.richtext.facet#link", "uri": "https://status.example/m/1"}]}]);
        p
    };
    let (status, body) = pds.post(&token, None, link(8, 34)).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = pds.post(&token, None, link(8, text.len() + 1)).await;
    assert_eq!(status, 400);
    let (status, _) = pds.post(&token, None, link(8, text.len() - 1)).await;
    assert_eq!(status, 400);

    // External embed, langs, createdAt.
    let mut card = post("card");
    card["embed"] = json!({"$type": "app.bsky.embed.external", "external": {"uri": "https://status.example/m/1", "title": "DB move", "description": "Step 1 of 3"}});
    let (status, body) = pds.post(&token, None, card.clone()).await;
    assert_eq!(status, 200, "{body}");
    card["embed"]["external"]
        .as_object_mut()
        .unwrap()
        .remove("title");
    let (status, _) = pds.post(&token, None, card).await;
    assert_eq!(status, 400);
    let mut langs = post("langs");
    langs["langs"] = json!(["en", "de", "fr", "it"]);
    let (status, _) = pds.post(&token, None, langs).await;
    assert_eq!(status, 400);
    let mut when = post("when");
    when["createdAt"] = json!("2026-05-28 10:00");
    let (status, _) = pds.post(&token, None, when).await;
    assert_eq!(status, 400);
    let mut untyped = post("no type");
    untyped.as_object_mut().unwrap().remove("$type");
    let (status, _) = pds.post(&token, None, untyped).await;
    assert_eq!(status, 400);
    // A post's rkey must be a TID.
    let (status, _) = pds.post(&token, Some("not-a-tid"), post("x")).await;
    assert_eq!(status, 400);

    assert_eq!(pds.fake.records().len(), 3);
    assert_eq!(pds.fake.errors().len(), 9, "{:#?}", pds.fake.errors());
}

#[tokio::test]
async fn bluesky_faults_drop_hang_and_status() {
    let pds = Pds::new().await;
    let (token, _) = pds.login().await;
    pds.fake
        .push_fault(Fault::DropAfterProcessing, Some("createRecord"));
    pds.fake
        .push_fault(Fault::DropBeforeProcessing, Some("createRecord"));
    pds.fake
        .push_fault(Fault::Status(500), Some("createRecord"));
    pds.fake.push_fault(
        Fault::RateLimited { retry_after: 30.0 },
        Some("createSession"),
    );
    let input = json!({"repo": fake_bluesky::DID, "collection": "app.bsky.feed.post", "rkey": "3lbqwy2kx4c2z", "record": post("x")});
    let attempt = || {
        pds.http
            .post(pds.url("com.atproto.repo.createRecord"))
            .bearer_auth(&token)
            .json(&input)
            .send()
    };
    assert!(attempt().await.is_err());
    assert_eq!(pds.fake.records().len(), 1);
    assert!(attempt().await.is_err());
    let (status, body, _) = send(
        pds.http
            .post(pds.url("com.atproto.repo.createRecord"))
            .bearer_auth(&token)
            .json(&input),
    )
    .await;
    assert_eq!(status, 500);
    assert_eq!(body["error"], "InternalServerError");

    let (status, body, headers) = send(
        pds.http
            .post(pds.url("com.atproto.server.createSession"))
            .json(&json!({"identifier": "herald.test", "password": fake_bluesky::PASSWORD})),
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (429, json!("RateLimitExceeded"))
    );
    assert_eq!(headers["ratelimit-remaining"], "0");
    assert_eq!(headers["retry-after"], "30");

    pds.fake
        .push_fault(Fault::Hang(Duration::from_millis(500)), Some("getRecord"));
    let err = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap()
        .get(pds.url("com.atproto.repo.getRecord"))
        .query(&[
            ("repo", fake_bluesky::DID),
            ("collection", "app.bsky.feed.post"),
            ("rkey", "3lbqwy2kx4c2z"),
        ])
        .send()
        .await
        .expect_err("timeout");
    assert!(err.is_timeout());
    let statuses: Vec<_> = pds.fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![Some(200), None, None, Some(500), Some(429)]);
    assert_eq!(pds.fake.records().len(), 1);
    // A faulted call never reaches the handler, so it is not counted as a session call.
    assert_eq!(pds.fake.create_sessions(), 1);
}
