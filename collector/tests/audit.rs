//! The audit over synthetic logs: a clean log passes everything; each injected defect is
//! found by the right expectation (and, for null rates, the right segment), and nothing
//! else fails.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use tollgate_audit::{Expectations, Report, Status, audit_dir};

const BASE: i64 = 1_795_000_000_000_000; // 2026-11-18, unix µs

fn timestamp(micros: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn record(id: String, name: &str, session: usize, t: i64, properties: Value) -> Value {
    let android = session % 2 == 1;
    json!({
        "event_id": id, "event_name": name, "schema_version": 1,
        "user_id": format!("u{session}"), "device_id": format!("d{session}"),
        "session_id": format!("s{session}"),
        "timestamp_event": timestamp(t - 2_000_000), "platform": if android { "android" } else { "ios" },
        "app_version": if session % 4 < 2 { "5.1.0" } else { "5.2.0" },
        "properties": properties, "timestamp_server": timestamp(t), "lateness_ms": 2000,
        "arrival": "on_time", "source": "app", "region": "default", "dedupe": "checked",
    })
}

/// 2000 sessions, one a second: three item_views each, a share_submit every other
/// session, a share_success every fourth.
fn clean_log() -> Vec<Value> {
    let mut records = Vec::new();
    let channels = ["whatsapp", "sms", "copy_link"];
    for s in 0..2000usize {
        let t = BASE + s as i64 * 1_000_000;
        for v in 0..3 {
            records.push(record(
                format!("view-{s}-{v}"),
                "item_view",
                s,
                t + v,
                json!({"item_id": format!("i{v}"), "position": v}),
            ));
        }
        if s % 2 == 0 {
            records.push(record(
                format!("submit-{s}"),
                "share_submit",
                s,
                t + 10,
                json!({"action_id": format!("a{s}"), "item_id": "i1", "channel": channels[s % 3]}),
            ));
        }
        if s % 4 == 0 {
            records.push(record(
                format!("success-{s}"),
                "share_success",
                s,
                t + 20,
                json!({"action_id": format!("a{s}"), "item_id": "i1"}),
            ));
        }
    }
    records
}

fn write_log(dir: &Path, records: &[Value]) {
    std::fs::create_dir_all(dir.join("events")).unwrap();
    let mut file = std::fs::File::create(dir.join("events/20261118T000000Z-1.ndjson")).unwrap();
    for r in records {
        writeln!(file, "{r}").unwrap();
    }
}

fn expectations() -> Expectations {
    Expectations::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/expectations.toml"))
        .unwrap()
}

fn run(records: &[Value]) -> Report {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), records);
    let newest = BASE + 2000 * 1_000_000;
    audit_dir(dir.path(), &expectations(), newest + 600_000_000).unwrap()
}

/// The checks that failed, as (expectation, subject).
fn failures(report: &Report) -> Vec<(String, String)> {
    report
        .checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| (c.expectation.clone(), c.subject.clone()))
        .collect()
}

#[test]
fn a_clean_log_passes_every_expectation() {
    let report = run(&clean_log());
    assert_eq!(report.records, 7500);
    assert!(report.passed(), "{}", report.human());
    assert!(report.checks.len() >= 10, "{}", report.human());
    // The shipped drift compares a window with the span before it: a whole-log audit has
    // no window, and says so rather than passing.
    for c in &report.checks {
        if c.expectation == "drift" {
            assert_eq!(c.status, Status::Warn);
            assert!(c.detail.contains("no split and no --since"), "{}", c.detail);
        } else {
            assert_eq!(c.status, Status::Pass, "{}", report.human());
        }
    }
}

#[test]
fn a_null_rate_jump_in_one_app_version_is_found_with_its_segment() {
    let mut records = clean_log();
    for r in &mut records {
        if r["event_name"] == "item_view"
            && r["platform"] == "android"
            && r["app_version"] == "5.2.0"
        {
            r["session_id"] = Value::Null;
        }
    }
    let report = run(&records);
    assert_eq!(
        failures(&report),
        [("not_null".into(), "item_view.session_id".into())],
        "{}",
        report.human()
    );
    let check = &report.checks[0];
    assert!(
        check
            .detail
            .contains("platform=android app_version=5.2.0: 100.00%"),
        "{}",
        check.detail
    );
}

#[test]
fn a_duplicate_burst_is_found() {
    let mut records = clean_log();
    let burst: Vec<Value> = records[100..130].to_vec();
    records.extend(burst);
    let report = run(&records);
    assert_eq!(
        failures(&report),
        [("duplicate_rate".into(), String::new())],
        "{}",
        report.human()
    );
    assert!(
        report.checks[0].detail.starts_with("30 event_ids"),
        "{}",
        report.checks[0].detail
    );
}

#[test]
fn share_successes_without_their_submit_are_found() {
    let mut records = clean_log();
    // Sessions 0, 40, 80, … lose their share_submit: 25 of 500 share_successes orphaned.
    records.retain(|r| {
        !(r["event_name"] == "share_submit"
            && r["session_id"].as_str().unwrap()[1..]
                .parse::<usize>()
                .unwrap()
                % 80
                == 0)
    });
    let report = run(&records);
    assert_eq!(
        failures(&report),
        [("reference".into(), "share_success -> share_submit".into())],
        "{}",
        report.human()
    );
    assert!(
        report.checks[0]
            .detail
            .starts_with("25 of 500 share_success"),
        "{}",
        report.checks[0].detail
    );
}

#[test]
fn a_new_category_value_and_an_out_of_range_number_are_found() {
    let mut records = clean_log();
    records[3]["properties"]["channel"] = json!("telegram"); // records[3] is a share_submit
    records[0]["properties"]["position"] = json!(9000);
    let report = run(&records);
    let mut found = failures(&report);
    found.sort();
    assert_eq!(
        found,
        [
            (
                "allowed_values".into(),
                "share_submit.properties.channel".into()
            ),
            ("range".into(), "item_view.properties.position".into()),
        ],
        "{}",
        report.human()
    );
    assert!(report.human().contains("\"telegram\""));
}

#[test]
fn a_stale_log_and_an_inverted_funnel_are_found() {
    let mut records = clean_log();
    for r in &mut records {
        if r["event_name"] == "share_submit" {
            r["event_name"] = json!("share_submitted"); // renamed: the funnel inverts
        }
    }
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), &records);
    let day_later = BASE + 2000 * 1_000_000 + 86_400_000_000;
    let report = audit_dir(dir.path(), &expectations(), day_later).unwrap();
    let found = failures(&report);
    assert!(
        found.contains(&("freshness".into(), String::new())),
        "{}",
        report.human()
    );
    assert!(
        found.contains(&("funnel".into(), "share".into())),
        "{}",
        report.human()
    );
}

#[test]
fn the_command_exits_non_zero_on_failure_and_writes_json() {
    let dir = tempfile::tempdir().unwrap();
    let mut records = clean_log();
    records.push(records[0].clone());
    write_log(dir.path(), &records);
    let expectations = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/expectations.toml");
    let json_file = dir.path().join("audit.json");
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate-collector"))
        .args(["audit", "--log"])
        .arg(dir.path())
        .arg("--expectations")
        .arg(&expectations)
        .args(["--now", &timestamp(BASE + 2001 * 1_000_000)])
        .arg("--json")
        .arg(&json_file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // One duplicate in 7501 records is within the 0.1 % ceiling: the audit passes.
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let findings: Value = serde_json::from_slice(&std::fs::read(&json_file).unwrap()).unwrap();
    assert_eq!(findings["records"], 7501);

    records.extend(records[..20].to_vec());
    write_log(dir.path(), &records);
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate-collector"))
        .args(["audit", "--log"])
        .arg(dir.path())
        .arg("--expectations")
        .arg(&expectations)
        .args(["--now", &timestamp(BASE + 2001 * 1_000_000)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL  duplicate_rate"));
}

/// Four weeks from Monday 2026-10-26, hour by hour: item_views from iOS and Android with
/// a daily curve, quieter weekends and ±8 % noise; `day_factor` scales whole days and
/// `hour_factor` single (platform, hour) cells.
fn month(day_factor: impl Fn(i64) -> f64, hour_factor: impl Fn(&str, i64) -> f64) -> String {
    let start = tollgate_audit::parse_time("2026-10-26T00:00:00Z").unwrap();
    let mut out = String::new();
    let mut noise = 12345u64;
    for hour in 0..28 * 24i64 {
        let (day, hod) = (hour / 24, hour % 24);
        let weekend = matches!(day % 7, 5 | 6);
        let curve = 0.3
            + 1.2
                * (std::f64::consts::PI * (hod as f64 - 3.0) / 24.0)
                    .sin()
                    .max(0.0);
        for platform in ["ios", "android"] {
            noise = noise
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let jitter = 0.92 + 0.16 * ((noise >> 33) as f64 / (1u64 << 31) as f64);
            let n = (60.0
                * curve
                * if weekend { 0.6 } else { 1.0 }
                * jitter
                * day_factor(day)
                * hour_factor(platform, hour)) as i64;
            for i in 0..n {
                let t = start + hour * 3_600_000_000 + i * 3_600_000_000 / n.max(1);
                out.push_str(&format!(
                    r#"{{"event_id":"v-{hour}-{platform}-{i}","event_name":"item_view","platform":"{platform}","app_version":"5.1.0","region":"eu","timestamp_server":"{}","lateness_ms":1000}}"#,
                    timestamp(t)
                ));
                out.push('\n');
            }
        }
    }
    out
}

fn volume_audit(log: &str, calendar: &str) -> Report {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("events")).unwrap();
    std::fs::write(dir.path().join("events/20261026T000000Z-1.ndjson"), log).unwrap();
    let file = dir.path().join("expectations.toml");
    std::fs::write(
        &file,
        format!("[volume]\nsegments = [\"platform\"]\nmin_weeks = 2\nthreshold = 5.0\ncalendar = [{calendar}]\n"),
    )
    .unwrap();
    let expectations = Expectations::load(&file).unwrap();
    audit_dir(dir.path(), &expectations, 0).unwrap()
}

/// 2026-11-13, a Friday in week 3: three times the usual traffic.
const HOLIDAY_DAY: i64 = 18;
const HOLIDAY: &str = r#"{ date = "2026-11-13", reason = "sale day" }"#;

#[test]
fn a_month_with_weekly_seasonality_and_a_declared_holiday_raises_no_alarm() {
    let log = month(|day| if day == HOLIDAY_DAY { 3.0 } else { 1.0 }, |_, _| 1.0);
    let report = volume_audit(&log, HOLIDAY);
    let volume: Vec<_> = report
        .checks
        .iter()
        .filter(|c| c.expectation == "volume")
        .collect();
    assert_eq!(
        volume.len(),
        2,
        "item_view overall and by platform: {}",
        report.human()
    );
    assert!(report.passed(), "{}", report.human());

    // The same spike undeclared is an anomaly: the calendar is what keeps it quiet.
    let report = volume_audit(&log, "");
    assert!(!report.passed(), "{}", report.human());
}

#[test]
fn an_android_only_drop_on_a_weekday_is_reported_as_that_segment_s_logging_failure() {
    // Wednesday 2026-11-18, 14:00-16:00 UTC: Android logs a tenth of its events.
    let drop_start = (23 * 24 + 14) as i64;
    let log = month(
        |day| if day == HOLIDAY_DAY { 3.0 } else { 1.0 },
        |platform, hour| {
            if platform == "android" && (drop_start..drop_start + 2).contains(&hour) {
                0.1
            } else {
                1.0
            }
        },
    );
    let report = volume_audit(&log, HOLIDAY);
    let by_platform = report
        .checks
        .iter()
        .find(|c| c.subject == "item_view by platform")
        .unwrap();
    assert_eq!(by_platform.status, Status::Fail, "{}", report.human());
    assert!(
        by_platform.detail.starts_with("2 anomalous hour(s)"),
        "{}",
        by_platform.detail
    );
    assert!(
        by_platform.detail.contains("platform=android"),
        "{}",
        by_platform.detail
    );
    assert!(
        by_platform.detail.contains("2026-11-18 1"),
        "{}",
        by_platform.detail
    );
    assert!(
        by_platform.detail.contains("likely a logging failure"),
        "{}",
        by_platform.detail
    );
    assert!(
        !by_platform.detail.contains("platform=ios"),
        "{}",
        by_platform.detail
    );
}

fn drift_audit(records: &[Value]) -> Report {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), records);
    let file = dir.path().join("expectations.toml");
    // Sessions 0-999 are the baseline, 1000-1999 are judged.
    std::fs::write(
        &file,
        format!(
            "[[drift]]\nevent = \"share_submit\"\nfield = \"properties.channel\"\nsplit = \"{}\"\nmax_psi = 0.1\n",
            timestamp(BASE + 1000 * 1_000_000)
        ),
    )
    .unwrap();
    audit_dir(dir.path(), &Expectations::load(&file).unwrap(), 0).unwrap()
}

#[test]
fn a_category_that_takes_over_is_drift_and_a_steady_mix_is_not() {
    let report = drift_audit(&clean_log());
    assert!(report.passed(), "{}", report.human());
    assert!(report.checks[0].observed < 0.01, "{}", report.human());

    let mut records = clean_log();
    for r in &mut records {
        let session: usize = r["session_id"].as_str().unwrap()[1..].parse().unwrap();
        if r["event_name"] == "share_submit" && session >= 1000 && !session.is_multiple_of(4) {
            r["properties"]["channel"] = json!("telegram");
        }
    }
    let report = drift_audit(&records);
    assert_eq!(
        failures(&report),
        [("drift".into(), "share_submit.properties.channel".into())]
    );
    let detail = &report.checks[0].detail;
    assert!(detail.contains("new values: telegram"), "{detail}");
    assert!(detail.contains("largest shift: \"telegram\""), "{detail}");
}

mod support;

use support::weeks::{self, DAY, Defect, LAST_DAY, findings};
use tollgate_audit::{AuditInput, AuditOptions};

/// The options of a morning audit of the last day.
fn daily_options(dir: &Path, threads: usize, block_size: usize) -> AuditOptions {
    let mut options = AuditOptions::new(
        AuditInput::Dir(dir.to_owned()),
        LAST_DAY + DAY + 600_000_000,
    );
    options.since = Some(LAST_DAY);
    options.until = Some(LAST_DAY + DAY);
    options.threads = threads;
    options.block_size = block_size;
    options
}

fn daily_expectations(dir: &Path) -> Expectations {
    let file = dir.join("expectations.toml");
    std::fs::write(&file, weeks::EXPECTATIONS).unwrap();
    Expectations::load(&file).unwrap()
}

/// Three weeks with `defects` on the last day, audited the morning after.
fn daily(defects: &[Defect]) -> Report {
    let dir = tempfile::tempdir().unwrap();
    weeks::write(dir.path(), &weeks::log(defects));
    let expectations = daily_expectations(dir.path());
    tollgate_audit::audit(&daily_options(dir.path(), 2, 4 << 20), &expectations).unwrap()
}

#[test]
fn the_last_day_of_a_clean_three_week_log_passes_with_its_history_read_before_it() {
    let report = daily(&[]);
    assert!(report.passed(), "{}", report.human());
    let history = report.history.as_ref().unwrap();
    // The volume's two weeks are the longest history any check asks for.
    assert_eq!(history.since, "2026-11-11T00:00:00Z");
    assert_eq!(history.until, "2026-11-25T00:00:00Z");
    assert!(
        history.records > 10 * report.records,
        "{}",
        report.summary()
    );
    let hours = report.volume_hours.as_ref().unwrap();
    assert_eq!(
        (hours.judged, hours.without_history),
        (24, 0),
        "{}",
        report.summary()
    );
    // Every check had something to judge.
    for kind in [
        "not_null",
        "duplicate_rate",
        "reference",
        "drift",
        "volume",
        "quarantine_share",
    ] {
        assert!(
            report.checks.iter().any(|c| c.expectation == kind),
            "{kind}: {}",
            report.human()
        );
    }
    let drift = report
        .checks
        .iter()
        .find(|c| c.expectation == "drift")
        .unwrap();
    assert!(drift.detail.starts_with("PSI"), "{}", drift.detail);
}

#[test]
fn each_defect_of_the_last_day_alone_is_flagged_and_nothing_else() {
    for defect in weeks::ALL {
        let report = daily(&[defect]);
        let failed = failures(&report);
        let (expectation, subject) = weeks::flagged_by(defect);
        assert!(
            failed.contains(&(expectation.into(), subject.into())),
            "{defect:?}: {}",
            report.human()
        );
        assert!(
            failed.iter().all(|(e, _)| e == expectation),
            "{defect:?} flagged more than {expectation}: {}",
            report.human()
        );
        let detail = &report
            .checks
            .iter()
            .find(|c| c.expectation == expectation && c.subject == subject)
            .unwrap()
            .detail;
        let says = match defect {
            Defect::Nulls => "worst segment platform=android app_version=5.2.0",
            Defect::Duplicates => "event_ids logged again",
            Defect::Orphans => "without a share_submit",
            Defect::NewCategory => "new values: telegram",
            Defect::WebDrop => "platform=web",
            Defect::SchemaViolations => "schema_violation at /properties/price rose from 0.",
        };
        assert!(detail.contains(says), "{defect:?}: {detail}");
        match defect {
            Defect::WebDrop => assert!(detail.contains("likely a logging failure"), "{detail}"),
            Defect::SchemaViolations => assert!(detail.contains("in ios 6.2.0"), "{detail}"),
            _ => {}
        }
    }
}

#[test]
fn without_a_window_the_same_defect_is_diluted_over_the_weeks() {
    // What a window is for: over three weeks, a quarter of one release's session_ids
    // for one day is well under the limit.
    let dir = tempfile::tempdir().unwrap();
    weeks::write(dir.path(), &weeks::log(&[Defect::Nulls]));
    let expectations = daily_expectations(dir.path());
    let mut options = daily_options(dir.path(), 1, 4 << 20);
    options.since = None;
    options.until = None;
    let report = tollgate_audit::audit(&options, &expectations).unwrap();
    let nulls = report
        .checks
        .iter()
        .find(|c| c.expectation == "not_null")
        .unwrap();
    assert_eq!(nulls.status, Status::Pass, "{}", report.human());
    assert!(nulls.observed > 0.0, "{}", nulls.detail);
    assert!(report.history.is_none());
}

#[test]
fn parallel_and_serial_audits_of_the_same_log_agree() {
    let dir = tempfile::tempdir().unwrap();
    weeks::write(dir.path(), &weeks::log(&weeks::ALL));
    let expectations = daily_expectations(dir.path());
    let serial =
        tollgate_audit::audit(&daily_options(dir.path(), 1, 64 << 20), &expectations).unwrap();
    assert_eq!(serial.run.threads, 1);
    assert!(failures(&serial).len() >= 6, "{}", serial.human());
    // Small blocks: many merges, results arriving out of order, duplicates and
    // references spanning blocks.
    for (threads, block) in [(3, 64 << 10), (2, 7_777)] {
        let parallel =
            tollgate_audit::audit(&daily_options(dir.path(), threads, block), &expectations)
                .unwrap();
        assert_eq!(parallel.run.threads, threads);
        assert_eq!(
            findings(&parallel),
            findings(&serial),
            "{threads} threads, {block} B blocks"
        );
    }
    // The whole log as well (no window, no history).
    let mut whole = daily_options(dir.path(), 1, 64 << 20);
    (whole.since, whole.until) = (None, None);
    let serial = tollgate_audit::audit(&whole, &expectations).unwrap();
    (whole.threads, whole.block_size) = (3, 10_000);
    assert_eq!(
        findings(&tollgate_audit::audit(&whole, &expectations).unwrap()),
        findings(&serial)
    );
}

#[test]
fn the_daily_command_judges_yesterday_and_says_what_it_read() {
    let dir = tempfile::tempdir().unwrap();
    weeks::write(dir.path(), &weeks::log(&[Defect::SchemaViolations]));
    daily_expectations(dir.path());
    let html = dir.path().join("audit.html");
    let audit = |expectations: &str| {
        Command::new(env!("CARGO_BIN_EXE_tollgate-collector"))
            .args(["audit", "--log"])
            .arg(dir.path())
            .arg("--expectations")
            .arg(dir.path().join(expectations))
            // The morning after the last day: `yesterday` is that day.
            .args([
                "--now",
                &weeks::timestamp(LAST_DAY + DAY + 7 * 3_600_000_000),
            ])
            .args(["--since", "yesterday", "--until", "today", "--threads", "2"])
            .arg("--html")
            .arg(&html)
            .output()
            .unwrap()
    };
    let out = audit("expectations.toml");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an expectation failed: {stdout}"
    );
    assert!(
        stdout.starts_with("judged 2026-11-25T00:00:00Z to 2026-11-26T00:00:00Z: "),
        "{stdout}"
    );
    assert!(
        stdout.contains("history read 2026-11-11T00:00:00Z to 2026-11-25T00:00:00Z"),
        "{stdout}"
    );
    assert!(
        stdout.contains("volume: 24 hours judged, 0 without"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAIL  quarantine_share purchase"),
        "{stdout}"
    );
    let page = std::fs::read_to_string(&html).unwrap();
    for part in [
        "<dt>window judged</dt><dd>2026-11-25T00:00:00Z to 2026-11-26T00:00:00Z",
        "<dt>history read</dt><dd>2026-11-11T00:00:00Z to 2026-11-25T00:00:00Z",
        "FAILED",
        "<h2>Quarantine</h2>",
        "RISE</td><td>purchase</td><td>schema_violation</td><td>/properties/price</td><td>ios 6.2.0</td>",
    ] {
        assert!(page.contains(part), "{part}: {page}");
    }
    assert!(!page.contains("<script"));

    // The same window as spans before --now (31 h and 7 h before 07:00 the day after).
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate-collector"))
        .args(["audit", "--log"])
        .arg(dir.path())
        .arg("--expectations")
        .arg(dir.path().join("expectations.toml"))
        .args([
            "--now",
            &weeks::timestamp(LAST_DAY + DAY + 7 * 3_600_000_000),
        ])
        .args(["--since", "-31h", "--until", "-7h"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("judged 2026-11-25T00:00:00Z to 2026-11-26T00:00:00Z: "),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Could not run (no such expectations file): 2, so that a scheduler can tell.
    let out = audit("missing.toml");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
