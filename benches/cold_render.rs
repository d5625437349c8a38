//! Cold renders with a long history: how much slower are `/`, `/history` (first and a deep
//! page) and a window's page to render when thousands of windows are in history, against the
//! same pages over the demo data alone, measured in the same run.
//!
//! `cargo bench --bench cold_render` (HISTORY=N sets the history size, default 5000).

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use herald::config::Settings;
use herald::domain::{Impact, NewMaintenance, NewStep, Schedule, StepAction, WindowAction};
use herald::service::Service;
use herald::web::{AppState, router};
use tower::ServiceExt;

const SAMPLES: usize = 25;

async fn setup(history: usize) -> (tempfile::TempDir, Service, Settings) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/bench.db", dir.path().display());
    let settings = Settings::for_database(&url);
    let state = herald::server::build(&settings, true).await.unwrap();
    let service = state.service.clone();
    for i in 0..history {
        let w = service
            .create_maintenance(NewMaintenance {
                title: format!("Past maintenance {i}"),
                description: "Routine work.".into(),
                impact: Impact::Minor,
                schedule: Schedule::Tentative { hint: None },
                component_ids: vec![],
                steps: (1..=3)
                    .map(|s| NewStep {
                        title: format!("Step {s}"),
                        description: None,
                    })
                    .collect(),
                automation: Default::default(),
            })
            .await
            .unwrap();
        service
            .window_action(w.id, WindowAction::Announce, None)
            .await
            .unwrap();
        service
            .window_action(w.id, WindowAction::Start, None)
            .await
            .unwrap();
        service
            .step_action(w.id, 1, StepAction::Start, None)
            .await
            .unwrap();
        service
            .step_action(w.id, 1, StepAction::Done, None)
            .await
            .unwrap();
        service
            .window_action(w.id, WindowAction::Complete, None)
            .await
            .unwrap();
    }
    (dir, service, settings)
}

/// Median time of a cold render: a fresh page cache for every sample.
async fn cold(service: &Service, settings: &Settings, path: &str) -> Duration {
    let mut times = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let app = router(AppState::new(service.clone(), settings.clone()));
        let request = Request::get(path).body(Body::empty()).unwrap();
        let started = Instant::now();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    times[SAMPLES / 2]
}

fn main() {
    let history: usize = std::env::var("HISTORY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let started = Instant::now();
        let (_small_dir, small, small_settings) = setup(0).await;
        let (_big_dir, big, big_settings) = setup(history).await;
        eprintln!(
            "seeded {history} finished windows in {:?}",
            started.elapsed()
        );
        let deep = (history as i64 / herald::web::public::HISTORY_PAGE_SIZE / 2).max(1);
        let pages = [
            ("/", "/".to_owned()),
            ("/history", "/history".to_owned()),
            ("/history (deep page)", format!("/history?page={deep}")),
            ("/maintenance/2", "/maintenance/2".to_owned()),
        ];
        println!(
            "cold render, median of {SAMPLES}: demo data only vs {history} more windows in history"
        );
        println!(
            "{:<24} {:>12} {:>12} {:>8}",
            "page", "baseline", "history", "ratio"
        );
        for (name, path) in &pages {
            let base_path = if path.starts_with("/history?") {
                "/history"
            } else {
                path
            };
            let base = cold(&small, &small_settings, base_path).await;
            let with_history = cold(&big, &big_settings, path).await;
            println!(
                "{name:<24} {:>10.2}ms {:>10.2}ms {:>8.2}",
                base.as_secs_f64() * 1e3,
                with_history.as_secs_f64() * 1e3,
                with_history.as_secs_f64() / base.as_secs_f64()
            );
        }
    });
}
