//! The admin's channel pages: adding with errors by the field, secrets never shown again, an
//! empty secret keeping the stored one, the test message, and the run view's preview.

use crate::common::TestApp;
use crate::common::fake_discord::FakeDiscord;
use axum::http::StatusCode;
use herald::domain::{Role, Schedule, WindowAction};

#[tokio::test]
async fn channels_are_managed_from_the_admin_ui_with_secrets_write_only() {
    let app = TestApp::new().await;
    let discord = FakeDiscord::start().await;
    app.user("alice", Role::Admin).await;
    app.user("mo", Role::Maintainer).await;
    let mo = app.sign_in("mo").await;
    assert_eq!(
        app.get_as("/admin/channels", &mo.cookie).await.status,
        StatusCode::FORBIDDEN
    );
    let me = app.sign_in("alice").await;
    let page = app.get_as("/admin/channels", &me.cookie).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text().contains("Add a channel"));

    // A bad webhook URL: refused next to the field, the name kept, the secret not echoed.
    let r = app
        .post_form(
            "/admin/channels",
            Some(&me.cookie),
            &[
                ("csrf", &me.csrf),
                ("name", "#announcements"),
                ("kind", "discord_webhook"),
                ("secret", "https://example.com/not-a-webhook-secret-xyz"),
                ("events", "announced"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let text = r.text();
    assert!(text.contains("class=\"field-error\""), "{text}");
    assert!(text.contains("value=\"#announcements\""));
    assert!(!text.contains("not-a-webhook-secret-xyz"));

    // A good one.
    let url = discord.webhook_url();
    let r = app
        .post_form(
            "/admin/channels",
            Some(&me.cookie),
            &[
                ("csrf", &me.csrf),
                ("name", "#announcements"),
                ("kind", "discord_webhook"),
                ("secret", &url),
                ("events", "announced"),
                ("events", "started"),
                ("events", "completed"),
                ("milestones", "completed"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    let channel = app.service.channels().await.unwrap().remove(0);
    assert_eq!(channel.events.len(), 3);
    let page = app.get_as("/admin/channels", &me.cookie).await.text();
    assert!(page.contains("#announcements"));
    assert!(
        !page.contains(discord.webhook_token()),
        "the secret is never shown"
    );

    // Renaming with an empty secret keeps the stored one.
    let r = app
        .post_form(
            &format!("/admin/channels/{}", channel.id),
            Some(&me.cookie),
            &[
                ("csrf", &me.csrf),
                ("kind", "discord_webhook"),
                ("name", "#status"),
                ("secret", ""),
                ("events", "announced"),
                ("enabled", "1"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    let r = app.follow(r, &me.cookie).await;
    assert!(r.text().contains("Saved #status."), "{}", r.text());
    let edited = app.service.channel(channel.id).await.unwrap();
    assert_eq!(edited.name, "#status");
    assert_eq!(edited.secret, channel.secret);

    // The test message goes out at once.
    let r = app
        .submit(
            &format!("/admin/channels/{}/test", channel.id),
            &me.cookie,
            &[("csrf", &me.csrf)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.text().contains("Test message sent"));
    // Shown once: a reload shows the page and sends nothing.
    let again = app.get_as("/admin/channels", &me.cookie).await.text();
    assert!(!again.contains("Test message sent"));
    let messages = discord.messages();
    assert_eq!(messages.len(), 1);
    assert!(messages[0].content.contains("Test message"));

    // The run view previews what announcing will post.
    let m = app
        .window(
            "DecAPI migration",
            Schedule::Tentative { hint: None },
            3,
            vec![],
        )
        .await;
    let page = app
        .get_as(&format!("/admin/maintenances/{}", m.id), &me.cookie)
        .await
        .text();
    assert!(page.contains("What announcing will post"), "{page}");
    // Shown as Discord shows it: bold, not asterisks, and the state announcing gives it.
    assert!(page.contains("<strong>Plan</strong>"), "{page}");
    assert!(!page.contains("**Plan**"), "{page}");
    assert!(
        !page.contains("&lt;t:"),
        "timestamp tags are shown as times: {page}"
    );
    app.act(m.id, WindowAction::Announce).await;
    let page = app
        .get_as(&format!("/admin/maintenances/{}", m.id), &me.cookie)
        .await
        .text();
    assert!(page.contains("Announcements"), "the delivery list");
    assert!(page.contains("pending") || page.contains("sent"));

    // Removing it stops its deliveries.
    let r = app
        .post_form(
            &format!("/admin/channels/{}/delete", channel.id),
            Some(&me.cookie),
            &[("csrf", &me.csrf)],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(app.service.channels().await.unwrap().is_empty());
}

fn bot(discord: &FakeDiscord, api: &str) -> herald::domain::NewChannel {
    herald::domain::NewChannel {
        name: "bot".into(),
        kind: Some(herald::domain::ChannelKind::DiscordBot),
        target: discord.text_channel().to_string(),
        secret: herald::domain::ChannelSecret::new(discord.bot_token()),
        api_url: Some(api.to_owned()),
        events: herald::domain::DEFAULT_EVENTS.to_vec(),
        enabled: true,
        ..Default::default()
    }
}

/// A stored secret never follows a changed address: moving a channel's API base or target
/// needs the secret again (and drops a Bluesky session); a channel from the environment keeps
/// its address; the audit log says which fields changed.
#[tokio::test]
async fn changing_where_a_channel_sends_needs_the_secret_again() {
    let app = TestApp::new().await;
    let discord = FakeDiscord::start().await;
    let c = app.add_channel(bot(&discord, &discord.base())).await;
    app.service
        .store()
        .set_channel_session(c.id, Some("{\"session\":1}"))
        .await
        .unwrap();
    let mut moved = bot(&discord, "http://198.51.100.9:1");
    moved.secret = herald::domain::ChannelSecret::new("");
    let e = app
        .service
        .edit_channel(c.id, moved.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, herald::service::ServiceError::Domain(herald::domain::DomainError::Invalid(v)) if v.field == "secret"),
        "{e:?}"
    );
    assert_eq!(
        app.service.channel(c.id).await.unwrap().api_url,
        Some(discord.base())
    );
    // Other fields may change without it.
    let mut renamed = bot(&discord, &discord.base());
    renamed.secret = herald::domain::ChannelSecret::new("");
    renamed.name = "bot two".into();
    app.service.edit_channel(c.id, renamed).await.unwrap();
    assert!(
        app.service
            .store()
            .channel_session(c.id)
            .await
            .unwrap()
            .is_some()
    );
    // With the secret entered again the move is made, and the old session dropped.
    moved.secret = herald::domain::ChannelSecret::new(discord.bot_token());
    app.service.edit_channel(c.id, moved).await.unwrap();
    assert_eq!(
        app.service.channel(c.id).await.unwrap().api_url.as_deref(),
        Some("http://198.51.100.9:1")
    );
    assert_eq!(
        app.service.store().channel_session(c.id).await.unwrap(),
        None
    );
    let audit = app
        .service
        .store()
        .list_audit(10, None, None)
        .await
        .unwrap();
    let edits: Vec<_> = audit
        .iter()
        .filter(|a| a.action == "channel.edit")
        .map(|a| a.target.clone().unwrap_or_default())
        .collect();
    assert!(edits.iter().any(|t| t == "bot: name, api_url"), "{edits:?}");
    assert!(edits.iter().any(|t| t == "bot two: name"), "{edits:?}");

    // A channel from the environment keeps the address the environment gives it.
    let env = app
        .service
        .ensure_env_channel(herald::domain::NewChannel {
            name: "Discord bot".into(),
            ..bot(&discord, &discord.base())
        })
        .await
        .unwrap();
    let mut elsewhere = bot(&discord, "http://198.51.100.9:1");
    elsewhere.name = "Discord bot".into();
    let e = app
        .service
        .edit_channel(env.id, elsewhere)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("comes from the environment"), "{e}");
}

/// Senders follow no redirect: a token never goes where a redirect points.
#[tokio::test]
async fn senders_follow_no_redirects() {
    let app = TestApp::new().await;
    let discord = FakeDiscord::start().await;
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let elsewhere = {
        let hits = hits.clone();
        let router = axum::Router::new().fallback(move || {
            hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { "{}" }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        addr
    };
    let redirector = {
        let router = axum::Router::new().fallback(move |uri: axum::http::Uri| async move {
            axum::response::Redirect::temporary(&format!("http://{elsewhere}{uri}"))
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        addr
    };
    let c = app
        .add_channel(bot(&discord, &format!("http://{redirector}")))
        .await;
    let settings = herald::notify::NotifySettings::from_settings(&app.state.settings);
    let sender = herald::notify::sender_for(&c, &settings, app.service.store()).unwrap();
    let result = sender.test("hello").await;
    assert!(result.is_err(), "{result:?}");
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
}

#[tokio::test]
async fn a_signed_webhook_shows_its_secret_once_and_rotates_it() {
    let app = TestApp::new().await;
    app.user("alice", Role::Admin).await;
    let me = app.sign_in("alice").await;
    let add = |url: &'static str| {
        let csrf = me.csrf.clone();
        let cookie = me.cookie.clone();
        let app = &app;
        async move {
            app.post_form(
                "/admin/channels",
                Some(&cookie),
                &[
                    ("csrf", &csrf),
                    ("name", "hooks"),
                    ("kind", "webhook"),
                    ("target", url),
                    ("secret", ""),
                    ("events", "announced"),
                ],
                &[],
            )
            .await
        }
    };
    let r = add("ftp://example.com/hook").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.text()
            .contains("give the http:// or https:// URL to send to")
    );

    let r = app
        .follow(add("https://hooks.example.com/herald").await, &me.cookie)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let text = r.text();
    let secret = app.service.channels().await.unwrap()[0]
        .secret
        .expose()
        .to_owned();
    assert!(secret.starts_with("whsec_"));
    assert!(
        text.contains(&secret),
        "shown once, right after it was made"
    );
    let again = app.get_as("/admin/channels", &me.cookie).await.text();
    assert!(!again.contains(&secret), "and never again");
    assert!(again.contains("New signing secret"));

    let r = app
        .submit(
            "/admin/channels/1/rotate",
            &me.cookie,
            &[("csrf", &me.csrf)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let rotated = app.service.channels().await.unwrap()[0]
        .secret
        .expose()
        .to_owned();
    assert_ne!(rotated, secret);
    assert!(r.text().contains(&rotated));
    assert!(!r.text().contains(&secret));
    let audit = app.service.audit_log(5).await.unwrap();
    assert!(
        audit.iter().any(|e| e.action == "channel.rotate_secret"),
        "{audit:?}"
    );
}

/// Channels reach only public addresses over https unless the operator allows private ones:
/// a Discord API base, a webhook or a PDS on loopback, a private network or the cloud's
/// metadata address is refused before anything is sent (a name resolving there too, at
/// connect time), and what a receiver answers is shown as its status, not its body.
#[tokio::test]
async fn channels_cannot_reach_private_addresses_unless_allowed() {
    use herald::domain::{ChannelKind, ChannelSecret, DEFAULT_EVENTS, NewChannel};
    let app = TestApp::new().await;
    let discord = FakeDiscord::start().await;
    let hook = |target: &str| NewChannel {
        name: "hook".into(),
        kind: Some(ChannelKind::Webhook),
        target: target.into(),
        secret: ChannelSecret::new(String::new()),
        events: DEFAULT_EVENTS.to_vec(),
        enabled: true,
        ..Default::default()
    };
    let mut strict = herald::notify::NotifySettings::from_settings(&app.state.settings);
    strict.allow_private_targets = false;
    let refusal = |c: &herald::domain::Channel, settings: &herald::notify::NotifySettings| {
        match herald::notify::sender_for(c, settings, app.service.store()) {
            Ok(_) => String::new(),
            Err(e) => e.reason().to_owned(),
        }
    };
    for (channel, said) in [
        (
            bot(&discord, &discord.base()),
            "HERALD_ALLOW_PRIVATE_TARGETS",
        ),
        (
            bot(&discord, "https://169.254.169.254"),
            "169.254.169.254 is a loopback, private or link-local address",
        ),
        (hook("https://10.1.2.3/hook"), "10.1.2.3 is a loopback"),
        (
            hook("http://hooks.example.com/x"),
            "Herald sends only over https",
        ),
    ] {
        let c = app.add_channel(channel).await;
        let reason = refusal(&c, &strict);
        assert!(reason.contains(said), "{reason}");
        app.service.delete_channel(c.id).await.unwrap();
    }
    // A name is checked where it resolves: localhost is loopback.
    let c = app.add_channel(bot(&discord, "https://localhost:9")).await;
    let sender = herald::notify::sender_for(&c, &strict, app.service.store()).unwrap();
    let reason = sender.test("hello").await.unwrap_err().reason().to_owned();
    assert!(reason.contains("resolves to loopback"), "{reason}");
    assert_eq!(discord.requests().len(), 0);

    // Allowed (as the tests' own settings do): a receiver's body stays out of what a
    // maintainer sees, only its status shows.
    let secret_body = {
        let router = axum::Router::new().fallback(|| async {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "root:x:0:0:root:/root:/bin/bash internal-only",
            )
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        addr
    };
    let c = app
        .add_channel(hook(&format!("http://{secret_body}/hook")))
        .await;
    let settings = herald::notify::NotifySettings::from_settings(&app.state.settings);
    let sender = herald::notify::sender_for(&c, &settings, app.service.store()).unwrap();
    let reason = sender.test("hello").await.unwrap_err().reason().to_owned();
    assert!(reason.contains("500 Internal Server Error"), "{reason}");
    assert!(!reason.contains("root:x"), "{reason}");
}
