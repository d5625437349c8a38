//! Time-driven changes: what happens because time passed, not because someone clicked.
//! Windows start and complete by themselves when set to, remind followers before the start and
//! are marked overrunning past their end (rules in `crate::domain::timed`); a rollout's stall
//! (in progress with no progress within its deadline) is noticed without anyone looking. Every
//! change goes through the service's load–apply–commit loop, so each event fires once even
//! with several Herald processes on one database. Runs on the same cancellation token as the
//! server and the outbox.

use std::time::Duration;

use jiff::Timestamp;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info_span, warn};

use crate::service::{Service, ServiceResult};

/// Look at least this often: a new window, a reschedule or fresh progress moves the next due
/// time, and polling is cheaper than tracking every change.
const POLL: Duration = Duration::from_secs(5);
/// Never look again sooner than this: a rule that reports something due without doing it
/// must not spin a core.
const MIN_WAIT: Duration = Duration::from_millis(200);

/// Spawn the scheduler on the current runtime; it stops when `cancel` fires.
pub fn spawn(service: Service, cancel: CancellationToken, tracker: &TaskTracker) {
    tracker.spawn(run(service, cancel).instrument(info_span!("scheduler")));
}

async fn run(service: Service, cancel: CancellationToken) {
    // When the last look said something was due: how late this look comes after it.
    let mut planned: Option<Timestamp> = None;
    loop {
        let now = service.now();
        let lag = planned
            .filter(|due| *due <= now)
            .map_or(0.0, |due| until(now, due).as_secs_f64());
        metrics::gauge!("herald_scheduler_lag_seconds").set(lag);
        let next = [
            checked("rollouts for stalls", service.check_stalls().await),
            checked("windows for timed changes", service.check_windows().await),
        ]
        .into_iter()
        .flatten()
        .min();
        planned = next;
        let wait = next.map_or(POLL, |due| until(due, service.now()).clamp(MIN_WAIT, POLL));
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

fn checked(what: &str, result: ServiceResult<Option<Timestamp>>) -> Option<Timestamp> {
    result.unwrap_or_else(|e| {
        warn!(error = %e, "could not check {what}");
        None
    })
}

fn until(due: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(due.duration_since(now)).unwrap_or(Duration::ZERO)
}
