//! The embedded idempotency store: in-process, bounded in keys, with the same
//! claim/commit/release semantics as the shared stores.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::Expiry;
use moka::notification::RemovalCause;
use moka::ops::compute::{CompResult, Op};

use super::{ClaimOutcome, IdempotencyStore, StoreError};
use crate::telemetry::Metrics;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Pending(Arc<str>),
    Done,
}

/// Gives pending claims the claim TTL and committed keys the dedupe window.
struct Lifetimes {
    claim_ttl: Duration,
    window: Duration,
}

impl Lifetimes {
    fn of(&self, state: &State) -> Duration {
        match state {
            State::Pending(_) => self.claim_ttl,
            State::Done => self.window,
        }
    }
}

impl Expiry<String, State> for Lifetimes {
    fn expire_after_create(&self, _: &String, state: &State, _: Instant) -> Option<Duration> {
        Some(self.of(state))
    }

    fn expire_after_update(
        &self,
        _: &String,
        state: &State,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.of(state))
    }
}

/// A bounded in-memory store. Right for a single collector; replicas do not share it.
pub struct MemoryStore {
    keys: moka::sync::Cache<String, State>,
}

impl MemoryStore {
    /// A store that remembers at most `max_keys` keys; when full, the least recently
    /// used are forgotten before their window ends and counted as evictions.
    pub fn new(max_keys: u64, claim_ttl: Duration, window: Duration, metrics: Arc<Metrics>) -> Self {
        let keys = moka::sync::Cache::builder()
            .max_capacity(max_keys)
            .expire_after(Lifetimes { claim_ttl, window })
            .eviction_listener(move |_, _, cause| {
                if cause == RemovalCause::Size {
                    metrics.idempotency_evictions.add(1, &[]);
                }
            })
            .build();
        MemoryStore { keys }
    }
}

#[async_trait]
impl IdempotencyStore for MemoryStore {
    async fn claim(&self, keys: &[String], token: &str) -> Result<Vec<ClaimOutcome>, StoreError> {
        let token: Arc<str> = Arc::from(token);
        Ok(keys
            .iter()
            .map(|key| {
                let result = self.keys.entry_by_ref(key).and_compute_with(|existing| match existing {
                    None => Op::Put(State::Pending(token.clone())),
                    Some(_) => Op::Nop,
                });
                match result {
                    CompResult::Inserted(_) => ClaimOutcome::Claimed,
                    CompResult::Unchanged(entry) => match entry.value() {
                        State::Done => ClaimOutcome::Duplicate,
                        State::Pending(_) => ClaimOutcome::InFlight,
                    },
                    // Nop on a present key is `Unchanged`; the others cannot happen.
                    _ => ClaimOutcome::InFlight,
                }
            })
            .collect())
    }

    async fn commit(&self, keys: &[String], _token: &str) -> Result<(), StoreError> {
        // Unconditional, as the shared stores do: the events are in the log now, so the
        // key must read `done` even if our claim expired meanwhile.
        for key in keys {
            self.keys.insert(key.clone(), State::Done);
        }
        Ok(())
    }

    async fn release(&self, keys: &[String], token: &str) -> Result<(), StoreError> {
        for key in keys {
            self.keys.entry_by_ref(key).and_compute_with(|existing| match existing {
                Some(entry) if matches!(entry.value(), State::Pending(t) if &**t == token) => {
                    Op::Remove
                }
                _ => Op::Nop,
            });
        }
        Ok(())
    }

    async fn ready(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}
