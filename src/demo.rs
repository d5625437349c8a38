//! `herald serve --demo`: seeds an empty database with the situations Herald exists for, going
//! through the same service calls a maintainer would, with a clock set in the recent past.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use jiff::{SignedDuration, Timestamp};
use tracing::info;

use crate::domain::{
    Impact, NewComponent, NewMaintenance, NewRollout, NewStep, Report, Schedule, StepAction,
    TargetState, WindowAction,
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

const FISHJAM_DESCRIPTION: &str = "\
Fishjam no longer restarts every instance at once. Each instance in turn receives SIGTERM, stops \
taking new rooms, and exits once its last room has closed and its recordings are finished; then \
the new version starts in its place. **No room is cut off and no recording is lost.**

While the rollout runs, two versions serve side by side. If an instance cannot drain in \
reasonable time the team may force it, which ends the rooms still on it.";

/// The Fishjam rolling update, midway: fishjam-1 healthy on v1.4.0, fishjam-2 draining (rooms
/// 3 of 12, recordings 1), fishjam-3 still on v1.3.2. Returns the rollout's id.
async fn seed_fishjam(service: &Service, at: &impl Fn(i64)) -> ServiceResult<i64> {
    at(-45);
    let r = service
        .create_rollout(NewRollout {
            description: FISHJAM_DESCRIPTION.into(),
            ..NewRollout::new(
                "Fishjam v1.4.0 rolling update",
                Some("v1.3.2"),
                "v1.4.0",
                &["fishjam-1", "fishjam-2", "fishjam-3"],
            )
        })
        .await?;
    let report = |state: TargetState, counts: &[(&str, i64)]| Report {
        remaining: (!counts.is_empty())
            .then(|| counts.iter().map(|(l, n)| ((*l).to_owned(), *n)).collect()),
        ..Report::state(state)
    };
    type Step<'a> = (i64, &'a str, TargetState, &'a [(&'a str, i64)]);
    let steps: [Step; 13] = [
        (
            -40,
            "fishjam-1",
            TargetState::Draining,
            &[("rooms", 4), ("recordings", 1)],
        ),
        (
            -36,
            "fishjam-1",
            TargetState::Draining,
            &[("rooms", 2), ("recordings", 1)],
        ),
        (
            -32,
            "fishjam-1",
            TargetState::Draining,
            &[("rooms", 0), ("recordings", 0)],
        ),
        (-31, "fishjam-1", TargetState::Drained, &[]),
        (-30, "fishjam-1", TargetState::Updating, &[]),
        (-28, "fishjam-1", TargetState::Healthy, &[]),
        (
            -24,
            "fishjam-2",
            TargetState::Draining,
            &[("rooms", 12), ("recordings", 2)],
        ),
        (
            -20,
            "fishjam-2",
            TargetState::Draining,
            &[("rooms", 10), ("recordings", 2)],
        ),
        (
            -16,
            "fishjam-2",
            TargetState::Draining,
            &[("rooms", 8), ("recordings", 2)],
        ),
        (
            -12,
            "fishjam-2",
            TargetState::Draining,
            &[("rooms", 6), ("recordings", 1)],
        ),
        (
            -8,
            "fishjam-2",
            TargetState::Draining,
            &[("rooms", 5), ("recordings", 1)],
        ),
        (
            -4,
            "fishjam-2",
            TargetState::Draining,
            &[("rooms", 4), ("recordings", 1)],
        ),
        (
            -1,
            "fishjam-2",
            TargetState::Draining,
            &[("rooms", 3), ("recordings", 1)],
        ),
    ];
    for (minute, target, state, counts) in steps {
        at(minute);
        service.report(r.id, target, &report(state, counts)).await?;
    }
    Ok(r.id)
}

/// Seed the demo unless the database already holds windows. Returns whether it seeded.
/// A resolved incident in history: the cluster's failover test that briefly broke writes,
/// told from investigating to its postmortem.
async fn seed_failover_incident(
    service: &Service,
    at: &impl Fn(i64),
    api: i64,
    database: i64,
) -> ServiceResult<i64> {
    use crate::domain::{ComponentStatus, IncidentStatus, NewIncident};
    let start = -60 * 24 * 5 - 60 * 7;
    at(start);
    let i = service
        .create_incident(NewIncident {
            title: "Writes failed during a database failover test".into(),
            impact: Impact::Major,
            status: IncidentStatus::Investigating,
            components: vec![
                (api, ComponentStatus::Degraded),
                (database, ComponentStatus::PartialOutage),
            ],
            body: "Some requests that change data fail with an error. Reading works. We are \
                   looking into it."
                .into(),
            publish: true,
            maintenance_id: None,
            rollout_id: None,
            source: "manual".into(),
        })
        .await?;
    at(start + 9);
    service
        .post_incident_update(
            i.id,
            Some(IncidentStatus::Identified),
            "A planned failover test promoted the replica, but the API servers kept their \
             connections to the old primary, which is now read-only.",
            None,
        )
        .await?;
    at(start + 17);
    service
        .post_incident_update(
            i.id,
            Some(IncidentStatus::Monitoring),
            "The API servers reconnected to the new primary and writes succeed again. We are \
             watching error rates.",
            Some(vec![
                (api, ComponentStatus::Degraded),
                (database, ComponentStatus::Degraded),
            ]),
        )
        .await?;
    at(start + 40);
    service
        .resolve_incident(
            i.id,
            "Error rates have been back to normal for 20 minutes. No data was lost: every \
             failed write was answered with an error, none was half-applied.",
        )
        .await?;
    at(start + 60 * 26);
    service
        .set_postmortem(
            i.id,
            "## What happened\n\nDuring a planned failover test the database replica was \
             promoted to primary. The API's connection pool kept its connections to the old \
             primary, which had become read-only, so for 17 minutes writes failed.\n\n\
             ## What we are changing\n\n- The pool now checks the server's role when it \
             hands out a connection.\n- Failover tests now include a write check before they \
             are declared done.",
        )
        .await?;
    Ok(i.id)
}

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
        at(-60 * 24 * 120);
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
            automation: Default::default(),
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
            automation: Default::default(),
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
    let incident = seed_failover_incident(&service, &at, api, database).await?;
    let rollout = seed_fishjam(&service, &at).await?;
    info!(
        maintenance = m.id,
        rollout,
        incident,
        "demo: seeded the DecAPI migration, one past window, a resolved incident and the \
         Fishjam rollout"
    );
    Ok(true)
}
