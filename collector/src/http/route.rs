//! Which handler a request path reaches on which listener, and the route's metric label.

use http::Method;
use tollgate_event::segment::CallType;

use super::Listener;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    Healthz,
    Readyz,
    Metrics,
    Native,
    Segment(Option<CallType>),
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
            None => "unknown",
        }
    }

    pub(super) fn find(path: &str, listener: Listener) -> Option<Route> {
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

    /// The method the route answers (GET routes answer HEAD too).
    pub(super) fn method(self) -> Method {
        match self {
            Route::Healthz | Route::Readyz | Route::Metrics => Method::GET,
            Route::Native | Route::Segment(_) => Method::POST,
        }
    }

    /// Whether `method` may be sent to this route.
    pub(super) fn allows(self, method: &Method) -> bool {
        *method == self.method() || (self.method() == Method::GET && method == Method::HEAD)
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
    }

    #[test]
    fn get_routes_answer_head() {
        assert!(Route::Healthz.allows(&Method::HEAD));
        assert!(!Route::Native.allows(&Method::GET));
        assert!(!Route::Native.allows(&Method::HEAD));
        assert!(Route::Native.allows(&Method::POST));
    }
}
