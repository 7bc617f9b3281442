//! Three weeks of a service's log for the daily audit: item views, shares and purchases
//! from iOS, Android and the web, with a daily curve, quieter weekends and noise; a few
//! purchases quarantined every day. Any of six defects can be put on the last day alone.

use std::io::Write;
use std::path::Path;

/// Thursday 2026-11-05, 00:00 UTC (unix µs).
pub const START: i64 = 1_793_836_800_000_000;
pub const DAYS: i64 = 21;
pub const DAY: i64 = 86_400_000_000;
const HOUR: i64 = 3_600_000_000;

/// The last day, Wednesday 2026-11-25: the day a daily audit judges.
pub const LAST_DAY: i64 = START + (DAYS - 1) * DAY;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defect {
    /// A quarter of Android 5.2.0's item views without a session_id.
    Nulls,
    /// 2 % of the day's records logged twice.
    Duplicates,
    /// 5 % of share_successes without their share_submit.
    Orphans,
    /// A channel never seen before takes 30 % of share_submits.
    NewCategory,
    /// The web logs a tenth of its events from 12:00 to 16:00.
    WebDrop,
    /// iOS 6.2.0, released that day, gets 30 % of its purchases rejected at
    /// /properties/price.
    SchemaViolations,
}

pub const ALL: [Defect; 6] = [
    Defect::Nulls,
    Defect::Duplicates,
    Defect::Orphans,
    Defect::NewCategory,
    Defect::WebDrop,
    Defect::SchemaViolations,
];

/// One record: its time (unix µs), the session it belongs to, its JSON text.
pub struct Line {
    pub t: i64,
    pub session: String,
    pub text: String,
}

/// One day of records: accepted and quarantined, each in time order.
pub struct Day {
    pub start: i64,
    pub events: Vec<Line>,
    pub quarantine: Vec<Line>,
}

pub fn timestamp(micros: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// The whole log, with `defects` on the last day.
pub fn log(defects: &[Defect]) -> Vec<Day> {
    let mut noise = 0x2545_f491_4f6c_dd1d_u64;
    let mut purchases = 0u64;
    (0..DAYS)
        .map(|d| {
            let last = d == DAYS - 1;
            let has = |defect: Defect| last && defects.contains(&defect);
            let start = START + d * DAY;
            // START is a Thursday: weekday 3 with Monday 0.
            let weekend = matches!((3 + d) % 7, 5 | 6);
            let mut day = Day {
                start,
                events: Vec::new(),
                quarantine: Vec::new(),
            };
            let mut records = 0u64;
            for h in 0..24i64 {
                let curve = 0.3
                    + 1.2
                        * (std::f64::consts::PI * (h as f64 - 3.0) / 24.0)
                            .sin()
                            .max(0.0);
                for platform in ["ios", "android", "web"] {
                    noise = noise
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let jitter = 0.92 + 0.16 * ((noise >> 33) as f64 / (1u64 << 31) as f64);
                    let mut n =
                        (40.0 * curve * if weekend { 0.6 } else { 1.0 } * jitter) as i64;
                    if has(Defect::WebDrop) && platform == "web" && (12..16).contains(&h) {
                        n /= 10;
                    }
                    for i in 0..n {
                        let session = format!("s-{d}-{h}-{platform}-{i}");
                        let t = start + h * HOUR + i * HOUR / n.max(1);
                        let version = match platform {
                            "ios" if last && i % 2 == 0 => "6.2.0",
                            "ios" => "6.1.0",
                            "android" if i % 2 == 1 => "5.2.0",
                            "android" => "5.1.0",
                            _ => "w-1",
                        };
                        let mut push = |day: &mut Day, quarantined: bool, text: String, t: i64| {
                            let line = Line {
                                t,
                                session: session.clone(),
                                text,
                            };
                            if quarantined {
                                day.quarantine.push(line);
                                return;
                            }
                            records += 1;
                            let twice = has(Defect::Duplicates) && records.is_multiple_of(50);
                            if twice {
                                day.events.push(Line {
                                    t: line.t,
                                    session: line.session.clone(),
                                    text: line.text.clone(),
                                });
                            }
                            day.events.push(line);
                        };
                        let record = |id: String, name: &str, t: i64, session_id: &str, properties: String| {
                            format!(
                                r#"{{"event_id":"{id}","event_name":"{name}","schema_version":1,"user_id":"u-{session}","session_id":{session_id},"platform":"{platform}","app_version":"{version}","region":"eu","source":"app","properties":{properties},"timestamp_server":"{}","lateness_ms":800}}"#,
                                timestamp(t)
                            )
                        };
                        let sid = format!("\"{session}\"");
                        let null_session = has(Defect::Nulls) && platform == "android" && i % 8 == 1;
                        for v in 0..2 {
                            let tv = t + v * 1_000_000;
                            push(
                                &mut day,
                                false,
                                record(
                                    format!("{session}-view-{v}"),
                                    "item_view",
                                    tv,
                                    if null_session { "null" } else { &sid },
                                    format!(r#"{{"item_id":"i{v}","position":{v}}}"#),
                                ),
                                tv,
                            );
                        }
                        if i % 2 == 0 {
                            let channel = if has(Defect::NewCategory) && (i / 2) % 10 < 3 {
                                "telegram"
                            } else {
                                ["whatsapp", "sms", "copy_link"][(i as usize / 2) % 3]
                            };
                            let properties =
                                format!(r#"{{"action_id":"a-{session}","channel":"{channel}"}}"#);
                            if !(has(Defect::Orphans) && i % 40 == 0) {
                                let ts = t + 2_000_000;
                                push(
                                    &mut day,
                                    false,
                                    record(format!("{session}-submit"), "share_submit", ts, &sid, properties.clone()),
                                    ts,
                                );
                            }
                            let ts = t + 3_000_000;
                            push(
                                &mut day,
                                false,
                                record(format!("{session}-success"), "share_success", ts, &sid, properties),
                                ts,
                            );
                        }
                        purchases += 1;
                        let rejected = purchases.is_multiple_of(300)
                            || (has(Defect::SchemaViolations) && version == "6.2.0" && i % 20 < 6);
                        let tp = t + 4_000_000;
                        if rejected {
                            let text = format!(
                                r#"{{"timestamp_server":"{}","source":"app","api":"native","request_id":"r-{session}","index":0,"error":{{"code":"schema_violation","path":"/properties/price","message":"-1 is less than the minimum of 0"}},"event":{{"event_id":"{session}-purchase","event_name":"purchase","schema_version":1,"platform":"{platform}","app_version":"{version}","properties":{{"price":-1}}}},"collector_version":"0.1.0"}}"#,
                                timestamp(tp)
                            );
                            push(&mut day, true, text, tp);
                        } else {
                            push(
                                &mut day,
                                false,
                                record(format!("{session}-purchase"), "purchase", tp, &sid, r#"{"price":12.5}"#.into()),
                                tp,
                            );
                        }
                    }
                }
            }
            day.events.sort_by_key(|l| l.t);
            day
        })
        .collect()
}

/// Writes the days as a collector's data directory: one segment per day and stream.
pub fn write(dir: &Path, days: &[Day]) {
    for (stream, lines) in [
        (
            "events",
            days.iter()
                .map(|d| (d.start, &d.events))
                .collect::<Vec<_>>(),
        ),
        (
            "quarantine",
            days.iter().map(|d| (d.start, &d.quarantine)).collect(),
        ),
    ] {
        std::fs::create_dir_all(dir.join(stream)).unwrap();
        for (start, lines) in lines {
            let name = timestamp(start).replace(['-', ':'], "");
            let mut file = std::io::BufWriter::new(
                std::fs::File::create(dir.join(stream).join(format!("{name}-1.ndjson"))).unwrap(),
            );
            for line in lines {
                writeln!(file, "{}", line.text).unwrap();
            }
        }
    }
}

/// The expectations the daily audit tests judge the last day with.
pub const EXPECTATIONS: &str = r#"
[defaults]
max_duplicate_rate = 0.005
dedupe_window = "24h"

[[events]]
name = "item_view"
not_null = ["session_id"]
max_null_rate = 0.01

[[references]]
from = "share_success"
to = "share_submit"
keys = ["session_id", "properties.action_id"]
within = "1h"
max_missing_rate = 0.01

[volume]
events = ["item_view"]
segments = ["platform"]
min_weeks = 2
threshold = 5.0
min_expected = 20

[[drift]]
event = "share_submit"
field = "properties.channel"
max_psi = 0.1

[quarantine]
min_events = 100
"#;

/// What each defect fails: (expectation, subject).
pub fn flagged_by(defect: Defect) -> (&'static str, &'static str) {
    match defect {
        Defect::Nulls => ("not_null", "item_view.session_id"),
        Defect::Duplicates => ("duplicate_rate", ""),
        Defect::Orphans => ("reference", "share_success -> share_submit"),
        Defect::NewCategory => ("drift", "share_submit.properties.channel"),
        Defect::WebDrop => ("volume", "item_view by platform"),
        Defect::SchemaViolations => ("quarantine_share", "purchase"),
    }
}

/// A report as JSON without what differs between two runs of the same audit: how it ran,
/// and with Kafka how the history's start was found.
pub fn findings(report: &tollgate_audit::Report) -> serde_json::Value {
    let mut json = serde_json::to_value(report).unwrap();
    json.as_object_mut().unwrap().remove("run");
    if let Some(history) = json["history"].as_object_mut() {
        history.remove("kafka");
    }
    json
}
