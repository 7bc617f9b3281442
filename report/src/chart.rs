//! Line charts as inline SVG, for pages that must stand alone (no scripts, no external
//! assets). The markup is also well-formed XML, so tests can parse the pages.

use std::fmt::Write as _;

use crate::escape;

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Line {
    pub name: String,
    /// A CSS colour.
    pub color: &'static str,
    pub dashed: bool,
    /// (x, y) in data units; a `None` y leaves a gap (nothing measured there).
    pub points: Vec<(f64, Option<f64>)>,
}

/// How x values are placed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum XAxis {
    /// Seconds of a run (or any linear quantity).
    Linear,
    /// Percentiles (0–100) spread as HdrHistogram plots them: each "nine" (90, 99,
    /// 99.9 …) one step further right.
    Percentile,
}

/// A chart: lines over a shared x axis, with optional vertical marks (ramp stages).
#[derive(Debug, Clone)]
pub struct Chart {
    /// `id` of the figure, for links and tests.
    pub id: String,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_axis: XAxis,
    pub lines: Vec<Line>,
    /// (x, label) vertical marks.
    pub marks: Vec<(f64, String)>,
}

/// The start of a standalone page, through `<body>`: what every chart page shares
/// (type, tables, legends), then `css` of its own.
pub fn page_head(title: &str, css: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/><title>{}</title><style>\
         body{{font:14px system-ui,sans-serif;margin:2em;color:#222;max-width:940px}}\
         table{{border-collapse:collapse}}td,th{{padding:3px 10px;border-bottom:1px solid #ddd;text-align:left}}\
         figure{{margin:1.2em 0}}figcaption{{font-weight:bold;margin-bottom:.3em}}\
         .legend{{font-size:12px}}.swatch{{display:inline-block;width:12px;height:3px;margin:0 4px 3px 0}}\
         {css}</style></head><body>",
        escape(title)
    )
}

const W: f64 = 860.0;
const H: f64 = 240.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 36.0;

impl Chart {
    fn x_of(&self, x: f64) -> f64 {
        match self.x_axis {
            XAxis::Linear => x,
            // 0 → 0, 90 → 1, 99 → 2, 99.9 → 3; 100 sits one step past the last point.
            XAxis::Percentile => -(1.0 - (x / 100.0).min(0.999_999_9)).log10(),
        }
    }

    /// The figure: title, the SVG, and a legend.
    pub fn svg(&self) -> String {
        let xs = self
            .lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| self.x_of(p.0)));
        let (x_min, x_max) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(x), hi.max(x))
        });
        let (x_min, x_max) = if x_min.is_finite() && x_max > x_min {
            (x_min, x_max)
        } else {
            (0.0, 1.0)
        };
        let y_max = self
            .lines
            .iter()
            .flat_map(|l| l.points.iter().filter_map(|p| p.1))
            .fold(0.0f64, f64::max);
        let y_top = nice_ceiling(y_max);
        let px = |x: f64| LEFT + (W - LEFT - RIGHT) * (self.x_of(x) - x_min) / (x_max - x_min);
        let py = |y: f64| H - BOTTOM - (H - TOP - BOTTOM) * y / y_top;
        let mut out = format!(
            "<figure class=\"chart\" id=\"{}\"><figcaption>{}</figcaption>\
             <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\">",
            escape(&self.id),
            escape(&self.title),
            escape(&self.title),
        );
        // Grid and y labels.
        let decimals = decimals_for(y_top / 4.0);
        for i in 0..=4 {
            let y = y_top * f64::from(i) / 4.0;
            let (right, at, label_x) = (W - RIGHT, py(y), LEFT - 6.0);
            let _ = write!(
                out,
                "<line x1=\"{LEFT}\" x2=\"{right:.1}\" y1=\"{at:.1}\" y2=\"{at:.1}\" stroke=\"#e0e0e0\"/>\
                 <text x=\"{label_x:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
                at + 4.0,
                if y >= 1000.0 {
                    short(y)
                } else {
                    format!("{y:.decimals$}")
                }
            );
        }
        // x labels.
        for (x, label) in self.x_ticks(x_min, x_max) {
            let _ = write!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{}</text>",
                px(x),
                H - BOTTOM + 16.0,
                escape(&label)
            );
        }
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{}</text>\
             <text x=\"12\" y=\"{:.1}\" font-size=\"11\" transform=\"rotate(-90 12 {:.1})\" text-anchor=\"middle\">{}</text>",
            LEFT + (W - LEFT - RIGHT) / 2.0,
            H - 4.0,
            escape(&self.x_label),
            H / 2.0,
            H / 2.0,
            escape(&self.y_label),
        );
        for (x, label) in &self.marks {
            // A label near the right edge goes to the left of its line.
            let (label_x, anchor) = if px(*x) > W - 160.0 {
                (px(*x) - 3.0, "end")
            } else {
                (px(*x) + 3.0, "start")
            };
            let _ = write!(
                out,
                "<line class=\"mark\" x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{TOP}\" y2=\"{1:.1}\" stroke=\"#9e9e9e\" stroke-dasharray=\"2 3\"/>\
                 <text x=\"{label_x:.1}\" y=\"{2:.1}\" font-size=\"10\" fill=\"#616161\" text-anchor=\"{anchor}\">{3}</text>",
                px(*x),
                H - BOTTOM,
                TOP + 10.0,
                escape(label)
            );
        }
        for line in &self.lines {
            let points: Vec<String> = line
                .points
                .iter()
                .filter_map(|(x, y)| y.map(|y| format!("{:.1},{:.1}", px(*x), py(y))))
                .collect();
            let _ = write!(
                out,
                "<polyline data-line=\"{}\" points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\"{}/>",
                escape(&line.name),
                points.join(" "),
                line.color,
                if line.dashed {
                    " stroke-dasharray=\"5 4\""
                } else {
                    ""
                }
            );
        }
        out.push_str("</svg><div class=\"legend\">");
        for line in &self.lines {
            let _ = write!(
                out,
                "<span><span class=\"swatch\" style=\"background:{}\"></span>{}</span> ",
                line.color,
                escape(&line.name)
            );
        }
        out.push_str("</div></figure>");
        out
    }

    fn x_ticks(&self, x_min: f64, x_max: f64) -> Vec<(f64, String)> {
        match self.x_axis {
            XAxis::Linear => {
                let step = nice_ceiling((x_max - x_min) / 8.0).max(1.0);
                let mut ticks = Vec::new();
                let mut x = (x_min / step).ceil() * step;
                while x <= x_max + 1e-9 {
                    ticks.push((x, short(x)));
                    x += step;
                }
                ticks
            }
            XAxis::Percentile => (0..=(x_max.floor() as usize))
                .map(|nines| {
                    let p = 100.0 * (1.0 - 10f64.powi(-(nines as i32)));
                    let label = match nines {
                        0 => "0%".to_owned(),
                        1 => "90%".to_owned(),
                        n => format!("99.{}%", "9".repeat(n - 2)).replace(".%", "%"),
                    };
                    (p, label)
                })
                .collect(),
        }
    }
}

/// The smallest 1, 2 or 5 × 10ⁿ at or above `v` (1 for nothing to show).
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|n| *n >= v * (1.0 - 1e-12))
        .unwrap_or(10.0 * magnitude)
}

/// The fewest decimals (up to 6) that write multiples of `step` exactly: 0 for 250, 2
/// for 1.25 or 0.01, 3 for 0.005.
fn decimals_for(step: f64) -> usize {
    (0..6)
        .find(|d| {
            let scaled = step * 10f64.powi(*d as i32);
            (scaled - scaled.round()).abs() < 1e-6
        })
        .unwrap_or(6)
}

/// A tick label: `1.5k`, `250`, `0.25`, `99.9`.
fn short(v: f64) -> String {
    if v.abs() >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v.abs() >= 1000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        let text = format!("{v:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_line_has_its_points_and_gaps_are_left_out() {
        let chart = Chart {
            id: "rate".into(),
            title: "Rate <per s>".into(),
            x_label: "s".into(),
            y_label: "req/s".into(),
            x_axis: XAxis::Linear,
            lines: vec![Line {
                name: "achieved".into(),
                color: "#1a237e",
                dashed: false,
                points: vec![(0.0, Some(1.0)), (1.0, None), (2.0, Some(3.0))],
            }],
            marks: vec![(1.0, "stage 1".into())],
        };
        let svg = chart.svg();
        let points = svg
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(points.split(' ').count(), 2, "{svg}");
        assert!(svg.contains("Rate &lt;per s&gt;"));
        assert!(svg.contains("class=\"mark\""));
    }

    #[test]
    fn nice_numbers_and_labels() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.3), 10.0);
        assert_eq!(nice_ceiling(1234.0), 2000.0);
        assert_eq!(nice_ceiling(0.04), 0.05);
        assert_eq!(short(99.9), "99.9");
        assert_eq!(short(1500.0), "1.5k");
        assert_eq!(short(50.0), "50");
        assert_eq!(decimals_for(0.005), 3);
        assert_eq!(decimals_for(0.01), 2);
        assert_eq!(decimals_for(0.25), 2);
        assert_eq!(decimals_for(125.0), 0);
        assert_eq!(decimals_for(1.25), 2);
    }
}
