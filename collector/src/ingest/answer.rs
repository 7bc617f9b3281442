//! Stage 4, the answer: one result per event in request order, counted in metrics,
//! with the data-quality view of the request.
//!
//! The answer is built in two steps around the claim's and the log's waits.
//! [`Pipeline::settle`] runs right after the records are serialised, while the
//! request's events are still in cache, as if every claim will hold: it takes from
//! each event what the answer and the metrics need and frees the rest (with many
//! requests in flight, an event kept across a wait has left the caches by the time it
//! is read or freed again); [`Settled::unclaim`] corrects it for claims that did not
//! hold. [`Pipeline::count`] runs once the records are durable: it counts what
//! `settle` kept and returns the answer. A request whose write fails is answered with
//! an error and counts nothing.

use opentelemetry::KeyValue;
use tollgate_event::{Api, Arrival, Event, Timing};

use super::slot::Slot;
use super::{Answer, EventResult, IngestOutcome, Pipeline, Raw, Source, Status};
use crate::dedupe::ClaimOutcome;
use crate::schema::SchemaRegistry;
use crate::telemetry::quality::{SegmentLabels, Segments};

/// A request's answer before its records are durable, and what it will count.
pub(super) struct Settled<'a> {
    outcome: IngestOutcome,
    /// Per record of an accepted event, in order: whether its id was claimed (which
    /// claims a partial delivery commits).
    pub(super) claimed_records: Vec<bool>,
    /// Per claimed event, in claim order: its slot, its record, its arrival; for
    /// [`Settled::unclaim`].
    claims: Vec<(usize, usize, Arrival)>,
    /// Accepted events by [`Arrival`].
    arrivals: [u64; 3],
    quality: Option<Quality<'a>>,
}

impl Settled<'_> {
    /// Adds to the quality view the accepted events whose claims held: right after
    /// the claim, while they are still in cache (not after the log's wait).
    pub(super) fn fold(&mut self) {
        if let Some(quality) = &mut self.quality {
            quality.fold();
        }
    }

    /// Turns the accepted events whose claim did not hold into `duplicate` (already
    /// logged) or `retry` (another request is writing them): their results, counts and
    /// quality facts. Returns, per record, whether it must be dropped from the batch.
    pub(super) fn unclaim(&mut self, outcomes: &[ClaimOutcome]) -> Vec<bool> {
        let mut dropped = vec![false; self.claimed_records.len()];
        for (&(slot, record, arrival), outcome) in self.claims.iter().zip(outcomes) {
            let answer = &mut self.outcome.answer;
            let status = match outcome {
                ClaimOutcome::Claimed => continue,
                ClaimOutcome::Duplicate => {
                    answer.duplicate += 1;
                    Status::Duplicate
                }
                ClaimOutcome::InFlight => {
                    answer.retry += 1;
                    Status::Retry
                }
            };
            answer.accepted -= 1;
            answer.results[slot].status = status;
            self.outcome.policies[slot] = None;
            self.arrivals[arrival as usize] -= 1;
            if let Some(quality) = &mut self.quality {
                quality.accepted[record] = None;
            }
            dropped[record] = true;
        }
        let mut record = 0;
        self.claimed_records.retain(|_| {
            record += 1;
            !dropped[record - 1]
        });
        dropped
    }
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
    /// What each accepted event will add, in record order, folded in by
    /// [`Quality::fold`] once the claim has said which events stay accepted (`None`:
    /// it did not).
    accepted: Vec<Option<Accepted<'a>>>,
}

/// The event name's label: the registry's own name, or `other`.
fn known<'a>(schemas: &'a SchemaRegistry, name: Option<&str>) -> &'a str {
    name.and_then(|n| schemas.name(n)).unwrap_or("other")
}

/// What the metrics will count of one accepted event.
struct Accepted<'a> {
    name: &'a str,
    platform: &'a str,
    app_version: Option<String>,
    skew: Option<i64>,
    lateness_ms: i64,
    /// Key fields it left empty: `user_id`, `device_id`, `session_id`, then its
    /// schema's required ids (`required`), one bit each (a schema's ids past the
    /// 61st are not tracked).
    missing: u64,
    required: &'a [String],
}

const KEY_FIELDS: [&str; 3] = ["user_id", "device_id", "session_id"];

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
            claims: Vec::new(),
            arrivals: [0; 3],
            quality: self.labels.as_ref().map(|_| Quality {
                accepted: Vec::with_capacity(slots.len()),
                ..Quality::default()
            }),
        };
        let result = |event_id, status, error| EventResult {
            event_id,
            status,
            error,
        };
        for (index, slot) in slots.into_iter().enumerate() {
            let (result, policy) = match slot {
                Slot::Valid {
                    mut event,
                    timing,
                    policy,
                    claim,
                    ..
                } => {
                    if let (Some(quality), Some(labels)) = (&mut settled.quality, &self.labels) {
                        quality.accept(schemas, labels, &mut event, &timing);
                    }
                    settled.arrivals[timing.arrival as usize] += 1;
                    if claim.is_some() {
                        let record = settled.claimed_records.len();
                        settled.claims.push((index, record, timing.arrival));
                    }
                    settled.claimed_records.push(claim.is_some());
                    (result(Some(event.event_id), Status::Accepted, None), policy)
                }
                Slot::Rejected { error, raw, .. } => {
                    if let (Some(quality), Some(labels)) = (&mut settled.quality, &self.labels) {
                        quality.reject(schemas, labels, &raw);
                    }
                    let id = raw.text("event_id").map(str::to_owned);
                    (result(id, Status::Rejected, Some(error)), None)
                }
                Slot::Dropped { event_id, error } => {
                    (result(Some(event_id), Status::Rejected, Some(error)), None)
                }
                Slot::Duplicate(id) => (result(Some(id), Status::Duplicate, None), None),
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
    /// Notes what the metrics will count of an accepted event, unless its claim fails
    /// (the event keeps its `event_id`; its app version is moved here).
    fn accept(
        &mut self,
        schemas: &'a SchemaRegistry,
        labels: &'a SegmentLabels,
        event: &mut Event,
        timing: &Timing,
    ) {
        let name = known(schemas, Some(&event.event_name));
        let mut missing = 0u64;
        // In the order of KEY_FIELDS.
        let key_fields = [&event.user_id, &event.device_id, &event.session_id];
        for (bit, value) in key_fields.into_iter().enumerate() {
            let absent = value.as_deref().is_none_or(str::is_empty);
            missing |= u64::from(absent) << bit;
        }
        let required = schemas.required_ids(&event.event_name);
        for (bit, field) in required.iter().take(61).enumerate() {
            let value = event.properties.get(field);
            let absent = value.is_none_or(|v| v.is_null() || v.as_str() == Some(""));
            missing |= u64::from(absent) << (KEY_FIELDS.len() + bit);
        }
        self.accepted.push(Some(Accepted {
            name,
            platform: labels.platform(Some(&event.platform)),
            app_version: event.app_version.take(),
            skew: timing.clock_skew_ms,
            lateness_ms: timing.lateness_ms,
            missing,
            required,
        }));
    }

    /// Notes what the metrics will count of a rejected event.
    fn reject(&mut self, schemas: &'a SchemaRegistry, labels: &'a SegmentLabels, raw: &Raw) {
        let text = |key: &str| raw.text(key);
        self.segments.add(
            "rejected",
            known(schemas, text("event_name")),
            labels.platform(text("platform")),
            text("app_version"),
        );
    }

    /// Adds the accepted events whose claims held.
    fn fold(&mut self) {
        for event in std::mem::take(&mut self.accepted).into_iter().flatten() {
            self.segments.add(
                "accepted",
                event.name,
                event.platform,
                event.app_version.as_deref(),
            );
            self.skew = self.skew.or(event.skew);
            self.lateness.push(event.lateness_ms.max(0) as f64 / 1000.0);
            let fields = KEY_FIELDS
                .into_iter()
                .chain(event.required.iter().map(String::as_str));
            for (bit, field) in fields.enumerate().take(64) {
                if event.missing & (1 << bit) != 0 {
                    self.add_missing(event.name, field);
                }
            }
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
            let Slot::Valid {
                mut event, timing, ..
            } = slot(json!({
                "event_id": format!("quality-{item_id}-{name}"), "event_name": name,
                "schema_version": 1, "device_id": "d-1", "platform": platform,
                "timestamp_event": "2026-12-01T10:00:00Z", "app_version": "5.12.0",
                "properties": {"item_id": item_id, "ranking_request_id": "r-1", "position": 3}
            }))
            else {
                unreachable!()
            };
            quality.accept(&schemas, &labels, &mut event, &timing);
            drop(event);
        }
        quality.fold();
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
