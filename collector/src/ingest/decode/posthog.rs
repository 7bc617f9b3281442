//! PostHog capture bodies: a batch object `{"api_key", "batch": […], "sent_at"}`, a JSON
//! array of events (posthog-js), or one event. The API key may be the batch's or each
//! event's (`api_key`, `token`, `properties.token`); all must agree.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::Value;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use tollgate_event::posthog::{Keys, map_event, native_names, send_time};

use super::{
    DecodeLimits, Decoded, Item, Raw, check_count, mapped_item, parse_body, shape_error,
    too_large_error, unparsable,
};
use crate::error::ApiError;

/// What a PostHog request says beside its body.
#[derive(Debug, Clone, Copy)]
pub struct PostHogRequest {
    /// The send time of the `_` query parameter (milliseconds), which posthog-js adds.
    pub sent_at: Option<OffsetDateTime>,
    pub received_at: OffsetDateTime,
}

/// Decodes a PostHog body, already unwrapped from its form, base64 or gzip layers.
///
/// # Errors
/// Malformed JSON, a body that is none of the three shapes, a bad `sent_at`, too many
/// events, and events carrying different API keys.
pub fn posthog(
    body: &[u8],
    request: PostHogRequest,
    limits: &DecodeLimits<'_>,
) -> Result<Decoded, ApiError> {
    let mut keys = Keys::default();
    let mut sent_at = request.sent_at;
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let events: Vec<&RawValue> = match first {
        Some(b'[') => parse_body(body).map_err(shape_error)?,
        Some(b'{') => {
            let top: BTreeMap<Cow<'_, str>, &RawValue> = parse_body(body).map_err(shape_error)?;
            match top.get("batch") {
                Some(batch) => {
                    for field in ["api_key", "token"] {
                        if let Some(key) = top.get(field)
                            && let Ok(key) = serde_json::from_str::<String>(key.get())
                        {
                            keys.see(key);
                        }
                    }
                    if let Some(raw) = top.get("sent_at").or_else(|| top.get("sentAt")) {
                        let value: Value = serde_json::from_str(raw.get()).map_err(shape_error)?;
                        if !value.is_null() {
                            sent_at = Some(
                                send_time(&value, "/sent_at")
                                    .map_err(|_| ApiError::InvalidSentAt)?,
                            );
                        }
                    }
                    serde_json::from_str(batch.get()).map_err(|_| {
                        ApiError::InvalidEnvelope("`batch` must be an array of events".into())
                    })?
                }
                // One event: the whole body.
                None => vec![parse_body(body).map_err(shape_error)?],
            }
        }
        _ => {
            return Err(match serde_json::from_slice::<Value>(body) {
                Err(e) => shape_error(e),
                Ok(_) => ApiError::InvalidEnvelope(
                    "a PostHog body must be a batch object, an array of events or one event".into(),
                ),
            });
        }
    };
    check_count(events.len(), limits)?;
    let server_id = || uuid::Uuid::now_v7().to_string();
    let items = events
        .iter()
        .map(|raw| {
            let text = raw.get().as_bytes();
            if text.len() > limits.max_event_bytes {
                return Item::Invalid {
                    error: too_large_error(text.len(), limits.max_event_bytes),
                    raw: Raw::from_foreign_text(text, |mut map| {
                        keys.take_from(&mut map);
                        native_names(map)
                    }),
                };
            }
            match serde_json::from_str::<Value>(raw.get()) {
                Ok(mut value) => {
                    if let Value::Object(map) = &mut value {
                        keys.take_from(map);
                    }
                    let mapped = map_event(value, sent_at, request.received_at, &server_id);
                    mapped_item(mapped, text, native_names)
                }
                Err(e) => unparsable(text, &e),
            }
        })
        .collect();
    let body_write_key = keys.into_key().map_err(|_| ApiError::MixedWriteKeys)?;
    Ok(Decoded {
        items,
        body_write_key,
        ..Decoded::default()
    })
}
