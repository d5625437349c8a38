//! Mail to subscribers, against a real SMTP server (aiosmtpd, `tests/ecosystem/smtp_sink.py`)
//! and the real binary: double opt-in, no enumeration, one confirmation for many posts, mail
//! only for followed components, threading headers, one-click unsubscribe, a deferred address
//! retried and a refusing one marked bouncing, and a SIGKILL in the middle of a fan-out.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herald::store::{SqlStore, Subscribers as _};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// The SMTP server: a child process writing each accepted message as a JSON line.
struct Sink {
    child: Child,
    port: u16,
    out: std::path::PathBuf,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One accepted message.
#[derive(Debug, Clone)]
struct Mail {
    to: String,
    data: String,
}

impl Mail {
    fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or(&self.data);
        let head = head.replace("\r\n ", " ").replace("\n ", " ");
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }

    /// The plain-text part, quoted-printable undone.
    fn text(&self) -> String {
        let decoded = self.data.replace("=\r\n", "").replace("=\n", "");
        let mut out = String::new();
        let bytes = decoded.as_bytes();
        let mut i = 0;
        let mut raw = Vec::new();
        while i < bytes.len() {
            if bytes[i] == b'='
                && i + 2 < bytes.len()
                && let Ok(b) = u8::from_str_radix(&decoded[i + 1..i + 3], 16)
            {
                raw.push(b);
                i += 3;
                continue;
            }
            raw.push(bytes[i]);
            i += 1;
        }
        out.push_str(&String::from_utf8_lossy(&raw));
        out
    }

    /// The first link in the text whose path ends with `suffix` (or any subscriptions link).
    fn link(&self, suffix: &str) -> String {
        let text = self.text();
        text.split_whitespace()
            .find(|w| w.contains("/subscriptions/") && w.ends_with(suffix))
            .unwrap_or_else(|| panic!("no {suffix} link in {text}"))
            .to_owned()
    }
}

impl Sink {
    fn start(dir: &std::path::Path) -> Self {
        Self::start_with(dir, false, 0)
    }

    /// `count`: keep the recipients only; `delay_ms`: each message takes this long.
    fn start_with(dir: &std::path::Path, count: bool, delay_ms: u64) -> Self {
        let port = crate::common::free_port();
        let out = dir.join("mail.jsonl");
        let mut child = Command::new(crate::ecosystem::python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/ecosystem/smtp_sink.py"
            ))
            .arg(port.to_string())
            .arg(&out)
            .args(count.then_some("count"))
            .env("SINK_DELAY_MS", delay_ms.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the SMTP sink");
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the SMTP sink did not start");
        Self { child, port, out }
    }

    fn mails(&self) -> Vec<Mail> {
        let Ok(text) = std::fs::read_to_string(&self.out) else {
            return Vec::new();
        };
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| Mail {
                to: v["to"][0].as_str().unwrap_or_default().to_owned(),
                data: v["data"].as_str().unwrap_or_default().to_owned(),
            })
            .collect()
    }

    /// Wait until `done` holds for the mails, or fail saying `what`.
    async fn wait_for(&self, what: &str, secs: u64, done: impl Fn(&[Mail]) -> bool) -> Vec<Mail> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let mails = self.mails();
            if done(&mails) {
                return mails;
            }
            assert!(Instant::now() < deadline, "{what}: {} mails", mails.len());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

struct Env {
    dir: tempfile::TempDir,
    port: u16,
    smtp: u16,
}

impl Env {
    fn new(sink: &Sink, dir: tempfile::TempDir) -> Self {
        Self {
            dir,
            port: crate::common::free_port(),
            smtp: sink.port,
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
        cmd.current_dir(self.dir.path())
            .env("HERALD_LISTEN", format!("127.0.0.1:{}", self.port))
            .env(
                "HERALD_PUBLIC_URL",
                format!("http://127.0.0.1:{}", self.port),
            )
            .env("HERALD_LOG", "warn")
            .env("HERALD_SITE_NAME", "DecAPI status")
            .env("HERALD_DATABASE_URL", self.url())
            .env(
                "HERALD_SMTP_URL",
                format!("smtp://127.0.0.1:{}?tls=none", self.smtp),
            )
            .env("HERALD_MAIL_FROM", "DecAPI status <status@decapi.example>")
            .env("HERALD_TIMEZONE", "Europe/Berlin")
            // Tests post the form as different clients through X-Forwarded-For.
            .env("HERALD_TRUSTED_PROXIES", "127.0.0.1")
            .stdin(Stdio::null())
            .stderr(Stdio::inherit());
        cmd
    }

    fn url(&self) -> String {
        crate::common::database_url(&self.dir.path().join("data"), "herald.db")
    }

    #[allow(clippy::zombie_processes)]
    async fn start(&self) -> Child {
        let mut child = self
            .command()
            .arg("serve")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = reqwest::get(format!("http://127.0.0.1:{}/readyz", self.port))
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

    fn cli(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn token(&self) -> String {
        self.cli(&["token", "create", "ops", "--role", "admin"])
    }

    async fn api(&self, token: &str, path: &str, body: Value) -> Value {
        self.api_with(reqwest::Method::POST, token, path, body)
            .await
    }

    async fn api_with(
        &self,
        method: reqwest::Method,
        token: &str,
        path: &str,
        body: Value,
    ) -> Value {
        let r = reqwest::Client::new()
            .request(
                method,
                format!("http://127.0.0.1:{}/api/v1{path}", self.port),
            )
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// Post the subscribe form as `client`; the status and the page's text.
    async fn subscribe(&self, client: &str, pairs: &[(&str, &str)]) -> (u16, String) {
        let r = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/subscribe", self.port))
            .header("x-forwarded-for", client)
            .form(pairs)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    fn import(&self, csv: &str) {
        let file = self.dir.path().join("import.csv");
        std::fs::write(&file, csv).unwrap();
        self.cli(&[
            "subscribers",
            "import",
            file.to_str().unwrap(),
            "--confirmed",
        ]);
    }
}

/// A window on `components`, announced.
async fn announce(env: &Env, token: &str, title: &str, components: &[&str]) -> i64 {
    let m = env
        .api(
            token,
            "/maintenances",
            json!({"title": title, "starts_at": "2031-06-01T20:00:00Z", "ends_at": "2031-06-01T22:00:00Z",
                   "components": components, "steps": [{"title": "Back up"}, {"title": "Move"}, {"title": "Switch DNS"}]}),
        )
        .await;
    let id = m["id"].as_i64().unwrap();
    env.api(token, &format!("/maintenances/{id}/announce"), json!({}))
        .await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_confirm_by_mail_get_what_they_follow_in_threads_and_leave_in_one_click() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(dir.path());
    let env = Env::new(&sink, dir);
    let mut herald = env.start().await;
    let token = env.token();
    for (slug, name) in [("api", "API"), ("db", "Database")] {
        env.api(&token, "/components", json!({"slug": slug, "name": name}))
            .await;
    }

    // A confirmed subscriber following everything: what reaches them shows a mail went out
    // (and so what did not reach the others was not sent at all).
    env.import("email,components,kinds,confirmed\ncontrol@example.org,,,true\n");

    // Ten posts of the form for one address, from ten clients: one confirmation mail.
    for n in 0..10 {
        let (status, page) = env
            .subscribe(
                &format!("203.0.113.{n}"),
                &[
                    ("email", "Ada@Example.org"),
                    ("scope", "some"),
                    ("components", "api"),
                    ("kinds_shown", "1"),
                    ("kinds", "maintenance"),
                ],
            )
            .await;
        assert_eq!(status, 200);
        assert!(page.contains("Check your inbox"), "{page}");
    }
    // A mail for someone else, sent after: when it has arrived, Ada's only one had too.
    env.subscribe("198.51.100.1", &[("email", "later@example.org")])
        .await;
    let mails = sink
        .wait_for("the confirmations", 20, |m| {
            m.iter().any(|m| m.to == "later@example.org")
        })
        .await;
    let to_ada: Vec<&Mail> = mails.iter().filter(|m| m.to == "Ada@example.org").collect();
    assert_eq!(to_ada.len(), 1, "one confirmation for ten posts");
    let confirmation = to_ada[0];
    assert_eq!(confirmation.to, "Ada@example.org");
    assert!(
        confirmation
            .header("Subject")
            .unwrap()
            .contains("Confirm your subscription")
    );

    // An unknown address and a known one get the same page (but the address they typed).
    let (s1, unknown) = env
        .subscribe("198.51.100.2", &[("email", "nobody@example.org")])
        .await;
    let (s2, known) = env
        .subscribe("198.51.100.3", &[("email", "ada@example.org")])
        .await;
    assert_eq!((s1, s2), (200, 200));
    assert!(known.contains("Check your inbox"));
    assert_eq!(
        unknown.replace("nobody@example.org", "X"),
        known.replace("ada@example.org", "X")
    );
    // A malformed address: the field says why and keeps what was typed.
    let (status, page) = env
        .subscribe("198.51.100.4", &[("email", "ada@@example")])
        .await;
    assert_eq!(status, 422);
    assert!(
        page.contains("field-error") && page.contains("value=\"ada@@example\""),
        "{page}"
    );
    // One client posting again and again is told to wait, with what it typed kept.
    for _ in 0..herald::service::SUBSCRIBE_PER_ADDRESS {
        assert_eq!(
            env.subscribe("192.0.2.7", &[("email", "flood@example.org")])
                .await
                .0,
            200
        );
    }
    let (status, page) = env
        .subscribe("192.0.2.7", &[("email", "flood@example.org")])
        .await;
    assert_eq!(status, 429);
    assert!(
        page.contains("Too many requests") && page.contains("value=\"flood@example.org\""),
        "{page}"
    );

    // Before confirming, an announcement does not reach Ada (it reaches the control).
    announce(&env, &token, "Early window", &["api"]).await;
    let mails = sink
        .wait_for("the early window", 20, |m| {
            m.iter().any(|m| {
                m.to == "control@example.org"
                    && m.header("Subject").unwrap().contains("Early window")
            })
        })
        .await;
    assert!(
        mails
            .iter()
            .all(|m| m.to != "Ada@example.org"
                || m.header("Subject").unwrap().contains("subscription")),
        "nothing but the confirmation before confirming"
    );

    // The link opens a page with a button (scanners open links); the POST confirms.
    let link = confirmation.link("/confirm");
    let page = reqwest::get(&link).await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(
        page.headers()["cache-control"].to_str().unwrap(),
        "no-store"
    );
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("Confirm my subscription")
    );
    let confirmed = reqwest::Client::new().post(&link).send().await.unwrap();
    assert_eq!(confirmed.status(), 200, "redirected to the manage page");
    assert!(
        confirmed
            .text()
            .await
            .unwrap()
            .contains("You are subscribed")
    );

    // Two more, imported as confirmed: one following the database, one everything.
    env.import(
        "email,components,kinds,confirmed\nbob@example.org,db,,true\ncarol@example.org,,,true\n",
    );

    // A window on the API: Ada, Carol and the control, not Bob. Its steps thread under the announcement.
    let id = announce(&env, &token, "API migration", &["api"]).await;
    let about = |m: &Mail| m.header("Subject").unwrap().contains("API migration");
    let mails = sink
        .wait_for("the announcement to everyone", 20, |m| {
            m.iter().filter(|m| about(m)).count() >= 3
        })
        .await;
    let mut to: Vec<String> = mails
        .iter()
        .filter(|m| about(m))
        .map(|m| m.to.clone())
        .collect();
    to.sort();
    assert_eq!(
        to,
        [
            "Ada@example.org",
            "carol@example.org",
            "control@example.org"
        ]
    );
    let first = mails.iter().find(|m| about(m)).unwrap().clone();
    let root = first.header("Message-ID").unwrap();
    assert!(first.header("In-Reply-To").is_none());
    assert_eq!(
        first.header("List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    let unsubscribe = first.header("List-Unsubscribe").unwrap();
    assert!(
        unsubscribe.starts_with("<http://127.0.0.1:") && unsubscribe.ends_with("/unsubscribe>")
    );
    let text = first.text();
    assert!(
        text.contains("UTC (") && text.contains("CEST"),
        "UTC and the site's zone: {text}"
    );
    assert!(
        text.contains(&format!("/maintenance/{id}")),
        "links to the page: {text}"
    );

    env.api(&token, &format!("/maintenances/{id}/start"), json!({}))
        .await;
    let mails = sink
        .wait_for("the start", 20, |m| {
            m.iter().filter(|m| about(m)).count() >= 6
        })
        .await;
    let second = mails
        .iter()
        .filter(|m| about(m) && m.to == "Ada@example.org")
        .nth(1)
        .unwrap();
    assert_eq!(second.header("In-Reply-To").as_deref(), Some(root.as_str()));
    assert!(second.header("References").unwrap().contains(&root));
    assert_ne!(second.header("Message-ID").unwrap(), root);

    // One-click unsubscribe: a bare POST, no cookie, no CSRF token, as mail providers send it.
    let url = unsubscribe.trim_start_matches('<').trim_end_matches('>');
    let carol_url = mails
        .iter()
        .find(|m| about(m) && m.to == "carol@example.org")
        .unwrap()
        .header("List-Unsubscribe")
        .unwrap();
    let carol_url = carol_url
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned();
    let r = reqwest::Client::new()
        .post(&carol_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = url;
    let store = SqlStore::connect(&env.url()).await.unwrap();
    let left: Vec<String> = store
        .list_subscribers(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.key)
        .collect();
    assert!(!left.contains(&"carol@example.org".to_owned()), "{left:?}");

    // Completing the window: Ada and the control only now.
    let count = sink.mails().len();
    env.api(&token, &format!("/maintenances/{id}/complete"), json!({}))
        .await;
    let mails = sink
        .wait_for("the completion", 20, |m| m.len() >= count + 2)
        .await;
    let mut after: Vec<String> = mails[count..].iter().map(|m| m.to.clone()).collect();
    after.sort();
    assert_eq!(after, ["Ada@example.org", "control@example.org"]);

    kill(Pid::from_raw(herald.id() as i32), Signal::SIGTERM).unwrap();
    herald.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_address_is_retried_and_a_refusing_one_marked_bouncing() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(dir.path());
    let env = Env::new(&sink, dir);
    let mut herald = env.start().await;
    let token = env.token();
    env.import("email,components,kinds,confirmed\ndefer@example.org,,,true\nbounce@example.org,,,true\nok@example.org,,,true\n");
    for n in 0..3 {
        announce(&env, &token, &format!("Window {n}"), &[]).await;
    }
    // The deferred address is refused once per... first attempt, then accepted on a retry.
    let mails = sink
        .wait_for("every window to defer@ and ok@", 40, |m| {
            let n = |to: &str| m.iter().filter(|m| m.to == to).count();
            n("defer@example.org") >= 3 && n("ok@example.org") >= 3
        })
        .await;
    assert!(mails.iter().all(|m| m.to != "bounce@example.org"));
    let store = SqlStore::connect(&env.url()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = store.list_subscribers(0, 10).await.unwrap();
        let bounce = all.iter().find(|s| s.key == "bounce@example.org").unwrap();
        if bounce.bouncing_at.is_some() {
            assert_eq!(bounce.bounces, 3);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bounce@ is not marked bouncing: {bounce:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let counts = store.count_subscribers().await.unwrap();
    assert_eq!(counts.bouncing, 1);
    // A bouncing address is mailed no more: Window 4 reaches the two others, and bounce@ is
    // not tried (the sink would refuse it again, and its count would go past 3).
    announce(&env, &token, "Window 4", &[]).await;
    sink.wait_for("window 4", 20, |m| {
        m.iter()
            .filter(|m| m.header("Subject").unwrap().contains("Window 4"))
            .count()
            >= 2
    })
    .await;
    let all = store.list_subscribers(0, 10).await.unwrap();
    assert_eq!(
        all.iter()
            .find(|s| s.key == "bounce@example.org")
            .unwrap()
            .bounces,
        3
    );
    kill(Pid::from_raw(herald.id() as i32), Signal::SIGTERM).unwrap();
    herald.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_fanout_then_restart_mails_everyone_with_duplicates_only_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    // A server taking 10 ms a message: the kill lands mid fan-out however fast the machine.
    let sink = Sink::start_with(dir.path(), true, 10);
    let env = Env::new(&sink, dir);
    let mut csv = String::from("email,components,kinds,confirmed\n");
    for n in 0..2000 {
        csv.push_str(&format!("s{n}@example.org,,,true\n"));
    }
    let herald = env.start().await;
    let token = env.token();
    env.import(&csv);
    announce(&env, &token, "Big window", &[]).await;
    sink.wait_for("the fan-out to begin", 60, |m| m.len() >= 300)
        .await;
    kill(Pid::from_raw(herald.id() as i32), Signal::SIGKILL).unwrap();
    let mut herald = herald;
    herald.wait().unwrap();
    let at_kill = sink.mails().len();
    assert!(at_kill < 2000, "the fan-out was over before the kill");

    let mut herald = env.start().await;
    let mails = sink
        .wait_for("every subscriber", 180, |m| {
            m.iter()
                .map(|m| m.to.as_str())
                .collect::<std::collections::HashSet<_>>()
                .len()
                >= 2000
        })
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut per: HashMap<String, usize> = HashMap::new();
    for m in sink.mails() {
        *per.entry(m.to).or_default() += 1;
    }
    assert_eq!(per.len(), 2000);
    let twice = per.values().filter(|n| **n > 1).count();
    // In flight at the kill: one message per mail worker at most (twelve).
    assert!(twice <= 12, "{twice} subscribers got the mail twice");
    assert!(per.values().all(|n| *n <= 2));
    let _ = mails;
    kill(Pid::from_raw(herald.id() as i32), Signal::SIGTERM).unwrap();
    herald.wait().unwrap();
}

/// The page as wide as the phone: nothing sticks out sideways.
async fn fits(driver: &thirtyfour::WebDriver) {
    let overflow: i64 = driver
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
            vec![],
        )
        .await
        .unwrap()
        .convert()
        .unwrap();
    assert!(
        overflow <= 0,
        "the page is {overflow} px wider than the phone"
    );
}

/// Wait until the page (after a form's navigation) has a status saying `text`.
async fn wait_for_status(driver: &thirtyfour::WebDriver, text: &str) {
    use thirtyfour::prelude::*;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(status) = driver.find(By::Css("[role=status]")).await
            && status.text().await.is_ok_and(|t| t.contains(text))
        {
            return;
        }
        assert!(Instant::now() < deadline, "no status saying {text:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Keep a screenshot for docs/ as well as the test's folder.
async fn keep(driver: &thirtyfour::WebDriver, name: &str) {
    let path = crate::browser::full_page_screenshot(driver, 390, 844, name).await;
    std::fs::copy(
        &path,
        format!("{}/docs/screenshot-{name}", env!("CARGO_MANIFEST_DIR")),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_subscribes_from_a_phone_confirms_and_chooses_components() {
    use thirtyfour::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(dir.path());
    let env = Env::new(&sink, dir);
    let mut herald = env.start().await;
    let token = env.token();
    for (slug, name) in [("api", "API"), ("db", "Database"), ("web", "Website")] {
        env.api(&token, "/components", json!({"slug": slug, "name": name}))
            .await;
    }
    let origin = format!("http://127.0.0.1:{}/", env.port);
    let (_chromedriver, driver_url) = crate::browser::start_chromedriver();
    let profile = tempfile::tempdir().unwrap();
    let driver = crate::browser::browser(&driver_url, &profile).await;
    let result = async {
        driver
            .cdp()
            .send_raw(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": true}),
            )
            .await?;
        driver.goto(&origin).await?;
        let field = driver.find(By::Id("subscribe-email")).await?;
        field.scroll_into_view().await?;
        fits(&driver).await;
        keep(&driver, "mail-form-phone.png").await;
        field.send_keys("reader@example.org").await?;
        driver
            .find(By::Css("form.mail-form button[type=submit]"))
            .await?
            .click()
            .await?;
        wait_for_status(&driver, "Check your inbox").await;
        fits(&driver).await;
        keep(&driver, "mail-sent-phone.png").await;

        // The link from the mail, then the button on its page.
        let mails = sink.wait_for("the confirmation", 20, |m| !m.is_empty()).await;
        driver.goto(&mails[0].link("/confirm")).await?;
        driver
            .find(By::XPath("//button[normalize-space()='Confirm my subscription']"))
            .await?
            .click()
            .await?;
        wait_for_status(&driver, "You are subscribed").await;

        // Only the API and the database, from now on.
        driver
            .find(By::Css("input[name=scope][value=some]"))
            .await?
            .click()
            .await?;
        for slug in ["api", "db"] {
            driver
                .find(By::Css(format!("input[name=components][value={slug}]")))
                .await?
                .click()
                .await?;
        }
        fits(&driver).await;
        keep(&driver, "mail-manage-phone.png").await;
        driver
            .find(By::XPath("//button[normalize-space()='Save']"))
            .await?
            .click()
            .await?;
        wait_for_status(&driver, "Saved.").await;
        let checked: Vec<String> = driver
            .execute(
                "return [...document.querySelectorAll('input[name=components]:checked')].map(e => e.value)",
                vec![],
            )
            .await?
            .convert()?;
        assert_eq!(checked, ["api", "db"]);
        crate::browser::assert_clean(&driver, &origin).await;
        Ok::<_, WebDriverError>(())
    }
    .await;
    driver.quit().await.unwrap();
    result.unwrap();

    let store = SqlStore::connect(&env.url()).await.unwrap();
    let s = store.list_subscribers(0, 10).await.unwrap().remove(0);
    assert!(s.confirmed_at.is_some());
    assert_eq!(s.preferences.components.map(|c| c.len()), Some(2));
    kill(Pid::from_raw(herald.id() as i32), Signal::SIGTERM).unwrap();
    herald.wait().unwrap();
}

/// A window's mail as the email channel queues it (only what folding looks at differs).
fn window_mail(n: u32, folds: bool) -> herald::domain::NewMail {
    herald::domain::NewMail {
        purpose: herald::domain::MailPurpose::News(herald::domain::MailKind::Maintenance),
        subscriber_id: None,
        thread: Some("window.1".into()),
        components: vec![],
        subject: format!("event {n}"),
        text: format!("event {n}"),
        html: format!("<p>event {n}</p>"),
        message_id: format!("<m{n}@test>"),
        root_id: "<root@test>".into(),
        folds,
    }
}

#[tokio::test]
async fn steps_that_come_fast_fold_into_one_mail_and_the_next_event_takes_them_along() {
    use herald::store::MailQueue as _;
    let app = crate::common::TestApp::new().await;
    let store = SqlStore::connect(&app.url).await.unwrap();
    let t0 = jiff::Timestamp::from_second(1_900_000_000).unwrap();
    let at = |s: i64| t0 + jiff::SignedDuration::from_secs(s);
    let ms = |s: i64| at(s).as_millisecond();
    let audit = herald::domain::NewAudit {
        actor: "test".into(),
        action: "subscribers.import".into(),
        target: None,
        at: t0,
    };
    store
        .import_subscribers(
            &[herald::domain::NewSubscriber {
                address: herald::domain::EmailAddress::parse("a@example.org").unwrap(),
                preferences: herald::domain::Preferences::default(),
                confirmed: true,
            }],
            t0,
            &audit,
        )
        .await
        .unwrap();
    let lease = 60_000;

    // The announcement goes at once; the thread's first mail is its root.
    let announced = store
        .queue_event_mail(1, &window_mail(1, false), at(0))
        .await
        .unwrap();
    let b = store
        .claim_mail_batch("i", ms(0), lease, 200)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.fanout_id, announced);
    let f = store.mail_fanout(announced).await.unwrap().unwrap();
    assert_eq!(f.message_id, "<root@test>");
    store.mail_batch_done(b.id, "i", at(1)).await.unwrap();

    // Two steps within three minutes of it: one mail, not yet due.
    let step = store
        .queue_event_mail(2, &window_mail(2, true), at(10))
        .await
        .unwrap();
    assert_ne!(step, announced);
    assert_eq!(
        store
            .queue_event_mail(3, &window_mail(3, true), at(20))
            .await
            .unwrap(),
        step
    );
    // The same delivery again (a retry after a crash) adds nothing.
    assert_eq!(
        store
            .queue_event_mail(3, &window_mail(3, true), at(21))
            .await
            .unwrap(),
        step
    );
    assert!(
        store
            .claim_mail_batch("i", ms(30), lease, 200)
            .await
            .unwrap()
            .is_none()
    );
    let f = store.mail_fanout(step).await.unwrap().unwrap();
    assert_eq!(f.text, "event 2\nevent 3");
    assert_eq!(f.in_reply_to.as_deref(), Some("<root@test>"));

    // The window completes before they went: everything goes now, in one mail.
    assert_eq!(
        store
            .queue_event_mail(4, &window_mail(4, false), at(40))
            .await
            .unwrap(),
        step
    );
    let b = store
        .claim_mail_batch("i", ms(41), lease, 200)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.fanout_id, step);
    let f = store.mail_fanout(step).await.unwrap().unwrap();
    assert_eq!(f.text, "event 2\nevent 3\nevent 4");
    assert_eq!(f.subject, "event 4");
    store.mail_batch_done(b.id, "i", at(42)).await.unwrap();

    // A step after that mail began: a new one, three minutes after the one before was made.
    let late = store
        .queue_event_mail(5, &window_mail(5, true), at(50))
        .await
        .unwrap();
    assert_ne!(late, step);
    assert!(
        store
            .claim_mail_batch("i", ms(185), lease, 200)
            .await
            .unwrap()
            .is_none()
    );
    let b = store
        .claim_mail_batch("i", ms(190), lease, 200)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.fanout_id, late);
    let f = store.mail_fanout(late).await.unwrap().unwrap();
    assert_eq!(f.references.as_deref(), Some("<root@test> <m2@test>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_and_rollouts_reach_the_subscribers_who_chose_them() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(dir.path());
    let env = Env::new(&sink, dir);
    let mut herald = env.start().await;
    let token = env.token();
    for (slug, name) in [("api", "API"), ("db", "Database")] {
        env.api(&token, "/components", json!({"slug": slug, "name": name}))
            .await;
    }
    // A batch goes in id order: once the last (everything) has a mail, the others were
    // handled.
    env.import(
        "email,components,kinds,confirmed\n\
         inc@example.org,api,incidents,true\n\
         dbinc@example.org,db,incidents,true\n\
         maint@example.org,,maintenance,true\n\
         roll@example.org,,rollouts,true\n\
         all@example.org,,,true\n",
    );
    let subject_to = |mails: &[Mail], to: &str, part: &str| {
        mails
            .iter()
            .filter(|m| m.to == to && m.header("Subject").unwrap().contains(part))
            .cloned()
            .collect::<Vec<Mail>>()
    };

    // An incident opened by hand (not by a monitor) on the API, then resolved.
    let incident = env
        .api(
            &token,
            "/incidents",
            json!({"title": "API errors on writes", "body": "Some writes fail.", "impact": "major",
                   "components": [{"slug": "api", "status": "partial_outage"}]}),
        )
        .await;
    let id = incident["id"].as_i64().unwrap();
    // Resolved once the opening went out (an update arriving before its thread's mail began
    // would join that mail, as steps do).
    sink.wait_for("the incident's opening", 30, |m| {
        !subject_to(m, "all@example.org", "API errors on writes").is_empty()
    })
    .await;
    env.api(
        &token,
        &format!("/incidents/{id}/resolve"),
        json!({"body": "Writes work again."}),
    )
    .await;
    let mails = sink
        .wait_for("the incident's two mails", 30, |m| {
            subject_to(m, "all@example.org", "API errors on writes").len() >= 2
        })
        .await;
    let to_inc = subject_to(&mails, "inc@example.org", "API errors on writes");
    assert_eq!(to_inc.len(), 2, "the opening and the resolution");
    assert!(to_inc[0].text().contains("Some writes fail."));
    assert!(to_inc[0].text().contains(&format!("/incidents/{id}")));
    assert_eq!(
        to_inc[1].header("In-Reply-To"),
        to_inc[0].header("Message-ID"),
        "the resolution answers the opening"
    );
    for other in ["dbinc@example.org", "maint@example.org", "roll@example.org"] {
        assert!(
            subject_to(&mails, other, "API errors").is_empty(),
            "{other} did not choose this"
        );
    }

    // A rollout starts with its first report.
    let rollout = env
        .api(
            &token,
            "/rollouts",
            json!({"title": "Fishjam v1.4.0", "from_version": "v1.3.2", "to_version": "v1.4.0",
                   "targets": ["fishjam-1", "fishjam-2"]}),
        )
        .await;
    let rid = rollout["id"].as_i64().unwrap();
    env.api_with(
        reqwest::Method::PUT,
        &token,
        &format!("/rollouts/{rid}/targets/fishjam-1"),
        json!({"state": "draining", "remaining": {"rooms": 2}}),
    )
    .await;
    let mails = sink
        .wait_for("the rollout's start", 30, |m| {
            !subject_to(m, "all@example.org", "Rollout: Fishjam").is_empty()
        })
        .await;
    assert_eq!(
        subject_to(&mails, "roll@example.org", "Rollout: Fishjam").len(),
        1
    );
    for other in ["inc@example.org", "dbinc@example.org", "maint@example.org"] {
        assert!(subject_to(&mails, other, "Rollout").is_empty(), "{other}");
    }
    kill(Pid::from_raw(herald.id() as i32), Signal::SIGTERM).unwrap();
    herald.wait().unwrap();
}
