//! Who may change what, for every route that changes something: a user or token whose role
//! lacks the right is refused with 403 and nothing changes. The route tables below are checked
//! against the router's source and the OpenAPI document, so a new route that changes
//! something cannot be added without saying who may use it.

use axum::http::{Method, StatusCode};
use herald::domain::{
    Actor, ChannelKind, ChannelSecret, NewChannel, NewMaintenance, Role, default_events,
    default_milestones,
};
use herald::service::ServiceError;
use serde_json::{Value, json};

use crate::common::TestApp;

/// Admin form posts only an admin may send (`{id}` is a real channel, `{name}` a real user).
const ADMIN_POSTS: &[&str] = &[
    "/admin/tokens",
    "/admin/tokens/{id}/revoke",
    "/admin/components",
    "/admin/components/{slug}",
    "/admin/users",
    "/admin/users/{name}",
    "/admin/channels",
    "/admin/channels/{id}",
    "/admin/channels/{id}/delete",
    "/admin/channels/{id}/test",
    "/admin/channels/{id}/rotate",
    "/admin/subscribers/{id}/delete",
];

/// Admin form posts every signed-in user (a maintainer at least) may send.
const MAINTAINER_POSTS: &[&str] = &[
    "/admin/maintenances",
    "/admin/maintenances/{id}/action",
    "/admin/maintenances/{id}/steps/{position}",
    "/admin/maintenances/{id}/updates",
    "/admin/maintenances/{id}/updates/{update}",
    "/admin/maintenances/{id}/schedule",
    "/admin/maintenances/{id}/edit",
    "/admin/maintenances/{id}/plan",
    "/admin/maintenances/{id}/deliveries/{delivery}",
    "/admin/password",
    "/admin/rollouts",
    "/admin/rollouts/{id}/action",
    "/admin/rollouts/{id}/targets/{position}",
    "/admin/rollouts/{id}/edit",
    "/admin/rollouts/{id}/updates",
    "/admin/rollouts/{id}/deliveries/{delivery}",
    "/admin/incidents",
    "/admin/incidents/{id}/updates",
    "/admin/incidents/{id}/action",
    "/admin/incidents/{id}/postmortem",
    "/admin/incidents/{id}/deliveries/{delivery}",
];

/// Posts before or without a session: signing in and out, the first-run setup.
const SESSION_POSTS: &[&str] = &["/admin/login", "/admin/logout", "/admin/setup"];

/// Posts anyone may send: subscribing by email, and a subscriber's own links (the signed
/// token in the path is the credential; one-click unsubscribe comes without cookies).
const PUBLIC_POSTS: &[&str] = &[
    "/subscribe",
    "/subscriptions/{id}/{token}",
    "/subscriptions/{id}/{token}/confirm",
    "/subscriptions/{id}/{token}/unsubscribe",
];

/// API writes only an admin token may make.
const ADMIN_API: &[(&str, &str)] = &[
    ("post", "/api/v1/components"),
    ("put", "/api/v1/components/{slug}/status"),
];

/// Every path the router answers POST on, read from its source.
fn router_posts() -> Vec<String> {
    let source = include_str!("../../src/web/mod.rs");
    source
        .split(".route(")
        .skip(1)
        .filter(|chunk| {
            let call = chunk.split(".route(").next().unwrap_or("");
            call.contains("post(")
        })
        .filter_map(|chunk| chunk.split('"').nth(1).map(str::to_owned))
        .collect()
}

#[test]
fn every_admin_post_says_who_may_send_it() {
    let posts = router_posts();
    assert!(
        posts.len() > 20,
        "the router's posts were not found: {posts:?}"
    );
    for path in &posts {
        assert!(
            ADMIN_POSTS.contains(&path.as_str())
                || MAINTAINER_POSTS.contains(&path.as_str())
                || SESSION_POSTS.contains(&path.as_str())
                || PUBLIC_POSTS.contains(&path.as_str()),
            "POST {path} is in no table of tests/it/roles.rs: say who may send it"
        );
    }
}

/// A maintainer signed in, a channel, a user and a component to aim the admin posts at.
async fn setup() -> (TestApp, crate::common::Browser, i64) {
    let app = TestApp::new().await;
    app.component("api", "API").await;
    app.user("ada", Role::Admin).await;
    app.user("mo", Role::Maintainer).await;
    let channel = app
        .add_channel(NewChannel {
            name: "hook".into(),
            kind: Some(ChannelKind::Webhook),
            target: "http://127.0.0.1:9/hook".into(),
            secret: ChannelSecret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            events: default_events(ChannelKind::Webhook),
            milestones: default_milestones(),
            langs: vec!["en".into()],
            enabled: true,
            ..NewChannel::default()
        })
        .await;
    app.token(Role::Maintainer).await;
    let me = app.sign_in("mo").await;
    (app, me, channel.id)
}

#[tokio::test]
async fn a_maintainer_cannot_post_any_admin_form() {
    let (app, me, channel) = setup().await;
    let audit = app.service.audit_log(1000).await.unwrap().len();
    for template in ADMIN_POSTS {
        let path = template
            .replace("{id}", &channel.to_string())
            .replace("{slug}", "api")
            .replace("{name}", "ada");
        let r = app
            .post_form(
                &path,
                Some(&me.cookie),
                &[
                    ("csrf", &me.csrf),
                    ("name", "x-new"),
                    ("slug", "x-new"),
                    ("password", "correct horse battery staple"),
                    ("role", "admin"),
                    ("action", "role"),
                    ("kind", "webhook"),
                    ("target", "http://127.0.0.1:9/other"),
                ],
                &[],
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "POST {path}: {}", r.text());
    }
    // Nothing changed: no token, user, component or channel more or less, no role raised.
    assert_eq!(app.service.audit_log(1000).await.unwrap().len(), audit);
    assert_eq!(app.service.tokens().await.unwrap().len(), 1);
    let users = app.service.users().await.unwrap();
    assert_eq!(users.len(), 2);
    assert!(
        users
            .iter()
            .any(|u| u.name == "mo" && u.role == Role::Maintainer)
    );
    assert_eq!(app.service.components().await.unwrap().len(), 1);
    let channels = app.service.channels().await.unwrap();
    assert_eq!(channels.len(), 1);
    assert_eq!(channels[0].target, "http://127.0.0.1:9/hook");
}

#[tokio::test]
async fn a_maintainer_token_cannot_make_admin_changes_through_the_api() {
    let app = TestApp::new().await;
    let token = app.token(Role::Maintainer).await;
    let doc: Value = serde_json::from_slice(&app.get("/api/openapi.json").await.body).unwrap();
    let mut writes = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["post", "put", "patch", "delete"] {
            if item[method].is_object() {
                writes.push((method, path.clone()));
            }
        }
    }
    assert!(writes.len() >= 10, "{writes:?}");
    for (method, path) in &writes {
        let admin_only = ADMIN_API.contains(&(*method, path.as_str()));
        let concrete = path
            .replace("{id}", "1")
            .replace("{position}", "1")
            .replace("{name}", "t-1")
            .replace("{slug}", "api")
            .replace("{action}", "announce");
        let (status, body, _) = app
            .api(
                Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                &concrete,
                Some(&token),
                Some(if path.ends_with("/components") {
                    json!({"slug": "x", "name": "X"})
                } else if path.ends_with("/status") {
                    json!({"status": "major_outage", "body": "Down."})
                } else {
                    json!({"title": "T", "body": "b", "to_version": "v2", "targets": ["t-1"],
                        "state": "draining"})
                }),
            )
            .await;
        if admin_only {
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {body}");
            assert_eq!(body["error"]["code"], "forbidden");
        } else {
            assert_ne!(status, StatusCode::FORBIDDEN, "{method} {path}: {body}");
        }
    }
    assert!(app.service.components().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_service_refuses_whoever_may_not() {
    let app = TestApp::new().await;
    let window = NewMaintenance {
        title: "T".into(),
        description: String::new(),
        impact: herald::domain::Impact::None,
        schedule: herald::domain::Schedule::Tentative { hint: None },
        component_ids: vec![],
        steps: vec![],
        automation: Default::default(),
    };
    // What the web handlers hold before they name who is asking: it may change nothing.
    let anonymous = &app.state.service;
    assert_eq!(anonymous.actor(), &Actor::Anonymous);
    assert!(matches!(
        anonymous.create_maintenance(window.clone()).await,
        Err(ServiceError::Forbidden(_))
    ));
    let id = app
        .service
        .create_maintenance(window.clone())
        .await
        .unwrap()
        .id;
    app.act(id, herald::domain::WindowAction::Announce).await;
    assert!(matches!(
        anonymous.post_update(id, "x").await,
        Err(ServiceError::Forbidden(_))
    ));
    assert!(matches!(
        anonymous
            .create_rollout(herald::domain::NewRollout::new("R", None, "v2", &["a"]))
            .await,
        Err(ServiceError::Forbidden(_))
    ));
    // A maintainer runs windows but does not manage accounts or components.
    let maintainer = app.service.acting(Actor::Token {
        name: "deploy".into(),
        role: Role::Maintainer,
    });
    maintainer.post_update(id, "Fine").await.unwrap();
    for refused in [
        maintainer.create_token("x", Role::Admin).await.err(),
        maintainer
            .add_user("eve", "correct horse battery", Role::Admin)
            .await
            .err(),
        maintainer.set_role("eve", Role::Admin).await.err(),
        maintainer.move_component("api", 1).await.err(),
    ]
    .map(|r| r.map(|e| matches!(e, ServiceError::Forbidden(_))))
    {
        assert_eq!(refused, Some(true));
    }
    // A user may set their own password, and no one else's.
    app.user("mo", Role::Maintainer).await;
    app.user("ada", Role::Admin).await;
    let mo = app.service.acting(Actor::User {
        name: "mo".into(),
        role: Role::Maintainer,
    });
    mo.set_password("mo", "another horse battery")
        .await
        .unwrap();
    assert!(matches!(
        mo.set_password("ada", "another horse battery").await,
        Err(ServiceError::Forbidden(_))
    ));
}

/// Every address a form posts to, followed as a link (a bookmark, a sign-in that came back to
/// it), leads to a page that exists: `form_page` knows every form the router has.
#[tokio::test]
async fn every_form_address_asked_with_get_leads_to_its_page() {
    let (app, _, channel) = setup().await;
    let m = app
        .window(
            "DecAPI migration",
            herald::domain::Schedule::Tentative { hint: None },
            2,
            vec![],
        )
        .await;
    let rollout = app
        .service
        .acting(Actor::System)
        .create_rollout(herald::domain::NewRollout {
            title: "Fishjam v1.4.0".into(),
            description: String::new(),
            from_version: None,
            to_version: "v1.4.0".into(),
            targets: vec!["fishjam-1".into()],
            maintenance_id: None,
            progress_deadline: herald::domain::DEFAULT_PROGRESS_DEADLINE,
            stale_after: herald::domain::DEFAULT_STALE_AFTER,
            public_names: true,
            rollback_of: None,
        })
        .await
        .unwrap();
    let incident = app
        .service
        .acting(Actor::System)
        .create_incident(herald::domain::NewIncident {
            title: "API errors".into(),
            impact: herald::domain::Impact::Minor,
            status: herald::domain::IncidentStatus::Investigating,
            components: vec![],
            body: "Looking.".into(),
            publish: false,
            maintenance_id: None,
            rollout_id: None,
            source: "manual".into(),
        })
        .await
        .unwrap();
    let ada = app.sign_in("ada").await;
    for template in ADMIN_POSTS.iter().chain(MAINTAINER_POSTS) {
        let path = template
            .replace(
                "{id}",
                &if template.contains("channels") || template.contains("tokens") {
                    channel.to_string()
                } else if template.contains("rollouts") {
                    rollout.id.to_string()
                } else if template.contains("incidents") {
                    incident.id.to_string()
                } else {
                    m.id.to_string()
                },
            )
            .replace("{slug}", "api")
            .replace("{name}", "ada")
            .replace("{position}", "1")
            .replace("{delivery}", "1")
            .replace("{update}", "1");
        let r = app.get_as(&path, &ada.cookie).await;
        if r.status == StatusCode::OK {
            continue; // the address is a page too (/admin/password, /admin/channels, …)
        }
        assert_eq!(r.status, StatusCode::SEE_OTHER, "GET {path}");
        let to = r.header("location").unwrap().to_owned();
        let page = app.get_as(&to, &ada.cookie).await;
        assert_eq!(page.status, StatusCode::OK, "GET {path} led to {to}");
    }
}

/// A reporter token (the one placed on every instance) reports rollout progress and reads,
/// and nothing else: it cannot create, steer or abort rollouts, plan windows or manage
/// anything. People cannot be reporters.
#[tokio::test]
async fn a_reporter_token_only_reports() {
    let app = TestApp::new().await;
    let maintainer = app.token(Role::Maintainer).await;
    let reporter = app.token(Role::Reporter).await;
    let (status, r, _) = app
        .api(
            Method::POST,
            "/api/v1/rollouts",
            Some(&maintainer),
            Some(json!({"title": "Fishjam v1.4.0", "from_version": "v1.3.2",
                        "to_version": "v1.4.0", "targets": ["fishjam-1", "fishjam-2"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{r}");
    let id = r["id"].as_i64().unwrap();
    let (status, r, _) = app
        .api(
            Method::PUT,
            &format!("/api/v1/rollouts/{id}/targets/fishjam-1"),
            Some(&reporter),
            Some(json!({"state": "draining", "remaining": {"rooms": 3}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let (status, _, _) = app
        .api(
            Method::GET,
            &format!("/api/v1/rollouts/{id}"),
            Some(&reporter),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for (method, path, body) in [
        (
            Method::POST,
            "/api/v1/rollouts".to_owned(),
            json!({"title": "x", "from_version": "1", "to_version": "2", "targets": ["a"]}),
        ),
        (
            Method::POST,
            format!("/api/v1/rollouts/{id}/abort"),
            json!({}),
        ),
        (
            Method::PATCH,
            format!("/api/v1/rollouts/{id}"),
            json!({"title": "y"}),
        ),
        (
            Method::POST,
            format!("/api/v1/rollouts/{id}/updates"),
            json!({"body": "hello"}),
        ),
        (
            Method::POST,
            "/api/v1/maintenances".to_owned(),
            json!({"title": "x"}),
        ),
        (
            Method::POST,
            "/api/v1/components".to_owned(),
            json!({"slug": "api", "name": "API"}),
        ),
    ] {
        let (status, e, _) = app
            .api(method.clone(), &path, Some(&reporter), Some(body))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {e}");
    }
    let e = app
        .service
        .add_user("rita", "correct horse battery", Role::Reporter)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("reporter is for API tokens"), "{e}");
}

/// Tokens can expire, and do not outlive the user who made them; a token making requests
/// faster than HERALD_API_RATE_LIMIT is answered 429 with Retry-After.
#[tokio::test]
async fn tokens_expire_die_with_their_creator_and_are_rate_limited() {
    let app = TestApp::new().await;
    app.user("alice", Role::Admin).await;
    app.user("bob", Role::Admin).await;
    let alice = app.service.acting(Actor::User {
        name: "alice".into(),
        role: Role::Admin,
    });
    let short = alice
        .create_token_expiring(
            "short",
            Role::Maintainer,
            Some(jiff::SignedDuration::from_hours(1)),
        )
        .await
        .unwrap();
    let kept = alice.create_token("kept", Role::Maintainer).await.unwrap();
    let get = |secret: String| {
        let app = &app;
        async move {
            app.api(Method::GET, "/api/v1/rollouts", Some(&secret), None)
                .await
                .0
        }
    };
    assert_eq!(get(short.secret.expose().to_owned()).await, StatusCode::OK);
    app.at(61);
    assert_eq!(
        get(short.secret.expose().to_owned()).await,
        StatusCode::UNAUTHORIZED,
        "expired"
    );
    assert_eq!(get(kept.secret.expose().to_owned()).await, StatusCode::OK);
    let bob = app.service.acting(Actor::User {
        name: "bob".into(),
        role: Role::Admin,
    });
    bob.remove_user("alice").await.unwrap();
    assert_eq!(
        get(kept.secret.expose().to_owned()).await,
        StatusCode::UNAUTHORIZED,
        "revoked with its creator"
    );
    let tokens = bob.tokens().await.unwrap();
    assert!(
        tokens
            .iter()
            .all(|t| t.revoked_at.is_some() || t.name == "test")
    );

    // A rate of 5 a second: a burst of 10, then 429 with Retry-After.
    let mut settings = app.state.settings.clone();
    settings.api_rate_limit = 5;
    let router = herald::web::router(herald::web::AppState::new(app.service.clone(), settings));
    let token = app.token(Role::Maintainer).await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..12 {
        use tower::ServiceExt;
        let request = axum::http::Request::builder()
            .uri("/api/v1/rollouts")
            .header("authorization", format!("Bearer {token}"))
            .body(axum::body::Body::empty())
            .unwrap();
        let r = router.clone().oneshot(request).await.unwrap();
        statuses.push(r.status());
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = r.headers().get("retry-after").cloned();
        }
    }
    assert_eq!(statuses[..10], [StatusCode::OK; 10], "{statuses:?}");
    assert_eq!(
        statuses[10..],
        [StatusCode::TOO_MANY_REQUESTS; 2],
        "{statuses:?}"
    );
    assert_eq!(retry_after.unwrap(), "1");
}
