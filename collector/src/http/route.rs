//! Which handler a request path reaches on which listener, and the route's metric label.

use http::Method;
use tollgate_event::Api;
use tollgate_event::segment::CallType;
use tollgate_event::wire::Protocol;

use super::Listener;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    Healthz,
    Readyz,
    Metrics,
    Native,
    Segment(Option<CallType>),
    /// PostHog's capture routes (`/batch`, `/e`, `/i/v0/e`, `/capture`, `/track`,
    /// `/engage`, with or without a trailing slash).
    PostHog,
    /// Snowplow's `POST /com.snowplowanalytics.snowplow/tp2`.
    Snowplow,
    /// Snowplow's `GET /i` pixel (also under `/com.snowplowanalytics.snowplow/`).
    SnowplowPixel,
}

impl Route {
    /// The `route` label of request metrics and spans.
    pub(super) fn label(route: Option<Route>) -> &'static str {
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
            Some(Route::PostHog) => "posthog",
            Some(Route::Snowplow) => "snowplow",
            Some(Route::SnowplowPixel) => "snowplow_pixel",
            None => "unknown",
        }
    }

    pub(super) fn find(path: &str, listener: Listener) -> Option<Route> {
        let route = match path {
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            "/metrics" if listener == Listener::Admin => Route::Metrics,
            _ if listener == Listener::Public => match Protocol::of_path(path)? {
                Protocol::Native => Route::Native,
                Protocol::Segment(call) => Route::Segment(call),
                Protocol::PostHog => Route::PostHog,
                Protocol::Snowplow => Route::Snowplow,
                Protocol::SnowplowPixel => Route::SnowplowPixel,
            },
            _ => return None,
        };
        Some(route)
    }

    /// The API an ingest route speaks (`Native` for the others, which never ingest).
    pub(super) fn api(self) -> Api {
        match self {
            Route::Segment(_) => Api::Segment,
            Route::PostHog => Api::PostHog,
            Route::Snowplow | Route::SnowplowPixel => Api::Snowplow,
            Route::Native | Route::Healthz | Route::Readyz | Route::Metrics => Api::Native,
        }
    }

    /// The methods the route answers, as the `Allow` header names them (GET routes
    /// answer HEAD too).
    pub(super) fn allow(self) -> &'static str {
        match self {
            Route::Healthz | Route::Readyz | Route::Metrics | Route::SnowplowPixel => "GET, HEAD",
            Route::Native | Route::Segment(_) | Route::Snowplow => "POST",
            // posthog-js falls back to GET with the events in the `data` parameter.
            Route::PostHog => "GET, POST",
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
        for path in [
            "/batch", "/batch/", "/e/", "/i/v0/e/", "/capture", "/track/", "/engage",
        ] {
            assert_eq!(
                Route::find(path, Listener::Public),
                Some(Route::PostHog),
                "{path}"
            );
        }
        assert_eq!(Route::find("/batch", Listener::Admin), None);
        assert_eq!(
            Route::find("/com.snowplowanalytics.snowplow/tp2", Listener::Public),
            Some(Route::Snowplow)
        );
        assert_eq!(
            Route::find("/i", Listener::Public),
            Some(Route::SnowplowPixel)
        );
    }

    #[test]
    fn get_routes_answer_head() {
        assert!(Route::Healthz.allows(&Method::HEAD));
        assert!(!Route::Native.allows(&Method::GET));
        assert!(!Route::Native.allows(&Method::HEAD));
        assert!(Route::Native.allows(&Method::POST));
        assert!(Route::PostHog.allows(&Method::GET));
        assert!(Route::PostHog.allows(&Method::POST));
        assert!(!Route::Snowplow.allows(&Method::GET));
        assert!(Route::SnowplowPixel.allows(&Method::HEAD));
    }
}
