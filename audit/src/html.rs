//! The audit as one self-contained HTML page: the checks worst first, and a chart per
//! anomalous volume series (observed counts against the expected band). No scripts, no
//! external assets: it can be mailed or archived as is.

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
             </style></head><body>",
        );
        let _ = write!(
            out,
            "<h1>Tollgate data-quality audit</h1><p>{} records audited, {} quarantined. \
             <span class=\"fail\">{fails} failed</span>, <span class=\"warn\">{warns} warnings</span>, \
             {} checks.</p>",
            self.records,
            self.quarantined,
            self.checks.len()
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
        out.push_str("</body></html>\n");
        out
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
