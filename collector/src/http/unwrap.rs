//! Bodies inside bodies. PostHog SDKs wrap their JSON: in the `data` field of a form
//! or of the query (a GET), in base64, or in gzip sent as `text/plain` without a
//! `Content-Encoding` (posthog-js `compression=gzip-js`). This takes the layers off, each
//! within the same size limits as any body.

use std::borrow::Cow;

use bytes::Bytes;

use super::body::{self, BodyLimits, Encoding, Framing};
use crate::error::ApiError;

/// The first value of a query parameter.
pub(super) fn param<'a>(query: Option<&'a str>, name: &str) -> Option<Cow<'a, str>> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

/// The JSON text of a PostHog request, whatever layers it came in (after the
/// `Content-Encoding` has been undone).
///
/// # Errors
/// `unsupported_compression` for lz-string (`lz64`), `invalid_base64`, `invalid_gzip`,
/// `decompressed_too_large`, and a form without `data`.
pub(super) fn posthog(
    body: Bytes,
    framing: Framing,
    query: Option<&str>,
    limits: BodyLimits,
) -> Result<Bytes, ApiError> {
    let mut compression = param(query, "compression").map(Cow::into_owned);
    let data = if framing == Framing::Form {
        let mut data = None;
        for (key, value) in form_urlencoded::parse(&body) {
            match &*key {
                "data" => data = Some(value.into_owned()),
                "compression" => compression = Some(value.into_owned()),
                _ => {}
            }
        }
        Some(data.ok_or_else(|| {
            ApiError::InvalidEnvelope("a form body carries the events in its `data` field".into())
        })?)
    } else if body.is_empty() {
        param(query, "data").map(Cow::into_owned)
    } else {
        None
    };
    let wrapped = data.is_some();
    let bytes = data.map_or(body, |text| Bytes::from(text.into_bytes()));
    let bytes = match compression.as_deref() {
        Some("lz64" | "lz-string") => {
            return Err(ApiError::UnsupportedCompression(
                "lz-string (lz64); configure the SDK to send gzip-js or base64",
            ));
        }
        Some("base64") => base64(&bytes)?,
        // A form or query value that is not JSON is base64 (older posthog-js sends
        // `data=<base64>` without saying so).
        _ if wrapped && !starts_like_json(&bytes) && !is_gzip(&bytes) => base64(&bytes)?,
        _ => bytes,
    };
    // `gzip-js` says gzip; gzip is also recognised by its magic bytes whatever was said.
    if is_gzip(&bytes) || matches!(compression.as_deref(), Some("gzip-js" | "gzip")) {
        body::decode(bytes, Encoding::Gzip, limits)
    } else {
        Ok(bytes)
    }
}

fn base64(bytes: &[u8]) -> Result<Bytes, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ApiError::InvalidBase64)?;
    tollgate_event::mapped::decode_base64(text.trim())
        .map(Bytes::from)
        .ok_or(ApiError::InvalidBase64)
}

fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

fn starts_like_json(bytes: &[u8]) -> bool {
    matches!(
        bytes.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{' | b'[')
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use std::io::Write;

    const LIMITS: BodyLimits = BodyLimits {
        max_body: 1 << 20,
        max_decompressed: 1 << 20,
        max_ratio: 100,
    };
    const JSON: &[u8] = br#"[{"event":"x","distinct_id":"u"}]"#;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn unwrap(body: Vec<u8>, framing: Framing, query: Option<&str>) -> Result<Bytes, ApiError> {
        posthog(Bytes::from(body), framing, query, LIMITS)
    }

    #[test]
    fn every_layer_comes_off() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(JSON);
        let form = |v: &str| {
            form_urlencoded::Serializer::new(String::new())
                .append_pair("data", v)
                .finish()
                .into_bytes()
        };
        assert_eq!(unwrap(JSON.to_vec(), Framing::Json, None).unwrap(), JSON);
        assert_eq!(
            unwrap(gzip(JSON), Framing::Json, Some("compression=gzip-js&_=1")).unwrap(),
            JSON
        );
        // gzip without saying so
        assert_eq!(unwrap(gzip(JSON), Framing::Json, None).unwrap(), JSON);
        assert_eq!(
            unwrap(
                b64.clone().into_bytes(),
                Framing::Json,
                Some("compression=base64")
            )
            .unwrap(),
            JSON
        );
        assert_eq!(
            unwrap(form(&b64), Framing::Form, Some("compression=base64")).unwrap(),
            JSON
        );
        assert_eq!(unwrap(form(&b64), Framing::Form, None).unwrap(), JSON);
        let text = std::str::from_utf8(JSON).unwrap();
        assert_eq!(unwrap(form(text), Framing::Form, None).unwrap(), JSON);
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("data", &b64)
            .finish();
        assert_eq!(
            unwrap(Vec::new(), Framing::Json, Some(&query)).unwrap(),
            JSON
        );
    }

    #[test]
    fn what_cannot_come_off_is_named() {
        assert_eq!(
            unwrap(b"N4Ig".to_vec(), Framing::Json, Some("compression=lz64"))
                .unwrap_err()
                .code(),
            "unsupported_compression"
        );
        assert_eq!(
            unwrap(b"***".to_vec(), Framing::Json, Some("compression=base64")).unwrap_err(),
            ApiError::InvalidBase64
        );
        assert_eq!(
            unwrap(b"[1]".to_vec(), Framing::Json, Some("compression=gzip-js"))
                .unwrap_err()
                .code(),
            "invalid_gzip"
        );
        assert_eq!(
            unwrap(b"x=1".to_vec(), Framing::Form, None)
                .unwrap_err()
                .code(),
            "invalid_envelope"
        );
    }
}
