//! `/api/v1`: every endpoint's success and each client mistake, every response checked against
//! the OpenAPI document Herald serves.

use crate::common::TestApp;
use axum::http::{Method, StatusCode};
use herald::domain::Role;
use serde_json::{Value, json};

/// Checks responses against `/api/openapi.json`.
struct Contract {
    doc: Value,
}

impl Contract {
    async fn load(app: &TestApp) -> Self {
        let r = app.get("/api/openapi.json").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("content-type"), Some("application/json"));
        let doc: Value = serde_json::from_slice(&r.body).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        Self { doc }
    }

    /// Assert that `body` with `status` is what the document promises for `method template`.
    fn check(&self, method: &str, template: &str, status: StatusCode, body: &Value) {
        let op = &self.doc["paths"][template][method];
        assert!(op.is_object(), "{method} {template} is not documented");
        let responses = &op["responses"];
        let code = status.as_u16().to_string();
        let class = format!("{}XX", status.as_u16() / 100);
        let response = if responses[&code].is_object() {
            &responses[&code]
        } else {
            &responses[&class]
        };
        assert!(
            response.is_object(),
            "{method} {template} answered {status}, which is not documented"
        );
        let schema = &response["content"]["application/json"]["schema"];
        let mut root = schema.clone();
        root["components"] = self.doc["components"].clone();
        let validator = jsonschema::validator_for(&root).expect("a valid schema");
        let errors: Vec<String> = validator.iter_errors(body).map(|e| e.to_string()).collect();
        assert!(
            errors.is_empty(),
            "{method} {template} {status}: {errors:?}\n{body:#}"
        );
    }
}

struct Client<'a> {
    app: &'a TestApp,
    contract: Contract,
    token: String,
}

impl Client<'_> {
    async fn call(
        &self,
        method: Method,
        template: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_as(Some(&self.token.clone()), method, template, path, body)
            .await
    }

    async fn call_as(
        &self,
        token: Option<&str>,
        method: Method,
        template: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, json, headers) = self.app.api(method.clone(), path, token, body).await;
        self.contract
            .check(&method.as_str().to_lowercase(), template, status, &json);
        if status == StatusCode::UNAUTHORIZED {
            assert!(headers.get("www-authenticate").is_some());
        }
        (status, json)
    }
}

async fn client(app: &TestApp, role: Role) -> Client<'_> {
    Client {
        app,
        contract: Contract::load(app).await,
        token: app.token(role).await,
    }
}

const M: &str = "/api/v1/maintenances";
const ONE: &str = "/api/v1/maintenances/{id}";
const ACTION: &str = "/api/v1/maintenances/{id}/{action}";
const STEP: &str = "/api/v1/maintenances/{id}/steps/{position}/{action}";
const UPDATES: &str = "/api/v1/maintenances/{id}/updates";
const COMPONENTS: &str = "/api/v1/components";

#[tokio::test]
async fn a_window_run_through_the_api() {
    let app = TestApp::new().await;
    let admin = client(&app, Role::Admin).await;
    let (status, c) = admin
        .call(
            Method::POST,
            COMPONENTS,
            COMPONENTS,
            Some(json!({"slug": "api", "name": "API"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    let api = client(&app, Role::Maintainer).await;

    let (status, w) = api
        .call(
            Method::POST,
            M,
            M,
            Some(json!({
                "title": "Database cluster migration",
                "schedule_hint": "this Sunday or within two weeks",
                "components": ["api"],
                "steps": [{"title": "Reduce the load balancer"}, {"title": "Dump and import"}]
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{w}");
    assert_eq!(w["state"], "draft");
    assert_eq!(w["components"], json!(["api"]));
    assert_eq!(w["steps"][1]["position"], 2);
    assert_eq!(w["steps"][1]["state"], "pending");
    let id = w["id"].as_i64().unwrap();
    let one = format!("{M}/{id}");

    let (status, w) = api.call(Method::GET, ONE, &one, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(w["schedule_hint"], "this Sunday or within two weeks");

    let (status, w) = api
        .call(Method::POST, ACTION, &format!("{one}/announce"), None)
        .await;
    assert_eq!(
        (status, w["state"].as_str()),
        (StatusCode::OK, Some("planned"))
    );

    let (status, w) = api
        .call(
            Method::PATCH,
            ONE,
            &one,
            Some(json!({"title": "DB cluster migration", "starts_at": "2030-01-05T10:00:00Z", "ends_at": "2030-01-05T12:00:00Z"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{w}");
    assert_eq!(w["state"], "scheduled");
    assert_eq!(w["title"], "DB cluster migration");
    assert_eq!(w["starts_at"], "2030-01-05T10:00:00Z");
    assert_eq!(w["schedule_hint"], Value::Null);

    let (status, _) = api
        .call(Method::POST, ACTION, &format!("{one}/start"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    for (position, note) in [(1, Some("LB now on app-1")), (2, None)] {
        let (status, _) = api
            .call(
                Method::POST,
                STEP,
                &format!("{one}/steps/{position}/start"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let body = note.map(|n| json!({ "note": n }));
        let (status, w) = api
            .call(
                Method::POST,
                STEP,
                &format!("{one}/steps/{position}/done"),
                body,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{w}");
    }
    let (_, w) = api.call(Method::GET, ONE, &one, None).await;
    assert_eq!(w["steps_done"], 2);
    assert_eq!(w["steps"][0]["note"], "LB now on app-1");
    assert!(w["steps"][0]["started_at"].is_string());

    let (status, u) = api
        .call(
            Method::POST,
            UPDATES,
            &format!("{one}/updates"),
            Some(json!({"body": "Looks good."})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{u}");
    assert_eq!(u["kind"], "note");

    let (status, w) = api
        .call(
            Method::POST,
            ACTION,
            &format!("{one}/complete"),
            Some(json!({"note": "Done."})),
        )
        .await;
    assert_eq!(
        (status, w["state"].as_str()),
        (StatusCode::OK, Some("completed"))
    );

    let (status, updates) = api
        .call(Method::GET, UPDATES, &format!("{one}/updates"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let kinds: Vec<&str> = updates
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "completed",
            "note",
            "step_done",
            "step_started",
            "step_done",
            "step_started",
            "started",
            "rescheduled",
            "announced"
        ]
    );
    let (status, components) = api.call(Method::GET, COMPONENTS, COMPONENTS, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(components[0]["status"], "operational");
    // The public page shows what the API did.
    assert!(
        app.get(&format!("/maintenance/{id}"))
            .await
            .text()
            .contains("Looks good.")
    );
}

#[tokio::test]
async fn tokens_are_required_and_checked() {
    let app = TestApp::new().await;
    let api = client(&app, Role::Maintainer).await;
    let (status, e) = api
        .call_as(None, Method::GET, COMPONENTS, COMPONENTS, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(e["error"]["code"], "unauthorized");
    for bad in ["hrld_nope", "not-even-a-token"] {
        let (status, _) = api
            .call_as(Some(bad), Method::GET, COMPONENTS, COMPONENTS, None)
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, e, _) = app.api(Method::GET, COMPONENTS, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{e}");

    // Revoked: 401 from then on.
    let token = app.service.tokens().await.unwrap()[0].clone();
    app.service.revoke_token(token.id).await.unwrap();
    let (status, e) = api.call(Method::GET, COMPONENTS, COMPONENTS, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(e["error"]["message"].as_str().unwrap().contains("revoked"));
}

#[tokio::test]
async fn a_maintainer_may_not_do_admin_things() {
    let app = TestApp::new().await;
    let api = client(&app, Role::Maintainer).await;
    let (status, e) = api
        .call(
            Method::POST,
            COMPONENTS,
            COMPONENTS,
            Some(json!({"slug": "db", "name": "DB"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(e["error"]["code"], "forbidden");
    assert!(app.service.components().await.unwrap().is_empty());
}

#[tokio::test]
async fn client_mistakes_get_clear_4xx() {
    let app = TestApp::new().await;
    let api = client(&app, Role::Admin).await;
    let (_, w) = api
        .call(
            Method::POST,
            M,
            M,
            Some(json!({"title": "T", "steps": [{"title": "one"}]})),
        )
        .await;
    let one = format!("{M}/{}", w["id"]);

    // Unknown ids, actions and paths.
    for (template, path) in [
        (ONE, format!("{M}/999")),
        (ONE, format!("{M}/abc")),
        (UPDATES, format!("{M}/999/updates")),
    ] {
        let (status, e) = api.call(Method::GET, template, &path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(e["error"]["code"], "not_found");
    }
    let (status, _) = api
        .call(Method::POST, ACTION, &format!("{one}/explode"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api
        .call(Method::POST, STEP, &format!("{one}/steps/1/explode"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, e, _) = app
        .api(Method::GET, "/api/v1/nothing", Some(&api.token), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(e["error"]["code"], "not_found");

    // Illegal transitions say why.
    let (status, e) = api
        .call(Method::POST, ACTION, &format!("{one}/start"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(e["error"]["code"], "illegal_transition");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("announce it first")
    );
    let (status, e) = api
        .call(Method::POST, STEP, &format!("{one}/steps/7/start"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no step 7")
    );

    // Invalid values name their field.
    for (body, field) in [
        (json!({"title": "  "}), "title"),
        (json!({"title": "x", "components": ["nope"]}), "components"),
        (
            json!({"title": "x", "starts_at": "2030-01-01T10:00:00Z", "ends_at": "2030-01-01T09:00:00Z"}),
            "ends_at",
        ),
        (json!({"title": "x".repeat(201)}), "title"),
    ] {
        let (status, e) = api.call(Method::POST, M, M, Some(body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
        assert_eq!(e["error"]["field"], field);
    }
    let (status, e) = api
        .call(
            Method::POST,
            COMPONENTS,
            COMPONENTS,
            Some(json!({"slug": "Bad Slug", "name": "x"})),
        )
        .await;
    assert_eq!(
        (status, e["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("slug"))
    );

    // Malformed bodies.
    for body in [
        json!({}),
        json!({"title": 5}),
        json!({"title": "x", "surprise": 1}),
        json!([1]),
    ] {
        let (status, e) = api.call(Method::POST, M, M, Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
        assert_eq!(e["error"]["code"], "bad_request");
    }
    let (status, e, _) = app.api(Method::POST, M, Some(&api.token), None).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "an empty body has no title: {e}"
    );

    // Too large.
    let huge = json!({"title": "x", "description": "y".repeat(300 * 1024)});
    let (status, e) = api.call(Method::POST, M, M, Some(huge)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(e["error"]["code"], "payload_too_large");

    // Nothing of the refused requests was stored.
    assert_eq!(app.service.store().count_maintenances().await.unwrap(), 1);
}

#[tokio::test]
async fn patch_clears_the_date_and_edits_silently() {
    let app = TestApp::new().await;
    let api = client(&app, Role::Maintainer).await;
    let (_, w) = api
        .call(
            Method::POST,
            M,
            M,
            Some(json!({"title": "T", "starts_at": "2030-01-01T10:00:00Z", "ends_at": "2030-01-01T11:00:00Z"})),
        )
        .await;
    let one = format!("{M}/{}", w["id"]);
    api.call(Method::POST, ACTION, &format!("{one}/announce"), None)
        .await;
    let (status, w) = api
        .call(
            Method::PATCH,
            ONE,
            &one,
            Some(json!({"starts_at": null, "schedule_hint": "next week"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{w}");
    assert_eq!(w["state"], "planned");
    assert_eq!(w["ends_at"], Value::Null);
    assert_eq!(w["schedule_hint"], "next week");
    let (_, w) = api
        .call(
            Method::PATCH,
            ONE,
            &one,
            Some(json!({"description": "More *detail*."})),
        )
        .await;
    assert_eq!(w["description"], "More *detail*.");
    let (_, updates) = api
        .call(Method::GET, UPDATES, &format!("{one}/updates"), None)
        .await;
    assert_eq!(
        updates.as_array().unwrap().len(),
        2,
        "announce + reschedule; the edit is silent"
    );
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let app = TestApp::new().await;
    let doc = Contract::load(&app).await.doc;
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    for p in [M, ONE, ACTION, STEP, UPDATES, COMPONENTS] {
        assert!(
            paths.iter().any(|k| k.as_str() == p),
            "{p} missing from {paths:?}"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

#[tokio::test]
async fn the_contract_check_catches_a_wrong_body() {
    let app = TestApp::new().await;
    let contract = Contract::load(&app).await;
    let wrong = std::panic::catch_unwind(|| {
        contract.check("get", ONE, StatusCode::OK, &json!({"id": "not a number"}));
    });
    assert!(
        wrong.is_err(),
        "a body missing fields and of the wrong type must fail the check"
    );
    let undocumented = std::panic::catch_unwind(|| {
        contract.check("get", ONE, StatusCode::INTERNAL_SERVER_ERROR, &json!({}));
    });
    assert!(
        undocumented.is_err(),
        "an undocumented status must fail the check"
    );
}

#[tokio::test]
async fn the_reference_page_lists_every_operation_and_schema() {
    let app = TestApp::new().await;
    let page = app.get("/api").await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.text();
    for op in [
        "POST /api/v1/maintenances</code>",
        "PATCH /api/v1/maintenances/{id}</code>",
        "POST /api/v1/maintenances/{id}/steps/{position}/{action}</code>",
        "id=\"schema-MaintenanceJson\"",
        "id=\"schema-ErrorBody\"",
    ] {
        assert!(html.contains(op), "{op}");
    }
    assert!(
        !html.contains("<script>") && !html.contains("https://"),
        "no external assets"
    );
}

/// The schema's length limits are written in attributes; this keeps them equal to the domain's.
#[tokio::test]
async fn schema_limits_match_the_domain() {
    use herald::domain::limits;
    let app = TestApp::new().await;
    let doc = Contract::load(&app).await.doc;
    let max = |schema: &str, field: &str| {
        doc["components"]["schemas"][schema]["properties"][field]["maxLength"]
            .as_u64()
            .unwrap_or_else(|| panic!("{schema}.{field} has no maxLength")) as usize
    };
    assert_eq!(max("CreateMaintenance", "title"), limits::TITLE_MAX);
    assert_eq!(
        max("CreateMaintenance", "description"),
        limits::DESCRIPTION_MAX
    );
    assert_eq!(max("CreateMaintenance", "schedule_hint"), limits::HINT_MAX);
    assert_eq!(max("PatchMaintenance", "title"), limits::TITLE_MAX);
    assert_eq!(max("StepInput", "title"), limits::TITLE_MAX);
    assert_eq!(max("NoteInput", "note"), limits::NOTE_MAX);
    assert_eq!(max("UpdateInput", "body"), limits::UPDATE_MAX);
    assert_eq!(max("ComponentInput", "slug"), limits::SLUG_MAX);
    assert_eq!(max("ComponentInput", "name"), limits::NAME_MAX);
    assert_eq!(
        doc["components"]["schemas"]["CreateMaintenance"]["properties"]["steps"]["maxItems"]
            .as_u64()
            .map(|n| n as usize),
        Some(limits::STEPS_MAX)
    );
}

const R: &str = "/api/v1/rollouts";
const R_ONE: &str = "/api/v1/rollouts/{id}";
const R_ACTION: &str = "/api/v1/rollouts/{id}/{action}";
const R_TARGET: &str = "/api/v1/rollouts/{id}/targets/{name}";
const R_RETRY: &str = "/api/v1/rollouts/{id}/targets/{name}/retry";
const R_UPDATES: &str = "/api/v1/rollouts/{id}/updates";

#[tokio::test]
async fn a_rollout_reported_through_the_api() {
    let app = TestApp::new().await;
    let api = client(&app, Role::Maintainer).await;
    let names = ["fishjam-1.eu-west", "fishjam_2", "ñandú/3"];
    let (status, r) = api
        .call(
            Method::POST,
            R,
            R,
            Some(json!({"title": "Fishjam v1.4.0", "from_version": "v1.3.2",
                        "to_version": "v1.4.0", "targets": names})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{r}");
    assert_eq!(r["state"], "pending");
    assert_eq!(r["progress_deadline_seconds"], 600);
    assert_eq!(r["stale_after_seconds"], 120);
    assert_eq!(r["targets"][2]["name"], "ñandú/3");
    assert_eq!(r["targets"][2]["version"], "v1.3.2");
    let id = r["id"].as_i64().unwrap();
    let target = |name: &str| {
        let encoded: String = name
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        format!("{R}/{id}/targets/{encoded}")
    };
    let report = |name: &str, body: Value| {
        let path = target(name);
        let api = &api;
        async move { api.call(Method::PUT, R_TARGET, &path, Some(body)).await }
    };

    // Every name a deploy tool uses works percent-encoded.
    for name in names {
        let (status, t) = report(
            name,
            json!({"state": "draining", "remaining": {"rooms": 2}}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{name}: {t}");
        assert_eq!(t["target"]["name"], name);
        assert_eq!(t["target"]["state"], "draining");
        assert_eq!(t["rollout_state"], "in_progress");
    }
    let (status, updates) = api
        .call(Method::GET, R_UPDATES, &format!("{R}/{id}/updates"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let entries = updates.as_array().unwrap().len();
    assert_eq!(entries, 4, "started + three draining: {updates:#}");
    assert_eq!(updates[0]["actor"], "token:test");
    // The same report twice: 200, no new timeline entry, only the last-report time.
    app.at(1);
    let (status, t) = report(
        names[0],
        json!({"state": "draining", "remaining": {"rooms": 2}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        t["target"]["last_report_at"],
        json!(app.time(1).to_string())
    );
    let (_, updates) = api
        .call(Method::GET, R_UPDATES, &format!("{R}/{id}/updates"), None)
        .await;
    assert_eq!(updates.as_array().unwrap().len(), entries);

    // Out of order: 409 with the reason; forced: accepted and marked.
    let (status, e) = report(names[0], json!({"state": "healthy"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{e}");
    assert_eq!(e["error"]["code"], "illegal_transition");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("still draining (rooms 2 left)"),
        "{e}"
    );
    let (status, t) = report(
        names[0],
        json!({"state": "healthy", "forced": true, "note": "hung recording", "version": "v1.4.0"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(t["target"]["forced"], true);
    assert_eq!(t["target"]["forced_reason"], "hung recording");
    assert_eq!(t["target"]["version"], "v1.4.0");

    // Bad values: 422 with the field.
    for (body, field) in [
        (
            json!({"state": "draining", "remaining": {"rooms": -1}}),
            "remaining",
        ),
        (
            json!({"state": "draining", "remaining": {"rooms": 1.5}}),
            "remaining",
        ),
        (
            json!({"state": "draining", "remaining": {"rooms": "3"}}),
            "remaining",
        ),
        (
            json!({"state": "draining", "remaining": {"x".repeat(41): 1}}),
            "remaining",
        ),
        (
            json!({"state": "draining", "remaining": (0..11).map(|i| (format!("l{i}"), json!(1))).collect::<serde_json::Map<_, _>>()}),
            "remaining",
        ),
        (
            json!({"state": "draining", "version": "v".repeat(65)}),
            "version",
        ),
        (json!({"state": "sleeping"}), "state"),
    ] {
        let (status, e) = report(names[1], body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {e}");
        assert_eq!(e["error"]["field"], field, "{body}");
    }
    // Unknown rollout or target: 404.
    let (status, _) = api
        .call(
            Method::PUT,
            R_TARGET,
            &format!("{R}/999/targets/x"),
            Some(json!({"state": "draining"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = report("fishjam-9", json!({"state": "draining"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A failed target, retried.
    let (status, _) = report(names[1], json!({"state": "failed", "note": "crashed"})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, t) = api
        .call(
            Method::POST,
            R_RETRY,
            &format!("{}/retry", target(names[1])),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(t["target"]["state"], "pending");
    assert_eq!(t["target"]["attempts"], 2);
    let (status, e) = api
        .call(
            Method::POST,
            R_RETRY,
            &format!("{}/retry", target(names[1])),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{e}");

    // Pause, resume, list by state, patch.
    let (status, r) = api
        .call(Method::POST, R_ACTION, &format!("{R}/{id}/pause"), None)
        .await;
    assert_eq!(
        (status, r["state"].as_str()),
        (StatusCode::OK, Some("paused"))
    );
    let (status, list) = api
        .call(Method::GET, R, &format!("{R}?state=paused"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (_, list) = api
        .call(Method::GET, R, &format!("{R}?state=completed"), None)
        .await;
    assert_eq!(list, json!([]));
    let (status, e) = api
        .call(Method::GET, R, &format!("{R}?state=nope"), None)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let (status, e) = api
        .call(Method::GET, R, &format!("{R}?limit=x"), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    let (status, r) = api
        .call(Method::POST, R_ACTION, &format!("{R}/{id}/resume"), None)
        .await;
    assert_eq!(
        (status, r["state"].as_str()),
        (StatusCode::OK, Some("in_progress"))
    );
    let (status, r) = api
        .call(
            Method::PATCH,
            R_ONE,
            &format!("{R}/{id}"),
            Some(json!({"public_names": false, "progress_deadline_seconds": 900})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["public_names"], false);
    let (status, e) = api
        .call(
            Method::PATCH,
            R_ONE,
            &format!("{R}/{id}"),
            Some(json!({"maintenance_id": 12345})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(e["error"]["field"], "maintenance_id");

    // Roll back: the reverse rollout for the target on v1.4.0, linked both ways.
    let (status, r) = api
        .call(Method::POST, R_ACTION, &format!("{R}/{id}/rollback"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["state"], "aborted");
    let back = r["rolled_back_by"].as_i64().unwrap();
    let (_, b) = api
        .call(Method::GET, R_ONE, &format!("{R}/{back}"), None)
        .await;
    assert_eq!(b["rollback_of"], id);
    assert_eq!(b["from_version"], "v1.4.0");
    assert_eq!(b["to_version"], "v1.3.2");
    assert_eq!(b["targets"].as_array().unwrap().len(), 1);
    assert_eq!(b["targets"][0]["name"], names[0]);
    let (status, _) = api
        .call(Method::POST, R_ACTION, &format!("{R}/{id}/rollback"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = api
        .call(Method::POST, R_ACTION, &format!("{R}/{id}/explode"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn new_rollouts_are_checked() {
    let app = TestApp::new().await;
    let api = client(&app, Role::Maintainer).await;
    for (body, field) in [
        (
            json!({"title": "x", "to_version": "v1", "targets": []}),
            "targets",
        ),
        (
            json!({"title": "x", "to_version": "v1", "targets": ["a", "a"]}),
            "targets",
        ),
        (
            json!({"title": "x", "to_version": "v 1", "targets": ["a"]}),
            "to_version",
        ),
        (
            json!({"title": " ", "to_version": "v1", "targets": ["a"]}),
            "title",
        ),
        (
            json!({"title": "x", "to_version": "v1", "targets": ["a"], "maintenance_id": 77}),
            "maintenance_id",
        ),
        (
            json!({"title": "x", "to_version": "v1", "targets": ["a"], "stale_after_seconds": 1}),
            "stale_after_seconds",
        ),
    ] {
        let (status, e) = api.call(Method::POST, R, R, Some(body.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {e}");
        assert_eq!(e["error"]["field"], field, "{body}");
    }
    let (status, _) = api
        .call(Method::POST, R, R, Some(json!({"title": "x"})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// `"announce": false` changes the window without posting; a posted update is corrected with
/// PATCH and withdrawn with DELETE; Herald's own texts are not.
#[tokio::test]
async fn updates_can_be_quiet_corrected_and_withdrawn() {
    let app = TestApp::new().await;
    app.add_channel(herald::domain::NewChannel {
        name: "hook".into(),
        kind: Some(herald::domain::ChannelKind::Webhook),
        target: "https://hooks.example.com/herald".into(),
        events: herald::domain::DEFAULT_EVENTS.to_vec(),
        enabled: true,
        ..Default::default()
    })
    .await;
    let token = app.token(Role::Maintainer).await;
    let (status, m, _) = app
        .api(
            Method::POST,
            "/api/v1/maintenances",
            Some(&token),
            Some(json!({"title": "Database cluster migration", "steps": [{"title": "Dump"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{m}");
    let id = m["id"].as_i64().unwrap();
    let deliveries = |app: &TestApp| {
        let app = app.service.clone();
        async move {
            app.deliveries(herald::domain::Subject::Window(id))
                .await
                .unwrap()
                .len()
        }
    };
    let (status, _, _) = app
        .api(
            Method::POST,
            &format!("/api/v1/maintenances/{id}/announce"),
            Some(&token),
            Some(json!({"announce": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(deliveries(&app).await, 0, "announced on the page only");
    let (status, u, _) = app
        .api(
            Method::POST,
            &format!("/api/v1/maintenances/{id}/updates"),
            Some(&token),
            Some(json!({"body": "Backups verified at 02:10."})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{u}");
    assert_eq!(deliveries(&app).await, 1);
    let update = u["id"].as_i64().unwrap();

    let path = format!("/api/v1/maintenances/{id}/updates/{update}");
    let (status, fixed, _) = app
        .api(
            Method::PATCH,
            &path,
            Some(&token),
            Some(json!({"body": "Backups verified at 02:15."})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{fixed}");
    assert_eq!(fixed["body"], "Backups verified at 02:15.");
    assert!(fixed["edited_at"].is_string());
    // The webhook never got the first post (no outbox runs here): nothing to correct.
    let (status, _, _) = app
        .api(
            Method::PATCH,
            &format!("/api/v1/maintenances/{id}/updates/999"),
            Some(&token),
            Some(json!({"body": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = app.api(Method::DELETE, &path, Some(&token), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, list, _) = app
        .api(
            Method::GET,
            &format!("/api/v1/maintenances/{id}/updates"),
            Some(&token),
            None,
        )
        .await;
    assert!(
        list.as_array().unwrap().iter().all(|u| u["id"] != update),
        "{list}"
    );
    let (status, _, _) = app.api(Method::DELETE, &path, Some(&token), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "withdrawn once");
    // The announcement is Herald's text: it stays.
    let announced = list.as_array().unwrap().last().unwrap()["id"]
        .as_i64()
        .unwrap();
    let (status, e, _) = app
        .api(
            Method::PATCH,
            &format!("/api/v1/maintenances/{id}/updates/{announced}"),
            Some(&token),
            Some(json!({"body": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{e}");
}

/// `GET /api/v1/maintenances`: newest first, by state and by when, a page at a time; in the
/// OpenAPI document.
#[tokio::test]
async fn windows_are_listed_by_state_and_time() {
    let app = TestApp::new().await;
    let token = app.token(Role::Maintainer).await;
    let create = |body: Value| {
        let (app, token) = (&app, &token);
        async move {
            let (status, m, _) = app
                .api(
                    Method::POST,
                    "/api/v1/maintenances",
                    Some(token),
                    Some(body),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{m}");
            m["id"].as_i64().unwrap()
        }
    };
    let undated = create(json!({"title": "Someday"})).await;
    let december = create(json!({"title": "December", "starts_at": "2030-12-13T01:00:00Z", "ends_at": "2030-12-13T03:00:00Z"})).await;
    let january = create(json!({"title": "January", "starts_at": "2031-01-10T01:00:00Z"})).await;
    app.act(december, herald::domain::WindowAction::Announce)
        .await;
    let list = |query: &'static str| {
        let (app, token) = (&app, &token);
        async move {
            let (status, body, _) = app
                .api(
                    Method::GET,
                    &format!("/api/v1/maintenances{query}"),
                    Some(token),
                    None,
                )
                .await;
            (status, body)
        }
    };
    let ids = |body: &Value| -> Vec<i64> {
        body.as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_i64().unwrap())
            .collect()
    };
    let (status, all) = list("").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&all), [january, december, undated], "newest first");
    let (_, scheduled) = list("?state=scheduled").await;
    assert_eq!(ids(&scheduled), [december]);
    let (_, in_january) = list("?from=2031-01-01T00:00:00Z&until=2031-02-01T00:00:00Z").await;
    assert_eq!(ids(&in_january), [january]);
    let (_, from_dec) = list("?from=2030-12-13T02:00:00Z").await;
    assert_eq!(
        ids(&from_dec),
        [january, december],
        "a window still running counts"
    );
    let (_, page) = list("?limit=1&offset=1").await;
    assert_eq!(ids(&page), [december]);
    for bad in ["?state=done", "?from=yesterday", "?limit=0", "?colour=red"] {
        let (status, body) = list(bad).await;
        assert!(status.is_client_error(), "{bad}: {status} {body}");
        assert!(body["error"]["code"].is_string(), "{bad}: {body}");
    }
    let (status, _) = {
        let (status, body, _) = app
            .api(Method::GET, "/api/v1/maintenances", None, None)
            .await;
        (status, body)
    };
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let doc = app.get("/api/openapi.json").await.text();
    let doc: Value = serde_json::from_str(&doc).unwrap();
    assert!(doc["paths"]["/api/v1/maintenances"]["get"].is_object());
}

/// An expected end that has already passed is refused, on creation and on a new date: it is
/// a typo, and would announce the past (or show a running window as overrunning at once).
#[tokio::test]
async fn an_end_in_the_past_is_refused() {
    let app = TestApp::new().await;
    let token = app.token(Role::Maintainer).await;
    let now = app.service.now();
    let past = (now - jiff::SignedDuration::from_hours(24 * 12)).to_string();
    let soon = (now + jiff::SignedDuration::from_hours(1)).to_string();
    let (status, e, _) = app
        .api(
            Method::POST,
            "/api/v1/maintenances",
            Some(&token),
            Some(json!({"title": "Migration", "starts_at": past, "ends_at": past})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(e["error"]["field"], "ends_at", "{e}");
    let (status, m, _) = app
        .api(
            Method::POST,
            "/api/v1/maintenances",
            Some(&token),
            Some(json!({"title": "Migration"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let path = format!("/api/v1/maintenances/{}", m["id"]);
    let (status, e, _) = app
        .api(
            Method::PATCH,
            &path,
            Some(&token),
            Some(json!({"starts_at": past, "ends_at": soon.clone()})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a start in the past with an end to come is fine: {e}"
    );
    let (status, e, _) = app
        .api(
            Method::PATCH,
            &path,
            Some(&token),
            Some(json!({"ends_at": past})),
        )
        .await;
    assert!(status.is_client_error(), "{e}");
}

/// One-line fields refuse line breaks and other control characters, naming the field; text of
/// several lines keeps its lines, a lone CR (which iCalendar and chat read differently) among
/// them made a line break.
#[tokio::test]
async fn control_characters_are_refused_in_one_line_fields() {
    let app = TestApp::new().await;
    let token = app.token(Role::Admin).await;
    for (path, body, field) in [
        (
            "/api/v1/maintenances",
            json!({"title": "Migration\rBCC: everyone"}),
            "title",
        ),
        (
            "/api/v1/maintenances",
            json!({"title": "Migration", "steps": [{"title": "Dump\u{0}"}]}),
            "steps",
        ),
        (
            "/api/v1/maintenances",
            json!({"title": "Migration", "schedule_hint": "Sunday\nor later"}),
            "schedule_hint",
        ),
        (
            "/api/v1/components",
            json!({"slug": "api", "name": "Public\tAPI"}),
            "name",
        ),
        (
            "/api/v1/rollouts",
            json!({"title": "v1.4\r\nrolled back", "from_version": "1", "to_version": "2",
                   "targets": ["a"]}),
            "title",
        ),
        (
            "/api/v1/rollouts",
            json!({"title": "v1.4", "from_version": "1", "to_version": "2",
                   "targets": ["a\rb"]}),
            "targets",
        ),
    ] {
        let (status, e, _) = app.api(Method::POST, path, Some(&token), Some(body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {e}");
        assert_eq!(e["error"]["field"], field, "{path}: {e}");
    }
    let (status, m, _) = app
        .api(
            Method::POST,
            "/api/v1/maintenances",
            Some(&token),
            Some(json!({"title": "Migration", "description": "One\r\nTwo\rThree"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{m}");
    assert_eq!(m["description"], "One\nTwo\nThree");
}
