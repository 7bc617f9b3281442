//! Reading the two sides' traffic: the events of a mirrored request (native and Segment
//! bodies) and what each collector answered for each of them.

use std::borrow::Cow;

use http::StatusCode;
use serde::Deserialize;
use tollgate_event::wire::{OUTCOMES_HEADER, SOURCE_HEADER, Status};

/// What one side answered to a mirrored request.
#[derive(Debug, Clone, Copy)]
pub struct Reply<'a> {
    pub status: StatusCode,
    pub headers: &'a http::HeaderMap,
    pub body: &'a [u8],
}

/// Which side a reply came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Primary,
    Shadow,
    Replica,
}

/// An event of a mirrored request, as far as the comparison needs it (borrowed from
/// the body where it can be: this runs for every mirrored event).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Seen<'a> {
    pub event_name: Cow<'a, str>,
    pub platform: Option<Cow<'a, str>>,
    pub app_version: Option<Cow<'a, str>>,
    /// The ids sampling can key on.
    pub user_id: Option<Cow<'a, str>>,
    pub device_id: Option<Cow<'a, str>>,
    pub event_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct NativeEnvelope<'a> {
    #[serde(default, borrow)]
    events: Vec<NativeEvent<'a>>,
}

#[derive(Deserialize)]
struct NativeEvent<'a> {
    #[serde(default, borrow)]
    event_name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    platform: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    app_version: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    user_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    device_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    event_id: Option<Cow<'a, str>>,
}

/// Largest body the comparison decompresses a copy to.
const MAX_READABLE: u64 = 32 << 20;

/// A mirrored body as the collector reads it: a gzip `Content-Encoding` undone, and a
/// PostHog request's form, base64 or gzip-js layers taken off (the event crate's
/// `posthog::unwrap_body`, as the collector does). `None` when it cannot be read; its
/// events are then not counted.
pub fn readable_body<'a>(
    target: &str,
    headers: &http::HeaderMap,
    body: &'a [u8],
) -> Option<Cow<'a, [u8]>> {
    use std::io::Read;
    let gunzip = |bytes: &[u8]| {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .take(MAX_READABLE)
            .read_to_end(&mut out)
            .map(|_| out)
    };
    let header = |name: http::header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default()
    };
    let gzipped = matches!(
        header(http::header::CONTENT_ENCODING).trim(),
        "gzip" | "x-gzip"
    );
    let body: Cow<'a, [u8]> = if gzipped {
        Cow::Owned(gunzip(body).ok()?)
    } else {
        Cow::Borrowed(body)
    };
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    if tollgate_event::wire::Protocol::of_path(path)
        != Some(tollgate_event::wire::Protocol::PostHog)
    {
        return Some(body);
    }
    let form = header(http::header::CONTENT_TYPE).starts_with("application/x-www-form-urlencoded");
    let unwrapped = tollgate_event::posthog::unwrap_body(&body, form, query, gunzip).ok()?;
    Some(Cow::Owned(unwrapped.into_owned()))
}

/// The events of a request (`target` is its path and query), mapped the way the
/// collector maps each protocol, so that names and platforms match: the native API,
/// Segment, PostHog (JSON bodies: the batch object, an array or one event) and
/// Snowplow (`tp2` bodies and pixel queries). Bodies the proxy cannot read (compressed
/// or wrapped) give no events.
pub fn events_of<'a>(target: &str, body: &'a [u8]) -> Vec<Seen<'a>> {
    use tollgate_event::wire::Protocol;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match Protocol::of_path(path) {
        Some(Protocol::Segment(call)) => segment_events(call, body),
        Some(Protocol::PostHog) => posthog_events(body),
        Some(Protocol::Snowplow) => snowplow_events(body),
        Some(Protocol::SnowplowPixel) => {
            let fields: serde_json::Map<String, serde_json::Value> =
                form_urlencoded::parse(query.as_bytes())
                    .map(|(k, v)| (k.into_owned(), serde_json::Value::String(v.into_owned())))
                    .collect();
            vec![snowplow_seen(serde_json::Value::Object(fields))]
        }
        Some(Protocol::Native) | None => native_events(body),
    }
}

fn native_events(body: &[u8]) -> Vec<Seen<'_>> {
    serde_json::from_slice::<NativeEnvelope>(body)
        .map(|e| e.events)
        .unwrap_or_default()
        .into_iter()
        .map(|e| Seen {
            event_name: e.event_name.unwrap_or(Cow::Borrowed("(unnamed)")),
            platform: e.platform,
            app_version: e.app_version,
            user_id: e.user_id,
            device_id: e.device_id,
            event_id: e.event_id,
        })
        .collect()
}

/// What the comparison keeps of a mapped event, or `(invalid)`.
fn seen(
    mapped: Result<tollgate_event::mapped::Mapped, tollgate_event::EventError>,
) -> Seen<'static> {
    match mapped {
        Ok(mapped) => {
            let e = mapped.event;
            Seen {
                event_name: Cow::Owned(e.event_name),
                platform: Some(Cow::Owned(e.platform)),
                app_version: e.app_version.map(Cow::Owned),
                user_id: e.user_id.map(Cow::Owned),
                device_id: e.device_id.map(Cow::Owned),
                event_id: mapped.client_event_id.then_some(Cow::Owned(e.event_id)),
            }
        }
        Err(_) => Seen {
            event_name: "(invalid)".into(),
            ..Seen::default()
        },
    }
}

fn segment_events(
    call: Option<tollgate_event::segment::CallType>,
    body: &[u8],
) -> Vec<Seen<'static>> {
    use tollgate_event::segment::{BatchDefaults, map_message};
    let Ok(serde_json::Value::Object(mut root)) = serde_json::from_slice(body) else {
        return Vec::new();
    };
    let (messages, context) = match call {
        Some(_) => (vec![serde_json::Value::Object(root)], None),
        None => {
            let messages = match root.remove("batch") {
                Some(serde_json::Value::Array(messages)) => messages,
                _ => Vec::new(),
            };
            let context = match root.remove("context") {
                Some(serde_json::Value::Object(context)) => Some(context),
                _ => None,
            };
            (messages, context)
        }
    };
    let now = time::OffsetDateTime::now_utc();
    messages
        .into_iter()
        .map(|message| {
            let defaults = BatchDefaults {
                context: context.as_ref(),
                sent_at: None,
            };
            seen(map_message(message, call, defaults, now, &String::new))
        })
        .collect()
}

fn posthog_events(body: &[u8]) -> Vec<Seen<'static>> {
    use serde_json::Value;
    let events = match serde_json::from_slice(body) {
        Ok(Value::Array(events)) => events,
        Ok(Value::Object(mut root)) => match root.remove("batch") {
            Some(Value::Array(events)) => events,
            Some(_) => Vec::new(),
            None => vec![Value::Object(root)],
        },
        _ => Vec::new(),
    };
    let now = time::OffsetDateTime::now_utc();
    events
        .into_iter()
        .map(|event| {
            seen(tollgate_event::posthog::map_event(
                event,
                None,
                now,
                &String::new,
            ))
        })
        .collect()
}

fn snowplow_events(body: &[u8]) -> Vec<Seen<'static>> {
    let events = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(mut root) => match root.get_mut("data").map(serde_json::Value::take) {
            Some(serde_json::Value::Array(events)) => events,
            _ => Vec::new(),
        },
        Err(_) => Vec::new(),
    };
    events.into_iter().map(snowplow_seen).collect()
}

fn snowplow_seen(fields: serde_json::Value) -> Seen<'static> {
    let now = time::OffsetDateTime::now_utc();
    seen(tollgate_event::snowplow::map_event(
        fields,
        now,
        false,
        &String::new,
    ))
}

/// What a side did with each event, and the segments only the collector knows.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcomes<'a> {
    /// Per event, in request order: accepted, duplicate, retry, `rejected:<code>`.
    pub events: Vec<Cow<'a, str>>,
    /// Per event: the region the collector logged it under (valid events only).
    pub regions: Vec<Option<&'a str>>,
    pub source: Option<&'a str>,
}

/// Reads a side's answer: the `X-Tollgate-Outcomes` header when the collector sent one
/// (every route, regions included), else the native body's `results`, else — a Segment
/// route of a collector that does not explain — the HTTP status for every event.
pub fn outcomes_of<'a>(reply: Reply<'a>, events: usize) -> Outcomes<'a> {
    let header = |name: &str| reply.headers.get(name).and_then(|v| v.to_str().ok());
    let source = header(SOURCE_HEADER);
    if let Some(list) = header(OUTCOMES_HEADER) {
        let (events, regions) = tollgate_event::wire::decode_outcomes(list)
            .map(|outcome| (Cow::Borrowed(outcome.label), outcome.region))
            .unzip();
        return Outcomes {
            events,
            regions,
            source,
        };
    }
    let events = match serde_json::from_slice::<tollgate_event::wire::AnswerView>(reply.body) {
        Ok(answer) if !answer.results.is_empty() => answer
            .results
            .into_iter()
            .map(|r| match (r.status, r.error) {
                (Status::Rejected, Some(error)) => Cow::Owned(format!("rejected:{}", error.code)),
                (status, _) => Cow::Borrowed(status.as_str()),
            })
            .collect(),
        _ => {
            let word = match reply.status.as_u16() {
                200 => Cow::Borrowed("accepted"),
                503 => Cow::Borrowed("retry"),
                status => Cow::Owned(format!("http_{status}")),
            };
            vec![word; events]
        }
    };
    Outcomes {
        events,
        regions: Vec::new(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posthog_and_snowplow_requests_are_read_as_the_collector_maps_them() {
        let batch = br#"{"api_key": "k", "batch": [
            {"event": "$pageview", "distinct_id": "u1", "uuid": "ph-1", "properties": {"$lib": "web", "$app_version": "2.0"}},
            {"event": "Signed Up", "distinct_id": "u2", "properties": {"$device_id": "d2", "$lib": "posthog-ios"}},
            {"distinct_id": "u3"}]}"#;
        let seen = events_of("/batch/?compression=none", batch);
        let names: Vec<&str> = seen.iter().map(|s| s.event_name.as_ref()).collect();
        assert_eq!(names, ["$pageview", "signed_up", "(invalid)"]);
        assert_eq!(seen[0].platform.as_deref(), Some("web"));
        assert_eq!(seen[0].app_version.as_deref(), Some("2.0"));
        assert_eq!(seen[0].event_id.as_deref(), Some("ph-1"));
        assert_eq!(seen[1].device_id.as_deref(), Some("d2"));
        // No uuid: the server makes one, which cannot key sampling.
        assert_eq!(seen[1].event_id, None);
        assert_eq!(
            events_of("/e", br#"[{"event": "x", "distinct_id": "u"}]"#).len(),
            1
        );
        assert_eq!(
            events_of("/capture", br#"{"event": "x", "distinct_id": "u"}"#).len(),
            1
        );

        let tp2 = br#"{"schema": "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4",
            "data": [{"e": "se", "se_ac": "Add To Basket", "p": "web", "duid": "d9", "eid": "sp-1"}]}"#;
        let seen = events_of("/com.snowplowanalytics.snowplow/tp2", tp2);
        assert_eq!(seen[0].event_name, "add_to_basket");
        assert_eq!(seen[0].platform.as_deref(), Some("web"));
        assert_eq!(seen[0].device_id.as_deref(), Some("d9"));
        let pixel = events_of("/i?e=pv&p=pc&uid=u7&eid=sp-2", b"");
        // posthog-js's gzip-js, and a gzipped native body: read as the collector reads them.
        let gzip = |data: &[u8]| {
            use std::io::Write;
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(data).unwrap();
            enc.finish().unwrap()
        };
        let js = gzip(br#"[{"event": "$autocapture", "distinct_id": "u"}]"#);
        let target = "/e/?compression=gzip-js&_=1";
        let plain = http::HeaderMap::new();
        let readable = readable_body(target, &plain, &js).unwrap();
        assert_eq!(events_of(target, &readable)[0].event_name, "$autocapture");
        let mut gzipped = http::HeaderMap::new();
        gzipped.insert(http::header::CONTENT_ENCODING, "gzip".parse().unwrap());
        let native = gzip(br#"{"events": [{"event_name": "item_view"}]}"#);
        let readable = readable_body("/v1/events", &gzipped, &native).unwrap();
        assert_eq!(
            events_of("/v1/events", &readable)[0].event_name,
            "item_view"
        );
        assert!(readable_body("/v1/events", &gzipped, b"not gzip").is_none());
        assert_eq!(pixel[0].event_name, "page_view");
        assert_eq!(pixel[0].platform.as_deref(), Some("desktop"));
        assert_eq!(pixel[0].user_id.as_deref(), Some("u7"));
    }
}
