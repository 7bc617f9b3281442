//! Data-quality signals with bounded label sets: which events arrive, from which
//! platforms and app versions, how often their key fields are empty, how late they are
//! and how wrong their clocks.
//!
//! Labels never grow with the traffic: event names are the schema registry's (else
//! `other`), platforms the configured set (else `other`), app versions the most frequent
//! N of the last window (else `other`).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How events are labelled in the data-quality metrics.
pub struct SegmentLabels {
    pub platforms: tollgate_event::Platforms,
    pub app_versions: TopVersions,
}

impl SegmentLabels {
    /// Platforms from the configured set; the top `versions` app versions, re-ranked
    /// every minute.
    pub fn new(platforms: tollgate_event::Platforms, versions: usize) -> SegmentLabels {
        SegmentLabels {
            platforms,
            app_versions: TopVersions::new(versions, Duration::from_secs(60)),
        }
    }

    /// The label of `platform`: the configured name it matches, `other` or `none`.
    pub fn platform(&self, platform: Option<&str>) -> &str {
        match platform {
            Some(p) => self.platforms.get(p).unwrap_or("other"),
            None => "none",
        }
    }
}

/// outcome, event_name, platform, app_version (owned: a request's events are freed
/// before its segments are counted).
type SegmentKey<'a> = (&'static str, &'a str, &'a str, Option<String>);

/// Events of one request grouped by their labels, so that each group costs one counter
/// update instead of one per event.
#[derive(Default)]
pub struct Segments<'a> {
    groups: Vec<(SegmentKey<'a>, u64)>,
}

impl<'a> Segments<'a> {
    pub fn add(
        &mut self,
        outcome: &'static str,
        event_name: &'a str,
        platform: &'a str,
        app_version: Option<&str>,
    ) {
        let same = |(o, e, p, v): &SegmentKey<'a>| {
            (*o, *e, *p, v.as_deref()) == (outcome, event_name, platform, app_version)
        };
        match self.groups.iter_mut().find(|(k, _)| same(k)) {
            Some((_, n)) => *n += 1,
            None => self.groups.push((
                (
                    outcome,
                    event_name,
                    platform,
                    app_version.map(str::to_owned),
                ),
                1,
            )),
        }
    }

    /// The groups so far: (key, events).
    #[cfg(test)]
    pub fn groups(&self) -> &[(SegmentKey<'a>, u64)] {
        &self.groups
    }

    /// Adds every group to `counter`.
    pub fn record(self, counter: &opentelemetry::metrics::Counter<u64>, labels: &SegmentLabels) {
        use opentelemetry::KeyValue;
        for ((outcome, event_name, platform, version), n) in self.groups {
            counter.add(
                n,
                &[
                    KeyValue::new("outcome", outcome),
                    KeyValue::new("event_name", event_name.to_owned()),
                    KeyValue::new("platform", platform.to_owned()),
                    KeyValue::new(
                        "app_version",
                        labels.app_versions.label(version.as_deref(), n),
                    ),
                ],
            );
        }
    }
}

/// The most frequent app versions, re-ranked every `window`.
pub struct TopVersions {
    n: usize,
    window: Duration,
    state: Mutex<TopState>,
}

struct TopState {
    labels: HashSet<String>,
    counts: HashMap<String, u64>,
    since: Instant,
}

/// Versions counted per window at most (a flood of junk versions cannot grow memory).
const MAX_CANDIDATES: usize = 1000;

impl TopVersions {
    pub fn new(n: usize, window: Duration) -> TopVersions {
        TopVersions {
            n,
            window,
            state: Mutex::new(TopState {
                labels: HashSet::new(),
                counts: HashMap::new(),
                since: Instant::now(),
            }),
        }
    }

    /// The label of `version` for `count` events: itself when among the top N (or
    /// while the first window still has room), else `other`; `none` when absent.
    pub fn label(&self, version: Option<&str>, count: u64) -> String {
        let Some(version) = version.filter(|v| !v.is_empty()) else {
            return "none".into();
        };
        let mut state = self.state.lock().expect("top versions lock");
        if state.since.elapsed() >= self.window {
            let mut ranked: Vec<(String, u64)> = state.counts.drain().collect();
            ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            state.labels = ranked.into_iter().take(self.n).map(|(v, _)| v).collect();
            state.since = Instant::now();
        }
        if state.counts.len() < MAX_CANDIDATES || state.counts.contains_key(version) {
            *state.counts.entry(version.to_owned()).or_default() += count;
        }
        if state.labels.contains(version) {
            return version.to_owned();
        }
        if state.labels.len() < self.n {
            state.labels.insert(version.to_owned());
            return version.to_owned();
        }
        "other".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_label_set_is_bounded_and_follows_the_traffic() {
        let top = TopVersions::new(2, Duration::from_millis(50));
        assert_eq!(top.label(Some("1.0"), 1), "1.0");
        assert_eq!(top.label(Some("1.1"), 1), "1.1");
        assert_eq!(
            top.label(Some("2.0"), 100),
            "other",
            "no room in the first window"
        );
        assert_eq!(top.label(None, 1), "none");
        std::thread::sleep(Duration::from_millis(60));
        // Re-ranked by the last window's counts: 2.0 (100) and then 1.0/1.1 (1 each).
        assert_eq!(top.label(Some("2.0"), 1), "2.0");
        assert_eq!(top.label(Some("1.0"), 1), "1.0");
        assert_eq!(top.label(Some("1.1"), 1), "other");
    }
}
