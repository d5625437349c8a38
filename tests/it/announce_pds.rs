//! Against the real Bluesky PDS (`@atproto/pds` through `@atproto/dev-env`, run offline on
//! 127.0.0.1, see tests/pds/README.md): the DecAPI window and a window titled with emoji and
//! right-to-left text become one valid thread each, as the PDS itself validates and stores it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use herald::domain::{ChannelKind, ChannelSecret, DEFAULT_EVENTS, DEFAULT_MILESTONES, NewChannel};
use serde_json::{Value, json};

struct Pds {
    child: Child,
    url: String,
    _tmp: tempfile::TempDir,
}

impl Drop for Pds {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Install (cached outside the clone) and start the reference PDS.
fn start_pds() -> Pds {
    let dir = match std::env::var("HERALD_TEST_PDS") {
        Ok(dir) => dir,
        Err(_) => {
            let out = Command::new("bash")
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/pds-install"))
                .stderr(Stdio::inherit())
                .output()
                .expect("running .ci/pds-install");
            assert!(out.status.success(), ".ci/pds-install failed");
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(format!("{dir}/bin/node"))
        .arg(format!("{dir}/start.mjs"))
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the PDS");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready: Value = serde_json::from_str(&line).expect("the PDS prints its address");
    Pds {
        child,
        url: ready["pds"].as_str().unwrap().to_owned(),
        _tmp: tmp,
    }
}

async fn xrpc(pds: &str, nsid: &str, token: Option<&str>, body: Value) -> Value {
    let mut r = reqwest::Client::new()
        .post(format!("{pds}/xrpc/{nsid}"))
        .json(&body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert!(status.is_success(), "{nsid}: {status} {v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_pds_holds_one_valid_thread_per_window() {
    let pds = start_pds();
    let account = xrpc(
        &pds.url,
        "com.atproto.server.createAccount",
        None,
        json!({"handle": "decapi.test", "email": "ops@example.com", "password": "hunter2hunter2"}),
    )
    .await;
    let app_password = xrpc(
        &pds.url,
        "com.atproto.server.createAppPassword",
        account["accessJwt"].as_str(),
        json!({"name": "herald"}),
    )
    .await["password"]
        .as_str()
        .unwrap()
        .to_owned();
    let did = account["did"].as_str().unwrap().to_owned();

    let app = crate::common::TestApp::new().await;
    app.add_channel(NewChannel {
        name: "bluesky".into(),
        kind: Some(ChannelKind::Bluesky),
        target: "decapi.test".into(),
        secret: ChannelSecret::new(app_password),
        api_url: Some(pds.url.clone()),
        events: DEFAULT_EVENTS.to_vec(),
        milestones: DEFAULT_MILESTONES.to_vec(),
        langs: vec!["en".into(), "de".into()],
        enabled: true,
        ..NewChannel::default()
    })
    .await;
    let outbox = app.start_outbox();
    let api = app.component("api", "API").await;
    let titles = [
        "DecAPI infrastructure migration".to_owned(),
        "🚀 Größere Wartung 👨‍👩‍👧‍👦 של מסד הנתונים — café ñandú "
            .repeat(4)
            .trim()
            .chars()
            .take(200)
            .collect::<String>(),
    ];
    let mut ids = Vec::new();
    for title in &titles {
        ids.push(app.run_decapi(title, vec![api]).await);
    }
    let unsent = app.settle(60).await;
    assert!(unsent.is_empty(), "{unsent:#?}");

    // Read back what the PDS stored.
    let listed: Value = reqwest::Client::new()
        .get(format!("{}/xrpc/com.atproto.repo.listRecords", pds.url))
        .query(&[
            ("repo", did.as_str()),
            ("collection", "app.bsky.feed.post"),
            ("limit", "100"),
            ("reverse", "true"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let records = listed["records"].as_array().unwrap();
    assert_eq!(records.len(), 20, "ten posts per window, nothing twice");
    for (w, id) in ids.iter().enumerate() {
        let page = format!("http://127.0.0.1:8080/maintenance/{id}");
        let thread: Vec<&Value> = records
            .iter()
            .filter(|r| r["value"]["facets"][0]["features"][0]["uri"] == page.as_str())
            .collect();
        assert_eq!(thread.len(), 10, "window {w}");
        let posts: Vec<_> = thread
            .iter()
            .map(|r| {
                let text = |k: &str| r[k].as_str().unwrap().to_owned();
                (r["value"].clone(), text("uri"), text("cid"))
            })
            .collect();
        crate::common::check_bluesky_thread(&posts, &page, json!(["en", "de"]));
        let root = thread[0];
        if w == 1 {
            let text = root["value"]["text"].as_str().unwrap();
            assert!(text.contains("👨‍👩‍👧‍👦") && text.contains("של"), "{text}");
        }
    }

    // A posted update corrected: the reference PDS takes the correction as a valid reply in
    // the window's thread; withdrawn, the post and its correction are deleted.
    let note = app
        .service
        .store()
        .list_updates(ids[0], None)
        .await
        .unwrap()
        .into_iter()
        .find(|u| u.kind == herald::domain::UpdateKind::Note)
        .unwrap();
    let service = app.service.acting(herald::domain::Actor::System);
    service
        .correct_update(ids[0], note.id, Some("Dump imported; checksums match."))
        .await
        .unwrap();
    assert!(app.settle(60).await.is_empty());
    let posts = list_posts(&pds, &did).await;
    assert_eq!(posts.len(), 21);
    let correction = posts
        .iter()
        .find(|r| {
            r["value"]["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("📣 Correction: Dump imported; checksums match."))
        })
        .expect("the correction is on the PDS");
    let first = records
        .iter()
        .find(|r| {
            r["value"]["facets"][0]["features"][0]["uri"]
                == format!("http://127.0.0.1:8080/maintenance/{}", ids[0]).as_str()
        })
        .unwrap();
    assert_eq!(correction["value"]["reply"]["root"]["uri"], first["uri"]);
    service.correct_update(ids[0], note.id, None).await.unwrap();
    assert!(app.settle(60).await.is_empty());
    assert_eq!(
        list_posts(&pds, &did).await.len(),
        19,
        "the note and its correction are gone"
    );
    outbox.stop().await;
}

async fn pds_account(pds: &Pds, handle: &str) -> (String, String) {
    let account = xrpc(
        &pds.url,
        "com.atproto.server.createAccount",
        None,
        json!({"handle": handle, "email": "ops@example.com", "password": "hunter2hunter2"}),
    )
    .await;
    let app_password = xrpc(
        &pds.url,
        "com.atproto.server.createAppPassword",
        account["accessJwt"].as_str(),
        json!({"name": "herald"}),
    )
    .await["password"]
        .as_str()
        .unwrap()
        .to_owned();
    (account["did"].as_str().unwrap().to_owned(), app_password)
}

async fn list_posts(pds: &Pds, did: &str) -> Vec<Value> {
    let listed: Value = reqwest::Client::new()
        .get(format!("{}/xrpc/com.atproto.repo.listRecords", pds.url))
        .query(&[
            ("repo", did),
            ("collection", "app.bsky.feed.post"),
            ("limit", "100"),
            ("reverse", "true"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    listed["records"].as_array().unwrap().clone()
}

/// Rollouts on the real PDS: one that belongs to a window posts into the window's thread, one
/// on its own starts a thread of its own with a link card; the PDS validates every record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_pds_threads_rollouts() {
    use herald::domain::{NewRollout, Report, TargetState, WindowAction, default_events};
    let pds = start_pds();
    let (did, password) = pds_account(&pds, "fishjam.test").await;
    let app = crate::common::TestApp::new().await;
    app.add_channel(NewChannel {
        name: "bluesky".into(),
        kind: Some(ChannelKind::Bluesky),
        target: "fishjam.test".into(),
        secret: ChannelSecret::new(password),
        api_url: Some(pds.url.clone()),
        events: default_events(ChannelKind::Bluesky),
        milestones: DEFAULT_MILESTONES.to_vec(),
        langs: vec!["en".into()],
        enabled: true,
        ..NewChannel::default()
    })
    .await;
    let outbox = app.start_outbox();
    let window = app
        .window(
            "Fishjam upgrade night",
            herald::domain::Schedule::Tentative { hint: None },
            0,
            vec![],
        )
        .await;
    app.act(window.id, WindowAction::Announce).await;
    app.settle(60).await;
    let linked = app
        .service
        .create_rollout(NewRollout {
            maintenance_id: Some(window.id),
            ..NewRollout::new(
                "Fishjam v1.4.0",
                Some("v1.3.2"),
                "v1.4.0",
                &["fishjam-1", "fishjam-2"],
            )
        })
        .await
        .unwrap();
    let alone = app
        .service
        .create_rollout(NewRollout::new(
            "Edge 🚀 v9 ñandú",
            Some("v8"),
            "v9",
            &["edge-1"],
        ))
        .await
        .unwrap();
    let report = |state, forced: bool| Report {
        forced,
        note: forced.then(|| "recording stuck".to_owned()),
        ..Report::state(state)
    };
    for (id, name, state, forced) in [
        (linked.id, "fishjam-1", TargetState::Draining, false),
        (alone.id, "edge-1", TargetState::Draining, false),
        (linked.id, "fishjam-1", TargetState::Updating, true),
        (linked.id, "fishjam-1", TargetState::Healthy, false),
        (linked.id, "fishjam-2", TargetState::Drained, false),
        (alone.id, "edge-1", TargetState::Failed, false),
        (linked.id, "fishjam-2", TargetState::Healthy, false),
    ] {
        app.service
            .report(id, name, &report(state, forced))
            .await
            .unwrap();
    }
    let unsent = app.settle(60).await;
    assert!(unsent.is_empty(), "{unsent:#?}");

    let records = list_posts(&pds, &did).await;
    let texts: Vec<&str> = records
        .iter()
        .map(|r| r["value"]["text"].as_str().unwrap())
        .collect();
    // Window announcement; linked: started, forced, completed; alone: started, target
    // failed, rollout failed.
    assert_eq!(records.len(), 7, "{texts:#?}");
    let window_root = &records[0];
    let in_window: Vec<&Value> = records
        .iter()
        .filter(|r| r["value"]["reply"]["root"]["uri"] == window_root["uri"])
        .collect();
    assert_eq!(
        in_window.len(),
        3,
        "the linked rollout answers in the window's thread: {texts:#?}"
    );
    let mut parent = window_root;
    for post in &in_window {
        assert_eq!(post["value"]["reply"]["parent"]["uri"], parent["uri"]);
        assert_eq!(post["value"]["reply"]["parent"]["cid"], parent["cid"]);
        assert_eq!(
            post["value"]["facets"][0]["features"][0]["uri"],
            format!("http://127.0.0.1:8080/rollouts/{}", linked.id)
        );
        parent = post;
    }
    assert!(
        in_window[1]["value"]["text"]
            .as_str()
            .unwrap()
            .contains("forced")
    );
    assert!(
        in_window[2]["value"]["text"]
            .as_str()
            .unwrap()
            .contains("Rollout completed")
    );
    let own: Vec<&Value> = records
        .iter()
        .filter(|r| {
            r["value"]["facets"][0]["features"][0]["uri"]
                == format!("http://127.0.0.1:8080/rollouts/{}", alone.id).as_str()
        })
        .collect();
    assert_eq!(own.len(), 3, "{texts:#?}");
    let posts: Vec<_> = own
        .iter()
        .map(|r| {
            let text = |k: &str| r[k].as_str().unwrap().to_owned();
            (r["value"].clone(), text("uri"), text("cid"))
        })
        .collect();
    crate::common::check_bluesky_thread(
        &posts,
        &format!("http://127.0.0.1:8080/rollouts/{}", alone.id),
        json!(["en"]),
    );
    assert!(own[0]["value"]["text"].as_str().unwrap().contains("ñandú"));
    outbox.stop().await;
}

/// An incident on the real PDS: published from a draft an alert opened, then identified,
/// resolved and its postmortem, one valid thread with the opening as its root; the repeats of
/// the alert post nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_pds_threads_an_incident() {
    use herald::domain::{IncidentStatus, Role, default_events, default_milestones};
    let pds = start_pds();
    let (did, password) = pds_account(&pds, "decapi-status.test").await;
    let app = crate::common::TestApp::new().await;
    app.add_channel(NewChannel {
        name: "bluesky".into(),
        kind: Some(ChannelKind::Bluesky),
        target: "decapi-status.test".into(),
        secret: ChannelSecret::new(password),
        api_url: Some(pds.url.clone()),
        events: default_events(ChannelKind::Bluesky),
        milestones: default_milestones(),
        langs: vec!["en".into()],
        enabled: true,
        ..NewChannel::default()
    })
    .await;
    app.component("api", "API").await;
    let outbox = app.start_outbox();
    let reporter = app.token(Role::Reporter).await;
    let body = crate::incidents::alertmanager(
        "{}:{alertname=\"HighErrorRate\"}",
        "firing",
        &[("a1", "firing")],
    );
    for _ in 0..3 {
        let (status, v, _) = app
            .api(
                axum::http::Method::POST,
                "/api/v1/alerts/alertmanager",
                Some(&reporter),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, axum::http::StatusCode::OK, "{v}");
    }
    let id = app
        .service
        .incidents(herald::store::IncidentFilter::All, 0, 10)
        .await
        .unwrap()
        .items[0]
        .id;
    app.service.publish_incident(id).await.unwrap();
    app.service
        .post_incident_update(
            id,
            Some(IncidentStatus::Identified),
            "A bad deploy; rolling back.",
            None,
        )
        .await
        .unwrap();
    app.service
        .resolve_incident(id, "Rolled back; error rates normal.")
        .await
        .unwrap();
    app.service
        .set_postmortem(id, "## Cause\nA config change disabled the write pool.")
        .await
        .unwrap();
    let unsent = app.settle(60).await;
    assert!(unsent.is_empty(), "{unsent:#?}");

    let records = list_posts(&pds, &did).await;
    let texts: Vec<&str> = records
        .iter()
        .map(|r| r["value"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(records.len(), 4, "{texts:#?}");
    assert!(texts[0].contains("Incident: HighErrorRate"), "{texts:#?}");
    assert!(texts[1].contains("Identified"), "{texts:#?}");
    assert!(texts[2].contains("Resolved"), "{texts:#?}");
    assert!(texts[3].contains("Postmortem"), "{texts:#?}");
    let posts: Vec<_> = records
        .iter()
        .map(|r| {
            let text = |k: &str| r[k].as_str().unwrap().to_owned();
            (r["value"].clone(), text("uri"), text("cid"))
        })
        .collect();
    crate::common::check_bluesky_thread(
        &posts,
        &format!("http://127.0.0.1:8080/incidents/{id}"),
        json!(["en"]),
    );
    outbox.stop().await;
}
