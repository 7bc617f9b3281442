//! The quarantine as an input of its own: the share of an event's records rejected with
//! one error code at one path, per (platform, app_version) and overall, in the judged
//! window against the history before it. A release that starts failing validation shows
//! as a rise in its segment ("schema_violation at /properties/price rose from 0.10 % to
//! 12.0 % in ios 6.2.0"), the way a volume anomaly shows in its hour.
//!
//! A segment's baseline is its own history share when it has `min_events` records of
//! history; else the event's share over every segment (a new release has no history of
//! its own, and is compared with the releases before it). A rise is flagged when it is
//! at least `min_rise` and `threshold` standard errors of the baseline share
//! (√(p₀(1−p₀)/n), p₀ floored at one record of the baseline).

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::value::RawValue;

use super::expectations::QuarantineRules;
use super::ordered::{Ordered, hash};
use super::read::{self, FieldValue};
use super::tally::Period;
use super::{Check, Status};

/// Keys tracked per tally; the rest count as `(other)`.
const MAX_KEYS: usize = 10_000;
/// Rows of the report's quarantine table.
const MAX_ROWS: usize = 50;

/// Records of one (event, platform, app_version): [history, window].
pub struct Accepted {
    event: String,
    platform: String,
    version: String,
    counts: [u64; 2],
}

/// Rejections of one (event, code, path, platform, app_version): [history, window].
pub struct Rejected {
    event: String,
    code: String,
    path: String,
    platform: String,
    version: String,
    counts: [u64; 2],
}

#[derive(Default)]
pub struct Tally {
    accepted: Ordered<Accepted>,
    rejected: Ordered<Rejected>,
}

impl Tally {
    pub fn accepted(&mut self, event: &str, platform: &str, version: &str, period: Period) {
        self.accepted
            .entry(hash(&[event, platform, version]), || Accepted {
                event: event.to_owned(),
                platform: platform.to_owned(),
                version: version.to_owned(),
                counts: [0; 2],
            })
            .counts[period as usize] += 1;
    }

    pub fn rejected(&mut self, rec: &read::QuarantineRec, period: Period) {
        let seen = Seen::of(rec.event);
        let code = rec.error.as_ref().map_or("unknown", |e| e.code.as_ref());
        let path = rec
            .error
            .as_ref()
            .map_or(Cow::Borrowed(""), |e| pattern(&e.path));
        let (event, platform, version) = (seen.event(), seen.platform(), seen.version());
        self.rejected
            .entry(hash(&[&event, code, &path, &platform, &version]), || {
                Rejected {
                    event: event.clone().into_owned(),
                    code: code.to_owned(),
                    path: path.clone().into_owned(),
                    platform: platform.clone().into_owned(),
                    version: version.clone().into_owned(),
                    counts: [0; 2],
                }
            })
            .counts[period as usize] += 1;
    }

    pub fn absorb(&mut self, later: Tally) {
        let add = |a: &mut [u64; 2], b: [u64; 2]| {
            a[0] += b[0];
            a[1] += b[1];
        };
        let other_accepted = |_: &Accepted| Accepted {
            event: "(other)".into(),
            platform: "(other)".into(),
            version: "(other)".into(),
            counts: [0; 2],
        };
        self.accepted
            .absorb(later.accepted, MAX_KEYS, (0, &other_accepted), |a, b| {
                add(&mut a.counts, b.counts)
            });
        let other_rejected = |_: &Rejected| Rejected {
            event: "(other)".into(),
            code: "(other)".into(),
            path: String::new(),
            platform: "(other)".into(),
            version: "(other)".into(),
            counts: [0; 2],
        };
        self.rejected
            .absorb(later.rejected, MAX_KEYS, (0, &other_rejected), |a, b| {
                add(&mut a.counts, b.counts)
            });
    }
}

/// What a quarantined event says of itself. Events rejected after they were read carry
/// the collector's field names; ones rejected while being read are as the client sent
/// them (a Segment `track` names its event `event`).
#[derive(serde::Deserialize, Default)]
struct Seen<'a> {
    #[serde(borrow, default)]
    event_name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    event: Option<&'a RawValue>,
    #[serde(borrow, default)]
    platform: Option<&'a RawValue>,
    #[serde(borrow, default)]
    app_version: Option<&'a RawValue>,
}

impl<'a> Seen<'a> {
    fn of(event: Option<&'a RawValue>) -> Self {
        event
            .and_then(|e| serde_json::from_str(e.get()).ok())
            .unwrap_or_default()
    }

    fn text(value: Option<&'a RawValue>) -> Option<Cow<'a, str>> {
        match read::leaf(value) {
            FieldValue::Text(text) => Some(text),
            _ => None,
        }
    }

    fn event(&self) -> Cow<'a, str> {
        Self::text(self.event_name)
            .or_else(|| Self::text(self.event))
            .unwrap_or(Cow::Borrowed("(unreadable)"))
    }

    fn platform(&self) -> Cow<'a, str> {
        Self::text(self.platform).unwrap_or(Cow::Borrowed("none"))
    }

    fn version(&self) -> Cow<'a, str> {
        Self::text(self.app_version).unwrap_or(Cow::Borrowed("none"))
    }
}

/// A JSON pointer with its array indices as `*`: `/properties/items/3/sku` and
/// `/properties/items/0/sku` are one problem.
fn pattern(path: &str) -> Cow<'_, str> {
    if !path
        .split('/')
        .any(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
    {
        return Cow::Borrowed(path);
    }
    Cow::Owned(
        path.split('/')
            .map(|s| {
                if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                    "*"
                } else {
                    s
                }
            })
            .collect::<Vec<_>>()
            .join("/"),
    )
}

/// One row of the report's quarantine table: a kind of rejection in one segment (or
/// `all` of them), its share in the window and in the history.
#[derive(Debug, Clone, Serialize)]
pub struct QuarantineRow {
    pub event: String,
    pub code: String,
    pub path: String,
    /// `ios 6.2.0`, or `all` for every segment together.
    pub segment: String,
    /// Rejected in the window, and their share of the segment's records there.
    pub rejected: u64,
    pub share: f64,
    /// The baseline share, and what it is of (`history of this segment`, `history of
    /// every segment`); none without enough history.
    pub baseline: Option<f64>,
    pub baseline_of: Option<String>,
    /// Standard errors above the baseline.
    pub z: Option<f64>,
    pub flagged: bool,
}

/// Counts of one kind of rejection: [history, window] of the rejections and of the
/// segment's records (accepted + rejected).
#[derive(Default, Clone, Copy)]
struct Counts {
    rejected: [u64; 2],
    total: [u64; 2],
}

/// The checks (one per event with rejections in the window) and the table rows, flagged
/// first, then by rejections in the window.
pub fn judge(
    tally: &Tally,
    rules: &QuarantineRules,
    judged: bool,
) -> (Vec<Check>, Vec<QuarantineRow>) {
    // Records per (event, segment) and per event: accepted + rejected.
    let mut totals: BTreeMap<(&str, &str, &str), [u64; 2]> = BTreeMap::new();
    let mut event_totals: BTreeMap<&str, [u64; 2]> = BTreeMap::new();
    let segments = tally
        .accepted
        .values()
        .map(|a| {
            (
                (a.event.as_str(), a.platform.as_str(), a.version.as_str()),
                a.counts,
            )
        })
        .chain(tally.rejected.values().map(|r| {
            (
                (r.event.as_str(), r.platform.as_str(), r.version.as_str()),
                r.counts,
            )
        }));
    for (key, counts) in segments {
        for sum in [
            totals.entry(key).or_default(),
            event_totals.entry(key.0).or_default(),
        ] {
            sum[0] += counts[0];
            sum[1] += counts[1];
        }
    }
    // Rejections per (event, code, path) overall.
    let mut overall: BTreeMap<(&str, &str, &str), [u64; 2]> = BTreeMap::new();
    for r in tally.rejected.values() {
        let n = overall.entry((&r.event, &r.code, &r.path)).or_default();
        n[0] += r.counts[0];
        n[1] += r.counts[1];
    }
    let mut rows = Vec::new();
    let mut judge_one = |event: &str, code: &str, path: &str, segment: String, own: Counts| {
        if own.rejected[1] == 0 {
            return;
        }
        let whole = Counts {
            rejected: overall[&(event, code, path)],
            total: event_totals[event],
        };
        let share = own.rejected[1] as f64 / own.total[1].max(1) as f64;
        let baseline = if !judged {
            None
        } else if own.total[0] >= rules.min_events {
            Some((own, "history of this segment"))
        } else if whole.total[0] >= rules.min_events {
            Some((whole, "history of every segment"))
        } else {
            None
        };
        let (baseline, baseline_of, z) = match baseline {
            Some((base, of)) => {
                let p0 = base.rejected[0] as f64 / base.total[0] as f64;
                let floor = p0.max(1.0 / base.total[0] as f64);
                let se = (floor * (1.0 - floor).max(0.0) / own.total[1].max(1) as f64).sqrt();
                let z = if se > 0.0 { (share - p0) / se } else { 0.0 };
                (Some(p0), Some(of.to_owned()), Some(z))
            }
            None => (None, None, None),
        };
        let flagged = own.total[1] >= rules.min_events
            && baseline.is_some_and(|p0| share - p0 >= rules.min_rise)
            && z.is_some_and(|z| z >= rules.threshold);
        rows.push(QuarantineRow {
            event: event.to_owned(),
            code: code.to_owned(),
            path: path.to_owned(),
            segment,
            rejected: own.rejected[1],
            share,
            baseline,
            baseline_of,
            z,
            flagged,
        });
    };
    for (&(event, code, path), &rejected) in &overall {
        judge_one(
            event,
            code,
            path,
            "all".into(),
            Counts {
                rejected,
                total: event_totals[event],
            },
        );
    }
    for r in tally.rejected.values() {
        judge_one(
            &r.event,
            &r.code,
            &r.path,
            format!("{} {}", r.platform, r.version),
            Counts {
                rejected: r.counts,
                total: totals[&(r.event.as_str(), r.platform.as_str(), r.version.as_str())],
            },
        );
    }
    rows.sort_by(|a, b| {
        b.flagged
            .cmp(&a.flagged)
            .then(b.z.unwrap_or(0.0).total_cmp(&a.z.unwrap_or(0.0)))
            .then(b.rejected.cmp(&a.rejected))
            .then_with(|| {
                (&a.event, &a.code, &a.path, &a.segment)
                    .cmp(&(&b.event, &b.code, &b.path, &b.segment))
            })
    });
    let mut events: Vec<&str> = rows.iter().map(|r| r.event.as_str()).collect();
    events.sort_unstable();
    events.dedup();
    let checks = events
        .into_iter()
        .map(|event| {
            let mine: Vec<&QuarantineRow> = rows.iter().filter(|r| r.event == event).collect();
            let flagged = mine.iter().filter(|r| r.flagged).count();
            // Rows are sorted: the first is the worst.
            let worst = mine[0];
            let words = describe(worst);
            let (status, detail) = if flagged > 0 {
                (Status::Fail, format!("{flagged} rise(s); worst: {words}"))
            } else if worst.baseline.is_none() {
                (
                    Status::Pass,
                    format!("no history to compare with; most rejected: {words}"),
                )
            } else {
                (Status::Pass, format!("within history; closest: {words}"))
            };
            Check {
                status,
                expectation: "quarantine_share".into(),
                subject: event.to_owned(),
                observed: worst.share,
                limit: worst.baseline.unwrap_or(0.0) + rules.min_rise,
                detail,
                chart: None,
            }
        })
        .collect();
    rows.truncate(MAX_ROWS);
    (checks, rows)
}

/// "schema_violation at /properties/price rose from 0.10 % to 12.0 % in ios 6.2.0 …"
fn describe(row: &QuarantineRow) -> String {
    let at = if row.path.is_empty() {
        String::new()
    } else {
        format!(" at {}", row.path)
    };
    let segment = if row.segment == "all" {
        "across segments".to_owned()
    } else {
        format!("in {}", row.segment)
    };
    match (row.baseline, row.z) {
        (Some(p0), Some(z)) => format!(
            "{}{at} {} from {:.2}% to {:.2}% {segment} ({} rejected; z = {z:.1}, baseline: {})",
            row.code,
            if row.share >= p0 { "rose" } else { "fell" },
            p0 * 100.0,
            row.share * 100.0,
            row.rejected,
            row.baseline_of.as_deref().unwrap_or_default(),
        ),
        _ => format!(
            "{}{at} {:.2}% {segment} ({} rejected)",
            row.code,
            row.share * 100.0,
            row.rejected
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_indices_in_paths_are_one_pattern() {
        assert_eq!(
            pattern("/properties/items/3/sku"),
            "/properties/items/*/sku"
        );
        assert_eq!(pattern("/properties/price"), "/properties/price");
        assert_eq!(pattern(""), "");
    }
}
