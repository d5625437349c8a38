//! A large rollout reporting while the public reads the status page: 200 targets each
//! reporting every 2 s (100 reports/s, every report a real change: a drain count going down)
//! for 60 s while `wrk -t1` loads `/`. Reports p50/p99 of the report round trip and the page's
//! req/s against a quiet run (the same wrk, no reports) measured first in the same run, on the
//! real release binary with its SQLite file.
//!
//! Run: `cargo bench --bench rollout_reports` (wrk from Debian's package). Knobs: `DURATION`
//! (seconds per phase, default 60), `CONNECTIONS` (wrk, default 64), `TARGETS` (default 200),
//! `EVERY_MS` (each target's report interval, default 2000).
//! Targets: report p99 under 50 ms; page req/s at least 80 % of the quiet figure.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_herald");

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Herald(Child);

impl Drop for Herald {
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

/// `wrk -t1` against `url` for `secs`: requests per second.
fn wrk(url: &str, connections: u64, secs: u64) -> f64 {
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{secs}s"),
            "-H",
            "Accept-Encoding: br",
            url,
        ])
        .output()
        .expect("wrk is installed (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk's output:\n{text}"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn main() {
    let secs = env_or("DURATION", 60);
    let connections = env_or("CONNECTIONS", 64);
    let targets = env_or("TARGETS", 200) as usize;
    let every = Duration::from_millis(env_or("EVERY_MS", 2000));

    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/herald.db", dir.path().display());
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let token = {
        let out = Command::new(BIN)
            .args(["token", "create", "bench"])
            .env("HERALD_DATABASE_URL", &db)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let _herald = Herald(
        Command::new(BIN)
            .args(["serve", "--demo"])
            .current_dir(dir.path())
            .env("HERALD_DATABASE_URL", &db)
            .env("HERALD_LISTEN", format!("127.0.0.1:{port}"))
            .env("HERALD_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let id = runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.get(format!("{base}/readyz")).send().await.is_err() {
            assert!(Instant::now() < deadline, "herald did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let names: Vec<String> = (1..=targets).map(|i| format!("media-{i:03}")).collect();
        let r: Value = client
            .post(format!("{base}/api/v1/rollouts"))
            .bearer_auth(&token)
            .json(
                &json!({"title": "Fleet v2", "from_version": "v1", "to_version": "v2",
                          "targets": names}),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["id"].as_i64().expect("the rollout was created")
    });

    println!(
        "rollout_reports: {targets} targets every {every:?}, wrk -t1 -c{connections}, {secs} s per phase"
    );
    let quiet = wrk(&format!("{base}/"), connections, secs);
    println!("  quiet:  / {quiet:>9.0} req/s");

    // The reporters: target i reports at i × (every / targets) into each period, its rooms
    // going down by one each time, so every report is a change Herald commits.
    let stop = Instant::now() + Duration::from_secs(secs);
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<Duration>::new()));
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reporters = std::thread::spawn({
        let (client, token, base) = (client.clone(), token.clone(), base.clone());
        let (latencies, errors) = (latencies.clone(), errors.clone());
        move || {
            runtime.block_on(async move {
                let mut tasks = Vec::new();
                for i in 0..targets {
                    let (client, token, base) = (client.clone(), token.clone(), base.clone());
                    let (latencies, errors) = (latencies.clone(), errors.clone());
                    tasks.push(tokio::spawn(async move {
                        let url = format!("{base}/api/v1/rollouts/{id}/targets/media-{:03}", i + 1);
                        let offset = every.mul_f64(i as f64 / targets as f64);
                        tokio::time::sleep(offset).await;
                        let mut tick = tokio::time::interval(every);
                        let mut rooms = 100_000i64;
                        while Instant::now() < stop {
                            tick.tick().await;
                            let started = Instant::now();
                            let sent = client
                                .put(&url)
                                .bearer_auth(&token)
                                .json(&json!({"state": "draining", "remaining": {"rooms": rooms}}))
                                .send()
                                .await;
                            match sent {
                                Ok(r) if r.status().is_success() => {
                                    let _ = r.bytes().await;
                                    latencies.lock().unwrap().push(started.elapsed());
                                }
                                _ => {
                                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                }
                            }
                            rooms -= 1;
                        }
                    }));
                }
                for t in tasks {
                    let _ = t.await;
                }
            })
        }
    });
    let loaded = wrk(&format!("{base}/"), connections, secs);
    reporters.join().unwrap();
    let mut samples = latencies.lock().unwrap().clone();
    samples.sort();
    let failed = errors.load(std::sync::atomic::Ordering::Relaxed);
    assert!(!samples.is_empty(), "no report succeeded ({failed} failed)");
    let p50 = percentile(&samples, 0.50);
    let p99 = percentile(&samples, 0.99);
    let rate = samples.len() as f64 / secs as f64;
    let ratio = loaded / quiet;
    println!(
        "  loaded: / {loaded:>9.0} req/s ({:.0} % of quiet)",
        ratio * 100.0
    );
    println!(
        "  reports: {} ok ({rate:.0}/s), {failed} failed; p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        samples.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3
    );
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    println!(
        "  {} report p99 < 50 ms; {} page req/s >= 80 % of quiet",
        verdict(p99 < Duration::from_millis(50)),
        verdict(ratio >= 0.8)
    );
}
