//! The audit as one self-contained HTML page: a summary (window judged, history read,
//! checks passed and failed), the checks worst first, a chart per anomalous volume series
//! (observed counts against the expected band), and the quarantine's rejections against
//! their history. No scripts, no external assets: it can be mailed or archived as is.

use std::fmt::Write as _;

use super::{Chart, Report, Status};

use tollgate_report::escape;

impl Report {
    /// The report as a standalone HTML page.
    pub fn html(&self) -> String {
        let fails = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .count();
        let warns = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Warn)
            .count();
        let mut out = String::from(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Tollgate audit</title><style>\
             body{font:14px system-ui,sans-serif;margin:2em;color:#222}\
             table{border-collapse:collapse}td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}\
             .fail{color:#b00020;font-weight:bold}.warn{color:#a66b00;font-weight:bold}.pass{color:#2e7d32}\
             figure{margin:1.5em 0}figcaption{font-weight:bold;margin-bottom:.3em}\
             .summary{padding:.8em 1.2em;border-radius:6px;margin:1em 0}\
             .summary.ok{background:#e8f5e9;border:1px solid #2e7d32}.summary.bad{background:#fdecea;border:1px solid #b00020}\
             .summary dt{font-weight:bold;float:left;width:9em}.summary dd{margin:0 0 .3em 9em}\
             </style></head><body>",
        );
        let open = |t: &Option<String>, word: &str| t.clone().unwrap_or_else(|| word.into());
        let history = match &self.history {
            Some(h) => format!(
                "{} to {}: {} records, {} quarantined{}",
                h.since,
                h.until,
                h.records,
                h.quarantined,
                h.kafka
                    .as_ref()
                    .map_or(String::new(), |k| format!(" ({k})"))
            ),
            None => "none (no --since: the whole log is judged)".into(),
        };
        let hours = self.volume_hours.as_ref().map_or(String::new(), |v| {
            format!(
                "<dt>volume hours</dt><dd>{} judged, {} without enough weeks of history, {} calendar days' hours</dd>",
                v.judged, v.without_history, v.calendar
            )
        });
        let _ = write!(
            out,
            "<h1>Tollgate data-quality audit</h1><div class=\"summary {}\"><dl>\
             <dt>verdict</dt><dd><span class=\"{}\">{}</span>: {} checks, \
             <span class=\"fail\">{fails} failed</span>, <span class=\"warn\">{warns} warnings</span></dd>\
             <dt>window judged</dt><dd>{} to {}: {} records, {} quarantined</dd>\
             <dt>history read</dt><dd>{}</dd>{hours}</dl></div>",
            if fails == 0 { "ok" } else { "bad" },
            if fails == 0 { "pass" } else { "fail" },
            if fails == 0 { "PASSED" } else { "FAILED" },
            self.checks.len(),
            escape(&open(&self.window.since, "the first record")),
            escape(&open(&self.window.until, "now")),
            self.records,
            self.quarantined,
            escape(&history),
        );
        out.push_str(
            "<table><tr><th>status</th><th>expectation</th><th>subject</th><th>finding</th></tr>",
        );
        for c in &self.checks {
            let (class, word) = match c.status {
                Status::Fail => ("fail", "FAIL"),
                Status::Warn => ("warn", "WARN"),
                Status::Pass => ("pass", "pass"),
            };
            let _ = write!(
                out,
                "<tr><td class=\"{class}\">{word}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&c.expectation),
                escape(&c.subject),
                escape(&c.detail)
            );
        }
        out.push_str("</table>");
        for chart in self.checks.iter().filter_map(|c| c.chart.as_ref()) {
            out.push_str(&svg(chart));
        }
        self.quarantine_table(&mut out);
        out.push_str("</body></html>\n");
        out
    }
}

impl Report {
    /// Rejections per event × error × segment, with their history share.
    fn quarantine_table(&self, out: &mut String) {
        out.push_str("<h2>Quarantine</h2>");
        if self.quarantine.is_empty() {
            out.push_str("<p>No event was rejected in the window.</p>");
            return;
        }
        out.push_str(
            "<table><tr><th></th><th>event</th><th>error</th><th>at</th><th>segment</th>\
             <th>rejected</th><th>share</th><th>history share</th><th>z</th></tr>",
        );
        for row in &self.quarantine {
            let percent = |p: f64| format!("{:.2}%", p * 100.0);
            let _ = write!(
                out,
                "<tr><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                if row.flagged { "fail" } else { "pass" },
                if row.flagged { "RISE" } else { "" },
                escape(&row.event),
                escape(&row.code),
                escape(&row.path),
                escape(&row.segment),
                row.rejected,
                percent(row.share),
                row.baseline.map_or("no history".into(), |p| format!(
                    "{} ({})",
                    percent(p),
                    escape(row.baseline_of.as_deref().unwrap_or_default())
                )),
                row.z.map_or(String::new(), |z| format!("{z:.1}")),
            );
        }
        out.push_str("</table>");
    }
}

/// Observed counts (line), the expected band (shaded) and its median (dashed), with
/// the anomalous hour marked.
fn svg(chart: &Chart) -> String {
    const W: f64 = 900.0;
    const H: f64 = 260.0;
    const PAD: f64 = 40.0;
    let n = chart.points.len().max(2) as f64;
    let top = chart
        .points
        .iter()
        .map(|p| p.high.max(p.observed as f64))
        .fold(1.0, f64::max);
    let x = |i: usize| PAD + (W - 2.0 * PAD) * i as f64 / (n - 1.0);
    let y = |v: f64| H - PAD - (H - 2.0 * PAD) * v / top;
    let mut band = String::new();
    for (i, p) in chart.points.iter().enumerate() {
        let _ = write!(band, "{:.1},{:.1} ", x(i), y(p.high));
    }
    for (i, p) in chart.points.iter().enumerate().rev() {
        let _ = write!(band, "{:.1},{:.1} ", x(i), y(p.low));
    }
    let line = |value: &dyn Fn(&super::ChartPoint) -> f64| {
        chart
            .points
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{:.1},{:.1}", x(i), y(value(p))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = format!(
        "<figure><figcaption>{}</figcaption><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" \
         role=\"img\" aria-label=\"observed against expected\">",
        escape(&chart.title)
    );
    let _ = write!(
        out,
        "<polygon points=\"{band}\" fill=\"#c8e6c9\" stroke=\"none\"/>\
         <polyline points=\"{}\" fill=\"none\" stroke=\"#2e7d32\" stroke-dasharray=\"4 3\"/>\
         <polyline points=\"{}\" fill=\"none\" stroke=\"#1a237e\" stroke-width=\"1.5\"/>",
        line(&|p| p.expected),
        line(&|p| p.observed as f64),
    );
    if let Some(i) = chart
        .points
        .iter()
        .position(|p| p.hour == chart.anomaly_hour)
    {
        let _ = write!(
            out,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1}\" y2=\"{2}\" stroke=\"#b00020\"/>\
             <text x=\"{0:.1}\" y=\"{3}\" fill=\"#b00020\" font-size=\"12\" text-anchor=\"middle\">{4}</text>",
            x(i),
            PAD,
            H - PAD,
            PAD - 8.0,
            escape(&chart.points[i].label)
        );
    }
    let _ = write!(
        out,
        "<text x=\"{PAD}\" y=\"{}\" font-size=\"12\">{}</text><text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"end\">{}</text>\
         <text x=\"4\" y=\"{}\" font-size=\"12\">{top:.0}</text></svg>\
         <div>blue: observed events per hour; dashed: expected (same hour of earlier weeks); green: expected band</div></figure>",
        H - 10.0,
        escape(chart.points.first().map_or("", |p| p.label.as_str())),
        W - PAD,
        H - 10.0,
        escape(chart.points.last().map_or("", |p| p.label.as_str())),
        PAD + 4.0,
    );
    out
}
