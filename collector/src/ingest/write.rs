//! Stage 3, the write: accepted events and quarantine records serialised as NDJSON,
//! appended to the log in one batch (group-committed with other requests); then the
//! claims of what is durable are committed, the others released.

use std::borrow::Cow;
use std::sync::Arc;

use tollgate_event::{Api, Event, QuarantineRecord, Record, SharedTimes};

use super::claim::split_delivered;
use super::slot::Slot;
use super::{COLLECTOR_VERSION, Pipeline, Raw, RequestInfo, Source};
use crate::error::ApiError;
use crate::privacy::Privacy;
use crate::rules::Rules;
use crate::sink::{AppendBatch, BatchMeta, LogError, PartitionKey, RecordMeta};

/// The bytes reserved per event for a request's records.
const RECORD_BYTES: usize = 1024;

/// When a request's commit must have landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Commit {
    /// Before the request is answered.
    Await,
    /// Queued on the store's connection before the request is answered, landing after
    /// it; tracked, so that a shutdown waits for it.
    InBackground,
}

impl Pipeline {
    /// Appends the request's records and settles its claims.
    ///
    /// # Errors
    /// `log_queue_full`, `log_unavailable` or `shutting_down` when the append failed;
    /// claims of records a broker acknowledged all the same are committed (the
    /// client's retry then logs only the rest), every other claim is released.
    pub(super) async fn write(
        self: &Arc<Self>,
        batch: AppendBatch,
        claimed_records: &[bool],
        claimed: Vec<String>,
        request_id: &str,
        commit: Commit,
    ) -> Result<(), ApiError> {
        if !batch.is_empty()
            && let Err(e) = self.log.append(batch).await
        {
            let (commit, release) = match &e {
                LogError::Delivery {
                    delivered_events, ..
                } => split_delivered(claimed_records, claimed, delivered_events),
                _ => (Vec::new(), claimed),
            };
            self.commit(&commit, request_id, "for delivered records")
                .await;
            self.release(&release, request_id).await;
            return Err(match e {
                LogError::QueueFull => ApiError::LogQueueFull,
                LogError::Closed => ApiError::ShuttingDown,
                LogError::Io(_) | LogError::Delivery { .. } => ApiError::LogUnavailable,
            });
        }
        if commit == Commit::InBackground {
            // The answer does not depend on the commit (a failed one is only logged), so
            // it does not wait for the commit's round trip. Polled once here, the commit
            // is queued on the store's connection before the answer leaves (unless the
            // task's scheduling budget is spent), so a resend after the answer reaches
            // the store behind it and finds the keys done.
            let pipeline = self.clone();
            let request_id = request_id.to_owned();
            let mut commit = Box::pin(self.tasks.track_future(async move {
                pipeline
                    .commit(&claimed, &request_id, "after a durable write")
                    .await;
            }));
            if futures_util::poll!(&mut commit).is_pending() {
                tokio::spawn(commit);
            }
        } else {
            self.commit(&claimed, request_id, "after a durable write")
                .await;
        }
        Ok(())
    }

    /// Serialises accepted records and quarantine records as NDJSON.
    pub(super) fn serialize(
        &self,
        rules: &Rules,
        slots: &[Slot],
        source: &Source,
        api: Api,
        request: RequestInfo<'_>,
    ) -> AppendBatch {
        let RequestInfo {
            received_at,
            request_id,
            replay,
            ..
        } = request;
        let replayed = |index: usize| replay.map(|r| &r.items[index]);
        let mut batch = AppendBatch::default();
        // A record is the event plus ~450 bytes the server adds, about 1 KiB for a
        // typical event: reserved at once, the buffer is not copied over and over as it
        // grows (that was 1–2 % of the collector's CPU at saturation).
        batch.events.reserve(slots.len() * RECORD_BYTES);
        let privacy = rules.privacy.as_ref();
        let key_field = self.log.record_meta();
        let mut meta = key_field.map(|_| BatchMeta {
            source: source.id.clone(),
            ..BatchMeta::default()
        });
        let mut shared = SharedTimes::default();
        for (index, slot) in slots.iter().enumerate() {
            match slot {
                Slot::Valid {
                    event,
                    sent_at,
                    timing,
                    dedupe,
                    policy,
                    previous,
                    ..
                } => {
                    let record = Record {
                        event: Cow::Borrowed(event),
                        timestamp_server: replayed(index).map_or(received_at, |i| i.received_at),
                        sent_at: *sent_at,
                        clock_skew_ms: timing.clock_skew_ms,
                        timestamp_derived: timing.timestamp_derived,
                        lateness_ms: timing.lateness_ms,
                        arrival: timing.arrival,
                        source: Cow::Borrowed(&source.id),
                        region: Cow::Borrowed(policy.as_ref().map_or(&self.region, |p| &p.region)),
                        privacy_policy: policy.as_ref().map(|p| Cow::Borrowed(p.id.as_str())),
                        privacy_key: match replayed(index) {
                            Some(item) => item.key.as_deref().map(Cow::Borrowed),
                            None => privacy.map(|p| Cow::Borrowed(p.key_id())),
                        },
                        pseudonyms_previous: previous.clone(),
                        dedupe: *dedupe,
                        api,
                        request_id: Cow::Borrowed(request_id),
                        collector_version: Cow::Borrowed(COLLECTOR_VERSION),
                        schema_set: Some(Cow::Borrowed(rules.schemas.id())),
                        replayed_at: replay.map(|r| r.at),
                        replay_of: replayed(index).map(|item| Cow::Borrowed(item.of.as_str())),
                    };
                    record.write_json_with(&mut batch.events, &mut shared);
                    batch.events.push(b'\n');
                    if let (Some(meta), Some(key_field)) = (&mut meta, key_field) {
                        meta.events.push(RecordMeta {
                            end: batch.events.len(),
                            key: partition_key(event, key_field).map(str::to_owned),
                            event_name: Some(event.event_name.clone()),
                            schema_version: Some(event.schema_version),
                            region: Some(record.region.clone().into_owned()),
                            error_code: None,
                        });
                    }
                }
                // A replay leaves the quarantine record as it is: nothing is added.
                Slot::Rejected { .. } if replay.is_some() => {}
                Slot::Rejected { error, raw, policy } => {
                    let opaque;
                    let event = match raw {
                        Raw::Object(value) => value,
                        Raw::Opaque { bytes, sha256 } => {
                            opaque = opaque_view(privacy, *bytes, sha256);
                            &opaque
                        }
                    };
                    let record = QuarantineRecord {
                        timestamp_server: received_at,
                        source: Cow::Borrowed(&source.id),
                        api,
                        request_id: Cow::Borrowed(request_id),
                        index,
                        error: error.clone(),
                        event: Cow::Borrowed(event),
                        collector_version: Cow::Borrowed(COLLECTOR_VERSION),
                        privacy_policy: Some(policy.as_ref().map(|p| Cow::Borrowed(p.id.as_str()))),
                        region: policy.as_ref().map(|p| Cow::Borrowed(p.region.as_str())),
                        privacy_key: policy
                            .as_ref()
                            .and(privacy)
                            .map(|p| Cow::Borrowed(p.key_id())),
                    };
                    serde_json::to_writer(&mut batch.quarantine, &record)
                        .expect("records serialize into a Vec");
                    batch.quarantine.push(b'\n');
                    if let Some(meta) = &mut meta {
                        meta.quarantine.push(RecordMeta {
                            end: batch.quarantine.len(),
                            key: None,
                            event_name: raw.text("event_name").map(str::to_owned),
                            schema_version: None,
                            region: None,
                            error_code: Some(error.code.as_str()),
                        });
                    }
                }
                Slot::Duplicate(_) | Slot::Dropped { .. } => {}
            }
        }
        batch.meta = meta;
        batch
    }
}

/// What becomes of one accepted event's record.
pub(super) enum Rewrite {
    Keep,
    /// Its claim did not hold: not logged.
    Drop,
    /// Its claim could not be checked (`fail_open`): `dedupe` reads `unchecked`.
    Unchecked,
}

/// Rebuilds a batch's accepted records, each as `action` says (by its position among
/// them), with their routing facts. Rare: only when a claim did not hold. A record is
/// one line: JSON strings carry newlines escaped.
pub(super) fn rewrite_records(batch: &mut AppendBatch, action: impl Fn(usize) -> Rewrite) {
    let old = std::mem::take(&mut batch.events);
    let mut meta = batch
        .meta
        .as_mut()
        .map(|m| std::mem::take(&mut m.events).into_iter());
    let (mut events, mut kept) = (Vec::with_capacity(old.len()), Vec::new());
    for (index, record) in old.split_inclusive(|b| *b == b'\n').enumerate() {
        let routing = meta.as_mut().and_then(Iterator::next);
        match action(index) {
            Rewrite::Drop => continue,
            Rewrite::Keep => events.extend_from_slice(record),
            Rewrite::Unchecked => unchecked(record, &mut events),
        }
        if let Some(mut routing) = routing {
            routing.end = events.len();
            kept.push(routing);
        }
    }
    batch.events = events;
    if let Some(meta) = &mut batch.meta {
        meta.events = kept;
    }
}

/// Copies `record` into `out` with its `dedupe` field reading `unchecked`. The field
/// is the last `"dedupe":` of the record written as JSON structure: the only fields
/// after it are the server's own (API, request id, versions, replay), and a string
/// value cannot hold the sequence (its quotes are escaped), while `context` or
/// `properties`, before it, may hold a key of that name.
fn unchecked(record: &[u8], out: &mut Vec<u8>) {
    const CHECKED: &[u8] = b"\"dedupe\":\"checked\"";
    match record.windows(CHECKED.len()).rposition(|w| w == CHECKED) {
        Some(at) => {
            out.extend_from_slice(&record[..at]);
            out.extend_from_slice(b"\"dedupe\":\"unchecked\"");
            out.extend_from_slice(&record[at + CHECKED.len()..]);
        }
        None => {
            debug_assert!(false, "a record without its dedupe field");
            out.extend_from_slice(record);
        }
    }
}

/// What the quarantine keeps of bytes the privacy policy could not see into: their
/// length and a digest, keyed with the pseudonym key when there is one (so that
/// nobody without the key can test guesses of the content against it).
fn opaque_view(privacy: Option<&Privacy>, bytes: usize, sha256: &[u8; 32]) -> serde_json::Value {
    let unparsed = match privacy {
        Some(privacy) => {
            let (digest, key) = privacy.keyed_digest(sha256);
            serde_json::json!({"bytes": bytes, "hmac_sha256": digest, "privacy_key": key})
        }
        None => serde_json::json!({"bytes": bytes, "sha256": crate::privacy::hex(sha256)}),
    };
    serde_json::json!({ "unparsed": unparsed })
}

/// The value of the field that keys an event's record in a partitioned log.
fn partition_key(event: &Event, key: PartitionKey) -> Option<&str> {
    match key {
        PartitionKey::UserId => event.user_id.as_deref().or(event.device_id.as_deref()),
        PartitionKey::DeviceId => event.device_id.as_deref(),
        PartitionKey::SessionId => event.session_id.as_deref(),
        PartitionKey::EventId => Some(&event.event_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three records as `serialize` writes them, routing facts included; the second
    /// carries a `dedupe` key of its own inside `properties`.
    fn records() -> AppendBatch {
        let lines = [
            r#"{"event_id":"a","properties":{},"dedupe":"checked","api":"native"}"#,
            r#"{"event_id":"b","properties":{"dedupe":"checked"},"dedupe":"checked","api":"native"}"#,
            r#"{"event_id":"c","properties":{},"dedupe":"checked","api":"native"}"#,
        ];
        let mut batch = AppendBatch::default();
        let mut meta = BatchMeta::default();
        for (line, key) in lines.iter().zip(["a", "b", "c"]) {
            batch.events.extend_from_slice(line.as_bytes());
            batch.events.push(b'\n');
            meta.events.push(RecordMeta {
                end: batch.events.len(),
                key: Some(key.into()),
                ..RecordMeta::default()
            });
        }
        batch.quarantine = b"{\"q\":1}\n".to_vec();
        batch.meta = Some(meta);
        batch
    }

    fn lines(batch: &AppendBatch) -> Vec<serde_json::Value> {
        batch
            .events
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    /// Every routing fact ends where its record does.
    fn assert_routing_matches(batch: &AppendBatch) {
        let meta = batch.meta.as_ref().unwrap();
        let lines = lines(batch);
        assert_eq!(meta.events.len(), lines.len());
        let mut start = 0;
        for (m, line) in meta.events.iter().zip(lines) {
            assert_eq!(line["event_id"].as_str(), m.key.as_deref());
            let text: serde_json::Value =
                serde_json::from_slice(&batch.events[start..m.end]).unwrap();
            assert_eq!(text, line, "the routing fact ends where its record does");
            start = m.end;
        }
        assert_eq!(start, batch.events.len());
    }

    #[test]
    fn a_record_whose_claim_did_not_hold_is_dropped_with_its_routing() {
        let mut records = records();
        rewrite_records(&mut records, |i| {
            if i == 1 { Rewrite::Drop } else { Rewrite::Keep }
        });
        let ids: Vec<_> = lines(&records)
            .iter()
            .map(|l| l["event_id"].clone())
            .collect();
        assert_eq!(ids, ["a", "c"]);
        assert_routing_matches(&records);
        assert_eq!(records.quarantine, b"{\"q\":1}\n", "quarantine untouched");
    }

    #[test]
    fn unchecked_records_read_unchecked_at_the_top_level_only() {
        let mut records = records();
        rewrite_records(&mut records, |i| {
            if i == 2 {
                Rewrite::Keep
            } else {
                Rewrite::Unchecked
            }
        });
        let lines = lines(&records);
        let dedupe: Vec<_> = lines.iter().map(|l| l["dedupe"].clone()).collect();
        assert_eq!(dedupe, ["unchecked", "unchecked", "checked"]);
        // The event's own property of that name is the client's: left as it was.
        assert_eq!(lines[1]["properties"]["dedupe"], "checked");
        assert_routing_matches(&records);
    }
}
