//! The sign-in throttle: the rule of [`crate::domain::SignInRule`] applied to counters kept in
//! the database, so every instance on it throttles as one, on the service's clock (which tests
//! move instead of sleeping). An attempt is counted *before* its password is checked (the
//! check and the count are one step), so a burst of concurrent attempts checks at most the
//! limit's worth of passwords, however the burst is spread over instances; a success takes its
//! attempt back.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use super::{Clock, ServiceResult};
use crate::domain::{Attempts, Scope, SignInRule};
use crate::store::Store;

/// How often old counters are dropped.
const SWEEP_MS: i64 = 60_000;

pub struct SignInThrottle {
    store: Arc<dyn Store>,
    clock: Clock,
    rule: SignInRule,
    /// When counters past the window were last dropped (unix ms).
    swept_ms: AtomicI64,
}

impl SignInThrottle {
    pub(super) fn new(store: Arc<dyn Store>, clock: Clock) -> Self {
        Self {
            store,
            clock,
            rule: SignInRule::default(),
            swept_ms: AtomicI64::new(0),
        }
    }

    fn now_ms(&self) -> i64 {
        (self.clock)().as_millisecond()
    }

    /// Count an attempt, or say how long to wait when it is over a limit (then nothing is
    /// counted and no password may be checked).
    /// `device` is the proven nonce of a device cookie this account issued (see
    /// [`SignInRule::keys`]); the same must be given to [`Self::cancel`] and
    /// [`Self::succeeded`].
    pub async fn begin(
        &self,
        scope: Scope,
        name: &str,
        ip: Option<IpAddr>,
        device: Option<&str>,
    ) -> ServiceResult<Result<(), Duration>> {
        let now = self.now_ms();
        self.sweep(now).await;
        let rule = |counts: &mut [Attempts]| self.rule.admit(counts, now, device.is_some());
        Ok(self
            .store
            .count_attempts(&SignInRule::keys(scope, name, ip, device), now, &rule)
            .await?)
    }

    /// The attempt begun for `name` from `ip` never had its password checked (no slot was
    /// free): it does not count.
    pub async fn cancel(&self, scope: Scope, name: &str, ip: Option<IpAddr>, device: Option<&str>) {
        self.take_back(scope, name, ip, device, false).await
    }

    /// The attempt begun for `name` from `ip` was right: it was no failure, and that account
    /// from that address (or device) starts afresh.
    pub async fn succeeded(
        &self,
        scope: Scope,
        name: &str,
        ip: Option<IpAddr>,
        device: Option<&str>,
    ) {
        self.take_back(scope, name, ip, device, true).await
    }

    async fn take_back(
        &self,
        scope: Scope,
        name: &str,
        ip: Option<IpAddr>,
        device: Option<&str>,
        clear_pair: bool,
    ) {
        let rule = |counts: &mut [Attempts]| {
            SignInRule::take_back(counts, clear_pair);
            Ok(())
        };
        // Taking back is a kindness, not a safeguard: a failure only leaves a count too high.
        if let Err(e) = self
            .store
            .count_attempts(
                &SignInRule::keys(scope, name, ip, device),
                self.now_ms(),
                &rule,
            )
            .await
        {
            tracing::warn!(error = %e, "could not take back a sign-in attempt");
        }
    }

    /// Drop counters past the window, at most once a minute per instance.
    async fn sweep(&self, now: i64) {
        let last = self.swept_ms.load(Ordering::Relaxed);
        if now - last < SWEEP_MS
            || self
                .swept_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        if let Err(e) = self
            .store
            .forget_attempts(now - self.rule.window_ms())
            .await
        {
            tracing::warn!(error = %e, "could not drop old sign-in counters");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicI64;

    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([192, 0, 2, last]))
    }

    /// A throttle on an in-memory database, with a clock the test moves (milliseconds).
    async fn throttle() -> (SignInThrottle, Arc<AtomicI64>) {
        let store = crate::store::SqlStore::connect("sqlite::memory:")
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let ms = Arc::new(AtomicI64::new(1_780_000_000_000));
        let clock: Clock = {
            let ms = ms.clone();
            Arc::new(move || jiff::Timestamp::from_millisecond(ms.load(Ordering::SeqCst)).unwrap())
        };
        (SignInThrottle::new(Arc::new(store), clock), ms)
    }

    async fn allowed(t: &SignInThrottle, scope: Scope, name: &str, ip: Option<IpAddr>) -> bool {
        t.begin(scope, name, ip, None).await.unwrap().is_ok()
    }

    #[tokio::test]
    async fn a_guesser_is_stopped_without_locking_the_owner_out() {
        let (t, clock) = throttle().await;
        for _ in 0..5 {
            assert!(allowed(&t, Scope::Login, "alice", ip(1)).await);
        }
        assert!(
            !allowed(&t, Scope::Login, "alice", ip(1)).await,
            "the pair is over its limit"
        );
        // The owner, elsewhere, is not locked out.
        assert!(allowed(&t, Scope::Login, "Alice ", ip(2)).await);
        t.succeeded(Scope::Login, "alice", ip(2), None).await;
        // The setup code's counters are its own.
        assert!(allowed(&t, Scope::Setup, "alice", ip(1)).await);
        // Fifteen minutes on, the guesser may try again.
        clock.fetch_add(15 * 60_000, Ordering::SeqCst);
        assert!(allowed(&t, Scope::Login, "alice", ip(1)).await);
    }

    #[tokio::test]
    async fn a_cancelled_attempt_does_not_count() {
        let (t, _) = throttle().await;
        for _ in 0..20 {
            assert!(allowed(&t, Scope::Login, "bob", ip(3)).await);
            t.cancel(Scope::Login, "bob", ip(3), None).await;
        }
        assert!(allowed(&t, Scope::Login, "bob", ip(3)).await);
    }

    #[tokio::test]
    async fn many_addresses_slow_an_account_down_instead_of_locking_it() {
        let (t, clock) = throttle().await;
        for i in 0..20 {
            assert!(allowed(&t, Scope::Login, "admin", ip(i)).await);
        }
        // Past the cap: the next attempt right away waits a second; it is not refused for
        // 15 min.
        let wait = t
            .begin(Scope::Login, "admin", ip(100), None)
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        clock.fetch_add(1000, Ordering::SeqCst);
        assert!(allowed(&t, Scope::Login, "admin", ip(101)).await);
        // The delay doubled after the attempt just counted.
        let wait = t
            .begin(Scope::Login, "admin", ip(102), None)
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(2));
    }

    #[tokio::test]
    async fn one_address_spraying_accounts_is_stopped() {
        let (t, _) = throttle().await;
        for i in 0..20 {
            assert!(allowed(&t, Scope::Login, &format!("user{i}"), ip(7)).await);
        }
        assert!(!allowed(&t, Scope::Login, "user99", ip(7)).await);
        assert!(allowed(&t, Scope::Login, "user99", ip(8)).await);
    }
}
