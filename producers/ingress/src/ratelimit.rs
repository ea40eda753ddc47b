//! Per-client rate limits: a token bucket per client (GCRA, the `governor` crate), with a
//! rate and a burst per client and a default for every other client.
//!
//! Over its limit a client gets 429 with `Retry-After` and the IETF RateLimit headers
//! (draft-ietf-httpapi-ratelimit-headers: `RateLimit-Policy` and `RateLimit`). Load shedding
//! (503) stays for broker trouble: a 429 is about the client, a 503 about us.
//!
//! Configuration (`--rate-limit`, `INGRESS_RATE_LIMITS`): comma-separated
//! `client=RATE/BURST` entries, where `client` is a token's name and `*` the default for every
//! client without an entry; `RATE` is requests per second. No entry for a client and no
//! default: no limit.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use anyhow::{Context, bail};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

type Limiter<C> = RateLimiter<NotKeyed, InMemoryState, C, StateInformationMiddleware>;

/// One client's limit as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Limit {
    fn quota(self) -> Quota {
        Quota::per_second(self.per_second).allow_burst(self.burst)
    }

    /// `RateLimit-Policy`: the burst (quota units) over the window it refills in, in seconds.
    fn policy(self) -> String {
        format!("\"per-client\";q={};w={}", self.burst, self.window_secs())
    }

    fn window_secs(self) -> u64 {
        u64::from(self.burst.get()).div_ceil(u64::from(self.per_second.get())).max(1)
    }
}

/// The configured limits (`client=RATE/BURST,...`; `*` is the default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    pub per_client: HashMap<String, Limit>,
    pub default: Option<Limit>,
}

impl Limits {
    pub fn parse(spec: &str) -> anyhow::Result<Limits> {
        let mut limits = Limits::default();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (client, limit) = entry.split_once('=').with_context(|| {
                format!("rate limit `{entry}`: expected client=RATE/BURST (e.g. checkout=500/1000)")
            })?;
            let (rate, burst) = limit
                .split_once('/')
                .with_context(|| format!("rate limit `{entry}`: expected RATE/BURST after the = (e.g. 500/1000)"))?;
            let number = |what: &str, value: &str| -> anyhow::Result<NonZeroU32> {
                value.trim().parse::<NonZeroU32>().with_context(|| {
                    format!("rate limit `{entry}`: {what} must be a whole number from 1 to {}", u32::MAX)
                })
            };
            let limit = Limit { per_second: number("the rate", rate)?, burst: number("the burst", burst)? };
            let client = client.trim();
            if client == "*" {
                if limits.default.replace(limit).is_some() {
                    bail!("rate limit: the default (*) appears twice");
                }
            } else if client.is_empty() {
                bail!("rate limit `{entry}`: the client name is empty (use * for the default)");
            } else if limits.per_client.insert(client.to_owned(), limit).is_some() {
                bail!("rate limit: client {client:?} appears twice");
            }
        }
        Ok(limits)
    }
}

/// A request over its client's limit: how long to wait, and the headers to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
    pub policy: String,
}

/// The limiters of every client, made on first use. On the real clock; the unit tests give it
/// a fake one.
pub struct RateLimits<C: Clock = DefaultClock> {
    limits: Limits,
    limiters: std::sync::Mutex<HashMap<String, std::sync::Arc<Limiter<C>>>>,
    clock: C,
}

impl RateLimits {
    pub fn new(limits: Limits) -> RateLimits {
        RateLimits::with_clock(limits, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimits<C> {
    fn with_clock(limits: Limits, clock: C) -> RateLimits<C> {
        RateLimits { limits, limiters: Default::default(), clock }
    }

    fn limit_of(&self, client: &str) -> Option<Limit> {
        self.limits.per_client.get(client).copied().or(self.limits.default)
    }

    /// Take one request of `client`'s budget: `Ok(headers)` to send with the answer (none when
    /// the client has no limit), or [`Limited`].
    pub fn check(&self, client: &str) -> Result<Vec<(&'static str, String)>, Limited> {
        let Some(limit) = self.limit_of(client) else { return Ok(Vec::new()) };
        let limiter = {
            let mut limiters = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
            limiters
                .entry(client.to_owned())
                .or_insert_with(|| {
                    std::sync::Arc::new(
                        RateLimiter::direct_with_clock(limit.quota(), self.clock.clone())
                            .with_middleware::<StateInformationMiddleware>(),
                    )
                })
                .clone()
        };
        match limiter.check() {
            Ok(state) => Ok(vec![
                ("ratelimit-policy", limit.policy()),
                (
                    "ratelimit",
                    format!("\"per-client\";r={};t={}", state.remaining_burst_capacity(), limit.window_secs()),
                ),
            ]),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Err(Limited { retry_after: wait, policy: limit.policy() })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_per_client_and_a_default() {
        let limits = Limits::parse("checkout=500/1000, *=50/100").unwrap();
        assert_eq!(limits.per_client["checkout"].per_second.get(), 500);
        assert_eq!(limits.default.unwrap().burst.get(), 100);
        assert_eq!(Limits::parse("").unwrap(), Limits::default());
    }

    #[test]
    fn bad_limits_say_what_is_wrong() {
        for (bad, says) in [
            ("checkout", "expected client=RATE/BURST"),
            ("checkout=5", "expected RATE/BURST"),
            ("checkout=0/5", "the rate must be a whole number"),
            ("checkout=5/x", "the burst must be a whole number"),
            ("a=1/1,a=2/2", "appears twice"),
            ("=1/1", "client name is empty"),
        ] {
            let error = format!("{:#}", Limits::parse(bad).unwrap_err());
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn a_client_over_its_burst_is_limited_and_another_is_not() {
        // A clock that stands still: no refill between the calls, however slow they are.
        let clock = governor::clock::FakeRelativeClock::default();
        let limits = RateLimits::with_clock(Limits::parse("slow=1/2").unwrap(), clock.clone());
        assert!(limits.check("slow").is_ok());
        let second = limits.check("slow").unwrap();
        assert!(second.contains(&("ratelimit", "\"per-client\";r=0;t=2".to_owned())), "{second:?}");
        let limited = limits.check("slow").unwrap_err();
        assert!(limited.retry_after > Duration::ZERO && limited.retry_after <= Duration::from_secs(1), "{limited:?}");
        assert_eq!(limited.policy, "\"per-client\";q=2;w=2");
        // Once the wait it named has passed, one more goes through, and only one.
        clock.advance(limited.retry_after);
        assert!(limits.check("slow").is_ok());
        assert!(limits.check("slow").is_err());
        for _ in 0..10 {
            assert_eq!(limits.check("unlimited"), Ok(Vec::new()));
        }
    }
}
