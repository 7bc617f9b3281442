//! Stage 1, admission: each decoded event is validated against its schema, timed
//! against the server clock and passed through its regional privacy policy. What the
//! quarantine will keep of rejected events passes the same policy.

use opentelemetry::KeyValue;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use tollgate_event::{Api, Dedupe, ErrorCode, Event, EventError, Timing};

use super::slot::Slot;
use super::{Decoded, Item, Pipeline, Raw, ReplayItem, RequestInfo, Source};
use crate::privacy::{Privacy, Pseudonyms, Verdict};
use crate::rules::Rules;
use crate::schema::UnknownEvents;
use crate::schema::candidate::{Candidate, Verdicts};

/// Where an event's privacy policy comes from.
enum Judged<'a> {
    /// A new event: the policy of its region, applied now.
    Now { edge_country: Option<&'a str> },
    /// A replayed one: the policy its quarantine copy passed.
    Before(&'a ReplayItem),
}

/// What admission found of a valid event before its privacy policy.
struct Admitted {
    sent_at: Option<OffsetDateTime>,
    timing: Timing,
    /// Whether the client gave the event's id (so it is claimed).
    client_id: bool,
}

impl Pipeline {
    /// One slot per decoded item, in request order.
    pub(super) fn admit(
        &self,
        rules: &Rules,
        source: &Source,
        api: Api,
        decoded: Decoded,
        request: RequestInfo<'_>,
    ) -> Vec<Slot> {
        let RequestInfo {
            received_at,
            edge_country,
            replay,
            ..
        } = request;
        let unknown = if source.allow_unknown_events {
            UnknownEvents::Allow
        } else {
            UnknownEvents::Reject
        };
        let schemas = &rules.schemas;
        let privacy = rules.privacy.as_ref();
        let mut ignored_fields = 0;
        let mut pseudonyms = Pseudonyms::default();
        let mut slots: Vec<Slot> = decoded
            .items
            .into_iter()
            .enumerate()
            .map(|(index, item)| match item {
                Item::Invalid { error, raw } => Slot::Rejected {
                    error,
                    raw,
                    policy: None,
                },
                Item::Event {
                    mut event,
                    sent_at,
                    client_id,
                    versioned,
                    ignored_fields: ignored,
                } => {
                    ignored_fields += ignored;
                    let validated = if versioned {
                        schemas.validate_map(
                            &event.event_name,
                            event.schema_version,
                            &mut event.properties,
                            unknown,
                        )
                    } else {
                        // Segment and PostHog events carry no version: the newest one
                        // they satisfy.
                        schemas
                            .validate_newest_matching(
                                &event.event_name,
                                &mut event.properties,
                                unknown,
                            )
                            .map(|version| event.schema_version = version)
                    };
                    if let Some(candidate) = schemas.candidate(&event.event_name) {
                        self.try_candidate(candidate, &mut event.properties, &validated);
                    }
                    // A replayed event keeps the time its own request arrived.
                    let received_at = replay.map_or(received_at, |r| r.items[index].received_at);
                    match validated.and_then(|()| self.timing(api, &event, sent_at, received_at)) {
                        Ok(timing) => {
                            let admitted = Admitted {
                                sent_at,
                                timing,
                                client_id,
                            };
                            let judged = match replay {
                                Some(replay) => Judged::Before(&replay.items[index]),
                                None => Judged::Now { edge_country },
                            };
                            self.apply_privacy(privacy, event, admitted, judged, &mut pseudonyms)
                        }
                        Err(error) => Slot::Rejected {
                            raw: Raw::from_value(serde_json::to_value(&event).unwrap_or_default()),
                            error,
                            policy: None,
                        },
                    }
                }
            })
            .collect();
        if let Some(privacy) = privacy
            && replay.is_none()
        {
            scrub_rejected(privacy, &mut slots, edge_country);
        }
        if ignored_fields > 0 {
            self.metrics
                .client_server_fields
                .add(ignored_fields as u64, &[]);
        }
        slots
    }

    /// Checks an event's properties against its event's candidate schema too, and
    /// counts both verdicts; decides nothing. Events the live schemas did not judge
    /// (rejected earlier for another reason) are not counted.
    fn try_candidate(
        &self,
        candidate: &Candidate,
        properties: &mut Map<String, Value>,
        live: &Result<(), EventError>,
    ) {
        let live_accepted = match live {
            Ok(()) => true,
            Err(e)
                if matches!(
                    e.code,
                    ErrorCode::SchemaViolation
                        | ErrorCode::UnknownSchemaVersion
                        | ErrorCode::UnknownEvent
                ) =>
            {
                false
            }
            Err(_) => return,
        };
        crate::schema::as_value(properties, |value| {
            // Counted by the candidate itself; /metrics reads those counts when scraped.
            let verdicts = candidate.observe(value, live_accepted);
            if verdicts == Verdicts::WouldReject {
                let event = KeyValue::new("event", candidate.event.clone());
                let version = KeyValue::new("version", i64::from(candidate.version));
                let mut errors = candidate.errors(value);
                candidate.count_errors(&mut errors);
                for (field, keyword) in errors {
                    self.metrics.candidate_errors.add(
                        1,
                        &[
                            event.clone(),
                            version.clone(),
                            KeyValue::new("field", field),
                            KeyValue::new("keyword", keyword),
                        ],
                    );
                }
            }
        });
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
                Api::Segment | Api::PostHog => "/timestamp",
                Api::Snowplow => "/dtm",
            };
            EventError::new(ErrorCode::InvalidValue, path, e.to_string())
        })
    }

    /// Applies the event's regional privacy policy: the event is kept (transformed),
    /// dropped (consent), or rejected to the quarantine.
    fn apply_privacy(
        &self,
        privacy: Option<&Privacy>,
        mut event: Event,
        admitted: Admitted,
        judged: Judged<'_>,
        pseudonyms: &mut Pseudonyms,
    ) -> Slot {
        let Admitted {
            sent_at,
            timing,
            client_id,
        } = admitted;
        let applied = match (privacy, judged) {
            (None, _) | (_, Judged::Before(ReplayItem { policy: None, .. })) => None,
            (Some(privacy), Judged::Now { edge_country }) => {
                let policy = privacy.policy_for(edge_country, &event.context).clone();
                let verdict = privacy.apply_with(&policy, &mut event, pseudonyms);
                Some((policy, verdict))
            }
            (
                Some(privacy),
                Judged::Before(ReplayItem {
                    policy: Some(policy),
                    ..
                }),
            ) => Some((policy.clone(), privacy.judge_replayed(policy, &mut event))),
        };
        let (policy, previous) = match applied {
            None => (None, None),
            Some((policy, verdict)) => {
                match verdict {
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
                            policy: None,
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
}

/// What the quarantine keeps passes the same policy: no raw PII it names reaches any
/// file.
fn scrub_rejected(privacy: &Privacy, slots: &mut [Slot], edge_country: Option<&str>) {
    for slot in slots {
        if let Slot::Rejected {
            raw: Raw::Object(raw),
            policy: applied,
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
            *applied = Some(policy);
        }
    }
}
