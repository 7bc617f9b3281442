//! What the other SDK families' messages become: a native [`Event`] plus what the
//! collector needs to know about how it was mapped. Shared by the Segment, PostHog and
//! Snowplow mappings, and the helpers they have in common.

use base64::Engine;
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::error::EventError;
use crate::event::Event;

/// A message of another protocol, mapped onto the native event model.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub event: Event,
    /// False when the message had no id of its own (Segment `messageId`, PostHog
    /// `uuid`, Snowplow `eid`): the id is the server's and cannot be used to recognise
    /// a retry, so the event is not deduplicated.
    pub client_event_id: bool,
    /// When the client sent the message, for the clock-skew correction.
    pub sent_at: Option<OffsetDateTime>,
    /// True when the message named its schema version (a Snowplow self-describing
    /// event's SchemaVer); otherwise the collector validates against the newest
    /// version the properties satisfy.
    pub versioned: bool,
}

/// A message's JSON object; `what` names the message in the error (`a Segment
/// message`).
///
/// # Errors
/// `invalid_event` for any other JSON value.
pub(crate) fn object(value: Value, what: &str) -> Result<Map<String, Value>, EventError> {
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(EventError::new(
            crate::error::ErrorCode::InvalidEvent,
            "",
            format!("{what} must be a JSON object"),
        )),
    }
}

/// An identifier field: a non-empty string, or a number written as one (some SDKs send
/// numeric user ids); absent, null and `""` are `None`.
///
/// # Errors
/// `invalid_type` at `path` for any other JSON type.
pub(crate) fn id_value(value: Option<Value>, path: &str) -> Result<Option<String>, EventError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(EventError::wrong_type(path, "a string")),
    }
}

/// Free-text event names ("Order Completed") in Tollgate's snake_case
/// ("order_completed"), as the warehouse tables of these SDK families name them.
pub fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut gap = false;
    let mut prev_lower = false;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            if (gap || (prev_lower && c.is_ascii_uppercase())) && !out.is_empty() {
                out.push('_');
            }
            gap = false;
            prev_lower = c.is_ascii_lowercase();
            out.push(c.to_ascii_lowercase());
        } else {
            gap = true;
            prev_lower = false;
        }
    }
    if out.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        out.insert(0, 'e');
        out.insert(1, '_');
    }
    out.truncate(128);
    out
}

/// Base64 as SDKs send it: URL-safe or standard, padded or not, with whitespace (and
/// the spaces a form decoder makes of unescaped `+`) tolerated.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
    let bytes = text.as_bytes();
    let (mut url, mut standard, mut other) = (false, false, false);
    for b in bytes {
        match b {
            b'-' | b'_' => url = true,
            b'+' | b'/' => standard = true,
            b' ' | b'\n' | b'\r' | b'\t' => other = true,
            _ => {}
        }
    }
    match (url, standard, other) {
        // The common cases decode in place: one alphabet, nothing to tidy.
        (_, false, false) => URL_SAFE.decode(bytes).ok(),
        (false, true, false) => STANDARD.decode(bytes).ok(),
        _ => {
            let tidy: Vec<u8> = bytes
                .iter()
                .filter(|b| !matches!(b, b'\n' | b'\r' | b'\t'))
                .map(|b| match b {
                    b'-' | b' ' => b'+',
                    b'_' => b'/',
                    b => *b,
                })
                .collect();
            STANDARD.decode(tidy).ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_names() {
        assert_eq!(snake_case("Order Completed"), "order_completed");
        assert_eq!(snake_case("videoPlaybackStarted"), "video_playback_started");
        assert_eq!(snake_case("  Signed-Up!! "), "signed_up");
        assert_eq!(snake_case("3D View"), "e_3d_view");
        assert_eq!(snake_case("already_snake"), "already_snake");
    }

    #[test]
    fn base64_in_every_variant() {
        assert_eq!(decode_base64("eyJhIjoxfQ==").unwrap(), br#"{"a":1}"#);
        assert_eq!(decode_base64("eyJhIjoxfQ").unwrap(), br#"{"a":1}"#);
        assert_eq!(
            decode_base64("-_8").unwrap(),
            decode_base64("+/8=").unwrap()
        );
        assert_eq!(decode_base64(" /8").unwrap(), decode_base64("+/8").unwrap());
        assert!(decode_base64("not base64!").is_none());
    }

    #[test]
    fn ids_are_strings_or_numbers() {
        assert_eq!(
            id_value(Some(Value::from(42)), "/x").unwrap().as_deref(),
            Some("42")
        );
        assert_eq!(id_value(Some(Value::from("")), "/x").unwrap(), None);
        assert_eq!(
            id_value(Some(Value::Bool(true)), "/x").unwrap_err().path,
            "/x"
        );
    }
}
