//! A maintainer's day in headless Chromium, on a phone (390 px, Europe/Warsaw) and on a desktop
//! (1280 px, America/New_York): schedules that keep their instants, a date typed under "No date
//! yet", a session that ends during a step action, a Discord relay answering 204, "don't
//! announce", and admin pages that fit the screen and pass axe-core's accessibility rules.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use herald::config::Settings;
use herald::domain::{Actor, ChannelKind, Role};
use serde_json::json;
use thirtyfour::prelude::*;

use crate::browser::{
    assert_clean, browser, click_button, full_page_screenshot, start_chromedriver, submit,
};
use crate::common::fake_bluesky::FakeBluesky;
use crate::common::fake_discord::{FakeDiscord, Fault};

/// One reader: the viewport's width and height, and the zone the browser is in.
struct Reader {
    width: u32,
    height: u32,
    zone: &'static str,
    /// Screenshots taken at this width are named with this.
    name: &'static str,
    /// The system asks for dark pages (the accessibility checks then run on dark colours).
    dark: bool,
}

const PHONE: Reader = Reader {
    width: 390,
    height: 844,
    zone: "Europe/Warsaw",
    name: "phone",
    dark: false,
};

const DESKTOP: Reader = Reader {
    width: 1280,
    height: 900,
    zone: "America/New_York",
    name: "desktop",
    dark: true,
};

struct Herald {
    state: herald::web::AppState,
    origin: String,
    discord: FakeDiscord,
    bluesky: FakeBluesky,
    _dir: tempfile::TempDir,
}

async fn start_herald() -> Herald {
    let dir = tempfile::tempdir().unwrap();
    let url = crate::common::database_url(dir.path(), "herald.db");
    let mut settings = Settings::for_database(&url);
    settings.announce.allow_private_targets = true;
    settings.site_name = "DecAPI status".into();
    let state = herald::server::build(&settings, false).await.unwrap();
    let discord = FakeDiscord::start().await;
    let bluesky = FakeBluesky::start().await;
    let system = state.service.acting(Actor::System);
    system
        .create_channel(herald::domain::NewChannel {
            name: "Bluesky".into(),
            kind: Some(ChannelKind::Bluesky),
            target: bluesky.handle(),
            secret: herald::domain::ChannelSecret::new(bluesky.password()),
            api_url: Some(bluesky.url()),
            events: herald::domain::DEFAULT_EVENTS.to_vec(),
            milestones: herald::domain::DEFAULT_MILESTONES.to_vec(),
            enabled: true,
            ..Default::default()
        })
        .await
        .unwrap();
    system
        .create_channel(herald::domain::NewChannel {
            name: "#announcements".into(),
            kind: Some(ChannelKind::DiscordBot),
            target: discord.announcement_channel().to_string(),
            secret: herald::domain::ChannelSecret::new(discord.bot_token()),
            api_url: Some(discord.base()),
            events: herald::domain::DEFAULT_EVENTS.to_vec(),
            milestones: herald::domain::DEFAULT_MILESTONES.to_vec(),
            enabled: true,
            ..Default::default()
        })
        .await
        .unwrap();
    system
        .create_component(herald::domain::NewComponent {
            slug: "api".into(),
            name: "API".into(),
            description: None,
            group_name: None,
        })
        .await
        .unwrap();
    system
        .add_user("alice", "correct horse battery", Role::Admin)
        .await
        .unwrap();
    // A draft incident, as an alert would open it, for the incidents pages.
    let api = system.components().await.unwrap()[0].id;
    system
        .create_incident(herald::domain::NewIncident {
            title: "HighErrorRate".into(),
            impact: herald::domain::Impact::Major,
            status: herald::domain::IncidentStatus::Investigating,
            components: vec![(api, herald::domain::ComponentStatus::MajorOutage)],
            body: "Our monitoring reports a problem; we are investigating.".into(),
            publish: false,
            maintenance_id: None,
            rollout_id: None,
            source: "alertmanager".into(),
        })
        .await
        .unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let tasks = tokio_util::task::TaskTracker::new();
    herald::server::spawn_outbox(&state, &tasks, &token).expect("outbox and mail workers");
    // The outbox runs as long as the test: its token is never cancelled.
    std::mem::forget(token);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = herald::web::router(state.clone());
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    Herald {
        state,
        origin: format!("http://{addr}"),
        discord,
        bluesky,
        _dir: dir,
    }
}

/// The reader's screen and zone, for every page from now on.
async fn emulate(driver: &WebDriver, reader: &Reader) -> WebDriverResult<()> {
    driver
        .cdp()
        .send_raw(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": reader.width, "height": reader.height, "deviceScaleFactor": 1, "mobile": reader.width < 600}),
        )
        .await?;
    driver
        .cdp()
        .send_raw(
            "Emulation.setTimezoneOverride",
            json!({"timezoneId": reader.zone}),
        )
        .await?;
    let scheme = if reader.dark { "dark" } else { "light" };
    driver
        .cdp()
        .send_raw(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
        )
        .await?;
    Ok(())
}

/// Set a field the way typing does (the `input` event fires), whatever its type.
async fn type_into(driver: &WebDriver, id: &str, value: &str) -> WebDriverResult<()> {
    driver
        .execute(
            "const el = document.getElementById(arguments[0]);
             el.value = arguments[1];
             el.dispatchEvent(new Event('input', {bubbles: true}));
             el.dispatchEvent(new Event('change', {bubbles: true}));",
            vec![json!(id), json!(value)],
        )
        .await?;
    Ok(())
}

async fn value_of(driver: &WebDriver, id: &str) -> WebDriverResult<String> {
    let v = driver
        .execute(
            "return document.getElementById(arguments[0]).value",
            vec![json!(id)],
        )
        .await?;
    Ok(v.convert().unwrap())
}

/// The page fits the screen: nothing to scroll sideways.
async fn assert_fits(driver: &WebDriver, what: &str) -> WebDriverResult<()> {
    let widths = driver
        .execute(
            "const d = document.documentElement; return [d.scrollWidth, d.clientWidth];",
            vec![],
        )
        .await?;
    let widths: Vec<i64> = widths.convert().unwrap();
    assert!(
        widths[0] <= widths[1],
        "{what} scrolls sideways: {} px of content in {} px",
        widths[0],
        widths[1]
    );
    Ok(())
}

/// axe-core's WCAG 2.1 A and AA rules find nothing on the page.
async fn assert_accessible(driver: &WebDriver, axe: &str, what: &str) -> WebDriverResult<()> {
    driver.execute(axe, vec![]).await?;
    let result = driver
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})
               .then(r => done(r.violations.map(v => v.id + ': ' + v.help + ' at ' + v.nodes.map(n => n.target.join(' ')).join(', '))))
               .catch(e => done(['axe failed: ' + e]));",
            vec![],
        )
        .await?;
    let violations: Vec<String> = result.convert().unwrap();
    assert!(violations.is_empty(), "{what}: {violations:#?}");
    Ok(())
}

/// Wait until the outbox has nothing left to send.
async fn settled(state: &herald::web::AppState) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let unsent = state.service.unsent_deliveries(100).await.unwrap();
        if unsent
            .iter()
            .all(|d| d.state != herald::domain::DeliveryState::Pending)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "deliveries still pending: {unsent:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn axe_script() -> String {
    let path = match std::env::var("HERALD_TEST_AXE") {
        Ok(path) => path,
        Err(_) => {
            let out = std::process::Command::new("bash")
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/axe"))
                .stderr(std::process::Stdio::inherit())
                .output()
                .expect("bash runs .ci/axe");
            assert!(out.status.success(), ".ci/axe could not install axe-core");
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        }
    };
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

async fn sign_in(driver: &WebDriver) -> WebDriverResult<()> {
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
    submit(driver, "Sign in").await
}

async fn main_text(driver: &WebDriver) -> WebDriverResult<String> {
    driver.find(By::Tag("main")).await?.text().await
}

async fn a_maintainers_day(reader: Reader, axe: &str) {
    let herald = start_herald().await;
    let origin = herald.origin.clone();
    let service = herald.state.service.clone();
    let (_chromedriver, driver_url) = start_chromedriver();
    let profile = tempfile::tempdir().unwrap();
    let driver = browser(&driver_url, &profile).await;
    let result = async {
        emulate(&driver, &reader).await?;
        driver.goto(format!("{origin}/admin")).await?;
        sign_in(&driver).await?;

        // The menu: on a phone one button that opens large targets; the current page marked.
        if reader.width < 600 {
            let summary = driver.find(By::Css("details.menu > summary")).await?;
            assert!(summary.is_displayed().await?);
            assert!(!driver.find(By::Css("nav.menu-bar")).await?.is_displayed().await?);
            summary.click().await?;
            full_page_screenshot(&driver, reader.width, reader.height, "admin-menu-phone.png").await;
        }
        let current = driver
            .find(By::Css("nav a[aria-current='page']"))
            .await?;
        let shown = driver
            .execute(
                "return [...document.querySelectorAll('nav a[aria-current=page]')].filter(a => a.offsetParent).map(a => [a.textContent, a.getBoundingClientRect().height])",
                vec![],
            )
            .await?;
        let shown: Vec<(String, f64)> = shown.convert().unwrap();
        assert_eq!(shown.len(), 1, "{shown:?}");
        assert_eq!(shown[0].0, "Dashboard");
        assert!(shown[0].1 >= 44.0, "tap target of {} px", shown[0].1);
        drop(current);
        assert_fits(&driver, "the dashboard").await?;
        assert_accessible(&driver, axe, "the dashboard").await?;

        // A date typed while "No date yet" is chosen chooses "At a set time".
        driver.goto(format!("{origin}/admin/maintenances/new")).await?;
        assert_eq!(value_of(&driver, "time_zone").await?, reader.zone);
        driver
            .find(By::Id("title"))
            .await?
            .send_keys("Database cluster migration")
            .await?;
        type_into(&driver, "starts_at", "2030-01-05T02:00").await?;
        type_into(&driver, "ends_at", "2030-01-05T04:00").await?;
        let fixed = driver
            .find(By::Css("input[name='when'][value='fixed']"))
            .await?;
        assert!(fixed.is_selected().await?, "typing a date chooses a set time");
        driver
            .find(By::Id("steps"))
            .await?
            .send_keys("Drain the load balancer\nImport the dump\nSwitch over")
            .await?;
        driver
            .find(By::Css("input[name='component_api']"))
            .await?
            .click()
            .await?;
        assert_fits(&driver, "the new-window form").await?;
        submit(&driver, "Save as draft").await?;
        let run = driver.current_url().await?.to_string();
        let run = run.split('?').next().unwrap().to_owned();
        assert!(main_text(&driver).await?.contains("Saved as a draft"));
        let m = service.maintenance(1).await.unwrap();
        let zone = jiff::tz::TimeZone::get(reader.zone).unwrap();
        let typed = |t: &str| {
            t.parse::<jiff::civil::DateTime>()
                .unwrap()
                .to_zoned(zone.clone())
                .unwrap()
                .timestamp()
        };
        assert_eq!(m.starts_at, Some(typed("2030-01-05T02:00")), "times are in the form's zone");
        assert_eq!(m.ends_at, Some(typed("2030-01-05T04:00")));

        // Announce: the confirmation says where it goes.
        click_button(&driver, "Announce…").await?;
        assert!(
            main_text(&driver)
                .await?
                .contains("It is posted on 2 channels:")
        );
        // A relay in front of Discord answers the announcement 204 without a body: it is
        // delivered once, not posted again and again.
        herald
            .discord
            .push_fault(Fault::NoContent, Some("/messages"));
        submit(&driver, "Yes, announce").await?;
        settled(&herald.state).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(herald.discord.messages().len(), 1, "posted once");
        driver.goto(&run).await?;
        click_button(&driver, "All 2 delivered").await?;
        assert!(
            main_text(&driver)
                .await?
                .contains("cannot be edited later"),
            "a 2xx without a body is delivered"
        );

        // Reopening the schedule shows what was typed, in the reader's zone; saving it again
        // changes nothing and posts nothing.
        let updates_before = service.store().list_updates(1, None).await.unwrap().len();
        click_button(&driver, "Schedule").await?;
        assert_eq!(value_of(&driver, "starts_at").await?, "2030-01-05T02:00");
        assert_eq!(value_of(&driver, "ends_at").await?, "2030-01-05T04:00");
        assert_eq!(value_of(&driver, "time_zone").await?, reader.zone);
        submit(&driver, "Save schedule").await?;
        let again = service.maintenance(1).await.unwrap();
        assert_eq!((again.starts_at, again.ends_at), (m.starts_at, m.ends_at));
        assert_eq!(
            service.store().list_updates(1, None).await.unwrap().len(),
            updates_before,
            "nothing to announce"
        );
        // Only the end moves: the start stays.
        click_button(&driver, "Schedule").await?;
        type_into(&driver, "ends_at", "2030-01-05T05:00").await?;
        submit(&driver, "Save schedule").await?;
        let moved = service.maintenance(1).await.unwrap();
        assert_eq!(moved.starts_at, m.starts_at);
        assert_eq!(moved.ends_at, Some(typed("2030-01-05T05:00")));
        // The timeline shows that time in the reader's zone, as the rest of the page.
        let timeline = driver.find(By::Css("ol.timeline")).await?.text().await?;
        assert!(timeline.contains("05:00"), "{timeline}");

        // "Don't announce": the page changes, the channels hear nothing.
        settled(&herald.state).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let posted = herald.discord.requests().len();
        driver
            .find(By::Id("update-body"))
            .await?
            .send_keys("Backups are verified.")
            .await?;
        driver.find(By::Id("quiet-update")).await?.click().await?;
        submit(&driver, "Post update").await?;
        assert!(main_text(&driver).await?.contains("Backups are verified."));
        settled(&herald.state).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(herald.discord.requests().len(), posted, "nothing posted");

        // An update posted, then corrected from the timeline: Discord's message is edited,
        // Bluesky gets a correction in the thread.
        driver
            .find(By::Id("update-body"))
            .await?
            .send_keys("Backups verified at 02:10.")
            .await?;
        submit(&driver, "Post update").await?;
        settled(&herald.state).await;
        let posts = herald.bluesky.records().len();
        click_button(&driver, "Correct or withdraw…").await?;
        let field = driver.find(By::Css("details.correct[open] textarea")).await?;
        field.clear().await?;
        field.send_keys("Backups verified at 02:15.").await?;
        submit(&driver, "Save correction").await?;
        assert!(main_text(&driver).await?.contains("Backups verified at 02:15."));
        settled(&herald.state).await;
        let edited: Vec<_> = herald
            .discord
            .messages()
            .into_iter()
            .filter(|m| m.content.contains("Backups verified at 02:15."))
            .collect();
        assert_eq!(edited.len(), 1, "{:#?}", herald.discord.messages());
        assert!(edited[0].edits >= 1);
        let records = herald.bluesky.records();
        assert_eq!(records.len(), posts + 1);
        let reply = &records.last().unwrap().value;
        assert!(
            reply["text"]
                .as_str()
                .unwrap()
                .starts_with("📣 Correction: Backups verified at 02:15."),
            "{reply}"
        );
        assert!(reply["reply"]["root"]["uri"].is_string());

        // Start the window; the session ends while the maintainer types a step's note.
        click_button(&driver, "Start…").await?;
        assert!(
            main_text(&driver).await?.contains("starting now starts it early"),
            "the Start confirmation warns of an early start"
        );
        submit(&driver, "Yes, start").await?;
        driver
            .find(By::Id("step-note"))
            .await?
            .send_keys("Load balancer drained.")
            .await?;
        driver.delete_cookie("herald_session").await?;
        submit(&driver, "Start").await?;
        assert!(
            main_text(&driver)
                .await?
                .contains("Your session ended before this was done")
        );
        // The browser logs the sign-in page's 401 (the form was not done): expected here.
        let logged = driver.browser_log().await?;
        assert!(logged.iter().all(|e| e.message.contains("401")), "{logged:?}");
        sign_in(&driver).await?;
        full_page_screenshot(&driver, reader.width, reader.height, &format!("admin-resume-{}.png", reader.name)).await;
        let resume = main_text(&driver).await?;
        assert!(resume.contains("Load balancer drained."), "{resume}");
        submit(&driver, "Send it now").await?;
        assert!(driver.current_url().await?.path().ends_with("/admin/maintenances/1"));
        let page = main_text(&driver).await?;
        assert!(page.contains("Step started."), "{page}");
        assert!(page.contains("Load balancer drained."), "{page}");
        assert_fits(&driver, "the run view").await?;
        assert_accessible(&driver, axe, "the run view").await?;
        full_page_screenshot(&driver, reader.width, reader.height, &format!("admin-run-{}.png", reader.name)).await;

        // A failed current step stays readable.
        click_button(&driver, "Failed…").await?;
        submit(&driver, "Yes, it failed").await?;
        let contrast = driver
            .execute(
                "const m = document.querySelector('.step.step-failed .mark');
                 const s = getComputedStyle(m); return [s.color, s.backgroundColor];",
                vec![],
            )
            .await?;
        let contrast: Vec<String> = contrast.convert().unwrap();
        assert_ne!(contrast[0], contrast[1], "{contrast:?}");
        assert_accessible(&driver, axe, "the run view with a failed step").await?;

        // A new token is shown once, with a Copy button, after a redirect: a reload shows the
        // list without it and makes no second token.
        driver.goto(format!("{origin}/admin/tokens")).await?;
        driver.find(By::Id("name")).await?.send_keys("deploy-bot").await?;
        submit(&driver, "Create token").await?;
        let token = driver.find(By::Id("new-token")).await?.text().await?;
        assert!(token.starts_with("hrld_"));
        assert!(driver.find(By::Css("button[data-copy]")).await?.is_displayed().await?);
        driver.refresh().await?;
        assert!(!main_text(&driver).await?.contains(&token));
        assert_eq!(service.acting(Actor::System).tokens().await.unwrap().len(), 1);

        // A rollout, to look at its pages too.
        service
            .acting(Actor::System)
            .create_rollout(herald::domain::NewRollout {
                title: "Fishjam v1.4.0".into(),
                description: String::new(),
                from_version: Some("v1.3.2".into()),
                to_version: "v1.4.0".into(),
                targets: vec!["fishjam-1".into(), "fishjam-2".into(), "fishjam-3".into()],
                maintenance_id: Some(1),
                progress_deadline: herald::domain::DEFAULT_PROGRESS_DEADLINE,
                stale_after: herald::domain::DEFAULT_STALE_AFTER,
                public_names: true,
                rollback_of: None,
            })
            .await
            .unwrap();
        // The run view with every delivery unfolded still fits.
        driver.goto(&run).await?;
        driver
            .execute(
                "document.querySelectorAll('details').forEach(d => d.open = true)",
                vec![],
            )
            .await?;
        assert_fits(&driver, "the run view, everything unfolded").await?;
        // Previews, deliveries and forms unfolded, in light and dark colours alike.
        assert_accessible(&driver, axe, "the run view, everything unfolded").await?;

        for (path, what) in [
            ("/admin/maintenances/1/edit", "the edit page"),
            ("/admin/maintenances/new", "the new-window form"),
            ("/admin/rollouts/new", "the new-rollout form"),
            ("/admin/rollouts/1", "the rollout view"),
            ("/admin/incidents", "incidents"),
            ("/admin/incidents/1", "a draft incident"),
            ("/admin/password", "the password page"),
            ("/admin/channels", "channels"),
            ("/admin/tokens", "tokens"),
            ("/admin/audit", "the audit log"),
            ("/admin/components", "components"),
            ("/admin/users", "users"),
        ] {
            driver.goto(format!("{origin}{path}")).await?;
            assert_fits(&driver, what).await?;
            assert_accessible(&driver, axe, what).await?;
            full_page_screenshot(
                &driver,
                reader.width,
                reader.height,
                &format!("admin-{}-{}.png", path.trim_start_matches("/admin/").replace('/', "-"), reader.name),
            )
            .await;
        }
        // The channel form shows one kind's fields at a time.
        driver.goto(format!("{origin}/admin/channels")).await?;
        assert!(driver.find(By::Id("secret")).await?.is_displayed().await?);
        assert!(!driver.find(By::Id("target")).await?.is_displayed().await?, "a Discord webhook needs no target");
        driver.find(By::Id("kind-bluesky")).await?.click().await?;
        assert!(driver.find(By::Id("target")).await?.is_displayed().await?);
        assert!(!driver.find(By::Id("mention_role")).await?.is_displayed().await?);
        assert_clean(&driver, &format!("{origin}/")).await;
        WebDriverResult::Ok(())
    }
    .await;
    driver.quit().await.unwrap();
    result.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintainers_day_on_a_phone_in_warsaw() {
    a_maintainers_day(PHONE, &axe_script()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintainers_day_on_a_desktop_in_new_york() {
    a_maintainers_day(DESKTOP, &axe_script()).await;
}
