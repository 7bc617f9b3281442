//! The handlers: probes, `/metrics`, and ingest. An ingest request passes, in order:
//! authentication and request rate limits ([`super::auth`]), media type, encoding and
//! `Idempotency-Key` checks, the memory budget and the body read ([`super::body`]);
//! then, in a task that finishes even if the client goes away, decoding, the event
//! rate limit, an `Idempotency-Key` replay ([`super::replay`]), the pipeline
//! ([`crate::ingest`]) and the answer ([`super::answer`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::json;
use time::OffsetDateTime;
use tokio_util::task::TaskTracker;
use tollgate_event::Api;
use tollgate_event::wire::{EXPLAIN_HEADER, Protocol, SENT_AT_HEADER, SHADOW_HEADER};
use tracing::Instrument;

use super::body::{self, BodyLimits, Encoding, Framing};
use super::replay::{AnswerKey, request_key};
use super::route::Route;
use super::{Listener, answer, auth, unwrap};
use crate::clock::Clock;
use crate::error::{ApiError, json_response};
use crate::ingest::{DecodeLimits, Decoded, Pipeline, RequestInfo, Source, decode};
use crate::rules::Rules;
use crate::telemetry::Metrics;

/// Shared state of the HTTP handlers.
pub struct App {
    pub pipeline: Arc<Pipeline>,
    /// Schemas, privacy, sources and rate limits: each request loads them once, and a
    /// reload swaps them whole.
    pub rules: Arc<arc_swap::ArcSwap<Rules>>,
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
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
            Some(r) if !r.allows(req.method()) => {
                Err(ApiError::MethodNotAllowed { allow: r.allow() })
            }
            Some(Route::Healthz) => Ok(json_response(StatusCode::OK, &json!({"status": "ok"}))),
            Some(Route::Readyz) => Ok(self.readiness().await),
            Some(Route::Metrics) => Ok(self.metrics_page()),
            Some(Route::Candidates) => {
                let rules = self.rules.load();
                Ok(super::candidates::page(
                    rules.schemas.id(),
                    &rules.schemas.candidate_reports(),
                    req.headers(),
                    req.uri().query(),
                ))
            }
            Some(Route::Ingest(protocol)) => {
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
                    .ingest(req, protocol, span.clone())
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

    /// What the headers say, checked before the body is read: everything that can be
    /// refused without reading it is.
    fn head(&self, parts: &Parts, api: Api) -> Result<Head, ApiError> {
        let query = parts.uri.query().map(str::to_owned);
        let received_at = self.clock.now();
        let rules = self.rules.load_full();
        let source = auth::write_key(&parts.headers)
            .map(|k| rules.sources.by_key(&k))
            .transpose()?;
        if source.is_none() && api == Api::Native {
            return Err(ApiError::MissingWriteKey);
        }
        let peer = parts.extensions.get::<super::PeerAddr>().map(|p| p.0);
        // The client's IP is only needed by per-IP limits.
        let client_ip = rules.rate_limits.as_ref().map(|limits| {
            limits.client_ip(peer.unwrap_or(IpAddr::from([0, 0, 0, 0])), &parts.headers)
        });
        if let (Some(source), Some(ip)) = (&source, client_ip) {
            self.check_rate(&rules, &source.id, |l| l.check_request(&source.id, ip))?;
        }
        let framing = body::framing(&parts.headers)?;
        match framing {
            Framing::Ndjson if api != Api::Native => {
                return Err(ApiError::UnsupportedMediaType(
                    "NDJSON is accepted on /v1/events only",
                ));
            }
            Framing::Form if api != Api::PostHog => {
                return Err(ApiError::UnsupportedMediaType(
                    "form bodies are accepted on PostHog's routes only",
                ));
            }
            _ => {}
        }
        let encoding = body::encoding(&parts.headers)?;
        let request_key = request_key(&parts.headers)?;
        let edge_country = rules.privacy.as_ref().and_then(|privacy| {
            let header = privacy
                .region_header
                .as_ref()
                .and_then(|name| parts.headers.get(name.as_str()))
                .and_then(|v| v.to_str().ok());
            privacy.edge_country(header, peer)
        });
        Ok(Head {
            received_at,
            rules,
            source,
            client_ip,
            framing,
            encoding,
            request_key,
            shadow: self.is_shadow_copy(&parts.headers, &parts.extensions),
            explain: parts.headers.get(EXPLAIN_HEADER).is_some_and(|v| v == "1"),
            sent_at: parts
                .headers
                .get(SENT_AT_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            edge_country,
            query,
            anonymous: parts.headers.contains_key("sp-anonymous"),
        })
    }

    async fn ingest(
        self: &Arc<Self>,
        req: Request<Incoming>,
        protocol: Protocol,
        span: tracing::Span,
    ) -> Result<Response<Full<Bytes>>, ApiError> {
        let api = protocol.api();
        let (parts, incoming) = req.into_parts();
        let head = self.head(&parts, api)?;
        // The body's bytes are reserved before it is read: past the budget the client
        // is told to come back rather than the process running out of memory.
        let wire = body::declared_length(&parts.headers)
            .unwrap_or(self.body_limits.max_body)
            .min(self.body_limits.max_body);
        let reservation = self.memory.reserve(None, wire)?;
        let raw = body::read(&parts.headers, incoming, self.body_limits).await?;

        // From here on the work runs to completion even if the client disconnects, so
        // claims are always committed or released.
        let app = self.clone();
        let work = self.tasks.spawn(
            async move {
                let mut bytes = body::decode(raw, head.encoding, app.body_limits)?;
                if api == Api::PostHog {
                    bytes = unwrap::posthog(
                        bytes,
                        head.framing,
                        head.query.as_deref(),
                        app.body_limits,
                    )?;
                }
                // Decoded events and their records, until the log has them.
                let _reservation = app
                    .memory
                    .reserve(Some(reservation), 2 * bytes.len() as u64)?;
                let decoded = app.decode(&head, protocol, &bytes)?;
                let source = app.body_source(&head, api, &decoded)?;
                span.record("tollgate.source", source.id.as_str());
                app.check_rate(&head.rules, &source.id, |l| {
                    l.check_events(&source.id, decoded.items.len())
                })?;
                let answer_key = head
                    .request_key
                    .as_deref()
                    .map(|key| AnswerKey::new(&source.id, key, &bytes));
                if let Some(key) = &answer_key
                    && let Some(replayed) = app.recall(key).await?
                {
                    return Ok(replayed);
                }

                let request_id = uuid::Uuid::now_v7().to_string();
                let outcome = app
                    .pipeline
                    .process(
                        &head.rules,
                        &source,
                        api,
                        decoded,
                        RequestInfo {
                            received_at: head.received_at,
                            request_id: &request_id,
                            edge_country: head.edge_country.as_deref(),
                            shadow: head.shadow,
                            replay: None,
                        },
                    )
                    .await?;
                let counts = &outcome.answer;
                span.record("tollgate.events.accepted", counts.accepted);
                span.record("tollgate.events.duplicate", counts.duplicate);
                span.record("tollgate.events.rejected", counts.rejected);
                span.record("tollgate.events.retry", counts.retry);
                let shape = answer::Shape::of(protocol, head.query.as_deref());
                let status = shape.status(&outcome);
                let body = shape.body(&outcome);
                if let (Some(key), StatusCode::OK, true) = (&answer_key, status, shape.is_json()) {
                    app.remember(key, status, &body).await;
                }
                let explain = head.explain.then(|| answer::Explanation {
                    source: &source.id,
                    default_region: &app.pipeline.region,
                });
                Ok(shape.response(status, body, &outcome, &request_id, explain))
            }
            .instrument(tracing::Span::current()),
        );
        work.await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "ingest task failed");
            Err(ApiError::Internal)
        })
    }

    /// The request's events, decoded as its API and framing say.
    fn decode(&self, head: &Head, protocol: Protocol, bytes: &[u8]) -> Result<Decoded, ApiError> {
        let limits = DecodeLimits {
            max_event_bytes: self.max_event_bytes,
            max_events: self.max_events,
            platforms: &self.platforms,
        };
        match (protocol, head.framing) {
            (Protocol::Native, Framing::Ndjson) => {
                decode::native_ndjson(bytes, head.sent_at.as_deref(), &limits)
            }
            (Protocol::Native, _) => decode::native_json(bytes, &limits),
            (Protocol::Segment(call), _) => decode::segment(bytes, call, head.received_at, &limits),
            (Protocol::PostHog, _) => {
                // posthog-js sends its send time as `_`, in milliseconds.
                let sent_at = unwrap::param(head.query.as_deref(), "_")
                    .and_then(|ms| ms.parse().ok())
                    .and_then(tollgate_event::posthog::epoch_millis);
                let request = decode::PostHogRequest {
                    sent_at,
                    received_at: head.received_at,
                };
                decode::posthog(bytes, request, &limits)
            }
            (Protocol::Snowplow, _) => decode::snowplow_post(bytes, head.snowplow(), &limits),
            (Protocol::SnowplowPixel, _) => Ok(decode::snowplow_get(
                head.query.as_deref().unwrap_or_default(),
                head.snowplow(),
            )),
        }
    }

    /// The source: the header's write key, else the one in the body (Segment
    /// `/v1/import`, PostHog's API key), else for Snowplow the events' app ids; a
    /// source found in the body has its request limits checked now that it is known.
    fn body_source(
        &self,
        head: &Head,
        api: Api,
        decoded: &Decoded,
    ) -> Result<Arc<Source>, ApiError> {
        let sources = &head.rules.sources;
        let found = match (&head.source, &decoded.body_write_key) {
            // A PostHog key in the body must name the header's source, if both are sent.
            (Some(header), Some(key)) if api == Api::PostHog => {
                if sources.by_key(key)?.id != header.id {
                    return Err(ApiError::MixedWriteKeys);
                }
                return Ok(header.clone());
            }
            (Some(source), _) => return Ok(source.clone()),
            (None, Some(key)) => sources.by_key(key)?,
            (None, None) if api == Api::Snowplow => sources.by_apps(&decoded.app_ids)?,
            (None, None) => return Err(ApiError::MissingWriteKey),
        };
        if let Some(ip) = head.client_ip {
            self.check_rate(&head.rules, &found.id, |l| l.check_request(&found.id, ip))?;
        }
        Ok(found)
    }
}

/// What an ingest request's headers say, read before its body.
struct Head {
    /// Every event's `timestamp_server`.
    received_at: OffsetDateTime,
    /// The rules the whole request is judged by, loaded once.
    rules: Arc<Rules>,
    /// The source of the `Authorization` header's write key.
    source: Option<Arc<Source>>,
    /// The client's IP, when per-IP limits need it.
    client_ip: Option<IpAddr>,
    framing: Framing,
    encoding: Encoding,
    request_key: Option<String>,
    /// A copy from a trusted shadow proxy.
    shadow: bool,
    /// `X-Tollgate-Explain: 1`.
    explain: bool,
    /// `X-Tollgate-Sent-At` (the send time of an NDJSON body).
    sent_at: Option<String>,
    /// The country a trusted edge named, for the privacy policy.
    edge_country: Option<String>,
    /// The query string (PostHog's `compression`, `_`, `beacon`, `data`; a Snowplow
    /// pixel's event).
    query: Option<String>,
    /// Snowplow's `SP-Anonymous` header.
    anonymous: bool,
}

impl Head {
    fn snowplow(&self) -> decode::SnowplowRequest {
        decode::SnowplowRequest {
            received_at: self.received_at,
            anonymous: self.anonymous,
        }
    }
}
