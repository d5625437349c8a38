//! `herald report` and `herald rollout wait`: the rollout API from shell scripts, SIGTERM
//! handlers and CI pipelines. Both talk HTTP to a running Herald (`--url`/`HERALD_URL`,
//! `--token`/`HERALD_TOKEN`), retry while it is unreachable, and exit with a status a script
//! can act on (see [`code`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Exit statuses, as `--help` documents them.
pub mod code {
    pub const REFUSED: u8 = 3;
    pub const UNREACHABLE: u8 = 4;
    pub const FAILED: u8 = 5;
    pub const STALLED: u8 = 6;
    pub const TIMEOUT: u8 = 7;
}

/// A command's end with a status of its own; the message goes to stderr.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

impl Exit {
    fn with(code: u8, message: impl Into<String>) -> anyhow::Error {
        Self {
            code,
            message: message.into(),
        }
        .into()
    }
}

/// Where Herald is and who is asking.
#[derive(Debug, Clone, clap::Args)]
pub struct Remote {
    /// Herald's base URL
    #[arg(long, env = "HERALD_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API token (from `herald token create` or the admin UI)
    #[arg(long, env = "HERALD_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Keep retrying connection errors and 5xx answers this long
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s", value_name = "DURATION")]
    pub retry_for: Duration,
}

/// `label=N,label=N` as typed after `--remaining`.
pub fn parse_counts(s: &str) -> Result<BTreeMap<String, u64>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (label, n) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: write label=count, e.g. rooms=12"))?;
        let n = n
            .trim()
            .parse::<u64>()
            .map_err(|_| format!("{part:?}: a count is a whole number from 0"))?;
        out.insert(label.trim().to_owned(), n);
    }
    Ok(out)
}

/// A target name as one URL path segment.
fn segment(name: &str) -> String {
    /// Everything but RFC 3986's unreserved characters.
    const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(name, RESERVED).to_string()
}

enum Outcome {
    Ok(Value),
    /// 4xx: asking again would not help.
    Refused(String),
}

struct Client {
    http: reqwest::Client,
    remote: Remote,
}

impl Client {
    fn new(remote: &Remote) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .connect_timeout(Duration::from_secs(5))
                .build()?,
            remote: Remote {
                url: remote.url.trim_end_matches('/').to_owned(),
                ..remote.clone()
            },
        })
    }

    /// One call, retried with backoff on connection errors and 5xx for `--retry-for`.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Outcome> {
        let url = format!("{}/api/v1{path}", self.remote.url);
        let started = Instant::now();
        let mut wait = Duration::from_millis(250);
        // One key for this call and all its retries: a retry after a timeout whose first try
        // did reach Herald gets the first answer back instead of making the change twice.
        let key = (method != reqwest::Method::GET).then(|| crate::ids::random_hex(32));
        loop {
            let mut request = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(&self.remote.token);
            if let Some(key) = &key {
                request = request.header("Idempotency-Key", key);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let why = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    if status.is_success() {
                        return Ok(Outcome::Ok(
                            serde_json::from_str(&text).unwrap_or(Value::Null),
                        ));
                    }
                    let error = serde_json::from_str::<Value>(&text).unwrap_or(Value::Null);
                    let message = error["error"]["message"]
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| text.chars().take(200).collect());
                    // The first try is still being answered: its answer comes with a retry.
                    let first_running = error["error"]["code"] == "idempotency_key_in_use";
                    if status.is_client_error() && !first_running {
                        return Ok(Outcome::Refused(format!(
                            "Herald refused ({status}): {message}"
                        )));
                    }
                    format!("Herald answered {status}: {message}")
                }
                Err(e) => format!("cannot reach Herald at {}: {e}", self.remote.url),
            };
            if started.elapsed() + wait > self.remote.retry_for {
                return Err(Exit::with(
                    code::UNREACHABLE,
                    format!("{why} (gave up after {:?})", started.elapsed()),
                ));
            }
            eprintln!("herald: {why}; retrying in {wait:?}");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }
}

/// What `herald report` sends.
pub struct ReportArgs {
    pub rollout: i64,
    pub target: String,
    pub state: String,
    pub remaining: Option<BTreeMap<String, u64>>,
    pub version: Option<String>,
    pub forced: bool,
    pub note: Option<String>,
}

/// `herald report`: nothing on stdout; the new summary on stderr.
pub async fn report(remote: &Remote, args: ReportArgs) -> anyhow::Result<()> {
    let client = Client::new(remote)?;
    let mut body = json!({"state": args.state});
    if let Some(counts) = args.remaining {
        body["remaining"] = json!(counts);
    }
    if let Some(v) = args.version {
        body["version"] = json!(v);
    }
    if args.forced {
        body["forced"] = json!(true);
    }
    if let Some(n) = args.note {
        body["note"] = json!(n);
    }
    let path = format!(
        "/rollouts/{}/targets/{}",
        args.rollout,
        segment(&args.target)
    );
    match client
        .call(reqwest::Method::PUT, &path, Some(&body))
        .await?
    {
        Outcome::Ok(v) => {
            eprintln!("{}", v["summary"].as_str().unwrap_or("reported"));
            Ok(())
        }
        Outcome::Refused(why) => Err(Exit::with(code::REFUSED, why)),
    }
}

/// `herald rollout wait`: a line on stderr whenever the rollout moves, the outcome on stdout.
pub async fn wait(
    remote: &Remote,
    id: i64,
    timeout: Option<Duration>,
    interval: Duration,
) -> anyhow::Result<()> {
    let client = Client::new(remote)?;
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let r = match client
            .call(reqwest::Method::GET, &format!("/rollouts/{id}"), None)
            .await?
        {
            Outcome::Ok(v) => v,
            Outcome::Refused(why) => return Err(Exit::with(code::REFUSED, why)),
        };
        let state = r["state"].as_str().unwrap_or_default().to_owned();
        let stalled = r["stalled"].as_bool().unwrap_or(false);
        let mut line = r["summary"].as_str().unwrap_or_default().to_owned();
        if stalled {
            line.push_str(" (stalled)");
        }
        if line != last {
            eprintln!("{line}");
            last = line;
        }
        match state.as_str() {
            "completed" => {
                println!("completed");
                return Ok(());
            }
            "failed" | "aborted" => {
                println!("{state}");
                let how = match r["rolled_back_by"].as_i64() {
                    Some(back) => format!("rollout {id} was rolled back by rollout {back}"),
                    None => format!("rollout {id} {state}"),
                };
                return Err(Exit::with(code::FAILED, how));
            }
            _ if stalled => {
                println!("stalled");
                return Err(Exit::with(
                    code::STALLED,
                    format!("rollout {id} stalled: no progress within its deadline"),
                ));
            }
            _ => {}
        }
        if let Some(limit) = timeout
            && started.elapsed() >= limit
        {
            println!("timeout");
            return Err(Exit::with(
                code::TIMEOUT,
                format!("rollout {id} is still {state} after {limit:?}"),
            ));
        }
        let left = timeout.map_or(interval, |t| t.saturating_sub(started.elapsed()));
        tokio::time::sleep(interval.min(left)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_segments() {
        let c = parse_counts("rooms=12, recordings=3").unwrap();
        assert_eq!(c["rooms"], 12);
        assert_eq!(c["recordings"], 3);
        assert!(parse_counts("rooms").is_err());
        assert!(parse_counts("rooms=-1").is_err());
        assert!(parse_counts("").unwrap().is_empty());
        assert_eq!(segment("fishjam-1.eu"), "fishjam-1.eu");
        assert_eq!(segment("a/b ñ"), "a%2Fb%20%C3%B1");
    }
}
