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

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_chromedriver() -> (Driver, String) {
    let port = free_port();
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
    let url = format!("sqlite://{}/herald.db", dir.path().display());
    let mut settings = Settings::for_database(&url);
    settings.site_name = "DecAPI status".into();
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

fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn browser(driver_url: &str, profile: &tempfile::TempDir) -> WebDriver {
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
async fn full_page_screenshot(driver: &WebDriver, width: u32, height: u32, name: &str) -> PathBuf {
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

async fn assert_clean(driver: &WebDriver, origin: &str) {
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
