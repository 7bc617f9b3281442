//! Volume anomalies: each event's hourly count, overall and per segment, against the same
//! hour of the week in previous weeks.
//!
//! The expected count of an hour is the median of that hour-of-week in earlier weeks
//! (calendar days left out); the spread is 1.4826 · MAD, never below the Poisson √median.
//! An hour whose robust z-score passes the threshold is an anomaly. A segment's anomaly
//! while its sibling segments (the other platforms, say) stay normal is reported as a
//! likely logging failure; one that every sibling shares is a change in behaviour (or an
//! outage upstream of all of them).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use super::expectations::Volume;
use super::ordered::{BuildPreHashed, HashedMap, Ordered, hash};
use super::read::Rec;
use super::{Chart, ChartPoint, Check, Status};

const HOUR: i64 = 3_600_000_000;
const WEEK: i64 = 168;
/// Segment values tracked per event and dimension; the rest count as `other`.
const MAX_VALUES: usize = 50;

/// Hourly counts per (event, dimension, value); dimension `all` holds the totals. Keyed
/// by a hash of the names, so counting a record allocates nothing. A block's series are
/// not capped; absorbing them in log order admits values per (event, dimension) in order
/// of first appearance, as one pass would.
#[derive(Default)]
pub struct Series {
    counts: Ordered<OneSeries>,
    /// Values admitted per (event, dimension), to cap them.
    values: HashedMap<HashSet<u64, BuildPreHashed>>,
}

struct OneSeries {
    event: String,
    dim: &'static str,
    value: String,
    hours: BTreeMap<i64, u64>,
    /// The hour being counted, and its count so far.
    current: Option<(i64, u64)>,
}

fn dimension(name: &str) -> Option<&'static str> {
    ["platform", "app_version", "region", "source"]
        .into_iter()
        .find(|d| *d == name)
}

/// Hours of the judged window: judged, or skipped (no `min_weeks` of history before
/// them, or a calendar day).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Hours {
    pub judged: u64,
    pub without_history: u64,
    pub calendar: u64,
}

impl Series {
    pub fn add(&mut self, volume: &Volume, rec: &Rec, t: i64) {
        if !volume.events.is_empty() && !volume.events.iter().any(|e| *e == rec.event_name) {
            return;
        }
        let hour = t.div_euclid(HOUR);
        let event = rec.event_name.as_ref();
        self.bump(event, "all", "all", hour);
        for dim in volume.segments.iter().filter_map(|d| dimension(d)) {
            let value = match dim {
                "platform" => Some(rec.platform.as_ref()),
                "app_version" => rec.app_version.as_deref(),
                "region" => rec.region.as_deref(),
                _ => rec.source.as_deref(),
            }
            .unwrap_or("none");
            self.bump(event, dim, value, hour);
        }
    }

    fn bump(&mut self, event: &str, dim: &'static str, value: &str, hour: i64) {
        let series = self.counts.entry(hash(&[event, dim, value]), || OneSeries {
            event: event.to_owned(),
            dim,
            value: value.to_owned(),
            hours: BTreeMap::new(),
            current: None,
        });
        // Records come in time order: count the current hour in place, and move it into
        // the series when the hour changes.
        match &mut series.current {
            Some((h, n)) if *h == hour => *n += 1,
            current => {
                if let Some((h, n)) = current.take() {
                    *series.hours.entry(h).or_default() += n;
                }
                *current = Some((hour, 1));
            }
        }
    }

    /// Moves every series' current hour into its history.
    fn settle(&mut self) {
        for series in self.counts.values_mut() {
            if let Some((h, n)) = series.current.take() {
                *series.hours.entry(h).or_default() += n;
            }
        }
    }

    /// Adds the series of the records that follow these.
    pub fn absorb(&mut self, mut later: Series) {
        self.settle();
        later.settle();
        for one in later.counts.into_values() {
            let value = if one.dim == "all" {
                one.value
            } else {
                let known = self.values.entry(hash(&[&one.event, one.dim])).or_default();
                let value_key = hash(&[&one.value]);
                if known.contains(&value_key) || known.len() < MAX_VALUES {
                    known.insert(value_key);
                    one.value
                } else {
                    "other".to_owned()
                }
            };
            let series = self
                .counts
                .entry(hash(&[&one.event, one.dim, &value]), || OneSeries {
                    event: one.event.clone(),
                    dim: one.dim,
                    value,
                    hours: BTreeMap::new(),
                    current: None,
                });
            for (h, n) in one.hours {
                *series.hours.entry(h).or_default() += n;
            }
        }
    }

    /// One check per (event, dimension): fails on any anomalous hour. With a window
    /// (`[since, until)`, unix µs) only its whole hours are judged, else every hour.
    pub fn checks(&mut self, volume: &Volume, window: Option<(i64, i64)>) -> (Vec<Check>, Hours) {
        self.settle();
        let calendar: HashSet<i64> = volume
            .calendar
            .iter()
            .filter_map(|d| super::read::micros(&format!("{}T00:00:00Z", d.date)))
            .map(|t| t.div_euclid(HOUR * 24))
            .collect();
        let Some(first) = self
            .counts
            .values()
            .filter_map(|s| s.hours.keys().next())
            .min()
            .copied()
        else {
            return (Vec::new(), Hours::default());
        };
        let last = self
            .counts
            .values()
            .filter_map(|s| s.hours.keys().next_back())
            .max()
            .copied()
            .unwrap_or(first);
        let calendar = &calendar;
        let weeks_before = |hour: i64| {
            (1..)
                .map(move |k| hour - k * WEEK)
                .take_while(move |h| *h >= first)
                .filter(move |h| !calendar.contains(&h.div_euclid(24)))
        };
        // The window's whole hours, or every hour of the log.
        let candidates = match window {
            Some((since, until)) => {
                since.div_euclid(HOUR) + i64::from(since.rem_euclid(HOUR) != 0)
                    ..until.div_euclid(HOUR)
            }
            None => first..last + 1,
        };
        let mut hours = Hours::default();
        let mut judged_hours = Vec::new();
        for hour in candidates {
            if calendar.contains(&hour.div_euclid(24)) {
                hours.calendar += 1;
            } else if weeks_before(hour).count() < volume.min_weeks {
                hours.without_history += 1;
            } else {
                hours.judged += 1;
                judged_hours.push(hour);
            }
        }
        // z-scores of every (event, dim, value, hour) judged.
        let mut z: HashMap<Cell<'_>, Judged> = HashMap::new();
        for one in self.counts.values() {
            let (event, dim, value, series) =
                (one.event.as_str(), one.dim, one.value.as_str(), &one.hours);
            for &hour in &judged_hours {
                let history: Vec<f64> = weeks_before(hour)
                    .map(|h| series.get(&h).copied().unwrap_or(0) as f64)
                    .collect();
                let expected = median(&history);
                if expected < volume.min_expected {
                    continue;
                }
                let deviations: Vec<f64> = history.iter().map(|x| (x - expected).abs()).collect();
                let spread = (1.4826 * median(&deviations)).max(expected.sqrt());
                let observed = series.get(&hour).copied().unwrap_or(0);
                let score = (observed as f64 - expected) / spread;
                z.insert(
                    (event, dim, value, hour),
                    (score, observed, expected, spread),
                );
            }
        }
        let mut by_check: BTreeMap<(&str, &str), Vec<Anomaly<'_>>> = BTreeMap::new();
        for (&(event, dim, value, hour), &(score, observed, expected, _)) in &z {
            by_check.entry((event, dim)).or_default();
            if score.abs() <= volume.threshold {
                continue;
            }
            let when = super::read::format_hour(hour);
            let detail = if dim == "all" {
                format!("{observed} events at {when} vs {expected:.0} expected (z = {score:.1})")
            } else {
                let siblings: Vec<f64> = z
                    .iter()
                    .filter(|((e, d, v, h), _)| {
                        *e == event && *d == dim && *v != value && *h == hour
                    })
                    .map(|(_, (s, _, _, _))| *s)
                    .collect();
                let isolated = !siblings.is_empty()
                    && siblings.iter().all(|s| s.abs() < volume.threshold / 2.0);
                format!(
                    "{dim}={value}: {observed} events at {when} vs {expected:.0} expected (z = {score:.1}); {}",
                    if isolated {
                        "the other segments are normal: likely a logging failure in this segment"
                    } else if siblings.is_empty() {
                        "no other segment to compare with"
                    } else {
                        "other segments move too: a change across segments"
                    }
                )
            };
            by_check.entry((event, dim)).or_default().push((
                score.abs(),
                detail,
                (event, dim, value, hour),
            ));
        }
        let checks = by_check
            .into_iter()
            .map(|((event, dim), mut anomalies)| {
                // Ties by time, so that the worst is the same whatever the map's order.
                anomalies.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.2.cmp(&b.2)));
                let subject = if dim == "all" {
                    event.to_owned()
                } else {
                    format!("{event} by {dim}")
                };
                match anomalies.first() {
                    None => Check {
                        status: Status::Pass,
                        expectation: "volume".into(),
                        subject,
                        observed: 0.0,
                        limit: volume.threshold,
                        detail: "every judged hour within its hour-of-week baseline".into(),
                        chart: None,
                    },
                    Some((score, detail, (_, _, value, hour))) => Check {
                        status: Status::Fail,
                        expectation: "volume".into(),
                        subject: subject.clone(),
                        observed: *score,
                        limit: volume.threshold,
                        detail: format!("{} anomalous hour(s); worst: {detail}", anomalies.len()),
                        chart: Some(chart(
                            &z,
                            (event, dim, value),
                            *hour,
                            volume.threshold,
                            &subject,
                        )),
                    },
                }
            })
            .collect();
        (checks, hours)
    }
}

/// Three days either side of `hour` of one series: observed counts and the band of
/// expected ± threshold × spread.
fn chart(
    z: &HashMap<Cell<'_>, Judged>,
    (event, dim, value): (&str, &str, &str),
    hour: i64,
    threshold: f64,
    subject: &str,
) -> Chart {
    let points = (hour - 72..=hour + 72)
        .filter_map(|h| {
            let &(_, observed, expected, spread) = z.get(&(event, dim, value, h))?;
            Some(ChartPoint {
                hour: h,
                label: super::read::format_hour(h),
                observed,
                expected,
                low: (expected - threshold * spread).max(0.0),
                high: expected + threshold * spread,
            })
        })
        .collect();
    Chart {
        title: if dim == "all" {
            subject.to_owned()
        } else {
            format!("{event}, {dim}={value}")
        },
        anomaly_hour: hour,
        points,
    }
}

/// (event, dimension, value, hour).
type Cell<'a> = (&'a str, &'a str, &'a str, i64);
/// (|robust z|, the sentence, where) of one anomalous hour.
type Anomaly<'a> = (f64, String, Cell<'a>);
/// (robust z, observed, expected, spread).
type Judged = (f64, u64, f64, f64);

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}
