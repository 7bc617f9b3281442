//! The collector's own view during a run: its admin `/metrics` scraped once a second, a
//! few series kept per second beside the client's, so that a latency spike can be
//! matched to a queue filling up or a store slowing down.
//!
//! | series | from |
//! |---|---|
//! | `log_queue_depth` | `tollgate_log_queue_depth` (gauge) |
//! | `log_append_ms` | `tollgate_log_append_duration_seconds`: mean of the second |
//! | `idempotency_ms` | `tollgate_idempotency_duration_seconds`: mean of the second |
//! | `quarantined_per_s` | `tollgate_events_total{outcome="rejected"}`: increase |
//! | `rate_limited_per_s` | `tollgate_rate_limited_total`: increase |
//! | `kafka_in_flight` | `tollgate_kafka_in_flight` (gauge) |
//! | `kafka_rtt_ms` | `tollgate_kafka_broker_rtt_seconds` (gauge, mean over brokers) |
//!
//! A series the collector does not export (no Kafka sink, say) is left out.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::sync::oneshot;

use crate::run::RunError;

/// How one series is read from two consecutive scrapes.
enum Reading {
    /// The value now (summed over label sets; `scale` applied).
    Gauge {
        metric: &'static str,
        scale: f64,
        mean: bool,
    },
    /// The increase over the second, of the label sets carrying `label` when given.
    Increase {
        metric: &'static str,
        label: Option<&'static str>,
    },
    /// The mean of a histogram's observations made during the second, in ms.
    MeanMs { metric: &'static str },
}

const SERIES: &[(&str, Reading)] = &[
    (
        "log_queue_depth",
        Reading::Gauge {
            metric: "tollgate_log_queue_depth",
            scale: 1.0,
            mean: false,
        },
    ),
    (
        "log_append_ms",
        Reading::MeanMs {
            metric: "tollgate_log_append_duration_seconds",
        },
    ),
    (
        "idempotency_ms",
        Reading::MeanMs {
            metric: "tollgate_idempotency_duration_seconds",
        },
    ),
    (
        "quarantined_per_s",
        Reading::Increase {
            metric: "tollgate_events_total",
            label: Some("outcome=\"rejected\""),
        },
    ),
    (
        "rate_limited_per_s",
        Reading::Increase {
            metric: "tollgate_rate_limited_total",
            label: None,
        },
    ),
    (
        "kafka_in_flight",
        Reading::Gauge {
            metric: "tollgate_kafka_in_flight",
            scale: 1.0,
            mean: false,
        },
    ),
    (
        "kafka_rtt_ms",
        Reading::Gauge {
            metric: "tollgate_kafka_broker_rtt_seconds",
            scale: 1000.0,
            mean: true,
        },
    ),
];

/// One scrape: metric name → (labels, value) of each sample.
#[derive(Debug, Default)]
pub struct Scrape(HashMap<String, Vec<(String, f64)>>);

impl Scrape {
    /// Parses the Prometheus text format (comments and malformed lines are skipped).
    pub fn parse(text: &str) -> Scrape {
        let mut samples: HashMap<String, Vec<(String, f64)>> = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (series, value) = match line.rfind('}') {
                Some(end) => (&line[..=end], line[end + 1..].trim()),
                None => match line.split_once(char::is_whitespace) {
                    Some((name, value)) => (name, value.trim()),
                    None => continue,
                },
            };
            // A timestamp may follow the value.
            let value = value.split_whitespace().next().unwrap_or_default();
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            samples
                .entry(name.to_owned())
                .or_default()
                .push((labels.to_owned(), value));
        }
        Scrape(samples)
    }

    /// The sum of `metric`'s samples (of those whose labels contain `label`), or none
    /// when it is not exported.
    fn sum(&self, metric: &str, label: Option<&str>) -> Option<f64> {
        let samples = self.0.get(metric)?;
        Some(
            samples
                .iter()
                .filter(|(labels, _)| label.is_none_or(|l| labels.contains(l)))
                .map(|(_, v)| v)
                .sum(),
        )
    }

    fn mean(&self, metric: &str) -> Option<f64> {
        let samples = self.0.get(metric)?;
        (!samples.is_empty())
            .then(|| samples.iter().map(|(_, v)| v).sum::<f64>() / samples.len() as f64)
    }

    /// The kept series over the second from `before` to `self`.
    pub fn series_since(&self, before: &Scrape) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (name, reading) in SERIES {
            let value = match reading {
                Reading::Gauge {
                    metric,
                    scale,
                    mean,
                } => if *mean {
                    self.mean(metric)
                } else {
                    self.sum(metric, None)
                }
                .map(|v| v * scale),
                Reading::Increase { metric, label } => self
                    .sum(metric, *label)
                    .map(|now| (now - before.sum(metric, *label).unwrap_or(0.0)).max(0.0)),
                Reading::MeanMs { metric } => {
                    let count = format!("{metric}_count");
                    let sum = format!("{metric}_sum");
                    self.sum(&count, None).map(|n| {
                        let n = n - before.sum(&count, None).unwrap_or(0.0);
                        let s = self.sum(&sum, None).unwrap_or(0.0)
                            - before.sum(&sum, None).unwrap_or(0.0);
                        if n > 0.0 { s / n * 1000.0 } else { 0.0 }
                    })
                }
            };
            if let Some(value) = value {
                out.insert((*name).to_owned(), value);
            }
        }
        out
    }
}

/// A scraper running beside the load.
pub struct Scraper {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Vec<BTreeMap<String, f64>>>,
}

impl Scraper {
    /// Stops scraping; the series of each second of the run so far.
    pub async fn stop(self) -> Vec<BTreeMap<String, f64>> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

/// Starts scraping `url` once a second from `started`.
///
/// # Errors
/// `url` is not a URL.
pub fn start(
    url: &str,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    started: Instant,
) -> Result<Scraper, RunError> {
    let uri: http::Uri = url.parse().map_err(|source| RunError::Target {
        target: url.to_owned(),
        source,
    })?;
    let (stop, mut stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        let fetch = || async {
            let request = http::Request::get(uri.clone())
                .body(Full::new(Bytes::new()))
                .expect("a valid request");
            let response = client.request(request).await.ok()?;
            let body = response.into_body().collect().await.ok()?.to_bytes();
            Some(Scrape::parse(&String::from_utf8_lossy(&body)))
        };
        let mut seconds: Vec<BTreeMap<String, f64>> = Vec::new();
        let mut before = fetch().await.unwrap_or_default();
        let mut failures = 0u64;
        for second in 1u32.. {
            tokio::select! {
                _ = &mut stopped => break,
                () = tokio::time::sleep_until((started + Duration::from_secs(u64::from(second))).into()) => {}
            }
            let index = second as usize - 1;
            seconds.resize(index + 1, BTreeMap::new());
            match fetch().await {
                Some(now) => {
                    seconds[index] = now.series_since(&before);
                    before = now;
                }
                None => failures += 1,
            }
        }
        if failures > 0 {
            eprintln!("scrape: {failures} of the collector's /metrics scrapes failed");
        }
        seconds
    });
    Ok(Scraper { stop, task })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_gauges_increases_and_means_over_the_second() {
        let before = Scrape::parse(
            "# HELP x\n\
             tollgate_events_total{outcome=\"accepted\",api=\"native\"} 100\n\
             tollgate_events_total{outcome=\"rejected\",api=\"native\"} 4\n\
             tollgate_log_append_duration_seconds_sum 1.0\n\
             tollgate_log_append_duration_seconds_count 100\n\
             tollgate_log_queue_depth 3\n",
        );
        let now = Scrape::parse(
            "tollgate_events_total{outcome=\"accepted\",api=\"native\"} 200\n\
             tollgate_events_total{outcome=\"rejected\",api=\"native\"} 10\n\
             tollgate_events_total{outcome=\"rejected\",api=\"segment\"} 1 1700000000\n\
             tollgate_log_append_duration_seconds_sum 1.5\n\
             tollgate_log_append_duration_seconds_count 200\n\
             tollgate_log_queue_depth 7\n\
             garbage line\n",
        );
        let series = now.series_since(&before);
        assert_eq!(series["quarantined_per_s"], 7.0);
        assert_eq!(series["log_queue_depth"], 7.0);
        assert!((series["log_append_ms"] - 5.0).abs() < 1e-9, "{series:?}");
        assert!(!series.contains_key("kafka_in_flight"), "not exported");
    }
}
