//! Metrics: OpenTelemetry instruments exported in Prometheus text format on the admin
//! listener's `/metrics`.
//!
//! Every outcome and failure mode of the request path has its instrument here; labels
//! are bounded (routes, codes and outcomes are fixed sets, sources come from config).
//! `docs/metrics.md` documents each one.

pub mod config;
pub mod quality;
pub mod tracing_setup;

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, MeterProvider, UpDownCounter};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use prometheus::{Encoder, TextEncoder};

/// All instruments of one collector instance.
pub struct Metrics {
    registry: prometheus::Registry,
    /// Kept alive: dropping the provider stops collection.
    _provider: SdkMeterProvider,
    /// HTTP requests by route and status.
    pub requests: Counter<u64>,
    /// Whole-request errors by stable code (the `error.code` of the JSON body).
    pub request_errors: Counter<u64>,
    /// Request handling time by route.
    pub request_duration: Histogram<f64>,
    /// Events by outcome (accepted, duplicate, rejected, retry), API and source.
    pub events: Counter<u64>,
    /// Rejected events by code.
    pub rejections: Counter<u64>,
    /// Events logged with `dedupe: unchecked`, by reason.
    pub unchecked: Counter<u64>,
    /// Server-owned fields that clients sent and that were ignored.
    pub client_server_fields: Counter<u64>,
    /// Events by arrival class (on_time, late, future).
    pub arrivals: Counter<u64>,
    /// Time from handing a batch to the log until it is durable.
    pub log_append_duration: Histogram<f64>,
    /// fsync time of one group commit.
    pub log_fsync_duration: Histogram<f64>,
    /// Requests covered by one group commit.
    pub log_group_requests: Histogram<u64>,
    /// Bytes appended to the log, by stream (events, quarantine).
    pub log_bytes: Counter<u64>,
    /// Failed log appends, by kind (queue_full, io, closed).
    pub log_errors: Counter<u64>,
    /// Idempotency store errors, by store and operation.
    pub idempotency_errors: Counter<u64>,
    /// Keys by store and result: claimed, duplicate, in_flight, committed, released.
    pub idempotency_keys: Counter<u64>,
    /// One store round trip, by store and operation.
    pub idempotency_duration: Histogram<f64>,
    /// Keys the memory store forgot before their window ended (capacity too small).
    pub idempotency_evictions: Counter<u64>,
    /// Events the privacy policy removed before they were written, by reason.
    pub privacy_drops: Counter<u64>,
    /// PII found in free-text property values, by detector.
    pub privacy_pii: Counter<u64>,
    /// Requests marked `X-Tollgate-Shadow: 1` (copies from a shadow proxy), by route.
    pub shadow_requests: Counter<u64>,
    /// Messages the Kafka broker acknowledged.
    pub kafka_messages: Counter<u64>,
    /// Messages queued in or in flight from the Kafka producer, after each append.
    pub kafka_in_flight: Gauge<i64>,
    /// Average broker round-trip time from librdkafka's statistics, by broker.
    pub kafka_broker_rtt: Gauge<f64>,
    /// Kafka producers replaced because the broker refused their identity.
    pub kafka_producer_resets: Counter<u64>,
    /// Requests refused by a rate limit, by limit (source_requests, source_events,
    /// ip_requests).
    pub rate_limited: Counter<u64>,
    /// TLS certificate reloads, by outcome (reloaded, failed: the previous pair stays).
    pub tls_reloads: Counter<u64>,
    /// Reloads of the rules (SIGHUP, changed files), by outcome.
    pub config_reloads: Counter<u64>,
    /// Events checked against a candidate schema, by event, version and verdicts
    /// (both_accept, would_reject, both_reject, would_accept): read from the
    /// candidates' own counts at each scrape (no per-event cost).
    _candidate_events: opentelemetry::metrics::ObservableCounter<u64>,
    candidate_counts: CandidateCounts,
    /// Would-reject events of a candidate schema, by event, version, field and keyword.
    pub candidate_errors: Counter<u64>,
    /// Events by outcome (accepted, rejected) × event_name × platform × app_version,
    /// with bounded labels (see [`quality`]).
    pub events_by_segment: Counter<u64>,
    /// Accepted events whose key field (user_id, device_id, session_id, a schema's
    /// required *_id property) is absent, null or empty, by event_name and field.
    pub fields_missing: Counter<u64>,
    /// `timestamp_server - timestamp_derived` of accepted events.
    pub lateness: Histogram<f64>,
    /// |timestamp_server - sent_at| of requests that sent `sent_at`.
    pub clock_skew: Histogram<f64>,
    /// Requests waiting for the log writer, after each append.
    pub log_queue_depth: Gauge<i64>,
    /// Open connections, by listener (public, admin).
    pub connections_open: UpDownCounter<i64>,
    /// Connections closed by a limit, by listener and event (header_timeout,
    /// idle_timeout, handshake_failed).
    pub connections_cut: Counter<u64>,
    /// `X-Tollgate-Shadow` headers ignored because the peer is not a configured
    /// shadow proxy (the events were logged as real traffic).
    pub shadow_untrusted: Counter<u64>,
}

/// Takes one candidate count: (event, version, verdicts, count).
pub type CandidateSink<'a> = dyn FnMut(&str, u32, &'static str, u64) + 'a;

/// Reads the candidates' counts for the scrape.
type CandidateCounts =
    std::sync::Arc<std::sync::OnceLock<Box<dyn Fn(&mut CandidateSink<'_>) + Send + Sync>>>;

impl Metrics {
    pub fn new() -> Metrics {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .scope_info_enabled(false)
            .build()
            .expect("a fresh registry accepts the exporter");
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        let meter = provider.meter("tollgate");
        let candidate_counts = CandidateCounts::default();
        let counter = |name: &'static str, help: &'static str| {
            meter.u64_counter(name).with_description(help).build()
        };
        let seconds = |name: &'static str, help: &'static str, bounds: Vec<f64>| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(help)
                .with_boundaries(bounds)
                .build()
        };
        let latency = vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            2.5, 5.0, 10.0,
        ];
        Metrics {
            requests: counter(
                "tollgate_http_requests",
                "HTTP requests by route and status",
            ),
            request_errors: counter("tollgate_request_errors", "Whole-request errors by code"),
            request_duration: seconds(
                "tollgate_http_request_duration",
                "Request handling time by route",
                latency.clone(),
            ),
            events: counter("tollgate_events", "Events by outcome, api and source"),
            rejections: counter("tollgate_events_rejected", "Rejected events by code"),
            unchecked: counter(
                "tollgate_events_unchecked",
                "Events logged without an idempotency check, by reason",
            ),
            client_server_fields: counter(
                "tollgate_client_server_fields_ignored",
                "Server-owned fields sent by clients and ignored",
            ),
            arrivals: counter(
                "tollgate_event_arrivals",
                "Accepted events by arrival class",
            ),
            log_append_duration: seconds(
                "tollgate_log_append_duration",
                "Time from handing a batch to the log until it is durable",
                latency.clone(),
            ),
            log_fsync_duration: seconds(
                "tollgate_log_fsync_duration",
                "fsync time of one group commit",
                latency.clone(),
            ),
            log_group_requests: meter
                .u64_histogram("tollgate_log_group_requests")
                .with_description("Requests covered by one group commit")
                .with_boundaries(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0])
                .build(),
            log_bytes: counter("tollgate_log_bytes", "Bytes appended to the log by stream"),
            log_errors: counter("tollgate_log_errors", "Failed log appends by kind"),
            idempotency_errors: counter(
                "tollgate_idempotency_errors",
                "Idempotency store errors by store and operation",
            ),
            idempotency_keys: counter(
                "tollgate_idempotency_keys",
                "Idempotency keys by store and result",
            ),
            idempotency_duration: seconds(
                "tollgate_idempotency_duration",
                "One idempotency store round trip by store and operation",
                latency,
            ),
            idempotency_evictions: counter(
                "tollgate_idempotency_evictions",
                "Keys forgotten before their dedupe window ended (memory store full)",
            ),
            privacy_drops: counter(
                "tollgate_privacy_drops",
                "Events removed by the privacy policy before they were written, by reason",
            ),
            shadow_requests: counter(
                "tollgate_shadow_requests",
                "Requests copied here by a shadow proxy (X-Tollgate-Shadow: 1), by route",
            ),
            privacy_pii: counter(
                "tollgate_privacy_pii",
                "PII found in free-text property values, by detector",
            ),
            kafka_messages: counter(
                "tollgate_kafka_messages",
                "Messages acknowledged by the Kafka broker",
            ),
            kafka_in_flight: meter
                .i64_gauge("tollgate_kafka_in_flight")
                .with_description("Messages queued in or in flight from the Kafka producer")
                .build(),
            kafka_broker_rtt: meter
                .f64_gauge("tollgate_kafka_broker_rtt")
                .with_unit("s")
                .with_description("Average broker round-trip time (librdkafka statistics)")
                .build(),
            kafka_producer_resets: counter(
                "tollgate_kafka_producer_resets",
                "Kafka producers replaced because the broker refused their producer id",
            ),
            rate_limited: counter(
                "tollgate_rate_limited",
                "Requests refused by a rate limit, by limit",
            ),
            tls_reloads: counter(
                "tollgate_tls_reloads",
                "TLS certificate reloads, by outcome (failed: the previous pair stays in use)",
            ),
            config_reloads: counter(
                "tollgate_config_reloads",
                "Reloads of schemas, privacy file and sources, by outcome (failed: the rules in force stay)",
            ),
            _candidate_events: {
                let counts = candidate_counts.clone();
                meter
                    .u64_observable_counter("tollgate_schema_candidate_events")
                    .with_description(
                        "Events checked against a candidate schema, by event, version and the live and candidate verdicts",
                    )
                    .with_callback(move |observer| {
                        if let Some(read) = counts.get() {
                            read(&mut |event, version, verdicts, n| {
                                observer.observe(
                                    n,
                                    &[
                                        KeyValue::new("event", event.to_owned()),
                                        KeyValue::new("version", i64::from(version)),
                                        KeyValue::new("verdicts", verdicts),
                                    ],
                                );
                            });
                        }
                    })
                    .build()
            },
            candidate_counts,
            candidate_errors: counter(
                "tollgate_schema_candidate_errors",
                "Events a candidate schema would reject, by event, version, field and keyword",
            ),
            events_by_segment: counter(
                "tollgate_events_by_segment",
                "Events by outcome, event_name, platform and app_version (bounded labels)",
            ),
            fields_missing: counter(
                "tollgate_event_fields_missing",
                "Accepted events with an absent, null or empty key field, by event_name and field",
            ),
            lateness: seconds(
                "tollgate_event_lateness",
                "How late accepted events arrive (server time minus skew-corrected event time)",
                vec![
                    1.0,
                    10.0,
                    60.0,
                    300.0,
                    900.0,
                    3600.0,
                    6.0 * 3600.0,
                    86400.0,
                    3.0 * 86400.0,
                    7.0 * 86400.0,
                ],
            ),
            clock_skew: seconds(
                "tollgate_clock_skew",
                "Absolute difference between the server clock and the client's sent_at",
                vec![0.1, 1.0, 10.0, 60.0, 300.0, 3600.0, 86400.0],
            ),
            log_queue_depth: meter
                .i64_gauge("tollgate_log_queue_depth")
                .with_description("Requests waiting for the log writer")
                .build(),
            connections_open: meter
                .i64_up_down_counter("tollgate_connections_open")
                .with_description("Open connections by listener")
                .build(),
            connections_cut: counter(
                "tollgate_connections_cut",
                "Connections closed by a limit, by listener and event (header_timeout, idle_timeout, handshake_failed)",
            ),
            shadow_untrusted: counter(
                "tollgate_shadow_header_untrusted",
                "X-Tollgate-Shadow headers ignored: the peer is not a configured shadow proxy",
            ),
            registry,
            _provider: provider,
        }
    }

    /// Where `tollgate_schema_candidate_events_total` reads its counts: called at each
    /// scrape with a callback taking (event, version, verdicts, count). Set once.
    pub fn count_candidates_with(
        &self,
        read: impl Fn(&mut CandidateSink<'_>) + Send + Sync + 'static,
    ) {
        let _ = self.candidate_counts.set(Box::new(read));
    }

    /// Counts a connection's events on `listener` (the edge calls this).
    pub fn connection_observer(
        self: &std::sync::Arc<Self>,
        listener: &'static str,
    ) -> tollgate_edge::ConnectionObserver {
        let metrics = self.clone();
        let label = [KeyValue::new("listener", listener)];
        std::sync::Arc::new(move |event| match event {
            tollgate_edge::ConnectionEvent::Opened => metrics.connections_open.add(1, &label),
            tollgate_edge::ConnectionEvent::Closed => metrics.connections_open.add(-1, &label),
            cut => metrics
                .connections_cut
                .add(1, &[label[0].clone(), KeyValue::new("event", cut.as_str())]),
        })
    }

    /// Prometheus text exposition of every instrument.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(out).expect("the Prometheus text format is UTF-8")
    }

    /// Times a successful log append, or counts a failed one by kind (every sink).
    pub fn observe_log_append(
        &self,
        started: std::time::Instant,
        result: &Result<(), crate::sink::LogError>,
    ) {
        match result {
            Ok(()) => self
                .log_append_duration
                .record(started.elapsed().as_secs_f64(), &[]),
            Err(e) => self.log_errors.add(1, &[KeyValue::new("kind", e.kind())]),
        }
    }

    /// Counts one whole-request error by its stable code.
    pub fn request_error(&self, code: &'static str) {
        self.request_errors.add(1, &[KeyValue::new("code", code)]);
    }

    pub fn observe_request(&self, route: &'static str, status: u16, elapsed: Duration) {
        self.requests.add(
            1,
            &[
                KeyValue::new("route", route),
                KeyValue::new("status", i64::from(status)),
            ],
        );
        self.request_duration
            .record(elapsed.as_secs_f64(), &[KeyValue::new("route", route)]);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}
