//! Errors of a whole request, and the one place they become HTTP responses.
//!
//! Each variant has a stable `code` (the `error.code` of the JSON body and the label of
//! `tollgate_request_errors_total`). Bad client input is answered precisely and logged at
//! debug level only; server-side failures are logged once where they happen.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::json;

/// Why a request as a whole was not processed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("{0}")]
    InvalidEnvelope(String),
    #[error("`sent_at` must be an RFC 3339 timestamp")]
    InvalidSentAt,
    #[error("the batch has {count} events; at most {max} are accepted per request")]
    TooManyEvents { count: usize, max: usize },
    #[error("the body is larger than {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error(
        "the body decompresses to more than {limit} bytes (or past the allowed compression ratio)"
    )]
    DecompressedTooLarge { limit: u64 },
    #[error("the body is not valid gzip: {0}")]
    InvalidGzip(String),
    #[error("this Content-Encoding is not supported; use gzip or none")]
    UnsupportedEncoding,
    /// The reason names what is accepted instead (never the client's header).
    #[error("this Content-Type is not supported here: {0}")]
    UnsupportedMediaType(&'static str),
    #[error("reading the body failed: {0}")]
    BodyRead(String),
    #[error("no write key: send it as the HTTP Basic auth user")]
    MissingWriteKey,
    #[error("unknown write key")]
    UnknownWriteKey,
    #[error(
        "the events of this request carry different API keys; send one project's events per request"
    )]
    MixedWriteKeys,
    #[error(
        "no source takes this Snowplow app id (`aid`); bind it with `app_ids` in the source's configuration"
    )]
    UnknownAppId,
    #[error(
        "the events of this request belong to different sources (their app ids); send one source's events per request"
    )]
    MixedSources,
    /// The reason names what is accepted instead.
    #[error("this compression is not supported: {0}")]
    UnsupportedCompression(&'static str),
    #[error("the body is not valid base64")]
    InvalidBase64,
    #[error("method not allowed; use {allow}")]
    MethodNotAllowed { allow: &'static str },
    #[error("no such route")]
    NotFound,
    #[error("the Idempotency-Key header must be 1 to 255 printable ASCII characters")]
    InvalidIdempotencyKey,
    #[error("this Idempotency-Key was used with a different request body")]
    IdempotencyKeyReused,
    #[error("over the {limit} rate limit of this {scope}; retry after the Retry-After seconds")]
    RateLimited {
        /// `requests` or `events`.
        limit: &'static str,
        /// `source` or `client IP`.
        scope: &'static str,
        /// Whole seconds until the request would be allowed (at least 1).
        retry_after_secs: u64,
    },
    #[error("the collector is at its concurrency limit; retry shortly")]
    Overloaded,
    #[error("the collector holds as many request bytes as its memory budget allows; retry shortly")]
    MemoryBudgetExceeded,
    #[error("the request took longer than the configured timeout")]
    Timeout,
    #[error("the log queue is full; retry shortly")]
    LogQueueFull,
    #[error(
        "the log did not confirm this request's events; retry (any it did keep are answered duplicate)"
    )]
    LogUnavailable,
    #[error("the idempotency store is unavailable; retry")]
    IdempotencyUnavailable,
    #[error("the collector is shutting down; retry")]
    ShuttingDown,
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::InvalidEnvelope(_) => "invalid_envelope",
            ApiError::InvalidSentAt => "invalid_sent_at",
            ApiError::TooManyEvents { .. } => "too_many_events",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::DecompressedTooLarge { .. } => "decompressed_too_large",
            ApiError::InvalidGzip(_) => "invalid_gzip",
            ApiError::UnsupportedEncoding => "unsupported_encoding",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::BodyRead(_) => "body_read_failed",
            ApiError::MissingWriteKey => "missing_write_key",
            ApiError::UnknownWriteKey => "unknown_write_key",
            ApiError::MixedWriteKeys => "mixed_write_keys",
            ApiError::UnknownAppId => "unknown_app_id",
            ApiError::MixedSources => "mixed_sources",
            ApiError::UnsupportedCompression(_) => "unsupported_compression",
            ApiError::InvalidBase64 => "invalid_base64",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::NotFound => "not_found",
            ApiError::InvalidIdempotencyKey => "invalid_idempotency_key",
            ApiError::IdempotencyKeyReused => "idempotency_key_reused",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Overloaded => "overloaded",
            ApiError::MemoryBudgetExceeded => "memory_budget_exceeded",
            ApiError::Timeout => "request_timeout",
            ApiError::LogQueueFull => "log_queue_full",
            ApiError::LogUnavailable => "log_unavailable",
            ApiError::IdempotencyUnavailable => "idempotency_unavailable",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::Internal => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_)
            | ApiError::InvalidEnvelope(_)
            | ApiError::InvalidSentAt
            | ApiError::InvalidGzip(_)
            | ApiError::InvalidBase64
            | ApiError::InvalidIdempotencyKey
            | ApiError::BodyRead(_) => StatusCode::BAD_REQUEST,
            ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyEvents { .. }
            | ApiError::BodyTooLarge { .. }
            | ApiError::DecompressedTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedEncoding
            | ApiError::UnsupportedMediaType(_)
            | ApiError::UnsupportedCompression(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MissingWriteKey
            | ApiError::UnknownWriteKey
            | ApiError::MixedWriteKeys
            | ApiError::UnknownAppId
            | ApiError::MixedSources => StatusCode::UNAUTHORIZED,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Overloaded
            | ApiError::MemoryBudgetExceeded
            | ApiError::Timeout
            | ApiError::LogQueueFull
            | ApiError::LogUnavailable
            | ApiError::IdempotencyUnavailable
            | ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// How long a client should wait before retrying, for the retryable errors.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Overloaded
            | ApiError::MemoryBudgetExceeded
            | ApiError::LogQueueFull
            | ApiError::Timeout => Some(Duration::from_secs(1)),
            ApiError::LogUnavailable
            | ApiError::IdempotencyUnavailable
            | ApiError::ShuttingDown => Some(Duration::from_secs(5)),
            ApiError::RateLimited {
                retry_after_secs, ..
            } => Some(Duration::from_secs(*retry_after_secs)),
            _ => None,
        }
    }

    /// The JSON response: `{"error":{"code":…,"message":…}}` with the right status and
    /// headers. The only place a request error becomes HTTP.
    pub fn to_response(&self) -> Response<Full<Bytes>> {
        let body = json!({"error": {"code": self.code(), "message": self.to_string()}});
        let mut response = json_response(self.status(), &body);
        let headers = response.headers_mut();
        if let Some(wait) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs()));
        }
        match self {
            ApiError::MethodNotAllowed { allow } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::MissingWriteKey | ApiError::UnknownWriteKey => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"tollgate\""),
                );
            }
            _ => {}
        }
        response
    }
}

/// A JSON response with the given status.
pub fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).expect("response bodies always serialize");
    json_bytes_response(status, Bytes::from(bytes))
}

/// A response whose body is already JSON text.
pub fn json_bytes_response(status: StatusCode, bytes: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
