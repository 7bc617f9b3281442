//! `tollgate-collector replay`: quarantined events through today's pipeline, each
//! logged at most once.
//!
//! The quarantine is read in order (segment files, or the quarantine topic); the
//! records a filter selects are grouped by source and API, up to `--batch` per append
//! (each keeps its own `timestamp_server`), and passed to the pipeline as a
//! [`Replay`]: today's schemas judge them, their privacy policy is not applied twice
//! (only consent and the `event_id` check are judged again), and what is now valid is
//! claimed in the idempotency store under its event id, appended to the events log
//! with `replayed_at` and `replay_of`, and committed. The quarantine is never
//! rewritten; what is still invalid stays there, counted by reason.
//!
//! Exactly once, with a ledger in the state directory (`replay.ndjson`): before a
//! group is appended its quarantine ids and claim keys are written and synced as an
//! *intent*; once the append is durable and the claims committed, the ids logged are
//! written as *done*. A later run skips what is done. A run that stopped between the
//! two (a crash, SIGKILL) left an intent without done: the next run first looks for
//! those ids' records in the events log, marks what it finds as done and commits its
//! claims, and releases the claims of the rest, which are replayed again. The claims
//! also make an event that an SDK retry delivered in the meantime a duplicate.

use std::collections::{BTreeMap, HashSet};
use std::io::Write as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tollgate_event::Api;
use tollgate_event::wire::Status;

use crate::ingest::{DecodeLimits, Decoded, Item, Replay, ReplayItem, RequestInfo, decode};
use crate::rules::Rules;
use crate::{Collector, ingest};

/// Where the quarantine is read from.
#[derive(Debug, Clone)]
pub enum QuarantineInput {
    /// A `quarantine/` directory of segment files.
    Dir(PathBuf),
    /// The quarantine topic; the events topic is read to recover an interrupted run.
    Kafka(tollgate_log::TopicSource),
}

/// What to replay, and how.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub input: QuarantineInput,
    /// The collector's events directory, read to recover an interrupted run (file
    /// sink).
    pub events_dir: PathBuf,
    /// Only records quarantined at or after / before these times.
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    pub event: Option<String>,
    /// Only records rejected with this error code (`schema_violation`, …).
    pub code: Option<String>,
    /// Only report what would be accepted; claim and write nothing.
    pub dry_run: bool,
    /// Holds the ledger.
    pub state_dir: PathBuf,
    /// Most events per append.
    pub batch: usize,
    /// Stop after this many appends without recording them as done: the state a crash
    /// leaves behind (for tests of the recovery).
    pub stop_after_appends: Option<usize>,
}

/// What a replay did, per event name and in total.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct ReplayReport {
    /// Quarantine records read, and those the filters selected.
    pub scanned: u64,
    pub selected: u64,
    /// Selected, but logged by an earlier replay.
    pub already_replayed: u64,
    /// From an interrupted earlier run: found in the events log (now recorded as
    /// done), and not found (their claims released; replayed by this run).
    pub recovered: u64,
    pub released: u64,
    /// Selected records that cannot be replayed, by reason.
    pub not_replayable: BTreeMap<String, u64>,
    pub totals: Outcomes,
    pub by_event: BTreeMap<String, Outcomes>,
    pub dry_run: bool,
}

/// What became of replayed events.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct Outcomes {
    /// Logged now (with `--dry-run`: would be).
    pub accepted: u64,
    /// Already logged (an SDK retry got through, or another replay).
    pub duplicate: u64,
    /// Being written by someone else right now; run again.
    pub retry: u64,
    /// Still invalid (they stay in the quarantine), or dropped for consent, by code.
    pub rejected: BTreeMap<String, u64>,
}

impl Outcomes {
    fn add(&mut self, status: Status, code: Option<&str>) {
        match status {
            Status::Accepted => self.accepted += 1,
            Status::Duplicate => self.duplicate += 1,
            Status::Retry => self.retry += 1,
            Status::Rejected => {
                *self
                    .rejected
                    .entry(code.unwrap_or("unknown").to_owned())
                    .or_default() += 1
            }
        }
    }
}

impl ReplayReport {
    fn count(&mut self, event: &str, status: Status, code: Option<&str>) {
        self.totals.add(status, code);
        self.by_event
            .entry(event.to_owned())
            .or_default()
            .add(status, code);
    }

    /// A summary for a terminal.
    pub fn human(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let verb = if self.dry_run {
            "would be accepted"
        } else {
            "accepted"
        };
        let _ = writeln!(
            out,
            "{} quarantine records read, {} selected, {} replayed before",
            self.scanned, self.selected, self.already_replayed
        );
        if self.recovered + self.released > 0 {
            let _ = writeln!(
                out,
                "an interrupted run: {} of its events were logged (recorded now), {} were not (replayed again)",
                self.recovered, self.released
            );
        }
        for (reason, n) in &self.not_replayable {
            let _ = writeln!(out, "not replayable ({reason}): {n}");
        }
        for (event, o) in std::iter::once((&"total".to_owned(), &self.totals)).chain(&self.by_event)
        {
            let rejected: Vec<String> =
                o.rejected.iter().map(|(c, n)| format!("{c} {n}")).collect();
            let _ = writeln!(
                out,
                "{event}: {} {verb}, {} duplicate, {} retry, still rejected: {}",
                o.accepted,
                o.duplicate,
                o.retry,
                if rejected.is_empty() {
                    "none".to_owned()
                } else {
                    rejected.join(", ")
                }
            );
        }
        out
    }
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("the replay ledger {}: {source}", .path.display())]
    Ledger {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the quarantine: {0}")]
    Read(String),
    #[error(
        "appending to the log failed ({0}); nothing of that group was acknowledged, run the replay again"
    )]
    Pipeline(String),
    #[error(
        "the idempotency store failed while settling an interrupted run ({0}); run the replay again"
    )]
    Store(String),
}

/// A line of the ledger.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Entry {
    /// A group about to be appended: its quarantine ids and their claim keys
    /// (`None`: not claimed), under the claim token `batch`.
    Intent {
        batch: String,
        ids: Vec<String>,
        keys: Vec<Option<String>>,
    },
    /// The group's ids now in the events log (accepted, or found there).
    Done { batch: String, logged: Vec<String> },
}

struct Ledger {
    path: PathBuf,
    /// `None` for a dry run, which writes nothing.
    file: Option<std::fs::File>,
    done: HashSet<String>,
    /// Intents without done, in order.
    open: Vec<Entry>,
}

impl Ledger {
    fn open(dir: &std::path::Path, writable: bool) -> Result<Ledger, ReplayError> {
        let path = dir.join("replay.ndjson");
        let io = |source| ReplayError::Ledger {
            path: path.clone(),
            source,
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(e)),
        };
        let mut done = HashSet::new();
        let mut open: Vec<Entry> = Vec::new();
        // A torn last line (a crash mid-write) is ignored: its intent was never acted
        // on, or its done is recovered from the log.
        for entry in text
            .lines()
            .filter_map(|l| serde_json::from_str::<Entry>(l).ok())
        {
            match entry {
                Entry::Intent { .. } => open.push(entry),
                Entry::Done { batch, logged } => {
                    open.retain(|e| !matches!(e, Entry::Intent { batch: b, .. } if *b == batch));
                    done.extend(logged);
                }
            }
        }
        let file = if writable {
            std::fs::create_dir_all(dir).map_err(io)?;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io)?;
            Some(file)
        } else {
            None
        };
        Ok(Ledger {
            path,
            file,
            done,
            open,
        })
    }

    fn write(&mut self, entry: &Entry) -> Result<(), ReplayError> {
        let Some(file) = &mut self.file else {
            return Ok(());
        };
        let mut line = serde_json::to_vec(entry).expect("entries serialize");
        line.push(b'\n');
        file.write_all(&line)
            .and_then(|()| file.sync_data())
            .map_err(|source| ReplayError::Ledger {
                path: self.path.clone(),
                source,
            })?;
        if let Entry::Done { logged, .. } = entry {
            self.done.extend(logged.iter().cloned());
        }
        Ok(())
    }
}

/// One selected quarantine record, ready to replay.
struct Selected {
    id: String,
    event_name: String,
    /// The event's JSON text as quarantined.
    raw: Box<serde_json::value::RawValue>,
    item: ReplayItem,
}

/// A quarantine record as replay reads it: the event stays JSON text (it is decoded
/// once, by the pipeline's own decoder), so nothing is parsed into a tree and written
/// back.
#[derive(Deserialize)]
struct Quarantined<'a> {
    #[serde(with = "tollgate_event::timefmt")]
    timestamp_server: OffsetDateTime,
    #[serde(borrow)]
    source: std::borrow::Cow<'a, str>,
    api: Api,
    #[serde(borrow)]
    request_id: std::borrow::Cow<'a, str>,
    index: usize,
    error: QuarantinedError<'a>,
    #[serde(borrow)]
    event: &'a serde_json::value::RawValue,
    #[serde(default, deserialize_with = "present", borrow)]
    privacy_policy: Option<Option<std::borrow::Cow<'a, str>>>,
    #[serde(default, borrow)]
    region: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    privacy_key: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct QuarantinedError<'a> {
    #[serde(borrow)]
    code: std::borrow::Cow<'a, str>,
}

/// What replay needs to know inside a quarantined event.
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(default, borrow)]
    event_name: Option<std::borrow::Cow<'a, str>>,
    /// Bytes that were not JSON, kept only as a length and a digest.
    #[serde(default)]
    unparsed: Option<serde::de::IgnoredAny>,
}

/// A field that is present, as `Some` of its value (`null` included).
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// Consecutive records of one source and API, replayed together.
struct Group {
    source: String,
    api: Api,
    records: Vec<Selected>,
}

impl Collector {
    /// Replays the quarantine as `options` say; see the module docs.
    ///
    /// # Errors
    /// The ledger cannot be written, the quarantine cannot be read, or the log failed
    /// (what was not acknowledged is replayed by the next run).
    pub async fn replay(&self, options: &ReplayOptions) -> Result<ReplayReport, ReplayError> {
        let rules = self.app.rules.load_full();
        let mut report = ReplayReport {
            dry_run: options.dry_run,
            ..ReplayReport::default()
        };
        let mut ledger = Ledger::open(&options.state_dir, !options.dry_run)?;
        if !options.dry_run {
            self.recover(&mut ledger, options, &mut report).await?;
        }
        // The quarantine is read on a blocking thread, a group at a time, while the
        // groups before are replayed: memory stays bounded by a few groups.
        let (tx, mut groups) = tokio::sync::mpsc::channel::<Group>(2);
        let reader = {
            let (options, rules, done) = (options.clone(), rules.clone(), ledger.done.clone());
            tokio::task::spawn_blocking(move || {
                let mut read = ReplayReport::default();
                select(&options, &rules, &done, &mut read, |group| {
                    // A replay that stopped early no longer listens.
                    let _ = tx.blocking_send(group);
                })
                .map(|()| read)
            })
        };
        let limits = DecodeLimits {
            max_event_bytes: self.app.max_event_bytes,
            max_events: usize::MAX,
            platforms: &self.app.platforms,
        };
        let mut appends = 0;
        while let Some(group) = groups.recv().await {
            let Some(source) = rules.sources.by_id(&group.source).cloned() else {
                *report
                    .not_replayable
                    .entry("unknown_source".into())
                    .or_default() += group.records.len() as u64;
                continue;
            };
            for chunk in group.records.chunks(options.batch.max(1)) {
                let mut body = br#"{"events":["#.to_vec();
                for (i, selected) in chunk.iter().enumerate() {
                    if i > 0 {
                        body.push(b',');
                    }
                    body.extend_from_slice(selected.raw.get().as_bytes());
                }
                body.extend_from_slice(b"]}");
                let decoded = match decode::native_json(&body, &limits) {
                    Ok(decoded) => versioned_as(group.api, decoded),
                    Err(e) => {
                        *report
                            .not_replayable
                            .entry(e.code().to_owned())
                            .or_default() += chunk.len() as u64;
                        continue;
                    }
                };
                let batch = format!("replay-{}", uuid::Uuid::now_v7());
                let replay = Replay {
                    at: self.app.clock.now(),
                    items: chunk.iter().map(|s| s.item.clone()).collect(),
                };
                let request = RequestInfo {
                    // Each item's own time is in its `ReplayItem`.
                    received_at: chunk[0].item.received_at,
                    request_id: &batch,
                    edge_country: None,
                    shadow: false,
                    replay: Some(&replay),
                };
                let statuses: Vec<(Status, Option<String>)> = if options.dry_run {
                    self.app
                        .pipeline
                        .judge(&rules, &source, group.api, decoded, request)
                        .into_iter()
                        .map(|judged| match judged {
                            Ok(()) => (Status::Accepted, None),
                            Err(e) => (Status::Rejected, Some(e.code.as_str().to_owned())),
                        })
                        .collect()
                } else {
                    let keys = claim_keys(&source.id, &decoded);
                    ledger.write(&Entry::Intent {
                        batch: batch.clone(),
                        ids: chunk.iter().map(|s| s.id.clone()).collect(),
                        keys,
                    })?;
                    let outcome = self
                        .app
                        .pipeline
                        .process(&rules, &source, group.api, decoded, request)
                        .await
                        .map_err(|e| ReplayError::Pipeline(e.code().to_owned()))?;
                    appends += 1;
                    if options.stop_after_appends.is_some_and(|n| appends >= n) {
                        return Ok(report);
                    }
                    let statuses: Vec<_> = outcome
                        .answer
                        .results
                        .into_iter()
                        .map(|r| (r.status, r.error.map(|e| e.code.as_str().to_owned())))
                        .collect();
                    let logged = chunk
                        .iter()
                        .zip(&statuses)
                        .filter(|(_, (status, _))| {
                            matches!(status, Status::Accepted | Status::Duplicate)
                        })
                        .map(|(s, _)| s.id.clone())
                        .collect();
                    ledger.write(&Entry::Done { batch, logged })?;
                    statuses
                };
                for (selected, (status, code)) in chunk.iter().zip(statuses) {
                    report.count(&selected.event_name, status, code.as_deref());
                }
            }
        }
        let read = reader
            .await
            .map_err(|e| ReplayError::Read(e.to_string()))??;
        report.scanned = read.scanned;
        report.selected = read.selected;
        report.already_replayed = read.already_replayed;
        for (reason, n) in read.not_replayable {
            *report.not_replayable.entry(reason).or_default() += n;
        }
        Ok(report)
    }

    /// Settles the intents an interrupted run left: ids found in the events log are
    /// recorded as done and their claims committed; the claims of the others are
    /// released, so this run replays them.
    async fn recover(
        &self,
        ledger: &mut Ledger,
        options: &ReplayOptions,
        report: &mut ReplayReport,
    ) -> Result<(), ReplayError> {
        if ledger.open.is_empty() {
            return Ok(());
        }
        let wanted: HashSet<String> = ledger
            .open
            .iter()
            .flat_map(|e| match e {
                Entry::Intent { ids, .. } => ids.clone(),
                Entry::Done { .. } => Vec::new(),
            })
            .collect();
        let mut found = HashSet::new();
        let mut look = |line: &str| {
            #[derive(Deserialize)]
            struct Replayed {
                replay_of: Option<String>,
            }
            if line.contains("\"replay_of\"")
                && let Ok(Replayed {
                    replay_of: Some(id),
                }) = serde_json::from_str(line)
                && wanted.contains(&id)
            {
                found.insert(id);
            }
        };
        match &options.input {
            QuarantineInput::Dir(_) => {
                tollgate_log::segments::for_each_line(&options.events_dir, &mut look).map_err(
                    |e| ReplayError::Read(format!("{}: {e}", options.events_dir.display())),
                )?
            }
            QuarantineInput::Kafka(source) => {
                source
                    .lines(&source.topic, &mut look)
                    .map_err(|e| ReplayError::Read(e.to_string()))?;
            }
        }
        let store = &self.app.pipeline.store;
        for entry in std::mem::take(&mut ledger.open) {
            let Entry::Intent { batch, ids, keys } = entry else {
                continue;
            };
            let (mut commit, mut release) = (Vec::new(), Vec::new());
            let mut logged = Vec::new();
            for (id, key) in ids.into_iter().zip(keys) {
                let is_logged = found.contains(&id);
                if is_logged {
                    logged.push(id);
                    report.recovered += 1;
                } else {
                    report.released += 1;
                }
                if let Some(key) = key {
                    if is_logged { &mut commit } else { &mut release }.push(key);
                }
            }
            // Settled in the store before the ledger says so: if the store fails, the
            // intent stays open and the next run settles it again.
            let store_error = |e: crate::dedupe::StoreError| ReplayError::Store(e.to_string());
            store.commit(&commit, &batch).await.map_err(store_error)?;
            store.release(&release, &batch).await.map_err(store_error)?;
            ledger.write(&Entry::Done { batch, logged })?;
        }
        Ok(())
    }
}

/// The claim keys the pipeline takes for these events, in item order.
fn claim_keys(source: &str, decoded: &Decoded) -> Vec<Option<String>> {
    decoded
        .items
        .iter()
        .map(|item| match item {
            Item::Event { event, .. } => Some(ingest::claim_key(source, &event.event_id)),
            Item::Invalid { .. } => None,
        })
        .collect()
}

/// Native events name their schema version; Segment and PostHog events did not (the
/// newest matching version is taken again); Snowplow events did when they had one.
fn versioned_as(api: Api, mut decoded: Decoded) -> Decoded {
    for item in &mut decoded.items {
        if let Item::Event { versioned, .. } = item {
            *versioned = matches!(api, Api::Native | Api::Snowplow);
        }
    }
    decoded
}

/// Reads the quarantine and hands `emit` what the filters select and can be replayed,
/// in groups of one source and API of at most `options.batch` records.
fn select(
    options: &ReplayOptions,
    rules: &Rules,
    done: &HashSet<String>,
    report: &mut ReplayReport,
    mut emit: impl FnMut(Group),
) -> Result<(), ReplayError> {
    let mut group: Option<Group> = None;
    let skip = |reason: &str, report: &mut ReplayReport| {
        *report.not_replayable.entry(reason.to_owned()).or_default() += 1;
    };
    let mut take = |line: &str| {
        report.scanned += 1;
        let Ok(record) = serde_json::from_str::<Quarantined<'_>>(line) else {
            skip("unreadable_record", report);
            return;
        };
        // Not an object (raw text that was not JSON), or `{"unparsed": …}`.
        let Ok(peek) = serde_json::from_str::<Peek<'_>>(record.event.get()) else {
            skip("not_json", report);
            return;
        };
        let event_name = peek.event_name.as_deref().unwrap_or("");
        if options.since.is_some_and(|t| record.timestamp_server < t)
            || options.until.is_some_and(|t| record.timestamp_server >= t)
            || options.event.as_ref().is_some_and(|e| e != event_name)
            || options
                .code
                .as_ref()
                .is_some_and(|c| *c != record.error.code)
        {
            return;
        }
        report.selected += 1;
        let id = format!("{}/{}", record.request_id, record.index);
        if done.contains(&id) {
            report.already_replayed += 1;
            return;
        }
        if peek.unparsed.is_some() {
            skip("not_json", report);
            return;
        }
        let policy = match (&rules.privacy, &record.privacy_policy) {
            (None, Some(Some(_))) => return skip("privacy_policy_gone", report),
            (None, _) => None,
            (Some(privacy), Some(Some(policy))) => {
                let region = record.region.as_deref().unwrap_or_default();
                match privacy.policy_of(region, policy) {
                    Some(policy) => Some(policy.clone()),
                    None => return skip("privacy_policy_changed", report),
                }
            }
            // Quarantined without a policy (or before the records said), while one is
            // in force now: the copy was never made safe under it.
            (Some(_), _) => return skip("privacy_policy_unknown", report),
        };
        let item = ReplayItem {
            of: id.clone(),
            received_at: record.timestamp_server,
            policy,
            key: record.privacy_key.as_deref().map(str::to_owned),
        };
        let selected = Selected {
            id,
            event_name: event_name.to_owned(),
            raw: record.event.to_owned(),
            item,
        };
        let same = group
            .as_ref()
            .is_some_and(|g| g.source == record.source && g.api == record.api);
        if !same && let Some(full) = group.take() {
            emit(full);
        }
        let g = group.get_or_insert_with(|| Group {
            source: record.source.into_owned(),
            api: record.api,
            records: Vec::new(),
        });
        g.records.push(selected);
        if g.records.len() >= options.batch.max(1)
            && let Some(full) = group.take()
        {
            emit(full);
        }
    };
    match &options.input {
        QuarantineInput::Dir(dir) => tollgate_log::segments::for_each_line(dir, &mut take)
            .map_err(|e| ReplayError::Read(format!("{}: {e}", dir.display())))?,
        QuarantineInput::Kafka(source) => {
            let topic = source
                .quarantine_topic
                .clone()
                .ok_or_else(|| ReplayError::Read("no quarantine topic".into()))?;
            source
                .lines(&topic, &mut take)
                .map_err(|e| ReplayError::Read(e.to_string()))?;
        }
    }
    if let Some(last) = group {
        emit(last);
    }
    Ok(())
}

/// A log for dry runs: they append nothing, so they take no lock.
pub struct NoLog;

#[async_trait::async_trait]
impl crate::sink::EventLog for NoLog {
    async fn append(&self, _: crate::sink::AppendBatch) -> Result<(), crate::sink::LogError> {
        Err(crate::sink::LogError::Closed)
    }
    fn ready(&self) -> bool {
        false
    }
    async fn close(&self) {}
}
