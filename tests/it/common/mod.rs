//! Test helpers: a `TestApp` on a real SQLite file (or PostgreSQL database, see
//! [`database_url`]) with a clock the test moves, and small
//! request helpers for the router.
#![allow(dead_code)]

pub mod fake_bluesky;
pub mod fake_discord;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use herald::config::Settings;
use herald::domain::{
    Impact, Maintenance, NewComponent, NewMaintenance, NewStep, Schedule, StepAction, WindowAction,
};
use herald::service::Service;
use herald::store::{SqlStore, Store};
use herald::web::{AppState, router};
use jiff::{SignedDuration, Timestamp};
use tower::ServiceExt;

pub struct TestApp {
    pub dir: tempfile::TempDir,
    /// The app's database (SQLite file or PostgreSQL database).
    pub url: String,
    pub service: Service,
    pub state: AppState,
    pub router: Router,
    clock: Arc<AtomicI64>,
    pub start: Timestamp,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("utf-8 body")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl TestApp {
    /// A test app whose live rollout messages fold refreshes 200 ms apart (production: 10 s),
    /// so tests settle quickly.
    pub async fn new() -> Self {
        Self::with_fold(std::time::Duration::from_millis(200)).await
    }

    pub async fn with_fold(fold: std::time::Duration) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = database_url(&dir.path().join("nested"), "herald.db");
        Self::open(dir, url, fold).await
    }

    /// A test app on a SQLite file whatever `HERALD_TEST_POSTGRES` says, for what only
    /// SQLite has (its file, its table rebuilds).
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/nested/herald.db", dir.path().display());
        Self::open(dir, url, std::time::Duration::from_millis(200)).await
    }

    async fn open(dir: tempfile::TempDir, url: String, fold: std::time::Duration) -> Self {
        let store = SqlStore::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        let start = Timestamp::from_second(1_780_000_000).unwrap();
        let clock = Arc::new(AtomicI64::new(start.as_second()));
        let service = Service::with_clock(Arc::new(store), {
            let clock = clock.clone();
            Arc::new(move || Timestamp::from_second(clock.load(Ordering::SeqCst)).unwrap())
        })
        .with_rollout_fold(fold);
        let mut settings = Settings::for_database(&url);
        // The fake Discord and Bluesky listen on 127.0.0.1.
        settings.announce.allow_private_targets = true;
        settings.site_name = "DecAPI status".into();
        // Fault tests make servers hang: give up on a request quickly.
        settings.announce.delivery_timeout = std::time::Duration::from_secs(1);
        let state = AppState::new(service.clone(), settings);
        let router = router(state.clone());
        Self {
            dir,
            url,
            service,
            state,
            router,
            clock,
            start,
        }
    }

    /// Move the clock to `minutes` after the test's start.
    pub fn at(&self, minutes: i64) {
        let t = self.start + SignedDuration::from_mins(minutes);
        self.clock.store(t.as_second(), Ordering::SeqCst);
    }

    pub fn time(&self, minutes: i64) -> Timestamp {
        self.start + SignedDuration::from_mins(minutes)
    }

    pub async fn request(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        self.send(request.body(Body::empty()).unwrap()).await
    }

    /// Send a request through the router, as the HTTP workers do, and collect the whole reply.
    pub async fn send(&self, request: Request<Body>) -> Reply {
        Self::collect(self.router.clone().oneshot(request).await.unwrap()).await
    }

    async fn collect(response: axum::response::Response) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// `/metrics` as a scraper on this machine reads it.
    pub async fn metrics(&self) -> Reply {
        let mut request = Request::builder()
            .uri("/metrics")
            .body(Body::empty())
            .unwrap();
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
                [127, 0, 0, 1],
                40000,
            ))));
        self.send(request).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, &[]).await
    }

    pub async fn component(&self, slug: &str, name: &str) -> i64 {
        self.service
            .create_component(NewComponent {
                slug: slug.into(),
                name: name.into(),
                description: None,
                group_name: None,
            })
            .await
            .unwrap()
            .id
    }

    /// A draft with `steps` steps affecting `components`.
    pub async fn window(
        &self,
        title: &str,
        schedule: Schedule,
        steps: usize,
        components: Vec<i64>,
    ) -> Maintenance {
        self.service
            .create_maintenance(NewMaintenance {
                title: title.into(),
                description: "Moving the **database** to a cluster.".into(),
                impact: Impact::Minor,
                schedule,
                component_ids: components,
                steps: (1..=steps)
                    .map(|i| NewStep {
                        title: format!("Step number {i}"),
                        description: None,
                    })
                    .collect(),
                automation: Default::default(),
            })
            .await
            .unwrap()
    }

    pub async fn act(&self, id: i64, action: WindowAction) -> Maintenance {
        self.service.window_action(id, action, None).await.unwrap()
    }

    pub async fn step(&self, id: i64, position: i64, action: StepAction) -> Maintenance {
        self.service
            .step_action(id, position, action, None)
            .await
            .unwrap()
    }
}

impl TestApp {
    /// A JSON request to the API with an optional bearer token; the body as JSON (Null if empty).
    pub async fn api(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (StatusCode, serde_json::Value, HeaderMap) {
        self.api_with(method, path, token, body, &[]).await
    }

    /// [`TestApp::api`] with more request headers.
    pub async fn api_with(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, serde_json::Value, HeaderMap) {
        let mut request = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let body = match body {
            Some(v) => {
                request = request.header("content-type", "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let response = self
            .router
            .clone()
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let json = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{path}: not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        (status, json, headers)
    }

    pub async fn token(&self, role: herald::domain::Role) -> String {
        self.service
            .create_token("test", role)
            .await
            .unwrap()
            .secret
            .expose()
            .to_owned()
    }
}

/// `application/x-www-form-urlencoded` for test forms.
pub fn form_body(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_owned(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The CSRF token a signed-in page's forms carry.
pub fn csrf_in(page: &str) -> String {
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no CSRF token in {page}"))
        .to_owned()
}

/// A signed-in browser: its session cookie and the CSRF token its pages carry.
pub struct Browser {
    pub cookie: String,
    pub csrf: String,
}

impl TestApp {
    pub async fn user(&self, name: &str, role: herald::domain::Role) {
        self.service
            .add_user(name, "correct horse battery", role)
            .await
            .unwrap();
    }

    pub async fn post_form(
        &self,
        path: &str,
        cookie: Option<&str>,
        pairs: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            request = request.header("cookie", format!("herald_session={c}"));
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        self.send(request.body(Body::from(form_body(pairs))).unwrap())
            .await
    }

    /// Follow a form's redirect (`303`) as a browser does: a GET of its `Location` with the
    /// session and the one-time cookies the redirect set. Anything else is returned as it is.
    pub async fn follow(&self, reply: Reply, cookie: &str) -> Reply {
        if reply.status != StatusCode::SEE_OTHER {
            return reply;
        }
        let location = reply
            .header("location")
            .expect("a redirect has a Location")
            .to_owned();
        let mut cookies = vec![format!("herald_session={cookie}")];
        for set in reply.headers.get_all("set-cookie") {
            let pair = set.to_str().unwrap().split(';').next().unwrap().to_owned();
            cookies.push(pair);
        }
        self.request(Method::GET, &location, &[("cookie", &cookies.join("; "))])
            .await
    }

    /// `post_form` as a signed-in browser, following the redirect that answers it.
    pub async fn submit(&self, path: &str, cookie: &str, pairs: &[(&str, &str)]) -> Reply {
        let reply = self.post_form(path, Some(cookie), pairs, &[]).await;
        self.follow(reply, cookie).await
    }

    pub async fn get_as(&self, path: &str, cookie: &str) -> Reply {
        let cookie = format!("herald_session={cookie}");
        self.request(Method::GET, path, &[("cookie", &cookie)])
            .await
    }

    /// Sign in through the login form and read the CSRF token off the dashboard.
    pub async fn sign_in(&self, name: &str) -> Browser {
        let r = self
            .post_form(
                "/admin/login",
                None,
                &[
                    ("name", name),
                    ("password", "correct horse battery"),
                    ("next", "/admin"),
                ],
                &[],
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
        let set = r.header("set-cookie").unwrap().to_owned();
        let cookie = set
            .strip_prefix("herald_session=")
            .and_then(|s| s.split(';').next())
            .unwrap()
            .to_owned();
        let page = self.get_as("/admin", &cookie).await.text();
        Browser {
            cookie,
            csrf: csrf_in(&page),
        }
    }
}

/// The outbox workers of a [`TestApp`], stopped through the same token as in production.
pub struct Outbox {
    pub token: tokio_util::sync::CancellationToken,
    pub tracker: tokio_util::task::TaskTracker,
}

impl Outbox {
    pub async fn stop(self) {
        self.token.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl TestApp {
    /// The DecAPI window: announced tentative, then run through its six steps with an update
    /// after the third, then completed. Returns the window id.
    pub async fn run_decapi(&self, title: &str, components: Vec<i64>) -> i64 {
        let m = self
            .window(
                title,
                Schedule::Tentative {
                    hint: Some("this Sunday or within two weeks".into()),
                },
                6,
                components,
            )
            .await;
        self.act(m.id, WindowAction::Announce).await;
        self.act(m.id, WindowAction::Start).await;
        for p in 1..=6 {
            self.step(m.id, p, StepAction::Start).await;
            self.step(m.id, p, StepAction::Done).await;
            if p == 3 {
                self.service
                    .post_update(m.id, "Halfway: the database moved without trouble.")
                    .await
                    .unwrap();
            }
        }
        self.act(m.id, WindowAction::Complete).await;
        m.id
    }

    /// Start the announcement workers on this runtime.
    pub fn start_outbox(&self) -> Outbox {
        let token = tokio_util::sync::CancellationToken::new();
        let tracker = tokio_util::task::TaskTracker::new();
        herald::server::spawn_outbox(&self.state, &tracker, &token)
            .expect("outbox and mail workers");
        Outbox { token, tracker }
    }

    pub async fn add_channel(&self, new: herald::domain::NewChannel) -> herald::domain::Channel {
        self.service.create_channel(new).await.unwrap()
    }

    /// Wait until no delivery is pending (sent, failed or skipped), at most `secs` seconds.
    pub async fn settle(&self, secs: u64) -> Vec<herald::domain::Delivery> {
        self.settle_except(secs, None).await
    }

    /// Like [`settle`](Self::settle), ignoring what waits on channel `held`.
    pub async fn settle_except(
        &self,
        secs: u64,
        held: Option<i64>,
    ) -> Vec<herald::domain::Delivery> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let unsent = self.service.unsent_deliveries(1000).await.unwrap();
            let pending: Vec<_> = unsent
                .iter()
                .filter(|d| d.state == herald::domain::DeliveryState::Pending)
                .filter(|d| Some(d.channel_id) != held)
                .cloned()
                .collect();
            if pending.is_empty() {
                return unsent;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "deliveries still pending after {secs} s: {unsent:#?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// The environment that points a `herald serve` process's channels at the fake Discord (a
/// bot posting to its announcement channel) and the fake Bluesky.
pub fn channel_env(
    discord: &fake_discord::FakeDiscord,
    bluesky: &fake_bluesky::FakeBluesky,
) -> Vec<(String, String)> {
    vec![
        // The fakes listen on 127.0.0.1.
        ("HERALD_ALLOW_PRIVATE_TARGETS".into(), "true".into()),
        ("HERALD_DISCORD_BOT_TOKEN".into(), discord.bot_token()),
        (
            "HERALD_DISCORD_CHANNEL_ID".into(),
            discord.announcement_channel().to_string(),
        ),
        (
            "HERALD_DISCORD_API_URL".into(),
            format!("{}/api/v10", discord.base()),
        ),
        ("HERALD_BLUESKY_IDENTIFIER".into(), bluesky.handle()),
        ("HERALD_BLUESKY_APP_PASSWORD".into(), bluesky.password()),
        ("HERALD_BLUESKY_PDS_URL".into(), bluesky.url()),
    ]
}

/// A PostgreSQL server: the one the suite was given, or one of our own, stopped on drop.
pub struct PostgresServer {
    pub url: String,
    own: Option<String>,
}

impl PostgresServer {
    pub fn get() -> Self {
        if let Ok(url) = std::env::var("HERALD_TEST_POSTGRES")
            && !url.is_empty()
        {
            return Self { url, own: None };
        }
        Self::own()
    }

    /// A server of this test's own, whatever `HERALD_TEST_POSTGRES` says (for a test that
    /// stops it).
    pub fn own() -> Self {
        let out = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/postgres"))
            .stderr(Stdio::inherit())
            .output()
            .expect("running .ci/postgres");
        assert!(out.status.success(), ".ci/postgres failed");
        let out = String::from_utf8(out.stdout).unwrap();
        let mut lines = out.lines();
        let url = lines.next().expect("the server's URL").to_owned();
        let dir = lines.next().expect("the server's folder").to_owned();
        Self {
            url,
            own: Some(dir),
        }
    }
}

impl PostgresServer {
    /// Stop the server (of [`PostgresServer::own`]) keeping its data, or start it again.
    pub fn set_running(&self, running: bool) {
        let dir = self.own.as_ref().expect("a server of our own");
        let status = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/postgres"))
            .args([if running { "resume" } else { "halt" }, dir])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if let Some(dir) = &self.own {
            let _ = Command::new("bash")
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/postgres"))
                .args(["stop", dir])
                .status();
        }
    }
}

/// The database a test keeps in `dir` under `name`: a SQLite file there, or, when
/// `HERALD_TEST_POSTGRES` holds a PostgreSQL server's URL (as `.ci/test` sets for its second
/// run), a database of its own on that server, made on first use. The same `dir` and `name`
/// give the same database, so a test can open it again or hand it to a `herald` process.
pub fn database_url(dir: &std::path::Path, name: &str) -> String {
    let server = match std::env::var("HERALD_TEST_POSTGRES") {
        Ok(server) if !server.is_empty() => server,
        _ => return format!("sqlite://{}/{name}", dir.display()),
    };
    postgres_database(&server, &format!("{}/{name}", dir.display()))
}

/// A database on the PostgreSQL server at `server` (a URL of its `postgres` database) for
/// `key`, made on first use; the same key gives the same database.
pub fn postgres_database(server: &str, key: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key);
    let db: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let db = format!("herald_test_{db}");
    let (base, _) = server
        .rsplit_once('/')
        .expect("a postgres:// URL with a database");
    // Its own thread and runtime: callers may be synchronous or inside a runtime.
    std::thread::spawn({
        let (server, db) = (server.to_owned(), db.clone());
        move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    use sqlx::{Connection, Executor};
                    let mut conn = sqlx::PgConnection::connect(&server).await.unwrap();
                    match conn.execute(format!("CREATE DATABASE {db}").as_str()).await {
                        Ok(_) => {}
                        // 42P04: made by an earlier call.
                        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
                        Err(e) => panic!("cannot make the test database {db}: {e}"),
                    }
                })
        }
    })
    .join()
    .unwrap();
    format!("{base}/{db}")
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One Bluesky thread as stored, in order, each post as `(record, uri, cid)`: the root links a
/// card to `page`, every later post replies to the one before; texts within 300 graphemes and
/// 3000 bytes; the one link facet covers exactly the link text; `langs` as configured.
pub fn check_bluesky_thread(
    posts: &[(serde_json::Value, String, String)],
    page: &str,
    langs: serde_json::Value,
) {
    use unicode_segmentation::UnicodeSegmentation;
    let (root, root_uri, root_cid) = &posts[0];
    assert_eq!(root["embed"]["$type"], "app.bsky.embed.external");
    assert_eq!(root["embed"]["external"]["uri"], page);
    assert!(root.get("reply").is_none());
    for (i, (r, _, _)) in posts.iter().enumerate() {
        let text = r["text"].as_str().unwrap();
        assert!(text.graphemes(true).count() <= 300, "{text}");
        assert!(text.len() <= 3000);
        assert_eq!(r["$type"], "app.bsky.feed.post");
        assert_eq!(r["langs"], langs);
        let facets = r["facets"].as_array().unwrap();
        assert_eq!(facets.len(), 1);
        let start = facets[0]["index"]["byteStart"].as_u64().unwrap() as usize;
        let end = facets[0]["index"]["byteEnd"].as_u64().unwrap() as usize;
        let shown = page.trim_start_matches("http://");
        assert_eq!(&text.as_bytes()[start..end], shown.as_bytes(), "{text}");
        assert_eq!(facets[0]["features"][0]["uri"], page);
        if i > 0 {
            let (_, parent_uri, parent_cid) = &posts[i - 1];
            assert_eq!(r["reply"]["root"]["uri"], root_uri.as_str());
            assert_eq!(r["reply"]["root"]["cid"], root_cid.as_str());
            assert_eq!(r["reply"]["parent"]["uri"], parent_uri.as_str());
            assert_eq!(r["reply"]["parent"]["cid"], parent_cid.as_str());
        }
    }
}
