//! The transfer id index: a compact open-addressing table from transfer id to its index in
//! `StateMachine::transfers`.
//!
//! Each slot is one `u64`: the low 32 bits hold `index + 1` (0 marks an empty slot), the high
//! 32 bits a tag (the low 32 bits of the id's 64-bit hash). The home slot is taken from the
//! hash's top bits, so tag and position are independent: a probe rejects a slot on the tag
//! alone with probability 1 - 2^-32, and the id itself (read from the transfer records) is
//! compared only on a tag match. A lookup of a new id therefore touches one cache line of the
//! table and nothing else, and the table costs 8 bytes per slot (at most 4/3 slots per id)
//! instead of the 33 bytes per bucket of a `HashMap<u128, u32>`.
//!
//! Linear probing, load factor at most 3/4, deletion by backward shift (no tombstones). The
//! keys are not stored: every operation that needs a key reads it through `keys`, the
//! transfer records (`keys[index].id`). An index that is not (yet) in `keys`, like the id
//! `create_transfer` claims before the record is pushed, never compares equal.

use crate::types::Transfer;

/// Smallest table: 16 slots.
const BITS_MIN: u32 = 4;

pub(super) struct TransferIndex {
    slots: Vec<u64>,
    /// `slots.len() == 1 << bits`.
    bits: u32,
    len: usize,
    /// Slot of the last insert while nothing else changed the table since: removing that
    /// entry again is then a plain clear (the table returns to its exact earlier state).
    last_insert: Option<usize>,
}

#[inline]
fn hash(id: u128) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::default().hash_one(id)
}

#[inline]
fn key_of(keys: &[Transfer], index: u32) -> Option<u128> {
    keys.get(index as usize).map(|t| t.id)
}

impl TransferIndex {
    pub(super) fn with_capacity(capacity: usize) -> Self {
        let bits = Self::bits_for(capacity);
        TransferIndex { slots: vec![0; 1 << bits], bits, len: 0, last_insert: None }
    }

    fn bits_for(capacity: usize) -> u32 {
        // Load factor at most 3/4.
        let slots = capacity.saturating_mul(4) / 3 + 1;
        slots.next_power_of_two().trailing_zeros().max(BITS_MIN)
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    #[inline]
    fn home(&self, h: u64) -> usize {
        (h >> (64 - self.bits)) as usize
    }

    /// Hints the CPU to load the cache line where `id`'s probe starts.
    #[inline]
    pub(super) fn prefetch(&self, id: u128) {
        let slot = self.home(hash(id));
        let ptr = self.slots.as_ptr().wrapping_add(slot);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: prefetching is a hint and never faults, whatever the address.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(ptr as *const i8)
        };
        #[cfg(not(target_arch = "x86_64"))]
        std::hint::black_box(self.slots[slot]);
    }

    /// Slot holding `id`, or the empty slot where its probe ends.
    #[inline]
    fn find(&self, id: u128, h: u64, keys: &[Transfer]) -> Result<usize, usize> {
        let tag = h as u32;
        let mask = self.mask();
        let mut slot = self.home(h);
        loop {
            let s = self.slots[slot];
            if s == 0 {
                return Err(slot);
            }
            if (s >> 32) as u32 == tag {
                let index = (s as u32).wrapping_sub(1);
                if key_of(keys, index) == Some(id) {
                    return Ok(slot);
                }
            }
            slot = (slot + 1) & mask;
        }
    }

    #[inline]
    pub(super) fn get(&self, id: u128, keys: &[Transfer]) -> Option<u32> {
        match self.find(id, hash(id), keys) {
            Ok(slot) => Some((self.slots[slot] as u32).wrapping_sub(1)),
            Err(_) => None,
        }
    }

    #[inline]
    pub(super) fn contains(&self, id: u128, keys: &[Transfer]) -> bool {
        self.get(id, keys).is_some()
    }

    /// Maps `id` to `index` unless `id` is present: then returns its index and changes nothing.
    /// `keys` must hold every indexed transfer (all but, at most, `index` itself).
    #[inline]
    pub(super) fn claim(&mut self, id: u128, index: u32, keys: &[Transfer]) -> Result<(), u32> {
        assert!(index < u32::MAX, "transfers fit u32 indexes");
        let h = hash(id);
        let slot = match self.find(id, h, keys) {
            Ok(slot) => return Err((self.slots[slot] as u32).wrapping_sub(1)),
            Err(slot) => slot,
        };
        let slot = if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow(keys);
            match self.find(id, h, keys) {
                Err(slot) => slot,
                Ok(_) => unreachable!("growing keeps the key set"),
            }
        } else {
            slot
        };
        self.slots[slot] = (u64::from(h as u32) << 32) | u64::from(index + 1);
        self.len += 1;
        self.last_insert = Some(slot);
        Ok(())
    }

    /// Removes `id` if present; returns whether it was.
    pub(super) fn remove(&mut self, id: u128, keys: &[Transfer]) -> bool {
        let h = hash(id);
        if let Some(slot) = self.last_insert.take() {
            let s = self.slots[slot];
            // The last change was inserting `id` here: undo it exactly.
            if s != 0 && (s >> 32) as u32 == h as u32 && self.holds(s, id, keys) {
                self.slots[slot] = 0;
                self.len -= 1;
                return true;
            }
        }
        let Ok(mut hole) = self.find(id, h, keys) else {
            return false;
        };
        // Backward shift: move later entries of the cluster into the hole when their home
        // does not lie cyclically in (hole, slot].
        let mask = self.mask();
        let mut slot = hole;
        loop {
            slot = (slot + 1) & mask;
            let s = self.slots[slot];
            if s == 0 {
                break;
            }
            let index = (s as u32).wrapping_sub(1);
            let key = key_of(keys, index).expect("an indexed transfer has a record");
            let home = self.home(hash(key));
            let between = if hole <= slot {
                hole < home && home <= slot
            } else {
                hole < home || home <= slot
            };
            if !between {
                self.slots[hole] = s;
                hole = slot;
            }
        }
        self.slots[hole] = 0;
        self.len -= 1;
        true
    }

    /// Whether slot value `s` is `id`'s entry (its record may not be pushed yet when it is
    /// the last insert, so a missing record with the right tag counts as a match there).
    fn holds(&self, s: u64, id: u128, keys: &[Transfer]) -> bool {
        let index = (s as u32).wrapping_sub(1);
        match key_of(keys, index) {
            Some(key) => key == id,
            None => true,
        }
    }

    /// Doubles the table, re-inserting every entry (keys read from `keys`).
    #[cold]
    fn grow(&mut self, keys: &[Transfer]) {
        let bits = self.bits + 1;
        let old = std::mem::replace(&mut self.slots, vec![0; 1 << bits]);
        self.bits = bits;
        self.last_insert = None;
        let mask = self.mask();
        for s in old.into_iter().filter(|&s| s != 0) {
            let index = (s as u32).wrapping_sub(1);
            let Some(key) = key_of(keys, index) else {
                // A claim whose record never came (only after a failed replay, whose state
                // is discarded anyway).
                self.len -= 1;
                continue;
            };
            let mut slot = self.home(hash(key));
            while self.slots[slot] != 0 {
                slot = (slot + 1) & mask;
            }
            self.slots[slot] = s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn transfer(id: u128) -> Transfer {
        Transfer { id, ..Default::default() }
    }

    #[test]
    fn matches_a_hash_map_through_growth_and_removals() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut keys: Vec<Transfer> = Vec::new();
        let mut index = TransferIndex::with_capacity(0);
        let mut model: HashMap<u128, u32> = HashMap::new();
        for round in 0..20_000u32 {
            // Ids from a small range so that re-inserts and misses are frequent.
            let id = u128::from(rng.u32(1..30_000)) << (rng.u32(0..2) * 64);
            match rng.u8(0..10) {
                0..=5 => {
                    let next = keys.len() as u32;
                    let got = index.claim(id, next, &keys);
                    match model.get(&id) {
                        Some(&i) => assert_eq!(got, Err(i)),
                        None => {
                            assert_eq!(got, Ok(()));
                            // Sometimes give the claim back before its record exists.
                            if rng.bool() && round % 3 == 0 {
                                assert!(index.remove(id, &keys));
                            } else {
                                keys.push(transfer(id));
                                model.insert(id, next);
                            }
                        }
                    }
                }
                6..=7 => {
                    // Remove the last record (as a chain rollback does).
                    if let Some(last) = keys.last().copied() {
                        if model.get(&last.id) == Some(&(keys.len() as u32 - 1)) {
                            assert!(index.remove(last.id, &keys));
                            keys.pop();
                            model.remove(&last.id);
                        }
                    }
                }
                _ => {
                    // Remove an arbitrary id (general backward-shift deletion); its record
                    // stays in `keys` as a stale, unindexed record.
                    let removed = index.remove(id, &keys);
                    assert_eq!(removed, model.remove(&id).is_some());
                }
            }
            assert_eq!(index.len(), model.len());
            if round % 1000 == 0 {
                for (&id, &i) in &model {
                    assert_eq!(index.get(id, &keys), Some(i));
                }
            }
            assert_eq!(index.get(id, &keys), model.get(&id).copied());
        }
        for (&id, &i) in &model {
            assert_eq!(index.get(id, &keys), Some(i));
        }
    }
}
