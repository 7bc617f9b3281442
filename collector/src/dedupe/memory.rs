//! The embedded idempotency store: in-process, bounded in keys, with the same
//! claim/commit/release semantics as the shared stores.
//!
//! It sits on the hot path (two operations per event), so it is built for that: keys
//! are reduced to 128-bit keyed SipHash digests (two independent random keys, so a
//! client cannot craft colliding ids; an accidental collision among 10⁹ keys has odds
//! near 10⁻²¹), kept in 64 mutex-guarded shards with an expiry time per entry. Each
//! shard is an open-addressing table sized once for its bound, digest and state in one
//! 32-byte slot, so a lookup costs one cache miss; a request's keys are digested first
//! and their slots prefetched together, so those misses overlap. Expired entries read
//! as absent at once and are swept from a shard at most every `sweep_interval`; when a
//! shard is full, the entries closest to expiry are forgotten first and counted as
//! evictions.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{ClaimOutcome, IdempotencyStore, StoreError};
use crate::telemetry::Metrics;

const SHARDS: usize = 64;

/// Keys claimed or committed per request are probed in chunks of this many: their
/// table lines are prefetched together, so the cache misses overlap.
const CHUNK: usize = 32;

/// One remembered key: 32 bytes, two to a cache line, digest and state side by side so
/// that looking a key up costs one cache miss (a table sized for millions of keys is
/// never in cache).
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C, align(32))]
struct Slot {
    /// The key's digest; [`EMPTY`] in a free slot (digests avoid it).
    key: u128,
    /// Milliseconds since the store's epoch after which the entry reads as absent.
    expires: u64,
    /// Digest of the claiming request's token; [`DONE`] once committed.
    token: u64,
}

/// The key of a free slot.
const EMPTY: u128 = 0;

const FREE: Slot = Slot {
    key: EMPTY,
    expires: 0,
    token: 0,
};

/// The token value of a committed key (token digests avoid it).
const DONE: u64 = 0;

/// One shard's keys: open addressing with linear probing over a slot array sized once,
/// at least twice the shard's bound, so that probe runs stay short. Entries are never
/// removed one by one: an expired (or released) entry reads as absent and its slot is
/// taken by the next new key on its probe run; sweeps rebuild the table in place.
struct Table {
    slots: Box<[Slot]>,
    /// Slots in use, expired ones included until a sweep.
    len: usize,
}

impl Table {
    /// Slots for a table holding at most `max_len` entries: at most half of them used.
    fn slots_for(max_len: usize) -> usize {
        (2 * max_len).next_power_of_two().max(8)
    }

    fn new(max_len: usize) -> Table {
        Table {
            slots: zeroed_slots(Self::slots_for(max_len)),
            len: 0,
        }
    }

    fn home(&self, key: u128) -> usize {
        key as usize & (self.slots.len() - 1)
    }

    /// `Ok` with the slot holding `key` (live or not), or `Err` with the slot a new
    /// entry for it goes to: the first expired slot on its probe run, else the free
    /// slot that ends the run. The table is never full (see [`MemoryStore::maintain`]).
    fn find(&self, key: u128, now: u64) -> Result<usize, usize> {
        let mask = self.slots.len() - 1;
        let mut reusable = None;
        let mut at = self.home(key);
        loop {
            let slot = &self.slots[at];
            if slot.key == key {
                return Ok(at);
            }
            if slot.key == EMPTY {
                return Err(reusable.unwrap_or(at));
            }
            if reusable.is_none() && slot.expires <= now {
                reusable = Some(at);
            }
            at = (at + 1) & mask;
        }
    }

    /// Puts `slot` at `at`, a place [`Table::find`] gave.
    fn put(&mut self, at: usize, slot: Slot) {
        if self.slots[at].key == EMPTY {
            self.len += 1;
        }
        self.slots[at] = slot;
    }

    /// The slots in use, expired entries included.
    fn occupied(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter().filter(|s| s.key != EMPTY)
    }

    /// Keeps only the entries `keep` accepts: the table is rebuilt in place (its
    /// memory, and so the addresses prefetched, never move).
    fn retain(&mut self, keep: impl Fn(&Slot) -> bool) {
        if self.len == 0 {
            // Nothing to do, and an untouched table's pages stay untouched.
            return;
        }
        let kept: Vec<Slot> = self.occupied().filter(|s| keep(s)).copied().collect();
        self.slots.fill(FREE);
        self.len = 0;
        let mask = self.slots.len() - 1;
        for slot in kept {
            // Keys are unique: the free slot ending the run is the place.
            let mut at = self.home(slot.key);
            while self.slots[at].key != EMPTY {
                at = (at + 1) & mask;
            }
            self.put(at, slot);
        }
    }
}

struct Shard {
    table: Table,
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
    /// Declared first so that it is dropped first: its thread stops touching the
    /// tables before they are freed.
    _prefault: Prefault,
    shards: Box<[Mutex<Shard>]>,
    /// The address of each shard's slots, read without its lock for prefetching only
    /// (a prefetch never faults and changes nothing). Tables never move.
    slot_addresses: Box<[usize]>,
    /// Slots per shard − 1 (a power of two − 1, the same for every shard).
    slot_mask: usize,
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
        // rehashing all of them, on the request path. Their pages are faulted in on a
        // background thread (`Prefault`), not by the first requests.
        let tables: Vec<Table> = (0..SHARDS).map(|_| Table::new(max_per_shard)).collect();
        // A boxed slice's memory stays put when the box moves into its mutex.
        let slot_addresses = tables.iter().map(|t| t.slots.as_ptr() as usize).collect();
        let prefault = Prefault::start(
            tables
                .iter()
                .map(|t| (t.slots.as_ptr() as usize, size_of_val(&*t.slots)))
                .collect(),
        );
        let shards = tables
            .into_iter()
            .map(|table| {
                Mutex::new(Shard {
                    table,
                    next_sweep: 0,
                })
            })
            .collect();
        MemoryStore {
            _prefault: prefault,
            shards,
            slot_addresses,
            slot_mask: Table::slots_for(max_per_shard) - 1,
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
        ((u128::from(high) << 64) | u128::from(low)).max(1)
    }

    fn shard_of(digest: u128) -> usize {
        (digest >> 122) as usize % SHARDS
    }

    /// The digests of up to [`CHUNK`] keys, with the table line of each asked for
    /// ahead: the misses of a whole request overlap instead of coming one by one.
    fn digests(&self, keys: &[String], out: &mut [u128; CHUNK]) {
        for (key, digest) in keys.iter().zip(out.iter_mut()) {
            *digest = self.digest(key);
            let home = *digest as usize & self.slot_mask;
            prefetch(self.slot_addresses[Self::shard_of(*digest)] + home * size_of::<Slot>());
        }
    }

    fn token(&self, token: &str) -> u64 {
        self.digest.0.hash_one(token).max(1)
    }

    /// Runs `f` on every key's shard and digest, a chunk of keys at a time.
    fn each_key(&self, keys: &[String], mut f: impl FnMut(&mut Shard, u128)) {
        let mut digests = [0u128; CHUNK];
        for chunk in keys.chunks(CHUNK) {
            self.digests(chunk, &mut digests);
            for &digest in &digests[..chunk.len()] {
                let mut shard = self.shards[Self::shard_of(digest)]
                    .lock()
                    .expect("shard lock poisoned");
                f(&mut shard, digest);
            }
        }
    }

    /// Claims at the given time (milliseconds since the epoch): the testable core.
    fn claim_at(&self, keys: &[String], token: &str, now: u64) -> Vec<ClaimOutcome> {
        let token = self.token(token);
        let claim = |key| Slot {
            key,
            expires: now + self.claim_ttl_ms,
            token,
        };
        let mut outcomes = Vec::with_capacity(keys.len());
        self.each_key(keys, |shard, digest| {
            self.maintain(shard, now);
            let table = &mut shard.table;
            let outcome = match table.find(digest, now) {
                Ok(at) if table.slots[at].expires > now => {
                    if table.slots[at].token == DONE {
                        ClaimOutcome::Duplicate
                    } else {
                        ClaimOutcome::InFlight
                    }
                }
                Ok(at) | Err(at) => {
                    table.put(at, claim(digest));
                    ClaimOutcome::Claimed
                }
            };
            outcomes.push(outcome);
        });
        outcomes
    }

    fn commit_at(&self, keys: &[String], now: u64) {
        // Unconditional, as the shared stores do: the events are in the log now, so
        // the key must read `done` even if our claim expired meanwhile.
        self.each_key(keys, |shard, digest| {
            self.maintain(shard, now);
            let table = &mut shard.table;
            let at = table.find(digest, now).unwrap_or_else(|free| free);
            table.put(
                at,
                Slot {
                    key: digest,
                    expires: now + self.window_ms,
                    token: DONE,
                },
            );
        });
    }

    fn release_at(&self, keys: &[String], token: &str, now: u64) {
        let token = self.token(token);
        self.each_key(keys, |shard, digest| {
            if let Ok(at) = shard.table.find(digest, now) {
                let slot = &mut shard.table.slots[at];
                if slot.token == token && slot.expires > now {
                    // Reads as absent from now on; the slot goes to the next new key.
                    slot.expires = 0;
                }
            }
        });
    }

    /// Sweeps expired entries now and then, and keeps the shard within its bound.
    fn maintain(&self, shard: &mut Shard, now: u64) {
        let table = &mut shard.table;
        if now >= shard.next_sweep {
            table.retain(|s| s.expires > now);
            shard.next_sweep = now + self.sweep_interval_ms;
        }
        if table.len >= self.max_per_shard {
            table.retain(|s| s.expires > now);
        }
        if table.len >= self.max_per_shard {
            // Forget the eighth closest to expiry: those were seen longest ago.
            let mut expiries: Vec<u64> = table.occupied().map(|s| s.expires).collect();
            let nth = expiries.len() / 8;
            let (_, cutoff, _) = expiries.select_nth_unstable(nth);
            let cutoff = *cutoff;
            let before = table.len;
            table.retain(|s| s.expires > cutoff);
            self.metrics
                .idempotency_evictions
                .add((before - table.len) as u64, &[]);
        }
    }
}

/// Faults a new store's tables in on a background thread, so that the first requests
/// do not each pay a page fault per key they claim: touching a page for the first time
/// costs a fault, and on a virtual machine whose free memory goes back to its host, a
/// fault to the host as well (on the benchmark VM, the first second of a load at half
/// the maximum rate had a p99 above 80 ms in 4 of 17 runs without this, up to 569 ms;
/// with it in 2 of 22, up to 167 ms). The memory is the bound's (`max_keys`) and
/// would be touched as keys arrive anyway. `MADV_POPULATE_WRITE` maps the pages
/// without writing to them, so the request path may use the tables meanwhile.
struct Prefault {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The prefault thread checks for a stop between chunks of this many bytes.
#[cfg(target_os = "linux")]
const PREFAULT_CHUNK: usize = 2 << 20;

impl Prefault {
    /// Starts faulting in `ranges` (start address, length in bytes), which must stay
    /// allocated until the returned value is dropped.
    fn start(ranges: Vec<(usize, usize)>) -> Prefault {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        #[cfg(target_os = "linux")]
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("tollgate-prefault".into())
                .spawn(move || populate(&ranges, &stop))
                .ok()
        };
        #[cfg(not(target_os = "linux"))]
        let thread = {
            let _ = ranges;
            None
        };
        Prefault { stop, thread }
    }

    /// Waits until the tables are faulted in (or the kernel could not do it).
    #[cfg(test)]
    fn wait(&mut self) {
        if let Some(thread) = self.thread.take() {
            thread.join().expect("prefault thread");
        }
    }
}

impl Drop for Prefault {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(target_os = "linux")]
fn populate(ranges: &[(usize, usize)], stop: &std::sync::atomic::AtomicBool) {
    let page = crate::os::page_size();
    let started = Instant::now();
    for &(start, len) in ranges {
        let mut at = start.next_multiple_of(page);
        let end = (start + len) / page * page;
        while at < end {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            let chunk = PREFAULT_CHUNK.min(end - at);
            // SAFETY: whole pages inside a table the store keeps allocated until this
            // thread is joined (`Prefault` is dropped before the tables);
            // `MADV_POPULATE_WRITE` maps them writable and changes no byte.
            let done =
                unsafe { libc::madvise(at as *mut libc::c_void, chunk, libc::MADV_POPULATE_WRITE) };
            if done != 0 {
                // Kernels before 5.14 do not know the advice: the pages fault in as used.
                tracing::debug!(error = %std::io::Error::last_os_error(), "could not fault the idempotency tables in");
                return;
            }
            at += chunk;
        }
    }
    tracing::debug!(elapsed = ?started.elapsed(), "idempotency tables faulted in");
}

/// `len` free slots, straight from the allocator: zeroed memory the allocator gets from
/// the system is not touched, so a table's pages cost only once used (or faulted in).
fn zeroed_slots(len: usize) -> Box<[Slot]> {
    let layout = std::alloc::Layout::array::<Slot>(len).expect("table size fits in memory");
    assert!(layout.size() > 0);
    // SAFETY: the layout is not empty; all zero bytes are a valid `Slot` (`FREE`); the
    // memory comes from the global allocator with the layout of `len` slots, which is
    // what the box frees it with.
    unsafe {
        let slots = std::alloc::alloc_zeroed(layout).cast::<Slot>();
        if slots.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Box::from_raw(std::ptr::slice_from_raw_parts_mut(slots, len))
    }
}

/// Asks the CPU to bring the cache line at `address` in; a hint that never faults.
#[inline]
fn prefetch(address: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing architecturally and cannot fault, whatever the
    // address; the slots are only read and written under their shard's lock.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(address as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
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

    #[test]
    fn a_new_table_is_all_free_slots() {
        let table = Table::new(100);
        assert_eq!(table.slots.len(), 256);
        assert!(table.slots.iter().all(|s| *s == FREE));
        assert_eq!(table.len, 0);
    }

    /// How many of the pages wholly inside `start..start + len` are resident.
    #[cfg(target_os = "linux")]
    fn resident(start: usize, len: usize) -> (usize, usize) {
        let page = crate::os::page_size();
        let from = start.next_multiple_of(page);
        let end = (start + len) / page * page;
        let mut vec = vec![0u8; (end - from) / page];
        // SAFETY: `vec` holds one byte per page of the range, which is mapped (a table).
        let ok = unsafe { libc::mincore(from as *mut libc::c_void, end - from, vec.as_mut_ptr()) };
        assert_eq!(ok, 0, "{}", std::io::Error::last_os_error());
        (vec.iter().filter(|b| *b & 1 == 1).count(), vec.len())
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_new_store_faults_its_tables_in_and_stops_when_dropped() {
        // 2 MiB a shard: tables the allocator maps afresh, untouched.
        let mut s = store(2_000_000);
        s._prefault.wait();
        let slots = s.slot_addresses.to_vec();
        let len = (s.slot_mask + 1) * size_of::<Slot>();
        for start in slots {
            let (resident, pages) = resident(start, len);
            assert_eq!(resident, pages, "table at {start:#x}");
        }
        // A store dropped while its thread is at work stops the thread and waits for
        // it (the tables must outlive it).
        drop(store(2_000_000));
    }

    #[test]
    fn prefetched_addresses_stay_those_of_the_tables_across_sweeps() {
        let s = store(64 * 16);
        let addresses = |s: &MemoryStore| -> Vec<usize> {
            s.shards
                .iter()
                .map(|m| m.lock().unwrap().table.slots.as_ptr() as usize)
                .collect()
        };
        assert_eq!(addresses(&s), s.slot_addresses.to_vec());
        // Fill past the bound (evictions) and far past the window (sweeps).
        let all: Vec<String> = (0..5_000).map(|i| format!("src:{i}")).collect();
        for (t, chunk) in all.chunks(100).enumerate() {
            s.claim_at(chunk, "r", t as u64 * 100_000_000);
        }
        assert_eq!(addresses(&s), s.slot_addresses.to_vec());
    }

    /// What the table is asked, at `now`: the live entry for `key`, if any.
    fn live(table: &Table, key: u128, now: u64) -> Option<(u64, u64)> {
        table
            .find(key, now)
            .ok()
            .map(|at| table.slots[at])
            .filter(|s| s.expires > now)
            .map(|s| (s.expires, s.token))
    }

    proptest::proptest! {
        /// The open-addressing table answers like a map that forgets expired entries,
        /// with keys chosen to share home slots (long probe runs, expired slots taken
        /// over mid-run, rebuilds by sweeps).
        #[test]
        fn the_table_answers_like_a_map(
            ops in proptest::collection::vec((0u128..24, 0u64..4, 1u64..40, 0u8..3), 1..300)
        ) {
            let mut table = Table::new(12);
            let mut model = std::collections::HashMap::new();
            let mut now = 0;
            for (k, step, ttl, op) in ops {
                now += step;
                // Keys 0..24 over 32 slots, homes spread over only four slots.
                let key = ((k + 1) << 8) | (k % 4);
                match op {
                    0 | 1 => {
                        if table.len >= 12 {
                            table.retain(|s| s.expires > now);
                            model.retain(|_, (expires, _)| *expires > now);
                        }
                        if table.len < 12 {
                            let slot = Slot { key, expires: now + ttl, token: u64::from(op) };
                            let at = table.find(key, now).unwrap_or_else(|free| free);
                            table.put(at, slot);
                            model.insert(key, (slot.expires, slot.token));
                        }
                    }
                    _ => {
                        table.retain(|s| s.expires > now + ttl / 4);
                        model.retain(|_, (expires, _)| *expires > now + ttl / 4);
                    }
                }
                for k in 0..24u128 {
                    let key = ((k + 1) << 8) | (k % 4);
                    let expected = model.get(&key).copied().filter(|(expires, _)| *expires > now);
                    proptest::prop_assert_eq!(live(&table, key, now), expected, "key {} at {}", k, now);
                }
                proptest::prop_assert!(table.len <= 12 && table.len == table.occupied().count());
            }
        }
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
        let held: usize = s.shards.iter().map(|m| m.lock().unwrap().table.len).sum();
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
