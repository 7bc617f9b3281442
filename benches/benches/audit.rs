//! Records audited per second on the local log, with the shipped expectations file
//! (`config/expectations.toml`): one pass reading, parsing and checking every record, on
//! one thread and on two. Target: at least 500 000 records per second per core.

use std::io::Write;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tollgate_audit::{AuditInput, AuditOptions, Expectations, audit};

// The collector's allocator, as in production.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RECORDS: usize = 200_000;

/// A log of records shaped like the collector's (server fields, context, properties).
fn write_log(dir: &Path) {
    std::fs::create_dir_all(dir.join("events")).unwrap();
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(dir.join("events/20261129T000000Z-1.ndjson")).unwrap(),
    );
    for i in 0..RECORDS {
        let session = i / 5;
        let (name, properties) = match i % 5 {
            3 => (
                "share_submit",
                format!(r#"{{"action_id":"a{session}","item_id":"i{i}","channel":"sms"}}"#),
            ),
            4 => (
                "share_success",
                format!(r#"{{"action_id":"a{session}","item_id":"i{i}"}}"#),
            ),
            _ => (
                "item_view",
                format!(
                    r#"{{"item_id":"item-{i}","position":{},"dwell_ms":1234}}"#,
                    i % 50
                ),
            ),
        };
        let micros = i as u64 * 500;
        writeln!(
            file,
            r#"{{"event_id":"bench-{i:08}","event_name":"{name}","schema_version":1,"user_id":"user-{u}","device_id":"5a1e0c8e-2d5b-4a7e-9f0b-6d8f1c2b{u:04}","session_id":"s-{session}","timestamp_event":"2026-11-29T10:00:00.250Z","surface":"home_feed","app_version":"5.12.0","platform":"ios","experiment_ids":["ranker_v7"],"consent":{{"analytics":true}},"context":{{"locale":"en-GB","country":"GB","ip":"203.0.113.0"}},"properties":{properties},"timestamp_server":"2026-11-29T10:{m:02}:{s:02}.{f:06}Z","sent_at":"2026-11-29T10:00:01.000Z","clock_skew_ms":12,"timestamp_derived":"2026-11-29T10:00:00.262Z","lateness_ms":1500,"arrival":"on_time","source":"mobile_app","region":"uk","privacy_policy":"uk_gdpr@1","privacy_key":"k1","dedupe":"checked","api":"native","request_id":"0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","collector_version":"0.1.0"}}"#,
            u = i % 9973,
            m = micros / 60_000_000,
            s = micros / 1_000_000 % 60,
            f = micros % 1_000_000,
        )
        .unwrap();
    }
}

fn bench_audit(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path());
    let expectations = Expectations::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/expectations.toml"),
    )
    .unwrap();
    let now = tollgate_audit::parse_time("2026-11-29T11:00:00Z").unwrap();
    let mut group = c.benchmark_group("audit");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.sample_size(10);
    for (name, threads) in [
        ("shipped_expectations", 1),
        ("shipped_expectations_2_threads", 2),
    ] {
        let mut options = AuditOptions::new(AuditInput::Dir(dir.path().to_owned()), now);
        options.threads = threads;
        group.bench_function(name, |b| {
            b.iter(|| {
                let report = audit(&options, &expectations).unwrap();
                assert_eq!(report.records, RECORDS as u64);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_audit);
criterion_main!(benches);
