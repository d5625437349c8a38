//! Bluesky: one thread per window, the announcement as its root (with a link card), every
//! later event a reply to the newest post.
//!
//! Records are atrium-api's lexicon types; the few XRPC calls are made with reqwest directly,
//! because atrium's agent drops response headers (no `Retry-After` on a 429), clears the
//! session when a refresh times out, and waits forever if a refresh is interrupted.
//!
//! The session lives in the database: one `createSession` per channel (that call is limited
//! to 30 per 5 minutes and about 100 a day), then `refreshSession` when the PDS answers
//! `ExpiredToken`, each new session written back at once. Each post's record key (a TID) is
//! chosen when the change commits; after an attempt whose outcome is unknown Herald reads
//! that key back before writing, so a retry never makes a second post.

use std::sync::Arc;
use std::time::Duration;

use atrium_api::app::bsky::feed::post;
use atrium_api::com::atproto::repo::strong_ref;
use atrium_api::types::string::{Datetime, Tid};
use atrium_api::types::{Object, TryIntoUnknown};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::render::{bluesky_incident_post, bluesky_post, bluesky_rollout_post, post_record};
use super::{Job, Progress, SendError, Sent};
use crate::domain::{Channel, ChannelKind, Thread, UpdateKind};
use crate::store::Store;

const POST: &str = "app.bsky.feed.post";

/// A session as `createSession` and `refreshSession` return it (the fields Herald uses).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Session {
    did: String,
    handle: String,
    access_jwt: String,
    refresh_jwt: String,
}

/// An XRPC call that did not succeed.
#[derive(Debug)]
enum CallError {
    /// No answer: connection failed, timed out, or was cut. The request may have done its
    /// work.
    Transport(String),
    Http {
        status: StatusCode,
        error: Option<String>,
        message: String,
        retry_after: Option<Duration>,
    },
}

impl CallError {
    fn is(&self, name: &str) -> bool {
        matches!(self, Self::Http { error: Some(e), .. } if e == name)
    }

    fn into_send_error(self, what: &str) -> SendError {
        match self {
            Self::Transport(e) => SendError::transient(format!("{what}: {e}")),
            Self::Http {
                status,
                error,
                message,
                retry_after,
            } => {
                let error = error.map(|e| super::short_reason(&e));
                let reason = match (error, message.is_empty()) {
                    (Some(error), false) => {
                        format!("{what}: Bluesky answered {status}: {error}: {message}")
                    }
                    (Some(error), true) => format!("{what}: Bluesky answered {status}: {error}"),
                    (None, false) => format!("{what}: Bluesky answered {status}: {message}"),
                    (None, true) => format!("{what}: Bluesky answered {status}"),
                };
                if status == StatusCode::TOO_MANY_REQUESTS {
                    SendError::Transient {
                        reason,
                        after: retry_after,
                    }
                } else if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
                    SendError::transient(reason)
                } else {
                    SendError::Permanent(reason)
                }
            }
        }
    }
}

/// When the PDS wants to be asked again: `Retry-After` (seconds) or `ratelimit-reset`
/// (a unix time).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(wait) = super::retry_after(headers) {
        return Some(wait);
    }
    let reset = headers
        .get("ratelimit-reset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())?;
    super::server_wait(reset.saturating_sub(jiff::Timestamp::now().as_second()) as f64)
}

pub struct Bluesky {
    http: reqwest::Client,
    pds: String,
    identifier: String,
    password: String,
    langs: Vec<String>,
    channel_id: i64,
    store: Arc<dyn Store>,
    /// The live session; `None` until loaded from the database or created.
    session: Mutex<Option<Session>>,
}

impl Bluesky {
    pub fn new(
        channel: &Channel,
        settings: &super::NotifySettings,
        store: Arc<dyn Store>,
    ) -> Result<Self, SendError> {
        if channel.kind != ChannelKind::Bluesky {
            return Err(SendError::Permanent("not a Bluesky channel".into()));
        }
        let pds = channel
            .api_url
            .clone()
            .unwrap_or_else(|| crate::config::DEFAULT_BLUESKY_PDS_URL.to_owned())
            .trim_end_matches('/')
            .to_owned();
        settings.check_target(&pds)?;
        let http = settings.http_client()?;
        Ok(Self {
            http,
            pds,
            identifier: channel.target.clone(),
            password: channel.secret.expose().to_owned(),
            langs: channel.langs.clone(),
            channel_id: channel.id,
            store,
            session: Mutex::new(None),
        })
    }

    /// One XRPC request: a procedure (POST with `body`) or a query (GET with `params`).
    async fn xrpc(
        &self,
        nsid: &str,
        token: Option<&str>,
        body: Option<&Value>,
        params: &[(&str, &str)],
    ) -> Result<Value, CallError> {
        let url = format!("{}/xrpc/{nsid}", self.pds);
        let mut request = match body {
            Some(body) => self.http.post(url).json(body),
            None => self.http.get(url).query(params),
        };
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| CallError::Transport(super::transport_error(&e)))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = super::read_capped(response)
            .await
            .map_err(|e| CallError::Transport(format!("reading the answer: {e}")))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| CallError::Transport(format!("unreadable answer: {e}")));
        }
        let parsed: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        Err(CallError::Http {
            status,
            error: parsed["error"].as_str().map(str::to_owned),
            // The PDS's own XRPC error message, shortened; anything else is not repeated.
            message: parsed["message"]
                .as_str()
                .map(super::short_reason)
                .unwrap_or_default(),
            retry_after: retry_after(&headers),
        })
    }

    async fn save(&self, session: &Session) {
        let json = serde_json::to_string(session).expect("sessions serialise");
        if let Err(e) = self
            .store
            .set_channel_session(self.channel_id, Some(&json))
            .await
        {
            tracing::warn!(error = %e, "could not save the Bluesky session");
        }
    }

    async fn create_session(&self) -> Result<Session, SendError> {
        let body = json!({"identifier": self.identifier, "password": self.password});
        let value = self
            .xrpc("com.atproto.server.createSession", None, Some(&body), &[])
            .await
            .map_err(|e| e.into_send_error("signing in"))?;
        let session: Session = serde_json::from_value(value)
            .map_err(|e| SendError::transient(format!("signing in: unreadable session: {e}")))?;
        tracing::info!(did = %session.did, "signed in to Bluesky");
        self.save(&session).await;
        Ok(session)
    }

    /// The session to use: the one in memory, else the saved one, else a new one.
    async fn session(&self) -> Result<Session, SendError> {
        let mut slot = self.session.lock().await;
        if let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        let saved = self
            .store
            .channel_session(self.channel_id)
            .await
            .ok()
            .flatten()
            .and_then(|json| serde_json::from_str::<Session>(&json).ok());
        let session = match saved {
            Some(s) => s,
            None => self.create_session().await?,
        };
        *slot = Some(session.clone());
        Ok(session)
    }

    /// Replace an expired session: refresh it, or sign in again if the refresh token is
    /// no longer good. `stale` is the session that failed, so concurrent callers refresh once.
    async fn renew(&self, stale: &Session) -> Result<Session, SendError> {
        let mut slot = self.session.lock().await;
        if let Some(current) = slot.as_ref()
            && current.access_jwt != stale.access_jwt
        {
            return Ok(current.clone());
        }
        // Another sender of this channel (a test message, a worker started after an edit) may
        // have refreshed already, which rotated the refresh token: take its session.
        let saved = self
            .store
            .channel_session(self.channel_id)
            .await
            .ok()
            .flatten()
            .and_then(|json| serde_json::from_str::<Session>(&json).ok());
        if let Some(saved) = saved
            && saved.access_jwt != stale.access_jwt
        {
            *slot = Some(saved.clone());
            return Ok(saved);
        }
        let refreshed = self
            .xrpc(
                "com.atproto.server.refreshSession",
                Some(&stale.refresh_jwt),
                Some(&json!({})),
                &[],
            )
            .await;
        let session = match refreshed {
            Ok(value) => {
                let session: Session = serde_json::from_value(value).map_err(|e| {
                    SendError::transient(format!("refreshing the session: unreadable: {e}"))
                })?;
                tracing::debug!("refreshed the Bluesky session");
                self.save(&session).await;
                session
            }
            Err(e @ CallError::Http { status, .. })
                if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS =>
            {
                tracing::info!(error = ?e, "the refresh token was refused; signing in again");
                self.create_session().await?
            }
            Err(e) => return Err(e.into_send_error("refreshing the session")),
        };
        *slot = Some(session.clone());
        Ok(session)
    }

    /// An authenticated call, renewing the session once if the PDS says it expired.
    async fn authed(
        &self,
        nsid: &str,
        body: Option<&Value>,
        params: &[(&str, &str)],
    ) -> Result<(Session, Result<Value, CallError>), SendError> {
        let session = self.session().await?;
        match self
            .xrpc(nsid, Some(&session.access_jwt), body, params)
            .await
        {
            Err(e) if e.is("ExpiredToken") || e.is("InvalidToken") => {
                let session = self.renew(&session).await?;
                let result = self
                    .xrpc(nsid, Some(&session.access_jwt), body, params)
                    .await;
                Ok((session, result))
            }
            result => Ok((session, result)),
        }
    }

    fn web_url(session: &Session, rkey: &str) -> String {
        let who = if session.handle.is_empty() || session.handle == "handle.invalid" {
            &session.did
        } else {
            &session.handle
        };
        format!("https://bsky.app/profile/{who}/post/{rkey}")
    }

    /// The record at `rkey`, if an earlier attempt wrote it.
    async fn existing(&self, rkey: &str) -> Result<Option<(Session, String, String)>, SendError> {
        let session = self.session().await?;
        let (session, result) = self
            .authed(
                "com.atproto.repo.getRecord",
                None,
                &[("repo", &session.did), ("collection", POST), ("rkey", rkey)],
            )
            .await?;
        match result {
            Ok(v) => match (v["uri"].as_str(), v["cid"].as_str()) {
                (Some(uri), Some(cid)) => Ok(Some((session, uri.to_owned(), cid.to_owned()))),
                _ => Err(SendError::transient("reading back a post: no uri or cid")),
            },
            Err(e) if e.is("RecordNotFound") => Ok(None),
            Err(e) => Err(e.into_send_error("reading back a post")),
        }
    }

    fn strong_ref(uri: &str, cid: &str) -> Result<strong_ref::Main, SendError> {
        Ok(strong_ref::MainData {
            uri: uri.to_owned(),
            cid: cid
                .parse()
                .map_err(|_| SendError::Permanent(format!("stored post has a bad cid {cid:?}")))?,
        }
        .into())
    }
}

#[async_trait::async_trait]
impl super::Sender for Bluesky {
    /// A rollout that belongs to a window is told in the window's thread, when the window has
    /// one on this channel: one thread for the whole maintenance.
    async fn rollout_thread(
        &self,
        store: &dyn Store,
        channel_id: i64,
        rollout: &crate::domain::Rollout,
    ) -> crate::store::StoreResult<(crate::domain::Subject, Option<Thread>)> {
        use crate::domain::Subject;
        if let Some(window) = rollout.maintenance_id
            && let Some(thread) = store
                .get_thread(channel_id, Subject::Window(window))
                .await?
        {
            return Ok((Subject::Window(window), Some(thread)));
        }
        let own = Subject::Rollout(rollout.id);
        Ok((own, store.get_thread(channel_id, own).await?))
    }

    async fn send(&self, job: &Job<'_>, progress: &dyn Progress) -> Result<Sent, SendError> {
        let d = job.delivery;
        let rkey = Tid::new(d.idem_key.clone())
            .map_err(|e| SendError::Permanent(format!("record key {:?}: {e}", d.idem_key)))?;
        let root = job.thread.is_none()
            || matches!(d.kind, UpdateKind::Announced | UpdateKind::IncidentOpened);
        let (text, created) = match job.about {
            super::About::Window { window, update } => (
                bluesky_post(window, update, &job.page_url, root),
                update.created_at,
            ),
            super::About::Rollout {
                rollout,
                update: Some(update),
            } => (
                bluesky_rollout_post(rollout, update, &job.page_url, root),
                update.created_at,
            ),
            super::About::Rollout { update: None, .. } => {
                return Err(SendError::Permanent(
                    "a live-message refresh has nothing to post on Bluesky".into(),
                ));
            }
            super::About::Incident {
                incident,
                update,
                components,
            } => (
                bluesky_incident_post(incident, update, components, &job.page_url, root),
                update.created_at,
            ),
        };
        let thread_after = |uri: &str, cid: &str| match job.thread.filter(|_| !root) {
            Some(t) => Thread {
                parent_id: Some(uri.to_owned()),
                parent_cid: Some(cid.to_owned()),
                ..t.clone()
            },
            None => Thread {
                root_id: uri.to_owned(),
                root_cid: Some(cid.to_owned()),
                parent_id: Some(uri.to_owned()),
                parent_cid: Some(cid.to_owned()),
            },
        };

        // An earlier attempt may have written the post and lost the answer.
        if (d.attempts > 1 || d.remote_id.is_some())
            && let Some((session, uri, cid)) = self.existing(rkey.as_str()).await?
        {
            return Ok(Sent {
                remote_url: Some(Self::web_url(&session, rkey.as_str())),
                thread: Some(thread_after(&uri, &cid)),
                remote_id: Some(uri),
            });
        }

        let reply = match job.thread.filter(|_| !root) {
            Some(t) => {
                let root_ref = Self::strong_ref(&t.root_id, t.root_cid.as_deref().unwrap_or(""))?;
                let parent_ref = match (&t.parent_id, &t.parent_cid) {
                    (Some(uri), Some(cid)) => Self::strong_ref(uri, cid)?,
                    _ => root_ref.clone(),
                };
                Some(Object::from(post::ReplyRefData {
                    root: root_ref,
                    parent: parent_ref,
                }))
            }
            None => None,
        };
        // createdAt is the update's own time, so every attempt writes the same record.
        let created_at: Datetime = created
            .strftime("%Y-%m-%dT%H:%M:%S.000Z")
            .to_string()
            .parse()
            .map_err(|_| {
                SendError::Permanent("the update's time is not a valid datetime".into())
            })?;
        let record = post_record(&text, created_at, &self.langs, reply);
        let record = atrium_api::record::KnownRecord::from(record)
            .try_into_unknown()
            .map_err(|e| SendError::Permanent(format!("building the post: {e}")))?;
        let session = self.session().await?;
        let body = json!({
            "repo": session.did,
            "collection": POST,
            "rkey": rkey.as_str(),
            "record": record,
        });
        let (session, result) = self
            .authed("com.atproto.repo.createRecord", Some(&body), &[])
            .await?;
        let value = match result {
            Ok(v) => v,
            Err(e) => {
                // The reference PDS answers a second create with the same key with a 500:
                // look before calling it a failure.
                if let Some((session, uri, cid)) = self.existing(rkey.as_str()).await.ok().flatten()
                {
                    return Ok(Sent {
                        remote_url: Some(Self::web_url(&session, rkey.as_str())),
                        thread: Some(thread_after(&uri, &cid)),
                        remote_id: Some(uri),
                    });
                }
                return Err(e.into_send_error("posting"));
            }
        };
        let (Some(uri), Some(cid)) = (value["uri"].as_str(), value["cid"].as_str()) else {
            return Err(SendError::transient(
                "posting: the answer has no uri or cid",
            ));
        };
        let url = Self::web_url(&session, rkey.as_str());
        progress.posted(uri, Some(&url)).await;
        Ok(Sent {
            remote_id: Some(uri.to_owned()),
            remote_url: Some(url),
            thread: Some(thread_after(uri, cid)),
        })
    }

    /// A post cannot be edited on Bluesky: an edit is a reply in the thread saying what was
    /// meant; a withdrawal deletes the post.
    async fn correct(
        &self,
        job: &Job<'_>,
        original: &crate::domain::Delivery,
        progress: &dyn Progress,
    ) -> Result<Sent, SendError> {
        let (window, update) = job.corrected()?;
        if job.delivery.action == crate::domain::DeliveryAction::Withdraw {
            let Some(rkey) = original
                .remote_id
                .as_deref()
                .and_then(|uri| uri.rsplit('/').next())
            else {
                return Err(SendError::Permanent(
                    "the post's address is not known".into(),
                ));
            };
            let session = self.session().await?;
            let body = json!({ "repo": session.did, "collection": POST, "rkey": rkey });
            let (_, result) = self
                .authed("com.atproto.repo.deleteRecord", Some(&body), &[])
                .await?;
            result.map_err(|e| e.into_send_error("deleting the post"))?;
            // Later posts reply to the thread's newest post: not to the one just deleted,
            // which would hide them from the thread.
            let thread = job.thread.map(|t| {
                if t.parent_id.as_deref() == original.remote_id.as_deref() {
                    Thread {
                        parent_id: Some(t.root_id.clone()),
                        parent_cid: t.root_cid.clone(),
                        ..t.clone()
                    }
                } else {
                    t.clone()
                }
            });
            return Ok(Sent {
                remote_id: original.remote_id.clone(),
                remote_url: None,
                thread,
            });
        }
        if job.thread.is_none() {
            return Err(SendError::Permanent(
                "there is no thread to post the correction in".into(),
            ));
        }
        let text = if update.kind == UpdateKind::Note {
            update.body.clone()
        } else {
            let step = update
                .step_position
                .map(|p| format!(" (step {p})"))
                .unwrap_or_default();
            format!(
                "the note on \"{}{step}\" now reads: {}",
                update.kind.label(),
                update.note.as_deref().unwrap_or("(removed)")
            )
        };
        // Written as of the edit, so every attempt makes the same record.
        let correction = crate::domain::Update {
            kind: UpdateKind::Note,
            body: format!("Correction: {text}"),
            note: None,
            created_at: update.edited_at.unwrap_or(update.created_at),
            ..update.clone()
        };
        // A correction is a reply in the thread, whatever it corrects (an announcement's
        // note too): never a new root.
        let delivery = crate::domain::Delivery {
            kind: UpdateKind::Note,
            ..job.delivery.clone()
        };
        let fixed = Job {
            delivery: &delivery,
            about: super::About::Window {
                window,
                update: &correction,
            },
            thread: job.thread,
            thread_key: job.thread_key,
            page_url: job.page_url.clone(),
        };
        self.send(&fixed, progress).await
    }

    async fn test(&self, text: &str) -> Result<String, SendError> {
        let session = self.session().await?;
        let rkey = crate::ids::new_tid();
        let mut record = serde_json::Map::new();
        record.insert("$type".into(), POST.into());
        record.insert(
            "text".into(),
            super::render::cut_graphemes(text, 300, 3000).into(),
        );
        record.insert(
            "createdAt".into(),
            jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%S.000Z")
                .to_string()
                .into(),
        );
        let body = json!({"repo": session.did, "collection": POST, "rkey": rkey, "record": record});
        let (session, result) = self
            .authed("com.atproto.repo.createRecord", Some(&body), &[])
            .await?;
        result.map_err(|e| e.into_send_error("posting"))?;
        Ok(Self::web_url(&session, &rkey))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tids_are_valid_and_increase() {
        let a = crate::ids::new_tid();
        let b = crate::ids::new_tid();
        assert!(Tid::new(a.clone()).is_ok(), "{a}");
        assert!(Tid::new(b.clone()).is_ok(), "{b}");
        assert!(a[..11] <= b[..11], "{a} {b}");
        assert_ne!(a, b);
    }
}
