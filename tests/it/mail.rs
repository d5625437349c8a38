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
        let port = crate::common::free_port();
        let out = dir.join("mail.jsonl");
        let mut child = Command::new(crate::ecosystem::python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/ecosystem/smtp_sink.py"
            ))
            .arg(port.to_string())
            .arg(&out)
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
        let r = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/api/v1{path}", self.port))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// Post the subscribe form; the status and the page's text.
    async fn subscribe(&self, pairs: &[(&str, &str)]) -> (u16, String) {
        let r = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/subscribe", self.port))
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

    // Ten posts of the form for one address: one confirmation mail.
    for _ in 0..10 {
        let (status, page) = env
            .subscribe(&[
                ("email", "Ada@Example.org"),
                ("scope", "some"),
                ("components", "api"),
                ("kinds_shown", "1"),
                ("kinds", "maintenance"),
            ])
            .await;
        assert_eq!(status, 200);
        assert!(page.contains("Check your inbox"), "{page}");
    }
    let mails = sink
        .wait_for("the confirmation", 20, |m| !m.is_empty())
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sink.mails().len(), 1, "one confirmation for ten posts");
    let confirmation = &mails[0];
    assert_eq!(confirmation.to, "Ada@example.org");
    assert!(
        confirmation
            .header("Subject")
            .unwrap()
            .contains("Confirm your subscription")
    );

    // An unknown address and a known one get the same page (but the address they typed).
    let (_, unknown) = env.subscribe(&[("email", "nobody@example.org")]).await;
    let (_, known) = env.subscribe(&[("email", "ada@example.org")]).await;
    assert_eq!(
        unknown.replace("nobody@example.org", "X"),
        known.replace("ada@example.org", "X")
    );
    // A malformed address: the field says why and keeps what was typed.
    let (status, page) = env.subscribe(&[("email", "ada@@example")]).await;
    assert_eq!(status, 422);
    assert!(
        page.contains("field-error") && page.contains("value=\"ada@@example\""),
        "{page}"
    );

    // Before confirming, an announcement does not reach Ada.
    let before = announce(&env, &token, "Early window", &["api"]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        sink.mails()
            .iter()
            .all(|m| m.to != "Ada@example.org"
                || m.header("Subject").unwrap().contains("subscription")),
        "nothing but confirmations before confirming"
    );
    let _ = before;

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

    // A window on the API: Ada and Carol, not Bob. Its steps thread under the announcement.
    let id = announce(&env, &token, "API migration", &["api"]).await;
    let mails = sink
        .wait_for("the announcement", 20, |m| {
            m.iter()
                .filter(|m| m.header("Subject").unwrap().contains("API migration"))
                .count()
                >= 2
        })
        .await;
    let about = |m: &Mail| m.header("Subject").unwrap().contains("API migration");
    let mut to: Vec<String> = mails
        .iter()
        .filter(|m| about(m))
        .map(|m| m.to.clone())
        .collect();
    to.sort();
    assert_eq!(to, ["Ada@example.org", "carol@example.org"]);
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
            m.iter().filter(|m| about(m)).count() >= 4
        })
        .await;
    let second = mails.iter().filter(|m| about(m)).nth(2).unwrap();
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

    // Completing the window: Ada only now.
    let count = sink.mails().len();
    env.api(&token, &format!("/maintenances/{id}/complete"), json!({}))
        .await;
    let mails = sink
        .wait_for("the completion", 20, |m| m.len() > count)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after: Vec<String> = sink.mails()[count..].iter().map(|m| m.to.clone()).collect();
    assert_eq!(after, ["Ada@example.org"], "{mails:?}");

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
    // A bouncing address is mailed no more.
    let before = sink.mails().len();
    announce(&env, &token, "Window 4", &[]).await;
    sink.wait_for("window 4", 20, |m| m.len() >= before + 2)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sink.mails().len(), before + 2);
    kill(Pid::from_raw(herald.id() as i32), Signal::SIGTERM).unwrap();
    herald.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_fanout_then_restart_mails_everyone_with_duplicates_only_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(dir.path());
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
    // In flight at the kill: one message per mail worker at most.
    assert!(twice <= 4, "{twice} subscribers got the mail twice");
    assert!(per.values().all(|n| *n <= 2));
    let _ = mails;
    kill(Pid::from_raw(herald.id() as i32), Signal::SIGTERM).unwrap();
    herald.wait().unwrap();
}
