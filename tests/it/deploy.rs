//! What `deploy/` ships is true: the systemd unit passes `systemd-analyze verify` (Debian's
//! systemd) with no warning, the example configuration is what `herald config example`
//! prints and what `herald` accepts, and the container image builds with Debian's podman,
//! runs, drains on SIGTERM and starts again on its volume with its data.

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
