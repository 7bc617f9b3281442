//! From request bytes to events: the native envelope, NDJSON, Segment bodies, and the
//! PostHog and Snowplow protocols (`decode/posthog.rs`, `decode/snowplow.rs`).
//!
//! A body that is not JSON, or not the right shape as a whole, fails the request (400).
//! Inside a well-formed body every event stands alone: one that breaks a rule becomes an
//! [`Item::Invalid`] with its reason, and the others go on.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use tollgate_event::event::parse_timestamp;
use tollgate_event::segment::{BatchDefaults, CallType, map_message, native_names};
use tollgate_event::{
    ErrorCode, Event, EventError, Platforms, TypedEvent, json_error_message, parse_event_str,
    parse_event_text,
};

use crate::error::ApiError;

mod posthog;
mod snowplow;

pub use posthog::{PostHogRequest, posthog};
pub use snowplow::{SnowplowRequest, snowplow_get, snowplow_post};

/// One event of a request, parsed against the base event model.
#[derive(Debug)]
// The large variant is the common one (a valid event); boxing it would cost an
// allocation per event on the hot path.
#[allow(clippy::large_enum_variant)]
pub enum Item {
    Event {
        event: Event,
        /// The client's send time for this event (envelope, header or Segment `sentAt`).
        sent_at: Option<OffsetDateTime>,
        /// False when the `event_id` was made by the server (Segment without
        /// `messageId`): it cannot recognise a retry, so it is not deduplicated.
        client_id: bool,
        /// The event named its schema version (native events, Snowplow
        /// self-describing events); otherwise the newest version its properties
        /// satisfy is taken.
        versioned: bool,
        /// Server-owned fields the client sent, ignored.
        ignored_fields: usize,
    },
    Invalid {
        error: EventError,
        /// What the quarantine may keep of the event.
        raw: Raw,
    },
}

impl Item {
    /// A valid native event (its id the client's, its schema version named) and the
    /// count of server-owned fields it carried.
    fn native((event, ignored_fields): (Event, usize), sent_at: Option<OffsetDateTime>) -> Item {
        Item::Event {
            event,
            sent_at,
            client_id: true,
            versioned: true,
            ignored_fields,
        }
    }
}

/// A rejected event as the quarantine may keep it: what the privacy policy can see
/// into, and for anything else only its size and a digest.
#[derive(Debug)]
pub enum Raw {
    /// The event as received, a JSON object (always `Value::Object`) under native
    /// field names (a Segment message is renamed by [`native_names`]); the policy runs
    /// over it before writing.
    Object(Value),
    /// Bytes the policy cannot see into (not JSON, or JSON that is not an object): they
    /// are never stored, only their length and SHA-256 (keyed again before writing).
    Opaque { bytes: usize, sha256: [u8; 32] },
}

impl Raw {
    /// The quarantine's view of an event's text.
    pub fn from_text(text: &[u8]) -> Raw {
        match serde_json::from_slice::<Value>(text) {
            Ok(Value::Object(map)) => Raw::from_object(map),
            _ => Raw::opaque(text),
        }
    }

    /// The quarantine's view of another protocol's message text, renamed to native
    /// fields by `rename`.
    fn from_foreign_text(
        text: &[u8],
        rename: impl FnOnce(Map<String, Value>) -> Map<String, Value>,
    ) -> Raw {
        match serde_json::from_slice::<Value>(text) {
            Ok(Value::Object(map)) => Raw::from_object(rename(map)),
            _ => Raw::opaque(text),
        }
    }

    /// A parsed event (a `Value::Object`, or anything else as opaque bytes).
    pub fn from_value(value: Value) -> Raw {
        match value {
            Value::Object(map) => Raw::from_object(map),
            other => Raw::opaque(other.to_string().as_bytes()),
        }
    }

    fn from_object(mut map: Map<String, Value>) -> Raw {
        // A write key never reaches the log, whatever field a client put it in.
        map.remove("writeKey");
        map.remove("write_key");
        Raw::Object(Value::Object(map))
    }

    fn opaque(text: &[u8]) -> Raw {
        use sha2::Digest;
        Raw::Opaque {
            bytes: text.len(),
            sha256: sha2::Sha256::digest(text).into(),
        }
    }

    /// A top-level string field, for answers and metric labels.
    pub fn text(&self, field: &str) -> Option<&str> {
        match self {
            Raw::Object(value) => value.get(field).and_then(Value::as_str),
            Raw::Opaque { .. } => None,
        }
    }
}

/// A request's events, plus what in the body says who sent them.
#[derive(Debug, Default)]
pub struct Decoded {
    pub items: Vec<Item>,
    /// A write key carried in the body (Segment allows that; PostHog's API key).
    pub body_write_key: Option<String>,
    /// The Snowplow app ids of the events (`None`: an event without one), which select
    /// the source; empty for the other protocols.
    pub app_ids: std::collections::BTreeSet<Option<String>>,
}

/// What decoding needs to know.
pub struct DecodeLimits<'a> {
    pub max_event_bytes: usize,
    pub max_events: usize,
    pub platforms: &'a Platforms,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    #[serde(default, borrow)]
    sent_at: Option<Cow<'a, str>>,
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

/// [`Envelope`] with its events read by the typed event parser in the same pass.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TypedEnvelope<'a> {
    #[serde(default, borrow)]
    sent_at: Option<Cow<'a, str>>,
    #[serde(borrow)]
    events: Vec<TypedEvent<'a>>,
}

#[derive(Deserialize)]
struct SegmentBatch<'a> {
    #[serde(borrow)]
    batch: Vec<&'a RawValue>,
    #[serde(default, rename = "sentAt", borrow)]
    sent_at: Option<Cow<'a, str>>,
    #[serde(default)]
    context: Option<Map<String, Value>>,
    #[serde(default, rename = "writeKey")]
    write_key: Option<String>,
}

/// Parses a whole request body. Its UTF-8 is checked once, so that no string of it (nor
/// of the events later parsed from its slices) is checked again; a body that is not
/// UTF-8 goes to the byte parser, which names where.
fn parse_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(body) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(body),
    }
}

/// Decodes a native JSON envelope `{"sent_at": …, "events": […]}`.
///
/// # Errors
/// Malformed JSON, a body that is not an envelope, a bad `sent_at`, too many events.
pub fn native_json(body: &[u8], limits: &DecodeLimits<'_>) -> Result<Decoded, ApiError> {
    if let Some(decoded) = std::str::from_utf8(body)
        .ok()
        .and_then(|text| native_json_one_pass(text, limits))
    {
        return Ok(decoded);
    }
    native_json_general(body, limits)
}

/// [`native_json`] in one pass over the body, for the common case: a body no larger
/// than one event may be (so no event in it is too large), within the event count,
/// with a good `sent_at`, whose every event the typed parser takes and the rules
/// accept. `None` for anything else, which the general path then decodes (and, if
/// need be, refuses or rejects with the reason), so both paths give the same answer
/// for every body; a body that is not the common case costs one more parse.
fn native_json_one_pass(text: &str, limits: &DecodeLimits<'_>) -> Option<Decoded> {
    if text.len() > limits.max_event_bytes {
        return None;
    }
    let envelope: TypedEnvelope<'_> = serde_json::from_str(text).ok()?;
    if envelope.events.len() > limits.max_events {
        return None;
    }
    let sent_at = match envelope.sent_at.as_deref() {
        Some(s) => Some(parse_timestamp(s, "/sent_at").ok()?),
        None => None,
    };
    let mut items = Vec::with_capacity(envelope.events.len());
    for typed in envelope.events {
        items.push(Item::native(typed.finish(limits.platforms).ok()?, sent_at));
    }
    Some(Decoded {
        items,
        ..Decoded::default()
    })
}

/// [`native_json`] for any body: parsed into raw events first, then each event.
fn native_json_general(body: &[u8], limits: &DecodeLimits<'_>) -> Result<Decoded, ApiError> {
    let envelope: Envelope<'_> = parse_body(body).map_err(shape_error)?;
    check_count(envelope.events.len(), limits)?;
    let sent_at = envelope
        .sent_at
        .as_deref()
        .map(|s| parse_timestamp(s, "/sent_at").map_err(|_| ApiError::InvalidSentAt))
        .transpose()?;
    let items = envelope
        .events
        .iter()
        .map(|raw| {
            let text = raw.get();
            native_event(text.as_bytes(), sent_at, limits, || {
                parse_event_str(text, limits.platforms)
            })
        })
        .collect();
    Ok(Decoded {
        items,
        ..Decoded::default()
    })
}

/// Decodes NDJSON: one native event per line, `sent_at` from a header. A line that is
/// not JSON rejects that event only.
///
/// # Errors
/// A bad `sent_at` header, too many events.
pub fn native_ndjson(
    body: &[u8],
    sent_at_header: Option<&str>,
    limits: &DecodeLimits<'_>,
) -> Result<Decoded, ApiError> {
    let sent_at = sent_at_header
        .map(|s| parse_timestamp(s.trim(), "sent_at").map_err(|_| ApiError::InvalidSentAt))
        .transpose()?;
    let lines: Vec<&[u8]> = body
        .split(|b| *b == b'\n')
        .filter(|line| !line.trim_ascii().is_empty())
        .collect();
    check_count(lines.len(), limits)?;
    let items = lines
        .into_iter()
        .map(|line| {
            native_event(line, sent_at, limits, || {
                parse_event_text(line, limits.platforms)
            })
        })
        .collect();
    Ok(Decoded {
        items,
        ..Decoded::default()
    })
}

/// One native event of `text`, parsed by `parse` unless it is too large.
fn native_event(
    text: &[u8],
    sent_at: Option<OffsetDateTime>,
    limits: &DecodeLimits<'_>,
    parse: impl FnOnce() -> Result<(Event, usize), EventError>,
) -> Item {
    if text.len() > limits.max_event_bytes {
        return Item::Invalid {
            error: too_large_error(text.len(), limits.max_event_bytes),
            raw: Raw::from_text(text),
        };
    }
    match parse() {
        Ok(parsed) => Item::native(parsed, sent_at),
        // Parse again for the quarantine: only rejected events pay for it.
        Err(error) => Item::Invalid {
            error,
            raw: Raw::from_text(text),
        },
    }
}

/// Decodes a Segment body: `/v1/batch` when `route` is `None`, else one call.
///
/// # Errors
/// Malformed JSON, a body that is not a Segment batch or message, too many events.
pub fn segment(
    body: &[u8],
    route: Option<CallType>,
    received_at: OffsetDateTime,
    limits: &DecodeLimits<'_>,
) -> Result<Decoded, ApiError> {
    let server_id = || uuid::Uuid::now_v7().to_string();
    // A message that fails its mapping keeps its text for the quarantine, parsed again
    // (renamed to native fields): only rejected messages pay for it.
    let map = |value: Value, defaults: BatchDefaults<'_>, text: &[u8]| {
        mapped_item(
            map_message(value, route, defaults, received_at, &server_id),
            text,
            native_names,
        )
    };
    let too_large = |text: &[u8]| Item::Invalid {
        error: too_large_error(text.len(), limits.max_event_bytes),
        raw: Raw::from_foreign_text(text, native_names),
    };
    match route {
        None => {
            let batch: SegmentBatch<'_> = parse_body(body).map_err(shape_error)?;
            check_count(batch.batch.len(), limits)?;
            let sent_at = batch
                .sent_at
                .as_deref()
                .map(|s| parse_timestamp(s, "/sentAt").map_err(|_| ApiError::InvalidSentAt))
                .transpose()?;
            let defaults = BatchDefaults {
                context: batch.context.as_ref(),
                sent_at,
            };
            let items = batch
                .batch
                .iter()
                .map(|raw| {
                    let (text, bytes) = (raw.get(), raw.get().as_bytes());
                    if bytes.len() > limits.max_event_bytes {
                        return too_large(bytes);
                    }
                    match serde_json::from_str::<Value>(text) {
                        Ok(value) => map(value, defaults, bytes),
                        Err(e) => unparsable(bytes, &e),
                    }
                })
                .collect();
            Ok(Decoded {
                items,
                body_write_key: batch.write_key,
                ..Decoded::default()
            })
        }
        Some(_) => {
            let mut value: Value = serde_json::from_slice(body).map_err(shape_error)?;
            let Some(object) = value.as_object_mut() else {
                return Err(ApiError::InvalidEnvelope(
                    "a Segment call body must be a JSON object".into(),
                ));
            };
            let body_write_key = match object.remove("writeKey") {
                Some(Value::String(key)) => Some(key),
                _ => None,
            };
            let item = if body.len() > limits.max_event_bytes {
                too_large(body)
            } else {
                map(value, BatchDefaults::default(), body)
            };
            Ok(Decoded {
                items: vec![item],
                body_write_key,
                ..Decoded::default()
            })
        }
    }
}

/// The item of another protocol's mapped message; a message that failed its mapping
/// keeps its text for the quarantine, parsed again and renamed to native fields by
/// `rename` (only rejected messages pay for it).
fn mapped_item(
    mapped: Result<tollgate_event::mapped::Mapped, EventError>,
    text: &[u8],
    rename: impl FnOnce(Map<String, Value>) -> Map<String, Value>,
) -> Item {
    match mapped {
        Ok(mapped) => Item::Event {
            event: mapped.event,
            sent_at: mapped.sent_at,
            client_id: mapped.client_event_id,
            versioned: mapped.versioned,
            ignored_fields: 0,
        },
        Err(error) => Item::Invalid {
            error,
            raw: Raw::from_foreign_text(text, rename),
        },
    }
}

/// A message that is not JSON: rejected alone, and never stored (only its size and
/// digest).
fn unparsable(text: &[u8], e: &serde_json::Error) -> Item {
    Item::Invalid {
        error: EventError::new(ErrorCode::InvalidEvent, "", json_error_message(e)),
        raw: Raw::opaque(text),
    }
}

fn too_large_error(bytes: usize, max: usize) -> EventError {
    EventError::new(
        ErrorCode::EventTooLarge,
        "",
        format!("the event is {bytes} bytes; at most {max} are accepted"),
    )
}

fn check_count(count: usize, limits: &DecodeLimits<'_>) -> Result<(), ApiError> {
    if count > limits.max_events {
        Err(ApiError::TooManyEvents {
            count,
            max: limits.max_events,
        })
    } else {
        Ok(())
    }
}

/// Syntax errors are `malformed_json`; valid JSON of the wrong shape is `invalid_envelope`.
fn shape_error(e: serde_json::Error) -> ApiError {
    let message = json_error_message(&e);
    match e.classify() {
        serde_json::error::Category::Data => ApiError::InvalidEnvelope(message),
        _ => ApiError::MalformedJson(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Events up to `max_event_bytes`, at most five.
    fn limits(platforms: &Platforms, max_event_bytes: usize) -> DecodeLimits<'_> {
        DecodeLimits {
            max_event_bytes,
            max_events: 5,
            platforms,
        }
    }

    fn event(id: &str, tricky: &str) -> String {
        let props = serde_json::json!({"item_id": tricky, "nested": {"a": [tricky, {}]}});
        format!(
            r#"{{"event_id":"{id}","event_name":"item_view","schema_version":1,"device_id":"d-1","timestamp_event":"2026-11-29T10:00:00Z","platform":"ios","properties":{props}}}"#
        )
    }

    #[test]
    fn plain_bodies_take_the_one_pass_path() {
        let platforms = Platforms::default();
        let body = format!(
            r#"{{"sent_at":"2026-11-29T10:00:01Z","events":[{},{}]}}"#,
            event("evt-00000001", r#"}{"\"#),
            event("evt-00000002", "x"),
        );
        let decoded = native_json_one_pass(&body, &limits(&platforms, 32 << 10)).expect("taken");
        assert_eq!(decoded.items.len(), 2);
        assert!(matches!(&decoded.items[0], Item::Event { event, .. }
            if event.properties["item_id"] == r#"}{"\"#));
    }

    fn body() -> impl Strategy<Value = String> {
        // The last one makes an event too large for the small limit below.
        let long = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
        let tricky = prop::sample::select(vec!["x", "}", "{", "\"", "\\", "]", "\\\"}", long]);
        // Some events break a rule on values (an unknown platform).
        let one = (0u32..20, tricky, prop::bool::weighted(0.1)).prop_map(|(n, t, bad)| {
            let event = event(&format!("evt-{n:08}"), t);
            if bad {
                event.replace(r#""platform":"ios""#, r#""platform":"nope""#)
            } else {
                event
            }
        });
        (
            prop::collection::vec(one, 0..7),
            any::<bool>(),
            prop::sample::select(vec!["", " ", "\n\t"]),
            prop::option::of(prop::sample::select(vec![
                r#""2026-11-29T10:00:01Z""#,
                "null",
                r#""not a time""#,
                "7",
            ])),
        )
            .prop_map(|(events, sent_first, ws, sent_at)| {
                let events = format!(
                    "{ws}\"events\"{ws}:{ws}[{}]",
                    events.join(&format!(",{ws}"))
                );
                let sent_at = sent_at.map(|s| format!("\"sent_at\":{ws}{s}"));
                match (sent_at, sent_first) {
                    (None, _) => format!("{{{events}}}"),
                    (Some(s), true) => format!("{ws}{{{s},{events}}}{ws}"),
                    (Some(s), false) => format!("{{{events},{ws}{s}}}"),
                }
            })
    }

    proptest! {
        /// Every body, plain or damaged, gets the same answer on both paths.
        #[test]
        fn one_pass_and_general_paths_agree(
            body in body(),
            cut in any::<prop::sample::Index>(),
            insert in prop::sample::select(vec!["", "}", "{", "\"", ",", "]", "x", "\\"]),
        ) {
            let platforms = Platforms::default();
            let mut damaged = body.clone();
            if !insert.is_empty() {
                let at = cut.index(body.len() + 1);
                if damaged.is_char_boundary(at) {
                    damaged.insert_str(at, insert);
                }
            }
            // Bodies the one pass may take, and bodies where some events are too large.
            for limits in [limits(&platforms, 32 << 10), limits(&platforms, 260)] {
                for text in [&body, &damaged] {
                    prop_assert_eq!(
                        format!("{:?}", native_json(text.as_bytes(), &limits)),
                        format!("{:?}", native_json_general(text.as_bytes(), &limits)),
                        "{}", text
                    );
                }
            }
        }
    }
}
