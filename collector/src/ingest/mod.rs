//! The ingest pipeline: from decoded events to a durable log and a per-event answer.
//!
//! Enters: a request's [`Decoded`] items, its source and its receive time. Leaves: an
//! [`IngestOutcome`] (one status per event), returned only once the accepted events
//! and the quarantined ones are durable; or an [`ApiError`] for the whole request, in
//! which case nothing of it was acknowledged.
//!
//! A request passes five stages, each a module with one job; between them every event
//! is a `Slot` (`slot.rs`):
//!
//! 1. `admit`: schema validation, server timing and the privacy policy, per event;
//! 2. duplicates inside the batch, and the idempotency keys of the events that carry
//!    a client id (`claim`);
//! 3. `write` serialises the records and `answer` settles the answer (freeing the
//!    events) as if every claim will hold;
//! 4. `claim`: one idempotency claim for all the keys, which corrects the records and
//!    the answer for events already logged or being written by another request;
//! 5. `write`: one log append (events and quarantine together, group-committed with
//!    other requests), then one commit of the claims, or a release if the append
//!    failed; `answer` counts the request once its records are durable. A remote
//!    store's commit is not waited for (the answer does not depend on it), except by
//!    a replay, whose ledger records a batch done once this returns.
//!
//! Stage 3 comes before the claim because the claim may wait for a round trip to
//! Redis: with many requests in flight, what a request still had to read and free
//! after that wait had left the caches (measured: +9 % events/s with Redis, the
//! memory store unchanged; docs/benchmarks.md).

mod admit;
mod answer;
mod claim;
pub(crate) use claim::claim_key;
pub mod config;
pub mod decode;
mod slot;
mod write;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use time::OffsetDateTime;
use tollgate_event::Api;

pub use decode::{DecodeLimits, Decoded, Item, Raw};

use crate::config::FailurePolicy;
use crate::dedupe::IdempotencyStore;
use crate::error::ApiError;
use crate::privacy::Policy;
use crate::rules::Rules;
use crate::sink::EventLog;
use crate::telemetry::Metrics;
use crate::telemetry::quality::SegmentLabels;

/// The version stamped on every record.
pub const COLLECTOR_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A configured source, resolved from a write key.
#[derive(Debug)]
pub struct Source {
    pub id: String,
    pub allow_unknown_events: bool,
    /// The `source` metric label, built once (cheap to clone per request).
    label: KeyValue,
}

impl Source {
    pub fn new(id: impl Into<String>, allow_unknown_events: bool) -> Source {
        let id = id.into();
        let label = KeyValue::new(
            "source",
            opentelemetry::StringValue::from(Arc::<str>::from(id.as_str())),
        );
        Source {
            id,
            allow_unknown_events,
            label,
        }
    }
}

pub use tollgate_event::wire::{Answer, EventResult, Status};

/// The answer to a request whose events were all processed.
#[derive(Debug, Default)]
pub struct IngestOutcome {
    /// What the client is told.
    pub answer: Answer,
    /// Per result: the privacy policy an accepted event was logged under (its region),
    /// for `X-Tollgate-Explain`; never in the body.
    pub policies: Vec<Option<Arc<Policy>>>,
}

/// What the pipeline knows about a request besides its events.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// When the request arrived: every event's `timestamp_server`.
    pub received_at: OffsetDateTime,
    pub request_id: &'a str,
    /// The country a trusted edge header or proxy named, for the privacy policy.
    pub edge_country: Option<&'a str>,
    /// A copy from a shadow proxy (`X-Tollgate-Shadow: 1`): logged to the shadow stream
    /// where the log has one.
    pub shadow: bool,
    /// Quarantined events replayed (`tollgate-collector replay`), not a client's.
    pub replay: Option<&'a Replay>,
}

/// Quarantined events on their second pass: the pipeline judges them as new events,
/// except that their privacy policy was applied already (only consent and the
/// `event_id` check are judged again, so nothing is pseudonymized twice), records
/// carry `replayed_at` and `replay_of`, and what is still invalid adds nothing to the
/// quarantine.
#[derive(Debug)]
pub struct Replay {
    pub at: OffsetDateTime,
    /// One per decoded item, in order.
    pub items: Vec<ReplayItem>,
}

/// What the quarantine record says of one replayed event.
#[derive(Debug, Clone)]
pub struct ReplayItem {
    /// `<request_id>/<index>` of the quarantine record.
    pub of: String,
    /// When its original request arrived: its `timestamp_server`, kept.
    pub received_at: OffsetDateTime,
    /// The policy its quarantine copy passed (today's policy of that id and region),
    /// or `None` when it passed none.
    pub policy: Option<Arc<Policy>>,
    /// The key its pseudonyms were made with.
    pub key: Option<String>,
}

/// Everything the pipeline needs, shared by all requests.
pub struct Pipeline {
    pub store: Arc<dyn IdempotencyStore>,
    pub log: Arc<dyn EventLog>,
    pub policy: FailurePolicy,
    pub allowed_lateness: Duration,
    pub future_tolerance: Duration,
    pub region: String,
    pub metrics: Arc<Metrics>,
    /// Bounded labels of the data-quality metrics; `None` turns them off.
    pub labels: Option<SegmentLabels>,
    /// Commits that finish after their request was answered (a remote store's), so
    /// that a shutdown waits for them.
    pub tasks: tokio_util::task::TaskTracker,
}

impl Pipeline {
    /// Processes one request's events under `rules` (its schemas and privacy
    /// policies); see the module docs for the stages.
    ///
    /// # Errors
    /// `idempotency_unavailable` (store down under `fail_closed`), `log_queue_full`,
    /// `log_unavailable`: in each case nothing of the request was acknowledged and the
    /// claims it took were released.
    pub async fn process(
        self: &Arc<Self>,
        rules: &Rules,
        source: &Source,
        api: Api,
        decoded: Decoded,
        request: RequestInfo<'_>,
    ) -> Result<IngestOutcome, ApiError> {
        let mut slots = self.admit(rules, source, api, decoded, request);
        claim::mark_repeats(&mut slots);
        let keys = claim::claim_keys(&mut slots, source);
        // Everything the claim's outcome does not change is done before its round
        // trip, while the request is in cache: with many requests in flight, what
        // waits across a Redis round trip has left the caches when it is read or freed
        // again. The claim then corrects what did not hold (rare).
        let mut batch = self.serialize(rules, &slots, source, api, request);
        batch.shadow = request.shadow;
        let mut settled = self.settle(&rules.schemas, slots);
        let claimed = self
            .claim(keys, &mut settled, &mut batch, request.request_id)
            .await?;
        settled.fold();
        // A remote store's commit is not waited for: the answer does not depend on it.
        // A replay does wait: it records a batch as done once this returns, and its
        // recovery counts on the claims being committed by then.
        let commit = if self.store.is_remote() && request.replay.is_none() {
            write::Commit::InBackground
        } else {
            write::Commit::Await
        };
        self.write(
            batch,
            &settled.claimed_records,
            claimed,
            request.request_id,
            commit,
        )
        .await?;
        Ok(self.count(settled, source, api))
    }

    /// What admission says of each event — accepted, or the error it would be
    /// rejected or dropped with — with nothing claimed, written or counted as
    /// outcomes (a dry run).
    pub fn judge(
        &self,
        rules: &Rules,
        source: &Source,
        api: Api,
        decoded: Decoded,
        request: RequestInfo<'_>,
    ) -> Vec<Result<(), tollgate_event::EventError>> {
        self.admit(rules, source, api, decoded, request)
            .into_iter()
            .map(|slot| match slot {
                slot::Slot::Rejected { error, .. } | slot::Slot::Dropped { error, .. } => {
                    Err(error)
                }
                _ => Ok(()),
            })
            .collect()
    }
}
