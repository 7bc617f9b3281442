//! Criterion benchmarks of the collector's per-event path.
//!
//! - `decode`: bytes → validated events (JSON parse + base event model), native,
//!   Segment, PostHog and Snowplow;
//! - `stage`: each stage of the pipeline on its own, over one 20-event batch: schema
//!   validation, the shipped UK privacy policy, the idempotency claim and commit
//!   (memory store), record serialisation, and the answer body;
//! - `pipeline`: decode + schema validation + server timing + idempotency claim/commit
//!   (memory store) + record serialisation, with a log that discards (the disk is
//!   measured by the HTTP load test instead); `native_20_uk` with the shipped privacy
//!   policy applied to every event, as in `scripts/bench-http.sh`;
//!   `native_20_candidate` with every event also checked against a candidate schema.
//!
//! Reported per event (`Throughput::Elements`). Run: `cargo bench -p tollgate-benches`.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tollgate_benches::{DiscardLog, native_batch, posthog_batch, segment_batch, snowplow_batch};
use tollgate_collector::Rules;
use tollgate_collector::config::FailurePolicy;
use tollgate_collector::dedupe::MemoryStore;
use tollgate_collector::ingest::{DecodeLimits, Pipeline, RequestInfo, Source, decode};
use tollgate_collector::schema::SchemaRegistry;
use tollgate_collector::telemetry::Metrics;
use tollgate_collector::telemetry::quality::SegmentLabels;
use tollgate_event::{Api, Platforms};

const BATCH: usize = 20;

/// The collector's allocator, so the figures match what it runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn limits(platforms: &Platforms) -> DecodeLimits<'_> {
    DecodeLimits {
        max_event_bytes: 32 * 1024,
        max_events: 1000,
        platforms,
    }
}

fn bench_decode(c: &mut Criterion) {
    let platforms = Platforms::default();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(BATCH as u64));
    let native = native_batch(0, BATCH);
    group.bench_function("native_20", |b| {
        b.iter(|| decode::native_json(black_box(&native), &limits(&platforms)).unwrap())
    });
    let segment = segment_batch(0, BATCH);
    let received = time::OffsetDateTime::now_utc();
    group.bench_function("segment_20", |b| {
        b.iter(|| {
            decode::segment(black_box(&segment), None, received, &limits(&platforms)).unwrap()
        })
    });
    let posthog = posthog_batch(0, BATCH);
    let request = decode::PostHogRequest {
        sent_at: None,
        received_at: received,
    };
    group.bench_function("posthog_20", |b| {
        b.iter(|| decode::posthog(black_box(&posthog), request, &limits(&platforms)).unwrap())
    });
    let snowplow = snowplow_batch(0, BATCH);
    let request = decode::SnowplowRequest {
        received_at: received,
        anonymous: false,
    };
    group.bench_function("snowplow_20", |b| {
        b.iter(|| {
            decode::snowplow_post(black_box(&snowplow), request, &limits(&platforms)).unwrap()
        })
    });
    group.finish();
}

/// The shipped privacy policies with a fixed key.
fn shipped_privacy() -> tollgate_collector::privacy::Privacy {
    use tollgate_collector::privacy::config::PrivacyConfig;
    use tollgate_collector::privacy::{Keys, Privacy};
    let config =
        PrivacyConfig::load(&tollgate_benches::schemas_dir().join("../privacy.toml")).unwrap();
    Privacy::new(
        &config,
        Keys::new(("bench".into(), vec![7; 32]), vec![]).unwrap(),
    )
    .unwrap()
}

/// The decoded events of one bench batch.
fn events(seq: u64, platforms: &Platforms) -> Vec<tollgate_event::Event> {
    let body = native_batch(seq, BATCH);
    decode::native_json(&body, &limits(platforms))
        .unwrap()
        .items
        .into_iter()
        .map(|item| match item {
            tollgate_collector::ingest::Item::Event { event, .. } => event,
            _ => panic!("the bench events are valid"),
        })
        .collect()
}

fn bench_stages(c: &mut Criterion) {
    use tollgate_collector::dedupe::IdempotencyStore;
    use tollgate_collector::schema::UnknownEvents;
    let platforms = Platforms::default();
    let batch = events(0, &platforms);
    let mut group = c.benchmark_group("stage");
    group.throughput(Throughput::Elements(BATCH as u64));

    let schemas = SchemaRegistry::load(&tollgate_benches::schemas_dir()).unwrap();
    group.bench_function("validate_20", |b| {
        b.iter_batched_ref(
            || batch.clone(),
            |events| {
                for event in events.iter_mut() {
                    schemas
                        .validate_map(
                            &event.event_name,
                            event.schema_version,
                            &mut event.properties,
                            UnknownEvents::Reject,
                        )
                        .unwrap();
                }
            },
            BatchSize::SmallInput,
        )
    });

    let privacy = shipped_privacy();
    group.bench_function("privacy_uk_20", |b| {
        b.iter_batched_ref(
            || batch.clone(),
            |events| {
                // As a request applies it: pseudonyms made once per batch.
                let mut made = tollgate_collector::privacy::Pseudonyms::default();
                for event in events.iter_mut() {
                    let policy = privacy.policy_for(None, &event.context).clone();
                    black_box(privacy.apply_with(&policy, event, &mut made));
                }
            },
            BatchSize::SmallInput,
        )
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let counter = AtomicU64::new(1);
    // Claims and commits a batch of fresh keys in a store with the collector's default
    // bound (`idempotency.max_keys`) and the given dedupe window.
    let mut claim_commit = |name: &str, window: Duration| {
        let store = MemoryStore::new(
            2_000_000,
            Duration::from_secs(60),
            window,
            Arc::new(Metrics::new()),
        );
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let seq = counter.fetch_add(1, Ordering::Relaxed);
                    (0..BATCH)
                        .map(|i| format!("bench:bench-{seq:012}-{i:04}"))
                        .collect::<Vec<_>>()
                },
                |keys| {
                    runtime.block_on(async {
                        store.claim(&keys, "request").await.unwrap();
                        store.commit(&keys, "request").await.unwrap();
                    })
                },
                BatchSize::SmallInput,
            )
        });
    };
    // An hour's window: the bench runs far past the bound and mostly measures evictions.
    claim_commit("claim_commit_20", Duration::from_secs(3600));
    // A steady state, as a collector sees it after its first window: keys expire (a
    // 0.2 s window here: at most ~0.9 million live keys at the 4.4 million keys/s this
    // runs, under the bound) and their slots are reused, lookups land anywhere in a
    // table larger than the caches, and nothing is evicted.
    claim_commit("claim_commit_20_steady", Duration::from_millis(200));

    let received = time::OffsetDateTime::now_utc();
    group.bench_function("serialize_20", |b| {
        let mut out = Vec::with_capacity(64 << 10);
        b.iter(|| {
            out.clear();
            // As the collector writes a request: the records share their server time.
            let mut shared = tollgate_event::SharedTimes::default();
            for event in &batch {
                let timing = tollgate_event::Timing::compute(
                    event.timestamp_event,
                    None,
                    received,
                    Duration::from_secs(86400),
                    Duration::from_secs(300),
                )
                .unwrap();
                let record = tollgate_event::Record {
                    event: std::borrow::Cow::Borrowed(event),
                    timestamp_server: received,
                    sent_at: Some(received),
                    clock_skew_ms: timing.clock_skew_ms,
                    timestamp_derived: timing.timestamp_derived,
                    lateness_ms: timing.lateness_ms,
                    arrival: timing.arrival,
                    source: "bench".into(),
                    region: "uk".into(),
                    privacy_policy: Some("uk_gdpr@1".into()),
                    privacy_key: Some("bench".into()),
                    pseudonyms_previous: None,
                    dedupe: tollgate_event::Dedupe::Checked,
                    api: Api::Native,
                    request_id: "0193b2c4-5d6e-7f80-9a1b-2c3d4e5f6a7b".into(),
                    collector_version: "0.1.0".into(),
                    schema_set: Some("0123456789ab".into()),
                    replayed_at: None,
                    replay_of: None,
                };
                record.write_json_with(&mut out, &mut shared);
                out.push(b'\n');
            }
            black_box(out.len())
        })
    });

    let answer = tollgate_event::wire::Answer {
        accepted: BATCH,
        results: batch
            .iter()
            .map(|e| tollgate_event::wire::EventResult {
                event_id: Some(e.event_id.clone()),
                status: tollgate_event::wire::Status::Accepted,
                error: None,
            })
            .collect(),
        ..Default::default()
    };
    group.bench_function("answer_20", |b| {
        b.iter(|| {
            let mut body = Vec::new();
            black_box(&answer).write_json(&mut body);
            body
        })
    });
    group.finish();
}

fn bench_pipeline(c: &mut Criterion) {
    let platforms = Platforms::default();
    let metrics = Arc::new(Metrics::new());
    let rules = |privacy| Rules {
        schemas: SchemaRegistry::load(&tollgate_benches::schemas_dir()).unwrap(),
        privacy,
        sources: Default::default(),
        rate_limits: None,
    };
    let pipeline = Pipeline {
        // The collector's default bound (a larger table spends the run faulting in
        // its pages, which a collector does once).
        store: Arc::new(MemoryStore::new(
            2_000_000,
            Duration::from_secs(60),
            Duration::from_secs(3600),
            metrics.clone(),
        )),
        log: Arc::new(DiscardLog),
        policy: FailurePolicy::FailClosed,
        allowed_lateness: Duration::from_secs(86400),
        future_tolerance: Duration::from_secs(300),
        region: "default".into(),
        metrics,
        labels: Some(SegmentLabels::new(platforms.clone(), 20)),
        tasks: Default::default(),
    };
    let pipeline = Arc::new(pipeline);
    let source = Source::new("bench", false);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let counter = AtomicU64::new(1);
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(BATCH as u64));
    // Fresh event ids every time, so every event is claimed and serialised.
    let run = |rules: &Rules, body: Vec<u8>| {
        let decoded = decode::native_json(&body, &limits(&platforms)).unwrap();
        let request = RequestInfo {
            received_at: time::OffsetDateTime::now_utc(),
            request_id: "bench-request",
            edge_country: None,
            shadow: false,
            replay: None,
        };
        let outcome = runtime
            .block_on(pipeline.process(rules, &source, Api::Native, decoded, request))
            .unwrap();
        assert_eq!(outcome.answer.accepted, BATCH);
        outcome
    };
    let body = || native_batch(counter.fetch_add(1, Ordering::Relaxed), BATCH);
    let plain = rules(None);
    group.bench_function("native_20", |b| {
        b.iter_batched(body, |body| run(&plain, body), BatchSize::SmallInput)
    });
    let uk = rules(Some(shipped_privacy()));
    group.bench_function("native_20_uk", |b| {
        b.iter_batched(body, |body| run(&uk, body), BatchSize::SmallInput)
    });
    // Every event also checked against a candidate (its newest version again, so it
    // passes): the cost of trying a schema on live traffic.
    let candidates = with_candidates();
    let tried = Rules {
        schemas: SchemaRegistry::load(candidates.path()).unwrap(),
        ..rules(None)
    };
    group.bench_function("native_20_candidate", |b| {
        b.iter_batched(body, |body| run(&tried, body), BatchSize::SmallInput)
    });
    group.finish();
}

/// The shipped schemas, each event with a candidate: a copy of its newest version.
fn with_candidates() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(tollgate_benches::schemas_dir()).unwrap() {
        let folder = entry.unwrap().path();
        if !folder.is_dir() {
            continue;
        }
        let target = dir.path().join(folder.file_name().unwrap());
        std::fs::create_dir(&target).unwrap();
        let mut newest = (0u32, std::path::PathBuf::new());
        for file in std::fs::read_dir(&folder).unwrap() {
            let file = file.unwrap().path();
            std::fs::copy(&file, target.join(file.file_name().unwrap())).unwrap();
            let version = file
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.strip_prefix('v'))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if version > newest.0 {
                newest = (version, file);
            }
        }
        std::fs::copy(
            &newest.1,
            target.join(format!("v{}.candidate.json", newest.0 + 1)),
        )
        .unwrap();
    }
    dir
}

fn bench_privacy(c: &mut Criterion) {
    let privacy = shipped_privacy();
    let platforms = Platforms::default();
    let body = native_batch(0, 1);
    let mut decoded = decode::native_json(&body, &limits(&platforms)).unwrap();
    let tollgate_collector::ingest::Item::Event { mut event, .. } = decoded.items.remove(0) else {
        panic!("the bench event is valid")
    };
    // A typical EU event: personal data in context and properties.
    event.context.insert("country".into(), "DE".into());
    event
        .properties
        .insert("email".into(), "someone@example.com".into());
    let mut group = c.benchmark_group("privacy");
    group.throughput(Throughput::Elements(1));
    group.bench_function("eu_policy_per_event", |b| {
        b.iter_batched(
            || event.clone(),
            |mut event| {
                let policy = privacy.policy_for(None, &event.context).clone();
                let verdict = privacy.apply(&policy, &mut event);
                (event, verdict)
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_decode,
    bench_stages,
    bench_pipeline,
    bench_privacy
);
criterion_main!(benches);
