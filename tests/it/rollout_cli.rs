//! `herald report`, `herald rollout wait` and the README's SIGTERM handler against a running
//! Herald (the real binary): every exit status, a retry while Herald is briefly unreachable,
//! and the handler draining a service as the second seed describes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::domain::{NewRollout, Report, TargetState};
use herald::service::Service;
use herald::store::{SqlStore, Store};
use jiff::Timestamp;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_herald");

struct Herald {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Herald {
    fn db(dir: &Path) -> String {
        crate::common::database_url(dir, "h.db")
    }

    /// Start `herald serve` on `port` and wait until it answers. The port comes from
    /// `free_port`, which another test may have picked too: the page must carry this
    /// server's own site name, so a neighbour's server is never taken for ours.
    fn start(dir: &Path, port: u16) -> Self {
        Self::try_start(dir, port)
            .unwrap_or_else(|| panic!("herald exited at start: port {port} taken?"))
    }

    /// On a port nobody else uses: another one if a neighbour took it first.
    fn start_anywhere(dir: &Path) -> Self {
        for _ in 0..5 {
            if let Some(h) = Self::try_start(dir, crate::common::free_port()) {
                return h;
            }
        }
        panic!("no free port for herald");
    }

    fn try_start(dir: &Path, port: u16) -> Option<Self> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "herald-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut child = Command::new(BIN)
            .arg("serve")
            .current_dir(dir)
            .env("HERALD_DATABASE_URL", Self::db(dir))
            .env("HERALD_LISTEN", format!("127.0.0.1:{port}"))
            .env("HERALD_SITE_NAME", &name)
            .env("HERALD_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if child.try_wait().unwrap().is_some() {
                return None;
            }
            let ours = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && call_text(&format!("http://127.0.0.1:{port}/")).contains(&name);
            if ours {
                break;
            }
            assert!(Instant::now() < deadline, "herald did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Self {
            child: Some(child),
            port,
            dir: dir.to_owned(),
        })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let _ = child.wait();
        }
    }

    fn token(&self) -> String {
        let out = Command::new(BIN)
            .args(["token", "create", "deploy"])
            .current_dir(&self.dir)
            .env("HERALD_DATABASE_URL", Self::db(&self.dir))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "token create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn api(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
        call(method, &format!("{}/api/v1{path}", self.url()), token, body)
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A blocking GET over std: the body, or nothing when the server does not answer.
fn call_text(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let Ok(mut s) = std::net::TcpStream::connect(host) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return String::new();
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// A blocking JSON request over std (the tests drive the binary from plain threads).
fn call(method: &str, url: &str, token: &str, body: Option<Value>) -> Value {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = std::net::TcpStream::connect(host).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (_, body) = out.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap_or(Value::Null)
}

fn herald_cmd(url: &str, token: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("HERALD_URL", url)
        .env("HERALD_TOKEN", token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn run(url: &str, token: &str, args: &[&str]) -> Output {
    herald_cmd(url, token, args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn fishjam(h: &Herald, token: &str, deadline: Option<i64>) -> i64 {
    let mut body = json!({"title": "Fishjam v1.4.0", "from_version": "v1.3.2",
        "to_version": "v1.4.0", "targets": ["fishjam-1", "fishjam-2"]});
    if let Some(d) = deadline {
        body["progress_deadline_seconds"] = json!(d);
    }
    h.api("POST", "/rollouts", token, Some(body))["id"]
        .as_i64()
        .unwrap()
}

#[test]
fn herald_report_exit_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let h = Herald::start_anywhere(dir.path());
    let token = h.token();
    let id = fishjam(&h, &token, None).to_string();
    let url = h.url();

    let out = run(
        &url,
        &token,
        &[
            "report",
            "--rollout",
            &id,
            "--target",
            "fishjam-1",
            "--state",
            "draining",
            "--remaining",
            "rooms=12,recordings=3",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "nothing on stdout");
    assert!(
        stderr(&out).contains("fishjam-1 draining: recordings 3, rooms 12"),
        "{}",
        stderr(&out)
    );
    let r = h.api("GET", &format!("/rollouts/{id}"), &token, None);
    assert_eq!(
        r["targets"][0]["remaining"],
        json!({"rooms": 12, "recordings": 3})
    );

    // Refused: out of order (with the reason), unknown rollout, unknown target, bad token.
    let out = run(
        &url,
        &token,
        &[
            "report",
            "--rollout",
            &id,
            "--target",
            "fishjam-1",
            "--state",
            "healthy",
        ],
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("still draining"), "{}", stderr(&out));
    for args in [
        vec![
            "report",
            "--rollout",
            "999",
            "--target",
            "fishjam-1",
            "--state",
            "drained",
        ],
        vec![
            "report",
            "--rollout",
            &id,
            "--target",
            "nope",
            "--state",
            "drained",
        ],
    ] {
        let out = run(&url, &token, &args);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
    }
    let out = run(
        &url,
        "hrld_wrong",
        &[
            "report",
            "--rollout",
            &id,
            "--target",
            "fishjam-1",
            "--state",
            "drained",
        ],
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("401"), "{}", stderr(&out));
    // A malformed count never leaves the machine: a usage error.
    let out = run(
        &url,
        &token,
        &[
            "report",
            "--rollout",
            &id,
            "--target",
            "fishjam-1",
            "--state",
            "draining",
            "--remaining",
            "rooms=many",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    // Unreachable for longer than --retry-for.
    let closed = format!("http://127.0.0.1:{}", crate::common::free_port());
    let started = Instant::now();
    let out = run(
        &closed,
        &token,
        &[
            "report",
            "--rollout",
            &id,
            "--target",
            "fishjam-1",
            "--state",
            "drained",
            "--retry-for",
            "1s",
        ],
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        stderr(&out).contains("cannot reach Herald"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn herald_report_retries_while_herald_is_briefly_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Herald::start_anywhere(dir.path());
    let port = h.port;
    let token = h.token();
    let id = fishjam(&h, &token, None).to_string();
    h.stop();
    // Herald restarts (an upgrade, say) while an instance reports its drain.
    let report = herald_cmd(
        &h.url(),
        &token,
        &[
            "report",
            "--rollout",
            &id,
            "--target",
            "fishjam-2",
            "--state",
            "draining",
            "--remaining",
            "rooms=4",
            "--retry-for",
            "30s",
        ],
    )
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let h = Herald::start(dir.path(), port);
    let out = report.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("retrying"), "{}", stderr(&out));
    let r = h.api("GET", &format!("/rollouts/{id}"), &token, None);
    assert_eq!(r["targets"][1]["state"], "draining");
    assert_eq!(r["targets"][1]["remaining"]["rooms"], 4);
}

#[test]
fn herald_rollout_wait_exit_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let h = Herald::start_anywhere(dir.path());
    let token = h.token();
    let url = h.url();
    let put = |id: i64, name: &str, body: Value| {
        h.api(
            "PUT",
            &format!("/rollouts/{id}/targets/{name}"),
            &token,
            Some(body),
        )
    };

    // Completed while waiting: a line per change, 0, "completed" on stdout. Each report
    // waits for its line, so a busy machine cannot make the test miss one.
    let id = fishjam(&h, &token, None);
    let mut wait = herald_cmd(
        &url,
        &token,
        &[
            "rollout",
            "wait",
            &id.to_string(),
            "--interval",
            "200ms",
            "--timeout",
            "120s",
        ],
    )
    .spawn()
    .unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    let reader = {
        let err = wait.stderr.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let _ = lines_tx.send(line);
            }
        })
    };
    let mut seen = Vec::new();
    let mut expect = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !seen.iter().any(|l: &String| l.contains(want)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) => seen.push(line),
                Err(_) => panic!("no line with {want:?}; got {seen:#?}"),
            }
        }
    };
    expect("0 of 2 targets on v1.4.0 (not started)");
    for (name, body, line) in [
        (
            "fishjam-1",
            json!({"state": "draining", "remaining": {"rooms": 4}}),
            "0 of 2 targets on v1.4.0, fishjam-1 draining: rooms 4",
        ),
        (
            "fishjam-1",
            json!({"state": "drained"}),
            "0 of 2 targets on v1.4.0, fishjam-1 drained",
        ),
        (
            "fishjam-1",
            json!({"state": "healthy"}),
            "1 of 2 targets on v1.4.0",
        ),
        (
            "fishjam-2",
            json!({"state": "drained"}),
            "1 of 2 targets on v1.4.0, fishjam-2 drained",
        ),
        (
            "fishjam-2",
            json!({"state": "healthy"}),
            "2 of 2 targets on v1.4.0 (completed)",
        ),
    ] {
        put(id, name, body);
        expect(line);
    }
    let status = wait.wait().unwrap();
    reader.join().unwrap();
    assert_eq!(status.code(), Some(0), "{seen:#?}");
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut wait.stdout.take().unwrap(), &mut stdout).unwrap();
    assert_eq!(stdout, "completed\n");
    assert_eq!(seen.len(), 6, "one line per change: {seen:#?}");

    // Failed: 5.
    let id = fishjam(&h, &token, None);
    put(id, "fishjam-1", json!({"state": "failed"}));
    put(id, "fishjam-2", json!({"state": "drained"}));
    put(id, "fishjam-2", json!({"state": "healthy"}));
    let out = run(&url, &token, &["rollout", "wait", &id.to_string()]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "failed\n");
    // Aborted: 5.
    let id = fishjam(&h, &token, None);
    h.api("POST", &format!("/rollouts/{id}/abort"), &token, None);
    let out = run(&url, &token, &["rollout", "wait", &id.to_string()]);
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "aborted\n");
    // Timeout: 7.
    let id = fishjam(&h, &token, None);
    let out = run(
        &url,
        &token,
        &[
            "rollout",
            "wait",
            &id.to_string(),
            "--timeout",
            "1s",
            "--interval",
            "200ms",
        ],
    );
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "timeout\n");
    // Refused: 3.
    let out = run(&url, &token, &["rollout", "wait", "4242"]);
    assert_eq!(out.status.code(), Some(3));
    // Unreachable: 4.
    let closed = format!("http://127.0.0.1:{}", crate::common::free_port());
    let out = run(
        &closed,
        &token,
        &["rollout", "wait", "1", "--retry-for", "1s"],
    );
    assert_eq!(out.status.code(), Some(4));
}

#[tokio::test]
async fn herald_rollout_wait_exits_6_on_a_stall() {
    let dir = tempfile::tempdir().unwrap();
    // Report from eleven minutes ago, through the library on the same database: the stall
    // clock (10 min) has run out by the time the binary looks.
    {
        let store = SqlStore::connect(&Herald::db(dir.path())).await.unwrap();
        store.migrate().await.unwrap();
        let past = Timestamp::now() - jiff::SignedDuration::from_mins(11);
        let service = Service::with_clock(Arc::new(store), Arc::new(move || past));
        let r = service
            .create_rollout(NewRollout::new("Stuck", Some("v1"), "v2", &["a"]))
            .await
            .unwrap();
        let report = Report {
            remaining: Some([("rooms".to_owned(), 3)].into()),
            ..Report::state(TargetState::Draining)
        };
        service.report(r.id, "a", &report).await.unwrap();
    }
    let h = Herald::start_anywhere(dir.path());
    let token = h.token();
    let out = tokio::task::spawn_blocking({
        let url = h.url();
        move || run(&url, &token, &["rollout", "wait", "1"])
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "stalled\n");
    assert!(stderr(&out).contains("(stalled)"), "{}", stderr(&out));
}

/// The `sh` block after the `herald-drain` marker in the README, exactly as written there.
fn readme_handler() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let (_, after) = readme
        .split_once("<!-- herald-drain")
        .expect("the README has the handler");
    let (_, block) = after.split_once("```sh\n").unwrap();
    let (script, _) = block.split_once("```").unwrap();
    script.to_owned()
}

#[test]
fn the_readme_sigterm_handler_drains_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let h = Herald::start_anywhere(dir.path());
    let token = h.token();
    let id = fishjam(&h, &token, None);
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let handler = work.join("herald-drain");
    std::fs::write(&handler, readme_handler()).unwrap();
    let counts = work.join("counts");
    std::fs::write(&counts, "rooms=3,recordings=1\n").unwrap();
    // The service: on SIGTERM it takes no new rooms and exits once nothing is left.
    let service = format!(
        "trap 'while grep -q \"=[1-9]\" {c}; do sleep 0.1; done; exit 0' TERM; \
         while :; do sleep 0.1; done",
        c = counts.display()
    );
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    // The deploy tool writes the rollout's id only just before it stops the service.
    let rollout_file = work.join("rollout");
    // While this file exists the counts command fails, as a busy admin endpoint would.
    let broken = work.join("broken");
    let mut wrapper = Command::new("sh")
        .arg(&handler)
        .args(["sh", "-c", &service])
        .env("PATH", path)
        .env("HERALD_URL", h.url())
        .env("HERALD_TOKEN", &token)
        .env("HERALD_ROLLOUT_FILE", &rollout_file)
        .env("HERALD_TARGET", "fishjam-1")
        .env(
            "HERALD_DRAIN_COUNTS",
            format!("test ! -e {} && cat {}", broken.display(), counts.display()),
        )
        .env("HERALD_DRAIN_EVERY", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(wrapper.try_wait().unwrap().is_none(), "the service runs");
    std::fs::write(&rollout_file, id.to_string()).unwrap();
    kill(Pid::from_raw(wrapper.id() as i32), Signal::SIGTERM).unwrap();

    let target =
        |h: &Herald| h.api("GET", &format!("/rollouts/{id}"), &token, None)["targets"][0].clone();
    let deadline = Instant::now() + Duration::from_secs(40);
    while target(&h)["state"] != "draining" {
        assert!(Instant::now() < deadline, "no draining report");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        target(&h)["remaining"],
        json!({"rooms": 3, "recordings": 1})
    );
    std::fs::write(&counts, "rooms=1,recordings=1\n").unwrap();
    while target(&h)["remaining"]["rooms"] != 1 {
        assert!(
            Instant::now() < deadline,
            "no second report: {}",
            target(&h)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(wrapper.try_wait().unwrap().is_none(), "still draining");
    // A failing counts command is asked again, never taken for "nothing left".
    std::fs::write(&broken, "").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(target(&h)["state"], "draining");
    assert!(wrapper.try_wait().unwrap().is_none(), "still draining");
    std::fs::remove_file(&broken).unwrap();
    std::fs::write(&counts, "rooms=0,recordings=0\n").unwrap();
    let status = loop {
        if let Some(status) = wrapper.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the handler did not exit");
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = wrapper.wait_with_output().unwrap();
    assert!(
        status.success(),
        "{status:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = target(&h);
    assert_eq!(t["state"], "drained", "{t}");
    assert_eq!(
        t["remaining_at_drain_start"],
        json!({"rooms": 3, "recordings": 1})
    );
    let updates = h.api("GET", &format!("/rollouts/{id}/updates"), &token, None);
    let kinds: Vec<&str> = updates
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|u| u["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["rollout_started", "target_draining", "target_drained"]
    );
}

/// The README's automation-API example, exactly as written there, run with bash against a
/// fresh Herald: every command succeeds (`curl -f` fails on any 4xx/5xx) and leaves what the
/// README says.
#[test]
fn the_readme_api_example_runs_on_a_fresh_herald() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let (_, after) = readme
        .split_once("### The automation API\n\n```sh\n")
        .expect("the README has the example");
    let (script, _) = after.split_once("```").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let h = Herald::start_anywhere(dir.path());
    let script = script.replace("http://127.0.0.1:8080", &h.url());
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(dir.path())
        .env("PATH", path)
        .env("HERALD_CONFIG", "/dev/null")
        .env("HERALD_DATABASE_URL", Herald::db(dir.path()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the README's example failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let token = h.token();
    let window = h.api("GET", "/maintenances/1", &token, None);
    assert_eq!(window["state"], "in_progress", "{window}");
    assert_eq!(window["components"][0], "api", "{window}");
    assert_eq!(window["steps"][0]["state"], "in_progress", "{window}");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("Database cluster migration"), "{listed}");
}
