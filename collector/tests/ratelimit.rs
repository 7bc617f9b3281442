//! Rate limits over real HTTP, with the limiters' clock moved by hand: 429 with
//! Retry-After and a JSON error naming the limit, nothing of a refused request logged,
//! counted per source and limit, and per-IP budgets that believe X-Forwarded-For only
//! from a trusted proxy.

mod support;

use std::num::NonZeroU32;
use std::time::Duration;

use serde_json::Value;
use support::{TestCollector, batch, count_id};
use tollgate_collector::Overrides;
use tollgate_collector::config::RateLimitConfig;
use tollgate_collector::ratelimit::LimitClock;

fn nz(n: u32) -> Option<NonZeroU32> {
    NonZeroU32::new(n)
}

async fn post(c: &TestCollector, ids: &[&str], forwarded_for: Option<&str>) -> reqwest::Response {
    let mut request = c
        .client
        .post(c.url("/v1/events"))
        .basic_auth("dev", Some(""))
        .json(&batch(ids));
    if let Some(ip) = forwarded_for {
        request = request.header("x-forwarded-for", ip);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_source_over_its_request_and_event_rates_gets_429_and_loses_nothing() {
    let (clock, hand) = LimitClock::manual();
    let c = TestCollector::start_with(
        |config| {
            config.limits.max_events_per_batch = std::num::NonZeroUsize::new(10).unwrap();
            config.sources[0].rate_limit = RateLimitConfig {
                requests_per_second: nz(2),
                request_burst: nz(2),
                events_per_second: nz(10),
                event_burst: nz(12),
                ..RateLimitConfig::default()
            };
        },
        Overrides {
            limit_clock: Some(clock),
            ..Overrides::default()
        },
    )
    .await;

    assert_eq!(post(&c, &["rate-000001"], None).await.status(), 200);
    assert_eq!(post(&c, &["rate-000002"], None).await.status(), 200);
    let refused = post(&c, &["rate-000003"], None).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("requests rate limit of this source")
    );
    assert_eq!(
        count_id(&c.events(), "rate-000003"),
        0,
        "nothing of a refused request is logged"
    );

    // Half a second later one more request fits; its retry of the refused batch lands.
    hand.advance(Duration::from_millis(500));
    assert_eq!(post(&c, &["rate-000003"], None).await.status(), 200);
    assert_eq!(count_id(&c.events(), "rate-000003"), 1);

    // Events, with every budget full again: a 10-event batch fits the 12-event burst,
    // a second one at once does not, and says so.
    hand.advance(Duration::from_secs(10));
    let ids: Vec<String> = (0..20).map(|i| format!("rate-batch-{i:02}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(post(&c, &refs[..10], None).await.status(), 200);
    let refused = post(&c, &refs[10..], None).await;
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("events rate limit"),
        "{body}"
    );
    hand.advance(Duration::from_secs(1));
    assert_eq!(post(&c, &refs[10..], None).await.status(), 200);
    assert_eq!(c.events().len(), 23, "every event accepted exactly once");

    let metrics = c.metrics().await;
    for limit in ["source_requests", "source_events"] {
        assert!(
            metrics.contains(&format!(
                "tollgate_rate_limited_total{{limit=\"{limit}\",source=\"dev\"}} 1"
            )),
            "{limit}: {metrics}"
        );
    }
    assert!(
        metrics.contains("tollgate_request_errors_total{code=\"rate_limited\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn each_client_ip_has_its_own_budget_behind_a_trusted_proxy() {
    let (clock, hand) = LimitClock::manual();
    let c = TestCollector::start_with(
        |config| {
            // The test client connects from 127.0.0.1: it plays the load balancer.
            config.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
            config.sources[0].rate_limit = RateLimitConfig {
                ip_requests_per_second: nz(1),
                ..RateLimitConfig::default()
            };
        },
        Overrides {
            limit_clock: Some(clock),
            ..Overrides::default()
        },
    )
    .await;
    let alice = Some("203.0.113.1");
    let bob = Some("203.0.113.2");
    assert_eq!(post(&c, &["ip-alice-01"], alice).await.status(), 200);
    let refused = post(&c, &["ip-alice-02"], alice).await;
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("client IP"),
        "{body}"
    );
    assert_eq!(
        post(&c, &["ip-bob-0001"], bob).await.status(),
        200,
        "another client"
    );
    // A spoofed chain: the right-most untrusted hop is the client, whatever is left of it.
    assert_eq!(
        post(&c, &["ip-alice-03"], Some("198.51.100.9, 203.0.113.1"))
            .await
            .status(),
        429
    );
    hand.advance(Duration::from_secs(1));
    assert_eq!(post(&c, &["ip-alice-02"], alice).await.status(), 200);
    assert!(
        c.metrics()
            .await
            .contains("tollgate_rate_limited_total{limit=\"ip_requests\",source=\"dev\"} 2")
    );
}

#[test]
fn an_event_burst_below_the_batch_limit_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::test_config(dir.path());
    config.sources[0].rate_limit.events_per_second = nz(100);
    let Err(error) = tollgate_collector::Collector::build(config) else {
        panic!("a batch of max_events_per_batch could never pass");
    };
    assert!(
        error
            .to_string()
            .contains("sources[0].rate_limit.event_burst"),
        "{error}"
    );
}
