//! Time-driven changes: what happens because time passed, not because someone clicked. Today
//! that is a rollout's stall: in progress with no progress within its deadline. The scheduler
//! notices it by itself (not only when someone looks), and the service announces it once.
//! Runs on the same cancellation token as the server and the outbox.

use std::time::Duration;

use jiff::Timestamp;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info_span, warn};

use crate::service::Service;

/// Look at least this often: a new rollout or fresh progress moves the next due time, and
/// polling is cheaper than tracking every change.
const POLL: Duration = Duration::from_secs(5);

/// Spawn the scheduler on the current runtime; it stops when `cancel` fires.
pub fn spawn(service: Service, cancel: CancellationToken, tracker: &TaskTracker) {
    tracker.spawn(run(service, cancel).instrument(info_span!("scheduler")));
}

async fn run(service: Service, cancel: CancellationToken) {
    loop {
        let wait = match service.check_stalls().await {
            Ok(Some(due)) => until(due, service.now()).min(POLL),
            Ok(None) => POLL,
            Err(e) => {
                warn!(error = %e, "could not check rollouts for stalls");
                POLL
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

fn until(due: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(due.duration_since(now)).unwrap_or(Duration::ZERO)
}
