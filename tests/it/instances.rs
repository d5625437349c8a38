//! Three Herald processes on one PostgreSQL database, as behind a load balancer: the DecAPI
//! window's API calls and a three-target rollout's reports go to them at random, one is
//! SIGKILLed in the middle, and still each announcement reaches Discord and Bluesky exactly
//! once and in order, the reminder goes out once, and every surviving instance's public page
//! shows the final state within a second of the last change.
//!
//! Uses the server in `HERALD_TEST_POSTGRES` when set (as `.ci/test`'s second run does), else
//! starts a throwaway one with `.ci/postgres`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::fake_bluesky::FakeBluesky;
use crate::common::fake_discord::{FakeDiscord, Fault};
use herald::domain::{DeliveryState, Subject};
use herald::store::{Outbox as _, SqlStore};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// A small deterministic generator, seeded from the clock; the seed is printed so a failing
/// spread of calls can be replayed with HERALD_TEST_SEED.
struct Dice(u64);

impl Dice {
    fn new() -> Self {
        let seed = std::env::var("HERALD_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("HERALD_TEST_SEED={seed}");
        Self(seed | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

struct Cluster {
    dir: tempfile::TempDir,
    /// Each instance's log to a file (`herald-N.log` in `dir`) rather than the test's output.
    logs: bool,
    url: String,
    vars: Vec<(String, String)>,
    instances: Vec<(u16, Option<Child>)>,
    token: String,
    client: reqwest::Client,
}

impl Cluster {
    /// Instances to be started on the database at `url`, with a maintainer's API token.
    fn new(dir: tempfile::TempDir, url: String, vars: Vec<(String, String)>) -> Self {
        let mut cluster = Self {
            dir,
            logs: false,
            url,
            vars,
            instances: Vec::new(),
            token: String::new(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        };
        // Commands use a database that exists: make it first, as an operator would.
        let init = cluster.command().args(["db", "init"]).output().unwrap();
        assert!(
            init.status.success(),
            "{}",
            String::from_utf8_lossy(&init.stderr)
        );
        let out = cluster
            .command()
            .args(["token", "create", "deploy", "--role", "maintainer"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        cluster
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
        cmd.current_dir(self.dir.path())
            .env("HERALD_DATABASE_URL", &self.url)
            .env("HERALD_LOG", "warn")
            // One public address for all three, as behind a load balancer.
            .env("HERALD_PUBLIC_URL", "https://status.decapi.me")
            // Each request to the fakes gives up after 500 ms, so a lease lasts 15 s: a dead
            // instance's delivery is taken over within the test's patience.
            .env("HERALD_DELIVERY_TIMEOUT", "500ms")
            .stdin(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
        cmd
    }

    /// Start `n` instances at once and wait until each is ready.
    async fn start(&mut self, n: usize) {
        for i in 0..n {
            let port = crate::common::free_port();
            let mut child = self.command();
            child
                .arg("serve")
                .env("HERALD_LISTEN", format!("127.0.0.1:{port}"))
                .env("HERALD_INSTANCE_ID", format!("herald-{}", i + 1))
                .env("HERALD_SITE_NAME", format!("DecAPI status {}", i + 1))
                .stdout(Stdio::null());
            if self.logs {
                child.stderr(std::fs::File::create(self.log_path(i)).unwrap());
            }
            let child = child.spawn().unwrap();
            self.instances.push((port, Some(child)));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for i in 0..n {
            let port = self.instances[i].0;
            loop {
                // The page carries this instance's own site name, so a neighbour test's server
                // on a reused port is never taken for ours.
                let ours = match self.client.get(self.page_url(i, "/")).send().await {
                    Ok(r) if r.status() == 200 => r
                        .text()
                        .await
                        .is_ok_and(|t| t.contains(&format!("DecAPI status {}", i + 1))),
                    _ => false,
                };
                let ready = ours
                    && self
                        .client
                        .get(format!("http://127.0.0.1:{port}/readyz"))
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200);
                if ready {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "instance {} did not start",
                    i + 1
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    fn log_path(&self, i: usize) -> std::path::PathBuf {
        self.dir.path().join(format!("herald-{}.log", i + 1))
    }

    fn page_url(&self, i: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.instances[i].0)
    }

    fn alive(&self) -> Vec<usize> {
        (0..self.instances.len())
            .filter(|i| self.instances[*i].1.is_some())
            .collect()
    }

    fn kill(&mut self, i: usize) {
        let mut child = self.instances[i].1.take().expect("a running instance");
        kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
        child.wait().unwrap();
    }

    /// An API call to a random live instance.
    async fn api(
        &self,
        dice: &mut Dice,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> Value {
        let alive = self.alive();
        let i = alive[dice.below(alive.len())];
        let r = self
            .client
            .request(method, self.page_url(i, &format!("/api/v1{path}")))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let reply: Value = r.json().await.unwrap_or(Value::Null);
        assert!(
            status.is_success(),
            "{path} on instance {}: {status} {reply}",
            i + 1
        );
        reply
    }

    async fn post(&self, dice: &mut Dice, path: &str, body: Value) -> Value {
        self.api(dice, reqwest::Method::POST, path, body).await
    }

    async fn page(&self, i: usize, path: &str) -> String {
        self.client
            .get(self.page_url(i, path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.instances {
            if let Some(mut child) = child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// What the window's page and the front page say once the window is complete.
const DONE: &str = "Completed";

/// The instance (0-based) holding a delivery's lease, waiting for one to be taken.
async fn holder(url: &str) -> usize {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now_ms = jiff::Timestamp::now().as_millisecond();
        let owner: Option<String> = sqlx::query_scalar(
            "SELECT lease_owner FROM deliveries WHERE state = 'pending' \
             AND lease_until_ms > $1 AND lease_owner IS NOT NULL LIMIT 1",
        )
        .bind(now_ms)
        .fetch_optional(&mut conn)
        .await
        .unwrap();
        if let Some(owner) = owner {
            let n: usize = owner.trim_start_matches("herald-").parse().unwrap();
            return n - 1;
        }
        assert!(Instant::now() < deadline, "no delivery was ever in flight");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_announce_each_event_once_in_order_through_a_sigkill() {
    let pg = crate::common::PostgresServer::get();
    let dir = tempfile::tempdir().unwrap();
    let url =
        crate::common::postgres_database(&pg.url, &format!("{}/cluster", dir.path().display()));
    let discord = FakeDiscord::start().await;
    let bluesky = FakeBluesky::start().await;
    let mut cluster = Cluster::new(
        dir,
        url.clone(),
        crate::common::channel_env(&discord, &bluesky),
    );
    cluster.start(3).await;
    let mut dice = Dice::new();

    // The DecAPI window, dated so that its one reminder (60 s before the start) is due a few
    // seconds from now.
    let starts_at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(64);
    let m = cluster
        .post(
            &mut dice,
            "/maintenances",
            json!({"title": "DecAPI infrastructure migration",
                   "starts_at": starts_at.to_string(),
                   "reminders": [60],
                   "steps": [{"title": "Back up"}, {"title": "Move"}, {"title": "Switch DNS"}]}),
        )
        .await;
    let id = m["id"].as_i64().unwrap();
    cluster
        .post(
            &mut dice,
            &format!("/maintenances/{id}/announce"),
            json!({}),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !bluesky.records().iter().any(|r| {
        r.value["text"]
            .as_str()
            .is_some_and(|t| t.contains("Starts in"))
    }) {
        assert!(Instant::now() < deadline, "the reminder never went out");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Posts hang for a while from here on, so that deliveries are in flight when one instance
    // dies (each fake acts on a hung request after the sender has given up on it).
    let bot = format!("/channels/{}/messages", discord.announcement_channel());
    for _ in 0..3 {
        discord.push_fault(Fault::Hang(Duration::from_millis(1500)), Some(&bot));
        bluesky.push_fault(
            Fault::Hang(Duration::from_millis(1500)),
            Some("createRecord"),
        );
    }
    cluster
        .post(&mut dice, &format!("/maintenances/{id}/start"), json!({}))
        .await;
    for action in ["start", "done"] {
        cluster
            .post(
                &mut dice,
                &format!("/maintenances/{id}/steps/1/{action}"),
                json!({}),
            )
            .await;
    }

    // A Fishjam-style rollout across three targets, reported to any instance.
    let r = cluster
        .post(
            &mut dice,
            "/rollouts",
            json!({"title": "Fishjam v1.4.0", "from_version": "v1.3.2", "to_version": "v1.4.0",
                   "targets": ["fishjam-1", "fishjam-2", "fishjam-3"]}),
        )
        .await;
    let rollout = r["id"].as_i64().unwrap();
    let reports = [
        json!({"state": "draining", "remaining": {"rooms": 2}}),
        json!({"state": "draining", "remaining": {"rooms": 0}}),
        json!({"state": "drained"}),
        json!({"state": "updating"}),
        json!({"state": "healthy", "version": "v1.4.0"}),
    ];
    let mut killed = false;
    for target in ["fishjam-1", "fishjam-2", "fishjam-3"] {
        for report in &reports {
            cluster
                .api(
                    &mut dice,
                    reqwest::Method::PUT,
                    &format!("/rollouts/{rollout}/targets/{target}"),
                    report.clone(),
                )
                .await;
        }
        if !killed {
            // In the middle of it all, an instance dies without a word while it holds a
            // delivery (posts hang, so one is in flight somewhere).
            let victim = holder(&url).await;
            eprintln!("killing instance {}", victim + 1);
            cluster.kill(victim);
            killed = true;
        }
    }

    for (p, action) in [(2, "start"), (2, "done"), (3, "start"), (3, "done")] {
        cluster
            .post(
                &mut dice,
                &format!("/maintenances/{id}/steps/{p}/{action}"),
                json!({}),
            )
            .await;
    }
    cluster
        .post(
            &mut dice,
            &format!("/maintenances/{id}/updates"),
            json!({"body": "All moved."}),
        )
        .await;
    // Every instance has the window's page and the front page cached as they are now.
    for i in cluster.alive() {
        for path in [format!("/maintenance/{id}"), "/".to_owned()] {
            let page = cluster.page(i, &path).await;
            assert!(!page.contains(DONE), "{path}: {page}");
        }
    }
    cluster
        .post(
            &mut dice,
            &format!("/maintenances/{id}/complete"),
            json!({}),
        )
        .await;

    // Every surviving instance shows the final state within a second, whichever took the
    // change: the others hear of it and drop their cached pages.
    let changed = Instant::now();
    for i in cluster.alive() {
        loop {
            let page = cluster.page(i, &format!("/maintenance/{id}")).await;
            let front = cluster.page(i, "/").await;
            if page.contains(DONE) && front.contains(DONE) {
                break;
            }
            assert!(
                changed.elapsed() < Duration::from_secs(1),
                "instance {} still shows the old state after {:?}",
                i + 1,
                changed.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Everything is delivered: the dead instance's leases lapse and a survivor takes over.
    let store = SqlStore::connect(&url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let unsent = store.unsent_deliveries(100).await.unwrap();
        if unsent.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still unsent: {unsent:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for subject in [Subject::Window(id), Subject::Rollout(rollout)] {
        let all = store.list_deliveries(subject).await.unwrap();
        assert!(
            all.iter().all(|d| d.state == DeliveryState::Sent),
            "{all:#?}"
        );
    }

    // Bluesky: the window's thread, one post per event in order, the reminder once; the
    // rollout's own thread: start and completion.
    let records = bluesky.records();
    let texts: Vec<&str> = records
        .iter()
        .map(|r| r.value["text"].as_str().unwrap())
        .collect();
    let window: Vec<usize> = (0..records.len())
        .filter(|i| !texts[*i].contains("Rollout") && !texts[*i].contains("v1.4.0"))
        .collect();
    let expected = [
        "Planned maintenance",
        "Starts in",
        "Started",
        "Step 1 of 3 done",
        "Step 2 of 3 done",
        "Step 3 of 3 done",
        "All moved",
        "Completed",
    ];
    assert_eq!(window.len(), expected.len(), "{texts:#?}");
    for (n, (i, want)) in window.iter().zip(expected).enumerate() {
        assert!(
            texts[*i].contains(want),
            "post {n}: {:?} for {want:?}",
            texts[*i]
        );
        if n > 0 {
            let r = &records[*i];
            assert_eq!(
                r.value["reply"]["root"]["uri"],
                records[window[0]].uri.as_str()
            );
            assert_eq!(
                r.value["reply"]["parent"]["uri"],
                records[window[n - 1]].uri.as_str()
            );
        }
    }
    let rollout_posts: Vec<&str> = (0..records.len())
        .filter(|i| !window.contains(i))
        .map(|i| texts[i])
        .collect();
    assert_eq!(
        rollout_posts.len(),
        2,
        "start and completion: {rollout_posts:#?}"
    );
    assert!(
        rollout_posts[1].contains("Rollout completed"),
        "{rollout_posts:#?}"
    );
    assert!(bluesky.errors().is_empty(), "{:#?}", bluesky.errors());

    // Discord: the window's announcement (edited as it goes), then the reminder, start, update
    // and completion as messages of their own, each once; the rollout's live message and its
    // completion.
    let messages = discord.messages();
    let contents: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
    let once = |needle: &str| {
        let n = contents.iter().filter(|c| c.contains(needle)).count();
        assert_eq!(n, 1, "{needle:?} {n} times: {contents:#?}");
        contents.iter().position(|c| c.contains(needle)).unwrap()
    };
    let (reminder, started, update, complete) = (
        once("starts soon"),
        once("has started"),
        once("All moved"),
        once("is complete"),
    );
    assert!(
        reminder < started && started < update && update < complete,
        "{contents:#?}"
    );
    assert!(once("rolling out v1.4.0") < once("Rollout completed"));
    assert_eq!(messages.len(), 7, "{contents:#?}");
    assert!(
        discord.schema_errors().is_empty(),
        "{:#?}",
        discord.schema_errors()
    );
}

/// PostgreSQL goes away under a running instance (a failover, a restart): `/readyz` says so
/// within seconds while the status page keeps being served as last rendered, a change fails
/// cleanly, and once the database is back the instance is ready and current again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_is_away_readyz_fails_and_the_page_stays() {
    let pg = crate::common::PostgresServer::own();
    let dir = tempfile::tempdir().unwrap();
    let url = crate::common::postgres_database(&pg.url, &format!("{}/away", dir.path().display()));
    let mut cluster = Cluster::new(dir, url, Vec::new());
    cluster.logs = true;
    cluster.start(1).await;
    let mut dice = Dice::new();
    let m = cluster
        .post(
            &mut dice,
            "/maintenances",
            json!({"title": "DecAPI infrastructure migration", "schedule_hint": "this Sunday"}),
        )
        .await;
    let id = m["id"].as_i64().unwrap();
    cluster
        .post(
            &mut dice,
            &format!("/maintenances/{id}/announce"),
            json!({}),
        )
        .await;
    let front = cluster.page(0, "/").await;
    assert!(front.contains("DecAPI infrastructure migration"));
    let readyz = |c: &Cluster| {
        let url = c.page_url(0, "/readyz");
        let client = c.client.clone();
        async move { client.get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(readyz(&cluster).await, 200);

    pg.set_running(false);
    let gone = Instant::now();
    while readyz(&cluster).await != 503 {
        assert!(
            gone.elapsed() < Duration::from_secs(15),
            "/readyz never said unready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The page as last rendered, not an error: its visitors come when things break.
    let r = cluster
        .client
        .get(cluster.page_url(0, "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), front);
    // Known away now: the page answers at once from what was kept, and a page never rendered
    // is a 503 at once, neither waiting for a connection (that took 5 s, the pool's timeout).
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let asked = Instant::now();
        let r = cluster
            .client
            .get(cluster.page_url(0, "/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        slowest = slowest.max(asked.elapsed());
    }
    let asked = Instant::now();
    let r = cluster
        .client
        .get(cluster.page_url(0, "/history"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    slowest = slowest.max(asked.elapsed());
    eprintln!("while the database is away, the slowest answer took {slowest:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "answered without waiting for the database: {slowest:?}"
    );
    // The change notices' connection notices too, within seconds, though the halted server
    // never closed it (it used to take TCP's own time: 30 s and more).
    while !std::fs::read_to_string(cluster.log_path(0))
        .unwrap()
        .contains("change notices interrupted")
    {
        assert!(
            gone.elapsed() < Duration::from_secs(12),
            "the listener did not notice the database away"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A change fails with the API's error shape, not a hang or a half-write.
    let r = cluster
        .client
        .post(cluster.page_url(0, &format!("/api/v1/maintenances/{id}/updates")))
        .bearer_auth(&cluster.token)
        .json(&json!({"body": "Written while away"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        503,
        "an outage is not a bug: 503, to be retried"
    );
    assert_eq!(r.headers()["retry-after"], "5");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    // A page that needs the database says so in words, in the site's frame.
    let r = cluster
        .client
        .get(cluster.page_url(0, "/admin/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    let page = r.text().await.unwrap();
    assert!(
        page.contains("cannot reach its database") && page.contains("DecAPI status 1"),
        "{page}"
    );

    pg.set_running(true);
    let back = Instant::now();
    while readyz(&cluster).await != 200 {
        assert!(
            back.elapsed() < Duration::from_secs(15),
            "/readyz never said ready again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster
        .post(
            &mut dice,
            &format!("/maintenances/{id}/updates"),
            json!({"body": "Written once back"}),
        )
        .await;
    let page = cluster.page(0, &format!("/maintenance/{id}")).await;
    assert!(page.contains("Written once back"), "{page}");
    assert!(!page.contains("Written while away"));
}

/// The setup code an instance's log tells the operator to enter.
fn setup_code_in(log: &str) -> Option<String> {
    log.split("enter the setup code ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|code| {
            code.trim_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_owned()
        })
}

/// Behind a load balancer each request of one browser may reach another instance: the setup
/// code any instance prints works on every one, a session and its CSRF token opened on one are
/// good on the other, and the sign-in limits count attempts on all of them together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_setup_and_their_limits_hold_across_instances() {
    let pg = crate::common::PostgresServer::get();
    let dir = tempfile::tempdir().unwrap();
    let url =
        crate::common::postgres_database(&pg.url, &format!("{}/signin", dir.path().display()));
    let mut cluster = Cluster::new(dir, url.clone(), Vec::new());
    cluster.logs = true;
    cluster.start(2).await;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let form = |i: usize, path: &str, cookie: Option<&str>, pairs: &[(&str, &str)]| {
        let mut r = browser
            .post(cluster.page_url(i, path))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", "https://status.decapi.me")
            .body(crate::common::form_body(pairs));
        if let Some(c) = cookie {
            r = r.header("cookie", format!("__Host-herald_session={c}"));
        }
        r.send()
    };

    // Both instances started before anyone could sign in, and both print the same code.
    let codes: Vec<String> = (0..2)
        .map(|i| {
            let log = std::fs::read_to_string(cluster.log_path(i)).unwrap();
            setup_code_in(&log).unwrap_or_else(|| panic!("no setup code in {log}"))
        })
        .collect();
    assert_eq!(codes[0], codes[1], "each instance made its own setup code");
    let r = form(
        1,
        "/admin/setup",
        None,
        &[
            ("code", "0000"),
            ("name", "ops"),
            ("password", "x"),
            ("again", "x"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 401, "a wrong code is refused");
    let password = "correct horse battery";
    // Submitted on both instances at the same moment: one becomes admin, the other is sent
    // to sign in.
    let setup = |i: usize| {
        form(
            i,
            "/admin/setup",
            None,
            &[
                ("code", &codes[0]),
                ("name", "ops"),
                ("password", password),
                ("again", password),
            ],
        )
    };
    let (a, b) = tokio::join!(setup(0), setup(1));
    let (a, b) = (a.unwrap(), b.unwrap());
    let location = |r: &reqwest::Response| {
        assert_eq!(r.status(), 303);
        r.headers()["location"].to_str().unwrap().to_owned()
    };
    let mut places = [location(&a), location(&b)];
    places.sort();
    assert_eq!(
        places,
        ["/admin", "/admin/login"],
        "not exactly one first admin"
    );
    let (won, r) = if a.headers()["location"] == "/admin" {
        (0, a)
    } else {
        (1, b)
    };
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    let cookie = set
        .strip_prefix("__Host-herald_session=")
        .and_then(|s| s.split(';').next())
        .unwrap_or_else(|| panic!("{set}"))
        .to_owned();
    let other = 1 - won;
    {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(users, 1);
    }
    // The code is spent on every instance.
    let r = browser
        .get(cluster.page_url(0, "/admin/setup"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM setup_code")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(left, 0, "the setup code outlived the first admin");
    }

    // The session opened on one instance is good on the other, and so is its CSRF token.
    let dashboard = || {
        browser
            .get(cluster.page_url(other, "/admin"))
            .header("cookie", format!("__Host-herald_session={cookie}"))
            .send()
    };
    let r = dashboard().await.unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    let csrf = crate::common::csrf_in(&page);
    let r = form(won, "/admin/logout", Some(&cookie), &[("csrf", "forged")])
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a forged CSRF token is refused");
    let r = form(won, "/admin/logout", Some(&cookie), &[("csrf", &csrf)])
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = dashboard().await.unwrap();
    assert_eq!(r.status(), 303, "signed out on one instance, out on all");

    // Five wrong passwords on instance 1 use up this address's tries for the account on
    // instance 2 as well: even the right password waits.
    for _ in 0..5 {
        let r = form(
            0,
            "/admin/login",
            None,
            &[("name", "ops"), ("password", "wrong wrong wrong")],
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = form(
        1,
        "/admin/login",
        None,
        &[("name", "ops"), ("password", password)],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 429, "the limit was counted per instance");

    // A burst spread over both instances checks at most the limit's worth of passwords.
    let burst = (0..60).map(|n| {
        form(
            n % 2,
            "/admin/login",
            None,
            &[("name", "someone"), ("password", "wrong wrong wrong")],
        )
    });
    let statuses: Vec<u16> = futures_util::future::join_all(burst)
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert!(
        (1..=5).contains(&checked),
        "{checked} passwords checked: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
}
