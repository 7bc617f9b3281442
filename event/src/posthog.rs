//! PostHog capture API events mapped onto the native [`Event`].
//!
//! PostHog SDKs post here unmodified, so the mapping never rejects an event for a field
//! PostHog itself does not require: a missing `uuid` gets a server id (the record is
//! marked `dedupe: unchecked`), a missing `timestamp` takes the server time (less
//! `offset` when the SDK sent one), an unknown library becomes platform `unknown`.
//!
//! The shape: PostHog's own `$`-prefixed properties (`$lib`, `$os`, `$current_url`,
//! `$ip`, …) describe where the event came from, so they go to `context` without their
//! `$` (`$ip` → `context.ip`, `$raw_user_agent` → `context.user_agent`, the names the
//! privacy policy reads); `properties` keeps only the product's own properties, which
//! the event's schema validates. `$device_id`, `$session_id` and `$app_version` become
//! the native fields. On `$identify` and `$set` events, the `$set` person properties are
//! the event's `properties` (as a Segment identify's traits are); elsewhere `$set` and
//! `$set_once` stay in `context` as `set` / `set_once`.

use serde_json::{Map, Value};
use time::{Duration, OffsetDateTime};

use crate::error::{ErrorCode, EventError};
use crate::event::{Event, in_writable_range, parse_timestamp};
use crate::mapped::{Mapped, id_value, object, snake_case};

/// The fields an event may carry its project API key in (`properties.token` too).
pub const KEY_FIELDS: [&str; 3] = ["api_key", "token", "$token"];

/// Events whose `$set` person properties become the event's properties.
const IDENTIFY_LIKE: [&str; 2] = ["$identify", "$set"];

/// The API keys found in a request: the batch's and every event's must agree.
#[derive(Debug, Default)]
pub struct Keys {
    first: Option<String>,
    mixed: bool,
}

impl Keys {
    /// Notes a key the request carries.
    pub fn see(&mut self, key: String) {
        match &self.first {
            None => self.first = Some(key),
            Some(first) if *first != key => self.mixed = true,
            Some(_) => {}
        }
    }

    /// Removes every key an event carries (top level and `properties.token`), noting
    /// the string ones: a key never reaches the log.
    pub fn take_from(&mut self, event: &mut Map<String, Value>) {
        for field in KEY_FIELDS {
            if let Some(Value::String(key)) = event.remove(field) {
                self.see(key);
            }
        }
        if let Some(Value::Object(properties)) = event.get_mut("properties")
            && let Some(Value::String(key)) = properties.remove("token")
        {
            self.see(key);
        }
    }

    /// The one key of the request, `None` when it has none.
    ///
    /// # Errors
    /// When two different keys were seen (events of two projects in one request).
    pub fn into_key(self) -> Result<Option<String>, MixedKeys> {
        if self.mixed {
            Err(MixedKeys)
        } else {
            Ok(self.first)
        }
    }
}

/// A request whose events carry different API keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the events of this request carry different API keys")]
pub struct MixedKeys;

/// Why a PostHog body could not be taken out of its layers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnwrapError<E> {
    #[error("lz-string compression (lz64) is not supported")]
    LzString,
    #[error("the body is not valid base64")]
    Base64,
    #[error("a form body carries the events in its `data` field")]
    NoData,
    #[error("gzip: {0}")]
    Gzip(E),
}

/// The JSON text of a PostHog request whatever layers it came in (after any
/// `Content-Encoding` has been undone): the `data` field of a form (`form`) or of the
/// query (a GET, whose body is empty); base64 (`compression=base64`, or a form or
/// query value that is not JSON, as older posthog-js sends); gzip (`compression=gzip-js`,
/// or recognised by its magic bytes), undone by `gunzip`, which applies the caller's
/// size limits. `query` is the request's query string.
///
/// # Errors
/// lz-string (`compression=lz64`), bad base64, a form without `data`, and `gunzip`'s.
pub fn unwrap_body<'a, E>(
    body: &'a [u8],
    form: bool,
    query: Option<&str>,
    gunzip: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
) -> Result<std::borrow::Cow<'a, [u8]>, UnwrapError<E>> {
    use std::borrow::Cow;
    let param = |name: &str| {
        form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    };
    let mut compression = param("compression");
    let data = if form {
        let mut data = None;
        for (key, value) in form_urlencoded::parse(body) {
            match &*key {
                "data" => data = Some(value.into_owned()),
                "compression" => compression = Some(value.into_owned()),
                _ => {}
            }
        }
        Some(data.ok_or(UnwrapError::NoData)?)
    } else if body.is_empty() {
        param("data")
    } else {
        None
    };
    let wrapped = data.is_some();
    let mut bytes: Cow<'a, [u8]> = match data {
        Some(text) => Cow::Owned(text.into_bytes()),
        None => Cow::Borrowed(body),
    };
    let is_gzip = |b: &[u8]| b.starts_with(&[0x1f, 0x8b]);
    let base64 = |b: &[u8]| {
        std::str::from_utf8(b)
            .ok()
            .and_then(|text| crate::mapped::decode_base64(text.trim()))
            .ok_or(UnwrapError::Base64)
    };
    match compression.as_deref() {
        Some("lz64" | "lz-string") => return Err(UnwrapError::LzString),
        Some("base64") => bytes = Cow::Owned(base64(&bytes)?),
        _ if wrapped && !starts_like_json(&bytes) && !is_gzip(&bytes) => {
            bytes = Cow::Owned(base64(&bytes)?);
        }
        _ => {}
    }
    if is_gzip(&bytes) || matches!(compression.as_deref(), Some("gzip-js" | "gzip")) {
        bytes = Cow::Owned(gunzip(&bytes).map_err(UnwrapError::Gzip)?);
    }
    Ok(bytes)
}

fn starts_like_json(bytes: &[u8]) -> bool {
    matches!(
        bytes.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{' | b'[')
    )
}

/// An event name as Tollgate logs it: PostHog's own events keep their `$` name
/// (`$pageview`, `$autocapture`, `$identify`); the product's free-text names become
/// snake_case like Segment's (`"Signed Up"` → `signed_up`). `None` when nothing of it
/// is left.
pub fn event_name(name: &str) -> Option<String> {
    let (dollar, rest) = match name.strip_prefix('$') {
        Some(rest) => ("$", rest),
        None => ("", name),
    };
    let snake = snake_case(rest);
    (!snake.is_empty()).then(|| format!("{dollar}{snake}"))
}

/// A PostHog send time: an RFC 3339 string or milliseconds since the epoch.
///
/// # Errors
/// `invalid_value` at `path` for anything else.
pub fn send_time(value: &Value, path: &str) -> Result<OffsetDateTime, EventError> {
    match value {
        Value::String(s) => parse_timestamp(s, path),
        Value::Number(n) => n.as_i64().and_then(epoch_millis).ok_or_else(|| {
            EventError::new(
                ErrorCode::InvalidValue,
                path,
                format!("`{path}` must be milliseconds since 1970 or an RFC 3339 timestamp"),
            )
        }),
        _ => Err(EventError::wrong_type(
            path,
            "an RFC 3339 string or milliseconds",
        )),
    }
}

/// Milliseconds since the epoch, within the years a record can hold.
pub fn epoch_millis(ms: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .filter(|t| in_writable_range(*t))
}

/// Maps one PostHog event. `sent_at` is the request's send time (`sent_at` of a batch,
/// or the `_` query parameter posthog-js adds); `server_id` supplies an id when the
/// event has no `uuid`.
///
/// # Errors
/// Only for what PostHog itself requires: a JSON object with an `event` name and a
/// `distinct_id`, and well-formed times and ids.
pub fn map_event(
    value: Value,
    sent_at: Option<OffsetDateTime>,
    received_at: OffsetDateTime,
    server_id: &dyn Fn() -> String,
) -> Result<Mapped, EventError> {
    let msg = object(value, "a PostHog event")?;
    let mut m = native_names(msg);
    let event_name = match m.remove("event_name") {
        Some(Value::String(name)) => name,
        None | Some(Value::Null) => return Err(EventError::missing("event")),
        Some(_) => return Err(EventError::wrong_type("/event", "a string")),
    };
    if event_name.is_empty() || event_name == "$" {
        return Err(EventError::new(
            ErrorCode::InvalidValue,
            "/event",
            "`event` must contain a letter or digit",
        ));
    }
    let user_id = id_value(m.remove("user_id"), "/distinct_id")?.ok_or_else(|| {
        EventError::new(
            ErrorCode::MissingField,
            "/distinct_id",
            "a PostHog event needs a `distinct_id`",
        )
    })?;
    let device_id = id_value(m.remove("device_id"), "/properties/$device_id")?;
    let session_id = id_value(m.remove("session_id"), "/properties/$session_id")?;
    let (event_id, client_event_id) = match m.remove("event_id") {
        Some(Value::String(id)) if !id.is_empty() => (id, true),
        None | Some(Value::Null) | Some(Value::String(_)) => (server_id(), false),
        Some(_) => return Err(EventError::wrong_type("/uuid", "a string")),
    };
    let offset = match m.remove("offset") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.as_i64().ok_or_else(|| {
            EventError::new(
                ErrorCode::InvalidValue,
                "/offset",
                "`offset` must be whole milliseconds",
            )
        })?),
        Some(_) => return Err(EventError::wrong_type("/offset", "a number")),
    };
    let timestamp_event = match (m.remove("timestamp_event"), offset) {
        (Some(Value::String(s)), _) => parse_timestamp(&s, "/timestamp")?,
        (None | Some(Value::Null), Some(offset)) => received_at
            .checked_sub(Duration::milliseconds(offset))
            .filter(|t| in_writable_range(*t))
            .ok_or_else(|| {
                EventError::new(
                    ErrorCode::InvalidValue,
                    "/offset",
                    "`offset` moves the event out of the years a timestamp can hold",
                )
            })?,
        (None | Some(Value::Null), None) => received_at,
        (Some(_), _) => return Err(EventError::wrong_type("/timestamp", "an ISO 8601 string")),
    };
    let app_version = match m.remove("app_version") {
        None | Some(Value::Null) => None,
        Some(Value::String(v)) => Some(v),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => {
            return Err(EventError::wrong_type(
                "/properties/$app_version",
                "a string",
            ));
        }
    };
    let context = match m.remove("context") {
        Some(Value::Object(context)) => context,
        _ => Map::new(),
    };
    let properties = match m.remove("properties") {
        None => Map::new(),
        Some(Value::Object(properties)) => properties,
        Some(_) => return Err(EventError::wrong_type("/properties", "an object")),
    };
    let platform = platform_of(&context).to_owned();
    Ok(Mapped {
        event: Event {
            event_id,
            event_name,
            // PostHog events carry no version: the collector sets the newest one the
            // properties satisfy when it validates them.
            schema_version: 1,
            user_id: Some(user_id),
            device_id,
            session_id,
            timestamp_event,
            surface: None,
            app_version,
            platform,
            experiment_ids: Vec::new(),
            consent: Default::default(),
            context,
            properties,
        },
        client_event_id,
        sent_at,
        versioned: false,
    })
}

/// A PostHog event renamed field by field to the native names, without validating
/// anything: the first step of [`map_event`], and what the quarantine keeps of an event
/// that could not be mapped (so the privacy policy, whose paths are native, applies to
/// it as to an accepted event). API keys are removed.
pub fn native_names(mut msg: Map<String, Value>) -> Map<String, Value> {
    for field in KEY_FIELDS {
        msg.remove(field);
    }
    let mut out = Map::new();
    let mut context = Map::new();
    let mut own = Map::new();
    let mut properties = match msg.remove("properties") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(properties)) => properties,
        Some(other) => {
            // Not an object: kept as it came, for the mapping to refuse.
            out.insert("properties".into(), other);
            Map::new()
        }
    };
    properties.remove("token");
    // posthog-python puts `$set` beside the event, posthog-js inside its properties.
    for field in ["$set", "$set_once"] {
        if let Some(value) = msg.remove(field) {
            properties.entry(field).or_insert(value);
        }
    }
    let name = match msg.remove("event") {
        Some(Value::String(name)) => Some(Value::String(event_name(&name).unwrap_or_default())),
        // A legacy `/engage` call: person properties without an event.
        None if properties.contains_key("$set") || properties.contains_key("$set_once") => {
            Some(Value::String("$identify".into()))
        }
        other => other,
    };
    let identify_like =
        matches!(&name, Some(Value::String(n)) if IDENTIFY_LIKE.contains(&n.as_str()));
    if let Some(name) = name {
        out.insert("event_name".into(), name);
    }
    let distinct_id = msg
        .remove("distinct_id")
        .or_else(|| msg.remove("$distinct_id"))
        .or_else(|| properties.remove("distinct_id"));
    for (field, value) in [
        ("user_id", distinct_id),
        ("event_id", msg.remove("uuid")),
        ("timestamp_event", msg.remove("timestamp")),
        ("offset", msg.remove("offset")),
    ] {
        if let Some(value) = value {
            out.insert(field.into(), value);
        }
    }
    for (key, value) in properties {
        let Some(name) = key.strip_prefix('$') else {
            own.insert(key, value);
            continue;
        };
        match (name, value) {
            ("device_id" | "session_id" | "app_version", value) => {
                out.insert(name.into(), value);
            }
            ("raw_user_agent", value) => {
                context.insert("user_agent".into(), value);
            }
            ("set", Value::Object(set)) if identify_like => {
                for (k, v) in set {
                    own.entry(k).or_insert(v);
                }
            }
            (name, value) => {
                context.insert(name.into(), value);
            }
        }
    }
    // What else the message carries beside the event (`type`, `library`, …) is kept
    // as context: nothing is lost, and nothing becomes a field of the event model.
    for (key, value) in msg {
        context.entry(key.trim_start_matches('$')).or_insert(value);
    }
    out.insert("context".into(), Value::Object(context));
    out.entry("properties").or_insert(Value::Object(own));
    out
}

/// The platform, from the library that sent the event (`context.lib`, PostHog's `$lib`)
/// and, for cross-platform libraries, the OS (`$os`); else `unknown`.
fn platform_of(context: &Map<String, Value>) -> &'static str {
    let text = |key: &str| {
        context
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
            .unwrap_or_default()
    };
    let (lib, os) = (text("lib"), text("os"));
    let by_os = || {
        if os.contains("ios") || os.contains("ipados") {
            "ios"
        } else if os.contains("android") {
            "android"
        } else {
            "unknown"
        }
    };
    if lib == "web" || lib.starts_with("posthog-js") {
        "web"
    } else if lib.contains("ios") {
        "ios"
    } else if lib.contains("android") {
        "android"
    } else if lib.contains("react-native") || lib.contains("flutter") || lib.is_empty() {
        by_os()
    } else if [
        "python", "node", "ruby", "go", "java", "php", "dotnet", ".net", "elixir", "rust",
    ]
    .iter()
    .any(|server| lib.contains(server))
    {
        "server"
    } else {
        by_os()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-29 12:00 UTC);

    fn map(v: Value) -> Result<Mapped, EventError> {
        map_event(v, None, NOW, &|| "server-generated-id".to_owned())
    }

    #[test]
    fn a_posthog_js_event_maps_every_field() {
        let m = map(json!({
            "event": "$pageview",
            "uuid": "01890a6e-3f9a-7c1e-9d6b-000000000001",
            "timestamp": "2026-11-29T11:59:00.000Z",
            "properties": {
                "distinct_id": "u1",
                "token": "phc_secret",
                "$lib": "web",
                "$lib_version": "1.200.0",
                "$os": "Mac OS X",
                "$device_id": "d1",
                "$session_id": "s1",
                "$app_version": "4.2.0",
                "$ip": "203.0.113.7",
                "$raw_user_agent": "Mozilla/5.0",
                "$current_url": "https://shop.example/cart",
                "plan": "pro"
            }
        }))
        .unwrap();
        let e = &m.event;
        assert_eq!(e.event_name, "$pageview");
        assert_eq!(e.event_id, "01890a6e-3f9a-7c1e-9d6b-000000000001");
        assert!(m.client_event_id);
        assert_eq!(e.user_id.as_deref(), Some("u1"));
        assert_eq!(e.device_id.as_deref(), Some("d1"));
        assert_eq!(e.session_id.as_deref(), Some("s1"));
        assert_eq!(e.app_version.as_deref(), Some("4.2.0"));
        assert_eq!(e.platform, "web");
        assert_eq!(e.timestamp_event, datetime!(2026-11-29 11:59 UTC));
        assert_eq!(e.context["ip"], "203.0.113.7");
        assert_eq!(e.context["user_agent"], "Mozilla/5.0");
        assert_eq!(e.context["lib_version"], "1.200.0");
        assert_eq!(e.context["current_url"], "https://shop.example/cart");
        assert_eq!(Value::Object(e.properties.clone()), json!({"plan": "pro"}));
        assert!(!serde_json::to_string(e).unwrap().contains("phc_secret"));
    }

    #[test]
    fn free_text_names_become_snake_case_and_posthog_names_keep_their_dollar() {
        assert_eq!(event_name("Signed Up").as_deref(), Some("signed_up"));
        assert_eq!(event_name("$autocapture").as_deref(), Some("$autocapture"));
        assert_eq!(
            event_name("$groupidentify").as_deref(),
            Some("$groupidentify")
        );
        assert_eq!(event_name("!!"), None);
        assert_eq!(event_name("$"), None);
    }

    #[test]
    fn offset_dates_the_event_before_the_server_time() {
        let m = map(json!({"event": "x", "distinct_id": "u", "offset": 1500})).unwrap();
        assert_eq!(
            m.event.timestamp_event,
            datetime!(2026-11-29 11:59:58.5 UTC)
        );
        assert!(!m.client_event_id);
        assert_eq!(m.event.event_id, "server-generated-id");
    }

    #[test]
    fn identify_takes_set_as_its_properties_and_engage_calls_are_identifies() {
        let m = map(json!({
            "event": "$identify", "distinct_id": "u",
            "$set": {"email": "jane@example.com"},
            "properties": {"$set_once": {"first_seen": "2026"}}
        }))
        .unwrap();
        assert_eq!(m.event.properties["email"], "jane@example.com");
        assert_eq!(m.event.context["set_once"]["first_seen"], "2026");
        let engage =
            map(json!({"$distinct_id": "u", "$token": "k", "$set": {"plan": "pro"}})).unwrap();
        assert_eq!(engage.event.event_name, "$identify");
        assert_eq!(engage.event.properties["plan"], "pro");
        let other = map(
            json!({"event": "buy", "distinct_id": "u", "properties": {"$set": {"plan": "pro"}}}),
        )
        .unwrap();
        assert_eq!(other.event.context["set"]["plan"], "pro");
        assert!(other.event.properties.is_empty());
    }

    #[test]
    fn platform_from_library_then_os() {
        let platform = |lib: &str, os: &str| {
            map(json!({"event": "x", "distinct_id": "u", "properties": {"$lib": lib, "$os": os}}))
                .unwrap()
                .event
                .platform
        };
        assert_eq!(platform("posthog-ios", "iOS"), "ios");
        assert_eq!(platform("posthog-android", "Android"), "android");
        assert_eq!(platform("posthog-react-native", "Android"), "android");
        assert_eq!(platform("posthog-python", "Linux"), "server");
        assert_eq!(platform("web", "Windows"), "web");
        assert_eq!(platform("something-else", "Plan 9"), "unknown");
    }

    #[test]
    fn what_posthog_requires_is_required() {
        assert_eq!(map(json!({"distinct_id": "u"})).unwrap_err().path, "/event");
        assert_eq!(map(json!({"event": "x"})).unwrap_err().path, "/distinct_id");
        assert_eq!(
            map(json!({"event": "x", "distinct_id": {"a": 1}}))
                .unwrap_err()
                .path,
            "/distinct_id"
        );
        assert_eq!(
            map(json!({"event": "x", "distinct_id": "u", "timestamp": "yesterday"}))
                .unwrap_err()
                .path,
            "/timestamp"
        );
        assert_eq!(map(json!(["x"])).unwrap_err().code, ErrorCode::InvalidEvent);
    }

    #[test]
    fn keys_must_agree_and_never_stay_in_the_event() {
        let mut keys = Keys::default();
        let Value::Object(mut a) =
            json!({"event": "x", "api_key": "k1", "properties": {"token": "k1"}})
        else {
            unreachable!()
        };
        keys.take_from(&mut a);
        assert!(!Value::Object(a).to_string().contains("k1"));
        assert_eq!(keys.into_key().unwrap().as_deref(), Some("k1"));
        let mut keys = Keys::default();
        keys.see("k1".into());
        keys.see("k2".into());
        assert_eq!(keys.into_key(), Err(MixedKeys));
    }

    #[test]
    fn send_times_in_both_forms() {
        assert_eq!(
            send_time(&json!(1_764_417_600_000_i64), "/sent_at").unwrap(),
            datetime!(2025-11-29 12:00 UTC)
        );
        assert_eq!(
            send_time(&json!("2026-11-29T12:00:00Z"), "/sent_at").unwrap(),
            NOW
        );
        assert!(send_time(&json!(true), "/sent_at").is_err());
    }
}
