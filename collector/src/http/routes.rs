//! Routing and the handlers: authentication, body reading, and the hand-off to the
//! ingest pipeline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::json;
use tokio_util::task::TaskTracker;
use tollgate_event::Api;
use tollgate_event::segment::CallType;
use tracing::Instrument;

use super::Listener;
use super::body::{self, BodyLimits, Framing};
use crate::clock::Clock;
use crate::error::{ApiError, json_bytes_response, json_response};
use crate::ingest::{DecodeLimits, Pipeline, RequestInfo, Source, decode};
use crate::telemetry::Metrics;

pub use tollgate_event::wire::{
    EXPLAIN_HEADER, IDEMPOTENCY_KEY_HEADER, OUTCOMES_HEADER, REPLAYED_HEADER, REQUEST_ID_HEADER,
    SENT_AT_HEADER, SHADOW_HEADER, SOURCE_HEADER,
};

/// Largest answer stored under an `Idempotency-Key` (a 500-event batch of accepted
/// events answers in about 40 KiB): stored answers are held for the dedupe window, so
/// their size bounds the store's memory (the memory store also caps their total).
pub const MAX_STORED_ANSWER: usize = 64 << 10;

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

/// Hex SHA-256 of a request body.
fn fingerprint(body: &[u8]) -> String {
    use sha2::Digest;
    crate::privacy::hex(&sha2::Sha256::digest(body))
}

/// Shared state of the HTTP handlers.
pub struct App {
    pub pipeline: Arc<Pipeline>,
    /// Write key → source.
    pub sources: HashMap<String, Arc<Source>>,
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
    /// Per-source and per-client-IP limits; `None` when no source has any.
    pub rate_limits: Option<Arc<crate::ratelimit::RateLimits>>,
    pub platforms: tollgate_event::Platforms,
    pub body_limits: BodyLimits,
    /// Bytes all requests in flight may hold (`limits.max_in_flight_bytes`).
    pub memory: body::MemoryBudget,
    pub max_event_bytes: usize,
    pub max_events: usize,
    pub max_concurrent_requests: usize,
    pub request_timeout: Duration,
    /// How long an `Idempotency-Key` answer is kept (the dedupe window).
    pub answer_ttl: Duration,
    /// Peers whose `X-Tollgate-Shadow: 1` is believed (`server.shadow_proxies`).
    pub shadow_proxies: Vec<ipnet::IpNet>,
    /// Ingest work runs as tasks tracked here, so it finishes (and commits its claims)
    /// even when the client goes away, and shutdown can wait for it.
    pub tasks: TaskTracker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Healthz,
    Readyz,
    Metrics,
    Native,
    Segment(Option<CallType>),
}

impl Route {
    fn label(route: Option<Route>) -> &'static str {
        match route {
            Some(Route::Healthz) => "healthz",
            Some(Route::Readyz) => "readyz",
            Some(Route::Metrics) => "metrics",
            Some(Route::Native) => "native",
            Some(Route::Segment(None)) => "segment_batch",
            Some(Route::Segment(Some(call))) => match call {
                CallType::Track => "segment_track",
                CallType::Identify => "segment_identify",
                CallType::Page => "segment_page",
                CallType::Screen => "segment_screen",
                CallType::Group => "segment_group",
                CallType::Alias => "segment_alias",
            },
            None => "unknown",
        }
    }

    fn find(path: &str, listener: Listener) -> Option<Route> {
        let route = match path {
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            "/metrics" if listener == Listener::Admin => Route::Metrics,
            "/v1/events" if listener == Listener::Public => Route::Native,
            "/v1/batch" | "/v1/import" if listener == Listener::Public => Route::Segment(None),
            _ if listener == Listener::Public => {
                let call = path.strip_prefix("/v1/").and_then(CallType::from_name)?;
                Route::Segment(Some(call))
            }
            _ => return None,
        };
        Some(route)
    }

    fn method(self) -> Method {
        match self {
            Route::Healthz | Route::Readyz | Route::Metrics => Method::GET,
            Route::Native | Route::Segment(_) => Method::POST,
        }
    }
}

impl App {
    /// Answers one request; never fails (errors become JSON responses).
    pub async fn handle(
        self: &Arc<Self>,
        req: Request<Incoming>,
        listener: Listener,
    ) -> Response<Full<Bytes>> {
        let started = Instant::now();
        let route = Route::find(req.uri().path(), listener);
        if req.headers().get(SHADOW_HEADER).is_some_and(|v| v == "1") {
            let metric = if self.is_shadow_copy(req.headers(), req.extensions()) {
                &self.metrics.shadow_requests
            } else {
                &self.metrics.shadow_untrusted
            };
            metric.add(
                1,
                &[opentelemetry::KeyValue::new("route", Route::label(route))],
            );
        }
        let result = match route {
            None => Err(ApiError::NotFound),
            Some(r)
                if req.method() != r.method()
                    && !(r.method() == Method::GET && req.method() == Method::HEAD) =>
            {
                Err(ApiError::MethodNotAllowed {
                    allow: if r.method() == Method::GET {
                        "GET"
                    } else {
                        "POST"
                    },
                })
            }
            Some(Route::Healthz) => Ok(json_response(StatusCode::OK, &json!({"status": "ok"}))),
            Some(Route::Readyz) => Ok(self.readiness().await),
            Some(Route::Metrics) => Ok(self.metrics_page()),
            Some(Route::Native | Route::Segment(_)) => {
                let (api, call) = match route {
                    Some(Route::Segment(call)) => (Api::Segment, call),
                    _ => (Api::Native, None),
                };
                // One span per ingest request (exported as a trace when OTLP is on):
                // route, source, outcome counts, status; never event content.
                // (Named `telemetry::tracing_setup::REQUEST_SPAN`.)
                let span = tracing::info_span!(
                    "ingest",
                    otel.kind = "server",
                    http.route = Route::label(route),
                    tollgate.source = tracing::field::Empty,
                    tollgate.events.accepted = tracing::field::Empty,
                    tollgate.events.duplicate = tracing::field::Empty,
                    tollgate.events.rejected = tracing::field::Empty,
                    tollgate.events.retry = tracing::field::Empty,
                    http.response.status_code = tracing::field::Empty,
                    error.code = tracing::field::Empty,
                );
                let result = self
                    .ingest(req, api, call, span.clone())
                    .instrument(span.clone())
                    .await;
                match &result {
                    Ok(response) => {
                        span.record("http.response.status_code", response.status().as_u16());
                    }
                    Err(e) => {
                        span.record("http.response.status_code", e.status().as_u16());
                        span.record("error.code", e.code());
                    }
                }
                result
            }
        };
        let response = result.unwrap_or_else(|e| {
            self.metrics.request_error(e.code());
            tracing::debug!(code = e.code(), error = %e, "request refused");
            e.to_response()
        });
        self.metrics.observe_request(
            Route::label(route),
            response.status().as_u16(),
            started.elapsed(),
        );
        response
    }

    /// A copy from a shadow proxy: marked `X-Tollgate-Shadow: 1` by a peer listed in
    /// `server.shadow_proxies`. Anyone else could otherwise send real events to the
    /// shadow stream while their ids are committed in the main idempotency namespace
    /// (acknowledged, yet missing from the main log).
    fn is_shadow_copy(&self, headers: &HeaderMap, extensions: &http::Extensions) -> bool {
        headers.get(SHADOW_HEADER).is_some_and(|v| v == "1")
            && extensions
                .get::<super::PeerAddr>()
                .is_some_and(|peer| self.shadow_proxies.iter().any(|net| net.contains(&peer.0)))
    }

    async fn readiness(&self) -> Response<Full<Bytes>> {
        let log = self.pipeline.log.ready();
        let store = self.pipeline.store.ready().await;
        let word = |ok: bool| if ok { "ok" } else { "unavailable" };
        let status = if log && store {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json_response(
            status,
            &json!({
                "status": if log && store { "ready" } else { "not_ready" },
                "checks": {
                    "config": "ok",
                    "log": word(log),
                    "idempotency": {"store": self.pipeline.store.name(), "status": word(store)},
                }
            }),
        )
    }

    fn metrics_page(&self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(Bytes::from(self.metrics.render())));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        response
    }

    /// Runs one rate-limit check of `source`, counting a refusal by source and limit.
    fn check_rate(
        &self,
        source: &str,
        check: impl FnOnce(
            &crate::ratelimit::RateLimits,
        ) -> Result<(), (ApiError, crate::ratelimit::Refusal)>,
    ) -> Result<(), ApiError> {
        let Some(limits) = &self.rate_limits else {
            return Ok(());
        };
        check(limits).map_err(|(error, refusal)| {
            self.metrics.rate_limited.add(
                1,
                &[
                    opentelemetry::KeyValue::new("source", source.to_owned()),
                    opentelemetry::KeyValue::new("limit", refusal.label()),
                ],
            );
            error
        })
    }

    fn source(&self, key: &str) -> Result<Arc<Source>, ApiError> {
        self.sources
            .get(key)
            .cloned()
            .ok_or(ApiError::UnknownWriteKey)
    }

    async fn ingest(
        self: &Arc<Self>,
        req: Request<Incoming>,
        api: Api,
        call: Option<CallType>,
        span: tracing::Span,
    ) -> Result<Response<Full<Bytes>>, ApiError> {
        let received_at = self.clock.now();
        let (parts, incoming) = req.into_parts();
        // Refuse what we can before reading the body.
        let header_source = write_key(&parts.headers)
            .map(|k| self.source(&k))
            .transpose()?;
        if header_source.is_none() && api == Api::Native {
            return Err(ApiError::MissingWriteKey);
        }
        // The client's IP is only needed by per-IP limits.
        let client_ip = self.rate_limits.as_ref().map(|limits| {
            let peer = parts
                .extensions
                .get::<super::PeerAddr>()
                .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |p| p.0);
            limits.client_ip(peer, &parts.headers)
        });
        if let (Some(source), Some(ip)) = (&header_source, client_ip) {
            self.check_rate(&source.id, |l| l.check_request(&source.id, ip))?;
        }
        let framing = body::framing(&parts.headers)?;
        if framing == Framing::Ndjson && api == Api::Segment {
            return Err(ApiError::UnsupportedMediaType(
                "NDJSON is accepted on /v1/events only",
            ));
        }
        let encoding = body::encoding(&parts.headers)?;
        let request_key = match parts.headers.get(IDEMPOTENCY_KEY_HEADER) {
            None => None,
            Some(value) => {
                let key = value
                    .to_str()
                    .map_err(|_| ApiError::InvalidIdempotencyKey)?;
                let valid =
                    (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic());
                if !valid {
                    return Err(ApiError::InvalidIdempotencyKey);
                }
                Some(key.to_owned())
            }
        };
        let shadow = self.is_shadow_copy(&parts.headers, &parts.extensions);
        // The body's bytes are reserved before it is read: past the budget the client
        // is told to come back rather than the process running out of memory.
        let wire = body::declared_length(&parts.headers)
            .unwrap_or(self.body_limits.max_body)
            .min(self.body_limits.max_body);
        let reservation = self.memory.reserve(None, wire)?;
        let raw = body::read(&parts.headers, incoming, self.body_limits).await?;
        let edge_country = self.pipeline.privacy.as_ref().and_then(|privacy| {
            let header = privacy
                .region_header
                .as_ref()
                .and_then(|name| parts.headers.get(name.as_str()))
                .and_then(|v| v.to_str().ok());
            let peer = parts.extensions.get::<super::PeerAddr>().map(|p| p.0);
            privacy.edge_country(header, peer)
        });
        let explain = parts.headers.get(EXPLAIN_HEADER).is_some_and(|v| v == "1");
        let sent_at_header = parts
            .headers
            .get(SENT_AT_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);

        // From here on the work runs to completion even if the client disconnects, so
        // claims are always committed or released.
        let app = self.clone();
        let work = self.tasks.spawn(
            async move {
            let bytes = body::decode(raw, encoding, app.body_limits)?;
            // Decoded events and their records, until the log has them.
            let _reservation = app.memory.reserve(Some(reservation), 2 * bytes.len() as u64)?;
            let limits = DecodeLimits {
                max_event_bytes: app.max_event_bytes,
                max_events: app.max_events,
                platforms: &app.platforms,
            };
            let decoded = match (api, framing) {
                (Api::Native, Framing::Json) => decode::native_json(&bytes, &limits)?,
                (Api::Native, Framing::Ndjson) => {
                    decode::native_ndjson(&bytes, sent_at_header.as_deref(), &limits)?
                }
                (Api::Segment, _) => decode::segment(&bytes, call, received_at, &limits)?,
            };
            let source = match (header_source, &decoded.body_write_key) {
                (Some(source), _) => source,
                (None, Some(key)) => {
                    // A write key in the body (Segment's /v1/import): its request
                    // limits are checked now that it is known.
                    let source = app.source(key)?;
                    if let Some(ip) = client_ip {
                        app.check_rate(&source.id, |l| l.check_request(&source.id, ip))?;
                    }
                    source
                }
                (None, None) => return Err(ApiError::MissingWriteKey),
            };
            span.record("tollgate.source", source.id.as_str());
            app.check_rate(&source.id, |l| {
                l.check_events(&source.id, decoded.items.len())
            })?;
            // A request-level Idempotency-Key replays the first answer to the same body.
            let answer_key = request_key.map(|k| (format!("{}:{k}", source.id), fingerprint(&bytes)));
            if let Some((key, print)) = &answer_key {
                let recalled = app
                    .pipeline
                    .store_call("recall", 1, app.pipeline.store.recall(key))
                    .await;
                match recalled {
                    Ok(Some(stored)) => return StoredAnswer::replay(&stored, print),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "recalling an Idempotency-Key failed; processing the request"),
                }
            }

            let request_id = uuid::Uuid::now_v7().to_string();
            let outcome = app
                .pipeline
                .process(
                    &source,
                    api,
                    decoded,
                    RequestInfo {
                        received_at,
                        request_id: &request_id,
                        edge_country: edge_country.as_deref(),
                        shadow,
                    },
                )
                .await?;
            let answer = &outcome.answer;
            span.record("tollgate.events.accepted", answer.accepted);
            span.record("tollgate.events.duplicate", answer.duplicate);
            span.record("tollgate.events.rejected", answer.rejected);
            span.record("tollgate.events.retry", answer.retry);
            let status = if answer.retry > 0 {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            let body = match api {
                Api::Native => serde_json::to_vec(answer),
                // Segment SDKs only look at the status; per-event outcomes are logged
                // and counted.
                Api::Segment if answer.retry > 0 => serde_json::to_vec(
                    &json!({"error": {"code": "retry", "message": "some events are being written by another request; resend the batch"}}),
                ),
                Api::Segment => serde_json::to_vec(&json!({"success": true})),
            }
            .expect("answers serialize");
            if let (Some((key, print)), StatusCode::OK) = (&answer_key, status) {
                let stored = StoredAnswer {
                    fingerprint: print.clone(),
                    status: status.as_u16(),
                    body: String::from_utf8_lossy(&body).into_owned(),
                };
                let stored = serde_json::to_vec(&stored).expect("answers serialize");
                if stored.len() > MAX_STORED_ANSWER {
                    // A replay is then processed again: its events come back
                    // `duplicate`, and nothing is logged twice.
                    app.pipeline.count_keys("answer_too_large", 1);
                } else {
                    let remembered = app
                        .pipeline
                        .store_call("remember", 1, app.pipeline.store.remember(key, &stored, app.answer_ttl))
                        .await;
                    if let Err(e) = remembered {
                        tracing::warn!(error = %e, "storing an Idempotency-Key answer failed");
                    }
                }
            }
            let mut response = json_bytes_response(status, Bytes::from(body));
            if answer.retry > 0 {
                response
                    .headers_mut()
                    .insert(http::header::RETRY_AFTER, http::HeaderValue::from(1u32));
            }
            response.headers_mut().insert(
                REQUEST_ID_HEADER,
                http::HeaderValue::from_str(&request_id).expect("a uuid is a valid header"),
            );
            if explain {
                let headers = response.headers_mut();
                if let Ok(value) = http::HeaderValue::from_str(&source.id) {
                    headers.insert(SOURCE_HEADER, value);
                }
                let outcomes = explained(&outcome, &app.pipeline.region);
                if let Ok(value) = http::HeaderValue::from_str(&outcomes) {
                    headers.insert(OUTCOMES_HEADER, value);
                }
            }
            Ok(response)
        }
            .instrument(tracing::Span::current()),
        );
        work.await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "ingest task failed");
            Err(ApiError::Internal)
        })
    }
}

/// `status[:code][@region]` per event, in request order: `accepted@eu,rejected:unknown_event`.
fn explained(outcome: &crate::ingest::IngestOutcome, default_region: &str) -> String {
    let results = &outcome.answer.results;
    let mut out = String::with_capacity(results.len() * 16);
    for (result, policy) in results.iter().zip(&outcome.policies) {
        let region = (result.status == crate::ingest::Status::Accepted).then(|| {
            policy
                .as_ref()
                .map_or(default_region, |p| p.region.as_str())
        });
        let code = result.error.as_ref().map(|e| e.code.as_str());
        tollgate_event::wire::encode_outcome(&mut out, result.status, code, region);
    }
    out
}

/// The write key: the HTTP Basic user (as Segment SDKs send it), or a Bearer token.
fn write_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let user = text.split_once(':').map_or(text.as_str(), |(u, _)| u);
        (!user.is_empty()).then(|| user.to_owned())
    } else if scheme.eq_ignore_ascii_case("bearer") {
        let token = rest.trim();
        (!token.is_empty()).then(|| token.to_owned())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[test]
    fn write_keys_from_basic_and_bearer() {
        // base64("wk_123:") as Segment SDKs send it.
        assert_eq!(
            write_key(&headers("Basic d2tfMTIzOg==")).as_deref(),
            Some("wk_123")
        );
        // base64("wk_123") without the colon.
        assert_eq!(
            write_key(&headers("Basic d2tfMTIz")).as_deref(),
            Some("wk_123")
        );
        assert_eq!(write_key(&headers("Bearer wk_9")).as_deref(), Some("wk_9"));
        assert_eq!(write_key(&headers("Basic !!!")), None);
        assert_eq!(write_key(&headers("Digest x")), None);
        assert_eq!(write_key(&HeaderMap::new()), None);
    }

    #[test]
    fn routes_by_listener() {
        assert_eq!(
            Route::find("/v1/events", Listener::Public),
            Some(Route::Native)
        );
        assert_eq!(
            Route::find("/v1/track", Listener::Public),
            Some(Route::Segment(Some(CallType::Track)))
        );
        assert_eq!(
            Route::find("/v1/batch", Listener::Public),
            Some(Route::Segment(None))
        );
        assert_eq!(Route::find("/metrics", Listener::Public), None);
        assert_eq!(
            Route::find("/metrics", Listener::Admin),
            Some(Route::Metrics)
        );
        assert_eq!(Route::find("/v1/events", Listener::Admin), None);
        assert_eq!(Route::find("/v1/nope", Listener::Public), None);
    }
}
