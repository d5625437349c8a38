//! The admin pages: sign-in, sessions, CSRF, throttling, roles, and running a window by forms.

use crate::common::TestApp;
use axum::http::StatusCode;
use herald::domain::{Role, WindowState};

#[tokio::test]
async fn sign_in_sets_a_safe_cookie_and_sign_out_ends_it() {
    let app = TestApp::new().await;
    app.user("alice", Role::Admin).await;
    let r = app.get("/admin").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.header("location"), Some("/admin/login?next=/admin"));
    let r = app
        .post_form(
            "/admin/login",
            None,
            &[
                ("name", "alice"),
                ("password", "correct horse battery"),
                ("next", "https://evil.example/"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.header("location"), Some("/admin"), "no open redirect");
    let cookie = r.header("set-cookie").unwrap();
    for part in ["HttpOnly", "SameSite=Lax", "Path=/admin", "Max-Age="] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain http here");

    let me = app.sign_in("alice").await;
    let other = app.sign_in("alice").await;
    assert_ne!(me.cookie, other.cookie, "a new session id at every login");
    assert_eq!(
        app.get_as("/admin", &me.cookie).await.status,
        StatusCode::OK
    );
    let r = app
        .post_form(
            "/admin/logout",
            Some(&me.cookie),
            &[("csrf", &me.csrf)],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(
        app.get_as("/admin", &me.cookie).await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        app.get_as("/admin", &other.cookie).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn wrong_passwords_are_throttled() {
    let app = TestApp::new().await;
    app.user("alice", Role::Admin).await;
    for _ in 0..5 {
        let r = app
            .post_form(
                "/admin/login",
                None,
                &[("name", "alice"), ("password", "wrong wrong wrong")],
                &[],
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        let html = r.text();
        assert!(html.contains("Wrong name or password."));
        assert!(html.contains("value=\"alice\""), "the name typed is kept");
    }
    // Now even the right password is refused for a while.
    let r = app
        .post_form(
            "/admin/login",
            None,
            &[("name", "alice"), ("password", "correct horse battery")],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.text().contains("Too many failed attempts"));
    assert!(r.header("set-cookie").is_none());
}

#[tokio::test]
async fn forms_from_elsewhere_or_without_the_token_change_nothing() {
    let app = TestApp::new().await;
    app.user("alice", Role::Maintainer).await;
    let me = app.sign_in("alice").await;
    let form = [("title", "Sneaky"), ("when", "tentative")];
    let cases: [(&str, Vec<(&str, &str)>); 4] = [
        ("missing token", vec![]),
        ("wrong token", vec![("csrf", "0000")]),
        ("cross-site fetch", vec![("csrf", me.csrf.as_str())]),
        ("foreign origin", vec![("csrf", me.csrf.as_str())]),
    ];
    for (why, extra) in cases {
        let mut pairs: Vec<(&str, &str)> = form.to_vec();
        pairs.extend(extra);
        let headers: Vec<(&str, &str)> = match why {
            "cross-site fetch" => vec![("sec-fetch-site", "cross-site")],
            "foreign origin" => vec![
                ("origin", "https://evil.example"),
                ("host", "status.example"),
            ],
            _ => vec![],
        };
        let r = app
            .post_form("/admin/maintenances", Some(&me.cookie), &pairs, &headers)
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{why}");
    }
    assert_eq!(app.service.store().count_maintenances().await.unwrap(), 0);
}

#[tokio::test]
async fn every_admin_form_checks_the_token_before_reading_the_form() {
    let app = TestApp::new().await;
    app.user("root", Role::Admin).await;
    let me = app.sign_in("root").await;
    // Every state-changing admin route of a signed-in user, with a form that would not even
    // parse: the answer is the CSRF refusal, whatever the route expects.
    let routes = [
        "/admin/logout",
        "/admin/maintenances",
        "/admin/maintenances/1/action",
        "/admin/maintenances/1/steps/1",
        "/admin/maintenances/1/updates",
        "/admin/maintenances/1/schedule",
        "/admin/maintenances/1/edit",
        "/admin/maintenances/1/plan",
        "/admin/maintenances/1/deliveries/1",
        "/admin/tokens",
        "/admin/tokens/1/revoke",
        "/admin/components",
        "/admin/components/api",
        "/admin/users",
        "/admin/users/root",
        "/admin/password",
        "/admin/channels",
        "/admin/channels/1",
        "/admin/channels/1/delete",
        "/admin/channels/1/test",
        "/admin/channels/1/rotate",
        "/admin/rollouts",
        "/admin/rollouts/1/action",
        "/admin/rollouts/1/targets/1",
        "/admin/rollouts/1/edit",
        "/admin/rollouts/1/updates",
        "/admin/rollouts/1/deliveries/1",
    ];
    for path in routes {
        let r = app
            .post_form(path, Some(&me.cookie), &[("position", "first")], &[])
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
        assert!(r.text().contains("The form was stale"), "{path}");
    }
    // Still signed in: the refused logout did not end the session.
    assert_eq!(
        app.get_as("/admin", &me.cookie).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn maintainers_cannot_reach_admin_pages() {
    let app = TestApp::new().await;
    app.user("mo", Role::Maintainer).await;
    let me = app.sign_in("mo").await;
    for path in ["/admin/tokens", "/admin/audit"] {
        assert_eq!(
            app.get_as(path, &me.cookie).await.status,
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
    let r = app
        .post_form(
            "/admin/tokens",
            Some(&me.cookie),
            &[("csrf", &me.csrf), ("name", "x")],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(app.service.tokens().await.unwrap().is_empty());
}

#[tokio::test]
async fn planning_form_keeps_input_and_shows_errors_by_the_field() {
    let app = TestApp::new().await;
    app.component("api", "API").await;
    app.user("mo", Role::Maintainer).await;
    let me = app.sign_in("mo").await;
    let r = app
        .post_form(
            "/admin/maintenances",
            Some(&me.cookie),
            &[
                ("csrf", &me.csrf),
                ("title", "   "),
                ("description", "Keep *this* text"),
                ("when", "fixed"),
                ("starts_at", "2030-01-05T10:00"),
                ("ends_at", "2030-01-05T09:00"),
                ("time_zone", "Europe/Warsaw"),
                ("component_api", "on"),
                ("steps", "One\nTwo"),
                ("auto_start", "on"),
                ("reminders", "24h, soon"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let html = r.text();
    assert!(html.contains("&#34;soon&#34; is not an offset"), "{html}");
    assert!(html.contains("value=\"24h, soon\""), "{html}");
    assert!(html.contains("name=\"auto_start\" checked"), "{html}");
    assert!(
        html.contains("the expected end must be after the start"),
        "{html}"
    );
    assert!(html.contains("Keep *this* text"));
    assert!(html.contains("value=\"Europe/Warsaw\""));
    assert!(html.contains("name=\"component_api\" checked"));
    assert!(html.contains("One\nTwo"));
    assert_eq!(app.service.store().count_maintenances().await.unwrap(), 0);

    let r = app
        .post_form(
            "/admin/maintenances",
            Some(&me.cookie),
            &[
                ("csrf", &me.csrf),
                ("title", "Database cluster migration"),
                ("when", "fixed"),
                ("starts_at", "2030-01-05T10:00"),
                ("ends_at", "2030-01-05T12:00"),
                ("time_zone", "Europe/Warsaw"),
                ("component_api", "on"),
                ("steps", "- One\n\n- Two\n"),
                ("auto_complete", "on"),
                ("reminders", "2d, 30m"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    let m = app.service.maintenance(1).await.unwrap();
    assert_eq!(m.state, WindowState::Draft);
    assert_eq!(m.steps.len(), 2);
    assert_eq!(m.steps[0].title, "One");
    assert_eq!(m.components[0].slug, "api");
    assert!(!m.automation.auto_start && m.automation.auto_complete);
    assert_eq!(m.automation.reminders, [172_800, 1_800]);
    let edit = app
        .get_as("/admin/maintenances/1/edit", &me.cookie)
        .await
        .text();
    assert!(
        edit.contains("value=\"2d, 30m\""),
        "the edit form shows them: {edit}"
    );
    // 10:00 in Warsaw in January is 09:00 UTC.
    assert_eq!(m.starts_at.unwrap().to_string(), "2030-01-05T09:00:00Z");
}

#[tokio::test]
async fn running_a_window_by_forms() {
    let app = TestApp::new().await;
    app.user("mo", Role::Maintainer).await;
    let me = app.sign_in("mo").await;
    let w = app
        .window(
            "<script>alert(1)</script>",
            herald::domain::Schedule::Tentative { hint: None },
            2,
            vec![],
        )
        .await;
    let run = format!("/admin/maintenances/{}", w.id);
    let page = app.get_as(&run, &me.cookie).await.text();
    assert!(!page.contains("<script>alert"), "titles are text");
    assert!(page.contains("value=\"announce\""));

    let act = |action: &'static str| {
        let me = &me;
        let app = &app;
        let run = run.clone();
        async move {
            app.post_form(
                &format!("{run}/action"),
                Some(&me.cookie),
                &[("csrf", &me.csrf), ("action", action)],
                &[],
            )
            .await
        }
    };
    // Starting a draft is refused with the reason, on the run view.
    let r = act("start").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.text().contains("announce it first"));
    assert_eq!(act("announce").await.status, StatusCode::SEE_OTHER);
    assert_eq!(act("start").await.status, StatusCode::SEE_OTHER);
    let step = |position: i64, action: &'static str, note: &'static str| {
        let me = &me;
        let app = &app;
        let run = run.clone();
        async move {
            app.post_form(
                &format!("{run}/steps/{position}"),
                Some(&me.cookie),
                &[("csrf", &me.csrf), ("action", action), ("note", note)],
                &[],
            )
            .await
        }
    };
    assert_eq!(step(1, "start", "").await.status, StatusCode::SEE_OTHER);
    assert_eq!(
        step(1, "done", "LB on app-1").await.status,
        StatusCode::SEE_OTHER
    );
    let r = step(1, "done", "typed note").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(
        r.text().contains("value=\"typed note\""),
        "the note typed is kept"
    );
    let r = app
        .post_form(
            &format!("{run}/updates"),
            Some(&me.cookie),
            &[("csrf", &me.csrf), ("body", "<b>halfway</b>")],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let page = app.get_as(&run, &me.cookie).await.text();
    assert!(page.contains("&#60;b&#62;halfway&#60;/b&#62;"));
    assert!(page.contains("LB on app-1"));
    let public = app.get(&format!("/maintenance/{}", w.id)).await.text();
    assert!(public.contains("1 of 2 done"));
}

#[tokio::test]
async fn a_token_made_in_the_ui_works_on_the_api_until_revoked() {
    let app = TestApp::new().await;
    app.user("alice", Role::Admin).await;
    let me = app.sign_in("alice").await;
    let r = app
        .post_form(
            "/admin/tokens",
            Some(&me.cookie),
            &[
                ("csrf", &me.csrf),
                ("name", "deploy-bot"),
                ("role", "maintainer"),
            ],
            &[],
        )
        .await;
    // A redirect, so a reload makes no second token; the page it leads to shows the secret.
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = app.follow(r, &me.cookie).await;
    assert_eq!(r.status, StatusCode::OK);
    let html = r.text();
    let token = html
        .split("<code class=\"secret\" id=\"new-token\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .unwrap()
        .to_owned();
    assert!(token.starts_with("hrld_"));
    let (status, _, _) = app
        .api(
            axum::http::Method::GET,
            "/api/v1/components",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // The list never shows the secret again (nor does a reload of the page that showed it).
    let list = app.get_as("/admin/tokens", &me.cookie).await.text();
    assert!(!list.contains(&token));
    let id = app.service.tokens().await.unwrap()[0].id;
    let r = app
        .post_form(
            &format!("/admin/tokens/{id}/revoke"),
            Some(&me.cookie),
            &[("csrf", &me.csrf)],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let (status, _, _) = app
        .api(
            axum::http::Method::GET,
            "/api/v1/components",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let audit = app.get_as("/admin/audit", &me.cookie).await.text();
    assert!(audit.contains("token.create") && audit.contains("token.revoke"));
}

#[tokio::test]
async fn first_admin_from_the_setup_code_once() {
    use tower::ServiceExt;
    let dir = tempfile::tempdir().unwrap();
    let url = crate::common::database_url(dir.path(), "h.db");
    let state = herald::server::build(&herald::config::Settings::for_database(&url), false)
        .await
        .unwrap();
    let code = state.setup_code.clone().expect("no user yet: a setup code");
    let router = herald::web::router(state.clone());
    let send = |request: axum::http::Request<axum::body::Body>| {
        let router = router.clone();
        async move { router.oneshot(request).await.unwrap() }
    };
    let get = |path: &str| {
        axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let post = |pairs: &[(&str, &str)]| {
        axum::http::Request::post("/admin/setup")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(axum::body::Body::from(crate::common::form_body(pairs)))
            .unwrap()
    };
    let r = send(get("/admin/login")).await;
    assert_eq!(r.headers()["location"], "/admin/setup");
    let r = send(post(&[
        ("code", "wrong"),
        ("name", "alice"),
        ("password", "correct horse battery"),
        ("again", "correct horse battery"),
    ]))
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Passwords that differ: the right code stays in the form (a wrong one never does).
    let r = send(post(&[
        ("code", code.expose()),
        ("name", "alice"),
        ("password", "correct horse battery"),
        ("again", "correct horse battery staple"),
    ]))
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = String::from_utf8(
        axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(html.contains("The two passwords differ."), "{html}");
    assert!(
        html.contains(&format!("value=\"{}\"", code.expose())),
        "{html}"
    );
    let r = send(post(&[
        ("code", code.expose()),
        ("name", "alice"),
        ("password", "short"),
        ("again", "short"),
    ]))
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = send(post(&[
        ("code", code.expose()),
        ("name", "alice"),
        ("password", "correct horse battery"),
        ("again", "correct horse battery"),
    ]))
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("herald_session=")
    );
    // Used up: a second admin cannot be made with it.
    let r = send(post(&[
        ("code", code.expose()),
        ("name", "mallory"),
        ("password", "correct horse battery"),
        ("again", "correct horse battery"),
    ]))
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/admin/login");
    assert_eq!(state.service.store().count_users().await.unwrap(), 1);
    let r = send(get("/admin/setup")).await;
    assert_eq!(r.headers()["location"], "/admin/login");
}

#[tokio::test]
async fn admins_manage_components_and_users() {
    let app = TestApp::new().await;
    app.user("alice", Role::Admin).await;
    let me = app.sign_in("alice").await;
    let add = |slug: &'static str, name: &'static str| {
        let (app, me) = (&app, &me);
        async move {
            app.post_form(
                "/admin/components",
                Some(&me.cookie),
                &[
                    ("csrf", &me.csrf),
                    ("slug", slug),
                    ("name", name),
                    ("group", "Backend"),
                ],
                &[],
            )
            .await
        }
    };
    assert_eq!(add("api", "API").await.status, StatusCode::SEE_OTHER);
    assert_eq!(add("db", "Database").await.status, StatusCode::SEE_OTHER);
    let r = add("api", "Again").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let html = r.text();
    assert!(html.contains("already exists") && html.contains("value=\"Again\""));
    let r = app
        .post_form(
            "/admin/components/db",
            Some(&me.cookie),
            &[
                ("csrf", &me.csrf),
                ("op", "save"),
                ("name", "Primary database"),
                ("group", "Data"),
                ("description", ""),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = app
        .post_form(
            "/admin/components/db",
            Some(&me.cookie),
            &[("csrf", &me.csrf), ("op", "up")],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let names: Vec<String> = app
        .service
        .components()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["Primary database", "API"]);
    assert!(
        app.get("/").await.text().contains("Primary database"),
        "public page follows"
    );

    let r = app
        .post_form(
            "/admin/users",
            Some(&me.cookie),
            &[
                ("csrf", &me.csrf),
                ("name", "mo"),
                ("password", "correct horse battery"),
                ("role", "maintainer"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let mo = app.sign_in("mo").await;
    for path in ["/admin/components", "/admin/users"] {
        assert_eq!(
            app.get_as(path, &mo.cookie).await.status,
            StatusCode::FORBIDDEN
        );
    }
    let audit = app.get_as("/admin/audit", &me.cookie).await.text();
    for action in [
        "component.create",
        "component.edit",
        "component.move",
        "user.add",
    ] {
        assert!(audit.contains(action), "{action}");
    }
}

#[tokio::test]
async fn editing_the_text_and_the_plan() {
    let app = TestApp::new().await;
    app.component("api", "API").await;
    app.user("mo", Role::Maintainer).await;
    let me = app.sign_in("mo").await;
    let w = app
        .window(
            "Old title",
            herald::domain::Schedule::Tentative { hint: None },
            3,
            vec![],
        )
        .await;
    let edit = format!("/admin/maintenances/{}/edit", w.id);
    let page = app.get_as(&edit, &me.cookie).await;
    assert_eq!(page.status, StatusCode::OK);
    // Preview renders the markdown (sanitised) and keeps the typed text.
    let r = app
        .post_form(
            &edit,
            Some(&me.cookie),
            &[
                ("csrf", &me.csrf),
                ("op", "preview"),
                ("title", "New title"),
                ("description", "**bold** <script>x</script>"),
                ("impact", "major"),
            ],
            &[],
        )
        .await;
    let html = r.text();
    assert!(html.contains("<strong>bold</strong>") && !html.contains("<script>x"));
    assert!(html.contains("value=\"New title\""));
    assert_eq!(
        app.service.maintenance(w.id).await.unwrap().title,
        "Old title",
        "preview saves nothing"
    );
    let r = app
        .post_form(
            &edit,
            Some(&me.cookie),
            &[
                ("csrf", &me.csrf),
                ("op", "save"),
                ("title", "New title"),
                ("description", "More."),
                ("impact", "major"),
                ("component_api", "on"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let m = app.service.maintenance(w.id).await.unwrap();
    assert_eq!(
        (m.title.as_str(), m.impact.as_str(), m.components.len()),
        ("New title", "major", 1)
    );

    let plan = format!("/admin/maintenances/{}/plan", w.id);
    let post = |pairs: Vec<(&'static str, String)>| {
        let (app, me, plan) = (&app, &me, plan.clone());
        async move {
            let mut all: Vec<(&str, &str)> = vec![("csrf", me.csrf.as_str())];
            all.extend(pairs.iter().map(|(k, v)| (*k, v.as_str())));
            app.post_form(&plan, Some(&me.cookie), &all, &[]).await
        }
    };
    assert_eq!(
        post(vec![("op", "add".into()), ("title", "Step four".into())])
            .await
            .status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        post(vec![("op", "up".into()), ("position", "4".into())])
            .await
            .status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        post(vec![("op", "remove".into()), ("position", "1".into())])
            .await
            .status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        post(vec![
            ("op", "edit".into()),
            ("position", "1".into()),
            ("title", "Renamed".into())
        ])
        .await
        .status,
        StatusCode::SEE_OTHER
    );
    let titles: Vec<String> = app
        .service
        .maintenance(w.id)
        .await
        .unwrap()
        .steps
        .into_iter()
        .map(|s| s.title)
        .collect();
    assert_eq!(titles, ["Renamed", "Step four", "Step number 3"]);
    let r = post(vec![("op", "add".into()), ("title", "   ".into())]).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn running_a_rollout_by_forms() {
    let app = TestApp::new().await;
    app.user("mo", Role::Maintainer).await;
    let me = app.sign_in("mo").await;
    let r = app.get_as("/admin/rollouts/new", &me.cookie).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains("one instance name per line"));
    // Errors by the field, input kept.
    let r = app
        .post_form(
            "/admin/rollouts",
            Some(&me.cookie),
            &[
                ("csrf", &me.csrf),
                ("title", "Fishjam v1.4.0"),
                ("to_version", "v 1.4"),
                ("targets", "fishjam-1\nfishjam-1"),
                ("progress_deadline", "ten"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let page = r.text();
    assert!(page.contains("give a number of minutes"), "{page}");
    assert!(page.contains("value=\"Fishjam v1.4.0\""));
    assert!(page.contains("fishjam-1\nfishjam-1"));
    let r = app
        .post_form(
            "/admin/rollouts",
            Some(&me.cookie),
            &[
                ("csrf", &me.csrf),
                ("title", "Fishjam v1.4.0"),
                ("from_version", "v1.3.2"),
                ("to_version", "v1.4.0"),
                ("targets", "fishjam-1\n fishjam-2 \n\nfishjam-3"),
                ("progress_deadline", "10"),
                ("stale_after", "2"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    let at = r.header("location").unwrap().to_owned();
    assert_eq!(at, "/admin/rollouts/1?done=rollout_created");
    let page = app.get_as(&at, &me.cookie).await.text();
    assert!(
        page.contains("data-live"),
        "the page refreshes itself while watched"
    );
    assert!(page.contains("Set fishjam-2 by hand"));
    let post = |path: String, pairs: Vec<(&'static str, String)>| {
        let app = &app;
        let me = &me;
        async move {
            let mut all: Vec<(&str, &str)> = vec![("csrf", me.csrf.as_str())];
            all.extend(pairs.iter().map(|(k, v)| (*k, v.as_str())));
            app.post_form(&path, Some(&me.cookie), &all, &[]).await
        }
    };
    // Out of order by hand: refused with the reason on the page.
    let r = post(
        "/admin/rollouts/1/targets/1".into(),
        vec![("action", "healthy".into())],
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.text().contains("has not drained yet"));
    // Forced, with the reason.
    let r = post(
        "/admin/rollouts/1/targets/1".into(),
        vec![
            ("action", "updating".into()),
            ("forced", "on".into()),
            ("note", "node wedged".into()),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    let r = post(
        "/admin/rollouts/1/targets/2".into(),
        vec![("action", "failed".into()), ("note", "crashed".into())],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = post(
        "/admin/rollouts/1/targets/2".into(),
        vec![("action", "retry".into())],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = post(
        "/admin/rollouts/1/action".into(),
        vec![("action", "pause".into())],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = post(
        "/admin/rollouts/1/edit".into(),
        vec![
            ("title", "Fishjam 1.4".into()),
            ("progress_deadline", "-3".into()),
            ("stale_after", "2".into()),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().contains("value=\"Fishjam 1.4\""), "input kept");
    let r = post(
        "/admin/rollouts/1/updates".into(),
        vec![("body", "Waiting for the EU evening.".into())],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = post(
        "/admin/rollouts/1/action".into(),
        vec![("action", "abort".into()), ("note", "wrong build".into())],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);

    let rollout = app.service.rollout(1).await.unwrap();
    assert_eq!(rollout.state, herald::domain::RolloutState::Aborted);
    let t = &rollout.targets[0];
    assert!(t.forced);
    assert_eq!(t.forced_reason.as_deref(), Some("node wedged"));
    assert_eq!(rollout.targets[1].attempts, 2);
    // Every action on the timeline with who did it, and in the audit log.
    let updates = app.service.rollout_updates(1, None).await.unwrap();
    assert!(updates.iter().all(|u| u.actor == "user:mo"), "{updates:#?}");
    let page = app.get_as(&at, &me.cookie).await.text();
    assert!(page.contains("user:mo"));
    assert!(page.contains("Waiting for the EU evening."));
    let audit = app
        .service
        .store()
        .list_audit(50, None, None)
        .await
        .unwrap();
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    for action in [
        "rollout.create",
        "rollout.target",
        "rollout.retry",
        "rollout.pause",
        "rollout.abort",
    ] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
    assert!(
        audit
            .iter()
            .filter(|a| a.action.starts_with("rollout."))
            .all(|a| a.actor == "user:mo")
    );
    // The dashboard lists rollouts under way (none now).
    let dash = app.get_as("/admin", &me.cookie).await.text();
    assert!(dash.contains("Rollouts under way"));
}

/// A burst of 200 concurrent wrong sign-ins for one account checks at most the limit's worth
/// of passwords: each attempt is counted before its password is checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_sign_ins_checks_at_most_the_limit() {
    let app = TestApp::new().await;
    app.user("alice", Role::Admin).await;
    let before = app.service.password_checks();
    let body = crate::common::form_body(&[("name", "alice"), ("password", "wrong wrong wrong")]);
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let router = app.router.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            use tower::ServiceExt;
            let request = axum::http::Request::builder()
                .method("POST")
                .uri("/admin/login")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(axum::body::Body::from(body))
                .unwrap();
            router.oneshot(request).await.unwrap().status()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let checked = app.service.password_checks() - before;
    assert!(checked <= 5, "{checked} passwords checked");
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(refused >= 195, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::TOO_MANY_REQUESTS || *s == StatusCode::UNAUTHORIZED)
    );
}

/// Behind a trusted reverse proxy each client has its own limit: one guesser cannot lock out
/// everyone who comes through the same proxy. From an untrusted peer the header is ignored.
#[tokio::test]
async fn sign_in_limits_follow_the_client_behind_a_trusted_proxy() {
    use tower::ServiceExt;
    let app = TestApp::new().await;
    app.user("alice", Role::Admin).await;
    let mut settings = app.state.settings.clone();
    settings.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
    let router = herald::web::router(herald::web::AppState::new(app.service.clone(), settings));
    let login = |peer: &'static str, client: &'static str, password: &'static str| {
        let router = router.clone();
        async move {
            let mut request = axum::http::Request::builder()
                .method("POST")
                .uri("/admin/login")
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-forwarded-for", client)
                .body(axum::body::Body::from(crate::common::form_body(&[
                    ("name", "alice"),
                    ("password", password),
                ])))
                .unwrap();
            request.extensions_mut().insert(axum::extract::ConnectInfo(
                peer.parse::<std::net::SocketAddr>().unwrap(),
            ));
            router.oneshot(request).await.unwrap().status()
        }
    };
    for _ in 0..5 {
        assert_eq!(
            login("10.0.0.1:5000", "203.0.113.5", "wrong wrong wrong").await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        login("10.0.0.1:5000", "203.0.113.5", "correct horse battery").await,
        StatusCode::TOO_MANY_REQUESTS,
        "the guesser is stopped"
    );
    assert_eq!(
        login("10.0.0.1:5000", "198.51.100.8", "correct horse battery").await,
        StatusCode::SEE_OTHER,
        "the owner, through the same proxy, signs in"
    );
    // An untrusted peer's header names nobody: its own address counts.
    for client in [
        "192.0.2.1",
        "192.0.2.2",
        "192.0.2.3",
        "192.0.2.4",
        "192.0.2.5",
    ] {
        assert_eq!(
            login("192.0.2.200:1", client, "wrong wrong wrong").await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        login("192.0.2.200:1", "192.0.2.6", "wrong wrong wrong").await,
        StatusCode::TOO_MANY_REQUESTS,
        "made-up X-Forwarded-For values do not reset the limit"
    );
}

/// Users are removed, re-roled and given new passwords from the Users page, each ending
/// their sessions; the last admin stays; anyone changes their own password.
#[tokio::test]
async fn accounts_are_managed_from_the_users_page() {
    let app = TestApp::new().await;
    app.user("alice", Role::Admin).await;
    app.user("mo", Role::Maintainer).await;
    let alice = app.sign_in("alice").await;
    let mo = app.sign_in("mo").await;
    let act =
        |who: &crate::common::Browser, user: &str, pairs: Vec<(&'static str, &'static str)>| {
            let mut all = vec![("csrf", who.csrf.clone())];
            all.extend(pairs.into_iter().map(|(k, v)| (k, v.to_owned())));
            let path = format!("/admin/users/{user}");
            let cookie = who.cookie.clone();
            let app = &app;
            async move {
                let pairs: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
                app.post_form(&path, Some(&cookie), &pairs, &[]).await
            }
        };
    // The last admin can be neither demoted nor removed.
    let r = act(
        &alice,
        "alice",
        vec![("action", "role"), ("role", "maintainer")],
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.text().contains("last admin"));
    // A maintainer may not manage users.
    let r = act(&mo, "alice", vec![("action", "remove")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // A new password for mo ends mo's session.
    let r = act(
        &alice,
        "mo",
        vec![("action", "password"), ("password", "a brand new password")],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    let r = app.follow(r, &alice.cookie).await;
    assert!(r.text().contains("their sessions ended"));
    assert_eq!(
        app.get_as("/admin", &mo.cookie).await.status,
        StatusCode::SEE_OTHER
    );
    assert!(
        app.service
            .verify_user("mo", "a brand new password")
            .await
            .unwrap()
            .is_some()
    );
    let r = act(
        &alice,
        "mo",
        vec![("action", "password"), ("password", "short")],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    // Promote mo, then alice may step down; removing works too.
    let r = act(&alice, "mo", vec![("action", "role"), ("role", "admin")]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = act(
        &alice,
        "alice",
        vec![("action", "role"), ("role", "maintainer")],
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::SEE_OTHER,
        "own role changed: signed out"
    );
    assert_eq!(
        app.get_as("/admin", &alice.cookie).await.status,
        StatusCode::SEE_OTHER
    );

    // Anyone changes their own password: the current one first, the new one twice.
    let alice = app.sign_in("alice").await;
    let change = |current: &str, new: &str, again: &str| {
        let pairs = [
            ("csrf", alice.csrf.as_str()),
            ("current", current),
            ("password", new),
            ("again", again),
        ];
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let app = &app;
        let cookie = alice.cookie.clone();
        async move {
            let pairs: Vec<(&str, &str)> = pairs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            app.post_form("/admin/password", Some(&cookie), &pairs, &[])
                .await
        }
    };
    let r = change(
        "wrong wrong wrong",
        "another good password",
        "another good password",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = change(
        "correct horse battery",
        "another good password",
        "different one here",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = change(
        "correct horse battery",
        "another good password",
        "another good password",
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(
        app.service
            .verify_user("alice", "another good password")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        app.get_as("/admin", &alice.cookie).await.status,
        StatusCode::SEE_OTHER
    );

    let audit = app
        .service
        .store()
        .list_audit(20, None, None)
        .await
        .unwrap();
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    for a in ["user.passwd", "user.role"] {
        assert!(actions.contains(&a), "{actions:?}");
    }
}

/// Behind https the session cookie is `__Host-` prefixed and Secure, and it signs in.
#[tokio::test]
async fn behind_https_the_session_cookie_is_host_prefixed() {
    use tower::ServiceExt;
    let app = TestApp::new().await;
    app.user("alice", Role::Admin).await;
    let mut settings = app.state.settings.clone();
    settings.public_url = "https://status.example.com".into();
    let router = herald::web::router(herald::web::AppState::new(app.service.clone(), settings));
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/admin/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", "https://status.example.com")
        .body(axum::body::Body::from(crate::common::form_body(&[
            ("name", "alice"),
            ("password", "correct horse battery"),
        ])))
        .unwrap();
    let r = router.clone().oneshot(request).await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set.starts_with("__Host-herald_session="), "{set}");
    assert!(set.contains("; Path=/;") && set.contains("Secure"), "{set}");
    // Browsers keep to https.
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");
    let value = set.split(';').next().unwrap().to_owned();
    let get = |cookie: String| {
        axum::http::Request::builder()
            .uri("/admin")
            .header("cookie", cookie)
            .body(axum::body::Body::empty())
            .unwrap()
    };
    assert_eq!(
        router
            .clone()
            .oneshot(get(value.clone()))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // The same session under the plain name, as a sibling subdomain could plant it: not
    // believed behind https.
    let planted = value.replace("__Host-herald_session=", "herald_session=");
    let r = router.clone().oneshot(get(planted)).await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "a planted cookie signed in"
    );
    // Over plain http there is no Strict-Transport-Security.
    let r = app.get("/").await;
    assert!(r.header("strict-transport-security").is_none());
}

/// Every window and step change is in the audit log with who made it (a user in the UI, a
/// token on the API); the audit page filters by actor and by window.
#[tokio::test]
async fn window_changes_are_audited_with_their_actor() {
    use axum::http::Method;
    let app = TestApp::new().await;
    app.user("alice", Role::Admin).await;
    let me = app.sign_in("alice").await;
    let token = app.token(Role::Maintainer).await;
    let (status, w, _) = app
        .api(
            Method::POST,
            "/api/v1/maintenances",
            Some(&token),
            Some(serde_json::json!({"title": "DB move", "steps": [{"title": "Dump"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = w["id"].as_i64().unwrap();
    for action in ["announce", "start"] {
        let (status, _, _) = app
            .api(
                Method::POST,
                &format!("/api/v1/maintenances/{id}/{action}"),
                Some(&token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let r = app
        .post_form(
            &format!("/admin/maintenances/{id}/steps/1"),
            Some(&me.cookie),
            &[("csrf", &me.csrf), ("action", "start")],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let entries = app
        .service
        .audit_filtered(50, None, Some(&format!("window {id}")))
        .await
        .unwrap();
    let seen: Vec<(String, String, String)> = entries
        .iter()
        .rev()
        .map(|e| {
            (
                e.actor.clone(),
                e.action.clone(),
                e.target.clone().unwrap_or_default(),
            )
        })
        .collect();
    let target = format!("window {id}");
    assert_eq!(
        seen,
        [
            (
                "token:test".to_owned(),
                "window.create".to_owned(),
                target.clone()
            ),
            (
                "token:test".to_owned(),
                "window.announce".to_owned(),
                target.clone()
            ),
            (
                "token:test".to_owned(),
                "window.start".to_owned(),
                target.clone()
            ),
            (
                "user:alice".to_owned(),
                "step.start".to_owned(),
                format!("{target} step 1")
            ),
        ]
    );
    let page = app
        .get_as(
            &format!("/admin/audit?actor=user:alice&window={id}"),
            &me.cookie,
        )
        .await
        .text();
    assert!(
        page.contains("step.start") && !page.contains("window.announce"),
        "{page}"
    );
    let other = app
        .get_as("/admin/audit?window=999", &me.cookie)
        .await
        .text();
    assert!(!other.contains("step.start"));
}

/// Dates sent with "No date yet" are refused next to their field, never dropped; dates that
/// are only the window's own schedule left in the form undate it.
#[tokio::test]
async fn dates_under_no_date_yet_are_refused_not_dropped() {
    let app = TestApp::new().await;
    app.user("mo", Role::Maintainer).await;
    let me = app.sign_in("mo").await;
    let r = app
        .post_form(
            "/admin/maintenances",
            Some(&me.cookie),
            &[
                ("csrf", &me.csrf),
                ("title", "Database cluster migration"),
                ("when", "tentative"),
                ("starts_at", "2030-01-05T02:00"),
                ("time_zone", "Europe/Warsaw"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let html = r.text();
    assert!(html.contains("id=\"starts_at-error\""), "{html}");
    assert!(
        html.contains("choose &#34;At a set time&#34; to use it"),
        "{html}"
    );
    assert!(
        html.contains("value=\"2030-01-05T02:00\""),
        "what was typed is kept"
    );
    assert_eq!(app.service.store().count_maintenances().await.unwrap(), 0);

    // A dated window: its own dates left in the form with "No date yet" undate it.
    let r = app
        .post_form(
            "/admin/maintenances",
            Some(&me.cookie),
            &[
                ("csrf", &me.csrf),
                ("title", "Database cluster migration"),
                ("when", "fixed"),
                ("starts_at", "2030-01-05T02:00"),
                ("ends_at", "2030-01-05T04:00"),
                ("time_zone", "Europe/Warsaw"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        r.header("location"),
        Some("/admin/maintenances/1?done=created")
    );
    let undate = |start: &'static str| {
        let (app, me) = (&app, &me);
        async move {
            app.post_form(
                "/admin/maintenances/1/schedule",
                Some(&me.cookie),
                &[
                    ("csrf", &me.csrf),
                    ("when", "tentative"),
                    ("schedule_hint", "next week"),
                    ("starts_at", start),
                    ("ends_at", "2030-01-05T04:00"),
                    ("time_zone", "Europe/Warsaw"),
                ],
                &[],
            )
            .await
        }
    };
    let r = undate("2030-01-06T02:00").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().contains("id=\"starts_at-error\""));
    assert!(
        app.service
            .maintenance(1)
            .await
            .unwrap()
            .starts_at
            .is_some()
    );
    let r = undate("2030-01-05T02:00").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(app.service.maintenance(1).await.unwrap().starts_at, None);

    // An end already past is refused next to its field, with what was typed kept.
    let r = app
        .post_form(
            "/admin/maintenances/1/schedule",
            Some(&me.cookie),
            &[
                ("csrf", &me.csrf),
                ("when", "fixed"),
                ("starts_at", "2020-01-05T02:00"),
                ("ends_at", "2020-01-05T04:00"),
                ("time_zone", "Europe/Warsaw"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let html = r.text();
    assert!(html.contains("id=\"ends_at-error\""), "{html}");
    assert!(html.contains("is in the past"), "{html}");
    assert!(html.contains("value=\"2020-01-05T04:00\""), "{html}");
}

/// A form sent after its session ended comes back after sign-in with what was typed, to send
/// or leave; the form's own address, asked for with GET, leads to its page.
#[tokio::test]
async fn a_form_sent_after_the_session_ended_is_kept_through_sign_in() {
    let app = TestApp::new().await;
    app.user("mo", Role::Maintainer).await;
    let m = app
        .window(
            "DecAPI migration",
            herald::domain::Schedule::Tentative { hint: None },
            2,
            vec![],
        )
        .await;
    let path = format!("/admin/maintenances/{}/steps/1", m.id);
    let r = app
        .post_form(
            &path,
            Some("0000000000000000000000000000000000000000000000000000000000000000"),
            &[
                ("csrf", "stale"),
                ("action", "start"),
                ("note", "LB drained"),
            ],
            &[(
                "referer",
                &format!("http://localhost/admin/maintenances/{}", m.id),
            )],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let html = r.text();
    assert!(
        html.contains("Your session ended before this was done"),
        "{html}"
    );
    assert!(
        html.contains(&format!("name=\"resume_to\" value=\"{path}\"")),
        "{html}"
    );
    assert!(
        html.contains("LB+drained") || html.contains("LB%20drained"),
        "{html}"
    );
    assert!(!html.contains("stale"), "the old CSRF token is not carried");

    let resume = html
        .split("name=\"resume\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .replace("&#43;", "+")
        .replace("&#38;", "&")
        .replace("&amp;", "&")
        .replace("&#61;", "=");
    let r = app
        .post_form(
            "/admin/login",
            None,
            &[
                ("name", "mo"),
                ("password", "correct horse battery"),
                ("resume_to", &path),
                ("resume_from", &format!("/admin/maintenances/{}", m.id)),
                ("resume", &resume),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.header("set-cookie")
            .is_some_and(|c| c.contains("herald_session="))
    );
    let html = r.text();
    assert!(html.contains("LB drained"), "{html}");
    assert!(html.contains(&format!("action=\"{path}\"")), "{html}");
    assert!(html.contains("Back to the page without sending"));

    // Followed as a link, a form's address leads to the page the form is on.
    let me = app.sign_in("mo").await;
    let r = app.get_as(&path, &me.cookie).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        r.header("location"),
        Some(format!("/admin/maintenances/{}", m.id).as_str())
    );
    let r = app.get_as("/admin/maintenances/1/plan", &me.cookie).await;
    assert_eq!(r.header("location"), Some("/admin/maintenances/1/edit"));
    // No address answers a bare error: a page that takes no form says so in a page.
    let r = app.post_form("/history", None, &[], &[]).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        r.text()
            .contains("This address does not take POST requests.")
    );
}

/// Components: capitals in a slug are taken as lowercase, an empty slug comes from the name,
/// and a component can be removed unless a window names it.
#[tokio::test]
async fn components_are_removed_unless_a_window_names_them() {
    let app = TestApp::new().await;
    app.user("alice", Role::Admin).await;
    let me = app.sign_in("alice").await;
    for (slug, name) in [("API", "Public API"), ("", "Web Dashboard")] {
        let r = app
            .post_form(
                "/admin/components",
                Some(&me.cookie),
                &[("csrf", &me.csrf), ("slug", slug), ("name", name)],
                &[],
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    }
    let slugs: Vec<String> = app
        .service
        .components()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.slug)
        .collect();
    assert_eq!(slugs, ["api", "web-dashboard"]);
    let api = app.service.components().await.unwrap()[0].id;
    app.window(
        "Upgrade",
        herald::domain::Schedule::Tentative { hint: None },
        1,
        vec![api],
    )
    .await;
    let remove = |slug: &'static str| {
        let (app, me) = (&app, &me);
        async move {
            app.post_form(
                &format!("/admin/components/{slug}"),
                Some(&me.cookie),
                &[("csrf", &me.csrf), ("op", "delete")],
                &[],
            )
            .await
        }
    };
    let r = remove("api").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(
        r.text().contains("1 window names this component"),
        "{}",
        r.text()
    );
    let r = remove("web-dashboard").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(app.service.components().await.unwrap().len(), 1);
}

/// A window started days before its planned start shows its end with the date (it is not on
/// the day it started); the confirmations say what starting early and completing with steps
/// left mean.
#[tokio::test]
async fn a_window_started_early_shows_its_end_with_the_date() {
    use herald::domain::{Schedule, WindowAction};
    let app = TestApp::new().await;
    app.user("mo", Role::Maintainer).await;
    let me = app.sign_in("mo").await;
    let start = app.service.now() + jiff::SignedDuration::from_hours(72);
    let end = start + jiff::SignedDuration::from_hours(2);
    let m = app
        .window(
            "Database cluster migration",
            Schedule::Fixed {
                starts_at: start,
                ends_at: Some(end),
            },
            2,
            vec![],
        )
        .await;
    app.act(m.id, WindowAction::Announce).await;
    let run = app
        .get_as(&format!("/admin/maintenances/{}", m.id), &me.cookie)
        .await
        .text();
    assert!(run.contains("starting now starts it early"), "{run}");
    app.act(m.id, WindowAction::Start).await;
    let end_iso = end.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    // The status page's "Expected end", beside "Started": days after, so with its date. (The
    // window page's "Planned … until" stays beside the planned start, on its day.)
    let page = app.get("/").await.text();
    assert!(
        page.contains(&format!(
            "<time datetime=\"{end_iso}\" data-style=\"full\">"
        )),
        "the end is days after the start: its date is shown\n{page}"
    );
    let run = app
        .get_as(&format!("/admin/maintenances/{}", m.id), &me.cookie)
        .await
        .text();
    assert!(
        run.contains("2 steps have not run and will be marked"),
        "{run}"
    );
}

/// A rollout's note or action can stay off the channels too.
#[tokio::test]
async fn a_rollout_note_can_stay_off_the_channels() {
    let app = TestApp::new().await;
    app.add_channel(herald::domain::NewChannel {
        name: "hook".into(),
        kind: Some(herald::domain::ChannelKind::Webhook),
        target: "https://hooks.example.com/herald".into(),
        events: herald::domain::default_events(herald::domain::ChannelKind::Webhook),
        enabled: true,
        ..Default::default()
    })
    .await;
    app.user("mo", Role::Maintainer).await;
    let me = app.sign_in("mo").await;
    let rollout = app
        .service
        .acting(herald::domain::Actor::System)
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
    let count = || async {
        app.service
            .deliveries(herald::domain::Subject::Rollout(rollout.id))
            .await
            .unwrap()
            .len()
    };
    let before = count().await;
    let path = format!("/admin/rollouts/{}/updates", rollout.id);
    let r = app
        .post_form(
            &path,
            Some(&me.cookie),
            &[
                ("csrf", &me.csrf),
                ("body", "Canary looks fine."),
                ("quiet", "on"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(count().await, before, "nothing posted");
    let page = app
        .get_as(&format!("/admin/rollouts/{}", rollout.id), &me.cookie)
        .await
        .text();
    assert!(page.contains("Canary looks fine."));
    app.post_form(
        &path,
        Some(&me.cookie),
        &[("csrf", &me.csrf), ("body", "All healthy.")],
        &[],
    )
    .await;
    assert_eq!(count().await, before + 1);
}

/// A POST of the sign-in form from `peer` with extra `headers`: its status and Set-Cookie
/// headers.
async fn login_from(
    router: &axum::Router,
    peer: &str,
    headers: &[(&str, String)],
    name: &str,
    password: &str,
) -> (StatusCode, Vec<String>) {
    use tower::ServiceExt;
    let mut request = axum::http::Request::builder()
        .method("POST")
        .uri("/admin/login")
        .header("content-type", "application/x-www-form-urlencoded");
    for (k, v) in headers {
        request = request.header(*k, v.as_str());
    }
    let mut request = request
        .body(axum::body::Body::from(crate::common::form_body(&[
            ("name", name),
            ("password", password),
        ])))
        .unwrap();
    request.extensions_mut().insert(axum::extract::ConnectInfo(
        peer.parse::<std::net::SocketAddr>().unwrap(),
    ));
    let r = router.clone().oneshot(request).await.unwrap();
    let cookies = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    (r.status(), cookies)
}

/// Behind a proxy that appends X-Forwarded-For (nginx's, Traefik's default), a client's own
/// `Forwarded` header is not believed: varying it does not dodge the limit. Only the header
/// the operator names counts.
#[tokio::test]
async fn a_clients_own_forwarded_header_does_not_dodge_the_limit() {
    let app = TestApp::new().await;
    app.user("alice", Role::Admin).await;
    let mut settings = app.state.settings.clone();
    settings.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    let router = herald::web::router(herald::web::AppState::new(app.service.clone(), settings));
    let mut statuses = Vec::new();
    for i in 0..8 {
        let headers = [
            ("forwarded", format!("for=192.0.2.{i}")),
            ("x-forwarded-for", "203.0.113.5".to_owned()),
        ];
        let (status, _) = login_from(
            &router,
            "127.0.0.1:5000",
            &headers,
            "alice",
            "wrong wrong wrong",
        )
        .await;
        statuses.push(status);
    }
    assert_eq!(statuses[..5], [StatusCode::UNAUTHORIZED; 5]);
    assert_eq!(
        statuses[5..],
        [StatusCode::TOO_MANY_REQUESTS; 3],
        "{statuses:?}"
    );
}

/// IPv6 clients are counted by their /64: a host that picks a new address in its network for
/// each attempt is still one client.
#[tokio::test]
async fn ipv6_clients_are_counted_per_64() {
    let app = TestApp::new().await;
    app.user("alice", Role::Admin).await;
    let router = app.router.clone();
    for i in 1..=5 {
        let peer = format!("[2001:db8:5:6::{i:x}]:4000");
        let (status, _) = login_from(&router, &peer, &[], "alice", "wrong wrong wrong").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _) = login_from(
        &router,
        "[2001:db8:5:6:ffff::1]:4000",
        &[],
        "alice",
        "wrong wrong wrong",
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // Another network is another client.
    let (status, _) = login_from(
        &router,
        "[2001:db8:5:7::1]:4000",
        &[],
        "alice",
        "correct horse battery",
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
}

/// Failures from many addresses slow the account down, but not for a browser that signed in
/// to it before (its device cookie): guessing from elsewhere cannot keep the owner out. The
/// device has its own limit, and a forged or another account's device cookie is worth nothing.
#[tokio::test]
async fn a_device_that_signed_in_before_is_not_kept_out_by_others_failures() {
    let app = TestApp::new().await;
    app.user("alice", Role::Admin).await;
    app.user("mo", Role::Maintainer).await;
    let router = app.router.clone();
    let device_of = |cookies: &[String]| {
        cookies
            .iter()
            .find_map(|c| c.strip_prefix("herald_device="))
            .map(|c| c.split(';').next().unwrap().to_owned())
            .expect("a device cookie")
    };
    let (status, cookies) = login_from(
        &router,
        "198.51.100.1:1",
        &[],
        "alice",
        "correct horse battery",
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let device = device_of(&cookies);
    let (_, cookies) = login_from(
        &router,
        "198.51.100.2:1",
        &[],
        "mo",
        "correct horse battery",
    )
    .await;
    let mo_device = device_of(&cookies);

    // Twenty-five failures on alice from twenty-five addresses.
    for i in 0..25 {
        login_from(
            &router,
            &format!("192.0.2.{}:1", i + 1),
            &[],
            "alice",
            "wrong wrong wrong",
        )
        .await;
    }
    // The right password from a new address, without the cookie: slowed down.
    let (status, _) = login_from(
        &router,
        "203.0.113.77:1",
        &[],
        "alice",
        "correct horse battery",
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // With another account's device cookie, or a forged one: the same.
    for forged in [
        mo_device.clone(),
        format!("{}.{}", "0".repeat(32), "ab".repeat(32)),
    ] {
        let (status, _) = login_from(
            &router,
            "203.0.113.78:1",
            &[("cookie", format!("herald_device={forged}"))],
            "alice",
            "correct horse battery",
        )
        .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{forged}");
    }
    // Alice's own browser, from yet another address: in.
    let (status, cookies) = login_from(
        &router,
        "203.0.113.79:1",
        &[("cookie", format!("herald_device={device}"))],
        "alice",
        "correct horse battery",
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let device = device_of(&cookies);
    // The device's own limit still holds: five wrong passwords from it, then a wait.
    let with_device = [("cookie", format!("herald_device={device}"))];
    for i in 0..5 {
        let (status, _) = login_from(
            &router,
            &format!("203.0.113.{}:1", 90 + i),
            &with_device,
            "alice",
            "wrong wrong wrong",
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _) = login_from(
        &router,
        "203.0.113.99:1",
        &with_device,
        "alice",
        "correct horse battery",
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}

/// The current password on the password page is checked through the sign-in throttle: a
/// stolen session cannot guess it there faster than at the door.
#[tokio::test]
async fn the_current_password_check_is_throttled() {
    let app = TestApp::new().await;
    app.user("alice", Role::Admin).await;
    let alice = app.sign_in("alice").await;
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let r = app
            .submit(
                "/admin/password",
                &alice.cookie,
                &[
                    ("csrf", &alice.csrf),
                    ("current", "wrong wrong wrong"),
                    ("password", "a new long password"),
                    ("again", "a new long password"),
                ],
            )
            .await;
        statuses.push(r.status);
    }
    assert_eq!(statuses[..5], [StatusCode::UNAUTHORIZED; 5], "{statuses:?}");
    assert_eq!(
        statuses[5..],
        [StatusCode::TOO_MANY_REQUESTS; 2],
        "{statuses:?}"
    );
}

/// A refused token form keeps what was typed and chosen.
#[tokio::test]
async fn a_refused_token_form_keeps_its_choices() {
    let app = TestApp::new().await;
    app.user("alice", Role::Admin).await;
    let me = app.sign_in("alice").await;
    let r = app
        .post_form(
            "/admin/tokens",
            Some(&me.cookie),
            &[
                ("csrf", &me.csrf),
                ("name", "deploy\tbot"),
                ("role", "reporter"),
                ("expires", "90"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    let text = r.text();
    assert!(
        text.contains(r#"<option value="reporter" selected>"#),
        "{text}"
    );
    assert!(text.contains(r#"<option value="90" selected>"#), "{text}");
    assert!(text.contains("deploy\tbot"), "the name as typed");
}
