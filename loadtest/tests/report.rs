//! The launch report from a run of the real binary against a real collector on
//! 127.0.0.1: the page is well-formed, draws every second, shows the collector's own
//! series, has no script and no external asset, and its verdict is green for a clean
//! log and red once the log lost an event.

use std::path::Path;
use std::process::Command;

use tokio::sync::oneshot;
use tollgate_collector::Collector;
use tollgate_collector::config::Config;

const BIN: &str = env!("CARGO_BIN_EXE_tollgate-loadtest");

/// A collector on its embedded defaults in `data`, with its admin listener: (public URL,
/// admin URL, stop, task).
async fn collector(
    data: &Path,
) -> (
    String,
    String,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let mut config = Config::embedded();
    config.log.data_dir = data.to_owned();
    config.schemas.dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/schemas");
    let collector = Collector::build(config).unwrap();
    let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let urls = (
        format!("http://{}", public.local_addr().unwrap()),
        format!("http://{}", admin.local_addr().unwrap()),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(collector.run(public, Some(admin), async move {
        let _ = stopped.await;
    }));
    (urls.0, urls.1, stop, task)
}

fn loadtest(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// The page, parsed: it must be well-formed.
fn parse(page: &str) -> roxmltree::Document<'_> {
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    roxmltree::Document::parse_with_options(page, options)
        .unwrap_or_else(|e| panic!("not well-formed: {e}"))
}

/// How many points each line of the chart in `section` has.
fn points(page: &roxmltree::Document, section: &str) -> Vec<usize> {
    let section = page
        .descendants()
        .find(|n| n.has_tag_name("section") && n.attribute("id") == Some(section))
        .unwrap_or_else(|| panic!("no section {section}"));
    let charts = section
        .descendants()
        .filter(|n| n.has_tag_name("figure"))
        .count();
    assert!(charts >= 1, "{section:?} has a chart");
    section
        .descendants()
        .filter(|n| n.tag_name().name() == "polyline")
        .map(|n| n.attribute("points").unwrap().split_whitespace().count())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_renders_one_page_green_when_clean_and_red_when_an_event_was_lost() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (url, admin, stop, task) = collector(&data).await;
    let scrape = format!("{admin}/metrics");
    let out = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || {
            loadtest(
                &[
                    "run",
                    "--target",
                    &url,
                    "--rate",
                    "40",
                    "--duration",
                    "4s",
                    "--batch",
                    "10",
                    "--seed",
                    "7",
                    "--manifest",
                    "run.ndjson",
                    "--out",
                    "run.json",
                    "--scrape",
                    &scrape,
                    "--max-p99",
                    "5s",
                    "--max-error-rate",
                    "0.5",
                ],
                &dir,
            )
        }
    })
    .await
    .unwrap();
    stop.send(()).unwrap();
    task.await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("run.json")).unwrap()).unwrap();
    let seconds = run["series"].as_array().unwrap().len();
    assert!(seconds >= 4, "{seconds} seconds");

    let data_arg = data.to_str().unwrap();
    let verify = || {
        loadtest(
            &[
                "verify",
                "--manifest",
                "run.ndjson",
                "--log",
                data_arg,
                "--json",
                "verify.json",
            ],
            dir.path(),
        )
    };
    let verify_clean = verify();
    assert!(
        verify_clean.status.success(),
        "{}",
        String::from_utf8_lossy(&verify_clean.stdout)
    );
    let report = |html: &str| {
        let out = loadtest(
            &[
                "report",
                "run.json",
                "--verify",
                "verify.json",
                "--html",
                html,
            ],
            dir.path(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(dir.path().join(html)).unwrap()
    };
    let page = report("clean.html");
    let doc = parse(&page);
    // One chart per section, one point per second on every per-second line.
    for section in ["load", "errors", "latency"] {
        let lines = points(&doc, section);
        assert!(!lines.is_empty(), "{section}");
        // Latency lines skip seconds without answers; the others draw every second.
        if section != "latency" {
            assert!(
                lines.iter().all(|n| *n == seconds),
                "{section}: {lines:?} vs {seconds}"
            );
        } else {
            assert!(
                lines.iter().all(|n| *n >= seconds - 1),
                "{section}: {lines:?}"
            );
        }
    }
    assert!(points(&doc, "distribution")[0] >= 5, "a percentile plot");
    // The collector's own view, scraped during the run.
    let collector = points(&doc, "collector");
    assert!(!collector.is_empty(), "scraped series are drawn");
    assert!(
        page.contains("log_queue_depth"),
        "the queue depth is one of them"
    );
    // The open model's target rate beside the achieved one.
    assert!(page.contains("data-line=\"target requests/s\""));
    // Green, with the gates that were set.
    let verdict = doc
        .descendants()
        .find(|n| n.attribute("id") == Some("verdict"))
        .unwrap();
    assert_eq!(verdict.attribute("class"), Some("verdict pass"), "{page}");
    assert!(page.contains("gate max_p99"), "{page}");
    // Self-contained: no script, nothing fetched.
    assert!(!page.contains("<script"));
    for node in doc.descendants() {
        for attribute in ["href", "src"] {
            assert!(
                node.attribute(attribute).is_none(),
                "{attribute} in {node:?}"
            );
        }
    }
    assert!(!page.contains("url("));

    // Lose one acknowledged event: cut the last record of the log.
    let events = data.join("events");
    let mut segments: Vec<_> = std::fs::read_dir(&events)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    let last = segments.last().unwrap();
    let text = std::fs::read_to_string(last).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.pop();
    std::fs::write(last, format!("{}\n", lines.join("\n"))).unwrap();
    assert_eq!(verify().status.code(), Some(1));
    let page = report("damaged.html");
    let doc = parse(&page);
    let verdict = doc
        .descendants()
        .find(|n| n.attribute("id") == Some("verdict"))
        .unwrap();
    assert_eq!(verdict.attribute("class"), Some("verdict fail"));
    assert!(page.contains("lost <span class=\"bad\">1</span>"), "{page}");
}

#[test]
fn compare_refuses_different_seeds_and_fails_on_a_declared_regression() {
    use tollgate_loadtest::report::{Latency, Report, RunInfo, Second};
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, seed: u64, p99_ms: u64| {
        let mut report = Report::new(
            &RunInfo {
                run_id: name.into(),
                target: "http://127.0.0.1:1".into(),
                model: "open:50/s".into(),
            },
            std::time::Duration::from_secs(30),
            &hdrhistogram::Histogram::new(3).unwrap(),
            Default::default(),
        );
        report.seed = seed;
        report.series = (0..30u64)
            .map(|i| Second {
                requests: 50,
                events: 1000 + i % 3,
                latency: Some(Latency {
                    p50_us: 1000,
                    p99_us: p99_ms * 1000 + (i % 5) * 50,
                    p999_us: p99_ms * 1200,
                    ..Latency::default()
                }),
                ..Second::default()
            })
            .collect();
        std::fs::write(dir.path().join(name), serde_json::to_vec(&report).unwrap()).unwrap();
    };
    write("old.json", 1, 5);
    write("new.json", 1, 7);
    write("other.json", 2, 5);
    let compare = |args: &[&str]| {
        let mut all = vec!["compare"];
        all.extend_from_slice(args);
        loadtest(&all, dir.path())
    };
    let out = compare(&[
        "old.json",
        "new.json",
        "--max-p99-regression",
        "10%",
        "--html",
        "c.html",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("p99 latency (ms)"), "{stdout}");
    assert!(stdout.contains("WORSE"), "{stdout}");
    assert!(
        stdout.contains("regression threshold crossed: p99 latency rose"),
        "{stdout}"
    );
    parse(&std::fs::read_to_string(dir.path().join("c.html")).unwrap());
    // No threshold declared: reported, not failed.
    assert_eq!(compare(&["old.json", "new.json"]).status.code(), Some(0));
    let out = compare(&["old.json", "other.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("seed"));
    assert_eq!(
        compare(&["old.json", "other.json", "--force"])
            .status
            .code(),
        Some(0)
    );
}
