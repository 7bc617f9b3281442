//! The request-level `Idempotency-Key`: the first answer to a body is stored for the
//! dedupe window and replayed, byte for byte, to a retry of the same body under the
//! same key; the same key with another body is refused.

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Full;

use super::App;
use crate::error::{ApiError, json_bytes_response};
use tollgate_event::wire::{IDEMPOTENCY_KEY_HEADER, REPLAYED_HEADER};

/// Largest answer stored under an `Idempotency-Key` (a 500-event batch of accepted
/// events answers in about 40 KiB): stored answers are held for the dedupe window, so
/// their size bounds the store's memory (the memory store also caps their total).
pub const MAX_STORED_ANSWER: usize = 64 << 10;

/// The client's `Idempotency-Key`, checked: 1 to 255 visible ASCII characters.
///
/// # Errors
/// `invalid_idempotency_key` for anything else.
pub(super) fn request_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY_HEADER) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::InvalidIdempotencyKey)?;
    let valid = (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic());
    if !valid {
        return Err(ApiError::InvalidIdempotencyKey);
    }
    Ok(Some(key.to_owned()))
}

/// A request's key in the store (namespaced by source) and its body's fingerprint.
pub(super) struct AnswerKey {
    key: String,
    fingerprint: String,
}

impl AnswerKey {
    pub(super) fn new(source: &str, key: &str, body: &[u8]) -> AnswerKey {
        use sha2::Digest;
        AnswerKey {
            key: format!("{source}:{key}"),
            fingerprint: crate::privacy::hex(&sha2::Sha256::digest(body)),
        }
    }
}

/// The answer stored under an `Idempotency-Key`.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredAnswer {
    /// SHA-256 of the decoded request body.
    fingerprint: String,
    status: u16,
    body: String,
}

impl StoredAnswer {
    /// The stored answer when the body is the same, else `idempotency_key_reused`.
    fn replay(stored: &[u8], fingerprint: &str) -> Result<Response<Full<Bytes>>, ApiError> {
        let stored: StoredAnswer = serde_json::from_slice(stored).map_err(|e| {
            tracing::error!(error = %e, "unreadable stored Idempotency-Key answer");
            ApiError::Internal
        })?;
        if stored.fingerprint != fingerprint {
            return Err(ApiError::IdempotencyKeyReused);
        }
        let status = StatusCode::from_u16(stored.status).map_err(|_| ApiError::Internal)?;
        let mut response = json_bytes_response(status, Bytes::from(stored.body));
        response
            .headers_mut()
            .insert(REPLAYED_HEADER, http::HeaderValue::from_static("true"));
        Ok(response)
    }
}

impl App {
    /// The stored answer to replay, if this key has one. A store failure is logged and
    /// the request processed (its events are still deduplicated one by one).
    ///
    /// # Errors
    /// `idempotency_key_reused` when the key was used for another body.
    pub(super) async fn recall(
        &self,
        key: &AnswerKey,
    ) -> Result<Option<Response<Full<Bytes>>>, ApiError> {
        let store = &self.pipeline.store;
        match self
            .pipeline
            .store_call("recall", 1, store.recall(&key.key))
            .await
        {
            Ok(Some(stored)) => StoredAnswer::replay(&stored, &key.fingerprint).map(Some),
            Ok(None) => Ok(None),
            Err(e) => {
                tracing::warn!(error = %e, "recalling an Idempotency-Key failed; processing the request");
                Ok(None)
            }
        }
    }

    /// Stores a successful answer under its key, unless it is too large to keep.
    pub(super) async fn remember(&self, key: &AnswerKey, status: StatusCode, body: &[u8]) {
        let stored = StoredAnswer {
            fingerprint: key.fingerprint.clone(),
            status: status.as_u16(),
            body: String::from_utf8_lossy(body).into_owned(),
        };
        let stored = serde_json::to_vec(&stored).expect("answers serialize");
        if stored.len() > MAX_STORED_ANSWER {
            // A replay is then processed again: its events come back `duplicate`, and
            // nothing is logged twice.
            self.pipeline.count_keys("answer_too_large", 1);
            return;
        }
        let store = &self.pipeline.store;
        let remembered = self
            .pipeline
            .store_call(
                "remember",
                1,
                store.remember(&key.key, &stored, self.answer_ttl),
            )
            .await;
        if let Err(e) = remembered {
            tracing::warn!(error = %e, "storing an Idempotency-Key answer failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(key: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            IDEMPOTENCY_KEY_HEADER,
            http::HeaderValue::from_bytes(key).unwrap(),
        );
        h
    }

    #[test]
    fn request_keys_are_short_visible_ascii() {
        assert_eq!(request_key(&HeaderMap::new()).unwrap(), None);
        assert_eq!(
            request_key(&headers(b"batch-42")).unwrap().as_deref(),
            Some("batch-42")
        );
        assert!(request_key(&headers(b"has space")).is_err());
        assert!(request_key(&headers(&[b'k'; 256])).is_err());
        assert!(request_key(&headers("é".as_bytes())).is_err());
    }

    #[test]
    fn a_stored_answer_replays_only_to_the_same_body() {
        let key = AnswerKey::new("web", "k1", b"{\"events\":[]}");
        let stored = serde_json::to_vec(&StoredAnswer {
            fingerprint: key.fingerprint.clone(),
            status: 200,
            body: "{\"accepted\":0}".into(),
        })
        .unwrap();
        let replayed = StoredAnswer::replay(&stored, &key.fingerprint).unwrap();
        assert_eq!(replayed.headers()[REPLAYED_HEADER], "true");
        let other = AnswerKey::new("web", "k1", b"{\"events\":[1]}");
        assert!(matches!(
            StoredAnswer::replay(&stored, &other.fingerprint),
            Err(ApiError::IdempotencyKeyReused)
        ));
    }
}
