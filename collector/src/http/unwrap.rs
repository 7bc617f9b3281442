//! Bodies inside bodies. PostHog SDKs wrap their JSON: in the `data` field of a form
//! or of the query (a GET), in base64, or in gzip sent as `text/plain` without a
//! `Content-Encoding` (posthog-js `compression=gzip-js`). This takes the layers off (the
//! event crate's `posthog::unwrap_body`, shared with the shadow proxy), gzip within the
//! same size limits as any body.

use std::borrow::Cow;

use bytes::Bytes;

use super::body::{self, BodyLimits, Framing};
use crate::error::ApiError;

/// The first value of a query parameter.
pub(super) fn param<'a>(query: Option<&'a str>, name: &str) -> Option<Cow<'a, str>> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

/// The JSON text of a PostHog request, whatever layers it came in (after the
/// `Content-Encoding` has been undone); gzip within the same limits as any body. See
/// [`tollgate_event::posthog::unwrap_body`].
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
    use tollgate_event::posthog::{UnwrapError, unwrap_body};
    let gunzip = |bytes: &[u8]| body::gunzip(bytes, limits);
    match unwrap_body(&body, framing == Framing::Form, query, gunzip) {
        Ok(Cow::Borrowed(_)) => Ok(body),
        Ok(Cow::Owned(bytes)) => Ok(Bytes::from(bytes)),
        Err(UnwrapError::LzString) => Err(ApiError::UnsupportedCompression(
            "lz-string (lz64); configure the SDK to send gzip-js or base64",
        )),
        Err(UnwrapError::Base64) => Err(ApiError::InvalidBase64),
        Err(UnwrapError::NoData) => Err(ApiError::InvalidEnvelope(
            "a form body carries the events in its `data` field".into(),
        )),
        Err(UnwrapError::Gzip(e)) => Err(e),
    }
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
