//! What `deploy/` ships is true: the systemd unit passes `systemd-analyze verify` (Debian's
//! systemd) with no warning, the example configuration is what `herald config example`
//! prints and what `herald` accepts, and the container image builds with Debian's podman,
//! runs, drains on SIGTERM and starts again on its volume with its data; and the deploy
//! guide's nginx configuration and upgrade script upgrade three instances without a failed
//! request.

use std::process::Command;

#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/herald.service"
    ))
    .unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/herald serve"));
    // systemd checks that the binary exists: point it at the one just built.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/herald", env!("CARGO_BIN_EXE_herald")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", path.to_str().unwrap()])
        .output()
        .expect("systemd-analyze is missing: install Debian's systemd");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.trim().is_empty(), "warnings: {said}");
}

#[test]
fn the_example_configuration_is_current_and_accepted() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/herald.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["config", "example"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        std::fs::read_to_string(shipped).unwrap(),
        "deploy/herald.toml is `herald config example` (run it again to update the file)"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["--config", shipped, "config", "show"])
        .env_remove("HERALD_DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Debian's podman, as INTEGRATIONS.md found it usable here: runc (crun refuses the hybrid
/// cgroups), no default ulimits (setting RLIMIT_NPROC is not permitted), an image store of the
/// test's own so nothing is left behind.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("containers.conf"),
            "[containers]\ndefault_ulimits = []\n",
        )
        .unwrap();
        Self { dir }
    }

    fn flags(&self) -> Vec<String> {
        let at = |p: &str| self.dir.path().join(p).to_str().unwrap().to_owned();
        vec![
            "--root".into(),
            at("storage"),
            "--runroot".into(),
            at("run"),
            "--storage-driver".into(),
            "vfs".into(),
        ]
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", self.dir.path().join("containers.conf"))
            .args(self.flags())
            .args(["--runtime", "runc"]);
        cmd
    }

    /// Run podman with `args`, returning stdout; a failure fails the test with what it said.
    fn run(&self, args: &[&str]) -> String {
        let out = self
            .command()
            .args(args)
            .output()
            .expect("podman is missing: install Debian's podman and runc");
        assert!(
            out.status.success(),
            "podman {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self
            .command()
            .args(["rm", "--all", "--force", "--time", "0"])
            .output();
        let _ = self.command().args(["system", "reset", "--force"]).output();
    }
}

async fn ready(client: &reqwest::Client, base: &str, deadline: std::time::Duration) {
    let until = std::time::Instant::now() + deadline;
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            return;
        }
        assert!(
            std::time::Instant::now() < until,
            "{base}/readyz never answered 200"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_container_image_runs_drains_and_restarts_with_its_data() {
    if std::env::var("HERALD_TEST_POSTGRES").is_ok() {
        // The image runs on SQLite in its volume; the first pass of .ci/test checked it.
        return;
    }
    let podman = Podman::new();
    let tag = "localhost/herald-test:latest";
    let build = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/container/build"
        ))
        .args([env!("CARGO_BIN_EXE_herald"), tag])
        .env("PODMAN_FLAGS", podman.flags().join(" "))
        .env("CONTAINERS_CONF", podman.dir.path().join("containers.conf"))
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    // What the image promises: not root, a volume for the data, a health check.
    let config = podman.run(&[
        "image",
        "inspect",
        tag,
        "--format",
        "{{.Config.User}} {{json .Config.Volumes}} {{json .Config.Healthcheck.Test}}",
    ]);
    assert_eq!(
        config,
        r#"65532:65532 {"/data":{}} ["CMD","/usr/local/bin/herald","healthcheck"]"#
    );

    let port = crate::common::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let listen = format!("HERALD_LISTEN=127.0.0.1:{port}");
    podman.run(&["volume", "create", "herald-data"]);
    let start = |name: &str| {
        podman.run(&[
            "run",
            "--detach",
            "--name",
            name,
            "--network",
            "host",
            "--env",
            &listen,
            "--volume",
            "herald-data:/data",
            tag,
        ])
    };
    start("herald-1");
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .unwrap();
    ready(&client, &base, std::time::Duration::from_secs(30)).await;
    podman.run(&["healthcheck", "run", "herald-1"]);

    // An operator's first steps, inside the container: a token, then a window through the API.
    let token = podman.run(&[
        "exec",
        "herald-1",
        "/usr/local/bin/herald",
        "token",
        "create",
        "deploy",
        "--role",
        "admin",
    ]);
    let api = |path: &str| format!("{base}/api/v1{path}");
    let r = client
        .post(api("/components"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"slug": "api", "name": "API"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = client
        .post(api("/maintenances"))
        .bearer_auth(&token)
        .json(&serde_json::json!({
            "title": "Database cluster migration",
            "components": ["api"],
            "schedule_hint": "this Sunday"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let id = r.json::<serde_json::Value>().await.unwrap()["id"].clone();
    let r = client
        .post(api(&format!("/maintenances/{id}/announce")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // SIGTERM (podman stop): /readyz turns 503 while the page is still served for the
    // shutdown delay, then Herald drains and exits 0 well before podman would kill it.
    let stopping = {
        let mut cmd = podman.command();
        cmd.args(["stop", "--time", "45", "herald-1"]);
        std::thread::spawn(move || cmd.output().unwrap())
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(4);
    loop {
        let r = client.get(format!("{base}/readyz")).send().await.unwrap();
        if r.status() == 503 {
            break;
        }
        assert!(std::time::Instant::now() < until, "/readyz stayed 200");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let page = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(stopping.join().unwrap().status.success());
    assert_eq!(
        podman.run(&["inspect", "herald-1", "--format", "{{.State.ExitCode}}"]),
        "0"
    );
    let logs = podman
        .command()
        .args(["logs", "herald-1"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&logs.stderr).contains("drained; bye"),
        "{}",
        String::from_utf8_lossy(&logs.stderr)
    );

    // A new container on the same volume: the window and the token are still there.
    podman.run(&["rm", "herald-1"]);
    start("herald-2");
    ready(&client, &base, std::time::Duration::from_secs(30)).await;
    let r = client
        .get(api("/maintenances"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(body.contains("Database cluster migration"), "{body}");
    let page = client
        .get(format!("{base}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Database cluster migration"));
}

/// The deploy guide's nginx block, pointed at `upstreams` and listening on `port`: the
/// addresses the guide names are replaced, and the test fails if they are no longer there.
fn guide_nginx(port: u16, upstreams: &[u16]) -> String {
    let guide =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/deploy.md")).unwrap();
    let start = guide.find("```nginx\n").expect("the guide's nginx block") + 9;
    let mut block = guide[start..start + guide[start..].find("```").unwrap()].to_owned();
    let mut swap = |from: &str, to: &str| {
        assert!(
            block.contains(from),
            "the guide's nginx block no longer has {from:?}"
        );
        block = block.replace(from, to);
    };
    for (i, up) in upstreams.iter().enumerate() {
        swap(
            &format!("10.0.0.1{}:8080", i + 1),
            &format!("127.0.0.1:{up}"),
        );
    }
    // TLS is not what this test is about.
    swap(
        "listen 443 ssl http2;",
        &format!("listen 127.0.0.1:{port};"),
    );
    block
}

/// nginx in the foreground with `site` as its only server, its files in `dir`.
struct Nginx(std::process::Child);

impl Nginx {
    fn start(dir: &std::path::Path, site: &str) -> Self {
        let d = dir.display();
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        // As root, nginx's workers would run as nobody, who cannot write in the test's folder.
        let root =
            std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
        let user = if root { "user root;" } else { "" };
        let conf = format!(
            "{user}\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\n\
             events {{ worker_connections 512; }}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/tmp/body;\n\
             proxy_temp_path {d}/tmp/proxy;\n fastcgi_temp_path {d}/tmp/fastcgi;\n\
             uwsgi_temp_path {d}/tmp/uwsgi;\n scgi_temp_path {d}/tmp/scgi;\n{site}\n}}\n"
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let check = Command::new("nginx")
            .args(["-t", "-q", "-p"])
            .arg(dir)
            .arg("-c")
            .arg(&path)
            .output()
            .expect("nginx is missing: install Debian's nginx");
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stderr)
        );
        Self(
            Command::new("nginx")
                .arg("-p")
                .arg(dir)
                .arg("-c")
                .arg(&path)
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGQUIT,
        );
        let _ = self.0.wait();
    }
}

/// An instance the upgrade script stops and starts through shell commands, as it would over
/// ssh: `{dir}/{host}.start` runs `{dir}/{host}.bin` (what the script "installs") in the
/// background, `{dir}/{host}.stop` sends SIGTERM and waits until the process is gone.
fn write_host_scripts(dir: &std::path::Path, host: &str, port: u16, env: &[(String, String)]) {
    use std::os::unix::fs::PermissionsExt;
    let d = dir.display();
    let mut vars = String::new();
    for (k, v) in env {
        vars.push_str(&format!("export {k}='{v}'\n"));
    }
    let start = format!(
        "#!/bin/sh\n{vars}export HERALD_LISTEN=127.0.0.1:{port} HERALD_INSTANCE_ID={host}\n\
         cd {d}\nsetsid {d}/{host}.bin serve >>{d}/{host}.log 2>&1 </dev/null &\n\
         echo $! >{d}/{host}.pid\n"
    );
    // The process may linger as a zombie of whoever adopted it: gone means gone or a zombie.
    let stop = format!(
        "#!/bin/sh\npid=$(cat {d}/{host}.pid)\nkill -TERM \"$pid\" 2>/dev/null || exit 0\n\
         while [ -e /proc/$pid ] && ! grep -q ') Z' /proc/$pid/stat 2>/dev/null; do sleep 0.1; done\n"
    );
    for (name, text) in [("start", start), ("stop", stop)] {
        let path = dir.join(format!("{host}.{name}"));
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(dir.join(format!("{host}.port")), port.to_string()).unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_herald"),
        dir.join(format!("{host}.bin")),
    )
    .unwrap();
}

/// Run `deploy/rolling-upgrade` with `vars`; its exit status, stdout and stderr.
async fn rolling_upgrade(args: &[&str], vars: Vec<(String, String)>) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/deploy/rolling-upgrade"
            ))
            .args(&args)
            .envs(vars)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deploy_guides_upgrade_runs_behind_its_nginx_without_a_failed_request() {
    let pg = crate::common::PostgresServer::get();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = crate::common::postgres_database(&pg.url, &format!("{}/guide", d.display()));
    let front = crate::common::free_port();
    let base = format!("http://127.0.0.1:{front}");
    let env: Vec<(String, String)> = vec![
        ("HERALD_DATABASE_URL".into(), url.clone()),
        ("HERALD_PUBLIC_URL".into(), base.clone()),
        ("HERALD_TRUSTED_PROXIES".into(), "127.0.0.1".into()),
        // The guide's unit says 5 s; 1 s is as good a test of nginx moving away.
        ("HERALD_SHUTDOWN_DELAY".into(), "1s".into()),
        ("HERALD_LOG".into(), "warn".into()),
    ];
    let herald = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(args)
            .current_dir(d)
            .envs(env.clone())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    herald(&["db", "init"]);
    let token = herald(&["token", "create", "herald-upgrades", "--role", "maintainer"]);

    let hosts = ["herald-1", "herald-2", "herald-3"];
    // Whatever happens below, the instances stop with the test.
    struct Stop<'a>(&'a std::path::Path, [&'a str; 3]);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            for host in self.1 {
                let _ = Command::new(self.0.join(format!("{host}.stop"))).status();
            }
        }
    }
    let _stop = Stop(d, hosts);
    let ports: Vec<u16> = hosts.iter().map(|_| crate::common::free_port()).collect();
    for (host, port) in hosts.iter().zip(&ports) {
        write_host_scripts(d, host, *port, &env);
        let started = Command::new(d.join(format!("{host}.start")))
            .status()
            .unwrap();
        assert!(started.success());
    }
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .unwrap();
    for port in &ports {
        ready(
            &client,
            &format!("http://127.0.0.1:{port}"),
            std::time::Duration::from_secs(30),
        )
        .await;
    }
    let _nginx = Nginx::start(d, &guide_nginx(front, &ports));
    ready(&client, &base, std::time::Duration::from_secs(10)).await;
    // Metrics are for Prometheus on the private network, not through the public proxy.
    let r = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = client
        .get(format!("http://127.0.0.1:{}/metrics", ports[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A visitor reloading the page through nginx all along.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let visitor = {
        let (stop, client, base) = (stop.clone(), client.clone(), base.clone());
        tokio::spawn(async move {
            let (mut total, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                total += 1;
                match client.get(format!("{base}/")).send().await {
                    Ok(r) if r.status() == 200 => {}
                    Ok(r) => failed.push(r.status().to_string()),
                    Err(e) => failed.push(e.to_string()),
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            (total, failed)
        })
    };

    let mut vars = vec![
        ("HERALD_URL".to_owned(), base.clone()),
        ("HERALD_TOKEN".to_owned(), token.clone()),
        (
            "HERALD_BIN".to_owned(),
            env!("CARGO_BIN_EXE_herald").to_owned(),
        ),
        // Longer than the guide's fail_timeout (5 s), as the script's default (10 s) is.
        ("SETTLE".to_owned(), "7".to_owned()),
        (
            "HERALD_STOP".to_owned(),
            format!("{}/{{host}}.stop", d.display()),
        ),
        (
            "HERALD_INSTALL".to_owned(),
            format!(
                "ln -sf {} {}/{{host}}.bin",
                env!("CARGO_BIN_EXE_herald"),
                d.display()
            ),
        ),
        (
            "HERALD_START".to_owned(),
            format!("{}/{{host}}.start", d.display()),
        ),
        (
            "HERALD_READY".to_owned(),
            format!(
                "curl -fsS --max-time 2 http://127.0.0.1:$(cat {}/{{host}}.port)/readyz",
                d.display()
            ),
        ),
    ];
    let (status, stdout, stderr) = rolling_upgrade(&["1.4.0", "1.5.0"], vec![]).await;
    assert_eq!(status, 2, "no hosts is a usage error: {stdout}{stderr}");
    let mut args = vec!["1.4.0", "1.5.0"];
    args.extend(hosts);
    let (status, stdout, stderr) = rolling_upgrade(&args, vars.clone()).await;
    assert_eq!(status, 0, "{stdout}{stderr}");
    let rollout = |stderr: &str| -> i64 {
        let line = stderr
            .lines()
            .find(|l| l.starts_with("rollout "))
            .unwrap_or_else(|| panic!("{stderr}"));
        line["rollout ".len()..line.find(':').unwrap()]
            .parse()
            .unwrap()
    };
    let id = rollout(&stderr);
    let get = |id: i64| {
        let (client, base, token) = (client.clone(), base.clone(), token.clone());
        async move {
            client
                .get(format!("{base}/api/v1/rollouts/{id}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let done = get(id).await;
    assert_eq!(done["state"], "completed", "{done}");
    for target in done["targets"].as_array().unwrap() {
        assert_eq!(target["state"], "healthy", "{done}");
        assert_eq!(target["version"], "1.5.0", "{done}");
    }

    // The next upgrade: herald-2 never comes back. It is reported failed, the script stops
    // with status 1 and herald-3 is left alone, still serving.
    vars.push(("READY_TIMEOUT".into(), "3".into()));
    for (k, v) in &mut vars {
        if k == "HERALD_START" {
            *v = format!("[ {{host}} = herald-2 ] || {}/{{host}}.start", d.display());
        }
    }
    let (status, stdout, stderr) = rolling_upgrade(
        &{
            let mut a = vec!["1.5.0", "1.6.0"];
            a.extend(hosts);
            a
        },
        vars,
    )
    .await;
    assert_eq!(status, 1, "{stdout}{stderr}");
    assert!(stderr.contains("herald-2 did not come back"), "{stderr}");
    let failed = get(rollout(&stderr)).await;
    let states: Vec<&str> = failed["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["healthy", "failed", "pending"], "{failed}");
    let r = client
        .get(format!("http://127.0.0.1:{}/readyz", ports[2]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (total, failed) = visitor.await.unwrap();
    assert!(total > 100, "only {total} requests");
    assert!(
        failed.is_empty(),
        "{} of {total} requests through nginx failed: {failed:?}\nnginx said:\n{}",
        failed.len(),
        std::fs::read_to_string(d.join("nginx-error.log")).unwrap_or_default()
    );
}
