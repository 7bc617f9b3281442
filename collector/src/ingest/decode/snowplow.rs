//! Snowplow tracker protocol: a `tp2` POST body `{"schema": "iglu:…/payload_data/…",
//! "data": [{…}, …]}`, or one event as the query of a `GET /i` pixel.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use tollgate_event::snowplow::{PAYLOAD_SCHEMA_PREFIX, anonymize, app_id, map_event, native_names};

use super::{
    DecodeLimits, Decoded, Item, Raw, check_count, mapped_item, parse_body, shape_error,
    too_large_error, unparsable,
};
use crate::error::ApiError;

#[derive(Deserialize)]
struct Payload<'a> {
    #[serde(borrow)]
    schema: Cow<'a, str>,
    #[serde(borrow)]
    data: Vec<&'a RawValue>,
}

/// What a Snowplow request says beside its body.
#[derive(Debug, Clone, Copy)]
pub struct SnowplowRequest {
    pub received_at: OffsetDateTime,
    /// `SP-Anonymous`: the IP and user identifiers are removed first.
    pub anonymous: bool,
}

/// Decodes a `tp2` POST body.
///
/// # Errors
/// Malformed JSON, a body that is not a `payload_data` envelope, too many events.
pub fn snowplow_post(
    body: &[u8],
    request: SnowplowRequest,
    limits: &DecodeLimits<'_>,
) -> Result<Decoded, ApiError> {
    let payload: Payload<'_> = parse_body(body).map_err(shape_error)?;
    if !payload.schema.starts_with(PAYLOAD_SCHEMA_PREFIX) {
        return Err(ApiError::InvalidEnvelope(format!(
            "`schema` must be a {PAYLOAD_SCHEMA_PREFIX}… Iglu URI"
        )));
    }
    check_count(payload.data.len(), limits)?;
    let mut decoded = Decoded::default();
    for raw in &payload.data {
        let text = raw.get().as_bytes();
        let rename = |mut fields: Map<String, Value>| {
            if request.anonymous {
                anonymize(&mut fields);
            }
            native_names(fields)
        };
        let item = if text.len() > limits.max_event_bytes {
            decoded.app_ids.insert(None);
            Item::Invalid {
                error: too_large_error(text.len(), limits.max_event_bytes),
                raw: Raw::from_foreign_text(text, rename),
            }
        } else {
            match serde_json::from_str::<Value>(raw.get()) {
                Ok(mut value) => {
                    if let Value::Object(fields) = &mut value {
                        // One allocation per distinct app id, not per event.
                        let app = app_id(fields);
                        if !decoded.app_ids.iter().any(|seen| seen.as_deref() == app) {
                            decoded.app_ids.insert(app.map(str::to_owned));
                        }
                        if request.anonymous {
                            anonymize(fields);
                        }
                    }
                    let server_id = || uuid::Uuid::now_v7().to_string();
                    let mapped =
                        map_event(value, request.received_at, request.anonymous, &server_id);
                    mapped_item(mapped, text, rename)
                }
                Err(e) => {
                    decoded.app_ids.insert(None);
                    unparsable(text, &e)
                }
            }
        };
        decoded.items.push(item);
    }
    Ok(decoded)
}

/// Decodes the one event of a `GET /i` pixel request from its query.
pub fn snowplow_get(query: &str, request: SnowplowRequest) -> Decoded {
    let mut fields: Map<String, Value> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect();
    let mut decoded = Decoded::default();
    decoded.app_ids.insert(app_id(&fields).map(str::to_owned));
    if request.anonymous {
        anonymize(&mut fields);
    }
    let server_id = || uuid::Uuid::now_v7().to_string();
    let mapped = map_event(
        Value::Object(fields.clone()),
        request.received_at,
        request.anonymous,
        &server_id,
    );
    let item = match mapped {
        Ok(mapped) => mapped_item(Ok(mapped), b"", native_names),
        Err(error) => Item::Invalid {
            error,
            raw: Raw::from_object(native_names(fields)),
        },
    };
    decoded.items.push(item);
    decoded
}
