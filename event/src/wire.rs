//! The HTTP contract between the collector and whoever reads its answers (SDKs, the load
//! tester, the shadow proxy): header names, per-event statuses, the answer body, and
//! the `X-Tollgate-Outcomes` header. One definition, written by the collector and read
//! by the tools, kept honest by round-trip tests.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::error::EventError;

/// Marks the copies a shadow proxy sends, so that a collector logs them apart (believed
/// only from configured shadow proxies).
pub const SHADOW_HEADER: &str = "x-tollgate-shadow";

/// Asks for [`SOURCE_HEADER`] and [`OUTCOMES_HEADER`] on the answer: a shadow proxy
/// compares two collectors event by event, on every route (Segment answers carry no
/// per-event results) and by region and source, which only the collector knows.
pub const EXPLAIN_HEADER: &str = "x-tollgate-explain";

/// The source (write key's id, never the key) a request was accepted under.
pub const SOURCE_HEADER: &str = "x-tollgate-source";

/// One `status[:code][@region]` per event, in request order (see [`encode_outcome`]).
pub const OUTCOMES_HEADER: &str = "x-tollgate-outcomes";

/// The client's send time for NDJSON bodies (JSON bodies carry `sent_at`).
pub const SENT_AT_HEADER: &str = "x-tollgate-sent-at";

/// Stripe-style request-level idempotency: a replay with the same key gets the first
/// answer; the same key with another body gets 422.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// Set on an answer replayed for an `Idempotency-Key`.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// The server-generated id of a request, shared by all its events' records.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The ingest protocol a collector path speaks: one table, read by the collector's
/// router and by the shadow proxy when it reads the requests it mirrors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `/v1/events`.
    Native,
    /// `/v1/batch` and `/v1/import` (`None`), `/v1/<call>` (one call).
    Segment(Option<crate::segment::CallType>),
    /// PostHog's capture routes: `/batch`, `/e`, `/i/v0/e`, `/capture`, `/track`,
    /// `/engage`, with or without a trailing slash.
    PostHog,
    /// Snowplow's `POST /com.snowplowanalytics.snowplow/tp2`.
    Snowplow,
    /// Snowplow's `GET /i` pixel (also under `/com.snowplowanalytics.snowplow/`).
    SnowplowPixel,
}

impl Protocol {
    /// The API its events are logged under (`api` in the record).
    pub fn api(self) -> crate::Api {
        match self {
            Protocol::Native => crate::Api::Native,
            Protocol::Segment(_) => crate::Api::Segment,
            Protocol::PostHog => crate::Api::PostHog,
            Protocol::Snowplow | Protocol::SnowplowPixel => crate::Api::Snowplow,
        }
    }

    /// The protocol of a request path (without its query).
    pub fn of_path(path: &str) -> Option<Protocol> {
        use crate::segment::CallType;
        Some(match path {
            "/v1/events" => Protocol::Native,
            "/v1/batch" | "/v1/import" => Protocol::Segment(None),
            "/com.snowplowanalytics.snowplow/tp2" => Protocol::Snowplow,
            "/i" | "/com.snowplowanalytics.snowplow/i" => Protocol::SnowplowPixel,
            _ => {
                if let Some(call) = path.strip_prefix("/v1/").and_then(CallType::from_name) {
                    return Some(Protocol::Segment(Some(call)));
                }
                let path = path.strip_suffix('/').unwrap_or(path);
                match path {
                    "/batch" | "/e" | "/i/v0/e" | "/capture" | "/track" | "/engage" => {
                        Protocol::PostHog
                    }
                    _ => return None,
                }
            }
        })
    }
}

/// What became of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Durably logged.
    Accepted,
    /// Already logged within the dedupe window (or earlier in this batch).
    Duplicate,
    /// Broke a rule; in the quarantine with its reason.
    Rejected,
    /// Being written by another request right now; resend the batch.
    Retry,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::Accepted,
        Status::Duplicate,
        Status::Rejected,
        Status::Retry,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Accepted => "accepted",
            Status::Duplicate => "duplicate",
            Status::Rejected => "rejected",
            Status::Retry => "retry",
        }
    }

    pub fn from_name(name: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// One event's answer in a native answer body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventResult {
    pub event_id: Option<String>,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<EventError>,
}

/// The answer to a native request whose events were all processed:
/// `{"accepted":n,"duplicate":n,"rejected":n,"retry":n,"results":[…]}`.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub accepted: usize,
    pub duplicate: usize,
    pub rejected: usize,
    pub retry: usize,
    pub results: Vec<EventResult>,
}

impl Answer {
    /// Appends the answer as JSON: the bytes `serde_json::to_vec` writes, without the
    /// generic serializer (a request's answer is written on the hot path).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        use crate::json::{Object, write_array, write_str};
        out.reserve(64 + self.results.len() * 64);
        let mut answer = Object::open(out);
        answer.int("accepted", Some(self.accepted));
        answer.int("duplicate", Some(self.duplicate));
        answer.int("rejected", Some(self.rejected));
        answer.int("retry", Some(self.retry));
        write_array(answer.key("results"), &self.results, |out, result| {
            let mut object = Object::open(out);
            object.str("event_id", result.event_id.as_deref());
            object.str("status", Some(result.status.as_str()));
            if let Some(error) = &result.error {
                let mut e = Object::open(object.key("error"));
                e.str("code", Some(error.code.as_str()));
                write_str(e.key("path"), &error.path);
                write_str(e.key("message"), &error.message);
                e.close();
            }
            object.close();
        });
        answer.close();
    }
}

/// A reader's view of an answer body: each event's status and error code, borrowed
/// from the body (tools read many answers a second).
#[derive(Debug, Default, Deserialize)]
pub struct AnswerView<'a> {
    #[serde(default, borrow)]
    pub results: Vec<ResultView<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct ResultView<'a> {
    pub status: Status,
    #[serde(default, borrow)]
    pub error: Option<ErrorView<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct ErrorView<'a> {
    #[serde(borrow)]
    pub code: Cow<'a, str>,
}

/// One event of the `X-Tollgate-Outcomes` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome<'a> {
    /// `status` or `status:code`, as in the header (a comparison's key).
    pub label: &'a str,
    pub status: Option<Status>,
    /// The error code of a rejected event.
    pub code: Option<&'a str>,
    /// The region an accepted event was logged under.
    pub region: Option<&'a str>,
}

/// Appends one event's `status[:code][@region]` to an outcomes header value.
pub fn encode_outcome(out: &mut String, status: Status, code: Option<&str>, region: Option<&str>) {
    if !out.is_empty() {
        out.push(',');
    }
    out.push_str(status.as_str());
    if let Some(code) = code {
        out.push(':');
        out.push_str(code);
    }
    if let Some(region) = region {
        out.push('@');
        out.push_str(region);
    }
}

/// The events of an outcomes header value, in request order. Codes and regions are
/// identifiers (`[a-z0-9_]`), so `,`, `:` and `@` never occur inside them.
pub fn decode_outcomes(value: &str) -> impl Iterator<Item = Outcome<'_>> {
    value
        .split(',')
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (label, region) = match item.split_once('@') {
                Some((label, region)) => (label, Some(region)),
                None => (item, None),
            };
            let (status, code) = match label.split_once(':') {
                Some((status, code)) => (status, Some(code)),
                None => (label, None),
            };
            Outcome {
                label,
                status: Status::from_name(status),
                code,
                region,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use proptest::prelude::*;

    fn status() -> impl Strategy<Value = Status> {
        prop::sample::select(Status::ALL.to_vec())
    }

    fn code() -> impl Strategy<Value = ErrorCode> {
        prop::sample::select(ErrorCode::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn outcomes_round_trip(
            events in prop::collection::vec(
                (status(), prop::option::of(code()), prop::option::of("[a-z][a-z0-9_]{0,12}")),
                0..40,
            )
        ) {
            let mut header = String::new();
            for (status, code, region) in &events {
                encode_outcome(&mut header, *status, code.map(ErrorCode::as_str), region.as_deref());
            }
            let decoded: Vec<Outcome<'_>> = decode_outcomes(&header).collect();
            prop_assert_eq!(decoded.len(), events.len());
            for (outcome, (status, code, region)) in decoded.iter().zip(&events) {
                prop_assert_eq!(outcome.status, Some(*status));
                prop_assert_eq!(outcome.code, code.map(ErrorCode::as_str));
                prop_assert_eq!(outcome.region, region.as_deref());
                let label = match code {
                    Some(code) => format!("{}:{}", status.as_str(), code.as_str()),
                    None => status.as_str().to_owned(),
                };
                prop_assert_eq!(outcome.label, label);
            }
        }

        #[test]
        fn answers_read_back_as_written(
            results in prop::collection::vec((status(), prop::option::of(code()), "(\\PC|[\"\\\\\\x00-\\x1f]){0,20}"), 0..20)
        ) {
            let answer = Answer {
                results: results
                    .iter()
                    .map(|(status, code, id)| EventResult {
                        // The hand-written writer must escape ids and messages, and
                        // write a missing id as null, as serde does.
                        event_id: (!id.is_empty()).then(|| id.clone()),
                        status: *status,
                        error: code.map(|c| EventError::new(c, format!("/{id}"), format!("a \"message\" about {id}\n"))),
                    })
                    .collect(),
                ..Answer::default()
            };
            let body = serde_json::to_vec(&answer).unwrap();
            let mut written = Vec::new();
            answer.write_json(&mut written);
            prop_assert_eq!(String::from_utf8(written).unwrap(), String::from_utf8(body.clone()).unwrap());
            let view: AnswerView<'_> = serde_json::from_slice(&body).unwrap();
            prop_assert_eq!(view.results.len(), results.len());
            for (read, (status, code, _)) in view.results.iter().zip(&results) {
                prop_assert_eq!(read.status, *status);
                prop_assert_eq!(read.error.as_ref().map(|e| e.code.as_ref()), code.map(ErrorCode::as_str));
            }
            let back: Answer = serde_json::from_slice(&body).unwrap();
            prop_assert_eq!(back, answer);
        }
    }
}
