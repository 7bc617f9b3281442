//! The embedded idempotency store: in-process, bounded in keys, with the same
//! claim/commit/release semantics as the shared stores.
//!
//! It sits on the hot path (two operations per event), so it is built for that: keys
//! are reduced to 128-bit keyed SipHash digests (two independent random keys, so a
//! client cannot craft colliding ids; an accidental collision among 10⁹ keys has odds
//! near 10⁻²¹), kept in 64 mutex-guarded shards with an expiry time per entry. Expired
//! entries read as absent at once and are swept from a shard at most every
//! `sweep_interval`; when a shard is full, the entries closest to expiry are forgotten
//! first and counted as evictions.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{ClaimOutcome, IdempotencyStore, StoreError};
use crate::telemetry::Metrics;

const SHARDS: usize = 64;

/// One remembered key: 16 bytes, 32 with its digest in the table.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Milliseconds since the store's epoch after which the entry reads as absent.
    expires: u64,
    /// Digest of the claiming request's token; [`DONE`] once committed.
    token: u64,
}

/// The token value of a committed key (token digests avoid it).
const DONE: u64 = 0;

struct Shard {
    entries: HashMap<u128, Entry, Prehashed>,
    next_sweep: u64,
}

/// A stored request-level answer: expiry (ms since the epoch) and the bytes.
type Answer = (u64, Arc<[u8]>);

/// Most request-level answers kept (`Idempotency-Key`); past it the oldest go first.
const MAX_ANSWERS: usize = 100_000;

/// Most bytes of request-level answers kept (keys and bodies); past it the oldest go
/// first, so that large answers cannot grow memory without bound.
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// The request-level answers and their total size.
#[derive(Default)]
struct Answers {
    map: HashMap<String, Answer>,
    bytes: usize,
}

impl Answers {
    fn size(key: &str, answer: &[u8]) -> usize {
        key.len() + answer.len() + 64
    }

    /// Keeps only the answers `keep` accepts, keeping the byte count true.
    fn retain(&mut self, mut keep: impl FnMut(u64) -> bool) {
        let bytes = &mut self.bytes;
        self.map.retain(|key, (expires, answer)| {
            let kept = keep(*expires);
            if !kept {
                *bytes -= Answers::size(key, answer);
            }
            kept
        });
    }
}

/// A bounded in-memory store. Right for a single collector; replicas do not share it.
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    /// Request-level answers (`Idempotency-Key`).
    answers: Mutex<Answers>,
    digest: (RandomState, RandomState),
    claim_ttl_ms: u64,
    window_ms: u64,
    sweep_interval_ms: u64,
    max_per_shard: usize,
    epoch: Instant,
    metrics: Arc<Metrics>,
}

impl MemoryStore {
    /// A store that remembers at most about `max_keys` keys; past that the oldest are
    /// forgotten before their window ends (counted in
    /// `tollgate_idempotency_evictions_total`).
    pub fn new(
        max_keys: u64,
        claim_ttl: Duration,
        window: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let window_ms = window.as_millis() as u64;
        let max_per_shard = (max_keys as usize).div_ceil(SHARDS).max(1);
        // Sized for the bound up front: growing a table of millions of keys means
        // rehashing all of them, on the request path. Untouched pages cost nothing.
        let shard = || {
            Mutex::new(Shard {
                entries: HashMap::with_capacity_and_hasher(max_per_shard, Prehashed),
                next_sweep: 0,
            })
        };
        MemoryStore {
            shards: (0..SHARDS).map(|_| shard()).collect(),
            answers: Mutex::new(Answers::default()),
            digest: (RandomState::new(), RandomState::new()),
            claim_ttl_ms: claim_ttl.as_millis() as u64,
            window_ms,
            sweep_interval_ms: (window_ms / 64).max(1000),
            max_per_shard,
            epoch: Instant::now(),
            metrics,
        }
    }

    /// Bytes of request-level answers held (for tests).
    pub fn answer_bytes(&self) -> usize {
        self.answers.lock().expect("answers lock poisoned").bytes
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn digest(&self, key: &str) -> u128 {
        let high = self.digest.0.hash_one(key);
        let low = self.digest.1.hash_one(key);
        (u128::from(high) << 64) | u128::from(low)
    }

    fn shard(&self, digest: u128) -> &Mutex<Shard> {
        &self.shards[(digest >> 122) as usize % SHARDS]
    }

    fn token(&self, token: &str) -> u64 {
        self.digest.0.hash_one(token).max(1)
    }

    /// Claims at the given time (milliseconds since the epoch): the testable core.
    fn claim_at(&self, keys: &[String], token: &str, now: u64) -> Vec<ClaimOutcome> {
        let token = self.token(token);
        keys.iter()
            .map(|key| {
                let digest = self.digest(key);
                let mut shard = self.shard(digest).lock().expect("shard lock poisoned");
                self.maintain(&mut shard, now);
                match shard.entries.get(&digest) {
                    Some(e) if e.expires > now && e.token == DONE => ClaimOutcome::Duplicate,
                    Some(e) if e.expires > now => ClaimOutcome::InFlight,
                    _ => {
                        shard.entries.insert(
                            digest,
                            Entry {
                                expires: now + self.claim_ttl_ms,
                                token,
                            },
                        );
                        ClaimOutcome::Claimed
                    }
                }
            })
            .collect()
    }

    fn commit_at(&self, keys: &[String], now: u64) {
        // Unconditional, as the shared stores do: the events are in the log now, so
        // the key must read `done` even if our claim expired meanwhile.
        for key in keys {
            let digest = self.digest(key);
            let mut shard = self.shard(digest).lock().expect("shard lock poisoned");
            shard.entries.insert(
                digest,
                Entry {
                    expires: now + self.window_ms,
                    token: DONE,
                },
            );
        }
    }

    fn release_at(&self, keys: &[String], token: &str, now: u64) {
        let token = self.token(token);
        for key in keys {
            let digest = self.digest(key);
            let mut shard = self.shard(digest).lock().expect("shard lock poisoned");
            let ours = shard
                .entries
                .get(&digest)
                .is_some_and(|e| e.token == token && e.expires > now);
            if ours {
                shard.entries.remove(&digest);
            }
        }
    }

    /// Sweeps expired entries now and then, and keeps the shard within its bound.
    fn maintain(&self, shard: &mut Shard, now: u64) {
        if now >= shard.next_sweep {
            shard.entries.retain(|_, e| e.expires > now);
            shard.next_sweep = now + self.sweep_interval_ms;
        }
        if shard.entries.len() >= self.max_per_shard {
            shard.entries.retain(|_, e| e.expires > now);
        }
        if shard.entries.len() >= self.max_per_shard {
            // Forget the eighth closest to expiry: those were seen longest ago.
            let mut expiries: Vec<u64> = shard.entries.values().map(|e| e.expires).collect();
            let nth = expiries.len() / 8;
            let (_, cutoff, _) = expiries.select_nth_unstable(nth);
            let cutoff = *cutoff;
            let before = shard.entries.len();
            shard.entries.retain(|_, e| e.expires > cutoff);
            self.metrics
                .idempotency_evictions
                .add((before - shard.entries.len()) as u64, &[]);
        }
    }
}

#[async_trait]
impl IdempotencyStore for MemoryStore {
    async fn claim(&self, keys: &[String], token: &str) -> Result<Vec<ClaimOutcome>, StoreError> {
        Ok(self.claim_at(keys, token, self.now_ms()))
    }

    async fn commit(&self, keys: &[String], _token: &str) -> Result<(), StoreError> {
        self.commit_at(keys, self.now_ms());
        Ok(())
    }

    async fn release(&self, keys: &[String], token: &str) -> Result<(), StoreError> {
        self.release_at(keys, token, self.now_ms());
        Ok(())
    }

    async fn recall(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let now = self.now_ms();
        let answers = self.answers.lock().expect("answers lock poisoned");
        Ok(answers
            .map
            .get(key)
            .filter(|(expires, _)| *expires > now)
            .map(|(_, answer)| answer.to_vec()))
    }

    async fn remember(&self, key: &str, answer: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let now = self.now_ms();
        let size = Answers::size(key, answer);
        let mut answers = self.answers.lock().expect("answers lock poisoned");
        let full = |a: &Answers| a.map.len() >= MAX_ANSWERS || a.bytes + size > MAX_ANSWER_BYTES;
        if full(&answers) {
            answers.retain(|expires| expires > now);
        }
        // Still full: forget the eighth that expires first, until there is room.
        while full(&answers) && !answers.map.is_empty() {
            let mut expiries: Vec<u64> = answers.map.values().map(|(e, _)| *e).collect();
            let nth = expiries.len() / 8;
            let cutoff = *expiries.select_nth_unstable(nth).1;
            answers.retain(|expires| expires > cutoff);
        }
        let live = answers
            .map
            .get(key)
            .is_some_and(|(expires, _)| *expires > now);
        if !live && size <= MAX_ANSWER_BYTES {
            if let Some((_, old)) = answers.map.insert(
                key.to_owned(),
                (now + ttl.as_millis() as u64, Arc::from(answer)),
            ) {
                answers.bytes -= Answers::size(key, &old);
            }
            answers.bytes += size;
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

/// The map's keys are already uniformly distributed digests: use their bits as is.
#[derive(Default, Clone, Copy)]
struct Prehashed;

impl BuildHasher for Prehashed {
    type Hasher = PrehashedHasher;

    fn build_hasher(&self) -> PrehashedHasher {
        PrehashedHasher(0)
    }
}

struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u128` is used for our keys; fold anything else in.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(max_keys: u64) -> MemoryStore {
        MemoryStore::new(
            max_keys,
            Duration::from_secs(60),
            Duration::from_secs(3600),
            Arc::new(Metrics::new()),
        )
    }

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn request_answers_are_bounded_in_bytes_not_only_in_count() {
        let s = store(1000);
        let answer = vec![b'x'; 1 << 20];
        for i in 0..200 {
            s.remember(&format!("src:key-{i}"), &answer, Duration::from_secs(3600))
                .await
                .unwrap();
        }
        assert!(
            s.answer_bytes() <= MAX_ANSWER_BYTES,
            "{} bytes held",
            s.answer_bytes()
        );
        // The newest answers are the ones kept.
        assert!(s.recall("src:key-199").await.unwrap().is_some());
        assert!(s.recall("src:key-0").await.unwrap().is_none());
    }

    #[test]
    fn claim_commit_then_duplicate() {
        let s = store(1000);
        let k = keys(&["src:a", "src:b"]);
        assert_eq!(s.claim_at(&k, "r1", 0), [ClaimOutcome::Claimed; 2]);
        // Another request while r1 writes: in flight.
        assert_eq!(s.claim_at(&k[..1], "r2", 10), [ClaimOutcome::InFlight]);
        s.commit_at(&k, 20);
        assert_eq!(s.claim_at(&k, "r3", 30), [ClaimOutcome::Duplicate; 2]);
        // Other keys are unaffected.
        assert_eq!(
            s.claim_at(&keys(&["src:c"]), "r3", 30),
            [ClaimOutcome::Claimed]
        );
    }

    #[test]
    fn release_frees_only_our_own_claims() {
        let s = store(1000);
        let k = keys(&["src:a"]);
        s.claim_at(&k, "r1", 0);
        // A late release by someone else must not delete r1's claim.
        s.release_at(&k, "r2", 1);
        assert_eq!(s.claim_at(&k, "r3", 2), [ClaimOutcome::InFlight]);
        s.release_at(&k, "r1", 3);
        assert_eq!(s.claim_at(&k, "r4", 4), [ClaimOutcome::Claimed]);
        // Releasing a committed key does nothing either.
        s.commit_at(&k, 5);
        s.release_at(&k, "r4", 6);
        assert_eq!(s.claim_at(&k, "r5", 7), [ClaimOutcome::Duplicate]);
    }

    #[test]
    fn claims_expire_after_the_claim_ttl_and_commits_after_the_window() {
        let s = store(1000);
        let k = keys(&["src:abandoned"]);
        assert_eq!(s.claim_at(&k, "crashed", 0), [ClaimOutcome::Claimed]);
        assert_eq!(s.claim_at(&k, "retry", 59_999), [ClaimOutcome::InFlight]);
        assert_eq!(s.claim_at(&k, "retry", 60_000), [ClaimOutcome::Claimed]);
        s.commit_at(&k, 60_000);
        assert_eq!(
            s.claim_at(&k, "later", 60_000 + 3_599_999),
            [ClaimOutcome::Duplicate]
        );
        assert_eq!(
            s.claim_at(&k, "later", 60_000 + 3_600_000),
            [ClaimOutcome::Claimed]
        );
    }

    #[test]
    fn a_full_store_forgets_the_oldest_first_and_counts_it() {
        let metrics = Arc::new(Metrics::new());
        let s = MemoryStore::new(
            64 * 16,
            Duration::from_secs(60),
            Duration::from_secs(3600),
            metrics.clone(),
        );
        let all: Vec<String> = (0..20_000).map(|i| format!("src:{i}")).collect();
        for (t, chunk) in all.chunks(100).enumerate() {
            s.claim_at(chunk, "r", t as u64);
            s.commit_at(chunk, t as u64);
        }
        let held: usize = s
            .shards
            .iter()
            .map(|m| m.lock().unwrap().entries.len())
            .sum();
        assert!(held <= 64 * 16, "bounded: {held}");
        // The newest keys are still known; the oldest were forgotten.
        let t = 200;
        assert_eq!(
            s.claim_at(&all[19_999..], "x", t),
            [ClaimOutcome::Duplicate]
        );
        assert_eq!(s.claim_at(&all[..1], "x", t), [ClaimOutcome::Claimed]);
        assert!(
            metrics
                .render()
                .contains("tollgate_idempotency_evictions_total")
        );
    }
}
