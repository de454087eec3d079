//! The memory store's table from a record's id to its slot: open addressing with linear probing,
//! one `u64` per bucket holding 32 bits of the id's hash and the slot.
//!
//! With a million records the table is far larger than the CPU caches, so what an insert or a
//! lookup costs is the cache lines it touches at random. Here that is one: the bucket holds the
//! hash bits that rule out other ids without reading their records, and the slot beside them. A
//! `hashbrown` table of slots touches two (its control bytes, then the slot array elsewhere),
//! plus a record and its id's text each time 7 bits of hash match another id's.
//!
//! The bucket's 32 bits of hash also choose where it goes, so growing moves buckets without
//! hashing any id again.

/// A position in the store's records (below `u32::MAX`).
pub(super) type Slot = u32;

/// An empty bucket; a full one holds `tag << 32 | (slot + 1)`, never 0.
const EMPTY: u64 = 0;

/// Ids to slots, looked up by the id's hash; the caller compares ids.
#[derive(Debug, Default)]
pub(super) struct IdTable {
    buckets: Vec<u64>,
    len: usize,
}

/// Where a probe ended: the bucket holding a match, or the empty one where it would go.
pub(super) enum Probe {
    Found { bucket: usize, slot: Slot },
    Vacant { bucket: usize },
}

fn tag_of(hash: u64) -> u32 {
    (hash >> 32) as u32
}

fn tag(entry: u64) -> u32 {
    (entry >> 32) as u32
}

fn slot(entry: u64) -> Slot {
    (entry as u32).wrapping_sub(1)
}

impl IdTable {
    /// How many ids it holds.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    fn mask(&self) -> usize {
        self.buckets.len().wrapping_sub(1)
    }

    fn home(&self, tag: u32) -> usize {
        tag as usize & self.mask()
    }

    /// Finds the slot whose record `is` the id of `hash`, or the bucket where it would go.
    pub(super) fn probe(&self, hash: u64, mut is: impl FnMut(Slot) -> bool) -> Probe {
        if self.buckets.is_empty() {
            return Probe::Vacant { bucket: 0 };
        }
        let tag = tag_of(hash);
        let mut bucket = self.home(tag);
        loop {
            let entry = self.buckets[bucket];
            if entry == EMPTY {
                return Probe::Vacant { bucket };
            }
            if self::tag(entry) == tag && is(slot(entry)) {
                return Probe::Found { bucket, slot: slot(entry) };
            }
            bucket = (bucket + 1) & self.mask();
        }
    }

    /// The slot of the id of `hash` whose record `is` it.
    pub(super) fn find(&self, hash: u64, is: impl FnMut(Slot) -> bool) -> Option<Slot> {
        match self.probe(hash, is) {
            Probe::Found { slot, .. } => Some(slot),
            Probe::Vacant { .. } => None,
        }
    }

    /// Puts `slot` for the id of `hash` in `bucket`, which a [`IdTable::probe`] for that hash just
    /// found vacant (with no change to the table since).
    pub(super) fn insert_at(&mut self, bucket: usize, hash: u64, slot: Slot) {
        debug_assert!(slot != Slot::MAX, "a slot below u32::MAX");
        // Grown before it is more than four fifths full, so probes stay within a cache line or
        // two and always end; fuller would lengthen them quickly, emptier costs memory (a W2
        // backlog of 50,000 fits in 2^16 buckets, 512 KiB).
        if (self.len + 1) * 5 > self.buckets.len() * 4 {
            self.grow();
            return self.insert_free(hash, slot);
        }
        self.buckets[bucket] = u64::from(tag_of(hash)) << 32 | u64::from(slot + 1);
        self.len += 1;
    }

    /// Inserts without looking for the id (it is not there).
    fn insert_free(&mut self, hash: u64, slot: Slot) {
        let tag = tag_of(hash);
        let mut bucket = self.home(tag);
        while self.buckets[bucket] != EMPTY {
            bucket = (bucket + 1) & self.mask();
        }
        self.buckets[bucket] = u64::from(tag) << 32 | u64::from(slot + 1);
        self.len += 1;
    }

    fn grow(&mut self) {
        let size = (self.buckets.len() * 2).max(16);
        let old = std::mem::replace(&mut self.buckets, vec![EMPTY; size]);
        self.len = 0;
        for entry in old.into_iter().filter(|&e| e != EMPTY) {
            let mut bucket = self.home(tag(entry));
            while self.buckets[bucket] != EMPTY {
                bucket = (bucket + 1) & self.mask();
            }
            self.buckets[bucket] = entry;
            self.len += 1;
        }
    }

    /// Removes the entry of `slot` for the id of `hash`; whether it was there.
    pub(super) fn remove(&mut self, hash: u64, slot: Slot) -> bool {
        let Probe::Found { bucket, .. } = self.probe(hash, |s| s == slot) else { return false };
        self.len -= 1;
        // Backward shift: pull later entries of the run into the hole when their home allows,
        // so a probe never stops early at a hole (no tombstones).
        let mask = self.mask();
        let mut hole = bucket;
        let mut next = (hole + 1) & mask;
        loop {
            let entry = self.buckets[next];
            if entry == EMPTY {
                break;
            }
            // How far `entry` sits from its home, and the hole from that home: it may move back
            // into the hole only if the hole is not before its home.
            let home = self.home(tag(entry));
            if next.wrapping_sub(home) & mask >= next.wrapping_sub(hole) & mask {
                self.buckets[hole] = entry;
                hole = next;
            }
            next = (next + 1) & mask;
        }
        self.buckets[hole] = EMPTY;
        true
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A hash whose top 32 bits collide often in a small table (few distinct homes).
    fn crowded(key: u32) -> u64 {
        u64::from(key % 7) << 32 | u64::from(key)
    }

    fn find(table: &IdTable, keys: &[Option<u32>], key: u32) -> Option<Slot> {
        table.find(crowded(key), |s| keys[s as usize] == Some(key))
    }

    #[test]
    fn inserts_finds_and_removes_through_collisions_and_growth() {
        let mut table = IdTable::default();
        // keys[slot] is the key stored in that slot, as the store's records are.
        let mut keys: Vec<Option<u32>> = Vec::new();
        let mut model: HashMap<u32, Slot> = HashMap::new();
        for key in 0..2000u32 {
            let slot = Slot::try_from(keys.len()).unwrap();
            let Probe::Vacant { bucket } = table.probe(crowded(key), |s| keys[s as usize] == Some(key))
            else {
                panic!("{key} is new");
            };
            keys.push(Some(key));
            table.insert_at(bucket, crowded(key), slot);
            model.insert(key, slot);
            // Every third key goes again, from anywhere in its run.
            if key % 3 == 0 {
                let gone = key / 2;
                if let Some(slot) = model.remove(&gone) {
                    assert!(table.remove(crowded(gone), slot));
                    keys[slot as usize] = None;
                }
            }
        }
        assert_eq!(table.len(), model.len());
        for key in 0..2000u32 {
            assert_eq!(find(&table, &keys, key), model.get(&key).copied(), "key {key}");
        }
        assert!(!table.remove(crowded(1), 999_999), "no such slot");
    }
}
