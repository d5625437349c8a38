//! `herald serve --demo`: seeds an empty database with the situations Herald exists for, going
//! through the same service calls a maintainer would, with a clock set in the recent past.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use jiff::{SignedDuration, Timestamp};
use tracing::info;

use crate::domain::{
    Impact, NewComponent, NewMaintenance, NewStep, Schedule, StepAction, WindowAction,
};
use crate::service::{Service, ServiceResult};

const DECAPI_DESCRIPTION: &str = "\
There will be some maintenance and infrastructure upgrades to DecAPI. Assuming everything is \
configured properly there should be **minimal downtime** (a few minutes), but anything can happen \
in these cases. Testing happens beforehand and does not affect the live version of DecAPI.

DecAPI runs on 4 servers: 3 for the application and a single server for the database and cache \
(Redis). That database server is a single point of failure, so it is being replaced by a \
**cluster of 3 database servers** with their own load balancer.

Only the database moves now; the cache follows once the cluster has been stable for a while.

Updates are also posted in the [Discord server](https://decapi.link/discord) (`#announcements`) \
and on [Bluesky](https://bsky.app/profile/decapi.me).";

const DECAPI_STEPS: [&str; 6] = [
    "Reduce the load balancer to 1 of the application servers (DecAPI might slow down a bit)",
    "Dump the current database and import it into the new database cluster",
    "Point the 2 other application servers to the new cluster and run test requests",
    "Put those 2 servers back behind the load balancer and remove the \"old\" one",
    "Update the configuration of the \"old\" application server to the new cluster",
    "Put the \"old\" server back behind the load balancer: 3 application servers as normal",
];

/// Seed the demo unless the database already holds windows. Returns whether it seeded.
pub async fn seed(real: &Service) -> ServiceResult<bool> {
    if real.store().count_maintenances().await? > 0 {
        info!("demo: the database already has maintenance windows; not seeding");
        return Ok(false);
    }
    let now = real.now();
    let clock = Arc::new(AtomicI64::new(now.as_second()));
    let at = {
        let clock = clock.clone();
        move |offset_minutes: i64| {
            clock.store(now.as_second() + offset_minutes * 60, Ordering::SeqCst);
        }
    };
    let service = Service::with_clock(real.store().clone(), {
        let clock = clock.clone();
        Arc::new(move || {
            Timestamp::from_second(clock.load(Ordering::SeqCst)).unwrap_or(Timestamp::UNIX_EPOCH)
        })
    });
    let minutes = |m: i64| now + SignedDuration::from_mins(m);

    let mut ids = Vec::new();
    for (slug, name, description, group) in [
        ("api", "API", "The DecAPI endpoints", "Services"),
        ("website", "Website and docs", "decapi.me", "Services"),
        (
            "database",
            "Database",
            "Primary data store",
            "Infrastructure",
        ),
        ("cache", "Cache (Redis)", "Response cache", "Infrastructure"),
    ] {
        at(-60 * 24 * 30);
        let c = service
            .ensure_component(NewComponent {
                slug: slug.into(),
                name: name.into(),
                description: Some(description.into()),
                group_name: Some(group.into()),
            })
            .await?;
        ids.push(c.id);
    }
    let (api, database) = (ids[0], ids[2]);

    // A finished window in history: rolling OS upgrades of the three application servers.
    at(-60 * 24 * 12);
    let past = service
        .create_maintenance(NewMaintenance {
            title: "Operating system upgrades on the application servers".into(),
            description: "Security updates and a kernel upgrade, one application server at a \
                          time. The other two keep serving, so no downtime is expected."
                .into(),
            impact: Impact::None,
            schedule: Schedule::Fixed {
                starts_at: minutes(-60 * 24 * 9),
                ends_at: Some(minutes(-60 * 24 * 9 + 60)),
            },
            component_ids: vec![api],
            steps: ["app-1", "app-2", "app-3"]
                .iter()
                .map(|s| NewStep {
                    title: format!(
                        "Take {s} out of the load balancer, upgrade, reboot, put it back"
                    ),
                    description: None,
                })
                .collect(),
        })
        .await?;
    service
        .window_action(past.id, WindowAction::Announce, None)
        .await?;
    at(-60 * 24 * 9 + 2);
    service
        .window_action(past.id, WindowAction::Start, None)
        .await?;
    for (i, (start, end)) in [(3, 14), (15, 24), (25, 36)].into_iter().enumerate() {
        let position = i as i64 + 1;
        at(-60 * 24 * 9 + start);
        service
            .step_action(past.id, position, StepAction::Start, None)
            .await?;
        at(-60 * 24 * 9 + end);
        service
            .step_action(past.id, position, StepAction::Done, None)
            .await?;
    }
    at(-60 * 24 * 9 + 37);
    service
        .window_action(
            past.id,
            WindowAction::Complete,
            Some("All three servers upgraded."),
        )
        .await?;

    // The DecAPI database-cluster migration: tentative first, then scheduled, now half done.
    at(-60 * 24 * 2);
    let m = service
        .create_maintenance(NewMaintenance {
            title: "Database cluster migration".into(),
            description: DECAPI_DESCRIPTION.into(),
            impact: Impact::Minor,
            schedule: Schedule::Tentative {
                hint: Some("this Sunday, or within a week or two".into()),
            },
            component_ids: vec![api, database],
            steps: DECAPI_STEPS
                .iter()
                .map(|s| NewStep {
                    title: (*s).into(),
                    description: None,
                })
                .collect(),
        })
        .await?;
    at(-60 * 24 * 2 + 5);
    service
        .window_action(m.id, WindowAction::Announce, None)
        .await?;
    at(-60 * 20);
    service
        .reschedule(
            m.id,
            Schedule::Fixed {
                starts_at: minutes(-50),
                ends_at: Some(minutes(70)),
            },
        )
        .await?;
    at(-48);
    service
        .window_action(m.id, WindowAction::Start, None)
        .await?;
    let steps: [(i64, i64, Option<&str>); 3] = [
        (
            -47,
            -44,
            Some("The load balancer now sends all traffic to app-1."),
        ),
        (
            -44,
            -21,
            Some("Dump imported into the new cluster without errors."),
        ),
        (-20, -9, None),
    ];
    for (i, (start, end, note)) in steps.into_iter().enumerate() {
        let position = i as i64 + 1;
        at(start);
        service
            .step_action(m.id, position, StepAction::Start, None)
            .await?;
        at(end);
        service
            .step_action(m.id, position, StepAction::Done, note)
            .await?;
    }
    at(-8);
    service
        .post_update(
            m.id,
            "Both updated application servers answer test requests from the new database \
             cluster. Response times look normal.",
        )
        .await?;
    at(-6);
    service
        .step_action(m.id, 4, StepAction::Start, None)
        .await?;
    info!(
        maintenance = m.id,
        "demo: seeded the DecAPI migration and one past window"
    );
    Ok(true)
}
