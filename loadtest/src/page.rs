//! The launch report: one self-contained HTML page a person reads before a launch.
//!
//! At the top, a verdict box — the reconciliation (lost, duplicated, invalid not
//! quarantined), the per-event outcomes and the launch gates — green when all hold, red
//! when any fails. Below, second by second: achieved against target rate (ramp stages
//! marked), errors and statuses, latency percentiles, the collector's own series when it
//! was scraped; and the whole run's HDR latency distribution. Inline SVG only: no
//! scripts, no external assets, readable offline and attachable to a ticket. The markup
//! is well-formed XML.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use tollgate_report::chart::{Chart, Line, XAxis};
use tollgate_report::escape;

use crate::report::Report;
use crate::verify::Verification;

/// Colours of the lines, in order.
const PALETTE: [&str; 6] = [
    "#1a237e", "#c62828", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f",
];

/// Reconciliations by log (`verify --json`).
pub type Verifications = BTreeMap<String, Verification>;

/// Reads `{"second": N, "metrics": {...}}` lines into the run's seconds.
///
/// # Errors
/// A line that is not such an object, named by its number.
pub fn merge_metrics(report: &mut Report, ndjson: &str) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    struct Sample {
        second: usize,
        metrics: BTreeMap<String, f64>,
    }
    for (i, line) in ndjson.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let sample: Sample =
            serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        if report.series.len() <= sample.second {
            report.series.resize(sample.second + 1, Default::default());
        }
        report.series[sample.second].metrics = sample.metrics;
    }
    Ok(())
}

/// The verdict: whether every reconciliation was clean and every gate held; `None`
/// without a reconciliation and without gates.
pub fn verdict(report: &Report, verifications: Option<&Verifications>) -> Option<bool> {
    let reconciled = verifications.map(|v| v.values().all(Verification::clean));
    let gated = (!report.gates.is_empty()).then(|| report.gates.iter().all(|g| g.passed));
    match (reconciled, gated) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(true) && b.unwrap_or(true)),
    }
}

/// The page.
pub fn render(report: &Report, verifications: Option<&Verifications>) -> String {
    let mut out = tollgate_report::chart::page_head(
        "Tollgate launch report",
        ".verdict{padding:.8em 1.2em;border-radius:6px;margin:1em 0}\
         .pass{background:#e8f5e9;border:2px solid #2e7d32}.fail{background:#fdecea;border:2px solid #b00020}\
         .unknown{background:#f5f5f5;border:2px solid #9e9e9e}\
         .bad{color:#b00020;font-weight:bold}.good{color:#2e7d32}",
    );
    let _ = write!(
        out,
        "<h1>Launch report: run {}</h1><p>{} against {}, {:.1} s, seed {}.</p>",
        escape(&report.run_id),
        escape(&report.model),
        escape(&report.target),
        report.seconds,
        report.seed
    );
    verdict_box(&mut out, report, verifications);
    let seconds = report.series.len();
    let at = |i: usize| i as f64;
    let marks: Vec<(f64, String)> = report
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.end_s, format!("stage {} → {}/s", i + 1, s.rate)))
        .collect();
    let series =
        |name: &str, color: &'static str, dashed: bool, y: &dyn Fn(usize) -> Option<f64>| Line {
            name: name.to_owned(),
            color,
            dashed,
            points: (0..seconds).map(|i| (at(i), y(i))).collect(),
        };

    // Load.
    let mut lines = vec![series("achieved requests/s", PALETTE[0], false, &|i| {
        Some(report.series[i].requests as f64)
    })];
    if report.series.iter().any(|s| s.target_rate.is_some()) {
        lines.push(series("target requests/s", PALETTE[2], true, &|i| {
            report.series[i].target_rate
        }));
    }
    section(
        &mut out,
        "load",
        "Load",
        Chart {
            id: "load-chart".into(),
            title: "Requests per second: achieved against target".into(),
            x_label: "seconds into the run".into(),
            y_label: "requests/s".into(),
            x_axis: XAxis::Linear,
            lines,
            marks: marks.clone(),
        },
    );

    // Errors and statuses.
    let statuses: Vec<u16> = {
        let mut all: Vec<u16> = report
            .series
            .iter()
            .flat_map(|s| s.statuses.keys().copied())
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    };
    let mut lines = vec![series("errors/s (no 2xx)", PALETTE[1], false, &|i| {
        Some(report.series[i].errors as f64)
    })];
    for (k, status) in statuses.iter().enumerate() {
        let name = if *status == 0 {
            "no answer/s".to_owned()
        } else {
            format!("{status}/s")
        };
        lines.push(series(
            &name,
            PALETTE[(k + 2) % PALETTE.len()],
            true,
            &|i| Some(report.series[i].statuses.get(status).copied().unwrap_or(0) as f64),
        ));
    }
    section(
        &mut out,
        "errors",
        "Errors and statuses",
        Chart {
            id: "errors-chart".into(),
            title: "Answers per second by HTTP status".into(),
            x_label: "seconds into the run".into(),
            y_label: "requests/s".into(),
            x_axis: XAxis::Linear,
            lines,
            marks: marks.clone(),
        },
    );

    // Latency per second.
    let ms = |us: u64| us as f64 / 1000.0;
    let percentile = |name: &str, k: usize, pick: fn(&tollgate_report::Latency) -> u64| {
        series(name, PALETTE[k], false, &|i| {
            report.series[i].latency.as_ref().map(|l| ms(pick(l)))
        })
    };
    section(
        &mut out,
        "latency",
        "Latency",
        Chart {
            id: "latency-chart".into(),
            title: "Latency of the requests answered each second".into(),
            x_label: "seconds into the run".into(),
            y_label: "ms".into(),
            x_axis: XAxis::Linear,
            lines: vec![
                percentile("p50", 0, |l| l.p50_us),
                percentile("p90", 2, |l| l.p90_us),
                percentile("p99", 3, |l| l.p99_us),
                percentile("max", 1, |l| l.max_us),
            ],
            marks: marks.clone(),
        },
    );

    // The whole run's distribution.
    section(
        &mut out,
        "distribution",
        "Latency distribution",
        Chart {
            id: "distribution-chart".into(),
            title: format!(
                "Latency by percentile over the whole run (p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms)",
                ms(report.latency.p50_us),
                ms(report.latency.p99_us),
                ms(report.latency.p999_us),
                ms(report.latency.max_us)
            ),
            x_label: "percentile".into(),
            y_label: "ms".into(),
            x_axis: XAxis::Percentile,
            lines: vec![Line {
                name: "latency".into(),
                color: PALETTE[0],
                dashed: false,
                // The maximum (100 %) has no place on a log axis: it is in the title.
                points: report
                    .distribution
                    .iter()
                    .filter(|p| p.percentile < 100.0)
                    .map(|p| (p.percentile, Some(ms(p.latency_us))))
                    .collect(),
            }],
            marks: Vec::new(),
        },
    );

    // The collector's own view.
    let names: Vec<&String> = {
        let mut all: Vec<&String> = report
            .series
            .iter()
            .flat_map(|s| s.metrics.keys())
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    };
    if !names.is_empty() {
        out.push_str(
            "<section id=\"collector\"><h2>The collector's view</h2>\
             <p>Scraped from its admin <code>/metrics</code> once a second during the run.</p>",
        );
        for (k, name) in names.iter().enumerate() {
            let chart = Chart {
                id: format!("collector-{name}"),
                title: (*name).clone(),
                x_label: "seconds into the run".into(),
                y_label: (*name).clone(),
                x_axis: XAxis::Linear,
                lines: vec![series(name, PALETTE[k % PALETTE.len()], false, &|i| {
                    report.series[i].metrics.get(*name).copied()
                })],
                marks: marks.clone(),
            };
            out.push_str(&chart.svg());
        }
        out.push_str("</section>");
    }
    out.push_str("</body></html>\n");
    out
}

fn section(out: &mut String, id: &str, title: &str, chart: Chart) {
    let _ = write!(
        out,
        "<section id=\"{id}\"><h2>{title}</h2>{}</section>",
        chart.svg()
    );
}

/// The box at the top: verdict, reconciliation, outcomes, gates.
fn verdict_box(out: &mut String, report: &Report, verifications: Option<&Verifications>) {
    let (class, word) = match verdict(report, verifications) {
        Some(true) => ("pass", "PASS"),
        Some(false) => ("fail", "FAIL"),
        None => ("unknown", "NOT JUDGED (no reconciliation, no gates)"),
    };
    let _ = write!(
        out,
        "<div id=\"verdict\" class=\"verdict {class}\"><h2>{word}</h2><table>"
    );
    match verifications {
        None => out.push_str(
            "<tr><th>reconciliation</th><td>not run (give <code>--verify</code> the JSON of \
             <code>tollgate-loadtest verify --json</code>)</td></tr>",
        ),
        Some(all) => {
            for (log, v) in all {
                let count = |n: u64| {
                    format!(
                        "<span class=\"{}\">{n}</span>",
                        if n == 0 { "good" } else { "bad" }
                    )
                };
                let _ = write!(
                    out,
                    "<tr><th>reconciliation: {}</th><td>{}: acknowledged {}, logged {}, quarantined {}; \
                     lost {}, duplicated {}, invalid not quarantined {}, unknown keys not refused {}</td></tr>",
                    escape(log),
                    if v.clean() {
                        "<span class=\"good\">clean</span>"
                    } else {
                        "<span class=\"bad\">FAILED</span>"
                    },
                    v.acknowledged,
                    v.logged,
                    v.quarantined,
                    count(v.lost),
                    count(v.duplicated),
                    count(v.invalid_not_quarantined),
                    count(v.unknown_key_not_refused),
                );
            }
        }
    }
    let outcomes: Vec<String> = report
        .outcomes
        .events
        .iter()
        .map(|(k, n)| format!("{} {n}", escape(k)))
        .collect();
    let _ = write!(
        out,
        "<tr><th>per-event outcomes</th><td>{}</td></tr>\
         <tr><th>throughput</th><td>{:.0} requests/s, {:.0} events/s; errors {:.3}%</td></tr>",
        outcomes.join(", "),
        report.requests_per_second,
        report.events_per_second,
        report.error_rate * 100.0
    );
    if report.gates.is_empty() {
        out.push_str("<tr><th>launch gates</th><td>none set</td></tr>");
    }
    for gate in &report.gates {
        let (observed, limit) = gate.figures();
        let _ = write!(
            out,
            "<tr><th>gate {}</th><td><span class=\"{}\">{}</span>: {observed} (limit {limit})</td></tr>",
            escape(&gate.name),
            if gate.passed { "good" } else { "bad" },
            if gate.passed { "passed" } else { "FAILED" },
        );
    }
    out.push_str("</table></div>");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> Report {
        Report::new(
            &crate::report::RunInfo {
                run_id: "r".into(),
                target: "http://127.0.0.1:1".into(),
                model: "closed:1".into(),
            },
            std::time::Duration::from_secs(2),
            &hdrhistogram::Histogram::new(3).unwrap(),
            Default::default(),
        )
    }

    #[test]
    fn metrics_from_a_file_land_in_their_seconds_and_are_drawn() {
        let mut report = run();
        report.series = vec![Default::default(); 2];
        merge_metrics(
            &mut report,
            "{\"second\": 1, \"metrics\": {\"log_queue_depth\": 4}}\n\n{\"second\": 3, \"metrics\": {\"log_queue_depth\": 9}}\n",
        )
        .unwrap();
        assert_eq!(report.series.len(), 4);
        assert_eq!(report.series[1].metrics["log_queue_depth"], 4.0);
        assert!(report.series[2].metrics.is_empty());
        assert!(render(&report, None).contains("id=\"collector-log_queue_depth\""));
        let error = merge_metrics(&mut report, "{\"second\": \"x\"}").unwrap_err();
        assert!(error.starts_with("line 1:"), "{error}");
    }

    #[test]
    fn without_reconciliation_or_gates_the_run_is_not_judged() {
        let mut report = run();
        assert_eq!(verdict(&report, None), None);
        assert!(render(&report, None).contains("verdict unknown"));
        report.judge(&crate::report::Gates {
            min_throughput: Some(1.0),
            ..Default::default()
        });
        assert_eq!(verdict(&report, None), Some(false), "no events were sent");
    }
}
