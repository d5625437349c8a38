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
    /// password typed into the wrong field, and it has no length limit. An IPv6 client counts
    /// by its /64 (one subscriber's network: a host picks any address in it). From a browser
    /// that signed in to this account before (`device`, its device cookie's proven nonce), the
    /// pair is that device and this account, wherever it connects from.
    pub fn keys(scope: Scope, name: &str, ip: Option<IpAddr>, device: Option<&str>) -> Vec<String> {
        let scope = match scope {
            Scope::Login => "login",
            Scope::Setup => "setup",
        };
        let account: String = Sha256::digest(name.trim().to_lowercase().as_bytes())
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect();
        let ip = ip.map_or_else(|| "-".to_owned(), client_key);
        let pair = match device {
            Some(nonce) => format!("{scope} device {nonce} {account}"),
            None => format!("{scope} pair {ip} {account}"),
        };
        vec![
            pair,
            format!("{scope} address {ip}"),
            format!("{scope} account {account}"),
        ]
    }

    pub fn window_ms(&self) -> i64 {
        self.window.as_millis() as i64
    }

    /// Count an attempt at `now_ms` in `counts` (pair, address, account), or say how long to
    /// wait when it is over a limit (then `counts` are not to be written). A `trusted_device`
    /// (one that signed in to the account before) is not slowed down by the failures of
    /// others on the account (OWASP's device cookies): guessing from elsewhere cannot keep the
    /// owner out. It still has its own limit, the pair's.
    pub fn admit(
        &self,
        counts: &mut [Attempts],
        now_ms: i64,
        trusted_device: bool,
    ) -> Result<(), Duration> {
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
        if account.n >= self.account_slowdown && !trusted_device {
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

/// The part of a client's address the limits count by: an IPv4 address, or an IPv6 /64
/// (an IPv4 address mapped into IPv6 is that IPv4 address).
pub fn client_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                format!("{net}/64")
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl SignInRule {
        fn admit_at(&self, counts: &mut [Attempts], now_ms: i64) -> Result<(), Duration> {
            self.admit(counts, now_ms, false)
        }
    }

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
            assert!(rule.admit_at(&mut c, t * 1000).is_ok());
        }
        let before = c.clone();
        assert_eq!(
            rule.admit_at(&mut c, 5_000),
            Err(Duration::from_millis(15 * 60_000 - 5_000))
        );
        assert_eq!(c[0].n, before[0].n, "a refused attempt counts nothing");
        // Fifteen minutes after the first, the count starts afresh.
        assert!(rule.admit_at(&mut c, 15 * 60_000).is_ok());
        assert_eq!(c[0].n, 1);
    }

    #[test]
    fn an_account_past_its_cap_is_slowed_down_by_doubling_delays() {
        let rule = SignInRule::default();
        let mut c = fresh(0);
        c[2].n = 20;
        c[2].last_ms = 10_000;
        assert_eq!(
            rule.admit_at(&mut c, 10_400),
            Err(Duration::from_millis(600))
        );
        assert!(rule.admit_at(&mut c, 11_000).is_ok());
        // One more over the cap: two seconds after that one.
        assert_eq!(
            rule.admit_at(&mut c, 11_500),
            Err(Duration::from_millis(1500))
        );
        assert!(rule.admit_at(&mut c, 13_000).is_ok());
        // Capped at a minute.
        c[2].n = 40;
        assert_eq!(rule.admit_at(&mut c, 13_000), Err(Duration::from_secs(60)));
        // A browser that signed in before is not slowed down by the others' failures.
        assert!(rule.admit(&mut c, 13_000, true).is_ok());
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), "2001:db8:1:2::/64");
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7");
        let keys = |ip: &str| SignInRule::keys(Scope::Login, "alice", ip.parse().ok(), None);
        assert_eq!(keys("2001:db8:1:2::5"), keys("2001:db8:1:2::6"));
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
        let login = SignInRule::keys(Scope::Login, " Alice", ip, None);
        assert_eq!(login, SignInRule::keys(Scope::Login, "alice ", ip, None));
        assert!(!login.iter().any(|k| k.contains("alice")));
        assert_ne!(login, SignInRule::keys(Scope::Setup, "alice", ip, None));
        // A device's pair is the device, wherever it connects from.
        let device = SignInRule::keys(Scope::Login, "alice", ip, Some("n0nce"));
        assert_eq!(
            device[0],
            SignInRule::keys(Scope::Login, "alice", None, Some("n0nce"))[0]
        );
        assert_eq!(device[1..], login[1..]);
    }
}
