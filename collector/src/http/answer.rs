//! The HTTP answer to a processed request: status, body in the shape the client's API
//! expects, and the headers (`Retry-After`, request id, per-event explanation).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;
use tollgate_event::Api;
use tollgate_event::wire::{OUTCOMES_HEADER, REQUEST_ID_HEADER, SOURCE_HEADER};

use crate::error::json_bytes_response;
use crate::ingest::{IngestOutcome, Status};

/// 200, or 503 when some events must be resent (another request is writing them).
pub(super) fn status(outcome: &IngestOutcome) -> StatusCode {
    if outcome.answer.retry > 0 {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

/// The body: the per-event answer for the native API; for Segment, the shape its SDKs
/// read (they only look at the status; per-event outcomes are logged and counted).
pub(super) fn body(api: Api, outcome: &IngestOutcome) -> Vec<u8> {
    let answer = &outcome.answer;
    match api {
        Api::Native => serde_json::to_vec(answer),
        Api::Segment if answer.retry > 0 => serde_json::to_vec(&json!({"error": {
            "code": "retry",
            "message": "some events are being written by another request; resend the batch"
        }})),
        Api::Segment => serde_json::to_vec(&json!({"success": true})),
    }
    .expect("answers serialize")
}

/// What `X-Tollgate-Explain: 1` adds: the source and one outcome per event.
pub(super) struct Explanation<'a> {
    pub source: &'a str,
    /// The region of events logged without a regional policy.
    pub default_region: &'a str,
}

/// The response, with its headers.
pub(super) fn response(
    status: StatusCode,
    body: Vec<u8>,
    outcome: &IngestOutcome,
    request_id: &str,
    explain: Option<Explanation<'_>>,
) -> Response<Full<Bytes>> {
    let mut response = json_bytes_response(status, Bytes::from(body));
    let headers = response.headers_mut();
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
