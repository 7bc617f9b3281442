//! The ingest pipeline: from decoded events to a durable log and a per-event answer.
//!
//! Enters: a request's [`Decoded`] items, its source and its receive time. Leaves: an
//! [`IngestOutcome`] (one status per event), returned only once the accepted events
//! and the quarantined ones are durable; or an [`ApiError`] for the whole request, in
//! which case nothing of it was acknowledged.
//!
//! Per request, in order: schema validation and server timing per event; duplicates
//! inside the batch; one idempotency claim for all valid events; one log append
//! (events and quarantine together, group-committed with other requests); one commit,
//! or a release if the append failed.

pub mod decode;

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use time::OffsetDateTime;
use tollgate_event::{
    Api, Arrival, Dedupe, ErrorCode, Event, EventError, QuarantineRecord, Record, Timing,
};

pub use decode::{DecodeLimits, Decoded, Item, Raw};

use crate::config::FailurePolicy;
use crate::dedupe::{ClaimOutcome, IdempotencyStore, StoreError};
use crate::error::ApiError;
use crate::privacy::{Policy, Privacy, Verdict};
use crate::schema::{SchemaRegistry, UnknownEvents};
use crate::sink::{AppendBatch, BatchMeta, EventLog, LogError, PartitionKey, RecordMeta};
use crate::telemetry::Metrics;
use crate::telemetry::quality::{SegmentLabels, Segments};

/// The version stamped on every record.
pub const COLLECTOR_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A configured source, resolved from a write key.
#[derive(Debug)]
pub struct Source {
    pub id: String,
    pub allow_unknown_events: bool,
    /// The `source` metric label, built once (cheap to clone per request).
    label: KeyValue,
}

impl Source {
    pub fn new(id: impl Into<String>, allow_unknown_events: bool) -> Source {
        let id = id.into();
        let label = KeyValue::new(
            "source",
            opentelemetry::StringValue::from(Arc::<str>::from(id.as_str())),
        );
        Source {
            id,
            allow_unknown_events,
            label,
        }
    }
}

pub use tollgate_event::wire::{Answer, EventResult, Status};

/// The answer to a request whose events were all processed.
#[derive(Debug, Default)]
pub struct IngestOutcome {
    /// What the client is told.
    pub answer: Answer,
    /// Per result: the privacy policy an accepted event was logged under (its region),
    /// for `X-Tollgate-Explain`; never in the body.
    pub policies: Vec<Option<Arc<Policy>>>,
}

/// What the pipeline knows about a request besides its events.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// When the request arrived: every event's `timestamp_server`.
    pub received_at: OffsetDateTime,
    pub request_id: &'a str,
    /// The country a trusted edge header or proxy named, for the privacy policy.
    pub edge_country: Option<&'a str>,
    /// A copy from a shadow proxy (`X-Tollgate-Shadow: 1`): logged to the shadow stream
    /// where the log has one.
    pub shadow: bool,
}

/// Everything the pipeline needs, shared by all requests.
pub struct Pipeline {
    pub schemas: SchemaRegistry,
    pub store: Arc<dyn IdempotencyStore>,
    pub log: Arc<dyn EventLog>,
    pub policy: FailurePolicy,
    pub allowed_lateness: Duration,
    pub future_tolerance: Duration,
    pub region: String,
    /// Regional privacy policies; `None` runs without any.
    pub privacy: Option<Privacy>,
    pub metrics: Arc<Metrics>,
    /// Bounded labels of the data-quality metrics; `None` turns them off.
    pub labels: Option<SegmentLabels>,
}

/// One event on its way through the pipeline.
// The large variant is the common one (a valid event); boxing it would cost an
// allocation per event on the hot path.
#[allow(clippy::large_enum_variant)]
enum Slot {
    Valid {
        event: Event,
        sent_at: Option<OffsetDateTime>,
        timing: Timing,
        dedupe: Dedupe,
        /// Index into the request's claim keys, when the event was claimed.
        claim: Option<usize>,
        check: bool,
        /// The privacy policy applied, and the pseudonyms made with previous keys.
        policy: Option<Arc<Policy>>,
        previous: Option<serde_json::Map<String, serde_json::Value>>,
    },
    Rejected {
        error: EventError,
        raw: Raw,
    },
    /// Removed by the privacy policy: answered, counted, never written.
    Dropped {
        event_id: String,
        error: EventError,
    },
    Duplicate(String),
    Retry(String),
}

impl Pipeline {
    /// Processes one request's events; see the module docs for the steps.
    ///
    /// # Errors
    /// `idempotency_unavailable` (store down under `fail_closed`), `log_queue_full`,
    /// `log_unavailable`: in each case nothing of the request was acknowledged and the
    /// claims it took were released.
    pub async fn process(
        &self,
        source: &Source,
        api: Api,
        decoded: Decoded,
        request: RequestInfo<'_>,
    ) -> Result<IngestOutcome, ApiError> {
        let RequestInfo {
            received_at,
            request_id,
            edge_country,
            shadow,
        } = request;
        let unknown = if source.allow_unknown_events {
            UnknownEvents::Allow
        } else {
            UnknownEvents::Reject
        };
        let mut ignored_fields = 0;
        let mut slots: Vec<Slot> = decoded
            .items
            .into_iter()
            .map(|item| match item {
                Item::Invalid { error, raw } => Slot::Rejected { error, raw },
                Item::Event {
                    mut event,
                    sent_at,
                    client_id,
                    ignored_fields: ignored,
                } => {
                    ignored_fields += ignored;
                    let validated = match api {
                        Api::Native => self.schemas.validate_map(
                            &event.event_name,
                            event.schema_version,
                            &mut event.properties,
                            unknown,
                        ),
                        // Segment events carry no version: the newest one they satisfy.
                        Api::Segment => self
                            .schemas
                            .validate_newest_matching(
                                &event.event_name,
                                &mut event.properties,
                                unknown,
                            )
                            .map(|version| event.schema_version = version),
                    };
                    match validated.and_then(|()| self.timing(api, &event, sent_at, received_at)) {
                        Ok(timing) => {
                            self.apply_privacy(event, sent_at, timing, client_id, edge_country)
                        }
                        Err(error) => Slot::Rejected {
                            raw: Raw::from_value(serde_json::to_value(&event).unwrap_or_default()),
                            error,
                        },
                    }
                }
            })
            .collect();
        // What the quarantine keeps passes the same policy: no raw PII it names
        // reaches any file.
        if let Some(privacy) = &self.privacy {
            for slot in &mut slots {
                if let Slot::Rejected {
                    raw: Raw::Object(raw),
                    ..
                } = slot
                {
                    let empty = serde_json::Map::new();
                    let context = raw
                        .get("context")
                        .and_then(|c| c.as_object())
                        .unwrap_or(&empty);
                    let policy = privacy.policy_for(edge_country, context).clone();
                    privacy.apply_raw(&policy, raw);
                }
            }
        }
        if ignored_fields > 0 {
            self.metrics
                .client_server_fields
                .add(ignored_fields as u64, &[]);
        }

        // A repeated event_id inside one batch is a duplicate of its first occurrence.
        let mut repeated = Vec::new();
        {
            let mut seen = HashSet::with_capacity(slots.len());
            for (i, slot) in slots.iter().enumerate() {
                if let Slot::Valid {
                    event, check: true, ..
                } = slot
                    && !seen.insert(event.event_id.as_str())
                {
                    repeated.push(i);
                }
            }
        }
        for i in repeated {
            if let Slot::Valid { event, .. } = &mut slots[i] {
                slots[i] = Slot::Duplicate(std::mem::take(&mut event.event_id));
            }
        }

        // One claim for every event we can check.
        let mut keys = Vec::new();
        for slot in &mut slots {
            if let Slot::Valid {
                event,
                check: true,
                claim,
                ..
            } = slot
            {
                *claim = Some(keys.len());
                keys.push(format!("{}:{}", source.id, event.event_id));
            }
        }
        let mut claimed = Vec::new();
        if !keys.is_empty() {
            match self
                .store_call("claim", keys.len(), self.store.claim(&keys, request_id))
                .await
            {
                Ok(outcomes) => {
                    let mut counts = [0u64; 3];
                    for outcome in &outcomes {
                        counts[*outcome as usize] += 1;
                    }
                    for (result, count) in ["claimed", "duplicate", "in_flight"]
                        .into_iter()
                        .zip(counts)
                    {
                        self.count_keys(result, count);
                    }
                    for slot in &mut slots {
                        let Slot::Valid {
                            event,
                            claim: Some(i),
                            ..
                        } = slot
                        else {
                            continue;
                        };
                        match outcomes[*i] {
                            ClaimOutcome::Claimed => {}
                            ClaimOutcome::Duplicate => {
                                *slot = Slot::Duplicate(std::mem::take(&mut event.event_id))
                            }
                            ClaimOutcome::InFlight => {
                                *slot = Slot::Retry(std::mem::take(&mut event.event_id))
                            }
                        }
                    }
                    // Usually every key was claimed: hand the keys over without copying.
                    claimed = if outcomes.iter().all(|o| *o == ClaimOutcome::Claimed) {
                        keys
                    } else {
                        keys.into_iter()
                            .zip(&outcomes)
                            .filter(|(_, o)| **o == ClaimOutcome::Claimed)
                            .map(|(k, _)| k)
                            .collect()
                    };
                }
                Err(e) => match self.policy {
                    FailurePolicy::FailClosed => {
                        tracing::warn!(error = %e, "idempotency store unavailable; answering 503 (fail_closed)");
                        return Err(ApiError::IdempotencyUnavailable);
                    }
                    FailurePolicy::FailOpen => {
                        tracing::warn!(error = %e, "idempotency store unavailable; logging unchecked (fail_open)");
                        for slot in &mut slots {
                            if let Slot::Valid { dedupe, claim, .. } = slot
                                && claim.is_some()
                            {
                                *dedupe = Dedupe::Unchecked;
                                self.metrics
                                    .unchecked
                                    .add(1, &[KeyValue::new("reason", "store_unavailable")]);
                            }
                        }
                        // A claim that timed out may have landed all the same: the
                        // keys are then ours, pending. They are committed after the
                        // write (or released if it fails), best effort, so that
                        // retries are not refused as in flight for the claim TTL.
                        if e.timed_out {
                            claimed = keys;
                        }
                    }
                },
            }
        }

        let mut batch = self.serialize(&slots, source, api, received_at, request_id);
        batch.shadow = shadow;
        if !batch.is_empty()
            && let Err(e) = self.log.append(batch).await
        {
            // Claims of records that are durable all the same (a broker acknowledged
            // part of the batch) are committed: the client's retry then logs only the
            // rest. Every other claim is released so that the retry is not refused.
            let (commit, release) = match &e {
                LogError::Delivery {
                    delivered_events, ..
                } => split_delivered(&slots, claimed, delivered_events),
                _ => (Vec::new(), claimed),
            };
            if !commit.is_empty()
                && let Err(e) = self
                    .store_call(
                        "commit",
                        commit.len(),
                        self.store.commit(&commit, request_id),
                    )
                    .await
            {
                tracing::warn!(error = %e, "committing the claims of delivered records failed");
            }
            if !release.is_empty()
                && let Err(e) = self
                    .store_call(
                        "release",
                        release.len(),
                        self.store.release(&release, request_id),
                    )
                    .await
            {
                tracing::warn!(error = %e, "releasing claims failed; they expire after the claim TTL");
            }
            return Err(match e {
                LogError::QueueFull => ApiError::LogQueueFull,
                LogError::Closed => ApiError::ShuttingDown,
                LogError::Io(_) | LogError::Delivery { .. } => ApiError::LogUnavailable,
            });
        }
        if !claimed.is_empty()
            && let Err(e) = self
                .store_call(
                    "commit",
                    claimed.len(),
                    self.store.commit(&claimed, request_id),
                )
                .await
        {
            // The events are durable, so they stay accepted; only a retry within the
            // claim TTL could now log them twice.
            tracing::warn!(error = %e, "committing claims failed after a durable write");
        }
        Ok(self.outcome(slots, source, api))
    }

    /// The server-side timing of a valid event.
    ///
    /// # Errors
    /// `invalid_value` at the event's time field when skew correction leaves the years
    /// a timestamp can be written in.
    fn timing(
        &self,
        api: Api,
        event: &Event,
        sent_at: Option<OffsetDateTime>,
        received_at: OffsetDateTime,
    ) -> Result<Timing, EventError> {
        Timing::compute(
            event.timestamp_event,
            sent_at,
            received_at,
            self.allowed_lateness,
            self.future_tolerance,
        )
        .map_err(|e| {
            let path = match api {
                Api::Native => "/timestamp_event",
                Api::Segment => "/timestamp",
            };
            EventError::new(ErrorCode::InvalidValue, path, e.to_string())
        })
    }

    /// Applies the event's regional privacy policy: the event is kept (transformed),
    /// dropped (consent), or rejected to the quarantine.
    fn apply_privacy(
        &self,
        mut event: Event,
        sent_at: Option<OffsetDateTime>,
        timing: Timing,
        client_id: bool,
        edge_country: Option<&str>,
    ) -> Slot {
        let (policy, previous) = match &self.privacy {
            None => (None, None),
            Some(privacy) => {
                let policy = privacy.policy_for(edge_country, &event.context).clone();
                match privacy.apply(&policy, &mut event) {
                    Verdict::Keep { previous } => (Some(policy), previous),
                    Verdict::Drop { reason } => {
                        self.metrics
                            .privacy_drops
                            .add(1, &[KeyValue::new("reason", reason)]);
                        return Slot::Dropped {
                            event_id: std::mem::take(&mut event.event_id),
                            error: EventError::new(
                                ErrorCode::ConsentDenied,
                                "/consent",
                                format!(
                                    "policy {} requires consent this event does not grant; it was not stored",
                                    policy.id
                                ),
                            ),
                        };
                    }
                    // The event is untouched; its quarantine copy takes the policy
                    // with the other rejected events.
                    Verdict::Reject(error) => {
                        return Slot::Rejected {
                            raw: Raw::from_value(serde_json::to_value(&event).unwrap_or_default()),
                            error,
                        };
                    }
                }
            }
        };
        Slot::Valid {
            timing,
            event,
            sent_at,
            dedupe: if client_id {
                Dedupe::Checked
            } else {
                Dedupe::Unchecked
            },
            claim: None,
            check: client_id,
            policy,
            previous,
        }
    }

    /// Runs one store operation, timing it and counting its keys or its failure.
    pub(crate) async fn store_call<T>(
        &self,
        operation: &'static str,
        keys: usize,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        let store = KeyValue::new("store", self.store.name());
        let op = KeyValue::new("operation", operation);
        self.metrics.idempotency_duration.record(
            started.elapsed().as_secs_f64(),
            &[store.clone(), op.clone()],
        );
        match &result {
            Err(_) => self.metrics.idempotency_errors.add(1, &[store, op]),
            Ok(_) if operation == "commit" => self.count_keys("committed", keys as u64),
            Ok(_) if operation == "release" => self.count_keys("released", keys as u64),
            Ok(_) => {}
        }
        result
    }

    pub(crate) fn count_keys(&self, result: &'static str, count: u64) {
        if count > 0 {
            self.metrics.idempotency_keys.add(
                count,
                &[
                    KeyValue::new("store", self.store.name()),
                    KeyValue::new("result", result),
                ],
            );
        }
    }

    /// Serialises accepted records and quarantine records as NDJSON.
    fn serialize(
        &self,
        slots: &[Slot],
        source: &Source,
        api: Api,
        received_at: OffsetDateTime,
        request_id: &str,
    ) -> AppendBatch {
        let mut batch = AppendBatch::default();
        let key_field = self.log.record_meta();
        let mut meta = key_field.map(|_| BatchMeta {
            source: source.id.clone(),
            ..BatchMeta::default()
        });
        for (index, slot) in slots.iter().enumerate() {
            match slot {
                Slot::Valid {
                    event,
                    sent_at,
                    timing,
                    dedupe,
                    policy,
                    previous,
                    ..
                } => {
                    let record = Record {
                        event: Cow::Borrowed(event),
                        timestamp_server: received_at,
                        sent_at: *sent_at,
                        clock_skew_ms: timing.clock_skew_ms,
                        timestamp_derived: timing.timestamp_derived,
                        lateness_ms: timing.lateness_ms,
                        arrival: timing.arrival,
                        source: Cow::Borrowed(&source.id),
                        region: Cow::Borrowed(policy.as_ref().map_or(&self.region, |p| &p.region)),
                        privacy_policy: policy.as_ref().map(|p| Cow::Borrowed(p.id.as_str())),
                        privacy_key: self.privacy.as_ref().map(|p| Cow::Borrowed(p.key_id())),
                        pseudonyms_previous: previous.clone(),
                        dedupe: *dedupe,
                        api,
                        request_id: Cow::Borrowed(request_id),
                        collector_version: Cow::Borrowed(COLLECTOR_VERSION),
                    };
                    serde_json::to_writer(&mut batch.events, &record)
                        .expect("records serialize into a Vec");
                    batch.events.push(b'\n');
                    if let (Some(meta), Some(key_field)) = (&mut meta, key_field) {
                        meta.events.push(RecordMeta {
                            end: batch.events.len(),
                            key: partition_key(event, key_field).map(str::to_owned),
                            event_name: Some(event.event_name.clone()),
                            schema_version: Some(event.schema_version),
                            region: Some(record.region.clone().into_owned()),
                            error_code: None,
                        });
                    }
                }
                Slot::Rejected { error, raw } => {
                    let opaque;
                    let event = match raw {
                        Raw::Object(value) => value,
                        Raw::Opaque { bytes, sha256 } => {
                            opaque = self.opaque_view(*bytes, sha256);
                            &opaque
                        }
                    };
                    let record = QuarantineRecord {
                        timestamp_server: received_at,
                        source: Cow::Borrowed(&source.id),
                        api,
                        request_id: Cow::Borrowed(request_id),
                        index,
                        error: error.clone(),
                        event: Cow::Borrowed(event),
                        collector_version: Cow::Borrowed(COLLECTOR_VERSION),
                    };
                    serde_json::to_writer(&mut batch.quarantine, &record)
                        .expect("records serialize into a Vec");
                    batch.quarantine.push(b'\n');
                    if let Some(meta) = &mut meta {
                        meta.quarantine.push(RecordMeta {
                            end: batch.quarantine.len(),
                            key: None,
                            event_name: raw.text("event_name").map(str::to_owned),
                            schema_version: None,
                            region: None,
                            error_code: Some(error.code.as_str()),
                        });
                    }
                }
                Slot::Duplicate(_) | Slot::Retry(_) | Slot::Dropped { .. } => {}
            }
        }
        batch.meta = meta;
        batch
    }

    /// What the quarantine keeps of bytes the privacy policy could not see into: their
    /// length and a digest, keyed with the pseudonym key when there is one (so that
    /// nobody without the key can test guesses of the content against it).
    fn opaque_view(&self, bytes: usize, sha256: &[u8; 32]) -> serde_json::Value {
        let unparsed = match &self.privacy {
            Some(privacy) => {
                let (digest, key) = privacy.keyed_digest(sha256);
                serde_json::json!({"bytes": bytes, "hmac_sha256": digest, "privacy_key": key})
            }
            None => serde_json::json!({"bytes": bytes, "sha256": crate::privacy::hex(sha256)}),
        };
        serde_json::json!({ "unparsed": unparsed })
    }

    /// Data-quality metrics of a request's accepted and rejected events: segments,
    /// missing key fields, lateness, clock skew.
    fn observe_quality<'a>(&self, slots: &'a [Slot], labels: &SegmentLabels) {
        let known = |name: Option<&'a str>| -> &'a str {
            match name {
                Some(n) if self.schemas.contains(n) => n,
                _ => "other",
            }
        };
        let mut segments = Segments::default();
        let mut skew = None;
        for slot in slots {
            match slot {
                Slot::Valid { event, timing, .. } => {
                    let name = known(Some(&event.event_name));
                    segments.add(
                        "accepted",
                        name,
                        labels.platform(Some(&event.platform)),
                        event.app_version.as_deref(),
                    );
                    skew = skew.or(timing.clock_skew_ms);
                    self.metrics
                        .lateness
                        .record(timing.lateness_ms.max(0) as f64 / 1000.0, &[]);
                    let empty = |v: Option<&str>| v.is_none_or(str::is_empty);
                    let mut missing: Vec<&str> = [
                        ("user_id", empty(event.user_id.as_deref())),
                        ("device_id", empty(event.device_id.as_deref())),
                        ("session_id", empty(event.session_id.as_deref())),
                    ]
                    .into_iter()
                    .filter(|(_, m)| *m)
                    .map(|(f, _)| f)
                    .collect();
                    for field in self.schemas.required_ids(&event.event_name) {
                        let value = event.properties.get(field);
                        if value.is_none_or(|v| v.is_null() || v.as_str() == Some("")) {
                            missing.push(field);
                        }
                    }
                    for field in missing {
                        self.metrics.fields_missing.add(
                            1,
                            &[
                                KeyValue::new("event_name", name.to_owned()),
                                KeyValue::new("field", field.to_owned()),
                            ],
                        );
                    }
                }
                Slot::Rejected { raw, .. } => {
                    let text = |key: &str| raw.text(key);
                    segments.add(
                        "rejected",
                        known(text("event_name")),
                        labels.platform(text("platform")),
                        text("app_version"),
                    );
                }
                _ => {}
            }
        }
        segments.record(&self.metrics.events_by_segment, labels);
        if let Some(ms) = skew {
            self.metrics
                .clock_skew
                .record(ms.unsigned_abs() as f64 / 1000.0, &[]);
        }
    }

    /// Builds the per-event answer and counts it.
    fn outcome(&self, slots: Vec<Slot>, source: &Source, api: Api) -> IngestOutcome {
        let mut outcome = IngestOutcome {
            answer: Answer {
                results: Vec::with_capacity(slots.len()),
                ..Answer::default()
            },
            policies: Vec::with_capacity(slots.len()),
        };
        let mut arrivals = [0u64; 3];
        if let Some(labels) = &self.labels {
            self.observe_quality(&slots, labels);
        }
        let result = |event_id, status, error| EventResult {
            event_id,
            status,
            error,
        };
        for slot in slots {
            let (result, policy) = match slot {
                Slot::Valid {
                    event,
                    timing,
                    policy,
                    ..
                } => {
                    arrivals[timing.arrival as usize] += 1;
                    (result(Some(event.event_id), Status::Accepted, None), policy)
                }
                Slot::Rejected { error, raw } => {
                    let id = raw.text("event_id").map(str::to_owned);
                    (result(id, Status::Rejected, Some(error)), None)
                }
                Slot::Dropped { event_id, error } => {
                    (result(Some(event_id), Status::Rejected, Some(error)), None)
                }
                Slot::Duplicate(id) => (result(Some(id), Status::Duplicate, None), None),
                Slot::Retry(id) => (result(Some(id), Status::Retry, None), None),
            };
            let answer = &mut outcome.answer;
            match result.status {
                Status::Accepted => answer.accepted += 1,
                Status::Duplicate => answer.duplicate += 1,
                Status::Rejected => answer.rejected += 1,
                Status::Retry => answer.retry += 1,
            }
            if let Some(error) = &result.error {
                self.metrics
                    .rejections
                    .add(1, &[KeyValue::new("code", error.code.as_str())]);
            }
            answer.results.push(result);
            outcome.policies.push(policy);
        }
        let answer = &outcome.answer;
        for (status, count) in [
            (Status::Accepted, answer.accepted),
            (Status::Duplicate, answer.duplicate),
            (Status::Rejected, answer.rejected),
            (Status::Retry, answer.retry),
        ] {
            if count > 0 {
                self.metrics.events.add(
                    count as u64,
                    &[
                        KeyValue::new("outcome", status.as_str()),
                        KeyValue::new("api", api.as_str()),
                        source.label.clone(),
                    ],
                );
            }
        }
        for (arrival, count) in [Arrival::OnTime, Arrival::Late, Arrival::Future]
            .into_iter()
            .zip(arrivals)
        {
            if count > 0 {
                self.metrics
                    .arrivals
                    .add(count, &[KeyValue::new("arrival", arrival.as_str())]);
            }
        }
        outcome
    }
}

/// The value of the field that keys an event's record in a partitioned log.
fn partition_key(event: &Event, key: PartitionKey) -> Option<&str> {
    match key {
        PartitionKey::UserId => event.user_id.as_deref().or(event.device_id.as_deref()),
        PartitionKey::DeviceId => event.device_id.as_deref(),
        PartitionKey::SessionId => event.session_id.as_deref(),
        PartitionKey::EventId => Some(&event.event_id),
    }
}

/// Splits a request's claimed keys into those whose records a broker acknowledged
/// (`delivered`, by position among the accepted records) and the rest.
///
/// The claimed keys are in the order of the claimed valid slots, and the accepted
/// records in the order of all valid slots, so one walk pairs them.
fn split_delivered(
    slots: &[Slot],
    claimed: Vec<String>,
    delivered: &[bool],
) -> (Vec<String>, Vec<String>) {
    let mut keys = claimed.into_iter();
    let (mut commit, mut release) = (Vec::new(), Vec::new());
    let valid = slots.iter().filter_map(|slot| match slot {
        Slot::Valid { claim, .. } => Some(claim.is_some()),
        _ => None,
    });
    for (record, was_claimed) in valid.enumerate() {
        if !was_claimed {
            continue;
        }
        let Some(key) = keys.next() else { break };
        if delivered.get(record).copied().unwrap_or(false) {
            commit.push(key);
        } else {
            release.push(key);
        }
    }
    release.extend(keys);
    (commit, release)
}
