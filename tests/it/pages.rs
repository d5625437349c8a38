//! The public pages for each window state, caching, compression and headers.

use std::io::Read;

use crate::common::TestApp;
use axum::http::{Method, StatusCode};
use herald::domain::{Schedule, StepAction, WindowAction};

fn tentative(hint: &str) -> Schedule {
    Schedule::Tentative {
        hint: Some(hint.into()),
    }
}

#[tokio::test]
async fn empty_page_says_all_is_well() {
    let app = TestApp::new().await;
    let page = app.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.text();
    assert!(html.contains("All systems operational"));
    assert!(html.contains("Nothing planned."));
    assert!(html.contains("<title>DecAPI status</title>"));
}

#[tokio::test]
async fn drafts_are_never_public() {
    let app = TestApp::new().await;
    let w = app
        .window("Secret plan", tentative("soon"), 2, vec![])
        .await;
    assert!(!app.get("/").await.text().contains("Secret plan"));
    assert_eq!(
        app.get(&format!("/maintenance/{}", w.id)).await.status,
        StatusCode::NOT_FOUND
    );
    // Cancelling a draft keeps it out of history too.
    app.act(w.id, WindowAction::Cancel).await;
    assert!(!app.get("/history").await.text().contains("Secret plan"));
}

#[tokio::test]
async fn tentative_window_shows_its_hint() {
    let app = TestApp::new().await;
    let api = app.component("api", "API").await;
    let w = app
        .window(
            "Database cluster migration",
            tentative("this Sunday or within two weeks"),
            6,
            vec![api],
        )
        .await;
    app.act(w.id, WindowAction::Announce).await;
    let html = app.get("/").await.text();
    assert!(html.contains("Upcoming maintenance"));
    assert!(html.contains("Database cluster migration"));
    assert!(html.contains("No date yet</strong>: this Sunday or within two weeks"));
    assert!(html.contains("The plan: 6 steps"));
    assert!(html.contains("1 maintenance is planned."));
    // Planned work does not change a component's status yet.
    assert!(html.contains("status-operational"));
    let detail = app.get(&format!("/maintenance/{}", w.id)).await.text();
    assert!(detail.contains("No date: this Sunday or within two weeks"));
    assert!(
        detail.contains("<strong>database</strong>"),
        "markdown renders"
    );
    assert!(detail.contains("Maintenance announced. No date yet"));
}

#[tokio::test]
async fn scheduled_window_shows_its_times() {
    let app = TestApp::new().await;
    let w = app
        .window(
            "Scheduled work",
            Schedule::Fixed {
                starts_at: app.time(60 * 24),
                ends_at: Some(app.time(60 * 26)),
            },
            2,
            vec![],
        )
        .await;
    app.act(w.id, WindowAction::Announce).await;
    let html = app.get("/").await.text();
    let start = app.time(60 * 24).strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    assert!(
        html.contains(&format!("<time datetime=\"{start}\"")),
        "{html}"
    );
    assert!(html.contains("(in 1 d)"), "relative start");
    assert!(html.contains("Scheduled"));
}

#[tokio::test]
async fn window_in_progress_shows_checklist_and_progress() {
    let app = TestApp::new().await;
    let api = app.component("api", "API").await;
    app.component("website", "Website").await;
    let w = app
        .window(
            "Database cluster migration",
            Schedule::Fixed {
                starts_at: app.time(0),
                ends_at: Some(app.time(120)),
            },
            6,
            vec![api],
        )
        .await;
    app.act(w.id, WindowAction::Announce).await;
    app.act(w.id, WindowAction::Start).await;
    for p in 1..=3 {
        app.step(w.id, p, StepAction::Start).await;
        app.step(w.id, p, StepAction::Done).await;
    }
    app.step(w.id, 4, StepAction::Start).await;
    app.at(42);
    let html = app.get("/").await.text();
    assert!(html.contains("Maintenance in progress"));
    assert!(html.contains("step 4 of 6"));
    assert!(html.contains("<strong>3 of 6 done</strong>"));
    assert!(html.contains(
        "<progress id=\"progress-1\" max=\"6\" value=\"3\" aria-valuetext=\"3 of 6 done\">"
    ));
    assert!(html.contains("class=\"step step-in_progress current\" aria-current=\"step\""));
    assert_eq!(html.matches("class=\"step step-done").count(), 3);
    assert!(html.contains("running for <span data-elapsed"));
    assert!(html.contains(">42 min</span>"));
    assert!(html.contains("status-under_maintenance"));
    assert!(html.contains("Latest updates"));
    assert!(html.contains("Step 4 of 6 started: Step number 4"));
}

#[tokio::test]
async fn overrunning_window_says_so() {
    let app = TestApp::new().await;
    let w = app
        .window(
            "Long one",
            Schedule::Fixed {
                starts_at: app.time(0),
                ends_at: Some(app.time(60)),
            },
            1,
            vec![],
        )
        .await;
    app.act(w.id, WindowAction::Announce).await;
    app.act(w.id, WindowAction::Start).await;
    app.at(95);
    // The page was not rendered before; no stale cache to fight.
    let html = app.get("/").await.text();
    assert!(html.contains("In progress, overrunning"), "{html}");
    assert!(html.contains("overrunning by 35 min"));
    let detail = app.get(&format!("/maintenance/{}", w.id)).await.text();
    assert!(detail.contains("overrunning by 35 min"));
}

#[tokio::test]
async fn failed_step_turns_the_banner_amber() {
    let app = TestApp::new().await;
    let api = app.component("api", "API").await;
    let w = app.window("Risky", tentative("today"), 2, vec![api]).await;
    app.act(w.id, WindowAction::Announce).await;
    app.act(w.id, WindowAction::Start).await;
    app.step(w.id, 1, StepAction::Start).await;
    app.step(w.id, 1, StepAction::Fail).await;
    let html = app.get("/").await.text();
    assert!(html.contains("a step has failed"));
    assert!(html.contains("status-degraded_performance"));
    assert!(html.contains("class=\"step step-failed current\""));
}

#[tokio::test]
async fn completed_window_moves_to_history() {
    let app = TestApp::new().await;
    let w = app.window("Upgrade", tentative("soon"), 2, vec![]).await;
    app.act(w.id, WindowAction::Announce).await;
    app.act(w.id, WindowAction::Start).await;
    app.step(w.id, 1, StepAction::Start).await;
    app.at(10);
    app.step(w.id, 1, StepAction::Done).await;
    app.at(25);
    app.service
        .window_action(w.id, WindowAction::Complete, Some("All good."))
        .await
        .unwrap();
    let html = app.get("/").await.text();
    assert!(html.contains("All systems operational"));
    assert!(html.contains("Recently finished"));
    assert!(html.contains("took 25 min · 1 of 2 steps done"));
    let detail = app.get(&format!("/maintenance/{}", w.id)).await.text();
    assert!(detail.contains("Completed"));
    assert!(detail.contains("<dt>Finished</dt>"));
    assert!(detail.contains("(took 25 min)"));
    assert!(detail.contains("Not run: the window was completed without it."));
    assert!(detail.contains("All good."));
    assert!(app.get("/history").await.text().contains("Upgrade"));
}

#[tokio::test]
async fn cancelled_window_shows_as_cancelled() {
    let app = TestApp::new().await;
    let w = app.window("Called off", tentative("soon"), 1, vec![]).await;
    app.act(w.id, WindowAction::Announce).await;
    app.service
        .window_action(w.id, WindowAction::Cancel, Some("Postponed to December."))
        .await
        .unwrap();
    let html = app.get("/").await.text();
    assert!(!html.contains("Upcoming maintenance</h2>\n  \n  <article"));
    assert!(html.contains("state-cancelled"));
    let detail = app.get(&format!("/maintenance/{}", w.id)).await.text();
    assert!(detail.contains("<dt>Cancelled</dt>"));
    assert!(detail.contains("Postponed to December."));
}

#[tokio::test]
async fn markup_in_user_text_is_shown_as_text() {
    let app = TestApp::new().await;
    let w = app
        .window(
            "<script>alert(1)</script> & co",
            tentative("<b>soon</b>"),
            1,
            vec![],
        )
        .await;
    app.act(w.id, WindowAction::Announce).await;
    app.service
        .post_update(w.id, "<img src=x onerror=alert(1)>")
        .await
        .unwrap();
    for path in [
        "/".to_owned(),
        format!("/maintenance/{}", w.id),
        "/history".into(),
    ] {
        let html = app.get(&path).await.text();
        assert!(!html.contains("<script>alert"), "{path}");
        assert!(!html.contains("<img src=x"), "{path}");
        assert!(!html.contains("<b>soon"), "{path}");
    }
    let detail = app.get(&format!("/maintenance/{}", w.id)).await.text();
    assert!(
        detail.contains("&#60;script&#62;alert(1)&#60;/script&#62; &#38; co"),
        "{detail}"
    );
}

#[tokio::test]
async fn etag_gives_304_and_changes_with_the_data() {
    let app = TestApp::new().await;
    let first = app.get("/").await;
    let etag = first.header("etag").unwrap().to_owned();
    assert_eq!(
        first.header("cache-control"),
        Some("public, max-age=0, must-revalidate")
    );
    let again = app
        .request(Method::GET, "/", &[("if-none-match", &etag)])
        .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));

    // A change invalidates the cached page at once.
    let w = app.window("New", tentative("soon"), 1, vec![]).await;
    app.act(w.id, WindowAction::Announce).await;
    let changed = app
        .request(Method::GET, "/", &[("if-none-match", &etag)])
        .await;
    assert_eq!(changed.status, StatusCode::OK);
    assert_ne!(changed.header("etag"), Some(etag.as_str()));
    assert!(changed.text().contains("New"));
}

#[tokio::test]
async fn pages_are_compressed_for_clients_that_accept_it() {
    let app = TestApp::new().await;
    let plain = app.get("/").await;
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("vary"), Some("accept-encoding"));

    let br = app
        .request(
            Method::GET,
            "/",
            &[("accept-encoding", "gzip, deflate, br")],
        )
        .await;
    assert_eq!(br.header("content-encoding"), Some("br"));
    let mut out = Vec::new();
    brotli::Decompressor::new(&br.body[..], 4096)
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, plain.body);
    assert!(br.body.len() * 2 < plain.body.len());

    let gz = app
        .request(Method::GET, "/", &[("accept-encoding", "gzip")])
        .await;
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&gz.body[..])
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, plain.body);
}

#[tokio::test]
async fn head_answers_headers_without_a_body() {
    let app = TestApp::new().await;
    let get = app.get("/").await;
    let head = app.request(Method::HEAD, "/", &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(head.header("etag"), get.header("etag"));
    assert_eq!(
        head.header("content-type"),
        Some("text/html; charset=utf-8")
    );
}

#[tokio::test]
async fn every_response_has_security_headers() {
    let app = TestApp::new().await;
    let css = app.state.site.css;
    for path in [
        "/",
        "/history",
        "/nope",
        "/maintenance/abc",
        "/healthz",
        css,
    ] {
        let r = app.get(path).await;
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}");
        assert!(csp.contains("script-src 'self'"), "{path}");
        assert!(!csp.contains("unsafe-inline"), "{path}");
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert!(r.header("referrer-policy").is_some(), "{path}");
        assert!(r.header("x-request-id").is_some(), "{path}");
    }
}

#[tokio::test]
async fn pages_load_nothing_from_other_hosts_and_no_inline_script() {
    let app = TestApp::new().await;
    let html = app.get("/").await.text();
    // What the browser loads by itself: every src, and the href of <link> elements. Links a
    // person follows (<a href>) may go elsewhere: the calendar's webcal:// link does.
    let mut loaded: Vec<&str> = html
        .match_indices("src=\"")
        .map(|(i, _)| &html[i + 5..])
        .collect();
    for (i, _) in html.match_indices("<link ") {
        let tag = &html[i..i + html[i..].find('>').unwrap()];
        if let Some(at) = tag.find("href=\"") {
            loaded.push(&tag[at + 6..]);
        }
    }
    assert!(
        loaded.len() >= 4,
        "stylesheet, icon, feeds, script: {loaded:?}"
    );
    for url in loaded {
        assert!(
            url.starts_with('/') || url.starts_with('#'),
            "external reference: {}",
            &url[..40.min(url.len())]
        );
    }
    for (i, _) in html.match_indices("<a href=\"") {
        let url = &html[i + 9..];
        assert!(
            url.starts_with('/')
                || url.starts_with('#')
                || url.starts_with("webcal://127.0.0.1:8080/"),
            "a link elsewhere: {}",
            &url[..40.min(url.len())]
        );
    }
    assert!(!html.contains("<script>"), "no inline scripts");
    assert!(!html.contains(" style=\""), "no inline styles");
}

#[tokio::test]
async fn assets_are_hashed_and_cached_for_a_year() {
    let app = TestApp::new().await;
    let css = app.state.site.css;
    assert!(css.starts_with("/static/style.") && css.ends_with(".css"));
    let r = app.get(css).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(
        r.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(
        app.get("/static/style.css").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn history_is_paginated() {
    let app = TestApp::new().await;
    for i in 0..45 {
        let w = app
            .window(&format!("Window {i:02}"), tentative("x"), 0, vec![])
            .await;
        app.at(i);
        app.act(w.id, WindowAction::Announce).await;
        app.act(w.id, WindowAction::Cancel).await;
    }
    let first = app.get("/history").await.text();
    assert!(first.contains("45 finished windows"));
    assert!(first.contains("Window 44"), "newest first");
    assert!(!first.contains("Window 24"));
    assert!(first.contains("Page 1 of 3"));
    assert!(first.contains("href=\"/history?page=2\" rel=\"next\""));
    let last = app.get("/history?page=3").await.text();
    assert_eq!(last.matches("<li>").count(), 5);
    assert!(last.contains("Window 00"));
    assert!(last.contains("href=\"/history?page=2\" rel=\"prev\""));
    assert_eq!(
        app.get("/history?page=4").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/history?page=0").await.status,
        StatusCode::BAD_REQUEST
    );
    let bad = app.get("/history?page=abc").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.text().contains("400 Bad Request"));
}

#[tokio::test]
async fn unknown_pages_get_a_friendly_404() {
    let app = TestApp::new().await;
    for path in ["/nope", "/maintenance/999", "/maintenance/abc"] {
        let r = app.get(path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert!(r.text().contains("Go to the status page"), "{path}");
        // In the site's frame, with its name, like every other page.
        assert!(
            r.text()
                .contains("<title>404 Not Found · DecAPI status</title>"),
            "{path}"
        );
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
}

#[tokio::test]
async fn nothing_is_cached_unless_a_page_says_so() {
    let app = TestApp::new().await;
    // Set in one place, for everything without a policy of its own.
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/admin/login",
        "/api/v1/maintenances",
    ] {
        let r = app.get(path).await;
        assert_eq!(r.header("cache-control"), Some("no-store"), "{path}");
    }
    // Public pages revalidate (they carry an ETag).
    assert_eq!(
        app.get("/").await.header("cache-control"),
        Some("public, max-age=0, must-revalidate")
    );
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = TestApp::new().await;
    assert_eq!(app.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(app.get("/readyz").await.status, StatusCode::OK);
    app.get("/").await;
    let metrics = app.metrics().await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let text = metrics.text();
    assert!(text.contains("http_requests_total{"), "{text}");
    assert!(text.contains("route=\"/\""));
    assert!(text.contains("herald_page_renders_total"));
    // The request-duration histogram: buckets rising to +Inf, which equals the count.
    let line = |prefix: &str| -> u64 {
        let found = text.lines().find(|l| l.starts_with(prefix));
        let found = found.unwrap_or_else(|| panic!("no {prefix} in {text}"));
        found.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(text.contains("# TYPE http_request_duration_seconds histogram"));
    let count = line("http_request_duration_seconds_count{route=\"/\"}");
    assert!(count >= 1);
    assert_eq!(
        line("http_request_duration_seconds_bucket{route=\"/\",le=\"+Inf\"}"),
        count
    );
    let buckets: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with("http_request_duration_seconds_bucket{route=\"/\","))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(buckets.len(), 13);
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    app.state
        .draining
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        app.get("/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(app.get("/healthz").await.status, StatusCode::OK);
}

/// Made-up HTTP methods cannot mint Prometheus series: anything non-standard is `other`.
#[tokio::test]
async fn made_up_methods_leave_metrics_bounded() {
    let app = TestApp::new().await;
    for i in 0..300 {
        let method = axum::http::Method::from_bytes(format!("XMADE{i}").as_bytes()).unwrap();
        app.request(method, "/", &[]).await;
    }
    let text = app.metrics().await.text();
    assert!(!text.contains("XMADE"), "a made-up method became a label");
    let other: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("http_requests_total") && l.contains("method=\"other\""))
        .collect();
    assert!(!other.is_empty(), "{text}");
    let mut distinct = other
        .iter()
        .map(|l| l.rsplit_once(' ').unwrap().0)
        .collect::<Vec<_>>();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        other.len(),
        "one series per route and status"
    );
    assert!(other.len() <= 2, "{other:#?}");
}

/// A link to Herald unfurls into a card that says what is happening: a meta description and
/// Open Graph / Twitter tags, the page's own on a window's page, escaped.
#[tokio::test]
async fn pages_carry_descriptions_and_link_cards() {
    let app = TestApp::new().await;
    let front = app.get("/").await.text();
    assert!(front.contains(r#"<meta name="description" content="All systems operational. Maintenance and deployment status of DecAPI status.">"#), "{front}");
    assert!(front.contains(r#"<meta property="og:url" content="http://127.0.0.1:8080/">"#));
    assert!(front.contains(r#"<meta property="og:site_name" content="DecAPI status">"#));
    let m = app
        .window("Move \"the\" <database>", tentative("Sunday"), 2, vec![])
        .await;
    app.act(m.id, WindowAction::Announce).await;
    app.act(m.id, WindowAction::Start).await;
    let front = app.get("/").await.text();
    assert!(
        front.contains(r#"<meta property="og:description" content="Maintenance in progress. Move &#34;the&#34; &#60;database&#62;: 0 of 2 done."#),
        "{front}"
    );
    let page = app.get(&format!("/maintenance/{}", m.id)).await.text();
    assert!(page.contains(r#"<meta property="og:title" content="Move &#34;the&#34; &#60;database&#62; · DecAPI status">"#), "{page}");
    assert!(
        page.contains(
            r#"<meta name="description" content="In progress: Moving the database to a cluster.">"#
        ),
        "markdown as plain text: {page}"
    );
    assert!(page.contains(&format!(
        r#"<meta property="og:url" content="http://127.0.0.1:8080/maintenance/{}">"#,
        m.id
    )));
}

/// A GET for a public page still fresh in the cache is answered by the router's innermost
/// layer without running the handler, and every other layer applies to that answer as to any
/// other: the request id, the security headers, the metrics under the route's own label, the
/// Statuspage JSON's CORS header; in every encoding and for a 304.
#[tokio::test]
async fn fresh_cached_pages_are_answered_by_a_layer_of_the_router() {
    let app = TestApp::new().await;
    let w = app
        .window("Database migration", tentative("this Sunday"), 3, vec![])
        .await;
    app.act(w.id, WindowAction::Announce).await;
    let window = format!("/maintenance/{}", w.id);
    let fresh = |target: &str| {
        app.state
            .pages
            .fresh_page(target, app.service.freshness())
            .is_some()
    };
    let targets = [
        "/",
        window.as_str(),
        "/history",
        "/feed.atom",
        "/calendar.ics",
        "/badge.svg",
        "/api/v2/summary.json",
    ];
    let without_id = |r: &crate::common::Reply| {
        let mut h = r.headers.clone();
        assert!(h.remove("x-request-id").is_some(), "no request id");
        h
    };
    for target in targets {
        assert!(!fresh(target), "{target} before any GET");
        // The first GET runs the handler, which renders the page into the cache.
        let rendered = app.get(target).await;
        assert_eq!(rendered.status, StatusCode::OK, "{target}");
        assert!(fresh(target), "{target} is not answered from the cache");
        let etag = rendered.header("etag").unwrap().to_owned();
        for headers in [
            vec![],
            vec![("accept-encoding", "gzip, deflate, br")],
            vec![("accept-encoding", "gzip")],
            vec![("if-none-match", etag.as_str())],
        ] {
            let cached = app.request(Method::GET, target, &headers).await;
            let expected = if headers.iter().any(|(k, _)| *k == "if-none-match") {
                StatusCode::NOT_MODIFIED
            } else {
                StatusCode::OK
            };
            assert_eq!(cached.status, expected, "{target} {headers:?}");
            if headers.is_empty() {
                assert_eq!(cached.body, rendered.body, "{target}");
                assert_eq!(without_id(&cached), without_id(&rendered), "{target}");
            }
            for layer_header in ["content-security-policy", "x-content-type-options", "etag"] {
                assert!(
                    cached.header(layer_header).is_some(),
                    "{target} {headers:?}: no {layer_header}"
                );
            }
        }
    }
    assert_eq!(
        app.get("/api/v2/summary.json")
            .await
            .header("access-control-allow-origin"),
        Some("*")
    );
    // Counted as the router counts: under the route, never under the page's own address.
    let etag = app.get(&window).await.header("etag").unwrap().to_owned();
    app.request(Method::GET, &window, &[("if-none-match", &etag)])
        .await;
    let metrics = app.metrics().await.text();
    assert!(
        metrics.contains(
            "http_requests_total{method=\"GET\",route=\"/maintenance/{id}\",status=\"304\"}"
        ),
        "{metrics}"
    );
    assert!(
        !metrics.contains(&format!("route=\"{window}\"")),
        "{metrics}"
    );
    // A client's own request id is kept on a cached answer too.
    let given = app
        .request(Method::GET, "/", &[("x-request-id", "probe-42")])
        .await;
    assert_eq!(given.header("x-request-id"), Some("probe-42"));
}

/// Only a GET for exactly a page's own address, while the page is fresh, skips the handler:
/// other spellings, other methods and pages after a change run it.
#[tokio::test]
async fn only_fresh_pages_at_their_own_address_skip_the_handler() {
    let app = TestApp::new().await;
    let w = app.window("Upgrade", tentative("soon"), 1, vec![]).await;
    app.act(w.id, WindowAction::Announce).await;
    let fresh = |target: &str| {
        app.state
            .pages
            .fresh_page(target, app.service.freshness())
            .is_some()
    };
    // Other spellings of a page are answered by the handler, under the canonical key.
    for target in ["/?utm_source=discord", &format!("/maintenance/0{}", w.id)] {
        assert_eq!(app.get(target).await.status, StatusCode::OK, "{target}");
        assert_eq!(app.get(target).await.status, StatusCode::OK, "{target}");
        assert!(!fresh(target), "{target}");
    }
    // HEAD never comes from the cache directly.
    let head = app.request(Method::HEAD, "/history", &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    // A change makes every page stale at once: the next GET runs the handler, with the news.
    app.get("/").await;
    assert!(fresh("/"));
    app.act(w.id, WindowAction::Start).await;
    assert!(!fresh("/"));
    let after = app.get("/").await.text();
    assert!(after.contains("Upgrade"));
    assert!(fresh("/"));
    // Time passing (relative times on the page) makes it stale as well.
    app.at(1);
    assert!(!fresh("/"));
}

/// The shipped Prometheus alerts are valid (`promtool check rules`, from Debian's prometheus)
/// and name only metrics Herald exports.
#[tokio::test]
async fn the_shipped_alerts_check_and_name_real_metrics() {
    let app = TestApp::new().await;
    app.add_channel(herald::domain::NewChannel {
        name: "hook".into(),
        kind: Some(herald::domain::ChannelKind::Webhook),
        target: "https://hooks.example.com/herald".into(),
        events: herald::domain::DEFAULT_EVENTS.to_vec(),
        enabled: true,
        ..Default::default()
    })
    .await;
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/alerts.yml");
    let out = std::process::Command::new("promtool")
        .args(["check", "rules", rules])
        .output()
        .expect("promtool is missing: install Debian's prometheus (bash .ci/test does)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A page first: request counters appear once a request was answered.
    app.get("/").await;
    let metrics = app.metrics().await.text();
    let text = std::fs::read_to_string(rules).unwrap();
    let mut named: Vec<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("herald_"))
        .collect();
    named.sort_unstable();
    named.dedup();
    assert!(named.len() >= 5, "{named:?}");
    for name in named {
        assert!(
            metrics.lines().any(|l| l.starts_with(name)),
            "{name} is not exported:\n{metrics}"
        );
    }

    // The Grafana dashboard: valid JSON, and every series it plots is one Herald exports
    // (a histogram's `_bucket` comes with its base name).
    let dashboard = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/herald.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dashboard).unwrap()).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    // Some series appear only once something happened (a delivery, a stale page): those must
    // at least be recorded somewhere in the source.
    fn source_text(dir: &std::path::Path, out: &mut String) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                source_text(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut source = String::new();
    source_text(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
        &mut source,
    );
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("herald_") || w.starts_with("http_"))
            {
                let base = name
                    .trim_end_matches("_bucket")
                    .trim_end_matches("_count")
                    .trim_end_matches("_sum");
                assert!(
                    metrics.lines().any(|l| l.starts_with(name))
                        || source.contains(&format!("\"{base}\"")),
                    "{name} in panel {} is not exported",
                    panel["title"]
                );
            }
        }
    }
}

/// `/metrics` names channels and sign-in activity: a scraper on this machine reads it, the
/// public (also through a reverse proxy on the same host) does not, and a scraper elsewhere
/// needs HERALD_METRICS_TOKEN.
#[tokio::test]
async fn metrics_are_not_the_publics() {
    use tower::ServiceExt;
    let app = TestApp::new().await;
    let send =
        |router: axum::Router, peer: [u8; 4], headers: &[(&str, &str)]| {
            let mut request = axum::http::Request::builder().uri("/metrics");
            for (k, v) in headers {
                request = request.header(*k, *v);
            }
            let mut request = request.body(axum::body::Body::empty()).unwrap();
            request.extensions_mut().insert(axum::extract::ConnectInfo(
                std::net::SocketAddr::from((peer, 40000)),
            ));
            async move { router.oneshot(request).await.unwrap().status() }
        };
    let router = app.router.clone();
    assert_eq!(
        send(router.clone(), [127, 0, 0, 1], &[]).await,
        StatusCode::OK
    );
    assert_eq!(
        send(router.clone(), [203, 0, 113, 9], &[]).await,
        StatusCode::FORBIDDEN
    );
    // nginx on the same host: loopback, but forwarding for someone else.
    assert_eq!(
        send(
            router.clone(),
            [127, 0, 0, 1],
            &[("x-forwarded-for", "203.0.113.9")]
        )
        .await,
        StatusCode::FORBIDDEN
    );
    // No ConnectInfo at all (not a TCP client): refused.
    assert_eq!(app.get("/metrics").await.status, StatusCode::FORBIDDEN);

    let mut settings = app.state.settings.clone();
    settings.metrics_token = Some(herald::config::Secret::new("scrape-me"));
    let router = herald::web::router(herald::web::AppState::new(app.service.clone(), settings));
    let elsewhere = [198, 51, 100, 7];
    assert_eq!(
        send(router.clone(), elsewhere, &[]).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(
            router.clone(),
            elsewhere,
            &[("authorization", "Bearer wrong")]
        )
        .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(
            router.clone(),
            elsewhere,
            &[("authorization", "Bearer scrape-me")]
        )
        .await,
        StatusCode::OK
    );
}

/// A window's page shows the newest 50 timeline entries and links to older pages: a token
/// posting thousands of notes does not make every visitor load them all.
#[tokio::test]
async fn long_timelines_are_paged() {
    use axum::http::Method;
    let app = TestApp::new().await;
    let token = app.token(herald::domain::Role::Maintainer).await;
    let (status, m, _) = app
        .api(
            Method::POST,
            "/api/v1/maintenances",
            Some(&token),
            Some(serde_json::json!({"title": "Chatty window",
                "starts_at": app.time(60).to_string(), "ends_at": app.time(120).to_string()})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = m["id"].as_i64().unwrap();
    let path = format!("/api/v1/maintenances/{id}/updates");
    app.api(
        Method::POST,
        &format!("/api/v1/maintenances/{id}/announce"),
        Some(&token),
        None,
    )
    .await;
    for i in 1..=119 {
        let (status, e, _) = app
            .api(
                Method::POST,
                &path,
                Some(&token),
                Some(serde_json::json!({"body": format!("Note number {i}."), "announce": false})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{e}");
    }
    let first = app.get(&format!("/maintenance/{id}")).await;
    assert_eq!(first.status, StatusCode::OK);
    let text = first.text();
    assert!(text.contains("Note number 119."));
    assert!(
        !text.contains("Note number 69."),
        "older than the newest 50"
    );
    assert!(text.contains(&format!("href=\"/maintenance/{id}?updates=2\"")));
    assert!(text.contains("Page 1 of 3 · 120 updates"));
    let third = app
        .get(&format!("/maintenance/{id}?updates=3"))
        .await
        .text();
    assert!(third.contains("Note number 1.") && !third.contains("Note number 21."));
    assert!(third.contains(&format!("href=\"/maintenance/{id}?updates=2\"")));
    // The Statuspage API carries the newest 50 too.
    let v2: serde_json::Value =
        serde_json::from_str(&app.get("/api/v2/scheduled-maintenances.json").await.text()).unwrap();
    let updates = v2["scheduled_maintenances"][0]["incident_updates"]
        .as_array()
        .unwrap();
    assert_eq!(updates.len(), 50);
    assert!(
        updates[0]["body"]
            .as_str()
            .unwrap()
            .contains("Note number 119.")
    );
    for beyond in ["?updates=4", "?updates=0"] {
        assert_eq!(
            app.get(&format!("/maintenance/{id}{beyond}")).await.status,
            StatusCode::NOT_FOUND,
            "{beyond}"
        );
    }
}
