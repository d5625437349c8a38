//! Sign-in bursts: what a flood of wrong passwords costs. Bursts of 200 and 2,000 concurrent
//! `POST /admin/login`, each from its own client address (behind a trusted proxy, so every
//! request is a different client to the throttle), in two shapes:
//!
//! - **one account**: every request guesses the admin's password;
//! - **spray**: every request names a different account (unknown names are hashed too, so the
//!   answer takes as long), which no per-account limit stops: only the bounded hashing pool.
//!
//! For each burst it reports the answers by status, how many passwords were checked (from
//! `herald_password_checks_total`), Herald's peak RSS while it lasts (`VmRSS` sampled every
//! 10 ms), and the status page's p50/p99 while it lasts, against the same page loaded the same
//! way just before the burst (the baseline, same run). Release binary, its own SQLite file.
//!
//! Run: `cargo bench --bench login_burst`. Knobs: `BURSTS` (default "200 2000"), `READERS`
//! (concurrent page readers, default 8). Targets: peak RSS under 100 MiB; during a burst the
//! page's median within 1.5× its quiet median and its p99 under 10 ms (the status page's own
//! latency target, `bench/status-page.sh`).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_herald");

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

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `readers` tasks fetching `/` one after another until `stop`: every latency.
async fn read_page(
    client: reqwest::Client,
    url: String,
    readers: usize,
    stop: Arc<AtomicBool>,
) -> Vec<Duration> {
    let mut tasks = Vec::new();
    for _ in 0..readers {
        let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let r = client.get(&url).send().await.expect("the page answers");
                assert!(r.status().is_success(), "the page answered {}", r.status());
                let _ = r.bytes().await;
                seen.push(started.elapsed());
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    all
}

/// One sign-in attempt on its own connection: the status code, or 0 if the connection failed.
async fn attempt(port: u16, name: String, client_ip: String) -> u16 {
    let body = format!("name={name}&password=wrong-{client_ip}");
    let request = format!(
        "POST /admin/login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         X-Forwarded-For: {client_ip}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return 0;
    };
    if stream.write_all(request.as_bytes()).await.is_err() {
        return 0;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    std::str::from_utf8(&answer[..answer.len().min(12)])
        .ok()
        .and_then(|l| l.get(9..12))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

async fn password_checks(client: &reqwest::Client, base: &str) -> u64 {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("herald_password_checks_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let bursts: Vec<usize> = std::env::var("BURSTS")
        .unwrap_or_else(|_| "200 2000".to_owned())
        .split_whitespace()
        .map(|b| b.parse().expect("BURSTS are numbers"))
        .collect();
    let readers: usize = std::env::var("READERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);

    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/herald.db", dir.path().display());
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let herald = Herald(
        Command::new(BIN)
            .args(["serve", "--demo"])
            .current_dir(dir.path())
            .env("HERALD_DATABASE_URL", &db)
            .env("HERALD_LISTEN", format!("127.0.0.1:{port}"))
            .env("HERALD_LOG", "error")
            .env("HERALD_TRUSTED_PROXIES", "127.0.0.1")
            .env("HERALD_ADMIN_USER", "admin")
            .env("HERALD_ADMIN_PASSWORD", "the right one, never guessed")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = herald.0.id();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.get(format!("{base}/readyz")).send().await.is_err() {
            assert!(Instant::now() < deadline, "herald did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("login_burst: bursts {bursts:?}, {readers} page readers, release binary");
        println!(
            "  {:<10} {:>6} {:>28} {:>8} {:>9} {:>16} {:>16}",
            "shape", "burst", "answers", "checked", "peak RSS", "page p50/p99", "quiet p50/p99"
        );
        let mut worst_rss = 0;
        let mut worst_median_ratio: f64 = 0.0;
        let mut worst_p99 = Duration::ZERO;
        let mut round = 0u32;
        for &burst in &bursts {
            for shape in ["one account", "spray"] {
                round += 1;
                // Quiet: the page alone for two seconds.
                let stop = Arc::new(AtomicBool::new(false));
                let quiet = tokio::spawn(read_page(client.clone(), format!("{base}/"), readers, stop.clone()));
                tokio::time::sleep(Duration::from_secs(2)).await;
                stop.store(true, Ordering::Relaxed);
                let quiet = quiet.await.unwrap();

                let checks_before = password_checks(&client, &base).await;
                let stop = Arc::new(AtomicBool::new(false));
                let page = tokio::spawn(read_page(client.clone(), format!("{base}/"), readers, stop.clone()));
                let sampler = std::thread::spawn({
                    let stop = stop.clone();
                    move || {
                        let mut peak = 0;
                        while !stop.load(Ordering::Relaxed) {
                            peak = peak.max(rss_kib(pid));
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        peak
                    }
                });
                let attempts: Vec<_> = (0..burst)
                    .map(|i| {
                        // A fresh address range per round, so no earlier round's failures count.
                        let ip = format!("10.{}.{}.{}", round, i / 250, i % 250 + 1);
                        let name = match shape {
                            "one account" => "admin".to_owned(),
                            _ => format!("user{round}x{i}"),
                        };
                        tokio::spawn(attempt(port, name, ip))
                    })
                    .collect();
                let mut answers = std::collections::BTreeMap::<u16, usize>::new();
                for a in attempts {
                    *answers.entry(a.await.unwrap()).or_default() += 1;
                }
                stop.store(true, Ordering::Relaxed);
                let during = page.await.unwrap();
                let peak = sampler.join().unwrap();
                let checked = password_checks(&client, &base).await - checks_before;
                let answers = answers
                    .iter()
                    .map(|(s, n)| format!("{n}×{s}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                let (p50, p99) = (percentile(&during, 0.5), percentile(&during, 0.99));
                let (q50, q99) = (percentile(&quiet, 0.5), percentile(&quiet, 0.99));
                println!(
                    "  {shape:<10} {burst:>6} {answers:>28} {checked:>8} {:>6.1} MiB {:>6.2}/{:>6.2} ms {:>6.2}/{:>6.2} ms",
                    peak as f64 / 1024.0,
                    ms(p50),
                    ms(p99),
                    ms(q50),
                    ms(q99)
                );
                worst_rss = worst_rss.max(peak);
                worst_median_ratio = worst_median_ratio.max(p50.as_secs_f64() / q50.as_secs_f64());
                worst_p99 = worst_p99.max(p99);
                // Let the hashing pool drain before the next round.
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
        }
        let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
        println!(
            "  {} peak RSS under 100 MiB ({:.1} MiB)\n  {} page median during bursts within 1.5× quiet ({:.2}×)\n  {} page p99 during bursts under 10 ms ({:.2} ms)",
            verdict(worst_rss < 100 * 1024),
            worst_rss as f64 / 1024.0,
            verdict(worst_median_ratio <= 1.5),
            worst_median_ratio,
            verdict(worst_p99 < Duration::from_millis(10)),
            ms(worst_p99)
        );
    });
}
