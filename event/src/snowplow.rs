//! Snowplow tracker protocol events mapped onto the native [`Event`].
//!
//! A tracker sends each event as flat fields whose values are strings (the items of a
//! `tp2` POST body's `data`, or the query of a `GET /i`). The mapping:
//!
//! | Snowplow | native |
//! | --- | --- |
//! | `e` | the event name: `pv` → `page_view`, `pp` → `page_ping`, `se` → the action (`se_ac`) in snake_case, `ue` → the self-describing event's schema name, `tr` → `transaction`, `ti` → `transaction_item` |
//! | `eid` | `event_id` (absent: a server id, not deduplicated) |
//! | `uid`, `duid`, `sid` | `user_id`, `device_id`, `session_id` (else the `client_session` context's `userId` / `sessionId`) |
//! | `ttm`, else `dtm` | `timestamp_event` (else the server time) |
//! | `stm` | the send time, for the clock-skew correction |
//! | `p` | `platform`: `web` → `web`, `pc` → `desktop`, `srv` → `server`, `tv` → `tv`, `mob`/`app` → `ios` or `android` by the `mobile_context` OS or the user agent, else `unknown` |
//! | `aid` | `context.app_id` (and the source, see the collector's `app_ids`) |
//! | `ip`, `ua` | `context.ip`, `context.user_agent` (the names the privacy policy reads) |
//! | `ue_pr` / `ue_px` | `properties` = the event's `data`; `schema_version` = its SchemaVer MODEL |
//! | `co` / `cx` | `context.<schema name>` = each context's `data` |
//! | `se_*`, `tr_*`, `ti_*`, `pp_*` | `properties` under readable names (`category`, `order_id`, …) |
//! | `url`, `refr`, `page`, `lang`, `res`, `vp`, `tz`, `tv`, `tna`, `vid`, … | `context` under readable names; fields not listed keep their short name |

use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::error::{ErrorCode, EventError};
use crate::event::Event;
use crate::mapped::{Mapped, decode_base64, id_value, object, snake_case};
use crate::posthog::epoch_millis;

/// The `schema` of a `tp2` POST body.
pub const PAYLOAD_SCHEMA_PREFIX: &str = "iglu:com.snowplowanalytics.snowplow/payload_data/";

/// A context field's readable name (`url` → `page_url`), `None` for the fields that are
/// not context.
fn context_name(field: &str) -> Option<&'static str> {
    Some(match field {
        "aid" => "app_id",
        "ip" => "ip",
        "ua" => "user_agent",
        "url" => "page_url",
        "refr" => "page_referrer",
        "page" => "page_title",
        "lang" => "language",
        "res" => "screen_resolution",
        "vp" => "viewport",
        "ds" => "document_size",
        "cd" => "color_depth",
        "cs" => "charset",
        "tz" => "timezone",
        "tv" => "tracker",
        "tna" => "tracker_namespace",
        "vid" => "session_index",
        "nuid" => "network_user_id",
        "mac" => "mac_address",
        _ => return None,
    })
}

/// A structured, transaction or page-ping field's readable property name, and whether
/// its value is a number.
fn property_name(field: &str) -> Option<(&'static str, bool)> {
    Some(match field {
        "se_ca" => ("category", false),
        "se_ac" => ("action", false),
        "se_la" => ("label", false),
        "se_pr" => ("property", false),
        "se_va" => ("value", true),
        "tr_id" | "ti_id" => ("order_id", false),
        "tr_af" => ("affiliation", false),
        "tr_tt" => ("total", true),
        "tr_tx" => ("tax", true),
        "tr_sh" => ("shipping", true),
        "tr_ci" => ("city", false),
        "tr_st" => ("state", false),
        "tr_co" => ("country", false),
        "tr_cu" | "ti_cu" => ("currency", false),
        "ti_sk" => ("sku", false),
        "ti_nm" => ("name", false),
        "ti_ca" => ("category", false),
        "ti_pr" => ("price", true),
        "ti_qu" => ("quantity", true),
        "pp_mix" => ("min_x", true),
        "pp_max" => ("max_x", true),
        "pp_miy" => ("min_y", true),
        "pp_may" => ("max_y", true),
        _ => return None,
    })
}

/// An Iglu schema URI's vendor-free name and SchemaVer MODEL:
/// `iglu:com.acme/checkout_done/jsonschema/1-0-2` → (`checkout_done`, 1).
pub fn schema_name(uri: &str) -> Option<(&str, u32)> {
    let mut parts = uri.strip_prefix("iglu:")?.split('/');
    let (_vendor, name, _format, version) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let model = version.split('-').next()?.parse().ok()?;
    (!name.is_empty() && parts.next().is_none()).then_some((name, model))
}

/// The app id of an event's fields, which selects its source.
pub fn app_id(fields: &Map<String, Value>) -> Option<&str> {
    fields
        .get("aid")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
}

/// The fields an `SP-Anonymous` request may not keep: the IP and the user identifiers,
/// removed before anything else sees them (as Snowplow's own collector does).
pub const ANONYMOUS_DROPS: [&str; 5] = ["ip", "uid", "duid", "nuid", "tnuid"];

/// Removes [`ANONYMOUS_DROPS`] from an event's fields.
pub fn anonymize(fields: &mut Map<String, Value>) {
    for field in ANONYMOUS_DROPS {
        fields.remove(field);
    }
}

/// Maps one event's fields. `anonymous` (the request's `SP-Anonymous` header) means
/// the identifiers were removed on purpose ([`anonymize`]): the event is kept without
/// them, and the `client_session` context's user id is not taken either.
///
/// # Errors
/// An event that is not an object, an unknown `e`, an undecodable self-describing event
/// or context, a bad time, and (unless anonymous) an event with no user or device id,
/// the native model's one requirement on identity.
pub fn map_event(
    value: Value,
    received_at: OffsetDateTime,
    anonymous: bool,
    server_id: &dyn Fn() -> String,
) -> Result<Mapped, EventError> {
    let fields = object(value, "a Snowplow event")?;
    let mut a = arrange(fields);
    if let Some((path, message)) = a.problem.take() {
        return Err(EventError::new(ErrorCode::InvalidValue, path, message));
    }
    let event_name = match a.event_name.take() {
        Some(name) if !name.is_empty() => name,
        None if a.unknown_kind.is_none() => return Err(EventError::missing("e")),
        _ => {
            return Err(EventError::new(
                ErrorCode::InvalidValue,
                "/e",
                "`e` must be one of pv, pp, se, ue, tr, ti",
            ));
        }
    };
    if anonymous {
        a.user_id = None;
        a.device_id = None;
    }
    let user_id = id_value(a.user_id, "/uid")?;
    let device_id = id_value(a.device_id, "/duid")?;
    if user_id.is_none() && device_id.is_none() && !anonymous {
        return Err(EventError::new(
            ErrorCode::MissingField,
            "/duid",
            "a Snowplow event needs `uid` or `duid` (a subject's user id or domain user id)",
        ));
    }
    let session_id = id_value(a.session_id, "/sid")?;
    let (event_id, client_event_id) = match a.event_id {
        Some(Value::String(id)) if !id.is_empty() => (id, true),
        _ => (server_id(), false),
    };
    let true_time = millis("ttm", a.ttm)?;
    let device_time = millis("dtm", a.dtm)?;
    let sent_at = millis("stm", a.stm)?;
    let schema_version = a.schema_version;
    let (context, properties) = (a.context, a.properties);
    let platform = platform_of(a.p.as_ref().and_then(Value::as_str), &context).to_owned();
    let app_version = context
        .get("application")
        .and_then(|a| a.get("version"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(Mapped {
        event: Event {
            event_id,
            event_name,
            schema_version: schema_version.filter(|v| *v >= 1).unwrap_or(1),
            user_id,
            device_id,
            session_id,
            timestamp_event: true_time.or(device_time).unwrap_or(received_at),
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
        versioned: schema_version.is_some(),
    })
}

/// An event's fields renamed to the native names, without validating anything: what
/// the quarantine keeps of an event that could not be mapped.
pub fn native_names(fields: Map<String, Value>) -> Map<String, Value> {
    let a = arrange(fields);
    let mut out = Map::new();
    let name = a.event_name.map(Value::String).or(a.unknown_kind);
    for (field, value) in [
        ("event_name", name),
        ("event_id", a.event_id),
        ("user_id", a.user_id),
        ("device_id", a.device_id),
        ("session_id", a.session_id),
        ("schema_version", a.schema_version.map(Value::from)),
        ("ttm", a.ttm),
        ("dtm", a.dtm),
        ("stm", a.stm),
        ("p", a.p),
    ] {
        if let Some(value) = value {
            out.insert(field.into(), value);
        }
    }
    out.insert("context".into(), Value::Object(a.context));
    out.insert("properties".into(), Value::Object(a.properties));
    out
}

/// Where a field could not be decoded, and why.
type Problem = (String, &'static str);

/// An event's fields sorted into the native ones, in one pass over them.
#[derive(Default)]
struct Arranged {
    event_name: Option<String>,
    /// An `e` that is none of the known kinds, kept for the quarantine.
    unknown_kind: Option<Value>,
    event_id: Option<Value>,
    user_id: Option<Value>,
    device_id: Option<Value>,
    session_id: Option<Value>,
    schema_version: Option<u32>,
    ttm: Option<Value>,
    dtm: Option<Value>,
    stm: Option<Value>,
    p: Option<Value>,
    context: Map<String, Value>,
    properties: Map<String, Value>,
    /// The first field that could not be decoded (a self-describing event or context
    /// that is not JSON), which is left out.
    problem: Option<Problem>,
}

/// The first step of [`map_event`] and of [`native_names`].
fn arrange(fields: Map<String, Value>) -> Arranged {
    let mut a = Arranged::default();
    let (mut kind, mut action) = (None, None);
    let (mut ue_pr, mut ue_px, mut co, mut cx) = (None, None, None, None);
    for (field, value) in fields {
        match field.as_str() {
            "e" => kind = Some(value),
            "ue_pr" => ue_pr = Some(value),
            "ue_px" => ue_px = Some(value),
            "co" => co = Some(value),
            "cx" => cx = Some(value),
            "eid" => a.event_id = Some(value),
            "uid" => a.user_id = Some(value),
            "duid" => a.device_id = Some(value),
            "sid" => a.session_id = Some(value),
            "ttm" => a.ttm = Some(value),
            "dtm" => a.dtm = Some(value),
            "stm" => a.stm = Some(value),
            "p" => a.p = Some(value),
            other => {
                if let Some((name, numeric)) = property_name(other) {
                    if other == "se_ac" {
                        action = value.as_str().map(snake_case);
                    }
                    let value = if numeric { number(value) } else { value };
                    a.properties.insert(name.into(), value);
                } else {
                    let name = context_name(other).map_or(field, str::to_owned);
                    a.context.entry(name).or_insert(value);
                }
            }
        }
    }
    // The self-describing event, when there is one: its name, version and data.
    let sde = decoded_json(ue_pr, "ue_pr", ue_px, "ue_px").map(|r| r.and_then(unwrap_event));
    a.event_name = match (kind.as_ref().and_then(Value::as_str), &sde) {
        (Some("pv"), _) => Some("page_view".to_owned()),
        (Some("pp"), _) => Some("page_ping".to_owned()),
        (Some("tr"), _) => Some("transaction".to_owned()),
        (Some("ti"), _) => Some("transaction_item".to_owned()),
        (Some("se"), _) => Some(
            action
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "structured_event".to_owned()),
        ),
        (Some("ue"), Some(Ok((name, _, _)))) => Some(snake_case(name)),
        (Some("ue"), None) => {
            a.problem = Some((
                "/ue_pr".to_owned(),
                "a self-describing event (`e=ue`) needs `ue_pr` or `ue_px`",
            ));
            None
        }
        _ => None,
    };
    if a.event_name.is_none() && !matches!(kind.as_ref().and_then(Value::as_str), Some("ue")) {
        a.unknown_kind = kind;
    }
    match sde {
        Some(Ok((_, model, data))) => {
            a.schema_version = Some(model);
            match data {
                Value::Object(data) => a.properties = data,
                other => {
                    a.properties.insert("data".into(), other);
                }
            }
        }
        Some(Err(why)) => a.problem = Some(why),
        None => {}
    }
    match decoded_json(co, "co", cx, "cx") {
        Some(Ok(Value::Object(mut contexts))) => {
            if let Some(Value::Array(list)) = contexts.remove("data") {
                for entry in list {
                    let Value::Object(mut entry) = entry else {
                        continue;
                    };
                    let name = entry
                        .get("schema")
                        .and_then(Value::as_str)
                        .and_then(schema_name)
                        .map(|(name, _)| snake_case(name));
                    if let (Some(name), Some(data)) = (name, entry.remove("data")) {
                        a.context.insert(name, data);
                    }
                }
            }
        }
        Some(Ok(_)) => {}
        Some(Err(why)) => a.problem = Some(why),
        None => {}
    }
    if let Some(Value::Object(session)) = a.context.get("client_session") {
        if a.device_id.is_none() {
            a.device_id = session.get("userId").cloned();
        }
        if a.session_id.is_none() {
            a.session_id = session.get("sessionId").cloned();
        }
    }
    a
}

/// A JSON field sent either plain (`plain`) or base64url-encoded (`encoded`); `None`
/// when the event has neither.
fn decoded_json(
    plain: Option<Value>,
    plain_name: &str,
    encoded: Option<Value>,
    encoded_name: &str,
) -> Option<Result<Value, Problem>> {
    if let Some(value) = plain {
        return Some(match value {
            Value::String(text) => serde_json::from_str(&text)
                .map_err(|_| (format!("/{plain_name}"), "the field is not valid JSON")),
            object @ Value::Object(_) => Ok(object),
            _ => Err((
                format!("/{plain_name}"),
                "the field must be a string of JSON",
            )),
        });
    }
    Some(
        encoded?
            .as_str()
            .and_then(|t| decode_base64(t.trim()))
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| {
                (
                    format!("/{encoded_name}"),
                    "the field is not base64-encoded JSON",
                )
            }),
    )
}

/// `{"schema": …unstruct_event…, "data": {"schema": "iglu:…/name/jsonschema/M-R-A",
/// "data": {…}}}` → (name, MODEL, data).
fn unwrap_event(mut envelope: Value) -> Result<(String, u32, Value), Problem> {
    let mut inner = envelope.get_mut("data").map(Value::take).ok_or_else(|| {
        (
            "/ue_pr/data".to_owned(),
            "a self-describing event needs the unstruct_event envelope's `data`",
        )
    })?;
    let (name, model) = inner
        .get("schema")
        .and_then(Value::as_str)
        .and_then(schema_name)
        .ok_or_else(|| {
            (
                "/ue_pr/data/schema".to_owned(),
                "the event's schema must be an Iglu URI such as iglu:com.acme/checkout_done/jsonschema/1-0-0",
            )
        })?;
    let name = name.to_owned();
    let data = inner
        .get_mut("data")
        .map(Value::take)
        .unwrap_or(Value::Null);
    Ok((name, model, data))
}

/// A time field in milliseconds since the epoch (a string of digits, as trackers send
/// it, or a number).
fn millis(field: &str, value: Option<Value>) -> Result<Option<OffsetDateTime>, EventError> {
    let bad = || {
        EventError::new(
            ErrorCode::InvalidValue,
            format!("/{field}"),
            format!("`{field}` must be milliseconds since 1970"),
        )
    };
    match value {
        None => Ok(None),
        Some(Value::String(text)) => text
            .trim()
            .parse::<i64>()
            .ok()
            .and_then(epoch_millis)
            .map(Some)
            .ok_or_else(bad),
        Some(Value::Number(n)) => n.as_i64().and_then(epoch_millis).map(Some).ok_or_else(bad),
        Some(_) => Err(EventError::wrong_type(
            format!("/{field}"),
            "a string of digits",
        )),
    }
}

/// A numeric field sent as a string, as a number when it is one.
fn number(value: Value) -> Value {
    match &value {
        Value::String(text) => text
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(value, |n| {
                if n.as_f64()
                    .is_some_and(|f| f.fract() == 0.0 && f.abs() < 9e15)
                {
                    Value::from(n.as_f64().unwrap_or_default() as i64)
                } else {
                    Value::Number(n)
                }
            }),
        _ => value,
    }
}

/// The platform table of the module docs.
fn platform_of(p: Option<&str>, context: &Map<String, Value>) -> &'static str {
    let mobile = || {
        let os = context
            .get("mobile_context")
            .and_then(|m| m.get("osType"))
            .and_then(Value::as_str)
            .or_else(|| context.get("user_agent").and_then(Value::as_str))
            .unwrap_or_default()
            .to_ascii_lowercase();
        if os.contains("ios") || os.contains("iphone") || os.contains("ipad") {
            "ios"
        } else if os.contains("android") {
            "android"
        } else {
            "unknown"
        }
    };
    match p {
        Some("web") => "web",
        Some("pc") => "desktop",
        Some("srv") => "server",
        Some("tv") => "tv",
        Some("mob" | "app") => mobile(),
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-29 12:00 UTC);

    fn map(v: Value) -> Result<Mapped, EventError> {
        map_event(v, NOW, false, &|| "server-generated-id".to_owned())
    }

    fn b64url(v: &Value) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn a_self_describing_event_takes_its_schema_name_version_and_data() {
        let event = json!({
            "schema": "iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0",
            "data": {"schema": "iglu:com.acme/checkout_done/jsonschema/2-0-1", "data": {"total": 12.5}}
        });
        let contexts = json!({
            "schema": "iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-0",
            "data": [
                {"schema": "iglu:com.snowplowanalytics.snowplow/mobile_context/jsonschema/1-0-2",
                 "data": {"osType": "android", "osVersion": "14"}},
                {"schema": "iglu:com.snowplowanalytics.mobile/application/jsonschema/1-0-0",
                 "data": {"version": "5.2.0", "build": "77"}}
            ]
        });
        let m = map(json!({
            "e": "ue", "eid": "3c2b5a0e-1111-4c5e-9b1a-000000000001", "aid": "shop-android",
            "p": "mob", "uid": "u1", "duid": "d1", "sid": "s1", "ip": "203.0.113.7",
            "dtm": "1764417540000", "stm": "1764417570000", "tv": "andr-6.0.0",
            "ue_px": b64url(&event), "cx": b64url(&contexts)
        }))
        .unwrap();
        let e = &m.event;
        assert_eq!(e.event_name, "checkout_done");
        assert_eq!(e.schema_version, 2);
        assert!(m.versioned);
        assert!(m.client_event_id);
        assert_eq!(e.properties["total"], 12.5);
        assert_eq!(e.platform, "android");
        assert_eq!(e.app_version.as_deref(), Some("5.2.0"));
        assert_eq!(e.user_id.as_deref(), Some("u1"));
        assert_eq!(e.device_id.as_deref(), Some("d1"));
        assert_eq!(e.session_id.as_deref(), Some("s1"));
        assert_eq!(e.context["ip"], "203.0.113.7");
        assert_eq!(e.context["app_id"], "shop-android");
        assert_eq!(e.context["tracker"], "andr-6.0.0");
        assert_eq!(e.context["mobile_context"]["osVersion"], "14");
        assert_eq!(e.timestamp_event, datetime!(2025-11-29 11:59 UTC));
        assert_eq!(m.sent_at, Some(datetime!(2025-11-29 11:59:30 UTC)));
    }

    #[test]
    fn page_views_and_structured_events() {
        let pv = map(json!({"e": "pv", "duid": "d", "p": "web", "url": "https://shop.example/"}))
            .unwrap();
        assert_eq!(pv.event.event_name, "page_view");
        assert_eq!(pv.event.platform, "web");
        assert!(!pv.versioned);
        assert!(!pv.client_event_id);
        assert_eq!(pv.event.timestamp_event, NOW);
        assert_eq!(pv.event.context["page_url"], "https://shop.example/");
        let se = map(json!({"e": "se", "uid": "u", "p": "pc", "se_ca": "shop", "se_ac": "Add To Basket", "se_va": "2"})).unwrap();
        assert_eq!(se.event.event_name, "add_to_basket");
        assert_eq!(se.event.platform, "desktop");
        assert_eq!(se.event.properties["category"], "shop");
        assert_eq!(se.event.properties["value"], 2);
    }

    #[test]
    fn broken_events_are_refused_with_the_field() {
        assert_eq!(map(json!({"duid": "d"})).unwrap_err().path, "/e");
        assert_eq!(map(json!({"e": "zz", "duid": "d"})).unwrap_err().path, "/e");
        assert_eq!(map(json!({"e": "pv"})).unwrap_err().path, "/duid");
        assert_eq!(
            map(json!({"e": "pv", "duid": "d", "dtm": "soon"}))
                .unwrap_err()
                .path,
            "/dtm"
        );
        assert_eq!(
            map(json!({"e": "ue", "duid": "d", "ue_px": "!!!"}))
                .unwrap_err()
                .path,
            "/ue_px"
        );
        assert_eq!(
            map(json!({"e": "ue", "duid": "d"})).unwrap_err().path,
            "/ue_pr"
        );
        assert_eq!(
            map(json!({"e": "pv", "duid": "d", "cx": "???"}))
                .unwrap_err()
                .path,
            "/cx"
        );
    }

    #[test]
    fn anonymous_events_keep_no_identifiers() {
        let Value::Object(mut fields) =
            json!({"e": "pv", "duid": "d", "uid": "u", "ip": "203.0.113.7", "sid": "s"})
        else {
            unreachable!()
        };
        anonymize(&mut fields);
        let m = map_event(Value::Object(fields), NOW, true, &|| "id".to_owned()).unwrap();
        assert_eq!((m.event.user_id, m.event.device_id), (None, None));
        assert!(m.event.context.get("ip").is_none());
        assert_eq!(m.event.session_id.as_deref(), Some("s"));
    }

    #[test]
    fn iglu_names() {
        assert_eq!(
            schema_name("iglu:com.acme/checkout_done/jsonschema/1-0-2"),
            Some(("checkout_done", 1))
        );
        assert_eq!(
            schema_name("iglu:com.acme/x/jsonschema/12-1-0"),
            Some(("x", 12))
        );
        assert_eq!(schema_name("com.acme/x/jsonschema/1-0-0"), None);
        assert_eq!(schema_name("iglu:com.acme/x/jsonschema/v1"), None);
    }
}
