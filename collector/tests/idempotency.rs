//! Idempotency against real stores: one contract suite over the memory store and a real
//! `redis-server`, then collectors sharing one Redis over real HTTP, with Redis killed
//! and restarted under them.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;
use tollgate_collector::Overrides;
use tollgate_collector::config::{Config, FailurePolicy, IdempotencyBackend};
use tollgate_collector::dedupe::{
    ClaimOutcome, IdempotencyStore, MemoryStore, RedisOptions, RedisStore, RedisTarget,
};
use tollgate_collector::telemetry::Metrics;

use support::redis_server::{RedisCluster, RedisServer};
use support::*;

/// Options for a store under test: prefix `test`, a one-hour window.
fn options(target: RedisTarget, claim_ttl: Duration) -> RedisOptions {
    RedisOptions {
        target,
        key_prefix: "test".into(),
        claim_ttl,
        dedupe_window: Duration::from_secs(3600),
        connect_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_secs(3),
        tls_root_ca: None,
    }
}

fn redis_store(server: &RedisServer, claim_ttl: Duration) -> RedisStore {
    RedisStore::new(options(RedisTarget::Single(server.url()), claim_ttl)).unwrap()
}

fn memory_store(claim_ttl: Duration) -> MemoryStore {
    MemoryStore::new(
        100_000,
        claim_ttl,
        Duration::from_secs(3600),
        Arc::new(Metrics::new()),
    )
}

fn keys(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| format!("src:{n}")).collect()
}

/// The claim / commit / release contract every store must keep.
async fn contract(store: &dyn IdempotencyStore) {
    let k = keys(&["a", "b"]);
    assert_eq!(
        store.claim(&k, "r1").await.unwrap(),
        [ClaimOutcome::Claimed; 2]
    );
    // While r1 writes, another request finds the keys in flight.
    assert_eq!(
        store.claim(&k, "r2").await.unwrap(),
        [ClaimOutcome::InFlight; 2]
    );
    // A late release by someone else never frees r1's claim.
    store.release(&k, "r2").await.unwrap();
    assert_eq!(
        store.claim(&k[..1], "r3").await.unwrap(),
        [ClaimOutcome::InFlight]
    );
    // r1's write failed: it releases, and the retry can claim again.
    store.release(&k, "r1").await.unwrap();
    assert_eq!(
        store.claim(&k, "r4").await.unwrap(),
        [ClaimOutcome::Claimed; 2]
    );
    store.commit(&k, "r4").await.unwrap();
    assert_eq!(
        store.claim(&k, "r5").await.unwrap(),
        [ClaimOutcome::Duplicate; 2]
    );
    // Releasing a committed key does nothing.
    store.release(&k, "r4").await.unwrap();
    let mixed = keys(&["a", "fresh"]);
    assert_eq!(
        store.claim(&mixed, "r6").await.unwrap(),
        [ClaimOutcome::Duplicate, ClaimOutcome::Claimed]
    );
    // Nothing to do is no error (a replay settling an interrupted run may have no
    // claim to commit or none to release).
    assert_eq!(store.claim(&[], "r7").await.unwrap(), []);
    store.commit(&[], "r7").await.unwrap();
    store.release(&[], "r7").await.unwrap();
    assert!(store.ready().await);
}

/// An abandoned claim (its writer crashed) can be claimed again after the claim TTL.
async fn abandoned_claims_expire(store: &dyn IdempotencyStore) {
    let k = keys(&["abandoned"]);
    assert_eq!(
        store.claim(&k, "crashed").await.unwrap(),
        [ClaimOutcome::Claimed]
    );
    assert_eq!(
        store.claim(&k, "retry").await.unwrap(),
        [ClaimOutcome::InFlight]
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match store.claim(&k, "retry").await.unwrap()[0] {
            ClaimOutcome::Claimed => break,
            ClaimOutcome::InFlight => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the claim never expired"
                );
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            ClaimOutcome::Duplicate => panic!("an uncommitted claim became a duplicate"),
        }
    }
}

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    contract(&memory_store(Duration::from_secs(60))).await;
}

#[tokio::test]
async fn redis_store_keeps_the_contract() {
    let server = RedisServer::start();
    contract(&redis_store(&server, Duration::from_secs(60))).await;
    // Keys are `<prefix>:<source>:<event_id>`, committed ones expire with the window.
    let ttl = server.command("PTTL test:src:a");
    let ms: i64 = ttl.trim().trim_start_matches(':').parse().unwrap();
    assert!((3_500_000..=3_600_000).contains(&ms), "{ttl}");
}

#[tokio::test]
async fn a_redis_claim_retried_after_its_reply_was_lost_is_still_ours() {
    let server = RedisServer::start();
    let store = redis_store(&server, Duration::from_secs(60));
    let k = keys(&["lost-reply", "other"]);
    store.claim(&k[..1], "r1").await.unwrap();
    // The retry carries the same token: the key it finds is its own claim.
    assert_eq!(
        store.claim(&k, "r1").await.unwrap(),
        [ClaimOutcome::Claimed; 2]
    );
    assert_eq!(
        server.command("GET test:src:lost-reply").trim_end(),
        "$4\r\np:r1"
    );
    assert_eq!(
        store.claim(&k, "r2").await.unwrap(),
        [ClaimOutcome::InFlight; 2]
    );
}

#[tokio::test]
async fn redis_store_over_tls_with_a_private_ca() {
    let (server, ca) = RedisServer::start_tls();
    let store = RedisStore::new(RedisOptions {
        tls_root_ca: Some(ca),
        ..options(
            RedisTarget::Single(format!("rediss://127.0.0.1:{}", server.port)),
            Duration::from_secs(60),
        )
    })
    .unwrap();
    contract(&store).await;
    // Without the CA the server's certificate is not trusted: no answer, no claim.
    let untrusted = RedisStore::new(options(
        RedisTarget::Single(format!("rediss://127.0.0.1:{}", server.port)),
        Duration::from_secs(60),
    ))
    .unwrap();
    assert!(untrusted.claim(&keys(&["x"]), "r").await.is_err());
}

#[tokio::test]
async fn redis_store_over_a_unix_socket() {
    let (_server, url) = RedisServer::start_unix();
    let store =
        RedisStore::new(options(RedisTarget::Single(url), Duration::from_secs(60))).unwrap();
    contract(&store).await;
}

#[tokio::test]
async fn memory_store_claims_expire() {
    abandoned_claims_expire(&memory_store(Duration::from_millis(200))).await;
}

#[tokio::test]
async fn redis_store_claims_expire() {
    let server = RedisServer::start();
    abandoned_claims_expire(&redis_store(&server, Duration::from_millis(200))).await;
}

fn use_redis(config: &mut Config, server: &RedisServer, policy: FailurePolicy) {
    config.idempotency.backend = IdempotencyBackend::Redis;
    config.idempotency.redis.url = server.url();
    config.idempotency.redis.command_timeout = Duration::from_millis(500);
    config.idempotency.on_store_error = policy;
}

async fn redis_collector(server: &RedisServer, policy: FailurePolicy) -> TestCollector {
    TestCollector::start_with(|c| use_redis(c, server, policy), Overrides::default()).await
}

#[tokio::test]
async fn two_collectors_sharing_one_redis_log_a_batch_once() {
    let server = RedisServer::start();
    let a = redis_collector(&server, FailurePolicy::FailClosed).await;
    let b = redis_collector(&server, FailurePolicy::FailClosed).await;
    let body = batch(&["shared-0001", "shared-0002", "shared-0003"]);
    let (status, first) = a.post_events(&body).await;
    assert_eq!(
        (status, first["accepted"].as_u64()),
        (200, Some(3)),
        "{first}"
    );
    // The SDK retries on another replica.
    let (status, second) = b.post_events(&body).await;
    assert_eq!(
        (status, second["duplicate"].as_u64()),
        (200, Some(3)),
        "{second}"
    );
    assert_eq!(a.events().len() + b.events().len(), 3);
    let metrics = b.metrics().await;
    assert!(
        metrics.contains("tollgate_idempotency_keys_total{result=\"duplicate\",store=\"redis\"} 3"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_of_one_event_are_accepted_exactly_once() {
    let server = RedisServer::start();
    let collectors = [
        redis_collector(&server, FailurePolicy::FailClosed).await,
        redis_collector(&server, FailurePolicy::FailClosed).await,
    ];
    let urls: Vec<String> = collectors.iter().map(|c| c.url("/v1/events")).collect();
    let body = batch(&["contended-0001"]);
    let mut sends = Vec::new();
    for i in 0..32 {
        let (url, body) = (urls[i % 2].clone(), body.clone());
        sends.push(tokio::spawn(async move {
            let r = send(&reqwest::Client::new(), &url, &body).await;
            into_parts(r).await
        }));
    }
    let mut accepted = 0;
    for send in sends {
        let (status, answer) = send.await.unwrap();
        let outcome = &answer["results"][0]["status"];
        match (status, outcome.as_str()) {
            (200, Some("accepted")) => accepted += 1,
            (200, Some("duplicate")) | (503, Some("retry")) => {}
            other => panic!("unexpected answer {other:?}: {answer}"),
        }
    }
    assert_eq!(accepted, 1);
    let logged: usize = collectors
        .iter()
        .map(|c| count_id(&c.events(), "contended-0001"))
        .sum();
    assert_eq!(logged, 1);
}

#[tokio::test]
async fn a_failed_write_after_a_redis_claim_is_accepted_on_retry() {
    let server = RedisServer::start();
    let (c, log) =
        start_with_faulty_log(|c| use_redis(c, &server, FailurePolicy::FailClosed)).await;
    log.fail_next.store(1, Ordering::SeqCst);
    let body = batch(&["after-claim-1", "after-claim-2"]);
    let (status, answer) = c.post_events(&body).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (503, Some("log_unavailable"))
    );
    // The claims were released in Redis, not left to expire.
    assert_eq!(
        server.command("EXISTS tollgate:dev:after-claim-1").trim(),
        ":0"
    );
    let (status, answer) = c.post_events(&body).await;
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (200, Some(2)),
        "{answer}"
    );
    assert_eq!(c.events().len(), 2);
    // Committed now: the key reads `d`.
    assert_eq!(
        server.command("GET tollgate:dev:after-claim-1"),
        "$1\r\nd\r\n"
    );
}

/// Polls `/readyz` until it answers `want` (bounded).
async fn wait_ready(c: &TestCollector, want: u16) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let r = c.client.get(c.admin_url("/readyz")).send().await.unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        if status == want {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "readyz stayed {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn redis_down_under_fail_closed_answers_503_and_recovers_by_itself() {
    let mut server = RedisServer::start();
    let c = redis_collector(&server, FailurePolicy::FailClosed).await;
    let (status, _) = c.post_events(&batch(&["before-outage-1"])).await;
    assert_eq!(status, 200);

    server.kill();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let r = send(&client, &c.url("/v1/events"), &batch(&["during-outage-1"])).await;
    assert!(r.headers().contains_key("retry-after"));
    let (status, answer) = into_parts(r).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (503, Some("idempotency_unavailable")),
        "{answer}"
    );
    let ready = wait_ready(&c, 503).await;
    assert_eq!(ready["checks"]["idempotency"]["status"], "unavailable");
    assert_eq!(
        count_id(&c.events(), "during-outage-1"),
        0,
        "nothing was logged unchecked"
    );

    server.restart();
    wait_ready(&c, 200).await;
    let body = batch(&["after-outage-1"]);
    let (status, answer) = c.post_events(&body).await;
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (200, Some(1)),
        "{answer}"
    );
    let (_, again) = c.post_events(&body).await;
    assert_eq!(
        again["duplicate"], 1,
        "dedupe works again after the restart"
    );
    let metrics = c.metrics().await;
    assert!(
        metrics.contains("tollgate_idempotency_errors_total{operation=\"claim\",store=\"redis\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn redis_down_under_fail_open_logs_unchecked_events() {
    let mut server = RedisServer::start();
    let c = redis_collector(&server, FailurePolicy::FailOpen).await;
    server.kill();
    let (status, answer) = c
        .post_events(&batch(&["open-outage-1", "open-outage-2"]))
        .await;
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (200, Some(2)),
        "{answer}"
    );
    let events = c.events();
    assert!(
        events.iter().all(|e| e["dedupe"] == "unchecked"),
        "{events:?}"
    );
    let metrics = c.metrics().await;
    assert!(
        metrics.contains("tollgate_events_unchecked_total{reason=\"store_unavailable\"} 2"),
        "{metrics}"
    );

    server.restart();
    wait_ready(&c, 200).await;
    let body = batch(&["open-after-1"]);
    c.post_events(&body).await;
    let (_, again) = c.post_events(&body).await;
    assert_eq!(again["duplicate"], 1);
    let record = c
        .events()
        .into_iter()
        .find(|e| e["event_id"] == "open-after-1")
        .unwrap();
    assert_eq!(record["dedupe"], "checked");
}

#[tokio::test]
async fn redis_cluster_store_keeps_the_contract_and_spreads_keys_over_nodes() {
    let cluster = RedisCluster::start();
    let store = RedisStore::new(options(
        RedisTarget::Cluster(cluster.urls()),
        Duration::from_secs(60),
    ))
    .unwrap();
    assert_eq!(store.name(), "redis_cluster");
    contract(&store).await;
    // One request's keys land on every node, in one call.
    let many: Vec<String> = (0..60).map(|i| format!("src:spread-{i}")).collect();
    assert_eq!(
        store.claim(&many, "r").await.unwrap(),
        vec![ClaimOutcome::Claimed; 60]
    );
    store.commit(&many, "r").await.unwrap();
    assert_eq!(
        store.claim(&many, "r2").await.unwrap(),
        vec![ClaimOutcome::Duplicate; 60]
    );
    let per_node = cluster.keys_per_node();
    assert!(
        per_node.iter().all(|n| *n > 5),
        "keys per node: {per_node:?}"
    );
}

async fn post_with_key(c: &TestCollector, key: &str, body: &Value) -> reqwest::Response {
    c.client
        .post(c.url("/v1/events"))
        .basic_auth(DEV_KEY, Some(""))
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_answer() {
    let c = TestCollector::start().await;
    let body = batch(&["keyed-00001", "keyed-00002"]);
    let first = post_with_key(&c, "order-42-attempt", &body).await;
    assert!(first.headers().get("idempotent-replayed").is_none());
    let (status, first) = into_parts(first).await;
    assert_eq!((status, first["accepted"].as_u64()), (200, Some(2)));

    // The replay gets the original answer ("accepted"), not "duplicate".
    let replay = post_with_key(&c, "order-42-attempt", &body).await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let (status, replayed) = into_parts(replay).await;
    assert_eq!((status, &replayed), (200, &first));
    // Without the key, event-level dedupe still answers.
    let (_, plain) = c.post_events(&body).await;
    assert_eq!(plain["duplicate"], 2);

    let other = post_with_key(&c, "order-42-attempt", &batch(&["keyed-00003"])).await;
    let (status, answer) = into_parts(other).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    let bad = post_with_key(&c, "has spaces", &body).await;
    let (status, answer) = into_parts(bad).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("invalid_idempotency_key"))
    );
    assert_eq!(c.events().len(), 2);
}

#[tokio::test]
async fn idempotency_keys_are_shared_through_redis() {
    let server = RedisServer::start();
    let a = redis_collector(&server, FailurePolicy::FailClosed).await;
    let b = redis_collector(&server, FailurePolicy::FailClosed).await;
    let body = batch(&["keyed-redis-1"]);
    let (_, first) = into_parts(post_with_key(&a, "k-1", &body).await).await;
    assert_eq!(first["accepted"], 1);
    let replay = post_with_key(&b, "k-1", &body).await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let (_, replayed) = into_parts(replay).await;
    assert_eq!(replayed, first);
    assert_eq!(server.command("EXISTS tollgate:req:dev:k-1").trim(), ":1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_load_loses_and_doubles_nothing_under_fail_closed() {
    let mut server = RedisServer::start();
    let c = redis_collector(&server, FailurePolicy::FailClosed).await;
    let url = c.url("/v1/events");
    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let refusals = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let progress = Arc::new(tokio::sync::Semaphore::new(0));
    let mut clients = Vec::new();
    for client_no in 0..4 {
        let (url, acked, refusals, progress) = (
            url.clone(),
            acked.clone(),
            refusals.clone(),
            progress.clone(),
        );
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            // Bounded: 150 batches per client, each retried (as SDKs do) until accepted.
            for n in 0..150 {
                let ids: Vec<String> = (0..5)
                    .map(|i| format!("load-c{client_no}-b{n}-e{i}"))
                    .collect();
                let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                let body = batch(&refs);
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    assert!(attempts < 400, "a batch was never accepted");
                    let r = client
                        .post(&url)
                        .basic_auth(DEV_KEY, Some(""))
                        .json(&body)
                        .send()
                        .await;
                    let r = r.expect("no request hangs past the client timeout");
                    let (status, answer) = into_parts(r).await;
                    if status == 200 {
                        for result in answer["results"].as_array().unwrap() {
                            // A retried batch is never half-accepted under fail_closed.
                            assert_eq!(result["status"], "accepted", "{answer}");
                            acked
                                .lock()
                                .unwrap()
                                .push(result["event_id"].as_str().unwrap().to_owned());
                        }
                        break;
                    }
                    assert_eq!(
                        (status, answer["error"]["code"].as_str()),
                        (503, Some("idempotency_unavailable"))
                    );
                    refusals.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                progress.add_permits(1);
            }
        }));
    }
    // Mid-load: kill Redis after 100 accepted batches, bring it back 50 ms later.
    progress.acquire_many(100).await.unwrap().forget();
    server.kill();
    tokio::time::sleep(Duration::from_millis(50)).await;
    while refusals.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    server.restart();
    for client in clients {
        client.await.unwrap();
    }
    let acked = acked.lock().unwrap();
    assert_eq!(acked.len(), 4 * 150 * 5);
    let events = c.events();
    let mut counts = std::collections::HashMap::new();
    for e in &events {
        *counts
            .entry(e["event_id"].as_str().unwrap().to_owned())
            .or_insert(0usize) += 1;
    }
    assert!(
        acked.iter().all(|id| counts.get(id) == Some(&1)),
        "an acknowledged event is missing or doubled"
    );
    assert_eq!(
        events.len(),
        acked.len(),
        "nothing unacknowledged was logged"
    );
    assert!(refusals.load(Ordering::SeqCst) > 0);
}

#[tokio::test]
async fn after_a_redis_restart_the_first_request_of_an_idle_collector_succeeds() {
    let mut server = RedisServer::start();
    let c = redis_collector(&server, FailurePolicy::FailClosed).await;
    let (status, _) = c.post_events(&batch(&["before-restart-1"])).await;
    assert_eq!(status, 200);
    // Redis restarts while the collector is idle: its connection is now broken, and
    // nothing has used it since. (No /readyz here: it would use the connection.)
    server.restart();
    assert!(server.ping());
    let (status, answer) = c.post_events(&batch(&["after-restart-01"])).await;
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (200, Some(1)),
        "{answer}"
    );
}

#[tokio::test]
async fn a_claim_that_timed_out_under_fail_open_does_not_block_retries() {
    let server = RedisServer::start_with(&["--enable-debug-command", "yes"]);
    let c = redis_collector(&server, FailurePolicy::FailOpen).await;
    let (status, _) = c.post_events(&batch(&["warm-up-00001"])).await;
    assert_eq!(status, 200);
    // Redis stops answering for 3 s; commands sent meanwhile run afterwards.
    server.sleep(3);
    let body = batch(&["slow-claim-0001"]);
    let (status, answer) = c.post_events(&body).await;
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (200, Some(1)),
        "{answer}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !server.ping() {
        assert!(std::time::Instant::now() < deadline, "Redis woke up");
    }
    // The claim landed after its timeout; so did the commit that follows it. A retry is
    // a duplicate now, not `retry` for the whole claim TTL.
    let (status, again) = c.post_events(&body).await;
    assert_eq!(
        (status, again["duplicate"].as_u64()),
        (200, Some(1)),
        "{again}"
    );
    assert_eq!(count_id(&c.events(), "slow-claim-0001"), 1);
}

#[tokio::test]
async fn an_answer_does_not_wait_for_the_commit_and_a_shutdown_does() {
    let server = RedisServer::start_with(&["--enable-debug-command", "yes"]);
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let log = FaultyLog::new(file_log(dir.path(), metrics.clone()));
    let overrides = Overrides {
        log: Some(log.clone()),
        metrics: Some(metrics.clone()),
        ..Overrides::default()
    };
    let mut c = TestCollector::start_in(
        dir.path(),
        |c| {
            use_redis(c, &server, FailurePolicy::FailClosed);
            // Long enough to outlast the sleep below: the commit succeeds late.
            c.idempotency.redis.command_timeout = Duration::from_secs(20);
            c.server.request_timeout = Duration::from_secs(30);
        },
        overrides,
    )
    .await;
    let (status, _) = c.post_events(&batch(&["commit-warm-up-01"])).await;
    assert_eq!(status, 200);

    // The request claims its key, then its append is held.
    let gate = log.hold();
    let (client, url) = (c.client.clone(), c.url("/v1/events"));
    let sent = tokio::spawn(async move {
        into_parts(send(&client, &url, &batch(&["late-commit-0001"])).await).await
    });
    while log.appends.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Redis stops answering for 4 s; then the append completes.
    server.sleep(4);
    log.release(&gate);
    let (status, answer) = sent.await.unwrap();
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (200, Some(1)),
        "{answer}"
    );
    // Answered while the commit waits for Redis.
    assert!(!server.ping(), "the answer waited for the commit");

    // A shutdown waits for commits still in flight: once it returns, both are counted.
    c.stop().await;
    let committed = "tollgate_idempotency_keys_total{result=\"committed\",store=\"redis\"} 2";
    let rendered = metrics.render();
    assert!(rendered.contains(committed), "{rendered}");
    assert_eq!(
        server.command("GET tollgate:dev:late-commit-0001"),
        "$1\r\nd\r\n"
    );
}
