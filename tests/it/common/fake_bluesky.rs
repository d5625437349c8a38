//! A local atproto PDS for fault-injection tests: XRPC at `/xrpc/{nsid}` with the session,
//! record and blob methods Herald uses, answering like the reference PDS (error bodies
//! `{"error": "Name", "message": "..."}`), validating `app.bsky.feed.post` records like the
//! lexicon, and a little stricter where that catches bugs early (see `validate_post`).
//!
//! Faults, the request log and the accept loop are shared with `fake_discord`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use hyper::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use unicode_segmentation::UnicodeSegmentation;

use super::fake_discord::{Backend, FaultQueue, Reply, Req, lock, now_secs_f64, serve};
pub use super::fake_discord::{Fault, Recorded};

pub const HANDLE: &str = "herald.test";
pub const DID: &str = "did:plc:heraldtest000000000000000";
pub const PASSWORD: &str = "app-pass-word-1234";
pub const POST: &str = "app.bsky.feed.post";

/// A record in the fake repo.
#[derive(Clone, Debug)]
pub struct Record {
    pub collection: String,
    pub rkey: String,
    pub uri: String,
    pub cid: String,
    pub value: Value,
    /// How many writes produced this record (1 after a create; putRecord updates add one).
    pub writes: usize,
}

/// A request the fake refused as invalid (400 InvalidRequest).
#[derive(Clone, Debug)]
pub struct XrpcError {
    pub nsid: String,
    pub error: String,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Access,
    Refresh,
}

#[derive(Clone, Debug)]
struct Token {
    kind: Kind,
    expired: bool,
    revoked: bool,
}

struct BskyState {
    handle: String,
    did: String,
    password: String,
    tokens: HashMap<String, Token>,
    token_seq: u64,
    create_sessions: usize,
    refresh_sessions: usize,
    records: Vec<Record>,
    blobs: usize,
    errors: Vec<XrpcError>,
    requests: Vec<Recorded>,
    last_tid_micros: u64,
    commits: u64,
}

struct BskyBackend {
    state: Mutex<BskyState>,
    faults: FaultQueue,
    url: OnceLock<String>,
}

/// Handle to a running fake PDS; cheap to clone.
#[derive(Clone)]
pub struct FakeBluesky {
    backend: Arc<BskyBackend>,
    addr: SocketAddr,
}

impl FakeBluesky {
    /// Start with the default account (`herald.test`, [`DID`], [`PASSWORD`]).
    pub async fn start() -> Self {
        Self::start_with(HANDLE, DID, PASSWORD).await
    }

    pub async fn start_with(handle: &str, did: &str, password: &str) -> Self {
        let backend = Arc::new(BskyBackend {
            state: Mutex::new(BskyState {
                handle: handle.to_owned(),
                did: did.to_owned(),
                password: password.to_owned(),
                tokens: HashMap::new(),
                token_seq: 0,
                create_sessions: 0,
                refresh_sessions: 0,
                records: Vec::new(),
                blobs: 0,
                errors: Vec::new(),
                requests: Vec::new(),
                last_tid_micros: 0,
                commits: 0,
            }),
            faults: FaultQueue::default(),
            url: OnceLock::new(),
        });
        let addr = serve(backend.clone()).await;
        let _ = backend.url.set(format!("http://{addr}"));
        Self { backend, addr }
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn handle(&self) -> String {
        lock(&self.backend.state).handle.clone()
    }

    pub fn did(&self) -> String {
        lock(&self.backend.state).did.clone()
    }

    pub fn password(&self) -> String {
        lock(&self.backend.state).password.clone()
    }

    /// Change the accepted app password (existing sessions stay valid).
    pub fn set_password(&self, password: &str) {
        lock(&self.backend.state).password = password.to_owned();
    }

    /// Records in creation order (a putRecord update keeps the record's place).
    pub fn records(&self) -> Vec<Record> {
        lock(&self.backend.state).records.clone()
    }

    pub fn record(&self, collection: &str, rkey: &str) -> Option<Record> {
        lock(&self.backend.state)
            .records
            .iter()
            .find(|r| r.collection == collection && r.rkey == rkey)
            .cloned()
    }

    /// Put a record straight into the repo (no validation), e.g. a post to reply to.
    pub fn insert_record(&self, collection: &str, rkey: &str, value: Value) -> Record {
        let mut st = lock(&self.backend.state);
        let record = Record {
            collection: collection.to_owned(),
            rkey: rkey.to_owned(),
            uri: format!("at://{}/{collection}/{rkey}", st.did),
            cid: record_cid(&value),
            value,
            writes: 1,
        };
        st.records
            .retain(|r| !(r.collection == collection && r.rkey == rkey));
        st.records.push(record.clone());
        record
    }

    /// Every request received, faulted ones included, in the order they were answered.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.backend.state).requests.clone()
    }

    /// Every request refused as invalid (400 InvalidRequest), with the message sent.
    pub fn errors(&self) -> Vec<XrpcError> {
        lock(&self.backend.state).errors.clone()
    }

    /// createSession calls that reached the handler, successful or not (a call answered by an
    /// injected fault shows only in `requests()`).
    pub fn create_sessions(&self) -> usize {
        lock(&self.backend.state).create_sessions
    }

    /// refreshSession calls that reached the handler, successful or not (a call answered by an
    /// injected fault shows only in `requests()`).
    pub fn refresh_sessions(&self) -> usize {
        lock(&self.backend.state).refresh_sessions
    }

    /// Blobs uploaded.
    pub fn blobs(&self) -> usize {
        lock(&self.backend.state).blobs
    }

    /// Every access token issued so far answers 400 ExpiredToken from now on.
    pub fn expire_access_tokens(&self) {
        for t in lock(&self.backend.state).tokens.values_mut() {
            if t.kind == Kind::Access {
                t.expired = true;
            }
        }
    }

    /// Every refresh token issued so far answers 400 ExpiredToken from now on.
    pub fn expire_refresh_tokens(&self) {
        for t in lock(&self.backend.state).tokens.values_mut() {
            if t.kind == Kind::Refresh {
                t.expired = true;
            }
        }
    }

    /// Queue a fault for the next request whose path and query contain `path_filter`
    /// (e.g. `Some("createRecord")`).
    pub fn push_fault(&self, fault: Fault, path_filter: Option<&str>) {
        self.backend.faults.push(fault, path_filter);
    }

    pub fn pending_faults(&self) -> usize {
        self.backend.faults.len()
    }
}

fn xrpc_error(status: u16, error: &str, message: &str) -> Reply {
    Reply::json(status, json!({"error": error, "message": message}))
}

impl Backend for BskyBackend {
    fn process(&self, req: &Req) -> Reply {
        let url = self.url.get().cloned().unwrap_or_default();
        let mut st = lock(&self.state);
        let Some(nsid) = req.path.strip_prefix("/xrpc/") else {
            return xrpc_error(404, "NotFound", "Not Found");
        };
        let nsid = nsid.to_owned();
        let expected = match nsid.as_str() {
            "com.atproto.server.getSession" | "com.atproto.repo.getRecord" => Method::GET,
            "com.atproto.server.createSession"
            | "com.atproto.server.refreshSession"
            | "com.atproto.repo.createRecord"
            | "com.atproto.repo.putRecord"
            | "com.atproto.repo.deleteRecord"
            | "com.atproto.repo.uploadBlob" => Method::POST,
            _ => return xrpc_error(501, "MethodNotImplemented", "Method Not Implemented"),
        };
        if req.method != expected {
            return invalid(
                &mut st,
                &nsid,
                &format!("Incorrect HTTP method ({}) expected {expected}", req.method),
            );
        }
        let mut call = Call {
            st: &mut st,
            req,
            nsid: &nsid,
            url: &url,
        };
        let result = match nsid.as_str() {
            "com.atproto.server.createSession" => call.create_session(),
            "com.atproto.server.refreshSession" => call.refresh_session(),
            "com.atproto.server.getSession" => call.get_session(),
            "com.atproto.repo.createRecord" => call.create_record(),
            "com.atproto.repo.putRecord" => call.put_record(),
            "com.atproto.repo.deleteRecord" => call.delete_record(),
            "com.atproto.repo.getRecord" => call.get_record(),
            "com.atproto.repo.uploadBlob" => call.upload_blob(),
            _ => unreachable!(),
        };
        result.unwrap_or_else(|r| r)
    }

    fn fault_reply(&self, _req: &Req, status: u16) -> Reply {
        let (error, message) = match status {
            400 => ("InvalidRequest", "Invalid Request"),
            401 => ("AuthenticationRequired", "Authentication Required"),
            403 => ("Forbidden", "Forbidden"),
            404 => ("NotFound", "Not Found"),
            501 => ("MethodNotImplemented", "Method Not Implemented"),
            502 => ("UpstreamFailure", "Upstream Failure"),
            503 => ("NotEnoughResources", "Not Enough Resources"),
            504 => ("UpstreamTimeout", "Upstream Timeout"),
            _ => ("InternalServerError", "Internal Server Error"),
        };
        xrpc_error(status, error, message)
    }

    fn rate_limited(&self, req: &Req, retry_after: f64) -> Reply {
        let (limit, window) = if req.path.ends_with("createSession") {
            (30, 300)
        } else {
            (3000, 300)
        };
        let reset = (now_secs_f64() + retry_after).ceil() as u64;
        xrpc_error(429, "RateLimitExceeded", "Rate Limit Exceeded")
            .with_header("ratelimit-limit", limit.to_string())
            .with_header("ratelimit-remaining", "0")
            .with_header("ratelimit-reset", reset.to_string())
            .with_header("ratelimit-policy", format!("{limit};w={window}"))
            .with_header("retry-after", format!("{}", retry_after.ceil() as u64))
    }

    fn faults(&self) -> &FaultQueue {
        &self.faults
    }

    fn record(&self, recorded: Recorded) {
        lock(&self.state).requests.push(recorded);
    }
}

/// 400 InvalidRequest, recorded in `errors()`.
fn invalid(st: &mut BskyState, nsid: &str, message: &str) -> Reply {
    st.errors.push(XrpcError {
        nsid: nsid.to_owned(),
        error: "InvalidRequest".into(),
        message: message.to_owned(),
    });
    xrpc_error(400, "InvalidRequest", message)
}

/// One XRPC call being processed, with the state locked.
struct Call<'a> {
    st: &'a mut BskyState,
    req: &'a Req,
    nsid: &'a str,
    url: &'a str,
}

type Res = Result<Reply, Reply>;

impl Call<'_> {
    fn invalid(&mut self, message: &str) -> Reply {
        invalid(self.st, self.nsid, message)
    }

    fn input(&mut self) -> Result<serde_json::Map<String, Value>, Reply> {
        match &self.req.json {
            Some(Value::Object(m)) => Ok(m.clone()),
            Some(_) => Err(self.invalid("Input must be an object")),
            None => Err(self.invalid("Request encoding (Content-Type) required but not provided")),
        }
    }

    fn string(
        &mut self,
        input: &serde_json::Map<String, Value>,
        key: &str,
    ) -> Result<String, Reply> {
        match input.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(self.invalid(&format!("Input/{key} must be a string"))),
            None => Err(self.invalid(&format!("Input must have the property \"{key}\""))),
        }
    }

    fn access(&mut self) -> Result<(), Reply> {
        let Some(token) = self.req.bearer() else {
            return Err(xrpc_error(
                401,
                "AuthenticationRequired",
                "Authentication Required",
            ));
        };
        match self.st.tokens.get(token) {
            None => Err(xrpc_error(
                400,
                "InvalidToken",
                "Token could not be verified",
            )),
            Some(t) if t.kind != Kind::Access => {
                Err(xrpc_error(401, "InvalidToken", "Bad token scope"))
            }
            Some(t) if t.expired => Err(xrpc_error(400, "ExpiredToken", "Token has expired")),
            Some(_) => Ok(()),
        }
    }

    fn issue(&mut self, kind: Kind) -> String {
        self.st.token_seq += 1;
        let now = now_secs_f64() as u64;
        let (typ, scope, exp) = match kind {
            Kind::Access => ("at+jwt", "com.atproto.appPass", now + 2 * 3600),
            Kind::Refresh => ("refresh+jwt", "com.atproto.refresh", now + 90 * 86400),
        };
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(json!({"typ": typ, "alg": "HS256"}).to_string());
        let payload = b64.encode(
            json!({
                "scope": scope,
                "sub": self.st.did,
                "aud": "did:web:127.0.0.1",
                "iat": now,
                "exp": exp,
                "jti": format!("fake-{}", self.st.token_seq),
            })
            .to_string(),
        );
        let signature = b64.encode(Sha256::digest(format!("{header}.{payload}")));
        let jwt = format!("{header}.{payload}.{signature}");
        self.st.tokens.insert(
            jwt.clone(),
            Token {
                kind,
                expired: false,
                revoked: false,
            },
        );
        jwt
    }

    fn did_doc(&self) -> Value {
        json!({
            "@context": [
                "https://www.w3.org/ns/did/v1",
                "https://w3id.org/security/multikey/v1",
                "https://w3id.org/security/suites/secp256k1-2019/v1"
            ],
            "id": self.st.did,
            "alsoKnownAs": [format!("at://{}", self.st.handle)],
            "verificationMethod": [{
                "id": format!("{}#atproto", self.st.did),
                "type": "Multikey",
                "controller": self.st.did,
                "publicKeyMultibase": "zQ3shXjHeiBuRCKmM36cuYnm7YEMzhGnCmCyW92sRJ9pribSF"
            }],
            "service": [{
                "id": "#atproto_pds",
                "type": "AtprotoPersonalDataServer",
                "serviceEndpoint": self.url,
            }]
        })
    }

    fn session(&mut self) -> Value {
        let access = self.issue(Kind::Access);
        let refresh = self.issue(Kind::Refresh);
        json!({
            "did": self.st.did,
            "handle": self.st.handle,
            "email": format!("herald@{}", self.st.handle),
            "emailConfirmed": true,
            "emailAuthFactor": false,
            "accessJwt": access,
            "refreshJwt": refresh,
            "didDoc": self.did_doc(),
            "active": true,
        })
    }

    fn create_session(&mut self) -> Res {
        self.st.create_sessions += 1;
        let input = self.input()?;
        let identifier = self.string(&input, "identifier")?;
        let password = self.string(&input, "password")?;
        let id = identifier.trim_start_matches('@').to_ascii_lowercase();
        let known = id == self.st.handle.to_ascii_lowercase() || identifier == self.st.did;
        if !known || password != self.st.password {
            return Err(xrpc_error(
                401,
                "AuthenticationRequired",
                "Invalid identifier or password",
            ));
        }
        Ok(Reply::json(200, self.session()))
    }

    fn refresh_session(&mut self) -> Res {
        self.st.refresh_sessions += 1;
        let Some(token) = self.req.bearer().map(str::to_owned) else {
            return Err(xrpc_error(
                401,
                "AuthenticationRequired",
                "Authentication Required",
            ));
        };
        match self.st.tokens.get(&token) {
            None => {
                return Err(xrpc_error(
                    400,
                    "InvalidToken",
                    "Token could not be verified",
                ));
            }
            Some(t) if t.kind != Kind::Refresh => {
                return Err(xrpc_error(400, "InvalidToken", "Invalid token type"));
            }
            Some(t) if t.revoked => {
                return Err(xrpc_error(400, "ExpiredToken", "Token has been revoked"));
            }
            Some(t) if t.expired => {
                return Err(xrpc_error(400, "ExpiredToken", "Token has expired"));
            }
            Some(_) => {}
        }
        if let Some(t) = self.st.tokens.get_mut(&token) {
            t.revoked = true;
        }
        Ok(Reply::json(200, self.session()))
    }

    fn get_session(&mut self) -> Res {
        self.access()?;
        Ok(Reply::json(
            200,
            json!({
                "did": self.st.did,
                "handle": self.st.handle,
                "email": format!("herald@{}", self.st.handle),
                "emailConfirmed": true,
                "emailAuthFactor": false,
                "didDoc": self.did_doc(),
                "active": true,
            }),
        ))
    }

    fn check_repo(&mut self, repo: &str) -> Result<(), Reply> {
        if repo == self.st.did || repo.eq_ignore_ascii_case(&self.st.handle) {
            Ok(())
        } else {
            Err(self.invalid(&format!("Could not find repo: {repo}")))
        }
    }

    /// Collection, rkey syntax and the record itself. Returns the validationStatus.
    fn check_write(
        &mut self,
        input: &serde_json::Map<String, Value>,
        collection: &str,
        rkey: Option<&str>,
    ) -> Result<&'static str, Reply> {
        if !is_nsid(collection) {
            return Err(self.invalid("Input/collection must be a valid nsid"));
        }
        if let Some(rkey) = rkey {
            if !is_record_key(rkey) {
                return Err(self.invalid("Input/rkey must be a valid Record Key"));
            }
            // Stricter than the PDS: the post lexicon says key type "tid".
            if collection == POST && !is_tid(rkey) {
                return Err(self.invalid(&format!(
                    "Input/rkey must be a TID for {POST} (fake check; got {rkey:?})"
                )));
            }
        }
        let validate = match input.get("validate") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => return Err(self.invalid("Input/validate must be a boolean")),
        };
        let record = match input.get("record") {
            Some(Value::Object(r)) => r.clone(),
            Some(_) => return Err(self.invalid("Input/record must be an object")),
            None => return Err(self.invalid("Input must have the property \"record\"")),
        };
        let ty = record.get("$type").and_then(Value::as_str).unwrap_or("");
        if ty != collection {
            return Err(self.invalid(&format!(
                "Invalid $type: expected {collection}, got {}",
                record
                    .get("$type")
                    .map_or("undefined".into(), Value::to_string)
            )));
        }
        if validate == Some(false) {
            return Ok("unknown");
        }
        if collection == POST {
            if let Err(e) = validate_post(self.st, &record) {
                return Err(self.invalid(&format!("Invalid {POST} record: {e}")));
            }
            return Ok("valid");
        }
        if validate == Some(true) {
            return Err(self.invalid(&format!("Lexicon not found: lex:{collection}")));
        }
        Ok("unknown")
    }

    fn commit(&mut self) -> Value {
        self.st.commits += 1;
        let rev = next_tid(self.st);
        json!({"cid": record_cid(&json!({"commit": self.st.commits})), "rev": rev})
    }

    fn create_record(&mut self) -> Res {
        self.access()?;
        let input = self.input()?;
        let repo = self.string(&input, "repo")?;
        let collection = self.string(&input, "collection")?;
        let rkey = match input.get("rkey") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(self.invalid("Input/rkey must be a string")),
        };
        self.check_repo(&repo)?;
        let status = self.check_write(&input, &collection, rkey.as_deref())?;
        let rkey = rkey.unwrap_or_else(|| next_tid(self.st));
        if self
            .st
            .records
            .iter()
            .any(|r| r.collection == collection && r.rkey == rkey)
        {
            // The reference PDS fails the insert on its unique index: a bare 500.
            return Err(xrpc_error(
                500,
                "InternalServerError",
                "Internal Server Error",
            ));
        }
        let value = input.get("record").cloned().unwrap_or(Value::Null);
        let record = Record {
            uri: format!("at://{}/{collection}/{rkey}", self.st.did),
            cid: record_cid(&value),
            collection,
            rkey,
            value,
            writes: 1,
        };
        let commit = self.commit();
        let out = json!({"uri": record.uri, "cid": record.cid, "commit": commit, "validationStatus": status});
        self.st.records.push(record);
        Ok(Reply::json(200, out))
    }

    /// `com.atproto.repo.deleteRecord`: removes the record; deleting one that is not there
    /// succeeds too, as on the reference PDS.
    fn delete_record(&mut self) -> Res {
        self.access()?;
        let input = self.input()?;
        let repo = self.string(&input, "repo")?;
        let collection = self.string(&input, "collection")?;
        let rkey = self.string(&input, "rkey")?;
        self.check_repo(&repo)?;
        self.st
            .records
            .retain(|r| !(r.collection == collection && r.rkey == rkey));
        Ok(Reply::json(200, json!({})))
    }

    fn put_record(&mut self) -> Res {
        self.access()?;
        let input = self.input()?;
        let repo = self.string(&input, "repo")?;
        let collection = self.string(&input, "collection")?;
        let rkey = self.string(&input, "rkey")?;
        self.check_repo(&repo)?;
        let status = self.check_write(&input, &collection, Some(&rkey))?;
        let value = input.get("record").cloned().unwrap_or(Value::Null);
        let cid = record_cid(&value);
        let uri = format!("at://{}/{collection}/{rkey}", self.st.did);
        let current = self
            .st
            .records
            .iter()
            .position(|r| r.collection == collection && r.rkey == rkey);
        let current_cid = current.map(|i| self.st.records[i].cid.clone());
        // No-op for identical content, before any swap check (as the reference PDS does).
        if current_cid.as_deref() == Some(cid.as_str()) {
            return Ok(Reply::json(
                200,
                json!({"uri": uri, "cid": cid, "validationStatus": status}),
            ));
        }
        if let Some(swap) = input.get("swapRecord") {
            let ok = match swap {
                Value::Null => current_cid.is_none(),
                Value::String(s) => current_cid.as_deref() == Some(s.as_str()),
                _ => return Err(self.invalid("Input/swapRecord must be a string")),
            };
            if !ok {
                return Err(xrpc_error(
                    400,
                    "InvalidSwap",
                    &format!("Record was at {}", current_cid.as_deref().unwrap_or("null")),
                ));
            }
        }
        match current {
            Some(i) => {
                let r = &mut self.st.records[i];
                r.value = value;
                r.cid = cid.clone();
                r.writes += 1;
            }
            None => self.st.records.push(Record {
                collection,
                rkey,
                uri: uri.clone(),
                cid: cid.clone(),
                value,
                writes: 1,
            }),
        }
        let commit = self.commit();
        Ok(Reply::json(
            200,
            json!({"uri": uri, "cid": cid, "commit": commit, "validationStatus": status}),
        ))
    }

    fn get_record(&mut self) -> Res {
        let mut param = |name: &str| {
            self.req.query_param(name).ok_or_else(|| {
                invalid(
                    self.st,
                    self.nsid,
                    &format!("Params must have the property \"{name}\""),
                )
            })
        };
        let repo = param("repo")?;
        let collection = param("collection")?;
        let rkey = param("rkey")?;
        let cid = self.req.query_param("cid");
        self.check_repo(&repo)?;
        let found = self.st.records.iter().find(|r| {
            r.collection == collection
                && r.rkey == rkey
                && cid.as_deref().is_none_or(|c| c == r.cid)
        });
        match found {
            Some(r) => Ok(Reply::json(
                200,
                json!({"uri": r.uri, "cid": r.cid, "value": r.value}),
            )),
            None => Err(xrpc_error(
                400,
                "RecordNotFound",
                &format!("Could not locate record: at://{repo}/{collection}/{rkey}"),
            )),
        }
    }

    fn upload_blob(&mut self) -> Res {
        self.access()?;
        let mime = self
            .req
            .header("content-type")
            .unwrap_or("application/octet-stream")
            .to_owned();
        let cid = cid_v1(0x55, &self.req.body);
        self.st.blobs += 1;
        Ok(Reply::json(
            200,
            json!({"blob": {
                "$type": "blob",
                "ref": {"$link": cid},
                "mimeType": mime,
                "size": self.req.body.len(),
            }}),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// app.bsky.feed.post validation
// ---------------------------------------------------------------------------------------------

/// Like the lexicon, plus checks the reference PDS does not make but Herald must get right:
/// facet byte ranges inside the text and on character boundaries, reply refs naming records
/// that exist here (with their current cid), only link/mention/tag facet features, only the
/// external embed, and a TID record key.
fn validate_post(st: &BskyState, record: &serde_json::Map<String, Value>) -> Result<(), String> {
    let text = match record.get("text") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err("Record/text must be a string".into()),
        None => return Err("Record must have the property \"text\"".into()),
    };
    if text.len() > 3000 {
        return Err("Record/text must not be longer than 3000 characters".into());
    }
    if text.graphemes(true).count() > 300 {
        return Err("Record/text must not be longer than 300 graphemes".into());
    }
    match record.get("createdAt") {
        Some(Value::String(s)) if is_datetime(s) => {}
        Some(Value::String(_)) => {
            return Err(
                "Record/createdAt must be an valid atproto datetime (both RFC-3339 and ISO-8601)"
                    .into(),
            );
        }
        Some(_) => return Err("Record/createdAt must be a string".into()),
        None => return Err("Record must have the property \"createdAt\"".into()),
    }
    if let Some(langs) = record.get("langs") {
        let langs = langs.as_array().ok_or("Record/langs must be an array")?;
        if langs.len() > 3 {
            return Err("Record/langs must not have more than 3 elements".into());
        }
        for (i, l) in langs.iter().enumerate() {
            if !l.as_str().is_some_and(is_language) {
                return Err(format!(
                    "Record/langs/{i} must be a well-formed BCP 47 language tag"
                ));
            }
        }
    }
    if let Some(tags) = record.get("tags") {
        let tags = tags.as_array().ok_or("Record/tags must be an array")?;
        if tags.len() > 8 {
            return Err("Record/tags must not have more than 8 elements".into());
        }
        for (i, t) in tags.iter().enumerate() {
            check_tag(t, &format!("Record/tags/{i}"))?;
        }
    }
    if let Some(facets) = record.get("facets") {
        let facets = facets.as_array().ok_or("Record/facets must be an array")?;
        for (i, f) in facets.iter().enumerate() {
            check_facet(text, f, &format!("Record/facets/{i}"))?;
        }
    }
    if let Some(reply) = record.get("reply") {
        let reply = reply.as_object().ok_or("Record/reply must be an object")?;
        for part in ["root", "parent"] {
            let r = reply
                .get(part)
                .ok_or_else(|| format!("Record/reply must have the property \"{part}\""))?;
            check_strong_ref(st, r, &format!("Record/reply/{part}"))?;
        }
    }
    if let Some(embed) = record.get("embed") {
        check_embed(embed)?;
    }
    Ok(())
}

fn check_tag(t: &Value, path: &str) -> Result<(), String> {
    let t = t
        .as_str()
        .ok_or_else(|| format!("{path} must be a string"))?;
    if t.len() > 640 {
        return Err(format!("{path} must not be longer than 640 characters"));
    }
    if t.graphemes(true).count() > 64 {
        return Err(format!("{path} must not be longer than 64 graphemes"));
    }
    Ok(())
}

fn check_facet(text: &str, facet: &Value, path: &str) -> Result<(), String> {
    let facet = facet
        .as_object()
        .ok_or_else(|| format!("{path} must be an object"))?;
    let index = facet
        .get("index")
        .and_then(Value::as_object)
        .ok_or_else(|| format!("{path} must have the property \"index\""))?;
    let int = |k: &str| {
        index
            .get(k)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("{path}/index/{k} must be an integer >= 0"))
    };
    let (start, end) = (int("byteStart")? as usize, int("byteEnd")? as usize);
    if start >= end {
        return Err(format!(
            "{path}/index: byteStart {start} must be below byteEnd {end} (fake check)"
        ));
    }
    if end > text.len() {
        return Err(format!(
            "{path}/index: byteEnd {end} is past the end of the text ({} bytes) (fake check)",
            text.len()
        ));
    }
    if !text.is_char_boundary(start) || !text.is_char_boundary(end) {
        return Err(format!(
            "{path}/index: {start}..{end} is not on UTF-8 character boundaries (fake check)"
        ));
    }
    let features = facet
        .get("features")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{path} must have the property \"features\""))?;
    for (i, f) in features.iter().enumerate() {
        let p = format!("{path}/features/{i}");
        let ty = f.get("$type").and_then(Value::as_str).unwrap_or("");
        match ty {
            "app.bsky.richtext.facet#link" => {
                if !f.get("uri").and_then(Value::as_str).is_some_and(is_uri) {
                    return Err(format!("{p}/uri must be a uri"));
                }
            }
            "app.bsky.richtext.facet#mention" => {
                if !f.get("did").and_then(Value::as_str).is_some_and(is_did) {
                    return Err(format!("{p}/did must be a valid did"));
                }
            }
            "app.bsky.richtext.facet#tag" => {
                check_tag(f.get("tag").unwrap_or(&Value::Null), &format!("{p}/tag"))?;
            }
            other => {
                return Err(format!(
                    "{p} has $type {other:?}; the fake accepts app.bsky.richtext.facet#link, #mention and #tag"
                ));
            }
        }
    }
    Ok(())
}

fn check_strong_ref(st: &BskyState, r: &Value, path: &str) -> Result<(), String> {
    let r = r
        .as_object()
        .ok_or_else(|| format!("{path} must be an object"))?;
    let uri = r
        .get("uri")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{path} must have the property \"uri\""))?;
    let cid = r
        .get("cid")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{path} must have the property \"cid\""))?;
    let rest = uri
        .strip_prefix("at://")
        .ok_or_else(|| format!("{path}/uri must be a valid at-uri"))?;
    let parts: Vec<&str> = rest.split('/').collect();
    let [authority, collection, rkey] = parts.as_slice() else {
        return Err(format!(
            "{path}/uri must name a record (at://did/collection/rkey)"
        ));
    };
    let ours = *authority == st.did || authority.eq_ignore_ascii_case(&st.handle);
    let record = st
        .records
        .iter()
        .find(|rec| ours && rec.collection == *collection && rec.rkey == *rkey)
        .ok_or_else(|| format!("{path}: {uri} does not name a record in this repo (fake check)"))?;
    if record.cid != cid {
        return Err(format!(
            "{path}: cid {cid} is not the current cid {} of {uri} (fake check)",
            record.cid
        ));
    }
    Ok(())
}

fn check_embed(embed: &Value) -> Result<(), String> {
    let ty = embed.get("$type").and_then(Value::as_str).unwrap_or("");
    if ty != "app.bsky.embed.external" {
        return Err(format!(
            "Record/embed has $type {ty:?}; the fake accepts only app.bsky.embed.external"
        ));
    }
    let external = embed
        .get("external")
        .and_then(Value::as_object)
        .ok_or("Record/embed must have the property \"external\"")?;
    if !external
        .get("uri")
        .and_then(Value::as_str)
        .is_some_and(is_uri)
    {
        return Err("Record/embed/external/uri must be a uri".into());
    }
    for k in ["title", "description"] {
        if !external.get(k).is_some_and(Value::is_string) {
            return Err(format!(
                "Record/embed/external must have the string property \"{k}\""
            ));
        }
    }
    if let Some(thumb) = external.get("thumb") {
        let ok = thumb.get("$type").and_then(Value::as_str) == Some("blob")
            && thumb.pointer("/ref/$link").is_some_and(Value::is_string)
            && thumb
                .get("mimeType")
                .and_then(Value::as_str)
                .is_some_and(|m| m.starts_with("image/"))
            && thumb
                .get("size")
                .and_then(Value::as_u64)
                .is_some_and(|s| s <= 1_000_000);
        if !ok {
            return Err(
                "Record/embed/external/thumb must be an image blob of at most 1000000 bytes".into(),
            );
        }
    }
    Ok(())
}

fn is_datetime(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b[10] == b'T'
        && (s.ends_with('Z') || matches!(b[b.len() - 6], b'+' | b'-'))
        && !s.starts_with("0000")
        && !s.ends_with("-00:00")
        && s.parse::<jiff::Timestamp>().is_ok()
}

fn is_language(s: &str) -> bool {
    let mut parts = s.split('-');
    let first = parts.next().unwrap_or("");
    let first_ok = (2..=3).contains(&first.len()) && first.bytes().all(|b| b.is_ascii_alphabetic())
        || first == "i"
        || first == "x";
    first_ok
        && parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

fn is_uri(s: &str) -> bool {
    reqwest::Url::parse(s).is_ok()
}

fn is_did(s: &str) -> bool {
    let mut parts = s.splitn(3, ':');
    parts.next() == Some("did")
        && parts
            .next()
            .is_some_and(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_lowercase()))
        && parts.next().is_some_and(|id| !id.is_empty())
}

fn is_nsid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 63
                && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn is_record_key(s: &str) -> bool {
    (1..=512).contains(&s.len())
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:~-".contains(&b))
}

const TID_ALPHABET: &[u8; 32] = b"234567abcdefghijklmnopqrstuvwxyz";

pub fn is_tid(s: &str) -> bool {
    s.len() == 13
        && s.bytes().all(|b| TID_ALPHABET.contains(&b))
        && b"234567abcdefghij".contains(&s.as_bytes()[0])
}

/// A TID from the current time in microseconds, strictly increasing.
fn next_tid(st: &mut BskyState) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let micros = now.max(st.last_tid_micros + 1);
    st.last_tid_micros = micros;
    let v = (micros << 10) | 7;
    (0..13)
        .map(|i| TID_ALPHABET[((v >> (5 * (12 - i))) & 31) as usize] as char)
        .collect()
}

/// Record content as JSON with sorted keys, so equal content hashes equally.
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let items: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&m[k])))
                .collect();
            format!("{{{}}}", items.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// A real CIDv1 string (dag-cbor, sha2-256, base32: "bafyrei...") whose digest is the SHA-256 of
/// the canonical JSON rather than of DAG-CBOR: deterministic, and parseable by CID libraries.
pub fn record_cid(value: &Value) -> String {
    cid_v1(0x71, canonical(value).as_bytes())
}

/// CIDv1 with sha2-256 for `codec` (0x71 dag-cbor, 0x55 raw), multibase base32.
fn cid_v1(codec: u8, content: &[u8]) -> String {
    let mut bytes = vec![0x01, codec, 0x12, 0x20];
    bytes.extend_from_slice(&Sha256::digest(content));
    format!("b{}", base32(&bytes))
}

fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}
