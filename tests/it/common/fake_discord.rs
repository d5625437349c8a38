//! A local Discord API v10 server for fault-injection tests.
//!
//! It speaks the wire format serenity uses when built with `HttpBuilder::proxy(base)`: requests
//! arrive at `{base}/api/v10/...`. Every request body is checked against the official OpenAPI
//! document (`tests/reference/discord/openapi.json`) and against the limits Discord enforces
//! beyond it; violations are answered like Discord (400, code 50035) and recorded.
//!
//! This file also holds the plumbing shared with `fake_bluesky`: the [`Fault`] queue, the
//! [`Recorded`] request log and a hyper accept loop that can close a connection without
//! answering.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

// ---------------------------------------------------------------------------------------------
// Shared plumbing (also used by fake_bluesky)
// ---------------------------------------------------------------------------------------------

/// A fault for the next request that matches its filter. Faults are consumed in FIFO order.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Answer with this status and the service's usual JSON error body, without acting.
    Status(u16),
    /// Answer 429 with the service's rate-limit body and headers, without acting.
    RateLimited { retry_after: f64 },
    /// Read the request, wait this long, then act and answer normally. The request is acted on
    /// even if the client gave up in the meantime.
    Hang(Duration),
    /// Read the whole request, then close the TCP connection without acting or answering.
    DropBeforeProcessing,
    /// Act on the request (e.g. create the message), then close the connection unanswered.
    DropAfterProcessing,
    /// Act on the request, then answer `204 No Content` with no body, as a relay or proxy in
    /// front of the service may.
    NoContent,
}

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    /// The body as JSON; `None` when empty or not JSON.
    pub body: Option<Value>,
    /// The status answered; `None` when the connection was closed without an answer.
    pub status: Option<u16>,
    /// The fault injected into this request, if any.
    pub fault: Option<Fault>,
    /// The client's address: the same port means the same (kept-alive) connection.
    pub peer: SocketAddr,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
pub(crate) struct FaultQueue(Mutex<VecDeque<(Fault, Option<String>)>>);

impl FaultQueue {
    pub(crate) fn push(&self, fault: Fault, path_filter: Option<&str>) {
        lock(&self.0).push_back((fault, path_filter.map(str::to_owned)));
    }

    /// Remove and return the first fault whose filter is a substring of `target`.
    pub(crate) fn take(&self, target: &str) -> Option<Fault> {
        let mut queue = lock(&self.0);
        let at = queue
            .iter()
            .position(|(_, filter)| filter.as_deref().is_none_or(|f| target.contains(f)))?;
        queue.remove(at).map(|(fault, _)| fault)
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.0).len()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A request read in full.
pub(crate) struct Req {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// `Some` when the body is non-empty JSON.
    pub json: Option<Value>,
    pub peer: SocketAddr,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Path and query, which fault filters are matched against.
    pub fn target(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }

    /// A decoded query parameter (the first one of that name).
    pub fn query_param(&self, name: &str) -> Option<String> {
        let url = reqwest::Url::parse(&format!("http://fake{}", self.target())).ok()?;
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    pub fn bearer(&self) -> Option<&str> {
        let h = self.header("authorization")?;
        h.strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
    }
}

/// An answer: a status, headers and an optional JSON body.
pub(crate) struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Some(body),
        }
    }

    pub fn empty(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let mut builder = Response::builder().status(self.status);
        for (k, v) in &self.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let body = match self.body {
            Some(v) => {
                builder = builder.header("content-type", "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        builder.body(Full::new(body)).expect("valid response")
    }
}

pub(crate) enum Outcome {
    Reply(Reply),
    Drop,
}

/// What a fake service provides to the shared plumbing.
pub(crate) trait Backend: Send + Sync + 'static {
    /// Act on a request. Synchronous: all state is in memory.
    fn process(&self, req: &Req) -> Reply;
    /// The answer for an injected `Fault::Status`.
    fn fault_reply(&self, req: &Req, status: u16) -> Reply;
    /// The answer for an injected `Fault::RateLimited`.
    fn rate_limited(&self, req: &Req, retry_after: f64) -> Reply;
    fn faults(&self) -> &FaultQueue;
    fn record(&self, recorded: Recorded);
}

async fn handle<B: Backend>(backend: Arc<B>, req: Req) -> Outcome {
    let fault = backend.faults().take(&req.target());
    let outcome = match &fault {
        None => Outcome::Reply(backend.process(&req)),
        Some(Fault::Status(code)) => Outcome::Reply(backend.fault_reply(&req, *code)),
        Some(Fault::RateLimited { retry_after }) => {
            Outcome::Reply(backend.rate_limited(&req, *retry_after))
        }
        Some(Fault::Hang(delay)) => {
            tokio::time::sleep(*delay).await;
            Outcome::Reply(backend.process(&req))
        }
        Some(Fault::DropBeforeProcessing) => Outcome::Drop,
        Some(Fault::DropAfterProcessing) => {
            backend.process(&req);
            Outcome::Drop
        }
        Some(Fault::NoContent) => {
            backend.process(&req);
            Outcome::Reply(Reply::empty(204))
        }
    };
    backend.record(Recorded {
        method: req.method.to_string(),
        path: req.path.clone(),
        query: req.query.clone(),
        headers: req
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: req.json.clone(),
        status: match &outcome {
            Outcome::Reply(r) => Some(r.status),
            Outcome::Drop => None,
        },
        fault,
        peer: req.peer,
    });
    outcome
}

/// Bind 127.0.0.1:0 and serve `backend` on the current runtime until the runtime ends.
pub(crate) async fn serve<B: Backend>(backend: Arc<B>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    tokio::spawn(connection(stream, peer, backend.clone()));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    });
    addr
}

/// Serve one TCP connection (keep-alive included). A handler that wants the connection dropped
/// says so over `kill` and never returns; the connection task is then aborted, which closes the
/// socket without an answer.
async fn connection<B: Backend>(stream: TcpStream, peer: SocketAddr, backend: Arc<B>) {
    let (kill, mut killed) = mpsc::unbounded_channel::<()>();
    let service = service_fn(move |request: Request<Incoming>| {
        let backend = backend.clone();
        let kill = kill.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await?.to_bytes();
            let json = if body.is_empty() {
                None
            } else {
                serde_json::from_slice(&body).ok()
            };
            let req = Req {
                method: parts.method,
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().map(str::to_owned),
                headers: parts.headers,
                body,
                json,
                peer,
            };
            // Its own task, so the outcome does not depend on the client staying connected.
            let outcome = match tokio::spawn(handle(backend, req)).await {
                Ok(outcome) => outcome,
                Err(e) => Outcome::Reply(Reply::json(
                    500,
                    json!({"message": format!("fake server handler failed: {e}"), "code": 0}),
                )),
            };
            match outcome {
                Outcome::Reply(reply) => Ok::<_, hyper::Error>(reply.into_response()),
                Outcome::Drop => {
                    let _ = kill.send(());
                    std::future::pending().await
                }
            }
        }
    });
    let mut task = tokio::spawn(async move {
        let _ = http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service)
            .await;
    });
    tokio::select! {
        _ = &mut task => {}
        Some(()) = killed.recv() => task.abort(),
    }
}

pub(crate) fn now_secs_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub(crate) fn canonical_reason(code: u16) -> &'static str {
    StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

// ---------------------------------------------------------------------------------------------
// The Discord fake
// ---------------------------------------------------------------------------------------------

pub const WEBHOOK_ID: u64 = 1_100_000_000_000_000_001;
pub const WEBHOOK_TOKEN: &str = "webhook-token";
pub const TEXT_CHANNEL: u64 = 1_200_000_000_000_000_001;
pub const ANNOUNCEMENT_CHANNEL: u64 = 1_200_000_000_000_000_002;
pub const GUILD: u64 = 1_300_000_000_000_000_001;
pub const BOT_USER: u64 = 1_400_000_000_000_000_001;
const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;
/// Message flag set by a crosspost.
pub const CROSSPOSTED: u64 = 1;

/// A message as the fake stores it.
#[derive(Clone, Debug)]
pub struct Message {
    pub id: u64,
    pub channel_id: u64,
    /// Created through the webhook (else by the bot).
    pub webhook: bool,
    pub content: String,
    /// The embeds array as last sent (`[]` when none).
    pub embeds: Value,
    pub allowed_mentions: Option<Value>,
    pub nonce: Option<String>,
    pub edits: usize,
    pub crossposted: bool,
    pub flags: u64,
    pub timestamp: String,
    pub edited_timestamp: Option<String>,
}

/// A body that failed validation: against the OpenAPI schema or Discord's limits.
#[derive(Clone, Debug)]
pub struct SchemaError {
    pub method: String,
    pub path: String,
    /// JSON pointer into the body ("" for the whole body).
    pub pointer: String,
    pub error: String,
}

#[derive(Clone, Debug)]
struct Channel {
    id: u64,
    kind: u8,
    name: &'static str,
}

struct DiscordState {
    bot_token: String,
    channels: Vec<Channel>,
    messages: Vec<Message>,
    /// Ids of the messages deleted.
    deleted: Vec<u64>,
    last_id: u64,
    schema_errors: Vec<SchemaError>,
    requests: Vec<Recorded>,
}

struct DiscordBackend {
    state: Mutex<DiscordState>,
    faults: FaultQueue,
}

/// Handle to a running fake Discord; cheap to clone.
#[derive(Clone)]
pub struct FakeDiscord {
    backend: Arc<DiscordBackend>,
    addr: SocketAddr,
}

impl FakeDiscord {
    /// Start on 127.0.0.1 with a random port, on the current tokio runtime.
    pub async fn start() -> Self {
        // Load (and check) the OpenAPI document up front so a missing file fails loudly.
        let _ = openapi();
        let backend = Arc::new(DiscordBackend {
            state: Mutex::new(DiscordState {
                bot_token: "bot-token".into(),
                channels: vec![
                    Channel {
                        id: TEXT_CHANNEL,
                        kind: 0,
                        name: "status",
                    },
                    Channel {
                        id: ANNOUNCEMENT_CHANNEL,
                        kind: 5,
                        name: "announcements",
                    },
                ],
                messages: Vec::new(),
                deleted: Vec::new(),
                last_id: 0,
                schema_errors: Vec::new(),
                requests: Vec::new(),
            }),
            faults: FaultQueue::default(),
        });
        let addr = serve(backend.clone()).await;
        Self { backend, addr }
    }

    /// `http://127.0.0.1:PORT`, for `HttpBuilder::proxy`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `{base}/api/webhooks/{id}/{token}` for the webhook the fake knows.
    pub fn webhook_url(&self) -> String {
        format!("{}/api/webhooks/{WEBHOOK_ID}/{WEBHOOK_TOKEN}", self.base())
    }

    pub fn webhook_id(&self) -> u64 {
        WEBHOOK_ID
    }

    pub fn webhook_token(&self) -> &'static str {
        WEBHOOK_TOKEN
    }

    pub fn text_channel(&self) -> u64 {
        TEXT_CHANNEL
    }

    pub fn announcement_channel(&self) -> u64 {
        ANNOUNCEMENT_CHANNEL
    }

    pub fn guild(&self) -> u64 {
        GUILD
    }

    /// The bot token currently accepted (without the `Bot ` prefix).
    pub fn bot_token(&self) -> String {
        lock(&self.backend.state).bot_token.clone()
    }

    /// Change the accepted bot token: requests with the old one get 401.
    pub fn set_bot_token(&self, token: &str) {
        lock(&self.backend.state).bot_token = token.to_owned();
    }

    /// Messages in creation order.
    /// Ids of the messages deleted (`DELETE …/messages/{id}`).
    pub fn deleted(&self) -> Vec<u64> {
        lock(&self.backend.state).deleted.clone()
    }

    pub fn messages(&self) -> Vec<Message> {
        lock(&self.backend.state).messages.clone()
    }

    pub fn message(&self, id: u64) -> Option<Message> {
        lock(&self.backend.state)
            .messages
            .iter()
            .find(|m| m.id == id)
            .cloned()
    }

    /// Every request received, faulted ones included, in the order they were answered.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.backend.state).requests.clone()
    }

    /// Every body that failed the OpenAPI schema or Discord's limits.
    pub fn schema_errors(&self) -> Vec<SchemaError> {
        lock(&self.backend.state).schema_errors.clone()
    }

    /// Queue a fault for the next request whose path and query contain `path_filter`.
    pub fn push_fault(&self, fault: Fault, path_filter: Option<&str>) {
        self.backend.faults.push(fault, path_filter);
    }

    /// Faults not yet consumed.
    pub fn pending_faults(&self) -> usize {
        self.backend.faults.len()
    }
}

fn discord_error(status: u16, code: u64, message: &str) -> Reply {
    Reply::json(status, json!({"message": message, "code": code}))
}

fn unauthorized() -> Reply {
    discord_error(401, 0, "401: Unauthorized")
}

fn not_found() -> Reply {
    discord_error(404, 0, "404: Not Found")
}

fn unknown_channel() -> Reply {
    discord_error(404, 10003, "Unknown Channel")
}

fn unknown_message() -> Reply {
    discord_error(404, 10008, "Unknown Message")
}

fn unknown_webhook() -> Reply {
    discord_error(404, 10015, "Unknown Webhook")
}

/// 400 50035 for a path parameter that is not a snowflake.
fn bad_snowflake(name: &str, value: &str) -> Reply {
    let mut errors = Map::new();
    errors.insert(
        name.to_owned(),
        json!({"_errors": [{"code": "NUMBER_TYPE_COERCE", "message": format!("Value \"{value}\" is not snowflake.")}]}),
    );
    Reply::json(
        400,
        json!({"code": 50035, "message": "Invalid Form Body", "errors": errors}),
    )
}

fn timestamp_now() -> String {
    let ts = jiff::Timestamp::now();
    let s = format!("{ts:.6}");
    match s.strip_suffix('Z') {
        Some(s) => format!("{s}+00:00"),
        None => s,
    }
}

fn rate_limit_headers(reply: Reply, route: &str, limit: u32, remaining: u32, after: f64) -> Reply {
    let reset = now_secs_f64() + after;
    let bucket = {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(route.as_bytes());
        digest[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    reply
        .with_header("x-ratelimit-limit", limit.to_string())
        .with_header("x-ratelimit-remaining", remaining.to_string())
        .with_header("x-ratelimit-reset", format!("{reset:.3}"))
        .with_header("x-ratelimit-reset-after", format!("{after:.3}"))
        .with_header("x-ratelimit-bucket", bucket)
}

/// The route with ids replaced, for rate-limit buckets (major parameters kept, like Discord).
fn route_key(method: &Method, path: &str) -> String {
    let mut out = Vec::new();
    let segs: Vec<&str> = path.split('/').collect();
    for (i, s) in segs.iter().enumerate() {
        let major = i > 0 && matches!(segs[i - 1], "channels" | "webhooks");
        let token = i > 1 && segs[i - 2] == "webhooks";
        if !major && !token && !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            out.push("{id}");
        } else {
            out.push(s);
        }
    }
    format!("{method} {}", out.join("/"))
}

impl Backend for DiscordBackend {
    fn process(&self, req: &Req) -> Reply {
        let reply = self.route(req);
        if (200..300).contains(&reply.status) {
            rate_limit_headers(reply, &route_key(&req.method, &req.path), 5, 4, 5.0)
        } else {
            reply
        }
    }

    fn fault_reply(&self, _req: &Req, status: u16) -> Reply {
        discord_error(
            status,
            0,
            &format!("{status}: {}", canonical_reason(status)),
        )
    }

    fn rate_limited(&self, req: &Req, retry_after: f64) -> Reply {
        let reply = Reply::json(
            429,
            json!({"message": "You are being rate limited.", "retry_after": retry_after, "global": false}),
        )
        .with_header("retry-after", format!("{}", retry_after.ceil() as u64))
        .with_header("x-ratelimit-scope", "user");
        rate_limit_headers(reply, &route_key(&req.method, &req.path), 5, 0, retry_after)
    }

    fn faults(&self) -> &FaultQueue {
        &self.faults
    }

    fn record(&self, recorded: Recorded) {
        lock(&self.state).requests.push(recorded);
    }
}

impl DiscordBackend {
    fn route(&self, req: &Req) -> Reply {
        let Some(rest) = req.path.strip_prefix("/api/v10/") else {
            return not_found();
        };
        let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
        let m = &req.method;
        match segs.as_slice() {
            ["channels", channel] => {
                if m != Method::GET {
                    return method_not_allowed();
                }
                self.bot(req, || self.get_channel(channel))
            }
            ["channels", channel, "messages"] => {
                if m != Method::POST {
                    return method_not_allowed();
                }
                self.bot(req, || self.create_message(req, channel))
            }
            ["channels", channel, "messages", message] => match *m {
                Method::PATCH => self.bot(req, || self.edit_message(req, channel, message)),
                Method::GET => self.bot(req, || self.get_message(channel, message)),
                Method::DELETE => self.bot(req, || self.delete_message(channel, message)),
                _ => method_not_allowed(),
            },
            ["channels", channel, "messages", message, "crosspost"] => {
                if m != Method::POST {
                    return method_not_allowed();
                }
                self.bot(req, || self.crosspost(channel, message))
            }
            ["webhooks", id, token] => match *m {
                Method::GET => self.get_webhook(id, token),
                Method::POST => self.execute_webhook(req, id, token),
                _ => method_not_allowed(),
            },
            ["webhooks", id, token, "messages", message] => match *m {
                Method::GET => self.webhook_message(id, token, message, None),
                Method::PATCH => self.webhook_message(id, token, message, Some(req)),
                Method::DELETE => {
                    if let Err(r) = self.webhook(id, token) {
                        return r;
                    }
                    match self.find_message(TEXT_CHANNEL, message) {
                        Ok(m) if m.webhook => self.remove_message(m.id),
                        Ok(_) => unknown_message(),
                        Err(r) => r,
                    }
                }
                _ => method_not_allowed(),
            },
            _ => not_found(),
        }
    }

    /// Check `Authorization: Bot <token>`, then run `f`.
    fn bot(&self, req: &Req, f: impl FnOnce() -> Reply) -> Reply {
        let expected = format!("Bot {}", lock(&self.state).bot_token);
        if req.header("authorization") != Some(expected.as_str()) {
            return unauthorized();
        }
        f()
    }

    fn channel(&self, raw: &str) -> Result<Channel, Reply> {
        let id: u64 = raw.parse().map_err(|_| bad_snowflake("channel_id", raw))?;
        lock(&self.state)
            .channels
            .iter()
            .find(|c| c.id == id)
            .cloned()
            .ok_or_else(unknown_channel)
    }

    fn get_channel(&self, raw: &str) -> Reply {
        let c = match self.channel(raw) {
            Ok(c) => c,
            Err(r) => return r,
        };
        let last = lock(&self.state)
            .messages
            .iter()
            .rev()
            .find(|m| m.channel_id == c.id)
            .map(|m| m.id.to_string());
        Reply::json(
            200,
            json!({
                "id": c.id.to_string(),
                "type": c.kind,
                "guild_id": GUILD.to_string(),
                "name": c.name,
                "position": 0,
                "flags": 0,
                "parent_id": null,
                "topic": null,
                "nsfw": false,
                "rate_limit_per_user": 0,
                "last_message_id": last,
                "permission_overwrites": [],
            }),
        )
    }

    fn next_id(&self, state: &mut DiscordState) -> u64 {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(DISCORD_EPOCH_MS);
        let id = ((ms.saturating_sub(DISCORD_EPOCH_MS)) << 22).max(state.last_id + 1);
        state.last_id = id;
        id
    }

    /// Parse, validate against the OpenAPI document and Discord's limits. On failure the errors
    /// are recorded and the 400 answer is returned.
    fn validated_body(&self, req: &Req) -> Result<Value, Reply> {
        if req.body.is_empty() {
            return Err(discord_error(
                400,
                50109,
                "The request body contains invalid JSON.",
            ));
        }
        let Some(body) = req.json.clone() else {
            return Err(discord_error(
                400,
                50109,
                "The request body contains invalid JSON.",
            ));
        };
        let api_path = req.path.strip_prefix("/api/v10").unwrap_or(&req.path);
        let mut problems = schema_problems(req.method.as_str(), api_path, &body);
        for p in limit_problems(&body) {
            if !problems.iter().any(|q| q.pointer == p.pointer) {
                problems.push(p);
            }
        }
        if problems.is_empty() {
            return Ok(body);
        }
        let mut state = lock(&self.state);
        for p in &problems {
            state.schema_errors.push(SchemaError {
                method: req.method.to_string(),
                path: req.path.clone(),
                pointer: p.pointer.clone(),
                error: p.message.clone(),
            });
        }
        Err(Reply::json(
            400,
            json!({"code": 50035, "message": "Invalid Form Body", "errors": nest_errors(&problems)}),
        ))
    }

    fn create_message(&self, req: &Req, raw_channel: &str) -> Reply {
        let channel = match self.channel(raw_channel) {
            Ok(c) => c,
            Err(r) => return r,
        };
        let body = match self.validated_body(req) {
            Ok(b) => b,
            Err(r) => return r,
        };
        if is_empty_message(&body) {
            return discord_error(400, 50006, "Cannot send an empty message");
        }
        let nonce = body.get("nonce").and_then(nonce_string);
        let enforce = body.get("enforce_nonce").and_then(Value::as_bool) == Some(true);
        let mut state = lock(&self.state);
        if let (Some(n), true) = (&nonce, enforce)
            && let Some(existing) = state
                .messages
                .iter()
                .find(|m| m.channel_id == channel.id && !m.webhook && m.nonce.as_ref() == Some(n))
        {
            return Reply::json(200, message_json(existing));
        }
        let id = self.next_id(&mut state);
        let message = Message {
            id,
            channel_id: channel.id,
            webhook: false,
            content: body
                .get("content")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            embeds: normalise_embeds(body.get("embeds")),
            allowed_mentions: body.get("allowed_mentions").cloned(),
            nonce,
            edits: 0,
            crossposted: false,
            flags: 0,
            timestamp: timestamp_now(),
            edited_timestamp: None,
        };
        let out = message_json(&message);
        state.messages.push(message);
        Reply::json(200, out)
    }

    fn find_message(&self, channel: u64, raw: &str) -> Result<Message, Reply> {
        let id: u64 = raw.parse().map_err(|_| bad_snowflake("message_id", raw))?;
        lock(&self.state)
            .messages
            .iter()
            .find(|m| m.id == id && m.channel_id == channel)
            .cloned()
            .ok_or_else(unknown_message)
    }

    fn get_message(&self, raw_channel: &str, raw_message: &str) -> Reply {
        let channel = match self.channel(raw_channel) {
            Ok(c) => c,
            Err(r) => return r,
        };
        match self.find_message(channel.id, raw_message) {
            Ok(m) => Reply::json(200, message_json(&m)),
            Err(r) => r,
        }
    }

    fn edit_message(&self, req: &Req, raw_channel: &str, raw_message: &str) -> Reply {
        let channel = match self.channel(raw_channel) {
            Ok(c) => c,
            Err(r) => return r,
        };
        let body = match self.validated_body(req) {
            Ok(b) => b,
            Err(r) => return r,
        };
        let message = match self.find_message(channel.id, raw_message) {
            Ok(m) => m,
            Err(r) => return r,
        };
        if message.webhook {
            return discord_error(403, 50005, "Cannot edit a message authored by another user");
        }
        self.apply_edit(message.id, &body)
    }

    /// `DELETE /channels/{c}/messages/{m}`: 204, as Discord answers.
    fn delete_message(&self, raw_channel: &str, raw_message: &str) -> Reply {
        let channel = match self.channel(raw_channel) {
            Ok(c) => c,
            Err(r) => return r,
        };
        match self.find_message(channel.id, raw_message) {
            Ok(m) => self.remove_message(m.id),
            Err(r) => r,
        }
    }

    fn remove_message(&self, id: u64) -> Reply {
        let mut state = lock(&self.state);
        state.messages.retain(|m| m.id != id);
        state.deleted.push(id);
        Reply::empty(204)
    }

    fn apply_edit(&self, id: u64, body: &Value) -> Reply {
        let mut state = lock(&self.state);
        let Some(m) = state.messages.iter_mut().find(|m| m.id == id) else {
            return unknown_message();
        };
        if let Some(c) = body.get("content") {
            m.content = c.as_str().unwrap_or("").to_owned();
        }
        if let Some(e) = body.get("embeds") {
            m.embeds = normalise_embeds(Some(e));
        }
        if let Some(a) = body.get("allowed_mentions") {
            m.allowed_mentions = Some(a.clone());
        }
        if m.content.is_empty() && m.embeds.as_array().is_none_or(Vec::is_empty) {
            return discord_error(400, 50006, "Cannot send an empty message");
        }
        m.edits += 1;
        m.edited_timestamp = Some(timestamp_now());
        Reply::json(200, message_json(m))
    }

    fn crosspost(&self, raw_channel: &str, raw_message: &str) -> Reply {
        let channel = match self.channel(raw_channel) {
            Ok(c) => c,
            Err(r) => return r,
        };
        let message = match self.find_message(channel.id, raw_message) {
            Ok(m) => m,
            Err(r) => return r,
        };
        if channel.kind != 5 {
            return discord_error(400, 50024, "Cannot execute action on this channel type");
        }
        let mut state = lock(&self.state);
        let Some(m) = state.messages.iter_mut().find(|m| m.id == message.id) else {
            return unknown_message();
        };
        if m.crossposted {
            return discord_error(400, 40033, "This message has already been crossposted.");
        }
        m.crossposted = true;
        m.flags |= CROSSPOSTED;
        Reply::json(200, message_json(m))
    }

    /// Check the webhook id and token in the path.
    fn webhook(&self, raw_id: &str, token: &str) -> Result<(), Reply> {
        let id: u64 = raw_id
            .parse()
            .map_err(|_| bad_snowflake("webhook_id", raw_id))?;
        if id != WEBHOOK_ID {
            return Err(unknown_webhook());
        }
        if token != WEBHOOK_TOKEN {
            return Err(discord_error(401, 50027, "Invalid Webhook Token"));
        }
        Ok(())
    }

    fn get_webhook(&self, raw_id: &str, token: &str) -> Reply {
        if let Err(r) = self.webhook(raw_id, token) {
            return r;
        }
        Reply::json(
            200,
            json!({
                "id": WEBHOOK_ID.to_string(),
                "type": 1,
                "guild_id": GUILD.to_string(),
                "channel_id": TEXT_CHANNEL.to_string(),
                "name": "Herald",
                "avatar": null,
                "application_id": null,
                "token": WEBHOOK_TOKEN,
            }),
        )
    }

    fn execute_webhook(&self, req: &Req, raw_id: &str, token: &str) -> Reply {
        if let Err(r) = self.webhook(raw_id, token) {
            return r;
        }
        let body = match self.validated_body(req) {
            Ok(b) => b,
            Err(r) => return r,
        };
        if is_empty_message(&body) {
            return discord_error(400, 50006, "Cannot send an empty message");
        }
        let wait = req
            .query_param("wait")
            .is_some_and(|w| w.eq_ignore_ascii_case("true") || w == "1");
        let mut state = lock(&self.state);
        let id = self.next_id(&mut state);
        let message = Message {
            id,
            channel_id: TEXT_CHANNEL,
            webhook: true,
            content: body
                .get("content")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            embeds: normalise_embeds(body.get("embeds")),
            allowed_mentions: body.get("allowed_mentions").cloned(),
            nonce: None,
            edits: 0,
            crossposted: false,
            flags: 0,
            timestamp: timestamp_now(),
            edited_timestamp: None,
        };
        let out = message_json(&message);
        state.messages.push(message);
        if wait {
            Reply::json(200, out)
        } else {
            Reply::empty(204)
        }
    }

    /// GET (edit = None) or PATCH a message the webhook sent.
    fn webhook_message(
        &self,
        raw_id: &str,
        token: &str,
        raw_message: &str,
        edit: Option<&Req>,
    ) -> Reply {
        if let Err(r) = self.webhook(raw_id, token) {
            return r;
        }
        let body = match edit.map(|req| self.validated_body(req)).transpose() {
            Ok(b) => b,
            Err(r) => return r,
        };
        let message = match self.find_message(TEXT_CHANNEL, raw_message) {
            Ok(m) if m.webhook => m,
            Ok(_) => return unknown_message(),
            Err(r) => return r,
        };
        match body {
            None => Reply::json(200, message_json(&message)),
            Some(body) => self.apply_edit(message.id, &body),
        }
    }
}

fn method_not_allowed() -> Reply {
    discord_error(405, 0, "405: Method Not Allowed")
}

fn nonce_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn is_empty_message(body: &Value) -> bool {
    let content = body.get("content").and_then(Value::as_str).unwrap_or("");
    let has = |k: &str| {
        body.get(k)
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    };
    content.is_empty()
        && !has("embeds")
        && !has("components")
        && !has("sticker_ids")
        && !has("attachments")
        && body.get("poll").is_none_or(Value::is_null)
}

/// Embeds as Discord returns them: `type: "rich"` and `inline` on fields filled in.
fn normalise_embeds(embeds: Option<&Value>) -> Value {
    let Some(Value::Array(list)) = embeds else {
        return json!([]);
    };
    Value::Array(
        list.iter()
            .map(|e| {
                let mut e = e.clone();
                if let Some(obj) = e.as_object_mut() {
                    obj.retain(|_, v| !v.is_null());
                    obj.entry("type").or_insert_with(|| json!("rich"));
                    if let Some(Value::Array(fields)) = obj.get_mut("fields") {
                        for f in fields.iter_mut().filter_map(Value::as_object_mut) {
                            if f.get("inline").is_none_or(Value::is_null) {
                                f.insert("inline".into(), json!(false));
                            }
                        }
                    }
                }
                e
            })
            .collect(),
    )
}

/// A MessageResponse as in the OpenAPI document (all its required properties).
fn message_json(m: &Message) -> Value {
    let author = if m.webhook {
        json!({
            "id": WEBHOOK_ID.to_string(), "username": "Herald", "avatar": null,
            "discriminator": "0000", "public_flags": 0, "flags": 0, "bot": true,
            "global_name": null, "primary_guild": null,
        })
    } else {
        json!({
            "id": BOT_USER.to_string(), "username": "Herald", "avatar": null,
            "discriminator": "0", "public_flags": 0, "flags": 0, "bot": true,
            "global_name": null, "primary_guild": null,
        })
    };
    let mut v = json!({
        "type": 0,
        "id": m.id.to_string(),
        "channel_id": m.channel_id.to_string(),
        "author": author,
        "content": m.content,
        "timestamp": m.timestamp,
        "edited_timestamp": m.edited_timestamp,
        "tts": false,
        "mention_everyone": false,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": m.embeds,
        "components": [],
        "pinned": false,
        "flags": m.flags,
    });
    if m.webhook {
        v["webhook_id"] = json!(WEBHOOK_ID.to_string());
    }
    if let Some(n) = &m.nonce {
        v["nonce"] = json!(n);
    }
    v
}

// ---------------------------------------------------------------------------------------------
// Validation against the OpenAPI document and Discord's limits
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Problem {
    pointer: String,
    code: String,
    message: String,
}

/// Discord's own OpenAPI document, kept in the repository (MIT, see its LICENSE).
fn openapi_path() -> String {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/reference/discord/openapi.json"
    )
    .to_owned()
}

fn openapi() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let path = openapi_path();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("fake_discord needs the Discord OpenAPI document at {path}: {e}")
        });
        serde_json::from_str(&text).expect("openapi.json is JSON")
    })
}

/// Validators for one operation's JSON request body: any one of them passing is enough (the
/// document's `anyOf` unions are split so errors point into the closest alternative).
type Validators = Arc<Vec<jsonschema::Validator>>;

fn validators(method: &str, api_path: &str) -> Option<Validators> {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<Validators>>>> = OnceLock::new();
    let doc = openapi();
    let template = match_template(doc, api_path)?;
    let key = format!("{method} {template}");
    let cache = CACHE.get_or_init(Default::default);
    if let Some(v) = lock(cache).get(&key) {
        return v.clone();
    }
    let built = build_validators(doc, &template, method);
    lock(cache).insert(key, built.clone());
    built
}

/// The document's path template that matches `path` (most literal segments wins).
fn match_template(doc: &Value, path: &str) -> Option<String> {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let paths = doc.get("paths")?.as_object()?;
    paths
        .keys()
        .filter_map(|t| {
            let tsegs: Vec<&str> = t.split('/').collect();
            if tsegs.len() != segs.len() {
                return None;
            }
            let mut literal = 0;
            for (a, b) in tsegs.iter().zip(&segs) {
                if a.starts_with('{') && a.ends_with('}') {
                    if b.is_empty() {
                        return None;
                    }
                } else if a == b {
                    literal += 1;
                } else {
                    return None;
                }
            }
            Some((literal, t))
        })
        .max_by_key(|(literal, _)| *literal)
        .map(|(_, t)| t.clone())
}

fn build_validators(doc: &Value, template: &str, method: &str) -> Option<Validators> {
    let op = doc.pointer(&format!(
        "/paths/{}/{}",
        template.replace('~', "~0").replace('/', "~1"),
        method.to_ascii_lowercase()
    ))?;
    let schema = op.pointer("/requestBody/content/application~1json/schema")?;
    let alternatives: Vec<&Value> = match schema.get("anyOf").and_then(Value::as_array) {
        Some(list) if schema.get("x-discord-union").is_some() => list.iter().collect(),
        _ => vec![schema],
    };
    let components = doc.get("components").cloned().unwrap_or(Value::Null);
    let built = alternatives
        .into_iter()
        .map(|alt| {
            // Inline the document's components so its `#/components/...` refs resolve.
            let mut root = Map::new();
            root.insert(
                "$schema".into(),
                json!("https://json-schema.org/draft/2020-12/schema"),
            );
            root.insert("allOf".into(), json!([alt]));
            root.insert("components".into(), components.clone());
            jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .should_validate_formats(true)
                .build(&Value::Object(root))
                .unwrap_or_else(|e| panic!("schema for {method} {template}: {e}"))
        })
        .collect();
    Some(Arc::new(built))
}

fn schema_problems(method: &str, api_path: &str, body: &Value) -> Vec<Problem> {
    let Some(validators) = validators(method, api_path) else {
        return Vec::new();
    };
    let mut best: Option<Vec<Problem>> = None;
    for v in validators.iter() {
        let problems: Vec<Problem> = v
            .iter_errors(body)
            .map(|e| Problem {
                pointer: e.instance_path.as_str().to_owned(),
                code: error_code(&e.kind).to_owned(),
                message: e.to_string(),
            })
            .collect();
        if problems.is_empty() {
            return Vec::new();
        }
        if best.as_ref().is_none_or(|b| problems.len() < b.len()) {
            best = Some(problems);
        }
    }
    best.unwrap_or_default()
}

fn error_code(kind: &jsonschema::error::ValidationErrorKind) -> &'static str {
    use jsonschema::error::ValidationErrorKind as K;
    match kind {
        K::MaxLength { .. } | K::MaxItems { .. } => "BASE_TYPE_MAX_LENGTH",
        K::MinLength { .. } | K::MinItems { .. } => "BASE_TYPE_MIN_LENGTH",
        K::Required { .. } => "BASE_TYPE_REQUIRED",
        K::Type { .. } => "BASE_TYPE_INVALID_TYPE",
        K::Format { .. } => "URL_TYPE_INVALID_URL",
        K::Maximum { .. } | K::Minimum { .. } => "NUMBER_TYPE_MAX",
        _ => "BASE_TYPE_INVALID",
    }
}

fn chars(v: Option<&Value>) -> usize {
    v.and_then(Value::as_str).map_or(0, |s| s.chars().count())
}

/// Discord's limits (INTEGRATIONS.md), including those the OpenAPI document does not state.
fn limit_problems(body: &Value) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut over = |pointer: String, max: usize, len: usize| {
        if len > max {
            out.push(Problem {
                pointer,
                code: "BASE_TYPE_MAX_LENGTH".into(),
                message: format!("Must be {max} or fewer in length (got {len})."),
            });
        }
    };
    over("/content".into(), 2000, chars(body.get("content")));
    let Some(embeds) = body.get("embeds").and_then(Value::as_array) else {
        return out;
    };
    over("/embeds".into(), 10, embeds.len());
    let mut total = 0;
    for (i, e) in embeds.iter().enumerate() {
        let title = chars(e.get("title"));
        let description = chars(e.get("description"));
        let footer = chars(e.pointer("/footer/text"));
        let author = chars(e.pointer("/author/name"));
        over(format!("/embeds/{i}/title"), 256, title);
        over(format!("/embeds/{i}/description"), 4096, description);
        over(format!("/embeds/{i}/footer/text"), 2048, footer);
        over(format!("/embeds/{i}/author/name"), 256, author);
        total += title + description + footer + author;
        if let Some(fields) = e.get("fields").and_then(Value::as_array) {
            over(format!("/embeds/{i}/fields"), 25, fields.len());
            for (j, f) in fields.iter().enumerate() {
                let name = chars(f.get("name"));
                let value = chars(f.get("value"));
                over(format!("/embeds/{i}/fields/{j}/name"), 256, name);
                over(format!("/embeds/{i}/fields/{j}/value"), 1024, value);
                total += name + value;
            }
        }
    }
    if total > 6000 {
        out.push(Problem {
            pointer: "/embeds".into(),
            code: "MAX_EMBED_SIZE_EXCEEDED".into(),
            message: format!("Embed size exceeds maximum size of 6000 (got {total})"),
        });
    }
    out
}

/// Discord's nested `errors` object: `{"embeds": {"0": {"title": {"_errors": [...]}}}}`.
fn nest_errors(problems: &[Problem]) -> Value {
    let mut root = Value::Object(Map::new());
    for p in problems {
        let mut node = &mut root;
        for seg in p.pointer.split('/').filter(|s| !s.is_empty()) {
            let seg = seg.replace("~1", "/").replace("~0", "~");
            node = node
                .as_object_mut()
                .expect("object")
                .entry(seg)
                .or_insert_with(|| Value::Object(Map::new()));
        }
        let errors = node
            .as_object_mut()
            .expect("object")
            .entry("_errors")
            .or_insert_with(|| json!([]));
        if let Some(list) = errors.as_array_mut() {
            list.push(json!({"code": p.code, "message": p.message}));
        }
    }
    root
}
