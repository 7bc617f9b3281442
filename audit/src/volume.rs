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

use super::expectations::Volume;
use super::read::Rec;
use super::{BuildPreHashed, Chart, ChartPoint, Check, Status};

const HOUR: i64 = 3_600_000_000;
const WEEK: i64 = 168;
/// Segment values tracked per event and dimension; the rest count as `other`.
const MAX_VALUES: usize = 50;

/// Hourly counts per (event, dimension, value); dimension `all` holds the totals. Keyed
/// by a hash of the names, so counting a record allocates nothing.
#[derive(Default)]
pub struct Series {
    counts: HashMap<u64, OneSeries, BuildPreHashed>,
    /// Values seen per (event, dimension), to cap them.
    values: HashMap<u64, HashSet<u64, BuildPreHashed>, BuildPreHashed>,
}

struct OneSeries {
    event: String,
    dim: &'static str,
    value: String,
    hours: BTreeMap<i64, u64>,
    /// The hour being counted, and its count so far.
    current: Option<(i64, u64)>,
}

fn key(parts: &[&str]) -> u64 {
    super::hash(parts)
}

fn dimension(name: &str) -> Option<&'static str> {
    ["platform", "app_version", "region", "source"]
        .into_iter()
        .find(|d| *d == name)
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
            let known = self.values.entry(key(&[event, dim])).or_default();
            let value_key = key(&[value]);
            let value = if known.contains(&value_key) || known.len() < MAX_VALUES {
                known.insert(value_key);
                value
            } else {
                "other"
            };
            self.bump(event, dim, value, hour);
        }
    }

    fn bump(&mut self, event: &str, dim: &'static str, value: &str, hour: i64) {
        let series = self
            .counts
            .entry(key(&[event, dim, value]))
            .or_insert_with(|| OneSeries {
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

    /// One check per (event, dimension): fails on any anomalous hour.
    pub fn checks(&mut self, volume: &Volume) -> Vec<Check> {
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
            return Vec::new();
        };
        let last = self
            .counts
            .values()
            .filter_map(|s| s.hours.keys().next_back())
            .max()
            .copied()
            .unwrap_or(first);
        let judged = |hour: i64| {
            hour >= first + WEEK * volume.min_weeks as i64
                && !calendar.contains(&hour.div_euclid(24))
        };
        // z-scores of every (event, dim, value, hour) judged.
        let mut z: HashMap<Cell<'_>, Judged> = HashMap::new();
        for one in self.counts.values() {
            let (event, dim, value, series) =
                (one.event.as_str(), one.dim, one.value.as_str(), &one.hours);
            for hour in (first..=last).filter(|h| judged(*h)) {
                let history: Vec<f64> = (1..)
                    .map(|k| hour - k * WEEK)
                    .take_while(|h| *h >= first)
                    .filter(|h| !calendar.contains(&h.div_euclid(24)))
                    .map(|h| series.get(&h).copied().unwrap_or(0) as f64)
                    .collect();
                if history.len() < volume.min_weeks {
                    continue;
                }
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
        by_check
            .into_iter()
            .map(|((event, dim), mut anomalies)| {
                anomalies.sort_by(|a, b| b.0.total_cmp(&a.0));
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
            .collect()
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
