//! The live comparison as Prometheus text (`GET /metrics`) and as one self-contained HTML
//! page (`GET /shadow/report.html`): bridge ratios with their intervals as a chart,
//! because a migration review is read as a picture.

use std::fmt::Write as _;

use crate::compare::{EventReport, Report};

use tollgate_report::escape;

/// A Prometheus label value.
fn label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Report {
    /// Prometheus text exposition of the comparison.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: Vec<(String, f64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in lines {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        metric(
            "tollgate_shadow_mirrored_total",
            "counter",
            "Requests mirrored and compared",
            vec![(String::new(), self.mirrored as f64)],
        );
        metric(
            "tollgate_shadow_dropped_total",
            "counter",
            "Copies not compared, by reason",
            self.dropped
                .iter()
                .map(|(r, n)| (format!("{{reason=\"{}\"}}", label(r)), *n as f64))
                .collect(),
        );
        metric(
            "tollgate_shadow_status_mismatches_total",
            "counter",
            "Mirrored requests whose HTTP status differed between the sides",
            vec![(String::new(), self.status_mismatches as f64)],
        );
        metric(
            "tollgate_shadow_primary_errors_total",
            "counter",
            "Requests the primary did not answer (clients got 502)",
            vec![(String::new(), self.primary_errors as f64)],
        );
        let mut outcomes = Vec::new();
        for (name, event) in &self.events {
            for (side, counts) in [
                ("primary", &event.outcomes.primary),
                ("shadow", &event.outcomes.shadow),
                ("replica", &event.outcomes.replica),
            ] {
                for (outcome, n) in counts {
                    outcomes.push((
                        format!(
                            "{{event_name=\"{}\",side=\"{side}\",outcome=\"{}\"}}",
                            label(name),
                            label(outcome)
                        ),
                        *n as f64,
                    ));
                }
            }
        }
        metric(
            "tollgate_shadow_events_total",
            "counter",
            "Events of mirrored requests by event name, side and outcome",
            outcomes,
        );
        let ratio_lines = |pick: fn(&EventReport) -> Option<f64>| -> Vec<(String, f64)> {
            self.events
                .iter()
                .map(|(name, e)| (format!("{{event_name=\"{}\"}}", label(name)), e))
                .chain(
                    self.segments
                        .iter()
                        .map(|(seg, e)| (format!("{{segment=\"{}\"}}", label(seg)), e)),
                )
                .chain(
                    self.bridges
                        .iter()
                        .map(|(b, e)| (format!("{{bridge=\"{}\"}}", label(b)), e)),
                )
                .filter_map(|(labels, e)| pick(e).map(|v| (labels, v)))
                .collect()
        };
        metric(
            "tollgate_shadow_bridge_ratio",
            "gauge",
            "Shadow accepted / primary accepted, per event name, segment and bridge (renames, splits, merges: new names / old names)",
            ratio_lines(|e| e.ratio),
        );
        metric(
            "tollgate_shadow_bridge_ratio_low",
            "gauge",
            "Lower bound of the bridge ratio's 95 % interval",
            ratio_lines(|e| e.interval.map(|i| i.0)),
        );
        metric(
            "tollgate_shadow_bridge_ratio_high",
            "gauge",
            "Upper bound of the bridge ratio's 95 % interval",
            ratio_lines(|e| e.interval.map(|i| i.1)),
        );
        metric(
            "tollgate_shadow_expected_ratio",
            "gauge",
            "The ratio a row should have: 1, or a bridge's expected ratio",
            ratio_lines(|e| Some(e.expected)),
        );
        metric(
            "tollgate_shadow_noise_ratio",
            "gauge",
            "Replica accepted / primary accepted (old vs old, the A/A noise floor)",
            ratio_lines(|e| e.noise.as_ref().and_then(|n| n.ratio)),
        );
        metric(
            "tollgate_shadow_discontinuity",
            "gauge",
            "1 when the interval excludes expected × (1 ± tolerance) and the A/A noise",
            ratio_lines(|e| Some(f64::from(u8::from(e.discontinuity)))),
        );
        let mut latency = Vec::new();
        for (side, l) in &self.latency {
            for (q, us) in [("0.5", l.p50_us), ("0.99", l.p99_us), ("1", l.max_us)] {
                latency.push((
                    format!("{{side=\"{}\",quantile=\"{q}\"}}", label(side)),
                    us as f64 / 1e6,
                ));
            }
        }
        metric(
            "tollgate_shadow_latency_seconds",
            "gauge",
            "Round-trip latency of each side as the proxy saw it",
            latency,
        );
        out
    }

    /// A standalone HTML page: summary, and a chart of every bridge ratio with its
    /// interval against the band 1 ± tolerance; flagged rows in red.
    pub fn html(&self) -> String {
        let mut out = String::from(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Tollgate shadow report</title><style>\
             body{font:14px system-ui,sans-serif;margin:2em;color:#222}.bad{color:#b00020;font-weight:bold}\
             </style></head><body><h1>Shadow logging: new ÷ old</h1>",
        );
        let _ = write!(
            out,
            "<p>{} requests mirrored; dropped: {}; status mismatches: {}; primary errors: {}; tolerance ±{:.0} %.</p>",
            self.mirrored,
            if self.dropped.is_empty() {
                "none".to_owned()
            } else {
                self.dropped
                    .iter()
                    .map(|(r, n)| format!("{} {n}", escape(r)))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            self.status_mismatches,
            self.primary_errors,
            self.tolerance * 100.0
        );
        if self.discontinuities.is_empty() {
            out.push_str("<p>No discontinuity.</p>");
        } else {
            let _ = write!(
                out,
                "<p class=\"bad\">Discontinuities: {}</p>",
                escape(&self.discontinuities.join(", "))
            );
        }
        out.push_str(&forest("Event names", &self.events, self.tolerance));
        out.push_str(&forest(
            "Segments (all events no bridge covers)",
            &self.segments,
            self.tolerance,
        ));
        out.push_str(&forest(
            "Bridges (renames, splits, merges), as ratio ÷ expected",
            &self.bridges,
            self.tolerance,
        ));
        out.push_str(&forest(
            "Event names by segment",
            &self.event_segments,
            self.tolerance,
        ));
        out.push_str("</body></html>\n");
        out
    }
}

/// One row per name: the interval as a line, the ratio as a dot, over the 1 ± tolerance
/// band; each row divided by its expected ratio, so one band fits all. The A/A noise
/// interval, when there is one, is a wide grey line behind; a row whose difference is
/// within that noise is drawn in amber.
fn forest(
    title: &str,
    rows: &std::collections::BTreeMap<String, EventReport>,
    tolerance: f64,
) -> String {
    const W: f64 = 820.0;
    const ROW: f64 = 22.0;
    const LEFT: f64 = 260.0;
    let rows: Vec<_> = rows
        .iter()
        .filter(|(_, e)| e.ratio.is_some() && !e.mapped)
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let max = rows
        .iter()
        .filter_map(|(_, e)| e.interval.map(|i| i.1).or(e.ratio).map(|v| v / e.expected))
        .fold(1.0 + 2.0 * tolerance, f64::max)
        .min(5.0);
    let x = |v: f64| LEFT + (W - LEFT - 20.0) * (v.clamp(0.0, max) / max);
    let h = ROW * (rows.len() as f64 + 1.5);
    let mut out = format!(
        "<h2>{}</h2><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{h:.0}\" role=\"img\">\
         <rect x=\"{:.1}\" y=\"0\" width=\"{:.1}\" height=\"{h:.0}\" fill=\"#e8f5e9\"/>\
         <line x1=\"{3:.1}\" x2=\"{3:.1}\" y1=\"0\" y2=\"{h:.0}\" stroke=\"#2e7d32\" stroke-dasharray=\"4 3\"/>",
        escape(title),
        x(1.0 - tolerance),
        x(1.0 + tolerance) - x(1.0 - tolerance),
        x(1.0),
    );
    for (i, (name, e)) in rows.iter().enumerate() {
        let y = ROW * (i as f64 + 1.0);
        let color = if e.discontinuity {
            "#b00020"
        } else if e.within_noise {
            "#e65100"
        } else {
            "#1a237e"
        };
        let ratio = e.ratio.unwrap_or(0.0);
        let scaled = ratio / e.expected;
        if let Some((low, high)) = e.noise.as_ref().and_then(|n| n.interval) {
            let _ = write!(
                out,
                "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#bdbdbd\" stroke-width=\"8\"/>",
                x(low),
                x(high)
            );
        }
        if let Some((low, high)) = e.interval.map(|(l, h)| (l / e.expected, h / e.expected)) {
            let _ = write!(
                out,
                "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{color}\" stroke-width=\"2\"/>",
                x(low),
                x(high)
            );
        }
        let _ = write!(
            out,
            "<circle cx=\"{:.1}\" cy=\"{y:.1}\" r=\"4\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"end\" fill=\"{color}\">{} {ratio:.3}</text>",
            x(scaled),
            LEFT - 8.0,
            y + 4.0,
            escape(name)
        );
    }
    let _ = write!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">1.0</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{max:.2}</text></svg>",
        x(1.0),
        h - 4.0,
        W - 20.0,
        h - 4.0
    );
    out
}
