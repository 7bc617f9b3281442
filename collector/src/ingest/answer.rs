//! Stage 4, the answer: one result per event in request order, counted in metrics,
//! with the data-quality view of the request.
//!
//! The answer is built in two steps around the log's wait. [`Pipeline::settle`] runs
//! right after the records are serialised, while the request's events are still in
//! cache: it takes from each event what the answer and the metrics need and frees the
//! rest (with many requests in flight, an event kept across the wait has left the
//! caches by the time it is read or freed again). [`Pipeline::count`] runs once the
//! records are durable: it counts what `settle` kept and returns the answer. A request
//! whose write fails is answered with an error and counts nothing.

use opentelemetry::KeyValue;
use tollgate_event::{Api, Arrival};

use super::slot::Slot;
use super::{Answer, EventResult, IngestOutcome, Pipeline, Source, Status};
use crate::schema::SchemaRegistry;
use crate::telemetry::quality::{SegmentLabels, Segments};

/// A request's answer before its records are durable, and what it will count.
pub(super) struct Settled<'a> {
    outcome: IngestOutcome,
    /// Per record of an accepted event, in order: whether its id was claimed (which
    /// claims a partial delivery commits).
    pub(super) claimed_records: Vec<bool>,
    /// Accepted events by [`Arrival`].
    arrivals: [u64; 3],
    quality: Option<Quality<'a>>,
}

/// The data-quality view of a request, with labels that outlive its events.
#[derive(Default)]
struct Quality<'a> {
    segments: Segments<'a>,
    /// Lateness of each accepted event, in seconds.
    lateness: Vec<f64>,
    /// The first clock skew of the request, in milliseconds.
    skew: Option<i64>,
    /// Empty key fields: (event name label, field) and how many events of the request
    /// had that field empty (one counter update each, not one per event).
    missing: Vec<((&'a str, &'a str), u64)>,
}

impl Pipeline {
    /// Builds the answer from the request's slots and frees them; counts nothing.
    pub(super) fn settle<'a>(
        &'a self,
        schemas: &'a SchemaRegistry,
        slots: Vec<Slot>,
    ) -> Settled<'a> {
        let mut settled = Settled {
            outcome: IngestOutcome {
                answer: Answer {
                    results: Vec::with_capacity(slots.len()),
                    ..Answer::default()
                },
                policies: Vec::with_capacity(slots.len()),
            },
            claimed_records: Vec::with_capacity(slots.len()),
            arrivals: [0; 3],
            quality: self.labels.as_ref().map(|_| Quality::default()),
        };
        let result = |event_id, status, error| EventResult {
            event_id,
            status,
            error,
        };
        for slot in slots {
            if let (Some(quality), Some(labels)) = (&mut settled.quality, &self.labels) {
                quality.observe(schemas, labels, &slot);
            }
            let (result, policy) = match slot {
                Slot::Valid {
                    event,
                    timing,
                    policy,
                    claim,
                    ..
                } => {
                    settled.arrivals[timing.arrival as usize] += 1;
                    settled.claimed_records.push(claim.is_some());
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
            let answer = &mut settled.outcome.answer;
            match result.status {
                Status::Accepted => answer.accepted += 1,
                Status::Duplicate => answer.duplicate += 1,
                Status::Rejected => answer.rejected += 1,
                Status::Retry => answer.retry += 1,
            }
            answer.results.push(result);
            settled.outcome.policies.push(policy);
        }
        settled
    }

    /// Counts a settled answer whose records are durable, and returns it.
    pub(super) fn count(&self, settled: Settled<'_>, source: &Source, api: Api) -> IngestOutcome {
        let Settled {
            outcome,
            arrivals,
            quality,
            ..
        } = settled;
        if let (Some(quality), Some(labels)) = (quality, &self.labels) {
            self.record_quality(quality, labels);
        }
        let answer = &outcome.answer;
        for error in answer.results.iter().filter_map(|r| r.error.as_ref()) {
            self.metrics
                .rejections
                .add(1, &[KeyValue::new("code", error.code.as_str())]);
        }
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

    /// Data-quality metrics of a request's accepted and rejected events: segments,
    /// missing key fields, lateness, clock skew.
    fn record_quality(&self, quality: Quality<'_>, labels: &SegmentLabels) {
        quality
            .segments
            .record(&self.metrics.events_by_segment, labels);
        for seconds in quality.lateness {
            self.metrics.lateness.record(seconds, &[]);
        }
        for ((name, field), count) in quality.missing {
            self.metrics.fields_missing.add(
                count,
                &[
                    KeyValue::new("event_name", name.to_owned()),
                    KeyValue::new("field", field.to_owned()),
                ],
            );
        }
        if let Some(ms) = quality.skew {
            self.metrics
                .clock_skew
                .record(ms.unsigned_abs() as f64 / 1000.0, &[]);
        }
    }
}

impl<'a> Quality<'a> {
    /// Notes what the metrics will count of one slot.
    fn observe(&mut self, schemas: &'a SchemaRegistry, labels: &'a SegmentLabels, slot: &Slot) {
        let known = |name: Option<&str>| name.and_then(|n| schemas.name(n)).unwrap_or("other");
        match slot {
            Slot::Valid { event, timing, .. } => {
                let name = known(Some(&event.event_name));
                self.segments.add(
                    "accepted",
                    name,
                    labels.platform(Some(&event.platform)),
                    event.app_version.as_deref(),
                );
                self.skew = self.skew.or(timing.clock_skew_ms);
                self.lateness
                    .push(timing.lateness_ms.max(0) as f64 / 1000.0);
                let empty = |v: Option<&str>| v.is_none_or(str::is_empty);
                for (field, missing) in [
                    ("user_id", empty(event.user_id.as_deref())),
                    ("device_id", empty(event.device_id.as_deref())),
                    ("session_id", empty(event.session_id.as_deref())),
                ] {
                    if missing {
                        self.add_missing(name, field);
                    }
                }
                for field in schemas.required_ids(&event.event_name) {
                    let value = event.properties.get(field);
                    if value.is_none_or(|v| v.is_null() || v.as_str() == Some("")) {
                        self.add_missing(name, field);
                    }
                }
            }
            Slot::Rejected { raw, .. } => {
                let text = |key: &str| raw.text(key);
                self.segments.add(
                    "rejected",
                    known(text("event_name")),
                    labels.platform(text("platform")),
                    text("app_version"),
                );
            }
            _ => {}
        }
    }

    fn add_missing(&mut self, name: &'a str, field: &'a str) {
        match self
            .missing
            .iter_mut()
            .find(|(key, _)| *key == (name, field))
        {
            Some((_, count)) => *count += 1,
            None => self.missing.push(((name, field), 1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tollgate_event::{Arrival, Dedupe, Platforms, Timing};

    use super::*;

    fn slot(event: serde_json::Value) -> Slot {
        let (event, _) =
            tollgate_event::parse_event_str(&event.to_string(), &Platforms::default()).unwrap();
        Slot::Valid {
            timing: Timing {
                clock_skew_ms: Some(-1500),
                timestamp_derived: event.timestamp_event,
                lateness_ms: 2500,
                arrival: Arrival::Late,
            },
            event,
            sent_at: None,
            dedupe: Dedupe::Checked,
            claim: Some(0),
            check: true,
            policy: None,
            previous: None,
        }
    }

    /// `settle` frees a request's events before the log's wait, so what it keeps for
    /// the metrics must not borrow from them: labels come from the registry and the
    /// configuration (this test drops each event before reading the view).
    #[test]
    fn the_quality_view_outlives_the_events_it_was_taken_from() {
        let schemas = SchemaRegistry::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/schemas"),
        )
        .unwrap();
        let labels = SegmentLabels::new(Platforms::new(["ios", "android"]), 5);
        let mut quality = Quality::default();
        for (name, platform, item_id) in [
            ("item_view", "ios", "item-1"),
            ("item_view", "ios", ""),
            ("not_registered", "web", "item-2"),
        ] {
            let event = slot(json!({
                "event_id": format!("quality-{item_id}-{name}"), "event_name": name,
                "schema_version": 1, "device_id": "d-1", "platform": platform,
                "timestamp_event": "2026-12-01T10:00:00Z", "app_version": "5.12.0",
                "properties": {"item_id": item_id, "ranking_request_id": "r-1", "position": 3}
            }));
            quality.observe(&schemas, &labels, &event);
            drop(event);
        }
        let groups: Vec<_> = quality
            .segments
            .groups()
            .iter()
            .map(|((outcome, name, platform, version), n)| {
                (*outcome, *name, *platform, version.as_deref(), *n)
            })
            .collect();
        assert_eq!(
            groups,
            [
                ("accepted", "item_view", "ios", Some("5.12.0"), 2),
                ("accepted", "other", "other", Some("5.12.0"), 1)
            ]
        );
        assert_eq!(
            quality.missing,
            [
                (("item_view", "user_id"), 2),
                (("item_view", "session_id"), 2),
                (("item_view", "item_id"), 1),
                (("other", "user_id"), 1),
                (("other", "session_id"), 1),
            ]
        );
        assert_eq!(quality.lateness, [2.5, 2.5, 2.5]);
        assert_eq!(quality.skew, Some(-1500));
    }
}
