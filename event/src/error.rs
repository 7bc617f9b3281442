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

/// The message of a JSON parse error without any of the input in it.
///
/// serde_json's own messages quote the offending value (`invalid type: string
/// "jane@example.com", expected u64`); answers, quarantine records and log lines must
/// never echo what a client sent, so only the kind of problem, what was expected (from
/// our own types) and the position are kept.
pub fn json_error_message(e: &serde_json::Error) -> String {
    let position = format!(" at line {} column {}", e.line(), e.column());
    let full = e.to_string();
    let message = full.strip_suffix(&position).unwrap_or(&full);
    let safe = match e.classify() {
        // Syntax and end-of-input messages are fixed wording ("expected value",
        // "trailing characters", "EOF while parsing a string").
        serde_json::error::Category::Syntax
        | serde_json::error::Category::Eof
        | serde_json::error::Category::Io => message.to_owned(),
        serde_json::error::Category::Data => {
            let kind = if message.starts_with("missing field") {
                // The name is one of our own fields.
                return format!("{message}{position}");
            } else if message.starts_with("invalid type") {
                "wrong JSON type"
            } else if message.starts_with("invalid length") {
                "wrong number of items"
            } else if message.starts_with("unknown field") {
                "unknown field"
            } else if message.starts_with("duplicate field") {
                "duplicate field"
            } else {
                "invalid value"
            };
            // What was expected comes last and from our own types; the client's value
            // comes before it, so the last ", expected " is the real one.
            match message.rfind(", expected ") {
                Some(at) => format!("{kind}, expected {}", &message[at + 11..]),
                None => kind.to_owned(),
            }
        }
    };
    format!("{safe}{position}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message_of<T: serde::de::DeserializeOwned + std::fmt::Debug>(text: &str) -> String {
        json_error_message(&serde_json::from_str::<T>(text).unwrap_err())
    }

    #[test]
    fn json_errors_never_quote_the_input() {
        let typed = message_of::<u64>(r#""jane@example.com, expected bait""#);
        assert!(!typed.contains("jane"), "{typed}");
        assert!(
            typed.starts_with("wrong JSON type, expected u64"),
            "{typed}"
        );
        let syntax = message_of::<serde_json::Value>(r#"{"email":"jane@example.com", bad}"#);
        assert!(!syntax.contains("jane"), "{syntax}");
        assert!(syntax.contains("line 1 column"), "{syntax}");
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Envelope {
            events: Vec<u8>,
        }
        let unknown = message_of::<Envelope>(r#"{"jane@example.com": 1, "events": []}"#);
        assert!(!unknown.contains("jane"), "{unknown}");
        assert!(
            unknown.starts_with("unknown field, expected `events`"),
            "{unknown}"
        );
        assert!(message_of::<Envelope>("{}").starts_with("missing field `events`"));
    }
}
