//! Rate limits per source (write key) and per client IP, in requests and events per
//! second with bursts (GCRA, from `governor`).
//!
//! A request is checked twice: before its body is read (requests/s of the source and of
//! the client IP), and once decoded (events/s of the source, by the batch's size). Over a
//! limit the client gets 429 with `Retry-After` and nothing of the request is processed,
//! so a retry later loses nothing.
//!
//! The client IP is the TCP peer, or — only when the peer is a configured trusted proxy —
//! the right-most address of `X-Forwarded-For` that is not itself a trusted proxy. An
//! IPv6 client is limited by its /64. The per-IP table is bounded: entries back to a full
//! budget are pruned, and while it holds `max_tracked_ips` entries clients share one of
//! 1024 overflow buckets (by hash) until pruning frees room, so limiting never stops.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::Clock as _;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, Quota, RateLimiter};
use http::HeaderMap;
use ipnet::IpNet;

use crate::config::RateLimitConfig;
use crate::error::ApiError;

/// The time rate limiters read: monotonic, or set by a test.
#[derive(Debug, Clone)]
pub enum LimitClock {
    Monotonic(std::time::Instant),
    Manual(Arc<AtomicU64>),
}

impl LimitClock {
    pub fn monotonic() -> LimitClock {
        LimitClock::Monotonic(std::time::Instant::now())
    }

    /// A clock standing still until the handle advances it.
    pub fn manual() -> (LimitClock, ManualLimitClock) {
        let nanos = Arc::new(AtomicU64::new(0));
        (LimitClock::Manual(nanos.clone()), ManualLimitClock(nanos))
    }
}

impl governor::clock::Clock for LimitClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        match self {
            LimitClock::Monotonic(start) => Nanos::from(start.elapsed()),
            LimitClock::Manual(nanos) => Nanos::from(nanos.load(Ordering::SeqCst)),
        }
    }
}

/// Moves a [`LimitClock::manual`] forward.
#[derive(Debug, Clone)]
pub struct ManualLimitClock(Arc<AtomicU64>);

impl ManualLimitClock {
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }
}

type Direct = RateLimiter<NotKeyed, InMemoryState, LimitClock, NoOpMiddleware<Nanos>>;
type Keyed = RateLimiter<IpAddr, DashMapStateStore<IpAddr>, LimitClock, NoOpMiddleware<Nanos>>;

/// One source's limiters; `None` where the source has no such limit.
struct SourceLimits {
    /// What they were built from: a reload keeps the limiters of an unchanged source.
    config: RateLimitConfig,
    requests: Option<Direct>,
    events: Option<Direct>,
    per_ip: Option<Keyed>,
}

/// Every source's limits and how to find the client's IP.
pub struct RateLimits {
    sources: HashMap<String, Arc<SourceLimits>>,
    trusted: Vec<IpNet>,
    max_tracked_ips: usize,
    clock: LimitClock,
    /// When the per-IP tables were last pruned (clock nanos).
    last_prune: AtomicU64,
}

/// The key a client is limited under: its IPv4 address, or its IPv6 /64 (one
/// subscriber usually holds a whole /64, so keying by full address would let one client
/// take 2^64 keys and fill the table).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
            }
        },
    }
}

/// Buckets new clients share once the table is full.
const OVERFLOW_BUCKETS: u16 = 1024;

/// The shared bucket of a client while the per-IP table is full: limiting never stops,
/// it becomes coarser until pruning frees room. The buckets are addresses of the IPv6 discard prefix 100::/64
/// (RFC 6666), which no real client has.
fn overflow_key(key: IpAddr) -> IpAddr {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(key);
    IpAddr::from([
        0x100,
        0,
        0,
        0,
        0,
        0,
        0,
        (hash % u64::from(OVERFLOW_BUCKETS)) as u16,
    ])
}

/// Which limit refused a request, for the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    SourceRequests,
    SourceEvents,
    IpRequests,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::SourceRequests => "source_requests",
            Refusal::SourceEvents => "source_events",
            Refusal::IpRequests => "ip_requests",
        }
    }
}

const PRUNE_EVERY: Duration = Duration::from_secs(1);

fn quota(per_second: Option<NonZeroU32>, burst: Option<NonZeroU32>) -> Option<Quota> {
    let rate = per_second?;
    Some(Quota::per_second(rate).allow_burst(burst.unwrap_or(rate)))
}

impl RateLimits {
    /// Builds the limiters of every source that has any.
    pub fn new<'a>(
        sources: impl IntoIterator<Item = (&'a str, &'a RateLimitConfig)>,
        trusted: Vec<IpNet>,
        max_tracked_ips: usize,
        clock: LimitClock,
    ) -> RateLimits {
        let sources = sources
            .into_iter()
            .map(|(id, c)| {
                let direct =
                    |q: Option<Quota>| q.map(|q| RateLimiter::direct_with_clock(q, clock.clone()));
                let limits = SourceLimits {
                    config: c.clone(),
                    requests: direct(quota(c.requests_per_second, c.request_burst)),
                    events: direct(quota(c.events_per_second, c.event_burst)),
                    per_ip: quota(c.ip_requests_per_second, c.ip_request_burst)
                        .map(|q| RateLimiter::dashmap_with_clock(q, clock.clone())),
                };
                (id.to_owned(), Arc::new(limits))
            })
            .collect();
        RateLimits {
            sources,
            trusted,
            max_tracked_ips,
            clock,
            last_prune: AtomicU64::new(0),
        }
    }

    /// Takes over `previous`'s limiters of every source whose limits are unchanged, so
    /// that a reload neither refills their budgets nor forgets the clients they track.
    /// A source whose limits changed starts from a full budget.
    #[must_use]
    pub fn keeping_state_of(mut self, previous: &RateLimits) -> RateLimits {
        for (id, limits) in &mut self.sources {
            if let Some(old) = previous.sources.get(id)
                && old.config == limits.config
            {
                *limits = old.clone();
            }
        }
        self
    }

    /// Whether any source has a limit (else the checks are skipped entirely).
    pub fn any(&self) -> bool {
        self.sources
            .values()
            .any(|s| s.requests.is_some() || s.events.is_some() || s.per_ip.is_some())
    }

    /// The client's address: the peer, or what a trusted proxy says it forwarded for.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|part| part.trim().parse::<IpAddr>().ok())
            .collect::<Vec<_>>();
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !self.is_trusted(*ip))
            .unwrap_or(peer)
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// Counts one request of `source` from `ip`.
    ///
    /// # Errors
    /// 429 `rate_limited` with the wait, and which limit refused.
    pub fn check_request(&self, source: &str, ip: IpAddr) -> Result<(), (ApiError, Refusal)> {
        let Some(limits) = self.sources.get(source) else {
            return Ok(());
        };
        if let Some(per_ip) = &limits.per_ip {
            self.prune_if_due(per_ip);
            let mut key = client_key(ip);
            if per_ip.len() >= self.max_tracked_ips {
                key = overflow_key(key);
            }
            per_ip
                .check_key(&key)
                .map_err(|w| self.refuse(w, "requests", "client IP", Refusal::IpRequests))?;
        }
        if let Some(requests) = &limits.requests {
            requests
                .check()
                .map_err(|w| self.refuse(w, "requests", "source", Refusal::SourceRequests))?;
        }
        Ok(())
    }

    /// Counts `events` events of `source`.
    ///
    /// # Errors
    /// 429 `rate_limited` when the source is over its events/s limit.
    pub fn check_events(&self, source: &str, events: usize) -> Result<(), (ApiError, Refusal)> {
        let Some(limiter) = self.sources.get(source).and_then(|l| l.events.as_ref()) else {
            return Ok(());
        };
        let Some(n) = NonZeroU32::new(events.min(u32::MAX as usize) as u32) else {
            return Ok(());
        };
        match limiter.check_n(n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(wait)) => Err(self.refuse(wait, "events", "source", Refusal::SourceEvents)),
            // Larger than the whole burst: configuration validation prevents it (the
            // burst is at least limits.max_events_per_batch); refuse for a second.
            Err(_) => Err((
                ApiError::RateLimited {
                    limit: "events",
                    scope: "source",
                    retry_after_secs: 1,
                },
                Refusal::SourceEvents,
            )),
        }
    }

    fn refuse(
        &self,
        wait: NotUntil<Nanos>,
        limit: &'static str,
        scope: &'static str,
        refusal: Refusal,
    ) -> (ApiError, Refusal) {
        let wait = wait.wait_time_from(self.clock.now());
        (
            ApiError::RateLimited {
                limit,
                scope,
                retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
            },
            refusal,
        )
    }

    /// Drops per-IP entries whose limit state is back to full, at most once a second.
    fn prune_if_due(&self, per_ip: &Keyed) {
        let now = self.clock.now().as_u64();
        let last = self.last_prune.load(Ordering::Relaxed);
        if now.saturating_sub(last) < PRUNE_EVERY.as_nanos() as u64
            && per_ip.len() < self.max_tracked_ips
        {
            return;
        }
        if self
            .last_prune
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            per_ip.retain_recent();
            per_ip.shrink_to_fit();
        }
    }

    /// Per-IP entries currently tracked, over all sources (for tests and metrics).
    pub fn tracked_ips(&self) -> usize {
        self.sources
            .values()
            .filter_map(|s| s.per_ip.as_ref())
            .map(|p| p.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(config: RateLimitConfig) -> (RateLimits, ManualLimitClock) {
        let (clock, hand) = LimitClock::manual();
        let limits = RateLimits::new(
            [("app", &config)],
            vec!["10.0.0.0/8".parse().unwrap()],
            3,
            clock,
        );
        (limits, hand)
    }

    fn nz(n: u32) -> Option<NonZeroU32> {
        NonZeroU32::new(n)
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    #[test]
    fn requests_beyond_the_burst_wait_for_the_rate() {
        let (limits, clock) = limits(RateLimitConfig {
            requests_per_second: nz(2),
            request_burst: nz(3),
            ..RateLimitConfig::default()
        });
        for _ in 0..3 {
            limits.check_request("app", IP).unwrap();
        }
        let (error, refusal) = limits.check_request("app", IP).unwrap_err();
        assert_eq!(refusal, Refusal::SourceRequests);
        assert_eq!(error.status(), http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(error.retry_after(), Some(Duration::from_secs(1)));
        clock.advance(Duration::from_millis(500)); // one token at 2/s
        limits.check_request("app", IP).unwrap();
        assert!(limits.check_request("app", IP).is_err());
        assert!(
            limits.check_request("other_source", IP).is_ok(),
            "no limits there"
        );
    }

    #[test]
    fn events_are_counted_by_batch_size() {
        let (limits, clock) = limits(RateLimitConfig {
            events_per_second: nz(100),
            event_burst: nz(100),
            ..RateLimitConfig::default()
        });
        limits.check_events("app", 60).unwrap();
        let (error, refusal) = limits.check_events("app", 60).unwrap_err();
        assert_eq!(refusal, Refusal::SourceEvents);
        assert!(error.to_string().contains("events rate limit"), "{error}");
        clock.advance(Duration::from_millis(200)); // 20 more events of room
        limits.check_events("app", 60).unwrap();
    }

    #[test]
    fn each_client_ip_has_its_own_budget_and_the_table_is_bounded() {
        let (limits, clock) = limits(RateLimitConfig {
            ip_requests_per_second: nz(1),
            ip_request_burst: nz(1),
            ..RateLimitConfig::default()
        });
        let ip = |n: u8| IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, n));
        limits.check_request("app", ip(1)).unwrap();
        let (_, refusal) = limits.check_request("app", ip(1)).unwrap_err();
        assert_eq!(refusal, Refusal::IpRequests);
        limits.check_request("app", ip(2)).unwrap();
        limits.check_request("app", ip(3)).unwrap();
        assert_eq!(limits.tracked_ips(), 3);
        // Full: a fourth address is limited in a shared overflow bucket, not waved
        // through, until pruning frees room.
        limits.check_request("app", ip(4)).unwrap();
        assert!(limits.check_request("app", ip(4)).is_err());
        assert_eq!(
            limits.tracked_ips(),
            4,
            "three clients and one overflow bucket"
        );
        // A second later every entry is back to full and is pruned.
        clock.advance(Duration::from_secs(2));
        limits.check_request("app", ip(5)).unwrap();
        assert_eq!(limits.tracked_ips(), 1, "stale entries pruned");
    }

    #[test]
    fn an_ipv6_client_is_limited_by_its_64() {
        let (limits, _) = limits(RateLimitConfig {
            ip_requests_per_second: nz(1),
            ip_request_burst: nz(1),
            ..RateLimitConfig::default()
        });
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        // An IPv4-mapped address is its IPv4 address.
        limits.check_request("app", ip("192.0.2.7")).unwrap();
        assert!(limits.check_request("app", ip("::ffff:192.0.2.7")).is_err());
        limits.check_request("app", ip("2001:db8:1:2::1")).unwrap();
        // Another address of the same /64 is the same client.
        assert!(
            limits
                .check_request("app", ip("2001:db8:1:2:ffff::9"))
                .is_err()
        );
        // Another /64 is another client.
        limits.check_request("app", ip("2001:db8:1:3::1")).unwrap();
        assert_eq!(limits.tracked_ips(), 3);
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let (limits, _) = limits(RateLimitConfig::default());
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "198.51.100.7, 10.1.1.1".parse().unwrap());
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        assert_eq!(
            limits.client_ip(proxy, &headers),
            "198.51.100.7".parse::<IpAddr>().unwrap(),
            "right-most untrusted hop"
        );
        assert_eq!(
            limits.client_ip(IP, &headers),
            IP,
            "an untrusted peer is the client"
        );
        assert_eq!(limits.client_ip(proxy, &HeaderMap::new()), proxy);
    }
}
