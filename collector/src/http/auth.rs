//! Who is sending: the write key (HTTP Basic user as Segment SDKs send it, a Bearer
//! token, or a PostHog API key in the body), or a Snowplow app id, resolved to a
//! configured source.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use base64::Engine;
use http::HeaderMap;
use http::header::AUTHORIZATION;

use super::App;
use crate::config::SourceConfig;
use crate::error::ApiError;
use crate::ingest::Source;
use crate::rules::Rules;

/// The configured sources, by write key and by Snowplow app id.
#[derive(Debug, Default)]
pub struct Sources {
    by_key: HashMap<String, Arc<Source>>,
    by_app: HashMap<String, Arc<Source>>,
    /// The source with `app_ids = ["*"]`, for app ids no other source names.
    any_app: Option<Arc<Source>>,
    by_id: HashMap<String, Arc<Source>>,
}

impl Sources {
    pub fn new(configs: &[SourceConfig]) -> Sources {
        let mut sources = Sources::default();
        for config in configs {
            let source = Arc::new(Source::new(config.id.clone(), config.allow_unknown_events));
            sources.by_id.insert(config.id.clone(), source.clone());
            for key in &config.write_keys {
                sources.by_key.insert(key.clone(), source.clone());
            }
            for app in &config.app_ids {
                if app == "*" {
                    sources.any_app = Some(source.clone());
                } else {
                    sources.by_app.insert(app.clone(), source.clone());
                }
            }
        }
        sources
    }

    /// The source of this id (a replay finds the source of a quarantine record so).
    pub fn by_id(&self, id: &str) -> Option<&Arc<Source>> {
        self.by_id.get(id)
    }

    /// The source a write key belongs to.
    ///
    /// # Errors
    /// `unknown_write_key`.
    pub fn by_key(&self, key: &str) -> Result<Arc<Source>, ApiError> {
        self.by_key
            .get(key)
            .cloned()
            .ok_or(ApiError::UnknownWriteKey)
    }

    /// The one source the app ids of a Snowplow request belong to (`None`: an event
    /// without `aid`, which only a `"*"` source takes).
    ///
    /// # Errors
    /// `unknown_app_id` when one belongs to no source, `mixed_sources` when they
    /// belong to two.
    pub fn by_apps(&self, apps: &BTreeSet<Option<String>>) -> Result<Arc<Source>, ApiError> {
        let mut found: Option<Arc<Source>> = None;
        for app in apps {
            let source = app
                .as_deref()
                .and_then(|app| self.by_app.get(app))
                .or(self.any_app.as_ref())
                .ok_or(ApiError::UnknownAppId)?;
            match &found {
                Some(first) if first.id != source.id => return Err(ApiError::MixedSources),
                Some(_) => {}
                None => found = Some(source.clone()),
            }
        }
        found.ok_or(ApiError::UnknownAppId)
    }
}

/// The write key: the HTTP Basic user (as Segment SDKs send it), or a Bearer token.
pub(super) fn write_key(headers: &HeaderMap) -> Option<String> {
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

impl App {
    /// Runs one rate-limit check of `source` under `rules`, counting a refusal by
    /// source and limit.
    pub(super) fn check_rate(
        &self,
        rules: &Rules,
        source: &str,
        check: impl FnOnce(
            &crate::ratelimit::RateLimits,
        ) -> Result<(), (ApiError, crate::ratelimit::Refusal)>,
    ) -> Result<(), ApiError> {
        let Some(limits) = &rules.rate_limits else {
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
}
