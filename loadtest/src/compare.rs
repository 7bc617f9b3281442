//! Is the new build worse than the old one? Two runs of the same scenario and seed,
//! compared metric by metric from their per-second samples.
//!
//! Each metric is a per-second series (events/s; p50, p99 and p99.9 of the requests
//! answered that second; the share of requests without a 2xx answer; the share of each
//! per-event outcome). The difference of the two runs' means gets a confidence interval
//! from a **moving-block bootstrap**: seconds are resampled in blocks of ⌈n^⅓⌉
//! consecutive seconds (so that the correlation between neighbouring seconds — a queue
//! that stays full, a GC pause — is kept, which resampling single seconds or a
//! Mann-Whitney test on them would ignore), 2 000 times per run, with a fixed seed so
//! the same files always give the same answer. The interval's level is 95 % for the
//! whole comparison (Bonferroni: 1 − 0.05/k for each of k metrics), so comparing two runs
//! of one build says "no detectable change" for all metrics 95 % of the time or more.
//!
//! A metric changed when its interval excludes zero *and* the change is at least the
//! minimum effect (relative for throughput and latency, default 3 %; half a percentage
//! point for shares): `better` or `worse` by the metric's direction, `changed` for
//! outcome shares, which have none. A declared regression threshold is crossed when the
//! metric is `worse` by more than it.

use std::fmt::Write as _;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::report::{Report, Second};

/// Resamples per run and metric.
const RESAMPLES: usize = 2000;
/// Shares are compared in absolute terms: half a percentage point.
const MIN_SHARE_EFFECT: f64 = 0.005;
/// Fewer seconds than this cannot say anything.
const MIN_SECONDS: usize = 5;

/// What to hold the new run to.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Fail when p99 got worse by more than this share (0.1: 10 %).
    pub max_p99_regression: Option<f64>,
    /// Fail when throughput got worse by more than this share.
    pub max_throughput_regression: Option<f64>,
    /// Smallest relative change of throughput or latency reported as one.
    pub min_effect: f64,
    /// Compare runs of different scenarios, seeds or load models anyway.
    pub force: bool,
}

/// Two runs that cannot be compared.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error(
        "the runs differ in {0} (different traffic is not a before/after comparison); --force compares them anyway"
    )]
    Different(String),
    #[error("{run} has {seconds} seconds of samples; at least {MIN_SECONDS} are needed")]
    TooShort { run: String, seconds: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Better,
    Worse,
    /// A share without a better direction moved.
    Changed,
    NoDetectableChange,
}

/// One metric of the two runs.
#[derive(Debug, Clone, Serialize)]
pub struct MetricChange {
    pub metric: String,
    /// `higher`, `lower` or `neither` is better.
    pub better: &'static str,
    /// Means of the per-second samples.
    pub old: f64,
    pub new: f64,
    /// `relative` (new ÷ old − 1) or `absolute` (new − old).
    pub scale: &'static str,
    pub change: f64,
    /// The confidence interval of `change`.
    pub low: f64,
    pub high: f64,
    pub verdict: Verdict,
}

/// The comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub old_run: String,
    pub new_run: String,
    pub seconds: [usize; 2],
    /// Level of each metric's interval.
    pub confidence: f64,
    pub method: &'static str,
    pub metrics: Vec<MetricChange>,
    /// Regression thresholds crossed, each a sentence.
    pub breaches: Vec<String>,
    /// Per-second samples of the charted metrics, [old, new].
    #[serde(skip)]
    charts: Vec<(String, [Vec<f64>; 2])>,
}

/// A metric's sample of one second; `None` when the second has none.
type Read = Box<dyn Fn(&Second) -> Option<f64>>;

/// How a metric is read off the seconds of a run.
struct Metric {
    name: String,
    better: &'static str,
    relative: bool,
    read: Read,
}

fn metrics(old: &Report, new: &Report) -> Vec<Metric> {
    let latency = |name: &str, pick: fn(&tollgate_report::Latency) -> u64| Metric {
        name: format!("{name} latency (ms)"),
        better: "lower",
        relative: true,
        read: Box::new(move |s: &Second| s.latency.as_ref().map(|l| pick(l) as f64 / 1000.0)),
    };
    let mut all = vec![
        Metric {
            name: "throughput (events/s)".into(),
            better: "higher",
            relative: true,
            read: Box::new(|s: &Second| Some(s.events as f64)),
        },
        latency("p50", |l| l.p50_us),
        latency("p99", |l| l.p99_us),
        latency("p99.9", |l| l.p999_us),
        Metric {
            name: "error rate".into(),
            better: "lower",
            relative: false,
            read: Box::new(|s: &Second| {
                (s.requests > 0).then(|| s.errors as f64 / s.requests as f64)
            }),
        },
    ];
    let mut outcomes: Vec<String> = old
        .outcomes
        .events
        .keys()
        .chain(new.outcomes.events.keys())
        .cloned()
        .collect();
    outcomes.sort();
    outcomes.dedup();
    for outcome in outcomes {
        all.push(Metric {
            name: format!("{outcome} share"),
            better: "neither",
            relative: false,
            read: Box::new(move |s: &Second| {
                (s.events > 0).then(|| {
                    s.outcomes.get(&outcome).copied().unwrap_or(0) as f64 / s.events as f64
                })
            }),
        });
    }
    all
}

/// The seconds a run is judged on: all but the last, which was cut short by the end of
/// the run.
fn seconds(report: &Report) -> &[Second] {
    let n = report.series.len();
    &report.series[..n.saturating_sub(1)]
}

/// Compares `new` against `old`.
///
/// # Errors
/// Different scenarios, seeds or load models (without `force`), or too few seconds.
pub fn compare(old: &Report, new: &Report, options: &Options) -> Result<Comparison, CompareError> {
    if !options.force {
        let mut different = Vec::new();
        if old.scenario != new.scenario {
            different.push("scenario");
        }
        if old.seed != new.seed {
            different.push("seed");
        }
        if old.model != new.model {
            different.push("load model");
        }
        if !different.is_empty() {
            return Err(CompareError::Different(different.join(", ")));
        }
    }
    for run in [old, new] {
        if seconds(run).len() < MIN_SECONDS {
            return Err(CompareError::TooShort {
                run: run.run_id.clone(),
                seconds: seconds(run).len(),
            });
        }
    }
    let metrics = metrics(old, new);
    let confidence = 1.0 - 0.05 / metrics.len() as f64;
    let mut rng = StdRng::seed_from_u64(0x7011_6a7e);
    let mut changes = Vec::new();
    let mut charts = Vec::new();
    for metric in &metrics {
        let samples = |r: &Report| -> Vec<f64> {
            seconds(r).iter().filter_map(|s| (metric.read)(s)).collect()
        };
        let (a, b) = (samples(old), samples(new));
        if a.len() < MIN_SECONDS || b.len() < MIN_SECONDS {
            continue;
        }
        let difference = |old: f64, new: f64| {
            if metric.relative {
                if old == 0.0 { 0.0 } else { new / old - 1.0 }
            } else {
                new - old
            }
        };
        let (mean_a, mean_b) = (mean(&a), mean(&b));
        let change = difference(mean_a, mean_b);
        let mut resampled: Vec<f64> = (0..RESAMPLES)
            .map(|_| difference(block_mean(&a, &mut rng), block_mean(&b, &mut rng)))
            .collect();
        resampled.sort_by(f64::total_cmp);
        let tail = (1.0 - confidence) / 2.0;
        let low = quantile(&resampled, tail);
        let high = quantile(&resampled, 1.0 - tail);
        let min_effect = if metric.relative {
            options.min_effect
        } else {
            MIN_SHARE_EFFECT
        };
        let detected = (low > 0.0 || high < 0.0) && change.abs() >= min_effect;
        let verdict = match (detected, metric.better, change > 0.0) {
            (false, _, _) => Verdict::NoDetectableChange,
            (true, "neither", _) => Verdict::Changed,
            (true, "higher", up) | (true, "lower", up) if up == (metric.better == "higher") => {
                Verdict::Better
            }
            (true, _, _) => Verdict::Worse,
        };
        if matches!(
            metric.name.as_str(),
            "throughput (events/s)" | "p99 latency (ms)"
        ) {
            charts.push((metric.name.clone(), [a.clone(), b.clone()]));
        }
        changes.push(MetricChange {
            metric: metric.name.clone(),
            better: metric.better,
            old: mean_a,
            new: mean_b,
            scale: if metric.relative {
                "relative"
            } else {
                "absolute"
            },
            change,
            low,
            high,
            verdict,
        });
    }
    let mut breaches = Vec::new();
    let worse = |name: &str| {
        changes
            .iter()
            .find(|c| c.metric == name && c.verdict == Verdict::Worse)
    };
    if let (Some(max), Some(c)) = (options.max_p99_regression, worse("p99 latency (ms)"))
        && c.change > max
    {
        breaches.push(format!(
            "p99 latency rose {:.1}% (limit {:.1}%)",
            c.change * 100.0,
            max * 100.0
        ));
    }
    if let (Some(max), Some(c)) = (
        options.max_throughput_regression,
        worse("throughput (events/s)"),
    ) && -c.change > max
    {
        breaches.push(format!(
            "throughput fell {:.1}% (limit {:.1}%)",
            -c.change * 100.0,
            max * 100.0
        ));
    }
    Ok(Comparison {
        old_run: old.run_id.clone(),
        new_run: new.run_id.clone(),
        seconds: [seconds(old).len(), seconds(new).len()],
        confidence,
        method: "moving-block bootstrap of per-second samples",
        metrics: changes,
        breaches,
        charts,
    })
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// The mean of one moving-block resample of `values`.
fn block_mean(values: &[f64], rng: &mut StdRng) -> f64 {
    let n = values.len();
    let block = ((n as f64).cbrt().ceil() as usize).clamp(1, n);
    let mut sum = 0.0;
    let mut taken = 0;
    while taken < n {
        let start = rng.random_range(0..=n - block);
        for value in &values[start..start + block.min(n - taken)] {
            sum += value;
            taken += 1;
        }
    }
    sum / n as f64
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

impl Comparison {
    /// True when no declared regression threshold was crossed.
    pub fn passed(&self) -> bool {
        self.breaches.is_empty()
    }

    /// Change, interval and verdict as text: relative changes in %, shares in
    /// percentage points.
    fn format_change(c: &MetricChange) -> [String; 3] {
        let (change, low, high) = (c.change * 100.0, c.low * 100.0, c.high * 100.0);
        let unit = if c.scale == "relative" { "%" } else { " pt" };
        [
            format!("{change:+.2}{unit}"),
            format!("[{low:+.2}, {high:+.2}]{unit}"),
            match c.verdict {
                Verdict::Better => "better",
                Verdict::Worse => "WORSE",
                Verdict::Changed => "changed",
                Verdict::NoDetectableChange => "no detectable change",
            }
            .to_owned(),
        ]
    }

    /// A table for people.
    pub fn human(&self) -> String {
        let mut out = format!(
            "old {} ({} s) → new {} ({} s); {:.2}% intervals, {}\n",
            self.old_run,
            self.seconds[0],
            self.new_run,
            self.seconds[1],
            self.confidence * 100.0,
            self.method
        );
        for c in &self.metrics {
            let [change, interval, verdict] = Self::format_change(c);
            let _ = writeln!(
                out,
                "{:<24} {:>12.4} → {:<12.4} {change:>9} {interval:<22} {verdict}",
                c.metric, c.old, c.new
            );
        }
        for breach in &self.breaches {
            let _ = writeln!(out, "regression threshold crossed: {breach}");
        }
        out
    }

    /// The comparison as one self-contained page: the table and the per-second series
    /// of throughput and p99 of both runs.
    pub fn html(&self) -> String {
        use tollgate_report::chart::{Chart, Line, XAxis};
        use tollgate_report::escape;
        let mut out = tollgate_report::chart::page_head(
            "Tollgate run comparison",
            ".worse{color:#b00020;font-weight:bold}.better{color:#2e7d32;font-weight:bold}",
        );
        let _ = write!(
            out,
            "<h1>Run comparison: {} → {}</h1><p>{:.2}% confidence intervals ({}).</p>",
            escape(&self.old_run),
            escape(&self.new_run),
            self.confidence * 100.0,
            self.method
        );
        if !self.breaches.is_empty() {
            let _ = write!(
                out,
                "<p class=\"worse\">Regression thresholds crossed: {}</p>",
                escape(&self.breaches.join("; "))
            );
        }
        out.push_str(
            "<table><tr><th>metric</th><th>old</th><th>new</th><th>change</th><th>interval</th><th>verdict</th></tr>",
        );
        for c in &self.metrics {
            let [change, interval, verdict] = Self::format_change(c);
            let class = match c.verdict {
                Verdict::Worse => "worse",
                Verdict::Better => "better",
                _ => "",
            };
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{change}</td><td>{interval}</td><td class=\"{class}\">{verdict}</td></tr>",
                escape(&c.metric),
                c.old,
                c.new
            );
        }
        out.push_str("</table>");
        for (k, (name, [old, new])) in self.charts.iter().enumerate() {
            let line = |label: &str, color: &'static str, dashed: bool, values: &[f64]| Line {
                name: label.to_owned(),
                color,
                dashed,
                points: values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (i as f64, Some(*v)))
                    .collect(),
            };
            let chart = Chart {
                id: format!("compare-{k}"),
                title: format!("{name}, per second"),
                x_label: "seconds into the run".into(),
                y_label: name.clone(),
                x_axis: XAxis::Linear,
                lines: vec![
                    line("old", "#9e9e9e", true, old),
                    line("new", "#1a237e", false, new),
                ],
                marks: Vec::new(),
            };
            out.push_str(&chart.svg());
        }
        out.push_str("</body></html>\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Latency;

    /// A run of 60 seconds: events/s around 1000 and p99 around `p99_ms`, with noise
    /// correlated between neighbouring seconds (AR(1)), as real runs have.
    fn synthetic(seed: u64, p99_ms: f64) -> Report {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut drift = 0.0f64;
        let series = (0..61)
            .map(|_| {
                drift = 0.5 * drift + rng.random_range(-1.0..1.0);
                let events = (1000.0 * (1.0 + 0.03 * drift)) as u64;
                let p99 = p99_ms * (1.0 + 0.08 * drift + rng.random_range(-0.05..0.05));
                let errors = u64::from(rng.random_range(0.0..1.0) < 0.1);
                let mut outcomes = std::collections::BTreeMap::new();
                outcomes.insert("accepted".to_owned(), events * 97 / 100);
                outcomes.insert("duplicate".to_owned(), events - events * 97 / 100);
                Second {
                    requests: events / 20,
                    events,
                    errors,
                    latency: Some(Latency {
                        count: events / 20,
                        p50_us: (p99 * 300.0) as u64,
                        p90_us: (p99 * 600.0) as u64,
                        p99_us: (p99 * 1000.0) as u64,
                        p999_us: (p99 * 1300.0) as u64,
                        max_us: (p99 * 1500.0) as u64,
                    }),
                    outcomes,
                    ..Second::default()
                }
            })
            .collect();
        let mut report = Report::new(
            &crate::report::RunInfo {
                run_id: format!("s{seed}"),
                target: "http://127.0.0.1:1".into(),
                model: "open:50/s".into(),
            },
            std::time::Duration::from_secs(61),
            &hdrhistogram::Histogram::new(3).unwrap(),
            Default::default(),
        );
        report.series = series;
        report.outcomes.events.insert("accepted".into(), 1);
        report.outcomes.events.insert("duplicate".into(), 1);
        report
    }

    fn options() -> Options {
        Options {
            max_p99_regression: Some(0.1),
            max_throughput_regression: Some(0.05),
            min_effect: 0.03,
            force: false,
        }
    }

    #[test]
    fn two_runs_of_one_build_show_no_detectable_change() {
        // Without a minimum effect, so that the intervals alone decide: resampling
        // single seconds at 95 % per metric calls 6 of these 20 pairs changed.
        let options = Options {
            min_effect: 0.0,
            ..options()
        };
        let quiet = (0..20u64)
            .filter(|pair| {
                let c = compare(
                    &synthetic(2 * pair, 5.0),
                    &synthetic(2 * pair + 1, 5.0),
                    &options,
                )
                .unwrap();
                c.passed()
                    && c.metrics
                        .iter()
                        .all(|m| m.verdict == Verdict::NoDetectableChange)
            })
            .count();
        assert!(quiet >= 19, "{quiet} of 20 pairs quiet");
    }

    #[test]
    fn a_30_percent_p99_regression_is_worse_and_crosses_the_threshold() {
        let c = compare(&synthetic(1, 5.0), &synthetic(2, 6.5), &options()).unwrap();
        let p99 = c
            .metrics
            .iter()
            .find(|m| m.metric == "p99 latency (ms)")
            .unwrap();
        assert_eq!(p99.verdict, Verdict::Worse, "{}", c.human());
        assert!(p99.low > 0.1 && p99.change > 0.2, "{}", c.human());
        assert!(!c.passed());
        assert!(
            c.breaches[0].starts_with("p99 latency rose"),
            "{:?}",
            c.breaches
        );
        // The other way round it is better, and nothing is crossed.
        let c = compare(&synthetic(2, 6.5), &synthetic(1, 5.0), &options()).unwrap();
        assert!(c.passed(), "{}", c.human());
    }

    #[test]
    fn runs_of_different_scenarios_or_seeds_are_refused_unless_forced() {
        let old = synthetic(1, 5.0);
        let mut new = synthetic(2, 5.0);
        new.seed = 7;
        let error = compare(&old, &new, &options()).unwrap_err();
        assert!(error.to_string().contains("seed"), "{error}");
        new.seed = old.seed;
        new.scenario = Some(crate::generate::Scenario {
            batch_size: 50,
            ..Default::default()
        });
        assert!(compare(&old, &new, &options()).is_err());
        let forced = Options {
            force: true,
            ..options()
        };
        assert!(compare(&old, &new, &forced).is_ok());
    }
}
