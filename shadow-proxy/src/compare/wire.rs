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
}

/// The events of a request body, for the native API (`/v1/events`) and the Segment
/// routes (mapped the way the collector maps them, so names and platforms match).
pub fn events_of<'a>(path: &str, body: &'a [u8]) -> Vec<Seen<'a>> {
    use tollgate_event::segment::{BatchDefaults, CallType, map_message};
    let segment_call = path.strip_prefix("/v1/").and_then(CallType::from_name);
    if path == "/v1/events"
        || (segment_call.is_none() && !matches!(path, "/v1/batch" | "/v1/import"))
    {
        return serde_json::from_slice::<NativeEnvelope>(body)
            .map(|e| e.events)
            .unwrap_or_default()
            .into_iter()
            .map(|e| Seen {
                event_name: e.event_name.unwrap_or(Cow::Borrowed("(unnamed)")),
                platform: e.platform,
                app_version: e.app_version,
            })
            .collect();
    }
    let Ok(serde_json::Value::Object(mut root)) = serde_json::from_slice(body) else {
        return Vec::new();
    };
    let (messages, context) = match segment_call {
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
            match map_message(message, segment_call, defaults, now, &String::new) {
                Ok(mapped) => Seen {
                    event_name: Cow::Owned(mapped.event.event_name),
                    platform: Some(Cow::Owned(mapped.event.platform)),
                    app_version: mapped.event.app_version.map(Cow::Owned),
                },
                Err(_) => Seen {
                    event_name: "(invalid)".into(),
                    ..Seen::default()
                },
            }
        })
        .collect()
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
