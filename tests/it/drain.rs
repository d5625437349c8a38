//! Graceful shutdown: requests in flight finish, `/readyz` answers 503 while draining, the
//! process exits 0; a second signal or the drain timeout forces the exit.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::routing::get;
use herald::server::{Drain, run};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A blocking HTTP/1.1 GET on a fresh connection; returns the status code.
fn status_of(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split(' ').nth(1)?.parse().ok()
}

struct Herald {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Herald {
    fn start(extra_env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", crate::common::free_port())
            .parse()
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
        cmd.arg("serve")
            .current_dir(dir.path())
            .env(
                "HERALD_DATABASE_URL",
                crate::common::database_url(&dir.path().join("data"), "herald.db"),
            )
            .env("HERALD_LISTEN", addr.to_string())
            .env("HERALD_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while status_of(addr, "/readyz") != Some(200) {
            assert!(Instant::now() < deadline, "herald did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            addr,
            _dir: dir,
        }
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("herald did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// The real binary: SIGTERM with a request in flight (its head sent in two parts around the
/// signal, finished only after the listener has closed). The request completes, `/readyz`
/// answers 503 during the drain, and the exit status is 0.
#[test]
fn sigterm_drains_and_exits_zero() {
    let mut herald = Herald::start(&[("HERALD_SHUTDOWN_DELAY", "500ms")]);
    let mut in_flight = TcpStream::connect(herald.addr).unwrap();
    in_flight
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    in_flight
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));

    herald.signal(Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(status_of(herald.addr, "/readyz"), Some(503), "draining");
    assert_eq!(status_of(herald.addr, "/healthz"), Some(200), "still alive");

    // Past the shutdown delay: no new connections, but the one in flight is served.
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(status_of(herald.addr, "/healthz"), None, "listener closed");
    assert!(herald.child.try_wait().unwrap().is_none(), "still draining");
    in_flight.write_all(b"Connection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    in_flight.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.contains("All systems operational"));

    let status = herald.wait(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn second_signal_forces_the_exit() {
    let mut herald = Herald::start(&[("HERALD_SHUTDOWN_DELAY", "30s")]);
    herald.signal(Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(status_of(herald.addr, "/readyz"), Some(503));
    herald.signal(Signal::SIGINT);
    let status = herald.wait(Duration::from_secs(5));
    assert_eq!(status.code(), Some(130));
}

#[test]
fn drain_timeout_forces_the_exit() {
    let mut herald = Herald::start(&[("HERALD_DRAIN_TIMEOUT", "500ms")]);
    // A request that never completes its head keeps a connection busy forever.
    let mut stuck = TcpStream::connect(herald.addr).unwrap();
    stuck.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    herald.signal(Signal::SIGTERM);
    let status = herald.wait(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "a forced exit is a failure exit");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// In process, with a handler that is slow on purpose (added by the test, not by Herald): the
/// slow request started before the shutdown completes, and the background tasks are stopped.
#[tokio::test]
async fn in_flight_handler_completes_before_run_returns() {
    let app = crate::common::TestApp::new().await;
    let router = herald::web::router(app.state.clone()).merge(axum::Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(800)).await;
            "slow but done"
        }),
    ));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let token = CancellationToken::new();
    let tasks = TaskTracker::new();
    let background_stopped = {
        let token = token.clone();
        tasks.spawn(async move {
            token.cancelled().await;
            true
        })
    };
    let (trigger, shutdown) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(run(
        listener,
        router,
        app.state.draining.clone(),
        Drain {
            delay: Duration::from_millis(300),
            timeout: Duration::from_secs(5),
            connections: Default::default(),
        },
        tasks,
        token,
        async move {
            let _ = shutdown.await;
        },
    ));
    let slow = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET /slow HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    trigger.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let ready = tokio::task::spawn_blocking(move || status_of(addr, "/readyz"))
        .await
        .unwrap();
    assert_eq!(ready, Some(503));
    let out = slow.await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("slow but done"));
    server.await.unwrap().unwrap();
    assert!(background_stopped.await.unwrap());
}

/// Slowloris: a client trickling its request headers a byte a second is cut off once
/// `HEADER_READ_TIMEOUT` has passed, while other clients are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_trickled_in_are_cut_off() {
    let app = crate::common::TestApp::new().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (trigger, shutdown) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(run(
        listener,
        herald::web::router(app.state.clone()),
        app.state.draining.clone(),
        Drain {
            delay: Duration::ZERO,
            timeout: Duration::from_secs(5),
            connections: Default::default(),
        },
        TaskTracker::new(),
        CancellationToken::new(),
        async move {
            let _ = shutdown.await;
        },
    ));
    let timeout = herald::server::HEADER_READ_TIMEOUT;
    let slow = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(900)))
            .unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            .unwrap();
        let mut answer = Vec::new();
        // One more header byte a second; stop when the server closes (or answers), or give
        // up well past the timeout.
        while started.elapsed() < timeout * 4 {
            if s.write_all(b"a").is_err() {
                break;
            }
            let mut buf = [0u8; 512];
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
        (
            started.elapsed(),
            String::from_utf8_lossy(&answer).into_owned(),
        )
    });
    // A connection that never sends a byte is closed too.
    let silent = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(timeout * 4)).unwrap();
        let mut buf = [0u8; 64];
        let read = s.read(&mut buf);
        (started.elapsed(), read.map_err(|e| e.kind()))
    });
    // Meanwhile the page is served to everybody else.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let page = tokio::task::spawn_blocking(move || status_of(addr, "/"))
        .await
        .unwrap();
    assert_eq!(page, Some(200));
    let (after, answer) = slow.await.unwrap();
    assert!(
        after < timeout * 4,
        "a client trickling headers was still connected after {after:?}"
    );
    assert!(
        after >= timeout,
        "cut off after {after:?}, before the header timeout of {timeout:?}"
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "not a 200 for half a request: {answer}"
    );
    let (after, read) = silent.await.unwrap();
    assert!(
        after < timeout * 4 && after >= timeout,
        "a silent connection was closed after {after:?} ({read:?})"
    );
    assert!(
        matches!(read, Ok(0) | Err(std::io::ErrorKind::ConnectionReset)),
        "{read:?}"
    );
    trigger.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// PostgreSQL and the real binary, whatever database the rest of the suite runs on: API calls
/// spread over every HTTP worker (each its own connection), then SIGTERM while a Discord
/// delivery is in flight. The delivery finishes, is recorded sent once, the message exists
/// once, and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_postgresql_finishes_the_delivery_in_flight() {
    use crate::common::fake_discord::{FakeDiscord, Fault};
    use herald::domain::{Actor, DeliveryState, Role, Subject};
    use herald::store::{Outbox as _, SqlStore, Store as _};

    let pg = crate::common::PostgresServer::get();
    let scratch = tempfile::tempdir().unwrap();
    let url = crate::common::postgres_database(
        &pg.url,
        &format!("{}/drain-pg", scratch.path().display()),
    );
    let store = SqlStore::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let token = herald::service::Service::new(std::sync::Arc::new(store))
        .acting(Actor::Cli)
        .create_token("deploy", Role::Maintainer)
        .await
        .unwrap()
        .secret
        .expose()
        .to_owned();
    let discord = FakeDiscord::start().await;
    let webhook = discord.webhook_url();
    let mut herald = tokio::task::block_in_place(|| {
        Herald::start(&[
            ("HERALD_DATABASE_URL", &url),
            ("HERALD_DISCORD_WEBHOOK_URL", &webhook),
            ("HERALD_ALLOW_PRIVATE_TARGETS", "true"),
            ("HERALD_SHUTDOWN_DELAY", "0s"),
            ("HERALD_DRAIN_TIMEOUT", "20s"),
        ])
    });
    let base = format!("http://{}/api/v1", herald.addr);
    // A connection per request, so the calls land on every worker's accept loop.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let call = |path: String, body: serde_json::Value| {
        let client = client.clone();
        let token = token.clone();
        async move {
            let r = client
                .post(path)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let body: serde_json::Value = r.json().await.unwrap();
            assert!(status.is_success(), "{status}: {body}");
            body
        }
    };
    let windows = futures_util::future::join_all((0..8).map(|i| {
        call(
            format!("{base}/maintenances"),
            serde_json::json!({"title": format!("Window {i}"), "steps": [{"title": "One"}]}),
        )
    }))
    .await;
    let id = windows[0]["id"].as_i64().unwrap();
    call(
        format!("{base}/maintenances/{id}/announce"),
        serde_json::json!({}),
    )
    .await;
    // Let the announcement go out, then hold the next delivery at Discord.
    let deadline = Instant::now() + Duration::from_secs(20);
    while discord.messages().is_empty() {
        assert!(Instant::now() < deadline, "the announcement did not arrive");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    discord.push_fault(Fault::Hang(Duration::from_millis(1500)), Some("/webhooks/"));
    futures_util::future::join_all((0..4).map(|i| {
        call(
            format!("{base}/maintenances/{id}/updates"),
            serde_json::json!({"body": format!("Progress note {i}")}),
        )
    }))
    .await;
    while discord.pending_faults() > 0 {
        assert!(Instant::now() < deadline, "no delivery reached Discord");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A delivery is in flight at Discord: stop now.
    herald.signal(Signal::SIGTERM);
    let status = tokio::task::block_in_place(|| herald.wait(Duration::from_secs(30)));
    assert_eq!(status.code(), Some(0), "{status:?}");

    // The held delivery finished and is recorded sent, once; its message exists once.
    let store = SqlStore::connect(&url).await.unwrap();
    let deliveries = store.list_deliveries(Subject::Window(id)).await.unwrap();
    let sent: Vec<_> = deliveries
        .iter()
        .filter(|d| d.state == DeliveryState::Sent)
        .collect();
    assert!(sent.len() >= 2, "{deliveries:#?}");
    for d in &sent {
        assert_eq!(d.attempts, 1, "sent in one attempt: {d:#?}");
    }
    let held = discord
        .requests()
        .into_iter()
        .find(|r| matches!(r.fault, Some(Fault::Hang(_))))
        .expect("the held request was answered");
    assert_eq!(held.status, Some(200));
    let texts: Vec<String> = discord
        .messages()
        .iter()
        .map(|m| format!("{} {}", m.content, m.embeds))
        .collect();
    for i in 0..4 {
        let note = format!("Progress note {i}");
        let n = texts.iter().filter(|t| t.contains(&note)).count();
        assert!(n <= 1, "{note} posted {n} times");
    }
}

/// Two instances started with one HERALD_INSTANCE_ID: the second is refused, since it would
/// take back the first one's live delivery leases. After a clean stop the id is free at once;
/// after a crash, once its last mark is a few seconds old.
#[test]
fn an_instance_id_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = crate::common::database_url(&dir.path().join("data"), "herald.db");
    let start = |port: u16| {
        Command::new(env!("CARGO_BIN_EXE_herald"))
            .arg("serve")
            .current_dir(dir.path())
            .env("HERALD_DATABASE_URL", &url)
            .env("HERALD_LISTEN", format!("127.0.0.1:{port}"))
            .env("HERALD_INSTANCE_ID", "herald-1")
            .env("HERALD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let ready = |port: u16, child: &mut Child| {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while status_of(addr, "/readyz") != Some(200) {
            assert!(child.try_wait().unwrap().is_none(), "herald exited");
            assert!(Instant::now() < deadline, "herald did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let stderr = |child: Child| {
        let out = child.wait_with_output().unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let port = crate::common::free_port();
    let mut first = start(port);
    ready(port, &mut first);

    let second = start(crate::common::free_port());
    let (status, said) = stderr(second);
    assert!(!status.success());
    assert!(
        said.contains("another running instance uses the instance id \"herald-1\""),
        "{said}"
    );

    // A clean stop gives the id up.
    kill(Pid::from_raw(first.id() as i32), Signal::SIGTERM).unwrap();
    assert!(stderr(first).0.success());
    let port = crate::common::free_port();
    let mut again = start(port);
    ready(port, &mut again);

    // A crash leaves the mark to go stale: the restart waits a moment, then runs.
    kill(Pid::from_raw(again.id() as i32), Signal::SIGKILL).unwrap();
    again.wait().unwrap();
    let port = crate::common::free_port();
    let mut restarted = start(port);
    ready(port, &mut restarted);
    kill(Pid::from_raw(restarted.id() as i32), Signal::SIGTERM).unwrap();
    let (status, said) = stderr(restarted);
    assert!(status.success());
    assert!(
        said.contains("waiting to see whether that instance still runs"),
        "{said}"
    );
}

/// A connection from `source` (any 127.x.y.z is this machine) to `to`.
async fn connect_from(source: [u8; 4], to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(to).await
}

/// Slow clients cannot hold the server: 2,000 connections announcing a megabyte of body and
/// then trickling it are cut off after the body timeout, a client address gets no more than
/// its share of connections, and meanwhile `/` and `/healthz` answer on a fresh connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_cannot_hold_the_server() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // This test's own sockets: 2,000 of them.
    let (soft, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    if soft < 4_096 {
        nix::sys::resource::setrlimit(
            nix::sys::resource::Resource::RLIMIT_NOFILE,
            hard.min(8_192),
            hard,
        )
        .unwrap();
    }
    let herald = Herald::start(&[]);
    let addr = herald.addr;
    // A form the server reads the body of before it can answer.
    let head = b"POST /admin/login HTTP/1.1\r\nHost: t\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000000\r\n\r\nn";
    // Eight client addresses, 250 connections each (under the per-client cap of 256).
    let mut slow = Vec::new();
    for i in 0..2_000u32 {
        let source = [127, 0, 1, 1 + (i % 8) as u8];
        let mut stream = connect_from(source, addr).await.unwrap();
        stream.write_all(head).await.unwrap();
        slow.push(stream);
    }
    // The server still answers others, at once.
    let started = Instant::now();
    let answers =
        tokio::task::spawn_blocking(move || (status_of(addr, "/"), status_of(addr, "/healthz")))
            .await
            .unwrap();
    assert_eq!(answers, (Some(200), Some(200)));
    eprintln!(
        "/ and /healthz under 2,000 slow connections: {:?}",
        started.elapsed()
    );

    // One more address over its share: connections past 256 are closed at once.
    let mut extra = Vec::new();
    for _ in 0..300 {
        extra.push(connect_from([127, 0, 2, 1], addr).await.unwrap());
    }
    let mut closed = 0;
    for stream in &mut extra {
        let _ = stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .await;
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            _ => {}
        }
    }
    assert!(closed >= 300 - 256, "only {closed} of 300 were refused");
    drop(extra);

    // Twenty send a byte every 2 s (the body never pauses 10 s): the 30 s request timeout
    // ends them. The others pause: the body timeout ends them after 10 s.
    let trickling: Vec<_> = slow.drain(..20).collect();
    let trickle = tokio::spawn(async move {
        let started = Instant::now();
        let mut open = trickling;
        while !open.is_empty() && started.elapsed() < Duration::from_secs(45) {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let mut still = Vec::new();
            for mut stream in open {
                let mut buf = [0u8; 4096];
                let closed =
                    match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf))
                        .await
                    {
                        Ok(Ok(0)) | Ok(Err(_)) => true,
                        Ok(Ok(_)) | Err(_) => stream.write_all(b"x").await.is_err(),
                    };
                if !closed {
                    still.push(stream);
                }
            }
            open = still;
        }
        open.len()
    });
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut ended = 0;
    let paused = slow.len();
    for mut stream in slow {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut buf = vec![0u8; 4096];
        let ends = async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        if tokio::time::timeout(left, ends).await.is_ok() {
            ended += 1;
        }
    }
    assert_eq!(ended, paused, "paused connections were still open");
    assert_eq!(
        trickle.await.unwrap(),
        0,
        "trickling connections were still open"
    );
}
