//! Reading a request body safely: size limit on the wire, gzip with a cap on the
//! decompressed size and on the compression ratio, and the media type.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// Body limits (from `[limits]`).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_body: u64,
    pub max_decompressed: u64,
    pub max_ratio: u64,
}

/// How the body's events are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One JSON document (also `text/plain`, which browsers' `sendBeacon` sends).
    Json,
    /// One JSON event per line.
    Ndjson,
    /// `application/x-www-form-urlencoded` with the events in `data` (PostHog SDKs).
    Form,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
}

/// The bytes all requests in flight may hold (`limits.max_in_flight_bytes`), counted in
/// KiB permits of one semaphore: a request reserves before it reads its body and again
/// once it knows the decompressed size, and gives everything back when it is answered.
pub struct MemoryBudget {
    permits: Arc<Semaphore>,
}

/// Bytes a request holds from the [`MemoryBudget`]; returned when dropped.
pub struct Reservation(OwnedSemaphorePermit);

impl MemoryBudget {
    pub fn new(bytes: u64) -> MemoryBudget {
        let kib = usize::try_from(bytes.div_ceil(1024))
            .unwrap_or(Semaphore::MAX_PERMITS)
            .min(Semaphore::MAX_PERMITS);
        MemoryBudget {
            permits: Arc::new(Semaphore::new(kib)),
        }
    }

    /// Reserves `bytes` more for a request, added to `held` when it has some already.
    ///
    /// # Errors
    /// `memory_budget_exceeded` when the budget cannot hold them now; nothing is
    /// reserved then.
    pub fn reserve(&self, held: Option<Reservation>, bytes: u64) -> Result<Reservation, ApiError> {
        let kib =
            u32::try_from(bytes.div_ceil(1024)).map_err(|_| ApiError::MemoryBudgetExceeded)?;
        let permit = self
            .permits
            .clone()
            .try_acquire_many_owned(kib)
            .map_err(|_| ApiError::MemoryBudgetExceeded)?;
        Ok(match held {
            Some(Reservation(mut held)) => {
                held.merge(permit);
                Reservation(held)
            }
            None => Reservation(permit),
        })
    }

    /// Bytes free now (for tests and metrics), rounded to KiB.
    pub fn available(&self) -> u64 {
        self.permits.available_permits() as u64 * 1024
    }
}

/// The body length a client declared, if any.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Reads `Content-Type`: JSON (or none, or `text/plain`), NDJSON, or a form.
///
/// # Errors
/// `unsupported_media_type` for anything else.
pub fn framing(headers: &HeaderMap) -> Result<Framing, ApiError> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Ok(Framing::Json);
    };
    let text = value.to_str().unwrap_or_default();
    let media = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "" | "application/json" | "text/plain" => Ok(Framing::Json),
        "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/x-jsonlines" => Ok(Framing::Ndjson),
        "application/x-www-form-urlencoded" => Ok(Framing::Form),
        _ => Err(ApiError::UnsupportedMediaType(
            "send application/json (or text/plain), application/x-ndjson, or on PostHog's routes application/x-www-form-urlencoded",
        )),
    }
}

/// Reads `Content-Encoding`.
///
/// # Errors
/// `unsupported_encoding` for anything but gzip or identity.
pub fn encoding(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    let Some(value) = headers.get(CONTENT_ENCODING) else {
        return Ok(Encoding::Identity);
    };
    let text = value
        .to_str()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match text.as_str() {
        "" | "identity" => Ok(Encoding::Identity),
        "gzip" | "x-gzip" => Ok(Encoding::Gzip),
        _ => Err(ApiError::UnsupportedEncoding),
    }
}

/// Reads the whole body, refusing more than `max_body` bytes on the wire.
///
/// # Errors
/// `body_too_large` (also straight from `Content-Length`), `body_read_failed` when the
/// client went away.
pub async fn read(
    headers: &HeaderMap,
    body: Incoming,
    limits: BodyLimits,
) -> Result<Bytes, ApiError> {
    let too_large = ApiError::BodyTooLarge {
        limit: limits.max_body,
    };
    let declared = declared_length(headers);
    if declared.is_some_and(|n| n > limits.max_body) {
        return Err(too_large);
    }
    match Limited::new(body, limits.max_body as usize).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large),
        Err(e) => Err(ApiError::BodyRead(e.to_string())),
    }
}

/// Undoes the content encoding, within the decompressed-size and ratio caps.
///
/// # Errors
/// `invalid_gzip`, `decompressed_too_large`.
pub fn decode(body: Bytes, encoding: Encoding, limits: BodyLimits) -> Result<Bytes, ApiError> {
    match encoding {
        Encoding::Identity => Ok(body),
        Encoding::Gzip => gunzip(&body, limits).map(Bytes::from),
    }
}

/// Decompresses gzip within the decompressed-size and ratio caps.
///
/// # Errors
/// `invalid_gzip`, `decompressed_too_large`.
pub fn gunzip(body: &[u8], limits: BodyLimits) -> Result<Vec<u8>, ApiError> {
    let cap = limits
        .max_decompressed
        .min((body.len() as u64).saturating_mul(limits.max_ratio));
    let mut out = Vec::with_capacity((body.len() * 4).min(cap as usize));
    flate2::read::MultiGzDecoder::new(body)
        .take(cap + 1)
        .read_to_end(&mut out)
        .map_err(|e| ApiError::InvalidGzip(e.to_string()))?;
    if out.len() as u64 > cap {
        return Err(ApiError::DecompressedTooLarge { limit: cap });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const LIMITS: BodyLimits = BodyLimits {
        max_body: 1 << 20,
        max_decompressed: 1 << 16,
        max_ratio: 100,
    };

    fn gzip(data: &[u8]) -> Bytes {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        Bytes::from(enc.finish().unwrap())
    }

    #[test]
    fn gzip_round_trips() {
        let text = br#"{"events":[]}"#;
        assert_eq!(
            &decode(gzip(text), Encoding::Gzip, LIMITS).unwrap()[..],
            text
        );
    }

    #[test]
    fn gzip_bombs_are_refused_by_size_and_by_ratio() {
        let bomb = gzip(&vec![b' '; 1 << 20]);
        assert!(matches!(
            decode(bomb, Encoding::Gzip, LIMITS),
            Err(ApiError::DecompressedTooLarge { .. })
        ));
        // Small enough in absolute terms, but compressed far beyond the ratio.
        let dense = gzip(&vec![b' '; 60_000]);
        assert!(dense.len() * 100 < 60_000);
        assert!(matches!(
            decode(dense, Encoding::Gzip, LIMITS),
            Err(ApiError::DecompressedTooLarge { .. })
        ));
    }

    #[test]
    fn garbage_is_invalid_gzip() {
        assert!(matches!(
            decode(
                Bytes::from_static(b"not gzip at all"),
                Encoding::Gzip,
                LIMITS
            ),
            Err(ApiError::InvalidGzip(_))
        ));
    }

    #[test]
    fn media_types_and_encodings() {
        let mut h = HeaderMap::new();
        assert_eq!(framing(&h).unwrap(), Framing::Json);
        h.insert(
            CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert_eq!(framing(&h).unwrap(), Framing::Json);
        h.insert(CONTENT_TYPE, "application/x-ndjson".parse().unwrap());
        assert_eq!(framing(&h).unwrap(), Framing::Ndjson);
        h.insert(CONTENT_TYPE, "application/xml".parse().unwrap());
        assert!(framing(&h).is_err());
        h.insert(CONTENT_ENCODING, "br".parse().unwrap());
        assert!(matches!(encoding(&h), Err(ApiError::UnsupportedEncoding)));
        h.insert(CONTENT_ENCODING, "GZIP".parse().unwrap());
        assert_eq!(encoding(&h).unwrap(), Encoding::Gzip);
    }
}
