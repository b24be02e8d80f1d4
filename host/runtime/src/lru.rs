//! A cache bounded by the total weight of its entries, evicting the least recently used.
//!
//! The runtime weighs compiled modules by their compiled size; the host's caches of grants
//! and settings weigh each entry 1, bounding how many they keep.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// Entries by key, at most `capacity` in total weight. Use order is a counter: each `get`
/// and `insert` gives the entry the next tick, and eviction takes the lowest tick first.
#[derive(Debug)]
pub struct Lru<K, V> {
    capacity: u64,
    weight: u64,
    tick: u64,
    entries: HashMap<K, Slot<V>>,
    by_use: BTreeMap<u64, K>,
}

#[derive(Debug)]
struct Slot<V> {
    value: V,
    weight: u64,
    used: u64,
}

impl<K: Eq + Hash + Clone, V: Clone> Lru<K, V> {
    /// An empty cache holding at most `capacity` in total weight.
    pub fn new(capacity: u64) -> Self {
        Self {
            capacity,
            weight: 0,
            tick: 0,
            entries: HashMap::new(),
            by_use: BTreeMap::new(),
        }
    }

    /// The entry of `key`, now the most recently used.
    pub fn get<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.tick += 1;
        let slot = self.entries.get_mut(key)?;
        let owner = self
            .by_use
            .remove(&slot.used)
            .expect("every entry has its place in the use order");
        slot.used = self.tick;
        self.by_use.insert(self.tick, owner);
        Some(slot.value.clone())
    }

    /// Keeps `value` under `key` (replacing what was there), then evicts the least recently
    /// used entries until the total weight is within the capacity. An entry heavier than the
    /// whole capacity is not kept: it would evict everything else and then itself. Returns
    /// whether it was kept.
    pub fn insert(&mut self, key: K, value: V, weight: u64) -> bool {
        self.remove(&key);
        if weight > self.capacity {
            return false;
        }
        self.tick += 1;
        self.by_use.insert(self.tick, key.clone());
        self.entries.insert(
            key,
            Slot {
                value,
                weight,
                used: self.tick,
            },
        );
        self.weight += weight;
        while self.weight > self.capacity {
            let (_, oldest) = self
                .by_use
                .pop_first()
                .expect("a cache over its capacity has entries");
            let slot = self
                .entries
                .remove(&oldest)
                .expect("the use order names only entries");
            self.weight -= slot.weight;
        }
        true
    }

    /// Forgets the entry of `key`.
    pub fn remove<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        if let Some(slot) = self.entries.remove(key) {
            self.by_use.remove(&slot.used);
            self.weight -= slot.weight;
        }
    }

    /// The total weight of the entries kept.
    pub fn weight(&self) -> u64 {
        self.weight
    }

    /// How many entries are kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used_until_the_weight_fits() {
        let mut cache = Lru::new(100);
        assert!(cache.insert("a", 1, 40));
        assert!(cache.insert("b", 2, 30));
        assert!(cache.insert("c", 3, 20));
        // Using `a` makes `b` the least recently used.
        assert_eq!(cache.get("a"), Some(1));
        assert!(cache.insert("d", 4, 30));
        assert_eq!(cache.get("b"), None);
        assert_eq!((cache.len(), cache.weight()), (3, 90));
        // One heavy entry evicts as many as it needs, oldest first: `c`, then `a`.
        assert!(cache.insert("e", 5, 60));
        assert_eq!((cache.get("c"), cache.get("a")), (None, None));
        assert_eq!((cache.get("d"), cache.get("e")), (Some(4), Some(5)));
        assert_eq!(cache.weight(), 90);
    }

    #[test]
    fn an_entry_heavier_than_the_capacity_is_not_kept_and_evicts_nothing() {
        let mut cache = Lru::new(100);
        assert!(cache.insert("a", 1, 60));
        assert!(!cache.insert("huge", 2, 101));
        assert_eq!((cache.get("a"), cache.get("huge")), (Some(1), None));
        assert_eq!(cache.weight(), 60);
    }

    #[test]
    fn replacing_an_entry_counts_only_its_new_weight() {
        let mut cache = Lru::new(100);
        assert!(cache.insert("a", 1, 60));
        assert!(cache.insert("a", 2, 70));
        assert_eq!(
            (cache.get("a"), cache.len(), cache.weight()),
            (Some(2), 1, 70)
        );
        cache.remove("a");
        assert!(cache.is_empty());
        assert_eq!(cache.weight(), 0);
    }
}
