//! One event on its way through the pipeline: what each stage knows about it.

use std::sync::Arc;

use time::OffsetDateTime;
use tollgate_event::{Dedupe, Event, EventError, Timing};

use super::Raw;
use crate::privacy::Policy;
use crate::schema::SchemaRegistry;

/// An event between stages. Admission makes it `Valid`, `Rejected` or `Dropped`; the
/// claim may turn a `Valid` one into `Duplicate` or `Retry`; the writer logs `Valid`
/// and `Rejected` ones; the answer has one result per slot, in request order.
// The large variant is the common one (a valid event); boxing it would cost an
// allocation per event on the hot path.
#[allow(clippy::large_enum_variant)]
pub(super) enum Slot {
    Valid {
        event: Event,
        sent_at: Option<OffsetDateTime>,
        timing: Timing,
        dedupe: Dedupe,
        /// Index into the request's claim keys, when the event was claimed.
        claim: Option<usize>,
        /// Its `event_id` came from the client, so a retry can be recognised.
        check: bool,
        /// The privacy policy applied, and the pseudonyms made with previous keys.
        policy: Option<Arc<Policy>>,
        previous: Option<serde_json::Map<String, serde_json::Value>>,
    },
    Rejected {
        error: EventError,
        raw: Raw,
        /// The policy `raw` passed before the quarantine (none for bytes it could not
        /// see into).
        policy: Option<Arc<Policy>>,
    },
    /// Removed by the privacy policy: answered, counted, never written.
    Dropped {
        event_id: String,
        error: EventError,
    },
    Duplicate(String),
    Retry(String),
}

/// Frees what only the records needed, once they are in bytes and while it is still in
/// cache, so that a request holds less memory while it waits for the log (with 64
/// requests in flight, their events outgrow the CPU's caches, and a tree dropped after
/// the wait costs a cache miss per node). What stays is what the answer and the
/// data-quality metrics read: ids, name, platform, app version, timing, policy, and of
/// the properties only the ids the event's schema requires (`quality`: the schemas,
/// when the data-quality metrics are on).
pub(super) fn shed(slots: &mut [Slot], quality: Option<&SchemaRegistry>) {
    for slot in slots {
        if let Slot::Valid {
            event, previous, ..
        } = slot
        {
            drop(std::mem::take(&mut event.context));
            drop(std::mem::take(&mut event.experiment_ids));
            drop(std::mem::take(&mut event.consent));
            drop(event.surface.take());
            drop(previous.take());
            match quality {
                Some(schemas) => {
                    let ids = schemas.required_ids(&event.event_name);
                    event
                        .properties
                        .retain(|key, _| ids.iter().any(|id| id == key));
                }
                None => drop(std::mem::take(&mut event.properties)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tollgate_event::{Arrival, Platforms};

    fn valid() -> Slot {
        let text = json!({
            "event_id": "shed-0001", "event_name": "item_view", "schema_version": 1,
            "device_id": "d-1", "timestamp_event": "2026-12-01T10:00:00Z", "platform": "ios",
            "surface": "home_feed", "experiment_ids": ["ranker_v7"], "consent": {"analytics": true},
            "context": {"ip": "203.0.113.7"},
            "properties": {"item_id": "item-1", "position": 3}
        })
        .to_string();
        let (event, _) = tollgate_event::parse_event_str(&text, &Platforms::default()).unwrap();
        Slot::Valid {
            timing: Timing {
                clock_skew_ms: None,
                timestamp_derived: event.timestamp_event,
                lateness_ms: 0,
                arrival: Arrival::OnTime,
            },
            event,
            sent_at: None,
            dedupe: Dedupe::Checked,
            claim: Some(0),
            check: true,
            policy: None,
            previous: Some(serde_json::Map::new()),
        }
    }

    #[test]
    fn shedding_keeps_what_the_answer_and_the_quality_metrics_read() {
        let schemas = SchemaRegistry::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/schemas"),
        )
        .unwrap();
        for (quality, kept) in [(Some(&schemas), vec!["item_id"]), (None, vec![])] {
            let mut slots = [valid()];
            shed(&mut slots, quality);
            let Slot::Valid {
                event,
                previous,
                claim,
                ..
            } = &slots[0]
            else {
                unreachable!()
            };
            assert!(event.context.is_empty() && event.consent.is_empty());
            assert!(event.experiment_ids.is_empty() && event.surface.is_none());
            assert!(previous.is_none());
            let properties: Vec<&str> = event.properties.keys().map(String::as_str).collect();
            assert_eq!(properties, kept);
            assert_eq!(
                (
                    event.event_id.as_str(),
                    event.event_name.as_str(),
                    event.platform.as_str(),
                    event.device_id.as_deref(),
                    *claim
                ),
                ("shed-0001", "item_view", "ios", Some("d-1"), Some(0))
            );
        }
    }
}
