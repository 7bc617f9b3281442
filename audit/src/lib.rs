//! `tollgate-collector audit`: declared expectations checked over the log where it lands.
//!
//! The audit judges a window (`--since`/`--until`) and reads, before it, the history its
//! checks need: `min_weeks` weeks for the volume baselines, the window's own span for a
//! drift without a split, the dedupe window for duplicates, each reference's `within`,
//! and the quarantine's `history`. The log is read in blocks of whole lines, parsed and
//! counted on several threads, and merged in log order, so order-dependent checks
//! (duplicates and references within a window) count exactly what one pass would.
//! Memory is bounded by the expectations, not by the log: duplicates are found within
//! `dedupe_window` (the ids of that window are kept, as 64-bit hashes), references
//! within their `within`, and per-segment tallies are capped. Each expectation becomes a
//! [`Check`] that passes, warns (within 20 % of its limit) or fails; any failure makes the
//! command exit non-zero, so it can gate a launch or a daily pipeline.

pub mod expectations;
mod html;
mod ordered;
mod pool;
mod quarantine;
mod read;
mod tally;
mod volume;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use expectations::Expectations;
pub use quarantine::QuarantineRow;
pub use volume::Hours;

use tally::{Partial, Plan, Totals};
use tollgate_log::Start;

/// Where the records are read from.
#[derive(Debug, Clone)]
pub enum AuditInput {
    /// A collector's data directory (holding `events/` and `quarantine/`).
    Dir(PathBuf),
    /// Kafka topics, read from the history's start (found by timestamp where the broker
    /// can) or the beginning, until no message arrived for a while.
    Kafka(tollgate_log::TopicSource),
}

/// The two streams a collector writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Events,
    Quarantine,
}

/// Kafka timestamps are the producer's clock at append, a little after the record's
/// `timestamp_server`: the search by time starts this much earlier.
const KAFKA_SLACK: i64 = 10 * 60 * 1_000_000;

impl AuditInput {
    /// Emits the stream's lines in blocks of about `block` bytes; with Kafka, from the
    /// first message at `from` (unix µs) when the broker can find it. Returns where a
    /// Kafka read started.
    fn read(
        &self,
        stream: Stream,
        from: Option<i64>,
        block: usize,
        emit: pool::Emit<'_>,
    ) -> std::io::Result<Option<Start>> {
        match self {
            AuditInput::Dir(dir) => {
                let name = match stream {
                    Stream::Events => "events",
                    Stream::Quarantine => "quarantine",
                };
                // Segments that ended before the history are not opened.
                let mut blocks = tollgate_log::Blocks::open_from(&dir.join(name), block, from)?;
                let mut buffer = Vec::with_capacity(block);
                while blocks.next_into(&mut buffer)? {
                    emit(&mut buffer);
                }
                Ok(None)
            }
            AuditInput::Kafka(source) => {
                let topic = match stream {
                    Stream::Events => &source.topic,
                    Stream::Quarantine => match &source.quarantine_topic {
                        Some(topic) => topic,
                        None => return Ok(None),
                    },
                };
                let mut buffer = Vec::with_capacity(block);
                let from_ms = from.map(|t| (t - KAFKA_SLACK).div_euclid(1000));
                let (_, start) = source
                    .lines_from(topic, from_ms, |text| {
                        buffer.extend_from_slice(text.as_bytes());
                        buffer.push(b'\n');
                        if buffer.len() >= block {
                            emit(&mut buffer);
                            buffer.clear();
                        }
                    })
                    .map_err(std::io::Error::other)?;
                if !buffer.is_empty() {
                    emit(&mut buffer);
                }
                Ok(Some(start))
            }
        }
    }
}

/// What to audit.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    pub input: AuditInput,
    /// The judged window: records with `timestamp_server` in `[since, until)` (unix µs).
    /// History needed by the checks is read from before `since`.
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// "Now" for freshness, and the window's end when `until` is not given (unix µs).
    pub now: i64,
    /// Threads parsing and counting (1: everything on the caller's thread).
    pub threads: usize,
    /// Bytes of whole lines handed to a thread at a time.
    pub block_size: usize,
}

impl AuditOptions {
    /// The whole log, on every core.
    pub fn new(input: AuditInput, now: i64) -> Self {
        AuditOptions {
            input,
            since: None,
            until: None,
            now,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            block_size: 4 << 20,
        }
    }
}

/// pass < warn < fail, so that sorting puts the worst first when reversed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

/// One expectation's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub status: Status,
    /// e.g. `not_null`, `duplicate_rate`, `reference`.
    pub expectation: String,
    /// The event (or funnel, or reference) it concerns; empty for the whole log.
    pub subject: String,
    pub observed: f64,
    pub limit: f64,
    /// A sentence for the reader, naming the worst segment where one stands out.
    pub detail: String,
    /// For an anomalous volume series: its hours around the worst anomaly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chart: Option<Chart>,
}

/// One series around an anomaly: observed counts and the expected band.
#[derive(Debug, Clone, Serialize)]
pub struct Chart {
    pub title: String,
    /// Hours since the epoch of the worst anomaly.
    pub anomaly_hour: i64,
    pub points: Vec<ChartPoint>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChartPoint {
    /// Hours since the epoch.
    pub hour: i64,
    pub label: String,
    pub observed: u64,
    pub expected: f64,
    pub low: f64,
    pub high: f64,
}

/// The audit's findings.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The judged window (RFC 3339; none: open on that side).
    pub window: Span,
    /// Records read before the window for the checks that need history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<History>,
    /// Accepted and quarantined records in the window.
    pub records: u64,
    pub quarantined: u64,
    /// The window's hours: judged by the volume check, or skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_hours: Option<Hours>,
    pub checks: Vec<Check>,
    /// Rejections per event × error × segment, flagged rises first (at most 50 rows).
    pub quarantine: Vec<QuarantineRow>,
    /// How the audit ran (differs between runs of the same audit).
    pub run: Run,
}

#[derive(Debug, Clone, Serialize)]
pub struct Span {
    pub since: Option<String>,
    pub until: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct History {
    /// `[since, until)` of the history read (RFC 3339).
    pub since: String,
    pub until: String,
    pub records: u64,
    pub quarantined: u64,
    /// With Kafka: how the history's start was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub threads: usize,
    pub seconds: f64,
    /// Lines parsed (window, history and records outside both).
    pub records_read: u64,
    pub records_per_second: f64,
}

impl Report {
    /// True when no check failed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }

    /// What was judged and what was read for it, in one sentence.
    pub fn summary(&self) -> String {
        let open = |t: &Option<String>, word: &str| t.clone().unwrap_or_else(|| word.into());
        let mut out = format!(
            "judged {} to {}: {} records ({} quarantined)",
            open(&self.window.since, "the first record"),
            open(&self.window.until, "now"),
            self.records,
            self.quarantined
        );
        if let Some(h) = &self.history {
            out.push_str(&format!(
                "; history read {} to {}: {} records ({} quarantined)",
                h.since, h.until, h.records, h.quarantined
            ));
            if let Some(kafka) = &h.kafka {
                out.push_str(&format!(", {kafka}"));
            }
        }
        if let Some(v) = &self.volume_hours {
            out.push_str(&format!(
                "; volume: {} hours judged, {} without enough weeks of history, {} calendar",
                v.judged, v.without_history, v.calendar
            ));
        }
        out
    }

    /// A terminal summary, worst first.
    pub fn human(&self) -> String {
        let mut out = format!("{}\n", self.summary());
        for c in &self.checks {
            let word = match c.status {
                Status::Pass => "pass",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            out.push_str(&format!(
                "{word:<5} {:<16} {:<32} {}\n",
                c.expectation, c.subject, c.detail
            ));
        }
        let fails = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .count();
        out.push_str(&format!("{} checks, {} failed\n", self.checks.len(), fails));
        out
    }
}

/// Fail past the limit; warn within 20 % of a ceiling (or of a floor's headroom).
fn ceiling(observed: f64, limit: f64) -> Status {
    if observed > limit {
        Status::Fail
    } else if limit > 0.0 && observed > limit * 0.8 {
        Status::Warn
    } else {
        Status::Pass
    }
}

fn floor(observed: f64, limit: f64) -> Status {
    if observed < limit {
        Status::Fail
    } else if observed < limit + (1.0 - limit) * 0.2 {
        Status::Warn
    } else {
        Status::Pass
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// How far before `since` the checks need records: the volume's `min_weeks`, a
/// split-less drift's window span, the dedupe window, each reference's `within`, the
/// quarantine's history. `None` without a window (the whole log is judged).
fn history_start(options: &AuditOptions, expectations: &Expectations) -> Option<i64> {
    let since = options.since?;
    let micros = |d: Duration| d.as_micros() as i64;
    let mut span = micros(expectations.quarantine.history);
    if let Some(volume) = &expectations.volume {
        span = span.max(volume.min_weeks as i64 * 168 * 3_600_000_000);
    }
    if expectations.drift.iter().any(|d| d.split.is_none()) {
        span = span.max(options.until.unwrap_or(options.now) - since);
    }
    if expectations.defaults.max_duplicate_rate.is_some() {
        span = span.max(micros(expectations.defaults.dedupe_window));
    }
    for r in &expectations.references {
        span = span.max(micros(r.within));
    }
    Some(since - span)
}

/// Reads one stream through the worker pool into `totals`. Returns how many lines were
/// read and, with Kafka, where reading started.
fn read_stream(
    options: &AuditOptions,
    plan: &Plan,
    stream: Stream,
    totals: &mut Totals,
) -> std::io::Result<(u64, Option<Start>)> {
    let mut start = None;
    let mut lines = 0u64;
    let input = &options.input;
    pool::run(
        options.threads,
        |emit| {
            start = input.read(stream, plan.read_from, options.block_size, emit)?;
            Ok::<(), std::io::Error>(())
        },
        |block| {
            let mut partial = Partial::new(plan);
            let mut n = 0u64;
            tollgate_log::split_lines(block, &mut |line| {
                n += 1;
                match stream {
                    Stream::Events => partial.event(plan, line),
                    Stream::Quarantine => partial.quarantined(plan, line),
                }
            });
            (n, partial)
        },
        |(n, partial)| {
            if (lines + n) / 10_000_000 > lines / 10_000_000 {
                tracing::info!(lines = lines + n, ?stream, "audit: lines read so far");
            }
            lines += n;
            totals.absorb(partial);
        },
    )?;
    Ok((lines, start))
}

/// Runs every expectation over the judged window, reading the history its checks need.
///
/// # Errors
/// Unreadable segment files or topics.
pub fn audit(options: &AuditOptions, expectations: &Expectations) -> std::io::Result<Report> {
    let started = Instant::now();
    let read_from = history_start(options, expectations);
    let plan = Plan::new(expectations, options.since, options.until, read_from);
    let mut totals = Totals::new(&plan);
    let (events_read, kafka) = read_stream(options, &plan, Stream::Events, &mut totals)?;
    let (quarantine_read, _) = read_stream(options, &plan, Stream::Quarantine, &mut totals)?;
    totals.finish();
    let defaults = &expectations.defaults;
    let t = &mut totals.tallies;
    let (records, quarantined) = (t.records, t.quarantined);

    let mut checks = Vec::new();
    if let Some(limit) = defaults.max_duplicate_rate {
        let rate = ratio(totals.duplicates, records);
        checks.push(Check {
            status: ceiling(rate, limit),
            expectation: "duplicate_rate".into(),
            subject: String::new(),
            observed: rate,
            limit,
            detail: format!(
                "{} event_ids logged again within {} ({:.4}% of {records}; limit {:.4}%)",
                totals.duplicates,
                humantime::format_duration(defaults.dedupe_window),
                rate * 100.0,
                limit * 100.0
            ),
            chart: None,
        });
    }
    if let Some(limit) = defaults.freshness {
        let age = if t.newest == i64::MIN {
            f64::INFINITY
        } else {
            (options.now - t.newest) as f64 / 1e6
        };
        checks.push(Check {
            status: ceiling(age, limit.as_secs_f64()),
            expectation: "freshness".into(),
            subject: String::new(),
            observed: age,
            limit: limit.as_secs_f64(),
            detail: format!(
                "newest record {:.0}s old (limit {})",
                age,
                humantime::format_duration(limit)
            ),
            chart: None,
        });
    }
    if let Some(limit) = defaults.max_lateness_p99 {
        let p99 = t.lateness.value_at_quantile(0.99) as f64 / 1000.0;
        checks.push(Check {
            status: ceiling(p99, limit.as_secs_f64()),
            expectation: "lateness_p99".into(),
            subject: String::new(),
            observed: p99,
            limit: limit.as_secs_f64(),
            detail: format!(
                "p50 {:.1}s, p99 {:.1}s (limit {})",
                t.lateness.value_at_quantile(0.5) as f64 / 1000.0,
                p99,
                humantime::format_duration(limit)
            ),
            chart: None,
        });
    }
    if let Some(limit) = defaults.min_valid_share {
        let share = if records + quarantined == 0 {
            1.0
        } else {
            records as f64 / (records + quarantined) as f64
        };
        checks.push(Check {
            status: floor(share, limit),
            expectation: "valid_share".into(),
            subject: String::new(),
            observed: share,
            limit,
            detail: format!(
                "{records} accepted, {quarantined} quarantined: {:.3}% valid (limit {:.3}%)",
                share * 100.0,
                limit * 100.0
            ),
            chart: None,
        });
    }
    for (i, e) in expectations.events.iter().enumerate() {
        for (field, tally) in e.not_null.iter().zip(&t.nulls[i]) {
            let rate = ratio(tally.nulls, tally.total);
            let mut detail = format!(
                "{field}: {} of {} null or empty ({:.2}%; limit {:.2}%)",
                tally.nulls,
                tally.total,
                rate * 100.0,
                e.max_null_rate * 100.0
            );
            if let Some((segment, worst)) = tally.worst()
                && tally.nulls > 0
            {
                detail.push_str(&format!(
                    "; worst segment platform={} app_version={}: {:.2}% of {}",
                    segment.platform,
                    segment.version,
                    worst * 100.0,
                    segment.total
                ));
            }
            checks.push(Check {
                status: ceiling(rate, e.max_null_rate),
                expectation: "not_null".into(),
                subject: format!("{}.{field}", e.name),
                observed: rate,
                limit: e.max_null_rate,
                detail,
                chart: None,
            });
        }
        // Values and ranges: zero tolerance, one example of a breach.
        let tallies = e.values.keys().zip(&t.values[i]).map(|(field, b)| {
            let example = b.example.as_ref().map(|v| format!("{v:?}"));
            (
                "allowed_values",
                field,
                b.checked,
                b.bad,
                example,
                "outside the allowed set",
                "within the allowed set",
            )
        });
        let ranges = e.ranges.keys().zip(&t.ranges[i]).map(|(field, b)| {
            let example = b.example.map(|v| v.to_string());
            (
                "range",
                field,
                b.checked,
                b.bad,
                example,
                "out of range",
                "in range",
            )
        });
        for (expectation, field, n, bad, example, breach, fine) in tallies.chain(ranges) {
            checks.push(Check {
                status: if bad > 0 { Status::Fail } else { Status::Pass },
                expectation: expectation.into(),
                subject: format!("{}.{field}", e.name),
                observed: bad as f64,
                limit: 0.0,
                detail: match example {
                    Some(v) => format!("{bad} of {n} {breach}, e.g. {v}"),
                    None => format!("all {n} {fine}"),
                },
                chart: None,
            });
        }
    }
    for (r, state) in expectations.references.iter().zip(&totals.refs) {
        let rate = ratio(state.missing, state.from_total);
        checks.push(Check {
            status: ceiling(rate, r.max_missing_rate),
            expectation: "reference".into(),
            subject: format!("{} -> {}", r.from, r.to),
            observed: rate,
            limit: r.max_missing_rate,
            detail: format!(
                "{} of {} {} without a {} sharing {} within {} ({:.2}%)",
                state.missing,
                state.from_total,
                r.from,
                r.to,
                r.keys.join(", "),
                humantime::format_duration(r.within),
                rate * 100.0
            ),
            chart: None,
        });
    }
    for f in &expectations.funnels {
        let counts: Vec<u64> = f
            .steps
            .iter()
            .map(|s| {
                plan.steps
                    .iter()
                    .position(|p| p == s)
                    .map_or(0, |i| t.steps[i])
            })
            .collect();
        let increase = f
            .steps
            .iter()
            .zip(&counts)
            .collect::<Vec<_>>()
            .windows(2)
            .find(|w| w[1].1 > w[0].1)
            .map(|w| format!("{} ({}) > {} ({})", w[1].0, w[1].1, w[0].0, w[0].1));
        checks.push(Check {
            status: if increase.is_some() {
                Status::Fail
            } else {
                Status::Pass
            },
            expectation: "funnel".into(),
            subject: f.name.clone(),
            observed: counts.last().copied().unwrap_or(0) as f64,
            limit: counts.first().copied().unwrap_or(0) as f64,
            detail: match increase {
                Some(step) => format!("a later step has more events: {step}"),
                None => f
                    .steps
                    .iter()
                    .zip(&counts)
                    .map(|(s, n)| format!("{s} {n}"))
                    .collect::<Vec<_>>()
                    .join(" ≥ "),
            },
            chart: None,
        });
    }
    let mut volume_hours = None;
    if let Some(volume) = &expectations.volume {
        let window = options
            .since
            .map(|s| (s, options.until.unwrap_or(options.now)));
        let (volume_checks, hours) = t.series.checks(volume, window);
        checks.extend(volume_checks);
        volume_hours = Some(hours);
    }
    for (d, sides) in expectations.drift.iter().zip(&t.drift) {
        let [baseline, current] = sides.each_ref().map(|side| {
            side.values()
                .map(|(c, n)| (c.clone(), *n))
                .collect::<HashMap<String, u64>>()
        });
        let (baseline, current) = (&baseline, &current);
        let tollgate_report::Drift {
            psi,
            largest: worst,
            new,
        } = tollgate_report::population_stability(baseline, current);
        let mut detail = format!("PSI {psi:.3} (limit {})", d.max_psi);
        if let Some(worst) = worst {
            detail.push_str(&format!("; largest shift: {worst:?}"));
        }
        if !new.is_empty() {
            detail.push_str(&format!("; new values: {}", new.join(", ")));
        }
        if baseline.is_empty() || current.is_empty() {
            detail = match (&d.split, options.since) {
                (None, None) => "no split and no --since: no baseline to compare with".into(),
                (Some(_), _) => "no records on one side of the split: nothing to compare".into(),
                (None, Some(_)) => {
                    "no records in the window or in the span before it: nothing to compare".into()
                }
            };
        }
        checks.push(Check {
            status: if baseline.is_empty() || current.is_empty() {
                Status::Warn
            } else {
                ceiling(psi, d.max_psi)
            },
            expectation: "drift".into(),
            subject: format!("{}.{}", d.event, d.field),
            observed: psi,
            limit: d.max_psi,
            detail,
            chart: None,
        });
    }
    checks.sort_by_key(|c| std::cmp::Reverse(c.status));
    let (quarantine_checks, quarantine) = quarantine::judge(
        &t.quarantine,
        &expectations.quarantine,
        options.since.is_some(),
    );
    checks.extend(quarantine_checks);
    checks.sort_by_key(|c| std::cmp::Reverse(c.status));
    let seconds = started.elapsed().as_secs_f64();
    let records_read = events_read + quarantine_read;
    Ok(Report {
        window: Span {
            since: options.since.map(read::format_time),
            until: options.until.map(read::format_time),
        },
        history: read_from.zip(options.since).map(|(from, since)| History {
            since: read::format_time(from),
            until: read::format_time(since),
            records: t.history_records,
            quarantined: t.quarantined_history,
            kafka: kafka.map(|start| {
                match start {
                    Start::Timestamp => "found by timestamp",
                    Start::NoTimeIndex => {
                        "read from the beginning: the broker could not find offsets by time"
                    }
                    Start::Beginning => "read from the beginning",
                }
                .to_owned()
            }),
        }),
        records,
        quarantined,
        volume_hours,
        checks,
        quarantine,
        run: Run {
            threads: options.threads.max(1),
            seconds,
            records_read,
            records_per_second: records_read as f64 / seconds.max(1e-9),
        },
    })
}

/// A `--since`/`--until` value: a time, a UTC midnight relative to "now", or a span
/// before "now" — what a daily job can pass without a shell to compute dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeArg {
    /// An RFC 3339 time (unix µs).
    At(i64),
    /// 00:00 UTC of the day this many days before now's (`today` 0, `yesterday` 1).
    DaysAgo(i64),
    /// This long before now (`-36h`).
    Before(Duration),
}

impl TimeArg {
    /// `2026-11-29T00:00:00Z`, `today`, `yesterday`, or `-DURATION` (`-36h`, `-7d`).
    ///
    /// # Errors
    /// Anything else, named.
    pub fn parse(text: &str) -> Result<TimeArg, String> {
        match text {
            "today" => Ok(TimeArg::DaysAgo(0)),
            "yesterday" => Ok(TimeArg::DaysAgo(1)),
            _ => match text.strip_prefix('-') {
                Some(span) => humantime::parse_duration(span)
                    .map(TimeArg::Before)
                    .map_err(|e| format!("{text:?}: {e}")),
                None => read::micros(text).map(TimeArg::At).ok_or_else(|| {
                    format!(
                        "{text:?} is neither an RFC 3339 time, `today`, `yesterday` nor `-DURATION`"
                    )
                }),
            },
        }
    }

    /// The time it names, given "now" (unix µs).
    pub fn at(self, now: i64) -> i64 {
        const DAY: i64 = 86_400_000_000;
        match self {
            TimeArg::At(t) => t,
            TimeArg::DaysAgo(days) => (now.div_euclid(DAY) - days) * DAY,
            TimeArg::Before(span) => now - span.as_micros() as i64,
        }
    }
}

/// `--now` and other absolute times: RFC 3339 timestamps as unix µs.
pub fn parse_time(text: &str) -> Result<i64, String> {
    read::micros(text).ok_or_else(|| format!("{text:?} is not an RFC 3339 UTC timestamp"))
}

/// The audit of a collector's data directory over its whole history.
pub fn audit_dir(log: &Path, expectations: &Expectations, now: i64) -> std::io::Result<Report> {
    audit(
        &AuditOptions::new(AuditInput::Dir(log.to_owned()), now),
        expectations,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_are_midnights_and_spans_before_now() {
        let now = parse_time("2026-11-30T07:45:00Z").unwrap();
        let at = |text: &str| read::format_time(TimeArg::parse(text).unwrap().at(now));
        assert_eq!(at("yesterday"), "2026-11-29T00:00:00Z");
        assert_eq!(at("today"), "2026-11-30T00:00:00Z");
        assert_eq!(at("-36h"), "2026-11-28T19:45:00Z");
        assert_eq!(at("2026-11-01T00:00:00Z"), "2026-11-01T00:00:00Z");
        assert!(TimeArg::parse("last week").is_err());
        assert!(TimeArg::parse("-soon").is_err());
    }
}
