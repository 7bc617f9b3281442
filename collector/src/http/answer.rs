//! The HTTP answer to a processed request: status, body in the shape the client's API
//! expects, and the headers (`Retry-After`, request id, per-event explanation).

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, PRAGMA};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;
use tollgate_event::wire::{OUTCOMES_HEADER, Protocol, REQUEST_ID_HEADER, SOURCE_HEADER};

use crate::error::json_bytes_response;
use crate::ingest::{IngestOutcome, Status};

/// The answer's shape: what the client's SDK family reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// The per-event answer (`results`).
    Native,
    /// `{"success": true}`.
    Segment,
    /// `{"status": 1}`; `beacon=1` (a page being left) gets 204 without a body.
    PostHog { beacon: bool },
    /// `{"status": "ok"}` to a `tp2` POST.
    Snowplow,
    /// A 1×1 transparent GIF that no cache keeps.
    Pixel,
}

/// The 1×1 transparent GIF a Snowplow pixel request gets.
const PIXEL: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

impl Shape {
    pub(super) fn of(protocol: Protocol, query: Option<&str>) -> Shape {
        match protocol {
            Protocol::Native => Shape::Native,
            Protocol::Segment(_) => Shape::Segment,
            Protocol::PostHog => Shape::PostHog {
                beacon: super::unwrap::param(query, "beacon").is_some_and(|b| b == "1"),
            },
            Protocol::Snowplow => Shape::Snowplow,
            Protocol::SnowplowPixel => Shape::Pixel,
        }
    }

    /// 200 (204 to a PostHog beacon), or 503 when some events must be resent (another
    /// request is writing them).
    pub(super) fn status(self, outcome: &IngestOutcome) -> StatusCode {
        if outcome.answer.retry > 0 {
            StatusCode::SERVICE_UNAVAILABLE
        } else if self == (Shape::PostHog { beacon: true }) {
            StatusCode::NO_CONTENT
        } else {
            StatusCode::OK
        }
    }

    /// Whether the body is JSON (the pixel's is a GIF).
    pub(super) fn is_json(self) -> bool {
        self != Shape::Pixel
    }

    /// The body: the per-event answer for the native API; for the other families, the
    /// shape their SDKs read (they only look at the status; per-event outcomes are
    /// logged, counted and given by `X-Tollgate-Explain`).
    pub(super) fn body(self, outcome: &IngestOutcome) -> Vec<u8> {
        let answer = &outcome.answer;
        let body = match self {
            Shape::Native => {
                let mut body = Vec::new();
                answer.write_json(&mut body);
                Ok(body)
            }
            _ if answer.retry > 0 => serde_json::to_vec(&json!({"error": {
                "code": "retry",
                "message": "some events are being written by another request; resend the batch"
            }})),
            Shape::Segment => serde_json::to_vec(&json!({"success": true})),
            Shape::PostHog { beacon: true } => Ok(Vec::new()),
            Shape::PostHog { beacon: false } => serde_json::to_vec(&json!({"status": 1})),
            Shape::Snowplow => serde_json::to_vec(&json!({"status": "ok"})),
            Shape::Pixel => Ok(PIXEL.to_vec()),
        };
        body.expect("answers serialize")
    }

    /// The response, with its headers.
    pub(super) fn response(
        self,
        status: StatusCode,
        body: Vec<u8>,
        outcome: &IngestOutcome,
        request_id: &str,
        explain: Option<Explanation<'_>>,
    ) -> Response<Full<Bytes>> {
        let mut response = json_bytes_response(status, Bytes::from(body));
        let headers = response.headers_mut();
        if self == Shape::Pixel && status == StatusCode::OK {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("image/gif"));
            headers.insert(
                CACHE_CONTROL,
                HeaderValue::from_static("no-cache, no-store, must-revalidate"),
            );
            headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
        }
        if status == StatusCode::NO_CONTENT {
            headers.remove(CONTENT_TYPE);
        }
        if outcome.answer.retry > 0 {
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from(1u32));
        }
        headers.insert(
            REQUEST_ID_HEADER,
            HeaderValue::from_str(request_id).expect("a uuid is a valid header"),
        );
        if let Some(explain) = explain {
            if let Ok(value) = HeaderValue::from_str(explain.source) {
                headers.insert(SOURCE_HEADER, value);
            }
            let outcomes = explained(outcome, explain.default_region);
            if let Ok(value) = HeaderValue::from_str(&outcomes) {
                headers.insert(OUTCOMES_HEADER, value);
            }
        }
        response
    }
}

/// What `X-Tollgate-Explain: 1` adds: the source and one outcome per event.
pub(super) struct Explanation<'a> {
    pub source: &'a str,
    /// The region of events logged without a regional policy.
    pub default_region: &'a str,
}

/// `status[:code][@region]` per event, in request order: `accepted@eu,rejected:unknown_event`.
fn explained(outcome: &IngestOutcome, default_region: &str) -> String {
    let results = &outcome.answer.results;
    let mut out = String::with_capacity(results.len() * 16);
    for (result, policy) in results.iter().zip(&outcome.policies) {
        let region = (result.status == Status::Accepted).then(|| {
            policy
                .as_ref()
                .map_or(default_region, |p| p.region.as_str())
        });
        let code = result.error.as_ref().map(|e| e.code.as_str());
        tollgate_event::wire::encode_outcome(&mut out, result.status, code, region);
    }
    out
}
