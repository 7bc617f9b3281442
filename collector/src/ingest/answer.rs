//! Stage 4, the answer: one result per event in request order, counted in metrics,
//! with the data-quality view of the request.

use opentelemetry::KeyValue;
use tollgate_event::{Api, Arrival};

use super::slot::Slot;
use super::{Answer, EventResult, IngestOutcome, Pipeline, Source, Status};
use crate::schema::SchemaRegistry;
use crate::telemetry::quality::{SegmentLabels, Segments};

impl Pipeline {
    /// Data-quality metrics of a request's accepted and rejected events: segments,
    /// missing key fields, lateness, clock skew. Runs after the log's wait, on events
    /// [`super::slot::shed`] has trimmed: it may read only what that keeps.
    fn observe_quality<'a>(
        &self,
        schemas: &SchemaRegistry,
        slots: &'a [Slot],
        labels: &SegmentLabels,
    ) {
        let known = |name: Option<&'a str>| -> &'a str {
            match name {
                Some(n) if schemas.contains(n) => n,
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
                    for field in schemas.required_ids(&event.event_name) {
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
    pub(super) fn outcome(
        &self,
        schemas: &SchemaRegistry,
        slots: Vec<Slot>,
        source: &Source,
        api: Api,
    ) -> IngestOutcome {
        let mut outcome = IngestOutcome {
            answer: Answer {
                results: Vec::with_capacity(slots.len()),
                ..Answer::default()
            },
            policies: Vec::with_capacity(slots.len()),
        };
        let mut arrivals = [0u64; 3];
        if let Some(labels) = &self.labels {
            self.observe_quality(schemas, &slots, labels);
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
                Slot::Rejected { error, raw, .. } => {
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
