//! Which handler a request path reaches on which listener, and the route's metric label.

use http::Method;
use tollgate_event::segment::CallType;
use tollgate_event::wire::Protocol;

use super::Listener;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    Healthz,
    Readyz,
    Metrics,
    /// `/schemas/candidates`: what candidate schemas would do (admin only).
    Candidates,
    /// An ingest route, of the protocol its path speaks.
    Ingest(Protocol),
}

impl Route {
    /// The `route` label of request metrics and spans.
    pub(super) fn label(route: Option<Route>) -> &'static str {
        let Some(route) = route else {
            return "unknown";
        };
        match route {
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::Metrics => "metrics",
            Route::Candidates => "schema_candidates",
            Route::Ingest(protocol) => match protocol {
                Protocol::Native => "native",
                Protocol::Segment(None) => "segment_batch",
                Protocol::Segment(Some(call)) => match call {
                    CallType::Track => "segment_track",
                    CallType::Identify => "segment_identify",
                    CallType::Page => "segment_page",
                    CallType::Screen => "segment_screen",
                    CallType::Group => "segment_group",
                    CallType::Alias => "segment_alias",
                },
                Protocol::PostHog => "posthog",
                Protocol::Snowplow => "snowplow",
                Protocol::SnowplowPixel => "snowplow_pixel",
            },
        }
    }

    pub(super) fn find(path: &str, listener: Listener) -> Option<Route> {
        let route = match path {
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            "/metrics" if listener == Listener::Admin => Route::Metrics,
            "/schemas/candidates" if listener == Listener::Admin => Route::Candidates,
            _ if listener == Listener::Public => Route::Ingest(Protocol::of_path(path)?),
            _ => return None,
        };
        Some(route)
    }

    /// The methods the route answers, as the `Allow` header names them (GET routes
    /// answer HEAD too).
    pub(super) fn allow(self) -> &'static str {
        match self {
            Route::Healthz
            | Route::Readyz
            | Route::Metrics
            | Route::Candidates
            | Route::Ingest(Protocol::SnowplowPixel) => "GET, HEAD",
            // posthog-js falls back to GET with the events in the `data` parameter.
            Route::Ingest(Protocol::PostHog) => "GET, POST",
            Route::Ingest(Protocol::Native | Protocol::Segment(_) | Protocol::Snowplow) => "POST",
        }
    }

    /// Whether `method` may be sent to this route.
    pub(super) fn allows(self, method: &Method) -> bool {
        let name = method.as_str();
        self.allow().split(", ").any(|allowed| allowed == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_listener() {
        assert_eq!(
            Route::find("/v1/events", Listener::Public),
            Some(Route::Ingest(Protocol::Native))
        );
        assert_eq!(
            Route::find("/v1/track", Listener::Public),
            Some(Route::Ingest(Protocol::Segment(Some(CallType::Track))))
        );
        assert_eq!(
            Route::find("/v1/batch", Listener::Public),
            Some(Route::Ingest(Protocol::Segment(None)))
        );
        assert_eq!(Route::find("/metrics", Listener::Public), None);
        assert_eq!(
            Route::find("/metrics", Listener::Admin),
            Some(Route::Metrics)
        );
        assert_eq!(Route::find("/v1/events", Listener::Admin), None);
        assert_eq!(
            Route::find("/schemas/candidates", Listener::Admin),
            Some(Route::Candidates)
        );
        assert_eq!(Route::find("/schemas/candidates", Listener::Public), None);
        assert_eq!(Route::find("/v1/nope", Listener::Public), None);
        for path in [
            "/batch", "/batch/", "/e/", "/i/v0/e/", "/capture", "/track/", "/engage",
        ] {
            assert_eq!(
                Route::find(path, Listener::Public),
                Some(Route::Ingest(Protocol::PostHog)),
                "{path}"
            );
        }
        assert_eq!(Route::find("/batch", Listener::Admin), None);
        assert_eq!(
            Route::find("/com.snowplowanalytics.snowplow/tp2", Listener::Public),
            Some(Route::Ingest(Protocol::Snowplow))
        );
        assert_eq!(
            Route::find("/i", Listener::Public),
            Some(Route::Ingest(Protocol::SnowplowPixel))
        );
    }

    #[test]
    fn get_routes_answer_head() {
        assert!(Route::Healthz.allows(&Method::HEAD));
        let ingest = |protocol| Route::Ingest(protocol);
        assert!(!ingest(Protocol::Native).allows(&Method::GET));
        assert!(!ingest(Protocol::Native).allows(&Method::HEAD));
        assert!(ingest(Protocol::Native).allows(&Method::POST));
        assert!(ingest(Protocol::PostHog).allows(&Method::GET));
        assert!(ingest(Protocol::PostHog).allows(&Method::POST));
        assert!(!ingest(Protocol::Snowplow).allows(&Method::GET));
        assert!(ingest(Protocol::SnowplowPixel).allows(&Method::HEAD));
    }
}
