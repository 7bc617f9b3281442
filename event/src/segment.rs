//! Segment HTTP Tracking API messages mapped onto the native [`Event`].
//!
//! Unmodified Segment and RudderStack SDKs post here, so the mapping never rejects a
//! message for a field Segment itself does not require: a missing `messageId` gets a
//! server id (and the record is marked `dedupe: unchecked`), a missing `timestamp`
//! takes the server time, an unknown platform becomes `unknown`.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::error::{ErrorCode, EventError};
use crate::event::{Event, parse_timestamp};
pub use crate::mapped::{Mapped, snake_case};
use crate::mapped::{id_value, object};

/// The Segment call types, one per route (`/v1/track`, …) or per `type` in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallType {
    Track,
    Identify,
    Page,
    Screen,
    Group,
    Alias,
}

impl CallType {
    pub fn from_name(name: &str) -> Option<CallType> {
        Some(match name {
            "track" => CallType::Track,
            "identify" => CallType::Identify,
            "page" => CallType::Page,
            "screen" => CallType::Screen,
            "group" => CallType::Group,
            "alias" => CallType::Alias,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CallType::Track => "track",
            CallType::Identify => "identify",
            CallType::Page => "page",
            CallType::Screen => "screen",
            CallType::Group => "group",
            CallType::Alias => "alias",
        }
    }
}

/// What a batch shares with each of its messages.
#[derive(Debug, Default, Clone, Copy)]
pub struct BatchDefaults<'a> {
    /// `context` of the batch object, merged under each message's own context.
    pub context: Option<&'a Map<String, Value>>,
    pub sent_at: Option<OffsetDateTime>,
}

/// Maps one Segment message.
///
/// `route_type` is the call type of a single-call route; in a batch it is `None` and
/// the message's `type` decides. `server_id` supplies an id when the message has no
/// `messageId`. `schema_version` is left at 1: the collector sets the version when it
/// validates the properties.
///
/// # Errors
/// Only for what Segment itself requires: a JSON object, a known `type`, `event` on a
/// track call, a `userId` or `anonymousId`, and well-formed timestamps.
pub fn map_message(
    value: Value,
    route_type: Option<CallType>,
    defaults: BatchDefaults<'_>,
    received_at: OffsetDateTime,
    server_id: &dyn Fn() -> String,
) -> Result<Mapped, EventError> {
    let mut msg = object(value, "a Segment message")?;
    let call = match (route_type, msg.get("type")) {
        (Some(call), _) => call,
        (None, Some(Value::String(t))) => CallType::from_name(t).ok_or_else(|| {
            EventError::new(
                ErrorCode::InvalidValue,
                "/type",
                "`type` must be one of track, identify, page, screen, group, alias",
            )
        })?,
        (None, Some(_)) => return Err(EventError::wrong_type("/type", "a string")),
        (None, None) => return Err(EventError::missing("type")),
    };

    let event_name = match call {
        CallType::Track => match msg.remove("event") {
            Some(Value::String(name)) => {
                let name = snake_case(&name);
                if name.is_empty() {
                    return Err(EventError::new(
                        ErrorCode::InvalidValue,
                        "/event",
                        "`event` must contain a letter or digit",
                    ));
                }
                name
            }
            None | Some(Value::Null) => return Err(EventError::missing("event")),
            Some(_) => return Err(EventError::wrong_type("/event", "a string")),
        },
        other => other.as_str().to_owned(),
    };

    let user_id = id_field(&mut msg, "userId")?;
    let device_id = id_field(&mut msg, "anonymousId")?;
    if user_id.is_none() && device_id.is_none() {
        return Err(EventError::new(
            ErrorCode::MissingField,
            "/userId",
            "a Segment message needs `userId` or `anonymousId`",
        ));
    }
    let (event_id, client_event_id) = match msg.remove("messageId") {
        Some(Value::String(id)) if !id.is_empty() => (id, true),
        None | Some(Value::Null) => (server_id(), false),
        Some(Value::String(_)) => (server_id(), false),
        Some(_) => return Err(EventError::wrong_type("/messageId", "a string")),
    };
    let timestamp_event = match msg.remove("timestamp") {
        None | Some(Value::Null) => received_at,
        Some(Value::String(s)) => parse_timestamp(&s, "/timestamp")?,
        Some(_) => return Err(EventError::wrong_type("/timestamp", "an ISO 8601 string")),
    };
    let sent_at = match msg.remove("sentAt") {
        None | Some(Value::Null) => defaults.sent_at,
        Some(Value::String(s)) => Some(parse_timestamp(&s, "/sentAt")?),
        Some(_) => return Err(EventError::wrong_type("/sentAt", "an ISO 8601 string")),
    };

    let mut context = match msg.remove("context") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(obj)) => obj,
        Some(_) => return Err(EventError::wrong_type("/context", "an object")),
    };
    if let Some(shared) = defaults.context {
        for (k, v) in shared {
            context.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let platform = platform_of(&context).to_owned();
    let app_version = context
        .get("app")
        .and_then(|app| app.get("version"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let consent = consent_of(&context);
    native_context(&mut context);

    let mut properties = match call {
        CallType::Identify | CallType::Group => object_field(&mut msg, "traits")?,
        _ => object_field(&mut msg, "properties")?,
    };
    match call {
        CallType::Page | CallType::Screen => {
            for (from, to) in [("name", "name"), ("category", "category")] {
                if let Some(v) = msg.remove(from).filter(|v| !v.is_null()) {
                    properties.entry(to).or_insert(v);
                }
            }
        }
        CallType::Group => {
            if let Some(v) = msg.remove("groupId").filter(|v| !v.is_null()) {
                properties.insert("group_id".into(), v);
            }
        }
        CallType::Alias => {
            if let Some(v) = msg.remove("previousId").filter(|v| !v.is_null()) {
                properties.insert("previous_id".into(), v);
            }
        }
        CallType::Track | CallType::Identify => {}
    }

    Ok(Mapped {
        event: Event {
            event_id,
            event_name,
            // Segment messages carry no version: the collector sets the newest one the
            // properties satisfy when it validates them.
            schema_version: 1,
            user_id,
            device_id,
            session_id: None,
            timestamp_event,
            surface: None,
            app_version,
            platform,
            experiment_ids: Vec::new(),
            consent,
            context,
            properties,
        },
        client_event_id,
        sent_at,
        versioned: false,
    })
}

/// A Segment message that could not be mapped, renamed field by field to the native
/// names so that the privacy policy (whose paths are native: `user_id`,
/// `context.ip`, `properties.email`) applies to its quarantine copy exactly as to an
/// accepted event. Nothing is validated; fields without a native name keep theirs, and
/// a `writeKey` is removed (a write key never reaches the log).
pub fn native_names(mut msg: Map<String, Value>) -> Map<String, Value> {
    msg.remove("writeKey");
    let mut out = Map::new();
    for (from, to) in [
        ("messageId", "event_id"),
        ("userId", "user_id"),
        ("anonymousId", "device_id"),
        ("timestamp", "timestamp_event"),
        ("sentAt", "sent_at"),
    ] {
        if let Some(value) = msg.remove(from) {
            out.insert(to.into(), value);
        }
    }
    match msg.remove("event") {
        Some(Value::String(name)) => {
            out.insert("event_name".into(), Value::String(snake_case(&name)));
        }
        Some(other) => {
            out.insert("event_name".into(), other);
        }
        None => {}
    }
    match msg.remove("context") {
        Some(Value::Object(mut context)) => {
            native_context(&mut context);
            out.insert("context".into(), Value::Object(context));
        }
        Some(other) => {
            out.insert("context".into(), other);
        }
        None => {}
    }
    // Traits and properties both become `properties`; when a message has both and
    // either is not an object, the second is kept under its own name.
    for field in ["properties", "traits"] {
        let Some(value) = msg.remove(field) else {
            continue;
        };
        match (out.get_mut("properties"), value) {
            (Some(Value::Object(properties)), Value::Object(more)) => {
                for (k, v) in more {
                    properties.entry(k).or_insert(v);
                }
            }
            (None, value) => {
                out.insert("properties".into(), value);
            }
            (Some(_), value) => {
                out.insert(field.into(), value);
            }
        }
    }
    for (k, v) in msg {
        out.entry(k).or_insert(v);
    }
    out
}

/// The native names of a Segment `context`'s fields that the privacy policy reads:
/// `userAgent` → `user_agent`, and `location.country` → `country` (the region) unless
/// `country` is set.
fn native_context(context: &mut Map<String, Value>) {
    if let Some(ua) = context.remove("userAgent") {
        context.insert("user_agent".into(), ua);
    }
    if let Some(country) = context
        .get("location")
        .and_then(|l| l.get("country"))
        .cloned()
    {
        context.entry("country").or_insert(country);
    }
}

/// Guesses the platform from what Segment SDKs put in `context`, else `unknown`.
fn platform_of(context: &Map<String, Value>) -> &'static str {
    let text = |outer: &str, inner: &str| {
        context
            .get(outer)
            .and_then(|o| o.get(inner))
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
    };
    let by_name = |name: &str| -> Option<&'static str> {
        let n = name.trim_start_matches("@segment/");
        if n.contains("ios") || n.contains("ipados") || n.contains("swift") {
            Some("ios")
        } else if n.contains("android") || n.contains("kotlin") {
            Some("android")
        } else if n.contains("analytics.js")
            || n.contains("analytics-next")
            || n.contains("rudder-sdk-js")
            || n == "web"
        {
            Some("web")
        } else if [
            "node", "python", "ruby", "go", "java", "php", ".net", "server",
        ]
        .iter()
        .any(|s| n.contains(s))
        {
            Some("server")
        } else {
            None
        }
    };
    text("device", "type")
        .and_then(|t| by_name(&t))
        .or_else(|| text("os", "name").and_then(|t| by_name(&t)))
        .or_else(|| text("library", "name").and_then(|t| by_name(&t)))
        .unwrap_or("unknown")
}

/// Segment's consent integration: `context.consent.categoryPreferences`.
fn consent_of(context: &Map<String, Value>) -> BTreeMap<String, bool> {
    context
        .get("consent")
        .and_then(|c| c.get("categoryPreferences"))
        .and_then(Value::as_object)
        .map(|prefs| {
            prefs
                .iter()
                .filter_map(|(k, v)| Some((snake_case(k), v.as_bool()?)))
                .collect()
        })
        .unwrap_or_default()
}

fn id_field(msg: &mut Map<String, Value>, field: &str) -> Result<Option<String>, EventError> {
    id_value(msg.remove(field), &format!("/{field}"))
}

fn object_field(
    msg: &mut Map<String, Value>,
    field: &str,
) -> Result<Map<String, Value>, EventError> {
    match msg.remove(field) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(obj)) => Ok(obj),
        Some(_) => Err(EventError::wrong_type(format!("/{field}"), "an object")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    fn map(v: Value, route: Option<CallType>) -> Result<Mapped, EventError> {
        map_message(
            v,
            route,
            BatchDefaults::default(),
            datetime!(2026-11-29 12:00 UTC),
            &|| "server-generated-id".to_owned(),
        )
    }

    #[test]
    fn track_maps_every_field() {
        let m = map(
            json!({
                "type": "track",
                "event": "Order Completed",
                "messageId": "ajs-next-1700000000000-abc",
                "userId": "u1",
                "anonymousId": "a1",
                "timestamp": "2026-11-29T11:59:00.000Z",
                "sentAt": "2026-11-29T11:59:30.000Z",
                "context": {
                    "app": {"version": "4.2.0"},
                    "os": {"name": "iOS"},
                    "ip": "203.0.113.7",
                    "userAgent": "Mozilla/5.0",
                    "locale": "en-US",
                    "consent": {"categoryPreferences": {"Advertising": false, "Analytics": true}}
                },
                "properties": {"revenue": 12.5}
            }),
            None,
        )
        .unwrap();
        let e = &m.event;
        assert_eq!(e.event_name, "order_completed");
        assert_eq!(e.event_id, "ajs-next-1700000000000-abc");
        assert!(m.client_event_id);
        assert_eq!(e.user_id.as_deref(), Some("u1"));
        assert_eq!(e.device_id.as_deref(), Some("a1"));
        assert_eq!(e.platform, "ios");
        assert_eq!(e.app_version.as_deref(), Some("4.2.0"));
        assert_eq!(e.timestamp_event, datetime!(2026-11-29 11:59 UTC));
        assert_eq!(m.sent_at, Some(datetime!(2026-11-29 11:59:30 UTC)));
        assert_eq!(e.context["ip"], "203.0.113.7");
        assert_eq!(e.context["user_agent"], "Mozilla/5.0");
        assert_eq!(e.properties["revenue"], 12.5);
        assert_eq!(e.consent.get("advertising"), Some(&false));
        assert_eq!(e.consent.get("analytics"), Some(&true));
    }

    #[test]
    fn missing_optional_fields_are_filled_not_rejected() {
        let m = map(json!({"anonymousId": "a1"}), Some(CallType::Identify)).unwrap();
        assert_eq!(m.event.event_name, "identify");
        assert_eq!(m.event.event_id, "server-generated-id");
        assert!(!m.client_event_id);
        assert_eq!(m.event.platform, "unknown");
        assert_eq!(m.event.timestamp_event, datetime!(2026-11-29 12:00 UTC));
    }

    #[test]
    fn what_segment_requires_is_required() {
        assert_eq!(
            map(json!({"type": "track", "userId": "u"}), None)
                .unwrap_err()
                .path,
            "/event"
        );
        assert_eq!(
            map(json!({"type": "track", "event": "x"}), None)
                .unwrap_err()
                .path,
            "/userId"
        );
        assert_eq!(
            map(json!({"userId": "u"}), None).unwrap_err().code,
            ErrorCode::MissingField
        );
        assert_eq!(
            map(json!({"type": "bogus", "userId": "u"}), None)
                .unwrap_err()
                .path,
            "/type"
        );
    }

    #[test]
    fn call_specific_fields_land_in_properties() {
        let g = map(
            json!({"type": "group", "userId": "u", "groupId": "g1", "traits": {"plan": "pro"}}),
            None,
        )
        .unwrap();
        assert_eq!(g.event.properties["group_id"], "g1");
        assert_eq!(g.event.properties["plan"], "pro");
        let a = map(
            json!({"type": "alias", "userId": "u", "previousId": "old"}),
            None,
        )
        .unwrap();
        assert_eq!(a.event.properties["previous_id"], "old");
        let p = map(json!({"type": "page", "userId": "u", "name": "Home", "context": {"library": {"name": "analytics.js"}}}), None).unwrap();
        assert_eq!(p.event.properties["name"], "Home");
        assert_eq!(p.event.platform, "web");
    }

    #[test]
    fn rejected_messages_are_renamed_for_the_policy() {
        let Value::Object(msg) = json!({
            "type": "identify",
            "writeKey": "wk_secret",
            "userId": "u1",
            "anonymousId": "a1",
            "messageId": "m-1",
            "timestamp": "not a time",
            "context": {"ip": "203.0.113.7", "userAgent": "UA", "location": {"country": "DE"}},
            "traits": {"email": "jane@example.com"},
            "properties": {"plan": "pro"}
        }) else {
            unreachable!()
        };
        let native = Value::Object(native_names(msg));
        assert_eq!(native["user_id"], "u1");
        assert_eq!(native["device_id"], "a1");
        assert_eq!(native["event_id"], "m-1");
        assert_eq!(native["timestamp_event"], "not a time");
        assert_eq!(native["context"]["country"], "DE");
        assert_eq!(native["context"]["user_agent"], "UA");
        assert_eq!(native["properties"]["email"], "jane@example.com");
        assert_eq!(native["properties"]["plan"], "pro");
        assert!(native.get("writeKey").is_none());
        assert!(!native.to_string().contains("wk_secret"));
    }
}
