//! The sign-in throttle's rule: which counters an attempt counts against, when an attempt is
//! refused and for how long, and how a success or a cancelled attempt is taken back. Pure
//! functions of the counters and the time; the service counts them in the database, so every
//! instance throttles as one.

use std::net::IpAddr;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// One counter, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempts {
    pub key: String,
    /// Attempts counted since `since_ms`.
    pub n: i64,
    pub since_ms: i64,
    /// When the latest was counted.
    pub last_ms: i64,
}

/// What a throttled attempt is for: sign-in names and the setup code never share counters
/// (an account called `setup` is just an account).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Login,
    Setup,
}

/// The limits: per account from one address (what a guesser hits), per address (a spray from
/// one place), and per account from anywhere, which slows down past its cap and never locks,
/// so nobody can keep the admin out by guessing from elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignInRule {
    pub window: Duration,
    pub per_pair: i64,
    pub per_address: i64,
    /// Past this many failures on one account from anywhere, each further attempt waits a
    /// growing delay (1 s, 2 s, 4 s … up to a minute) after the one before.
    pub account_slowdown: i64,
}

impl Default for SignInRule {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(15 * 60),
            per_pair: 5,
            per_address: 20,
            account_slowdown: 20,
        }
    }
}

impl SignInRule {
    /// The three counters an attempt counts against, in the order [`SignInRule::admit`]
    /// reads them: the pair, the address, the account. The typed name is hashed: it may be a
    /// password typed into the wrong field, and it has no length limit.
    pub fn keys(scope: Scope, name: &str, ip: Option<IpAddr>) -> Vec<String> {
        let scope = match scope {
            Scope::Login => "login",
            Scope::Setup => "setup",
        };
        let account: String = Sha256::digest(name.trim().to_lowercase().as_bytes())
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect();
        let ip = ip.map_or_else(|| "-".to_owned(), |ip| ip.to_string());
        vec![
            format!("{scope} pair {ip} {account}"),
            format!("{scope} address {ip}"),
            format!("{scope} account {account}"),
        ]
    }

    pub fn window_ms(&self) -> i64 {
        self.window.as_millis() as i64
    }

    /// Count an attempt at `now_ms` in `counts` (pair, address, account), or say how long to
    /// wait when it is over a limit (then `counts` are not to be written).
    pub fn admit(&self, counts: &mut [Attempts], now_ms: i64) -> Result<(), Duration> {
        let window = self.window_ms();
        for c in counts.iter_mut() {
            if c.since_ms <= now_ms - window || c.n == 0 {
                // Past the window (or taken back to nothing): a fresh count.
                c.n = 0;
                c.since_ms = now_ms;
            }
        }
        let wait_out = |c: &Attempts, limit: i64| {
            (c.n >= limit)
                .then(|| Duration::from_millis((c.since_ms + window - now_ms).max(0) as u64))
        };
        let [pair, address, account] = counts else {
            // Not the three counters asked for: refuse rather than guess.
            return Err(self.window);
        };
        if let Some(wait) = wait_out(pair, self.per_pair)
            .into_iter()
            .chain(wait_out(address, self.per_address))
            .max()
        {
            return Err(wait);
        }
        if account.n >= self.account_slowdown {
            let over = (account.n - self.account_slowdown).min(6);
            let delay = (1000i64 << over).min(60_000);
            let since_last = now_ms - account.last_ms;
            if since_last < delay {
                return Err(Duration::from_millis((delay - since_last) as u64));
            }
        }
        for c in counts.iter_mut() {
            c.n += 1;
            c.last_ms = now_ms;
        }
        Ok(())
    }

    /// Take an attempt back: every counter one less, and after a success (`clear_pair`) that
    /// account from that address starts afresh.
    pub fn take_back(counts: &mut [Attempts], clear_pair: bool) {
        for (i, c) in counts.iter_mut().enumerate() {
            c.n = if clear_pair && i == 0 {
                0
            } else {
                (c.n - 1).max(0)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(now: i64) -> Vec<Attempts> {
        (0..3)
            .map(|i| Attempts {
                key: format!("k{i}"),
                n: 0,
                since_ms: now,
                last_ms: now,
            })
            .collect()
    }

    #[test]
    fn a_pair_is_stopped_at_its_limit_until_the_window_ends() {
        let rule = SignInRule::default();
        let mut c = fresh(0);
        for t in 0..5 {
            assert!(rule.admit(&mut c, t * 1000).is_ok());
        }
        let before = c.clone();
        assert_eq!(
            rule.admit(&mut c, 5_000),
            Err(Duration::from_millis(15 * 60_000 - 5_000))
        );
        assert_eq!(c[0].n, before[0].n, "a refused attempt counts nothing");
        // Fifteen minutes after the first, the count starts afresh.
        assert!(rule.admit(&mut c, 15 * 60_000).is_ok());
        assert_eq!(c[0].n, 1);
    }

    #[test]
    fn an_account_past_its_cap_is_slowed_down_by_doubling_delays() {
        let rule = SignInRule::default();
        let mut c = fresh(0);
        c[2].n = 20;
        c[2].last_ms = 10_000;
        assert_eq!(rule.admit(&mut c, 10_400), Err(Duration::from_millis(600)));
        assert!(rule.admit(&mut c, 11_000).is_ok());
        // One more over the cap: two seconds after that one.
        assert_eq!(rule.admit(&mut c, 11_500), Err(Duration::from_millis(1500)));
        assert!(rule.admit(&mut c, 13_000).is_ok());
        // Capped at a minute.
        c[2].n = 40;
        assert_eq!(rule.admit(&mut c, 13_000), Err(Duration::from_secs(60)));
    }

    #[test]
    fn taking_back_a_success_clears_the_pair_only() {
        let mut c = fresh(0);
        for x in c.iter_mut() {
            x.n = 3;
        }
        SignInRule::take_back(&mut c, true);
        assert_eq!([c[0].n, c[1].n, c[2].n], [0, 2, 2]);
        SignInRule::take_back(&mut c, false);
        assert_eq!([c[0].n, c[1].n, c[2].n], [0, 1, 1]);
    }

    #[test]
    fn keys_hash_the_name_and_keep_scopes_apart() {
        let ip = Some(IpAddr::from([192, 0, 2, 1]));
        let login = SignInRule::keys(Scope::Login, " Alice", ip);
        assert_eq!(login, SignInRule::keys(Scope::Login, "alice ", ip));
        assert!(!login.iter().any(|k| k.contains("alice")));
        assert_ne!(login, SignInRule::keys(Scope::Setup, "alice", ip));
    }
}
