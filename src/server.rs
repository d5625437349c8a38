//! The process: open the store, build the app, serve, and shut down gracefully. One
//! cancellation token stops the server and every background task; the first signal turns
//! `/readyz` to 503, a second one (or the drain timeout) forces the exit.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use std::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::Settings;
use crate::domain::{
    ChannelKind, ChannelSecret, NewChannel, NewComponent, default_events, default_milestones,
};
use crate::notify::{NotifySettings, Outbox};
use crate::service::Service;
use crate::store::{SqlStore, Store};
use crate::web::AppState;

/// Open the database the URL names and bring its schema up to date.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    let url = &settings.database_url;
    let store = SqlStore::connect(url.expose())
        .await
        .with_context(|| format!("cannot open the database {url}"))?;
    store
        .migrate()
        .await
        .with_context(|| format!("cannot migrate the database {url}"))?;
    Ok(Arc::new(store))
}

/// Build everything `herald serve` runs, ready to serve: store, configured components, demo data.
pub async fn build(settings: &Settings, demo: bool) -> anyhow::Result<AppState> {
    let mut service = Service::new(open_store(settings).await?)
        .with_delivery_deadline(settings.announce.delivery_deadline)
        .with_rollout_fold(settings.announce.rollout_edit_interval);
    if settings.mail.smtp_url.is_some() {
        service = service.with_mail(crate::service::MailIdentity {
            site_name: settings.site_name.clone(),
            domain: crate::notify::mail::domain_of(settings.mail.from.as_deref()),
        });
    }
    service
        .link_key()
        .await
        .context("reading the key of subscribers' links")?;
    for c in &settings.components {
        service
            .ensure_component(NewComponent {
                slug: c.slug.clone(),
                name: c.name.clone(),
                description: c.description.clone(),
                group_name: c.group.clone(),
            })
            .await
            .with_context(|| format!("component {:?} in the configuration", c.slug))?;
    }
    if let Some((name, password)) = &settings.admin
        && service
            .ensure_first_admin(name, password.expose())
            .await
            .context("creating the first admin from HERALD_ADMIN_USER/HERALD_ADMIN_PASSWORD")?
    {
        info!(user = %name, "created the first admin from the environment");
    }
    for channel in env_channels(settings) {
        let name = channel.name.clone();
        service
            .ensure_env_channel(channel)
            .await
            .with_context(|| format!("announcement channel {name:?} from the environment"))?;
    }
    if demo {
        crate::demo::seed(&service)
            .await
            .context("seeding the demo")?;
    }
    // Nobody can sign in yet: a one-time code in the log lets the operator create the admin.
    let setup_code = service.setup_code().await?;
    if let Some(code) = &setup_code {
        warn!(
            "no user exists yet: open {}/admin/setup and enter the setup code {} \
             (or run `herald user add NAME --role admin`)",
            settings.public_url,
            code.expose()
        );
    }
    Ok(AppState::with_setup_code(
        service,
        settings.clone(),
        setup_code,
    ))
}

/// `herald serve`.
pub async fn serve(settings: Settings, demo: bool) -> anyhow::Result<()> {
    let shutdown = signals()?;
    let state = build(&settings, demo).await?;
    let listener = TcpListener::bind(settings.listen)
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    if settings.public_url.starts_with("http://") && !settings.listen.ip().is_loopback() {
        warn!(
            listen = %settings.listen,
            public_url = %settings.public_url,
            "listening beyond this machine while HERALD_PUBLIC_URL is http://: session cookies \
             are not marked Secure; serve Herald behind https and set HERALD_PUBLIC_URL to it"
        );
    }
    info!(
        address = %listener.local_addr()?,
        database = %settings.database_url,
        instance = %settings.instance_id,
        public_url = %settings.public_url,
        "serving"
    );
    let token = CancellationToken::new();
    let tasks = TaskTracker::new();
    // Before any delivery lease is taken back in this id's name: the id must be ours.
    let presence = claim_instance_id(state.service.store(), &settings.instance_id).await?;
    spawn_presence(&state, &settings.instance_id, presence, &tasks, &token);
    spawn_metrics_upkeep(&state, &tasks, &token);
    spawn_outbox(&state, &tasks, &token)?;
    crate::scheduler::spawn(
        state.service.acting(crate::domain::Actor::Scheduler),
        token.clone(),
        &tasks,
    );
    // Other instances on the same database: their changes refresh pages and wake workers here.
    tasks.spawn({
        let (service, token) = (state.service.clone(), token.clone());
        async move { service.follow_other_instances(token).await }
    });
    let drain = Drain {
        delay: settings.shutdown_delay,
        timeout: settings.drain_timeout,
        connections: ConnectionLimits::for_this_process(settings.trusted_proxies.clone()),
    };
    info!(
        connections = drain.connections.total(),
        per_client = drain.connections.per_client(),
        "connection limits"
    );
    run(
        listener,
        crate::web::router(state.clone()),
        state.draining.clone(),
        drain,
        tasks,
        token,
        shutdown,
    )
    .await
}

/// Channels named by HERALD_DISCORD_* and HERALD_BLUESKY_*.
fn env_channels(settings: &Settings) -> Vec<NewChannel> {
    let a = &settings.announce;
    let base = |name: &str, kind: ChannelKind| NewChannel {
        name: name.to_owned(),
        kind: Some(kind),
        events: default_events(kind),
        milestones: default_milestones(),
        langs: a.bluesky_langs.clone(),
        enabled: true,
        ..NewChannel::default()
    };
    let mut out = Vec::new();
    if let (Some(_), Some(from)) = (&settings.mail.smtp_url, &settings.mail.from) {
        out.push(NewChannel {
            target: from.clone(),
            ..base("Email to subscribers", ChannelKind::Email)
        });
    }
    if let Some(url) = &a.discord_webhook_url {
        out.push(NewChannel {
            secret: ChannelSecret::new(url.expose()),
            api_url: a.discord_api_url.clone(),
            ..base("Discord webhook", ChannelKind::DiscordWebhook)
        });
    }
    if let (Some(token), Some(channel)) = (&a.discord_bot_token, &a.discord_channel_id) {
        out.push(NewChannel {
            target: channel.clone(),
            secret: ChannelSecret::new(token.expose()),
            api_url: a.discord_api_url.clone(),
            ..base("Discord bot", ChannelKind::DiscordBot)
        });
    }
    if let (Some(identifier), Some(password)) = (&a.bluesky_identifier, &a.bluesky_app_password) {
        out.push(NewChannel {
            target: identifier.clone(),
            secret: ChannelSecret::new(password.expose()),
            api_url: Some(a.bluesky_pds_url.clone()),
            ..base("Bluesky", ChannelKind::Bluesky)
        });
    }
    out
}

/// Start the announcement workers; they stop with `token` after the delivery in hand.
pub fn spawn_outbox(
    state: &AppState,
    tasks: &TaskTracker,
    token: &CancellationToken,
) -> anyhow::Result<()> {
    let settings = NotifySettings::from_settings(&state.settings);
    Outbox::spawn(
        state.service.store().clone(),
        state.service.outbox_events(),
        settings.clone(),
        token.clone(),
        tasks.clone(),
    );
    if settings.mail.is_none() {
        return Ok(());
    }
    crate::notify::mail::Mailer::spawn(
        state.service.store().clone(),
        state.service.outbox_events(),
        &settings,
        state.service.link_key_now()?,
        token.clone(),
        tasks,
    )
}

/// How often a running instance marks its id as in use, and how long after the last mark the
/// id is free again (a crashed instance's id, for its restart).
const PRESENCE_BEAT: Duration = Duration::from_secs(2);
const PRESENCE_STALE: Duration = Duration::from_secs(6);

/// Take this instance's id, or refuse to start when another running instance holds it: two
/// instances with one id would take back each other's live delivery leases (and post twice).
/// An id marked moments ago (a crash, then a quick restart) is watched for one beat first.
async fn claim_instance_id(store: &Arc<dyn Store>, id: &str) -> anyhow::Result<String> {
    let token = crate::ids::random_hex(32);
    let stale = PRESENCE_STALE.as_millis() as i64;
    let mut watched = false;
    loop {
        let now = jiff::Timestamp::now().as_millisecond();
        let held = store
            .claim_instance(id, &token, now, now - stale)
            .await
            .context("cannot record this instance's id in the database")?;
        let Some(heartbeat) = held else {
            return Ok(token);
        };
        if watched {
            bail!(
                "another running instance uses the instance id {id:?} (it marked it {} ms ago): \
                 give each instance its own HERALD_INSTANCE_ID",
                now - heartbeat
            );
        }
        info!(
            instance = id,
            seen_ms_ago = now - heartbeat,
            "this instance id was in use moments ago: waiting to see whether that instance still runs"
        );
        let wait = (heartbeat + stale - now).clamp(0, stale) as u64 + 200;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        watched = true;
    }
}

/// Keep marking the id as in use until the instance stops, then give it up.
fn spawn_presence(
    state: &AppState,
    id: &str,
    presence: String,
    tasks: &TaskTracker,
    token: &CancellationToken,
) {
    let (store, id, token) = (state.service.store().clone(), id.to_owned(), token.clone());
    tasks.spawn(async move {
        let mut beat = tokio::time::interval(PRESENCE_BEAT);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = token.cancelled() => break,
                _ = beat.tick() => {}
            }
            let now = jiff::Timestamp::now().as_millisecond();
            match store.instance_heartbeat(&id, &presence, now).await {
                Ok(true) => {}
                Ok(false) => warn!(
                    instance = %id,
                    "another instance took this instance id over (this one was not heard from \
                     for a while): give each instance its own HERALD_INSTANCE_ID"
                ),
                // The database away: the mark goes stale, which is what it should say.
                Err(e) => tracing::debug!(error = %e, "could not mark the instance id"),
            }
        }
        if let Err(e) = store.release_instance(&id, &presence).await {
            warn!(error = %e, "could not give up the instance id");
        }
    });
}

fn spawn_metrics_upkeep(state: &AppState, tasks: &TaskTracker, token: &CancellationToken) {
    let handle = state.metrics.clone();
    let token = token.clone();
    tasks.spawn(async move {
        // Histogram samples wait in memory until drained into their buckets: at tens of
        // thousands of requests a second, ten seconds of them were megabytes.
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tick.tick() => handle.run_upkeep(),
            }
        }
    });
}

/// How shutdown proceeds after the first signal, and the connection caps until then.
#[derive(Debug, Clone)]
pub struct Drain {
    /// Keep serving this long (with `/readyz` failing) before closing the listener.
    pub delay: Duration,
    /// Then allow in-flight requests and background tasks this long to finish.
    pub timeout: Duration,
    /// How many connections may be open, in all and per client.
    pub connections: ConnectionLimits,
}

/// Serve `app` on `listener` until `shutdown` resolves, then drain: mark not ready, wait
/// `drain.delay`, stop accepting, cancel `token` (background tasks stop), and wait for in-flight
/// requests and `tasks` at most `drain.timeout`. Errs if the timeout forced the end.
///
/// HTTP is served thread-per-core, like nginx's workers: one single-threaded runtime per CPU,
/// each accepting on its own handle of the listening socket and keeping its connections. Under
/// load this avoids the cross-thread wake-ups and task stealing of a shared scheduler: on
/// 2026-12-06 it served the cached page at 0.86 of nginx against 0.74 for one multi-threaded
/// runtime, and the page under 110 rollout reports a second at 55.9k req/s against 51.0k
/// (bench/README.md). Background tasks run on the caller's runtime; the workers' runtimes
/// stay up until those are done (see `serve_on_this_thread`).
pub async fn run(
    listener: TcpListener,
    app: axum::Router,
    draining: Arc<AtomicBool>,
    drain: Drain,
    tasks: TaskTracker,
    token: CancellationToken,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    listener
        .set_nonblocking(true)
        .context("cannot make the listener non-blocking")?;
    let stop_accepting = CancellationToken::new();
    // Held until the background tasks are done: the workers' runtimes stay up (and drive the
    // connections they opened, database connections included) until nothing can use them.
    let release_workers = CancellationToken::new();
    let _release = release_workers.clone().drop_guard();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<anyhow::Result<()>>(workers);
    for worker in 0..workers {
        let listener = listener
            .try_clone()
            .context("cannot share the listening socket")?;
        let app = app.clone();
        let stopped = stop_accepting.clone();
        let released = release_workers.clone();
        let done = done_tx.clone();
        let limits = drain.connections.clone();
        std::thread::Builder::new()
            .name(format!("herald-http-{worker}"))
            .spawn(move || serve_on_this_thread(listener, app, limits, stopped, released, done))
            .context("cannot start an HTTP worker thread")?;
    }
    drop(done_tx);
    let mut running = workers;
    tokio::select! {
        () = shutdown => {}
        result = done_rx.recv() => {
            token.cancel();
            stop_accepting.cancel();
            result.unwrap_or_else(|| Ok(())).context("an HTTP worker failed")?;
            bail!("an HTTP worker stopped unexpectedly");
        }
    }
    draining.store(true, Ordering::Release);
    info!(
        delay = ?drain.delay,
        timeout = ?drain.timeout,
        "shutting down: /readyz now answers 503"
    );
    tokio::time::sleep(drain.delay).await;
    stop_accepting.cancel();
    token.cancel();
    tasks.close();
    let finished = tokio::time::timeout(drain.timeout, async {
        let mut outcome = Ok(());
        while running > 0 {
            match done_rx.recv().await {
                Some(served) => {
                    running -= 1;
                    if let Err(e) = served {
                        outcome = Err(e);
                    }
                }
                None => break,
            }
        }
        tasks.wait().await;
        outcome
    })
    .await;
    match finished {
        Ok(served) => {
            served.context("an HTTP worker failed")?;
            info!("drained; bye");
            Ok(())
        }
        Err(_) => {
            warn!(timeout = ?drain.timeout, "drain timeout reached: forcing exit");
            bail!(
                "in-flight work did not finish within the drain timeout of {:?}",
                drain.timeout
            )
        }
    }
}

/// How long a client may take to send a request's headers (on a new connection, and between
/// requests on a kept-alive one) before the connection is closed. Without it, a client
/// sending one byte now and then holds a connection and its memory for as long as it likes
/// (slowloris); nginx's `client_header_timeout` is the same idea.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One HTTP worker: a single-threaded runtime serving until `stopped`, then finishing the
/// requests in flight on its connections.
///
/// Its own accept loop on hyper rather than `axum::serve`, which gives hyper no timer and so
/// no header-read timeout: each connection is served by hyper-util's HTTP/1 + HTTP/2 builder
/// with [`HEADER_READ_TIMEOUT`] (also for the first byte, and between requests on a kept-alive
/// connection), told to finish its current request and close when `stopped`.
///
/// Its outcome goes to `done` once its connections are finished; the runtime itself stays up
/// until `released`. Database connections the pool opened while serving belong to this
/// runtime's I/O driver, and the outbox and scheduler may still use them while they finish
/// (seen as "sent, but could not record it" on PostgreSQL when the runtime went first).
fn serve_on_this_thread(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnectionLimits,
    stopped: CancellationToken,
    released: CancellationToken,
    done: tokio::sync::mpsc::Sender<anyhow::Result<()>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = done.blocking_send(Err(e).context("cannot build an HTTP worker runtime"));
            return;
        }
    };
    runtime.block_on(async move {
        let served = accept_loop(listener, app, limits, stopped).await;
        let _ = done.send(served).await;
        released.cancelled().await;
    });
}

async fn accept_loop(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnectionLimits,
    stopped: CancellationToken,
) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto;
    use hyper_util::service::TowerToHyperService;
    {
        let listener =
            tokio::net::TcpListener::from_std(listener).context("cannot register the listener")?;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        // HTTP/2: a ping every 20 s on an idle connection, closed when unanswered within 10 s
        // (a peer that vanished), and at most 100 requests in flight on one.
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(20)))
            .keep_alive_timeout(Duration::from_secs(10))
            .max_concurrent_streams(100);
        let builder = Arc::new(builder);
        let connections = TaskTracker::new();
        loop {
            let (stream, peer) = tokio::select! {
                () = stopped.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        // Errors of one connection (reset before accept) are not worth a wait.
                        if !is_connection_error(&e) {
                            warn!(error = %e, "cannot accept a connection; retrying in a second");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        continue;
                    }
                },
            };
            // Over a cap: closed at once, before any byte is read (the client sees a reset
            // and may retry; nothing of it is kept).
            let Some(slot) = limits.admit(peer.ip()) else {
                drop(stream);
                continue;
            };
            // The peer's address for the handlers that want it (the sign-in throttle).
            let service = TowerToHyperService::new(tower::ServiceExt::map_request(
                app.clone(),
                move |mut request: axum::http::Request<hyper::body::Incoming>| {
                    request
                        .extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    request
                },
            ));
            let builder = builder.clone();
            let stopped = stopped.clone();
            connections.spawn(async move {
                let _slot = slot;
                // hyper's timer starts with the first byte (the HTTP/2 check reads it first),
                // so a connection that sends nothing gets the same time for its first one.
                let mut first = [0u8; 1];
                tokio::select! {
                    peeked = tokio::time::timeout(HEADER_READ_TIMEOUT, stream.peek(&mut first)) => {
                        // Nothing in time, or the client closed or failed before a byte.
                        if !matches!(peeked, Ok(Ok(1))) {
                            return;
                        }
                    }
                    () = stopped.cancelled() => return,
                }
                let connection =
                    builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                tokio::pin!(connection);
                let served = tokio::select! {
                    served = connection.as_mut() => served,
                    () = stopped.cancelled() => {
                        connection.as_mut().graceful_shutdown();
                        connection.await
                    }
                };
                // A client that went away or timed out: nothing the server can act on.
                if let Err(e) = served {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
            });
        }
        connections.close();
        connections.wait().await;
        Ok(())
    }
}

/// How many connections may be open at once: in all (below the process's file-descriptor
/// limit, so accepting never fails for want of one and the database and channels keep theirs)
/// and per client address (an IPv6 /64; 127.0.0.1, ::1 and trusted proxies, through which many
/// visitors come, are exempt). A connection over either cap is closed as soon as it is accepted.
#[derive(Clone)]
pub struct ConnectionLimits {
    inner: Arc<LimitsInner>,
}

struct LimitsInner {
    total: usize,
    per_client: usize,
    exempt: Vec<crate::config::Cidr>,
    open: std::sync::atomic::AtomicUsize,
    by_client: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

/// Connections one client address may hold open (browsers open six per host; a large office
/// behind one NAT address needs more).
pub const CONNECTIONS_PER_CLIENT: usize = 256;

impl std::fmt::Debug for ConnectionLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionLimits")
            .field("total", &self.inner.total)
            .field("per_client", &self.inner.per_client)
            .finish()
    }
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self::for_this_process(Vec::new())
    }
}

impl ConnectionLimits {
    pub fn new(total: usize, per_client: usize, exempt: Vec<crate::config::Cidr>) -> Self {
        Self {
            inner: Arc::new(LimitsInner {
                total: total.max(1),
                per_client: per_client.max(1),
                exempt,
                open: std::sync::atomic::AtomicUsize::new(0),
                by_client: std::sync::Mutex::new(std::collections::HashMap::new()),
            }),
        }
    }

    /// Limits for this process: its soft file-descriptor limit raised to the hard one (as
    /// servers do; Debian's default soft limit is 1024), less room for the database pool,
    /// channel requests and the listener, up to 16384.
    pub fn for_this_process(exempt: Vec<crate::config::Cidr>) -> Self {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let soft = match getrlimit(Resource::RLIMIT_NOFILE) {
            Ok((soft, hard)) => {
                let wanted = hard.min(65_536);
                if wanted > soft && setrlimit(Resource::RLIMIT_NOFILE, wanted, hard).is_ok() {
                    wanted
                } else {
                    soft
                }
            }
            Err(_) => 1024,
        };
        let total = (soft.saturating_sub(256) as usize).clamp(64, 16_384);
        Self::new(total, CONNECTIONS_PER_CLIENT, exempt)
    }

    pub fn total(&self) -> usize {
        self.inner.total
    }

    pub fn per_client(&self) -> usize {
        self.inner.per_client
    }

    /// A place for a connection from `ip`, held until the returned slot is dropped; `None`
    /// over a cap.
    fn admit(&self, ip: std::net::IpAddr) -> Option<ConnectionSlot> {
        let inner = &self.inner;
        if inner.open.fetch_add(1, Ordering::AcqRel) >= inner.total {
            inner.open.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("herald_connections_refused_total", "cap" => "total").increment(1);
            return None;
        }
        // A reverse proxy on this machine (trusted or not) and trusted proxies carry many
        // visitors' connections: only the total cap applies to them.
        let shared = ip.to_canonical() == std::net::IpAddr::from([127, 0, 0, 1])
            || ip == std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
            || inner.exempt.iter().any(|c| c.contains(ip));
        let client = (!shared).then(|| crate::domain::client_key(ip));
        if let Some(key) = &client {
            let mut by_client = inner.by_client.lock().unwrap_or_else(|e| e.into_inner());
            let n = by_client.entry(key.clone()).or_insert(0);
            if *n >= inner.per_client {
                drop(by_client);
                inner.open.fetch_sub(1, Ordering::AcqRel);
                metrics::counter!("herald_connections_refused_total", "cap" => "per_client")
                    .increment(1);
                return None;
            }
            *n += 1;
        }
        Some(ConnectionSlot {
            limits: self.clone(),
            client,
        })
    }
}

/// One open connection's place under the caps.
struct ConnectionSlot {
    limits: ConnectionLimits,
    client: Option<String>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let inner = &self.limits.inner;
        inner.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(key) = &self.client {
            let mut by_client = inner.by_client.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = by_client.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    by_client.remove(key);
                }
            }
        }
    }
}

/// Accept errors that concern one connection only (it was reset before it was accepted).
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// Resolves on the first SIGTERM or Ctrl-C; a second one exits the process at once. The
/// handlers are installed here, before anything serves: installed only when the future is
/// first polled, a signal that came between "ready" and that poll would kill the process
/// (seen in `tests/it/drain.rs` on a loaded machine).
#[cfg(unix)]
fn signals() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
            warn!("second shutdown signal: exiting now");
            std::process::exit(130);
        });
    })
}

#[cfg(not(unix))]
fn signals() -> anyhow::Result<impl Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tokio::spawn(async {
            let _ = tokio::signal::ctrl_c().await;
            warn!("second shutdown signal: exiting now");
            std::process::exit(130);
        });
    })
}
