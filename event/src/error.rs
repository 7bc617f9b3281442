//! Why one event was rejected: a stable machine-readable code, where, and a sentence.

use serde::{Deserialize, Serialize};

/// Stable codes for per-event rejections. They appear in responses, in the quarantine
/// log and as metric labels, so they never change once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The event is not a JSON object (or not JSON at all, in NDJSON).
    InvalidEvent,
    /// A required field is absent or null.
    MissingField,
    /// A field has the wrong JSON type.
    InvalidType,
    /// A field has the right type but a value outside its rules.
    InvalidValue,
    /// A top-level field the event model does not know.
    UnknownField,
    /// `platform` is not in the configured set.
    UnknownPlatform,
    /// The event's JSON is larger than the configured per-event limit.
    EventTooLarge,
    /// No schema is registered for `event_name` and the source does not allow that.
    UnknownEvent,
    /// The event name is known but not at this `schema_version`.
    UnknownSchemaVersion,
    /// `properties` does not satisfy the event's JSON Schema.
    SchemaViolation,
    /// The region's privacy policy requires a consent the event does not grant; the
    /// event is not stored anywhere.
    ConsentDenied,
}

impl ErrorCode {
    /// The code as it appears on the wire and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidEvent => "invalid_event",
            ErrorCode::MissingField => "missing_field",
            ErrorCode::InvalidType => "invalid_type",
            ErrorCode::InvalidValue => "invalid_value",
            ErrorCode::UnknownField => "unknown_field",
            ErrorCode::UnknownPlatform => "unknown_platform",
            ErrorCode::EventTooLarge => "event_too_large",
            ErrorCode::UnknownEvent => "unknown_event",
            ErrorCode::UnknownSchemaVersion => "unknown_schema_version",
            ErrorCode::SchemaViolation => "schema_violation",
            ErrorCode::ConsentDenied => "consent_denied",
        }
    }

    /// Every code, for metric pre-registration and docs tests.
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::InvalidEvent,
        ErrorCode::MissingField,
        ErrorCode::InvalidType,
        ErrorCode::InvalidValue,
        ErrorCode::UnknownField,
        ErrorCode::UnknownPlatform,
        ErrorCode::EventTooLarge,
        ErrorCode::UnknownEvent,
        ErrorCode::UnknownSchemaVersion,
        ErrorCode::SchemaViolation,
        ErrorCode::ConsentDenied,
    ];
}

/// Why one event was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?} at {path:?}: {message}")]
pub struct EventError {
    /// Stable machine-readable reason.
    pub code: ErrorCode,
    /// JSON pointer into the event as the client sent it (`""` is the whole event).
    pub path: String,
    /// A sentence for the developer reading the response.
    pub message: String,
}

impl EventError {
    pub fn new(code: ErrorCode, path: impl Into<String>, message: impl Into<String>) -> Self {
        EventError {
            code,
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn missing(field: &str) -> Self {
        Self::new(
            ErrorCode::MissingField,
            format!("/{field}"),
            format!("`{field}` is required"),
        )
    }

    pub(crate) fn wrong_type(path: impl Into<String>, expected: &str) -> Self {
        let path = path.into();
        let message = format!("`{path}` must be {expected}");
        Self::new(ErrorCode::InvalidType, path, message)
    }
}
