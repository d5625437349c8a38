//! The admin's channel pages: adding with errors by the field, secrets never shown again, an
//! empty secret keeping the stored one, the test message, and the run view's preview.

mod common;

use axum::http::StatusCode;
use common::TestApp;
use common::fake_discord::FakeDiscord;
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
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let edited = app.service.channel(channel.id).await.unwrap();
    assert_eq!(edited.name, "#status");
    assert_eq!(edited.secret, channel.secret);

    // The test message goes out at once.
    let r = app
        .post_form(
            &format!("/admin/channels/{}/test", channel.id),
            Some(&me.cookie),
            &[("csrf", &me.csrf)],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.text().contains("Test message sent"));
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
    assert!(page.contains("Plan"));
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
