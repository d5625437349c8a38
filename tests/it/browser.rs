//! What a reader does, in headless Chromium: load the demo status page, find the checklist and
//! the progress bar, follow the window to its page; no console error, no request to another
//! host; screenshots at phone and desktop width.
//!
//! Needs Debian's `chromium` and `chromium-driver` (the README's test command installs them).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use herald::config::Settings;
use serde_json::json;
use thirtyfour::prelude::*;

pub(crate) struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn start_chromedriver() -> (Driver, String) {
    let port = crate::common::free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is missing: install Debian's chromium and chromium-driver");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Driver(child), format!("http://127.0.0.1:{port}"))
}

async fn start_herald(dir: &tempfile::TempDir) -> SocketAddr {
    let url = crate::common::database_url(dir.path(), "herald.db");
    let mut settings = Settings::for_database(&url);
    settings.announce.allow_private_targets = true;
    settings.site_name = "DecAPI status".into();
    settings.discord_invite = Some("https://decapi.link/discord".into());
    settings.bluesky_profile = Some("https://bsky.app/profile/decapi.me".into());
    let state = herald::server::build(&settings, true).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, herald::web::router(state))
            .await
            .unwrap();
    });
    addr
}

pub(crate) fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub(crate) async fn browser(driver_url: &str, profile: &tempfile::TempDir) -> WebDriver {
    let mut caps = DesiredCapabilities::chrome();
    caps.set_binary("/usr/bin/chromium").unwrap();
    for arg in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        &format!("--user-data-dir={}", profile.path().display()),
    ] {
        caps.add_arg(arg).unwrap();
    }
    caps.set_browser_log_level(thirtyfour::LoggingPrefsLogLevel::All)
        .unwrap();
    WebDriver::new(driver_url, caps).await.unwrap()
}

/// Save a screenshot of the whole page (not just the viewport) at `width` CSS pixels.
pub(crate) async fn full_page_screenshot(
    driver: &WebDriver,
    width: u32,
    height: u32,
    name: &str,
) -> PathBuf {
    driver
        .cdp()
        .send_raw(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600}),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shot = driver
        .cdp()
        .send_raw(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        )
        .await
        .unwrap();
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    let path = screenshot_dir().join(name);
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
    path
}

pub(crate) async fn assert_clean(driver: &WebDriver, origin: &str) {
    let severe: Vec<String> = driver
        .browser_log()
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.level == "SEVERE" || e.level == "WARNING")
        .map(|e| e.message)
        .collect();
    assert!(severe.is_empty(), "console errors: {severe:?}");
    let resources = driver
        .execute(
            "return performance.getEntriesByType('resource').map(e => e.name)",
            vec![],
        )
        .await
        .unwrap();
    let resources: Vec<String> = resources.convert().unwrap();
    assert!(!resources.is_empty(), "the page loads its own assets");
    for url in resources {
        assert!(url.starts_with(origin), "request to another host: {url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_page_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let addr = start_herald(&dir).await;
    let origin = format!("http://{addr}/");
    let (_chromedriver, driver_url) = start_chromedriver();
    let profile = tempfile::tempdir().unwrap();
    let driver = browser(&driver_url, &profile).await;
    let result = async {
        driver.goto(&origin).await?;
        assert_eq!(driver.title().await?, "DecAPI status");
        let h1 = driver.find(By::Css("h1")).await?;
        assert_eq!(h1.text().await?, "Maintenance in progress");

        let checklist = driver.find(By::Css("ol.checklist")).await?;
        let steps = checklist.find_all(By::Css("li.step")).await?;
        assert_eq!(steps.len(), 6);
        let current = driver.find(By::Css("li.step[aria-current='step']")).await?;
        assert!(current.text().await?.contains("Put those 2 servers back"));
        let progress = driver.find(By::Css("progress")).await?;
        assert_eq!(progress.attr("max").await?.as_deref(), Some("6"));
        assert_eq!(progress.attr("value").await?.as_deref(), Some("3"));
        assert_eq!(
            progress.attr("aria-valuetext").await?.as_deref(),
            Some("3 of 6 done")
        );
        // The progress bar has an accessible name through its label.
        let label = driver.find(By::Css(".progress label")).await?;
        assert!(label.text().await?.contains("3 of 6 done"));

        // The script ran: times are in the reader's zone, with UTC in the title.
        let note = driver.find(By::Id("zone-note")).await?;
        assert!(note.text().await?.starts_with("in your time zone"));
        let time = driver.find(By::Css("time[datetime]")).await?;
        assert!(
            time.attr("title")
                .await?
                .unwrap_or_default()
                .contains("UTC")
        );
        let toggle = driver.find(By::Id("zone-toggle")).await?;
        toggle.click().await?;
        assert_eq!(note.text().await?, "in UTC");

        assert_clean(&driver, &origin).await;
        full_page_screenshot(&driver, 390, 844, "status-phone.png").await;
        full_page_screenshot(&driver, 1280, 900, "status-desktop.png").await;

        // Follow along, at phone width: every way in one section, nothing wider than the
        // screen, the badge drawn, the snippets there to copy. (The status page again at
        // phone width, which this also sets for what follows.)
        full_page_screenshot(&driver, 390, 844, "status-phone.png").await;
        let section = driver.find(By::Css("section.subscribe")).await?;
        section.scroll_into_view().await?;
        let feed = section.find(By::LinkText("Atom feed")).await?;
        assert_eq!(feed.attr("href").await?.as_deref(), Some("/feed.atom"));
        let calendar = section.find(By::LinkText("Add to your calendar")).await?;
        let webcal = calendar.attr("href").await?.unwrap_or_default();
        assert!(
            webcal.starts_with("webcal://") && webcal.ends_with("/calendar.ics"),
            "{webcal}"
        );
        let discord = section.find(By::LinkText("Discord")).await?;
        assert_eq!(
            discord.attr("href").await?.as_deref(),
            Some("https://decapi.link/discord")
        );
        section.find(By::LinkText("Bluesky")).await?;
        section.find(By::Css("details summary")).await?.click().await?;
        let drawn = driver
            .execute(
                "const img = document.querySelector('section.subscribe img'); \
                 return img.complete && img.naturalWidth > 0",
                vec![],
            )
            .await?;
        assert_eq!(drawn.json(), &json!(true), "the badge image loads");
        let snippet = section.find(By::Id("badge-md")).await?.prop("value").await?;
        assert!(
            snippet.unwrap_or_default().contains("/badge.svg)"),
            "the Markdown snippet"
        );
        let overflow = driver
            .execute(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
                vec![],
            )
            .await?;
        assert_eq!(overflow.json(), &json!(0), "nothing wider than a phone");
        let rect = driver
            .execute(
                "const r = document.querySelector('section.subscribe').getBoundingClientRect(); \
                 return [r.left, r.top + window.scrollY, r.width, r.height]",
                vec![],
            )
            .await?;
        let rect: Vec<f64> = rect.convert()?;
        let shot = driver
            .cdp()
            .send_raw(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true,
                       "clip": {"x": rect[0] - 8.0, "y": rect[1] - 8.0, "width": rect[2] + 16.0,
                                "height": rect[3] + 16.0, "scale": 1}}),
            )
            .await
            .unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(screenshot_dir().join("subscribe-phone.png"), &png).unwrap();
        std::fs::write(
            concat!(env!("CARGO_MANIFEST_DIR"), "/docs/screenshot-subscribe-phone.png"),
            &png,
        )
        .unwrap();
        driver.goto(&origin).await?;

        // Follow the window to its own page.
        driver
            .find(By::LinkText("Database cluster migration"))
            .await?
            .click()
            .await?;
        let h1 = driver.find(By::Css("h1")).await?;
        assert_eq!(h1.text().await?, "Database cluster migration");
        let timeline = driver.find_all(By::Css("ol.timeline li")).await?;
        assert!(timeline.len() >= 9, "the full timeline");
        driver.find(By::Css(".prose strong")).await?;
        assert_clean(&driver, &origin).await;
        full_page_screenshot(&driver, 390, 844, "maintenance-phone.png").await;

        // The Fishjam rollout, midway, on the status page and on its own page.
        driver.goto(&origin).await?;
        let card = driver.find(By::Css("article.rollout")).await?;
        let text = card.text().await?;
        assert!(
            text.contains("v1.4.0 on 1 of 3 instances · v1.3.2 on 2"),
            "{text}"
        );
        assert!(text.contains("fishjam-2"), "{text}");
        card.find(By::LinkText("Fishjam v1.4.0 rolling update"))
            .await?
            .click()
            .await?;
        let h1 = driver.find(By::Css("h1")).await?;
        assert_eq!(h1.text().await?, "Fishjam v1.4.0 rolling update");
        let targets = driver.find_all(By::Css("ol.targets li.target")).await?;
        assert_eq!(targets.len(), 3);
        let draining = driver.find(By::Css("li.target-draining")).await?;
        let bars = draining.find_all(By::Css(".drain progress")).await?;
        assert_eq!(bars.len(), 2, "a bar per drain label");
        let rooms = draining.text().await?;
        assert!(rooms.contains("rooms 3 left of 12"), "{rooms}");
        assert!(rooms.contains("recordings 1 left of 2"), "{rooms}");
        assert!(rooms.contains("Drained in about"), "an estimate: {rooms}");
        driver.find(By::Css("li.target-healthy")).await?;
        driver.find(By::Css("li.target-pending")).await?;
        assert_clean(&driver, &origin).await;
        full_page_screenshot(&driver, 390, 844, "rollout-phone.png").await;

        driver.goto(format!("{origin}history")).await?;
        driver
            .find(By::LinkText(
                "Operating system upgrades on the application servers",
            ))
            .await?;
        assert_clean(&driver, &origin).await;
        WebDriverResult::Ok(())
    }
    .await;
    driver.quit().await.unwrap();
    result.unwrap();
}

pub(crate) async fn find_button(driver: &WebDriver, text: &str) -> WebDriverResult<WebElement> {
    driver
        .find(By::XPath(format!(
            "//button[normalize-space()='{text}'] | //summary[normalize-space()='{text}']"
        )))
        .await
}

/// Open a `<details>` (or press a button that does not leave the page).
pub(crate) async fn click_button(driver: &WebDriver, text: &str) -> WebDriverResult<()> {
    find_button(driver, text).await?.click().await
}

/// Press a submit button and wait until the browser has left that page.
pub(crate) async fn submit(driver: &WebDriver, text: &str) -> WebDriverResult<()> {
    let button = find_button(driver, text).await?;
    button.click().await?;
    button.wait_until().stale().await
}

async fn public_text(driver: &WebDriver, origin: &str, back: &str) -> WebDriverResult<String> {
    driver.goto(origin).await?;
    let text = driver.find(By::Tag("main")).await?.text().await?;
    driver.goto(back).await?;
    Ok(text)
}

/// A maintainer signs in, plans the DecAPI window (tentative, six steps), schedules it, announces
/// and starts it, runs every step to done (a note on one), posts an update and completes it,
/// looking at the public page after each action; an admin's UI token then works on the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintainer_runs_a_window_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let url = crate::common::database_url(dir.path(), "herald.db");
    let mut settings = Settings::for_database(&url);
    // Announcements go to local Discord and Bluesky servers while the maintainer works.
    settings.announce.allow_private_targets = true;
    let state = herald::server::build(&settings, false).await.unwrap();
    let discord = crate::common::fake_discord::FakeDiscord::start().await;
    let bluesky = crate::common::fake_bluesky::FakeBluesky::start().await;
    for (name, kind, target, secret, api) in [
        (
            "#announcements",
            herald::domain::ChannelKind::DiscordBot,
            discord.announcement_channel().to_string(),
            discord.bot_token(),
            discord.base(),
        ),
        (
            "Bluesky",
            herald::domain::ChannelKind::Bluesky,
            bluesky.handle(),
            bluesky.password(),
            bluesky.url(),
        ),
    ] {
        state
            .service
            .acting(herald::domain::Actor::System)
            .create_channel(herald::domain::NewChannel {
                name: name.into(),
                kind: Some(kind),
                target,
                secret: herald::domain::ChannelSecret::new(secret),
                api_url: Some(api),
                events: herald::domain::DEFAULT_EVENTS.to_vec(),
                milestones: herald::domain::DEFAULT_MILESTONES.to_vec(),
                enabled: true,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let outbox_token = tokio_util::sync::CancellationToken::new();
    let outbox_tasks = tokio_util::task::TaskTracker::new();
    herald::server::spawn_outbox(&state, &outbox_tasks, &outbox_token)
        .expect("outbox and mail workers");
    state
        .service
        .acting(herald::domain::Actor::System)
        .add_user(
            "alice",
            "correct horse battery",
            herald::domain::Role::Admin,
        )
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            herald::web::router(state).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let origin = format!("http://{addr}/");
    let (_chromedriver, driver_url) = start_chromedriver();
    let profile = tempfile::tempdir().unwrap();
    let driver = browser(&driver_url, &profile).await;
    let steps = [
        "Reduce the load balancer to 1 application server",
        "Dump the database and import it into the cluster",
        "Point the 2 other servers to the cluster",
        "Put them back behind the load balancer",
        "Update the old server's configuration",
        "Put the old server back: 3 servers as normal",
    ];
    let result = async {
        driver.goto(format!("{origin}admin")).await?;
        driver
            .find(By::Id("name"))
            .await?
            .send_keys("alice")
            .await?;
        driver
            .find(By::Id("password"))
            .await?
            .send_keys("correct horse battery")
            .await?;
        submit(&driver, "Sign in").await?;
        assert!(driver.current_url().await?.path().ends_with("/admin"));

        driver
            .goto(format!("{origin}admin/maintenances/new"))
            .await?;
        driver
            .find(By::Id("title"))
            .await?
            .send_keys("Database cluster migration")
            .await?;
        driver
            .find(By::Id("description"))
            .await?
            .send_keys("Moving from one database server to a **cluster of three**.")
            .await?;
        driver
            .find(By::Id("schedule_hint"))
            .await?
            .send_keys("this Sunday or within two weeks")
            .await?;
        driver
            .find(By::Id("steps"))
            .await?
            .send_keys(steps.join("\n"))
            .await?;
        full_page_screenshot(&driver, 390, 844, "admin-new-phone.png").await;
        driver
            .cdp()
            .send_raw("Emulation.clearDeviceMetricsOverride", json!({}))
            .await?;
        submit(&driver, "Save as draft").await?;
        let run = driver.current_url().await?.to_string();
        assert!(run.ends_with("/admin/maintenances/1?done=created"), "{run}");
        assert!(
            driver
                .find(By::Css("p.form-notice"))
                .await?
                .text()
                .await?
                .contains("Saved as a draft")
        );
        let run = run.split('?').next().unwrap().to_owned();
        assert!(
            !public_text(&driver, &origin, &run)
                .await?
                .contains("Database cluster")
        );

        // Schedule it.
        click_button(&driver, "Schedule: no date yet").await?;
        driver
            .find(By::Css("input[name='when'][value='fixed']"))
            .await?
            .click()
            .await?;
        driver
            .execute(
                "document.getElementById('starts_at').value = '2030-01-05T10:00';
                 document.getElementById('ends_at').value = '2030-01-05T12:00';",
                vec![],
            )
            .await?;
        submit(&driver, "Save schedule").await?;

        click_button(&driver, "Announce…").await?;
        submit(&driver, "Yes, announce").await?;
        let public = public_text(&driver, &origin, &run).await?;
        assert!(
            public.contains("Upcoming maintenance")
                && public.contains("Database cluster migration")
        );

        click_button(&driver, "Start…").await?;
        submit(&driver, "Yes, start").await?;
        assert!(
            public_text(&driver, &origin, &run)
                .await?
                .contains("Maintenance in progress")
        );
        full_page_screenshot(&driver, 390, 844, "admin-run-phone.png").await;
        driver
            .cdp()
            .send_raw("Emulation.clearDeviceMetricsOverride", json!({}))
            .await?;

        for (i, _) in steps.iter().enumerate() {
            submit(&driver, "Start").await?;
            if i == 1 {
                driver
                    .find(By::Id("step-note"))
                    .await?
                    .send_keys("Dump imported without errors.")
                    .await?;
            }
            submit(&driver, "Done").await?;
            let public = public_text(&driver, &origin, &run).await?;
            let done = i + 1;
            let expected = if done == 6 {
                "All 6 steps done".to_owned()
            } else {
                format!("{done} of 6 done")
            };
            assert!(public.contains(&expected), "after step {done}: {public}");
        }
        driver.goto(format!("{origin}maintenance/1")).await?;
        let detail = driver.find(By::Tag("main")).await?.text().await?;
        assert!(detail.contains("All 6 steps done"), "{detail}");
        driver.goto(&run).await?;
        driver
            .find(By::Id("update-body"))
            .await?
            .send_keys("All three application servers run on the new cluster.")
            .await?;
        submit(&driver, "Post update").await?;
        assert!(
            public_text(&driver, &origin, &run)
                .await?
                .contains("All three application servers run on the new cluster.")
        );
        click_button(&driver, "Complete…").await?;
        submit(&driver, "Yes, complete").await?;
        let public = public_text(&driver, &origin, &run).await?;
        assert!(public.contains("All systems operational") && public.contains("Recently finished"));
        driver.goto(format!("{origin}maintenance/1")).await?;
        let detail = driver.find(By::Tag("main")).await?.text().await?;
        assert!(detail.contains("Dump imported without errors."), "{detail}");
        assert!(detail.contains("Completed"), "{detail}");
        assert_clean(&driver, &origin).await;

        // An admin creates a token in the UI; it works on the API.
        driver.goto(format!("{origin}admin/tokens")).await?;
        driver
            .find(By::Id("name"))
            .await?
            .send_keys("deploy-bot")
            .await?;
        submit(&driver, "Create token").await?;
        let token = driver.find(By::Css("code.secret")).await?.text().await?;
        let window: serde_json::Value = reqwest::Client::new()
            .get(format!("{origin}api/v1/maintenances/1"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(window["state"], "completed");
        assert_eq!(window["steps_done"], 6);

        // The run view lists what reached Discord and Bluesky, with links.
        let deadline = Instant::now() + Duration::from_secs(20);
        while bluesky.records().len() < 10 {
            assert!(Instant::now() < deadline, "announcements did not arrive");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        driver.goto(&run).await?;
        let summary = driver.find(By::Css("details.delivered summary")).await?;
        assert_eq!(summary.text().await?, "All 20 delivered");
        summary.click().await?;
        let deliveries = driver
            .find(By::Css("table.deliveries"))
            .await?
            .text()
            .await?;
        assert!(
            deliveries.contains("sent") && !deliveries.contains("failed"),
            "{deliveries}"
        );
        full_page_screenshot(&driver, 1280, 900, "admin-run-deliveries-desktop.png").await;
        driver.goto(format!("{origin}admin/channels")).await?;
        full_page_screenshot(&driver, 390, 844, "admin-channels-phone.png").await;
        assert_clean(&driver, &origin).await;
        assert_eq!(
            discord.messages().len(),
            4,
            "announcement + start, update, completion"
        );

        // A rollout tracked from the admin pages, watched live while a deploy script reports.
        driver.goto(format!("{origin}admin/rollouts/new")).await?;
        for (id, text) in [
            ("title", "Fishjam v1.4.0"),
            ("from_version", "v1.3.2"),
            ("to_version", "v1.4.0"),
            ("targets", "fishjam-1\nfishjam-2\nfishjam-3"),
        ] {
            driver.find(By::Id(id)).await?.send_keys(text).await?;
        }
        submit(&driver, "Create rollout").await?;
        let watch = driver.current_url().await?.to_string();
        let watch = watch.split('?').next().unwrap().to_owned();
        assert!(watch.ends_with("/admin/rollouts/1"), "{watch}");
        let report = |name: &'static str, body: serde_json::Value| {
            let (origin, token) = (origin.clone(), token.clone());
            async move {
                reqwest::Client::new()
                    .put(format!("{origin}api/v1/rollouts/1/targets/{name}"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .error_for_status()
                    .unwrap();
            }
        };
        report("fishjam-1", json!({"state": "drained"})).await;
        report("fishjam-1", json!({"state": "healthy"})).await;
        report(
            "fishjam-2",
            json!({"state": "draining", "remaining": {"rooms": 5, "recordings": 1}}),
        )
        .await;
        // The page redraws its rollout region by itself: no reload here.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let live = driver.find(By::Id("live")).await?.text().await?;
            if live.contains("rooms 5 left") {
                assert!(live.contains("1 of 3 healthy"), "{live}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the live region did not refresh: {live}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(driver.current_url().await?.to_string().starts_with(&watch));
        // Force fishjam-2 down by hand, with the reason.
        driver
            .find(By::XPath(
                "//summary[normalize-space()='Set fishjam-2 by hand…']",
            ))
            .await?
            .click()
            .await?;
        driver
            .find(By::Id("force-note-2"))
            .await?
            .send_keys("a recording hung")
            .await?;
        submit(&driver, "Force to updating").await?;
        let live = driver.find(By::Id("live")).await?.text().await?;
        assert!(
            live.contains("Forced before its drain finished: a recording hung"),
            "{live}"
        );
        full_page_screenshot(&driver, 390, 844, "admin-rollout-phone.png").await;
        assert_clean(&driver, &origin).await;
        WebDriverResult::Ok(())
    }
    .await;
    driver.quit().await.unwrap();
    result.unwrap();
}

/// An incident leads the demo page in a real browser at phone width: the red banner with the
/// latest update, the incident's own page with its timeline, and the 90-day strips (the demo's
/// past incident coloured on its day, its summary shown on keyboard focus).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_and_the_90_day_strips_in_a_real_browser() {
    use herald::domain::{Actor, ComponentStatus, Impact, IncidentStatus, NewIncident};
    let dir = tempfile::tempdir().unwrap();
    let url = crate::common::database_url(dir.path(), "herald.db");
    let mut settings = Settings::for_database(&url);
    settings.site_name = "DecAPI status".into();
    let state = herald::server::build(&settings, true).await.unwrap();
    let service = state.service.acting(Actor::System);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, herald::web::router(state))
            .await
            .unwrap();
    });
    let components = service.components().await.unwrap();
    let api = components.iter().find(|c| c.slug == "api").unwrap().id;
    let i = service
        .create_incident(NewIncident {
            title: "API errors on writes".into(),
            impact: Impact::Major,
            status: IncidentStatus::Investigating,
            components: vec![(api, ComponentStatus::PartialOutage)],
            body: "Some requests that change data fail with an error 500.".into(),
            publish: true,
            maintenance_id: None,
            rollout_id: None,
            source: "manual".into(),
        })
        .await
        .unwrap();
    service
        .post_incident_update(
            i.id,
            Some(IncidentStatus::Identified),
            "A **bad index** on the writes table; rebuilding it now.",
            None,
        )
        .await
        .unwrap();

    let origin = format!("http://{addr}/");
    let (_chromedriver, driver_url) = start_chromedriver();
    let profile = tempfile::tempdir().unwrap();
    let driver = browser(&driver_url, &profile).await;
    let result = async {
        full_page_screenshot(&driver, 390, 844, "blank.png").await;
        driver.goto(&origin).await?;
        let banner = driver.find(By::Css("section.banner")).await?;
        assert_eq!(
            banner.attr("class").await?.as_deref(),
            Some("banner banner-outage")
        );
        assert_eq!(
            driver.find(By::Css("h1")).await?.text().await?,
            "API errors on writes"
        );
        assert!(banner.text().await?.contains("Identified: A bad index"));
        let card = driver.find(By::Css("article.incident")).await?;
        assert!(card.text().await?.contains("API (partial outage)"));
        card.find(By::Css(".prose strong")).await?;
        let api_row = driver.find(By::Css("ul.components > li")).await?;
        assert!(api_row.text().await?.contains("Partial outage"));

        // The strips: 90 days each; the demo's failover incident on its day, said on focus.
        let strips = driver.find_all(By::Css("ol.strip")).await?;
        assert_eq!(strips.len(), components.len());
        for s in &strips {
            assert_eq!(s.find_all(By::Css("li")).await?.len(), 90);
        }
        let past = driver
            .find(By::XPath(
                "//li[contains(@class, 'day-partial_outage') and @tabindex='0']\
                 [.//span[contains(., 'failover')]]",
            ))
            .await?;
        let tip = past.find(By::Css(".day-tip")).await?;
        let said = tip.prop("textContent").await?.unwrap_or_default();
        assert!(said.contains("Writes failed during a database failover test"), "{said}");
        past.focus().await?;
        let shown = driver
            .execute(
                "return document.activeElement.querySelector('.day-tip').getBoundingClientRect().width",
                vec![],
            )
            .await?;
        assert!(shown.json().as_f64().unwrap() > 50.0, "the summary shows on focus");
        let overflow = driver
            .execute(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
                vec![],
            )
            .await?;
        assert_eq!(overflow.json(), &json!(0), "nothing wider than a phone");
        assert_clean(&driver, &origin).await;
        let shot = full_page_screenshot(&driver, 390, 844, "incident-status-phone.png").await;
        std::fs::copy(
            &shot,
            concat!(env!("CARGO_MANIFEST_DIR"), "/docs/screenshot-incident-phone.png"),
        )
        .unwrap();
        let shot = full_page_screenshot(&driver, 1280, 900, "incident-status-desktop.png").await;
        std::fs::copy(
            &shot,
            concat!(env!("CARGO_MANIFEST_DIR"), "/docs/screenshot-incident-desktop.png"),
        )
        .unwrap();

        // The incident's own page, at phone width.
        full_page_screenshot(&driver, 390, 844, "blank.png").await;
        driver
            .find(By::LinkText("API errors on writes"))
            .await?
            .click()
            .await?;
        assert_eq!(
            driver.find(By::Css("h1")).await?.text().await?,
            "API errors on writes"
        );
        let timeline = driver.find_all(By::Css("ol.timeline li")).await?;
        assert_eq!(timeline.len(), 2);
        assert!(timeline[0].text().await?.contains("Identified"));
        assert_clean(&driver, &origin).await;
        let shot = full_page_screenshot(&driver, 390, 844, "incident-page-phone.png").await;
        std::fs::copy(
            &shot,
            concat!(env!("CARGO_MANIFEST_DIR"), "/docs/screenshot-incident-page-phone.png"),
        )
        .unwrap();

        // The demo's resolved incident, with its postmortem, from the history.
        driver.goto(format!("{origin}history")).await?;
        driver
            .find(By::LinkText("Writes failed during a database failover test"))
            .await?
            .click()
            .await?;
        let page = driver.find(By::Css("main")).await?.text().await?;
        assert!(page.contains("Postmortem"), "{page}");
        assert!(page.contains("What we are changing"), "{page}");
        assert_clean(&driver, &origin).await;
        WebDriverResult::Ok(())
    }
    .await;
    driver.quit().await.unwrap();
    result.unwrap();
}
