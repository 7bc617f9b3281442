//! Tallies keyed by 64-bit hashes that remember the order keys first appeared in, so
//! that tallies of consecutive blocks merge into exactly what one pass would have
//! counted, caps included: a capped tally admits keys in order of first appearance.

use std::collections::HashMap;
use std::hash::Hasher;

/// A hasher for keys that are already 64-bit hashes.
#[derive(Default)]
pub struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Hash maps and sets keyed by 64-bit hashes.
pub type BuildPreHashed = std::hash::BuildHasherDefault<PreHashed>;
pub type HashedMap<V> = HashMap<u64, V, BuildPreHashed>;

/// FNV-1a over the parts (each followed by a separator byte): fast for the short keys
/// hashed for every record (ids, segment names).
pub fn hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Values by key, in order of first appearance.
pub struct Ordered<V> {
    index: HashedMap<usize>,
    items: Vec<(u64, V)>,
}

impl<V> Default for Ordered<V> {
    fn default() -> Self {
        Ordered {
            index: HashedMap::default(),
            items: Vec::new(),
        }
    }
}

impl<V> Ordered<V> {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn contains(&self, key: u64) -> bool {
        self.index.contains_key(&key)
    }

    /// The value of `key`, made by `make` on its first appearance.
    pub fn entry(&mut self, key: u64, make: impl FnOnce() -> V) -> &mut V {
        let i = *self.index.entry(key).or_insert_with(|| {
            self.items.push((key, make()));
            self.items.len() - 1
        });
        &mut self.items[i].1
    }

    /// The values in order of first appearance.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.items.iter().map(|(_, v)| v)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.items.iter_mut().map(|(_, v)| v)
    }

    pub fn into_values(self) -> impl Iterator<Item = V> {
        self.items.into_iter().map(|(_, v)| v)
    }

    /// Adds `later` (the tally of the records after this one's) as if its records had
    /// been counted here: keys new to this tally are admitted in their order of first
    /// appearance while fewer than `cap` are known; the rest go to `overflow`'s key,
    /// made by its function.
    pub fn absorb(
        &mut self,
        later: Ordered<V>,
        cap: usize,
        overflow: (u64, &dyn Fn(&V) -> V),
        mut merge: impl FnMut(&mut V, V),
    ) {
        for (key, value) in later.items {
            let key = if self.contains(key) || self.len() < cap {
                key
            } else {
                overflow.0
            };
            match self.index.get(&key) {
                Some(&i) => merge(&mut self.items[i].1, value),
                None => {
                    let first = if key == overflow.0 {
                        let mut other = overflow.1(&value);
                        merge(&mut other, value);
                        other
                    } else {
                        value
                    };
                    self.index.insert(key, self.items.len());
                    self.items.push((key, first));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(keys: &[u64]) -> Ordered<u64> {
        let mut t = Ordered::default();
        for k in keys {
            *t.entry(*k, || 0) += 1;
        }
        t
    }

    #[test]
    fn blocks_absorbed_in_order_count_what_one_capped_pass_counts() {
        let keys = [5, 3, 5, 9, 7, 3, 11, 9, 2, 7];
        // One pass, capped at three keys; the rest counted under key 0.
        let mut one: Ordered<u64> = Ordered::default();
        for k in keys {
            let k = if one.contains(k) || one.len() < 3 {
                k
            } else {
                0
            };
            *one.entry(k, || 0) += 1;
        }
        for split in 0..=keys.len() {
            let mut merged = Ordered::default();
            for block in [&keys[..split], &keys[split..]] {
                merged.absorb(tally(block), 3, (0, &|_| 0), |a, b| *a += b);
            }
            let pairs = |t: &Ordered<u64>| t.items.clone();
            assert_eq!(pairs(&merged), pairs(&one), "split at {split}");
        }
    }
}
