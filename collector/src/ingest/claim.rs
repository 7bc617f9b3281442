//! Idempotency: duplicates inside the batch, then one claim in the store for every
//! event that carries a client id — made once the request is settled, and correcting
//! it where a claim did not hold; after the write, one commit (or a release when the
//! write failed).

use std::time::Instant;

use foldhash::{HashSet, HashSetExt};
use opentelemetry::KeyValue;

use super::answer::Settled;
use super::slot::Slot;
use super::write::{Rewrite, rewrite_records};
use super::{Pipeline, Source};
use crate::config::FailurePolicy;
use crate::dedupe::{ClaimOutcome, StoreError};
use crate::error::ApiError;
use crate::sink::AppendBatch;

/// A repeated `event_id` inside one batch is a duplicate of its first occurrence.
pub(super) fn mark_repeats(slots: &mut [Slot]) {
    let mut repeated = Vec::new();
    {
        // foldhash (seeded per process): the ids are the client's, but one request's
        // set is bounded by the batch limit, and SipHash was 0.5 % of a request.
        let mut seen = HashSet::with_capacity(slots.len());
        for (i, slot) in slots.iter().enumerate() {
            if let Slot::Valid {
                event, check: true, ..
            } = slot
                && !seen.insert(event.event_id.as_str())
            {
                repeated.push(i);
            }
        }
    }
    for i in repeated {
        if let Slot::Valid { event, .. } = &mut slots[i] {
            slots[i] = Slot::Duplicate(std::mem::take(&mut event.event_id));
        }
    }
}

/// The idempotency key of an event: its source and its id.
pub(crate) fn claim_key(source: &str, event_id: &str) -> String {
    // Per event: pushed into one allocation of the right size, without `format!`'s
    // machinery (1.4 % of a request's instructions).
    let mut key = String::with_capacity(source.len() + 1 + event_id.len());
    key.push_str(source);
    key.push(':');
    key.push_str(event_id);
    key
}

/// The keys of every checkable event, in slot order; each such slot learns its key's
/// index.
pub(super) fn claim_keys(slots: &mut [Slot], source: &Source) -> Vec<String> {
    let mut keys = Vec::new();
    for slot in slots.iter_mut() {
        if let Slot::Valid {
            event,
            check: true,
            claim,
            ..
        } = slot
        {
            *claim = Some(keys.len());
            keys.push(claim_key(&source.id, &event.event_id));
        }
    }
    keys
}

impl Pipeline {
    /// Claims `keys` in one store call, for a request already settled as if every
    /// claim held (its records written, its answer built, its events freed: work done
    /// before the round trip, while the request is in cache). Events already logged
    /// become `duplicate`, events another request is writing `retry`: their results,
    /// records and counts are corrected here. Returns the keys this request now holds.
    ///
    /// # Errors
    /// `idempotency_unavailable` when the store fails under `fail_closed`. Under
    /// `fail_open` the events are logged `unchecked` instead.
    pub(super) async fn claim(
        &self,
        keys: Vec<String>,
        settled: &mut Settled<'_>,
        batch: &mut AppendBatch,
        request_id: &str,
    ) -> Result<Vec<String>, ApiError> {
        if keys.is_empty() {
            return Ok(keys);
        }
        let outcomes = match self
            .store_call("claim", keys.len(), self.store.claim(&keys, request_id))
            .await
        {
            Ok(outcomes) => outcomes,
            Err(e) => return self.claim_failed(settled, batch, keys, e),
        };
        let mut counts = [0u64; 3];
        for outcome in &outcomes {
            counts[*outcome as usize] += 1;
        }
        for (result, count) in ["claimed", "duplicate", "in_flight"]
            .into_iter()
            .zip(counts)
        {
            self.count_keys(result, count);
        }
        // Usually every key was claimed: the request stands as settled.
        if outcomes.iter().all(|o| *o == ClaimOutcome::Claimed) {
            return Ok(keys);
        }
        let dropped = settled.unclaim(&outcomes);
        rewrite_records(batch, |record| {
            if dropped[record] {
                Rewrite::Drop
            } else {
                Rewrite::Keep
            }
        });
        Ok(keys
            .into_iter()
            .zip(&outcomes)
            .filter(|(_, o)| **o == ClaimOutcome::Claimed)
            .map(|(k, _)| k)
            .collect())
    }

    /// The store failed the claim: refuse the request (`fail_closed`) or log the
    /// events unchecked (`fail_open`).
    fn claim_failed(
        &self,
        settled: &Settled<'_>,
        batch: &mut AppendBatch,
        keys: Vec<String>,
        e: StoreError,
    ) -> Result<Vec<String>, ApiError> {
        match self.policy {
            FailurePolicy::FailClosed => {
                tracing::warn!(error = %e, "idempotency store unavailable; answering 503 (fail_closed)");
                Err(ApiError::IdempotencyUnavailable)
            }
            FailurePolicy::FailOpen => {
                tracing::warn!(error = %e, "idempotency store unavailable; logging unchecked (fail_open)");
                let claimed = &settled.claimed_records;
                rewrite_records(batch, |record| {
                    if claimed.get(record).copied().unwrap_or(false) {
                        Rewrite::Unchecked
                    } else {
                        Rewrite::Keep
                    }
                });
                self.metrics.unchecked.add(
                    keys.len() as u64,
                    &[KeyValue::new("reason", "store_unavailable")],
                );
                // A claim that timed out may have landed all the same: the keys are
                // then ours, pending. They are committed after the write (or released
                // if it fails), best effort, so that retries are not refused as in
                // flight for the claim TTL.
                Ok(if e.timed_out() { keys } else { Vec::new() })
            }
        }
    }

    /// Commits claims whose records are durable. A failure is logged, not returned:
    /// the events stay accepted, and only a retry within the claim TTL could now log
    /// them twice.
    pub(super) async fn commit(&self, keys: &[String], request_id: &str, what: &str) {
        if keys.is_empty() {
            return;
        }
        if let Err(e) = self
            .store_call("commit", keys.len(), self.store.commit(keys, request_id))
            .await
        {
            tracing::warn!(error = %e, "committing claims failed {what}");
        }
    }

    /// Releases claims whose records were not written, so that the client's retry is
    /// not refused as in flight; if that fails they expire after the claim TTL.
    pub(super) async fn release(&self, keys: &[String], request_id: &str) {
        if keys.is_empty() {
            return;
        }
        if let Err(e) = self
            .store_call("release", keys.len(), self.store.release(keys, request_id))
            .await
        {
            tracing::warn!(error = %e, "releasing claims failed; they expire after the claim TTL");
        }
    }

    /// Runs one store operation, timing it and counting its keys or its failure.
    pub(crate) async fn store_call<T>(
        &self,
        operation: &'static str,
        keys: usize,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        let store = KeyValue::new("store", self.store.name());
        let op = KeyValue::new("operation", operation);
        self.metrics.idempotency_duration.record(
            started.elapsed().as_secs_f64(),
            &[store.clone(), op.clone()],
        );
        match &result {
            Err(_) => self.metrics.idempotency_errors.add(1, &[store, op]),
            Ok(_) if operation == "commit" => self.count_keys("committed", keys as u64),
            Ok(_) if operation == "release" => self.count_keys("released", keys as u64),
            Ok(_) => {}
        }
        result
    }

    pub(crate) fn count_keys(&self, result: &'static str, count: u64) {
        if count > 0 {
            self.metrics.idempotency_keys.add(
                count,
                &[
                    KeyValue::new("store", self.store.name()),
                    KeyValue::new("result", result),
                ],
            );
        }
    }
}

/// Splits a request's claimed keys into those whose records a broker acknowledged
/// (`delivered`, by position among the accepted records) and the rest.
///
/// `claimed_records` says, per accepted record, whether its id was claimed; the claimed
/// keys are in the same order, so one walk pairs them.
pub(super) fn split_delivered(
    claimed_records: &[bool],
    claimed: Vec<String>,
    delivered: &[bool],
) -> (Vec<String>, Vec<String>) {
    let mut keys = claimed.into_iter();
    let (mut commit, mut release) = (Vec::new(), Vec::new());
    for (record, was_claimed) in claimed_records.iter().enumerate() {
        if !was_claimed {
            continue;
        }
        let Some(key) = keys.next() else { break };
        if delivered.get(record).copied().unwrap_or(false) {
            commit.push(key);
        } else {
            release.push(key);
        }
    }
    release.extend(keys);
    (commit, release)
}

#[cfg(test)]
mod tests {
    use super::claim_key;

    #[test]
    fn a_key_is_the_source_and_the_event_id() {
        // Keys already in a shared store were written in this shape: it must not change.
        assert_eq!(claim_key("web", "evt-00000001"), "web:evt-00000001");
        assert_eq!(claim_key("", "ü:1"), ":ü:1");
    }
}
