//! Criterion benchmarks of the collector's per-event path.
//!
//! - `decode`: bytes → validated events (JSON parse + base event model), native and
//!   Segment;
//! - `pipeline`: decode + schema validation + server timing + idempotency claim/commit
//!   (memory store) + record serialisation, with a log that discards (the disk is
//!   measured by the HTTP load test instead).
//!
//! Reported per event (`Throughput::Elements`). Run: `cargo bench -p tollgate-benches`.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tollgate_benches::{DiscardLog, native_batch, segment_batch};
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
    group.finish();
}

fn bench_pipeline(c: &mut Criterion) {
    let platforms = Platforms::default();
    let metrics = Arc::new(Metrics::new());
    let schemas = SchemaRegistry::load(&tollgate_benches::schemas_dir()).unwrap();
    let pipeline = Pipeline {
        schemas,
        store: Arc::new(MemoryStore::new(
            10_000_000,
            Duration::from_secs(60),
            Duration::from_secs(3600),
            metrics.clone(),
        )),
        log: Arc::new(DiscardLog),
        policy: FailurePolicy::FailClosed,
        allowed_lateness: Duration::from_secs(86400),
        future_tolerance: Duration::from_secs(300),
        region: "default".into(),
        privacy: None,
        metrics,
        labels: Some(SegmentLabels::new(platforms.clone(), 20)),
    };
    let source = Source::new("bench", false);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let counter = AtomicU64::new(1);
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("native_20", |b| {
        b.iter_batched(
            // Fresh event ids every time, so every event is claimed and serialised.
            || native_batch(counter.fetch_add(1, Ordering::Relaxed), BATCH),
            |body| {
                let decoded = decode::native_json(&body, &limits(&platforms)).unwrap();
                let outcome = runtime
                    .block_on(pipeline.process(
                        &source,
                        Api::Native,
                        decoded,
                        RequestInfo {
                            received_at: time::OffsetDateTime::now_utc(),
                            request_id: "bench-request",
                            edge_country: None,
                            shadow: false,
                        },
                    ))
                    .unwrap();
                assert_eq!(outcome.answer.accepted, BATCH);
                outcome
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn bench_privacy(c: &mut Criterion) {
    use tollgate_collector::privacy::config::PrivacyConfig;
    use tollgate_collector::privacy::{Keys, Privacy};
    let config =
        PrivacyConfig::load(&tollgate_benches::schemas_dir().join("../privacy.toml")).unwrap();
    let privacy = Privacy::new(
        &config,
        Keys::new(("bench".into(), vec![7; 32]), vec![]).unwrap(),
    )
    .unwrap();
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

criterion_group!(benches, bench_decode, bench_pipeline, bench_privacy);
criterion_main!(benches);
