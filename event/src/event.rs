//! The native event and its parser.
//!
//! The parser takes an already-parsed `serde_json::Value` and moves its parts into an
//! [`Event`] without copying `context` or `properties`. It is deliberately hand-written
//! rather than derived: every rejection must name the exact field (a JSON pointer) and a
//! stable code, which serde's derive errors do not give.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{ErrorCode, EventError};

/// Fields the collector computes itself. A client that sends them is ignored, never
/// trusted (a client clock cannot vouch for server time).
pub const SERVER_FIELDS: &[&str] = &[
    "timestamp_server",
    "sent_at",
    "clock_skew_ms",
    "timestamp_derived",
    "lateness_ms",
    "arrival",
    "source",
    "region",
    "privacy_policy",
    "privacy_key",
    "pseudonyms_previous",
    "dedupe",
    "collector_version",
    "schema_set",
    "replayed_at",
    "replay_of",
    "request_id",
    "api",
];

/// Longest accepted `event_id`, `user_id`, `device_id`, `session_id` (bytes).
const MAX_ID_LEN: usize = 128;
const MIN_EVENT_ID_LEN: usize = 8;
const MAX_NAME_LEN: usize = 128;

/// One behavioural event, as validated against the base event model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The idempotency key: retries of the same event carry the same id.
    pub event_id: String,
    /// snake_case name; selects the schema.
    pub event_name: String,
    /// Version of the event's schema the client logged against.
    pub schema_version: u32,
    /// Logged-in user, `None` for logged-out traffic.
    pub user_id: Option<String>,
    /// Device or anonymous id; required when `user_id` is `None`.
    pub device_id: Option<String>,
    pub session_id: Option<String>,
    /// Client clock at the moment the event happened (normalised to UTC).
    #[serde(with = "crate::timefmt")]
    pub timestamp_event: OffsetDateTime,
    /// Where in the product the event fired (e.g. `reels_viewer`).
    pub surface: Option<String>,
    pub app_version: Option<String>,
    pub platform: String,
    #[serde(default)]
    pub experiment_ids: Vec<String>,
    /// Consent category → granted.
    #[serde(default)]
    pub consent: BTreeMap<String, bool>,
    /// Client context: ip, user agent, locale, country, … (PII lives here).
    #[serde(default)]
    pub context: Map<String, Value>,
    /// Event-specific attributes, validated by the event's JSON Schema.
    #[serde(default)]
    pub properties: Map<String, Value>,
}

/// The platforms a deployment accepts (`ios`, `android`, `web`, `server`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platforms(Vec<String>);

impl Platforms {
    pub fn new(names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Platforms(names.into_iter().map(Into::into).collect())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The configured name equal to `name` (a label that outlives `name`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|p| *p == name).map(String::as_str)
    }

    pub fn names(&self) -> &[String] {
        &self.0
    }
}

impl Default for Platforms {
    fn default() -> Self {
        Platforms::new(["ios", "android", "web", "server", "desktop", "tv"])
    }
}

/// Parses one native event from its JSON text.
///
/// Valid events take a typed fast path that builds no intermediate JSON tree; anything
/// that path does not accept is parsed again by [`parse_event`], which is the
/// reference and names the exact rule broken. Both end in the same rule checks, so
/// they accept exactly the same events.
///
/// # Errors
/// `invalid_event` for text that is not JSON, else as [`parse_event`].
pub fn parse_event_text(text: &[u8], platforms: &Platforms) -> Result<(Event, usize), EventError> {
    match std::str::from_utf8(text) {
        Ok(text) => parse_event_str(text, platforms),
        Err(_) => reference_text(serde_json::from_slice::<Value>(text), platforms),
    }
}

/// [`parse_event_text`] of text already known to be UTF-8 (a slice of a body checked
/// once), so that no string of it is checked again.
///
/// # Errors
/// As [`parse_event_text`].
pub fn parse_event_str(text: &str, platforms: &Platforms) -> Result<(Event, usize), EventError> {
    match parse_event_fast(text, platforms) {
        Some(parsed) => parsed,
        None => reference_text(serde_json::from_str::<Value>(text), platforms),
    }
}

/// An event as the typed fast path reads it, before the rules on values: for a caller
/// that reads events inside a larger document in the same pass (a native envelope).
/// Deserializing fails for anything the fast path does not take; such a caller then
/// reads the document the general way.
#[derive(Deserialize)]
#[serde(transparent)]
pub struct TypedEvent<'a>(#[serde(borrow)] FastEvent<'a>);

impl TypedEvent<'_> {
    /// The rules on values: what [`parse_event_str`] answers for the event's text.
    ///
    /// # Errors
    /// As [`parse_event`].
    pub fn finish(self, platforms: &Platforms) -> Result<(Event, usize), EventError> {
        finish(self.0.into_fields(), platforms).map(|event| (event, 0))
    }
}

/// The typed fast path of [`parse_event_str`] alone: `None` when it does not take the
/// text (not JSON, or a shape only the reference parser judges), else what
/// [`parse_event_str`] answers. `Some` also proves that `text` is exactly one JSON
/// value.
pub fn parse_event_fast(
    text: &str,
    platforms: &Platforms,
) -> Option<Result<(Event, usize), EventError>> {
    let fast = serde_json::from_str::<TypedEvent<'_>>(text).ok()?;
    Some(fast.finish(platforms))
}

/// The reference parser's answer for an event's text, once parsed into a tree.
fn reference_text(
    parsed: serde_json::Result<Value>,
    platforms: &Platforms,
) -> Result<(Event, usize), EventError> {
    match parsed {
        Ok(value) => parse_event(value, platforms),
        Err(e) => Err(EventError::new(
            ErrorCode::InvalidEvent,
            "",
            format!("not valid JSON: {}", crate::error::json_error_message(&e)),
        )),
    }
}

/// Parses one native event from a JSON value: the reference parser.
///
/// Server-owned fields ([`SERVER_FIELDS`]) are dropped; the returned count says how many
/// were present so the caller can count clients that try to set them.
///
/// # Errors
/// The first rule the event breaks, with the field's JSON pointer.
pub fn parse_event(value: Value, platforms: &Platforms) -> Result<(Event, usize), EventError> {
    let Value::Object(mut map) = value else {
        return Err(EventError::new(
            ErrorCode::InvalidEvent,
            "",
            "an event must be a JSON object",
        ));
    };
    let mut ignored = 0;
    for field in SERVER_FIELDS {
        if map.remove(*field).is_some() {
            ignored += 1;
        }
    }
    let fields = Fields {
        event_id: required_string(&mut map, "event_id")?,
        event_name: required_string(&mut map, "event_name")?,
        schema_version: match map.remove("schema_version") {
            None | Some(Value::Null) => return Err(EventError::missing("schema_version")),
            Some(Value::Number(n)) => n.as_u64().ok_or_else(bad_schema_version)?,
            Some(_) => return Err(EventError::wrong_type("/schema_version", "an integer")),
        },
        user_id: optional_string(&mut map, "user_id")?,
        device_id: optional_string(&mut map, "device_id")?,
        session_id: optional_string(&mut map, "session_id")?,
        timestamp_event: match map.remove("timestamp_event") {
            None | Some(Value::Null) => return Err(EventError::missing("timestamp_event")),
            Some(Value::String(s)) => Cow::Owned(s),
            Some(_) => {
                return Err(EventError::wrong_type(
                    "/timestamp_event",
                    "an RFC 3339 string",
                ));
            }
        },
        surface: optional_string(&mut map, "surface")?,
        app_version: optional_string(&mut map, "app_version")?,
        platform: required_string(&mut map, "platform")?,
        experiment_ids: match map.remove("experiment_ids") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => Ok(s),
                    _ => Err(EventError::wrong_type(
                        format!("/experiment_ids/{i}"),
                        "a string",
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(EventError::wrong_type(
                    "/experiment_ids",
                    "an array of strings",
                ));
            }
        },
        consent: match map.remove("consent") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(obj)) => obj
                .into_iter()
                .map(|(k, v)| match v {
                    Value::Bool(b) => Ok((k, b)),
                    _ => Err(EventError::wrong_type(
                        format!("/consent/{}", escape_pointer(&k)),
                        "a boolean",
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(EventError::wrong_type(
                    "/consent",
                    "an object of category -> boolean",
                ));
            }
        },
        context: optional_object(&mut map, "context")?,
        properties: optional_object(&mut map, "properties")?,
    };
    if let Some(unknown) = map.keys().next() {
        return Err(EventError::new(
            ErrorCode::UnknownField,
            format!("/{}", escape_pointer(unknown)),
            format!("`{unknown}` is not a field of the event model; put it in `properties`"),
        ));
    }
    finish(fields, platforms).map(|event| (event, ignored))
}

/// An event's fields once their JSON types are right, before the rules on values.
struct Fields<'a> {
    event_id: String,
    event_name: String,
    schema_version: u64,
    user_id: Option<String>,
    device_id: Option<String>,
    session_id: Option<String>,
    /// Only parsed, never kept: borrowed from the text where the fast path read it.
    timestamp_event: Cow<'a, str>,
    surface: Option<String>,
    app_version: Option<String>,
    platform: String,
    experiment_ids: Vec<String>,
    consent: BTreeMap<String, bool>,
    context: Map<String, Value>,
    properties: Map<String, Value>,
}

/// The typed fast path's view of an event. It accepts no more than [`parse_event`]:
/// nulls in required fields, unknown or server-owned fields, and wrong types all fail
/// here and are left to the reference parser.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FastEvent<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    event_name: Cow<'a, str>,
    schema_version: u64,
    #[serde(default, borrow)]
    user_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    device_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    session_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    timestamp_event: Cow<'a, str>,
    #[serde(default, borrow)]
    surface: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    app_version: Option<Cow<'a, str>>,
    #[serde(borrow)]
    platform: Cow<'a, str>,
    #[serde(default)]
    experiment_ids: Option<Vec<String>>,
    #[serde(default)]
    consent: Option<BTreeMap<String, bool>>,
    #[serde(default)]
    context: Option<Map<String, Value>>,
    #[serde(default)]
    properties: Option<Map<String, Value>>,
}

impl<'a> FastEvent<'a> {
    fn into_fields(self) -> Fields<'a> {
        let owned = |s: Option<Cow<'_, str>>| s.map(Cow::into_owned);
        Fields {
            event_id: self.event_id.into_owned(),
            event_name: self.event_name.into_owned(),
            schema_version: self.schema_version,
            user_id: owned(self.user_id),
            device_id: owned(self.device_id),
            session_id: owned(self.session_id),
            timestamp_event: self.timestamp_event,
            surface: owned(self.surface),
            app_version: owned(self.app_version),
            platform: self.platform.into_owned(),
            experiment_ids: self.experiment_ids.unwrap_or_default(),
            consent: self.consent.unwrap_or_default(),
            context: self.context.unwrap_or_default(),
            properties: self.properties.unwrap_or_default(),
        }
    }
}

fn bad_schema_version() -> EventError {
    EventError::new(
        ErrorCode::InvalidValue,
        "/schema_version",
        "`schema_version` must be an integer >= 1",
    )
}

/// The rules on values, shared by both parsers.
fn finish(f: Fields<'_>, platforms: &Platforms) -> Result<Event, EventError> {
    check_id("event_id", &f.event_id, MIN_EVENT_ID_LEN)?;
    if !is_snake_case(&f.event_name) {
        return Err(EventError::new(
            ErrorCode::InvalidValue,
            "/event_name",
            "`event_name` must be snake_case ([a-z][a-z0-9_]*, at most 128 bytes)",
        ));
    }
    let schema_version = match f.schema_version {
        v @ 1..=0xFFFF_FFFF => v as u32,
        _ => return Err(bad_schema_version()),
    };
    if let Some(id) = &f.user_id {
        check_id("user_id", id, 1)?;
    }
    match &f.device_id {
        Some(id) => check_id("device_id", id, 1)?,
        None if f.user_id.is_none() => {
            return Err(EventError::new(
                ErrorCode::MissingField,
                "/device_id",
                "`device_id` is required when `user_id` is null",
            ));
        }
        None => {}
    }
    if let Some(id) = &f.session_id {
        check_id("session_id", id, 1)?;
    }
    let timestamp_event = parse_timestamp(&f.timestamp_event, "/timestamp_event")?;
    if !platforms.contains(&f.platform) {
        return Err(EventError::new(
            ErrorCode::UnknownPlatform,
            "/platform",
            format!(
                "`platform` must be one of: {}",
                platforms.names().join(", ")
            ),
        ));
    }
    Ok(Event {
        event_id: f.event_id,
        event_name: f.event_name,
        schema_version,
        user_id: f.user_id,
        device_id: f.device_id,
        session_id: f.session_id,
        timestamp_event,
        surface: f.surface,
        app_version: f.app_version,
        platform: f.platform,
        experiment_ids: f.experiment_ids,
        consent: f.consent,
        context: f.context,
        properties: f.properties,
    })
}

/// Parses an RFC 3339 timestamp and normalises it to UTC.
///
/// The text is client-controlled, so nothing here may panic: an offset that would move
/// the time out of the years RFC 3339 can write (`9999-12-31T23:30:00-01:00`) is an
/// error like any other bad value.
///
/// # Errors
/// `invalid_value` at `path` when the text is not RFC 3339 or its UTC time is outside
/// the years 0000 to 9999.
pub fn parse_timestamp(text: &str, path: &str) -> Result<OffsetDateTime, EventError> {
    OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .and_then(|t| t.checked_to_offset(time::UtcOffset::UTC))
        .filter(|t| in_writable_range(*t))
        .ok_or_else(|| {
            EventError::new(
                ErrorCode::InvalidValue,
                path,
                format!("`{path}` must be an RFC 3339 timestamp such as 2026-01-31T12:00:00.000Z"),
            )
        })
}

/// True when `t` (in UTC) has a year RFC 3339 can write, 0000 to 9999: every timestamp
/// the collector logs must be, or its record could not be read back.
pub fn in_writable_range(t: OffsetDateTime) -> bool {
    (0..=9999).contains(&t.year())
}

/// True for `[a-z][a-z0-9_]*` of at most 128 bytes.
pub fn is_snake_case(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
}

/// Escapes a key for use as one JSON pointer segment (RFC 6901).
pub fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn required_string(map: &mut Map<String, Value>, field: &str) -> Result<String, EventError> {
    optional_string(map, field)?.ok_or_else(|| EventError::missing(field))
}

fn optional_string(
    map: &mut Map<String, Value>,
    field: &str,
) -> Result<Option<String>, EventError> {
    match map.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(EventError::wrong_type(format!("/{field}"), "a string")),
    }
}

fn optional_object(
    map: &mut Map<String, Value>,
    field: &str,
) -> Result<Map<String, Value>, EventError> {
    match map.remove(field) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(obj)) => Ok(obj),
        Some(_) => Err(EventError::wrong_type(format!("/{field}"), "an object")),
    }
}

fn check_id(field: &str, id: &str, min_len: usize) -> Result<(), EventError> {
    let ok =
        id.len() >= min_len && id.len() <= MAX_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(EventError::new(
            ErrorCode::InvalidValue,
            format!("/{field}"),
            format!(
                "`{field}` must be {min_len} to {MAX_ID_LEN} printable ASCII characters without spaces"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid() -> Value {
        json!({
            "event_id": "0b7e5f3c-6c1d-4b8e-9a52-1f7c2d3e4a5b",
            "event_name": "item_view",
            "schema_version": 1,
            "user_id": null,
            "device_id": "dev-1",
            "timestamp_event": "2026-11-29T10:00:00.250+01:00",
            "platform": "ios",
            "experiment_ids": ["exp_1"],
            "consent": {"analytics": true},
            "context": {"locale": "en-GB"},
            "properties": {"item_id": "i1"}
        })
    }

    #[test]
    fn parses_a_valid_event_and_normalises_time_to_utc() {
        let (event, ignored) = parse_event(valid(), &Platforms::default()).unwrap();
        assert_eq!(ignored, 0);
        assert_eq!(event.event_name, "item_view");
        assert_eq!(event.timestamp_event.offset(), time::UtcOffset::UTC);
        assert_eq!(event.timestamp_event.hour(), 9);
        assert_eq!(event.properties["item_id"], "i1");
        assert_eq!(event.consent.get("analytics"), Some(&true));
    }

    #[test]
    fn drops_server_fields_sent_by_the_client() {
        let mut v = valid();
        v["timestamp_server"] = json!("1999-01-01T00:00:00Z");
        v["dedupe"] = json!("checked");
        v["schema_set"] = json!("forged");
        let text = serde_json::to_vec(&v).unwrap();
        let (_, ignored) = parse_event_text(&text, &Platforms::default()).unwrap();
        assert_eq!(ignored, 3);
    }

    /// Sets `field` to `value` (removes it for `None`) and returns the parse error.
    fn err_with(field: &str, value: Option<Value>) -> EventError {
        let mut v = valid();
        let map = v.as_object_mut().unwrap();
        match value {
            Some(value) => map.insert(field.to_owned(), value),
            None => map.remove(field),
        };
        parse_event(v, &Platforms::default()).unwrap_err()
    }

    #[test]
    fn each_rule_names_its_field() {
        let cases = [
            ("event_id", None, ErrorCode::MissingField, "/event_id"),
            (
                "event_id",
                Some(json!(5)),
                ErrorCode::InvalidType,
                "/event_id",
            ),
            (
                "event_id",
                Some(json!("short")),
                ErrorCode::InvalidValue,
                "/event_id",
            ),
            (
                "event_name",
                Some(json!("ItemView")),
                ErrorCode::InvalidValue,
                "/event_name",
            ),
            (
                "schema_version",
                Some(json!(0)),
                ErrorCode::InvalidValue,
                "/schema_version",
            ),
            (
                "schema_version",
                Some(json!("1")),
                ErrorCode::InvalidType,
                "/schema_version",
            ),
            ("device_id", None, ErrorCode::MissingField, "/device_id"),
            (
                "timestamp_event",
                Some(json!("yesterday")),
                ErrorCode::InvalidValue,
                "/timestamp_event",
            ),
            (
                "platform",
                Some(json!("palm")),
                ErrorCode::UnknownPlatform,
                "/platform",
            ),
            (
                "experiment_ids",
                Some(json!(["a", 2])),
                ErrorCode::InvalidType,
                "/experiment_ids/1",
            ),
            (
                "consent",
                Some(json!({"ads": "yes"})),
                ErrorCode::InvalidType,
                "/consent/ads",
            ),
            (
                "properties",
                Some(json!([1])),
                ErrorCode::InvalidType,
                "/properties",
            ),
            (
                "colour",
                Some(json!("red")),
                ErrorCode::UnknownField,
                "/colour",
            ),
        ];
        for (field, value, code, path) in cases {
            let err = err_with(field, value);
            assert_eq!((err.code, err.path.as_str()), (code, path), "{err}");
        }
    }

    #[test]
    fn timestamps_past_the_writable_years_are_invalid_values() {
        // 23:30 at offset -01:00 on the last day of 9999 is year 10000 in UTC.
        for text in ["9999-12-31T23:30:00-01:00", "0000-01-01T00:30:00+01:00"] {
            let err = err_with("timestamp_event", Some(json!(text)));
            assert_eq!(
                (err.code, err.path.as_str()),
                (ErrorCode::InvalidValue, "/timestamp_event"),
                "{text}"
            );
        }
        // The very ends are fine.
        assert!(parse_timestamp("9999-12-31T23:59:59Z", "/t").is_ok());
        assert!(parse_timestamp("0000-01-01T00:00:00Z", "/t").is_ok());
    }

    #[test]
    fn a_logged_in_user_needs_no_device_id() {
        let mut v = valid();
        v["user_id"] = json!("u1");
        v.as_object_mut().unwrap().remove("device_id");
        assert!(parse_event(v, &Platforms::default()).is_ok());
    }

    #[test]
    fn non_objects_are_invalid_events() {
        let err = parse_event(json!([1, 2]), &Platforms::default()).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidEvent);
    }

    #[test]
    fn snake_case_rule() {
        assert!(is_snake_case("a"));
        assert!(is_snake_case("share_submit_v2"));
        assert!(!is_snake_case(""));
        assert!(!is_snake_case("_x"));
        assert!(!is_snake_case("9lives"));
        assert!(!is_snake_case("Order Completed"));
        assert!(!is_snake_case(&"a".repeat(129)));
    }
}

#[cfg(test)]
mod equivalence {
    //! The fast path must accept exactly what the reference parser accepts, and fail
    //! with the same error where it hands over.
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const FIELDS: &[&str] = &[
        "event_id",
        "event_name",
        "schema_version",
        "user_id",
        "device_id",
        "session_id",
        "timestamp_event",
        "surface",
        "app_version",
        "platform",
        "experiment_ids",
        "consent",
        "context",
        "properties",
        "timestamp_server",
        "colour",
    ];

    fn base() -> Value {
        json!({
            "event_id": "evt-12345678",
            "event_name": "item_view",
            "schema_version": 2,
            "user_id": "u-1",
            "device_id": "d-1",
            "session_id": "s-1",
            "timestamp_event": "2026-11-29T10:00:00Z",
            "surface": "feed",
            "app_version": "1.0.0",
            "platform": "web",
            "experiment_ids": ["e1"],
            "consent": {"ads": false},
            "context": {"ip": "203.0.113.1"},
            "properties": {"item_id": "i-1"}
        })
    }

    fn replacement() -> impl Strategy<Value = Option<Value>> {
        prop_oneof![
            Just(None),
            Just(Some(Value::Null)),
            Just(Some(json!(0))),
            Just(Some(json!(-3))),
            Just(Some(json!(1.5))),
            Just(Some(json!(4294967296u64))),
            Just(Some(json!("x"))),
            Just(Some(json!("Item View"))),
            Just(Some(json!("2026-11-29T10:00:00+02:00"))),
            Just(Some(json!("ios"))),
            Just(Some(json!("has space"))),
            Just(Some(json!(true))),
            Just(Some(json!([]))),
            Just(Some(json!(["a", 1]))),
            Just(Some(json!({}))),
            Just(Some(json!({"k": true}))),
            Just(Some(json!({"k": "v"}))),
            "[a-z_]{0,12}".prop_map(|s| Some(json!(s))),
        ]
    }

    proptest! {
        #[test]
        fn fast_and_reference_parsers_agree(
            edits in proptest::collection::vec((0..FIELDS.len(), replacement()), 0..4)
        ) {
            let mut value = base();
            for (field, new) in edits {
                let map = value.as_object_mut().unwrap();
                match new {
                    None => { map.remove(FIELDS[field]); }
                    Some(v) => { map.insert(FIELDS[field].to_owned(), v); }
                }
            }
            let text = serde_json::to_vec(&value).unwrap();
            let platforms = Platforms::default();
            prop_assert_eq!(parse_event_text(&text, &platforms), parse_event(value, &platforms));
        }
    }
}
